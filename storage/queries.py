"""Read-only, set-based queries over Optuna's schema.

Optuna's own API loads whole ``FrozenTrial`` objects (params, attributes and every
intermediate value) to answer even "how many trials are finished?", and its
``trials_dataframe`` takes minutes on large studies (optuna#763, #760, #4890). The questions
users script (which learning rate won, which trials were pruned and when, the curves of the
top five, per-GPU accounting) are answered here with a handful of SQLAlchemy Core queries per
call, bound parameters only, reading just the columns and attributes they need.

Queries only read. :func:`open_engine` opens PostgreSQL connections in read-only
transactions, and nothing here creates tables: a database without Optuna's schema holds no
studies and stays empty. The one writer is :func:`create_views`, which a user runs on purpose
(``hpsearch db views``).

Results are frozen dataclasses with datetimes in UTC; :func:`to_frame` turns them into a
pandas DataFrame.

Example:
    >>> from storage import open_engine, trials, to_frame
    >>> engine = open_engine("postgresql+psycopg2://user@db/hpsearch")
    >>> pruned = trials(engine, "mnist-learning-rate", states=["PRUNED"], sort="learning_rate")
    >>> df = to_frame(pruned)
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

import sqlalchemy
from sqlalchemy import DateTime, Float, Integer, String, Text, case, cast, column, func, literal, select, table

from storage.errors import HpsearchError, StorageError, StudyNotFoundError, TrialNotFoundError

__all__ = [
    "PARAM",
    "STATES",
    "TRIAL_SORT_KEYS",
    "VIEW_NAME",
    "CurvePoint",
    "LandscapeGrid",
    "StudyRow",
    "SummaryRow",
    "TrialRow",
    "best_trial",
    "create_views",
    "curves",
    "landscape",
    "list_studies",
    "open_engine",
    "running_without_heartbeat",
    "state_counts",
    "step_values",
    "study_names",
    "summary",
    "to_frame",
    "top_trials",
    "trials",
]

#: The parameter hpsearch samples (``search.space.PARAM``; storage cannot import search).
PARAM = "learning_rate"
#: Optuna's trial states, in Optuna's own order.
STATES = ("RUNNING", "WAITING", "COMPLETE", "PRUNED", "FAIL")
#: The PostgreSQL view ``hpsearch db views`` creates.
VIEW_NAME = "hpsearch_trials"
#: What a summary can group trials by: their state, or a runtime attribute workers record.
SUMMARY_KEYS = ("state", "host", "gpu", "device")

# Optuna's tables, declared column by column as lightweight Core constructs: they carry no
# MetaData, so nothing here can create or alter a table. Optuna stores its enums (state,
# value type, direction) as PostgreSQL enum types; comparisons cast them to text so that they
# do not depend on how the driver binds a string.
_studies = table("studies", column("study_id", Integer), column("study_name", String))
_directions = table("study_directions", column("study_id", Integer), column("direction", String), column("objective", Integer))
_trials = table(
    "trials",
    column("trial_id", Integer),
    column("number", Integer),
    column("study_id", Integer),
    column("state", String),
    column("datetime_start", DateTime),
    column("datetime_complete", DateTime),
)
_values = table("trial_values", column("trial_id", Integer), column("objective", Integer), column("value", Float), column("value_type", String))
_params = table("trial_params", column("trial_id", Integer), column("param_name", String), column("param_value", Float))
_uattrs = table("trial_user_attributes", column("trial_id", Integer), column("key", String), column("value_json", Text))
_ivalues = table(
    "trial_intermediate_values",
    column("trial_id", Integer),
    column("step", Integer),
    column("intermediate_value", Float),
    column("intermediate_value_type", String),
)

# The user attributes a trial row carries, and the type each is read as (in the order
# ``_trial_select`` selects them and ``_to_trial_row`` unpacks them).
_ROW_ATTRS = {
    "best_epoch": int,
    "epochs_run": int,
    "stop_reason": str,
    "test_accuracy": float,
    "host": str,
    "gpu": str,
}


# --- rows -------------------------------------------------------------------------------


@dataclass(frozen=True)
class StudyRow:
    """One study: its trials counted by state, its best trial and when it was last active.

    ``best_*`` are ``None`` while no trial is complete, and for multi-objective studies.
    ``first_activity`` is the earliest trial start, ``last_activity`` the latest start or end.
    """

    name: str
    study_id: int
    direction: str
    trials: int = 0
    running: int = 0
    waiting: int = 0
    complete: int = 0
    pruned: int = 0
    fail: int = 0
    best_number: int | None = None
    best_value: float | None = None
    best_learning_rate: float | None = None
    first_activity: datetime | None = None
    last_activity: datetime | None = None


@dataclass(frozen=True)
class TrialRow:
    """One trial, as a script wants it: no nested attributes, datetimes in UTC.

    ``value`` is Optuna's objective value (the best ``val_accuracy``; a pruned trial holds its
    last reported value); ``duration_s`` is ``datetime_complete - datetime_start`` in seconds.
    """

    number: int
    state: str
    learning_rate: float | None
    value: float | None
    best_epoch: int | None
    epochs_run: int | None
    stop_reason: str | None
    test_accuracy: float | None
    duration_s: float | None
    host: str | None
    gpu: str | None
    datetime_start: datetime | None
    datetime_complete: datetime | None


@dataclass(frozen=True)
class CurvePoint:
    """One epoch of one trial's learning curve.

    ``val_accuracy`` is the intermediate value the trial reported to Optuna at this step;
    ``loss``, ``val_loss`` and ``accuracy`` come from the trial's ``history`` attribute.
    """

    number: int
    learning_rate: float | None
    epoch: int
    val_accuracy: float | None
    loss: float | None
    val_loss: float | None
    accuracy: float | None


@dataclass(frozen=True)
class SummaryRow:
    """The trials of one group (a state, a host, a GPU): counts, best value, time spent.

    ``busy_seconds`` adds up the durations of the group's trials that have both datetimes.
    """

    group: str | None
    trials: int
    running: int
    waiting: int
    complete: int
    pruned: int
    fail: int
    best_value: float | None
    busy_seconds: float
    first_start: datetime | None
    last_complete: datetime | None


@dataclass(frozen=True)
class LandscapeGrid:
    """The loss landscape: a metric over learning rate (rows) × epoch (columns).

    ``values[i][j]`` is the metric of trial ``numbers[i]`` (learning rate
    ``learning_rates[i]``, rows sorted by it) at epoch ``epochs[j]``; ``None`` where the
    trial did not reach that epoch or the value was not finite.
    """

    metric: str
    numbers: list[int]
    learning_rates: list[float]
    epochs: list[int]
    values: list[list[float | None]]

    def points(self) -> list[tuple[int, float, int, float]]:
        """The grid's defined cells as ``(number, learning_rate, epoch, value)``."""
        return [
            (n, lr, e, v)
            for n, lr, row in zip(self.numbers, self.learning_rates, self.values)
            for e, v in zip(self.epochs, row)
            if v is not None
        ]


