"""KerasTuner's getting-started hypermodel, unchanged: run it on hpsearch with

    python docs/examples/make_mnist_npz.py /tmp/mnist-images.npz
    hpsearch run --model docs/examples/getting_started.py:build_model --data /tmp/mnist-images.npz --trials 10 --epochs 5
    hpsearch run --model docs/examples/getting_started.py:MyHyperModel --data /tmp/mnist-images.npz --study mine --trials 10 --epochs 5

``build_model`` is the guide's "define the search space" function: a loop over ``num_layers``,
units with a step, an activation ``Choice``, a ``Boolean`` dropout and a log-uniform learning
rate. ``MyHyperModel`` is the guide's ``HyperModel`` subclass whose ``fit`` tunes ``shuffle``
(it needs keras-tuner installed: ``pip install 'hpsearch[kerastuner]'``).
"""

import keras
from keras import layers


def build_model(hp):
    model = keras.Sequential()
    model.add(layers.Flatten())
    # Tune the number of layers.
    for i in range(hp.Int("num_layers", 1, 3)):
        model.add(
            layers.Dense(
                # Tune number of units separately.
                units=hp.Int(f"units_{i}", min_value=32, max_value=512, step=32),
                activation=hp.Choice("activation", ["relu", "tanh"]),
            )
        )
    if hp.Boolean("dropout"):
        model.add(layers.Dropout(rate=0.25))
    model.add(layers.Dense(10, activation="softmax"))
    learning_rate = hp.Float("lr", min_value=1e-4, max_value=1e-2, sampling="log")
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
        loss="categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


try:
    import keras_tuner
except ImportError:  # the HyperModel below needs keras-tuner; build_model does not
    keras_tuner = None

if keras_tuner is not None:

    class MyHyperModel(keras_tuner.HyperModel):
        def build(self, hp):
            return build_model(hp)

        def fit(self, hp, model, *args, **kwargs):
            return model.fit(
                *args,
                # Tune whether to shuffle the data in each epoch.
                shuffle=hp.Boolean("shuffle"),
                **kwargs,
            )
