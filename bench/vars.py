"""Variables benchmark (issue 3): memtamer.deep_size against pympler.asizeof
and objsize.get_deep_size on data whose true size we construct, and the
per-cell ledger cost with 1,000 variables of which one changes.

Run with the other benchmarks (bench/.venv has pympler and objsize):
    bash bench/run.sh vars
Writes the "Variables" section of bench/RESULTS.md (between its markers).
"""

import argparse
import gc
import os
import platform
import statistics
import sys
import time

import numpy as np
import objsize
import pandas as pd
from pympler import asizeof

import memtamer
from _results import spread, write_section  # noqa: E402

REPEATS = 5


def distinct_total(*groups):
    """Truth: sys.getsizeof summed over the distinct objects we built."""
    seen = {}
    for group in groups:
        for o in group:
            seen[id(o)] = o
    return sum(sys.getsizeof(o) for o in seen.values())


def list_of_floats(n):
    values = [float(i) + 0.5 for i in range(n)]
    return "list of %s floats" % f"{n:,}", values, distinct_total([values], values), 0


def dict_of_lists(n):
    d = {str(i): [float(i)] for i in range(n)}
    lists = list(d.values())
    truth = distinct_total([d], d.keys(), lists, (v[0] for v in lists))
    return "dict of %s str → list" % f"{n:,}", d, truth, 0


def dataframe(n):
    words = [f"w{i}" for i in range(n)]
    numbers = np.arange(n, dtype=np.float64)
    df = pd.DataFrame({"x": numbers, "s": pd.Series(words, dtype=object)})
    # buffers and strings exactly; pandas' bookkeeping (index, blocks) on top
    truth = numbers.nbytes + n * 8 + distinct_total(words)
    del words, numbers
    return "DataFrame %s rows, float + object column" % f"{n:,}", df, truth, 64 * 1024


def shared_bases(n_views, n_bases, base_len):
    bases = [np.ones(base_len) for _ in range(n_bases)]
    views = [bases[i % n_bases][i % 7:] for i in range(n_views)]
    truth = sys.getsizeof(views) + sum(sys.getsizeof(v) for v in views) + sum(
        sys.getsizeof(b) for b in bases)
    del bases
    return f"{n_views:,} arrays sharing {n_bases} bases", views, truth, 0


def timed(fn, obj):
    """(result, seconds, failure) of one call: failure is the exception's name."""
    gc.collect()
    started = time.perf_counter()
    try:
        result = fn(obj)
    except Exception as exc:  # noqa: BLE001 - a tool failing is a result
        return None, time.perf_counter() - started, f"{type(exc).__name__}"
    return result, time.perf_counter() - started, None


def verdict(result, truth, slack):
    if result is None:
        return "failed"
    if truth <= result <= truth + slack:
        return "exact" if slack == 0 else "exact + ≤64 KiB bookkeeping"
    return f"{(result - truth) / truth:+.1%} off"


def hook_cost(n_vars=1000, cells=200):
    """The ledger's time after each of REPEATS batches of cells that each
    rebind one of n_vars variables: the median cell of each batch, and the
    slowest cell of all."""
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shell.run_cell("%load_ext memtamer", store_history=True)
    shell.run_cell("import numpy as np", store_history=True)
    shell.user_ns.update({f"v{i}": (np.ones(100) if i % 2 else [float(i)] * 10)
                          for i in range(n_vars)})
    shell.run_cell("v1 = v1", store_history=True)  # the ledger learns the names
    medians, worst = [], 0.0
    for _ in range(REPEATS):
        costs = []
        for i in range(cells):
            shell.run_cell(f"v{i % n_vars} = [{i}.5] * 10", store_history=True)
            costs.append(memtamer._core.ledger()["last_hook_seconds"])
        medians.append(statistics.median(costs))
        worst = max(worst, max(costs))
    return medians, worst


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", type=float, default=1.0, help="shrink every case (0.1: 10x smaller)")
    args = parser.parse_args()
    s = args.scale
    cases = [
        lambda: list_of_floats(int(10_000_000 * s)),
        lambda: dict_of_lists(int(1_000_000 * s)),
        lambda: dataframe(int(10_000_000 * s)),
        lambda: shared_bases(1000, 10, int(1_000_000 * s)),
    ]
    tools = [("memtamer.deep_size", memtamer.deep_size),
             ("pympler.asizeof (default: align=8)", asizeof.asizeof),
             ("pympler.asizeof, align=1", lambda o: asizeof.asizeof(o, align=1)),
             ("objsize.get_deep_size", objsize.get_deep_size)]
    lines = ["## Variables (issue 3)", "",
             f"Python {platform.python_version()}, numpy {np.__version__}, pandas {pd.__version__}, "
             f"{os.cpu_count()} cores, shared machine (timings indicative); scale {s}. Each tool "
             f"measures each case {REPEATS} times, the tools taking turns; *seconds* is the median "
             "of those runs (min–max), *result* what every run returned (a range where it varied: "
             "pandas fills caches in a DataFrame as the tools read it). pympler rounds every "
             "object's size up to its `align` (8 bytes by default): it is shown with its default "
             "and with `align=1`, which counts bytes as `sys.getsizeof` does. *memtamer speed-up* "
             "is the tool's median time over memtamer's, for tools that returned a result.", "",
             "| case | truth | tool | result | vs truth | seconds | memtamer speed-up |",
             "|---|---|---|---|---|---|---|"]
    for make in cases:
        name, obj, truth, slack = make()
        measured = {tool: [set(), [], None] for tool, _ in tools}
        for _ in range(REPEATS):
            for tool, fn in tools:
                result, seconds, failure = timed(fn, obj)
                measured[tool][0].add(result)
                measured[tool][1].append(seconds)
                measured[tool][2] = measured[tool][2] or failure
        ours = statistics.median(measured[tools[0][0]][1])
        for tool, _fn in tools:
            results, seconds, failure = measured[tool]
            if failure:
                shown, off, speedup = failure, "failed", ""
            else:
                low, high = min(results), max(results)
                shown = f"{low:,}" if low == high else f"{low:,}–{high:,}"
                off = " / ".join(dict.fromkeys(verdict(r, truth, slack) for r in (low, high)))
                speedup = "" if tool == tools[0][0] else f"{statistics.median(seconds) / ours:.0f}x"
            lines.append(f"| {name} | {truth:,} | {tool} | {shown} | {off} "
                         f"| {spread(seconds, '{:.3g}')} | {speedup} |")
            print(lines[-1], flush=True)
        del obj, measured
        gc.collect()
    medians, worst = hook_cost()
    lines += ["", f"Per-cell ledger cost (namespace diff, names read from the compiled cell, deep size of "
                  f"what changed) with 1,000 variables of which one is rebound: the median cell of "
                  f"each of {REPEATS} batches of 200 cells, median of the batches "
                  f"{spread([m * 1e6 for m in medians], '{:.0f}')} µs, slowest cell of all "
                  f"{worst * 1e6:.0f} µs (goal: well under 1 ms)."]
    print(lines[-1])
    write_section("vars", "\n".join(lines))


if __name__ == "__main__":
    main()
