"""The one retry policy: how often a learning rate is tried again when its trials fail.

A trial that fails by its environment (out of memory, an interrupt, an unexpected error, a
worker that died) is queued again with the same parameters. Two places do that: the worker,
which records the failures it sees (``search.fleet.outcome.record``), and the stale-trial callback,
which fails the trials of dead workers (:mod:`storage.stale`). Both call :func:`requeue`, so
there is one count of attempts, the ``attempt`` user attribute that each retry carries, and
one cap, :data:`MAX_ATTEMPTS`. (They used to count apart: the worker's ``MAX_ATTEMPTS`` and
``max_retry=2`` of Optuna's retry callback, which counts its own ``retry_history`` only, so a
rate could be tried up to nine times.)

A retry resumes from the newest checkpoint its earlier attempts left (issue 24; the attempts
are found through :func:`earlier_attempts`). When a series of attempts ends without another
retry, its checkpoints are no longer needed: :func:`requeue` and :func:`drop_checkpoints`
remove them.

The policy lives in ``storage`` because the stale-trial callback does and ``storage`` never
imports ``search``; the worker imports it from here.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MAX_ATTEMPTS", "RETRY", "RetryPolicy", "drop_checkpoints", "earlier_attempts", "requeue", "retry_params"]

#: How often one learning rate is tried when its trials fail by the environment (the first
#: attempt included).
MAX_ATTEMPTS = 3


@dataclass(frozen=True)
class RetryPolicy:
    """Whether a failed trial is tried again, and what its retry records.

    Example:
        >>> RETRY.retry_attrs(trial, "interrupted by SIGTERM")   # None once MAX_ATTEMPTS is reached
        {'attempt': 2, 'retry_of': 7, 'retry_reason': 'interrupted by SIGTERM'}
    """

    max_attempts: int = MAX_ATTEMPTS

    @staticmethod
    def attempt(trial) -> int:
        """Which attempt at its parameters ``trial`` is (1 for a trial that is no retry)."""
        return int(trial.user_attrs.get("attempt", 1))

    def retry_attrs(self, trial, reason: str, params: dict | None = None) -> dict | None:
        """The user attributes of ``trial``'s retry, or None when it is not retried: its
        parameters (``params``, default ``trial.params``; see :func:`retry_params`) had their
        last attempt, or there are none (a trial that failed before it sampled anything: a
        fresh trial samples anyway)."""
        params = trial.params if params is None else params
        if not params or self.attempt(trial) >= self.max_attempts:
            return None
        attrs = {"attempt": self.attempt(trial) + 1, "retry_of": trial.number, "retry_reason": reason[:200]}
        if "source" in trial.user_attrs:  # a recipe rate stays labelled as one
            attrs["source"] = trial.user_attrs["source"]
        return attrs


RETRY = RetryPolicy()


def _system_attrs(study, trial) -> dict:
    import optuna

    # A running trial (optuna.Trial) does not show its system attributes; a frozen one does.
    if isinstance(trial, optuna.trial.FrozenTrial):
        return trial.system_attrs
    return study._storage.get_trial_system_attrs(trial._trial_id)


def retry_params(study, trial) -> dict:
    """The parameters a retry of ``trial`` gets: those it sampled, else those it was queued
    with (``fixed_params``: a queued trial that failed before it sampled keeps its rate)."""
    return dict(trial.params) or dict(_system_attrs(study, trial).get("fixed_params") or {})


def requeue(study, trial, reason: str, policy: RetryPolicy = RETRY) -> bool:
    """Queue ``trial``'s parameters again if ``policy`` allows; True if queued.

    The retry is a WAITING trial as ``study.enqueue_trial`` makes one (the parameters in
    ``fixed_params``, where the queries read a queued rate), and it carries Optuna's own
    retry attributes (``failed_trial``: the first trial of the series; ``retry_history``), as
    ``RetryHeartbeatStaleTrialCallback`` writes them.
    """
    import optuna

    params = retry_params(study, trial)
    attrs = policy.retry_attrs(trial, reason, params)
    if attrs is None:
        drop_checkpoints(study, trial)  # no later attempt will resume from them
        return False
    earlier = _system_attrs(study, trial)
    history = [*earlier.get("retry_history", []), trial.number]
    system = {
        "fixed_params": params,
        "failed_trial": earlier.get("failed_trial", trial.number),
        "retry_history": history,
    }
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.WAITING, system_attrs=system, user_attrs=attrs))
    return True


def earlier_attempts(study, trial) -> list[int]:
    """The trial ids of the earlier attempts at ``trial``'s parameters, oldest first (none for
    a trial that is no retry): those whose checkpoints a retry may resume from."""
    numbers = _system_attrs(study, trial).get("retry_history") or []
    storage = study._storage
    return [storage.get_trial_id_from_study_id_trial_number(study._study_id, int(n)) for n in numbers]


def drop_checkpoints(study, trial) -> int:
    """Remove the checkpoints of ``trial`` and its earlier attempts (the series ended); return
    how many there were. Never raises: a checkpoint left behind wastes space, nothing more."""
    from storage.checkpoints import delete_checkpoints

    backend = getattr(study._storage, "_backend", study._storage)  # Optuna wraps RDBStorage in a cache
    engine = getattr(backend, "engine", None)
    if engine is None:
        return 0
    try:
        return delete_checkpoints(engine, [*earlier_attempts(study, trial), trial._trial_id])
    except Exception:
        return 0
