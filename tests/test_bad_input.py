"""Bad input across every command: one line naming the problem and the fix, exit 2, no
traceback, and the study data in the database byte-for-byte unchanged."""

from __future__ import annotations

import socket

import numpy as np
import pytest
import sqlalchemy

from tests.conftest import run_cli

TABLES = (
    "studies", "study_directions", "study_user_attributes", "study_system_attributes", "trials",
    "trial_params", "trial_values", "trial_intermediate_values", "trial_user_attributes",
    "trial_system_attributes", "trial_heartbeats",
)


def _snapshot(url: str) -> dict[str, str]:
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as c:
            return {t: c.exec_driver_sql(f"SELECT count(*)::text || ':' || coalesce(md5(string_agg(x::text, '|' ORDER BY x::text)), '') FROM {t} x").scalar()
                    for t in TABLES}
    finally:
        engine.dispose()


def _npz(path, **override):
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.integers(0, 256, (12_000, 28, 28), dtype=np.uint8),
        "y_train": rng.integers(0, 10, 12_000).astype(np.uint8),
        "x_test": rng.integers(0, 256, (100, 28, 28), dtype=np.uint8),
        "y_test": rng.integers(0, 10, 100).astype(np.uint8),
    }
    arrays.update(override)
    np.savez(path, **arrays)
    return str(path)


@pytest.fixture(scope="module")
def populated(local_pg_url, mnist, tmp_path_factory):
    """A study made by `hpsearch run`, plus a minimising study, in a fresh database."""
    import optuna

    data = ["--data", mnist] if mnist else []
    out = run_cli("run", "--study", "kept", "--trials", "3", "--epochs", "1", "--train-size", "300", "--storage", local_pg_url, *data)
    assert out.returncode == 0, out.stderr
    from search.config import StudyConfig
    from search.study import CONFIG_ATTR

    minimise = optuna.create_study(storage=local_pg_url, study_name="minimise", direction="minimize")
    minimise.set_user_attr(CONFIG_ATTR, StudyConfig(epochs=1).to_dict())
    files = tmp_path_factory.mktemp("files")
    good = _npz(files / "other.npz")
    truncated = files / "truncated.npz"
    truncated.write_bytes(open(good, "rb").read()[:5000])
    return {
        "url": local_pg_url,
        "data": data,
        "other": good,
        "truncated": str(truncated),
        "shape": _npz(files / "shape.npz", x_train=np.zeros((12_000, 32, 32), np.uint8)),
        "labels": _npz(files / "labels.npz", y_test=np.full(100, 11, np.uint8)),
        "dtype": _npz(files / "dtype.npz", x_train=np.full((12_000, 28, 28), "x")),
        "home_file": str(files / "not-a-dir"),
    }


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _cases(p):
    url, data = p["url"], p["data"]
    st = ["--storage", url]
    small = ["--epochs", "1", "--train-size", "300"]
    return [
        # data
        (["run", "--study", "kept", *st, "--data", "/nonexistent/mnist.npz"], "does not exist"),
        (["run", "--study", "kept", *st, "--data", p["truncated"]], "not a readable npz file"),
        (["run", "--study", "kept", *st, "--data", p["shape"]], "x_train has shape (12000, 32, 32)"),
        (["run", "--study", "kept", *st, "--data", p["labels"]], "expected 0-9"),
        (["run", "--study", "kept", *st, "--data", p["dtype"]], "expected uint8 pixels"),
        # storage
        (["run", "--storage", "postgresql://u:pw@/", *data], "names no database"),
        (["run", "--storage", "mysql://u:pw@h/db", *data], "unsupported driver 'mysql'"),
        (["query", "studies", "--storage", "::nonsense::"], "not a valid storage URL"),
        (["run", "--storage", f"postgresql://u@127.0.0.1:{_closed_port()}/db", *data], "cannot use storage"),
        (["run", "--storage", url.rsplit("/", 1)[0] + "/no_such_database", *data], "create the database"),
        # settings
        (["run", *st, "--lr-min", "0.1", "--lr-max", "0.01", *data], "must be below --lr-max"),
        (["run", *st, "--lr-min", "0", *data], "--lr-min must be a positive finite number"),
        (["run", *st, "--lr-min", "-0.5", *data], "--lr-min must be a positive finite number"),
        (["run", *st, "--lr-max", "nan", *data], "--lr-max must be a positive finite number"),
        (["init", *st, "--trials", "0", *data], "--trials must be a whole number of at least 1"),
        (["worker", *st, "--epochs", "0", *data], "--epochs must be a whole number of at least 1"),
        (["run", *st, "--batch-size", "-8", *data], "--batch-size must be"),
        (["run", *st, "--workers", "0", *data], "--workers must be"),
        (["launch", *st, "--per-gpu", "0", *data], "--per-gpu must be"),
        (["run", *st, "--pruner", "sha", *data], "--pruner 'sha' is unknown: use one of asha, median, hyperband, none"),
        (["run", *st, "--sampler", "cmaes", *data], "--sampler 'cmaes' is unknown"),
        (["run", *st, "--format", "yaml", *data], "invalid choice: 'yaml'"),
        (["query", "trials", "--study", "kept", *st, "--format", "xml"], "invalid choice: 'xml'"),
        # studies
        (["run", "--study", "kept", *st, "--epochs", "2", *data], "contradicts this study's stored --epochs 1"),
        (["worker", "--study", "kept", *st, "--lr-max", "0.5", *data], "--lr-max 0.5 contradicts"),
        (["run", "--study", "kept", *st, "--data", p["other"]], "differs from the data study 'kept' was created with"),
        (["run", "--study", "minimise", *st, *data], "does not maximise"),
        (["query", "trials", "--study", "nope", *st], "kept"),
        (["query", "trials", "--study", "kept", *st, "--state", "exploded"], "exploded"),
        (["query", "best", "--study", "nope", *st], "no study"),
        # machines and ports
        (["worker", "--study", "kept", *st, "--gpu", "7", *small, *data], "--gpu 7"),
        (["worker", "--study", "kept", *st, "--gpu", "first", *data], "is not a GPU index"),
        (["dashboard", *st, "--port", "70000"], "70000"),
        (["landscape", "--study", "nope", *st], "nope"),
    ]


