"""Read MNIST, preprocess it as the recipe does, split it, and cache it per process.

Sources, in order: ``--data PATH`` (a ``mnist.npz`` in the layout ``keras.datasets.mnist``
reads, or a directory with the four IDX files, gzipped or not), else ``HPSEARCH_DATA``, else
Keras's own loader (which downloads once and caches under ``~/.keras/datasets``).

Preprocessing is exactly the recipe's: flatten to 784, scale to [0, 1] as float32, one-hot
labels. Validation is a real hold-out by default (the last 10,000 training images, never
trained on); ``validation="test"`` uses the test set as the recipe did.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import optree

from search.env import env
from search.study.config import HOLDOUT_SIZE
from search.errors import DataError

__all__ = ["Dataset", "DeviceData", "RawArrays", "RawMnist", "check_user_split", "holdout_size", "is_loader", "read_arrays", "rows", "split_arrays", "take_rows", "check_split", "device_data", "epoch_order", "load_dataset", "read_mnist", "read_mnist_cached", "preprocess"]

NUM_CLASSES = 10
_IDX_FILES = {
    "x_train": ("train-images-idx3-ubyte", "train-images.idx3-ubyte"),
    "y_train": ("train-labels-idx1-ubyte", "train-labels.idx1-ubyte"),
    "x_test": ("t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"),
    "y_test": ("t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte"),
}
_FIX = "pass --data with a mnist.npz (arrays x_train, y_train, x_test, y_test) or a directory of the four MNIST IDX files"


@dataclass(frozen=True)
class RawMnist:
    """MNIST as stored: uint8 images ``(n, 28, 28)`` and integer labels ``(n,)``."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str

    def fingerprint(self) -> str:
        """A short SHA-256 of the four arrays, so a study never mixes trials on different data."""
        h = hashlib.sha256()
        for a in (self.x_train, self.y_train, self.x_test, self.y_test):
            h.update(str(a.shape).encode())
            h.update(np.ascontiguousarray(a).astype(np.uint8, copy=False).tobytes())
        return h.hexdigest()[:16]


