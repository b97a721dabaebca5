"""Peak attribution benchmark (issue 13): what it costs and what it says,
side by side with memray's notebook magic.  Writes the "Peaks" section of
bench/RESULTS.md.  Run: bash bench/run.sh peaks

1. The foundation's allocation loops (bench/foundation.py), in a cell with
   attribution off and on: callgrind instruction counts at 1/10 size.
2. A cell making 10,000 blocks of 1 MiB: callgrind instructions and wall
   time, attribution off vs on.
3. The cells of tests/test_peaks_kernel.py, each in a real kernel without a
   tool, with memtamer, and under memray's `%%memray_flamegraph`: wall time,
   and the top location each names with its bytes, against the truth.
"""

import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

from foundation import ICOUNT_SCALE, NOTHING, WORKLOADS  # noqa: E402
from _results import callgrind_instructions, write_section  # noqa: E402

MiB = 1024**2
REPEATS = 5
BLOCKS = 10_000
BLOCK_FLOATS = 2**17  # 1 MiB of float64
# Runs of the cell per callgrind count: unwritten blocks cost little, so
# more runs keep start-up's variation (a few million instructions) small
# next to them; two runs of this script still differ by about 0.5%.
CELL_RUNS = {"empty": 40, "ones": 10}

# (name, cell, truth: (line, function line or None, bytes at peak, temporary bytes))
SETUP = ["import numpy as np, pandas as pd\na = np.ones(2**25)\npiece = np.ones(2**22)\n"
         "df = pd.DataFrame({'x': np.arange(2**24, dtype=float)})",
         "def scale(x):\n    t = x * 2\n    return t.astype(np.float32)"]
A = 2**25 * 8
CELLS = [
    # Lines 1 and 2 make 256 MiB each: a tie, shown in source order.
    ("binary operators", "x = a * 2\ny = (x + a).mean()\ndel x", (1, None, A, A)),
    ("function from an earlier cell", "s = scale(a)\ndel s", (1, 2, A, A)),
    ("concatenation in a loop",
     "acc = np.empty(0)\nfor i in range(4):\n    acc = np.concatenate([acc, piece])\ndel acc",
     (3, None, 7 * 2**22 * 8, 7 * 2**22 * 8)),
    ("pandas arithmetic", "df2 = df * 2 + 1\ndel df2", (1, None, 2**25 * 8, 2**25 * 8)),
]
# What memray's magic wraps the cell in (its options as the magic's defaults).
MEMRAY_WRAPPER = ("from memray import Tracker, FileFormat\n"
                  "with Tracker({dump!r}, file_format=FileFormat.AGGREGATED_ALLOCATIONS):\n")


def med(values):
    return statistics.median(values)


def spread(values):
    def short(x):
        return f"{x:.0f}" if x >= 100 else f"{x:.3g}"

    return f"{short(min(values))}–{short(max(values))}"


# ---------------------------------------------------------------- workers


def worker_loop(workload, mode, scale):
    """One foundation workload inside a measured cell."""
    from memtamer import _core

    if mode != "off":
        _core.install_hooks()
        _core.peaks_settings(enabled=mode == "attributing")
        _core.cell_begin(1, workload)
    {**WORKLOADS, **NOTHING}[workload](scale)
    if mode != "off":
        _core.cell_end(1, False)
    return {}


def blocks_cell(n, fill):
    make = "np.ones" if fill else "np.empty"
    return (f"_t0 = time.perf_counter()\nfor _ in range({n}):\n    block = {make}({BLOCK_FLOATS})\n"
            "_seconds = time.perf_counter() - _t0")


def memtamer_shell(attributing):
    """An in-process IPython shell with memtamer loaded: the cells go through
    the same hooks, namespace and frames as in a kernel."""
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    config = Config()
    config.HistoryManager.hist_file = ":memory:"
    shell = InteractiveShell.instance(config=config)
    shell.run_cell("%load_ext memtamer\n%memtamer --notice off\nimport time, numpy as np")
    from memtamer import _core

    _core.peaks_settings(enabled=attributing)
    return shell, _core


