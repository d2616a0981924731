"""``hpsearch run``, ``launch``, ``worker`` and ``init``: open a study, then train (or not).

The four share one path to the study, :func:`open_the_study`: check every flag, the backend and
the data before anything is written; resolve the storage; create or join the study. Each
command then does its own part: ``init`` prints what it made, ``worker`` trains here, ``launch``
starts and supervises workers, and ``run`` is ``worker`` with ``--workers 1`` and ``launch``
with more.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from search.cli.args import model_study_parent, settings_parent, storage_parent, whole_number
from search.cli.commands import Command, quiet_libraries

if TYPE_CHECKING:
    import optuna

    from search.study.config import StudyConfig
    from search.fleet.launch import Slot
    from search.fleet.progress import Progress
    from storage import ResolvedStorage

__all__ = ["Init", "Launch", "Run", "Worker", "OpenedStudy", "open_the_study", "JOIN_TIMEOUT_S", "MAX_STUDY_NAME", "PER_GPU"]

#: How long ``worker --join`` waits for the study to be created.
JOIN_TIMEOUT_S = 600
#: Optuna's ``studies.study_name`` column is VARCHAR(512).
MAX_STUDY_NAME = 512
#: Workers on each GPU unless ``launch --per-gpu`` says otherwise.
PER_GPU = 1
#: The least value of each count flag (present on some of the four commands only).
_AT_LEAST = {"trials": 1, "epoch_budget": 1, "workers": 1, "max_failures": 1, "max_restarts": 0, "per_gpu": 1}
_EPOCH_BUDGET_HELP = ("epochs the study's trials may train in total: no trial starts once they have (trials running then "
                      "finish); --trials still caps the trials where given (default: no epoch budget)")

_LANES_HELP = "trials each worker trains at once as one batched model (default: $HPSEARCH_LANES, else 1; see docs/lanes.md)"


@dataclass
class OpenedStudy:
    """A study ready to train: what :func:`open_the_study` hands the command."""

    study: optuna.Study
    storage: optuna.storages.BaseStorage
    config: StudyConfig  # as the study stores it
    created: bool
    resolved: ResolvedStorage
    data_path: str | None
    progress: Progress
    lanes: int
    slots: list[Slot] | None  # where its workers run; None: in this process
    raw: object = None  # the data as read (search.train.data.RawMnist or RawArrays)
    hypermodel: object = None  # a user's model (search.train.usermodel.HyperModel); None: the recipe
    space: tuple = ()  # a user's model's hyperparameters as its build(hp) defined them, one line each


class StudyCommand(Command, parents=(model_study_parent, settings_parent, storage_parent)):
    """The flags of a study command; :meth:`run` opens the study, hands it to :meth:`use`, sums it up."""

    relay_signals = True  # it may build and train models here (search/cli/signals.py)
    trials_help = "finished trials the study must hold in total"

    def add_arguments(self, parser) -> None:
        from search.study.config import DEFAULT_TRIALS

        parser.add_argument("--trials", type=whole_number, default=None,
                            help=f"{self.trials_help} (default: {DEFAULT_TRIALS}; no limit with --epoch-budget)")
        parser.add_argument("--epoch-budget", type=whole_number, metavar="EPOCHS", help=_EPOCH_BUDGET_HELP)

    def slots(self, args) -> list[Slot] | None:
        """Where this command's workers run (``search.fleet.launch.plan_slots``); None: in this process."""
        return None

    def run(self, args) -> int:
        from search.study.config import DEFAULT_TRIALS

        if args.trials is None and args.epoch_budget is None:
            args.trials = DEFAULT_TRIALS
        opened = open_the_study(args, plan=self.slots)
        try:
            self.use(args, opened)
        finally:
            opened.progress.close()
        from search.cli.render import dashboard_hint, export_hint, summary_json, summary_text
        from search.study.create import summarize

        summary = summarize(opened.study, opened.storage, opened.config, args.trials, args.epoch_budget)
        summary["storage"] = opened.resolved.masked
        hint = dashboard_hint(opened.resolved, args.study)
        model = None if opened.config.is_recipe else export_hint(opened.resolved, args.study, args.data)
        print(summary_json(summary) if args.format == "json" else summary_text(summary, hint, model))
        return 0

    def use(self, args, opened: OpenedStudy) -> None:
        """Train the opened study: here, in this process (``worker``, ``run --workers 1``)."""
        from search.train.data import load_dataset
        from search.fleet.worker import run_worker

        config = opened.config
        if config.is_recipe:
            dataset = load_dataset(opened.data_path, train_size=config.train_size, validation=config.validation)
        else:
            from search.train.data import split_arrays

            dataset = split_arrays(opened.raw, train_size=config.train_size, validation=config.validation)
        run_worker(opened.study, opened.storage, config, dataset, args.trials, progress=opened.progress,
                   max_consecutive_failures=args.max_failures, gpu=getattr(args, "gpu", None), lanes=opened.lanes,
                   hypermodel=opened.hypermodel, epoch_budget=args.epoch_budget, freeze=True)


