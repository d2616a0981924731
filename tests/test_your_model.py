"""A user's own KerasTuner hypermodel, run unchanged by `hpsearch run --model FILE:NAME` (issue 23).

Each test runs the real command in a subprocess on a real PostgreSQL (the machine's, else the
embedded server) with small slices of MNIST prepared as KerasTuner's getting-started guide
prepares them (images in [0, 1] with a channel axis, one-hot labels).
"""

import json
import textwrap

import numpy as np
import optuna
import pytest
import sqlalchemy

from tests.conftest import REPO, guide_images, run_cli

pytestmark = pytest.mark.slow

EXAMPLES = REPO / "docs" / "examples"
TINY = ["--epochs", "2", "--validation", "test"]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """600 training and 100 test images of MNIST as the guide prepares them, in an .npz."""
    return guide_images(tmp_path_factory.mktemp("data") / "images.npz")


def _study(url, name):
    from storage import open_storage, resolve_storage_url

    return optuna.load_study(study_name=name, storage=open_storage(resolve_storage_url(url), heartbeat=False))


def _finished(study):
    return [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]


def _config(study):
    return study.user_attrs["hpsearch_config"]


def test_the_getting_started_build_model_runs_unchanged(local_pg_url, images):
    out = run_cli("run", "--model", str(EXAMPLES / "getting_started.py") + ":build_model", "--data", images, "--study", "gs",
                  "--trials", "3", *TINY, "--storage", local_pg_url, "--format", "json")
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["finished_trials"] == 3 and summary["foreign_trials"] == {}
    study = _study(local_pg_url, "gs")
    finished = _finished(study)
    assert len(finished) == 3 and not [t for t in study.trials if t.state.name == "RUNNING"]
    for t in finished:
        assert {"num_layers", "units_0", "activation", "dropout", "lr"} <= set(t.params)
        assert 1e-4 <= t.params["lr"] <= 1e-2 and t.params["units_0"] % 32 == 0
        assert {f"units_{i}" for i in range(t.params["num_layers"])} <= set(t.params)
        assert len(t.user_attrs["history"]["val_accuracy"]) == t.user_attrs["epochs_run"] >= 1
        assert t.intermediate_values  # reported every epoch, so the pruner and the landscape see it
        # the progress names the space's learning rate beside each trial, as the recipe's lines do
        assert f"trial {t.number} lr {t.params['lr']:.3g}: " in out.stderr, out.stderr
    config = _config(study)
    assert config["model"].endswith("getting_started.py:build_model") and len(config["model_digest"]) == 16
    assert config["objective"] == "val_accuracy" and config["direction"] == "maximize" and config["batch_size"] == 32
    best = summary["best"]
    assert best["params"] and best["val_accuracy"] == max(t.value for t in finished if t.state.name == "COMPLETE")


def test_a_hypermodel_whose_fit_tunes_shuffle_runs_with_two_workers_exactly(local_pg_url, images, tmp_path):
    pytest.importorskip("keras_tuner")  # the test extra installs it; the guide's class subclasses it
    out = run_cli("run", "--model", str(EXAMPLES / "getting_started.py") + ":MyHyperModel", "--data", images, "--study", "kt2",
                  "--trials", "4", "--workers", "2", *TINY, "--storage", local_pg_url, timeout=600,
                  env={"HPSEARCH_HOME": str(tmp_path / "home")})  # its workers' logs, not in the repository's .hpsearch
    assert out.returncode == 0, out.stderr
    study = _study(local_pg_url, "kt2")
    finished = _finished(study)
    assert len(finished) == 4 and not [t for t in study.trials if t.state.name == "RUNNING"]
    assert all("shuffle" in t.params and isinstance(t.params["shuffle"], bool) for t in finished)
    assert len({t.user_attrs.get("pid") for t in finished}) == 2  # both workers trained


