"""Float codecs side by side on public data; writes the "Codecs" section of
bench/RESULTS.md.

  bash bench/run.sh floatcodecs      (bench/.venv has pcodec, zstandard, blosc2
                                  and the packages that ship the data)
  python bench/floatcodecs.py --quick (fewer datasets and runs, prints only)

  ALP_CHECKOUT=DIR bash bench/run.sh floatcodecs   (adds ALP's samples, from
                                  a checkout of github.com/cwida/ALP)

Public data come from packages installed from PyPI (statsmodels,
scikit-learn, vega_datasets bundle them) and from ALP's repository (its
one-row-group samples of real columns): nothing is fetched at run time and
nothing is stored in this repository.  Each dataset is compressed as it is
(a table: its float columns one after the other), never tiled; five
synthetic classes of 64 MiB sit beside them.  Per dataset and codec: the
compression ratio and compress / decompress GB/s (of the uncompressed
bytes), medians of REPEATS runs, with one thread and with every core, every
result compared bit for bit."""

import argparse
import concurrent.futures
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

from _results import write_section

SYNTHETIC_BYTES = 64 * 2**20
LOOP_BYTES = 16 * 2**20
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


# The one-row-group samples in cwida/ALP's data/1_rg_data_sample (131,072
# float64 values each, raw little-endian), by the column names ALP's own
# results use (benchmarks/result/compression_ratio/double/alp_dataset.csv).
ALP_SAMPLES = {
    "bitcoin_transactions_f_tw": "Blockchain",
    "city_temperature_f_tw": "City-Temp",
    "food_prices_tw": "Food-prices",
    "gov26_tw": "Gov/26",
    "nyc29_tw": "NYC/29",
}


