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
             and not kept_by_python(r) and not read_by_the_collector(r)]
    assert not found, "\n\n".join(found)


def read_by_the_collector(record):
    """CPython's collector, run by an allocation of ours (gc_alloc when
    core_exec adds its functions), reading a value CPython left
    uninitialised in an object it visits (3.11 reports one, made by
    PyLong_FromString).  Our own traverse functions are above the
    collector in such a stack, so their reads still count."""
    if "uninitialised" not in record:
        return False
    frames = [line for line in record.splitlines() if " by 0x" in line or " at 0x" in line]
    collector = next((i for i, line in enumerate(frames) if "gc_collect_main " in line), None)
    ours = next((i for i, line in enumerate(frames) if _our_frame().search(line)), None)
    return collector is not None and ours is not None and collector < ours


def kept_by_python(record):
    """From 3.12 CPython interns strings as immortal objects and never frees
    them: the keys PyDict_SetItemString makes for our calls, and the names
    marshal reads for each imported module.  valgrind calls them lost, with
    our code in their stack: the caller of PyDict_SetItemString, or only our
    allocator hook right under PyUnicode_New.  A str our own code leaked
    shows a frame of ours above PyUnicode_New that is neither."""
    if sys.version_info < (3, 12) or "definitely lost" not in record:
        return False
    if re.search(r"PyUnicode_New .*\n.*unicode_decode_utf8 .*\n.*PyDict_SetItemString ",
                 record):
        return True
    frames = [line for line in record.splitlines() if " by 0x" in line or " at 0x" in line]
    ours = [i for i, line in enumerate(frames) if _our_frame().search(line)]
    return (len(ours) == 1 and ours[0] + 1 < len(frames)
            and "PyUnicode_New " in frames[ours[0] + 1])


def test_only_interned_strings_count_as_kept_by_python():
    head = ("==1== 43 bytes in 1 blocks are definitely lost in loss record 1 of 2\n"
            "==1==    at 0x1: malloc (in /usr/libexec/valgrind/vgpreload_memcheck.so)\n"
            "==1==    by 0x2: obj_malloc (in /x/site-packages/memtamer/_core.cpython-312.so)\n"
            "==1==    by 0x3: PyUnicode_New (unicodeobject.c:1251)\n")
    interned = head + "==1==    by 0x4: r_object (marshal.c:1158)\n"
    ours = head + ("==1==    by 0x5: PyUnicode_FromString (unicodeobject.c:2036)\n"
                   "==1==    by 0x6: describe_holder (ledger.c:812)\n")
    key = head + ("==1==    by 0x5: unicode_decode_utf8 (unicodeobject.c:4693)\n"
                  "==1==    by 0x6: PyDict_SetItemString (dictobject.c:3915)\n"
                  "==1==    by 0x7: mt_guard_status (in /x/site-packages/memtamer/_core.cpython-312.so)\n")
    unhooked_key = ("==1== 48 bytes in 1 blocks are definitely lost in loss record 2 of 2\n"
                    "==1==    at 0x1: malloc (in /usr/libexec/valgrind/vgpreload_memcheck.so)\n"
                    "==1==    by 0x3: PyUnicode_New (unicodeobject.c:1251)\n"
                    "==1==    by 0x5: unicode_decode_utf8 (unicodeobject.c:4693)\n"
                    "==1==    by 0x6: PyDict_SetItemString (dictobject.c:3915)\n"
                    "==1==    by 0x7: mt_telemetry_protocol (in /x/site-packages/memtamer/"
                    "_core.cpython-312.so)\n")
    assert kept_by_python(interned) == (sys.version_info >= (3, 12))
    assert kept_by_python(key) == (sys.version_info >= (3, 12))
    assert kept_by_python(unhooked_key) == (sys.version_info >= (3, 12))
    assert not kept_by_python(ours)
    assert not kept_by_python(interned.replace("definitely", "possibly"))


def test_only_the_collectors_own_reads_count_as_its():
    error = ("==1== Use of uninitialised value of size 8\n"
             "==1==    at 0x1: Py_TYPE (object.h:133)\n"
             "==1==    by 0x2: visit_decref (gcmodule.c:452)\n")
    collector = ("==1==    by 0x3: dict_traverse (dictobject.c:3547)\n"
                 "==1==    by 0x4: gc_collect_main (gcmodule.c:1226)\n"
                 "==1==    by 0x5: PyCMethod_New (methodobject.c:101)\n")
    ours_below = "==1==    by 0x6: core_exec (in /x/site-packages/memtamer/_core.cpython-311.so)\n"
    ours_above = "==1==    by 0x3: core_traverse (module.c:56)\n"
    assert read_by_the_collector(error + collector + ours_below)
    assert not read_by_the_collector(error + ours_above + collector + ours_below)
    assert not read_by_the_collector(error.replace("Use of uninitialised value", "Invalid read") +
                                     collector + ours_below)


def test_frame_pattern_matches_both_builds():
    ours = _our_frame()
    assert ours.search("==1==    by 0x4E5: ??? (in /x/site-packages/memtamer/_core.cpython-311.so)")
    assert ours.search("==1==    by 0x4E5: walk (walker.c:212)")
    assert not ours.search("==1==    by 0x4E5: PyObject_Malloc (obmalloc.c:12)")
