"""The ``hpsearch`` parser's parts: its parser class, typed argument helpers, shared parents.

Every command's parser is a :class:`Parser` (one-line errors, no abbreviated flags). Flags many
commands take are declared once here, as parent parsers (argparse's ``parents=``):
:func:`storage_parent` (``--storage``, ``--debug``), :func:`debug_parent`, :func:`study_parent`
(``--study``), :func:`model_study_parent` (``--study`` named after ``--model``) and :func:`settings_parent` (the flags that define a study). Their help texts
read their defaults from :mod:`search.study.config` rather than repeating them.

The typed helpers are argparse ``type=`` callables: each turns the text of one flag into a
value or raises ``argparse.ArgumentTypeError`` with the line argparse prints.

Only the standard library and :mod:`search.study.config` are imported here, so ``hpsearch --help``
stays quick.
"""

from __future__ import annotations

import argparse
import functools
import math
import sys

__all__ = [
    "Parser", "whole_number", "count", "number", "bound", "port", "trial_numbers", "param_filter", "trial_sort", "trial_states",
    "storage_parent", "debug_parent", "study_parent", "model_study_parent", "settings_parent", "DEFAULTS_HELP",
]

#: The title of the group of flags a study stores.
DEFAULTS_HELP = "study settings (stored in the study when it is created; a worker joining it may leave them out)"


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (``hpsearch run: error: ... (see hpsearch run --help)``).

    Flags must be spelt out: ``--epoch 3`` is an unknown flag, not ``--epochs 3``
    (``allow_abbrev`` is off), so a flag added later cannot change what an old command line means.
    Descriptions and epilogs are printed as written (examples keep their lines).
    """

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)

    #: the parsers the current parse_args went through, the command's own last
    _parsing: list = []

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def parse_known_args(self, args=None, namespace=None):
        Parser._parsing.append(self)  # argparse hands a subcommand's arguments to its parser here
        return super().parse_known_args(args, namespace)

    def parse_args(self, args=None, namespace=None):
        """As argparse's, but an unknown argument is the subcommand's error (``hpsearch query
        top: error: unrecognized arguments: -n 2 (see hpsearch query top --help)``), where
        argparse names the top-level parser and its help, which does not list the flag."""
        Parser._parsing = []
        leading = self._unknown_leading_flags(sys.argv[1:] if args is None else list(args))
        if leading:  # argparse would say only that COMMAND is missing, or blame the command after them
            self.error(f"unrecognized arguments: {' '.join(leading)}")
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            Parser._parsing[-1].error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed

    def _unknown_leading_flags(self, argv: list[str]) -> list[str]:
        """The flags before a subcommand's name that this parser does not take (``hpsearch --verbose run``)."""
        if self._subparsers is None:
            return []
        leading = []
        for arg in argv:
            if arg == "--" or not arg.startswith("-"):
                break
            if arg.split("=", 1)[0] not in self._option_string_actions:
                leading.append(arg)
        return leading


# --- typed argument helpers -------------------------------------------------------------------


def _typed(convert, problem: str):
    """An argparse type: ``convert(text)``, or the line ``'TEXT' PROBLEM`` where it raises ValueError."""

    def parse(text: str):
        try:
            return convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} {problem}") from None

    return parse


#: An integer; ranges are the command's to check (its message names the flag).
whole_number = _typed(int, "is not a whole number")
#: A float, NaN and infinities included (a study setting: its check names the flag).
number = _typed(float, "is not a number")
#: A TCP port number (its range is checked where the server binds).
port = _typed(int, "is not a port number")
#: Comma-separated trial numbers: ``3,7,12``.
trial_numbers = _typed(lambda text: [int(part) for part in text.split(",") if part.strip()],
                       "is not a comma-separated list of trial numbers, such as 3,7,12")


def count(text: str) -> int:
    """An integer of 0 or more: a limit, a k."""
    value = whole_number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is negative: give 0 or more")
    return value


