"""Shared fixtures: the real MNIST file, real PostgreSQL servers, and the hpsearch CLI.

Database tests talk to a real PostgreSQL, never a mock: the embedded server (started in a
temporary HPSEARCH_HOME, stopped at teardown even when the test fails) and the machine's
server at 127.0.0.1:5432 (a fresh database per test module, dropped at teardown). Where the
machine's server does not answer, ``local_pg_url`` hands out a fresh database on the embedded
server instead, so no database test skips for want of a server.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

# A suite started as a shell's background job (`.ci/run &`, nohup) runs with SIGINT ignored,
# and every command a test starts inherits that, so the tests of Ctrl-C (exit 130, no
# traceback) would see a command that never gets the signal: the Ctrl-C tests of `query follow`,
# `db start` and a statement waiting on a lock failed that way. A command started at a terminal
# has the default handler; give the suite's children the same.
import signal as _signal

if _signal.getsignal(_signal.SIGINT) is _signal.SIG_IGN:
    _signal.signal(_signal.SIGINT, _signal.default_int_handler)

REPO = Path(__file__).resolve().parent.parent

# Parallel runs. pytest-xdist runs the suite in worker processes (`-n auto --dist loadfile` in
# pyproject's addopts; `-n 0` runs it in one process). Much of a test's time is spent waiting on
# something it started (a CLI's import of TensorFlow, a server, a worker), so two workers on two
# cores overlap that waiting with another test's work. A module's tests run on one worker, in
# order, so a module-scoped fixture that trains runs once. (`--dist loadgroup` would let a module
# spread its tests, but xdist 3.8 marks groups through `Item._nodeid`, which pytest 9.2 no longer
# reads, so there every test is scheduled alone.) Fixtures already isolate what could clash:
# databases have random names, homes and ports are per test.
#
# One worker per core, not one more: on 2 cores (AMD EPYC) two workers took 14:05 and 13:55 for
# the 865 tests on 2026-12-06 (the files' test seconds balanced within 1 s between them) and
# 14:30 for 870 on 2026-12-07; three took 11:48 and 13:03 on 2026-12-06, but 16:47 for 871 on
# 2026-12-07, an hour after the two-worker run on the same machine: on two cores a third
# TensorFlow process slowed the long tests more than it filled their waiting. (In the 13:03 run
# a worker stopped by SIGTERM aborted in glibc: hpsearch's bug, a SIGTERM taken by a thread of
# TensorFlow's, fixed in search/cli/signals.py; docs/faults.md.)
#
# The suite is CPU-bound: later on 2026-12-07 a fresh machine of the same label ran the same
# 871 tests in 18:49 with two workers, idle otherwise, against 14:29 on the earlier one. Its long
# tests start TensorFlow processes: there a 2-trial, 1-epoch `hpsearch run` on 500 images took
# 12.5 s of CPU (user), and `import keras` alone 5.8 s (with the test extra installed it also
# imports jax, through tensorflow.lite, and pandas, through Keras's data adapters: 0.9 s of it). One TensorFlow thread per process (TF_NUM_INTRAOP_THREADS=1 and
# TF_NUM_INTEROP_THREADS=1) made test_epoch_budget.py and test_swept_trial.py slower, 1:56
# against 1:38. So was handing out the longest files first (`--no-loadscope-reorder` and the
# files sorted by their test seconds, instead of xdist's most-tests-first): 871 passed in 20:39
# against 18:49 on the same machine the same hour. Shortening the suite means fewer TensorFlow
# processes, not other settings.
#
# A third machine of the label (2026-12-07, third session): `import keras` 6.8-7.0 s of CPU (5.8 s
# before). The suite with two workers took 25:39 for 875 tests right after four end-to-end runs
# (its JAX fixture in test_modellanes 154 s: something else was using the CPU, not found), then
# 18:09 for 876 with the machine idle (that fixture 77 s). The longest in the idle run:
# test_interrupt_at_start's end-of-run Ctrl-C sweep 104 s (six TensorFlow runs, two at a time),
# test_your_model's JAX lanes 99 s, test_security's password test 78 s. Over the 15 minutes the
# project allows; not shortened yet (in the 25:39 run the 80 longest tests were 78% of it).
# A third run, idle: 876 passed in 18:31, 2,174 s of test time in all (so the two workers were
# busy 98% of the wall time); by file: test_your_model 311 s, test_faults 222 s, test_cli_run
# 158 s, test_bad_input 150 s, test_checkpoints 140 s, test_lanes 124 s. 15 minutes needs about
# 425 s less, most likely from the CLI processes of test_your_model and test_bad_input.
# A fourth machine of the label (2026-12-07, fourth session), about 1.6 times faster: `import
# keras` 4.3 s of CPU; the same 876 tests in 11:25 (1,344 s of test time), then 900 (hpsearch
# export's tests and more bad inputs) in 13:16 and 12:56, and 904 in 12:42.
# A fifth (2026-12-07, fifth session), slower again (`import keras` 5.0 s of CPU, 5.5-6.4 s wall):
# 913 tests in 17:49 idle, 1,069 s with 2,100 s of test time. Two cuts brought 914 to 15:55
# (1,859 s of test time): the schema check no longer imports Optuna and alembic (0.4 s of every
# process that opens a storage: storage/schema.py) and the end-of-run Ctrl-C sweep runs four
# TensorFlow processes instead of six (test_interrupt_at_start). By file then: test_your_model
# 231 s, test_faults 191 s, test_checkpoints 129 s, test_cli_run 127 s, test_bad_input 123 s
# (129 processes of about 1 s), test_lanes 116 s, test_modellanes 87 s, test_objective 86 s.
# The final run of that session, idle: 915 in 14:43 (883 s), the Ctrl-C sweep 31 s of it: under
# 15 minutes, but by less than a minute; the next cut has to be fewer TensorFlow processes.
# Then 915 in 18:03 on the same machine, idle, code all but the same: runs here spread by
# over three minutes.
# A sixth (2026-12-07, sixth session; `import keras` 4.75 s wall): 915 in 14:45 idle in a venv
# with the test and bench extras (1,719 s of test time), and 14:37 in one with the test extra
# only, as .ci/run installs it (1,721 s): the bench extra's matplotlib, which Keras imports in
# every TensorFlow process (0.41 s here), costs the suite seconds, not minutes. That session's
# final code: 920 in 14:41 (test extra only).
# A seventh (2026-12-07, seventh session): 920 in 14:32 (bench extras); with this session's
# tests, 936 in 15:37 (bench) and 15:38 (test extra only, 1,835 s of test time), idle. Then the
# parser stopped importing SQLAlchemy (a CLI process refused for a flag: 0.45 s to 0.15 s):
# 937 in 13:48 (1,606 s), test extra only. Not all of that drop is the cut: the end-of-run
# Ctrl-C sweep alone took 95, 19, 92, 91 and 33 s in five runs, as the other worker's tests vary.
# An eighth (2026-12-07, eighth session; the sweep's runs 6.5-10.9 s each, alone): 939 in 12:57
# (bench extras) at the start, 964 in 12:42 (bench) with this session's tests, then 966 in 12:06
# and, the last code, 968 in 12:33, both in a venv with the test extra only, as .ci/run installs
# it; all idle.
# A ninth (2026-12-08), among the slow ones: `import keras` 6.4-8.1 s wall (TensorFlow's own
# modules and native libraries; JAX, 0.8 s of it, no longer imported by a worker on TensorFlow,
# search/train/backend.py). 971 in 19:16 and, the last code, 973 in 19:16, idle, bench extras.
# Longest: test_modellanes' JAX fixture 120 s, test_your_model's JAX lanes 94-97 s, the
# eight-worker fault test 62-69 s. The end-of-run Ctrl-C sweep took 20 s alone here and 49-87 s
# in the suite: its two TensorFlow runs at a time share the cores with the other worker's tests.
MAX_WORKERS = 4  # each worker holds TensorFlow and connections to the local server


def pytest_xdist_auto_num_workers(config):
    return max(1, min(len(os.sched_getaffinity(0)), MAX_WORKERS))


SHARED_MNIST = REPO.parent / "shared" / "data" / "mnist.npz"
#: The machine's PostgreSQL; HPSEARCH_TEST_PG_ADMIN points the tests elsewhere (a dead port
#: shows the fallback to the embedded server: tests/test_fixtures.py).
LOCAL_PG_ADMIN = os.environ.get("HPSEARCH_TEST_PG_ADMIN") or "postgresql+psycopg2://postgres@127.0.0.1:5432/test"


def mnist_path() -> str | None:
    """The MNIST file the tests use: HPSEARCH_DATA, else ../shared/data/mnist.npz, else None
    (Keras's own download, on a machine that is online)."""
    env = os.environ.get("HPSEARCH_DATA")
    if env:
        return env
    return str(SHARED_MNIST) if SHARED_MNIST.exists() else None


def guide_images(path, train: int = 600, test: int = 100) -> str:
    """The first ``train`` and ``test`` MNIST images as KerasTuner's getting-started guide
    prepares them (in [0, 1] with a channel axis, one-hot labels), saved as an .npz at ``path``."""
    import numpy as np

    source = mnist_path()
    if source is None:
        import keras

        (x_train, y_train), (x_test, y_test) = keras.datasets.mnist.load_data()
    else:
        with np.load(source) as f:
            x_train, y_train, x_test, y_test = f["x_train"], f["y_train"], f["x_test"], f["y_test"]
    eye = np.eye(10, dtype="float32")
    np.savez(path, x_train=(x_train[:train, ..., None] / 255.0).astype("float32"), y_train=eye[y_train[:train]],
             x_test=(x_test[:test, ..., None] / 255.0).astype("float32"), y_test=eye[y_test[:test]])
    return str(path)


@pytest.fixture(scope="session")
def mnist() -> str | None:
    return mnist_path()


@pytest.fixture(scope="session")
def mnist_raw(mnist):
    from search.train.data import read_mnist

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


def with_database(url: str, name: str) -> str:
    """``url`` with its database replaced by ``name`` (any URL form: TCP or a socket's ?host=)."""
    from sqlalchemy.engine import make_url

    return make_url(url).set(database=name).render_as_string(hide_password=False)


def with_password(url: str, password: str) -> str:
    """``url`` with ``password`` (both test servers trust local connections, so any is accepted)."""
    from sqlalchemy.engine import make_url

    return make_url(url).set(password=password).render_as_string(hide_password=False)


@pytest.fixture(scope="module")
def local_pg_url(request):
    """A fresh database on a real PostgreSQL, dropped at teardown.

    The machine's server at 127.0.0.1:5432 when it answers; otherwise a fresh database on the
    embedded server (this module's ``embedded_home``), so these tests run everywhere instead of
    skipping.
    """
    import sqlalchemy

    if _local_pg_answers():
        admin_url = LOCAL_PG_ADMIN
    else:
        admin_url = request.getfixturevalue("embedded_home")[1]
    name = f"hps_{uuid.uuid4().hex[:12]}"
    admin = sqlalchemy.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield with_database(admin_url, name)
    finally:
        with admin.connect() as c:
            c.exec_driver_sql(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}' AND pid <> pg_backend_pid()")
            c.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}"')
        admin.dispose()


@pytest.fixture(params=["embedded", "local"], scope="module")
def pg_url(request):
    """Each PostgreSQL the tests run against: the embedded server and the machine's.

    ``local`` is :func:`local_pg_url`: where the machine's server does not answer, a fresh
    database on the embedded server, so the test runs twice there instead of skipping.
    """
    if request.param == "embedded":
        return request.getfixturevalue("embedded_home")[1]
    return request.getfixturevalue("local_pg_url")


def closed_port() -> int:
    """A loopback TCP port that nothing listens on (bound, read, released)."""
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


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
