"""Benchmark for %shrink; writes the "Shrink" section of bench/RESULTS.md.

  bash bench/run.sh shrink      (bench/.venv has zstandard and lz4)

Downcast: 2 GiB float64 -> float32 in a fresh process each, in place
(memtamer) vs astype, beside one in-place numpy pass over the same array;
peak is the process's lifetime peak (getrusage), start is its RSS with the
array made.  Compress/restore: 128 MiB of each kind of data, memtamer's
default (codec auto, narrowing) and blosc at the threads and levels of plain
zstd and lz4 on the same bytes, medians of 5.  Delete: RSS given back, with
the baselines a user could type."""

import json
import os
import subprocess
import sys
import time

from _results import spread, write_section

GiB = 1024**3
REPEATS = 5

DOWNCAST = r"""
import json, os, resource, sys, time
import numpy as np
from memtamer import _core
a = np.random.default_rng(0).random(2 * 2**30 // 8)
start = [int(l.split()[1]) * 1024 for l in open('/proc/self/status') if l.startswith('VmRSS')][0]
t = time.perf_counter()
np.multiply(a, 1.0, out=a)  # one in-place pass over the same memory: the yardstick
one_pass = time.perf_counter() - t
t = time.perf_counter()
if sys.argv[1] == 'memtamer':
    import memtamer
    row = memtamer.shrink('downcast', 'a')['a']; assert row['in_place'], row
else:
    b = a.astype(np.float32); del a
seconds = time.perf_counter() - t
print(json.dumps({'start': start, 'peak': resource.getrusage(0).ru_maxrss * 1024, 'seconds': seconds,
                  'one_pass': one_pass, 'load': os.getloadavg()[0]}))
"""


DELETE = r"""
import gc, json, sys
def rss():
    return [int(l.split()[1]) * 1024 for l in open('/proc/self/status') if l.startswith('VmRSS')][0]
size = int("2000")  # a run-time value: b"x" * 2000 would be one folded constant
data, keep = [], []
for i in range(400_000):
    data.append(b"x" * size)      # 2 kB blocks live in glibc's heap, not pymalloc's arenas
    if i % 64 == 0:
        keep.append(b"k" * size)  # survivors scattered through that heap
held = sum(sys.getsizeof(b) for b in data)
before = rss()
if sys.argv[1] == 'memtamer':
    import memtamer
    predicted = memtamer.shrink('del', 'data')['data']['predicted']
else:
    predicted = None
    del data
    gc.collect()
    if sys.argv[1] == 'trim':
        import ctypes
        ctypes.CDLL("libc.so.6").malloc_trim(0)
print(json.dumps({'held': held, 'returned': before - rss(), 'predicted': predicted}))
"""


def delete_rows():
    rows = []
    for how, label in (("gc", "`del data; gc.collect()`"),
                       ("trim", "`del data; gc.collect()`, then `malloc_trim(0)` through ctypes"),
                       ("memtamer", "`%shrink del data` (finds and purges IPython's hidden "
                                    "holders, predicts, then del, collect, `malloc_trim(0)`)")):
        runs = [json.loads(subprocess.run([sys.executable, "-c", DELETE, how], check=True,
                                          capture_output=True, text=True).stdout)
                for _ in range(REPEATS)]
        rows.append((label, runs))
    return rows



def downcast_rows():
    """Per way: REPEATS fresh processes."""
    rows = []
    for how in ("memtamer", "astype"):
        runs = [json.loads(subprocess.run([sys.executable, "-c", DOWNCAST, how], check=True,
                                          capture_output=True, text=True).stdout)
                for _ in range(REPEATS)]
        rows.append((how, runs))
    return rows


def readings(n):
    """Sensor readings with two decimals: a random walk, rounded as written."""
    import numpy as np

    walk = 21.5 + np.cumsum(np.random.default_rng(2).normal(0, 0.05, n))
    return np.round(walk, 2)


def datasets(n_bytes):
    import numpy as np

    n = n_bytes // 8
    rng = np.random.default_rng(1)
    t = np.linspace(0, 200 * np.pi, n)
    return {
        "two-decimal readings (float64)": readings(n),
        "smooth signal (float64)": np.sin(t) + 0.5 * np.sin(3.1 * t),
        "random normal (float64)": rng.normal(size=n),
        "integer counts (int64, Poisson 3)": rng.poisson(3, size=n),
    }


def memtamer_way(label, **how):
    """(label, compress(data) -> (seconds, compressed), restore(compressed) -> (seconds, data),
    size(compressed), method(compressed))."""
    from memtamer import _core

    def compress(data):
        t = time.perf_counter()
        proxy = _core.compress(data, "x", **how)
        return time.perf_counter() - t, proxy

    def restore(proxy):
        t = time.perf_counter()
        back = _core.restore(proxy)
        return time.perf_counter() - t, back.tobytes()

    return (label, compress, restore, lambda p: _core.compressed_info(p)["cbytes"],
            lambda p: _core.compressed_info(p)["method"])


def plain_way(label, pack, unpack):
    def compress(data):
        raw = data.tobytes()
        t = time.perf_counter()
        packed = pack(raw)
        return time.perf_counter() - t, packed

    def restore(packed):
        t = time.perf_counter()
        back = unpack(packed)
        return time.perf_counter() - t, back

    return label, compress, restore, len, lambda _: ""


