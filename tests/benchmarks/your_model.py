"""Your model (issue 23): hpsearch's default against KerasTuner's own tuners on a user's hypermodel.

The hypermodel is KerasTuner's getting-started one, unchanged
(``docs/examples/getting_started.py:build_model``: ``num_layers`` 1-3, ``units_i`` 32-512 step
32, ``activation`` relu/tanh, a Boolean ``dropout``, a log-uniform ``lr`` 1e-4-1e-2), on MNIST
as the guide prepares it (``docs/examples/make_mnist_npz.py``: the first 6,000 training images
and all 10,000 test images). Every contender validates on the same 10,000 test images (the guide
holds out 10,000 images to validate), trains with the same batch size, and has the same budget,
trials x epochs (12 x 10 = 120 epochs):

- ``hpsearch``: ``hpsearch run --model ... --data ... --validation test --seed S --epoch-budget 120``
  with its defaults (TPE, successive halving), on a PostgreSQL: the budget as epochs, so the
  epochs successive halving saves go to more trials (no trial starts once 120 are trained);
- ``kerastuner-random``: ``keras_tuner.RandomSearch(max_trials=12, seed=S)``, ``epochs=10``;
- ``kerastuner-hyperband``: ``keras_tuner.Hyperband(max_epochs=10, factor=3, seed=S)``, one
  iteration, its process stopped once it has trained the budget's epochs (as anytime.py does).

Each runs as a whole process, one after the other, rotating who goes first from seed to seed.
The KerasTuner processes also seed Keras with S (``keras.utils.set_random_seed``); hpsearch
seeds each trial with S plus the trial's number. Per run the driver stores the best
val_accuracy, the epochs trained, the wall time and the anytime curve (best so far after each
epoch) in ``docs/data/your-model.json``, draws ``docs/your-model.png`` (the mean curves) and
writes the tables between the ``<!-- benchmark:your-model ... -->`` markers of
docs/benchmarks.md.

The target: hpsearch reaches each KerasTuner contender's final best in at most half the epochs.
The table gives, per seed, the epochs hpsearch's curve needed to reach it (or that it did not).

Usage::

    python tests/benchmarks/your_model.py                     # 6 seeds x 3 contenders, about 36 minutes here
    python tests/benchmarks/your_model.py --seeds 0 --no-write
    python tests/benchmarks/your_model.py --replot            # redraw the PNG and the tables from the JSON
    python tests/benchmarks/your_model.py --contenders hpsearch --keep-others   # rerun hpsearch, keep the stored KerasTuner runs
    python tests/benchmarks/your_model.py --contenders hpsearch --keep-others --sampler random --no-write   # screen another sampler (or --pruner)
    python tests/benchmarks/your_model.py --seeds 3,4,5 --keep-others           # add seeds to the stored ones
    python tests/benchmarks/your_model.py --trials 24 --seeds 0,1,2             # twice the budget, kept apart (your-model-24x10)

Needs a PostgreSQL (a scratch database on 127.0.0.1:5432, else the embedded server, or
``--storage URL``), keras-tuner and matplotlib (``pip install -e ".[bench]"``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

# anytime.py sets up sys.path and the TensorFlow log level, as for the other drivers.
import anytime
from anytime import REPO, best_at, log, measure, write_block

EXAMPLES = REPO / "docs" / "examples"
MODEL = "docs/examples/getting_started.py:build_model"
CONTENDERS = ("hpsearch", "kerastuner-random", "kerastuner-hyperband")
COLORS = {"hpsearch": "tab:red", "kerastuner-random": "tab:gray", "kerastuner-hyperband": "tab:green"}
#: The defaults: 12 trials x 10 epochs on 6,000 training images, batch 128; the 10,000 test
#: images validate. Validating on 1,000 (the first runs) made one image 0.1 point, and a
#: tuner's final best, a maximum over 120 such evaluations, moved by up to 1.7 points from seed
#: to seed: more than the differences between the tuners (docs/benchmarks.md, "Your model").
TRIALS, EPOCHS, TRAIN_SIZE, TEST_SIZE, BATCH_SIZE = 12, 10, 6_000, 10_000, 128
#: Six seeds, not the issue's three: a run's best is a maximum over noisy epochs, and on three
#: seeds one lucky run decided the per-seed comparisons (docs/benchmarks.md, "Your model").
SEEDS = "0,1,2,3,4,5"


# ---------------------------------------------------------------------------------------
# KerasTuner, each tuner as its own process (``--contender``)


def outputs(trials: int, epochs: int) -> tuple[Path, Path, str]:
    """Where a measurement of ``trials`` x ``epochs`` is kept: its JSON, its PNG and its block
    of docs/benchmarks.md. The default budget keeps the original names; another budget gets
    its own (``your-model-24x10``), so measuring it leaves the default's figures as they are."""
    tag = "your-model" if (trials, epochs) == (TRIALS, EPOCHS) else f"your-model-{trials}x{epochs}"
    return REPO / "docs" / "data" / f"{tag}.json", REPO / "docs" / f"{tag}.png", tag


