"""A user's model's trials carry every parameter (issue 23), checked against Optuna's own API.

The study is built with Optuna's ask/tell on a real PostgreSQL (``study_factory.build_user_study``):
ints, a conditional int, a log float and categoricals of strings, numbers, booleans and None,
minimised, with hpsearch's own mark, a queued trial and a trial of a plain Optuna objective.
"""

from __future__ import annotations

import json
from datetime import timezone

import optuna
import pytest
import sqlalchemy

from storage import (
    ParamsTrialRow,
    TrialRow,
    best_trial,
    create_views,
    curves,
    open_engine,
    open_storage,
    param_names,
    resolve_storage_url,
    top_trials,
    trials,
)
from storage.views import VIEW_NAME
from tests.storage_tests.study_factory import MAIN, USER, build_studies, build_user_study

PLAIN = "queries-plain-optuna"
RECIPE_WITH_FOREIGN = "queries-recipe-foreign"


@pytest.fixture(scope="module")
def db(local_pg_url):
    """(url, read-only engine, optuna storage) holding the user's study and the recipe-shaped ones."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(resolve_storage_url(local_pg_url), heartbeat=False)
    build_studies(storage)
    build_user_study(storage)
    # Plain Optuna with parameters of its own and no hpsearch configuration.
    plain = optuna.create_study(storage=storage, study_name=PLAIN)
    plain.optimize(lambda t: t.suggest_float("x", 0, 1) + t.suggest_categorical("kind", ["a", "b"]).count("a"), n_trials=3)
    # The recipe's study, joined by a plain objective with another parameter: still the recipe's columns.
    recipe = optuna.create_study(storage=storage, study_name=RECIPE_WITH_FOREIGN, direction="maximize")
    recipe.set_user_attr("hpsearch_config", {"epochs": 2, "model": "recipe"})
    recipe.optimize(lambda t: t.suggest_float("learning_rate", 1e-5, 1.0, log=True), n_trials=2)
    recipe.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    engine = open_engine(local_pg_url)
    try:
        yield local_pg_url, engine, storage
    finally:
        engine.dispose()
        storage.engine.dispose()


def _optuna(storage, name):
    return optuna.load_study(study_name=name, storage=storage)


def _params(t) -> dict:
    # A queued trial's parameters are its fixed_params until a worker takes it.
    return dict(t.params) if t.params or t.state.name != "WAITING" else dict(t.system_attrs.get("fixed_params", {}))


def _expected(t) -> ParamsTrialRow:
    ua = t.user_attrs
    return ParamsTrialRow(
        number=t.number,
        state=t.state.name,
        params=_params(t),
        value=t.value,
        best_epoch=ua.get("best_epoch"),
        epochs_run=ua.get("epochs_run"),
        stop_reason=ua.get("stop_reason"),
        test_accuracy=ua.get("test_accuracy"),
        duration_s=None if t.duration is None else t.duration.total_seconds(),
        host=ua.get("host"),
        gpu=ua.get("gpu"),
        datetime_start=None if t.datetime_start is None else t.datetime_start.astimezone(timezone.utc),
        datetime_complete=None if t.datetime_complete is None else t.datetime_complete.astimezone(timezone.utc),
    )


def test_trials_carry_every_parameter_decoded_as_optuna_does(db):
    _, engine, storage = db
    study = _optuna(storage, USER)
    rows = trials(engine, USER)
    assert rows == [_expected(t) for t in study.trials]
    assert all(type(r) is ParamsTrialRow for r in rows)
    by_number = {r.number: r for r in rows}
    for t in study.trials:
        assert list(by_number[t.number].params) == list(_params(t)), "in the order the trial suggested them"
    complete = [r for r in rows if r.state == "COMPLETE" and "activation" in r.params]
    # categoricals are their choices, not Optuna's stored index; ints are ints
    assert {type(r.params["activation"]) for r in complete} == {str}
    assert {r.params["batch_size"] for r in complete} <= {16, 32, 64}
    assert {type(r.params["dropout"]) for r in complete} == {bool}
    assert {r.params["optimizer"] for r in complete} <= {None, "adam", "sgd"}
    assert all(type(r.params["num_layers"]) is int and all(f"units_{k}" in r.params for k in range(r.params["num_layers"])) for r in complete)
    assert [r.params for r in rows if r.state == "FAIL"] == [{}]
    assert [r.params["activation"] for r in rows if r.state == "WAITING"] == ["tanh"]  # its queued defaults
    assert {r.state for r in rows} == {"COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING"}


def test_best_and_top_follow_the_minimised_objective(db):
    _, engine, storage = db
    study = _optuna(storage, USER)
    complete = sorted((t for t in study.trials if t.state.name == "COMPLETE"), key=lambda t: t.value)
    assert best_trial(engine, USER) == _expected(study.best_trial)
    assert top_trials(engine, USER, 4) == [_expected(t) for t in complete[:4]]
    assert [r.value for r in trials(engine, USER, states=["complete"], sort="value", limit=3)] == [t.value for t in complete[:3]]


def test_filters_apply_to_rows_with_parameters(db):
    _, engine, storage = db
    study = _optuna(storage, USER)
    pruned = trials(engine, USER, states=["pruned"], sort="value", descending=True)
    assert pruned == sorted((_expected(t) for t in study.trials if t.state.name == "PRUNED"), key=lambda r: -r.value)
    # no parameter is called learning_rate here, so a learning-rate range keeps nothing
    assert trials(engine, USER, lr_min=1e-9) == []


def test_param_names_are_the_studys_in_the_order_first_suggested(db):
    _, engine, storage = db
    names = param_names(engine, USER)
    assert names == list(dict.fromkeys(n for t in _optuna(storage, USER).trials for n in _params(t)))
    assert names[:2] == ["num_layers", "units_0"] and {"activation", "optimizer", "lr", "value", "x"} <= set(names)
    assert param_names(engine, PLAIN) == ["x", "kind"]
    assert param_names(engine, MAIN) is None and param_names(engine, RECIPE_WITH_FOREIGN) is None


def test_the_recipe_keeps_its_learning_rate_column_and_plain_optuna_shows_its_parameters(db):
    _, engine, storage = db
    recipe = trials(engine, RECIPE_WITH_FOREIGN)
    assert all(type(r) is TrialRow for r in recipe)
    assert [r.learning_rate for r in recipe] == [t.params.get("learning_rate") for t in _optuna(storage, RECIPE_WITH_FOREIGN).trials]
    plain = trials(engine, PLAIN)
    assert [r.params for r in plain] == [t.params for t in _optuna(storage, PLAIN).trials]
    assert type(best_trial(engine, PLAIN)) is ParamsTrialRow


def test_the_view_holds_every_parameter_as_jsonb(db):
    url, engine, storage = db
    writer = open_engine(url, read_only=False)
    try:
        create_views(writer)
    finally:
        writer.dispose()
    with engine.connect() as conn:
        got = dict(conn.execute(sqlalchemy.text(f"SELECT number, params FROM {VIEW_NAME} WHERE study = :s"), {"s": USER}).all())
        lr = dict(conn.execute(sqlalchemy.text(f"SELECT number, learning_rate FROM {VIEW_NAME} WHERE study = :s"), {"s": MAIN}).all())
        recipe = dict(conn.execute(sqlalchemy.text(f"SELECT number, params FROM {VIEW_NAME} WHERE study = :s"), {"s": MAIN}).all())
        relu = conn.execute(
            sqlalchemy.text(f"SELECT count(*) FROM {VIEW_NAME} WHERE study = :s AND params->>'activation' = 'relu' AND (params->>'batch_size')::int >= 16"),
            {"s": USER},
        ).scalar()
    assert got == {r.number: r.params for r in trials(engine, USER)}  # categoricals decoded in SQL too
    assert relu == sum(r.params.get("activation") == "relu" for r in trials(engine, USER))
    # the recipe's rows: its learning rate, also under params ({} for a trial that has none)
    assert {n: p.get("learning_rate", lr[n]) for n, p in recipe.items()} == lr


def test_a_categorical_with_a_non_finite_choice_is_null_in_the_view_and_decoded_in_python(db):
    url, engine, storage = db
    study = optuna.create_study(storage=storage, study_name="queries-nan-choice")
    study.set_user_attr("hpsearch_config", {"model": "m.py:build"})
    study.optimize(lambda t: [t.suggest_categorical("c", [float("nan"), 1.5]), t.suggest_int("n", 1, 2)][1], n_trials=4)
    writer = open_engine(url, read_only=False)
    try:
        create_views(writer)
    finally:
        writer.dispose()
    with engine.connect() as conn:
        rows = conn.execute(sqlalchemy.text(f"SELECT number, params FROM {VIEW_NAME} WHERE study = 'queries-nan-choice' ORDER BY number")).all()
    api = trials(engine, "queries-nan-choice")
    assert [p for _, p in rows] == [{"c": None, "n": r.params["n"]} for r in api]
    assert {json.dumps(r.params["c"]) for r in api} <= {"NaN", "1.5"}


def test_a_sqlite_storage_gives_the_same_rows(tmp_path):
    # hpsearch run accepts sqlite:/// for one worker, so a user's model may live there too.
    url = f"sqlite:///{tmp_path / 'study.db'}"
    storage = open_storage(resolve_storage_url(url), heartbeat=False)
    build_user_study(storage)
    engine = open_engine(url)
    try:
        rows = trials(engine, USER)
        assert rows == [_expected(t) for t in _optuna(storage, USER).trials]
        assert best_trial(engine, USER).number == _optuna(storage, USER).best_trial.number
        assert param_names(engine, USER) == list(dict.fromkeys(n for t in _optuna(storage, USER).trials for n in _params(t)))
    finally:
        engine.dispose()
        storage.engine.dispose()


def test_trials_filter_and_sort_on_any_parameter_as_optuna_sees_it(db):
    """`--param` and `--sort param_<name>` (issue 23): filters on the values the objective saw
    (a choice, a bool, an int range, a queued trial's defaults), checked against Optuna's trials."""
    _, engine, storage = db
    study = _optuna(storage, USER)
    every = [_expected(t) for t in study.trials]

    relu = trials(engine, USER, params={"activation": "relu"})
    assert relu == [r for r in every if r.params.get("activation") == "relu"] and relu
    assert trials(engine, USER, params={"dropout": "true"}) == [r for r in every if r.params.get("dropout") is True]
    wide = trials(engine, USER, params={"units_0": (48, None), "batch_size": "32"})
    assert wide == [r for r in every if r.params.get("units_0", 0) >= 48 and r.params.get("batch_size") == 32]
    assert trials(engine, USER, params={"activation": "tanh"}, states=["waiting"]) == [r for r in every if r.state == "WAITING"]

    by_units = trials(engine, USER, sort="param_units_0", descending=True, limit=3)
    having = sorted((r for r in every if r.params.get("units_0") is not None), key=lambda r: -r.params["units_0"])
    assert [r.params["units_0"] for r in by_units] == [r.params["units_0"] for r in having[:3]]
    ascending = trials(engine, USER, sort="param_activation")
    assert [r.params.get("activation") for r in ascending] == sorted(r.params["activation"] for r in every if "activation" in r.params) + [
        None] * sum("activation" not in r.params for r in every)  # missing last

    low = min(r.value for r in every if r.value is not None)
    assert [r.number for r in trials(engine, USER, max_value=low)] == [r.number for r in every if r.value == low]

    with pytest.raises(Exception, match=r"has no parameter 'unit_0' \(its parameters: activation, batch_size, .*check the name"):
        trials(engine, USER, params={"unit_0": (1, None)})
    with pytest.raises(Exception, match=r"has no parameter 'learnrate'"):
        trials(engine, USER, sort="param_learnrate")


def test_the_recipes_one_parameter_filters_as_its_learning_rate(db):
    _, engine, _ = db
    rows = trials(engine, MAIN, params={"learning_rate": (1e-3, 1e-2)}, sort="param_learning_rate")
    assert rows == trials(engine, MAIN, lr_min=1e-3, lr_max=1e-2, sort="learning_rate") and rows
    with pytest.raises(Exception, match=r"has no parameter 'units' \(its parameters: learning_rate\)"):
        trials(engine, MAIN, params={"units": "3"})


def test_curves_carry_a_users_objective_as_value_not_as_val_accuracy(db):
    """A study minimising val_loss (issue 23): each point's value is the loss the trial reported,
    and val_accuracy is the history's (none here), not the reported loss under another name."""
    _, engine, storage = db
    reported = [t for t in _optuna(storage, USER).trials if t.intermediate_values][:3]
    points = curves(engine, USER, [t.number for t in reported])
    for t in reported:
        mine = [p for p in points if p.number == t.number]
        assert {p.epoch: p.value for p in mine} == t.intermediate_values
        assert all(p.val_accuracy is None for p in mine)
