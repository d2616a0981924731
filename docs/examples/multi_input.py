"""A model with two inputs and two outputs, its data given as dicts of arrays, as ``model.fit``
takes them, searched on one output's validation accuracy.

    hpsearch run --model docs/examples/multi_input.py:build \\
        --data docs/examples/multi_input.py:load_data --objective val_kind_accuracy --trials 10 --epochs 10

The loader returns ``(x_train, y_train), (x_test, y_test)`` where each x is a dict keyed by the
model's input names and each y a dict keyed by its output names; hpsearch splits the hold-out,
slices ``--train-size`` and fingerprints the study's data array by array, and hands the dicts to
``fit`` as they are. Lists or tuples of arrays work the same way.

The same data as an ``.npz`` (``python docs/examples/multi_input.py multi.npz`` writes it, then
``--data multi.npz``): each dict's arrays saved as ``x_train/signal``, ``x_train/meta``,
``y_train/kind`` ..., which hpsearch reads back as the dicts (``y_train/0``, ``y_train/1`` as a list).
"""

import keras
import numpy as np
from keras import layers


def load_data(n: int = 2400, seed: int = 0):
    """A noisy 32-step signal of one of three shapes (a ramp, a step, a bump) and 4 readings of
    the sensor that took it; the outputs are the shape (``kind``) and its height (``level``)."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 1, 32, dtype="float32")
    kind = rng.integers(0, 3, n)
    level = rng.uniform(0.5, 2.0, n).astype("float32")
    shapes = np.stack([t, (t > 0.5).astype("float32"), np.exp(-((t - 0.5) ** 2) / 0.02)])
    meta = rng.normal(size=(n, 4)).astype("float32")
    signal = (level[:, None] * shapes[kind] + 0.3 * meta[:, :1] + 0.4 * rng.standard_normal((n, 32))).astype("float32")
    x = {"signal": signal, "meta": meta}
    y = {"kind": np.eye(3, dtype="float32")[kind], "level": level[:, None]}
    cut = n * 5 // 6
    return ({k: v[:cut] for k, v in x.items()}, {k: v[:cut] for k, v in y.items()}), \
           ({k: v[cut:] for k, v in x.items()}, {k: v[cut:] for k, v in y.items()})


def build(hp):
    signal = keras.Input(shape=(32,), name="signal")
    meta = keras.Input(shape=(4,), name="meta")
    h = layers.Concatenate()([signal, meta])
    for i in range(hp.Int("layers", 1, 3, default=2)):
        h = layers.Dense(hp.Int(f"units_{i}", 16, 128, step=16, default=64), activation="relu")(h)
    kind = layers.Dense(3, activation="softmax", name="kind")(h)
    level = layers.Dense(1, name="level")(h)
    model = keras.Model({"signal": signal, "meta": meta}, {"kind": kind, "level": level})
    model.compile(
        optimizer=keras.optimizers.Adam(hp.Float("learning_rate", 1e-4, 3e-2, sampling="log", default=3e-3)),
        loss={"kind": "categorical_crossentropy", "level": "mse"},
        loss_weights={"kind": 1.0, "level": hp.Float("level_weight", 0.1, 1.0, default=0.5)},
        metrics={"kind": ["accuracy"]},
    )
    return model


def save_npz(path: str) -> None:
    """Write :func:`load_data`'s dicts to ``path`` as one ``.npz``, one array per key: ``x_train/signal`` and so on."""
    (x_train, y_train), (x_test, y_test) = load_data()
    parts = {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}
    np.savez(path, **{f"{part}/{key}": array for part, arrays in parts.items() for key, array in arrays.items()})


if __name__ == "__main__":
    import sys

    save_npz(sys.argv[1] if len(sys.argv) > 1 else "multi.npz")
