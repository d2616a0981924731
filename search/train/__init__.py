"""One trial's training: the Keras backend, data, the model (the recipe's among others), lanes, the objective, its per-epoch monitor and its checkpoints, and a finished trial's model trained again (export)."""

__all__ = ["backend", "checkpoint", "data", "deferred", "export", "lanes", "model", "modellanes", "monitor", "objective", "recipe", "usermodel"]
