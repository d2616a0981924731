"""What ``hpsearch`` prints on stdout: query rows, followed epochs, study summaries.

Pure functions from values to text; the commands print what they return. Rows come in three
formats, with the columns always in the order of the row's fields:

* ``table``: aligned columns for people (floats shortened, datetimes in UTC to the second);
* ``json``: a list of objects, one per line (``best``: one object), full float precision, datetimes in
  ISO 8601 with ``+00:00``, and non-finite numbers as ``null`` so any JSON parser reads it;
* ``csv``: a header row, then one line per row; empty cells for missing values, and
  ``inf``/``-inf``/``nan`` as Python's ``float()`` reads them.

A user's model's trial rows carry every parameter: a ``params`` object in JSON, a
``param_<name>`` column each in a table and in CSV (:func:`format_rows`).

A study command's summary is text for people or JSON (:func:`summary_text`, :func:`summary_json`).
"""

from __future__ import annotations

import math
from datetime import datetime

from search.fleet.progress import plural

__all__ = [
    "FORMATS", "FOLLOW_COLUMNS", "PARAM_PREFIX", "format_rows", "follow_columns", "epoch_json", "epoch_csv_row",
    "summary_text", "summary_json", "study_line", "init_text", "dashboard_hint", "export_hint",
]

#: The formats of ``hpsearch query``'s rows.
FORMATS = ("table", "json", "csv")
#: The columns ``hpsearch query follow`` prints, in order (the live feed's epochs).
FOLLOW_COLUMNS = ("trial", "epoch", "learning_rate", "loss", "val_loss", "accuracy", "val_accuracy", "epoch_seconds")


# --- rows ----------------------------------------------------------------------------------------


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
    if isinstance(value, dict):  # a study's best parameters: one JSON object in one cell
        import json

        return json.dumps(value, separators=(",", ":"))
    if isinstance(value, float):
        return repr(value)
    return value.isoformat() if isinstance(value, datetime) else value


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict):  # a study's best parameters
        return " ".join(f"{k}={_cell(v)}" for k, v in value.items()) or "-"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def format_rows(rows, fmt: str, row_type: type, *, single: bool = False, params: list[str] | None = None) -> str:
    """Render query rows as ``table``, ``json`` or ``csv``, columns in ``row_type``'s field order.

    A row's ``params`` (:class:`storage.ParamsTrialRow`, a user's model) is a JSON object of
    every parameter; in a table and in CSV it becomes one column per parameter, named
    ``param_<name>`` (:data:`PARAM_PREFIX`), in its place, empty where a trial lacks it.

    Args:
        rows: dataclass rows from :mod:`storage.queries`.
        fmt: one of :data:`FORMATS`.
        row_type: the rows' class (gives the columns even when there are no rows).
        single: JSON renders the one row as an object rather than a list.
        params: the parameters that get a column, in order (``storage.param_names``), so the
            columns do not depend on which trials a filter kept; default: those of ``rows``.
    """
    import dataclasses

    columns = [f.name for f in dataclasses.fields(row_type)]
    if fmt == "json":
        import json

        plain = _json_value if "params" in columns else _plain
        objs = [{c: plain(getattr(r, c)) for c in columns} for r in rows]
        if single:
            return json.dumps(objs[0], indent=2, allow_nan=False)
        # One object per line: a trial per line reads and greps well, and it keeps to json's
        # C encoder (indent= switches to the pure-Python one).
        if not objs:
            return "[]"
        return "[\n" + ",\n".join(json.dumps(o, allow_nan=False) for o in objs) + "\n]"
    if "params" in columns:
        columns, rows = _spread(columns, rows, params)
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


#: What a parameter's column is called in a table and in CSV: ``param_<name>``, so that no
#: parameter can take the name of another column (a parameter may be called ``value``).
PARAM_PREFIX = "param_"


