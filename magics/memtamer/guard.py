"""The memory guard's IPython side: the signal route, the exception's message,
the translation of refused allocations, and the post-mortem of a dead kernel.

The budget, the refusals and the watcher are C (kernelext/guard.c); this
module registers the handler for the guard's signal, renders the message of
MemoryBudgetExceeded and reports records left by kernels that died."""

import atexit
import glob
import os
import signal
import time
import traceback

import IPython

from . import _core, children, spill_files, spill_store
from .sizes import format_size
from .telemetry import publish, runtime_dir

MemoryBudgetExceeded = _core.MemoryBudgetExceeded
# The exception's figures sent to watchers as a budget_trip event.
TRIP_FIELDS = ("budget", "use", "requested", "layer", "limit", "child_pid", "child_private",
               "child_command")

_ASKED = {
    "numpy": "a numpy buffer of {size}",
    "python": "a block of {size} from Python's allocator",
}


def budget():
    """The budget as a dict: enabled, budget, limit and its source, rss, the
    watcher's state, trips so far."""
    return _core.guard_status()


def set_budget(value):
    """Set the budget: bytes (int), a size ('8GiB'), a share of the
    effective limit ('80%'), 'default' (the limit minus the reserve) or
    'off' (also None).  Returns budget(); ValueError says what to write."""
    if value is None:
        return _core.guard_set_budget("off", None)
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise TypeError(f"a budget is a byte count or a string such as '8GiB' or '80%', "
                        f"not {type(value).__name__}")
    if isinstance(value, int):
        return _core.guard_set_budget("bytes", value)
    word = value.strip().lower()
    if word in ("off", "default"):
        return _core.guard_set_budget(word, None)
    kind, amount = _core.parse_level(value)
    return _core.guard_set_budget(kind, amount)


def set_thrashing(action):
    """'stop' ends a cell that thrashes with MemoryBudgetExceeded (crossed
    'thrashing'); 'warn' lets it run.  Returns budget()."""
    return _core.guard_set_thrashing(action)


def set_swap(allowed):
    """Whether the budget counts swap as room besides memory, where there is
    swap (False keeps the budget in RAM: a stop rather than a slow cell).
    Returns budget(); ValueError when the budget in force would not fit."""
    return _core.guard_set_swap(bool(allowed))


# ---- what the message names: the biggest variables -------------------------

def biggest_variables(namespace, n=3):
    """[(name, bytes, type name, before)] of the n biggest user variables.
    The kernel is at its budget: no full walk now.  Sizes are the deep sizes
    the ledger measured after the cells that made or changed each variable
    (before True: from before the running cell, which may have grown it), or
    measured now for a variable it has not walked."""
    sized = []
    ledger = _core.ledger()
    for name, entry in ledger["names"].items():
        if name not in namespace:
            continue
        value = namespace[name]
        size = entry["bytes"]
        before = size is not None
        if not before:
            # Not walked yet (made before memtamer was loaded): sized now within
            # the ledger's budget for a cell's walks; cut short, a lower bound.
            size, _complete = _core.deep_size(value, ledger["cell_walk_budget"])
        sized.append((name, size, type(value).__name__, before))
        del value
    sized.sort(key=lambda item: item[1], reverse=True)
    return sized[:n]


# ---- the other holders of shared memory --------------------------------------

def _memtamer_kernels():
    """{pid: notebook or None} of the live memtamer kernels that left a record."""
    kernels = {}
    try:
        directory = record_dir()
    except OSError:
        return kernels
    for path in glob.glob(os.path.join(directory, "memtamer-*.guard")):
        try:
            record = _core.postmortem_read(path)
        except OSError:
            continue
        if record is not None and record["alive"]:
            kernels[record["pid"]] = record.get("notebook")
    return kernels


def other_holders(shared, pod_kernels=(), n=3):
    """[(description, pid, rss, reserved)] of the biggest other processes
    that share the limit: first the memtamer kernels of the pod's ledger that
    the refusal named (pid, rss, bytes reserved and not yet in use), then the
    biggest others; memtamer kernels by notebook, others by command name."""
    kernels = _memtamer_kernels()

    def name(pid, command):
        if pid not in kernels:
            return command
        notebook = kernels[pid]
        return f"the kernel of {os.path.basename(notebook)}" if notebook else "a memtamer kernel"

    holders = [(name(pid, "a memtamer kernel"), pid, rss, reserved)
               for pid, rss, reserved in pod_kernels]
    named = {pid for _what, pid, _rss, _reserved in holders}
    for rss, pid, command in _core.sharing(shared.get("path"), n):
        if pid not in named and len(holders) < n:
            holders.append((name(pid, command), pid, rss, 0))
    return holders


