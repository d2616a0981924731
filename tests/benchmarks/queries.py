"""Benchmark ``hpsearch query trials`` against ``optuna trials`` on a large study.

Issue 4 asks that on a study of 10,000 trials with 50 intermediate values each,
``hpsearch query trials --format json`` takes at most 1.5 s and is at least 10× faster than
``optuna trials --study-name S --storage URL -f json``, measured side by side in one run.

The study is built once with bulk ``COPY`` (Optuna's API would take many minutes to write
it): the study itself through ``optuna.create_study``, then trials, values, learning rates,
intermediate values and user attributes shaped as ``search.train.objective`` writes them (a
50-epoch ``history``, runtime attributes; 60 % complete, 30 % pruned, 10 % failed). Both
commands then run as subprocesses, alternately, each timed from start to exit with stdout
captured; both outputs are parsed and must hold one record per trial. Nothing here is a
timed test: run it by hand and copy its table into ``docs/queries.md``.

Usage::

    python tests/benchmarks/queries.py                       # a throwaway embedded PostgreSQL
    python tests/benchmarks/queries.py --storage postgresql+psycopg2://postgres@127.0.0.1:5432/DB
    python tests/benchmarks/queries.py --trials 10000 --steps 50 --repeat 5 --optuna-repeat 2

With ``--storage`` the database must be empty or hold the study from an earlier run (it is
reused, and kept unless ``--drop``).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]  # the repository, when run as a script
sys.path.insert(0, str(REPO))

STUDY = "bench-queries"


def _copy(cur, table: str, columns: list[str], rows) -> int:
    """COPY ``rows`` (tuples) into ``table``; returns the number of rows."""
    buf = io.StringIO()
    n = 0
    for row in rows:
        buf.write("\t".join(r"\N" if v is None else str(v).replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n") for v in row))
        buf.write("\n")
        n += 1
    buf.seek(0)
    cur.copy_expert(f"COPY {table} ({', '.join(columns)}) FROM STDIN", buf)
    return n


def build_study(url: str, n_trials: int, steps: int, seed: int = 0) -> int:
    """Create the study with ``n_trials`` trials of ``steps`` intermediate values; return its id."""
    import optuna
    import sqlalchemy

    from storage import open_storage, resolve_storage_url

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(resolve_storage_url(url), heartbeat=False)
    study = optuna.create_study(storage=storage, study_name=STUDY, direction="maximize")
    study.set_user_attr("hpsearch_config", {"epochs": steps, "batch_size": 1024, "pruner": "median"})
    sid = study._study_id
    dist = optuna.distributions.distribution_to_json(optuna.distributions.FloatDistribution(1e-5, 1.0, log=True))
    rng = random.Random(seed)
    base = datetime(2025, 1, 1)  # Optuna stores naive UTC
    # storage's interruptible wait callback (storage.engine._interruptible_waits) makes psycopg2
    # refuse COPY ("copy_expert cannot be used with an asynchronous callback"): off while writing.
    import psycopg2.extensions

    callback = psycopg2.extensions.get_wait_callback()
    psycopg2.extensions.set_wait_callback(None)
    raw = storage.engine.raw_connection()
    try:
        cur = raw.cursor()
        cur.execute("SELECT coalesce(max(trial_id), 0) FROM trials")
        first_id = cur.fetchone()[0] + 1
        trials, values, params, inter, attrs = [], [], [], [], []
        for i in range(n_trials):
            tid = first_id + i
            u = rng.random()
            state = "COMPLETE" if u < 0.6 else "PRUNED" if u < 0.9 else "FAIL"
            lr = 10 ** rng.uniform(-5, 0)
            epochs = steps if state == "COMPLETE" else rng.randint(1, steps)
            curve = [round(min(0.99, 0.1 + 0.85 * (1 - 0.9 ** (e + 1)) + rng.gauss(0, 0.01)), 6) for e in range(steps)]
            start = base + timedelta(seconds=40 * i)
            end = start + timedelta(seconds=rng.uniform(20, 60))
            trials.append((tid, i, sid, state, start, end))
            params.append((tid, "learning_rate", repr(lr), dist))
            # Every trial holds `steps` intermediate values, as the study does.
            inter.extend((tid, e, repr(curve[e]), "FINITE") for e in range(steps))
            best_epoch = max(range(epochs), key=lambda e: curve[e])
            if state != "FAIL":
                values.append((tid, 0, repr(max(curve[:epochs]) if state == "COMPLETE" else curve[epochs - 1]), "FINITE"))
            history = {
                "loss": [round(2.3 * 0.8 ** e + 0.05, 6) for e in range(epochs)],
                "val_loss": [round(2.3 * 0.8 ** e + 0.08, 6) for e in range(epochs)],
                "accuracy": [round(min(0.999, c + 0.01), 6) for c in curve[:epochs]],
                "val_accuracy": curve[:epochs],
            }
            a = {
                "host": f"gpu-node-{i % 4}",
                "pid": 4000 + i % 97,
                "backend": "tensorflow",
                "device": "NVIDIA H100 80GB HBM3",
                "gpu": str(i % 8),
                "keras_version": "3.15.0",
                "optuna_version": optuna.__version__,
                "tensorflow_version": "2.21.0",
                "history": history,
                "epochs_run": epochs,
                "best_epoch": best_epoch,
                "test_accuracy": round(curve[best_epoch] - 0.003, 6),
                "train_seconds": round((end - start).total_seconds(), 3),
                "stop_reason": {"COMPLETE": "completed", "PRUNED": "pruned", "FAIL": "error"}[state],
            }
            if state == "PRUNED":
                a["stop_detail"] = f"pruned at epoch {epochs - 1}, val_accuracy {curve[epochs - 1]:.4f}"
            if state == "FAIL":
                a["fail_reason"] = "TrialEnvironmentError: out of memory"
            attrs.extend((tid, k, json.dumps(v)) for k, v in a.items())
        _copy(cur, "trials", ["trial_id", "number", "study_id", "state", "datetime_start", "datetime_complete"], trials)
        _copy(cur, "trial_values", ["trial_id", "objective", "value", "value_type"], values)
        _copy(cur, "trial_params", ["trial_id", "param_name", "param_value", "distribution_json"], params)
        _copy(cur, "trial_intermediate_values", ["trial_id", "step", "intermediate_value", "intermediate_value_type"], inter)
        _copy(cur, "trial_user_attributes", ["trial_id", "key", "value_json"], attrs)
        cur.execute("SELECT setval(pg_get_serial_sequence('trials', 'trial_id'), (SELECT max(trial_id) FROM trials))")
        raw.commit()
        cur.execute("ANALYZE")
        raw.commit()
    finally:
        raw.close()
        psycopg2.extensions.set_wait_callback(callback)
    with storage.engine.connect() as conn:
        n = conn.execute(sqlalchemy.text("SELECT count(*) FROM trials WHERE study_id = :s"), {"s": sid}).scalar()
    storage.engine.dispose()
    assert n == n_trials, n
    return sid


def _existing(url: str) -> int | None:
    """The number of trials of the bench study in ``url``, or None if it is not there."""
    from storage import open_engine, study_names, trials

    engine = open_engine(url)
    try:
        if STUDY not in study_names(engine):
            return None
        return len(trials(engine, STUDY))
    finally:
        engine.dispose()


def _time(cmd: list[str], n_trials: int, env: dict) -> tuple[float, float]:
    """Run ``cmd``; return (wall seconds, CPU seconds of the command, user + system).

    The CPU time leaves out the database server's share, and does not grow when other work
    competes for the machine's cores, as wall time does on a shared machine.
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    records = json.loads(proc.stdout)
    if len(records) != n_trials:
        raise SystemExit(f"{' '.join(cmd[:3])} printed {len(records)} records, expected {n_trials}")
    return elapsed, cpu


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--storage", help="PostgreSQL URL (default: a throwaway embedded PostgreSQL)")
    ap.add_argument("--trials", type=int, default=10_000)
    ap.add_argument("--steps", type=int, default=50, help="intermediate values per trial")
    ap.add_argument("--repeat", type=int, default=5, help="runs of hpsearch query trials")
    ap.add_argument("--optuna-repeat", type=int, default=2, help="runs of optuna trials")
    ap.add_argument("--drop", action="store_true", help="delete the study at the end (with --storage)")
    args = ap.parse_args(argv)

    from storage import mask_url

    home = None
    url = args.storage
    if url is None:
        from storage import embedded_url

        home = tempfile.mkdtemp(prefix="hpsearch-bench-")
        url = embedded_url(home)
    try:
        have = _existing(url)
        if have is None:
            t0 = time.perf_counter()
            build_study(url, args.trials, args.steps)
            print(f"built {STUDY}: {args.trials} trials x {args.steps} intermediate values in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        elif have != args.trials:
            raise SystemExit(f"{mask_url(url)} holds {STUDY} with {have} trials, not {args.trials}: use another database")
        else:
            print(f"reusing {STUDY} ({have} trials) in {mask_url(url)}", file=sys.stderr)

        env = dict(os.environ)
        env.pop("OPTUNA_STORAGE", None)
        bindir = Path(sys.executable).parent
        hp_cmd = [sys.executable, "-m", "search", "query", "trials", "--study", STUDY, "--storage", url, "--format", "json"]
        op_cmd = [str(bindir / "optuna"), "trials", "--study-name", STUDY, "--storage", url, "-f", "json"]
        _time(hp_cmd, args.trials, env)  # warm the server's cache and the OS's file cache once
        hp, op, hp_cpu, op_cpu = [], [], [], []
        for i in range(max(args.repeat, args.optuna_repeat)):
            if i < args.repeat:
                wall, cpu = _time(hp_cmd, args.trials, env)
                hp.append(wall)
                hp_cpu.append(cpu)
                print(f"  hpsearch query trials: {wall:.3f} s (cpu {cpu:.3f} s)", file=sys.stderr)
            if i < args.optuna_repeat:
                wall, cpu = _time(op_cmd, args.trials, env)
                op.append(wall)
                op_cpu.append(cpu)
                print(f"  optuna trials:         {wall:.3f} s (cpu {cpu:.3f} s)", file=sys.stderr)
        import optuna
        import sqlalchemy

        eng = sqlalchemy.create_engine(url)
        with eng.connect() as c:
            server = c.exec_driver_sql("SHOW server_version").scalar()
        eng.dispose()
        result = {
            "study": f"{args.trials} trials x {args.steps} intermediate values",
            "storage": "embedded PostgreSQL" if home else mask_url(url),
            "postgresql": server,
            "python": platform.python_version(),
            "optuna": optuna.__version__,
            "cpus": os.cpu_count(),
            "load_average_1min": round(os.getloadavg()[0], 2),
            "hpsearch_s": {"runs": [round(x, 3) for x in hp], "median": round(statistics.median(hp), 3), "max": round(max(hp), 3),
                           "cpu_median": round(statistics.median(hp_cpu), 3)},
            "optuna_s": {"runs": [round(x, 3) for x in op], "median": round(statistics.median(op), 3), "min": round(min(op), 3),
                         "cpu_median": round(statistics.median(op_cpu), 3)},
            "speedup_median": round(statistics.median(op) / statistics.median(hp), 1),
            "speedup_worst_case": round(min(op) / max(hp), 1),
        }
        print(json.dumps(result, indent=2))
        if args.drop and home is None:
            optuna.delete_study(study_name=STUDY, storage=url)
    finally:
        if home is not None:
            from storage import stop_embedded

            stop_embedded(home)
            import shutil

            shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
