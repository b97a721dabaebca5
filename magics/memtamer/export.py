"""``memtamer export --port N``: every kernel's memory in the Prometheus text
exposition format, over HTTP at /metrics, labelled by kernel id and notebook."""

import argparse
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .telemetry import (PROTOCOL, Follower, add_directories_argument, display_name, is_stale,
                        printable)

# Upper bounds (bytes) of the cell peak histogram's buckets.
PEAK_BUCKETS = tuple(2**20 * n for n in (1, 16, 64, 256, 1024, 4096, 16384))
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# What a kernel's state (Follower.kernels) holds besides the messages'
# fields: the follower's own counts.
FOLLOWER_FIGURES = ("lost", "memory_deaths")


class Figure:
    """A figure of a kernel's state at path: a field of the protocol's
    snapshot (a sample's fields and last_cell), then a field of the object it
    names (running, record), or one of FOLLOWER_FIGURES.  Checked against
    the protocol _core states when defined: export names no field the
    kernels do not send.  how turns the value into the metric's (default:
    as it is); None is absent."""

    def __init__(self, *path, how=None):
        fields = PROTOCOL["kinds"]["snapshot"]
        for depth, name in enumerate(path):
            if depth == 0 and name in FOLLOWER_FIGURES and len(path) == 1:
                break
            kind = fields.get(name) if isinstance(fields, dict) else None
            if kind is None:
                raise ValueError(f"export reads {'.'.join(path)}: no such field in the "
                                 "telemetry protocol")
            fields = PROTOCOL["objects"].get(kind.rstrip("?"))
        self.path, self.how = path, how

    def __call__(self, state):
        value = state.get(self.path[0])
        for name in self.path[1:]:
            value = (value or {}).get(name)
        return self.how(value) if self.how else value


# name, help, the figure (None: absent).
GAUGES = (
    ("memtamer_rss_bytes", "Resident set size of the kernel process.", Figure("rss")),
    ("memtamer_limit_bytes", "Effective memory limit: the smallest of the cgroup limit and MemTotal.",
     Figure("limit")),
    ("memtamer_headroom_bytes", "Memory the kernel can still use before its limit.",
     Figure("headroom")),
    ("memtamer_budget_bytes", "The memory budget of the kernel's cells (absent when off).",
     Figure("budget")),
    ("memtamer_heap_counted_bytes", "Net bytes of Python's allocators since memtamer was loaded.",
     Figure("heap_bytes")),
    ("memtamer_numpy_counted_bytes", "Net bytes of numpy buffers counted since memtamer was loaded.",
     Figure("numpy_bytes")),
    ("memtamer_children_private_bytes",
     "Private memory of the kernel's child processes (the pages they share with the kernel are "
     "its own).", Figure("children_private")),
    ("memtamer_children", "Live descendants of the kernel (pools, workers, servers).",
     Figure("children")),
    ("memtamer_biggest_child_private_bytes", "Private memory of the descendant that owns most "
     "(absent without children).", Figure("biggest_child_private")),
    ("memtamer_biggest_child_pid", "The pid of the descendant that owns most memory (absent "
     "without children).", Figure("biggest_child_pid")),
    ("memtamer_swap_bytes", "The kernel's memory in swap (VmSwap).", Figure("swap")),
    ("memtamer_cell_running", "1 while a cell runs, else 0.",
     Figure("running", how=lambda running: 1 if running else 0)),
    ("memtamer_cell_running_seconds", "How long the running cell has run.",
     Figure("running", "seconds")),
    ("memtamer_cell_running_peak_bytes", "The running cell's peak RSS so far.",
     Figure("running", "peak_rss")),
    ("memtamer_last_cell_peak_increment_bytes", "What the last cell's peak added to RSS.",
     Figure("last_cell", "peak_increment")),
    ("memtamer_last_cell_retained_bytes", "RSS the last cell left behind (negative: freed).",
     Figure("last_cell", "retained")),
)
COUNTERS = (
    ("memtamer_cells_total", "Cells measured since memtamer was loaded.", Figure("cells")),
    ("memtamer_budget_trips_total", "Cells stopped by the memory budget.", Figure("trips")),
    ("memtamer_major_faults_total", "Pages the kernel waited for from swap or disk (major "
     "faults); a steep rate while it swaps is thrashing.", Figure("major_faults")),
    ("memtamer_telemetry_messages_lost_total", "Messages this exporter missed (sequence gaps).",
     Figure("lost")),
    ("memtamer_memory_deaths_total", "Earlier kernels of this notebook that memory ended (the OOM "
     "killer, or close to the limit or budget), as this kernel's post-mortem reported them.",
     Figure("memory_deaths")),
)


# After an error, the follower starts again this much later.
RESTART_SECONDS = 1.0


def _label(value):
    """A label value: control characters written out (printable), then
    Prometheus' own escapes."""
    text = "" if value is None else printable(value)
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _number(value):
    return repr(float(value)) if isinstance(value, float) else str(int(value))


