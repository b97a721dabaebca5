"""The %shrink actions on named variables (ACTIONS).  The work itself is in
C (kernelext/shrink.c, kernelext/codec.c).

Never lose data: bad input raises UsageError before anything changes; a
refusal changes nothing; a failure (MemoryError, codec error, Ctrl-C) leaves
the variable bound to exactly what it was.

Careful: no function here may keep a reference to the variable's object
while _core checks who holds it (refcounts are how it knows)."""

import functools
import gc
import itertools
import mmap
import re
import sys
import types

from IPython.core.error import UsageError

from . import _core, downcast_arrow, spill_files, spill_store
from .holders import CACHE_KINDS, NAME_KINDS, ledger, refusal_text, variable
from .purge import Purge, ipython_name
from .sizes import format_size

DRY_RUN_SAMPLE = _core.codecs()["chunk"]  # bytes per frame compressed to estimate a ratio
SAMPLE_ITEMS = 100_000  # items of a container pickled to estimate a ratio
MIN_COMPRESS_BYTES = 1024**2  # below this, compress saves too little to be worth a proxy
MIN_COMPRESS_RATIO = 1.25  # deep size / compressed size compress asks for
RESTORE_WALK_SECONDS = 2.0  # sizing what a restore gave back
CATEGORY_MAX_FRACTION = 0.5
# spill refuses an object more of which than this stays in memory once read
# back (its pickle stream: what is not an array buffer).
MAX_SPILL_IN_MEMORY = 0.5
# What an object may share with the rest of the namespace and still be
# spilled: the metadata pandas objects share with one another and with their
# modules (dtypes, offsets, names) is smaller than a page, and nobody writes
# through it; data a user shares (an array also bound to a name) is larger.
MAX_SPILL_SHARED_BYTES = mmap.PAGESIZE  # object columns with fewer distinct strings become category

Compressed = _core.Compressed
# Names that compress bound to a proxy -> (its compressed bytes, the deep
# size compress measured, which its restore reports: the object comes back
# bit for bit).  Auto-restore parses cells for the names they read only
# while one of them still is: most sessions never compress.
compressed_names = {}


# ---- the actions ----------------------------------------------------------
# Each action is a pair: a check, (shell, ns, name, options) -> a refused
# row or None, that changes nothing and runs for every name before any
# action runs; and the action itself, (shell, ns, name, options, progress)
# -> a row dict with at least status ('done' | 'dry-run' | 'refused'),
# bytes_before, bytes_after, detail and reason.  ACTIONS maps an action to
# both.

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
    if _pandas_kind(ns[name]) and not entry["shares"]:
        # pandas shares its immutable metadata (a RangeIndex, dtypes) between
        # copies; shared column data is big enough to be listed in shares.
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
        row["reason"] = f"{row['reason']}: {refusal_text(shell, ns, name, row['refusals'])}"
    if row["status"] == "dry-run" and row["refusals"]:
        row["reason"] = ("would need --copy: " if not options["copy"] else "would copy: ") + \
            refusal_text(shell, ns, name, row["refusals"])
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


def _column_notes(notes, converted, options):
    """The notes on a frame's columns, each said once and naming its columns:
    notes, [(label, text)], on columns left as they were; converted,
    [(label, plan)], what those converted kept (floats: the largest error of
    the columns of each new dtype) or risk."""
    worst = {}  # a float dtype: the plan with the largest error
    for _, plan in converted:
        if _kept(plan, options) and plan["max_rel_error"] >= \
                worst.get(plan["target"], plan)["max_rel_error"]:
            worst[plan["target"]] = plan
    columns = {}  # a note: the columns it is about
    for label, plan in converted:
        text = _kept(worst[plan["target"]], options) if plan["target"] in worst else plan["warning"]
        notes.append((label, text))
    for label, text in notes:
        if text:
            columns.setdefault(text, []).append(str(label))
    return [f"{', '.join(labels)}: {text}" for text, labels in columns.items()]


def _pandas_bytes(obj):
    """Deep memory of a DataFrame (a Series per column) or a Series (an int)."""
    usage = obj.memory_usage(index=True, deep=True)
    return int(usage.sum()) if hasattr(usage, "sum") else int(usage)


def _numeric_values(column):
    """A numpy-backed numeric column's values (no copy), or None."""
    import numpy as np

    dtype = column.dtype
    return column.to_numpy() if isinstance(dtype, np.dtype) and dtype.kind in "fciu" else None


def _arrow_number_plan(column, options):
    """(target dtype, plan) for a numeric Arrow-backed pandas column (nulls
    and chunks too: the plan reads each chunk in place), (None, why not),
    or (None, None) for other columns."""
    import pandas as pd

    arrow = getattr(column.dtype, "pyarrow_dtype", None)
    if arrow is None or getattr(column.dtype, "kind", None) not in ("f", "i", "u"):
        return None, None
    target, plan = downcast_arrow.number_plan(column.array._pa_array, options, _core_call)
    return (pd.ArrowDtype(target), plan) if target is not None else (None, plan)


