"""Runs %shrink: every name and option is checked before anything
changes, then each action runs in a measured window (RSS before, after,
peak) and watchers are told; shrink() is the Python API."""

import sys
import textwrap
import traceback

from IPython.core.error import UsageError

from . import _core, spill_store
from .actions import ACTIONS, cached_target, trim_heap
from .options import ACTION_OPTIONS, SHRINK_ACTIONS, parse_options
from .progress import Progress
from .telemetry import publish

# What watchers are told of each %shrink action (names only when allowed).
SHRINK_EVENT_FIELDS = ("name", "action", "status", "bytes_before", "bytes_after", "reason")


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


def _trim(shell, ns, names, options):
    if names:
        raise UsageError("%shrink trim takes no names: it gives the whole heap's free memory "
                         "back to the OS")
    return {"heap": dict(_measured(lambda progress: trim_heap(options), shell, "heap", "trim"),
                         name="heap", action="trim")}


def _reattach(shell, ns, names, options):
    """{name: {name, action, outcome}}: what became of each variable the
    notebook's previous kernel spilled (names: all of them with ["all"])."""
    if options["dry_run"]:
        raise UsageError("%shrink reattach: --dry-run does not apply; %shrink reattach lists "
                         "nothing, the kernel's start said what can come back")
    if not names and not options["discard"]:
        raise UsageError("%shrink reattach: name the variables, or all (or --discard)")
    try:
        outcomes = spill_store.reattach(ns, list(names), options["discard"])
    except ValueError as exc:
        raise UsageError(f"%shrink reattach: {exc}") from None
    return {name: {"name": name, "action": "reattach", "outcome": outcome}
            for name, outcome in outcomes}


# The %shrink actions on the heap or on a previous kernel's spills, not on
# each name given (those are actions.ACTIONS): together, C's table's.
KERNEL_ACTIONS = {"trim": _trim, "reattach": _reattach}


def _run(shell, ns, action, names, given, rewalk):
    options = parse_options(action, given)
    if action in KERNEL_ACTIONS:
        return KERNEL_ACTIONS[action](shell, ns, names, options)
    if not names:
        raise UsageError(f"%shrink {action}: name at least one variable")
    # del also takes what only IPython's caches still hold: Out[3], _3, a deleted name.
    missing = [n for n in names if n not in ns and not (action == "del" and cached_target(n))]
    if missing:
        raise UsageError(f"%shrink {action}: no variable named {', '.join(missing)} "
                         "in the user namespace")
    check, function = ACTIONS[action]
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
    if rewalk:
        _core.ledger_rewalk([name for name, row in rows.items() if row.get("in_place")])
    return rows


def run(shell, ns, action, names, given, rewalk=True):
    """Runs action on each name; returns {name: row}.  Every name must exist,
    every option must fit the action, and no name may be refused, before
    anything changes.  rewalk=False leaves sizing the names changed in place
    to the caller (the rules' policy_acted_on sizes every name a rule acted
    on, in the same call into C)."""
    try:
        return _run(shell, ns, action, names, given, rewalk)
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
    shrink('compress', 'a', 'b', codec='zstd', level=5), shrink('spill', 'big', dir='/scratch'),
    shrink('del', 'Out[3]') (also '_3', 'sys.last_traceback' or a name already deleted that a
    cache holds), shrink('trim'); dry_run=True to change nothing.  Returns {name: result dict}.
    The actions, and the options each takes:
    """
    shell, ns = _namespace()
    return run(shell, ns, action, names, options)


shrink.__doc__ = shrink.__doc__.rstrip() + "\n" + "\n".join(
    textwrap.fill(f"{name}({', '.join(sorted(ACTION_OPTIONS[name]))}): {action['help']}", 99,
                  initial_indent="    ", subsequent_indent="        ")
    for name, action in SHRINK_ACTIONS.items())
