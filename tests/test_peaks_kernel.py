"""Peak attribution in a real kernel: cells whose big blocks, their lines and
their fate (freed or kept) we know, against the arrays' own sizes."""

import pytest

from conftest import MiB

FLOATS = 2**25  # 256 MiB of float64
ARRAY = FLOATS * 8


def composition(kernel):
    return kernel.last_cell()["peak_composition"]


def group(comp, line, function=None, function_line=None):
    found = [g for g in comp["groups"] if g["line"] == line and g["function"] == function
             and g["function_line"] == function_line]
    assert len(found) == 1, comp["groups"]
    return found[0]


def close(actual, truth):
    return actual == pytest.approx(truth, rel=0.01)


@pytest.fixture(scope="module")
def arrays(kernel):
    kernel.run("%memtamer --notice off")
    kernel.run(f"import numpy as np, pandas as pd\na = np.ones({FLOATS})")
    yield kernel


def test_temporary_and_kept_on_their_lines(arrays):
    arrays.run("x = a * 2\ny = (x + a).mean()")
    comp = composition(arrays)
    kept, temporary = group(comp, 1), group(comp, 2)
    assert kept["text"] == "x = a * 2" and temporary["text"] == "y = (x + a).mean()"
    assert close(kept["bytes"], ARRAY) and close(kept["kept"], ARRAY) and kept["temporary"] == 0
    assert close(temporary["bytes"], ARRAY) and temporary["kept"] == 0
    assert close(temporary["temporary"], ARRAY)
    assert close(comp["at"], 2 * ARRAY)
    arrays.run("del x")


def test_nested_calls_make_one_temporary(arrays):
    arrays.run("b = np.add(np.multiply(a, 2), 1)")
    comp = composition(arrays)
    line = group(comp, 1)
    assert line["blocks"] == 2 and close(line["bytes"], 2 * ARRAY)
    assert close(line["kept"], ARRAY) and close(line["temporary"], ARRAY)
    # numpy reuses the temporary of `a * 2` for `+ 1`: no temporary there.
    arrays.run("del b")
    arrays.run("b = a * 2 + 1")
    line = group(composition(arrays), 1)
    assert line["blocks"] == 1 and close(line["kept"], ARRAY) and line["temporary"] == 0
    arrays.run("del b")


