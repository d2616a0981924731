"""What a trial failed by the stale-trial sweep records: why it failed.

Optuna fails a trial whose heartbeat went stale and hands it to a callback, by then already
finished, so ``set_trial_user_attr`` refuses it. The reason is written here directly, in
Optuna's own table, so that ``query trials`` and the dashboard show why the trial failed
(issue 15: a trial failed because its worker died had no ``fail_reason``).

The trial is then retried by the one retry policy (:mod:`storage.retry`), the worker's: the
same attempt count and cap, whichever of the two saw the failure.
"""

from __future__ import annotations

import json

import sqlalchemy

from storage.retry import RETRY, RetryPolicy, requeue, retry_params

__all__ = ["StaleTrialCallback", "record_fail_reason"]


def record_fail_reason(engine, trial_id: int, reason: str) -> None:
    """Set the user attribute ``fail_reason`` of a finished trial unless it has one."""
    with getattr(engine, "engine", engine).begin() as conn:
        exists = conn.execute(
            sqlalchemy.text("SELECT 1 FROM trial_user_attributes WHERE trial_id = :t AND key = 'fail_reason'"), {"t": trial_id}
        ).first()
        if exists is None:
            conn.execute(
                sqlalchemy.text("INSERT INTO trial_user_attributes (trial_id, key, value_json) VALUES (:t, 'fail_reason', :v)"),
                {"t": trial_id, "v": json.dumps(reason)},
            )


class StaleTrialCallback:
    """Record why a stale trial failed, then queue its parameters again as ``policy`` allows
    (as Optuna's ``RetryHeartbeatStaleTrialCallback`` does, with the worker's count)."""

    def __init__(self, policy: RetryPolicy = RETRY):
        self.policy = policy

    def __call__(self, study, trial) -> None:
        storage = getattr(study._storage, "_backend", study._storage)  # Optuna wraps RDBStorage in a cache
        grace = getattr(storage, "grace_period", None)
        retried = self.policy.retry_attrs(trial, "", retry_params(study, trial)) is not None
        then = "the learning rate is retried" if retried else f"its learning rate had its {self.policy.max_attempts} attempts"
        reason = f"its worker sent no heartbeat for over {grace} s (it died, or lost the database): {then}"
        try:
            record_fail_reason(storage.engine, trial._trial_id, reason)
        except sqlalchemy.exc.SQLAlchemyError:
            pass  # the reason is informative; the retry below matters more
        requeue(study, trial, reason, self.policy)