def worker_blocks(mode, n, fill):
    """The cell CELL_RUNS times: callgrind's count less a run with 0 blocks
    is then far above the few million instructions start-up varies by."""
    shell, _ = memtamer_shell(mode == "attributing")
    for _ in range(CELL_RUNS["ones" if fill else "empty"]):
        shell.run_cell(blocks_cell(n, fill))
    return {}


def worker_blocks_time(fill):
    """Wall time of the 10,000-block cell's loop, attribution off and on alternating."""
    shell, core = memtamer_shell(True)
    times = {"counting": [], "attributing": []}
    shell.run_cell(blocks_cell(100, fill))  # warm up
    for rep in range(4 * REPEATS):
        for mode in ("counting", "attributing") if rep % 2 else ("attributing", "counting"):
            core.peaks_settings(enabled=mode == "attributing")
            shell.run_cell(blocks_cell(BLOCKS, fill))
            times[mode].append(shell.user_ns["_seconds"])
    return times


def run_worker(*args):
    proc = subprocess.run([sys.executable, __file__, "worker", *args], capture_output=True,
                          text=True, timeout=1800, cwd=HERE)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {args} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def instructions(*args):
    """The main thread's: attribution's cost is there, and the guard's
    watcher, which polls by the wall clock, is not part of it."""
    return callgrind_instructions(__file__, "worker", *args, main_thread_only=True)


# ---------------------------------------------------------------- measurements


def loop_counts():
    counts = {}
    for mode in ("off", "counting", "attributing"):
        startup = instructions("loop", "nothing", mode, str(ICOUNT_SCALE))
        for workload in WORKLOADS:
            counts[workload, mode] = instructions("loop", workload, mode, str(ICOUNT_SCALE)) - startup
        print(f"  loops under callgrind: {mode} done", flush=True)
    return counts


