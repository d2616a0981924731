import socket
import threading
import time
from pathlib import Path

import pytest

from storage import StorageError, open_storage, resolve_storage_url
from storage.fleet import state_counts
from tests.conftest import with_database


def test_open_storage_creates_schema_and_counts_states(pg_url):
    import optuna

    storage = open_storage(resolve_storage_url(pg_url))
    study = optuna.create_study(storage=storage, study_name=f"engine-{time.time_ns()}", direction="maximize")
    t = study.ask()
    study.tell(t, 0.5)
    study.tell(study.ask(), state=optuna.trial.TrialState.PRUNED)
    study.ask()
    counts = state_counts(storage.engine, study._study_id)
    assert counts == {"RUNNING": 1, "WAITING": 0, "COMPLETE": 1, "PRUNED": 1, "FAIL": 0}


def test_a_pooled_connection_the_server_closed_is_replaced_before_use(pg_url):
    """pool_pre_ping: after the server drops every idle connection (a restart, a proxy's
    timeout), the next storage call reconnects instead of failing."""
    import optuna
    import sqlalchemy

    storage = open_storage(resolve_storage_url(pg_url), heartbeat=False)
    study = optuna.create_study(storage=storage, study_name=f"ping-{time.time_ns()}", direction="maximize")
    study.tell(study.ask(), 0.5)
    held = [storage.engine.connect(), storage.engine.connect()]
    pids = [c.exec_driver_sql("select pg_backend_pid()").scalar() for c in held]
    for c in held:
        c.close()
    admin = sqlalchemy.create_engine(pg_url, poolclass=sqlalchemy.pool.NullPool)
    try:
        with admin.connect() as c:
            for pid in pids:
                assert c.exec_driver_sql(f"select pg_terminate_backend({int(pid)})").scalar()
    finally:
        admin.dispose()
    assert state_counts(storage.engine, study._study_id)["COMPLETE"] == 1
    with storage.engine.connect() as c:
        assert c.exec_driver_sql("select pg_backend_pid()").scalar() not in pids
    storage.engine.dispose()


def test_connection_refused_fails_fast_with_masked_url():
    # a port on loopback that nothing listens on
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    start = time.monotonic()
    with pytest.raises(StorageError) as e:
        open_storage(resolve_storage_url(f"postgresql://u:topsecret@127.0.0.1:{port}/db"))
    assert time.monotonic() - start < 10
    msg = str(e.value)
    assert "topsecret" not in msg and "u:***@127.0.0.1" in msg
    assert "\n" not in msg


def test_silent_server_times_out_within_the_bound():
    """A server that accepts TCP but never speaks: bounded wait, then a message."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    port = srv.getsockname()[1]
    held = []
    stop = threading.Event()

    def accept():
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(srv.accept()[0])
            except OSError:
                pass

    th = threading.Thread(target=accept, daemon=True)
    th.start()
    try:
        start = time.monotonic()
        with pytest.raises(StorageError, match="cannot use storage"):
            open_storage(resolve_storage_url(f"postgresql://u@127.0.0.1:{port}/db"))
        assert time.monotonic() - start < 20
    finally:
        stop.set()
        th.join(2)
        for c in held:
            c.close()
        srv.close()


def test_missing_database_names_the_fix(local_pg_url):
    url = with_database(local_pg_url, "no_such_db_hpsearch")
    with pytest.raises(StorageError) as e:
        open_storage(resolve_storage_url(url))
    assert "does not exist" in str(e.value) and "createdb" in str(e.value)


def test_sqlite_file_storage_works(tmp_path):
    import optuna

    storage = open_storage(resolve_storage_url(f"sqlite:///{tmp_path}/s.db"))
    study = optuna.create_study(storage=storage, study_name="s", direction="maximize")
    study.tell(study.ask(), 1.0)
    assert state_counts(storage.engine, study._study_id)["COMPLETE"] == 1


def test_a_worker_process_holds_at_most_two_connections(local_pg_url):
    """pool_size 2 and no overflow: a third caller waits for a connection instead of opening one."""
    import threading

    import sqlalchemy

    storage = open_storage(resolve_storage_url(local_pg_url))
    pool = storage.engine.pool
    assert pool.size() == 2
    opened = []
    sqlalchemy.event.listen(storage.engine, "connect", lambda dbapi_conn, record: opened.append(dbapi_conn))
    held = [storage.engine.connect(), storage.engine.connect()]
    pids = {c.exec_driver_sql("select pg_backend_pid()").scalar() for c in held}
    got = threading.Event()

    def third():
        with storage.engine.connect() as c:
            pids.add(c.exec_driver_sql("select pg_backend_pid()").scalar())
            got.set()

    t = threading.Thread(target=third, daemon=True)
    t.start()
    try:
        assert not got.wait(1.5), "a third connection was opened"
        assert pool.checkedout() == 2
    finally:
        for c in held:
            c.close()
    assert got.wait(10), "the waiting caller got a released connection"
    t.join(5)
    assert len(pids) == 2, "every caller used one of the same two server connections"
    assert len(opened) <= 2


def test_the_schema_check_knows_optunas_tables_and_versions_without_importing_optuna(tmp_path):
    """check_schema names Optuna's tables and reads its schema versions from the migration
    scripts' files, so that a query imports neither Optuna nor alembic (0.4 s of its 0.9 s):
    both must be what Optuna and alembic themselves say, or an upgraded Optuna would make a
    whole schema look damaged, or a known version unknown."""
    import subprocess
    import sys

    from alembic.script import ScriptDirectory
    from optuna.storages._rdb import models

    from storage import schema
    from tests.conftest import REPO

    assert schema.OPTUNA_TABLES == set(models.BaseModel.metadata.tables)
    alembic = ScriptDirectory(str(Path(models.__file__).parent / "alembic"))
    assert schema._known_versions() == {r.revision for r in alembic.walk_revisions()}
    import optuna

    url = f"sqlite:///{tmp_path}/made.db"
    optuna.create_study(storage=url, study_name="made")  # a whole schema, stamped with Optuna's head
    code = ("import sys, sqlalchemy; from storage.schema import check_schema\n"
            f"e = sqlalchemy.create_engine({url!r})\n"
            "with e.connect() as c: check_schema(c, 'x')\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('optuna', 'alembic')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out
