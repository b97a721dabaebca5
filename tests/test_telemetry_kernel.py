"""Telemetry in real kernels: what subscribers receive, discovery files, fork
and reload safety, `memtamer watch` in a terminal, `memtamer export`."""

import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid

import pytest
import zmq

from kernel import Kernel
from memtamer.telemetry import Follower, discover, start_ticks

MiB = 1024**2
GiB = 1024**3
ALLOCATION = 200 * MiB
# A 200 MiB array adds 200 MiB plus whatever the cell's own objects take,
# less a little when it reuses pages freed earlier.
SLACK = 48 * MiB
REUSED = 2 * MiB
BIN = os.path.dirname(sys.executable)


def rss_of(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+) kB", f.read()).group(1)) * 1024


def parse_size(text):
    number, unit = re.fullmatch(r"([\d.]+) ?(B|KiB|MiB|GiB|TiB)", text).groups()
    return float(number) * 1024 ** ["B", "KiB", "MiB", "GiB", "TiB"].index(unit)


class Subscriber:
    """A plain SUB socket on one kernel, as a third-party script would use it."""

    def __init__(self, endpoint):
        self.socket = zmq.Context.instance().socket(zmq.SUB)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.connect(endpoint)
        self.socket.subscribe(b"memtamer.")

    def next(self, kind=None, timeout=5.0):
        """The next message (of kind), skipping others; fails after timeout."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            if self.socket.poll(int(left * 1000)):
                topic, body = self.socket.recv_multipart()
                message = json.loads(body)
                assert topic.decode() == f"memtamer.{message['kind']}"
                if kind is None or message["kind"] == kind:
                    return message
        raise AssertionError(f"no {kind or 'message'} within {timeout} s")

    def close(self):
        self.socket.close(linger=0)


def start_kernel(runtime, env=None):
    k = Kernel(env={"JUPYTER_RUNTIME_DIR": runtime, **(env or {})},
               connection_file=os.path.join(runtime, f"kernel-{uuid.uuid4()}.json"))
    k.run("%load_ext memtamer")
    k.pid = k.query("__import__('os').getpid()")
    k.kernel_id = os.path.basename(k.km.connection_file)[len("kernel-"):-len(".json")]
    k.discovery = os.path.join(runtime, f"memtamer-{k.kernel_id}.json")
    return k


def discovery_record(k):
    with open(k.discovery) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def runtime():
    # Short: ipc socket paths must fit a Unix socket address.
    path = tempfile.mkdtemp(prefix="mt", dir="/tmp")
    # memtamer's fallback directory too: other kernels on the machine (a
    # terminal IPython's) advertise there, and watchers look there.
    fallback = tempfile.mkdtemp(prefix="mtx", dir="/tmp")
    own = {"JUPYTER_RUNTIME_DIR": path, "XDG_RUNTIME_DIR": fallback}
    saved = {name: os.environ.get(name) for name in own}
    os.environ.update(own)
    yield path
    for name, value in saved.items():
        if value is None:
            del os.environ[name]
        else:
            os.environ[name] = value
    shutil.rmtree(path, ignore_errors=True)
    shutil.rmtree(fallback, ignore_errors=True)


@pytest.fixture(scope="module")
def tk(runtime):
    k = start_kernel(runtime, {"JPY_SESSION_NAME": "/home/u/analysis.ipynb"})
    k.run("import numpy as np, memtamer")
    yield k
    k.shutdown()


def test_discovery_file_and_modes(tk, runtime):
    record = discovery_record(tk)
    assert record["pid"] == tk.pid
    assert record["kernel"] == tk.kernel_id
    assert record["notebook"] == "/home/u/analysis.ipynb"
    assert record["cwd"] == tk.query("__import__('os').getcwd()")
    assert record["pid_namespace"] == os.readlink("/proc/self/ns/pid")
    assert record["endpoint"].startswith("ipc://" + runtime)
    socket_path = record["endpoint"][len("ipc://"):]
    assert stat.S_ISSOCK(os.stat(socket_path).st_mode)
    assert stat.S_IMODE(os.stat(socket_path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(socket_path)).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(tk.discovery).st_mode) == 0o600


def test_cell_record_with_known_peak(tk):
    sub = Subscriber(discovery_record(tk)["endpoint"])
    try:
        sub.next("snapshot")
        tk.run("a = np.ones(200 * 2**20 // 8)\ndel a")
        message = sub.next("cell")
    finally:
        sub.close()
    record = message["record"]
    assert ALLOCATION - REUSED <= record["peak_increment"] <= ALLOCATION + SLACK
    assert message["kernel"] == tk.kernel_id and message["pid"] == tk.pid
    # The C record report() renders (its peak composition without the
    # suggestions and defining cells the Python layer adds).
    reported = tk.query("__import__('memtamer')._core.cells()[-1]")
    assert record.keys() == tk.last_cell().keys() == reported.keys()
    assert record["peak_composition"]["groups"][0]["bytes"] == pytest.approx(ALLOCATION, rel=1e-3)
    for key in ("seconds", "cpu_seconds"):
        assert record[key] == pytest.approx(reported.pop(key), abs=1e-5)
    assert {k: v for k, v in record.items() if k not in ("seconds", "cpu_seconds")} == reported


def test_first_line_with_quotes_backslashes_tabs_and_unicode(tk):
    code = 's = "q\\"uote \\\\ back"\t# é ✓ tab'
    sub = Subscriber(discovery_record(tk)["endpoint"])
    try:
        sub.next("snapshot")
        tk.run(code)
        record = sub.next("cell")["record"]
    finally:
        sub.close()
    assert record["first_line"] == code == tk.last_cell()["first_line"]


def test_samples_while_a_long_cell_runs(tk):
    sub = Subscriber(discovery_record(tk)["endpoint"])
    ran = []
    cell = threading.Thread(target=lambda: ran.append(tk.run(
        "import time\nb = np.ones(200 * 2**20 // 8)\ntime.sleep(1.6)\ndel b")))
    try:
        sub.next("snapshot")
        cell.start()
        running = []
        while not running or running[-1]["running"]["seconds"] < 1.2:
            message = sub.next("sample", timeout=3)
            if message["running"]:
                running.append(message)
    finally:
        cell.join()
        sub.close()
    # Every 250 ms while the cell runs (not the idle pace of seconds).
    gaps = [b["time"] - a["time"] for a, b in zip(running, running[1:])]
    assert len(running) >= 4 and max(gaps) < 0.6
    last = running[-1]["running"]
    # The number Jupyter shows next to the cell, not the next one.
    assert last["cell"] == ran[0]["execution_count"]
    assert ALLOCATION - REUSED <= last["peak_increment"] <= ALLOCATION + SLACK
    assert running[-1]["rss"] >= last["rss_before"] + ALLOCATION - REUSED
    # The kernel's swap and major faults, live, as its /proc files say them.
    pid = tk.query("__import__('os').getpid()")
    with open(f"/proc/{pid}/stat") as f:
        faults_now = int(f.read().rsplit(")", 1)[1].split()[9])
    assert 0 <= running[-1]["major_faults"] <= faults_now
    with open(f"/proc/{pid}/status") as f:
        swap_now = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSwap:"))
    assert running[-1]["swap"] >= 0 and (swap_now > 0 or running[-1]["swap"] == 0)


def test_samples_count_children_by_what_they_own(tk):
    """A forked child of a kernel holding 512 MiB shares those pages: the
    samples count it for the 64 MiB it writes, not for its RSS."""
    tk.run("import multiprocessing as mp, time\nheld = np.ones(512 * 2**20 // 8)")
    sub = Subscriber(discovery_record(tk)["endpoint"])
    cell = threading.Thread(target=lambda: tk.run(
        "def child():\n    b = bytearray(b'\\x01') * (64 * 2**20)\n    time.sleep(1.5)\n"
        "p = mp.get_context('fork').Process(target=child)\np.start(); p.join()"))
    seen = []
    try:
        sub.next("snapshot")
        cell.start()
        while len(seen) < 4:
            message = sub.next("sample", timeout=3)
            if message["running"] and message["children_private"]:
                seen.append(message["children_private"])
    finally:
        cell.join()
        sub.close()
        tk.run("del held")
    assert 60 * MiB <= max(seen) <= 64 * MiB + 32 * MiB


def test_late_subscriber_gets_a_snapshot_at_once(tk):
    tk.run("c = np.ones(200 * 2**20 // 8)\ndel c")
    sub = Subscriber(discovery_record(tk)["endpoint"])
    try:
        started = time.monotonic()
        snapshot = sub.next("snapshot", timeout=2)
        waited = time.monotonic() - started
    finally:
        sub.close()
    # The idle pace is seconds: only the subscription can explain the haste.
    assert waited < 1.0
    last = tk.query("__import__('memtamer')._core.cells()[-1]")
    for key in ("seconds", "cpu_seconds"):
        assert snapshot["last_cell"][key] == pytest.approx(last.pop(key), abs=1e-5)
    assert {k: v for k, v in snapshot["last_cell"].items()
            if k not in ("seconds", "cpu_seconds")} == last
    assert snapshot["rss"] == pytest.approx(rss_of(tk.pid), rel=0.1)
    assert snapshot["cells"] >= 3 and snapshot["running"] is None


def test_gaps_in_sequence_numbers_are_counted(tk, runtime):
    follower = Follower([runtime])
    try:
        follower.rescan()
        while follower.receive(2) is None or follower.kernels[tk.kernel_id]["seq"] is None:
            pass
        seqs = [follower.kernels[tk.kernel_id]["seq"]]
        # More events than the kernel queues or the subscriber buffers, none
        # read meanwhile: some are dropped, and the cell does not wait.
        started = time.monotonic()
        tk.run("for i in range(3000):\n    memtamer._core.telemetry_event('test', {'i': i})")
        assert time.monotonic() - started < 5
        while (message := follower.receive(1)) is not None:
            if message["kernel"] == tk.kernel_id:
                seqs.append(message["seq"])
        lost = follower.kernels[tk.kernel_id]["lost"]
    finally:
        follower.close()
    missing = len(set(range(seqs[0], seqs[-1] + 1)) - set(seqs))
    assert seqs == sorted(seqs)
    assert missing > 0 and lost == missing


def test_two_kernels_in_one_watcher_and_stale_files_ignored_then_removed(tk, runtime):
    # A kernel that died without cleaning up, and a pid now used by another process.
    dead = subprocess.Popen(["true"])
    dead.wait()
    for name, pid in (("dead", dead.pid), ("reused", os.getpid())):
        with open(os.path.join(runtime, f"memtamer-{name}.json"), "w") as f:
            json.dump({"endpoint": "ipc:///nonexistent", "pid": pid, "kernel": name,
                       "start_ticks": 1}, f)
    stale = [os.path.join(runtime, f"memtamer-{name}.json") for name in ("dead", "reused")]
    left = socket.socket(socket.AF_UNIX)  # a dead kernel's socket: nothing listens
    left.bind(os.path.join(runtime, "memtamer", f"{dead.pid}.sock"))
    left.close()
    stale.append(os.path.join(runtime, "memtamer", f"{dead.pid}.sock"))
    follower = Follower([runtime])
    other = None
    try:
        follower.receive(0.5)
        assert set(follower.kernels) == {tk.kernel_id}
        # The watcher removes the records of the dead it sees; the socket no
        # record names is the next kernel's to remove.
        assert [os.path.exists(path) for path in stale] == [False, False, True]
        # A kernel that starts under the running watcher appears in it, and
        # removes the files of the dead.
        other = start_kernel(runtime)
        other.run("held = bytearray(300 * 2**20)")
        assert {r["kernel"] for r in discover([runtime]).values()} == {tk.kernel_id, other.kernel_id}
        assert not any(os.path.exists(path) for path in stale)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not all(
                "rss" in s for s in follower.kernels.values()) or len(follower.kernels) < 2:
            follower.receive(0.5)
        assert set(follower.kernels) == {tk.kernel_id, other.kernel_id}
        assert follower.kernels[other.kernel_id]["rss"] == pytest.approx(rss_of(other.pid), rel=0.1)
        assert follower.kernels[other.kernel_id]["rss"] > 300 * MiB
        # A kernel that leaves cleanly takes its row with it.
        other.km.shutdown_kernel(now=False)
        deadline = time.monotonic() + 10
        while other.kernel_id in follower.kernels and time.monotonic() < deadline:
            follower.receive(0.5)
        assert set(follower.kernels) == {tk.kernel_id}
        assert not os.path.exists(other.discovery)
    finally:
        follower.close()
        if other is not None:
            other.kc.stop_channels()
            if other.is_alive():
                other.shutdown()
        for path in stale:
            if os.path.exists(path):
                os.unlink(path)


def test_forked_child_leaves_the_parents_socket_alone(tk):
    endpoint = discovery_record(tk)["endpoint"]
    sub = Subscriber(endpoint)
    try:
        sub.next("snapshot")
        out = tk.run(
            "import multiprocessing as mp\n"
            "def child(q):\n"
            "    q.put((memtamer._core.telemetry_status(),\n"
            "           memtamer._core.telemetry_event('from_child', {})))\n"
            "    memtamer._active.publisher.stop()\n"
            "    memtamer._core.telemetry_stop()\n"
            "q = mp.get_context('fork').Queue()\n"
            "p = mp.get_context('fork').Process(target=child, args=(q,))\n"
            "p.start(); print(q.get(timeout=30)); p.join()\n"
            "print(p.exitcode)")
        assert out["stdout"].split("\n")[:2] == ["(None, False)", "0"]
        # The parent still publishes on the same socket, file and endpoint.
        first = sub.next("cell")
        tk.run("d = np.ones(200 * 2**20 // 8)\ndel d")
        record = sub.next("cell")["record"]
        assert first["record"]["status"] == "ok"
        assert ALLOCATION - REUSED <= record["peak_increment"] <= ALLOCATION + SLACK
        assert os.path.exists(tk.discovery) and discovery_record(tk)["endpoint"] == endpoint
        assert os.path.exists(endpoint[len("ipc://"):])
    finally:
        sub.close()


def test_reload_twenty_times_leaks_nothing_and_unload_cleans_up(runtime):
    k = start_kernel(runtime)
    try:
        def counts():
            """(all fds, eventfds and sockets, threads)"""
            fd_dir = f"/proc/{k.pid}/fd"
            targets = []
            for fd in os.listdir(fd_dir):
                try:
                    targets.append(os.readlink(os.path.join(fd_dir, fd)))
                except FileNotFoundError:
                    pass  # the listing's own fd
            ours = sum(t.startswith(("socket:", "anon_inode:[eventfd]")) for t in targets)
            return len(targets), ours, len(os.listdir(f"/proc/{k.pid}/task"))

        k.run("%reload_ext memtamer")
        before = counts()
        for _ in range(20):
            k.run("%reload_ext memtamer")
        after = counts()
        # Other fds of the kernel come and go by one or two; a leak grows by 20.
        assert after[1:] == before[1:] and after[0] <= before[0] + 2
        endpoint = discovery_record(k)["endpoint"]
        sub = Subscriber(endpoint)
        try:
            assert sub.next("snapshot")["pid"] == k.pid
        finally:
            sub.close()
        k.run("%unload_ext memtamer")
        assert not os.path.exists(k.discovery)
        assert not os.path.exists(endpoint[len("ipc://"):])
        # The sampler thread and the socket's fds are gone too.
        _, sockets, threads = counts()
        assert threads < before[2] and sockets < before[1]
    finally:
        k.shutdown()


def test_tcp_when_configured_and_names_off(runtime):
    k = start_kernel(runtime, {"MEMTAMER_TELEMETRY_ENDPOINT": "tcp",
                               "MEMTAMER_TELEMETRY_NAMES": "0"})
    try:
        endpoint = discovery_record(k)["endpoint"]
        assert re.fullmatch(r"tcp://127\.0\.0\.1:\d+", endpoint)
        sub = Subscriber(endpoint)
        try:
            assert sub.next("snapshot")["names"] is False
            k.run("import numpy")
            sub.next("cell")
            k.run("secret_name = list(range(1000))\n%shrink pack secret_name")
            event = sub.next("event")
            record = sub.next("cell")
        finally:
            sub.close()
        assert event["event"] == "shrink" and event["data"]["action"] == "pack"
        assert event["data"]["bytes_before"] > 1000 * 8
        assert record["record"]["first_line"] is None and record["record"]["peak_rss"] > 0
        for message in (event, record):
            assert "secret_name" not in json.dumps(message)
    finally:
        k.shutdown()


def test_watch_in_a_terminal_shows_the_kernels_rss(tk, runtime):
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed (scripts/setup.sh installs it)")
    tk.run("held = bytearray(300 * 2**20)")
    session = f"mtwatch{os.getpid()}"
    command = f"JUPYTER_RUNTIME_DIR={runtime} {BIN}/memtamer watch"
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "200", "-y", "30", command],
                   check=True)
    try:
        deadline = time.monotonic() + 10
        found = None
        # The row appears when the file is found, its RSS with the first message.
        while found is None and time.monotonic() < deadline:
            time.sleep(0.5)
            screen = subprocess.run(["tmux", "capture-pane", "-p", "-t", session],
                                    capture_output=True, text=True, check=True).stdout
            found = re.search(rf"\b{tk.pid}\s+analysis\.ipynb\s+([\d.]+ ?[KMGT]?i?B)\s", screen)
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], check=False)
    assert found is not None, screen
    rss_text = found.group(1)
    assert parse_size(rss_text) == pytest.approx(rss_of(tk.pid), rel=0.05)
    assert parse_size(rss_text) > 300 * MiB


def test_watch_follows_the_terminal_when_it_is_resized_and_never_wraps(tk, runtime):
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed (scripts/setup.sh installs it)")
    # A tmux server of its own whose window keeps the size it is given (a
    # shared server may size windows after other sessions' clients).
    tmux = ["tmux", "-L", f"mtsize{os.getpid()}"]
    session = "watch"
    command = f"JUPYTER_RUNTIME_DIR={runtime} {BIN}/memtamer watch"
    subprocess.run([*tmux, "new-session", "-d", "-s", session, "-x", "200", "-y", "30", command,
                    ";", "set-option", "-g", "window-size", "manual"], check=True)

    def screen_when(done):
        deadline = time.monotonic() + 10
        while True:
            # -J joins wrapped lines: a row that wrapped comes back longer than the pane.
            text = subprocess.run([*tmux, "capture-pane", "-p", "-J", "-t", session],
                                  capture_output=True, text=True, check=True).stdout
            if done(text) or time.monotonic() > deadline:
                return text
            time.sleep(0.2)

    try:
        wide = screen_when(lambda text: "KERNEL" in text and "analysis.ipynb" in text)
        subprocess.run([*tmux, "resize-window", "-t", session, "-x", "60"], check=True)
        narrow = screen_when(lambda text: "KERNEL" not in text)
    finally:
        subprocess.run([*tmux, "kill-server"], check=False)
    assert "KERNEL" in wide and "LOST" in wide, wide
    assert "KERNEL" not in narrow and re.search(rf"\b{tk.pid}\s+analysis\.ipynb\s", narrow), narrow
    assert max(len(line) for line in narrow.splitlines()) <= 60, narrow


def test_watch_json_streams_messages_and_a_killed_watcher_costs_nothing(tk, runtime):
    watcher = subprocess.Popen([f"{BIN}/memtamer", "watch", "--json", "--dir", runtime],
                               stdout=subprocess.PIPE, text=True)
    try:
        message = json.loads(watcher.stdout.readline())
        assert tk.query("memtamer._core.telemetry_status()['subscriptions']") == 1
    finally:
        watcher.kill()  # SIGKILL: no goodbye
        watcher.wait()
    assert message["kernel"] == tk.kernel_id and message["kind"] in ("sample", "snapshot")
    # The kernel sees the subscriber gone and carries on.
    deadline = time.monotonic() + 5
    while tk.query("memtamer._core.telemetry_status()['subscriptions']") and \
            time.monotonic() < deadline:
        time.sleep(0.1)
    assert tk.query("memtamer._core.telemetry_status()['subscriptions']") == 0
    started = time.monotonic()
    tk.run("x = 1")
    assert time.monotonic() - started < 2


def test_export_prometheus_metrics(tk, runtime):
    from prometheus_client.parser import text_string_to_metric_families

    exporter = subprocess.Popen([sys.executable, "-m", "memtamer", "export", "--port", "0",
                                 "--dir", runtime], stdout=subprocess.PIPE, text=True)
    try:
        url = re.search(r"(http://\S+/metrics)", exporter.stdout.readline()).group(1)
        time.sleep(1.5)  # connected, snapshot in
        peaks = [50 * MiB, 120 * MiB]
        for size in peaks:
            tk.run(f"e = np.ones({size} // 8)\ndel e")
        time.sleep(0.5)
        text = urllib.request.urlopen(url, timeout=5).read().decode()
    finally:
        exporter.kill()
        exporter.wait()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert all(name.startswith("memtamer_") for name in families)
    # The notebook label: the file name of an absolute JPY_SESSION_NAME.
    ours = {"kernel": tk.kernel_id, "notebook": "analysis.ipynb"}

    def value(family, sample_name=None, **extra):
        return next(s.value for s in families[family].samples
                    if s.name == (sample_name or family) and s.labels == {**ours, **extra})

    assert value("memtamer_rss_bytes") == pytest.approx(rss_of(tk.pid), rel=0.1)
    # Counters: the parser names the family without the _total of its samples.
    for counter in ("memtamer_cells", "memtamer_budget_trips", "memtamer_telemetry_messages_lost"):
        assert families[counter].type == "counter"
        assert families[counter].samples[0].name == counter + "_total"
    assert not any(name.startswith("process_") for name in families)
    assert value("memtamer_cells", "memtamer_cells_total") == tk.query(
        "len(__import__('memtamer').report()['cells'])")
    histogram = families["memtamer_cell_peak_increment_bytes"]
    assert histogram.type == "histogram"
    assert value(histogram.name, histogram.name + "_count") == 2
    assert value(histogram.name, histogram.name + "_bucket", le="67108864.0") == 1
    assert value(histogram.name, histogram.name + "_bucket", le="268435456.0") == 2
    assert (sum(peaks) - 2 * REUSED <= value(histogram.name, histogram.name + "_sum")
            <= sum(peaks) + 2 * SLACK)


def test_clean_exit_removes_the_discovery_file(runtime):
    k = start_kernel(runtime)
    record = discovery_record(k)
    k.kc.stop_channels()
    k.km.shutdown_kernel(now=False)
    assert not os.path.exists(k.discovery)
    assert not os.path.exists(record["endpoint"][len("ipc://"):])
    assert start_ticks(record["pid"]) is None


def test_budget_trip_is_an_event_and_counted(tk):
    sub = Subscriber(discovery_record(tk)["endpoint"])
    try:
        before = sub.next("snapshot")["trips"]
        rss = rss_of(tk.pid)
        tk.run(f"%memguard {rss + 100 * MiB}")
        out = tk.run("f = np.ones(300 * 2**20 // 8)", allow_error=True)
        tk.run("%memguard default")
        event = sub.next("event")
        record = sub.next("cell")
    finally:
        sub.close()
    assert out["error"]["ename"] == "MemoryBudgetExceeded"
    assert event["event"] == "budget_trip"
    assert event["data"]["layer"] == "numpy" and event["data"]["requested"] == 300 * MiB
    assert event["data"]["budget"] == rss + 100 * MiB
    assert record["trips"] == before + 1 and record["record"]["status"] == "error"


def test_postmortem_of_a_killed_kernel_reaches_a_late_watcher(runtime):
    dead = start_kernel(runtime)
    # Near its budget: memory is then the likely cause of its death.
    dead.run(f"%memguard {int(rss_of(dead.pid) / 0.95)}")
    dead.shutdown()  # SIGKILL, as the OOM killer would, and reaped
    k = start_kernel(runtime)
    try:
        # The finding was published while the kernel loaded, before anyone
        # could listen: the snapshot repeats it.
        sub = Subscriber(discovery_record(k)["endpoint"])
        try:
            snapshot = sub.next("snapshot")
        finally:
            sub.close()
        reports = [e["data"]["text"] for e in snapshot["recent_events"]
                   if e["event"] == "postmortem"]
        assert any(f"(pid {dead.pid}) died" in report for report in reports), reports
    finally:
        k.shutdown()


def test_restarted_kernel_is_followed_under_its_new_pid(runtime):
    k = start_kernel(runtime)
    follower = Follower([runtime])
    try:
        while follower.receive(1) is None or "rss" not in follower.kernels.get(k.kernel_id, {}):
            pass
        old_pid = k.pid
        # Jupyter's restart: same connection file and kernel id, a new process.
        k.km.restart_kernel(now=False)
        k.kc.wait_for_ready(timeout=60)
        k.run("%load_ext memtamer")
        k.pid = k.query("__import__('os').getpid()")
        assert k.pid != old_pid and discovery_record(k)["pid"] == k.pid
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (
                follower.kernels.get(k.kernel_id, {}).get("pid") != k.pid
                or "rss" not in follower.kernels[k.kernel_id]):
            follower.receive(0.5)
        state = follower.kernels[k.kernel_id]
        assert state["pid"] == k.pid and state["lost"] == 0
        assert state["rss"] == pytest.approx(rss_of(k.pid), rel=0.1)
    finally:
        follower.close()
        k.shutdown()


def test_messages_hold_exactly_the_fields_the_protocol_states(tk):
    from memtamer.telemetry import PROTOCOL, parse_message

    sub = Subscriber(discovery_record(tk)["endpoint"])
    frames = {}
    cell = threading.Thread(target=lambda: tk.run(
        "import time\ng = np.ones(50 * 2**20 // 8)\ntime.sleep(1.0)\ndel g\n"
        "memtamer._core.telemetry_event('test', {'n': 1})"))
    try:
        cell.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (
                {"snapshot", "sample", "cell", "event"} <= frames.keys()
                and "running" in frames):
            if sub.socket.poll(500):
                received = sub.socket.recv_multipart()
                message = json.loads(received[1])
                frames.setdefault(message["kind"], received)
                if message["kind"] == "sample" and message["running"]:
                    frames.setdefault("running", received)
    finally:
        cell.join()
        sub.close()
    for kind, received in frames.items():
        message = parse_message(received)  # the subscribers' own check
        fields = PROTOCOL["kinds"][message["kind"]]
        assert message.keys() == fields.keys(), kind
    running = json.loads(frames["running"][1])["running"]
    assert running.keys() == PROTOCOL["objects"]["running"].keys()
    record = json.loads(frames["cell"][1])["record"]
    assert record.keys() == PROTOCOL["objects"]["record"].keys()
    assert discovery_record(tk).keys() == __import__("memtamer").telemetry.DISCOVERY_FIELDS.keys()


def test_names_off_sends_no_name_value_or_code(runtime):
    k = start_kernel(runtime, {"MEMTAMER_TELEMETRY_NAMES": "0"})
    try:
        sub = Subscriber(discovery_record(k)["endpoint"])
        seen = []
        try:
            seen.append(sub.next("snapshot"))
            k.run("import numpy as np")
            seen.append(sub.next("cell"))
            # A refusal naming another holder, one quoting the values, a
            # cell whose first line and peak carry a secret.
            k.run("secret_arr = np.arange(7654321, 7654323, dtype=np.int32)\n"
                  "alias_name_z = big_secret = np.ones(2**20)")
            seen.append(sub.next("cell"))
            out = k.run("%shrink downcast secret_arr")
            assert "7654321..7654322" in json.dumps(out["data"])  # said in the kernel, not sent
            seen += [sub.next("event"), sub.next("cell")]
            out = k.run("%shrink spill big_secret")
            assert "also held by alias_name_z" in json.dumps(out["data"])
            seen += [sub.next("event"), sub.next("cell")]
            k.run('token = "tok-ABCDEF0123"; blob = np.ones(200 * 2**20 // 8); del blob')
            seen.append(sub.next("cell"))
        finally:
            sub.close()
    finally:
        k.shutdown()
    assert [m["event"] for m in seen if m["kind"] == "event"] == ["shrink", "shrink"]
    assert all(m["data"]["status"] == "refused" for m in seen if m["kind"] == "event")
    assert seen[-1]["record"]["peak_composition"]["groups"]  # the peak is attributed...
    wire = json.dumps(seen)
    for secret in ("secret_arr", "alias_name_z", "big_secret", "7654321", "tok-ABCDEF", "blob"):
        assert secret not in wire  # ...without its line of code


def test_watch_escapes_a_notebook_name_that_would_drive_the_terminal(runtime):
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed (scripts/setup.sh installs it)")
    k = start_kernel(runtime, {"JPY_SESSION_NAME": "\x1b]2;owned\x07\x1b[2Jnote.ipynb"})
    session = f"mtesc{os.getpid()}"
    command = f"JUPYTER_RUNTIME_DIR={runtime} {BIN}/memtamer watch"
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "200", "-y", "30", command],
                   check=True)
    try:
        deadline = time.monotonic() + 10
        screen = ""
        while k.kernel_id[:8] not in screen and time.monotonic() < deadline:
            time.sleep(0.5)
            screen = subprocess.run(["tmux", "capture-pane", "-p", "-t", session],
                                    capture_output=True, text=True, check=True).stdout
        title = subprocess.run(["tmux", "display-message", "-p", "-t", session, "#{pane_title}"],
                               capture_output=True, text=True, check=True).stdout
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], check=False)
        k.shutdown()
    assert "owned" not in title
    assert re.search(rf"\b{k.pid}\s+" +
                     re.escape("\\x1b]2;owned\\x07\\x1b[2Jnote.ipynb"), screen), screen


def test_tcp_with_names_on_is_refused_with_what_to_do(runtime):
    k = Kernel(env={"JUPYTER_RUNTIME_DIR": runtime, "MEMTAMER_TELEMETRY_ENDPOINT": "tcp"},
               connection_file=os.path.join(runtime, f"kernel-{uuid.uuid4()}.json"))
    try:
        out = k.run("%load_ext memtamer")
        status = k.query("__import__('memtamer')._core.telemetry_status()")
        kernel_id = os.path.basename(k.km.connection_file)[len("kernel-"):-len(".json")]
    finally:
        k.shutdown()
    assert status is None
    assert not os.path.exists(os.path.join(runtime, f"memtamer-{kernel_id}.json"))
    said = [line for line in out["stderr"].splitlines() if line.startswith("memtamer")]
    assert len(said) == 1 and "any local user can subscribe" in said[0]
    assert "MEMTAMER_TELEMETRY_NAMES=0" in said[0]


# ---------------------------------------------------------------------------
# Kernels started anywhere: found in the runtime directory, named, and gone
# without a trace when killed.

def watch_once(runtime, columns=120):
    done = subprocess.run([f"{BIN}/memtamer", "watch", "--once"], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "JUPYTER_RUNTIME_DIR": runtime,
                                            "COLUMNS": str(columns)})
    assert done.returncode == 0, done.stderr
    assert max(len(line) for line in done.stdout.splitlines()) <= columns
    return done.stdout


def scrape_until(runtime, done, timeout=30):
    """The /metrics families of a fresh exporter on runtime, once done(families)."""
    from prometheus_client.parser import text_string_to_metric_families

    exporter = subprocess.Popen([sys.executable, "-m", "memtamer", "export", "--port", "0"],
                                stdout=subprocess.PIPE, text=True,
                                env={**os.environ, "JUPYTER_RUNTIME_DIR": runtime})
    try:
        url = re.search(r"(http://\S+/metrics)", exporter.stdout.readline()).group(1)
        deadline = time.monotonic() + timeout
        while True:
            text = urllib.request.urlopen(url, timeout=5).read().decode()
            families = {f.name: f for f in text_string_to_metric_families(text)}
            if done(families) or time.monotonic() > deadline:
                return families
            time.sleep(0.1)
    finally:
        exporter.kill()
        exporter.wait()


def labels_of(families, family):
    return [s.labels for s in families[family].samples]


def test_a_kernel_manager_kernel_with_a_temp_connection_file_is_seen_by_watch_and_export(runtime):
    k = Kernel(env={"JUPYTER_RUNTIME_DIR": runtime})  # the connection file: a temp file
    try:
        k.run("%load_ext memtamer")
        pid = k.query("__import__('os').getpid()")
        connection = os.path.basename(k.km.connection_file)
        assert not connection.startswith("kernel-")
        temp_name = os.path.splitext(connection)[0]
        records = [r for r in discover([runtime]).values() if r["pid"] == pid]
        assert len(records) == 1
        kernel = records[0]["kernel"]
        assert str(uuid.UUID(kernel)) == kernel  # an id of its own, not the temp file's name
        assert not os.path.exists(os.path.join(os.path.dirname(k.km.connection_file),
                                               f"memtamer-{temp_name}.json"))
        screen = watch_once(runtime)
        row = next(line for line in screen.splitlines() if re.search(rf"\b{pid}\b", line))
        # No notebook: the working directory and what launched it (this test run).
        cwd = k.query("__import__('os').getcwd()")
        assert f"{os.path.basename(cwd)}/ (" in row
        assert temp_name not in screen
        families = scrape_until(runtime, lambda f: any(
            s.labels.get("kernel") == kernel for s in f["memtamer_rss_bytes"].samples))
        rss = next(s for s in families["memtamer_rss_bytes"].samples
                   if s.labels["kernel"] == kernel)
        assert rss.labels["notebook"].startswith(f"{os.path.basename(cwd)}/ (")
        assert rss.value == pytest.approx(rss_of(pid), rel=0.1)
        assert {"kernel", "notebook"} <= set(labels_of(families, "memtamer_kernel_stale")[0])
    finally:
        k.shutdown()


NBCLIENT_LAUNCHER = """
import sys, nbformat
from nbclient import NotebookClient
nb = nbformat.read(sys.argv[1], as_version=4)
NotebookClient(nb, kernel_name="python3", timeout=600).execute()
"""


# The launchers CI jobs use; the notebook is in their argv, first of the notebooks.
LAUNCHERS = {
    "nbclient": [sys.executable, "-c", NBCLIENT_LAUNCHER, "nightly-report.ipynb"],
    "papermill": [f"{BIN}/papermill", "--kernel", "python3", "nightly-report.ipynb",
                  "nightly-report.out.ipynb"],
}


@pytest.mark.parametrize("launcher_name", sorted(LAUNCHERS))
def test_a_notebook_run_headless_is_named_by_its_notebook(runtime, tmp_path, launcher_name):
    import nbformat

    flag = tmp_path / "finish"
    notebook = tmp_path / "nightly-report.ipynb"
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("%load_ext memtamer"),
                nbformat.v4.new_code_cell("import os, time\nheld = bytearray(100 * 2**20)\n"
                                          f"while not os.path.exists({str(flag)!r}):\n"
                                          "    time.sleep(0.05)")]
    nbformat.write(nb, str(notebook))
    # Like papermill or `jupyter nbconvert --execute`: the notebook is in the launcher's argv.
    launcher = subprocess.Popen(LAUNCHERS[launcher_name], cwd=tmp_path,
                                env={**os.environ, "JUPYTER_RUNTIME_DIR": runtime},
                                stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        record = None
        while record is None and time.monotonic() < deadline:
            assert launcher.poll() is None, launcher.stderr.read()
            record = next((r for r in discover([runtime]).values()
                           if r.get("notebook") == str(notebook)), None)
            time.sleep(0.1)
        assert record is not None
        screen = watch_once(runtime, 80)
        assert re.search(rf"\b{record['pid']}\s+nightly-report\.ipynb\s", screen), screen
        families = scrape_until(runtime, lambda f: any(
            s.labels.get("notebook") == "nightly-report.ipynb"
            for s in f["memtamer_rss_bytes"].samples))
        assert any(s.labels == {"kernel": record["kernel"], "notebook": "nightly-report.ipynb"}
                   for s in families["memtamer_rss_bytes"].samples)
    finally:
        flag.write_text("")
        assert launcher.wait(timeout=120) == 0, launcher.stderr.read()
    assert record["kernel"] not in {r["kernel"] for r in discover([runtime]).values()}


def test_a_sigkilled_kernel_leaves_the_watch_and_its_files_go(runtime):
    k = Kernel(env={"JUPYTER_RUNTIME_DIR": runtime})
    follower = None
    try:
        k.run("%load_ext memtamer")
        pid = k.query("__import__('os').getpid()")
        path, record = next((p, r) for p, r in discover([runtime]).items() if r["pid"] == pid)
        socket_path = record["endpoint"][len("ipc://"):]
        follower = Follower()
        deadline = time.monotonic() + 30
        while "rss" not in follower.kernels.get(record["kernel"], {}) and \
                time.monotonic() < deadline:
            follower.receive(0.2)
        assert "rss" in follower.kernels[record["kernel"]]
        os.kill(pid, signal.SIGKILL)  # no exit handlers; its parent has not reaped it yet
        deadline = time.monotonic() + 30
        while record["kernel"] in follower.kernels and time.monotonic() < deadline:
            follower.receive(0.2)
        assert record["kernel"] not in follower.kernels
        assert not os.path.exists(path) and not os.path.exists(socket_path)
        assert not re.search(rf"\b{pid}\b", watch_once(runtime))
    finally:
        if follower is not None:
            follower.close()
        k.kc.stop_channels()
        k.km.shutdown_kernel(now=True)


def test_a_kernel_without_a_writable_runtime_dir_says_so_once_and_measures(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    k = Kernel(env={"JUPYTER_RUNTIME_DIR": str(blocker / "runtime")})
    try:
        loaded = k.run("%load_ext memtamer")
        assert loaded["stderr"].count("cannot write the runtime directory") == 1, loaded
        assert "still measures" in loaded["stderr"]
        k.run("x = bytearray(50 * 2**20)")
        assert k.query("__import__('memtamer')._core.telemetry_status()") is None
        assert k.last_cell()["retained"] >= 50 * MiB - REUSED
        assert "runtime directory" not in k.run("y = 1")["stderr"]
    finally:
        k.shutdown()


# Mapped, filled by the kernel in one call and unmapped at once: tens of
# milliseconds, much less than the 250 ms between samples.
SPIKE = 96 * MiB
SPIKE_CELL = (f"import mmap, time\ntime.sleep(0.3)\n"
              f"m = mmap.mmap(-1, {SPIKE}, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS"
              f" | mmap.MAP_POPULATE)\nm.close()\ntime.sleep(1.5)")


def test_a_spike_freed_between_two_samples_shows_in_the_running_peak(tk):
    """The running cell's peak takes the kernel's high-water mark: a spike
    that came and went between two samples is in every sample after it.
    Two cells, so that a sample landing inside both spikes by chance (and
    hiding a sampler that reads only the RSS) is unlikely."""
    for _ in range(2):
        sub = Subscriber(discovery_record(tk)["endpoint"])
        ran = []
        cell = threading.Thread(target=lambda: ran.append(tk.run(SPIKE_CELL)))
        try:
            sub.next("snapshot")
            cell.start()
            # Every sample the cell's run gave, up to its record: on a loaded
            # machine a sample may come late, never after the cell's record.
            running = []
            while (message := sub.next())["kind"] != "cell":
                if message["kind"] == "sample" and message["running"]:
                    running.append(message)
        finally:
            cell.join()
            sub.close()
        assert tk.last_cell()["peak_method"] == "hwm"
        last = running[-1]["running"]
        assert last["cell"] == ran[0]["execution_count"]
        assert SPIKE - REUSED <= last["peak_increment"] <= SPIKE + SLACK, last
        # The spike is gone from the RSS the sample read.
        assert running[-1]["rss"] < last["rss_before"] + SPIKE // 2