class Exporter:
    """Follows the kernels in a thread and renders /metrics from their state."""

    def __init__(self, directories=None, err=sys.stderr):
        self.err = err
        self.follower = Follower(directories)
        self.lock = threading.Lock()
        self.histograms = {}  # kernel id -> [bucket counts..., count, sum]
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._follow, name="memtamer-export", daemon=True)

    def _follow(self):
        while not self.stopping.is_set():
            try:
                self._follow_one()
            except Exception as exc:  # noqa: BLE001 - the exporter outlives any one failure
                # Meanwhile no figure is refreshed: the kernels go stale, not
                # served as live.
                self.err.write(f"memtamer export: following the kernels failed ({exc!r}); "
                               f"starting again in {RESTART_SECONDS:g} s\n")
                self.err.flush()
                self.stopping.wait(RESTART_SECONDS)

    def _follow_one(self):
        with self.lock:
            message = self.follower.receive(0)
        if message is None:
            self.stopping.wait(0.05)
        elif message["kind"] == "cell":
            self._observe(message["kernel"], message["record"].get("peak_increment"))

    def _observe(self, kernel, peak):
        if peak is None:
            return
        with self.lock:
            counts = self.histograms.setdefault(kernel, [0] * (len(PEAK_BUCKETS) + 2))
            for i, bound in enumerate(PEAK_BUCKETS):
                if peak <= bound:
                    counts[i] += 1
            counts[-2] += 1
            counts[-1] += peak

    def metrics(self):
        """The exposition text for every kernel followed now."""
        now = time.monotonic()
        with self.lock:
            kernels = {k: dict(s) for k, s in self.follower.kernels.items()}
            histograms = {k: list(v) for k, v in self.histograms.items() if k in kernels}
            rejected = self.follower.rejected
        out = ["# HELP memtamer_kernels Live kernels: those whose discovery file names a running "
               "process.",
               "# TYPE memtamer_kernels gauge", f"memtamer_kernels {len(kernels)}",
               "# HELP memtamer_telemetry_rejected_total Malformed discovery files and messages "
               "this exporter skipped.",
               "# TYPE memtamer_telemetry_rejected_total counter",
               f"memtamer_telemetry_rejected_total {rejected}",
               "# HELP memtamer_kernel_info The kernel's process and notebook.",
               "# TYPE memtamer_kernel_info gauge"]
        labels = {k: f'kernel="{_label(k)}",notebook="{_label(display_name(s))}"'
                  for k, s in kernels.items()}
        for kernel, state in sorted(kernels.items()):
            out.append(f'memtamer_kernel_info{{{labels[kernel]},pid="{state["pid"]}"}} 1')
        out += ["# HELP memtamer_kernel_stale 1 when nothing came from the kernel lately: its "
                "figures are then left out, not served as live.",
                "# TYPE memtamer_kernel_stale gauge"]
        out += [f"memtamer_kernel_stale{{{labels[k]}}} {int(is_stale(s, now))}"
                for k, s in sorted(kernels.items())]
        live = {k: s for k, s in kernels.items() if not is_stale(s, now)}
        for kind, table in (("gauge", GAUGES), ("counter", COUNTERS)):
            for name, text, read in table:
                out += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
                for kernel, state in sorted(live.items()):
                    value = read(state)
                    if value is not None:
                        out.append(f"{name}{{{labels[kernel]}}} {_number(value)}")
        family = "memtamer_cell_peak_increment_bytes"
        out += [f"# HELP {family} What each cell's peak added to RSS, cells seen by this exporter.",
                f"# TYPE {family} histogram"]
        for kernel, counts in sorted(histograms.items()):
            for bound, count in zip(PEAK_BUCKETS, counts):
                out.append(f'{family}_bucket{{{labels[kernel]},le="{float(bound)!r}"}} {count}')
            out.append(f'{family}_bucket{{{labels[kernel]},le="+Inf"}} {counts[-2]}')
            out.append(f"{family}_count{{{labels[kernel]}}} {counts[-2]}")
            out.append(f"{family}_sum{{{labels[kernel]}}} {counts[-1]}")
        return "\n".join(out) + "\n"

    def start(self):
        self.thread.start()

    def close(self):
        self.stopping.set()
        self.thread.join()
        self.follower.close()


def serve(port, address="127.0.0.1", directories=None, out=sys.stdout, err=sys.stderr):
    """Serves /metrics until interrupted; returns the exit status (2: the
    port could not be had)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path.split("?")[0] != "/metrics":
                self.send_error(404, "memtamer export serves /metrics only")
                return
            body = exporter.metrics().encode()
            self.send_response(200)
            self.send_header("Content-Type", CONTENT_TYPE)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format, *args):  # noqa: A002 - the base class's name
            pass  # a scrape every few seconds would flood the terminal

    exporter = Exporter(directories, err)  # first: a bad --dir says so before the port
    try:
        server = ThreadingHTTPServer((address, port), Handler)
    except OSError as exc:
        exporter.follower.close()
        err.write(f"memtamer export: cannot listen on {address} port {port} "
                  f"({exc.strerror or exc}); choose another with --port, or --port 0 for "
                  "any free one\n")
        return 2
    exporter.start()
    host, bound = server.server_address[:2]
    out.write(f"memtamer export: serving http://{host}:{bound}/metrics\n")
    out.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        exporter.close()
    return 0


def _port(text):
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is no TCP port: give 0 to 65535")
    return port


def add_export_command(subparsers):
    """`memtamer export --port N [--address A] [--dir DIR]`."""
    parser = subparsers.add_parser("export", help="Prometheus metrics of every kernel over HTTP")
    parser.add_argument("--port", type=_port, required=True, help="TCP port (0: any free one)")
    parser.add_argument("--address", default="127.0.0.1",
                        help="address to listen on (default: loopback only)")
    add_directories_argument(parser)
    parser.set_defaults(run=lambda args: serve(args.port, args.address, args.directories))
