"""%shrink's glue: look names up, dispatch each action to _core, measure it,
and say which holders keep an object alive.  The work itself is in C
(kernelext/shrink.c, kernelext/codec.c).

Never lose data: bad input raises UsageError before anything changes; a
refusal changes nothing; a failure (MemoryError, codec error, Ctrl-C) leaves
the variable bound to exactly what it was.

Careful: no function here may keep a reference to the variable's object
while _core checks who holds it (refcounts are how it knows)."""

import ast
import atexit
import contextlib
import functools
import gc
import itertools
import mmap
import os
import re
import shutil
import socket
import sys
import tempfile
import time
import traceback
import types
import uuid
import weakref

from IPython.core.error import UsageError

from . import _core
from .sizes import format_size
from .telemetry import publish

# What watchers are told of each %shrink action (names only when allowed).
SHRINK_EVENT_FIELDS = ("name", "action", "status", "bytes_before", "bytes_after", "reason")
DRY_RUN_SAMPLE = _core.codecs()["chunk"]  # bytes per frame compressed to estimate a ratio
SAMPLE_ITEMS = 100_000  # items of a container pickled to estimate a ratio
MIN_COMPRESS_BYTES = 1024**2  # below this, compress saves too little to be worth a proxy
MIN_COMPRESS_RATIO = 1.25  # deep size / compressed size compress asks for
RESTORE_WALK_SECONDS = 2.0  # sizing what a restore gave back
CATEGORY_MAX_FRACTION = 0.5  # object columns with fewer distinct strings become category
PROGRESS_AFTER = 1.0  # seconds before an action shows progress

Compressed = _core.Compressed


# ---- who holds an object ------------------------------------------------

# Kinds of holders that are IPython's caches (or the last exception, or
# what a %run script left in IPython's cache of its namespace), which `del`
# may purge; the ledger says each holder's kind.
CACHE_KINDS = frozenset({"output_cache", "output_name", "exception", "run_namespace"})
# Kinds of holders that are the user's own names.
NAME_KINDS = frozenset({"variable", "view"})


@contextlib.contextmanager
def _ledger(shell, ns):
    """The variables ledger over ns: the extension keeps it attached; the
    Python API without the extension attaches it for one look."""
    if _core.ledger()["attached"]:
        yield
        return
    history = getattr(shell, "history_manager", None)
    _core.ledger_attach(ns, getattr(shell, "user_ns_hidden", None),
                        getattr(history, "output_hist", None), shell, None)
    try:
        yield
    finally:
        _core.ledger_detach()


def variable(shell, ns, name):
    """The ledger's entry for ns[name] after a walk of every root (bytes,
    exclusive, holders, shares), or None."""
    with _ledger(shell, ns):
        found = _core.variables(name)
    return found[0] if found else None


def describe_holder(holder):
    """A holder (a dict of the ledger's) in words people can act on."""
    if holder["kind"] == "view":
        return f"{holder['label']} is a view of it"
    if holder["kind"] == "output_name":
        return f"IPython's output cache {holder['label']}"
    return holder["label"]


def holders(shell, ns, name):
    """Who else keeps ns[name]'s memory alive, in words people can act on."""
    entry = variable(shell, ns, name)
    return [describe_holder(h) for h in entry["holders"]] if entry else []


def _refusal_text(shell, ns, name, refusals):
    """The failed rules for people, with the holders named."""
    parts = []
    for rule, message in refusals:
        if rule == "held":
            named = holders(shell, ns, name)
            message = ("also held by " + ", ".join(named)) if named else \
                "other references to it exist (none in the user namespace)"
        parts.append(message)
    return "; ".join(parts)


# ---- progress ------------------------------------------------------------

class Progress:
    """Called as progress(done, total) between chunks; shows itself only
    once an action has run for PROGRESS_AFTER seconds."""

    def __init__(self, label, shell=None):
        self.label = label
        self.started = time.monotonic()
        self.last = 0.0
        self.handle = None
        self.shown = False
        self.notebook = shell is not None and type(shell).__name__ == "ZMQInteractiveShell"

    def __call__(self, done, total):
        now = time.monotonic()
        if now - self.started < PROGRESS_AFTER or now - self.last < 0.25:
            return
        self.last = now
        self._show(done / total if total else 1.0)

    def _show(self, fraction):
        text = f"{self.label}: {fraction:.0%} ({time.monotonic() - self.started:.1f} s)"
        if self.notebook:
            from IPython.display import display

            bundle = {"text/plain": text,
                      "text/html": f'<progress value="{fraction:.3f}" max="1"></progress> '
                                   f"<code>{text}</code>"}
            if self.handle is None:
                self.handle = display(bundle, raw=True, display_id=True)
            else:
                self.handle.update(bundle, raw=True)
        else:
            sys.stderr.write("\r" + text)
            sys.stderr.flush()
        self.shown = True

    def close(self):
        if self.shown:
            self._show(1.0)
            if not self.notebook:
                sys.stderr.write("\n")


# ---- the actions ----------------------------------------------------------
# Each action is a pair: a check, (shell, ns, name, options) -> a refused
# row or None, that changes nothing and runs for every name before any
# action runs; and the action itself, (shell, ns, name, options, progress)
# -> a row dict with at least status ('done' | 'dry-run' | 'refused'),
# bytes_before, bytes_after, detail and reason.  ACTIONS maps an action to
# both and the options it takes.

def _is_ndarray(value):
    np = sys.modules.get("numpy")
    return np is not None and isinstance(value, np.ndarray)


def _pandas_kind(value):
    pd = sys.modules.get("pandas")
    if pd is None:
        return None
    if isinstance(value, pd.DataFrame):
        return "DataFrame"
    if isinstance(value, pd.Series):
        return "Series"
    return None


