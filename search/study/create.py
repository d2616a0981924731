"""Create or join a study: its stored configuration, data fingerprint, sampler and summary.

A study stores the :class:`~search.study.config.StudyConfig` it was created with, so a worker joining
it needs only ``--study`` and ``--storage``. Creation, the configuration write and the
recipe's enqueue happen under one advisory lock per study, so any number of processes can
start at once and the study is created, configured and seeded exactly once.
"""

from __future__ import annotations


from search.study.config import StudyConfig, merge_with_stored
from search.errors import ConfigError, DataError
from search.study.pruners import make_pruner
from search.study.note import link_live_page
from search.study.space import PARAM, enqueue_recipe
from storage import study_lock, study_names
from storage.errors import StudyNotFoundError

__all__ = ["CONFIG_ATTR", "HEARTBEAT_ATTR", "best_own", "is_foreign", "make_sampler", "open_study", "summarize"]

CONFIG_ATTR = "hpsearch_config"
#: The heartbeat interval and grace period every worker of the study uses (issue 15: a worker
#: started with a shorter grace period failed the live trials of the others).
HEARTBEAT_ATTR = "hpsearch_heartbeat"


def is_foreign(t) -> bool:
    """Whether hpsearch did not make finished trial ``t`` (as :mod:`storage.foreign` counts them;
    a running trial's heartbeat is not in a FrozenTrial)."""
    if set(t.params) - {PARAM}:
        return True
    return t.state.name in ("COMPLETE", "PRUNED") and PARAM not in t.params


def best_own(trials):
    """The complete trial of hpsearch's with the highest value, or None."""
    best = None
    for t in trials:
        if t.state.name == "COMPLETE" and t.value is not None and not is_foreign(t):
            if best is None or t.value > best.value:
                best = t
    return best


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


def open_study(storage, name: str, given: dict, fingerprint: str, *, create: bool = True, worker_index: int = 0, check=None, say=None, target: int | None = None):
    """Create the study ``name`` or join it; return ``(study, config, created)``.

    Args:
        storage: an ``optuna.storages.RDBStorage``.
        name: the study name.
        given: the study flags the user passed (``None`` for each flag left out).
        fingerprint: the fingerprint of the data this process loaded.
        create: create the study if it does not exist (else raise StudyNotFoundError).
        check: called with the study's configuration before the study is created or joined
            (e.g. :func:`search.train.data.check_split`), so a setting the data cannot serve
            writes nothing.
        target: the ``--trials`` of this run; fewer recipe rates are enqueued when it is below
            their number (None: all of them, as ``hpsearch init`` does).
        say: called with a one-line notice (this worker's heartbeat settings differ from the
            study's, which it uses).

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
            _agree_heartbeat(storage, study._study_id, {}, say)
            enqueue_recipe(study, config, target)
            link_live_page(storage, study._study_id)  # the study's note links to its live page
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
        _agree_heartbeat(storage, study_id, attrs, say)
        # A study whose creator died before seeding it still gets the recipe's trials.
        enqueue_recipe(study, config, target)
        _restore_recipe(study, config)
        return study, config, False


def _agree_heartbeat(storage, study_id: int, attrs: dict, say) -> None:
    """Store this storage's heartbeat settings in a study that has none; else adopt the study's."""
    interval, grace = getattr(storage, "heartbeat_interval", None), getattr(storage, "grace_period", None)
    if not interval:
        return  # heartbeats off (a read-only opening)
    stored = attrs.get(HEARTBEAT_ATTR)
    if not isinstance(stored, dict) or not stored.get("interval_s") or not stored.get("grace_s"):
        storage.set_study_user_attr(study_id, HEARTBEAT_ATTR, {"interval_s": interval, "grace_s": grace})
        return
    s_interval, s_grace = int(stored["interval_s"]), int(stored["grace_s"])
    if (s_interval, s_grace) != (interval, grace):
        if say is not None:
            say(
                f"this worker's heartbeat settings ({interval} s, grace {grace} s, from HPSEARCH_HEARTBEAT_S/HPSEARCH_GRACE_S or the defaults) differ from the study's ({s_interval} s, grace {s_grace} s): using the study's, so every worker agrees on when a trial is dead"
            )
        storage.heartbeat_interval, storage.grace_period = s_interval, s_grace


def _restore_recipe(study, config: StudyConfig) -> None:
    """Enqueue again a recipe rate whose queued trial a plain Optuna objective took (issue 15).

    Such a trial finished with the objective's own parameters, so the recipe's rate never ran;
    call under the study lock.
    """
    import optuna

    trials = study.get_trials(deepcopy=False)
    taken, present = False, set()
    for t in trials:
        if t.user_attrs.get("source") != "recipe":
            continue
        if is_foreign(t):
            taken = True
        elif PARAM in t.params:
            present.add(t.params[PARAM])
        elif t.state == optuna.trial.TrialState.WAITING:
            present.add(t.system_attrs.get("fixed_params", {}).get(PARAM))
    if not taken:
        return
    for rate in config.recipe_rates():
        if rate not in present:
            study.enqueue_trial({PARAM: rate}, user_attrs={"source": "recipe", "retry_reason": "its queued trial was taken by an objective hpsearch did not make"})


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
    from search.study.config import RECIPE_RATES
    from storage import foreign_counts, own_counts

    counts = own_counts(storage.engine, study._study_id, PARAM)
    foreign = {k: v for k, v in foreign_counts(storage.engine, study._study_id, PARAM).items() if v}
    trials = study.get_trials(deepcopy=False)
    best = best_own(trials)
    recipe = []
    for t in trials:
        if t.user_attrs.get("source") == "recipe" and t.state.name in ("COMPLETE", "PRUNED") and not is_foreign(t):
            recipe.append(_row(t))
    recipe.sort(key=lambda r: -(r[PARAM] or 0))
    return {
        "study": study.study_name,
        "target_trials": target,
        "finished_trials": counts["COMPLETE"] + counts["PRUNED"],
        "states": counts,
        # Trials a plain Optuna objective added to the study: not hpsearch's, never counted.
        "foreign_trials": foreign,
        "best": None if best is None else _row(best),
        "recipe_trials": recipe,
        "recipe_rates": list(RECIPE_RATES),
        "config": {k: v for k, v in config.to_dict().items()},
    }
