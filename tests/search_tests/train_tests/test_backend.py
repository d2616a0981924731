"""search.train.backend owns the backend's set-up; nothing else starts it, and nothing starts it early."""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest

from search.train.backend import LIBRARY_DEFAULTS, check_backend, library_defaults, setting
from search.errors import ConfigError
from tests.conftest import REPO


def test_importing_the_worker_modules_starts_no_backend():
    # A worker sets CUDA_VISIBLE_DEVICES after these imports and before the backend starts.
    code = (
        "import sys, search.train.backend, search.fleet.outcome, search.fleet.worker, search.train.objective, search.train.lanes, search.train.data, "
        "search.train.model, search.fleet.launch; print(','.join(m for m in ('keras', 'tensorflow', 'jax', 'torch') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == ""


def _imports(path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_only_the_backend_module_imports_a_backend():
    found = {str(p.relative_to(REPO)): sorted(_imports(p) & {"tensorflow", "jax", "torch"}) for p in sorted((REPO / "search").rglob("*.py"))}
    assert len(found) > 30  # every module of every sub-package was scanned
    # and the lanes of a user's model, which are JAX programs by design (jax.jit over Keras's
    # stateless train_step; refused on other backends in one line, docs/lanes.md)
    assert {name: libs for name, libs in found.items() if libs} == {
        "search/train/backend.py": ["jax", "tensorflow", "torch"], "search/train/modellanes.py": ["jax"]}


def _environ_reads(path) -> list[int]:
    """Lines of ``path`` that read the environment: ``os.environ.get``, ``os.environ[...]`` loads, ``os.getenv``."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            target = ast.unparse(node.func)
            if target in ("os.environ.get", "os.getenv"):
                lines.append(node.lineno)
        elif isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load) and ast.unparse(node.value) == "os.environ":
            lines.append(node.lineno)
    return lines


#: search/cli/main.py is being turned into a command registry on another branch; its raw reads of
#: OPTUNA_STORAGE go when that lands.
_NOT_YET: set[str] = set()


def test_environment_variables_are_read_through_the_registry_only():
    readers = {"search/env.py", "storage/settings.py"}  # the two registries' readers
    found, scanned = {}, 0
    for package in ("search", "storage"):
        for path in sorted((REPO / package).rglob("*.py")):
            scanned += 1
            name = str(path.relative_to(REPO))
            if name not in readers | _NOT_YET and _environ_reads(path):
                found[name] = _environ_reads(path)
    assert scanned > 50
    assert found == {}


def test_the_scan_finds_a_raw_read(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("import os\na = os.environ.get('X')\nb = os.environ['Y']\nos.environ['Z'] = '1'\nc = os.getenv('W')\n")
    assert _environ_reads(probe) == [2, 3, 5]


def test_library_defaults_fill_in_what_the_user_did_not_set():
    env = library_defaults({"TF_CPP_MIN_LOG_LEVEL": "0"})
    assert env == {**LIBRARY_DEFAULTS, "TF_CPP_MIN_LOG_LEVEL": "0"}


def test_keras_backend_must_be_one_hpsearch_trains_with(monkeypatch, tmp_path):
    monkeypatch.delenv("KERAS_BACKEND", raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))  # no keras.json there
    assert check_backend() == "tensorflow"
    monkeypatch.setenv("KERAS_BACKEND", "theano")
    with pytest.raises(ConfigError, match="KERAS_BACKEND='theano' is not a backend hpsearch trains with"):
        check_backend()


def test_the_backend_is_read_as_keras_reads_it(monkeypatch, tmp_path):
    # Keras's documentation switches backends in keras.json; KERAS_BACKEND beats it
    monkeypatch.delenv("KERAS_BACKEND", raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    config = tmp_path / "keras.json"
    assert setting() == "tensorflow"  # no file: Keras's default
    config.write_text('{"floatx": "float32", "backend": "jax"}')
    assert setting() == "jax"
    monkeypatch.setenv("KERAS_BACKEND", "torch")
    assert setting() == "torch"
    monkeypatch.delenv("KERAS_BACKEND")
    config.write_text('{"backend": "theano"}')
    with pytest.raises(ConfigError, match=r"the backend of .*keras.json, 'theano', is not a backend hpsearch trains with"):
        check_backend()
    config.write_text("{not json")  # Keras ignores it and starts TensorFlow
    assert setting() == "tensorflow"
    config.write_text('["jax"]')  # Keras fails on it as it starts
    with pytest.raises(ConfigError, match="is not Keras's configuration"):
        setting()


def _started(env: dict, code: str) -> str:
    """What ``code`` prints after configure_backend() in a fresh process with ``env``."""
    import os

    program = f"import sys\nfrom search.train.backend import configure_backend\nconfigure_backend()\n{code}"
    out = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, cwd=REPO, env={**os.environ, **env}, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip()


def test_tensorflow_starts_without_jax_which_stays_importable(tmp_path):
    code = "import keras\nprint(keras.backend.backend(), 'jax' in sys.modules)\nimport jax\nprint(jax.numpy.add(1, 2))"
    assert _started({"KERAS_BACKEND": "tensorflow"}, code).splitlines() == ["tensorflow False", "3"]
    # keras.json's jax: the guard steps aside and Keras starts JAX
    (tmp_path / "keras.json").write_text('{"backend": "jax"}')
    env = {"KERAS_BACKEND": "", "KERAS_HOME": str(tmp_path)}
    assert _started(env, "import keras\nprint(keras.backend.backend(), 'jax' in sys.modules)") == "jax True"
