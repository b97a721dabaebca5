"""Children that outlive a cell (issue 36): workers and servers started in
one cell and made to grow in a later one.  Each live descendant is counted
from what it owned when the cell began; %memreport children lists them with
the cell that started them and their role; the guard stops a cell that
makes such a process grow past the budget and names it, never kills it.

Every figure is checked against the bytes the test makes each process write
(all pages touched), never against memtamer's own idea of them."""

import json
import os
import re
import subprocess
import sys
import time

import pytest

from conftest import MiB
from kernel import Kernel

# Each worker writes this much and keeps it (a module global of the worker).
WORKER_WRITES = 256 * MiB


@pytest.fixture(scope="module")
def kernel(tmp_path_factory):
    runtime = tmp_path_factory.mktemp("runtime")
    k = Kernel(env={"MEMTAMER_RUNTIME_DIR": str(runtime)}, cwd=str(runtime))
    k.run("%load_ext memtamer\nimport json, memtamer, os, re, socket, subprocess, sys, time\n"
          "import multiprocessing as mp")
    yield k
    k.shutdown()


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in "ZX"
    except FileNotFoundError:
        return False


def children_report(k):
    out = k.run("%memreport children --json")
    return json.loads(out["stdout"])


# Worker functions, defined before the pool forks (a worker could not unpickle
# a function defined after it): hold waits for all its pool's workers (so
# each takes one task), then writes size bytes and keeps them; grow writes
# without waiting; release frees what both kept.
HOLD = (
    "def hold(size):\n"
    "    global kept\n"
    "    barrier.wait(timeout=60)\n"
    "    kept = bytearray(b'\\x01') * size\n"
    "    return os.getpid()\n"
    "def grow(size):\n"
    "    global grown\n"
    "    grown = bytearray(b'\\x01') * size\n"
    "    return os.getpid()\n"
    "def release(_):\n"
    "    global kept, grown\n"
    "    barrier.wait(timeout=60)\n"
    "    kept = grown = None\n"
    "    return os.getpid()\n")


@pytest.fixture(scope="module")
def pool(kernel):
    kernel.run("fork = mp.get_context('fork')\nbarrier = fork.Barrier(2)\n" + HOLD +
               "pool = fork.Pool(2)")
    started = kernel.query("memtamer.report()['cells'][-1]['cell']")
    yield started
    kernel.run("pool.terminate(); pool.join(); del pool")


def test_pool_of_an_earlier_cell_is_counted_by_what_its_workers_write(kernel, pool):
    kernel.run("pids = pool.map(hold, [%d, %d], chunksize=1)" % (WORKER_WRITES, WORKER_WRITES))
    cell = kernel.last_cell()
    pids = kernel.query("pids")
    assert len(set(pids)) == 2
    wrote = 2 * WORKER_WRITES
    assert wrote * 0.9 <= cell["children_peak"] <= wrote * 1.1, cell
    assert cell["children_method"] == "private"
    # The next cell that leaves them alone adds nothing: the growth is the
    # cell's, not what they hold.
    kernel.run("x = 1")
    assert kernel.last_cell()["children_peak"] < 0.1 * WORKER_WRITES

    listed = {c["pid"]: c for c in children_report(kernel)}
    for pid in pids:
        worker = listed[pid]
        assert worker["role"] == "multiprocessing pool worker"
        assert worker["cell"] == pool
        assert worker["private"] >= WORKER_WRITES
        assert worker["depth"] == 0 and worker["ppid"] == kernel.query("os.getpid()")
    kernel.run("pool.map(release, [0, 0], chunksize=1)")


def test_the_summary_names_the_biggest_children(kernel, pool):
    kernel.run("pids = pool.map(hold, [%d, %d], chunksize=1)" % (WORKER_WRITES, WORKER_WRITES))
    shown = kernel.run("%memreport")["data"][0]
    for form in ("text/plain", "text/html"):
        assert "biggest child processes" in shown[form]
        assert "multiprocessing pool worker" in shown[form]
    report = kernel.query("[c['pid'] for c in memtamer.report()['children']]")
    assert set(kernel.query("pids")) <= set(report)
    kernel.run("pool.map(release, [0, 0], chunksize=1)")


# A server that listens on a port; each connection says how many bytes to
# write and keep, and gets "ok" once they are written.
SERVER = """
import socket, sys
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen()
print(s.getsockname()[1], flush=True)
kept = []
while True:
    c, _ = s.accept()
    size = int(c.recv(64))
    kept.append(bytearray(b"\\x01") * size)
    c.sendall(b"ok")
    c.close()
"""


