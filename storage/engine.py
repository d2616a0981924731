"""Open Optuna's RDBStorage with the engine settings a fleet of workers needs.

Optuna turns ``pool_pre_ping`` on for MySQL only; a worker that trains for minutes between
storage calls finds its pooled PostgreSQL connection closed by a proxy or a restart, so we
turn it on for PostgreSQL too, keep the pool small (each worker needs two connections: one
for Optuna, one for hpsearch's advisory locks; optuna#1347 is what many processes with
Optuna's default pool of 5 + 10 do to ``max_connections``), bound the connect wait, and
translate driver errors into one-line :class:`StorageError` messages with the password masked.
"""

from __future__ import annotations

from contextlib import contextmanager

from storage.errors import StorageError
from storage.url import ResolvedStorage, scrub

__all__ = ["open_storage", "study_lock", "connect_error", "CONNECT_TIMEOUT_S", "HEARTBEAT_INTERVAL_S", "GRACE_PERIOD_S"]

#: Seconds to wait for a database that does not answer before giving up.
CONNECT_TIMEOUT_S = 5
#: A running trial writes a heartbeat this often; a trial whose heartbeat is older than the
#: grace period is taken for dead (its worker crashed) and failed, freeing its slot.
HEARTBEAT_INTERVAL_S = 30
GRACE_PERIOD_S = 120


def _engine_kwargs(resolved: ResolvedStorage) -> dict:
    if resolved.is_postgresql:
        return {
            "pool_size": 2,
            "max_overflow": 3,
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
            if resolved.is_postgresql:
                with _xact_lock(conn, _SCHEMA_LOCK_KEY):
                    storage = _make_rdb(resolved, kwargs, heartbeat)
            else:
                conn.exec_driver_sql("select 1")
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
                hb = {
                    "heartbeat_interval": HEARTBEAT_INTERVAL_S,
                    "grace_period": GRACE_PERIOD_S,
                    "heartbeat_stale_trial_callback": optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=2),
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

    import sqlalchemy

    engine = storage.engine
    if engine.dialect.name != "postgresql":
        yield
        return
    digest = hashlib.sha256(f"{purpose}\0{study_name}".encode()).digest()
    key = int.from_bytes(digest[:4], "big", signed=True) or 1
    with engine.connect() as conn:
        with _xact_lock(conn, key):
            yield

