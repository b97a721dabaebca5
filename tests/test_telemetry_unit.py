"""Telemetry's pure parts with fake input: gap counting, the exporter's
text format (checked by Prometheus' own parser), the watch table."""

import re

import pytest

from memtamer.export import Exporter
from memtamer.telemetry import Follower
from memtamer.watch import table

KERNEL = "0f3c5d2e-1111-2222-3333-444455556666"


@pytest.fixture(autouse=True)
def own_runtime_dir(tmp_path_factory, monkeypatch):
    """Watchers look in the runtime directories besides --dir (Jupyter's and
    memtamer's fallback): empty ones of the test's own, not the user's
    (where other kernels may run, a terminal IPython's in the fallback)."""
    path = tmp_path_factory.mktemp("runtime")
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(path))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path_factory.mktemp("xdg")))
    return path


def kernel_state(kernel=KERNEL, pid=4242, notebook=None, **fields):
    """A kernel's state as Follower.rescan makes it."""
    return {"kernel": kernel, "pid": pid, "notebook": notebook, "cwd": "/w", "launcher": None,
            "endpoint": "ipc:///x", "seq": None, "lost": 0, "running": None,
            "last_cell": None, "received": None, "memory_deaths": 0, "greeted": False,
            **fields}


def follower_with_kernel(tmp_path, notebook):
    follower = Follower([str(tmp_path)])
    follower.kernels[KERNEL] = kernel_state(notebook=notebook)
    return follower


def sample(seq, **fields):
    return {"kind": "sample", "kernel": KERNEL, "pid": 4242, "seq": seq, "time": 1.0 + seq,
            **fields}


def test_gaps_counted_from_sequence_numbers(tmp_path):
    follower = follower_with_kernel(tmp_path, None)
    try:
        for seq in (7, 8, 11, 12, 20):  # joined late at 7: nothing lost before it
            follower._update(sample(seq, rss=seq))
        # From another process with the same kernel id (a stale sender): ignored.
        follower._update({**sample(40, rss=1), "pid": 1})
        state = follower.kernels[KERNEL]
        assert state["lost"] == 2 + 7 and state["seq"] == 20 and state["rss"] == 20
    finally:
        follower.close()


def test_metrics_parse_with_awkward_notebook_names(tmp_path):
    from prometheus_client.parser import text_string_to_metric_families

    notebook = 'dir\\sub/"quoted"\nname.ipynb'
    exporter = Exporter([str(tmp_path)])
    exporter.follower.close()
    exporter.follower = follower_with_kernel(tmp_path, notebook)
    try:
        exporter.follower._update(sample(1, rss=123456789, limit=2**34, headroom=2**33,
                                         budget=None, running={"seconds": 1.5, "peak_rss": 2**30},
                                         swap=2**20, major_faults=4321))
        for peak in (2**19, 2**25, 2**35):  # 512 KiB, 32 MiB, 32 GiB (past every bound)
            exporter._observe(KERNEL, peak)
        families = {f.name: f for f in text_string_to_metric_families(exporter.metrics())}
    finally:
        exporter.follower.close()
    # The newline, a control character, is written out as text.
    labels = {"kernel": KERNEL, "notebook": 'dir\\sub/"quoted"\\nname.ipynb'}
    rss = families["memtamer_rss_bytes"].samples
    assert [(s.labels, s.value) for s in rss] == [(labels, 123456789)]
    assert families["memtamer_cell_running_seconds"].samples[0].value == 1.5
    assert families["memtamer_budget_bytes"].samples == []  # off: absent, not zero
    assert families["memtamer_swap_bytes"].samples[0].value == 2**20
    assert families["memtamer_major_faults"].samples[0].value == 4321  # the parser drops _total
    buckets = {s.labels["le"]: s.value for s in families["memtamer_cell_peak_increment_bytes"].samples
               if s.name.endswith("_bucket")}
    assert buckets["1048576.0"] == 1 and buckets["67108864.0"] == 2
    assert buckets["17179869184.0"] == 2 and buckets["+Inf"] == 3
    histogram = {s.name: s.value for s in families["memtamer_cell_peak_increment_bytes"].samples}
    assert histogram["memtamer_cell_peak_increment_bytes_sum"] == 2**19 + 2**25 + 2**35


@pytest.mark.parametrize("running, shown", [
    (None, "idle"),
    ({"seconds": 12.34, "peak_increment": 3 * 2**30}, "12.3s +3.0 GiB"),
])
def test_watch_row(tmp_path, running, shown):
    follower = follower_with_kernel(tmp_path, "/home/u/notebooks/train.ipynb")
    try:
        follower._update(sample(1, rss=5 * 2**30, limit=16 * 2**30, headroom=2**30,
                                budget=15 * 2**30, trips=2, running=running))
        follower.kernels[KERNEL]["last_cell"] = {"peak_increment": 2**20, "retained": -2**20}
        screen = table(follower.kernels, cells=200)
    finally:
        follower.close()
    header, row = screen.splitlines()[3:5]
    assert header.split()[:3] == ["PID", "NOTEBOOK", "RSS"]
    # Marked: its headroom is within the protocol's near_percent of its limit.
    assert re.match(r"! 4242  train\.ipynb\s+5\.0 GiB\s+15 GiB\s+1\.0 GiB\s+"
                    + re.escape(shown) + r"\s+1\.0 MiB\s+-1\.0 MiB\s+2\s+-\s+16 GiB\s+0\s+"
                    r"0f3c5d2e$", row), row


