"""The rules file parser (kernelext/rules.c): good documents load into the
table they say, bad ones are rejected whole with FILE:LINE:COL errors, and
nothing (random bytes, mutated YAML, alias bombs) crashes it."""

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memtamer import _core
from memtamer.rules import check, format_errors

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MiB, GiB = 1024**2, 1024**3

GOOD = textwrap.dedent("""\
    version: 1
    budget: 80%
    notice: 512MiB
    protect: [model, cfg_*]
    rules:
      - name: compress-idle-arrays
        when: {idle_for: 3}
        match: {type: ndarray, min_size: 256MiB}
        do: compress
        codec: zstd
        level: 7
      - name: spill-when-high
        when:
          memory_above: 80%
          until: 70%
        match: {type: [ndarray, DataFrame], dtype: float64}
        order: idle
        do: spill
        max_per_cell: 2
        cooldown: 3
      - name: drop-big-outputs
        match: {min_size: 100MiB}
        do: clear_output_cache
      - name: shrink-new-frames
        when: {created: true}
        match: {type: DataFrame, name: "df_*"}
        do: downcast
        rtol: 1e-4
        to: float32
      - name: delete-scratch
        when: {cell_peak: 2GiB, cell_retained: 1.5G}
        match: {name: [tmp_*, scratch]}
        do: del
        allow_delete: true
      - name: warn
        when: {memory_above: 2GiB}
        do: notice
      - name: tidy
        when: {cell_retained: 500MB}
        do: collect
      - name: big-workers
        when: {children_over: 4GiB}
        do: notice
      - name: restart-workers
        when: {children_over: 6GiB}
        match: {name: client}
        do: restart
    """)


def load(text):
    return _core.rules_check(text.encode() if isinstance(text, str) else text)


def at(text, needle):
    """(line, column), 1-based, of needle, which occurs once in text."""
    assert text.count(needle) == 1, needle
    index = text.index(needle)
    line = text.count("\n", 0, index) + 1
    return line, index - (text.rfind("\n", 0, index) + 1) + 1


@pytest.fixture
def no_rules():
    yield
    _core.rules_clear()


def test_good_document_loads_into_the_table_it_says(no_rules):
    assert _core.rules_load(GOOD.encode()) == []
    table = _core.rules_table()
    assert table["version"] == 1
    assert table["budget"] == ("percent", 80.0)
    assert table["notice"] == ("bytes", 512 * MiB)
    assert table["protect"] == ["model", "cfg_*"]
    rules = {r["name"]: r for r in table["rules"]}
    assert list(rules) == ["compress-idle-arrays", "spill-when-high", "drop-big-outputs",
                           "shrink-new-frames", "delete-scratch", "warn", "tidy", "big-workers",
                           "restart-workers"]
    r = rules["compress-idle-arrays"]
    assert (r["line"], r["when"], r["match"], r["do"], r["options"], r["order"],
            r["max_per_cell"], r["cooldown"]) == (
        at(GOOD, "name: compress")[0], {"idle_for": 3}, {"type": ["ndarray"], "min_size": 256 * MiB},
        "compress", {"codec": "zstd", "level": 7}, "largest", 4, 0)
    r = rules["spill-when-high"]
    assert r["when"] == {"memory_above": ("percent", 80.0), "until": ("percent", 70.0)}
    assert r["match"] == {"type": ["ndarray", "DataFrame"], "dtype": ["float64"]}
    assert (r["order"], r["max_per_cell"], r["cooldown"]) == ("idle", 2, 3)
    assert rules["drop-big-outputs"]["match"] == {"min_size": 100 * MiB}
    assert rules["shrink-new-frames"]["options"] == {"rtol": 1e-4, "to": "float32"}
    assert rules["shrink-new-frames"]["when"] == {"created": True}
    r = rules["delete-scratch"]
    assert r["when"] == {"cell_peak": 2 * GiB, "cell_retained": int(1.5 * GiB)}
    assert r["match"] == {"name": ["tmp_*", "scratch"]} and r["allow_delete"] is True
    assert rules["warn"]["when"] == {"memory_above": ("bytes", 2 * GiB)}
    assert rules["tidy"]["when"] == {"cell_retained": 500 * 1000**2}
    assert rules["big-workers"]["when"] == {"children_over": 4 * GiB}
    r = rules["restart-workers"]
    assert (r["when"], r["match"], r["do"]) == ({"children_over": 6 * GiB}, {"name": ["client"]},
                                                "restart")


