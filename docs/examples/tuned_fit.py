"""A ``HyperModel`` whose ``fit`` tunes the batch size, written without keras-tuner (any class
with ``build(hp)`` and ``fit(hp, model, *args, **kwargs)`` works). ``fit`` must pass
``**kwargs`` on: they carry the validation data, the epochs and hpsearch's reporting callback.

    hpsearch run --model docs/examples/tuned_fit.py:BatchSizeModel --data /tmp/mnist-images.npz --trials 12 --epochs 5
"""

import keras
from keras import layers


class BatchSizeModel:
    def build(self, hp):
        model = keras.Sequential([
            keras.Input(shape=(28, 28, 1)),
            layers.Flatten(),
            layers.Dense(hp.Int("units", 64, 512, step=64), activation="relu"),
            layers.Dense(10, activation="softmax"),
        ])
        model.compile(optimizer=keras.optimizers.Adam(hp.Float("learning_rate", 1e-4, 1e-2, sampling="log")),
                      loss="categorical_crossentropy", metrics=["accuracy"])
        return model

    def fit(self, hp, model, *args, **kwargs):
        return model.fit(*args, batch_size=hp.Choice("batch_size", [32, 64, 128, 256]), **kwargs)