def test_lines_inside_a_function_from_an_earlier_cell(arrays):
    defined = arrays.run("def scale(x):\n    t = x * 2\n    return t.astype(np.float32)")
    arrays.run("s = scale(a)")
    comp = composition(arrays)
    doubled, narrowed = group(comp, 1, "scale", 2), group(comp, 1, "scale", 3)
    assert doubled["text"] == "s = scale(a)"
    assert doubled["function_cell"] == defined["execution_count"]
    assert close(doubled["temporary"], ARRAY) and doubled["kept"] == 0
    assert close(narrowed["kept"], ARRAY // 2) and narrowed["temporary"] == 0
    assert close(comp["at"], ARRAY + ARRAY // 2)
    assert comp["groups"][0]["function_line"] == 2  # largest first
    arrays.run("del s")


def test_user_function_called_back_by_library_code(arrays):
    # copy.deepcopy (Python code, other globals) calls the user's method:
    # the method's line, and the cell's line that called the library.
    arrays.run("class Holder:\n    def __deepcopy__(self, memo):\n"
               "        return np.ones(2**25)\n")
    arrays.run("import copy\nh = copy.deepcopy(Holder())")
    kept = group(composition(arrays), 2, "Holder.__deepcopy__", 3)
    assert kept["text"] == "h = copy.deepcopy(Holder())"
    assert close(kept["kept"], ARRAY)
    arrays.run("del h")


def test_class_body_in_a_cell_is_not_taken_for_the_cell(arrays):
    # A class body runs module-level code with the user's globals, called
    # from the cell's frame: it shows as the function, the cell's line too.
    arrays.run("x = 1\nclass Big:\n    data = np.ones(2**25)")
    kept = group(composition(arrays), 2, "Big", 3)
    assert kept["text"] == "class Big:" and close(kept["kept"], ARRAY)
    # A class lives in reference cycles: collected now, not during the next
    # test's cell, whose peak is counted from its start.
    arrays.run("del Big\nimport gc\ngc.collect()")


def test_cell_with_top_level_await(arrays):
    arrays.run("import asyncio\nawait asyncio.sleep(0)\nz = np.ones(2**25)")
    kept = group(composition(arrays), 3)
    assert kept["text"] == "z = np.ones(2**25)" and close(kept["kept"], ARRAY)
    arrays.run("del z")


def test_one_function_called_from_two_lines_of_a_loop(arrays):
    # The same frame of make at the same instruction each time (np.empty is
    # C: make's frame is the innermost): only the line of the cell that
    # called it tells the blocks apart.
    # Nothing an earlier test left may be freed during the loop: the cell's
    # peak is counted from its start.  (On 3.12 the array of the top-level
    # await test before can wait in a reference cycle for the collector.)
    arrays.run("def make(n):\n    return np.empty(n)\nx = y = None\n"
               "import gc\ngc.collect()")
    arrays.run("for i in range(3):\n    x = make(2**22)\n    y = make(2**23)")
    comp = composition(arrays)
    small, large = group(comp, 2, "make", 2), group(comp, 3, "make", 2)
    assert small["blocks"] == 1 and close(small["bytes"], 2**22 * 8)
    assert large["blocks"] == 2 and close(large["bytes"], 2 * 2**23 * 8)
    assert close(comp["at"], 5 * 2**22 * 8)
    arrays.run("del x, y")


def test_concatenation_in_a_loop(arrays):
    piece = 2**22  # 32 MiB
    arrays.run(f"piece = np.ones({piece})\nacc = np.empty(0)\nfor i in range(4):\n"
               "    acc = np.concatenate([acc, piece])")
    comp = composition(arrays)
    top = comp["groups"][0]
    # At the peak the last result (4 pieces) is made while the one before (3) lives.
    assert top["line"] == 4 and top["text"] == "acc = np.concatenate([acc, piece])"
    assert top["blocks"] == 2 and close(top["bytes"], 7 * piece * 8)
    assert close(top["kept"], 4 * piece * 8) and close(top["temporary"], 3 * piece * 8)
    assert close(group(comp, 1)["kept"], piece * 8)
    arrays.run("del piece, acc")


def test_many_blocks_below_the_high_then_a_new_high(arrays):
    # Line 1 sets the high; line 5's 20 blocks of 8 MiB stay below it (the
    # hooks keep such blocks aside until a snapshot needs them, a few at a
    # time); line 6's temporary makes the new high with all 20 alive.
    block = 2**20 * 8
    arrays.run("t = a * 2\ndel t\nkeep = []\nfor i in range(20):\n"
               "    keep.append(np.ones(2**20))\nu = (a * 2).sum()")
    comp = composition(arrays)
    kept, temporary = group(comp, 5), group(comp, 6)
    assert kept["blocks"] == 20 and close(kept["bytes"], 20 * block)
    assert close(kept["kept"], 20 * block) and kept["temporary"] == 0
    assert temporary["blocks"] == 1 and close(temporary["temporary"], ARRAY)
    assert not [g for g in comp["groups"] if g["line"] == 1]
    assert close(comp["at"], 20 * block + ARRAY)
    arrays.run("del keep")


def test_grown_block_keeps_its_line(arrays):
    # bytearray's += reallocates the 128 MiB buffer to exactly 192 MiB (+1
    # byte) while line 2's 64 MiB bytes object lives.
    arrays.run("buf = bytearray(2**27)\nbuf += bytes(2**26)")
    comp = composition(arrays)
    grown, added = group(comp, 1), group(comp, 2)
    assert grown["blocks"] == 1 and close(grown["kept"], 3 * 2**26)
    assert added["blocks"] == 1 and close(added["temporary"], 2**26) and added["kept"] == 0
    assert close(comp["at"], 4 * 2**26)
    arrays.run("del buf")


def test_block_made_in_another_python_thread(arrays):
    # The thread holds the GIL while numpy allocates: its frames are read,
    # and the function it runs is the user's (no cell frame in that thread).
    arrays.run("def grow():\n    global grown\n    grown = np.ones(2**25)")
    arrays.run("import threading\nworker = threading.Thread(target=grow)\nworker.start()\n"
               "worker.join()")
    made = group(composition(arrays), None, "grow", 3)
    assert made["origin"] == "code" and made["blocks"] == 1
    assert close(made["kept"], ARRAY)
    arrays.run("del grown")


def test_pandas_arithmetic(arrays):
    floats = 2**24  # 128 MiB
    arrays.run(f"df = pd.DataFrame({{'x': np.arange({floats}, dtype=float)}})")
    arrays.run("df2 = df * 2 + 1")
    line = group(composition(arrays), 1)
    assert line["blocks"] == 2 and close(line["bytes"], 2 * floats * 8)
    assert close(line["kept"], floats * 8) and close(line["temporary"], floats * 8)
    arrays.run("del df, df2")


def test_small_cells_and_switching_off(arrays):
    arrays.run("small = np.ones(2**20)  # 8 MiB: under the 64 MiB a cell needs")
    assert composition(arrays) is None
    arrays.run("%memtamer --peaks off")
    arrays.run("t = (a * 2).sum()")
    assert composition(arrays) is None
    shown = arrays.run("%memtamer --peaks 300MiB")["stdout"]
    assert "peaks taken apart: cells rising 300 MiB or more, blocks of 1.0 MiB or more" in shown
    arrays.run("t = (a * 2).sum()")  # 256 MiB
    assert composition(arrays) is None
    arrays.run("%memtamer --peaks 64MiB")
    arrays.run("t = (a * 2).sum()")
    line = group(composition(arrays), 1)
    assert close(line["temporary"], ARRAY)
    assert arrays.last_cell()["peak_increment"] >= 200 * MiB


def test_memreport_peak_and_the_notice(arrays):
    defined = arrays.run("def double(x):\n    return x * 2")["execution_count"]
    arrays.run("%memtamer --notice 128MiB")
    out = arrays.run("t = double(a).sum()")
    arrays.run("%memtamer --notice off")
    assert ", 256 MiB of it temporaries from double (In[" in out["stdout"]
    shown = arrays.run("%memreport peak")["data"][0]["text/plain"].splitlines()
    assert shown[2].split()[:7] == ["double", f"(In[{defined}])", "line", "2,", "called", "by",
                                    "line"]
    arrays.run("acc = np.empty(0)\nfor i in range(3):\n    acc = np.concatenate([acc, a[:2**23]])")
    cell = arrays.last_cell()["cell"]
    printed = arrays.run(f"%memreport peak {cell} --json")["stdout"]
    record = __import__("json").loads(printed)
    top = record["peak_composition"]["groups"][0]
    assert top["line"] == 3 and "append the pieces to a list" in top["suggestion"]
    arrays.run("del acc")


@pytest.mark.parametrize("line, says", [
    ("%memtamer --peaks lots", "--peaks: 'lots' is not a size"),
    ("%memreport cells 3", "a cell number goes with the peak view only"),
    ("%memreport peak 99999", "no record of cell 99999"),
])
def test_bad_arguments_say_what_to_do(kernel, line, says):
    out = kernel.run(line, allow_error=True)
    assert out["error"]["ename"] == "UsageError" and says in out["error"]["evalue"]


def test_block_made_without_the_gil(arrays):
    # ctypes.CDLL releases the GIL around the call: the raw allocator runs without it.
    arrays.run("import ctypes\nlibc = ctypes.CDLL(None)\n"
               "libc.PyMem_RawMalloc.restype = ctypes.c_void_p\n"
               "libc.PyMem_RawMalloc.argtypes = [ctypes.c_size_t]\n"
               "libc.PyMem_RawFree.argtypes = [ctypes.c_void_p]")
    arrays.run("raw = libc.PyMem_RawMalloc(128 * 2**20)\nlibc.PyMem_RawFree(raw)")
    comp = composition(arrays)
    native = [g for g in comp["groups"] if g["origin"] == "native/worker thread"]
    assert len(native) == 1 and native[0]["line"] is None
    assert close(native[0]["temporary"], 128 * MiB) and native[0]["kept"] == 0
