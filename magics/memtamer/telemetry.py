"""The kernel's telemetry publisher (C, in _core) and its discovery files.

Each kernel with memtamer loaded publishes on a ZeroMQ socket of its own and
advertises it in ``memtamer-<kernel id>.json`` next to its connection file.
``memtamer watch`` and ``memtamer export`` find kernels through these files.

Settings (environment of the kernel):
  MEMTAMER_TELEMETRY=0            no publisher
  MEMTAMER_TELEMETRY_ENDPOINT     ``tcp`` (loopback, a free port), ``tcp://host:port``
                                  or ``ipc://path``; default: an ipc socket in a
                                  private directory of the Jupyter runtime directory
  MEMTAMER_TELEMETRY_NAMES=0      no variable names, values or code in any message
  MEMTAMER_TELEMETRY_CURVE_SECRET_KEY
                                  a CurveZMQ secret key (Z85, the second key of
                                  ``zmq.curve_keypair()``): messages are encrypted, and
                                  only subscribers given the server's public key (in the
                                  discovery file) can connect.  A tcp endpoint needs it,
                                  or names off: any local user can reach a tcp port.

Everything read back (discovery files, messages) is checked against the
protocol _core states (``telemetry_protocol()``); what does not fit is
skipped and counted, never trusted.
"""

import atexit
import glob
import json
import math
import os
import socket
import stat
import sys
import tempfile
import time

from . import _core

