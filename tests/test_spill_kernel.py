"""%shrink spill of every kind of object in real kernels: read back equal
(each library's own equality, dtypes and index), mapped from its file; kept
in the notebook's store across a SIGKILL and reattached, checksums
verified; damaged, missing and foreign files refused; the disk's reserve
kept; and nothing left behind by a normal shutdown."""

import json
import os
import signal
import time

import pytest

from conftest import needs_torch, stop_writer, writer_thread
from kernel import Kernel

NOTEBOOK = "/home/user/analysis.ipynb"

# Each kind: the code that makes it (the same each time it runs), and an
# expression, the library's own comparison of the variable with a new one.
KINDS = {
    "arr": ("import numpy as np\n"
            "def make_arr():\n"
            "    return np.random.default_rng(1).random((500, 300))",
            "np.array_equal(arr, make_arr()) and arr.dtype == make_arr().dtype"),
    "df": ("import numpy as np, pandas as pd\n"
           "def make_df():\n"
           "    rng = np.random.default_rng(2)\n"
           "    return pd.DataFrame({'f': rng.random(200_000), 'i': np.arange(200_000, dtype='int32'),\n"
           "                         'c': pd.Categorical(rng.choice(['x', 'y'], 200_000))},\n"
           "                        index=pd.date_range('2020', periods=200_000, freq='s'))",
           "(pd.testing.assert_frame_equal(df, make_df(), check_exact=True, check_index_type=True,"
           " check_column_type=True) is None) and list(df.dtypes) == list(make_df().dtypes)"),
    "ser": ("import numpy as np, pandas as pd\n"
            "def make_ser():\n"
            "    return pd.Series(np.arange(300_000, dtype='float32'), name='s',\n"
            "                     index=pd.RangeIndex(5, 300_005))",
            "pd.testing.assert_series_equal(ser, make_ser(), check_exact=True, "
            "check_index_type=True) is None"),
    "tbl": ("import numpy as np\n"
            "pa = __import__('pytest').importorskip('pyarrow')\n"
            "def make_tbl():\n"
            "    return pa.table({'x': np.arange(300_000), 'y': np.linspace(0, 1, 300_000),\n"
            "                     's': pa.array([str(i % 7) for i in range(300_000)])})",
            "tbl.equals(make_tbl()) and tbl.schema == make_tbl().schema"),
    "pdf": ("import numpy as np\n"
            "pl = __import__('pytest').importorskip('polars')\n"
            "def make_pdf():\n"
            "    return pl.DataFrame({'a': np.arange(300_000), 'b': np.linspace(0, 1, 300_000)})",
            "pdf.equals(make_pdf()) and pdf.schema == make_pdf().schema"),
    "arrs": ("import numpy as np\n"
             "def make_arrs():\n"
             "    return {'u': np.arange(300_000, dtype='uint16'), 'v': np.ones((300, 400))}",
             "list(arrs) == ['u', 'v'] and all(np.array_equal(arrs[k], make_arrs()[k]) and "
             "arrs[k].dtype == make_arrs()[k].dtype for k in arrs)"),
    "lst": ("import numpy as np\n"
            "def make_lst():\n"
            "    return [np.full(200_000, 3.5), np.arange(100_000)]",
            "len(lst) == 2 and all(np.array_equal(a, b) and a.dtype == b.dtype "
            "for a, b in zip(lst, make_lst()))"),
}


def start(tmp_path, notebook=NOTEBOOK, **env):
    runtime = tmp_path / "runtime"
    runtime.mkdir(exist_ok=True)
    settings = {"MEMTAMER_SPILL_DIR": str(tmp_path / "store"), "MEMTAMER_RUNTIME_DIR": str(runtime),
                "JPY_SESSION_NAME": notebook, **env}
    k = Kernel(env=settings, cwd=str(runtime))
    out = k.run("%load_ext memtamer")
    return k, out["stdout"]


def make(k, names):
    for name in names:
        code, _ = KINDS[name]
        out = k.run(code, allow_error=True)
        if out["error"] and out["error"]["ename"] == "Skipped":
            pytest.skip(out["error"]["evalue"])
        assert not out["error"], out["error"]
        k.run(f"{name} = make_{name}()")


def mapped_files(k):
    """The spill files the kernel maps now (its /proc/self/maps)."""
    return k.query("sorted({line.split()[-1] for line in open('/proc/self/maps') "
                   "if line.rstrip().endswith('.spill')})")


def kill(k):
    pid = k.query("__import__('os').getpid()")
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while k.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    k.shutdown()


