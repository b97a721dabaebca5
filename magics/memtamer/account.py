"""Where the kernel's RSS is: the parts the report walks (variables,
IPython's caches, the last traceback, other reachable objects, each object
counted once by _core), the heap malloc holds free, memtamer's own
bookkeeping, the RSS at load, and a remainder said to be unexplained; each
big part with what frees it."""

from . import _core
from .actions import LAST_ERROR_TARGET
from .sizes import format_size

# Parts below this get no advice; holders below it are left out of the account.
ADVICE_MIN_BYTES = 1024**2
# The account's parts, in the order shown: (key, what it is for people).
PARTS = (
    ("variables", "your variables"),
    ("ipython_caches", "IPython's caches (Out, _, _N, %run namespaces)"),
    ("traceback", "the last traceback"),
    ("other_objects", "module globals, lru_caches, class attributes"),
    ("freed_heap", "heap freed but not returned (malloc's free bytes)"),
    ("memtamer", "memtamer's own bookkeeping since load (ledger, cell log)"),
    ("baseline", "interpreter and libraries (RSS when memtamer loaded)"),
)


def held_action(row):
    """What frees a hidden holder's row (a dict of _core's "held"), or None."""
    kinds = {h["kind"] for h in row["holders"]}
    if row["variables"]:
        return f"del {', '.join(row['variables'])} too (your variables hold it as well)"
    if row.get("was"):
        return f"%shrink del {row['was']}"
    outputs = [h for h in row["holders"] if h["kind"] == "output_cache"]
    if outputs:
        return f"%shrink del Out[{outputs[0]['out_index']}]"
    if "output_name" in kinds:
        return "%reset -f out"
    if "exception" in kinds:
        return f"%shrink del {LAST_ERROR_TARGET}"
    if "run_namespace" in kinds:
        return "%reset -f (the %run namespace goes with it)"
    if "lru_cache" in kinds:
        holder = next(h for h in row["holders"] if h["kind"] == "lru_cache")
        return f"{holder['owner']}.{holder['attribute']}.cache_clear()"
    if kinds & {"module_global", "class_attribute"}:
        holder = next(h for h in row["holders"] if h["kind"] in ("module_global", "class_attribute"))
        return f"del {holder['owner']}.{holder['attribute']}"
    return None


def build(report, baseline):
    """The account of report (a dict of _core.report() with its walked
    parts) against its RSS, or None when the report walked nothing."""
    walked = report.get("account_parts")
    rss = report["process"].get("rss")
    if walked is None or rss is None:
        return None
    free = _core.heap_free()
    figures = dict(walked, freed_heap=free, baseline=baseline,
                   memtamer=report.get("own_bytes", {}).get("total"))
    held = sorted((dict(row, action=held_action(row)) for row in report.get("held", ())
                   if row["bytes"] >= ADVICE_MIN_BYTES), key=lambda row: -row["bytes"])
    parts = []
    for key, what in PARTS:
        if figures.get(key) is None:
            continue
        part = {"part": key, "what": what, "bytes": figures[key], "action": None}
        if key == "variables":
            # The variable whose del frees the most, if that is much.
            frees = max(report.get("variables", ()), default=None,
                        key=lambda v: v["exclusive"] or 0)
            if frees and (frees["exclusive"] or 0) >= ADVICE_MIN_BYTES:
                part["action"] = f"%shrink del {frees['name']} (frees {format_size(frees['exclusive'])})"
        elif figures[key] >= ADVICE_MIN_BYTES:
            actions = list(dict.fromkeys(
                row["action"] for row in held
                if row["part"] == key and row["action"] and row["charged"] >= ADVICE_MIN_BYTES))
            part["action"] = {"ipython_caches": "; ".join(actions) or None,
                              "traceback": f"%shrink del {LAST_ERROR_TARGET}",
                              "other_objects": "; ".join(actions) or None,
                              "freed_heap": "%shrink trim"}.get(key)
        parts.append(part)
    remainder = rss - sum(p["bytes"] for p in parts)
    return {"rss": rss, "parts": parts, "remainder": remainder, "held": held,
            "unexplained": "memory no part names: modules imported since load, the "
                           "interpreter's own caches, allocator overhead; negative when walked "
                           "buffers are not all resident (untouched pages of np.zeros/np.empty)"}
