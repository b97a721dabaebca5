"""%shrink in a real kernel: the peak of an in-place downcast, transparent restore."""

import os
import time

import pytest

from conftest import GiB, MiB


def maxrss_and_rss(kernel):
    """The kernel's lifetime peak (getrusage: memtamer's VmHWM resets do not
    touch it) and its RSS now."""
    return kernel.query("{'maxrss': __import__('resource').getrusage(0).ru_maxrss * 1024, "
                        "'rss': [int(l.split()[1]) * 1024 for l in open('/proc/self/status') "
                        "if l.startswith('VmRSS')][0]}")


def test_inplace_downcast_of_1gib_keeps_the_high_water_mark(kernel):
    kernel.run("import numpy as np")
    kernel.run("big = np.random.default_rng(0).random(2**27)  # 1 GiB of float64")
    kernel.run("expect = big[:1000].astype(np.float32); tail = big[-1000:].astype(np.float32)")
    start = maxrss_and_rss(kernel)
    # The lifetime peak is where we stand now, so any rise above it would show.
    assert start["maxrss"] <= start["rss"] * 1.01, start
    out = kernel.run("%shrink downcast big")
    end = maxrss_and_rss(kernel)
    assert "in place" in out["stdout"] + str(out["data"])
    assert end["maxrss"] <= start["maxrss"] * 1.01, (start, end)
    assert kernel.query("str(big.dtype)") == "float32"
    assert kernel.query("bool((big[:1000] == expect).all() and (big[-1000:] == tail).all())")
    # The allocation itself shrank: half a GiB went back.
    assert start["rss"] - end["rss"] == pytest.approx(GiB / 2, rel=0.03)
    kernel.run("del big, expect, tail")


def test_compressed_variable_is_restored_when_a_cell_reads_it(kernel):
    kernel.run("import numpy as np, memtamer")
    kernel.run("counts = np.random.default_rng(2).poisson(3, size=2**22)  # 32 MiB int64\n"
               "checksum = int(counts.sum()); first = counts[:10].tolist()")
    kernel.run("%shrink compress counts --codec zstd")
    assert kernel.query("type(counts).__name__") == "Compressed"
    info = kernel.query("memtamer._core.compressed_info(counts)")
    assert info["cbytes"] < info["nbytes"] / 4
    out = kernel.run("total = int(counts.sum())")
    assert "restored counts" in out["stdout"]
    assert kernel.query("type(counts).__name__") == "ndarray"
    assert kernel.query("total") == kernel.query("checksum")
    assert kernel.query("counts[:10].tolist()") == kernel.query("first")
    # A cell that only rebinds the name does not restore it first.
    kernel.run("%shrink compress counts")
    out = kernel.run("counts = 5")
    assert "restored" not in out["stdout"]


def test_refusal_names_the_output_cache(kernel):
    kernel.run("import numpy as np")
    kernel.run("shown = np.arange(10.0)")
    kernel.run("shown")  # now held by Out and _
    out = kernel.run("%shrink downcast shown")
    text = out["stdout"] + str(out["data"])
    assert "REFUSED" in text and "Out[" in text
    assert kernel.query("str(shown.dtype)") == "float64"


def test_bad_input_is_a_usage_error(kernel):
    # IPython prints a UsageError instead of raising it into the reply.
    out = kernel.run("%shrink downcast no_such_name", allow_error=True)
    assert "UsageError" in out["stderr"] and "no variable named no_such_name" in out["stderr"]
    kernel.run("x = [1, 2, 3]")
    out = kernel.run("%shrink squash x", allow_error=True)
    assert "UsageError" in out["stderr"] and "unknown action" in out["stderr"]
    assert kernel.query("x") == [1, 2, 3]


RSS = "[int(l.split()[1]) * 1024 for l in open('/proc/self/status') if l.startswith('VmRSS')][0]"