def _shared_name(shared):
    """('the container', 'cgroup1 /sys/fs/cgroup/...') or ('the machine', ...)."""
    if shared["source"] == "machine":
        return "the machine", "MemTotal − MemAvailable"
    return "the container", f"{shared['source']} {shared['path']}"


def _shared_lines(trip, where, holders):
    shared = trip["shared"]
    whose, source = _shared_name(shared)
    lines = [f"{where} was stopped before it took {whose} past its memory of "
             f"{format_size(shared['limit'])} ({source}) less memtamer's reserve of "
             f"{format_size(shared['reserve'])} that keeps the OOM killer away."]
    layer = trip["layer"]
    if layer in _ASKED:
        lines.append(f"It asked for {_ASKED[layer].format(size=format_size(trip['requested']))} "
                     f"while {whose} used {format_size(shared['use'])}, of which this kernel "
                     f"about {format_size(trip['use'])}.")
    else:
        lines.append(f"{whose.capitalize()} used {format_size(shared['use'])} while it ran, of "
                     f"which this kernel {format_size(trip['use'])}.")
    if holders:
        lines.append("Others holding it: " + "; ".join(
            f"{what}, pid {pid}, holds {format_size(rss)}"
            + (f" and reserved {format_size(reserved)} more" if reserved else "")
            for what, pid, rss, reserved in holders) + ".")
    return lines


def _child_line(trip, worker):
    """What the process that crossed the limit did, and what memtamer did to
    it: killed one the cell started (layer 'child'); named one of an earlier
    cell (layer 'worker'), with the role and limit worker (children.role_of)
    gives."""
    command = trip.get("child_command")
    name = f"{command!r}, " if command else ""
    if trip["layer"] == "child":
        return (f"A process it started ({name}pid {trip['child_pid']}) grew to "
                f"{format_size(trip['child_private'])} of its own memory, taking the kernel "
                f"and its children to {format_size(trip['use'])}; memtamer killed that "
                "process.")
    role, supervisor, limit = worker or (None, None, None)
    what = f", a {role}" if role else ""
    line = (f"A process of an earlier cell ({name}pid {trip['child_pid']}{what}) grew by "
            f"{format_size(trip['child_private'])} during this cell, taking the kernel and its "
            f"children to {format_size(trip['use'])}. memtamer stopped the cell and left that "
            "process running: killing it would lose what it holds")
    if supervisor:
        line += f", and {supervisor} would start another in its place"
    line += "."
    if limit:
        line += (f" Its own memory_limit is {format_size(limit)}: beyond it, its supervisor "
                 "spills, pauses or restarts it by its own policy.")
    return line


def describe(trip, cell=None, variables=(), holders=(), worker=None):
    """The message of MemoryBudgetExceeded for a trip dict from _core;
    worker is children.role_of the process a 'worker' trip names."""
    budget_text = format_size(trip["budget"])
    where = f"cell {cell}" if cell is not None else "this cell"
    if trip.get("crossed") == "shared":
        lines = _shared_lines(trip, where, holders)
        if trip["layer"] in ("child", "worker"):
            lines.append(_child_line(trip, worker))
        return "\n".join(lines + _advice(variables))
    if trip.get("crossed") == "thrashing":
        status = _core.guard_status()
        lines = [f"{where} was stopped because the kernel was thrashing: it waited for "
                 f"{trip['major_faults_per_second']:.0f} pages a second from swap or disk "
                 f"(major faults; more than {status['thrashing']['major_faults_per_second']:g} "
                 f"a second for {status['thrashing']['seconds']:g} s), with "
                 f"{format_size(trip['use'])} of memory and swap in use.",
                 "You asked for this with `%memguard --thrashing stop`; "
                 "`%memguard --thrashing warn` lets such a cell run on, slowly."]
        return "\n".join(lines + _advice(variables))
    lines = [f"{where} was stopped before it took the kernel past its memory budget "
             f"of {budget_text}."]
    layer = trip["layer"]
    if layer in _ASKED:
        lines.append(f"It asked for {_ASKED[layer].format(size=format_size(trip['requested']))} "
                     f"while the kernel used about {format_size(trip['use'])}.")
    elif layer in ("child", "worker"):
        lines.append(_child_line(trip, worker))
    else:
        what = "memory in RAM and swap (RSS and VmSwap)" if trip.get("swap_counted") else \
            "memory (RSS)"
        lines.append(f"The kernel's {what} reached {format_size(trip['use'])} while it ran.")
    before = trip.get("rss_before")
    if before is not None and before > trip["budget"]:
        lines.append(f"The kernel already used {format_size(before)} before the cell began, "
                     "over its budget; the cell was stopped on its own growth.")
    return "\n".join(lines + _advice(variables))


