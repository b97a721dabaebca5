"""``memtamer watch``: one live table of every kernel's memory, fitted to the
terminal's width (or, with ``--json``, every message on a line of its own;
with ``--once``, one table and exit; with ``--children``, or the c key, a
line under each kernel with child processes says what they own)."""

import json
import os
import select
import shutil
import signal
import sys
import time
import unicodedata

from . import _core
from .sizes import format_size
from .telemetry import (PROTOCOL, RESCAN_SECONDS, Follower, add_directories_argument,
                        display_name, is_stale, printable)

# At most this many redraws a second: a busy kernel sends four samples a second.
REDRAW_SECONDS = 0.2
CLEAR = "\x1b[H\x1b[2J"
ELLIPSIS = "…"
# A name is shortened to NAME_ROOM before columns go, and below that (to
# NAME_MIN at the least) only when no column is left to drop.
NAME_ROOM = 32
NAME_MIN = 12
GAP = "  "
NEAR = PROTOCOL["near_percent"] / 100


def _size(value):
    return "-" if value is None else format_size(value)


def _running(state):
    if is_stale(state):
        return "no news" if state.get("received") is None else "stale"
    running = state.get("running")
    if running:
        return f"{running['seconds']:.1f}s +{_size(running.get('peak_increment'))}"
    return "idle"


def _last(state, field):
    return (state.get("last_cell") or {}).get(field)


def near_limit(state):
    """Whether the kernel's RSS is within the protocol's near_percent of its
    budget, or its headroom within that share of its limit."""
    rss, budget = state.get("rss"), state.get("budget")
    limit, headroom = state.get("limit"), state.get("headroom")
    return bool((rss is not None and budget and rss >= budget * (1 - NEAR))
                or (headroom is not None and limit and headroom <= limit * NEAR))


class Column:
    """title; key: the letter that sorts by it; text(state) -> str;
    order(state): the sort key (largest first for figures, which are
    right-aligned unless right says otherwise)."""

    def __init__(self, title, key, text, order=None, figure=True, right=None):
        self.title, self.key, self.text = title, key, text
        self.order = order or (lambda state: text(state))
        self.figure = figure
        self.right = figure if right is None else right


def _figure(read):
    return lambda state: -1 if read(state) is None else read(state)


# In the order shown; DROP_ORDER says which go first when the terminal is narrow.
COLUMNS = (
    Column("PID", "p", lambda s: str(s["pid"]), lambda s: s["pid"], figure=False),
    Column("NOTEBOOK", "n", lambda s: printable(display_name(s)), figure=False),
    Column("RSS", "m", lambda s: _size(s.get("rss")), _figure(lambda s: s.get("rss"))),
    Column("BUDGET", "b", lambda s: _size(s.get("budget")), _figure(lambda s: s.get("budget"))),
    Column("HEADROOM", "h", lambda s: _size(s.get("headroom")),
           _figure(lambda s: s.get("headroom"))),
    Column("RUNNING", "r", _running,
           _figure(lambda s: (s.get("running") or {}).get("seconds")), right=False),
    Column("LAST PEAK", "l", lambda s: _size(_last(s, "peak_increment")),
           _figure(lambda s: _last(s, "peak_increment"))),
    Column("RETAINED", "k", lambda s: _size(_last(s, "retained")),
           _figure(lambda s: _last(s, "retained"))),
    Column("TRIPS", "t", lambda s: str(s.get("trips", 0)), lambda s: s.get("trips", 0)),
    # Pages a second the running cell waits for from swap or disk, once the
    # guard has seen it thrash.
    Column("THRASH", "w", lambda s: "-" if not s.get("thrashing") else f"{s['thrashing']:.0f}/s",
           _figure(lambda s: s.get("thrashing"))),
    Column("LIMIT", "i", lambda s: _size(s.get("limit")), _figure(lambda s: s.get("limit"))),
    Column("LOST", "o", lambda s: str(s["lost"]), lambda s: s["lost"]),
    Column("KERNEL", "e", lambda s: printable(s["kernel"][:8]), lambda s: s["kernel"],
           figure=False),
)
# Least useful first: the container's limit is in the header, the id in no one's head.
DROP_ORDER = ("LOST", "KERNEL", "LIMIT", "THRASH", "RETAINED", "TRIPS", "HEADROOM", "LAST PEAK",
              "BUDGET", "RUNNING")
SORT_KEYS = {column.key: column for column in COLUMNS}
DEFAULT_SORT = "m"
CHILDREN_KEY = "c"


