"""Create or join a study: its stored configuration, data fingerprint, sampler and summary.

A study stores the :class:`~search.config.StudyConfig` it was created with, so a worker joining
it needs only ``--study`` and ``--storage``. Creation, the configuration write and the
recipe's enqueue happen under one advisory lock per study, so any number of processes can
start at once and the study is created, configured and seeded exactly once.
"""

from __future__ import annotations

import json

from search.config import StudyConfig, merge_with_stored
from search.errors import ConfigError, DataError, StudyNotFoundError
from search.pruning import make_pruner
from search.space import PARAM, enqueue_recipe
from storage import study_lock, study_names

__all__ = ["CONFIG_ATTR", "make_sampler", "open_study", "summarize"]

CONFIG_ATTR = "hpsearch_config"


def make_sampler(config: StudyConfig, worker_index: int = 0):
    """The study's sampler: TPE with every setting written out (Optuna 5 changed several
    defaults), or ``random`` as a baseline.

    ``constant_liar`` makes concurrent workers avoid sampling where running trials already
    are; each worker offsets the seed by its index so seeded workers do not sample in lockstep.
    """
    import optuna

    seed = None if config.seed is None else config.seed + worker_index
    if config.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(
        n_startup_trials=10,
        n_ei_candidates=24,
        multivariate=True,
        group=False,
        constant_liar=True,
        seed=seed,
    )


def open_study(storage, name: str, given: dict, fingerprint: str, *, create: bool = True, worker_index: int = 0, check=None):
    """Create the study ``name`` or join it; return ``(study, config, created)``.

    Args:
        storage: an ``optuna.storages.RDBStorage``.
        name: the study name.
        given: the study flags the user passed (``None`` for each flag left out).
        fingerprint: the fingerprint of the data this process loaded.
        create: create the study if it does not exist (else raise StudyNotFoundError).
        check: called with the study's configuration before the study is created or joined
            (e.g. :func:`search.data.check_split`), so a setting the data cannot serve
            writes nothing.

    Raises:
        ConfigError: a flag contradicts the stored configuration, or the study was not made
            by hpsearch, or it minimises.
        DataError: this process's data differs from the data the study was created with.
        StudyNotFoundError: ``create`` is False and there is no such study.
    """
    import optuna

    with study_lock(storage, name):
        try:
            study_id = storage.get_study_id_from_name(name)
        except KeyError:
            study_id = None
        if study_id is None:
            if not create:
                existing = ", ".join(study_names(storage.engine)) or "none"
                raise StudyNotFoundError(f"no study named {name!r} in this storage (studies: {existing}): check --study and --storage")
            config = StudyConfig(**{k: v for k, v in given.items() if v is not None}, data_fingerprint=fingerprint).validate()
            if check is not None:
                check(config)
            study = optuna.create_study(
                storage=storage,
                study_name=name,
                direction="maximize",
                sampler=make_sampler(config, worker_index),
                pruner=make_pruner(config),
            )
            study.set_user_attr(CONFIG_ATTR, config.to_dict())
            enqueue_recipe(study, config)
            return study, config, True

        attrs = storage.get_study_user_attrs(study_id)
        if CONFIG_ATTR not in attrs:
            raise ConfigError(
                f"study {name!r} exists but was not created by hpsearch (it has no {CONFIG_ATTR} attribute): choose another --study name"
            )
        directions = storage.get_study_directions(study_id)
        if directions != [optuna.study.StudyDirection.MAXIMIZE]:
            raise ConfigError(f"study {name!r} does not maximise a single value ({directions}): choose another --study name")
        stored = StudyConfig.from_dict(attrs[CONFIG_ATTR])
        stored_fp = attrs[CONFIG_ATTR].get("data_fingerprint")
        config = merge_with_stored(stored, given)
        config = StudyConfig.from_dict({**config.to_dict(), "data_fingerprint": stored_fp})
        if stored_fp and stored_fp != fingerprint:
            raise DataError(
                f"this worker's data (fingerprint {fingerprint}) differs from the data study {name!r} was created with ({stored_fp}): pass --data with the same MNIST files"
            )
        if check is not None:
            check(config)
        study = optuna.load_study(study_name=name, storage=storage, sampler=make_sampler(config, worker_index), pruner=make_pruner(config))
        # A study whose creator died before seeding it still gets the recipe's trials.
        enqueue_recipe(study, config)
        return study, config, False


def _row(t) -> dict:
    return {
        "number": t.number,
        "state": t.state.name,
        PARAM: t.params.get(PARAM),
        "val_accuracy": t.value,
        "test_accuracy": t.user_attrs.get("test_accuracy"),
        "best_epoch": t.user_attrs.get("best_epoch"),
        "epochs_run": t.user_attrs.get("epochs_run"),
    }


def summarize(study, storage, config: StudyConfig, target: int) -> dict:
    """The end-of-run summary: best trial, counts by state, the recipe's trials."""
    from search.config import RECIPE_RATES
    from storage import state_counts

    counts = state_counts(storage.engine, study._study_id)
    try:
        best = _row(study.best_trial)
    except ValueError:  # no complete trial yet
        best = None
    recipe = []
    for t in study.get_trials(deepcopy=False):
        if t.user_attrs.get("source") == "recipe" and t.state.name in ("COMPLETE", "PRUNED"):
            recipe.append(_row(t))
    recipe.sort(key=lambda r: -(r[PARAM] or 0))
    return {
        "study": study.study_name,
        "target_trials": target,
        "finished_trials": counts["COMPLETE"] + counts["PRUNED"],
        "states": counts,
        "best": best,
        "recipe_trials": recipe,
        "recipe_rates": list(RECIPE_RATES),
        "config": {k: v for k, v in config.to_dict().items()},
    }


def format_summary(summary: dict, dashboard_hint: str) -> str:
    """The human-readable summary printed at the end of ``hpsearch run``."""
    lines = [f"study {summary['study']}: {summary['finished_trials']}/{summary['target_trials']} trials finished"]
    states = ", ".join(f"{k.lower()} {v}" for k, v in summary["states"].items() if v)
    lines.append(f"  states: {states or 'no trials'}")
    best = summary["best"]
    if best:
        ta = best["test_accuracy"]
        lines.append(
            f"  best: trial {best['number']}, learning_rate {best[PARAM]:.4g}, val_accuracy {best['val_accuracy']:.4f}, "
            f"test_accuracy {'-' if ta is None else format(ta, '.4f')} (best epoch {best['best_epoch']}, {best['epochs_run']} epochs run)"
        )
    else:
        lines.append("  best: no trial completed yet")
    for r in summary["recipe_trials"]:
        val = "-" if r["val_accuracy"] is None else f"{r['val_accuracy']:.4f}"
        lines.append(f"  recipe rate {r[PARAM]:g}: {r['state'].lower()}, val_accuracy {val}, {r['epochs_run']} epochs")
    lines.append(f"  dashboard: {dashboard_hint}")
    return "\n".join(lines)


def dumps(summary: dict) -> str:
    return json.dumps(summary, indent=2, sort_keys=False)
