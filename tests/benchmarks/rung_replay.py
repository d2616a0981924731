"""Screen pruner settings on recorded learning curves, with the real sampler and pruner code (issue 13).

The gate (``anytime.py --gate``) measures a setting in minutes per seed; this replays one in
milliseconds, so a setting can be judged on many sampler seeds instead of tuned to three.

``--collect`` trains the recipe's model at the gate's size (10 epochs, 10,000 training
images, the test set validates, batch 1,024, weights seeded with 0) at a grid of learning
rates, denser where the good rates are, and stores each rate's ``val_accuracy`` curve in
``docs/data/gate-grid-curves.json``. The replay then runs whole studies through Optuna's
ask/report/tell, in memory, where a trial "trains" by reading the curve of the grid rate
nearest its own (in log10): hpsearch's sampler (:func:`search.study.create.make_sampler`) with the
recipe's rates enqueued and a pruner asked on its schedule, against the hand-written script
(TPE with Optuna's defaults, ``MedianPruner(n_startup_trials=3, n_warmup_steps=2)`` asked
every epoch), and prints per rule the epochs trained and the best val_accuracy seen against
the script's over the seeds.

What it leaves out: the noise of a real trial (its own initial weights and shuffles; here two
trials at nearby rates read the same curve), and wall time. It screens; the gate measures.

``--horizon H`` replays at one of ``anytime.py``'s horizons instead, on the curves its runs
stored (``docs/data/anytime-<H>.json``: every trial that trained all H epochs, from every
seed, so trials at nearby rates read curves from different initial weights), against the
replayed unpruned random search (the horizon targets are shares of its epochs and its best).
A rule may set ``"epoch_budget": true``: the study goes on starting trials until it has trained
the unpruned search's epochs (trials x H), the budget the anytime figure draws.

Usage::

    python tests/benchmarks/rung_replay.py --collect          # about 8 minutes on 2 loaded cores
    python tests/benchmarks/rung_replay.py --seeds 40          # replay the rules below on 40 seeds
"""

from __future__ import annotations

import argparse
import bisect
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

GRID = Path(os.environ.get("REPLAY_GRID") or REPO / "docs" / "data" / "gate-grid-curves.json")
EPOCHS, TRIALS, TRAIN = 10, 12, 10_000
RATES = (0.1, 0.01, 0.0001)


def grid_exponents() -> list[float]:
    coarse = [-5.0, -4.5, -4.0, -3.5, -3.0, -2.7, -1.2, -1.0, -0.5, 0.0]
    fine = [round(-2.4 + k / 10, 2) for k in range(11)]  # 0.004 .. 0.04 in tenths of a decade
    return sorted(set(coarse + fine))


def collect() -> None:
    import keras
    import numpy as np

    from anchors import recipe_model
    from anytime import DATA, log

    with np.load(DATA) as f:
        x, y, xv, yv = f["x_train"][:TRAIN], f["y_train"][:TRAIN], f["x_test"], f["y_test"]
    prep = lambda a: a.reshape(len(a), 784).astype("float32") / 255.0  # noqa: E731
    x, xv, y, yv = prep(x), prep(xv), np.eye(10, dtype="float32")[y], np.eye(10, dtype="float32")[yv]
    out = json.loads(GRID.read_text()) if GRID.exists() else {}
    for e in grid_exponents():
        if str(e) in out:
            continue
        keras.backend.clear_session()
        keras.utils.set_random_seed(0)
        h = recipe_model(10.0 ** e).fit(x, y, batch_size=1024, epochs=EPOCHS, validation_data=(xv, yv), verbose=0)
        out[str(e)] = [round(float(v), 4) for v in h.history["val_accuracy"]]
        GRID.write_text(json.dumps(out, indent=0))
        log(f"lr 1e{e:+.2f}: " + " ".join(f"{v:.3f}" for v in out[str(e)]))


