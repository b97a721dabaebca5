"""``memtamer`` / ``python -m memtamer``: watch and export every kernel's memory."""

import argparse
import sys


def main(argv=None):
    parser = argparse.ArgumentParser(prog="memtamer", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    watch = commands.add_parser("watch", help="a live table of every kernel's memory")
    watch.add_argument("--json", action="store_true", help="stream the messages, one per line")
    export = commands.add_parser("export", help="Prometheus metrics of every kernel over HTTP")
    export.add_argument("--port", type=int, required=True, help="TCP port (0: any free one)")
    export.add_argument("--address", default="127.0.0.1",
                        help="address to listen on (default: loopback only)")
    for command in (watch, export):
        command.add_argument("--dir", action="append", dest="directories", metavar="DIR",
                             help="where to look for discovery files (repeatable; default: "
                                  "Jupyter's runtime directory)")
    args = parser.parse_args(argv)
    if args.command == "watch":
        from .watch import run

        run(args.directories, as_json=args.json)
    else:
        from .export import serve

        serve(args.port, args.address, args.directories)
    return 0


if __name__ == "__main__":
    sys.exit(main())