def _add_worker_flags(parser, *, workers: tuple | None, lanes_help: str = _LANES_HELP) -> None:
    """``--workers`` (``workers``: its default and help), ``--max-failures`` and ``--lanes``."""
    from search.fleet.limits import MAX_CONSECUTIVE_FAILURES

    if workers is not None:
        default, text = workers
        parser.add_argument("--workers", type=whole_number, default=default, help=text)
    parser.add_argument("--max-failures", type=whole_number, default=MAX_CONSECUTIVE_FAILURES,
                        help="a worker stops after this many failed trials in a row (default: %(default)s)")
    parser.add_argument("--lanes", type=whole_number, metavar="K", help=lanes_help)


class _Launching(StudyCommand):
    """A study command that can start several workers (``run --workers K``, ``launch``)."""

    def use(self, args, opened: OpenedStudy) -> None:
        if opened.slots is None:
            return super().use(args, opened)
        from search.fleet.launch import launch_workers
        from search.fleet.limits import MAX_RESTARTS
        from search.study.config import shown_param
        from search.study.create import own_param
        from storage import home_dir

        launch_workers(
            opened.study, opened.storage, opened.resolved.url, args.trials, opened.slots, data=opened.data_path,
            log_dir=home_dir() / "logs", progress=opened.progress, epochs=opened.config.epochs,
            max_restarts=getattr(args, "max_restarts", MAX_RESTARTS),
            worker_args=["--max-failures", str(args.max_failures), "--lanes", str(opened.lanes)],
            param=own_param(opened.config), maximize=opened.config.direction == "maximize", epoch_budget=args.epoch_budget,
            shown=shown_param(opened.config),
        )

    def slots(self, args) -> list[Slot]:
        from search.errors import ConfigError
        from search.fleet.launch import check_gpu, detect_gpus, plan_slots

        if getattr(args, "gpus", None):
            gpus = [g.strip() for g in args.gpus.split(",") if g.strip()]
            if detect_gpus() is None:
                raise ConfigError("--gpus: nvidia-smi is not available, so the GPUs cannot be checked or assigned: install the NVIDIA driver tools, or start `hpsearch worker` processes yourself")
            for g in gpus:
                check_gpu(g)
        else:
            gpus = [index for index, _ in (detect_gpus() or [])]
        return plan_slots(workers=args.workers, gpus=gpus, per_gpu=getattr(args, "per_gpu", PER_GPU))


class Run(_Launching, name="run", help="create or resume a study and run it to --trials finished trials"):
    """Create the study (or resume it) and run trials until it holds --trials finished (complete or
    pruned) trials in total. Running it again on a full study adds nothing.

    examples:
      hpsearch run --data ../shared/data/mnist.npz --trials 6 --epochs 3 --train-size 3000
      hpsearch run --model docs/examples/getting_started.py:build_model --data images.npz --trials 20 --epochs 10
    """

    def add_arguments(self, parser) -> None:
        super().add_arguments(parser)
        _add_worker_flags(parser, workers=(1, "worker processes on this machine, spread over its GPUs if it has any (default: %(default)s)"))

    def slots(self, args) -> list[Slot] | None:
        # one worker trains in this process; more are started as `hpsearch worker` processes
        return super().slots(args) if args.workers > 1 else None


