"""What a trial is and how workers run it.

Laid out by concept (docs/design.md, "Where things live"): :mod:`search.study` (a study's
stored configuration, search space, sampler and pruner), :mod:`search.train` (one trial: the
backend, data, model, lanes, objective), :mod:`search.landscape` (figures, the live page, the
dashboard server), :mod:`search.fleet` (workers and their launcher) and :mod:`search.cli`
(the ``hpsearch`` command). Each imports only those before it in that list, plus
:mod:`search.errors` and :mod:`search.env` below them all.

The public surface; TensorFlow/Keras are imported only when a model is built or trained, so
importing this package is cheap.
"""

# The names are imported on first use (PEP 562), and this file imports nothing, not even
# `typing` (3 ms): `hpsearch` and `python -m search` import it before their Ctrl-C handling
# starts (search/__main__.py), so a Ctrl-C while it runs would show a traceback (issues 15, 25).
TYPE_CHECKING = False  # what `typing.TYPE_CHECKING` is at run time; type checkers read True
_WHERE = {
    "ENV_VARS": "search.env", "RECIPE_RATES": "search.study.config", "StudyConfig": "search.study.config",
    "Dataset": "search.train.data", "load_dataset": "search.train.data", "read_mnist": "search.train.data",
    "ConfigError": "search.errors", "DataError": "search.errors", "HpsearchError": "storage.errors",
    "TrialConfigError": "search.errors", "TrialEnvironmentError": "search.errors",
    "WorkerFatalError": "search.errors", "WorkerInterrupted": "search.errors",
    "FitOptions": "search.train.objective", "Objective": "search.train.objective",
    "EpochMonitor": "search.train.monitor", "make_pruner": "search.study.pruners",
    "make_sampler": "search.study.create", "open_study": "search.study.create", "summarize": "search.study.create",
    "run_worker": "search.fleet.worker",
}


def __getattr__(name: str):
    if name in _WHERE:
        import importlib

        value = getattr(importlib.import_module(_WHERE[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'search' has no attribute {name!r}")


if TYPE_CHECKING:
    from search.env import ENV_VARS
    from search.study.config import RECIPE_RATES, StudyConfig
    from search.train.data import Dataset, load_dataset, read_mnist
    from search.errors import (
        ConfigError,
        DataError,
        TrialConfigError,
        TrialEnvironmentError,
        WorkerFatalError,
        WorkerInterrupted,
    )
    from search.train.objective import FitOptions, Objective
    from storage.errors import HpsearchError
    from search.study.pruners import make_pruner
    from search.train.monitor import EpochMonitor
    from search.study.create import make_sampler, open_study, summarize
    from search.fleet.worker import run_worker

__all__ = [
    "ENV_VARS",
    "RECIPE_RATES",
    "ConfigError",
    "DataError",
    "Dataset",
    "EpochMonitor",
    "FitOptions",
    "HpsearchError",
    "Objective",
    "StudyConfig",
    "TrialConfigError",
    "TrialEnvironmentError",
    "WorkerFatalError",
    "WorkerInterrupted",
    "load_dataset",
    "make_pruner",
    "make_sampler",
    "open_study",
    "read_mnist",
    "run_worker",
    "summarize",
]
