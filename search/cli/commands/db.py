"""``hpsearch db ACTION``: the embedded PostgreSQL (url, start, stop, status) and the SQL view."""

from __future__ import annotations

from search.cli.args import debug_parent, storage_parent
from search.cli.commands import Command, Group

__all__ = ["Db"]


class _Url(Command, name="url", help="start the server if needed and print its URL", parents=(debug_parent,)):
    def run(self, args) -> int:
        from storage import embedded_url

        print(embedded_url())
        return 0


class _Start(Command, name="start", help="start the server", parents=(debug_parent,)):
    def run(self, args) -> int:
        from storage import embedded_status, embedded_url

        was_running = embedded_status()["running"]
        url = embedded_url()
        print(f"embedded PostgreSQL {'already running' if was_running else 'started'}: {url}")
        return 0


class _Stop(Command, name="stop", help="stop the server", parents=(debug_parent,)):
    def run(self, args) -> int:
        from storage import stop_embedded

        print("embedded PostgreSQL stopped" if stop_embedded() else "embedded PostgreSQL was not running")
        return 0


class _Status(Command, name="status", help="say whether the server runs, as JSON", parents=(debug_parent,)):
    def run(self, args) -> int:
        import json

        from storage import embedded_status

        print(json.dumps(embedded_status(), indent=2))
        return 0


class _Views(Command, name="views", help="create (or replace) the SQL view hpsearch_trials: one row per trial, for psql and BI tools",
             parents=(storage_parent,)):
    """Create (or replace) the PostgreSQL view hpsearch_trials in the storage database: one row per
    trial with its study, state, learning rate, value, epochs, test accuracy, duration, host, GPU
    and datetimes (UTC).

    example:
      hpsearch db views --storage postgresql+psycopg2://user@db/hpsearch
      psql -d hpsearch -c 'SELECT study, number, learning_rate, value FROM hpsearch_trials ORDER BY value DESC LIMIT 5'
    """

    def run(self, args) -> int:
        from storage.engine import open_engine
        from storage.errors import StorageConfigError
        from storage.url import resolve_storage_url
        from storage.views import create_views

        resolved = resolve_storage_url(args.storage)
        if not resolved.is_postgresql:
            raise StorageConfigError(f"hpsearch db views needs a PostgreSQL storage, not {resolved.masked}: pass --storage postgresql+psycopg2://...")
        engine = open_engine(resolved, read_only=False)
        try:
            name = create_views(engine)
        finally:
            engine.dispose()
        print(f"created view {name} in {resolved.masked} (one row per trial): SELECT * FROM {name} WHERE study = 'NAME'")
        return 0


class Db(Group, name="db", help="the embedded PostgreSQL: url, start, stop, status; views: SQL views of the studies"):
    """Manage the embedded PostgreSQL under $HPSEARCH_HOME (default ./.hpsearch).

    example:
      optuna-dashboard "$(hpsearch db url)"
    """

    actions = (_Url, _Start, _Stop, _Status, _Views)
