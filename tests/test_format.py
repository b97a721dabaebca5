"""The C sources follow the project's .clang-format: a change that is not
formatted fails here (fix with clang-format -i on the files named)."""

import pathlib
import shutil
import subprocess

import pytest

pytestmark = pytest.mark.once

ROOT = pathlib.Path(__file__).resolve().parent.parent


def c_sources():
    return sorted(str(p) for folder in ("kernelext", "include", "tests/c")
                  for p in (ROOT / folder).rglob("*.[ch]"))


def test_c_sources_are_formatted():
    tool = shutil.which("clang-format")
    assert tool, "clang-format is missing: scripts/setup.sh installs it (apt-get install clang-format)"
    ran = subprocess.run([tool, "--dry-run", "--Werror", *c_sources()], cwd=ROOT,
                         capture_output=True, text=True)
    unformatted = sorted({line.split(":")[0] for line in ran.stderr.splitlines()
                          if ": error:" in line})
    assert ran.returncode == 0, ("not formatted as .clang-format says; run clang-format -i on: "
                                 + " ".join(unformatted) + "\n" + ran.stderr[:2000])
