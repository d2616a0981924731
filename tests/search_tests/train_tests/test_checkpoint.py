"""Checkpoints of running trials (issue 24): a retry resumes its interrupted attempt.

Real training on a slice of MNIST and a real PostgreSQL. An interruption is a KeyboardInterrupt
raised at the end of an epoch's report, before that epoch's snapshot: what a SIGTERM during
the next epoch leaves. The worker's own handling of the signal is tested with real processes
in tests/test_checkpoints.py.
"""

from __future__ import annotations

import logging
import signal

import numpy as np
import optuna
import pytest

from search.errors import WorkerInterrupted
from search.fleet.outcome import classify, record, settle
from search.study.config import StudyConfig
from search.study.space import PARAM, suggest
from search.train.checkpoint import Snapshot, decode, encode
from search.train.data import load_dataset
from search.train.objective import Objective
from storage import open_storage, resolve_storage_url
from storage.checkpoints import checkpoint_sizes, latest_checkpoint, save_checkpoint
from storage.epochs import engine_of

EPOCHS = 5
STOP_AT = 2  # interrupted during epoch 2: epochs 0 and 1 are saved, the retry trains 2, 3, 4
CONFIG = StudyConfig(epochs=EPOCHS, train_size=1024, seed=7, pruner="none")


def _call(fn, *args, what, **kwargs):
    return fn(*args, **kwargs)


def _interrupt_at(epoch: int, numbers=(0,)):
    def hook(number, e, logs):
        if e == epoch and number in numbers:
            raise KeyboardInterrupt
    return hook


@pytest.fixture(scope="module")
def tiny(mnist):
    return load_dataset(mnist, train_size=1024, validation="holdout")


@pytest.fixture(scope="module")
def storage(local_pg_url):
    s = open_storage(resolve_storage_url(local_pg_url))
    yield s
    s.engine.dispose()


def _study(storage, name, pruner=None):
    return optuna.create_study(storage=storage, study_name=name, direction="maximize", pruner=pruner or optuna.pruners.NopPruner())


def _run(study, objective):
    trial = study.ask()
    return settle(study, trial, _call, lambda: objective(trial))


@pytest.fixture(scope="module")
def uninterrupted(storage, tiny):
    study = _study(storage, "uninterrupted")
    study.enqueue_trial({PARAM: 0.01})
    assert _run(study, Objective(CONFIG, tiny, call=_call))[0] == "complete"
    return study.trials[0]


@pytest.fixture(scope="module")
def interrupted(storage, tiny, monkeypatch_module):
    """A study whose trial 0 was interrupted during epoch 2; returns it, its objective and the
    checkpoint's bytes as the interruption left them."""
    monkeypatch_module.setenv("HPSEARCH_CHECKPOINT_S", "3600")  # none periodic: the stop writes it
    study = _study(storage, "interrupted")
    study.enqueue_trial({PARAM: 0.01})
    objective = Objective(CONFIG, tiny, call=_call, on_epoch=_interrupt_at(STOP_AT))
    with pytest.raises(WorkerInterrupted):
        _run(study, objective)
    stored = latest_checkpoint(engine_of(storage), [study.trials[0]._trial_id])
    return study, objective, stored


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def test_the_interrupted_trial_left_its_last_finished_epoch(interrupted):
    study, _, stored = interrupted
    t0, retry = study.trials
    assert t0.state == optuna.trial.TrialState.FAIL and retry.state == optuna.trial.TrialState.WAITING
    assert stored is not None and stored.epoch == STOP_AT - 1
    snap = decode(stored.data)
    assert snap.meta["params"] == {PARAM: 0.01} and snap.meta["model"] == "recipe:1000"
    assert len(snap.meta["history"]["loss"]) == STOP_AT
    assert [a.shape for a in snap.weights] == [(784, 1000), (1000,), (1000, 10), (10,)]
    # Adam: its step count, its rate, and a first and second moment per weight
    assert len(snap.optimizer) == 2 + 2 * 4 and int(snap.optimizer[0]) > 0
    assert 9_000_000 < snap.nbytes < 10_000_000 and len(stored.data) > snap.nbytes


def test_a_seeded_retry_resumes_and_its_history_equals_the_uninterrupted_run(interrupted, uninterrupted, storage):
    study, objective, _ = interrupted
    objective.on_epoch = None
    state, value = _run(study, objective)
    assert state == "complete"
    resumed = study.trials[1]
    assert resumed.user_attrs["resumed_from"] == {"trial": 0, "epoch": STOP_AT}
    assert resumed.user_attrs["history"] == uninterrupted.user_attrs["history"]
    assert resumed.intermediate_values == uninterrupted.intermediate_values
    assert resumed.value == uninterrupted.value and resumed.user_attrs["epochs_run"] == EPOCHS
    # the retry trained E - e epochs itself, no more; the finished series keeps no checkpoint
    assert len(resumed.user_attrs["epoch_seconds"]) == EPOCHS
    assert checkpoint_sizes(engine_of(storage), study._study_id) == {}


