"""The ``hpsearch`` command: its entry point, arguments, output formats, one module per command group, and how it takes signals."""

__all__ = ["args", "commands", "main", "render", "signals"]
