"""The monitor and pruners through Optuna's ask/report/tell, with no training at all."""

import math

import optuna
import pytest

from search.study.config import StudyConfig
from search.errors import TrialConfigError
from search.study.pruners import make_pruner, warmup_steps
from search.train.monitor import EpochMonitor


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
    from search.study.pruners import AshaPruner

    p = make_pruner(StudyConfig(epochs=500))
    assert isinstance(p, AshaPruner) and p.rungs == [0, 2, 8, 26, 80, 242] and p.reduction_factor == 3
    p = make_pruner(StudyConfig(epochs=500, pruner="median"))
    assert isinstance(p, optuna.pruners.MedianPruner)
    # 50 warm-up epochs (a tenth of 500) and 5 startup trials, seen in what it decides:
    assert not _prunes_at(p, complete=5, step=49) and _prunes_at(p, complete=5, step=50)
    assert not _prunes_at(p, complete=4, step=50)
    assert warmup_steps(3) == 1
    assert isinstance(make_pruner(StudyConfig(pruner="hyperband", epochs=9)), optuna.pruners.HyperbandPruner)
    assert isinstance(make_pruner(StudyConfig(pruner="none")), optuna.pruners.NopPruner)


def test_a_bad_trial_is_pruned_after_warmup_and_keeps_its_history():
    study = _study(make_pruner(StudyConfig(epochs=10, pruner="median")))
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
    from search.study.pruners import PrunerSchedule, pruner_schedule

    median = pruner_schedule(StudyConfig(epochs=500, pruner="median"))
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
    from search.study.pruners import pruner_schedule

    cfg = StudyConfig(epochs=10, pruner="median")  # warm-up 1 epoch
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
    from search.study.pruners import PrunerSchedule
    from search.train import monitor

    clock = {"t": 0.0}
    monkeypatch.setattr(monitor.time, "perf_counter", lambda: clock["t"])
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


# --- successive halving (--pruner asha, the default) on a real PostgreSQL ---------------


@pytest.fixture(scope="module")
def rdb_url(local_pg_url):
    """The machine's PostgreSQL when it answers, else the embedded server."""
    return local_pg_url


def test_rungs_are_epochs_trained_1_3_9_27_81_243():
    from search.study.pruners import rung_epochs

    assert rung_epochs(500) == [0, 2, 8, 26, 80, 242]
    assert rung_epochs(10) == [0, 2, 8] and rung_epochs(9) == [0, 2] and rung_epochs(1) == []
    sched = pruner_schedule_for(StudyConfig(epochs=500, pruner="asha"))
    assert [e for e in range(500) if sched.due(e, train_seconds=0.0, asked_seconds=1e9)] == [0, 2, 8, 26, 80, 242]


def pruner_schedule_for(cfg):
    from search.study.pruners import pruner_schedule

    return pruner_schedule(cfg)


def _run_trial(study, cfg, curve):
    """Drive one trial through the monitor as a worker would; return (monitor, epoch it stopped at or None)."""
    trial = study.ask()
    m = EpochMonitor(trial, schedule=pruner_schedule_for(cfg))
    for epoch, acc in enumerate(curve):
        if m.end_epoch(epoch, _logs(acc)):
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            return m, epoch
    study.tell(trial, m.best_value)
    return m, None


