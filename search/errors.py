"""hpsearch's errors, and the fate of a failed trial.

A trial that fails meets one of three fates (as in KerasTuner):

* :class:`TrialConfigError`: not worth retrying; the configuration itself is bad. The trial
  is marked FAIL with the reason and the worker goes on.
* :class:`TrialEnvironmentError`: the environment failed (out of memory, the database
  dropped, the worker was interrupted). The trial is marked FAIL and its parameters are
  enqueued again so the point is retried.
* :class:`WorkerFatalError` (and every :class:`HpsearchError` raised before training, such as
  :class:`DataError`): nothing the next trial does would succeed; the worker stops.

The worker also stops after ``MAX_CONSECUTIVE_FAILURES`` failed trials in a row, so a broken
worker does not burn the study's budget.
"""

from __future__ import annotations

from storage.errors import HpsearchError, StorageConfigError, StorageError, StudyNotFoundError

__all__ = [
    "HpsearchError",
    "ConfigError",
    "DataError",
    "StorageConfigError",
    "StorageError",
    "StudyNotFoundError",
    "TrialConfigError",
    "TrialEnvironmentError",
    "WorkerFatalError",
    "WorkerInterrupted",
]


class ConfigError(HpsearchError):
    """A flag or environment variable has a value hpsearch cannot use."""


class DataError(HpsearchError):
    """The MNIST data is missing, unreadable, or not in a layout hpsearch reads."""


class TrialConfigError(HpsearchError):
    """A trial failed because of its own configuration: do not retry it."""


class TrialEnvironmentError(HpsearchError):
    """A trial failed because of its environment: retry its parameters."""

    exit_code = 1


class WorkerFatalError(HpsearchError):
    """The worker cannot run any trial (too many failures in a row, say).

    Exit code 3, so a launcher tells it from a crash (1) and does not restart it.
    """

    exit_code = 3


class WorkerInterrupted(HpsearchError):
    """The worker got SIGINT or SIGTERM; the running trial was closed and the worker exits.

    Exit code 128 + the signal's number, as a shell reports it: 130 for SIGINT, 143 for SIGTERM.
    """

    exit_code = 130

    def __init__(self, message: str):
        super().__init__(message)
        if "SIGTERM" in message:
            self.exit_code = 143
