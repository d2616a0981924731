"""The fleet's limits that the CLI's help shows as defaults, importable without the database or
TensorFlow: the parser imports this, not the worker or the launcher (which import storage, and
with it SQLAlchemy), so ``hpsearch --help`` and a mistyped flag answer at once."""

__all__ = ["MAX_CONSECUTIVE_FAILURES", "MAX_RESTARTS"]

#: A worker stops after this many failed trials (or lane epochs) in a row.
MAX_CONSECUTIVE_FAILURES = 3
#: Restarts of a worker that dies unexpectedly before the launcher gives up on its slot.
MAX_RESTARTS = 3
