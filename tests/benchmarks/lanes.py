"""Lanes benchmark (issue 12): K trials as one batched model against the same trials solo.

Three parts, each one command:

``model`` (default): in one process, the same K trials (rates log-spaced from 1e-4 to 1e-1,
a seeded study) trained solo, one after another on the worker's one compiled model
(:class:`search.train.objective.Objective`, what a ``--lanes 1`` worker runs), and as K lanes of
one :class:`search.train.lanes.LaneModel`. Solo and lanes alternate, each repeat in the other order
first; a third contender is the same solo trials without a seed (one ``fit`` call for all
epochs, Keras's own shuffle), the path of an unseeded study. Training time is the sum of the trials' epoch times (train + validation + reports),
compilation excluded by a warm-up; trial-epochs/s = trials x epochs / that time. It also
prints the largest val_accuracy difference between a member and its solo trial::

    python tests/benchmarks/lanes.py model --data mnist.npz --ks 1,2,4,8 --epochs 3 --train-size 5000

``study``: whole ``hpsearch run`` processes (start-up, claims and writes included), with and
without ``--lanes``, each on a fresh study of a fresh embedded PostgreSQL, alternated::

    python tests/benchmarks/lanes.py study --data mnist.npz --lanes 3 --trials 6 --epochs 3 --train-size 5000 --repeats 3

``gpu``: the grid for an accelerator: K = 1, 8, 32, 64, 128 on the full training set at 5 and
50 epochs (trials/hour, epochs/s, peak device memory, in-process), the same K for a user's
small CNN as one ``ModelLanes`` at 5 epochs of 50,000 images (build and compilation included),
then the recipe's study of 64 trials x 500 epochs with ``--lanes 64`` as one ``hpsearch run``
process. Writes JSON::

    KERAS_BACKEND=jax python tests/benchmarks/lanes.py gpu --data mnist.npz --out results/
    python tests/benchmarks/lanes.py gpu --data mnist.npz --tiny     # a CPU check of the script

``any``: lanes of a user's model on JAX (issue 26): a small CNN and an MLP written as a user
writes them (``build(hp)``, the rate from ``hp``), K trials with rates log-spaced 1e-4..1e-1 as
one :class:`search.train.modellanes.ModelLanes` against the same trials solo as the worker runs a
user's model (a new model per trial, ``model.fit``); wall time of the whole trials (build and
compilation included, as the solo worker pays them per trial), alternated::

    KERAS_BACKEND=jax python tests/benchmarks/lanes.py any --data mnist.npz --models cnn,mlp --ks 1,2,4,8 --repeats 2

Every part prints one JSON object per measurement to stdout (``--out DIR`` also writes them).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))


def _rates(k: int) -> list[float]:
    if k == 1:
        return [0.001]
    return [float(10 ** (-4 + 3 * i / (k - 1))) for i in range(k)]


def _emit(record: dict, out: Path | None, name: str) -> None:
    print(json.dumps(record), flush=True)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        with open(out / f"{name}.jsonl", "a") as fh:
            fh.write(json.dumps(record) + "\n")


def _solo(dataset, config, rates):
    """Train ``rates`` one after another as a ``--lanes 1`` worker does; (seconds, histories)."""
    import optuna

    from search.train.objective import Objective

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.NopPruner())
    for lr in rates:
        study.enqueue_trial({"learning_rate": lr})
    objective = Objective(config, dataset)
    study.optimize(objective, n_trials=len(rates))
    seconds = sum(sum(t.user_attrs["epoch_seconds"]) for t in study.trials)
    return seconds, [t.user_attrs["history"]["val_accuracy"] for t in study.trials]


def _lanes(dataset, config, rates, layout=None):
    """Train ``rates`` as one LaneModel, as a ``--lanes K`` worker does; (seconds, histories, model)."""
    from search.train.data import device_data
    from search.train.lanes import LaneModel, lane_orders

    data = device_data(dataset)
    model = LaneModel(len(rates), hidden_units=config.hidden_units, batch_size=config.batch_size, layout=layout)
    for lane, lr in enumerate(rates):
        model.reset_lane(lane, lr, config.seed + lane)
    histories = [[] for _ in rates]
    started = time.perf_counter()
    for epoch in range(config.epochs):
        model.train_epoch(data.x_train, data.y_train, lane_orders(config.seed, [epoch] * len(rates), len(dataset.x_train)))
        val = model.evaluate(data.x_val, data.y_val)
        for lane in range(len(rates)):
            histories[lane].append(float(val["accuracy"][lane]))
    return time.perf_counter() - started, histories, model


def _peak_memory() -> int | None:
    import keras

    try:
        if keras.backend.backend() == "jax":
            import jax

            return int(jax.devices()[0].memory_stats().get("peak_bytes_in_use"))
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            if tf.config.list_physical_devices("GPU"):
                return int(tf.config.experimental.get_memory_info("GPU:0")["peak"])
    except Exception:
        return None
    return None


def cmd_model(args) -> None:
    from search.study.config import StudyConfig
    from search.train.data import load_dataset

    ds = load_dataset(args.data, train_size=args.train_size, validation="test")
    config = StudyConfig(epochs=args.epochs, train_size=args.train_size, validation="test", pruner="none", seed=0)
    warm = StudyConfig(epochs=1, train_size=args.train_size, validation="test", pruner="none", seed=0)
    load = os.getloadavg()[0]
    for k in args.ks:
        rates = _rates(k)
        _solo(ds, warm, rates[:1])  # compile the solo model once
        _lanes(ds, warm, rates)  # and this K's lane steps
        solo_s, lanes_s, unseeded_s, diffs = [], [], [], []
        unseeded = StudyConfig(epochs=args.epochs, train_size=args.train_size, validation="test", pruner="none", seed=None)
        for rep in range(args.repeats):
            order = ("solo", "lanes", "unseeded") if rep % 2 == 0 else ("unseeded", "lanes", "solo")
            for which in order:
                if which == "solo":
                    seconds, solo_h = _solo(ds, config, rates)
                    solo_s.append(seconds)
                elif which == "unseeded":
                    # a solo trial without --seed: one fit call for all epochs, Keras's shuffle
                    unseeded_s.append(_solo(ds, unseeded, rates)[0])
                else:
                    seconds, lane_h, _ = _lanes(ds, config, rates)
                    lanes_s.append(seconds)
            diffs.append(max(abs(a - b) for s, lh in zip(solo_h, lane_h) for a, b in zip(s, lh)))
        te = k * args.epochs
        record = {
            "part": "model", "k": k, "epochs": args.epochs, "train_size": args.train_size, "repeats": args.repeats,
            "solo_seconds": [round(s, 3) for s in solo_s], "lanes_seconds": [round(s, 3) for s in lanes_s],
            "solo_unseeded_seconds": [round(s, 3) for s in unseeded_s],
            "solo_trial_epochs_per_s": round(te / statistics.median(solo_s), 3),
            "lanes_trial_epochs_per_s": round(te / statistics.median(lanes_s), 3),
            "ratio_lanes_over_solo": round(statistics.median(lanes_s) / statistics.median(solo_s), 3),
            "ratio_lanes_over_solo_unseeded": round(statistics.median(lanes_s) / statistics.median(unseeded_s), 3),
            "max_val_accuracy_diff": round(max(diffs), 5), "loadavg_start": round(load, 2), "loadavg_end": round(os.getloadavg()[0], 2),
        }
        _emit(record, args.out, "model")


def _user_build(kind: str):
    """A small user's model, KerasTuner style: the CNN or the MLP, rate from ``hp``."""
    import keras
    from keras import layers

    def build(hp):
        if kind == "cnn":
            body = [layers.Conv2D(16, 3, activation="relu"), layers.MaxPooling2D(), layers.Conv2D(32, 3, activation="relu"),
                    layers.MaxPooling2D(), layers.Flatten(), layers.Dropout(0.5)]
        else:
            body = [layers.Flatten(), layers.Dense(256, activation="relu"), layers.Dropout(0.2)]
        model = keras.Sequential([keras.Input((28, 28, 1)), *body, layers.Dense(10, activation="softmax")])
        model.compile(optimizer=keras.optimizers.Adam(hp.Float("lr", 1e-4, 1e-1, sampling="log")),
                      loss="categorical_crossentropy", metrics=["accuracy"])
        return model

    return build