def test_del_purges_the_output_cache_and_returns_what_it_predicts(kernel):
    kernel.run("import numpy as np, memtamer")
    kernel.run("shown = np.ones(2**25)  # 256 MiB")
    shown_at = kernel.run("shown")["execution_count"]  # now Out, _ and _N hold it too
    dry = kernel.query("memtamer.shrink('del', 'shown', dry_run=True)['shown']")
    assert dry["status"] == "dry-run"
    assert set(dry["purged"]) >= {f"Out[{shown_at}]", f"_{shown_at}"}
    assert dry["predicted"] == pytest.approx(256 * MiB, rel=0.01)
    # The dry run put back exactly what it took away.
    assert kernel.query(f"shown is Out[{shown_at}] is _{shown_at} is _")
    assert kernel.query("get_ipython().displayhook._ is shown")
    assert kernel.query("list(Out) == sorted(Out)")
    # What earlier cells freed goes back to the OS first: the RSS that del
    # returns is then what it freed, nothing else.
    kernel.query("memtamer._core.trim()")
    before = kernel.query(RSS)
    row = kernel.query("memtamer.shrink('del', 'shown')['shown']")
    returned = before - kernel.query(RSS)
    assert returned == pytest.approx(row["predicted"], rel=0.03)
    assert not kernel.query(f"'shown' in globals() or {shown_at} in Out or '_{shown_at}' in globals()")


@pytest.mark.parametrize("displayed", [False, True], ids=["plain", "displayed"])
def test_del_returns_what_it_predicts_from_a_fragmented_heap(fresh_kernel, displayed):
    """2,000 arrays of 100 KiB live in glibc's heap, not in mappings of their
    own.  Displayed once, the output cache holds the list and the display's
    strings sit between its blocks; a cell later, %shrink del must still
    give back what it predicts: its trim comes after the last reference."""
    k = fresh_kernel
    k.run("%load_ext memtamer\nimport numpy as np, memtamer")
    k.run("L = [np.ones(100 * 1024 // 8) for _ in range(2000)]")
    if displayed:
        k.run("L")
    k.run("import gc; gc.collect()")  # its result shifts the output cache
    predicted = k.query("memtamer.shrink('del', 'L', dry_run=True)['L']['predicted']")
    assert predicted == pytest.approx(2000 * 100 * 1024, rel=0.02)
    k.query("memtamer._core.trim()")  # only what del frees is then returned
    before = k.query(RSS)
    out = k.run("%shrink del L")
    assert "frees" in out["stdout"] + str(out["data"])
    returned = before - k.query(RSS)
    assert returned == pytest.approx(predicted, rel=0.05)


def test_del_names_other_holders_and_leaves_them_alone(kernel):
    kernel.run("import numpy as np, memtamer")
    kernel.run("first = np.ones(2**24); second = first; checksum = float(first.sum())")
    out = kernel.run("%shrink del first")
    assert "second still holds it" in str(out["data"])
    assert kernel.query("'first' not in globals() and float(second.sum()) == checksum")
    # Named together, the holders go together and the memory with them.
    kernel.run("third = second")
    before = kernel.query(RSS)
    rows = kernel.query("memtamer.shrink('del', 'second', 'third')")
    assert before - kernel.query(RSS) == pytest.approx(128 * MiB, rel=0.03)
    assert sum(r["predicted"] for r in rows.values()) == pytest.approx(128 * MiB, rel=0.01)


def test_del_bad_input_changes_nothing(kernel):
    kernel.run("keep = [1, 2, 3]")
    for line in ("%shrink del", "%shrink del nosuchname keep", "%shrink del keep --copy",
                 "%shrink del keep --level 3"):
        out = kernel.run(line, allow_error=True)
        assert out["error"]["ename"] == "UsageError", line
    assert kernel.query("keep") == [1, 2, 3]


THREADS = """
import threading, time
import numpy as np, memtamer

n = 2**22  # 32 MiB of float64 each
a = np.full(n, 0.5)  # read by one thread
b = np.zeros(n)  # written by another: write k stores its pass number k // n + 1 at k % n
stop = threading.Event()
torn, reads, written = [], [0], [0]

def reader():
    while not stop.is_set():
        first, last = a[0], a[-1]
        reads[0] += 1
        if first != 0.5 or last != 0.5:
            torn.append((float(first), float(last)))

def writer():
    k = 0
    while not stop.is_set():
        b[k % n] = k // n + 1
        k += 1
    written[0] = k

threads = [threading.Thread(target=reader), threading.Thread(target=writer)]
for t in threads:
    t.start()
time.sleep(0.2)
"""

