"""Variables in a real kernel: hidden holders, provenance, and del advice
proven by what RSS does when the named holders go."""

import pytest

from conftest import MiB

BIG = 2**25  # float64 elements: 256 MiB


def variables(kernel):
    return {v["name"]: v for v in kernel.query("__import__('memtamer').report()['variables']")}


def labels(variable):
    return {h["label"] for h in variable["holders"]}


def test_output_cache_holders(kernel):
    kernel.run("import numpy as np")
    kernel.run("shown = np.ones(2**22)")
    count = kernel.run("shown")["execution_count"]
    v = variables(kernel)["shown"]
    assert {f"Out[{count}]", "_", f"_{count}"} <= labels(v)
    # each holder says what it is and how to reach it: the output cache by
    # its key, the output cache's names by their names in the namespace
    assert {"label": f"Out[{count}]", "kind": "output_cache", "out_index": count} in v["holders"]
    assert {"label": f"_{count}", "kind": "output_name", "key": f"_{count}"} in v["holders"]
    assert not [h for h in v["holders"] if h["kind"] == "unnamed"]
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
    assert got["big"]["exclusive"] == 0 and {"label": "half", "kind": "view", "key": "half"} in got["big"]["holders"]
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
    assert {f"Out[{count}]", f"_{count}", "_"} <= labels(v)
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


RSS_NOW = "[int(l.split()[1]) * 1024 for l in open('/proc/self/status') if l.startswith('VmRSS')][0]"
HWM_NOW = "[int(l.split()[1]) * 1024 for l in open('/proc/self/status') if l.startswith('VmHWM')][0]"


def ledger_entry(kernel, name):
    return kernel.query(f"__import__('memtamer')._core.ledger()['names'][{name!r}]")


def test_reading_a_huge_list_costs_a_cell_nothing(kernel):
    # A 1 ms walk cannot read 240 MB of item pointers on any machine: the
    # creating cell's walk runs out of its budget whatever the machine's speed.
    kernel.run("_walk_before = __import__('memtamer')._core.set_walk_budget(0.001, 10.0)")
    kernel.run("huge = [0] * (3 * 10**7)")
    kernel.run("__import__('memtamer')._core.set_walk_budget(*_walk_before); del _walk_before")
    truth = kernel.query("__import__('sys').getsizeof(huge) + __import__('sys').getsizeof(0)")
    made = ledger_entry(kernel, "huge")
    # The creating cell walked for its budget only, and says it estimated.
    assert not made["complete"] and made["estimate"] == pytest.approx(truth, rel=0.01)
    # The reading cell may walk for 10 s, time enough to walk the list on
    # any machine: it used to walk the whole list again, and its figure is
    # still the estimate only when it did not.
    kernel.run("_walk_before = __import__('memtamer')._core.set_walk_budget(10.0, 10.0)")
    rss = kernel.query(RSS_NOW)
    kernel.run("huge[0]")
    rise = kernel.query(HWM_NOW) - rss
    kernel.run("__import__('memtamer')._core.set_walk_budget(*_walk_before); del _walk_before")
    assert not ledger_entry(kernel, "huge")["complete"]
    assert rise < 32 * MiB  # and push every item: 512 MiB
    # The report completes it.
    v = variables(kernel)["huge"]
    assert v["complete"] and v["bytes"] == truth and v["estimate"] is None
    assert ledger_entry(kernel, "huge")["complete"]
    kernel.run("del huge")


def test_underscore_variable_is_a_variable(kernel):
    kernel.run("import numpy as np\n_under = np.ones(2**23)")
    v = variables(kernel)["_under"]
    assert v["bytes"] == pytest.approx(64 * MiB, abs=1024) and v["exclusive"] == v["bytes"]
    before = kernel.query(RSS_NOW)
    out = kernel.run("%shrink del _under")
    assert "frees 64 MiB (predicted)" in out["data"][0]["text/plain"]
    assert before - kernel.query(RSS_NOW) == pytest.approx(64 * MiB, rel=0.03)


