"""Search efficiency (issue 13): best val_accuracy so far against epochs trained and wall time.

Every contender runs as a whole process, one after the other, seeds alternating, so that the
load of a shared machine falls on all of them alike:

- ``hpsearch``: ``hpsearch run`` with its defaults (TPE, the recipe's rates enqueued, the
  default pruner);
- ``optuna-script``: a hand-written Optuna study as users write it today: TPE,
  ``MedianPruner(n_startup_trials=3, n_warmup_steps=2)``, optuna-integration's
  ``KerasPruningCallback`` asking at every epoch, the recipe's rates enqueued, a new model per
  trial (:func:`optuna_script` below, run by ``--contender optuna``);
- ``kerastuner-hyperband``: KerasTuner's ``Hyperband(max_epochs=H, factor=3)``, one
  iteration (it decides its own number of trials);
- ``random-unpruned``: ``hpsearch run --sampler random --pruner none``, the baseline whose
  epochs are the budget (trials x epochs).

Two measurements:

``--gate``
    The issue's comparison: 12 trials x 10 epochs, 10,000 training images, ``--validation
    test``, hpsearch against the Optuna script, over the seeds. Prints and stores epochs
    trained, wall seconds (the whole process) and best val_accuracy per run.
default
    The anytime curves at each horizon (10, 30, 100 epochs per trial on small training
    slices): one PNG per horizon (``docs/anytime-<H>.png``) and the tables between the
    ``<!-- benchmark:anytime ... -->`` markers of docs/benchmarks.md.

Usage::

    python tests/benchmarks/anytime.py --gate                 # about 10 minutes here
    python tests/benchmarks/anytime.py                        # horizons 10, 30, 100; 3 seeds
    python tests/benchmarks/anytime.py --horizons 10,30 --no-write

Needs a PostgreSQL (a scratch database on 127.0.0.1:5432, else the embedded server, or
``--storage URL``), matplotlib for the PNGs and keras-tuner (``pip install -e ".[bench]"``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

DOC = REPO / "docs" / "benchmarks.md"
DATA = Path(os.environ.get("HPSEARCH_DATA") or "/work/shared/data/mnist.npz")
CONTENDERS = ("hpsearch", "optuna-script", "kerastuner-hyperband", "random-unpruned")
#: Per horizon: (epochs per trial, trials, training images). Sized so that the three run
#: in about 40 minutes on this project's 2-core CPU (10,000 validation images every epoch
#: is most of an epoch's time at these slices).
HORIZONS = {10: (10, 12, 2_000), 30: (30, 12, 1_000), 100: (100, 12, 500)}
GATE = (10, 12, 10_000)
#: The ``hpsearch`` beside this interpreter (a venv's python run without activating it), else PATH's.
HPSEARCH = str(Path(sys.executable).with_name("hpsearch")) if Path(sys.executable).with_name("hpsearch").exists() else "hpsearch"
RATES = (0.1, 0.01, 0.0001)
LR_RANGE = (1e-5, 1.0)


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} load {os.getloadavg()[0]:.2f}] {text}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------
# The hand-written contenders, each run as its own process (``--contender``)

#: (wall clock, val_accuracy) at the end of every epoch trained; module-level because
#: KerasTuner deep-copies the callbacks it is given.
EVENTS: list[tuple[float, float]] = []
#: Where the events go, and the epochs after which the process stops (the budget: KerasTuner's
#: Hyperband decides its own number of trials, and one iteration trains more than 12 x H).
LOG: dict = {"path": None, "budget": None}


def _write_events() -> None:
    Path(LOG["path"]).write_text(json.dumps(EVENTS))


def _epoch_logger():
    import keras

    class EpochLog(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            EVENTS.append((time.time(), float((logs or {}).get("val_accuracy", math.nan))))
            if LOG["budget"] and len(EVENTS) >= LOG["budget"]:
                # The budget is spent: stop here, as a user with a fixed budget would. KerasTuner
                # catches exceptions raised in a trial and goes on, so leave the process itself.
                _write_events()
                sys.stdout.flush()
                os._exit(0)

    return EpochLog()


def _data(train_size: int):
    """The recipe's arrays (the test set validates), read as a user's script would."""
    import numpy as np

    with np.load(DATA) as f:
        x_train, y_train, x_test, y_test = f["x_train"], f["y_train"], f["x_test"], f["y_test"]
    prep = lambda x: x.reshape(len(x), 784).astype("float32") / 255.0  # noqa: E731
    onehot = lambda y: np.eye(10, dtype="float32")[y]  # noqa: E731
    return prep(x_train[:train_size]), onehot(y_train[:train_size]), prep(x_test), onehot(y_test)


def optuna_script(args) -> None:
    """The twenty lines a user writes with Optuna and optuna-integration."""
    import keras
    import optuna
    from optuna_integration import KerasPruningCallback

    from anchors import recipe_model

    x, y, xv, yv = _data(args.train_size)

    def objective(trial):
        lr = trial.suggest_float("learning_rate", *LR_RANGE, log=True)
        keras.backend.clear_session()
        keras.utils.set_random_seed(args.seed + trial.number)
        model = recipe_model(lr)
        history = model.fit(x, y, batch_size=1024, epochs=args.epochs, validation_data=(xv, yv), verbose=0,
                            callbacks=[KerasPruningCallback(trial, "val_accuracy"), _epoch_logger()])
        return max(history.history["val_accuracy"])

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=args.storage, study_name=args.study, direction="maximize",
                                sampler=optuna.samplers.TPESampler(seed=args.seed),
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=2))
    for lr in RATES:
        study.enqueue_trial({"learning_rate": lr})
    study.optimize(objective, n_trials=args.trials)


def kerastuner_hyperband(args) -> None:
    import tempfile

    import keras_tuner as kt

    from anchors import recipe_model

    x, y, xv, yv = _data(args.train_size)
    tuner = kt.Hyperband(lambda hp: recipe_model(hp.Float("learning_rate", *LR_RANGE, sampling="log")),
                         objective="val_accuracy", max_epochs=args.epochs, factor=3, hyperband_iterations=1, seed=args.seed,
                         directory=tempfile.mkdtemp(prefix="kt-anytime-"), project_name="hb", overwrite=True)
    tuner.search(x, y, epochs=args.epochs, batch_size=1024, validation_data=(xv, yv), verbose=0, callbacks=[_epoch_logger()])


def _run_contender(args) -> int:
    LOG.update(path=args.log, budget=args.budget)
    {"optuna": optuna_script, "kerastuner": kerastuner_hyperband}[args.contender](args)
    _write_events()
    return 0


# ---------------------------------------------------------------------------------------
# The driver


def _finished_trials(url: str, study: str) -> list:
    """The study's finished trials, read once per run."""
    import optuna

    return [t for t in optuna.load_study(study_name=study, storage=url).get_trials(deepcopy=False) if t.state.is_finished()]


