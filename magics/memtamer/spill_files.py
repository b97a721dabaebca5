"""The spill files' lifecycle: where they go (never into RAM), named by
host and pid, removed when their memmap goes or the kernel exits, and
those of killed kernels found and removed."""

import atexit
import contextlib
import os
import re
import shutil
import socket
import tempfile
import uuid
import weakref

from . import _core

# Files spilled by this process, removed at exit (and each when its memmap goes).
_spilled = set()
# Spill files and directories carry the host and pid of the kernel that made
# them, so that those of a kernel killed without cleaning up can be found.
SPILL_PREFIX = "memtamer-spill-"


def _spill_owner():
    return f"{socket.gethostname()}-{os.getpid()}"


def remove(path):
    """Removes a spill file (its memmap is gone, or the spill failed)."""
    _spilled.discard(path)
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


@atexit.register
def _remove_all_spills():
    for path in list(_spilled):
        remove(path)
    shutil.rmtree(_default_spill_dir(create=False), ignore_errors=True)


def _spill_root():
    """$MEMTAMER_SPILL_DIR, else the temp dir (unless it is in RAM), else
    ~/.cache/memtamer."""
    root = os.environ.get("MEMTAMER_SPILL_DIR")
    if not root:
        root = tempfile.gettempdir()
        if _core.in_ram(root):  # spilling there would free nothing
            root = os.path.join(os.path.expanduser("~"), ".cache", "memtamer")
    return os.path.expanduser(root)


def _default_spill_dir(create=True):
    """One directory per kernel process under the spill root."""
    path = os.path.join(_spill_root(), SPILL_PREFIX + _spill_owner())
    if create:
        os.makedirs(path, mode=0o700, exist_ok=True)
    return path


def new_path(directory, name):
    """A new spill file's path for variable name: in directory (its stale
    spills removed first), else in this kernel's own directory."""
    if directory:
        os.makedirs(directory, exist_ok=True)
        remove_stale_spills(directory)
    else:
        directory = _default_spill_dir()
    return os.path.join(directory, f"{SPILL_PREFIX}{_spill_owner()}-{name}-{uuid.uuid4().hex[:12]}.raw")


def keep(path, mapped):
    """path backs the memmap mapped: removed when mapped goes, or at exit."""
    _spilled.add(path)
    weakref.finalize(mapped, remove, path)


def _is_dead(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # alive, but another user's
        return False
    return False


def remove_stale_spills(directory=None):
    """Removes the spill files and directories in directory (default: the
    spill root) that kernels of this host left behind when they were killed
    (SIGKILL, the OOM killer): their pid no longer runs.  Returns the paths."""
    directory = directory or _spill_root()
    stale = re.compile(re.escape(SPILL_PREFIX + socket.gethostname()) + r"-(\d+)(?:$|-)")
    removed = []
    try:
        entries = os.listdir(directory)
    except OSError:
        return removed
    for entry in entries:
        match = stale.match(entry)
        if not match or not _is_dead(int(match.group(1))):
            continue
        path = os.path.join(directory, entry)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                os.unlink(path)
        if not os.path.lexists(path):  # another user's stays theirs
            removed.append(path)
    return removed
