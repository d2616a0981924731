"""``hpsearch query WHAT``: a study's rows, read without loading it into Optuna.

Each action runs a few read-only SQL queries of :mod:`storage.queries` and prints their rows
with :func:`search.cli.render.format_rows` (``follow`` prints epochs as workers write them).
"""

from __future__ import annotations

import argparse
import sys
from typing import NamedTuple

from search.cli.args import bound, count, param_filter, storage_parent, study_parent, trial_numbers, trial_sort, trial_states
from search.cli.commands import Command, Group
from search.cli.render import FORMATS
from storage.errors import HpsearchError

__all__ = ["Query", "NoCompleteTrial"]


class NoCompleteTrial(HpsearchError):
    """``query best`` on a study without a complete trial: nothing is wrong with the input, so exit 1."""

    exit_code = 1


class _Found(NamedTuple):
    """What an action prints: its rows, their class, and the parameters that get a column."""

    rows: list
    row_type: type
    #: a user's model's parameter names (``storage.param_names``); None where rows have none
    params: list[str] | None = None


class _Rows(Command, parents=(study_parent, storage_parent)):
    """A query action: open a read-only engine, fetch :meth:`rows`, print them in ``--format``."""

    #: JSON prints the one row as an object (``best``).
    single = False
    #: Said on stderr when there are no rows (``{storage}``: the storage, masked).
    if_empty: str | None = None

    def add_arguments(self, parser) -> None:
        parser.add_argument("--format", choices=FORMATS, default="table", help=f"{', '.join(FORMATS[:-1])} or {FORMATS[-1]}, on stdout (default: %(default)s)")

    def rows(self, engine, args) -> tuple:
        """The rows to print and their class (its fields are the columns), and for trials the
        parameters that get a column each (the fields of :class:`_Found`)."""
        raise NotImplementedError

    def run(self, args) -> int:
        from search.cli.render import format_rows
        from storage.engine import open_engine
        from storage.url import resolve_storage_url

        resolved = resolve_storage_url(args.storage)
        engine = open_engine(resolved)
        try:
            _settle_study(engine, args)
            found = _Found(*self.rows(engine, args))
        finally:
            engine.dispose()
        if not found.rows and self.if_empty:
            print(self.if_empty.format(storage=resolved.masked), file=sys.stderr)
        print(format_rows(found.rows, args.format, found.row_type, single=self.single, params=found.params))
        return 0


def _settle_study(engine, args) -> None:
    """``--study`` not given: the recipe's study, or the storage's only one (``pick_study``)."""
    if getattr(args, "study", "") is None:
        from search.study.config import pick_study
        from storage import queries as q

        args.study = pick_study(None, q.study_names(engine))


def _trial_rows(engine, study: str, fetch) -> _Found:
    """Trial rows as ``fetch()`` returns them, with their class and parameter columns: a
    user's model's trials carry every parameter (issue 23), the recipe's its learning rate."""
    from storage import queries as q

    rows = fetch()
    if rows and type(rows[0]) is q.TrialRow:
        return _Found(rows, q.TrialRow)  # the recipe's: no query more than before
    # The study's parameters, not only these rows': the columns stay whatever a filter keeps.
    names = q.param_names(engine, study)
    return _Found(rows, q.TrialRow if names is None else q.ParamsTrialRow, names)


class _Studies(_Rows, name="studies", help="every study: direction, trials by state, best value and parameters, first and last activity",
               parents=(storage_parent,)):
    """example:
      hpsearch query studies --format json
    """

    if_empty = "no studies in {storage}"

    def rows(self, engine, args):
        from storage import queries as q

        return q.list_studies(engine), q.StudyRow


class _Trials(_Rows, name="trials", help="the trials of a study, one row each, filtered, sorted and limited"):
    """A user's model's trials show every parameter: a params object in JSON, a param_<name>
    column each in a table and in CSV; the recipe's show its learning_rate. --param filters on
    any parameter and --sort param_<name> sorts by one.

    examples:
      hpsearch query trials --state complete,pruned --lr-min 1e-3 --sort value --desc --limit 10
      hpsearch query trials --param activation=relu --param units_0=256: --sort param_lr
    """

    def add_arguments(self, parser) -> None:
        from storage.rows import TRIAL_SORT_KEYS

        super().add_arguments(parser)
        parser.add_argument("--state", dest="states", type=trial_states, action="append", metavar="STATES",
                            help="keep these states (comma-separated or repeated): running, waiting, complete, pruned, fail")
        parser.add_argument("--lr-min", type=bound, help="keep learning rates of at least this (a user's model: its parameter learning_rate)")
        parser.add_argument("--lr-max", type=bound, help="keep learning rates of at most this (a user's model: its parameter learning_rate)")
        parser.add_argument("--param", dest="params", type=param_filter, action="append", metavar="NAME=VALUE|NAME=LOW:HIGH",
                            help="keep trials whose parameter NAME equals VALUE (a number, a choice, true/false), or lies in "
                                 "LOW:HIGH (either side may be left out); repeat for several")
        parser.add_argument("--min-value", type=bound, help="keep trials whose objective value is at least this")
        parser.add_argument("--max-value", type=bound, help="keep trials whose objective value is at most this (a minimised objective)")
        parser.add_argument("--sort", type=trial_sort, default="number", metavar="KEY",
                            help=f"sort by this column (default: %(default)s): {', '.join(TRIAL_SORT_KEYS)}, or param_<name> "
                                 "for a parameter; missing values last")
        parser.add_argument("--desc", action="store_true", help="sort from the largest down")
        parser.add_argument("--limit", type=count, help="at most this many rows")

    def rows(self, engine, args):
        from storage import queries as q

        states = None if args.states is None else [s for group in args.states for s in group]
        params = dict(args.params or [])
        if len(params) < len(args.params or []):
            from storage.errors import HpsearchError

            twice = next(n for i, (n, _) in enumerate(args.params) if any(n == m for m, _ in args.params[:i]))
            raise HpsearchError(f"--param {twice} is given twice: give it once, with a range LOW:HIGH for both bounds")
        return _trial_rows(engine, args.study, lambda: q.trials(engine, args.study, states=states, lr_min=args.lr_min, lr_max=args.lr_max,
                                                                min_value=args.min_value, max_value=args.max_value, params=params,
                                                                sort=args.sort, descending=args.desc, limit=args.limit))


class _Best(_Rows, name="best", help="the best complete trial for the study's direction (the one optuna's study.best_trial names)"):
    """example:
      hpsearch query best --format json
    """

    single = True

    def rows(self, engine, args):
        from storage import queries as q

        best = q.best_trial(engine, args.study)
        if best is None:
            counts = q.summary(engine, args.study)
            have = ", ".join(f"{r.group.lower()} {r.trials}" for r in counts if r.trials) or "no trials"
            raise NoCompleteTrial(f"study {args.study!r} has no complete trial yet ({have}): run more trials, or see them with hpsearch query trials")
        return _trial_rows(engine, args.study, lambda: [best])


class _Top(_Rows, name="top", help="the k best complete trials, best first"):
    """example:
      hpsearch query top -k 5
    """

    def add_arguments(self, parser) -> None:
        super().add_arguments(parser)
        parser.add_argument("-k", type=count, default=5, help="how many (default: %(default)s)")

    def rows(self, engine, args):
        from storage import queries as q

        return _trial_rows(engine, args.study, lambda: q.top_trials(engine, args.study, args.k))


class _Curves(_Rows, name="curves", help="learning curves (per epoch: val_accuracy, loss, val_loss, accuracy, and the objective's reported value) of chosen trials"):
    """example:
      hpsearch query curves --numbers 3,7,12 --format csv
    """

    def add_arguments(self, parser) -> None:
        super().add_arguments(parser)
        which = parser.add_mutually_exclusive_group()
        which.add_argument("--numbers", type=trial_numbers, help="comma-separated trial numbers")
        which.add_argument("--top", type=count, default=5, help="the curves of the k best complete trials (default: %(default)s)")

    def rows(self, engine, args):
        from storage import queries as q

        numbers = args.numbers if args.numbers is not None else [r.number for r in q.top_trials(engine, args.study, args.top)]
        return q.curves(engine, args.study, numbers), q.CurvePoint


class _Summary(_Rows, name="summary", help="trials grouped by state, or by host, GPU or device: counts, best value, busy time"):
    """example:
      hpsearch query summary --by gpu
    """

    def add_arguments(self, parser) -> None:
        from storage.rows import SUMMARY_KEYS

        super().add_arguments(parser)
        parser.add_argument("--by", choices=SUMMARY_KEYS, default="state", help="group by (default: %(default)s)")

    def rows(self, engine, args):
        from storage import queries as q

        return q.summary(engine, args.study, by=args.by), q.SummaryRow


