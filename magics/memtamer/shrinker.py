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
import gc
import os
import re
import shutil
import sys
import tempfile
import time
import uuid
import weakref

from IPython.core.error import UsageError

from . import _core
from .sizes import format_size
from .telemetry import publish

# What watchers are told of each %shrink action (names only when allowed).
SHRINK_EVENT_FIELDS = ("name", "action", "status", "bytes_before", "bytes_after", "reason")
DEFAULT_RTOL = 1e-3  # floats may move by at most 0.1% of their value
DEFAULT_CODEC = "lz4"
DEFAULT_LEVEL = 5
DRY_RUN_SAMPLE = 16 * 1024**2  # bytes per frame compressed to estimate a ratio
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


def _compress(shell, ns, name, options, progress):
    if isinstance(ns[name], Compressed):
        raise UsageError(f"%shrink compress: {name} is already compressed "
                         f"(%shrink restore {name} gives it back)")
    detail = f"{options['codec']} level {options['level']}"
    refused = _held_refusal(shell, ns, name, options, "compressing it")
    if options["dry_run"] or refused:
        nbytes, estimate = _core_call(_core.compress_estimate, ns[name], codec=options["codec"],
                                      level=options["level"], sample=DRY_RUN_SAMPLE)
        return {"status": "refused" if refused else "dry-run", "bytes_before": nbytes,
                "bytes_after": estimate, "reason": refused,
                "detail": detail + (f", ratio ≈ {nbytes / estimate:.1f}" if estimate else "")}
    proxy = _core_call(_core.compress, ns[name], name, codec=options["codec"],
                       level=options["level"], progress=progress)
    ns[name] = proxy
    _compressed_names.add(name)
    ratio = proxy.nbytes / proxy.cbytes if proxy.cbytes else float("inf")
    return {"status": "done", "bytes_before": proxy.nbytes, "bytes_after": proxy.cbytes,
            "detail": f"{proxy.what}: {detail}, ratio {ratio:.1f}", "reason": None}


def _restore(shell, ns, name, options, progress):
    proxy = ns[name]
    if not isinstance(proxy, Compressed):
        raise UsageError(f"%shrink restore: {name} is not compressed (it is a "
                         f"{type(proxy).__name__})")
    row = {"bytes_before": proxy.cbytes, "bytes_after": proxy.nbytes, "reason": None,
           "detail": f"{proxy.what} from {proxy.codec}"}
    if options["dry_run"]:
        return dict(row, status="dry-run")
    ns[name] = proxy.restore(progress=progress)
    return dict(row, status="done")


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
        publish("shrink", {key: row.get(key) for key in SHRINK_EVENT_FIELDS})
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

def names_read(shell, raw_cell):
    """Names a cell's code reads (loads, and augmented assignments)."""
    try:
        source = shell.transform_cell(raw_cell) if shell is not None else raw_cell
        tree = ast.parse(source)
    except (SyntaxError, ValueError, TypeError):
        return set()
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
            found.add(node.id)
        elif isinstance(node, ast.AugAssign) and isinstance(node.target, ast.Name):
            found.add(node.target.id)
    return found


# Names that compress bound to a proxy.  Cells are parsed for the names
# they read only while one of them still is: most sessions never compress.
# (A proxy cannot reach another name without a cell reading, so restoring, it.)
_compressed_names = set()


def auto_restore(shell, raw_cell):
    """Restores every compressed variable the cell reads; returns the rows."""
    ns = shell.user_ns
    _compressed_names.intersection_update(
        [n for n in _compressed_names if isinstance(ns.get(n), Compressed)])
    if not _compressed_names:
        return {}
    wanted = [n for n in sorted(names_read(shell, raw_cell)) if n in _compressed_names]
    if not wanted:
        return {}
    return run(shell, ns, "restore", wanted, {})


def restore_notice(rows):
    parts = []
    for name, row in rows.items():
        if row["status"] == "done":
            parts.append(f"{name} ({format_size(row['bytes_before'])} → "
                         f"{format_size(row['bytes_after'])}, {row['seconds']:.2f} s)")
        else:
            parts.append(f"{name} NOT restored: {row['reason']}")
    return "memtamer: this cell reads compressed variables; restored " + ", ".join(parts)
