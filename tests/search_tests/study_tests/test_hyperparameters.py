"""KerasTuner's HyperParameters on Optuna trials (in-memory studies; no Keras, no database)."""

import math
import statistics
import subprocess
import sys

import optuna
import pytest

from search.errors import ConfigError
from search.study.hyperparameters import HyperParameters
from tests.conftest import REPO

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _study(seed=0):
    return optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))


def _draw(build, n=200, seed=0, study=None):
    """Run ``build(hp)`` on ``n`` trials; return [(hp, trial)]."""
    study = study or _study(seed)
    out = []
    for _ in range(n):
        trial = study.ask()
        hp = HyperParameters(trial)
        build(hp)
        out.append((hp, trial))
        study.tell(trial, 0.0)
    return out


def _values(define, n=200, seed=0):
    """What ``define(hp)`` returned on each of ``n`` trials."""
    study = _study(seed)
    out = []
    for _ in range(n):
        trial = study.ask()
        out.append(define(HyperParameters(trial)))
        study.tell(trial, 0.0)
    return out


# --- values stay in range and on the grid ------------------------------------------------------


@pytest.mark.filterwarnings("error")  # Optuna warns when it must trim a range to the step grid
def test_int_linear_step_covers_its_grid_and_nothing_else():
    got = _values(lambda hp: hp.Int("units", 32, 512, step=32), n=300)
    assert set(got) == set(range(32, 513, 32))
    assert all(type(v) is int for v in got)
    # a range the step does not divide ends at the last grid point, as KerasTuner's [6, 9, 12]
    assert set(_values(lambda hp: hp.Int("n", 6, 13, step=3), n=60)) == {6, 9, 12}
    assert set(_values(lambda hp: hp.Int("k", 1, 4), n=60)) == {1, 2, 3, 4}


def test_log_step_is_a_multiplier():
    assert set(_values(lambda hp: hp.Int("batch", 2, 32, step=2, sampling="log"), n=100)) == {2, 4, 8, 16, 32}
    floats = _values(lambda hp: hp.Float("lr", 0.001, 10, step=10, sampling="log"), n=100)
    assert set(floats) == {0.001, 0.01, 0.1, 1.0, 10.0}  # exactly: grid points are rounded
    # reverse_log with a step: max + min - min * step**i
    assert set(_values(lambda hp: hp.Int("r", 2, 32, step=2, sampling="reverse_log"), n=100)) == {32, 30, 26, 18, 2}


@pytest.mark.filterwarnings("error")
def test_float_linear_step_reaches_max_as_keras_tuner_documents():
    got = _values(lambda hp: hp.Float("rate", 0, 1, step=0.2), n=200)
    assert all(0 <= v <= 1 and abs(v / 0.2 - round(v / 0.2)) < 1e-9 for v in got)
    assert {round(v, 9) for v in got} == {0.0, 0.2, 0.4, 0.6, 0.8, 1.0}


def test_continuous_ranges_stay_in_bounds():
    def build(hp):
        hp.Float("a", -2.5, 3.0)
        hp.Float("b", 1e-5, 1.0, sampling="log")
        hp.Float("c", 0.5, 0.999, sampling="reverse_log")
        hp.Int("d", 1, 1000, sampling="log")
        hp.Int("e", 1, 1000, sampling="reverse_log")

    for hp, _ in _draw(build, n=200):
        assert -2.5 <= hp["a"] <= 3.0
        assert 1e-5 <= hp["b"] <= 1.0
        assert 0.5 <= hp["c"] <= 0.999
        assert 1 <= hp["d"] <= 1000 and type(hp["d"]) is int
        assert 1 <= hp["e"] <= 1000 and type(hp["e"]) is int


def test_log_is_dense_near_min_and_reverse_log_near_max():
    def build(hp):
        hp.Float("lin", 1e-4, 1.0)
        hp.Float("log", 1e-4, 1.0, sampling="log")
        hp.Float("rev", 1e-4, 1.0, sampling="reverse_log")
        hp.Int("ilog", 1, 1000, sampling="LOG")  # any case, as KerasTuner
        hp.Int("irev", 1, 1000, sampling="Reverse_Log")

    draws = _draw(build, n=400)
    median = {k: statistics.median(hp[k] for hp, _ in draws) for k in ("lin", "log", "rev", "ilog", "irev")}
    assert 0.35 < median["lin"] < 0.65
    # log-uniform on [1e-4, 1]: the median is 1e-2; reverse_log mirrors it to 1 + 1e-4 - 1e-2
    assert 0.003 < median["log"] < 0.03
    assert 0.97 < median["rev"] < 0.997
    assert median["ilog"] < 100
    assert median["irev"] > 900


