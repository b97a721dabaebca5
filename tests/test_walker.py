"""Deep sizes and exclusive bytes against truth built from the parts we
construct (sys.getsizeof of each distinct object, numpy's nbytes)."""

import array
import sys

import numpy as np
import pandas as pd
import pytest

import memtamer
from memtamer import _core


def getsizeof_all(*objects):
    """Sum of sys.getsizeof over distinct objects: the truth for a graph we built."""
    seen = {id(o): o for o in objects}
    return sum(sys.getsizeof(o) for o in seen.values())


def array_truth(a):
    # The header without the buffer, from a view of the same shape.
    return a.nbytes + sys.getsizeof(a[...])


def test_list_of_floats():
    values = [float(i) + 0.5 for i in range(10_000)]
    assert memtamer.deep_size(values) == getsizeof_all(values, *values)


def test_array_counts_its_buffer():
    a = np.ones((300, 7))
    assert memtamer.deep_size(a) == array_truth(a)


def test_view_counts_its_base_once():
    a = np.arange(100_000, dtype=np.float64)
    v = a[::3]
    assert memtamer.deep_size(v) == sys.getsizeof(v) + array_truth(a)
    views = [a[i:] for i in range(50)]
    assert memtamer.deep_size(views) == (sys.getsizeof(views) + sum(sys.getsizeof(x) for x in views)
                                         + array_truth(a))


def test_list_holding_an_array_twice():
    a = np.zeros(10_000)
    pair = [a, a]
    assert memtamer.deep_size(pair) == sys.getsizeof(pair) + array_truth(a)


def test_object_array_walks_its_items():
    words = [f"word-{i}" * 3 for i in range(1000)]
    a = np.array(words, dtype=object)
    assert memtamer.deep_size(a) == array_truth(a) + getsizeof_all(*words)


def test_nested_dicts():
    inner_list = [1.25, 2.5, 3.75]
    inner = {"leaf": inner_list}
    outer = {"inner": inner, "other": "x" * 1000}
    expected = getsizeof_all(outer, inner, inner_list, *inner_list, "inner", "other", "leaf",
                             outer["other"])
    assert memtamer.deep_size(outer) == expected


class Slotted:
    __slots__ = ("payload", "label")

    def __init__(self, payload, label):
        self.payload = payload
        self.label = label


class Plain:
    pass


def test_slots_object():
    s = Slotted(np.ones(1000), "label-" * 20)
    assert memtamer.deep_size(s) == sys.getsizeof(s) + array_truth(s.payload) + sys.getsizeof(s.label)


def test_instance_dict():
    p = Plain()
    p.data = [2.5] * 100  # one float object, referenced 100 times
    attrs = p.__dict__  # materialize it, as the truth needs it
    expected = getsizeof_all(p, attrs, "data", p.data, p.data[0])
    assert memtamer.deep_size(p) == expected


def test_self_referencing_containers():
    loop = [3.5]
    loop.append(loop)
    assert memtamer.deep_size(loop) == getsizeof_all(loop, loop[0])
    d = {}
    d["me"] = d
    assert memtamer.deep_size(d) == getsizeof_all(d, "me")


def test_buffers_by_their_owner():
    raw = bytearray(100_000)
    assert memtamer.deep_size(raw) == sys.getsizeof(raw)
    b = bytes(50_000)
    assert memtamer.deep_size(b) == sys.getsizeof(b)
    arr = array.array("d", range(10_000))
    assert memtamer.deep_size(arr) == sys.getsizeof(arr)
    view = memoryview(raw)
    # the view, numpy-free: its managed-buffer record (under 200 B) and the exporter
    extra = memtamer.deep_size(view) - sys.getsizeof(view) - sys.getsizeof(raw)
    assert 0 <= extra < 200
    on_bytes = np.frombuffer(b, dtype=np.uint8)
    assert memtamer.deep_size(on_bytes) == sys.getsizeof(on_bytes) + sys.getsizeof(b)


def test_dataframe_numeric_and_object_columns():
    n = 100_000
    numbers = np.arange(n, dtype=np.float64)
    words = [f"row {i} " * 2 for i in range(n)]
    df = pd.DataFrame({"x": numbers, "s": pd.Series(words, dtype=object)})
    buffers = numbers.nbytes + n * 8  # the float column and the object column's pointers
    truth = buffers + getsizeof_all(*words)
    size = memtamer.deep_size(df)
    # Exact buffers and strings; what is left is pandas' bookkeeping (index, blocks, caches).
    assert truth <= size <= truth + 64 * 1024


def test_budget_never_undercounts_silently():
    values = [float(i) for i in range(2_000_000)]
    with pytest.raises(TimeoutError) as raised:
        memtamer.deep_size(values, budget=1e-9)
    assert 0 < raised.value.at_least < getsizeof_all(values, *values)


class Shell:
    """Stands in for the IPython shell (the walk never enters it)."""


@pytest.fixture
def namespace():
    ns = {}
    _core.ledger_attach(ns, {}, {}, Shell(), None)
    yield ns
    _core.ledger_detach()


def by_name(variables):
    return {v["name"]: v for v in variables}


def test_exclusive_and_holders(namespace):
    x = np.ones(100_000)
    w = np.ones(30_000)
    solo = np.ones(50_000)
    namespace.update(x=x, y=x, v=x[::2], solo=solo, w=w, holder=[w], _12=solo)
    # A reference from outside the namespace is reported as one...
    assert "<unnamed reference>" in by_name(_core.variables())["w"]["holders"]
    del x, w, solo  # ...so drop this frame's before checking exact holders
    got = by_name(_core.variables())
    assert set(got) == {"x", "y", "v", "solo", "w", "holder"}
    # two names for one array: each reaches it all, del of either frees nothing
    assert got["x"]["bytes"] == got["y"]["bytes"] == array_truth(namespace["x"])
    assert got["x"]["exclusive"] == got["y"]["exclusive"] == 0
    assert {"y", "v"} <= set(got["x"]["holders"])
    # a view: its header is all del frees
    assert got["v"]["bytes"] == sys.getsizeof(namespace["v"]) + array_truth(namespace["x"])
    assert got["v"]["exclusive"] == sys.getsizeof(namespace["v"])
    assert any(s["with"] in ("x", "y") and s["view"] for s in got["v"]["shares"])
    # a list holding a named array
    assert got["holder"]["bytes"] == sys.getsizeof(namespace["holder"]) + array_truth(namespace["w"])
    assert got["holder"]["exclusive"] == sys.getsizeof(namespace["holder"])
    assert got["w"]["exclusive"] == 0 and got["w"]["holders"] == ["holder"]
    # held by an output-cache name only
    assert got["solo"]["exclusive"] == 0 and got["solo"]["holders"] == ["_12"]
    del namespace["_12"]
    assert by_name(_core.variables())["solo"]["exclusive"] == array_truth(namespace["solo"])


def test_exclusive_of_nested_and_self_referencing(namespace):
    shared = [0.5] * 10
    loop = {"shared": shared}
    loop["loop"] = loop
    namespace.update(loop=loop, alone={"k": [1.5, 2.5]}, shared=shared)
    got = by_name(_core.variables())
    assert got["loop"]["bytes"] == getsizeof_all(loop, shared, shared[0], "shared", "loop")
    assert got["loop"]["exclusive"] == got["loop"]["bytes"] - getsizeof_all(shared, shared[0])
    alone = namespace["alone"]
    assert got["alone"]["exclusive"] == got["alone"]["bytes"] == getsizeof_all(
        alone, "k", alone["k"], *alone["k"])
