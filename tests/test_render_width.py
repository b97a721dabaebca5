"""%memreport's text tables fit the terminal: at 80 columns no line is wider
than the window (less important columns go, long sources, names and types are
cut with an ellipsis); at 200 columns, and without a terminal, nothing is cut."""

import os
import subprocess
import sys
import textwrap

from memtamer.render import Report, terminal_width

MiB = 1024**2
LONG_SOURCE = "frames = [load_frame(path, columns=wanted_columns) for path in sorted(paths)]  # all"
LONG_NAME = "frames_by_station_and_day_after_cleaning"
LONG_TYPE = "DataFrame 1000000 rows × 48 columns"
WHY = ("del frames would free 0 B: Out[12], _, _12 and a reference outside the namespace "
       "also hold it")


def cell(number, peak, source):
    return {"cell": number, "first_line": source, "peak_increment": peak, "retained": peak // 2,
            "rss_after": 900 * MiB, "heap_peak_increment": 3 * MiB,
            "numpy_peak_increment": peak, "children_peak": 0, "seconds": 1.25,
            "status": "ok", "peak_rss": 1000 * MiB}


def variable(name, kind, size, why=None):
    return {"name": name, "type": kind, "bytes": size, "exclusive": size, "complete": True,
            "holders": [{"label": "Out[12]", "kind": "output_cache", "out_index": 12},
                        {"label": "_", "kind": "output_name", "key": "_"},
                        {"label": "_12", "kind": "output_name", "key": "_12"}], "shares": [], "created_cell": 12,
            "rebound_cell": 14, "last_used_cell": 15, "idle_cells": 3, "why": why}


CELLS = [cell(12, 760 * MiB, LONG_SOURCE), cell(13, 4 * MiB, "x = 1")]
VARIABLES = [variable(LONG_NAME, LONG_TYPE, 740 * MiB, WHY), variable("x", "int", 28)]
REPORT = {"process": {"rss": 1100 * MiB, "limit": 16384 * MiB, "limit_source": "MemTotal",
                      "available": 15000 * MiB, "peak_method": "hwm",
                      "heap_method": "pymalloc-raw+arena", "unavailable": {}},
          "cells": CELLS}


def text(width, view="summary"):
    return Report(REPORT, view, CELLS, VARIABLES).text(width).splitlines()


def row(lines, start):
    return next(line for line in lines if line.lstrip().startswith(start))


def test_at_80_columns_no_line_is_wider_than_the_terminal():
    lines = text(80)
    assert max(map(len, lines)) <= 80, "\n".join(lines)
    heading = row(lines, "cell")
    for kept in ("cell", "peak +", "retained", "source"):
        assert kept in heading
    assert "heap peak +" not in heading and "numpy peak +" not in heading
    # The figures the user came for are whole; only the source is cut.
    line = row(lines, "12 ")
    assert "+760 MiB" in line and "+380 MiB" in line
    source = line.split("  ")[-1]
    assert source.endswith("…") and LONG_SOURCE.startswith(source[:-1]) and len(source) > 16


def test_at_80_columns_variables_cut_names_and_types_and_wrap_sentences_between_words():
    lines = text(80, view="vars")
    assert max(map(len, lines)) <= 80, "\n".join(lines)
    line = row(lines, LONG_NAME[:8])
    assert "740 MiB" in line
    name, kind = line.split()[0], line.split("  ")[1:]
    assert name.endswith("…") and LONG_NAME.startswith(name[:-1])
    assert any(part.endswith("…") and LONG_TYPE.startswith(part.strip()[:-1]) for part in kind)
    first = lines.index(next(l for l in lines if l.startswith("  · ")))
    why = lines[first:]
    assert len(why) > 1 and all(l.startswith("    ") for l in why[1:])
    assert " ".join(l.strip() for l in why).removeprefix("· ") == WHY


def test_at_200_columns_every_column_and_every_word_is_shown():
    lines = text(200)
    assert max(map(len, lines)) <= 200
    assert "…" not in "\n".join(lines)
    for heading in ("heap peak +", "numpy peak +", "children", "time", "RSS after", "rebound",
                    "created"):
        assert heading in "\n".join(lines)
    assert row(lines, "12 ").endswith(LONG_SOURCE)
    assert LONG_NAME in row(lines, LONG_NAME) and LONG_TYPE in row(lines, LONG_NAME)


def test_without_a_terminal_nothing_is_cut(monkeypatch):
    # A kernel: no COLUMNS, and stdout is a pipe, which has no size.
    monkeypatch.delenv("COLUMNS", raising=False)

    def not_a_terminal(fd=None):
        raise OSError(25, "Inappropriate ioctl for device")

    monkeypatch.setattr(os, "get_terminal_size", not_a_terminal)
    assert terminal_width() is None
    lines = text(None)
    assert "…" not in "\n".join(lines) and row(lines, "12 ").endswith(LONG_SOURCE)


