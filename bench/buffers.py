"""Other libraries' buffers (issue 24): memtamer.deep_size of Arrow, polars,
torch and pandas objects against each library's own figure, shared buffers
once; the time to size a 1M-row, 20-column Arrow table; the per-cell
cost of a kernel holding 50 Arrow and polars variables; and what
%shrink compress of a polars frame costs through Arrow and by polars'
own pickle.

    bash bench/run.sh buffers
Writes the "Buffers" section of bench/RESULTS.md (between its markers).
Uses about 1.5 GiB at most (the objects of one row at a time).
"""

import gc
import os
import platform
import statistics
import sys
import time

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

from kernel import Kernel  # noqa: E402

import memtamer  # noqa: E402
from _results import spread, write_section  # noqa: E402

try:
    import torch
except ImportError:  # installed for Python 3.11 only (requirements-test.txt)
    torch = None

MiB = 1024**2
N = 2**24  # float64 elements: 128 MiB
REPEATS = 7
TABLE_RUNS = 200


def hwm_rise(action):
    """What action returns, and how far VmHWM rose above RSS while it ran
    (clear_refs resets VmHWM to RSS first)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")

    def field(name):
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith(name))

    start = field("VmRSS:")
    result = action()
    return result, field("VmHWM:") - start


def case_rows():
    """(what, make, the library's figure and how it is named)."""
    strings = [f"a string of some length, number {i}" for i in range(N // 8)]
    rows = [
        ("pyarrow Table, 1 float64 column", lambda: pa.table({"a": np.random.random(N)}),
         lambda t: (t.nbytes, "`Table.nbytes`")),
        ("pyarrow ChunkedArray of strings", lambda: pa.chunked_array([strings]),
         lambda c: (c.nbytes, "`ChunkedArray.nbytes`")),
        ("polars DataFrame, float64 + int64",
         lambda: pl.DataFrame({"x": np.random.random(N // 2), "i": np.arange(N // 2)}),
         lambda p: (p.estimated_size(), "`estimated_size()`")),
        ("polars Series of strings (views)", lambda: pl.Series(strings),
         lambda s: (s.to_arrow(compat_level=pl.CompatLevel.newest()).nbytes,
                    "pyarrow `nbytes` of its zero-copy views")),
        ("pandas 3 `str` Series", lambda: pd.Series(strings, dtype="str"),
         lambda s: (int(s.memory_usage(deep=True)), "`memory_usage(deep=True)`")),
        ("pandas `double[pyarrow]` frame",
         lambda: pd.DataFrame({"x": pd.array(np.random.random(N), dtype="double[pyarrow]")}),
         lambda d: (int(d.memory_usage(deep=True).sum()), "`memory_usage(deep=True).sum()`")),
        ("polars frame + its `to_arrow()` (shared once)",
         lambda: (lambda p: [p, p.to_arrow()])(pl.DataFrame({"x": np.random.random(N)})),
         lambda pair: (pair[0].estimated_size(), "`estimated_size()` of the frame")),
        ("pyarrow Table + `to_pandas(types_mapper=ArrowDtype)` (shared once)",
         lambda: (lambda t: [t, t.to_pandas(types_mapper=pd.ArrowDtype)])(
             pa.table({"a": np.random.random(N)})),
         lambda pair: (pair[0].nbytes, "`Table.nbytes`")),
    ]
    if torch is not None:
        rows += [
            ("torch tensor, float64", lambda: torch.ones(N, dtype=torch.float64),
             lambda t: (t.untyped_storage().nbytes(), "`untyped_storage().nbytes()`")),
            ("numpy array + `torch.from_numpy` (shared once)",
             lambda: (lambda a: [a, torch.from_numpy(a)])(np.random.random(N)),
             lambda pair: (pair[0].nbytes, "`ndarray.nbytes`")),
        ]
    return rows


def accuracy_table():
    lines = ["| object | memtamer.deep_size | library's figure | ratio | sizing time | "
             "VmHWM rise while sizing |", "|---|---|---|---|---|---|"]
    for what, make, figure in case_rows():
        obj = make()
        truth, named = figure(obj)
        times, rises = [], []
        for _ in range(REPEATS):
            t0 = time.perf_counter()
            size, rise = hwm_rise(lambda: memtamer.deep_size(obj))
            times.append((time.perf_counter() - t0) * 1e3)
            rises.append(rise / MiB)
        lines.append(f"| {what} | {size:,} | {truth:,} ({named}) | {size / truth:.4f} | "
                     f"{spread(times, '{:.3f}')} ms | {spread(rises, '{:.1f}')} MiB |")
        del obj
        gc.collect()
    return lines


def wide_table():
    table = pa.table({f"c{i}": np.random.random(1_000_000) for i in range(20)})
    times = []
    for _ in range(TABLE_RUNS):
        t0 = time.perf_counter()
        size = memtamer.deep_size(table)
        times.append((time.perf_counter() - t0) * 1e3)
    return size, table.nbytes, times


def per_cell_cost():
    """Round trip of `x = 1` in a kernel with memtamer, with and without 50
    Arrow and polars variables (25 of each, 4 MiB apiece) in the namespace."""
    results = {}
    for label, setup in (("no variables", ""),
                         ("50 Arrow/polars variables",
                          "for i in range(25):\n"
                          "    globals()[f't{i}'] = pa.table({'a': np.random.random(2**19)})\n"
                          "    globals()[f'p{i}'] = pl.DataFrame({'a': np.random.random(2**19)})")):
        k = Kernel()
        try:
            k.run("%load_ext memtamer")
            k.run("import numpy as np, pyarrow as pa, polars as pl")
            if setup:
                k.run(setup)
            k.run("x = 0")
            times = []
            for _ in range(REPEATS * 3):
                t0 = time.perf_counter()
                k.run("x = 1")
                times.append((time.perf_counter() - t0) * 1e3)
            t0 = time.perf_counter()
            k.run("%memreport vars")
            results[label] = (times, (time.perf_counter() - t0) * 1e3)
        finally:
            k.shutdown()
    return results


def compress_polars():
    """%shrink compress of a polars frame (floats, floats with nulls,
    strings) through Arrow, and by polars' own pickle (the package's
    pickler chooser unset): peaks of the dry run, the compress and the
    restoring cell, each in a fresh kernel."""
    rows = []
    for label, setup in (("through Arrow (memtamer's pickler)", ""),
                         ("polars' own pickle", "memtamer._core.compress_set_pickler(None)")):
        k = Kernel()
        try:
            k.run("%load_ext memtamer")
            k.run("%memtamer --notice off")
            k.run("import numpy as np, polars as pl, memtamer\n"
                  "p = pl.DataFrame({'x': np.random.random(2**22), 'n': [1.5, None] * 2**21, "
                  "'s': ['red', 'green', None, 'blue'] * 2**20})")
            if setup:
                k.run(setup)
            deep = k.query("memtamer.deep_size(p)")
            dry = k.query("memtamer.shrink('compress', 'p', dry_run=True)['p']")
            done = k.query("memtamer.shrink('compress', 'p')['p']")
            k.run("p.shape")
            restore = k.last_cell()
            rows.append(f"| {label} | {deep / MiB:.0f} MiB | +{dry['peak_increment'] / MiB:.0f} MiB "
                        f"| +{done['peak_increment'] / MiB:.0f} MiB | {done['seconds']:.2f} s "
                        f"| {done['bytes_after'] / MiB:.0f} MiB "
                        f"| +{restore['peak_increment'] / MiB:.0f} MiB |")
        finally:
            k.shutdown()
    return rows


def main():
    lines = ["## Buffers (issue 24)", "",
             f"Python {platform.python_version()}, pyarrow {pa.__version__}, polars {pl.__version__}, "
             f"pandas {pd.__version__}" + (f", torch {torch.__version__}" if torch else "")
             + f", {os.cpu_count()} cores, shared machine with other work running (timings "
             f"indicative). Deep size by memtamer against each library's own figure "
             f"({REPEATS} sizings each; medians (min–max)):", ""]
    lines += accuracy_table()
    size, truth, times = wide_table()
    lines += ["", f"Sizing a 1,000,000-row, 20-column float64 Arrow table ({TABLE_RUNS} runs): "
              f"{spread(times, '{:.3f}')} ms (goal: under 1 ms); {size:,} B against "
              f"`Table.nbytes` {truth:,} B. The walker reads each column's buffers through "
              f"the Arrow C data interface and visits no element.", ""]
    cost = per_cell_cost()
    lines += ["Per-cell cost in a kernel with memtamer loaded (round trip of `x = 1`, "
              f"{REPEATS * 3} runs):", "", "| namespace | `x = 1` round trip | `%memreport vars` |",
              "|---|---|---|"]
    for label, (times, report) in cost.items():
        lines.append(f"| {label} | {spread(times, '{:.1f}')} ms | {report:.0f} ms |")
    lines += ["", "`%shrink compress` of a polars frame of 4,194,304 rows (float64, float64 "
              "with nulls, strings), one fresh kernel each (peaks are the cell's RSS peak "
              "over its start):", "",
              "| pickled | deep size | dry-run peak | compress peak | compress time "
              "| compressed | restoring cell's peak |", "|---|---|---|---|---|---|---|"]
    lines += compress_polars()
    write_section("buffers", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
