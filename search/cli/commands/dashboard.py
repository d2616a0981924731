"""``hpsearch dashboard`` and ``hpsearch landscape``: a study's figures, served or written to a page."""

from __future__ import annotations

from search.cli.args import port, storage_parent, study_parent
from search.cli.commands import Command, quiet_libraries

__all__ = ["Dashboard", "Landscape"]


class Dashboard(Command, name="dashboard", help="serve optuna-dashboard on the studies, with their loss landscape", parents=(storage_parent,)):
    """Refresh the loss-landscape figures of the studies, then serve optuna-dashboard on the storage
    (--storage, else $OPTUNA_STORAGE, else the embedded PostgreSQL) until Ctrl-C. The storage URL
    stays in this process: put a password in $OPTUNA_STORAGE, not on a command line. Every request
    needs the token in the URL printed at start (a cookie keeps it for the browser;
    $HPSEARCH_DASHBOARD_TOKEN fixes it), and the dashboard only reads unless --allow-writes.
    It listens on 127.0.0.1 unless --host says otherwise.

    examples:
      hpsearch dashboard
      OPTUNA_STORAGE=postgresql+psycopg2://user:pass@db/hpsearch hpsearch dashboard --study mnist-learning-rate --port 8081
    """

    def add_arguments(self, parser) -> None:
        from search.landscape.server import DEFAULT_HOST, DEFAULT_PORT

        parser.add_argument("--study", help="the study whose page to open and whose landscape to refresh (default: every study)")
        parser.add_argument("--host", default=DEFAULT_HOST, help="address to listen on (default: %(default)s, this machine only; 0.0.0.0 serves everyone who can reach it)")
        parser.add_argument("--port", type=port, default=DEFAULT_PORT, help="port to listen on (default: %(default)s; 0 picks a free one)")
        parser.add_argument("--allow-writes", action="store_true",
                            help="let the dashboard change studies (delete, rename, tell trials, edit notes); by default it only reads")
        parser.add_argument("--no-token", action="store_true",
                            help="serve without a token: every user of this machine (with --host, everyone who reaches it) can read the studies")

    def run(self, args) -> int:
        from search.landscape.server import serve_dashboard

        quiet_libraries()
        return serve_dashboard(args.storage, args.study, args.host, args.port, allow_writes=args.allow_writes, no_token=args.no_token)


class Landscape(Command, name="landscape", help="refresh a study's loss-landscape figures and write them to an HTML page",
                parents=(study_parent, storage_parent)):
    """Rebuild the loss-landscape figures from every complete and pruned trial's history, save them
    into the study (optuna-dashboard shows them on the study's page), and write them to a
    self-contained HTML page (and PNGs, where kaleido is installed).

    example:
      hpsearch landscape --study mnist-learning-rate --out landscape.html
    """

    def add_arguments(self, parser) -> None:
        parser.add_argument("--out", default="landscape.html", metavar="FILE", help="the HTML page to write (default: %(default)s)")

    def run(self, args) -> int:
        from search.landscape.export import export_landscape  # the one call into search.landscape.export

        quiet_libraries()
        print(export_landscape(args.storage, args.study, args.out))
        return 0
