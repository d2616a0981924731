"""hpsearch's benchmark suite (issue 6): one command, four measurements, docs/benchmarks.md.

1. **Trial overhead**: hpsearch's worker running the recipe's three rates against the
   recipe's bare ``model.fit`` loop (``anchors.recipe_loop``) on the same data, epochs and
   seeds, interleaved in one process; plus the ablation: hpsearch with each speed-up of
   ``search.train.objective.FitOptions`` turned off in turn, and with all of them off.
2. **Pruning**: a study of 30 trials with the default (median) pruner against the same study
   with ``--pruner none``: epochs trained, wall time, best validation accuracy.
3. **Anchors**: on the same budget (30 trials, same data, epochs and learning-rate range), a
   hand-written Optuna script with ``KerasPruningCallback`` and KerasTuner's ``RandomSearch``
   and ``Hyperband``, against hpsearch's pruned study of (2).
4. **Storage**: 1, 2 and 4 concurrent ``hpsearch worker`` processes on PostgreSQL, each
   storage call timed (``timed_worker.py``), as a share of trial time; and at 4 workers the
   pruner asked at every epoch (what ``KerasPruningCallback`` does) for comparison.

Everything runs against a real PostgreSQL: a scratch database on 127.0.0.1:5432 when that
server answers (dropped at the end), else the embedded server in a temporary home (stopped at
the end), or ``--storage URL`` (studies get unique names and are left there).

Usage::

    pip install -e ".[bench]"                          # KerasTuner, for the anchors
    python tests/benchmarks/run.py --quick             # under 10 minutes on a 2-core CPU
    python tests/benchmarks/run.py                     # the full size (hours on a CPU)
    python tests/benchmarks/run.py --quick --only overhead,storage --no-write

The tables go between the ``<!-- benchmark:... -->`` markers of ``docs/benchmarks.md`` (the
prose around them is kept) and the raw figures to ``docs/data/benchmarks-<size>.json``.
Nothing here is a timed test; pytest does not collect this directory.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SEED = 0
LOCAL_PG_ADMIN = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
DOC = REPO / "docs" / "benchmarks.md"
SECTIONS = ("overhead", "pruning", "anchors", "storage")

SIZES = {
    "quick": {
        "overhead": {"train_size": 5_000, "epochs": 3, "repeats": 2},
        "pruning": {"train_size": 1_000, "epochs": 8, "trials": 30},
        "storage": {"train_size": 1_000, "epochs": 6, "trials_per_worker": 2, "workers": [1, 2, 4]},
    },
    # a check that the suite runs end to end (a minute or two); never written to docs/
    "smoke": {
        "overhead": {"train_size": 512, "epochs": 2, "repeats": 1},
        "pruning": {"train_size": 512, "epochs": 3, "trials": 6},
        "storage": {"train_size": 256, "epochs": 2, "trials_per_worker": 1, "workers": [1, 2]},
    },
    "full": {
        "overhead": {"train_size": None, "epochs": 10, "repeats": 3},
        "pruning": {"train_size": 10_000, "epochs": 30, "trials": 30},
        "storage": {"train_size": 5_000, "epochs": 20, "trials_per_worker": 3, "workers": [1, 2, 4]},
    },
}


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} load {os.getloadavg()[0]:.2f}] {text}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------
# The machine and the storage


def machine() -> dict:
    import keras
    import optuna

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "backend": keras.backend.backend(),
        "keras": keras.__version__,
        "optuna": optuna.__version__,
    }
    for name, module in (("optuna_integration", "optuna_integration"), ("keras_tuner", "keras_tuner")):
        try:
            info[name] = __import__(module).__version__
        except ImportError:  # the anchors that need it are skipped
            info[name] = None
    try:
        mem = Path("/proc/meminfo").read_text().split("\n")[0].split()[1]
        info["memory_gib"] = round(int(mem) / 2**20, 1)
    except (OSError, IndexError, ValueError):
        pass
    if info["backend"] == "tensorflow":
        import tensorflow as tf

        info["tensorflow"] = tf.__version__
        info["gpus"] = [d.name for d in tf.config.list_physical_devices("GPU")]
    elif info["backend"] == "jax":
        import jax

        info["jax"] = jax.__version__
    return info


def _local_pg_answers() -> bool:
    import sqlalchemy

    try:
        engine = sqlalchemy.create_engine(LOCAL_PG_ADMIN, connect_args={"connect_timeout": 3})
        with engine.connect() as c:
            c.exec_driver_sql("select 1")
        engine.dispose()
        return True
    except Exception:
        return False


@contextlib.contextmanager
def scratch_storage(given: str | None):
    """Yield ``(url, description)``: ``given``, a scratch database, or the embedded server."""
    import sqlalchemy

    if given:
        yield given, "the PostgreSQL given with --storage"
        return
    if _local_pg_answers():
        name = f"hps_bench_{uuid.uuid4().hex[:10]}"
        admin = sqlalchemy.create_engine(LOCAL_PG_ADMIN, isolation_level="AUTOCOMMIT")
        with admin.connect() as c:
            c.exec_driver_sql(f'CREATE DATABASE "{name}"')
            version = c.exec_driver_sql("SHOW server_version").scalar()
        try:
            yield f"postgresql+psycopg2://postgres@127.0.0.1:5432/{name}", f"PostgreSQL {version} on 127.0.0.1 (TCP), a scratch database"
        finally:
            with admin.connect() as c:
                c.exec_driver_sql(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'")
                c.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}"')
            admin.dispose()
        return
    from storage import embedded_url, stop_embedded

    home = Path(tempfile.mkdtemp(prefix="hps-bench-home-"))
    try:
        yield embedded_url(home), "the embedded PostgreSQL (Unix socket)"
    finally:
        stop_embedded(home)


# ---------------------------------------------------------------------------------------
# hpsearch, in this process


class _LandscapeTimer:
    """Time the worker's loss-landscape refreshes (a per-study cost, reported apart)."""

    def __init__(self):
        self.seconds = 0.0

    def __enter__(self):
        import search.fleet.worker as worker

        self._orig = worker._refresh_landscape

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return self._orig(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start

        worker._refresh_landscape = timed
        return self

    def __exit__(self, *exc):
        import search.fleet.worker as worker

        worker._refresh_landscape = self._orig


def hpsearch_study(url: str, ds, given: dict, target: int, options=None) -> dict:
    """Create a study and run one in-process hpsearch worker to ``target`` finished trials."""
    from search.study.create import open_study
    from search.fleet.worker import run_worker
    from storage import open_storage, resolve_storage_url

    storage = open_storage(resolve_storage_url(url))
    name = f"bench-{uuid.uuid4().hex[:8]}"
    study, config, _ = open_study(storage, name, given, ds.fingerprint)
    with _LandscapeTimer() as landscape:
        started = time.perf_counter()
        run_worker(study, storage, config, ds, target, fit_options=options)
        seconds = time.perf_counter() - started
    trials = [t for t in study.get_trials(deepcopy=False) if t.state.name in ("COMPLETE", "PRUNED")]
    by_rate = sorted(trials, key=lambda t: -t.params["learning_rate"])
    # best value so far against seconds since the first trial started (the database's clock)
    t0 = min(t.datetime_start for t in trials)
    progress, best = [], -math.inf
    for t in sorted(trials, key=lambda t: t.datetime_complete):
        if t.value is not None and t.value > best:
            best = t.value
            progress.append(((t.datetime_complete - t0).total_seconds(), best))
    storage.engine.dispose()
    return {
        "study": name,
        "seconds": seconds,
        "landscape_seconds": landscape.seconds,
        "trials": len(trials),
        "pruned": sum(t.state.name == "PRUNED" for t in trials),
        "epochs": sum(t.user_attrs["epochs_run"] for t in trials),
        "best": max(t.value for t in trials if t.value is not None),
        "best_by_rate": [t.value for t in by_rate],
        "progress": progress,
        "rates": [t.params["learning_rate"] for t in by_rate],
    }


# ---------------------------------------------------------------------------------------
# 1. Trial overhead and the ablation of each speed-up


def _variants() -> dict:
    """hpsearch as it runs here, and with each speed-up flipped: off if on here, on if off."""
    from search.train.backend import runtime_info
    from search.train.objective import VALIDATION_BATCH, FitOptions

    gpu = runtime_info()["device"] != "cpu"
    here = FitOptions().resolved(gpu)
    flip = dataclasses.replace
    return {
        "recipe loop": None,
        "hpsearch": here,
        "hpsearch, new model per trial": flip(here, reuse_model=False),
        "hpsearch, test set evaluated again": flip(here, skip_test_eval=False),
        "hpsearch, writes on the trial's path": flip(here, deferred_writes=False),
        ("hpsearch, NumPy arrays" if here.device_data else "hpsearch, data as backend tensors"):
            flip(here, device_data=not here.device_data),
        ("hpsearch, 1 step per execution" if here.steps_per_execution else "hpsearch, a whole epoch per execution"):
            flip(here, steps_per_execution=not here.steps_per_execution),
        ("hpsearch, validation batch 1024" if here.validation_batch else f"hpsearch, validation batch {VALIDATION_BATCH:,}"):
            flip(here, validation_batch=None if here.validation_batch else VALIDATION_BATCH),
        "hpsearch, jit_compile=True": flip(here, jit_compile=True),
        "hpsearch, all speed-ups off": FitOptions(reuse_model=False, device_data=False, steps_per_execution=False,
                                                  validation_batch=None, skip_test_eval=False, pruner_budget=math.inf,
                                                  deferred_writes=False),
    }


def overhead(size: dict, url: str, data) -> dict:
    from anchors import recipe_loop

    from search.study.config import RECIPE_RATES
    from search.train.data import load_dataset

    ds = load_dataset(data, train_size=size["train_size"], validation="test")
    rates = list(RECIPE_RATES)
    given = {"epochs": size["epochs"], "train_size": size["train_size"], "validation": "test", "pruner": "none", "seed": SEED}
    variants = _variants()
    names = list(variants)
    # Warm up first: the first model.fit of a process pays one-off start-up costs (thread
    # pools, memory, kernels) that would otherwise land on whichever variant runs first.
    recipe_loop(ds, rates[:1], epochs=1, seed=SEED)
    hpsearch_study(url, ds, {**given, "epochs": 1}, 1)
    runs = []
    for r in range(size["repeats"]):
        order = names[r % len(names):] + names[: r % len(names)]  # each variant in a new position
        if r % 2:
            order.reverse()
        for name in order:
            load = os.getloadavg()[0]
            if variants[name] is None:
                res = recipe_loop(ds, rates, epochs=size["epochs"], seed=SEED)
                res["landscape_seconds"] = 0.0
                res["best_by_rate"] = res.pop("best")
            else:
                res = hpsearch_study(url, ds, given, len(rates), variants[name])
            res.update(variant=name, repeat=r, load=load)
            runs.append(res)
            log(f"overhead {name}: {res['seconds']:.2f} s (landscape {res['landscape_seconds']:.2f} s)")
    summary = []
    for name in names:
        ratios, trial_ratios, accs, vs_on = [], [], [], []
        for r in range(size["repeats"]):
            base = next(x for x in runs if x["repeat"] == r and x["variant"] == "recipe loop")
            on = next(x for x in runs if x["repeat"] == r and x["variant"] == "hpsearch")
            mine = next(x for x in runs if x["repeat"] == r and x["variant"] == name)
            ratios.append(mine["seconds"] / base["seconds"])
            vs_on.append(mine["seconds"] / on["seconds"])
            trial_ratios.append((mine["seconds"] - mine["landscape_seconds"]) / base["seconds"])
            accs.append(max(abs(a - b) for a, b in zip(mine["best_by_rate"], base["best_by_rate"])))
        mine = [x for x in runs if x["variant"] == name]
        summary.append({
            "variant": name,
            "seconds_median": statistics.median(x["seconds"] for x in mine),
            "ratio_median": statistics.median(ratios),
            "ratio_min": min(ratios),
            "ratio_max": max(ratios),
            "trial_ratio_median": statistics.median(trial_ratios),
            "vs_hpsearch_median": statistics.median(vs_on),
            "vs_hpsearch_min": min(vs_on),
            "vs_hpsearch_max": max(vs_on),
            "landscape_seconds_median": statistics.median(x["landscape_seconds"] for x in mine),
            "max_accuracy_diff": max(accs),
            "best_by_rate": mine[0]["best_by_rate"],
            "load": [round(x["load"], 2) for x in mine],
        })
    return {"size": size, "rates": rates, "runs": runs, "summary": summary}


# ---------------------------------------------------------------------------------------
# 2. Pruning, and 3. the anchors on the same budget


#: Other pruner settings ``--more-pruners`` tries on the same study: (label, --pruner, factory).
def _more_pruners() -> list:
    import optuna

    from search.study.pruners import warmup_steps

    def percentile(keep: float, startup: int):
        return lambda config: optuna.pruners.PercentilePruner(
            keep, n_startup_trials=startup, n_warmup_steps=warmup_steps(config.epochs), interval_steps=1, n_min_trials=1)

    return [
        ("hyperband (`--pruner hyperband`)", "hyperband", None),
        ("median, 3 start-up trials", "median", percentile(50.0, 3)),
        ("keep the top 25%, 5 start-up trials", "median", percentile(25.0, 5)),
        ("keep the top 25%, 3 start-up trials", "median", percentile(25.0, 3)),
    ]


def pruning(size: dict, url: str, data, more: bool = False) -> dict:
    import search.study.create as study_module

    from search.train.data import load_dataset

    ds = load_dataset(data, train_size=size["train_size"], validation="holdout")
    # issue 6's rows (median) with issue 13's default beside them
    plans = [("none", "none", None), ("median (`--pruner median`)", "median", None), ("asha (default)", "asha", None)] + (_more_pruners() if more else [])
    rows = {}
    original = study_module.make_pruner
    for label, pruner, factory in plans:
        given = {"epochs": size["epochs"], "train_size": size["train_size"], "validation": "holdout", "pruner": pruner, "seed": SEED}
        load = os.getloadavg()[0]
        study_module.make_pruner = factory or original  # a setting hpsearch has no flag for
        try:
            rows[label] = hpsearch_study(url, ds, given, size["trials"])
        finally:
            study_module.make_pruner = original
        rows[label]["load"] = load
        log(f"pruning {label}: {rows[label]['epochs']} epochs, {rows[label]['seconds']:.1f} s, best {rows[label]['best']:.4f}")
    return {"size": size, "rows": rows}


def anchors(size: dict, url: str, data, hpsearch_row: dict | None) -> dict:
    from anchors import kerastuner_search, optuna_script

    from search.study.config import RECIPE_RATES
    from search.train.data import load_dataset
    from search.study.pruners import warmup_steps

    ds = load_dataset(data, train_size=size["train_size"], validation="holdout")
    rows = {}
    if hpsearch_row is None:
        given = {"epochs": size["epochs"], "train_size": size["train_size"], "validation": "holdout", "pruner": "median", "seed": SEED}
        load = os.getloadavg()[0]
        hpsearch_row = hpsearch_study(url, ds, given, size["trials"])
        hpsearch_row["load"] = load
    rows["hpsearch (median pruner)"] = hpsearch_row
    load = os.getloadavg()[0]
    rows["Optuna script + KerasPruningCallback"] = optuna_script(
        ds, url, f"optuna-script-{uuid.uuid4().hex[:8]}", trials=size["trials"], epochs=size["epochs"],
        warmup=warmup_steps(size["epochs"]), rates=RECIPE_RATES, seed=SEED)
    rows["Optuna script + KerasPruningCallback"]["load"] = load
    log(f"anchor optuna: {rows['Optuna script + KerasPruningCallback']}")
    try:
        import keras_tuner  # noqa: F401
    except ImportError:
        log("keras-tuner is not installed (pip install -e '.[bench]'): KerasTuner anchors skipped")
        return {"size": size, "rows": rows}
    for kind, label in (("random", "KerasTuner RandomSearch"), ("hyperband", "KerasTuner Hyperband")):
        load = os.getloadavg()[0]
        rows[label] = kerastuner_search(ds, kind, trials=size["trials"], epochs=size["epochs"], seed=SEED)
        rows[label]["load"] = load
        log(f"anchor {label}: {rows[label]}")
    return {"size": size, "rows": rows}


# ---------------------------------------------------------------------------------------
# 4. Storage with 1, 2, 4 workers


def _trial_spans(events: list) -> list[dict]:
    """Split one worker's timed events into trials: each runs from its claim to the next claim."""
    starts = [e[1] for e in events if e[0] == "ask"]
    ends = starts[1:] + [max(e[2] for e in events)]
    trials = []
    for start, end in zip(starts, ends):
        inside = [e for e in events if start <= e[1] < end]
        kinds: dict[str, float] = {}
        for kind, a, b in inside:
            kinds[kind] = kinds.get(kind, 0.0) + (b - a)
        trials.append({
            "seconds": end - start,
            "storage_seconds": sum(v for k, v in kinds.items() if k != "landscape" and not k.startswith("bg_")),
            "background_seconds": sum(v for k, v in kinds.items() if k.startswith("bg_")),
            "landscape_seconds": kinds.get("landscape", 0.0),
            "by_kind": kinds,
            "epochs": sum(1 for e in inside if e[0] in ("report", "bg_report")),
            "questions": sum(1 for e in inside if e[0] == "should_prune"),
            "question_ms": [1000 * (e[2] - e[1]) for e in inside if e[0] == "should_prune"],
        })
    return trials


def storage_section(size: dict, url: str, data) -> dict:
    runs = []
    # (workers, how): "schedule" is hpsearch; "every epoch" asks the pruner at each epoch like
    # KerasPruningCallback; "sync" writes the reports on the trial's path
    most = max(size["workers"])
    plans = [(k, "schedule") for k in size["workers"]] + [(most, "every epoch"), (most, "sync")]
    for k, how in plans:
        every_epoch = how == "every epoch"
        study = f"storage-k{k}-{how.replace(' ', '-')}-{uuid.uuid4().hex[:6]}"
        tmp = Path(tempfile.mkdtemp(prefix="hps-bench-storage-"))
        env = dict(os.environ, OPTUNA_STORAGE=url, HPSEARCH_HOME=str(tmp))
        if every_epoch:
            env["HPSEARCH_BENCH_EVERY_EPOCH"] = "1"
        if how == "sync":
            env["HPSEARCH_BENCH_SYNC_WRITES"] = "1"
        cli = ["--study", study, "--trials", str(k * size["trials_per_worker"]), "--epochs", str(size["epochs"]),
               "--train-size", str(size["train_size"]), "--pruner", "median", "--seed", str(SEED), "--quiet"]
        if data:
            cli += ["--data", str(data)]
        load = os.getloadavg()[0]
        started = time.perf_counter()
        procs = []
        for i in range(k):
            env_i = dict(env, HPSEARCH_BENCH_EVENTS=str(tmp / f"events-{i}.json"))
            procs.append(subprocess.Popen([sys.executable, str(Path(__file__).parent / "timed_worker.py"), *cli, "--worker-index", str(i)],
                                          env=env_i, cwd=tmp, stdout=subprocess.DEVNULL, stderr=open(tmp / f"worker-{i}.log", "w")))
        codes = [p.wait(timeout=1800) for p in procs]
        wall = time.perf_counter() - started
        if any(codes):
            raise RuntimeError(f"storage benchmark: workers exited {codes}; logs in {tmp}")
        trials = []
        for i in range(k):
            events = json.loads((tmp / f"events-{i}.json").read_text())["events"]
            trials += _trial_spans(events)
        total = sum(t["seconds"] for t in trials)
        stor = sum(t["storage_seconds"] for t in trials)
        land = sum(t["landscape_seconds"] for t in trials)
        epochs = sum(t["epochs"] for t in trials)
        kinds = {}
        for t in trials:
            for kind, v in t["by_kind"].items():
                kinds[kind] = kinds.get(kind, 0.0) + v
        questions = [q for t in trials for q in t["question_ms"]]
        row = {
            "workers": k,
            "every_epoch": every_epoch,
            "how": how,
            "trials": len(trials),
            "epochs": epochs,
            "wall_s": wall,
            "trial_seconds": total,
            "storage_share": stor / total,
            "storage_share_with_landscape": (stor + land) / total,
            "per_trial_storage_s": stor / len(trials),
            "per_epoch_report_prune_ms": 1000 * sum(kinds.get(k2, 0) for k2 in ("report", "should_prune", "wait_for_writes")) / max(epochs, 1),
            "background_share": sum(t["background_seconds"] for t in trials) / total,
            "questions": len(questions),
            "question_ms_median": statistics.median(questions) if questions else None,
            "by_kind_s": {k2: round(v, 4) for k2, v in sorted(kinds.items())},
            "epoch_s_median": None,
            "load": load,
        }
        runs.append(row)
        log(f"storage K={k} {how}: storage {100 * row['storage_share']:.2f}% of trial time, "
            f"{row['per_epoch_report_prune_ms']:.1f} ms/epoch report+prune, {len(questions)} questions")
    return {"size": size, "runs": runs}


# ---------------------------------------------------------------------------------------
# The recipe's 500 epochs, from the lead's GPU run (docs/data/recipe-500-epochs-h200-jax.json)


def recipe_reproduction(path: Path) -> dict | None:
    if not path.exists():
        return None
    d = json.loads(path.read_text())
    rows = []
    for t in d["trials"]:
        loss = t["history"]["loss"]
        steps = len(loss) - 1
        rises = sum(1 for a, b in zip(loss, loss[1:]) if b > a)
        rows.append({
            "learning_rate": t["learning_rate"],
            "best_val_accuracy": t["best_val_accuracy"],
            "best_epoch": t["best_epoch"],
            "final_val_accuracy": t["final_val_accuracy"],
            "test_accuracy": t["test_accuracy"],
            "loss_first": loss[0],
            "loss_epoch_10": loss[10] if len(loss) > 10 else None,
            "loss_last": loss[-1],
            "loss_range_after_10": (max(loss[10:]) - min(loss[10:])) if len(loss) > 10 else None,
            "loss_rises": rises,
            "steps": steps,
            "train_seconds": t["train_seconds"],
        })
    return {"file": str(path.relative_to(REPO)), "wall_s": d["wall_s"], "epochs": d["epochs"], "device": d["trials"][0].get("device"),
            "backend": d["trials"][0].get("backend"), "rows": rows}


# ---------------------------------------------------------------------------------------
# Writing docs/benchmarks.md


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def render(results: dict) -> str:
    m = results["machine"]
    out = []
    out.append(f"Measured by `{results['command']}` on {results['date']}, {results['seconds']:.0f} s in all.")
    out.append("")
    out.append(f"- Machine: {m['cpu']}, {m['cores']} cores, {m.get('memory_gib', '?')} GiB, {m['platform']}; "
               f"load average {results['load_start']:.2f} at the start, {results['load_end']:.2f} at the end "
               "(the machine is shared: each row gives the 1-minute load when it started).")
    versions = ", ".join(f"{k} {m[k]}" for k in ("python", "tensorflow", "jax", "keras", "optuna", "optuna_integration", "keras_tuner") if m.get(k))
    out.append(f"- Software: {versions}; Keras backend `{m['backend']}`{'; GPUs ' + ', '.join(m['gpus']) if m.get('gpus') else (', CPU only' if m.get('backend') == 'tensorflow' else '')}.")
    out.append(f"- Storage: {results['storage_db']}.")
    out.append("")

    if "overhead" in results:
        o = results["overhead"]
        s = o["size"]
        out.append("### 1. Trial overhead and the speed-ups")
        out.append("")
        out.append(f"The recipe's three rates ({', '.join(f'{r:g}' for r in o['rates'])}), {s['epochs']} epochs each, "
                   f"{s['train_size'] or 'all 60,000'} training images, the test set as validation (as the recipe does), seed {SEED}; "
                   f"{s['repeats']} repeats in rotating order. *Ratio* is the wall time against the recipe loop of the same repeat "
                   "(median, and range); hpsearch's time is its whole worker loop (claim, train, record, tell) on PostgreSQL, "
                   "including the loss-landscape refresh the last trial of a study forces, which *w/o landscape* leaves out. "
                   "*vs hpsearch* is the wall time against hpsearch as it runs on this machine (its defaults), in the same "
                   "repeat: above 1 means that variant is slower than the default. "
                   "*Δ accuracy* is the largest difference in best val_accuracy from the recipe loop's, over the three rates.")
        out.append("")
        out.append("| variant | wall s (median) | vs recipe loop | range | w/o landscape | vs hpsearch (range) | Δ accuracy | loads |")
        out.append("|---|---|---|---|---|---|---|---|")
        for row in o["summary"]:
            out.append(f"| {row['variant']} | {row['seconds_median']:.2f} | **{row['ratio_median']:.3f}** | "
                       f"{row['ratio_min']:.3f}–{row['ratio_max']:.3f} | {row['trial_ratio_median']:.3f} | "
                       f"{row['vs_hpsearch_median']:.3f} ({row['vs_hpsearch_min']:.3f}–{row['vs_hpsearch_max']:.3f}) | "
                       f"{row['max_accuracy_diff']:.4f} | {', '.join(str(x) for x in row['load'])} |")
        out.append("")
    if "pruning" in results:
        p = results["pruning"]
        s = p["size"]
        none, med = p["rows"]["none"], p["rows"]["median (`--pruner median`)"]
        out.append("### 2. Pruning")
        out.append("")
        out.append(f"{s['trials']} trials of {s['epochs']} epochs, {s['train_size']} training images, hold-out validation "
                   f"(10,000 images), seed {SEED}, one worker; the same study with `--pruner none` and with the default pruner.")
        out.append("")
        out.append("| pruner | trials (pruned) | epochs trained | of unpruned | wall s | best val_accuracy | Δ best (pp) | load |")
        out.append("|---|---|---|---|---|---|---|---|")
        for label, row in p["rows"].items():
            out.append(f"| {label} | {row['trials']} ({row['pruned']}) | {row['epochs']} | {row['epochs'] / none['epochs']:.1%} | "
                       f"{row['seconds']:.1f} | {row['best']:.4f} | {100 * (row['best'] - none['best']):+.2f} | {row['load']:.2f} |")
        out.append("")
        out.append(f"Pruned / unpruned: **{med['epochs'] / none['epochs']:.1%} of the epochs**, {med['seconds'] / none['seconds']:.1%} of the wall time, "
                   f"best val_accuracy {100 * (med['best'] - none['best']):+.2f} percentage points.")
        out.append("")
    if "anchors" in results:
        a = results["anchors"]
        s = a["size"]
        base = a["rows"]["hpsearch (median pruner)"]
        out.append("### 3. Anchors on the same budget")
        out.append("")
        out.append(f"{s['trials']} trials (Hyperband: its own count for `max_epochs={s['epochs']}`, `factor=3`, one iteration), "
                   f"up to {s['epochs']} epochs, {s['train_size']} training images, the same hold-out, learning rate log-uniform in "
                   "[1e-5, 1], seed 0. The Optuna script uses hpsearch's pruner settings and enqueues the recipe's rates, on the same "
                   "PostgreSQL; KerasTuner keeps its state in a temporary directory, as it does by default.")
        out.append("")
        out.append("| contender | trials (pruned) | epochs trained | wall s | wall vs hpsearch | best val_accuracy | hpsearch had reached it after | load |")
        out.append("|---|---|---|---|---|---|---|---|")
        for label, row in a["rows"].items():
            reached = next((sec for sec, best in base["progress"] if best >= row["best"]), None)
            reached = "never" if reached is None else f"{reached:.1f} s"
            out.append(f"| {label} | {row['trials']} ({row['pruned']}) | {row['epochs']} | {row['seconds']:.1f} | "
                       f"{row['seconds'] / base['seconds']:.2f}× | {row['best']:.4f} | {reached} | {row['load']:.2f} |")
        out.append("")
        out.append("*hpsearch had reached it after*: seconds from the start of hpsearch's first trial to the end of the first "
                   "of its trials whose best val_accuracy was at least that contender's best (the database's timestamps).")
        out.append("")
    if "storage" in results:
        st = results["storage"]
        s = st["size"]
        out.append("### 4. Storage")
        out.append("")
        out.append(f"K `hpsearch worker` processes on one study, {s['trials_per_worker']} trials each, {s['epochs']} epochs, "
                   f"{s['train_size']} training images, median pruner. Each storage call on the worker's main thread is timed "
                   "(ask = the claim under the advisory lock; the heartbeat thread is not on the trial's path). A trial runs from "
                   "its claim to the next claim.")
        out.append("")
        out.append("| workers | variant | trials | epochs | storage / trial time | with landscape | storage per trial | report + prune per epoch | questions (median ms) | load |")
        out.append("|---|---|---|---|---|---|---|---|---|---|")
        for row in st["runs"]:
            asked = {"schedule": "hpsearch", "every epoch": "pruner asked every epoch", "sync": "reports on the trial's path"}[row["how"]]
            qm = "-" if row["question_ms_median"] is None else f"{row['question_ms_median']:.1f}"
            out.append(f"| {row['workers']} | {asked} | {row['trials']} | {row['epochs']} | **{_pct(row['storage_share'])}** | "
                       f"{_pct(row['storage_share_with_landscape'])} | {row['per_trial_storage_s'] * 1000:.0f} ms | "
                       f"{row['per_epoch_report_prune_ms']:.1f} ms | {row['questions']} ({qm}) | {row['load']:.2f} |")
        out.append("")
        out.append("Seconds per kind of call, all trials:")
        out.append("")
        for row in st["runs"]:
            asked = {"schedule": "", "every epoch": ", pruner asked every epoch", "sync": ", reports on the trial's path"}[row["how"]]
            out.append(f"- {row['workers']} worker(s){asked}: " + ", ".join(f"{k} {v:.3f}" for k, v in row["by_kind_s"].items()))
        out.append("")
    return "\n".join(out)


def render_recipe(r: dict) -> str:
    out = [f"From `{r['file']}`: {r['epochs']} epochs, one trial per rate, `--validation test`, no pruning, "
           f"{r['device']} with `KERAS_BACKEND={r['backend']}`, three workers, {r['wall_s']} s wall.", ""]
    out.append("| learning rate | best val_accuracy (epoch) | final val_accuracy | training loss: epoch 0 → 10 → last | loss rose in | train s |")
    out.append("|---|---|---|---|---|---|")
    for x in r["rows"]:
        out.append(f"| {x['learning_rate']:g} | {x['best_val_accuracy']:.4f} ({x['best_epoch']}) | {x['final_val_accuracy']:.4f} | "
                   f"{x['loss_first']:.4g} → {x['loss_epoch_10']:.4g} → {x['loss_last']:.4g} | {x['loss_rises']} of {x['steps']} steps | {x['train_seconds']:.0f} |")
    return "\n".join(out)


def write_doc(path: Path, blocks: dict[str, str]) -> None:
    """Replace each ``<!-- benchmark:NAME begin -->`` ... ``end`` block; append missing ones."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    for name, body in blocks.items():
        begin, end = f"<!-- benchmark:{name} begin -->", f"<!-- benchmark:{name} end -->"
        block = f"{begin}\n{body}\n{end}"
        if begin in text and end in text:
            head, rest = text.split(begin, 1)
            text = head + block + rest.split(end, 1)[1]
        else:
            text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="the size that fits in 10 minutes on a 2-core CPU")
    p.add_argument("--smoke", action="store_true", help="a tiny size that checks the suite runs (implies --no-write)")
    p.add_argument("--only", help=f"comma-separated sections to run ({', '.join(SECTIONS)}; default all)")
    p.add_argument("--data", help="MNIST npz or IDX directory (default: $HPSEARCH_DATA, else ../shared/data/mnist.npz)")
    p.add_argument("--storage", help="a PostgreSQL URL to use instead of a scratch database")
    p.add_argument("--more-pruners", action="store_true", help="also run the pruning study with hyperband and percentile pruners")
    p.add_argument("--repeats", type=int, help="repeats of the overhead measurement (default: by size)")
    p.add_argument("--no-write", action="store_true", help="print the tables; do not touch docs/")
    args = p.parse_args()

    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    try:
        import tensorflow as tf

        tf.get_logger().setLevel("ERROR")  # "triggered tf.function retracing": expected when models are rebuilt
    except ImportError:  # another Keras backend, without TensorFlow
        pass
    size_name = "smoke" if args.smoke else "quick" if args.quick else "full"
    args.no_write = args.no_write or args.smoke
    size = json.loads(json.dumps(SIZES[size_name]))
    if args.repeats:
        size["overhead"]["repeats"] = args.repeats
    only = set(args.only.split(",")) if args.only else set(SECTIONS)
    unknown = only - set(SECTIONS)
    if unknown:
        p.error(f"--only {','.join(sorted(unknown))}: choose from {', '.join(SECTIONS)}")
    data = args.data or os.environ.get("HPSEARCH_DATA")
    if data is None and (REPO.parent / "shared" / "data" / "mnist.npz").exists():
        data = str(REPO.parent / "shared" / "data" / "mnist.npz")

    command = "python tests/benchmarks/run.py" + (" --quick" if args.quick else "") + (f" --only {args.only}" if args.only else "") + (
        " --more-pruners" if args.more_pruners else "")
    # Each command writes its own block of docs/benchmarks.md and its own JSON file.
    import keras

    backend = keras.backend.backend()
    block = size_name + (f"-{args.only.replace(',', '-')}" if args.only else "") + ("-more-pruners" if args.more_pruners else "") + (
        f"-{backend}" if backend != "tensorflow" else "")
    if backend != "tensorflow":
        command = f"KERAS_BACKEND={backend} {command}"
    results = {"command": command, "date": time.strftime("%Y-%m-%d"), "size": size_name, "load_start": os.getloadavg()[0]}
    started = time.perf_counter()
    results["machine"] = machine()
    log(f"benchmark {size_name} on {results['machine']['cpu']} ({results['machine']['cores']} cores)")
    with scratch_storage(args.storage) as (url, described):
        results["storage_db"] = described
        if "overhead" in only:
            results["overhead"] = overhead(size["overhead"], url, data)
        if "pruning" in only:
            results["pruning"] = pruning(size["pruning"], url, data, more=args.more_pruners)
        if "anchors" in only:
            row = results["pruning"]["rows"]["median (`--pruner median`)"] if "pruning" in results else None
            results["anchors"] = anchors(size["pruning"], url, data, row)
        if "storage" in only:
            results["storage"] = storage_section(size["storage"], url, data)
    results["seconds"] = time.perf_counter() - started
    results["load_end"] = os.getloadavg()[0]
    recipe = recipe_reproduction(REPO / "docs" / "data" / "recipe-500-epochs-h200-jax.json")
    tables = render(results)
    print(tables)
    if not args.no_write:
        blocks = {block: tables}
        if recipe:
            blocks["recipe"] = render_recipe(recipe)
        write_doc(DOC, blocks)
        out = REPO / "docs" / "data" / f"benchmarks-{block}.json"
        out.write_text(json.dumps(results, indent=1, default=str))
        log(f"wrote {DOC.relative_to(REPO)} and {out.relative_to(REPO)}")
    log(f"done in {results['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
