"""memtamer's command line: ``python -m memtamer`` (or ``memtamer``).

Each command is a function that adds its parser to the subparsers and sets
``run`` (called with the parsed arguments, returns the exit status);
COMMANDS lists them, in the order ``--help`` shows them.
"""

import argparse
import sys
from importlib import metadata

from .export import add_export_command
from .rules import add_check_command
from .run import add_run_command
from .telemetry import MissingDirectory
from .watch import add_watch_command

COMMANDS = (add_run_command, add_watch_command, add_export_command, add_check_command)


def build_parser():
    parser = argparse.ArgumentParser(
        prog="memtamer",
        description="Exact per-cell memory measurement for IPython and Jupyter kernels. "
                    "In a kernel: %load_ext memtamer.")
    parser.add_argument("--version", action="version",
                        version=f"memtamer {metadata.version('memtamer')}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    for add_command in COMMANDS:
        add_command(subparsers)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_usage(sys.stderr)
        print("memtamer: name a command (see --help), or use --version", file=sys.stderr)
        return 2
    try:
        return args.run(args)
    except MissingDirectory as exc:
        print(f"memtamer: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
