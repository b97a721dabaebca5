"""Loading, unloading and the magics in a real kernel."""

import json

import pytest

from conftest import besides_loaded

ALLOCATORS = "__import__('memtamer')._core._allocators()"


def test_unload_restores_every_hook_and_reload_works(fresh_kernel):
    fresh_kernel.run("import memtamer, numpy as np")
    before = fresh_kernel.query(ALLOCATORS)
    handler = fresh_kernel.query("np.core.multiarray.get_handler_name()")
    fresh_kernel.run("%load_ext memtamer")
    fresh_kernel.run("%load_ext memtamer")  # twice is harmless
    loaded = fresh_kernel.query(ALLOCATORS)
    assert loaded["raw"] != before["raw"] and loaded["arena"] != before["arena"]
    fresh_kernel.run("x = np.ones(10)")
    fresh_kernel.run("%unload_ext memtamer")
    assert fresh_kernel.query(ALLOCATORS) == before
    assert fresh_kernel.run("print(np.core.multiarray.get_handler_name())")["stdout"].strip() == handler
    out = fresh_kernel.run("%memreport", allow_error=True)
    assert out["error"] and out["error"]["ename"] == "UsageError"  # the magic is gone
    cells = fresh_kernel.query("len(memtamer.report()['cells'])")
    fresh_kernel.run("y = 1")
    assert fresh_kernel.query("len(memtamer.report()['cells'])") == cells  # no hooks left
    fresh_kernel.run("%reload_ext memtamer")
    fresh_kernel.run("y = 2")
    assert fresh_kernel.query("len(memtamer.report()['cells'])") == cells + 1
    fresh_kernel.run("%reload_ext memtamer")
    assert fresh_kernel.query(ALLOCATORS)["raw"] == loaded["raw"]


def test_memreport_html_and_text(kernel):
    kernel.run("import numpy as np")
    kernel.run("a = np.ones(2**24)")
    out = kernel.run("%memreport cells")
    (data,) = out["data"]
    assert "<table" in data["text/html"] and "<svg" in data["text/html"]
    assert "peak +" in data["text/plain"] and "a = np.ones(2**24)" in data["text/plain"]
    summary = kernel.run("%memreport")["data"][0]["text/plain"]
    assert "heaviest cells" in summary and "RSS" in summary


def test_memreport_json(kernel):
    kernel.run("c = 3")
    out = kernel.run("%memreport cells -n 2 --json")
    report = json.loads(out["stdout"])
    assert len(report["cells"]) == 2
    assert report["cells"][-1]["first_line"] == "c = 3"
    assert report["process"]["limit"] > 0


def test_memreport_sort_by_retained(kernel):
    kernel.run("import numpy as np")
    kernel.run("biggest = np.ones(3 * 2**24)  # 384 MiB kept, more than any other cell here")
    kernel.run("spike = np.ones(2**26)  # 512 MiB peak, nothing kept\ndel spike")
    retained = json.loads(kernel.run("%memreport cells --sort retained -n 1 --json")["stdout"])
    assert retained["cells"][0]["first_line"].startswith("biggest =")
    peak = json.loads(kernel.run("%memreport cells --sort peak -n 1 --json")["stdout"])
    assert peak["cells"][0]["first_line"].startswith("spike =")
    kernel.run("del biggest")


@pytest.mark.parametrize("line", [
    "%memreport --sort nope",
    "%memreport cells -n 0",
    "%memreport tables",
    "%memreport -n many",
    "%memtamer --notice lots",
])
def test_bad_arguments_raise_usage_error(kernel, line):
    out = kernel.run(line, allow_error=True)
    assert out["error"]["ename"] == "UsageError", out
    assert out["error"]["evalue"]


@pytest.mark.parametrize("line, words", [
    ("%memreport cels", "%memreport: 'cels' is not a view: did you mean cells? use one of "
                        "summary, cells, vars, peak, actions"),
    ("%memreport cells --sort retaned", "'retaned' is not a sort order: did you mean retained?"),
    ("%memreport tables", "'tables' is not a view: use one of summary"),
    ("%memrules chek", "%memrules: 'chek' is not a command: did you mean check?"),
])
def test_a_mistyped_choice_says_what_was_meant(kernel, line, words):
    out = kernel.run(line, allow_error=True)
    assert out["error"]["ename"] == "UsageError", out
    assert words in out["error"]["evalue"]
    assert "argument" not in out["error"]["evalue"]  # no argparse internals


