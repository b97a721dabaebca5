"""Spill benchmark (issue 31): how fast `%shrink spill` writes each kind of
object to the notebook's spill store, against a plain numpy `tofile` of the
same bytes into the same directory in the same run (and `pickle.dump` and
`np.save`, which users would write instead), and how fast
`%shrink reattach` brings them back after the kernel is gone (checksum
verified, mapped).

Two measures of the write.  Into the page cache: each returns once the
kernel holds the bytes, which is all `%shrink spill` waits for (it does not
fsync: what it guards against is the kernel's death, which the page cache
outlives; after a machine's crash a file the disk never got fails its
checksum and reattach refuses it; a sync would make every spill, and every
rule's checkpoint, wait for the disk for nothing the manifest promises).
To the disk, what the issue's goal names ("the disk's sequential write
speed"): the same, each followed by an fsync of what it wrote (`tofile`'s
file; the spill's file and its manifest), so both pay the same sync and the
time ends when the disk has the bytes.

    bash bench/run.sh spill
Writes the "Spill" section of bench/RESULTS.md (between its markers).
Uses about 3 x SIZE of memory and disk at once (SIZE 256 MiB by default).
"""

import argparse
import ast
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
REPEATS = 6  # each way leads once (the first twice where np.save is not run)

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

# One process per kind: each repeat makes the value afresh (not timed), then
# times, in an order that rotates between repeats, `%shrink spill` and what
# a user would write instead, each into the store's directory, os.sync()
# before each so that none pays for another's writeback: `tofile` of the
# same bytes, `pickle.dump` of the object (protocol 5, in band), and
# `np.save` (`np.savez` for the dict) where numpy takes the object; and
# `%shrink spill` and `tofile` each followed by an fsync of its files.
SPILL_RUN = """
import os, pickle, sys, time, numpy as np, pandas as pd, pyarrow as pa
from IPython.core.interactiveshell import InteractiveShell
SIZE = {size}
ip = InteractiveShell.instance()
ip.run_line_magic("load_ext", "memtamer")
from memtamer import spill_store
directory = spill_store.store_dir()


def fresh():
    {make}
    return value


def raw_bytes(value):
    return np.concatenate([np.asarray(c).ravel() for c in (
        [value] if isinstance(value, np.ndarray) else value.values() if isinstance(value, dict)
        else [value[c].to_numpy() for c in value.column_names] if isinstance(value, pa.Table)
        else [value[c].to_numpy() for c in value.columns])])


def fsync(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def timed(write, value, durable=False):
    path = os.path.join(directory, "plain.out")
    os.sync()
    started = time.perf_counter()
    write(path, value)
    if durable:
        fsync(path)
    elapsed = time.perf_counter() - started
    os.unlink(path)
    return elapsed


def spill(durable=False):
    os.sync()
    started = time.perf_counter()
    ip.run_line_magic("shrink", "spill value")
    if durable:
        fsync(os.path.join(directory, spill_store._entries["value"]["file"]))
        fsync(spill_store._manifest_path(directory, spill_store._owner()))
    elapsed = time.perf_counter() - started
    assert "value" in spill_store._entries, "the spill was refused"
    del ip.user_ns["value"]  # its file goes with it
    return elapsed


def pickle_dump(path, value):
    with open(path, "wb") as f:
        pickle.dump(value, f, protocol=5)


def np_save(path, value):
    with open(path, "wb") as f:
        (np.savez(f, **value) if isinstance(value, dict) else np.save(f, value))


ways = {{"spill": None, "tofile": None, "spill+fsync": None, "tofile+fsync": None,
        "pickle": pickle_dump}}
probe = fresh()
if isinstance(probe, (np.ndarray, dict)):
    ways["np.save"] = np_save
nbytes = raw_bytes(probe).nbytes
del probe
times = {{way: [] for way in ways}}
for repeat in range({repeats}):
    order = list(ways)[repeat % len(ways):] + list(ways)[:repeat % len(ways)]
    for way in order:
        durable = way.endswith("+fsync")
        if way.startswith("spill"):
            ip.user_ns["value"] = fresh()  # the namespace's alone, or the spill is refused
            times[way].append(spill(durable))
        elif way.startswith("tofile"):  # the bytes alone, made before the clock starts
            raw = raw_bytes(fresh())
            times[way].append(timed(lambda p, _: raw.tofile(p), None, durable))
            del raw
        else:
            times[way].append(timed(ways[way], fresh()))
print(repr((nbytes, times)))
"""