def _advice(variables):
    lines = []
    if variables:
        lines.append("Biggest variables: " + ", ".join(
            f"{name} {format_size(size)}{' before this cell' if before else ''} ({kind})"
            for name, size, kind, before in variables) + ".")
        if any(before for *_, before in variables):
            lines.append("(Sizes before this cell: what it added to them is not in them.)")
        name = variables[0][0]
        lines.append(f"Free memory with `%shrink del {name}` (or `%shrink downcast|compress|"
                     f"spill {name}`, see `%shrink?`), or change the budget with `%memguard SIZE`.")
    else:
        lines.append("Change the budget with `%memguard SIZE` (see `%memguard?`).")
    lines.append("Variables made before this cell are intact.")
    return lines


# ---- post-mortem -------------------------------------------------------------

def record_dir():
    """Where kernels keep their records (and the lists of their spill files):
    $MEMTAMER_RUNTIME_DIR, else the runtime directory kernels advertise
    themselves in; made if missing.  OSError when it cannot be made: records
    go there or nowhere."""
    path = os.environ.get("MEMTAMER_RUNTIME_DIR") or runtime_dir()
    os.makedirs(path, exist_ok=True)
    return path


def _death(record, verb):
    """'the previous kernel (pid N) <verb> while running cell C ('first line')'."""
    where = (f"while running cell {record['cell']} ({record['first_line']!r})"
             if record["cell"] is not None else "between cells")
    return f"the previous kernel (pid {record['pid']}) {verb} {where}"


def postmortem(record):
    """One paragraph on a kernel that memory likely ended, from its record."""
    bounds = [f"{what} {format_size(record[what])}" for what in ("limit", "budget") if record[what]]
    when = time.strftime("%H:%M:%S", time.localtime(record["updated"]))
    text = (f"memtamer: {_death(record, 'died')}; its last RSS was "
            f"{format_size(record['rss'])} at {when} (peak {format_size(record['peak_rss'])}"
            + "".join(f", {bound}" for bound in bounds) + ").")
    kills = record["oom_kills"]
    if record["memory_cause"] == "oom_killer":
        text += (f" The OOM killer fired {kills} time{'s' if kills != 1 else ''} since its last "
                 f"cell began ({record['oom_source']}).")
    else:
        text += f" That was close to its {record['memory_cause']}."
    if record["memory_cause"] in ("oom_killer", "limit") and record["limit"]:
        text += " " + died_short(record["peak_rss"] or record["rss"], record["limit"]) + "."
    return text


def shortfall(need, had):
    """The advice for a cell that finished over a limit: need, the peak it
    reached; had, the limit.  How much more RAM or swap would have let it
    finish within it."""
    return (f"It needed {format_size(need)}: {format_size(need - had)} more RAM or swap "
            f"(on an SSD) than the {format_size(had)} it had would have let it finish")


def died_short(peak, limit):
    """The advice for a kernel memory ended: it needed more than it reached
    and more than its limit (how much more, nothing measured can say)."""
    return (f"It needed more than the {format_size(max(peak, limit))} it "
            + ("reached" if peak > limit else "had") + ": more RAM or swap (on an SSD) would "
            "let the cell go further, and %memguard stops such a cell before its kernel dies")


def ended_line(record):
    """The %memguard status line on a kernel that ended for no sign of memory."""
    when = time.strftime("%H:%M:%S", time.localtime(record["updated"]))
    return (f"  {_death(record, 'ended without its exit handlers')} at {when}, "
            f"{format_size(record['rss'])} in use: no sign of memory (a signal, a forced "
            "shutdown)")


# A dead kernel's record no kernel of its notebook collected within this long
# is of no one's interest any more (the notebook moved or was deleted).
POSTMORTEM_KEEP_SECONDS = 7 * 24 * 3600


def _notebook_gone(record):
    """Whether the notebook a record names surely no longer exists: only an
    absolute path can say (a relative one is the server root's, unknown
    here); a record of no notebook (a working directory's) never is."""
    notebook = record["notebook"]
    return bool(notebook) and os.path.isabs(notebook) and not os.path.exists(notebook)


