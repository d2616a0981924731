"""Read-only, set-based queries over Optuna's schema.

Optuna's own API loads whole ``FrozenTrial`` objects (params, attributes and every
intermediate value) to answer even "how many trials are finished?"; a worker asks that before
every trial, so it is answered here with one ``GROUP BY`` instead. Queries only read: they
never create tables.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy

__all__ = ["StudyRow", "list_studies", "state_counts", "study_names"]


@dataclass(frozen=True)
class StudyRow:
    study_id: int
    name: str


def study_names(engine) -> list[str]:
    """The names of all studies in the database, sorted; empty when there is no schema yet."""
    if not sqlalchemy.inspect(engine).has_table("studies"):
        return []
    with engine.connect() as conn:
        return [r[0] for r in conn.execute(sqlalchemy.text("SELECT study_name FROM studies ORDER BY study_name"))]


def list_studies(engine) -> list[StudyRow]:
    if not sqlalchemy.inspect(engine).has_table("studies"):
        return []
    with engine.connect() as conn:
        rows = conn.execute(sqlalchemy.text("SELECT study_id, study_name FROM studies ORDER BY study_name"))
        return [StudyRow(int(r[0]), r[1]) for r in rows]


def state_counts(engine, study_id: int) -> dict[str, int]:
    """Count the trials of a study by state: ``{"COMPLETE": 4, "PRUNED": 2, ...}``.

    Every state appears in the result, with 0 where the study has none.
    """
    counts = {s: 0 for s in ("RUNNING", "WAITING", "COMPLETE", "PRUNED", "FAIL")}
    with engine.connect() as conn:
        rows = conn.execute(
            sqlalchemy.text("SELECT state, count(*) FROM trials WHERE study_id = :sid GROUP BY state"),
            {"sid": study_id},
        )
        for state, n in rows:
            counts[str(state)] = int(n)
    return counts
