"""K trials of any Keras model trained at once on JAX, one compiled program per step (issue 26).

Each member is the model its solo trial would train: built by the user's ``build(hp)`` after
``clear_session()`` and ``set_seed(seed + trial number)``, exactly as
:class:`search.train.objective.ModelObjective` builds it, so its initial weights, its dropout
seed state and its optimizer's variables (step count and learning rate among them) are the solo
trial's. Members are grouped by structure (:func:`structure_key`: the class and configuration
of every layer, the variables' shapes and dtypes, the compile settings except the learning
rate, the batch size and the shuffle); a group trains as one program per step, built from the
group's first model (its *template*): Keras's own JAX ``train_step(state, data)``, a pure
function of a member's ``(trainable, non_trainable, optimizer, metrics)`` variables, applied to
every member's state:

* ``"unrolled"``: a loop over the members inside one ``jax.jit`` (one program, K independent
  computations; measured faster on a CPU, docs/lanes.md);
* ``"vmap"``: ``jax.vmap`` of the step over the members' stacked states (one batched program:
  the point on a GPU, where one small model leaves the card idle).

:func:`default_layout` picks ``vmap`` where JAX sees a GPU, else ``unrolled``;
``HPSEARCH_LANE_LAYOUT`` overrides it. Nothing is shared between members but the program:
every operation reads and writes one member's state, so a NaN in one never reaches another.

Batch order: Keras's ``fit`` shuffles arrays with ``np.random.permutation`` once per epoch
from NumPy's global state, which ``set_seed`` seeded before the build. Each member keeps a copy
of that state taken where its solo ``fit`` would start, and draws its epochs' orders from it, so
under ``--seed`` a member sees its solo trial's batches in its solo trial's order.
"""

from __future__ import annotations

import json
import logging

import numpy as np

from search.errors import ConfigError
from search.train.data import rows, take_rows

__all__ = ["LAYOUTS", "Member", "ModelLanes", "default_layout", "fit_settings", "member_bytes", "structure_key"]

log = logging.getLogger("hpsearch.worker")

#: The two programs a group can run as.
LAYOUTS = ("unrolled", "vmap")
#: Keras's ``evaluate`` batch size when none is given: a user's model is tested with it.
TEST_BATCH = 32


def default_layout() -> str:
    """``HPSEARCH_LANE_LAYOUT`` if set, else ``"vmap"`` where JAX sees a GPU, else ``"unrolled"``.

    Raises:
        ConfigError: ``HPSEARCH_LANE_LAYOUT`` is neither layout.
    """
    from search.env import env

    text = env("HPSEARCH_LANE_LAYOUT")
    if text:
        if text not in LAYOUTS:
            raise ConfigError(f"HPSEARCH_LANE_LAYOUT={text!r}: use one of {', '.join(LAYOUTS)}, or unset it to choose by device")
        return text
    import jax

    return "vmap" if any(d.platform == "gpu" for d in jax.devices()) else "unrolled"


def _plain(value):
    """``value`` as JSON-able data, without the layer names Keras numbers per session."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in sorted(value.items()) if k != "name"}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(value) if not hasattr(value, "get_config") else {"class": type(value).__name__, "config": _plain(value.get_config())}


def structure_key(model, batch_size: int, shuffle) -> str:
    """What members of one group must share: everything a compiled step depends on.

    The model's class and its own simple attributes, every layer's class and configuration
    (units, rates, activations: Python-level settings baked into the program), every
    variable's shape and dtype, the compile settings (loss, metrics, the optimizer's class and
    configuration such as Adam's betas) except the learning rate, which is a variable of each
    member's optimizer, and the batch size and shuffle its ``fit`` uses.
    """
    layers = []
    for layer in model._flatten_layers(include_self=False):
        try:
            config = layer.get_config()
        except Exception:  # a layer without a config: its class and variables stand for it
            config = None
        layers.append([type(layer).__module__ + "." + type(layer).__qualname__, _plain(config)])
    attrs = {k: v for k, v in vars(model).items() if not k.startswith("_") and isinstance(v, (str, int, float, bool, type(None)))}
    compiled = {}
    try:
        compiled = dict(model.get_compile_config() or {})
    except Exception:
        pass
    optimizer = model.optimizer
    opt = {k: v for k, v in optimizer.get_config().items() if k not in ("name", "learning_rate")}
    if not isinstance(optimizer.get_config().get("learning_rate"), (int, float)):
        opt["learning_rate"] = optimizer.get_config().get("learning_rate")  # a schedule is part of the program
    compiled.pop("optimizer", None)
    key = {
        "model": type(model).__module__ + "." + type(model).__qualname__,
        "attrs": _plain(attrs),
        "layers": layers,
        "variables": [[list(v.shape), str(v.dtype), v.trainable] for v in model.variables],
        "optimizer": [type(optimizer).__qualname__, _plain(opt), [list(v.shape) for v in optimizer.variables]],
        "compile": _plain(compiled),
        "fit": [batch_size, shuffle],
    }
    return json.dumps(key, sort_keys=True, default=repr)


class _NotFusible(Exception):
    """The user's ``fit`` did something other than ``model.fit`` with the arguments it was given."""


