"""Pruners, and the per-epoch monitor that reports to them.

The monitor is plain Python (no Keras import) so that it can be tested with Optuna's
ask/report/tell and no training; ``search.objective`` wraps it in a Keras callback.

Why not optuna-integration's ``KerasPruningCallback``: it warns on every epoch when the
monitored metric is missing instead of failing once, it cannot record the history a pruned
trial must keep, it does not stop a diverged (NaN) trial, and it asks the pruner at every
epoch. Each question reads every running trial of the study, so with K workers the reads grow
as K squared; the monitor asks only where the pruner can act, and at most as often as keeps
those reads under 1% of the training time (:class:`PrunerSchedule`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

from search.config import StudyConfig
from search.errors import TrialConfigError

__all__ = ["MONITOR", "HISTORY_KEYS", "PRUNER_BUDGET", "EpochMonitor", "PrunerSchedule", "make_pruner", "pruner_schedule", "warmup_steps"]

MONITOR = "val_accuracy"
HISTORY_KEYS = ("loss", "val_loss", "accuracy", "val_accuracy")
#: Trials that must finish before the median pruner prunes anything.
MEDIAN_STARTUP_TRIALS = 5
#: The share of a trial's training time its questions to the pruner may take.
PRUNER_BUDGET = 0.01


def warmup_steps(epochs: int) -> int:
    """Epochs a trial trains before the median pruner may stop it: 10% of the epochs, at least 1.

    Adam at a good rate can still trail a worse one during the first epochs; a warm-up keeps
    the pruner from judging that early noise.
    """
    return max(1, round(epochs * 0.1))


def make_pruner(config: StudyConfig):
    """The pruner named by ``config.pruner``, with its settings written out."""
    import optuna

    if config.pruner == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=MEDIAN_STARTUP_TRIALS, n_warmup_steps=warmup_steps(config.epochs), interval_steps=1, n_min_trials=1
        )
    if config.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=config.epochs, reduction_factor=3)
    return optuna.pruners.NopPruner()


@dataclass(frozen=True)
class PrunerSchedule:
    """At which epochs the monitor asks the pruner whether to stop.

    Every epoch is still reported (the intermediate value at step = epoch); only the question,
    which reads the whole study, is skipped where its answer cannot be "stop" or where asking
    would cost more than ``budget`` of the training time so far.

    Attributes:
        enabled: False for a pruner that never prunes (``--pruner none``): never ask.
        first_step: the first epoch the pruner may judge (the median pruner's warm-up).
        last_step: the last epoch; not asked, since stopping there saves nothing. None: no limit.
        budget: the share of training time that questions may take; after an expensive
            question the next ones wait until training has caught up.
    """

    enabled: bool = True
    first_step: int = 0
    last_step: int | None = None
    budget: float = PRUNER_BUDGET

    def due(self, epoch: int, train_seconds: float, asked_seconds: float) -> bool:
        """Ask the pruner at ``epoch``, given the seconds trained and spent asking so far?"""
        if not self.enabled or epoch < self.first_step:
            return False
        if self.last_step is not None and epoch >= self.last_step:
            return False
        return self.budget == math.inf or asked_seconds <= self.budget * train_seconds


#: Ask at every epoch (what Optuna's own callbacks do).
EVERY_EPOCH = PrunerSchedule(budget=math.inf)


def pruner_schedule(config: StudyConfig, budget: float = PRUNER_BUDGET) -> PrunerSchedule:
    """The schedule that matches :func:`make_pruner`'s pruner for ``config``."""
    last = config.epochs - 1
    if config.pruner == "median":
        return PrunerSchedule(first_step=warmup_steps(config.epochs), last_step=last, budget=budget)
    if config.pruner == "hyperband":
        return PrunerSchedule(first_step=0, last_step=last, budget=budget)
    return PrunerSchedule(enabled=False)


def _finite(value) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


class EpochMonitor:
    """Record a trial's history, report ``val_accuracy`` each epoch, and decide to stop.

    After each epoch call :meth:`end_epoch`; it returns True when training must stop, with
    the reason in :attr:`stop_reason` (``"pruned"`` or ``"diverged"``).

    Args:
        trial: the ``optuna.Trial`` to report to.
        on_epoch: optional hook called with ``(epoch, logs)`` for progress display.
        call: optional ``call(fn, *args, what=...)`` wrapper for storage calls (workers retry
            them while the database is unreachable).
        schedule: when to ask the pruner (see :func:`pruner_schedule`); default every epoch.
        writes: a :class:`search.deferred.DeferredWrites` that reports go through, so they
            overlap training; flushed before each question. Default: report at once.
    """

    def __init__(self, trial, on_epoch: Callable[[int, dict], None] | None = None, call: Callable | None = None,
                 schedule: PrunerSchedule = EVERY_EPOCH, writes=None):
        from search.deferred import DeferredWrites

        self.trial = trial
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

    def end_epoch(self, epoch: int, logs: dict) -> bool:
        if MONITOR not in logs:
            raise TrialConfigError(
                f"the metric {MONITOR!r} is not among the training logs ({', '.join(sorted(logs)) or 'none'}): compile the model with metrics=['accuracy'] and pass validation data"
            )
        now = time.perf_counter()
        self.epoch_seconds.append(round(now - self._mark, 4))
        self._mark = now
        for key in HISTORY_KEYS:
            self.history[key].append(_finite(logs.get(key)))
        value = _finite(logs[MONITOR])
        if value is not None:
            self.writes.submit(self.trial.report, value, step=epoch, what=f"reporting epoch {epoch}")
            if self.best_value is None or value > self.best_value:
                self.best_value, self.best_epoch = value, epoch
        self.writes.epoch(self.trial, epoch, logs, seconds=self.epoch_seconds[-1])  # the live landscape's row
        if self.on_epoch is not None:
            self.on_epoch(epoch, logs)
        if _finite(logs.get("loss")) is None:
            self.stop_reason = "diverged"
            self.detail = f"non-finite training loss ({logs.get('loss')}) at epoch {epoch}"
            return True
        if not self.schedule.due(epoch, sum(self.epoch_seconds), self.pruner_seconds):
            return False
        asked = time.perf_counter()
        self.writes.flush()  # the pruner reads this epoch's report back from the database
        prune = self._call(self.trial.should_prune, what=f"asking the pruner at epoch {epoch}")
        self.pruner_seconds += time.perf_counter() - asked
        self.pruner_calls += 1
        if prune:
            self.stop_reason = "pruned"
            self.detail = f"pruned at epoch {epoch}, {MONITOR} {value:.4f}" if value is not None else f"pruned at epoch {epoch}"
            return True
        return False