def test_a_server_of_an_earlier_cell_that_grows_later(kernel):
    kernel.run(f"server = subprocess.Popen([sys.executable, '-c', {SERVER!r}], "
               "stdout=subprocess.PIPE, text=True)\n"
               "port = int(server.stdout.readline())")
    started = kernel.query("memtamer.report()['cells'][-1]['cell']")
    port, pid = kernel.query("port"), kernel.query("server.pid")
    grows = 200 * MiB
    kernel.run("def ask(size):\n"
               "    with socket.create_connection(('127.0.0.1', port)) as c:\n"
               "        c.sendall(str(size).encode())\n"
               "        assert c.recv(2) == b'ok'\n"
               f"ask({grows})")
    cell = kernel.last_cell()
    assert grows * 0.9 <= cell["children_peak"] <= grows * 1.1, cell

    server = {c["pid"]: c for c in children_report(kernel)}[pid]
    assert server["role"] == f"server listening on port {port}"
    assert server["cell"] == started
    assert server["ports"] == [port]
    assert server["private"] >= grows
    text = kernel.run("%memreport children")["data"][0]["text/plain"]
    assert re.search(rf"^\s*{pid}\s+{started}\s.*server listening on port {port}", text, re.M), text
    kernel.run("server.kill(); server.wait()")


def test_a_child_that_ended_in_the_cell_counts_by_what_it_wrote(kernel):
    """An earlier cell's child that writes and ends within the cell: its
    growth while it lived is the cell's figure."""
    kernel.run("child = subprocess.Popen([sys.executable, '-c', "
               "'import sys; n = int(sys.stdin.readline()); b = bytearray(b\"\\\\x01\") * n; "
               "sys.stdin.readline()'], stdin=subprocess.PIPE, text=True)")
    grows = 200 * MiB
    kernel.run(f"child.stdin.write('{grows}\\n'); child.stdin.flush()\n"
               "pid = child.pid\n"
               "def written():\n"
               "    with open(f'/proc/{pid}/status') as f:\n"
               "        return int(re.search(r'VmRSS:\\s+(\\d+)', f.read()).group(1)) * 1024\n"
               "import re\n"
               f"while written() < {grows}: time.sleep(0.05)\n"
               # Four steps of the watcher (at least one look at the
               # children) before the child ends, however loaded the machine.
               "polls = memtamer._core.guard_status()['watcher_polls']\n"
               "while memtamer._core.guard_status()['watcher_polls'] < polls + 4: time.sleep(0.01)\n"
               "child.stdin.write('\\n'); child.stdin.close(); child.wait()")
    cell = kernel.last_cell()
    assert grows * 0.9 <= cell["children_peak"] <= grows * 1.1, cell


def test_a_worker_that_writes_into_pages_it_shares_with_the_kernel(kernel):
    """Copy-on-write: a forked worker that writes one byte in each page of
    an array it inherited makes those pages its own without its RSS moving
    (they were resident, shared): the figure still sees that growth."""
    size = 192 * MiB
    kernel.run(f"inherited = bytearray(b'\\x01') * {size}\n"
               "cow_in, cow_out = mp.get_context('fork').Pipe()\n"
               "def cow_worker(conn):\n"
               "    conn.recv()\n"
               "    for i in range(0, len(inherited), 4096):\n"
               "        inherited[i] = 2\n"
               "    conn.send(1)\n"
               "    conn.recv()\n"
               "cow = mp.get_context('fork').Process(target=cow_worker, args=(cow_out,))\n"
               "cow.start()")
    pid = kernel.query("cow.pid")
    kernel.run("x = 1")  # a cell it sits through idle
    rss = {}
    for moment in ("before", "after"):
        if moment == "after":
            kernel.run("cow_in.send(0); cow_in.recv()")
        with open(f"/proc/{pid}/status") as f:
            rss[moment] = int(re.search(r"VmRSS:\s+(\d+)", f.read())[1]) * 1024
    cell = kernel.last_cell()
    assert abs(rss["after"] - rss["before"]) < 0.1 * size, rss  # the case this test is for
    assert size * 0.9 <= cell["children_peak"] <= size * 1.1, cell
    kernel.run("cow_in.send(0); cow.join(); del inherited")


def test_no_children_says_so(tmp_path):
    k = Kernel(env={"MEMTAMER_RUNTIME_DIR": str(tmp_path)}, cwd=str(tmp_path))
    try:
        k.run("%load_ext memtamer")
        assert "(no child processes)" in k.run("%memreport children")["data"][0]["text/plain"]
        assert json.loads(k.run("%memreport children --json")["stdout"]) == []
    finally:
        k.shutdown()


def budget_room(k, room):
    """A budget room bytes above what the kernel holds now (its children's
    growth counts against it)."""
    rss = k.query("memtamer._core.process()['rss']")
    k.run(f"%memguard {rss + room}")