def test_successive_halving_stops_each_trial_at_the_rung_its_rule_says(rdb_url):
    """Rungs after 1, 3 and 9 epochs; the top third of the values at a rung goes on (the first
    trial always, the second only if it beats the first), running trials included."""
    import uuid

    cfg = StudyConfig(epochs=10, pruner="asha")
    study = optuna.create_study(storage=rdb_url, study_name=f"asha-{uuid.uuid4().hex[:6]}", direction="maximize", pruner=make_pruner(cfg))
    up = lambda first, step=0.02: [first + step * e for e in range(10)]  # noqa: E731
    a, stop = _run_trial(study, cfg, up(0.50))  # alone at every rung: completes
    assert stop is None and a.epochs_run == 10 and a.pruner_calls == 3  # asked at epochs 0, 2, 8 only
    b, stop = _run_trial(study, cfg, up(0.40))  # 0.40 < 0.50 at epoch 0: top 1 of 2 is A
    assert stop == 0 and b.epochs_run == 1 and b.stop_reason == "pruned" and b.pruner_calls == 1
    c, stop = _run_trial(study, cfg, [0.55, 0.56, 0.57] + [0.70] * 7)  # leads at epochs 0, 2 and 8
    assert stop is None and c.epochs_run == 10 and c.pruner_calls == 3
    # leads at epoch 0 (4 values, keep 1); at epoch 2, 0.53 is below A's 0.54 and C's 0.57
    d, stop = _run_trial(study, cfg, [0.56, 0.57, 0.53] + [0.90] * 7)
    assert stop == 2 and d.epochs_run == 3 and d.history["val_accuracy"] == [0.56, 0.57, 0.53] and "pruned at epoch 2" in d.detail
    # two trials running at once: each sees the other's value at the rung before either ends
    e, f = study.ask(), study.ask()
    me, mf = EpochMonitor(e, schedule=pruner_schedule_for(cfg)), EpochMonitor(f, schedule=pruner_schedule_for(cfg))
    assert me.end_epoch(0, _logs(0.95)) is False  # 5 values, keep 1: E leads
    assert mf.end_epoch(0, _logs(0.90)) is False  # 6 values, keep 2: E (running) and F
    assert me.end_epoch(1, _logs(0.10)) is False  # not a rung: never asked, whatever the value
    assert me.pruner_calls == 1
    assert me.end_epoch(2, _logs(0.50)) is True  # 5 values at epoch 2 (A, C, D, E; keep 1): C's 0.57 leads
    g, stop = _run_trial(study, cfg, [0.30] + [0.99] * 9)
    assert stop == 0  # 7 values at epoch 0, keep 2 (E 0.95, F 0.90): 0.30 is out, however good it would become


def test_successive_halving_reads_each_value_once(rdb_url):
    """The pruner reads each value at a rung from the database once, and only at its rungs:
    each read leaves out the trials whose value it already holds (a reported value never
    changes). Counted as the rows its reads return, on the study's own engine."""
    import uuid

    import sqlalchemy

    from storage import open_storage, resolve_storage_url, step_values

    cfg = StudyConfig(epochs=10, pruner="asha")
    pruner = make_pruner(cfg)
    storage = open_storage(resolve_storage_url(rdb_url), heartbeat=False)
    study = optuna.create_study(storage=storage, study_name=f"asha-{uuid.uuid4().hex[:6]}", direction="maximize", pruner=pruner)
    reads = []  # rows returned by each read of the values at a step (storage.step_values' query)

    def count(conn, cursor, statement, parameters, context, executemany):
        if "CAST(trial_intermediate_values.intermediate_value_type AS VARCHAR)" in statement:
            reads.append(cursor.rowcount)

    sqlalchemy.event.listen(storage.engine, "after_cursor_execute", count)
    try:
        for first in (0.5, 0.6, 0.7):
            _run_trial(study, cfg, [first] * 10)
    finally:
        sqlalchemy.event.remove(storage.engine, "after_cursor_execute", count)
    # 3 trials x rungs 0, 2, 8: 9 reads (not one per epoch), 9 values (without leaving out the
    # values held it would be 1 + 2 + 3 per rung, 18)
    assert len(reads) == 9 and sum(reads) == 9 and pruner.reads == 9
    sid = storage.get_study_id_from_name(study.study_name)
    at_0 = step_values(storage.engine, sid, 0)
    assert sorted(at_0.values()) == [0.5, 0.6, 0.7]
    ids = sorted(at_0)
    assert step_values(storage.engine, sid, 0, exclude=ids[:2]) == {ids[2]: 0.7}
    assert len(step_values(storage.engine, sid, 1)) == 3  # every epoch is reported, though read only at rungs
    storage.engine.dispose()


def test_the_pruner_chosen_on_the_command_line_is_stored_in_the_study(rdb_url, mnist):
    from search.study.create import CONFIG_ATTR
    from tests.conftest import run_cli

    data = ["--data", mnist] if mnist else []
    st = ["--study", "pruner-chosen", "--storage", rdb_url, "--epochs", "3", "--train-size", "300"]
    r = run_cli("init", *st, "--pruner", "asha", *data)
    assert r.returncode == 0, r.stderr
    assert optuna.load_study(study_name="pruner-chosen", storage=rdb_url).user_attrs[CONFIG_ATTR]["pruner"] == "asha"
    r = run_cli("init", *st, "--pruner", "median", *data)  # joining: the stored choice holds
    assert r.returncode == 2 and "--pruner median contradicts this study's stored --pruner asha" in r.stderr


