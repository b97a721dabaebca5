"""memtamer in a terminal IPython (no kernel, no HTML), with and without numpy."""

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import sys
    if {block_numpy}:
        sys.modules["numpy"] = None  # as if numpy were not installed
    from IPython.terminal.interactiveshell import TerminalInteractiveShell
    shell = TerminalInteractiveShell.instance(colors="nocolor")
    for cell in ["%load_ext memtamer",
                 "blob = b'x' * (128 * 2**20)",
                 "%memreport cells"]:
        shell.run_cell(cell, store_history=True)
    import memtamer, json
    report = memtamer.report()
    # what a terminal has no use for is not imported for it
    report["imported"] = sorted(m for m in ("ipykernel", "jupyter_core", "jupyter_client", "pandas")
                                if m in sys.modules)
    print("REPORT" + json.dumps(report))
""")


def run_terminal(block_numpy):
    result = subprocess.run([sys.executable, "-c", SCRIPT.format(block_numpy=block_numpy)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    text, _, report = result.stdout.partition("REPORT")
    import json
    return text, json.loads(report), result.stderr


def test_terminal_prints_aligned_text():
    text, report, stderr = run_terminal(block_numpy=False)
    assert "<table" not in text
    line = next(l for l in text.splitlines() if "blob = b'x'" in l)
    assert "+128 MiB" in line
    assert report["cells"][0]["retained"] >= 127 * 2**20
    assert "memtamer" not in stderr
    assert report["imported"] == []


def test_without_numpy_it_loads_and_measures():
    text, report, stderr = run_terminal(block_numpy=True)
    cell = report["cells"][0]
    assert cell["peak_increment"] >= 127 * 2**20
    assert cell["numpy_peak_increment"] is None
    assert "numpy_peak_increment" in report["process"]["unavailable"]
    assert "memtamer" not in stderr