def test_a_thrashing_event_shows_in_watch_until_the_cell_ends(tmp_path):
    follower = follower_with_kernel(tmp_path, "/home/u/notebooks/train.ipynb")
    try:
        follower._update(sample(1, rss=2**30, running={"seconds": 5.0, "peak_increment": 2**30}))
        follower._update({**sample(2), "kind": "event", "event": "thrashing",
                          "data": {"major_faults_per_second": 2345, "action": "warn"}})
        screen = table(follower.kernels, cells=200)
        header, row = screen.splitlines()[3:5]
        assert row[header.index("THRASH"):].split()[0] == "2345/s", screen
        # sorted by it with its key
        assert "sorted by thrash" in table(follower.kernels, cells=200, sort_key="w")
        follower._update({**sample(3), "kind": "cell", "record": {"peak_increment": 2**30},
                          "cells": 1, "trips": 0})
        header, row = table(follower.kernels, cells=200).splitlines()[3:5]
        assert row[header.index("THRASH"):].split()[0] == "-"
    finally:
        follower.close()


def test_ipc_endpoint_never_replaces_what_is_at_its_path(tmp_path):
    import socket

    from memtamer import _core

    directory = tmp_path / "memtamer"
    directory.mkdir(mode=0o700)
    precious = directory / "file.sock"
    precious.write_text("precious")
    listening = socket.socket(socket.AF_UNIX)
    listening.bind(str(directory / "live.sock"))
    listening.listen()
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(str(directory / "dead.sock"))
    dead.close()  # the file stays, nothing accepts
    try:
        for path in (precious, directory / "live.sock"):
            with pytest.raises(FileExistsError, match="give MEMTAMER_TELEMETRY_ENDPOINT a new path"):
                _core.telemetry_start(f"ipc://{path}", "unit")
        assert precious.read_text() == "precious"
        assert _core.telemetry_status() is None
        endpoint = _core.telemetry_start(f"ipc://{directory}/dead.sock", "unit")
        assert endpoint == f"ipc://{directory}/dead.sock"
    finally:
        _core.telemetry_stop()
        listening.close()
    assert sorted(p.name for p in directory.iterdir()) == ["file.sock", "live.sock"]


# ---------------------------------------------------------------------------
# Untrusted input: discovery files and messages that do not fit the protocol.

import json  # noqa: E402
import os  # noqa: E402
import socket  # noqa: E402
import stat  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

import zmq  # noqa: E402

from memtamer import telemetry  # noqa: E402
from memtamer.telemetry import start_ticks  # noqa: E402

BIN = os.path.dirname(sys.executable)
FAKE = "fake-kernel"


def live_record(endpoint, **fields):
    """A discovery record of this (live) process, as a kernel writes it."""
    return {"endpoint": endpoint, "pid": os.getpid(), "start_ticks": start_ticks(os.getpid()),
            "kernel": FAKE, "cwd": "/w", "notebook": None, "names": True, **fields}


class FakeKernel:
    """An XPUB socket on ipc in directory and its discovery file: sends
    whatever frames a test gives it, well formed or not."""

    def __init__(self, directory, **record_fields):
        self.socket = zmq.Context.instance().socket(zmq.XPUB)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.endpoint = f"ipc://{directory}/fake.sock"
        self.socket.bind(self.endpoint)
        self.seq = 0
        with open(os.path.join(directory, f"memtamer-{FAKE}.json"), "w") as f:
            json.dump(live_record(self.endpoint, **record_fields), f)

    def wait_for_subscriber(self, timeout=30):
        assert self.socket.poll(timeout * 1000), "no subscriber came"
        assert self.socket.recv()[0] == 1

    def message(self, kind="sample", **fields):
        """A message of kind with every field the protocol gives it."""
        self.seq += 1
        base = {"kind": kind, "kernel": FAKE, "pid": os.getpid(), "seq": self.seq, "time": 1.5}
        filler = {"int": 1, "int?": None, "number": 0.5, "string": "s", "string?": None,
                  "bool": False, "object": {}, "object?": None, "array": [], "running?": None,
                  "record?": None}
        for name, kind_of in telemetry.PROTOCOL["kinds"][kind].items():
            base.setdefault(name, filler.get(kind_of))
        if kind == "cell":
            record = telemetry.PROTOCOL["objects"]["record"]
            base["record"] = {name: filler[t] for name, t in record.items()}
        base.update(fields)
        return base

    def send(self, *frames):
        self.socket.send_multipart([f if isinstance(f, bytes) else json.dumps(f).encode()
                                    for f in frames])

    def send_message(self, message):
        self.send(f"memtamer.{message['kind']}".encode(), message)

    def close(self):
        self.socket.close(linger=0)


def bad_messages(fake):
    """(name, frames) of messages that once killed watch or froze export."""
    good = fake.message(rss=1)
    topic = b"memtamer.sample"
    without_seq = dict(good)
    del without_seq["seq"]
    return [
        ("one frame", [topic]),
        ("three frames", [topic, good, b"more"]),
        ("not JSON", [topic, b"{nope"]),
        ("not UTF-8", [topic, b"\xff\xfe"]),
        ("a JSON list", [topic, [good]]),
        ("deep nesting", [topic, b"[" * 200000]),
        ("no seq", [topic, without_seq]),
        ("text seq", [topic, dict(good, seq="7")]),
        ("boolean seq", [topic, dict(good, seq=True)]),
        ("text cells", [b"memtamer.cell", fake.message("cell", cells="x")]),
        ("NaN rss", [topic, json.dumps(dict(good, rss=float("nan"))).encode()]),
        ("text running seconds", [topic, dict(good, running={"seconds": "x"})]),
        ("unknown kind", [b"memtamer.what", dict(good, kind="what")]),
        ("a list for a kind", [topic, dict(good, kind=["sample"])]),
        ("topic of another kind", [b"memtamer.bye", good]),
    ]