def test_notice_after_heavy_cell(kernel):
    kernel.run("%memtamer --notice 100MiB")
    out = kernel.run("import numpy as np\nspike = np.ones(2**25)\ndel spike")
    count = out["execution_count"]
    assert f"cell {count}: peak +256 MiB" in out["stdout"]
    assert "of" in out["stdout"]
    quiet = kernel.run("small = 1")
    assert quiet["stdout"] == ""
    kernel.run("%memtamer --notice off")
    assert "peak" not in kernel.run("spike = np.ones(2**25)\ndel spike")["stdout"]


def test_loading_says_what_is_on_in_one_line_unless_the_config_asks_for_quiet(fresh_kernel):
    said = fresh_kernel.run("%load_ext memtamer")["stdout"]
    assert besides_loaded(said) == ""
    status = fresh_kernel.query("__import__('memtamer')._core.telemetry_status()")
    budget = fresh_kernel.query("__import__('memtamer').sizes.format_size("
                                "__import__('memtamer').budget()['budget'])")
    assert f"telemetry on {status['endpoint']}" in said, said
    assert f"budget {budget} (" in said, said
    assert said.rstrip().endswith("%memreport shows the figures, %memguard the budget.")
    # with memtamer in a profile's extensions, c.Memtamer.quiet = True silences it
    fresh_kernel.run("%unload_ext memtamer\nget_ipython().config.Memtamer.quiet = True")
    assert fresh_kernel.run("%load_ext memtamer")["stdout"] == ""


LIVE_CELL = "import time\nhold = bytearray(64 * 2**20)\ntime.sleep(4.5)"


def test_the_live_line_updates_in_place_while_a_cell_runs_and_ends_frozen(fresh_kernel):
    fresh_kernel.run("%load_ext memtamer")
    assert fresh_kernel.run(LIVE_CELL)["updates"] == []  # off by default
    shown = fresh_kernel.run("%memtamer --live on")["stdout"]
    assert "memtamer: live line under running cells: on" in shown
    out = fresh_kernel.run(LIVE_CELL.replace("hold", "hold2"))
    count = out["execution_count"]
    ids = {display_id for display_id, _ in out["updates"]}
    lines = [data["text/plain"] for _, data in out["updates"]]
    assert len(ids) == 1 and len(lines) >= 2, lines  # one line, updated in place
    assert lines[0].startswith(f"memtamer: cell {count} running ") and " now · peak +" in lines[0]
    assert " so far · " in lines[0] and lines[0].endswith(" left of its budget"), lines[0]
    # frozen at the end with the cell's figures: its peak holds the 64 MiB it kept
    record = fresh_kernel.last_cell()
    assert lines[-1].startswith(f"memtamer: cell {count} ran ") and "so far" not in lines[-1]
    assert record["peak_rss"] - record["rss_before"] >= 64 * 2**20
    # a short cell shows nothing
    assert fresh_kernel.run("x = 1")["updates"] == []
    # a bad word says what to write
    err = fresh_kernel.run("%memtamer --live maybe", allow_error=True)["error"]
    assert err["ename"] == "UsageError" and "on" in err["evalue"] and "off" in err["evalue"]
    fresh_kernel.run("%memtamer --live off")
    assert fresh_kernel.run(LIVE_CELL.replace("hold", "hold3"))["updates"] == []


def test_the_live_line_leaves_no_thread_at_a_fork_in_the_cell(fresh_kernel):
    fresh_kernel.run("%load_ext memtamer\n%memtamer --live on")
    out = fresh_kernel.run(
        "import os, threading, time, memtamer.live as live\ntime.sleep(3.5)\n"
        "def ours():\n"
        "    return [t.name for t in threading.enumerate() if t.name == 'memtamer-live']\n"
        "running = ours()\n"
        "live._before_fork()  # what os.fork() runs first\n"
        "at_fork = ours()\n"
        "live._after_fork_in_parent()\n"
        "print(running, at_fork, ours())\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    os._exit(0)\n"
        "os.waitpid(pid, 0)\n"
        "time.sleep(2.5)")
    assert out["stdout"] == "['memtamer-live'] [] ['memtamer-live']\n", out["stdout"]
    assert len(out["updates"]) >= 3 and out["error"] is None  # and it goes on after the fork
