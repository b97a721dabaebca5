"""Float codecs side by side on public data; writes the "Codecs" section of
bench/RESULTS.md.

  bash bench/run.sh floatcodecs      (bench/.venv has pcodec, zstandard, blosc2
                                  and the packages that ship the data)
  python bench/floatcodecs.py --quick (fewer datasets and runs, prints only)

Public data come from packages installed from PyPI (statsmodels,
scikit-learn, vega_datasets bundle them): nothing is fetched at run time and
nothing is stored in this repository.  Each dataset is its float columns one
after the other, tiled to 64 MiB of float64; five synthetic classes sit
beside them.  Per dataset and codec: the compression ratio and compress /
decompress GB/s (of the uncompressed bytes), medians of REPEATS runs, with
one thread and with every core, every result compared bit for bit."""

import argparse
import concurrent.futures
import os
import statistics
import sys
import time

import numpy as np

from _results import write_section

TILE_BYTES = 64 * 2**20
REPEATS = 3
CORES = os.cpu_count() or 1


# ---- data ----

def columns(frame):
    """The float-valued columns of a DataFrame, one after the other."""
    return np.concatenate([frame[c].to_numpy(np.float64) for c in frame.columns
                           if frame[c].dtype.kind in "fiu"])


def public_datasets():
    """name -> (float64 values, where they come from)."""
    import statsmodels.api as sm
    import sklearn.datasets as skd
    from vega_datasets import local_data

    return {
        "co2 (Mauna Loa, weekly ppm)": (columns(sm.datasets.co2.load_pandas().data),
                                        "statsmodels co2"),
        "sunspots (yearly)": (columns(sm.datasets.sunspots.load_pandas().data),
                              "statsmodels sunspots"),
        "macrodata (US quarterly)": (columns(sm.datasets.macrodata.load_pandas().data),
                                     "statsmodels macrodata"),
        "elnino (sea temperatures)": (columns(sm.datasets.elnino.load_pandas().data),
                                      "statsmodels elnino"),
        "breast cancer (features)": (skd.load_breast_cancer().data.T.ravel().astype(np.float64),
                                     "scikit-learn load_breast_cancer"),
        "diabetes (scaled)": (skd.load_diabetes().data.T.ravel().astype(np.float64),
                              "scikit-learn load_diabetes"),
        "wine (features)": (skd.load_wine().data.T.ravel().astype(np.float64),
                            "scikit-learn load_wine"),
        "seattle weather": (columns(local_data.seattle_weather()), "vega_datasets seattle_weather"),
        "stocks (prices)": (columns(local_data.stocks()), "vega_datasets stocks"),
        "sf temperatures (hourly)": (columns(local_data.sf_temps()), "vega_datasets sf_temps"),
    }


def synthetic_datasets(n):
    """The five classes of issue 32, n values each, from fixed seeds."""
    rng = np.random.default_rng(32)
    return {
        "2-decimal readings": (np.round(21.5 + np.cumsum(rng.normal(0, 0.05, n)), 2), "synthetic"),
        "counts stored as float": (rng.poisson(40, n).astype(np.float64), "synthetic"),
        "3-decimal random walk": (np.round(100 + np.cumsum(rng.normal(0, 0.01, n)), 3),
                                  "synthetic"),
        "float32 values stored in float64": (
            (20 + 5 * np.sin(np.arange(n) / 500) + rng.normal(0, 0.5, n)).astype(np.float32)
            .astype(np.float64), "synthetic"),
        "prices with 1 or 2 decimals mixed": (prices(rng, n), "synthetic"),
    }


def prices(rng, n):
    """A price walk, each written with one or two decimals."""
    walk = np.abs(50 + np.cumsum(rng.normal(0, 0.2, n)))
    return np.where(rng.random(n) < 0.5, np.round(walk, 1), np.round(walk, 2))


def decimals(values):
    """The fewest decimals that write every finite value, or None."""
    finite = values[np.isfinite(values)]
    return next((e for e in range(10) if np.array_equal(np.round(finite, e), finite)), None)


def tiled(values):
    """values repeated to TILE_BYTES, each copy after the first jittered by
    -1, 0 or +1 unit of its last decimal (of its last bit when they are no
    decimals), so that no copy repeats another byte for byte, even less a
    constant (which a frame of reference or a delta takes away): more data
    of the same kind, not the same data again."""
    n = TILE_BYTES // 8
    again = np.resize(values, n)
    jitter = np.random.default_rng(7).integers(-1, 2, n)
    jitter[: values.size] = 0
    places = decimals(values)
    if places is None:
        finite = np.isfinite(again)
        bits = again.view(np.int64)
        bits[finite] += jitter[finite]
        return again
    return np.round(again + jitter * 10.0**-places, places)


# ---- codecs: each a (compress(a, threads) -> opaque, size(opaque), restore(opaque) -> array) ----

def pieces(a, threads):
    return np.array_split(a, threads) if threads > 1 else [a]


def pooled(fn, items, threads):
    if threads == 1:
        return [fn(x) for x in items]
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        return list(pool.map(fn, items))


class Memtamer:
    name = "memtamer"

    def __init__(self):
        from memtamer import _core
        self.core = _core

    def compress(self, a, threads):
        return self.core.compress(a, "a", threads=threads), threads

    def size(self, c):
        return self.core.compressed_info(c[0])["cbytes"]

    def method(self, c):
        return self.core.compressed_info(c[0])["method"]

    def restore(self, c, a):
        return self.core.restore(c[0])


class Pcodec:
    """pcodec at its default level; cores through one piece per thread."""
    name = "pcodec"

    def __init__(self):
        import pcodec
        from pcodec import standalone
        self.pcodec, self.standalone = pcodec, standalone

    def compress(self, a, threads):
        config = self.pcodec.ChunkConfig()
        return pooled(lambda p: self.standalone.simple_compress(p, config), pieces(a, threads),
                      threads), threads

    def size(self, c):
        return sum(len(p) for p in c[0])

    def restore(self, c, a):
        return np.concatenate(pooled(self.standalone.simple_decompress, c[0], c[1]))


class Zstd:
    """zstd level 3 (zstandard); cores through one frame per thread."""
    name = "zstd-3"

    def __init__(self):
        import zstandard
        self.zstd = zstandard

    def compress(self, a, threads):
        def one(p):
            return self.zstd.ZstdCompressor(level=3).compress(p.tobytes())
        return pooled(one, pieces(a, threads), threads), threads

    def size(self, c):
        return sum(len(p) for p in c[0])

    def restore(self, c, a):
        def one(p):
            return np.frombuffer(self.zstd.ZstdDecompressor().decompress(p), np.float64)
        return np.concatenate(pooled(one, c[0], c[1]))


class Blosc2:
    """blosc2's default codec and level with the filter that makes a
    sample smallest (shuffle, bitshuffle, bytedelta), its own threads."""
    name = "blosc2"

    def __init__(self):
        import blosc2
        self.blosc2 = blosc2
        self.filters = {
            "shuffle": [blosc2.Filter.SHUFFLE],
            "bitshuffle": [blosc2.Filter.BITSHUFFLE],
            "bytedelta": [blosc2.Filter.SHUFFLE, blosc2.Filter.BYTEDELTA],
        }
        self.chosen = None

    def choose(self, a):
        sample = a[: 2**20]
        sizes = {name: len(self.blosc2.compress2(sample, typesize=8, filters=f,
                                                 filters_meta=[0] * len(f)))
                 for name, f in self.filters.items()}
        self.chosen = min(sizes, key=sizes.get)

    def compress(self, a, threads):
        f = self.filters[self.chosen]
        return self.blosc2.compress2(a, typesize=8, filters=f, filters_meta=[0] * len(f),
                                     nthreads=threads), threads

    def size(self, c):
        return len(c[0])

    def restore(self, c, a):
        out = np.empty_like(a)
        self.blosc2.decompress2(c[0], dst=out, nthreads=c[1])
        return out


# ---- measuring ----

def measure(codec, a, threads, repeats):
    """(ratio, compress GB/s, restore GB/s, method) medians over repeats."""
    squeeze, grow, size, method = [], [], None, None
    for _ in range(repeats):
        t = time.perf_counter()
        c = codec.compress(a, threads)
        squeeze.append(a.nbytes / (time.perf_counter() - t) / 1e9)
        size = codec.size(c)
        method = codec.method(c) if hasattr(codec, "method") else None
        t = time.perf_counter()
        back = codec.restore(c, a)
        grow.append(a.nbytes / (time.perf_counter() - t) / 1e9)
        if back.tobytes() != a.tobytes():
            raise AssertionError(f"{codec.name} did not give back {a.nbytes} bytes bit for bit")
        del c, back
    return a.nbytes / size, statistics.median(squeeze), statistics.median(grow), method


def harmonic(values):
    return len(values) / sum(1 / v for v in values)


