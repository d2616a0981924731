"""Every environment variable hpsearch reads, and the one way to read them.

The README's configuration table is written from :data:`ENV_VARS`. Storage's own variables are
declared next to their defaults in ``storage.settings`` (storage cannot import search) and
included here. This module is the bottom of ``search``: it imports nothing of it.
"""

from __future__ import annotations

import os

from storage.settings import STORAGE_ENV_VARS

__all__ = ["ENV_VARS", "env"]

#: Every environment variable hpsearch reads, with what it does. The README's configuration
#: table is written from this registry. Storage's own variables are declared next to their
#: defaults in ``storage.settings`` (storage cannot import search) and included here.
ENV_VARS: dict[str, str] = {
    **STORAGE_ENV_VARS,
    "HPSEARCH_DATA": "MNIST file or IDX directory used when --data is not given",
    "KERAS_BACKEND": "Keras backend: tensorflow (default), jax or torch",
    "KERAS_HOME": "Keras's own directory (default ~/.keras): where KERAS_BACKEND is unset, the backend of its keras.json is the one used, as Keras does",
    "CUDA_VISIBLE_DEVICES": "GPUs a worker may use; set by `--gpu`",
    "HPSEARCH_DEBUG": "set by `--debug` (any non-empty value): tracebacks are shown, and the backend's start-up noise on stderr is not held back",
    "HPSEARCH_CHECKPOINT_S": "seconds of training between checkpoints of a running trial, written to the study's database (default 60; 0: after every epoch); a stopped worker writes one at once (docs/faults.md)",
    "HPSEARCH_LANES": "trials a worker trains at once as one batched model, used when --lanes is not given (default 1)",
    "HPSEARCH_LANE_LAYOUT": "how lanes of a user's model run on JAX: unrolled (a loop over members in one program) or vmap (stacked); default: vmap on a GPU, else unrolled",
    "HPSEARCH_DASHBOARD_TOKEN": "the token `hpsearch dashboard` requires, instead of one generated at start (16 or more URL-safe characters)",
}


def env(name: str) -> str | None:
    """Read a registered environment variable; an empty value counts as unset."""
    assert name in ENV_VARS, f"unregistered environment variable {name}"
    value = os.environ.get(name)
    return value if value else None
