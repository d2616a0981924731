"""Serve optuna-dashboard on a study storage, with the loss landscape refreshed first.

``optuna-dashboard URL`` takes the storage URL on its command line, where ``ps`` shows any
password in it to every user of the machine. ``hpsearch dashboard`` resolves the URL the
usual way (``--storage`` > ``OPTUNA_STORAGE`` > the embedded PostgreSQL) and serves
optuna-dashboard's WSGI application (``optuna_dashboard.wsgi``) from this process, so the URL
only ever lives in memory; everything printed shows it masked. The same server answers the
live loss landscape's routes (``/live/...``, :mod:`search.landscape.live`), and each study's note links
to its live page.

The server is the standard library's threaded WSGI server, as ``optuna_dashboard.run_server``
uses (through bottle): fine for the handful of people who look at a study. optuna-dashboard
has no authentication, and loopback is shared by every user of the machine, so every request
goes through :class:`search.landscape.access.Access`: it needs the token printed at start and,
unless ``--allow-writes``, only reads. The server binds 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import errno
import ipaddress
import signal
import socket
import sys
import threading
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from search.errors import ConfigError

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "is_loopback", "serve_dashboard"]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a browser's open connection must not keep Ctrl-C from stopping it


class _Server6(_Server):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    """No access log: the dashboard polls every few seconds, and stderr is for hpsearch."""

    def log_message(self, format, *args):  # noqa: A002 (the standard library's name)
        pass


class _Stop(Exception):
    """SIGTERM: stop serving the way Ctrl-C does."""


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _url_host(host: str) -> str:
    """The host to print in the URL: "all interfaces" (0.0.0.0, ::) is no address to open."""
    bare = host.strip("[]")
    shown = {"0.0.0.0": DEFAULT_HOST, "::": "::1"}.get(bare, bare)
    return f"[{shown}]" if ":" in shown else shown


def _bind(host: str, port: int) -> _Server:
    """Listen on ``host:port`` now, so a port in use fails before any slow work."""
    server_class = _Server6 if ":" in host else _Server
    try:
        return server_class((host.strip("[]"), port), _QuietHandler)
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise ConfigError(f"port {port} on {host} is already in use: choose another with --port, or stop what serves there") from None
        if e.errno == errno.EACCES:
            raise ConfigError(f"no permission to listen on port {port}: ports below 1024 need root; use --port {DEFAULT_PORT}") from None
        reason = e.strerror or str(e)
        raise ConfigError(f"cannot listen on --host {host} ({reason}): use {DEFAULT_HOST}, or an address of this machine") from None


def _refresh_all(storage, names: list[str], err) -> None:
    import optuna

    from search.landscape.refresh import refresh_landscape

    for name in names:
        try:
            study = optuna.load_study(study_name=name, storage=storage)
            result = refresh_landscape(study, storage)
        except Exception as e:  # a study we cannot draw must not keep the others from being served
            print(f"hpsearch dashboard: warning: could not refresh the landscape of study {name!r}: {type(e).__name__}: {' '.join(str(e).split())[:200]}", file=err)
            continue
        if result.refreshed:
            print(f"landscape of study {name!r}: {result.trials} trials, {len(result.figures)} figures ({result.bytes / 1e3:.0f} kB) in {result.seconds:.1f} s", file=err)
        else:
            print(f"landscape of study {name!r}: not drawn ({result.reason})", file=err)


def _link_live_pages(storage, names: list[str], err) -> None:
    from search.study.note import link_live_page

    for name in names:
        try:
            link_live_page(storage, storage.get_study_id_from_name(name))
        except Exception as e:  # a note we cannot write must not keep the dashboard from serving
            print(f"hpsearch dashboard: warning: could not link the live page in the note of study {name!r}: {type(e).__name__}: {' '.join(str(e).split())[:200]}", file=err)


def serve_dashboard(storage_flag: str | None, study: str | None = None, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
                    *, allow_writes: bool = False, no_token: bool = False, out=None, err=None) -> int:
    """Refresh the landscape of the studies served, then serve optuna-dashboard until stopped.

    Args:
        storage_flag: the ``--storage`` flag (None: ``OPTUNA_STORAGE``, else the embedded
            PostgreSQL).
        study: serve this study's page (the URL printed opens it) and refresh only its
            landscape; None refreshes every study in the storage (and opens the only one,
            if there is one). A study not in the storage is warned about, not an error: a
            deployment may start the dashboard before its first worker creates the study.
        host, port: where to listen; port 0 picks a free port (the URL printed shows it).
        allow_writes: let requests change studies (POST, PUT, DELETE, PATCH); otherwise they
            are refused with 403 and the dashboard only reads.
        no_token: serve every request without a token (else the token of
            ``HPSEARCH_DASHBOARD_TOKEN``, or a new one, printed once in the URL).
        out: where the URL to open is printed (stdout); err: progress and warnings (stderr).

    Returns:
        0 once stopped by Ctrl-C (SIGINT) or SIGTERM.

    Raises:
        ConfigError: the port is in use, the host cannot be listened on, or
            ``HPSEARCH_DASHBOARD_TOKEN`` is too short.
        StorageError: the storage cannot be reached.
    """
    out, err = out or sys.stdout, err or sys.stderr
    if not 0 <= port <= 65535:  # before resolving storage, which may start the embedded server
        raise ConfigError(f"--port {port} is outside 0-65535: use a free port such as {DEFAULT_PORT}")
    from search.landscape.access import TOKEN_ENV, Access, resolve_token

    token, generated = resolve_token(no_token)
    from storage import open_storage, resolve_storage_url, study_names
    from storage.url import mask_url

    resolved = resolve_storage_url(storage_flag)
    if resolved.source == "--storage" and mask_url(storage_flag) != storage_flag:
        print("hpsearch dashboard: warning: the password in --storage shows in the process list (ps) while the dashboard runs: set OPTUNA_STORAGE instead", file=err)
    server = _bind(host, port)  # before the warning: a host that cannot be bound is one line
    changes = ", change and delete" if allow_writes else ""
    if token is None:
        who = "every user of this machine" if is_loopback(host) else f"anyone who can reach port {server.server_port} on {host}"
        print(f"hpsearch dashboard: warning: --no-token: there is no authentication; {who} can read{changes} every study: drop --no-token", file=err)
    elif not is_loopback(host):
        print(f"hpsearch dashboard: warning: listening on {host}: the token travels in plain HTTP, which anyone on the network between can read; prefer ssh -L {DEFAULT_PORT}:127.0.0.1:{server.server_port} or a proxy with TLS", file=err)
    storage = None
    try:
        storage = open_storage(resolved, heartbeat=False)
        names = study_names(storage.engine)
        if study is not None and study not in names:
            # A deployment may start the dashboard before its study exists: serve anyway.
            held = ", ".join(repr(n) for n in names) or "no studies"
            print(f"hpsearch dashboard: warning: study {study!r} is not in {resolved.masked} yet (it holds {held}); serving the dashboard anyway", file=err)
            study = None
        elif study is None and len(names) == 1:
            study = names[0]  # the page to open is that study's
            _refresh_all(storage, names, err)
        else:
            _refresh_all(storage, [study] if study is not None else names, err)

        import optuna_dashboard

        from search.landscape.live import with_live
        from search.study.note import live_path

        _link_live_pages(storage, [study] if study is not None else names, err)
        app = with_live(storage, optuna_dashboard.wsgi(storage))
        server.set_app(Access(app, token=token, allow_writes=allow_writes, port=server.server_port))
        path = "/dashboard" if study is None else f"/dashboard/studies/{storage.get_study_id_from_name(study)}"
        if token is not None:
            # Printed once, and only when made here: a token set in the environment stays out of logs.
            path += f"?token={token if generated else '$' + TOKEN_ENV}"
        print(f"optuna-dashboard on {resolved.masked}: open http://{_url_host(host)}:{server.server_port}{path}", file=out, flush=True)
        if allow_writes:
            print("writes allowed (--allow-writes): whoever has the token can change and delete the studies", file=err, flush=True)
        else:
            print("read-only: requests that would change a study are refused (restart with --allow-writes to allow them)", file=err, flush=True)
        if study is not None:
            live = live_path(storage.get_study_id_from_name(study))
            print(f"live loss landscape: http://{_url_host(host)}:{server.server_port}{live}", file=err, flush=True)
        print("press Ctrl-C to stop", file=err, flush=True)
        return _serve(server)
    finally:
        server.server_close()
        if storage is not None:
            storage.engine.dispose()


def _serve(server: _Server) -> int:
    def on_term(signum, frame):
        raise _Stop()

    old = None
    if threading.current_thread() is threading.main_thread():
        old = signal.signal(signal.SIGTERM, on_term)
    try:
        server.serve_forever(poll_interval=0.5)
    except (KeyboardInterrupt, _Stop):
        print("hpsearch dashboard: stopped", file=sys.stderr)
    finally:
        if old is not None:
            signal.signal(signal.SIGTERM, old)
    return 0