def _pandas_plan(frame, options):
    """What downcast would do to each column, found without converting any
    (a dry run or a refusal costs no memory): [(position, target dtype)],
    the changes and notes in words, and the bytes the converted columns
    would save (predicted: their new element size, or category codes and
    categories)."""
    import numpy as np
    import pandas as pd

    plans, changes, notes, converted, saved = [], [], [], [], 0
    for position in range(frame.shape[1]):
        column = frame.iloc[:, position]
        label = frame.columns[position]
        dtype = column.dtype
        values = _numeric_values(column)
        arrow_target, arrow_plan = _arrow_number_plan(column, options)
        if arrow_target is not None:
            plans.append((position, arrow_target))
            changes.append(f"{label}: {dtype} → {arrow_target}")
            converted.append((label, arrow_plan))
            saved += len(column) * (dtype.pyarrow_dtype.bit_width -
                                    arrow_target.pyarrow_dtype.bit_width) // 8
        elif arrow_plan is not None:
            notes.append((label, arrow_plan))
        elif values is not None:
            to = options["to"]
            if values.dtype.kind in "iu" and to in ("float32", "float16"):
                to = "auto"
            plan = _core_call(_core.downcast_plan, values, to=to, rtol=options["rtol"],
                              narrow=options["narrow"])
            if plan["target"]:
                plans.append((position, plan["target"]))
                changes.append(f"{label}: {dtype} → {plan['target']}")
                converted.append((label, plan))
                saved += values.nbytes - len(values) * np.dtype(plan["target"]).itemsize
            else:
                notes.append((label, plan["reason"]))
        elif (dtype == object or pd.api.types.is_string_dtype(dtype)) and len(column) and \
                not isinstance(dtype, pd.CategoricalDtype) and \
                pd.api.types.infer_dtype(column, skipna=True) == "string":
            distinct = column.nunique(dropna=True)
            if distinct <= CATEGORY_MAX_FRACTION * len(column):
                plans.append((position, "category"))
                changes.append(f"{label}: {dtype} → category")
                before = int(column.memory_usage(index=False, deep=True))
                codes = len(column) * np.min_scalar_type(-max(distinct, 1)).itemsize
                saved += before - codes - before * distinct // len(column)
    return plans, changes, _column_notes(notes, converted, options), saved


def _frame_verdict(before, changes, notes, saved, options, held, name, held_text):
    """A frame's downcast row (its columns' changes and notes), and how it
    ends before anything is converted: a refusal, or the dry run's
    prediction; None when it goes ahead.  held_text() names who holds it."""
    row = {"detail": "; ".join(changes) or "no column could shrink",
           "reason": "; ".join(filter(None, notes)) or None, "in_place": False,
           "bytes_before": before}
    if not changes:
        return row, _refused(row, row["reason"] or "no numeric or low-cardinality string "
                                                   "column to shrink")
    if options["dry_run"]:
        return row, dict(row, status="dry-run", bytes_after=max(before - saved, 0))
    if held and not options["copy"]:
        return row, _refused(row, _kept_alive(held_text(), "downcast", name, "converts it"))
    return row, None


def _downcast_pandas(shell, ns, name, options):
    """Numeric columns (numpy or Arrow-backed) by the same plan as arrays,
    low-cardinality string columns to category; the frame is rebuilt from
    the converted columns (pandas keeps columns in shared blocks, so in
    place is not possible).  Nothing is converted before every check has
    passed."""
    import pandas as pd

    # Checked first: below, this function holds references of its own.
    held = [r for r in _core.inplace_check(ns, name) if r[0] == "held"]
    held_text = refusal_text(shell, ns, name, held) if held else None
    original = ns[name]
    series = isinstance(original, pd.Series)
    frame = original.to_frame() if series else original
    before = _pandas_bytes(original)
    plans, changes, notes, saved = _pandas_plan(frame, options)
    row, verdict = _frame_verdict(before, changes, notes, saved, options, held, name,
                                  lambda: held_text)
    if verdict:
        return verdict
    targets = dict(plans)
    new = pd.concat([frame.iloc[:, i].astype(targets[i]) if i in targets else frame.iloc[:, i]
                     for i in range(frame.shape[1])], axis=1)
    new.columns = frame.columns
    new = new.iloc[:, 0].rename(original.name) if series else new
    new.attrs = dict(original.attrs)
    row["bytes_after"] = _pandas_bytes(new)
    ns[name] = new
    return dict(row, status="done")


def _polars_kind(value):
    pl = sys.modules.get("polars")
    return pl is not None and isinstance(value, (pl.DataFrame, pl.Series))


