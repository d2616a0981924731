"""Screen rung rules for a user's model on full learning curves: pausing and promoting (issue 23).

Issue 23's target (hpsearch reaches KerasTuner's best in half the epochs) is lost at the early
rungs: with few trials at a rung, hpsearch's rule ("go on only if in the top third of the values
reported at this rung so far") stops good-but-not-best trials for ever. True ASHA (Li et al.,
"A System for Massively Parallel Hyperparameter Tuning", 2020, Algorithm 2) instead pauses every
trial at a rung and, whenever a worker is free, promotes a paused trial once it is in the top
third of its rung, however late. hpsearch's checkpoints could resume a paused trial; this
replay measures, before any of that is built, whether the rule would help.

``--collect`` trains random configurations of the benchmark's hypermodel
(``docs/examples/getting_started.py:build_model``, Optuna's ``RandomSampler(seed=1234)`` through
hpsearch's ``hp``, weights seeded with the configuration's index) for all 10 epochs on the
benchmark's data (the first 6,000 training images, the 10,000 test images validating, batch
128), in two processes, and stores each curve in ``docs/data/your-model-pool.json``. The replay
then draws random orders of the pool (one worker, each configuration at most once per pass of
the pool) and runs each rule on the same order until 120 epochs are trained, against
KerasTuner's ``RandomSearch`` replayed as 12 configurations drawn from the pool, trained whole:

- ``stop``: hpsearch's rule (:class:`search.study.pruners.AshaPruner`, rungs after 1, 3 and 9
  epochs, the top third goes on, the first trial always);
- ``stop+promote``: the same, and a trial it stops is paused: a free worker first resumes the
  best paused trial that is now in the top third of its rung, else starts a new one;
- ``true-asha``: Li et al.'s rule: every trial pauses at each rung, and a free worker promotes
  from the highest rung with a paused trial in its top third, else starts a new trial;
- rung variants of the stop rule (other rungs and shares).

What it leaves out: TPE (the replay samples at random, as the pool was drawn), and each trial's
own noise beyond its one recorded curve. It screens; ``your_model.py`` measures.

Usage::

    python tests/benchmarks/promotion_replay.py --collect        # 72 configurations, about 8 minutes on 2 cores
    python tests/benchmarks/promotion_replay.py --orders 3000    # replay the rules on 3000 orders
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
POOL = REPO / "docs" / "data" / "your-model-pool.json"
EPOCHS, BUDGET, ETA, RUNGS, KT_TRIALS = 10, 120, 3, (0, 2, 8), 12
SAMPLER_SEED = 1234
#: stop-rule variants: (rung epochs, 0-based; one in ETA goes on)
VARIANTS = {"rungs 1,3 (eta 3)": ((0, 2), 3), "rungs 2,6 (eta 3)": ((1, 5), 3), "rungs 1,3,9 (eta 2)": ((0, 2, 8), 2),
            "rungs 1,2,4,8 (eta 2)": ((0, 1, 3, 7), 2), "rungs 1,4 (eta 4)": ((0, 3), 4), "rung 1 (eta 3)": ((0,), 3),
            "rung 3 (eta 3)": ((2,), 3)}


def collect_part(first: int, count: int, data: str, out: str) -> None:
    """Train configurations ``first`` .. ``first + count - 1`` of the pool (the sampler is
    replayed from the start, so each process draws the same sequence)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.path[:0] = [str(REPO), str(REPO / "docs" / "examples"), str(HERE)]
    import keras
    import numpy as np
    import optuna
    from getting_started import build_model
    from your_model import BATCH_SIZE as batch_size

    from search.study.hyperparameters import HyperParameters

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with np.load(data) as f:
        x_train, y_train, x_test, y_test = f["x_train"], f["y_train"], f["x_test"], f["y_test"]
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=SAMPLER_SEED))
    rows = []
    for i in range(first + count):
        trial = study.ask()
        hp = HyperParameters(trial)
        keras.utils.set_random_seed(i)
        model = build_model(hp)
        if i < first:
            continue
        history = model.fit(x_train, y_train, epochs=EPOCHS, batch_size=batch_size, validation_data=(x_test, y_test), verbose=0)
        rows.append({"i": i, "params": dict(trial.params), "val_accuracy": [float(v) for v in history.history["val_accuracy"]]})
        print(f"configuration {i}: best {max(rows[-1]['val_accuracy']):.4f}", flush=True)
    Path(out).write_text(json.dumps(rows))


def collect(size: int) -> None:
    """Train ``size`` configurations in two processes and store them in :data:`POOL`, on the
    benchmark's own data (``your_model.prepare_data``: MNIST from HPSEARCH_DATA or the shared
    file, never a download on a machine that is offline)."""
    sys.path.insert(0, str(HERE))
    from your_model import BATCH_SIZE, TEST_SIZE, TRAIN_SIZE, prepare_data

    tmp = Path(tempfile.mkdtemp(prefix="hpsearch-pool-"))
    try:
        data = prepare_data(TRAIN_SIZE, TEST_SIZE, tmp)
        half = size // 2
        procs = [subprocess.Popen([sys.executable, __file__, "--part", f"{first},{count}", "--data", str(data), "--out", str(tmp / f"{first}.json")])
                 for first, count in ((0, half), (half, size - half))]
        if any(p.wait() for p in procs):
            raise SystemExit("a collecting process failed")
        rows = json.loads((tmp / "0.json").read_text()) + json.loads((tmp / f"{half}.json").read_text())
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # the data's 50 MB
    POOL.write_text(json.dumps({"sampler_seed": SAMPLER_SEED, "epochs": EPOCHS, "batch_size": BATCH_SIZE, "train": TRAIN_SIZE, "validate": TEST_SIZE,
                                "configurations": rows}, indent=0))
    print(f"{len(rows)} configurations in {POOL.relative_to(REPO)}")


