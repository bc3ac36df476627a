"""``python -m etl`` and the ``etl`` command."""

import sys


def run() -> int:
    """The command line (etl.cli). A Ctrl-C while its modules are still being imported exits
    130, as one later does, without a traceback."""
    try:
        from etl.cli import main
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return main()


if __name__ == "__main__":
    raise SystemExit(run())