def test_reverse_log_stores_the_mirror_and_rebuilds_from_params():
    (hp, trial), *_ = _draw(lambda hp: hp.Float("momentum", 0.5, 0.999, sampling="reverse_log"), n=1)
    value = hp["momentum"]
    assert trial.params["momentum"] == pytest.approx(0.5 + 0.999 - value)
    assert trial.distributions["momentum"] == optuna.distributions.FloatDistribution(0.5, 0.999, log=True)
    assert hp.space["momentum"].from_stored(trial.params["momentum"]) == pytest.approx(value)
    again = HyperParameters(optuna.trial.FixedTrial(trial.params))
    assert again.Float("momentum", 0.5, 0.999, sampling="reverse_log") == pytest.approx(value)


def test_each_kind_is_one_optuna_parameter_with_the_closest_distribution():
    def build(hp):
        hp.Int("units", 32, 512, step=32)
        hp.Int("n", 6, 13, step=3)
        hp.Int("ilog", 1, 100, sampling="log")
        hp.Int("batch", 2, 32, step=2, sampling="log")
        hp.Float("lr", 1e-4, 1e-2, sampling="log")
        hp.Float("drop", 0.0, 0.5, step=0.1)
        hp.Choice("act", ["relu", "tanh"])
        hp.Boolean("bn")
        hp.Fixed("opt", "adam")

    (hp, trial), *_ = _draw(build, n=1)
    d = optuna.distributions
    assert trial.distributions == {
        "units": d.IntDistribution(32, 512, step=32),
        "n": d.IntDistribution(6, 12, step=3),
        "ilog": d.IntDistribution(1, 100, log=True),
        "batch": d.CategoricalDistribution([2, 4, 8, 16, 32]),
        "lr": d.FloatDistribution(1e-4, 1e-2, log=True),
        "drop": d.FloatDistribution(0.0, 0.5, step=0.1),
        "act": d.CategoricalDistribution(["relu", "tanh"]),
        "bn": d.CategoricalDistribution([False, True]),
        "opt": d.CategoricalDistribution(["adam"]),
    }
    assert trial.params == hp.values
    assert {n: spec.distribution() for n, spec in hp.space.items()} == trial.distributions
    assert hp.trial is trial and HyperParameters().trial is None


def test_boolean_and_choice_take_every_value():
    def build(hp):
        hp.Boolean("flag")
        hp.Choice("units", [16, 32, 64])

    draws = _draw(build, n=60)
    assert {hp["flag"] for hp, _ in draws} == {False, True}
    assert {hp["units"] for hp, _ in draws} == {16, 32, 64}


# --- conditions, scopes, re-registration, lookups ------------------------------------------------


def _conditional(hp):
    model = hp.Choice("model", ["mlp", "cnn"])
    with hp.conditional_scope("model", ["mlp"]):
        mlp_units = hp.Int("mlp_units", 16, 64)
    with hp.conditional_scope("model", "cnn"):  # a single value, as KerasTuner accepts
        filters = hp.Int("filters", 8, 32)
        with hp.conditional_scope("filters", [8]):
            pass
    kernel = hp.Choice("kernel", [3, 5], parent_name="model", parent_values=["cnn"])
    return model, mlp_units, filters, kernel


def test_an_inactive_conditional_hyperparameter_is_none_and_no_optuna_parameter():
    study = _study()
    study.enqueue_trial({"model": "cnn"})
    study.enqueue_trial({"model": "mlp"})
    (cnn, t_cnn), (mlp, t_mlp) = _draw(_conditional, n=2, study=study)
    assert set(t_cnn.params) == {"model", "filters", "kernel"}
    assert set(t_mlp.params) == {"model", "mlp_units"}
    assert set(cnn.values) == set(t_cnn.params) and set(mlp.values) == set(t_mlp.params)
    assert "mlp_units" not in cnn and "filters" in cnn
    with pytest.raises(ValueError, match="inactive"):
        cnn.get("mlp_units")
    with pytest.raises(ValueError, match="inactive"):
        mlp["kernel"]
    # defined anyway, with its condition
    assert mlp.space["kernel"].parent_name == "model" and mlp.space["kernel"].parent_values == ("cnn",)
    assert not mlp.is_active("kernel") and cnn.is_active("kernel")


