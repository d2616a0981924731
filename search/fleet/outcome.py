"""What the end of a trial means, decided in one place, and recorded in one place.

A trial ends by returning its value or by raising. :func:`classify` maps every way it can
end to one :class:`Outcome` (as KerasTuner's ``base_tuner`` decides a failed trial's fate in
one place): what Optuna is told, whether the learning rate is tried again, whether the worker
stops, and the reason kept in ``fail_reason``. :func:`record` then tells Optuna, once, and
queues the retry through the one retry policy (:mod:`storage.retry`, which the stale-trial
callback shares). Solo trials (:func:`settle`) and lane trials (the lanes loop of
:mod:`search.fleet.worker`) both end here.

=================  ==========  =====  =====  ===============================================
what ended it      told        retry  stops  why
=================  ==========  =====  =====  ===============================================
its value          COMPLETE    no     no
TrialPruned        PRUNED      no     no     the pruner, or a diverged loss (NaN/inf): TPE
                                             learns from it; the history is kept
TrialConfigError   FAIL        no     no     Keras rejects a shape or setting: no retry fixes it
TrialEnvironment-  FAIL        yes    no     out of device memory: the environment's fault
Error
another exception  FAIL        yes    no     a bug or a backend error of this trial; logged
                                             with its traceback
SIGINT/SIGTERM     FAIL        yes    yes    the worker exits 128 + the signal
StorageError       (nothing)   --     yes    the database stayed away: recording would only
                                             wait again; once it is back, the stale-trial
                                             sweep fails the trial and retries it
UpdateFinished-    (nothing)   --     no     another worker's sweep already failed the trial
TrialError                                   (this one's heartbeat was silent past the grace
                                             period) and queued its retry: one line, go on
another Hpsearch-  FAIL        yes    yes    the worker cannot go on (WorkerFatalError, ...)
Error, SystemExit
=================  ==========  =====  =====  ===============================================
"""

from __future__ import annotations

import logging
import signal
from dataclasses import dataclass

from search.errors import ObjectiveNotLoggedError, TrialConfigError, TrialEnvironmentError, WorkerInterrupted, one_line, trial_error
from storage import RETRY, requeue
from storage.retry import drop_checkpoints
from storage.errors import HpsearchError, StorageError

__all__ = ["Outcome", "classify", "lanes_failure", "record", "settle", "stopped"]

log = logging.getLogger("hpsearch.worker")

#: Characters of a reason kept in ``fail_reason`` (the retry's ``retry_reason`` keeps 200).
REASON_CHARS = 500


@dataclass(frozen=True)
class Outcome:
    """How a trial ended, and what follows from it.

    Attributes:
        state: what the trial becomes: ``"complete"``, ``"pruned"``, ``"failed"``, or
            ``"unrecorded"`` (left RUNNING for the stale-trial sweep: the database is away).
        retry: queue its parameters again, as the retry policy allows.
        fatal: the worker stops once it is recorded; the error is raised on.
        reason: why it failed (its ``fail_reason``), or None.
        kind: the fate's name: ``complete``, ``pruned``, ``config``, ``environment``,
            ``error`` (unexpected), ``interrupted``, ``database``, ``fatal``, ``stopped``.
        value: the value a complete trial returned.
    """

    state: str
    retry: bool = False
    fatal: bool = False
    reason: str | None = None
    kind: str = ""
    value: float | None = None


def classify(error: BaseException) -> Outcome:
    """The outcome of a trial whose training (or recording) raised ``error`` (the table above)."""
    import optuna

    if isinstance(error, optuna.TrialPruned):
        return Outcome("pruned", kind="pruned")
    if isinstance(error, KeyboardInterrupt):  # a SIGINT outside the worker's handler
        error = WorkerInterrupted(signal.SIGINT)
    if isinstance(error, WorkerInterrupted):
        return Outcome("failed", retry=True, fatal=True, reason=str(error), kind="interrupted")
    if isinstance(error, StorageError):
        return Outcome("unrecorded", fatal=True, reason=str(error), kind="database")
    if isinstance(error, optuna.exceptions.UpdateFinishedTrialError):
        return Outcome("lost", reason=SWEPT, kind="lost")
    if isinstance(error, TrialConfigError):
        return Outcome("failed", reason=str(error), kind="config")
    if isinstance(error, TrialEnvironmentError):
        return Outcome("failed", retry=True, reason=str(error), kind="environment")
    if isinstance(error, ObjectiveNotLoggedError):  # no trial of the study can report it: stop, retry nothing
        return Outcome("failed", fatal=True, reason=str(error), kind="config")
    if isinstance(error, HpsearchError):  # WorkerFatalError, DataError, ...: nothing later would succeed
        return Outcome("failed", retry=True, fatal=True, reason=str(error), kind="fatal")
    if not isinstance(error, Exception):  # SystemExit, GeneratorExit: the process is ending
        return Outcome("failed", retry=True, fatal=True, reason=f"{type(error).__name__}: {error}", kind="fatal")
    return Outcome("failed", retry=True, reason=f"{type(error).__name__}: {error}", kind="error")