def spill_and_die(tmp_path, names):
    """A kernel of the notebook that spills names and is killed."""
    k, _ = start(tmp_path)
    try:
        make(k, names)
        k.run("%shrink spill " + " ".join(names))
    finally:
        kill(k)


def next_kernel_reattaching(tmp_path, count):
    """The notebook's next kernel, which says it can bring back count
    variables, once %shrink reattach all has brought back each; and what it
    said at its start."""
    k, said = start(tmp_path)
    try:
        assert f"{count} variables" in said, said
        assert k.run("%shrink reattach all")["stdout"].count("reattached") == count
    except BaseException:
        k.shutdown()
        raise
    return k, said


def shut_down_normally(k):
    k.kc.stop_channels()
    k.km.shutdown_kernel(now=False)


def store_files(tmp_path):
    store = tmp_path / "store"
    return sorted(str(p.relative_to(store)) for p in store.rglob("*") if p.is_file()) \
        if store.exists() else []


def store_left(tmp_path):
    """What a normal shutdown left in the store: anything at all."""
    store = tmp_path / "store"
    return sorted(str(p.relative_to(store)) for p in store.rglob("*")) if store.exists() else []


@pytest.mark.parametrize("name", list(KINDS))
def test_each_kind_spills_to_a_mapped_file_and_reads_back_equal(tmp_path, name):
    k, _ = start(tmp_path)
    try:
        make(k, [name])
        out = k.run(f"%shrink spill {name}")
        assert "REFUSED" not in out["data"][0]["text/plain"], out["data"][0]["text/plain"]
        assert k.query(KINDS[name][1])
        files = mapped_files(k)
        assert len(files) == 1 and files[0].startswith(str(tmp_path / "store")), files
        assert oct(os.stat(os.path.dirname(files[0])).st_mode & 0o777) == "0o700"
        manifest, = [p for p in (tmp_path / "store").rglob("manifest-*.json")]
        entry = json.loads(manifest.read_text())["entries"][name]
        assert entry["file"] == os.path.basename(files[0]) and entry["checksum"] == k.query(
            f"__import__('memtamer._core')._core.spill_checksum({files[0]!r})")
        assert entry["file_bytes"] == os.path.getsize(files[0])
        # Rebinding the name lets the file go, and its manifest entry.
        k.run(f"{name} = None\nimport gc; gc.collect()")
        assert not os.path.exists(files[0])
        assert store_files(tmp_path) == []
    finally:
        k.shutdown()


def test_a_killed_kernels_spills_are_offered_and_reattached_equal(tmp_path):
    names = ["df", "tbl", "arrs", "arr", "ser"]
    k, _ = start(tmp_path)
    try:
        make(k, names)
        k.run("%shrink spill " + " ".join(names))
        spilled = mapped_files(k)
        assert len(spilled) == len(names)
    finally:
        kill(k)
    assert all(os.path.exists(path) for path in spilled)  # SIGKILL left them
    k, said = start(tmp_path)
    try:
        assert f"{len(names)} variables" in said and "spilled by the previous kernel" in said, said
        assert "%shrink reattach all" in said
        out = k.run("%shrink reattach all")
        assert out["stdout"].count("reattached") == len(names), out["stdout"]
        make(k, [])  # the makers, to compare with
        for name in names:
            k.run(KINDS[name][0])
            assert k.query(KINDS[name][1]), name
        assert len(mapped_files(k)) == len(names)  # mapped, not read into memory
        # Nothing is offered twice.
        out = k.run("%shrink reattach all", allow_error=True)
        assert "nothing is offered" in out["error"]["evalue"]
    finally:
        shut_down_normally(k)
    assert store_left(tmp_path) == []
    assert not [p for p in (tmp_path / "runtime").iterdir() if p.suffix == ".spills"]


def test_a_different_notebook_is_offered_nothing(tmp_path):
    spill_and_die(tmp_path, ["arr"])
    other, said = start(tmp_path, notebook="/home/user/other.ipynb")
    try:
        assert "reattach" not in said
    finally:
        shut_down_normally(other)
    k, said = start(tmp_path)
    try:
        assert "1 variable," in said
        out = k.run("%shrink reattach --discard")
        assert "arr: discarded" in out["stdout"]
    finally:
        shut_down_normally(k)
    assert store_left(tmp_path) == []


def _manifest(tmp_path):
    path, = (tmp_path / "store").rglob("manifest-*.json")
    return path, json.loads(path.read_text())


