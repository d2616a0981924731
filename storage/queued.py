"""The parameters of a queued (WAITING) trial, which Optuna keeps outside ``trial_params``.

An enqueued trial's parameters live in its system attribute ``fixed_params`` until a worker
takes it, so the trial rows showed an empty ``learning_rate`` for the recipe's queued rates
(issue 15). These expressions read it from there, for the queries and for the SQL view; a
user's model's queued defaults (issue 23) are read whole.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from sqlalchemy import Float, Integer, String, Text, column, select, table
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import FunctionElement

from storage.mirrored import mirror_join_sql, unmirror_sql

__all__ = ["queued_learning_rate", "queued_params", "QUEUED_LR_SQL", "QUEUED_PARAMS_SQL"]

_sattrs = table("trial_system_attributes", column("trial_id", Integer), column("key", String), column("value_json", Text))


class _JsonFloat(FunctionElement):
    """``json_text[key]`` as a float; the column is TEXT, so each dialect parses it its way."""

    type = Float()
    inherit_cache = True
    name = "json_float"


@compiles(_JsonFloat)
def _json_float_sqlite(element, compiler, **kw):
    text, key = list(element.clauses)
    return f"json_extract({compiler.process(text, **kw)}, '$.' || {compiler.process(key, **kw)})"


@compiles(_JsonFloat, "postgresql")
def _json_float_pg(element, compiler, **kw):
    text, key = list(element.clauses)
    return f"(CAST({compiler.process(text, **kw)} AS json) ->> {compiler.process(key, **kw)})::float8"


def queued_learning_rate(trials, param: str = "learning_rate"):
    """A scalar subquery, correlated to ``trials``: the trial's ``fixed_params[param]``, or NULL."""
    return (
        select(_JsonFloat(_sattrs.c.value_json, param))
        .where(_sattrs.c.trial_id == trials.c.trial_id, _sattrs.c.key == "fixed_params")
        .scalar_subquery()
    )


#: The same for the PostgreSQL view (``t`` is the trials table there).
QUEUED_LR_SQL = (
    "(SELECT (a.value_json::json ->> 'learning_rate')::float8 FROM trial_system_attributes a"
    " WHERE a.trial_id = t.trial_id AND a.key = 'fixed_params')"
)


def queued_params(conn, trial_ids: Iterable[int]) -> dict[int, dict]:
    """The ``fixed_params`` of the trials ``trial_ids`` that have them, by trial id.

    The values are as the objective will suggest them (a categorical's choice itself, not
    its index); a ``fixed_params`` that does not decode to an object is left out.
    """
    ids = list(trial_ids)
    if not ids:
        return {}
    found = {}
    q = select(_sattrs.c.trial_id, _sattrs.c.value_json).where(_sattrs.c.key == "fixed_params", _sattrs.c.trial_id.in_(ids))
    for trial_id, raw in conn.execute(q):
        try:
            value = json.loads(raw)
        except (TypeError, ValueError):
            continue
        if isinstance(value, dict):
            found[int(trial_id)] = value
    return found


#: A queued trial's whole ``fixed_params`` as jsonb for the view, or NULL. Python's json writes
#: a non-finite float as a bare NaN or Infinity, which PostgreSQL's JSON types reject, so such
#: an object is left out (NULL) rather than failing every query of the view.
#: A parameter the study stores mirrored (storage.mirrored) is enqueued mirrored too: its value
#: is turned back, an integer kept an integer.
QUEUED_PARAMS_SQL = (
    "(SELECT coalesce(jsonb_object_agg(e.key, coalesce(CASE WHEN jsonb_typeof(e.value) = 'number' THEN"
    f" CASE WHEN e.value::text ~ '^-?[0-9]+$' THEN to_jsonb(round({unmirror_sql('q', 'e.value::text::float8')})::bigint)"
    f" ELSE to_jsonb({unmirror_sql('q', 'e.value::text::float8')}) END END, e.value)), '{{}}'::jsonb)"
    f" FROM trial_system_attributes a CROSS JOIN LATERAL jsonb_each(a.value_json::jsonb) e {mirror_join_sql('q', 't.study_id', 'e.key')}"
    " WHERE a.trial_id = t.trial_id AND a.key = 'fixed_params' AND a.value_json !~ '(NaN|Infinity)' AND left(a.value_json, 1) = '{')"
)
