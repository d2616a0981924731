"""search.train.usermodel without training: what is refused before the backend starts."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO

GOOD = "import keras\n\ndef build(hp):\n    return keras.Sequential()\n"


def _check_in_a_fresh_python(tmp_path, sources: dict[str, str], spec_name: str = "build") -> list[str]:
    """Run ``check_source`` on each file of ``sources`` in a fresh interpreter; its lines: each
    refusal (or "ok"), then whether Keras and TensorFlow were imported."""
    specs = []
    for name, text in sources.items():
        (tmp_path / name).write_text(text)
        specs.append(f"{tmp_path / name}:{spec_name}")
    code = (
        "import sys\n"
        "from search.errors import ConfigError\n"
        "from search.train.usermodel import check_source, parse_spec\n"
        f"for spec in {specs!r}:\n"
        "    try:\n"
        "        check_source(parse_spec(spec))\n"
        "        print('ok')\n"
        "    except ConfigError as e:\n"
        "        print(e)\n"
        "print('keras' in sys.modules, 'tensorflow' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()


def test_a_syntax_error_is_refused_before_keras_is_imported(tmp_path):
    """`hpsearch run --model FILE:NAME` reads the file first (search.cli.commands.study's
    ``_prepare_model``): a syntax error costs no backend import, seconds on a CPU."""
    bad = tmp_path / "bad.py"
    lines = _check_in_a_fresh_python(tmp_path, {"good.py": GOOD, "bad.py": "import keras\n\ndef build(hp)\n    return 1\n"})
    assert lines == ["ok", f"--model '{bad}:build': syntax error in {bad}, line 3: expected ':'", "False False"]


def test_a_name_the_file_never_defines_is_refused_before_keras_is_imported(tmp_path):
    """A NAME the file does not define is refused with what it does define, as the import
    would (test_your_model's "missing name" case runs the whole command)."""
    path = tmp_path / "other.py"
    lines = _check_in_a_fresh_python(tmp_path, {"other.py": "import keras\nfrom os import getcwd as cwd\n\ndef other(hp):\n    pass\n\nclass Tuned:\n    pass\n"})
    assert lines == [f"--model '{path}:build': {path} has no 'build' (its callables: Tuned, cwd, other)", "False False"]


def test_a_misspelt_name_is_answered_with_the_closest_one_defined_under_an_if_included(tmp_path):
    """The guide's file defines its HyperModel under ``if keras_tuner is not None:``: it is
    among the names listed, and a misspelling gets the closest name."""
    guide = tmp_path / "guide.py"
    lines = _check_in_a_fresh_python(tmp_path, {"guide.py": (REPO / "docs" / "examples" / "getting_started.py").read_text()}, "MyHyperModle")
    assert lines == [f"--model '{guide}:MyHyperModle': {guide} has no 'MyHyperModle' (did you mean 'MyHyperModel'? "
                     "its callables: MyHyperModel, build_model, layers)", "False False"]


def test_module_specs_and_loader_files_are_found_from_the_current_directory(tmp_path):
    """The installed ``hpsearch`` script, unlike ``python -m``, has no current directory on
    sys.path (``python -P`` starts as it does): ``--model mymodels:build`` and ``--data
    loaders:load`` run in the project's folder find its modules all the same, and ``--data``
    takes a loader file as ``--model`` takes a builder file."""
    loader = "import numpy as np\ndef load():\n    x = np.zeros((6, 2))\n    y = np.arange(len(x))\n    return (x, y), (x[:2], y[:2])\n"
    (tmp_path / "mymodels.py").write_text(GOOD)
    (tmp_path / "loaders.py").write_text(loader)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "more.py").write_text("import keras\n" + loader.replace("(6, 2)", "(9, 3)"))
    code = (
        "import os, sys\n"
        "assert os.getcwd() not in sys.path and '' not in sys.path, sys.path\n"
        "from search.train.usermodel import check_source, digest, parse_spec\n"
        "spec = parse_spec('mymodels:build')\n"
        "check_source(spec)\n"
        "print(len(digest(spec)))\n"
        "from search.train.data import read_arrays\n"
        "print(read_arrays('data/more.py:load').x_train.shape, read_arrays('loaders:load').x_train.shape)\n"
        "print('keras' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-P", "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    # the backend was started (quietly) before the loaders ran: TensorFlow's start-up lines,
    # printed by a loader that imports Keras, are held back as for a model's file
    assert out.stdout.splitlines() == ["16", "(9, 3) (6, 2)", "True"]
    assert "cuda" not in out.stderr.lower() and "absl" not in out.stderr, out.stderr


@pytest.mark.parametrize("source", [
    "from keras import *\n",                                  # a star import may define it
    "globals()['build'] = lambda hp: None\n",                 # so may globals()
    "def __getattr__(name):\n    return lambda hp: None\n",   # and a module __getattr__
    "try:\n    from m import build\nexcept ImportError:\n    build = None\n",  # bound in a try
    "if True:\n    def build(hp):\n        pass\n",           # bound under an if
    "class M:\n    pass\n\nbuild = M()\n",                    # an instance
    "for build in [None]:\n    pass\n",                       # a loop variable
    "import sys\nsys.modules[__name__].build = lambda hp: None\n",  # an attribute of the module
    "NAMES = ['build']\n",                                     # a string, bound by who knows what
])
def test_a_name_the_parser_cannot_rule_out_is_left_to_the_import(tmp_path, source):
    assert _check_in_a_fresh_python(tmp_path, {"m.py": source}) == ["ok", "False False"]


@pytest.mark.parametrize("text, study", [
    (None, "mnist-learning-rate"),
    ("recipe", "mnist-learning-rate"),
    ("docs/examples/getting_started.py:build_model", "getting_started.build_model"),
    ("/abs/path/models/cnn.py:MyHyperModel", "cnn.MyHyperModel"),
    ("mypackage.models:build", "mypackage.models.build"),
])
def test_a_study_without_study_is_named_after_its_model(text, study):
    """Without --study, a user's model gets a study of its own, so trying one after the recipe's
    quick start is not refused as a contradiction of the recipe's study."""
    from search.study.config import default_study
    from search.train.usermodel import parse_spec

    assert default_study(None if text is None else parse_spec(text)) == study