def _downcast_polars(shell, ns, name, options):
    """A polars frame or series: numeric columns by the same plan as arrays
    (read in place through each chunk's Arrow view, nulls too),
    low-cardinality strings to Categorical.  Nothing is converted before every check has
    passed; the result is a new frame (polars columns are immutable)."""
    import numpy as np
    import polars as pl
    import pyarrow as pa

    held = [r for r in _core.inplace_check(ns, name) if r[0] == "held"]
    original = ns[name]
    series = isinstance(original, pl.Series)
    frame = original.to_frame() if series else original
    before = int(original.estimated_size())
    casts, changes, notes, converted, saved = {}, [], [], [], 0
    for column in frame.get_columns():
        dtype = column.dtype
        if dtype.is_numeric() and len(column):
            # Each chunk's Arrow view is polars' memory (no copy, nulls too).
            chunks = pa.chunked_array([chunk.to_arrow() for chunk in column.get_chunks()])
            target, plan = downcast_arrow.number_plan(chunks, options, _core_call)
            if target is None:
                notes.append((column.name, plan))
                continue
            target = pl.from_arrow(pa.array([], type=target)).dtype
            casts[column.name] = target
            changes.append(f"{column.name}: {dtype} → {target}")
            converted.append((column.name, plan))
            saved += len(column) * (chunks.type.bit_width // 8 - np.dtype(plan["target"]).itemsize)
        elif dtype == pl.String and len(column) and \
                column.n_unique() <= CATEGORY_MAX_FRACTION * len(column):
            casts[column.name] = pl.Categorical
            changes.append(f"{column.name}: {dtype} → Categorical")
    notes = _column_notes(notes, converted, options)
    row, verdict = _frame_verdict(before, changes, notes, saved, options, held, name,
                                  lambda: refusal_text(shell, ns, name, held))
    if verdict:
        return verdict
    new = frame.with_columns(pl.col(c).cast(t) for c, t in casts.items())
    new = new.to_series() if series else new
    row["bytes_after"] = int(new.estimated_size())
    ns[name] = new
    return dict(row, status="done")


def _arrow_plan(value, options):
    """What downcast would do to each column of an Arrow object, found
    without converting any: [(position, convert: () -> ChunkedArray)], the
    changes and notes in words, and the bytes saved (predicted)."""
    import pyarrow as pa

    plans, changes, notes, converted, saved = [], [], [], [], 0
    for position, (label, column) in enumerate(downcast_arrow.columns_of(value)):
        label = "values" if label is None else label
        if pa.types.is_integer(column.type) or pa.types.is_floating(column.type):
            target, plan = downcast_arrow.number_plan(column, options, _core_call)
            if target is None:
                notes.append((label, plan))
                continue
            plans.append((position, functools.partial(downcast_arrow.cast, column, target)))
            changes.append(f"{label}: {column.type} → {target}")
            converted.append((label, plan))
            saved += len(column) * (column.type.bit_width - target.bit_width) // 8
            continue
        dictionary, after = downcast_arrow.dictionary_plan(column)
        if dictionary is None:
            notes.append((label, after))
            continue
        plans.append((position, functools.partial(downcast_arrow.encode, column, dictionary)))
        changes.append(f"{label}: {column.type} → dictionary")
        saved += column.nbytes - after
    return plans, changes, _column_notes(notes, converted, options), saved


def _downcast_arrow(shell, ns, name, options):
    """A pyarrow table, record batch, chunked array or array: numeric
    columns by the same plan as arrays (nulls and chunks too), strings to a
    dictionary where smaller.  The result is a new object of the same kind
    (Arrow data is immutable); nothing is converted before every check has
    passed, and a dictionary is decoded back equal before it replaces
    anything."""
    held = [r for r in _core.inplace_check(ns, name) if r[0] == "held"]
    original = ns[name]
    before = original.nbytes
    plans, changes, notes, saved = _arrow_plan(original, options)
    row, verdict = _frame_verdict(before, changes, notes, saved, options, held, name,
                                  lambda: refusal_text(shell, ns, name, held))
    if verdict:
        return verdict
    try:
        converted = {position: convert() for position, convert in plans}
    except ValueError as exc:
        return _refused(row, str(exc))
    new = downcast_arrow.rebuilt(original, converted)
    row["bytes_after"] = new.nbytes
    ns[name] = new
    return dict(row, status="done")


def _downcast_refusal(shell, ns, name, options):
    kind = type(ns[name])
    frames = _downcast_polars if _polars_kind(ns[name]) else \
        _downcast_pandas if _pandas_kind(ns[name]) else \
        _downcast_arrow if downcast_arrow.is_arrow(ns[name]) else None
    if not frames and not _is_ndarray(ns[name]):
        hint = " (try %shrink pack)" if kind in (list, tuple) else ""
        raise UsageError(f"%shrink downcast: {name} is a {kind.__name__}; downcast takes numpy "
                         f"arrays, pandas and polars DataFrames/Series and pyarrow tables, "
                         f"record batches and arrays{hint}")
    shared = _shared_refusal(shell, ns, name)
    if len(options["together"]) == 1 and not shared:
        # Alone, it needs no conversion planned here: the action refuses by
        # itself before it changes anything (and scans the values holding the GIL).
        return None
    if frames:
        row = frames(shell, ns, name, dict(options, dry_run=True))
        return _refused(row, shared) if shared else row if row["status"] == "refused" else None
    row = _downcast_row(shell, ns, name, options, dry_run=True)
    if row["status"] == "dry-run" and row["refusals"] and not options["copy"]:
        return _refused(dict(row, detail=row["detail"].removesuffix(" (copy)")),
                        f"it cannot be converted in place "
                        f"({refusal_text(shell, ns, name, row['refusals'])}); "
                        f"{_anyway('downcast', name, 'converts a copy')}")
    return row if row["status"] == "refused" else None


def _downcast(shell, ns, name, options, progress):
    if _polars_kind(ns[name]):
        return _downcast_polars(shell, ns, name, options)
    if _pandas_kind(ns[name]):
        return _downcast_pandas(shell, ns, name, options)
    if downcast_arrow.is_arrow(ns[name]):
        return _downcast_arrow(shell, ns, name, options)
    return _downcast_row(shell, ns, name, options, options["dry_run"])


# compress -------------------------------------------------------------------

# compress pickles polars frames as spill does: through Arrow, their buffers
# out of band (read in place, not copied into the stream)
_core.compress_set_pickler(spill_store.compress_pickler)


def _anyway(action, name, does):
    """The command that does it anyway.  Named whole: a rule's notice shows
    these reasons too, and no rule can add --copy."""
    return f"%shrink {action} {name} --copy {does} anyway"


def _kept_alive(holders, action, name, does):
    """Why replacing a value others hold frees nothing, and what does it anyway."""
    return (f"{holders}, so the original would stay in memory and nothing would be freed; "
            f"{_anyway(action, name, does)}")


def _held_refusal(shell, ns, name, options, action, does):
    """A reason to refuse replacing ns[name] when others hold it, or None;
    does: what --copy then does, in the third person ('compresses it')."""
    refusals = [r for r in _core.inplace_check(ns, name) if r[0] in ("held", "view")]
    if not refusals or options["copy"]:
        return None
    return _kept_alive(refusal_text(shell, ns, name, refusals), action, name, does)


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


# How many objects _autograd_loss looks through for tensors inside containers.
AUTOGRAD_SCAN_LIMIT = 100_000


def _tensor_loss(tensor, where):
    """What pickling tensor (at where: 'it', or 'it['a'][0]' inside it) drops
    of its autograd state, or None."""
    detach = "compress .detach() of it" if where == "it" else f"replace it by {where}.detach()"
    if tensor.grad_fn is not None:
        return (f"{where} has a grad_fn ({type(tensor.grad_fn).__name__}, autograd's graph), "
                f"which pickle drops: it would come back as a leaf; {detach}")
    if tensor.grad is not None:
        return (f"{where} holds a .grad, which pickle drops: clear it ({where}.grad = None) "
                "first")
    return None


def _autograd_loss(value):
    """What torch's pickling would lose of the autograd state of value, a
    tensor, or of a tensor in its dicts, lists, tuples, sets and attributes
    (pickle keeps the data and requires_grad), or None.  Looks at the first
    AUTOGRAD_SCAN_LIMIT objects, and says where: it['graph'][0]."""
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    np = sys.modules.get("numpy")
    atoms = (int, float, complex, str, bytes, bytearray, type(None)) + \
        ((np.ndarray, np.generic) if np is not None else ())
    seen, pending, budget = set(), [(value, None, None)], AUTOGRAD_SCAN_LIMIT
    while pending and budget > 0:
        obj, parent, step = pending.pop()
        budget -= 1
        if isinstance(obj, atoms) or id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, torch.Tensor):
            where = "it"
            for part in reversed(_path(parent, step)):
                where += part
            lost = _tensor_loss(obj, where)
            if lost:
                return lost
            continue
        if isinstance(obj, dict):
            items = ((item, f"[{key!r}]") for key, item in obj.items())
        elif isinstance(obj, (list, tuple, set, frozenset)):
            items = ((item, f"[{i}]") for i, item in enumerate(obj))
        elif isinstance(getattr(obj, "__dict__", None), dict) and \
                not isinstance(obj, (type, types.ModuleType)):
            items = ((item, f".{key}") for key, item in vars(obj).items())
        else:
            continue
        here = (parent, step)
        pending += [(item, here, part) for item, part in itertools.islice(items, budget)]
    return None


