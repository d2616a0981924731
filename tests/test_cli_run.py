"""`hpsearch run` end to end, through a subprocess, on real PostgreSQL servers."""

import json
import os
import signal
import subprocess
import sys
import time

import optuna
import pytest
import sqlalchemy

from storage.epochs import TARGET_ATTR
from tests.conftest import REPO, run_cli
from tests.test_faults import blocked_signals

SMALL = ["--trials", "6", "--epochs", "3", "--train-size", "3000"]


def _finished(study):
    return [t for t in study.trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]


def _load(url, name="mnist-learning-rate"):
    from storage import open_storage, resolve_storage_url

    return optuna.load_study(study_name=name, storage=open_storage(resolve_storage_url(url)))


def _check_recipe_study(study, target=6, epochs=3):
    finished = _finished(study)
    assert len(finished) == target
    rates = [t.params["learning_rate"] for t in finished]
    for rate in (0.1, 0.01, 0.0001):
        assert rates.count(rate) == 1, rates
    for t in finished:
        h = t.user_attrs["history"]
        run = t.user_attrs["epochs_run"]
        assert 1 <= run <= epochs
        assert all(len(v) == run for v in h.values())
        assert sorted(t.intermediate_values) == list(range(run))
        assert 1e-5 <= t.params["learning_rate"] <= 1.0


def _run_twice(extra_args, env, url):
    first = run_cli("run", *SMALL, *extra_args, env=env)
    assert first.returncode == 0, first.stderr
    assert "study mnist-learning-rate: 6/6 trials finished" in first.stdout
    assert "recipe rate 0.01" in first.stdout and "dashboard: hpsearch dashboard --study mnist-learning-rate" in first.stdout
    assert "Traceback" not in first.stderr
    study = _load(url)
    _check_recipe_study(study)
    count = len(study.trials)
    second = run_cli("run", *SMALL, "--format", "json", *extra_args, env=env)
    assert second.returncode == 0, second.stderr
    summary = json.loads(second.stdout)
    assert summary["finished_trials"] == 6 and summary["target_trials"] == 6
    assert len(_load(url).trials) == count, "a second run on a full study must add nothing"
    best = _load(url).best_trial
    assert summary["best"]["number"] == best.number and summary["best"]["learning_rate"] == best.params["learning_rate"]
    return first


def test_run_on_the_embedded_default(tmp_path, mnist):
    from storage import embedded_url, stop_embedded

    home = tmp_path / "home"
    env = {"HPSEARCH_HOME": str(home)}
    try:
        out = run_cli("run", *SMALL, *(["--data", mnist] if mnist else []), env=env)
        assert out.returncode == 0, out.stderr
        url = embedded_url(home)
        _check_recipe_study(_load(url))
        assert "dashboard: hpsearch dashboard --study mnist-learning-rate" in out.stdout
        count = len(_load(url).trials)
        again = run_cli("run", *SMALL, "--format", "json", *(["--data", mnist] if mnist else []), env=env)
        assert again.returncode == 0, again.stderr
        assert json.loads(again.stdout)["finished_trials"] == 6
        assert len(_load(url).trials) == count
        # progress went to stderr, not stdout
        assert "trials, best val_accuracy" in out.stderr and "trials, best" not in out.stdout
        # `run` takes SIGINT/SIGTERM in its relay thread, blocked everywhere else, and the
        # server it started inherited that mask: PostgreSQL sets its own, so it still stops
        postmaster = int((home / "pgdata" / "postmaster.pid").read_text().split()[0])
        assert not blocked_signals(postmaster) & {signal.SIGINT, signal.SIGTERM}
    finally:
        stop_embedded(home)


def test_run_on_the_machines_postgresql(local_pg_url, mnist):
    _run_twice(["--storage", local_pg_url, *(["--data", mnist] if mnist else [])], None, local_pg_url)


def test_resuming_tops_up_to_the_target(local_pg_url, mnist):
    data = ["--data", mnist] if mnist else []
    args = ["--study", "topup", "--epochs", "1", "--train-size", "500", "--storage", local_pg_url, *data]
    assert run_cli("run", "--trials", "2", *args).returncode == 0
    assert len(_finished(_load(local_pg_url, "topup"))) == 2
    out = run_cli("run", "--trials", "4", *args)
    assert out.returncode == 0, out.stderr
    assert len(_finished(_load(local_pg_url, "topup"))) == 4
    # a contradicting study flag is refused and changes nothing
    bad = run_cli("run", "--trials", "5", "--study", "topup", "--epochs", "2", "--storage", local_pg_url, *data)
    assert bad.returncode == 2 and "contradicts this study's stored --epochs 1" in bad.stderr
    assert len(_finished(_load(local_pg_url, "topup"))) == 4


