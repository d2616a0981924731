"""A user's model, named by ``--model SPEC``: loaded, pinned by a digest, and checked.

SPEC is ``recipe`` (the built-in reference recipe), ``path/to/file.py:NAME`` or
``package.module:NAME``. NAME is KerasTuner's contract, unchanged:

* a function ``build(hp)`` returning a compiled ``keras.Model``, or
* a class or an instance with ``build(hp)`` and optionally ``fit(hp, model, *args, **kwargs)``
  (``keras_tuner.HyperModel``: ``fit`` may tune ``batch_size`` or ``shuffle``, must pass
  ``**kwargs`` on to ``model.fit``, and may return a History, a number or a dict). A class is
  instantiated with no arguments, as KerasTuner users write ``MyHyperModel()``.

A study stores the spec and a digest of the file (or of the module's source file), and a
worker whose code differs refuses to join (:func:`check_digest`), as a worker with other data
does. A file is imported under a private module name with its folder first on ``sys.path``,
so it can import its neighbours. Every way of getting this wrong is one line
(:class:`~search.errors.ConfigError`, exit 2) before anything is written.
"""

from __future__ import annotations

import ast
import difflib
import hashlib
import importlib
import importlib.util
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from search.errors import ConfigError

__all__ = ["RECIPE", "HyperModel", "ModelSpec", "check_digest", "check_model", "current_directory_on_path", "import_file", "load_hypermodel", "names_a_file", "parse_spec"]

RECIPE = "recipe"
_MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_FORMS = "use --model recipe, --model path/to/file.py:NAME or --model package.module:NAME"


@dataclass(frozen=True)
class ModelSpec:
    """``--model`` parsed: ``kind`` is ``"recipe"``, ``"file"`` or ``"module"``."""

    text: str
    kind: str
    target: str = ""  # the file's path or the module's dotted name
    name: str = ""

    @property
    def is_recipe(self) -> bool:
        return self.kind == RECIPE


def parse_spec(text: str | None) -> ModelSpec:
    """Parse ``--model``; None and ``recipe`` are the recipe.

    Raises:
        ConfigError: not one of the three forms.
    """
    if text is None or text.strip() == RECIPE:
        return ModelSpec(RECIPE, RECIPE)
    text = text.strip()
    target, sep, name = text.rpartition(":")
    if not sep or not target or not name:
        raise ConfigError(f"--model {text!r} names no builder: {_FORMS}")
    if not _NAME.match(name):
        raise ConfigError(f"--model {text!r}: {name!r} is not a Python name: {_FORMS}")
    if names_a_file(target):
        return ModelSpec(text, "file", target, name)
    if not _MODULE.match(target):
        raise ConfigError(f"--model {text!r}: {target!r} is neither a .py file nor a module name: {_FORMS}")
    return ModelSpec(text, "module", target, name)


def names_a_file(target: str) -> bool:
    """Whether a spec's part before the colon is a Python file's path (``models/cnn.py``) rather
    than a module's dotted name: the rule of ``--model`` and of ``--data``'s loaders."""
    return target.endswith(".py") or "/" in target or "\\" in target


def _source_path(spec: ModelSpec) -> Path:
    if spec.kind == "file":
        path = Path(spec.target).expanduser()
        if not path.is_file():
            raise ConfigError(f"--model {spec.text!r}: {spec.target} does not exist: check the path (relative to {Path.cwd()})")
        return path.resolve()
    current_directory_on_path()
    try:
        found = importlib.util.find_spec(spec.target)
    except (ImportError, ValueError) as e:
        found, reason = None, f" ({e})"
    else:
        reason = ""
    if found is None or not found.origin or found.origin in ("built-in", "frozen"):
        raise ConfigError(f"--model {spec.text!r}: no module {spec.target!r} can be imported here{reason}: install it or put it on PYTHONPATH")
    return Path(found.origin)


def digest(spec: ModelSpec) -> str | None:
    """A short SHA-256 of the file the model comes from (None for the recipe)."""
    if spec.is_recipe:
        return None
    return hashlib.sha256(_source_path(spec).read_bytes()).hexdigest()[:16]


