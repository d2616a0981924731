"""A small CNN on 28x28 images: two convolutions whose filters, kernel size and dropout are
searched with the learning rate. ``default=`` values make the study's first trial.

    hpsearch run --model docs/examples/cnn.py:build --data /tmp/mnist-images.npz --trials 20 --epochs 10
"""

import keras
from keras import layers


def build(hp):
    inputs = keras.Input(shape=(28, 28, 1))
    x = inputs
    for i in range(2):
        x = layers.Conv2D(hp.Int(f"filters_{i}", 8, 64, step=2, sampling="log", default=16),
                          hp.Choice("kernel", [3, 5], default=3), activation="relu", padding="same")(x)
        x = layers.MaxPooling2D()(x)
    x = layers.Flatten()(x)
    x = layers.Dropout(hp.Float("dropout", 0.0, 0.5, step=0.1, default=0.2))(x)
    outputs = layers.Dense(10, activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.Adam(hp.Float("learning_rate", 1e-4, 1e-1, sampling="log", default=1e-3)),
                  loss="categorical_crossentropy", metrics=["accuracy"])
    return model
