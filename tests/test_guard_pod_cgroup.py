"""Kernels of one container that ask at the same moment (issue 25): each
reserves its large request in the container's ledger, so that two or three
kernels asking together for more than fits end with some served and the rest
refused cleanly, and the cgroup's OOM killer never fires; and a buffer grown
by realloc stops at the budget.

Each test makes a memory cgroup of its own (tests/cgroups.py; needs
root).  Sizes are kept small for a shared machine: a 1.5 GiB cgroup, of which
memtamer keeps a reserve of 256 MiB, and kernels of about 100 MiB each."""

import concurrent.futures
import os
import subprocess
import sys
import time

import pytest

from cgroups import HOLDER, join, kernel_in, make_memory_cgroup, oom_kills, remove
from conftest import GiB, MiB

LIMIT = 3 * GiB // 2
RESERVE = 256 * MiB
# Runs of each race: the issue asks for 20; a race costs some 10 s of kernel
# start-up here, so fewer, each with fresh kernels' worth of requests.
RACES = 5


@pytest.fixture
def pod(tmp_path):
    """(cgroup, oom counter, start(n) -> n kernels in it sharing one runtime
    directory, so one ledger)."""
    cgroup, counter = make_memory_cgroup(LIMIT)
    started = []

    def start(n):
        kernels = []
        for _ in range(n):
            started.append(kernel_in(cgroup, tmp_path))
            kernels.append(started[-1])
        return kernels

    yield cgroup, counter, start, tmp_path
    for k in started:
        k.shutdown()
    remove(cgroup)


def working_set(cgroup):
    """The cgroup's use as the guard counts it: usage less inactive file."""
    with open(os.path.join(cgroup, "memory.usage_in_bytes" if os.path.exists(
            os.path.join(cgroup, "memory.usage_in_bytes")) else "memory.current")) as f:
        usage = int(f.read())
    with open(os.path.join(cgroup, "memory.stat")) as f:
        stat = dict(line.split() for line in f)
    return usage - int(stat.get("total_inactive_file", stat.get("inactive_file", 0)))


def race(kernels, go, nbytes):
    """Every kernel waits for the file go, then asks for nbytes (numpy.ones:
    every page written) at once; returns their results."""
    code = (f"while not os.path.exists({str(go)!r}):\n    time.sleep(0.0005)\n"
            f"x = np.ones({nbytes // 8})")
    with concurrent.futures.ThreadPoolExecutor(len(kernels)) as pool:
        futures = [pool.submit(k.run, code, 120, True) for k in kernels]
        time.sleep(1.0)  # each is in its wait loop
        go.write_text("go")
        results = [f.result() for f in futures]
    go.unlink()
    return results


@pytest.mark.parametrize("n, share", [(2, 0.75), (3, 0.45)], ids=["two kernels", "three kernels"])
def test_kernels_asking_at_once_never_meet_the_oom_killer(pod, n, share):
    """Each asks for a share of the room left: n - 1 of them fit, and all n
    together would take the cgroup past its limit, reserve included (three
    kernels: 135% of the room; two: 150%)."""
    cgroup, counter, start, runtime = pod
    kernels = start(n)
    pids = [k.query("os.getpid()") for k in kernels]
    kills = oom_kills(counter)
    served_counts = []
    for _ in range(RACES):
        room = LIMIT - RESERVE - working_set(cgroup)
        nbytes = int(room * share) // MiB * MiB
        results = race(kernels, runtime / "go", nbytes)
        assert oom_kills(counter) == kills, "the OOM killer fired"
        served = [r["error"] is None for r in results]
        served_counts.append(sum(served))
        assert 1 <= sum(served) <= n - 1, results
        for k, r, pid in zip(kernels, results, pids):
            assert k.is_alive()
            if r["error"] is None:
                continue
            assert r["error"]["ename"] == "MemoryBudgetExceeded", r["error"]
            assert k.query("sys.last_value.crossed") == "shared"
            # It names the kernels that hold or reserved the room.
            others = [p for p in pids if p != pid]
            named = k.query("[pid for pid, _rss, _reserved in sys.last_value.kernels]")
            assert sorted(named) == sorted(others)
            assert all(f"pid {p}, holds" in r["error"]["evalue"] for p in others)
        for k in kernels:
            k.run("x = None")
    assert served_counts == [n - 1] * RACES


