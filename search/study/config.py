"""The recipe's typed defaults, a study's stored configuration, and their resolution.

Precedence is always: command-line flag > environment variable > default. The defaults
reproduce the reference recipe (a Keras cookbook chapter on learning rates): MNIST flattened
to 784 and scaled to [0, 1], ``Dense(1000, relu)`` then ``Dense(10, softmax)``, Adam,
categorical cross-entropy, ``batch_size=1024``, 500 epochs, learning rates 0.1, 0.01, 0.0001.

A study stores the :class:`StudyConfig` it was created with (user attribute
``hpsearch_config``); workers joining it read it back, so the study is the source of truth.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field

from search.env import env
from search.errors import ConfigError

__all__ = ["RECIPE_RATES", "StudyConfig", "DEFAULT_OBJECTIVE", "DEFAULT_STUDY", "DEFAULT_TRIALS", "DIRECTIONS", "USER_BATCH_SIZE", "default_study", "infer_direction", "landscape_param_of", "merge_with_stored", "objective_of", "pick_landscape_param", "pick_study", "resolve_lanes"]

#: The recipe's three learning rates, enqueued as every study's first trials.
RECIPE_RATES: tuple[float, ...] = (0.1, 0.01, 0.0001)
#: The recipe's study when ``--study`` is not given; a user's model has its own (:func:`default_study`).
DEFAULT_STUDY = "mnist-learning-rate"
DEFAULT_TRIALS = 20
PRUNERS = ("asha", "median", "hyperband", "none")
SAMPLERS = ("tpe", "random")
VALIDATIONS = ("holdout", "test")
DIRECTIONS = ("maximize", "minimize")
#: A user's model trains with Keras's own default batch size unless --batch-size is given.
USER_BATCH_SIZE = 32
#: The objective and its direction: the recipe's, and KerasTuner's default for a user's model.
DEFAULT_OBJECTIVE = "val_accuracy"
#: Size of the hold-out: the last 10,000 training images, as large as MNIST's test set.
HOLDOUT_SIZE = 10_000
MNIST_TRAIN_SIZE = 60_000
#: The largest --seed: trial numbers and worker indexes are added to it, and the sum must stay
#: below 2**32, the bound of NumPy's and Keras's seeds.
MAX_SEED = 2**31 - 1

def default_study(spec) -> str:
    """The study ``run``, ``launch``, ``worker`` and ``init`` use without ``--study``.

    The recipe's is :data:`DEFAULT_STUDY`. A user's model has one named after it, the file's
    stem or the module, then NAME (``getting_started.build_model`` for
    ``docs/examples/getting_started.py:build_model``), so trying a model after the quick start
    starts a study of its own instead of being refused by the recipe's, and every worker given
    the same ``--model`` joins the same study.

    Args:
        spec: the parsed ``--model`` (:class:`search.train.usermodel.ModelSpec`), or None
            when it was not given (the recipe, or a joining worker's default study).
    """
    if spec is None or spec.is_recipe:
        return DEFAULT_STUDY
    if spec.kind == "file":
        from pathlib import PurePath

        return f"{PurePath(spec.target).stem}.{spec.name}"
    return f"{spec.target}.{spec.name}"


def pick_study(given: str | None, names: list[str]) -> str:
    """The study a reader (``query``, ``landscape``) reads: ``--study``, else
    :data:`DEFAULT_STUDY`, else the storage's only study (``names``), so ``hpsearch query best``
    after ``hpsearch run --model FILE.py:NAME`` reads the study that run made. Where neither
    settles it, :data:`DEFAULT_STUDY`, whose refusal lists the studies there are."""
    if given is not None:
        return given
    if DEFAULT_STUDY in names or len(names) != 1:
        return DEFAULT_STUDY
    return names[0]


def resolve_lanes(flag: int | None) -> int:
    """A worker's lanes (issue 12): ``--lanes``, else ``HPSEARCH_LANES``, else 1.

    Lanes are how a worker runs, not a study setting: workers with different lanes share a
    study. The value is checked here for form only; :func:`search.train.lanes.check_lanes_fit`
    checks that it fits in memory.

    Raises:
        ConfigError: ``HPSEARCH_LANES`` is not a whole number.
    """
    if flag is not None:
        return flag
    text = env("HPSEARCH_LANES")
    if text is None:
        return 1
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"HPSEARCH_LANES={text!r} is not a whole number: set it to the trials a worker trains at once, such as 8, or unset it") from None


@dataclass(frozen=True)
class StudyConfig:
    """What a study's trials are: fixed when the study is created, stored in the study.

    Attributes mirror the ``hpsearch run`` flags of the same names.
    """

    epochs: int = 500
    batch_size: int = 1024
    train_size: int | None = None
    validation: str = "holdout"
    lr_min: float = 1e-5
    lr_max: float = 1.0
    pruner: str = "asha"
    sampler: str = "tpe"
    seed: int | None = None
    hidden_units: int = 1000
    data_fingerprint: str | None = field(default=None, compare=False)
    #: ``--model``: ``recipe``, ``path/file.py:NAME`` or ``package.module:NAME`` (search.train.usermodel)
    model: str = "recipe"
    #: a digest of the model's source file: a worker with other code refuses to join
    model_digest: str | None = field(default=None, compare=False)
    #: the key of Keras's epoch logs the study optimises, and which way
    objective: str = DEFAULT_OBJECTIVE
    direction: str = "maximize"
    #: the parameter the loss landscape is drawn over (None: the space's learning rate, else its first number)
    landscape_param: str | None = None

    @property
    def is_recipe(self) -> bool:
        return self.model == "recipe"

    def validate(self) -> "StudyConfig":
        """Check every field; raise ConfigError naming the flag and the fix."""
        _positive_int(self.epochs, "--epochs")
        _positive_int(self.batch_size, "--batch-size")
        _positive_int(self.hidden_units, "hidden_units")
        if not isinstance(self.objective, str) or not self.objective.strip():
            raise ConfigError("--objective is empty: name a key of Keras's epoch logs, such as val_accuracy or val_loss")
        if self.direction not in DIRECTIONS:
            raise ConfigError(f"--direction {self.direction!r} is unknown: use maximize or minimize")
        if self.train_size is not None and not self.is_recipe:
            _positive_int(self.train_size, "--train-size")  # the data's own size is checked when it is read
        elif self.train_size is not None:
            _positive_int(self.train_size, "--train-size")
            limit = MNIST_TRAIN_SIZE - (HOLDOUT_SIZE if self.validation == "holdout" else 0)
            if self.train_size > limit:
                raise ConfigError(
                    f"--train-size {self.train_size} is larger than the {limit} training images available with --validation {self.validation}: use at most {limit}"
                )
        if self.validation not in VALIDATIONS:
            raise ConfigError(f"--validation {self.validation!r} is unknown: use one of {', '.join(VALIDATIONS)}")
        if self.pruner not in PRUNERS:
            raise ConfigError(f"--pruner {self.pruner!r} is unknown: use one of {', '.join(PRUNERS)}")
        if self.sampler not in SAMPLERS:
            raise ConfigError(f"--sampler {self.sampler!r} is unknown: use one of {', '.join(SAMPLERS)}")
        for name, value in (("--lr-min", self.lr_min), ("--lr-max", self.lr_max)):
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ConfigError(f"{name} must be a positive finite number, got {value}: the learning rate is sampled on a log scale")
        if self.lr_min >= self.lr_max:
            raise ConfigError(f"--lr-min {self.lr_min:g} must be below --lr-max {self.lr_max:g}: swap them or widen the range")
        if self.seed is not None and (not isinstance(self.seed, int) or isinstance(self.seed, bool)):
            raise ConfigError(f"--seed must be an integer, got {self.seed!r}")
        if self.seed is not None and not 0 <= self.seed <= MAX_SEED:
            # Keras and NumPy take seeds in [0, 2**32); each trial adds its number and each
            # worker its index, so half that range is left for them.
            raise ConfigError(f"--seed {self.seed} is outside 0-{MAX_SEED}, the seeds the Keras backends accept with room for trial numbers: pick a seed in that range")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "StudyConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def recipe_rates(self) -> list[float]:
        """The recipe's rates that fall inside this study's learning-rate range."""
        return [r for r in RECIPE_RATES if self.lr_min <= r <= self.lr_max]


#: The flags that define a study, with the StudyConfig field each sets.
STUDY_FLAGS: dict[str, str] = {
    "epochs": "--epochs",
    "batch_size": "--batch-size",
    "train_size": "--train-size",
    "validation": "--validation",
    "lr_min": "--lr-min",
    "lr_max": "--lr-max",
    "pruner": "--pruner",
    "sampler": "--sampler",
    "seed": "--seed",
    "model": "--model",
    "objective": "--objective",
    "direction": "--direction",
    "landscape_param": "--landscape-param",
}


def landscape_param_of(stored) -> str:
    """The parameter a study's landscape is drawn over, from its stored configuration (the
    ``hpsearch_config`` attribute): ``landscape_param``, else the recipe's learning rate."""
    value = stored.get("landscape_param") if isinstance(stored, dict) else None
    return value if isinstance(value, str) and value else "learning_rate"