def test_damaged_missing_and_foreign_files_are_refused_and_nothing_is_bound(tmp_path):
    names = ["damaged", "missing", "foreign", "truncated", "intact"]
    k, _ = start(tmp_path)
    try:
        k.run("import numpy as np\n" + "\n".join(f"{n} = np.arange(100_000) * {i}"
                                                 for i, n in enumerate(names)))
        k.run("%shrink spill " + " ".join(names))
    finally:
        kill(k)
    path, manifest = _manifest(tmp_path)
    store = path.parent
    entries = manifest["entries"]
    with open(store / entries["damaged"]["file"], "r+b") as f:
        f.seek(4096)
        byte = f.read(1)
        f.seek(4096)
        f.write(bytes([byte[0] ^ 1]))
    os.unlink(store / entries["missing"]["file"])
    os.truncate(store / entries["truncated"]["file"], 4096)
    outside = tmp_path / "elsewhere.spill"
    outside.write_bytes(b"\0" * entries["foreign"]["file_bytes"])
    entries["foreign"]["file"] = "../../elsewhere.spill"
    path.write_text(json.dumps(manifest))
    k, _ = start(tmp_path)
    try:
        out = k.run("%shrink reattach all")["stdout"]
        reasons = dict(line.split(": ", 1) for line in out.splitlines())
        assert "checksum" in reasons["damaged"], reasons
        assert "is gone" in reasons["missing"], reasons
        assert "not one memtamer spilled" in reasons["foreign"], reasons
        assert "truncated" in reasons["truncated"], reasons
        assert reasons["intact"].startswith("reattached"), reasons
        assert k.query("[n for n in %r if n in globals()]" % names) == ["intact"]
        assert k.query("int(intact.sum())") == sum(range(100_000)) * 4
    finally:
        shut_down_normally(k)
    assert outside.exists()  # not the store's to remove


def test_the_disk_reserve_refuses_a_spill_and_changes_nothing(tmp_path):
    k, _ = start(tmp_path, MEMTAMER_SPILL_RESERVE="1000 TiB")
    try:
        make(k, ["arr", "df"])
        out = k.run("%shrink spill arr df", allow_error=True)
        text = out["data"][0]["text/plain"] if out["data"] else out["error"]["evalue"]
        assert "REFUSED" in text and "reserve" in text, text
        assert k.query("type(arr).__name__") == "ndarray" and k.query(KINDS["df"][1])
        assert mapped_files(k) == [] and store_files(tmp_path) == []
        assert "reserve 1000 TiB" in k.run("%memguard")["stdout"]
    finally:
        k.shutdown()


def test_what_cannot_come_back_equal_is_refused_with_the_reason(tmp_path):
    k, _ = start(tmp_path)
    try:
        k.run("import numpy as np, threading\n"
              "class Opaque:\n"
              "    def __init__(self):\n"
              "        self.data = np.ones(10**6)\n"
              "opaque = Opaque()\n"
              "locked = [threading.Lock(), np.ones(10**6)]\n"
              "words = {str(i): 'w' * 50 for i in range(10**4)}")
        out = k.run("%shrink spill opaque")["data"][0]["text/plain"]
        assert "REFUSED" in out and "equal" in out, out
        out = k.run("%shrink spill locked")["data"][0]["text/plain"]
        assert "REFUSED" in out and "cannot be pickled" in out, out
        out = k.run("%shrink spill words")["data"][0]["text/plain"]
        assert "REFUSED" in out and "Python objects" in out, out
        assert k.query("type(opaque).__name__ + type(locked).__name__") == "Opaquelist"
        assert store_files(tmp_path) == []
    finally:
        k.shutdown()


def test_a_normal_shutdown_leaves_no_litter(tmp_path):
    import tempfile

    k, _ = start(tmp_path)
    try:
        make(k, ["arr", "arrs"])
        pid = k.query("__import__('os').getpid()")
        k.run("%shrink spill arr arrs")
        assert len(store_files(tmp_path)) == 3  # two files and the manifest
    finally:
        shut_down_normally(k)
    assert store_left(tmp_path) == []
    temp = tempfile.gettempdir()
    assert [p for p in os.listdir(temp) if "memtamer" in p and str(pid) in p] == []


def test_a_name_bound_in_the_new_kernel_is_not_overwritten_by_reattach(tmp_path):
    spill_and_die(tmp_path, ["arr"])
    k, _ = start(tmp_path)
    try:
        k.run("arr = 'mine'")
        out = k.run("%shrink reattach arr")["stdout"]
        assert "NOT reattached" in out and "already bound" in out, out
        assert k.query("arr") == "mine"
        k.run("del arr")
        assert "arr: reattached" in k.run("%shrink reattach arr")["stdout"]
        out = k.run("%shrink spill", allow_error=True)
        assert "name the variables" in out["error"]["evalue"]
        out = k.run("%shrink reattach nope", allow_error=True)
        assert "UsageError" in out["error"]["ename"] and "nothing is offered" in out["error"]["evalue"]
    finally:
        shut_down_normally(k)
    assert store_left(tmp_path) == []