# Each bad document, the text its error points at, and words of the message.
BAD = [
    ("version: 1\nrules:\n  - name: a\n    wehn: {idle_for: 2}\n    do: compress\n",
     "wehn", "unknown key 'wehn' in a rule: did you mean 'when'?"),
    ("version: 1\nrules:\n  - name: a\n    do: compres\n", "compres", "did you mean 'compress'?"),
    ("version: 1\nrules:\n  - name: a\n    match: {min_sise: 1MiB}\n    do: spill\n",
     "min_sise", "did you mean 'min_size'?"),
    ("version: 1\nrulez: []\n", "rulez", "did you mean 'rules'?"),
    ("version: 1\nrules:\n  - name: a\n    do: spill\n    max_per_cell: lots\n", "lots",
     "max_per_cell: 'lots' is not a whole number"),
    ("version: 1\nrules:\n  - name: a\n    do: spill\n    match: {min_size: [1, 2]}\n", "[1, 2]",
     "min_size: expected a size such as 256MiB, not a list"),
    ("version: 1\nrules:\n  - name: a\n    do: spill\n    match: {min_size: 12 parsecs}\n",
     "12 parsecs", "min_size: '12 parsecs' is not a size"),
    ("version: 1\nrules:\n  - name: a\n    do: compress\n    level: 12\n", "12",
     "level: '12' is not a whole number from 0 (fastest) to 9 (smallest)"),
    ("version: 1\nbudget: 180%\n", "180%", "budget: '180%' is not a share of memory"),
    ("version: 1\nnotice: lots\n", "lots", "notice: 'lots' is not a size"),
    ("version: 1\nrules:\n  - name: a\n    do: downcast\n    rtol: -1\n", "-1",
     "rtol: '-1' is not a number >= 0"),
    ("version: 2\n", "2", "version: 2 is out of range"),
    ("budget: 80%\n", "budget", "version is missing: write version: 1"),
    ("version: 1\nrules:\n  - name: a\n    do: notice\n  - name: a\n    do: collect\n",
     "name: a\n    do: collect", "duplicate rule name 'a' (first at line 3)"),
    ("version: 1\nrules:\n  - name: a\n    do: notice\n    do: collect\n", "do: collect",
     "duplicate key 'do' in a rule (first at line 4)"),
    ("version: 1\nrules:\n  - name: a\n    when: {memory_above: 70%, until: 80%}\n    do: spill\n",
     "80%", "until: the rule can never fire"),
    ("version: 1\nrules:\n  - name: a\n    when: {created: true, idle_for: 2}\n    do: spill\n",
     "2}", "idle_for: the rule can never fire"),
    ("version: 1\nprotect: [model]\nrules:\n  - name: a\n    match: {name: model}\n    do: spill\n",
     "{name", "match: the rule can never fire: every name it matches is in protect"),
    ("version: 1\nrules:\n  - name: a\n    until: 3\n    do: spill\n", "until",
     "unknown key 'until' in a rule"),
    ("version: 1\nrules:\n  - name: a\n    when: {until: 70%}\n    do: spill\n", "70%",
     "until: only goes with memory_above"),
    ("version: 1\nrules:\n  - name: a\n    do: del\n", "del",
     "do: del deletes variables for good: add allow_delete: true"),
    ("version: 1\nrules:\n  - name: a\n    do: spill\n    codec: zstd\n", "zstd",
     "codec: applies to do: compress, not do: spill"),
    ("version: 1\nrules:\n  - name: a\n    do: compress\n    codec: brotli\n", "brotli",
     "codec: 'brotli' is not a codec here"),
    ("version: 1\nrules:\n  - name: a\n    do: downcast\n    to: int3\n", "int3",
     "to: 'int3' is not a type to downcast to: use auto, float32,"),
    ("version: 1\nrules:\n  - name: a\n    do: collect\n    match: {min_size: 1MiB}\n", "{min",
     "match: do: collect acts on the whole kernel; remove match"),
    ("version: 1\nrules:\n  - do: spill\n", "do: spill", "this rule has no name"),
    ("version: 1\nrules:\n  - name: a\n", "name: a", "this rule has no do"),
    ("version: 1\nrules:\n  - name: a\n    do: !!python/object:os.system spill\n", "!!python",
     "is not allowed: a rules file holds plain values"),
    ("version: 1\nrules: [\n", "", "YAML syntax:"),
    ("version: 1\nrules:\n  - name: a\n   do: spill\n", "do", "YAML syntax:"),
    ("version: 1\n---\nversion: 1\n", "---", "a second document starts here"),
    ("", "", "the file is empty"),
    ("- version: 1\n", "- version", "the file must be a mapping"),
    # A NUL ends a C string: "budget\0zzz" must not be read as budget, nor two
    # names that differ after one as the same name.
    ('version: 1\n"budget\\0zzz": 1GiB\n', '"budget', "the key 'budget\\0...' at the top holds a NUL"),
    ('version: 1\nrules:\n  - {name: "n\\0ame", do: collect}\n', '"n', "name: the value holds a NUL"),
    ('version: 1\nprotect: ["a\\x00b"]\n', '"a', "protect: the value holds a NUL"),
    # Zero would refuse every allocation.
    ("version: 1\nbudget: 0\n", "0", "budget: a budget of 0 bytes would refuse every allocation"),
    ("version: 1\nbudget: 0 MiB\n", "0 MiB", "budget: a budget of 0 bytes"),
    # del with nothing to say which variables: every one, after every cell.
    ("version: 1\nrules:\n  - {name: a, do: del, allow_delete: true}\n", "del,",
     "do: del with no name or type in match: would delete every variable"),
    ("version: 1\nrules:\n  - {name: a, do: del, allow_delete: true, match: {}}\n", "{}",
     "do: del with no name or type in match"),
    ("version: 1\nrules:\n  - {name: a, do: del, allow_delete: true, match: {min_size: 1MiB}}\n",
     "{min", "do: del with no name or type in match"),
    ("version: 1\nrules:\n  - {name: a, do: del, allow_delete: true, match: {name: []}}\n", "[]",
     "name: an empty list names nothing"),
    ("version: 1\nrules:\n  - {name: a, do: spill, match: {type: []}}\n", "[]",
     "type: an empty list names nothing"),
    # Text where a number or a truth value belongs.
    ('version: "1"\n', '"1"', "version: '1' is quoted, which makes it text, not a whole number"),
    ("version: '1'\n", "'1'", "version: '1' is quoted"),
    ("version: 1\nrules:\n  - {name: a, do: spill, when: {idle_for: \"3\"}}\n", '"3"',
     "idle_for: '3' is quoted"),
    ("version: 1\nrules:\n  - {name: a, do: spill, max_per_cell: '2'}\n", "'2'",
     "max_per_cell: '2' is quoted"),
    ("version: 1\nrules:\n  - {name: a, do: compress, level: \"5\"}\n", '"5"', "level: '5' is quoted"),
    ("version: 1\nrules:\n  - {name: a, do: downcast, rtol: '0.1'}\n", "'0.1'", "rtol: '0.1' is quoted"),
    ("version: 1\nrules:\n  - {name: a, do: del, allow_delete: 'true', match: {name: x}}\n",
     "'true'", "allow_delete: 'true' is quoted, which makes it text, not true or false"),
    # Less than a byte is no size.
    ("version: 1\nrules:\n  - {name: a, do: spill, match: {min_size: 0.5B}}\n", "0.5B",
     "min_size: '0.5B' is less than one byte"),
    ("version: 1\nrules:\n  - {name: a, do: notice, when: {cell_peak: 0.25}}\n", "0.25",
     "cell_peak: '0.25' is less than one byte"),
    # Children are only named by a notice, never acted on by a rule.
    ("version: 1\nrules:\n  - {name: a, do: compress, when: {children_over: 1GiB}}\n", "compress",
     "do: children_over is about child processes, which memtamer never kills: write do: notice, "
     "or do: restart"),
    ("version: 1\nrules:\n  - {name: a, do: restart, match: {name: client}}\n", "restart",
     "do: restart restarts the workers of a pool or cluster you name once the child processes "
     "grow: write when: {children_over: SIZE} and match: {name: client}"),
    ("version: 1\nrules:\n  - {name: a, do: restart, when: {children_over: 1GiB}}\n", "restart",
     "do: restart restarts the workers"),
    ("version: 1\nrules:\n  - {name: a, do: restart, when: {children_over: 1GiB, idle_for: 2}, "
     "match: {name: c}}\n", "{children", "when: do: restart follows the child processes' memory"),
    ("version: 1\nrules:\n  - {name: a, do: notice, when: {children_over: 1GiB}, "
     "match: {name: pool}}\n", "{name: pool", "match: a children_over notice names the child "
     "processes, not variables"),
    ("version: 1\nrules:\n  - {name: a, do: notice, when: {children_over: 1GiB, created: true}}\n",
     "{children", "when: a children_over notice names the child processes"),
    ("version: 1\nrules:\n  - {name: a, do: notice, when: {children_over: lots}}\n", "lots",
     "children_over: 'lots' is not a size"),
    # Spill directories: named from the rules file's directory, never out of it.
    ("version: 1\nrules:\n  - {name: a, do: spill, dir: ../escape}\n", "../escape",
     "dir: '../escape' climbs out of the rules file's directory"),
    ("version: 1\nrules:\n  - {name: a, do: spill, dir: in/../../escape}\n", "in/",
     "dir: 'in/../../escape' climbs out"),
    ("version: 1\nrules:\n  - {name: a, do: spill, dir: ~/spill}\n", "~/spill",
     "dir: '~' is not expanded here: write the full path"),
    # Checkpoints: spill's own keys, kept in the notebook's store only.
    ("version: 1\nrules:\n  - {name: a, do: compress, keep_in_memory: true}\n", "true",
     "keep_in_memory: applies to do: spill, not do: compress"),
    ("version: 1\nrules:\n  - {name: a, do: pack, keep_for_reattach: true}\n", "true",
     "keep_for_reattach: applies to do: spill, not do: pack"),
    ("version: 1\nrules:\n  - {name: a, do: spill, keep_for_reattach: yes}\n", "yes",
     "keep_for_reattach: "),
    ("version: 1\nrules:\n  - {name: a, do: spill, dir: /, keep_for_reattach: true}\n", "/,",
     "dir: a spill there goes with the kernel, so keep_for_reattach: true keeps nothing"),
]


