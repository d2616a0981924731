"""Where hpsearch studies live and how to read them; the only package that talks to the database.

Resolves storage URLs (``--storage`` > ``OPTUNA_STORAGE`` > the embedded PostgreSQL), opens
Optuna storages and query engines with one pool policy, runs the embedded server, coordinates
the fleet (advisory locks, counts, stale trials) and answers read-only queries. Driver errors
leave it as :class:`StorageError`. Never imports TensorFlow, Keras or ``search``.
"""

# The names are imported on first use (PEP 562), as search's are: the CLI imports
# storage.errors while it builds its parser, and importing every module here made each
# `hpsearch --help`, and each command refused for a bad flag, import SQLAlchemy too
# (0.3 s of a 0.45 s start on a 2-core EPYC).
TYPE_CHECKING = False  # what `typing.TYPE_CHECKING` is at run time; type checkers read True
if TYPE_CHECKING:
    from storage.embedded import embedded_status, embedded_url, home_dir, stop_embedded
    from storage.engine import background_slot, bounded_waits, in_background_slot, check_environment, database_errors, error_line, heartbeat_settings, open_engine, open_storage, retrying
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

_WHERE = {
    "embedded_status": "storage.embedded", "embedded_url": "storage.embedded", "home_dir": "storage.embedded", "stop_embedded": "storage.embedded",
    "background_slot": "storage.engine", "bounded_waits": "storage.engine", "in_background_slot": "storage.engine", "check_environment": "storage.engine", "database_errors": "storage.engine", "error_line": "storage.engine", "heartbeat_settings": "storage.engine", "open_engine": "storage.engine", "open_storage": "storage.engine", "retrying": "storage.engine",
    "foreign_counts": "storage.foreign", "own_counts": "storage.foreign",
    "HpsearchError": "storage.errors", "StorageConfigError": "storage.errors", "StorageError": "storage.errors", "StudyNotFoundError": "storage.errors", "TrialNotFoundError": "storage.errors",
    "running_epochs": "storage.fleet", "running_without_heartbeat": "storage.fleet", "state_counts": "storage.fleet", "step_values": "storage.fleet", "study_lock": "storage.fleet", "trial_row_locked": "storage.fleet", "try_study_lock": "storage.fleet",
    "TrialRecord": "storage.histories", "study_system_attr": "storage.histories", "trial_records": "storage.histories",
    "best_trial": "storage.queries", "curves": "storage.queries", "landscape": "storage.queries", "list_studies": "storage.queries", "param_names": "storage.queries", "study_names": "storage.queries", "summary": "storage.queries", "top_trials": "storage.queries", "trials": "storage.queries",
    "MAX_ATTEMPTS": "storage.retry", "RETRY": "storage.retry", "RetryPolicy": "storage.retry", "requeue": "storage.retry",
    "CurvePoint": "storage.rows", "LandscapeGrid": "storage.rows", "ParamsTrialRow": "storage.rows", "StudyRow": "storage.rows", "SummaryRow": "storage.rows", "TrialRow": "storage.rows", "to_frame": "storage.rows",
    "STORAGE_ENV_VARS": "storage.settings",
    "ResolvedStorage": "storage.url", "mask_url": "storage.url", "resolve_storage_url": "storage.url", "scrub": "storage.url", "scrub_traceback": "storage.url", "validate_url": "storage.url",
    "create_views": "storage.views",
}


def __getattr__(name: str):
    if name in _WHERE:
        import importlib

        value = getattr(importlib.import_module(_WHERE[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'storage' has no attribute {name!r}")


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
    "background_slot",
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
    "in_background_slot",
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
