"""Spill benchmark (issue 31): how fast `%shrink spill` writes each kind of
object to the notebook's spill store, against a plain numpy `tofile` of the
same bytes into the same directory in the same run, and how fast
`%shrink reattach` brings them back after the kernel is gone (checksum
verified, mapped).

    bash bench/run.sh spill
Writes the "Spill" section of bench/RESULTS.md (between its markers).
Uses about 3 x SIZE of memory and disk at once (SIZE 256 MiB by default).
"""

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from _results import spread, write_section  # noqa: E402

MiB = 1024**2
REPEATS = 3

# Each kind: code making SIZE bytes of it as `value`.
KINDS = {
    "numpy array": "value = np.random.default_rng(0).random(SIZE // 8)",
    "pandas DataFrame": ("value = pd.DataFrame({f'c{i}': np.random.default_rng(i).random(SIZE // 64)"
                         " for i in range(8)})"),
    "Arrow table": ("value = pa.table({f'c{i}': np.random.default_rng(i).random(SIZE // 64)"
                    " for i in range(8)})"),
    "dict of arrays": ("value = {f'a{i}': np.random.default_rng(i).random(SIZE // 64)"
                       " for i in range(8)}"),
}

# One process per measure: spills the value, then times a tofile of the same
# bytes into the same store directory; prints both times.
SPILL_RUN = """
import os, sys, time, numpy as np, pandas as pd, pyarrow as pa
from IPython.core.interactiveshell import InteractiveShell
SIZE = {size}
{make}
ip = InteractiveShell.instance()
ip.run_line_magic("load_ext", "memtamer")
from memtamer import spill_store
ip.user_ns["value"] = value
raw = np.concatenate([np.asarray(c).ravel() for c in (
    [value] if isinstance(value, np.ndarray) else value.values() if isinstance(value, dict)
    else [value[c].to_numpy() for c in value.column_names] if isinstance(value, pa.Table)
    else [value[c].to_numpy() for c in value.columns])])
del value
path = os.path.join(spill_store.store_dir(), "tofile.raw")


def spill():
    os.sync()  # neither pays for the other's writeback
    started = time.perf_counter()
    ip.run_line_magic("shrink", "spill value")
    assert "value" in spill_store._entries, "the spill was refused"
    return time.perf_counter() - started


def plain():
    os.sync()
    started = time.perf_counter()
    raw.tofile(path)
    return time.perf_counter() - started


if {tofile_first}:
    plain_time = plain()
    spilled = spill()
else:
    spilled = spill()
    plain_time = plain()
os.unlink(path)
print(spilled, plain_time, raw.nbytes)
"""

# Spills the value and is SIGKILLed; REATTACH_RUN then times the reattach.
KILLED_RUN = SPILL_RUN.split("del value\n")[0] + """del value, raw
ip.run_line_magic("shrink", "spill value")
import signal
os.kill(os.getpid(), signal.SIGKILL)
"""
REATTACH_RUN = """
import io, contextlib, time
from IPython.core.interactiveshell import InteractiveShell
ip = InteractiveShell.instance()
ip.run_line_magic("load_ext", "memtamer")
started = time.perf_counter()
with contextlib.redirect_stdout(io.StringIO()) as said:
    ip.run_line_magic("shrink", "reattach all")
elapsed = time.perf_counter() - started
assert "value: reattached" in said.getvalue(), said.getvalue()
print(elapsed)
"""


def run(code, env):
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    return proc


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=256, help="MiB per object")
    args = parser.parse_args()
    size = args.size * MiB
    cache = os.path.join(os.path.expanduser("~"), ".cache")
    os.makedirs(cache, exist_ok=True)
    store = tempfile.mkdtemp(prefix="memtamer-bench-spill-", dir=cache)
    env = dict(os.environ, MEMTAMER_SPILL_DIR=store, JPY_SESSION_NAME="bench-spill.ipynb")
    began = time.time()
    rows, medians = [], []
    try:
        for kind, make in KINDS.items():
            spills, plains, reattaches = [], [], []
            for repeat in range(REPEATS):
                proc = run(SPILL_RUN.format(size=size, make=make, tofile_first=repeat % 2), env)
                if proc.returncode != 0:
                    raise RuntimeError(f"{kind}: {proc.stderr[-2000:]}")
                spilled, plain, nbytes = proc.stdout.split()[-3:]
                spills.append(float(spilled))
                plains.append(float(plain))
                run(KILLED_RUN.format(size=size, make=make), env)
                proc = run(REATTACH_RUN, env)
                if proc.returncode != 0:
                    raise RuntimeError(f"{kind} reattach: {proc.stderr[-2000:]}")
                reattaches.append(float(proc.stdout.split()[-1]))
            nbytes = int(nbytes)
            speed = [nbytes / MiB / s for s in spills]
            plain_speed = [nbytes / MiB / s for s in plains]
            ratio = [p / s for s, p in zip(spills, plains)]
            medians.append(statistics.median(ratio))
            rows.append(f"| {kind} | {format(nbytes / MiB, '.0f')} MiB | {spread(speed, '{:.0f}')} MiB/s "
                        f"| {spread(plain_speed, '{:.0f}')} MiB/s | {spread(ratio)} "
                        f"| {spread([r * 1000 for r in reattaches], '{:.0f}')} ms |")
    finally:
        shutil.rmtree(store, ignore_errors=True)
    load = os.getloadavg()
    import pandas
    import pyarrow

    text = f"""## Spill (issue 31)

Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(began))}, {(time.time() - began) / 60:.1f} min, by `bench/run.sh spill` (`bench/spill.py`). Machine: {os.cpu_count()} cores, Linux {platform.release()}; Python {platform.python_version()}, numpy {np.__version__}, pandas {pandas.__version__}, pyarrow {pyarrow.__version__}. Load average at start {load[0]:.2f}, {load[1]:.2f}, {load[2]:.2f}: other work shared the machine, so timings are indicative.

Each object's data is {args.size} MiB of float64. `%shrink spill` in an in-process IPython shell, timed from the magic's call to its return: the write, the read-back compared with the library's own equality, the comparison with the object pickled again, the rebinding and the manifest's checksum. Against it, in the same process, `ndarray.tofile` of the same bytes into the same store directory (both into the page cache; `os.sync()` before each, and the order alternates between repeats, so neither pays for the other's writeback). Reattach: a new process after the spilling one was SIGKILLed, `%shrink reattach all` (checksum verified, file mapped). Median of {REPEATS} (min–max).

| kind | bytes | spill | plain `tofile` | tofile time / spill time | reattach |
|---|---|---|---|---|---|
""" + "\n".join(rows) + """

Goal (spill at ≥ 80% of `tofile`'s speed on every kind): **""" + ("met" if all(r >= 0.8 for r in medians) else "NOT met") + """**. `tofile` only copies into the page cache; the spill times the whole `%shrink` (the measured window, the refusal checks, the table) and, besides the write, reads the file back for its checksum, compares what it reads back with the original by the library's equality, and compares the file with the object pickled again before it rebinds the name.
"""
    write_section("spill", text)
    print(text)


if __name__ == "__main__":
    main()
