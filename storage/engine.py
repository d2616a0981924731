"""The one engine factory, its pool policy, and the one boundary where driver errors end.

Optuna turns ``pool_pre_ping`` on for MySQL only; a worker that trains for minutes between
storage calls finds its pooled PostgreSQL connection closed by a proxy or a restart, so we
turn it on for PostgreSQL too, keep the pool small (each worker needs two connections: one
for Optuna, one for hpsearch's advisory locks; optuna#1347 is what many processes with
Optuna's default pool of 5 + 10 do to ``max_connections``), and bound the connect wait. The
same policy (:func:`engine_options`) serves Optuna's ``RDBStorage`` (:func:`open_storage`) and
the query engines (:func:`open_engine`).

Driver errors become :class:`StorageError` in one place, :func:`database_errors` (as Optuna's
``_create_scoped_session`` does): one line with the password masked, chained ``from`` the
driver error so that ``--debug`` shows it (``storage.url.scrub_traceback`` masks it there).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from storage.errors import HpsearchError, StorageConfigError, StorageError, is_transient, refusal, slot_limit
from storage.settings import DB_RETRY_S, GRACE_PERIOD_S, HEARTBEAT_INTERVAL_S, env_seconds
from storage.url import ResolvedStorage, scrub

__all__ = [
    "open_storage",
    "open_engine",
    "engine_options",
    "database_errors",
    "connection",
    "retrying",
    "heartbeat_settings",
    "check_environment",
    "connect_error",
    "driver_cause",
    "error_line",
    "storage_error_of",
    "CONNECT_TIMEOUT_S",
    "bounded_waits",
    "background_slot",
    "in_background_slot",
]

#: Seconds to wait for a database that does not answer before giving up.
CONNECT_TIMEOUT_S = 5

#: Seconds that sent data may stay unacknowledged before a connection is given up (libpq's
#: ``tcp_user_timeout``), and the keepalive probing of idle ones. Without them an established
#: connection across a silent network cut waits out TCP's retransmission back-off: after a 15 s
#: cut (deploy/e2e hosts) a worker's heartbeat stayed silent past the run's 25 s grace period
#: and its trial was failed (17.3 s with these settings, docs/faults.md); a peer
#: that is gone (a failover to another address) is waited on for about 15 minutes
#: (``tcp_retries2``). Given up, the connection is replaced by the pool's pre-ping and the
#: caller's retry (:func:`retrying`) within seconds of the network coming back. Ignored on
#: Unix sockets (the embedded server).
TCP_USER_TIMEOUT_S = 10


def heartbeat_settings() -> tuple[int, int]:
    """The heartbeat interval and grace period in seconds, from the environment or defaults."""
    interval = int(env_seconds("HPSEARCH_HEARTBEAT_S", HEARTBEAT_INTERVAL_S))
    grace = int(env_seconds("HPSEARCH_GRACE_S", GRACE_PERIOD_S))
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
    env_seconds("HPSEARCH_DB_RETRY_S", DB_RETRY_S)


# --- the boundary -------------------------------------------------------------------------


def connect_error(resolved: ResolvedStorage, exc: BaseException) -> StorageError:
    """Turn a driver exception into a one-line StorageError that never shows the password.

    The error's ``detail`` is the driver's message (masked) and ``transient`` says whether a
    retry may succeed (:func:`retrying` reads it).
    """
    orig = getattr(exc, "orig", None) or exc
    detail = " ".join(str(orig).split()) or type(orig).__name__
    detail = scrub(detail, resolved.url)
    hint = "check the host, port, user, password and database name, and that the server is running"
    low = detail.lower()
    transient = not isinstance(exc, OSError) and is_transient(exc)
    refused = refusal(detail)  # is_transient has it: "slots" is worth a retry, the others are not
    if refused == "slots":
        hint = _no_slot_hint(detail)
    elif refused == "login":
        hint = "check the user and password in the storage URL"
    elif refused == "database":
        hint = "create the database (createdb NAME) or fix its name in the storage URL"
    elif "timeout" in low or "timed out" in low:
        hint = f"no answer within {CONNECT_TIMEOUT_S} s: check the host and port and any firewall"
    elif "unable to open database file" in low:
        hint = "check that the SQLite file's directory exists and is writable"
    if not transient and _is_statement_error(exc):
        hint = "the database refused the statement: check that this is an Optuna storage (`optuna storage upgrade --storage URL` updates an old schema), or rerun with --debug"
    err = StorageError(f"cannot use storage {resolved.masked} ({detail}): {hint}")
    err.detail = detail
    err.transient = transient
    return err


def _no_slot_hint(detail: str) -> str:
    """The fix for a connection refused because a connection limit is reached (issue 25)."""
    import re

    named = re.search(r'for (?:role|database) "([^"]+)"', detail)
    name = named.group(1) if named else "NAME"
    raise_it = {
        "role": f"raise the role's limit (ALTER ROLE {name} CONNECTION LIMIT N)",
        "database": f"raise the database's limit (ALTER DATABASE {name} CONNECTION LIMIT N)",
        "server": "raise max_connections in postgresql.conf and restart the server",
    }[slot_limit(detail) or "server"]
    return f"{raise_it}, run fewer workers, or put PgBouncer in front; each hpsearch process holds at most 2 connections (README, \"Sizing connections\")"


def _is_statement_error(exc: BaseException) -> bool:
    from sqlalchemy import exc as sa_exc

    return isinstance(exc, (sa_exc.ProgrammingError, sa_exc.DataError, sa_exc.IntegrityError, sa_exc.InternalError, sa_exc.NotSupportedError))


def _resolved_of(target) -> ResolvedStorage:
    if isinstance(target, ResolvedStorage):
        return target
    engine = getattr(target, "engine", target)
    url = getattr(engine, "url", target)
    text = url if isinstance(url, str) else url.render_as_string(hide_password=False)
    return ResolvedStorage(text, "engine")


@contextmanager
def database_errors(target) -> Iterator[None]:
    """The boundary: a driver error raised in the block leaves it as a :class:`StorageError`.

    Args:
        target: what the block talks to: a :class:`ResolvedStorage`, an engine or an
            ``RDBStorage`` (its URL is what the message shows, masked).

    Raises:
        StorageError: chained ``from`` the driver error; hpsearch's own errors pass through.
    """
    from sqlalchemy.exc import SQLAlchemyError

    try:
        yield
    except HpsearchError:
        raise
    except (SQLAlchemyError, OSError) as e:
        raise connect_error(_resolved_of(target), e) from e
    except Exception as e:
        cause = driver_cause(e)
        if cause is None:
            raise
        raise connect_error(_resolved_of(target), cause) from e


def storage_error_of(exc: BaseException, url: str | None) -> StorageError | None:
    """The :class:`StorageError` for a driver error Optuna wrapped outside the boundary, else None.

    For the CLI's last line of defence: an Optuna call that no :func:`database_errors` block
    holds still ends in one line naming the cause, not in "internal error".

    Args:
        url: the storage URL the command used (its password is masked), or None (embedded).
    """
    cause = driver_cause(exc)
    if cause is None:
        return None
    return connect_error(ResolvedStorage(url or "the embedded PostgreSQL", "engine"), cause)


def error_line(exc: BaseException, limit: int = 200) -> str:
    """``exc`` in one line for a log: for a database error the driver's own message (psycopg2's
    "timeout expired", "could not receive data from server ..."), not Optuna's wrapper or
    SQLAlchemy's statement, parameters and link; else the error's name and text."""
    cause = driver_cause(exc) or exc
    cause = getattr(cause, "orig", None) or cause
    text = _driver_text(cause)[:limit]
    return f"{type(cause).__name__}: {text}" if text else type(cause).__name__


def _driver_text(exc: BaseException) -> str:
    """The message of ``exc`` on one line; of the driver's error where SQLAlchemy wraps one."""
    return " ".join(str(getattr(exc, "orig", None) or exc).split())