def alp_datasets(checkout):
    """name -> (float64 values, where they come from) from a checkout of
    github.com/cwida/ALP, and ALP's published ratio of each full column."""
    import csv
    commit = subprocess.run(["git", "-C", checkout, "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip() or "?"
    with open(os.path.join(checkout, "benchmarks/result/compression_ratio/double/"
                           "alp_dataset.csv")) as f:
        bits = {row["column"]: float(row["size"]) for row in csv.DictReader(f)}
    datasets, published = {}, {}
    for stem, column in ALP_SAMPLES.items():
        values = np.fromfile(os.path.join(checkout, "data/1_rg_data_sample", stem + ".bin"),
                             "<f8")
        name = f"ALP sample: {column}"
        datasets[name] = (values, f"cwida/ALP {commit} data/1_rg_data_sample/{stem}.bin")
        published[name] = 64 / bits[column]
    return datasets, published


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


class Alp:
    """ALP itself, built by g++ from a checkout of cwida/ALP with
    bench/alp.cpp (ALP's own benchmark's encode and decode), one thread, on
    arrays of whole 1024-value vectors; x86-64-v3 (AVX2): ALP's AVX-512
    encoder needs clang, which this machine has not."""
    name = "ALP"

    def __init__(self, checkout, workdir):
        import glob
        self.workdir = workdir
        self.exe = os.path.join(workdir, "alp")
        subprocess.run(["g++", "-O3", "-march=x86-64-v3", "-std=c++17", "-w",
                        "-I", os.path.join(checkout, "include"),
                        os.path.join(os.path.dirname(os.path.abspath(__file__)), "alp.cpp"),
                        *sorted(glob.glob(os.path.join(checkout, "src", "*.cpp"))),
                        "-o", self.exe], check=True)

    def measure(self, a, threads, repeats):
        """As measure() does, or None where ALP does not apply."""
        if threads != 1 or a.size % 1024:
            return None
        path = os.path.join(self.workdir, "values.bin")
        a.astype("<f8").tofile(path)
        out = subprocess.run([self.exe, path, str(repeats), str(max(1, LOOP_BYTES // a.nbytes))],
                             capture_output=True, text=True, check=True).stdout.split()
        return float(out[0]), float(out[1]), float(out[2]), None


# ---- measuring ----

def measure(codec, a, threads, repeats):
    """(ratio, compress GB/s, restore GB/s, method) medians over repeats;
    a small array is compressed again and again within each run, LOOP_BYTES
    in all, so that a run lasts long enough to time, and each result is
    restored once (a memtamer proxy keeps what it restored)."""
    loops = max(1, LOOP_BYTES // a.nbytes)
    squeeze, grow, size, method = [], [], None, None
    for _ in range(repeats):
        t = time.perf_counter()
        packed = [codec.compress(a, threads) for _ in range(loops)]
        squeeze.append(loops * a.nbytes / (time.perf_counter() - t) / 1e9)
        size = codec.size(packed[0])
        method = codec.method(packed[0]) if hasattr(codec, "method") else None
        t = time.perf_counter()
        back = [codec.restore(c, a) for c in packed]
        grow.append(loops * a.nbytes / (time.perf_counter() - t) / 1e9)
        if any(b.tobytes() != a.tobytes() for b in back):
            raise AssertionError(f"{codec.name} did not give back {a.nbytes} bytes bit for bit")
        del packed, back
    return a.nbytes / size, statistics.median(squeeze), statistics.median(grow), method


def harmonic(values):
    return len(values) / sum(1 / v for v in values)


def run(codecs, datasets, repeats):
    threads_tried = sorted({1, CORES})
    results = {}  # (dataset, codec, threads) -> figures, None where the codec does not apply
    for name, (a, source) in datasets.items():
        for codec in codecs:
            if isinstance(codec, Blosc2):
                codec.choose(a)
            for threads in threads_tried:
                if isinstance(codec, Alp):
                    figures = codec.measure(a, threads, repeats)
                else:
                    figures = measure(codec, a, threads, repeats)
                label = codec.name + (f" ({codec.chosen})" if isinstance(codec, Blosc2) else "")
                results[name, codec.name, threads] = figures and (label,) + figures
                if figures:
                    print(f"{name:40s} {label:22s} {threads}t ratio {figures[0]:7.2f} "
                          f"c {figures[1]:5.2f} d {figures[2]:5.2f} GB/s {figures[3] or ''}",
                          flush=True)
    return threads_tried, results


def mean_cell(rows, i, fmt):
    """The harmonic mean of field i of rows, or a dash when a row is missing."""
    return "—" if None in rows else fmt.format(harmonic([r[i] for r in rows]))


def table(codecs, threads_tried, results, groups, datasets, published):
    """groups: (title of its harmonic-mean row, dataset names) in order."""
    lines = []
    for threads in threads_tried:
        lines += [f"#### {threads} thread{'s' if threads > 1 else ''}", "",
                  "| dataset | " + " | ".join(f"{c.name} ratio" for c in codecs) + " | "
                  + " | ".join(f"{c.name} GB/s (c / d)" for c in codecs) + " |",
                  "|---|" + "---|" * (2 * len(codecs))]
        for title, names in groups:
            for name in names:
                row = [results[name, c.name, threads] for c in codecs]
                lines.append(f"| {name} | "
                             + " | ".join("—" if r is None else f"{r[1]:.2f}" for r in row) + " | "
                             + " | ".join("—" if r is None else f"{r[2]:.2f} / {r[3]:.2f}"
                                          for r in row) + " |")
            hm = [[results[n, c.name, threads] for n in names] for c in codecs]
            lines.append(f"| **harmonic mean, {title}** | "
                         + " | ".join(mean_cell(rows, 1, "**{:.2f}**") for rows in hm) + " | "
                         + " | ".join(mean_cell(rows, 2, "{:.2f}") + " / "
                                      + mean_cell(rows, 3, "{:.2f}") for rows in hm) + " |")
        everything = [n for _, names in groups for n in names]
        lines.append("| **harmonic mean, all** | " + " | ".join(
            mean_cell([results[n, c.name, threads] for n in everything], 1, "**{:.2f}**")
            for c in codecs) + " |" + " |" * len(codecs))
        lines.append("")
    lines += ["What memtamer chose (`compressed_info()['method']`, 1 thread), blosc2's filter, "
              "and, for ALP's samples, the ratio ALP's repository publishes for the whole column "
              "(benchmarks/result/compression_ratio/double/alp_dataset.csv: not this sample, "
              "not measured here):", "",
              "| dataset | source | values | memtamer method | blosc2 | ALP published |",
              "|---|---|---|---|---|---|"]
    for _, names in groups:
        for name in names:
            m = results[name, "memtamer", 1][4]
            b = results[name, "blosc2", 1][0]
            alp = f"{published[name]:.2f}" if name in published else ""
            a, source = datasets[name]
            lines.append(f"| {name} | {source} | {a.size:,} | {m} | {b} | {alp} |")
    return lines


# The synthetic classes of decimal doubles, where issue 32 sets its speed goals.
DECIMAL_CLASSES = ["2-decimal readings", "counts stored as float", "3-decimal random walk",
                   "prices with 1 or 2 decimals mixed"]
SYNTHETIC_CLASSES = DECIMAL_CLASSES + ["float32 values stored in float64"]


def fresh_memory_speed(nbytes, repeats=5):
    """(fresh, warm) GB/s of numpy writing nbytes: into a new array (its pages
    faulted in as it writes, what any restore into a new array pays) and
    into the same array again."""
    fresh, warm = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        a = np.empty(nbytes // 8)
        a.fill(1.0)
        fresh.append(nbytes / (time.perf_counter() - t) / 1e9)
        t = time.perf_counter()
        a.fill(2.0)
        warm.append(nbytes / (time.perf_counter() - t) / 1e9)
        del a
    return statistics.median(fresh), statistics.median(warm)


def goals(codecs, threads_tried, results, names, memory_speed):
    """Issue 32's goals, judged on this run's figures."""
    def behind_on(among):
        return [f"{n} ({results[n, 'memtamer', 1][1]:.2f} vs {results[n, 'pcodec', 1][1]:.2f})"
                for n in among if results[n, "memtamer", 1][1] < results[n, "pcodec", 1][1]]

    classes = [n for n in names if n in SYNTHETIC_CLASSES]
    behind_classes, behind = behind_on(classes), behind_on(names)
    ours = harmonic([results[n, "memtamer", 1][1] for n in names])
    theirs = harmonic([results[n, "pcodec", 1][1] for n in names])
    lines = [f"Goal, ratio at or above pcodec's default level on each of the issue's "
             f"{len(classes)} classes (1 thread): "
             f"**{'met' if not behind_classes else 'NOT met'}**"
             + (f", below on {', '.join(behind_classes)}" if behind_classes else "") + ". "
             f"Harmonic mean over every dataset above pcodec's: "
             f"**{'met' if ours > theirs else 'NOT met'}** ({ours:.2f} vs {theirs:.2f}). "
             f"Beyond the goal, on every dataset: at or above on "
             f"{len(names) - len(behind)} of {len(names)}"
             + (f"; below on {', '.join(behind)}" if behind else "") + ".", ""]

    def span(codec, threads, field):
        values = [results[n, codec, threads][field] for n in DECIMAL_CLASSES]
        return f"{min(values):.2f}–{max(values):.2f}"

    fast = all(results[n, "memtamer", 1][2] >= 1.6 and results[n, "memtamer", 1][3] >= 6
               for n in DECIMAL_CLASSES)
    line = (f"Goal, compress ≥ 1.6 and restore ≥ 6 GB/s on one core on decimal doubles (the "
            f"{len(DECIMAL_CLASSES)} decimal synthetic classes): **{'met' if fast else 'NOT met'}**, "
            f"memtamer {span('memtamer', 1, 2)} / {span('memtamer', 1, 3)} GB/s")
    if any(c.name == "ALP" for c in codecs):
        line += f" where ALP, on the same arrays and machine, ran {span('ALP', 1, 2)} / {span('ALP', 1, 3)}"
    fresh, warm = memory_speed
    line += (f". A restore makes a new array, whose pages the kernel zeroes and maps as they "
             f"are first written: in this run numpy wrote a new {SYNTHETIC_BYTES >> 20} MiB "
             f"array at {fresh:.2f} GB/s and the same array again at {warm:.2f} GB/s (medians of "
             f"5); memtamer, pcodec, zstd and blosc2 restore into new arrays, ALP's harness "
             f"decodes into one buffer it reuses")
    if fresh < 6:
        line += ", so no restore into a new array could reach 6 GB/s on one core here"
    lines.append(line + ".")
    if len(threads_tried) > 1:
        most = threads_tried[-1]
        gain = [results[n, "memtamer", most][f] / results[n, "memtamer", 1][f]
                for n in DECIMAL_CLASSES for f in (2, 3)]
        lines += ["", f"Goal, ≥ 1.8x those speeds with {most} cores: "
                      f"**{'met' if min(gain) >= 1.8 else 'NOT met'}**, memtamer's {most}-thread "
                      f"speeds over its 1-thread ones {min(gain):.2f}x–{max(gain):.2f}x."]
    return lines + [""]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="synthetic classes and one run each; print, write nothing")
    parser.add_argument("--repeats", type=int, default=REPEATS,
                        help=f"runs of each measure (default {REPEATS}); the median is shown")
    parser.add_argument("--alp", metavar="CHECKOUT", default=os.environ.get("ALP_CHECKOUT"),
                        help="a checkout of github.com/cwida/ALP (or $ALP_CHECKOUT): adds its "
                             "data samples")
    args = parser.parse_args()
    synthetic = synthetic_datasets(SYNTHETIC_BYTES // 8)
    datasets, published, groups = dict(synthetic), {}, [("synthetic", list(synthetic))]
    if not args.quick:
        if args.alp:
            alp, published = alp_datasets(args.alp)
            datasets.update(alp)
            groups.append(("ALP's samples", list(alp)))
        else:
            print("floatcodecs: no --alp checkout given, ALP's samples left out", file=sys.stderr)
        public = public_datasets()
        datasets.update(public)
        groups.append(("public tables", list(public)))
    codecs = [Memtamer(), Pcodec(), Zstd(), Blosc2()]
    with tempfile.TemporaryDirectory() as workdir:
        if args.alp:
            codecs.append(Alp(args.alp, workdir))
        load_before = os.getloadavg()[0]
        started = time.time()
        memory_speed = fresh_memory_speed(SYNTHETIC_BYTES)
        threads_tried, results = run(codecs, datasets, 1 if args.quick else args.repeats)
    if args.quick:
        return
    import blosc2
    import pcodec
    import zstandard
    text = "\n".join([
        "## Codecs on public and synthetic data (issue 32)", "",
        f"Machine: {CORES} cores, 1-minute load average {load_before:.1f} at the start and "
        f"{os.getloadavg()[0]:.1f} at the end, this benchmark's own threads included (where it "
        f"is above {CORES}, other work shared the machine: speeds are then below an idle "
        f"machine's, and the codecs' turns met different loads); `bench/floatcodecs.py`, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(started))}, "
        f"{(time.time() - started) / 60:.0f} min, one run. Figures are medians of "
        f"{args.repeats} runs, GB/s of uncompressed bytes, every result compared bit for bit. "
        "memtamer: `_core.compress` (what `%shrink compress` calls: codec auto, narrowing) and "
        f"`_core.restore`. pcodec {pcodec.__version__} `standalone.simple_compress` at its "
        f"default level; zstd-3: zstandard {zstandard.__version__}; blosc2 "
        f"{blosc2.__version__} at its default codec and level with the filter that makes a "
        "1 Mi-value sample smallest. With every core, pcodec and zstd compress one piece per "
        "thread (as many pieces as cores, a thread pool per call); memtamer and blosc2 use their "
        "own threads. ALP: built from the checkout of cwida/ALP by g++ -O3 -march=x86-64-v3 "
        "(its AVX-512 encoder needs clang, not on this machine) with `bench/alp.cpp`, which "
        "encodes and decodes as ALP's own benchmark does (row groups, ALP or ALP_RD as its "
        "sampling chooses, FFOR bit packing, exceptions patched, unfused decode) and counts "
        "bits as that benchmark's formula does (no container around them); one thread (ALP "
        "has none of its own), and only on arrays of whole 1024-value vectors: — elsewhere.", "",
        "Each dataset is compressed as it is, never tiled or repeated (a tiled copy has a "
        "period that a codec with a lag or an LZ stage finds and real data do not have). The "
        f"synthetic classes are {SYNTHETIC_BYTES >> 20} MiB each, so their speeds are memory's; "
        "ALP's samples are 1 MiB (in cache, as ALP measures its vectors); the public tables "
        "from statsmodels, scikit-learn and vega_datasets are 5 to 140 KiB, where each call's "
        "fixed cost (threads, headers, sampling, trying codecs) dominates the speed. Small "
        "arrays are compressed and restored again "
        f"and again within a run ({LOOP_BYTES >> 20} MiB in all).", "",
        *goals(codecs, threads_tried, results, list(datasets), memory_speed),
        *table(codecs, threads_tried, results, groups, datasets, published),
    ])
    write_section("codecs", text)


if __name__ == "__main__":
    sys.exit(main())
