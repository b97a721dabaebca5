"""%shrink downcast of pyarrow tables, record batches, chunked arrays and
arrays in a real kernel: float64 → float32 by the same --rtol check as
numpy (the values under nulls do not count), strings to a dictionary where
that is smaller and decodes back equal, and a refusal or a dry run that
converts nothing."""

import pytest

from conftest import MiB

pytest.importorskip("pyarrow")

ROWS = 2**22  # a float64 column of 32 MiB


@pytest.fixture(scope="module")
def arrow(kernel):
    kernel.run("%memtamer --notice off")
    kernel.run("import numpy as np, pyarrow as pa, pyarrow.compute as pc")
    kernel.run(f"x = np.random.random({ROWS})\n"
               # one chunk (pa.array of numpy strings may make several)
               f"colours = pa.DictionaryArray.from_arrays(pa.array(np.random.randint(0, 3,"
               f" {ROWS}).astype(np.int8)), ['red', 'green', 'blue']).cast(pa.string())\n"
               # 1e300 hides under every null: only valid values count
               f"hidden = pa.array(np.tile([1.5, 1e300], {ROWS // 2}),"
               f" mask=np.tile([False, True], {ROWS // 2}))")
    return kernel


def text(reply):
    return reply["data"][0]["text/plain"]


def make_table(kernel, name="t"):
    kernel.run(f"{name} = pa.table({{'x': x.copy(), 's': colours, 'n': hidden,"
               f" 'i': np.arange({ROWS})}}).replace_schema_metadata({{'source': 'test'}})")


def test_table_floats_and_strings(arrow):
    make_table(arrow)
    out = text(arrow.run("%shrink downcast t"))
    assert "REFUSED" not in out, out
    assert "x: double → float" in out and "s: string → dictionary" in out, out
    assert "n: double → float" in out, out  # 1e300 under the nulls did not count
    # integers keep their type unless asked, and the note says so
    assert "i: integers keep their type unless you ask" in out, out
    types = arrow.query("[str(f.type) for f in t.schema]")
    assert types == ["float", "dictionary<values=string, indices=int8, ordered=0>", "float",
                     "int64"]
    assert arrow.query("{k.decode(): v.decode() for k, v in t.schema.metadata.items()}") == \
        {"source": "test"}
    assert arrow.query("bool(np.allclose(t['x'].to_numpy(), x, rtol=1e-3))")
    assert arrow.query("t['s'].cast(pa.string()).equals(pa.chunked_array([colours]))")
    assert arrow.query("t['n'].null_count") == ROWS // 2
    assert arrow.query("t['n'].drop_null().to_numpy().tolist() == [1.5] * (len(t) // 2)")
    # Arrow's own sizes: 4 + 1 + 4 + 8 bytes a row and n's bitmap (the
    # indices keep none: they have no nulls)
    assert arrow.query("t.nbytes") == pytest.approx(ROWS * 17 + ROWS // 8, abs=1024)
    arrow.run("del t")


def test_a_value_that_would_not_round_trip_refuses_its_column(arrow):
    arrow.run(f"b = pa.table({{'big': np.full({ROWS}, 1e300), 'x': x.copy()}})")
    out = text(arrow.run("%shrink downcast b --rtol 1e-9"))
    assert "REFUSED" in out, out
    assert "big: " in out and "would overflow to inf in float32" in out, out
    assert "x: the largest relative error in float32 would be" in out, out
    assert arrow.query("[str(f.type) for f in b.schema]") == ["double", "double"]
    # the column that can go goes, the other stays and says why
    out = text(arrow.run("%shrink downcast b"))
    assert "x: double → float" in out and "would overflow" in out, out
    assert arrow.query("[str(f.type) for f in b.schema]") == ["double", "float"]
    arrow.run("del b")


def test_dry_run_and_refusal_convert_nothing(arrow):
    make_table(arrow, "big")
    arrow.run("big = pa.concat_tables([big] * 4)\nkeep = [big]")  # 4 chunks, 200+ MiB
    before = arrow.query("(pa.total_allocated_bytes(), big.nbytes)")
    out = text(arrow.run("%shrink downcast big --dry-run"))
    assert "dry run" in out and "x: double → float" in out, out
    cell = arrow.last_cell()
    # the plan reads every chunk in place: no column is converted, Arrow's
    # pool lends only the distinct strings for a moment
    assert cell["peak_increment"] < 16 * MiB, cell
    assert (cell["arrow_peak_increment"] or 0) < MiB, cell
    out = text(arrow.run("%shrink downcast big"))
    assert "REFUSED" in out and "keep" in out, out
    cell = arrow.last_cell()
    assert cell["peak_increment"] < 16 * MiB, cell
    assert arrow.query("(pa.total_allocated_bytes(), big.nbytes)") == before
    assert arrow.query("str(big.schema.field('x').type)") == "double"
    # with --copy it goes, chunk for chunk
    out = text(arrow.run("%shrink downcast big --copy"))
    assert "REFUSED" not in out, out
    assert arrow.query("(big['x'].num_chunks, str(big['x'].type))") == [4, "float"]
    arrow.run("del big, keep")


def test_strings_with_many_distinct_values_stay(arrow):
    arrow.run("names = pa.table({'id': pa.array([f'customer-{i}' for i in range(2**18)])})")
    out = text(arrow.run("%shrink downcast names"))
    assert "REFUSED" in out and "distinct values" in out, out
    assert arrow.query("str(names['id'].type)") == "string"
    arrow.run("del names")


def test_arrays_batches_and_chunks_keep_their_kind(arrow):
    arrow.run("a = pa.array(x.copy())\n"
              "c = pa.chunked_array([pa.array([1, None, 100]), pa.array([2**20, 7])])\n"
              "rb = pa.record_batch({'s': colours, 'x': pa.array(x.copy())})\n"
              "labels = colours.slice(5)")
    arrow.run("%shrink downcast a rb labels")
    out = text(arrow.run("%shrink downcast c --narrow"))
    assert "values: int64 → int32" in out, out  # the widest chunk's need
    assert arrow.query("[type(v).__name__ for v in (a, c, rb, labels)]") == \
        ["FloatArray", "ChunkedArray", "RecordBatch", "DictionaryArray"]
    assert arrow.query("c.to_pylist()") == [1, None, 100, 2**20, 7]
    assert arrow.query("str(c.type)") == "int32"
    assert arrow.query("[str(f.type) for f in rb.schema]") == \
        ["dictionary<values=string, indices=int8, ordered=0>", "float"]
    assert arrow.query("labels.cast(pa.string()).equals(colours.slice(5))")
    arrow.run("del a, c, rb, labels")


def test_nothing_to_shrink_says_so(arrow):
    arrow.run("flags = pa.table({'f': pa.array([True, False] * 1000)})\n"
              "empty = pa.table({'x': pa.array([], pa.float64())})")
    out = text(arrow.run("%shrink downcast flags"))
    assert "REFUSED" in out and "no numeric or low-cardinality string column to shrink" in out, out
    out = text(arrow.run("%shrink downcast empty"))
    assert "REFUSED" in out and "x: it has no values" in out, out
    # a careless --to names the problem and changes nothing
    make_table(arrow, "t2")
    err = arrow.run("%shrink downcast t2 --to int8", allow_error=True)["error"]
    assert err["ename"] == "UsageError" and "does not apply to float data" in err["evalue"]
    assert arrow.query("str(t2.schema.field('x').type)") == "double"
    arrow.run("del flags, empty, t2")
