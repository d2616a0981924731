"""What one question to the pruner costs with 1, 4 and 16 workers on PostgreSQL (issue 13).

No training: each worker is a process that asks for a trial, reports a made-up
``val_accuracy`` at every epoch through hpsearch's :class:`search.train.monitor.EpochMonitor` (with
the schedule hpsearch uses), sleeps a little as an epoch would, and tells the result. The
monitor times every question (``pruner_seconds`` / ``pruner_calls``), so the figure is the
cost a trial pays per question, reads and all, while K workers share the study.

Variants: ``asha`` (the default: asked at the rungs, one indexed read of the values there,
cached), ``median`` (Optuna's ``MedianPruner`` with hpsearch's settings, asked every epoch
after the warm-up: it reloads every running trial whole), and ``median-every-epoch`` (what
``KerasPruningCallback`` does).

Usage::

    python tests/benchmarks/pruner_cost.py                   # 1, 4, 16 workers; about 3 minutes here
    python tests/benchmarks/pruner_cost.py --workers 1,4 --no-write
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))

EPOCHS = 30  # rungs at epochs 0, 2, 8, 26
TRIALS_PER_WORKER = 3
EPOCH_SECONDS = 0.05
VARIANTS = ("asha", "median", "median-every-epoch")


def child(url: str, study_name: str, variant: str, trials: int, seed: int) -> None:
    import math

    import optuna

    from search.study.config import StudyConfig
    from search.study.pruners import PrunerSchedule, make_pruner, pruner_schedule
    from search.train.monitor import EpochMonitor
    from storage import open_storage, resolve_storage_url

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cfg = StudyConfig(epochs=EPOCHS, pruner="asha" if variant == "asha" else "median")
    storage = open_storage(resolve_storage_url(url))
    study = optuna.load_study(study_name=study_name, storage=storage, pruner=make_pruner(cfg))
    schedule = PrunerSchedule(budget=math.inf) if variant == "median-every-epoch" else pruner_schedule(cfg)
    rng = random.Random(seed)
    rows = []
    for _ in range(trials):
        trial = study.ask()
        level = rng.uniform(0.5, 0.95)
        m = EpochMonitor(trial, schedule=schedule)
        pruned = False
        for epoch in range(EPOCHS):
            time.sleep(EPOCH_SECONDS)
            acc = level * (1 - 0.5 ** (epoch + 1)) + rng.gauss(0, 0.005)
            if m.end_epoch(epoch, {"loss": 1 - acc, "val_loss": 1 - acc, "accuracy": acc, "val_accuracy": acc}):
                pruned = True
                break
        study.tell(trial, state=optuna.trial.TrialState.PRUNED) if pruned else study.tell(trial, m.best_value)
        rows.append({"calls": m.pruner_calls, "seconds": m.pruner_seconds, "epochs": m.epochs_run})
    print(json.dumps(rows))


def measure(url: str, variant: str, workers: int) -> dict:
    import optuna

    from search.study.config import StudyConfig
    from search.study.pruners import make_pruner

    name = f"cost-{variant}-{workers}-{uuid.uuid4().hex[:6]}"
    cfg = StudyConfig(epochs=EPOCHS, pruner="asha" if variant == "asha" else "median")
    optuna.create_study(storage=url, study_name=name, direction="maximize", pruner=make_pruner(cfg))
    load = os.getloadavg()[0]
    procs = [subprocess.Popen([sys.executable, __file__, "--child", url, name, variant, str(TRIALS_PER_WORKER), str(i)],
                              stdout=subprocess.PIPE, text=True, cwd=REPO) for i in range(workers)]
    rows = []
    try:
        for p in procs:
            out, _ = p.communicate(timeout=600)
            if p.returncode != 0:
                raise RuntimeError(f"a worker exited {p.returncode}")
            rows += json.loads(out)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    calls = sum(r["calls"] for r in rows)
    seconds = sum(r["seconds"] for r in rows)
    return {"variant": variant, "workers": workers, "trials": len(rows), "epochs": sum(r["epochs"] for r in rows),
            "questions": calls, "ms_per_question": 1000 * seconds / max(calls, 1),
            "ms_per_epoch": 1000 * seconds / max(sum(r["epochs"] for r in rows), 1), "load": round(load, 2)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workers", default="1,4,16")
    p.add_argument("--storage")
    p.add_argument("--no-write", action="store_true")
    p.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        url, name, variant, trials, seed = args.child
        child(url, name, variant, int(trials), int(seed))
        return 0
    from anytime import log, write_block
    from run import scratch_storage

    started = time.time()
    results = []
    with scratch_storage(args.storage) as (url, where):
        log(f"pruner cost: {where}")
        for k in (int(w) for w in args.workers.split(",")):
            for variant in VARIANTS:
                row = measure(url, variant, k)
                results.append(row)
                log(f"{variant} x{k}: {row['questions']} questions, {row['ms_per_question']:.2f} ms each, {row['ms_per_epoch']:.2f} ms per epoch")
    out = [f"Measured by `python tests/benchmarks/pruner_cost.py` on {time.strftime('%Y-%m-%d')}, {time.time() - started:.0f} s, {where}; "
           f"each worker a process running {TRIALS_PER_WORKER} trials of {EPOCHS} epochs of {EPOCH_SECONDS * 1000:.0f} ms (no training).\n",
           "| workers | pruner, when asked | trials | epochs | questions | ms per question (mean) | question ms per epoch trained | load |",
           "|---|---|---|---|---|---|---|---|"]
    label = {"asha": "asha (default), at the rungs", "median": "median, every epoch after the warm-up", "median-every-epoch": "median, every epoch (KerasPruningCallback)"}
    for r in results:
        out.append(f"| {r['workers']} | {label[r['variant']]} | {r['trials']} | {r['epochs']} | {r['questions']} | {r['ms_per_question']:.2f} | {r['ms_per_epoch']:.2f} | {r['load']:.2f} |")
    text = "\n".join(out)
    print(text)
    if not args.no_write:
        (REPO / "docs" / "data" / "pruner-cost.json").write_text(json.dumps(results, indent=1))
        write_block("pruner-cost", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
