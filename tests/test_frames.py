"""Compression as _core does it: codec 'auto', and 8-byte numbers narrowed
before blosc (decimals in disguise, integers by frame of reference).  Every
round trip is compared bit for bit with the original."""

import pickle

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from memtamer import _core


def round_trip(a, **how):
    proxy = _core.compress(a, "a", **how)
    info = _core.compressed_info(proxy)
    back = _core.restore(proxy)
    return info, back


def same_bits(a, b):
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def readings(n, decimals=2, seed=0):
    """A random walk of sensor readings written with a fixed number of decimals."""
    walk = 21.5 + np.cumsum(np.random.default_rng(seed).normal(0, 0.05, n))
    return np.round(walk, decimals)


def test_two_decimal_readings_are_narrowed_and_exact():
    a = readings(2**21)
    info, back = round_trip(a)
    assert same_bits(a, back)
    assert info["auto"] and "decimal digits (10^-2)" in info["method"]
    assert info["nbytes"] / info["cbytes"] >= 3


def test_auto_is_never_worse_than_the_codecs_it_tries():
    """auto tries lz4 (at the level given) and zstd at level 1, each with and
    without narrowing, and takes zstd when it is at least 10% smaller."""
    for a in (readings(2**20), np.random.default_rng(1).normal(size=2**20),
              np.random.default_rng(2).poisson(3, size=2**20)):
        auto, back = round_trip(a)
        assert same_bits(a, back)
        lz4, back = round_trip(a, codec="lz4", level=5)
        assert same_bits(a, back)
        zstd, back = round_trip(a, codec="zstd", level=1)
        assert same_bits(a, back)
        assert auto["cbytes"] <= lz4["cbytes"] * 1.01, (auto, lz4)
        assert auto["cbytes"] <= zstd["cbytes"] / 0.9 * 1.01, (auto, zstd)


def test_few_distinct_doubles_are_compressed_whole():
    """A scaled table (each column's few distinct integers, centred and
    divided by a norm: doubles that are no short decimals) repeats whole
    8-byte values, which byte shuffling cuts apart: 'auto' takes zstd on
    the bytes unshuffled, far smaller than the same zstd shuffled."""
    rng = np.random.default_rng(9)
    columns = []
    for k in range(8):
        x = rng.integers(0, 40 + 10 * k, 30_000).astype(np.float64)
        columns.append((x - x.mean()) / np.sqrt(((x - x.mean()) ** 2).sum()))
    a = np.concatenate(columns)
    at = rng.choice(a.size, 5, replace=False)
    a[at] = [np.nan, -0.0, np.inf, 5e-324, -np.inf]
    auto, back = round_trip(a)
    assert same_bits(a, back)
    assert auto["method"] == "zstd level 3, bytes unshuffled" and auto["codec"] == "zstd"
    shuffled, back = round_trip(a, codec="zstd", level=3)
    assert same_bits(a, back) and "unshuffled" not in shuffled["method"]
    assert auto["cbytes"] < shuffled["cbytes"] / 2
    # A write before the commit: compressed again the way chosen the first time.
    proxy = _core.compress(a, "a")
    a[7] = 1.5
    ns = {"a": a}
    _core.compress_commit(ns, "a", a, proxy)
    info = _core.compressed_info(proxy)
    assert ns["a"] is proxy and info["method"] == "zstd level 3, bytes unshuffled"
    assert same_bits(a, _core.restore(proxy))


def test_odd_values_among_decimals_come_back_bit_for_bit():
    a = readings(300_000)
    odd = np.array([np.nan, -0.0, np.inf, -np.inf, 5e-324, 1e308, 0.1 + 0.2], dtype=np.float64)
    a[::40_000][:len(odd)] = odd[:len(a[::40_000])]
    payload = np.array([0x7FF8000000012345, 0xFFF0000000000001], dtype=np.uint64).view(np.float64)
    a[7], a[-1] = payload
    info, back = round_trip(a)
    assert "decimal digits" in info["method"]
    assert same_bits(a, back)


def test_integers_and_timestamps_are_narrowed():
    stamps = np.arange("2026-01-01", "2026-03-01", dtype="datetime64[s]").astype("datetime64[ns]")
    info, back = round_trip(stamps)
    assert same_bits(stamps, back) and "narrowed integers" in info["method"]
    big = np.uint64(2**64 - 1) - np.random.default_rng(3).integers(0, 50_000, 2**20).astype(np.uint64)
    info, back = round_trip(big)
    assert same_bits(big, back)
    # Narrowing itself, at one codec: with 'auto', rANS on the raw bytes' planes (six of
    # them constant) may come out as small.
    info, back = round_trip(big, codec="lz4")
    assert same_bits(big, back) and "narrowed integers" in info["method"]


