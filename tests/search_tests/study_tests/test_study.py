"""Creating and joining studies: stored settings, fingerprints, the recipe enqueued once."""

import multiprocessing as mp
import time

import optuna
import pytest

from search.study.config import StudyConfig
from search.errors import ConfigError, DataError
from storage.errors import StudyNotFoundError
from search.study.create import CONFIG_ATTR, open_study
from storage import open_storage, resolve_storage_url, state_counts

def _rate(t):
    """The learning rate of a trial; an enqueued (WAITING) trial keeps it in fixed_params."""
    return t.params.get("learning_rate", t.system_attrs.get("fixed_params", {}).get("learning_rate"))


GIVEN = {"epochs": 3, "batch_size": None, "train_size": 1000, "validation": None, "lr_min": None, "lr_max": None, "pruner": None, "seed": None}


def _storage(url):
    return open_storage(resolve_storage_url(url))


def _name(tag):
    return f"{tag}-{time.time_ns()}"


def test_a_new_study_stores_its_settings_and_the_recipe(pg_url):
    storage = _storage(pg_url)
    name = _name("new")
    study, config, created = open_study(storage, name, GIVEN, "fp1")
    assert created and config.epochs == 3 and config.train_size == 1000 and config.batch_size == 1024
    assert study.user_attrs[CONFIG_ATTR]["data_fingerprint"] == "fp1"
    waiting = study.get_trials(states=[optuna.trial.TrialState.WAITING])
    assert sorted(_rate(t) for t in waiting) == [0.0001, 0.01, 0.1]
    # joining with no flags takes the stored settings and enqueues nothing more
    _, joined, created2 = open_study(storage, name, dict.fromkeys(GIVEN), "fp1")
    assert not created2 and joined.epochs == 3 and joined.train_size == 1000
    assert state_counts(storage.engine, study._study_id)["WAITING"] == 3


def test_joining_with_other_settings_or_data_is_refused(pg_url):
    storage = _storage(pg_url)
    name = _name("conflict")
    open_study(storage, name, GIVEN, "fp1")
    with pytest.raises(ConfigError, match="--epochs 5 contradicts this study's stored --epochs 3"):
        open_study(storage, name, {**GIVEN, "epochs": 5}, "fp1")
    with pytest.raises(ConfigError, match="--lr-max 0.5 contradicts"):
        open_study(storage, name, {**dict.fromkeys(GIVEN), "lr_max": 0.5}, "fp1")
    with pytest.raises(DataError, match="differs from the data study"):
        open_study(storage, name, dict.fromkeys(GIVEN), "fp2")


def test_foreign_and_minimising_studies_are_refused(pg_url):
    storage = _storage(pg_url)
    foreign = _name("foreign")
    optuna.create_study(storage=storage, study_name=foreign, direction="maximize")
    with pytest.raises(ConfigError, match="was not created by hpsearch"):
        open_study(storage, foreign, GIVEN, "fp")
    minimise = _name("min")
    s = optuna.create_study(storage=storage, study_name=minimise, direction="minimize")
    s.set_user_attr(CONFIG_ATTR, StudyConfig().to_dict())
    with pytest.raises(ConfigError, match="does not maximise"):
        open_study(storage, minimise, GIVEN, "fp")
    with pytest.raises(StudyNotFoundError, match="no study named 'nope'.*studies: "):
        open_study(storage, "nope", GIVEN, "fp", create=False)


def _open_at(url, name, start_at, q):
    try:
        storage = _storage(url)
        time.sleep(max(0.0, start_at - time.time()))
        _, _, created = open_study(storage, name, GIVEN, "fp")
        q.put(("ok", created))
    except Exception as e:  # report, don't hang the parent
        q.put(("error", repr(e)))


def test_recipe_is_enqueued_once_when_four_processes_start_together(pg_url):
    name = _name("race")
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    start_at = time.time() + 4.0  # after every process has imported and connected
    procs = [ctx.Process(target=_open_at, args=(pg_url, name, start_at, q)) for _ in range(4)]
    for p in procs:
        p.start()
    try:
        results = [q.get(timeout=60) for _ in procs]
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    assert all(r[0] == "ok" for r in results), results
    assert sorted(r[1] for r in results) == [False, False, False, True]
    study = optuna.load_study(study_name=name, storage=_storage(pg_url))
    rates = sorted(_rate(t) for t in study.trials)
    assert rates == [0.0001, 0.01, 0.1]


def test_a_target_below_three_enqueues_only_that_many_recipe_rates(pg_url):
    """Issue 15: `run --trials 1` left two recipe trials WAITING that no worker would run."""
    storage = _storage(pg_url)
    name = _name("few")
    study, _, _ = open_study(storage, name, GIVEN, "fp1", target=1)
    assert [_rate(t) for t in study.get_trials(states=[optuna.trial.TrialState.WAITING])] == [0.01]  # the recipe's best first
    # a later run with a larger target queues the rest, once
    for _ in range(2):
        study, _, _ = open_study(storage, name, dict.fromkeys(GIVEN), "fp1", target=5)
    assert sorted(_rate(t) for t in study.get_trials(states=[optuna.trial.TrialState.WAITING])) == [0.0001, 0.01, 0.1]