def _user_solo(build, ds, cfg, rates):
    """The trials one after another as a solo worker runs a user's model (ModelObjective): a new
    model per trial after clear_session and the seed, ``model.fit``; (seconds, histories)."""
    import optuna

    from search.study.hyperparameters import HyperParameters
    from search.train.backend import clear_session, set_seed

    start, histories = time.perf_counter(), []
    for number, lr in enumerate(rates):
        hp = HyperParameters(optuna.trial.FixedTrial({"lr": lr}, number=number))
        clear_session()
        set_seed(cfg.seed + number)
        model = build(hp)
        h = model.fit(ds.x_train, ds.y_train, validation_data=(ds.x_val, ds.y_val), epochs=cfg.epochs, batch_size=cfg.batch_size, verbose=0)
        histories.append(h.history["val_accuracy"])
    return time.perf_counter() - start, histories


def _user_lanes(build, ds, cfg, rates, layout):
    """The same trials as members of one :class:`search.train.modellanes.ModelLanes`; (seconds, histories)."""
    from types import SimpleNamespace

    import optuna

    from search.train.modellanes import ModelLanes
    from search.train.usermodel import HyperModel, ModelSpec

    start = time.perf_counter()
    hypermodel = HyperModel(build, ModelSpec("bench.py:build", "file", "bench.py", "build"))
    lanes = ModelLanes(SimpleNamespace(config=cfg, dataset=ds, hypermodel=hypermodel), layout=layout)
    for number, lr in enumerate(rates):
        lanes.put(number, lanes.member(optuna.trial.FixedTrial({"lr": lr}, number=number)), None)
    histories = {k: [] for k in range(len(rates))}
    for _ in range(cfg.epochs):
        for k, logs in lanes.epoch().items():
            histories[k].append(logs["val_accuracy"])
    return time.perf_counter() - start, [histories[k] for k in range(len(rates))]


