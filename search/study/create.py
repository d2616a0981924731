"""Create or join a study: its stored configuration, data fingerprint, sampler and summary.

A study stores the :class:`~search.study.config.StudyConfig` it was created with, so a worker joining
it needs only ``--study`` and ``--storage``. Creation, the configuration write and the
recipe's enqueue happen under one advisory lock per study, so any number of processes can
start at once and the study is created, configured and seeded exactly once.
"""

from __future__ import annotations


from search.study.config import USER_BATCH_SIZE, StudyConfig, merge_with_stored, pick_study
from search.errors import ConfigError, DataError
from search.study.pruners import make_pruner
from search.study.note import link_live_page
from search.study.space import PARAM, enqueue_recipe
from storage import study_lock, study_names
from storage.errors import StudyNotFoundError
from storage.foreign import OWN_ATTR

__all__ = ["CONFIG_ATTR", "HEARTBEAT_ATTR", "DEFAULTS_ENQUEUED_ATTR", "best_own", "check_fingerprint", "find_study", "own_param", "is_foreign", "make_sampler", "open_study", "summarize"]

CONFIG_ATTR = "hpsearch_config"
#: The heartbeat interval and grace period every worker of the study uses (issue 15: a worker
#: started with a shorter grace period failed the live trials of the others).
HEARTBEAT_ATTR = "hpsearch_heartbeat"
#: Set once the values a user's space gives as ``default=`` are enqueued as the first trial.
DEFAULTS_ENQUEUED_ATTR = "hpsearch_defaults_enqueued"


def own_param(config: StudyConfig) -> str | None:
    """The parameter that marks hpsearch's trials of this study: the recipe's learning rate,
    or None for a user's model (its trials carry :data:`OWN_ATTR` instead)."""
    return PARAM if config.is_recipe else None


def is_foreign(t, param: str | None = PARAM) -> bool:
    """Whether hpsearch did not make finished trial ``t`` (as :mod:`storage.foreign` counts them;
    a running trial's heartbeat is not in a FrozenTrial). ``param``: :func:`own_param`."""
    if param is None:
        return t.state.name != "WAITING" and not t.system_attrs.get(OWN_ATTR)
    if set(t.params) - {PARAM}:
        return True
    return t.state.name in ("COMPLETE", "PRUNED") and PARAM not in t.params


def best_own(trials, param: str | None = PARAM, maximize: bool = True):
    """The complete trial of hpsearch's with the best value, or None."""
    best = None
    for t in trials:
        if t.state.name == "COMPLETE" and t.value is not None and not is_foreign(t, param):
            if best is None or (t.value > best.value if maximize else t.value < best.value):
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


