"""A storage password never leaks: not in output, logs, files, attributes or process lists.

Every command runs against the machine's PostgreSQL with a URL whose password is a unique
marker (the server trusts local connections, so any password is accepted), then everything
hpsearch printed, wrote or stored is searched for the marker.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import sqlalchemy

from tests.conftest import REPO, run_cli, with_database, with_password


def _marker_url(local_pg_url: str, marker: str) -> str:
    return with_password(local_pg_url, marker)


def test_no_command_leaks_the_password(local_pg_url, mnist, tmp_path):
    marker = f"Pw{uuid.uuid4().hex}"
    url = _marker_url(local_pg_url, marker)
    home = tmp_path / "home"
    data = ["--data", mnist] if mnist else []
    env = {"HPSEARCH_HOME": str(home)}
    outputs = []

    def cli(*args, via_env=False):
        e = dict(env, OPTUNA_STORAGE=url) if via_env else env
        extra = [] if via_env else ["--storage", url]
        out = run_cli(*args, *extra, env=e, cwd=tmp_path, timeout=300)
        outputs.append((args, out))
        return out

    # The launcher's workers get the URL through the environment: watch the process list.
    e = dict(os.environ, OPTUNA_STORAGE=url, **env)
    proc = subprocess.Popen([sys.executable, "-m", "search", "run", "--study", "secret", "--workers", "2", "--trials", "4",
                             "--epochs", "2", "--train-size", "500", *data], cwd=REPO, env=e,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    snapshots = []
    try:
        deadline = time.monotonic() + 240
        while proc.poll() is None and time.monotonic() < deadline:
            snapshots.append(subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout)
            time.sleep(0.5)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr
    outputs.append((("run", "--workers", "2"), subprocess.CompletedProcess([], 0, stdout, stderr)))
    workers_seen = [line for snap in snapshots for line in snap.splitlines() if "search worker" in line]
    assert workers_seen, "the workers never showed in the process list"
    assert not [line for snap in snapshots for line in snap.splitlines() if marker in line]

    assert cli("init", "--study", "secret", *data).returncode == 0
    assert cli("worker", "--study", "secret", "--trials", "5", *data).returncode == 0
    assert cli("run", "--study", "secret", "--trials", "5", "--format", "json", *data).returncode == 0
    # The readers and the errors that involve the URL do not depend on each other: run them
    # three at a time (each is a process that mostly waits on its imports).
    readers = [["query", action, "--format", fmt] + ([] if action == "studies" else ["--study", "secret"])
               for action in ("studies", "trials", "best", "top", "summary") for fmt in ("table", "json", "csv")]
    readers += [["query", "curves", "--study", "secret", "--top", "3", "--format", "json"], ["db", "views"],
                ["landscape", "--study", "secret", "--out", str(tmp_path / "landscape.html")]]
    failing = {  # a missing database, a closed port, a bad driver: exit 2, and the text they must say
        "missing database": (["run", "--study", "x", "--storage", with_database(url, "no_such_db_x"), *data], "does not exist"),
        "closed port": (["run", "--storage", f"postgresql://u:{marker}@127.0.0.1:9/db"], ""),
        "bad driver": (["query", "studies", "--storage", f"oracle://u:{marker}@h/db"], ""),
    }
    with ThreadPoolExecutor(max_workers=3) as pool:
        read = list(pool.map(lambda args: cli(*args), readers))
        failed = dict(zip(failing, pool.map(lambda args: run_cli(*args, env=env, cwd=tmp_path), [a for a, _ in failing.values()])))
    for args, out in zip(readers, read):
        assert out.returncode == 0, (args, out.stderr)
    for name, out in failed.items():
        outputs.append(((name,), out))
        assert out.returncode == 2 and failing[name][1] in out.stderr, (name, out.stderr)

    for args, out in outputs:
        assert marker not in out.stdout, args
        assert marker not in out.stderr, args
    written = [p for p in list(home.rglob("*")) + list(tmp_path.glob("*.html")) if p.is_file()]
    assert any(p.suffix == ".log" for p in written), "worker logs were expected"
    for p in written:
        if "pgdata" in p.parts:
            continue
        assert marker.encode() not in p.read_bytes(), p

    engine = sqlalchemy.create_engine(local_pg_url)
    with engine.connect() as c:
        for table in ("study_user_attributes", "study_system_attributes", "trial_user_attributes", "trial_system_attributes"):
            n = c.exec_driver_sql(f"SELECT count(*) FROM {table} WHERE value_json LIKE %(m)s", {"m": f"%{marker}%"}).scalar()
            assert n == 0, table
        n = c.exec_driver_sql("SELECT count(*) FROM trials t JOIN studies s USING (study_id) WHERE s.study_name = 'secret'").scalar()
        assert n >= 5
    engine.dispose()


def test_debug_shows_the_chained_driver_error_but_never_the_password(local_pg_url, mnist, tmp_path):
    """--debug prints the traceback with the driver error the StorageError was raised from;
    every line of it is scrubbed (test_boundary.py holds a driver error that carries it)."""
    marker = f"Pw{uuid.uuid4().hex}"
    missing = with_database(with_password(local_pg_url, marker), "no_such_db_debug")
    # init checks its data before the storage (issue 15), so it gets good data
    data = ["--data", mnist] if mnist else []
    for args in (["query", "studies"], ["db", "views"], ["init", "--study", "x", *data]):
        out = run_cli(*args, "--debug", "--storage", missing, env={"HPSEARCH_HOME": str(tmp_path / "home")}, cwd=tmp_path, timeout=120)
        assert out.returncode == 2, (args, out.stderr)
        assert "Traceback" in out.stderr and "OperationalError" in out.stderr and "direct cause" in out.stderr, (args, out.stderr)
        assert "does not exist" in out.stderr.splitlines()[-1]
        assert marker not in out.stdout + out.stderr, args