def test_bad_input_everywhere(populated, tmp_path):
    before = _snapshot(populated["url"])
    failures = []
    cases = _cases(populated)
    assert len(cases) >= 30
    for argv, fragment in cases:
        out = run_cli(*argv, env={"HPSEARCH_HOME": str(tmp_path / "home")}, cwd=tmp_path, timeout=120)
        lines = out.stderr.strip().splitlines()
        problems = []
        if out.returncode != 2:
            problems.append(f"exit {out.returncode}")
        if len(lines) != 1:
            problems.append(f"{len(lines)} lines on stderr")
        if "Traceback" in out.stderr:
            problems.append("traceback")
        if fragment not in out.stderr:
            problems.append(f"no {fragment!r}")
        if "pw@" in out.stderr or "u:pw" in out.stderr:
            problems.append("password shown")
        if problems:
            failures.append((argv, problems, out.stderr[-400:]))
    assert not failures, "\n".join(f"{' '.join(a)}: {', '.join(p)}: {e}" for a, p, e in failures)
    assert _snapshot(populated["url"]) == before, "a bad input changed the study data"
    assert not (tmp_path / "home" / "pgdata").exists(), "a bad input started the embedded server"


def test_unwritable_home_and_bad_environment(populated, tmp_path):
    open(populated["home_file"], "w").close()
    out = run_cli("db", "url", env={"HPSEARCH_HOME": populated["home_file"] + "/sub"}, cwd=tmp_path)
    assert out.returncode == 2 and "cannot write to HPSEARCH_HOME" in out.stderr and len(out.stderr.strip().splitlines()) == 1
    before = _snapshot(populated["url"])
    out = run_cli("run", "--study", "kept", "--storage", populated["url"], *populated["data"], env={"HPSEARCH_DB_RETRY_S": "soon"}, cwd=tmp_path)
    assert out.returncode == 2 and "HPSEARCH_DB_RETRY_S='soon' is not a number" in out.stderr
    out = run_cli("run", "--study", "kept", "--storage", populated["url"], *populated["data"],
                  env={"HPSEARCH_HEARTBEAT_S": "60", "HPSEARCH_GRACE_S": "30"}, cwd=tmp_path)
    assert out.returncode == 2 and "must exceed HPSEARCH_HEARTBEAT_S" in out.stderr
    assert _snapshot(populated["url"]) == before


def test_a_second_db_start_reports_the_running_server(tmp_path):
    from storage import stop_embedded

    env = {"HPSEARCH_HOME": str(tmp_path / "h")}
    try:
        first = run_cli("db", "start", env=env, cwd=tmp_path)
        second = run_cli("db", "start", env=env, cwd=tmp_path)
    finally:
        stop_embedded(tmp_path / "h")
    assert first.returncode == 0 and "started" in first.stdout
    assert second.returncode == 0 and "already running" in second.stdout
    assert first.stdout.split(": ", 1)[1] == second.stdout.split(": ", 1)[1]


def test_a_full_home_is_refused_before_postgresql_starts(tmp_path):
    """HPSEARCH_HOME on a 1 MiB file system: one line, exit 2, no half-made data directory."""
    import subprocess

    mnt = tmp_path / "full"
    mnt.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({mounted.stderr.strip()}): needs root")
    try:
        out = run_cli("db", "start", env={"HPSEARCH_HOME": str(mnt / "home")}, cwd=tmp_path)
        assert out.returncode == 2, out.stderr
        assert "has 1 MiB free" in out.stderr and "needs at least 64 MiB" in out.stderr
        assert len(out.stderr.strip().splitlines()) == 1
        assert not (mnt / "home" / "pgdata").exists()
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)