def test_every_bad_message_is_rejected_by_the_parser(tmp_path):
    fake = FakeKernel(tmp_path)
    try:
        for name, frames in bad_messages(fake):
            encoded = [f if isinstance(f, bytes) else json.dumps(f).encode() for f in frames]
            with pytest.raises(telemetry.Rejected):
                telemetry.parse_message(encoded)
                pytest.fail(name)
        good = fake.message(rss=7)
        assert telemetry.parse_message([b"memtamer.sample", json.dumps(good).encode()]) == good
    finally:
        fake.close()


def follow_until(follower, done, timeout=30):
    deadline = time.monotonic() + timeout
    while not done() and time.monotonic() < deadline:
        follower.receive(0.1)
    assert done()


def test_follower_skips_and_counts_bad_messages_and_keeps_the_good(tmp_path):
    fake = FakeKernel(tmp_path)
    follower = telemetry.Follower([str(tmp_path)])
    try:
        follower.rescan()
        fake.wait_for_subscriber()
        bad = bad_messages(fake)
        for _, frames in bad:
            fake.send(*frames)
        fake.send_message(fake.message(rss=4242, cells=3))
        follow_until(follower, lambda: follower.kernels[FAKE].get("rss") == 4242)
        state = follower.kernels[FAKE]
        assert follower.rejected == len(bad)
        assert state["cells"] == 3 and state["last_cell"] is None
    finally:
        follower.close()
        fake.close()


def write_discovery(directory, name, content):
    path = os.path.join(directory, f"memtamer-{name}.json")
    with open(path, "w") as f:
        f.write(content if isinstance(content, str) else json.dumps(content))
    return path


BAD_RECORDS = [
    ("numeric endpoint", live_record(5)),
    ("unknown scheme", live_record("udp://127.0.0.1:5555")),
    ("unparsable tcp", live_record("tcp://")),
    ("no kernel", {k: v for k, v in live_record("ipc:///x").items() if k != "kernel"}),
    ("text pid", live_record("ipc:///x", pid="self")),
    ("negative pid", live_record("ipc:///x", pid=-1)),
    ("text notebook", live_record("ipc:///x", notebook=["a"])),
    ("a list", [live_record("ipc:///x")]),
    ("not JSON", "{"),
]


@pytest.mark.parametrize("content", [c for _, c in BAD_RECORDS], ids=[n for n, _ in BAD_RECORDS])
def test_follower_skips_and_counts_a_bad_discovery_file_once(tmp_path, content):
    write_discovery(tmp_path, "bad", content)
    follower = telemetry.Follower([str(tmp_path)])
    try:
        for _ in range(3):
            follower.rescan()
        assert follower.kernels == {} and follower.rejected == 1
        write_discovery(tmp_path, "bad", "[1, 2, 3]")  # another bad version: counted again
        follower.rescan()
        assert follower.rejected == 2
    finally:
        follower.close()


def test_a_fifo_named_like_a_discovery_file_blocks_nothing(tmp_path):
    os.mkfifo(tmp_path / f"memtamer-{FAKE}.json")
    follower = telemetry.Follower([str(tmp_path)])
    try:
        follower.rescan()
        assert follower.kernels == {} and follower.rejected == 1
    finally:
        follower.close()


