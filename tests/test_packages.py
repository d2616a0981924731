"""The two import packages come from this repository and keep their dependency direction."""

import subprocess
import sys
import time

from tests.conftest import REPO


def test_packages_import_from_this_repo():
    import search
    import storage

    assert search.__file__.startswith(str(REPO / "search"))
    assert storage.__file__.startswith(str(REPO / "storage"))


def test_storage_and_cli_help_do_not_import_keras():
    code = (
        "import sys, storage, search, search.cli; "
        "bad = [m for m in ('keras', 'tensorflow', 'jax', 'torch') if m in sys.modules]; "
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == ""


def test_help_starts_quickly():
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "search", "--help"], capture_output=True, text=True, cwd=REPO)
    elapsed = time.perf_counter() - start
    assert out.returncode == 0
    assert "run" in out.stdout and "worker" in out.stdout
    # "well under a second" on this 2-core machine, interpreter start included
    assert elapsed < 1.5, elapsed
