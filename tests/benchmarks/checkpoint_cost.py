"""What checkpoints of running trials cost a recipe trial on this machine's CPU (issue 24).

One process trains the recipe's trial (learning rate 0.01, ``--seed 1``) three times on the
same data, in a fresh database on the given PostgreSQL:

* ``off``: no checkpoint at all (the snapshot at each epoch's end is skipped too);
* ``default``: ``HPSEARCH_CHECKPOINT_S`` unset (:data:`search.train.checkpoint.CHECKPOINT_S`);
* ``every-epoch``: ``HPSEARCH_CHECKPOINT_S=0``, a write after every epoch (its sizes and
  write times are the figures per checkpoint).

It prints each variant's training time, the epochs' median, the snapshots' time, each write's
bytes and seconds, and the write-ahead log one checkpoint makes, as JSON.

Usage::

    python tests/benchmarks/checkpoint_cost.py                       # 50,000 images, 12 epochs
    python tests/benchmarks/checkpoint_cost.py --train-size 10000 --epochs 6
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO))

ADMIN = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--admin-url", default=ADMIN)
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "mnist.npz"))
    parser.add_argument("--train-size", type=int, default=50_000)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--variants", default="off,default,every-epoch")
    args = parser.parse_args()

    import optuna
    import sqlalchemy

    from search.study.config import StudyConfig
    from search.study.space import PARAM
    from search.train import checkpoint
    from search.train.data import load_dataset
    from search.train.objective import Objective
    from storage import open_storage, resolve_storage_url
    from tests.conftest import with_database

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    name = f"hps_ckpt_{uuid.uuid4().hex[:8]}"
    admin = sqlalchemy.create_engine(args.admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = with_database(args.admin_url, name)
    out = {"train_size": args.train_size, "epochs": args.epochs, "default_interval_s": checkpoint.CHECKPOINT_S,
           "load_average": os.getloadavg(), "variants": {}}
    try:
        storage = open_storage(resolve_storage_url(url))
        data = load_dataset(args.data, train_size=args.train_size, validation="holdout")
        config = StudyConfig(epochs=args.epochs, train_size=args.train_size, seed=1, pruner="none")
        study = optuna.create_study(storage=storage, study_name="cost", direction="maximize")
        original = checkpoint.Checkpointer.epoch_end
        for variant in args.variants.split(","):
            os.environ.pop("HPSEARCH_CHECKPOINT_S", None)
            if variant == "every-epoch":
                os.environ["HPSEARCH_CHECKPOINT_S"] = "0"
            checkpoint.Checkpointer.epoch_end = (lambda *a, **k: None) if variant == "off" else original
            study.enqueue_trial({PARAM: 0.01})
            study.optimize(Objective(config, data), n_trials=1)
            t = study.trials[-1]
            epochs = t.user_attrs["epoch_seconds"][1:]  # the first includes compiling
            writes = t.user_attrs.get("checkpoint_writes", [])
            out["variants"][variant] = {
                "train_seconds": t.user_attrs["train_seconds"],
                "median_epoch_seconds": round(statistics.median(epochs), 4),
                "snapshot_seconds": t.user_attrs.get("checkpoint_snapshot_seconds", 0.0),
                "writes": len(writes),
                "write_bytes": writes[0][1] if writes else None,
                "write_seconds_median": round(statistics.median(w[2] for w in writes), 4) if writes else None,
            }
            print(json.dumps({variant: out["variants"][variant]}), flush=True)
        checkpoint.Checkpointer.epoch_end = original
        # The write-ahead log one checkpoint write makes (the table stores it uncompressed).
        from search.train.checkpoint import Snapshot, encode
        from storage.checkpoints import delete_checkpoints, save_checkpoint
        import numpy as np

        blob = encode(Snapshot(0, [np.random.default_rng(0).random(795_010 * 3, dtype=np.float32)], [], {}))
        trial_id = study.trials[-1]._trial_id
        with storage.engine.connect() as c:
            before = c.exec_driver_sql("SELECT pg_current_wal_lsn()").scalar()
        save_checkpoint(storage.engine, study._study_id, trial_id, 0, blob)
        with storage.engine.connect() as c:
            wal = c.exec_driver_sql("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %(b)s::pg_lsn)", {"b": before}).scalar()
        delete_checkpoints(storage.engine, [trial_id])
        out["wal_bytes_per_write"] = int(wal)
        out["checkpoint_bytes"] = len(blob)
        off = out["variants"].get("off")
        for variant, row in out["variants"].items():
            if off and variant != "off":
                row["overhead_vs_off"] = round(row["train_seconds"] / off["train_seconds"] - 1, 4)
            row["direct_share"] = round((row["snapshot_seconds"] + (row["write_seconds_median"] or 0) * row["writes"]) / row["train_seconds"], 4)
        storage.engine.dispose()
    finally:
        with admin.connect() as c:
            c.exec_driver_sql(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}' AND pid <> pg_backend_pid()")
            c.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}"')
        admin.dispose()
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
