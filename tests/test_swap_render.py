"""Swap in the cells table and the notice after a cell that went to swap
(issue 35): the columns appear only when some cell swapped or faulted pages
in from disk."""

from memtamer.render import cells_text, swap_notice

MiB = 1024**2
GiB = 1024**3


def cell(number, swapped=0, faults=0):
    return {"cell": number, "first_line": "x = 1", "peak_increment": MiB, "retained": 0,
            "rss_after": 900 * MiB, "heap_peak_increment": MiB, "numpy_peak_increment": None,
            "children_peak": 0, "seconds": 0.5, "status": "ok", "swapped": swapped,
            "swap_after": swapped, "major_faults": faults}


def headings(cells):
    return cells_text(cells, "cells", width=None)[1]


def test_no_swap_no_columns():
    head = headings([cell(1), cell(2)])
    assert "swap +" not in head and "major faults" not in head
    # Where /proc does not say (None), no column either.
    head = headings([dict(cell(1), swapped=None, major_faults=None)])
    assert "swap +" not in head


def test_a_cell_that_swapped_shows_both_columns_for_every_cell():
    lines = cells_text([cell(1), cell(2, swapped=640 * MiB, faults=1234)], "cells", width=None)
    assert "swap +" in lines[1] and "major faults" in lines[1]
    second = next(line for line in lines if line.lstrip().startswith("2 "))
    assert "+640 MiB" in second and "1234" in second


def test_pages_brought_back_alone_show_the_columns():
    lines = cells_text([cell(1, swapped=-64 * MiB, faults=16384)], "cells", width=None)
    assert "swap +" in lines[1] and "-64 MiB" in lines[2]


def test_swap_notice_says_how_much_and_what_to_do():
    text = swap_notice(dict(cell(7, swapped=GiB, faults=5000), swap_after=int(1.5 * GiB)))
    assert text.startswith("memtamer: cell 7 pushed 1.0 GiB to swap")
    assert "the kernel has 1.5 GiB there now" in text and "5000 pages" in text
    assert "%memguard --no-swap" in text
    assert "waited" not in swap_notice(cell(None, swapped=GiB))
    assert "this cell pushed" in swap_notice(cell(None, swapped=GiB))


def test_swap_notice_says_how_much_slower_than_its_cpu_time_the_cell_ran():
    slow = dict(cell(7, swapped=GiB, faults=5000), seconds=12.0, cpu_seconds=0.5)
    assert "; it ran 24× slower than its CPU time (12.0 s for 0.5 s of CPU);" in swap_notice(slow)
    slow.update(seconds=1.75)
    assert "; it ran 3.5× slower than its CPU time (1.8 s for 0.5 s of CPU);" in swap_notice(slow)
    # not slowed, or no CPU figure: nothing said of it
    assert "slower" not in swap_notice(dict(slow, seconds=0.6))
    assert "slower" not in swap_notice(dict(slow, cpu_seconds=None))
    assert "slower" not in swap_notice(dict(slow, cpu_seconds=0.0))
