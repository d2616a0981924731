"""Lanes (issue 12): K trials trained as one batched model compute what each computes alone.

The model-level tests train a :class:`search.train.lanes.LaneModel` directly, without a database;
the study-level ones run ``hpsearch run`` / ``hpsearch worker --lanes K`` processes against
real PostgreSQL. One solo study (the recipe's three rates, 3 epochs, seeded) is trained once
per module and shared as the reference.
"""

from __future__ import annotations

import math
import os
import signal
import time

import numpy as np
import optuna
import pytest

from search.train.data import load_dataset
from tests.conftest import run_cli
from tests.test_faults import FAST_HEARTBEAT, _env, _stop_all, _worker

TRAIN_SIZE = 2000
EPOCHS = 3
#: The study both the solo reference and the lanes runs use (flags of ``hpsearch run``).
STUDY = ["--seed", "0", "--validation", "test", "--pruner", "none", "--epochs", str(EPOCHS), "--train-size", str(TRAIN_SIZE)]


def _load(url, name):
    from storage import open_storage, resolve_storage_url

    return optuna.load_study(study_name=name, storage=open_storage(resolve_storage_url(url), heartbeat=False))


def _finished(study):
    return [t for t in study.trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]


def _by_rate(trials):
    return {t.params["learning_rate"]: t for t in trials}


def _data(mnist):
    return ["--data", mnist] if mnist else []


@pytest.fixture(scope="module")
def solo(local_pg_url, mnist):
    """The recipe's three rates trained solo (no lanes) in a seeded study: the reference."""
    out = run_cli("run", "--study", "solo", "--trials", "3", *STUDY, "--storage", local_pg_url, *_data(mnist))
    assert out.returncode == 0, out.stderr
    trials = _finished(_load(local_pg_url, "solo"))
    assert all("lanes" not in t.user_attrs for t in trials), "a solo worker must not record lanes"
    return _by_rate(trials)


# --- the model, without a database ------------------------------------------------------------


@pytest.fixture(scope="module")
def small(mnist):
    return load_dataset(mnist, train_size=1024, validation="holdout")


def _train(model, ds, epochs: int, poison_after: int | None = None):
    """Histories ``[(train logs, val logs), ...]``; optionally make member 1 infinite after an epoch."""
    from search.train.data import device_data
    from search.train.lanes import lane_orders

    data = device_data(ds)
    out = []
    for epoch in range(epochs):
        logs = model.train_epoch(data.x_train, data.y_train, lane_orders(5, [epoch] * model.lanes, len(ds.x_train)))
        out.append((logs, model.evaluate(data.x_val[:2000], data.y_val[:2000])))
        if poison_after == epoch:
            _poison(model, 1)
    return out


def _poison(model, lane: int) -> None:
    """Set one member's output kernel to +inf, as an exploding update would."""
    from keras import ops

    if model.layout == "unrolled":
        params, moments, step, rate = model.state[lane]
        params = (params[0], params[1], ops.full(params[2].shape, math.inf), params[3])
        model.state = model.state[:lane] + ((params, moments, step, rate),) + model.state[lane + 1:]
    else:
        params, moments, steps, rates = model.state
        w2 = ops.slice_update(params[2], (lane, 0, 0), ops.full((1, *params[2].shape[1:]), math.inf))
        model.state = ((params[0], params[1], w2, params[3]), moments, steps, rates)


@pytest.mark.parametrize("layout", ["unrolled", "stacked"])
def test_an_infinite_member_changes_nothing_in_the_others(small, layout):
    from search.train.lanes import LaneModel

    runs = []
    for poison in (None, 0):
        model = LaneModel(3, layout=layout)
        for lane, lr in enumerate((0.01, 0.001, 0.0001)):
            model.reset_lane(lane, lr, seed=lane)
        runs.append(_train(model, small, 2, poison_after=poison))
    clean, poisoned = runs
    for lane in (0, 2):
        for (t_clean, v_clean), (t_poisoned, v_poisoned) in zip(clean, poisoned):
            for key in ("loss", "accuracy"):
                assert t_clean[key][lane] == t_poisoned[key][lane]
                assert v_clean[key][lane] == v_poisoned[key][lane]
    assert not math.isfinite(poisoned[1][0]["loss"][1]), "the poisoned member's loss must show it"


