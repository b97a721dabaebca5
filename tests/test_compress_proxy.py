"""The Compressed proxy in this process: every use restores it (once) and
rebinds its name in its module; an interrupted restore leaves it compressed.
Ground truth is a copy of the data taken before compressing."""

import copy
import pickle
import sys
import types

import numpy as np
import pytest

from memtamer import _core
from memtamer.actions import _compress_refusal
from memtamer.options import parse_options
from memtamer.restore import names_read
from memtamer.shrinker import run


@pytest.fixture
def module():
    """A module whose namespace the proxies come from."""
    m = types.ModuleType("memtamer_test_namespace")
    sys.modules[m.__name__] = m
    yield m
    del sys.modules[m.__name__]


def compressed(module, name, value):
    setattr(module, name, _core.compress(value, name, owner=module))
    return getattr(module, name)


USES = {
    "attribute": lambda p: p.sum(),
    "add": lambda p: p + 1,
    "radd": lambda p: 1 + p,
    "negative": lambda p: -p,
    "power": lambda p: p ** 2,
    "matmul": lambda p: p @ p,
    "compare": lambda p: p == 3,
    "item": lambda p: p[3],
    "slice": lambda p: p[10:20],
    "iter": lambda p: list(iter(p)),
    "contains": lambda p: 3 in p,
    "bool": lambda p: bool(p[1:2]),
    "str": str,
    "format": lambda p: f"{p}",
    "asarray": np.asarray,
    "buffer": lambda p: memoryview(p).tolist(),
    "ufunc": np.sqrt,
    "pickle": lambda p: pickle.loads(pickle.dumps(p)),
    "deepcopy": copy.deepcopy,
}


@pytest.mark.parametrize("use", USES, ids=str)
def test_any_use_restores_and_rebinds(module, use):
    original = np.arange(1000)
    proxy = compressed(module, "x", original.copy())
    assert type(module.x) is _core.Compressed
    got = USES[use](proxy)
    expected = USES[use](original)
    if isinstance(got, str):
        assert got == expected
    else:
        assert np.array_equal(np.asarray(got), np.asarray(expected))
    assert type(module.x) is np.ndarray and np.array_equal(module.x, original)
    assert _core.compressed_info(proxy)["restored"]


def test_the_proxy_answers_for_the_restored_object_from_then_on(module):
    proxy = compressed(module, "xs", [1, 2, 3])
    proxy.append(4)  # restores, then changes the restored list
    assert module.xs == [1, 2, 3, 4]
    proxy.append(5)  # the same list, not a second restore
    assert module.xs == [1, 2, 3, 4, 5] and proxy == [1, 2, 3, 4, 5]
    shallow = copy.copy(proxy)
    assert shallow == module.xs and shallow is not module.xs
    proxy += [6]
    assert proxy is module.xs and module.xs[-1] == 6


def test_type_and_size_do_not_restore(module):
    proxy = compressed(module, "a", np.zeros(10**6))
    assert isinstance(proxy, _core.Compressed) and not isinstance(proxy, np.ndarray)
    info = _core.compressed_info(proxy)
    assert sys.getsizeof(proxy) >= info["cbytes"] and sys.getsizeof(proxy) < info["nbytes"] / 10
    assert "restore" in repr(proxy)
    assert not _core.compressed_info(proxy)["restored"] and type(module.a) is _core.Compressed


def test_an_arrays_description_does_not_restore(module):
    """shape, dtype, ndim, size, nbytes and len() come from the proxy's own
    description of the array; anything else restores it."""
    for original in (np.arange(12.0).reshape(3, 4)[:, ::2], np.array(2.5),
                     np.zeros(0, dtype="int32"), np.arange(10**6, dtype=np.uint16)):
        proxy = compressed(module, "a", original.copy())
        for attribute in ("shape", "dtype", "ndim", "size", "nbytes"):
            assert getattr(proxy, attribute) == getattr(original, attribute), attribute
        if original.ndim:
            assert len(proxy) == len(original)
        else:
            with pytest.raises(TypeError, match="unsized"):
                len(original)
            with pytest.raises(TypeError, match="unsized"):
                len(proxy)
        assert type(module.a) is _core.Compressed and not _core.compressed_info(proxy)["restored"]
        assert proxy.strides == original.copy().strides  # restores
        assert type(module.a) is np.ndarray and module.a.tobytes() == original.tobytes()


def test_len_of_a_pickled_object_restores_it(module):
    proxy = compressed(module, "xs", list(range(5)))
    assert len(proxy) == 5 and module.xs == list(range(5))


def test_an_interrupted_restore_leaves_it_compressed(module):
    original = np.random.default_rng(0).poisson(3, 10**6)
    proxy = compressed(module, "counts", original.copy())

    def interrupt(done, total):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _core.restore(proxy, progress=interrupt)
    assert type(module.counts) is _core.Compressed and not _core.compressed_info(proxy)["restored"]
    back = _core.restore(proxy)
    assert np.array_equal(back, original) and module.counts is back


def test_a_name_rebound_meanwhile_is_left_alone(module):
    proxy = compressed(module, "y", np.arange(10))
    module.y = "something else"
    assert proxy.sum() == 45
    assert module.y == "something else"


def test_names_read_skips_function_bodies():
    cell = ("def total(a=x):\n    return counts.sum()\n"
            "f = lambda: hidden\n"
            "n += 1\nprint(m)")
    assert names_read(None, cell) == {"x", "n", "print", "m"}


def test_compress_refusal_decides_without_changing_anything():
    def f():
        return 1

    ns = {"f": f, "ok": np.zeros(2**18), "tiny": np.zeros(3)}
    options = parse_options("compress", {})
    assert _compress_refusal(None, ns, "f", options)["status"] == "refused"
    assert _compress_refusal(None, ns, "tiny", options)["status"] == "refused"
    assert _compress_refusal(None, ns, "ok", options) is None
    assert ns["f"] is f and type(ns["ok"]) is np.ndarray and type(ns["tiny"]) is np.ndarray


@pytest.mark.parametrize("make", [
    lambda: list(range(2_000_000)),
    lambda: {i: str(i) for i in range(300_000)},
    lambda: [bytes(1000) for _ in range(100_000)],
    lambda: np.arange(4_000_000.0)[::2],  # a strided view: its first rows are sampled
], ids=["ints", "dict", "blobs", "strided"])
def test_the_sampled_estimate_is_close_to_the_real_size(make):
    ns = {"x": make()}
    row = run(None, ns, "compress", ["x"], {"dry_run": True, "copy": True, "codec": "lz4"})["x"]
    assert row["status"] == "dry-run", row
    real = _core.compressed_info(_core.compress(ns["x"], "x", codec="lz4"))["cbytes"]
    assert row["bytes_after"] == pytest.approx(real, rel=0.1)
    # With auto, zstd may win: it finds more to share in the whole than in
    # a sample, so the estimate errs high (a refusal near the threshold is
    # the safe side), never much low.
    row = run(None, ns, "compress", ["x"], {"dry_run": True, "copy": True})["x"]
    real = _core.compressed_info(_core.compress(ns["x"], "x"))["cbytes"]
    assert 0.9 * real <= row["bytes_after"] <= 1.25 * real
