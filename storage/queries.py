"""Read-only, set-based queries over Optuna's schema: the questions users script.

Optuna's own API loads whole ``FrozenTrial`` objects (params, attributes and every
intermediate value) to answer even "how many trials are finished?", and its
``trials_dataframe`` takes minutes on large studies (optuna#763, #760, #4890). The questions
users script (which learning rate won, which trials were pruned and when, the curves of the
top five, per-GPU accounting; for a user's model, which of its parameters won) are answered
here with a handful of SQLAlchemy Core queries per call, bound parameters only, reading just
the columns and attributes they need.

Queries only read. :func:`open_engine` opens PostgreSQL connections in read-only
transactions, and nothing here creates tables: a database without Optuna's schema holds no
studies and stays empty. A driver error leaves every query as a ``StorageError``.

The rest of the read side lives next door: the row types and :func:`to_frame` in
``storage.rows``, Optuna's tables in ``storage.tables``, the view in ``storage.views``, the
fleet's counts in ``storage.fleet`` and the trial-history reader in ``storage.histories``.
Import the names users call from ``storage``, which re-exports them.

Example:
    >>> from storage import open_engine, trials, to_frame
    >>> engine = open_engine("postgresql+psycopg2://user@db/hpsearch")
    >>> pruned = trials(engine, "mnist-learning-rate", states=["PRUNED"], sort="learning_rate")
    >>> df = to_frame(pruned)
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy
from sqlalchemy import String, case, cast, func, select

from storage import tables as t
from storage.engine import connection
from storage.errors import HpsearchError, TrialNotFoundError
from storage.histories import trial_records
from storage.mirrored import mirrored_params, unmirror
from storage.rows import PARAM_SORT, SUMMARY_KEYS, TRIAL_SORT_KEYS, CurvePoint, LandscapeGrid, ParamsTrialRow, StudyRow, SummaryRow, TrialRow, is_sort_key
from storage.tables import STATES

__all__ = [
    "best_trial",
    "curves",
    "landscape",
    "list_studies",
    "param_names",
    "study_names",
    "summary",
    "top_trials",
    "trials",
]



# --- studies ----------------------------------------------------------------------------


def study_names(engine) -> list[str]:
    """The names of all studies in the database, sorted; empty when there is no schema yet."""
    with connection(engine) as conn:
        if not t.has_schema(conn):
            return []
        return list(conn.execute(select(t.studies.c.study_name).order_by(t.studies.c.study_name)).scalars())



def list_studies(engine) -> list[StudyRow]:
    """Every study in the database, sorted by name; empty when there is no schema yet.

    Three queries whatever the number of studies: counts and activity per study, directions,
    and each single-objective study's best complete trial.
    """
    with connection(engine) as conn:
        if not t.has_schema(conn):
            return []
        state = t.state_col()
        activity = func.coalesce(t.trials.c.datetime_complete, t.trials.c.datetime_start)
        counts = conn.execute(
            select(
                t.studies.c.study_id,
                t.studies.c.study_name,
                func.count(t.trials.c.trial_id),
                *(func.coalesce(func.sum(case((state == s, 1), else_=0)), 0) for s in STATES),
                func.min(t.trials.c.datetime_start),
                func.max(activity),
            )
            .select_from(t.studies.outerjoin(t.trials, t.trials.c.study_id == t.studies.c.study_id))
            .group_by(t.studies.c.study_id, t.studies.c.study_name)
            .order_by(t.studies.c.study_name)
        ).all()
        directions = t.directions_of(conn)
        # The best complete trial per study in one pass: rank by value, direction-aware
        # (ties go to the lower trial number), keep rank 1.
        d0 = t.directions.alias("d0")
        value = t.value_expr()
        order = case((cast(d0.c.direction, String) == "MAXIMIZE", -value), else_=value)
        ranked = (
            select(
                t.trials.c.study_id,
                t.trials.c.trial_id,
                t.trials.c.number,
                value.label("value"),
                t.params.c.param_value.label("lr"),
                func.row_number().over(partition_by=t.trials.c.study_id, order_by=(order, t.trials.c.number)).label("rank"),
            )
            .select_from(
                t.trials.join(t.values, t.objective0())
                .join(d0, (d0.c.study_id == t.trials.c.study_id) & (d0.c.objective == 0))
                .outerjoin(t.params, t.lr_join())
            )
            .where(state == "COMPLETE")
            .subquery()
        )
        best = {
            int(r.study_id): r
            for r in conn.execute(select(ranked.c.study_id, ranked.c.trial_id, ranked.c.number, ranked.c.value, ranked.c.lr).where(ranked.c.rank == 1))
        }
        best_params = _params_by_id(conn, [int(r.trial_id) for r in best.values()])
        mirrored = mirrored_params(conn, best)
        for sid, b in best.items():
            if sid in mirrored:
                unmirror(best_params.get(int(b.trial_id), {}), mirrored[sid])
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
                best_learning_rate=None if b is None or b.lr is None else float(unmirror({t.PARAM: b.lr}, mirrored.get(int(sid), {}))[t.PARAM]),
                best_params=None if b is None else best_params.get(int(b.trial_id), {}),
                first_activity=t.utc(first),
                last_activity=t.utc(last),
            )
        )
    return rows



# --- trials -----------------------------------------------------------------------------





def _lr_value():
    """A trial's learning rate: its parameter, or for a queued trial its ``fixed_params`` one."""
    from storage.queued import queued_learning_rate

    return func.coalesce(t.params.c.param_value, queued_learning_rate(t.trials))