def test_a_reset_lane_starts_as_the_same_trial_starts_alone(small):
    """Refill: fresh weights as the recipe draws them, zeroed Adam state, the new rate."""
    import keras

    from search.train.lanes import LaneModel
    from search.train.model import build_model, reset_model

    model = LaneModel(2, layout="unrolled")
    model.reset_lane(0, 0.01, seed=3)
    model.reset_lane(1, 0.01, seed=4)
    _train(model, small, 1)
    model.reset_lane(1, 0.001, seed=9)
    solo = build_model(0.001)
    keras.utils.set_random_seed(9)
    reset_model(solo, 0.001)
    for lane_w, solo_w in zip(model.member_weights(1), solo.get_weights()):
        np.testing.assert_array_equal(lane_w, solo_w)
    params, moments, step, rate = model.state[1]
    assert float(step) == 0.0 and math.isclose(float(rate), 0.001, rel_tol=1e-6)
    assert all(float(keras.ops.max(keras.ops.abs(m))) == 0.0 for pair in moments for m in pair)


def test_a_k_that_cannot_fit_is_refused_in_one_line():
    from search.errors import ConfigError
    from search.train.lanes import bytes_per_member, check_lanes_fit

    each = bytes_per_member()
    assert 15e6 < each < 60e6  # the recipe's member: weights, Adam's moments, a step's activations
    check_lanes_fit(8, available=(8 * each, "a test device"))
    with pytest.raises(ConfigError) as e:
        check_lanes_fit(9, available=(8 * each + 1, "a test device"))
    assert "--lanes 9 needs about" in str(e.value) and "use --lanes 8 or fewer" in str(e.value)
    with pytest.raises(ConfigError, match="at least 1"):
        check_lanes_fit(0)


# --- studies ----------------------------------------------------------------------------------


@pytest.mark.parametrize("argv, fragment", [
    (["--lanes", "0"], "--lanes must be a whole number of at least 1, got 0"),
    (["--lanes", "100000"], "--lanes 100000 is above the limit"),
])
def test_bad_lanes_give_one_line_and_exit_2(argv, fragment, tmp_path, mnist):
    out = run_cli("run", "--trials", "1", *argv, *_data(mnist), env={"HPSEARCH_HOME": str(tmp_path)}, timeout=120)
    assert out.returncode == 2, out.stderr
    assert fragment in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_hpsearch_lanes_must_be_a_number(tmp_path, mnist):
    out = run_cli("worker", "--trials", "1", *_data(mnist), env={"HPSEARCH_HOME": str(tmp_path), "HPSEARCH_LANES": "many"}, timeout=120)
    assert out.returncode == 2 and "HPSEARCH_LANES='many' is not a whole number" in out.stderr, out.stderr