def collect_postmortems(directory, now=None):
    """The records this notebook's dead kernels left in directory, removed
    with the spill files each listed: each is reported once, to the
    notebook's next kernel.  Records of dead kernels older than
    POSTMORTEM_KEEP_SECONDS, or of notebooks that no longer exist, are
    removed unreported: no kernel of theirs would ever collect them."""
    records = []
    now = time.time() if now is None else now
    for path in sorted(glob.glob(os.path.join(directory, "memtamer-*.guard"))):
        try:
            record = _core.postmortem_read(path)
        except OSError:
            continue
        if record is None or record["alive"]:
            continue
        if now - record["updated"] > POSTMORTEM_KEEP_SECONDS or _notebook_gone(record):
            try:
                os.unlink(path)
            except OSError:
                pass
            continue
        if not record["same_notebook"]:
            continue
        record["spills_removed"] = spill_files.remove_listed(directory, record["pid"])
        records.append(record)
        try:
            os.unlink(path)
        except OSError:
            pass
    return records


def interactive(shell):
    """Whether memtamer may speak at load: in a kernel or an interactive
    terminal, never into the output of `ipython script.py`."""
    return (getattr(shell, "kernel", None) is not None
            or bool(getattr(shell.parent, "interact", False)))


# IPython 9.8 advances execution_count before pre_run_cell, earlier ones after.
_ADVANCED_BEFORE_CELL = IPython.version_info >= (9, 8)


def running_cell(shell, store_history=True):
    """The execution count of the cell running now (None when it is not
    stored in the history)."""
    if not store_history:
        return None
    return shell.execution_count - 1 if _ADVANCED_BEFORE_CELL else shell.execution_count


# ---- the IPython side ---------------------------------------------------------

class Guard:
    """What start() registered, so stop() removes exactly that."""

    def __init__(self, shell):
        self.shell = shell
        self.previous_signal = None
        self.translating = False
        self.ended = []  # records of this notebook's kernels that ended for no sign of memory
        self.spills_removed = []  # the spill files those and the ones that died had left

    def _describe(self, trip):
        holders = (other_holders(trip["shared"], trip.get("kernels") or ())
                   if trip.get("crossed") == "shared" else ())
        worker = children.role_of(trip["child_pid"]) if trip["layer"] == "worker" else None
        return describe(trip, running_cell(self.shell),
                        biggest_variables(self.shell.user_ns), holders, worker)

    def _show_memory_error(self, shell, etype, value, tb, tb_offset=None):
        """IPython's custom handler for MemoryError: a refusal by the budget
        is shown as the MemoryBudgetExceeded it is."""
        exc = value if isinstance(value, MemoryBudgetExceeded) else _core.guard_exception()
        if exc is not value and exc is not None:
            exc = exc.with_traceback(tb)
            exc.__suppress_context__ = True
        shown = exc if exc is not None else value
        shell.showtraceback((type(shown), shown, tb), tb_offset=tb_offset,
                            running_compiled_code=True)
        if exc is not None:
            publish("budget_trip", {key: getattr(exc, key, None) for key in TRIP_FIELDS})
            # The stopped cell's locals (the runaway's memory) would live on in
            # sys.last_traceback; the budget needs them gone.
            traceback.clear_frames(tb)
        return None

    def start(self):
        # A script's run says nothing, leaves the records to the notebook's
        # next interactive session and keeps none of its own.
        speak = interactive(self.shell)
        try:
            directory = record_dir()
        except OSError as exc:
            directory = None
            if speak:
                print(f"memtamer: no post-mortem record for this kernel: cannot make its "
                      f"directory {exc.filename} ({exc.strerror})")
        for record in collect_postmortems(directory) if speak and directory else ():
            self.spills_removed += record["spills_removed"]
            if record["memory_cause"] is None:
                self.ended.append(record)
                continue
            report = postmortem(record)
            print(report)
            publish("postmortem", {"text": report})
        try:
            self.previous_signal = signal.signal(_core.GUARD_SIGNAL, _core._guard_signal)
        except (ValueError, OSError) as exc:
            if speak:
                print(f"memtamer: the memory guard is off: its signal cannot be registered ({exc})")
            return
        _core.guard_enable(self.shell.user_ns, self._describe, directory)
        if not self.shell.custom_exceptions:
            self.shell.set_custom_exc((MemoryError,), self._show_memory_error)
            self.translating = True
        if not speak or directory is None:
            return  # a script that dies is not a notebook's kernel: it leaves no record
        try:
            _core.postmortem_open(os.path.join(directory, f"memtamer-{os.getpid()}.guard"))
            atexit.register(_core.postmortem_close)
        except OSError as exc:
            print(f"memtamer: no post-mortem record for this kernel ({exc})")
            return
        spill_files.list_in(directory)

    def stop(self):
        _core.guard_disable()
        _core.postmortem_close()
        atexit.unregister(_core.postmortem_close)
        if self.previous_signal is not None:
            signal.signal(_core.GUARD_SIGNAL, self.previous_signal)
            self.previous_signal = None
        if self.translating and self.shell.custom_exceptions == (MemoryError,):
            self.shell.set_custom_exc((), None)
        self.translating = False


