"""Rules at work in a real ipykernel: each trigger and action, the notices,
the actions log, hot reload, protect, allow_delete, a rejected reload that
keeps the old rules, and a bad file that leaves the extension measuring."""

import itertools
import os
import re
import textwrap
import time

import pytest

from conftest import besides_loaded, stop_writer, writer_thread
from kernel import Kernel
from memtamer.rules import PAST_TENSE, discover

MiB = 1024**2
_clock = itertools.count(1)


def write_rules(path, text):
    """Writes the rules file with a modification time no earlier write had."""
    path.write_text(textwrap.dedent(text))
    stamp = time.time_ns() + next(_clock) * 10**9
    os.utime(path, ns=(stamp, stamp))


@pytest.fixture(scope="module")
def rules_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("rules") / "memtamer.yaml"
    write_rules(path, "version: 1\nrules:\n  - {name: first, when: {cell_peak: 100GiB}, do: notice}\n")
    return path


@pytest.fixture(scope="module")
def k(rules_file):
    kernel = Kernel(env={"MEMTAMER_RULES": str(rules_file)})
    out = kernel.run("%load_ext memtamer")
    assert f"memtamer: rules from {rules_file} (1 rule)" in out["stdout"]
    kernel.run("import numpy as np, memtamer")
    yield kernel
    kernel.shutdown()


def rule_lines(out):
    """The rules' notices under a cell (a reload may have said its line first)."""
    return [line for line in out["stdout"].splitlines() if line.startswith("memtamer rule ")]


def actions_of(k, rule):
    return [a for a in k.query("memtamer.report()['actions']") if a["rule"] == rule]


def test_idle_arrays_are_compressed_after_n_cells_and_restore_exactly(k, rules_file):
    write_rules(rules_file, """\
        version: 1
        rules:
          - name: compress-idle
            when: {idle_for: 2}
            match: {type: ndarray, min_size: 8MiB, name: "idle_*"}
            do: compress
        """)
    k.run("idle_a = np.arange(2_000_000, dtype=np.float64) % 7\nchecksum = float(idle_a.sum())")
    out = k.run("pass")
    assert rule_lines(out) == []  # idle for 1 cell only
    out = k.run("pass")
    [line] = rule_lines(out)
    assert line.startswith("memtamer rule compress-idle: compressed idle_a 15 MiB -> ")
    assert k.query("type(idle_a).__name__") == "Compressed"
    [action] = actions_of(k, "compress-idle")
    assert (action["action"], action["name"], action["status"]) == ("compress", "idle_a", "done")
    assert 2_000_000 * 8 <= action["bytes_before"] <= 2_000_000 * 8 + 200  # data + header
    assert action["bytes_after"] < action["bytes_before"] / 4
    # Reading it restores it, bit for bit.
    k.run("restored_ok = bool((idle_a == np.arange(2_000_000, dtype=np.float64) % 7).all())")
    assert k.query("restored_ok") is True
    assert k.query("type(idle_a).__name__") == "ndarray"
    # Restored by a read, it is the user's again: idle again, compressed again,
    # and not before (memtamer's own rebinding does not count as a use).
    assert rule_lines(k.run("pass")) == []
    assert rule_lines(k.run("pass"))[0].startswith("memtamer rule compress-idle: compressed idle_a")
    assert [rule_lines(k.run("pass")) for _ in range(3)] == [[], [], []]  # never twice"


def test_no_action_inside_a_running_cell(k, rules_file):
    write_rules(rules_file, """\
        version: 1
        rules:
          - name: compress-new
            when: {created: true}
            match: {name: "inside_*", min_size: 8MiB}
            do: compress
        """)
    out = k.run("inside_a = np.ones(2_000_000)\nprint('during the cell:', type(inside_a).__name__)")
    during, *_, notice = out["stdout"].splitlines()
    assert during == "during the cell: ndarray"
    assert notice.startswith("memtamer rule compress-new: compressed inside_a")


