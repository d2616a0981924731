"""The one reader of trial histories: what the queries, the landscape and a live view need.

The loss landscape (``search.landscape.curves``) needs, for every finished trial, one parameter,
the objective value and a few user attributes (the per-epoch history); ``hpsearch query
curves`` needs the same for a few trials plus their intermediate values. Optuna's
``study.get_trials()`` loads whole ``FrozenTrial`` objects, every intermediate value
included: 500,000 rows for 1,000 trials of 500 epochs, most of the time of a refresh. Here
two to three set-based queries read only what is asked for. Like ``storage.queries`` they
only read.
"""

from __future__ import annotations

import gc
import json
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy

from storage.engine import connection

__all__ = ["FINISHED_STATES", "TrialRecord", "trial_records", "study_system_attr", "study_user_attr"]

#: The states a trial can be in once it has stopped for good with a result.
FINISHED_STATES = ("COMPLETE", "PRUNED")

# How Optuna stores the intermediate values JSON cannot hold (value NULL, type set).
_SPECIAL = {"INF_POS": math.inf, "INF_NEG": -math.inf, "NAN": math.nan}


@dataclass(frozen=True)
class TrialRecord:
    """What a reader of trial histories needs of one trial.

    Attributes:
        number: the trial's number in its study.
        state: ``"COMPLETE"``, ``"PRUNED"``, ...
        param: the value of the requested parameter, or None where the trial has none.
        value: the first objective's value, or None (pruned and failed trials, infinities).
        attrs: the requested user attributes that the trial has, decoded from JSON (an
            attribute whose JSON does not decode is left out).
        steps: the intermediate values by step, when asked for (``nan``/``inf`` restored).
    """

    number: int
    state: str
    param: float | None
    value: float | None
    attrs: dict[str, Any] = field(default_factory=dict)
    steps: dict[int, float] = field(default_factory=dict)


def trial_records(engine, study_id: int, *, param: str, attrs: Sequence[str],
                  states: Sequence[str] | None = FINISHED_STATES, numbers: Sequence[int] | None = None,
                  steps: bool = False, keep: Callable[[str, Any], Any] | None = None) -> list[TrialRecord]:
    """Return one :class:`TrialRecord` per trial of ``study_id`` that matches, by number.

    Args:
        engine: the SQLAlchemy engine of the study's storage (or an ``RDBStorage``).
        study_id: Optuna's id of the study.
        param: the parameter to read (its internal value: the float itself for a float).
        attrs: the user-attribute keys to read; missing ones are left out of ``attrs``.
        states: the trial states to read; None for every state.
        numbers: only these trial numbers; None for every trial.
        steps: also read each trial's intermediate values.
        keep: called as ``keep(key, decoded)`` on each attribute as it is decoded; what it
            returns is kept instead (the landscape keeps one metric of each history, so the
            rest is freed at once rather than held for every trial).

    Raises:
        StorageError: the database failed the read.
    """
    where = ["t.study_id = :sid"]
    bind: dict[str, Any] = {"sid": study_id, "param": param}
    expanding = []
    if states is not None:
        where.append("t.state IN :states")
        bind["states"] = list(states)
        expanding.append("states")
    if numbers is not None:
        where.append("t.number IN :numbers")
        bind["numbers"] = [int(n) for n in numbers]
        expanding.append("numbers")
    cond = " AND ".join(where)

    def text(sql: str, *extra: str):
        return sqlalchemy.text(sql).bindparams(*(sqlalchemy.bindparam(k, expanding=True) for k in (*expanding, *extra)))

    trials = text(
        "SELECT t.trial_id, t.number, t.state, p.param_value, v.value"
        " FROM trials t"
        " LEFT JOIN trial_params p ON p.trial_id = t.trial_id AND p.param_name = :param"
        " LEFT JOIN trial_values v ON v.trial_id = t.trial_id AND v.objective = 0"
        f" WHERE {cond} ORDER BY t.number"
    )
    keys = list(attrs)
    found: dict[int, dict[str, Any]] = {}
    by_step: dict[int, dict[int, float]] = {}
    with connection(engine) as conn, cyclic_gc_paused():
        rows = conn.execute(trials, bind).all()
        if keys and rows:
            user_attrs = text(
                "SELECT a.trial_id, a.key, a.value_json"
                f" FROM trial_user_attributes a JOIN trials t ON t.trial_id = a.trial_id WHERE {cond} AND a.key IN :keys",
                "keys",
            )
            for trial_id, key, value_json in conn.execute(user_attrs, {**bind, "keys": keys}).all():
                try:
                    decoded = json.loads(value_json)
                    found.setdefault(int(trial_id), {})[key] = decoded if keep is None else keep(key, decoded)
                except (TypeError, ValueError):
                    pass
        if steps and rows:
            values = text(
                "SELECT v.trial_id, v.step, v.intermediate_value, v.intermediate_value_type"
                f" FROM trial_intermediate_values v JOIN trials t ON t.trial_id = v.trial_id WHERE {cond}"
            )
            for trial_id, step, value, kind in conn.execute(values, bind).all():
                kind = str(getattr(kind, "name", kind))
                by_step.setdefault(int(trial_id), {})[int(step)] = _SPECIAL[kind] if kind in _SPECIAL else float(value)
        return [
            TrialRecord(
                number=int(number),
                state=str(getattr(state, "name", state)),
                param=None if param_value is None else float(param_value),
                value=None if value is None else float(value),
                attrs=found.get(int(trial_id), {}),
                steps=by_step.get(int(trial_id), {}),
            )
            for trial_id, number, state, param_value, value in rows
        ]


@contextmanager
def cyclic_gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while histories are decoded and kept.

    Decoding 9,000 histories allocates tens of thousands of lists and dicts that all stay
    alive, so the collector runs again and again over a growing heap and finds nothing (JSON
    has no cycles): measured, about a third of ``queries.landscape``'s CPU time on a
    10,000-trial study (docs/design.md). Reference counting still frees everything.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def study_system_attr(engine, study_id: int, key: str) -> Any:
    """Return one system attribute of a study, decoded, or None when it is not set.

    ``storage.get_study_system_attrs`` reads them all, and optuna-dashboard keeps every saved
    figure there in 2 kB pieces: reading one key costs one row instead of megabytes.
    """
    with connection(engine) as conn:
        value_json = conn.execute(
            sqlalchemy.text("SELECT value_json FROM study_system_attributes WHERE study_id = :sid AND key = :key"),
            {"sid": study_id, "key": key},
        ).scalar()
    return None if value_json is None else json.loads(value_json)


def study_user_attr(engine, study_name: str, key: str) -> Any:
    """One user attribute of the study named ``study_name``, decoded; None when the study, the
    attribute or Optuna's schema itself is missing (reads only: a worker peeks at a study's
    stored configuration before it opens the storage)."""
    from storage.tables import has_schema

    with connection(engine) as conn:
        if not has_schema(conn):
            return None
        value_json = conn.execute(
            sqlalchemy.text("SELECT a.value_json FROM study_user_attributes a JOIN studies s ON s.study_id = a.study_id"
                            " WHERE s.study_name = :name AND a.key = :key"),
            {"name": study_name, "key": key},
        ).scalar()
    return None if value_json is None else json.loads(value_json)
