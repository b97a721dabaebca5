"""The kernel's telemetry publisher (C, in _core) and its discovery files.

Each kernel with memtamer loaded publishes on a ZeroMQ socket of its own and
advertises it in ``memtamer-<kernel id>.json`` next to its connection file.
``memtamer watch`` and ``memtamer export`` find kernels through these files.

Settings (environment of the kernel):
  MEMTAMER_TELEMETRY=0            no publisher
  MEMTAMER_TELEMETRY_ENDPOINT     ``tcp`` (loopback, a free port), ``tcp://host:port``
                                  or ``ipc://path``; default: an ipc socket in a
                                  private directory of the Jupyter runtime directory
  MEMTAMER_TELEMETRY_NAMES=0      no variable names and no code (cells' first lines)
"""

import atexit
import glob
import json
import os
import socket
import sys
import tempfile
import time

from . import _core

DISCOVERY_PREFIX = "memtamer-"
OFF = ("0", "off", "no", "false")
# sockaddr_un's sun_path holds 108 bytes with the NUL.
IPC_PATH_MAX = 107


def runtime_dir():
    """Jupyter's runtime directory (where connection files live)."""
    try:
        from jupyter_core.paths import jupyter_runtime_dir

        return jupyter_runtime_dir()
    except ImportError:
        return os.path.join(tempfile.gettempdir(), f"memtamer-{os.getuid()}")


def _connection_file():
    """This kernel's connection file, or None outside a Jupyter kernel."""
    try:
        from ipykernel.kernelapp import IPKernelApp
    except ImportError:
        return None
    from traitlets.config import Application

    # IPKernelApp.instance() raises where another application (a terminal
    # IPython's) is the singleton.
    app = Application.instance() if Application.initialized() else None
    return getattr(app, "abs_connection_file", None) if isinstance(app, IPKernelApp) else None


def kernel_identity():
    """(kernel id, directory of the discovery file): the id from the
    connection file's name ``kernel-<id>.json``, else ``pid-<pid>``."""
    connection = _connection_file()
    if connection:
        name = os.path.basename(connection)
        if name.startswith("kernel-") and name.endswith(".json"):
            name = name[len("kernel-"):-len(".json")]
        else:
            name = os.path.splitext(name)[0]
        return name, os.path.dirname(os.path.abspath(connection))
    return f"pid-{os.getpid()}", runtime_dir()


def default_endpoint(directory):
    """An ipc socket in a private subdirectory; a shorter place when the
    path would not fit a Unix socket address."""
    path = os.path.join(directory, "memtamer", f"{os.getpid()}.sock")
    if len(path.encode()) > IPC_PATH_MAX:
        path = os.path.join(tempfile.gettempdir(), f"memtamer-{os.getuid()}", f"{os.getpid()}.sock")
    return "ipc://" + path


def configured_endpoint(value, directory):
    if not value:
        return default_endpoint(directory)
    if value == "tcp":
        return "tcp://127.0.0.1:*"
    return value


