"""A study: its stored configuration, search space, sampler, pruners and creation."""

__all__ = ["config", "create", "hyperparameters", "note", "pruners", "space"]