def open_study(storage, name: str, given: dict, fingerprint: str, *, create: bool = True, worker_index: int = 0, check=None, say=None, target: int | None = None,
               model_digest: str | None = None, first_params: dict | None = None):
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
        model_digest: the digest of a user's model code, stored when the study is created.
        first_params: a user's space's explicit ``default=`` values, enqueued as the study's
            first trial once (the recipe's study enqueues its rates instead).

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
            values = {k: v for k, v in given.items() if v is not None}
            if values.get("model", "recipe") != "recipe":
                values.setdefault("batch_size", USER_BATCH_SIZE)  # Keras's own default, not the recipe's 1024
            config = StudyConfig(**values, data_fingerprint=fingerprint, model_digest=model_digest).validate()
            if check is not None:
                check(config)
            study = optuna.create_study(
                storage=storage,
                study_name=name,
                direction=config.direction,
                sampler=make_sampler(config, worker_index),
                pruner=make_pruner(config),
            )
            study.set_user_attr(CONFIG_ATTR, config.to_dict())
            _agree_heartbeat(storage, study._study_id, {}, say)
            _enqueue_first(study, config, target, first_params)
            link_live_page(storage, study._study_id)  # the study's note links to its live page
            return study, config, True

        attrs = storage.get_study_user_attrs(study_id)
        if CONFIG_ATTR not in attrs:
            raise ConfigError(
                f"study {name!r} exists but was not created by hpsearch (it has no {CONFIG_ATTR} attribute): choose another --study name"
            )
        stored = StudyConfig.from_dict(attrs[CONFIG_ATTR])
        directions = storage.get_study_directions(study_id)
        if directions != [optuna.study.StudyDirection[stored.direction.upper()]]:
            verb = "maximise" if stored.direction == "maximize" else "minimise"
            raise ConfigError(f"study {name!r} does not {verb} a single value ({directions}): choose another --study name")
        stored_fp = attrs[CONFIG_ATTR].get("data_fingerprint")
        config = merge_with_stored(stored, given)
        config = StudyConfig.from_dict({**config.to_dict(), "data_fingerprint": stored_fp, "model_digest": attrs[CONFIG_ATTR].get("model_digest")})
        check_fingerprint(stored_fp, fingerprint, name)
        if check is not None:
            check(config)
        study = optuna.load_study(study_name=name, storage=storage, sampler=make_sampler(config, worker_index), pruner=make_pruner(config))
        _agree_heartbeat(storage, study_id, attrs, say)
        # A study whose creator died before seeding it still gets the recipe's trials.
        _enqueue_first(study, config, target, first_params)
        if config.is_recipe:
            _restore_recipe(study, config)
        return study, config, False


def find_study(engine, given: str | None, where: str) -> str:
    """The study a reader of ``engine``'s storage reads: ``--study`` (``given``), else the
    recipe's or the only one there (:func:`search.study.config.pick_study`).

    Raises:
        StudyNotFoundError: no such study in ``where`` (the storage, masked); the line lists those there are.
    """
    names = study_names(engine)
    name = pick_study(given, names)
    if name not in names:
        held = ", ".join(repr(n) for n in names) or "no studies"
        raise StudyNotFoundError(f"study {name!r} is not in {where} (it holds {held}): give one of them with --study")
    return name


def check_fingerprint(stored: str | None, fingerprint: str, name: str) -> None:
    """Refuse a worker whose data differ from the data study ``name`` was created with.

    Raises:
        DataError: the fingerprints differ (both named).
    """
    if stored and stored != fingerprint:
        raise DataError(
            f"this worker's data (fingerprint {fingerprint}) differs from the data study {name!r} was created with ({stored}): pass --data with the same files"
        )


def _enqueue_first(study, config: StudyConfig, target: int | None, first_params: dict | None) -> None:
    """The study's first trials, once: the recipe's rates, or a user's explicit defaults."""
    if config.is_recipe:
        enqueue_recipe(study, config, target)
        return
    if not first_params or study.user_attrs.get(DEFAULTS_ENQUEUED_ATTR):
        return
    study.enqueue_trial(first_params, user_attrs={"source": "defaults"}, skip_if_exists=True)
    study.set_user_attr(DEFAULTS_ENQUEUED_ATTR, True)


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


def _row(t, config: StudyConfig | None = None, mirrored: dict | None = None) -> dict:
    if config is not None and not config.is_recipe:
        from storage.mirrored import unmirror

        return {
            "number": t.number,
            "state": t.state.name,
            "params": unmirror(dict(t.params), mirrored or {}),  # reverse_log: the model's values
            config.objective: t.value,
            "test_metrics": t.user_attrs.get("test_metrics"),
            "best_epoch": t.user_attrs.get("best_epoch"),
            "epochs_run": t.user_attrs.get("epochs_run"),
        }
    return {
        "number": t.number,
        "state": t.state.name,
        PARAM: t.params.get(PARAM),
        "val_accuracy": t.value,
        "test_accuracy": t.user_attrs.get("test_accuracy"),
        "best_epoch": t.user_attrs.get("best_epoch"),
        "epochs_run": t.user_attrs.get("epochs_run"),
    }


def summarize(study, storage, config: StudyConfig, target: int | None, epoch_budget: int | None = None) -> dict:
    """The end-of-run summary: best trial, counts by state, the recipe's trials; with an epoch
    budget, the budget and the epochs trained."""
    from search.study.config import RECIPE_RATES
    from storage import foreign_counts, own_counts
    from storage.epochs import epochs_trained
    from storage.mirrored import study_mirrored

    param = own_param(config)
    counts = own_counts(storage.engine, study._study_id, param)
    foreign = {k: v for k, v in foreign_counts(storage.engine, study._study_id, param).items() if v}
    trials = study.get_trials(deepcopy=False)
    best = best_own(trials, param, config.direction == "maximize")
    recipe = []
    for t in trials:
        if config.is_recipe and t.user_attrs.get("source") == "recipe" and t.state.name in ("COMPLETE", "PRUNED") and not is_foreign(t):
            recipe.append(_row(t))
    recipe.sort(key=lambda r: -(r[PARAM] or 0))
    return {
        "study": study.study_name,
        "target_trials": target,
        "finished_trials": counts["COMPLETE"] + counts["PRUNED"],
        "epoch_budget": epoch_budget,
        "epochs_trained": None if epoch_budget is None else epochs_trained(storage.engine, study._study_id),
        "states": counts,
        # Trials a plain Optuna objective added to the study: not hpsearch's, never counted.
        "foreign_trials": foreign,
        "best": None if best is None else _row(best, config, None if config.is_recipe else study_mirrored(storage, study._study_id)),
        "recipe_trials": recipe,
        "recipe_rates": list(RECIPE_RATES),
        "config": {k: v for k, v in config.to_dict().items()},
    }