def _images(data: str | None, n: int, v: int = 1000):
    """The first ``n`` MNIST training images as a user's CNN takes them (28x28x1 in [0, 1],
    one-hot labels) and the next ``v`` as validation."""
    from types import SimpleNamespace

    import numpy as np

    from search.train.data import read_arrays

    raw = read_arrays(data) if data else None
    if raw is None:
        import keras

        (xt, yt), _ = keras.datasets.mnist.load_data()
    else:
        xt, yt = raw.x_train, raw.y_train
    eye = np.eye(10, dtype="float32")
    x = (np.asarray(xt[:n + v]).reshape(-1, 28, 28, 1) / 255.0).astype("float32")
    y = eye[np.asarray(yt[:n + v]).astype(int)]
    return SimpleNamespace(x_train=x[:n], y_train=y[:n], x_val=x[n:], y_val=y[n:], x_test=x[n:], y_test=y[n:], validation="holdout")


def cmd_any(args) -> None:
    """Lanes of a user's model (issue 26) against the same trials solo, on JAX; wall time of the
    whole trials (build, compilation, training, validation), alternated."""
    from types import SimpleNamespace

    n = args.train_size
    ds = _images(args.data, n)
    cfg = SimpleNamespace(seed=0, batch_size=args.batch_size, epochs=args.epochs)
    for kind in args.models:
        build = _user_build(kind)
        _user_solo(build, ds, SimpleNamespace(seed=0, batch_size=args.batch_size, epochs=1), [1e-3])  # JAX's start-up, once
        for k in args.ks:
            rates = _rates(k)
            solo_s, lanes_s, diffs = [], [], []
            load = os.getloadavg()
            for rep in range(args.repeats):
                for which in (("solo", "lanes") if rep % 2 == 0 else ("lanes", "solo")):
                    if which == "solo":
                        seconds, solo_h = _user_solo(build, ds, cfg, rates)
                        solo_s.append(seconds)
                    else:
                        seconds, lane_h = _user_lanes(build, ds, cfg, rates, args.layout)
                        lanes_s.append(seconds)
                diffs.append(max(abs(a - b) for s, lh in zip(solo_h, lane_h) for a, b in zip(s, lh)))
            record = {
                "part": "any", "model": kind, "k": k, "layout": args.layout or "auto", "epochs": args.epochs, "train_size": n,
                "batch_size": args.batch_size, "solo_seconds": [round(s, 2) for s in solo_s], "lanes_seconds": [round(s, 2) for s in lanes_s],
                "ratio_lanes_over_solo": round(statistics.median(lanes_s) / statistics.median(solo_s), 3),
                "pair_ratios": [round(a / b, 3) for a, b in zip(lanes_s, solo_s)],
                "max_val_accuracy_diff": round(max(diffs), 5), "loadavg_start": [round(x, 2) for x in load],
                "loadavg_end": [round(x, 2) for x in os.getloadavg()],
            }
            _emit(record, args.out, "any")


