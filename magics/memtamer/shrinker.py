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
import sys
import tempfile
import time
import types
import uuid
import weakref

from IPython.core.error import UsageError

from . import _core
from .sizes import format_size

DEFAULT_RTOL = 1e-3  # floats may move by at most 0.1% of their value
DEFAULT_CODEC = "lz4"
DEFAULT_LEVEL = 5
DRY_RUN_SAMPLE = 16 * 1024**2  # bytes per frame compressed to estimate a ratio
SAMPLE_ITEMS = 100_000  # items of a container pickled to estimate a ratio
MIN_COMPRESS_BYTES = 1024**2  # below this, compress saves too little to be worth a proxy
MIN_COMPRESS_RATIO = 1.25  # deep size / compressed size compress asks for
RESTORE_WALK_SECONDS = 2.0  # sizing what a restore gave back
CATEGORY_MAX_FRACTION = 0.5  # object columns with fewer distinct strings become category
PROGRESS_AFTER = 1.0  # seconds before an action shows progress

Compressed = _core.Compressed


# ---- who holds an object ------------------------------------------------

UNNAMED_HOLDER = "<unnamed reference>"
# Holders that are IPython's caches (or the last exception), which `del` may purge.
_CACHE_HOLDER = re.compile(r"^(Out\[\d+\]|_|__|___|_\d+|sys\.last_\w+)$")


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


def _is_view_of(value, obj):
    """value shows obj's memory: a numpy view (its .base chain) or a memoryview."""
    if isinstance(value, memoryview):
        return value.obj is obj
    base = getattr(value, "base", None) if hasattr(value, "__array_interface__") else None
    while base is not None:
        if base is obj:
            return True
        base = getattr(base, "base", None)
    return False


def holders(shell, ns, name):
    """Who else keeps ns[name]'s memory alive, in words people can act on."""
    entry = variable(shell, ns, name)
    if entry is None:
        return []
    described = []
    for holder in entry["holders"]:
        if holder in ns and _is_view_of(ns[holder], ns[name]):
            described.append(f"{holder} is a view of it")
        elif holder == UNNAMED_HOLDER:
            described.append("a reference outside the namespace")
        elif _CACHE_HOLDER.match(holder) and not holder.startswith(("Out[", "sys.")):
            described.append(f"IPython's output cache {holder}")
        else:
            described.append(holder)
    return described


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
# Each takes (shell, ns, name, options, progress) and returns a row dict with
# at least status ('done' | 'dry-run' | 'refused'), bytes_before, bytes_after,
# detail and reason.  ACTIONS maps an action to (function, options it takes).

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


def _downcast(shell, ns, name, options, progress):
    kind = type(ns[name])
    if _pandas_kind(ns[name]):
        return _downcast_pandas(shell, ns, name, options)
    if not _is_ndarray(ns[name]):
        hint = " (try %shrink pack)" if kind in (list, tuple) else ""
        raise UsageError(f"%shrink downcast: {name} is a {kind.__name__}; downcast takes numpy "
                         f"arrays and pandas DataFrames/Series{hint}")
    row = _core_call(_core.downcast, ns, name, to=options["to"], rtol=options["rtol"],
                     copy=options["copy"], dry_run=options["dry_run"], progress=progress)
    change = f"{row['dtype_before']} → {row['dtype_after']}" if row["dtype_after"] else row["dtype_before"]
    if row["status"] == "refused" and row["dtype_after"] is not None:
        row["reason"] = f"{row['reason']}: {_refusal_text(shell, ns, name, row['refusals'])}"
    if row["status"] == "dry-run" and row["refusals"]:
        row["reason"] = ("would need --copy: " if not options["copy"] else "would copy: ") + \
            _refusal_text(shell, ns, name, row["refusals"])
    row["detail"] = change + (" in place" if row["in_place"] else
                              " (copy)" if row["status"] in ("done", "dry-run") else "")
    return row


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
    before = int(original.memory_usage(index=True, deep=True).sum())
    columns, changes, notes = [], [], []
    for position in range(frame.shape[1]):
        column = frame.iloc[:, position]
        label = frame.columns[position]
        dtype = column.dtype
        if isinstance(dtype, np.dtype) and dtype.kind in "fciu":
            to = options["to"]
            if dtype.kind in "iu" and to in ("float32", "float16"):
                to = "auto"
            plan = _core_call(_core.downcast_plan, column.to_numpy(), to=to, rtol=options["rtol"])
            if plan["target"]:
                column = column.astype(plan["target"])
                changes.append(f"{label}: {dtype} → {plan['target']}")
            elif dtype.kind in "fc":
                notes.append(f"{label}: {plan['reason']}")
        elif (dtype == object or pd.api.types.is_string_dtype(dtype)) and len(column) and \
                not isinstance(dtype, pd.CategoricalDtype) and \
                pd.api.types.infer_dtype(column, skipna=True) == "string" and \
                column.nunique(dropna=True) <= CATEGORY_MAX_FRACTION * len(column):
            column = column.astype("category")
            changes.append(f"{label}: {dtype} → category")
        columns.append(column)
    row = {"detail": "; ".join(changes) or "no column could shrink",
           "reason": "; ".join(notes) or None, "in_place": False, "bytes_before": before}
    if not changes:
        row.update(status="refused", bytes_after=before,
                   reason=row["reason"] or "no numeric or low-cardinality string column to shrink")
        return row
    new = pd.concat(columns, axis=1)
    new.columns = frame.columns
    new = new.iloc[:, 0].rename(original.name) if series else new
    new.attrs = dict(original.attrs)
    row["bytes_after"] = int(new.memory_usage(index=True, deep=True).sum())
    if options["dry_run"]:
        return dict(row, status="dry-run")
    if held and not options["copy"]:
        return dict(row, status="refused", bytes_after=before,
                    reason="other references keep the original alive (add --copy): " + held_text)
    ns[name] = new
    return dict(row, status="done")


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
    atoms = (str, bytes, int, float, complex, bool, type(None))
    entry = next(e for e in entries if e["name"] == name)
    inside = {e["name"] for e in entries if e["name"] != name and name in e["holders"]}
    inside |= {s["with"] for s in entry["shares"] if s["variable"] and s["holds"]}
    return sorted(n for n in inside if not isinstance(ns.get(n), atoms))