def test_guard_stops_the_cell_and_names_a_pool_worker_instead_of_killing_it(kernel, pool):
    kernel.run("before = sorted(p.pid for p in pool._pool)")
    budget_room(kernel, 150 * MiB)
    out = kernel.run("pool.apply(grow, (400 * 1024**2,))", allow_error=True)
    kernel.run("%memguard off")
    assert out["error"]["ename"] == "MemoryBudgetExceeded", out["error"]
    message = out["error"]["evalue"] + out["error"]["traceback"]
    assert "multiprocessing pool worker" in message
    assert "left that process running" in message
    assert "multiprocessing.Pool" in message
    workers = kernel.query("sorted(p.pid for p in pool._pool)")
    assert workers == kernel.query("before")
    assert all(alive(pid) for pid in workers)
    named = int(re.search(r"pid (\d+)", message).group(1))
    assert named in workers
    # The pool still works, with the same workers.
    kernel.run("assert pool.apply(os.getpid) in before\npool.map(release, [0, 0], chunksize=1)")


DASK_LIMIT = 1024 * MiB
DASK_GROWS = 192 * MiB


@pytest.fixture(scope="module")
def dask_workers(kernel):
    """A LocalCluster of two single-threaded worker processes, each under
    its nanny (in the kernel) with a memory_limit; {address: pid}."""
    pytest.importorskip("distributed")
    kernel.run("from dask.distributed import Client, LocalCluster\n"
               "cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, "
               f"memory_limit={DASK_LIMIT}, dashboard_address=None)\n"
               "client = Client(cluster)\n"
               "dask_pids = client.run(os.getpid)\n"
               "def dask_grow(size):\n"
               "    import builtins\n"
               "    builtins.memtamer_test_kept = bytearray(b'\\x01') * size\n"
               "    return os.getpid()\n")
    started = kernel.query("memtamer.report()['cells'][-1]['cell']")
    yield kernel.query("dask_pids"), started
    kernel.run("client.close(); cluster.close()")


def test_dask_workers_of_an_earlier_cell_are_counted_and_listed(kernel, dask_workers):
    pids, started = dask_workers
    kernel.run(f"client.run(dask_grow, {DASK_GROWS})")
    cell = kernel.last_cell()
    wrote = 2 * DASK_GROWS
    assert wrote * 0.9 <= cell["children_peak"] <= wrote * 1.1, cell

    listed = {c["pid"]: c for c in children_report(kernel)}
    for address, pid in pids.items():
        worker = listed[pid]
        assert worker["role"] == "dask worker", worker
        assert int(address.rsplit(":", 1)[1]) in worker["ports"]
        assert worker["memory_limit"] == DASK_LIMIT
        assert worker["supervisor"].startswith("dask nanny ")
        assert worker["cell"] == started
        assert worker["private"] >= DASK_GROWS
    text = kernel.run("%memreport children")["data"][0]["text/plain"]
    assert text.count("dask worker (memory_limit 1.0 GiB)") == 2, text
    kernel.run("client.run(dask_grow, 0)")


def test_guard_stops_a_dask_cell_and_names_the_worker_and_its_limit(kernel, dask_workers):
    pids, _ = dask_workers
    address, pid = sorted(pids.items())[0]
    budget_room(kernel, 96 * MiB)
    out = kernel.run(f"client.run(dask_grow, {2 * DASK_GROWS}, workers=[{address!r}])",
                     allow_error=True)
    kernel.run("%memguard off")
    assert out["error"]["ename"] == "MemoryBudgetExceeded", out["error"]
    message = out["error"]["evalue"] + out["error"]["traceback"]
    assert f"pid {pid}, a dask worker" in message
    assert "memory_limit is 1.0 GiB" in message
    assert "dask nanny" in message and "left that process running" in message
    # Not killed, nor restarted by its nanny: the same worker answers.
    assert alive(pid)
    assert kernel.query("client.run(os.getpid)") == pids
    kernel.run("client.run(dask_grow, 0)")


def write_rules(kernel, text):
    """memtamer.yaml in the kernel's working directory, where %memrules reload finds it."""
    path = os.path.join(kernel.query("os.getcwd()"), "memtamer.yaml")
    with open(path, "w") as f:
        f.write(text)
    return path


def test_a_rule_does_not_restart_what_has_no_restart_of_its_own(kernel, pool):
    workers = kernel.query("sorted(p.pid for p in pool._pool)")
    rules = write_rules(kernel, "version: 1\nrules:\n  - name: restart-pool\n"
                                "    when: {children_over: 1B}\n"
                                "    match: {name: pool}\n    do: restart\n")
    try:
        kernel.run("%memrules reload\n%memrules on")
        out = kernel.run("x = 1")
        assert ("memtamer rule restart-pool: did not restart pool: Pool has no restart(); "
                "memtamer kills no worker") in out["stdout"].splitlines(), out["stdout"]
    finally:
        os.unlink(rules)
        kernel.run("%memrules off")
    assert kernel.query("sorted(p.pid for p in pool._pool)") == workers
    assert all(alive(pid) for pid in workers)


