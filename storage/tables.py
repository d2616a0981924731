"""Optuna's tables as SQLAlchemy Core constructs, and the expressions every query shares.

The tables are declared column by column as lightweight ``table()`` constructs: they carry
no MetaData, so nothing built on them can create or alter a table. Optuna stores its enums
(state, value type, direction) as PostgreSQL enum types; comparisons cast them to text so
that they do not depend on how the driver binds a string.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from datetime import datetime, timezone

import sqlalchemy
from sqlalchemy import DateTime, Float, Integer, String, Text, case, cast, column, literal, select, table

from storage.errors import HpsearchError, StudyNotFoundError

__all__ = [
    "PARAM",
    "STATES",
    "ROW_ATTRS",
    "CONFIG_ATTR",
    "studies",
    "directions",
    "study_user_attrs",
    "trials",
    "values",
    "params",
    "user_attrs",
    "intermediate_values",
]

#: Optuna's trial states, in Optuna's own order.
STATES = ("RUNNING", "WAITING", "COMPLETE", "PRUNED", "FAIL")

#: The parameter hpsearch samples (``search.study.space.PARAM``; storage cannot import search).
PARAM = "learning_rate"
#: The study user attribute holding hpsearch's configuration (``search.study.create.CONFIG_ATTR``).
CONFIG_ATTR = "hpsearch_config"

studies = table("studies", column("study_id", Integer), column("study_name", String))
directions = table("study_directions", column("study_id", Integer), column("direction", String), column("objective", Integer))
study_user_attrs = table("study_user_attributes", column("study_id", Integer), column("key", String), column("value_json", Text))
trials = table(
    "trials",
    column("trial_id", Integer),
    column("number", Integer),
    column("study_id", Integer),
    column("state", String),
    column("datetime_start", DateTime),
    column("datetime_complete", DateTime),
)
values = table("trial_values", column("trial_id", Integer), column("objective", Integer), column("value", Float), column("value_type", String))
params = table(
    "trial_params",
    column("param_id", Integer),
    column("trial_id", Integer),
    column("param_name", String),
    column("param_value", Float),
    column("distribution_json", Text),
)
user_attrs = table("trial_user_attributes", column("trial_id", Integer), column("key", String), column("value_json", Text))
intermediate_values = table(
    "trial_intermediate_values",
    column("trial_id", Integer),
    column("step", Integer),
    column("intermediate_value", Float),
    column("intermediate_value_type", String),
)

#: The user attributes a trial row carries, and the type each is read as (in the order
#: ``storage.queries`` selects them and unpacks them into a ``TrialRow``).
ROW_ATTRS = {
    "best_epoch": int,
    "epochs_run": int,
    "stop_reason": str,
    "test_accuracy": float,
    "host": str,
    "gpu": str,
}


def has_schema(conn) -> bool:
    return sqlalchemy.inspect(conn).has_table("studies")


def study_id(conn, name: str) -> int:
    """The id of study ``name``; raises StudyNotFoundError naming the studies that exist."""
    if not has_schema(conn):
        raise StudyNotFoundError(
            f"no study named {name!r}: this storage holds no studies yet (create one with hpsearch run or hpsearch init, or check --storage)"
        )
    sid = conn.execute(select(studies.c.study_id).where(studies.c.study_name == name)).scalar()
    if sid is None:
        names = list(conn.execute(select(studies.c.study_name).order_by(studies.c.study_name)).scalars())
        shown = ", ".join(repr(n) for n in names[:20]) + (f" and {len(names) - 20} more" if len(names) > 20 else "")
        raise StudyNotFoundError(f"no study named {name!r} in this storage (studies: {shown or 'none'}): check --study and --storage")
    return int(sid)


def directions_of(conn, study_ids: Iterable[int] | None = None) -> dict[int, list[str]]:
    """Each study's objective directions (``"MAXIMIZE"``/``"MINIMIZE"``), in objective order."""
    q = select(directions.c.study_id, cast(directions.c.direction, String)).order_by(directions.c.study_id, directions.c.objective)
    if study_ids is not None:
        q = q.where(directions.c.study_id.in_(list(study_ids)))
    out: dict[int, list[str]] = {}
    for sid, direction in conn.execute(q):
        out.setdefault(int(sid), []).append(str(direction))
    return out


def maximize(dirs: list[str]) -> bool:
    return dirs == ["MAXIMIZE"]


def state_col():
    return cast(trials.c.state, String)


def value_expr():
    """The objective value with Optuna's stored infinities (value NULL, type INF_*) restored."""
    vt = cast(values.c.value_type, String)
    return case(
        (vt == "INF_POS", literal(math.inf, Float)),
        (vt == "INF_NEG", literal(-math.inf, Float)),
        else_=values.c.value,
    )


def objective0():
    return (values.c.trial_id == trials.c.trial_id) & (values.c.objective == 0)


def lr_join():
    return (params.c.trial_id == trials.c.trial_id) & (params.c.param_name == PARAM)


def check_states(states: Iterable[str] | None) -> list[str] | None:
    """``states`` upper-cased; raises HpsearchError on a state Optuna does not have."""
    if states is None:
        return None
    wanted = [str(s).upper() for s in states]
    bad = [s for s in wanted if s not in STATES]
    if bad:
        raise HpsearchError(f"unknown trial state {bad[0]!r}: use one of {', '.join(s.lower() for s in STATES)}")
    return wanted


def utc(dt: datetime | None) -> datetime | None:
    # Optuna's RDBStorage stores naive UTC (and converts to local time when it builds a
    # FrozenTrial); rows carry aware UTC datetimes so that no reader has to guess.
    return None if dt is None else dt.replace(tzinfo=timezone.utc)


def decode(raw: str | None, kind: type):
    """One user attribute's JSON value as ``kind``; ``None`` if absent, null or mistyped.

    The common shapes (a number, a string without escapes) are decoded without ``json``,
    about twice as fast as ``json.loads``: a 10,000-trial study has 60,000 of them.
    """
    if raw is None or raw == "null":
        return None
    if kind is str:
        if raw[:1] == '"' and "\\" not in raw:
            return raw[1:-1]
        try:
            value = json.loads(raw)
        except ValueError:
            return None
        return None if value is None or isinstance(value, (dict, list)) else value if isinstance(value, str) else str(value)
    try:
        # float() reads every JSON number, and NaN/Infinity as Python's json writes them.
        value = float(raw)
    except ValueError:
        return None
    if kind is float:
        return value
    return int(value) if value.is_integer() else None
