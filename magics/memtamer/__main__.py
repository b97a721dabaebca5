"""python -m memtamer check FILE...: validate rules files from a shell, CI
or an editor (exit status 0 when all are valid, 1 otherwise; errors as
FILE:LINE:COL: message)."""

import argparse
import sys


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m memtamer")
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check", help="validate rules files without loading them")
    check.add_argument("files", nargs="+", metavar="FILE")
    args = parser.parse_args(argv)

    from .rules import check as check_file

    failed = False
    for path in args.files:
        errors = check_file(path)
        failed = failed or bool(errors)
        print("\n".join(errors) if errors else f"{path}: ok")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
