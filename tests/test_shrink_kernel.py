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
    assert kernel.query("counts.cbytes < counts.nbytes / 4")
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