@dataclass(frozen=True)
class Dataset:
    """The arrays a trial trains on: the recipe's preprocessed, a user's as given (an array, or a
    dict, list or tuple of them: :class:`RawArrays`)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    fingerprint: str
    source: str
    validation: str


def _check(name: str, x: np.ndarray, y: np.ndarray, source: str) -> None:
    if x.ndim == 2 and x.shape[1] == 784:
        pass
    elif x.ndim != 3 or x.shape[1:] != (28, 28):
        raise DataError(f"{source}: x_{name} has shape {x.shape}, expected (n, 28, 28) images: {_FIX}")
    if y.ndim != 1:
        raise DataError(f"{source}: y_{name} has shape {y.shape}, expected (n,) integer labels: {_FIX}")
    if len(x) != len(y):
        raise DataError(f"{source}: x_{name} has {len(x)} images but y_{name} has {len(y)} labels: the file is inconsistent")
    if len(x) == 0:
        raise DataError(f"{source}: x_{name} is empty: {_FIX}")
    if x.dtype != np.uint8:
        if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
            raise DataError(f"{source}: x_{name} has dtype {x.dtype}, expected uint8 pixels 0-255: {_FIX}")
        if not np.all(np.isfinite(x)) or x.min() < 0 or x.max() > 255:
            raise DataError(f"{source}: x_{name} has values outside 0-255: expected raw uint8 pixels, not preprocessed data")
        if np.issubdtype(x.dtype, np.integer) or _pre_scaled(x):
            pass
        elif not np.all(np.mod(x, 1) == 0):
            raise DataError(
                f"{source}: x_{name} holds fractional values up to {float(x.max()):g}: expected uint8 pixels 0-255 or floats already scaled to [0, 1], not other preprocessing"
            )
    if not np.issubdtype(y.dtype, np.integer):
        if not np.issubdtype(y.dtype, np.floating) or not np.all(np.mod(y, 1) == 0):
            raise DataError(f"{source}: y_{name} has dtype {y.dtype}, expected integer labels 0-9: {_FIX}")
    if y.min() < 0 or y.max() >= NUM_CLASSES:
        raise DataError(f"{source}: y_{name} has labels from {y.min()} to {y.max()}, expected 0-9: the file is not MNIST digits")


def _pre_scaled(x: np.ndarray) -> bool:
    """Floats in [0, 1] with fractional values: images already divided by 255 (issue 15).

    Cast to uint8 as they are, every pixel would become 0 or 1 and every rate train at
    chance; they are scaled back to 0-255 instead, so the recipe's own scaling applies once.
    """
    return np.issubdtype(x.dtype, np.floating) and float(x.max()) <= 1.0 and not np.all(np.mod(x, 1) == 0)


def _pixels(x: np.ndarray) -> np.ndarray:
    x = x.reshape(len(x), 28, 28)
    if x.dtype == np.uint8:
        return x
    if _pre_scaled(x):
        x = x * 255.0
    return np.rint(x).astype(np.uint8)


def _finish(x_train, y_train, x_test, y_test, source: str) -> RawMnist:
    _check("train", x_train, y_train, source)
    _check("test", x_test, y_test, source)
    if _pre_scaled(x_train) != _pre_scaled(x_test):
        raise DataError(f"{source}: one of x_train and x_test is scaled to [0, 1] and the other is not: save both the same way")
    return RawMnist(
        _pixels(x_train),
        y_train.astype(np.int64, copy=False),
        _pixels(x_test),
        y_test.astype(np.int64, copy=False),
        source,
    )


def _read_npz(path: Path) -> RawMnist:
    try:
        with np.load(path, allow_pickle=False) as f:
            missing = [k for k in _IDX_FILES if k not in f.files]
            if missing:
                raise DataError(f"{path}: the npz file lacks {', '.join(missing)} (it has {', '.join(f.files) or 'nothing'}): {_FIX}")
            arrays = [f[k] for k in _IDX_FILES]
    except DataError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as e:
        raise DataError(f"{path} is not a readable npz file ({type(e).__name__}: {' '.join(str(e).split())[:120]}): it may be truncated; {_FIX}") from None
    return _finish(*arrays, source=str(path))


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            data = fh.read()
    except (OSError, EOFError) as e:
        raise DataError(f"{path} cannot be read ({type(e).__name__}: {e}): it may be truncated or not gzip") from None
    if len(data) < 4:
        raise DataError(f"{path} is too short to be an IDX file: it may be truncated")
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08 or ndim not in (1, 3):
        raise DataError(f"{path} is not an MNIST IDX file of unsigned bytes (bad magic number): {_FIX}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path} is truncated (incomplete header)")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    expected = int(np.prod(dims))
    if len(data) - header != expected:
        raise DataError(f"{path} holds {len(data) - header} bytes of data but its header promises {expected}: the file is truncated or corrupt")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def _find_idx(directory: Path, names: tuple[str, ...]) -> Path:
    for name in names:
        for candidate in (directory / name, directory / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    raise DataError(f"{directory} has no {names[0]} (or {names[0]}.gz): {_FIX}")


def _read_idx_dir(directory: Path) -> RawMnist:
    arrays = [_read_idx(_find_idx(directory, names)) for names in _IDX_FILES.values()]
    return _finish(*arrays, source=str(directory))


def _read_keras() -> RawMnist:
    # Keras's downloader and cache, a data source like the others (it imports Keras, and so
    # its backend, but sets nothing up: search.train.backend does that before training).
    try:
        import keras

        (x_train, y_train), (x_test, y_test) = keras.datasets.mnist.load_data()
    except Exception as e:  # urllib, ssl, and HTTP errors all mean "could not download"
        reason = " ".join(str(e).split())[:120] or type(e).__name__
        raise DataError(
            f"MNIST is not in Keras's cache and could not be downloaded ({reason}): pass --data PATH to a mnist.npz file or a directory of the IDX files"
        ) from None
    return _finish(x_train, y_train, x_test, y_test, source="keras.datasets.mnist")


def read_mnist(path: str | os.PathLike | None = None) -> RawMnist:
    """Read MNIST from ``path`` (npz file or IDX directory), else ``HPSEARCH_DATA``, else Keras.

    Raises:
        DataError: the file or directory is missing, truncated or not MNIST-shaped.
    """
    if path is None:
        path = env("HPSEARCH_DATA")
    if path is None:
        return _read_keras()
    p = Path(path).expanduser()
    if p.is_dir():
        return _read_idx_dir(p)
    if not p.exists():
        raise DataError(f"--data {str(p)!r} does not exist: {_FIX}")
    kind = _sniff(p)
    if kind == "npy":
        raise DataError(
            f"--data {str(p)!r} is a single .npy array: hpsearch reads one .npz holding x_train, y_train, x_test and y_test (np.savez(path, x_train=..., y_train=..., x_test=..., y_test=...)), or a directory of the four IDX files"
        )
    if kind in ("gzip", "idx"):
        raise DataError(f"--data {str(p)!r} is a single IDX file: pass the directory that holds all four IDX files")
    if kind != "zip":
        raise DataError(f"--data {str(p)!r} is neither an .npz file nor a directory of IDX files (its first bytes match neither): {_FIX}")
    return _read_npz(p)


def _sniff(path: Path) -> str:
    """What a data file is, by its first bytes rather than its name (a misnamed npz still reads)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(6)
    except OSError as e:
        raise DataError(f"--data {str(path)!r} cannot be read ({e.strerror}): check its permissions") from None
    if head.startswith(b"PK"):
        return "zip"
    if head.startswith(b"\x93NUMPY"):
        return "npy"
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if head[:3] == b"\x00\x00\x08" and len(head) >= 4 and head[3] in (1, 3):
        return "idx"
    return "other"


