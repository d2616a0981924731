"""Issue 25: every hpsearch process keeps to 2 connections, and a refused connection is one line.

The README sizes ``max_connections`` at 2 per process. Each command here runs as a role made
with ``CONNECTION LIMIT 2`` on a real PostgreSQL, while a thread polls ``pg_stat_activity``
(as the superuser, for that role) every 20 ms and keeps the most connections it saw at once.
Before the fix ``init``, ``worker`` and ``dashboard`` each held 3, and ``init`` failed as an
"internal error" about invalid data and max length (Optuna's wording over the refusal).

A connection the server refuses (a connection limit, a login, a database) ends a command in one
line naming the cause and the fix, exit 2, the password masked, nothing half-written.
"""

from __future__ import annotations

import threading
import time
import urllib.request
import uuid

import psycopg2
import pytest
import sqlalchemy
from sqlalchemy.engine import make_url

from storage import StorageError, resolve_storage_url, retrying
from storage.engine import connect_error, connection, database_errors
from tests.conftest import LOCAL_PG_ADMIN, _local_pg_answers, run_cli
from tests.search_tests.landscape_tests._dashboard import Dashboard

LIMIT = 2
STUDY = "budget"
#: trust auth accepts any password: this one must never show
PASSWORD = f"Pw{uuid.uuid4().hex[:12]}"
SMALL = ["--trials", "2", "--epochs", "1", "--train-size", "500"]
QUERIES = [
    ["studies"],
    ["trials", "--study", STUDY],
    ["best", "--study", STUDY],
    ["top", "--study", STUDY],
    ["curves", "--study", STUDY],
    ["summary", "--study", STUDY],
    ["follow", "--study", STUDY, "--from-start"],  # ends at once: the study's budget is finished
]


@pytest.fixture(scope="module")
def admin_url(request):
    """The superuser's URL: the machine's server, else the embedded one (a fresh database each)."""
    return LOCAL_PG_ADMIN if _local_pg_answers() else request.getfixturevalue("embedded_home")[1]