def test_watch_runs_through_bad_files_and_messages_and_escapes_what_it_prints(tmp_path):
    for name, content in BAD_RECORDS:
        write_discovery(tmp_path, name.replace(" ", "-"), content)
    notebook = "\x1b]0;owned\x07\x1b[2Jnote\u202ebook.ipynb"
    fake = FakeKernel(tmp_path, notebook=notebook)
    watcher = subprocess.Popen([f"{BIN}/memtamer", "watch", "--dir", str(tmp_path)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env={**os.environ, "COLUMNS": "200"})
    try:
        fake.wait_for_subscriber()
        bad = bad_messages(fake)
        for _, frames in bad:
            fake.send(*frames)
        fake.send_message(fake.message(rss=5 * 2**30))
        expected = f"rejected: {len(BAD_RECORDS) + len(bad)} malformed".encode()
        screen = b""
        deadline = time.monotonic() + 30
        os.set_blocking(watcher.stdout.fileno(), False)
        while time.monotonic() < deadline and not (expected in screen and b"5.0 GiB" in screen):
            time.sleep(0.1)
            screen += watcher.stdout.read() or b""
            assert watcher.poll() is None, watcher.stderr.read().decode()
    finally:
        watcher.terminate()
        watcher.wait()
        fake.close()
    last = screen.rsplit(b"\x1b[H\x1b[2J", 1)[-1].decode()
    assert expected.decode() in last and "5.0 GiB" in last
    assert "\x1b" not in last and "\x07" not in last and "\u202e" not in last
    assert "\\x1b]0;owned\\x07\\x1b[2Jnote\\u202ebook.ipynb" in last


def test_export_serves_every_kernel_through_bad_messages(tmp_path):
    from prometheus_client.parser import text_string_to_metric_families

    fake = FakeKernel(tmp_path, notebook="\x1b[2Jnb\x00.ipynb")
    exporter = Exporter([str(tmp_path)])
    try:
        exporter.follower.rescan()
        exporter.start()
        fake.wait_for_subscriber()
        bad = bad_messages(fake)
        for _, frames in bad:
            fake.send(*frames)
        fake.send_message(fake.message(rss=123, cells=9))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and "memtamer_rss_bytes{" not in exporter.metrics():
            time.sleep(0.05)
        text = exporter.metrics()
    finally:
        exporter.close()
        fake.close()
    assert "\x1b" not in text and "\x00" not in text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    labels = {"kernel": FAKE, "notebook": "\\x1b[2Jnb\\x00.ipynb"}
    assert [(s.labels, s.value) for s in families["memtamer_rss_bytes"].samples] == [(labels, 123)]
    assert families["memtamer_cells"].samples[0].value == 9
    assert families["memtamer_telemetry_rejected"].type == "counter"
    assert families["memtamer_telemetry_rejected"].samples[0].value == len(bad)


def test_export_follower_starts_again_after_an_error(tmp_path):
    import io

    fake = FakeKernel(tmp_path)
    err = io.StringIO()
    exporter = Exporter([str(tmp_path)], err=err)
    receive = exporter.follower.receive
    failures = []

    def failing_once(timeout):
        if not failures:
            failures.append(1)
            raise RuntimeError("boom")
        return receive(timeout)

    exporter.follower.receive = failing_once
    try:
        exporter.start()
        fake.wait_for_subscriber()
        fake.send_message(fake.message(rss=77))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and "memtamer_rss_bytes{" not in exporter.metrics():
            time.sleep(0.05)
        assert "memtamer_rss_bytes{" in exporter.metrics()
        assert exporter.thread.is_alive()
    finally:
        exporter.close()
        fake.close()
    assert "RuntimeError('boom')" in err.getvalue() and "starting again" in err.getvalue()


def test_stale_figures_are_not_served_as_live(tmp_path):
    exporter = Exporter([str(tmp_path)])
    exporter.follower.close()
    exporter.follower = follower_with_kernel(tmp_path, "nb.ipynb")
    try:
        exporter.follower._update(sample(1, rss=999, cells=4))
        fresh = exporter.metrics()
        state = exporter.follower.kernels[KERNEL]
        # Nothing came for longer than three idle samples: the kernel or the
        # follower is stuck.
        state["received"] -= telemetry.STALE_SECONDS + 1
        stale = exporter.metrics()
        shown = table(exporter.follower.kernels, cells=200).splitlines()[4]
    finally:
        exporter.follower.close()
    assert "memtamer_rss_bytes{" in fresh and "memtamer_rss_bytes{" not in stale
    assert f'memtamer_kernel_stale{{kernel="{KERNEL}",notebook="nb.ipynb"}} 0' in fresh
    assert "memtamer_cells_total{" not in stale
    assert f'memtamer_kernel_stale{{kernel="{KERNEL}",notebook="nb.ipynb"}} 1' in stale
    assert re.search(r"999 B\s+-\s+-\s+stale ", shown), shown


def test_export_on_a_busy_port_says_so_in_one_line(tmp_path):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    try:
        result = subprocess.run([sys.executable, "-m", "memtamer", "export", "--port", str(port),
                                 "--dir", str(tmp_path)], capture_output=True, text=True,
                                timeout=60)
    finally:
        busy.close()
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert f"port {port}" in result.stderr and "--port 0" in result.stderr


def test_export_port_0_picks_a_free_port_and_prints_it(tmp_path):
    exporter = subprocess.Popen([sys.executable, "-m", "memtamer", "export", "--port", "0",
                                 "--dir", str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        line = exporter.stdout.readline()
        port = int(re.search(r"http://127\.0\.0\.1:(\d+)/metrics", line).group(1))
        import urllib.request
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
    finally:
        exporter.terminate()
        exporter.wait()
    assert port > 0 and b"memtamer_kernels 0" in text


# ---------------------------------------------------------------------------
# Privacy: what leaves the kernel.

def subscribe(endpoint, **options):
    sub = zmq.Context.instance().socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    for name, value in options.items():
        setattr(sub, name, value)
    sub.subscribe(b"memtamer.")
    sub.connect(endpoint)
    return sub


def next_message(sub, kind, timeout=10):
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        if sub.poll(int(left * 1000)):
            message = telemetry.parse_message(sub.recv_multipart())
            if message["kind"] == kind:
                return message
    raise AssertionError(f"no {kind} within {timeout} s")


def test_names_off_sends_no_text_a_name_or_value_could_hide_in(tmp_path):
    from memtamer import _core

    endpoint = _core.telemetry_start(f"ipc://{tmp_path}/p.sock", "unit", False)
    sub = subscribe(endpoint)
    try:
        next_message(sub, "snapshot")
        _core.telemetry_event("shrink", {
            "name": "alias_name_z", "action": "downcast", "status": "refused",
            "bytes_before": 80, "bytes_after": None, "in_place": False, "ratio": 0.5,
            "reason": "it is already the smallest integer type holding its values "
                      "(7654321..7654322); also held by alias_name_z",
            "detail": ["alias_name_z"], "extra": {"value": "7654321"}})
        event = next_message(sub, "event")
    finally:
        sub.close()
        _core.telemetry_stop()
    assert event["data"] == {"action": "downcast", "status": "refused", "bytes_before": 80,
                             "bytes_after": None, "in_place": False, "ratio": 0.5}


def test_tcp_is_refused_while_names_and_code_go_out_in_the_clear(tmp_path, monkeypatch, capsys):
    from memtamer import _core

    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path))
    publisher = telemetry.Publisher()
    publisher.start({"MEMTAMER_TELEMETRY_ENDPOINT": "tcp"})
    assert _core.telemetry_status() is None and publisher.path is None
    assert list(tmp_path.glob("memtamer-*.json")) == []
    said = capsys.readouterr().err
    assert "any local user can subscribe to tcp://127.0.0.1:*" in said
    assert "MEMTAMER_TELEMETRY_NAMES=0" in said and "MEMTAMER_TELEMETRY_CURVE_SECRET_KEY" in said
    publisher.start({"MEMTAMER_TELEMETRY_ENDPOINT": "tcp", "MEMTAMER_TELEMETRY_NAMES": "0"})
    try:
        assert _core.telemetry_status()["endpoint"].startswith("tcp://127.0.0.1:")
    finally:
        publisher.stop()


@pytest.mark.skipif(not zmq.has("curve"), reason="libzmq without CurveZMQ")
def test_curve_keys_admit_only_subscribers_that_know_the_server(tmp_path, monkeypatch, capsys):
    from memtamer import _core

    public, secret = zmq.curve_keypair()
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path))
    publisher = telemetry.Publisher()
    publisher.start({"MEMTAMER_TELEMETRY_ENDPOINT": "tcp",
                     "MEMTAMER_TELEMETRY_CURVE_SECRET_KEY": secret.decode()})
    follower = telemetry.Follower([str(tmp_path)])
    plain = None
    try:
        assert capsys.readouterr().err == ""
        with open(publisher.path) as f:
            record = json.load(f)
        assert record["curve_public_key"] == public.decode()
        plain = subscribe(record["endpoint"])
        kernel = record["kernel"]
        follow_until(follower, lambda: "rss" in follower.kernels.get(kernel, {}))
        assert follower.kernels[kernel]["rss"] > 0
        # One without the server's key never hears a word.
        assert not plain.poll(1000)
        assert _core.telemetry_status()["subscriptions"] == 1
    finally:
        if plain is not None:
            plain.close()
        follower.close()
        publisher.stop()


