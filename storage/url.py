"""Resolve, validate and mask storage URLs.

Precedence follows the Optuna ecosystem: the ``--storage`` flag, else the ``OPTUNA_STORAGE``
environment variable, else the embedded PostgreSQL under ``HPSEARCH_HOME``. Every URL that
reaches a log, an error or the terminal goes through :func:`mask_url` first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from storage.errors import StorageConfigError
from storage.settings import env

__all__ = ["ResolvedStorage", "mask_url", "validate_url", "resolve_storage_url", "scrub", "scrub_traceback"]

# Drivers we install and test. MySQL works with Optuna, but we ship no MySQL driver and do not
# test it, so we refuse it rather than fail later with an ImportError.
_SUPPORTED = {
    "postgresql": "postgresql+psycopg2",
    "postgresql+psycopg2": "postgresql+psycopg2",
    "postgres": "postgresql+psycopg2",
    "sqlite": "sqlite",
    "sqlite+pysqlite": "sqlite",
}

_EXAMPLE = "postgresql+psycopg2://USER:PASSWORD@HOST:5432/DATABASE"


@dataclass(frozen=True)
class ResolvedStorage:
    """A validated storage URL and where it came from.

    Attributes:
        url: the URL to connect with (may hold a password: never print it, print ``masked``).
        source: ``"--storage"``, ``"OPTUNA_STORAGE"`` or ``"embedded"``.
    """

    url: str
    source: str

    @property
    def masked(self) -> str:
        return mask_url(self.url)

    @property
    def is_postgresql(self) -> bool:
        return self.url.startswith("postgresql")

    @property
    def is_sqlite(self) -> bool:
        return self.url.startswith("sqlite")


def mask_url(url: str) -> str:
    """Return ``url`` with any password replaced by ``***``.

    Works on URLs SQLAlchemy cannot parse too, so that an error about a malformed URL never
    echoes its password.
    """
    # user:password@ in the authority part, up to its last '@' (an unencoded '@' in the
    # password must not leave the rest of it showing); the password may not contain '/'.
    masked = re.sub(r"(?<=://)([^:/@]*):([^/]*)@", lambda m: f"{m.group(1)}:***@" if m.group(2) else m.group(0), url)
    # password=... as a query parameter (libpq style)
    masked = re.sub(r"(?i)(password=)[^&\s]*", r"\1***", masked)
    return masked


def scrub(text: str, url: str | None) -> str:
    """Remove the password of ``url`` from ``text`` (for driver messages that echo it)."""
    if not url:
        return text
    raw = _raw_password(url)
    if raw is not None:
        # From the text itself: with an unencoded '@' in the password, SQLAlchemy's parse
        # keeps only its first part, and replacing that would leave the rest showing.
        from urllib.parse import unquote

        passwords = {raw, unquote(raw)}
    else:
        try:
            from sqlalchemy.engine import make_url

            passwords = {make_url(url).password}
        except Exception:  # an unparsable URL: fall back to masking URL-shaped text only
            passwords = set()
    for password in sorted((str(p) for p in passwords if p), key=len, reverse=True):
        text = text.replace(password, "***")
    return mask_url(text)


def scrub_traceback(exc: BaseException, url: str | None) -> str:
    """The traceback of ``exc`` with its whole chain, as ``--debug`` prints it, password removed.

    Errors are chained ``from`` the driver error they translate, and a driver message may
    echo the connection string; every line goes through :func:`scrub`.
    """
    import traceback

    return scrub("".join(traceback.format_exception(exc)), url)


def _raw_password(url: str) -> str | None:
    """The password as written in ``url``'s authority (up to its last '@'), else None."""
    if "://" not in url:
        return None
    authority = url.split("://", 1)[1].split("/", 1)[0]
    if "@" not in authority:
        return None
    userinfo = authority.rsplit("@", 1)[0]
    return userinfo.split(":", 1)[1] if ":" in userinfo else None


def validate_url(url: str, source: str) -> str:
    """Check that ``url`` is a storage URL hpsearch can use and return it normalised.

    ``postgresql://`` and ``postgres://`` are normalised to ``postgresql+psycopg2://``.

    Raises:
        StorageConfigError: the URL is empty, malformed or names an unsupported driver.
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    url = url.strip()
    if not url:
        raise StorageConfigError(f"{source} is empty: give a URL such as {_EXAMPLE}, or unset it to use the embedded PostgreSQL")
    authority = url.split("://", 1)[1].split("/", 1)[0] if "://" in url else ""
    if authority.count("@") > 1:
        raise StorageConfigError(
            f"{source} has more than one '@' before the host ({mask_url(url)!r}): percent-encode an '@' in the user or password as %40"
        )
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        raise StorageConfigError(
            f"{source} is not a valid storage URL ({mask_url(url)!r}): use the form {_EXAMPLE} or sqlite:///path/to/file.db"
        ) from None
    driver = parsed.drivername
    if driver not in _SUPPORTED:
        raise StorageConfigError(
            f"{source} uses the unsupported driver {driver!r}: use postgresql+psycopg2:// (or sqlite:/// for one worker)"
        )
    normalised = parsed.set(drivername=_SUPPORTED[driver])
    if normalised.drivername.startswith("postgresql"):
        if not normalised.database:
            raise StorageConfigError(f"{source} names no database ({mask_url(url)!r}): append /DATABASE, as in {_EXAMPLE}")
        if parsed.port is not None and not (0 < parsed.port < 65536):
            raise StorageConfigError(f"{source} has port {parsed.port}, outside 1-65535")
    elif not normalised.database or normalised.database == ":memory:":
        raise StorageConfigError(
            f"{source} is an in-memory SQLite URL, which no other process can see: use sqlite:///path/to/file.db"
        )
    return normalised.render_as_string(hide_password=False)


def resolve_storage_url(flag: str | None, *, home: str | None = None) -> ResolvedStorage:
    """Resolve the storage URL: ``--storage`` flag > ``OPTUNA_STORAGE`` > embedded PostgreSQL.

    Starting the embedded server is the slow path (about a second), so it only happens when
    neither the flag nor the variable is set. A URL naming an embedded server (as ``hpsearch
    launch`` hands its workers) is noted, so that a worker starts that server again if it dies.
    """
    from storage.embedded import embedded_url, note_embedded_url

    if flag is not None:
        resolved = ResolvedStorage(validate_url(flag, "--storage"), "--storage")
    elif (from_env := env("OPTUNA_STORAGE", keep_empty=True)) is not None:
        resolved = ResolvedStorage(validate_url(from_env, "OPTUNA_STORAGE"), "OPTUNA_STORAGE")
    else:
        return ResolvedStorage(embedded_url(home), "embedded")
    note_embedded_url(resolved.url)  # an embedded server's URL handed on (hpsearch launch's workers)
    return resolved