def test_names_with_lone_surrogates(kernel):
    kernel.run("globals()['\\udc80x'] = [1.5]\nplain = [2.5] * 100")
    assert "\udc80x" in variables(kernel)
    out = kernel.run("%memreport vars")
    assert "plain" in out["data"][0]["text/plain"]
    kernel.run("%shrink del plain")
    assert kernel.query("'plain' not in globals()")
    kernel.run("del globals()['\\udc80x']")


def test_compile_time_warnings_show_once(kernel, fresh_kernel):
    cell = "x = 5; x is 5"
    without = fresh_kernel.run(cell)["stderr"].count("SyntaxWarning")
    shown = kernel.run(cell)["stderr"]
    assert without >= 1 and shown.count("SyntaxWarning") == without, shown
    assert "<memtamer cell>" not in shown


def test_run_namespace_is_a_named_holder_that_del_purges(kernel, tmp_path):
    script = tmp_path / "make_big.py"
    script.write_text("import numpy as np\nrun_big = np.ones(2**24)\n")
    kernel.run(f"%run {script}")
    v = variables(kernel)["run_big"]
    assert v["holders"] == [{"label": "the %run namespace of make_big.py",
                             "kind": "run_namespace", "path": str(script)}]
    held = (f"get_ipython()._main_mod_cache[{str(script)!r}].__dict__.get('run_big') "
            "is run_big")
    out = kernel.run("%shrink del run_big --dry-run")
    assert "frees 128 MiB (predicted)" in out["data"][0]["text/plain"]
    assert kernel.query(held)  # a dry run puts the namespace's name back
    before = kernel.query(RSS_NOW)
    out = kernel.run("%shrink del run_big")
    assert "frees 128 MiB (predicted)" in out["data"][0]["text/plain"]
    assert "purged the %run namespace of make_big.py" in out["data"][0]["text/plain"]
    assert before - kernel.query(RSS_NOW) == pytest.approx(128 * MiB, rel=0.03)


def test_follows_a_replaced_namespace(fresh_kernel):
    # What embed_kernel(local_ns=...) does after extensions load.
    fresh_kernel.run("%load_ext memtamer")
    fresh_kernel.run("old = [1.5] * 10")
    fresh_kernel.run("get_ipython().kernel.user_ns = {}")
    fresh_kernel.run("embedded = [2.5] * 1000")
    got = variables(fresh_kernel)
    assert "embedded" in got and "old" not in got
    assert got["embedded"]["bytes"] == fresh_kernel.query(
        "__import__('sys').getsizeof(embedded) + __import__('sys').getsizeof(embedded[0])")
    fresh_kernel.run("%shrink del embedded")
    assert fresh_kernel.query("'embedded' not in globals()")


def test_last_exception_is_a_holder_that_del_purges(kernel):
    kernel.run("import numpy as np\nerr_big = np.ones(16 * 2**20)")
    kernel.run("raise ValueError(err_big)", allow_error=True)
    v = variables(kernel)["err_big"]
    exception = [h for h in v["holders"] if h["kind"] == "exception"]
    assert "sys.last_value" in {h["label"] for h in exception}
    # The purge clears every sys attribute that keeps the error: all that
    # this Python has, not a list the Python side keeps of its own.
    kept = set(kernel.query("[a for a in dir(__import__('sys')) if a.startswith('last_')]"))
    assert kept <= set(exception[0]["sys_attributes"])
    # A dry run puts back every reference it took, the traceback printer's too
    # (%debug still works after it).
    kernel.run("%shrink del err_big --dry-run")
    assert kernel.query("get_ipython().InteractiveTB.tb is __import__('sys').last_traceback "
                        "is not None")
    before = kernel.query(RSS_NOW)
    out = kernel.run("%shrink del err_big")
    assert "purged sys.last_value" in out["data"][0]["text/plain"]
    assert kernel.query("get_ipython().InteractiveTB.tb is None")
    # IPython's traceback printer keeps the traceback too (for %debug), and
    # its frames hold the error: the 128 MiB must really be given back.
    assert before - kernel.query(RSS_NOW) == pytest.approx(128 * MiB, rel=0.03)
    assert kernel.query("[getattr(__import__('sys'), a, None) for a in "
                        f"{sorted(kept)!r}]") == [None] * len(kept)
