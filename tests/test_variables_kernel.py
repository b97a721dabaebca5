"""Variables in a real kernel: hidden holders, provenance, and del advice
proven by what RSS does when the named holders go."""

import pytest

from conftest import MiB

BIG = 2**25  # float64 elements: 256 MiB


def variables(kernel):
    return {v["name"]: v for v in kernel.query("__import__('memtamer').report()['variables']")}


def test_output_cache_holders(kernel):
    kernel.run("import numpy as np")
    kernel.run("shown = np.ones(2**22)")
    count = kernel.run("shown")["execution_count"]
    v = variables(kernel)["shown"]
    assert {f"Out[{count}]", "_", f"_{count}"} <= set(v["holders"])
    assert "<unnamed reference>" not in v["holders"]
    assert v["bytes"] == pytest.approx(32 * MiB, abs=1024)
    assert v["exclusive"] == 0
    assert v["why"].startswith("del shown would free 0 B: Out[")
    kernel.run("%xdel shown")


def test_provenance(kernel):
    made = kernel.run("p = 1.5")["execution_count"]
    read = kernel.run("q = p * 2")["execution_count"]
    kernel.run("r = 0")
    idle = kernel.run("p2 = 0")["execution_count"]
    names = kernel.query("__import__('memtamer')._core.ledger()['names']")
    assert names["p"]["created_cell"] == made and names["p"]["rebound_cell"] == made
    assert names["p"]["last_used_cell"] == read
    assert names["q"]["created_cell"] == read
    rebound = kernel.run("p = 2.5")["execution_count"]
    v = variables(kernel)["p"]
    assert v["created_cell"] == made and v["rebound_cell"] == rebound
    assert v["idle_cells"] == 0
    assert variables(kernel)["q"]["idle_cells"] == rebound - read
    assert idle > read


def test_magic_cells_are_read_too(kernel):
    kernel.run("m = [1.5]")
    used = kernel.run("%time n = len(m)")["execution_count"]
    assert kernel.query("__import__('memtamer')._core.ledger()['names']['m']['last_used_cell']") == used


def test_del_advice_proven_by_rss(kernel):
    kernel.run("import numpy as np")
    kernel.run(f"big = np.ones({BIG})\nhalf = big[::2]")
    got = variables(kernel)
    assert got["big"]["exclusive"] == 0 and "half" in got["big"]["holders"]
    assert got["half"]["why"] == f"half is a view of big (shares {256} MiB)"
    # del half frees its exclusive bytes: a header, nothing RSS can see
    freed_header = got["half"]["exclusive"]
    assert freed_header < 1024
    kernel.run("del half")
    assert abs(kernel.last_cell()["retained"]) < 0.03 * BIG * 8
    exclusive = variables(kernel)["big"]["exclusive"]
    assert exclusive == pytest.approx(BIG * 8, abs=1024)
    kernel.run("del big")
    assert -kernel.last_cell()["retained"] == pytest.approx(exclusive, rel=0.03)


def test_del_advice_with_output_cache(kernel):
    kernel.run("import numpy as np")
    kernel.run(f"shown_big = np.ones({BIG})")
    count = kernel.run("shown_big")["execution_count"]
    v = variables(kernel)["shown_big"]
    assert v["exclusive"] == 0
    holders = set(v["holders"])
    assert {f"Out[{count}]", f"_{count}", "_"} <= holders
    # del frees what the report says: nothing
    kernel.run("del shown_big")
    assert abs(kernel.last_cell()["retained"]) < 0.03 * v["bytes"]
    # removing the named holders (%xdel by the output cache's name) frees it all
    kernel.run(f"%xdel _{count}")
    assert -kernel.last_cell()["retained"] == pytest.approx(v["bytes"], rel=0.03)


def test_memreport_vars_renders(kernel):
    kernel.run("import numpy as np")
    kernel.run("shown_df = __import__('pandas').DataFrame({'a': np.arange(1000.0)})")
    out = kernel.run("%memreport vars -n 3")
    text = out["data"][0]["text/plain"]
    assert "variables" in text and "del frees" in text
    assert "<table" in out["data"][0]["text/html"]
    summary = kernel.run("%memreport")["data"][0]["text/plain"]
    assert "biggest variables" in summary
    assert "DataFrame 1000×1" in kernel.run("%memreport vars --all")["data"][0]["text/plain"]
    out = kernel.run("%memreport vars -n 0", allow_error=True)
    assert "UsageError" in out["stderr"] + str(out["error"]) and not out["data"]
