"""The /proc and cgroup parsers on fake text, and the limit logic on fake trees."""

import os

import pytest

from conftest import GiB, MiB

from memtamer import _core

STATUS = """Name:\tpython3
Umask:\t0022
VmPeak:\t 3060000 kB
VmHWM:\t  204800 kB
VmRSS:\t  102400 kB
RssAnon:\t     112 kB
"""


def test_status_fields():
    assert _core._parse("status", STATUS) == {"VmRSS": 102400 * 1024, "VmHWM": 204800 * 1024}


def test_status_missing_field_is_none():
    assert _core._parse("status", "Name:\tx\nVmRSS:\t 5 kB\n") == {"VmRSS": 5120, "VmHWM": None}


def test_field_prefix_does_not_match_longer_key():
    # "VmRSSX" must not be read as VmRSS.
    assert _core._parse("status", "VmRSSX:\t 9 kB\nVmRSS:\t 7 kB\n")["VmRSS"] == 7 * 1024


def test_meminfo():
    text = "MemTotal:       16384000 kB\nMemFree:  100 kB\nMemAvailable:    8192000 kB\n"
    assert _core._parse("meminfo", text) == {"MemTotal": 16384000 * 1024,
                                             "MemAvailable": 8192000 * 1024}


def test_statm_uses_page_size():
    assert _core._parse("statm", "765 440 361 5 0 90 0\n") == 440 * 4096
    assert _core._parse("statm", "garbage") is None


@pytest.mark.parametrize("text, expected", [
    ("max\n", None),                     # v2: no limit
    ("9223372036854771712\n", None),     # v1: "unlimited"
    ("2147483648\n", 2 * 1024**3),
    ("  1048576", 1024**2),
    ("", "unreadable"),
    ("-1", "unreadable"),
])
def test_limit_values(text, expected):
    assert _core._parse("limit", text) == expected


def test_cgroup_v2_only():
    assert _core._parse("cgroup", "0::/user.slice/user-1000.slice/session-2.scope\n") == \
        ("/user.slice/user-1000.slice/session-2.scope", "")


def test_cgroup_v1_memory_among_controllers():
    text = "12:pids:/a\n4:cpu,memory:/docker/abc\n1:name=systemd:/x\n0::/\n"
    assert _core._parse("cgroup", text) == ("/", "/docker/abc")


def test_cgroup_memory_substring_is_not_memory():
    assert _core._parse("cgroup", "3:memory_extra:/a\n") is None


def test_mountinfo_hybrid():
    text = (
        "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n"
        "35 31 0:32 /docker/abc /sys/fs/cgroup/memory rw,relatime shared:9 - cgroup cgroup rw,memory\n"
        "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n"
    )
    assert _core._parse("mountinfo", text) == {
        "v2_mount": "/sys/fs/cgroup/unified", "v2_root": "/",
        "v1_mount": "/sys/fs/cgroup/memory", "v1_root": "/docker/abc",
    }


def test_pids_and_starttime():
    assert _core._parse("pids", "4821 4822 \n") == [4821, 4822]
    assert _core._parse("pids", "") == []
    # A command name with spaces and a ')' of its own.
    fields = " ".join(str(i) for i in range(3, 22))  # fields 3..21
    stat = f"1234 (evil) name) S {fields.split(' ', 1)[1]} 987654 99 100"
    assert _core._parse("starttime", stat) == 987654
    assert _core._parse("state", stat) == "S"
    assert _core._parse("state", "77 (zombie) Z) Z 1 77 77 0") == "Z"  # dead, not yet reaped
    assert _core._parse("state", "77 (cut") is None


SMAPS_ROLLUP = """55d0c0a4e000-7ffd8b3f7000 ---p 00000000 00:00 0                          [rollup]
Rss:             1049600 kB
Pss:              525312 kB
Shared_Clean:       2048 kB
Shared_Dirty:    1040384 kB
Private_Clean:       512 kB
Private_Dirty:      6656 kB
Referenced:      1049600 kB
Anonymous:       1046528 kB
"""


def test_smaps_rollup_private_memory():
    """A forked child of a 1 GiB kernel: 1 GiB resident, 7 MiB of it its own."""
    assert _core._parse("smaps_rollup", SMAPS_ROLLUP) == 7 * 1024**2
    # Both fields or nothing: half of the private memory is no figure.
    assert _core._parse("smaps_rollup", SMAPS_ROLLUP.replace("Private_Clean", "Private_Hugetlb")) is None
    assert _core._parse("smaps_rollup", "") is None


def test_memory_stat_hierarchical_limit():
    assert _core._parse("memory.stat", "cache 1\nhierarchical_memory_limit 536870912\n") == 512 * 1024**2


# ---- the limit on fake trees ----

