"""%shrink downcast of pandas 3 frames (Arrow strings, Arrow-backed numbers)
in a real kernel: small shared metadata refuses nothing, a dry run or a
refusal converts nothing (no memory), and Arrow-backed or polars numbers
with nulls are narrowed by the same check."""

import pytest

from conftest import MiB

pytest.importorskip("pyarrow")

ROWS = 2**24  # a float64 column of 128 MiB


@pytest.fixture(scope="module")
def frames(kernel):
    kernel.run("%memtamer --notice off")
    kernel.run("import numpy as np, pandas as pd, polars as pl")
    kernel.run(f"base = pd.DataFrame({{'x': np.random.random({ROWS}),"
               f" 's': np.array(['red', 'green', 'blue'])[np.random.randint(0, 3, {ROWS})]}})")
    assert kernel.query("str(base['s'].dtype)") == "str"
    return kernel


def test_dry_run_and_refusal_convert_nothing(frames):
    frames.run("df = base.copy()\nkeep = [df]")
    out = frames.run("%shrink downcast df --dry-run")["data"][0]["text/plain"]
    assert "dry run" in out and "x: float64 → float32" in out and "s: str → category" in out
    cell = frames.last_cell()
    # converting the columns first cost +192 MiB; the plan reads them in place
    assert cell["numpy_peak_increment"] < MiB and cell["peak_increment"] < 16 * MiB, cell
    out = frames.run("%shrink downcast df")["data"][0]["text/plain"]
    assert "REFUSED" in out and "keep" in out
    cell = frames.last_cell()
    assert cell["numpy_peak_increment"] < MiB and cell["peak_increment"] < 16 * MiB, cell
    assert frames.query("str(df['x'].dtype)") == "float64"
    frames.run("del df, keep")


def test_small_shared_metadata_refuses_nothing(frames):
    # df shares base's immutable pieces (its RangeIndex); the strings go to
    # category and the floats to float32 beside them
    frames.run("small = base.iloc[:2**20].copy()\ndf = small[['x']].copy()\n"
               "df['s'] = small['s'].to_numpy()")
    out = frames.run("%shrink downcast df")["data"][0]["text/plain"]
    assert "REFUSED" not in out, out
    assert frames.query("str(df.dtypes.to_dict())") == "{'x': dtype('float32'), 's': " \
        "CategoricalDtype(categories=['blue', 'green', 'red'], ordered=False, " \
        "categories_dtype=str)}"
    assert frames.query("bool((df['s'].astype(str) == small['s']).all())")
    assert frames.query("bool(np.allclose(df['x'], small['x'], rtol=1e-3))")
    frames.run("del df, small")


def test_a_note_shared_by_columns_is_said_once_naming_them(frames):
    frames.run("import memtamer\n"
               "w = pd.DataFrame({f'c{i}': np.arange(1000) % 100 for i in range(8)})\n"
               "f = pd.DataFrame({f'f{i}': np.random.random(1000) * (i + 1) for i in range(3)})")
    for name, columns in (("w", [f"c{i}" for i in range(8)]), ("f", ["f0", "f1", "f2"])):
        row = frames.query(f"memtamer.shrink('downcast', '{name}', dry_run=True)['{name}']")
        prefix = ", ".join(columns) + ": "
        note = row["reason"].removeprefix(prefix)
        assert note != row["reason"] and row["reason"].count(note[:20]) == 1, row["reason"]
    # the floats' note keeps the largest error of the three columns
    errors = frames.query("[float(np.max(np.abs(f[c].astype(np.float32) - f[c]) / np.abs(f[c])))"
                          " for c in f]")
    assert f"largest relative error {max(errors):.2g} " in row["reason"], (errors, row)
    frames.run("del w, f")


def test_arrow_backed_numbers(frames):
    frames.run("a = pd.DataFrame({'x': pd.array(base['x'].to_numpy(), dtype='double[pyarrow]')})")
    out = frames.run("%shrink downcast a")["data"][0]["text/plain"]
    assert "x: double[pyarrow] → float[pyarrow]" in out, out
    assert frames.query("str(a['x'].dtype)") == "float[pyarrow]"
    assert frames.query("bool(np.allclose(a['x'].to_numpy(), base['x'].to_numpy(), rtol=1e-3))")
    # nulls and chunks too: the check reads each chunk in place, skipping
    # the nulls (1e300 under them does not count)
    frames.run("import pyarrow as pa\n"
               "hidden = pa.array(np.tile([1.5, 1e300], 1000), mask=np.tile([False, True], 1000))\n"
               "n = pd.DataFrame({'x': pd.arrays.ArrowExtensionArray("
               "pa.chunked_array([hidden, hidden]))})")
    out = frames.run("%shrink downcast n")["data"][0]["text/plain"]
    assert "x: double[pyarrow] → float[pyarrow]" in out, out
    assert frames.query("(str(n['x'].dtype), int(n['x'].isna().sum()))") == ["float[pyarrow]", 2000]
    assert frames.query("n['x'].dropna().tolist() == [1.5] * 2000")
    # a value that would overflow still refuses its column, with the reason
    frames.run("o = pd.DataFrame({'x': pd.array([1e300, None] * 1000, dtype='double[pyarrow]')})")
    out = frames.run("%shrink downcast o")["data"][0]["text/plain"]
    assert "REFUSED" in out and "x: 1000 finite values would overflow to inf in float32" in out, out
    assert frames.query("str(o['x'].dtype)") == "double[pyarrow]"
    frames.run("del a, n, o, hidden")