def test_a_refused_action_reads_as_a_sentence_naming_the_command_that_does_it(k, rules_file):
    write_rules(rules_file, """\
        version: 1
        rules:
          - name: compress-held
            when: {created: true}
            match: {name: "held_*", min_size: 8MiB}
            do: compress
        """)
    out = k.run("held_a = np.ones(2_000_000)\nholder = [held_a]")
    [line] = rule_lines(out)
    # a rule cannot add --copy: the command that does it anyway is named whole
    assert line.startswith("memtamer rule compress-held: did not compress held_a: also held by "
                           "holder"), line
    assert line.endswith(", so the original would stay in memory and nothing would be freed; "
                         "%shrink compress held_a --copy compresses it anyway"), line
    report = k.run("%memreport actions")["stdout"]
    assert f"rule compress-held: {line.split(': ', 1)[1]}\n" in report, report
    write_rules(rules_file, "version: 1\nrules: []\n")
    k.run("del held_a, holder")


def test_created_frames_are_downcast_within_rtol(k, rules_file):
    write_rules(rules_file, """\
        version: 1
        rules:
          - name: downcast-new
            when: {created: true}
            match: {name: "f64_*", dtype: float64}
            do: downcast
            rtol: 1e-3
        """)
    out = k.run("reference = np.random.default_rng(1).random(1_000_000) + 1\n"
                "f64_a = reference.copy()\nf64_ints = np.arange(10)")
    assert "memtamer rule downcast-new: downcast f64_a 7.6 MiB -> 3.8 MiB" in out["stdout"]
    assert k.query("str(f64_a.dtype)") == "float32"
    assert k.query("str(reference.dtype)") == "float64"  # not matched by name
    assert k.query("str(f64_ints.dtype)") == "int64"  # not matched by dtype
    assert k.query("float((abs(f64_a - reference) / reference).max())") <= 1e-3
    # The ledger sized it again when the rule acted (policy_acted_on), not at 8 MB.
    sized = k.query("memtamer._core.ledger()['names']['f64_a']['bytes']")
    assert k.query("f64_a.nbytes") <= sized < k.query("reference.nbytes")


def test_spill_largest_until_memory_is_under_until(k, rules_file):
    k.run("spill_small = np.ones(4 * 2**20 // 8)\nspill_big = np.ones(96 * 2**20 // 8)\n"
          "spill_mid = np.ones(64 * 2**20 // 8)")
    rss = k.query("memtamer._core.process()['rss']")
    # Above now; spilling the biggest (96 MiB) alone brings it under until.
    write_rules(rules_file, f"""\
        version: 1
        rules:
          - name: spill-high
            when: {{memory_above: {rss - 40 * MiB}, until: {rss - 60 * MiB}}}
            match: {{name: "spill_*"}}
            order: largest
            do: spill
        """)
    out = k.run("pass")
    [line] = rule_lines(out)
    assert line.startswith("memtamer rule spill-high: spilled spill_big 96 MiB -> ")
    assert k.query("type(spill_big).__name__") == "memmap"
    assert k.query("type(spill_mid).__name__") == "ndarray"  # memory was under until
    assert k.query("float(spill_big.sum())") == 96 * MiB // 8


def test_percent_levels_and_dry_run_change_nothing(k, rules_file):
    k.run("dry_a = np.ones(3 * 2**20)")
    write_rules(rules_file, """\
        version: 1
        rules:
          - name: spill-any
            when: {memory_above: 0.001%, until: 0.0001%}
            match: {name: "dry_*"}
            do: spill
        """)
    k.run("%memrules off")  # the reload happens, the rule does not fire
    out = k.run("%memrules --dry-run")
    assert out["stdout"].startswith("spill-any: would spill dry_a (24 MiB) until the kernel is under ")
    assert k.query("type(dry_a).__name__") == "ndarray"
    assert actions_of(k, "spill-any") == []
    k.run("%memrules on")
    write_rules(rules_file, "version: 1\nrules: []\n")
    k.run("pass")


def test_pack_and_clear_output_cache(k, rules_file):
    write_rules(rules_file, """\
        version: 1
        rules:
          - name: pack-lists
            when: {created: true}
            match: {name: "nums_*"}
            do: pack
          - name: drop-outputs
            match: {min_size: 16MiB}
            do: clear_output_cache
        """)
    out = k.run("nums_a = list(range(1_000_000))")
    assert "memtamer rule pack-lists: packed nums_a" in out["stdout"]
    assert k.query("str(nums_a.dtype)") == "int64"  # what np.array() makes: sums stay exact
    assert k.query("bool((nums_a == np.arange(1_000_000)).all())") is True
    out = k.run("np.ones(3_000_000)")
    count = out["execution_count"]
    assert f"memtamer rule drop-outputs: dropped Out[{count}] 23 MiB -> 0 B" in out["stdout"]
    assert k.query(f"{count} in Out or '_{count}' in globals()") is False
    out = k.run("np.ones(10)")  # small: stays
    assert k.query(f"{out['execution_count']} in Out") is True


