"""Other libraries' buffers in a real kernel: %memreport vars sizes Arrow,
polars, torch and pandas 3 string data as the libraries account for it,
each shared buffer once, and twins made across libraries name each other."""


import pytest

from conftest import MiB, needs_torch

pytest.importorskip("pyarrow")
pytest.importorskip("polars")


def variables(kernel):
    return {v["name"]: v for v in kernel.query("__import__('memtamer').report()['variables']")}


def labels(variable):
    return {h["label"] for h in variable["holders"]}


def test_arrow_polars_and_pandas_strings_sized_by_their_libraries(kernel):
    kernel.run("import numpy as np, pandas as pd, pyarrow as pa, polars as pl")
    kernel.run("t = pa.table({'a': np.random.random(2**24)})")  # 128 MiB
    kernel.run("p = pl.DataFrame({'x': np.random.random(2**23), 'i': np.arange(2**23)})")  # 128 MiB
    kernel.run("s = pd.Series([f'item number {i}' for i in range(2**21)], dtype='str')")
    truth = kernel.query("{'t': t.nbytes, 'p': p.estimated_size(),"
                         " 's': int(s.memory_usage(deep=True)), 'dtype': str(s.dtype)}")
    assert truth["dtype"] == "str" and truth["s"] > 32 * MiB
    got = variables(kernel)
    for name in ("t", "p", "s"):
        assert got[name]["bytes"] == pytest.approx(truth[name], rel=0.01), name
        assert got[name]["exclusive"] == pytest.approx(truth[name], rel=0.01), name
    # %memreport vars ranks them by what the libraries hold, not last
    table = kernel.run("%memreport vars")["data"][0]["text/plain"].splitlines()
    header = next(i for i, line in enumerate(table) if line.split()[:1] == ["name"])
    rows = [line.split()[0] for line in table[header + 1:] if line.split()]
    assert set(rows[:3]) == {"t", "p", "s"}, table
    kernel.run("del t, p, s")


def test_frame_and_its_arrow_table_count_once_and_name_each_other(kernel):
    kernel.run("import numpy as np, pandas as pd, pyarrow as pa, polars as pl")
    kernel.run("q = pl.DataFrame({'x': np.random.random(2**24)})\nqa = q.to_arrow()")
    kernel.run("at = pa.table({'y': np.random.random(2**24)})\n"
               "df = at.to_pandas(types_mapper=pd.ArrowDtype)")
    size = kernel.query("q.estimated_size()")
    assert kernel.query("at.nbytes") == size == 128 * MiB
    got = variables(kernel)
    for one, other in (("q", "qa"), ("qa", "q"), ("at", "df"), ("df", "at")):
        assert got[one]["bytes"] == pytest.approx(size, rel=0.01), one
        assert other in labels(got[one]), (one, got[one]["holders"])
        # del of one frees next to nothing: the other keeps the buffer
        assert got[one]["exclusive"] < 0.01 * size, one
    kernel.run("del q, qa, at, df")


@needs_torch
def test_torch_tensor_and_its_numpy_array(kernel):
    pytest.importorskip("torch")
    kernel.run("import numpy as np, torch")
    kernel.run("a = np.random.random(2**24)\nta = torch.from_numpy(a)")
    kernel.run("x = torch.ones(2**24, dtype=torch.float64)")
    storage = kernel.query("x.untyped_storage().nbytes()")
    got = variables(kernel)
    assert got["x"]["bytes"] == pytest.approx(storage, rel=0.01)
    for one, other in (("a", "ta"), ("ta", "a")):
        assert got[one]["bytes"] == pytest.approx(128 * MiB, rel=0.01), one
        assert other in labels(got[one]), (one, got[one]["holders"])
        assert got[one]["exclusive"] < MiB, one
    # the advice says so: del a frees nothing, ta keeps it
    assert got["a"]["why"].startswith("del a would free") and "ta" in got["a"]["why"]
    assert got["ta"]["why"].endswith(": a also holds it")
    kernel.run("del a, ta, x")


def test_cells_carry_arrows_pool(fresh_kernel):
    k = fresh_kernel
    k.run("%load_ext memtamer")
    k.run("%memtamer --notice off")
    k.run("x = 1")
    assert k.last_cell()["arrow_retained"] is None  # no pyarrow, no column
    assert "Arrow" not in k.run("%memreport")["data"][0]["text/plain"]
    k.run("import numpy as np, pyarrow as pa\nt = pa.table({'a': np.random.random(2**24)})")
    # a 384 MiB temporary from Arrow's pool, then 256 MiB kept in it
    k.run("c = pa.concat_tables([t, t, t]).combine_chunks()\ndel c")
    cell = k.last_cell()
    assert cell["arrow_peak_increment"] == pytest.approx(3 * 128 * MiB, rel=0.01)
    assert abs(cell["arrow_retained"]) < MiB
    # %memreport peak says why the pool's temporary has no line
    out = k.run(f"%memreport peak {cell['cell']}")["stdout"]
    assert "its peak is not taken apart" in out, out
    assert "in Arrow's pool) has no line: it came from allocators memtamer cannot follow" in out
    assert "Arrow's pool reports only its totals" in out, out
    before = k.query("pa.total_allocated_bytes()")
    k.run("kept = pa.concat_tables([t, t]).combine_chunks()")
    cell = k.last_cell()
    assert cell["arrow_retained"] == k.query("pa.total_allocated_bytes()") - before
    assert cell["arrow_retained"] == pytest.approx(256 * MiB, rel=0.01)
    # under the pool's old high, and nothing freed: what it holds now was
    # its highest in this cell (it said None, not knowing when the old
    # high was passed)
    assert k.query("pa.default_memory_pool().max_memory()") == 384 * MiB
    assert cell["arrow_peak_increment"] == cell["arrow_retained"]
    k.run("y = 1")
    assert k.last_cell()["arrow_peak_increment"] == 0
    # under the old high with frees: when they came is hidden, and said so
    k.run("part = t.slice(0, 2**22)\ntmp = pa.concat_tables([part, part]).combine_chunks()\n"
          "del tmp")
    # the pool handed out 64 MiB more (384 + 256 + 64) and holds what it held
    assert k.query("pa.default_memory_pool().total_bytes_allocated()") == \
        pytest.approx(704 * MiB, abs=MiB)
    assert k.last_cell()["arrow_retained"] == 0
    assert k.query("pa.default_memory_pool().max_memory()") == 384 * MiB
    assert k.last_cell()["arrow_peak_increment"] is None
    table = k.run("%memreport")["data"][0]["text/plain"]
    assert "Arrow peak +" in table and "Arrow retained" in table


def test_del_of_arrow_data_returns_the_pools_pages(fresh_kernel):
    k = fresh_kernel
    k.run("%load_ext memtamer")
    k.run("%memtamer --notice off")
    k.run("import numpy as np, pyarrow as pa\nt0 = pa.table({'a': np.random.random(2**24)})")
    k.run("t = pa.concat_tables([t0, t0]).combine_chunks()")  # 256 MiB from Arrow's pool
    assert k.query("pa.total_allocated_bytes()") == 256 * MiB
    out = k.run("%shrink del t")["data"][0]["text/plain"]
    assert "Arrow's pool gave" in out, out
    # the pool kept the freed pages for reuse: RSS shows them come back
    assert k.last_cell()["retained"] == pytest.approx(-256 * MiB, rel=0.05)
