"""The root of hpsearch's exception hierarchy and the storage errors.

The root lives in ``storage`` because ``search`` depends on ``storage`` and never the other
way round; ``search.errors`` builds the search-side errors on it. :func:`is_transient` tells
a lost connection (worth retrying) from a bad statement.

Every error carries the exit code the CLI uses for it: 2 for input the user can fix (a bad
flag, URL or file), 1 for the environment failing (a database that stops answering).
"""

from __future__ import annotations

__all__ = ["HpsearchError", "StorageError", "StorageConfigError", "StudyNotFoundError", "TrialNotFoundError", "is_transient", "refusal", "slot_limit"]


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
    """Is ``exc`` a lost or refused connection (worth retrying), not a bad statement?

    A connection refused for its user, password or database (:func:`refusal`) is not: it
    stays refused. One refused because a connection limit is reached is: another process may
    give its connection back.
    """
    import optuna
    from sqlalchemy import exc as sa_exc

    if isinstance(exc, StorageError):
        return bool(getattr(exc, "transient", False))
    if isinstance(exc, optuna.exceptions.StorageInternalError):
        exc = exc.__cause__ or exc
    if isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.DisconnectionError)):
        return refusal(str(getattr(exc, "orig", None) or exc)) in (None, "slots")
    if isinstance(exc, sa_exc.PendingRollbackError) and str(exc).startswith("Can't reconnect until invalid"):
        # The connection was lost inside a transaction that Optuna went on using (its
        # _get_trials falls back to another query in the same session): a lost connection too,
        # and Optuna rolls the session back, so a retry works (issue 25, a killed server).
        return True
    return isinstance(exc, sa_exc.DBAPIError) and bool(exc.connection_invalidated)


#: What PostgreSQL says when it refuses a connection for want of a slot, and whose limit it is.
_NO_SLOT = (
    ("too many connections for role", "role"),
    ("too many connections for database", "database"),
    ("too many clients already", "server"),
    ("remaining connection slots are reserved", "server"),
)


def slot_limit(detail: str) -> str | None:
    """Whose connection limit refused a connection: ``"role"``, ``"database"``, ``"server"``, or None."""
    low = detail.lower()
    return next((who for text, who in _NO_SLOT if text in low), None)


def refusal(detail: str) -> str | None:
    """Why the server refused a connection, from the driver's message: ``"slots"`` (a
    connection limit is reached), ``"login"`` (user or password) or ``"database"`` (none of
    that name); None for anything else."""
    if slot_limit(detail) is not None:
        return "slots"
    low = detail.lower()
    if "password authentication failed" in low or "no password supplied" in low or ("role" in low and "does not exist" in low):
        return "login"
    if "does not exist" in low and "database" in low:
        return "database"
    return None