def _study_events(trials: list) -> list[tuple[float, float]]:
    """(wall clock, val_accuracy) per epoch trained, from a study's finished trials.

    hpsearch's trials record each epoch's wall seconds; the Optuna script's epochs come from
    its own log instead, so this is used for hpsearch's studies only.
    """
    events = []
    for t in trials:
        clock = t.datetime_start.timestamp()
        for i, sec in enumerate(t.user_attrs.get("epoch_seconds", [])):
            clock += sec
            events.append((clock, t.intermediate_values.get(i, math.nan)))
    return sorted(events)


def _study_trials(trials: list) -> list[dict]:
    """Each finished trial's rate (and all its parameters), fate and val_accuracy per epoch, for
    replaying rules later (``rung_replay.py``): the unpruned search's trials are a grid of full
    curves at this size."""
    out = []
    for t in trials:
        values = [t.intermediate_values.get(i) for i in range(max(t.intermediate_values, default=-1) + 1)]
        out.append({"number": t.number, "learning_rate": t.params.get("learning_rate"), "params": t.params, "state": t.state.name,
                    "val_accuracy": [None if v is None else round(v, 5) for v in values]})
    return out


def _study_counts(trials: list) -> dict:
    return {"trials": len(trials), "pruned": sum(t.state.name == "PRUNED" for t in trials)}


