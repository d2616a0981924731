"""Refuse a damaged Optuna schema before Optuna touches it.

``RDBStorage`` runs ``create_all`` on every start, so a table that went missing (dropped by
hand, a partial restore) is recreated empty without a word, and a finished trial silently
loses its value (issue 15). A schema version that no installed Optuna knows fails deep inside
alembic. Both are checked here first and refused in one line naming the fix.

hpsearch's own tables are made here too, next to Optuna's (:func:`ensure_table`):
``hpsearch_epochs`` (:data:`TABLE`, read and written by :mod:`storage.epochs`) and
``hpsearch_checkpoints`` (:data:`CHECKPOINTS`, by :mod:`storage.checkpoints`, issue 24).

:func:`create_schema` makes the whole schema on the one connection that holds the schema lock
(issue 25): Optuna's first start on an empty database holds two connections at once
(``_VersionManager._init_alembic`` keeps one open while ``_is_alembic_supported`` opens a
session), and with the lock's connection that made three, past the 2 per process the README
promises; a role with ``CONNECTION LIMIT 2`` could not run ``hpsearch init``.
"""

from __future__ import annotations

import re
import threading
import weakref

import sqlalchemy

from storage.errors import StorageError
from storage.locks import SCHEMA_LOCK_KEY, xact_lock

__all__ = ["CHECKPOINTS", "TABLE", "check_schema", "create_schema", "ensure_table", "mark_ready", "has_epochs_table"]

#: hpsearch's table of every epoch of every trial (:mod:`storage.epochs`).
TABLE = "hpsearch_epochs"

_POSTGRES_DDL = (
    f"""CREATE TABLE IF NOT EXISTS {TABLE} (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        study_id integer NOT NULL REFERENCES studies (study_id) ON DELETE CASCADE,
        trial_id integer NOT NULL REFERENCES trials (trial_id) ON DELETE CASCADE,
        epoch integer NOT NULL,
        loss real, val_loss real, accuracy real, val_accuracy real, epoch_seconds real,
        reported_at timestamptz NOT NULL DEFAULT now())""",
    f"CREATE INDEX IF NOT EXISTS {TABLE}_study_id_id ON {TABLE} (study_id, id)",
    f"CREATE INDEX IF NOT EXISTS {TABLE}_trial_id ON {TABLE} (trial_id)",
)
_SQLITE_DDL = (
    f"""CREATE TABLE IF NOT EXISTS {TABLE} (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        study_id INTEGER NOT NULL REFERENCES studies (study_id) ON DELETE CASCADE,
        trial_id INTEGER NOT NULL REFERENCES trials (trial_id) ON DELETE CASCADE,
        epoch INTEGER NOT NULL,
        loss REAL, val_loss REAL, accuracy REAL, val_accuracy REAL, epoch_seconds REAL,
        reported_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP)""",
    f"CREATE INDEX IF NOT EXISTS {TABLE}_study_id_id ON {TABLE} (study_id, id)",
    f"CREATE INDEX IF NOT EXISTS {TABLE}_trial_id ON {TABLE} (trial_id)",
    # Optuna does not turn SQLite's foreign keys on, so the cascade needs a trigger there.
    f"""CREATE TRIGGER IF NOT EXISTS {TABLE}_trial_deleted AFTER DELETE ON trials
        BEGIN DELETE FROM {TABLE} WHERE trial_id = OLD.trial_id; END""",
)

#: hpsearch's table of the checkpoints of running trials (:mod:`storage.checkpoints`): one row
#: per trial at most, its bytes stored out of line without compression (float weights do not
#: compress, and trying costs a pass over megabytes at every write).
CHECKPOINTS = "hpsearch_checkpoints"