def test_recording_mode_follows_conditions_on_the_defaults():
    hp = HyperParameters()
    assert _conditional(hp) == ("mlp", 16, None, None)
    assert list(hp.space) == ["model", "mlp_units", "filters", "kernel"]
    assert hp.values == {"model": "mlp", "mlp_units": 16}
    assert "kernel: Choice [3, 5], default 3 (implicit) if model in ['cnn']" in hp.describe().splitlines()


def test_name_scope_prefixes_names():
    def build(hp):
        with hp.name_scope("block"):
            hp.Int("units", 1, 4)
            assert hp.get("units") == hp["units"]  # lookups inside the scope are scoped too
            with hp.name_scope("inner"):
                hp.Boolean("skip")
                hp.Choice("act", ["a", "b"], parent_name="skip", parent_values=[True])
        hp.Int("units", 10, 20)

    (hp, trial), *_ = _draw(build, n=1)
    assert {"block/units", "block/inner/skip", "units"} <= set(trial.params)
    assert 1 <= hp["block/units"] <= 4 and 10 <= hp["units"] <= 20
    recorded = HyperParameters()
    build(recorded)
    assert list(recorded.space) == ["block/units", "block/inner/skip", "block/inner/act", "units"]
    assert recorded.space["block/inner/act"].parent_name == "block/inner/skip"


def test_a_name_defined_again_keeps_its_first_definition():
    def build(hp):
        first = hp.Int("units", 1, 10)
        assert hp.Int("units", 100, 200) == first  # a conflicting definition is not an error
        assert hp.Choice("units", ["x", "y"]) == first
        assert hp.Float("units", 0.0, 1.0, step=0.5, default=0.5) == first

    for hp, trial in _draw(build, n=20):
        assert 1 <= hp["units"] <= 10
        assert trial.distributions == {"units": optuna.distributions.IntDistribution(1, 10)}
    recorded = HyperParameters()
    build(recorded)
    assert recorded["units"] == 1 and recorded.space["units"].max_value == 10
    assert recorded.explicit_defaults() == {}  # the second definition's default is not the first's


def test_the_same_name_under_another_condition_is_active_on_its_own():
    def build(hp):
        hp.Choice("model", ["a", "b"])
        with hp.conditional_scope("model", ["a"]):
            a = hp.Int("units", 1, 5)
        with hp.conditional_scope("model", ["b"]):
            b = hp.Int("units", 50, 60)
        return a, b

    study = _study()
    study.enqueue_trial({"model": "b"})
    (hp, trial), *_ = _draw(build, n=1, study=study)
    assert 50 <= hp["units"] <= 60
    assert trial.distributions["units"] == optuna.distributions.IntDistribution(50, 60)
    recorded = HyperParameters()
    assert build(recorded) == (1, None)


def test_values_get_getitem_and_contains():
    hp = HyperParameters()
    hp.Int("a", 3, 9)
    hp.Fixed("b", 1.5)
    assert hp.values == {"a": 3, "b": 1.5}
    assert hp.get("a") == hp["a"] == 3
    assert "a" in hp and "b" in hp and "c" not in hp
    with pytest.raises(KeyError, match="c does not exist"):
        hp["c"]
    hp.values["a"] = 7  # a copy: the trial owns the values
    assert hp["a"] == 3


# --- defaults and explicit_defaults ----------------------------------------------------------


def _defaults_build(hp):
    hp.Int("units", 32, 512, step=32, default=64)
    hp.Int("depth", 1, 4)  # implicit: sampled
    hp.Float("lr", 1e-4, 1e-1, sampling="log", default=1e-3)
    hp.Float("momentum", 0.5, 0.999, sampling="reverse_log", default=0.9)
    hp.Int("batch", 2, 32, step=2, sampling="log", default=8)
    hp.Float("drop", 0.0, 0.5, step=0.1, default=0.2)
    hp.Choice("act", ["relu", "tanh", "gelu"], default="tanh")
    hp.Choice("opt", ["adam", "sgd"])  # implicit
    hp.Boolean("bn", default=False)  # explicit False counts
    hp.Boolean("residual")  # implicit
    hp.Fixed("epochs", 7)


def test_recording_returns_keras_tuner_defaults():
    hp = HyperParameters()
    _defaults_build(hp)
    assert hp.values == {
        "units": 64,
        "depth": 1,
        "lr": 1e-3,
        "momentum": 0.9,
        "batch": 8,
        "drop": 0.2,
        "act": "tanh",
        "opt": "adam",
        "bn": False,
        "residual": False,
        "epochs": 7,
    }
    spec = hp.space["units"]
    assert (spec.kind, spec.min_value, spec.max_value, spec.step, spec.sampling, spec.default, spec.default_given) == ("Int", 32, 512, 32, "linear", 64, True)
    assert not hp.space["depth"].default_given and not hp.space["residual"].default_given
    with pytest.raises(AttributeError):
        spec.default = 1  # frozen
    assert len(hp.describe().splitlines()) == 11


