"""The cell that imports numpy is measured and guarded like any later cell:
numpy's allocation handler is in place before that cell's first array."""

import os

import pytest

from conftest import GiB, MiB

FLOATS = 3 * 2**24  # 384 MiB of float64


def numpy_imported(kernel):
    return kernel.query("'numpy' in __import__('sys').modules")


@pytest.fixture
def loaded(fresh_kernel):
    fresh_kernel.run("%load_ext memtamer")
    fresh_kernel.run("%memtamer --notice off")
    assert not numpy_imported(fresh_kernel), "this kernel imported numpy before the test"
    return fresh_kernel


def test_importing_cell_has_a_numpy_peak_and_its_lines(loaded):
    loaded.run(f"import numpy as np\ntmp = np.ones({FLOATS})\ndel tmp")
    cell = loaded.last_cell()
    truth = FLOATS * 8
    assert cell["numpy_peak_increment"] == pytest.approx(truth, rel=0.01)
    groups = cell["peak_composition"]["groups"]
    line = [g for g in groups if g["line"] == 2]
    assert line and line[0]["text"] == f"tmp = np.ones({FLOATS})", groups
    assert line[0]["temporary"] == pytest.approx(truth, rel=0.01)
    # numpy keeps its own loader, and the finder is gone
    assert loaded.query("type(__import__('numpy').__spec__.loader).__name__") == "SourceFileLoader"
    assert not loaded.query("[f for f in __import__('sys').meta_path "
                            "if type(f).__name__ == 'NumpyImportHook']")


def test_importing_cell_is_guarded(loaded):
    pid = loaded.query("__import__('os').getpid()")
    with open(f"/proc/{pid}/statm") as f:
        rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    loaded.run(f"%memguard {rss + 256 * MiB}")
    # 2 GiB asked for in the cell that imports numpy: refused, not allocated
    result = loaded.run(f"import numpy as np\narr = np.ones({2 * GiB // 8})", allow_error=True)
    assert result["error"] and result["error"]["ename"] == "MemoryBudgetExceeded", result
    assert loaded.query("__import__('sys').last_value.layer") == "numpy"
    assert loaded.is_alive()
    assert loaded.query("'arr' in globals()") is False


def test_unload_before_numpy_removes_the_finder(loaded):
    finders = "[type(f).__name__ for f in __import__('sys').meta_path]"
    assert "NumpyImportHook" in loaded.query(finders)
    loaded.run("%unload_ext memtamer")
    assert "NumpyImportHook" not in loaded.query(finders)
    loaded.run("import numpy as np\nx = np.ones(10)")
    assert loaded.query("int(x.sum())") == 10