DISCOVERY_PREFIX = "memtamer-"
PROTOCOL = _core.telemetry_protocol()
# A kernel's figures are stale when three of its idle samples are missing.
STALE_SECONDS = 3 * PROTOCOL["idle_ms"] / 1000
# What a discovery file holds, typed as the protocol's fields are.
DISCOVERY_FIELDS = {"endpoint": "string", "pid": "int", "start_ticks": "int?",
                    "kernel": "string", "cwd": "string?", "notebook": "string?",
                    "names": "bool?", "curve_public_key": "string?"}
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
        curve_key = environ.get("MEMTAMER_TELEMETRY_CURVE_SECRET_KEY") or None
        try:
            bound = _core.telemetry_start(endpoint, kernel, names, curve_key)
            os.makedirs(directory, mode=0o700, exist_ok=True)
            remove_stale(directory)
            self.path = os.path.join(directory, f"{DISCOVERY_PREFIX}{kernel}.json")
            _write_private(self.path, {
                "endpoint": bound, "pid": self.pid, "start_ticks": start_ticks(self.pid),
                "kernel": kernel, "cwd": os.getcwd(),
                "notebook": environ.get("JPY_SESSION_NAME"), "names": names,
                "curve_public_key": _core.telemetry_status()["curve_public_key"],
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


class Rejected(ValueError):
    """A discovery record or message that does not fit the protocol."""


def printable(text):
    """text with every control, format or separator character (a terminal's
    escape sequences, newlines, bidirectional overrides) written out as a
    Python escape, safe for a terminal or a label."""
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in str(text))


def _fits(value, kind):
    """Whether value is of the protocol's type kind ("int", "record?", ...)."""
    if kind.endswith("?"):
        if value is None:
            return True
        kind = kind[:-1]
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return (isinstance(value, (int, float)) and not isinstance(value, bool)
                and math.isfinite(value))
    if kind in PROTOCOL["objects"]:
        return isinstance(value, dict) and _check_fields(value, PROTOCOL["objects"][kind]) is None
    return isinstance(value, {"string": str, "bool": bool, "object": dict, "array": list}[kind])


def _check_fields(obj, fields):
    """None when every field of obj has its type (one that admits null may
    be absent), else what is wrong."""
    for name, kind in fields.items():
        if name not in obj and not kind.endswith("?"):
            return f"no {name}"
        if not _fits(obj.get(name), kind):
            return f"{name} is not {kind}"
    return None


def check_record(record):
    """record (a discovery file's JSON) when it fits, else Rejected."""
    if not isinstance(record, dict):
        raise Rejected("not an object")
    wrong = _check_fields(record, DISCOVERY_FIELDS)
    if wrong is None and not record["endpoint"].startswith(PROTOCOL["schemes"]):
        wrong = "endpoint of an unknown scheme"
    if wrong is None and record["pid"] <= 0:
        wrong = "pid not positive"
    if wrong is not None:
        raise Rejected(wrong)
    return record


def parse_message(frames):
    """The message (a dict) carried by frames as received, else Rejected:
    two frames, a topic naming the kind of the JSON object that follows,
    and the fields the protocol gives that kind."""
    if len(frames) != 2:
        raise Rejected(f"{len(frames)} frames")
    topic, body = frames
    try:
        message = json.loads(body)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise Rejected("not JSON") from exc
    if not isinstance(message, dict):
        raise Rejected("not an object")
    kind = message.get("kind")
    fields = PROTOCOL["kinds"].get(kind) if isinstance(kind, str) else None
    if fields is None:
        raise Rejected("unknown kind")
    if topic != f"memtamer.{kind}".encode():
        raise Rejected("topic and kind differ")
    wrong = _check_fields(message, fields)
    if wrong is not None:
        raise Rejected(wrong)
    return message


def _read_record(path):
    """The discovery record in path; OSError when it cannot be read (gone,
    or a FIFO: opened without waiting), Rejected when it does not fit."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise Rejected("not a regular file")
        text = f.read(DISCOVERY_MAX_BYTES + 1)
    if len(text) > DISCOVERY_MAX_BYTES:
        raise Rejected("too large")
    try:
        return check_record(json.loads(text))
    except (ValueError, RecursionError) as exc:
        raise Rejected(str(exc)) from exc


# A discovery file is a few hundred bytes; more is no file of ours.
DISCOVERY_MAX_BYTES = 64 * 1024


def _records(directory, rejected=None):
    """(path, record) of every readable discovery file in directory that
    fits; rejected(path) is called for each one that does not."""
    for path in sorted(glob.glob(os.path.join(directory, f"{DISCOVERY_PREFIX}*.json"))):
        try:
            record = _read_record(path)
        except OSError:
            continue
        except Rejected:
            if rejected is not None:
                rejected(path)
            continue
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


def discover(directories=None, rejected=None):
    """{path: record} of the live kernels' discovery files in directories
    (default: Jupyter's runtime directory); stale and unreadable ones are
    skipped, and so are those that do not fit (rejected(path) is called for
    each)."""
    found = {}
    for directory in directories or [runtime_dir()]:
        for path, record in _records(directory, rejected):
            if is_alive(record):
                found[path] = record
    return found


# How often followers look for kernels that started or stopped.
RESCAN_SECONDS = 1.0


class Follower:
    """Subscribes to every kernel found through the discovery files and keeps
    the latest state of each: ``kernels`` maps kernel id to a dict of the last
    sample's figures, the running cell, the last cell's record, the trips,
    ``lost`` (messages missed, from the gaps in sequence numbers) and
    ``received`` (time.monotonic() of its last message).  ``rejected`` counts
    the discovery files and messages that did not fit the protocol, skipped.
    Used by ``memtamer watch`` and ``memtamer export``."""

    def __init__(self, directories=None, context=None):
        import zmq

        self.zmq = zmq
        self.directories = directories
        self.context = context or zmq.Context.instance()
        self.socket = self._subscriber()  # for the kernels that send in the clear
        self.encrypted = {}  # discovery path -> a socket of its own (CurveZMQ)
        self.poller = zmq.Poller()
        self.poller.register(self.socket, zmq.POLLIN)
        self.connected = {}  # discovery path -> record
        self.kernels = {}
        self.rejected = 0
        self.rejected_files = set()  # (path, mtime, size): each bad version counted once
        self.rescanned = 0.0

    def _subscriber(self):
        sub = self.context.socket(self.zmq.SUB)
        sub.setsockopt(self.zmq.LINGER, 0)
        sub.subscribe(b"memtamer.")
        return sub

    def _reject_file(self, path):
        try:
            st = os.stat(path)
        except OSError:
            return
        version = (path, st.st_mtime_ns, st.st_size)
        if version not in self.rejected_files:
            self.rejected_files.add(version)
            self.rejected += 1

    def rescan(self):
        """Connects to new kernels, forgets those whose file went or went stale."""
        found = discover(self.directories, self._reject_file)
        for path, record in list(self.connected.items()):
            if found.get(path) != record:
                self._forget(path, record)
        for path, record in found.items():
            if path not in self.connected:
                try:
                    self._connect(path, record)
                except self.zmq.ZMQError:
                    self._reject_file(path)  # an endpoint libzmq cannot parse
                    continue
                self.connected[path] = record
                self.kernels[record["kernel"]] = {
                    "kernel": record["kernel"], "pid": record["pid"],
                    "notebook": record.get("notebook"), "cwd": record.get("cwd"),
                    "endpoint": record["endpoint"], "seq": None, "lost": 0,
                    "running": None, "last_cell": None, "received": None,
                }
        self.rescanned = time.monotonic()

    def _connect(self, path, record):
        server_key = record.get("curve_public_key")
        if server_key is None:
            self.socket.connect(record["endpoint"])
            return
        sub = self._subscriber()
        try:
            sub.curve_publickey, sub.curve_secretkey = self.zmq.curve_keypair()
            sub.curve_serverkey = server_key.encode()
            sub.connect(record["endpoint"])
        except (self.zmq.ZMQError, UnicodeEncodeError) as exc:
            sub.close(linger=0)
            raise self.zmq.ZMQError(self.zmq.EINVAL) from exc
        self.encrypted[path] = sub
        self.poller.register(sub, self.zmq.POLLIN)

    def _forget(self, path, record):
        del self.connected[path]
        self.kernels.pop(record["kernel"], None)
        sub = self.encrypted.pop(path, None)
        if sub is not None:
            self.poller.unregister(sub)
            sub.close(linger=0)
            return
        try:
            self.socket.disconnect(record["endpoint"])
        except self.zmq.ZMQError:
            pass  # already gone

    def receive(self, timeout):
        """The next message as a dict (after updating kernels), or None when
        none came within timeout seconds or what came did not fit (counted
        in rejected).  Rescans when it is time."""
        if time.monotonic() - self.rescanned >= RESCAN_SECONDS:
            self.rescan()
        ready = self.poller.poll(int(timeout * 1000))
        if not ready:
            return None
        try:
            message = parse_message(ready[0][0].recv_multipart(self.zmq.NOBLOCK))
        except self.zmq.Again:
            return None
        except Rejected:
            self.rejected += 1
            return None
        self._update(message)
        return message

    def _update(self, message):
        state = self.kernels.get(message["kernel"])
        if state is None or state["pid"] != message["pid"]:
            return  # a kernel not (or no longer) in the discovery files
        state["received"] = time.monotonic()
        seq = message["seq"]
        if state["seq"] is not None and seq > state["seq"] + 1:
            state["lost"] += seq - state["seq"] - 1
        state["seq"] = max(seq, state["seq"] or 0)
        kind = message["kind"]
        if kind in ("sample", "snapshot"):
            state.update({key: message.get(key) for key in SAMPLE_FIELDS})
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
        for sub in self.encrypted.values():
            sub.close(linger=0)
        self.socket.close(linger=0)


def is_stale(state, now=None):
    """Whether a kernel's figures are old news: nothing came from it for
    STALE_SECONDS (or ever)."""
    received = state.get("received")
    return received is None or (now or time.monotonic()) - received > STALE_SECONDS


# A sample's own fields: those of its kind less the ones every message has
# (all a bye carries).
SAMPLE_FIELDS = tuple(name for name in PROTOCOL["kinds"]["sample"]
                      if name not in PROTOCOL["kinds"]["bye"])


def add_directories_argument(parser):
    """The --dir option watch and export share."""
    parser.add_argument("--dir", action="append", dest="directories", metavar="DIR",
                        help="where to look for discovery files (repeatable; default: "
                             "Jupyter's runtime directory)")