class Launch(_Launching, name="launch", help="start and supervise workers on this machine: one per GPU, or K on the CPU"):
    """Prepare the study, then start workers on this machine: one per GPU found by nvidia-smi (or
    per --gpus entry), --per-gpu K on each card, or --workers K on a machine without GPUs.
    Restarts workers that die unexpectedly, sweeps stale trials, forwards Ctrl-C/SIGTERM, and
    exits non-zero if the study could not finish.

    examples:
      hpsearch launch --study lr --trials 200 --per-gpu 2
      hpsearch launch --study lr --trials 200 --gpus 0,2
      hpsearch launch --study lr --trials 20 --workers 4   # CPU only
    """

    def add_arguments(self, parser) -> None:
        from search.fleet.limits import MAX_RESTARTS

        super().add_arguments(parser)
        parser.add_argument("--gpus", metavar="IDS", help="comma-separated GPU indices to use (default: every GPU nvidia-smi lists)")
        parser.add_argument("--per-gpu", type=whole_number, default=PER_GPU, metavar="K", help="workers packed on each GPU (default: %(default)s)")
        parser.add_argument("--max-restarts", type=whole_number, default=MAX_RESTARTS, help="restarts of a worker that dies unexpectedly (default: %(default)s)")
        _add_worker_flags(parser, workers=(None, "total workers (default: one per GPU times --per-gpu; 1 without GPUs)"))


class Worker(StudyCommand, name="worker", help="one worker process joining (or creating) a study"):
    """Join the study (creating it if needed) and run trials until it holds --trials finished
    trials across all workers. The unit that deployments run.

    examples:
      OPTUNA_STORAGE=postgresql+psycopg2://user:pass@db/hpsearch hpsearch worker --study mnist-learning-rate --trials 100 --gpu 0
      OPTUNA_STORAGE=postgresql+psycopg2://user:pass@db/hpsearch hpsearch worker --study cnn --model models/cnn.py:build --data /data/images.npz
    """

    trials_help = "finished trials the study must hold in total, across all workers"

    def add_arguments(self, parser) -> None:
        import argparse

        super().add_arguments(parser)
        parser.add_argument("--gpu", metavar="ID", help="GPU index for this worker (sets CUDA_VISIBLE_DEVICES before TensorFlow starts)")
        parser.add_argument("--worker-index", type=whole_number, default=0, help=argparse.SUPPRESS)
        parser.add_argument("--join", action="store_true", help=f"never create the study: wait (up to {JOIN_TIMEOUT_S // 60} minutes) until it exists, e.g. for `hpsearch init` to run first")
        parser.add_argument("--quiet", action="store_true", help="no progress display")
        _add_worker_flags(parser, workers=None, lanes_help=_LANES_HELP.replace("each worker", "this worker"))


