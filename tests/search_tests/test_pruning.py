"""The monitor and pruners through Optuna's ask/report/tell, with no training at all."""

import math

import optuna
import pytest

from search.config import StudyConfig
from search.errors import TrialConfigError
from search.pruning import EpochMonitor, make_pruner, warmup_steps


def _study(pruner):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(direction="maximize", pruner=pruner)


def _logs(acc, loss=0.5):
    return {"loss": loss, "val_loss": loss, "accuracy": acc, "val_accuracy": acc}


def _prunes_at(pruner, complete: int, step: int) -> bool:
    """Would ``pruner`` stop a hopeless trial at ``step``, after ``complete`` good trials?"""
    study = _study(pruner)
    for _ in range(complete):
        t = study.ask()
        for s in range(step + 1):
            t.report(0.9, s)
        study.tell(t, 0.9)
    t = study.ask()
    for s in range(step + 1):
        t.report(0.1, s)
    return t.should_prune()


def test_median_pruner_settings_are_explicit():
    p = make_pruner(StudyConfig(epochs=500))
    assert isinstance(p, optuna.pruners.MedianPruner)
    # 50 warm-up epochs (a tenth of 500) and 5 startup trials, seen in what it decides:
    assert not _prunes_at(p, complete=5, step=49) and _prunes_at(p, complete=5, step=50)
    assert not _prunes_at(p, complete=4, step=50)
    assert warmup_steps(3) == 1
    assert isinstance(make_pruner(StudyConfig(pruner="hyperband", epochs=9)), optuna.pruners.HyperbandPruner)
    assert isinstance(make_pruner(StudyConfig(pruner="none")), optuna.pruners.NopPruner)


def test_a_bad_trial_is_pruned_after_warmup_and_keeps_its_history():
    study = _study(make_pruner(StudyConfig(epochs=10)))
    for _ in range(5):
        t = study.ask()
        m = EpochMonitor(t)
        for epoch in range(10):
            assert m.end_epoch(epoch, _logs(0.9 + epoch * 0.001)) is False
        study.tell(t, m.best_value)
    bad = study.ask()
    m = EpochMonitor(bad)
    assert m.end_epoch(0, _logs(0.2)) is False  # warm-up: epoch 0 is never judged
    assert m.end_epoch(1, _logs(0.3)) is True
    assert m.stop_reason == "pruned" and "epoch 1" in m.detail
    assert m.history["val_accuracy"] == [0.2, 0.3] and m.epochs_run == 2
    assert m.best_value == 0.3 and m.best_epoch == 1
    study.tell(bad, state=optuna.trial.TrialState.PRUNED)
    frozen = study.trials[-1]
    assert frozen.intermediate_values == {0: 0.2, 1: 0.3}


def test_nopruner_never_stops_a_trial():
    study = _study(make_pruner(StudyConfig(pruner="none")))
    for _ in range(6):
        t = study.ask()
        m = EpochMonitor(t)
        for epoch in range(3):
            m.end_epoch(epoch, _logs(0.9))
        study.tell(t, m.best_value)
    t = study.ask()
    m = EpochMonitor(t)
    assert not any(m.end_epoch(e, _logs(0.01)) for e in range(3))


def test_diverged_loss_stops_and_stores_null():
    study = _study(optuna.pruners.NopPruner())
    t = study.ask()
    m = EpochMonitor(t)
    assert m.end_epoch(0, _logs(0.5, loss=1.0)) is False
    assert m.end_epoch(1, {"loss": math.nan, "val_loss": math.inf, "accuracy": 0.1, "val_accuracy": 0.098}) is True
    assert m.stop_reason == "diverged" and "non-finite training loss" in m.detail
    assert m.history["loss"] == [1.0, None] and m.history["val_loss"] == [1.0, None]


def test_missing_monitored_metric_fails_loudly_at_the_first_epoch():
    study = _study(optuna.pruners.NopPruner())
    m = EpochMonitor(study.ask())
    with pytest.raises(TrialConfigError, match="'val_accuracy' is not among the training logs"):
        m.end_epoch(0, {"loss": 0.3, "accuracy": 0.9})


