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
worker does not burn the study's budget. :func:`search.fleet.outcome.classify` turns each of these
(and every other exception a trial can end with) into the trial's outcome.

Each error type carries the exit code a command ends with (:func:`exit_code`), so a launcher
reads what happened from the code alone:

====  =====================================================================================
0     done
1     :data:`EXIT_CRASHED`: an internal error (a bug), or an environment failure the worker
      could not get past; a launcher restarts the worker
2     :class:`HpsearchError`'s default: a flag, the data or the database is wrong; rerunning
      the same command fails the same way
3     :data:`EXIT_FATAL`: :class:`WorkerFatalError`, the worker stopped (too many failed
      trials in a row); a launcher does not restart it
128+N :class:`WorkerInterrupted` by signal N: 130 for SIGINT, 143 for SIGTERM, as a shell
      reports a process killed by it
====  =====================================================================================
"""

from __future__ import annotations

import re
import signal

from storage.errors import HpsearchError

__all__ = [
    "EXIT_CRASHED",
    "EXIT_FATAL",
    "exit_code",
    "ConfigError",
    "DataError",
    "TrialConfigError",
    "TrialEnvironmentError",
    "WorkerFatalError",
    "WorkerInterrupted",
    "ObjectiveNotLoggedError",
    "one_line",
    "trial_error",
]


#: A command that crashed: an internal error, or an environment failure it could not get past.
EXIT_CRASHED = 1
#: A worker that stopped for good (:class:`WorkerFatalError`): restarting it would not help.
EXIT_FATAL = 3


class ConfigError(HpsearchError):
    """A flag or environment variable has a value hpsearch cannot use."""


class DataError(HpsearchError):
    """The MNIST data is missing, unreadable, or not in a layout hpsearch reads."""


class TrialConfigError(HpsearchError):
    """A trial failed because of its own configuration: do not retry it."""


class TrialEnvironmentError(HpsearchError):
    """A trial failed because of its environment: retry its parameters."""

    exit_code = EXIT_CRASHED


class WorkerFatalError(HpsearchError):
    """The worker cannot run any trial (too many failures in a row, say).

    Exit code :data:`EXIT_FATAL`, so a launcher tells it from a crash and does not restart it.
    """

    exit_code = EXIT_FATAL


class WorkerInterrupted(HpsearchError):
    """The worker got SIGINT or SIGTERM; the running trial was closed and the worker exits.

    Exit code 128 + the signal's number, as a shell reports it: 130 for SIGINT, 143 for SIGTERM.

    Args:
        signum: the signal that arrived.
        detail: what follows ``interrupted by SIGxxx`` in the message, if anything.
    """

    def __init__(self, signum: int = signal.SIGINT, detail: str = ""):
        self.signum, self.detail = int(signum), detail
        self.exit_code = 128 + self.signum
        super().__init__(f"interrupted by {signal.Signals(signum).name}" + (f"; {detail}" if detail else ""))

    def __reduce__(self):  # built from the signal, not the message
        return type(self), (self.signum, self.detail)


def exit_code(error: BaseException) -> int:
    """The exit code a command that ended with ``error`` returns (see the table above)."""
    if isinstance(error, HpsearchError):
        return error.exit_code
    if isinstance(error, KeyboardInterrupt):
        return WorkerInterrupted(signal.SIGINT).exit_code
    return EXIT_CRASHED


class ObjectiveNotLoggedError(ConfigError):
    """The study's ``--objective`` is not among a trial's epoch logs: no trial of the study can
    report it, so the worker stops and the trial is not retried."""


#: A terminal's colour or weight code, as Keras 3 writes them into its errors' text (``\x1b[1m``).
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def one_line(text, limit: int) -> str:
    """``text`` on one line (runs of whitespace made one space, terminal codes dropped), cut at ``limit`` characters."""
    return " ".join(_ANSI.sub("", str(text)).split())[:limit]


def _is_out_of_memory(exc: BaseException) -> bool:
    text = f"{type(exc).__name__} {exc}".lower()
    return "resourceexhausted" in text or "out of memory" in text or "oom" in text.split()


def trial_error(e: Exception, number: int, batch_size: int) -> Exception:
    """The error a failed fit becomes: out of memory is the environment's, bad shapes and
    settings the configuration's; anything else stays what it was."""
    if _is_out_of_memory(e):
        return TrialEnvironmentError(f"trial {number} ran out of device memory at batch size {batch_size}")
    if isinstance(e, (ValueError, TypeError)):
        # Keras raises these for shapes and settings that no retry will fix.
        return TrialConfigError(f"trial {number} cannot train: {type(e).__name__}: {one_line(e, 300)}")
    return e
