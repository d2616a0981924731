import json
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