def preprocess(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The recipe's preprocessing: flatten to 784, scale to [0, 1] float32, one-hot labels."""
    x = x.reshape(len(x), 784).astype(np.float32) / np.float32(255.0)
    y = np.eye(NUM_CLASSES, dtype=np.float32)[y]
    return x, y


_CACHE: dict[tuple, Dataset] = {}
_RAW_CACHE: dict[tuple, RawMnist] = {}


def _cache_key(path) -> tuple | None:
    if path is None:
        path = env("HPSEARCH_DATA")
    if path is None:
        return None
    p = Path(path).expanduser().absolute()
    return (str(p), p.stat().st_mtime_ns if p.exists() else None)


def read_mnist_cached(path: str | os.PathLike | None = None) -> RawMnist:
    """:func:`read_mnist`, read once per process and path."""
    key = _cache_key(path)
    if key not in _RAW_CACHE:
        _RAW_CACHE[key] = read_mnist(path)
    return _RAW_CACHE[key]


def check_split(raw: RawMnist, train_size: int | None, validation: str | None) -> None:
    """Check that ``raw`` holds enough images for the split, before a study is written.

    ``validation=None`` (a flag left out, the study's value not known yet) checks only what
    every split needs: at most as many training images as the data has.

    Raises:
        DataError: too few images to hold out the validation set, or for ``train_size``.
    """
    n = len(raw.x_train)
    if validation == "holdout" and n <= HOLDOUT_SIZE:
        raise DataError(f"{raw.source} has {n} training images, too few to hold out {HOLDOUT_SIZE} for validation: use --validation test")
    available = n - HOLDOUT_SIZE if validation == "holdout" else n
    if train_size is not None and train_size > available:
        split = f" with --validation {validation}" if validation else ""
        raise DataError(f"--train-size {train_size} exceeds the {available} training images of {raw.source}{split}: use --train-size {available} or less")


def load_dataset(path: str | os.PathLike | None, *, train_size: int | None, validation: str) -> Dataset:
    """Read, preprocess and split MNIST once per process; later calls return the cached arrays.

    Args:
        path: npz file or IDX directory; None reads ``HPSEARCH_DATA`` or Keras's loader.
        train_size: train on the first N training images (None: all that remain after the split).
        validation: ``"holdout"`` (last 10,000 training images) or ``"test"`` (the test set).

    Raises:
        DataError: the data cannot be read, or has too few images for the split.
    """
    key = (_cache_key(path), train_size, validation)
    if key in _CACHE:
        return _CACHE[key]
    raw = read_mnist_cached(path)
    check_split(raw, train_size, validation)
    if validation == "holdout":
        cut = len(raw.x_train) - HOLDOUT_SIZE
        x_fit, y_fit = raw.x_train[:cut], raw.y_train[:cut]
        x_val, y_val = raw.x_train[cut:], raw.y_train[cut:]
    else:
        x_fit, y_fit = raw.x_train, raw.y_train
        x_val, y_val = raw.x_test, raw.y_test
    if train_size is not None:
        x_fit, y_fit = x_fit[:train_size], y_fit[:train_size]
    x_train, y_train = preprocess(x_fit, y_fit)
    x_val_p, y_val_p = preprocess(x_val, y_val)
    x_test, y_test = preprocess(raw.x_test, raw.y_test)
    ds = Dataset(x_train, y_train, x_val_p, y_val_p, x_test, y_test, raw.fingerprint(), raw.source, validation)
    _CACHE[key] = ds
    return ds


def epoch_order(seed: int | None, epoch: int, n: int) -> np.ndarray:
    """The order in which a trial of a seeded study sees its ``n`` training images at ``epoch``.

    It depends on the study's seed and the epoch only (not on the trial), so a solo trial and
    the same trial trained as a lane of a batched model (:mod:`search.train.lanes`) see the same
    batches. Without a seed the order is fresh randomness.
    """
    rng = np.random.default_rng(None if seed is None else [seed, epoch])
    return rng.permutation(n).astype(np.int32)


@dataclass(frozen=True)
class DeviceData:
    """A :class:`Dataset`'s arrays as tensors of the Keras backend, on its default device."""

    x_train: object
    y_train: object
    x_val: object
    y_val: object
    x_test: object
    y_test: object


_DEVICE_CACHE: dict[tuple[int, str], tuple[Dataset, DeviceData]] = {}


def device_data(ds: Dataset) -> DeviceData:
    """``ds`` as backend tensors, converted once per process and reused by every trial.

    ``model.fit`` on NumPy arrays copies them into the backend on every call (TensorFlow
    embeds them in a new ``tf.data`` pipeline, JAX copies each batch to the device), so each
    trial of the recipe's loop pays that copy again. Tensors made once skip it: with JAX and
    PyTorch they live on the GPU where there is one, and batches are gathered there.
    ``keras.backend.clear_session`` does not free them; they live as long as the process
    (about 220 MB for all of MNIST in float32). :func:`search.train.backend.to_tensors` converts.
    """
    from search.train import backend

    key = (id(ds), backend.name())
    hit = _DEVICE_CACHE.get(key)
    if hit is not None and hit[0] is ds:
        return hit[1]
    tensors = DeviceData(*backend.to_tensors(*(getattr(ds, name) for name in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"))))
    # Keep ``ds`` in the entry so its id cannot be reused by another dataset while cached.
    _DEVICE_CACHE[key] = (ds, tensors)
    return tensors


# --- a user's data (``--data`` with ``--model FILE:NAME``) -------------------------------------

_ARRAYS = ("x_train", "y_train", "x_test", "y_test")
_USER_FIX = ("pass --data with an .npz of x_train, y_train, x_test, y_test, or package.module:function (or path/to/file.py:function) "
             "returning (x_train, y_train), (x_test, y_test)")
_LOADER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class RawArrays:
    """A user's data as given: any shape and dtype, the same number of rows in x and y.

    Each of the four is an array, or, for a model with several inputs or outputs, a dict, list
    or tuple of arrays (as ``model.fit`` takes them), all with the same number of rows.
    """

    x_train: object
    y_train: object
    x_test: object
    y_test: object
    source: str

    def fingerprint(self) -> str:
        """A short SHA-256 of the four arrays' shapes, dtypes and bytes (and where each sits in its structure)."""
        h = hashlib.sha256()
        for part in (self.x_train, self.y_train, self.x_test, self.y_test):
            paths, leaves, _ = optree.tree_flatten_with_path(part)
            for path, a in zip(paths, leaves):
                if path:  # an array of a structure; a plain array hashes as it always has
                    h.update(_where(path).encode())
                h.update(f"{a.shape}{a.dtype.str}".encode())
                h.update(np.ascontiguousarray(a).tobytes())
        return h.hexdigest()[:16]


def rows(part) -> int:
    """The number of rows of an array, or of every array of a structure of them."""
    return len(optree.tree_leaves(part)[0])


def take_rows(part, index):
    """``part[index]``: the rows ``index`` (a slice or an array of row numbers) of an array or of each array of a structure."""
    return optree.tree_map(lambda a: a[index], part)


def _where(path: tuple) -> str:
    return "".join(f"[{key!r}]" for key in path)


def _structured(value) -> bool:
    """Whether ``value`` is a structure of arrays (several inputs or outputs) rather than one
    array: a dict, or a list or tuple of arrays or of structures (a list of numbers, or of lists
    of numbers, is one array, as NumPy reads it)."""
    if isinstance(value, dict):
        return True
    if not isinstance(value, (list, tuple)) or not value:
        return False
    return all(len(getattr(v, "shape", ()) or ()) > 0 or _structured(v) for v in value)


def _array(value, name: str, source: str):
    """``value`` as NumPy arrays: one array, or the same structure of them, each checked."""
    if _structured(value):
        if not len(value):
            raise DataError(f"{source}: {name} is empty: {_USER_FIX}")
        if isinstance(value, dict):
            return {k: _array(v, f"{name}[{k!r}]", source) for k, v in value.items()}
        return type(value)(_array(v, f"{name}[{i}]", source) for i, v in enumerate(value))
    try:
        a = np.asarray(value)
    except Exception as e:
        raise DataError(f"{source}: {name} is not an array ({type(e).__name__}): {_USER_FIX}") from None
    if a.dtype == object:
        raise DataError(f"{source}: {name} holds Python objects (dtype object): save numeric or string arrays")
    if a.ndim == 0 or len(a) == 0:
        raise DataError(f"{source}: {name} is empty: {_USER_FIX}")
    return a


def _rows_of(part, name: str, source: str) -> int:
    """The rows of ``part``; every array of a structure must have as many."""
    paths, leaves, _ = optree.tree_flatten_with_path(part)
    counts = [(_where(path), len(a)) for path, a in zip(paths, leaves)]
    (first, n), *rest = counts
    for other, m in rest:
        if m != n:
            raise DataError(f"{source}: {name}{first} has {n} rows but {name}{other} has {m}: every array of {name} needs the same rows")
    return n


def _arrays(values, source: str) -> RawArrays:
    arrays = [_array(a, name, source) for name, a in zip(_ARRAYS, values)]
    for part in ("train", "test"):
        i, j = _ARRAYS.index(f"x_{part}"), _ARRAYS.index(f"y_{part}")
        nx, ny = _rows_of(arrays[i], f"x_{part}", source), _rows_of(arrays[j], f"y_{part}", source)
        if nx != ny:
            raise DataError(f"{source}: x_{part} has {nx} rows but y_{part} has {ny}: the arrays must pair up")
    return RawArrays(*arrays, source=source)


def is_loader(text: str) -> bool:
    """Whether ``--data`` names a loader function (``package.module:function`` or
    ``path/to/file.py:function``, the forms of ``--model``) rather than a file."""
    from search.train.usermodel import names_a_file

    target, sep, name = text.rpartition(":")
    file_loader = bool(sep) and names_a_file(target) and name.isidentifier()
    return (file_loader or bool(_LOADER.match(text))) and not Path(text).exists()


def read_arrays(path: str | os.PathLike | None) -> RawArrays:
    """A user's data: an ``.npz`` of the four arrays, or a loader ``module:function``.

    The loader is called with no arguments and returns ``(x_train, y_train), (x_test, y_test)``
    as ``keras.datasets.*.load_data()`` does, so it may preprocess. Nothing is changed here.

    Raises:
        DataError: no data given, the file or loader is missing or broken, arrays do not pair up.
    """
    if path is None:
        path = env("HPSEARCH_DATA")
    if path is None:
        raise DataError(f"a model of your own needs its data: {_USER_FIX}")
    text = str(path)
    if is_loader(text):
        return _call_loader(text)
    p = Path(text).expanduser()
    if not p.exists():
        raise DataError(f"--data {text!r} does not exist: {_USER_FIX}")
    if p.is_dir() or _sniff(p) != "zip":
        raise DataError(f"--data {text!r} is not an .npz file: {_USER_FIX}")
    try:
        with np.load(p, allow_pickle=False) as f:
            values = [_npz_part(f, name, p) for name in _ARRAYS]
            missing = [name for name, value in zip(_ARRAYS, values) if value is None]
            if missing:
                raise DataError(f"{p}: the npz file lacks {', '.join(missing)} (it has {', '.join(f.files) or 'nothing'}): {_USER_FIX}")
    except DataError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as e:
        raise DataError(f"{p} is not a readable npz file ({type(e).__name__}: {' '.join(str(e).split())[:120]}): it may be truncated; {_USER_FIX}") from None
    return _arrays(values, str(p))


def _npz_part(f, name: str, path: Path):
    """One of the four in an ``.npz``: the array ``name``, or, for a model with several inputs or
    outputs, the arrays ``name/KEY`` as a dict keyed by KEY (as ``model.fit`` takes them keyed by
    input or output name), a list where the keys are 0 to n-1; None where there is neither."""
    members = {k[len(name) + 1:]: k for k in f.files if k.startswith(f"{name}/")}
    if name in f.files and members:
        raise DataError(f"{path}: the npz file has both {name} and {', '.join(members.values())}: keep either the one array {name} or arrays {name}/NAME, one per input or output")
    if name in f.files:
        return f[name]
    if not members:
        return None
    if "" in members:
        raise DataError(f"{path}: the npz file's array {name}/ has no name after the slash: name it {name}/NAME after the model's input or output")
    if set(members) == {str(i) for i in range(len(members))}:
        return [f[members[str(i)]] for i in range(len(members))]
    return {key: f[k] for key, k in members.items()}


def _call_loader(text: str) -> RawArrays:
    """Import the loader as ``--model`` imports a builder (a file with its folder on the path; a
    module from the installed packages, PYTHONPATH or the current directory) and call it."""
    import importlib
    import importlib.util

    from search.train.backend import configure_backend
    from search.train.usermodel import current_directory_on_path, import_file, names_a_file

    module_name, _, name = text.rpartition(":")
    if names_a_file(module_name):
        path = Path(module_name).expanduser()
        if not path.is_file():
            raise DataError(f"--data {text}: {module_name} does not exist: check the path (relative to {Path.cwd()})")
        configure_backend()  # quietly: a loader that imports Keras would print TensorFlow's start-up lines
        module = import_file(path.resolve(), f"--data {text}", DataError)
    else:
        current_directory_on_path()
        try:
            found = importlib.util.find_spec(module_name)
        except (ImportError, ValueError):  # its package is missing
            found = None
        if found is None:
            raise DataError(f"--data {text}: no module {module_name!r} can be imported here: install it, put it on PYTHONPATH or run from its folder")
        configure_backend()
        try:
            module = importlib.import_module(module_name)
        except Exception as e:
            raise DataError(f"--data {text}: importing {module_name} failed ({type(e).__name__}: {' '.join(str(e).split())[:150]})") from None
    fn = getattr(module, name, None)
    if not callable(fn):
        raise DataError(f"--data {text}: {module_name} has no function {name!r}")
    try:
        result = fn()
    except Exception as e:
        raise DataError(f"--data {text}: {name}() failed: {type(e).__name__}: {' '.join(str(e).split())[:200]}") from None
    for value in (result, *(result if isinstance(result, (tuple, list)) else ())):
        kind = _dataset_kind(value)
        if kind:
            raise DataError(f"--data {text}: {name}() returned {kind}, not arrays: hpsearch splits, slices and fingerprints NumPy arrays, "
                            "so return (x_train, y_train), (x_test, y_test) as arrays (a tf.data.Dataset of (x, y) batches: "
                            "np.concatenate over its ds.as_numpy_iterator() batches)")
    try:
        (x_train, y_train), (x_test, y_test) = result
    except (TypeError, ValueError):
        raise DataError(f"--data {text}: {name}() must return (x_train, y_train), (x_test, y_test) as keras.datasets loaders do, got {type(result).__name__}") from None
    return _arrays((x_train, y_train, x_test, y_test), text)


def _dataset_kind(value) -> str | None:
    """What streaming dataset ``value`` is (a ``tf.data.Dataset``, a Keras ``PyDataset``, a
    generator, a PyTorch ``DataLoader``), or None: a loader must return arrays."""
    import inspect

    if hasattr(value, "element_spec"):
        return "a tf.data.Dataset"
    if inspect.isgenerator(value):
        return "a generator"
    bases = {cls.__name__ for cls in type(value).__mro__}
    if "PyDataset" in bases:
        return "a keras.utils.PyDataset"
    if "DataLoader" in bases:
        return "a DataLoader"
    return None


def holdout_size(n: int) -> int:
    """Rows held out for validation from ``n`` training rows of a user's data: one in six, at
    most :data:`HOLDOUT_SIZE` (MNIST's 60,000 give the recipe's 10,000)."""
    return max(1, min(HOLDOUT_SIZE, n // 6))


def check_user_split(raw: RawArrays, train_size: int | None, validation: str | None) -> None:
    """:func:`check_split` for a user's arrays.

    Raises:
        DataError: too few rows for the hold-out or for ``train_size``.
    """
    n = rows(raw.x_train)
    if validation == "holdout" and n < 2:
        raise DataError(f"{raw.source} has {n} training row, too few to hold any out for validation: use --validation test")
    available = n - holdout_size(n) if validation == "holdout" else n
    if train_size is not None and train_size > available:
        split = f" with --validation {validation}" if validation else ""
        raise DataError(f"--train-size {train_size} exceeds the {available} training rows of {raw.source}{split}: use --train-size {available} or less")


def split_arrays(raw: RawArrays, *, train_size: int | None, validation: str) -> Dataset:
    """A user's arrays split as the recipe's are, and nothing else done to them."""
    check_user_split(raw, train_size, validation)
    if validation == "holdout":
        n = rows(raw.x_train)
        fit, val = slice(None, n - holdout_size(n)), slice(n - holdout_size(n), None)
        x_fit, y_fit, x_val, y_val = (take_rows(raw.x_train, fit), take_rows(raw.y_train, fit),
                                      take_rows(raw.x_train, val), take_rows(raw.y_train, val))
    else:
        x_fit, y_fit, x_val, y_val = raw.x_train, raw.y_train, raw.x_test, raw.y_test
    if train_size is not None:
        x_fit, y_fit = take_rows(x_fit, slice(None, train_size)), take_rows(y_fit, slice(None, train_size))
    return Dataset(x_fit, y_fit, x_val, y_val, raw.x_test, raw.y_test, raw.fingerprint(), raw.source, validation)