def driver_cause(exc: BaseException) -> BaseException | None:
    """The driver error inside Optuna's ``StorageInternalError``, else None.

    Optuna's sessions turn every SQLAlchemy error into ``StorageInternalError`` with a message
    about invalid data and max length (``_create_scoped_session``), whatever happened: a
    connection the server refused ("too many connections for role") read that way (issue 25).
    The cause says what happened.
    """
    import sys

    from sqlalchemy.exc import SQLAlchemyError

    optuna = sys.modules.get("optuna")  # not imported: nothing of Optuna's can have raised it
    if optuna is None or not isinstance(exc, optuna.exceptions.StorageInternalError):
        return None
    cause = exc.__cause__
    return cause if isinstance(cause, (SQLAlchemyError, OSError)) else None


@contextmanager
def connection(engine) -> Iterator:
    """A connection of ``engine`` (or of an ``RDBStorage``), inside :func:`database_errors`."""
    engine = getattr(engine, "engine", engine)
    with database_errors(engine), engine.connect() as conn:
        yield conn


def retrying(fn, *args, what: str, limit_s: float | None = None, log=None, **kwargs):
    """Call ``fn(*args, **kwargs)``, retrying with back-off while the database is unreachable.

    Waits 0.5 s, 1 s, 2 s ... (at most 8 s) between tries, for ``limit_s`` seconds in all
    (default ``HPSEARCH_DB_RETRY_S`` or 60). A statement the database rejects is not retried.
    An embedded server that died is started again rather than waited for
    (:func:`storage.embedded.restart_if_died`).

    Raises:
        StorageError: the database stayed unreachable for ``limit_s`` seconds.
    """
    import time

    limit = limit_s if limit_s is not None else env_seconds("HPSEARCH_DB_RETRY_S", DB_RETRY_S)
    deadline = time.monotonic() + limit
    delay = 0.5
    warned = False
    while True:
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            if not is_transient(e):
                raise
            if time.monotonic() + delay > deadline:
                detail = getattr(e, "detail", None)  # a StorageError's message; SQLAlchemy's errors have a list there
                if not isinstance(detail, str):
                    detail = _driver_text(e.__cause__ if e.__cause__ is not None else e)
                if slot_limit(detail) is not None:  # it answered: no connection was free for us
                    raise StorageError(
                        f"the database refused every connection for {limit:g} s while {what} ({detail[:160]}): {_no_slot_hint(detail)}; finished trials are kept (HPSEARCH_DB_RETRY_S sets the wait)"
                    ) from e
                raise StorageError(
                    f"the database did not answer for {limit:g} s while {what} ({detail[:160]}): check the server and rerun; finished trials are kept (HPSEARCH_DB_RETRY_S sets the wait)"
                ) from e
            from storage.embedded import restart_if_died

            if restart_if_died(log):  # our own embedded server died and is back: try again now
                continue
            if log is not None and not warned:
                log.warning("database unreachable while %s; retrying for up to %g s", what, limit)
                warned = True
            time.sleep(delay)
            delay = min(delay * 2, 8.0)