class Curves:
    """A trial's curve: that of a grid rate near its own, plus its own noise.

    With ``noise`` (in accuracy, e.g. 0.003) a trial reads the curve of a grid rate drawn
    among those within 0.15 decades of its own (else the nearest), and each epoch gets
    independent Gaussian noise of that size: what a trial's own initial weights and shuffles
    do to it (the grid's neighbouring rates differ by about that much). The draw depends on
    ``key`` (the study's seed and the trial's number) only.
    """

    def __init__(self, path: Path = GRID, noise: float = 0.0, pool: list[tuple[float, list[float]]] | None = None):
        #: (log10 of the rate, its curve), sorted; a rate may have several curves (``pool``)
        self.pool = sorted(pool if pool is not None else [(float(k), v) for k, v in json.loads(path.read_text()).items()])
        self.keys = [k for k, _ in self.pool]
        self.noise = noise

    @classmethod
    def from_anytime(cls, path: Path, epochs: int, noise: float) -> "Curves":
        """Every whole curve (all ``epochs`` epochs) the anytime runs stored, of every contender and seed."""
        res = json.loads(path.read_text())
        pool = [(math.log10(t["learning_rate"]), t["val_accuracy"]) for r in res["runs"] for t in (r.get("per_trial") or [])
                if len(t["val_accuracy"]) == epochs and None not in t["val_accuracy"]]
        if not pool:
            raise SystemExit(f"{path} holds no per-trial curves: run anytime.py at this horizon first")
        return cls(noise=noise, pool=pool)

    def __call__(self, lr: float, key=None) -> list[float]:
        import random

        x = math.log10(lr)
        i = bisect.bisect_left(self.keys, x)
        near = min(range(max(0, i - 1), min(i + 1, len(self.keys))), key=lambda j: abs(self.keys[j] - x))
        if not self.noise:
            return self.pool[near][1]
        rng = random.Random(hash(key))
        around = [j for j, k in enumerate(self.keys) if abs(k - x) <= 0.15] or [near]
        base = self.pool[rng.choice(around)][1]
        return [min(1.0, max(0.0, v + rng.gauss(0.0, self.noise))) for v in base]


def run_study(curves: Curves, sampler, pruner, schedule, *, enqueue=RATES, seed=0, epoch_budget: bool = False,
              trace: list | None = None) -> tuple[int, float]:
    """One study of TRIALS trials (or, with ``epoch_budget``, of as many as TRIALS x EPOCHS
    epochs allow); return (epochs trained, best val_accuracy seen). ``trace`` gets the best so
    far after every epoch."""
    import optuna

    from search.train.monitor import EpochMonitor

    study = optuna.create_study(direction="maximize", sampler=sampler, pruner=pruner)
    for lr in enqueue:
        study.enqueue_trial({"learning_rate": lr})
    total, best, budget = 0, -math.inf, TRIALS * EPOCHS
    for _ in range(budget if epoch_budget else TRIALS):  # with a budget: until its epochs are spent
        if epoch_budget and total >= budget:
            break
        trial = study.ask()
        lr = trial.suggest_float("learning_rate", 1e-5, 1.0, log=True)
        m = EpochMonitor(trial, schedule=schedule)
        pruned = False
        for epoch, acc in enumerate(curves(lr, (seed, trial.number))[:EPOCHS]):
            logs = {"loss": 0.5, "val_loss": 0.5, "accuracy": acc, "val_accuracy": acc}
            stop = m.end_epoch(epoch, logs)
            best = max(best, acc)
            if trace is not None:
                trace.append(best)
            if stop or (epoch_budget and total + m.epochs_run >= budget and epoch < EPOCHS - 1):
                pruned = True
                break
        total += m.epochs_run
        if pruned:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial, m.best_value)
    return total, best


def script(curves: Curves, seed: int) -> tuple[int, float]:
    import optuna

    from search.study.pruners import EVERY_EPOCH

    return run_study(curves, optuna.samplers.TPESampler(seed=seed),
                     optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=2), EVERY_EPOCH, seed=seed)


