"""The Keras backend's set-up, in one place: which backend, which device, how it starts.

Everything that depends on the backend rather than on the recipe's model is here: checking
``KERAS_BACKEND`` names an installed backend, the GPU a worker may see, starting the backend
quietly with memory growth on (so several workers share a card), the versions and device a
trial records, arrays made backend tensors, seeding, clearing the session and the backend's
own compiler. The rest of ``search`` calls these and never imports TensorFlow, JAX or PyTorch
itself; Keras's model API stays in :mod:`search.train.model`, its maths in :mod:`search.train.lanes`.

Nothing here is imported at module level beyond the standard library, so ``hpsearch --help``
and the queries never start a backend, and a worker can set ``CUDA_VISIBLE_DEVICES``
(:func:`use_gpu`) before TensorFlow is imported.
"""

from __future__ import annotations

import functools
import os
import platform
import sys
from contextlib import contextmanager

from search.env import env
from search.errors import ConfigError

__all__ = [
    "BACKENDS",
    "LIBRARY_DEFAULTS",
    "check_backend",
    "clear_session",
    "compile_fn",
    "configure_backend",
    "library_defaults",
    "name",
    "on_gpu",
    "runtime_info",
    "set_seed",
    "setting",
    "take",
    "to_tensors",
    "use_gpu",
    "visible_gpus",
]

#: Keras backends hpsearch trains with, and the module (and extra) each needs.
BACKENDS = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}

#: What the backends' own libraries are told before they start, unless the user set it:
#: TensorFlow's C++ logs warnings and errors only; JAX does not take 75% of the card up
#: front (its counterpart of TensorFlow's memory growth), so a second worker fits beside it.
LIBRARY_DEFAULTS = {"TF_CPP_MIN_LOG_LEVEL": "2", "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}




def library_defaults(environ=None):
    """Set :data:`LIBRARY_DEFAULTS` in ``environ`` (default: this process's) where unset."""
    environ = os.environ if environ is None else environ
    for key, value in LIBRARY_DEFAULTS.items():
        environ.setdefault(key, value)
    return environ


def setting() -> str:
    """The backend Keras will start, read as Keras reads it but without importing Keras (which
    would slow every command): ``KERAS_BACKEND``, else the ``"backend"`` of ``keras.json`` in
    ``KERAS_HOME`` (default ``~/.keras``), where Keras's documentation tells users to switch it,
    else ``"tensorflow"``.

    Raises:
        ConfigError: that ``keras.json`` exists but cannot be read as Keras's configuration.
    """
    import json

    if env("KERAS_BACKEND"):
        return env("KERAS_BACKEND")
    path = _keras_json()
    try:
        with open(path) as f:
            config = json.load(f)
    except FileNotFoundError:
        return "tensorflow"
    except ValueError:  # Keras ignores a file that is not JSON
        return "tensorflow"
    except OSError as e:
        raise ConfigError(f"{path} cannot be read ({e.strerror or type(e).__name__}), and Keras reads it as it starts: fix its permissions, or set KERAS_HOME elsewhere") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{path} is not Keras's configuration (a JSON object), and Keras reads it as it starts: fix or remove it")
    return str(config.get("backend", "tensorflow"))


def _named_by(backend: str) -> str:
    """Where :func:`setting` found ``backend``, for messages."""
    if env("KERAS_BACKEND"):
        return f"KERAS_BACKEND={backend}"
    return f"the backend of {_keras_json()}, {backend},"


def _keras_json() -> str:
    """Keras's configuration file, where Keras looks for it (``keras.src.backend.config``:
    ``KERAS_HOME``, else ``~/.keras``, or ``/tmp/.keras`` where the home is not writable)."""
    home = env("KERAS_HOME")
    if home is None:
        base = os.path.expanduser("~")
        home = os.path.join(base if os.access(base, os.W_OK) else "/tmp", ".keras")
    return os.path.expanduser(os.path.join(home, "keras.json"))


def check_backend() -> str:
    """Check the backend Keras will start (:func:`setting`) is one hpsearch trains with and is
    installed, without importing it.

    Raises:
        ConfigError: the backend is unknown or its package is missing (with the extra to install).
    """
    import importlib.util

    backend = setting()
    if backend not in BACKENDS:
        raise ConfigError(f"{_named_by(repr(backend))} is not a backend hpsearch trains with: use one of {', '.join(BACKENDS)}, or set KERAS_BACKEND to one")
    module = BACKENDS[backend]
    if importlib.util.find_spec(module) is None:
        extra = "" if backend == "tensorflow" else f"[{backend}]"
        raise ConfigError(f"{_named_by(backend)} but {module} is not installed: pip install 'hpsearch{extra}', or set KERAS_BACKEND=tensorflow")
    return backend


def use_gpu(gpu: str) -> None:
    """Let this process see GPU ``gpu`` only; call before the backend is imported."""
    os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)


def visible_gpus() -> str | None:
    """``CUDA_VISIBLE_DEVICES`` as set (by ``--gpu`` or the user), or None."""
    return env("CUDA_VISIBLE_DEVICES")


@contextmanager
def _tensorflow_without_jax():
    """Keep TensorFlow's start from importing JAX, which it does not train with.

    Where JAX is installed (the ``jax`` extra, or the test extra for the lanes), importing
    Keras on TensorFlow imports it too: TF Lite's ``util`` tries ``from jax import jit`` for
    its JAX converter, and Keras's Orbax callback tries it to patch old JAX versions. Both
    fall back when the import fails; hpsearch uses neither. Blocked for the start only, it
    saves each TensorFlow worker 0.7 s and 100 MiB (``farm-bench``, docs/benchmarks.md); a
    user's model may still import JAX afterwards. On JAX or PyTorch, or once JAX or TensorFlow
    is imported already, nothing changes.
    """
    if setting() != "tensorflow" or "jax" in sys.modules or "tensorflow" in sys.modules:
        yield
        return
    sys.modules["jax"] = None  # the import system's "not importable" marker
    try:
        yield
    finally:
        if "jax" in sys.modules and sys.modules["jax"] is None:
            del sys.modules["jax"]


