"""The checkpoints of running trials, kept in the study's database (issue 24).

``hpsearch_checkpoints`` (made by :mod:`storage.schema`) holds at most one row per trial:
``trial_id`` (the key), ``study_id``, ``epoch`` (the last epoch the saved state finished,
0-based), ``nbytes``, ``data`` (the bytes :mod:`search.train.checkpoint` makes: storage never
looks inside them) and ``written_at``. Rows go with their trial or study.

Each write is one short transaction of its own on the trial's own row: an upsert that never
moves a checkpoint back to an earlier epoch (a late periodic write cannot overwrite the one a
stopping worker wrote after it) and takes no lock another worker waits on. A retry finds the
newest checkpoint among the trials it retries (:func:`latest_checkpoint`); the checkpoints of
a series of attempts go when it finishes (:func:`delete_checkpoints`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import sqlalchemy

from storage.schema import CHECKPOINTS, ensure_table

__all__ = ["StoredCheckpoint", "checkpoint_sizes", "delete_checkpoints", "latest_checkpoint", "save_checkpoint"]


@dataclass(frozen=True)
class StoredCheckpoint:
    """One row of the checkpoints table."""

    trial_id: int
    epoch: int
    data: bytes


def _engine(engine):
    return getattr(engine, "engine", engine)


def save_checkpoint(engine, study_id: int, trial_id: int, epoch: int, data: bytes) -> bool:
    """Store ``data`` as ``trial_id``'s checkpoint at ``epoch``, replacing an older one.

    Returns:
        True if written; False if the trial already has a checkpoint of a later epoch.
    """
    engine = _engine(engine)
    ensure_table(engine)
    upsert = sqlalchemy.text(
        f"INSERT INTO {CHECKPOINTS} (trial_id, study_id, epoch, nbytes, data) VALUES (:t, :s, :e, :n, :d)"
        f" ON CONFLICT (trial_id) DO UPDATE SET epoch = excluded.epoch, nbytes = excluded.nbytes, data = excluded.data,"
        f" written_at = CURRENT_TIMESTAMP WHERE {CHECKPOINTS}.epoch <= excluded.epoch"
    )
    with engine.begin() as conn:
        result = conn.execute(upsert, {"t": int(trial_id), "s": int(study_id), "e": int(epoch), "n": len(data), "d": bytes(data)})
    return result.rowcount > 0


def latest_checkpoint(engine, trial_ids: Iterable[int]) -> StoredCheckpoint | None:
    """The checkpoint of the furthest epoch among ``trial_ids`` (a retry's earlier attempts), or None."""
    ids = [int(t) for t in trial_ids]
    if not ids:
        return None
    engine = _engine(engine)
    ensure_table(engine)
    query = sqlalchemy.text(
        f"SELECT trial_id, epoch, data FROM {CHECKPOINTS} WHERE trial_id IN :ids ORDER BY epoch DESC, written_at DESC LIMIT 1"
    ).bindparams(sqlalchemy.bindparam("ids", expanding=True))
    with engine.connect() as conn:
        row = conn.execute(query, {"ids": ids}).first()
    return None if row is None else StoredCheckpoint(row.trial_id, row.epoch, bytes(row.data))


def delete_checkpoints(engine, trial_ids: Iterable[int]) -> int:
    """Remove the checkpoints of ``trial_ids``; return how many there were."""
    ids = [int(t) for t in trial_ids]
    if not ids:
        return 0
    engine = _engine(engine)
    ensure_table(engine)
    delete = sqlalchemy.text(f"DELETE FROM {CHECKPOINTS} WHERE trial_id IN :ids").bindparams(sqlalchemy.bindparam("ids", expanding=True))
    with engine.begin() as conn:
        return conn.execute(delete, {"ids": ids}).rowcount


def checkpoint_sizes(engine, study_id: int) -> dict[int, tuple[int, int]]:
    """``trial_id -> (epoch, nbytes)`` of the study's stored checkpoints (what a running study holds)."""
    engine = _engine(engine)
    ensure_table(engine)
    query = sqlalchemy.text(f"SELECT trial_id, epoch, nbytes FROM {CHECKPOINTS} WHERE study_id = :s")
    with engine.connect() as conn:
        return {r.trial_id: (r.epoch, r.nbytes) for r in conn.execute(query, {"s": int(study_id)})}
