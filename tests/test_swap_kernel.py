"""Swap as room (issue 35): where there is swap and the container allows it,
the budget counts memory plus swap; %memguard --no-swap keeps it in RAM.

The room arithmetic runs in a real kernel over a fake /proc and cgroup tree
(the probe's root): a cgroup v1 container of 2 GiB of memory whose memsw
allows 3 GiB more in swap, on a machine with 16 GiB and 8 GiB of swap."""

import pytest

from conftest import GiB, MiB
from kernel import Kernel

MEMORY = 2 * GiB
SWAP = 3 * GiB
# memtamer's reserve: the larger of 256 MiB and 5% of the room.
RESERVE = 256 * MiB



def meminfo(swap):
    return (f"MemTotal: {16 * GiB // 1024} kB\nMemFree: {8 * GiB // 1024} kB\n"
            f"MemAvailable: {8 * GiB // 1024} kB\n"
            f"SwapTotal: {swap // 1024} kB\nSwapFree: {swap // 1024} kB\n")


TREE = {
    "proc/meminfo": meminfo(8 * GiB),
    "proc/self/statm": f"{GiB // 4096} {100 * MiB // 4096} 0 0 0 0 0\n",
    "proc/self/cgroup": "4:memory:/docker/abc\n0::/\n",
    "proc/self/mountinfo": "35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n",
    "sys/fs/cgroup/memory/docker/abc/memory.limit_in_bytes": f"{MEMORY}\n",
    "sys/fs/cgroup/memory/docker/abc/memory.usage_in_bytes": f"{100 * MiB}\n",
    "sys/fs/cgroup/memory/docker/abc/memory.stat": "total_inactive_file 0\n",
    "sys/fs/cgroup/memory/docker/abc/memory.memsw.limit_in_bytes": f"{MEMORY + SWAP}\n",
    "sys/fs/cgroup/memory/docker/abc/memory.memsw.usage_in_bytes": f"{100 * MiB}\n",
}


@pytest.fixture
def container(tmp_path):
    root = tmp_path / "root"
    for name, text in TREE.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    k = Kernel(env={"MEMTAMER_RUNTIME_DIR": str(tmp_path)}, cwd=str(tmp_path))
    k.run("%load_ext memtamer\nimport memtamer\nfrom memtamer import _core\n"
          f"_core._set_proc_root({str(root)!r})")
    yield k
    k.shutdown()


def budget(k):
    return k.query("memtamer.budget()['budget']")


def test_default_budget_counts_memory_plus_swap_and_no_swap_keeps_ram(container):
    k = container
    k.run("%memguard default")
    assert budget(k) == MEMORY + SWAP - RESERVE
    shown = k.run("%memguard")["stdout"]
    assert "swap: 100 MiB" not in shown  # memsw less memory: nothing in swap yet
    assert "swap: 0 B in use of 3.0 GiB (cgroup1 memory.memsw.limit_in_bytes" in shown, shown
    assert "3.0 GiB of it counted in the budget's room" in shown

    shown = k.run("%memguard --no-swap")["stdout"]
    assert budget(k) == MEMORY - RESERVE
    assert "not counted: the budget is in RAM (%memguard --swap counts it)" in shown
    k.run("%memguard --swap")
    assert budget(k) == MEMORY + SWAP - RESERVE


def test_a_budget_that_needs_the_swap(container):
    k = container
    k.run("%memguard 4GiB")
    assert budget(k) == 4 * GiB
    # Without swap 4 GiB is above the container's 2 GiB: refused, nothing changed.
    err = k.run("%memguard --no-swap", allow_error=True)["stderr"]
    assert "UsageError" in err and "above the effective memory limit" in err
    assert "(the kernel uses 100 MiB, the limit is 2.0 GiB)" in err
    assert budget(k) == 4 * GiB
    assert k.query("memtamer.budget()['swap']['allowed']") is True
    # A budget that fits in RAM, with the swap left out, in one line.
    k.run("%memguard 1GiB --no-swap")
    assert budget(k) == GiB and k.query("memtamer.budget()['swap']['counted']") == 0
    err = k.run("%memguard 6GiB --swap", allow_error=True)["stderr"]
    assert "the limit is 2.0 GiB + 3.0 GiB of swap)" in err
    assert budget(k) == GiB
    k.run("%memguard 4GiB --swap")
    assert budget(k) == 4 * GiB


@pytest.mark.parametrize("line, says", [
    ("%memguard --noswap", "has no option --noswap"),
    ("%memguard --swap --no-swap", "one of --swap and --no-swap"),
    ("%memguard 1GiB 2GiB --no-swap", "takes one budget"),
])
def test_memguard_swap_words_say_what_to_write(container, line, says):
    err = container.run(line, allow_error=True)["stderr"]
    assert "UsageError" in err and says in err


def test_machine_without_swap_counts_none(container, tmp_path):
    k = container
    (tmp_path / "root/proc/meminfo").write_text(meminfo(0))
    k.run("%memguard default")
    assert budget(k) == MEMORY - RESERVE
    assert "swap: none (the machine has no swap for this kernel, SwapTotal)" in \
        k.run("%memguard")["stdout"]


def test_thrashing_setting(container):
    k = container
    thrashing = k.query("memtamer.budget()['thrashing']")
    assert thrashing["action"] == "warn"
    assert (f"thrashing (more than {thrashing['major_faults_per_second']:g} pages a second"
            in k.run("%memguard")["stdout"])
    shown = k.run("%memguard --thrashing stop")["stdout"]
    assert "stops the cell" in shown
    assert k.query("memtamer.budget()['thrashing']['action']") == "stop"
    for bad in ("%memguard --thrashing", "%memguard --thrashing maybe"):
        err = k.run(bad, allow_error=True)["stderr"]
        assert "UsageError" in err and "takes stop" in err
    k.run("%memguard 1GiB --no-swap --thrashing warn")
    assert k.query("memtamer.budget()['thrashing']['action']") == "warn"
    assert budget(k) == GiB


def test_rules_file_swap_key_is_judged_with_its_budget(container):
    k = container
    k.run("%memguard default")
    assert k.query("_core.rules_load(b'version: 1\\nswap: false\\nrules: []\\n')") == []
    assert budget(k) == MEMORY - RESERVE
    assert k.query("memtamer.budget()['swap']['allowed']") is False
    # A budget that needs the swap, in a file that turns it off: refused whole, at budget:.
    errors = k.query("_core.rules_load(b'version: 1\\nbudget: 4GiB\\nswap: false\\nrules: []\\n')")
    assert errors[0][:2] == [2, 9] and "above the effective memory limit" in errors[0][2]
    assert budget(k) == MEMORY - RESERVE
    # Without a budget of its own, the file's swap: is judged with the one in force.
    k.run("%memguard 4GiB --swap")
    errors = k.query("_core.rules_load(b'version: 1\\nswap: false\\nrules: []\\n')")
    assert errors[0][:2] == [2, 7] and errors[0][2].startswith("swap: cannot set")
    assert budget(k) == 4 * GiB and k.query("memtamer.budget()['swap']['allowed']") is True
    assert k.query("_core.rules_load(b'version: 1\\nbudget: 4GiB\\nswap: true\\nrules: []\\n')") == []
    assert budget(k) == 4 * GiB