def test_explicit_defaults_are_enqueued_in_stored_form_and_the_rest_is_sampled():
    hp = HyperParameters()
    _defaults_build(hp)
    explicit = hp.explicit_defaults()
    assert explicit == {
        "units": 64,
        "lr": 1e-3,
        "momentum": pytest.approx(0.5 + 0.999 - 0.9),  # the mirror, as the parameter stores it
        "batch": 8,
        "drop": 0.2,
        "act": "tanh",
        "bn": False,
        "epochs": 7,
    }
    study = _study(seed=3)
    study.enqueue_trial(explicit)
    draws = _draw(_defaults_build, n=6, study=study)
    first, trial = draws[0]
    for name in ("units", "lr", "batch", "drop", "act", "bn", "epochs"):
        assert first[name] == hp[name], name
    assert first["momentum"] == pytest.approx(0.9)
    assert set(trial.params) == set(hp.space)  # the implicit ones were drawn too
    # the rest were not enqueued: over the trials they vary, and later trials sample everything
    assert len({h["depth"] for h, _ in draws}) > 1 and len({h["opt"] for h, _ in draws}) == 2
    assert any(h["units"] != 64 for h, _ in draws[1:])


# --- impossible hyperparameters -----------------------------------------------------------------

IMPOSSIBLE = [
    ("n", lambda hp: hp.Int("n", 5, 1), "min_value 5 is above max_value 1"),
    ("x", lambda hp: hp.Float("x", 1.0, 0.5), "min_value 1.0 is above max_value 0.5"),
    ("x", lambda hp: hp.Float("x", 0.0, 1.0, sampling="log"), "sampling='log' needs min_value above 0"),
    ("n", lambda hp: hp.Int("n", -1, 8, sampling="reverse_log"), "sampling='reverse_log' needs min_value above 0"),
    ("n", lambda hp: hp.Int("n", 1, 64, step=1, sampling="log"), "must be above 1"),
    ("x", lambda hp: hp.Float("x", 0.1, 10, step=0.5, sampling="log"), "must be above 1"),
    ("x", lambda hp: hp.Float("x", 0, 1, step=0), "step=0.0 must be above 0"),
    ("n", lambda hp: hp.Int("n", 0, 10, step=-2), "step=-2 must be above 0"),
    ("n", lambda hp: hp.Int("n", 0, 10, step=1.5), "step=1.5 is not a whole number"),
    ("n", lambda hp: hp.Int("n", 0.5, 10), "min_value=0.5 is not a whole number"),
    ("x", lambda hp: hp.Float("x", 0, math.inf), "max_value=inf is not a finite number"),
    ("x", lambda hp: hp.Float("x", 0, 1, sampling="exp"), "sampling='exp' is unknown: use one of linear, log, reverse_log"),
    ("c", lambda hp: hp.Choice("c", []), "values is empty"),
    ("c", lambda hp: hp.Choice("c", [1, 2.5]), "mix ints and floats, which KerasTuner refuses: write them all as floats, such as [1.0, 2.5]"),
    ("c", lambda hp: hp.Choice("c", [1, "a"]), "mix int and str"),
    ("c", lambda hp: hp.Choice("c", [True, 1]), "mix bool and int"),
    ("c", lambda hp: hp.Choice("c", [None, 1]), "value None is a NoneType"),
    ("c", lambda hp: hp.Choice("c", "abc"), "is not a list"),
    ("c", lambda hp: hp.Choice("c", ["a", "b"], default="z"), "default='z' is not among the values ['a', 'b']"),
    ("c", lambda hp: hp.Choice("c", [0, 1], default=True), "default=True is not among the values"),
    ("c", lambda hp: hp.Choice("c", ["a", "b"], ordered=True), "ordered=True needs numbers"),
    ("n", lambda hp: hp.Int("n", 1, 10, default=11), "default=11 is outside [1, 10]"),
    ("x", lambda hp: hp.Float("x", 0.1, 0.2, default=0.3), "default=0.3 is outside [0.1, 0.2]"),
    ("n", lambda hp: hp.Int("n", 32, 512, step=32, default=40), "default=40 is not on the step grid"),
    ("n", lambda hp: hp.Int("n", 2, 32, step=2, sampling="log", default=6), "default=6 is not on the grid [2, 4, 8, 16, 32]"),
    ("x", lambda hp: hp.Float("x", 0, 1, step=0.25, default=0.3), "default=0.3 is not on the step grid"),
    ("b", lambda hp: hp.Boolean("b", default="yes"), "default='yes' is not a bool"),
    ("f", lambda hp: hp.Fixed("f", [1, 2]), "value [1, 2] is a list"),
    ("missing", lambda hp: hp.Int("n", 1, 4, parent_name="missing", parent_values=[1]), "no hyperparameter named 'missing' is defined yet"),
]