def test_explicit_defaults_are_the_first_trial_and_the_objective_can_be_minimised(local_pg_url):
    env = {"PYTHONPATH": str(EXAMPLES)}
    out = run_cli("run", "--model", str(EXAMPLES / "regression.py") + ":build", "--data", "regression:load_data", "--objective", "val_loss",
                  "--study", "reg", "--trials", "3", "--epochs", "3", "--storage", local_pg_url, env=env)
    assert out.returncode == 0, out.stderr
    study = _study(local_pg_url, "reg")
    assert study.direction == optuna.study.StudyDirection.MINIMIZE and _config(study)["direction"] == "minimize"
    first = min(study.trials, key=lambda t: t.number)
    explicit = {"layers": 2, "units_0": 64, "units_1": 64, "learning_rate": 3e-3}
    assert {k: first.params[k] for k in explicit} == explicit  # default= values are enqueued first...
    assert first.params["activation"] in ("relu", "tanh")  # ...and one without a default is sampled
    finished = _finished(study)
    assert len(finished) == 3
    complete = [t for t in finished if t.state.name == "COMPLETE"]
    for t in complete:  # the value is the lowest val_loss over the epochs
        assert t.value == pytest.approx(min(v for v in t.user_attrs["history"]["val_loss"] if v is not None), rel=1e-6)
    assert "val_loss" in out.stdout and "best: trial" in out.stdout


@pytest.mark.parametrize("spec", ["cnn.py:build", "tuned_fit.py:BatchSizeModel"])
def test_each_example_runs(local_pg_url, images, spec):
    name = spec.split(".")[0]
    # no --study: the study is named after the model (the file's stem and NAME)
    out = run_cli("run", "--model", str(EXAMPLES / spec), "--data", images, "--trials", "2", *TINY, "--storage", local_pg_url)
    assert out.returncode == 0, out.stderr
    study = _study(local_pg_url, spec.replace(".py:", "."))
    assert f"dashboard: hpsearch dashboard --study {spec.replace('.py:', '.')}" in out.stdout  # the hints name it
    assert f"best model: hpsearch export --study {spec.replace('.py:', '.')} --data {images}" in out.stdout
    assert len(_finished(study)) == 2
    if name == "tuned_fit":
        assert all(t.params["batch_size"] in (32, 64, 128, 256) for t in _finished(study))
    if name == "cnn":  # its default= values made the first trial
        first = min(study.trials, key=lambda t: t.number)
        assert first.params == {"filters_0": 16, "kernel": 3, "filters_1": 16, "dropout": 0.2, "learning_rate": 1e-3}


def test_kerastuners_custom_training_loop_runs_and_exports(local_pg_url, images, tmp_path):
    """KerasTuner's "Tune model training" guide (docs/examples/custom_loop.py): build returns
    the model uncompiled, fit trains it with a loop of its own and logs only its own metric.
    Before, hpsearch refused the uncompiled model; allowed, each trial diverged after its first
    epoch (no "loss" in the logs) and the first checkpoint failed on the missing optimizer."""
    spec = str(EXAMPLES / "custom_loop.py") + ":MyHyperModel"
    out = run_cli("run", "--model", spec, "--data", images, "--study", "loop", "--trials", "2", *TINY, "--objective", "my_metric",
                  "--direction", "minimize", "--pruner", "none", "--seed", "2", "--storage", local_pg_url)
    assert out.returncode == 0, out.stderr[-3000:]
    trials = _study(local_pg_url, "loop").trials
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"], [(t.state.name, t.user_attrs.get("fail_reason")) for t in trials]
    for t in trials:  # two epochs reported, the value the lowest; batch size and rate tuned in fit
        assert sorted(t.intermediate_values) == [0, 1] and t.value == min(t.intermediate_values.values())
        assert {"units", "batch_size", "learning_rate"} <= set(t.params)
    best = min(trials, key=lambda t: t.value)
    out = run_cli("export", "--study", "loop", "--data", images, "--out", str(tmp_path / "loop.keras"), "--storage", local_pg_url)
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"trial {best.number}" in out.stdout and (tmp_path / "loop.keras").stat().st_size > 0


