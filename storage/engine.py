"""Open Optuna's RDBStorage with the engine settings a fleet of workers needs.

Optuna turns ``pool_pre_ping`` on for MySQL only; a worker that trains for minutes between
storage calls finds its pooled PostgreSQL connection closed by a proxy or a restart, so we
turn it on for PostgreSQL too, keep the pool small (each worker needs two connections: one
for Optuna, one for hpsearch's advisory locks; optuna#1347 is what many processes with
Optuna's default pool of 5 + 10 do to ``max_connections``), bound the connect wait, and
translate driver errors into one-line :class:`StorageError` messages with the password masked.
"""

from __future__ import annotations

import os
from contextlib import contextmanager

from storage.errors import StorageConfigError, StorageError
from storage.url import ResolvedStorage, scrub

__all__ = ["open_storage", "study_lock", "retrying", "heartbeat_settings", "check_environment", "connect_error", "CONNECT_TIMEOUT_S", "HEARTBEAT_INTERVAL_S", "GRACE_PERIOD_S"]

#: Seconds to wait for a database that does not answer before giving up.
CONNECT_TIMEOUT_S = 5
#: A running trial writes a heartbeat this often; a trial whose heartbeat is older than the
#: grace period is taken for dead (its worker crashed) and failed, freeing its slot.
#: ``HPSEARCH_HEARTBEAT_S`` and ``HPSEARCH_GRACE_S`` override them (tests use seconds).
HEARTBEAT_INTERVAL_S = 30
GRACE_PERIOD_S = 120
#: How long storage calls are retried (with back-off) while the database is unreachable,
#: before the worker gives up; ``HPSEARCH_DB_RETRY_S`` overrides it.
DB_RETRY_S = 60.0


def _env_number(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise StorageConfigError(f"{name}={raw!r} is not a number of seconds: set it to a positive number or unset it") from None
    if not value > 0:
        raise StorageConfigError(f"{name}={raw!r} must be a positive number of seconds")
    return value


def heartbeat_settings() -> tuple[int, int]:
    """The heartbeat interval and grace period in seconds, from the environment or defaults."""
    interval = int(_env_number("HPSEARCH_HEARTBEAT_S", HEARTBEAT_INTERVAL_S))
    grace = int(_env_number("HPSEARCH_GRACE_S", GRACE_PERIOD_S))
    if grace <= interval:
        raise StorageConfigError(
            f"HPSEARCH_GRACE_S ({grace}) must exceed HPSEARCH_HEARTBEAT_S ({interval}), or live workers' trials are failed"
        )
    return max(1, interval), grace


def check_environment() -> None:
    """Validate the storage timing variables up front, before anything is written.

    Raises:
        StorageConfigError: a variable is not a positive number, or the grace period is not
            longer than the heartbeat interval.
    """
    heartbeat_settings()
    _env_number("HPSEARCH_DB_RETRY_S", DB_RETRY_S)


def _transient(exc: BaseException) -> bool:
    """Is ``exc`` a lost or refused connection (worth retrying), not a bad statement?"""
    import optuna
    from sqlalchemy import exc as sa_exc

    if isinstance(exc, optuna.exceptions.StorageInternalError):
        exc = exc.__cause__ or exc
    if isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.DisconnectionError)):
        return True
    return isinstance(exc, sa_exc.DBAPIError) and bool(exc.connection_invalidated)


def retrying(fn, *args, what: str, limit_s: float | None = None, log=None, **kwargs):
    """Call ``fn(*args, **kwargs)``, retrying with back-off while the database is unreachable.

    Waits 0.5 s, 1 s, 2 s ... (at most 8 s) between tries, for ``limit_s`` seconds in all
    (default ``HPSEARCH_DB_RETRY_S`` or 60). A statement the database rejects is not retried.

    Raises:
        StorageError: the database stayed unreachable for ``limit_s`` seconds.
    """
    import time

    limit = limit_s if limit_s is not None else _env_number("HPSEARCH_DB_RETRY_S", DB_RETRY_S)
    deadline = time.monotonic() + limit
    delay = 0.5
    warned = False
    while True:
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            if not _transient(e):
                raise
            if time.monotonic() + delay > deadline:
                cause = e.__cause__ if e.__cause__ is not None else e
                detail = " ".join(str(getattr(cause, "orig", cause)).split())[:160]
                raise StorageError(
                    f"the database did not answer for {limit:g} s while {what} ({detail}): check the server and rerun; finished trials are kept (HPSEARCH_DB_RETRY_S sets the wait)"
                ) from None
            if log is not None and not warned:
                log.warning("database unreachable while %s; retrying for up to %g s", what, limit)
                warned = True
            time.sleep(delay)
            delay = min(delay * 2, 8.0)


def _engine_kwargs(resolved: ResolvedStorage) -> dict:
    if resolved.is_postgresql:
        # At most 2 connections per process: the main thread's, and the heartbeat thread's
        # while a trial trains (or the advisory lock's while a trial is claimed). A third
        # caller waits for one instead of opening more (optuna#1347).
        return {
            "pool_size": 2,
            "max_overflow": 0,
            "pool_timeout": 60,
            "pool_pre_ping": True,
            "pool_recycle": 1800,
            "connect_args": {"connect_timeout": CONNECT_TIMEOUT_S, "application_name": "hpsearch"},
        }
    # SQLite: wait for the file lock rather than failing at once ("database is locked").
    return {"connect_args": {"timeout": 30}}


