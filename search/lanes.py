"""K trials of the recipe trained at once as one model whose layers hold K members' weights.

A :class:`LaneModel` stacks the weights of K recipe models (``Dense(1000, relu)`` then
``Dense(10, softmax)``) along a leading member axis: kernels ``(K, 784, 1000)`` and
``(K, 1000, 10)``, biases ``(K, 1000)`` and ``(K, 10)``. One training step is a handful of
batched matrix products (``keras.ops.einsum``) over all members, with the gradient written out
by hand and Adam applied per member: its own moments, its own step count for the bias
correction, its own learning rate. Every member therefore gets the gradient and the update it
would get alone (docs/lanes.md says why, term by term); members never mix, so one member's
NaN stays in that member.

The step is written in ``keras.ops`` and compiled by the backend's own compiler
(``tf.function`` on TensorFlow, ``jax.jit`` on JAX), as a pure function of its state: the
state is a tuple of backend tensors that goes in and comes back. A lane is refilled by writing
one member's slice (:meth:`LaneModel.reset_lane`) without recompiling anything.

Each member sees its own batch order: the order of its own epoch ``j`` (:func:`search.data.
epoch_order`), the one a solo trial of the same study sees at its epoch ``j``. Members that
started together therefore share the batches, and a member that refilled a lane later still
trains as it would alone.
"""

from __future__ import annotations

import math
import os

import numpy as np

from search.errors import ConfigError

__all__ = ["LaneModel", "MAX_LANES", "bytes_per_member", "check_lanes_fit", "member_params"]

#: An upper bound that catches typos (``--lanes 6400``) before the memory check does.
MAX_LANES = 4096
#: Adam's defaults in Keras 3 (``keras.optimizers.Adam``), which the recipe uses.
BETA_1, BETA_2, EPSILON = 0.9, 0.999, 1e-7


def member_params(hidden_units: int = 1000, input_dim: int = 784, num_classes: int = 10) -> int:
    """Weights of one member: the recipe's 795,010 at 1000 hidden units."""
    return input_dim * hidden_units + hidden_units + hidden_units * num_classes + num_classes


def bytes_per_member(hidden_units: int = 1000, batch_size: int = 1024, input_dim: int = 784, num_classes: int = 10) -> int:
    """Device memory one member needs while training, in bytes (float32).

    Weights, Adam's two moments and the gradient (4 copies), the new weights and moments a
    step returns before the old ones are freed (3 more), and the step's activations: the
    gathered batch, the hidden layer's pre-activation, activation and their gradients. About
    39 MB at the recipe's sizes.
    """
    p = member_params(hidden_units, input_dim, num_classes)
    activations = batch_size * (input_dim + 4 * hidden_units + 3 * num_classes)
    return 4 * (7 * p + activations)


def _available_bytes() -> tuple[int, str] | None:
    """Free memory of the device this process trains on, and what it is, or None if unknown."""
    gpu = os.environ.get("CUDA_VISIBLE_DEVICES")
    if gpu:
        import subprocess

        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=index,memory.free", "--format=csv,noheader,nounits", "-i", gpu.split(",")[0]],
                                 capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            out = None
        if out is not None and out.returncode == 0 and out.stdout.strip():
            free_mib = out.stdout.strip().splitlines()[0].split(",")[-1].strip()
            if free_mib.isdigit():
                return int(free_mib) * 2**20, f"GPU {gpu} (free, nvidia-smi)"
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024, "this machine's available memory"
    except OSError:
        pass
    return None