def test_a_model_with_dict_inputs_and_outputs_runs_from_its_loader(local_pg_url):
    """docs/examples/multi_input.py: two named inputs and two outputs, the loader's data dicts of
    arrays, searched on one output's metric; the hold-out and --train-size cut every array."""
    spec = str(EXAMPLES / "multi_input.py")
    out = run_cli("run", "--model", f"{spec}:build", "--data", f"{spec}:load_data", "--objective", "val_kind_accuracy",
                  "--study", "multi", "--trials", "2", "--epochs", "2", "--train-size", "600", "--storage", local_pg_url)
    assert out.returncode == 0, out.stderr
    study = _study(local_pg_url, "multi")
    assert len(_finished(study)) == 2 and _config(study)["objective"] == "val_kind_accuracy"
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
    first = min(study.trials, key=lambda t: t.number)
    assert first.params == {"layers": 2, "units_0": 64, "units_1": 64, "learning_rate": 3e-3, "level_weight": 0.5}
    history = first.user_attrs["history"]
    assert {"val_kind_accuracy", "val_level_loss", "val_loss"} <= set(history) and len(history["val_kind_accuracy"]) == first.user_attrs["epochs_run"]
    assert "test kind_accuracy" in out.stdout


def test_a_worker_whose_model_code_differs_is_refused(local_pg_url, images, tmp_path):
    model = tmp_path / "m.py"
    model.write_text((EXAMPLES / "tuned_fit.py").read_text())
    args = ["--model", f"{model}:BatchSizeModel", "--data", images, "--study", "pinned", "--storage", local_pg_url]
    init = run_cli("init", *args)
    assert init.returncode == 0, init.stderr
    # init shows the space as KerasTuner's search_space_summary() would, build(hp)'s only
    assert init.stdout.splitlines()[1:4] == ["search space: 2 hyperparameters from build(hp) with its defaults:",
                                             "  units: Int [64, 512] step 64 linear, default 64 (implicit)",
                                             "  learning_rate: Float [0.0001, 0.01] log, default 0.0001 (implicit)"], init.stdout
    assert "or in fit(hp, ...), joins when a trial first defines it" in init.stdout.splitlines()[4]
    model.write_text(model.read_text().replace("step=64", "step=32"))
    out = run_cli("worker", *args, "--trials", "1")
    assert out.returncode == 2
    assert "differs from the code study 'pinned' was created with" in out.stderr and len(out.stderr.strip().splitlines()) == 1
    # with the study's code back, other data is refused as early, before the model is imported
    model.write_text((EXAMPLES / "tuned_fit.py").read_text())
    other = guide_images(tmp_path / "other.npz", train=500)
    out = run_cli("worker", "--model", f"{model}:BatchSizeModel", "--data", other, "--study", "pinned", "--storage", local_pg_url, "--trials", "1")
    assert out.returncode == 2 and "differs from the data study 'pinned' was created with" in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    # a worker joining without --model takes the study's, so the recipe's --lr-max is refused too
    out = run_cli("worker", "--data", images, "--study", "pinned", "--storage", local_pg_url, "--lr-max", "0.5", "--trials", "1")
    assert out.returncode == 2 and "--lr-max bounds the recipe's learning rate" in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert len(_study(local_pg_url, "pinned").trials) == 0


def _bad(tmp_path, source: str, name: str = "m.py") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(source))
    return str(path)


GOOD_IMPORTS = "import keras\nfrom keras import layers\n"


