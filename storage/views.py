"""The SQL view ``hpsearch_trials``: one row per trial, for psql and BI tools.

The one writer in ``storage`` besides Optuna itself, run on purpose (``hpsearch db views``).
"""

from __future__ import annotations

from storage.engine import database_errors
from storage.errors import HpsearchError, StorageError, StudyNotFoundError
from storage.tables import PARAM, ROW_ATTRS, has_schema

__all__ = ["VIEW_NAME", "create_views"]

#: The PostgreSQL view ``hpsearch db views`` creates.
VIEW_NAME = "hpsearch_trials"

# JSON values decoded inside PostgreSQL. A number is cast only when it looks like one (Optuna
# writes NaN and Infinity as bare words, which PostgreSQL's json type rejects); a string is
# decoded with the json type, which accepts every JSON string.
_NUM = r"^-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?$"
_INT = r"^-?[0-9]+$"
# A parameter's value as the objective saw it, as jsonb: a categorical's choice (Optuna stores
# its index, the choices are in the distribution's JSON), else the number. A distribution whose
# JSON holds NaN or Infinity (Python's json writes non-finite choices as bare words, which
# PostgreSQL rejects) cannot be read in SQL: its value is NULL rather than an error for every
# query of the view.
_PARAM_VALUE_SQL = (
    "CASE WHEN strpos(tp.distribution_json, '\"CategoricalDistribution\"') = 0 THEN to_jsonb(tp.param_value)"
    " WHEN tp.distribution_json !~ '(NaN|Infinity)'"
    " THEN (tp.distribution_json::jsonb #> '{attributes,choices}') -> (tp.param_value::int) END"
)


def _unmirrored_jsonb(alias: str) -> str:
    """A mirrored parameter's model value as jsonb (an int for an int), else NULL (storage.mirrored)."""
    from storage.mirrored import unmirror_sql

    back = unmirror_sql(alias, "tp.param_value")
    return f"CASE WHEN strpos(tp.distribution_json, '\"IntDistribution\"') > 0 THEN to_jsonb(round({back})::bigint) ELSE to_jsonb({back}) END"


def _view_sql() -> str:
    def num(key: str, sqltype: str, pattern: str) -> str:
        return f"CASE WHEN a.{key} ~ '{pattern}' THEN a.{key}::{sqltype} END AS {key}"

    def text(key: str) -> str:
        return f"CASE WHEN left(a.{key}, 1) = '\"' THEN a.{key}::json #>> '{{}}' END AS {key}"

    from storage.mirrored import mirror_join_sql, unmirror_sql
    from storage.queued import QUEUED_LR_SQL, QUEUED_PARAMS_SQL

    pivot = ",\n           ".join(f"max(CASE WHEN key = '{k}' THEN value_json END) AS {k}" for k in ROW_ATTRS)
    keys = ", ".join(f"'{k}'" for k in ROW_ATTRS)
    return f"""
CREATE VIEW {VIEW_NAME} AS
SELECT s.study_name AS study,
       t.study_id,
       t.trial_id,
       t.number,
       t.state::text AS state,
       coalesce({unmirror_sql("mp", "p.param_value")}, p.param_value, {QUEUED_LR_SQL}) AS learning_rate,
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
       t.datetime_complete AT TIME ZONE 'UTC' AS datetime_complete,
       coalesce(pa.params, {QUEUED_PARAMS_SQL}, '{{}}'::jsonb) AS params
FROM trials t
JOIN studies s ON s.study_id = t.study_id
LEFT JOIN trial_values v ON v.trial_id = t.trial_id AND v.objective = 0
LEFT JOIN trial_params p ON p.trial_id = t.trial_id AND p.param_name = '{PARAM}'
{mirror_join_sql("mp", "t.study_id", "p.param_name")}
LEFT JOIN LATERAL (
    SELECT {pivot}
    FROM trial_user_attributes
    WHERE trial_id = t.trial_id AND key IN ({keys})
) a ON true
LEFT JOIN LATERAL (
    SELECT jsonb_object_agg(tp.param_name, coalesce({_unmirrored_jsonb("mm")}, {_PARAM_VALUE_SQL})) AS params
    FROM trial_params tp
    {mirror_join_sql("mm", "t.study_id", "tp.param_name")}
    WHERE tp.trial_id = t.trial_id
) pa ON true
"""


def create_views(engine) -> str:
    """Create (or replace) the PostgreSQL view ``hpsearch_trials``: one row per trial.

    Its columns are ``study``, ``study_id``, ``trial_id``, then those of :class:`TrialRow`,
    with datetimes as ``timestamptz``, and last ``params``: every parameter of the trial as a
    ``jsonb`` object (a categorical's choice, not its index; a queued trial's enqueued
    values; ``{}`` for none), as :class:`ParamsTrialRow` has them. ``psql`` and BI tools can
    query studies through it without knowing Optuna's schema, e.g.
    ``SELECT number, value, params->>'activation' FROM hpsearch_trials WHERE study = 'gs'``. The view is dropped and created in
    one transaction, so readers never see it missing.

    Returns:
        The view's name.

    Raises:
        StudyNotFoundError: the database has no Optuna schema (so nothing to view).
        StorageError: the connection is read-only.
        HpsearchError: the database is not PostgreSQL.
    """
    eng = getattr(engine, "engine", engine)
    if eng.dialect.name != "postgresql":
        raise HpsearchError(f"hpsearch db views needs PostgreSQL; this storage is {eng.dialect.name}")
    with database_errors(eng), eng.begin() as conn:
        if not has_schema(conn):
            raise StudyNotFoundError("this storage holds no studies yet (create one with hpsearch run or hpsearch init), so there is nothing to view")
        if conn.exec_driver_sql("SHOW transaction_read_only").scalar() == "on":
            raise StorageError(
                "cannot create the view through a read-only connection (a replica, or open_engine's default): use open_engine(url, read_only=False) on the primary"
            )
        conn.exec_driver_sql(f"DROP VIEW IF EXISTS {VIEW_NAME}")
        conn.exec_driver_sql(_view_sql())
        conn.exec_driver_sql(f"COMMENT ON VIEW {VIEW_NAME} IS 'hpsearch: one row per Optuna trial; recreate with hpsearch db views'")
    return VIEW_NAME