def test_delete_needs_allow_delete_and_never_touches_protected(k, rules_file):
    write_rules(rules_file, """\
        version: 1
        protect: [tmp_keep]
        rules:
          - name: drop-scratch
            when: {created: true}
            match: {name: "tmp_*"}
            do: del
            allow_delete: true
        """)
    out = k.run("tmp_scratch = np.ones(1000)\ntmp_keep = np.ones(1000)")
    assert "memtamer rule drop-scratch: deleted tmp_scratch" in out["stdout"]
    assert k.query("'tmp_scratch' in globals()") is False
    assert k.query("'tmp_keep' in globals()") is True


def test_cell_triggers_notice_and_collect(k, rules_file):
    write_rules(rules_file, """\
        version: 1
        rules:
          - name: heavy-cell
            when: {cell_retained: 40MiB}
            do: notice
          - name: peaky-cell
            when: {cell_peak: 40MiB}
            do: collect
        """)
    out = k.run("heavy = np.ones(64 * 2**20 // 8)")
    lines = rule_lines(out)
    assert lines[0].startswith("memtamer rule heavy-cell: cell_retained >= 40 MiB: the kernel uses ")
    assert lines[1].startswith("memtamer rule peaky-cell: collected garbage: kernel ")
    out = k.run("light = 1")
    assert "memtamer rule" not in out["stdout"]
    out = k.run("%memreport actions")
    assert "rule heavy-cell: noticed the kernel using " in out["stdout"]
    assert "rule peaky-cell: collected garbage: kernel " in out["stdout"]


# A child that keeps what each line it reads asks it to write, and says "1"
# once written.
KEEPER = ("import sys\nkept = []\nfor line in sys.stdin:\n"
          "    kept.append(bytearray(b'\\x01') * int(line))\n    print(1, flush=True)\n")


def test_children_over_names_the_biggest_child_and_leaves_it_running(k, rules_file):
    write_rules(rules_file, """\
        version: 1
        rules:
          - name: big-children
            when: {children_over: 150MiB}
            do: notice
        """)
    k.run("import subprocess, sys\n"
          f"keeper = subprocess.Popen([sys.executable, '-c', {KEEPER!r}], "
          "stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)\n"
          "def keep(size):\n"
          "    keeper.stdin.write(f'{size}\\n'); keeper.stdin.flush(); keeper.stdout.readline()")
    pid = k.query("keeper.pid")
    out = k.run(f"keep({64 * MiB})")
    assert rule_lines(out) == []
    out = k.run(f"keep({192 * MiB})")
    (line,) = rule_lines(out)
    found = re.fullmatch(r"memtamer rule big-children: child processes own more than 150 MiB: "
                         r"they own (\d+) MiB, the most pid (\d+) \(python\S*\) (\d+) MiB; "
                         r"memtamer leaves them running", line)
    assert found, line
    owned, named, biggest = int(found[1]), int(found[2]), int(found[3])
    # What it wrote, and its interpreter's own 10-30 MiB.
    assert named == pid
    assert 256 <= biggest <= owned <= 256 + 32, line
    assert k.query("keeper.poll()") is None
    # Off, so that the cell before the dry run is not one the rule fired after.
    k.run("%memrules off")
    k.run("x = 1")
    dry = k.run("%memrules --dry-run")["stdout"]
    k.run("%memrules on")
    found = re.search(r"^big-children: would notice \(child processes own (\d+) MiB\)$", dry, re.M)
    assert found and 256 <= int(found[1]) <= 256 + 32, dry
    out = k.run("%memreport actions")
    assert re.search(r"rule big-children: noticed the child processes owning \d+ MiB, the most "
                     rf"pid {pid} ", out["stdout"]), out["stdout"]
    k.run("keeper.stdin.close(); keeper.wait()")
    assert rule_lines(k.run("x = 1")) == []