# --- engine -----------------------------------------------------------------------------


def open_engine(storage=None, *, read_only: bool = True):
    """Open a SQLAlchemy engine on a study storage for queries, checking it answers.

    On PostgreSQL every transaction is read-only (``default_transaction_read_only``), so a
    query cannot write even by mistake. On SQLite the file is opened read-only, which also
    keeps a missing file from being created.

    Args:
        storage: a storage URL, a :class:`~storage.url.ResolvedStorage`, or ``None`` for the
            usual resolution (``OPTUNA_STORAGE``, else the embedded PostgreSQL).
        read_only: ``False`` only for :func:`create_views`.

    Returns:
        A ``sqlalchemy.Engine``; pass it to the query functions. ``RDBStorage.engine`` works
        there too.

    Raises:
        StorageConfigError: the URL is malformed or names an unsupported driver.
        StorageError: the database cannot be reached.
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError

    from storage.engine import CONNECT_TIMEOUT_S, connect_error
    from storage.url import ResolvedStorage, resolve_storage_url

    resolved = storage if isinstance(storage, ResolvedStorage) else resolve_storage_url(storage)
    url = resolved.url
    if resolved.is_postgresql:
        connect_args = {"connect_timeout": CONNECT_TIMEOUT_S, "application_name": "hpsearch-query"}
        if read_only:
            connect_args["options"] = "-c default_transaction_read_only=on"
        kwargs = {"connect_args": connect_args, "pool_size": 2, "max_overflow": 2, "pool_pre_ping": True}
    else:
        kwargs = {"connect_args": {"timeout": 30}}
        if read_only:
            parsed = make_url(url)
            if not os.path.exists(parsed.database):
                raise StorageError(f"no SQLite file at {parsed.database!r}: check --storage (queries never create one)")
            url = parsed.set(database=f"file:{parsed.database}", query={"mode": "ro", "uri": "true"})
    engine = sqlalchemy.create_engine(url, **kwargs)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("select 1")
    except (SQLAlchemyError, OSError) as e:
        engine.dispose()
        raise connect_error(resolved, e) from None
    return engine


# --- studies ----------------------------------------------------------------------------


def _engine(engine):
    # An optuna RDBStorage carries its engine as ``.engine``; an Engine's ``.engine`` is itself.
    return getattr(engine, "engine", engine)


def _has_schema(conn) -> bool:
    return sqlalchemy.inspect(conn).has_table("studies")


def study_names(engine) -> list[str]:
    """The names of all studies in the database, sorted; empty when there is no schema yet."""
    with _engine(engine).connect() as conn:
        if not _has_schema(conn):
            return []
        return list(conn.execute(select(_studies.c.study_name).order_by(_studies.c.study_name)).scalars())


def _study_id(conn, name: str) -> int:
    """The id of study ``name``; raises StudyNotFoundError naming the studies that exist."""
    if not _has_schema(conn):
        raise StudyNotFoundError(
            f"no study named {name!r}: this storage holds no studies yet (create one with hpsearch run or hpsearch init, or check --storage)"
        )
    sid = conn.execute(select(_studies.c.study_id).where(_studies.c.study_name == name)).scalar()
    if sid is None:
        names = list(conn.execute(select(_studies.c.study_name).order_by(_studies.c.study_name)).scalars())
        shown = ", ".join(repr(n) for n in names[:20]) + (f" and {len(names) - 20} more" if len(names) > 20 else "")
        raise StudyNotFoundError(f"no study named {name!r} in this storage (studies: {shown or 'none'}): check --study and --storage")
    return int(sid)


def _directions_of(conn, study_ids: Iterable[int] | None = None) -> dict[int, list[str]]:
    q = select(_directions.c.study_id, cast(_directions.c.direction, String)).order_by(_directions.c.study_id, _directions.c.objective)
    if study_ids is not None:
        q = q.where(_directions.c.study_id.in_(list(study_ids)))
    out: dict[int, list[str]] = {}
    for sid, direction in conn.execute(q):
        out.setdefault(int(sid), []).append(str(direction))
    return out


def _maximize(directions: list[str]) -> bool:
    return directions == ["MAXIMIZE"]


def _state_col():
    return cast(_trials.c.state, String)


def _value_expr():
    """The objective value with Optuna's stored infinities (value NULL, type INF_*) restored."""
    vt = cast(_values.c.value_type, String)
    return case(
        (vt == "INF_POS", literal(math.inf, Float)),
        (vt == "INF_NEG", literal(-math.inf, Float)),
        else_=_values.c.value,
    )


