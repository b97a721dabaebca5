"""The notebook's spill store: spilled objects of every kind, on disk, and
what the next kernel of the notebook can bring back after a death.

One directory per notebook (keyed by JPY_SESSION_NAME, as the post-mortem
records are) under the user's cache directory, mode 0700.  Each kernel keeps
a manifest there, manifest-<host>-<pid>.json, rewritten atomically after
each spill: per name its file, kind, sizes, checksum and the cell it came
from.  A kernel that exits normally removes its files and manifest, but for
the spills kept for reattaching; one that is killed leaves them all, and
the notebook's next kernel offers them (`%shrink reattach NAME|all`, or
`--discard`).  A checkpoint (--keep-in-memory) is a file of a variable
left in memory.

A numpy array's file is its raw bytes (an np.memmap maps it).  Any other
object is pickled (protocol 5) with its buffers out of band: the file is
the pickle stream, then each buffer at an aligned offset; reading it back
unpickles over a copy-on-write mapping of the file, so the buffers (a
DataFrame's blocks, an Arrow table's columns, a torch tensor's storage, a
dict's arrays) stay on disk and the file keeps exactly what was spilled."""

import atexit
import contextlib
import functools
import hashlib
import io
import json
import mmap
import os
import pickle
import shutil
import socket
import stat
import sys
import time
import uuid
import weakref

from . import _core
from .sizes import format_size

MANIFEST_PREFIX = "manifest-"
FILE_SUFFIX = ".spill"
BUFFER_ALIGN = 64  # a buffer's offset in its file: numpy and Arrow want aligned data
# The free space no spill may take: this fraction of the disk or this many
# bytes, whichever is smaller; $MEMTAMER_SPILL_RESERVE (a size) overrides it.
RESERVE_FRACTION = 0.10
RESERVE_MAX_BYTES = 2 * 1024**3
# Stores of notebooks whose kernels have not written to them for this long go.
PRUNE_AFTER_SECONDS = 14 * 24 * 3600

# This kernel's manifest: name -> entry; and the mapped objects' finalizers.
_entries = {}
_finalizers = {}


def _owner():
    return f"{socket.gethostname()}-{os.getpid()}"


def root():
    """$MEMTAMER_SPILL_DIR, else $XDG_CACHE_HOME/memtamer/spill, else
    ~/.cache/memtamer/spill: on disk, never in /tmp."""
    path = os.environ.get("MEMTAMER_SPILL_DIR")
    if not path:
        cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        path = os.path.join(cache, "memtamer", "spill")
    return os.path.abspath(os.path.expanduser(path))


def notebook():
    """The notebook this kernel runs for, or None."""
    return os.environ.get("JPY_SESSION_NAME") or None


def store_dir(create=True):
    """The notebook's store; a kernel of no notebook has one of its own
    (nothing of it can be reattached, and it goes at exit)."""
    name = notebook()
    key = ("notebook-" + hashlib.sha256(name.encode()).hexdigest()[:16]) if name \
        else f"kernel-{_owner()}"
    path = os.path.join(root(), key)
    if create:
        os.makedirs(path, mode=0o700, exist_ok=True)
        os.chmod(path, 0o700)
    return path


def _manifest_path(directory, owner):
    return os.path.join(directory, f"{MANIFEST_PREFIX}{owner}.json")


def _write_manifest():
    """This kernel's manifest, replaced atomically (a rename over it);
    removed when empty.  Not fsync'd: the store outlives a kernel's death,
    whose page cache the next kernel reads, and not a machine's crash, after
    which the spill files, never synced either, could be incomplete (their
    checksums then refuse them).  A sync cost a spill tens of milliseconds,
    more on a busy disk, for nothing."""
    directory = store_dir()
    path = _manifest_path(directory, _owner())
    if not _entries:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return
    manifest = {"notebook": notebook(), "host": socket.gethostname(), "pid": os.getpid(),
                "updated": time.time(), "entries": _entries}
    temporary = f"{path}.{uuid.uuid4().hex[:8]}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(manifest, f)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def new_path(name):
    return os.path.join(store_dir(), f"{_owner()}-{name}-{uuid.uuid4().hex[:12]}{FILE_SUFFIX}")