def check_lanes_fit(lanes: int, *, hidden_units: int = 1000, batch_size: int = 1024, available: tuple[int, str] | None = None) -> None:
    """Refuse, in one line, a ``--lanes`` that is not a positive whole number or cannot fit.

    Args:
        lanes: the requested K.
        available: ``(bytes, what)`` of free memory; default: read from nvidia-smi for the
            worker's GPU, else ``/proc/meminfo``. Unknown memory is not checked.

    Raises:
        ConfigError: K is below 1, above :data:`MAX_LANES`, or needs more memory than is free.
    """
    if not isinstance(lanes, int) or isinstance(lanes, bool) or lanes < 1:
        raise ConfigError(f"--lanes must be a whole number of at least 1, got {lanes}")
    if lanes > MAX_LANES:
        raise ConfigError(f"--lanes {lanes} is above the limit of {MAX_LANES} members per worker: use fewer lanes and more workers")
    if lanes == 1:
        return  # a solo worker trains as it always did
    available = available if available is not None else _available_bytes()
    if available is None:
        return
    free, what = available
    each = bytes_per_member(hidden_units, batch_size)
    if lanes * each > free:
        fit = max(1, free // each)
        raise ConfigError(
            f"--lanes {lanes} needs about {lanes * each / 2**30:.1f} GiB ({each / 2**20:.0f} MiB per member at batch size {batch_size}), more than the {free / 2**30:.1f} GiB free on {what}: use --lanes {fit} or fewer"
        )


def _initial_member(hidden_units: int, input_dim: int, num_classes: int, seed: int | None):
    """One member's initial weights, drawn exactly as :func:`search.model.reset_model` draws them."""
    from search.model import initial_weights

    return initial_weights(seed, hidden_units=hidden_units, input_dim=input_dim, num_classes=num_classes)


def _adam(w, m, v, g, alpha):
    """One Adam update, written as ``keras.optimizers.Adam.update_step`` writes it."""
    from keras import ops

    m = m + (g - m) * (1 - BETA_1)
    v = v + (ops.square(g) - v) * (1 - BETA_2)
    return w - (m * alpha) / (ops.sqrt(v) + EPSILON), m, v


def _forward(params, x):
    """Logits ``(K, B, C)`` and the hidden pre-activation; ``x`` is ``(B, I)`` shared or ``(K, B, I)``."""
    from keras import ops

    w1, b1, w2, b2 = params
    z1 = ops.einsum("bi,kih->kbh" if len(x.shape) == 2 else "kbi,kih->kbh", x, w1) + b1[:, None, :]
    h = ops.relu(z1)
    return ops.einsum("kbh,khc->kbc", h, w2) + b2[:, None, :], z1, h


def _loss_and_correct(logits, y):
    """Per member: categorical cross-entropy summed over the batch, and correct predictions."""
    from keras import ops

    # From the logits (what TensorFlow's Keras computes for a softmax output): finite for any
    # finite logits, NaN or inf once a member has diverged.
    ce = ops.logsumexp(logits, axis=-1) - ops.sum(y * logits, axis=-1)
    hits = ops.cast(ops.equal(ops.argmax(logits, axis=-1), ops.argmax(y, axis=-1)), "float32")
    return ops.sum(ce, axis=-1), ops.sum(hits, axis=-1)


def _train_step(state, x_all, y_all, idx):
    """One step of every member on its own batch ``idx[k]``; returns the new state and per-member sums."""
    from keras import ops

    params, moments, steps, rates = state
    x = ops.take(x_all, idx, axis=0)  # (K, B, I)
    y = ops.take(y_all, idx, axis=0)  # (K, B, C)
    logits, z1, h = _forward(params, x)
    loss_sum, hits = _loss_and_correct(logits, y)
    n = ops.cast(ops.shape(idx)[1], "float32")
    # d(mean CE)/d(logits) of each member over its own batch: (softmax - y) / B.
    dz2 = (ops.softmax(logits, axis=-1) - y) / n
    w1, b1, w2, b2 = params
    g_w2 = ops.einsum("kbh,kbc->khc", h, dz2)
    g_b2 = ops.sum(dz2, axis=1)
    dz1 = ops.einsum("kbc,khc->kbh", dz2, w2) * ops.cast(z1 > 0, "float32")
    g_w1 = ops.einsum("kbi,kbh->kih", x, dz1)
    g_b1 = ops.sum(dz1, axis=1)
    steps = steps + 1.0
    # Adam's bias correction folded into the rate, per member (its own step count).
    alpha = rates * ops.sqrt(1 - ops.power(BETA_2, steps)) / (1 - ops.power(BETA_1, steps))
    new_params, new_moments = [], []
    for w, (m, v), g in zip(params, moments, (g_w1, g_b1, g_w2, g_b2)):
        a = ops.reshape(alpha, (-1,) + (1,) * (len(w.shape) - 1))
        w, m, v = _adam(w, m, v, g, a)
        new_params.append(w)
        new_moments.append((m, v))
    return (tuple(new_params), tuple(new_moments), steps, rates), loss_sum, hits


def _eval_chunk(params, x, y):
    logits, _, _ = _forward(params, x)
    return _loss_and_correct(logits, y)


def _compile(fn):
    """``fn`` compiled by the backend's own compiler (Keras's choice for each backend)."""
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(fn, jit_compile=False, reduce_retracing=True)
    if backend == "jax":
        import jax

        return jax.jit(fn)
    return fn  # torch: eager (no compiled path measured)


class LaneModel:
    """K recipe models trained as one: stacked weights, per-member Adam, per-member batches.

    Args:
        lanes: K, the number of members.
        hidden_units, input_dim, num_classes: the recipe's layer sizes.
        batch_size: the recipe's 1024; every member's batch.

    Example:
        >>> model = LaneModel(3)
        >>> for k, lr in enumerate((0.1, 0.01, 0.0001)):
        ...     model.reset_lane(k, lr, seed=k)
        >>> logs = model.train_epoch(data, orders)   # orders: (3, n) batch orders
    """

    def __init__(self, lanes: int, *, hidden_units: int = 1000, input_dim: int = 784, num_classes: int = 10, batch_size: int = 1024):
        from keras import ops

        self.lanes, self.batch_size = lanes, batch_size
        self.sizes = (hidden_units, input_dim, num_classes)
        shapes = ((lanes, input_dim, hidden_units), (lanes, hidden_units), (lanes, hidden_units, num_classes), (lanes, num_classes))
        zeros = lambda s: ops.zeros(s, "float32")  # noqa: E731
        params = tuple(zeros(s) for s in shapes)
        moments = tuple((zeros(s), zeros(s)) for s in shapes)
        self.state = (params, moments, zeros((lanes,)), zeros((lanes,)))
        self._step = _compile(_train_step)
        self._eval = _compile(_eval_chunk)

    def reset_lane(self, lane: int, learning_rate: float, seed: int | None) -> None:
        """Give member ``lane`` fresh initial weights (drawn after seeding with ``seed``), zeroed
        Adam moments and step count, and ``learning_rate``; the other members are untouched."""
        from keras import ops

        params, moments, steps, rates = self.state
        hidden, inputs, classes = self.sizes
        fresh = _initial_member(hidden, inputs, classes, seed)

        def put(stacked, value):
            value = ops.convert_to_tensor(np.asarray(value, "float32")[None])
            return ops.slice_update(stacked, (lane,) + (0,) * (len(stacked.shape) - 1), value)

        params = tuple(put(p, w) for p, w in zip(params, fresh))
        moments = tuple((put(m, np.zeros(m.shape[1:])), put(v, np.zeros(v.shape[1:]))) for m, v in moments)
        steps = put(steps, 0.0)
        rates = put(rates, learning_rate)
        self.state = (params, moments, steps, rates)

    def member_weights(self, lane: int) -> list[np.ndarray]:
        """Member ``lane``'s kernels and biases as NumPy arrays (for tests and checks)."""
        from keras import ops

        return [np.asarray(ops.convert_to_numpy(p))[lane] for p in self.state[0]]

    def train_epoch(self, x, y, orders: np.ndarray) -> dict[str, np.ndarray]:
        """Train every member for one epoch; member k takes its batches from ``orders[k]``.

        Args:
            x, y: the training images and one-hot labels (NumPy or backend tensors).
            orders: ``(K, n)`` integer array, each row a permutation of the n images.

        Returns:
            ``{"loss": (K,), "accuracy": (K,)}`` over the epoch, as Keras's ``fit`` logs them:
            the batch losses averaged with their sizes as weights, and the running accuracy.
        """
        from keras import ops

        n = orders.shape[1]
        loss = np.zeros(self.lanes)
        hits = np.zeros(self.lanes)
        for start in range(0, n, self.batch_size):
            idx = ops.convert_to_tensor(np.ascontiguousarray(orders[:, start:start + self.batch_size], dtype="int32"))
            self.state, batch_loss, batch_hits = self._step(self.state, x, y, idx)
            loss += ops.convert_to_numpy(batch_loss)
            hits += ops.convert_to_numpy(batch_hits)
        return {"loss": loss / n, "accuracy": hits / n}

    def evaluate(self, x, y, batch_size: int | None = None) -> dict[str, np.ndarray]:
        """Every member's loss and accuracy on ``(x, y)``: ``{"loss": (K,), "accuracy": (K,)}``."""
        from keras import ops

        batch = batch_size or self.batch_size
        n = int(x.shape[0])
        loss = np.zeros(self.lanes)
        hits = np.zeros(self.lanes)
        for start in range(0, n, batch):
            chunk_loss, chunk_hits = self._eval(self.state[0], x[start:start + batch], y[start:start + batch])
            loss += ops.convert_to_numpy(chunk_loss)
            hits += ops.convert_to_numpy(chunk_hits)
        return {"loss": loss / n, "accuracy": hits / n}


def lane_orders(seed: int | None, epochs: list[int], n: int) -> np.ndarray:
    """``(K, n)`` batch orders: row k is the order of member k's own epoch ``epochs[k]``."""
    from search.data import epoch_order

    return np.stack([epoch_order(seed, e, n) for e in epochs])


def finite(value) -> float | None:
    v = float(value)
    return v if math.isfinite(v) else None
