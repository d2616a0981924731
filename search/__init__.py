"""What a trial is and how workers run it.

The public surface; TensorFlow/Keras are imported only when a model is built or trained, so
importing this package is cheap.
"""

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