def _trial_select(study_id: int, with_params: bool = False):
    """The select behind every trial row: one row per trial, attributes pivoted in SQL.

    With ``with_params`` the third column is the trial's id (its parameters are read next,
    :func:`_read_params`) instead of the learning rate; the learning rate's join stays, for
    the filters and the sort on it.
    """
    keys = list(t.ROW_ATTRS)
    attrs = (
        select(
            t.user_attrs.c.trial_id,
            *(func.max(case((t.user_attrs.c.key == k, t.user_attrs.c.value_json))).label(f"a_{k}") for k in keys),
        )
        .where(t.user_attrs.c.key.in_(keys))
        .where(t.user_attrs.c.trial_id.in_(select(t.trials.c.trial_id).where(t.trials.c.study_id == study_id)))
        .group_by(t.user_attrs.c.trial_id)
        .subquery("a")
    )
    value = t.value_expr()
    q = (
        select(
            t.trials.c.number,
            t.state_col().label("state"),
            t.trials.c.trial_id if with_params else _lr_value().label("learning_rate"),
            value.label("value"),
            t.trials.c.datetime_start,
            t.trials.c.datetime_complete,
            *(attrs.c[f"a_{k}"] for k in keys),
        )
        .select_from(
            t.trials.outerjoin(t.values, t.objective0())
            .outerjoin(t.params, t.lr_join())
            .outerjoin(attrs, attrs.c.trial_id == t.trials.c.trial_id)
        )
        .where(t.trials.c.study_id == study_id)
    )
    return q, value


def _to_trial_row(r) -> TrialRow:
    number, state, lr, value, start, end, best_epoch, epochs_run, stop_reason, test_accuracy, host, gpu = r
    start, end = t.utc(start), t.utc(end)
    return TrialRow(
        number=int(number),
        state=state,
        learning_rate=None if lr is None else float(lr),
        value=None if value is None else float(value),
        best_epoch=t.decode(best_epoch, int),
        epochs_run=t.decode(epochs_run, int),
        stop_reason=t.decode(stop_reason, str),
        test_accuracy=t.decode(test_accuracy, float),
        duration_s=(end - start).total_seconds() if start is not None and end is not None else None,
        host=t.decode(host, str),
        gpu=t.decode(gpu, str),
        datetime_start=start,
        datetime_complete=end,
    )


def _to_params_row(r, params: dict[int, dict]) -> ParamsTrialRow:
    """A row of a ``with_params`` select, its parameters taken from ``params`` by trial id.

    Kept apart from :func:`_to_trial_row`, so that the 10,000 calls of a recipe query do no
    more work than before.
    """
    number, state, trial_id, value, start, end, best_epoch, epochs_run, stop_reason, test_accuracy, host, gpu = r
    start, end = t.utc(start), t.utc(end)
    return ParamsTrialRow(
        number=int(number),
        state=state,
        params=params.get(int(trial_id), {}),
        value=None if value is None else float(value),
        best_epoch=t.decode(best_epoch, int),
        epochs_run=t.decode(epochs_run, int),
        stop_reason=t.decode(stop_reason, str),
        test_accuracy=t.decode(test_accuracy, float),
        duration_s=(end - start).total_seconds() if start is not None and end is not None else None,
        host=t.decode(host, str),
        gpu=t.decode(gpu, str),
        datetime_start=start,
        datetime_complete=end,
    )


