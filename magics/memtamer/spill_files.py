"""The lifecycle of spill files put in a directory of the user's choosing
(--dir; the notebook's store is spill_store.py's): named by
host and pid, removed when their memmap goes or the kernel exits, and
those of killed kernels found and removed: each kernel lists every file it
spills, whatever its directory, beside its post-mortem record, and the
notebook's next kernel removes what a killed one listed."""

import atexit
import contextlib
import os
import re
import shutil
import socket
import stat
import uuid
import weakref


# Files spilled by this process, removed at exit (and each when its memmap goes).
_spilled = set()
# Spill files and directories carry the host and pid of the kernel that made
# them, so that those of a kernel killed without cleaning up can be found.
SPILL_PREFIX = "memtamer-spill-"
# This kernel's list of its spill files: (pid, path) once it keeps a
# post-mortem record, else None.  A forked child lists nothing: its files
# are not its parent's to list.
_listing = None
# A list is read up to this size: thousands of spills.
LISTING_MAX_BYTES = 1 << 20


def _host():
    return socket.gethostname()


def _spill_owner():
    return f"{_host()}-{os.getpid()}"


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
    if _listing is not None and _listing[0] == os.getpid():
        with contextlib.suppress(OSError):
            os.unlink(_listing[1])


def _listing_path(directory, pid):
    return os.path.join(directory, f"memtamer-{pid}.spills")


def list_in(directory):
    """From now on every spill file of this kernel is listed in directory
    (where its post-mortem record is), before the file is written."""
    global _listing
    _listing = (os.getpid(), _listing_path(directory, os.getpid()))


def _note(path):
    """Adds path to this kernel's list.  Only a regular file is written to
    (never through a link or into a FIFO); a list that cannot be written
    leaves the spill to be removed at exit, as without one."""
    if _listing is None or _listing[0] != os.getpid():
        return
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    with contextlib.suppress(OSError):
        fd = os.open(_listing[1], flags, 0o600)
        try:
            if stat.S_ISREG(os.fstat(fd).st_mode):
                os.write(fd, os.fsencode(path) + b"\n")
        finally:
            os.close(fd)


def _read_listing(path):
    """The bytes of a list: only a regular file, opened without blocking, at
    most LISTING_MAX_BYTES; b"" when there is none."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return b""
    chunks, size = [], 0
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return b""
        while size < LISTING_MAX_BYTES:
            chunk = os.read(fd, LISTING_MAX_BYTES - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError:
        pass
    finally:
        os.close(fd)
    return b"".join(chunks)


def remove_listed(directory, pid):
    """Removes the spill files that the dead kernel pid of this host listed in
    directory, and its list; returns their paths.  Whatever the list says,
    only regular files named as that kernel names its spills are removed."""
    listing = _listing_path(directory, pid)
    owner = os.fsencode(f"{SPILL_PREFIX}{_host()}-{pid}-")
    removed = []
    for path in _read_listing(listing).split(b"\n"):
        if not os.path.basename(path).startswith(owner):
            continue
        with contextlib.suppress(OSError):
            if stat.S_ISREG(os.lstat(path).st_mode):
                os.unlink(path)
                removed.append(os.fsdecode(path))
    with contextlib.suppress(OSError):
        os.unlink(listing)
    return removed


def new_path(directory, name):
    """A new spill file's path for variable name in directory (%shrink spill
    --dir; without it spills go to the notebook's store, spill_store.py),
    its stale spills removed first."""
    os.makedirs(directory, exist_ok=True)
    remove_stale_spills(directory)
    path = os.path.join(directory, f"{SPILL_PREFIX}{_spill_owner()}-{name}-{uuid.uuid4().hex[:12]}.raw")
    _note(os.path.abspath(path))
    return path


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


def remove_stale_spills(directory):
    """Removes the spill files and directories in directory that kernels of this host left behind when they were killed
    (SIGKILL, the OOM killer): their pid no longer runs.  Returns the paths."""
    stale = re.compile(re.escape(SPILL_PREFIX + _host()) + r"-(\d+)(?:$|-)")
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