# ---- the disk guard -----------------------------------------------------------

def reserve(total):
    """The free space spills leave on a disk of total bytes."""
    given = os.environ.get("MEMTAMER_SPILL_RESERVE")
    if given:
        return _core.parse_size(given)
    return int(min(total * RESERVE_FRACTION, RESERVE_MAX_BYTES))


def _existing(directory):
    """directory, or its closest ancestor that exists: the same file system."""
    probe = os.path.abspath(directory)
    while not os.path.isdir(probe):
        probe = os.path.dirname(probe)
    return probe


def _disk(directory):
    """(free bytes, total bytes) of the disk directory is or will be on."""
    disk = os.statvfs(_existing(directory))
    return disk.f_bavail * disk.f_frsize, disk.f_blocks * disk.f_frsize


def room_refusal(directory, nbytes, chosen):
    """The reason a spill of nbytes into directory would leave less free
    space than the reserve, or, unless the user chose the directory
    (--dir, $MEMTAMER_SPILL_DIR), free nothing (its file system is in RAM);
    else None."""
    chosen = chosen or bool(os.environ.get("MEMTAMER_SPILL_DIR"))
    if not chosen and _core.in_ram(_existing(directory)):
        return (f"{directory} keeps its files in memory (tmpfs): a spill there would free "
                f"nothing; spill elsewhere with --dir, or set $MEMTAMER_SPILL_DIR")
    free, total = _disk(directory)
    keep = reserve(total)
    if free - nbytes >= keep:
        return None
    return (f"its {format_size(nbytes)} would leave {format_size(max(free - nbytes, 0))} free on "
            f"the disk of {directory}, below the reserve of {format_size(keep)} "
            f"($MEMTAMER_SPILL_RESERVE): free space, or spill elsewhere with --dir")


def status_line():
    """The %memguard line on the spill store's disk."""
    directory = root()
    free, total = _disk(directory)
    held = sum(entry["file_bytes"] for entry in _entries.values())
    return (f"  spill store {directory}: {format_size(held)} spilled by this kernel, "
            f"{format_size(free)} free, reserve {format_size(reserve(total))}")


# ---- objects as files -------------------------------------------------------------

class Unspillable(ValueError):
    """An object a spill file cannot give back exactly; its text says why
    and what to do."""


def _tensor_refusal(tensor):
    """Why a torch tensor cannot be spilled and come back exactly, or None."""
    torch = sys.modules["torch"]
    if type(tensor) is not torch.Tensor:
        return (f"it is a {type(tensor).__qualname__} (a subclass of torch.Tensor), which a "
                f"spill would give back as a plain tensor")
    if tensor.device.type != "cpu":
        return f"it lives on {tensor.device}, not in this process's memory: .cpu() it first"
    if tensor.layout != torch.strided:
        return f"its layout is {tensor.layout}: only dense (strided) tensors spill"
    if tensor.grad_fn is not None:
        return ("it has a grad_fn (autograd's graph): a spill keeps data, not the graph; "
                "spill .detach() of it")
    if tensor.grad is not None:
        return "it holds a .grad, which a spill would lose: clear it (tensor.grad = None) first"
    if tensor._base is not None or tensor.is_shared():
        return ("it shares its storage (a view of another tensor, or shared memory): a spill "
                "would break the sharing; spill the base tensor, or .clone() it")
    if tensor.is_conj() or tensor.is_neg():
        return ("it carries a lazy conjugate or negation, which a spill of its storage would "
                "lose: .resolve_conj().resolve_neg() it first")
    if tensor.is_quantized:
        return "it is quantized: only plain dense tensors spill"
    return None


def _storage_bytes(tensor):
    """A CPU tensor's whole storage as a numpy uint8 array, without a copy."""
    torch = sys.modules["torch"]
    return torch.empty(0, dtype=torch.uint8).set_(tensor.untyped_storage()).numpy()


def tensor_from_storage(storage, dtype, shape, stride, offset, requires_grad):
    """A tensor over storage (the uint8 array of a spill file's mapping),
    as it was spilled: dtype, shape, strides, storage offset, requires_grad."""
    import torch

    data = torch.from_numpy(storage).untyped_storage()
    tensor = torch.empty(0, dtype=dtype).set_(data, offset, shape, stride)
    return tensor.requires_grad_(requires_grad)


