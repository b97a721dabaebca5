"""What every benchmark script shares: its section of bench/RESULTS.md, and
the median-and-spread figures each row reports."""

import os
import re
import statistics

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