def check_source(spec: ModelSpec) -> None:
    """Read the model's file without running it, so that two mistakes are refused before the
    backend starts (its import is seconds): a syntax error, and a NAME the file never defines.
    The errors are the ones :func:`load_hypermodel` gives after running the file. A module
    (``package.module:NAME``) is checked where it is imported: finding its file imports its
    parent packages, which may import Keras.

    NAME counts as defined if the file names it anywhere (a ``def``, ``class``, assignment,
    import, attribute or string, at any depth); a file that could define names the parser
    cannot see (``from m import *``, a module ``__getattr__``, ``globals()``, ``setattr``,
    ``exec``) is left to the import.

    Raises:
        ConfigError: a syntax error (file and line named), or NAME not in the file.
    """
    if spec.kind != "file":
        return
    path = _source_path(spec)
    try:
        tree = ast.parse(path.read_bytes(), str(path))
    except SyntaxError as e:
        raise ConfigError(f"--model {spec.text!r}: syntax error in {e.filename}, line {e.lineno}: {e.msg}") from None
    except ValueError:
        return  # null bytes and the like: the import reports them as it does today
    bound, opaque = set(), False
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, ast.Name):
            bound.add(node.id)  # stored, or read: a read of globals()-made names is read as bound
            opaque |= node.id in _DYNAMIC
        elif isinstance(node, ast.Attribute):
            bound.add(node.attr)  # sys.modules[__name__].build = ...
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.isidentifier():
            bound.add(node.value)  # a name in a string may be bound by a call the parser cannot follow
        elif isinstance(node, ast.alias):
            opaque |= node.name == "*"
            bound.add(node.asname or node.name.split(".")[0])
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            bound.update(node.names)
        elif isinstance(node, (ast.MatchAs, ast.MatchStar)) and node.name:
            bound.add(node.name)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            bound.add(node.name)
    if spec.name in bound or opaque or "__getattr__" in bound:
        return
    raise _no_such_name(spec, _module_level_callables(tree.body))


