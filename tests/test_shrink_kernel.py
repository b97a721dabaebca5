"""%shrink in a real kernel: the peak of an in-place downcast, transparent restore."""

import pytest

from conftest import GiB, MiB


def maxrss_and_rss(kernel):
    """The kernel's lifetime peak (getrusage: memtamer's VmHWM resets do not
    touch it) and its RSS now."""
    return kernel.query("{'maxrss': __import__('resource').getrusage(0).ru_maxrss * 1024, "
                        "'rss': [int(l.split()[1]) * 1024 for l in open('/proc/self/status') "
                        "if l.startswith('VmRSS')][0]}")


def test_inplace_downcast_of_1gib_keeps_the_high_water_mark(kernel):
    kernel.run("import numpy as np")
    kernel.run("big = np.random.default_rng(0).random(2**27)  # 1 GiB of float64")
    kernel.run("expect = big[:1000].astype(np.float32); tail = big[-1000:].astype(np.float32)")
    start = maxrss_and_rss(kernel)
    # The lifetime peak is where we stand now, so any rise above it would show.
    assert start["maxrss"] <= start["rss"] * 1.01, start
    out = kernel.run("%shrink downcast big")
    end = maxrss_and_rss(kernel)
    assert "in place" in out["stdout"] + str(out["data"])
    assert end["maxrss"] <= start["maxrss"] * 1.01, (start, end)
    assert kernel.query("str(big.dtype)") == "float32"
    assert kernel.query("bool((big[:1000] == expect).all() and (big[-1000:] == tail).all())")
    # The allocation itself shrank: half a GiB went back.
    assert start["rss"] - end["rss"] == pytest.approx(GiB / 2, rel=0.03)
    kernel.run("del big, expect, tail")


def test_compressed_variable_is_restored_when_a_cell_reads_it(kernel):
    kernel.run("import numpy as np, memtamer")
    kernel.run("counts = np.random.default_rng(2).poisson(3, size=2**22)  # 32 MiB int64\n"
               "checksum = int(counts.sum()); first = counts[:10].tolist()")
    kernel.run("%shrink compress counts --codec zstd")
    assert kernel.query("type(counts).__name__") == "Compressed"
    info = kernel.query("memtamer._core.compressed_info(counts)")
    assert info["cbytes"] < info["nbytes"] / 4
    out = kernel.run("total = int(counts.sum())")
    assert "restored counts" in out["stdout"]
    assert kernel.query("type(counts).__name__") == "ndarray"
    assert kernel.query("total") == kernel.query("checksum")
    assert kernel.query("counts[:10].tolist()") == kernel.query("first")
    # A cell that only rebinds the name does not restore it first.
    kernel.run("%shrink compress counts")
    out = kernel.run("counts = 5")
    assert "restored" not in out["stdout"]


def test_refusal_names_the_output_cache(kernel):
    kernel.run("import numpy as np")
    kernel.run("shown = np.arange(10.0)")
    kernel.run("shown")  # now held by Out and _
    out = kernel.run("%shrink downcast shown")
    text = out["stdout"] + str(out["data"])
    assert "REFUSED" in text and "Out[" in text
    assert kernel.query("str(shown.dtype)") == "float64"


def test_bad_input_is_a_usage_error(kernel):
    # IPython prints a UsageError instead of raising it into the reply.
    out = kernel.run("%shrink downcast no_such_name", allow_error=True)
    assert "UsageError" in out["stderr"] and "no variable named no_such_name" in out["stderr"]
    kernel.run("x = [1, 2, 3]")
    out = kernel.run("%shrink squash x", allow_error=True)
    assert "UsageError" in out["stderr"] and "unknown action" in out["stderr"]
    assert kernel.query("x") == [1, 2, 3]


RSS = "[int(l.split()[1]) * 1024 for l in open('/proc/self/status') if l.startswith('VmRSS')][0]"


def test_del_purges_the_output_cache_and_returns_what_it_predicts(kernel):
    kernel.run("import numpy as np, memtamer")
    kernel.run("shown = np.ones(2**25)  # 256 MiB")
    shown_at = kernel.run("shown")["execution_count"]  # now Out, _ and _N hold it too
    dry = kernel.query("memtamer.shrink('del', 'shown', dry_run=True)['shown']")
    assert dry["status"] == "dry-run"
    assert set(dry["purged"]) >= {f"Out[{shown_at}]", f"_{shown_at}"}
    assert dry["predicted"] == pytest.approx(256 * MiB, rel=0.01)
    # The dry run put back exactly what it took away.
    assert kernel.query(f"shown is Out[{shown_at}] is _{shown_at} is _")
    assert kernel.query("get_ipython().displayhook._ is shown")
    assert kernel.query(f"list(Out) == sorted(Out)")
    before = kernel.query(RSS)
    row = kernel.query("memtamer.shrink('del', 'shown')['shown']")
    returned = before - kernel.query(RSS)
    assert returned == pytest.approx(row["predicted"], rel=0.03)
    assert not kernel.query(f"'shown' in globals() or {shown_at} in Out or '_{shown_at}' in globals()")


def test_del_names_other_holders_and_leaves_them_alone(kernel):
    kernel.run("import numpy as np, memtamer")
    kernel.run("first = np.ones(2**24); second = first; checksum = float(first.sum())")
    out = kernel.run("%shrink del first")
    assert "second still holds it" in str(out["data"])
    assert kernel.query("'first' not in globals() and float(second.sum()) == checksum")
    # Named together, the holders go together and the memory with them.
    kernel.run("third = second")
    before = kernel.query(RSS)
    rows = kernel.query("memtamer.shrink('del', 'second', 'third')")
    assert before - kernel.query(RSS) == pytest.approx(128 * MiB, rel=0.03)
    assert sum(r["predicted"] for r in rows.values()) == pytest.approx(128 * MiB, rel=0.01)


def test_del_bad_input_changes_nothing(kernel):
    kernel.run("keep = [1, 2, 3]")
    for line in ("%shrink del", "%shrink del nosuchname keep", "%shrink del keep --copy",
                 "%shrink del keep --level 3"):
        out = kernel.run(line, allow_error=True)
        assert out["error"]["ename"] == "UsageError", line
    assert kernel.query("keep") == [1, 2, 3]
