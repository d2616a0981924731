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
(``tf.function`` on TensorFlow, ``jax.jit`` on JAX; :func:`search.train.backend.compile_fn`), as a pure function of its state: the
state is a tuple of backend tensors that goes in and comes back. A lane is refilled by writing
one member's slice (:meth:`LaneModel.reset_lane`) without recompiling anything.

Each member sees its own batch order: the order of its own epoch ``j`` (:func:`search.train.data.
epoch_order`), the one a solo trial of the same study sees at its epoch ``j``. Members that
started together therefore share the batches, and a member that refilled a lane later still
trains as it would alone.
"""

from __future__ import annotations

import numpy as np

from search.errors import ConfigError

__all__ = ["LaneModel", "MAX_LANES", "RecipeLanes", "bytes_per_member", "check_lanes_fit", "default_layout", "lane_orders", "member_params"]

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
    from search.train.backend import visible_gpus

    gpu = visible_gpus()
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


def check_lanes_fit(lanes: int, *, hidden_units: int = 1000, batch_size: int = 1024, available: tuple[int, str] | None = None,
                    member_bytes: int | None = None) -> None:
    """Refuse, in one line, a ``--lanes`` that is not a positive whole number or cannot fit.

    Args:
        lanes: the requested K.
        member_bytes: what one member needs (a user's model's:
            :func:`search.train.modellanes.member_bytes`); default: the recipe's at
            ``hidden_units`` and ``batch_size``.
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
    each = member_bytes if member_bytes is not None else bytes_per_member(hidden_units, batch_size)
    if lanes * each > free:
        fit = max(1, free // each)
        raise ConfigError(
            f"--lanes {lanes} needs about {lanes * each / 2**30:.1f} GiB ({each / 2**20:.0f} MiB per member at batch size {batch_size}), more than the {free / 2**30:.1f} GiB free on {what}: use --lanes {fit} or fewer"
        )


def _adam(w, m, v, g, alpha):
    """One Adam update, written as ``keras.optimizers.Adam.update_step`` writes it."""
    from keras import ops

    m = m + (g - m) * (1 - BETA_1)
    v = v + (ops.square(g) - v) * (1 - BETA_2)
    return w - (m * alpha) / (ops.sqrt(v) + EPSILON), m, v


def _per_member(value, like):
    """``value`` (a member's scalar, or one per member ``(K,)``) shaped to broadcast over ``like``."""
    from keras import ops

    if len(value.shape) == 0:
        return value
    return ops.reshape(value, (-1,) + (1,) * (len(like.shape) - 1))


def _forward(params, x):
    """Logits and the hidden pre-activation and activation.

    The same code serves one member (``x`` ``(B, I)``, kernels ``(I, H)``) and a stack
    (``x`` ``(K, B, I)``, kernels ``(K, I, H)``): ``matmul`` batches over the leading axis.
    """
    from keras import ops

    w1, b1, w2, b2 = params
    z1 = ops.matmul(x, w1) + ops.expand_dims(b1, -2)
    h = ops.relu(z1)
    return ops.matmul(h, w2) + ops.expand_dims(b2, -2), z1, h


def _from_logits() -> bool:
    """Whether Keras computes the recipe's loss from the logits on this backend.

    ``Dense(10, activation="softmax")`` with ``categorical_crossentropy``: TensorFlow's Keras
    finds the logits behind the softmax and uses them; the other backends take the
    probabilities, clipped to ``[1e-7, 1 - 1e-7]``, so a sample whose true class is clipped
    gives no gradient there. A member follows its backend's rule, as its solo trial does.
    """
    import keras

    return keras.backend.backend() == "tensorflow"


def _loss_and_correct(logits, y, *, from_logits: bool = True):
    """Per sample: categorical cross-entropy, and where its gradient flows; per member: the
    loss summed over the batch and the correct predictions."""
    from keras import ops

    if from_logits:
        # finite for any finite logits, NaN or inf once a member has diverged
        ce = ops.logsumexp(logits, axis=-1) - ops.sum(y * logits, axis=-1)
        flows = None
    else:
        p = ops.softmax(logits, axis=-1)
        p = p / ops.sum(p, axis=-1, keepdims=True)
        true = ops.sum(y * p, axis=-1)
        flows = ops.cast(ops.logical_and(true > EPSILON, true < 1 - EPSILON), "float32")
        ce = -ops.sum(y * ops.log(ops.clip(p, EPSILON, 1 - EPSILON)), axis=-1)
    hits = ops.cast(ops.equal(ops.argmax(logits, axis=-1), ops.argmax(y, axis=-1)), "float32")
    return ops.sum(ce, axis=-1), ops.sum(hits, axis=-1), flows


def _member_step(member, x, y):
    """One training step of one member, or of a stack of members on their own batches.

    ``member`` is ``(params, moments, step, rate)``. The gradient of the batch-mean
    cross-entropy is written out (the model has two layers): ``(softmax - y) / B`` at the
    logits, back through ``Dense(10)``, ReLU's ``z > 0`` and ``Dense(1000)``; Adam then updates
    with the member's own step count and rate.
    """
    from keras import ops

    params, moments, step, rate = member
    logits, z1, h = _forward(params, x)
    loss_sum, hits, flows = _loss_and_correct(logits, y, from_logits=_from_logits())
    n = ops.cast(ops.shape(x)[-2], "float32")
    dz2 = (ops.softmax(logits, axis=-1) - y) / n
    if flows is not None:  # clipped probabilities: those samples give no gradient
        dz2 = dz2 * ops.expand_dims(flows, -1)
    w1, b1, w2, b2 = params
    g_w2 = ops.matmul(ops.swapaxes(h, -1, -2), dz2)
    g_b2 = ops.sum(dz2, axis=-2)
    dz1 = ops.matmul(dz2, ops.swapaxes(w2, -1, -2)) * ops.cast(z1 > 0, "float32")
    g_w1 = ops.matmul(ops.swapaxes(x, -1, -2), dz1)
    g_b1 = ops.sum(dz1, axis=-2)
    step = step + 1.0
    # Adam's bias correction folded into the rate, as Keras does, with the member's own step.
    alpha = rate * ops.sqrt(1 - ops.power(BETA_2, step)) / (1 - ops.power(BETA_1, step))
    new_params, new_moments = [], []
    for w, (m, v), g in zip(params, moments, (g_w1, g_b1, g_w2, g_b2)):
        w, m, v = _adam(w, m, v, g, _per_member(alpha, w))
        new_params.append(w)
        new_moments.append((m, v))
    return (tuple(new_params), tuple(new_moments), step, rate), loss_sum, hits


def _stacked_step(state, x_all, y_all, idx):
    """All members as one stack: ``(K, ...)`` weights, batched matrix products."""
    from keras import ops

    return _member_step(state, ops.take(x_all, idx, axis=0), ops.take(y_all, idx, axis=0))


def _unrolled_step(state, x_all, y_all, idx):
    """All members in one compiled step, one matrix product per member (faster on CPUs)."""
    from keras import ops

    out, losses, hits = [], [], []
    for k, member in enumerate(state):
        new, loss, hit = _member_step(member, ops.take(x_all, idx[k], axis=0), ops.take(y_all, idx[k], axis=0))
        out.append(new)
        losses.append(loss)
        hits.append(hit)
    return tuple(out), ops.stack(losses), ops.stack(hits)


def _stacked_eval(params, x, y):
    from keras import ops

    w1, b1, w2, b2 = params
    h = ops.relu(ops.einsum("bi,kih->kbh", x, w1) + ops.expand_dims(b1, -2))
    return _loss_and_correct(ops.einsum("kbh,khc->kbc", h, w2) + ops.expand_dims(b2, -2), y, from_logits=_from_logits())[:2]


def _unrolled_eval(members, x, y):
    from keras import ops

    sums = [_loss_and_correct(_forward(params, x)[0], y, from_logits=_from_logits()) for params in members]
    return ops.stack([s[0] for s in sums]), ops.stack([s[1] for s in sums])


def default_layout() -> str:
    """``"unrolled"`` on a CPU (one GEMM per member measured faster than TensorFlow's batched
    matmul there), ``"stacked"`` where Keras sees a GPU (one batched product per layer)."""
    from search.train.backend import on_gpu

    return "stacked" if on_gpu() else "unrolled"


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
        >>> logs = model.train_epoch(x, y, lane_orders(0, [0, 0, 0], len(x)))   # {"loss": (3,), "accuracy": (3,)}
    """

    def __init__(self, lanes: int, *, hidden_units: int = 1000, input_dim: int = 784, num_classes: int = 10, batch_size: int = 1024,
                 layout: str | None = None):
        from keras import ops

        from search.train.backend import compile_fn

        self.lanes, self.batch_size = lanes, batch_size
        self.sizes = (hidden_units, input_dim, num_classes)
        self.layout = layout or default_layout()
        if self.layout not in ("stacked", "unrolled"):
            raise ValueError(f"layout {self.layout!r}: use 'stacked' or 'unrolled'")
        shapes = ((input_dim, hidden_units), (hidden_units,), (hidden_units, num_classes), (num_classes,))
        if self.layout == "stacked":
            shapes = tuple((lanes, *shape) for shape in shapes)
        zeros = lambda s: ops.zeros(s, "float32")  # noqa: E731
        one = lambda lead: (tuple(zeros(s) for s in shapes), tuple((zeros(s), zeros(s)) for s in shapes), zeros(lead), zeros(lead))  # noqa: E731
        if self.layout == "stacked":
            self.state = one((lanes,))
            self._step, self._eval = compile_fn(_stacked_step), compile_fn(_stacked_eval)
        else:
            self.state = tuple(one(()) for _ in range(lanes))
            self._step, self._eval = compile_fn(_unrolled_step), compile_fn(_unrolled_eval)

    def reset_lane(self, lane: int, learning_rate: float, seed: int | None) -> None:
        """Give member ``lane`` fresh initial weights (drawn after seeding with ``seed``), zeroed
        Adam moments and step count, and ``learning_rate``; the other members are untouched."""
        from search.train.model import initial_weights

        hidden, inputs, classes = self.sizes
        # drawn exactly as reset_model draws a solo trial's
        fresh = [np.asarray(w, "float32") for w in initial_weights(seed, hidden_units=hidden, input_dim=inputs, num_classes=classes)]
        self._set_member(lane, fresh, [(np.zeros(w.shape, "float32"), np.zeros(w.shape, "float32")) for w in fresh], 0.0, learning_rate)

    def _set_member(self, lane: int, weights, moments, step: float, rate: float) -> None:
        from keras import ops

        if self.layout == "unrolled":
            member = (
                tuple(ops.convert_to_tensor(np.asarray(w, "float32")) for w in weights),
                tuple((ops.convert_to_tensor(np.asarray(m, "float32")), ops.convert_to_tensor(np.asarray(v, "float32"))) for m, v in moments),
                ops.convert_to_tensor(np.float32(step)),
                ops.convert_to_tensor(np.float32(rate)),
            )
            self.state = self.state[:lane] + (member,) + self.state[lane + 1:]
            return
        params, stacked_moments, steps, rates = self.state

        def put(stacked, value):
            value = ops.convert_to_tensor(np.asarray(value, "float32")[None])
            return ops.slice_update(stacked, (lane,) + (0,) * (len(stacked.shape) - 1), value)

        params = tuple(put(p, w) for p, w in zip(params, weights))
        stacked_moments = tuple((put(sm, m), put(sv, v)) for (sm, sv), (m, v) in zip(stacked_moments, moments))
        self.state = (params, stacked_moments, put(steps, step), put(rates, rate))

    def member_state(self, lane: int):
        """A function that returns member ``lane``'s state as it is now, in a solo recipe
        model's order (:func:`search.train.checkpoint.capture`): ``(weights, optimizer)``, the
        optimizer's being Adam's step count, rate, then each weight's two moments. So a lane
        member's checkpoint resumes alone and a solo trial's in a lane (issue 24).

        Nothing is copied now: the state's tensors are never changed in place (each step makes
        new ones), so holding them keeps this epoch's values until the function is called.
        """
        from keras import ops

        state, layout = self.state, self.layout

        def pick(tensor):
            array = np.asarray(ops.convert_to_numpy(tensor))
            return np.array(array if layout == "unrolled" else array[lane])

        def arrays():
            params, moments, step, rate = state[lane] if layout == "unrolled" else state
            weights = [pick(p) for p in params]
            optimizer = [np.asarray(round(float(pick(step))), "int64"), np.asarray(pick(rate), "float32")]
            for m, v in moments:
                optimizer += [pick(m), pick(v)]
            return weights, optimizer

        return arrays

    def restore_lane(self, lane: int, snapshot) -> None:
        """Give member ``lane`` the state of ``snapshot`` (a solo recipe trial's checkpoint, or
        a lane member's: :meth:`member_state`'s order).

        Raises:
            ValueError: its arrays are not the recipe's at this model's sizes.
        """
        hidden, inputs, classes = self.sizes
        shapes = [(inputs, hidden), (hidden,), (hidden, classes), (classes,)]
        weights, optimizer = snapshot.weights, snapshot.optimizer
        got = [tuple(np.shape(w)) for w in weights], [tuple(np.shape(a)) for a in optimizer[2:]]
        if got != (shapes, [s for s in shapes for _ in range(2)]) or len(optimizer) != 10:
            raise ValueError(f"arrays of shapes {got[0]} (weights) do not fit a lane member of shapes {shapes}")
        moments = [(optimizer[2 + 2 * i], optimizer[3 + 2 * i]) for i in range(4)]
        self._set_member(lane, weights, moments, float(optimizer[0]), float(optimizer[1]))

    def _params(self):
        return tuple(member[0] for member in self.state) if self.layout == "unrolled" else self.state[0]

    def member_weights(self, lane: int) -> list[np.ndarray]:
        """Member ``lane``'s kernels and biases as NumPy arrays (for tests and checks)."""
        from keras import ops

        if self.layout == "unrolled":
            return [np.asarray(ops.convert_to_numpy(p)) for p in self.state[lane][0]]
        return [np.asarray(ops.convert_to_numpy(p))[lane] for p in self.state[0]]

    def train_epoch(self, x, y, orders: np.ndarray) -> dict[str, np.ndarray]:
        """Train every member for one epoch; member k takes its batches from ``orders[k]``.

        Args:
            x, y: the training images and one-hot labels (backend tensors, converted once).
            orders: ``(K, n)`` integer array, each row a permutation of the n images.

        Returns:
            ``{"loss": (K,), "accuracy": (K,)}`` over the epoch, as Keras's ``fit`` logs them:
            the batch losses averaged with their sizes as weights, and the running accuracy.
        """
        from keras import ops

        n = orders.shape[1]
        sums = []
        for start in range(0, n, self.batch_size):
            idx = ops.convert_to_tensor(np.ascontiguousarray(orders[:, start:start + self.batch_size], dtype="int32"))
            self.state, batch_loss, batch_hits = self._step(self.state, x, y, idx)
            sums.append((batch_loss, batch_hits))  # read back once per epoch, not per step
        loss = sum(np.asarray(ops.convert_to_numpy(s[0]), "float64") for s in sums)
        hits = sum(np.asarray(ops.convert_to_numpy(s[1]), "float64") for s in sums)
        return {"loss": loss / n, "accuracy": hits / n}

    def evaluate(self, x, y, batch_size: int | None = None) -> dict[str, np.ndarray]:
        """Every member's loss and accuracy on ``(x, y)``: ``{"loss": (K,), "accuracy": (K,)}``."""
        from keras import ops

        batch = batch_size or self.batch_size
        n = int(x.shape[0])
        params = self._params()
        sums = [self._eval(params, x[start:start + batch], y[start:start + batch]) for start in range(0, n, batch)]
        loss = sum(np.asarray(ops.convert_to_numpy(s[0]), "float64") for s in sums)
        hits = sum(np.asarray(ops.convert_to_numpy(s[1]), "float64") for s in sums)
        return {"loss": loss / n, "accuracy": hits / n}


