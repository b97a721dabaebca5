"""buffers.c in-process: the Arrow layout rules against pyarrow's own
buffers (addresses and sizes), the other exporters against their owners'
figures, and the walker counting each buffer once across libraries."""


import numpy as np
import pytest

from conftest import needs_torch
from memtamer import _core

pa = pytest.importorskip("pyarrow")


def deep_size(obj):
    size, complete = _core.deep_size(obj)
    assert complete
    return size


def merged(ranges):
    """Address ranges sorted, with overlaps merged (what buffer_ranges gives)."""
    out = []
    for start, size in sorted(ranges):
        if out and start < out[-1][0] + out[-1][1]:
            end = max(out[-1][0] + out[-1][1], start + size)
            out[-1] = (out[-1][0], end - out[-1][0])
        else:
            out.append((start, size))
    return out


def pyarrow_ranges(arr):
    """pyarrow's own buffers of an array (children included) and of its
    dictionary, as (address, size)."""
    buffers = [b for b in arr.buffers() if b is not None and b.size]
    if isinstance(arr.type, pa.DictionaryType):
        buffers += [b for b in arr.dictionary.buffers() if b is not None and b.size]
    return merged((b.address, b.size) for b in buffers)


N = 100_000
ARRAYS = {
    "null": lambda: pa.nulls(N),
    "bool": lambda: pa.array([True, None, False] * N),
    "int8": lambda: pa.array(np.arange(N, dtype=np.int8)),
    "uint16 with nulls": lambda: pa.array([1, None] * N, type=pa.uint16()),
    "int32": lambda: pa.array(np.arange(N, dtype=np.int32)),
    "float64": lambda: pa.array(np.random.random(N)),
    "float16": lambda: pa.array(np.ones(N, dtype=np.float16)),
    "decimal128": lambda: pa.array([1, 2, None] * N, type=pa.decimal128(10, 2)),
    "decimal256": lambda: pa.array([1, 2] * N, type=pa.decimal256(40, 2)),
    "fixed binary": lambda: pa.array([b"abcd"] * N, type=pa.binary(4)),
    "date32": lambda: pa.array(np.arange(N).astype("datetime64[D]")),
    "date64": lambda: pa.array(list(range(N)), type=pa.date64()),
    "time32": lambda: pa.array(list(range(N)), type=pa.time32("ms")),
    "time64": lambda: pa.array(list(range(N)), type=pa.time64("ns")),
    "timestamp tz": lambda: pa.array(np.arange(N), type=pa.timestamp("us", tz="UTC")),
    "duration": lambda: pa.array(np.arange(N), type=pa.duration("s")),
    "month_day_nano": lambda: pa.array([(1, 2, 3)] * N, type=pa.month_day_nano_interval()),
    "string": lambda: pa.array([f"value {i}" for i in range(N)]),
    "large string with nulls": lambda: pa.array(["x" * (i % 50) if i % 3 else None
                                                 for i in range(N)], type=pa.large_string()),
    "binary": lambda: pa.array([bytes(i % 40) for i in range(N)]),
    "string view": lambda: pa.array([f"a long value that does not inline {i}" for i in range(N)],
                                    type=pa.string_view()),
    "binary view inline": lambda: pa.array([b"short"] * N, type=pa.binary_view()),
    "list": lambda: pa.array([[1, 2, None]] * N),
    "large list of strings": lambda: pa.array([["a", "bc"]] * N, type=pa.large_list(pa.string())),
    "list view": lambda: pa.array([[1, 2]] * N, type=pa.list_view(pa.int32())),
    "fixed size list": lambda: pa.array([[1, 2]] * N, type=pa.list_(pa.int64(), 2)),
    "struct": lambda: pa.array([{"x": i, "y": str(i)} for i in range(N)]),
    "map": lambda: pa.array([[("k", 1)]] * N, type=pa.map_(pa.string(), pa.int64())),
    "dictionary": lambda: pa.array(["red", "green", "blue"] * N).dictionary_encode(),
    "dense union": lambda: pa.UnionArray.from_dense(
        pa.array([0, 1] * N, type=pa.int8()), pa.array(np.repeat(np.arange(N), 2), type=pa.int32()),
        [pa.array(np.arange(N)), pa.array([str(i) for i in range(N)])]),
    "sparse union": lambda: pa.UnionArray.from_sparse(
        pa.array([0, 1] * N, type=pa.int8()),
        [pa.array(np.arange(2 * N)), pa.array(np.ones(2 * N))]),
    "run end encoded": lambda: pa.RunEndEncodedArray.from_arrays(
        pa.array(np.arange(1, N + 1, dtype=np.int32)), pa.array(np.arange(N))),
}


@pytest.mark.parametrize("kind", ARRAYS)
def test_arrow_layouts_match_pyarrows_buffers(kind):
    arr = ARRAYS[kind]()
    assert _core.buffer_ranges(arr) == pyarrow_ranges(arr)