def test_rejected_reload_keeps_the_rules_in_force(k, rules_file):
    write_rules(rules_file, """\
        version: 1
        rules:
          - name: keep-me
            when: {created: true}
            match: {name: "kept_*"}
            do: notice
        """)
    k.run("pass")
    write_rules(rules_file, "version: 1\nrules:\n  - name: broken\n    do: dell\n")
    out = k.run("kept_a = 1")
    assert (f"memtamer: {rules_file} was not loaded (the rules from {rules_file} stay in force):\n"
            f"  {rules_file}:4:9: do: unknown value 'dell': did you mean 'del'?") in out["stdout"]
    assert "memtamer rule keep-me: kept_a is" in out["stdout"]
    out = k.run("%memrules")
    assert "keep-me: after each cell when created or rebound by the cell -> notice" in out["stdout"]


def test_top_level_budget_and_notice_apply_like_the_magics(k, rules_file):
    write_rules(rules_file, "version: 1\nbudget: 50%\nnotice: 8MiB\nrules: []\n")
    k.run("pass")
    try:
        assert k.query("memtamer.budget()['percent']") == 50.0
        out = k.run("notice_a = np.ones(2 * 2**20)  # 16 MiB")
        # The heavy-cell notice, now from 8 MiB (16 MiB plus what numpy rounds up).
        assert re.match(rf"cell {out['execution_count']}: peak \+1[67] MiB", out["stdout"])
    finally:
        k.run("%memguard default")
        k.run("%memtamer --notice 512MiB")


def test_bad_file_at_load_leaves_the_extension_measuring(tmp_path):
    bad = tmp_path / "memtamer.yaml"
    bad.write_text("version: 1\nrules:\n  - name: x\n    do: del\n")
    kernel = Kernel(env={"MEMTAMER_RULES": str(bad)})
    try:
        out = kernel.run("%load_ext memtamer")
        assert out["stdout"].startswith(f"memtamer: {bad} was not loaded (no rules in force):\n"
                                        f"  {bad}:4:9: do: del deletes variables for good")
        kernel.run("x = bytearray(50 * 2**20)")
        assert kernel.last_cell()["retained"] > 40 * MiB
        # %memrules says why, where: the file's error, not "write memtamer.yaml"
        lines = kernel.run("%memrules")["stdout"].splitlines()
        assert lines[0] == ("memtamer: the rules file was not loaded because of these errors; "
                            "fix them and it is read again after the next cell:")
        assert lines[1].startswith(f"  {bad}:4:9: do: del deletes variables for good")
        assert lines[2:] == ["memtamer: no rules in force"]
        out = kernel.run(f"%memrules check {bad}")
        assert out["stdout"].startswith(f"{bad}:4:9: do: del deletes")
        write_rules(bad, "version: 1\nrules: []\n")  # fixed: picked up between cells
        out = kernel.run("pass")
        assert f"memtamer: rules from {bad} (0 rules)" in out["stdout"]
        assert kernel.run("%memrules")["stdout"] == f"memtamer: rules from {bad}\n"
        # a bad edit of the file in force: its error, and the rules that stay
        write_rules(bad, "version: 1\nrules: [\n")
        kernel.run("pass")
        out = kernel.run("%memrules")["stdout"].splitlines()
        assert out[0].startswith("memtamer: the rules file was not loaded")
        assert out[1].startswith(f"  {bad}:3:1: ") and out[-1] == f"memtamer: rules from {bad}"
    finally:
        kernel.shutdown()


def test_discovery_order(tmp_path, monkeypatch):
    home = tmp_path / "home"
    project = home / "project" / "sub"
    project.mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    env = {"XDG_CONFIG_HOME": str(tmp_path / "xdg")}
    assert discover(project, env) is None
    (tmp_path / "memtamer.yaml").write_text("")  # above home: never searched
    assert discover(project, env) is None
    xdg = tmp_path / "xdg" / "memtamer" / "rules.yaml"
    xdg.parent.mkdir(parents=True)
    xdg.write_text("")
    assert discover(project, env) == str(xdg)
    (home / ".memtamer.yaml").write_text("")
    assert discover(project, env) == str(home / ".memtamer.yaml")
    (home / "project" / "memtamer.yaml").write_text("")
    assert discover(project, env) == str(home / "project" / "memtamer.yaml")
    assert discover(project, dict(env, MEMTAMER_RULES="/elsewhere.yaml")) == "/elsewhere.yaml"