def _objective0():
    return (_values.c.trial_id == _trials.c.trial_id) & (_values.c.objective == 0)


def _lr_join():
    return (_params.c.trial_id == _trials.c.trial_id) & (_params.c.param_name == PARAM)


def list_studies(engine) -> list[StudyRow]:
    """Every study in the database, sorted by name; empty when there is no schema yet.

    Three queries whatever the number of studies: counts and activity per study, directions,
    and each single-objective study's best complete trial.
    """
    with _engine(engine).connect() as conn:
        if not _has_schema(conn):
            return []
        state = _state_col()
        activity = func.coalesce(_trials.c.datetime_complete, _trials.c.datetime_start)
        counts = conn.execute(
            select(
                _studies.c.study_id,
                _studies.c.study_name,
                func.count(_trials.c.trial_id),
                *(func.coalesce(func.sum(case((state == s, 1), else_=0)), 0) for s in STATES),
                func.min(_trials.c.datetime_start),
                func.max(activity),
            )
            .select_from(_studies.outerjoin(_trials, _trials.c.study_id == _studies.c.study_id))
            .group_by(_studies.c.study_id, _studies.c.study_name)
            .order_by(_studies.c.study_name)
        ).all()
        directions = _directions_of(conn)
        # The best complete trial per study in one pass: rank by value, direction-aware
        # (ties go to the lower trial number), keep rank 1.
        d0 = _directions.alias("d0")
        value = _value_expr()
        order = case((cast(d0.c.direction, String) == "MAXIMIZE", -value), else_=value)
        ranked = (
            select(
                _trials.c.study_id,
                _trials.c.number,
                value.label("value"),
                _params.c.param_value.label("lr"),
                func.row_number().over(partition_by=_trials.c.study_id, order_by=(order, _trials.c.number)).label("rank"),
            )
            .select_from(
                _trials.join(_values, _objective0())
                .join(d0, (d0.c.study_id == _trials.c.study_id) & (d0.c.objective == 0))
                .outerjoin(_params, _lr_join())
            )
            .where(state == "COMPLETE")
            .subquery()
        )
        best = {
            int(r.study_id): r
            for r in conn.execute(select(ranked.c.study_id, ranked.c.number, ranked.c.value, ranked.c.lr).where(ranked.c.rank == 1))
        }
    rows = []
    for sid, name, n, *rest in counts:
        by_state = dict(zip(STATES, (int(x) for x in rest[: len(STATES)])))
        first, last = rest[len(STATES) :]
        dirs = directions.get(int(sid), [])
        b = best.get(int(sid)) if len(dirs) == 1 else None
        rows.append(
            StudyRow(
                name=name,
                study_id=int(sid),
                direction=",".join(d.lower() for d in dirs),
                trials=int(n),
                **{s.lower(): by_state[s] for s in STATES},
                best_number=None if b is None else int(b.number),
                best_value=None if b is None else float(b.value),
                best_learning_rate=None if b is None or b.lr is None else float(b.lr),
                first_activity=_utc(first),
                last_activity=_utc(last),
            )
        )
    return rows