def test_pandas_columns_are_narrowed_through_pickle_buffers():
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame({"t": readings(2**20), "n": np.arange(2**20)})
    proxy = _core.compress(df, "df")
    info = _core.compressed_info(proxy)
    back = _core.restore(proxy)
    assert back.equals(df) and pickle.dumps(back) == pickle.dumps(df)
    assert info["nbytes"] / info["cbytes"] >= 3


def test_swapped_byte_order_and_other_dtypes_are_exact():
    for a in (readings(100_000).astype(">f8"), readings(100_000).astype(np.float32),
              np.arange(100_000, dtype=np.int32), np.arange(100_000.0).reshape(100, 1000).T):
        info, back = round_trip(a)
        assert same_bits(a, back)


def test_a_bad_codec_says_what_to_write():
    with pytest.raises(ValueError, match="use auto or one of"):
        _core.compress(np.ones(10), "a", codec="bogus")
    assert _core.codecs()["codecs"].startswith("auto,") and _core.codecs()["default"] == "auto"


EIGHT_BYTE = st.sampled_from([np.dtype(t) for t in ("float64", "int64", "uint64", "<f8", ">f8")])


@st.composite
def decimal_like(draw):
    """Decimals with a few arbitrary bit patterns among them (NaN payloads,
    subnormals, infinities, -0.0 all come out of random bits)."""
    n = draw(st.integers(1, 5000))
    decimals = draw(st.integers(0, 6))
    scale = draw(st.sampled_from([1e-3, 1.0, 1e3, 1e9]))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    a = np.round((rng.random(n) - 0.3) * scale, decimals)
    odd = rng.random(n) < draw(st.sampled_from([0.0, 0.001, 0.05, 0.5]))
    a[odd] = rng.integers(0, 2**64, odd.sum(), dtype=np.uint64).view(np.float64)
    return a


@settings(max_examples=120, deadline=None)
@given(decimal_like(), st.sampled_from([None, "lz4", "zstd", "blosclz"]))
def test_decimal_like_round_trips(a, codec):
    info, back = round_trip(a, codec=codec)
    assert same_bits(a, back)


@settings(max_examples=120, deadline=None)
@given(EIGHT_BYTE.flatmap(lambda dt: hnp.arrays(dt, st.integers(0, 3000))))
def test_any_eight_byte_array_round_trips(a):
    info, back = round_trip(a)
    assert same_bits(a, back)


# Narrowing works in blocks of BLOCK values, each with its own frame of
# reference, and blosc in frames of CHUNK bytes: arrays of several of each,
# with lengths a few values either side of a boundary.
BLOCK = _core.codecs()["block"]
CHUNK = _core.codecs()["chunk"]


@st.composite
def across_boundaries(draw):
    """A multi-block (or multi-chunk) array of narrowable numbers whose
    blocks differ, with odd bit patterns at the places a boundary mistake
    would touch: each block's first and last value and the array's end."""
    dtype = draw(st.sampled_from([np.dtype(t) for t in ("float64", ">f8", "int64", "uint64",
                                                         "float32", "int16")]))
    per_chunk = CHUNK // dtype.itemsize
    unit = draw(st.sampled_from([BLOCK, per_chunk]))
    n = draw(st.integers(1, 3 if unit == BLOCK else 2)) * unit + draw(st.integers(-3, 3))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    # Each block its own level, so that one frame of reference cannot serve two.
    levels = np.repeat(rng.integers(0, 10**6, n // BLOCK + 1), BLOCK)[:n]
    if dtype.kind == "f":
        a = (np.round(rng.random(n) * 100, 2) + levels).astype(dtype)
    else:
        a = (rng.integers(0, 1000, n) + levels).astype(dtype)
    starts = np.arange(0, n, BLOCK)
    places = np.unique(np.concatenate([starts, starts - 1, [n - 1]]))
    places = places[(places >= 0) & (places < n)]
    odd = draw(st.lists(st.sampled_from(places.tolist()), max_size=4))
    if odd:
        raw = a.view(np.dtype(f"u{dtype.itemsize}").newbyteorder(dtype.byteorder))
        raw[odd] = rng.integers(0, 2**(8 * dtype.itemsize), len(odd), dtype=np.uint64).astype(raw.dtype)
    return a


@settings(max_examples=40, deadline=None)
@given(across_boundaries(), st.sampled_from([None, "lz4", "zstd"]))
def test_arrays_across_block_and_chunk_boundaries_round_trip(a, codec):
    info, back = round_trip(a, codec=codec)
    assert same_bits(a, back)
    # The last partial block, on its own: a copy that differs only there
    # must come back different.
    changed = a.copy()
    raw = changed.view(np.uint8)
    raw[-1] ^= 0x01
    info, back = round_trip(changed, codec=codec)
    assert same_bits(changed, back) and not same_bits(a, back)
