"""``memtamer run``: a notebook executed headless, every cell measured.

The notebook runs in a fresh kernel through nbclient, with memtamer loaded
before its first cell; the kernel's own records (``_core.cells()``) are read
after each cell, so the figures are those ``%memreport cells`` shows.  What
this file adds is only orchestration and words: the exit status, the summary,
the figures written into the executed notebook and the comparison with an
earlier run.
"""

import ast
import json
import math
import os
import sys
import tempfile
import threading
import time

from . import _core
from .render import cells_text, terminal_width
from .sizes import format_size

# The request suggested for a pod or a job: the notebook's peak plus this share,
# rounded up to whole REQUEST_STEP bytes.
REQUEST_MARGIN = 0.25
REQUEST_STEP = 64 * 2**20
# A baseline comparison ignores growth under this many bytes: allocator and
# page-size noise, not a regression.
DEFAULT_MIN_GROWTH = "4MiB"
DEFAULT_TOLERANCE = 0.10
# The figures of a cell record kept in the notebook and in --json (bytes as
# integers, seconds as a float); the peak's composition is summarised apart.
CELL_FIGURES = ("cell", "status", "rss_before", "rss_after", "retained", "peak_rss",
                "peak_increment", "heap_peak_increment", "numpy_peak_increment",
                "children_peak", "seconds")
PEAK_LINES = 3
BIGGEST_VARIABLES = 5
PROGRESS_SECONDS = 0.5
KERNEL_LOG_TAIL = 2000  # characters of a dead kernel's output shown
# A cell tagged so is expected to fail (nbclient's own convention).
EXPECTED_ERROR_TAG = "raises-exception"


class RunError(Exception):
    """Bad input or a kernel that cannot run the notebook: exit status 2."""


def add_run_command(subparsers):
    p = subparsers.add_parser(
        "run", help="execute a notebook headless and measure every cell",
        description="Execute NOTEBOOK in a fresh kernel with memtamer loaded before its first "
                    "cell (the file itself is not changed), print each cell's memory and a "
                    "summary with a suggested memory request. Exit status: 0 when the run "
                    "passed, 1 when a cell failed, the kernel died, the peak crossed --limit "
                    "or a cell grew past --baseline, 2 on bad input.")
    p.add_argument("notebook", help="the .ipynb file to execute")
    p.add_argument("--output", metavar="OUT.ipynb",
                   help="write the executed notebook here, each code cell's figures in its "
                        "metadata under 'memtamer' and the summary in the notebook's")
    p.add_argument("--limit", metavar="SIZE",
                   help="fail (exit 1) when the notebook's peak (the kernel's RSS plus its "
                        "children) exceeds SIZE, naming the first cell that crossed it")
    p.add_argument("--budget", metavar="SIZE",
                   help="the kernel's %%memguard budget: a cell that would pass it stops "
                        "with MemoryBudgetExceeded")
    p.add_argument("--timeout", metavar="SECONDS", type=float,
                   help="stop a cell that runs longer than this (default: no limit)")
    p.add_argument("--kernel", metavar="NAME",
                   help="the kernel to run (default: the notebook's kernelspec, else python3)")
    p.add_argument("--cwd", metavar="DIR",
                   help="the kernel's working directory (default: the notebook's directory)")
    p.add_argument("--allow-errors", action="store_true",
                   help="go on after a failing cell (the run still exits 1)")
    p.add_argument("--json", action="store_true",
                   help="print the summary and the cells as one JSON document on stdout")
    p.add_argument("--baseline", metavar="OLD.json",
                   help="compare each cell's peak and retained bytes with an earlier --json "
                        "run of the notebook (cells matched by source); exit 1 when one grew "
                        "by more than --tolerance")
    p.add_argument("--tolerance", metavar="FRACTION", type=float, default=DEFAULT_TOLERANCE,
                   help=f"growth allowed against --baseline (default {DEFAULT_TOLERANCE:g}, "
                        f"i.e. {DEFAULT_TOLERANCE * 100:.0f}%%)")
    p.add_argument("--min-growth", metavar="SIZE", default=DEFAULT_MIN_GROWTH,
                   help="growth against --baseline below this many bytes is noise "
                        f"(default {DEFAULT_MIN_GROWTH})")
    p.set_defaults(run=run_command)


