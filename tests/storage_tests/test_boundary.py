"""The one boundary: driver errors leave storage as StorageError, chained, password masked."""

from __future__ import annotations

import time
import uuid

import pytest
import sqlalchemy

from storage import StorageConfigError, StorageError, open_engine, resolve_storage_url, retrying, scrub_traceback, state_counts
from storage.engine import connection, database_errors
from storage.settings import STORAGE_ENV_VARS, env_seconds
from tests.conftest import closed_port, with_password


@pytest.fixture(scope="module")
def url(local_pg_url):
    return local_pg_url


def test_a_driver_error_becomes_a_storage_error_chained_from_it_and_masked(url):
    marker = f"Pw{uuid.uuid4().hex}"
    engine = sqlalchemy.create_engine(with_password(url, marker))
    try:
        with pytest.raises(StorageError) as e:
            with connection(engine) as conn:
                # the statement, and so the driver's message, holds the password
                conn.exec_driver_sql(f"SELECT 1 / 0 AS \"{marker}\"")
    finally:
        engine.dispose()
    err = e.value
    assert isinstance(err.__cause__, sqlalchemy.exc.DBAPIError), "chained from the driver error"
    assert marker in str(err.__cause__), "the test must hold a driver error that carries the password"
    assert marker not in str(err) and "division by zero" in str(err)
    assert err.transient is False
    shown = scrub_traceback(err, with_password(url, marker))
    assert "DivisionByZero" in shown and "direct cause" in shown and "StorageError" in shown
    assert marker not in shown


def test_hpsearch_errors_pass_the_boundary_unchanged(url):
    with pytest.raises(StorageConfigError, match="as it was"):
        with database_errors(resolve_storage_url(url)):
            raise StorageConfigError("as it was")


def test_a_query_engine_is_read_only_and_its_writes_are_storage_errors(url):
    engine = open_engine(url)
    try:
        with pytest.raises(StorageError, match="read-only transaction"):
            with connection(engine) as conn:
                conn.exec_driver_sql("CREATE TABLE hps_should_not_exist (x int)")
    finally:
        engine.dispose()


def test_retrying_gives_up_after_its_limit_on_an_unreachable_database():
    dead = sqlalchemy.create_engine(f"postgresql+psycopg2://u@127.0.0.1:{closed_port()}/db", connect_args={"connect_timeout": 2})
    calls = []

    def count():
        calls.append(time.monotonic())
        return state_counts(dead, 1)

    start = time.monotonic()
    with pytest.raises(StorageError, match=r"did not answer for 1 s while counting") as e:
        retrying(count, what="counting", limit_s=1.0)
    assert len(calls) >= 2 and time.monotonic() - start < 10
    assert isinstance(e.value.__cause__, StorageError) and e.value.__cause__.transient


def test_retrying_gives_up_in_one_line_on_sqlalchemys_own_error():
    """A statement run on SQLAlchemy directly (the epochs writer's) raises SQLAlchemy's own error,
    whose ``detail`` is a list, not a message: the give-up line still names the cause (a full
    suite run printed "AttributeError: 'list' object has no attribute 'lower'" there)."""
    dead = sqlalchemy.create_engine(f"postgresql+psycopg2://u@127.0.0.1:{closed_port()}/db", connect_args={"connect_timeout": 2})

    def select():
        with dead.connect() as conn:
            return conn.execute(sqlalchemy.text("SELECT 1")).scalar()

    with pytest.raises(StorageError, match=r"did not answer for 1 s while writing \(.*refused.*\): check the server") as e:
        retrying(select, what="writing", limit_s=1.0)
    assert isinstance(e.value.__cause__, sqlalchemy.exc.OperationalError)


def test_retrying_goes_on_once_the_database_answers_and_does_not_retry_a_bad_statement(url):
    dead = sqlalchemy.create_engine(f"postgresql+psycopg2://u@127.0.0.1:{closed_port()}/db", connect_args={"connect_timeout": 2})
    live = open_engine(url)
    calls = []

    def flaky():
        calls.append(1)
        with connection(dead if len(calls) < 3 else live) as conn:
            return conn.exec_driver_sql("select 41 + 1").scalar()

    try:
        assert retrying(flaky, what="counting", limit_s=30) == 42
        assert len(calls) == 3

        def bad():
            calls.append(1)
            with connection(live) as conn:
                conn.exec_driver_sql("SELECT * FROM no_such_table_hps")

        calls.clear()
        with pytest.raises(StorageError, match="no_such_table_hps.*refused the statement"):
            retrying(bad, what="reading", limit_s=30)
        assert len(calls) == 1
    finally:
        live.dispose()
        dead.dispose()


def test_storage_settings_are_registered_and_checked(monkeypatch):
    from search.env import ENV_VARS

    assert set(STORAGE_ENV_VARS) <= set(ENV_VARS)
    assert {"OPTUNA_STORAGE", "HPSEARCH_HOME", "HPSEARCH_DB_RETRY_S", "HPSEARCH_HEARTBEAT_S", "HPSEARCH_GRACE_S"} == set(STORAGE_ENV_VARS)
    monkeypatch.setenv("HPSEARCH_DB_RETRY_S", "soon")
    with pytest.raises(StorageConfigError, match="HPSEARCH_DB_RETRY_S='soon' is not a number of seconds"):
        env_seconds("HPSEARCH_DB_RETRY_S", 60)
    monkeypatch.setenv("HPSEARCH_DB_RETRY_S", "")
    assert env_seconds("HPSEARCH_DB_RETRY_S", 60) == 60
    monkeypatch.setenv("OPTUNA_STORAGE", "")
    with pytest.raises(StorageConfigError, match="OPTUNA_STORAGE is empty"):
        resolve_storage_url(None)


def test_ctrl_c_stops_a_command_whose_statement_waits_on_a_lock(url):
    """psycopg2 waits inside libpq, where a SIGINT is not acted on until the statement returns:
    `hpsearch query follow` blocked behind another session's lock ignored Ctrl-C until the lock
    went (25 s measured; a CI run where it never exited). The engine factory sets psycopg2's
    ``wait_select``, so the statement is cancelled on the server and the command exits 130."""
    import signal
    import subprocess
    import sys

    import optuna

    from tests.conftest import REPO

    name = f"locked-{uuid.uuid4().hex[:6]}"
    optuna.create_study(study_name=name, storage=url)
    proc = subprocess.Popen([sys.executable, "-m", "search", "query", "follow", "--study", name, "--storage", url, "--interval", "0.1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=REPO)
    holder = sqlalchemy.create_engine(url)
    try:
        assert "following study" in proc.stderr.readline()
        with holder.connect() as c:
            c.exec_driver_sql("LOCK TABLE trials IN ACCESS EXCLUSIVE MODE")  # held until rollback
            deadline = time.monotonic() + 60
            waiting = 0
            while time.monotonic() < deadline and not waiting:
                time.sleep(0.1)
                with holder.connect() as probe:
                    waiting = probe.exec_driver_sql(
                        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'hpsearch-query' AND wait_event_type = 'Lock'").scalar()
            assert waiting, "the follow command never waited on the lock"
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=20)  # the lock is still held here
            assert proc.returncode == 130 and err.strip() == "hpsearch query: interrupted", err
            c.rollback()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(15)
        holder.dispose()