def _json_value(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return _plain(value)


def _spread(columns: list[str], rows, params: list[str] | None):
    """The columns and rows of a table or CSV with ``params`` spread into a column each.

    The rows become namespaces of those columns, so the recipe's rows, which have no
    ``params``, are rendered as before without paying for it.
    """
    from types import SimpleNamespace

    if params is None:
        params = list(dict.fromkeys(name for r in rows for name in r.params))
    i = columns.index("params")
    before, after = columns[:i], columns[i + 1 :]
    spread = [*before, *(PARAM_PREFIX + name for name in params), *after]
    flat = [
        SimpleNamespace(
            **{c: getattr(r, c) for c in before},
            **{PARAM_PREFIX + name: r.params.get(name) for name in params},
            **{c: getattr(r, c) for c in after},
        )
        for r in rows
    ]
    return spread, flat


def follow_columns(param: str | None = None, objective: str | None = None, *, recipe: bool = True) -> tuple[tuple[str, str], ...]:
    """The columns ``hpsearch query follow`` prints for a study, as ``(name, EpochRow field)``.

    The recipe's (``recipe``) are :data:`FOLLOW_COLUMNS`. A user's model's (issue 23) have the parameter its
    landscape is drawn over where the recipe has ``learning_rate`` (``param``, named
    ``param_<name>`` as ``hpsearch query trials`` names it; None: it has none, no column), and
    add its objective, as each epoch reported it, where the epochs table keeps no column of it
    (``objective``: ``val_mae``, say; None for none).
    """
    if recipe:
        return tuple((c, c) for c in FOLLOW_COLUMNS)
    columns = [(PARAM_PREFIX + param if c == "learning_rate" else c, c) for c in FOLLOW_COLUMNS if c != "learning_rate" or param]
    if objective:
        columns.insert(-1, (objective, "value"))  # before epoch_seconds, with the other metrics
    return tuple(columns)


def epoch_json(epoch, columns=None) -> str:
    """One followed epoch as a JSON object on one line (non-finite numbers refused, as JSON does);
    ``columns`` as :func:`follow_columns` gives them (default: the recipe's)."""
    import json

    return json.dumps({name: getattr(epoch, f) for name, f in columns or follow_columns()}, allow_nan=False)


def epoch_csv_row(epoch, columns=None) -> list:
    """One followed epoch as CSV cells, in the order of ``columns`` (default: :data:`FOLLOW_COLUMNS`)."""
    return [_csv_cell(getattr(epoch, f)) for _, f in columns or follow_columns()]


# --- study summaries -----------------------------------------------------------------------------


def study_line(created: bool, study: str, masked_storage: str, config) -> str:
    """The line a training command prints (stderr) once it holds the study."""
    return (
        f"{'created' if created else 'resumed'} study {study!r} on {masked_storage} "
        f"({plural(config.epochs, 'epoch')}, batch {config.batch_size}, train size {config.train_size or 'all'}, "
        f"validation {config.validation}, pruner {config.pruner})"
    )


def init_text(info: dict, fmt: str) -> str:
    """What ``hpsearch init`` prints: ``info`` as JSON, or one line; a user's model's search
    space (``info["space"]``: a line per hyperparameter) follows it, as KerasTuner's
    ``search_space_summary()`` shows one."""
    import json

    if fmt == "json":
        return json.dumps(info, indent=2)
    parts = ([] if info.get("target_trials") is None else [f"{info['target_trials']} trials"]) + (
        [] if info.get("epoch_budget") is None else [f"{info['epoch_budget']} epochs"])
    budget = f", budget {' and '.join(parts)}" if parts else ""
    line = f"study {info['study']!r} {'created' if info['created'] else 'exists'} on {info['storage']}{budget}"
    if "space" not in info:
        return line
    space = info["space"]
    head = f"search space: {plural(len(space), 'hyperparameter')} from build(hp) with its defaults:"
    note = ("(one defined only for other values, such as a second layer's units, or in fit(hp, ...), joins when a trial"
            " first defines it; an (implicit) default is sampled, an explicit one is the first trial's)")
    return "\n".join([line, head, *(f"  {entry}" for entry in space), note])


def summary_json(summary: dict) -> str:
    """The end-of-run summary (:func:`search.study.create.summarize`) as JSON, keys in its order."""
    import json

    return json.dumps(summary, indent=2, sort_keys=False)


def _best_epoch_text(best: dict) -> str:
    """ "best at epoch 3 of 3": counted from 1, as Keras's progress and hpsearch's epoch lines
    count ("epoch 3/3"). The stored ``best_epoch`` (and the JSON summary's) counts from 0, as
    Optuna's steps do; printed as it is, "best epoch 2, 3 epochs run" read as the second epoch."""
    at, run = best.get("best_epoch"), best.get("epochs_run")
    if at is None:
        return "no epoch recorded" if run is None else f"{plural(run, 'epoch')} run"
    return f"best at epoch {at + 1}" + ("" if run is None else f" of {run}")


def summary_text(summary: dict, dashboard_hint: str, export_hint: str | None = None) -> str:
    """The human-readable summary printed at the end of ``hpsearch run`` (``export_hint``: the
    line that saves the best model, for a user's model)."""
    from search.study.space import PARAM

    finished, target = summary["finished_trials"], summary["target_trials"]
    trials = plural(finished, "trial") if target is None else f"{finished}/{target} trials"
    epochs = "" if summary.get("epoch_budget") is None else f", {summary['epochs_trained']}/{summary['epoch_budget']} epochs trained"
    lines = [f"study {summary['study']}: {trials} finished{epochs}"]
    states = ", ".join(f"{k.lower()} {v}" for k, v in summary["states"].items() if v)
    lines.append(f"  states: {states or 'no trials'}")
    best = summary["best"]
    if best and "params" in best:  # a user's model: its parameters and objective
        objective = summary["config"]["objective"]
        params = ", ".join(f"{k} {_plain_param(v)}" for k, v in best["params"].items())
        tests = ", ".join(f"test {k} {v:.4g}" for k, v in (best.get("test_metrics") or {}).items())
        lines.append(
            f"  best: trial {best['number']}, {objective} {best[objective]:.4g} ({params}; {tests or 'no test metrics'}; "
            f"{_best_epoch_text(best)})"
        )
    elif best:
        ta = best["test_accuracy"]
        lines.append(
            f"  best: trial {best['number']}, learning_rate {best[PARAM]:.4g}, val_accuracy {best['val_accuracy']:.4f}, "
            f"test_accuracy {'-' if ta is None else format(ta, '.4f')} ({_best_epoch_text(best)})"
        )
    else:
        lines.append("  best: no trial completed yet")
    foreign = summary.get("foreign_trials")
    if foreign:
        states = ", ".join(f"{k.lower()} {v}" for k, v in foreign.items())
        lines.append(f"  not made by hpsearch: {plural(sum(foreign.values()), 'trial')} ({states}) with other parameters, left out of the counts above")
    for r in summary["recipe_trials"]:
        val = "-" if r["val_accuracy"] is None else f"{r['val_accuracy']:.4f}"
        lines.append(f"  recipe rate {r[PARAM]:g}: {r['state'].lower()}, val_accuracy {val}, {plural(r['epochs_run'], 'epoch')}")
    if export_hint and best:
        lines.append(f"  best model: {export_hint}")
    lines.append(f"  dashboard: {dashboard_hint}")
    return "\n".join(lines)


def _plain_param(value) -> str:
    return format(value, ".4g") if isinstance(value, float) else str(value)


def dashboard_hint(resolved, study: str) -> str:
    """The command that opens the dashboard on this study; never with a password in it.

    Args:
        resolved: the study's storage (:class:`storage.url.ResolvedURL`).
    """
    import shlex

    return _on_storage(f"hpsearch dashboard --study {shlex.quote(study)}", resolved)


def export_hint(resolved, study: str, data: str | None) -> str:
    """The command that saves the study's best model (``hpsearch export``); never with a password in it.

    Args:
        resolved: the study's storage (:class:`storage.url.ResolvedURL`).
        data: the ``--data`` the run was given (None: ``HPSEARCH_DATA`` applies, as it did).
    """
    import shlex

    cmd = f"hpsearch export --study {shlex.quote(study)}" + ("" if data is None else f" --data {shlex.quote(data)}")
    return _on_storage(cmd, resolved) + " --out best.keras"


def _on_storage(cmd: str, resolved) -> str:
    """``cmd`` pointed at ``resolved``'s storage as the user pointed this command at it."""
    import shlex

    if resolved.source == "--storage":
        if "***" in resolved.masked:
            return f"OPTUNA_STORAGE=<your storage URL> {cmd}"
        return f"{cmd} --storage {shlex.quote(resolved.url)}"
    return cmd