def test_no_rules_file_then_one_found_by_reload(tmp_path):
    home = tmp_path / "home"
    project = home / "project"
    project.mkdir(parents=True)
    env = {"HOME": str(home), "XDG_CONFIG_HOME": str(tmp_path / "xdg"), "MEMTAMER_RULES": ""}
    kernel = Kernel(env=env, cwd=str(project))
    try:
        out = kernel.run("%load_ext memtamer")
        assert besides_loaded(out["stdout"]) == "" and "failed" not in out["stderr"]
        assert "no rules file" in out["stdout"]
        assert kernel.run("%memrules")["stdout"].startswith("memtamer: no rules in force")
        out = kernel.run("%memrules reload")
        assert out["stdout"] == ("memtamer: no rules file (set $MEMTAMER_RULES or write "
                                 "memtamer.yaml); no rules in force\n")
        (project / "memtamer.yaml").write_text("version: 1\nrules: []\n")
        out = kernel.run("%memrules reload")
        assert out["stdout"] == f"memtamer: rules from {project / 'memtamer.yaml'} (0 rules)\n"
    finally:
        kernel.shutdown()


def test_a_budget_below_what_the_kernel_uses_is_refused_whole(k, rules_file):
    write_rules(rules_file, """\
        version: 1
        rules:
          - name: keep-q
            when: {created: true}
            match: {name: "q*"}
            do: notice
        """)
    k.run("pass")
    budget = k.query("memtamer.budget()")
    # An edit that also brings a budget the kernel is already past: the
    # guard refuses the budget, so nothing of the file applies, not its del.
    write_rules(rules_file, """\
        version: 1
        budget: 20MiB
        rules:
          - name: drop-q
            when: {created: true}
            match: {name: "q*"}
            do: del
            allow_delete: true
        """)
    out = k.run("q1 = 1\nq2 = 2")
    refusal = (f"{rules_file}:2:9: budget: cannot set the memory budget to 20 MiB: it is "
               "not above what the kernel already uses: give a larger budget, or free memory first")
    assert (f"memtamer: {rules_file} was not loaded (the rules from {rules_file} stay in force):\n"
            f"  {refusal}") in out["stdout"]
    assert "memtamer rule keep-q: q1 is" in out["stdout"]
    assert k.query("[name in globals() for name in ('q1', 'q2')]") == [True, True]
    after = k.query("memtamer.budget()")
    assert (after["mode"], after["budget"]) == (budget["mode"], budget["budget"])
    assert "keep-q: after each cell" in k.run("%memrules")["stdout"]
    # %memrules check says what loading it says.
    assert k.run(f"%memrules check {rules_file}")["stdout"].startswith(refusal)
    # Refused once, said once; retried when the file changes again.
    assert "was not loaded" not in k.run("q3 = 3")["stdout"]
    write_rules(rules_file, "version: 1\nrules: []\n")
    assert f"memtamer: rules from {rules_file} (0 rules)" in k.run("pass")["stdout"]


def test_a_rules_path_that_is_a_fifo_neither_blocks_the_load_nor_a_cell(tmp_path):
    fifo = tmp_path / "memtamer.yaml"
    os.mkfifo(fifo)  # no writer: reading it would wait forever
    kernel = Kernel(env={"MEMTAMER_RULES": str(fifo)})
    try:
        out = kernel.run("%load_ext memtamer", timeout=120)
        assert out["stdout"].startswith(
            f"memtamer: {fifo} was not loaded (no rules in force):\n"
            f"  {fifo}: is a named pipe (FIFO), not a file: name the rules file itself")
        assert kernel.run(f"%memrules check {fifo}", timeout=120)["stdout"].startswith(
            f"{fifo}: is a named pipe (FIFO)")
        kernel.run("x = 1", timeout=120)
    finally:
        kernel.shutdown()


@pytest.mark.parametrize("action", ["compress", "spill"])
def test_no_write_of_a_python_thread_is_lost_by_a_rule(k, rules_file, action):
    name = f"written_{action}"
    write_rules(rules_file, f"""\
        version: 1
        rules:
          - name: {action}-written
            when: {{created: true}}
            match: {{name: {name}}}
            do: {action}
        """)
    out = k.run(writer_thread(name))  # the rule acts while the thread writes
    [line] = rule_lines(out)
    assert line.startswith(f"memtamer rule {action}-written: {PAST_TENSE[action]} {name} 64 MiB -> ")
    writes, total = stop_writer(k, name)
    assert total == writes > 0
    write_rules(rules_file, "version: 1\nrules: []\n")
    k.run(f"del {name}")