def _swap_line(swap):
    where = "the machine" if swap["path"] is None else "the container"
    if not swap["limit"]:
        return f"  swap: none ({where} has no swap for this kernel, {swap['source']})"
    own = f"; this kernel has {format_size(swap['own'])} there" if swap["own"] else ""
    if swap["counted"]:
        how = (f"{format_size(swap['counted'])} of it counted in the budget's room "
               "(%memguard --no-swap keeps the budget in RAM)")
    elif swap["allowed"]:
        how = "not counted"
    else:
        how = "not counted: the budget is in RAM (%memguard --swap counts it)"
    where_from = swap["source"] + (f" {swap['path']}" if swap["path"] else "")
    return (f"  swap: {format_size(swap['used'])} in use of {format_size(swap['limit'])} "
            f"({where_from}), {format_size(swap['room'])} left{own} · {how}")


def budget_words(status):
    """'18 GiB (the limit minus the default reserve of 1.0 GiB)': an enabled
    budget and where it comes from."""
    if status["mode"] == "default":
        how = f"the limit minus the default reserve of {format_size(status['default_reserve'])}"
    elif status["mode"] == "percent":
        how = f"{status['percent']:g}% of the limit"
    else:
        how = "set with %memguard SIZE"
    return f"{format_size(status['budget'])} ({how})"


def status_lines(status, ended=()):
    """What %memguard prints; ended: records of this notebook's kernels that
    ended for no sign of memory."""
    if not status["enabled"]:
        head = "memory guard: off"
        if status["mode"] != "off" and not status["watcher"]:
            head += " (the extension is not loaded)"
    else:
        head = f"memory budget {budget_words(status)}"
    lines = [head,
             f"  this kernel: {format_size(status['rss'])} in use (RSS) of its budget "
             f"{format_size(status['budget'])} · limit {format_size(status['limit'])} "
             f"({status['limit_source'] or 'unknown'})"]
    shared = status.get("shared")
    if shared:
        whose, source = _shared_name(shared)
        lines.append(f"  {whose}: {format_size(shared['use'])} in use of "
                     f"{format_size(shared['limit'])} ({source}), shared with other processes; "
                     f"cells also stop {format_size(shared['reserve'])} short of it")
        if status["enabled"] and status["rss"] is not None:
            own = status["budget"] - status["rss"]
            common = shared["limit"] - shared["reserve"] - shared["use"]
            which = "its budget's" if own <= common else f"{whose}'s"
            lines.append(f"  room for this kernel's next cell: {format_size(max(min(own, common), 0))} "
                         f"({which})")
    if status.get("swap") is not None:
        lines.append(_swap_line(status["swap"]))
    thrashing = status["thrashing"]
    lines.append(f"  thrashing (more than {thrashing['major_faults_per_second']:g} pages a second "
                 f"waited for from disk, for {thrashing['seconds']:g} s): "
                 + ("stops the cell" if thrashing["action"] == "stop"
                    else "let run (%memguard --thrashing stop ends such a cell)"))
    if status["enabled"]:
        blocks = "numpy buffers and Python blocks" if status["python_blocks"] else "numpy buffers"
        lines.append(f"  stops: {blocks} of "
                     f"{format_size(status['large_request'])} or more that would cross it; "
                     f"a watcher polling every {status['poll_us'] / 1000:g} ms near the budget "
                     "(less often far below it)"
                     + (" and on memory-pressure (PSI) events" if status["psi_trigger"] else "")
                     + f" · trips so far: {status['trips']}")
    lines.extend(ended_line(record) for record in ended)
    lines.append(spill_store.status_line())
    return lines