def _shows_params(conn, study_id: int) -> bool:
    """Whether the study's trial rows carry every parameter (ParamsTrialRow) or the recipe's
    learning rate (TrialRow).

    A study hpsearch created says which in its configuration: a user's model (issue 23) has
    parameters of its own, the recipe one learning rate, and a recipe study keeps its columns
    even when a plain Optuna objective added trials with other parameters to it. A study
    hpsearch did not create shows every parameter as soon as one trial has a parameter other
    than ``learning_rate``.
    """
    config = _stored_config(conn, study_id)
    if config is not None:
        model = config.get("model", "recipe") if isinstance(config, dict) else "recipe"
        return model != "recipe"
    other = (
        select(t.params.c.trial_id)
        .where(t.params.c.trial_id == t.trials.c.trial_id, t.trials.c.study_id == study_id, t.params.c.param_name != t.PARAM)
        .exists()
    )
    return bool(conn.execute(select(other)).scalar())


#: Up to this many trials, their parameters are read by trial id; beyond it, the study's
#: parameters are read whole (one index scan), which costs less than a list of ids that long.
_BY_ID = 1000


def _read_params(conn, study_id: int, rows, mirrored: dict | None = None) -> dict[int, dict]:
    """The parameters of the trials of ``rows`` (from a ``with_params`` select), by trial id,
    decoded to the values the objective saw; a queued trial's from its ``fixed_params``.
    ``mirrored``: the study's :func:`~storage.mirrored.mirrored_params`, if already read."""
    from storage.queued import queued_params

    ids = [int(r[2]) for r in rows]
    if not ids:
        return {}
    found = _params_by_id(conn, ids, study_id)
    waiting = [int(r[2]) for r in rows if r[1] == "WAITING" and int(r[2]) not in found]
    found.update(queued_params(conn, waiting))
    if mirrored is None:
        mirrored = mirrored_params(conn, [study_id]).get(study_id)
    if mirrored:  # reverse_log parameters: the values the model used, not Optuna's mirror
        for params in found.values():
            unmirror(params, mirrored)
    return found


#: Optuna's numeric distributions store the value the objective saw: no Optuna import (0.33 s
#: measured idle) is needed to read them, which keeps ``query studies`` on recipe studies fast.
_FLOATS = {"FloatDistribution", "UniformDistribution", "LogUniformDistribution", "DiscreteUniformDistribution"}
_INTS = {"IntDistribution", "IntUniformDistribution", "IntLogUniformDistribution"}


def _decoder(distribution_json: str):
    """A function from a stored ``param_value`` to the value the objective saw."""
    try:
        name = json.loads(distribution_json).get("name")
    except (ValueError, AttributeError):
        name = None
    if name in _FLOATS:
        return float
    if name in _INTS:
        return lambda v: int(round(v))
    from optuna.distributions import json_to_distribution  # a Choice's index: Optuna decodes it

    return json_to_distribution(distribution_json).to_external_repr


def _params_by_id(conn, ids: list[int], study_id: int | None = None) -> dict[int, dict]:
    """The stored parameters of the trials ``ids``, by trial id, decoded to the values the
    objective saw (in the order they were suggested). With ``study_id``, a long list reads
    that study's parameters whole instead."""
    if not ids:
        return {}
    p = t.params
    q = select(p.c.trial_id, p.c.param_name, p.c.param_value, p.c.distribution_json).order_by(p.c.param_id)
    if len(ids) <= _BY_ID or study_id is None:
        q = q.where(p.c.trial_id.in_(ids))
    else:
        q = q.where(p.c.trial_id.in_(select(t.trials.c.trial_id).where(t.trials.c.study_id == study_id)))
    wanted = set(ids)
    found: dict[int, dict] = {}
    # A study has a handful of distinct distributions, each stored again with every trial.
    distributions: dict[str, object] = {}
    for trial_id, name, value, distribution_json in conn.execute(q).all():
        if trial_id not in wanted:
            continue
        decode = distributions.get(distribution_json)
        if decode is None:
            decode = distributions[distribution_json] = _decoder(distribution_json)
        found.setdefault(int(trial_id), {})[name] = decode(value)
    return found