def run_command(args):
    try:
        plan = _plan(args)
    except RunError as exc:
        print(f"memtamer run: {exc}", file=sys.stderr)
        return 2
    try:
        result = _execute(plan)
    except RunError as exc:
        print(f"memtamer run: {exc}", file=sys.stderr)
        return 2
    return _conclude(plan, result)


# ---- checking the input before anything runs ------------------------------------

def _size(text, option):
    if text is None:
        return None
    try:
        return _core.parse_size(text)
    except ValueError as exc:
        raise RunError(f"{option}: {exc}") from None


def _plan(args):
    """Everything the run needs, checked: a bad argument stops here, before a
    kernel starts."""
    try:
        import nbformat
        from nbclient import NotebookClient  # noqa: F401 (only checked here)
    except ImportError as exc:
        raise RunError(f"needs nbclient and nbformat ({exc.name} is missing): "
                       "pip install nbclient") from None
    path = args.notebook
    if not os.path.isfile(path):
        raise RunError(f"{path}: no such notebook file")
    try:
        nb = nbformat.read(path, as_version=4)
    except Exception as exc:  # nbformat raises several kinds for what is not a notebook
        raise RunError(f"{path} is not a Jupyter notebook ({_one_line(exc)})") from None
    if args.timeout is not None and not args.timeout > 0:
        raise RunError(f"--timeout {args.timeout:g}: give a positive number of seconds")
    if not 0 <= args.tolerance < math.inf:
        raise RunError(f"--tolerance {args.tolerance:g}: give a fraction such as 0.1 (10%)")
    cwd = args.cwd or os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(cwd):
        raise RunError(f"--cwd {cwd}: no such directory")
    output = args.output
    if output is not None and not os.path.isdir(os.path.dirname(os.path.abspath(output))):
        raise RunError(f"--output {output}: its directory does not exist")
    baseline = _read_baseline(args.baseline) if args.baseline else None
    kernel = args.kernel or nb.metadata.get("kernelspec", {}).get("name") or "python3"
    return {
        "path": path, "nb": nb, "kernel": kernel, "cwd": cwd, "output": output,
        "limit": _size(args.limit, "--limit"), "budget": _size(args.budget, "--budget"),
        "timeout": args.timeout, "allow_errors": args.allow_errors, "json": args.json,
        "baseline": baseline, "tolerance": args.tolerance,
        "min_growth": _size(args.min_growth, "--min-growth"),
    }


def _read_baseline(path):
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except OSError as exc:
        raise RunError(f"--baseline {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise RunError(f"--baseline {path} is not JSON ({exc}): give the output of an "
                       "earlier 'memtamer run --json'") from None
    cells = doc.get("cells") if isinstance(doc, dict) else None
    if not isinstance(cells, list) or not all(
            isinstance(c, dict) and isinstance(c.get("source"), str) for c in cells):
        raise RunError(f"--baseline {path} is not the output of 'memtamer run --json' "
                       "(no list of cells with their source)")
    return cells


def _one_line(exc):
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


# ---- running ---------------------------------------------------------------------

class _Kernel:
    """Silent requests to the kernel nbclient started: no cell, no history,
    none of memtamer's cell hooks (IPython runs them only for real cells)."""

    def __init__(self, client):
        self.client = client

    def call(self, code="", expression=None):
        expressions = {"v": f"__import__('json').dumps({expression})"} if expression else {}
        msg_id = self.client.kc.execute(code, silent=True, store_history=False,
                                        user_expressions=expressions)
        reply = self.client.wait_for_reply(msg_id)
        content = reply["content"] if reply else {"status": "error", "evalue": "no reply"}
        if content["status"] != "ok":
            raise RunError(f"{content.get('ename', 'error')}: {content.get('evalue')}")
        if expression is None:
            return None
        value = content["user_expressions"]["v"]
        if value["status"] != "ok":
            raise RunError(f"{value.get('ename')}: {value.get('evalue')}")
        return json.loads(ast.literal_eval(value["data"]["text/plain"]))