def _hpsearch_run(args: list[str], data: str | None, tag: str) -> tuple[float, dict]:
    """One ``hpsearch run`` process on a fresh embedded PostgreSQL: (wall seconds, its JSON summary)."""
    home = tempfile.mkdtemp(prefix=f"lanes-bench-{tag}-")
    cmd = [sys.executable, "-m", "search", "run", "--seed", "0", "--validation", "test", "--pruner", "none", "--format", "json", *args]
    if data:
        cmd += ["--data", data]
    env = dict(os.environ, HPSEARCH_HOME=home)
    env.pop("OPTUNA_STORAGE", None)
    started = time.monotonic()
    out = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True)
    seconds = time.monotonic() - started
    subprocess.run([sys.executable, "-m", "search", "db", "stop"], env=env, cwd=REPO, capture_output=True)
    if out.returncode != 0:
        return seconds, {"error": f"{' '.join(cmd)} failed: {out.stderr[-800:]}"}
    return seconds, json.loads(out.stdout)


def _run_study(args, lanes: int | None, tag: str) -> float:
    flags = ["--study", "bench", "--epochs", str(args.epochs), "--trials", str(args.trials)]
    if args.train_size:
        flags += ["--train-size", str(args.train_size)]
    if lanes:
        flags += ["--lanes", str(lanes)]
    seconds, summary = _hpsearch_run(flags, args.data, tag)
    if "error" in summary:
        raise SystemExit(summary["error"])
    return seconds


def cmd_study(args) -> None:
    lanes_s, solo_s = [], []
    load = os.getloadavg()[0]
    for rep in range(args.repeats):
        for which in (("lanes", "solo") if rep % 2 == 0 else ("solo", "lanes")):
            if which == "lanes":
                lanes_s.append(_run_study(args, args.lanes, "lanes"))
            else:
                solo_s.append(_run_study(args, None, "solo"))
    _emit({
        "part": "study", "lanes": args.lanes, "trials": args.trials, "epochs": args.epochs, "train_size": args.train_size,
        "lanes_seconds": [round(s, 2) for s in lanes_s], "solo_seconds": [round(s, 2) for s in solo_s],
        "ratio_lanes_over_solo": round(statistics.median(lanes_s) / statistics.median(solo_s), 3),
        "pair_ratios": [round(a / b, 3) for a, b in zip(lanes_s, solo_s)],
        "loadavg_start": round(load, 2), "loadavg_end": round(os.getloadavg()[0], 2),
    }, args.out, "study")


