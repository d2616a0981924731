"""GPU check: workers packed on one GPU, and (optionally) the recipe's 500-epoch reproduction.

Runs real ``hpsearch run`` processes against the embedded PostgreSQL (or ``--storage``) and
reads the results back from the study, so it measures the product, not a mock-up of it.

1. Packing: for K in ``--ks`` (default 1, 2, 4, 8) it runs a study of 2K short trials with K
   workers sharing the GPU and prints trials/hour and the per-epoch time for each K.
2. Recipe (``--recipe-epochs 500``): the recipe's own experiment (rates 0.1, 0.01, 0.0001,
   ``batch_size`` 1024, the test set as validation, no pruning) as three workers, with every
   trial's per-epoch history written to ``recipe.json`` for ``docs/benchmarks.md``.

The lent GPU machines have no TensorFlow, so run it with ``KERAS_BACKEND=jax`` (or torch)::

    KERAS_BACKEND=jax python tests/benchmarks/gpu_check.py --data mnist.npz --out results/

Under five minutes on one H100/H200 without the recipe part; on a CPU use ``--quick``.
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


def _gpu_name() -> str:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip().splitlines()[0]
    except (OSError, subprocess.TimeoutExpired):
        pass
    return "no NVIDIA GPU (nvidia-smi absent)"


def _run(args: list[str], env: dict) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "search", "run", *args], env=env, cwd=REPO,
                          capture_output=True, text=True)
    return time.perf_counter() - start, proc


def _trials(storage_url: str, study: str):
    import optuna

    from storage import open_storage, resolve_storage_url

    storage = open_storage(resolve_storage_url(storage_url), heartbeat=False)
    return optuna.load_study(study_name=study, storage=storage).trials


def _storage_url(args, home: Path) -> str:
    if args.storage:
        return args.storage
    from storage import embedded_url

    return embedded_url(home)


def packing(args, env: dict, url: str) -> list[dict]:
    rows = []
    for k in args.ks:
        study = f"pack-k{k}-{int(time.time())}"
        cli = ["--study", study, "--workers", str(k), "--trials", str(args.trials_per_worker * k),
               "--epochs", str(args.epochs), "--pruner", "none", "--storage", url, "--format", "json"]
        if args.train_size:
            cli += ["--train-size", str(args.train_size)]
        wall, proc = _run(cli, env)
        if proc.returncode != 0:
            print(f"K={k}: hpsearch run failed ({proc.returncode}): {proc.stderr.strip()[-400:]}", file=sys.stderr)
            rows.append({"workers": k, "error": proc.stderr.strip()[-400:]})
            continue
        trials = [t for t in _trials(url, study) if t.state.name == "COMPLETE"]
        starts = [t.datetime_start for t in trials]
        ends = [t.datetime_complete for t in trials]
        span = (max(ends) - min(starts)).total_seconds()
        steady = [s for t in trials for s in t.user_attrs["epoch_seconds"][1:]]
        first = [t.user_attrs["epoch_seconds"][0] for t in trials]
        rows.append({
            "workers": k,
            "trials": len(trials),
            "epochs_per_trial": args.epochs,
            "wall_s": round(wall, 1),
            "trials_per_hour_wall": round(len(trials) / wall * 3600),
            "trials_per_hour_steady": round(len(trials) / span * 3600) if span > 0 else None,
            "epoch_s_median": round(statistics.median(steady), 4) if steady else None,
            "first_epoch_s_median": round(statistics.median(first), 3),
            "device": trials[0].user_attrs.get("device"),
            "backend": trials[0].user_attrs.get("backend"),
        })
        print(json.dumps(rows[-1]), flush=True)
    return rows


def recipe(args, env: dict, url: str) -> dict:
    study = f"recipe-{args.recipe_epochs}-{int(time.time())}"
    cli = ["--study", study, "--workers", "3", "--trials", "3", "--epochs", str(args.recipe_epochs),
           "--validation", "test", "--pruner", "none", "--storage", url, "--format", "json"]
    wall, proc = _run(cli, env)
    if proc.returncode != 0:
        print(f"recipe run failed ({proc.returncode}): {proc.stderr.strip()[-600:]}", file=sys.stderr)
        return {"error": proc.stderr.strip()[-600:]}
    out = {"study": study, "wall_s": round(wall, 1), "epochs": args.recipe_epochs, "trials": []}
    for t in sorted(_trials(url, study), key=lambda t: -t.params.get("learning_rate", 0)):
        h = t.user_attrs["history"]
        out["trials"].append({
            "learning_rate": t.params["learning_rate"],
            "state": t.state.name,
            "best_val_accuracy": t.value,
            "best_epoch": t.user_attrs["best_epoch"],
            "final_val_accuracy": h["val_accuracy"][-1],
            "test_accuracy": t.user_attrs["test_accuracy"],
            "train_seconds": t.user_attrs["train_seconds"],
            "device": t.user_attrs.get("device"),
            "backend": t.user_attrs.get("backend"),
            "history": h,
        })
        r = out["trials"][-1]
        print(f"recipe lr {r['learning_rate']}: best val_accuracy {r['best_val_accuracy']:.4f} (epoch {r['best_epoch']}), "
              f"final {r['final_val_accuracy']:.4f}, loss {h['loss'][0]} -> {h['loss'][-1]}, {r['train_seconds']} s", flush=True)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=REPO / "gpu-check")
    p.add_argument("--data", help="MNIST npz/IDX (default: $HPSEARCH_DATA)")
    p.add_argument("--storage", help="storage URL (default: a fresh embedded PostgreSQL)")
    p.add_argument("--ks", type=lambda s: [] if s == "none" else [int(x) for x in s.split(",")], default=[1, 2, 4, 8],
                   help="worker counts to pack on the GPU, comma-separated, or none")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--trials-per-worker", type=int, default=2)
    p.add_argument("--train-size", type=int)
    p.add_argument("--recipe-epochs", type=int, default=0, help="also run the recipe at this many epochs (500 reproduces it)")
    p.add_argument("--quick", action="store_true", help="CPU-sized: K=1,2, 2 epochs, 2,000 images")
    args = p.parse_args()
    if args.quick:
        args.ks, args.epochs, args.train_size = [1, 2], 2, 2000
    args.out.mkdir(parents=True, exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix="hpgpu-"))
    env = dict(os.environ, HPSEARCH_HOME=str(home))
    if args.data:
        env["HPSEARCH_DATA"] = str(Path(args.data).absolute())
    env.pop("OPTUNA_STORAGE", None)
    os.environ["HPSEARCH_HOME"] = str(home)
    url = _storage_url(args, home)
    report = {"gpu": _gpu_name(), "backend": os.environ.get("KERAS_BACKEND", "tensorflow"), "cpus": os.cpu_count()}
    print(json.dumps(report), flush=True)
    try:
        if args.recipe_epochs:
            report["recipe"] = recipe(args, env, url)
            (args.out / "recipe.json").write_text(json.dumps(report["recipe"]))
        report["packing"] = packing(args, env, url)
    finally:
        if not args.storage:
            from storage import stop_embedded

            stop_embedded(home)
    lines = [f"GPU: {report['gpu']}; Keras backend {report['backend']}; {report['cpus']} CPUs", "",
             "| workers on one GPU | trials | wall s | trials/hour (wall) | trials/hour (steady) | epoch s (median) | first epoch s |",
             "|---|---|---|---|---|---|---|"]
    for r in report["packing"]:
        if "error" in r:
            lines.append(f"| {r['workers']} | failed: {r['error'][:80]} | | | | | |")
        else:
            lines.append(f"| {r['workers']} | {r['trials']} × {r['epochs_per_trial']} epochs | {r['wall_s']} | {r['trials_per_hour_wall']} | "
                         f"{r['trials_per_hour_steady']} | {r['epoch_s_median']} | {r['first_epoch_s_median']} |")
    table = "\n".join(lines)
    print(table)
    (args.out / "gpu_check.md").write_text(table + "\n")
    (args.out / "gpu_check.json").write_text(json.dumps({k: v for k, v in report.items() if k != "recipe"}, indent=2))
    ok = all("error" not in r for r in report["packing"]) and "error" not in report.get("recipe", {})
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