@pytest.mark.parametrize("text,where,words", BAD, ids=[b[2][:40] for b in BAD])
def test_each_error_says_where_and_what_to_write(text, where, words, no_rules):
    errors = load(text)
    assert errors, "the document must be rejected"
    line, column, message = errors[0]
    assert words in message
    if where == "" and "syntax" in words:  # an unclosed list: libyaml sees it at the end
        assert line >= 2
    elif where == "":
        assert (line, column) == (1, 1)
    elif words.startswith("YAML syntax") and where == "do":
        assert line == 4  # the misindented key
    else:
        assert (line, column) == at(text, where), message


def test_syntax_error_position_is_libyamls_mark_made_human():
    text = "version: 1\nrules:\n  - name: 'unterminated\n"
    [(line, column, message)] = load(text)
    # libyaml's marks are 0-based; the error must be 1-based.
    assert line >= 3 and column >= 1 and "YAML syntax" in message


def test_file_errors_read_as_compilers_write_them(tmp_path):
    path = tmp_path / "memtamer.yaml"
    path.write_text("version: 1\nrules:\n  - name: a\n    do: spil\n")
    assert check(str(path)) == [f"{path}:4:9: do: unknown value 'spil': did you mean 'spill'? "
                                "(use one of notice, compress, spill, downcast, pack, "
                                "clear_output_cache, del, collect, restart)"]
    assert format_errors("f", [(0, 0, "whole file")]) == ["f: whole file"]
    assert check(str(tmp_path / "missing.yaml"))[0].endswith("cannot read it: No such file or directory")