def state_counts(engine, study_id: int) -> dict[str, int]:
    """Count the trials of a study by state: ``{"COMPLETE": 4, "PRUNED": 2, ...}``.

    Every state appears in the result, with 0 where the study has none.
    """
    counts = {s: 0 for s in STATES}
    with _engine(engine).connect() as conn:
        rows = conn.execute(
            sqlalchemy.text("SELECT state, count(*) FROM trials WHERE study_id = :sid GROUP BY state"),
            {"sid": study_id},
        )
        for state, n in rows:
            counts[str(state)] = int(n)
    return counts


def step_values(engine, study_id: int, step: int, *, exclude: Iterable[int] = ()) -> dict[int, float]:
    """The intermediate value each trial of a study reported at ``step``: ``{trial_id: value}``.

    What a rung-based pruner needs and nothing more: one indexed read of one float per trial,
    where Optuna's ``get_trials`` reloads every running trial whole (params, attributes, every
    step) at each question. Trials in ``exclude`` (the ones a caller already holds; a value
    at a step never changes once reported) and failed trials are left out. Non-finite values
    come back as ``nan``/``inf``.
    """
    special = {"INF_POS": math.inf, "INF_NEG": -math.inf, "NAN": math.nan}
    q = (
        select(_ivalues.c.trial_id, _ivalues.c.intermediate_value, cast(_ivalues.c.intermediate_value_type, String))
        .select_from(_ivalues.join(_trials, _trials.c.trial_id == _ivalues.c.trial_id))
        .where(_trials.c.study_id == study_id, _ivalues.c.step == step, _state_col() != "FAIL")
    )
    known = list(exclude)
    if known:
        q = q.where(_ivalues.c.trial_id.not_in(known))
    with _engine(engine).connect() as conn:
        return {int(tid): special[vt] if vt in special else float(v) for tid, v, vt in conn.execute(q)}


def running_without_heartbeat(engine, study_id: int, started_before) -> list[int]:
    """Ids of RUNNING trials that never recorded a heartbeat and started before the cutoff.

    Such a trial belongs to a worker that died between claiming it and its first heartbeat
    (or to a claim whose acknowledgement was lost with the connection); Optuna's stale-trial
    check, which looks at heartbeats only, never finds it. ``started_before`` is a naive local
    datetime, as Optuna writes ``datetime_start``.
    """
    with _engine(engine).connect() as conn:
        rows = conn.execute(
            sqlalchemy.text(
                "SELECT t.trial_id FROM trials t WHERE t.study_id = :sid AND t.state = 'RUNNING' "
                "AND t.datetime_start < :cutoff "
                "AND NOT EXISTS (SELECT 1 FROM trial_heartbeats h WHERE h.trial_id = t.trial_id)"
            ),
            {"sid": study_id, "cutoff": started_before},
        )
        return [int(r[0]) for r in rows]


# --- trials -----------------------------------------------------------------------------

#: Columns ``trials`` can sort by. The first five sort in the database (so ``limit`` is
#: applied there too); the others are attributes decoded from JSON, sorted after reading.
TRIAL_SORT_KEYS = (
    "number",
    "learning_rate",
    "value",
    "datetime_start",
    "datetime_complete",
    "duration_s",
    "test_accuracy",
    "best_epoch",
    "epochs_run",
)


def _utc(dt: datetime | None) -> datetime | None:
    # Optuna's RDBStorage stores naive UTC (and converts to local time when it builds a
    # FrozenTrial); rows carry aware UTC datetimes so that no reader has to guess.
    return None if dt is None else dt.replace(tzinfo=timezone.utc)


def _decode(raw: str | None, kind: type):
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


def _check_states(states: Iterable[str] | None) -> list[str] | None:
    if states is None:
        return None
    wanted = [str(s).upper() for s in states]
    bad = [s for s in wanted if s not in STATES]
    if bad:
        raise HpsearchError(f"unknown trial state {bad[0]!r}: use one of {', '.join(s.lower() for s in STATES)}")
    return wanted


def _trial_select(study_id: int):
    """The select behind every trial row: one row per trial, attributes pivoted in SQL."""
    keys = list(_ROW_ATTRS)
    attrs = (
        select(
            _uattrs.c.trial_id,
            *(func.max(case((_uattrs.c.key == k, _uattrs.c.value_json))).label(f"a_{k}") for k in keys),
        )
        .where(_uattrs.c.key.in_(keys))
        .where(_uattrs.c.trial_id.in_(select(_trials.c.trial_id).where(_trials.c.study_id == study_id)))
        .group_by(_uattrs.c.trial_id)
        .subquery("a")
    )
    value = _value_expr()
    q = (
        select(
            _trials.c.number,
            _state_col().label("state"),
            _params.c.param_value.label("learning_rate"),
            value.label("value"),
            _trials.c.datetime_start,
            _trials.c.datetime_complete,
            *(attrs.c[f"a_{k}"] for k in keys),
        )
        .select_from(
            _trials.outerjoin(_values, _objective0())
            .outerjoin(_params, _lr_join())
            .outerjoin(attrs, attrs.c.trial_id == _trials.c.trial_id)
        )
        .where(_trials.c.study_id == study_id)
    )
    return q, value