class _FitProbe:
    """Stands in for the model while the user's ``fit`` runs once, to see what it passes on.

    Only ``fit`` may be used: any other attribute raises :class:`_NotFusible`, as does a second
    call of ``fit``.
    """

    def __init__(self):
        self.calls = []

    def fit(self, *args, **kwargs):
        if self.calls:
            raise _NotFusible("it calls model.fit more than once")
        self.calls.append((args, kwargs))

        class _History:
            history: dict = {}

        return _History()

    def __getattr__(self, name):
        raise _NotFusible(f"it uses model.{name}")


def fit_settings(hypermodel, hp, x, y, kwargs: dict) -> tuple[dict | None, str | None]:
    """The ``batch_size`` and ``shuffle`` a user's ``fit`` passes to ``model.fit``, or why its trial must run solo.

    A ``fit`` that only calls ``model.fit(*args, **kwargs)`` once, with the arrays and the
    arguments it was given, setting ``batch_size`` or ``shuffle`` at most, is fusible: its
    trials are grouped by the values it sets. Anything else (other data, other arguments, a
    second call, any other use of the model) runs the trial solo.

    Returns:
        ``({"batch_size": ..., "shuffle": ...}, None)`` or ``(None, reason)``.
    """
    probe = _FitProbe()
    try:
        hypermodel.fit(hp, probe, x, y, **kwargs)
    except _NotFusible as e:
        return None, str(e)
    except Exception as e:
        return None, f"it raised {type(e).__name__} without a model"
    if not probe.calls:
        return None, "it never calls model.fit"
    args, given = probe.calls[0]
    given = dict(given)
    if len(args) >= 1:
        given.setdefault("x", args[0])
    if len(args) >= 2:
        given.setdefault("y", args[1])
    if len(args) > 2 or given.get("x") is not x or given.get("y") is not y:
        return None, "it passes other data to model.fit"
    settings = {"batch_size": given.pop("batch_size", None), "shuffle": given.pop("shuffle", True)}
    given.pop("x"), given.pop("y")
    if set(given) != set(kwargs) or any(given[k] is not kwargs[k] and given[k] != kwargs[k] for k in kwargs):
        return None, "it changes model.fit's arguments other than batch_size and shuffle"
    if settings["shuffle"] not in (True, False):
        return None, f"shuffle={settings['shuffle']!r}"
    return settings, None


