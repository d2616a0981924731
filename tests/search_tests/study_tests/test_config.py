import math

import pytest

from search.env import ENV_VARS
from search.study.config import RECIPE_RATES, StudyConfig, merge_with_stored
from search.errors import ConfigError


def test_defaults_are_the_recipe():
    c = StudyConfig()
    assert (c.epochs, c.batch_size, c.hidden_units) == (500, 1024, 1000)
    assert (c.lr_min, c.lr_max) == (1e-5, 1.0)
    assert RECIPE_RATES == (0.1, 0.01, 0.0001)
    assert c.recipe_rates() == [0.1, 0.01, 0.0001]
    assert c.validation == "holdout" and c.pruner == "asha"


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"epochs": 0}, "--epochs must be a whole number of at least 1, got 0"),
        ({"epochs": -3}, "--epochs must be"),
        ({"batch_size": 0}, "--batch-size must be"),
        ({"train_size": 0}, "--train-size must be"),
        ({"train_size": 50_001}, "--train-size 50001 is larger than the 50000"),
        ({"lr_min": 0.0}, "--lr-min must be a positive finite number"),
        ({"lr_min": -1e-3}, "--lr-min must be a positive finite number"),
        ({"lr_max": math.nan}, "--lr-max must be a positive finite number"),
        ({"lr_max": math.inf}, "--lr-max must be a positive finite number"),
        ({"lr_min": 0.1, "lr_max": 0.01}, "--lr-min 0.1 must be below --lr-max 0.01"),
        ({"lr_min": 0.1, "lr_max": 0.1}, "must be below"),
        ({"pruner": "random"}, "--pruner 'random' is unknown: use one of asha, median, hyperband, none"),
        ({"validation": "val"}, "--validation 'val' is unknown"),
    ],
)
def test_invalid_settings_name_the_flag(kwargs, fragment):
    with pytest.raises(ConfigError) as e:
        StudyConfig(**kwargs).validate()
    assert fragment in str(e.value)


def test_train_size_limit_depends_on_validation():
    StudyConfig(train_size=60_000, validation="test").validate()
    with pytest.raises(ConfigError):
        StudyConfig(train_size=60_000, validation="holdout").validate()


def test_recipe_rates_outside_the_range_are_left_out():
    assert StudyConfig(lr_min=1e-3, lr_max=1.0).recipe_rates() == [0.1, 0.01]


def test_joining_takes_stored_values_and_rejects_contradictions():
    stored = StudyConfig(epochs=7, batch_size=256)
    assert merge_with_stored(stored, {"epochs": None, "batch_size": None}) == stored
    assert merge_with_stored(stored, {"epochs": 7}) == stored
    with pytest.raises(ConfigError, match="--epochs 8 contradicts this study's stored --epochs 7"):
        merge_with_stored(stored, {"epochs": 8})


def test_config_round_trips_through_a_dict():
    c = StudyConfig(epochs=3, train_size=100, seed=4, data_fingerprint="abc")
    assert StudyConfig.from_dict(c.to_dict()).to_dict() == c.to_dict()


def test_env_registry_documents_every_variable():
    assert {"OPTUNA_STORAGE", "HPSEARCH_HOME", "HPSEARCH_DATA", "KERAS_BACKEND"} <= set(ENV_VARS)
    assert all(len(doc) > 10 for doc in ENV_VARS.values())