@pytest.mark.parametrize("case, source, spec_name, fragment", [
    ("missing file", None, "build", "does not exist"),
    ("syntax error", "def build(hp)\n    return 1\n", "build", "syntax error in"),
    ("missing name", "def other(hp):\n    return 1\n", "build", "has no 'build' (its callables: other)"),
    ("not a model", "def build(hp):\n    return 42\n", "build", "returned int, not a keras.Model"),
    ("not compiled", GOOD_IMPORTS + "def build(hp):\n    return keras.Sequential([keras.Input((4,)), layers.Dense(1)])\n", "build", "is not compiled"),
    ("min above max", "def build(hp):\n    hp.Int('units', 64, 8)\n", "build", "'units'"),
    ("log with min 0", "def build(hp):\n    hp.Float('lr', 0.0, 1.0, sampling='log')\n", "build", "'lr'"),
    ("mixed choice", "def build(hp):\n    hp.Choice('act', ['relu', 3])\n", "build", "'act'"),
])
def test_bad_models_are_one_line_exit_2_and_write_nothing(local_pg_url, images, tmp_path, case, source, spec_name, fragment):
    path = str(tmp_path / "absent.py") if source is None else _bad(tmp_path, source)
    out = run_cli("run", "--model", f"{path}:{spec_name}", "--data", images, "--study", "bad", "--trials", "1", *TINY, "--storage", local_pg_url)
    assert out.returncode == 2, (case, out.stderr)
    assert fragment in out.stderr, (case, out.stderr)
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr, out.stderr
    engine = sqlalchemy.create_engine(local_pg_url)
    with engine.connect() as c:
        has = c.execute(sqlalchemy.text("SELECT to_regclass('studies') IS NOT NULL")).scalar()
        studies = c.execute(sqlalchemy.text("SELECT count(*) FROM studies WHERE study_name = 'bad'")).scalar() if has else 0
    engine.dispose()
    assert studies == 0


def test_a_build_that_raises_for_some_values_fails_that_trial_only(local_pg_url, images, tmp_path):
    path = _bad(tmp_path, GOOD_IMPORTS + """
def build(hp):
    units = hp.Choice("units", [8, 16], default=8)
    if units == 16:
        raise ValueError("16 units are not supported here")
    model = keras.Sequential([keras.Input((28, 28, 1)), layers.Flatten(), layers.Dense(units, activation="relu"), layers.Dense(10, activation="softmax")])
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    return model
""")
    out = run_cli("run", "--model", f"{path}:build", "--data", images, "--study", "raises", "--trials", "3", *TINY,
                  "--sampler", "random", "--seed", "3", "--storage", local_pg_url)
    study = _study(local_pg_url, "raises")
    failed = [t for t in study.trials if t.state.name == "FAIL"]
    assert out.returncode == 0 or failed, out.stderr
    assert len(_finished(study)) == 3 if out.returncode == 0 else True
    for t in failed:
        assert t.params["units"] == 16 and "16 units are not supported here" in t.user_attrs["fail_reason"]
    assert all(t.params["units"] == 8 for t in _finished(study))


def test_a_fit_that_drops_hpsearchs_callbacks_or_fits_twice_records_every_epoch_once(local_pg_url, images, tmp_path):
    """KerasTuner reads the History a fit returns, so a fit that passes callbacks of its own
    instead of **kwargs works there: hpsearch records its epochs from that History (before: 0
    epochs, "pruned"), with one warning. A fit that calls model.fit twice (a warm-up, then the
    rest) restarts Keras's epoch numbers: its epochs go on from those seen (before: epoch 0
    reported twice, Optuna's "already reported" warning, 2 epochs counted of 3)."""
    path = _bad(tmp_path, GOOD_IMPORTS + """
class Fits:
    def build(self, hp):
        model = keras.Sequential([keras.Input((28, 28, 1)), layers.Flatten(), layers.Dense(hp.Int("units", 8, 16, step=8), activation="relu"),
                                  layers.Dense(10, activation="softmax")])
        model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
        return model

    def fit(self, hp, model, *args, **kwargs):
        if hp.trial.number % 2 == 0:  # callbacks of its own instead of hpsearch's
            return model.fit(*args, **{**kwargs, "callbacks": [keras.callbacks.TerminateOnNaN()]})
        model.fit(*args, **{**kwargs, "epochs": 1})  # a warm-up epoch, then the study's epochs
        return model.fit(*args, **kwargs)
""")
    out = run_cli("run", "--model", f"{path}:Fits", "--data", images, "--study", "fits", "--trials", "2", *TINY,
                  "--pruner", "none", "--seed", "1", "--storage", local_pg_url)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Traceback" not in out.stderr and "already reported" not in out.stderr, out.stderr[-3000:]
    assert out.stderr.count("did not pass hpsearch's callbacks on to model.fit") == 1, out.stderr[-3000:]
    assert "trial 0 units " in out.stderr, out.stderr[-3000:]  # its line names the parameter, as trial 1's does
    own, twice = sorted(_study(local_pg_url, "fits").trials, key=lambda t: t.number)
    assert own.state.name == twice.state.name == "COMPLETE"
    assert sorted(own.intermediate_values) == [0, 1] and own.value == max(own.intermediate_values.values())
    assert own.user_attrs["epochs_run"] == 2 and "accuracy" in own.user_attrs["test_metrics"]
    assert sorted(twice.intermediate_values) == [0, 1, 2] and twice.user_attrs["epochs_run"] == 3
    # export trains the trial again through the same fit, and reads its epochs the same way
    # (before: "val_accuracy None" and "the run again differs slightly")
    out = run_cli("export", "--study", "fits", "--trial", "0", "--data", images, "--out", str(tmp_path / "own.keras"), "--storage", local_pg_url)
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"val_accuracy {own.value:.4g}" in out.stdout + out.stderr and "its own weights" in out.stdout + out.stderr, out.stdout + out.stderr