def test_polars_frames(frames):
    rows = 2**22  # polars keeps strings as 16-byte views: 64 MiB of them
    frames.run(f"x = np.random.random({rows})\n"
               f"p = pl.DataFrame({{'x': x, 's': ['red', 'green', 'blue', 'grey'] * {rows // 4},"
               f" 'n': [1.5, None] * {rows // 2}}})")
    size = frames.query("p.estimated_size()")
    out = frames.run("%shrink downcast p --dry-run")["data"][0]["text/plain"]
    assert "x: Float64 → Float32" in out and "s: String → Categorical" in out, out
    cell = frames.last_cell()
    assert cell["peak_increment"] < 16 * MiB, cell  # the plan reads in place
    frames.run("%shrink downcast p")
    # As data: the schema's repr follows the Python version's OrderedDict's.
    # n's nulls stay nulls; its values were read in place through Arrow
    assert frames.query("[[name, str(kind)] for name, kind in p.schema.items()]") == \
        [["x", "Float32"], ["s", "Categorical"], ["n", "Float32"]]
    assert frames.query("p['n'].to_list()[:4]") == [1.5, None, 1.5, None]
    assert frames.query("p.estimated_size()") < size
    assert frames.query("bool(np.allclose(p['x'].to_numpy(), x, rtol=1e-3))")
    assert frames.query("p['s'].cast(pl.String).to_list()[:4]") == ["red", "green", "blue", "grey"]
    # what downcast does not take gets the true reason
    err = frames.run("lst = [1.5] * 10\n%shrink downcast lst", allow_error=True)["error"]
    assert err["ename"] == "UsageError" and "lst is a list" in err["evalue"]
    assert "pyarrow tables" in err["evalue"] and "try %shrink pack" in err["evalue"]
    frames.run("del p, x, lst")


def test_compress_round_trips_arrow_and_polars_data(frames):
    frames.run("import pickle, pyarrow as pa\n"
               "t = pa.table({'a': np.zeros(2**22), 's': pa.array(['abc', None] * 2**21)})\n"
               "ps = pd.Series(['abc', None] * 2**20, dtype='str')\n"
               "ad = pd.DataFrame({'x': pd.array([1.5, None] * 2**20, dtype='double[pyarrow]')})\n"
               "pf = pl.DataFrame({'x': [1.5, None] * 2**22, 's': ['abc', None] * 2**22,"
               " 'c': pl.Series(['a', 'b'] * 2**22, dtype=pl.Categorical)})\n"
               "pe = pl.Series('e', ['a', 'b'] * 2**20, dtype=pl.Enum(['a', 'b', 'c']))\n"
               "copies = {n: pickle.dumps(globals()[n]) for n in ('t', 'ps', 'ad', 'pf', 'pe')}")
    size = frames.query("pf.estimated_size()")
    for name in ("t", "ps", "ad", "pf", "pe"):
        out = frames.run(f"%shrink compress {name}")["data"][0]["text/plain"]
        assert "REFUSED" not in out, out
        if name == "pf":
            # its buffers are read in place through Arrow (Arrow copies only
            # the Categorical's codes; the codec's buffers come and go):
            # polars' own pickle would copy the frame into the stream, +2x
            # its size
            cell = frames.last_cell()
            assert cell["peak_increment"] < size, (cell, size)
    # a cell that uses them gets them back, equal by each library's own test
    out = frames.run("print(t.equals(pickle.loads(copies['t'])), ps.equals(pickle.loads("
                     "copies['ps'])), str(ps.dtype), ad.equals(pickle.loads(copies['ad'])), "
                     "str(ad['x'].dtype), pf.equals(pickle.loads(copies['pf'])), "
                     "*[str(kind) for kind in pf.schema.values()], "
                     "pe.equals(pickle.loads(copies['pe'])), repr(pe.dtype).replace(' ', ''))")
    assert out["stdout"].splitlines()[-1].split() == ["True", "True", "str", "True",
                                                      "double[pyarrow]", "True", "Float64",
                                                      "String", "Categorical", "True",
                                                      "Enum(categories=['a','b','c'])"], \
        out["stdout"]
    frames.run("del t, ps, ad, pf, pe, copies")