def run_one(name: str, url: str, epochs: int, trials: int, train_size: int, seed: int) -> dict:
    """Run contender ``name`` as a process; return its epochs, seconds, best and curve."""
    study = f"anytime-{name}-{uuid.uuid4().hex[:6]}"
    logfile = Path(f"/tmp/anytime-{uuid.uuid4().hex[:8]}.json")
    common = ["--epochs", str(epochs), "--train-size", str(train_size), "--seed", str(seed)]
    hp = [HPSEARCH, "run", "--storage", url, "--study", study, "--data", str(DATA), "--trials", str(trials),
          "--validation", "test", "--format", "json"] + common
    cmd = {
        "hpsearch": hp,
        "random-unpruned": hp + ["--sampler", "random", "--pruner", "none"],
        "hpsearch-median": hp + ["--pruner", "median"],
        "optuna-script": [sys.executable, __file__, "--contender", "optuna", "--storage", url, "--study", study,
                          "--trials", str(trials), "--log", str(logfile)] + common,
        "kerastuner-hyperband": [sys.executable, __file__, "--contender", "kerastuner", "--log", str(logfile),
                                 "--budget", str(trials * epochs)] + common,
    }[name]
    return measure(name, cmd, seed, url=url, study=None if name == "kerastuner-hyperband" else study,  # KerasTuner keeps no study
                   logfile=None if name in STUDY_EPOCHS else logfile)


#: The contenders whose epochs are read from their study (hpsearch's trials record each epoch).
STUDY_EPOCHS = ("hpsearch", "random-unpruned", "hpsearch-median")


def measure(name: str, cmd: list[str], seed: int, *, url: str | None = None, study: str | None = None,
            logfile: Path | None = None) -> dict:
    """Run ``cmd`` as a process; return its epochs, seconds, best and curve.

    Args:
        name: the contender, as the row names it.
        cmd: the whole process to run, from this repository's root.
        seed: the seed it ran with, as the row records it.
        url, study: the study the process wrote, if any: its trials are counted, and its epochs
            are read from them unless ``logfile`` is given.
        logfile: the process's own log of epochs (``_epoch_logger``), read and removed.

    Returns:
        The row: ``epochs`` trained, ``seconds`` (the whole process), ``best`` val_accuracy, the
        machine's load before and after, ``curve`` ``(epochs, seconds, best so far)`` per epoch,
        the study's ``trials`` and ``pruned`` counts and ``per_trial`` (None without a study).
    """
    load = os.getloadavg()[0]
    started = time.time()
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    seconds = time.time() - started
    if proc.returncode != 0:
        raise RuntimeError(f"{name} exited {proc.returncode}: {proc.stderr[-2000:]}")
    trials_done = _finished_trials(url, study) if study else None
    if logfile is None:
        events = _study_events(trials_done)
    else:
        events = [tuple(e) for e in json.loads(logfile.read_text())]
        logfile.unlink()
    counts = _study_counts(trials_done) if trials_done is not None else {"trials": None, "pruned": None}
    per_trial = _study_trials(trials_done) if trials_done is not None else None
    curve, best = [], -math.inf
    for i, (clock, value) in enumerate(events, 1):
        if math.isfinite(value) and value > best:
            best = value
        curve.append((i, round(clock - started, 3), best))
    row = {"contender": name, "seed": seed, "epochs": len(events), "seconds": round(seconds, 2), "best": best,
           "load_before": round(load, 2), "load_after": round(os.getloadavg()[0], 2), "curve": curve, **counts,
           "per_trial": per_trial}
    log(f"{name} seed {seed}: {row['epochs']} epochs, {seconds:.1f} s, best {best:.4f}")
    return row