MEMINFO = "MemTotal:       16777216 kB\nMemAvailable:    8388608 kB\n"


def fake_tree(tmp_path, cgroup, mountinfo, files):
    (tmp_path / "proc/self").mkdir(parents=True)
    (tmp_path / "proc/meminfo").write_text(MEMINFO)
    (tmp_path / "proc/self/cgroup").write_text(cgroup)
    (tmp_path / "proc/self/mountinfo").write_text(mountinfo)
    for name, text in files.items():
        path = tmp_path / name.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return str(tmp_path)


@pytest.fixture
def proc_root():
    roots = []

    def use(root):
        roots.append(root)
        _core._set_proc_root(root)
        return _core.process()

    yield use
    _core._set_proc_root("")


V2_MOUNT = "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw\n"
V1_MOUNT = "35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"


def test_limit_cgroup_v2_smallest_ancestor(tmp_path, proc_root):
    root = fake_tree(tmp_path, "0::/kube/pod1/box\n", V2_MOUNT, {
        "sys/fs/cgroup/kube/memory.max": "4294967296\n",
        "sys/fs/cgroup/kube/pod1/memory.max": "max\n",
        "sys/fs/cgroup/kube/pod1/box/memory.max": "max\n",
        "sys/fs/cgroup/kube/pod1/box/memory.current": "1073741824\n",
    })
    view = proc_root(root)
    assert view["limit"] == 4 * 1024**3
    assert view["limit_source"] == "cgroup2 memory.max"
    assert view["limit_path"].endswith("/sys/fs/cgroup/kube/memory.max")
    assert view["usage"] == 1024**3
    assert view["available"] == 3 * 1024**3


def test_limit_cgroup_v1_hierarchical(tmp_path, proc_root):
    root = fake_tree(tmp_path, "4:memory:/docker/abc\n0::/\n", V1_MOUNT, {
        "sys/fs/cgroup/memory/docker/abc/memory.limit_in_bytes": "9223372036854771712\n",
        "sys/fs/cgroup/memory/docker/abc/memory.usage_in_bytes": "536870912\n",
        "sys/fs/cgroup/memory/docker/abc/memory.stat": "cache 0\nhierarchical_memory_limit 2147483648\n",
    })
    view = proc_root(root)
    assert view["limit"] == 2 * 1024**3
    assert view["limit_source"] == "cgroup1 memory.limit_in_bytes"
    assert view["usage"] == 512 * 1024**2
    assert view["available"] == 1536 * 1024**2


def test_limit_namespaced_cgroup_falls_back_to_mount(tmp_path, proc_root):
    # Inside a cgroup namespace the listed path does not exist under the mount.
    root = fake_tree(tmp_path, "0::/not/visible\n", V2_MOUNT, {
        "sys/fs/cgroup/memory.max": "1073741824\n",
        "sys/fs/cgroup/memory.current": "104857600\n",
    })
    view = proc_root(root)
    assert view["limit"] == 1024**3
    assert view["usage"] == 100 * 1024**2


def test_limit_unlimited_cgroup_uses_memtotal(tmp_path, proc_root):
    root = fake_tree(tmp_path, "0::/a\n", V2_MOUNT, {"sys/fs/cgroup/a/memory.max": "max\n"})
    view = proc_root(root)
    assert view["limit"] == 16 * 1024**3
    assert view["limit_source"] == "MemTotal"
    assert view["available"] == 8 * 1024**3


def test_limit_above_memtotal_is_memtotal(tmp_path, proc_root):
    root = fake_tree(tmp_path, "0::/a\n", V2_MOUNT, {"sys/fs/cgroup/a/memory.max": str(64 * 1024**3)})
    assert proc_root(root)["limit_source"] == "MemTotal"


def test_no_proc_says_what_is_unavailable(tmp_path, proc_root):
    view = proc_root(str(tmp_path))  # an empty tree: no /proc at all
    assert view["rss"] is None
    assert view["peak_method"] == "unavailable"
    assert "peak_rss" in view["unavailable"]
    assert view["limit"] is None


def test_real_machine_limit_is_sane():
    view = _core.process()
    assert view["rss"] > 0
    assert 0 < view["limit"] <= os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert view["limit_source"] in ("cgroup2 memory.max", "cgroup1 memory.limit_in_bytes", "MemTotal")


# ---- the memory shared with other processes (issue 9) ----

def test_shared_v2_nested_binds_where_least_room_is_left(tmp_path, proc_root):
    # box: 2 GiB limit, 200 MiB used; kube above it: 4 GiB limit, 3.5 GiB
    # used of which 512 MiB inactive file cache -> 1 GiB room: kube binds.
    root = fake_tree(tmp_path, "0::/kube/pod1/box\n", V2_MOUNT, {
        "sys/fs/cgroup/kube/memory.max": f"{4 * GiB}\n",
        "sys/fs/cgroup/kube/memory.current": f"{3584 * MiB}\n",
        "sys/fs/cgroup/kube/memory.stat": f"anon 1\nactive_file 5\ninactive_file {512 * MiB}\n",
        "sys/fs/cgroup/kube/pod1/memory.max": "max\n",
        "sys/fs/cgroup/kube/pod1/memory.current": f"{3584 * MiB}\n",
        "sys/fs/cgroup/kube/pod1/box/memory.max": f"{2 * GiB}\n",
        "sys/fs/cgroup/kube/pod1/box/memory.current": f"{200 * MiB}\n",
        "sys/fs/cgroup/kube/pod1/box/memory.stat": "inactive_file 0\n",
    })
    shared = proc_root(root)["shared"]
    assert shared["source"] == "cgroup2"
    assert shared["path"] == str(tmp_path / "sys/fs/cgroup/kube")
    assert shared["limit"] == 4 * GiB
    assert shared["usage"] == 3584 * MiB and shared["inactive_file"] == 512 * MiB
    assert shared["use"] == 3 * GiB
    assert shared["reserve"] == max(256 * MiB, 4 * GiB // 100 * 5)


def test_shared_v2_max_everywhere_is_the_machine(tmp_path, proc_root):
    root = fake_tree(tmp_path, "0::/a\n", V2_MOUNT, {
        "sys/fs/cgroup/a/memory.max": "max\n",
        "sys/fs/cgroup/a/memory.current": f"{GiB}\n",
    })
    shared = proc_root(root)["shared"]
    # MEMINFO: 16 GiB total, 8 GiB available.
    assert shared["source"] == "machine" and shared["path"] is None
    assert shared["limit"] == 16 * GiB and shared["use"] == 8 * GiB


def test_shared_v1_counts_total_inactive_file(tmp_path, proc_root):
    root = fake_tree(tmp_path, "4:memory:/docker/abc\n0::/\n", V1_MOUNT, {
        "sys/fs/cgroup/memory/docker/abc/memory.limit_in_bytes": f"{GiB}\n",
        "sys/fs/cgroup/memory/docker/abc/memory.usage_in_bytes": f"{900 * MiB}\n",
        # inactive_file is the cgroup's own; total_ includes its children.
        "sys/fs/cgroup/memory/docker/abc/memory.stat":
            f"cache 1\ninactive_file {100 * MiB}\ntotal_inactive_file {300 * MiB}\n",
        "sys/fs/cgroup/memory/docker/memory.limit_in_bytes": "9223372036854771712\n",
        "sys/fs/cgroup/memory/docker/memory.usage_in_bytes": f"{5 * GiB}\n",
    })
    shared = proc_root(root)["shared"]
    assert shared["source"] == "cgroup1"
    assert shared["path"] == str(tmp_path / "sys/fs/cgroup/memory/docker/abc")
    assert shared["limit"] == GiB and shared["use"] == 600 * MiB


def test_shared_inactive_file_above_usage_is_clamped(tmp_path, proc_root):
    root = fake_tree(tmp_path, "0::/a\n", V2_MOUNT, {
        "sys/fs/cgroup/a/memory.max": f"{GiB}\n",
        "sys/fs/cgroup/a/memory.current": f"{100 * MiB}\n",
        "sys/fs/cgroup/a/memory.stat": f"inactive_file {200 * MiB}\n",
    })
    shared = proc_root(root)["shared"]
    assert shared["use"] == 0 and shared["inactive_file"] == 100 * MiB


def test_shared_machine_memavailable_without_cgroups(tmp_path, proc_root):
    root = fake_tree(tmp_path, "", "", {})
    (tmp_path / "proc/meminfo").write_text(
        "MemTotal:        4194304 kB\nMemFree:          524288 kB\nMemAvailable:    3145728 kB\n")
    shared = proc_root(root)["shared"]
    assert shared["source"] == "machine"
    assert shared["limit"] == 4 * GiB
    assert shared["use"] == GiB  # MemTotal - MemAvailable
    assert shared["usage"] == int(3.5 * GiB)  # MemTotal - MemFree


def test_shared_cgroup_limit_above_free_machine_memory_is_the_machine(tmp_path, proc_root):
    # A 12 GiB cgroup on a machine with 8 GiB available: the machine binds.
    root = fake_tree(tmp_path, "0::/a\n", V2_MOUNT, {
        "sys/fs/cgroup/a/memory.max": f"{12 * GiB}\n",
        "sys/fs/cgroup/a/memory.current": f"{GiB}\n",
    })
    assert proc_root(root)["shared"]["source"] == "machine"


def test_shared_nothing_readable(tmp_path, proc_root):
    assert proc_root(str(tmp_path))["shared"] is None
