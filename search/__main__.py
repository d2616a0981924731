"""``python -m search`` and the ``hpsearch`` console script: both start in :func:`main`.

Nothing is imported at the top: the first thing either way runs is :func:`main`'s ``try``.
"""


def main() -> int:
    """Block SIGINT and SIGTERM, import the command, and run it; :func:`search.cli.main.main`
    unblocks them, or has a thread of its own take them (:mod:`search.cli.signals`).

    A Ctrl-C from here until the command runs stays pending instead of interrupting an import
    (issue 25: a KeyboardInterrupt inside SQLAlchemy's imports printed tracebacks, some from
    finalisers no ``except`` can catch); it is delivered where the command's handling is in
    place, and ends it with one line and exit 130. One that came before the block (Python
    had already noted it) raises inside this ``try``. Before this function runs, Python
    itself is starting (its ``site`` module, ``runpy`` or the console script's wrapper): no
    code of hpsearch can catch a Ctrl-C there (docs/how-a-study-works.md, "Commands and their
    errors").
    """
    try:
        import signal

        # as search.cli.signals.block does: every thread started from here on inherits the block
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        from search.cli.main import main as run_command
    except KeyboardInterrupt:
        import sys

        print("hpsearch: interrupted", file=sys.stderr)
        return 130
    return run_command()


if __name__ == "__main__":
    import sys

    sys.exit(main())
