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


# ---- swap (issue 35) ----

def test_majflt_is_field_12_after_a_name_with_spaces():
    # pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt ...
    assert _core._parse("majflt", "42 (a) b) R 1 42 42 0 -1 4194560 900 7 31 0 5 6") == 31
    assert _core._parse("majflt", "42 (short) R 1 42") is None


def test_vmswap_from_status():
    assert _core._parse("vmswap", STATUS + "VmSwap:\t  524288 kB\n") == 512 * MiB
    assert _core._parse("vmswap", STATUS) is None  # a kernel without swap accounting


PSI = ("some avg10=12.50 avg60=3.01 avg300=0.00 total=123456\n"
       "full avg10=0.75 avg60=0.10 avg300=0.00 total=4567\n")


def test_psi_some_and_full_avg10():
    assert _core._parse("psi", PSI) == (12.5, 0.75)
    # The machine's /proc/pressure/memory of old kernels has no "full" line.
    assert _core._parse("psi", PSI.splitlines()[0] + "\n") == (12.5, None)
    # avg10 must be on its own line, not borrowed from the next one.
    assert _core._parse("psi", "some total=5\nfull avg10=1.00\n") == (None, 1.0)
    assert _core._parse("psi", "") == (None, None)
    assert _core._parse("psi", "some avg10=" + "9" * 40 + "\n") == (None, None)


def test_meminfo_swap():
    text = MEMINFO + "SwapTotal:       2097152 kB\nSwapFree:        1572864 kB\n"
    assert _core._parse("meminfo_swap", text) == {
        "source": "SwapTotal", "path": None, "limit": 2 * GiB, "used": 512 * MiB,
        "room": 1536 * MiB}
    assert _core._parse("meminfo_swap", MEMINFO) is None  # no swap lines at all
    no_swap = _core._parse("meminfo_swap", MEMINFO + "SwapTotal: 0 kB\nSwapFree: 0 kB\n")
    assert no_swap["limit"] == 0 and no_swap["room"] == 0


def swap_meminfo(tmp_path, total, free):
    (tmp_path / "proc/meminfo").write_text(
        MEMINFO + f"SwapTotal: {total // 1024} kB\nSwapFree: {free // 1024} kB\n")


def test_swap_machine_without_cgroup_limit(tmp_path, proc_root):
    root = fake_tree(tmp_path, "0::/a\n", V2_MOUNT, {
        "sys/fs/cgroup/a/memory.swap.max": "max\n",
        "sys/fs/cgroup/a/memory.swap.current": "0\n",
    })
    swap_meminfo(tmp_path, 4 * GiB, 3 * GiB)
    swap = proc_root(root)["swap"]
    assert swap["source"] == "SwapTotal" and swap["path"] is None
    assert (swap["limit"], swap["used"], swap["room"]) == (4 * GiB, GiB, 3 * GiB)


def test_swap_v2_ancestor_swap_max_binds(tmp_path, proc_root):
    root = fake_tree(tmp_path, "0::/kube/box\n", V2_MOUNT, {
        "sys/fs/cgroup/kube/memory.swap.max": f"{GiB}\n",
        "sys/fs/cgroup/kube/memory.swap.current": f"{256 * MiB}\n",
        "sys/fs/cgroup/kube/box/memory.swap.max": f"{2 * GiB}\n",
        "sys/fs/cgroup/kube/box/memory.swap.current": f"{100 * MiB}\n",
    })
    swap_meminfo(tmp_path, 8 * GiB, 8 * GiB)
    swap = proc_root(root)["swap"]
    assert swap["source"] == "cgroup2 memory.swap.max"
    assert swap["path"] == str(tmp_path / "sys/fs/cgroup/kube")
    assert (swap["limit"], swap["used"], swap["room"]) == (GiB, 256 * MiB, 768 * MiB)


def test_swap_v2_zero_swap_max_means_none(tmp_path, proc_root):
    root = fake_tree(tmp_path, "0::/a\n", V2_MOUNT, {
        "sys/fs/cgroup/a/memory.swap.max": "0\n",
        "sys/fs/cgroup/a/memory.swap.current": "0\n",
    })
    swap_meminfo(tmp_path, 4 * GiB, 4 * GiB)
    assert proc_root(root)["swap"]["room"] == 0


