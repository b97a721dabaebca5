"""Walker benchmark (issue 8, item 8): what the per-cell walk costs a kernel
holding a 120M-item list (916 MiB), measured from outside the kernel
(/proc/<pid>/status: VmHWM after clear_refs reset it to RSS), side by side
with the same cells in a kernel without memtamer; and the deep-size tools
users would use instead, on a 10M-item list in this process.

    bash bench/run.sh walker
Writes the "Walker" section of bench/RESULTS.md (between its markers).
Uses about 2 GiB once (one kernel at a time).
"""

import argparse
import gc
import os
import platform
import statistics
import sys
import time

import objsize
from pympler import asizeof

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

from kernel import Kernel  # noqa: E402

import memtamer  # noqa: E402
from _results import write_section  # noqa: E402

MiB = 1024**2
REPEATS = 7
MAKES = 5  # runs of the cell that makes the big list
TOOL_ITEMS = 2 * 10**6  # pympler and objsize take about 1.2 µs per item


def status_field(pid, name):
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(name))


def reset_hwm(pid):
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")


def measured(kernel, pid, code):
    """Seconds for the cell's round trip and how far VmHWM rose above the RSS
    it started from."""
    reset_hwm(pid)
    rss = status_field(pid, "VmRSS")
    started = time.perf_counter()
    kernel.run(code)
    seconds = time.perf_counter() - started
    return seconds, status_field(pid, "VmHWM") - rss


def spread(values, scale, unit, digits=0):
    values = sorted(v * scale for v in values)
    return f"{statistics.median(values):.{digits}f} {unit} ({values[0]:.{digits}f}–{values[-1]:.{digits}f})"


def kernel_run(n, with_memtamer):
    kernel = Kernel()
    try:
        pid = kernel.query("__import__('os').getpid()")
        if with_memtamer:
            kernel.run("%load_ext memtamer")
        made = []
        for _ in range(MAKES):
            kernel.run("big = None")  # freed first: the next list starts from a low RSS
            made.append(measured(kernel, pid, f"big = [0] * {n}"))
        reads = [measured(kernel, pid, "big[0]") for _ in range(REPEATS)]
        result = {"make": made, "read": reads}
        result["truth"] = kernel.query(
            "__import__('sys').getsizeof(big) + __import__('sys').getsizeof(0)")
        if with_memtamer:
            result["entry"] = kernel.query("__import__('memtamer')._core.ledger()['names']['big']")
            hooks = []
            for _ in range(REPEATS):
                kernel.run("big[0]")
                hooks.append(kernel.query("__import__('memtamer')._core.ledger()['last_hook_seconds']"))
            result["hook"] = hooks
            result["report"] = [measured(kernel, pid, "%memreport vars")
                                for _ in range(5)]
            result["complete"] = kernel.query(
                "[v['complete'] for v in __import__('memtamer').report()['variables'] "
                "if v['name'] == 'big'][0]")
        return result
    finally:
        kernel.shutdown()


def tool_runs(n):
    """Deep size of [0] * n in this process: seconds and VmHWM rise per tool."""
    big = [0] * n
    truth = sys.getsizeof(big) + sys.getsizeof(0)
    rows = []
    for name, fn in (("memtamer.deep_size", memtamer.deep_size),
                     ("pympler.asizeof (default: align=8)", asizeof.asizeof),
                     ("pympler.asizeof, align=1", lambda o: asizeof.asizeof(o, align=1)),
                     ("objsize.get_deep_size", objsize.get_deep_size)):
        times, rises, result = [], [], None
        for _ in range(5):
            gc.collect()
            reset_hwm(os.getpid())
            rss = status_field(os.getpid(), "VmRSS")
            started = time.perf_counter()
            result = fn(big)
            times.append(time.perf_counter() - started)
            rises.append(status_field(os.getpid(), "VmHWM") - rss)
        rows.append((name, result, truth, times, rises))
        print(rows[-1][:3], statistics.median(times), max(rises) / MiB, flush=True)
    return rows


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=12 * 10**7)
    args = parser.parse_args()
    n = args.items
    plain = kernel_run(n, with_memtamer=False)
    ours = kernel_run(n, with_memtamer=True)
    print(plain, ours, flush=True)
    tools = tool_runs(TOOL_ITEMS)
    size = (n * 8 + 56) / MiB
    lines = ["## Walker (issue 8)", "",
             f"Python {platform.python_version()}, {os.cpu_count()} cores, shared machine (timings "
             f"indicative). A kernel holding `big = [0] * {n:,}` ({size:,.0f} MiB), measured from "
             "outside: the cell's round trip, and how far the kernel's VmHWM rose above the RSS it "
             "started from (clear_refs resets VmHWM before each cell). Medians (min–max).", "",
             "| cell | kernel | round trip | VmHWM above start |", "|---|---|---|---|"]
    for label, key in ((f"`big = [0] * n` ({MAKES} runs)", "make"), (f"`big[0]` ({REPEATS} runs)", "read")):
        for kernel, result in (("without memtamer", plain), ("with memtamer", ours)):
            seconds = [s for s, _ in result[key]]
            rises = [r for _, r in result[key]]
            lines.append(f"| {label} | {kernel} | {spread(seconds, 1000, 'ms')} | "
                         f"{spread(rises, 1 / MiB, 'MiB', 1)} |")
    seconds = [s for s, _ in ours["report"]]
    rises = [r for _, r in ours["report"]]
    lines.append(f"| `%memreport vars` (5 runs: the full walk) | with memtamer | "
                 f"{spread(seconds, 1000, 'ms')} | {spread(rises, 1 / MiB, 'MiB', 1)} |")
    entry = ours["entry"]
    lines += ["",
              f"memtamer's own cost in a cell reading `big` (the ledger's hook, `last_hook_seconds`): "
              f"{spread(ours['hook'], 1000, 'ms', 2)} (goal: under 10 ms). The creating cell walks for "
              f"its 50 ms budget: {entry['bytes']:,} B counted, estimate "
              f"{entry['estimate'] or entry['bytes']:,} B (truth {ours['truth']:,} B, "
              f"`complete: {entry['complete']}`); "
              f"`%memreport vars` completes it (`complete: {ours['complete']}`). "
              "The walker's memory is capped at about 40 MiB whatever the container "
              "(goal: under 64 MiB).", "",
              f"Deep size of `[0] * {TOOL_ITEMS:,}` in one process, by the tools users would use "
              "instead (5 runs):", "",
              "| tool | result | truth | seconds | VmHWM above start |", "|---|---|---|---|---|"]
    for name, result, truth, times, rises in tools:
        lines.append(f"| {name} | {result:,} | {truth:,} | {spread(times, 1, 's', 3)} | "
                     f"{spread(rises, 1 / MiB, 'MiB', 1)} |")
    print("\n".join(lines))
    write_section("walker", "\n".join(lines))


if __name__ == "__main__":
    main()