def param_names(engine, study: str) -> list[str] | None:
    """The parameters of ``study``'s trials, in the order they were first suggested.

    ``None`` for a study whose trial rows are :class:`TrialRow` (the recipe's, with its
    ``learning_rate`` column); for one whose rows are :class:`ParamsTrialRow` (a user's model),
    the names their ``params`` hold, so that a table has the same columns whatever the filters
    keep (``hpsearch query`` makes one CSV column of each).

    Raises:
        StudyNotFoundError: no study of that name.
    """
    with connection(engine) as conn:
        sid = t.study_id(conn, study)
        if not _shows_params(conn, sid):
            return None
        return _study_param_names(conn, sid)


def _study_param_names(conn, study_id: int) -> list[str]:
    """The study's parameter names in the order first suggested, a queued trial's included."""
    from storage.queued import queued_params

    first = func.min(t.params.c.param_id)
    names = list(
        conn.execute(
            select(t.params.c.param_name)
            .select_from(t.params.join(t.trials, t.trials.c.trial_id == t.params.c.trial_id))
            .where(t.trials.c.study_id == study_id)
            .group_by(t.params.c.param_name)
            .order_by(first, t.params.c.param_name)
        ).scalars()
    )
    waiting = select(t.trials.c.trial_id).where(t.trials.c.study_id == study_id, t.state_col() == "WAITING")
    for params in queued_params(conn, conn.execute(waiting).scalars()).values():
        names.extend(n for n in params if n not in names)
    return names


def trials(
    engine,
    study: str,
    *,
    states: Iterable[str] | None = None,
    lr_min: float | None = None,
    lr_max: float | None = None,
    min_value: float | None = None,
    max_value: float | None = None,
    params: dict[str, Any] | None = None,
    sort: str = "number",
    descending: bool = False,
    limit: int | None = None,
) -> list[TrialRow] | list[ParamsTrialRow]:
    """The trials of ``study`` as rows, filtered, sorted and limited in the database.

    A recipe study's rows are :class:`TrialRow`, with its ``learning_rate``; a user's model's
    (and a study of another Optuna objective with parameters of its own) are
    :class:`ParamsTrialRow`, with every parameter (:func:`param_names` says which a study has).
    There the learning-rate filters and sort apply to a parameter named ``learning_rate``, if
    the study has one; ``params`` and a ``param_<name>`` sort reach any parameter.

    Args:
        engine: from :func:`open_engine` (or an ``RDBStorage``).
        study: the study name.
        states: keep trials in these states (``"complete"``, ``"PRUNED"``, ...).
        lr_min: keep trials whose learning rate is at least this.
        lr_max: keep trials whose learning rate is at most this.
        min_value: keep trials whose value is at least this (trials without a value go).
        max_value: keep trials whose value is at most this (a minimised objective's filter).
        params: keep trials whose parameter ``name`` matches, for each ``name: wanted``:
            ``(low, high)`` keeps ``low <= value <= high`` (either None: no bound), anything
            else keeps values equal to it (a text matches a number, a bool or a choice
            that reads the same: ``"relu"``, ``"true"``, ``"128"``). The recipe's one
            parameter is ``learning_rate``. Trials without the parameter go.
        sort: one of :data:`TRIAL_SORT_KEYS`, or ``param_<name>`` for any parameter; rows
            without the sort value come last.
        descending: sort from the largest value down.
        limit: at most this many rows.

    Returns:
        A list of :class:`TrialRow` or of :class:`ParamsTrialRow`.

    Raises:
        StudyNotFoundError: no study of that name (the message lists the studies there are).
        HpsearchError: an unknown state, sort key or parameter, or a negative limit.

    Example:
        >>> trials(engine, "mnist-learning-rate", states=["pruned"], lr_min=0.05, sort="value", descending=True)
    """
    wanted = t.check_states(states)
    by_param = sort not in TRIAL_SORT_KEYS and is_sort_key(sort)
    if not is_sort_key(sort):
        raise HpsearchError(f"cannot sort trials by {sort!r}: use one of {', '.join(TRIAL_SORT_KEYS)}, or {PARAM_SORT}<name> for a parameter")
    if limit is not None and limit < 0:
        raise HpsearchError(f"the limit must be 0 or more, got {limit}")
    params = dict(params or {})
    with connection(engine) as conn:
        sid = t.study_id(conn, study)
        with_params = _shows_params(conn, sid)
        asked = [*params, *([sort[len(PARAM_SORT):]] if by_param else [])]
        if asked:
            _check_param_names(conn, sid, study, with_params, asked)
        q, value = _trial_select(sid, with_params)
        if wanted is not None:
            q = q.where(t.state_col().in_(wanted))
        # A user's parameter named learning_rate sampled reverse_log is stored mirrored: its
        # filters and sort run on the model's values, in Python, as any parameter's do.
        mirrored = mirrored_params(conn, [sid]).get(sid, {}) if with_params else {}
        lr_in_python = t.PARAM in mirrored
        if lr_min is not None and not lr_in_python:
            q = q.where(_lr_value() >= lr_min)
        if lr_max is not None and not lr_in_python:
            q = q.where(_lr_value() <= lr_max)
        if min_value is not None:
            q = q.where(value >= min_value)
        if max_value is not None:
            q = q.where(value <= max_value)
        in_python = params or (lr_in_python and (sort == t.PARAM or lr_min is not None or lr_max is not None))
        in_sql = None if in_python else {
            "number": t.trials.c.number,
            "learning_rate": _lr_value(),
            "value": value,
            "datetime_start": t.trials.c.datetime_start,
            "datetime_complete": t.trials.c.datetime_complete,
        }.get(sort)
        if in_sql is not None:
            key = in_sql.desc() if descending else in_sql.asc()
            q = q.order_by(key.nulls_last(), t.trials.c.number)
            if limit is not None:
                q = q.limit(limit)
        rows = _rows(conn, sid, q, with_params, mirrored)
    if params:  # on the values the objective saw: a choice, a queued trial's fixed_params
        rows = [r for r in rows if all(_param_matches(_param_of(r, name), want) for name, want in params.items())]
    if lr_in_python and (lr_min is not None or lr_max is not None):
        rows = [r for r in rows if _param_matches(_param_of(r, t.PARAM), (lr_min, lr_max))]
    if in_sql is None:
        if by_param or sort == t.PARAM:  # mixed choices order numbers first, then texts
            name = sort[len(PARAM_SORT):] if by_param else sort
            rows = _sort_rows(rows, lambda r: _sortable(_param_of(r, name)), descending)
        else:
            rows = _sort_rows(rows, sort, descending)
        if limit is not None:
            rows = rows[:limit]
    return rows




