"""Post-mortems of killed kernels in real kernels: told once, to the next kernel
of the same notebook, as a death only where memory was the likely cause, and
never into the output of a script."""

import os
from pathlib import Path
import signal
import subprocess
import sys
import time

from conftest import besides_loaded
from kernel import Kernel
from memtamer import _core

SLEEPER = "import time\ntime.sleep(120)"


def rss_of(pid):
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# Notebooks are named relative to a server root, as no file here exists: an
# absolute path to no file would be a deleted notebook, whose records go.
def kernel(runtime, notebook=None):
    env = {"MEMTAMER_RUNTIME_DIR": str(runtime)}
    if notebook:
        env["JPY_SESSION_NAME"] = notebook
    return Kernel(env=env, cwd=str(runtime))


def load(runtime, notebook=None):
    """A new kernel with memtamer loaded, and what loading it printed."""
    k = kernel(runtime, notebook)
    return k, k.run("%load_ext memtamer")["stdout"]


def quiet_oom_root(runtime):
    """A /proc root whose OOM counter stays still (this machine's counts the
    OOM kills of every cgroup, other people's tests included); the rest is
    the reading process's own /proc."""
    root = runtime / "root"
    (root / "proc").mkdir(parents=True)
    (root / "proc/self").symlink_to("/proc/self")
    (root / "proc/meminfo").symlink_to("/proc/meminfo")
    (root / "proc/vmstat").write_text("pgfault 10\noom_kill 3\n")
    return str(root)


def kill_while_sleeping(runtime, notebook=None, near_budget=False):
    """Starts a kernel that reads its OOM counter from quiet_oom_root, makes
    it sleep in a cell and SIGKILLs it there.  near_budget: with a budget 5%
    above its RSS.  Returns (pid, the cell's execution count as Jupyter
    numbered it, its record's path)."""
    k = kernel(runtime, notebook)
    try:
        return kill_unreaped(k, quiet_oom_root(runtime), runtime, near_budget)
    finally:
        k.shutdown()


def kill_unreaped(k, proc_root, runtime, near_budget=False):
    """kill_while_sleeping on kernel k, reading /proc under proc_root ("": the
    real one), which is left a zombie: dead, and not yet reaped by its
    manager (k.shutdown() reaps it)."""
    k.run(f"__import__('memtamer._core')._core._set_proc_root({proc_root!r})\n"
          "%load_ext memtamer")
    pid = k.query("__import__('os').getpid()")
    if near_budget:
        k.run(f"%memguard {int(rss_of(pid) / 0.95)}")
    cell = k.run("pass")["execution_count"] + 1
    path = str(runtime / f"memtamer-{pid}.guard")
    k.kc.execute(SLEEPER)
    deadline = time.time() + 30
    while _core.postmortem_read(path)["cell"] is None:
        assert time.time() < deadline, "the record never showed the running cell"
        time.sleep(0.05)
    # The number the user saw next to the cell, not the one after it.
    assert _core.postmortem_read(path)["cell"] == cell
    os.kill(pid, signal.SIGKILL)
    while os.path.exists(f"/proc/{pid}") and "zombie" not in open(f"/proc/{pid}/status").read():
        time.sleep(0.05)
    return pid, cell, path