def test_swap_cgroup_allowance_above_free_swap_is_the_machine(tmp_path, proc_root):
    # 2 GiB allowed, but only 512 MiB of the machine's swap is free.
    root = fake_tree(tmp_path, "0::/a\n", V2_MOUNT, {
        "sys/fs/cgroup/a/memory.swap.max": f"{2 * GiB}\n",
        "sys/fs/cgroup/a/memory.swap.current": "0\n",
    })
    swap_meminfo(tmp_path, 4 * GiB, 512 * MiB)
    swap = proc_root(root)["swap"]
    assert swap["source"] == "SwapTotal" and swap["room"] == 512 * MiB


def test_swap_v1_memsw_less_memory(tmp_path, proc_root):
    # The container: 1 GiB of memory, memsw 3 GiB -> 2 GiB of swap;
    # 1 GiB resident and 1.25 GiB in memsw -> 256 MiB in swap.
    root = fake_tree(tmp_path, "4:memory:/docker/abc\n0::/\n", V1_MOUNT, {
        "sys/fs/cgroup/memory/docker/abc/memory.limit_in_bytes": f"{GiB}\n",
        "sys/fs/cgroup/memory/docker/abc/memory.usage_in_bytes": f"{GiB}\n",
        "sys/fs/cgroup/memory/docker/abc/memory.memsw.limit_in_bytes": f"{3 * GiB}\n",
        "sys/fs/cgroup/memory/docker/abc/memory.memsw.usage_in_bytes": f"{1280 * MiB}\n",
    })
    swap_meminfo(tmp_path, 8 * GiB, 8 * GiB)
    swap = proc_root(root)["swap"]
    assert swap["source"] == "cgroup1 memory.memsw.limit_in_bytes"
    assert swap["path"] == str(tmp_path / "sys/fs/cgroup/memory/docker/abc")
    assert (swap["limit"], swap["used"], swap["room"]) == (2 * GiB, 256 * MiB, 1792 * MiB)


def test_swap_v1_memsw_equal_to_memory_allows_none(tmp_path, proc_root):
    # docker run --memory-swap equal to --memory: no swap at all.
    root = fake_tree(tmp_path, "4:memory:/docker/abc\n0::/\n", V1_MOUNT, {
        "sys/fs/cgroup/memory/docker/abc/memory.limit_in_bytes": f"{GiB}\n",
        "sys/fs/cgroup/memory/docker/abc/memory.usage_in_bytes": f"{100 * MiB}\n",
        "sys/fs/cgroup/memory/docker/abc/memory.memsw.limit_in_bytes": f"{GiB}\n",
        "sys/fs/cgroup/memory/docker/abc/memory.memsw.usage_in_bytes": f"{100 * MiB}\n",
    })
    swap_meminfo(tmp_path, 8 * GiB, 8 * GiB)
    swap = proc_root(root)["swap"]
    assert (swap["limit"], swap["used"], swap["room"]) == (0, 0, 0)


def test_swap_v1_without_swap_accounting_is_the_machine(tmp_path, proc_root):
    # swapaccount=0: no memsw files; the memory limit binds RAM only.
    root = fake_tree(tmp_path, "4:memory:/docker/abc\n0::/\n", V1_MOUNT, {
        "sys/fs/cgroup/memory/docker/abc/memory.limit_in_bytes": f"{GiB}\n",
        "sys/fs/cgroup/memory/docker/abc/memory.usage_in_bytes": f"{100 * MiB}\n",
    })
    swap_meminfo(tmp_path, 2 * GiB, 2 * GiB)
    assert proc_root(root)["swap"]["source"] == "SwapTotal"


def test_swap_machine_without_swap_ignores_cgroups(tmp_path, proc_root):
    root = fake_tree(tmp_path, "0::/a\n", V2_MOUNT, {
        "sys/fs/cgroup/a/memory.swap.max": f"{GiB}\n",
        "sys/fs/cgroup/a/memory.swap.current": "0\n",
    })
    swap_meminfo(tmp_path, 0, 0)
    swap = proc_root(root)["swap"]
    assert swap["source"] == "SwapTotal" and swap["room"] == 0


