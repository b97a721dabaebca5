"""Guard benchmark: runaway cells in a real kernel (outcome, time to stop,
RSS at stop) and the watcher thread's CPU cost; writes the "Guard" section of
bench/RESULTS.md.  Run: bash bench/run.sh guard"""

import contextlib
import os
import signal
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

from kernel import Kernel  # noqa: E402
from memtamer import _core  # noqa: E402
from memtamer.sizes import format_size  # noqa: E402
from _results import write_section  # noqa: E402

ROOM = 1024**3  # budget = the kernel's RSS + 1 GiB
RUNAWAYS = [
    ("np.ones far over budget", "x = np.ones(2**29)"),
    ("loop appending 1 MiB bytearrays",
     "def grow():\n    held = []\n    for _ in range(3 * 1024):\n"
     "        held.append(bytearray(2**20))\ngrow()"),
    ("list(range(2**28))", "big = list(range(2**28))"),
    ("pure-Python growth (small tuples)",
     "def grow():\n    held = []\n    for i in range(60_000_000):\n"
     "        held.append((i, i))\ngrow()"),
    ("pandas concat growth",
     "df = pd.DataFrame(np.ones((2**17, 8)))\nfor _ in range(9):\n    df = pd.concat([df, df])"),
    ('b"".join of a generator', 'blob = b"".join(bytes(2**20) for _ in range(3 * 1024))'),
    ("thread-pool worker allocating numpy",
     "from concurrent.futures import ThreadPoolExecutor\n"
     "with ThreadPoolExecutor(1) as pool:\n"
     "    pool.submit(lambda: [np.ones(2**24) for _ in range(20)]).result()"),
    ("multiprocessing child growing",
     "import multiprocessing as mp, time\n"
     "def grow():\n    held = [bytearray(2**20) for _ in range(2560)]\n    time.sleep(60)\n"
     "child = mp.get_context('fork').Process(target=grow)\nchild.start()\nchild.join()"),
]


def rss_of(pid):
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def runaway_rows():
    rows = []
    runtime = tempfile.mkdtemp()
    k = Kernel(env={"MEMTAMER_RUNTIME_DIR": runtime}, cwd=runtime)
    try:
        k.run("%load_ext memtamer")
        k.run("import numpy as np, pandas as pd, gc, memtamer, sys")
        pid = k.query("__import__('os').getpid()")
        for name, code in RUNAWAYS:
            budget = rss_of(pid) + ROOM
            k.run(f"%memguard {budget}")
            started = time.perf_counter()
            result = k.run(code, allow_error=True)
            wall = time.perf_counter() - started
            cell = k.last_cell()
            err = result["error"]
            if err is None:
                outcome = "not stopped"
            else:
                layer = k.query("getattr(sys.last_value, 'layer', None)")
                outcome = f"{err['ename']} ({layer})"
            alive = k.is_alive() and k.run("print(1)")["stdout"].strip() == "1"
            rows.append((name, outcome + ("" if alive else " — KERNEL DIED"), cell["seconds"],
                         wall, cell["peak_rss"], budget))
            k.run("for _n in ('x', 'big', 'df', 'blob', 'child'):\n    globals().pop(_n, None)\n"
                  "gc.collect()")
    finally:
        k.shutdown()
    return rows


def thread_cpu_ns(tid):
    with open(f"/proc/self/task/{tid}/schedstat") as f:
        return int(f.read().split()[0])


def watcher_cost(near, seconds=10.0):
    """CPU time of the watcher thread over a cell that sleeps, in this process:
    with the default budget (far above use) or one just above the RSS (near:
    the watcher then polls at its fastest)."""
    _core.install_hooks()
    previous = signal.signal(_core.GUARD_SIGNAL, _core._guard_signal)
    status = _core.guard_enable({}, str)
    if near:
        _core.guard_set_budget("bytes", rss_of(os.getpid()) + 64 * 1024**2)
    try:
        tid = status["watcher_tid"]
        while tid is None:
            time.sleep(0.01)
            tid = _core.guard_status()["watcher_tid"]
        idle_before = thread_cpu_ns(tid)
        time.sleep(1.0)
        idle = thread_cpu_ns(tid) - idle_before
        _core.cell_begin(1, "time.sleep(...)")
        polls_before = _core.guard_status()["watcher_polls"]
        cpu_before, wall_before = thread_cpu_ns(tid), time.perf_counter()
        time.sleep(seconds)
        cpu, wall = thread_cpu_ns(tid) - cpu_before, time.perf_counter() - wall_before
        polls = _core.guard_status()["watcher_polls"] - polls_before
        _core.cell_end(1, False)
        shared = _core.guard_status()["shared"]
        return {"share": cpu / 1e9 / wall, "per_poll_us": cpu / 1e3 / max(polls, 1),
                "polls_per_s": polls / wall, "idle_ns": idle,
                "psi": _core.guard_status()["psi_trigger"], "poll_us": status["poll_us"],
                "shared": shared["source"] if shared else None}
    finally:
        _core.guard_disable()
        signal.signal(_core.GUARD_SIGNAL, previous)