def _to_trial_row(r) -> TrialRow:
    number, state, lr, value, start, end, best_epoch, epochs_run, stop_reason, test_accuracy, host, gpu = r
    start, end = _utc(start), _utc(end)
    return TrialRow(
        number=int(number),
        state=state,
        learning_rate=None if lr is None else float(lr),
        value=None if value is None else float(value),
        best_epoch=_decode(best_epoch, int),
        epochs_run=_decode(epochs_run, int),
        stop_reason=_decode(stop_reason, str),
        test_accuracy=_decode(test_accuracy, float),
        duration_s=(end - start).total_seconds() if start is not None and end is not None else None,
        host=_decode(host, str),
        gpu=_decode(gpu, str),
        datetime_start=start,
        datetime_complete=end,
    )


def trials(
    engine,
    study: str,
    *,
    states: Iterable[str] | None = None,
    lr_min: float | None = None,
    lr_max: float | None = None,
    min_value: float | None = None,
    sort: str = "number",
    descending: bool = False,
    limit: int | None = None,
) -> list[TrialRow]:
    """The trials of ``study`` as rows, filtered, sorted and limited in the database.

    Args:
        engine: from :func:`open_engine` (or an ``RDBStorage``).
        study: the study name.
        states: keep trials in these states (``"complete"``, ``"PRUNED"``, ...).
        lr_min: keep trials whose learning rate is at least this.
        lr_max: keep trials whose learning rate is at most this.
        min_value: keep trials whose value is at least this (trials without a value go).
        sort: one of :data:`TRIAL_SORT_KEYS`; rows without the sort value come last.
        descending: sort from the largest value down.
        limit: at most this many rows.

    Returns:
        A list of :class:`TrialRow`.

    Raises:
        StudyNotFoundError: no study of that name (the message lists the studies there are).
        HpsearchError: an unknown state or sort key, or a negative limit.

    Example:
        >>> trials(engine, "mnist-learning-rate", states=["pruned"], lr_min=0.05, sort="value", descending=True)
    """
    wanted = _check_states(states)
    if sort not in TRIAL_SORT_KEYS:
        raise HpsearchError(f"cannot sort trials by {sort!r}: use one of {', '.join(TRIAL_SORT_KEYS)}")
    if limit is not None and limit < 0:
        raise HpsearchError(f"the limit must be 0 or more, got {limit}")
    with _engine(engine).connect() as conn:
        sid = _study_id(conn, study)
        q, value = _trial_select(sid)
        if wanted is not None:
            q = q.where(_state_col().in_(wanted))
        if lr_min is not None:
            q = q.where(_params.c.param_value >= lr_min)
        if lr_max is not None:
            q = q.where(_params.c.param_value <= lr_max)
        if min_value is not None:
            q = q.where(value >= min_value)
        in_sql = {
            "number": _trials.c.number,
            "learning_rate": _params.c.param_value,
            "value": value,
            "datetime_start": _trials.c.datetime_start,
            "datetime_complete": _trials.c.datetime_complete,
        }.get(sort)
        if in_sql is not None:
            key = in_sql.desc() if descending else in_sql.asc()
            q = q.order_by(key.nulls_last(), _trials.c.number)
            if limit is not None:
                q = q.limit(limit)
        rows = [_to_trial_row(r) for r in conn.execute(q)]
    if in_sql is None:
        rows = _sort_rows(rows, sort, descending)
        if limit is not None:
            rows = rows[:limit]
    return rows


def _sort_rows(rows: list, key: str, descending: bool) -> list:
    present = sorted((r for r in rows if getattr(r, key) is not None), key=lambda r: (getattr(r, key), r.number))
    if descending:
        present.sort(key=lambda r: getattr(r, key), reverse=True)  # stable: ties keep number order
    return present + sorted((r for r in rows if getattr(r, key) is None), key=lambda r: r.number)


def _ranked(engine, study: str, k: int | None) -> list[TrialRow]:
    """Complete trials from best to worst for the study's direction; ties by trial number."""
    with _engine(engine).connect() as conn:
        sid = _study_id(conn, study)
        dirs = _directions_of(conn, [sid]).get(sid, [])
        if len(dirs) != 1:
            raise HpsearchError(f"study {study!r} has {len(dirs)} objectives: best and top need a single-objective study")
        q, value = _trial_select(sid)
        q = q.where(_state_col() == "COMPLETE").order_by(value.desc() if _maximize(dirs) else value.asc(), _trials.c.number)
        if k is not None:
            q = q.limit(k)
        return [_to_trial_row(r) for r in conn.execute(q)]


