"""Read trial histories in bulk, and the study-wide try-lock that rate-limits their use.

The loss landscape (``search.landscape``) needs, for every finished trial, one parameter,
the objective value and a few user attributes (the per-epoch history). Optuna's
``study.get_trials()`` loads whole ``FrozenTrial`` objects, every intermediate value
included: 500,000 rows for 1,000 trials of 500 epochs, most of the time of a refresh. Two
set-based queries read only what is asked for. Like ``storage.queries`` they only read.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy

__all__ = ["TrialRecord", "trial_records", "study_system_attr", "try_study_lock"]

#: The states a trial can be in once it has stopped for good with a result.
FINISHED_STATES = ("COMPLETE", "PRUNED")


@dataclass(frozen=True)
class TrialRecord:
    """What the landscape needs of one trial.

    Attributes:
        number: the trial's number in its study.
        state: ``"COMPLETE"``, ``"PRUNED"``, ...
        param: the value of the requested parameter, or None where the trial has none.
        value: the first objective's value, or None (pruned and failed trials, infinities).
        attrs: the requested user attributes that the trial has, decoded from JSON.
    """

    number: int
    state: str
    param: float | None
    value: float | None
    attrs: dict[str, Any] = field(default_factory=dict)


def trial_records(engine, study_id: int, *, param: str, attrs: Sequence[str],
                  states: Sequence[str] = FINISHED_STATES) -> list[TrialRecord]:
    """Return one :class:`TrialRecord` per trial of ``study_id`` in ``states``, by number.

    Args:
        engine: the SQLAlchemy engine of the study's storage (``RDBStorage.engine``).
        study_id: Optuna's id of the study.
        param: the parameter to read (its internal value: the float itself for a float).
        attrs: the user-attribute keys to read; missing ones are left out of ``attrs``.
        states: the trial states to read.
    """
    states, keys = list(states), list(attrs)
    trials = sqlalchemy.text(
        "SELECT t.trial_id, t.number, t.state, p.param_value, v.value"
        " FROM trials t"
        " LEFT JOIN trial_params p ON p.trial_id = t.trial_id AND p.param_name = :param"
        " LEFT JOIN trial_values v ON v.trial_id = t.trial_id AND v.objective = 0"
        " WHERE t.study_id = :sid AND t.state IN :states"
        " ORDER BY t.number"
    ).bindparams(sqlalchemy.bindparam("states", expanding=True))
    user_attrs = sqlalchemy.text(
        "SELECT a.trial_id, a.key, a.value_json"
        " FROM trial_user_attributes a JOIN trials t ON t.trial_id = a.trial_id"
        " WHERE t.study_id = :sid AND t.state IN :states AND a.key IN :keys"
    ).bindparams(sqlalchemy.bindparam("states", expanding=True), sqlalchemy.bindparam("keys", expanding=True))
    with engine.connect() as conn:
        rows = conn.execute(trials, {"sid": study_id, "param": param, "states": states}).all()
        found: dict[int, dict[str, Any]] = {}
        if keys and rows:
            for trial_id, key, value_json in conn.execute(user_attrs, {"sid": study_id, "states": states, "keys": keys}):
                found.setdefault(int(trial_id), {})[key] = json.loads(value_json)
    return [
        TrialRecord(
            number=int(number),
            state=str(getattr(state, "name", state)),
            param=None if param_value is None else float(param_value),
            value=None if value is None else float(value),
            attrs=found.get(int(trial_id), {}),
        )
        for trial_id, number, state, param_value, value in rows
    ]


def study_system_attr(engine, study_id: int, key: str) -> Any:
    """Return one system attribute of a study, decoded, or None when it is not set.

    ``storage.get_study_system_attrs`` reads them all, and optuna-dashboard keeps every saved
    figure there in 2 kB pieces: reading one key costs one row instead of megabytes.
    """
    with engine.connect() as conn:
        value_json = conn.execute(
            sqlalchemy.text("SELECT value_json FROM study_system_attributes WHERE study_id = :sid AND key = :key"),
            {"sid": study_id, "key": key},
        ).scalar()
    return None if value_json is None else json.loads(value_json)


# The advisory-lock class of storage.engine ("HP"), so every hpsearch lock shares one namespace.
_LOCK_CLASS = 0x4850


@contextmanager
def try_study_lock(engine, study_name: str, purpose: str) -> Iterator[bool]:
    """Try to take a per-study advisory lock without waiting; yield whether it was taken.

    For work that one process of a fleet should do while the others skip it (refreshing the
    landscape), where :func:`storage.study_lock` would make them queue. The lock is released
    when the block ends or its holder dies. On SQLite (one worker) it is always taken.
    """
    if engine.dialect.name != "postgresql":
        yield True
        return
    digest = hashlib.sha256(f"{purpose}\0{study_name}".encode()).digest()
    key = int.from_bytes(digest[:4], "big", signed=True) or 1
    with engine.connect() as conn, conn.begin():
        taken = conn.execute(sqlalchemy.text("SELECT pg_try_advisory_xact_lock(:c, :k)"), {"c": _LOCK_CLASS, "k": key}).scalar()
        yield bool(taken)