def hyperband_epochs(max_epochs: int, factor: int = 3) -> int:
    """The epochs one iteration of KerasTuner's ``Hyperband(max_epochs, factor)`` trains, from its
    oracle's rules (``HyperbandOracle._get_size`` and ``_get_epochs``; a model promoted to the next
    round trains on from its epochs): 120 for ``max_epochs=10, factor=3`` (brackets of 44, 36 and 40)."""
    brackets, e = 0, max_epochs
    while e >= 1:
        e, brackets = e / factor, brackets + 1
    end0 = math.ceil(1 + math.log(max_epochs, factor))
    total = 0
    for b in range(brackets):
        before = 0
        for r in range(b + 1):
            size = math.ceil(end0 / (b + 1) * factor ** (b - r))
            epochs = math.ceil(max_epochs / factor ** (b - r))
            total += size * (epochs - before)
            before = epochs
    return total


def kerastuner(args) -> int:
    """KerasTuner's own search on the hypermodel, as its guide runs it, logging every epoch."""
    import keras
    import keras_tuner as kt
    import numpy as np

    sys.path.insert(0, str(EXAMPLES))
    from getting_started import build_model

    anytime.LOG.update(path=args.log, budget=args.budget)
    keras.utils.set_random_seed(args.seed)
    with np.load(args.data) as f:
        x, y, xv, yv = f["x_train"], f["y_train"], f["x_test"], f["y_test"]
    # In the driver's folder, which it removes: the budget's end leaves the process with os._exit.
    common = {"objective": "val_accuracy", "seed": args.seed, "directory": args.home, "project_name": args.contender, "overwrite": True}
    if args.contender == "kerastuner-random":
        tuner = kt.RandomSearch(build_model, max_trials=args.trials, **common)
    else:
        # As many iterations as the budget needs (one for 12 x 10); the driver stops it at the budget.
        iterations = max(1, math.ceil(args.budget / hyperband_epochs(args.epochs)))
        tuner = kt.Hyperband(build_model, max_epochs=args.epochs, factor=3, hyperband_iterations=iterations, **common)
    tuner.search(x, y, epochs=args.epochs, batch_size=args.batch_size, validation_data=(xv, yv), verbose=0,
                 callbacks=[anytime._epoch_logger()])
    anytime._write_events()  # a search that ended under the budget
    return 0


# ---------------------------------------------------------------------------------------
# The driver


def prepare_data(train_size: int, test_size: int, folder: Path) -> Path:
    """The guide's arrays (``make_mnist_npz.py``): the first ``train_size`` training images and
    the first ``test_size`` test images, from the recipe's mnist.npz."""
    sys.path.insert(0, str(EXAMPLES))
    import make_mnist_npz

    os.environ.setdefault("HPSEARCH_DATA", str(anytime.DATA))
    out = folder / f"mnist-{train_size}-{test_size}.npz"
    make_mnist_npz.main(str(out), train_size, test_size)
    return out


def run_one(name: str, url: str, data: Path, args, seed: int) -> dict:
    """Run contender ``name`` with ``seed``; return measure()'s row."""
    common = ["--epochs", str(args.epochs), "--batch-size", str(args.batch_size), "--seed", str(seed)]
    if name == "hpsearch":
        # The same budget as an epoch budget: as many trials as successive halving fits in it.
        study = f"your-model-{uuid.uuid4().hex[:6]}"
        cmd = [anytime.HPSEARCH, "run", "--model", MODEL, "--data", str(data), "--validation", "test", "--storage", url,
               "--study", study, "--format", "json", "--epoch-budget", str(args.trials * args.epochs)] + common
        if args.pruner:
            cmd += ["--pruner", args.pruner]
        if args.sampler:
            cmd += ["--sampler", args.sampler]
        return measure(name, cmd, seed, url=url, study=study)
    common += ["--trials", str(args.trials)]
    logfile = Path(tempfile.gettempdir()) / f"your-model-{uuid.uuid4().hex[:8]}.json"
    cmd = [sys.executable, __file__, "--contender", name, "--data", str(data), "--log", str(logfile), "--home", str(data.parent),
           "--budget", str(args.trials * args.epochs)] + common
    return measure(name, cmd, seed, logfile=logfile)


