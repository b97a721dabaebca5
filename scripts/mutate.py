"""A short mutation check, run by hand before a release (not by CI): each
mutation below changes one line of the committed tree, in a scratch copy
under /tmp, rebuilds it and runs the tests listed as the ones that must
catch it.  A mutation those tests pass is a gap in the tests.

    .venv/bin/python scripts/mutate.py            # all of them; prints a table
    .venv/bin/python scripts/mutate.py 3 7        # some of them, by number
    .venv/bin/python scripts/mutate.py --write    # and the table into bench/RESULTS.md

The scratch copy is a detached git worktree of HEAD with a copy of .venv (the
mutated build goes there, never into this tree's .venv); both are removed at
the end.  Uncommitted changes are not in it: commit first."""

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(HERE, "bench", "RESULTS.md")
BEGIN, END = "<!-- mutations:begin -->", "<!-- mutations:end -->"

GUARD = "tests/test_guard_kernel.py"

# (what it breaks, file, the line as it is (stripped), the line instead, the tests that must fail)
MUTATIONS = [
    ("the hooks refuse only 8 MiB past the budget",
     "kernelext/guard.c",
     "int own_over = use + (long long)size > atomic_load(&g->ceiling);",
     "int own_over = use + (long long)size > atomic_load(&g->ceiling) + (8LL << 20);",
     [GUARD, "-k", "numpy_handler_stops or python_hooks_stop"]),
    ("the watcher trips only 64 MiB past the budget",
     "kernelext/guard.c",
     "int own_over = use > atomic_load(&g->ceiling);",
     "int own_over = use > atomic_load(&g->ceiling) + (64LL << 20);",
     [GUARD, "-k", "watcher_stops"]),
    ("the watcher leaves the cell's children out of the kernel's use",
     "kernelext/guard.c",
     "long long use = rss + atomic_load(&g->children_rss);",
     "long long use = rss;",
     [GUARD, "-k", "look_of_the_budget"]),
    ("a kernel over its budget at a cell's start gets no allowance",
     "kernelext/guard.c",
     "start = rss_before + atomic_load(&g->grace);",
     "start = g->budget;",
     [GUARD, "-k", "over_its_budget"]),
    ("the hooks ask about 16 MiB requests and up only",
     "kernelext/heap.c",
     "if (block < MT_HEAP_LARGE_REQUEST) {",
     "if (block < 64 * MT_HEAP_LARGE_REQUEST) {",
     [GUARD, "-k", "python_hooks_stop"]),
    ("live samples ignore VmHWM",
     "kernelext/telemetry.c",
     "long long seen = run->method == MT_PEAK_HWM && hwm > f->rss ? hwm : f->rss;",
     "long long seen = run->method == MT_PEAK_HWM && hwm > f->rss ? f->rss : f->rss;",
     ["tests/test_telemetry_kernel.py", "-k", "spike"]),
    ("tmpfs is not known to keep its files in memory",
     "kernelext/process.c",
     "in_ram = rc == 0 && (fs.f_type == TMPFS_MAGIC || fs.f_type == RAMFS_MAGIC);",
     "in_ram = rc == 0 && fs.f_type == RAMFS_MAGIC;",
     ["tests/test_shrink.py", "-k", "tmpfs"]),
    ("spills go to a temp directory in RAM",
     "magics/memtamer/spill_files.py",
     "if _core.in_ram(root):  # spilling there would free nothing",
     "if False:",
     ["tests/test_shrink.py", "-k", "tmpfs"]),
    ("%shrink del leaves the display hook's _ in place",
     "magics/memtamer/purge.py",
     'for attribute in ("_", "__", "___"):',
     'for attribute in ("__", "___"):',
     ["tests/test_shrink_kernel.py", "-k", "each_ipython_holder"]),
    ("%shrink del leaves IPython's hidden _N in place",
     "magics/memtamer/purge.py",
     'self.hidden.get(f"_{number}") is value:',
     'self.hidden.get(f"_{number}") is value and False:',
     ["tests/test_shrink_kernel.py", "-k", "each_ipython_holder"]),
    ("%shrink del leaves the traceback printer's copy",
     "magics/memtamer/purge.py",
     'self._clear_attribute(printer, "tb")',
     "pass",
     ["tests/test_shrink_kernel.py", "-k", "each_ipython_holder"]),
    ("one narrowing block too many when the length is a multiple of the block",
     "kernelext/frames.c",
     "return (values + BLOCK_VALUES - 1) / BLOCK_VALUES;",
     "return values / BLOCK_VALUES + 1;",
     ["tests/test_frames.py", "-k", "boundaries"]),
    ("a cell that only reads a name walks it again, however big",
     "kernelext/ledger.c",
     "if (walk != NULL && (changed || (read && e->visits < REWALK_MAX_VISITS)) &&",
     "if (walk != NULL && (changed || read) &&",
     ["tests/test_variables_kernel.py", "-k", "huge_list"]),
    # The sampler's rate is a matter of time: a spike held 5 ms (and filled
    # and unmapped around that) is sampled by a sampler ten times slower too;
    # a test with a shorter spike would depend on the machine's speed.
    ("the sampled fallback samples ten times slower",
     "kernelext/probe.c",
     "p->sample_interval_us = 500;",
     "p->sample_interval_us = 5000;",
     ["tests/test_cells_kernel.py", "-k", "sampled_fallback"]),
    ("the sampled fallback samples a hundred times slower",
     "kernelext/probe.c",
     "p->sample_interval_us = 500;",
     "p->sample_interval_us = 50000;",
     ["tests/test_cells_kernel.py", "-k", "sampled_fallback"]),
]


