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


def enqueue_recipe(study, config: StudyConfig) -> list[float]:
    """Enqueue the recipe's rates that lie in the study's range; call under the study lock.

    Returns the rates enqueued by this call (empty when an earlier call already did it).
    """
    if study.user_attrs.get(RECIPE_ENQUEUED_ATTR):
        return []
    rates = config.recipe_rates()
    for rate in rates:
        # skip_if_exists also covers a process that died between enqueueing and marking.
        study.enqueue_trial({PARAM: rate}, user_attrs={"source": "recipe"}, skip_if_exists=True)
    study.set_user_attr(RECIPE_ENQUEUED_ATTR, True)
    return rates