def _path(parent, step):
    """The steps from the scanned value down to an object, deepest first."""
    parts = []
    while step is not None:
        parts.append(step)
        parent, step = parent
    return parts


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


def _same_object(ns, entries, name):
    """Other variables bound to the very object ns[name] is."""
    return sorted(e["name"] for e in entries if e["name"] != name and ns.get(e["name"]) is ns[name])


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
    lost = _autograd_loss(ns[name])
    if lost:
        return dict(row, reason=lost)
    held = _held_refusal(shell, ns, name, options, "compress", "compresses it")
    with ledger(shell, ns):
        entries = _core.variables()
    entry = next((e for e in entries if e["name"] == name), None)
    nbytes = entry["bytes"] if entry else _core.deep_size(ns[name])[0]
    row["bytes_before"] = row["bytes_after"] = nbytes
    same = _same_object(ns, entries, name)
    if same and not options["copy"]:
        one = len(same) == 1
        return dict(row, reason=f"{', '.join(same)} {'is' if one else 'are'} the same object "
                                f"(bound to it too), so compressing {name} would free nothing; "
                                f"{_anyway('compress', name, 'compresses it')}, and {name} is "
                                f"then a copy: changes no longer show on both sides")
    shared = [n for n in _shared_with(ns, entries, name) if n not in same] if entry else []
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
    source = ns[name]
    try:
        proxy = _core.compress(source, name, codec=options["codec"], level=options["level"],
                               progress=progress, owner=_owner(shell, ns))
        after = _core.deep_size(proxy)[0]
        if after * MIN_COMPRESS_RATIO > row["bytes_before"]:  # the sample was too hopeful
            return dict(row, status="refused", bytes_after=row["bytes_before"],
                        reason=f"compressed it takes {format_size(after)} of its "
                               f"{format_size(row['bytes_before'])}: not worth it, left as it was")
        # Threads may have written into it since it was read: compress_commit
        # compares, compresses again if so, and rebinds, holding the GIL.
        _core.compress_commit(ns, name, source, proxy)
    except ValueError as exc:  # by reference (see codec.c), or changed by a thread
        return dict(row, status="refused", bytes_after=row["bytes_before"], reason=str(exc))
    finally:
        del source
    after = _core.deep_size(proxy)[0]
    info = _core.compressed_info(proxy)
    compressed_names[name] = (info["cbytes"], row["bytes_before"])
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
    cbytes, deep = compressed_names.pop(name, (None, None))
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
    # Measured before pack rebinds it: the same figure a dry run shows.
    deep = _core.deep_size(ns[name])[0] if isinstance(ns[name], (list, tuple)) else None
    row = _core_call(_core.pack, ns, name, narrow=options["narrow"], copy=options["copy"],
                     dry_run=dry_run)
    row["bytes_before"] = deep if deep is not None else row["exclusive_bytes"]
    if row["refusals"] and row["status"] == "refused" and row["dtype_after"]:
        row["reason"] += ": " + refusal_text(shell, ns, name, row["refusals"])
    # Items held elsewhere too stay in memory: worth a word when more stays than goes.
    stays = row["bytes_before"] - row["exclusive_bytes"]
    frees = max(0, row["exclusive_bytes"] - row["bytes_after"])
    if row["status"] != "refused" and stays > frees:
        row["reason"] = "; ".join(filter(None, [
            row["reason"], f"{format_size(stays)} of its items are also held elsewhere and stay "
                           f"in memory: packing frees {format_size(frees)}"]))
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
        return _refused(row, _kept_alive(refusal_text(shell, ns, name, row["refusals"]), "pack",
                                         name, "packs a copy"))
    return row if row["status"] == "refused" else None


