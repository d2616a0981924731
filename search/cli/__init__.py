"""The ``hpsearch`` command: its entry point, arguments, output formats and one module per command group."""

__all__ = ["args", "commands", "main", "render"]
