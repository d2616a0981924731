"""Benchmark the loss landscape at scale: 1,000 trials × 500 epochs by default.

Issue 3 asks that building the figures takes at most 2 s and that the stored figures take at
most 2 MB in all. This writes a study of synthetic trials (histories shaped like the recipe's,
40 % pruned; see ``tests/search_tests/_synthetic.py``) into a real storage, then times each step of a
refresh separately and measures the figures' JSON and the bytes optuna-dashboard's chunks
occupy in ``study_system_attributes``. The study is deleted at the end.

Usage::

    python tests/benchmarks/landscape.py                  # the embedded PostgreSQL
    python tests/benchmarks/landscape.py --storage postgresql+psycopg2://postgres@127.0.0.1:5432/scratch
    python tests/benchmarks/landscape.py --trials 3000 --epochs 500 --format json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository, when run as a script


def _timed(fn, repeat: int):
    times, result = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return result, times


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--storage", help="storage URL (default: $OPTUNA_STORAGE, else the embedded PostgreSQL)")
    p.add_argument("--trials", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=500)
    p.add_argument("--repeat", type=int, default=5, help="timed repetitions of each step (median reported)")
    p.add_argument("--format", choices=("text", "json"), default="text")
    args = p.parse_args(argv)

    import optuna

    from search.landscape.curves import load_curves
    from search.landscape.figures import build_figures
    from search.landscape.refresh import refresh_landscape
    from storage import open_storage, resolve_storage_url
    from tests.search_tests._synthetic import synthetic_trials

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    resolved = resolve_storage_url(args.storage)
    storage = open_storage(resolved, heartbeat=False)
    name = f"bench-landscape-{uuid.uuid4().hex[:8]}"
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize")
    try:
        t0 = time.perf_counter()
        study.add_trials(synthetic_trials(args.trials, args.epochs, seed=1))
        setup = time.perf_counter() - t0
        study_id = storage.get_study_id_from_name(name)

        curves, t_load = _timed(lambda: load_curves(storage, study_id), args.repeat)
        figures, t_build = _timed(lambda: build_figures(curves), args.repeat)
        sizes, t_json = _timed(lambda: {fid: len(fig.to_json()) for fid, fig in figures.items()}, args.repeat)
        result, t_refresh = _timed(lambda: refresh_landscape(study, storage), max(1, args.repeat // 2))
        import sqlalchemy

        with storage.engine.connect() as conn:
            stored, chunks = conn.execute(
                sqlalchemy.text(
                    "SELECT coalesce(sum(length(value_json)), 0), count(*) FROM study_system_attributes"
                    " WHERE study_id = :sid AND key LIKE 'dashboard:plot_data:%'"
                ),
                {"sid": study_id},
            ).one()
        report = {
            "trials": args.trials,
            "epochs": args.epochs,
            "pruned": sum(c.state == "PRUNED" for c in curves),
            "storage": resolved.masked.split("@")[-1] if "@" in resolved.masked else resolved.source,
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
            "setup_s": round(setup, 2),
            "load_s_median": round(statistics.median(t_load), 3),
            "build_s_median": round(statistics.median(t_build), 3),
            "build_s_max": round(max(t_build), 3),
            "to_json_s_median": round(statistics.median(t_json), 3),
            "refresh_s_median": round(statistics.median(t_refresh), 3),
            "figure_json_bytes": sizes,
            "figure_json_bytes_total": sum(sizes.values()),
            "stored_bytes": int(stored),
            "stored_chunks": int(chunks),
            "traces": {fid: len(fig.data) for fid, fig in figures.items()},
            "refreshed": result.refreshed,
        }
    finally:
        optuna.delete_study(study_name=name, storage=storage)
        storage.engine.dispose()
    if args.format == "json":
        print(json.dumps(report, indent=2))
    else:
        print(f"{report['trials']} trials x {report['epochs']} epochs ({report['pruned']} pruned) on {report['storage']}; {report['machine']}")
        print(f"  write the study (setup, not timed): {report['setup_s']} s")
        print(f"  read histories:  {report['load_s_median']} s (median of {args.repeat})")
        print(f"  build figures:   {report['build_s_median']} s (median of {args.repeat}; max {report['build_s_max']} s)")
        print(f"  figures to JSON: {report['to_json_s_median']} s")
        print(f"  full refresh (read, build, store): {report['refresh_s_median']} s")
        print(f"  figure JSON: {report['figure_json_bytes_total']:,} bytes; stored: {report['stored_bytes']:,} bytes in {report['stored_chunks']} chunks")
        for fid, size in report["figure_json_bytes"].items():
            print(f"    {fid}: {size:,} bytes, {report['traces'][fid]} traces")
    return 0


if __name__ == "__main__":
    sys.exit(main())