def _versions() -> str:
    found = []
    for package in ("tensorflow", "keras", "keras-tuner", "optuna"):
        try:
            found.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            pass
    return ", ".join(found)


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def measure_all(args) -> dict:
    """Every contender of ``args.contenders`` at every seed; the runs so far are written after
    each run (unless ``--no-write``), so a stopped benchmark loses one run at most."""
    res = {"model": MODEL, "trials": args.trials, "epochs": args.epochs, "train_size": args.train_size,
           "test_size": args.test_size, "batch_size": args.batch_size,
           "measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "command": args.command,
           "machine": f"{_cpu()}, {os.cpu_count()} cores shared with other work; {_versions()}", "runs": []}
    path = outputs(args.trials, args.epochs)[0]
    if args.keep_others:  # the stored runs not run again now stay, with when they were measured
        stored = json.loads(path.read_text())
        differs = [k for k in ("trials", "epochs", "train_size", "test_size", "batch_size") if stored.get(k) != res[k]]
        if differs:
            sys.exit(f"your_model.py: --keep-others: the stored runs had another {', '.join(differs)} "
                     f"({', '.join(f'{k}={stored.get(k)}' for k in differs)}): run every contender again, without --keep-others")
        kept = [r for r in stored["runs"] if r["contender"] not in args.contenders or r["seed"] not in args.seeds]
        for r in kept:
            r.setdefault("measured", stored["measured"])
            r.setdefault("machine", stored["machine"])
        res["runs"] = kept
        res["kept"] = sorted({r["contender"] for r in kept})  # when and where: _kept_text, from the runs
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="your-model-") as folder, anytime._storage(args.storage) as (url, where):
        data = prepare_data(args.train_size, args.test_size, Path(folder))
        res["storage"] = where
        log(f"{args.trials} trials x {args.epochs} epochs, {args.train_size} images ({args.test_size} validate), seeds {args.seeds}, {args.contenders}, {where}")
        for i, seed in enumerate(args.seeds):
            order = [c for c in CONTENDERS[i % len(CONTENDERS):] + CONTENDERS[:i % len(CONTENDERS)] if c in args.contenders]
            for name in order:
                res["runs"].append(dict(run_one(name, url, data, args, seed), measured=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())))
                res["seconds"] = round(time.time() - started)
                if not args.no_write:
                    path.write_text(json.dumps(res))
    return res


def first_reach(curve: list, value: float) -> int | None:
    """The epochs after which ``curve``'s best so far first reached ``value``, or None."""
    return next((p[0] for p in curve if p[2] >= value - 1e-9), None)


def target_rows(res: dict) -> list[dict]:
    """Per seed and KerasTuner contender: its final best, the epochs it trained and needed to
    reach that best, and the epochs hpsearch's curve of the same seed needed to reach it."""
    runs = {(r["contender"], r["seed"]): r for r in res["runs"]}
    out = []
    for (name, seed), kt in sorted(runs.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        hp = runs.get(("hpsearch", seed))
        if name == "hpsearch" or hp is None:
            continue
        reach = first_reach(hp["curve"], kt["best"])
        out.append({"seed": seed, "rival": name, "best": kt["best"], "epochs": kt["epochs"],
                    "own_reach": first_reach(kt["curve"], kt["best"]), "hpsearch_reach": reach,
                    "met": reach is not None and reach <= kt["epochs"] / 2})
    return out


def mean_curve(runs: list, xs: list, by: str) -> list:
    """The mean best so far over ``runs`` at each x (None until every run has reported); a run
    that has finished keeps its best."""
    return [anytime._mean_or_none([best_at(r["curve"], x, by) for r in runs]) for x in xs]


def plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    budget = res["trials"] * res["epochs"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    longest = max(r["seconds"] for r in res["runs"])
    grids = {"epochs": list(range(1, budget + 1)), "seconds": [longest * k / 400 for k in range(1, 401)]}
    for name in CONTENDERS[::-1]:  # hpsearch last, on top
        runs = [r for r in res["runs"] if r["contender"] == name]
        if not runs:
            continue
        for ax, (by, k) in zip(axes, (("epochs", 0), ("seconds", 1))):
            for r in runs:  # each seed, thin
                ax.step([p[k] for p in r["curve"]], [p[2] for p in r["curve"]], where="post", color=COLORS[name], alpha=0.25, lw=0.8)
            xs = grids[by]
            ys = mean_curve(runs, xs, by)
            pts = [(x, y) for x, y in zip(xs, ys) if y is not None]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], color=COLORS[name], lw=2.2 if name == "hpsearch" else 1.6,
                    label=f"{name} (mean of {len(runs)})")
    axes[0].axvline(budget / 2, color="k", lw=0.6, ls=":")
    axes[0].set_xlabel("epochs trained (cumulative; dotted line: half the budget)")
    axes[1].set_xlabel("wall seconds since the process started")
    if res.get("kept"):
        axes[1].set_title("runs measured on different machines: not comparable" if _other_machines(res)
                          else "some runs kept from an earlier measurement on this machine", fontsize=9)
    for ax in axes:
        ax.set_ylabel("best val_accuracy so far")
        ax.set_ylim(0.85, 1.0)
        ax.grid(alpha=0.3)
    axes[0].legend(loc="lower right", fontsize=8)
    fig.suptitle(f"getting_started.py:build_model, {res['trials']} trials x {res['epochs']} epochs, {res['train_size']} training "
                 f"images, {res['test_size']} test images validate; thin: each seed")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _other_machines(res: dict) -> bool:
    """Whether some kept run was measured on another processor than the new runs."""
    return any(r["machine"].split(",")[0] != res["machine"].split(",")[0] for r in res["runs"] if "machine" in r)


