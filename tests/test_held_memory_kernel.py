"""Memory a `del` did not free, named in a real kernel: the notice after the
cell, the report's rows and account, and the purges that give it back,
proven by what RSS does."""

import json

import pytest

from conftest import MiB
from kernel import Kernel

BIG = 2**25  # float64 elements: 256 MiB
BIG_BYTES = BIG * 8


@pytest.fixture(scope="module")
def kernel():
    """numpy before memtamer: the account's baseline (RSS at load) holds it."""
    k = Kernel()
    k.run("import numpy as np")
    k.run("%load_ext memtamer")
    yield k
    k.shutdown()


def rss(kernel):
    return kernel.query("__import__('memtamer')._core.process()['rss']")


def report(kernel):
    return kernel.query("__import__('memtamer').report()")


def test_del_of_a_displayed_array_names_its_holders_and_shrink_del_frees_it(kernel):
    kernel.run(f"kept = np.ones({BIG})")
    shown = kernel.run("kept")["execution_count"]
    out = kernel.run("del kept")
    assert (f"del kept freed nothing: Out[{shown}], _ and _{shown} still hold its 256 MiB; "
            "%shrink del kept frees it") in out["stdout"]
    got = report(kernel)
    row = next(r for r in got["held"] if r.get("was") == "kept")
    assert {"label": f"Out[{shown}]", "kind": "output_cache", "out_index": shown} in row["holders"]
    assert row["bytes"] == pytest.approx(BIG_BYTES, abs=4096)
    assert row["part"] == "ipython_caches"
    caches = next(p for p in got["account"]["parts"] if p["part"] == "ipython_caches")
    assert caches["bytes"] >= BIG_BYTES and "%shrink del kept" in caches["action"]
    text = kernel.run("%memreport")["data"][0]["text/plain"]
    assert f"Out[{shown}], _ and _{shown} (was kept)" in text and "256 MiB" in text
    kernel.run("%shrink del kept --dry-run")
    assert kernel.query(f"{shown} in Out") is True  # a dry run purges nothing
    before = rss(kernel)
    kernel.run("%shrink del kept")
    assert before - rss(kernel) >= 0.95 * BIG_BYTES
    assert not [r for r in report(kernel)["held"] if r.get("was") == "kept"]


def test_notices_off_silences_the_del_notice(kernel):
    kernel.run("%memtamer --notice off")
    kernel.run(f"quiet = np.ones({BIG // 8})")
    kernel.run("quiet")
    assert "freed nothing" not in kernel.run("del quiet")["stdout"]
    kernel.run("%memtamer --notice 512MiB")
    # IPython's %reset out leaves its hidden copy of _ holding the last output.
    kernel.run("%reset -f out")
    row = next(r for r in report(kernel)["account"]["held"] if r.get("was") == "quiet")
    assert row["holders"] == [{"label": "IPython's hidden _", "kind": "hidden_output_name",
                               "key": "_"}]
    before = rss(kernel)
    kernel.run("%shrink del quiet")
    assert before - rss(kernel) >= 0.95 * BIG_BYTES // 8


def test_a_steady_del_gives_no_notice(kernel):
    kernel.run(f"gone = np.ones({BIG // 8})")
    assert "freed nothing" not in kernel.run("del gone")["stdout"]


def test_rebinding_a_displayed_array_is_noticed(kernel):
    kernel.run(f"again = np.ones({BIG // 8})")
    shown = kernel.run("again")["execution_count"]
    out = kernel.run("again = 0")
    assert "rebinding again freed nothing" in out["stdout"]
    kernel.run(f"%shrink del Out[{shown}]")


def test_shrink_del_out_n_and_underscore_n(kernel):
    for target in ("Out[{n}]", "_{n}"):
        n = kernel.run(f"np.ones({BIG})")["execution_count"]
        row = next(r for r in report(kernel)["account"]["held"]
                   if {"label": f"Out[{n}]", "kind": "output_cache", "out_index": n} in r["holders"])
        assert row["action"] == f"%shrink del Out[{n}]" and row["bytes"] >= BIG_BYTES
        before = rss(kernel)
        out = kernel.run(f"%shrink del {target.format(n=n)}")
        assert f"purged Out[{n}]" in out["data"][0]["text/plain"]
        assert before - rss(kernel) >= 0.95 * BIG_BYTES
        assert kernel.query(f"{n} in Out") is False