def cmd_gpu(args) -> None:
    from search.study.config import StudyConfig
    from search.train.data import load_dataset
    from search.train.backend import runtime_info
    from search.train.backend import configure_backend

    configure_backend()
    info = runtime_info()
    ks = [1, 2] if args.tiny else [1, 8, 32, 64, 128]
    epochs_list = [1, 2] if args.tiny else [5, 50]
    train_size = 2000 if args.tiny else None
    ds = load_dataset(args.data, train_size=train_size, validation="test")
    for k in ks:
        rates = _rates(k)
        warm = StudyConfig(epochs=1, train_size=train_size, validation="test", pruner="none", seed=0)
        _lanes(ds, warm, rates)  # compile
        for epochs in epochs_list:
            config = StudyConfig(epochs=epochs, train_size=train_size, validation="test", pruner="none", seed=0)
            seconds, _, model = _lanes(ds, config, rates)
            _emit({
                "part": "gpu-grid", "k": k, "epochs": epochs, "train_images": len(ds.x_train), "layout": model.layout,
                "seconds": round(seconds, 3), "epochs_per_s": round(epochs / seconds, 3),
                "trial_epochs_per_s": round(k * epochs / seconds, 2), "trials_per_hour": round(k * 3600 / seconds, 1),
                "peak_device_bytes": _peak_memory(), "backend": info["backend"], "device": info["device"],
            }, args.out, "gpu")
    # A user's small CNN (issue 26): K members of one ModelLanes (the device's layout: vmap on a
    # GPU) against K = 1, build and compilation included as a worker pays them.
    from types import SimpleNamespace

    images = _images(args.data, 2000 if args.tiny else 50000, 200 if args.tiny else 10000)
    build = _user_build("cnn")
    for k in ks:
        for epochs in epochs_list[:1]:
            cfg = SimpleNamespace(seed=0, batch_size=128, epochs=epochs)
            seconds, _ = _user_lanes(build, images, cfg, _rates(k), None)
            _emit({
                "part": "gpu-cnn-grid", "k": k, "epochs": epochs, "train_images": len(images.x_train), "batch_size": 128,
                "seconds": round(seconds, 3), "trial_epochs_per_s": round(k * epochs / seconds, 2),
                "trials_per_hour": round(k * 3600 / seconds, 1), "peak_device_bytes": _peak_memory(),
                "backend": info["backend"], "device": info["device"],
            }, args.out, "gpu")
    # The recipe's study with --lanes 64: 64 trials x 500 epochs, one process.
    k, trials, epochs = (2, 4, 2) if args.tiny else (64, 64, 500)
    flags = ["--study", "recipe-lanes", "--epochs", str(epochs), "--trials", str(trials), "--lanes", str(k)]
    if train_size:
        flags += ["--train-size", str(train_size)]
    seconds, summary = _hpsearch_run(flags, args.data, "recipe")
    _emit({"part": "gpu-recipe-study", "lanes": k, "trials": trials, "epochs": epochs, "seconds": round(seconds, 1),
           "finished": summary.get("finished_trials"), "best": summary.get("best"), "error": summary.get("error"),
           "backend": info["backend"], "device": info["device"]}, args.out, "gpu")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="part")
    for name in ("model", "study", "gpu", "any"):
        p = sub.add_parser(name)
        p.add_argument("--data", default=os.environ.get("HPSEARCH_DATA"))
        p.add_argument("--out", type=Path)
    m = sub.choices["model"]
    m.add_argument("--ks", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2, 4, 8])
    m.add_argument("--epochs", type=int, default=3)
    m.add_argument("--train-size", type=int, default=5000)
    m.add_argument("--repeats", type=int, default=2)
    s = sub.choices["study"]
    s.add_argument("--lanes", type=int, default=3)
    s.add_argument("--trials", type=int, default=6)
    s.add_argument("--epochs", type=int, default=3)
    s.add_argument("--train-size", type=int, default=5000)
    s.add_argument("--repeats", type=int, default=3)
    a = sub.choices["any"]
    a.add_argument("--models", type=lambda s: s.split(","), default=["cnn", "mlp"])
    a.add_argument("--ks", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2, 4, 8])
    a.add_argument("--epochs", type=int, default=2)
    a.add_argument("--train-size", type=int, default=4096)
    a.add_argument("--batch-size", type=int, default=128)
    a.add_argument("--repeats", type=int, default=2)
    a.add_argument("--layout", choices=["unrolled", "vmap"], help="default: the device's (HPSEARCH_LANE_LAYOUT, else by device)")
    sub.choices["gpu"].add_argument("--tiny", action="store_true", help="small sizes, to check the script on a CPU")
    args = parser.parse_args()
    {"model": cmd_model, "study": cmd_study, "gpu": cmd_gpu, "any": cmd_any, None: cmd_model}[args.part](args) if args.part else parser.print_help()


if __name__ == "__main__":
    main()
