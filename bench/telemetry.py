"""Telemetry benchmark: what publishing costs a cell (no subscriber, one,
ten) against memtamer without telemetry, the sampler thread's CPU
share, and jupyter-resource-usage's way of getting the RSS (psutil from
another process); writes the "Telemetry" section of bench/RESULTS.md.
Run: bash bench/run.sh telemetry"""

import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import psutil

from memtamer import _core
from _results import spread, write_section  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
CELLS = 2000  # per batch
SPACED_CELLS = 300  # per batch, 1 ms apart
REPEATS = 11
SAMPLER_REPEATS = 5
SAMPLER_SECONDS = 4.0  # each repeat, between cells and again while a cell runs
PSUTIL_READINGS = 400  # each repeat
BUSY_HZ = 1000 / 250  # the sampler's pace while a cell runs
SUBSCRIBER = ("import sys, zmq\n"
              "s = zmq.Context().socket(zmq.SUB)\n"
              "s.connect(sys.argv[1]); s.subscribe(b'memtamer.')\n"
              "while True: s.recv_multipart()\n")


class Subscriber:
    """Another process reading every message, started through an intermediate
    that exits at once: like `memtamer watch` it is not a child of the kernel
    (whose cells look at their children's memory)."""

    def __init__(self, endpoint):
        spawn = ("import subprocess, sys\n"
                 "print(subprocess.Popen([sys.executable, '-c', sys.argv[1], sys.argv[2]],\n"
                 "                       stdout=subprocess.DEVNULL).pid)")
        self.pid = int(subprocess.check_output([sys.executable, "-c", spawn, SUBSCRIBER, endpoint]))

    def close(self):
        os.kill(self.pid, signal.SIGKILL)


def batch_us():
    """Microseconds per cell over a batch of empty cells (begin + end)."""
    begin, end = _core.cell_begin, _core.cell_end
    started = time.perf_counter()
    for i in range(CELLS):
        begin(i, "pass")
        end(i, False)
    elapsed = time.perf_counter() - started
    _core.clear_cells()
    return elapsed / CELLS * 1e6


def spaced_us():
    """Microseconds per cell (begin + end, timed alone) for cells 1 ms apart,
    as in a notebook: the sampler and the subscriber work between cells."""
    begin, end, clock = _core.cell_begin, _core.cell_end, time.perf_counter
    spent = 0.0
    for i in range(SPACED_CELLS):
        started = clock()
        begin(i, "pass")
        end(i, False)
        spent += clock() - started
        time.sleep(0.001)
    _core.clear_cells()
    return spent / SPACED_CELLS * 1e6


def wait_for_subscription(count=1):
    deadline = time.monotonic() + 30
    while _core.telemetry_status()["subscriptions"] < count:
        if time.monotonic() > deadline:
            raise RuntimeError("the subscriber never subscribed")
        time.sleep(0.01)


def per_cell_costs(endpoint, measure):
    """{config: [µs per cell, one per repeat]}, the configurations interleaved
    in each repeat so that drift on the shared machine hits them alike."""
    costs = {"off": [], "none": [], "one": [], "ten": []}
    measure()  # warm up
    for _ in range(REPEATS):
        costs["off"].append(measure())
        _core.telemetry_start(endpoint, "bench")
        costs["none"].append(measure())
        subscribers = [Subscriber(endpoint)]
        try:
            wait_for_subscription()
            costs["one"].append(measure())
            subscribers += [Subscriber(endpoint) for _ in range(9)]
            wait_for_subscription(10)
            costs["ten"].append(measure())
        finally:
            for subscriber in subscribers:
                subscriber.close()
            _core.telemetry_stop()
    return costs


def thread_cpu_ns(tid):
    with open(f"/proc/self/task/{tid}/schedstat") as f:
        return int(f.read().split()[0])


def sampler_share(endpoint, subscribed):
    """The sampler's share of a core between cells and while one runs, with a
    subscriber or none, and the messages it sent per second meanwhile:
    {state: [(share, messages/s) per repeat]}."""
    _core.telemetry_start(endpoint, "bench")
    subscriber = Subscriber(endpoint) if subscribed else None
    try:
        if subscribed:
            wait_for_subscription()
        while not _core.telemetry_status()["thread_id"]:  # the thread is starting
            time.sleep(0.01)
        tid = _core.telemetry_status()["thread_id"]
        shares = {"idle": [], "busy": []}
        for cell in range(1, SAMPLER_REPEATS + 1):
            for state in ("idle", "busy"):
                if state == "busy":
                    _core.cell_begin(cell, "time.sleep(...)")
                sent, cpu, wall = (_core.telemetry_status()["sent"], thread_cpu_ns(tid),
                                   time.perf_counter())
                time.sleep(SAMPLER_SECONDS)
                wall = time.perf_counter() - wall
                shares[state].append(((thread_cpu_ns(tid) - cpu) / 1e9 / wall,
                                      (_core.telemetry_status()["sent"] - sent) / wall))
            _core.cell_end(cell, False)
        return shares
    finally:
        if subscriber is not None:
            subscriber.close()
        _core.telemetry_stop()