def test_a_rule_restarts_the_dask_workers_it_names_once_they_grow(kernel, dask_workers):
    """children_over with do: restart calls the client's own restart(): its
    nannies start new workers, memtamer kills none.  (Last of the dask
    tests: the workers' pids change.)"""
    pids, _ = dask_workers
    rest = kernel.query("sum(c['private'] or 0 for c in memtamer._core.children())")
    over = rest + 256 * MiB
    rules = write_rules(kernel, "version: 1\nrules:\n  - name: restart-workers\n"
                                f"    when: {{children_over: {over}B}}\n"
                                "    match: {name: client}\n    do: restart\n")
    try:
        kernel.run("%memrules reload\n%memrules on")
        out = kernel.run(f"client.run(dask_grow, {DASK_GROWS // 2})")
        assert "memtamer rule" not in out["stdout"]
        out = kernel.run(f"client.run(dask_grow, {DASK_GROWS})")
        line = next(x for x in out["stdout"].splitlines() if x.startswith("memtamer rule"))
        found = re.fullmatch(r"memtamer rule restart-workers: restarted client "
                             r"\(child processes (\S+) MiB -> (\S+) MiB\)", line)
        assert found, line
        before, after = float(found[1]) * MiB, float(found[2]) * MiB
        assert before >= rest + 2 * DASK_GROWS * 0.9 and after <= before - 2 * DASK_GROWS * 0.9
        restarted = kernel.query("client.run(os.getpid)")
        # Two new workers (on new addresses), the old ones gone.
        assert len(restarted) == 2 and not set(restarted.values()) & set(pids.values())
        assert not any(alive(pid) for pid in pids.values())
        assert "memtamer rule" not in kernel.run("x = 1")["stdout"]
    finally:
        os.unlink(rules)
        kernel.run("%memrules off")


def test_telemetry_samples_name_the_biggest_child():
    """A subscriber sees how many descendants live and the one that owns
    most, by its private memory."""
    import glob
    import shutil
    import tempfile

    import zmq

    runtime = tempfile.mkdtemp(prefix="mt", dir="/tmp")  # short: an ipc socket path
    k = Kernel(env={"JUPYTER_RUNTIME_DIR": runtime, "MEMTAMER_RUNTIME_DIR": runtime}, cwd=runtime)
    sub = zmq.Context.instance().socket(zmq.SUB)
    try:
        k.run("%load_ext memtamer\nimport subprocess, sys")
        writes = 64 * MiB
        k.run("child = subprocess.Popen([sys.executable, '-c', 'import sys; "
              f"b = bytearray(b\"\\\\x01\") * {writes}; print(1, flush=True); sys.stdin.read()'], "
              "stdin=subprocess.PIPE, stdout=subprocess.PIPE)\n"
              "child.stdout.readline()")
        pid = k.query("child.pid")
        (record,) = glob.glob(os.path.join(runtime, "memtamer-*.json"))
        with open(record) as f:
            endpoint = json.load(f)["endpoint"]
        sub.setsockopt(zmq.LINGER, 0)
        sub.connect(endpoint)
        sub.subscribe(b"memtamer.sample")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if sub.poll(1000):
                sample = json.loads(sub.recv_multipart()[1])
                if sample["biggest_child_pid"] == pid:
                    break
        else:
            raise AssertionError("no sample named the child within 30 s")
        assert sample["children"] == 1
        # The child's interpreter adds some 10-20 MiB of its own.
        assert writes <= sample["biggest_child_private"] <= writes + 32 * MiB
        # memtamer watch shows it under its kernel on request.
        watch = subprocess.run([os.path.join(os.path.dirname(sys.executable), "memtamer"),
                                "watch", "--once", "--children", "--dir", runtime],
                               capture_output=True, text=True, timeout=60,
                               env={**os.environ, "COLUMNS": "120", "JUPYTER_RUNTIME_DIR": runtime})
        under = re.search(r"^    └ 1 child process owns (\d+) MiB; the most: pid (\d+) (\d+) MiB$",
                          watch.stdout, re.M)
        assert under, watch.stdout + watch.stderr
        assert int(under[2]) == pid
        assert writes // MiB <= int(under[3]) <= int(under[1]) <= writes // MiB + 32
        k.run("child.stdin.close(); child.wait()")
    finally:
        sub.close(linger=0)
        k.shutdown()
        shutil.rmtree(runtime, ignore_errors=True)
