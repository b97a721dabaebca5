"""Telemetry's pure parts with fake input: gap counting, the exporter's
text format (checked by Prometheus' own parser), the watch table."""

import re

import pytest

from memtamer.export import Exporter
from memtamer.telemetry import Follower
from memtamer.watch import table

KERNEL = "0f3c5d2e-1111-2222-3333-444455556666"


def follower_with_kernel(tmp_path, notebook):
    follower = Follower([str(tmp_path)])
    follower.kernels[KERNEL] = {"kernel": KERNEL, "pid": 4242, "notebook": notebook, "cwd": "/w",
                                "endpoint": "ipc:///x", "seq": None, "lost": 0,
                                "running": None, "last_cell": None}
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
                                         budget=None, running={"seconds": 1.5, "peak_rss": 2**30}))
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
    buckets = {s.labels["le"]: s.value for s in families["memtamer_cell_peak_increment_bytes"].samples
               if s.name.endswith("_bucket")}
    assert buckets["1048576.0"] == 1 and buckets["67108864.0"] == 2
    assert buckets["17179869184.0"] == 2 and buckets["+Inf"] == 3
    histogram = {s.name: s.value for s in families["memtamer_cell_peak_increment_bytes"].samples}
    assert histogram["memtamer_cell_peak_increment_bytes_sum"] == 2**19 + 2**25 + 2**35


@pytest.mark.parametrize("running, shown", [
    (None, "idle"),
    ({"seconds": 12.34, "peak_increment": 3 * 2**30}, "12.3s peak +3.0 GiB"),
])
def test_watch_row(tmp_path, running, shown):
    follower = follower_with_kernel(tmp_path, "/home/u/notebooks/train.ipynb")
    try:
        follower._update(sample(1, rss=5 * 2**30, limit=16 * 2**30, headroom=2**30,
                                budget=15 * 2**30, trips=2, running=running))
        follower.kernels[KERNEL]["last_cell"] = {"peak_increment": 2**20, "retained": -2**20}
        screen = table(follower.kernels)
    finally:
        follower.close()
    header, row = screen.splitlines()[2:4]
    assert header.split()[:3] == ["KERNEL", "NOTEBOOK", "RSS"]
    assert re.match(r"0f3c5d2e\s+train\.ipynb\s+5\.0 GiB\s+16 GiB\s+1\.0 GiB\s+15 GiB\s+"
                    + re.escape(shown) + r"\s+1\.0 MiB\s+-1\.0 MiB\s", row), row
    assert row.split()[-2:] == ["2", "0"]  # trips, lost


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
