"""The recipe's model and one trial, trained for real on a small slice."""

import math

import optuna
import pytest

from search.study.config import StudyConfig
from search.train.data import load_dataset
from search.train.objective import Objective
from storage import open_storage, resolve_storage_url


@pytest.fixture(scope="module")
def tiny(mnist):
    return load_dataset(mnist, train_size=512, validation="holdout")


def test_model_is_the_recipes():
    from search.train.model import build_model

    m = build_model(0.01)
    dense = [l for l in m.layers]
    assert [l.units for l in dense] == [1000, 10]
    assert dense[0].activation.__name__ == "relu" and dense[1].activation.__name__ == "softmax"
    assert m.count_params() == 784 * 1000 + 1000 + 1000 * 10 + 10
    assert type(m.optimizer).__name__ == "Adam"
    assert math.isclose(float(m.optimizer.learning_rate), 0.01, rel_tol=1e-6)
    assert m.loss == "categorical_crossentropy"


def test_objective_records_history_and_returns_best_val_accuracy(embedded_home, tiny):
    storage = open_storage(resolve_storage_url(embedded_home[1]))
    study = optuna.create_study(storage=storage, study_name="objective", direction="maximize", pruner=optuna.pruners.NopPruner())
    study.enqueue_trial({"learning_rate": 0.01})
    epochs_seen = []
    objective = Objective(StudyConfig(epochs=3, train_size=512, seed=1), tiny, on_epoch=lambda n, e, logs: epochs_seen.append(e))
    study.optimize(objective, n_trials=1)
    t = study.trials[0]
    assert t.state == optuna.trial.TrialState.COMPLETE
    h = t.user_attrs["history"]
    assert set(h) == {"loss", "val_loss", "accuracy", "val_accuracy"}
    assert all(len(v) == 3 for v in h.values())
    assert t.value == max(h["val_accuracy"])
    assert t.user_attrs["best_epoch"] == h["val_accuracy"].index(t.value)
    assert t.user_attrs["epochs_run"] == 3 and epochs_seen == [0, 1, 2]
    assert t.intermediate_values == {i: v for i, v in enumerate(h["val_accuracy"])}
    assert 0.0 <= t.user_attrs["test_accuracy"] <= 1.0
    assert t.user_attrs["stop_reason"] == "completed"
    for key in ("host", "pid", "backend", "device", "keras_version", "optuna_version"):
        assert key in t.user_attrs
    # 512 images, 3 epochs at the recipe's 0.01 already beat chance by far
    assert t.value > 0.5


def test_each_epoch_reaches_the_live_feed_while_the_trial_trains(embedded_home, tiny):
    """The monitor hands every epoch to the background writer: the feed has epoch e-1 (loss
    included) while epoch e's hook runs, and the rows equal the history recorded at the end."""
    import time

    from storage.epochs import epochs_after

    storage = open_storage(resolve_storage_url(embedded_home[1]))
    study = optuna.create_study(storage=storage, study_name="live-epochs", direction="maximize", pruner=optuna.pruners.NopPruner())
    study.enqueue_trial({"learning_rate": 0.01})
    during = []

    def on_epoch(number, epoch, logs):
        deadline = time.monotonic() + 10
        while len(rows := epochs_after(storage.engine, study._study_id).epochs) < epoch:
            assert time.monotonic() < deadline, f"epoch {epoch - 1} not in the feed after 10 s"
            time.sleep(0.02)
        during.append((epoch, [r.epoch for r in rows], study.get_trials(deepcopy=False)[0].state.name))

    study.optimize(Objective(StudyConfig(epochs=3, train_size=512, seed=1), tiny, on_epoch=on_epoch), n_trials=1)
    assert [(e, seen[:e], state) for e, seen, state in during] == [(0, [], "RUNNING"), (1, [0], "RUNNING"), (2, [0, 1], "RUNNING")]
    rows = epochs_after(storage.engine, study._study_id).epochs
    history = study.trials[0].user_attrs["history"]
    assert [r.epoch for r in rows] == [0, 1, 2] and all(r.learning_rate == 0.01 for r in rows)
    for key in ("loss", "val_loss", "accuracy", "val_accuracy"):
        assert [getattr(r, key) for r in rows] == pytest.approx(history[key], rel=1e-6)
    assert all(r.epoch_seconds > 0 for r in rows)
    storage.engine.dispose()


def test_the_same_seed_gives_the_same_trial(tiny):
    values = []
    for _ in range(2):
        study = optuna.create_study(direction="maximize", pruner=optuna.pruners.NopPruner())
        study.enqueue_trial({"learning_rate": 0.001})
        study.optimize(Objective(StudyConfig(epochs=2, train_size=512, seed=7), tiny), n_trials=1)
        values.append(study.trials[0].user_attrs["history"]["loss"])
    assert values[0] == pytest.approx(values[1], rel=1e-5)


def _histories(dataset, options, *, validation="holdout", rates=(0.01, 0.001, 0.01)):
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.NopPruner())
    for lr in rates:
        study.enqueue_trial({"learning_rate": lr})
    cfg = StudyConfig(epochs=2, train_size=len(dataset.x_train), seed=3, pruner="none", validation=validation)
    study.optimize(Objective(cfg, dataset, options=options), n_trials=len(rates))
    return [(t.user_attrs["history"], t.user_attrs["test_accuracy"]) for t in study.trials]


def test_the_speed_ups_compute_what_the_recipes_loop_computes(mnist):
    """A reused model, tensors, whole-epoch steps and large validation batches change nothing.

    The recipe's way (a new session and model per trial, NumPy arrays, one step per call,
    validation at the training batch size, a separate test evaluation) gives the same numbers
    for the same seed, also for a trial that runs after others on the same worker's model.
    Two batches per epoch, so the shuffle matters too.
    """
    from search.train.objective import FitOptions

    two_batches = load_dataset(mnist, train_size=2048, validation="holdout")
    recipe_way = FitOptions(reuse_model=False, device_data=False, steps_per_execution=False, validation_batch=None, skip_test_eval=False)
    fast, slow = _histories(two_batches, FitOptions()), _histories(two_batches, recipe_way)
    for (h_fast, test_fast), (h_slow, test_slow) in zip(fast, slow):
        for key in h_slow:
            assert h_fast[key] == pytest.approx(h_slow[key], rel=1e-5, abs=1e-6)
        assert test_fast == pytest.approx(test_slow, abs=1e-6)
    # trials 0 and 2 share a rate but not a seed (seed + trial number): they differ
    assert fast[0][0]["loss"] != fast[2][0]["loss"]


def test_with_the_test_set_as_validation_test_accuracy_is_the_last_epochs(mnist):
    from search.train.objective import FitOptions

    ds = load_dataset(mnist, train_size=512, validation="test")
    skipped = _histories(ds, FitOptions(), validation="test", rates=(0.001,))
    evaluated = _histories(ds, FitOptions(skip_test_eval=False), validation="test", rates=(0.001,))
    assert skipped[0][1] == skipped[0][0]["val_accuracy"][-1]
    assert skipped[0][1] == pytest.approx(evaluated[0][1], abs=1e-6)
