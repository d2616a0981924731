"""Lanes of any Keras model on JAX (issue 26): members equal their solo ``fit``, never mix, group by structure.

Keras fixes its backend at import and the test process runs TensorFlow, so the training runs in
one JAX subprocess (a module fixture) that prints what the tests assert on.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import REPO

pytest.importorskip("jax")  # the test extra installs it (pyproject.toml)
pytestmark = pytest.mark.slow

SCRIPT = textwrap.dedent('''
    import json, sys
    import numpy as np, keras, optuna
    from types import SimpleNamespace
    from keras import layers
    from search.study.hyperparameters import HyperParameters
    from search.train.backend import clear_session, set_seed
    from search.train.modellanes import ModelLanes, fit_settings
    from search.train.usermodel import HyperModel, ModelSpec

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    rng = np.random.default_rng(0)
    EPOCHS, N = 2, 320

    def data(shape):
        x = rng.normal(size=(N + 160, *shape)).astype("float32")
        w = rng.normal(size=(int(np.prod(shape)), 3))
        y = np.eye(3, dtype="float32")[np.argmax(x.reshape(len(x), -1) @ w, axis=1)]
        return SimpleNamespace(x_train=x[:N], y_train=y[:N], x_val=x[N:], y_val=y[N:], x_test=x[N:], y_test=y[N:], validation="holdout")

    def mlp(hp):
        m = keras.Sequential([keras.Input((20,)), layers.Dense(hp.Choice("units", [16, 32]), activation="relu"),
                              layers.BatchNormalization(), layers.Dropout(0.3), layers.Dense(3, activation="softmax")])
        m.compile(optimizer=keras.optimizers.Adam(hp.Float("lr", 1e-4, 1e-1, sampling="log")), loss="categorical_crossentropy", metrics=["accuracy"])
        return m

    def cnn(hp):
        m = keras.Sequential([keras.Input((10, 10, 1)), layers.Conv2D(8, 3, activation="relu"), layers.MaxPooling2D(),
                              layers.Conv2D(hp.Choice("units", [16, 32]), 3, activation="relu"), layers.Flatten(),
                              layers.Dropout(0.25), layers.Dense(3, activation="softmax")])
        m.compile(optimizer=keras.optimizers.Adam(hp.Float("lr", 1e-4, 1e-1, sampling="log")), loss="categorical_crossentropy", metrics=["accuracy"])
        return m

    def multi(hp):
        """Two named inputs and two outputs: x and y are dicts of arrays."""
        a, b = keras.Input((12,), name="a"), keras.Input((8,), name="b")
        h = layers.Dense(hp.Choice("units", [16, 32]), activation="relu")(layers.Concatenate()([a, b]))
        m = keras.Model({"a": a, "b": b}, {"kind": layers.Dense(3, activation="softmax", name="kind")(h), "level": layers.Dense(1, name="level")(h)})
        m.compile(optimizer=keras.optimizers.Adam(hp.Float("lr", 1e-4, 1e-1, sampling="log")),
                  loss={"kind": "categorical_crossentropy", "level": "mse"}, metrics={"kind": ["accuracy"]})
        return m

    def multi_data():
        flat = data((20,))
        x = lambda v: {"a": v[:, :12], "b": v[:, 12:]}
        y = lambda v: {"kind": v, "level": v[:, :1]}
        return SimpleNamespace(x_train=x(flat.x_train), y_train=y(flat.y_train), x_val=x(flat.x_val), y_val=y(flat.y_val),
                               x_test=x(flat.x_test), y_test=y(flat.y_test), validation="holdout")

    PARAMS = [dict(units=16, lr=0.01), dict(units=16, lr=0.001), dict(units=32, lr=0.003)]

    def solo(build, ds, cfg, number):
        hp = HyperParameters(optuna.trial.FixedTrial(PARAMS[number], number=number))
        clear_session(); set_seed(cfg.seed + number)
        m = build(hp)
        return m.fit(ds.x_train, ds.y_train, validation_data=(ds.x_val, ds.y_val), epochs=EPOCHS, batch_size=cfg.batch_size, verbose=0).history

    def lanes(build, ds, cfg, layout, poison=None, programs=None, saved=None):
        """``programs``: a lane model's compiled programs to reuse (the same structures: no
        compilation again); ``saved``: filled with every member's checkpoint arrays after epoch 1."""
        hm = HyperModel(build, ModelSpec("m.py:build", "file", "m.py", "build"))
        model = ModelLanes(SimpleNamespace(config=cfg, dataset=ds, hypermodel=hm, resume=lambda run, m, params: 0), layout=layout)
        if programs is not None:
            model._groups = programs
        for k in range(len(PARAMS)):
            member = model.member(optuna.trial.FixedTrial(PARAMS[k], number=k))
            if k == poison:
                t = list(member.state[0]); t[0] = t[0] * np.inf; member.state = (t, *member.state[1:])
            model.put(k, member, SimpleNamespace(trial=SimpleNamespace(params=PARAMS[k])))
        history = {k: {} for k in range(len(PARAMS))}
        for epoch in range(EPOCHS):
            for k, logs in model.epoch().items():
                for name, v in logs.items():
                    history[k].setdefault(name, []).append(v)
            if epoch == 0 and saved is not None:
                saved.update({k: model.member_state(k)() for k in range(len(PARAMS))})
        keys = [model.members[k].key for k in range(len(PARAMS))]
        return history, len(set(keys)), keys[0] == keys[1], keys[0] == keys[2], model._groups

    def resumed(build, ds, cfg, layout, saved, programs):
        """Every member stopped after its first epoch and put in a new lane model from its
        checkpoint arrays (``saved``: member_state after epoch 1 of the uninterrupted lanes,
        restored as a retry restores them): its second epoch."""
        from search.train.checkpoint import Snapshot, restore
        hm = HyperModel(build, ModelSpec("m.py:build", "file", "m.py", "build"))
        runs = [SimpleNamespace(number=k, trial=SimpleNamespace(params=PARAMS[k])) for k in range(len(PARAMS))]

        def resume(run, m, params):
            weights, optimizer = saved[run.number]
            restore(m, Snapshot(0, weights, optimizer))
            return 1

        second = ModelLanes(SimpleNamespace(config=cfg, dataset=ds, hypermodel=hm, resume=resume), layout=layout)
        second._groups = programs
        starts = [second.put(k, second.member(optuna.trial.FixedTrial(PARAMS[k], number=k)), runs[k]) for k in range(len(PARAMS))]
        assert starts == [1] * len(PARAMS), starts
        return second.epoch()

    out = {}
    cfg = SimpleNamespace(seed=7, batch_size=64, epochs=EPOCHS)
    for name, build, shape in (("mlp", mlp, (20,)), ("cnn", cnn, (10, 10, 1))):
        ds = data(shape)
        out[name] = {"solo": [solo(build, ds, cfg, k) for k in range(len(PARAMS))]}
        programs, saved = {}, {}
        for layout in ("unrolled", "vmap"):
            history, groups, same_lr, same_units, programs[layout] = lanes(build, ds, cfg, layout, saved=saved if layout == "unrolled" else None)
            out[name][layout] = history
            out[name]["groups"] = groups
            out[name]["lr_same_group"], out[name]["units_same_group"] = same_lr, same_units
        # the same structures again: the programs compiled above serve (the suite's time)
        out[name]["poisoned"] = lanes(build, ds, cfg, "unrolled", poison=1, programs=programs["unrolled"])[0]
        out[name]["resumed"] = resumed(build, ds, cfg, "unrolled", saved, programs["unrolled"])
        out[name]["poisoned_vmap"] = lanes(build, ds, cfg, "vmap", poison=1, programs=programs["vmap"])[0]

    ds = multi_data()
    out["multi"] = {"solo": [solo(multi, ds, cfg, k) for k in range(len(PARAMS))]}
    for layout in ("unrolled", "vmap"):
        out["multi"][layout] = lanes(multi, ds, cfg, layout)[0]

    class TunedFit:
        def __init__(self, how): self.how = how
        def build(self, hp): return mlp(hp)
        def fit(self, hp, model, *args, **kwargs):
            if self.how == "batch": return model.fit(*args, batch_size=hp.Choice("batch", [16, 64]), shuffle=False, **kwargs)
            if self.how == "twice": model.fit(*args, **kwargs); return model.fit(*args, **kwargs)
            if self.how == "lr": model.optimizer.learning_rate = 0.1; return model.fit(*args, **kwargs)
            return model.fit(args[0][:10], args[1][:10], **kwargs)
    ds = data((20,))
    kwargs = {"validation_data": (ds.x_val, ds.y_val), "epochs": 2, "verbose": 0, "callbacks": []}
    out["fit"] = {}
    for how in ("batch", "twice", "lr", "data"):
        hp = HyperParameters(optuna.trial.FixedTrial({**PARAMS[0], "batch": 16}))
        out["fit"][how] = fit_settings(TunedFit(how), hp, ds.x_train, ds.y_train, kwargs)
    print("RESULT" + json.dumps(out))
