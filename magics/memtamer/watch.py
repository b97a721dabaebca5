"""``memtamer watch``: one live table of every kernel's memory in the terminal
(or, with ``--json``, every message on a line of its own)."""

import json
import os
import sys
import time

from .sizes import format_size
from .telemetry import Follower, add_directories_argument, is_stale, printable

# At most this many redraws a second: a busy kernel sends four samples a second.
REDRAW_SECONDS = 0.2
COLUMNS = ("KERNEL", "NOTEBOOK", "RSS", "LIMIT", "HEADROOM", "BUDGET", "RUNNING",
           "LAST PEAK", "LAST RETAINED", "TRIPS", "LOST")
CLEAR = "\x1b[H\x1b[2J"


def _size(value):
    return "-" if value is None else format_size(value)


def _notebook(state):
    notebook = state.get("notebook")
    if notebook:
        return os.path.basename(notebook)
    return os.path.basename(state.get("cwd") or "") + "/" if state.get("cwd") else "-"


def row(state):
    """The table's cells for one kernel's state (from Follower.kernels)."""
    running = state.get("running")
    if is_stale(state):
        running_text = "no news" if state.get("received") is None else "stale"
    elif running:
        running_text = f"{running['seconds']:.1f}s peak +{_size(running.get('peak_increment'))}"
    else:
        running_text = "idle"
    last = state.get("last_cell") or {}
    return (printable(state["kernel"][:8]), printable(_notebook(state)), _size(state.get("rss")),
            _size(state.get("limit")), _size(state.get("headroom")), _size(state.get("budget")),
            running_text, _size(last.get("peak_increment")), _size(last.get("retained")),
            str(state.get("trips", 0)), str(state["lost"]))


def table(kernels, rejected=0):
    """The whole screen as text: a header line, one row per kernel, and how
    many discovery files and messages were rejected (when any were)."""
    rows = [COLUMNS] + [row(state) for _, state in sorted(kernels.items())]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(r, widths)).rstrip() for r in rows]
    stamp = time.strftime("%H:%M:%S")
    count = f"{len(kernels)} kernel{'s' if len(kernels) != 1 else ''}"
    footer = f"\nrejected: {rejected} malformed discovery files or messages, skipped\n" \
        if rejected else ""
    return (f"memtamer watch  {stamp}  {count}  (Ctrl-C to quit)\n\n" + "\n".join(lines) + "\n"
            + footer)


def run(directories=None, as_json=False, out=sys.stdout):
    """Follows the kernels until interrupted."""
    follower = Follower(directories)
    drawn, dirty = 0.0, True
    try:
        while True:
            message = follower.receive(REDRAW_SECONDS)
            if as_json:
                if message is not None:
                    out.write(json.dumps(message) + "\n")
                    out.flush()
                continue
            dirty = dirty or message is not None or time.monotonic() - drawn >= 1.0
            if dirty and time.monotonic() - drawn >= REDRAW_SECONDS:
                out.write(CLEAR + table(follower.kernels, follower.rejected))
                out.flush()
                drawn, dirty = time.monotonic(), False
    except KeyboardInterrupt:
        pass
    finally:
        follower.close()


def add_watch_command(subparsers):
    """`memtamer watch [--json] [--dir DIR]`."""
    parser = subparsers.add_parser("watch", help="a live table of every kernel's memory")
    parser.add_argument("--json", action="store_true", help="stream the messages, one per line")
    add_directories_argument(parser)
    parser.set_defaults(run=lambda args: run(args.directories, as_json=args.json) or 0)