# --- the factory --------------------------------------------------------------------------


def engine_options(resolved: ResolvedStorage, *, read_only: bool = False) -> dict:
    """The one pool policy: keyword arguments for ``sqlalchemy.create_engine``.

    On PostgreSQL: at most 2 connections per engine (the main thread's, and the heartbeat
    thread's while a trial trains, or the advisory lock's while a trial is claimed); a third
    caller waits for one instead of opening more (optuna#1347). The background writers share
    one of them (:func:`background_slot`). Connections are checked before
    use and recycled every 30 minutes. ``read_only`` makes every transaction read-only.
    """
    if resolved.is_postgresql:
        _interruptible_waits()
        connect_args = {
            "connect_timeout": CONNECT_TIMEOUT_S,
            "application_name": "hpsearch-query" if read_only else "hpsearch",
            "tcp_user_timeout": TCP_USER_TIMEOUT_S * 1000,
            "keepalives": 1,
            "keepalives_idle": 30,
            "keepalives_interval": 5,
            "keepalives_count": 3,
        }
        if read_only:
            connect_args["options"] = "-c default_transaction_read_only=on"
        return {
            "pool_size": 2,
            "max_overflow": 0,
            "pool_timeout": 60,
            "pool_pre_ping": True,
            "pool_recycle": 1800,
            "connect_args": connect_args,
        }
    # SQLite: wait for the file lock rather than failing at once ("database is locked").
    return {"connect_args": {"timeout": 30}}


