"""Who may use ``hpsearch dashboard``: a token for every request, and writes only when asked for.

optuna-dashboard has no authentication, and its API writes: ``DELETE /api/studies/<id>``
deletes a study, and other routes tell trials, rename studies and edit notes. Binding 127.0.0.1
is no protection on a shared machine, where every local account reaches loopback (issue 25).
:class:`Access` wraps the dashboard's WSGI app (optuna-dashboard and the ``/live`` routes):

* **The token.** Generated at start (:func:`secrets.token_urlsafe`) unless
  ``HPSEARCH_DASHBOARD_TOKEN`` fixes it, and accepted, as Jupyter accepts its own, as
  ``?token=`` on any request, as an ``Authorization: token <token>`` (or ``Bearer``) header for
  scripts, or from the cookie set on the first request that brought it in its URL (HttpOnly,
  SameSite=Strict, path /), which carries the browser's session: optuna-dashboard's pages and
  their XHR calls, and the live page, its feed and its scripts. Anything else is 403 and reads
  nothing. Tokens are compared in constant time (:func:`hmac.compare_digest`).
* **Writes.** Every optuna-dashboard request that changes a study is a POST, PUT or DELETE
  (creating, renaming and deleting studies, notes, telling and skipping trials, user
  attributes, preferences, artifacts, and the ``/incompatible-rdb-schema`` upgrade); its only
  POSTs that write nothing are ``/api/llm/*``, which need an LLM provider hpsearch never
  configures. Its reads are all GET, so read-only is "GET and HEAD only": anything else is 403
  unless the dashboard was started with ``--allow-writes``. Even then a write must come from
  the dashboard's own origin (``Origin`` and ``Sec-Fetch-Site``): a page another user serves on
  127.0.0.1 is "same-site" to the browser, so SameSite alone would send it the cookie.
"""

from __future__ import annotations

import hmac
import json
import secrets
from urllib.parse import parse_qsl, urlencode, urlsplit

from search.env import env
from search.errors import ConfigError

__all__ = ["READ_METHODS", "TOKEN_ENV", "Access", "cookie_name", "resolve_token"]

#: The environment variable that fixes the token (deployments, scripts that restart it).
TOKEN_ENV = "HPSEARCH_DASHBOARD_TOKEN"
#: The methods optuna-dashboard and the live routes read with; every other one may write.
READ_METHODS = frozenset({"GET", "HEAD"})
#: Shorter fixed tokens are refused: the token is all that stands between a local user and the studies.
MIN_TOKEN_CHARS = 16


def resolve_token(no_token: bool) -> tuple[str | None, bool]:
    """The token the dashboard requires, and whether it was generated (rather than set).

    ``--no-token`` > ``HPSEARCH_DASHBOARD_TOKEN`` > a new ``secrets.token_urlsafe(32)``.

    Raises:
        ConfigError: ``HPSEARCH_DASHBOARD_TOKEN`` is shorter than 16 characters or holds
            characters a URL or a cookie cannot carry unescaped.
    """
    if no_token:
        return None, False
    fixed = env(TOKEN_ENV)
    if fixed is None:
        return secrets.token_urlsafe(32), True
    allowed = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~")
    if len(fixed) < MIN_TOKEN_CHARS or not set(fixed) <= allowed:
        raise ConfigError(f"{TOKEN_ENV} must be at least {MIN_TOKEN_CHARS} characters of letters, digits, '-', '_', '.' or '~': make one with: python3 -c 'import secrets; print(secrets.token_urlsafe(32))'")
    return fixed, False


def cookie_name(port: int) -> str:
    """The cookie's name: browsers share cookies between the ports of one host, so the port is in it."""
    return f"hpsearch-dashboard-{port}"


def _same(given: str | None, token: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode("utf-8", "replace"), token.encode())


def _from_header(environ) -> str | None:
    scheme, _, value = environ.get("HTTP_AUTHORIZATION", "").strip().partition(" ")
    return value.strip() if scheme.lower() in ("token", "bearer") and value.strip() else None