class Init(StudyCommand, name="init", help="create the study (schema, stored settings, its first trials) without training"):
    """Create the storage schema and the study, store its settings and data fingerprint, and
    enqueue its first trials (the recipe's rates, or the default= values of a model of your
    own); train nothing. Deployments run it once before starting workers.
    Idempotent: on an existing study it checks the flags against the stored settings.

    examples:
      hpsearch init --study mnist-learning-rate --data /data/mnist.npz --epochs 500
      hpsearch init --study cnn --model models/cnn.py:build --data /data/images.npz --epochs 20
    """

    def add_arguments(self, parser) -> None:
        parser.add_argument("--trials", type=whole_number, default=None,
                            help="the study's budget of finished trials, recorded so that `hpsearch query follow` shows it "
                            "before a worker starts (each worker's own --trials records it again); below 3, only that many of "
                            "the recipe's rates are enqueued (default: none recorded)")
        parser.add_argument("--epoch-budget", type=whole_number, metavar="EPOCHS",
                            help="the study's budget of epochs trained, recorded as --trials is (each worker's own --epoch-budget records it again)")

    def run(self, args) -> int:
        from search.study.config import DEFAULT_TRIALS
        from search.cli.render import init_text
        from storage.epochs import record_target

        target = args.trials
        args.trials = DEFAULT_TRIALS if target is None else target  # the recipe's rates: all three unless fewer trials
        opened = open_the_study(args, trains=False)  # no lanes: init trains nothing
        opened.progress.close()
        if target is not None or args.epoch_budget is not None:
            record_target(opened.storage, opened.study._study_id, target, args.epoch_budget)
        info = {"study": args.study, "created": opened.created, "storage": opened.resolved.masked, "config": opened.config.to_dict(),
                "target_trials": target, "epoch_budget": args.epoch_budget}
        if opened.hypermodel is not None:
            info["space"] = list(opened.space)
        print(init_text(info, args.format))
        return 0


# --- the one path to a study ---------------------------------------------------------------------


def _given(args) -> dict:
    from search.study.config import STUDY_FLAGS

    return {name: getattr(args, name) for name in STUDY_FLAGS}


def _check_flags(args, given: dict) -> None:
    """Validate flags before touching data or storage, so bad input fails at once."""
    import math

    from search.study.config import StudyConfig
    from search.train.backend import check_backend
    from search.errors import ConfigError
    from storage.engine import check_environment

    StudyConfig(**{k: v for k, v in given.items() if v is not None}).validate()
    for name in ("lr_min", "lr_max"):
        v = given[name]
        if v is not None and (not math.isfinite(v) or v <= 0):
            raise ConfigError(f"--{name.replace('_', '-')} must be a positive finite number, got {v}")
    check_environment()
    check_backend()
    for name, least in _AT_LEAST.items():
        value = getattr(args, name, None)
        if value is not None and value < least:
            raise ConfigError(f"--{name.replace('_', '-')} must be a whole number of at least {least}, got {value}")
    if not args.study.strip():
        raise ConfigError("--study is empty: give the study a name")
    if len(args.study) > MAX_STUDY_NAME:
        raise ConfigError(f"--study is {len(args.study)} characters long; Optuna stores at most {MAX_STUDY_NAME}: choose a shorter name")


