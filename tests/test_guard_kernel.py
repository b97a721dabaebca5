"""The memory guard in a real kernel: runaway cells end in MemoryBudgetExceeded,
and the kernel and its variables live on (post-mortems: test_postmortem_kernel.py).

Each runaway is bounded (at most ~3 GiB even if the guard failed) and the
budget sits 1 GiB above the kernel's RSS, far below this machine's memory."""

import hashlib
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from conftest import PYTHON_VERSION_SKIP, GiB, MiB
from kernel import Kernel

ROOM = 1 * GiB

# The variable made before each runaway, and its checksum computed here,
# independently of the kernel.
KEEP = "keep = np.arange(2**22, dtype=np.int64) * 7 + 3"
KEEP_DIGEST = hashlib.sha256((np.arange(2**22, dtype=np.int64) * 7 + 3).tobytes()).hexdigest()


def meminfo_total():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no MemTotal")


def rss_of(pid):
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    runtime = tmp_path_factory.mktemp("runtime")
    k = Kernel(env={"MEMTAMER_RUNTIME_DIR": str(runtime)}, cwd=str(runtime))
    k.run("%load_ext memtamer")
    k.run("import numpy as np, pandas as pd, hashlib, gc, memtamer\n" + KEEP)
    yield k
    k.shutdown()


def set_budget_above_rss(k):
    pid = k.query("__import__('os').getpid()")
    budget = rss_of(pid) + ROOM
    k.run(f"%memguard {budget}")
    assert k.query("memtamer.budget()['budget']") == budget
    return budget


def assert_survived(k, result, layer):
    err = result["error"]
    assert err is not None, "the runaway cell finished: the guard did not stop it"
    assert err["ename"] == "MemoryBudgetExceeded", err
    # IPython keeps the exception it showed in sys.last_value.
    assert k.query("__import__('sys').last_value.layer") == layer
    assert k.is_alive()
    assert k.query("hashlib.sha256(keep.tobytes()).hexdigest()") == KEEP_DIGEST
    assert "Variables made before this cell are intact." in err["evalue"]
    # The next cell runs normally and memory went back.
    out = k.run("gc.collect(); print(sum(range(10)))")
    assert out["stdout"].strip() == "45"
    assert k.query("memtamer.budget()['rss']") < k.query("memtamer.budget()['budget']")
    return err["evalue"]


def test_numpy_request_over_budget_is_refused(guarded):
    budget = set_budget_above_rss(guarded)
    request = 4 * GiB
    err = assert_survived(guarded, guarded.run(f"x = np.ones({request // 8})", allow_error=True),
                          "numpy")
    assert "a numpy buffer of 4.0 GiB" in err
    assert guarded.query("__import__('sys').last_value.requested") == request
    assert guarded.query("__import__('sys').last_value.budget") == budget
    assert guarded.query("'x' in globals()") is False


def test_python_loop_of_1mib_bytearrays(guarded):
    set_budget_above_rss(guarded)
    code = ("def grow():\n    held = []\n    for _ in range(3 * 1024):\n"
            "        held.append(bytearray(2**20))\ngrow()")
    err = assert_survived(guarded, guarded.run(code, allow_error=True), "python")
    assert "a block of 1.0 MiB from Python's allocator" in err


def test_list_of_range_over_budget(guarded):
    set_budget_above_rss(guarded)
    # 2**28 pointers ask for 2 GiB at once.
    err = assert_survived(guarded, guarded.run("big = list(range(2**28))", allow_error=True),
                          "python")
    assert "a block of 2.0 GiB" in err


def test_pure_python_growth_is_stopped_by_the_watcher(guarded):
    set_budget_above_rss(guarded)
    # Small objects only: no single request reaches the refusal layers.
    code = ("def grow():\n    held = []\n    for i in range(60_000_000):\n"
            "        held.append((i, i))\ngrow()")
    err = assert_survived(guarded, guarded.run(code, allow_error=True), "watcher")
    assert "The kernel's memory (RSS) reached" in err


def test_pandas_concat_growth(guarded):
    set_budget_above_rss(guarded)
    code = ("df = pd.DataFrame(np.ones((2**17, 8)))\n"
            "for _ in range(9):\n    df = pd.concat([df, df])")
    assert_survived(guarded, guarded.run(code, allow_error=True), "numpy")
    guarded.run("del df")