def _check_param_names(conn, study_id: int, study: str, with_params: bool, names: list[str]) -> None:
    """Raise HpsearchError for a parameter ``study`` has none of, naming those it has."""
    have = _study_param_names(conn, study_id) if with_params else [t.PARAM]
    for name in names:
        if name not in have:
            shown = ", ".join(sorted(have)) or "none yet"
            raise HpsearchError(f"study {study!r} has no parameter {name!r} (its parameters: {shown}): check the name")


def _param_of(row, name: str):
    """A row's value of parameter ``name`` (the recipe's rows carry ``learning_rate`` only)."""
    return row.params.get(name) if isinstance(row, ParamsTrialRow) else getattr(row, name, None)


def _param_matches(actual, wanted) -> bool:
    """Whether a parameter's value passes a ``params`` filter of :func:`trials`."""
    if actual is None:
        return False
    if isinstance(wanted, tuple):
        low, high = wanted
        if isinstance(actual, bool) or not isinstance(actual, (int, float)):
            return False
        return (low is None or actual >= low) and (high is None or actual <= high)
    if isinstance(wanted, str) and not isinstance(actual, str):
        text = wanted.strip()
        if isinstance(actual, bool):
            return text.lower() == str(actual).lower()
        try:
            return float(text) == float(actual)
        except (TypeError, ValueError):
            return text == str(actual)
    return actual == wanted


def _sort_rows(rows: list, key, descending: bool) -> list:
    """``rows`` sorted by ``key`` (an attribute name, or a function of a row), missing values last."""
    get = key if callable(key) else (lambda r: getattr(r, key))
    present = sorted((r for r in rows if get(r) is not None), key=lambda r: (get(r), r.number))
    if descending:
        present.sort(key=get, reverse=True)  # stable: ties keep number order
    return present + sorted((r for r in rows if get(r) is None), key=lambda r: r.number)