@contextmanager
def _native_stderr_captured():
    """Hold back what native code writes to fd 2 while the backend starts.

    TensorFlow 2.21 prints absl INFO lines ("oneDNN custom operations are on", "Could not find
    cuda drivers") before its logging is initialised, so TF_CPP_MIN_LOG_LEVEL cannot silence
    them. They are kept and replayed if the start fails, so nothing useful is lost.
    """
    import tempfile

    if env("HPSEARCH_DEBUG"):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            tmp.seek(0)
            sys.stderr.write(tmp.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def configure_backend(require_gpu: str | None = None) -> None:
    """Start the Keras backend quietly; let several workers share one GPU.

    Neither TensorFlow nor JAX may grab the GPU's memory up front, or a second worker on the
    same card fails: TensorFlow's memory growth must be set before the first operation, JAX's
    preallocation switched off before it is imported (:data:`LIBRARY_DEFAULTS`).

    Raises:
        ConfigError: ``require_gpu`` was given (``--gpu``) and TensorFlow sees no GPU.
    """
    library_defaults()
    missing = False
    with _native_stderr_captured(), _tensorflow_without_jax():
        import keras

        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            gpus = tf.config.list_physical_devices("GPU")
            for gpu in gpus:
                try:
                    tf.config.experimental.set_memory_growth(gpu, True)
                except RuntimeError:  # already initialised in this process
                    pass
            missing = require_gpu is not None and not gpus
    if missing:  # raised outside the capture: TensorFlow's start-up chatter is not the story
        raise ConfigError(
            f"--gpu {require_gpu}: TensorFlow sees no GPU there (no such GPU, or no CUDA libraries): check `nvidia-smi -L`, install hpsearch[cuda], or drop --gpu"
        )


def name() -> str:
    """The Keras backend in use: ``"tensorflow"``, ``"jax"`` or ``"torch"``."""
    import keras

    return keras.backend.backend()


@functools.lru_cache(maxsize=1)
def runtime_info() -> dict:
    """Where trials of this process run: host, pid, backend, device and versions."""
    import keras
    import optuna

    backend = keras.backend.backend()
    info = {
        "host": platform.node(),
        "pid": os.getpid(),
        "backend": backend,
        "keras_version": keras.__version__,
        "optuna_version": optuna.__version__,
        "gpu": visible_gpus(),
        "device": "cpu",
    }
    try:
        if backend == "tensorflow":
            import tensorflow as tf

            info["tensorflow_version"] = tf.__version__
            gpus = tf.config.list_physical_devices("GPU")
            if gpus:
                details = tf.config.experimental.get_device_details(gpus[0])
                info["device"] = details.get("device_name", gpus[0].name)
        elif backend == "jax":
            import jax

            info["jax_version"] = jax.__version__
            dev = jax.devices()[0]
            info["device"] = "cpu" if dev.platform == "cpu" else getattr(dev, "device_kind", str(dev))
        elif backend == "torch":
            import torch

            info["torch_version"] = torch.__version__
            if torch.cuda.is_available():
                info["device"] = torch.cuda.get_device_name(0)
    except Exception:  # device discovery is informative only; never fail a trial over it
        pass
    return info


def on_gpu() -> bool:
    """Whether Keras trains on a GPU in this process."""
    return runtime_info()["device"] != "cpu"


def to_tensors(*arrays) -> tuple:
    """``arrays`` as tensors of the backend, on its default device (the GPU where there is one)."""
    import keras

    return tuple(keras.ops.convert_to_tensor(a) for a in arrays)


def take(x, indices):
    """Rows ``indices`` of ``x``, a NumPy array or a backend tensor (gathered where it lives)."""
    import numpy as np

    if isinstance(x, np.ndarray):
        return x[indices]
    import keras

    return keras.ops.take(x, indices, axis=0)


def set_seed(seed: int) -> None:
    """Seed Python's, NumPy's and the backend's random state (``keras.utils.set_random_seed``)."""
    import keras

    keras.utils.set_random_seed(seed)


def freeze_heap() -> None:
    """Move every object alive now out of the garbage collector's reach (``gc.freeze``).

    Called once a worker process has imported the backend, the user's model and the data,
    before its first trial: TensorFlow's import alone leaves about 420,000 tracked objects, and
    every full collection walked them all again, the one each :func:`clear_session` makes
    included (0.24 s each, measured with KerasTuner's getting-started model; 0.01-0.03 s once
    frozen). Successive halving makes most trials one epoch long, so that was a large share of
    a short trial. What is frozen is never collected: only objects made at start-up, which live
    as long as the process anyway. Not for a process that goes on to other work (a test run).
    """
    import gc

    gc.collect()
    gc.freeze()


def clear_session() -> None:
    """Free the previous model's graph and weights before another is built.

    KerasTuner does the same in its build step: without it, a worker that builds hundreds of
    models keeps every model's state alive in the backend and slows down.
    """
    import keras

    keras.backend.clear_session()  # it collects garbage itself (free_memory=True)


def compile_fn(fn):
    """``fn`` compiled by the backend's own compiler (Keras's choice for each backend):
    ``tf.function`` on TensorFlow, ``jax.jit`` on JAX; PyTorch runs it eagerly."""
    backend = name()
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(fn, jit_compile=False, reduce_retracing=True)
    if backend == "jax":
        import jax

        return jax.jit(fn)
    return fn  # torch: eager (no compiled path measured)
