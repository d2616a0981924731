"""What hpsearch is measured against: code as users write it today, on the same budget.

- :func:`recipe_loop`: the recipe's own ``model.fit`` loop over its learning rates (a new
  model per rate, NumPy arrays, validation data passed to ``fit``), as the cookbook writes it.
- :func:`optuna_script`: a hand-written Optuna study with optuna-integration's
  ``KerasPruningCallback``, the way Optuna's Keras example does it.
- :func:`kerastuner_search`: KerasTuner's ``RandomSearch`` or ``Hyperband`` over the same
  learning-rate range.

Each builds the recipe's model itself, with no hpsearch code, so the comparison measures
hpsearch's way of running trials, not a shared helper. Used by ``tests/benchmarks/run.py``.
"""

from __future__ import annotations

import tempfile
import time


def recipe_model(learning_rate: float):
    """The recipe's model, written out as the recipe does."""
    import keras

    model = keras.Sequential(
        [keras.Input(shape=(784,)), keras.layers.Dense(1000, activation="relu"), keras.layers.Dense(10, activation="softmax")]
    )
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=learning_rate), loss="categorical_crossentropy", metrics=["accuracy"])
    return model


def recipe_loop(ds, rates, *, epochs: int, batch_size: int = 1024, seed: int | None = None) -> dict:
    """The recipe's bare loop: for each rate, build, compile and ``fit`` with validation data.

    With ``seed``, rate ``i`` is seeded with ``seed + i``, as hpsearch seeds trial ``i`` of a
    study, so both compute the same numbers.

    Returns:
        ``{"seconds": wall time, "best": [best val_accuracy per rate], "epochs": epochs run}``.
    """
    import keras

    best = []
    started = time.perf_counter()
    for i, lr in enumerate(rates):
        if seed is not None:
            keras.utils.set_random_seed(seed + i)
        model = recipe_model(lr)
        history = model.fit(ds.x_train, ds.y_train, batch_size=batch_size, epochs=epochs,
                            validation_data=(ds.x_val, ds.y_val), verbose=0)
        best.append(max(history.history["val_accuracy"]))
    return {"seconds": time.perf_counter() - started, "best": best, "epochs": epochs * len(rates)}


def optuna_script(ds, storage_url: str, study_name: str, *, trials: int, epochs: int, warmup: int, rates,
                  lr_range=(1e-5, 1.0), batch_size: int = 1024, seed: int = 0) -> dict:
    """A hand-written Optuna study with ``KerasPruningCallback``, on ``storage_url``.

    The pruner has hpsearch's settings (median, 5 start-up trials, the same warm-up) and the
    recipe's rates are enqueued first, so it differs from hpsearch only in how trials run.
    The sampler is Optuna's default TPE, seeded.
    """
    import keras
    import optuna
    from optuna_integration import KerasPruningCallback

    def objective(trial):
        lr = trial.suggest_float("learning_rate", *lr_range, log=True)
        keras.backend.clear_session()
        model = recipe_model(lr)
        history = model.fit(ds.x_train, ds.y_train, batch_size=batch_size, epochs=epochs, validation_data=(ds.x_val, ds.y_val),
                            verbose=0, callbacks=[KerasPruningCallback(trial, "val_accuracy")])
        return max(history.history["val_accuracy"])

    started = time.perf_counter()
    study = optuna.create_study(
        storage=storage_url, study_name=study_name, direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=warmup),
    )
    for lr in rates:
        study.enqueue_trial({"learning_rate": lr})
    study.optimize(objective, n_trials=trials)
    seconds = time.perf_counter() - started
    finished = [t for t in study.trials if t.state.is_finished()]
    return {
        "seconds": seconds,
        "trials": len(finished),
        "pruned": sum(t.state.name == "PRUNED" for t in finished),
        "epochs": sum(len(t.intermediate_values) for t in finished),
        "best": max(max(t.intermediate_values.values()) for t in finished if t.intermediate_values),
    }


def kerastuner_search(ds, kind: str, *, trials: int, epochs: int, lr_range=(1e-5, 1.0), batch_size: int = 1024,
                      seed: int = 0) -> dict:
    """KerasTuner's ``RandomSearch`` (``max_trials=trials``) or ``Hyperband`` (``max_epochs=epochs``).

    Hyperband sets its own number of trials from ``max_epochs`` and ``factor=3`` (one
    iteration); the epochs it trained are counted from each trial's ``tuner/epochs`` minus
    ``tuner/initial_epoch`` (it resumes promoted trials from their checkpoint).
    """
    import keras_tuner as kt

    def hypermodel(hp):
        return recipe_model(hp.Float("learning_rate", *lr_range, sampling="log"))

    directory = tempfile.mkdtemp(prefix="kt-bench-")
    common = dict(objective="val_accuracy", seed=seed, directory=directory, project_name=kind, overwrite=True)
    if kind == "random":
        tuner = kt.RandomSearch(hypermodel, max_trials=trials, **common)
    elif kind == "hyperband":
        tuner = kt.Hyperband(hypermodel, max_epochs=epochs, factor=3, hyperband_iterations=1, **common)
    else:
        raise ValueError(kind)
    started = time.perf_counter()
    tuner.search(ds.x_train, ds.y_train, epochs=epochs, batch_size=batch_size, validation_data=(ds.x_val, ds.y_val), verbose=0)
    seconds = time.perf_counter() - started
    done = [t for t in tuner.oracle.trials.values() if t.status == "COMPLETED"]
    if kind == "hyperband":
        trained = sum(t.hyperparameters.values["tuner/epochs"] - t.hyperparameters.values["tuner/initial_epoch"] for t in done)
    else:
        trained = epochs * len(done)
    import shutil

    shutil.rmtree(directory, ignore_errors=True)
    return {
        "seconds": seconds,
        "trials": len(done),
        "pruned": 0,
        "epochs": trained,
        "best": float(tuner.oracle.get_best_trials(1)[0].score),
    }