def _kept_text(res: dict) -> str:
    """The kept runs (measured before this measurement), by contender: when and on what."""
    out = []
    for name in CONTENDERS:
        kept = [r for r in res["runs"] if r["contender"] == name and r.get("measured", res["measured"]) < res["measured"]]
        if kept:
            when = sorted(r["measured"] for r in kept)
            span = when[0] if when[0] == when[-1] else f"{when[0]} to {when[-1].split(' ', 1)[1]}"
            out.append(f"{name} ({span}, {kept[0].get('machine', res['machine']).split(',')[0]})")
    return ", ".join(out)


def render(res: dict) -> str:
    budget = res["trials"] * res["epochs"]
    runs = sorted(res["runs"], key=lambda r: (r["seed"], CONTENDERS.index(r["contender"])))
    loads = [r[k] for r in runs for k in ("load_before", "load_after")]
    stamp = (f"Measured by `{res['command']}` on {res['measured']}, {res.get('seconds', 0):.0f} s in all: {res['machine']}; "
             f"{res.get('storage', 'PostgreSQL')}. Load average (1 min) {min(loads):.1f} to {max(loads):.1f} before and after the runs. "
             f"{res['trials']} trials x {res['epochs']} epochs = {budget} epochs each (hpsearch: `--epoch-budget {budget}`), batch size {res['batch_size']}."
             + (f" Runs kept from an earlier measurement: {_kept_text(res)}"
                + ("; their wall times are not comparable with the new runs' (another machine)." if _other_machines(res) else ".")
                if res.get("kept") else "") + "\n")
    out = [stamp,
           f"![your model: mean anytime curves]({outputs(res['trials'], res['epochs'])[1].name})\n",
           "| seed | contender | trials (pruned) | epochs trained | wall s | best val_accuracy | epochs to its best | load before → after |",
           "|---|---|---|---|---|---|---|---|"]
    for r in runs:
        trials = "–" if r["trials"] is None else f"{r['trials']} ({r['pruned']})"
        out.append(f"| {r['seed']} | {r['contender']} | {trials} | {r['epochs']} | {r['seconds']:.1f} | {r['best']:.4f} | "
                   f"{first_reach(r['curve'], r['best'])} | {r['load_before']:.2f} → {r['load_after']:.2f} |")
    out.append("")
    out.append(f"| contender | seeds | mean epochs trained | mean wall s | mean best val_accuracy | mean best at {budget // 4} / {budget // 2} / {budget} epochs |")
    out.append("|---|---|---|---|---|---|")
    for name in CONTENDERS:
        rows = [r for r in runs if r["contender"] == name]
        if not rows:
            continue
        at = [anytime._mean_or_none([best_at(r["curve"], x, "epochs") for r in rows]) for x in (budget / 4, budget / 2, budget)]
        out.append(f"| {name} | {','.join(str(r['seed']) for r in rows)} | {statistics.mean(r['epochs'] for r in rows):.1f} | "
                   f"{statistics.mean(r['seconds'] for r in rows):.1f} | {statistics.mean(r['best'] for r in rows):.4f} | "
                   + " / ".join("–" if v is None else f"{v:.4f}" for v in at) + " |")
    out.append("")
    targets = target_rows(res)
    out.append("The target, per seed: the epochs hpsearch's curve needed to reach each KerasTuner contender's final best, "
               "against half the epochs that contender trained (and the epochs it needed itself).\n")
    out.append("| seed | KerasTuner contender | its best | its epochs trained (needed for its best) | hpsearch reached it after | ≤ half its epochs? |")
    out.append("|---|---|---|---|---|---|")
    for t in targets:
        reach = "did not reach it" if t["hpsearch_reach"] is None else f"{t['hpsearch_reach']} epochs"
        out.append(f"| {t['seed']} | {t['rival']} | {t['best']:.4f} | {t['epochs']} ({t['own_reach']}) | {reach} | "
                   f"{'yes' if t['met'] else 'no'} |")
    met = sum(t["met"] for t in targets)
    out.append("")
    out.append(f"Target met in {met} of {len(targets)} comparisons"
               + (" (every seed, both tuners)." if targets and met == len(targets) else "; not met overall."))
    means = mean_reach(res)
    if means:
        out.append("")
        out.append("Read on the means over the seeds instead: " + "; ".join(
            f"hpsearch's mean best reached {name}'s final mean {final:.4f} "
            + ("never" if reach is None else f"after {reach} epochs") + f" (half its epochs: {half:g})"
            for name, final, reach, half in means) + ".")
    return "\n".join(out)


