"""One trial's training: the Keras backend, data, the model (the recipe's among others), lanes, the objective, its per-epoch monitor and its checkpoints."""

__all__ = ["backend", "checkpoint", "data", "deferred", "lanes", "model", "modellanes", "monitor", "objective", "recipe", "usermodel"]
