"""The ``hpsearch`` command: parse, call, print. The one place errors become exit codes.

Imports stay lazy so ``hpsearch --help`` and ``hpsearch db url`` start quickly, and so a worker
can set ``CUDA_VISIBLE_DEVICES`` before TensorFlow is imported.

Exit codes: 0 success; 2 bad input (flags, URLs, data, study conflicts); 1 the environment
failed (a database that stopped answering, workers that died); 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import textwrap

__all__ = ["main"]

_STUDY_FLAGS_HELP = "study settings (stored in the study when it is created; a worker joining it may leave them out)"


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``hpsearch run: error: ... (see hpsearch run --help)``."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    return value


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--storage", metavar="URL", help="storage URL (default: $OPTUNA_STORAGE, else the embedded PostgreSQL)")
    p.add_argument("--debug", action="store_true", help="show tracebacks of errors")


def _add_study(p: argparse.ArgumentParser, *, trials_help: str) -> None:
    from search.config import DEFAULT_STUDY, DEFAULT_TRIALS

    p.add_argument("--study", default=DEFAULT_STUDY, help=f"study name (default: {DEFAULT_STUDY})")
    p.add_argument("--data", metavar="PATH", help="mnist.npz file or directory of the four IDX files (default: $HPSEARCH_DATA, else Keras's download)")
    p.add_argument("--trials", type=_int, default=DEFAULT_TRIALS, help=f"{trials_help} (default: {DEFAULT_TRIALS})")
    p.add_argument("--format", choices=("text", "json"), default="text", help="summary format on stdout (default: text)")
    g = p.add_argument_group(_STUDY_FLAGS_HELP)
    g.add_argument("--epochs", type=_int, help="epochs per trial (default: 500, the recipe's)")
    g.add_argument("--batch-size", type=_int, help="batch size (default: 1024, the recipe's)")
    g.add_argument("--train-size", type=_int, metavar="N", help="train on the first N training images (default: all)")
    g.add_argument("--validation", choices=("holdout", "test"), help="holdout: last 10,000 training images (default); test: the test set, as the recipe did")
    g.add_argument("--lr-min", type=_positive_float, help="lowest learning rate sampled (default: 1e-5)")
    g.add_argument("--lr-max", type=_positive_float, help="highest learning rate sampled (default: 1.0)")
    g.add_argument("--pruner", help="asha (successive halving at 1, 3, 9, 27... epochs; default), median, hyperband or none")
    g.add_argument("--sampler", help="tpe (default) or random (a baseline)")
    g.add_argument("--seed", type=_int, help="seed of the sampler and of the weights (default: none)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="hpsearch",
        description="Hyperparameter search for the Keras MNIST learning-rate recipe, with Optuna studies in PostgreSQL.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=textwrap.dedent(
            """\
            examples:
              hpsearch run --data mnist.npz --trials 6 --epochs 3 --train-size 3000
              hpsearch worker --study mnist-learning-rate --storage postgresql+psycopg2://user@db/hpsearch
              hpsearch dashboard --study mnist-learning-rate
            """
        ),
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    run = sub.add_parser(
        "run",
        help="create or resume a study and run it to --trials finished trials",
        description="Create the study (or resume it) and run trials until it holds --trials finished (complete or pruned) trials in total. Running it again on a full study adds nothing.",
        epilog="example:\n  hpsearch run --data ../shared/data/mnist.npz --trials 6 --epochs 3 --train-size 3000",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_study(run, trials_help="finished trials the study must hold in total")
    run.add_argument("--workers", type=_int, default=1, help="worker processes on this machine, spread over its GPUs if it has any (default: 1)")
    run.add_argument("--max-failures", type=_int, default=3, help="a worker stops after this many failed trials in a row (default: 3)")
    run.add_argument("--lanes", type=_int, metavar="K", help="trials each worker trains at once as one batched model (default: $HPSEARCH_LANES, else 1; see docs/lanes.md)")
    _add_common(run)

    launch = sub.add_parser(
        "launch",
        help="start and supervise workers on this machine: one per GPU, or K on the CPU",
        description="Prepare the study, then start workers on this machine: one per GPU found by nvidia-smi (or per --gpus entry), --per-gpu K on each card, or --workers K on a machine without GPUs. Restarts workers that die unexpectedly, sweeps stale trials, forwards Ctrl-C/SIGTERM, and exits non-zero if the study could not finish.",
        epilog="examples:\n  hpsearch launch --study lr --trials 200 --per-gpu 2\n  hpsearch launch --study lr --trials 200 --gpus 0,2\n  hpsearch launch --study lr --trials 20 --workers 4   # CPU only",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_study(launch, trials_help="finished trials the study must hold in total")
    launch.add_argument("--gpus", metavar="IDS", help="comma-separated GPU indices to use (default: every GPU nvidia-smi lists)")
    launch.add_argument("--per-gpu", type=_int, default=1, metavar="K", help="workers packed on each GPU (default: 1)")
    launch.add_argument("--workers", type=_int, help="total workers (default: one per GPU times --per-gpu; 1 without GPUs)")
    launch.add_argument("--max-restarts", type=_int, default=3, help="restarts of a worker that dies unexpectedly (default: 3)")
    launch.add_argument("--max-failures", type=_int, default=3, help="a worker stops after this many failed trials in a row (default: 3)")
    launch.add_argument("--lanes", type=_int, metavar="K", help="trials each worker trains at once as one batched model (default: $HPSEARCH_LANES, else 1; see docs/lanes.md)")
    _add_common(launch)

    worker = sub.add_parser(
        "worker",
        help="one worker process joining (or creating) a study",
        description="Join the study (creating it if needed) and run trials until it holds --trials finished trials across all workers. The unit that deployments run.",
        epilog='example:\n  OPTUNA_STORAGE=postgresql+psycopg2://user:pass@db/hpsearch hpsearch worker --study mnist-learning-rate --trials 100 --gpu 0',
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_study(worker, trials_help="finished trials the study must hold in total, across all workers")
    worker.add_argument("--gpu", metavar="ID", help="GPU index for this worker (sets CUDA_VISIBLE_DEVICES before TensorFlow starts)")
    worker.add_argument("--worker-index", type=_int, default=0, help=argparse.SUPPRESS)
    worker.add_argument("--join", action="store_true", help="never create the study: wait (up to 10 minutes) until it exists, e.g. for `hpsearch init` to run first")
    worker.add_argument("--max-failures", type=_int, default=3, help="stop after this many failed trials in a row (default: 3)")
    worker.add_argument("--quiet", action="store_true", help="no progress display")
    worker.add_argument("--lanes", type=_int, metavar="K", help="trials this worker trains at once as one batched model (default: $HPSEARCH_LANES, else 1; see docs/lanes.md)")
    _add_common(worker)

    init = sub.add_parser(
        "init",
        help="create the study (schema, stored settings, the recipe's trials) without training",
        description="Create the storage schema and the study, store its settings and data fingerprint, and enqueue the recipe's rates; train nothing. Deployments run it once before starting workers. Idempotent: on an existing study it checks the flags against the stored settings.",
        epilog="example:\n  hpsearch init --study mnist-learning-rate --data /data/mnist.npz --epochs 500",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_study(init, trials_help="ignored by init; accepted so init and worker take the same flags")
    _add_common(init)

    from search.query_cli import add_query_parser, add_views_parser

    add_query_parser(sub, _add_common)

    from search.dashboard import add_parsers as add_dashboard_parsers

    add_dashboard_parsers(sub, _add_common)

    db = sub.add_parser(
        "db",
        help="the embedded PostgreSQL: url, start, stop, status; views: SQL views of the studies",
        description="Manage the embedded PostgreSQL under $HPSEARCH_HOME (default ./.hpsearch).",
        epilog='example:\n  optuna-dashboard "$(hpsearch db url)"',
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    dbsub = db.add_subparsers(dest="db_command", metavar="ACTION", parser_class=_Parser)
    dbsub.required = True
    for name, text in (("url", "start the server if needed and print its URL"), ("start", "start the server"),
                       ("stop", "stop the server"), ("status", "say whether the server runs, as JSON")):
        p = dbsub.add_parser(name, help=text, description=text.capitalize() + ".")
        p.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    add_views_parser(dbsub, _add_common)
    return parser


def _given(args) -> dict:
    from search.config import STUDY_FLAGS

    return {name: getattr(args, name) for name in STUDY_FLAGS}


def _check_given(given: dict) -> None:
    """Validate flags before touching data or storage, so bad input fails at once."""
    from search.config import StudyConfig
    from search.errors import ConfigError

    StudyConfig(**{k: v for k, v in given.items() if v is not None}).validate()
    for name in ("lr_min", "lr_max"):
        v = given[name]
        if v is not None and (not math.isfinite(v) or v <= 0):
            raise ConfigError(f"--{name.replace('_', '-')} must be a positive finite number, got {v}")


def _dashboard_hint(resolved, study: str) -> str:
    """The command that opens the dashboard on this study; never with a password in it."""
    import shlex

    cmd = f"hpsearch dashboard --study {shlex.quote(study)}"
    if resolved.source == "--storage":
        if "***" in resolved.masked:
            return f"OPTUNA_STORAGE=<your storage URL> {cmd}"
        return f"{cmd} --storage {shlex.quote(resolved.url)}"
    return cmd


def _quiet_libraries() -> None:
    import logging
    import warnings

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    logging.getLogger("alembic").setLevel(logging.WARNING)


def _open_study_waiting(storage, args, given, fingerprint, progress, check=None, target=None):
    """``open_study``; with ``--join``, wait for another process to create the study."""
    import time

    from search.errors import StudyNotFoundError
    from search.study import open_study

    join = getattr(args, "join", False)
    deadline = time.monotonic() + JOIN_TIMEOUT_S
    waited = False
    while True:
        try:
            return open_study(storage, args.study, given, fingerprint, create=not join, worker_index=getattr(args, "worker_index", 0), check=check, say=progress.message, target=target)
        except StudyNotFoundError:
            if time.monotonic() > deadline:
                raise StudyNotFoundError(
                    f"study {args.study!r} did not appear within {JOIN_TIMEOUT_S} s: run `hpsearch init --study {args.study}` first, or drop --join to let this worker create it"
                ) from None
            if not waited:
                progress.message(f"waiting for study {args.study!r} to be created (hpsearch init)")
                waited = True
            time.sleep(2)


JOIN_TIMEOUT_S = 600
#: Optuna's ``studies.study_name`` column is VARCHAR(512).
MAX_STUDY_NAME = 512


def _cmd_study(args, *, launcher: bool, train: bool = True) -> int:
    from search.config import env
    from search.data import load_dataset, read_mnist_cached
    from search.errors import ConfigError
    from search.progress import Progress
    from search.study import dumps, format_summary, summarize
    from search.worker import run_worker
    from storage import home_dir, open_storage, resolve_storage_url

    given = _given(args)
    _check_given(given)
    from search.config import check_backend
    from storage.engine import check_environment

    check_environment()
    check_backend()
    if args.trials < 1:
        raise ConfigError(f"--trials must be a whole number of at least 1, got {args.trials}")
    workers = getattr(args, "workers", 1)
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers must be a whole number of at least 1, got {workers}")
    for flag in ("max_failures", "max_restarts", "per_gpu"):
        value = getattr(args, flag, None)
        if value is not None and value < (0 if flag == "max_restarts" else 1):
            raise ConfigError(f"--{flag.replace('_', '-')} must be a whole number of at least {0 if flag == 'max_restarts' else 1}, got {value}")
    if not args.study.strip():
        raise ConfigError("--study is empty: give the study a name")
    if len(args.study) > MAX_STUDY_NAME:
        raise ConfigError(f"--study is {len(args.study)} characters long; Optuna stores at most {MAX_STUDY_NAME}: choose a shorter name")
    from search.config import resolve_lanes
    from search.lanes import check_lanes_fit

    lanes = resolve_lanes(getattr(args, "lanes", None))
    slots = None
    if args.command == "launch" or (args.command == "run" and workers > 1):
        from search.launch import check_gpu, detect_gpus, plan_slots

        gpus = None
        if getattr(args, "gpus", None):
            gpus = [g.strip() for g in args.gpus.split(",") if g.strip()]
            if detect_gpus() is None:
                raise ConfigError("--gpus: nvidia-smi is not available, so the GPUs cannot be checked or assigned: install the NVIDIA driver tools, or start `hpsearch worker` processes yourself")
            for g in gpus:
                check_gpu(g)
        else:
            gpus = [index for index, _ in (detect_gpus() or [])]
        per_gpu = getattr(args, "per_gpu", 1)
        slots = plan_slots(workers=workers, gpus=gpus, per_gpu=per_gpu)
    if getattr(args, "gpu", None) is not None:
        from search.launch import check_gpu

        check_gpu(str(args.gpu))
        # before TensorFlow is imported: this process sees only its GPU
        os.environ["CUDA_VISIBLE_DEVICES"] = str(args.gpu)
    if train:
        # per worker: on a GPU, the card's free memory now (packed workers share it)
        check_lanes_fit(lanes, hidden_units=1000, batch_size=given["batch_size"] or 1024)
    if args.storage is None and os.environ.get("OPTUNA_STORAGE") is None:
        resolved = None  # the embedded server starts only after the data checked out
    else:
        resolved = resolve_storage_url(args.storage)
        if resolved.is_sqlite and slots is not None and len(slots) > 1:
            raise ConfigError("SQLite serves one worker only: use --workers 1, or a PostgreSQL --storage for several workers")
    _quiet_libraries()
    data_path = args.data if args.data is not None else env("HPSEARCH_DATA")
    raw = read_mnist_cached(data_path)
    from search.data import check_split

    check_split(raw, given["train_size"], given["validation"])  # before the server starts or the schema is made
    if resolved is None:
        resolved = resolve_storage_url(None)
    if getattr(args, "gpu", None) is not None:
        from search.worker import configure_backend

        configure_backend(require_gpu=str(args.gpu))  # before the study is touched
    storage = open_storage(resolved)
    quiet = getattr(args, "quiet", False)
    progress = Progress(args.trials, enabled=not quiet)
    study, config, created = _open_study_waiting(
        storage, args, given, raw.fingerprint(), progress, check=lambda c: check_split(raw, c.train_size, c.validation),
        target=args.trials,  # init too: `init --trials 1` queues one recipe rate, a larger run the rest
    )
    if not train:
        info = {"study": args.study, "created": created, "storage": resolved.masked, "config": config.to_dict()}
        print(json.dumps(info, indent=2) if args.format == "json" else f"study {args.study!r} {'created' if created else 'exists'} on {resolved.masked}")
        return 0
    progress.message(
        f"{'created' if created else 'resumed'} study {args.study!r} on {resolved.masked} "
        f"({config.epochs} epochs, batch {config.batch_size}, train size {config.train_size or 'all'}, validation {config.validation}, pruner {config.pruner})"
    )
    try:
        if launcher and slots is not None and (len(slots) > 1 or args.command == "launch"):
            from search.launch import launch_workers

            launch_workers(
                study, storage, resolved.url, args.trials, slots, data=data_path, log_dir=home_dir() / "logs",
                progress=progress, epochs=config.epochs, max_restarts=getattr(args, "max_restarts", 3),
                worker_args=["--max-failures", str(args.max_failures), "--lanes", str(lanes)],
            )
        else:
            dataset = load_dataset(data_path, train_size=config.train_size, validation=config.validation)
            run_worker(study, storage, config, dataset, args.trials, progress=progress,
                       max_consecutive_failures=args.max_failures, gpu=getattr(args, "gpu", None), lanes=lanes)
    finally:
        progress.close()
    summary = summarize(study, storage, config, args.trials)
    summary["storage"] = resolved.masked
    if args.format == "json":
        print(dumps(summary))
    else:
        print(format_summary(summary, _dashboard_hint(resolved, args.study)))
    return 0


def _cmd_db(args) -> int:
    from storage import embedded_status, embedded_url, stop_embedded

    if args.db_command == "views":
        from search.query_cli import run_views

        return run_views(args)
    if args.db_command in ("url", "start"):
        was_running = embedded_status()["running"]
        url = embedded_url()
        if args.db_command == "url":
            print(url)
        else:
            print(f"embedded PostgreSQL {'already running' if was_running else 'started'}: {url}")
    elif args.db_command == "stop":
        print("embedded PostgreSQL stopped" if stop_embedded() else "embedded PostgreSQL was not running")
    else:
        print(json.dumps(embedded_status(), indent=2))
    return 0


def _interrupted(what: str) -> int:
    """Print that ``what`` was interrupted and return 130, the exit code the README promises.

    CPython exits by SIGINT instead of with the code given once a KeyboardInterrupt has
    escaped a ``PyRun_String`` call, even one caught later: its ``_Py_UnhandledKeyboardInterrupt``
    flag is never reset (shown with ctypes calling ``PyRun_String`` directly). Native modules
    run such calls while they import (pybind11's ``py::exec``), and a Ctrl-C 0.3 s into
    ``hpsearch run`` died by signal 2 in 1 run of 5 under pytest. The flag is reset here,
    where the interrupt has been handled, so the exit code is 130 as the README says.
    """
    print(f"{what}: interrupted", file=sys.stderr)
    _forget_interrupt()
    return 130


def _forget_interrupt() -> None:
    try:
        import ctypes

        ctypes.c_int.in_dll(ctypes.pythonapi, "_Py_UnhandledKeyboardInterrupt").value = 0
    except (ImportError, ValueError, AttributeError):  # not CPython, or a CPython without it
        pass


def main(argv: list[str] | None = None) -> int:
    """Run the ``hpsearch`` command; return its exit code."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = build_parser().parse_args(argv)
    except KeyboardInterrupt:  # Ctrl-C while the command starts (issue 15): no traceback
        return _interrupted("hpsearch")
    try:
        code = _main(args)
    except KeyboardInterrupt:  # a Ctrl-C that lands between the handlers below
        return _interrupted(f"hpsearch {args.command}")
    if code == 130:  # interrupted and handled deeper down (a worker's SIGINT): exit 130 too
        _forget_interrupt()
    return code


def _main(args) -> int:
    debug = getattr(args, "debug", False)
    if debug:
        os.environ["HPSEARCH_DEBUG"] = "1"
    try:
        from storage.errors import HpsearchError
        from storage.url import scrub, scrub_traceback

        try:
            if args.command in ("run", "launch"):
                return _cmd_study(args, launcher=True)
            if args.command == "worker":
                return _cmd_study(args, launcher=False)
            if args.command == "init":
                return _cmd_study(args, launcher=False, train=False)
            if args.command == "db":
                return _cmd_db(args)
            if args.command == "query":
                from search.query_cli import run_query

                return run_query(args)
            if args.command in ("dashboard", "landscape"):
                from search.dashboard import run_command

                _quiet_libraries()
                return run_command(args)
        except HpsearchError as e:
            if debug:
                print(scrub_traceback(e, getattr(args, "storage", None) or os.environ.get("OPTUNA_STORAGE")), file=sys.stderr, end="")
            msg = scrub(str(e), getattr(args, "storage", None) or os.environ.get("OPTUNA_STORAGE"))
            print(f"hpsearch {args.command}: error: {msg}", file=sys.stderr)
            return e.exit_code
        except KeyboardInterrupt:
            return _interrupted(f"hpsearch {args.command}")
        except Exception as e:
            if debug:
                print(scrub_traceback(e, getattr(args, "storage", None) or os.environ.get("OPTUNA_STORAGE")), file=sys.stderr, end="")
            detail = scrub(" ".join(str(e).split())[:300], getattr(args, "storage", None) or os.environ.get("OPTUNA_STORAGE"))
            print(f"hpsearch {args.command}: internal error: {type(e).__name__}: {detail} (rerun with --debug for the traceback, and report it)", file=sys.stderr)
            return 1
    finally:
        sys.stdout.flush()
    return 2


if __name__ == "__main__":
    sys.exit(main())
