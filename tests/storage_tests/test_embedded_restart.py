"""The embedded PostgreSQL killed mid-run is started again by the run, not waited on (issue 25).

A ``kill -9`` of its postmaster (what an OOM killer does) used to make ``hpsearch run`` wait out
``HPSEARCH_DB_RETRY_S`` and exit 2; the server is hpsearch's own, so the run starts it again on
the same data directory, says so in one line, and finishes the study exactly.
"""

from __future__ import annotations

import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import pytest
import sqlalchemy

from tests.conftest import REPO


def _postmaster_pid(pgdata) -> int:
    return int((pgdata / "postmaster.pid").read_text().split()[0])


def _wait_for_running_trial(url: str, proc: subprocess.Popen, timeout: float) -> None:
    """Return once the run has claimed a trial (it is training it), failing if the run ended."""
    engine = sqlalchemy.create_engine(url)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            assert proc.poll() is None, "the run ended before a trial was seen running"
            if sqlalchemy.inspect(engine).has_table("trials"):
                with engine.connect() as c:
                    if c.exec_driver_sql("SELECT count(*) FROM trials WHERE state = 'RUNNING'").scalar():
                        return
            time.sleep(0.05)
    finally:
        engine.dispose()
    pytest.fail(f"no trial was running within {timeout} s")


def _kill(pid: int | None, pgdata) -> None:
    """SIGKILL ``pid`` if it is still a postgres of ``pgdata``: pids are reused (pid_max is 32768
    here), and a bare kill of a dead server's pid once killed another test's server."""
    if pid is None:
        return
    try:
        cmdline = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return  # gone
    if "postgres" in cmdline and str(pgdata) in cmdline:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_a_killed_embedded_server_is_started_again_and_the_study_ends_exact(tmp_path, mnist):
    from storage import embedded_url, open_storage, resolve_storage_url, stop_embedded

    home = tmp_path / "home"
    pgdata = home / "pgdata"
    data = ["--data", mnist] if mnist else []
    env = {k: v for k, v in os.environ.items() if k != "OPTUNA_STORAGE"}
    env["HPSEARCH_HOME"] = str(home)
    url = embedded_url(home)  # started here so that the test can watch the study from the start
    killed = _postmaster_pid(pgdata)
    proc = None
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "search", "run", "--study", "killed", "--trials", "3", "--epochs", "3", "--train-size", "500", *data],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        )
        _wait_for_running_trial(url, proc, 180)
        os.kill(killed, signal.SIGKILL)  # as the OOM killer does: no shutdown, postmaster.pid left behind
        _, err = proc.communicate(timeout=240)
    finally:
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        _kill(killed, pgdata)  # a no-op once it is dead, as it should be
    try:
        assert proc.returncode == 0, err[-3000:]
        lines = [line for line in err.splitlines() if "embedded PostgreSQL" in line]
        assert len(lines) == 1, err[-3000:]
        assert re.fullmatch(rf"the embedded PostgreSQL stopped \(pid {killed}\); started it again \(pid \d+\)", lines[0]), lines
        assert "Traceback" not in err and "did not answer" not in err, err[-3000:]
        assert _postmaster_pid(pgdata) != killed  # the same data directory, a new server
        storage = open_storage(resolve_storage_url(url), heartbeat=False)
        import optuna

        states = [t.state.name for t in optuna.load_study(study_name="killed", storage=storage).trials]
        storage.engine.dispose()
        assert states.count("COMPLETE") + states.count("PRUNED") == 3, states
        assert "RUNNING" not in states, states
    finally:
        restarted = _postmaster_pid(pgdata) if (pgdata / "postmaster.pid").exists() else None
        stop_embedded(home)
        if restarted is not None and (pgdata / "postmaster.pid").exists():
            _kill(restarted, pgdata)  # it did not stop: by its recorded pid