def test_lanes_compute_the_solo_histories_isolate_a_diverging_member_and_refill(local_pg_url, mnist, solo):
    """4 lanes: the recipe's rates and one rate that diverges at once, then a fifth trial.

    The recipe's histories match the solo study's within 0.002 per epoch although a member
    next to them went infinite; that member is pruned as diverged after its first epoch, and
    its lane takes the fifth trial, which trains its whole 3 epochs while the others go on.
    """
    name = "lanes4"
    init = run_cli("init", "--study", name, *STUDY, "--storage", local_pg_url, *_data(mnist))
    assert init.returncode == 0, init.stderr
    _load(local_pg_url, name).enqueue_trial({"learning_rate": 1e30}, user_attrs={"source": "test"})
    out = run_cli("run", "--study", name, "--trials", "5", "--lanes", "4", "--storage", local_pg_url, *_data(mnist))
    assert out.returncode == 0, out.stderr
    study = _load(local_pg_url, name)
    finished = _finished(study)
    assert len(finished) == 5 and len(study.trials) == 5
    for t in finished:
        assert t.user_attrs["lanes"] == 4 and 0 <= t.user_attrs["lane"] < 4
        run = t.user_attrs["epochs_run"]
        assert all(len(v) == run for v in t.user_attrs["history"].values())
        assert sorted(t.intermediate_values) == list(range(run))
        for key in ("best_epoch", "test_accuracy", "stop_reason", "train_seconds", "epoch_seconds", "host", "device"):
            assert key in t.user_attrs, key
    rates = _by_rate(finished)
    for rate in (0.01, 0.0001, 0.1):
        lane_h, solo_h = rates[rate].user_attrs["history"], solo[rate].user_attrs["history"]
        assert len(lane_h["val_accuracy"]) == EPOCHS
        assert max(abs(a - b) for a, b in zip(lane_h["val_accuracy"], solo_h["val_accuracy"])) <= 0.002, (rate, lane_h, solo_h)
    diverged = rates[1e30]
    assert diverged.state == optuna.trial.TrialState.PRUNED and diverged.user_attrs["stop_reason"] == "diverged"
    assert diverged.user_attrs["epochs_run"] == 1
    refill = next(t for t in finished if t.number == 4)
    assert refill.user_attrs["lane"] == diverged.user_attrs["lane"]
    assert refill.user_attrs["epochs_run"] == EPOCHS and refill.state == optuna.trial.TrialState.COMPLETE
    # it started while the recipe's trials were still training
    assert refill.datetime_start < min(rates[r].datetime_complete for r in (0.1, 0.01, 0.0001))


def test_two_lane_workers_finish_exactly_the_target(local_pg_url, mnist, tmp_path):
    out = run_cli("run", "--study", "lanes-pair", "--workers", "2", "--lanes", "3", "--trials", "7", "--epochs", "2",
                  "--train-size", "1000", "--storage", local_pg_url, *_data(mnist), env={"HPSEARCH_HOME": str(tmp_path / "home")})
    assert out.returncode == 0, out.stderr
    study = _load(local_pg_url, "lanes-pair")
    states = [t.state.name for t in study.trials]
    assert states.count("COMPLETE") + states.count("PRUNED") == 7, states
    assert "RUNNING" not in states and "FAIL" not in states
    assert all(t.user_attrs["lanes"] == 3 for t in _finished(study))
    assert len({t.user_attrs["pid"] for t in _finished(study)}) == 2, "both workers should have run trials"