DOWNCAST_UNDER_THREADS = """
rows = {}
for name in ("a", "b"):
    # A thread may hold a reference for an instant: then it is refused, unchanged.
    for attempt in range(100):
        rows[name] = memtamer.shrink("downcast", name)[name]
        if rows[name]["status"] == "done":
            break
time.sleep(0.2)
stop.set()
for t in threads:
    t.join()
j = np.arange(n)
expected = np.where(j < written[0], (written[0] - 1 - j) // n + 1, 0)
"""


def test_downcast_is_atomic_for_reader_and_writer_threads(kernel):
    """Other threads wait while the array converts: the reader sees 0.5
    before and after (never half-converted bytes), and every write the
    writer made, before, during or after, is in the result."""
    kernel.run(THREADS)
    kernel.run(DOWNCAST_UNDER_THREADS)
    rows = kernel.query("{k: [r['status'], r['in_place']] for k, r in rows.items()}")
    assert rows == {"a": ["done", True], "b": ["done", True]}
    assert kernel.query("[str(a.dtype), str(b.dtype)]") == ["float32", "float32"]
    assert kernel.query("reads[0]") > 100 and kernel.query("written[0]") > 1000
    assert kernel.query("torn[:5]") == []
    assert kernel.query("int((b != expected).sum())") == 0
    kernel.run("del a, b, j, expected")


def test_a_failed_shrink_does_not_pin_the_variable(kernel):
    kernel.run("import numpy as np")
    kernel.run("objs = np.empty(2**24, dtype=object)  # 128 MiB of pointers to None")
    out = kernel.run("%shrink spill objs", allow_error=True)
    assert "UsageError" in out["stderr"] and "Python objects" in out["stderr"]
    # IPython keeps the error it showed; it must not keep objs.
    assert kernel.query("type(__import__('sys').last_value).__name__") == "UsageError"
    before = kernel.query(RSS)
    kernel.run("del objs")
    assert before - kernel.query(RSS) == pytest.approx(128 * MiB, rel=0.05)


def test_del_of_ipython_names_says_what_they_are(kernel):
    kernel.run("1 + 1")  # so that _ and Out exist
    for name, what in (("In", "input history"), ("Out", "output cache"), ("_", "last output"),
                       ("_ih", "input history")):
        out = kernel.run(f"%shrink del {name}", allow_error=True)
        assert "UsageError" in out["stderr"] and what in out["stderr"], (name, out["stderr"])
        assert "module, function or class" not in out["stderr"]
    assert kernel.query("len(Out) > 0 and len(In) > 0")


def test_the_spill_store_of_a_killed_kernel_of_no_notebook_is_removed_at_load(tmp_path):
    from kernel import Kernel

    env = {"MEMTAMER_SPILL_DIR": str(tmp_path)}
    killed = Kernel(env=env)
    try:
        killed.run("%load_ext memtamer\nimport numpy as np\nbig = np.ones(2**20)")
        killed.run("%shrink spill big")
        path = killed.query("big.filename")
        assert os.path.exists(path) and os.path.dirname(path).startswith(str(tmp_path))
        killed.kill()
        deadline = time.monotonic() + 30
        while killed.is_alive() and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        killed.shutdown()
    assert os.path.exists(path)  # SIGKILL gave it no chance to clean up
    fresh = Kernel(env=env)
    try:
        out = fresh.run("%load_ext memtamer")
        assert "spill store(s) of killed kernels of no notebook" in out["stdout"]
        assert not os.path.exists(path) and not os.path.exists(os.path.dirname(path))
    finally:
        fresh.shutdown()


def test_pack_of_a_list_of_small_ints_is_not_refused_as_shared(kernel):
    """Python shares small ints (and interned strings) everywhere: a list of
    them shares nothing a packed copy would split."""
    kernel.run("ids = list(range(10**6))\nsmall = [7] * 1000 + [None, 'a']\nseven = 7")
    out = kernel.run("%shrink pack ids")
    assert "REFUSED" not in out["data"][0]["text/plain"], out
    assert kernel.query("[str(ids.dtype), int(ids.sum())]") == ["int64", sum(range(10**6))]
    # A list that holds a mutable object bound to another name is still refused.
    kernel.run("inner = [1.0, 2.0]\nholder = [inner, inner]")
    out = kernel.run("%shrink compress holder")
    assert "REFUSED" in out["data"][0]["text/plain"] and "inner" in out["data"][0]["text/plain"]


