"""No memory errors and no leaks from memtamer's C code: valgrind for C-level
errors and definite leaks, Python's own block count for reference leaks.
Both run tests/leakcheck_core.py, which calls every entry point of _core."""

import ast
import os
import re
import subprocess
import sys

from memtamer import _core

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "leakcheck_core.py")
SOURCES = os.path.join(HERE, "..", "kernelext")


def _entry_points():
    return {name for name in dir(_core) if not name.startswith("__")
            and callable(getattr(_core, name)) and not isinstance(getattr(_core, name), type)}


def test_leakcheck_names_every_entry_point():
    tree = ast.parse(open(SCRIPT).read())
    calls = next(node.value for node in tree.body if isinstance(node, ast.Assign)
                 and getattr(node.targets[0], "id", None) == "calls")
    named = {key.value for key in calls.keys}
    assert named == _entry_points(), "leakcheck_core.calls must name exactly _core's entry points"


def test_no_python_reference_leaks():
    """A leaked reference or object per call grows Python's allocated blocks
    by at least one per round, in every run of rounds; caches that settle
    (a table doubling once) stay well under half of that."""
    rounds = 400
    result = subprocess.run([sys.executable, SCRIPT, str(rounds)], capture_output=True,
                            text=True, timeout=600)
    assert "leakcheck done" in result.stdout, result.stderr
    growth = ast.literal_eval(result.stdout.split("growth ", 1)[1].splitlines()[0])
    leaking = {group: blocks for group, blocks in growth.items() if blocks > rounds // 2}
    assert not leaking, f"allocated blocks grew over {rounds} rounds: {leaking}"


def _our_frame():
    """A valgrind frame in memtamer's C code: by object file when built without
    debug information, by source file when built with it."""
    files = "|".join(re.escape(f) for f in sorted(os.listdir(SOURCES)) if f.endswith(".c"))
    return re.compile(rf"memtamer/_core\.|\((?:{files}):\d+\)")


def test_core_under_valgrind(tmp_path):
    log = tmp_path / "valgrind.log"
    env = dict(os.environ, PYTHONMALLOC="malloc")  # so valgrind sees every Python block
    result = subprocess.run(
        ["valgrind", "--leak-check=full", "--errors-for-leak-kinds=definite",
         "--show-leak-kinds=definite", f"--log-file={log}", "--num-callers=40",
         sys.executable, SCRIPT, "3"],
        capture_output=True, text=True, env=env, timeout=900,
    )
    assert "leakcheck done" in result.stdout, result.stderr
    text = log.read_text()
    assert "ERROR SUMMARY" in text, "valgrind did not finish its report"
    # Each error record is a block of lines; keep those that pass through our code.
    ours = _our_frame()
    records = re.split(r"\n==\d+== \n", text)
    found = [r for r in records if ours.search(r) and ("Invalid" in r or "uninitialised" in r
                                                       or "definitely lost" in r)
             and not kept_by_python(r)]
    assert not found, "\n\n".join(found)


def kept_by_python(record):
    """From 3.12 PyDict_SetItemString interns its key as an immortal string,
    which CPython never frees: valgrind calls it lost, and our allocator hook
    is in its stack."""
    return (sys.version_info >= (3, 12) and "definitely lost" in record
            and re.search(r"PyUnicode_New .*\n.*unicode_decode_utf8 .*\n.*PyDict_SetItemString ",
                          record) is not None)


def test_frame_pattern_matches_both_builds():
    ours = _our_frame()
    assert ours.search("==1==    by 0x4E5: ??? (in /x/site-packages/memtamer/_core.cpython-311.so)")
    assert ours.search("==1==    by 0x4E5: walk (walker.c:212)")
    assert not ours.search("==1==    by 0x4E5: PyObject_Malloc (obmalloc.c:12)")
