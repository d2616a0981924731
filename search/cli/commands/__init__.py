"""The registry of ``hpsearch`` commands: one :class:`Command` per command, as in ``optuna/cli.py``.

A command declares its name, its help and its arguments once, in its class; what it does is
its :meth:`Command.run`, which returns the exit code. :func:`search.cli.main.build_parser` adds
every command of :data:`COMMANDS` to the parser, and ``main`` calls the one chosen. The modules
of this package group the commands by job:

* :mod:`search.cli.commands.study`: ``run``, ``launch``, ``worker``, ``init`` (open a study, train);
* :mod:`search.cli.commands.query`: ``query WHAT`` (read a study's rows);
* :mod:`search.cli.commands.export`: ``export`` (a trial's model trained again, saved as ``.keras``);
* :mod:`search.cli.commands.dashboard`: ``dashboard``, ``landscape`` (a study's figures, served or written);
* :mod:`search.cli.commands.db`: ``db ACTION`` (the embedded PostgreSQL, the SQL view).

They import only the standard library and :mod:`search.study.config` at start-up; each
:meth:`~Command.run` imports what it needs (TensorFlow, Optuna, the database driver), so
``hpsearch --help`` stays quick and a worker sets ``CUDA_VISIBLE_DEVICES`` before TensorFlow loads.
"""

from __future__ import annotations

import argparse
import inspect
import re

__all__ = ["COMMANDS", "Command", "Group", "quiet_libraries"]


class Command:
    """One command: a name, its help, its arguments (declared once) and what it does.

    A command is declared in its class statement: ``class Top(Rows, name="top", help="...")``.
    Its docstring is what ``--help`` adds: a description (else ``help`` is), then an
    ``example:`` or ``examples:`` section, printed as written. ``parents`` names the shared
    parent parsers of :mod:`search.cli.args` whose flags it takes; :meth:`add_arguments` adds
    its own and :meth:`run` does the work. Errors are raised, not printed: ``main`` turns an
    :class:`~storage.errors.HpsearchError` into one line and its ``exit_code``.
    """

    name: str = ""
    #: The line in the parent's list of commands.
    help: str = ""
    #: Functions of :mod:`search.cli.args` returning the parent parsers of its shared flags.
    parents: tuple = ()
    #: Whether SIGINT and SIGTERM are taken by a relay thread while it runs
    #: (:mod:`search.cli.signals`): a command that may run TensorFlow in this process.
    relay_signals: bool = False

    def __init_subclass__(cls, **declared):
        super().__init_subclass__()
        unknown = [key for key in declared if not hasattr(cls, key)]
        if unknown:
            raise TypeError(f"{cls.__name__}: unknown command declaration {', '.join(sorted(unknown))}")
        for key, value in declared.items():
            setattr(cls, key, value)

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Add the command's own flags to ``parser``."""

    def run(self, args: argparse.Namespace) -> int:
        """Do the command's work; return its exit code (0, or 130 when interrupted)."""
        raise NotImplementedError

    def add_to(self, subparsers) -> argparse.ArgumentParser:
        """Add this command's parser to ``subparsers``, with ``handler`` set to this command."""
        description, epilog = _help_texts(type(self).__dict__.get("__doc__"), self.help)
        parser = subparsers.add_parser(self.name, help=self.help, description=description, epilog=epilog,
                                       parents=[parent() for parent in self.parents])
        self.add_arguments(parser)
        parser.set_defaults(handler=self)
        return parser


def _help_texts(doc: str | None, help: str) -> tuple[str, str | None]:
    """A command's docstring as its ``--help`` description (one paragraph) and examples."""
    parts = re.split(r"^(examples?:)$", inspect.cleandoc(doc or ""), maxsplit=1, flags=re.M)
    text, label, examples = (parts + ["", ""])[:3]
    description = " ".join(text.split()) or help[0].upper() + help[1:] + "."
    if not label:
        return description, None
    return description, "\n".join([label, *(f"  {line.strip()}" for line in examples.splitlines() if line.strip())])


class Group(Command):
    """A command whose first argument picks one of its :attr:`actions` (``query WHAT``, ``db ACTION``)."""

    metavar = "ACTION"
    actions: tuple[type[Command], ...] = ()

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        sub = parser.add_subparsers(dest=f"{self.name}_command", metavar=self.metavar, parser_class=type(parser))
        sub.required = True
        for action in self.actions:
            action().add_to(sub)


def quiet_libraries() -> None:
    """Hold back Optuna's and TensorFlow's chatter (warnings, experimental notices) on stderr."""
    import logging
    import warnings

    from search.train.backend import library_defaults

    library_defaults()
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    logging.getLogger("alembic").setLevel(logging.WARNING)


def _registry() -> tuple[type[Command], ...]:
    from search.cli.commands.db import Db
    from search.cli.commands.query import Query
    from search.cli.commands.dashboard import Dashboard, Landscape
    from search.cli.commands.export import Export
    from search.cli.commands.study import Init, Launch, Run, Worker

    return (Run, Launch, Worker, Init, Query, Export, Dashboard, Landscape, Db)


#: Every top-level command, in the order ``hpsearch --help`` lists them.
COMMANDS: tuple[type[Command], ...] = _registry()