def test_bytes_join_of_a_generator(guarded):
    set_budget_above_rss(guarded)
    err = assert_survived(
        guarded, guarded.run('blob = b"".join(bytes(2**20) for _ in range(3 * 1024))',
                             allow_error=True), "python")
    assert "from Python's allocator" in err


def vmhwm_of(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmHWM:"))


def test_thread_pool_worker_allocating_numpy(guarded):
    """A worker thread's numpy buffers are stopped at the budget, seen from
    outside: the kernel's high-water mark, reset here before the cell, stays
    within one buffer of the budget."""
    budget = set_budget_above_rss(guarded)
    pid = guarded.query("__import__('os').getpid()")
    code = ("from concurrent.futures import ThreadPoolExecutor\n"
            "pool = ThreadPoolExecutor(1)\n"
            "def work():\n    return [np.ones(2**24) for _ in range(20)]  # 2.5 GiB\n"
            "pool.submit(work).result()")
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")  # VmHWM back to the RSS now
    result = guarded.run(code, allow_error=True)
    assert vmhwm_of(pid) <= budget + 128 * MiB + 32 * MiB
    layer = guarded.query("__import__('sys').last_value.layer")
    err = assert_survived(guarded, result, layer)
    assert "a numpy buffer of 128 MiB" in err or "The kernel's memory (RSS) reached" in err
    guarded.run("pool.shutdown(wait=True); del pool")


def test_multiprocessing_child_is_killed(guarded):
    set_budget_above_rss(guarded)
    code = ("import multiprocessing as mp, time\n"
            "def grow():\n    held = [bytearray(2**20) for _ in range(2 * 1024 + 512)]\n"
            "    time.sleep(60)\n"
            "child = mp.get_context('fork').Process(target=grow)\n"
            "child.start()\nchild.join()")
    err = assert_survived(guarded, guarded.run(code, allow_error=True), "child")
    assert "memtamer killed that process" in err
    guarded.run("child.join(10)")
    # -9, or unknown when the guard's signal interrupted the join that
    # reaped it before that join kept the exit code; gone either way.
    assert guarded.query("child.exitcode") in (-9, None)
    assert guarded.query("__import__('os').path.exists(f'/proc/{child.pid}')") is False


def test_next_cell_is_not_hit_by_a_stale_trip(guarded):
    set_budget_above_rss(guarded)
    r = guarded.run("def grow():\n    held = []\n    for i in range(60_000_000):\n"
                    "        held.append((i, i))\ngrow()", allow_error=True)
    assert r["error"]["ename"] == "MemoryBudgetExceeded"
    # A signal left over from the trip would stop one of the cells that follow
    # at once: twenty of them, back to back, all run clean.
    for n in range(20):
        out = guarded.run(f"print({n})", allow_error=True)
        assert out["error"] is None and out["stdout"].strip() == str(n), out


def test_memguard_settings(guarded):
    total = meminfo_total()
    guarded.run("%memguard 80%")
    assert guarded.query("memtamer.budget()['budget']") == int(total * 0.8)
    guarded.run("%memguard default")
    expected = total - max(256 * MiB, total // 100 * 5)
    assert guarded.query("memtamer.budget()['budget']") == expected
    shown = guarded.run("%memguard")["stdout"]
    assert "memory budget" in shown and "in use" in shown
    # IPython prints a UsageError on stderr rather than raising it.
    bad = guarded.run("%memguard banana", allow_error=True)["stderr"]
    assert "UsageError" in bad and "8GiB" in bad
    low = guarded.run("%memguard 1MiB", allow_error=True)["stderr"]
    assert "UsageError" in low and "already uses" in low
    assert guarded.query("memtamer.budget()['budget']") == expected
    guarded.run("%memguard off")
    assert guarded.query("memtamer.budget()['enabled']") is False
    guarded.run("%memguard default")


def test_unload_restores_signal_and_custom_exceptions(tmp_path):
    k = Kernel(env={"MEMTAMER_RUNTIME_DIR": str(tmp_path)}, cwd=str(tmp_path))
    try:
        before = k.query("[str(__import__('signal').getsignal(__import__('signal').SIGRTMAX - 6)),"
                         " str(get_ipython().custom_exceptions)]")
        k.run("%load_ext memtamer")
        assert len(list(tmp_path.glob("memtamer-*.guard"))) == 1
        k.run("%unload_ext memtamer")
        after = k.query("[str(__import__('signal').getsignal(__import__('signal').SIGRTMAX - 6)),"
                        " str(get_ipython().custom_exceptions)]")
        assert after == before
        assert list(tmp_path.glob("memtamer-*.guard")) == []
        k.run("%load_ext memtamer")
        assert k.query("__import__('memtamer').budget()['enabled']") is True
    finally:
        k.shutdown()


def error_text(out):
    """What the user saw of a failed magic (IPython prints UsageError)."""
    return (out["error"]["evalue"] if out["error"] else "") + out["stderr"]


@pytest.mark.parametrize("line, says", [
    ("%memguard 99999999999999999999TiB", "more than any memory limit"),
    ("%memguard -1GiB", "is negative"),
    ("%memguard 1GiB 2GiB", "takes one budget"),
])
def test_memguard_bad_budgets_say_what_to_write(guarded, line, says):
    before = guarded.query("memtamer.budget()['budget']")
    text = error_text(guarded.run(line, allow_error=True))
    assert "UsageError" in text and says in text, text
    assert "OverflowError" not in text and "unrecognized arguments" not in text
    assert "like 8GiB" in text or "e.g. %memguard 8GiB" in text or "like 512MiB" in text
    assert guarded.query("memtamer.budget()['budget']") == before


def test_a_budget_below_the_kernel_is_refused_in_sizes_people_read(guarded):
    text = error_text(guarded.run("%memguard 10", allow_error=True))
    rss = guarded.query("memtamer._core.process()['rss']")
    assert re.search(r"cannot set the memory budget to 10 B: it is not above what the kernel "
                     r"already uses: give a larger budget, or free memory first \(the kernel "
                     r"uses \d+(\.\d)? MiB, the limit is \d+(\.\d)? GiB\)", text), text
    assert str(rss) not in text and "bytes" not in text


@pytest.mark.parametrize("value, error, says", [
    ("2**70", "ValueError", "more than any memory limit"),
    ("-1", "ValueError", "'-1' is negative: a size is a positive number"),  # %memguard's words
    ("0", "ValueError", "give a positive size"),
])
def test_set_budget_bad_bytes_say_what_to_write(guarded, value, error, says):
    out = guarded.run(f"memtamer.set_budget({value})", allow_error=True)
    assert out["error"]["ename"] == error and says in out["error"]["evalue"], out["error"]
    assert "limit is unknown" not in out["error"]["evalue"]


def test_notice_zero_is_refused_with_the_way_to_turn_notices_off(guarded):
    text = error_text(guarded.run("%memtamer --notice 0", allow_error=True))
    assert "UsageError" in text and "--notice off" in text
    settings = guarded.run("%memtamer")["stdout"]
    assert "off" not in settings.split("notice after heavy cells:")[1].splitlines()[0]


FORK_ONCE = ("def fork_once():\n    pid = os.fork()\n    if pid == 0:\n        os._exit(0)\n"
             "    os.waitpid(pid, 0)\n")


def test_no_memtamer_thread_is_alive_at_fork(tmp_path):
    """Python 3.12+ warns at os.fork() in a multi-threaded process.  Our hook
    is registered before memtamer's, so (before-hooks run in reverse order)
    it looks at /proc/self/task after memtamer's own before-fork hook ran,
    right before the fork itself."""
    # One BLAS thread: numpy's BLAS would start threads of its own.
    k = Kernel(env={"MEMTAMER_RUNTIME_DIR": str(tmp_path), "OPENBLAS_NUM_THREADS": "1",
                    "MEMTAMER_SPILL_DIR": str(tmp_path / "spill")}, cwd=str(tmp_path))
    try:
        k.run("import os, time\nseen = []\n"
              "os.register_at_fork(before=lambda: seen.append(set(os.listdir('/proc/self/task'))))\n"
              + FORK_ONCE + "fork_once()")
        without = k.query("len(seen[-1])")
        k.run("%load_ext memtamer\nimport memtamer")
        # The sampled peak method runs the probe's sampler thread during a cell.
        k.run("memtamer._core.set_peak_method('sampled')")
        k.run("watcher = str(memtamer.budget()['watcher_tid'])\nfork_once()\n"
              "polls = memtamer.budget()['watcher_polls']\ntime.sleep(0.3)\n"
              "polls_after = memtamer.budget()['watcher_polls']")
        assert k.query("watcher in seen[-1]") is False
        assert k.query("len(seen[-1])") == without
        # The watcher runs again after the fork, in the same cell.
        assert k.query("polls_after > polls") is True
        assert k.query("str(memtamer.budget()['watcher_tid']) in os.listdir('/proc/self/task')")
        # Between cells no sampler thread is left either.
        k.run("fork_once()")
        assert k.query("len(seen[-1])") == without
        # Nor the thread that starts a spill's writeback, right after a spill
        # started it; it runs again after the fork: the next spill is whole.
        k.run("import numpy as np\nbefore_spill = len(os.listdir('/proc/self/task'))")
        k.run("first = np.arange(2.0**23)\n%shrink spill first\nfork_once()")
        assert k.query("len(seen[-1])") == without
        k.run("second = np.arange(2.0**23)\n%shrink spill second")
        assert k.query("[type(v).__name__ for v in (first, second)]") == ["memmap", "memmap"]
        assert k.query("bool((first == second).all() and second[-1] == 2**23 - 1)") is True
        # Once it has asked for every range, the writeback thread ends: a
        # kernel that spilled keeps no more threads than before its spills
        # (a fork starts memtamer's other threads again: counted, not named).
        k.run("deadline = time.monotonic() + 5\n"
              "while len(os.listdir('/proc/self/task')) > before_spill and "
              "time.monotonic() < deadline:\n"
              "    time.sleep(0.01)\n"
              "after_spills = len(os.listdir('/proc/self/task'))")
        assert k.query("after_spills") == k.query("before_spill")
    finally:
        k.shutdown()


@pytest.mark.parametrize("env", [{"PYTHONMALLOC": "debug"}, {"PYTHONDEVMODE": "1"}],
                         ids=["PYTHONMALLOC=debug", "-X dev"])
def test_debug_allocator_large_blocks_are_refused(tmp_path, env):
    """Python's debug hooks wrap every allocator domain; one huge block and
    a block grown by realloc are still held against the budget."""
    k = Kernel(env={"MEMTAMER_RUNTIME_DIR": str(tmp_path), **env}, cwd=str(tmp_path))
    try:
        k.run("%load_ext memtamer\nimport memtamer, os, sys")
        assert k.query("memtamer.budget()['python_blocks']") is True
        pid = k.query("os.getpid()")
        k.run(f"%memguard {rss_of(pid) + 300 * MiB}")
        out = k.run("c = [0] * 2**27", allow_error=True)  # asks for 1 GiB at once
        assert out["error"] and out["error"]["ename"] == "MemoryBudgetExceeded", out
        assert "a block of 1.0 GiB from Python's allocator" in out["error"]["evalue"]
        assert k.query("'c' in globals()") is False
        out = k.run("b = bytearray()\nfor _ in range(1024):\n    b += bytes(2**20)",
                    allow_error=True)
        assert out["error"] and out["error"]["ename"] == "MemoryBudgetExceeded", out
        assert k.query("sys.last_value.layer") in ("python", "watcher")
        k.run("del b")
        assert rss_of(pid) < 1 * GiB
        assert "Python blocks" in k.run("%memguard")["stdout"]
    finally:
        k.shutdown()


# IPython's history thread is left out: its own fork hook joins it as a
# Python thread, which returns before the OS thread has gone, so 3.12 can
# see it at fork with or without memtamer.
FORK_IN_A_SHELL = """
import warnings
from traitlets.config import Config
from IPython.core.interactiveshell import InteractiveShell
config = Config()
config.HistoryManager.enabled = False
shell = InteractiveShell.instance(config=config)
shell.run_line_magic("load_ext", "memtamer")
shell.run_cell('''
import os, warnings, memtamer
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
print("warnings:", [str(w.message) for w in caught])
print("watcher:", memtamer.budget()["watcher"])
''')
"""


@pytest.mark.skipif(sys.version_info < (3, 12), reason=f"{PYTHON_VERSION_SKIP} 3.12 or later, "
                    "which warns at fork; test_no_memtamer_thread_is_alive_at_fork checks the "
                    "mechanism on every version")
def test_fork_in_a_cell_warns_nothing(tmp_path):
    out = subprocess.run([sys.executable, "-c", FORK_IN_A_SHELL], capture_output=True,
                         text=True, timeout=120, cwd=tmp_path,
                         env={**os.environ, "MEMTAMER_RUNTIME_DIR": str(tmp_path)})
    assert "warnings: []" in out.stdout, out.stdout + out.stderr
    assert "watcher: True" in out.stdout


# Where each layer stops a runaway, in bytes, seen from outside: the
# kernel's high-water mark (VmHWM, reset right before the cell) against a
# budget a few hundred MiB above its RSS.
STOP_ROOM = 300 * MiB
# The hooks refuse before the bytes exist: what they miss is the estimate's
# lag (memory the hooks do not count, since the watcher's last reading) and
# what making the exception takes.
HOOK_SLACK = 6 * MiB
# A runaway that does one more step each turn, up to about 1 GiB (so that
# a guard that failed costs no more); held = (i, held) makes a
# chain of small tuples that no single large block holds together.  The
# high-water mark is read as the stop arrives, while all it held is alive
# (formatting the traceback comes after and is no part of the stop).
GROW = ("def grow():\n    held = []\n    for i in range({}):\n        {}\n"
        "try:\n    grow()\nfinally:\n    stop_hwm = [int(l.split()[1]) * 1024 for l in "
        "open('/proc/self/status') if l.startswith('VmHWM:')][0]")


def stopping_point(k, code, layer):
    """Runs code (a GROW) with a budget STOP_ROOM above the kernel's RSS;
    returns the budget and the kernel's high-water mark at the stop."""
    k.run("gc.collect(); memtamer._core.trim()")
    pid = k.query("__import__('os').getpid()")
    budget = rss_of(pid) + STOP_ROOM
    k.run(f"%memguard {budget}")
    result = run_from_a_fresh_high_water_mark(k, pid, code)
    assert_survived(k, result, layer)
    return budget, k.query("stop_hwm")


def run_from_a_fresh_high_water_mark(k, pid, code):
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")  # VmHWM back to the RSS now
    return k.run(code, allow_error=True)


def test_numpy_handler_stops_within_a_few_mib_of_the_budget(guarded):
    budget, hwm = stopping_point(guarded, GROW.format(1024, "held.append(np.ones(2**17))"),
                                 "numpy")  # 1 MiB each
    assert budget - 1 * MiB - HOOK_SLACK <= hwm <= budget + HOOK_SLACK, (hwm - budget) / MiB


def test_python_hooks_stop_within_a_few_mib_of_the_budget(guarded):
    budget, hwm = stopping_point(
        guarded, GROW.format(1024, "held.append(bytearray(2**20))"), "python")
    assert budget - 1 * MiB - HOOK_SLACK <= hwm <= budget + HOOK_SLACK, (hwm - budget) / MiB


def test_watcher_stops_within_one_poll_of_the_budget(guarded):
    """Small objects only, so no hook sees a large request: the watcher
    stops the cell after its RSS crossed the budget, within the growth of
    one poll at the fastest growth its naps are planned for."""
    poll = guarded.query("memtamer.budget()['poll_us']") / 1e6
    fastest = 4 * GiB  # bytes per second (guard.c's GROWTH_BYTES_PER_US)
    budget, hwm = stopping_point(
        guarded, GROW.format(10_000_000, "held = (i, held)"), "watcher")
    assert budget <= hwm <= budget + poll * fastest, (hwm - budget) / MiB


# A child that reports its own RSS after each MiB it holds and its private
# bytes (smaps_rollup, which walks every page: not each time) after each
# eighth, and holds at most one MiB per CHILD_STEP seconds.
CHILD_STEP = 0.005
CHILD_GROWS = f"""
import multiprocessing as mp, os, time
sizes = mp.get_context('fork').Array('q', 2, lock=False)  # RSS, private
page = os.sysconf('SC_PAGE_SIZE')

def grow():
    held = []
    for n in range(1024):
        held.append(bytearray(2**20))
        sizes[0] = int(open('/proc/self/statm').read().split()[1]) * page
        if n % 8 == 0:
            fields = dict(l.split()[:2] for l in open('/proc/self/smaps_rollup') if l[0].isupper())
            sizes[1] = (int(fields['Private_Clean:']) + int(fields['Private_Dirty:'])) * 1024
        time.sleep({CHILD_STEP})

child = mp.get_context('fork').Process(target=grow)
child.start()
try:
    child.join()
finally:
    stop_hwm = [int(l.split()[1]) * 1024 for l in open('/proc/self/status')
                if l.startswith('VmHWM:')][0]
"""


def test_child_is_stopped_within_a_look_of_the_budget(guarded):
    """The watcher looks at the cell's children every tenth of a second and
    naps at most a fifth between polls: the child is killed within the
    growth of those 0.3 s of its own pace, whether the guard counts its
    RSS or only its private bytes (read last up to 8 MiB before)."""
    look = 0.1 + 0.2  # guard.c's CHILD_LOOK_SECONDS and MAX_NAP_US
    budget, hwm = stopping_point(guarded, CHILD_GROWS, "child")
    rss, private = guarded.query("list(sizes)")
    # Killed and reaped (the guard's signal may interrupt the join that
    # reaped it before it kept the exit code).
    guarded.run("child.join(10)")
    assert guarded.query("os.path.exists(f'/proc/{child.pid}')") is False
    assert hwm + rss + 1 * MiB >= budget, (hwm + rss - budget) / MiB
    assert hwm + private <= budget + look / CHILD_STEP * MiB, (hwm + private - budget) / MiB


GROWS_BETWEEN_CELLS = f"""
import threading, time
go, grown = threading.Event(), threading.Event()
held_by_thread = []
def grow_later():
    go.wait()
    held_by_thread.append(np.ones({2 * STOP_ROOM // 8}))
    grown.set()
threading.Thread(target=grow_later, daemon=True).start()
"""


def test_a_kernel_over_its_budget_at_a_cells_start_is_stopped_only_on_its_growth(guarded):
    """A thread grows the kernel past its budget between cells.  The next
    cell may still ask for memory (the hooks see a 1 MiB request) and run
    for a while (the watcher polls); growth past the grace is stopped, at
    the kernel's use when the cell began plus the grace."""
    guarded.run("gc.collect(); memtamer._core.trim()")
    pid = guarded.query("__import__('os').getpid()")
    budget = rss_of(pid) + STOP_ROOM
    guarded.run(f"%memguard {budget}")
    guarded.run(GROWS_BETWEEN_CELLS)
    try:
        # A query runs no cell: the thread grows the kernel between cells.
        assert guarded.query("go.set() or grown.wait(120)") is True
        rss_before = rss_of(pid)
        assert rss_before > budget + STOP_ROOM // 2
        out = guarded.run("small = np.ones(2**17)\ntime.sleep(0.5)", allow_error=True)
        assert out["error"] is None, out["error"]
        grace = guarded.query("memtamer.budget()['grace']")
        result = run_from_a_fresh_high_water_mark(
            guarded, pid, GROW.format(1024, "held.append(np.ones(2**17))"))  # 1 MiB each
        assert result["error"]["ename"] == "MemoryBudgetExceeded", result["error"]
        assert "before the cell began, over its budget" in result["error"]["evalue"]
        assert guarded.query("__import__('sys').last_value.layer") == "numpy"
        hwm = guarded.query("stop_hwm")
        ceiling = rss_before + grace
        assert ceiling - 1 * MiB - HOOK_SLACK <= hwm <= ceiling + HOOK_SLACK, (hwm - ceiling) / MiB
    finally:
        guarded.run("held_by_thread.clear(); gc.collect(); memtamer._core.trim()")
    assert guarded.query("memtamer.budget()['rss']") < budget