_POSTGRES_CHECKPOINTS_DDL = (
    f"""CREATE TABLE IF NOT EXISTS {CHECKPOINTS} (
        trial_id integer PRIMARY KEY REFERENCES trials (trial_id) ON DELETE CASCADE,
        study_id integer NOT NULL REFERENCES studies (study_id) ON DELETE CASCADE,
        epoch integer NOT NULL,
        nbytes bigint NOT NULL,
        data bytea NOT NULL,
        written_at timestamptz NOT NULL DEFAULT now())""",
    f"ALTER TABLE {CHECKPOINTS} ALTER COLUMN data SET STORAGE EXTERNAL",
    f"CREATE INDEX IF NOT EXISTS {CHECKPOINTS}_study_id ON {CHECKPOINTS} (study_id)",
)
_SQLITE_CHECKPOINTS_DDL = (
    f"""CREATE TABLE IF NOT EXISTS {CHECKPOINTS} (
        trial_id INTEGER PRIMARY KEY REFERENCES trials (trial_id) ON DELETE CASCADE,
        study_id INTEGER NOT NULL REFERENCES studies (study_id) ON DELETE CASCADE,
        epoch INTEGER NOT NULL,
        nbytes INTEGER NOT NULL,
        data BLOB NOT NULL,
        written_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP)""",
    f"""CREATE TRIGGER IF NOT EXISTS {CHECKPOINTS}_trial_deleted AFTER DELETE ON trials
        BEGIN DELETE FROM {CHECKPOINTS} WHERE trial_id = OLD.trial_id; END""",
)

# Engines known to have the table (a weak set: engines are disposed and collected).
_ready: "weakref.WeakSet" = weakref.WeakSet()
_ready_lock = threading.Lock()


def _script():
    """Optuna's alembic scripts (what ``RDBStorage`` stamps and upgrades with)."""
    from pathlib import Path

    import optuna.storages._rdb as rdb
    from alembic.script import ScriptDirectory

    return ScriptDirectory(str(Path(rdb.__file__).parent / "alembic"))


#: Optuna's own tables (``optuna.storages._rdb.models.BaseModel.metadata``; a test checks the
#: two agree), named here so that checking a schema imports neither Optuna nor alembic.
OPTUNA_TABLES = frozenset({
    "studies", "study_directions", "study_system_attributes", "study_user_attributes", "trial_heartbeats",
    "trial_intermediate_values", "trial_params", "trial_system_attributes", "trial_user_attributes", "trial_values",
    "trials", "version_info",
})

_REVISION = re.compile(r"""^revision\s*=\s*["']([^"']+)["']""", re.MULTILINE)


def _known_versions() -> set[str]:
    """The schema versions (alembic revisions) the installed Optuna knows.

    Read from the ``revision = "..."`` line of each of Optuna's migration scripts, as alembic
    reads them, without importing Optuna or alembic: those imports were 0.4 s of every
    ``hpsearch query`` (a test checks the set against alembic's own walk of the scripts).
    Where the scripts are not plain files, alembic reads them.
    """
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("optuna")
    versions = Path(spec.origin).parent / "storages" / "_rdb" / "alembic" / "versions" if spec and spec.origin else None
    found = set()
    if versions is not None and versions.is_dir():
        for script in versions.glob("*.py"):
            found.update(_REVISION.findall(script.read_text(encoding="utf-8")))
    return found or {r.revision for r in _script().walk_revisions()}


def check_schema(conn, where: str) -> None:
    """Check the Optuna schema on ``conn``: absent (Optuna makes it) or whole and known.

    Args:
        conn: a SQLAlchemy connection to the storage.
        where: the storage's masked URL, for the message.

    Raises:
        StorageError: some of Optuna's tables are missing, or the schema version is unknown.
    """
    expected = set(OPTUNA_TABLES)
    present = set(sqlalchemy.inspect(conn).get_table_names())
    if not expected & present:
        return  # a fresh database: Optuna creates the schema
    missing = sorted(expected - present)
    if missing:
        raise StorageError(
            f"the Optuna schema in {where} is damaged: table {', '.join(missing)} is missing while the others exist; hpsearch will not recreate it empty (finished trials would lose their data): restore the database from a backup, or use another --storage"
        )
    if "alembic_version" not in present:
        return  # Optuna records the version in version_info too and checks it itself
    version = conn.execute(sqlalchemy.text("SELECT version_num FROM alembic_version")).scalar()
    if version is not None and version not in _known_versions():
        import optuna

        raise StorageError(
            f"the Optuna schema in {where} has version {version!r}, which Optuna {optuna.__version__} does not know (written by a newer Optuna, or damaged): pip install --upgrade optuna, or use another --storage"
        )