def _core_call(function, *args, **kwargs):
    """_core raises TypeError/ValueError for bad input, before changing anything."""
    try:
        return function(*args, **kwargs)
    except (TypeError, ValueError, KeyError) as exc:
        raise UsageError(f"%shrink: {exc.args[0] if exc.args else exc}") from None


def _refused(row, reason):
    return dict(row, status="refused", reason=reason)


def _named_items(ns, name):
    """Other names bound to an item of ns[name] (a list, tuple or dict)."""
    value = ns[name]
    items = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else ()
    inside = {id(item) for item in items}
    return [other for other, bound in ns.items() if other != name and id(bound) in inside]


# Immutable objects: sharing them splits nothing (Python itself shares
# small ints and interned strings everywhere).
_ATOMS = (str, bytes, int, float, complex, bool, type(None))


def _only_atoms(value):
    items = value.values() if isinstance(value, dict) else value
    return isinstance(value, (list, tuple, dict)) and all(isinstance(x, _ATOMS) for x in items)


def _shared_refusal(shell, ns, name):
    """A reason to refuse replacing ns[name] when part of what it holds is
    shared with the rest of the namespace (the ledger's exclusive bytes fall
    short of its bytes), or None.  Replacing it would split them: writes
    through one would no longer show in the other, and memory would double.
    A plain array's only part is its buffer, which the view and held rules
    cover; a container of immutable numbers and strings has nothing to split."""
    if _is_ndarray(ns[name]):
        return None
    entry = variable(shell, ns, name)
    if entry is None or entry["holders"] or not entry["complete"] or \
            entry["exclusive"] is None or entry["exclusive"] >= entry["bytes"]:
        return None
    sharers = list(dict.fromkeys([s["with"] for s in entry["shares"]] + _named_items(ns, name)))
    sharers = [n for n in sharers if not isinstance(ns.get(n), _ATOMS)]
    if not sharers and _only_atoms(ns[name]):
        return None
    with_whom = ", ".join(sharers) if sharers else "references outside the namespace"
    return (f"it shares {format_size(entry['bytes'] - entry['exclusive'])} of its contents with "
            f"{with_whom}; a shrunk copy would no longer share them (writes to one would not "
            f"show in the other, and memory would double): del or rebind those first")


# downcast -----------------------------------------------------------------

def _downcast_row(shell, ns, name, options, dry_run):
    """_core's downcast of an array, with holders named and what it kept said."""
    row = _core_call(_core.downcast, ns, name, to=options["to"], rtol=options["rtol"],
                     narrow=options["narrow"], copy=options["copy"], dry_run=dry_run)
    change = f"{row['dtype_before']} → {row['dtype_after']}" if row["dtype_after"] else row["dtype_before"]
    if row["status"] == "refused" and row["dtype_after"] is not None:
        row["reason"] = f"{row['reason']}: {_refusal_text(shell, ns, name, row['refusals'])}"
    if row["status"] == "dry-run" and row["refusals"]:
        row["reason"] = ("would need --copy: " if not options["copy"] else "would copy: ") + \
            _refusal_text(shell, ns, name, row["refusals"])
    row["detail"] = change + (" in place" if row["in_place"] else
                              " (copy)" if row["status"] in ("done", "dry-run") else "")
    if row["status"] != "refused":
        row["reason"] = "; ".join(filter(None, [_kept(row, options), row["warning"], row["reason"]]))
    return row


def _kept(row, options):
    """What precision a float downcast kept, measured against --rtol."""
    np = sys.modules.get("numpy")
    after = row.get("dtype_after") or row.get("target")
    if np is None or after is None or np.dtype(after).kind not in "fc":
        return None
    digits = np.finfo(np.dtype(after)).precision
    return (f"kept ~{digits} significant digits: largest relative error "
            f"{row['max_rel_error']:.2g} (--rtol {options['rtol']:g})")


def _pandas_bytes(obj):
    """Deep memory of a DataFrame (a Series per column) or a Series (an int)."""
    usage = obj.memory_usage(index=True, deep=True)
    return int(usage.sum()) if hasattr(usage, "sum") else int(usage)


def _downcast_pandas(shell, ns, name, options):
    """Numeric columns by the same plan as arrays, low-cardinality string
    columns to category; the frame is rebuilt from the converted columns
    (pandas keeps columns in shared blocks, so in place is not possible)."""
    import numpy as np
    import pandas as pd

    # Checked first: below, this function holds references of its own.
    held = [r for r in _core.inplace_check(ns, name) if r[0] == "held"]
    held_text = _refusal_text(shell, ns, name, held) if held else None
    original = ns[name]
    series = isinstance(original, pd.Series)
    frame = original.to_frame() if series else original
    before = _pandas_bytes(original)
    columns, changes, notes = [], [], []
    for position in range(frame.shape[1]):
        column = frame.iloc[:, position]
        label = frame.columns[position]
        dtype = column.dtype
        if isinstance(dtype, np.dtype) and dtype.kind in "fciu":
            to = options["to"]
            if dtype.kind in "iu" and to in ("float32", "float16"):
                to = "auto"
            plan = _core_call(_core.downcast_plan, column.to_numpy(), to=to, rtol=options["rtol"],
                              narrow=options["narrow"])
            if plan["target"]:
                column = column.astype(plan["target"])
                changes.append(f"{label}: {dtype} → {plan['target']}")
                notes.append(_kept(plan, options) or plan["warning"])
            else:
                notes.append(f"{label}: {plan['reason']}")
        elif (dtype == object or pd.api.types.is_string_dtype(dtype)) and len(column) and \
                not isinstance(dtype, pd.CategoricalDtype) and \
                pd.api.types.infer_dtype(column, skipna=True) == "string" and \
                column.nunique(dropna=True) <= CATEGORY_MAX_FRACTION * len(column):
            column = column.astype("category")
            changes.append(f"{label}: {dtype} → category")
        columns.append(column)
    row = {"detail": "; ".join(changes) or "no column could shrink",
           "reason": "; ".join(filter(None, notes)) or None, "in_place": False,
           "bytes_before": before}
    if not changes:
        return _refused(row, row["reason"] or "no numeric or low-cardinality string column to shrink")
    new = pd.concat(columns, axis=1)
    new.columns = frame.columns
    new = new.iloc[:, 0].rename(original.name) if series else new
    new.attrs = dict(original.attrs)
    row["bytes_after"] = _pandas_bytes(new)
    if options["dry_run"]:
        return dict(row, status="dry-run")
    if held and not options["copy"]:
        return _refused(row, "other references keep the original alive (add --copy): " + held_text)
    ns[name] = new
    return dict(row, status="done")