def test_a_reservation_lasts_until_its_pages_are_resident_or_the_cell_ends(pod):
    """A kernel that reserved room and has not written it yet holds it: the
    other is refused, and the refusal says how much is reserved; once the
    first kernel's cell is over, the room is free again."""
    cgroup, counter, start, runtime = pod
    first, second = start(2)
    kills = oom_kills(counter)
    room = LIMIT - RESERVE - working_set(cgroup)
    nbytes = int(room * 0.6) // MiB * MiB
    ticket = runtime / "held"
    # np.empty reserves and writes nothing: its pages are not resident.
    holding = concurrent.futures.ThreadPoolExecutor(1).submit(
        first.run, f"y = np.empty({nbytes // 8})\nopen({str(ticket)!r}, 'w').close()\n"
                   f"while os.path.exists({str(ticket)!r}):\n    time.sleep(0.01)", 60)
    while not ticket.exists():
        time.sleep(0.01)
    out = second.run(f"z = np.ones({nbytes // 8})", allow_error=True)
    kernels = second.query("getattr(sys.last_value, 'kernels', None)")
    # Nor can small blocks, which ask nothing of the ledger, take that room:
    # the watcher holds the other kernel's reservation as used.
    small = second.run(f"z = [np.ones(2**21) for _ in range({nbytes // (16 * MiB)})]",
                       allow_error=True)
    ticket.unlink()
    holding.result()
    assert small["error"] and small["error"]["ename"] == "MemoryBudgetExceeded", small
    assert second.query("sys.last_value.crossed") == "shared"
    assert out["error"] and out["error"]["ename"] == "MemoryBudgetExceeded", out
    first_pid = first.query("os.getpid()")
    assert [pid for pid, _rss, _reserved in kernels] == [first_pid]
    assert kernels[0][2] >= nbytes * 0.9  # reserved, not written
    assert f"pid {first_pid}, holds" in out["error"]["evalue"]
    assert "and reserved" in out["error"]["evalue"]
    # Its cell is over: its reservation with it (y's pages were never written).
    second.run(f"z = np.ones({nbytes // 8})")
    assert oom_kills(counter) == kills


def test_a_dead_kernels_reservation_is_dropped_and_a_bad_ledger_ignored(pod):
    """A kernel killed while it holds a reservation leaves no room taken;
    a ledger file that is not one (garbage written over it) makes each
    kernel decide alone, as without a ledger."""
    cgroup, counter, start, runtime = pod
    first, second = start(2)
    kills = oom_kills(counter)
    room = LIMIT - RESERVE - working_set(cgroup)
    nbytes = int(room * 0.6) // MiB * MiB
    ticket = runtime / "held"
    first.kc.execute(f"y = np.empty({nbytes // 8})\nopen({str(ticket)!r}, 'w').close()\n"
                     "time.sleep(600)")
    while not ticket.exists():
        time.sleep(0.01)
    out = second.run(f"z = np.ones({nbytes // 8})", allow_error=True)
    assert out["error"] and out["error"]["ename"] == "MemoryBudgetExceeded", out
    first.kill()
    while first.is_alive():
        time.sleep(0.01)
    second.run(f"z = np.ones({nbytes // 8})")
    second.run("z = None")
    (ledger,) = runtime.glob("memtamer-pod-*.ledger")
    ledger.write_bytes(b"not a ledger" * 300)
    second.run(f"z = np.ones({nbytes // 8})\nz = None")
    assert second.query("sum(range(10))") == 45
    assert oom_kills(counter) == kills


def test_large_blocks_made_and_freed_in_a_loop_reserve_one_at_a_time(pod):
    """Forty 100 MiB blocks, each written and freed before the next: four
    times the room in all, never more than two blocks at once.  Two blocks
    asked for before either is written both count."""
    cgroup, counter, start, runtime = pod
    (k,) = start(1)
    k.run("for _ in range(40):\n    a = np.ones(100 * 2**20 // 8)\na = None")
    # A process holding 500 MiB of the cgroup leaves less room there than
    # the kernel's own budget does: the shared limit is the one that binds.
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(500 * MiB)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        join(cgroup, holder.pid)
        holder.stdin.write("go\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "ready"
        room = LIMIT - RESERVE - working_set(cgroup)
        block = int(room * 0.6) // MiB * MiB
        out = k.run(f"a = np.empty({block // 8})\nb = np.empty({block // 8})", allow_error=True)
        assert out["error"] and out["error"]["ename"] == "MemoryBudgetExceeded", out
        assert k.query("sys.last_value.crossed") == "shared"
        assert k.query("sys.last_value.requested") == block
        assert k.query("'a' in globals() and 'b' not in globals()") is True
    finally:
        holder.kill()
        holder.wait()


def test_realloc_growth_stops_at_the_budget(pod):
    """bytearray (Python's allocator) and ndarray.resize (numpy's handler)
    grown by realloc, each growth asked of the budget as a new request: the
    kernel's high-water mark stays within one growth step of the budget."""
    cgroup, counter, start, runtime = pod
    (k,) = start(1)
    pid = k.query("os.getpid()")
    kills = oom_kills(counter)
    runaways = {
        "bytearray": "b = bytearray()\nchunk = bytes(2**20)\nwhile True:\n    b += chunk",
        "ndarray.resize": "a = np.ones(2**20)\nwhile True:\n"
                          "    a.resize(len(a) * 9 // 8, refcheck=False)\n    a[:] = 1",
    }
    for name, code in runaways.items():
        rss = k.query("memtamer.report()['process']['rss']")
        budget = rss + 512 * MiB
        k.run(f"%memguard {budget}")
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")  # VmHWM from here
        out = k.run(code, allow_error=True)
        assert out["error"] and out["error"]["ename"] == "MemoryBudgetExceeded", (name, out)
        assert k.query("sys.last_value.layer") in ("python", "numpy"), name
        with open(f"/proc/{pid}/status") as f:
            hwm = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM"))
        # One growth step is an eighth of the buffer, at most 64 MiB here.
        assert hwm <= budget + 64 * MiB, (name, (hwm - budget) / MiB)
        k.run("a = b = None")
    assert oom_kills(counter) == kills
