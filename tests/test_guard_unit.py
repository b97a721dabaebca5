"""Pure parts of the guard: budget parsing, the message, variable sizes, records."""

import os
import sys
import time

import pytest

from memtamer import _core
from memtamer.guard import biggest_variables, collect_postmortems, describe, postmortem
from memtamer.sizes import format_size

GiB = 1024**3
MiB = 1024**2


def test_parse_level_reads_shares_and_sizes():
    assert _core.parse_level("80%") == ("percent", 80.0)
    assert _core.parse_level(" 12.5 % ") == ("percent", 12.5)
    assert _core.parse_level("8GiB") == ("bytes", 8 * GiB)
    assert _core.parse_level("1500MiB") == ("bytes", 1500 * MiB)
    for bad in ("0%", "101%", "banana", "-5%", "8 parsecs"):
        with pytest.raises(ValueError):
            _core.parse_level(bad)


def trip(**over):
    base = {"layer": "numpy", "requested": 4 * GiB, "use": 300 * MiB, "ceiling": 2 * GiB,
            "budget": 2 * GiB, "limit": 24 * GiB, "rss_before": 250 * MiB,
            "child_pid": None, "child_private": None, "child_command": None}
    base.update(over)
    return base


def test_message_says_budget_use_and_request():
    text = describe(trip(), cell=14, variables=[("df", 900 * MiB, "DataFrame", False)])
    assert text.startswith("cell 14 was stopped")
    assert "budget of 2.0 GiB" in text
    assert "a numpy buffer of 4.0 GiB" in text and "about 300 MiB" in text
    assert "df 900 MiB (DataFrame)" in text and "`%shrink del df`" in text
    assert "before the cell began" not in text


def test_message_for_child_and_over_budget_start():
    text = describe(trip(layer="child", requested=None, use=int(2.2 * GiB), child_pid=4242,
                         child_private=2 * GiB, child_command="python3",
                         rss_before=int(2.1 * GiB)))
    assert "('python3', pid 4242)" in text and "grew to 2.0 GiB of its own memory" in text
    assert "killed that process" in text
    assert "already used 2.1 GiB before the cell began" in text


def test_biggest_variables_ranks_by_deep_size():
    np = pytest.importorskip("numpy")
    chunk = bytearray(2**16)
    ns = {"small": np.zeros(10), "big": np.zeros(2**20), "chunks": [chunk] * 64,
          "np": np, "f": print}
    _core.ledger_attach(ns, None, None, None, None)
    try:
        got = biggest_variables(ns, n=3)
    finally:
        _core.ledger_detach()
    assert [name for name, *_ in got] == ["big", "chunks", "small"]
    assert got[0] == ("big", sys.getsizeof(ns["big"]), "ndarray", False)  # not walked: sized now
    # 64 references to one 64 KiB bytearray: the buffer counts once.
    assert got[1][1] == sys.getsizeof(ns["chunks"]) + sys.getsizeof(chunk)


def test_records_reject_garbage_and_report_dead_kernels(tmp_path):
    junk = tmp_path / "memtamer-1.guard"
    junk.write_bytes(b"x" * 4096)
    assert _core.postmortem_read(str(junk)) is None
    junk.unlink()
    # A record written by this process, then read as another kernel would.
    _core.postmortem_open(str(tmp_path / f"memtamer-{os.getpid()}.guard"))
    try:
        record = _core.postmortem_read(str(tmp_path / f"memtamer-{os.getpid()}.guard"))
        assert record["pid"] == os.getpid() and record["alive"] is True
        assert record["cwd"] == os.getcwd() and record["cell"] is None
        # Alive records are never reported.
        assert collect_postmortems(str(tmp_path)) == []
    finally:
        _core.postmortem_close()
    assert list(tmp_path.iterdir()) == []


def dead_kernel_record(directory, notebook):
    """The record a kernel of notebook left in directory when it died without
    its exit handlers."""
    import subprocess

    dead = subprocess.run(
        [sys.executable, "-c", "import os\nfrom memtamer import _core\n"
         f"_core.postmortem_open({str(directory)!r} + f'/memtamer-{{os.getpid()}}.guard')\n"
         "os.kill(os.getpid(), 9)"],
        env={**os.environ, "JPY_SESSION_NAME": str(notebook)})
    assert dead.returncode == -9
    (path,) = directory.glob("memtamer-*.guard")
    return path


def test_records_of_other_notebooks_stay_until_a_week_old(tmp_path):
    from memtamer.guard import POSTMORTEM_KEEP_SECONDS

    records, other = tmp_path / "records", tmp_path / "other.ipynb"
    records.mkdir()
    other.write_text("{}")
    path = dead_kernel_record(records, other)
    updated = _core.postmortem_read(str(path))["updated"]
    assert collect_postmortems(str(records), now=updated + POSTMORTEM_KEEP_SECONDS - 60) == []
    assert path.exists()  # kept for its notebook's next kernel
    assert collect_postmortems(str(records), now=updated + POSTMORTEM_KEEP_SECONDS + 60) == []
    assert not path.exists()


def test_records_of_deleted_notebooks_go_at_once(tmp_path):
    records, gone = tmp_path / "records", tmp_path / "deleted.ipynb"
    records.mkdir()
    gone.write_text("{}")
    path = dead_kernel_record(records, gone)
    assert collect_postmortems(str(records)) == [] and path.exists()  # it still exists
    gone.unlink()
    assert collect_postmortems(str(records)) == [] and not path.exists()
    # A notebook named relative to a server root this kernel cannot know: kept.
    path = dead_kernel_record(records, "work/deleted.ipynb")
    assert collect_postmortems(str(records)) == [] and path.exists()


V2_MOUNT = "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw\n"
V1_MOUNT = "35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"
# (/proc/self/cgroup, mountinfo, the OOM counter file, its text with N kills)
OOM_COUNTERS = {
    "cgroup2": ("0::/kube/pod\n", V2_MOUNT, "sys/fs/cgroup/kube/pod/memory.events",
                "low 0\nhigh 0\nmax 3\noom 2\noom_kill {}\n"),
    "cgroup1": ("4:memory:/docker/abc\n", V1_MOUNT, "sys/fs/cgroup/memory/docker/abc/memory.oom_control",
                "oom_kill_disable 0\nunder_oom 0\noom_kill {}\n"),
    "machine": ("", "", "proc/vmstat", "pgfault 123\noom_kill {}\npgmajfault 4\n"),
}


def test_a_record_of_a_zombie_reads_as_a_dead_kernels(tmp_path):
    """Killed and not yet reaped, a kernel is still in /proc, as state Z."""
    path = str(tmp_path / f"memtamer-{os.getpid()}.guard")
    _core.postmortem_open(path)
    try:
        with open("/proc/self/stat") as f:
            head, tail = f.read().rsplit(") ", 1)
        fake = tmp_path / "root" / "proc" / str(os.getpid())
        fake.mkdir(parents=True)
        for state, alive in (("S", True), ("Z", False)):
            (fake / "stat").write_text(f"{head}) {state} {tail.split(' ', 1)[1]}")
            _core._set_proc_root(str(tmp_path / "root"))
            try:
                assert _core.postmortem_read(path)["alive"] is alive, state
            finally:
                _core._set_proc_root("")
    finally:
        _core.postmortem_close()