def test_shrink_del_of_a_missing_output_says_so(kernel):
    out = kernel.run("%shrink del Out[99999]", allow_error=True)
    assert "there is no Out[99999]" in out["error"]["evalue"]


def test_a_traceback_holding_a_frame_local_is_named_and_freed(kernel):
    kernel.run(f"def fails():\n    local = np.ones({BIG})\n    raise ValueError('boom')")
    kernel.run("fails()", allow_error=True)
    got = report(kernel)
    row = next(r for r in got["held"] if r["part"] == "traceback")
    assert "sys.last_traceback" in {h["label"] for h in row["holders"]}
    assert row["bytes"] >= BIG_BYTES
    part = next(p for p in got["account"]["parts"] if p["part"] == "traceback")
    assert part["bytes"] >= BIG_BYTES and part["action"] == "%shrink del sys.last_traceback"
    before = rss(kernel)
    kernel.run("%shrink del sys.last_traceback")
    assert before - rss(kernel) >= 0.95 * BIG_BYTES
    again = kernel.run("%shrink del sys.last_traceback", allow_error=True)
    assert "there is no last error to clear" in again["error"]["evalue"]


def test_the_account_adds_up_to_rss(kernel):
    kernel.run(f"mine = np.ones({BIG})")
    kernel.run("mine")  # Out holds it too: counted once, as a variable
    account = report(kernel)["account"]
    parts = {p["part"]: p["bytes"] for p in account["parts"]}
    assert parts["variables"] == pytest.approx(BIG_BYTES, rel=0.01)
    advice = next(p["action"] for p in account["parts"] if p["part"] == "variables")
    assert advice is None  # Out holds it too: del mine alone frees nothing
    assert parts["ipython_caches"] < MiB
    assert set(parts) >= {"freed_heap", "baseline", "other_objects"}
    assert abs(account["remainder"]) <= 0.02 * account["rss"], account
    as_json = json.loads(kernel.run("%memreport --json")["stdout"])["account"]
    assert {p["part"] for p in as_json["parts"]} == set(parts)
    shown = kernel.run("%memreport")["data"][0]
    assert "where the RSS" in shown["text/plain"] and "where the RSS" in shown["text/html"]
    kernel.run("%shrink del mine")


def test_a_name_deleted_while_another_variable_holds_it(kernel):
    kernel.run(f"first_name = np.ones({BIG // 8})\nsecond_name = first_name")
    out = kernel.run("del first_name")
    assert ("del first_name freed nothing: second_name still holds its 32 MiB; "
            "del second_name too to free it") in out["stdout"]
    kernel.run("del second_name")


def test_other_holders_module_global_lru_cache_class_attribute(kernel, tmp_path):
    (tmp_path / "usermod.py").write_text(
        "import functools\nimport numpy as np\n"
        f"TABLE = np.ones({BIG // 8})\n"
        "@functools.lru_cache\ndef cached(n):\n    return np.ones(n)\n")
    kernel.run(f"import sys; sys.path.insert(0, {str(tmp_path)!r})")
    kernel.run(f"import usermod\nprint(usermod.cached({BIG // 8}).shape)")
    kernel.run(f"class Holder:\n    data = np.ones({BIG // 8})")
    held = {h["label"]: r for r in report(kernel)["account"]["held"] for h in r["holders"]}
    for label in ("usermod.TABLE", "usermod.cached (its lru_cache)", "Holder.data"):
        assert held[label]["bytes"] >= BIG, label
        assert held[label]["part"] == "other_objects"
    assert held["usermod.cached (its lru_cache)"]["action"] == "usermod.cached.cache_clear()"


def test_shared_atoms_are_no_holders_and_singletons_are_variables(kernel):
    kernel.run("x = 1; y = 1; w = 1; name = 'a'; flag = True; n_rows = 0")
    got = {v["name"]: v for v in report(kernel)["variables"]}
    for name in ("x", "y", "w", "name", "n_rows", "flag"):
        assert got[name]["holders"] == [], name
    assert got["name"]["exclusive"] == 0
    listed = kernel.run("%memreport vars --all")["data"][0]["text/plain"]
    assert "flag" in listed and "n_rows" in listed