def test_data_the_model_rejects_fails_the_trial_as_a_configuration_error(local_pg_url, tmp_path):
    data = tmp_path / "flat.npz"
    rng = np.random.default_rng(0)
    np.savez(data, x_train=rng.random((60, 5), dtype="float32"), y_train=np.eye(10, dtype="float32")[rng.integers(0, 10, 60)],
             x_test=rng.random((12, 5), dtype="float32"), y_test=np.eye(10, dtype="float32")[rng.integers(0, 10, 12)])
    out = run_cli("run", "--model", str(EXAMPLES / "cnn.py") + ":build", "--data", str(data), "--study", "shape", "--trials", "1",
                  *TINY, "--storage", local_pg_url)
    assert out.returncode != 0 and "Traceback" not in out.stderr
    study = _study(local_pg_url, "shape")
    (trial,) = study.trials[:1]
    assert trial.state.name == "FAIL" and "cannot train" in trial.user_attrs["fail_reason"]
    assert not [t for t in study.trials if t.system_attrs.get("fixed_params") and t.state.name == "WAITING"]  # not retried


def test_an_objective_the_logs_never_hold_stops_the_worker_in_one_line(local_pg_url, images):
    out = run_cli("run", "--model", str(EXAMPLES / "getting_started.py") + ":build_model", "--data", images, "--study", "noobj",
                  "--objective", "val_auc", "--trials", "2", *TINY, "--storage", local_pg_url)
    assert out.returncode == 2, out.stderr
    assert "--objective val_auc is not among the epoch logs" in out.stderr and "val_accuracy" in out.stderr
    assert "Traceback" not in out.stderr
    study = _study(local_pg_url, "noobj")
    assert len(study.trials) == 1 and study.trials[0].state.name == "FAIL"


def test_lanes_with_a_users_model_off_jax_are_refused_in_one_line_naming_jax(images):
    out = run_cli("run", "--model", str(EXAMPLES / "cnn.py") + ":build", "--data", images, "--lanes", "2", "--storage", "sqlite:///:memory:",
                  env={"KERAS_BACKEND": "tensorflow"})
    assert out.returncode == 2 and "--lanes 2" in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert "KERAS_BACKEND=jax" in out.stderr


def test_lanes_with_a_users_model_follow_the_backend_of_keras_json(images, tmp_path):
    """Keras's documentation switches backends in ~/.keras/keras.json: with JAX there and no
    KERAS_BACKEND, Keras starts JAX, so lanes are not refused for the backend (here the next
    check answers: 4096 members of a 0.9 GB model do not fit in memory)."""
    (tmp_path / "keras.json").write_text('{"backend": "jax"}')
    out = run_cli("run", "--model", f"{_wide_model(tmp_path)}:build", "--data", images, "--lanes", "4096", "--storage", f"sqlite:///{tmp_path / 's.db'}",
                  env={"KERAS_BACKEND": "", "KERAS_HOME": str(tmp_path)})
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr[-2000:]
    assert "--lanes 4096 needs about" in out.stderr