@pytest.mark.parametrize("mode", ["recording", "trial"])
@pytest.mark.parametrize("name, define, fragment", IMPOSSIBLE)
def test_an_impossible_hyperparameter_is_refused_in_one_line(name, define, fragment, mode):
    hp = HyperParameters() if mode == "recording" else HyperParameters(_study().ask())
    with pytest.raises(ConfigError) as e:
        define(hp)
    message = str(e.value)
    assert fragment in message
    assert "\n" not in message
    assert repr(name) in message  # names the hyperparameter
    assert message.count(": ") >= 2  # "<which>: <what is wrong>: <how to fix it>"
    assert message.split(": ")[-1].strip()
    assert hp.values == {} and (hp.trial is None or hp.trial.params == {})


def test_conditions_that_cannot_work_are_refused():
    hp = HyperParameters()
    hp.Choice("model", ["a", "b"])
    with pytest.raises(ConfigError, match=r"^conditional_scope\('model', \[\]\): parent_values is empty"), hp.conditional_scope("model", []):
        pass
    with pytest.raises(ConfigError, match="'model' .* would depend on itself"), hp.conditional_scope("model", ["a"]):
        hp.Int("model", 1, 2)
    # one name under two conditions is one Optuna parameter: its kinds must agree
    with hp.conditional_scope("model", ["a"]):
        hp.Int("width", 1, 4)
    with pytest.raises(ConfigError, match="'width' is defined twice under different conditions"), hp.conditional_scope("model", ["b"]):
        hp.Choice("width", ["wide", "narrow"])


def test_a_space_changed_within_a_study_is_a_config_error():
    study = _study()
    _draw(lambda hp: hp.Int("units", 1, 8), n=1, study=study)
    with pytest.raises(ConfigError, match="'units' \\(Choice\\) does not fit this study's earlier trials"):
        _draw(lambda hp: hp.Choice("units", ["a", "b"]), n=1, study=study)


# --- a KerasTuner getting-started hypermodel, without Keras ----------------------------------------


def _getting_started(hp):
    """KerasTuner's getting-started build_model with the layers left out: what it asks of hp."""
    layers = []
    for i in range(hp.Int("num_layers", 1, 3)):
        layers.append((hp.Int(f"units_{i}", min_value=32, max_value=512, step=32), hp.Choice("activation", ["relu", "tanh"])))
    dropout = hp.Boolean("dropout")
    lr = hp.Float("lr", min_value=1e-4, max_value=1e-2, sampling="log")
    return layers, dropout, lr


def test_getting_started_build_records_its_space_and_defaults():
    hp = HyperParameters()
    layers, dropout, lr = _getting_started(hp)
    assert (layers, dropout, lr) == ([(32, "relu")], False, 1e-4)
    assert list(hp.space) == ["num_layers", "units_0", "activation", "dropout", "lr"]
    assert hp.explicit_defaults() == {}  # KerasTuner's implicit defaults are sampled, not enqueued


def test_getting_started_build_on_trials():
    draws = _draw(_getting_started, n=60)
    for hp, trial in draws:
        n = hp["num_layers"]
        assert 1 <= n <= 3
        units = [f"units_{i}" for i in range(n)]
        assert set(trial.params) == {"num_layers", *units, "activation", "dropout", "lr"}
        assert all(32 <= hp[u] <= 512 and hp[u] % 32 == 0 for u in units)
        assert 1e-4 <= hp["lr"] <= 1e-2
        assert trial.params == hp.values
    assert {hp["num_layers"] for hp, _ in draws} == {1, 2, 3}
    assert {hp["dropout"] for hp, _ in draws} == {False, True}
    # the same trial rebuilt from its stored parameters gives the same model
    hp, trial = draws[-1]
    assert _getting_started(HyperParameters(optuna.trial.FixedTrial(trial.params))) == _getting_started(hp)


def test_importing_it_loads_no_framework_and_not_optuna():
    code = (
        "import sys, search.study.hyperparameters; "
        "print(','.join(m for m in ('keras', 'tensorflow', 'keras_tuner', 'optuna') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == ""