def test_no_write_of_a_python_thread_is_lost_spilling_an_object(tmp_path):
    """A thread adds 1 to one item of a Series at a time while it is spilled:
    the spill is done with every write in the file's mapping, or refused
    because it changed; either way the sum is the count of writes."""
    k, _ = start(tmp_path)
    try:
        k.run("import pandas as pd")
        k.run(writer_thread("written", 2**21, "pd.Series(np.zeros({items}))"))
        started = k.query("written_writes")
        # The thread holds the Series while it writes: --copy spills it anyway.
        table = k.run("%shrink spill written --copy")["data"][-1]["text/plain"]
        assert "REFUSED" not in table or "changed (by another thread)" in table, table
        writes, total = stop_writer(k, "written")
        assert writes > started
        assert total == writes
    finally:
        k.shutdown()


# requirements-test.txt installs torch (a CPU wheel) for Python 3.11 only.
# Tensors whose layout a careless copy would lose: column-major strides with
# requires_grad, bfloat16 (no numpy dtype), a storage offset into a larger
# storage; and a check of every one against a new one, bit for bit.
TENSORS = ("import torch\n"
           "def make_tensors():\n"
           "    w = torch.empty_strided((600, 1000), (1, 600)).copy_(\n"
           "        torch.arange(600_000.0).reshape(600, 1000)).requires_grad_()\n"
           "    h = (torch.arange(300_000) % 251).to(torch.bfloat16)\n"
           "    o = torch.empty(0, dtype=torch.int16).set_(\n"
           "        torch.arange(400_000, dtype=torch.int16).untyped_storage(), 1000, (1000, 300), (300, 1))\n"
           "    return w, h, o\n"
           "def same_tensors(now):\n"
           "    return all(type(a) is type(b) and a.dtype == b.dtype and a.shape == b.shape\n"
           "               and a.stride() == b.stride() and a.storage_offset() == b.storage_offset()\n"
           "               and a.requires_grad == b.requires_grad and a.is_leaf\n"
           "               and torch.equal(a.detach(), b.detach())\n"
           "               and a.untyped_storage().nbytes() == b.untyped_storage().nbytes()\n"
           "               for a, b in zip(now, make_tensors()))")


@needs_torch
def test_torch_tensors_spill_and_reattach_exactly(tmp_path):
    k, _ = start(tmp_path)
    try:
        k.run(TENSORS)
        k.run("w, h, o = make_tensors()")
        table = k.run("%shrink spill w h o")["data"][0]["text/plain"]
        assert "REFUSED" not in table, table
        assert len(mapped_files(k)) == 3
        assert k.query("same_tensors((w, h, o))")
        entries = json.loads(next((tmp_path / "store").rglob("manifest-*.json")).read_text())
        assert {entries["entries"][n]["kind"] for n in "who"} == {"torch.Tensor"}
    finally:
        kill(k)
    k, _ = next_kernel_reattaching(tmp_path, 3)
    try:
        k.run(TENSORS)
        assert k.query("same_tensors((w, h, o))")
        assert len(mapped_files(k)) == 3  # mapped, not read into memory
        # Autograd works on what came back.
        assert k.query("(w * 2).sum().backward() or float(w.grad[0, 0])") == 2.0
    finally:
        shut_down_normally(k)
    assert store_left(tmp_path) == []


@needs_torch
def test_tensors_that_cannot_come_back_exactly_are_refused_with_the_reason(tmp_path):
    k, _ = start(tmp_path)
    try:
        k.run("import torch\n"
              "leaf = torch.ones(10**6, requires_grad=True)\n"
              "graph = leaf * 2\n"
              "view = torch.arange(10**6)[10:]\n"
              "graded = torch.ones(10**6, requires_grad=True)\n"
              "graded.sum().backward()\n"
              "conj = torch.ones(10**5, dtype=torch.complex64).conj()\n"
              "bundle = {'ok': torch.ones(10**6), 'graph': graph}")
        reasons = {"graph": "grad_fn", "view": "shares its storage", "graded": ".grad",
                   "bundle": "grad_fn"}
        for name, reason in reasons.items():
            table = k.run(f"%shrink spill {name}")["data"][0]["text/plain"]
            assert "REFUSED" in table and reason in table, (name, table)
        table = k.run("%shrink spill conj")["data"][0]["text/plain"]
        assert "REFUSED" in table, table
        assert k.query("graph.grad_fn is not None and view._base is not None and "
                       "type(bundle['graph']).__name__ == 'Tensor'")
        assert store_files(tmp_path) == []
    finally:
        k.shutdown()