def _pack(shell, ns, name, options, progress):
    return _pack_row(shell, ns, name, options, options["dry_run"])


def _spill_plan(shell, ns, name, options):
    """spill's row for ns[name] before anything is written, with 'format':
    memmap (a numpy array) or pickle5 (anything else, its buffers out of
    band); refused when it cannot be spilled.  Changes nothing.  A
    checkpoint (--keep-in-memory) rebinds nothing, so what holds the
    variable or how much of it stays in memory does not matter."""
    import numpy as np

    checkpoint = options["keep_in_memory"]
    if options["dir"] and (checkpoint or options["keep_for_reattach"]):
        raise UsageError("%shrink spill: --keep-in-memory and --keep-for-reattach keep the file "
                         "for the notebook's next kernel, and only the notebook's spill store is "
                         "offered to it: drop --dir")
    value = ns[name]
    if _is_ndarray(value):
        if value.dtype.hasobject:
            raise UsageError(f"%shrink spill: {name} holds Python objects, which a file cannot "
                             f"map (try %shrink compress)")
        if isinstance(value, np.memmap):
            raise UsageError(f"%shrink spill: {name} is already a memory-mapped file")
        row = {"bytes_before": value.nbytes, "detail": "→ np.memmap", "format": "memmap",
               "file_bytes": value.nbytes}
        dense = value.flags.c_contiguous or value.flags.f_contiguous
        del value
        if row["bytes_before"] == 0:
            return _refused(row, "it is empty: nothing to spill")
        refused = None if checkpoint else _held_refusal(shell, ns, name, options, "spill",
                                                        "spills it")
        if refused or (not dense and not options["copy"] and not checkpoint):
            return _refused(row, refused or "it is not contiguous; " +
                            _anyway("spill", name, "spills a contiguous copy"))
    else:
        if isinstance(value, Compressed):
            raise UsageError(f"%shrink spill: {name} is compressed: %shrink restore {name} first")
        by_reference = _by_reference(value)
        if by_reference:
            raise UsageError(f"%shrink spill: {name} is a {by_reference}: pickle stores it by "
                             "name, so there is nothing to spill")
        row = {"bytes_before": _core.deep_size(value)[0], "format": "pickle5",
               "detail": f"→ {type(value).__name__} mapped from a file"}
        try:
            stream, buffers = spill_store.dump(value)
        except spill_store.Unspillable as exc:
            return _refused(row, str(exc))
        except Exception as exc:  # noqa: BLE001 - pickle raises anything a __reduce__ does
            return _refused(row, f"it cannot be pickled ({type(exc).__name__}: {exc})")
        finally:
            del value
        row["file_bytes"] = spill_store.layout(stream, buffers)[1]
        row["in_memory"] = len(stream)
        # The walk does not see every library's buffers (Arrow's): the file does.
        row["bytes_before"] = max(row["bytes_before"], row["file_bytes"])
        del stream, buffers
        if checkpoint:
            row["in_memory"] = row["bytes_before"]
        elif row["in_memory"] > row["file_bytes"] * MAX_SPILL_IN_MEMORY:
            return _refused(row, f"{format_size(row['in_memory'])} of it is Python objects, not "
                                 "array buffers: read back from a file it would take as much "
                                 "memory as now (try %shrink compress)")
        refused = None if checkpoint else _held_refusal(shell, ns, name, options, "spill",
                                                        "spills it")
        entry = None if refused else variable(shell, ns, name)
        if entry is not None and entry["exclusive"] is not None and \
                entry["bytes"] - entry["exclusive"] > MAX_SPILL_SHARED_BYTES:
            refused = _shared_refusal(shell, ns, name)
        if refused:
            return _refused(row, refused)
    if options["keep_for_reattach"] and not spill_store.notebook():
        return _refused(row, "this kernel belongs to no notebook ($JPY_SESSION_NAME), so no next "
                             "kernel could reattach it: drop --keep-for-reattach")
    if checkpoint:
        row["detail"] = "checkpoint (kept in memory)"
    room = spill_store.room_refusal(options["dir"] or spill_store.root(), row["file_bytes"],
                                    chosen=bool(options["dir"]))
    return _refused(row, room) if room else row


