"""Where hpsearch studies live and how to read them.

Resolves storage URLs (``--storage`` > ``OPTUNA_STORAGE`` > the embedded PostgreSQL), opens
Optuna storages with fleet-safe engine settings, runs the embedded server, and answers
read-only queries. Never imports TensorFlow or Keras.
"""

from storage.embedded import embedded_status, embedded_url, home_dir, stop_embedded
from storage.engine import open_storage, study_lock
from storage.errors import HpsearchError, StorageConfigError, StorageError, StudyNotFoundError
from storage.queries import StudyRow, list_studies, state_counts, study_names
from storage.url import ResolvedStorage, mask_url, resolve_storage_url, validate_url

__all__ = [
    "HpsearchError",
    "ResolvedStorage",
    "StorageConfigError",
    "StorageError",
    "StudyNotFoundError",
    "StudyRow",
    "embedded_status",
    "embedded_url",
    "home_dir",
    "list_studies",
    "mask_url",
    "open_storage",
    "resolve_storage_url",
    "state_counts",
    "stop_embedded",
    "study_lock",
    "study_names",
    "validate_url",
]
