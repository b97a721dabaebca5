"""Per-cell cost at any session size (issue 27): InteractiveShell.run_cell('x = 1')
in process, plain IPython against IPython with memtamer loaded, side by side in
one run (fresh interpreters, alternating).

Rows: an empty namespace; 10,000 variables after 10,000 cells of history;
8 idle children; telemetry with 0, 1 and 10 subscribers.  Each figure is the
fastest of BATCHES batches of PER_BATCH cells (load from elsewhere only ever
adds time); the worker pairs run ROUNDS times and the fastest of each side is
kept.

    python bench/percell.py [--python PATH]... [ROW]...   # writes the percell section
    python bench/percell.py worker ROW on|off   # one worker, prints JSON

Each --python runs the rows under that interpreter too (one with memtamer
installed): on 3.12+ the ledger learns what a cell changed from a dict
watcher, on 3.11 from a scan of the namespace.
"""

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _results import write_section

HERE = Path(__file__).resolve().parent

BATCHES = 8
PER_BATCH = 200
ROUNDS = 3
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


def worker(row, on):
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
    per_cell = fastest_batch(cell)
    ledger_steps = []
    if on:  # the ledger's own step, timed inside cell_end: the load of other work barely moves it
        from memtamer import _core

        for _ in range(PER_BATCH):
            cell()
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


def python_version(python):
    return subprocess.run([python, "-c", "import sys; print(sys.version.split()[0])"],
                          capture_output=True, text=True, check=True).stdout.strip()


def run_worker(python, row, on):
    proc = subprocess.run([python, __file__, "worker", row, "on" if on else "off"],
                          capture_output=True, text=True, timeout=900, cwd=HERE)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {row} {on} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(pythons, rows):
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    versions = {python: python_version(python) for python in pythons}
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
        f"{PER_BATCH} cells, fastest of {ROUNDS} fresh interpreters each. Other work shared the "
        "machine (2 cores), so the figures carry its load.",
        "",
        "ledger step: the ledger's work in `cell_end` (what changed, what the cell read, the "
        f"walks), the median of {PER_BATCH} cells, timed inside them (the lowest of the "
        "interpreters). memtamer's own bytes: its bookkeeping after the row's cells "
        "(`report()['own_bytes']`; "
        f"the long row after {HISTORY + BATCHES * PER_BATCH + PER_BATCH:,} cells, goal "
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
    write_section("percell", "\n".join(lines))


def parse(args):
    pythons, rows = [sys.executable], []
    while args:
        if args[0] == "--python" and len(args) > 1:
            pythons.append(args[1])
            args = args[2:]
        elif args[0] in ROWS:
            rows.append(args.pop(0))
        else:
            sys.exit(f"percell.py: {args[0]!r} is neither --python PATH nor a row "
                     f"({', '.join(ROWS)})")
    return pythons, rows or list(ROWS)


if __name__ == "__main__":
    if sys.argv[1:2] == ["worker"]:
        print(json.dumps(worker(sys.argv[2], sys.argv[3] == "on")))
    else:
        main(*parse(sys.argv[1:]))