def _no_such_name(spec: ModelSpec, names) -> ConfigError:
    """The error for a NAME the module lacks: what it has, and the closest to NAME."""
    names = sorted(set(names))
    close = difflib.get_close_matches(spec.name, names, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return ConfigError(f"--model {spec.text!r}: {spec.target} has no {spec.name!r} ({hint}its callables: {', '.join(names) or 'none'})")


def _module_level_callables(body):
    """The public functions and classes a module defines or imports by name at its top level,
    those under a module-level ``if``/``try``/``with`` included (KerasTuner's guide defines its
    ``HyperModel`` subclass under ``if keras_tuner is not None:``)."""
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            if not node.name.startswith("_"):
                yield node.name
        elif isinstance(node, ast.ImportFrom):
            yield from (a.asname or a.name for a in node.names if not (a.asname or a.name).startswith("_"))
        elif isinstance(node, (ast.If, ast.Try, ast.With)):
            for block in ("body", "orelse", "finalbody"):
                yield from _module_level_callables(getattr(node, block, []))
            for handler in getattr(node, "handlers", []):
                yield from _module_level_callables(handler.body)


#: Calls through which a file can define a name no parser sees.
_DYNAMIC = frozenset({"globals", "setattr", "exec", "vars", "locals"})


def check_digest(spec: ModelSpec, stored: str | None, study: str) -> None:
    """Refuse a worker whose model code differs from the code the study was created with.

    Raises:
        ConfigError: the digests differ (both named).
    """
    mine = digest(spec)
    if stored and mine and stored != mine:
        raise ConfigError(
            f"this worker's model code {spec.target} (digest {mine}) differs from the code study {study!r} was created with ({stored}): deploy the same file, or start a new study with --study NAME"
        )


def _one_line(e: BaseException) -> str:
    from search.errors import one_line

    return one_line(e, 300) or type(e).__name__


def _import(spec: ModelSpec):
    path = _source_path(spec)
    if spec.kind == "module":
        try:
            return importlib.import_module(spec.target)
        except SyntaxError as e:
            raise ConfigError(f"--model {spec.text!r}: syntax error in {e.filename}, line {e.lineno}: {e.msg}") from None
        except Exception as e:
            raise ConfigError(f"--model {spec.text!r}: importing {spec.target} failed: {type(e).__name__}: {_one_line(e)}") from None
    return import_file(path, f"--model {spec.text!r}", ConfigError)


def import_file(path: Path, flag: str, error: type[Exception]):
    """Run the Python file ``path`` as a module of a private name (once per process), with its
    folder first on ``sys.path`` so it imports its neighbours as it does when it runs itself.

    Raises:
        error: ``"{flag}: syntax error in FILE, line N: ..."`` or ``"{flag}: running FILE failed: ..."``.
    """
    module_name = f"hpsearch_user_model_{hashlib.sha256(str(path).encode()).hexdigest()[:12]}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    loader_spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(loader_spec)
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    sys.modules[module_name] = module
    try:
        loader_spec.loader.exec_module(module)
    except SyntaxError as e:
        sys.modules.pop(module_name, None)
        raise error(f"{flag}: syntax error in {e.filename}, line {e.lineno}: {e.msg}") from None
    except Exception as e:
        sys.modules.pop(module_name, None)
        raise error(f"{flag}: running {path.name} failed: {type(e).__name__}: {_one_line(e)}") from None
    return module


def current_directory_on_path() -> None:
    """Make modules of the current directory importable, as ``python -m`` does and a console
    script's ``sys.path`` does not: ``hpsearch run --model mypackage.models:build`` in the
    project's folder finds ``mypackage`` (so do uvicorn's and celery's ``module:name``). Added
    last, so a folder there never shadows an installed package."""
    here = os.getcwd()
    if here not in sys.path and "" not in sys.path:
        sys.path.append(here)


class HyperModel:
    """The user's builder under one interface: ``build(hp)`` and ``fit(hp, model, ...)``.

    Attributes:
        own_fit: whether the user's object defines ``fit`` (KerasTuner's ``HyperModel.fit``
            that only calls ``model.fit`` counts as not defined).
    """

    def __init__(self, obj, spec: ModelSpec):
        self.obj, self.spec = obj, spec
        self.own_fit = _has_own_fit(obj)

    def build(self, hp):
        build = self.obj if callable(self.obj) and not hasattr(self.obj, "build") else self.obj.build
        return build(hp)

    def fit(self, hp, model, *args, **kwargs):
        if self.own_fit:
            return self.obj.fit(hp, model, *args, **kwargs)
        return model.fit(*args, **kwargs)

    def check(self, model) -> None:
        """:func:`check_model` on what :meth:`build` returned: compiled, unless a ``fit`` of the
        user's own trains it (a loop of its own may need no ``compile``)."""
        check_model(model, self.spec, compiled=not self.own_fit)


def _has_own_fit(obj) -> bool:
    fit = getattr(type(obj), "fit", None)
    if fit is None or not callable(fit):
        return False
    for base in type(obj).__mro__:  # keras_tuner.HyperModel.fit only calls model.fit
        if "fit" in base.__dict__:
            return not (base.__module__.startswith("keras_tuner") and base.__name__ == "HyperModel")
    return False


def load_hypermodel(spec: ModelSpec) -> HyperModel:
    """Import the user's module and return its builder.

    Raises:
        ConfigError: the file or module is missing or fails to import (a syntax error names
            the file and line), NAME is missing, or NAME is neither a ``build(hp)`` function
            nor an object with ``build(hp)``.
    """
    module = _import(spec)
    if not hasattr(module, spec.name):
        raise _no_such_name(spec, (n for n in vars(module) if not n.startswith("_") and callable(getattr(module, n))))
    obj = getattr(module, spec.name)
    if isinstance(obj, type):
        if not callable(getattr(obj, "build", None)):
            raise ConfigError(f"--model {spec.text!r}: class {spec.name} has no build(hp) method: give it one, or name a build(hp) function")
        try:
            obj = obj()
        except Exception as e:
            raise ConfigError(f"--model {spec.text!r}: {spec.name}() failed ({type(e).__name__}: {_one_line(e)}): a HyperModel class must be made with no arguments, or name an instance") from None
    elif not callable(obj) and not callable(getattr(obj, "build", None)):
        raise ConfigError(f"--model {spec.text!r}: {spec.name} is a {type(obj).__name__}, not a build(hp) function or a HyperModel: {_FORMS}")
    return HyperModel(obj, spec)


def check_model(model, spec: ModelSpec, *, compiled: bool = True) -> None:
    """Refuse what ``build(hp)`` returned unless it is a ``keras.Model``, compiled where
    ``compiled`` (a ``HyperModel`` whose own ``fit`` may train it with a loop of its own, as
    KerasTuner's "Tune model training" guide does, may return it uncompiled).

    Raises:
        ConfigError: not a Keras model, or not compiled.
    """
    import keras

    if not isinstance(model, keras.Model):
        raise ConfigError(f"--model {spec.text!r}: build(hp) returned {type(model).__name__}, not a keras.Model: return the model it builds")
    if compiled and (not getattr(model, "compiled", False) or getattr(model, "optimizer", None) is None):
        raise ConfigError(f"--model {spec.text!r}: build(hp) returned a model that is not compiled: call model.compile(optimizer=..., loss=..., metrics=[...]) before returning it")
