"""Bad input across every command: one line naming the problem and the fix, exit 2, no
traceback, and the study data in the database byte-for-byte unchanged (issue 15 grew the
cases from 34 to over 80)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import sqlalchemy

from tests.conftest import REPO, closed_port, run_cli

TABLES = (
    "studies", "study_directions", "study_user_attributes", "study_system_attributes", "trials",
    "trial_params", "trial_values", "trial_intermediate_values", "trial_user_attributes",
    "trial_system_attributes", "trial_heartbeats",
)


def _snapshot(url: str) -> dict[str, str]:
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as c:
            return {t: c.exec_driver_sql(f"SELECT count(*)::text || ':' || coalesce(md5(string_agg(x::text, '|' ORDER BY x::text)), '') FROM {t} x").scalar()
                    for t in TABLES}
    finally:
        engine.dispose()


def _npz(path, **override):
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.integers(0, 256, (12_000, 28, 28), dtype=np.uint8),
        "y_train": rng.integers(0, 10, 12_000).astype(np.uint8),
        "x_test": rng.integers(0, 256, (100, 28, 28), dtype=np.uint8),
        "y_test": rng.integers(0, 10, 100).astype(np.uint8),
    }
    arrays.update(override)
    np.savez(path, **arrays)
    return str(path)


@pytest.fixture(scope="module")
def populated(local_pg_url, mnist, tmp_path_factory):
    """A study made by `hpsearch run`, plus a minimising study, in a fresh database."""
    import optuna

    data = ["--data", mnist] if mnist else []
    out = run_cli("run", "--study", "kept", "--trials", "3", "--epochs", "1", "--train-size", "300", "--storage", local_pg_url, *data)
    assert out.returncode == 0, out.stderr
    from search.study.config import StudyConfig
    from search.study.create import CONFIG_ATTR

    minimise = optuna.create_study(storage=local_pg_url, study_name="minimise", direction="minimize")
    minimise.set_user_attr(CONFIG_ATTR, StudyConfig(epochs=1).to_dict())
    optuna.create_study(storage=local_pg_url, study_name="plain", direction="maximize")
    files = tmp_path_factory.mktemp("files")
    good = _npz(files / "other.npz")
    (files / "truncated.npz").write_bytes(open(good, "rb").read()[:5000])
    _npz(files / "shape.npz", x_train=np.zeros((12_000, 32, 32), np.uint8))
    _npz(files / "labels.npz", y_test=np.full(100, 11, np.uint8))
    _npz(files / "dtype.npz", x_train=np.full((12_000, 28, 28), "x"))
    _npz(files / "fractional.npz", x_train=np.full((12_000, 28, 28), 127.5))
    _npz(files / "big.npz", x_test=np.full((100, 28, 28), 300.0))
    _npz(files / "mixed.npz", x_train=np.full((12_000, 28, 28), 0.5, np.float32))
    _npz(files / "tiny.npz", x_train=np.zeros((500, 28, 28), np.uint8), y_train=np.zeros(500, np.uint8))
    np.save(files / "x.npy", np.zeros((10, 28, 28), np.uint8))
    (files / "junk.bin").write_bytes(b"hello, not MNIST")
    (files / "train-images-idx3-ubyte").write_bytes(bytes([0, 0, 8, 3, 0, 0, 0, 1, 0, 0, 0, 28, 0, 0, 0, 28]) + bytes(784))
    (files / "idx").mkdir()
    (files / "not-a-dir").write_text("")
    return {"url": local_pg_url, "data": data, "files": str(files)}


#: A Keras backend hpsearch supports that is not installed here (PyTorch in the test extra's
#: environment, which has JAX for the lanes), to show what a missing one says.
_MISSING_BACKEND = next((b for b in ("torch", "jax") if importlib.util.find_spec(b) is None), None)

#: Every bad input, over every command: (argv, environment, fragment of the one-line error).
#: Tokens in braces are filled from the ``populated`` fixture: {url} the database, {data} the
#: MNIST flags, {files}/NAME a prepared file. Each case is its own test (pytest-xdist spreads
#: them); each spawns `hpsearch` and checks exit 2, one line, no traceback, no password, and
#: the database and the embedded server untouched.
CASES = [
    # --- data (group 4 of issue 15 among them) ---
    ("data-missing", ["run", "--study", "kept", "--storage", "{url}", "--data", "/nonexistent/mnist.npz"], {}, "does not exist"),
    ("data-truncated", ["run", "--study", "kept", "--storage", "{url}", "--data", "{files}/truncated.npz"], {}, "not a readable npz file"),
    ("data-shape", ["run", "--study", "kept", "--storage", "{url}", "--data", "{files}/shape.npz"], {}, "x_train has shape (12000, 32, 32)"),
    ("data-labels", ["run", "--study", "kept", "--storage", "{url}", "--data", "{files}/labels.npz"], {}, "expected 0-9"),
    ("data-dtype", ["run", "--study", "kept", "--storage", "{url}", "--data", "{files}/dtype.npz"], {}, "expected uint8 pixels"),
    ("data-npy", ["run", "--study", "kept", "--storage", "{url}", "--data", "{files}/x.npy"], {}, "is a single .npy array"),
    ("data-junk", ["init", "--study", "kept", "--storage", "{url}", "--data", "{files}/junk.bin"], {}, "neither an .npz file nor a directory"),
    ("data-idx-file", ["worker", "--study", "kept", "--storage", "{url}", "--data", "{files}/train-images-idx3-ubyte"], {}, "is a single IDX file"),
    ("data-idx-dir", ["run", "--study", "kept", "--storage", "{url}", "--data", "{files}/idx"], {}, "has no train-images-idx3-ubyte"),
    ("data-fractional", ["run", "--study", "kept", "--storage", "{url}", "--data", "{files}/fractional.npz"], {}, "holds fractional values"),
    ("data-above-255", ["run", "--study", "kept", "--storage", "{url}", "--data", "{files}/big.npz"], {}, "values outside 0-255"),
    ("data-mixed-scale", ["run", "--study", "kept", "--storage", "{url}", "--data", "{files}/mixed.npz"], {}, "one of x_train and x_test is scaled"),
    ("data-env", ["run", "--study", "kept", "--storage", "{url}"], {"HPSEARCH_DATA": "/nonexistent/env.npz"}, "does not exist"),
    # --- settings against the data and the backend, before anything is written (group 1) ---
    ("train-size-beyond-data", ["run", "--study", "new1", "--storage", "{url}", "--data", "{files}/other.npz", "--train-size", "5000"], {}, "exceeds the 2000 training images"),
    ("train-size-beyond-data-test", ["init", "--study", "new1", "--storage", "{url}", "--data", "{files}/other.npz", "--train-size", "20000", "--validation", "test"], {}, "exceeds the 12000 training images"),
    ("train-size-beyond-mnist", ["run", "--study", "new1", "--storage", "{url}", "{data}", "--train-size", "60000"], {}, "larger than the 50000 training images"),
    ("holdout-too-small", ["init", "--study", "new1", "--storage", "{url}", "--data", "{files}/tiny.npz"], {}, "too few to hold out 10000"),
    ("seed-negative", ["run", "--study", "new1", "--storage", "{url}", "{data}", "--seed", "-1"], {}, "--seed -1 is outside 0-2147483647"),
    ("seed-2-32", ["init", "--study", "new1", "--storage", "{url}", "{data}", "--seed", "4294967295"], {}, "--seed 4294967295 is outside"),
    ("seed-2-31", ["worker", "--study", "new1", "--storage", "{url}", "{data}", "--seed", "2147483648"], {}, "is outside 0-2147483647"),
    ("seed-text", ["run", "--seed", "lucky"], {}, "'lucky' is not a whole number"),
    ("backend-unknown", ["run", "--study", "new1", "--storage", "{url}", "{data}"], {"KERAS_BACKEND": "numpy"}, "KERAS_BACKEND='numpy' is not a backend"),
    ("backend-typo", ["init", "--study", "new1", "--storage", "{url}", "{data}"], {"KERAS_BACKEND": "tensorfow"}, "KERAS_BACKEND='tensorfow'"),
    pytest.param("backend-missing", ["run", "--study", "new1", "--storage", "{url}", "{data}"], {"KERAS_BACKEND": _MISSING_BACKEND or "torch"},
                 f"pip install 'hpsearch[{_MISSING_BACKEND}]'",
                 marks=pytest.mark.skipif(_MISSING_BACKEND is None, reason="every Keras backend is installed here")),
    # --- storage URLs ---
    ("url-no-database", ["run", "--storage", "postgresql://u:pw@/", "{data}"], {}, "names no database"),
    ("url-mysql", ["run", "--storage", "mysql://u:pw@h/db", "{data}"], {}, "unsupported driver 'mysql'"),
    ("url-nonsense", ["query", "studies", "--storage", "::nonsense::"], {}, "not a valid storage URL"),
    ("url-closed-port", ["run", "--storage", "postgresql://u@127.0.0.1:{closed}/db", "{data}"], {}, "cannot use storage"),
    ("url-no-such-database", ["run", "--storage", "{server}/no_such_database", "{data}"], {}, "create the database"),
    ("url-port-range", ["init", "--storage", "postgresql://u:pw@127.0.0.1:70000/db", "{data}"], {}, "port 70000"),
    ("url-empty", ["run", "--storage", " ", "{data}"], {}, "--storage is empty"),
    ("url-env-bad", ["query", "studies"], {"OPTUNA_STORAGE": "mysql://u:pw@h/db"}, "OPTUNA_STORAGE uses the unsupported driver"),
    ("url-env-empty", ["init", "{data}"], {"OPTUNA_STORAGE": " "}, "OPTUNA_STORAGE is empty"),
    ("url-sqlite-memory", ["run", "--storage", "sqlite://", "{data}"], {}, "in-memory SQLite"),
    ("url-at-in-password", ["run", "--storage", "postgresql://u:p@ss-Secret@127.0.0.1/db", "{data}"], {}, "percent-encode an '@'"),
    ("url-at-in-password-query", ["query", "studies", "--storage", "postgresql://u:p@ss-Secret@127.0.0.1/db"], {}, "%40"),
    ("sqlite-missing-for-query", ["query", "trials", "--storage", "sqlite:////nonexistent/q.db"], {}, "no SQLite file"),
    ("sqlite-several-workers", ["run", "--storage", "sqlite:///{files}/w.db", "--workers", "2", "{data}"], {}, "SQLite serves one worker only"),
    # --- flag values ---
    ("lr-swapped", ["run", "--storage", "{url}", "--lr-min", "0.1", "--lr-max", "0.01", "{data}"], {}, "must be below --lr-max"),
    ("lr-min-zero", ["run", "--storage", "{url}", "--lr-min", "0", "{data}"], {}, "--lr-min must be a positive finite number"),
    ("lr-min-negative", ["run", "--storage", "{url}", "--lr-min", "-0.5", "{data}"], {}, "--lr-min must be a positive finite number"),
    ("lr-max-nan", ["run", "--storage", "{url}", "--lr-max", "nan", "{data}"], {}, "--lr-max must be a positive finite number"),
    ("lr-max-inf", ["init", "--storage", "{url}", "--lr-max", "inf", "{data}"], {}, "--lr-max must be a positive finite number"),
    ("lr-text", ["run", "--lr-min", "small"], {}, "'small' is not a number"),
    ("model-lr-min", ["init", "--storage", "{url}", "--model", str(REPO / "docs/examples/cnn.py") + ":build", "--lr-min", "0.001", "{data}"], {}, "--lr-min bounds the recipe's learning rate"),
    ("model-lr-max", ["run", "--storage", "{url}", "--model", "mypackage.models:build", "--lr-max", "0.5", "{data}"], {}, "drop --lr-max and set the range there"),
    ("data-loader-file", ["init", "--storage", "{url}", "--model", str(REPO / "docs/examples/cnn.py") + ":build", "--data", "nothere/loaders.py:load"], {},
     "--data nothere/loaders.py:load: nothere/loaders.py does not exist: check the path"),
    ("data-loader-module", ["init", "--storage", "{url}", "--model", str(REPO / "docs/examples/cnn.py") + ":build", "--data", "no_such_loaders:load"], {},
     "--data no_such_loaders:load: no module 'no_such_loaders' can be imported here"),
    ("trials-zero", ["init", "--storage", "{url}", "--trials", "0", "{data}"], {}, "--trials must be a whole number of at least 1"),
    ("trials-negative", ["run", "--storage", "{url}", "--trials", "-3", "{data}"], {}, "--trials must be a whole number of at least 1"),
    ("trials-text", ["worker", "--trials", "many"], {}, "'many' is not a whole number"),
    ("epochs-zero", ["worker", "--storage", "{url}", "--epochs", "0", "{data}"], {}, "--epochs must be a whole number of at least 1"),
    ("epochs-fraction", ["run", "--epochs", "1.5"], {}, "'1.5' is not a whole number"),
    ("batch-negative", ["run", "--storage", "{url}", "--batch-size", "-8", "{data}"], {}, "--batch-size must be"),
    ("train-size-zero", ["init", "--storage", "{url}", "--train-size", "0", "{data}"], {}, "--train-size must be a whole number of at least 1"),
    ("workers-zero", ["run", "--storage", "{url}", "--workers", "0", "{data}"], {}, "--workers must be"),
    ("per-gpu-zero", ["launch", "--storage", "{url}", "--per-gpu", "0", "{data}"], {}, "--per-gpu must be"),
    ("max-failures-zero", ["worker", "--storage", "{url}", "--max-failures", "0", "{data}"], {}, "--max-failures must be a whole number of at least 1"),
    ("epoch-budget-zero", ["run", "--storage", "{url}", "--epoch-budget", "0", "{data}"], {}, "--epoch-budget must be a whole number of at least 1"),
    ("max-restarts-negative", ["launch", "--storage", "{url}", "--max-restarts", "-1", "{data}"], {}, "--max-restarts must be a whole number of at least 0"),
    ("pruner-unknown", ["run", "--storage", "{url}", "--pruner", "sha", "{data}"], {}, "--pruner 'sha' is unknown: use one of asha, median, hyperband, none"),
    ("sampler-unknown", ["run", "--storage", "{url}", "--sampler", "cmaes", "{data}"], {}, "--sampler 'cmaes' is unknown"),
    ("validation-unknown", ["init", "--validation", "kfold"], {}, "invalid choice: 'kfold'"),
    ("format-run", ["run", "--storage", "{url}", "--format", "yaml", "{data}"], {}, "invalid choice: 'yaml'"),
    ("format-query", ["query", "trials", "--study", "kept", "--storage", "{url}", "--format", "xml"], {}, "invalid choice: 'xml'"),
    ("study-empty", ["run", "--study", " ", "--storage", "{url}", "{data}"], {}, "--study is empty"),
    ("study-too-long", ["init", "--study", "s" * 600, "--storage", "{url}", "{data}"], {}, "--study is 600 characters long"),
    ("unknown-flag", ["run", "--speed", "3"], {}, "unrecognized arguments: --speed"),
    ("abbreviated-flag", ["run", "--epoch", "3"], {}, "unrecognized arguments: --epoch 3"),
    ("unknown-command", ["train"], {}, "invalid choice: 'train'"),
    ("no-command", [], {}, "required: COMMAND"),
    # --- environment variables ---
    ("env-retry-text", ["run", "--study", "kept", "--storage", "{url}", "{data}"], {"HPSEARCH_DB_RETRY_S": "soon"}, "HPSEARCH_DB_RETRY_S='soon' is not a number"),
    ("env-grace-below-heartbeat", ["run", "--study", "kept", "--storage", "{url}", "{data}"], {"HPSEARCH_HEARTBEAT_S": "60", "HPSEARCH_GRACE_S": "30"}, "must exceed HPSEARCH_HEARTBEAT_S"),
    ("env-heartbeat-negative", ["worker", "--study", "kept", "--storage", "{url}", "{data}"], {"HPSEARCH_HEARTBEAT_S": "-1"}, "HPSEARCH_HEARTBEAT_S='-1' must be a positive number"),
    ("env-grace-text", ["init", "--study", "kept", "--storage", "{url}", "{data}"], {"HPSEARCH_GRACE_S": "two minutes"}, "HPSEARCH_GRACE_S='two minutes' is not a number"),
    # --- an existing study: contradicting flags, other data, a study hpsearch did not make ---
    ("contradict-epochs", ["run", "--study", "kept", "--storage", "{url}", "--epochs", "2", "{data}"], {}, "contradicts this study's stored --epochs 1"),
    ("contradict-batch", ["worker", "--study", "kept", "--storage", "{url}", "--batch-size", "64", "{data}"], {}, "--batch-size 64 contradicts"),
    ("contradict-train-size", ["init", "--study", "kept", "--storage", "{url}", "--train-size", "400", "{data}"], {}, "--train-size 400 contradicts"),
    ("contradict-validation", ["run", "--study", "kept", "--storage", "{url}", "--validation", "test", "{data}"], {}, "--validation test contradicts"),
    ("contradict-lr-min", ["run", "--study", "kept", "--storage", "{url}", "--lr-min", "0.001", "{data}"], {}, "--lr-min 0.001 contradicts"),
    ("contradict-lr-max", ["worker", "--study", "kept", "--storage", "{url}", "--lr-max", "0.5", "{data}"], {}, "--lr-max 0.5 contradicts"),
    ("contradict-pruner", ["launch", "--study", "kept", "--storage", "{url}", "--pruner", "none", "{data}"], {}, "--pruner none contradicts"),
    ("contradict-sampler", ["run", "--study", "kept", "--storage", "{url}", "--sampler", "random", "{data}"], {}, "--sampler random contradicts"),
    ("contradict-seed", ["init", "--study", "kept", "--storage", "{url}", "--seed", "7", "{data}"], {}, "--seed 7 contradicts"),
    ("other-data", ["run", "--study", "kept", "--storage", "{url}", "--data", "{files}/other.npz"], {}, "differs from the data study 'kept' was created with"),
    ("minimising-study", ["run", "--study", "minimise", "--storage", "{url}", "{data}"], {}, "does not maximise"),
    ("not-hpsearch-study", ["worker", "--study", "plain", "--storage", "{url}", "{data}"], {}, "was not created by hpsearch"),
    # --- queries ---
    ("query-trials-no-study", ["query", "trials", "--study", "nope", "--storage", "{url}"], {}, "kept"),
    ("query-best-no-study", ["query", "best", "--study", "nope", "--storage", "{url}"], {}, "no study"),
    ("query-top-no-study", ["query", "top", "--study", "nope", "--storage", "{url}"], {}, "nope"),
    ("query-curves-no-study", ["query", "curves", "--study", "nope", "--storage", "{url}"], {}, "nope"),
    ("query-summary-no-study", ["query", "summary", "--study", "nope", "--storage", "{url}"], {}, "nope"),
    ("query-state", ["query", "trials", "--study", "kept", "--storage", "{url}", "--state", "exploded"], {}, "exploded"),
    ("query-by", ["query", "summary", "--study", "kept", "--storage", "{url}", "--by", "colour"], {}, "invalid choice: 'colour'"),
    ("query-numbers", ["query", "curves", "--study", "kept", "--storage", "{url}", "--numbers", "one,two"], {}, "--numbers"),
    ("query-top-negative", ["query", "top", "--study", "kept", "--storage", "{url}", "-k", "-2"], {}, "-2"),
    ("query-unknown", ["query", "everything", "--storage", "{url}"], {}, "invalid choice: 'everything'"),
    ("query-param-form", ["query", "trials", "--study", "kept", "--storage", "{url}", "--param", "units"], {}, "is not NAME=VALUE or NAME=LOW:HIGH"),
    ("query-param-no-bound", ["query", "trials", "--study", "kept", "--storage", "{url}", "--param", "learning_rate=:"], {}, "has no bound"),
    ("query-param-unknown", ["query", "trials", "--study", "kept", "--storage", "{url}", "--param", "units=3"], {},
     "study 'kept' has no parameter 'units' (its parameters: learning_rate)"),
    ("query-param-twice", ["query", "trials", "--study", "kept", "--storage", "{url}", "--param", "learning_rate=0.001:", "--param",
                           "learning_rate=:0.1"], {}, "--param learning_rate is given twice"),
    ("query-sort", ["query", "trials", "--study", "kept", "--storage", "{url}", "--sort", "colour"], {}, "cannot sort by 'colour'"),
    ("query-sort-param", ["query", "trials", "--study", "kept", "--storage", "{url}", "--sort", "param_units"], {}, "has no parameter 'units'"),
    # --- export: refused before anything trains or is written ---
    ("export-out-suffix", ["export", "--study", "kept", "--storage", "{url}", "--out", "{tmp}/m.h5", "{data}"], {}, "give a name ending in .keras"),
    ("export-out-folder", ["export", "--study", "kept", "--storage", "{url}", "--out", "/nonexistent/dir/m.keras", "{data}"], {}, "the folder /nonexistent/dir does not exist"),
    ("export-no-study", ["export", "--study", "nope", "--storage", "{url}", "--out", "{tmp}/m.keras", "{data}"], {}, "study 'nope' is not in"),
    ("export-no-trial", ["export", "--study", "kept", "--storage", "{url}", "--trial", "99", "--out", "{tmp}/m.keras", "{data}"], {}, "has no trial 99"),
    ("export-no-complete-trial", ["export", "--study", "minimise", "--storage", "{url}", "--out", "{tmp}/m.keras", "{data}"], {}, "has no complete trial yet"),
    ("export-not-hpsearch", ["export", "--study", "plain", "--storage", "{url}", "--out", "{tmp}/m.keras", "{data}"], {}, "was not created by hpsearch"),
    ("export-other-data", ["export", "--study", "kept", "--storage", "{url}", "--out", "{tmp}/m.keras", "--data", "{files}/other.npz"], {}, "differs from the data study 'kept' was trained on"),
    ("export-other-model", ["export", "--study", "kept", "--storage", "{url}", "--out", "{tmp}/m.keras", "--model", "mypackage.models:build", "{data}"], {}, "is not study 'kept''s model (recipe)"),
    # --- machines, ports and files ---
    ("gpu-absent", ["worker", "--study", "kept", "--storage", "{url}", "--gpu", "7", "--epochs", "1", "--train-size", "300", "{data}"], {}, "--gpu 7"),
    ("gpu-name", ["worker", "--study", "kept", "--storage", "{url}", "--gpu", "first", "{data}"], {}, "is not a GPU index"),
    ("gpus-without-nvidia-smi", ["launch", "--study", "kept", "--storage", "{url}", "--gpus", "0", "{data}"], {"PATH": "/usr/bin:/bin"}, "--gpus"),
    ("dashboard-port", ["dashboard", "--storage", "{url}", "--port", "70000"], {}, "70000"),
    ("dashboard-host", ["dashboard", "--storage", "{url}", "--host", "999.1.1.1", "--port", "0"], {}, "cannot listen on --host 999.1.1.1"),
    ("landscape-no-study", ["landscape", "--study", "nope", "--storage", "{url}", "--out", "{tmp}/l.html"], {}, "nope"),
    ("landscape-out-missing-folder", ["landscape", "--study", "kept", "--storage", "{url}", "--out", "/nonexistent/dir/l.html"], {}, "the folder /nonexistent/dir does not exist"),
    ("landscape-out-directory", ["landscape", "--study", "kept", "--storage", "{url}", "--out", "{tmp}"], {}, "is a directory"),
    # --- the embedded server's home and db actions ---
    ("db-home-is-a-file", ["db", "url"], {"HPSEARCH_HOME": "{files}/not-a-dir/sub"}, "cannot write to HPSEARCH_HOME"),
    ("db-home-shell-quote", ["db", "start"], {"HPSEARCH_HOME": '{tmp}/say "hi"'}, "HPSEARCH_HOME"),
    ("db-unknown-action", ["db", "restart"], {}, "invalid choice: 'restart'"),
    ("db-views-sqlite", ["db", "views", "--storage", "sqlite:///{files}/v.db"], {}, "PostgreSQL"),
]


def _fill(value: str, p: dict, tmp) -> list[str]:
    if value == "{data}":
        return list(p["data"])
    return [value.format(url=p["url"], files=p["files"], closed=closed_port(), server=p["url"].rsplit("/", 1)[0], tmp=tmp)]


def _case_id(case):
    return case.values[0] if hasattr(case, "values") else case[0]


@pytest.mark.parametrize("name, argv, env, fragment", CASES, ids=[_case_id(c) for c in CASES])
def test_bad_input(populated, tmp_path, name, argv, env, fragment):
    p = populated
    argv = [a for v in argv for a in _fill(v, p, tmp_path)]
    env = {"HPSEARCH_HOME": str(tmp_path / "home"), **{k: _fill(v, p, tmp_path)[0] for k, v in env.items()}}
    before = _snapshot(p["url"])
    out = run_cli(*argv, env=env, cwd=tmp_path, timeout=120)
    lines = out.stderr.strip().splitlines()
    assert "Traceback" not in out.stderr, out.stderr[-2000:]
    assert out.returncode == 2, f"exit {out.returncode}: {out.stderr[-600:]}"
    assert len(lines) == 1, f"{len(lines)} lines on stderr: {out.stderr[-600:]}"
    assert fragment in out.stderr, out.stderr
    for secret in ("pw@", "u:pw", "Secret"):
        assert secret not in out.stderr, f"password shown: {out.stderr}"
    assert _snapshot(p["url"]) == before, "a bad input changed the study data"
    assert not (tmp_path / "home" / "pgdata").exists(), "a bad input started the embedded server"


def test_there_are_enough_cases():
    assert len(CASES) >= 80
    assert len({_case_id(c) for c in CASES}) == len(CASES)


def test_a_refused_setting_writes_nothing_and_the_corrected_command_works(populated, tmp_path):
    """Issue 15: a --seed or --train-size refused after the study was written left a study that
    refused the corrected flag as a contradiction."""
    p, env = populated, {"HPSEARCH_HOME": str(tmp_path / "home")}
    for bad, good in ((["--seed", "4294967295"], ["--seed", "5"]), (["--train-size", "5000"], ["--train-size", "1500"])):
        base = ["init", "--study", f"fixed-{bad[0][2:]}", "--storage", p["url"], "--data", p["files"] + "/other.npz"]
        refused = run_cli(*base, *bad, env=env, cwd=tmp_path)
        assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
        corrected = run_cli(*base, *good, env=env, cwd=tmp_path)
        assert corrected.returncode == 0 and "created" in corrected.stdout, corrected.stderr


def test_damaged_schema_is_refused_and_nothing_is_recreated(mnist, tmp_path):
    """Issue 15: with trial_values dropped, `run` let Optuna recreate it empty."""
    import optuna

    from tests.conftest import LOCAL_PG_ADMIN, _local_pg_answers

    if _local_pg_answers():
        import uuid

        name = f"hps_{uuid.uuid4().hex[:12]}"
        admin = sqlalchemy.create_engine(LOCAL_PG_ADMIN, isolation_level="AUTOCOMMIT")
        with admin.connect() as c:
            c.exec_driver_sql(f'CREATE DATABASE "{name}"')
        url = f"postgresql+psycopg2://postgres@127.0.0.1:5432/{name}"
    else:  # no server on the machine: the embedded one
        from storage import embedded_url

        admin, name = None, None
        url = embedded_url(tmp_path / "pg")
    try:
        study = optuna.create_study(storage=url, study_name="damaged", direction="maximize")
        study.enqueue_trial({"x": 1.0})
        engine = sqlalchemy.create_engine(url)
        with engine.begin() as c:
            c.exec_driver_sql("DROP TABLE trial_values")
        data = ["--data", mnist] if mnist else []
        for argv in (["run", "--study", "damaged", *data], ["query", "trials", "--study", "damaged"], ["landscape", "--study", "damaged", "--out", str(tmp_path / "l.html")]):
            out = run_cli(*argv, "--storage", url, env={"HPSEARCH_HOME": str(tmp_path / "home")}, cwd=tmp_path)
            assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
            assert "table trial_values is missing" in out.stderr and "restore the database from a backup" in out.stderr
        assert not sqlalchemy.inspect(engine).has_table("trial_values"), "the missing table was recreated"
        with engine.begin() as c:
            c.exec_driver_sql("CREATE TABLE trial_values (x int)")
            c.exec_driver_sql("UPDATE alembic_version SET version_num = 'v99.0.0.z'")
        out = run_cli("init", "--study", "damaged", "--storage", url, *data, env={"HPSEARCH_HOME": str(tmp_path / "home")}, cwd=tmp_path)
        assert out.returncode == 2 and "version 'v99.0.0.z', which Optuna" in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
        engine.dispose()
    finally:
        if admin is not None:
            with admin.connect() as c:
                c.exec_driver_sql(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'")
                c.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}"')
            admin.dispose()
        else:
            from storage import stop_embedded

            stop_embedded(tmp_path / "pg")


def test_a_second_db_start_reports_the_running_server(tmp_path):
    from storage import stop_embedded

    env = {"HPSEARCH_HOME": str(tmp_path / "h")}
    try:
        first = run_cli("db", "start", env=env, cwd=tmp_path)
        second = run_cli("db", "start", env=env, cwd=tmp_path)
    finally:
        stop_embedded(tmp_path / "h")
    assert first.returncode == 0 and "started" in first.stdout
    assert second.returncode == 0 and "already running" in second.stdout
    assert first.stdout.split(": ", 1)[1] == second.stdout.split(": ", 1)[1]


def test_a_full_home_is_refused_before_postgresql_starts(tmp_path):
    """HPSEARCH_HOME on a 1 MiB file system: one line, exit 2, no half-made data directory."""
    import subprocess

    mnt = tmp_path / "full"
    mnt.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({mounted.stderr.strip()}): needs root")
    try:
        out = run_cli("db", "start", env={"HPSEARCH_HOME": str(mnt / "home")}, cwd=tmp_path)
        assert out.returncode == 2, out.stderr
        assert "has 1 MiB free" in out.stderr and "needs at least 64 MiB" in out.stderr
        assert len(out.stderr.strip().splitlines()) == 1
        assert not (mnt / "home" / "pgdata").exists()
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)
