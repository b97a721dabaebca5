"""The entropy stage 'auto' may take instead of a blosc codec: the narrowed
digits' byte planes, each coded by rANS (entropy.c).  Arrays are built so
that it is chosen, and come back bit for bit across blocks and chunks, odd
values at block edges included; sizes are held to the entropy of the values
as generated here."""

import numpy as np
from hypothesis import given, settings, strategies as st

from codec_cases import BLOCK, CHUNK, ODD, round_trip
from memtamer import _core

RANS = "rANS by byte plane"


def counts(n, rng):
    return rng.poisson(40, n).astype(np.float64)


def entropy_bytes(a):
    """The order-0 entropy of a's values, in bytes: what no coder of
    independent values goes below."""
    _, freq = np.unique(a, return_counts=True)
    p = freq / a.size
    return -(freq * np.log2(p)).sum() / 8


def at_block_edges(a, rng, k=6):
    """Odd values at the first and last value of some blocks, and at the end."""
    edges = np.concatenate([np.arange(0, a.size, BLOCK), np.arange(BLOCK - 1, a.size, BLOCK),
                            [a.size - 1]])
    at = rng.choice(np.unique(edges), min(k, edges.size), replace=False)
    a[at] = np.resize(ODD, at.size)
    return at


def test_counts_take_rans_within_a_percent_of_their_entropy():
    """Poisson counts stored as float64, over two chunks (the last block
    short): one byte of digits a value, coded within 1% (block headers,
    tables) of the values' own entropy, below what zstd makes of them."""
    rng = np.random.default_rng(40)
    a = counts(CHUNK // 8 + 2 * BLOCK + 5, rng)
    sizes = set()
    for threads in (1, 2):
        info, back = round_trip(a, threads=threads)
        assert back.tobytes() == a.tobytes()
        assert info["method"].startswith(RANS) and "decimal digits (10^-0)" in info["method"]
        assert info["codec"] == "rans"
        sizes.add(info["cbytes"])
    assert len(sizes) == 1  # the same segments (1 MiB of digits each) whatever the threads
    floor = entropy_bytes(a)
    assert floor <= info["cbytes"] <= floor * 1.01, (info["cbytes"], floor)
    zstd, _ = round_trip(a, codec="zstd", level=1)
    assert info["cbytes"] < zstd["cbytes"]


def test_odd_values_at_block_edges_come_back_with_rans():
    rng = np.random.default_rng(41)
    a = counts(3 * BLOCK + 17, rng)
    at_block_edges(a, rng)
    info, back = round_trip(a)
    assert info["method"].startswith(RANS)
    assert back.tobytes() == a.tobytes()
    assert np.array_equal(back.view(np.uint64), a.view(np.uint64))


def test_a_noisy_float32_series_takes_rans_on_its_differences():
    """float32 values held in float64, a slow wave plus noise: the float32
    bits' differences from their neighbours, by byte plane."""
    rng = np.random.default_rng(42)
    n = 4 * BLOCK + 3
    a = (20 + 5 * np.sin(np.arange(n) / 500) + rng.normal(0, 0.5, n)).astype(np.float32)
    a = a.astype(np.float64)
    at_block_edges(a, rng)
    info, back = round_trip(a)
    assert back.tobytes() == a.tobytes()
    assert info["method"].startswith(RANS + " on float32 values")
    lz4, _ = round_trip(a, codec="lz4")
    assert info["cbytes"] < lz4["cbytes"]


def test_a_codec_the_user_names_is_the_one_used():
    a = counts(2 * BLOCK, np.random.default_rng(43))
    for codec in ("lz4", "zstd", "blosclz"):
        info, back = round_trip(a, codec=codec)
        assert back.tobytes() == a.tobytes()
        assert info["codec"] == codec and RANS not in info["method"]


def test_a_write_before_commit_is_compressed_again_with_rans():
    """compress_commit compresses again, with the codec chosen the first
    time, when the array changed after compress: rANS too."""
    a = counts(2 * BLOCK + 1, np.random.default_rng(44))
    proxy = _core.compress(a, "a")
    assert _core.compressed_info(proxy)["codec"] == "rans"
    a[BLOCK] = 12345.0
    ns = {"a": a}
    _core.compress_commit(ns, "a", a, proxy)
    assert ns["a"] is proxy
    back = _core.restore(proxy)
    assert back[BLOCK] == 12345.0 and back.tobytes() == a.tobytes()


@st.composite
def small_alphabets(draw):
    """Integer-valued float64 of a small spread (what rANS codes best),
    across block boundaries, with arbitrary bit patterns at block edges."""
    n = draw(st.sampled_from([1, 2, BLOCK - 1, BLOCK, BLOCK + 1, 2 * BLOCK + 7]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    spread = draw(st.sampled_from([1, 3, 40, 300, 70000]))
    offset = draw(st.sampled_from([0, -5, 1000, -(2**40)]))
    a = (rng.poisson(spread, n) + offset).astype(np.float64)
    odd = draw(st.integers(0, 4))
    if odd:
        edges = np.unique(np.concatenate([np.arange(0, n, BLOCK), np.arange(BLOCK - 1, n, BLOCK),
                                          [n - 1]]))
        edges = edges[edges < n]
        at = rng.choice(edges, min(odd, edges.size), replace=False)
        a.view(np.uint64)[at] = rng.integers(0, 2**64, at.size, dtype=np.uint64)
    return a


@settings(max_examples=40, deadline=None)
@given(small_alphabets(), st.sampled_from([1, 2]))
def test_small_alphabets_round_trip(a, threads):
    info, back = round_trip(a, threads=threads)
    assert back.dtype == a.dtype and back.tobytes() == a.tobytes()


def test_the_proxy_names_rans_without_a_level():
    a = counts(2 * BLOCK, np.random.default_rng(45))
    proxy = _core.compress(a, "a")
    text = repr(proxy)
    assert "(rANS by byte plane, ratio " in text and "rans level" not in text
    lz4 = _core.compress(a, "a", codec="lz4", level=4)
    assert "(lz4 level 4, ratio " in repr(lz4)
    assert _core.restore(proxy).tobytes() == a.tobytes() == _core.restore(lz4).tobytes()
