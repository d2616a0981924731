"""One trial's training: the Keras backend, data, the model, lanes, the objective and its per-epoch monitor."""

__all__ = ["backend", "data", "deferred", "lanes", "model", "modellanes", "monitor", "objective", "usermodel"]
