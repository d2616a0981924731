"""The root of hpsearch's exception hierarchy and the storage errors.

The root lives in ``storage`` because ``search`` depends on ``storage`` and never the other
way round; ``search.errors`` builds the search-side errors on it. :func:`is_transient` tells
a lost connection (worth retrying) from a bad statement.

Every error carries the exit code the CLI uses for it: 2 for input the user can fix (a bad
flag, URL or file), 1 for the environment failing (a database that stops answering).
"""

from __future__ import annotations

__all__ = ["HpsearchError", "StorageError", "StorageConfigError", "StudyNotFoundError", "TrialNotFoundError", "is_transient"]


class HpsearchError(Exception):
    """Root of every error hpsearch raises on purpose.

    The message is one line that names what is wrong and how to fix it; the CLI prints it
    as it is and exits with ``exit_code``.
    """

    exit_code: int = 2


class StorageConfigError(HpsearchError):
    """A storage URL or storage setting the user gave is malformed or unsupported."""


class StorageError(HpsearchError):
    """The database could not be reached or refused an operation."""

    exit_code = 2


class StudyNotFoundError(HpsearchError):
    """A command named a study that the storage does not hold."""


class TrialNotFoundError(HpsearchError):
    """A command named a trial number that the study does not hold."""


def is_transient(exc: BaseException) -> bool:
    """Is ``exc`` a lost or refused connection (worth retrying), not a bad statement?"""
    import optuna
    from sqlalchemy import exc as sa_exc

    if isinstance(exc, StorageError):
        return bool(getattr(exc, "transient", False))
    if isinstance(exc, optuna.exceptions.StorageInternalError):
        exc = exc.__cause__ or exc
    if isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.DisconnectionError)):
        return True
    if isinstance(exc, sa_exc.PendingRollbackError) and str(exc).startswith("Can't reconnect until invalid"):
        # The connection was lost inside a transaction that Optuna went on using (its
        # _get_trials falls back to another query in the same session): a lost connection too,
        # and Optuna rolls the session back, so a retry works (issue 25, a killed server).
        return True
    return isinstance(exc, sa_exc.DBAPIError) and bool(exc.connection_invalidated)