def shown_param(config: "StudyConfig") -> str | None:
    """The parameter progress lines show beside a trial: the recipe's learning rate, else the
    parameter the study's landscape is drawn over (a user's ``lr``, say), if it has one."""
    return "learning_rate" if config.is_recipe else config.landscape_param


def objective_of(stored) -> tuple[str, bool]:
    """A study's objective and whether it is maximised, from its stored configuration (the
    ``hpsearch_config`` attribute): the recipe's ``val_accuracy``, maximised, where it names none."""
    stored = stored if isinstance(stored, dict) else {}
    objective = stored.get("objective") if isinstance(stored.get("objective"), str) else DEFAULT_OBJECTIVE
    return objective, stored.get("direction", "maximize") != "minimize"


def pick_landscape_param(space) -> str | None:
    """The parameter to draw a user's landscape over: a float named like a learning rate, else
    the first float or int of the space (``space``: name -> hyperparameter, in order), else None."""
    # Stored as numbers by Optuna (a categorical stores its index; reverse_log stores a mirror).
    numeric = [name for name, hp in space.items() if hp.kind in ("Float", "Int") and not hp.categorical and not hp.mirrored]
    for name in numeric:
        leaf = name.rsplit("/", 1)[-1].lower()
        if space[name].kind == "Float" and (leaf in ("lr", "learning_rate", "learningrate") or "learning_rate" in leaf):
            return name
    return numeric[0] if numeric else None


