"""The learning rate of a queued (WAITING) trial, which Optuna keeps outside ``trial_params``.

An enqueued trial's parameters live in its system attribute ``fixed_params`` until a worker
takes it, so the trial rows showed an empty ``learning_rate`` for the recipe's queued rates
(issue 15). These expressions read it from there, for the queries and for the SQL view.
"""

from __future__ import annotations

from sqlalchemy import Float, Integer, String, Text, column, select, table
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import FunctionElement

__all__ = ["queued_learning_rate", "QUEUED_LR_SQL"]

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