STOP_MODULE = """\
\"\"\"Pickling a Stop the second time is Ctrl-C: the first is compress's check.\"\"\"
import os
import signal

calls = 0


class Stop:
    def __reduce__(self):
        global calls
        calls += 1
        if calls == 2:
            os.kill(os.getpid(), signal.SIGINT)
        return (Stop, ())
"""


def test_ctrl_c_during_a_rules_action_is_one_line_and_logged(k, rules_file, tmp_path):
    (tmp_path / "pickling_stops.py").write_text(STOP_MODULE)
    k.run(f"import sys\nsys.path.insert(0, {str(tmp_path)!r})\nfrom pickling_stops import Stop")
    write_rules(rules_file, """\
        version: 1
        rules:
          - name: compress-ki
            when: {created: true}
            match: {name: "ki_*"}
            order: largest
            do: compress
          - name: notice-ki
            when: {created: true}
            match: {name: "ki_*"}
            do: notice
        """)
    out = k.run("ki_big = np.zeros(2**21)\nki_mid = [b'0' * 2**22, Stop()]\n"
                "ki_small = np.zeros(2**18)")
    assert "Error in callback" not in out["stdout"] + out["stderr"]
    assert "Traceback" not in out["stdout"] + out["stderr"]
    assert out["error"] is None
    [line] = [l for l in out["stdout"].splitlines()
              if l.startswith("memtamer") and not l.startswith("memtamer: rules from")]
    assert line.startswith("memtamer rule compress-ki: Ctrl-C during compress ki_mid: ki_mid left "
                           "as it was; ki_small not acted on; before it: compressed ki_big "
                           "16 MiB -> "), line
    assert line.endswith("; not run after this cell: notice-ki"), line
    assert k.query("type(ki_mid).__name__") == "list"
    assert k.query("[len(ki_mid[0]), type(ki_mid[1]).__name__]") == [2**22, "Stop"]
    assert k.query("type(ki_small).__name__") == "ndarray"
    logged = [(a["name"], a["status"], a["reason"]) for a in actions_of(k, "compress-ki")]
    assert logged[0][:2] == ("ki_big", "done")
    assert logged[1:] == [("ki_mid", "interrupted", "ki_mid left as it was; ki_small not acted on")]
    assert actions_of(k, "notice-ki") == []
    report = k.run("%memreport actions")["stdout"]
    assert "rule compress-ki: Ctrl-C during compress ki_mid: ki_mid left as it was; ki_small " \
           "not acted on" in report, report
    write_rules(rules_file, "version: 1\nrules: []\n")
    k.run("del ki_big, ki_mid, ki_small")


def test_pack_reports_the_size_a_dry_run_shows(k, rules_file):
    write_rules(rules_file, """\
        version: 1
        rules:
          - name: pack-pk
            when: {created: true}
            match: {name: "pk_*"}
            order: largest
            do: pack
        """)
    # pk_copy holds the very floats pk_list holds: packed first, pk_list
    # frees only its pointers, and still was its deep size before.
    make = ("import sys\npk_list = [float(i) for i in range(200_000)]\npk_copy = list(pk_list)\n"
            "deep = {n: sys.getsizeof(v) + sum(map(sys.getsizeof, v)) "
            "for n, v in [('pk_list', pk_list), ('pk_copy', pk_copy)]}")
    k.run("%memrules off")
    k.run(make)
    dry = k.query("memtamer.shrink('pack', 'pk_list', dry_run=True)['pk_list']")
    assert dry["bytes_before"] == k.query("deep['pk_list']")
    k.run("del pk_list, pk_copy\n%memrules on")
    out = k.run(make)
    [line] = rule_lines(out)
    logged = {a["name"]: a for a in actions_of(k, "pack-pk")}
    deep = k.query("deep")
    assert logged["pk_list"]["bytes_before"] == deep["pk_list"] == dry["bytes_before"]
    assert logged["pk_copy"]["bytes_before"] == deep["pk_copy"]
    # Its floats stayed, held by pk_copy: what it freed is said.
    assert logged["pk_list"]["reason"].startswith("4.6 MiB of its items are also held elsewhere "
                                                  "and stay in memory: packing frees ")
    assert logged["pk_copy"]["reason"] == ""
    assert "pk_list 6.1 MiB -> 1.5 MiB" in line, line
    write_rules(rules_file, "version: 1\nrules: []\n")
    k.run("del pk_list, pk_copy")