def _sortable(value):
    """A parameter's value as a sort key (None stays None: missing), so that a choice of
    numbers and texts orders numbers first, then texts, without a TypeError."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, value, "")
    return (1, 0, str(value))


def _rows(conn, study_id: int, q, with_params: bool, mirrored: dict | None = None) -> list[TrialRow] | list[ParamsTrialRow]:
    if not with_params:
        return [_to_trial_row(r) for r in conn.execute(q)]
    result = conn.execute(q).all()
    params = _read_params(conn, study_id, result, mirrored)
    return [_to_params_row(r, params) for r in result]


def _ranked(engine, study: str, k: int | None) -> list[TrialRow] | list[ParamsTrialRow]:
    """Complete trials from best to worst for the study's direction; ties by trial number."""
    with connection(engine) as conn:
        sid = t.study_id(conn, study)
        dirs = t.directions_of(conn, [sid]).get(sid, [])
        if len(dirs) != 1:
            raise HpsearchError(f"study {study!r} has {len(dirs)} objectives: best and top need a single-objective study")
        with_params = _shows_params(conn, sid)
        q, value = _trial_select(sid, with_params)
        q = q.where(t.state_col() == "COMPLETE").order_by(value.desc() if t.maximize(dirs) else value.asc(), t.trials.c.number)
        if k is not None:
            q = q.limit(k)
        return _rows(conn, sid, q, with_params)


def best_trial(engine, study: str) -> TrialRow | ParamsTrialRow | None:
    """The best complete trial of ``study`` (as ``optuna.load_study(...).best_trial``), for
    the study's direction (the lowest value of a minimising one).

    Returns:
        The trial's row (a :class:`ParamsTrialRow` with every parameter for a user's model,
        as :func:`trials`), or ``None`` while the study has no complete trial.

    Raises:
        StudyNotFoundError: no study of that name.
        HpsearchError: the study has several objectives.
    """
    rows = _ranked(engine, study, 1)
    return rows[0] if rows else None


def top_trials(engine, study: str, k: int = 5) -> list[TrialRow] | list[ParamsTrialRow]:
    """The ``k`` best complete trials of ``study``, best first for its direction (ties: lower
    number first); rows as :func:`trials` returns them.

    Raises:
        StudyNotFoundError: no study of that name.
        HpsearchError: ``k`` is negative, or the study has several objectives.
    """
    if k < 0:
        raise HpsearchError(f"k must be 0 or more, got {k}")
    return _ranked(engine, study, k)



# --- curves and landscape ----------------------------------------------------------------


def _history(attrs: dict) -> dict[str, list]:
    h = attrs.get("history")
    return h if isinstance(h, dict) else {}


def _finite(v) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v) if math.isfinite(v) else None


def _at(seq, i: int) -> float | None:
    return _finite(seq[i]) if isinstance(seq, list) and i < len(seq) else None



def curves(engine, study: str, numbers: Sequence[int]) -> list[CurvePoint]:
    """The learning curves of the trials ``numbers``: one point per trial and epoch.

    Read through :func:`storage.histories.trial_records` (the trials, their intermediate
    values, their histories).

    Returns:
        Points sorted by the order of ``numbers``, then epoch, each with the study's objective
        as reported (``value``; see :class:`CurvePoint`). An epoch whose value was not
        finite has ``None`` there (a non-finite intermediate value reads as ``nan``/``inf``
        as Optuna stored it).

    Raises:
        StudyNotFoundError: no study of that name.
        TrialNotFoundError: the study has no trial with one of the numbers.
    """
    numbers = list(dict.fromkeys(int(n) for n in numbers))
    with connection(engine) as conn:
        sid = t.study_id(conn, study)
        reported_accuracy = _objective(conn, sid) == "val_accuracy"
    found = {r.number: r for r in trial_records(engine, sid, param=t.PARAM, attrs=("history",), states=None, numbers=numbers, steps=True)}
    missing = [n for n in numbers if n not in found]
    if missing:
        raise TrialNotFoundError(f"study {study!r} has no trial number {', '.join(map(str, missing))}: list them with hpsearch query trials")
    points = []
    for n in numbers:
        r = found[n]
        hist = _history(r.attrs)
        length = max((len(v) for v in hist.values() if isinstance(v, list)), default=0)
        for e in sorted(set(r.steps) | set(range(length))):
            value = r.steps.get(e)
            accuracy = value if reported_accuracy else _at(hist.get("val_accuracy"), e)
            points.append(
                CurvePoint(n, r.param, e, accuracy, _at(hist.get("loss"), e), _at(hist.get("val_loss"), e), _at(hist.get("accuracy"), e), value)
            )
    return points


