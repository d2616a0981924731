"""Shared fixtures: the real MNIST file, real PostgreSQL servers, and the hpsearch CLI.

Database tests talk to a real PostgreSQL, never a mock: the embedded server (started in a
temporary HPSEARCH_HOME, stopped at teardown even when the test fails) and, when it answers,
the machine's server at 127.0.0.1:5432 (a fresh database per test module, dropped at
teardown).
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_MNIST = REPO.parent / "shared" / "data" / "mnist.npz"
LOCAL_PG_ADMIN = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"


def mnist_path() -> str | None:
    """The MNIST file the tests use: HPSEARCH_DATA, else ../shared/data/mnist.npz, else None
    (Keras's own download, on a machine that is online)."""
    env = os.environ.get("HPSEARCH_DATA")
    if env:
        return env
    return str(SHARED_MNIST) if SHARED_MNIST.exists() else None


@pytest.fixture(scope="session")
def mnist() -> str | None:
    return mnist_path()


@pytest.fixture(scope="session")
def mnist_raw(mnist):
    from search.data import read_mnist

    return read_mnist(mnist)


@pytest.fixture(scope="module")
def embedded_home(tmp_path_factory):
    """A fresh HPSEARCH_HOME with a running embedded PostgreSQL; yields (home, url)."""
    from storage import embedded_url, stop_embedded

    home = tmp_path_factory.mktemp("home")
    try:
        url = embedded_url(home)
        yield home, url
    finally:
        stop_embedded(home)


def _local_pg_answers() -> bool:
    import sqlalchemy

    try:
        eng = sqlalchemy.create_engine(LOCAL_PG_ADMIN, connect_args={"connect_timeout": 3})
        with eng.connect() as c:
            c.exec_driver_sql("select 1")
        eng.dispose()
        return True
    except Exception:
        return False


@pytest.fixture(scope="module")
def local_pg_url():
    """A fresh database on the machine's PostgreSQL (127.0.0.1:5432), dropped at teardown."""
    import sqlalchemy

    if not _local_pg_answers():
        pytest.skip("no PostgreSQL answers at 127.0.0.1:5432 (start it to run these tests)")
    name = f"hps_{uuid.uuid4().hex[:12]}"
    admin = sqlalchemy.create_engine(LOCAL_PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg2://postgres@127.0.0.1:5432/{name}"
    finally:
        with admin.connect() as c:
            c.exec_driver_sql(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'")
            c.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}"')
        admin.dispose()


@pytest.fixture(params=["embedded", "local"], scope="module")
def pg_url(request):
    """Each PostgreSQL the tests run against: the embedded server and the machine's."""
    if request.param == "embedded":
        return request.getfixturevalue("embedded_home")[1]
    return request.getfixturevalue("local_pg_url")


def run_cli(*args: str, env: dict | None = None, cwd=None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``hpsearch ARGS`` in a subprocess (the installed entry point's code path)."""
    full_env = dict(os.environ)
    full_env.pop("OPTUNA_STORAGE", None)
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "search", *args],
        env=full_env,
        cwd=cwd or REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