def test_a_checkpoint_leaves_the_variables_in_memory_and_brings_them_back_after_a_death(
        tmp_path):
    names = ["arr", "df", "arrs"]
    k, _ = start(tmp_path)
    try:
        make(k, names)
        ids = k.query("[id(arr), id(df), id(arrs)]")
        # A checkpoint's dry run frees nothing either.
        assert k.query("[(r['status'], r['bytes_after'] == r['bytes_before']) for r in "
                       "__import__('memtamer').shrink('spill', 'arr', 'df', keep_in_memory=True, "
                       "dry_run=True).values()]") == [["dry-run", True]] * 2
        assert store_files(tmp_path) == []
        table = k.run("%shrink spill arr df arrs --keep-in-memory")["data"][0]["text/plain"]
        assert "REFUSED" not in table and table.count("(kept in memory)") == 3, table
        assert k.query("[id(arr), id(df), id(arrs)]") == ids  # nothing rebound
        assert mapped_files(k) == []  # nothing mapped: the files are copies
        assert len(store_files(tmp_path)) == 4  # three files and the manifest
        # A change after the checkpoint is what a death loses.
        k.run("arr[0, 0] = -1.0")
    finally:
        kill(k)
    k, _ = next_kernel_reattaching(tmp_path, 3)
    try:
        for name in names:
            k.run(KINDS[name][0])
            assert k.query(KINDS[name][1]), name
    finally:
        shut_down_normally(k)
    assert store_left(tmp_path) == []


def test_keep_for_reattach_outlives_a_normal_exit_and_nothing_else_does(tmp_path):
    k, _ = start(tmp_path)
    try:
        make(k, ["arr", "arrs", "ser"])
        k.run("%shrink spill arr --keep-for-reattach")
        k.run("%shrink spill arrs --keep-for-reattach --keep-in-memory")
        k.run("%shrink spill ser")
        # arr is a read-write map: what is written into it is what comes back.
        k.run("arr[0, 0] = 42.0")
        out = k.run("%shrink spill ser --keep-in-memory --dir .", allow_error=True)
        assert "drop --dir" in out["error"]["evalue"]
    finally:
        shut_down_normally(k)
    left = store_left(tmp_path)
    assert len([p for p in left if p.endswith(".spill")]) == 2, left  # arr's and arrs', not ser's
    k, said = next_kernel_reattaching(tmp_path, 2)
    try:
        assert "arr, arrs" in said, said
        k.run(KINDS["arr"][0] + "\n" + KINDS["arrs"][0])
        assert k.query("float(arr[0, 0]) == 42.0 and np.array_equal(arr[1:], make_arr()[1:])")
        assert k.query(KINDS["arrs"][1])
        assert k.query("'ser' not in globals()")
    finally:
        shut_down_normally(k)
    # Reattached, they are this kernel's, which kept nothing for reattaching.
    assert store_left(tmp_path) == []


def test_keep_for_reattach_needs_a_notebook(tmp_path):
    k, _ = start(tmp_path, notebook="")
    try:
        make(k, ["arr"])
        table = k.run("%shrink spill arr --keep-for-reattach")["data"][0]["text/plain"]
        assert "REFUSED" in table and "no notebook" in table, table
        assert k.query("type(arr).__name__") == "ndarray"
    finally:
        shut_down_normally(k)


def test_a_rule_checkpoints_idle_variables_for_the_next_kernel(tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text("version: 1\nrules:\n  - name: checkpoint\n    when: {idle_for: 1}\n"
                     "    match: {name: 'ck_*'}\n    do: spill\n    keep_in_memory: true\n"
                     "    keep_for_reattach: true\n")
    k, _ = start(tmp_path, MEMTAMER_RULES=str(rules))
    try:
        make(k, ["arr"])
        k.run("ck_a = make_arr()")
        k.run("x = 1")
        k.run("y = 2")
        assert k.query("type(ck_a).__name__") == "ndarray"  # still in memory
        assert mapped_files(k) == []
    finally:
        shut_down_normally(k)
    k, said = start(tmp_path)
    try:
        assert "1 variable" in said and "ck_a" in said, said
        assert "reattached" in k.run("%shrink reattach ck_a")["stdout"]
        k.run(KINDS["arr"][0])
        assert k.query("np.array_equal(ck_a, make_arr())")
    finally:
        shut_down_normally(k)
    assert store_left(tmp_path) == []