# Each check with one owner: a bad value as a magic takes it and as the rules
# file takes it, the option's name in each, and the words both show after it.
SINGLE_OWNER_CHECKS = [
    ("%shrink compress checked --codec brotli", "--codec: ",
     "version: 1\nrules:\n  - name: a\n    do: compress\n    codec: brotli\n", "codec: "),
    ("%shrink compress checked --level 12", "--level: ",
     "version: 1\nrules:\n  - name: a\n    do: compress\n    level: 12\n", "level: "),
    ("%shrink downcast checked --rtol -1", "--rtol: ",
     "version: 1\nrules:\n  - name: a\n    do: downcast\n    rtol: -1\n", "rtol: "),
    ("%shrink downcast checked --to int3", "--to: ",
     "version: 1\nrules:\n  - name: a\n    do: downcast\n    to: int3\n", "to: "),
    ("%memtamer --peaks 12parsecs", "--peaks: ",
     "version: 1\nrules:\n  - name: a\n    do: spill\n    match: {min_size: 12parsecs}\n",
     "min_size: "),
    ("%memguard 180%", "%memguard: ", "version: 1\nbudget: 180%\n", "budget: "),
    ("%memguard -1GiB", "%memguard: ", "version: 1\nbudget: -1GiB\n", "budget: "),
]


@pytest.mark.parametrize("line, magic_key, document, rules_key", SINGLE_OWNER_CHECKS,
                         ids=[c[0] for c in SINGLE_OWNER_CHECKS])
def test_a_bad_value_reads_the_same_from_the_magics_and_the_rules(kernel, line, magic_key,
                                                                 document, rules_key):
    from memtamer import _core

    kernel.run("import numpy as np\nchecked = np.linspace(0, 1, 4096)")
    out = kernel.run(line, allow_error=True)
    shown = (out["error"]["evalue"] if out["error"] else "") + out["stderr"]
    assert "UsageError" in shown and magic_key in shown, shown
    (_, _, rules_message), *_ = _core.rules_load(document.encode())
    problem = rules_message.split(rules_key, 1)[1].removesuffix(" (or off)")
    bad = line.split()[-1]
    assert problem.startswith(f"'{bad}' is "), rules_message  # names what the user wrote
    assert magic_key + problem in shown, (shown, rules_message)
    # refused before anything changed
    assert kernel.query("str(checked.dtype)") == "float64"


# Each of IPython's holders alone keeps an array alive after `del`: the
# cells that make that holder (and no name of the user's) hold it.  {n} is
# the number of the cell that displayed it.
HOLDERS = {
    "_": [],
    "__": ["1"],
    "___": ["1", "2"],
    "_N": ["1", "2", "3"],
    "Out": ["1", "2", "3", "del _{n}"],
    "_oh": ["1", "2", "3", "del _{n}\nOut = None"],
}


@pytest.mark.parametrize("holder", list(HOLDERS) + ["last traceback"])
def test_del_purges_each_ipython_holder(kernel, holder):
    """The truth is a weak reference: after %shrink del the array is gone
    from this process, whichever of IPython's holders had it."""
    kernel.run("import numpy as np, weakref, gc, sys")
    kernel.run("held = np.ones(2**20); alive = weakref.ref(held)")
    try:
        purge_only(kernel, holder)
    finally:
        kernel.run("Out = get_ipython().history_manager.output_hist")


def purge_only(kernel, holder):
    if holder == "last traceback":
        kernel.run("def keep(a):\n    raise ValueError('keeps a in its frame')\nkeep(held)",
                   allow_error=True)
        assert kernel.query("[f for f, _ in __import__('traceback').walk_tb(sys.last_traceback)]"
                            "[-1].f_locals['a'] is held")
    else:
        n = kernel.run("held")["execution_count"]
        for code in HOLDERS[holder]:
            kernel.run(code.format(n=n))
        assert kernel.query(f"held is get_ipython().history_manager.output_hist[{n}]")
    kernel.run("%shrink del held")
    assert kernel.query("gc.collect() >= 0 and alive() is None"), holder
    assert kernel.query("'held' not in globals()")