def _compress_plan(shell, ns, name, options):
    """The row a compress of ns[name] starts from: its deep size and the
    estimated compressed size, with status 'refused' and the reason when
    it must not be compressed.  Changes nothing; cheap (a sample, no full
    pickle).  Checks that count references come first."""
    if isinstance(ns[name], Compressed):
        raise UsageError(f"%shrink compress: {name} is already compressed "
                         f"(%shrink restore {name} gives it back)")
    detail = f"{options['codec']} level {options['level']}"
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
        _, estimate = _core.compress_estimate(sample, codec=options["codec"],
                                              level=options["level"], sample=DRY_RUN_SAMPLE)
    except ValueError as exc:  # pickled by reference (see codec.c)
        return dict(row, reason=str(exc))
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
                detail=f"{info['what']}: {info['codec']} level {info['level']}, "
                       f"ratio {row['bytes_before'] / max(after, 1):.1f}")


def _restore(shell, ns, name, options, progress):
    if not isinstance(ns[name], Compressed):
        raise UsageError(f"%shrink restore: {name} is not compressed (it is a "
                         f"{type(ns[name]).__name__})")
    info = _core.compressed_info(ns[name])
    # A proxy that already restored itself (a name %timeit put back) holds the object.
    row = {"bytes_before": _core.deep_size(ns[name], RESTORE_WALK_SECONDS)[0],
           "bytes_after": info["nbytes"],
           "reason": None, "detail": f"{info['what']} from {info['codec']}"}
    if options["dry_run"]:
        return dict(row, status="dry-run")
    ns[name] = _core.restore(ns[name], progress=progress)
    cbytes, deep = _compressed_names.pop(name, (None, None))
    if cbytes != info["cbytes"]:  # not compressed by %shrink here: measure it
        deep, complete = _core.deep_size(ns[name], RESTORE_WALK_SECONDS)
        if not complete:
            row["reason"] = f"at least {format_size(deep)} (the walk stopped)"
    return dict(row, status="done", bytes_after=deep)


def _pack(shell, ns, name, options, progress):
    kind = type(ns[name])
    row = _core_call(_core.pack, ns, name, copy=options["copy"], dry_run=options["dry_run"])
    if row["refusals"] and row["status"] == "refused" and row["dtype_after"]:
        row["reason"] += ": " + _refusal_text(shell, ns, name, row["refusals"])
    row["detail"] = f"{kind.__name__} → {row['dtype_after']} array" if row["dtype_after"] else kind.__name__
    return row


# Files spilled by this process, removed at exit (and each when its memmap goes).
_spilled = set()


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