def run(cmd, cwd, log, **kw):
    with open(log, "a") as out:
        out.write(f"\n$ {' '.join(cmd)}\n")
        out.flush()
        return subprocess.run(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, **kw).returncode


def mutate(path, original, mutated):
    """Replaces the one line whose stripped text is original; returns the
    file's text before, or raises when the line is not there exactly once."""
    with open(path) as f:
        text = f.read()
    lines = text.split("\n")
    at = [i for i, line in enumerate(lines) if line.strip() == original]
    if len(at) != 1:
        raise SystemExit(f"mutate: {path} has {len(at)} lines {original!r}: update MUTATIONS")
    indent = lines[at[0]][:len(lines[at[0]]) - len(lines[at[0]].lstrip())]
    lines[at[0]] = indent + mutated
    with open(path, "w") as f:
        f.write("\n".join(lines))
    return text


def check(scratch, numbered, log):
    python = os.path.join(scratch, ".venv", "bin", "python")
    install = [python, "-m", "pip", "install", "-q", "--no-build-isolation",
               "-Cbuild-dir=build/mutate", "."]
    rows = []
    for number, (what, path, original, mutated, tests) in numbered:
        started = time.monotonic()
        target = os.path.join(scratch, path)
        before = mutate(target, original, mutated)
        try:
            if run(install, scratch, log) != 0:
                verdict = "build failed"
            else:
                rc = run([python, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider"] + tests,
                         scratch, log, timeout=1800)
                verdict = ("caught" if rc == 1 else "MISSED" if rc == 0 else
                           f"caught (crashed: signal {-rc})" if rc < 0 else f"pytest exit {rc}")
        finally:
            with open(target, "w") as f:
                f.write(before)
        seconds = time.monotonic() - started
        print(f"{number:2d} {verdict:12s} {seconds:5.0f} s  {what}", flush=True)
        rows.append((number, what, path, shlex.join(tests), verdict))
    return rows


def table(rows, when):
    caught = sum(1 for row in rows if row[4].startswith("caught"))
    lines = [f"Mutation check (`scripts/mutate.py`, run by hand): {caught} of {len(rows)} one-line "
             f"mutations caught by the tests listed for them; {when}.", "",
             "| # | mutation | file | tests that must catch it | result |", "|---|---|---|---|---|"]
    for number, what, path, tests, verdict in rows:
        lines.append(f"| {number} | {what} | `{path}` | `{tests}` | **{verdict}** |")
    return "\n".join(lines)


def write_results(text):
    with open(RESULTS) as f:
        results = f.read()
    section = f"{BEGIN}\n{text}\n\n{END}"
    if BEGIN in results:
        results = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: section, results,
                         flags=re.S)
    else:
        results = results.rstrip("\n") + "\n\n" + section + "\n"
    with open(RESULTS, "w") as f:
        f.write(results)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("numbers", nargs="*", type=int, help="mutations to apply (default: all)")
    parser.add_argument("--write", action="store_true", help="put the table in bench/RESULTS.md")
    args = parser.parse_args()
    chosen = args.numbers or range(1, len(MUTATIONS) + 1)
    numbered = [(n, MUTATIONS[n - 1]) for n in chosen]
    scratch = tempfile.mkdtemp(prefix="memtamer-mutate-")
    log = os.path.join(tempfile.gettempdir(), os.path.basename(scratch) + ".log")
    print(f"mutate: scratch copy {scratch}, log {log}", flush=True)
    try:
        subprocess.run(["git", "worktree", "add", "-q", "--detach", scratch, "HEAD"], cwd=HERE,
                       check=True)
        shutil.copytree(os.path.join(HERE, ".venv"), os.path.join(scratch, ".venv"),
                        symlinks=True)
        rows = check(scratch, numbered, log)
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", scratch], cwd=HERE)
        shutil.rmtree(scratch, ignore_errors=True)
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True,
                          text=True).stdout.strip()
    text = table(rows, f"commit {head}, {time.strftime('%Y-%m-%d', time.gmtime())}, on a "
                       f"machine of {os.cpu_count()} cores shared with other work")
    print(text)
    if args.write:
        write_results(text)
    return 0 if all(row[4].startswith("caught") for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