def _through_arrow(frame):
    """Whether polars gives frame back from Arrow with its schema (some
    types have no Arrow twin, Int128 and Object among them)."""
    pl = sys.modules["polars"]
    try:
        empty = frame.head(0).to_arrow(compat_level=pl.CompatLevel.newest())
        return pl.from_arrow(empty).schema == frame.schema
    except (ValueError, pl.exceptions.PolarsError):  # pyarrow's errors are ValueErrors
        return False


def polars_series(table):
    """The polars Series a one-column Arrow table holds (its schema keeps
    what the column's own Arrow type cannot: an Enum stays an Enum)."""
    return sys.modules["polars"].from_arrow(table).to_series()


class _Pickler(pickle.Pickler):
    """Protocol 5; polars frames through Arrow where that gives them back
    with their schema (polars pickles its data inline, Arrow out of band,
    and polars reads an Arrow table without a copy); torch tensors as their
    storage's bytes out of band (torch pickles them inline), or refused
    (Unspillable) with the reason."""

    def reducer_override(self, obj):
        pl = sys.modules.get("polars")
        if pl is not None and isinstance(obj, (pl.DataFrame, pl.Series)):
            frame = obj if isinstance(obj, pl.DataFrame) else obj.to_frame()
            if not _through_arrow(frame):
                return NotImplemented
            # newest: polars' own layouts (strings as views), so no column is copied
            table = frame.to_arrow(compat_level=pl.CompatLevel.newest())
            return (pl.from_arrow if frame is obj else polars_series), (table,)
        torch = sys.modules.get("torch")
        if torch is not None and isinstance(obj, torch.Tensor):
            refusal = _tensor_refusal(obj)
            if refusal:
                raise Unspillable(refusal)
            return tensor_from_storage, (_storage_bytes(obj), obj.dtype, tuple(obj.shape),
                                         obj.stride(), obj.storage_offset(), obj.requires_grad)
        return NotImplemented


def dumps(obj, protocol=5, buffer_callback=None):
    """pickle.dumps through _Pickler."""
    stream = io.BytesIO()
    _Pickler(stream, protocol=protocol, buffer_callback=buffer_callback).dump(obj)
    return stream.getvalue()


def compress_pickler(obj):
    """How compress pickles obj: dumps for a polars frame or series (through
    Arrow; polars data is immutable), else None, pickle.dumps, which runs
    no Python code for data, so no thread writes into what it already
    pickled while compress holds the GIL."""
    pl = sys.modules.get("polars")
    return dumps if pl is not None and isinstance(obj, (pl.DataFrame, pl.Series)) else None


def dump(value):
    """value pickled with its buffers out of band: (the stream, [buffers]).
    pickle's errors pass through."""
    buffers = []
    stream = dumps(value, buffer_callback=buffers.append)
    return memoryview(stream), [b.raw() for b in buffers]


def layout(stream, buffers):
    """Where dump's parts go in the file: [(offset, part)], and its size."""
    regions, at = [], 0
    for part in [memoryview(stream), *buffers]:
        at += -at % BUFFER_ALIGN
        regions.append((at, part))
        at += part.nbytes
    return regions, at


def write_object(path, regions, progress=None):
    """Writes the parts at their offsets to a new file (as an array's spill
    is written: the GIL released, the disk's writeback started at once);
    returns the regions as the manifest keeps them."""
    _core.spill_write(regions, path, progress=progress)
    return [[offset, part.nbytes, part.readonly] for offset, part in regions]


def read_object(path, regions):
    """The object a file holds, unpickled over a copy-on-write mapping of
    it: writes to it stay in memory and the file keeps what was spilled.
    Returns (the object, the mapping)."""
    with open(path, "rb") as f:
        mapping = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
    view = memoryview(mapping)
    (offset, length, _), *buffers = regions
    parts = [view[o:o + n].toreadonly() if readonly else view[o:o + n]
             for o, n, readonly in buffers]
    return pickle.loads(view[offset:offset + length], buffers=parts), mapping


