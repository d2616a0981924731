"""``hpsearch query`` and ``hpsearch db views``: studies read from scripts, terminals and SQL.

The queries themselves live in :mod:`storage.queries`; this module parses their flags and
prints their rows. Output goes to stdout in one of three formats, with the columns always in
the order of the row's fields:

* ``table``: aligned columns for people (floats shortened, datetimes in UTC to the second);
* ``json``: a list of objects, one per line (``best``: one object), full float precision, datetimes in
  ISO 8601 with ``+00:00``, and non-finite numbers as ``null`` so any JSON parser reads it;
* ``csv``: a header row, then one line per row; empty cells for missing values, and
  ``inf``/``-inf``/``nan`` as Python's ``float()`` reads them.

Errors are raised as :class:`~storage.errors.HpsearchError` for ``search.cli`` to print.
"""

from __future__ import annotations

import argparse
import math
import sys
from datetime import datetime

__all__ = ["FOLLOW_COLUMNS", "FORMATS", "add_query_parser", "add_views_parser", "format_rows", "run_follow", "run_query", "run_views"]

FORMATS = ("table", "json", "csv")


def _nonnegative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is negative: give 0 or more")
    return value


def _float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if math.isnan(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number")
    return value


def _numbers(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of trial numbers, such as 3,7,12") from None


def _states(text: str) -> list[str]:
    from storage.queries import STATES

    states = [part.strip().upper() for part in text.split(",") if part.strip()]
    for s in states:
        if s not in STATES:
            raise argparse.ArgumentTypeError(f"unknown state {s.lower()!r}: use {', '.join(x.lower() for x in STATES)}")
    return states


def add_query_parser(sub, add_common) -> None:
    """Add ``hpsearch query`` and its seven actions to the subparsers ``sub``.

    Args:
        sub: the ``hpsearch`` subparsers.
        add_common: adds ``--storage`` and ``--debug`` to a parser (``search.cli``'s helper).
    """
    from search.config import DEFAULT_STUDY

    fmt = argparse.RawDescriptionHelpFormatter
    query = sub.add_parser(
        "query",
        help="read studies from scripts: studies, trials, best, top, curves, summary, follow",
        description="Read studies without loading them into Optuna: a few SQL queries per command, read-only. Rows go to stdout as a table, JSON or CSV, columns in a fixed order.",
        epilog="examples:\n  hpsearch query studies\n  hpsearch query trials --state pruned --sort learning_rate --format csv > pruned.csv\n  hpsearch query best --format json",
        formatter_class=fmt,
    )
    actions = query.add_subparsers(dest="query_command", metavar="WHAT", parser_class=type(query))
    actions.required = True

    def action(name: str, text: str, example: str, *, study: bool = True) -> argparse.ArgumentParser:
        p = actions.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".", epilog=f"example:\n  {example}", formatter_class=fmt)
        if study:
            p.add_argument("--study", default=DEFAULT_STUDY, help=f"study name (default: {DEFAULT_STUDY})")
        p.add_argument("--format", choices=FORMATS, default="table", help="table (default), json or csv, on stdout")
        add_common(p)
        return p

    action("studies", "every study: direction, trials by state, best value and learning rate, first and last activity",
           "hpsearch query studies --format json", study=False)

    t = action("trials", "the trials of a study, one row each, filtered, sorted and limited",
               "hpsearch query trials --state complete,pruned --lr-min 1e-3 --sort value --desc --limit 10")
    t.add_argument("--state", dest="states", type=_states, action="append", metavar="STATES",
                   help="keep these states (comma-separated or repeated): running, waiting, complete, pruned, fail")
    t.add_argument("--lr-min", type=_float, help="keep learning rates of at least this")
    t.add_argument("--lr-max", type=_float, help="keep learning rates of at most this")
    t.add_argument("--min-value", type=_float, help="keep values (best val_accuracy) of at least this")
    from storage.queries import TRIAL_SORT_KEYS

    t.add_argument("--sort", choices=TRIAL_SORT_KEYS, default="number", help="sort by this column (default: number); missing values last")
    t.add_argument("--desc", action="store_true", help="sort from the largest down")
    t.add_argument("--limit", type=_nonnegative_int, help="at most this many rows")

    action("best", "the best complete trial (the one optuna's study.best_trial names)", "hpsearch query best --format json")

    top = action("top", "the k best complete trials, best first", "hpsearch query top -k 5")
    top.add_argument("-k", type=_nonnegative_int, default=5, help="how many (default: 5)")

    c = action("curves", "learning curves (per epoch: val_accuracy, loss, val_loss, accuracy) of chosen trials",
               "hpsearch query curves --numbers 3,7,12 --format csv")
    which = c.add_mutually_exclusive_group()
    which.add_argument("--numbers", type=_numbers, help="comma-separated trial numbers")
    which.add_argument("--top", type=_nonnegative_int, default=5, help="the curves of the k best complete trials (default: 5)")

    f = actions.add_parser(
        "follow", help="print each new epoch of a study as it is written, until its budget is finished or Ctrl-C",
        description="Print each epoch of the study's trials as workers write it (one JSON object per line, or CSV), the same epochs the live page draws, until the study holds the trials its workers were started for and none runs, or Ctrl-C (exit 130). Polls the database once a second; only reads.",
        epilog="examples:\n  hpsearch query follow --study mnist-learning-rate\n  hpsearch query follow --study mnist-learning-rate --from-start --format csv > epochs.csv",
        formatter_class=fmt,
    )
    f.add_argument("--study", default=DEFAULT_STUDY, help=f"study name (default: {DEFAULT_STUDY})")
    f.add_argument("--from-start", action="store_true", help="first print every epoch already written (default: only new ones)")
    f.add_argument("--format", choices=("json", "csv"), default="json", help="json (default: one object per line) or csv, on stdout")
    f.add_argument("--interval", type=_float, default=1.0, help=argparse.SUPPRESS)
    add_common(f)

    s = action("summary", "trials grouped by state, or by host, GPU or device: counts, best value, busy time",
               "hpsearch query summary --by gpu")
    from storage.queries import SUMMARY_KEYS

    s.add_argument("--by", choices=SUMMARY_KEYS, default="state", help="group by (default: state)")


def add_views_parser(dbsub, add_common) -> None:
    """Add ``hpsearch db views`` to the ``db`` subparsers."""
    p = dbsub.add_parser(
        "views",
        help="create (or replace) the SQL view hpsearch_trials: one row per trial, for psql and BI tools",
        description="Create (or replace) the PostgreSQL view hpsearch_trials in the storage database: one row per trial with its study, state, learning rate, value, epochs, test accuracy, duration, host, GPU and datetimes (UTC).",
        epilog="example:\n  hpsearch db views --storage postgresql+psycopg2://user@db/hpsearch\n  psql -d hpsearch -c 'SELECT study, number, learning_rate, value FROM hpsearch_trials ORDER BY value DESC LIMIT 5'",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_common(p)


def run_query(args) -> int:
    """Run ``hpsearch query WHAT`` and print its rows; return the exit code."""
    from storage import queries as q
    from storage.errors import HpsearchError
    from storage.url import resolve_storage_url

    resolved = resolve_storage_url(args.storage)
    engine = q.open_engine(resolved)
    what = args.query_command
    if what == "follow":
        try:
            return run_follow(engine, args.study, from_start=args.from_start, fmt=args.format, interval=max(0.05, args.interval))
        finally:
            engine.dispose()
    try:
        if what == "studies":
            rows, row_type = q.list_studies(engine), q.StudyRow
            if not rows:
                print(f"no studies in {resolved.masked}", file=sys.stderr)
        elif what == "trials":
            states = None if args.states is None else [s for group in args.states for s in group]
            rows = q.trials(engine, args.study, states=states, lr_min=args.lr_min, lr_max=args.lr_max,
                            min_value=args.min_value, sort=args.sort, descending=args.desc, limit=args.limit)
            row_type = q.TrialRow
        elif what == "best":
            best = q.best_trial(engine, args.study)
            if best is None:
                counts = q.summary(engine, args.study)
                have = ", ".join(f"{r.group.lower()} {r.trials}" for r in counts if r.trials) or "no trials"
                err = HpsearchError(f"study {args.study!r} has no complete trial yet ({have}): run more trials, or see them with hpsearch query trials")
                err.exit_code = 1
                raise err
            print(format_rows([best], args.format, q.TrialRow, single=True))
            return 0
        elif what == "top":
            rows, row_type = q.top_trials(engine, args.study, args.k), q.TrialRow
        elif what == "curves":
            numbers = args.numbers if args.numbers is not None else [r.number for r in q.top_trials(engine, args.study, args.top)]
            rows, row_type = q.curves(engine, args.study, numbers), q.CurvePoint
        else:
            rows, row_type = q.summary(engine, args.study, by=args.by), q.SummaryRow
    finally:
        engine.dispose()
    print(format_rows(rows, args.format, row_type))
    return 0


#: The columns ``hpsearch query follow`` prints, in order (the live feed's epochs).
FOLLOW_COLUMNS = ("trial", "epoch", "learning_rate", "loss", "val_loss", "accuracy", "val_accuracy", "epoch_seconds")


def run_follow(engine, study: str, *, from_start: bool = False, fmt: str = "json", interval: float = 1.0, out=None, err=None) -> int:
    """Print the study's epochs as they are written until its budget is finished; return 0.

    The budget is the ``--trials`` its workers were started with (recorded in the study); a
    study without one (not run by hpsearch workers) is followed until Ctrl-C.

    Raises:
        StudyNotFoundError: no study of that name.
        KeyboardInterrupt: Ctrl-C (``search.cli`` prints one line and exits 130).
    """
    import csv
    import json

    from storage.epochs import budget, study_id_of

    out, err = out or sys.stdout, err or sys.stderr
    study_id = study_id_of(engine, study)
    state = budget(engine, study_id)
    target = f"{state.target} trials" if state.target is not None else "none recorded: Ctrl-C to stop"
    print(f"following study {study!r}: {state.finished} trials finished, budget {target}", file=err, flush=True)
    writer = csv.writer(out, lineterminator="\n") if fmt == "csv" else None

    def emit(epochs) -> None:
        for e in epochs:
            if writer is not None:
                writer.writerow([_csv_cell(getattr(e, c)) for c in FOLLOW_COLUMNS])
            else:
                print(json.dumps({c: getattr(e, c) for c in FOLLOW_COLUMNS}, allow_nan=False), file=out)
        out.flush()

    try:
        if writer is not None:
            writer.writerow(FOLLOW_COLUMNS)
            out.flush()
        return _follow(engine, study, study_id, from_start, interval, emit, err)
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly, as `yes | head` does.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _follow(engine, study: str, study_id: int, from_start: bool, interval: float, emit, err) -> int:
    import time

    from storage.epochs import budget, epochs_after

    cursor = None if from_start else epochs_after(engine, study_id, epochs=False).cursor
    while True:
        batch = epochs_after(engine, study_id, cursor)
        emit(batch.epochs)
        cursor = batch.cursor
        if batch.more:
            continue
        if budget(engine, study_id).done:
            emit(epochs_after(engine, study_id, cursor).epochs)  # any epoch whose commit came late
            print(f"study {study!r} finished its budget", file=err, flush=True)
            return 0
        time.sleep(interval)


def run_views(args) -> int:
    """Run ``hpsearch db views``: create the ``hpsearch_trials`` view in the storage."""
    from storage import queries as q
    from storage.errors import StorageConfigError
    from storage.url import resolve_storage_url

    resolved = resolve_storage_url(args.storage)
    if not resolved.is_postgresql:
        raise StorageConfigError(f"hpsearch db views needs a PostgreSQL storage, not {resolved.masked}: pass --storage postgresql+psycopg2://...")
    engine = q.open_engine(resolved, read_only=False)
    try:
        name = q.create_views(engine)
    finally:
        engine.dispose()
    print(f"created view {name} in {resolved.masked} (one row per trial): SELECT * FROM {name} WHERE study = 'NAME'")
    return 0


# --- formatting ---------------------------------------------------------------------------


def _plain(value):
    """A value as JSON has it: ISO datetimes, ``None`` for non-finite floats."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _csv_cell(value):
    # repr keeps every digit of a float, and writes inf and nan as Python's float() reads them.
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return value.isoformat() if isinstance(value, datetime) else value


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def format_rows(rows, fmt: str, row_type: type, *, single: bool = False) -> str:
    """Render query rows as ``table``, ``json`` or ``csv``, columns in ``row_type``'s field order.

    Args:
        rows: dataclass rows from :mod:`storage.queries`.
        fmt: one of :data:`FORMATS`.
        row_type: the rows' class (gives the columns even when there are no rows).
        single: JSON renders the one row as an object rather than a list.
    """
    import dataclasses

    columns = [f.name for f in dataclasses.fields(row_type)]
    if fmt == "json":
        import json

        objs = [{c: _plain(getattr(r, c)) for c in columns} for r in rows]
        if single:
            return json.dumps(objs[0], indent=2, allow_nan=False)
        # One object per line: a trial per line reads and greps well, and it keeps to json's
        # C encoder (indent= switches to the pure-Python one).
        if not objs:
            return "[]"
        return "[\n" + ",\n".join(json.dumps(o, allow_nan=False) for o in objs) + "\n]"
    if fmt == "csv":
        import csv
        import io

        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(columns)
        for r in rows:
            w.writerow([_csv_cell(getattr(r, c)) for c in columns])
        return buf.getvalue().rstrip("\n")
    cells = [[_cell(getattr(r, c)) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    numeric = [bool(rows) and all(isinstance(getattr(r, c), (int, float)) or getattr(r, c) is None for r in rows) for c in columns]
    lines = ["  ".join(c.rjust(w) if n else c.ljust(w) for c, w, n in zip(columns, widths, numeric)).rstrip()]
    for row in cells:
        lines.append("  ".join(v.rjust(w) if n else v.ljust(w) for v, w, n in zip(row, widths, numeric)).rstrip())
    return "\n".join(lines)