def connect_error(resolved: ResolvedStorage, exc: BaseException) -> StorageError:
    """Turn a driver exception into a one-line StorageError that never shows the password."""
    orig = getattr(exc, "orig", None) or exc
    detail = " ".join(str(orig).split()) or type(orig).__name__
    detail = scrub(detail, resolved.url)
    hint = "check the host, port, user, password and database name, and that the server is running"
    low = detail.lower()
    if "password authentication failed" in low or "no password supplied" in low:
        hint = "check the user and password in the storage URL"
    elif "does not exist" in low and "database" in low:
        hint = "create the database (createdb NAME) or fix its name in the storage URL"
    elif "timeout" in low or "timed out" in low:
        hint = f"no answer within {CONNECT_TIMEOUT_S} s: check the host and port and any firewall"
    elif "unable to open database file" in low:
        hint = "check that the SQLite file's directory exists and is writable"
    return StorageError(f"cannot use storage {resolved.masked} ({detail}): {hint}")


def open_storage(resolved: ResolvedStorage, *, heartbeat: bool = True):
    """Return an ``optuna.storages.RDBStorage`` for ``resolved``, schema created if missing.

    Checks the connection first with a bounded wait, so an unreachable database fails within
    ``CONNECT_TIMEOUT_S`` seconds with a clear message instead of hanging. Concurrent first
    starts against an empty PostgreSQL database are serialised by an advisory lock, since
    Optuna's table creation is not safe to run from several processes at once.

    Raises:
        StorageError: the database cannot be reached, or refuses the connection.
    """
    import sqlalchemy
    from sqlalchemy.exc import SQLAlchemyError

    kwargs = _engine_kwargs(resolved)
    probe = sqlalchemy.create_engine(resolved.url, poolclass=sqlalchemy.pool.NullPool, connect_args=kwargs["connect_args"])
    try:
        with probe.connect() as conn:
            from storage.schema import check_schema

            if resolved.is_postgresql:
                with _xact_lock(conn, _SCHEMA_LOCK_KEY):
                    check_schema(conn, resolved.masked)
                    storage = _make_rdb(resolved, kwargs, heartbeat)
            else:
                conn.exec_driver_sql("select 1")
                check_schema(conn, resolved.masked)
                conn.commit()  # end the inspection's transaction before Optuna opens its own
                storage = _make_rdb(resolved, kwargs, heartbeat)
    except StorageError:
        raise
    except (SQLAlchemyError, OSError) as e:
        raise connect_error(resolved, e) from None
    finally:
        probe.dispose()
    return storage


def _make_rdb(resolved: ResolvedStorage, kwargs: dict, heartbeat: bool):
    import warnings

    import optuna
    from sqlalchemy.exc import SQLAlchemyError

    # Heartbeats are "experimental" in Optuna since 2.9 and warn that they are meant for
    # Study.optimize; hpsearch records them itself around ask/tell (search.worker._Heartbeat).
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            hb = {}
            if heartbeat:
                # A trial whose worker died is failed once its heartbeat is stale, and its
                # parameters are enqueued again (at most twice), so a crash costs time, not
                # a learning rate.
                from storage.stale import StaleTrialCallback

                interval, grace = heartbeat_settings()
                hb = {
                    "heartbeat_interval": interval,
                    "grace_period": grace,
                    # Optuna's RetryHeartbeatStaleTrialCallback, recording the fail_reason first.
                    "heartbeat_stale_trial_callback": StaleTrialCallback(max_retry=2),
                }
            return optuna.storages.RDBStorage(resolved.url, engine_kwargs=kwargs, **hb)
    except SQLAlchemyError as e:
        raise connect_error(resolved, e) from None
    except RuntimeError as e:
        # Optuna raises RuntimeError for a schema written by another Optuna version; its own
        # message already names the `optuna storage upgrade` command.
        raise StorageError(scrub(" ".join(str(e).split()), resolved.url)) from None


# Advisory-lock keys: one constant "class" for hpsearch, and an object id per purpose/study.
_LOCK_CLASS = 0x4850  # "HP"
_SCHEMA_LOCK_KEY = 0


@contextmanager
def _xact_lock(conn, key: int):
    """Hold a transaction-level advisory lock on ``conn`` for the block (PostgreSQL)."""
    import sqlalchemy

    with conn.begin():
        conn.execute(sqlalchemy.text("SELECT pg_advisory_xact_lock(:c, :k)"), {"c": _LOCK_CLASS, "k": key})
        yield


@contextmanager
def study_lock(storage, study_name: str, purpose: str = "study"):
    """Serialise a critical section per study across every process that shares the database.

    On PostgreSQL this is a transaction-level advisory lock: it is released when the block
    ends, and also when the holder dies (its connection closes), so a crashed worker never
    leaves the study locked. On SQLite (one worker only) the database's own write lock is
    enough and the block runs unguarded.
    """
    import hashlib

    engine = storage.engine
    if engine.dialect.name != "postgresql":
        yield
        return
    digest = hashlib.sha256(f"{purpose}\0{study_name}".encode()).digest()
    key = int.from_bytes(digest[:4], "big", signed=True) or 1
    with engine.connect() as conn:
        with _xact_lock(conn, key):
            yield