@pytest.fixture(scope="module")
def limited(admin_url):
    """A role made ``CONNECTION LIMIT 2`` and a database it owns; yields (role, its URL).

    Both are dropped at teardown, whatever the tests did (connections left open are ended).
    """
    role = f"hps_budget_{uuid.uuid4().hex[:10]}"
    admin = sqlalchemy.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as c:
            c.exec_driver_sql(f'CREATE ROLE "{role}" LOGIN CONNECTION LIMIT {LIMIT}')
            c.exec_driver_sql(f'CREATE DATABASE "{role}" OWNER "{role}"')
        url = make_url(admin_url).set(drivername="postgresql+psycopg2", username=role, password=PASSWORD, database=role)
        yield role, url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as c:
            c.exec_driver_sql(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{role}' OR datname = '{role}'")
            c.exec_driver_sql(f'DROP DATABASE IF EXISTS "{role}"')
            c.exec_driver_sql(f'DROP ROLE IF EXISTS "{role}"')
        admin.dispose()


class Sampler:
    """Poll ``pg_stat_activity`` for ``role``'s connections every 20 ms while the block runs.

    ``peak``: the most seen at once; ``seen``: polls that saw at least one. ``sessions``: the
    connections made to the role's database during the block, from the server's own count
    (``pg_stat_database.sessions``), so whether the block connected at all does not depend
    on a poll catching a connection that lasted a few milliseconds (a ``query best`` under the
    suite's load was missed by all 27 polls).
    """

    def __init__(self, admin_url: str, role: str, connects: bool = True):
        self.engine = sqlalchemy.create_engine(admin_url, isolation_level="AUTOCOMMIT")
        self.role, self.connects = role, connects  # connects: wait for the block's sessions to be counted
        self.peak = self.seen = self.polls = self.sessions = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sessions(self) -> int:
        with self.engine.connect() as c:
            return c.execute(sqlalchemy.text("SELECT sessions FROM pg_stat_database WHERE datname = :d"), {"d": self.role}).scalar() or 0

    def _poll(self) -> None:
        q = sqlalchemy.text("SELECT count(*) FROM pg_stat_activity WHERE usename = :r")
        with self.engine.connect() as c:
            while not self._stop.is_set():
                n = c.execute(q, {"r": self.role}).scalar()
                self.polls += 1
                self.seen += n > 0
                self.peak = max(self.peak, n)
                time.sleep(0.02)

    def __enter__(self) -> Sampler:
        self._before = self._sessions()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        time.sleep(0.1)  # a last poll after the command ended
        self._stop.set()
        self._thread.join(10)
        # a backend's counts reach the server's statistics as it exits, a moment after the command
        deadline = time.monotonic() + (10 if self.connects else 0.5)
        while (sessions := self._sessions() - self._before) == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        self.sessions = sessions
        self.engine.dispose()

    def __repr__(self) -> str:
        return f"peak {self.peak}, {self.seen} of {self.polls} polls saw a connection, {self.sessions} sessions"


def _hold(role: str, url: str, n: int) -> list:
    """Open ``n`` connections as ``role`` (the role's own slots, taken from hpsearch)."""
    parsed = make_url(url)
    kw = {"user": role, "dbname": parsed.database, "host": parsed.query.get("host") or parsed.host}
    if parsed.port:
        kw["port"] = parsed.port
    return [psycopg2.connect(**kw) for _ in range(n)]


def _no_connections_left(admin_url: str, role: str, timeout: float = 10) -> None:
    """Wait until the role's last command's backends are gone (they exit a moment after it)."""
    engine = sqlalchemy.create_engine(admin_url)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with engine.connect() as c:
                if not c.exec_driver_sql(f"SELECT count(*) FROM pg_stat_activity WHERE usename = '{role}'").scalar():
                    return
            time.sleep(0.05)
        raise AssertionError(f"role {role} still holds connections after {timeout} s")
    finally:
        engine.dispose()


def _studies(admin_url: str, db: str) -> list[str] | None:
    """The study names in ``db`` (None: no Optuna schema there)."""
    engine = sqlalchemy.create_engine(make_url(admin_url).set(database=db))
    try:
        with engine.connect() as c:
            if not c.exec_driver_sql("SELECT to_regclass('studies') IS NOT NULL").scalar():
                return None
            return [r[0] for r in c.exec_driver_sql("SELECT study_name FROM studies")]
    finally:
        engine.dispose()


def _one_line_error(out, what: str) -> str:
    """The single line a refused command prints, checked for what every such line must be."""
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2, (what, out.returncode, out.stderr)
    assert len(lines) == 1 and lines[0].startswith(f"hpsearch {what}: error: cannot use storage "), (what, out.stderr)
    assert "Traceback" not in out.stderr and "internal error" not in out.stderr and "max length" not in out.stderr, out.stderr
    assert PASSWORD not in out.stdout + out.stderr and ":***@" in lines[0]
    return lines[0]


# --- the budget -----------------------------------------------------------------------------


def test_the_sampler_sees_connections_held_at_once(admin_url, limited):
    """The measurement can fail: two connections held together read as 2, none as 0."""
    role, url = limited
    _no_connections_left(admin_url, role)
    with Sampler(admin_url, role, connects=False) as idle:
        time.sleep(0.2)
    held = _hold(role, url, 2)
    try:
        with Sampler(admin_url, role, connects=False) as busy:
            time.sleep(0.2)
    finally:
        for c in held:
            c.close()
    assert idle.peak == 0 and busy.peak == 2 and busy.seen == busy.polls, (idle, busy)
    assert idle.sessions == 0  # the two were opened before the busy block began

    with Sampler(admin_url, role) as brief:
        _hold(role, url, 1)[0].close()  # one connection, made and closed inside the block
    assert brief.sessions == 1, brief


@pytest.mark.slow
def test_every_command_keeps_to_two_connections(admin_url, limited, mnist, tmp_path):
    """init, a worker, the dashboard and each query, one at a time, as a role limited to 2."""
    role, url = limited
    # The limit alone would hide a third connection from a worker: refused, it is retried while
    # the database is "away" and may get a slot once one is given back. A retry limit of 1 s
    # makes such a refusal end the worker instead (no slot comes back while it holds both).
    env = {"OPTUNA_STORAGE": url, "HPSEARCH_HOME": str(tmp_path / "home"), "HPSEARCH_DB_RETRY_S": "1"}
    data = ["--data", mnist] if mnist else []
    samples = {}

    def measured(name, *args, timeout=300):
        _no_connections_left(admin_url, role)
        with Sampler(admin_url, role) as s:
            out = run_cli(*args, env=env, timeout=timeout)
        samples[name] = s
        assert out.returncode == 0, (name, out.stderr)
        return out

    measured("init", "init", "--study", STUDY, *SMALL, *data)
    measured("worker", "worker", "--study", STUDY, *SMALL, "--quiet", *data)

    _no_connections_left(admin_url, role)
    with Sampler(admin_url, role) as s:
        dash = Dashboard("--port", "0", "--study", STUDY, env=env)
        try:
            page = dash.wait_url()
            with urllib.request.urlopen(page, timeout=60) as r:
                assert r.status == 200
        finally:
            code = dash.stop()  # by its pid, even when the request failed
    samples["dashboard"] = s
    assert code == 0, dash.logs
    assert PASSWORD not in dash.logs

    for q in QUERIES:
        out = measured(f"query {q[0]}", "query", *q, "--format", "csv" if q[0] == "follow" else "json", timeout=120)
        assert out.stdout.strip(), q

    assert all(s.sessions for s in samples.values()), f"a command ran without connecting: {samples}"
    over = {name: s for name, s in samples.items() if s.peak > LIMIT}
    assert not over, f"held more than {LIMIT} connections at once: {over} (all: {samples})"
    print({name: s.peak for name, s in samples.items()})


# --- refused connections ---------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("held", [2, 1], ids=["no-slot-left", "one-slot-left"])
def test_init_refused_for_want_of_a_slot_is_one_line_and_writes_no_study(admin_url, limited, mnist, tmp_path, held):
    """All the role's slots taken: the first connection is refused. One left: open_storage gets
    it, and Optuna's session for the study is refused under the study's lock (Optuna's
    StorageInternalError over the driver error), so the study is not created at all."""
    role, url = limited
    name = f"refused-{held}"
    _no_connections_left(admin_url, role)
    before = _studies(admin_url, role)
    conns = _hold(role, url, held)
    try:
        out = run_cli("init", "--study", name, *SMALL, *(["--data", mnist] if mnist else []),
                      env={"OPTUNA_STORAGE": url, "HPSEARCH_HOME": str(tmp_path / "home")}, timeout=300)
    finally:
        for c in conns:
            c.close()
    line = _one_line_error(out, "init")
    assert f'too many connections for role "{role}"' in line
    assert f"ALTER ROLE {role} CONNECTION LIMIT" in line and "PgBouncer" in line and "fewer workers" in line
    after = _studies(admin_url, role)
    assert name not in (after or []) and (after or []) == (before or []), (before, after)


def test_a_query_refused_for_want_of_a_slot_is_one_line(admin_url, limited):
    role, url = limited
    _no_connections_left(admin_url, role)
    conns = _hold(role, url, LIMIT)
    try:
        out = run_cli("query", "studies", env={"OPTUNA_STORAGE": url}, timeout=120)
    finally:
        for c in conns:
            c.close()
    line = _one_line_error(out, "query")
    assert "too many connections for role" in line and "CONNECTION LIMIT" in line


@pytest.mark.parametrize("case", ["unknown-role", "missing-database"])
def test_a_login_or_database_the_server_refuses_is_one_line(admin_url, limited, mnist, tmp_path, case):
    role, url = limited
    parsed = make_url(url)
    bad, expect = {
        "unknown-role": (parsed.set(username=f"nobody_{role}"), ("does not exist", "check the user and password")),
        "missing-database": (parsed.set(database=f"nodb_{role}"), ("does not exist", "createdb")),
    }[case]
    bad_url = bad.render_as_string(hide_password=False)
    for args in (["init", "--study", "x", *(["--data", mnist] if mnist else [])], ["query", "studies"]):
        out = run_cli(*args, env={"OPTUNA_STORAGE": bad_url, "HPSEARCH_HOME": str(tmp_path / "home")}, timeout=120)
        line = _one_line_error(out, args[0])
        assert all(text in line for text in expect), line
    assert _studies(admin_url, role) in (None, [], [STUDY]), "nothing was written for the refused commands"


# --- what the boundary makes of each refusal -------------------------------------------------


def _refused(message: str):
    return sqlalchemy.exc.OperationalError("connect", {}, psycopg2.OperationalError(message))


@pytest.mark.parametrize("message, fix, transient", [
    ('FATAL:  too many connections for role "hp"', "ALTER ROLE hp CONNECTION LIMIT N", True),
    ('FATAL:  too many connections for database "hpsearch"', "ALTER DATABASE hpsearch CONNECTION LIMIT N", True),
    ("FATAL:  sorry, too many clients already", "raise max_connections", True),
    ("FATAL:  remaining connection slots are reserved for roles with the SUPERUSER attribute", "raise max_connections", True),
    ('FATAL:  password authentication failed for user "hp"', "check the user and password", False),
    ('FATAL:  database "nope" does not exist', "createdb", False),
])
def test_each_refusal_names_its_fix_and_whether_a_retry_may_help(message, fix, transient):
    resolved = resolve_storage_url(f"postgresql://hp:{PASSWORD}@db:5432/hpsearch")
    err = connect_error(resolved, _refused(message))
    assert fix in str(err) and PASSWORD not in str(err) and err.transient is transient
    if transient:
        assert "PgBouncer" in str(err) and "fewer workers" in str(err)


def test_optunas_wrapper_is_unwrapped_at_the_boundary():
    """Optuna's "invalid data ... max length" message over a refused connection is not shown."""
    import optuna

    resolved = resolve_storage_url(f"postgresql://hp:{PASSWORD}@db:5432/hpsearch")
    with pytest.raises(StorageError) as e:
        with database_errors(resolved):
            try:
                raise _refused('FATAL:  too many connections for role "hp"')
            except sqlalchemy.exc.OperationalError as driver:
                raise optuna.exceptions.StorageInternalError("An exception is raised during the commit.") from driver
    assert "too many connections" in str(e.value) and "max length" not in str(e.value) and e.value.transient


def test_a_worker_waits_for_a_slot_and_says_refused_when_none_comes(limited):
    """During a worker's run a full role is transient: retrying waits for a slot (one is given
    back here after 1 s) and, when none comes within the limit, says that it was refused."""
    role, url = limited
    from storage import open_engine

    def count():
        engine = open_engine(url)
        try:
            with connection(engine) as c:
                return c.exec_driver_sql("SELECT 1").scalar()
        finally:
            engine.dispose()

    conns = _hold(role, url, LIMIT)
    try:
        with pytest.raises(StorageError, match=r"refused every connection for 1 s while counting .*too many connections for role.*CONNECTION LIMIT"):
            retrying(count, what="counting", limit_s=1.0)
        threading.Timer(1.0, conns.pop().close).start()
        assert retrying(count, what="counting", limit_s=20.0) == 1
    finally:
        for c in conns:
            c.close()