def test_swap_self_and_pressure_from_the_fake_tree(tmp_path, proc_root):
    root = fake_tree(tmp_path, "0::/a\n", V2_MOUNT, {
        "proc/self/status": STATUS + "VmSwap:\t 2048 kB\n",
        "proc/self/stat": "7 (py thon) S 1 7 7 0 -1 0 10 0 44 0 1 1",
        "sys/fs/cgroup/a/memory.pressure": PSI,
        "proc/pressure/memory": "some avg10=99.00 avg60=0 avg300=0 total=0\n"
                                "full avg10=99.00 avg60=0 avg300=0 total=0\n",
    })
    view = proc_root(root)
    assert view["vm_swap"] == 2 * MiB and view["major_faults"] == 44
    # The cgroup's own pressure, not the machine's.
    assert view["memory_pressure"] == {"some_avg10": 12.5, "full_avg10": 0.75}
    (tmp_path / "sys/fs/cgroup/a/memory.pressure").unlink()
    assert proc_root(root)["memory_pressure"]["some_avg10"] == 99.0


def test_swap_nothing_readable(tmp_path, proc_root):
    view = proc_root(str(tmp_path))
    assert view["swap"] is None and view["vm_swap"] is None
    assert view["major_faults"] is None and view["memory_pressure"] is None


def test_real_machine_swap_figures_agree_with_meminfo():
    meminfo = dict(line.split(":", 1) for line in open("/proc/meminfo"))
    total = int(meminfo["SwapTotal"].split()[0]) * 1024
    view = _core.process()
    assert view["swap"]["limit"] <= total
    assert view["swap"]["room"] <= int(meminfo["SwapFree"].split()[0]) * 1024
    assert 0 <= view["vm_swap"] <= total
    assert view["major_faults"] >= 0


def test_smaps_rollup_shared_memory():
    assert _core._parse("smaps_shared", SMAPS_ROLLUP) == (2048 + 1040384) * 1024
    assert _core._parse("smaps_shared", SMAPS_ROLLUP.replace("Shared_Dirty", "Shared_Hugetlb")) is None


def test_ppid_after_a_command_with_parentheses():
    assert _core._parse("ppid", "1234 (evil) name) S 77 1234 1234 0") == 77
    assert _core._parse("ppid", "1234 (cut") is None


def test_cmdline_joins_arguments_and_drops_the_last_nul():
    assert _core._parse("cmdline", "python\0-c\0print(1)\0") == "python -c print(1)"
    assert _core._parse("cmdline", "") == ""
    # A long command line is cut, never overrun.
    assert len(_core._parse("cmdline", "x" * 10000 + "\0")) == 255


def test_socket_inode_of_an_fd_link():
    assert _core._parse("socket_inode", "socket:[123456]") == 123456
    assert _core._parse("socket_inode", "pipe:[123456]") is None
    assert _core._parse("socket_inode", "socket:[12") is None


# /proc/net/tcp: a listening socket (state 0A) on port 0x1F90 = 8080 with
# inode 4242, a connection of the same process, and another's listener.
NET_TCP = """  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0
   1: 0100007F:D431 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 4243 1 0000000000000000 20 4 30 10 -1
   2: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 999 1 0000000000000000 100 0 0 10 0
"""


def test_listening_ports_of_a_socket():
    assert _core._parse("listening", NET_TCP, 4242) == [8080]
    assert _core._parse("listening", NET_TCP, 4243) == []  # connected, not listening
    assert _core._parse("listening", NET_TCP, 1) == []
    assert _core._parse("listening", "garbage\nmore garbage\n", 4242) == []


def test_last_pid_is_loadavg_last_field():
    assert _core._parse("last_pid", "0.40 0.79 0.95 2/311 27214\n") == 27214
    assert _core._parse("last_pid", "0.40 0.79 0.95 2/311 7") == 7
    for bad in ("", "27214", "0.40 0.79 0.95 2/311 \n", "0.40 0.79 0.95 2/311 x1", "a b -5"):
        assert _core._parse("last_pid", bad) is None, bad
