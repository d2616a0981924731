"""The two import packages come from this repository and keep their dependency direction."""

import subprocess
import sys

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
    """Measured in the CPU seconds the command used, not wall time: the suite runs in parallel
    workers, and beside a test that trains, wall time measured the other test (2.1 s, once)."""
    import resource

    def children_cpu() -> float:
        r = resource.getrusage(resource.RUSAGE_CHILDREN)
        return r.ru_utime + r.ru_stime

    before = children_cpu()
    out = subprocess.run([sys.executable, "-m", "search", "--help"], capture_output=True, text=True, cwd=REPO)
    cpu = children_cpu() - before
    assert out.returncode == 0
    assert "run" in out.stdout and "worker" in out.stdout
    # well under a second of CPU on this 2-core machine, interpreter start included (importing
    # TensorFlow alone takes several)
    assert cpu < 1.0, cpu


def _imports(package: str) -> dict[str, set[str]]:
    """Every module each file of ``package`` imports, at any depth (function-level too)."""
    import ast

    found = {}
    for path in sorted((REPO / package).rglob("*.py")):
        names = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module)
        found[str(path.relative_to(REPO))] = names
    return found


def test_storage_never_imports_search():
    bad = {f: sorted(n for n in names if n == "search" or n.startswith("search.")) for f, names in _imports("storage").items()}
    assert {f: n for f, n in bad.items() if n} == {}


def test_search_never_imports_sqlalchemy():
    """Every database call of search goes through storage, which translates driver errors."""
    bad = {f: sorted(n for n in names if n.split(".")[0] in ("sqlalchemy", "psycopg2")) for f, names in _imports("search").items()}
    assert {f: n for f, n in bad.items() if n} == {}


def test_storage_never_imports_a_deep_learning_framework():
    """storage is the database's side: it reads and writes trials, it never builds a model."""
    frameworks = ("tensorflow", "keras", "jax", "torch")
    bad = {f: sorted(n for n in names if n.split(".")[0] in frameworks) for f, names in _imports("storage").items()}
    assert {f: n for f, n in bad.items() if n} == {}


def test_every_storage_module_imported_loads_neither_search_nor_a_framework():
    """The same rules at run time, so an import the scan cannot see (importlib, a dependency
    that imports search or Keras) fails too: import every module of storage, then look."""
    code = (
        "import importlib, pkgutil, sys, storage\n"
        "mods = [m.name for m in pkgutil.walk_packages(storage.__path__, 'storage.')]\n"
        "[importlib.import_module(m) for m in mods]\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('search', 'tensorflow', 'keras', 'jax', 'torch'))\n"
        "print(len(mods)); print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    count, bad = out.stdout.splitlines()
    assert int(count) == len(list((REPO / "storage").glob("*.py"))) - 1  # every module but __init__
    assert bad == ""


def test_the_landscape_figures_read_and_write_nothing():
    """search.figures is pure (curves in, figures out): it imports no storage, no Optuna, no
    optuna-dashboard, and none of the landscape's modules that read, store or write."""
    names = _imports("search")["search/figures.py"]
    forbidden = ("storage", "optuna", "optuna_dashboard", "sqlalchemy", "psycopg2", "search.curves", "search.refresh",
                 "search.landscape", "os", "pathlib", "shutil", "subprocess")
    assert sorted(n for n in names if any(n == f or n.startswith(f + ".") for f in forbidden)) == []
    assert "numpy" in names  # the scan read the file


def test_the_import_scan_sees_function_level_imports():
    # The two tests above must be able to fail: this file imports subprocess at the top and
    # search/storage inside functions, and the scan finds both kinds.
    import ast

    tree = ast.parse((REPO / "tests" / "test_packages.py").read_text())
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert {"subprocess", "search", "storage", "ast"} <= names