def test_progress_hook_sees_every_epoch():
    study = _study(optuna.pruners.NopPruner())
    seen = []
    m = EpochMonitor(study.ask(), on_epoch=lambda e, logs: seen.append(e))
    for e in range(3):
        m.end_epoch(e, _logs(0.5))
    assert seen == [0, 1, 2]


def test_the_schedule_asks_only_where_the_pruner_can_act():
    from search.pruning import PrunerSchedule, pruner_schedule

    median = pruner_schedule(StudyConfig(epochs=500))
    assert median.first_step == warmup_steps(500) == 50 and median.last_step == 499
    assert not median.due(49, train_seconds=100.0, asked_seconds=0.0)  # warm-up: never pruned
    assert median.due(50, train_seconds=100.0, asked_seconds=0.0)
    assert not median.due(499, train_seconds=100.0, asked_seconds=0.0)  # stopping there saves nothing
    assert not pruner_schedule(StudyConfig(pruner="none", epochs=10)).due(5, 10.0, 0.0)
    assert pruner_schedule(StudyConfig(pruner="hyperband", epochs=10)).due(0, 1.0, 0.0)
    # the budget: questions may take 1% of the training time so far
    s = PrunerSchedule(budget=0.01)
    assert s.due(3, train_seconds=10.0, asked_seconds=0.1)
    assert not s.due(3, train_seconds=10.0, asked_seconds=0.11)


def _ask_counter():
    calls = []

    def call(fn, *args, what, **kwargs):
        calls.append(what.split(" at ")[0].rstrip("0123456789 "))
        return fn(*args, **kwargs)

    return calls, call


def test_every_epoch_is_reported_but_the_pruner_is_asked_on_schedule():
    from search.pruning import pruner_schedule

    cfg = StudyConfig(epochs=10)  # median pruner, warm-up 1 epoch
    study = _study(make_pruner(cfg))
    calls, call = _ask_counter()
    # no time budget here: these epochs take no time, so any question would exceed it
    m = EpochMonitor(study.ask(), call=call, schedule=pruner_schedule(cfg, budget=math.inf))
    for epoch in range(10):
        m.end_epoch(epoch, _logs(0.9))
    assert calls.count("reporting epoch") == 10
    assert calls.count("asking the pruner") == m.pruner_calls == 8  # epochs 1..8: not the warm-up, not the last
    study.tell(m.trial, m.best_value)
    assert study.trials[0].intermediate_values == {e: 0.9 for e in range(10)}

    calls, call = _ask_counter()
    m = EpochMonitor(study.ask(), call=call, schedule=pruner_schedule(StudyConfig(epochs=10, pruner="none")))
    for epoch in range(10):
        m.end_epoch(epoch, _logs(0.9))
    assert calls.count("asking the pruner") == 0 and calls.count("reporting epoch") == 10


def test_slow_questions_are_spaced_out_to_the_budget(monkeypatch):
    """With K workers each question reads K running trials; when it costs more than the budget
    allows, the monitor asks less often instead of letting storage eat the training time."""
    from search import pruning
    from search.pruning import PrunerSchedule

    clock = {"t": 0.0}
    monkeypatch.setattr(pruning.time, "perf_counter", lambda: clock["t"])
    study = _study(optuna.pruners.NopPruner())
    trial = study.ask()

    def slow_should_prune():
        clock["t"] += 0.05  # a question takes 50 ms
        return False

    trial.should_prune = slow_should_prune
    m = EpochMonitor(trial, schedule=PrunerSchedule(budget=0.01))
    asked = []
    for epoch in range(40):
        clock["t"] += 1.0  # an epoch takes 1 s: the budget allows a question every 5 epochs
        before = m.pruner_calls
        m.end_epoch(epoch, _logs(0.5))
        if m.pruner_calls > before:
            asked.append(epoch)
    assert asked[0] == 0 and all(b - a in (4, 5) for a, b in zip(asked, asked[1:])) and len(asked) >= 8
    assert m.pruner_seconds <= 0.01 * sum(m.epoch_seconds) + 0.05