def same_as_file(value, path):
    """Whether value, pickled again, is byte for byte what path holds."""
    regions, size = layout(*dump(value))
    if os.path.getsize(path) != size:
        return False
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as written:
        return all(written[offset:offset + part.nbytes] == part for offset, part in regions)


# ---- equality, as each library defines it -------------------------------------------

def equal(a, b):
    """Whether b (read back) equals a exactly, with the library's own
    equality, dtypes and index."""
    if type(a) is not type(b):
        return False
    np, pd = sys.modules.get("numpy"), sys.modules.get("pandas")
    pa = sys.modules.get("pyarrow")
    if np is not None and isinstance(a, np.ndarray):
        if a.dtype != b.dtype or a.shape != b.shape:
            return False
        if a.flags.c_contiguous and b.flags.c_contiguous and not a.dtype.hasobject:
            # Exactly: bit for bit, which is what a file gives back (and fast).
            word = np.uint64 if a.nbytes % 8 == 0 else np.uint8  # words compare 4x faster
            return bool(np.array_equal(a.reshape(-1).view(np.uint8).view(word),
                                       b.reshape(-1).view(np.uint8).view(word)))
        try:
            return bool(np.array_equal(a, b, equal_nan=True))
        except TypeError:
            return bool(np.array_equal(a, b))
    if pd is not None and isinstance(a, (pd.DataFrame, pd.Series, pd.Index)):
        if isinstance(a, pd.DataFrame):
            return (a.equals(b) and list(a.dtypes) == list(b.dtypes)
                    and a.columns.equals(b.columns) and a.columns.dtype == b.columns.dtype
                    and a.index.equals(b.index) and a.index.dtype == b.index.dtype)
        if isinstance(a, pd.Series):
            return (a.equals(b) and a.dtype == b.dtype and a.name == b.name
                    and a.index.equals(b.index) and a.index.dtype == b.index.dtype)
        return a.equals(b) and a.dtype == b.dtype
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(a, torch.Tensor):
        # Bit for bit, over the whole storage, and everything that says how to read it.
        return (a.dtype == b.dtype and a.shape == b.shape and a.stride() == b.stride()
                and a.storage_offset() == b.storage_offset()
                and a.requires_grad == b.requires_grad
                and equal(_storage_bytes(a), _storage_bytes(b)))
    pl = sys.modules.get("polars")
    if pl is not None and isinstance(a, pl.DataFrame):
        return a.schema == b.schema and a.equals(b)
    if pl is not None and isinstance(a, pl.Series):
        return a.dtype == b.dtype and a.name == b.name and a.equals(b)
    if pa is not None and isinstance(a, (pa.Table, pa.RecordBatch, pa.Array, pa.ChunkedArray)):
        return a.equals(b)
    if isinstance(a, dict):
        return list(a) == list(b) and all(equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(equal(x, y) for x, y in zip(a, b))
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 - an object that cannot say is not known equal
        return False


# ---- this kernel's spills -----------------------------------------------------------

def keep(name, path, mapped, entry):
    """path, spilled from name, backs mapped: listed in this kernel's
    manifest, and removed (with its entry) when mapped goes or at exit.  A
    checkpoint (mapped None: the variable stayed in memory) stays until the
    name's next spill or the exit.  An entry that says keep_for_reattach
    outlives a normal exit too."""
    previous = _finalizers.pop(name, None)
    if previous is not None:
        previous()
    _entries[name] = entry
    _write_manifest()
    _finalizers[name] = functools.partial(_forget, name, path) if mapped is None else \
        weakref.finalize(mapped, _forget, name, path)


def _forget(name, path):
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    if _entries.get(name, {}).get("file") == os.path.basename(path):
        del _entries[name]
        _finalizers.pop(name, None)
        with contextlib.suppress(OSError):
            _write_manifest()


def _seal(finalizer, item):
    """At exit, a spill kept for reattaching: its file no longer goes with
    its mapping, and a numpy array's file, which writes through its
    read-write map changed, is checksummed as it is now."""
    if not isinstance(finalizer, weakref.finalize):
        return  # a checkpoint: its file is as it was written
    alive = finalizer.peek()
    finalizer.detach()
    if alive is not None and item.get("format") == "memmap":
        # Should this fail, the old checksum stays and reattach refuses the file.
        with contextlib.suppress(OSError, ValueError):
            alive[0].flush()
            item["checksum"] = _core.spill_checksum(os.path.join(store_dir(), item["file"]))


@atexit.register
def _remove_at_exit():
    """A normal exit leaves nothing: every file and the manifest go, except
    the spills kept for reattaching, which the manifest goes on listing for
    the notebook's next kernel."""
    kept = {name: item for name, item in _entries.items() if item.get("keep_for_reattach")}
    for name, finalizer in list(_finalizers.items()):
        if name in kept:
            _seal(finalizer, kept[name])
        else:
            finalizer()
    _entries.clear()
    _entries.update(kept)
    with contextlib.suppress(OSError):
        _write_manifest()
        if not notebook():
            shutil.rmtree(store_dir(create=False), ignore_errors=True)
        os.rmdir(store_dir(create=False))  # when no other kernel of the notebook left files


def entry(kind, path, value_bytes, regions, cell, checksum, extra=None):
    """A manifest entry for a spill just written, with the checksum its
    commit gave (_core.spill_commit*, which read the file last)."""
    return {"kind": kind, "file": os.path.basename(path), "bytes": value_bytes,
            "file_bytes": os.path.getsize(path), "checksum": checksum,
            "regions": regions, "cell": cell, "spilled": time.time(), **(extra or {})}


# ---- what dead kernels left ---------------------------------------------------------

def _alive(host, pid):
    if host != socket.gethostname():
        return True  # not ours to judge
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _dead_manifests():
    """[(path, manifest)] of this notebook's kernels that died with spills."""
    directory = store_dir(create=False)
    found = []
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return found
    for file_name in names:
        if not (file_name.startswith(MANIFEST_PREFIX) and file_name.endswith(".json")):
            continue
        path = os.path.join(directory, file_name)
        try:
            if not stat.S_ISREG(os.lstat(path).st_mode):
                continue
            with open(path) as f:
                manifest = json.load(f)
            pid, host = int(manifest["pid"]), manifest["host"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if (pid, host) == (os.getpid(), socket.gethostname()) or _alive(host, pid):
            continue
        found.append((path, manifest))
    return found


def offered():
    """{name: (manifest path, entry)} of what dead kernels of this notebook
    spilled, the latest spill of a name winning."""
    found = {}
    for path, manifest in _dead_manifests():
        for name, item in manifest.get("entries", {}).items():
            if name not in found or item.get("spilled", 0) > found[name][1].get("spilled", 0):
                found[name] = (path, manifest, item)
    return found


def offer_line():
    """What the previous kernel left for reattaching, said once at load, or None."""
    if not notebook():
        return None
    found = offered()
    if not found:
        return None
    total = sum(item.get("bytes", 0) for _, _, item in found.values())
    count = len(found)
    return (f"memtamer: {count} variable{'s' if count != 1 else ''}, {format_size(total)}, "
            f"spilled by the previous kernel ({', '.join(sorted(found))}): %shrink reattach all "
            f"(or NAME ..., or --discard to remove them)")


def _verify(directory, manifest, item):
    """The path of an offered spill's file once it is checked, else
    ValueError with the reason: nothing is loaded from a file that is not
    exactly what was spilled."""
    file_name = item.get("file", "")
    if manifest.get("notebook") != notebook():
        raise ValueError("its manifest belongs to another notebook")
    if os.path.basename(file_name) != file_name or not file_name.endswith(FILE_SUFFIX) \
            or not file_name.startswith(f"{manifest['host']}-{manifest['pid']}-"):
        raise ValueError(f"its file {file_name!r} is not one memtamer spilled in this store")
    path = os.path.join(directory, file_name)
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        raise ValueError(f"its file {path} is gone") from None
    if not stat.S_ISREG(info.st_mode):
        raise ValueError(f"{path} is not a regular file")
    if info.st_size != item.get("file_bytes"):
        raise ValueError(f"{path} has {format_size(info.st_size)}, not the "
                         f"{format_size(item.get('file_bytes', 0))} spilled: truncated or changed")
    if _core.spill_checksum(path) != item.get("checksum"):
        raise ValueError(f"{path} does not match its checksum: damaged, or written to after the "
                         f"spill")
    return path


def _load(path, item):
    """The object an offered file holds, and what its finalizer watches."""
    if item["format"] == "memmap":
        import numpy as np

        descr = item["dtype"]  # a structured dtype's fields came back from JSON as lists
        descr = [tuple(field) for field in descr] if isinstance(descr, list) else descr
        mapped = np.memmap(path, dtype=np.lib.format.descr_to_dtype(descr), mode=item["mode"],
                           shape=tuple(item["shape"]), order=item["order"])
        return mapped, mapped
    return read_object(path, item["regions"])


def _take(old_manifest_path, manifest, name):
    """Drops name from a dead kernel's manifest (the manifest goes when empty)."""
    manifest["entries"].pop(name, None)
    if not manifest["entries"]:
        with contextlib.suppress(OSError):
            os.unlink(old_manifest_path)
        return
    temporary = f"{old_manifest_path}.{uuid.uuid4().hex[:8]}.tmp"
    with open(temporary, "w") as f:
        json.dump(manifest, f)
    os.replace(temporary, old_manifest_path)


def reattach(ns, names, discard=False):
    """Maps the offered spills of names (["all"]: every one) back into ns,
    checked first; or removes them (discard).  Returns [(name, outcome)]."""
    found = offered()
    if not found:
        raise ValueError("nothing is offered: no previous kernel of this notebook died with "
                         "spilled variables (or they were reattached or discarded)")
    wanted = sorted(found) if names == ["all"] or (discard and not names) else names
    unknown = [n for n in wanted if n not in found]
    if unknown:
        raise ValueError(f"nothing spilled by a previous kernel is called {', '.join(unknown)}; "
                         f"offered: {', '.join(sorted(found))}")
    directory = store_dir()
    outcomes = []
    for name in wanted:
        manifest_path, manifest, item = found[name]
        path = os.path.join(directory, os.path.basename(item.get("file", "")))
        if discard:
            with contextlib.suppress(OSError):
                if stat.S_ISREG(os.lstat(path).st_mode) and \
                        os.path.basename(path).startswith(f"{manifest['host']}-{manifest['pid']}-"):
                    os.unlink(path)
            _take(manifest_path, manifest, name)
            outcomes.append((name, "discarded"))
            continue
        if name in ns:
            outcomes.append((name, f"NOT reattached: {name} is already bound in this kernel "
                                   f"(del it first, or --discard the spill)"))
            continue
        try:
            path = _verify(directory, manifest, item)
            value, mapped = _load(path, item)
        except (ValueError, OSError, pickle.UnpicklingError, EOFError) as exc:
            outcomes.append((name, f"NOT reattached: {exc}"))
            continue
        # The file is this kernel's now, under a name of its own.
        own = new_path(name)
        os.rename(path, own)
        # This kernel's own spill now: its normal exit removes it, unless
        # this kernel keeps it for reattaching again.
        keep(name, own, mapped, dict(item, file=os.path.basename(own), keep_for_reattach=False))
        _take(manifest_path, manifest, name)
        ns[name] = value
        del value, mapped
        outcomes.append((name, f"reattached ({format_size(item.get('bytes', 0))}, "
                               f"{item['kind']}, from cell {item.get('cell')})"))
    return outcomes


def prune():
    """Removes stores no kernel wrote to for PRUNE_AFTER_SECONDS, and the
    stores of dead kernels of no notebook; returns their paths."""
    top = root()
    removed = []
    try:
        stores = os.listdir(top)
    except OSError:
        return removed
    now = time.time()
    for store in stores:
        path = os.path.join(top, store)
        if os.path.islink(path) or not os.path.isdir(path) or path == store_dir(create=False):
            continue
        if store.startswith("kernel-"):
            host, _, pid = store[len("kernel-"):].rpartition("-")
            stale = pid.isdigit() and not _alive(host, int(pid))
        else:
            stale = store.startswith("notebook-") and now - os.stat(path).st_mtime > PRUNE_AFTER_SECONDS
        if stale:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed
