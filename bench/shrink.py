"""Benchmark for %shrink (issue 4); writes the "Shrink" section of bench/RESULTS.md.

  bash bench/run.sh shrink      (bench/.venv has zstandard and lz4)

Downcast: 2 GiB float64 -> float32 in a fresh process each, in place
(memtamer) vs astype; peak is the process's lifetime peak (getrusage), start
is its RSS with the array made.  Compress/restore: 128 MiB of each kind of
data, every blosc codec at level 5, beside plain zstd and lz4 on the same bytes."""

import json
import os
import re
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "RESULTS.md")
GiB = 1024**3

DOWNCAST = r"""
import json, resource, sys, time
import numpy as np
from memtamer import _core
a = np.random.default_rng(0).random(2 * 2**30 // 8)
start = [int(l.split()[1]) * 1024 for l in open('/proc/self/status') if l.startswith('VmRSS')][0]
t = time.perf_counter()
if sys.argv[1] == 'memtamer':
    import memtamer
    row = memtamer.shrink('downcast', 'a')['a']; assert row['in_place'], row
else:
    b = a.astype(np.float32); del a
seconds = time.perf_counter() - t
print(json.dumps({'start': start, 'peak': resource.getrusage(0).ru_maxrss * 1024, 'seconds': seconds}))
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
print(json.dumps({'held': held, 'returned': before - rss(), 'predicted': predicted}))
"""


def delete_rows():
    rows = []
    for how, label in (("gc", "`del data; gc.collect()`"),
                       ("memtamer", "`%shrink del data` (del, collect, `malloc_trim(0)`)")):
        out = subprocess.run([sys.executable, "-c", DELETE, how], check=True,
                             capture_output=True, text=True).stdout
        rows.append((label, json.loads(out)))
    return rows


DOWNCAST_REPEATS = 5


def downcast_rows():
    """Per way: the median of DOWNCAST_REPEATS fresh processes, and the spread."""
    rows = []
    for how in ("memtamer", "astype"):
        runs = []
        for _ in range(DOWNCAST_REPEATS):
            out = subprocess.run([sys.executable, "-c", DOWNCAST, how], check=True,
                                 capture_output=True, text=True).stdout
            runs.append(json.loads(out))
        ratios = sorted(r["peak"] / r["start"] for r in runs)
        seconds = sorted(r["seconds"] for r in runs)
        rows.append((how, statistics.median(ratios), ratios[-1], 2 * GiB / statistics.median(seconds) / 1e9,
                     statistics.median(seconds), seconds[0], seconds[-1]))
    return rows


def datasets(n_bytes):
    import numpy as np

    n = n_bytes // 8
    rng = np.random.default_rng(1)
    t = np.linspace(0, 200 * np.pi, n)
    return {
        "smooth signal (float64)": np.sin(t) + 0.5 * np.sin(3.1 * t),
        "random normal (float64)": rng.normal(size=n),
        "integer counts (int64, Poisson 3)": rng.poisson(3, size=n),
    }


def timed(fn, repeat=2):
    best, result = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t)
    return best, result


def restore_once(core, data, codec):
    proxy = core.compress(data, "x", codec=codec, level=5)
    t = time.perf_counter()
    back = core.restore(proxy)
    return time.perf_counter() - t, back


def codec_rows(n_bytes=128 * 1024**2):
    import lz4.frame
    import zstandard

    from memtamer import _core

    rows = []
    for label, data in datasets(n_bytes).items():
        raw = data.tobytes()
        for codec in ("lz4", "zstd", "blosclz", "zlib"):
            ct, proxy = timed(lambda: _core.compress(data, "x", codec=codec, level=5))
            info = _core.compressed_info(proxy)
            # A proxy restores once and then stands for what it restored: time fresh ones.
            dt, back = min((restore_once(_core, data, codec) for _ in range(2)), key=lambda r: r[0])
            assert back.tobytes() == raw
            rows.append((label, f"memtamer blosc {codec} 5 (shuffle, {os.cpu_count()} thr)",
                         info["nbytes"] / info["cbytes"], n_bytes / ct / 1e9, n_bytes / dt / 1e9))
            del proxy, back
        for name, comp, decomp in (
            ("plain zstd 3 (zstandard)", lambda: zstandard.ZstdCompressor(level=3).compress(raw),
             lambda c: zstandard.ZstdDecompressor().decompress(c)),
            ("plain lz4 frame (lz4)", lambda: lz4.frame.compress(raw), lambda c: lz4.frame.decompress(c)),
        ):
            ct, c = timed(comp)
            dt, back = timed(lambda: decomp(c))
            assert back == raw
            rows.append((label, name, len(raw) / len(c), n_bytes / ct / 1e9, n_bytes / dt / 1e9))
            del c, back
    return rows


def write_section(text):
    begin, end = "<!-- shrink:begin -->", "<!-- shrink:end -->"
    block = f"{begin}\n{text}\n{end}"
    old = open(RESULTS).read() if os.path.exists(RESULTS) else "# Benchmark results\n"
    if begin in old:
        new = re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda m: block, old, flags=re.S)
    else:
        new = old.rstrip("\n") + "\n\n" + block + "\n"
    with open(RESULTS, "w") as f:
        f.write(new)


def main():
    down = downcast_rows()
    codecs = codec_rows()
    deletes = delete_rows()
    lines = ["## Shrink (issue 4)", "",
             f"Machine: {os.cpu_count()} cores; `bench/shrink.py`, {time.strftime('%Y-%m-%d')}.", "",
             "### Downcast 2 GiB float64 → float32", "",
             f"Median of {DOWNCAST_REPEATS} fresh processes per way (spread: the highest peak "
             "ratio, the fastest and slowest run).", "",
             "| how | peak / start (max) | GB/s (input) | seconds (min–max) |", "|---|---|---|---|"]
    lines += [f"| {h} | {ratio:.3f} ({worst:.3f}) | {gbs:.2f} | {s:.2f} ({lo:.2f}–{hi:.2f}) |"
              for h, ratio, worst, gbs, s, lo, hi in down]
    lines += ["", "`memtamer`: `memtamer.shrink('downcast', 'a')`, the path of `%shrink downcast`: "
              "a scan of the values against --rtol, then the conversion within the buffer, both "
              "holding the GIL so that other threads never see it half converted; the tail goes "
              "back through the array's handler. `astype`: `b = a.astype(np.float32); del a`.", "",
              "### Compress and restore, 128 MiB of each", "",
              "| data | codec | ratio | compress GB/s | restore GB/s |", "|---|---|---|---|---|"]
    lines += [f"| {d} | {c} | {r:.2f} | {cg:.2f} | {dg:.2f} |" for d, c, r, cg, dg in codecs]
    lines += ["", "### Delete: RSS given back", "",
              "400,000 bytes objects of 2 kB (glibc's heap) with a survivor every 64 blocks, so "
              "the heap cannot shrink from its top; each way in a fresh process.", "",
              "| how | bytes held | RSS returned | returned / held | predicted |",
              "|---|---|---|---|---|"]
    lines += [f"| {label} | {r['held'] / 2**20:.0f} MiB | {r['returned'] / 2**20:.0f} MiB | "
              f"{r['returned'] / r['held']:.2f} | "
              + (f"{r['predicted'] / 2**20:.0f} MiB" if r['predicted'] is not None else "-") + " |"
              for label, r in deletes]
    write_section("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