def _from_cookie(environ, name: str) -> list[str]:
    # Parsed by hand: other apps on this host (any port) add their cookies to the header, and a
    # malformed one must not make http.cookies reject ours.
    found = []
    for part in environ.get("HTTP_COOKIE", "").split(";"):
        key, sep, value = part.strip().partition("=")
        if sep and key == name:
            found.append(value.strip().strip('"'))
    return found


class Access:
    """WSGI middleware: the token on every request, and writes only with ``allow_writes``.

    Args:
        app: the dashboard's WSGI app.
        token: the token every request must bring; None serves everyone who reaches the port
            (``--no-token``).
        allow_writes: let POST, PUT, DELETE and PATCH through (``--allow-writes``).
        port: the port served, which names the cookie (:func:`cookie_name`).
    """

    def __init__(self, app, *, token: str | None, allow_writes: bool, port: int):
        self.app = app
        self.token = token
        self.allow_writes = allow_writes
        self.cookie = cookie_name(port)

    def __call__(self, environ, start_response):
        start = start_response
        if self.token is not None:
            query = parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True)
            in_url = [v for k, v in query if k == "token"]
            if not any(_same(t, self.token) for t in [*in_url, _from_header(environ), *_from_cookie(environ, self.cookie)]):
                what = "a wrong token" if in_url or _from_header(environ) else "no token"
                reason = f"this dashboard needs the token it printed when it started, and this request brought {what}: open the URL that `hpsearch dashboard` printed (it ends in ?token=...), or send the header 'Authorization: token <token>'"
                return self._refuse(environ, start_response, reason)
            if in_url:
                # The app never sees the token; the browser keeps it for the pages and calls to come.
                environ["QUERY_STRING"] = urlencode([(k, v) for k, v in query if k != "token"])
                start = self._with_cookie(start_response)
        method = environ.get("REQUEST_METHOD", "GET").upper()
        if method not in READ_METHODS:
            path = environ.get("PATH_INFO", "")
            if not self.allow_writes:
                reason = f"this dashboard is read-only, so {method} {path[:100]} was refused and nothing changed: to change studies through it, restart it with `hpsearch dashboard --allow-writes`"
                return self._refuse(environ, start_response, reason)
            if not self._same_origin(environ):
                reason = f"{method} {path[:100]} came from another site's page and was refused: change studies from the dashboard's own pages"
                return self._refuse(environ, start_response, reason)
        return self.app(environ, start)

    def _with_cookie(self, start_response):
        cookie = f"{self.cookie}={self.token}; Path=/; HttpOnly; SameSite=Strict"

        def start(status, headers, exc_info=None):
            return start_response(status, [*headers, ("Set-Cookie", cookie)], exc_info)

        return start

    @staticmethod
    def _same_origin(environ) -> bool:
        if environ.get("HTTP_SEC_FETCH_SITE", "same-origin") not in ("same-origin", "none"):
            return False
        origin = environ.get("HTTP_ORIGIN")
        if origin is None:
            return True  # not a browser's cross-origin request: browsers send Origin on those
        return urlsplit(origin).netloc == environ.get("HTTP_HOST", "")

    @staticmethod
    def _refuse(environ, start_response, reason: str):
        path = environ.get("PATH_INFO", "")
        if path.startswith(("/api/", "/live/api/")) or "json" in environ.get("HTTP_ACCEPT", ""):
            body, kind = json.dumps({"error": reason}).encode(), "application/json"
        else:
            body, kind = f"403 Forbidden: {reason}\n".encode(), "text/plain; charset=utf-8"
        start_response("403 Forbidden", [("Content-Type", kind), ("Content-Length", str(len(body))), ("Cache-Control", "no-store"),
                                         ("X-Content-Type-Options", "nosniff")])
        return [b"" if environ.get("REQUEST_METHOD") == "HEAD" else body]
