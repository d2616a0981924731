"""The recipe as a model like any other (issue 23): its model is built through KerasTuner's
``build(hp)`` contract (search/train/recipe.py), by the recipe's own objective and by hpsearch
run with ``--model search.train.recipe:recipe`` as any user's model would be."""

from __future__ import annotations

import json

import numpy as np
import optuna
import pytest

from tests.conftest import run_cli


def _hp(params: dict, number: int):
    from search.study.hyperparameters import HyperParameters

    return HyperParameters(optuna.trial.FixedTrial(params, number=number))


def test_build_draws_the_rate_from_hp_and_seeds_the_initial_weights_cached_or_not():
    import keras

    from search.train.model import ModelCache, initial_weights
    from search.train.recipe import Recipe

    hp = _hp({"learning_rate": 0.02}, number=4)
    fresh = Recipe(seed=10, hidden_units=32).build(hp)
    assert fresh.compiled and isinstance(fresh, keras.Model)
    assert float(keras.ops.convert_to_numpy(fresh.optimizer.learning_rate)) == pytest.approx(0.02)
    assert hp.values == {"learning_rate": 0.02}
    expected = initial_weights(14, hidden_units=32)  # seed + trial number
    for got, want in zip(fresh.get_weights(), expected):
        np.testing.assert_array_equal(got, want)

    models = ModelCache()
    cached = Recipe(seed=10, hidden_units=32, models=models)
    cached.build(_hp({"learning_rate": 0.5}, number=0))  # builds and caches the model
    again = cached.build(_hp({"learning_rate": 0.02}, number=4))
    assert again is models.get(0.02, hidden_units=32)  # the cached one, reset
    for got, want in zip(again.get_weights(), expected):
        np.testing.assert_array_equal(got, want)
    assert float(keras.ops.convert_to_numpy(again.optimizer.learning_rate)) == pytest.approx(0.02)


def test_build_refuses_a_range_hp_refuses():
    from search.errors import ConfigError
    from search.train.recipe import Recipe

    with pytest.raises(ConfigError, match="learning_rate"):
        Recipe(lr_min=0.0, lr_max=1.0).build(_hp({"learning_rate": 0.1}, number=0))


def test_the_recipe_runs_as_a_users_model(tmp_path, mnist):
    db = f"sqlite:///{tmp_path}/recipe-as-user.db"
    env = {"HPSEARCH_DATA": mnist} if mnist else {}  # the loader reads it, else Keras's download
    out = run_cli("run", "--model", "search.train.recipe:recipe", "--data", "search.train.recipe:load_data", "--trials", "3",
                  "--epochs", "1", "--train-size", "1500", "--seed", "1", "--storage", db, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    study = optuna.load_study(study_name="search.train.recipe.recipe", storage=db)  # named after its --model
    assert len([t for t in study.trials if t.state.is_finished()]) == 3
    assert all(set(t.params) == {"learning_rate"} for t in study.trials)
    config = study.user_attrs["hpsearch_config"]
    assert config["model"] == "search.train.recipe:recipe" and config["landscape_param"] == "learning_rate"
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert complete and all(0.0 < t.value <= 1.0 for t in complete)
    assert json.dumps(complete[0].user_attrs["history"])  # per-epoch logs recorded as for any model