def mean_reach(res: dict) -> list[tuple]:
    """Per KerasTuner contender: its final best averaged over the seeds, the epochs after which
    hpsearch's mean best so far (over the same seeds) first reached it, and half its epochs."""
    hp = [r for r in res["runs"] if r["contender"] == "hpsearch"]
    out = []
    for name in CONTENDERS[1:]:
        rows = [r for r in res["runs"] if r["contender"] == name and any(h["seed"] == r["seed"] for h in hp)]
        if not rows or not hp:
            continue
        final = statistics.mean(r["best"] for r in rows)
        longest = max(r["epochs"] for r in hp)
        curve = mean_curve([h for h in hp if any(h["seed"] == r["seed"] for r in rows)], list(range(1, longest + 1)), "epochs")
        reach = next((x for x, v in zip(range(1, longest + 1), curve) if v is not None and v >= final - 1e-9), None)
        out.append((name, final, reach, statistics.mean(r["epochs"] for r in rows) / 2))
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", default=SEEDS, help=f"comma-separated seeds (default: {SEEDS})")
    p.add_argument("--contenders", default=",".join(CONTENDERS), help=f"who runs (default: {','.join(CONTENDERS)})")
    p.add_argument("--trials", type=int, default=TRIALS, help=f"trials per search (default: {TRIALS})")
    p.add_argument("--epochs", type=int, default=EPOCHS, help=f"epochs per trial (default: {EPOCHS})")
    p.add_argument("--train-size", type=int, default=TRAIN_SIZE, help=f"training images (default: {TRAIN_SIZE})")
    p.add_argument("--test-size", type=int, default=TEST_SIZE, help=f"test images, which validate every epoch (default: {TEST_SIZE}, all of them)")
    p.add_argument("--batch-size", type=int, default=BATCH_SIZE, help=f"the same for every contender (default: {BATCH_SIZE})")
    p.add_argument("--storage", help="PostgreSQL URL (default: a scratch database on 127.0.0.1:5432, else the embedded server)")
    p.add_argument("--no-write", action="store_true", help="print, do not write docs/")
    p.add_argument("--pruner", help="hpsearch's --pruner, to screen another (default: hpsearch's default)")
    p.add_argument("--sampler", help="hpsearch's --sampler, to screen another (default: hpsearch's default)")
    p.add_argument("--keep-others", action="store_true",
                   help="keep the stored runs that this one does not repeat (another contender or another seed: rerun hpsearch "
                        "only, or add seeds), each with its date")
    p.add_argument("--replot", action="store_true", help="redraw the PNG and the tables from docs/data/your-model.json (of --trials x --epochs), run nothing")
    # a KerasTuner contender as its own process (used by the driver)
    p.add_argument("--contender", choices=CONTENDERS[1:], help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    p.add_argument("--log", help=argparse.SUPPRESS)
    p.add_argument("--home", help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, help=argparse.SUPPRESS)
    p.add_argument("--budget", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.contender:
        return kerastuner(args)
    stored, png, tag = outputs(args.trials, args.epochs)
    if args.replot:
        res = json.loads(stored.read_text())
    else:
        args.command = "python tests/benchmarks/your_model.py" + "".join(f" {a}" for a in sys.argv[1:] if a != "--no-write")
        args.seeds = [int(s) for s in args.seeds.split(",")]
        args.contenders = tuple(args.contenders.split(","))
        res = measure_all(args)
    text = render(res)
    print(text)
    if not args.no_write:
        stored.write_text(json.dumps(res))
        plot(res, png)
        write_block(tag, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
