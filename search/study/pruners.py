"""The study's pruners, and the schedule of epochs at which a trial asks them.

The per-epoch monitor that reports to them is :mod:`search.train.monitor`. Why not optuna-integration's ``KerasPruningCallback``: it warns on every epoch when the
monitored metric is missing instead of failing once, it cannot record the history a pruned
trial must keep, it does not stop a diverged (NaN) trial, and it asks the pruner at every
epoch, where most answers cannot be "stop". The monitor asks at every epoch where the
pruner can act (:class:`PrunerSchedule`) and at no other, so a trial the rule would stop at
epoch e stops at e.

The default pruner, :class:`AshaPruner` (``--pruner asha``), is asynchronous successive
halving with rungs at 1, 3, 9, 27, 81 and 243 epochs trained: a trial goes on past a rung
only if its ``val_accuracy`` there is in the top third of every trial's at that rung. The
study's first trial always goes on (nothing to compare it with), which is why the recipe's
best rate, 0.01, is enqueued first (:data:`search.study.space.RECIPE_BEST`). It reads
one value per trial at the rung (:func:`storage.step_values`) and caches what it read, where
Optuna's pruners reload every running trial whole at each question (docs/benchmarks.md,
"Search efficiency", for the measurements behind the choice).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from search.study.config import StudyConfig

__all__ = ["EVERY_EPOCH", "PRUNER_BUDGET", "AshaPruner", "PrunerSchedule", "make_pruner", "pruner_schedule", "rung_epochs", "warmup_steps"]

#: Trials that must finish before the median pruner prunes anything.
MEDIAN_STARTUP_TRIALS = 5
#: The share of a trial's training time its questions to the pruner may take: no limit, so
#: that no decision waits for training to catch up (each question of the default pruner is
#: one small indexed read). A finite share spaces questions out (``FitOptions.pruner_budget``).
PRUNER_BUDGET = math.inf
#: Successive halving's rungs: epochs trained 1, 3, 9, ... and the top third goes on.
ASHA_REDUCTION_FACTOR = 3
ASHA_MIN_EPOCHS = 1


def warmup_steps(epochs: int) -> int:
    """Epochs a trial trains before the median pruner may stop it: 10% of the epochs, at least 1.

    Adam at a good rate can still trail a worse one during the first epochs; a warm-up keeps
    the pruner from judging that early noise.
    """
    return max(1, round(epochs * 0.1))


def rung_epochs(epochs: int, min_epochs: int = ASHA_MIN_EPOCHS, reduction_factor: int = ASHA_REDUCTION_FACTOR) -> list[int]:
    """The 0-based epochs at which successive halving judges a trial of ``epochs`` epochs.

    Rung k is reached after ``min_epochs * reduction_factor**k`` epochs trained (epoch index
    one less); the last epoch is never a rung, since stopping there saves nothing.

    >>> rung_epochs(10), rung_epochs(500)
    ([0, 2, 8], [0, 2, 8, 26, 80, 242])
    """
    out, trained = [], min_epochs
    while trained - 1 < epochs - 1:
        out.append(trained - 1)
        trained *= reduction_factor
    return out


class AshaPruner:
    """Asynchronous successive halving on epochs trained, with cheap cached reads.

    At a rung epoch (:func:`rung_epochs`) a trial is stopped unless its value is among the
    best ``max(1, n // reduction_factor)`` of the ``n`` values reported at that epoch by the
    study's trials (running, complete or pruned; itself included), the rule of Optuna's
    ``SuccessiveHalvingPruner`` (Li et al., "A System for Massively Parallel Hyperparameter
    Tuning", 2020). So the study's first trial always goes on, the second goes on only if it
    beats the first, and thereafter the top third does. A non-finite value is stopped. At any
    other epoch the answer is "go on" without reading anything.

    Unlike Optuna's pruner it writes nothing (the rung values are the intermediate values
    themselves) and, on an RDB storage, reads only the values at the rung's epoch of trials
    it has not seen there yet (:func:`storage.step_values`; a reported value never changes),
    instead of every running trial whole. On other storages it reads ``study.get_trials``.
    It follows Optuna's pruner protocol (``prune(study, trial)``) without subclassing
    ``BasePruner``, so that importing this module does not import Optuna.

    Args:
        epochs: the study's epochs per trial (rungs at or past the last epoch are dropped).
        min_epochs: epochs trained at the first rung.
        reduction_factor: the share kept at each rung is one in ``reduction_factor``.
        keep: optional share kept at each rung in turn (the last holds for the later rungs),
            instead of one in ``reduction_factor`` everywhere; not the default (screened in
            ``tests/benchmarks/rung_replay.py``: a lenient first rung cost epochs and did not
            raise the best).
    """

    def __init__(self, epochs: int, min_epochs: int = ASHA_MIN_EPOCHS, reduction_factor: int = ASHA_REDUCTION_FACTOR,
                 keep: tuple[float, ...] | None = None):
        self.epochs = epochs
        self.reduction_factor = reduction_factor
        self.rungs = rung_epochs(epochs, min_epochs, reduction_factor)
        #: the share that goes on at each rung (the last share holds for the rungs after it)
        self.keep = tuple(keep) if keep else (1 / reduction_factor,)
        self._seen: dict[tuple[int, int], dict[int, float]] = {}
        #: storage reads made, for benchmarks and tests
        self.reads = 0

    def prune(self, study, trial) -> bool:
        import optuna

        step = trial.last_step
        if step is None or step not in self.rungs:
            return False
        value = trial.intermediate_values[step]
        if not math.isfinite(value):
            return True
        values = self._values_at(study, step)
        values[trial._trial_id] = value
        ranked = sorted((v for v in values.values() if not math.isnan(v)), reverse=study.direction == optuna.study.StudyDirection.MAXIMIZE)
        share = self.keep[min(self.rungs.index(step), len(self.keep) - 1)]
        keep = max(1, int(len(ranked) * share + 1e-9))
        cut = ranked[keep - 1]
        return value < cut if study.direction == optuna.study.StudyDirection.MAXIMIZE else value > cut

    def _values_at(self, study, step: int) -> dict[int, float]:
        backend = _rdb_backend(study)
        self.reads += 1
        if backend is None:
            return {t._trial_id: t.intermediate_values[step] for t in study.get_trials(deepcopy=False)
                    if step in t.intermediate_values and t.state.name != "FAIL"}
        from storage.fleet import step_values

        seen = self._seen.setdefault((study._study_id, step), {})
        seen.update(step_values(backend.engine, study._study_id, step, exclude=seen.keys()))
        return dict(seen)


def _rdb_backend(study):
    """The RDBStorage under ``study`` (Optuna wraps it in a cache), or None for other storages."""
    import optuna

    storage = study._storage
    storage = getattr(storage, "_backend", storage)
    return storage if isinstance(storage, optuna.storages.RDBStorage) else None


def make_pruner(config: StudyConfig):
    """The pruner named by ``config.pruner``, with its settings written out."""
    import optuna

    if config.pruner == "asha":
        return AshaPruner(config.epochs)
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
        steps: where given, the only epochs the pruner can act at (successive halving's
            rungs): ask there and nowhere else.
    """

    enabled: bool = True
    first_step: int = 0
    last_step: int | None = None
    budget: float = PRUNER_BUDGET
    steps: frozenset[int] | None = None  # last, so positional construction keeps its meaning

    def due(self, epoch: int, train_seconds: float, asked_seconds: float) -> bool:
        """Ask the pruner at ``epoch``, given the seconds trained and spent asking so far?"""
        if not self.enabled or epoch < self.first_step:
            return False
        if self.last_step is not None and epoch >= self.last_step:
            return False
        if self.steps is not None and epoch not in self.steps:
            return False
        return self.budget == math.inf or asked_seconds <= self.budget * train_seconds


#: Ask at every epoch (what Optuna's own callbacks do).
EVERY_EPOCH = PrunerSchedule(budget=math.inf)


def pruner_schedule(config: StudyConfig, budget: float = PRUNER_BUDGET) -> PrunerSchedule:
    """The schedule that matches :func:`make_pruner`'s pruner for ``config``."""
    last = config.epochs - 1
    if config.pruner == "asha":
        return PrunerSchedule(steps=frozenset(rung_epochs(config.epochs)), last_step=last, budget=budget)
    if config.pruner == "median":
        return PrunerSchedule(first_step=warmup_steps(config.epochs), last_step=last, budget=budget)
    if config.pruner == "hyperband":
        return PrunerSchedule(first_step=0, last_step=last, budget=budget)
    return PrunerSchedule(enabled=False)