def ways():
    import lz4.frame
    import zstandard

    threads = os.cpu_count()
    return [
        memtamer_way(f"memtamer default (codec auto, narrowing), {threads} threads"),
        memtamer_way("memtamer default (codec auto, narrowing), 1 thread", threads=1),
        memtamer_way("blosc zstd level 2 (= zstd 3), shuffle, no narrowing, 1 thread",
                     codec="zstd", level=2, narrow=False, threads=1),
        plain_way("plain zstd 3 (zstandard), 1 thread",
                  lambda raw: zstandard.ZstdCompressor(level=3).compress(raw),
                  lambda packed: zstandard.ZstdDecompressor().decompress(packed)),
        memtamer_way("blosc lz4 level 9 (= lz4 acceleration 1), shuffle, no narrowing, 1 thread",
                     codec="lz4", level=9, narrow=False, threads=1),
        plain_way("plain lz4 frame (lz4), 1 thread", lz4.frame.compress, lz4.frame.decompress),
        memtamer_way(f"blosc lz4 level 5, shuffle, no narrowing, {threads} threads (the old "
                     "default)", codec="lz4", level=5, narrow=False),
    ]


def codec_rows(n_bytes=128 * 1024**2):
    """Per data and way: REPEATS fresh compressions and restores (a proxy
    restores once), every restore compared with the original bytes."""
    rows = []
    for label, data in datasets(n_bytes).items():
        raw = data.tobytes()
        for name, compress, restore, size, method in ways():
            packs, unpacks, ratios = [], [], []
            for _ in range(REPEATS):
                seconds, packed = compress(data)
                packs.append(n_bytes / seconds / 1e9)
                ratios.append(len(raw) / size(packed))
                how = method(packed)
                seconds, back = restore(packed)
                assert back == raw, (label, name)
                unpacks.append(n_bytes / seconds / 1e9)
                del packed, back
            rows.append((label, name + (f": {how}" if how else ""), ratios, packs, unpacks))
    return rows


def once_or_spread(values, fmt="{:.2f}"):
    """The value where every run gave the same, else its median (min–max)."""
    return fmt.format(values[0]) if len(set(values)) == 1 else spread(values, fmt)


def main():
    down = downcast_rows()
    codecs = codec_rows()
    deletes = delete_rows()
    lines = ["## Shrink (issues 4, 12)", "",
             f"Machine: {os.cpu_count()} cores; `bench/shrink.py`, {time.strftime('%Y-%m-%d')}. "
             f"Every figure is the median of {REPEATS} runs, (min–max) beside it; a figure "
             "that was the same in every run (a compression ratio, the bytes held) is shown "
             "once.", "",
             "### Downcast 2 GiB float64 → float32", "",
             "A fresh process per run. *One pass* is `np.multiply(a, 1.0, out=a)` over the same "
             "resident array in the same process just before: the memory-speed yardstick.", "",
             "| how | peak / start | GB/s (input) | seconds | one pass, seconds | seconds / one pass |",
             "|---|---|---|---|---|---|"]
    for how, runs in down:
        seconds = [r["seconds"] for r in runs]
        lines.append(f"| {how} | {spread([r['peak'] / r['start'] for r in runs], '{:.3f}')} | "
                     f"{spread([2 * GiB / s / 1e9 for s in seconds])} | {spread(seconds)} | "
                     f"{spread([r['one_pass'] for r in runs], '{:.3f}')} | "
                     f"{spread([r['seconds'] / r['one_pass'] for r in runs], '{:.2f}')} |")
    loads = [r["load"] for _, runs in down for r in runs]
    lines += ["", "`memtamer`: `memtamer.shrink('downcast', 'a')`, the path of `%shrink downcast`: "
              "a scan of the values against --rtol, then the conversion within the buffer, both "
              f"vector loops over 256 KiB blocks on {min(4, os.cpu_count())} threads while the "
              "calling thread holds the GIL, so that other threads never see the array half "
              "converted; the tail goes back through the array's handler. `astype`: "
              "`b = a.astype(np.float32); del a`. The machine is shared: its load average (1 min) "
              f"at the end of the runs was {spread(loads, '{:.1f}')}.", "",
              "### Compress and restore, 128 MiB of each", "",
              "Each way compresses the same bytes; memtamer's through `_core.compress` (what "
              "`%shrink compress` calls), restores compared bit for bit. Rows with equal threads "
              "and levels compare blosc with the plain libraries; the two *default* rows show "
              "the gain of a second thread.", "",
              "| data | how (method chosen) | ratio | compress GB/s | restore GB/s |",
              "|---|---|---|---|---|"]
    lines += [f"| {d} | {c} | {once_or_spread(r)} | {spread(cg)} | {spread(dg)} |"
              for d, c, r, cg, dg in codecs]
    lines += ["", "### Delete: RSS given back", "",
              "400,000 bytes objects of 2 kB (glibc's heap) with a survivor every 64 blocks, so "
              "the heap cannot shrink from its top; each run in a fresh process.", "",
              "| how | bytes held | RSS returned | returned / held | predicted |",
              "|---|---|---|---|---|"]
    for label, runs in deletes:
        held = once_or_spread([r["held"] / 2**20 for r in runs], "{:.0f}")
        predicted = [r["predicted"] / 2**20 for r in runs if r["predicted"] is not None]
        lines.append(f"| {label} | {held} MiB | "
                     f"{spread([r['returned'] / 2**20 for r in runs], '{:.0f}')} MiB | "
                     f"{spread([r['returned'] / r['held'] for r in runs])} | "
                     + (f"{spread(predicted, '{:.0f}')} MiB" if predicted else "-") + " |")
    write_section("shrink", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