def width_of(text):
    """Terminal cells text takes: two for wide characters, none for combining ones."""
    return sum(0 if unicodedata.combining(c) else
               2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _cut(text, cells):
    """The longest start of text that fits in cells."""
    out, used = [], 0
    for c in text:
        used += width_of(c)
        if used > cells:
            break
        out.append(c)
    return "".join(out)


def shorten(text, cells):
    """text in at most cells terminal cells: cut in the middle with an
    ellipsis, keeping the end (a notebook's name and extension) whole longer."""
    if width_of(text) <= cells:
        return text
    if cells <= 1:
        return ELLIPSIS[:cells]
    tail_cells = (cells - 1) // 2 + (cells - 1) % 2
    head = _cut(text, cells - 1 - tail_cells)
    tail = _cut(text[::-1], tail_cells)[::-1]
    return head + ELLIPSIS + tail


def fit_line(text, cells):
    """text cut to cells, never longer (a row must not wrap)."""
    return text if width_of(text) <= cells else _cut(text, cells - 1) + ELLIPSIS


def _pad(text, cells, right):
    space = " " * max(0, cells - width_of(text))
    return space + text if right else text + space


def layout(rows, cells):
    """(columns kept, their widths) so that a line of them fits in cells: the
    least useful columns dropped first while the notebook's name, cut to
    NAME_ROOM, would not fit; then the name gets the room that is left."""
    natural = {c.title: max([width_of(c.title)] + [width_of(r[c.title]) for r in rows])
               for c in COLUMNS}

    def total(kept, name):
        return (2 + sum(natural[c.title] for c in kept if c.title != "NOTEBOOK") + name
                + len(GAP) * (len(kept) - 1))

    kept = list(COLUMNS)
    for title in DROP_ORDER:
        if total(kept, min(natural["NOTEBOOK"], NAME_ROOM)) <= cells:
            break
        kept = [c for c in kept if c.title != title]
    widths = {c.title: natural[c.title] for c in kept}
    widths["NOTEBOOK"] = max(NAME_MIN, min(natural["NOTEBOOK"], cells - total(kept, 0)))
    return kept, widths


def header(kernels, cells, container):
    """The title line: the count of kernels, then the container's limit and
    the room left in it; the clock goes first when the line is too long."""
    count = f"{len(kernels)} kernel{'s' if len(kernels) != 1 else ''}"
    room = (f"  room {_size(container['available'])} of {_size(container['limit'])}"
            if container is not None else "")
    line = f"memtamer watch {time.strftime('%H:%M:%S')}  {count}{room}"
    if width_of(line) > cells:
        line = f"memtamer watch  {count}{room}"
    return fit_line(line, cells)


def legend(sort_key, cells, interactive, kept):
    text = f"! near budget or limit; sorted by {SORT_KEYS[sort_key].title.lower()}"
    if interactive:
        keys = " ".join(f"{c.key}={c.title.lower()}" for c in kept)
        text += f" (again: reversed); keys: {keys}; {CHILDREN_KEY} children; q quits"
    return fit_line(text, cells)


def children_line(state, cells):
    """The line under a kernel's row: how many descendants live, what they
    own, and the one that owns most; None when it has none (or says nothing
    of them)."""
    count = state.get("children")
    if not count:
        return None
    text = (f"    └ {count} child process{'es own' if count != 1 else ' owns'} "
            f"{_size(state.get('children_private'))}")
    if state.get("biggest_child_pid") is not None:
        text += (f"; the most: pid {state['biggest_child_pid']} "
                 f"{_size(state.get('biggest_child_private'))}")
    return fit_line(text, cells)


def container_figures():
    """The limit and the memory available in the container watch runs in
    (the kernels' container, when it runs beside them), None when unknown."""
    try:
        process = _core.process()
    except OSError:
        return None
    if process.get("limit") is None or process.get("available") is None:
        return None
    return process


def terminal_width(out):
    """The width of the terminal out writes to, read now (a COLUMNS a shell
    exported at start would be stale after a resize); else COLUMNS, else 80
    (shutil.get_terminal_size's rules, for a pipe)."""
    try:
        return os.get_terminal_size(out.fileno()).columns
    except (AttributeError, OSError, ValueError):
        return shutil.get_terminal_size().columns


def table(kernels, rejected=0, cells=None, sort_key=DEFAULT_SORT, reverse=False,
          interactive=False, container=None, where=None, children=False):
    """The whole screen as text, every line at most cells wide: a header, a
    legend, the column titles and one row per kernel (sorted by the column
    whose key is sort_key, figures largest first; with children, each
    followed by its children's line), and how many discovery files and
    messages were rejected (when any were)."""
    cells = cells or shutil.get_terminal_size().columns
    column = SORT_KEYS[sort_key]
    states = sorted(kernels.values(), key=column.order,
                    reverse=column.figure != reverse)
    rows = [{c.title: c.text(state) for c in COLUMNS} for state in states]
    marks = ["!" if near_limit(state) else " " for state in states]
    kept, widths = layout(rows, cells)
    right = {c.title: c.right for c in kept}

    def line(mark, row):
        texts = [shorten(row[c.title], widths[c.title]) for c in kept]
        text = mark + " " + GAP.join(_pad(t, widths[c.title], right[c.title])
                                     for t, c in zip(texts, kept))
        return fit_line(text.rstrip(), cells)

    lines = [header(kernels, cells, container), legend(sort_key, cells, interactive, kept), ""]
    if rows:
        lines.append(line(" ", {c.title: c.title for c in COLUMNS}))
        for mark, row, state in zip(marks, rows, states):
            lines.append(line(mark, row))
            under = children_line(state, cells) if children else None
            lines += [under] if under else []
    else:
        lines.append(fit_line(f"no kernels with memtamer loaded in {', '.join(where or [])}",
                              cells))
    if rejected:
        lines += ["", fit_line(f"rejected: {rejected} malformed discovery files or messages, "
                               "skipped", cells)]
    return "\n".join(lines) + "\n"


class Keys:
    """Single key presses from a terminal's stdin (cbreak mode while it
    lives); nothing when stdin is no terminal."""

    def __init__(self, stdin):
        self.saved = None
        try:
            if stdin is not None and stdin.isatty():
                import termios
                import tty

                self.fd = stdin.fileno()
                self.saved = termios.tcgetattr(self.fd)
                tty.setcbreak(self.fd)
        except (OSError, ValueError, AttributeError):
            self.saved = None

    def read(self):
        if self.saved is None or not select.select([self.fd], [], [], 0)[0]:
            return None
        return os.read(self.fd, 1).decode(errors="replace")

    def close(self):
        if self.saved is not None:
            import termios

            termios.tcsetattr(self.fd, termios.TCSADRAIN, self.saved)


def once(follower, out, cells=None, children=False):
    """Prints one table after each kernel found has sent its snapshot (its
    figures and last cell; at most RESCAN_SECONDS' wait)."""
    follower.rescan()
    deadline = time.monotonic() + RESCAN_SECONDS
    while (not all(s["greeted"] for s in follower.kernels.values())
           and time.monotonic() < deadline):
        follower.receive(REDRAW_SECONDS)
    out.write(table(follower.kernels, follower.rejected, cells or terminal_width(out),
                    container=container_figures(), where=follower.directories,
                    children=children))
    out.flush()


def run(directories=None, as_json=False, out=sys.stdout, only_once=False, stdin=sys.stdin,
        children=False):
    """Follows the kernels until interrupted (or q is pressed)."""
    follower = Follower(directories)
    if hasattr(out, "reconfigure"):
        # A name (or the ellipsis) a non-UTF-8 terminal cannot show is
        # replaced, never the end of watch.
        out.reconfigure(errors="replace")
    if only_once:
        try:
            once(follower, out, children=children)
        finally:
            follower.close()
        return 0
    keys = Keys(None if as_json else stdin)
    resized = []
    try:
        previous = signal.signal(signal.SIGWINCH, lambda *_: resized.append(True))
    except ValueError:  # not the main thread: the width is read at each redraw anyway
        previous = None
    sort_key, reverse = DEFAULT_SORT, False
    drawn, dirty = 0.0, True
    try:
        while True:
            message = follower.receive(REDRAW_SECONDS)
            if as_json:
                if message is not None:
                    out.write(json.dumps(message) + "\n")
                    out.flush()
                continue
            key = keys.read()
            if key == "q":
                break
            if key in SORT_KEYS:
                reverse = not reverse if key == sort_key else False
                sort_key, dirty = key, True
            if key == CHILDREN_KEY:
                children, dirty = not children, True
            if resized:
                resized.clear()
                dirty, drawn = True, 0.0
            dirty = dirty or message is not None or time.monotonic() - drawn >= 1.0
            if dirty and time.monotonic() - drawn >= REDRAW_SECONDS:
                out.write(CLEAR + table(follower.kernels, follower.rejected, terminal_width(out),
                                        sort_key, reverse, keys.saved is not None,
                                        container_figures(), follower.directories, children))
                out.flush()
                drawn, dirty = time.monotonic(), False
    except KeyboardInterrupt:
        pass
    finally:
        if previous is not None:
            signal.signal(signal.SIGWINCH, previous)
        keys.close()
        follower.close()
    return 0


def add_watch_command(subparsers):
    """`memtamer watch [--json | --once] [--children] [--dir DIR]`."""
    parser = subparsers.add_parser("watch", help="a live table of every kernel's memory")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--json", action="store_true", help="stream the messages, one per line")
    mode.add_argument("--once", action="store_true", help="print one table and exit")
    parser.add_argument("--children", action="store_true",
                        help="under each kernel, what its child processes own (key c toggles)")
    add_directories_argument(parser)
    parser.set_defaults(run=lambda args: run(args.directories, as_json=args.json,
                                             only_once=args.once, children=args.children))
