"""Refuse a damaged Optuna schema before Optuna touches it.

``RDBStorage`` runs ``create_all`` on every start, so a table that went missing (dropped by
hand, a partial restore) is recreated empty without a word, and a finished trial silently
loses its value (issue 15). A schema version that no installed Optuna knows fails deep inside
alembic. Both are checked here first and refused in one line naming the fix.
"""

from __future__ import annotations

import sqlalchemy

from storage.errors import StorageError

__all__ = ["check_schema"]


def _known_versions() -> set[str]:
    from pathlib import Path

    import optuna.storages._rdb as rdb
    from alembic.script import ScriptDirectory

    return {r.revision for r in ScriptDirectory(str(Path(rdb.__file__).parent / "alembic")).walk_revisions()}


def check_schema(conn, where: str) -> None:
    """Check the Optuna schema on ``conn``: absent (Optuna makes it) or whole and known.

    Args:
        conn: a SQLAlchemy connection to the storage.
        where: the storage's masked URL, for the message.

    Raises:
        StorageError: some of Optuna's tables are missing, or the schema version is unknown.
    """
    import optuna
    from optuna.storages._rdb import models

    expected = set(models.BaseModel.metadata.tables)
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
        raise StorageError(
            f"the Optuna schema in {where} has version {version!r}, which Optuna {optuna.__version__} does not know (written by a newer Optuna, or damaged): pip install --upgrade optuna, or use another --storage"
        )
