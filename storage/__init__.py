"""Where hpsearch studies live and how to read them.

Resolves storage URLs (``--storage`` > ``OPTUNA_STORAGE`` > the embedded PostgreSQL), opens
Optuna storages with fleet-safe engine settings, runs the embedded server, and answers
read-only queries. Never imports TensorFlow or Keras.
"""

from storage.embedded import embedded_status, embedded_url, home_dir, stop_embedded
from storage.engine import heartbeat_settings, open_storage, retrying, study_lock
from storage.errors import HpsearchError, StorageConfigError, StorageError, StudyNotFoundError, TrialNotFoundError
from storage.queries import (
    CurvePoint,
    LandscapeGrid,
    StudyRow,
    SummaryRow,
    TrialRow,
    best_trial,
    create_views,
    curves,
    landscape,
    list_studies,
    open_engine,
    running_without_heartbeat,
    state_counts,
    step_values,
    study_names,
    summary,
    to_frame,
    top_trials,
    trials,
)
from storage.url import ResolvedStorage, mask_url, resolve_storage_url, validate_url

__all__ = [
    "CurvePoint",
    "HpsearchError",
    "LandscapeGrid",
    "ResolvedStorage",
    "StorageConfigError",
    "StorageError",
    "StudyNotFoundError",
    "StudyRow",
    "SummaryRow",
    "TrialNotFoundError",
    "TrialRow",
    "best_trial",
    "create_views",
    "curves",
    "embedded_status",
    "embedded_url",
    "heartbeat_settings",
    "home_dir",
    "landscape",
    "list_studies",
    "mask_url",
    "open_engine",
    "open_storage",
    "resolve_storage_url",
    "retrying",
    "running_without_heartbeat",
    "state_counts",
    "step_values",
    "stop_embedded",
    "study_lock",
    "study_names",
    "summary",
    "to_frame",
    "top_trials",
    "trials",
    "validate_url",
]