def best_trial(engine, study: str) -> TrialRow | None:
    """The best complete trial of ``study`` (as ``optuna.load_study(...).best_trial``).

    Returns:
        The trial's row, or ``None`` while the study has no complete trial.

    Raises:
        StudyNotFoundError: no study of that name.
        HpsearchError: the study has several objectives.
    """
    rows = _ranked(engine, study, 1)
    return rows[0] if rows else None


def top_trials(engine, study: str, k: int = 5) -> list[TrialRow]:
    """The ``k`` best complete trials of ``study``, best first (ties: lower number first).

    Raises:
        StudyNotFoundError: no study of that name.
        HpsearchError: ``k`` is negative, or the study has several objectives.
    """
    if k < 0:
        raise HpsearchError(f"k must be 0 or more, got {k}")
    return _ranked(engine, study, k)


# --- curves and landscape ----------------------------------------------------------------


def _history(raw: str | None) -> dict[str, list]:
    if raw is None:
        return {}
    try:
        h = json.loads(raw)
    except ValueError:
        return {}
    return h if isinstance(h, dict) else {}


def _finite(v) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v) if math.isfinite(v) else None


def _at(seq, i: int) -> float | None:
    return _finite(seq[i]) if isinstance(seq, list) and i < len(seq) else None


def curves(engine, study: str, numbers: Sequence[int]) -> list[CurvePoint]:
    """The learning curves of the trials ``numbers``: one point per trial and epoch.

    Three queries: the trials, their intermediate values, their histories.

    Returns:
        Points sorted by the order of ``numbers``, then epoch. An epoch whose value was not
        finite has ``None`` there (a non-finite intermediate value reads as ``nan``/``inf``
        as Optuna stored it).

    Raises:
        StudyNotFoundError: no study of that name.
        TrialNotFoundError: the study has no trial with one of the numbers.
    """
    numbers = list(dict.fromkeys(int(n) for n in numbers))
    with _engine(engine).connect() as conn:
        sid = _study_id(conn, study)
        found = {
            int(r.number): r
            for r in conn.execute(
                select(_trials.c.trial_id, _trials.c.number, _params.c.param_value.label("lr"))
                .select_from(_trials.outerjoin(_params, _lr_join()))
                .where(_trials.c.study_id == sid, _trials.c.number.in_(numbers))
            )
        }
        missing = [n for n in numbers if n not in found]
        if missing:
            raise TrialNotFoundError(f"study {study!r} has no trial number {', '.join(map(str, missing))}: list them with hpsearch query trials")
        ids = [r.trial_id for r in found.values()]
        steps: dict[int, dict[int, float]] = {}
        # Non-finite values are restored here, not in SQL: SQLite stores a bound NaN as NULL.
        special = {"INF_POS": math.inf, "INF_NEG": -math.inf, "NAN": math.nan}
        for tid, step, v, vt in conn.execute(
            select(_ivalues.c.trial_id, _ivalues.c.step, _ivalues.c.intermediate_value, cast(_ivalues.c.intermediate_value_type, String))
            .where(_ivalues.c.trial_id.in_(ids))
        ):
            steps.setdefault(int(tid), {})[int(step)] = special[vt] if vt in special else float(v)
        histories = {
            int(tid): _history(raw)
            for tid, raw in conn.execute(
                select(_uattrs.c.trial_id, _uattrs.c.value_json).where(_uattrs.c.trial_id.in_(ids), _uattrs.c.key == "history")
            )
        }
    points = []
    for n in numbers:
        r = found[n]
        inter = steps.get(r.trial_id, {})
        hist = histories.get(r.trial_id, {})
        length = max((len(v) for v in hist.values() if isinstance(v, list)), default=0)
        epochs = sorted(set(inter) | set(range(length)))
        lr = None if r.lr is None else float(r.lr)
        for e in epochs:
            points.append(
                CurvePoint(n, lr, e, inter.get(e), _at(hist.get("loss"), e), _at(hist.get("val_loss"), e), _at(hist.get("accuracy"), e))
            )
    return points


def landscape(engine, study: str, *, metric: str = "loss", states: Iterable[str] = ("COMPLETE", "PRUNED")) -> LandscapeGrid:
    """The grid the loss-landscape figures draw: ``metric`` by learning rate and epoch.

    Args:
        metric: a key of the trials' ``history``: ``loss``, ``val_loss``, ``accuracy`` or
            ``val_accuracy``.
        states: the trial states to include (finished trials by default).

    Raises:
        StudyNotFoundError: no study of that name.
    """
    wanted = _check_states(states)
    with _engine(engine).connect() as conn:
        sid = _study_id(conn, study)
        rows = conn.execute(
            select(_trials.c.number, _params.c.param_value, _uattrs.c.value_json)
            .select_from(
                _trials.join(_params, _lr_join()).outerjoin(
                    _uattrs, (_uattrs.c.trial_id == _trials.c.trial_id) & (_uattrs.c.key == "history")
                )
            )
            .where(_trials.c.study_id == sid, _state_col().in_(wanted))
            .order_by(_params.c.param_value, _trials.c.number)
        ).all()
    series = []
    for number, lr, raw in rows:
        seq = _history(raw).get(metric)
        series.append((int(number), float(lr), [_finite(v) for v in seq] if isinstance(seq, list) else []))
    width = max((len(s) for _, _, s in series), default=0)
    return LandscapeGrid(
        metric=metric,
        numbers=[n for n, _, _ in series],
        learning_rates=[lr for _, lr, _ in series],
        epochs=list(range(width)),
        values=[s + [None] * (width - len(s)) for _, _, s in series],
    )


