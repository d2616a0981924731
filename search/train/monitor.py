"""The per-epoch monitor of one trial: record its history, report to the pruner, decide to stop.

The monitor is plain Python (no Keras import) so that it can be tested with Optuna's
ask/report/tell and no training; :mod:`search.train.objective` wraps it in a Keras callback.
When it asks is the study's :class:`~search.study.pruners.PrunerSchedule`.
"""

from __future__ import annotations

import math
import time
from typing import Callable

from search.errors import ObjectiveNotLoggedError, TrialConfigError
from search.study.pruners import EVERY_EPOCH, PrunerSchedule
from storage.engine import in_background_slot

#: How the ``stop_detail`` of a trial pruned as it resumed from a checkpoint says so (the
#: progress line shows that detail; a prune at a rung as the trial trained it leaves out).
ON_RESUMING = "on resuming"

__all__ = ["HISTORY_KEYS", "MONITOR", "EpochMonitor"]

MONITOR = "val_accuracy"
HISTORY_KEYS = ("loss", "val_loss", "accuracy", "val_accuracy")


def _finite(value) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


class EpochMonitor:
    """Record a trial's history, report its objective (``val_accuracy``) each epoch, and decide to stop.

    After each epoch call :meth:`end_epoch`; it returns True when training must stop, with
    the reason in :attr:`stop_reason` (``"pruned"`` or ``"diverged"``).

    Args:
        trial: the ``optuna.Trial`` to report to.
        on_epoch: optional hook called with ``(epoch, logs)`` for progress display.
        call: optional ``call(fn, *args, what=...)`` wrapper for storage calls (workers retry
            them while the database is unreachable).
        schedule: when to ask the pruner (see :func:`pruner_schedule`); default every epoch.
        writes: a :class:`search.train.deferred.DeferredWrites` that reports go through, so they
            overlap training; flushed before each question. Default: report at once.
        objective: the key of the epoch logs reported and pruned on (``--objective``).
        maximize: whether a larger value of it is better (``--direction``).
    """

    def __init__(self, trial, on_epoch: Callable[[int, dict], None] | None = None, call: Callable | None = None,
                 schedule: PrunerSchedule = EVERY_EPOCH, writes=None, objective: str = MONITOR, maximize: bool = True):
        from search.train.deferred import DeferredWrites

        self.trial = trial
        self.objective, self.maximize = objective, maximize
        self.on_epoch = on_epoch
        self._call = call or (lambda fn, *args, what, **kw: fn(*args, **kw))
        self.schedule = schedule
        self.writes = writes if writes is not None else DeferredWrites(self._call, background=False)
        #: seconds spent asking the pruner, and how often it was asked
        self.pruner_seconds = 0.0
        self.pruner_calls = 0
        self.history: dict[str, list[float | None]] = {k: [] for k in HISTORY_KEYS}
        self.best_value: float | None = None
        self.best_epoch: int | None = None
        self.stop_reason: str | None = None
        self.detail: str | None = None
        #: wall seconds of each epoch (training + validation + reporting); the first includes
        #: compilation. Benchmarks read it from the trial's ``epoch_seconds`` attribute.
        self.epoch_seconds: list[float] = []
        self._mark = time.perf_counter()

    def start(self) -> None:
        """Call when training starts, so the first epoch's time excludes model building."""
        self._mark = time.perf_counter()

    @property
    def epochs_run(self) -> int:
        return len(self.history["loss"])

    def resume(self, history: dict, epoch_seconds: list, *, ask: bool = True) -> None:
        """Carry an earlier attempt's epochs (a retry resumed from its checkpoint, issue 24).

        Each epoch of ``history`` is reported again under this trial (its intermediate value and
        its row for the live landscape), so the pruner, the landscape, the feed and the queries
        see one run. The pruner is asked again as the run would have asked it with the study as
        it is now: at each rung among the carried epochs (successive halving's schedule), or
        else once at the last of them. A trial it stops is pruned there (:attr:`stop_reason`
        ``"pruned"``, the history cut after that epoch), not trained past its rung.

        ``ask=False`` records epochs that trained whole without the monitor (a user's ``fit``
        that did not pass hpsearch's callbacks on): reported, never pruned after the fact.
        """
        if not ask and history and self.objective not in history:
            self.objective_missing(history)
        n = len(history.get("loss", ()))
        self.history = {k: list(history.get(k, [None] * n))[:n] for k in dict.fromkeys((*HISTORY_KEYS, *history))}
        self.epoch_seconds = [float(x) for x in list(epoch_seconds)[:n]]
        s, key = self.schedule, self.objective
        asked = lambda epoch: ask and s.enabled and epoch >= s.first_step and (s.last_step is None or epoch < s.last_step)  # noqa: E731
        for epoch in range(n):
            value = _finite(self.history.get(key, [None] * n)[epoch])
            if value is not None:
                self.writes.submit(self.trial.report, value, step=epoch, what=f"reporting epoch {epoch} again")
                if self.best_value is None or (value > self.best_value if self.maximize else value < self.best_value):
                    self.best_value, self.best_epoch = value, epoch
            logs = {name: values[epoch] for name, values in self.history.items()}
            seconds = self.epoch_seconds[epoch] if epoch < len(self.epoch_seconds) else None
            self.writes.epoch(self.trial, epoch, logs, seconds=seconds)
            at_rung = s.steps is not None and epoch in s.steps
            if not (asked(epoch) and (at_rung or (s.steps is None and epoch == n - 1))):
                continue
            self.writes.flush()
            if self._call(in_background_slot(self.trial.should_prune), what=f"asking the pruner at epoch {epoch}"):
                self.stop_reason = "pruned"
                self.detail = f"pruned at epoch {epoch} {ON_RESUMING}" + (f", {key} {value:.4f}" if value is not None else "")
                self.history = {k: v[: epoch + 1] for k, v in self.history.items()}
                self.epoch_seconds = self.epoch_seconds[: epoch + 1]
                return

    def objective_missing(self, logs) -> None:
        """Raise the error of epoch logs (or a History's keys) without the objective."""
        key = self.objective
        if key == MONITOR:
            raise TrialConfigError(
                f"the metric {MONITOR!r} is not among the training logs ({', '.join(sorted(logs)) or 'none'}): compile the model with metrics=['accuracy'] and pass validation data"
            )
        # No trial of this study would ever report it: stop the worker, retry nothing.
        raise ObjectiveNotLoggedError(
            f"--objective {key} is not among the epoch logs of trial {self.trial.number} ({', '.join(sorted(logs)) or 'none'}): pass --objective with one of them in a new study, or add the metric to model.compile"
        )

    def end_epoch(self, epoch: int, logs: dict) -> bool:
        key = self.objective
        if key not in logs:
            self.objective_missing(logs)
        now = time.perf_counter()
        self.epoch_seconds.append(round(now - self._mark, 4))
        self._mark = now
        done = self.epochs_run
        for name in logs:  # a user's model logs its own metrics: each gets a column from here on
            if name not in self.history:
                self.history[name] = [None] * done
        for name, values in self.history.items():
            values.append(_finite(logs.get(name)))
        value = _finite(logs[key])
        if value is not None:
            self.writes.submit(self.trial.report, value, step=epoch, what=f"reporting epoch {epoch}")
            if self.best_value is None or (value > self.best_value if self.maximize else value < self.best_value):
                self.best_value, self.best_epoch = value, epoch
        self.writes.epoch(self.trial, epoch, logs, seconds=self.epoch_seconds[-1])  # the live landscape's row
        if self.on_epoch is not None:
            self.on_epoch(epoch, logs)
        # A fit's own training loop may log its objective only (KerasTuner's "Tune model
        # training" guide): its divergence shows there.
        watched = "loss" if "loss" in logs else key
        if _finite(logs.get(watched)) is None:
            self.stop_reason = "diverged"
            self.detail = f"non-finite {'training loss' if watched == 'loss' else watched} ({logs.get(watched)}) at epoch {epoch}"
            return True
        if not self.schedule.due(epoch, sum(self.epoch_seconds), self.pruner_seconds):
            return False
        asked = time.perf_counter()
        self.writes.flush()  # the pruner reads this epoch's report back from the database
        prune = self._call(in_background_slot(self.trial.should_prune), what=f"asking the pruner at epoch {epoch}")
        self.pruner_seconds += time.perf_counter() - asked
        self.pruner_calls += 1
        if prune:
            self.stop_reason = "pruned"
            self.detail = f"pruned at epoch {epoch}, {key} {value:.4f}" if value is not None else f"pruned at epoch {epoch}"
            return True
        return False
