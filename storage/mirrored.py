"""Parameters Optuna stores mirrored, turned back into the values the model used.

KerasTuner's ``sampling="reverse_log"`` (dense near ``max_value``) has no Optuna distribution,
so hpsearch samples the mirror ``min + max - value`` log-uniformly and Optuna's ``trial_params``
holds that mirror (``search.study.hyperparameters``). Without more, every place that reads the
parameter back showed the mirror: a ``beta`` searched in [0.9, 0.999] that trained at 0.998 read
0.901 in ``query trials``, the run's summary and the ``hpsearch_trials`` view.

The study records each such parameter as a study system attribute ``hpsearch_mirrored:NAME``
holding ``[min, max]`` (one key a parameter, so workers that meet the parameter at once write
the same key with the same value, and never a read-modify-write of a shared one). The queries,
the summary, ``export`` and the view turn the mirror back with it. Optuna's own API and
optuna-dashboard read ``trial_params`` and still show the mirror (docs/your-model.md).
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from sqlalchemy import Integer, String, Text, column, select, table

__all__ = ["MIRRORED_PREFIX", "mirrored_params", "study_mirrored", "unmirror", "mirror_join_sql", "unmirror_sql"]

#: The study system attribute ``MIRRORED_PREFIX + name``: ``[min, max]`` of a mirrored parameter.
MIRRORED_PREFIX = "hpsearch_mirrored:"

_study_sattrs = table("study_system_attributes", column("study_id", Integer), column("key", String), column("value_json", Text))


def mirrored_params(conn, study_ids: Iterable[int]) -> dict[int, dict[str, tuple[float, float]]]:
    """The mirrored parameters of each study: ``{study_id: {name: (min, max)}}`` (only studies that have any)."""
    ids = [int(i) for i in study_ids]
    if not ids:
        return {}
    s = _study_sattrs
    q = select(s.c.study_id, s.c.key, s.c.value_json).where(s.c.study_id.in_(ids), s.c.key.startswith(MIRRORED_PREFIX, autoescape=True))
    found: dict[int, dict[str, tuple[float, float]]] = {}
    for study_id, key, raw in conn.execute(q):
        try:
            low, high = json.loads(raw)
            bounds = (float(low), float(high))
        except (TypeError, ValueError):
            continue  # not written by hpsearch: leave the stored value as it is
        found.setdefault(int(study_id), {})[key[len(MIRRORED_PREFIX):]] = bounds
    return found


def study_mirrored(storage, study_id: int) -> dict[str, tuple[float, float]]:
    """The mirrored parameters of a study, read through Optuna's ``storage`` (an ``RDBStorage``)."""
    found = {}
    for key, value in storage.get_study_system_attrs(study_id).items():
        if key.startswith(MIRRORED_PREFIX) and isinstance(value, list) and len(value) == 2:
            found[key[len(MIRRORED_PREFIX):]] = (float(value[0]), float(value[1]))
    return found


def unmirror(params: dict, mirrored: dict[str, tuple[float, float]]) -> dict:
    """``params`` (name -> stored value) with each mirrored parameter turned back into the model's
    value, as ``search.study.hyperparameters.Hyperparameter.from_stored`` does it; changed in place."""
    for name, (low, high) in mirrored.items():
        value = params.get(name)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        back = min(max(high + low - value, low), high)
        params[name] = int(round(back)) if isinstance(value, int) else back
    return params


def mirror_join_sql(alias: str, study_id: str, name: str) -> str:
    """SQL for the view: a ``LEFT JOIN LATERAL`` giving ``ALIAS.lo`` and ``ALIAS.hi``, the bounds of
    parameter ``name`` (SQL) of study ``study_id`` (SQL) where the study mirrors it, else NULLs."""
    return (f"LEFT JOIN LATERAL (SELECT (m.value_json::jsonb ->> 0)::float8 AS lo, (m.value_json::jsonb ->> 1)::float8 AS hi"
            f" FROM study_system_attributes m WHERE m.study_id = {study_id} AND m.key = '{MIRRORED_PREFIX}' || {name}"
            f" AND m.value_json ~ '^\\[') {alias} ON true")


def unmirror_sql(alias: str, value: str) -> str:
    """SQL for the view: the model's value (float8) of a stored ``value`` (SQL) where
    :func:`mirror_join_sql`'s ``alias`` found bounds, else NULL."""
    return f"CASE WHEN {alias}.lo IS NOT NULL THEN least(greatest({alias}.hi + {alias}.lo - {value}, {alias}.lo), {alias}.hi) END"