def _wide_model(tmp_path):
    """A model of about 0.9 GB a lane member (40,000 units over 784 inputs)."""
    model = tmp_path / "wide.py"
    model.write_text(textwrap.dedent("""
        import keras

        def build(hp):
            m = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(),
                                  keras.layers.Dense(hp.Int("units", 40000, 40000)), keras.layers.Dense(10, activation="softmax")])
            m.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
            return m
    """))
    return model


def test_lanes_that_a_users_model_cannot_fit_in_memory_are_refused_from_its_own_sizes(images, tmp_path):
    """The memory check of --lanes K for a user's model counts its own variables, optimizer
    and layer outputs (issue 26): a member of this model needs about 0.9 GB, so 64 of them do
    not fit in this machine's memory; the line names the largest K that does."""
    pytest.importorskip("jax")
    model = _wide_model(tmp_path)
    db = tmp_path / "s.db"
    out = run_cli("run", "--model", f"{model}:build", "--data", images, "--lanes", "4096", "--storage", f"sqlite:///{db}",
                  env={"KERAS_BACKEND": "jax"})
    assert out.returncode == 2, out.stderr[-2000:]
    line = out.stderr.strip()
    assert len(line.splitlines()) == 1 and line.startswith("hpsearch run: error: --lanes 4096 needs about"), line
    assert "MiB per member at batch size 32" in line
    fit = int(line.rsplit("use --lanes ", 1)[1].split()[0])
    assert 1 <= fit < 4096
    if db.exists():  # nothing of a study was written
        assert optuna.get_all_study_names(f"sqlite:///{db}") == []


def test_lanes_of_a_hypermodel_on_jax_are_exact_and_equal_solo(local_pg_url, images):
    """Issue 26's Done-when: structural and continuous hyperparameters and a fit that tunes
    shuffle, --lanes 3 on JAX with a fourth trial refilling the first free lane: exactly the
    budget, each trial's epochs as its solo run's."""
    pytest.importorskip("keras_tuner")
    pytest.importorskip("jax")
    runs = {}
    for lanes in (3, 1):
        name = f"lanes{lanes}"
        out = run_cli("run", "--model", str(EXAMPLES / "getting_started.py") + ":MyHyperModel", "--data", images, "--study", name,
                      "--trials", "4", "--seed", "0", "--pruner", "none", "--lanes", str(lanes), *TINY, "--storage", local_pg_url,
                      env={"KERAS_BACKEND": "jax"}, timeout=900)
        assert out.returncode == 0, out.stderr[-3000:]
        study = _study(local_pg_url, name)
        assert len(_finished(study)) == len(study.trials) == 4
        runs[lanes] = {t.number: t for t in study.trials}
    for number, lane in runs[3].items():
        solo = runs[1][number]
        assert lane.params == solo.params and lane.user_attrs["lanes"] == 3
        for a, b in zip(lane.user_attrs["history"]["val_accuracy"], solo.user_attrs["history"]["val_accuracy"], strict=True):
            assert abs(a - b) <= 0.002


MIRRORED_MODEL = '''
import json, os
import keras
import numpy as np


def load():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 4)).astype("float32")
    y = (x @ np.array([[1.0], [-2.0], [0.5], [3.0]], "float32")).astype("float32")
    return (x[:240], y[:240]), (x[240:], y[240:])


def build(hp):
    units = hp.Int("units", 4, 64, sampling="reverse_log", default=60)
    beta = hp.Float("beta", 0.5, 0.999, sampling="reverse_log", default=0.99)
    with open(os.environ["USED"], "a") as f:  # what the model was built with
        f.write(json.dumps({"units": units, "beta": beta}) + "\\n")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(units, activation="relu"), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(1e-2, beta_1=beta), loss="mse", metrics=["mae"])
    return model
'''


def _view_params(url) -> list[dict]:
    """The ``params`` of study "mirrored"'s trials in the hpsearch_trials view, by number."""
    from storage import create_views

    engine = sqlalchemy.create_engine(url)
    try:
        create_views(engine)
        with engine.connect() as c:
            return c.execute(sqlalchemy.text("SELECT params FROM hpsearch_trials WHERE study = 'mirrored' ORDER BY number")).scalars().all()
    finally:
        engine.dispose()


