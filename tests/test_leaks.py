"""No memory errors and no definite leaks from memtamer's C code, under valgrind."""

import os
import re
import shutil
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind is not installed")
def test_core_under_valgrind(tmp_path):
    log = tmp_path / "valgrind.log"
    env = dict(os.environ, PYTHONMALLOC="malloc")  # so valgrind sees every Python block
    result = subprocess.run(
        ["valgrind", "--leak-check=full", "--errors-for-leak-kinds=definite",
         "--show-leak-kinds=definite", f"--log-file={log}", "--num-callers=30",
         sys.executable, os.path.join(HERE, "leakcheck_core.py")],
        capture_output=True, text=True, env=env, timeout=900,
    )
    assert "leakcheck done" in result.stdout, result.stderr
    text = log.read_text()
    # Each error record is a block of lines; keep those that pass through our code.
    records = re.split(r"\n==\d+== \n", text)
    ours = [r for r in records if "memtamer/_core" in r and ("Invalid" in r or "uninitialised" in r
                                                    or "definitely lost" in r)]
    assert not ours, "\n\n".join(ours)
