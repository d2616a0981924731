"""hpsearch's PostgreSQL advisory locks: one lock class, a key per purpose and study.

Every hpsearch lock lives in one advisory-lock class (``"HP"``), with a key per purpose and
study hashed by :func:`lock_key`, so no two purposes or studies collide by accident and no
other application's locks are touched. The per-study locks built on these are
:mod:`storage.fleet`'s; the schema lock is taken by :mod:`storage.schema`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy

__all__ = ["LOCK_CLASS", "SCHEMA_LOCK_KEY", "lock_key", "xact_lock"]

#: The advisory-lock class every hpsearch lock shares ("HP").
LOCK_CLASS = 0x4850
#: The key that serialises Optuna's table creation (key 0 is never a hash: see lock_key).
SCHEMA_LOCK_KEY = 0


def lock_key(study_name: str, purpose: str) -> int:
    """The advisory-lock key of ``purpose`` on ``study_name``: a signed 32-bit hash, never 0."""
    digest = hashlib.sha256(f"{purpose}\0{study_name}".encode()).digest()
    return int.from_bytes(digest[:4], "big", signed=True) or 1


@contextmanager
def xact_lock(conn, key: int) -> Iterator[None]:
    """Hold a transaction-level advisory lock on ``conn`` for the block (PostgreSQL)."""
    with conn.begin():
        conn.execute(sqlalchemy.text("SELECT pg_advisory_xact_lock(:c, :k)"), {"c": LOCK_CLASS, "k": key})
        yield