def test_python_m_memtamer_check_exit_status(tmp_path):
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text(GOOD)
    bad.write_text("version: 1\nrules:\n  - name: a\n    do: del\n")
    ok = subprocess.run([sys.executable, "-m", "memtamer", "check", str(good)],
                        capture_output=True, text=True, cwd=tmp_path)
    assert (ok.returncode, ok.stdout) == (0, f"{good}: ok\n")
    failed = subprocess.run([sys.executable, "-m", "memtamer", "check", str(good), str(bad)],
                            capture_output=True, text=True, cwd=tmp_path)
    assert failed.returncode == 1
    assert failed.stdout.splitlines()[1].startswith(f"{bad}:4:9: do: del deletes variables")


def cap_memory():
    """In a child: 1 GiB of address space, so a reader that reads without
    bound fails fast instead of taking the machine's memory."""
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (GiB, GiB))


def test_only_a_regular_file_is_read_never_waited_on_nor_read_whole(tmp_path):
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)  # no writer: opening it to read would wait forever
    directory = tmp_path / "dir.yaml"
    directory.mkdir()
    huge = tmp_path / "huge.yaml"  # 8 GiB, sparse: reading it whole cannot fit the child
    with open(huge, "wb") as f:
        f.truncate(8 * GiB)
    paths = [str(fifo), "/dev/zero", str(directory), str(huge)]
    ran = subprocess.run([sys.executable, "-m", "memtamer", "check", *paths], capture_output=True,
                         text=True, cwd=tmp_path, timeout=120, preexec_fn=cap_memory)
    assert (ran.returncode, ran.stderr) == (1, "")
    assert ran.stdout.splitlines() == [
        f"{fifo}: is a named pipe (FIFO), not a file: name the rules file itself",
        "/dev/zero: is a device, not a file: name the rules file itself",
        f"{directory}: is a directory: name the rules file in it",
        f"{huge}:1:1: the file is more than {MiB} bytes; a rules file is a few KiB: is this the right "
        "file?"]


