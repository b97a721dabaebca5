"""`memtamer run`: a notebook executed headless by nbclient, every cell
measured, with exit statuses a CI job can use.  Each test runs the command as
a user would, in a process of its own, against notebooks whose memory it
constructs (numpy arrays of known bytes)."""

import json
import os
import re
import subprocess
import sys

import nbformat
import pytest

MiB = 2**20
TEMPORARY = 384 * MiB  # the temporary the sizing notebook makes and frees
IMPORT = "import numpy as np"
SPIKE = f"tmp = np.ones({TEMPORARY // 8})\nkept = tmp[:1000].copy()\ndel tmp"


def notebook(tmp_path, *sources, name="nb.ipynb", tags=None):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nb.cells = [nbformat.v4.new_markdown_cell("# a notebook run headless")]
    for i, source in enumerate(sources):
        cell = nbformat.v4.new_code_cell(source)
        if tags and i in tags:
            cell.metadata["tags"] = tags[i]
        nb.cells.append(cell)
    path = tmp_path / name
    nbformat.write(nb, str(path))
    return path


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "memtamer", "run", *map(str, args)],
                          capture_output=True, text=True, timeout=300, cwd=cwd)


def code_cells(path):
    return [c for c in nbformat.read(str(path), as_version=4).cells if c.cell_type == "code"]


def test_a_limit_fails_naming_the_cell_that_crossed_it(tmp_path):
    nb = notebook(tmp_path, IMPORT, SPIKE, "after = 1")
    done = run(nb, "--limit", "300MiB")
    assert done.returncode == 1, done.stderr
    assert "FAILED: cell 2 ('tmp = np.ones(50331648)') reached" in done.stdout
    assert "over --limit 300 MiB" in done.stdout
    # how much more it needed, from its measured peak (above the 384 MiB array)
    needed, more = re.search(r"over --limit 300 MiB\. It needed ([\d.]+) MiB: ([\d.]+) MiB more "
                             r"RAM or swap \(on an SSD\) than the 300 MiB it had would have let "
                             r"it finish", done.stdout).groups()
    assert float(needed) >= 384 and float(more) == pytest.approx(float(needed) - 300, abs=1)
    # The table and summary are there too, and name the same cell as the peak's.
    assert "peak +" in done.stdout and "peak " in done.stdout and "in cell 2" in done.stdout
    assert "Traceback" not in done.stderr


def test_a_passing_run_writes_the_figures_into_the_executed_notebook(tmp_path):
    nb = notebook(tmp_path, IMPORT, SPIKE, "after = kept.sum()")
    original = nb.read_bytes()
    out = tmp_path / "out.ipynb"
    done = run(nb, "--limit", "2GiB", "--output", out)
    assert done.returncode == 0, done.stdout + done.stderr
    assert nb.read_bytes() == original  # the notebook itself is not changed
    cells = code_cells(out)
    spike = cells[1].metadata["memtamer"]
    # numpy's own accounting: the temporary's bytes, plus the kept copy's.
    assert spike["numpy_peak_increment"] == pytest.approx(TEMPORARY, abs=MiB)
    assert spike["peak_increment"] == pytest.approx(TEMPORARY, rel=0.03)
    assert abs(spike["retained"]) < 16 * MiB and spike["status"] == "ok"
    assert all(isinstance(spike[k], int) for k in ("peak_rss", "rss_after", "rss_before"))
    assert spike["peak_lines"][0]["line"] == 1 and spike["peak_lines"][0]["bytes"] >= TEMPORARY
    assert [c.execution_count for c in cells] == [1, 2, 3]
    summary = nbformat.read(str(out), as_version=4).metadata["memtamer"]
    assert summary["passed"] and summary["peak_execution_count"] == 2
    assert summary["peak"] == spike["peak_rss"] and summary["limit"] == 2 * 1024 * MiB
    assert summary["suggested_request"] >= summary["peak"] * 1.25
    assert summary["suggested_request"] % (64 * MiB) == 0
    assert "kept" in [v["name"] for v in summary["biggest_variables"]]


