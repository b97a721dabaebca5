"""Swap as room in a real container (issue 35): a swapfile this test makes
and removes, and a child memory cgroup of 512 MiB that allows 768 MiB more
in swap.  The cell the issue names (plain appends of numpy arrays past the
memory limit) finishes under memtamer, going to swap as it would without
it; a request beyond memory plus swap still ends in MemoryBudgetExceeded
with no OOM kill; %memguard --no-swap brings back the budget in RAM.

Needs root, swapon permitted and a cgroup with swap accounting; skipped with
the reason otherwise.  The swapfile is on only while the test runs."""

import os
import subprocess

import pytest

from cgroups import kernel_in, make_memory_cgroup, oom_kills, remove
from conftest import MiB

MEMORY = 512 * MiB
SWAP = 768 * MiB
PART = 64 * MiB  # np.ones(2**23): written, so every page is charged


def run_root(*command):
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise OSError(f"{' '.join(command)}: {done.stderr.strip() or done.returncode}")


@pytest.fixture
def swapfile(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("swapon needs root")
    path = tmp_path / "swapfile"
    try:
        run_root("fallocate", "-l", str(SWAP + 256 * MiB), str(path))
        path.chmod(0o600)
        run_root("mkswap", str(path))
        run_root("swapon", str(path))
    except OSError as exc:
        path.unlink(missing_ok=True)
        pytest.skip(f"no swapfile can be turned on here: {exc}")
    yield path
    run_root("swapoff", str(path))
    path.unlink()


@pytest.fixture
def swap_container(tmp_path, swapfile):
    cgroup, counter = make_memory_cgroup(MEMORY)
    memsw = os.path.join(cgroup, "memory.memsw.limit_in_bytes")
    swap_max = os.path.join(cgroup, "memory.swap.max")
    with open(memsw if os.path.exists(memsw) else swap_max, "w") as f:
        f.write(str(MEMORY + SWAP if os.path.exists(memsw) else SWAP))
    try:
        k = kernel_in(cgroup, tmp_path)
    except BaseException:
        remove(cgroup)
        raise
    try:
        yield k, counter
    finally:
        k.shutdown()
        remove(cgroup)


def vm_swap(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmSwap:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmSwap")


GROW = "parts = []\nfor i in range({n}):\n    parts.append(np.ones({part} // 8))"


def test_the_cell_goes_to_swap_and_the_guard_still_stops_past_it(swap_container):
    k, counter = swap_container
    kills = oom_kills(counter)
    status = k.query("memtamer.budget()")
    assert status["swap"]["counted"] == SWAP, status["swap"]
    assert status["budget"] == MEMORY + SWAP - 256 * MiB
    pid = k.query("__import__('os').getpid()")
    before = vm_swap(pid)
    # 640 MiB of parts in a 512 MiB container: without swap it could not end.
    done = k.run(GROW.format(n=10, part=PART), allow_error=True)
    assert done["error"] is None, done["error"]
    after = vm_swap(pid)
    assert after - before > 64 * MiB, (before, after)
    # The cell's record says what it pushed to swap, as the kernel counts it.
    record = k.query("memtamer.report()['cells'][-1]")
    assert record["swapped"] == pytest.approx(after - before, rel=0.1)
    assert record["major_faults"] >= 0
    assert k.query("sum(p[-1] for p in parts)") == 10.0
    # Past memory plus swap: stopped, not killed.
    stopped = k.run(GROW.format(n=12, part=PART).replace("parts", "more"), allow_error=True)
    assert stopped["error"] and stopped["error"]["ename"] == "MemoryBudgetExceeded"
    assert k.query("len(parts)") == 10
    assert oom_kills(counter) == kills


def test_no_swap_brings_back_the_budget_in_ram(swap_container):
    k, counter = swap_container
    kills = oom_kills(counter)
    k.run("%memguard --no-swap")
    assert k.query("memtamer.budget()['budget']") == MEMORY - 256 * MiB
    stopped = k.run(GROW.format(n=10, part=PART), allow_error=True)
    assert stopped["error"] and stopped["error"]["ename"] == "MemoryBudgetExceeded"
    assert oom_kills(counter) == kills


THRASH = """import time
began = time.monotonic()
while time.monotonic() - began < 90:
    for p in parts:
        p += 1.0
"""


def test_thrashing_stop_ends_a_cell_that_keeps_faulting_pages_in(swap_container):
    k, counter = swap_container
    kills = oom_kills(counter)
    k.run(GROW.format(n=10, part=PART))
    k.run("%memguard --thrashing stop")
    # Every pass over 640 MiB in 512 MiB of memory brings pages back from swap.
    stopped = k.run(THRASH, allow_error=True)
    assert stopped["error"] and stopped["error"]["ename"] == "MemoryBudgetExceeded"
    assert k.query("sys.last_value.crossed") == "thrashing"
    assert k.query("time.monotonic() - began") < 60  # stopped, not run out
    assert "because the kernel was thrashing" in stopped["error"]["evalue"]
    assert k.query("sys.last_value.major_faults_per_second") > \
        k.query("memtamer.budget()['thrashing']['major_faults_per_second']")
    assert k.query("len(parts)") == 10
    assert oom_kills(counter) == kills


def test_a_thrashing_cell_let_run_is_told_to_watchers_while_it_runs(swap_container):
    import threading
    import time

    from memtamer.telemetry import Follower

    k, counter = swap_container
    k.run(GROW.format(n=10, part=PART))
    k.run("%memguard --thrashing warn")
    pid = k.query("__import__('os').getpid()")
    follower = Follower()
    follower.rescan()
    kernel = next(key for key, state in follower.kernels.items() if state["pid"] == pid)
    events, stop = [], threading.Event()

    def follow():
        while not stop.is_set():
            message = follower.receive(0.2)
            if message and message["kernel"] == kernel and message["kind"] == "event":
                events.append((time.monotonic(), message))

    thread = threading.Thread(target=follow)
    thread.start()
    try:
        out = k.run(THRASH.replace("< 90", "< 20"))  # let run: it ends by itself
        ended = time.monotonic()
    finally:
        stop.set()
        thread.join()
        follower.close()
    assert out["error"] is None
    told = [(at, m["data"]) for at, m in events if m["event"] == "thrashing"]
    assert len(told) == 1, events  # once a cell
    at, data = told[0]
    assert at < ended - 5  # live: long before the cell ended
    assert data["action"] == "warn" and data["major_faults_per_second"] > \
        k.query("memtamer.budget()['thrashing']['major_faults_per_second']")