def test_an_object_array_reaching_another_is_no_view_of_it(kernel):
    kernel.run("class Part:\n    def __init__(self, owner):\n        self.owner = owner")
    kernel.run(f"fig = [np.ones({BIG // 16})]\n"
               "parts = np.empty(4, dtype=object)\n"
               "parts[:] = [Part(fig) for _ in range(4)]\n"
               "ax = parts[:2]")
    got = {v["name"]: v for v in report(kernel)["variables"]}
    share = next(s for s in got["ax"]["shares"] if s["with"] == "fig")
    assert share["holds"] and not share["view"]
    assert "view of fig" not in (got["ax"]["why"] or "")
    kernel.run("view_of = np.ones(10)\nreal_view = view_of[::2]")
    assert {"label": "real_view", "kind": "view", "key": "real_view"} in \
        {v["name"]: v for v in report(kernel)["variables"]}["view_of"]["holders"]


def test_shrink_trim_measures_rss(kernel):
    out = kernel.run("%shrink trim")
    assert "malloc_trim(0)" in out["data"][0]["text/plain"]
    assert "takes no names" in kernel.run("%shrink trim x", allow_error=True)["error"]["evalue"]


def test_a_rerun_that_keeps_growing_is_noticed(kernel):
    kernel.run("acc = []")
    grow = f"acc.append(np.ones({2**17}))  # 1 MiB a run"
    assert "ran the same source again" not in kernel.run(grow)["stdout"]  # a first run
    first = kernel.last_cell()["cell"]
    out = kernel.run(grow)
    assert f"ran the same source again (as cell {first} did) and kept 1.0 MiB more: acc +1.0 MiB" \
        in out["stdout"]
    kernel.run("del acc")


def test_a_rerun_that_shows_its_result_grows_the_output_cache(kernel):
    show = f"np.ones({2**17}) * 2"
    kernel.run(show)
    out = kernel.run(show)
    assert "ran the same source again" in out["stdout"]
    assert f"Out[{out['execution_count']}] +1.0 MiB" in out["stdout"]
    kernel.run("%reset -f out")


def test_a_steady_rerun_is_not_flagged(kernel):
    steady = f"steady = np.ones({2**20})\nsteady_sum = float(steady.sum())\nsteady_items = list(range(1000))"
    for _ in range(3):
        assert "ran the same source again" not in kernel.run(steady)["stdout"]
    kernel.run("del steady")


def test_the_automatic_restore_is_charged_to_the_cell_it_runs_before(kernel):
    kernel.run(f"packed = np.random.default_rng(1).integers(0, 4, size={2**23})  # 64 MiB")
    kernel.run("%shrink compress packed --codec zstd")
    out = kernel.run("packed_total = int(packed[:10].sum())")
    assert "restored packed" in out["stdout"]
    record = kernel.last_cell()
    # numpy's own count of the buffer the restore made; RSS gives back the
    # compressed copy (how big depends on the codec), so only "most of it".
    assert record["numpy_peak_increment"] >= 64 * MiB
    assert record["retained"] >= 32 * MiB
    kernel.run("del packed")


def test_the_variables_part_names_the_del_that_frees_most(kernel):
    kernel.run(f"solo_var = np.ones({BIG // 8})")
    parts = {p["part"]: p for p in report(kernel)["account"]["parts"]}
    assert parts["variables"]["action"] == "%shrink del solo_var (frees 32 MiB)"
    kernel.run("del solo_var")


def test_a_failed_cells_own_frame_is_no_holder(kernel):
    """A cell's frame in the last traceback has the namespace as its locals:
    what the namespace holds is not held by the traceback."""
    kernel.run("1 / 0", allow_error=True)
    kernel.run(f"one = np.ones({BIG // 8})\nother = one")
    out = kernel.run("del one")
    assert "other still holds its 32 MiB" in out["stdout"]
    assert "traceback" not in out["stdout"]
    kernel.run("del other")


def test_a_deleted_name_the_run_namespace_still_holds(kernel, tmp_path):
    script = tmp_path / "make_held.py"
    script.write_text(f"import numpy as np\nrun_held = np.ones({BIG})\n")
    kernel.run(f"%run {script}")
    out = kernel.run("del run_held")
    assert ("del run_held freed nothing: the %run namespace of make_held.py still holds its "
            "256 MiB; %shrink del run_held frees it") in out["stdout"]
    before = rss(kernel)
    kernel.run("%shrink del run_held")
    assert before - rss(kernel) >= 0.95 * BIG_BYTES