def block_counts():
    """Instructions of one run of the cell, blocks left unwritten (np.empty:
    the worst case, the hooks' cost is most of it) or written (np.ones)."""
    counts = {}
    for mode in ("counting", "attributing"):
        for fill in ("empty", "ones"):
            nothing = instructions("blocks", mode, "0", fill)
            counts[fill, mode] = ((instructions("blocks", mode, str(BLOCKS), fill) - nothing)
                                  // CELL_RUNS[fill])
    return counts


def memtamer_top(kernel):
    comp = kernel.last_cell()["peak_composition"]
    top = comp["groups"][0]
    return top["line"], top["function_line"], top["bytes"], top["temporary"]


def memray_top(kernel, name, cell):
    """What memray's flame graph of the cell shows first: its high-water-mark
    record with the most bytes.  The magic deletes its capture, so the cell
    runs once more under the same Tracker settings, keeping the file; its
    stack's cell lines are shifted back by the wrapper's lines."""
    dump = f"memray-{[c[0] for c in CELLS].index(name)}.bin"
    kernel.run(MEMRAY_WRAPPER.format(dump=dump) + textwrap.indent(cell, "    "))
    found = kernel.query(
        "(lambda r: [(f[2], f[1]) for f in r.stack_trace()] + [r.size])(max(__import__('memray')"
        f".FileReader({dump!r}).get_high_watermark_allocation_records(merge_threads=True), "
        "key=lambda r: r.size))")
    size, frames = found[-1], found[:-1]
    in_cells = [line for line, file in frames if "ipykernel_" in file]  # innermost first
    if not in_cells:
        return None, None, size
    function_line = in_cells[0] if len(in_cells) > 1 else None
    return in_cells[-1] - MEMRAY_WRAPPER.count("\n"), function_line, size


def side_by_side(Kernel):
    times = {(name, tool): [] for name, _, _ in CELLS for tool in ("none", "memtamer", "memray")}
    said = {}
    workdir = tempfile.mkdtemp(prefix="peaks-bench-")
    kernels = {tool: Kernel(cwd=workdir) for tool in ("none", "memtamer", "memray")}
    try:
        kernels["memtamer"].run("%load_ext memtamer\n%memtamer --notice off")
        kernels["memray"].run("%load_ext memray")
        for kernel in kernels.values():
            for cell in SETUP:
                kernel.run(cell)
        for rep in range(REPEATS):
            for name, cell, _ in CELLS:
                for tool, kernel in kernels.items():
                    code = f"%%memray_flamegraph\n{cell}" if tool == "memray" else cell
                    started = time.perf_counter()
                    kernel.run(code)
                    times[name, tool].append(time.perf_counter() - started)
                    if rep == 0 and tool != "none":
                        said[name, tool] = (memtamer_top(kernel) if tool == "memtamer"
                                            else memray_top(kernel, name, cell))
            print(f"  side by side: repeat {rep + 1}/{REPEATS} done", flush=True)
    finally:
        for kernel in kernels.values():
            kernel.shutdown()
    return times, said


# ---------------------------------------------------------------- the report


def where(line, function_line):
    return f"line {line}" + (f" → scale line {function_line}" if function_line else "")


def render(started, minutes, loops, blocks, block_times, side):
    times, said = side
    versions = subprocess.run([sys.executable, "-m", "pip", "list", "--format=json"],
                              capture_output=True, text=True).stdout
    have = {p["name"].lower(): p["version"] for p in json.loads(versions)}
    lines = [
        "## Peaks (issue 13)", "",
        f"Run {started:%Y-%m-%d %H:%M} UTC, {minutes:.1f} min, by `bench/run.sh peaks` "
        f"(`bench/peaks.py`); Python {sys.version.split()[0]}, numpy {have.get('numpy')}, "
        f"pandas {have.get('pandas')}, memray {have.get('memray')}. Load average at start "
        f"{os.getloadavg()[0]:.2f} on a shared machine: wall times are indicative, "
        "instruction counts are not affected.", "",
        "### 1. Allocation loops with attribution on (callgrind instructions)", "",
        f"The foundation's loops at 1/{ICOUNT_SCALE} size, run inside a cell "
        "(`cell_begin` … `cell_end`) with memtamer's hooks and attribution off / on; "
        "start-up subtracted. Deterministic: one run each.", "",
        "| loop | no hooks | memtamer, attribution off | attribution on | on / no hooks "
        "| on / off |",
        "|---|---|---|---|---|---|",
    ]
    worst = 0.0
    for workload in WORKLOADS:
        off, counting, on = (loops[workload, m] for m in ("off", "counting", "attributing"))
        worst = max(worst, on / off)
        lines.append(f"| {workload} | {off:,} | {counting:,} | {on:,} | {on / off:.4f}x "
                     f"| {on / counting:.4f}x |")
    lines += ["", f"Goal (attribution on ≤ 1.05x of no hooks): **{'met' if worst <= 1.05 else 'NOT met'}**"
              f" (worst {worst:.4f}x).", "",
              f"### 2. A cell making {BLOCKS:,} blocks of 1 MiB", "",
              f"`for _ in range({BLOCKS}): block = np.ones(2**17)` (each block written) and the "
              "same with `np.empty` (never written), in an IPython shell with memtamer loaded, "
              "attribution off vs on. Instructions of the main thread by callgrind: the cell run "
              f"{CELL_RUNS['empty']} times (np.empty) or {CELL_RUNS['ones']} times (np.ones), less "
              "as many runs of 0 blocks, divided by the runs. Wall time: the "
              f"loop's own, median of {4 * REPEATS} runs alternating off/on in one process, with "
              "the range.", "",
              "| measure | attribution off | attribution on | on / off |", "|---|---|---|---|"]
    ratios = {}
    for fill in ("empty", "ones"):
        off, on = blocks[fill, "counting"], blocks[fill, "attributing"]
        ratios[fill] = on / off
        lines.append(f"| instructions, np.{fill} | {off:,} | {on:,} | {on / off:.4f}x |")
    for fill, t in block_times.items():
        off, on = med(t["counting"]), med(t["attributing"])
        lines.append(f"| wall time, np.{fill} | {off * 1000:.1f} ms ({spread([x * 1000 for x in t['counting']])}) "
                     f"| {on * 1000:.1f} ms ({spread([x * 1000 for x in t['attributing']])}) "
                     f"| {on / off:.3f}x |")
    verdict = {fill: "met" if r < 1.05 else "NOT met" for fill, r in ratios.items()}
    lines += ["", "Goal (under 5% more, judged on instructions): blocks written (np.ones) "
              f"**{verdict['ones']}** ({(ratios['ones'] - 1) * 100:.2f}%); blocks never written "
              f"(np.empty) **{verdict['empty']}** ({(ratios['empty'] - 1) * 100:.2f}%). Per block, "
              "attribution adds a GIL test (the GIL holder's thread against this one), the "
              "innermost frame and instruction compared with the last block's (the frames are "
              "walked and the locations searched only when they differ), and the block put in a "
              "short list of blocks made since the last new high and taken out of it at its free "
              "(the live table only gets blocks still alive at a new high): "
              f"{(blocks['empty', 'attributing'] - blocks['empty', 'counting']) / BLOCKS:.0f} "
              "instructions, against "
              f"{blocks['empty', 'counting'] / BLOCKS:.0f} for the rest of an unwritten block's "
              f"iteration and {blocks['ones', 'counting'] / BLOCKS:.0f} for a written one's.", "",
              "### 3. Side by side with memray's `%%memray_flamegraph`", "",
              "The cells of `tests/test_peaks_kernel.py` (a = 256 MiB of float64), each in three "
              "real ipykernels over ZeroMQ: no tool, memtamer loaded (attribution always on), and "
              "the cell under `%%memray_flamegraph` (memray traces every allocation and builds "
              f"its flame graph). Wall time of the cell, median of {REPEATS} (range). What each "
              "names: memtamer's first row of `%memreport peak`; memray's high-water-mark record "
              "with the most bytes, read from a capture of the cell under the same `Tracker` "
              "settings as the magic's (the magic deletes its own). Truth: the arrays' sizes, by construction.", "",
              "| cell | truth: top location, at peak / temporary | memtamer names | memray names "
              "| no tool | memtamer | memray |",
              "|---|---|---|---|---|---|---|"]
    for name, cell, (line, fline, at_peak, temporary) in CELLS:
        m_line, m_fline, m_bytes, m_temp = said[name, "memtamer"]
        r_line, r_fline, r_bytes = said[name, "memray"]
        t = {tool: [x * 1000 for x in times[name, tool]] for tool in ("none", "memtamer", "memray")}
        lines.append(
            f"| {name} | {where(line, fline)}, {at_peak / MiB:.0f} / {temporary / MiB:.0f} MiB "
            f"| {where(m_line, m_fline)}, {m_bytes / MiB:.1f} / {m_temp / MiB:.1f} MiB "
            f"| {where(r_line, r_fline)}, {r_bytes / MiB:.1f} MiB (no kept/temporary split) "
            + "".join(f"| {med(t[tool]):.0f} ms ({spread(t[tool])}) " for tool in ("none", "memtamer", "memray"))
            + "|")
    lines += ["", "memray's record is one stack (one allocating call path): where a line makes two "
              "blocks from two different calls, it names the larger and leaves the other to "
              "another record; memtamer sums a line's blocks and says which were freed by the "
              "cell's end."]
    return "\n".join(lines)


def main():
    from kernel import Kernel

    started = datetime.datetime.now(datetime.timezone.utc)
    t0 = time.perf_counter()
    print("peaks: allocation loops under callgrind", flush=True)
    loops = loop_counts()
    print("peaks: 10,000 blocks", flush=True)
    blocks = block_counts()
    block_times = {"empty": run_worker("blocks-time", "empty"), "ones": run_worker("blocks-time", "ones")}
    print("peaks: side by side with memray", flush=True)
    side = side_by_side(Kernel)
    section = render(started, (time.perf_counter() - t0) / 60, loops, blocks, block_times, side)
    write_section("peaks", section)
    print(section)


def worker_main(argv):
    kind = argv[0]
    if kind == "loop":
        result = worker_loop(argv[1], argv[2], int(argv[3]))
    elif kind == "blocks":
        result = worker_blocks(argv[1], int(argv[2]), argv[3] == "ones")
    elif kind == "blocks-time":
        result = worker_blocks_time(argv[1] == "ones")
    else:
        raise SystemExit(f"unknown worker {kind!r}")
    print(json.dumps(result))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        worker_main(sys.argv[2:])
    else:
        main()