def _failed_with(study, storage, data: bytes | None, lr: float = 0.01, epoch: int = STOP_AT - 1):
    """A trial of ``study`` failed as interrupted (so retried), with ``data`` as its checkpoint."""
    study.enqueue_trial({PARAM: lr})
    trial = study.ask()
    suggest(trial, CONFIG)
    if data is not None:
        save_checkpoint(engine_of(storage), study._study_id, trial._trial_id, epoch, data)
    record(study, trial, classify(WorkerInterrupted(signal.SIGTERM)), _call)
    return trial


def _edited(data: bytes, **meta) -> bytes:
    snap = decode(data)
    return encode(Snapshot(snap.epoch, snap.weights, snap.optimizer, {**snap.meta, **meta}))


@pytest.mark.parametrize("fault, expected", [
    ("missing", "left no checkpoint"),
    ("truncated", "truncated"),
    ("damaged", "digest differs"),
    ("other model", "another model's"),
    ("other parameters", "of other parameters"),
])
def test_a_checkpoint_that_does_not_fit_is_ignored_with_one_line(fault, expected, interrupted, storage, tiny, caplog):
    _, _, stored = interrupted
    data = {
        "missing": None,
        "truncated": stored.data[: len(stored.data) // 2],
        "damaged": stored.data[:-100] + bytes(100),
        "other model": _edited(stored.data, model="recipe:500"),
        "other parameters": _edited(stored.data, params={PARAM: 0.1}),
    }[fault]
    study = _study(storage, f"fault-{fault.replace(' ', '-')}")
    _failed_with(study, storage, data)
    with caplog.at_level(logging.WARNING, logger="hpsearch.worker"):
        state, _ = _run(study, Objective(CONFIG, tiny, call=_call))
    assert state == "complete"
    retry = study.trials[1]
    assert "resumed_from" not in retry.user_attrs and retry.user_attrs["epochs_run"] == EPOCHS
    lines = [r.getMessage() for r in caplog.records if r.name == "hpsearch.worker" and r.levelno >= logging.WARNING]
    assert len(lines) == 1 and expected in lines[0] and "training from epoch 0" in lines[0], lines
    assert checkpoint_sizes(engine_of(storage), study._study_id) == {}


def test_a_trial_the_pruner_now_stops_is_not_resumed_past_its_rung(interrupted, storage, tiny):
    _, _, stored = interrupted
    study = _study(storage, "pruned-on-resume")
    _failed_with(study, storage, stored.data)
    study.pruner = optuna.pruners.ThresholdPruner(lower=1.5)  # every accuracy is below: prune
    config = StudyConfig(epochs=EPOCHS, train_size=1024, seed=7, pruner="hyperband")
    state, _ = _run(study, Objective(config, tiny, call=_call))
    assert state == "pruned"
    retry = study.trials[1]
    assert retry.user_attrs["epochs_run"] == STOP_AT and retry.user_attrs["stop_reason"] == "pruned"
    assert sorted(retry.intermediate_values) == list(range(STOP_AT))
    assert "on resuming" in retry.user_attrs["stop_detail"]


def test_successive_halving_judges_the_carried_rungs_with_the_study_as_it_is_now(interrupted, storage, tiny):
    """The default pruner acts at rungs only (epochs 0 and 2 of 5): the retry is judged at the
    rung it carries, where three better trials have reported meanwhile, and stops there."""
    from search.study.pruners import make_pruner

    _, _, stored = interrupted
    config = StudyConfig(epochs=EPOCHS, train_size=1024, seed=7, pruner="asha")
    study = _study(storage, "asha-on-resume", pruner=make_pruner(config))
    for _ in range(3):
        study.add_trial(optuna.trial.create_trial(params={PARAM: 0.02}, distributions={PARAM: optuna.distributions.FloatDistribution(1e-5, 1.0, log=True)},
                                                  value=0.99, intermediate_values={0: 0.99, 1: 0.99}))
    _failed_with(study, storage, stored.data)
    state, _ = _run(study, Objective(config, tiny, call=_call))
    assert state == "pruned"
    retry = study.trials[-1]
    assert retry.user_attrs["stop_detail"].startswith("pruned at epoch 0 on resuming")
    assert retry.user_attrs["epochs_run"] == 1 and sorted(retry.intermediate_values) == [0]  # as if it had run on


def test_periodic_checkpoints_keep_one_row_per_trial_and_go_when_it_ends(storage, tiny, monkeypatch):
    monkeypatch.setenv("HPSEARCH_CHECKPOINT_S", "0")  # after every epoch
    study = _study(storage, "periodic")
    study.enqueue_trial({PARAM: 0.01})
    seen = []

    def hook(number, epoch, logs):
        seen.append(checkpoint_sizes(engine_of(storage), study._study_id))

    assert _run(study, Objective(CONFIG, tiny, call=_call, on_epoch=hook))[0] == "complete"
    assert all(len(s) <= 1 for s in seen) and any(seen)
    writes = study.trials[0].user_attrs["checkpoint_writes"]
    assert [w[0] for w in writes] == sorted({w[0] for w in writes}) and all(w[1] > 9_000_000 for w in writes)
    assert checkpoint_sizes(engine_of(storage), study._study_id) == {}


def test_the_bytes_round_trip_and_refuse_what_is_not_a_checkpoint():
    snap = Snapshot(3, [np.arange(6, dtype="float32").reshape(2, 3)], [np.array(5, "int64")], {"model": "m", "params": {"x": 1}})
    back = decode(encode(snap))
    assert back.epoch == 3 and back.meta["params"] == {"x": 1}
    assert np.array_equal(back.weights[0], snap.weights[0]) and int(back.optimizer[0]) == 5
    for bad, why in ((b"", "shorter"), (b"x" * 100, "not an hpsearch checkpoint"), (encode(snap)[:-1], "truncated")):
        with pytest.raises(ValueError, match=why):
            decode(bad)


def _users_build(hp):
    import keras

    units = hp.Int("units", 16, 64, step=16)
    model = keras.Sequential([keras.Input((784,)), keras.layers.Dense(units, activation="relu"), keras.layers.Dense(10, activation="softmax")])
    model.compile(optimizer=keras.optimizers.Adam(hp.Float("lr", 1e-3, 1e-2, sampling="log")), loss="categorical_crossentropy", metrics=["accuracy"])
    return model


def test_a_users_model_resumes_from_keras_own_state(storage, tiny, monkeypatch):
    from search.train.objective import ModelObjective
    from search.train.usermodel import HyperModel, parse_spec

    monkeypatch.setenv("HPSEARCH_CHECKPOINT_S", "3600")
    config = StudyConfig(epochs=EPOCHS, seed=7, pruner="none", model="mymodel.py:build", model_digest="abc", batch_size=64)
    hypermodel = HyperModel(_users_build, parse_spec("mymodel.py:build"))
    study = _study(storage, "users-model")
    study.enqueue_trial({"units": 32, "lr": 0.005})
    objective = ModelObjective(config, tiny, hypermodel, call=_call, on_epoch=_interrupt_at(STOP_AT))
    with pytest.raises(WorkerInterrupted):
        _run(study, objective)
    snap = decode(latest_checkpoint(engine_of(storage), [study.trials[0]._trial_id]).data)
    assert snap.meta["model"] == "mymodel.py:build@abc" and snap.meta["params"] == {"units": 32, "lr": 0.005}
    assert [a.shape for a in snap.weights] == [(784, 32), (32,), (32, 10), (10,)]
    objective.on_epoch = None
    assert _run(study, objective)[0] == "complete"
    first, retry = study.trials[0], study.trials[1]
    assert retry.user_attrs["resumed_from"] == {"trial": 0, "epoch": STOP_AT}
    assert retry.user_attrs["epochs_run"] == EPOCHS and sorted(retry.intermediate_values) == list(range(EPOCHS))
    assert {k: v[:STOP_AT] for k, v in retry.user_attrs["history"].items()} == snap.meta["history"]
    assert retry.params == first.params
    assert checkpoint_sizes(engine_of(storage), study._study_id) == {}


def test_a_lane_members_state_is_a_solo_trials_checkpoint_and_back():
    """A lane member saves the recipe's arrays in a solo model's order, so a retry resumes in a
    lane or alone, whichever worker claims it."""
    from search.train.checkpoint import capture
    from search.train.lanes import LaneModel
    from search.train.model import build_model, reset_model

    rng = np.random.default_rng(0)
    x = rng.random((256, 784), dtype=np.float32)
    y = np.eye(10, dtype=np.float32)[rng.integers(0, 10, 256)]
    lanes = LaneModel(2, hidden_units=1000, batch_size=64)
    lanes.reset_lane(0, 0.01, 1)
    lanes.reset_lane(1, 0.1, 2)
    from keras import ops

    lanes.train_epoch(ops.convert_to_tensor(x), ops.convert_to_tensor(y), np.stack([rng.permutation(256), rng.permutation(256)]).astype(np.int32))
    weights, optimizer = lanes.member_state(0)()
    solo = build_model(0.5)
    reset_model(solo, 0.5)
    keras_order = capture(solo)
    assert [w.shape for w in weights] == [w.shape for w in keras_order[0]]
    assert [a.shape for a in optimizer] == [a.shape for a in keras_order[1]] and int(optimizer[0]) == 4
    # into a solo model, through the checkpoint's bytes
    from search.train.checkpoint import restore

    snap = decode(encode(Snapshot(0, weights, optimizer, {})))
    restore(solo, snap)
    assert all(np.array_equal(a, b) for a, b in zip(solo.get_weights(), weights))
    assert int(solo.optimizer.iterations) == 4 and float(solo.optimizer.learning_rate) == pytest.approx(0.01)
    # and from the solo model into another lane
    lanes.restore_lane(1, Snapshot(0, *capture(solo), {}))
    again = lanes.member_state(1)()
    assert all(np.array_equal(a, b) for a, b in zip([*again[0], *again[1]], [*weights, *optimizer]))
    with pytest.raises(ValueError, match="do not fit a lane member"):
        lanes.restore_lane(1, Snapshot(0, weights[:2], optimizer, {}))