def _interruptible_waits() -> None:
    """Let Ctrl-C stop a statement that waits on the server.

    psycopg2 waits for a result inside libpq with no Python code running, so a SIGINT is acted
    on only when the statement returns: ``hpsearch query follow`` waiting on a lock another
    session held ignored Ctrl-C until that lock was released (25 s in a test, and a CI run
    where the process never exited). With a wait callback psycopg2 waits in Python
    (:func:`_wait_interruptibly`). Process-wide, set once; workers are unaffected, since their
    own signal handlers raise nothing during a storage call.
    """
    import psycopg2.extensions

    if psycopg2.extensions.get_wait_callback() is None:
        psycopg2.extensions.set_wait_callback(_wait_interruptibly)


_waits = threading.local()


@contextmanager
def bounded_waits(seconds: float) -> Iterator[None]:
    """In this thread, give up any wait on a PostgreSQL server (a connect, a statement, the
    pool's pre-ping) after ``seconds``, closing that connection, instead of waiting out TCP.

    For the heartbeat (:class:`search.fleet.worker._Heartbeat`): its statements are one-row
    writes, so one unanswered for seconds went out on a connection that is dead or cut off.
    Across a silent network cut such a wait lasted until ``TCP_USER_TIMEOUT_S`` (10 s) and
    the reconnect after it until ``CONNECT_TIMEOUT_S`` (5 s), past the moment the network came
    back (thread dumps through deploy/e2e hosts' cut, docs/faults.md). Given up after
    ``seconds``, the next beat opens a new connection that answers once the network is back. psycopg2 closes a connection whose wait
    callback raised, and SQLAlchemy then discards it from the pool. Other threads keep the
    usual bounds: a large write (a checkpoint) may legitimately wait for seconds.
    """
    previous = getattr(_waits, "limit", None)
    _waits.limit = seconds
    try:
        yield
    finally:
        _waits.limit = previous


#: One connection of a worker's two (:func:`engine_options`) for its background writers together.
_background = threading.BoundedSemaphore(1)


@contextmanager
def background_slot() -> Iterator[None]:
    """Hold the process's one slot for background writes while the block uses the database.

    A worker writes from two threads of its own besides the heartbeat: the deferred writes
    (each epoch's value and row, :mod:`search.train.deferred`) and the periodic checkpoints
    (:mod:`search.train.checkpoint`). Across a network cut each held one of the pool's 2
    connections in a wait of up to ``TCP_USER_TIMEOUT_S``, then in a reconnect, again and
    again, and the heartbeat waited for the pool behind them for the whole cut: no wait of its
    own ever started, so :func:`bounded_waits` could not help (``py-spy dump`` every 0.5 s
    through deploy/e2e hosts' 15 s cut: the heartbeat thread in ``QueuePool._do_get`` from 2 s
    into the cut until the link was back, docs/faults.md). Sharing one slot, the background
    writers hold at most one connection between them, and the other stays free for the
    heartbeat. The main thread takes it too for its calls while a trial trains (the pruner's
    question, the checkpoint reads), so a cut that catches one of them with a writer leaves the
    heartbeat its connection as well. Hold it for one attempt, not across a retry's sleeps
    (:func:`in_background_slot`), and never while waiting for another thread that takes it (a
    flush of the deferred writes): that would deadlock.
    """
    with _background:
        yield