def test_two_local_workers_finish_exactly_the_target(local_pg_url, mnist, tmp_path):
    data = ["--data", mnist] if mnist else []
    out = run_cli("run", "--study", "pair", "--workers", "2", "--trials", "5", "--epochs", "1", "--train-size", "500",
                  "--storage", local_pg_url, *data, env={"HPSEARCH_HOME": str(tmp_path / "home")})
    assert out.returncode == 0, out.stderr
    study = _load(local_pg_url, "pair")
    assert len(_finished(study)) == 5
    assert not [t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]
    pids = {t.user_attrs["pid"] for t in _finished(study)}
    assert len(pids) == 2, "both workers should have run trials"
    logs = sorted((tmp_path / "home" / "logs").glob("pair-worker-*.log"))
    assert len(logs) == 2


def test_ctrl_c_leaves_no_running_trial_and_a_rerun_resumes(local_pg_url, mnist):
    data = ["--data", mnist] if mnist else []
    args = ["run", "--study", "interrupt", "--trials", "3", "--epochs", "200", "--train-size", "2000", "--storage", local_pg_url, *data]
    env = dict(os.environ)
    env.pop("OPTUNA_STORAGE", None)
    proc = subprocess.Popen([sys.executable, "-m", "search", *args], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        engine = sqlalchemy.create_engine(local_pg_url)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            time.sleep(0.5)
            if not sqlalchemy.inspect(engine).has_table("trial_intermediate_values"):
                continue  # run has not created the schema yet (this test alone, on a fresh database)
            with engine.connect() as c:
                n = c.exec_driver_sql(
                    "select count(*) from trial_intermediate_values v join trials t using (trial_id) where t.state = 'RUNNING'"
                ).scalar()
            if n and n >= 2:
                break
        else:
            pytest.fail("no trial started training within 120 s")
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        engine.dispose()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "interrupted by SIGINT" in err
    study = _load(local_pg_url, "interrupt")
    states = [t.state for t in study.trials]
    assert optuna.trial.TrialState.RUNNING not in states
    failed = [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
    assert len(failed) == 1 and failed[0].user_attrs["fail_reason"] == "interrupted by SIGINT"
    # its learning rate is enqueued again so the rerun trains it
    waiting = [t for t in study.trials if t.state == optuna.trial.TrialState.WAITING]
    assert failed[0].params["learning_rate"] in [t.system_attrs["fixed_params"]["learning_rate"] for t in waiting]


BAD = [
    (["run", "--data", "/nonexistent/mnist.npz"], "--data '/nonexistent/mnist.npz' does not exist"),
    (["run", "--storage", "mysql://u:pw@h/db"], "unsupported driver 'mysql'"),
    (["run", "--storage", "postgresql://u@127.0.0.1:9/db"], "cannot use storage postgresql+psycopg2://u@127.0.0.1:9/db"),
    (["run", "--storage", "nonsense"], "--storage is not a valid storage URL"),
    (["run", "--lr-min", "0.1", "--lr-max", "0.01"], "--lr-min 0.1 must be below --lr-max 0.01"),
    (["run", "--lr-min", "0.5", "--lr-max", "0.5"], "must be below"),
    (["run", "--lr-min", "0"], "--lr-min must be a positive finite number"),
    (["run", "--lr-min", "-1"], "--lr-min must be a positive finite number"),
    (["run", "--lr-max", "nan"], "--lr-max must be a positive finite number"),
    (["run", "--trials", "0"], "--trials must be a whole number of at least 1, got 0"),
    (["run", "--epochs", "0"], "--epochs must be a whole number of at least 1, got 0"),
    (["run", "--epochs", "-2"], "--epochs must be"),
    (["run", "--batch-size", "0"], "--batch-size must be"),
    (["run", "--workers", "0"], "--workers must be"),
    (["run", "--epochs", "three"], "argument --epochs: 'three' is not a whole number"),
    (["run", "--pruner", "random"], "--pruner 'random' is unknown: use one of asha, median, hyperband, none"),
    (["run", "--sampler", "grid"], "--sampler 'grid' is unknown: use one of tpe, random"),
    (["run", "--format", "xml"], "invalid choice: 'xml'"),
    (["run", "--workers", "2", "--storage", "sqlite:///x.db"], "SQLite serves one worker only"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
]


@pytest.mark.parametrize("argv, fragment", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_input_gives_one_line_and_exit_2(argv, fragment, tmp_path, mnist):
    env = {"HPSEARCH_HOME": str(tmp_path / "home")}
    if mnist and "--data" not in argv:
        env["HPSEARCH_DATA"] = mnist
    try:
        out = run_cli(*argv, env=env, cwd=tmp_path, timeout=60)
    finally:
        from storage import stop_embedded

        stop_embedded(tmp_path / "home")
    assert out.returncode == 2, (out.returncode, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert fragment in lines[0]
    assert "Traceback" not in out.stderr and "pw@" not in out.stderr
    assert out.stdout == ""
    # input errors stop before anything is written: no SQLite file, no embedded database
    assert not (tmp_path / "x.db").exists()
    if "--storage" not in argv and argv[0] == "run" and "--data" in argv:
        assert not (tmp_path / "home" / "pgdata").exists()


def test_run_on_sqlite_for_a_single_worker(tmp_path, mnist):
    data = ["--data", mnist] if mnist else []
    url = f"sqlite:///{tmp_path}/study.db"
    out = run_cli("run", "--study", "lite", "--trials", "4", "--epochs", "1", "--train-size", "300", "--storage", url, *data)
    assert out.returncode == 0, out.stderr
    study = _load(url, "lite")
    assert len(_finished(study)) == 4
    assert sorted(t.params["learning_rate"] for t in study.trials if t.user_attrs.get("source") == "recipe") == [0.0001, 0.01, 0.1]
    again = run_cli("run", "--study", "lite", "--trials", "4", "--storage", url, *data)
    assert again.returncode == 0 and len(_load(url, "lite").trials) == len(study.trials)


def test_init_with_a_target_below_three_queues_only_that_many_recipe_rates(local_pg_url, mnist):
    """Issue 15: `init --trials 1` then `worker --trials 1` left two recipe trials WAITING."""
    data = ["--data", mnist] if mnist else []
    out = run_cli("init", "--study", "init-few", "--storage", local_pg_url, "--trials", "1", *data)
    assert out.returncode == 0, out.stderr
    study = optuna.load_study(study_name="init-few", storage=local_pg_url)
    waiting = [t.system_attrs["fixed_params"]["learning_rate"] for t in study.get_trials(states=[optuna.trial.TrialState.WAITING])]
    assert waiting == [0.01]  # the recipe's best goes first (issue 13)
    out = run_cli("init", "--study", "init-few", "--storage", local_pg_url, "--trials", "5", *data)
    assert out.returncode == 0, out.stderr
    waiting = [t.system_attrs["fixed_params"]["learning_rate"] for t in study.get_trials(states=[optuna.trial.TrialState.WAITING])]
    assert sorted(waiting) == [0.0001, 0.01, 0.1]
    # The budget given to init is recorded, so `query follow` shows it before any worker runs.
    recorded = optuna.storages.RDBStorage(local_pg_url).get_study_system_attrs(study._study_id)
    assert recorded[TARGET_ATTR] == 5 and "budget 5 trials" in out.stdout
    follow = subprocess.Popen([sys.executable, "-m", "search", "query", "follow", "--study", "init-few", "--storage", local_pg_url],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        first = follow.stderr.readline()  # the header line, printed before it waits for epochs
    finally:
        follow.kill()
        follow.wait(timeout=15)
    assert "budget 5 trials" in first, first


def test_init_without_trials_records_no_budget(local_pg_url, mnist):
    data = ["--data", mnist] if mnist else []
    out = run_cli("init", "--study", "init-no-budget", "--storage", local_pg_url, *data)
    assert out.returncode == 0, out.stderr
    study = optuna.load_study(study_name="init-no-budget", storage=local_pg_url)
    recorded = optuna.storages.RDBStorage(local_pg_url).get_study_system_attrs(study._study_id)
    assert TARGET_ATTR not in recorded and ", budget" not in out.stdout
    assert len(study.get_trials(states=[optuna.trial.TrialState.WAITING])) == 3  # all of the recipe's rates
