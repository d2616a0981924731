"""The rows the queries return: frozen dataclasses with datetimes in UTC, and DataFrames of them."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from storage.errors import HpsearchError

__all__ = ["StudyRow", "TrialRow", "ParamsTrialRow", "CurvePoint", "SummaryRow", "LandscapeGrid", "to_frame", "TRIAL_SORT_KEYS", "PARAM_SORT", "SUMMARY_KEYS", "is_sort_key"]

#: What a summary can group trials by: their state, or a runtime attribute workers record.
SUMMARY_KEYS = ("state", "host", "gpu", "device")

#: Columns ``trials`` can sort by. The first five sort in the database (so ``limit`` is
#: applied there too); the others are attributes decoded from JSON, sorted after reading.
TRIAL_SORT_KEYS = (
    "number",
    "learning_rate",
    "value",
    "datetime_start",
    "datetime_complete",
    "duration_s",
    "test_accuracy",
    "best_epoch",
    "epochs_run",
)

#: ``trials``' sort key for a parameter: ``param_<name>``, as its column is named.
PARAM_SORT = "param_"


def is_sort_key(key: str) -> bool:
    """Whether :func:`storage.queries.trials` can sort by ``key``: one of :data:`TRIAL_SORT_KEYS`, or ``param_<name>``."""
    return key in TRIAL_SORT_KEYS or (key.startswith(PARAM_SORT) and len(key) > len(PARAM_SORT))


@dataclass(frozen=True)
class StudyRow:
    """One study: its trials counted by state, its best trial and when it was last active.

    ``best_*`` are ``None`` while no trial is complete, and for multi-objective studies.
    ``best_params`` holds every parameter of the best trial (a user's model's, or the
    recipe's ``learning_rate``); ``best_learning_rate`` the one named ``learning_rate``.
    ``first_activity`` is the earliest trial start, ``last_activity`` the latest start or end.
    """

    name: str
    study_id: int
    direction: str
    trials: int = 0
    running: int = 0
    waiting: int = 0
    complete: int = 0
    pruned: int = 0
    fail: int = 0
    best_number: int | None = None
    best_value: float | None = None
    best_learning_rate: float | None = None
    best_params: dict | None = None
    first_activity: datetime | None = None
    last_activity: datetime | None = None


@dataclass(frozen=True)
class TrialRow:
    """One trial, as a script wants it: no nested attributes, datetimes in UTC.

    ``value`` is Optuna's objective value (the best ``val_accuracy``; a pruned trial holds its
    last reported value); ``duration_s`` is ``datetime_complete - datetime_start`` in seconds.
    """

    number: int
    state: str
    learning_rate: float | None
    value: float | None
    best_epoch: int | None
    epochs_run: int | None
    stop_reason: str | None
    test_accuracy: float | None
    duration_s: float | None
    host: str | None
    gpu: str | None
    datetime_start: datetime | None
    datetime_complete: datetime | None


@dataclass(frozen=True)
class ParamsTrialRow:
    """One trial of a study with parameters of its own (a user's model, issue 23): every one.

    The fields of :class:`TrialRow`, with ``params`` where the recipe has ``learning_rate``:
    the trial's parameters by name, in the order the trial suggested them, with the values
    the objective saw (a categorical's choice, not the index Optuna stores); a queued trial's
    are the ones it was enqueued with, and a trial that suggested nothing has ``{}``.
    ``value`` is the objective's value, whichever way the study optimises it.
    """

    number: int
    state: str
    params: dict[str, Any]
    value: float | None
    best_epoch: int | None
    epochs_run: int | None
    stop_reason: str | None
    test_accuracy: float | None
    duration_s: float | None
    host: str | None
    gpu: str | None
    datetime_start: datetime | None
    datetime_complete: datetime | None


@dataclass(frozen=True)
class CurvePoint:
    """One epoch of one trial's learning curve.

    ``value`` is the study's objective as the trial reported it to Optuna at this step (its
    intermediate value). ``val_accuracy`` is that value too in a study of ``val_accuracy``
    (the recipe's; a running trial has no history yet), else, like ``loss``, ``val_loss`` and
    ``accuracy``, it comes from the trial's ``history`` attribute (None where the model logs
    none: a regression).
    """

    number: int
    learning_rate: float | None
    epoch: int
    val_accuracy: float | None
    loss: float | None
    val_loss: float | None
    accuracy: float | None
    value: float | None = None


@dataclass(frozen=True)
class SummaryRow:
    """The trials of one group (a state, a host, a GPU): counts, best value, time spent.

    ``busy_seconds`` adds up the durations of the group's trials that have both datetimes.
    """

    group: str | None
    trials: int
    running: int
    waiting: int
    complete: int
    pruned: int
    fail: int
    best_value: float | None
    busy_seconds: float
    first_start: datetime | None
    last_complete: datetime | None


@dataclass(frozen=True)
class LandscapeGrid:
    """The loss landscape: a metric over learning rate (rows) × epoch (columns).

    ``values[i][j]`` is the metric of trial ``numbers[i]`` (learning rate
    ``learning_rates[i]``, rows sorted by it) at epoch ``epochs[j]``; ``None`` where the
    trial did not reach that epoch or the value was not finite.
    """

    metric: str
    numbers: list[int]
    learning_rates: list[float]
    epochs: list[int]
    values: list[list[float | None]]

    def points(self) -> list[tuple[int, float, int, float]]:
        """The grid's defined cells as ``(number, learning_rate, epoch, value)``."""
        return [
            (n, lr, e, v)
            for n, lr, row in zip(self.numbers, self.learning_rates, self.values)
            for e, v in zip(self.epochs, row)
            if v is not None
        ]


def to_frame(rows, row_type: type | None = None):
    """A pandas DataFrame of query results, columns in the rows' field order.

    Args:
        rows: a list of rows from any query here, or a :class:`LandscapeGrid` (which becomes
            a learning rate × epoch table indexed by learning rate, with a ``number`` column
            first). A :class:`ParamsTrialRow`'s ``params`` stays one column of dicts
            (``pd.json_normalize`` or ``df.params.apply(pd.Series)`` spreads it).
        row_type: the row class, so that an empty list still gets its columns
            (``to_frame([], TrialRow)``); taken from the rows when left out.

    Raises:
        HpsearchError: pandas is not installed.
    """
    try:
        import pandas as pd
    except ImportError:
        raise HpsearchError("DataFrames need pandas: pip install 'hpsearch[pandas]' (or pip install pandas)") from None
    if isinstance(rows, LandscapeGrid):
        df = pd.DataFrame(rows.values, columns=rows.epochs, index=pd.Index(rows.learning_rates, name="learning_rate"), dtype=float)
        df.columns.name = "epoch"
        df.insert(0, "number", rows.numbers)
        return df
    rows = list(rows)
    row_type = row_type or (type(rows[0]) if rows else None)
    names = [f.name for f in dataclasses.fields(row_type)] if row_type is not None else []
    return pd.DataFrame([[getattr(r, n) for n in names] for r in rows], columns=names)
