"""Trials in a study that hpsearch did not make (a user's own objective on the same study).

A study is an ordinary Optuna study, so a plain ``study.optimize`` may add trials to it. Such
a trial is *foreign*: it has a parameter other than hpsearch's one, or it finished without
that parameter (a plain objective that took one of hpsearch's queued trials and suggested
something else), or it runs without a heartbeat record (hpsearch records one as it claims a
trial, under the study's slot lock, so every trial of its own has one). Foreign trials never count toward ``--trials`` and are never reported as
hpsearch's results; these counts let callers tell the two apart in one SQL query.
"""

from __future__ import annotations

import sqlalchemy

from storage.tables import STATES

__all__ = ["OWN_ATTR", "foreign_counts", "own_counts"]

#: The trial system attribute a worker sets as it claims a trial of a user's model (whose
#: trials have parameters of their own): with ``param=None`` a trial is hpsearch's by this mark.
OWN_ATTR = "hpsearch:own"


#: A trial is foreign when this holds (``t`` the trial, ``:param`` hpsearch's parameter).
_FOREIGN = (
    "(EXISTS (SELECT 1 FROM trial_params p WHERE p.trial_id = t.trial_id AND p.param_name <> :param)"
    " OR (t.state IN ('COMPLETE', 'PRUNED')"
    " AND NOT EXISTS (SELECT 1 FROM trial_params p WHERE p.trial_id = t.trial_id AND p.param_name = :param))"
    " OR (t.state = 'RUNNING' AND NOT EXISTS (SELECT 1 FROM trial_heartbeats h WHERE h.trial_id = t.trial_id)))"
)
#: The same with ``param=None`` (a user's model): a trial is foreign unless it carries OWN_ATTR
#: (a WAITING trial is hpsearch's: it enqueued it).
_FOREIGN_UNMARKED = (
    "(t.state <> 'WAITING' AND NOT EXISTS (SELECT 1 FROM trial_system_attributes a"
    " WHERE a.trial_id = t.trial_id AND a.key = '" + OWN_ATTR + "'))"
)
_BY_STATE = "SELECT t.state, count(*) FROM trials t WHERE t.study_id = :sid AND {cond} GROUP BY t.state"


def _counts(engine, sql: str, study_id: int, param: str) -> dict[str, int]:
    counts = {s: 0 for s in STATES}
    with getattr(engine, "engine", engine).connect() as conn:
        for state, n in conn.execute(sqlalchemy.text(sql), {"sid": study_id, "param": param}):
            counts[str(state)] = int(n)
    return counts


def foreign_counts(engine, study_id: int, param: str | None = "learning_rate") -> dict[str, int]:
    """Count the study's foreign trials by state (every state present, 0 where none)."""
    return _counts(engine, _BY_STATE.format(cond=_FOREIGN if param else _FOREIGN_UNMARKED), study_id, param)


def own_counts(engine, study_id: int, param: str | None = "learning_rate") -> dict[str, int]:
    """Count the study's trials by state, leaving out foreign ones (see the module docstring).

    ``param``: hpsearch's one parameter (the recipe's learning rate); None for a user's model,
    whose trials carry :data:`OWN_ATTR` instead.
    """
    return _counts(engine, _BY_STATE.format(cond=f"NOT {_FOREIGN if param else _FOREIGN_UNMARKED}"), study_id, param)