class Run:
    """One replayed search: the best so far after each epoch trained."""

    def __init__(self, curves):
        self.curves, self.best, self.trace = curves, 0.0, []

    def epoch(self, config: int, e: int) -> float:
        value = self.curves[config][e]
        self.best = max(self.best, value)
        self.trace.append(self.best)
        return value

    @property
    def spent(self) -> bool:
        return len(self.trace) >= BUDGET


def _in_top(values: list[float], value: float, keep: int) -> bool:
    return keep > 0 and value >= sorted(values, reverse=True)[keep - 1]


def stop_rule(curves, order, rungs=RUNGS, eta=ETA, promote=False) -> list[float]:
    """hpsearch's rule: at a rung a trial goes on if in the top max(1, n // eta) of the n values
    reported there so far; with ``promote``, a stopped trial is paused and a free worker first
    resumes the best paused trial now in the top n // eta of its rung."""
    run, at, paused, order = Run(curves), {r: [] for r in rungs}, [], iter(order)

    def train(config, start):
        for e in range(start, EPOCHS):
            value = run.epoch(config, e)
            if e in at:
                at[e].append(value)
                if not _in_top(at[e], value, max(1, len(at[e]) // eta)):
                    paused.append((e, config, value))
                    return

    while not run.spent:
        promotable = []
        if promote:
            for r in reversed(rungs):
                promotable = [p for p in paused if p[0] == r and _in_top(at[r], p[2], len(at[r]) // eta)]
                if promotable:
                    break
        if promotable:
            job = max(promotable, key=lambda p: p[2])
            paused.remove(job)
            train(job[1], job[0] + 1)
        else:
            train(next(order), 0)
    return run.trace


def true_asha(curves, order, rungs=RUNGS, eta=ETA) -> list[float]:
    """Li et al.'s ASHA, one worker: promote from the highest rung that has a paused trial in
    its top n // eta, else start a new trial; every trial pauses at each rung."""
    run, order = Run(curves), iter(order)
    ends = [r + 1 for r in rungs] + [EPOCHS]  # epochs trained at each level
    levels = [[] for _ in ends]  # (value, config) per level
    promoted = set()
    while not run.spent:
        job = None
        for level in reversed(range(len(ends) - 1)):
            top = sorted(levels[level], reverse=True)[: len(levels[level]) // eta]
            waiting = [config for _, config in top if (level, config) not in promoted]
            if waiting:
                job = (level, waiting[0])
                break
        if job is None:
            level, config, start = -1, next(order), 0
        else:
            level, config = job
            promoted.add(job)
            start = ends[level]
        for e in range(start, ends[level + 1]):
            value = run.epoch(config, e)
        levels[level + 1].append((value, config))
    return run.trace


def reached(trace: list[float], target: float) -> int | None:
    """Epochs after which ``trace`` first reached ``target``, or None."""
    return next((i + 1 for i, best in enumerate(trace) if best >= target), None)


def replay(orders: int) -> None:
    pool = json.loads(POOL.read_text())["configurations"]
    curves = [row["val_accuracy"] for row in pool]
    rules = {"stop (hpsearch's rule)": lambda o: stop_rule(curves, o), "stop+promote": lambda o: stop_rule(curves, o, promote=True),
             "true-asha": lambda o: true_asha(curves, o)}
    rules.update({name: (lambda o, r=r, eta=eta: stop_rule(curves, o, r, eta)) for name, (r, eta) in VARIANTS.items()})
    rng = random.Random(0)
    kt_finals, results = [], {name: {"at": {30: [], 60: [], 120: []}, "met": 0, "reach": []} for name in rules}
    for _ in range(orders):
        order = []
        for _ in range(4):  # up to four passes of the pool: a rule that stops early starts many trials
            one = list(range(len(curves)))
            rng.shuffle(one)
            order += one
        kt = max(max(curves[c]) for c in rng.sample(range(len(curves)), KT_TRIALS))
        kt_finals.append(kt)
        for name, rule in rules.items():
            trace, out = rule(order), results[name]
            for at in out["at"]:
                out["at"][at].append(trace[min(at, len(trace)) - 1])
            epochs = reached(trace, kt)
            out["met"] += epochs is not None and epochs <= BUDGET // 2
            out["reach"].append(epochs if epochs is not None else float("inf"))
    print(f"{len(curves)} configurations, {orders} orders; a configuration's best over 10 epochs: mean "
          f"{statistics.mean(max(c) for c in curves):.4f}; RandomSearch ({KT_TRIALS} x {EPOCHS}) final best: mean {statistics.mean(kt_finals):.4f}")
    print("| rule | mean best after 30 / 60 / 120 epochs | reached RandomSearch's best in <= 60 epochs | median epochs to reach it |")
    print("|---|---|---|---|")
    for name, out in results.items():
        bests = " / ".join(f"{statistics.mean(out['at'][at]):.4f}" for at in (30, 60, 120))
        print(f"| {name} | {bests} | {out['met'] / orders:.1%} | {statistics.median(out['reach']):g} |")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--collect", type=int, nargs="?", const=72, metavar="N", help="train N configurations (default 72) and store their curves")
    p.add_argument("--orders", type=int, default=3000, help="random orders of the pool to replay (default 3000)")
    p.add_argument("--part", help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.part:
        first, count = (int(x) for x in args.part.split(","))
        collect_part(first, count, args.data, args.out)
    elif args.collect:
        collect(args.collect)
    else:
        replay(args.orders)
    return 0


if __name__ == "__main__":
    sys.exit(main())