def unpruned(curves: Curves, seed: int, trace: list | None = None) -> tuple[int, float]:
    """``hpsearch run --sampler random --pruner none``: the horizons' baseline."""
    import optuna

    from search.study.config import StudyConfig
    from search.study.space import recipe_order
    from search.study.create import make_sampler

    from search.study.pruners import PrunerSchedule

    cfg = StudyConfig(epochs=EPOCHS, seed=seed, sampler="random")
    return run_study(curves, make_sampler(cfg), optuna.pruners.NopPruner(), PrunerSchedule(enabled=False),
                     enqueue=recipe_order(RATES), seed=seed, trace=trace)


def hpsearch(curves: Curves, seed: int, rule: dict, trace: list | None = None) -> tuple[int, float]:
    from search.study.config import StudyConfig
    from search.study.pruners import AshaPruner, PrunerSchedule, make_pruner, pruner_schedule
    from search.study.create import make_sampler

    cfg = StudyConfig(epochs=EPOCHS, seed=seed, pruner=rule.get("pruner", "asha"))
    sampler_kw = {k[len("tpe_"):]: v for k, v in rule.items() if k.startswith("tpe_")}
    sampler = make_sampler(cfg)
    if sampler_kw:  # the same TPE with some settings changed
        import optuna

        kw = dict(n_startup_trials=sampler._n_startup_trials, n_ei_candidates=sampler._n_ei_candidates, multivariate=True,
                  group=False, constant_liar=True, seed=seed)
        sampler = optuna.samplers.TPESampler(**{**kw, **sampler_kw})
    asha_kw = {k: v for k, v in rule.items() if k in ("min_epochs", "reduction_factor", "keep")}
    if rule.get("drop_last"):
        asha_kw.setdefault("reduction_factor", 3)
    if asha_kw:
        pruner = AshaPruner(EPOCHS, **asha_kw)
        if rule.get("drop_last"):  # no rung within a factor eta of the last epoch
            pruner.rungs = [r for r in pruner.rungs if (r + 1) * pruner.reduction_factor <= EPOCHS]
        schedule = PrunerSchedule(steps=frozenset(pruner.rungs), last_step=EPOCHS - 1)
    else:
        pruner, schedule = make_pruner(cfg), pruner_schedule(cfg)
    from search.study.space import recipe_order

    return run_study(curves, sampler, pruner, schedule, enqueue=rule.get("enqueue", recipe_order(RATES)), seed=seed,
                     epoch_budget=bool(rule.get("epoch_budget")), trace=trace)