def test_columns_from_the_frontend_set_the_width(monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    assert terminal_width() == 80
    lines = Report(REPORT, "summary", CELLS, VARIABLES).text().splitlines()
    assert max(map(len, lines)) <= 80


TERMINAL = textwrap.dedent("""
    from IPython.terminal.interactiveshell import TerminalInteractiveShell
    shell = TerminalInteractiveShell.instance(colors="nocolor")
    for cell in ["%load_ext memtamer",
                 "blob = b'x' * (64 * 2**20)  # a comment long enough to be cut at 80 columns",
                 "print('REPORT')",
                 "%memreport"]:
        shell.run_cell(cell, store_history=True)
""")


def test_terminal_ipython_at_80_columns():
    env = dict(os.environ, COLUMNS="80")
    result = subprocess.run([sys.executable, "-c", TERMINAL], capture_output=True, text=True,
                            timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.partition("REPORT\n")[2].splitlines()
    assert lines and max(map(len, lines)) <= 80, result.stdout
    line = row(lines, "2 ")
    assert "+64 MiB" in line and line.endswith("…")


def test_a_number_in_a_cut_column_goes_whole():
    from memtamer.render import _cut
    assert _cut("ndarray float64 4194304", 21) == "ndarray float64…"
    assert _cut("DataFrame 1000000 rows × 48 columns", 14) == "DataFrame…"
    assert _cut("abcdefghij", 5) == "abcd…"
    lines = Report(REPORT, "vars", CELLS,
                   [variable("arr", "ndarray float64 4194304", 32 * MiB)]).text(60).splitlines()
    assert not any("41943…" in line or "4194…" in line for line in lines), "\n".join(lines)


def test_the_failed_cell_mark_is_explained():
    failed = dict(cell(14, 2 * MiB, "raise ValueError()"), status="error")
    lines = Report(REPORT, "cells", CELLS + [failed]).text(80).splitlines()
    assert row(lines, "14 !")
    assert any(line.strip().startswith("! the cell raised an exception") for line in lines)
    assert not any("! the cell" in line for line in text(80, "cells"))  # only when one failed


def test_chart_ticks_are_round_and_cover_the_figures():
    from memtamer.render import chart_ticks
    from memtamer.sizes import format_size
    ticks = chart_ticks(0, 1100 * MiB)
    assert [format_size(t) for t in ticks] == ["0 B", "500 MiB", "1000 MiB", "1.5 GiB"]
    ticks = chart_ticks(-300 * MiB, 1024 * MiB)
    assert ticks[0] <= -300 * MiB and ticks[-1] >= 1024 * MiB and 0 in ticks
    for high in (1, 3, 40 * MiB, 5 * 1024 * MiB, 3 * 1024**5):
        ticks = chart_ticks(0, high)
        assert 2 <= len(ticks) <= 6 and ticks[-1] >= high


def test_html_tables_right_align_numbers_and_show_code():
    from memtamer.render import svg_chart
    html = Report(REPORT, "cells", CELLS)._repr_html_()
    assert '<td style="text-align:right;white-space:nowrap;font-variant-numeric:tabular-nums">'\
        '+760 MiB</td>' in html
    assert f'<td style="text-align:left"><code>{LONG_SOURCE[:20]}' in html
    chart = svg_chart(CELLS)
    assert chart.count('class="tick"') >= 6 and 'class="spike"' in chart
    assert svg_chart(CELLS[:1]) == ""  # one cell: nothing to compare


ACCOUNT = {"rss": 1100 * MiB, "remainder": 3 * MiB,
           "unexplained": "memory no part names: modules imported since load",
           "parts": [{"part": "ipython_caches", "what": "IPython's caches (Out, _, _N, %run namespaces)",
                      "bytes": 740 * MiB, "action": "%shrink del frames_by_station_and_day"},
                     {"part": "freed_heap", "what": "heap freed but not returned (malloc's free bytes)",
                      "bytes": 2 * MiB, "action": "%shrink trim"}],
           "held": [{"holders": VARIABLES[0]["holders"], "type": LONG_TYPE, "bytes": 740 * MiB,
                     "part": "ipython_caches", "was": LONG_NAME,
                     "action": f"%shrink del {LONG_NAME}"}]}


def test_the_account_fits_80_columns_and_keeps_its_figures():
    lines = Report(dict(REPORT, account=ACCOUNT), "summary", CELLS, VARIABLES).text(80).splitlines()
    assert max(map(len, lines)) <= 80, "\n".join(lines)
    assert "740 MiB" in row(lines, "IPython's") and "2.0 MiB" in row(lines, "heap freed")
    assert any("Out[12]" in line and "740 MiB" in line for line in lines)
