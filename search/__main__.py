import sys

try:
    from search.cli.main import main
except KeyboardInterrupt:  # Ctrl-C while Python imports the command (issue 15): no traceback
    print("hpsearch: interrupted", file=sys.stderr)
    sys.exit(130)

sys.exit(main())