def lanes_failure(error: BaseException, members: int, number: int, batch_size: int) -> Outcome:
    """The outcome of each member of a lanes model whose training step raised ``error``.

    The model is shared, so no member is to blame: each fails as an environment failure and
    is retried, whatever the error was, and the worker builds a new model.
    """
    failure = trial_error(error, number, batch_size) if isinstance(error, Exception) else error
    return Outcome("failed", retry=True, reason=f"the lanes model of {members} members failed: {type(failure).__name__}: {failure}", kind="environment")


def stopped(error: BaseException) -> Outcome:
    """The outcome of a trial that was still training when its worker stopped for ``error``."""
    return Outcome("failed", retry=True, fatal=True, reason=f"the worker stopped: {type(error).__name__}: {one_line(error, 200)}", kind="stopped")


#: Why a trial a stale-trial sweep failed under its worker is dropped (see :func:`classify`).
SWEPT = "a stale-trial sweep failed it while it trained (this worker's heartbeat was silent past the grace period); its retry runs elsewhere"


def _tell(study, trial, call, *, value=None, state=None) -> str:
    """Tell the trial's result, retrying while the database is away.

    If the database stayed away past the grace period, a sweep may already have failed (and
    re-enqueued) the trial; its result is then dropped rather than counted twice.
    """
    import optuna

    try:
        if state is None:
            call(study.tell, trial, value, what=f"telling the result of trial {trial.number}")
            return "complete"
        call(study.tell, trial, state=state, what=f"telling the result of trial {trial.number}")
        return "pruned"
    except optuna.exceptions.UpdateFinishedTrialError:
        log.warning("trial %s was failed by a stale-trial sweep while its result was on the way; it is retried", trial.number)
        return "lost"


def _fail(study, trial, outcome: Outcome, call) -> None:
    import optuna

    reason = outcome.reason or outcome.kind

    def fail():
        try:
            trial.set_user_attr("fail_reason", reason[:REASON_CHARS])
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            return  # a sweep already failed it (and re-enqueued it)
        if outcome.retry:
            requeue(study, trial, reason, RETRY)  # a retry resumes from the trial's checkpoint, if any
        else:
            drop_checkpoints(study, trial)  # no retry will: the series ends here

    try:
        call(fail, what=f"recording the failure of trial {trial.number}")
    except Exception as e:  # the database stayed away; the stale-trial sweep cleans up
        log.warning("could not record the failure of trial %s: %s", trial.number, type(e).__name__)


def record(study, trial, outcome: Outcome, call) -> str:
    """Record ``outcome`` of ``trial`` once; return the state it ended in.

    COMPLETE and PRUNED are told; a failure sets ``fail_reason``, is told FAIL and, when
    ``outcome.retry``, queues its parameters again as the retry policy allows. ``call(fn,
    *args, what=...)`` runs each storage call (the worker's retries while the database is
    away). Returns ``"complete"``, ``"pruned"``, ``"failed"``, ``"unrecorded"``, or
    ``"lost"``: a sweep failed the trial while its result was on the way (see :func:`_tell`).
    """
    import optuna

    if outcome.state == "complete":
        return _tell(study, trial, call, value=outcome.value)
    if outcome.state == "pruned":
        return _tell(study, trial, call, state=optuna.trial.TrialState.PRUNED)
    if outcome.state == "failed":
        _fail(study, trial, outcome, call)
    return outcome.state


def settle(study, trial, call, body) -> tuple[str, float | None]:
    """Run ``body`` (train ``trial``, return its value or raise), classify and record how it
    ended; return the state (see :func:`record`) and the value returned, if any.

    An outcome that stops the worker is raised on once recorded (a KeyboardInterrupt as
    :class:`WorkerInterrupted`).
    """
    try:
        value = body()
    except BaseException as e:
        outcome = classify(e)
        if outcome.kind == "error":
            log.error("trial %s failed", trial.number, exc_info=e)
        elif outcome.kind == "lost":
            log.warning("trial %s dropped: %s", trial.number, outcome.reason)
        state = record(study, trial, outcome, call)
        if not outcome.fatal:
            return state, None
        if isinstance(e, KeyboardInterrupt):
            raise WorkerInterrupted(signal.SIGINT) from None
        raise
    return record(study, trial, Outcome("complete", kind="complete", value=value), call), value
