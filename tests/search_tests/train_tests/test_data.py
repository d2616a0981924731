import gzip
import struct

import numpy as np
import pytest

from search.train.data import load_dataset, preprocess, read_mnist
from search.errors import DataError


def _write_idx(path, array, compress):
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if compress:
        with gzip.open(str(path) + ".gz", "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def _small(n_train=12_000, n_test=100, seed=0):
    rng = np.random.default_rng(seed)
    return (
        rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        rng.integers(0, 10, n_train).astype(np.uint8),
        rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        rng.integers(0, 10, n_test).astype(np.uint8),
    )


def _npz(path, arrays, **override):
    names = ("x_train", "y_train", "x_test", "y_test")
    d = dict(zip(names, arrays))
    d.update(override)
    np.savez(path, **d)
    return path


def test_real_mnist_reads_with_the_documented_layout(mnist_raw):
    assert mnist_raw.x_train.shape == (60_000, 28, 28) and mnist_raw.x_test.shape == (10_000, 28, 28)
    assert list(mnist_raw.y_train[:10]) == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert np.bincount(mnist_raw.y_test).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_preprocessing_is_the_recipes():
    x = np.array([[[0] * 28] * 28, [[255] * 28] * 28], dtype=np.uint8)
    xp, yp = preprocess(x, np.array([3, 9]))
    assert xp.shape == (2, 784) and xp.dtype == np.float32
    assert xp.min() == 0.0 and xp.max() == 1.0
    assert yp.tolist()[0] == [0, 0, 0, 1, 0, 0, 0, 0, 0, 0] and yp[1, 9] == 1.0


@pytest.mark.parametrize("compress", [False, True])
def test_idx_directory_matches_npz(tmp_path, compress):
    arrays = _small()
    names = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    for name, a in zip(names, arrays):
        _write_idx(tmp_path / name, a, compress)
    from_idx = read_mnist(tmp_path)
    from_npz = read_mnist(_npz(tmp_path / "m.npz", arrays))
    assert np.array_equal(from_idx.x_train, from_npz.x_train)
    assert np.array_equal(from_idx.y_test, from_npz.y_test)
    assert from_idx.fingerprint() == from_npz.fingerprint()


def test_holdout_is_the_last_10000_training_images(tmp_path):
    arrays = _small(n_train=12_000)
    path = _npz(tmp_path / "m.npz", arrays)
    ds = load_dataset(path, train_size=None, validation="holdout")
    assert ds.x_train.shape == (2_000, 784) and ds.x_val.shape == (10_000, 784)
    assert np.array_equal(ds.x_val[0], arrays[0][2_000].reshape(784) / np.float32(255))
    small = load_dataset(path, train_size=500, validation="holdout")
    assert small.x_train.shape == (500, 784)
    test_mode = load_dataset(path, train_size=None, validation="test")
    assert test_mode.x_train.shape == (12_000, 784) and np.array_equal(test_mode.x_val, test_mode.x_test)


def test_dataset_is_loaded_once_per_process(tmp_path):
    path = _npz(tmp_path / "m.npz", _small())
    a = load_dataset(path, train_size=100, validation="holdout")
    b = load_dataset(path, train_size=100, validation="holdout")
    assert a is b


def test_fingerprint_changes_with_the_data(tmp_path):
    a = read_mnist(_npz(tmp_path / "a.npz", _small(seed=1)))
    b = read_mnist(_npz(tmp_path / "b.npz", _small(seed=2)))
    assert a.fingerprint() != b.fingerprint()


def _truncated(tmp_path):
    src = _npz(tmp_path / "full.npz", _small())
    data = src.read_bytes()
    bad = tmp_path / "trunc.npz"
    bad.write_bytes(data[: len(data) // 2])
    return bad


@pytest.mark.parametrize(
    "make, fragment",
    [
        (lambda p: p / "missing.npz", "does not exist"),
        (_truncated, "not a readable npz file"),
        (lambda p: _junk(p), "neither an .npz file nor a directory of IDX files"),
        (lambda p: _npy(p), "is a single .npy array"),
        (lambda p: _npz(p / "m.npz", _small(), x_train=np.full((12_000, 28, 28), 127.5)), "holds fractional values up to 127.5"),
        (lambda p: _keys(p), "lacks y_test"),
        (lambda p: _npz(p / "s.npz", _small(), x_train=np.zeros((12_000, 32, 32), np.uint8)), "x_train has shape (12000, 32, 32)"),
        (lambda p: _npz(p / "d.npz", _small(), x_train=np.full((12_000, 28, 28), "a")), "x_train has dtype <U1"),
        (lambda p: _npz(p / "r.npz", _small(), y_train=np.full(12_000, 10)), "labels from 10 to 10, expected 0-9"),
        (lambda p: _npz(p / "n.npz", _small(), y_test=np.full(100, -1)), "expected 0-9"),
        (lambda p: _npz(p / "c.npz", _small(), y_train=np.zeros(5, np.uint8)), "has 12000 images but y_train has 5 labels"),
        (lambda p: _npz(p / "f.npz", _small(), x_test=np.full((100, 28, 28), 300.0)), "values outside 0-255"),
    ],
)
def test_bad_files_give_one_line_errors(tmp_path, make, fragment):
    path = make(tmp_path)
    with pytest.raises(DataError) as e:
        read_mnist(path)
    assert fragment in str(e.value)
    assert "\n" not in str(e.value)


def _junk(p):
    (p / "junk.npz").write_bytes(b"hello")
    return p / "junk.npz"


def _keys(p):
    a = _small()
    np.savez(p / "k.npz", x_train=a[0], y_train=a[1], x_test=a[2])
    return p / "k.npz"


def test_truncated_idx_file(tmp_path):
    arrays = _small()
    names = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    for name, a in zip(names, arrays):
        _write_idx(tmp_path / name, a, False)
    f = tmp_path / "train-images-idx3-ubyte"
    f.write_bytes(f.read_bytes()[:-100])
    with pytest.raises(DataError, match="truncated or corrupt"):
        read_mnist(tmp_path)


def test_directory_missing_an_idx_file(tmp_path):
    with pytest.raises(DataError, match="has no train-images-idx3-ubyte"):
        read_mnist(tmp_path)


def test_too_few_images_for_the_holdout(tmp_path):
    path = _npz(tmp_path / "tiny.npz", _small(n_train=5_000))
    with pytest.raises(DataError, match="too few to hold out 10000"):
        load_dataset(path, train_size=None, validation="holdout")


def test_offline_keras_download_names_the_data_flag(monkeypatch, tmp_path):
    """No --data and no cached Keras copy, offline: the message says to pass --data."""
    monkeypatch.delenv("HPSEARCH_DATA", raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setenv("HOME", str(tmp_path))
    import keras

    def offline(*a, **k):
        raise OSError("Temporary failure in name resolution")

    monkeypatch.setattr(keras.datasets.mnist, "load_data", offline)
    with pytest.raises(DataError, match="pass --data PATH"):
        read_mnist(None)


def test_device_tensors_are_made_once_and_reused_across_trials(mnist):
    import numpy as np

    from search.train.data import device_data

    ds = load_dataset(mnist, train_size=256, validation="holdout")
    first = device_data(ds)
    assert device_data(ds) is first  # the next trial gets the same tensors, no new copy
    np.testing.assert_array_equal(np.asarray(first.x_train), ds.x_train)
    np.testing.assert_array_equal(np.asarray(first.y_val), ds.y_val)
    other = load_dataset(mnist, train_size=128, validation="holdout")
    assert device_data(other) is not first and np.asarray(device_data(other).x_train).shape == (128, 784)


def _npy(p):
    np.save(p / "x.npy", _small()[0])
    return p / "x.npy"


def test_images_already_scaled_to_floats_are_scaled_back_not_truncated(tmp_path):
    """Issue 15: x/255 as float32 used to be cast to 0/1 and every rate trained at chance."""
    x_train, y_train, x_test, y_test = _small()
    raw = read_mnist(_npz(tmp_path / "raw.npz", (x_train, y_train, x_test, y_test)))
    scaled = read_mnist(_npz(tmp_path / "scaled.npz", (x_train.astype(np.float32) / 255, y_train, x_test.astype(np.float32) / 255, y_test)))
    assert np.array_equal(scaled.x_train, raw.x_train) and np.array_equal(scaled.x_test, raw.x_test)
    assert scaled.fingerprint() == raw.fingerprint()
    mixed = _npz(tmp_path / "mixed.npz", (x_train.astype(np.float32) / 255, y_train, x_test, y_test))
    with pytest.raises(DataError, match="one of x_train and x_test is scaled"):
        read_mnist(mixed)


def test_a_valid_npz_is_read_whatever_its_name(tmp_path):
    arrays = _small()
    misnamed = _npz(tmp_path / "train-images-idx3-ubyte.npz", arrays)
    renamed = tmp_path / "mnist-idx.bin"
    misnamed.rename(renamed)
    assert read_mnist(renamed).x_train.shape == (12_000, 28, 28)


# --- a user's data: arrays, or dicts, lists and tuples of them (several inputs or outputs) ------


def _loader_file(tmp_path, body: str, name: str = "loader") -> str:
    path = tmp_path / f"{name}.py"
    path.write_text("import numpy as np\n\ndef load():\n" + "".join(f"    {line}\n" for line in body.splitlines()))
    return f"{path}:load"


def test_a_plain_arrays_fingerprint_is_what_studies_already_stored(tmp_path):
    """Studies created before structures were taken store this fingerprint; a worker of theirs must still match it."""
    import hashlib

    from search.train.data import read_arrays

    rng = np.random.default_rng(0)
    arrays = dict(x_train=rng.random((30, 4), dtype="float32"), y_train=np.arange(30), x_test=rng.random((6, 4), dtype="float32"), y_test=np.arange(6))
    np.savez(tmp_path / "d.npz", **arrays)
    h = hashlib.sha256()
    for a in arrays.values():
        h.update(f"{a.shape}{a.dtype.str}".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    assert read_arrays(tmp_path / "d.npz").fingerprint() == h.hexdigest()[:16]


def test_dicts_and_lists_of_arrays_are_split_and_sliced_array_by_array(tmp_path):
    from search.train.data import read_arrays, rows, split_arrays

    spec = _loader_file(tmp_path, (
        "x = {'image': np.arange(60 * 3).reshape(60, 3), 'meta': np.arange(60)}\n"
        "y = [np.arange(60) % 2, np.arange(60 * 2).reshape(60, 2)]\n"
        "return (x, y), ({'image': np.zeros((5, 3)), 'meta': np.zeros(5)}, [np.zeros(5), np.zeros((5, 2))])"
    ))
    raw = read_arrays(spec)
    assert set(raw.x_train) == {"image", "meta"} and isinstance(raw.y_train, list) and rows(raw.x_train) == 60
    held = split_arrays(raw, train_size=20, validation="holdout")  # the last sixth held out, then the first 20 rows
    assert held.x_train["image"].shape == (20, 3) and held.x_train["meta"].tolist() == list(range(20))
    assert held.x_val["meta"].tolist() == list(range(50, 60)) and held.y_val[1].shape == (10, 2)
    assert [a.shape for a in held.y_train] == [(20,), (20, 2)]
    on_test = split_arrays(raw, train_size=None, validation="test")
    assert on_test.x_val["image"].shape == (5, 3) and on_test.y_train[1].shape == (60, 2)
    # the fingerprint sees every array and where it sits
    renamed = read_arrays(_loader_file(tmp_path, (
        "x = {'pixels': np.arange(60 * 3).reshape(60, 3), 'meta': np.arange(60)}\n"
        "y = [np.arange(60) % 2, np.arange(60 * 2).reshape(60, 2)]\n"
        "return (x, y), ({'pixels': np.zeros((5, 3)), 'meta': np.zeros(5)}, [np.zeros(5), np.zeros((5, 2))])"
    ), name="renamed"))
    assert renamed.fingerprint() != raw.fingerprint() and read_arrays(spec).fingerprint() == raw.fingerprint()


def test_a_list_of_numbers_is_one_array_not_a_structure(tmp_path):
    from search.train.data import read_arrays

    raw = read_arrays(_loader_file(tmp_path, "return ([[1, 2]] * 12, list(range(12))), ([[3, 4]] * 3, [0, 1, 2])"))
    assert raw.x_train.shape == (12, 2) and raw.y_train.shape == (12,)


@pytest.mark.parametrize("body, message", [
    ("return ({'a': np.zeros((9, 2)), 'b': np.zeros((8, 2))}, np.zeros(9)), (np.zeros((2, 2)), np.zeros(2))",
     "x_train['a'] has 9 rows but x_train['b'] has 8: every array of x_train needs the same rows"),
    ("return ({'a': np.zeros((9, 2))}, [np.zeros(9), np.zeros(7)]), (np.zeros((2, 2)), np.zeros(2))",
     "y_train[0] has 9 rows but y_train[1] has 7"),
    ("return ({'a': np.zeros((9, 2))}, np.zeros(8)), (np.zeros((2, 2)), np.zeros(2))",
     "x_train has 9 rows but y_train has 8: the arrays must pair up"),
    ("return ({}, np.zeros(8)), (np.zeros((2, 2)), np.zeros(2))", "x_train is empty"),
    ("return ({'a': np.zeros((9, 2)), 'b': np.zeros(0)}, np.zeros(9)), (np.zeros((2, 2)), np.zeros(2))", "x_train['b'] is empty"),
    ("return ({'a': np.array([None] * 9)}, np.zeros(9)), (np.zeros((2, 2)), np.zeros(2))", "x_train['a'] holds Python objects"),
])
def test_a_structure_that_does_not_pair_up_is_one_line_naming_the_array(tmp_path, body, message):
    from search.train.data import read_arrays

    with pytest.raises(DataError) as e:
        read_arrays(_loader_file(tmp_path, body))
    assert message in str(e.value) and "\n" not in str(e.value), str(e.value)


@pytest.mark.parametrize("body, kind", [
    ("import tensorflow as tf\nds = tf.data.Dataset.from_tensor_slices((np.zeros((8, 2)), np.zeros(8))).batch(4)\nreturn ds, ds", "a tf.data.Dataset"),
    ("return ((np.zeros(2), np.zeros(1)) for _ in range(3)), (np.zeros((2, 2)), np.zeros(2))", "a generator"),
], ids=["tf.data", "generator"])
def test_a_loader_returning_a_streaming_dataset_is_told_to_return_arrays(tmp_path, body, kind):
    """A Keras user's loader often ends in a tf.data pipeline; unpacking it would iterate its batches."""
    from search.train.data import read_arrays

    with pytest.raises(DataError) as e:
        read_arrays(_loader_file(tmp_path, body))
    assert f"load() returned {kind}, not arrays" in str(e.value) and "as_numpy_iterator" in str(e.value)


def test_an_npz_holds_several_inputs_and_outputs_as_named_arrays(tmp_path):
    """``x_train/NAME`` arrays make a dict keyed by NAME, ``y_train/0``, ``y_train/1`` a list:
    the same data, and the same fingerprint, as a loader returning the dict and the list."""
    from search.train.data import read_arrays

    rng = np.random.default_rng(0)
    x = {"image": rng.random((30, 4), dtype="float32"), "meta": np.arange(30)}
    y = [np.arange(30) % 2, rng.random((30, 2))]
    xt, yt = {"image": np.zeros((6, 4), "float32"), "meta": np.zeros(6, "int64")}, [np.zeros(6, "int64"), np.zeros((6, 2))]
    np.savez(tmp_path / "d.npz", **{f"x_train/{k}": v for k, v in x.items()}, **{f"y_train/{i}": v for i, v in enumerate(y)},
             **{f"x_test/{k}": v for k, v in xt.items()}, **{f"y_test/{i}": v for i, v in enumerate(yt)})
    raw = read_arrays(tmp_path / "d.npz")
    assert list(raw.x_train) == ["image", "meta"] and np.array_equal(raw.x_train["image"], x["image"])
    assert isinstance(raw.y_train, list) and [a.shape for a in raw.y_train] == [(30,), (30, 2)]
    loader = _loader_file(tmp_path, (
        f"f = np.load({str(tmp_path / 'd.npz')!r})\n"
        "x = {'image': f['x_train/image'], 'meta': f['x_train/meta']}\n"
        "y = [f['y_train/0'], f['y_train/1']]\n"
        "xt = {'image': f['x_test/image'], 'meta': f['x_test/meta']}\n"
        "return (x, y), (xt, [f['y_test/0'], f['y_test/1']])"
    ))
    assert read_arrays(loader).fingerprint() == raw.fingerprint()
    # eleven outputs: y_train/10 sorts after y_train/1 as text, the list keeps their numbers' order
    many = {f"y_train/{i}": np.full(30, i) for i in range(11)}
    np.savez(tmp_path / "m.npz", x_train=x["image"], x_test=xt["image"], y_test=np.zeros(6), **many)
    assert [int(a[0]) for a in read_arrays(tmp_path / "m.npz").y_train] == list(range(11))


@pytest.mark.parametrize("arrays, message", [
    ({"x_train": np.zeros((9, 2)), "x_train/a": np.zeros((9, 2)), "y_train": np.zeros(9), "x_test": np.zeros((2, 2)), "y_test": np.zeros(2)},
     "has both x_train and x_train/a: keep either the one array x_train or arrays x_train/NAME"),
    ({"x_train/": np.zeros((9, 2)), "y_train": np.zeros(9), "x_test": np.zeros((2, 2)), "y_test": np.zeros(2)},
     "x_train/ has no name after the slash"),
    ({"x_train/a": np.zeros((9, 2)), "x_train/b": np.zeros((8, 2)), "y_train": np.zeros(9), "x_test": np.zeros((2, 2)), "y_test": np.zeros(2)},
     "x_train['a'] has 9 rows but x_train['b'] has 8"),
    ({"x_train/a": np.zeros((9, 2)), "x_test": np.zeros((2, 2)), "y_test": np.zeros(2)},
     "lacks y_train (it has x_train/a, x_test, y_test)"),
])
def test_an_npz_of_named_arrays_that_do_not_fit_is_one_line(tmp_path, arrays, message):
    from search.train.data import read_arrays

    np.savez(tmp_path / "d.npz", **arrays)
    with pytest.raises(DataError) as e:
        read_arrays(tmp_path / "d.npz")
    assert message in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_the_multi_input_examples_npz_is_its_loaders_data(tmp_path):
    """docs/examples/multi_input.py writes its loader's dicts as one .npz; read back, they are the
    same study data (fingerprint) as the loader's."""
    import importlib.util

    from search.train.data import read_arrays
    from tests.conftest import REPO

    example = REPO / "docs" / "examples" / "multi_input.py"
    spec = importlib.util.spec_from_file_location("multi_input_example", example)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.save_npz(str(tmp_path / "multi.npz"))
    raw = read_arrays(tmp_path / "multi.npz")
    assert set(raw.x_train) == {"signal", "meta"} and set(raw.y_test) == {"kind", "level"}
    assert raw.fingerprint() == read_arrays(f"{example}:load_data").fingerprint()