def create_schema(conn) -> None:
    """Make what ``RDBStorage`` makes on its first start, and hpsearch's tables, on ``conn`` alone.

    Optuna's tables (``create_all``, which skips those present), its ``version_info`` row and
    its alembic revision (the head; the base for a schema older than alembic, as Optuna
    decides), each only where missing. Call it in the transaction that holds the schema lock,
    after :func:`check_schema`: ``RDBStorage`` then finds all of it and opens one connection
    at a time, after the lock is released. Idempotent, and no DDL where the schema is whole (a
    role that may not create tables still opens a storage).
    """
    import optuna
    from alembic.migration import MigrationContext
    from optuna.storages._rdb import models

    models.BaseModel.metadata.create_all(conn)
    info = models.VersionInfoModel.__table__
    found = conn.execute(sqlalchemy.select(info.c.schema_version)).first()
    if found is None:
        conn.execute(info.insert().values(version_info_id=1, schema_version=models.SCHEMA_VERSION, library_version=optuna.__version__))
    context = MigrationContext.configure(conn)
    if context.get_current_revision() is None:
        script = _script()
        current = found is None or found.schema_version == models.SCHEMA_VERSION
        context.stamp(script, script.get_current_head() if current else script.get_base())
    _create(conn)


def mark_ready(engine) -> None:
    """Record that ``engine``'s database has the epochs table (made by :func:`create_schema`)."""
    with _ready_lock:
        _ready.add(engine)


def ensure_table(engine, conn=None) -> None:
    """Create hpsearch's tables (epochs, checkpoints) and their indexes where missing (idempotent).

    On PostgreSQL this runs under hpsearch's schema advisory lock, as Optuna's own tables are
    created (``CREATE TABLE IF NOT EXISTS`` from several processes at once can fail). Pass
    ``conn`` when the caller already holds that lock in an open transaction.
    """
    if engine in _ready:
        return
    with _ready_lock:
        if conn is not None:
            _create(conn)
        else:
            with engine.connect() as c:
                if engine.dialect.name == "postgresql":
                    with xact_lock(c, SCHEMA_LOCK_KEY):
                        _create(c)
                else:
                    with c.begin():
                        _create(c)
        _ready.add(engine)


def _create(conn) -> None:
    # No DDL when a table is there: a role that may write rows but not create tables
    # (a shared production database) must still open the storage. A database made before
    # issue 24 has the epochs table only: the checkpoints table is added beside it.
    postgres = conn.dialect.name == "postgresql"
    for table, ddl in ((TABLE, _POSTGRES_DDL if postgres else _SQLITE_DDL),
                       (CHECKPOINTS, _POSTGRES_CHECKPOINTS_DDL if postgres else _SQLITE_CHECKPOINTS_DDL)):
        if _table_exists(conn, table):
            continue
        for statement in ddl:
            conn.exec_driver_sql(statement)


def has_epochs_table(conn) -> bool:
    return conn.engine in _ready or _table_exists(conn)


def _table_exists(conn, table: str = TABLE) -> bool:
    if conn.dialect.name == "postgresql":
        found = conn.execute(sqlalchemy.text("SELECT to_regclass(:t) IS NOT NULL"), {"t": table}).scalar()
    else:
        found = conn.execute(sqlalchemy.text("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = :t"), {"t": table}).scalar()
    return bool(found)