def open_the_study(args, *, plan=None, trains: bool = True) -> OpenedStudy:
    """Check everything, then create or join the study ``args`` name; the one path of the four commands.

    Everything that can be refused is refused before anything is written: the flags, the
    environment, the backend, the GPUs, the lanes' memory, the storage URL and the data.

    Args:
        args: the parsed flags of ``run``, ``launch``, ``worker`` or ``init``.
        plan: ``plan(args)`` returns where the workers run (``search.fleet.launch.plan_slots``), or None
            to train in this process.
        trains: False for ``init``, which trains nothing: no lanes' memory check, no start line.

    Raises:
        HpsearchError: whatever was refused (``main`` prints it and exits with its code).
    """
    from search.env import env
    from search.study.config import StudyConfig, resolve_lanes
    from search.train.data import check_split
    from search.errors import ConfigError
    from search.train.lanes import check_lanes_fit
    from search.fleet.progress import Progress
    from storage import open_storage, resolve_storage_url
    from storage.settings import env as storage_env

    from search.train.usermodel import parse_spec

    given = _given(args)
    spec = parse_spec(given["model"]) if given["model"] is not None else None  # None: the study's, else the recipe
    if args.study is None:
        from search.study.config import default_study

        args.study = default_study(spec)
    _check_flags(args, given)
    if spec is not None:
        given["model"] = spec.text
    _refuse_recipe_flags(spec, given)
    if given["objective"] is not None and given["direction"] is None:
        from search.study.config import infer_direction

        given["direction"] = infer_direction(given["objective"])
    lanes = resolve_lanes(getattr(args, "lanes", None))
    _check_lanes_for(spec, lanes)
    slots = plan(args) if plan is not None else None
    gpu = getattr(args, "gpu", None)
    if gpu is not None:
        from search.fleet.launch import check_gpu

        check_gpu(str(gpu))
        from search.train.backend import use_gpu

        use_gpu(str(gpu))  # before TensorFlow is imported: this process sees only its GPU
    if trains and (spec is None or spec.is_recipe):
        # per worker: on a GPU, the card's free memory now (packed workers share it)
        recipe = StudyConfig()
        check_lanes_fit(lanes, hidden_units=recipe.hidden_units, batch_size=given["batch_size"] or recipe.batch_size)
    if args.storage is None and storage_env("OPTUNA_STORAGE", keep_empty=True) is None:
        resolved = None  # the embedded server starts only after the data checked out
    else:
        resolved = resolve_storage_url(args.storage)
        if resolved.is_sqlite and slots is not None and len(slots) > 1:
            raise ConfigError("SQLite serves one worker only: use --workers 1, or a PostgreSQL --storage for several workers")
    quiet_libraries()
    data_path = args.data if args.data is not None else env("HPSEARCH_DATA")
    # before the server starts or the schema is made; without --model, data that is not MNIST may
    # still be a user's model's, whose study a worker joins through an explicit --storage
    raw, recipe_error = _read_data(data_path, spec, given, may_join=resolved is not None)
    if recipe_error is not None and _stored_model(resolved, args.study) in (None, "recipe"):
        raise recipe_error  # not MNIST, and no study of a user's model to join: nothing was written
    from search.study.config import USER_BATCH_SIZE

    sizing = {"lanes": lanes if trains else 1, "batch_size": given["batch_size"] or USER_BATCH_SIZE}
    if spec is not None and not spec.is_recipe and resolved is not None:
        _refuse_other_code_or_data(resolved, args.study, spec, raw)
    model = _prepare_model(spec, gpu, **sizing) if spec is not None and not spec.is_recipe else None
    if resolved is None:
        resolved = resolve_storage_url(None)
    if gpu is not None and model is None:
        from search.train.backend import configure_backend

        configure_backend(require_gpu=str(gpu))  # before the study is touched
    storage = open_storage(resolved)
    if spec is None:
        # No --model: a worker joining a study takes the study's model (a new study is the recipe's).
        stored = _stored_model(storage.engine, args.study)
        if stored is not None and stored != "recipe":
            spec = parse_spec(stored)
            _refuse_recipe_flags(spec, given)
            _check_lanes_for(spec, lanes)
            from search.train.data import check_user_split, read_arrays

            raw = read_arrays(data_path)
            check_user_split(raw, given["train_size"], given["validation"])
            model = _prepare_model(spec, gpu, **sizing)
        elif recipe_error is not None:
            raise recipe_error
    user = spec is not None and not spec.is_recipe
    if user and model.member_bytes is not None:
        # per worker, from the user's model's own variables and layer outputs (issue 26)
        check_lanes_fit(lanes, batch_size=sizing["batch_size"], member_bytes=model.member_bytes)
    if user and given["landscape_param"] is None and args.model is not None:
        given["landscape_param"] = model.landscape_param  # what a new study stores; a joiner's agrees
    if user and given["landscape_param"] is not None and given["landscape_param"] not in model.space:
        raise ConfigError(f"--landscape-param {given['landscape_param']}: the space has no such parameter (it has {', '.join(model.space) or 'none'})")
    if user and given["landscape_param"] in model.mirrored:
        raise ConfigError(f"--landscape-param {given['landscape_param']}: it is sampled reverse_log, which Optuna stores mirrored, so the landscape's axis would read backwards: "
                          "name another parameter, or sample it linear or log")
    progress = Progress(args.trials, enabled=not getattr(args, "quiet", False), epoch_budget=getattr(args, "epoch_budget", None))

    def check(c):
        if user:
            from search.train.data import check_user_split
            from search.train.usermodel import check_digest

            check_digest(spec, c.model_digest, args.study)
            check_user_split(raw, c.train_size, c.validation)
        else:
            check_split(raw, c.train_size, c.validation)

    study, config, created = _open_study_waiting(
        storage, args, given, raw.fingerprint(), progress, check=check,
        target=args.trials,  # init too: `init --trials 1` queues one recipe rate, a larger run the rest
        model_digest=model.digest if model else None, first_params=model.first_params if model else None,
    )
    if model is not None and model.mirrored:
        from search.study.hyperparameters import record_mirrored

        record_mirrored(storage, study._study_id, model.mirrored)  # before any trial: its queued defaults read right too
    progress.metric = config.objective
    progress.names_rate = config.is_recipe
    from search.study.config import shown_param

    progress.param_label = "lr" if config.is_recipe else shown_param(config) or "lr"
    if trains:
        from search.cli.render import study_line

        progress.message(study_line(created, args.study, resolved.masked, config))
    return OpenedStudy(study, storage, config, created, resolved, data_path, progress, lanes, slots, raw, model.hypermodel if model else None,
                       model.described if model else ())


