"""Each block of a float64 array takes its own form: decimal digits at its
own exponent, or the float32 that holds the same value, or the values as
they are.  Arrays that mix the forms across many blocks (and chunks) come
back bit for bit, odd values included."""

import numpy as np
from hypothesis import given, settings, strategies as st

from codec_cases import BLOCK, CHUNK, ODD, round_trip


def float32_values(n, rng):
    return (20 + 5 * np.sin(np.arange(n) / 500) + rng.normal(0, 0.5, n)).astype(
        np.float32).astype(np.float64)


def decimals(n, places, rng):
    return np.round(rng.uniform(0, 256 / 10**places, n), places)


def sprinkle(a, rng):
    at = rng.choice(a.size, ODD.size, replace=False)
    a[at] = ODD
    return at


def test_float32_values_narrow_to_float32_over_chunks():
    rng = np.random.default_rng(1)
    a = float32_values(CHUNK // 8 + 3 * BLOCK + 17, rng)  # two chunks, the last block short
    sprinkle(a, rng)
    info, back = round_trip(a)
    assert back.tobytes() == a.tobytes()
    assert "float32" in info["method"]
    narrowed, _ = round_trip(a, codec="lz4")  # narrowing alone, at one codec and level
    plain, again = round_trip(a, codec="lz4", narrow=False)
    assert again.tobytes() == a.tobytes()
    assert "float32" in narrowed["method"] and narrowed["cbytes"] < plain["cbytes"]


def test_columns_of_different_forms_each_come_back():
    """Columns one after the other, as a table's values flattened: tenths,
    thousandths, float32 values and noise, each a few blocks long."""
    rng = np.random.default_rng(2)
    columns = [decimals(2 * BLOCK + 5, 1, rng), decimals(3 * BLOCK, 3, rng),
               float32_values(2 * BLOCK + 99, rng), rng.random(BLOCK + 1),
               decimals(2 * BLOCK, 0, rng)]
    a = np.concatenate(columns)
    sprinkle(a, rng)
    for threads in (1, 2):
        info, back = round_trip(a, threads=threads)
        assert back.tobytes() == a.tobytes()
        assert info["cbytes"] < a.nbytes / 2  # most blocks narrowed


def test_a_block_of_odd_values_only():
    a = np.resize(ODD, 3 * BLOCK)
    info, back = round_trip(a)
    assert back.tobytes() == a.tobytes()


def segment(kind, n, seed):
    rng = np.random.default_rng(seed)
    if kind == "float32":
        return float32_values(n, rng)
    if kind == "bits":
        return rng.integers(0, 2**63, n, dtype=np.int64).view(np.float64)  # NaNs, subnormals, huge
    if kind == "odd":
        return np.resize(ODD, n)
    return decimals(n, int(kind), rng)


@settings(max_examples=20, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["0", "1", "2", "4", "6", "float32", "bits", "odd"]),
                          st.integers(1, BLOCK + BLOCK // 2), st.integers(0, 2**32)),
                min_size=1, max_size=5),
       st.integers(0, 2**32))
def test_any_mixture_of_forms_round_trips(segments, seed):
    a = np.concatenate([segment(*s) for s in segments])
    if a.size > ODD.size:
        sprinkle(a, np.random.default_rng(seed))
    info, back = round_trip(a)
    assert back.dtype == a.dtype and back.tobytes() == a.tobytes()


def test_auto_finds_the_period_of_a_seasonal_column():
    """A seasonal table column written with one decimal, many periods, each
    a little different: the plan finds the period, each value is stored as
    its difference from the value one period back, and 'auto' keeps
    whichever codec makes that smallest, far below what any codec makes of
    the raw values."""
    rng = np.random.default_rng(3)
    n = 2**21
    period = np.round(50 + 40 * np.sin(np.arange(309) / 5) + rng.normal(0, 5, 309), 1)
    a = np.round(np.resize(period, n) + rng.integers(-1, 2, n) * 0.1, 1)
    auto, back = round_trip(a)
    assert back.tobytes() == a.tobytes()
    assert "period of 309 values" in auto["method"]
    each = [round_trip(a, codec=c, level=l)[0]["cbytes"] for c, l in (("lz4", 5), ("zstd", 1), ("zstd", 3))]
    raw = [round_trip(a, codec=c, level=l, narrow=False)[0]["cbytes"]
           for c, l in (("lz4", 5), ("zstd", 1), ("zstd", 3))]
    assert auto["cbytes"] <= min(each) * 1.01
    assert auto["cbytes"] < min(raw) / 4


def periodic(kind, n, period, rng):
    """A table of `period` values repeated to n, each repeat off by -1, 0 or
    +1 in its last decimal (decimals), its last bit (noise, float32) or
    units (integers)."""
    jitter = rng.integers(-1, 2, n)
    jitter[:period] = 0
    if kind == "decimals":
        return np.round(np.resize(np.round(rng.normal(20, 8, period), 2), n) + jitter / 100, 2)
    if kind == "noise":
        a = np.resize(rng.random(period), n)
        a.view(np.int64)[:] += jitter
        return a
    if kind == "float32":
        a = np.resize(rng.random(period).astype(np.float32), n)
        a.view(np.int32)[:] += jitter.astype(np.int32)
        return a.astype(np.float64)
    table = rng.integers(-10**12, 10**12, period)
    return (np.resize(table, n) + jitter).astype(np.int64 if kind == "int64" else np.uint64)


def test_periodic_values_over_chunks_come_back_with_either_thread_count():
    """Values that repeat with a period are stored as differences over it,
    across blocks and chunks (two chunks, the last block short), odd values
    among them; restored with one thread and with two, bit for bit."""
    rng = np.random.default_rng(32)
    n = CHUNK // 8 + 3 * BLOCK + 17
    for kind in ("decimals", "noise", "float32", "int64", "uint64"):
        a = periodic(kind, n, 1237, rng)
        if a.dtype == np.float64:
            sprinkle(a, rng)
        sizes = set()
        for threads in (1, 2):
            info, back = round_trip(a, threads=threads)
            assert back.dtype == a.dtype and back.tobytes() == a.tobytes(), kind
            assert "period of 1237 values" in info["method"], (kind, info["method"])
            sizes.add(info["cbytes"])
        assert len(sizes) == 1  # the same bytes whatever the threads
        raw, _ = round_trip(a, narrow=False)
        assert info["cbytes"] < raw["cbytes"] / 2, (kind, info["cbytes"], raw["cbytes"])


def test_short_and_empty_periodic_arrays():
    """Too short to look for a period, or just long enough: every length
    comes back bit for bit."""
    rng = np.random.default_rng(5)
    for n in (0, 1, 2, 31, 32, 33, 47, 100, 1001):
        for kind in ("decimals", "noise", "int64"):
            a = periodic(kind, n, 7, rng)
            info, back = round_trip(a)
            assert back.dtype == a.dtype and back.tobytes() == a.tobytes(), (kind, n)