def test_deep_nesting_is_refused_where_it_passes_the_bound_before_it_is_loaded():
    # libyaml's work grows with the square of the depth (100,000 levels took
    # 16 s); the refusal comes at the first level past the bound.
    for opener, inner, closer in (("[", "1", "]"), ("{a: ", "1", "}")):
        text = "a: " + opener * 100_000 + inner + closer * 100_000
        [(line, column, message)] = load(text)
        bound = int(re.search(r"nest more than (\d+) deep here", message).group(1))
        # The top mapping is the first level: the bound-th opener is one past it.
        assert (line, column) == (1, 4 + (bound - 1) * len(opener)), message
        assert message.endswith("a rules file needs at most 5 (the file, rules, a rule, its "
                                "match, a list of names); check the brackets")
    # The deepest a rules file goes loads: the file, rules, a rule, match, a list.
    assert load("version: 1\nrules:\n  - {name: a, do: spill, match: {name: [x, y]}}\n") == []


def rules_in(directory, spill_dir):
    path = directory / "memtamer.yaml"
    path.write_text(f"version: 1\nrules:\n  - name: s\n    do: spill\n    dir: {spill_dir}\n")
    return str(path)


def test_spill_dir_starts_at_the_rules_files_directory_and_is_kept_absolute(tmp_path, no_rules,
                                                                             monkeypatch):
    project = tmp_path / "project"
    (project / "spill").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)  # elsewhere: the file's directory counts, not the working one
    path = rules_in(project, "spill")
    assert check(path) == []
    text = open(path, "rb").read()
    assert _core.rules_load(text, str(project)) == []
    assert _core.rules_table()["rules"][0]["options"] == {"dir": str((project / "spill").resolve())}
    # Without a directory, relative dirs start at the working directory.
    assert _core.rules_check(text)[0][2] == f"dir: {tmp_path}/spill does not exist: create it " \
                                            "(mkdir -p) or name a directory that exists"