@dataclass
class _PreparedModel:
    hypermodel: object
    first_params: dict
    digest: str | None
    landscape_param: str | None = None
    space: tuple = ()
    member_bytes: int | None = None  # what one lane member of the default model needs
    described: tuple = ()  # each hyperparameter in one line (HyperParameters.describe)
    mirrored: dict = field(default_factory=dict)  # reverse_log parameters: name -> (min, max)


def _refuse_recipe_flags(spec, given: dict) -> None:
    """``--lr-min`` and ``--lr-max`` bound the recipe's learning rate; a user's model samples
    its own in ``build(hp)``, so with one they would be stored and never read."""
    from search.errors import ConfigError

    if spec is None or spec.is_recipe:
        return
    for name in ("lr_min", "lr_max"):
        if given[name] is not None:
            flag = f"--{name.replace('_', '-')}"
            raise ConfigError(f"{flag} bounds the recipe's learning rate; the model {spec.text} samples its own in build(hp): "
                              f"drop {flag} and set the range there, such as hp.Float('lr', 1e-4, 1e-2, sampling='log')")


def _check_lanes_for(spec, lanes: int) -> None:
    from search.errors import ConfigError

    from search.train.backend import setting

    backend = setting()
    if spec is not None and not spec.is_recipe and lanes > 1 and backend != "jax":
        raise ConfigError(f"--lanes {lanes}: lanes of a user's model (--model {spec.text}) run on JAX only, not {backend}: set KERAS_BACKEND=jax (pip install 'hpsearch[jax]'), or use --lanes 1")


def _read_data(data_path, spec, given, *, may_join: bool):
    """The data, read for the model: ``(raw, error)``. Without --model the recipe's MNIST is
    tried first; if it is not MNIST, a user's arrays are read instead and the recipe's error
    kept (raised if the study turns out to be the recipe's)."""
    from search.errors import DataError
    from search.train.data import check_split, check_user_split, read_arrays, read_mnist_cached

    if spec is not None and not spec.is_recipe:
        raw = read_arrays(data_path)
        check_user_split(raw, given["train_size"], given["validation"])
        return raw, None
    try:
        raw = read_mnist_cached(data_path)
        check_split(raw, given["train_size"], given["validation"])
        return raw, None
    except DataError as e:
        if spec is not None or data_path is None or not may_join:
            raise
        try:
            return read_arrays(data_path), e
        except DataError:
            raise e from None