def test_json_is_one_document_and_a_baseline_catches_a_cell_that_grew(tmp_path):
    # The same source allocates what size.txt says: the second run grows.
    size = tmp_path / "size.txt"
    size.write_text(str(32 * MiB // 8))
    nb = notebook(tmp_path, IMPORT, "n = int(open('size.txt').read())\n"
                  "tmp = np.ones(n); del tmp", "x = 1")
    first = run(nb, "--json")
    assert first.returncode == 0, first.stderr
    doc = json.loads(first.stdout)
    assert [c["execution_count"] for c in doc["cells"]] == [1, 2, 3]
    assert doc["cells"][1]["numpy_peak_increment"] == pytest.approx(32 * MiB, abs=MiB)
    assert doc["summary"]["passed"] and doc["summary"]["problems"] == []
    baseline = tmp_path / "base.json"
    baseline.write_text(first.stdout)
    steady = run(nb, "--baseline", baseline)
    assert steady.returncode == 0, steady.stdout
    size.write_text(str(128 * MiB // 8))
    grown = run(nb, "--baseline", baseline)
    assert grown.returncode == 1
    line = next(ln for ln in grown.stdout.splitlines() if "grew" in ln)
    assert line == ("FAILED: cell 2 (\"n = int(open('size.txt').read())\"): peak grew from "
                    "+32 MiB to +128 MiB (tolerance 10%)")
    # A tolerance that admits it passes.
    assert run(nb, "--baseline", baseline, "--tolerance", "5").returncode == 0


@pytest.mark.parametrize("args, words", [
    (["missing.ipynb"], "missing.ipynb: no such notebook file"),
    (["plain.ipynb"], "plain.ipynb is not a Jupyter notebook"),
    (["nb.ipynb", "--kernel", "no-such-kernel"], "no kernel named 'no-such-kernel'"),
    (["nb.ipynb", "--limit", "lots"], "--limit: 'lots'"),
    (["nb.ipynb", "--budget=-1GiB"], "--budget: '-1GiB' is negative"),
    (["nb.ipynb", "--timeout", "0"], "--timeout 0: give a positive number of seconds"),
    (["nb.ipynb", "--baseline", "plain.ipynb"], "is not JSON"),
    (["nb.ipynb", "--baseline", "list.json"], "is not the output of 'memtamer run --json'"),
    (["nb.ipynb", "--output", "nowhere/out.ipynb"], "its directory does not exist"),
    (["nb.ipynb", "--cwd", "nowhere"], "--cwd nowhere: no such directory"),
])
def test_bad_input_is_one_line_and_status_2(tmp_path, args, words):
    notebook(tmp_path, "x = 1")
    (tmp_path / "plain.ipynb").write_text("just text, no JSON")
    (tmp_path / "list.json").write_text("[1, 2]")
    done = run(*args, cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert words in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    assert done.stdout == ""


def test_a_failing_cell_stops_the_run_unless_errors_are_allowed(tmp_path):
    nb = notebook(tmp_path, "x = 1", "raise ValueError('boom')", "after = 2")
    out = tmp_path / "out.ipynb"
    stopped = run(nb, "--output", out)
    assert stopped.returncode == 1
    assert "FAILED: cell 2 (\"raise ValueError('boom')\") failed: ValueError: boom" \
        in stopped.stdout
    assert "memtamer" not in code_cells(out)[2].metadata  # never ran
    went_on = run(nb, "--output", out, "--allow-errors")
    assert went_on.returncode == 1
    assert code_cells(out)[2].metadata["memtamer"]["status"] == "ok"
    assert code_cells(out)[1].metadata["memtamer"]["status"] == "error"


def test_a_cell_expected_to_fail_passes(tmp_path):
    nb = notebook(tmp_path, "raise KeyError('expected')", "after = 2",
                  tags={0: ["raises-exception"]})
    done = run(nb)
    assert done.returncode == 0, done.stdout


def test_a_kernel_killed_mid_run_is_reported_with_its_cell_and_last_rss(tmp_path):
    nb = notebook(tmp_path, IMPORT, f"held = np.ones({256 * MiB // 8})",
                  "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)", "never = 1")
    out = tmp_path / "out.ipynb"
    done = run(nb, "--output", out)
    assert done.returncode == 1
    line = next(ln for ln in done.stdout.splitlines() if "died" in ln)
    assert line.startswith("FAILED: the kernel died in cell 3 ('import os, signal'); "
                           "its last RSS was ")
    last_rss = line.split("its last RSS was ")[1].split(" (")[0]
    assert last_rss.endswith("MiB") and float(last_rss.split()[0]) >= 256
    # What ran before the death keeps its figures.
    assert code_cells(out)[1].metadata["memtamer"]["numpy_peak_increment"] == \
        pytest.approx(256 * MiB, abs=MiB)
    assert not nbformat.read(str(out), as_version=4).metadata["memtamer"]["passed"]


def test_a_budget_stops_a_runaway_cell_and_the_kernel_lives_on(tmp_path):
    nb = notebook(tmp_path, IMPORT, "big = np.ones(2**27)", "small = np.ones(10).sum()")
    out = tmp_path / "out.ipynb"
    done = run(nb, "--budget", "300MiB", "--allow-errors", "--output", out)
    assert done.returncode == 1
    assert "cell 2 ('big = np.ones(2**27)') failed: MemoryBudgetExceeded" in done.stdout
    cells = code_cells(out)
    assert cells[1].metadata["memtamer"]["peak_increment"] < 64 * MiB  # stopped before
    assert cells[2].metadata["memtamer"]["status"] == "ok"
    assert nbformat.read(str(out), as_version=4).metadata["memtamer"]["budget"] == 300 * MiB


def test_a_cell_past_the_timeout_ends_the_run(tmp_path):
    nb = notebook(tmp_path, "import time\ntime.sleep(60)", "after = 1")
    done = run(nb, "--timeout", "2")
    assert done.returncode == 1
    assert "cell 1 ('import time') ran past --timeout 2 s" in done.stdout


def test_help_names_the_command():
    done = subprocess.run([sys.executable, "-m", "memtamer", "--help"], capture_output=True,
                          text=True)
    assert "execute a notebook headless and measure every cell" in done.stdout
    assert done.returncode == 0


def test_a_kernel_the_oom_killer_ended_is_reported_so(tmp_path):
    """In a real 512 MiB memory cgroup, with the guard turned off by the
    notebook, a 1 GiB request ends in the OOM killer: the run says so."""
    from cgroups import join, make_memory_cgroup, oom_kills

    cgroup, counter = make_memory_cgroup(512 * MiB)
    try:
        nb = notebook(tmp_path, "%memguard off", IMPORT, "x = np.ones(2**27)", "never = 1")
        env = dict(os.environ, MEMTAMER_RUNTIME_DIR=str(tmp_path))
        done = subprocess.run(
            [sys.executable, "-m", "memtamer", "run", str(nb)], capture_output=True, text=True,
            timeout=300, env=env, preexec_fn=lambda: join(cgroup, os.getpid()))
        assert oom_kills(counter) >= 1
    finally:
        os.rmdir(cgroup)
    assert done.returncode == 1
    line = next(ln for ln in done.stdout.splitlines() if "died" in ln)
    assert line.startswith("FAILED: the kernel died in cell 3 ('x = np.ones(2**27)'); ")
    assert "(the OOM killer ended it). It needed more than the 512 MiB it had: more RAM or " \
        "swap (on an SSD) would let the cell go further" in line, line
    # The run reported the record, so the notebook's next kernel will not.
    assert list(tmp_path.glob("memtamer-*.guard")) == []


def test_a_terminal_shows_which_cell_runs(tmp_path):
    import pty
    nb = notebook(tmp_path, "import time\ntime.sleep(1.2)", "x = 1")
    # A terminal without os.fork() (this process may have other libraries'
    # threads, at which Python 3.12+ warns).
    fd, terminal = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "memtamer", "run", str(nb)],
                            stdin=terminal, stdout=terminal, stderr=terminal)
    os.close(terminal)
    seen = b""
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO once the child's side is closed
            break
        if not chunk:
            break
        seen += chunk
    os.close(fd)
    text = seen.decode()
    assert proc.wait() == 0, text
    # The line is rewritten while the cell sleeps: its time moves past zero.
    times = [float(t) for t in re.findall(r"cell 1 of 2 · (\d+\.\d) s · RSS \d+ MiB", text)]
    assert times and max(times) > 0 and "cell 2 of 2 · " in text
