"""search.train.usermodel without training: what is refused before the backend starts."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO


def test_a_syntax_error_is_refused_before_keras_is_imported(tmp_path):
    """`hpsearch run --model FILE:NAME` compiles the file first (search.cli.commands.study's
    ``_prepare_model``): a syntax error costs no backend import, seconds on a CPU."""
    bad, good = tmp_path / "bad.py", tmp_path / "good.py"
    bad.write_text("import keras\n\ndef build(hp)\n    return 1\n")
    good.write_text("import keras\n\ndef build(hp):\n    return keras.Sequential()\n")
    code = (
        "import sys\n"
        "from search.errors import ConfigError\n"
        "from search.train.usermodel import check_syntax, parse_spec\n"
        f"check_syntax(parse_spec({str(good) + ':build'!r}))\n"
        "try:\n"
        f"    check_syntax(parse_spec({str(bad) + ':build'!r}))\n"
        "except ConfigError as e:\n"
        "    print(e)\n"
        "print('keras' in sys.modules, 'tensorflow' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [f"--model '{bad}:build': syntax error in {bad}, line 3: expected ':'", "False False"]
