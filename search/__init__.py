"""What a trial is and how workers run it.

The public surface; TensorFlow/Keras are imported only when a model is built or trained, so
importing this package is cheap.
"""

from typing import TYPE_CHECKING

# The names are imported on first use (PEP 562), so that `hpsearch` and `python -m search`
# reach the command's own Ctrl-C handling before any heavy import (issue 15: a Ctrl-C while
# this package imported SQLAlchemy showed a traceback).
_WHERE = {
    "ENV_VARS": "search.config", "RECIPE_RATES": "search.config", "StudyConfig": "search.config",
    "Dataset": "search.data", "load_dataset": "search.data", "read_mnist": "search.data",
    "ConfigError": "search.errors", "DataError": "search.errors", "HpsearchError": "search.errors",
    "TrialConfigError": "search.errors", "TrialEnvironmentError": "search.errors",
    "WorkerFatalError": "search.errors", "WorkerInterrupted": "search.errors",
    "FitOptions": "search.objective", "Objective": "search.objective",
    "EpochMonitor": "search.pruning", "make_pruner": "search.pruning",
    "make_sampler": "search.study", "open_study": "search.study", "summarize": "search.study",
    "run_worker": "search.worker",
}


def __getattr__(name: str):
    if name in _WHERE:
        import importlib

        value = getattr(importlib.import_module(_WHERE[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'search' has no attribute {name!r}")


if TYPE_CHECKING:
    from search.config import ENV_VARS, RECIPE_RATES, StudyConfig
    from search.data import Dataset, load_dataset, read_mnist
    from search.errors import (
        ConfigError,
        DataError,
        HpsearchError,
        TrialConfigError,
        TrialEnvironmentError,
        WorkerFatalError,
        WorkerInterrupted,
    )
    from search.objective import FitOptions, Objective
    from search.pruning import EpochMonitor, make_pruner
    from search.study import make_sampler, open_study, summarize
    from search.worker import run_worker

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