def _default_spill_dir(create=True):
    """$MEMTAMER_SPILL_DIR, else the temp dir (unless it is in RAM), else
    ~/.cache/memtamer; one directory per kernel process."""
    root = os.environ.get("MEMTAMER_SPILL_DIR")
    if not root:
        root = tempfile.gettempdir()
        if _on_tmpfs(root):
            root = os.path.join(os.path.expanduser("~"), ".cache", "memtamer")
    path = os.path.join(root, f"memtamer-spill-{os.getpid()}")
    if create:
        os.makedirs(path, mode=0o700, exist_ok=True)
    return path


def _spill(shell, ns, name, options, progress):
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
    nbytes, dense = value.nbytes, value.flags.c_contiguous or value.flags.f_contiguous
    del value
    row = {"bytes_before": nbytes, "bytes_after": 0, "reason": None, "detail": "→ np.memmap"}
    if nbytes == 0:
        return dict(row, status="refused", bytes_after=0, reason="it is empty: nothing to spill")
    refused = _held_refusal(shell, ns, name, options, "spilling it")
    if refused or (not dense and not options["copy"]):
        return dict(row, status="refused", bytes_after=nbytes,
                    reason=refused or "it is not contiguous (add --copy to spill a contiguous copy)")
    if options["dry_run"]:
        return dict(row, status="dry-run")
    directory = options["dir"] or _default_spill_dir()
    if options["dir"]:
        os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, f"{name}-{uuid.uuid4().hex[:12]}.raw")
    array = ns[name] if dense else np.ascontiguousarray(ns[name])
    order = "F" if array.flags.f_contiguous and not array.flags.c_contiguous else "C"
    try:
        _core.spill_write(array, path, progress=progress)
        mapped = np.memmap(path, dtype=array.dtype, mode="r+", shape=array.shape, order=order)
    except BaseException:
        _remove_spill(path)
        raise
    del array
    _spilled.add(path)
    weakref.finalize(mapped, _remove_spill, path)
    ns[name] = mapped
    return dict(row, status="done", detail=f"→ np.memmap {path}")


# action -> (function, the options it takes beyond copy/dry_run)
# ---- del ---------------------------------------------------------------------

class _Purge:
    """Removes IPython's cached references to one object (output cache
    entries, _ __ ___ _N and their mirrors in the hidden namespace and the
    display hook, the last execution result, sys.last_*), remembering them
    so that undo() puts back exactly what was there (for --dry-run)."""

    LAST_EXCEPTION = ("last_type", "last_value", "last_traceback", "last_exc")

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

    def remove(self, caches):
        removed = []
        for holder in caches:
            if holder.startswith("Out["):
                if self.output is None:
                    continue
                if self.saved_output is None:
                    self.saved_output = list(self.output.items())  # undo restores it, in order
                removed.append(self.output.pop(int(holder[4:-1]), None))
            elif holder.startswith("sys.last_"):
                for attribute in self.LAST_EXCEPTION:
                    if getattr(sys, attribute, None) is not None:
                        self._clear_attribute(sys, attribute)
            else:
                removed.append(self._pop(self.ns, holder))
                self._pop(self.hidden, holder)
        # The display hook and the last result keep references outside any dict.
        for value in removed:
            for attribute in ("_", "__", "___"):
                if value is not None and getattr(self.displayhook, attribute, None) is value:
                    self._clear_attribute(self.displayhook, attribute)
            last = getattr(self.shell, "last_execution_result", None)
            if value is not None and getattr(last, "result", None) is value:
                self._clear_attribute(last, "result")

    def undo(self):
        for step in reversed(self.undo_steps):
            step()
        if self.saved_output is not None:
            self.output.clear()
            self.output.update(self.saved_output)


def _delete(shell, ns, name, options, progress):
    """del NAME, and IPython's cached references to its object, so that the
    memory is really freed; then collect and give freed heap back to the OS.
    Other user variables that hold the object are named and left alone."""
    together = options["together"]
    entry = variable(shell, ns, name)
    if entry is None:
        raise UsageError(f"%shrink del: {name} is not a variable memtamer can walk "
                         "(a module, function or class); use del")
    others = [h for h in entry["holders"]
              if h not in together and not _CACHE_HOLDER.match(h) and h != UNNAMED_HOLDER]
    caches = [] if others else [h for h in entry["holders"] if _CACHE_HOLDER.match(h)]
    purge = _Purge(shell, ns)
    purge.remove(caches)
    try:
        # What del frees once the caches are gone: measured, not guessed.
        predicted = variable(shell, ns, name)["exclusive"] if caches else entry["exclusive"]
    finally:
        if options["dry_run"]:
            purge.undo()
    notes = []
    if caches:
        notes.append("purged " + ", ".join(caches))
    if others:
        notes.append(f"{', '.join(others)} still hold{'s' if len(others) == 1 else ''} it, "
                     "so it stays in memory (name them too to free it)")
    if UNNAMED_HOLDER in entry["holders"]:
        notes.append("a reference outside the namespace may keep it alive")
    row = {"status": "dry-run" if options["dry_run"] else "done",
           "bytes_before": entry["bytes"], "bytes_after": entry["bytes"] if options["dry_run"] else 0,
           "predicted": predicted, "purged": caches, "still_held_by": others,
           "detail": f"frees {format_size(predicted)} (predicted)" if predicted is not None
           else "frees ? (the walk ran out of time)",
           "reason": "; ".join(notes)}
    if options["dry_run"]:
        return row
    del ns[name]
    gc.collect()
    _core.trim()
    return row