def test_the_recipes_best_rate_goes_first_so_the_trial_asha_cannot_judge_is_a_good_one(rdb_url):
    """Issue 13: the study's first trial trains whole (nothing to compare it with at any rung).
    With 0.1 first, 0.1 and then 0.01 (which beats it) both trained every epoch; with 0.01
    first, 0.1 and 0.0001 stop at the first rung when they trail it there."""
    import uuid

    from search.study.space import RECIPE_BEST, recipe_order

    assert RECIPE_BEST == 0.01
    assert recipe_order([0.1, 0.01, 0.0001]) == [0.01, 0.1, 0.0001]
    assert recipe_order([0.1, 0.0001]) == [0.1, 0.0001]  # a range without 0.01 keeps the recipe's order
    cfg = StudyConfig(epochs=10, pruner="asha")
    study = optuna.create_study(storage=rdb_url, study_name=f"asha-{uuid.uuid4().hex[:6]}", direction="maximize", pruner=make_pruner(cfg))
    curves = {0.01: [0.82 + 0.013 * e for e in range(10)], 0.1: [0.55 + 0.036 * e for e in range(10)], 0.0001: [0.52 + 0.04 * e for e in range(10)]}
    epochs = [_run_trial(study, cfg, curves[lr])[0].epochs_run for lr in recipe_order(list(curves))]
    assert epochs == [10, 1, 1]
    study = optuna.create_study(storage=rdb_url, study_name=f"asha-{uuid.uuid4().hex[:6]}", direction="maximize", pruner=make_pruner(cfg))
    epochs = [_run_trial(study, cfg, curves[lr])[0].epochs_run for lr in (0.1, 0.01, 0.0001)]  # the recipe's own order
    assert epochs == [10, 10, 1]


def test_a_rung_can_keep_a_share_of_its_own():
    """``keep`` gives each rung its share (the last share holds for later rungs); the default
    is one in ``reduction_factor``, at least one trial."""
    from search.study.pruners import AshaPruner

    def decisions(pruner, firsts):
        study = _study(pruner)
        out = []
        for v in firsts:
            t = study.ask()
            t.report(v, 0)
            out.append(t.should_prune())
            study.tell(t, state=optuna.trial.TrialState.PRUNED) if out[-1] else study.tell(t, v)
        return out

    firsts = [0.9, 0.8, 0.7, 0.85, 0.6, 0.75]
    # one in three: n=2..5 keep 1, n=6 keep 2 (0.9, 0.85)
    assert decisions(AshaPruner(10), firsts) == [False, True, True, True, True, True]
    # half at the first rung: n=4 keeps 0.9 and 0.85; n=6 keeps 0.9, 0.85, 0.8
    assert decisions(AshaPruner(10, keep=(0.5, 1 / 3)), firsts) == [False, True, True, False, True, True]
    assert AshaPruner(10, keep=(0.5, 1 / 3)).keep == (0.5, 1 / 3) and AshaPruner(10).keep == (1 / 3,)


def test_the_promotion_replay_stops_what_the_asha_pruner_stops():
    """tests/benchmarks/promotion_replay.py screens rung rules on recorded curves; its "stop"
    rule must be hpsearch's pruner, trial for trial, or its figures say nothing of hpsearch."""
    import importlib.util
    import random
    from pathlib import Path

    from search.study.pruners import AshaPruner

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "promotion_replay.py"
    spec = importlib.util.spec_from_file_location("promotion_replay", path)
    replay = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(replay)
    rng = random.Random(3)
    # curves with ties (values on a 0.01 grid), so the rule's >= at the cut is checked too
    curves = [[round(min(0.99, 0.5 + 0.04 * e + rng.uniform(-0.1, 0.1)), 2) for e in range(replay.EPOCHS)] for _ in range(40)]
    order = []
    for _ in range(4):  # as the replay draws them: passes of the pool
        order += rng.sample(range(40), 40)
    trace = replay.stop_rule(curves, order)

    study = _study(AshaPruner(replay.EPOCHS))
    trained = []
    for config in order:
        if len(trained) >= replay.BUDGET:
            break
        t = study.ask()
        for e in range(replay.EPOCHS):
            t.report(curves[config][e], e)
            trained.append(curves[config][e])
            if t.should_prune():
                study.tell(t, state=optuna.trial.TrialState.PRUNED)
                break
        else:
            study.tell(t, max(curves[config]))
    best = [max(trained[: i + 1]) for i in range(len(trained))]
    assert trace == best
    states = {t.state for t in study.trials}
    assert optuna.trial.TrialState.PRUNED in states and optuna.trial.TrialState.COMPLETE in states