def _spill_refusal(shell, ns, name, options):
    row = _spill_plan(shell, ns, name, options)
    return row if row.get("status") == "refused" else None


def _spill_path(options, name):
    """In the notebook's store (reattachable), or in --dir (removed with the kernel)."""
    return spill_files.new_path(options["dir"], name) if options["dir"] else \
        spill_store.new_path(name)


def _spill_kept(shell, options, name, path, mapped, kind, regions, nbytes, checksum, extra):
    """Lists a spill that is done.  A checkpoint's mapped is None: nothing
    but its manifest entry points at its file."""
    if options["dir"]:
        spill_files.keep(path, mapped)
    else:
        spill_store.keep(name, path, mapped, spill_store.entry(
            kind, path, nbytes, regions, getattr(shell, "execution_count", None), checksum,
            dict(extra, keep_for_reattach=options["keep_for_reattach"])))


def _spill_done(row, options, path):
    if options["keep_in_memory"]:
        return dict(row, status="done", bytes_after=row["bytes_before"],
                    detail=f"checkpoint {path} (kept in memory)")
    return dict(row, status="done", detail=f"{row['detail']} {path}")


def _spill(shell, ns, name, options, progress):
    plan = _spill_plan(shell, ns, name, options)
    # A checkpoint frees nothing: the variable stays in memory.
    row = {"bytes_before": plan["bytes_before"], "reason": None, "detail": plan["detail"],
           "bytes_after": plan["bytes_before"] if options["keep_in_memory"] else 0}
    if plan.get("status") == "refused":
        return dict(row, status="refused", bytes_after=row["bytes_before"], reason=plan["reason"])
    if options["dry_run"]:
        return dict(row, status="dry-run")
    if plan["format"] == "pickle5":
        return _spill_pickled(shell, ns, name, options, dict(row, bytes_after=plan["in_memory"]),
                              progress)
    bind = not options["keep_in_memory"]
    import numpy as np

    path = _spill_path(options, name)
    source = ns[name]
    array = source if source.flags.c_contiguous or source.flags.f_contiguous else \
        np.ascontiguousarray(source)
    order = "F" if array.flags.f_contiguous and not array.flags.c_contiguous else "C"
    # A read-only array stays read-only: its file is mapped read-only.
    mode = "r+" if array.flags.writeable else "r"
    try:
        _core.spill_write([(0, array)], path, progress=progress)
        mapped = np.memmap(path, dtype=array.dtype, mode=mode, shape=array.shape, order=order)
    except BaseException:
        spill_files.remove(path)
        raise
    extra = {"format": "memmap", "dtype": np.lib.format.dtype_to_descr(array.dtype),
             "shape": list(array.shape), "order": order, "mode": mode}
    del array
    # Threads may have written into it since it was written out: spill_commit
    # copies their writes into the file and rebinds, holding the GIL.
    try:
        checksum = _core.spill_commit(ns, name, source, mapped, bind=bind)
    except ValueError as exc:
        spill_files.remove(path)
        return dict(row, status="refused", bytes_after=row["bytes_before"], reason=str(exc))
    finally:
        del source
    _spill_kept(shell, options, name, path, mapped if bind else None, "numpy.ndarray", None,
                row["bytes_before"], checksum, extra)
    return _spill_done(dict(row, detail="→ np.memmap"), options, path)