def start_ticks(pid):
    """The process's start time in clock ticks since boot (tells a reused pid
    from the kernel that wrote a discovery file), None when it is gone or a
    zombie (dead, not yet reaped by its parent)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()
    return None if fields[0] in ("Z", "X") else int(fields[19])


def _write_private(path, data):
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=1)
    os.replace(tmp, path)


class Publisher:
    """Starts the C publisher and writes the discovery file; stop() undoes both."""

    def __init__(self):
        self.path = None
        self.pid = os.getpid()

    def start(self, environ=os.environ):
        if environ.get("MEMTAMER_TELEMETRY", "").lower() in OFF:
            return
        kernel, directory = kernel_identity()
        endpoint = configured_endpoint(environ.get("MEMTAMER_TELEMETRY_ENDPOINT"), directory)
        names = environ.get("MEMTAMER_TELEMETRY_NAMES", "").lower() not in OFF
        try:
            bound = _core.telemetry_start(endpoint, kernel, names)
            os.makedirs(directory, mode=0o700, exist_ok=True)
            remove_stale(directory)
            self.path = os.path.join(directory, f"{DISCOVERY_PREFIX}{kernel}.json")
            _write_private(self.path, {
                "endpoint": bound, "pid": self.pid, "start_ticks": start_ticks(self.pid),
                "kernel": kernel, "cwd": os.getcwd(),
                "notebook": environ.get("JPY_SESSION_NAME"), "names": names,
            })
        except (OSError, ValueError) as exc:
            _core.telemetry_stop()
            self.path = None
            print(f"memtamer: no telemetry for this kernel ({exc}); "
                  "set MEMTAMER_TELEMETRY_ENDPOINT or MEMTAMER_TELEMETRY=0", file=sys.stderr)
            return
        atexit.register(self.stop)

    def stop(self):
        # A forked child (which never runs atexit after os._exit, but may
        # after sys.exit) leaves its parent's socket and file alone.
        if os.getpid() != self.pid:
            return
        atexit.unregister(self.stop)
        # The file first: no watcher finds the socket once it is closing.
        if self.path:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
            self.path = None
        _core.telemetry_stop()


def publish(kind, data):
    """Sends an event to the watchers; never raises (a callback's helper)."""
    try:
        _core.telemetry_event(kind, data)
    except Exception:  # noqa: BLE001 - telemetry must never break a cell
        pass


def is_alive(record):
    """Whether the kernel that wrote this discovery record still runs."""
    ticks = start_ticks(record.get("pid", -1))
    return ticks is not None and ticks == record.get("start_ticks")


def _records(directory):
    """(path, record) of every readable discovery file in directory."""
    for path in sorted(glob.glob(os.path.join(directory, f"{DISCOVERY_PREFIX}*.json"))):
        try:
            with open(path) as f:
                record = json.load(f)
        except (OSError, ValueError):
            continue
        if isinstance(record, dict) and "endpoint" in record:
            yield path, record


def remove_stale(directory):
    """Removes the discovery files of dead kernels in directory, and the
    sockets nothing listens on in its private subdirectory (a kernel killed
    by the OOM killer cannot clean up after itself)."""
    for path, record in _records(directory):
        if not is_alive(record):
            _unlink(path)
    for path in glob.glob(os.path.join(directory, "memtamer", "*.sock")):
        probe = socket.socket(socket.AF_UNIX)
        try:
            probe.connect(path)
        except ConnectionRefusedError:
            _unlink(path)
        except OSError:
            pass  # not a socket of ours, or not ours to judge
        finally:
            probe.close()


def _unlink(path):
    try:
        os.unlink(path)
    except OSError:
        pass  # gone already, or not ours


def discover(directories=None):
    """{path: record} of the live kernels' discovery files in directories
    (default: Jupyter's runtime directory); stale and unreadable ones are
    skipped."""
    found = {}
    for directory in directories or [runtime_dir()]:
        for path, record in _records(directory):
            if is_alive(record):
                found[path] = record
    return found


# How often followers look for kernels that started or stopped.
RESCAN_SECONDS = 1.0


class Follower:
    """Subscribes to every kernel found through the discovery files and keeps
    the latest state of each: ``kernels`` maps kernel id to a dict of the last
    sample's figures, the running cell, the last cell's record, the trips and
    ``lost`` (messages missed, from the gaps in sequence numbers).  Used by
    ``memtamer watch`` and ``memtamer export``."""

    def __init__(self, directories=None, context=None):
        import zmq

        self.zmq = zmq
        self.directories = directories
        self.socket = (context or zmq.Context.instance()).socket(zmq.SUB)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.subscribe(b"memtamer.")
        self.connected = {}  # discovery path -> record
        self.kernels = {}
        self.rescanned = 0.0

    def rescan(self):
        """Connects to new kernels, forgets those whose file went or went stale."""
        found = discover(self.directories)
        for path, record in list(self.connected.items()):
            if found.get(path, {}).get("endpoint") != record["endpoint"]:
                self._forget(path, record)
        for path, record in found.items():
            if path not in self.connected:
                self.connected[path] = record
                self.kernels[record["kernel"]] = {
                    "kernel": record["kernel"], "pid": record["pid"],
                    "notebook": record.get("notebook"), "cwd": record.get("cwd"),
                    "endpoint": record["endpoint"], "seq": None, "lost": 0,
                    "running": None, "last_cell": None,
                }
                self.socket.connect(record["endpoint"])
        self.rescanned = time.monotonic()

    def _forget(self, path, record):
        del self.connected[path]
        self.kernels.pop(record["kernel"], None)
        try:
            self.socket.disconnect(record["endpoint"])
        except self.zmq.ZMQError:
            pass  # already gone

    def receive(self, timeout):
        """The next message as a dict (after updating kernels), or None when
        none came within timeout seconds.  Rescans when it is time."""
        if time.monotonic() - self.rescanned >= RESCAN_SECONDS:
            self.rescan()
        if not self.socket.poll(int(timeout * 1000)):
            return None
        _topic, body = self.socket.recv_multipart()
        message = json.loads(body)
        self._update(message)
        return message

    def _update(self, message):
        state = self.kernels.get(message.get("kernel"))
        if state is None or state["pid"] != message.get("pid"):
            return  # a kernel not (or no longer) in the discovery files
        seq = message["seq"]
        if state["seq"] is not None and seq > state["seq"] + 1:
            state["lost"] += seq - state["seq"] - 1
        state["seq"] = max(seq, state["seq"] or 0)
        kind = message["kind"]
        if kind in ("sample", "snapshot"):
            state.update({key: message[key] for key in SAMPLE_FIELDS if key in message})
            state["updated"] = message["time"]
        if kind == "snapshot" and message.get("last_cell"):
            state["last_cell"] = message["last_cell"]
        elif kind == "cell":
            state["last_cell"] = message["record"]
            state["cells"], state["trips"] = message["cells"], message["trips"]
            state["running"] = None
        elif kind == "bye":
            for path, record in list(self.connected.items()):
                if record["kernel"] == message["kernel"]:
                    self._forget(path, record)

    def close(self):
        self.socket.close(linger=0)


SAMPLE_FIELDS = ("rss", "limit", "headroom", "budget", "heap_bytes", "numpy_bytes",
                 "children_private", "cells", "trips", "running")


def add_directories_argument(parser):
    """The --dir option watch and export share."""
    parser.add_argument("--dir", action="append", dest="directories", metavar="DIR",
                        help="where to look for discovery files (repeatable; default: "
                             "Jupyter's runtime directory)")