def lane_orders(seed: int | None, epochs: list[int], n: int) -> np.ndarray:
    """``(K, n)`` batch orders: row k is the order of member k's own epoch ``epochs[k]``."""
    from search.train.data import epoch_order

    if seed is None:
        return np.stack([epoch_order(None, e, n) for e in epochs])
    # members that started together share an epoch: draw each distinct epoch's order once
    orders = {e: epoch_order(seed, e, n) for e in set(epochs)}
    return np.stack([orders[e] for e in epochs])




class RecipeLanes:
    """The recipe's :class:`LaneModel` as a ``--lanes`` worker's lane model.

    The worker (:func:`search.fleet.worker._run_lanes`) drives any lane model through five
    calls: ``member(trial)`` (what a lane needs to train the trial, or None: train it solo),
    ``put(lane, member, run)`` (restores a retried trial's checkpoint; returns the member's next
    epoch), ``drop(lane)``, ``epoch()`` (one epoch of every member and its validation: the epoch
    logs per lane), ``test(lanes, last)`` (test metrics per lane) and ``member_state(lane)`` (a
    function returning the member's checkpoint arrays, :mod:`search.train.checkpoint`).
    :class:`search.train.modellanes.ModelLanes` is the other one, for a user's model.
    """

    def __init__(self, objective, lanes: int):
        from search.train.data import device_data

        self.objective, self.lanes = objective, lanes
        self.data = device_data(objective.dataset)  # converted once: every step gathers its batches from these
        self.n = len(objective.dataset.x_train)
        self.model = None
        self.epochs: dict[int, int] = {}  # lane -> the member's next epoch

    def member(self, trial) -> dict:
        seed = self.objective.config.seed
        return {"seed": None if seed is None else seed + trial.number}

    def put(self, lane: int, member: dict, run) -> int:
        """Give ``lane`` the trial of ``run``: fresh initial weights, or the checkpoint its
        earlier attempt left (solo or lane member alike: both save the recipe's arrays in one
        order). Return the member's next epoch (0 unless it resumed)."""
        import functools

        from search.study.space import PARAM

        cfg = self.objective.config
        if self.model is None:
            self.model = LaneModel(self.lanes, hidden_units=cfg.hidden_units, batch_size=cfg.batch_size)
        self.model.reset_lane(lane, run.lr, member["seed"])
        start = self.objective.resume(run, None, {PARAM: run.lr}, restore_into=functools.partial(self.model.restore_lane, lane))
        self.epochs[lane] = start  # the batch order of a resumed epoch is the uninterrupted run's
        return start

    def member_state(self, lane: int):
        """Member ``lane``'s checkpoint state (:meth:`LaneModel.member_state`)."""
        return self.model.member_state(lane)

    def drop(self, lane: int) -> None:
        self.epochs.pop(lane, None)

    def _validate_batch(self) -> int:
        return self.objective.options.validation_batch or self.objective.config.batch_size

    def epoch(self) -> dict[int, dict[str, float]]:
        data = self.data
        orders = lane_orders(self.objective.config.seed, [self.epochs.get(k, 0) for k in range(self.lanes)], self.n)
        train = self.model.train_epoch(data.x_train, data.y_train, orders)
        val = self.model.evaluate(data.x_val, data.y_val, self._validate_batch())
        out = {}
        for lane in self.epochs:
            self.epochs[lane] += 1
            out[lane] = {"loss": float(train["loss"][lane]), "accuracy": float(train["accuracy"][lane]),
                         "val_loss": float(val["loss"][lane]), "val_accuracy": float(val["accuracy"][lane])}
        return out

    def test(self, lanes, last: dict[int, dict]) -> dict[int, dict[str, float]]:
        opt, ds = self.objective.options, self.objective.dataset
        if opt.skip_test_eval and ds.validation == "test":
            return {k: {"accuracy": last[k]["val_accuracy"]} for k in lanes}
        test = self.model.evaluate(self.data.x_test, self.data.y_test, self._validate_batch())
        return {k: {"accuracy": float(test["accuracy"][k])} for k in lanes}