# Spills the value and is SIGKILLed; REATTACH_RUN then times the reattach.
KILLED_RUN = """
import os, signal, numpy as np, pandas as pd, pyarrow as pa
from IPython.core.interactiveshell import InteractiveShell
SIZE = {size}
ip = InteractiveShell.instance()
ip.run_line_magic("load_ext", "memtamer")
{make}
ip.user_ns["value"] = value
del value
ip.run_line_magic("shrink", "spill value")
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
    load = os.getloadavg()
    rows, medians, cached_medians = [], [], []
    try:
        for kind, make in KINDS.items():
            proc = run(SPILL_RUN.format(size=size, make=make, repeats=REPEATS), env)
            if proc.returncode != 0:
                raise RuntimeError(f"{kind}: {proc.stderr[-2000:]}")
            nbytes, times = ast.literal_eval(proc.stdout.strip().splitlines()[-1])
            run(KILLED_RUN.format(size=size, make=make), env)
            proc = run(REATTACH_RUN, env)
            if proc.returncode != 0:
                raise RuntimeError(f"{kind} reattach: {proc.stderr[-2000:]}")
            reattach = float(proc.stdout.split()[-1])
            # The ratios within each repeat: both ran moments apart, under the same load.
            cached = [p / s for s, p in zip(times["spill"], times["tofile"])]
            durable = [p / s for s, p in zip(times["spill+fsync"], times["tofile+fsync"])]
            cached_medians.append(statistics.median(cached))
            medians.append(statistics.median(durable))

            def speed(way):
                if way not in times:
                    return "—"
                return spread([nbytes / MiB / t for t in times[way]], "{:.0f}") + " MiB/s"

            rows.append(f"| {kind} | {nbytes / MiB:.0f} MiB | {speed('spill+fsync')} "
                        f"| {speed('tofile+fsync')} | **{spread(durable)}** | {speed('spill')} "
                        f"| {speed('tofile')} | {spread(cached)} | {speed('pickle')} "
                        f"| {speed('np.save')} | {reattach * 1000:.0f} ms |")
    finally:
        shutil.rmtree(store, ignore_errors=True)
    import pandas
    import pyarrow

    text = f"""## Spill (issue 31)

Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(began))}, {(time.time() - began) / 60:.1f} min, by `bench/run.sh spill` (`bench/spill.py`). Machine: {os.cpu_count()} cores, Linux {platform.release()}; Python {platform.python_version()}, numpy {np.__version__}, pandas {pandas.__version__}, pyarrow {pyarrow.__version__}. Load average at start {load[0]:.2f}, {load[1]:.2f}, {load[2]:.2f}: other work (builds and test runs of other sessions) shared the machine, so timings are indicative and swing with its load.

Each object's data is {args.size} MiB of float64. `%shrink spill` in an in-process IPython shell, timed from the magic's call to its return: the write (the GIL released), then, holding the GIL, the comparison of the file with what the variable holds then (so no other thread's write is lost), with the manifest's checksum computed in the same pass; a pickled kind is also read back and compared by its library's own equality. Beside it, in the same process and into the same directory, `ndarray.tofile` of the same bytes. Two measures, each taken for both: **to the disk**, each followed by an fsync of what it wrote (`tofile`'s file; the spill's file and its manifest), so the time ends when the disk has the bytes, which is the disk's sequential write speed the goal names; and **into the page cache**, each returning once the kernel holds the bytes (all a spill waits for: it guards against the kernel's death, which the page cache outlives, and a file a machine's crash left torn fails its checksum at reattach). A spill does not wait for the disk, but its writeback thread asks the kernel to start writing each 64 MiB piece as soon as it is in the page cache, so the disk works while the spill compares and checksums; `tofile`'s bytes wait in the page cache for its fsync (or the kernel's flusher). In the page cache `tofile` runs at memory speed, so there every pass the spill makes over the bytes after writing them shows in full, and so does the CPU the writeback thread takes. Also what a user would write instead, into the page cache: `pickle.dump` of the object (protocol 5) and `np.save` (`np.savez` for the dict) where numpy takes it. `os.sync()` before each, so none pays for another's writeback, and the order rotates between repeats. Reattach: a new process after the spilling one was SIGKILLed, `%shrink reattach all` (checksum verified, file mapped), once. Median of {REPEATS} (min–max); each ratio is taken within a repeat (speed of spill / speed of `tofile`).

| kind | bytes | spill + fsync | `tofile` + fsync | to disk: spill / `tofile` | spill | `tofile` | page cache: spill / `tofile` | `pickle.dump` | `np.save` | reattach |
|---|---|---|---|---|---|---|---|---|---|---|
""" + "\n".join(rows) + """

Goal (spill at ≥ 80% of the disk's sequential write speed, measured against `tofile` of the same bytes, to the disk, on every kind): **""" + ("met" if all(r >= 0.8 for r in medians) else "NOT met") + f"""** (medians {", ".join(f"{r:.2f}" for r in medians)}). Into the page cache, where no disk is measured: {", ".join(f"{r:.2f}" for r in cached_medians)} of `tofile`'s speed; there the pass that compares the file with the variable (reading twice the bytes `tofile` reads) and checksums it costs about what the write does, and a pickled kind adds the read-back equality.
"""
    write_section("spill", text)
    print(text)


if __name__ == "__main__":
    main()