def in_background_slot(fn):
    """``fn``, each call of it holding :func:`background_slot`; a retry wrapper around it
    (:func:`retrying`) releases the slot while it sleeps."""
    import functools

    @functools.wraps(fn)
    def call(*args, **kwargs):
        with _background:
            return fn(*args, **kwargs)

    return call


def _wait_interruptibly(conn) -> None:
    """psycopg2's ``wait_select``, except that a Ctrl-C stays a KeyboardInterrupt.

    ``wait_select`` cancels the statement on a KeyboardInterrupt and then raises the server's
    "canceling statement due to user request", which would read as a database error; here the
    statement is cancelled on the server as well, and the interrupt is raised once it is.
    """
    import select
    import time

    import psycopg2
    import psycopg2.extensions as ext

    # libpq ignores connect_timeout when the caller polls (PQconnectPoll), so a server that
    # accepts the connection and never answers would be waited for forever: keep the bound.
    deadline = None
    if conn.status == ext.STATUS_SETUP:
        limit = ext.parse_dsn(conn.dsn).get("connect_timeout")
        if limit and float(limit) > 0:
            deadline = time.monotonic() + float(limit)
    bound = getattr(_waits, "limit", None)  # bounded_waits: this thread gives up sooner
    if bound is not None:
        deadline = min(deadline or float("inf"), time.monotonic() + bound)
    interrupted = False
    while True:
        try:
            state = conn.poll()
            if state == ext.POLL_OK:
                break
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            if state == ext.POLL_READ:
                ready = select.select([conn.fileno()], [], [], timeout)[0]
            elif state == ext.POLL_WRITE:
                ready = select.select([], [conn.fileno()], [], timeout)[1]
            else:
                raise psycopg2.OperationalError(f"bad state from poll: {state}")
            if not ready and deadline is not None and time.monotonic() >= deadline:
                # psycopg2 closes the connection when this callback raises (its state is
                # unknown), so the pool discards it; "timeout expired" is libpq's own wording.
                raise psycopg2.OperationalError("timeout expired")
        except KeyboardInterrupt:
            conn.cancel()
            interrupted = True
        except ext.QueryCanceledError:
            if interrupted:
                raise KeyboardInterrupt from None
            raise
    if interrupted:
        raise KeyboardInterrupt


def open_engine(storage=None, *, read_only: bool = True):
    """Open a SQLAlchemy engine on a study storage, checking it answers.

    On PostgreSQL with ``read_only`` every transaction is read-only
    (``default_transaction_read_only``), so a query cannot write even by mistake. On SQLite
    the file is opened read-only, which also keeps a missing file from being created.

    Args:
        storage: a storage URL, a :class:`~storage.url.ResolvedStorage`, or ``None`` for the
            usual resolution (``OPTUNA_STORAGE``, else the embedded PostgreSQL).
        read_only: ``False`` for :func:`storage.create_views` and the schema check of
            :func:`open_storage`.

    Returns:
        A ``sqlalchemy.Engine``; pass it to the query functions. ``RDBStorage.engine`` works
        there too.

    Raises:
        StorageConfigError: the URL is malformed or names an unsupported driver.
        StorageError: the database cannot be reached.
    """
    import os

    import sqlalchemy
    from sqlalchemy.engine import make_url

    from storage.url import resolve_storage_url

    resolved = storage if isinstance(storage, ResolvedStorage) else resolve_storage_url(storage)
    url = resolved.url
    if resolved.is_sqlite and read_only:
        parsed = make_url(url)
        if not os.path.exists(parsed.database):
            raise StorageError(f"no SQLite file at {parsed.database!r}: check --storage (queries never create one)")
        url = parsed.set(database=f"file:{parsed.database}", query={"mode": "ro", "uri": "true"})
    engine = sqlalchemy.create_engine(url, **engine_options(resolved, read_only=read_only))
    try:
        with database_errors(resolved), engine.connect() as conn:
            conn.exec_driver_sql("select 1")
            from storage.schema import check_schema

            check_schema(conn, resolved.masked)  # a damaged schema: one line, not a driver error
    except StorageError:
        engine.dispose()
        raise
    return engine