RULES = [
    {},  # the default as it stands (0.01 enqueued first)
    {"enqueue": RATES},  # the previous default: the recipe's order, 0.1 first
    {"min_epochs": 2},
    {"min_epochs": 3},
    {"reduction_factor": 2},
    {"min_epochs": 2, "reduction_factor": 2},
    {"tpe_n_startup_trials": 5},
    {"tpe_n_startup_trials": 5, "min_epochs": 2},
    {"pruner": "none"},
]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--collect", action="store_true", help="train the grid of rates and store their curves")
    p.add_argument("--seeds", type=int, default=40, help="sampler seeds to replay (0 .. N-1)")
    p.add_argument("--rule", action="append", help="a rule as JSON (default: the list in RULES)")
    p.add_argument("--noise", type=float, default=0.003, help="each trial's own noise, in accuracy (default: 0.003)")
    p.add_argument("--horizon", type=int, choices=(10, 30, 100), help="replay at an anytime.py horizon, on the curves its runs stored")
    args = p.parse_args()
    if args.collect:
        collect()
        return 0
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    if args.horizon:
        return replay_horizon(args)
    curves = Curves(noise=args.noise)
    seeds = range(args.seeds)
    base = {s: script(curves, s) for s in seeds}
    e0 = statistics.mean(t for t, _ in base.values())
    print(f"script: mean {e0:.1f} epochs, best {statistics.mean(b for _, b in base.values()):.4f}")
    rules = [json.loads(r) for r in args.rule] if args.rule else RULES
    print("| rule | mean epochs | max epochs | seeds over 48 | max % of script | seeds over 60% of script | mean Δ best (pp) | worst Δ | seeds below -0.3 | seeds meeting all three |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for rule in rules:
        started = time.time()
        res = {s: hpsearch(curves, s, rule) for s in seeds}
        d = [100 * (res[s][1] - base[s][1]) for s in seeds]
        share = [res[s][0] / base[s][0] for s in seeds]
        ep = [res[s][0] for s in seeds]
        print(f"| {json.dumps(rule)} | {statistics.mean(ep):.1f} | {max(ep)} | {sum(e > 48 for e in ep)} | {max(share):.0%} | "
              f"{sum(x > 0.6 for x in share)} | {statistics.mean(d):+.2f} | {min(d):+.2f} | {sum(x < -0.3 for x in d)} | "
              f"{sum(e <= 48 and x <= 0.6 and y >= -0.3 for e, x, y in zip(ep, share, d))} of {len(ep)} |"
              f"  ({time.time() - started:.0f} s)", flush=True)
    return 0


#: What the horizon replay screens by default.
HORIZON_RULES = [
    {},
    {"pruner": "none"},  # TPE unpruned: what the sampler alone does against the random search
    {"drop_last": True},
    {"keep": [1 / 3, 1 / 2]},
    {"min_epochs": 2},
    {"min_epochs": 3},
    {"tpe_n_startup_trials": 5},
    {"epoch_budget": True},
    {"epoch_budget": True, "tpe_n_startup_trials": 5},
]
#: The issue's epoch targets per horizon: at most this share of the unpruned search's epochs.
EPOCH_SHARE = {10: 0.4, 30: 0.3, 100: 0.2}


def replay_horizon(args) -> int:
    """Each rule against the replayed unpruned search on ``args.seeds`` seeds, at one horizon."""
    global EPOCHS, TRIALS

    from anytime import HORIZONS

    EPOCHS, TRIALS, train = HORIZONS[args.horizon]
    budget = EPOCHS * TRIALS
    curves = Curves.from_anytime(REPO / "docs" / "data" / f"anytime-{args.horizon}.json", EPOCHS, args.noise)
    seeds = range(args.seeds)
    base_trace = {s: [] for s in seeds}
    base = {s: unpruned(curves, s, base_trace[s]) for s in seeds}
    at = lambda trace, f: trace[min(len(trace), max(1, int(f * budget))) - 1]  # noqa: E731
    print(f"horizon {args.horizon}: {TRIALS} trials x {EPOCHS} epochs, {train} images; {len(curves.pool)} stored curves, "
          f"noise {args.noise}; unpruned: best {statistics.mean(b for _, b in base.values()):.4f}")
    share = EPOCH_SHARE[args.horizon]
    print(f"| rule | mean epochs (% of {budget}) | seeds over {share:.0%} | mean Δ best (pp) | worst Δ | seeds below -0.3 | "
          "Δ at 25% / 50% of the budget (pp) | seeds meeting both |")
    print("|---|---|---|---|---|---|---|---|")
    rules = [json.loads(r) for r in args.rule] if args.rule else HORIZON_RULES
    for rule in rules:
        traces = {s: [] for s in seeds}
        res = {s: hpsearch(curves, s, rule, traces[s]) for s in seeds}
        d = [100 * (res[s][1] - base[s][1]) for s in seeds]
        ep = [res[s][0] for s in seeds]
        quarter = statistics.mean(100 * (at(traces[s], 0.25) - at(base_trace[s], 0.25)) for s in seeds)
        half = statistics.mean(100 * (at(traces[s], 0.5) - at(base_trace[s], 0.5)) for s in seeds)
        over = [e > share * budget for e in ep]
        print(f"| {json.dumps(rule)} | {statistics.mean(ep):.1f} ({statistics.mean(ep) / budget:.1%}) | {sum(over)} | "
              f"{statistics.mean(d):+.2f} | {min(d):+.2f} | {sum(x < -0.3 for x in d)} | {quarter:+.2f} / {half:+.2f} | "
              f"{sum(not o and x >= -0.3 for o, x in zip(over, d))} of {len(ep)} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
