"""Studies shaped like hpsearch's, built through Optuna's own API without training.

The trials carry what ``search.train.objective`` records (learning rate, value, per-epoch
intermediate values, the ``history`` and runtime attributes) plus the awkward cases a query
must survive: pruned trials with and without a value, a NaN intermediate value, a failed
trial without a learning rate, a running and a waiting trial, infinite values, a study made
by plain Optuna, and a study whose name holds quotes and SQL.
"""

from __future__ import annotations

import math
import random
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone

MAIN = "queries-main"
HOSTILE = "it's \"quoted\"; DROP TABLE trials; --"
MINIMIZE = "queries-minimize"
STUDIES = (MAIN, HOSTILE, MINIMIZE)
BASE = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)


def _frozen(number, state, value, start, end, lr, attrs, inter):
    import optuna

    dist = optuna.distributions.FloatDistribution(1e-5, 1.0, log=True)
    return optuna.trial.FrozenTrial(
        number=number,
        state=state,
        value=value,
        datetime_start=start,
        datetime_complete=end,
        params={} if lr is None else {"learning_rate": lr},
        distributions={} if lr is None else {"learning_rate": dist},
        user_attrs=attrs,
        system_attrs={},
        intermediate_values=inter,
        trial_id=0,
    )


def _hpsearch_trial(rng, i, state, *, start):
    """A trial as search.train.objective records it, with ``epochs`` epochs of history."""
    lr = 10 ** rng.uniform(-5, 0)
    epochs = rng.randint(2, 8)
    val_acc = [round(rng.uniform(0.1, 0.99), 6) for _ in range(epochs)]
    history = {
        "loss": [round(rng.uniform(0.01, 3.0), 6) for _ in range(epochs)],
        "val_loss": [round(rng.uniform(0.01, 3.0), 6) for _ in range(epochs)],
        "accuracy": [round(rng.uniform(0.1, 0.99), 6) for _ in range(epochs)],
        "val_accuracy": list(val_acc),
    }
    if i % 5 == 1:
        history["loss"][-1] = None  # a non-finite loss is recorded as null
    best_epoch = max(range(epochs), key=lambda e: val_acc[e])
    attrs = {
        "history": history,
        "epochs_run": epochs,
        "best_epoch": best_epoch,
        "test_accuracy": round(rng.uniform(0.1, 0.99), 6),
        "train_seconds": round(rng.uniform(1, 90), 3),
        "stop_reason": {"COMPLETE": "completed", "PRUNED": "pruned", "FAIL": "error"}[state.name],
        "host": f"host-{i % 2}",
        "gpu": None if i % 3 == 2 else str(i % 3),
        "device": "cpu" if i % 3 == 2 else "NVIDIA H100",
        "pid": 1000 + i,
        "keras_version": "3.15.0",
    }
    if i < 3:
        attrs["source"] = "recipe"
    inter = dict(enumerate(val_acc))
    value = {"COMPLETE": max(val_acc), "PRUNED": val_acc[-1], "FAIL": None}[state.name]
    end = start + timedelta(seconds=30 + i, microseconds=1234 * i)
    return _frozen(i, state, value, start, end, lr, attrs, inter)


def build_studies(storage) -> None:
    """Create the three studies in ``storage`` (an RDBStorage with the schema)."""
    import optuna
    from optuna.trial import TrialState

    rng = random.Random(4)
    main = optuna.create_study(storage=storage, study_name=MAIN, direction="maximize")
    main.set_user_attr("hpsearch_config", {"epochs": 8, "batch_size": 1024})
    frozen = []
    for i in range(24):
        state = TrialState.PRUNED if i % 6 == 4 else TrialState.FAIL if i == 7 else TrialState.COMPLETE
        frozen.append(_hpsearch_trial(rng, i, state, start=BASE + timedelta(minutes=3 * i)))
    n = len(frozen)
    # A pruned trial whose last intermediate value was NaN: Optuna gives it no value.
    t = _hpsearch_trial(rng, n, TrialState.PRUNED, start=BASE + timedelta(minutes=3 * n))
    inter = dict(t.intermediate_values)
    inter[max(inter)] = math.nan
    frozen.append(_frozen(n, TrialState.PRUNED, None, t.datetime_start, t.datetime_complete, t.params["learning_rate"], t.user_attrs, inter))
    # A pruned trial that reported nothing, and a failed trial that never sampled a rate.
    s = BASE + timedelta(hours=3)
    frozen.append(_frozen(n + 1, TrialState.PRUNED, None, s, s + timedelta(seconds=2), 0.5, {"stop_reason": "diverged", "epochs_run": 1}, {}))
    frozen.append(_frozen(n + 2, TrialState.FAIL, None, s, s + timedelta(seconds=1), None, {"fail_reason": "out of memory", "host": "host-9"}, {}))
    main.add_trials(frozen)
    values = [t.value for t in main.trials if t.state == TrialState.COMPLETE]
    assert len(set(values)) == len(values), "values must be unique so that 'best' is unambiguous"
    running = main.ask({"learning_rate": optuna.distributions.FloatDistribution(1e-5, 1.0, log=True)})
    running.set_user_attr("host", "host-0")
    main.enqueue_trial({"learning_rate": 0.01}, user_attrs={"source": "recipe"})

    hostile = optuna.create_study(storage=storage, study_name=HOSTILE, direction="maximize")
    hostile.add_trials(
        [_hpsearch_trial(rng, i, TrialState.COMPLETE, start=BASE + timedelta(days=1, minutes=i)) for i in range(4)]
    )

    # Plain Optuna, minimising, with infinite values: no hpsearch attributes at all.
    minimize = optuna.create_study(storage=storage, study_name=MINIMIZE, direction="minimize")
    for i, v in enumerate([0.5, -math.inf, 0.25, math.inf, 3.0]):
        st = BASE + timedelta(days=2, minutes=i)
        minimize.add_trial(_frozen(i, TrialState.COMPLETE, v, st, st + timedelta(seconds=5), 10 ** -(i + 1), {}, {0: v / 2 if math.isfinite(v) else v}))