def test_spill_dir_that_is_missing_not_a_directory_or_not_yours_is_refused(tmp_path):
    (tmp_path / "a-file").write_text("")
    others = tmp_path / "others"
    others.mkdir()
    if os.geteuid() == 0:
        os.chown(others, 65534, 65534)
    else:
        others = Path("/")
    cases = [("missing", f"dir: {tmp_path}/missing does not exist: create it (mkdir -p)"),
             ("a-file", f"dir: {tmp_path}/a-file is not a directory: name a directory"),
             (str(others), f"dir: {others} belongs to another user (uid {others.stat().st_uid}): "
                           "spill into a directory of your own"),
             # Not writable, even by root: a process's own /proc directory.
             ("/proc/self", "is not writable by you: name a directory you can write"),
             ("../escape", "dir: '../escape' climbs out of the rules file's directory")]
    for spill_dir, words in cases:
        [error] = check(rules_in(tmp_path, spill_dir))
        assert error.startswith(f"{tmp_path}/memtamer.yaml:5:10: dir: ") and words in error, error


def billion_laughs(levels=10, width=10):
    lines = ["version: 1", "protect: &l0 [" + ", ".join(["lol"] * width) + "]"]
    lines += [f"notice: &l{i} [" + ", ".join([f"*l{i - 1}"] * width) + "]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def test_alias_bomb_is_refused_not_expanded():
    # Written out, this document would be 10**10 strings; it must be refused at once.
    errors = load(billion_laughs())
    assert errors
    bomb = ("version: 1\nrules:\n  - &r {name: a, do: notice}\n"
            + "".join("  - *r\n" for _ in range(5)))
    assert "duplicate rule name 'a'" in load(bomb)[0][2]
    # Aliases count each time they are used: a wide fan-out hits the bound.
    fan = ("version: 1\nrules:\n  - {name: r0, do: spill, match: {name: &p ["
           + ", ".join(["x"] * 200) + "]}}\n"
           + "".join(f"  - {{name: r{i}, do: spill, match: {{name: *p}}}}\n" for i in range(1, 600)))
    messages = [m for _, _, m in load(fan)]
    assert any("more than 100000 values" in m for m in messages)


def test_rejected_document_keeps_the_rules_in_force(no_rules):
    assert _core.rules_load(GOOD.encode()) == []
    before = _core.rules_table()
    assert _core.rules_load(b"version: 1\nrules:\n  - name: x\n    do: del\n")
    assert _core.rules_table() == before
    assert _core.rules_load(b"version: 1\nrules:\n  - {name: only, do: collect}\n") == []
    assert [r["name"] for r in _core.rules_table()["rules"]] == ["only"]


# ---- sizes: one parser for the magics and the rules, read as documented ----

# The units README documents: K/M/G/T and KiB.. binary, KB.. decimal, case ignored.
UNITS = {"": 1, "b": 1, "K": 1024, "kb": 1000, "KiB": 1024, "m": 1024**2, "MB": 1000**2,
         "MiB": 1024**2, "g": 1024**3, "GB": 1000**3, "GiB": 1024**3, "T": 1024**4,
         "tb": 1000**4, "TiB": 1024**4}


@given(st.integers(0, 10**6), st.sampled_from(["", ".5", ".25", "."]), st.sampled_from(list(UNITS)),
       st.sampled_from(["", " "]))
def test_sizes_read_as_documented(n, fraction, unit, space):
    text = f"{n}{fraction}{space}{unit}"
    exact = float(f"{n}{fraction}") * UNITS[unit]
    if 0 < exact < 1:  # half a byte is no size: refused, not read as 0
        for parse in (_core.parse_size, _core.parse_level):
            with pytest.raises(ValueError, match=f"'{text}' is less than one byte"):
                parse(text)
        return
    assert _core.parse_size(text) == int(exact)
    assert _core.parse_level(text) == ("bytes", int(exact))


@pytest.mark.parametrize("text", ["12 parsecs", "MiB", "1.5 MiBs", "1e9", "-1GiB", "80%"])
def test_what_is_not_a_size_is_refused_with_the_text_named(text):
    with pytest.raises(ValueError, match=f"'{text}' is"):
        _core.parse_size(text)


@given(st.floats(0, 200, allow_nan=False))
def test_percentages_above_0_and_at_most_100_are_shares(percent):
    text = f"{percent:.3f}%"
    if 0 < float(text[:-1]) <= 100:
        assert _core.parse_level(text) == ("percent", float(text[:-1]))
    else:
        with pytest.raises(ValueError, match="is not a share of memory"):
            _core.parse_level(text)


# ---- never crashes, always loads or rejects whole ------------------------

LINES = GOOD.splitlines(keepends=True)
FRAGMENTS = ["&a ", "*a", "!!str ", "!!python/object ", "- ", ": ", "{", "}", "[", "]", "'", '"',
             "\t", "#", "---\n", "...\n", "%YAML 1.1\n", "\x00", "\xff", "é", "   ", "\n", "?", "|",
             ">", "@", "`", "version: 1\n", "-1", "1e999", "99999999999999999999MiB", "nan%"]


@st.composite
def mutated_documents(draw):
    lines = list(LINES)
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["drop", "duplicate", "insert", "swap", "indent"]))
        i = draw(st.integers(0, len(lines) - 1))
        if kind == "drop" and len(lines) > 1:
            del lines[i]
        elif kind == "duplicate":
            lines.insert(i, lines[i])
        elif kind == "insert":
            line = lines[i]
            j = draw(st.integers(0, len(line)))
            lines[i] = line[:j] + draw(st.sampled_from(FRAGMENTS)) + line[j:]
        elif kind == "swap":
            k = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[k] = lines[k], lines[i]
        else:
            lines[i] = " " * draw(st.integers(0, 5)) + lines[i].lstrip(" ")
    return "".join(lines).encode("utf-8", "surrogatepass")


