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


#: Where KerasTuner's infer_metric_direction is wrong (it minimises whatever keras.metrics has and
#: its list of maximised metrics lacks), hpsearch answers otherwise: maximise, or ask (None).
KERASTUNER_WRONG = {"f1_score": "maximize", "r2_score": "maximize", "binary_io_u": "maximize", "concordance_correlation": "maximize",
                    "pearson_correlation": "maximize", "cosine_similarity": None, "mean": None, "sum": None, "metric": None}


def _ours(name: str):
    from search.errors import ConfigError
    from search.study.config import infer_direction

    try:
        return infer_direction(name)
    except ConfigError:
        return None


def test_the_direction_of_every_keras_metric_is_kerastuners():
    """Each metric of keras.metrics, by the name Keras logs it under (and with val_), gets
    KerasTuner's direction, except where KerasTuner is wrong (KERASTUNER_WRONG)."""
    import inspect

    import keras
    from keras_tuner.src.engine.metrics_tracking import infer_metric_direction

    names = set()
    for attr in dir(keras.metrics):
        cls = getattr(keras.metrics, attr)
        if inspect.isclass(cls) and issubclass(cls, keras.metrics.Metric):
            try:
                names.add(cls().name)
            except TypeError:  # needs arguments (SensitivityAtSpecificity, MeanIoU ...)
                pass
        elif inspect.isfunction(cls) and attr not in ("deserialize", "get", "serialize"):
            names.add(attr)  # keras.metrics.log_cosh and the like, compiled by function
    assert {"accuracy", "mean_absolute_error", "auc", "f1_score", "false_positives", "huber"} <= names  # the enumeration works
    checked = 0
    for name in sorted(names):
        theirs = {"min": "minimize", "max": "maximize"}.get(infer_metric_direction(name))
        expected = KERASTUNER_WRONG.get(name, theirs)
        if name not in KERASTUNER_WRONG and theirs is None:
            continue
        assert (name, _ours(name), _ours(f"val_{name}")) == (name, expected, expected)
        checked += 1
    assert checked >= 35


@pytest.mark.parametrize("name, direction", [
    ("val_mae", "minimize"), ("val_mse", "minimize"), ("rmse", "minimize"), ("val_ce", "minimize"), ("kld", "minimize"),
    ("val_level_mae", "minimize"), ("val_level_loss", "minimize"), ("val_kind_accuracy", "maximize"), ("val_acc", "maximize"),
    ("val_mean_io_u", "maximize"), ("precision_at_recall", "maximize"), ("sensitivity_at_specificity", "maximize"),
    ("val_score", None), ("val_cosine_similarity", None), ("val_maes", None),
])
def test_metric_aliases_and_a_second_outputs_keys_are_told_apart(name, direction):
    """Keras logs a metric compiled by its alias under the alias (metrics=["mae"]: val_mae) and a
    second output's under its name (val_level_mae); a name that says nothing asks for --direction."""
    assert _ours(name) == direction