class _Progress:
    """The kernel's RSS while a cell runs, for the progress line (on a
    terminal) and for the last figure of a kernel that dies."""

    def __init__(self, pid, total, show):
        self.pid, self.total, self.show = pid, total, show
        self.last_rss = None
        self._stop = threading.Event()
        self._thread = None

    def _rss(self):
        try:
            with open(f"/proc/{self.pid}/statm", encoding="ascii") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            return None

    def _line(self, index, started):
        rss = self._rss()
        if rss is not None:
            self.last_rss = rss
        if self.show:
            sys.stderr.write(f"\r\033[Kcell {index + 1} of {self.total} · "
                             f"{time.monotonic() - started:.1f} s · RSS {format_size(rss)}")
            sys.stderr.flush()

    def _loop(self, index, started):
        while not self._stop.wait(PROGRESS_SECONDS):
            self._line(index, started)

    def start(self, index):
        self._stop.clear()
        started = time.monotonic()
        self._line(index, started)
        self._thread = threading.Thread(target=self._loop, args=(index, started), daemon=True)
        self._thread.start()

    def stop(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self.show:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()


def _kernel_env(plan):
    env = dict(os.environ)
    # Names the kernel after its notebook, as a Jupyter server does: memtamer
    # watch shows it, and its post-mortem record is keyed by it.
    env["JPY_SESSION_NAME"] = os.path.abspath(plan["path"])
    return env


def _execute(plan):
    """Runs the notebook; returns what happened, cell by cell."""
    from jupyter_client.kernelspec import NoSuchKernel
    from nbclient import NotebookClient

    nb = plan["nb"]
    client = NotebookClient(nb, kernel_name=plan["kernel"], timeout=plan["timeout"],
                            allow_errors=True, resources={"metadata": {"path": plan["cwd"]}})
    code_cells = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    result = {"records": {}, "errors": [], "died": None, "variables": [], "pid": None}
    # The kernel's own output (its log, a C library's messages) is kept aside
    # and shown only when it died: that is when it says something.
    with tempfile.TemporaryFile(mode="w+", encoding="utf-8", errors="replace") as log:
        try:
            with client.setup_kernel(env=_kernel_env(plan), stdout=log, stderr=log):
                _run_cells(plan, client, code_cells, result)
        except NoSuchKernel:
            raise RunError(f"no kernel named {plan['kernel']!r}: see 'jupyter kernelspec "
                           "list', or name one with --kernel") from None
        if result["died"] is not None:
            log.seek(0)
            result["died"]["log"] = log.read()[-KERNEL_LOG_TAIL:]
    if result["died"] is not None:
        result["died"]["postmortem"] = _postmortem(result.get("pid"))
    return result


def _run_cells(plan, client, code_cells, result):
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    nb = plan["nb"]
    kernel = _Kernel(client)
    try:
        kernel.call("%load_ext memtamer")
        if plan["budget"] is not None:
            kernel.call(f"%memguard {plan['budget']}B")
        result["pid"] = kernel.call(expression="__import__('os').getpid()")
    except RunError as exc:
        raise RunError(f"memtamer cannot be loaded in kernel {plan['kernel']!r} ({exc}): "
                       "install memtamer in that kernel's Python") from None
    progress = _Progress(result["pid"], len(code_cells), sys.stderr.isatty())
    count = 0  # the execution count of the last cell that ran
    for n, index in enumerate(code_cells):
        cell = nb.cells[index]
        progress.start(n)
        try:
            client.execute_cell(cell, index)
        except (DeadKernelError, CellTimeoutError) as exc:
            # The reply with the cell's count never came: it is the next one.
            result["died"] = {"index": index, "timeout": isinstance(exc, CellTimeoutError),
                              "last_rss": progress.last_rss, "count": count + 1}
            return
        except CellExecutionError:  # raised only when nbclient itself is told to
            pass
        finally:
            progress.stop()
        count = cell.get("execution_count") or count
        record = kernel.call(expression="__import__('memtamer')._core.cells()[-1:]")
        if record and record[0]["cell"] == cell.get("execution_count"):
            result["records"][index] = record[0]
        error = _cell_error(cell)
        if error is not None:
            result["errors"].append((index, error))
            if not plan["allow_errors"]:
                return
    result["variables"] = kernel.call(
        expression="[{k: v[k] for k in ('name', 'type', 'bytes')} for v in "
                   f"__import__('memtamer').report()['variables'][:{BIGGEST_VARIABLES}]]")


def _cell_error(cell):
    """(ename, evalue) of a cell that failed unexpectedly, else None."""
    if EXPECTED_ERROR_TAG in cell.metadata.get("tags", ()):
        return None
    for out in cell.get("outputs", ()):
        if out.get("output_type") == "error":
            return out.get("ename"), out.get("evalue")
    return None


def _postmortem(pid):
    """The record a dead kernel left (its cell, last RSS and what ended it),
    taken: this run reports it, so the notebook's next kernel does not."""
    if pid is None:
        return None
    from .guard import record_dir

    try:
        path = os.path.join(record_dir(), f"memtamer-{pid}.guard")
    except OSError:  # no record directory: the kernel could keep no record
        return None
    try:
        record = _core.postmortem_read(path)
    except OSError:
        return None
    if record is None or record["alive"]:
        return None
    try:
        os.unlink(path)
    except OSError:
        pass
    return {k: record[k] for k in ("cell", "rss", "peak_rss", "limit", "memory_cause", "oom_kills")}


# ---- what the run found ----------------------------------------------------------

def _first_line(source):
    for line in source.splitlines():
        if line.strip():
            return line.strip()
    return ""


def _cell_name(nb, index, count=None):
    """How the run names a cell: by its execution count, as the cells table
    and the notebook's In [N] do, with its first line."""
    cell = nb.cells[index]
    count = cell.get("execution_count") or count
    return f"cell {count} ({_first_line(cell.source)!r})"


def _need(record):
    """What the cell needed at its peak: the kernel and its children."""
    if record.get("peak_rss") is None:
        return None
    return record["peak_rss"] + (record.get("children_peak") or 0)


def _cells_out(plan, result):
    out = []
    for index, cell in enumerate(plan["nb"].cells):
        if cell.cell_type != "code":
            continue
        record = result["records"].get(index)
        entry = {"index": index, "source": cell.source,
                 "execution_count": cell.get("execution_count")}
        if record is not None:
            entry.update({k: record.get(k) for k in CELL_FIGURES})
            entry["peak_lines"] = _peak_lines(record.get("peak_composition"))
        out.append(entry)
    return out


def _peak_lines(composition):
    groups = (composition or {}).get("groups") or []
    return [{"line": g.get("line"), "text": g.get("text"), "function": g.get("function"),
             "bytes": g.get("bytes")} for g in groups[:PEAK_LINES]]


def _summary(plan, result, cells):
    measured = [c for c in cells if c.get("peak_rss") is not None]
    summary = {"notebook": plan["path"], "kernel": plan["kernel"], "cells": len(cells),
               "measured": len(measured), "limit": plan["limit"], "budget": plan["budget"],
               "memtamer": _version()}
    if measured:
        top = max(measured, key=_need)
        peak = _need(top)
        request = math.ceil(peak * (1 + REQUEST_MARGIN) / REQUEST_STEP) * REQUEST_STEP
        summary.update({
            "peak": peak, "peak_cell": top["index"], "peak_execution_count": top["cell"],
            "peak_first_line": _first_line(top["source"]),
            "rss_start": measured[0]["rss_before"], "rss_end": measured[-1]["rss_after"],
            "retained": measured[-1]["rss_after"] - measured[0]["rss_before"],
            "suggested_request": request, "request_margin": REQUEST_MARGIN,
        })
    summary["biggest_variables"] = result["variables"]
    return summary


def _version():
    from importlib import metadata

    return metadata.version("memtamer")


def _verdicts(plan, result, cells, summary):
    """(exit status, lines saying why) of the run."""
    from .guard import died_short, shortfall

    lines = []
    died = result["died"]
    if died is not None:
        where = _cell_name(plan["nb"], died["index"], died["count"])
        if died["timeout"]:
            lines.append(f"{where} ran past --timeout {plan['timeout']:g} s; the run stopped there")
        else:
            pm = died.get("postmortem") or {}
            rss = pm.get("rss") or died.get("last_rss")
            cause = {"oom_killer": "the OOM killer ended it", "limit":
                     "it was at its memory limit", "budget": "it was at its budget"}.get(
                pm.get("memory_cause"), "no sign of memory as the cause")
            lines.append(f"the kernel died in {where}; its last RSS was {format_size(rss)} "
                         f"({cause})" + (". " + died_short(pm["peak_rss"] or rss, pm["limit"])
                                         if pm.get("memory_cause") in ("oom_killer", "limit")
                                         and pm.get("limit") else ""))
            log = _kernel_log(died.get("log", ""))
            if log:
                lines.append("the kernel's last output:\n" + log)
    for index, (ename, evalue) in result["errors"]:
        lines.append(f"{_cell_name(plan['nb'], index)} failed: {ename}: {evalue}")
    if plan["limit"] is not None:
        for c in cells:
            if c.get("peak_rss") is not None and _need(c) > plan["limit"]:
                lines.append(f"{_cell_name(plan['nb'], c['index'])} reached "
                             f"{format_size(_need(c))}, over --limit "
                             f"{format_size(plan['limit'])}. "
                             + shortfall(_need(c), plan["limit"]))
                break
    if plan["baseline"] is not None:
        lines.extend(_regressions(plan, cells))
    return (1 if lines else 0), lines


def _kernel_log(text):
    """A dead kernel's output without ipykernel's own warnings (a TCP
    transport's, a debugger's), which every kernel prints."""
    return "\n".join(line for line in text.rstrip().splitlines()
                     if not line.startswith("[IPKernelApp] WARNING"))


def _regressions(plan, cells):
    """Cells whose peak or retained bytes grew past the baseline's, matched by
    source (the n-th cell of a source with that source's n-th)."""
    earlier = {}
    for c in plan["baseline"]:
        earlier.setdefault(c["source"], []).append(c)
    lines = []
    for c in cells:
        matches = earlier.get(c["source"])
        if not matches:
            continue
        old = matches.pop(0)
        for key, words in (("peak_increment", "peak"), ("retained", "retained")):
            new_value, old_value = c.get(key), old.get(key)
            if not isinstance(new_value, int) or not isinstance(old_value, int):
                continue
            growth = new_value - old_value
            if growth > plan["min_growth"] and growth > plan["tolerance"] * abs(old_value):
                lines.append(f"{_cell_name(plan['nb'], c['index'])}: {words} grew "
                             f"from {format_size(old_value, signed=True)} to "
                             f"{format_size(new_value, signed=True)} (tolerance "
                             f"{plan['tolerance']:.0%})")
    return lines


def _summary_lines(summary):
    if "peak" not in summary:
        return ["no cell was measured"]
    lines = [
        f"peak {format_size(summary['peak'])} in cell {summary['peak_execution_count']} "
        f"({summary['peak_first_line']!r}), kernel RSS plus children",
        f"RSS {format_size(summary['rss_start'])} before the first cell, "
        f"{format_size(summary['rss_end'])} after the last "
        f"(retained {format_size(summary['retained'], signed=True)})",
    ]
    if summary["biggest_variables"]:
        lines.append("biggest variables: " + ", ".join(
            f"{v['name']} {format_size(v['bytes'])}" for v in summary["biggest_variables"]))
    lines.append(f"suggested memory request: {format_size(summary['suggested_request'])} "
                 f"(the peak plus {summary['request_margin']:.0%}, rounded up to "
                 f"{format_size(REQUEST_STEP)})")
    return lines


def _write_output(plan, cells, summary):
    import nbformat

    nb = plan["nb"]
    for c in cells:
        figures = {k: v for k, v in c.items() if k not in ("index", "source", "execution_count")}
        if figures:
            nb.cells[c["index"]].metadata["memtamer"] = figures
    nb.metadata["memtamer"] = summary
    try:
        nbformat.write(nb, plan["output"])
    except OSError as exc:
        raise RunError(f"--output {plan['output']}: {exc.strerror}") from None


def _conclude(plan, result):
    cells = _cells_out(plan, result)
    summary = _summary(plan, result, cells)
    status, verdicts = _verdicts(plan, result, cells, summary)
    summary["passed"] = status == 0
    summary["problems"] = verdicts
    if plan["output"] is not None:
        try:
            _write_output(plan, cells, summary)
        except RunError as exc:
            print(f"memtamer run: {exc}", file=sys.stderr)
            return 2
    if plan["json"]:
        json.dump({"summary": summary, "cells": cells}, sys.stdout, indent=1)
        sys.stdout.write("\n")
        for line in verdicts:
            print(f"memtamer run: {line}", file=sys.stderr)
        return status
    records = [result["records"][c["index"]] for c in cells if c["index"] in result["records"]]
    width = terminal_width() if sys.stdout.isatty() else None
    print("\n".join(cells_text(records, f"{plan['path']}: cells", width)))
    print()
    print("\n".join(_summary_lines(summary)))
    for line in verdicts:
        print(f"FAILED: {line}")
    return status
