"""Where hpsearch studies live and how to read them; the only package that talks to the database.

Resolves storage URLs (``--storage`` > ``OPTUNA_STORAGE`` > the embedded PostgreSQL), opens
Optuna storages and query engines with one pool policy, runs the embedded server, coordinates
the fleet (advisory locks, counts, stale trials) and answers read-only queries. Driver errors
leave it as :class:`StorageError`. Never imports TensorFlow, Keras or ``search``.
"""

from storage.embedded import embedded_status, embedded_url, home_dir, stop_embedded
from storage.engine import bounded_waits, check_environment, database_errors, error_line, heartbeat_settings, open_engine, open_storage, retrying
from storage.foreign import foreign_counts, own_counts
from storage.errors import HpsearchError, StorageConfigError, StorageError, StudyNotFoundError, TrialNotFoundError
from storage.fleet import running_epochs, running_without_heartbeat, state_counts, step_values, study_lock, trial_row_locked, try_study_lock
from storage.histories import TrialRecord, study_system_attr, trial_records
from storage.queries import best_trial, curves, landscape, list_studies, param_names, study_names, summary, top_trials, trials
from storage.retry import MAX_ATTEMPTS, RETRY, RetryPolicy, requeue
from storage.rows import CurvePoint, LandscapeGrid, ParamsTrialRow, StudyRow, SummaryRow, TrialRow, to_frame
from storage.settings import STORAGE_ENV_VARS
from storage.url import ResolvedStorage, mask_url, resolve_storage_url, scrub, scrub_traceback, validate_url
from storage.views import create_views

__all__ = [
    "CurvePoint",
    "HpsearchError",
    "LandscapeGrid",
    "MAX_ATTEMPTS",
    "ParamsTrialRow",
    "RETRY",
    "RetryPolicy",
    "ResolvedStorage",
    "STORAGE_ENV_VARS",
    "StorageConfigError",
    "StorageError",
    "StudyNotFoundError",
    "StudyRow",
    "SummaryRow",
    "TrialNotFoundError",
    "TrialRecord",
    "TrialRow",
    "best_trial",
    "bounded_waits",
    "check_environment",
    "create_views",
    "curves",
    "database_errors",
    "embedded_status",
    "embedded_url",
    "error_line",
    "foreign_counts",
    "heartbeat_settings",
    "home_dir",
    "landscape",
    "list_studies",
    "mask_url",
    "open_engine",
    "open_storage",
    "own_counts",
    "param_names",
    "requeue",
    "resolve_storage_url",
    "retrying",
    "running_epochs",
    "running_without_heartbeat",
    "scrub",
    "scrub_traceback",
    "state_counts",
    "step_values",
    "stop_embedded",
    "study_lock",
    "study_names",
    "study_system_attr",
    "summary",
    "to_frame",
    "top_trials",
    "trial_records",
    "trial_row_locked",
    "trials",
    "try_study_lock",
    "validate_url",
]
