"""probe.c uses no Python API: build it with a plain C test driver and run it."""

import os
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler")
def test_probe_from_plain_c(tmp_path):
    exe = tmp_path / "test_probe"
    subprocess.run(
        ["cc", "-std=c11", "-Wall", "-Wextra", "-Werror", "-I", os.path.join(ROOT, "include"),
         os.path.join(ROOT, "tests/c/test_probe.c"), os.path.join(ROOT, "kernelext/probe.c"),
         "-lpthread", "-o", str(exe)],
        check=True,
    )
    result = subprocess.run([str(exe)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("0 failed")