def member_bytes(model, batch_size: int) -> int:
    """Memory one lane member of ``model`` needs while training, in bytes, from the model's own
    variables: its state (trainable and non-trainable variables and the optimizer's), the
    gradient, the new state a step returns before the old one is freed, and the step's
    activations (the batch, and four values per output of each layer: its pre-activation,
    itself and their gradients), as float32. For the recipe's model that is within 0.1% of
    :func:`search.train.lanes.bytes_per_member`'s hand count. A model whose layers have no known
    output shape (a subclassed model) is counted without its activations.
    """
    def nbytes(v) -> int:
        return int(np.prod(v.shape, dtype=np.int64)) * np.dtype(str(v.dtype)).itemsize

    trainable = sum(nbytes(v) for v in model.trainable_variables)
    others = sum(nbytes(v) for v in model.non_trainable_variables)
    optimizer = model.optimizer
    if optimizer is not None and not optimizer.built:
        optimizer.build(model.trainable_variables)
    state = trainable + others + (sum(nbytes(v) for v in optimizer.variables) if optimizer is not None else 0)
    def size(tensor) -> int:
        return int(np.prod([d or 1 for d in tensor.shape[1:]], dtype=np.int64))

    values = 0  # per example: the batch gathered, then each layer's output, its pre-activation and both gradients
    try:
        values += sum(size(x) for x in model.inputs)
    except (AttributeError, TypeError, ValueError):
        pass
    for layer in model.layers:
        try:
            values += 4 * size(layer.output)
        except (AttributeError, TypeError, ValueError):
            continue
    return 2 * state + trainable + 4 * batch_size * values


class Member:
    """One trial's model in a lane: its state, its batch order and its group.

    Attributes:
        model: the trial's own Keras model (its variables hold the initial state).
        key: :func:`structure_key`; members with equal keys train in one program.
        state: ``(trainable, non_trainable, optimizer, metrics)`` variable values.
    """

    def __init__(self, model, batch_size: int, shuffle: bool, rng: np.random.RandomState | None):
        self.model, self.batch_size, self.shuffle, self.rng = model, batch_size, shuffle, rng
        self.key = structure_key(model, batch_size, shuffle)
        self.state = (
            [v.value for v in model.trainable_variables],
            [v.value for v in model.non_trainable_variables],
            [v.value for v in model.optimizer.variables],
            [v.value for v in model.metrics_variables],
        )
        self.fresh_metrics = list(self.state[3])  # Keras resets the metrics before each epoch and evaluation

    def order(self, n: int) -> np.ndarray:
        """This member's batch order for its next epoch: its solo ``fit``'s ``np.random.permutation``."""
        if not self.shuffle:
            return np.arange(n)
        return self.rng.permutation(n) if self.rng is not None else np.random.permutation(n)


def build_member(model, x_sample, n: int, batch_size: int, shuffle: bool, seeded: bool) -> Member:
    """Make ``model`` (built by the user's ``build(hp)``) a lane member: build its optimizer and
    metrics as ``fit`` does, and keep NumPy's random state where its solo ``fit`` would start."""
    rng = None
    if seeded:
        rng = np.random.RandomState()
        rng.set_state(np.random.get_state())
        # fit builds what is unbuilt from its first batch, drawing one permutation to get it
        unbuilt = (not all(layer.built for layer in model._flatten_layers())
                   or any(part is not None and not part.built for part in (model._compile_metrics, model._compile_loss)))
        if shuffle and unbuilt:
            rng.permutation(n)
    model._symbolic_build(data_batch=x_sample)
    if not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    return Member(model, batch_size, shuffle, rng)