def _stored_config(conn, study_id: int):
    """The study's ``hpsearch_config`` as stored: None where hpsearch did not create the study,
    ``False`` where it is not JSON (a study whose configuration was damaged)."""
    raw = conn.execute(
        select(t.study_user_attrs.c.value_json).where(t.study_user_attrs.c.study_id == study_id, t.study_user_attrs.c.key == t.CONFIG_ATTR)
    ).scalar()
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return False


def _objective(conn, study_id: int) -> str:
    """The study's ``--objective`` (its stored ``hpsearch_config``), else the recipe's ``val_accuracy``."""
    config = _stored_config(conn, study_id)
    objective = config.get("objective") if isinstance(config, dict) else None
    return objective if isinstance(objective, str) and objective else "val_accuracy"


def landscape(engine, study: str, *, metric: str = "loss", states: Iterable[str] = ("COMPLETE", "PRUNED")) -> LandscapeGrid:
    """The grid the loss-landscape figures draw: ``metric`` by learning rate and epoch.

    Read through :func:`storage.histories.trial_records`, as ``search.landscape.curves.load_curves`` reads it.

    Args:
        metric: a key of the trials' ``history``: ``loss``, ``val_loss``, ``accuracy`` or
            ``val_accuracy``.
        states: the trial states to include (finished trials by default).

    Raises:
        StudyNotFoundError: no study of that name.
    """
    wanted = t.check_states(states)
    with connection(engine) as conn:
        sid = t.study_id(conn, study)

    def one_metric(key, history):
        return {metric: history.get(metric)} if isinstance(history, dict) else None

    records = trial_records(engine, sid, param=t.PARAM, attrs=("history",), states=wanted, keep=one_metric)
    series = []
    for r in sorted((r for r in records if r.param is not None), key=lambda r: (r.param, r.number)):
        seq = _history(r.attrs).get(metric)
        series.append((r.number, r.param, [_finite(v) for v in seq] if isinstance(seq, list) else []))
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
    with connection(engine) as conn:
        sid = t.study_id(conn, study)
        dirs = t.directions_of(conn, [sid]).get(sid, [])
        state = t.state_col()
        value = t.value_expr()
        complete_value = case((state == "COMPLETE", value))
        best = func.max(complete_value) if t.maximize(dirs) else func.min(complete_value)
        source = t.trials.outerjoin(t.values, t.objective0())
        if by == "state":
            key = state
        else:
            attr = t.user_attrs.alias("g")
            source = source.outerjoin(attr, (attr.c.trial_id == t.trials.c.trial_id) & (attr.c.key == by))
            key = attr.c.value_json
        seconds = _seconds(conn, t.trials.c.datetime_start, t.trials.c.datetime_complete)
        rows = conn.execute(
            select(
                key.label("key"),
                func.count(),
                *(func.sum(case((state == s, 1), else_=0)) for s in STATES),
                best,
                func.coalesce(func.sum(seconds), 0),
                func.min(t.trials.c.datetime_start),
                func.max(t.trials.c.datetime_complete),
            )
            .select_from(source)
            .where(t.trials.c.study_id == sid)
            .group_by(key)
        ).all()
    out = {}
    for key, n, *rest in rows:
        group = key if by == "state" else t.decode(key, str)
        by_state = dict(zip(STATES, (int(x) for x in rest[: len(STATES)])))
        b, secs, first, last = rest[len(STATES) :]
        row = SummaryRow(
            group=group,
            trials=int(n),
            **{s.lower(): by_state[s] for s in STATES},
            best_value=None if b is None else float(b),
            busy_seconds=float(secs),
            first_start=t.utc(first),
            last_complete=t.utc(last),
        )
        # An attribute stored as JSON null and one never set are both "None": one group.
        out[group] = row if group not in out else _merge(out[group], row, t.maximize(dirs))
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
