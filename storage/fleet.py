"""Fleet coordination through the database: advisory locks, trial counts, stale trials, progress.

Every worker of a fleet (one machine or many) coordinates through the study's database and
nothing else. This module holds the few statements they share: the advisory locks that
serialise claiming a trial (and creating the schema, and refreshing the landscape), the count
of a study's trials by state, the RUNNING trials whose worker died before its first heartbeat,
and the epochs each running trial has reported (the launcher's progress line), and the one
value per trial a rung-based pruner compares (:func:`step_values`).

Every hpsearch lock lives in one advisory-lock class (``"HP"``), with a key per purpose and
study hashed by :func:`lock_key`, so no two purposes or studies collide by accident and no
other application's locks are touched.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy

from storage.engine import connection
from storage.locks import LOCK_CLASS, lock_key, xact_lock
from storage.tables import STATES

__all__ = [
    "study_lock",
    "try_study_lock",
    "state_counts",
    "running_without_heartbeat",
    "trial_row_locked",
    "running_epochs",
    "step_values",
]


@contextmanager
def study_lock(storage, study_name: str, purpose: str = "study") -> Iterator[None]:
    """Serialise a critical section per study across every process that shares the database.

    On PostgreSQL this is a transaction-level advisory lock: it is released when the block
    ends, and also when the holder dies (its connection closes), so a crashed worker never
    leaves the study locked. On SQLite (one worker only) the database's own write lock is
    enough and the block runs unguarded.

    Args:
        storage: an ``RDBStorage`` or a SQLAlchemy engine.
    """
    engine = getattr(storage, "engine", storage)
    if engine.dialect.name != "postgresql":
        yield
        return
    with connection(engine) as conn, xact_lock(conn, lock_key(study_name, purpose)):
        yield


@contextmanager
def try_study_lock(engine, study_name: str, purpose: str) -> Iterator[bool]:
    """Try to take a per-study advisory lock without waiting; yield whether it was taken.

    For work that one process of a fleet should do while the others skip it (refreshing the
    landscape), where :func:`study_lock` would make them queue. The lock is released when the
    block ends or its holder dies. On SQLite (one worker) it is always taken.
    """
    engine = getattr(engine, "engine", engine)
    if engine.dialect.name != "postgresql":
        yield True
        return
    with connection(engine) as conn, conn.begin():
        taken = conn.execute(
            sqlalchemy.text("SELECT pg_try_advisory_xact_lock(:c, :k)"), {"c": LOCK_CLASS, "k": lock_key(study_name, purpose)}
        ).scalar()
        yield bool(taken)


def trial_row_locked(engine, trial_id: int) -> bool:
    """Whether another session holds a lock on the trial's row, asked without waiting.

    A worker frozen inside a write (its epoch row's foreign key share-locks the trial) holds
    one until it runs again; the stale-trial sweep leaves such a trial for a later sweep
    (:func:`search.fleet.worker.sweep_stale`). Never on SQLite (one worker, no row locks).
    """
    engine = getattr(engine, "engine", engine)
    if engine.dialect.name != "postgresql":
        return False
    with connection(engine) as conn:
        try:
            with conn.begin():
                conn.execute(sqlalchemy.text("SELECT 1 FROM trials WHERE trial_id = :t FOR UPDATE NOWAIT"), {"t": trial_id})
        except sqlalchemy.exc.OperationalError as e:
            if getattr(e.orig, "pgcode", None) == "55P03":  # lock_not_available
                return True
            raise
    return False


def state_counts(engine, study_id: int) -> dict[str, int]:
    """Count the trials of a study by state: ``{"COMPLETE": 4, "PRUNED": 2, ...}``.

    Every state appears in the result, with 0 where the study has none.
    """
    counts = {s: 0 for s in STATES}
    with connection(engine) as conn:
        rows = conn.execute(
            sqlalchemy.text("SELECT state, count(*) FROM trials WHERE study_id = :sid GROUP BY state"),
            {"sid": study_id},
        )
        for state, n in rows:
            counts[str(getattr(state, "name", state))] = int(n)
    return counts


def running_without_heartbeat(engine, study_id: int, started_before) -> list[int]:
    """Ids of RUNNING trials that never recorded a heartbeat and started before the cutoff.

    Such a trial belongs to a worker that died between claiming it and its first heartbeat
    (or to a claim whose acknowledgement was lost with the connection); Optuna's stale-trial
    check, which looks at heartbeats only, never finds it. ``started_before`` is a naive local
    datetime, as Optuna writes ``datetime_start``.
    """
    with connection(engine) as conn:
        rows = conn.execute(
            sqlalchemy.text(
                "SELECT t.trial_id FROM trials t WHERE t.study_id = :sid AND t.state = 'RUNNING' "
                "AND t.datetime_start < :cutoff "
                "AND NOT EXISTS (SELECT 1 FROM trial_heartbeats h WHERE h.trial_id = t.trial_id)"
            ),
            {"sid": study_id, "cutoff": started_before},
        )
        return [int(r[0]) for r in rows]


def running_epochs(engine, study_id: int) -> dict[int, int]:
    """Epochs reported so far by each RUNNING trial of a study: ``{trial number: epochs}``."""
    with connection(engine) as conn:
        rows = conn.execute(
            sqlalchemy.text(
                "SELECT t.number, count(v.step) FROM trials t LEFT JOIN trial_intermediate_values v "
                "ON v.trial_id = t.trial_id WHERE t.study_id = :sid AND t.state = 'RUNNING' GROUP BY t.number"
            ),
            {"sid": study_id},
        )
        return {int(n): int(e) for n, e in rows}


def step_values(engine, study_id: int, step: int, *, exclude=()) -> dict[int, float]:
    """The intermediate value each trial of a study reported at ``step``: ``{trial_id: value}``.

    What a rung-based pruner needs and nothing more: one indexed read of one float per trial,
    where Optuna's ``get_trials`` reloads every running trial whole (params, attributes, every
    step) at each question. Trials in ``exclude`` (the ones a caller already holds; a value
    at a step never changes once reported) and failed trials are left out. Non-finite values
    come back as ``nan``/``inf``.
    """
    import math

    from sqlalchemy import String, cast, select

    import storage.tables as t

    special = {"INF_POS": math.inf, "INF_NEG": -math.inf, "NAN": math.nan}
    iv = t.intermediate_values
    q = (
        select(iv.c.trial_id, iv.c.intermediate_value, cast(iv.c.intermediate_value_type, String))
        .select_from(iv.join(t.trials, t.trials.c.trial_id == iv.c.trial_id))
        .where(t.trials.c.study_id == study_id, iv.c.step == step, t.state_col() != "FAIL")
    )
    known = list(exclude)
    if known:
        q = q.where(iv.c.trial_id.not_in(known))
    with connection(engine) as conn:
        return {int(tid): special[vt] if vt in special else float(v) for tid, v, vt in conn.execute(q)}