def run(datasets, repeats):
    codecs = [Memtamer(), Pcodec(), Zstd(), Blosc2()]
    threads_tried = sorted({1, CORES})
    results = {}  # (dataset, codec, threads) -> figures
    notes = {}
    for name, (values, source) in datasets.items():
        a = tiled(values)
        notes[name] = (source, values.size)
        for codec in codecs:
            if isinstance(codec, Blosc2):
                codec.choose(a)
            for threads in threads_tried:
                figures = measure(codec, a, threads, repeats)
                label = codec.name + (f" ({codec.chosen})" if isinstance(codec, Blosc2) else "")
                results[name, codec.name, threads] = (label,) + figures
                print(f"{name:40s} {label:22s} {threads}t ratio {figures[0]:7.2f} "
                      f"c {figures[1]:5.2f} d {figures[2]:5.2f} GB/s {figures[3] or ''}",
                      flush=True)
        del a
    return codecs, threads_tried, results, notes


def table(codecs, threads_tried, results, notes):
    names = list(notes)
    lines = []
    for threads in threads_tried:
        lines += [f"#### {threads} thread{'s' if threads > 1 else ''}", "",
                  "| dataset | " + " | ".join(f"{c.name} ratio" for c in codecs) + " | "
                  + " | ".join(f"{c.name} GB/s (c / d)" for c in codecs) + " |",
                  "|---|" + "---|" * (2 * len(codecs))]
        for name in names:
            row = [results[name, c.name, threads] for c in codecs]
            lines.append(f"| {name} | " + " | ".join(f"{r[1]:.2f}" for r in row) + " | "
                         + " | ".join(f"{r[2]:.2f} / {r[3]:.2f}" for r in row) + " |")
        hm = [[results[n, c.name, threads] for n in names] for c in codecs]
        lines.append("| **harmonic mean** | "
                     + " | ".join(f"**{harmonic([r[1] for r in rows]):.2f}**" for rows in hm)
                     + " | " + " | ".join(f"{harmonic([r[2] for r in rows]):.2f} / "
                                          f"{harmonic([r[3] for r in rows]):.2f}" for rows in hm)
                     + " |")
        lines.append("")
    lines += ["What memtamer chose (`compressed_info()['method']`, 1 thread) and blosc2's filter:",
              "", "| dataset | source | values before tiling | memtamer method | blosc2 |",
              "|---|---|---|---|---|"]
    for name in names:
        m = results[name, "memtamer", 1][4]
        b = results[name, "blosc2", 1][0]
        lines.append(f"| {name} | {notes[name][0]} | {notes[name][1]:,} | {m} | {b} |")
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="synthetic classes and one run each; print, write nothing")
    parser.add_argument("--repeats", type=int, default=REPEATS,
                        help=f"runs of each measure (default {REPEATS}); the median is shown")
    args = parser.parse_args()
    datasets = synthetic_datasets(TILE_BYTES // 8)
    if not args.quick:
        datasets.update(public_datasets())
    codecs, threads_tried, results, notes = run(datasets, 1 if args.quick else args.repeats)
    if args.quick:
        return
    import blosc2
    import pcodec
    import zstandard
    load = os.getloadavg()[0]
    text = "\n".join([
        "## Codecs on public and synthetic data (issue 32)", "",
        f"Machine: {CORES} cores, shared with other work while this ran (load average "
        f"{load:.1f} at the end); `bench/floatcodecs.py`, {time.strftime('%Y-%m-%d')}. Each dataset "
        "is tiled to 64 MiB of float64; figures are medians of "
        f"{args.repeats} runs, GB/s of uncompressed bytes, every result compared bit for bit. "
        f"memtamer: `_core.compress` (what `%shrink compress` calls: codec auto, narrowing) and "
        f"`_core.restore`. pcodec {pcodec.__version__} `standalone.simple_compress` at its "
        f"default level; zstd-3: zstandard {zstandard.__version__}; blosc2 "
        f"{blosc2.__version__} at its default codec and level with the filter that makes a "
        "1 Mi-value sample smallest. With every core, pcodec and zstd compress one piece per "
        "thread (as many pieces as cores); memtamer and blosc2 use their own threads.", "",
        "Tiling: each copy of a public dataset after the first is jittered by -1, 0 or +1 unit "
        "of its last decimal (of its last bit where its values are no decimals), at random, so "
        "that no copy repeats another byte for byte, nor up to a constant: plain repeats (or "
        "shifted ones, which a frame of reference takes back to repeats) let the codecs with an "
        "LZ stage (memtamer, zstd, blosc2) match whole copies, which pcodec does not look for, "
        "and would say nothing of the data. The jitter costs every codec the same entropy. "
        "What is left is still a period: pcodec's lookback delta encoding and memtamer's lag "
        "(each value less the value one period back; `method` names the period) find it, and "
        "that is most of their ratio on the public datasets; the synthetic classes have none. "
        "The load average says how far the speeds are from an idle machine's.", "",
        *table(codecs, threads_tried, results, notes),
    ])
    write_section("codecs", text)


if __name__ == "__main__":
    sys.exit(main())