def test_a_bad_curve_key_is_refused_with_what_to_give(tmp_path):
    from memtamer import _core

    with pytest.raises(ValueError, match="40 characters of Z85"):
        _core.telemetry_start(f"ipc://{tmp_path}/c.sock", "unit", True, "short")
    assert _core.telemetry_status() is None


# ---------------------------------------------------------------------------
# Discovery in one place, names, the dead, --dir, a watch that fits.

from memtamer import watch  # noqa: E402
from memtamer.__main__ import main  # noqa: E402


def test_runtime_dir_honours_jupyter_then_falls_back_to_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "rt"))
    assert telemetry.runtime_dir() == str(tmp_path / "rt")
    monkeypatch.delenv("JUPYTER_RUNTIME_DIR")
    from jupyter_core.paths import jupyter_runtime_dir

    assert telemetry.runtime_dir() == jupyter_runtime_dir()
    # jupyter_core not imported (a terminal IPython): not imported for this;
    # the readers may import it and look in both places.
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "xdg"))
    monkeypatch.delitem(sys.modules, "jupyter_core.paths")
    assert telemetry.runtime_dir() == str(tmp_path / "xdg" / "memtamer")
    assert "jupyter_core.paths" not in sys.modules
    assert telemetry.search_path() == [jupyter_runtime_dir(), str(tmp_path / "xdg" / "memtamer")]
    assert "jupyter_core.paths" in sys.modules
    # Without jupyter_core: the XDG runtime directory, else the temp directory.
    monkeypatch.setitem(sys.modules, "jupyter_core.paths", None)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "xdg"))
    assert telemetry.runtime_dir() == str(tmp_path / "xdg" / "memtamer")
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    assert telemetry.runtime_dir().endswith(f"memtamer-{os.getuid()}")


def test_unwritable_runtime_dir_says_so_once_and_publishes_nothing(tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(blocker / "runtime"))
    publisher = telemetry.Publisher()
    publisher.start()
    assert publisher.path is None and _core_status() is None
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"cannot write the runtime directory {blocker}/runtime" in err
    assert "still measures" in err and "JUPYTER_RUNTIME_DIR" in err


def _core_status():
    from memtamer import _core

    return _core.telemetry_status()


def test_publisher_makes_the_runtime_dir_private_and_writes_there(tmp_path, monkeypatch):
    runtime = tmp_path / "new" / "runtime"
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(runtime))
    publisher = telemetry.Publisher()
    publisher.start({})
    try:
        assert stat.S_IMODE(os.stat(runtime).st_mode) == 0o700
        record = json.loads(open(publisher.path).read())
        assert os.path.dirname(publisher.path) == str(runtime)
        assert record["kernel"] == f"pid-{os.getpid()}"  # no kernel here: no connection file
        assert record["launcher"] is not None and record["notebook"] is None
    finally:
        publisher.stop()


@pytest.mark.parametrize("state, shown", [
    ({"notebook": "/srv/home/u/deep/analysis.ipynb"}, "analysis.ipynb"),
    ({"notebook": "projects/analysis.ipynb"}, "projects/analysis.ipynb"),  # relative to the root
    ({"notebook": None, "cwd": "/home/u/work", "launcher": "pytest"}, "work/ (pytest)"),
    ({"notebook": None, "cwd": "/home/u/work/", "launcher": None}, "work/"),
    ({"notebook": None, "cwd": None}, "-"),
])
def test_display_name(state, shown):
    assert telemetry.display_name(state) == shown


def test_launcher_argv_names_the_notebook_and_a_server_is_not_believed(tmp_path):
    script = tmp_path / "launch.py"
    script.write_text("import sys, time\nprint('up', flush=True)\ntime.sleep(60)\n")
    started = []
    try:
        for argv in ([str(script), "in.ipynb", "out.ipynb"],  # as papermill's
                     [str(script), "lab", "opened.ipynb"],  # as a server's
                     ["-c", script.read_text(), "--flag"]):
            started.append(subprocess.Popen([sys.executable, *argv], cwd=tmp_path,
                                            stdout=subprocess.PIPE, text=True))
        for p in started:
            assert p.stdout.readline() == "up\n"
        papermill_like, server_like, plain = (p.pid for p in started)
        assert telemetry.launcher_notebook(papermill_like) == str(tmp_path / "in.ipynb")
        assert telemetry.launcher_name(papermill_like) == "launch.py"
        assert telemetry.launcher_notebook(server_like) is None
        assert telemetry.launcher_notebook(plain) is None
        assert telemetry.launcher_name(plain) == "python -c"
    finally:
        for p in started:
            p.kill()
            p.wait()
    assert telemetry.launcher_notebook(papermill_like) is None  # gone


