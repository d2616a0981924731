"""The database fixtures keep the project's rule: no server at 127.0.0.1:5432 means the
embedded one, not a skip (local_pg_url, and pg_url's "local" copy, which is local_pg_url)."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import REPO, closed_port


def test_without_the_machines_postgresql_the_tests_run_on_the_embedded_server(tmp_path):
    env = dict(os.environ, HPSEARCH_TEST_PG_ADMIN=f"postgresql+psycopg2://postgres@127.0.0.1:{closed_port()}/test",
               HPSEARCH_HOME=str(tmp_path / "home"))
    env.pop("OPTUNA_STORAGE", None)
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-n", "0", "-p", "no:cacheprovider", f"--basetemp={tmp_path / 'bt'}",
         "tests/storage_tests/test_engine.py", "-k", "missing_database or creates_schema"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stdout[-3000:]
    # local_pg_url's test and both copies of pg_url's ran, all on the embedded server
    assert "3 passed" in out.stdout and "skipped" not in out.stdout, out.stdout[-3000:]