@pytest.mark.parametrize("where", sorted(OOM_COUNTERS))
def test_record_blames_memory_when_the_oom_killer_fired_during_its_cell(tmp_path, monkeypatch,
                                                                          where):
    cgroup, mountinfo, counter, text = OOM_COUNTERS[where]
    root = tmp_path / "root"
    (root / "proc/self").mkdir(parents=True)
    (root / "proc/self/cgroup").write_text(cgroup)
    (root / "proc/self/mountinfo").write_text(mountinfo)
    (root / "proc/self/statm").write_text("4096 1024 0 0 0 0 0\n")
    (root / counter).parent.mkdir(parents=True, exist_ok=True)
    (root / counter).write_text(text.format(5))
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    path = str(tmp_path / "memtamer-1.guard")
    _core._set_proc_root(str(root))
    try:
        _core.postmortem_open(path)
        # Under the fake root no /proc/<pid>/stat says this process started:
        # its record reads as a dead kernel's.
        record = _core.postmortem_read(path)
        assert record["alive"] is False and record["same_notebook"] is True
        assert record["oom_source"] == str(root / counter)
        assert record["oom_kills"] == 0 and record["memory_cause"] is None
        (root / counter).write_text(text.format(7))
        record = _core.postmortem_read(path)
        assert record["oom_kills"] == 2 and record["memory_cause"] == "oom_killer"
        # Another notebook's kernel in the same directory: not its record.
        monkeypatch.setenv("JPY_SESSION_NAME", "/home/u/other.ipynb")
        assert _core.postmortem_read(path)["same_notebook"] is False
    finally:
        _core.postmortem_close()
        _core._set_proc_root("")


def test_postmortem_says_why_memory_is_the_likely_cause():
    record = {"pid": 41, "cell": 7, "first_line": "x = load()", "rss": 3 * GiB,
              "peak_rss": 3 * GiB, "limit": 4 * GiB, "budget": None, "updated": time.time(),
              "oom_kills": 2, "oom_source": "/sys/fs/cgroup/kube/memory.events",
              "memory_cause": "oom_killer"}
    text = postmortem(record)
    assert text.startswith("memtamer: the previous kernel (pid 41) died while running cell 7 "
                           "('x = load()'); its last RSS was 3.0 GiB")
    assert "(peak 3.0 GiB, limit 4.0 GiB)." in text
    assert text.endswith("The OOM killer fired 2 times since its last cell began "
                         "(/sys/fs/cgroup/kube/memory.events). It needed more than the 4.0 GiB "
                         "it had: more RAM or swap (on an SSD) would let the cell go further, "
                         "and %memguard stops such a cell before its kernel dies.")
    record.update(cell=None, oom_kills=0, memory_cause="limit", peak_rss=5 * GiB)  # swap too
    text = postmortem(record)
    assert "died between cells" in text and text.endswith(
        "That was close to its limit. It needed more than the 5.0 GiB it reached: more RAM or "
        "swap (on an SSD) would let the cell go further, and %memguard stops such a cell "
        "before its kernel dies.")
    # near a budget: memtamer's own choice, no advice on RAM
    record.update(memory_cause="budget", budget=3 * GiB)
    assert postmortem(record).endswith("That was close to its budget.")


def test_format_of_sizes_used_in_messages():
    assert format_size(int(15.8 * GiB)) == "16 GiB"
    assert format_size(int(1.5 * GiB)) == "1.5 GiB"


def test_negative_size_says_it_is_negative():
    for bad in ("-1GiB", " -5", "-80%"):
        with pytest.raises(ValueError, match="negative"):
            _core.parse_level(bad)


def test_set_budget_without_the_extension_says_to_load_it():
    # This process never ran %load_ext memtamer: no watcher, no budget.
    assert _core.guard_status()["watcher"] is False
    import memtamer

    with pytest.raises(RuntimeError, match="%load_ext memtamer"):
        memtamer.set_budget("1GiB")


SHARED = {"source": "cgroup2", "path": "/sys/fs/cgroup/pod", "limit": 3 * GiB,
          "use": int(2.5 * GiB), "usage": int(2.7 * GiB), "inactive_file": 200 * MiB,
          "reserve": 256 * MiB}