def dead_pid():
    gone = subprocess.Popen(["true"])
    gone.wait()
    return gone.pid


def test_the_first_watcher_to_see_a_dead_kernel_removes_its_file_and_socket(tmp_path):
    directory = tmp_path / "rt"
    (directory / "memtamer").mkdir(parents=True)
    socket_path = directory / "memtamer" / "4242.sock"
    left = socket.socket(socket.AF_UNIX)  # bound, then the process "died"
    left.bind(str(socket_path))
    left.close()
    record = {"endpoint": f"ipc://{socket_path}", "pid": dead_pid(), "start_ticks": 1,
              "kernel": "killed", "cwd": "/w"}
    discovery = directory / "memtamer-killed.json"
    discovery.write_text(json.dumps(record))
    follower = Follower([str(directory)])
    try:
        follower.rescan()
        assert follower.kernels == {}
    finally:
        follower.close()
    assert not discovery.exists() and not socket_path.exists()


def test_a_socket_someone_listens_on_again_is_left_alone(tmp_path):
    # A reused pid's kernel bound the dead one's path: the record goes, the socket stays.
    socket_path = tmp_path / "reused.sock"
    listening = socket.socket(socket.AF_UNIX)
    listening.bind(str(socket_path))
    listening.listen()
    record = {"endpoint": f"ipc://{socket_path}", "pid": os.getpid(), "start_ticks": 1,
              "kernel": "old", "cwd": "/w"}
    (tmp_path / "memtamer-old.json").write_text(json.dumps(record))
    try:
        assert telemetry.discover([str(tmp_path)]) == {}
        assert socket_path.exists() and not (tmp_path / "memtamer-old.json").exists()
    finally:
        listening.close()