def test_reverse_log_parameters_read_back_as_the_values_the_model_used(local_pg_url, tmp_path):
    """Optuna stores a reverse_log parameter mirrored (min + max - value); the run's summary, the
    queries, the hpsearch_trials view and export show the value the model was built with."""
    model = tmp_path / "mirrored.py"
    model.write_text(MIRRORED_MODEL)
    used = tmp_path / "used.jsonl"
    env = {"USED": str(used)}
    init = run_cli("init", "--model", f"{model}:build", "--data", f"{model}:load", "--objective", "val_mae", "--study", "mirrored",
                   "--epochs", "2", "--pruner", "none", "--storage", local_pg_url, env=env)
    assert init.returncode == 0, init.stderr
    queued = json.loads(run_cli("query", "trials", "--study", "mirrored", "--storage", local_pg_url, "--format", "json").stdout)
    assert [(r["state"], r["params"]) for r in queued] == [("WAITING", {"units": 60, "beta": 0.99})]  # the defaults, enqueued mirrored
    assert _view_params(local_pg_url) == [{"units": 60, "beta": 0.99}]
    out = run_cli("run", "--model", f"{model}:build", "--data", f"{model}:load", "--objective", "val_mae", "--study", "mirrored",
                  "--trials", "3", "--epochs", "2", "--pruner", "none", "--storage", local_pg_url, "--format", "json", env=env)
    assert out.returncode == 0, out.stderr
    built = [json.loads(line) for line in used.read_text().splitlines()[-3:]]  # before them: init's and run's builds with the defaults
    assert built[0] == {"units": 60, "beta": 0.99}
    study = _study(local_pg_url, "mirrored")
    stored = [t.params for t in sorted(_finished(study), key=lambda t: t.number)]
    assert len(built) == len(stored) == 3
    assert all(s["beta"] == pytest.approx(0.5 + 0.999 - b["beta"]) and s["units"] == 4 + 64 - b["units"] for s, b in zip(stored, built))
    summary = json.loads(out.stdout)
    assert summary["best"]["params"] == built[summary["best"]["number"]]
    rows = json.loads(run_cli("query", "trials", "--study", "mirrored", "--storage", local_pg_url, "--format", "json").stdout)
    assert [r["params"] for r in rows] == built
    # filters and sorts run on the values the model used
    high = json.loads(run_cli("query", "trials", "--study", "mirrored", "--storage", local_pg_url, "--format", "json",
                              "--param", f"beta={min(b['beta'] for b in built)}:1", "--sort", "param_beta").stdout)
    assert [r["params"]["beta"] for r in high] == sorted(b["beta"] for b in built)
    view = _view_params(local_pg_url)
    assert view == built and all(isinstance(p["units"], int) for p in view)
    exported = run_cli("export", "--study", "mirrored", "--data", f"{model}:load", "--storage", local_pg_url,
                       "--out", str(tmp_path / "best.keras"), "--format", "json", env=env)
    assert exported.returncode == 0, exported.stderr
    assert json.loads(exported.stdout)["params"] == built[summary["best"]["number"]]


@pytest.mark.parametrize("param, message", [
    ("beta", "--landscape-param beta: it is sampled reverse_log, which Optuna stores mirrored"),
    ("nosuch", "--landscape-param nosuch: the space has no such parameter (it has units, beta)"),
])
def test_a_landscape_param_the_axis_cannot_use_is_refused_before_anything_is_written(local_pg_url, tmp_path, param, message):
    model = tmp_path / "mirrored.py"
    model.write_text(MIRRORED_MODEL)
    out = run_cli("init", "--model", f"{model}:build", "--data", f"{model}:load", "--objective", "val_mae", "--study", "axis",
                  "--landscape-param", param, "--storage", local_pg_url, env={"USED": str(tmp_path / "used.jsonl")})
    assert out.returncode == 2 and message in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "Traceback" not in out.stderr
    engine = sqlalchemy.create_engine(local_pg_url)
    try:
        with engine.connect() as c:
            assert not c.execute(sqlalchemy.text("SELECT count(*) FROM studies WHERE study_name = 'axis'")).scalar()
    finally:
        engine.dispose()
