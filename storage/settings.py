"""The environment variables storage reads, each documented once, and the one reader of them.

``search.study.config.ENV_VARS`` includes :data:`STORAGE_ENV_VARS`, so the project has one registry
(the README's configuration table is written from it) while the import direction stays
``search`` -> ``storage``. Defaults are declared here, next to the variable that overrides them.
"""

from __future__ import annotations

import os

from storage.errors import StorageConfigError

__all__ = ["STORAGE_ENV_VARS", "env", "env_seconds", "DB_RETRY_S", "HEARTBEAT_INTERVAL_S", "GRACE_PERIOD_S"]

#: A running trial writes a heartbeat this often; a trial whose heartbeat is older than the
#: grace period is taken for dead (its worker crashed) and failed, freeing its slot.
HEARTBEAT_INTERVAL_S = 30
GRACE_PERIOD_S = 120
#: How long storage calls are retried (with back-off) while the database is unreachable.
DB_RETRY_S = 60.0

#: Every environment variable storage reads, with what it does.
STORAGE_ENV_VARS: dict[str, str] = {
    "OPTUNA_STORAGE": "storage URL used when --storage is not given (the Optuna ecosystem's variable)",
    "HPSEARCH_HOME": "directory of the embedded PostgreSQL and worker logs (default ./.hpsearch)",
    "HPSEARCH_DB_RETRY_S": f"seconds a worker retries storage calls while the database is unreachable, then gives up (default {DB_RETRY_S:g})",
    "HPSEARCH_HEARTBEAT_S": f"seconds between a running trial's heartbeats (default {HEARTBEAT_INTERVAL_S})",
    "HPSEARCH_GRACE_S": f"seconds without a heartbeat after which a trial's worker is taken for dead (default {GRACE_PERIOD_S})",
}


def env(name: str, *, keep_empty: bool = False) -> str | None:
    """Read a registered storage variable; an empty value counts as unset unless ``keep_empty``.

    ``OPTUNA_STORAGE`` keeps an empty value, so that ``OPTUNA_STORAGE=`` is reported as an
    empty URL rather than silently falling back to the embedded server.
    """
    assert name in STORAGE_ENV_VARS, f"unregistered storage environment variable {name}"
    value = os.environ.get(name)
    if value is None or (not value and not keep_empty):
        return None
    return value


def env_seconds(name: str, default: float) -> float:
    """A registered variable read as a positive number of seconds, or ``default`` when unset.

    Raises:
        StorageConfigError: the value is not a positive number.
    """
    raw = env(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise StorageConfigError(f"{name}={raw!r} is not a number of seconds: set it to a positive number or unset it") from None
    if not value > 0:
        raise StorageConfigError(f"{name}={raw!r} must be a positive number of seconds")
    return value