''')


@pytest.fixture(scope="module")
def ran():
    env = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    line = next(line for line in out.stdout.splitlines() if line.startswith("RESULT"))
    return json.loads(line[len("RESULT"):])


def _max_diff(a, b, key="val_accuracy"):
    return max(abs(x - y) for x, y in zip(a[key], b[key]))


@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_members_compute_their_solo_fit_in_both_layouts(ran, model):
    result = ran[model]
    for k, solo in enumerate(result["solo"]):
        unrolled, vmapped = result["unrolled"][str(k)], result["vmap"][str(k)]
        assert sorted(unrolled) == sorted(solo) == ["accuracy", "loss", "val_accuracy", "val_loss"]
        assert len(unrolled["val_accuracy"]) == 2
        # the unrolled loop is the solo program K times: bit for bit, dropout and BatchNorm included
        assert unrolled == solo
        assert _max_diff(vmapped, solo) <= 0.002 and _max_diff(vmapped, solo, "loss") <= 1e-3


def test_members_of_a_model_with_dict_inputs_and_outputs_compute_their_solo_fit(ran):
    """x and y as dicts of arrays (two named inputs, two outputs), as a loader may give them."""
    for k, solo in enumerate(ran["multi"]["solo"]):
        unrolled, vmapped = ran["multi"]["unrolled"][str(k)], ran["multi"]["vmap"][str(k)]
        assert {"kind_accuracy", "level_loss", "val_kind_accuracy", "val_level_loss"} <= set(solo) and len(unrolled["val_loss"]) == 2
        assert unrolled == solo
        assert _max_diff(vmapped, solo, "val_kind_accuracy") <= 0.002 and _max_diff(vmapped, solo, "loss") <= 1e-3


@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_structure_groups_members_by_shapes_not_by_learning_rate(ran, model):
    assert ran[model]["groups"] == 2
    assert ran[model]["lr_same_group"] and not ran[model]["units_same_group"]


@pytest.mark.parametrize("model", ["mlp", "cnn"])
@pytest.mark.parametrize("layout", ["poisoned", "poisoned_vmap"])
def test_a_nan_in_one_member_reaches_no_other(ran, model, layout):
    poisoned, clean = ran[model][layout], ran[model]["unrolled" if layout == "poisoned" else "vmap"]
    assert any(v != v for v in poisoned["1"]["loss"])  # NaN: the poisoned member diverged
    for k in ("0", "2"):  # 0 shares the poisoned member's group, 2 is in another
        assert poisoned[k] == clean[k]


@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_a_member_resumed_from_its_checkpoint_trains_on_as_if_never_stopped(ran, model):
    # issue 24 for lanes of a user's model: weights, Adam's state, BatchNorm statistics, the
    # dropout seed and the batch order all carried over, so the second epoch is bit for bit
    # the uninterrupted one
    for k in range(3):
        second = ran[model]["resumed"][str(k)]
        uninterrupted = ran[model]["unrolled"][str(k)]
        assert second == {name: values[1] for name, values in uninterrupted.items()}


def test_a_fit_that_only_sets_batch_size_or_shuffle_is_fusible_by_those_values(ran):
    assert ran["fit"]["batch"] == [{"batch_size": 16, "shuffle": False}, None]
    for how in ("twice", "lr", "data"):
        settings, reason = ran["fit"][how]
        assert settings is None and reason