def _downcast_refusal(shell, ns, name, options):
    kind = type(ns[name])
    pandas = _pandas_kind(ns[name])
    if not pandas and not _is_ndarray(ns[name]):
        hint = " (try %shrink pack)" if kind in (list, tuple) else ""
        raise UsageError(f"%shrink downcast: {name} is a {kind.__name__}; downcast takes numpy "
                         f"arrays and pandas DataFrames/Series{hint}")
    shared = _shared_refusal(shell, ns, name)
    if len(options["together"]) == 1 and not shared:
        # Alone, it needs no conversion planned here: the action refuses by
        # itself before it changes anything (and scans the values holding the GIL).
        return None
    if pandas:
        row = _downcast_pandas(shell, ns, name, dict(options, dry_run=True))
        return _refused(row, shared) if shared else row if row["status"] == "refused" else None
    row = _downcast_row(shell, ns, name, options, dry_run=True)
    if row["status"] == "dry-run" and row["refusals"] and not options["copy"]:
        return _refused(dict(row, detail=row["detail"].removesuffix(" (copy)")),
                        "it cannot be converted in place (add --copy to convert a copy): " +
                        _refusal_text(shell, ns, name, row["refusals"]))
    return row if row["status"] == "refused" else None


def _downcast(shell, ns, name, options, progress):
    if _pandas_kind(ns[name]):
        return _downcast_pandas(shell, ns, name, options)
    return _downcast_row(shell, ns, name, options, options["dry_run"])


# compress -------------------------------------------------------------------

def _held_refusal(shell, ns, name, options, what):
    """A reason to refuse replacing ns[name] when others hold it, or None."""
    refusals = [r for r in _core.inplace_check(ns, name) if r[0] in ("held", "view")]
    if not refusals or options["copy"]:
        return None
    return (f"other holders keep it in memory, so {what} would free nothing (add --copy to "
            f"{what.split()[0]} anyway): " + _refusal_text(shell, ns, name, refusals))


def _by_reference(value):
    """What value is when pickle would store it by name, not by value, or None."""
    if isinstance(value, types.ModuleType):
        return "module"
    if isinstance(value, type):
        return "class"
    if isinstance(value, (types.FunctionType, types.BuiltinFunctionType, types.MethodType,
                          types.MethodWrapperType, functools.partial)):
        return "function"
    return None


def _file_backing(value):
    """The file an array's memory maps (a memmap or a view of one), or None."""
    np = sys.modules.get("numpy")
    if np is None or not isinstance(value, np.ndarray):
        return None
    while value is not None:
        if isinstance(value, np.memmap) and getattr(value, "filename", None):
            return value.filename
        if isinstance(value, mmap.mmap):
            return "a memory-mapped file"
        value = getattr(value, "base", None)
    return None


