"""The search space, and the recipe's rates enqueued once per study.

One parameter, ``learning_rate``, sampled log-uniformly in ``[lr_min, lr_max]`` (default
``[1e-5, 1.0]``). The recipe's three rates are enqueued as the study's first trials so that
every study contains the recipe's own experiment; 0.01, the recipe's best, goes first
(:data:`RECIPE_BEST`). ``enqueue_trial(skip_if_exists=True)``
alone is not enough (optuna#982, #2925: two processes both see "not there" and both enqueue),
so the check and the enqueue run under the study's advisory lock, and a study attribute marks
the work done.
"""

from __future__ import annotations

from search.study.config import StudyConfig

__all__ = ["PARAM", "RECIPE_BEST", "RECIPE_ENQUEUED_ATTR", "enqueue_recipe", "recipe_order", "suggest"]

PARAM = "learning_rate"
RECIPE_ENQUEUED_ATTR = "hpsearch_recipe_enqueued"
#: The rate the recipe reports as its best (about 90% at 0.01), enqueued first: a study's first
#: trial always trains whole under successive halving (nothing to compare it with yet), so it
#: should be the recipe's best guess, not its 0.1. Measured in docs/benchmarks.md
#: ("Search efficiency"): with 0.1 first, 0.1 and 0.01 both trained every epoch.
RECIPE_BEST = 0.01


def recipe_order(rates) -> list[float]:
    """The recipe's rates in the order they are enqueued: :data:`RECIPE_BEST` first, then the others as the recipe lists them."""
    return sorted(rates, key=lambda r: r != RECIPE_BEST)


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
    every = recipe_order(config.recipe_rates())
    rates = every if limit is None else every[: max(limit, 0)]
    for rate in rates:
        # skip_if_exists also covers a process that died between enqueueing and marking,
        # and the rates an earlier call with a smaller limit enqueued.
        study.enqueue_trial({PARAM: rate}, user_attrs={"source": "recipe"}, skip_if_exists=True)
    if len(rates) == len(every):
        study.set_user_attr(RECIPE_ENQUEUED_ATTR, True)
    return rates