def test_a_kernel_in_another_pid_namespace_is_alive_while_its_socket_accepts(tmp_path):
    # A sidecar sees the runtime directory; the kernel's pid is none of its
    # processes, or one of them that is not the kernel (pid 1, here this test).
    fake = FakeKernel(tmp_path, pid=os.getpid(), start_ticks=12345,
                      pid_namespace="pid:[1]")
    try:
        found = telemetry.discover([str(tmp_path)])
        assert [r["kernel"] for r in found.values()] == [FAKE]
    finally:
        fake.close()
    # libzmq closes the listener in its own thread, a moment later.
    deadline = time.monotonic() + 30
    while telemetry.discover([str(tmp_path)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not (tmp_path / f"memtamer-{FAKE}.json").exists()


@pytest.mark.parametrize("command", [["watch"], ["watch", "--once"], ["watch", "--json"],
                                     ["export", "--port", "0"]])
def test_dir_naming_a_missing_folder_exits_2_naming_it(tmp_path, command, capsys):
    missing = tmp_path / "nonexistent"
    assert main([*command, "--dir", str(missing)]) == 2
    err = capsys.readouterr().err
    assert err == f"memtamer: --dir {missing}: no such folder\n"
    afile = tmp_path / "file"
    afile.write_text("")
    assert main([*command, "--dir", str(afile)]) == 2
    assert capsys.readouterr().err == f"memtamer: --dir {afile}: not a folder\n"


def test_dir_naming_an_unreadable_folder_exits_2(tmp_path):
    closed = tmp_path / "closed"
    closed.mkdir(mode=0o000)
    command = [sys.executable, "-m", "memtamer", "watch", "--once", "--dir", str(closed)]
    if os.getuid() == 0:  # root reads every folder: without its override it does not
        command = ["setpriv", "--inh-caps=-dac_override,-dac_read_search",
                   "--bounding-set=-dac_override,-dac_read_search", *command]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    finally:
        closed.chmod(0o700)
    assert done.returncode == 2, done.stderr
    assert done.stderr == f"memtamer: --dir {closed}: not readable\n"


def fleet(n=6):
    """Kernels with every column filled, one with a long wide-character name."""
    kernels = {}
    for i in range(n):
        name = ("分析/" + "very-long-notebook-name-" * 3 + f"{i}.ipynb" if i == 2
                else f"nb{i}.ipynb")
        kernels[f"k{i}-" + "0" * 30] = kernel_state(
            kernel=f"k{i}-" + "0" * 30, pid=100000 + i, notebook=name,
            received=time.monotonic(), rss=(i + 1) * 300 * 2**20, limit=24 * 2**30,
            headroom=20 * 2**30, budget=(5 * 2**28 if i == 3 else None), trips=i, lost=i * 1000,
            running={"seconds": 12.5, "peak_increment": 2**30} if i == 1 else None,
            last_cell={"peak_increment": 5 * 2**20, "retained": -3 * 2**20})
    return kernels


@pytest.mark.parametrize("cells", [40, 60, 80, 120, 200])
def test_watch_fits_the_width_and_keeps_pid_notebook_and_rss(cells):
    screen = watch.table(fleet(), cells=cells, container={"limit": 24 * 2**30,
                                                          "available": 19 * 2**30})
    lines = screen.splitlines()
    assert all(watch.width_of(line) <= cells for line in lines), \
        [(watch.width_of(line), line) for line in lines if watch.width_of(line) > cells]
    titles = lines[3].split()
    assert titles[:3] == ["PID", "NOTEBOOK", "RSS"]
    rows = lines[4:]
    assert len(rows) == 6
    # Sorted by memory, largest first; the kernel near its budget is marked.
    assert [int(r[2:].split()[0]) for r in rows] == [100005, 100004, 100003, 100002, 100001,
                                                       100000]
    assert [r[0] for r in rows] == [" ", " ", "!", " ", " ", " "]
    long_row = next(r for r in rows if "100002" in r)
    if cells >= 120:
        assert "LOST" in titles or cells < 200
    full = "分析/very-long-notebook-name-very-long-notebook-name-very-long-notebook-name-2.ipynb"
    if cells == 200:
        assert full in long_row
    else:
        assert "…" in long_row and "2.ipynb" in long_row and "分析" in long_row
    assert lines[0].endswith("6 kernels  room 19 GiB of 24 GiB") or cells < 60


def test_watch_children_line_under_a_kernel_on_request(tmp_path):
    follower = follower_with_kernel(tmp_path, "/home/u/train.ipynb")
    follower.kernels["other"] = kernel_state(kernel="other", pid=5151, notebook="/home/u/etl.ipynb",
                                             rss=2**30, children=0, children_private=0)
    try:
        follower._update(sample(1, rss=5 * 2**30, children=3, children_private=3 * 2**30,
                                biggest_child_pid=4300, biggest_child_private=2 * 2**30))
        plain = watch.table(follower.kernels, cells=120).splitlines()
        shown = watch.table(follower.kernels, cells=120, children=True).splitlines()
        narrow = watch.table(follower.kernels, cells=40, children=True).splitlines()
    finally:
        follower.close()
    assert not any("child" in line for line in plain)
    # train (5 GiB) first, its children's line under it; etl has none.
    assert "train.ipynb" in shown[4] and "etl.ipynb" in shown[6] and len(shown) == 7
    assert shown[5] == "    └ 3 child processes own 3.0 GiB; the most: pid 4300 2.0 GiB"
    assert narrow[5].startswith("    └ 3 child processes") and watch.width_of(narrow[5]) <= 40


def test_watch_drops_the_least_useful_columns_first():
    shown = [watch.table(fleet(), cells=cells).splitlines()[3].split() for cells in (60, 80, 120)]
    assert shown[0][:3] == ["PID", "NOTEBOOK", "RSS"]
    for narrow, wide in zip(shown, shown[1:]):
        assert set(narrow) <= set(wide)
    assert "LOST" not in shown[2] and "KERNEL" not in shown[2]


def test_shorten_keeps_both_ends_of_a_name():
    assert watch.shorten("experiments/2024/model-training.ipynb", 20) == "experimen…ning.ipynb"
    assert watch.width_of(watch.shorten("分析分析分析分析分析.ipynb", 9)) <= 9
    assert watch.shorten("short.ipynb", 20) == "short.ipynb"


def test_watch_sorts_by_the_key_pressed(tmp_path):
    kernels = fleet()
    by_name = watch.table(kernels, cells=200, sort_key="n").splitlines()[4:]
    assert [r.split()[1] for r in by_name][:2] == ["nb0.ipynb", "nb1.ipynb"]
    by_trips_reversed = watch.table(kernels, cells=200, sort_key="t", reverse=True).splitlines()
    assert [int(r[2:].split()[0]) for r in by_trips_reversed[4:]][0] == 100000
    assert "sorted by trips" in by_trips_reversed[1]


def test_watch_with_no_kernels_says_where_it_looked(tmp_path):
    screen = watch.table({}, cells=60, where=[str(tmp_path)])
    assert all(len(line) <= 60 for line in screen.splitlines())
    assert "0 kernels" in screen.splitlines()[0]
    assert "no kernels with memtamer loaded in" in screen


@pytest.mark.parametrize("columns", ["60", "80", "120", "200"])
def test_watch_once_prints_one_table_that_fits(tmp_path, columns):
    fake = FakeKernel(tmp_path, notebook="/home/u/" + "long-name-" * 12 + ".ipynb")
    record = {**fake.message("cell")["record"], "peak_increment": 7 * 2**20}
    fake.seq = 0
    # A sample can come before the snapshot: the table waits for the snapshot's last cell.
    sender = threading.Thread(target=lambda: (
        fake.wait_for_subscriber(), fake.send_message(fake.message("sample", rss=2**30)),
        fake.send_message(fake.message("snapshot", rss=2**30, last_cell=record))))
    sender.start()
    try:
        done = subprocess.run([f"{BIN}/memtamer", "watch", "--once", "--dir", str(tmp_path)],
                              capture_output=True, text=True, timeout=60,
                              env={**os.environ, "COLUMNS": columns})
    finally:
        sender.join()
        fake.close()
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "\x1b" not in done.stdout
    assert max(len(line) for line in lines) <= int(columns)
    row = next(line for line in lines if f"{os.getpid()}" in line)
    assert "1.0 GiB" in row and ".ipynb" in row
    assert "7.0 MiB" in row or "LAST PEAK" not in done.stdout


def test_grafana_dashboard_asks_only_for_what_export_serves(tmp_path):
    from importlib import resources

    dashboard = json.loads(resources.files("memtamer").joinpath("grafana-dashboard.json")
                           .read_text())
    exporter = Exporter([str(tmp_path)])
    exporter.follower.close()
    exporter.follower = follower_with_kernel(tmp_path, "nb.ipynb")
    try:
        exporter.follower._update(sample(1, rss=1, limit=2, headroom=1, budget=2, trips=0, cells=1,
                                         running={"seconds": 1.0, "peak_rss": 1}))
        exporter._observe(KERNEL, 2**20)
        text = exporter.metrics()
    finally:
        exporter.follower.close()
    served = {line.split("{")[0].split()[0] for line in text.splitlines()
              if line and not line.startswith("#")}
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs += [v["query"]["query"] for v in dashboard["templating"]["list"]
              if isinstance(v.get("query"), dict)]
    asked = {name for expr in exprs for name in re.findall(r"\bmemtamer_\w+", expr)}
    assert asked and asked <= served, asked - served
    # Grouped and shown by labels the exporter sets, or the scrape adds (README).
    labels = {label.strip() for expr in exprs
              for group in re.findall(r"by \(([^)]*)\)", expr) for label in group.split(",")}
    labels |= set(re.findall(r"(\w+)=~", " ".join(exprs)))
    labels |= {name for p in dashboard["panels"] for t in p["targets"]
               for name in re.findall(r"\{\{(\w+)\}\}", t["legendFormat"])}
    assert labels <= {"kernel", "notebook", "le", "pod", "namespace"}, labels
    titles = " ".join(p["title"].lower() for p in dashboard["panels"])
    for need in ("memory per kernel", "memory per notebook", "room per pod", "budget trips",
                 "memory deaths"):
        assert need in titles


def test_memory_deaths_counted_from_the_snapshot_and_live_events(tmp_path):
    follower = follower_with_kernel(tmp_path, "nb.ipynb")
    try:
        postmortem = {"seq": 1, "time": 1.0, "event": "postmortem", "data": {"text": "died"}}
        shrink = {"seq": 2, "time": 1.0, "event": "shrink", "data": {}}
        follower._update({**sample(3), "kind": "snapshot", "recent_events": [postmortem, shrink]})
        assert follower.kernels[KERNEL]["memory_deaths"] == 1
        follower._update({**sample(4), "kind": "event", "event": "postmortem", "data": {}})
        follower._update({**sample(5), "kind": "event", "event": "budget_trip", "data": {}})
        assert follower.kernels[KERNEL]["memory_deaths"] == 2
        exporter = Exporter([str(tmp_path)])
        exporter.follower.close()
        exporter.follower = follower
        follower.kernels[KERNEL]["received"] = time.monotonic()
        text = exporter.metrics()
    finally:
        follower.close()
    assert ('memtamer_memory_deaths_total{kernel="%s",notebook="nb.ipynb"} 2' % KERNEL) in text
    assert "# TYPE memtamer_memory_deaths_total counter" in text


@pytest.mark.skipif(os.getuid() != 0, reason="making a file another user's needs root")
def test_a_dead_kernels_file_another_user_owns_is_left_alone(tmp_path):
    record = {"endpoint": f"ipc://{tmp_path}/x.sock", "pid": dead_pid(), "start_ticks": 1,
              "kernel": "theirs", "cwd": "/w"}
    path = tmp_path / "memtamer-theirs.json"
    path.write_text(json.dumps(record))
    os.chown(path, 65534, 65534)  # nobody's
    assert telemetry.discover([str(tmp_path)]) == {}
    assert path.exists()
    os.chown(path, os.getuid(), os.getgid())
    assert telemetry.discover([str(tmp_path)]) == {}
    assert not path.exists()


# One schema: the fields C states (telemetry_protocol) are the ones export reads.
def test_export_serves_every_field_of_a_sample_and_reads_only_fields_the_protocol_states():
    from memtamer import export
    from memtamer.telemetry import SAMPLE_FIELDS

    figures = [figure for _, _, figure in export.GAUGES + export.COUNTERS]
    # A field added to the C schema's samples and not exported fails here.
    assert set(SAMPLE_FIELDS) <= {figure.path[0] for figure in figures}
    # A field export reads that the C schema does not state fails at import.
    for path in [("rss_now",), ("running", "peak"), ("last_cell", "retained", "x"), ("seq", "x")]:
        with pytest.raises(ValueError, match="no such field in the telemetry protocol"):
            export.Figure(*path)
    state = {"rss": 5, "running": {"seconds": 1.5}, "last_cell": None, "lost": 2}
    assert export.Figure("rss")(state) == 5
    assert export.Figure("running", "seconds")(state) == 1.5
    assert export.Figure("last_cell", "retained")(state) is None
    assert export.Figure("lost")(state) == 2
    assert export.Figure("running", how=lambda running: 1 if running else 0)(state) == 1


def _messages_until(sub, kind, timeout=10.0):
    """The messages sub receives up to and including the first of kind."""
    received, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sub.poll(100):
            frames = sub.recv_multipart()
            received.append(frames)
            if frames[0] == f"memtamer.{kind}".encode():
                return received
    raise AssertionError(f"no {kind} message within {timeout} s")


def test_nobody_subscribing_nothing_is_sampled_or_sent_and_one_cell_message_reaches_all(tmp_path):
    import zmq

    from memtamer import _core

    endpoint = _core.telemetry_start(f"ipc://{tmp_path}/memtamer/quiet.sock", "unit")
    context = zmq.Context()
    subs = []
    try:
        _core.cell_begin(1, "x = 1")
        # Three busy paces: a publisher that sampled for nobody would have.
        time.sleep(3 * telemetry.PROTOCOL["busy_ms"] / 1000)
        _core.cell_end(1, False)
        _core.cell_begin(2, "y = 2  # the last")
        _core.cell_end(2, False)
        status = _core.telemetry_status()
        assert (status["seq"], status["sent"], status["subscriptions"]) == (0, 0, 0)

        for _ in range(3):
            sub = context.socket(zmq.SUB)
            sub.setsockopt(zmq.LINGER, 0)
            sub.subscribe(b"memtamer.")
            sub.connect(endpoint)
            subs.append(sub)
        for sub in subs:  # a late subscriber still learns the last cell
            snapshot = json.loads(_messages_until(sub, "snapshot")[-1][1])
            assert snapshot["last_cell"]["first_line"] == "y = 2  # the last"
            assert snapshot["cells"] == 2
        while _core.telemetry_status()["subscriptions"] < 3:
            time.sleep(0.01)

        _core.cell_begin(3, "z = 3")
        _core.cell_end(3, False)
        cells = [_messages_until(sub, "cell")[-1][1] for sub in subs]
        # One message, formatted once, is what every subscriber gets.
        assert cells[0] == cells[1] == cells[2]
        assert json.loads(cells[0])["record"]["first_line"] == "z = 3"
    finally:
        for sub in subs:
            sub.close()
        context.term()
        _core.telemetry_stop()
        _core.clear_cells()