ACTIONS = {
    "del": (_delete, set()),
    "downcast": (_downcast, {"to", "rtol", "copy"}),
    "compress": (_compress, {"codec", "level", "copy"}),
    "restore": (_restore, set()),
    "pack": (_pack, {"copy"}),
    "spill": (_spill, {"dir", "copy"}),
}
COMMON_OPTIONS = {"dry_run"}
DEFAULTS = {"to": "auto", "rtol": DEFAULT_RTOL, "codec": DEFAULT_CODEC, "level": DEFAULT_LEVEL,
            "dir": None, "copy": False, "dry_run": False}


def _options(action, given):
    if action not in ACTIONS:
        raise UsageError(f"%shrink: unknown action {action!r}; use one of {', '.join(ACTIONS)}")
    allowed = ACTIONS[action][1] | COMMON_OPTIONS
    for key, value in given.items():
        if key not in DEFAULTS:
            raise UsageError(f"%shrink: unknown option {key!r}; options are {', '.join(sorted(DEFAULTS))}")
        if key not in allowed and value is not None and value != DEFAULTS[key]:
            users = [a for a, (_, opts) in ACTIONS.items() if key in opts]
            raise UsageError(f"%shrink {action}: --{key.replace('_', '-')} applies to "
                             f"{' and '.join(users) or 'no action'}, not {action}")
    options = dict(DEFAULTS)
    options.update({k: v for k, v in given.items() if v is not None})
    if action == "compress":
        codecs = _core.codecs()["codecs"].split(",")
        if options["codec"] not in codecs:
            raise UsageError(f"%shrink compress: --codec {options['codec']}: use one of {', '.join(codecs)}")
        if not isinstance(options["level"], int) or not 0 <= options["level"] <= 9:
            raise UsageError("%shrink compress: --level takes 0 (fastest) to 9 (smallest)")
    if action == "downcast" and not (isinstance(options["rtol"], (int, float)) and options["rtol"] >= 0):
        raise UsageError("%shrink downcast: --rtol takes a number >= 0, such as 1e-3")
    return options


def run(shell, ns, action, names, given):
    """Runs action on each name; returns {name: row}.  Every name must exist
    and every option must fit the action before anything changes."""
    options = _options(action, given)
    if not names:
        raise UsageError(f"%shrink {action}: name at least one variable")
    missing = [n for n in names if n not in ns]
    if missing:
        raise UsageError(f"%shrink {action}: no variable named {', '.join(missing)} "
                         "in the user namespace")
    function = ACTIONS[action][0]
    options["together"] = frozenset(names)  # del: holders among these are going too
    rows = {}
    for name in dict.fromkeys(names):
        progress = Progress(f"{action} {name}", shell)
        _core.shrink_window_begin()
        try:
            row = function(shell, ns, name, options, progress)
        except (UsageError, KeyboardInterrupt):
            raise
        except Exception as exc:  # noqa: BLE001 - reported; the variable is unchanged
            row = {"status": "error", "bytes_before": None, "bytes_after": None, "detail": "",
                   "reason": f"{type(exc).__name__}: {exc}; {name} is unchanged"}
        finally:
            window = _core.shrink_window_end()
            progress.close()
        row.update(window)
        row.update(name=name, action=action)
        peak, start = window.get("peak_rss"), window.get("rss_before")
        # The window starts at its RSS, so its peak cannot be lower; Linux's
        # per-thread RSS counters can lag a few pages behind.
        row["peak_increment"] = max(0, peak - start) if peak is not None and start is not None else None
        rows[name] = row
    # Changed in place: no cell rebinds them, so the ledger would keep old sizes.
    _core.ledger_rewalk([name for name, row in rows.items() if row.get("in_place")])
    return rows


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