def test_slices_count_the_buffer_they_reach():
    arr = pa.array(np.arange(N, dtype=np.int64))
    (start, size), = pyarrow_ranges(arr)
    # a slice from the start reaches only its own prefix of the buffer
    assert _core.buffer_ranges(arr[:1000]) == [(start, 1000 * 8)]
    # a table cut into batches of one buffer counts that buffer once
    table = pa.Table.from_batches([pa.record_batch([arr[:N // 2]], ["a"]),
                                   pa.record_batch([arr[N // 2:]], ["a"])])
    assert _core.buffer_ranges(table) == [(start, size)]


def test_tables_chunked_arrays_and_batches_match_pyarrow():
    cols = {f"c{i}": np.random.random(N) for i in range(5)}
    cols["s"] = [f"text {i}" for i in range(N)]
    table = pa.table(cols)
    for obj in (table, table["s"], table.to_batches()[0]):
        assert sum(size for _, size in _core.buffer_ranges(obj)) == obj.get_total_buffer_size()
        assert deep_size(obj) == pytest.approx(obj.nbytes, rel=0.01)


def test_sizing_a_wide_table_visits_no_elements():
    table = pa.table({f"c{i}": np.random.random(1_000_000) for i in range(20)})
    assert deep_size(table) == pytest.approx(table.nbytes, rel=0.01)
    # one range per column, found without visiting elements (the time it
    # takes is bench/buffers.py's business: no verdict on a loaded machine)
    assert len(_core.buffer_ranges(table)) == 20


def test_numpy_and_arrow_share_a_buffer_once():
    a = np.random.random(N)
    arr = pa.array(a)  # zero copy
    assert deep_size([a, arr]) == pytest.approx(a.nbytes, rel=0.01)
    view = arr.to_numpy()  # zero copy back
    assert deep_size([arr, view]) == pytest.approx(a.nbytes, rel=0.01)


def test_buffer_protocol_array_interface_and_dlpack():
    buf = pa.allocate_buffer(1 << 20)
    assert _core.buffer_ranges(buf) == [(buf.address, 1 << 20)]
    assert deep_size(buf) == pytest.approx(1 << 20, rel=0.01)
    # a memoryview is its exporter's: counted once with it
    data = bytes(1 << 20)
    assert deep_size([data, memoryview(data)]) == pytest.approx(1 << 20, rel=0.01)
    # small buffers are charged to their holder, not keyed
    assert deep_size(pa.allocate_buffer(100)) >= 100


def test_python_level_exporters_are_not_called():
    calls = []

    class Image:
        @property
        def __array_interface__(self):
            calls.append(1)  # PIL's serializes the image here
            return {"data": (0, True), "shape": (10,), "typestr": "<f8", "version": 3}

    deep_size(Image())
    assert calls == []


def test_polars_frames_and_series():
    pl = pytest.importorskip("polars")
    n = 1 << 20
    frame = pl.DataFrame({"x": np.random.random(n), "i": np.arange(n)})
    assert deep_size(frame) == pytest.approx(frame.estimated_size(), rel=0.01)
    # strings: polars keeps views; its estimate leaves the views out, so the
    # truth is pyarrow's figure for the same views handed over zero-copy
    s = pl.Series([f"a string longer than twelve {i}" for i in range(n)])
    views = s.to_arrow(compat_level=pl.CompatLevel.newest())
    assert views.type == pa.string_view()
    assert deep_size(s) == pytest.approx(views.nbytes, rel=0.01)
    assert deep_size([s, views]) == pytest.approx(views.nbytes, rel=0.01)
    # a frame's to_arrow() shares its numbers (strings it converts)
    assert deep_size([frame, frame.to_arrow()]) == pytest.approx(frame.estimated_size(), rel=0.01)


def test_polars_frame_keeps_its_chunks_when_sized():
    pl = pytest.importorskip("polars")
    parts = pl.concat([pl.DataFrame({"x": np.arange(10)})] * 2, rechunk=False)
    frame = parts.hstack(pl.DataFrame({"y": np.arange(20)}))
    before = [c.n_chunks() for c in frame.get_columns()]
    deep_size(frame)
    # the frame's own stream export would have aligned (copied) its chunks
    assert [c.n_chunks() for c in frame.get_columns()] == before == [2, 1]


def test_pandas_arrow_columns():
    pd = pytest.importorskip("pandas")
    n = 1 << 20
    df = pd.DataFrame({"x": pd.array(np.random.random(n), dtype="double[pyarrow]"),
                       "s": pd.Series([f"item {i}" for i in range(n)], dtype="str")})
    assert deep_size(df) == pytest.approx(df.memory_usage(deep=True).sum(), rel=0.01)
    table = pa.table({"x": np.random.random(n)})
    twin = table.to_pandas(types_mapper=pd.ArrowDtype)
    assert deep_size([table, twin]) == pytest.approx(table.nbytes, rel=0.01)


# requirements-test.txt installs torch (a CPU wheel) for Python 3.11 only.

@needs_torch
def test_torch_tensors():
    torch = pytest.importorskip("torch")
    t = torch.ones(1 << 20, dtype=torch.float64)
    assert deep_size(t) == pytest.approx(t.untyped_storage().nbytes(), rel=0.01)
    # views share the storage; the array made from it too
    assert deep_size([t, t[::2], t.numpy()]) == pytest.approx(t.untyped_storage().nbytes(), rel=0.01)
    a = np.random.random(1 << 20)
    assert deep_size([a, torch.from_numpy(a)]) == pytest.approx(a.nbytes, rel=0.01)
    # a sparse tensor has no storage: its header, and no error
    assert deep_size(t.to_sparse()) >= 0


def test_peak_title_says_what_is_outside_the_allocators_read():
    from memtamer.render import peak_text

    MiB = 1024**2
    composition = {"at": 100 * MiB, "attributed": 100 * MiB, "block_threshold": MiB,
                   "groups": []}
    record = {"cell": 3, "peak_increment": 500 * MiB, "peak_composition": composition,
              "arrow_peak_increment": 300 * MiB}
    title = peak_text(record)[0]
    assert "+300 MiB in Arrow's pool" in title
    assert title.endswith("; 100 MiB outside Python's, numpy's and Arrow's allocators")
    record["arrow_peak_increment"] = None  # unknown (or no pyarrow): not counted
    assert peak_text(record)[0].endswith("; 400 MiB outside Python's and numpy's allocators")
    record["peak_increment"] = 90 * MiB  # all of it counted: nothing to say
    assert "outside" not in peak_text(record)[0]