@contextmanager
def empty_database(url: str):
    """A new, empty database on the server of ``url``; dropped afterwards, even on failure."""
    import uuid

    import sqlalchemy
    from sqlalchemy.engine import make_url

    name = f"hps_empty_{uuid.uuid4().hex[:10]}"
    admin = sqlalchemy.create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as c:
            c.exec_driver_sql(f'CREATE DATABASE "{name}"')
        try:
            yield make_url(url).set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as c:
                c.exec_driver_sql(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}' AND pid <> pg_backend_pid()")
                c.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}"')
    finally:
        admin.dispose()


USER = "queries-user-model"
#: The configuration a user's model's study stores (search.study.config.StudyConfig.to_dict()).
USER_CONFIG = {
    "epochs": 4, "batch_size": 32, "train_size": None, "validation": "holdout", "lr_min": 1e-5, "lr_max": 1.0, "pruner": "asha",
    "sampler": "tpe", "seed": 3, "hidden_units": 1000, "data_fingerprint": "0123456789abcdef", "model": "models/mine.py:build_model",
    "model_digest": "fedcba9876543210", "objective": "val_loss", "direction": "minimize", "landscape_param": "lr",
}


def _suggest(trial):
    """A KerasTuner-like space as hpsearch maps it onto Optuna: ints, a conditional int, a log
    float, and categoricals of strings, numbers, booleans and None (stored as their index)."""
    layers = trial.suggest_int("num_layers", 1, 3)
    for k in range(layers):
        trial.suggest_int(f"units_{k}", 32, 512, step=32)
    trial.suggest_categorical("activation", ["relu", "tanh", "gelu"])
    trial.suggest_categorical("batch_size", [16, 32, 64])
    trial.suggest_categorical("dropout", [False, True])
    trial.suggest_categorical("optimizer", [None, "adam", "sgd"])
    trial.suggest_float("lr", 1e-4, 1e-2, log=True)
    trial.suggest_float("value", 0.0, 1.0)  # a parameter with the name of a column


def build_user_study(storage, name: str = USER) -> None:
    """A study shaped as ``hpsearch run --model FILE.py:NAME --objective val_loss`` leaves it:
    minimised, hpsearch's trials marked with ``storage.foreign.OWN_ATTR``, in every state, with
    its queued defaults, plus a trial of a plain Optuna objective with a parameter of its own."""
    import optuna

    from storage.foreign import OWN_ATTR

    rng = random.Random(23)
    study = optuna.create_study(storage=storage, study_name=name, direction="minimize", sampler=optuna.samplers.RandomSampler(seed=0))  # seeded: tests read given choices
    study.set_user_attr("hpsearch_config", dict(USER_CONFIG))
    for i in range(14):
        trial = study.ask()
        storage.set_trial_system_attr(trial._trial_id, OWN_ATTR, True)
        trial.set_user_attr("host", f"host-{i % 2}")
        trial.set_user_attr("gpu", str(i % 4))
        if i == 5:  # failed before it suggested anything (its build raised)
            trial.set_user_attr("stop_reason", "error")
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            continue
        _suggest(trial)
        losses = [round(rng.uniform(0.05, 2.5), 6) for _ in range(rng.randint(1, 4))]
        for epoch, loss in enumerate(losses):
            trial.report(loss, epoch)
        trial.set_user_attr("epochs_run", len(losses))
        trial.set_user_attr("best_epoch", min(range(len(losses)), key=losses.__getitem__))
        trial.set_user_attr("test_accuracy", round(rng.uniform(0.5, 0.99), 6))
        trial.set_user_attr("test_metrics", {"loss": losses[-1], "accuracy": 0.9})
        if i == 12:
            continue  # still running
        pruned = i % 4 == 3
        trial.set_user_attr("stop_reason", "pruned" if pruned else "completed")
        # a pruned trial's value is its last reported one (Optuna's tell)
        study.tell(trial, None if pruned else min(losses), state=optuna.trial.TrialState.PRUNED if pruned else None)
    # A plain Optuna objective on the same study: not hpsearch's, parameters of its own.
    foreign = study.ask()
    foreign.suggest_float("x", -1.0, 1.0)
    study.tell(foreign, 0.01)
    # The space's explicit defaults, queued by hpsearch and not yet taken by a worker.
    study.enqueue_trial({"num_layers": 1, "units_0": 64, "activation": "tanh", "batch_size": 32, "dropout": True, "optimizer": None, "lr": 0.001, "value": 0.5},
                        user_attrs={"source": "defaults"})
    values = [t.value for t in study.trials if t.state.name == "COMPLETE"]
    assert len(set(values)) == len(values), "values must be unique so that 'best' is unambiguous"
