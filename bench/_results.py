"""What the benchmark scripts share: their sections of bench/RESULTS.md, the
median-and-spread figures rows report, and instruction counts by callgrind."""

import os
import re
import statistics
import subprocess
import sys
import tempfile

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "RESULTS.md")


def write_section(key, text):
    """Puts text between <!-- key:begin --> and <!-- key:end --> in RESULTS.md,
    replacing what was there, or appends the block."""
    begin, end = f"<!-- {key}:begin -->", f"<!-- {key}:end -->"
    block = f"{begin}\n{text}\n{end}"
    old = open(RESULTS).read() if os.path.exists(RESULTS) else "# Benchmark results\n"
    if begin in old and end in old:
        new = re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda _: block, old, flags=re.S)
    else:
        new = old.rstrip("\n") + "\n\n" + block + "\n"
    with open(RESULTS, "w") as f:
        f.write(new)


def spread(values, fmt="{:.2f}"):
    """'median (min–max)' of values."""
    values = sorted(values)
    return f"{fmt.format(statistics.median(values))} ({fmt.format(values[0])}–{fmt.format(values[-1])})"


def callgrind_instructions(script, *args, timeout=3600, main_thread_only=False,
                           python=sys.executable):
    """Instructions `python script *args` executes (this Python unless told), counted by callgrind
    (deterministic, whatever else the machine does).  Fair scheduling lets
    memtamer's threads (the guard's watcher) run beside a busy loop, as they
    would outside valgrind.  main_thread_only counts the thread that runs
    the script alone: the watcher's polls follow the wall clock, which
    callgrind slows down, so they are noise in a measure of the main
    thread's own cost."""
    separate = ["--separate-threads=yes"] if main_thread_only else []
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run(
            ["valgrind", "--tool=callgrind", "--fair-sched=yes", *separate,
             f"--callgrind-out-file={tmp}/out", python, script, *args],
            capture_output=True, text=True, timeout=timeout,
            cwd=os.path.dirname(os.path.abspath(script)))
        found = re.search(r"Collected : (\d+)", proc.stderr)
        if proc.returncode != 0 or not found:
            raise RuntimeError(f"callgrind on {script} {args} failed:\n{proc.stderr[-2000:]}")
        if not main_thread_only:
            return int(found.group(1))
        with open(os.path.join(tmp, "out-01")) as main_thread:
            return int(re.search(r"^totals: (\d+)", main_thread.read(), re.M).group(1))