def bound(text: str) -> float:
    """A float to compare with, so not NaN (a filter's bound; infinities are fine)."""
    value = number(text)
    if math.isnan(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number")
    return value


def param_filter(text: str) -> tuple[str, object]:
    """``NAME=VALUE`` (equal to it) or ``NAME=LOW:HIGH`` (in the range; either side may be left
    empty): a filter of ``hpsearch query trials`` on one parameter, as ``(name, wanted)``."""
    name, sep, wanted = text.partition("=")
    if not sep or not name.strip() or not wanted.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=VALUE or NAME=LOW:HIGH: give a parameter, '=' and a value or a range")
    low, colon, high = wanted.partition(":")
    if colon:
        try:
            bounds = tuple(None if not side.strip() else bound(side) for side in (low, high))
        except argparse.ArgumentTypeError:
            return name.strip(), wanted  # a choice with a colon in it ("a:b")
        if bounds == (None, None):
            raise argparse.ArgumentTypeError(f"{text!r} has no bound: give LOW:, :HIGH or LOW:HIGH")
        return name.strip(), bounds
    return name.strip(), wanted.strip()


def trial_sort(text: str) -> str:
    """A sort key of ``hpsearch query trials``: one of its columns, or ``param_<name>``."""
    from storage.rows import TRIAL_SORT_KEYS, is_sort_key

    if is_sort_key(text):
        return text
    raise argparse.ArgumentTypeError(f"cannot sort by {text!r}: use one of {', '.join(TRIAL_SORT_KEYS)}, or param_<name> for a parameter")


def trial_states(text: str) -> list[str]:
    """Comma-separated trial states, any case: ``complete,pruned`` -> ``["COMPLETE", "PRUNED"]``."""
    from storage.tables import STATES

    states = [part.strip().upper() for part in text.split(",") if part.strip()]
    for s in states:
        if s not in STATES:
            raise argparse.ArgumentTypeError(f"unknown state {s.lower()!r}: use {', '.join(x.lower() for x in STATES)}")
    return states


# --- shared parent parsers (built once, copied into each command that names them) --------------


def _parent() -> Parser:
    return Parser(add_help=False)


def _add_debug(parser) -> None:
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")


@functools.cache
def debug_parent() -> Parser:
    """``--debug`` alone: the embedded server's actions, which take no storage."""
    p = _parent()
    _add_debug(p)
    return p


@functools.cache
def storage_parent() -> Parser:
    """``--storage`` and ``--debug``: every command that reads or writes a storage."""
    p = _parent()
    p.add_argument("--storage", metavar="URL", help="storage URL (default: $OPTUNA_STORAGE, else the embedded PostgreSQL)")
    _add_debug(p)
    return p


@functools.cache
def study_parent() -> Parser:
    """``--study NAME`` of the readers: None when not given, settled by
    :func:`search.study.config.pick_study` once the storage's studies are known."""
    from search.study.config import DEFAULT_STUDY

    p = _parent()
    p.add_argument("--study", help=f"study name (default: {DEFAULT_STUDY}, or the storage's only study when it has no study of that name)")
    return p


@functools.cache
def model_study_parent() -> Parser:
    """``--study NAME`` of the commands that take ``--model``: left None when not given, and
    named after the model once it is parsed (:func:`search.study.config.default_study`)."""
    from search.study.config import DEFAULT_STUDY

    p = _parent()
    p.add_argument("--study", help=f"study name (default: {DEFAULT_STUDY} for the recipe; for --model FILE.py:NAME or MODULE:NAME, "
                                  "the file's stem or the module, a dot, and NAME, such as getting_started.build_model)")
    return p


@functools.cache
def settings_parent() -> Parser:
    """``--data``, ``--format`` and the flags a study stores (run, launch, worker, init).

    The stored flags default to None (not given: a joining worker takes the study's value);
    their help shows :class:`~search.study.config.StudyConfig`'s defaults.
    """
    from search.study.config import HOLDOUT_SIZE, VALIDATIONS, StudyConfig

    d = StudyConfig()
    p = _parent()
    p.add_argument("--data", metavar="PATH", help="the recipe: mnist.npz or a directory of the four IDX files (default: $HPSEARCH_DATA, else Keras's download); "
                   "a model of your own: an .npz of x_train, y_train, x_test, y_test, or package.module:function returning them as keras.datasets do")
    p.add_argument("--format", choices=("text", "json"), default="text", help="summary format on stdout (default: %(default)s)")
    g = p.add_argument_group(DEFAULTS_HELP)
    g.add_argument("--epochs", type=whole_number, help=f"epochs per trial (default: {d.epochs}, the recipe's)")
    g.add_argument("--batch-size", type=whole_number, help=f"batch size (default: {d.batch_size}, the recipe's)")
    g.add_argument("--train-size", type=whole_number, metavar="N", help="train on the first N training images (default: all)")
    g.add_argument("--validation", choices=VALIDATIONS,
                   help=f"holdout: the last {HOLDOUT_SIZE:,} training images; test: the test set, as the recipe did (default: {d.validation})")
    g.add_argument("--lr-min", type=number, help=f"lowest learning rate sampled (default: {d.lr_min!r})")
    g.add_argument("--lr-max", type=number, help=f"highest learning rate sampled (default: {d.lr_max!r})")
    g.add_argument("--pruner", help=f"asha (successive halving at 1, 3, 9, 27... epochs), median, hyperband or none (default: {d.pruner})")
    g.add_argument("--sampler", help=f"tpe, or random (a baseline) (default: {d.sampler})")
    g.add_argument("--seed", type=whole_number, help="seed of the sampler and of the weights (default: none)")
    g.add_argument("--model", metavar="SPEC", help="recipe, path/to/file.py:NAME or package.module:NAME: a KerasTuner-style build(hp) or HyperModel (default: recipe; see docs/your-model.md)")
    g.add_argument("--objective", metavar="NAME", help="the key of Keras's epoch logs to optimise and prune on (default: val_accuracy)")
    g.add_argument("--direction", choices=("maximize", "minimize"), help="maximize or minimize --objective (default: told from its name, as KerasTuner does)")
    g.add_argument("--landscape-param", metavar="NAME", help="the parameter the loss landscape is drawn over (default: the space's learning rate, else its first number)")
    return p