def _sample(value, nbytes):
    """A part of value (about DRY_RUN_SAMPLE of its nbytes) to estimate its
    compressed size from, and how many times the whole is bigger: never a
    copy or a pickle of a big object."""
    np = sys.modules.get("numpy")
    if np is not None and isinstance(value, np.ndarray) and value.ndim and len(value) > 1:
        if (value.flags.c_contiguous or value.flags.f_contiguous) and not value.dtype.hasobject:
            return value, 1.0  # compress_estimate reads its first bytes in place
        row = max(1, value[0].nbytes if not value.dtype.hasobject else 64 * value[0].size)
        rows = max(1, min(len(value), DRY_RUN_SAMPLE // row))
        return np.ascontiguousarray(value[:rows]), len(value) / rows
    length = len(value) if isinstance(value, (list, tuple, dict, set, frozenset)) or \
        _pandas_kind(value) else 0
    items = min(SAMPLE_ITEMS, max(1, length * DRY_RUN_SAMPLE // max(nbytes, 1)))
    if length <= items:
        return value, 1.0
    step = length // items
    if isinstance(value, (list, tuple)):
        sample = value[::step]
    elif isinstance(value, dict):
        sample = dict(itertools.islice(value.items(), 0, None, step))
    elif isinstance(value, (set, frozenset)):
        sample = set(itertools.islice(value, 0, None, step))
    else:
        sample = value.iloc[::step]
    return sample, length / len(sample)


def _shared_with(ns, entries, name):
    """Other variables whose objects are inside ns[name]: compressing would
    give it copies of them (immutable atoms such as str or int do not count)."""
    entry = next(e for e in entries if e["name"] == name)
    inside = {e["name"] for e in entries if e["name"] != name and
              any(h.get("key") == name and h["kind"] in NAME_KINDS for h in e["holders"])}
    inside |= {s["with"] for s in entry["shares"] if s["variable"] and s["holds"]}
    return sorted(n for n in inside if not isinstance(ns.get(n), _ATOMS))


def _compress_plan(shell, ns, name, options):
    """The row a compress of ns[name] starts from: its deep size and the
    estimated compressed size, with status 'refused' and the reason when
    it must not be compressed.  Changes nothing; cheap (a sample, no full
    pickle).  Checks that count references come first."""
    if isinstance(ns[name], Compressed):
        raise UsageError(f"%shrink compress: {name} is already compressed "
                         f"(%shrink restore {name} gives it back)")
    detail = "auto" if options["codec"] == "auto" else f"{options['codec']} level {options['level']}"
    row = {"status": "refused", "bytes_before": None, "bytes_after": None, "detail": detail,
           "reason": None}
    kind = _by_reference(ns[name])
    if kind:
        return dict(row, reason=f"it is a {kind}: pickle stores a {kind} by name, not by value, "
                                f"so compress could not give it back")
    backing = _file_backing(ns[name])
    if backing:
        return dict(row, reason=f"it is file-backed (a memmap of {backing}): its pages already "
                                "come from the file and go back to it under memory pressure, "
                                "so there is nothing to compress")
    held = _held_refusal(shell, ns, name, options, "compressing it")
    with _ledger(shell, ns):
        entries = _core.variables()
    entry = next((e for e in entries if e["name"] == name), None)
    nbytes = entry["bytes"] if entry else _core.deep_size(ns[name])[0]
    row["bytes_before"] = row["bytes_after"] = nbytes
    shared = _shared_with(ns, entries, name) if entry else []
    if shared:
        one = len(shared) == 1
        return dict(row, reason=f"{', '.join(shared)} {'is' if one else 'are'} inside it and also "
                                f"bound to {'its' if one else 'their'} own name: after a restore "
                                f"{name} would hold copies, and changes would no longer show on "
                                "both sides")
    if nbytes < MIN_COMPRESS_BYTES:
        return dict(row, reason=f"it uses only {format_size(nbytes)}: compress takes objects of "
                                f"{format_size(MIN_COMPRESS_BYTES)} or more, below that it saves "
                                "too little")
    if held:
        return dict(row, reason=held)
    sample, scale = _sample(ns[name], nbytes)
    try:
        _, estimate, method = _core.compress_estimate(sample, codec=options["codec"],
                                                      level=options["level"],
                                                      sample=DRY_RUN_SAMPLE)
    except ValueError as exc:  # pickled by reference (see codec.c)
        return dict(row, reason=str(exc))
    detail = method if options["codec"] != "auto" else f"auto: {method}"
    estimate = int(estimate * scale)
    row["bytes_after"] = estimate
    if estimate * MIN_COMPRESS_RATIO > nbytes:
        return dict(row, bytes_after=nbytes,
                    reason=f"it uses {format_size(nbytes)} and compressed it would still take "
                           f"≈ {format_size(estimate)}: not worth it (compress asks for a ratio "
                           f"of at least {MIN_COMPRESS_RATIO})")
    return dict(row, status="ok", detail=f"{detail}, ratio ≈ {nbytes / max(estimate, 1):.1f}")


def _compress_refusal(shell, ns, name, options):
    """compress's refusal row for ns[name], or None; changes nothing."""
    row = _compress_plan(shell, ns, name, options)
    return row if row["status"] == "refused" else None


def _owner(shell, ns):
    """The module whose namespace is ns: a restored proxy rebinds its name there."""
    for module in (getattr(shell, "user_module", None), sys.modules.get(ns.get("__name__"))):
        if isinstance(module, types.ModuleType) and getattr(module, "__dict__", None) is ns:
            return module
    return None


def _compress(shell, ns, name, options, progress):
    row = _compress_plan(shell, ns, name, options)
    if row["status"] == "refused" or options["dry_run"]:
        return dict(row, status=row["status"] if row["status"] == "refused" else "dry-run")
    try:
        proxy = _core.compress(ns[name], name, codec=options["codec"], level=options["level"],
                               progress=progress, owner=_owner(shell, ns))
    except ValueError as exc:  # found only in the full pickle: by reference (see codec.c)
        return dict(row, status="refused", bytes_after=row["bytes_before"], reason=str(exc))
    after = _core.deep_size(proxy)[0]
    if after * MIN_COMPRESS_RATIO > row["bytes_before"]:  # the sample was too hopeful
        return dict(row, status="refused", bytes_after=row["bytes_before"],
                    reason=f"compressed it takes {format_size(after)} of its "
                           f"{format_size(row['bytes_before'])}: not worth it, left as it was")
    ns[name] = proxy
    info = _core.compressed_info(proxy)
    _compressed_names[name] = (info["cbytes"], row["bytes_before"])
    return dict(row, status="done", bytes_after=after,
                detail=f"{info['what']}: {'auto: ' if info['auto'] else ''}{info['method']}, "
                       f"ratio {row['bytes_before'] / max(after, 1):.1f}")


def _restore(shell, ns, name, options, progress):
    if not isinstance(ns[name], Compressed):
        raise UsageError(f"%shrink restore: {name} is not compressed (it is a "
                         f"{type(ns[name]).__name__})")
    info = _core.compressed_info(ns[name])
    # A proxy that already restored itself (a name %timeit put back) holds the object.
    row = {"bytes_before": _core.deep_size(ns[name], RESTORE_WALK_SECONDS)[0],
           "bytes_after": info["nbytes"],
           "reason": None, "detail": f"{info['what']} from {info['method']}"}
    if options["dry_run"]:
        return dict(row, status="dry-run")
    ns[name] = _core.restore(ns[name], progress=progress)
    cbytes, deep = _compressed_names.pop(name, (None, None))
    if cbytes != info["cbytes"]:  # not compressed by %shrink here: measure it
        deep, complete = _core.deep_size(ns[name], RESTORE_WALK_SECONDS)
        if not complete:
            row["reason"] = f"at least {format_size(deep)} (the walk stopped)"
    return dict(row, status="done", bytes_after=deep)


def _restore_refusal(shell, ns, name, options):
    if not isinstance(ns[name], Compressed):
        raise UsageError(f"%shrink restore: {name} is not compressed (it is a "
                         f"{type(ns[name]).__name__})")
    return None


# pack -------------------------------------------------------------------------

def _pack_row(shell, ns, name, options, dry_run):
    kind = type(ns[name])
    row = _core_call(_core.pack, ns, name, narrow=options["narrow"], copy=options["copy"],
                     dry_run=dry_run)
    if row["refusals"] and row["status"] == "refused" and row["dtype_after"]:
        row["reason"] += ": " + _refusal_text(shell, ns, name, row["refusals"])
    if row["status"] != "refused" and row["warning"]:
        row["reason"] = "; ".join(filter(None, [row["warning"], row["reason"]]))
    row["detail"] = f"{kind.__name__} → {row['dtype_after']} array" if row["dtype_after"] else kind.__name__
    return row


def _pack_refusal(shell, ns, name, options):
    row = _pack_row(shell, ns, name, options, dry_run=True)
    shared = _shared_refusal(shell, ns, name) if row["status"] != "refused" else None
    if shared:
        return _refused(row, shared)
    if row["status"] == "dry-run" and row["refusals"] and not options["copy"]:
        return _refused(row, "other references keep the original alive (add --copy to pack a "
                             "copy anyway): " + _refusal_text(shell, ns, name, row["refusals"]))
    return row if row["status"] == "refused" else None


def _pack(shell, ns, name, options, progress):
    return _pack_row(shell, ns, name, options, options["dry_run"])


# spill ------------------------------------------------------------------------

# Files spilled by this process, removed at exit (and each when its memmap goes).
_spilled = set()
# Spill files and directories carry the host and pid of the kernel that made
# them, so that those of a kernel killed without cleaning up can be found.
SPILL_PREFIX = "memtamer-spill-"


def _spill_owner():
    return f"{socket.gethostname()}-{os.getpid()}"


def _remove_spill(path):
    _spilled.discard(path)
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


@atexit.register
def _remove_all_spills():
    for path in list(_spilled):
        _remove_spill(path)
    shutil.rmtree(_default_spill_dir(create=False), ignore_errors=True)


def _on_tmpfs(path):
    """True when path lives in RAM (tmpfs), where spilling would free nothing."""
    try:
        with open("/proc/self/mounts") as mounts:
            best, fstype = "", None
            real = os.path.realpath(path)
            for line in mounts:
                fields = line.split()
                mount = fields[1].replace("\\040", " ")
                if (real == mount or real.startswith(mount.rstrip("/") + "/")) and len(mount) >= len(best):
                    best, fstype = mount, fields[2]
            return fstype in ("tmpfs", "ramfs")
    except OSError:
        return False


def _spill_root():
    """$MEMTAMER_SPILL_DIR, else the temp dir (unless it is in RAM), else
    ~/.cache/memtamer."""
    root = os.environ.get("MEMTAMER_SPILL_DIR")
    if not root:
        root = tempfile.gettempdir()
        if _on_tmpfs(root):
            root = os.path.join(os.path.expanduser("~"), ".cache", "memtamer")
    return os.path.expanduser(root)


def _default_spill_dir(create=True):
    """One directory per kernel process under the spill root."""
    path = os.path.join(_spill_root(), SPILL_PREFIX + _spill_owner())
    if create:
        os.makedirs(path, mode=0o700, exist_ok=True)
    return path


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


def _spill_refusal(shell, ns, name, options):
    import numpy as np

    value = ns[name]
    if not _is_ndarray(value):
        raise UsageError(f"%shrink spill: {name} is a {type(value).__name__}; spill takes numpy "
                         f"arrays (try %shrink compress for other objects)")
    if isinstance(value, np.memmap):
        raise UsageError(f"%shrink spill: {name} is already a memory-mapped file")
    if value.dtype.hasobject:
        raise UsageError(f"%shrink spill: {name} holds Python objects, which a file cannot "
                         f"map (try %shrink compress)")
    row = {"bytes_before": value.nbytes, "detail": "→ np.memmap"}
    dense = value.flags.c_contiguous or value.flags.f_contiguous
    del value
    if row["bytes_before"] == 0:
        return _refused(row, "it is empty: nothing to spill")
    refused = _held_refusal(shell, ns, name, options, "spilling it")
    if refused or (not dense and not options["copy"]):
        return _refused(row, refused or "it is not contiguous (add --copy to spill a contiguous copy)")
    return None


def _spill(shell, ns, name, options, progress):
    import numpy as np

    row = {"bytes_before": ns[name].nbytes, "bytes_after": 0, "reason": None,
           "detail": "→ np.memmap"}
    if options["dry_run"]:
        return dict(row, status="dry-run")
    directory = options["dir"] or _default_spill_dir()
    if options["dir"]:
        os.makedirs(directory, exist_ok=True)
        remove_stale_spills(directory)
    path = os.path.join(directory, f"{SPILL_PREFIX}{_spill_owner()}-{name}-{uuid.uuid4().hex[:12]}.raw")
    array = ns[name] if ns[name].flags.c_contiguous or ns[name].flags.f_contiguous else \
        np.ascontiguousarray(ns[name])
    order = "F" if array.flags.f_contiguous and not array.flags.c_contiguous else "C"
    # A read-only array stays read-only: its file is mapped read-only.
    mode = "r+" if array.flags.writeable else "r"
    try:
        _core.spill_write(array, path, progress=progress)
        mapped = np.memmap(path, dtype=array.dtype, mode=mode, shape=array.shape, order=order)
    except BaseException:
        _remove_spill(path)
        raise
    del array
    _spilled.add(path)
    weakref.finalize(mapped, _remove_spill, path)
    ns[name] = mapped
    return dict(row, status="done", detail=f"→ np.memmap {path}")


# del ---------------------------------------------------------------------------

class _Purge:
    """Removes IPython's cached references to one object (output cache
    entries, _ __ ___ _N and their mirrors in the hidden namespace and the
    display hook, the last execution result, sys.last_*, the names bound to
    it in the namespaces %run keeps), remembering them so that undo() puts
    back exactly what was there (for --dry-run)."""

    def __init__(self, shell, ns):
        self.shell, self.ns = shell, ns
        self.output = getattr(getattr(shell, "history_manager", None), "output_hist", None)
        self.hidden = getattr(shell, "user_ns_hidden", None)
        self.displayhook = getattr(shell, "displayhook", None)
        self.saved_output = None
        self.undo_steps = []

    def _pop(self, mapping, key):
        if mapping is not None and key in mapping:
            value = mapping.pop(key)
            self.undo_steps.append(lambda: mapping.__setitem__(key, value))
            return value
        return None

    def _clear_attribute(self, owner, attribute):
        value = getattr(owner, attribute)
        self.undo_steps.append(lambda: setattr(owner, attribute, value))
        setattr(owner, attribute, None)

    def remove(self, caches, obj=None):
        """Removes the holders caches (the ledger's dicts, of CACHE_KINDS)."""
        removed = []
        for holder in caches:
            kind = holder["kind"]
            if kind == "run_namespace":
                module = getattr(self.shell, "_main_mod_cache", {}).get(holder["path"])
                namespace = getattr(module, "__dict__", {})
                for key in [k for k, v in namespace.items() if v is obj]:
                    self._pop(namespace, key)
            elif kind == "output_cache":
                if self.output is None:
                    continue
                if self.saved_output is None:
                    self.saved_output = list(self.output.items())  # undo restores it, in order
                removed.append(self.output.pop(holder["out_index"], None))
            elif kind == "exception":
                for attribute in holder["sys_attributes"]:
                    if getattr(sys, attribute, None) is not None:
                        self._clear_attribute(sys, attribute)
            else:
                removed.append(self._pop(self.ns, holder["key"]))
                self._pop(self.hidden, holder["key"])
        # The display hook and the last result keep references outside any dict.
        for value in removed:
            for attribute in ("_", "__", "___"):
                if value is not None and getattr(self.displayhook, attribute, None) is value:
                    self._clear_attribute(self.displayhook, attribute)
            last = getattr(self.shell, "last_execution_result", None)
            if value is not None and getattr(last, "result", None) is value:
                self._clear_attribute(last, "result")

    def remove_output(self, number):
        """Removes Out[number] and the output cache's names that show it."""
        value = self.output.get(number) if self.output is not None else None
        names = [key for key in (f"_{number}", "_", "__", "___")
                 if value is not None and self.ns.get(key) is value]
        del value
        self.remove([{"kind": "output_cache", "out_index": number}] +
                    [{"kind": "output_name", "key": key} for key in names])

    def undo(self):
        for step in reversed(self.undo_steps):
            step()
        if self.saved_output is not None:
            self.output.clear()
            self.output.update(self.saved_output)

    def forget(self):
        """Drops what undo() would put back: it holds the purged objects."""
        self.undo_steps.clear()
        self.saved_output = None


# IPython's own names in the user namespace: what each is, and what to do.
_OUTPUT_CACHE_ADVICE = ("%reset -f out empties the output cache; %shrink del on the variable it "
                        "shows purges these entries too")
_INPUT_HISTORY_ADVICE = "it holds only the source of your cells (%reset -f in clears it)"
_IPYTHON_NAMES = {
    "In": ("IPython's input history", _INPUT_HISTORY_ADVICE),
    "_ih": ("IPython's input history", _INPUT_HISTORY_ADVICE),
    "Out": ("IPython's output cache", _OUTPUT_CACHE_ADVICE),
    "_oh": ("IPython's output cache", _OUTPUT_CACHE_ADVICE),
    "_": ("IPython's last output (part of its output cache)", _OUTPUT_CACHE_ADVICE),
    "__": ("IPython's next-to-last output (part of its output cache)", _OUTPUT_CACHE_ADVICE),
    "___": ("IPython's third-to-last output (part of its output cache)", _OUTPUT_CACHE_ADVICE),
    "_dh": ("IPython's directory history", "it holds only directory names"),
}


def _ipython_name(name):
    """(what it is, what to do) for a name IPython itself keeps, or None."""
    if name in _IPYTHON_NAMES:
        return _IPYTHON_NAMES[name]
    if re.fullmatch(r"_\d+", name):
        return (f"IPython's output cache entry Out[{name[1:]}]", _OUTPUT_CACHE_ADVICE)
    if re.fullmatch(r"_i(\d+|i{0,2})", name):
        return ("an entry of IPython's input history", _INPUT_HISTORY_ADVICE)
    return None


def _delete_refusal(shell, ns, name, options):
    own = _ipython_name(name) if shell is not None else None
    if own is not None:
        raise UsageError(f"%shrink del: {name} is {own[0]}, not a variable of yours: {own[1]}")
    if variable(shell, ns, name) is None:
        raise UsageError(f"%shrink del: {name} is not a variable memtamer can walk "
                         "(a module, function or class); use del")
    return None


def _delete(shell, ns, name, options, progress):
    """del NAME, and IPython's cached references to its object, so that the
    memory is really freed; then collect and give freed heap back to the OS.
    Other user variables that hold the object are named and left alone."""
    together = options["together"]
    entry = variable(shell, ns, name)
    others = [h["label"] for h in entry["holders"]
              if h["kind"] in NAME_KINDS and h["key"] not in together]
    caches = [] if others else [h for h in entry["holders"] if h["kind"] in CACHE_KINDS]
    purge = _Purge(shell, ns)
    purge.remove(caches, ns[name])
    try:
        # What del frees once the caches are gone: measured, not guessed.
        predicted = variable(shell, ns, name)["exclusive"] if caches else entry["exclusive"]
    finally:
        if options["dry_run"]:
            purge.undo()
    notes = []
    if caches:
        notes.append("purged " + ", ".join(h["label"] for h in caches))
    if others:
        notes.append(f"{', '.join(others)} still hold{'s' if len(others) == 1 else ''} it, "
                     "so it stays in memory (name them too to free it)")
    if any(h["kind"] == "unnamed" for h in entry["holders"]):
        notes.append("a reference outside the namespace may keep it alive")
    # The bytes column says what stays in memory: what the variable held
    # minus what del frees.
    row = {"status": "dry-run" if options["dry_run"] else "done",
           "bytes_before": entry["bytes"],
           "bytes_after": entry["bytes"] - predicted if predicted is not None else None,
           "predicted": predicted, "purged": [h["label"] for h in caches], "still_held_by": others,
           "detail": f"frees {format_size(predicted)} (predicted)" if predicted is not None
           else "frees ? (the walk ran out of time)",
           "reason": "; ".join(notes)}
    if options["dry_run"]:
        return row
    # The trim must come after the last reference goes, or the freed pages
    # stay in the heap: the purge's undo state holds the object too.
    purge.forget()
    del ns[name]
    gc.collect()
    _core.trim()
    return row


# action -> (the check run for every name first, the action, the options it
# takes beyond dry_run)
ACTIONS = {
    "del": (_delete_refusal, _delete, set()),
    "downcast": (_downcast_refusal, _downcast, {"to", "rtol", "narrow", "copy"}),
    "compress": (_compress_refusal, _compress, {"codec", "level", "copy"}),
    "restore": (_restore_refusal, _restore, set()),
    "pack": (_pack_refusal, _pack, {"narrow", "copy"}),
    "spill": (_spill_refusal, _spill, {"dir", "copy"}),
}
COMMON_OPTIONS = {"dry_run"}
# None: _core.shrink_options's default.
DEFAULTS = {"to": "auto", "rtol": None, "narrow": False, "codec": None, "level": None,
            "dir": None, "copy": False, "dry_run": False}


def _options(action, given):
    if action not in ACTIONS:
        raise UsageError(f"%shrink: unknown action {action!r}; use one of {', '.join(ACTIONS)}")
    allowed = ACTIONS[action][2] | COMMON_OPTIONS
    for key, value in given.items():
        if key not in DEFAULTS:
            raise UsageError(f"%shrink: unknown option {key!r}; options are {', '.join(sorted(DEFAULTS))}")
        if key not in allowed and value is not None and value != DEFAULTS[key]:
            users = [a for a, (_, _, opts) in ACTIONS.items() if key in opts]
            raise UsageError(f"%shrink {action}: --{key.replace('_', '-')} applies to "
                             f"{' and '.join(users) or 'no action'}, not {action}")
    options = dict(DEFAULTS)
    options.update({k: v for k, v in given.items() if v is not None})
    try:
        options.update(_core.shrink_options(codec=options["codec"], level=options["level"],
                                            rtol=options["rtol"]))
    except (TypeError, ValueError) as exc:
        raise UsageError(f"%shrink {action}: {exc}") from None
    if options["dir"]:
        options["dir"] = os.path.expanduser(options["dir"])
    return options


def _release_frames(exc):
    """IPython keeps the error it shows in sys.last_value/last_traceback; the
    finished frames of ours in its traceback hold the user's objects in their
    locals, which would keep them alive after del.  Clears those frames (of
    the error and of the errors chained to it)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        traceback.clear_frames(exc.__traceback__)
        exc = exc.__cause__ or exc.__context__


def _error_row(name, exc):
    return {"status": "error", "bytes_before": None, "bytes_after": None, "detail": "",
            "reason": f"{type(exc).__name__}: {exc}; {name} is unchanged"}


def _measured(call, shell, name, label):
    """call(progress) inside a measured window: its row (None when a check
    passes) gets the window's figures; errors become rows."""
    progress = Progress(label, shell)
    _core.shrink_window_begin()
    try:
        row = call(progress)
    except (UsageError, KeyboardInterrupt):
        raise
    except Exception as exc:  # noqa: BLE001 - reported; the variable is unchanged
        row = _error_row(name, exc)
    finally:
        window = _core.shrink_window_end()
        progress.close()
    if row is not None:
        row.update(window)
        peak, start = window.get("peak_rss"), window.get("rss_before")
        # The window starts at its RSS, so its peak cannot be lower; Linux's
        # per-thread RSS counters can lag a few pages behind.
        row["peak_increment"] = max(0, peak - start) if peak is not None and start is not None else None
    return row


def _run(shell, ns, action, names, given):
    options = _options(action, given)
    if not names:
        raise UsageError(f"%shrink {action}: name at least one variable")
    missing = [n for n in names if n not in ns]
    if missing:
        raise UsageError(f"%shrink {action}: no variable named {', '.join(missing)} "
                         "in the user namespace")
    check, function, _ = ACTIONS[action]
    options["together"] = frozenset(names)  # del: holders among these are going too
    names = list(dict.fromkeys(names))
    # Every name is checked before any changes: one refusal leaves all as they are.
    refused = {}
    for name in names:
        row = _measured(lambda progress: check(shell, ns, name, options), shell, name,
                        f"check {name}")
        if row is not None:
            refused[name] = row
    rows = {}
    for name in names:
        if name in refused:
            row = refused[name]
        elif refused and not options["dry_run"]:
            row = {"status": "refused", "bytes_before": None, "bytes_after": None, "detail": "",
                   "reason": f"left unchanged: {', '.join(refused)} cannot be shrunk, and "
                             f"%shrink {action} changes all the names it is given or none"}
        else:
            row = _measured(lambda progress: function(shell, ns, name, options, progress), shell,
                            name, f"{action} {name}")
        if row["status"] == "refused":  # the bytes column says what happened: nothing
            row["bytes_after"] = row.get("bytes_before")
        rows[name] = dict(row, name=name, action=action)
        publish("shrink", {key: rows[name].get(key) for key in SHRINK_EVENT_FIELDS})
    # Changed in place: no cell rebinds them, so the ledger would keep old sizes.
    _core.ledger_rewalk([name for name, row in rows.items() if row.get("in_place")])
    return rows


def run(shell, ns, action, names, given):
    """Runs action on each name; returns {name: row}.  Every name must exist,
    every option must fit the action, and no name may be refused, before
    anything changes."""
    try:
        return _run(shell, ns, action, names, given)
    except BaseException as exc:
        _release_frames(exc)
        raise


def _namespace(depth=2):
    try:
        from IPython import get_ipython

        shell = get_ipython()
    except ImportError:
        shell = None
    if shell is not None:
        return shell, shell.user_ns
    return None, sys._getframe(depth).f_globals


def shrink(action, *names, **options):
    """Python API of %shrink: shrink('del', 'x'), shrink('downcast', 'x', to='float16', rtol=1e-3),
    shrink('compress', 'a', 'b', codec='zstd', level=5), shrink('restore', 'a'),
    shrink('pack', 'xs'), shrink('spill', 'big', dir='/scratch'); dry_run=True
    on every action, copy=True on all but del and restore.  Returns {name: result dict}."""
    shell, ns = _namespace()
    return run(shell, ns, action, names, options)


# ---- transparent restore ----------------------------------------------------

class _NamesRead(ast.NodeVisitor):
    """Names code reads when it runs: function bodies run later (and a proxy
    restores itself then), so only their decorators and defaults count."""

    def __init__(self):
        self.found = set()

    def visit_Name(self, node):
        if isinstance(node.ctx, ast.Load):
            self.found.add(node.id)

    def visit_AugAssign(self, node):
        if isinstance(node.target, ast.Name):
            self.found.add(node.target.id)
        self.generic_visit(node)

    def visit_FunctionDef(self, node):
        for child in (*node.decorator_list, node.args, node.returns):
            if child is not None:
                self.visit(child)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Lambda(self, node):
        self.visit(node.args)


def names_read(shell, raw_cell):
    """Names a cell's code reads as it runs (loads, and augmented assignments)."""
    try:
        source = shell.transform_cell(raw_cell) if shell is not None else raw_cell
        tree = ast.parse(source)
    except (SyntaxError, ValueError, TypeError):
        return set()
    visitor = _NamesRead()
    visitor.visit(tree)
    return visitor.found


# Names that compress bound to a proxy -> (its compressed bytes, the deep
# size compress measured, which its restore reports: the object comes back
# bit for bit).  Cells are parsed for the names they read only while one of
# them still is: most sessions never compress.  Paths a cell's text does not
# show (globals(), eval, threads, magics) meet the proxy itself, which
# restores itself on any use.
_compressed_names = {}


class StopCell(ast.NodeTransformer):
    """An AST transformer that turns the next cell into `raise
    KeyboardInterrupt(message)` once a message is set: a Ctrl-C during the
    restore before a cell stops that cell cleanly, and it is still measured."""

    def __init__(self):
        self.message = None

    def visit_Module(self, node):
        if self.message is not None:
            message, self.message = self.message, None
            stop = f"raise __import__('builtins').KeyboardInterrupt({message!r})"
            node.body = ast.parse(stop).body
        return node


def auto_restore(shell, raw_cell):
    """Restores every compressed variable the cell reads; returns the rows."""
    ns = shell.user_ns
    for gone in [n for n in _compressed_names if not isinstance(ns.get(n), Compressed)]:
        del _compressed_names[gone]
    if not _compressed_names:
        return {}
    wanted = [n for n in sorted(names_read(shell, raw_cell)) if n in _compressed_names]
    if not wanted:
        return {}
    try:
        return run(shell, ns, "restore", wanted, {})
    except KeyboardInterrupt:
        still = [n for n in wanted if isinstance(ns.get(n), Compressed)]
        done = [n for n in wanted if n not in still]
        parts = [f"{', '.join(done)} restored"] if done else []
        if still:
            parts.append(f"{', '.join(still)} still compressed, intact (any use restores "
                         f"{'it' if len(still) == 1 else 'them'}, or %shrink restore "
                         f"{' '.join(still)})")
        raise KeyboardInterrupt("memtamer: Ctrl-C while restoring the compressed variables "
                                "this cell reads, so the cell did not run; "
                                + "; ".join(parts)) from None


def restore_all(shell):
    """Restores every compressed variable in the shell's namespace (at unload)."""
    ns = shell.user_ns
    names = [n for n, value in ns.items() if isinstance(value, Compressed)]
    return run(shell, ns, "restore", names, {}) if names else {}


def restore_notice(rows, lead="this cell reads compressed variables; restored"):
    parts = []
    for name, row in rows.items():
        if row["status"] == "done":
            parts.append(f"{name} ({format_size(row['bytes_before'])} → "
                         f"{format_size(row['bytes_after'])}, {row['seconds']:.2f} s)")
        else:
            parts.append(f"{name} NOT restored: {row['reason']}")
    return f"memtamer: {lead} " + ", ".join(parts)