def best_at(curve: list, x: float, by: str) -> float | None:
    """Best so far once ``x`` epochs (``by="epochs"``) or seconds (``"seconds"``) are spent."""
    k = 0 if by == "epochs" else 1
    seen = [p[2] for p in curve if p[k] <= x]
    return seen[-1] if seen else None


def _storage(given: str | None):
    from run import scratch_storage

    return scratch_storage(given)


def gate(args) -> dict:
    epochs, trials, train_size = GATE
    runs = []
    with _storage(args.storage) as (url, where):
        log(f"gate: {trials} trials x {epochs} epochs, {train_size} images, seeds {args.seeds}, {where}")
        for seed in args.seeds:
            order = args.contenders if seed % 2 == 0 else args.contenders[::-1]
            for name in order:
                runs.append(run_one(name, url, epochs, trials, train_size, seed))
    return {"size": GATE, "contenders": list(args.contenders), "runs": [{k: v for k, v in r.items() if k != "curve"} for r in runs], "machine_load": os.getloadavg()}


def render_gate(result: dict) -> str:
    runs = result["runs"]
    by = lambda name: [r for r in runs if r["contender"] == name]  # noqa: E731
    hp, sc = by("hpsearch"), by("optuna-script")
    if not hp or not sc:
        hp, sc = by(result["contenders"][0]), by(result["contenders"][-1])
    out = ["| seed | contender | trials (pruned) | epochs trained | wall s | best val_accuracy | load before → after |", "|---|---|---|---|---|---|---|"]
    for r in runs:
        out.append(f"| {r['seed']} | {r['contender']} | {r['trials']} ({r['pruned']}) | {r['epochs']} | {r['seconds']:.1f} | {r['best']:.4f} | {r['load_before']:.2f} → {r['load_after']:.2f} |")
    mean = lambda rows, k: statistics.mean(r[k] for r in rows)  # noqa: E731
    pairs = list(zip(sorted(hp, key=lambda r: r["seed"]), sorted(sc, key=lambda r: r["seed"])))
    ratios = ", ".join(f"{h['seconds'] / s['seconds']:.2f}" for h, s in pairs)
    shares = ", ".join(f"{h['epochs'] / s['epochs']:.0%}" for h, s in pairs)
    deltas = ", ".join(f"{100 * (h['best'] - s['best']):+.2f}" for h, s in pairs)
    he, se = mean(hp, "epochs"), mean(sc, "epochs")
    out.append("")
    out.append(f"Mean over {len(hp)} seeds: hpsearch trained {he:.1f} epochs ({he / 120:.1%} of 120; {he / se:.1%} of the script's {se:.1f}, "
               f"per seed {shares}), in {mean(hp, 'seconds') / mean(sc, 'seconds'):.2f}x the script's wall time (per seed {ratios}), "
               f"best val_accuracy {mean(hp, 'best'):.4f} against {mean(sc, 'best'):.4f} ({100 * (mean(hp, 'best') - mean(sc, 'best')):+.2f} points; per seed {deltas}).")
    return "\n".join(out)