class _Group:
    """The compiled steps of one structure, built from its first model."""

    def __init__(self, template, layout: str):
        import jax

        self.template, self.layout = template, layout

        def train_one(state, x, y, idx):
            batch = jax.tree.map(lambda a: jax.numpy.take(a, idx, axis=0), (x, y))  # x, y: arrays or structures of them
            return template.train_step(state, batch)

        def test_one(state, x, y):
            return template.test_step(state, (x, y))

        if layout == "vmap":
            self._train = jax.jit(jax.vmap(train_one, in_axes=(0, None, None, 0)))
            self._test = jax.jit(jax.vmap(test_one, in_axes=(0, None, None)))
        else:
            def train(states, x, y, idx):
                out = [train_one(state, x, y, idx[k]) for k, state in enumerate(states)]
                return [o[0] for o in out], [o[1] for o in out]

            def test(states, x, y):
                out = [test_one(state, x, y) for state in states]
                return [o[0] for o in out], [o[1] for o in out]

            self._train, self._test = jax.jit(train), jax.jit(test)

    def _pack(self, states):
        import jax

        if self.layout == "unrolled":
            return list(states)
        return jax.tree.map(lambda *leaves: jax.numpy.stack(leaves), *states)

    def _unpack(self, packed, k: int):
        import jax

        if self.layout == "unrolled":
            return packed
        return [jax.tree.map(lambda leaf: leaf[i], packed) for i in range(k)]

    def train_epoch(self, members: list[Member], x, y, n: int) -> list[dict]:
        """One epoch of every member; their epoch logs (the last step's metrics, as ``fit`` logs them)."""
        batch = members[0].batch_size
        orders = np.stack([m.order(n) for m in members]).astype("int32")
        states = [(t, nt, o, list(m.fresh_metrics)) for m, (t, nt, o, _) in zip(members, (m.state for m in members))]
        packed = self._pack(states)
        logs = None
        for start in range(0, n, batch):
            logs, packed = self._train(packed, x, y, orders[:, start:start + batch])
        states = self._unpack(packed, len(members))
        for m, state in zip(members, states):
            m.state = tuple(state)
        return self._read(logs, len(members))

    def evaluate(self, members: list[Member], x, y, batch: int) -> list[dict]:
        """Every member's metrics on ``(x, y)``, as Keras's ``evaluate`` computes them."""
        states = [(m.state[0], m.state[1], list(m.fresh_metrics)) for m in members]
        packed = self._pack(states)
        logs = None
        for start in range(0, rows(x), batch):
            xb, yb = take_rows((x, y), slice(start, start + batch))
            logs, packed = self._test(packed, xb, yb)
        return self._read(logs, len(members))

    def _read(self, logs, k: int) -> list[dict]:
        import jax

        logs = jax.device_get(logs)
        if self.layout == "unrolled":
            return [{name: float(v) for name, v in one.items()} for one in logs]
        return [{name: float(v[i]) for name, v in logs.items()} for i in range(k)]


