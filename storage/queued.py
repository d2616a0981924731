"""The learning rate of a queued (WAITING) trial, which Optuna keeps outside ``trial_params``.

An enqueued trial's parameters live in its system attribute ``fixed_params`` until a worker
takes it, so the trial rows showed an empty ``learning_rate`` for the recipe's queued rates
(issue 15). This fills them in from there, in one query.
"""

from __future__ import annotations

import dataclasses
import json

import sqlalchemy

__all__ = ["with_queued_rates"]


def with_queued_rates(conn, study_id: int, rows: list, param: str = "learning_rate") -> list:
    """``rows`` with each WAITING row's ``learning_rate`` taken from its ``fixed_params``."""
    missing = {r.number for r in rows if r.state == "WAITING" and getattr(r, param) is None}
    if not missing:
        return rows
    found = {}
    for number, value in conn.execute(
        sqlalchemy.text(
            "SELECT t.number, a.value_json FROM trials t JOIN trial_system_attributes a ON a.trial_id = t.trial_id "
            "WHERE t.study_id = :sid AND t.state = 'WAITING' AND a.key = 'fixed_params'"
        ),
        {"sid": study_id},
    ):
        try:
            rate = json.loads(value).get(param)
        except (ValueError, AttributeError):
            continue
        if isinstance(rate, (int, float)) and int(number) in missing:
            found[int(number)] = float(rate)
    return [dataclasses.replace(r, **{param: found[r.number]}) if r.number in found else r for r in rows]
