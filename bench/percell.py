"""Per-cell cost at any session size (issue 27): InteractiveShell.run_cell('x = 1')
in process, plain IPython against IPython with memtamer loaded, side by side in
one run (fresh interpreters, alternating).

Rows: an empty namespace; 10,000 variables after 10,000 cells of history;
8 idle children; telemetry with 0, 1 and 10 subscribers.  Each figure is the
fastest of BATCHES batches of PER_BATCH cells (load from elsewhere only ever
adds time); the worker pairs run ROUNDS times and the fastest of each side is
kept.

    python bench/percell.py [--python PATH]... [ROW]...   # writes the percell section
    python bench/percell.py --instructions [--python PATH]... [ROW]...
        # writes the percell_instructions section (callgrind; rows with a goal)
    python bench/percell.py worker ROW on|off [FLAG]   # one worker, prints JSON
    python bench/percell.py zmq-worker   # the zmq row's kernels, prints JSON

The zmq row: three real ipykernels of each Python (tests/kernel.py, over
ZeroMQ, as Jupyter runs them), two plain and one with memtamer loaded, 1,000
variables in each, cells taking turns among them; the round trip of each
cell from the execute request to its reply.  Per round (fresh kernels) the
median of each kernel's cells; the ratio is memtamer's against the first
plain kernel's, and the second plain kernel's against it is the same ratio
for two identical kernels: the noise that placement on two cores brings.
The time inside each kernel's do_execute (the cell, IPython's and
ipykernel's work around it, memtamer's callbacks) is taken too.

Each --python runs the rows under that interpreter too (one with memtamer
installed): on 3.12+ the ledger learns what a cell changed from a dict
watcher, on 3.11 from a scan of the namespace.

--instructions counts instructions instead (callgrind: whatever else the
machine does): per cell of the worker's main thread, over PER_BATCH cells
after the row's setup and warm-up (callgrind is switched on for those cells
only), and of memtamer's cell callbacks (hooks.c's pre_run_cell and
post_run_cell) and compiler hook (ledger_ran) with all they call.
"""

import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _results import write_section

HERE = Path(__file__).resolve().parent

BATCHES = 8
PER_BATCH = 200
ROUNDS = 3
STEP_EVERY = 10  # the ledger's step is read after one cell in this many
VARIABLES = 10_000
HISTORY = 10_000
CHILDREN = 8
ROWS = {
    "empty": "empty namespace",
    "long": f"{VARIABLES:,} variables after {HISTORY:,} cells",
    "children": f"{CHILDREN} idle children",
    "subscribers0": "telemetry, 0 subscribers",
    "subscribers1": "telemetry, 1 subscriber",
    "subscribers10": "telemetry, 10 subscribers",
}
GOALS_US = {"empty": 15, "long": 25, "children": 25}
ZMQ_VARIABLES = 1_000
ZMQ_WARM_CELLS = 100
ZMQ_CELLS = 600
ZMQ_ROUNDS = 5
ZMQ_GOAL = 1.02  # with memtamer / plain, round trip over ZeroMQ
ZMQ_KERNELS = ("plain", "plain, again", "memtamer")
# In every kernel: the time inside do_execute, cell by cell.
ZMQ_TIMER = """
import time as _mt_time
_mt_inside = []
_mt_kernel = get_ipython().kernel
_mt_do_execute = _mt_kernel.do_execute
async def _mt_timed(*args, **kwargs):
    started = _mt_time.perf_counter()
    try:
        return await _mt_do_execute(*args, **kwargs)
    finally:
        _mt_inside.append(_mt_time.perf_counter() - started)
_mt_kernel.do_execute = _mt_timed
"""
INSTRUCTIONS_GOAL = 1.10  # with memtamer / plain, empty namespace
ENTRY_POINTS = ("hooks_pre_run_cell", "hooks_post_run_cell", "mt_ledger_py_ran")
OWN_GOAL_MIB = 8


def fastest_batch(step):
    best = float("inf")
    for _ in range(BATCHES):
        start = time.perf_counter()
        for _ in range(PER_BATCH):
            step()
        best = min(best, (time.perf_counter() - start) / PER_BATCH)
    return best


