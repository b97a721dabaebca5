"""Real memory cgroups for the tests that need one (root only): made as a
child of this process's own cgroup, kernels and processes joined to it,
removed when they have left."""

import os
import time

import pytest

from kernel import Kernel

# A process that holds SIZE bytes of written memory once told "go", until
# told again.
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


def kernel_in(cgroup, directory, env=None):
    """A kernel started in directory and joined to cgroup, with memtamer
    loaded and memtamer, os, sys, time and numpy (as np) imported."""
    k = Kernel(env=dict(env or {}, MEMTAMER_RUNTIME_DIR=str(directory)), cwd=str(directory))
    try:
        join(cgroup, k.query("__import__('os').getpid()"))
        k.run("%load_ext memtamer\nimport memtamer, os, sys, time, numpy as np")
    except BaseException:
        k.shutdown()
        raise
    return k


def remove(cgroup, seconds=20):
    """Removes cgroup once the processes that were in it have left (the
    kernel leaves some time after its shutdown reply)."""
    deadline = time.time() + seconds
    while True:
        try:
            os.rmdir(cgroup)
            return
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.1)