def anytime(args, finished) -> None:
    """Run every contender of ``args.contenders`` at each horizon and seed.

    The runs so far are written to ``docs/data/anytime-<H>.json`` after every run (unless
    ``--no-write``), so a stopped benchmark loses one run at most; ``finished(h, res)`` draws and
    writes each horizon once its runs are done.

    With ``--merge`` the runs are added to the stored ones, replacing a stored run of the same
    contender and seed: epochs and accuracies do not depend on the machine's load, wall times
    of runs made at different times do (the table says which runs were merged). ``--resume``
    merges and skips the runs the stored file already holds, to finish a stopped benchmark.
    """
    with _storage(args.storage) as (url, where):
        for h in args.horizons:
            epochs, trials, train_size = HORIZONS[h]
            log(f"horizon {h}: {trials} trials x {epochs} epochs, {train_size} images, seeds {args.seeds}, {args.contenders}, {where}")
            stored = REPO / "docs" / "data" / f"anytime-{h}.json"
            old = json.loads(stored.read_text()) if (args.merge or args.resume) and stored.exists() else {"runs": []}
            if old.get("train_size", train_size) != train_size or old.get("epochs", epochs) != epochs:
                old = {"runs": []}  # stored at another size: nothing to merge with
            done = {(r["contender"], r["seed"]) for r in old["runs"] if not r.get("merged")} if args.resume else set()
            since = old.get("measured", "an earlier run")
            for r in old["runs"]:  # a run stored before the budget held KerasTuner to it: keep its first trials x epochs
                if r["epochs"] > trials * epochs:
                    r.update(epochs=trials * epochs, curve=r["curve"][: trials * epochs], best=r["curve"][trials * epochs - 1][2], cut_at_budget=True)
            runs = [r if (r["contender"], r["seed"]) in done else dict(r, merged=r.get("merged") or since) for r in old["runs"]]
            res = {"epochs": epochs, "trials": trials, "train_size": train_size, "runs": runs,
                   "measured": old.get("measured") if args.resume and done else time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
            for i, seed in enumerate(args.seeds):
                order = [c for c in CONTENDERS[i % len(CONTENDERS):] + CONTENDERS[:i % len(CONTENDERS)] if c in args.contenders]  # rotate who goes first
                for name in order:
                    if (name, seed) in done:
                        log(f"{name} seed {seed}: kept from the stored run (--resume)")
                        continue
                    row = run_one(name, url, epochs, trials, train_size, seed)
                    res["runs"] = [r for r in res["runs"] if (r["contender"], r["seed"]) != (name, seed)] + [row]
                    if not args.no_write:
                        stored.write_text(json.dumps(res))
            finished(h, res)


def plot(h: int, res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    colors = dict(zip(CONTENDERS, ("tab:red", "tab:blue", "tab:green", "tab:gray")))
    for name in CONTENDERS[::-1]:  # hpsearch last, on top
        width = 1.8 if name == "hpsearch" else 1.2
        for j, r in enumerate(r for r in res["runs"] if r["contender"] == name):
            xs_e = [p[0] for p in r["curve"]]
            xs_t = [p[1] for p in r["curve"]]
            ys = [p[2] for p in r["curve"]]
            label = name if j == 0 else None
            axes[0].step(xs_e, ys, where="post", color=colors[name], alpha=0.8, lw=width, label=label)
            axes[1].step(xs_t, ys, where="post", color=colors[name], alpha=0.8, lw=width, label=label)
            if xs_e and xs_e[-1] < res["trials"] * res["epochs"]:  # finished early: its best holds to the budget's end
                axes[0].plot([xs_e[-1], res["trials"] * res["epochs"]], [ys[-1], ys[-1]], ls=":", lw=width, color=colors[name], alpha=0.6)
    budget = res["trials"] * res["epochs"]
    axes[0].axvline(budget / 4, color="k", lw=0.6, ls=":")
    axes[0].set_xlabel("epochs trained (cumulative; dotted: finished, its best holds)")
    axes[1].set_xlabel("wall seconds since the process started")
    for ax in axes:
        ax.set_ylabel("best val_accuracy so far")
        ax.set_ylim(0.8, 1.0)
        ax.grid(alpha=0.3)
    axes[0].legend(loc="lower right", fontsize=8)
    fig.suptitle(f"{res['trials']} trials x {res['epochs']} epochs, {res['train_size']} training images, test set validates; one line per seed")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def curve_margin(res: dict, name: str = "hpsearch") -> str:
    """How far ``name``'s curve (best so far against epochs, mean over the seeds every
    contender ran) lies above the highest other curve from a quarter of the budget on.

    A contender that has finished keeps its best from then on (the budget is the same for all).
    """
    budget = res["trials"] * res["epochs"]
    runs = res["runs"]
    seeds = sorted(set.intersection(*[{r["seed"] for r in runs if r["contender"] == c} for c in {r["contender"] for r in runs}]))
    if name not in {r["contender"] for r in runs} or not seeds:
        return ""

    def mean_best(contender: str, x: int) -> float | None:
        vals = [best_at(r["curve"], x, "epochs") for r in runs if r["contender"] == contender and r["seed"] in seeds]
        return _mean_or_none(vals)

    worst, at, rival = math.inf, None, None
    for x in range(math.ceil(budget / 4), budget + 1):
        mine = mean_best(name, x)
        for other in {r["contender"] for r in runs} - {name}:
            theirs = mean_best(other, x)
            if theirs is None:
                continue
            margin = -math.inf if mine is None else mine - theirs
            if margin < worst:
                worst, at, rival = margin, x, other
    if at is None:
        return ""
    verdict = "at or above every other curve" if worst >= 0 else "below another curve"
    return (f"From a quarter of the budget ({budget // 4} epochs) to its end, {name}'s mean curve over seeds {','.join(map(str, seeds))} "
            f"is {verdict}: its lowest margin is {100 * worst:+.2f} points, against {rival} at {at} epochs.")


def _mean_or_none(values: list) -> float | None:
    """The mean, or None where a run had not reported anything by then."""
    return statistics.mean(values) if values and all(v is not None for v in values) else None


def render_anytime(results: dict) -> str:
    out = []
    for h, res in results.items():
        budget = res["trials"] * res["epochs"]
        runs = res["runs"]
        rnd = {r["seed"]: r for r in runs if r["contender"] == "random-unpruned"}
        out.append(f"### Horizon {h}: {res['trials']} trials x {res['epochs']} epochs, {res['train_size']} training images\n")
        out.append(f"![anytime, horizon {h}](anytime-{h}.png)\n")
        out.append("| contender | seeds | epochs trained (% of unpruned) | wall s | best val_accuracy | Δ vs unpruned (pp), per seed | best at 25% / 50% of the budget's epochs | best at 25% / 50% of the unpruned wall time | load |")
        out.append("|---|---|---|---|---|---|---|---|---|")
        for name in CONTENDERS:
            rows = [r for r in runs if r["contender"] == name]
            if not rows:
                continue
            ep = statistics.mean(r["epochs"] for r in rows)
            sec = statistics.mean(r["seconds"] for r in rows)
            best = statistics.mean(r["best"] for r in rows)
            deltas = ", ".join(f"{100 * (r['best'] - rnd[r['seed']]['best']):+.2f}" for r in rows if r["seed"] in rnd)
            fmt = lambda v: "–" if v is None else f"{v:.4f}"  # noqa: E731
            at_e = [_mean_or_none([best_at(r["curve"], f * budget, "epochs") for r in rows]) for f in (0.25, 0.5)]
            at_t = [_mean_or_none([best_at(r["curve"], f * rnd[r["seed"]]["seconds"], "seconds") for r in rows if r["seed"] in rnd]) for f in (0.25, 0.5)]
            loads = [r["load_before"] for r in rows] + [r["load_after"] for r in rows]
            seeds = ",".join(str(r["seed"]) + ("*" if r.get("merged") else "") for r in rows)
            out.append(f"| {name} | {seeds} | {ep:.1f} ({ep / budget:.1%}) | {sec:.1f} | {best:.4f} | {deltas} | {fmt(at_e[0])} / {fmt(at_e[1])} | "
                       f"{fmt(at_t[0])} / {fmt(at_t[1])} | {min(loads):.1f}–{max(loads):.1f} |")
        out.append("")
        merged = sorted({r["merged"] for r in runs if r.get("merged")})
        if merged:
            out.append(f"\\* runs kept from {', '.join(merged)} (`--merge`): their wall times were measured under that run's load.\n")
        cut = [f"{r['contender']} seed {r['seed']}" for r in runs if r.get("cut_at_budget")]
        if cut:
            out.append(f"Cut at the budget's {budget} epochs (stored before the driver stopped it there): {', '.join(cut)}; "
                       "its wall s is the whole run's.\n")
        out.append(curve_margin(res) + "\n")
    return "\n".join(out)


def write_block(tag: str, text: str) -> None:
    doc = DOC.read_text()
    begin, end = f"<!-- benchmark:{tag} begin -->", f"<!-- benchmark:{tag} end -->"
    block = f"{begin}\n{text}\n{end}"
    if begin in doc:
        doc = doc[: doc.index(begin)] + block + doc[doc.index(end) + len(end):]
    else:
        doc = doc.rstrip("\n") + "\n\n" + block + "\n"
    DOC.write_text(doc)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gate", action="store_true", help="the 12 x 10 comparison against the hand-written Optuna script")
    p.add_argument("--horizons", default="10,30,100", help="comma-separated horizons among 10, 30, 100 (default: all)")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default: 0,1,2)")
    p.add_argument("--storage", help="PostgreSQL URL (default: a scratch database on 127.0.0.1:5432, else the embedded server)")
    p.add_argument("--no-write", action="store_true", help="print, do not write docs/")
    p.add_argument("--contenders", help="who runs, alternated (--gate default: hpsearch,optuna-script, also hpsearch-median: "
                   "--pruner median; horizons default: all four)")
    p.add_argument("--replot", action="store_true", help="horizons: redraw the PNGs from the stored runs, run nothing")
    p.add_argument("--merge", action="store_true", help="horizons: add these runs to the stored ones of other contenders and seeds")
    p.add_argument("--resume", action="store_true", help="horizons: finish a stopped run: keep the stored runs of this "
                   "measurement and run only the missing contenders and seeds")
    # a hand-written contender as its own process (used by the driver)
    p.add_argument("--contender", choices=("optuna", "kerastuner"), help=argparse.SUPPRESS)
    p.add_argument("--study", help=argparse.SUPPRESS)
    p.add_argument("--log", help=argparse.SUPPRESS)
    p.add_argument("--epochs", type=int, help=argparse.SUPPRESS)
    p.add_argument("--trials", type=int, help=argparse.SUPPRESS)
    p.add_argument("--train-size", type=int, help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, help=argparse.SUPPRESS)
    p.add_argument("--budget", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.contender:
        return _run_contender(args)
    args.seeds = [int(s) for s in args.seeds.split(",")]
    args.contenders = tuple(args.contenders.split(",")) if args.contenders else (("hpsearch", "optuna-script") if args.gate else CONTENDERS)
    args.horizons = [int(h) for h in args.horizons.split(",")]
    started = time.time()
    stamp = f"{time.strftime('%Y-%m-%d')}, {{:.0f}} s in all, TensorFlow on {os.cpu_count()} CPU cores shared with other work"
    data_dir = REPO / "docs" / "data"
    if args.gate:
        result = gate(args)
        text = f"Measured by `python tests/benchmarks/anytime.py --gate` on {stamp.format(time.time() - started)}.\n\n{render_gate(result)}"
        print(text)
        if not args.no_write:
            (data_dir / "anytime-gate.json").write_text(json.dumps(result, indent=1))
            write_block("anytime-gate", text)
        return 0
    if args.replot:
        for h in args.horizons:
            plot(h, json.loads((data_dir / f"anytime-{h}.json").read_text()), REPO / "docs" / f"anytime-{h}.png")
        return 0
    seeds = ",".join(map(str, args.seeds))

    def finished(h: int, res: dict) -> None:
        who = "" if set(args.contenders) == set(CONTENDERS) else f" --contenders {','.join(args.contenders)}"
        who += " --resume" if args.resume else " --merge" if args.merge else ""
        text = (f"Measured by `python tests/benchmarks/anytime.py --horizons {h} --seeds {seeds}{who}` on "
                f"{stamp.format(time.time() - started)} (this and the horizons before it in the same run).\n\n{render_anytime({h: res})}")
        print(text, flush=True)
        if not args.no_write:
            (data_dir / f"anytime-{h}.json").write_text(json.dumps(res))
            plot(h, res, REPO / "docs" / f"anytime-{h}.png")
            write_block(f"anytime-{h}", text)

    anytime(args, finished)
    return 0


if __name__ == "__main__":
    sys.exit(main())
