"""One budget for the whole container (issue 9): kernels in a real memory
cgroup that a holder process shares end their cells with
MemoryBudgetExceeded before the cgroup's OOM killer fires.

The test makes a child memory cgroup of its own (cgroup v1's memory
controller, or v2 where memory is delegated to children) limited to 1 GiB;
it needs root.  The holder keeps 400 MiB; memtamer's reserve under 1 GiB is
256 MiB, so a kernel has about 350 MiB of room."""

import subprocess
import sys

import pytest

from cgroups import HOLDER, join, kernel_in, make_memory_cgroup, oom_kills, remove
from conftest import GiB, MiB
from kernel import Kernel

LIMIT = 1 * GiB
HOLDER_BYTES = 400 * MiB


@pytest.fixture
def shared_cgroup(tmp_path):
    cgroup, counter = make_memory_cgroup(LIMIT)
    started = []

    def holder(size=HOLDER_BYTES):
        proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(size)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)
        started.append(proc)
        join(cgroup, proc.pid)
        proc.stdin.write("go\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "ready"
        return proc

    def kernel(notebook=None):
        k = kernel_in(cgroup, tmp_path, {"JPY_SESSION_NAME": notebook} if notebook else None)
        started.append(k)
        return k

    yield cgroup, counter, holder, kernel
    for thing in started:
        if isinstance(thing, Kernel):
            thing.shutdown()
        else:
            thing.kill()
            thing.wait()
    remove(cgroup)


def assert_stopped_by_the_shared_limit(k, result, layer):
    err = result["error"]
    assert err is not None, "the cell finished: the guard did not stop it"
    assert err["ename"] == "MemoryBudgetExceeded", err
    assert k.query("sys.last_value.crossed") == "shared"
    assert k.query("sys.last_value.layer") == layer
    assert "past its memory of 1.0 GiB" in err["evalue"]
    assert k.query("sum(range(10))") == 45
    return err["evalue"]


def test_kernel_cannot_take_what_the_holder_needs(shared_cgroup):
    cgroup, counter, holder, kernel = shared_cgroup
    kills = oom_kills(counter)
    held = holder()
    k = kernel()
    shown = k.run("%memguard")["stdout"]
    assert "the container:" in shown and f"({'cgroup1' if 'memory.oom' in counter else 'cgroup2'} {cgroup})" in shown
    assert "room for this kernel's next cell" in shown and "(the container's)" in shown
    assert k.query("memtamer.report()['process']['shared']['path']") == cgroup
    # Each alone fits the kernel's own budget (the machine's memory) easily.
    text = assert_stopped_by_the_shared_limit(
        k, k.run("x = np.ones(600 * 2**20 // 8)", allow_error=True), "numpy")
    assert "a numpy buffer of 600 MiB" in text
    assert f"pid {held.pid}, holds" in text  # the holder, by command name and pid
    assert_stopped_by_the_shared_limit(k, k.run("c = [0] * 2**26", allow_error=True), "python")
    assert_stopped_by_the_shared_limit(k, k.run(
        "def grow():\n    held = []\n    for i in range(60_000_000):\n"
        "        held.append((i, i))\ngrow()", allow_error=True), "watcher")
    assert held.poll() is None, "the holder died"
    assert oom_kills(counter) == kills


def test_two_kernels_name_each_other(shared_cgroup):
    cgroup, counter, holder, kernel = shared_cgroup
    kills = oom_kills(counter)
    first = kernel("/home/ana/analysis.ipynb")
    first.run("kept = np.ones(300 * 2**20 // 8)")
    second = kernel("/home/ana/model.ipynb")
    text = assert_stopped_by_the_shared_limit(
        second, second.run("x = np.ones(600 * 2**20 // 8)", allow_error=True), "numpy")
    first_pid = first.query("__import__('os').getpid()")
    assert f"the kernel of analysis.ipynb, pid {first_pid}, holds" in text
    second.run("kept = np.ones(300 * 2**20 // 8)")
    text = assert_stopped_by_the_shared_limit(
        first, first.run("y = np.ones(300 * 2**20 // 8)", allow_error=True), "numpy")
    second_pid = second.query("__import__('os').getpid()")
    assert f"the kernel of model.ipynb, pid {second_pid}, holds" in text
    assert oom_kills(counter) == kills