def subscribe(count):
    """count SUB sockets connected to this kernel's publisher, once each sees a message."""
    import zmq

    from memtamer import _core

    endpoint = _core.telemetry_status()["endpoint"]
    context = zmq.Context.instance()
    sockets = []
    for _ in range(count):
        s = context.socket(zmq.SUB)
        s.setsockopt(zmq.SUBSCRIBE, b"")
        s.setsockopt(zmq.RCVHWM, 0)
        s.connect(endpoint)
        sockets.append(s)
    return sockets


def handshake(flag, mine, theirs):
    """Says mine (a file beside flag), then waits for the parent's theirs."""
    Path(f"{flag}.{mine}").touch()
    while not Path(f"{flag}.{theirs}").exists():
        time.sleep(0.05)


def worker(row, on, flag=None):
    os.environ["JUPYTER_RUNTIME_DIR"] = tempfile.mkdtemp(prefix="percell-")
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    import numpy  # noqa: F401 - users of memtamer have numpy loaded

    config = Config()
    config.HistoryManager.hist_file = ":memory:"
    shell = InteractiveShell.instance(config=config)
    children = []
    if row == "children":
        children = [subprocess.Popen(["sleep", "600"]) for _ in range(CHILDREN)]
    if on:
        shell.run_line_magic("load_ext", "memtamer")
        shell.run_line_magic("memtamer", "--notice off")
    sockets = []
    if row.startswith("subscribers") and on:
        sockets = subscribe(int(row[len("subscribers"):]))
    if row == "long":
        shell.user_ns.update({f"v{i}": i for i in range(VARIABLES)})
        for _ in range(HISTORY):
            shell.run_cell("x = 1", store_history=True)

    def cell():
        shell.run_cell("x = 1", store_history=True)

    for _ in range(PER_BATCH):  # warm up: imports, code caches, subscriptions joined
        cell()
    if flag is not None:  # the parent counts these cells' instructions
        handshake(flag, "ready", "go")
        for _ in range(PER_BATCH):
            cell()
        handshake(flag, "done", "exit")
        for c in children:
            c.kill()
            c.wait()
        return {}
    per_cell = fastest_batch(cell)
    ledger_steps = []
    if on:  # the ledger's own step, timed inside cell_end: the load of other work barely moves it
        from memtamer import _core

        # Read after every STEP_EVERY-th cell: reading builds a dict of every
        # variable, which would leave the next cell's step a cold cache.
        for i in range(PER_BATCH * STEP_EVERY):
            cell()
            if i % STEP_EVERY == STEP_EVERY - 1:
                ledger_steps.append(_core.ledger()["last_hook_seconds"])
    received = 0
    for s in sockets:
        while s.poll(0):
            s.recv_multipart()
            received += 1
    for c in children:
        c.kill()
        c.wait()
    result = {"per_cell": per_cell, "received": received}
    if on:
        import memtamer

        report = memtamer.report()
        assert report["cells"], "memtamer did not record the cells"
        result["own_bytes"] = report["own_bytes"]["total"]
        result["ledger_step"] = sorted(ledger_steps)[len(ledger_steps) // 2]
    return result


def zmq_worker():
    """The zmq row, with this Python's kernels: per round (fresh kernels),
    each kernel's median round trip and median time inside do_execute."""
    sys.path.insert(0, str(HERE.parent / "tests"))
    from kernel import Kernel

    rounds = []
    for _ in range(ZMQ_ROUNDS):
        kernels = {name: Kernel(cwd=str(HERE)) for name in ZMQ_KERNELS}
        try:
            for k in kernels.values():
                k.run("import numpy\n"
                      f"globals().update({{f'v{{i}}': i for i in range({ZMQ_VARIABLES})}})")
            kernels["memtamer"].run("%load_ext memtamer\n%memtamer --notice off")
            for k in kernels.values():
                k.run(ZMQ_TIMER)
            trips = {name: [] for name in ZMQ_KERNELS}
            for i in range(ZMQ_WARM_CELLS + ZMQ_CELLS):
                turn = ZMQ_KERNELS[i % 3:] + ZMQ_KERNELS[:i % 3]  # each goes first in turn
                for name in turn:
                    start = time.perf_counter()
                    kernels[name].run("x = 1")
                    if i >= ZMQ_WARM_CELLS:
                        trips[name].append(time.perf_counter() - start)
            cells = kernels["memtamer"].query("len(__import__('memtamer').report()['cells'])")
            assert cells >= ZMQ_CELLS, "memtamer did not record the cells"
            rounds.append({
                name: {"trip": statistics.median(trips[name]),
                       "inside": kernels[name].query(
                           f"sorted(_mt_inside[{ZMQ_WARM_CELLS}:])"
                           f"[len(_mt_inside[{ZMQ_WARM_CELLS}:]) // 2]")}
                for name in ZMQ_KERNELS})
        finally:
            for k in kernels.values():
                k.shutdown()
    return rounds


def zmq_lines(pythons, versions):
    lines = ["", f"Over ZeroMQ, {ZMQ_VARIABLES:,} variables: three real ipykernels of each Python "
             "(`tests/kernel.py`, as Jupyter runs them), two plain and one with memtamer loaded, "
             "cells of `x = 1` taking turns among them; the round trip of each cell from the "
             f"execute request to its reply, the median of each kernel's {ZMQ_CELLS} cells in a "
             f"round ({ZMQ_WARM_CELLS} cells to warm up), {ZMQ_ROUNDS} rounds of fresh kernels. "
             "ratio: memtamer's round trip against the first plain kernel's, the median of the "
             "rounds (and their range); plain against plain: the same ratio for the second plain "
             "kernel, which runs the same code (the noise of where two cores put the kernels). "
             "inside the kernel: the median time in ipykernel's `do_execute` (the cell, IPython's "
             f"and ipykernel's work around it, memtamer's callbacks). Goal: ≤ {ZMQ_GOAL:.2f}x.",
             "",
             "| Python | plain | with memtamer | ratio (rounds) | plain against plain (rounds) | "
             "inside the kernel: plain, with memtamer |",
             "|---|---:|---:|---:|---:|---:|"]
    for python in pythons:
        proc = subprocess.run([python, __file__, "zmq-worker"], capture_output=True, text=True,
                              timeout=1800, cwd=HERE)
        if proc.returncode != 0:
            raise RuntimeError(f"zmq worker failed:\n{proc.stderr}")
        rounds = json.loads(proc.stdout.strip().splitlines()[-1])

        def median_of(name, key):
            return statistics.median(r[name][key] for r in rounds)

        def ratios(name):
            return sorted(r[name]["trip"] / r["plain"]["trip"] for r in rounds)

        ratio, control = ratios("memtamer"), ratios("plain, again")
        plain, on = median_of("plain", "trip"), median_of("memtamer", "trip")
        verdict = "met" if statistics.median(ratio) <= ZMQ_GOAL else "NOT met"
        print(versions[python], "zmq", f"{plain * 1e6:.0f} µs plain, {on * 1e6:.0f} µs with "
              f"memtamer, {statistics.median(ratio):.3f}x; plain against plain "
              f"{statistics.median(control):.3f}x", flush=True)
        lines.append(
            f"| {versions[python]} | {plain * 1e6:.0f} µs | {on * 1e6:.0f} µs | "
            f"{statistics.median(ratio):.3f}x ({ratio[0]:.3f}-{ratio[-1]:.3f}; {verdict}) | "
            f"{statistics.median(control):.3f}x ({control[0]:.3f}-{control[-1]:.3f}) | "
            f"{median_of('plain', 'inside') * 1e6:.0f} µs, "
            f"{median_of('memtamer', 'inside') * 1e6:.0f} µs |")
    return lines


def python_version(python):
    return subprocess.run([python, "-c", "import sys; print(sys.version.split()[0])"],
                          capture_output=True, text=True, check=True).stdout.strip()


def run_worker(python, row, on):
    proc = subprocess.run([python, __file__, "worker", row, "on" if on else "off"],
                          capture_output=True, text=True, timeout=900, cwd=HERE)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {row} {on} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def wait_for(path, proc):
    while not path.exists():
        if proc.poll() is not None:
            raise RuntimeError(f"worker under callgrind ended:\n{proc.stderr.read()[-2000:]}")
        time.sleep(0.2)


def count_instructions(python, row, on):
    """(all, memtamer's): instructions per cell of the worker's main thread,
    and of ENTRY_POINTS with what they call."""
    with tempfile.TemporaryDirectory() as tmp:
        flag = Path(tmp) / "flag"
        proc = subprocess.Popen(
            ["valgrind", "--tool=callgrind", "--fair-sched=yes", "--separate-threads=yes",
             "--instr-atstart=no", f"--callgrind-out-file={tmp}/out", python, __file__,
             "worker", row, "on" if on else "off", str(flag)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=HERE)
        try:
            wait_for(Path(f"{flag}.ready"), proc)
            subprocess.run(["callgrind_control", "-i", "on", str(proc.pid)], check=True,
                           capture_output=True)
            Path(f"{flag}.go").touch()
            wait_for(Path(f"{flag}.done"), proc)
            subprocess.run(["callgrind_control", "-d", str(proc.pid)], check=True,
                           capture_output=True)
            Path(f"{flag}.exit").touch()
            proc.communicate(timeout=900)
        finally:
            if proc.poll() is None:
                proc.kill()
        dump = Path(f"{tmp}/out.1-01")  # the first dump, main thread
        total = int(re.search(r"^totals: (\d+)", dump.read_text(), re.M).group(1))
        # Every function listed (the default stops at 99% of the total).
        annotated = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=100",
                                    str(dump)],
                                   capture_output=True, text=True, check=True).stdout
        own = 0
        for name in ENTRY_POINTS:
            found = re.search(rf"^\s*([\d,]+) .*:{name} ", annotated, re.M)
            own += int(found.group(1).replace(",", "")) if found else 0
    return total / PER_BATCH, own / PER_BATCH


