"""A regression searched on its validation loss (minimised: ``--objective val_loss``), with its
data from a loader function, as ``keras.datasets.*.load_data()`` returns it.

    hpsearch run --model docs/examples/regression.py:build \\
        --data docs/examples/regression.py:load_data --objective val_loss --trials 10 --epochs 20
"""

import keras
import numpy as np
from keras import layers


def load_data(n: int = 2400, seed: int = 0):
    """y = sin(3 x0) + x1^2 - x2 + noise over 8 features, 5/6 for training, 1/6 for testing."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, size=(n, 8)).astype("float32")
    y = (np.sin(3 * x[:, 0]) + x[:, 1] ** 2 - x[:, 2] + 0.05 * rng.standard_normal(n)).astype("float32")[:, None]
    cut = n * 5 // 6
    return (x[:cut], y[:cut]), (x[cut:], y[cut:])


def build(hp):
    model = keras.Sequential([keras.Input(shape=(8,))])
    for i in range(hp.Int("layers", 1, 3, default=2)):
        model.add(layers.Dense(hp.Int(f"units_{i}", 16, 128, step=16, default=64), activation=hp.Choice("activation", ["relu", "tanh"])))
    model.add(layers.Dense(1))
    model.compile(optimizer=keras.optimizers.Adam(hp.Float("learning_rate", 1e-4, 3e-2, sampling="log", default=3e-3)), loss="mse")
    return model
