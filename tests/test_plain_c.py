"""The parts of _core that use no Python API (probe.c with worker.c, transform.c, entropy.c,
checksum.c),
built with plain C test drivers under AddressSanitizer and UBSan, and run."""

import os
import subprocess

import pytest

pytestmark = pytest.mark.once

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SANITIZE = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-g", "-O1"]


# The files each unit is built with besides its own.
WITH = {"probe": ["worker"], "transform": [], "entropy": [], "checksum": []}
# Builds beyond the plain one: checksum.c's table, which CPUs without SSE4.2 use.
BUILDS = [(unit, []) for unit in sorted(WITH)] + [("checksum", ["-DMT_WITHOUT_CRC32C_INSN"])]


@pytest.mark.parametrize("unit,flags", BUILDS, ids=[u + "".join(f) for u, f in BUILDS])
def test_unit_from_plain_c(unit, flags, tmp_path):
    exe = tmp_path / f"test_{unit}"
    subprocess.run(
        ["cc", "-std=c11", "-Wall", "-Wextra", "-Werror", *SANITIZE, *flags,
         "-I", os.path.join(ROOT, "include"), os.path.join(ROOT, f"tests/c/test_{unit}.c"),
         *(os.path.join(ROOT, f"kernelext/{name}.c") for name in [unit, *WITH[unit]]), "-lpthread", "-lm", "-o", str(exe)],
        check=True,
    )
    result = subprocess.run([str(exe)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith("0 failed"), result.stdout