# --- summary ----------------------------------------------------------------------------


def _seconds(conn, start, end):
    """``end - start`` in seconds, in the database's own arithmetic."""
    if conn.dialect.name == "postgresql":
        return sqlalchemy.extract("epoch", end - start)
    return (func.julianday(end) - func.julianday(start)) * 86400.0


def summary(engine, study: str, *, by: str = "state") -> list[SummaryRow]:
    """Trials of ``study`` grouped by state, or by the host, GPU or device they ran on.

    One query. Grouped by state, every state appears (with zeros), in Optuna's order;
    grouped by an attribute, groups are sorted with the trials that lack it (``None``) last.
    ``best_value`` is the best complete value for the study's direction.

    Raises:
        StudyNotFoundError: no study of that name.
        HpsearchError: ``by`` is not one of ``state``, ``host``, ``gpu``, ``device``.

    Example:
        >>> summary(engine, "mnist-learning-rate", by="gpu")  # per-GPU accounting
    """
    if by not in SUMMARY_KEYS:
        raise HpsearchError(f"cannot group trials by {by!r}: use one of {', '.join(SUMMARY_KEYS)}")
    with _engine(engine).connect() as conn:
        sid = _study_id(conn, study)
        dirs = _directions_of(conn, [sid]).get(sid, [])
        state = _state_col()
        value = _value_expr()
        complete_value = case((state == "COMPLETE", value))
        best = func.max(complete_value) if _maximize(dirs) else func.min(complete_value)
        source = _trials.outerjoin(_values, _objective0())
        if by == "state":
            key = state
        else:
            attr = _uattrs.alias("g")
            source = source.outerjoin(attr, (attr.c.trial_id == _trials.c.trial_id) & (attr.c.key == by))
            key = attr.c.value_json
        seconds = _seconds(conn, _trials.c.datetime_start, _trials.c.datetime_complete)
        rows = conn.execute(
            select(
                key.label("key"),
                func.count(),
                *(func.sum(case((state == s, 1), else_=0)) for s in STATES),
                best,
                func.coalesce(func.sum(seconds), 0),
                func.min(_trials.c.datetime_start),
                func.max(_trials.c.datetime_complete),
            )
            .select_from(source)
            .where(_trials.c.study_id == sid)
            .group_by(key)
        ).all()
    out = {}
    for key, n, *rest in rows:
        group = key if by == "state" else _decode(key, str)
        by_state = dict(zip(STATES, (int(x) for x in rest[: len(STATES)])))
        b, secs, first, last = rest[len(STATES) :]
        row = SummaryRow(
            group=group,
            trials=int(n),
            **{s.lower(): by_state[s] for s in STATES},
            best_value=None if b is None else float(b),
            busy_seconds=float(secs),
            first_start=_utc(first),
            last_complete=_utc(last),
        )
        # An attribute stored as JSON null and one never set are both "None": one group.
        out[group] = row if group not in out else _merge(out[group], row, _maximize(dirs))
    if by == "state":
        empty = dict(trials=0, **{s.lower(): 0 for s in STATES}, best_value=None, busy_seconds=0.0, first_start=None, last_complete=None)
        return [out.get(s) or SummaryRow(group=s, **empty) for s in STATES]
    return [out[g] for g in sorted(out, key=lambda g: (g is None, g or ""))]


def _merge(a: SummaryRow, b: SummaryRow, maximize: bool) -> SummaryRow:
    def pick(f, x, y):
        return x if y is None else y if x is None else f(x, y)

    return SummaryRow(
        group=a.group,
        **{k: getattr(a, k) + getattr(b, k) for k in ("trials", "running", "waiting", "complete", "pruned", "fail", "busy_seconds")},
        best_value=pick(max if maximize else min, a.best_value, b.best_value),
        first_start=pick(min, a.first_start, b.first_start),
        last_complete=pick(max, a.last_complete, b.last_complete),
    )


# --- the view ---------------------------------------------------------------------------

# JSON values decoded inside PostgreSQL. A number is cast only when it looks like one (Optuna
# writes NaN and Infinity as bare words, which PostgreSQL's json type rejects); a string is
# decoded with the json type, which accepts every JSON string.
_NUM = r"^-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?$"
_INT = r"^-?[0-9]+$"