def main_instructions(pythons, rows):
    rows = [row for row in rows if row in GOALS_US]
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = [
        "## Per-cell instructions at any session size (issue 27)",
        "",
        f"`bench/percell.py --instructions`, {started}: the rows above counted by callgrind "
        f"(whatever else the machine does): instructions per cell of the main thread over "
        f"{PER_BATCH} cells after the row's setup and warm-up, plain IPython and with memtamer; "
        "memtamer's own: its cell callbacks (`hooks.c`'s `pre_run_cell` and `post_run_cell`) "
        "and its compiler hook (`ledger_ran`) with all they call; the rest of the difference "
        "is what the allocation hooks, the dict watcher and the compiler wrapper add to "
        f"IPython's own work. Goal: ≤ {INSTRUCTIONS_GOAL:.2f}x with an empty namespace.",
        "",
        "| Python | row | plain | with memtamer | ratio | memtamer's own C |",
        "|---|---|---:|---:|---:|---:|",
    ]
    runs = [(python, row, on) for python in pythons for row in rows for on in (False, True)]
    # Each run is a process of its own, and counts are load-free: run them side by side.
    with ThreadPoolExecutor(max_workers=4) as pool:
        counted = dict(zip(runs, pool.map(lambda run: count_instructions(*run), runs)))
    for python in pythons:
        version = python_version(python)
        for row in rows:
            (off, _), (on, own) = counted[(python, row, False)], counted[(python, row, True)]
            print(version, row, f"{off:,.0f} plain, {on:,.0f} with memtamer, {own:,.0f} own",
                  flush=True)
            verdict = ""
            if row == "empty":
                verdict = f" ({'met' if on / off <= INSTRUCTIONS_GOAL else 'NOT met'})"
            lines.append(f"| {version} | {ROWS[row]} | {off:,.0f} | {on:,.0f} | "
                         f"{on / off:.3f}x{verdict} | {own:,.0f} |")
    write_section("percell_instructions", "\n".join(lines))