# del's targets that are not variables: what IPython's caches hold.
_OUTPUT_TARGET = re.compile(r"Out\[(\d+)\]|_(\d+)")
LAST_ERROR_TARGET = "sys.last_traceback"


def cached_target(name):
    """What `%shrink del name` purges when name is no variable: ("output", N)
    for Out[N] and _N, ("error",) for the last traceback, ("gone", name) for
    a deleted name whose object something still holds; else None."""
    found = _OUTPUT_TARGET.fullmatch(name)
    if found:
        return ("output", int(found.group(1) or found.group(2)))
    if name == LAST_ERROR_TARGET:
        return ("error",)
    if any(g["name"] == name for g in _core.ledger_gone()):
        return ("gone", name)
    return None


def _release(row, purge):
    """After a purge: nothing of ours holds the object; collect, give the heap back."""
    purge.forget()
    gc.collect()
    _core.trim()
    return row


def _delete_cached(shell, ns, name, target, options):
    """%shrink del of what only caches hold: Out[N] (and the names that show
    it), the last traceback, or the object of a name already deleted."""
    purge = Purge(shell, ns)
    row = {"status": "dry-run" if options["dry_run"] else "done", "bytes_before": None,
           "bytes_after": None, "detail": "", "reason": None}
    if target[0] == "output":
        value = purge.output.get(target[1]) if purge.output is not None else None
        if value is None:
            raise UsageError(f"%shrink del: there is no Out[{target[1]}] (%history -o lists the "
                             "outputs IPython keeps)")
        row["bytes_before"] = _core.deep_size(value, RESTORE_WALK_SECONDS)[0]
        del value
        if options["dry_run"]:
            return dict(row, detail=f"would purge Out[{target[1]}]")
        purge.remove_output(target[1])
        return _release(dict(row, detail=f"purged Out[{target[1]}]"), purge)
    if target[0] == "error":
        attributes = _core.ledger()["last_error_attributes"]
        if all(getattr(sys, a, None) is None for a in attributes):
            raise UsageError("%shrink del: there is no last error to clear (sys.last_traceback "
                             "is what IPython keeps of the last error it showed)")
        # Its size is the report's (the walk there stops at the namespaces
        # the frames see); here the RSS columns say what the purge gave back.
        if options["dry_run"]:
            return dict(row, detail="would clear the last traceback")
        purge.remove([{"kind": "exception", "sys_attributes": attributes}])
        return _release(dict(row, detail="cleared the last traceback"), purge)
    record = next(g for g in _core.ledger_gone() if g["name"] == name)
    caches = [h for h in record["holders"] if h["kind"] in CACHE_KINDS]
    others = [h["label"] for h in record["holders"] if h["kind"] not in CACHE_KINDS]
    row.update(bytes_before=record["bytes"], purged=[h["label"] for h in caches],
               still_held_by=others)
    notes = [f"{', '.join(others)} still hold{'s' if len(others) == 1 else ''} it"] if others else []
    if options["dry_run"]:
        return dict(row, detail="would purge " + (", ".join(row["purged"]) or "nothing"),
                    reason="; ".join(notes) or None)
    obj = _core.ledger_gone_object(name)
    purge.remove(caches, obj)
    del obj
    _release(row, purge)
    freed = _core.ledger_gone_object(name) is None
    return dict(row, bytes_after=0 if freed else record["bytes"],
                detail="purged " + (", ".join(row["purged"]) or "nothing"),
                reason="; ".join(notes) or None)