def test_message_names_the_shared_limit_and_the_other_holders():
    text = describe(trip(crossed="shared", shared=SHARED, requested=2 * GiB, use=60 * MiB),
                    cell=7, holders=[("the kernel of analysis.ipynb", 4242, int(1.5 * GiB), 0),
                                     ("a memtamer kernel", 99, 200 * MiB, 600 * MiB),
                                     ("postgres", 77, 300 * MiB, 0)])
    assert text.startswith("cell 7 was stopped before it took the container past its memory "
                           "of 3.0 GiB (cgroup2 /sys/fs/cgroup/pod) less memtamer's reserve of "
                           "256 MiB")
    assert "a numpy buffer of 2.0 GiB while the container used 2.5 GiB, of which this kernel " \
           "about 60 MiB" in text
    assert ("Others holding it: the kernel of analysis.ipynb, pid 4242, holds 1.5 GiB; "
            "a memtamer kernel, pid 99, holds 200 MiB and reserved 600 MiB more; "
            "postgres, pid 77, holds 300 MiB.") in text
    assert "past its memory budget" not in text
    assert text.endswith("Variables made before this cell are intact.")


def test_other_holders_are_the_cgroups_processes_biggest_first(tmp_path, monkeypatch):
    import subprocess

    from memtamer import guard

    # A fake cgroup tree naming two real processes: this one (left out) and a
    # child that holds 64 MiB more than a second child.
    # Each says when it holds what it holds: no sleep that a busy machine outlasts.
    ready = "print('ready', flush=True); sys.stdin.read()"
    big = subprocess.Popen([sys.executable, "-c", f"import sys; b = b'x' * 2**26; {ready}"],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    small = subprocess.Popen([sys.executable, "-c", f"import sys; {ready}"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert big.stdout.readline() == small.stdout.readline() == "ready\n"
        (tmp_path / "child").mkdir()
        (tmp_path / "cgroup.procs").write_text(f"{os.getpid()}\n{small.pid}\n")
        (tmp_path / "child" / "cgroup.procs").write_text(f"{big.pid}\n")
        monkeypatch.setenv("MEMTAMER_RUNTIME_DIR", str(tmp_path / "runtime"))
        holders = guard.other_holders({"path": str(tmp_path)})
        assert [pid for _what, pid, _rss, _reserved in holders] == [big.pid, small.pid]
        assert holders[0][0] == os.path.basename(sys.executable)[:15]
        assert holders[0][2] - holders[1][2] >= 60 * MiB
        # The kernels a refusal's ledger named come first, with what they
        # reserved; a process named twice is listed once.
        holders = guard.other_holders({"path": str(tmp_path)},
                                      [(small.pid, 10 * MiB, 300 * MiB)])
        assert [(pid, reserved) for _what, pid, _rss, reserved in holders] == [
            (small.pid, 300 * MiB), (big.pid, 0)]
        assert holders[0][0] == "a memtamer kernel"
    finally:
        for p in (big, small):
            p.kill()
            p.wait()


THRASHING = {"action": "warn", "major_faults_per_second": 1000.0, "seconds": 3.0}


def test_memguard_swap_lines():
    from memtamer.guard import status_lines

    status = {"enabled": False, "mode": "off", "watcher": True, "rss": 300 * MiB,
              "budget": None, "limit": 3 * GiB, "limit_source": "MemTotal",
              "thrashing": dict(THRASHING, action="stop")}
    swap = {"source": "cgroup2 memory.swap.max", "path": "/sys/fs/cgroup/pod", "limit": 2 * GiB,
            "used": 512 * MiB, "room": int(1.5 * GiB), "allowed": True, "counted": 2 * GiB,
            "own": 100 * MiB}
    line = next(x for x in status_lines(dict(status, swap=swap)) if "swap:" in x)
    assert line == ("  swap: 512 MiB in use of 2.0 GiB (cgroup2 memory.swap.max /sys/fs/cgroup/pod), "
                    "1.5 GiB left; this kernel has 100 MiB there · 2.0 GiB of it counted in the "
                    "budget's room (%memguard --no-swap keeps the budget in RAM)")
    line = next(x for x in status_lines(dict(status, swap=dict(swap, allowed=False, counted=0,
                                                                    own=0))) if "swap:" in x)
    assert "there" not in line and line.endswith("not counted: the budget is in RAM "
                                                 "(%memguard --swap counts it)")
    none = dict(swap, source="SwapTotal", path=None, limit=0, used=0, room=0, counted=0)
    assert "  swap: none (the machine has no swap for this kernel, SwapTotal)" in \
        status_lines(dict(status, swap=none))
    assert any(x.endswith("stops the cell") for x in status_lines(dict(status, swap=None)))


def test_memguard_and_notice_show_both_figures():
    from memtamer.guard import status_lines
    from memtamer.render import notice

    status = {"enabled": True, "mode": "bytes", "budget": 2 * GiB, "rss": 300 * MiB,
              "limit": 3 * GiB, "limit_source": "cgroup2 memory.max", "shared": SHARED,
              "python_blocks": True, "large_request": 256 * 1024, "poll_us": 5000,
              "psi_trigger": False, "trips": 0, "thrashing": THRASHING}
    lines = status_lines(status)
    assert "this kernel: 300 MiB in use (RSS) of its budget 2.0 GiB" in lines[1]
    assert lines[2] == ("  the container: 2.5 GiB in use of 3.0 GiB (cgroup2 /sys/fs/cgroup/pod), "
                        "shared with other processes; cells also stop 256 MiB short of it")
    # 3 GiB - 256 MiB - 2.5 GiB = 256 MiB is less than 2 GiB - 300 MiB.
    assert lines[3] == "  room for this kernel's next cell: 256 MiB (the container's)"
    line = notice({"cell": 3, "peak_increment": GiB, "retained": 0},
                  {"rss": 300 * MiB, "limit": 3 * GiB, "shared": SHARED})
    assert line.endswith("RSS 300 MiB of 3.0 GiB · container 2.5 GiB of 3.0 GiB")


def test_message_says_which_sizes_are_from_before_the_cell():
    # The cell: parts was 56 B when the ledger last walked it, and
    # the cell grew it to 640 MiB: the message must not pass 56 B for now.
    text = describe(trip(), cell=3, variables=[("parts", 56, "list", True),
                                              ("fresh", 8 * MiB, "ndarray", False)])
    assert "parts 56 B before this cell (list)" in text
    assert "fresh 8.0 MiB (ndarray)" in text
    assert "what it added to them is not in them" in text
    assert "not in them" not in describe(trip(), variables=[("x", 8, "int", False)])


def test_biggest_variables_walked_by_the_ledger_are_from_before_the_cell():
    ns = {"parts": [0] * 7}
    _core.ledger_attach(ns, None, None, None, None)
    try:
        _core.cell_begin(1, "parts = [0] * 7")
        _core.cell_end(1, False)  # the ledger walks what the cell made
        ns["parts"].extend(range(100))  # the running cell grows it
        got = biggest_variables(ns)
    finally:
        _core.ledger_detach()
    # Its deep size when the ledger walked it: seven references to one int.
    assert got == [("parts", sys.getsizeof([0] * 7) + sys.getsizeof(0), "list", True)]


def test_watcher_message_says_swap_when_it_counts():
    text = describe(trip(layer="watcher", requested=None, use=3 * GiB, swap_counted=True))
    assert "The kernel's memory in RAM and swap (RSS and VmSwap) reached 3.0 GiB" in text
    text = describe(trip(layer="watcher", requested=None, use=3 * GiB, swap_counted=False))
    assert "The kernel's memory (RSS) reached 3.0 GiB" in text


def test_thrashing_message_names_the_rate_and_the_setting():
    from unittest import mock

    status = {"thrashing": {"action": "stop", "major_faults_per_second": 1000.0, "seconds": 3.0}}
    with mock.patch.object(_core, "guard_status", return_value=status):
        text = describe(trip(layer="watcher", requested=None, use=3 * GiB, crossed="thrashing",
                             major_faults_per_second=25000.4), cell=9)
    assert text.startswith("cell 9 was stopped because the kernel was thrashing: it waited for "
                           "25000 pages a second")
    assert "more than 1000 a second for 3 s" in text and "--thrashing warn" in text