def _running_lanes(url: str, name: str, pid: int | None, lanes: int, min_epochs: int, timeout: float) -> dict[int, int]:
    """Wait until ``lanes`` RUNNING trials of one worker (``pid``, or any) reported ``min_epochs``;
    return ``{trial number: pid}``."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(url)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if sqlalchemy.inspect(engine).has_table("trial_user_attributes"):
                with engine.connect() as c:
                    rows = c.exec_driver_sql(
                        "SELECT t.number, a.value_json FROM trials t JOIN studies s USING (study_id) "
                        "JOIN trial_user_attributes a ON a.trial_id = t.trial_id AND a.key = 'pid' "
                        "WHERE s.study_name = %(n)s AND t.state = 'RUNNING' "
                        "AND (SELECT count(*) FROM trial_intermediate_values v WHERE v.trial_id = t.trial_id) >= %(e)s",
                        {"n": name, "e": min_epochs},
                    ).all()
                by_pid: dict[int, list[int]] = {}
                for number, p in rows:
                    by_pid.setdefault(int(p), []).append(int(number))
                for p, numbers in by_pid.items():
                    if (pid is None or p == pid) and len(numbers) >= lanes:
                        return {n: p for n in numbers}
            time.sleep(0.3)
    finally:
        engine.dispose()
    pytest.fail(f"no worker of {name} had {lanes} trials at {min_epochs} epochs within {timeout} s")


def test_kill_9_of_a_lane_worker_fails_and_retries_all_its_trials(local_pg_url, mnist, tmp_path):
    name = "lanes-kill9"
    args = ["--study", name, "--trials", "6", "--lanes", "3", "--epochs", "4", "--train-size", "1000", "--pruner", "none", *_data(mnist)]
    env = _env(local_pg_url, **FAST_HEARTBEAT)
    logs = [open(tmp_path / f"w{i}.log", "wb") for i in range(2)]
    procs = [_worker([*args, "--worker-index", str(i)], env, logs[i]) for i in range(2)]
    try:
        victims = _running_lanes(local_pg_url, name, None, 3, 1, 240)
        pid = next(iter(victims.values()))
        victim = next(p for p in procs if p.pid == pid)
        os.killpg(victim.pid, signal.SIGKILL)
        other = next(p for p in procs if p is not victim)
        other.wait(timeout=300)
    finally:
        _stop_all(procs)
        for f in logs:
            f.close()
    assert other.returncode == 0, (tmp_path / "w0.log").read_text()[-1500:] + (tmp_path / "w1.log").read_text()[-1500:]
    study = _load(local_pg_url, name)
    assert len(_finished(study)) == 6
    assert not [t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]
    for number in victims:
        killed = next(t for t in study.trials if t.number == number)
        assert killed.state == optuna.trial.TrialState.FAIL
        retried = [t for t in study.trials if t.system_attrs.get("failed_trial") == number]
        assert len(retried) == 1 and retried[0].state.name == "COMPLETE", number
        assert retried[0].params["learning_rate"] == killed.params["learning_rate"]
        assert retried[0].user_attrs["pid"] != pid


def test_sigterm_closes_every_lane_trial_and_requeues_its_rate(local_pg_url, mnist, tmp_path):
    name = "lanes-term"
    # no pruner: successive halving (the default) would stop the worst rate at epoch 1, and
    # this test needs all three lanes training when the signal comes
    args = ["--study", name, "--trials", "3", "--lanes", "3", "--epochs", "300", "--train-size", "1000", "--pruner", "none", *_data(mnist)]
    with open(tmp_path / "w.log", "wb") as log:
        proc = _worker(args, _env(local_pg_url), log)
        try:
            running = _running_lanes(local_pg_url, name, proc.pid, 3, 1, 180)
            sent = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
            took = time.monotonic() - sent
        finally:
            _stop_all([proc])
    out = (tmp_path / "w.log").read_text()
    print(f"\nSIGTERM: lane worker exited {took:.1f} s after the signal")
    assert took < 10, took
    assert proc.returncode == 143, out
    assert "interrupted by SIGTERM" in out and "Traceback" not in out
    study = _load(local_pg_url, name)
    failed = [t for t in study.trials if t.number in running]
    assert len(failed) == 3
    assert all(t.state == optuna.trial.TrialState.FAIL and t.user_attrs["fail_reason"] == "interrupted by SIGTERM" for t in failed), [(t.number, t.state.name, t.user_attrs.get("fail_reason")) for t in failed]
    assert not [t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]
    waiting = sorted(t.system_attrs["fixed_params"]["learning_rate"] for t in study.trials if t.state == optuna.trial.TrialState.WAITING)
    assert waiting == sorted(t.params["learning_rate"] for t in failed)
    # each member's last finished epoch is checkpointed for its retry (issue 24)
    from storage.checkpoints import checkpoint_sizes
    from storage.epochs import engine_of

    sizes = checkpoint_sizes(engine_of(study._storage), study._study_id)
    assert set(sizes) == {t._trial_id for t in failed} and all(nbytes > 9_000_000 for _, nbytes in sizes.values()), sizes