class ModelLanes:
    """Up to K trials of a user's model trained together: the lane model of :func:`search.fleet.worker._run_lanes`.

    Args:
        objective: the worker's :class:`search.train.objective.ModelObjective`.
        layout: ``"unrolled"`` or ``"vmap"`` (default: :func:`default_layout`).

    Each epoch, members are grouped by :attr:`Member.key` and every group runs as one program
    per step; a group of one runs through the same program. Compiled programs are kept per
    structure and number of members, so refilling a lane with a trial of a known structure
    compiles nothing new.
    """

    def __init__(self, objective, layout: str | None = None):
        import keras

        if keras.backend.backend() != "jax":
            raise ConfigError(f"lanes of a user's model run on JAX only, not {keras.backend.backend()}: set KERAS_BACKEND=jax, or use --lanes 1")
        import jax
        import jax.numpy as jnp

        self.objective = objective
        self.layout = layout or default_layout()
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout {self.layout!r}: use one of {LAYOUTS}")
        ds = objective.dataset
        self.n = rows(ds.x_train)
        self.x, self.y, self.x_val, self.y_val = jax.tree.map(jnp.asarray, (ds.x_train, ds.y_train, ds.x_val, ds.y_val))
        self.members: dict[int, Member] = {}
        self._groups: dict[str, _Group] = {}
        self._said: set[str] = set()

    def member(self, trial) -> Member | None:
        """Build ``trial``'s model as its solo trial would; None: run this trial solo (said once
        per reason in the log): its ``fit`` is not fusible, or its build failed (the solo path
        records why)."""
        from search.study.hyperparameters import HyperParameters
        from search.train.backend import clear_session, set_seed
        from search.train.usermodel import check_model

        obj, cfg, ds = self.objective, self.objective.config, self.objective.dataset
        hypermodel = obj.hypermodel
        hp = HyperParameters(trial)
        clear_session()
        if cfg.seed is not None:
            set_seed(cfg.seed + trial.number)
        try:
            model = hypermodel.build(hp)
            check_model(model, hypermodel.spec)
        except Exception:
            return None  # the solo path builds it again and fails the trial with the reason
        settings = {"batch_size": cfg.batch_size, "shuffle": True}
        if hypermodel.own_fit:
            kwargs = obj.fit_kwargs(callbacks=[])
            found, reason = fit_settings(hypermodel, hp, ds.x_train, ds.y_train, kwargs)
            if found is None:
                self._say(f"trials whose fit cannot share a lane train solo: {hypermodel.spec.text}'s fit: {reason}")
                return None
            settings = {"batch_size": found["batch_size"] or 32, "shuffle": found["shuffle"]}  # Keras's default batch size
        return build_member(model, take_rows((ds.x_train, ds.y_train), slice(0, 1)), self.n, settings["batch_size"], settings["shuffle"], cfg.seed is not None)

    def _say(self, line: str) -> None:
        if line not in self._said:
            self._said.add(line)
            log.warning(line)

    def put(self, lane: int, member: Member, run) -> int:
        """Give ``lane`` the trial of ``run``; a retry first takes its earlier attempt's
        checkpoint (Keras's own state, as a solo trial's: :func:`search.train.checkpoint.restore`).
        Return the member's next epoch (0 unless it resumed; always 0 without a ``run``, as in
        the benchmarks)."""
        start = 0 if run is None else self.objective.resume(run, member.model, dict(run.trial.params))
        if start:
            model = member.model
            member.state = (
                [v.value for v in model.trainable_variables],
                [v.value for v in model.non_trainable_variables],
                [v.value for v in model.optimizer.variables],
                member.state[3],
            )
            if member.shuffle and member.rng is not None:
                for _ in range(start):  # the batch orders of the epochs already trained
                    member.rng.permutation(self.n)
        self.members[lane] = member
        return start

    def member_state(self, lane: int):
        """A function returning member ``lane``'s checkpoint arrays as they are now, in a solo
        trial's order (:func:`search.train.checkpoint.state_variables`, then the optimizer's
        variables), so that it resumes alone or in a lane. Nothing is copied now: JAX arrays are never changed in place."""
        state = self.members[lane].state

        def arrays():
            weights = [np.array(np.asarray(v)) for v in (*state[0], *state[1])]
            return weights, [np.array(np.asarray(v)) for v in state[2]]

        return arrays

    def drop(self, lane: int) -> None:
        self.members.pop(lane, None)

    def _by_group(self, lanes):
        groups: dict[str, list[int]] = {}
        for lane in sorted(lanes):
            groups.setdefault(self.members[lane].key, []).append(lane)
        for key, group in groups.items():
            if key not in self._groups:
                self._groups[key] = _Group(self.members[group[0]].model, self.layout)
            yield self._groups[key], group

    def epoch(self) -> dict[int, dict[str, float]]:
        """Train every member one epoch and validate it: its epoch logs, as ``fit`` gives them."""
        out = {}
        for group, lanes in self._by_group(self.members):
            members = [self.members[k] for k in lanes]
            train = group.train_epoch(members, self.x, self.y, self.n)
            val = group.evaluate(members, self.x_val, self.y_val, members[0].batch_size)
            for lane, t, v in zip(lanes, train, val):
                out[lane] = {**t, **{f"val_{k}": x for k, x in v.items()}}
        return out

    def test(self, lanes, last: dict[int, dict]) -> dict[int, dict[str, float]]:
        """Test metrics of ``lanes``' members (the last validation when the test set is the validation set)."""
        ds = self.objective.dataset
        if ds.validation == "test":
            return {k: {name[4:]: v for name, v in last[k].items() if name.startswith("val_")} for k in lanes}
        import jax
        import jax.numpy as jnp

        x, y = jax.tree.map(jnp.asarray, (ds.x_test, ds.y_test))
        out = {}
        for group, group_lanes in self._by_group(lanes):
            for lane, metrics in zip(group_lanes, group.evaluate([self.members[k] for k in group_lanes], x, y, TEST_BATCH)):
                out[lane] = metrics
        return out

    def weights(self, lane: int) -> list[np.ndarray]:
        """Member ``lane``'s trainable weights as NumPy arrays (for tests)."""
        return [np.asarray(w) for w in self.members[lane].state[0]]
