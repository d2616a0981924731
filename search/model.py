"""Build and compile the recipe's model: the only place Keras layers appear."""

from __future__ import annotations

import gc

__all__ = ["build_model", "clear_session"]


def clear_session() -> None:
    """Free the previous trial's graph and weights before the next model is built.

    KerasTuner does the same in its build step: without it, a worker that runs hundreds of
    trials keeps every model's state alive in the backend and slows down.
    """
    import keras

    keras.backend.clear_session()
    gc.collect()


def build_model(learning_rate: float, *, hidden_units: int = 1000, input_dim: int = 784, num_classes: int = 10):
    """The recipe's model: ``Dense(1000, relu)`` then ``Dense(10, softmax)``, compiled.

    Args:
        learning_rate: Adam's learning rate.
        hidden_units: width of the hidden layer (the recipe's 1000).

    Returns:
        A compiled ``keras.Model`` with categorical cross-entropy loss and an accuracy metric.
    """
    import keras

    model = keras.Sequential(
        [
            keras.Input(shape=(input_dim,)),
            keras.layers.Dense(hidden_units, activation="relu"),
            keras.layers.Dense(num_classes, activation="softmax"),
        ],
        name="recipe_mlp",
    )
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
        loss="categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model
