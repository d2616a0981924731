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
        "import sys, storage, search, search.cli.main; "
        "bad = [m for m in ('keras', 'tensorflow', 'jax', 'torch') if m in sys.modules]; "
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == ""


def test_the_parser_imports_no_database_or_numerical_library():
    """Building every command's parser (what ``--help`` and a mistyped flag need) imports neither
    SQLAlchemy nor Optuna nor NumPy: storage/__init__ imports its names on first use, and the
    defaults the help shows live in light modules (search.fleet.limits, storage.rows). Importing
    SQLAlchemy made such a process take 0.45 s instead of 0.15 s."""
    code = (
        "import sys, search.cli.main as cli; cli.build_parser(); "
        "print(','.join(m for m in ('sqlalchemy', 'optuna', 'numpy', 'psycopg2') if m in sys.modules))"
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
    """search.landscape.figures is pure (curves in, figures out): it imports no storage, no Optuna, no
    optuna-dashboard, and none of the landscape's modules that read, store or write."""
    names = _imports("search")["search/landscape/figures.py"]
    forbidden = ("storage", "optuna", "optuna_dashboard", "sqlalchemy", "psycopg2", "search.landscape.curves", "search.landscape.refresh",
                 "search.landscape.export", "os", "pathlib", "shutil", "subprocess")
    assert sorted(n for n in names if any(n == f or n.startswith(f + ".") for f in forbidden)) == []
    assert "numpy" in names  # the scan read the file


def test_the_import_scan_sees_function_level_imports():
    # The two tests above must be able to fail: this file imports subprocess at the top and
    # search/storage inside functions, and the scan finds both kinds.
    import ast

    tree = ast.parse((REPO / "tests" / "test_packages.py").read_text())
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert {"subprocess", "search", "storage", "ast"} <= names


# --- the layout (issue 22) -------------------------------------------------------------------

#: search's sub-packages from the bottom up: each may import only those before it (and the
#: base modules search.errors and search.env, which import none of them).
LAYERS = ("study", "train", "landscape", "fleet", "cli")


def _module_of(path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _module_graph() -> dict[str, set[str]]:
    """Every module of search/ and storage/ -> the modules of either it imports, at any depth.

    ``from pkg import name`` counts as importing ``pkg.name`` where that is a module, else
    ``pkg``; importing ``a.b.c`` also runs the ``__init__`` of ``a`` and ``a.b``, which count.
    """
    import ast

    modules = {_module_of(p): p for d in ("search", "storage") for p in (REPO / d).rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            found = []
            if isinstance(node, ast.Import):
                found = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module for a in node.names]
            for target in found:
                parts = target.split(".")
                for i in range(1, len(parts) + 1):
                    prefix = ".".join(parts[:i])
                    if prefix in modules and prefix != name and not name.startswith(prefix + "."):
                        targets.add(prefix)
        graph[name] = targets
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _layer(module: str) -> int | None:
    parts = module.split(".")
    if parts[0] != "search" or len(parts) < 2:
        return None
    if parts[1] in LAYERS:
        return LAYERS.index(parts[1]) + 1
    return 0 if parts[1] in ("errors", "env") else None


def test_no_import_circle_in_search_or_storage():
    assert _cycles(_module_graph()) == []


def test_no_module_imports_a_package_above_its_own():
    bad = []
    for module, targets in _module_graph().items():
        mine = _layer(module)
        if mine is None:
            continue
        bad += [f"{module} -> {t}" for t in targets if (_layer(t) or 0) > mine]
    assert bad == []


def test_the_cycle_and_layer_checks_can_fail():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _layer("search.cli.main") > _layer("search.fleet.worker") > _layer("search.train.model") > _layer("search.errors")
    graph = _module_graph()
    assert "search.study.config" in graph["search.train.data"]  # the scan reads real imports
    assert "storage.locks" in graph["storage.fleet"]


def test_search_is_laid_out_in_its_sub_packages():
    """A few base modules and one sub-package per concept, each with a docstring and __all__."""
    import ast

    loose = sorted(p.name for p in (REPO / "search").glob("*.py"))
    assert loose == ["__init__.py", "__main__.py", "env.py", "errors.py"]
    for name in LAYERS:
        init = REPO / "search" / name / "__init__.py"
        tree = ast.parse(init.read_text())
        assert ast.get_docstring(tree), name
        listed = next(n.value for n in tree.body if isinstance(n, ast.Assign) and n.targets[0].id == "__all__")
        modules = sorted(p.stem for p in (REPO / "search" / name).iterdir() if p.suffix == ".py" and p.stem != "__init__" or (p / "__init__.py").exists())
        assert sorted(e.value for e in listed.elts) == modules, name


def test_one_name_for_one_thing():
    """A module's __all__ lists only what it defines, imports name the module that defines a
    name, and no module but a package's __init__ answers names through __getattr__ (the
    compatibility shims of earlier moves)."""
    import ast

    modules = {_module_of(p): p for d in ("search", "storage", "tests") for p in (REPO / d).rglob("*.py")}
    defined, bad = {}, []
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        names = set()
        for n in tree.body:
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(n.name)
            elif isinstance(n, (ast.Assign, ast.AnnAssign)):
                for target in n.targets if isinstance(n, ast.Assign) else [n.target]:
                    names.update(x.id for x in ast.walk(target) if isinstance(x, ast.Name))
        defined[name] = names
        if path.name != "__init__.py":
            if "__getattr__" in names:
                bad.append(f"{name} defines a module __getattr__")
            for n in tree.body:
                if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", None) == "__all__":
                    bad += [f"{name}.__all__ lists {e.value}, defined elsewhere" for e in n.value.elts if e.value not in names]
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.ImportFrom) and node.level == 0 and node.module in modules):
                continue
            if modules[node.module].name == "__init__.py":
                continue  # a package's public surface
            for alias in node.names:
                if alias.name not in defined[node.module] and f"{node.module}.{alias.name}" not in modules:
                    bad.append(f"{name} imports {alias.name} from {node.module}, which does not define it")
    assert bad == []
