"""The reference recipe as a model like any other: KerasTuner's ``build(hp)`` contract (issue 23).

The recipe's model is built here and only here, through the contract every user's model
follows: :meth:`Recipe.build` draws ``learning_rate`` log-uniform from ``hp`` and returns the
compiled ``Dense(1000, relu) -> Dense(10, softmax)`` with Adam at that rate. The worker's recipe
objective (:class:`search.train.objective.Objective`) builds every trial's model through it; it
keeps its own way of fitting (the study's seeded batch order, data on the device, a whole
epoch per call on TensorFlow) and the hand-written lanes of :mod:`search.train.lanes`, which
are what make the recipe fast, and its trained histories are the ones it trained before it was
written this way (tested).

What a user's model would not do, and this one does for speed: the objective hands it a
:class:`search.train.model.ModelCache`, so a worker compiles the model once and each trial gets
it back with fresh initial weights, a zeroed Adam state and its own rate
(:func:`search.train.model.reset_model`), which is the model a fresh build would be.

The module-level :data:`recipe` runs the recipe as a user's model, with :func:`load_data` as its
data (the recipe's preprocessing: 784 floats in [0, 1], one-hot labels)::

    hpsearch run --model search.train.recipe:recipe --data search.train.recipe:load_data

There it is fitted by Keras's own ``fit`` (batch 1024, Keras's shuffle), so its histories are a
user's model's, not the recipe study's.
"""

from __future__ import annotations

__all__ = ["Recipe", "load_data", "recipe"]


class Recipe:
    """The recipe's hypermodel: ``build(hp)`` and ``fit(hp, model, *args, **kwargs)``.

    Args:
        lr_min, lr_max: the learning rate's range (log-uniform; the study's ``--lr-min``
            and ``--lr-max``).
        hidden_units: the hidden layer's width.
        batch_size: what :meth:`fit` trains with when run as a user's model.
        models: a :class:`search.train.model.ModelCache` to take the compiled model from
            (the worker's); None builds a new model on each call.
        seed: the study's seed; with it, each trial's initial weights are drawn after seeding
            with ``seed + trial number``, whether the model was cached or built now.
        build_kwargs: ``steps_per_execution`` and ``jit_compile`` for
            :func:`search.train.model.build_model`.
    """

    def __init__(self, lr_min: float = 1e-5, lr_max: float = 1.0, *, hidden_units: int = 1000, batch_size: int = 1024,
                 models=None, seed: int | None = None, **build_kwargs):
        self.lr_min, self.lr_max = lr_min, lr_max
        self.hidden_units, self.batch_size = hidden_units, batch_size
        self.models, self.seed, self.build_kwargs = models, seed, build_kwargs

    @classmethod
    def of_study(cls, config, **kwargs) -> "Recipe":
        """The recipe of a study's configuration (:class:`search.study.config.StudyConfig`)."""
        return cls(config.lr_min, config.lr_max, hidden_units=config.hidden_units, batch_size=config.batch_size,
                   seed=config.seed, **kwargs)

    def build(self, hp):
        """The trial's compiled model: ``learning_rate`` log-uniform in the range, drawn from ``hp``."""
        from search.study.space import PARAM
        from search.train.backend import set_seed
        from search.train.model import build_model, reset_model

        lr = hp.Float(PARAM, self.lr_min, self.lr_max, sampling="log")
        kwargs = {"hidden_units": self.hidden_units, **self.build_kwargs}
        # Built (or taken from the cache) before any seeding: only reset_model's draws make a
        # trial's initial weights, so they are the same whether or not the model was cached.
        model = self.models.get(lr, **kwargs) if self.models is not None else build_model(lr, **kwargs)
        trial = getattr(hp, "trial", None)
        if self.seed is not None and trial is not None:
            set_seed(self.seed + trial.number)
        reset_model(model, lr)
        return model

    def fit(self, hp, model, *args, **kwargs):
        """Keras's ``fit`` at the recipe's batch size (for the recipe run as a user's model)."""
        kwargs.setdefault("batch_size", self.batch_size)
        return model.fit(*args, **kwargs)


def load_data():
    """MNIST as the recipe trains on it, as ``keras.datasets.mnist.load_data()`` returns it:
    ``(x_train, y_train), (x_test, y_test)``, images flattened to 784 floats in [0, 1] and
    labels one-hot. Read from ``HPSEARCH_DATA`` when it is set, else through Keras's download."""
    from search.env import env
    from search.train.data import preprocess, read_mnist

    raw = read_mnist(env("HPSEARCH_DATA") or None)
    return preprocess(raw.x_train, raw.y_train), preprocess(raw.x_test, raw.y_test)


#: The recipe as a user's model (``--model search.train.recipe:recipe``): the default range of a
#: recipe study, a new model per trial.
recipe = Recipe()