def _view_sql() -> str:
    def num(key: str, sqltype: str, pattern: str) -> str:
        return f"CASE WHEN a.{key} ~ '{pattern}' THEN a.{key}::{sqltype} END AS {key}"

    def text(key: str) -> str:
        return f"CASE WHEN left(a.{key}, 1) = '\"' THEN a.{key}::json #>> '{{}}' END AS {key}"

    pivot = ",\n           ".join(f"max(CASE WHEN key = '{k}' THEN value_json END) AS {k}" for k in _ROW_ATTRS)
    keys = ", ".join(f"'{k}'" for k in _ROW_ATTRS)
    return f"""
CREATE VIEW {VIEW_NAME} AS
SELECT s.study_name AS study,
       t.study_id,
       t.trial_id,
       t.number,
       t.state::text AS state,
       p.param_value AS learning_rate,
       CASE v.value_type::text WHEN 'INF_POS' THEN 'Infinity'::float8
                               WHEN 'INF_NEG' THEN '-Infinity'::float8
                               ELSE v.value END AS value,
       {num("best_epoch", "int", _INT)},
       {num("epochs_run", "int", _INT)},
       {text("stop_reason")},
       {num("test_accuracy", "float8", _NUM)},
       EXTRACT(EPOCH FROM t.datetime_complete - t.datetime_start)::float8 AS duration_s,
       {text("host")},
       {text("gpu")},
       t.datetime_start AT TIME ZONE 'UTC' AS datetime_start,
       t.datetime_complete AT TIME ZONE 'UTC' AS datetime_complete
FROM trials t
JOIN studies s ON s.study_id = t.study_id
LEFT JOIN trial_values v ON v.trial_id = t.trial_id AND v.objective = 0
LEFT JOIN trial_params p ON p.trial_id = t.trial_id AND p.param_name = '{PARAM}'
LEFT JOIN LATERAL (
    SELECT {pivot}
    FROM trial_user_attributes
    WHERE trial_id = t.trial_id AND key IN ({keys})
) a ON true
"""


def create_views(engine) -> str:
    """Create (or replace) the PostgreSQL view ``hpsearch_trials``: one row per trial.

    Its columns are ``study``, ``study_id``, ``trial_id`` and then those of
    :class:`TrialRow`, with datetimes as ``timestamptz``; ``psql`` and BI tools can query
    studies through it without knowing Optuna's schema. The view is dropped and created in
    one transaction, so readers never see it missing.

    Returns:
        The view's name.

    Raises:
        StudyNotFoundError: the database has no Optuna schema (so nothing to view).
        StorageError: the connection is read-only.
        HpsearchError: the database is not PostgreSQL.
    """
    eng = _engine(engine)
    if eng.dialect.name != "postgresql":
        raise HpsearchError(f"hpsearch db views needs PostgreSQL; this storage is {eng.dialect.name}")
    with eng.begin() as conn:
        if not _has_schema(conn):
            raise StudyNotFoundError("this storage holds no studies yet (create one with hpsearch run or hpsearch init), so there is nothing to view")
        if conn.exec_driver_sql("SHOW transaction_read_only").scalar() == "on":
            raise StorageError(
                "cannot create the view through a read-only connection (a replica, or open_engine's default): use open_engine(url, read_only=False) on the primary"
            )
        conn.exec_driver_sql(f"DROP VIEW IF EXISTS {VIEW_NAME}")
        conn.exec_driver_sql(_view_sql())
        conn.exec_driver_sql(f"COMMENT ON VIEW {VIEW_NAME} IS 'hpsearch: one row per Optuna trial; recreate with hpsearch db views'")
    return VIEW_NAME


# --- DataFrames ---------------------------------------------------------------------------


def to_frame(rows, row_type: type | None = None):
    """A pandas DataFrame of query results, columns in the rows' field order.

    Args:
        rows: a list of rows from any query here, or a :class:`LandscapeGrid` (which becomes
            a learning rate × epoch table indexed by learning rate, with a ``number`` column
            first).
        row_type: the row class, so that an empty list still gets its columns
            (``to_frame([], TrialRow)``); taken from the rows when left out.

    Raises:
        HpsearchError: pandas is not installed.
    """
    try:
        import pandas as pd
    except ImportError:
        raise HpsearchError("DataFrames need pandas: pip install 'hpsearch[pandas]' (or pip install pandas)") from None
    if isinstance(rows, LandscapeGrid):
        df = pd.DataFrame(rows.values, columns=rows.epochs, index=pd.Index(rows.learning_rates, name="learning_rate"), dtype=float)
        df.columns.name = "epoch"
        df.insert(0, "number", rows.numbers)
        return df
    rows = list(rows)
    row_type = row_type or (type(rows[0]) if rows else None)
    names = [f.name for f in dataclasses.fields(row_type)] if row_type is not None else []
    return pd.DataFrame([[getattr(r, n) for n in names] for r in rows], columns=names)
