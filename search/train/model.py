"""Build and compile the recipe's model: the only place Keras layers and callbacks appear.

A worker builds the model once and reuses it for every trial (:class:`ModelCache`):
:func:`reset_model` gives it fresh initial weights from the same initializers, a zeroed Adam
state and the trial's learning rate, which is the model the recipe would build, without
tracing and compiling its training and evaluation functions again for each learning rate
(docs/benchmarks.md has the measured saving). The backend's own set-up (its session,
seeds, device) is :mod:`search.train.backend`'s.
"""

from __future__ import annotations

from search.train.backend import clear_session

__all__ = ["ModelCache", "build_model", "epoch_callback", "initial_weights", "reset_model", "steps_per_execution"]


def steps_per_execution(batches_per_epoch: int) -> int:
    """Training steps per call into the backend: a whole epoch on TensorFlow, else 1.

    TensorFlow runs that many steps inside one compiled loop instead of returning to Python
    after each batch. PyTorch accepts only 1, and JAX's trainer loops over the steps in
    Python anyway, so they keep 1.
    """
    from search.train.backend import name

    return max(1, batches_per_epoch) if name() == "tensorflow" else 1


def epoch_callback(on_train_begin, on_epoch_end):
    """A Keras callback for ``model.fit``: ``on_train_begin()`` as training starts, and
    ``on_epoch_end(epoch, logs)`` after each epoch, which returns True to stop training."""
    import keras

    class _EpochCallback(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            on_train_begin()

        def on_epoch_end(self, epoch, logs=None):
            if on_epoch_end(epoch, dict(logs or {})):
                self.model.stop_training = True

    return _EpochCallback()


def build_model(learning_rate: float, *, hidden_units: int = 1000, input_dim: int = 784, num_classes: int = 10,
                steps_per_execution: int = 1, jit_compile="auto"):
    """The recipe's model: ``Dense(1000, relu)`` then ``Dense(10, softmax)``, compiled.

    Args:
        learning_rate: Adam's learning rate.
        hidden_units: width of the hidden layer (the recipe's 1000).
        steps_per_execution: batches per call into the backend (see :func:`steps_per_execution`).
        jit_compile: Keras's setting; ``"auto"`` compiles with XLA on GPUs and JAX, not on
            TensorFlow's CPU, where it was slower here.

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
        steps_per_execution=steps_per_execution,
        jit_compile=jit_compile,
    )
    # Build the compiled loss, metrics and Adam's slots now, as fit does on its first call from
    # its first batch. With JAX that first batch costs a draw from NumPy's random state (the
    # shuffle), so a new model would shuffle differently from a reused one after the same seed;
    # built here, a trial's shuffles depend on its seed only (and reset_model can zero Adam's
    # slots before the first fit).
    import numpy as np

    model._symbolic_build(data_batch=(np.zeros((1, input_dim), "float32"), np.zeros((1, num_classes), "float32")))
    return model


def reset_model(model, learning_rate: float) -> None:
    """Make ``model`` what :func:`build_model` would return for ``learning_rate``.

    New initial weights are drawn from the layers' own initializers (fresh instances, so with
    ``keras.utils.set_random_seed`` the draw depends on the seed only), every Adam slot and the
    iteration count are zeroed, and the learning rate is set.
    """
    import keras

    for layer in model.layers:
        for name in ("kernel", "bias"):
            variable = getattr(layer, name, None)
            if variable is None:
                continue
            init = getattr(layer, f"{name}_initializer")
            config = init.get_config()
            if "seed" in config:
                config["seed"] = None  # draw from the global random state, as a new layer would
            variable.assign(type(init).from_config(config)(variable.shape, variable.dtype))
    optimizer = model.optimizer
    rate = optimizer._learning_rate  # the variable behind the `learning_rate` property
    for variable in optimizer.variables:
        if variable is not rate:
            variable.assign(keras.ops.zeros(variable.shape, variable.dtype))
    rate.assign(learning_rate)


def initial_weights(seed: int | None, *, hidden_units: int = 1000, input_dim: int = 784, num_classes: int = 10):
    """The recipe's initial weights as NumPy arrays ``[kernel1, bias1, kernel2, bias2]``.

    Drawn as :func:`reset_model` draws them after ``keras.utils.set_random_seed(seed)``: a
    ``Dense`` layer's Glorot-uniform kernels (fans of 784x1000 and 1000x10) and zero biases, in
    the layers' order, so a lane member starts where the same trial starts alone
    (:mod:`search.train.lanes`). ``seed=None`` draws from the current global random state.
    """
    import keras

    from search.train.backend import set_seed

    if seed is not None:
        set_seed(seed)
    out = []
    for shape in ((input_dim, hidden_units), (hidden_units, num_classes)):
        # A fresh initializer per draw, in the layers' order, as reset_model makes them: one
        # made without a seed takes its own from the global random state when it is made.
        out.append(keras.ops.convert_to_numpy(keras.initializers.GlorotUniform()(shape, "float32")))
        out.append(keras.ops.convert_to_numpy(keras.initializers.Zeros()(shape[1:], "float32")))
    return out


class ModelCache:
    """One compiled model per process and shape, reset for each trial.

    Example:
        >>> models = ModelCache()
        >>> model = models.get(0.01, hidden_units=1000, steps_per_execution=49)
    """

    def __init__(self):
        self._key = None
        self._model = None

    def get(self, learning_rate: float, **build_kwargs):
        """The cached model for ``build_kwargs``, built (after clearing the session) if missing.

        Call :func:`reset_model` on it before training: this only builds.
        """
        key = tuple(sorted(build_kwargs.items()))
        if self._model is None or key != self._key:
            self.discard()
            self._model = build_model(learning_rate, **build_kwargs)
            self._key = key
        return self._model

    def discard(self) -> None:
        """Drop the cached model (after a failed trial, whose state may be broken)."""
        self._model, self._key = None, None
        clear_session()
