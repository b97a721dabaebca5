"""The kernel's telemetry publisher (C, in _core) and its discovery files.

Each kernel with memtamer loaded publishes on a ZeroMQ socket of its own and
advertises it in ``memtamer-<kernel id>.json`` in one per-user place, Jupyter's
runtime directory, wherever its connection file is (a server's runtime
directory, or the temp directory of nbclient, papermill or a KernelManager).
``memtamer watch`` and ``memtamer export`` find kernels through these files;
whoever first sees a kernel dead (they, or the next kernel) removes its file
and socket.

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
import uuid

from . import _core

DISCOVERY_PREFIX = "memtamer-"
PROTOCOL = _core.telemetry_protocol()
# A kernel's figures are stale when three of its idle samples are missing.
STALE_SECONDS = 3 * PROTOCOL["idle_ms"] / 1000
# What a discovery file holds, typed as the protocol's fields are.
DISCOVERY_FIELDS = {"endpoint": "string", "pid": "int", "start_ticks": "int?",
                    "kernel": "string", "cwd": "string?", "notebook": "string?",
                    "launcher": "string?", "pid_namespace": "string?", "names": "bool?",
                    "curve_public_key": "string?"}
OFF = ("0", "off", "no", "false")
# sockaddr_un's sun_path holds 108 bytes with the NUL.
IPC_PATH_MAX = 107


def runtime_dir(import_jupyter=False):
    """The per-user place kernels advertise themselves in: Jupyter's runtime
    directory ($JUPYTER_RUNTIME_DIR honoured), else fallback_runtime_dir().
    jupyter_core is asked only when it is already imported (a kernel has
    it) or import_jupyter says it may be: a terminal IPython does not pay
    for importing it, and the readers (watch, export) look in both places."""
    explicit = os.environ.get("JUPYTER_RUNTIME_DIR")
    if explicit:
        return explicit
    paths = sys.modules.get("jupyter_core.paths")
    if paths is None and import_jupyter:
        try:
            import jupyter_core.paths as paths
        except ImportError:
            pass
    return paths.jupyter_runtime_dir() if paths is not None else fallback_runtime_dir()


def fallback_runtime_dir():
    """The runtime directory where Jupyter's is not known: a folder of the
    XDG runtime directory (or of the temp directory)."""
    base = os.environ.get("XDG_RUNTIME_DIR")
    return (os.path.join(base, "memtamer") if base
            else os.path.join(tempfile.gettempdir(), f"memtamer-{os.getuid()}"))


def _connection_file():
    """This kernel's connection file, or None outside a Jupyter kernel.  Only
    looks: ipykernel is imported where a kernel runs, never imported here."""
    kernelapp = sys.modules.get("ipykernel.kernelapp")
    traitlets = sys.modules.get("traitlets.config")
    if kernelapp is None or traitlets is None:
        return None
    application = traitlets.Application
    # IPKernelApp.instance() raises where another application (a terminal
    # IPython's) is the singleton.
    app = application.instance() if application.initialized() else None
    if not isinstance(app, kernelapp.IPKernelApp):
        return None
    return getattr(app, "abs_connection_file", None)


def kernel_id():
    """The id from the connection file's name ``kernel-<id>.json`` (a Jupyter
    server's kernels); a fresh uuid for a kernel whose connection file has any
    other name (a temp file's: nbclient, papermill, a KernelManager), ``pid-<pid>``
    outside a kernel."""
    connection = _connection_file()
    if not connection:
        return f"pid-{os.getpid()}"
    name = os.path.basename(connection)
    if name.startswith("kernel-") and name.endswith(".json") and len(name) > len("kernel-.json"):
        return name[len("kernel-"):-len(".json")]
    return str(uuid.uuid4())


def _proc_text(pid, name):
    try:
        with open(f"/proc/{pid}/{name}", "rb") as f:
            return f.read()
    except OSError:
        return None


# The launchers whose argv names the notebook their kernel runs; a server's
# argv (``jupyter lab a.ipynb``) names a notebook it opened, not its kernels'.
SERVER_COMMANDS = ("lab", "notebook", "server", "jupyter-lab", "jupyter-notebook",
                   "jupyter-server")


def launcher_notebook(pid):
    """The notebook in the command line of process pid (the kernel's parent:
    ``papermill in.ipynb out.ipynb``, ``jupyter nbconvert --execute a.ipynb``)
    as an absolute path, else None (also for a Jupyter server)."""
    cmdline = _proc_text(pid, "cmdline")
    if not cmdline:
        return None
    argv = [arg.decode(errors="replace") for arg in cmdline.split(b"\0") if arg]
    if any(os.path.basename(arg) in SERVER_COMMANDS for arg in argv[:3]):
        return None
    notebook = next((arg for arg in argv[1:] if arg.endswith(".ipynb")), None)
    if notebook is None:
        return None
    try:
        return os.path.join(os.readlink(f"/proc/{pid}/cwd"), notebook)
    except OSError:
        return None if not os.path.isabs(notebook) else notebook


def launcher_name(pid):
    """What started process pid, in a word: its script or command (``pytest``,
    ``run_notebooks.py``), not the interpreter; None when unknown."""
    cmdline = _proc_text(pid, "cmdline")
    if not cmdline:
        return None
    argv = [arg.decode(errors="replace") for arg in cmdline.split(b"\0") if arg]
    for i, arg in enumerate(argv):
        name = os.path.basename(arg)
        if name.startswith("python"):
            continue
        if arg == "-m" and i + 1 < len(argv):
            return argv[i + 1]
        if arg == "-c":
            return "python -c"
        if not arg.startswith("-"):
            return name
    return None


def notebook_of_kernel(environ):
    """(notebook, launcher) for the discovery file: the server's
    JPY_SESSION_NAME, else the notebook the launcher's argv names, else None
    with the launcher's name."""
    session = environ.get("JPY_SESSION_NAME")
    if session:
        return session, None
    parent = os.getppid()
    return launcher_notebook(parent), launcher_name(parent)


def display_name(state):
    """What names a kernel for people and labels: the notebook's path as the
    server gave it when relative (to its root), else its file name; without a
    notebook, the working directory's name and the launcher (``work/ (pytest)``)."""
    notebook = state.get("notebook")
    if notebook:
        return os.path.basename(notebook) if os.path.isabs(notebook) else notebook
    cwd = state.get("cwd")
    where = os.path.basename(cwd.rstrip("/")) + "/" if cwd else "-"
    launcher = state.get("launcher")
    return f"{where} ({launcher})" if launcher else where


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
        kernel, directory = kernel_id(), runtime_dir()
        try:
            os.makedirs(directory, mode=0o700, exist_ok=True)
            if not os.access(directory, os.W_OK | os.X_OK):
                raise PermissionError(13, "not writable", directory)
        except OSError as exc:
            print(f"memtamer: no telemetry for this kernel: cannot write the runtime directory "
                  f"{directory} ({exc.strerror or exc}); it still measures every cell. Set "
                  "JUPYTER_RUNTIME_DIR to a folder of yours, or MEMTAMER_TELEMETRY=0",
                  file=sys.stderr)
            return
        notebook, launcher = notebook_of_kernel(environ)
        endpoint = configured_endpoint(environ.get("MEMTAMER_TELEMETRY_ENDPOINT"), directory)
        names = environ.get("MEMTAMER_TELEMETRY_NAMES", "").lower() not in OFF
        curve_key = environ.get("MEMTAMER_TELEMETRY_CURVE_SECRET_KEY") or None
        try:
            bound = _core.telemetry_start(endpoint, kernel, names, curve_key)
            remove_stale(directory)
            self.path = os.path.join(directory, f"{DISCOVERY_PREFIX}{kernel}.json")
            _write_private(self.path, {
                "endpoint": bound, "pid": self.pid, "start_ticks": start_ticks(self.pid),
                "kernel": kernel, "cwd": os.getcwd(), "pid_namespace": pid_namespace(),
                "notebook": notebook, "launcher": launcher, "names": names,
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


def _ipc_path(endpoint):
    return endpoint[len("ipc://"):] if endpoint.startswith("ipc://") else None


def _listening(path):
    """True when something accepts on the Unix socket at path, False when
    nothing does (a socket left by a killed process), None when it cannot
    be told (no socket there, or not ours to probe)."""
    probe = socket.socket(socket.AF_UNIX)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        return False
    except OSError:
        return None
    finally:
        probe.close()
    return True


def pid_namespace():
    """This process's pid namespace ("pid:[4026531836]"), None when unknown."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def is_alive(record):
    """Whether the kernel that wrote this discovery record still runs: its pid
    runs the process that wrote it; or, when the kernel's pid namespace is
    not this process's (a sidecar's), its ipc socket accepts."""
    theirs = record.get("pid_namespace")
    if theirs is not None and theirs != pid_namespace():
        path = _ipc_path(record.get("endpoint", ""))
        return path is not None and _listening(path) is True
    ticks = start_ticks(record.get("pid", -1))
    return ticks is not None and ticks == record.get("start_ticks")


def _ours(path, kind):
    """Whether path is a file of this kind (stat.S_ISREG, S_ISSOCK) that this
    user owns: what another user wrote is not ours to remove."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return kind(st.st_mode) and st.st_uid == os.getuid()


def remove_dead(path, record):
    """Removes a dead kernel's discovery file and its socket when this user
    owns them (unless another process listens there now: a reused pid's
    kernel binds the same path)."""
    if not _ours(path, stat.S_ISREG):
        return
    _unlink(path)
    socket_path = _ipc_path(record["endpoint"])
    if (socket_path is not None and _ours(socket_path, stat.S_ISSOCK)
            and _listening(socket_path) is False):
        _unlink(socket_path)


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
            remove_dead(path, record)
    for path in glob.glob(os.path.join(directory, "memtamer", "*.sock")):
        if _listening(path) is False:
            _unlink(path)


def _unlink(path):
    try:
        os.unlink(path)
    except OSError:
        pass  # gone already, or not ours


class MissingDirectory(OSError):
    """A folder given with --dir that cannot be read."""


def search_path(extra=None):
    """Where to look for discovery files: the runtime directory and the one
    a kernel without jupyter_core uses (which need not exist yet: no kernel
    has started), then each extra folder, which
    must be readable (MissingDirectory names the first that is not)."""
    directories = list(dict.fromkeys([runtime_dir(import_jupyter=True), fallback_runtime_dir()]))
    for directory in extra or ():
        if not os.path.isdir(directory) or not os.access(directory, os.R_OK | os.X_OK):
            reason = "no such folder" if not os.path.exists(directory) else (
                "not a folder" if not os.path.isdir(directory) else "not readable")
            raise MissingDirectory(f"--dir {directory}: {reason}")
        if os.path.realpath(directory) not in map(os.path.realpath, directories):
            directories.append(directory)
    return directories


def discover(directories=None, rejected=None):
    """{path: record} of the live kernels' discovery files in directories
    (default: search_path()); the files of dead kernels are removed with
    their sockets, unreadable ones skipped, and so are those that do not fit
    (rejected(path) is called for each)."""
    found = {}
    for directory in directories or search_path():
        for path, record in _records(directory, rejected):
            if is_alive(record):
                found[path] = record
            else:
                remove_dead(path, record)
    return found


# How often followers look for kernels that started or stopped.
RESCAN_SECONDS = 1.0


class Follower:
    """Subscribes to every kernel found through the discovery files and keeps
    the latest state of each: ``kernels`` maps kernel id to a dict of the last
    sample's figures, the running cell, the last cell's record, the trips,
    ``lost`` (messages missed, from the gaps in sequence numbers),
    ``memory_deaths`` (post-mortems it reported: earlier kernels of its
    notebook that memory ended), ``thrashing`` (the major faults a second
    of its running cell once the guard saw it thrash, else None),
    ``greeted`` (its snapshot came) and
    ``received`` (time.monotonic() of its last message).  ``rejected`` counts
    the discovery files and messages that did not fit the protocol, skipped.
    Used by ``memtamer watch`` and ``memtamer export``."""

    def __init__(self, directories=None, context=None):
        import zmq

        self.zmq = zmq
        self.directories = search_path(directories)
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
                    "launcher": record.get("launcher"),
                    "endpoint": record["endpoint"], "seq": None, "lost": 0,
                    "running": None, "last_cell": None, "received": None,
                    "memory_deaths": 0, "greeted": False, "thrashing": None,
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
        if kind == "snapshot":
            state["greeted"] = True
            if message.get("last_cell"):
                state["last_cell"] = message["last_cell"]
            # Events before this follower connected; max(): one it also
            # received live is counted once.
            reported = sum(1 for event in message["recent_events"]
                           if isinstance(event, dict) and event.get("event") == "postmortem")
            state["memory_deaths"] = max(state["memory_deaths"], reported)
        elif kind == "event" and message["event"] == "postmortem":
            state["memory_deaths"] += 1
        elif kind == "event" and message["event"] == "thrashing":
            # The running cell thrashes (the guard let it run): until it ends.
            state["thrashing"] = (message.get("data") or {}).get("major_faults_per_second")
        elif kind == "cell":
            state["last_cell"] = message["record"]
            state["cells"], state["trips"] = message["cells"], message["trips"]
            state["running"] = state["thrashing"] = None
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
                        help="another folder to look for discovery files in, besides "
                             "Jupyter's runtime directory (repeatable)")