def trim_heap(options):
    """%shrink trim: malloc_trim(0); the measured window says what RSS did."""
    before = _core.heap_free()
    if options["dry_run"]:
        return {"status": "dry-run", "bytes_before": before, "bytes_after": before,
                "detail": "would give malloc's free heap back", "reason": None}
    gc.collect()
    released = _core.trim()
    return {"status": "done", "bytes_before": before, "bytes_after": _core.heap_free(),
            "detail": "malloc_trim(0)", "reason": None if released else "nothing to give back"}


def _purged_target(ns, name):
    """cached_target(name) when del purges a cache rather than a variable:
    Out[N] and _N always (IPython binds _N itself), other names only when
    no variable has them."""
    return cached_target(name) if name not in ns or _OUTPUT_TARGET.fullmatch(name) else None


def _spill_pickled(shell, ns, name, options, row, progress):
    """Any object but a plain array: pickled with its buffers out of band into
    a file, and bound to what unpickling over a mapping of the file gives,
    once that equals it (the library's own equality)."""
    path = _spill_path(options, name)
    value = ns[name]
    try:
        regions = spill_store.write_object(path, spill_store.layout(*spill_store.dump(value))[0],
                                           progress)
        again, mapping = spill_store.read_object(path, regions)
        if not spill_store.equal(value, again):
            reason = (f"{name} changed (by another thread) while it was being spilled: left as "
                      "that thread left it") if not spill_store.same_as_file(value, path) else \
                f"unpickling it does not give back an equal {type(value).__name__} (its == or " \
                "its pickling differs): left as it was"
            spill_files.remove(path)
            return dict(row, status="refused", bytes_after=row["bytes_before"], reason=reason)
        with open(path, "rb") as f:
            written = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        # Threads may have changed it since it was pickled: pickled again,
        # compared with the file and rebound holding the GIL.
        try:
            checksum = _core.spill_commit_pickled(
                ns, name, value, again, spill_store.layout(*spill_store.dump(value))[0], written,
                bind=not options["keep_in_memory"])
        finally:
            written.close()
    except ValueError as exc:
        spill_files.remove(path)
        return dict(row, status="refused", bytes_after=row["bytes_before"], reason=str(exc))
    except BaseException:
        spill_files.remove(path)
        raise
    finally:
        del value
    kind = f"{type(again).__module__}.{type(again).__qualname__}"
    del again
    _spill_kept(shell, options, name, path, None if options["keep_in_memory"] else mapping, kind,
                regions, row["bytes_before"], checksum, {"format": "pickle5"})
    return _spill_done(row, options, path)


def _delete_refusal(shell, ns, name, options):
    if _purged_target(ns, name):
        return None  # nothing of the user's to check
    own = ipython_name(name) if shell is not None else None
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
    target = _purged_target(ns, name)
    if target:
        return _delete_cached(shell, ns, name, target, options)
    together = options["together"]
    entry = variable(shell, ns, name)
    others = [h["label"] for h in entry["holders"]
              if h["kind"] in NAME_KINDS and h["key"] not in together]
    caches = [] if others else [h for h in entry["holders"] if h["kind"] in CACHE_KINDS]
    purge = Purge(shell, ns)
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
    notes += [f"{h['label']} may keep it alive" for h in entry["holders"] if h["kind"] == "unnamed"]
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
    returned = _release_arrow_pool()
    if returned:
        row["reason"] = "; ".join(filter(None, [row["reason"], f"Arrow's pool gave "
                                                f"{format_size(returned)} back to the OS"]))
    return row


def _release_arrow_pool():
    """Asks Arrow's pool, which keeps freed pages for reuse (mimalloc,
    jemalloc), to return them: the RSS that came back, or None without
    pyarrow (never imported here)."""
    pa = sys.modules.get("pyarrow")
    if pa is None:
        return None
    before = _core.process()["rss"]
    pa.default_memory_pool().release_unused()
    after = _core.process()["rss"]
    return before - after if before is not None and after is not None else None


# action -> (the check run for every name first, the action).  Which actions
# there are, and the options each takes, is C's table (kernelext/actions.c):
# these and shrinker.KERNEL_ACTIONS are its %shrink actions.
ACTIONS = {
    "del": (_delete_refusal, _delete),
    "downcast": (_downcast_refusal, _downcast),
    "compress": (_compress_refusal, _compress),
    "restore": (_restore_refusal, _restore),
    "pack": (_pack_refusal, _pack),
    "spill": (_spill_refusal, _spill),
}