def loads_or_rejects_whole(document):
    marker = b"version: 1\nrules:\n  - {name: marker, do: collect}\n"
    assert _core.rules_load(marker) == []
    errors = _core.rules_load(document)
    table = _core.rules_table()
    assert isinstance(errors, list)
    for line, column, message in errors:
        assert line >= 0 and column >= 0 and message
    if errors:
        assert [r["name"] for r in table["rules"]] == ["marker"]
    else:
        assert _core.rules_check(document) == []
    _core.rules_clear()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_documents())
def test_mutated_yaml_loads_or_is_rejected_whole(document):
    loads_or_rejects_whole(document)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes_never_crash(document):
    loads_or_rejects_whole(document)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("versionrulesdomatchwhen:-{}[]&*!, \n'\"0123456789%")),
               max_size=200))
def test_random_yaml_like_text_never_crashes(document):
    loads_or_rejects_whole(document.encode())


# ---- the same inputs under AddressSanitizer and UBSan --------------------

def corpus(directory):
    """The good and bad documents above, mutations and random bytes, as files."""
    import random

    rng = random.Random(10)
    documents = [GOOD.encode(), billion_laughs().encode()] + [b[0].encode() for b in BAD]
    documents.append(("version: 1\nrules:\n  - {name: r0, do: spill, match: {name: &p ["
                      + ", ".join(["x"] * 200) + "]}}\n"
                      + "".join(f"  - {{name: r{i}, do: spill, match: {{name: *p}}}}\n"
                                for i in range(1, 600))).encode())
    documents.append(b"[" * 5000 + b"]" * 5000)
    documents.append(b"a: " + b"{b: " * 3000 + b"1" + b"}" * 3000)
    for _ in range(400):
        lines = list(LINES)
        for _ in range(rng.randint(1, 6)):
            i = rng.randrange(len(lines))
            j = rng.randint(0, len(lines[i]))
            choice = rng.random()
            if choice < 0.4:
                lines[i] = lines[i][:j] + rng.choice(FRAGMENTS) + lines[i][j:]
            elif choice < 0.6 and len(lines) > 1:
                del lines[i]
            elif choice < 0.8:
                lines.insert(i, lines[i])
            else:
                lines[i] = lines[i][:j]
        documents.append("".join(lines).encode("utf-8", "surrogatepass"))
    for _ in range(200):
        documents.append(bytes(rng.randrange(256) for _ in range(rng.randint(0, 300))))
    paths = []
    for n, document in enumerate(documents):
        path = directory / f"doc{n:04d}.yaml"
        path.write_bytes(document)
        paths.append(str(path))
    return paths


@pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler")
def test_parser_under_address_and_undefined_behaviour_sanitizers(tmp_path):
    exe = tmp_path / "rules_driver"
    build = subprocess.run(
        ["cc", "-std=c11", "-g", "-O1", "-fsanitize=address,undefined", "-fno-sanitize-recover=all",
         "-fno-omit-frame-pointer", "-Wall", "-Wextra", "-Werror", "-I", os.path.join(ROOT, "include"),
         os.path.join(ROOT, "tests/c/rules_driver.c"), os.path.join(ROOT, "kernelext/rules.c"),
         os.path.join(ROOT, "kernelext/actions.c"),
         "-lyaml", "-lblosc", "-lm", "-o", str(exe)],
        capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    paths = corpus(tmp_path)
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:abort_on_error=0",
               UBSAN_OPTIONS="print_stacktrace=1")
    result = subprocess.run([str(exe)] + paths, capture_output=True, text=True, env=env, timeout=120)
    assert "Sanitizer" not in result.stderr and "runtime error" not in result.stderr, result.stderr[-3000:]
    assert result.returncode in (0, 1), result.stderr[-3000:]
    out = result.stdout.splitlines()
    assert f"{paths[0]}: ok 9" in out  # the good document loads in the driver too
    assert any(line.startswith(paths[1] + ":") and "ok" not in line for line in out)


def test_swap_and_thrashing_keys(no_rules):
    text = "version: 1\nswap: false\nthrashing: stop\nrules: []\n"
    assert _core.rules_load(text.encode()) == []
    table = _core.rules_table()
    assert table["swap"] is False and table["thrashing"] == "stop"
    assert _core.rules_load(b"version: 1\nrules: []\n") == []
    table = _core.rules_table()
    assert table["swap"] is None and table["thrashing"] is None


@pytest.mark.parametrize("line, says", [
    ("swap: no", "swap: 'no' is not true or false: write swap: true"),
    ("swap: [false]", "swap:"),
    ("thrashing: kill", "thrashing: 'kill' is neither stop (end a thrashing cell) nor warn"),
    ("thrashing: {stop: 1}", "thrashing:"),
    ("swaps: false", "swaps"),
])
def test_bad_swap_and_thrashing_values_are_refused_where_they_are(line, says):
    text = f"version: 1\n{line}\nrules: []\n"
    errors = load(text)
    assert errors and errors[0][0] == 2 and says in errors[0][2], errors


def test_a_checkpoint_rule_passes_its_keys_to_spill(no_rules):
    text = ("version: 1\nrules:\n  - name: ck\n    when: {idle_for: 2}\n    do: spill\n"
            "    keep_in_memory: true\n    keep_for_reattach: true\n"
            "  - {name: plain, do: spill, keep_in_memory: false}\n")
    assert _core.rules_load(text.encode()) == []
    rules = {r["name"]: r for r in _core.rules_table()["rules"]}
    assert rules["ck"]["options"] == {"keep_in_memory": True, "keep_for_reattach": True}
    assert rules["plain"]["options"] == {}