REPEATS = 5


@contextlib.contextmanager
def inside_memory_cgroup(limit=2 * 1024**3):
    """This process in a new child memory cgroup, and back after: yields
    (the cgroup's path, None), or (None, why not) where none can be made."""
    import pytest
    from test_guard_cgroup import join, make_memory_cgroup

    try:
        path, _oom_counter = make_memory_cgroup(limit)
    except (OSError, pytest.skip.Exception) as exc:
        yield None, str(exc)
        return
    join(path, os.getpid())
    try:
        yield path, None
    finally:
        join(os.path.dirname(path), os.getpid())
        os.rmdir(path)


def repeated_watcher_cost(near, repeats=REPEATS):
    """watcher_cost over repeats runs of 4 s: the median run (by share of a
    core) with the smallest and largest share beside it."""
    runs = sorted((watcher_cost(near, seconds=4.0) for _ in range(repeats)),
                  key=lambda c: c["share"])
    median = dict(runs[len(runs) // 2])
    median["spread"] = (runs[0]["share"], runs[-1]["share"])
    median["repeats"] = repeats
    return median


def section(rows, cost, in_cgroup, no_cgroup_why):
    lines = ["## Guard (issues 5, 9)", "",
             "Runaway cells in a real ipykernel with memtamer loaded; the budget is set to the "
             "kernel's RSS + 1 GiB before each (`%memguard BYTES`). *Time to stop* is the cell's "
             "own duration (memtamer's cell record); *peak RSS* the kernel's VmHWM during the "
             "cell. Without memtamer each of these cells runs to completion (bounded here at "
             "~3 GiB to spare the shared machine); unbounded, the OOM killer ends the kernel.", "",
             "| runaway | outcome (layer) | time to stop | peak RSS in cell | budget |",
             "|---|---|---|---|---|"]
    for name, outcome, seconds, wall, peak, budget in rows:
        lines.append(f"| {name} | {outcome} | {seconds:.2f} s | {format_size(peak)} | "
                     f"{format_size(budget)} |")
    far, near = cost
    lines += ["",
              f"Watcher CPU cost while a cell runs (PSI trigger "
              f"{'on' if far['psi'] else 'unavailable'}). It polls every "
              f"{far['poll_us'] / 1000:g} ms near the budget and less often far below it "
              "(as long as growth at 4 GB/s would need to reach the budget, at most 200 ms). "
              "Each poll reads the kernel's RSS and the working set of the memory it shares "
              f"with other processes (here: {far['shared'] or 'none'}"
              f"{' — /proc/meminfo' if far['shared'] == 'machine' else ''}):", "",
              f"Median of {far['repeats']} runs of 4 s each, with the smallest and largest share:",
              "", "| budget | polls/s | CPU per poll | share of a core | spread |",
              "|---|---|---|---|---|"]
    shown = [("default (far above use)", far), ("RSS + 64 MiB (near)", near)]
    if in_cgroup is not None:
        shown.append((f"RSS + 64 MiB (near), in a {in_cgroup['shared']} cgroup limited to 2 GiB "
                      "(its usage file and memory.stat each poll)", in_cgroup))
    for label, c in shown:
        low, high = c["spread"]
        lines.append(f"| {label} | {c['polls_per_s']:.0f} | {c['per_poll_us']:.1f} µs | "
                     f"**{c['share'] * 100:.3f}%** | {low * 100:.3f}–{high * 100:.3f}% |")
    if in_cgroup is None:
        lines += ["", f"No memory cgroup could be made for the cgroup row: {no_cgroup_why}"]
    lines += ["", f"Between cells the watcher sleeps on a condition variable "
              f"({far['idle_ns'] / 1e6:.3f} ms CPU in 1 s idle).", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    cost = (repeated_watcher_cost(near=False), repeated_watcher_cost(near=True))
    with inside_memory_cgroup() as (cgroup, why):
        in_cgroup = repeated_watcher_cost(near=True) if cgroup else None
    rows = runaway_rows()
    text = section(rows, cost, in_cgroup, why)
    print(text)
    write_section("guard", text)