def main(pythons, rows):
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load_at_start = " ".join(f"{x:.2f}" for x in os.getloadavg())
    versions = {python: python_version(python) for python in pythons}
    over_zmq = "zmq" in rows
    rows = [row for row in rows if row != "zmq"]
    best, own, step = {}, {}, {}
    for python in pythons:
        for row in rows:
            for _ in range(ROUNDS):
                for on in (False, True):
                    r = run_worker(python, row, on)
                    key = (python, row, on)
                    best[key] = min(best.get(key, float("inf")), r["per_cell"])
                    if on:
                        own[(python, row)] = r["own_bytes"]
                        step[(python, row)] = min(step.get((python, row), float("inf")),
                                                  r["ledger_step"])
            print(versions[python], row, f"{best[(python, row, False)] * 1e6:.0f} µs plain, "
                  f"{best[(python, row, True)] * 1e6:.0f} µs with memtamer", flush=True)
    lines = [
        "## Per-cell cost at any session size (issue 27)",
        "",
        f"`bench/percell.py`, {started}: "
        "`InteractiveShell.run_cell('x = 1')` in process, plain IPython and IPython with "
        f"`%load_ext memtamer` side by side in one run; fastest of {BATCHES} batches of "
        f"{PER_BATCH} cells, fastest of {ROUNDS} fresh interpreters each. Machine: "
        f"{os.cpu_count()} cores, load average {load_at_start} at the start and "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} at the end.",
        "",
        "ledger step: the ledger's work in `cell_end` (what changed, what the cell read, the "
        f"walks), the median of {PER_BATCH} cells, timed inside them, each the last of "
        f"{STEP_EVERY} (reading the figure builds a dict of every variable, which would leave "
        "the next cell's caches cold), the lowest of the interpreters. memtamer's own bytes: "
        "its bookkeeping after the row's cells (`report()['own_bytes']`; the long row after "
        f"{HISTORY + PER_BATCH + BATCHES * PER_BATCH + STEP_EVERY * PER_BATCH:,} cells, goal "
        f"≤ {OWN_GOAL_MIB} MiB).",
        "",
        "| Python | row | plain | with memtamer | added per cell | goal | ledger step | "
        "memtamer's own bytes |",
        "|---|---|---:|---:|---:|---|---:|---:|",
    ]
    for python in pythons:
        for row in rows:
            off, on = best[(python, row, False)] * 1e6, best[(python, row, True)] * 1e6
            goal = GOALS_US.get(row)
            verdict = f"≤ {goal} µs: {'met' if on - off <= goal else 'NOT met'}" if goal else ""
            lines.append(f"| {versions[python]} | {ROWS[row]} | {off:.0f} µs | {on:.0f} µs | "
                         f"{on - off:+.0f} µs | {verdict} | {step[(python, row)] * 1e6:.1f} µs | "
                         f"{own[(python, row)] / 1024**2:.2f} MiB |")
    if over_zmq:
        lines += zmq_lines(pythons, versions)
    write_section("percell", "\n".join(lines))


def parse(args):
    pythons, rows, count = [sys.executable], [], False
    while args:
        if args[0] == "--instructions":
            count = True
            args = args[1:]
        elif args[0] == "--python" and len(args) > 1:
            pythons.append(args[1])
            args = args[2:]
        elif args[0] in ROWS or args[0] == "zmq":
            rows.append(args.pop(0))
        else:
            sys.exit(f"percell.py: {args[0]!r} is neither --instructions, --python PATH nor "
                     f"a row ({', '.join(ROWS)}, zmq)")
    return count, pythons, rows or [*ROWS, "zmq"]


if __name__ == "__main__":
    if sys.argv[1:2] == ["worker"]:
        print(json.dumps(worker(sys.argv[2], sys.argv[3] == "on", *sys.argv[4:5])))
    elif sys.argv[1:2] == ["zmq-worker"]:
        print(json.dumps(zmq_worker()))
    else:
        count, pythons, rows = parse(sys.argv[1:])
        (main_instructions if count else main)(pythons, rows)
