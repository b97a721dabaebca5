"""One budget for the whole container (issue 9): kernels in a real memory
cgroup that a holder process shares end their cells with
MemoryBudgetExceeded before the cgroup's OOM killer fires.

The test makes a child memory cgroup of its own (cgroup v1's memory
controller, or v2 where memory is delegated to children) limited to 1 GiB;
it needs root.  The holder keeps 400 MiB; memtamer's reserve under 1 GiB is
256 MiB, so a kernel has about 350 MiB of room."""

import os
import subprocess
import sys
import time

import pytest

from conftest import GiB, MiB
from kernel import Kernel

LIMIT = 1 * GiB
HOLDER_BYTES = 400 * MiB

HOLDER = """
import sys
sys.stdin.readline()
held = bytearray(b"\\x01") * int(sys.argv[1])  # written: every page is charged
print("ready", flush=True)
sys.stdin.readline()
"""


def _own_cgroups():
    v1 = v2 = None
    with open("/proc/self/cgroup") as f:
        for line in f:
            _id, controllers, path = line.rstrip("\n").split(":", 2)
            if controllers == "":
                v2 = path
            elif "memory" in controllers.split(","):
                v1 = path
    return v1, v2


def _mounts():
    found = {}
    with open("/proc/self/mounts") as f:
        for line in f:
            _dev, point, kind, options = line.split()[:4]
            if kind == "cgroup" and "memory" in options.split(","):
                found.setdefault("v1", point)
            elif kind == "cgroup2":
                found.setdefault("v2", point)
    return found


def make_memory_cgroup(limit):
    """(directory, oom counter file, counter key) of a new child cgroup, or
    pytest.skip with the reason it cannot be made here."""
    if os.geteuid() != 0:
        pytest.skip("making a memory cgroup needs root")
    v1, v2 = _own_cgroups()
    mounts = _mounts()
    name = f"memtamer-test-{os.getpid()}-{time.monotonic_ns()}"
    reasons = []
    if v1 is not None and "v1" in mounts:
        path = os.path.join(mounts["v1"] + v1, name)
        try:
            os.mkdir(path)
            with open(os.path.join(path, "memory.limit_in_bytes"), "w") as f:
                f.write(str(limit))
            return path, os.path.join(path, "memory.oom_control")
        except OSError as exc:
            reasons.append(f"cgroup v1 at {mounts['v1']}: {exc}")
    if v2 is not None and "v2" in mounts:
        parent = mounts["v2"] + v2
        path = os.path.join(parent, name)
        try:
            with open(os.path.join(parent, "cgroup.subtree_control")) as f:
                if "memory" not in f.read().split():
                    raise OSError("the memory controller is not delegated to children")
            os.mkdir(path)
            with open(os.path.join(path, "memory.max"), "w") as f:
                f.write(str(limit))
            return path, os.path.join(path, "memory.events")
        except OSError as exc:
            reasons.append(f"cgroup v2 at {parent}: {exc}")
    pytest.skip("no memory cgroup can be made here: " + ("; ".join(reasons) or "none mounted"))


def oom_kills(counter):
    with open(counter) as f:
        for line in f:
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
    return 0


def join(cgroup, pid):
    with open(os.path.join(cgroup, "cgroup.procs"), "w") as f:
        f.write(str(pid))


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
        env = {"MEMTAMER_RUNTIME_DIR": str(tmp_path)}
        if notebook:
            env["JPY_SESSION_NAME"] = notebook
        k = Kernel(env=env, cwd=str(tmp_path))
        started.append(k)
        join(cgroup, k.query("__import__('os').getpid()"))
        k.run("%load_ext memtamer\nimport memtamer, sys, numpy as np")
        return k

    yield cgroup, counter, holder, kernel
    for thing in started:
        if isinstance(thing, Kernel):
            thing.shutdown()
        else:
            thing.kill()
            thing.wait()
    deadline = time.time() + 20
    while True:
        try:
            os.rmdir(cgroup)
            break
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.1)


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