def open_storage(resolved: ResolvedStorage, *, heartbeat: bool = True):
    """Return an ``optuna.storages.RDBStorage`` for ``resolved``, schema created if missing
    (Optuna's tables and hpsearch's epochs table, :mod:`storage.epochs`).

    Checks the connection first with a bounded wait, so an unreachable database fails within
    ``CONNECT_TIMEOUT_S`` seconds with a clear message instead of hanging. Concurrent first
    starts against an empty PostgreSQL database are serialised by an advisory lock, since
    Optuna's table creation is not safe to run from several processes at once.

    One pool serves all of it (:func:`engine_options`: 2 connections on PostgreSQL): the schema
    is checked and made on one of its connections, under the lock
    (:func:`storage.schema.create_schema`), and the ``RDBStorage`` made afterwards uses the same
    pool, so the process never holds more than 2 connections, and never closes one only to open
    another (a closed backend leaves PostgreSQL's count of a role's connections a moment late).

    Raises:
        StorageError: the database cannot be reached, or refuses the connection.
    """
    import sqlalchemy

    engine = sqlalchemy.create_engine(resolved.url, **engine_options(resolved))
    try:
        with database_errors(resolved):
            with engine.connect() as conn:
                from storage.locks import SCHEMA_LOCK_KEY, xact_lock
                from storage.schema import check_schema, create_schema, ensure_table, mark_ready

                if resolved.is_postgresql:
                    with xact_lock(conn, SCHEMA_LOCK_KEY):
                        check_schema(conn, resolved.masked)
                        create_schema(conn)
                else:
                    check_schema(conn, resolved.masked)
                    conn.commit()  # end the inspection's transaction before Optuna opens its own
            storage = _make_rdb(resolved, heartbeat, engine.pool)
            if resolved.is_postgresql:
                mark_ready(storage.engine)  # create_schema made the epochs table
            else:
                ensure_table(storage.engine)
    except BaseException:
        engine.dispose()
        raise
    return storage


def _make_rdb(resolved: ResolvedStorage, heartbeat: bool, pool):
    """Optuna's ``RDBStorage`` on ``pool``, the pool :func:`open_storage` checked the schema with."""
    import warnings

    import optuna

    # Heartbeats are "experimental" in Optuna since 2.9 and warn that they are meant for
    # Study.optimize; hpsearch records them itself around ask/tell (search.fleet.worker._Heartbeat).
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            hb = {}
            if heartbeat:
                # A trial whose worker died is failed once its heartbeat is stale, and its
                # parameters are enqueued again (storage.retry's policy, the worker's too),
                # so a crash costs time, not a learning rate.
                from storage.stale import StaleTrialCallback

                interval, grace = heartbeat_settings()
                hb = {
                    "heartbeat_interval": interval,
                    "grace_period": grace,
                    # Optuna's RetryHeartbeatStaleTrialCallback's job, recording the fail_reason first.
                    "heartbeat_stale_trial_callback": StaleTrialCallback(),
                }
            storage = optuna.storages.RDBStorage(resolved.url, engine_kwargs={"pool": pool}, **hb)
            storage.engine_kwargs = engine_options(resolved)  # a pickled copy opens a pool of its own
            return storage
    except RuntimeError as e:
        # Optuna raises RuntimeError for a schema written by another Optuna version; its own
        # message already names the `optuna storage upgrade` command.
        raise StorageError(scrub(" ".join(str(e).split()), resolved.url)) from e