def _prepare_model(spec, gpu, *, lanes: int = 1, batch_size: int = 32) -> _PreparedModel:
    """Import the user's model, check its space and its model with the defaults, before anything
    is written: the space's explicit defaults become the study's first trial. With ``lanes``
    above 1, also measure what one lane member of the default model needs at ``batch_size``."""
    from search.study.hyperparameters import HyperParameters
    from search.train.backend import clear_session, configure_backend
    from search.train.usermodel import check_source, digest, load_hypermodel

    code_digest = digest(spec)  # a missing file or module is refused before the backend starts
    check_source(spec)  # and a file's syntax error or missing NAME
    configure_backend(require_gpu=None if gpu is None else str(gpu))  # quietly, before the user's file imports Keras
    hypermodel = load_hypermodel(spec)
    hp = HyperParameters()  # recording: every hyperparameter answers its default
    from search.errors import ConfigError, one_line
    from storage.errors import HpsearchError

    try:
        model = hypermodel.build(hp)
    except HpsearchError:
        raise
    except Exception as e:
        raise ConfigError(f"--model {spec.text}: build(hp) with the default values raised {type(e).__name__}: {one_line(e, 300)}") from None
    hypermodel.check(model)
    each = None
    if lanes > 1:
        from search.train.modellanes import member_bytes

        each = member_bytes(model, batch_size)
    del model
    clear_session()
    from search.study.config import pick_landscape_param
    from search.study.hyperparameters import mirrored_bounds

    return _PreparedModel(hypermodel, hp.explicit_defaults(), code_digest, pick_landscape_param(hp.space), tuple(hp.space), each,
                          tuple(h.describe() for h in hp.space.values()), mirrored_bounds(hp.space))


def _stored_config(target, name: str) -> dict | None:
    """The stored configuration of study ``name`` (its ``hpsearch_config``), or None when there
    is no such study yet, or no storage to peek into.

    ``target``: an engine, or a resolved storage URL (opened read-only for the peek)."""
    from search.study.create import CONFIG_ATTR
    from storage import open_engine
    from storage.histories import study_user_attr

    from storage.errors import StorageError

    try:
        engine = target if hasattr(target, "dialect") else open_engine(target)
    except StorageError:
        return None  # nothing to join there (a new SQLite file, say)
    try:
        config = study_user_attr(engine, name, CONFIG_ATTR)
    finally:
        if engine is not target:
            engine.dispose()
    return config if isinstance(config, dict) else None


def _stored_model(target, name: str) -> str:
    """The ``--model`` study ``name`` was created with ("recipe" also when there is no such study yet)."""
    return (_stored_config(target, name) or {}).get("model", "recipe")


def _refuse_other_code_or_data(resolved, name: str, spec, raw) -> None:
    """A worker of a user's model whose code or data differ from the study's is refused before
    its backend starts (seconds, more on a GPU machine), not after; joining checks both again
    under the study's lock (``search.study.create.open_study``)."""
    from search.study.create import check_fingerprint
    from search.train.usermodel import check_digest

    stored = _stored_config(resolved, name)
    if stored is None:
        return
    check_digest(spec, stored.get("model_digest"), name)
    check_fingerprint(stored.get("data_fingerprint"), raw.fingerprint(), name)


def _open_study_waiting(storage, args, given, fingerprint, progress, check=None, target=None, **extra):
    """``open_study``; with ``--join``, wait for another process to create the study."""
    import time

    from storage.errors import StudyNotFoundError
    from search.study.create import open_study

    join = getattr(args, "join", False)
    deadline = time.monotonic() + JOIN_TIMEOUT_S
    waited = False
    while True:
        try:
            return open_study(storage, args.study, given, fingerprint, create=not join, worker_index=getattr(args, "worker_index", 0), check=check, say=progress.message, target=target, **extra)
        except StudyNotFoundError:
            if time.monotonic() > deadline:
                raise StudyNotFoundError(
                    f"study {args.study!r} did not appear within {JOIN_TIMEOUT_S} s: run `hpsearch init --study {args.study}` first, or drop --join to let this worker create it"
                ) from None
            if not waited:
                progress.message(f"waiting for study {args.study!r} to be created (hpsearch init)")
                waited = True
            time.sleep(2)