#: Words of an epoch-log key that say its direction, anywhere in it, and whole words (between
#: underscores: ``val_mae``, a second output's ``val_level_mae``) for the short names Keras logs
#: a metric under when it is compiled by its alias (``metrics=["mae"]``).
_MINIMISED = ("loss", "crossentropy", "error", "hinge", "divergence", "false_positives", "false_negatives", "log_cosh", "logcosh", "poisson", "huber")
_MINIMISED_WORDS = {"ce", "mae", "mse", "mape", "msle", "rmse", "kld"}
_MAXIMISED = ("acc", "auc", "precision", "recall", "f1", "fbeta", "iou", "io_u", "r2", "correlation", "true_positives", "true_negatives", "sensitivity", "specificity")


def infer_direction(objective: str) -> str:
    """The direction of ``objective`` as KerasTuner infers it: losses and errors (``mae``,
    ``mse`` ...) are minimised, accuracies, areas and counts of hits maximised.

    It agrees with KerasTuner's ``infer_metric_direction`` wherever that answers (a test
    checks every metric of ``keras.metrics``), except where KerasTuner answers wrongly: it
    minimises every Keras metric it does not list as maximised, so ``f1_score``, ``r2_score``,
    the IoUs (``mean_io_u``) and the correlations, where higher is better, and ``mean``,
    ``sum`` and ``cosine_similarity`` (higher is better as a metric, lower as Keras's loss of
    that name), which say nothing: asked here. It also reads the keys of a model with several
    outputs (``val_kind_accuracy``, ``val_level_mae``), which KerasTuner cannot tell.

    Raises:
        ConfigError: the name says neither (pass ``--direction``).
    """
    name = objective.lower().removeprefix("val_")
    words = set(re.split(r"[^a-z0-9]+", name))
    if any(word in name for word in _MINIMISED) or words & _MINIMISED_WORDS:
        return "minimize"
    if any(word in name for word in _MAXIMISED):
        return "maximize"
    raise ConfigError(f"--objective {objective}: its direction cannot be told from its name: pass --direction maximize or --direction minimize")


def merge_with_stored(stored: StudyConfig, given: dict) -> StudyConfig:
    """Join a study: flags left out take the stored value; a flag that differs is an error.

    Args:
        stored: the configuration the study was created with.
        given: the study flags the user passed (``None`` for flags not given).

    Raises:
        ConfigError: a given flag contradicts the stored configuration.
    """
    for name, value in given.items():
        if value is None:
            continue
        old = getattr(stored, name)
        same = value == old
        if name == "model":
            # Hosts may keep the file in other places: the builder's name must match here, and
            # the code itself is compared by its digest (search.train.usermodel.check_digest).
            same = (value.rpartition(":")[2] or value) == (old.rpartition(":")[2] or old)
        if not same:
            flag = STUDY_FLAGS[name]
            raise ConfigError(
                f"{flag} {value} contradicts this study's stored {flag} {old}: drop the flag to use the study's value, or start a new study with --study NAME"
            )
    return stored


def _positive_int(value, flag: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{flag} must be a whole number of at least 1, got {value}")
