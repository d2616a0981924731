"""The search space, and the recipe's rates enqueued once per study.

One parameter, ``learning_rate``, sampled log-uniformly in ``[lr_min, lr_max]`` (default
``[1e-5, 1.0]``). The recipe's three rates are enqueued as the study's first trials so that
every study contains the recipe's own experiment. ``enqueue_trial(skip_if_exists=True)``
alone is not enough (optuna#982, #2925: two processes both see "not there" and both enqueue),
so the check and the enqueue run under the study's advisory lock, and a study attribute marks
the work done.
"""

from __future__ import annotations

from search.config import StudyConfig

__all__ = ["PARAM", "RECIPE_ENQUEUED_ATTR", "suggest", "enqueue_recipe"]

PARAM = "learning_rate"
RECIPE_ENQUEUED_ATTR = "hpsearch_recipe_enqueued"


def suggest(trial, config: StudyConfig) -> float:
    """Sample the trial's learning rate (or take the enqueued one)."""
    return trial.suggest_float(PARAM, config.lr_min, config.lr_max, log=True)


def enqueue_recipe(study, config: StudyConfig, limit: int | None = None) -> list[float]:
    """Enqueue the recipe's rates that lie in the study's range; call under the study lock.

    Args:
        limit: enqueue at most this many (a ``--trials`` below three); a later call with a
            larger limit enqueues the rest. Without it, a study run with ``--trials 1`` kept
            two recipe trials WAITING that no worker would ever run (issue 15).

    Returns the rates this call asked for (empty when an earlier call already did it all).
    """
    if study.user_attrs.get(RECIPE_ENQUEUED_ATTR):
        return []
    every = config.recipe_rates()
    rates = every if limit is None else every[: max(limit, 0)]
    for rate in rates:
        # skip_if_exists also covers a process that died between enqueueing and marking,
        # and the rates an earlier call with a smaller limit enqueued.
        study.enqueue_trial({PARAM: rate}, user_attrs={"source": "recipe"}, skip_if_exists=True)
    if len(rates) == len(every):
        study.set_user_attr(RECIPE_ENQUEUED_ATTR, True)
    return rates
