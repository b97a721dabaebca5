"""Per-Python benchmark (issue 23): memtamer's per-cell overhead and the cost
of peak attribution under each CPython the test command runs (the venvs of
scripts/pythons.sh, set up by scripts/setup.sh), side by side.  Writes the
"Python versions" section of bench/RESULTS.md.  Short runs: callgrind counts
are deterministic, wall times on a shared machine only indicative.
Run: bench/.venv/bin/python bench/pythons.py  (or any Python: it only starts
the venvs' interpreters)

1. Per-cell overhead: instructions (callgrind, main thread) of an empty cell
   in an in-process IPython shell, without and with memtamer loaded, and the
   fastest wall time per cell over batches.
2. Peak attribution: instructions per 1 MiB block never written (np.empty:
   the worst case, the hooks' work is most of it) made in a cell, attribution
   off vs on, and whether it names the line inside a function.
"""

import datetime
import json
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from _results import callgrind_instructions, write_section  # noqa: E402

EMPTY_CELLS = 200
BATCHES = 5
BLOCKS = 2_000
BLOCK_RUNS = 10
BLOCK_FLOATS = 2**17  # 1 MiB of float64
GOAL = 1.05


# ---------------------------------------------------------------- workers (in a venv's Python)


def shell(loaded, attributing=True):
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    config = Config()
    config.HistoryManager.hist_file = ":memory:"
    sh = InteractiveShell.instance(config=config)
    sh.run_cell("import numpy as np")
    if loaded:
        sh.run_cell("%load_ext memtamer\n%memtamer --notice off")
        from memtamer import _core

        _core.peaks_settings(enabled=attributing)
    return sh


def worker_cells(loaded, n):
    sh = shell(loaded == "on")
    for _ in range(int(n)):
        sh.run_cell("pass")
    return {}


def worker_cell_time(loaded):
    sh = shell(loaded == "on")
    best = float("inf")
    for _ in range(BATCHES):
        start = time.perf_counter()
        for _ in range(EMPTY_CELLS):
            sh.run_cell("pass")
        best = min(best, (time.perf_counter() - start) / EMPTY_CELLS)
    return {"per_cell": best}


def worker_blocks(mode, n):
    sh = shell(True, attributing=mode == "on")
    for _ in range(BLOCK_RUNS):
        sh.run_cell(f"for _ in range({n}):\n    block = np.empty({BLOCK_FLOATS})")
    return {}


def worker_names_function_line():
    sh = shell(True)
    sh.run_cell("a = np.ones(2**24)")
    sh.run_cell("def scale(x):\n    t = x * 2\n    return t.sum()")
    sh.run_cell("s = scale(a)")
    import memtamer

    top = memtamer.report()["cells"][-1]["peak_composition"]["groups"][0]
    return {"line": top["line"], "function": top["function"], "function_line": top["function_line"]}


# ---------------------------------------------------------------- driver


def venvs():
    found = subprocess.run(["bash", "scripts/pythons.sh"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split("\n")
    for line in found:
        if line.strip():
            py, venv = line.split()
            python = ROOT / venv / "bin" / "python"
            if python.exists():
                yield python


def run_worker(python, *args):
    proc = subprocess.run([str(python), __file__, "worker", *args], capture_output=True,
                          text=True, timeout=1800, cwd=HERE)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {args} under {python} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def instructions(python, *args):
    return callgrind_instructions(__file__, "worker", *args, main_thread_only=True,
                                  python=str(python))


def measure(python):
    version = subprocess.run([str(python), "-c", "import platform; print(platform.python_version())"],
                             capture_output=True, text=True, check=True).stdout.strip()
    print(f"pythons: {version}", flush=True)
    cell = {}
    for loaded in ("off", "on"):
        cell[loaded] = ((instructions(python, "cells", loaded, str(EMPTY_CELLS))
                         - instructions(python, "cells", loaded, "0")) / EMPTY_CELLS)
    wall = {loaded: run_worker(python, "cell_time", loaded)["per_cell"] for loaded in ("off", "on")}
    blocks = {}
    for mode in ("off", "on"):
        blocks[mode] = ((instructions(python, "blocks", mode, str(BLOCKS))
                         - instructions(python, "blocks", mode, "0")) / (BLOCKS * BLOCK_RUNS))
    named = run_worker(python, "names_function_line")
    return {"version": version, "cell": cell, "wall": wall, "blocks": blocks, "named": named}


def section(results, started, minutes):
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    lines = [
        "## Python versions (issue 23)",
        "",
        f"Run {started:%Y-%m-%d %H:%M} UTC, {minutes:.1f} min, by `bench/pythons.py`, in the "
        f"venvs `scripts/test.sh` sets up; {platform.machine()}, 2 cores, load average at the "
        f"end {load}: the machine was shared with other work and the Pythons were measured "
        "at the same time, so wall times are indicative only; instruction counts (callgrind, "
        "main thread, start-up subtracted) do not depend on load, but a short run's start-up "
        "varies by a few million instructions, i.e. some tens of instructions per block here.",
        "",
        f"*Per cell*: an empty cell (`pass`) in an in-process IPython shell, {EMPTY_CELLS} "
        "cells, without and with memtamer loaded; wall time is the fastest of "
        f"{BATCHES} batches. *Per block*: a cell making {BLOCKS:,} blocks of 1 MiB never "
        f"written (`np.empty`, the hooks' worst case), run {BLOCK_RUNS} times, attribution off "
        "vs on. *Names*: the top row of a cell calling a function that makes a 128 MiB "
        "temporary.",
        "",
        "| Python | instructions per cell: without / with memtamer | added per cell | wall per "
        "cell: without / with | instructions per block: attribution off / on | on / off | "
        "names |",
        "|---|---|---|---|---|---|---|",
    ]
    worst = 0.0
    for r in results:
        c, w, b, n = r["cell"], r["wall"], r["blocks"], r["named"]
        ratio = b["on"] / b["off"]
        worst = max(worst, ratio)
        names = f"line {n['line']} → {n['function']} line {n['function_line']}"
        lines.append(f"| {r['version']} | {c['off']:,.0f} / {c['on']:,.0f} | "
                     f"{c['on'] - c['off']:,.0f} | {w['off'] * 1e6:.0f} / {w['on'] * 1e6:.0f} µs | "
                     f"{b['off']:,.0f} / {b['on']:,.0f} | {ratio:.4f}x | {names} |")
    lines += ["", f"Goal (attribution on ≤ {GOAL}x of off per unwritten block, on every Python): "
              f"**{'met' if worst <= GOAL else 'NOT met'}** (worst {worst:.4f}x). On 3.11 the "
              "hook reads the interpreter's frames directly (inline loads); from 3.12 it calls "
              "the documented frame API, about eight calls per block even when the block is "
              "made where the last one was (this thread's state, its frame, the frame's code, "
              "offset and globals, the exception saved and put back); a written block costs "
              "hundreds of thousands of instructions more, next to which this is noise."]
    return "\n".join(lines)


def main():
    if len(sys.argv) > 2 and sys.argv[1] == "worker":
        print(json.dumps(globals()[f"worker_{sys.argv[2]}"](*sys.argv[3:])))
        return
    started = datetime.datetime.now(datetime.timezone.utc)
    t0 = time.monotonic()
    # The Pythons side by side, at once: instruction counts do not mind.
    pythons = list(venvs())
    with ThreadPoolExecutor(len(pythons)) as pool:
        results = list(pool.map(measure, pythons))
    write_section("pythons", section(results, started, (time.monotonic() - t0) / 60))
    print("pythons: results in bench/RESULTS.md")


if __name__ == "__main__":
    main()