class _Follow(Command, name="follow", help="print each new epoch of a study as it is written, until its budget is finished or Ctrl-C",
              parents=(study_parent, storage_parent)):
    """Print each epoch of the study's trials as workers write it (one JSON object per line, or
    CSV), the same epochs the live page draws, until the study holds the trials its workers were
    started for and none runs, or Ctrl-C (exit 130). Polls the database once a second; only reads.

    Each epoch: trial, epoch, learning_rate, loss, val_loss, accuracy, val_accuracy and
    epoch_seconds. A user's model's study has its landscape parameter (param_<name>) where the
    recipe has learning_rate, and its --objective as a column of its own where that is none of
    the four metrics.

    examples:
      hpsearch query follow --study mnist-learning-rate
      hpsearch query follow --study mnist-learning-rate --from-start --format csv > epochs.csv
    """

    def add_arguments(self, parser) -> None:
        parser.add_argument("--from-start", action="store_true", help="first print every epoch already written (default: only new ones)")
        parser.add_argument("--format", choices=("json", "csv"), default="json", help="json (default: one object per line) or csv, on stdout")
        parser.add_argument("--interval", type=bound, default=1.0, help=argparse.SUPPRESS)

    def run(self, args) -> int:
        from storage.engine import open_engine
        from storage.url import resolve_storage_url

        engine = open_engine(resolve_storage_url(args.storage))
        try:
            _settle_study(engine, args)
            return follow(engine, args.study, from_start=args.from_start, fmt=args.format, interval=max(0.05, args.interval))
        finally:
            engine.dispose()


def follow(engine, study: str, *, from_start: bool = False, fmt: str = "json", interval: float = 1.0, out=None, err=None) -> int:
    """Print the study's epochs as they are written until its budget is finished; return 0.

    The budget is the ``--trials`` and ``--epoch-budget`` given to ``hpsearch init`` or to its
    workers (recorded in the study; it is finished when either is reached and no trial runs); a
    study without one (not run by hpsearch workers) is followed until Ctrl-C.

    Raises:
        StudyNotFoundError: no study of that name.
        KeyboardInterrupt: Ctrl-C (``main`` prints one line and exits 130).
        BrokenPipeError: the reader of ``out`` went away (``main`` exits quietly).
    """
    import csv
    import time

    from search.cli.render import epoch_csv_row, epoch_json
    from storage.epochs import budget, epochs_after, study_id_of

    out, err = out or sys.stdout, err or sys.stderr
    study_id = study_id_of(engine, study)
    param, objective, columns = _follow_columns(engine, study)
    # Where "from now on" starts is read before the line that says it is following, so an epoch
    # written once that line is out is always printed (it was lost when the write fell between).
    cursor = None if from_start else epochs_after(engine, study_id, epochs=False).cursor
    state = budget(engine, study_id)
    parts = ([] if state.target is None else [f"{state.target} trials"]) + (
        [] if state.epoch_budget is None else [f"{state.epoch_budget} epochs ({state.epochs} trained)"])
    target = " and ".join(parts) or "none recorded: Ctrl-C to stop"
    print(f"following study {study!r}: {state.finished} trials finished, budget {target}", file=err, flush=True)
    writer = csv.writer(out, lineterminator="\n") if fmt == "csv" else None

    def emit(epochs) -> None:
        for e in epochs:
            if writer is not None:
                writer.writerow(epoch_csv_row(e, columns))
            else:
                print(epoch_json(e, columns), file=out)
        out.flush()

    def read(cursor):
        return epochs_after(engine, study_id, cursor, param=param or "learning_rate", values=objective is not None)

    if writer is not None:
        writer.writerow([name for name, _ in columns])
        out.flush()
    while True:
        batch = read(cursor)
        emit(batch.epochs)
        cursor = batch.cursor
        if batch.more:
            continue
        if budget(engine, study_id).done:
            emit(read(cursor).epochs)  # any epoch whose commit came late
            print(f"study {study!r} finished its budget", file=err, flush=True)
            return 0
        time.sleep(interval)


def _follow_columns(engine, study: str) -> tuple[str | None, str | None, tuple]:
    """The parameter ``follow`` reads each epoch's value of, the objective it reads from the
    trials' reports (None: the epochs table has its column), and the columns it prints
    (:func:`search.cli.render.follow_columns`): the recipe's, or a user's model's own."""
    from search.cli.render import follow_columns
    from search.study.config import objective_of
    from search.study.create import CONFIG_ATTR
    from storage.epochs import METRICS
    from storage.histories import study_user_attr

    config = study_user_attr(engine, study, CONFIG_ATTR)
    if not isinstance(config, dict) or config.get("model", "recipe") == "recipe":
        return "learning_rate", None, follow_columns()
    param = config.get("landscape_param") or None  # a space with no number has none
    objective = objective_of(config)[0]
    objective = None if objective in METRICS else objective
    return param, objective, follow_columns(param, objective, recipe=False)


class Query(Group, name="query", help="read studies from scripts: studies, trials, best, top, curves, summary, follow"):
    """Read studies without loading them into Optuna: a few SQL queries per command, read-only.
    Rows go to stdout as a table, JSON or CSV, columns in a fixed order.

    examples:
      hpsearch query studies
      hpsearch query trials --state pruned --sort learning_rate --format csv > pruned.csv
      hpsearch query best --format json
    """

    metavar = "WHAT"
    actions = (_Studies, _Trials, _Best, _Top, _Curves, _Follow, _Summary)