def psutil_reading():
    """jupyter-resource-usage's way: psutil on the kernel's process and its
    children, from the server's process.  Returns µs of CPU per reading."""
    kernel = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        process = psutil.Process(kernel.pid)
        cpu = time.process_time()
        for _ in range(PSUTIL_READINGS):
            rss = process.memory_info().rss
            rss += sum(c.memory_info().rss for c in process.children(recursive=True))
        return (time.process_time() - cpu) / PSUTIL_READINGS * 1e6
    finally:
        kernel.kill()
        kernel.wait()


def micros(values):
    return spread(values) + " µs"


def cost_rows(costs, cadence):
    rows = [f"| {cadence} | memtamer without telemetry | {micros(costs['off'])} | — | — |"]
    for config, label in (("none", "telemetry, no subscriber"), ("one", "telemetry, one subscriber"),
                          ("ten", "telemetry, ten subscribers")):
        paired = [x - o for x, o in zip(costs[config], costs["off"])]
        rows.append(f"| {cadence} | {label} | {micros(costs[config])} | "
                    f"**{min(costs[config]) - min(costs['off']):+.2f} µs** | "
                    f"{statistics.median(paired):+.2f} µs |")
    return rows


def section(spaced, tight, shares, unheard, psutil_us):
    lines = ["## Telemetry (issues 11, 27)", "",
             f"`bench/telemetry.py`, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, Python "
             f"{sys.version.split()[0]}. "
             "Per-cell cost in one process: empty cells (`cell_begin` + `cell_end`, what every "
             f"cell pays), median of {REPEATS} batches (min–max), the four configurations "
             "interleaved in each repeat. *Added* compares with memtamer without telemetry: "
             "best batch against best batch (the machine is shared, so the least disturbed "
             "batches say most), and the median of the per-repeat differences. Each "
             "subscriber is another process reading every message; the kernel formats each message once, whoever subscribes, and with no "
             "subscriber it samples, formats and sends nothing. "
             f"*1 ms apart*: {SPACED_CELLS} cells with a 1 ms pause between them (the "
             "pair timed alone), as cells come in a notebook; *back to back*: "
             f"{CELLS} cells in a tight loop, where the sampler thread and the subscriber compete "
             "with the cells for the machine's 2 cores (and the records of cells faster than the "
             "sampler are coalesced, the sequence numbers showing it). Other work shared the "
             f"machine's 2 cores during the run (load average {os.getloadavg()[0]:.1f} at its "
             "end): differences of a few µs are within its noise (hence the negative ones).",
             "",
             "| cells | configuration | per cell | added (best) | added (median) |",
             "|---|---|---|---|---|"]
    lines += cost_rows(spaced, "1 ms apart") + cost_rows(tight, "back to back")
    lines += ["",
              f"The sampler thread's CPU (schedstat) over {SAMPLER_SECONDS:g} s between cells and "
              f"{SAMPLER_SECONDS:g} s while a cell runs, one subscriber connected or none, "
              "repeated "
              f"{SAMPLER_REPEATS} times: median (min–max). Against it, jupyter-resource-usage's "
              "way of reading the same RSS: psutil on the kernel's process and its children from "
              f"the server's process (CPU per reading over {PSUTIL_READINGS} readings, median of "
              f"{SAMPLER_REPEATS} repeats (min–max), shown at the sampler's busy pace of 4 per "
              "second; it gives the RSS only: no peak, limit, budget or heap figures).",
              "", "| who reads | when | messages/s | % of a core |", "|---|---|---|---|"]
    for who, measured in (("one subscriber", shares), ("nobody subscribed", unheard)):
        for state, label in (("idle", "between cells"), ("busy", "while a cell runs")):
            share = spread([x * 100 for x, _ in measured[state]], "{:.3f}")
            rate = statistics.median(r for _, r in measured[state])
            lines.append(f"| memtamer's sampler (in the kernel), {who} | {label} | {rate:.2f} | "
                         f"**{share}** |")
    lines.append(f"| psutil from outside ({spread(psutil_us, '{:.0f}')} µs per reading) "
                 f"| 4 readings/s | — | {statistics.median(psutil_us) * BUSY_HZ / 1e4:.3f} |")
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    runtime = tempfile.mkdtemp(prefix="mtbench", dir="/tmp")
    endpoint = f"ipc://{runtime}/memtamer/bench.sock"
    try:
        spaced = per_cell_costs(endpoint, spaced_us)
        tight = per_cell_costs(endpoint, batch_us)
        shares = sampler_share(endpoint, True)
        unheard = sampler_share(endpoint, False)
        text = section(spaced, tight, shares, unheard,
                       [psutil_reading() for _ in range(SAMPLER_REPEATS)])
    finally:
        shutil.rmtree(runtime, ignore_errors=True)
    print(text)
    write_section("telemetry", text)