def test_a_death_near_the_budget_is_told_once_to_its_own_notebook_only(tmp_path):
    pid, cell, path = kill_while_sleeping(tmp_path, "home/u/a.ipynb", near_budget=True)
    death = f"the previous kernel (pid {pid}) died while running cell {cell} ('import time')"

    # A script run in the same notebook's environment prints only its own output
    # and leaves the record to the notebook's next interactive kernel.
    script = tmp_path / "script.py"
    script.write_text("print('only this')\n")
    env = dict(os.environ, MEMTAMER_RUNTIME_DIR=str(tmp_path), JPY_SESSION_NAME="home/u/a.ipynb",
               IPYTHONDIR=str(tmp_path / "ipython"))
    ran = subprocess.run([sys.executable, "-m", "IPython", "--ext", "memtamer", str(script)],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert (ran.returncode, ran.stdout, ran.stderr) == (0, "only this\n", "")
    assert os.path.exists(path)
    # A script that dies keeps no record: it is not a notebook's kernel.
    script.write_text("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n")
    killed = subprocess.run([sys.executable, "-m", "IPython", "--ext", "memtamer", str(script)],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert killed.returncode == -9
    assert sorted(tmp_path.glob("memtamer-*.guard")) == [Path(path)]

    # Notebook b shares the directory: A's death is none of its business.
    b, said = load(tmp_path, "home/u/b.ipynb")
    try:
        assert besides_loaded(said) == ""
        assert f"(pid {pid})" not in b.run("%memguard")["stdout"]
    finally:
        b.shutdown()

    a, said = load(tmp_path, "home/u/a.ipynb")
    a.shutdown()
    assert death in said and "That was close to its budget." in said

    # Once: the next one hears nothing of it (the test's shutdowns are forced, so
    # its status may tell of the kernel just shut down, never of the first).
    a, said = load(tmp_path, "home/u/a.ipynb")
    try:
        assert "previous kernel" not in said
        assert f"(pid {pid})" not in a.run("%memguard")["stdout"]
    finally:
        a.shutdown()


def test_a_death_far_from_the_limit_is_only_in_memguard_status(tmp_path):
    pid, cell, path = kill_while_sleeping(tmp_path)
    record = _core.postmortem_read(path)
    assert record["limit"] and record["rss"] < record["limit"] * 0.9
    assert record["oom_source"] == str(tmp_path / "root/proc/vmstat")
    k, said = load(tmp_path)
    try:
        assert "previous kernel" not in said
        status = k.run("%memguard")["stdout"]
        assert (f"the previous kernel (pid {pid}) ended without its exit handlers while running "
                f"cell {cell} ('import time')") in status
    finally:
        k.shutdown()


def test_a_killed_kernel_not_yet_reaped_is_told_as_dead(tmp_path):
    dead = kernel(tmp_path, "home/u/z.ipynb")
    try:
        # The real /proc: the record holds when the kernel really started,
        # which its zombie still shows.
        pid, cell, path = kill_unreaped(dead, "", tmp_path, near_budget=True)
        assert "zombie" in open(f"/proc/{pid}/status").read()  # its manager has not reaped it
        k, said = load(tmp_path, "home/u/z.ipynb")
        k.shutdown()
    finally:
        dead.shutdown()
    assert f"the previous kernel (pid {pid}) died while running cell {cell}" in said
    assert not os.path.exists(path)


def test_a_fifo_named_like_a_record_neither_blocks_the_load_nor_is_read(tmp_path):
    fifo = tmp_path / "memtamer-999999.guard"
    os.mkfifo(fifo)  # no writer: opening it to read would wait forever
    k = kernel(tmp_path)
    try:
        out = k.run("%load_ext memtamer", timeout=120)
        assert besides_loaded(out["stdout"]) == "" and out["stderr"] == ""
        assert "(pid 999999)" not in k.run("%memguard", timeout=120)["stdout"]
    finally:
        k.shutdown()
    assert fifo.exists()  # not a record: left alone


def test_no_record_and_one_line_why_when_its_directory_cannot_be_made(tmp_path):
    (tmp_path / "a-file").write_text("")
    runtime = tmp_path / "a-file" / "runtime"  # under a file: never a directory
    notebook_dir = tmp_path / "notebook"
    notebook_dir.mkdir()
    k = Kernel(env={"MEMTAMER_RUNTIME_DIR": str(runtime)}, cwd=str(notebook_dir))
    try:
        said = k.run("%load_ext memtamer")["stdout"]
        k.run("x = 1")
    finally:
        k.shutdown()
    assert besides_loaded(said) == (f"memtamer: no post-mortem record for this kernel: cannot make its directory "
                    f"{runtime} (Not a directory)\n")
    assert list(notebook_dir.iterdir()) == []  # nothing written beside the notebook instead


def test_spill_files_in_any_directory_are_removed_by_the_notebooks_next_kernel(tmp_path):
    runtime, project = tmp_path / "runtime", tmp_path / "project"
    rule_dir, magic_dir = project / "scratch", tmp_path / "elsewhere"
    for directory in (runtime, rule_dir, magic_dir):
        directory.mkdir(parents=True)
    rules = project / "memtamer.yaml"
    rules.write_text("version: 1\nrules:\n  - {name: spill-new, when: {created: true}, "
                     "match: {name: 'sp_*'}, do: spill, dir: scratch}\n")
    env = {"MEMTAMER_RUNTIME_DIR": str(runtime), "JPY_SESSION_NAME": "home/u/s.ipynb",
           "MEMTAMER_RULES": str(rules)}
    k = Kernel(env=env, cwd=str(project))
    try:
        k.run("%load_ext memtamer\nimport numpy as np")
        assert "memtamer rule spill-new: spilled sp_a" in k.run("sp_a = np.ones(100_000)")["stdout"]
        k.run(f"other = np.ones(100_000)\n%shrink spill other --dir {magic_dir}")
        spilled = sorted(str(p) for d in (rule_dir, magic_dir) for p in d.iterdir())
        assert len(spilled) == 2
        pid = k.query("__import__('os').getpid()")
        os.kill(pid, signal.SIGKILL)  # no exit handler runs: the files stay
        while os.path.exists(f"/proc/{pid}") and "zombie" not in open(f"/proc/{pid}/status").read():
            time.sleep(0.05)
    finally:
        k.shutdown()
    assert all(os.path.exists(path) for path in spilled)
    # Another notebook's kernel leaves them: they are not its business.
    other = Kernel(env=dict(env, JPY_SESSION_NAME="home/u/other.ipynb"), cwd=str(project))
    try:
        other.run("%load_ext memtamer")
    finally:
        other.shutdown()
    assert all(os.path.exists(path) for path in spilled)
    nxt = Kernel(env=env, cwd=str(project))
    try:
        said = nxt.run("%load_ext memtamer")["stdout"]
    finally:
        nxt.shutdown()
    assert not any(os.path.exists(path) for path in spilled)
    assert all(path in said for path in spilled) and "spill file(s) left by killed kernels" in said
    assert sorted(p.name for p in runtime.iterdir() if p.suffix == ".spills") == []
