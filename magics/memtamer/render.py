"""Rendering of memtamer's reports: aligned text for terminals, HTML with a
small inline SVG chart for notebooks.  Pure functions over report dicts."""

import html
import math
import shutil
import textwrap

from .children import biggest
from .holders import CACHE_KINDS, NAME_KINDS
from .sizes import format_size
from .telemetry import printable

CELL_COLUMNS = (
    # (heading, key, signed size?)
    ("cell", "cell", None),
    ("peak +", "peak_increment", True),
    ("retained", "retained", True),
    ("RSS after", "rss_after", False),
    ("heap peak +", "heap_peak_increment", True),
    ("numpy peak +", "numpy_peak_increment", True),
    ("Arrow peak +", "arrow_peak_increment", True),
    ("Arrow retained", "arrow_retained", True),
    ("children", "children_peak", False),
    ("swap +", "swapped", True),
    ("major faults", "major_faults", None),
    ("time", "seconds", None),
    ("source", "first_line", None),
)
# Narrow terminals: the order in which cell columns go, and the columns cut
# with an ellipsis (down to the given width) rather than dropped.
CELL_DROP_ORDER = ("Arrow retained", "Arrow peak +", "major faults", "heap peak +", "numpy peak +",
                   "children", "swap +", "time", "RSS after")
# Columns shown only when some cell has the figure (Arrow's pool: once
# pyarrow is imported).
CELL_IF_ANY = ("arrow_retained",)
# Columns shown only when some cell has a figure other than zero: swap,
# where the kernel went to it or brought pages back from disk.
CELL_IF_NONZERO = ("swapped", "major_faults")
CELL_CUTTABLE = {"source": 16}
INDENT = "  "
ELLIPSIS = "…"
FAILED_MARK = " !"
FAILED_MARK_LEGEND = "! the cell raised an exception (its figures are up to where it stopped)"


def _cell_value(record, key, signed):
    value = record.get(key)
    if key == "seconds":
        return f"{value:.3f} s" if value is not None else "n/a"
    if key == "cell":
        text = "-" if value is None else str(value)
        return text + (FAILED_MARK if record.get("status") == "error" else "")
    if key == "first_line":
        return value or ""
    if key == "children_peak" and not value:
        return "-" if value == 0 else "n/a"
    if key == "major_faults":
        return "n/a" if value is None else str(value)
    return format_size(value, signed=bool(signed))


def process_lines(process):
    rss = format_size(process.get("rss"))
    limit = format_size(process.get("limit"))
    lines = [f"RSS {rss} of {limit} ({process.get('limit_source') or 'limit unknown'})"
             + _shared_figure(process.get("shared"))]
    if process.get("available") is not None:
        lines[0] += f" · headroom {format_size(process['available'])}"
    lines.append(
        f"peaks: {process.get('peak_method')} · heap hooks: "
        f"{process.get('heap_method') or 'off'}"
    )
    for figure, why in sorted((process.get("unavailable") or {}).items()):
        lines.append(f"unavailable: {figure} ({why})")
    return lines


def terminal_width():
    """Columns of the terminal: $COLUMNS (which frontends set), else the size
    of the tty on stdout; None without a terminal (a kernel's text/plain),
    where tables keep every column."""
    return shutil.get_terminal_size(fallback=(0, 0)).columns or None


def _cut(text, width):
    """text in width columns, cut with an ellipsis; a number is never cut
    in the middle (4194304 does not become 41943…): it goes whole."""
    if len(text) <= width:
        return text
    head = text[:width - 1]
    if head[-1:].isdigit() and text[width - 1].isdigit():
        head = head.rstrip("0123456789.,")
    return head.rstrip() + ELLIPSIS


def _layout(headings, rows, width, drop_order, cuttable):
    """The columns to show and their widths: the natural widths when they fit,
    else the cuttable columns share the room left (each at least its minimum),
    dropping columns in drop_order until that minimum fits."""
    natural = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
               for i, h in enumerate(headings)]
    shown = list(range(len(headings)))
    if width is None:
        return shown, natural
    dropped = [headings.index(h) for h in drop_order if h in headings]
    while True:
        cut = [i for i in shown if headings[i] in cuttable]
        fixed = sum(natural[i] for i in shown if i not in cut) + len(INDENT) * (len(shown) - 1)
        widths = dict(zip(shown, (natural[i] for i in shown)))
        for i in cut:
            widths[i] = min(natural[i], cuttable[headings[i]])
        spare = width - fixed - sum(widths[i] for i in cut)
        if spare >= 0 or not dropped:
            break
        shown.remove(dropped.pop(0))
    # Hand the room left to the cut columns, evenly, up to what each needs.
    needy = [i for i in cut if widths[i] < natural[i]]
    while spare > 0 and needy:
        share = max(1, spare // len(needy))
        for i in needy:
            grant = min(share, natural[i] - widths[i], spare)
            widths[i] += grant
            spare -= grant
        needy = [i for i in needy if widths[i] < natural[i]]
    return shown, [widths[i] for i in shown]


def _table_text(headings, rows, width=None, drop_order=(), cuttable=None):
    """Aligned lines, at most width columns wide when width is given: the
    columns in drop_order go first to last, the cuttable ones ({heading:
    minimum width}) are cut with an ellipsis."""
    shown, widths = _layout(headings, rows, width, drop_order, cuttable or {})

    def line(values):
        cells = [_cut(values[i], w) for i, w in zip(shown, widths)]
        return INDENT.join(c.rjust(w) if n < len(cells) - 1 else c
                           for n, (c, w) in enumerate(zip(cells, widths)))

    return [line(headings)] + [line(row) for row in rows]


def _wrapped(text, width, first=INDENT, rest=INDENT * 2):
    """text as lines of at most width columns, broken between words."""
    if width is None:
        return [first + text]
    return textwrap.wrap(text, width, initial_indent=first, subsequent_indent=rest,
                         break_long_words=False, break_on_hyphens=False)


def cell_columns(cells):
    """CELL_COLUMNS less the optional ones no cell has a figure for."""
    absent = {key for key in CELL_IF_ANY if all(c.get(key) is None for c in cells)}
    absent |= {key for key in CELL_IF_NONZERO if not any(c.get(key) for c in cells)}
    if "arrow_retained" in absent:
        absent.add("arrow_peak_increment")
    return [column for column in CELL_COLUMNS if column[1] not in absent]


def cell_rows(cells):
    columns = cell_columns(cells)
    return [[_cell_value(c, key, signed) for _, key, signed in columns] for c in cells]


def _room(width):
    return None if width is None else width - len(INDENT)


def cells_text(cells, title, width=None):
    headings = [h for h, _, _ in cell_columns(cells)]
    if not cells:
        return [title] + _wrapped("(no cells measured yet: memtamer measures the cells run "
                                  "after it is loaded)", width)
    lines = [title] + [INDENT + line for line in _table_text(
        headings, cell_rows(cells), _room(width), CELL_DROP_ORDER, CELL_CUTTABLE)]
    if any(c.get("status") == "error" for c in cells):
        lines += _wrapped(FAILED_MARK_LEGEND, width)
    return lines


# HTML --------------------------------------------------------------------
# Inline styles, not a stylesheet: a notebook keeps them in untrusted outputs
# too, and they win over JupyterLab's own table rules (which right-align
# every cell).  Numbers never wrap and line up (tabular numerals).
_NUMBER_STYLE = "text-align:right;white-space:nowrap;font-variant-numeric:tabular-nums"
_TEXT_STYLE = "text-align:left"
_CODE_HEADINGS = frozenset(("source",))


def _html_text(text):
    """Escaped text whose `backticked` parts are shown as code."""
    parts = html.escape(text).split("`")
    if len(parts) % 2 == 0:  # an odd backtick: nothing to pair
        return html.escape(text)
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def html_table(headings, rows, numeric, css_class="memtamer"):
    """A table: the columns named in numeric right-aligned and unwrapped,
    the others left-aligned; source columns as code."""
    def cell(tag, heading, value, escape):
        style = _NUMBER_STYLE if heading in numeric else _TEXT_STYLE
        if tag == "td" and heading in _CODE_HEADINGS and value:
            content = f"<code>{html.escape(value)}</code>"
        else:
            content = escape(value)
        return f'<{tag} style="{style}">{content}</{tag}>'

    head = "".join(cell("th", h, h, html.escape) for h in headings)
    body = "".join("<tr>" + "".join(cell("td", h, v, _html_text) for h, v in zip(headings, row))
                   + "</tr>" for row in rows)
    return (f'<table class="{css_class}"><thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table>")


# The chart ---------------------------------------------------------------
# Colours that read on light and dark backgrounds alike; text, axes and the
# RSS line take the page's own text colour (currentColor).
CHART_KEPT = "#4878c8"
CHART_TEMPORARY = "#e8913a"
CHART_FREED = "#3f9a5a"
CHART_BAR_WIDTH = 12  # at least, per cell: more cells scroll sideways
CHART_LABELS = 16  # cell numbers under the axis, at most


# Tick steps: 1, 2 and 5 times ten to a power, of a binary unit, so that
# every tick reads exactly ("500 MiB", "1.5 GiB").
_TICK_STEPS = sorted(m * 10**e * unit for unit in (1, 1024, 1024**2, 1024**3, 1024**4)
                     for e in (0, 1, 2) for m in (1, 2, 5) if m * 10**e < 1024)


def chart_ticks(low, high):
    """Round ticks covering low..high with at most 5 steps on the larger
    side of zero; low <= 0 <= high."""
    span = max(high, -low, 1)
    step = next((s for s in _TICK_STEPS if math.ceil(span / s) <= 5), None)
    if step is None:
        step = _TICK_STEPS[-1] * math.ceil(span / (5 * _TICK_STEPS[-1]))
    bottom = -math.ceil(-low / step) * step
    top = max(math.ceil(high / step), 1) * step
    return list(range(bottom, top + 1, step))


def _chart_parts(cell):
    """(kept, temporary, freed) bytes of a cell: what its peak left behind,
    what it held only for a while, and what it gave back."""
    peak = max(cell.get("peak_increment") or 0, 0)
    retained = cell.get("retained") or 0
    kept = min(max(retained, 0), peak)
    return kept, peak - kept, min(retained, 0)


def svg_chart(cells, height=240):
    """Per cell, its peak increment as a bar (what it kept, below what was
    temporary; what it freed below zero), and the RSS after it as a line
    on a second axis; the biggest spike labelled."""
    points = [c for c in cells if c.get("peak_increment") is not None
              and c.get("rss_after") is not None]
    if len(points) < 2:
        return ""
    left, right, top_margin, bottom_margin = 64, 64, 28, 40
    plot_w = max(520, CHART_BAR_WIDTH * len(points))
    width, plot_h = left + plot_w + right, height - top_margin - bottom_margin
    parts = [_chart_parts(c) for c in points]
    ticks = chart_ticks(min(f for _, _, f in parts), max(k + t for k, t, _ in parts))
    rss_ticks = chart_ticks(0, max(c["rss_after"] for c in points))

    def y(value, scale):
        return top_margin + plot_h * (scale[-1] - value) / (scale[-1] - scale[0])

    step = plot_w / len(points)
    out = []
    for tick in ticks:  # the left axis: increments
        ty = y(tick, ticks)
        out.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{ty:.1f}" y2="{ty:.1f}" '
                   f'stroke="currentColor" stroke-opacity="{0.6 if tick == 0 else 0.15}"/>'
                   f'<text class="tick" x="{left - 6}" y="{ty + 4:.1f}" text-anchor="end">'
                   f"{html.escape(format_size(tick, signed=tick != 0))}</text>")
    for tick in rss_ticks:  # the right axis: RSS after
        out.append(f'<text class="tick" x="{left + plot_w + 6}" y="{y(tick, rss_ticks) + 4:.1f}">'
                   f"{html.escape(format_size(tick))}</text>")
    every = math.ceil(len(points) / CHART_LABELS)
    spike = max(range(len(points)), key=lambda i: points[i]["peak_increment"])
    line = []
    for i, (c, (kept, temporary, freed)) in enumerate(zip(points, parts)):
        x, bar = left + i * step + step * 0.15, step * 0.7
        label = _cell_text(c.get("cell"))
        title = (f"cell {label}: peak {format_size(c['peak_increment'], signed=True)}, "
                 f"retained {format_size(c.get('retained'), signed=True)}, RSS after "
                 f"{format_size(c['rss_after'])}")
        for low, high, colour, kind in ((0, kept, CHART_KEPT, "kept"),
                                        (kept, kept + temporary, CHART_TEMPORARY, "temporary"),
                                        (freed, 0, CHART_FREED, "freed")):
            if high > low:
                out.append(f'<rect class="bar {kind}" data-cell="{html.escape(label)}" '
                           f'x="{x:.1f}" y="{y(high, ticks):.1f}" width="{bar:.1f}" '
                           f'height="{y(low, ticks) - y(high, ticks):.1f}" fill="{colour}">'
                           f"<title>{html.escape(title)}</title></rect>")
        if i % every == 0 or i == spike:
            out.append(f'<text class="cell-label" x="{x + bar / 2:.1f}" '
                       f'y="{top_margin + plot_h + 16}" text-anchor="middle">'
                       f"{html.escape(label)}</text>")
        line.append(f"{x + bar / 2:.1f},{y(c['rss_after'], rss_ticks):.1f}")
    s = points[spike]
    out.append(f'<text class="spike" x="{left + spike * step + step / 2:.1f}" '
               f'y="{y(s["peak_increment"], ticks) - 6:.1f}" text-anchor="middle" '
               f'font-weight="bold">{html.escape(format_size(s["peak_increment"], signed=True))}'
               "</text>")
    out.append(f'<polyline class="rss" points="{" ".join(line)}" fill="none" '
               'stroke="currentColor" stroke-width="1.5" stroke-dasharray="4 2"/>')
    axes = (f'<text class="axis" x="{left}" y="14">peak above the cell\'s start</text>'
            f'<text class="axis" x="{left + plot_w}" y="14" text-anchor="end">RSS after the cell'
            "</text>"
            f'<text class="axis" x="{left + plot_w / 2:.1f}" y="{height - 4}" '
            'text-anchor="middle">cell</text>')
    legend = "".join(
        f'<span style="white-space:nowrap;margin-right:1em"><span style="display:inline-block;'
        f'width:0.8em;height:0.8em;background:{colour};margin-right:0.3em"></span>{words}</span>'
        for colour, words in ((CHART_KEPT, "kept (retained)"),
                              (CHART_TEMPORARY, "temporary (peak above what was kept)"),
                              (CHART_FREED, "freed")))
    legend += ('<span style="white-space:nowrap">- - RSS after the cell (right axis)</span>')
    return (
        '<div class="memtamer-chart" style="overflow-x:auto;max-width:100%">'
        f'<svg width="{width}" height="{height}" role="img" font-size="11" fill="currentColor" '
        f'aria-label="peak and retained memory per cell, RSS after each cell" '
        f'style="color:inherit">{axes}{"".join(out)}</svg>'
        f'<div style="font-size:0.85em">{legend}</div></div>'
    )


_CELL_NUMERIC = frozenset(h for h, _, signed in CELL_COLUMNS if signed is not None) | {"time"}


def cells_html(cells, title):
    if not cells:
        return f"<p><b>{html.escape(title)}</b>: no cells measured yet.</p>"
    headings = [h for h, _, _ in cell_columns(cells)]
    return (f"<p><b>{html.escape(title)}</b></p>"
            + html_table(headings, cell_rows(cells), _CELL_NUMERIC | {"cell"}))


# The account ------------------------------------------------------------

ACCOUNT_COLUMNS = ("part", "size", "what frees it")
HELD_COLUMNS = ("held by", "type", "size", "part", "what frees it")
ACCOUNT_CUTTABLE = {"part": 16, "what frees it": 12}
HELD_DROP_ORDER = ("part",)
HELD_CUTTABLE = {"held by": 12, "type": 12, "what frees it": 12}


def account_rows(account):
    rows = [[p["what"], format_size(p["bytes"]), p["action"] or ""] for p in account["parts"]]
    rows.append(["unexplained remainder", format_size(account["remainder"], signed=True), ""])
    return rows


def held_rows(account):
    rows = []
    for row in account["held"]:
        held_by = _join_names(_holder_labels(row["holders"]))
        if row.get("was"):
            held_by += f" (was {row['was']})"
        rows.append([held_by, row["type"], format_size(row["bytes"]), row["part"],
                     row["action"] or ""])
    return rows


def account_text(account, width=None):
    title = f"where the RSS ({format_size(account['rss'])}) is"
    lines = [title] + [INDENT + line for line in _table_text(
        list(ACCOUNT_COLUMNS), account_rows(account), _room(width), (), ACCOUNT_CUTTABLE)]
    held = held_rows(account)
    if held:
        lines += ["held outside your variables"] + [INDENT + line for line in _table_text(
            list(HELD_COLUMNS), held, _room(width), HELD_DROP_ORDER, HELD_CUTTABLE)]
    return lines + _wrapped("unexplained: " + account["unexplained"], width)


def account_html(account):
    held = held_rows(account)
    return (f"<p><b>where the RSS ({html.escape(format_size(account['rss']))}) is</b></p>"
            + html_table(ACCOUNT_COLUMNS, account_rows(account), {"size"})
            + (f"<p><b>held outside your variables</b></p>"
               f"{html_table(HELD_COLUMNS, held, {'size'})}" if held else "")
            + f"<p><i>unexplained: {html.escape(account['unexplained'])}</i></p>")


# Children ------------------------------------------------------------------
CHILD_HEADINGS = ("pid", "cell", "private", "shared", "role", "command")
CHILD_DROP_ORDER = ("shared", "cell", "role")
CHILD_CUTTABLE = {"command": 16, "role": 24}
CHILDREN_NONE = "(no child processes)"
BIGGEST_CHILDREN = "biggest child processes"


def _role_text(child):
    role = child.get("role") or ""
    if child.get("memory_limit"):
        role += f" (memory_limit {format_size(child['memory_limit'])})"
    return role


def child_rows(children, indent=True):
    """One row per child; in a tree (indent) each pid is indented by its depth."""
    return [[(INDENT * c.get("depth", 0) if indent else "") + str(c["pid"]),
             "" if c["cell"] is None else str(c["cell"]),
             "?" if c["private"] is None else format_size(c["private"]),
             "?" if c["shared"] is None else format_size(c["shared"]),
             printable(_role_text(c)), printable(c["command"])] for c in children]


def children_text(children, title, width=None, indent=True):
    if not children:
        return [title] + _wrapped(CHILDREN_NONE, width)
    return [title] + [INDENT + line for line in _table_text(
        CHILD_HEADINGS, child_rows(children, indent), _room(width), CHILD_DROP_ORDER,
        CHILD_CUTTABLE)]


def children_html(children, title, indent=True):
    body = (html_table(CHILD_HEADINGS, child_rows(children, indent), {"pid", "private", "shared"})
            if children else f"<p><i>{html.escape(CHILDREN_NONE)}</i></p>")
    return f"<p><b>{html.escape(title)}</b></p>{body}"


class ChildrenReport:
    """%memreport children: the process tree under the kernel."""

    def __init__(self, children):
        self.children = children

    def text(self, width=None):
        return "\n".join(children_text(self.children, "child processes",
                                        width or terminal_width()))

    def __repr__(self):
        return self.text()

    def _repr_pretty_(self, printer, cycle):
        printer.text(self.text())

    def _repr_html_(self):
        return f'<div class="memtamer-report">{children_html(self.children, "child processes")}</div>'


class Report:
    """What %memreport displays: text in terminals, HTML in notebooks."""

    def __init__(self, report, view, cells, variables=None):
        self.report = report
        self.view = view
        self.cells = cells
        self.variables = variables

    def _title(self):
        return "heaviest cells" if self.view == "summary" else "cells"

    def _variables_title(self):
        return "biggest variables" if self.view == "summary" else "variables"

    def text(self, width=None):
        """Aligned text; its tables fit width columns (default: the
        terminal's, see terminal_width)."""
        width = width or terminal_width()
        process = process_lines(self.report["process"])
        lines = _wrapped("memtamer — " + process[0], width, first="")
        for line in process[1:]:
            lines += _wrapped(line, width)
        if self.view != "vars":
            lines += cells_text(self.cells, self._title(), width)
        if self.variables is not None:
            lines += variables_text(self.variables, self._variables_title(),
                                    self.report.get("variables_walk"), width)
        if self.report.get("account") and self.view in ("summary", "vars"):
            lines += account_text(self.report["account"], width)
        if self.report.get("children") and self.view == "summary":
            lines += children_text(biggest(self.report["children"]), BIGGEST_CHILDREN, width,
                                   indent=False)
        return "\n".join(lines)

    def __repr__(self):
        return self.text()

    def _repr_pretty_(self, printer, cycle):
        printer.text(self.text())

    def _repr_html_(self):
        process = process_lines(self.report["process"])
        return (
            '<div class="memtamer-report">'
            f"<p><b>memtamer</b> — {html.escape(process[0])}<br>"
            + "<br>".join(html.escape(line) for line in process[1:])
            + "</p>"
            + ("" if self.view == "vars" else svg_chart(self.report["cells"])
               + cells_html(self.cells, self._title()))
            + ("" if self.variables is None else variables_html(
                self.variables, self._variables_title(), self.report.get("variables_walk")))
            + (account_html(self.report["account"])
               if self.report.get("account") and self.view in ("summary", "vars") else "")
            + (children_html(biggest(self.report["children"]), BIGGEST_CHILDREN, indent=False)
               if self.report.get("children") and self.view == "summary" else "")
            + "</div>"
        )


# A cell this many times slower than its CPU time is said to have been slowed.
SLOWED_RATIO = 2.0


def swap_notice(record):
    """The line after a cell that pushed memory to swap: how much, what the
    kernel holds there now, the pages it waited for from disk, and how much
    slower than its CPU time it ran."""
    cell = "this cell" if record.get("cell") is None else f"cell {record['cell']}"
    faults = record.get("major_faults")
    waited = f", and waited for {faults} pages from disk" if faults else ""
    seconds, cpu = record.get("seconds"), record.get("cpu_seconds")
    if seconds and cpu and seconds >= SLOWED_RATIO * cpu:
        ratio = seconds / cpu
        waited += (f"; it ran {ratio:.1f}" if ratio < 10 else f"; it ran {ratio:.0f}") + \
            f"× slower than its CPU time ({seconds:.1f} s for {cpu:.1f} s of CPU)"
    return (f"memtamer: {cell} pushed {format_size(record['swapped'])} to swap (the kernel has "
            f"{format_size(record['swap_after'])} there now){waited}; swap is slow memory: "
            "%memguard --no-swap stops such a cell instead")


def notice(record, process):
    """One line after a heavy cell, naming the line whose temporaries were
    the largest part of the peak, if any."""
    top = top_temporaries(record.get("peak_composition"))
    return (
        f"cell {record.get('cell')}: peak {format_size(record.get('peak_increment'), signed=True)}"
        + (f", {format_size(top['temporary'])} of it temporaries from {where(top)}" if top else "")
        + f", retained {format_size(record.get('retained'), signed=True)} · "
        f"RSS {format_size(process.get('rss'))} of {format_size(process.get('limit'))}"
        + _shared_figure(process.get("shared"))
    )

# Peak composition --------------------------------------------------------

PEAK_COLUMNS = ("where", "at peak", "temporary", "kept", "blocks", "source")
PEAK_NUMERIC = frozenset(("at peak", "temporary", "kept", "blocks"))


def where(group):
    """'line 3', 'scale (In[4]) line 2, called by line 1', 'native/worker thread'."""
    if group["origin"] != "code":
        return group["origin"]
    line = f"line {group['line']}" if group.get("line") else "outside the cell's code"
    if not group.get("function"):
        return line
    defined = f" (In[{group['function_cell']}])" if group.get("function_cell") is not None else ""
    return f"{group['function']}{defined} line {group['function_line']}, called by {line}"


def top_temporaries(composition):
    """The group with the most temporary bytes, or None."""
    groups = [g for g in (composition or {}).get("groups", ()) if g["temporary"] > 0]
    return max(groups, key=lambda g: g["temporary"]) if groups else None


def peak_row(group):
    return [where(group), format_size(group["bytes"]), format_size(group["temporary"]),
            format_size(group["kept"]), str(group["blocks"]), group.get("text") or ""]


def _outside(record, counted):
    """'; 300 MiB outside Python's, numpy's and Arrow's allocators': what of
    the RSS peak no allocator memtamer reads accounts for ('' when none or
    unknown).  Arrow's pool counts where its peak in the cell is known."""
    increment = record.get("peak_increment")
    arrow = record.get("arrow_peak_increment")
    if increment is None:
        return ""
    rest = increment - counted - (arrow or 0)
    if rest <= 0:
        return ""
    allocators = "Python's, numpy's and Arrow's" if arrow is not None else "Python's and numpy's"
    return f"; {format_size(rest)} outside {allocators} allocators"


# Why memory outside Python's and numpy's allocators has no lines.
UNFOLLOWED = ("it came from allocators memtamer cannot follow block by block (Arrow's pool "
              "reports only its totals; polars' and torch's CPU allocators, other C libraries "
              "and newly loaded code report nothing)")


def unfollowed_text(record):
    """'+384 MiB of its RSS peak (+384 MiB in Arrow's pool) came from
    allocators ...': why part of a cell's peak has no line, '' when none."""
    increment = record.get("peak_increment")
    composition = record.get("peak_composition")
    counted = composition["at"] if composition else 0
    arrow = record.get("arrow_peak_increment")
    rest = max(increment - counted, arrow or 0) if increment is not None else arrow
    if not rest or rest <= 0:
        return ""
    return (f"{format_size(rest, signed=True)} of its peak"
            + (f" ({format_size(arrow, signed=True)} in Arrow's pool)" if arrow else "")
            + f" has no line: {UNFOLLOWED}")


def _peak_title(record):
    composition = record["peak_composition"]
    arrow = record.get("arrow_peak_increment")
    return (f"peak of cell {_cell_text(record.get('cell'))}: "
            f"{format_size(record.get('peak_increment'), signed=True)} (RSS), "
            f"{format_size(composition['at'], signed=True)} counted at its highest, "
            f"{format_size(composition['attributed'])} of it in blocks of "
            f"{format_size(composition['block_threshold'])} or more"
            + (f"; {format_size(arrow, signed=True)} in Arrow's pool" if arrow else "")
            + _outside(record, composition["at"]))


def peak_text(record):
    composition = record["peak_composition"]
    lines = [_peak_title(record)]
    lines += ["  " + line for line in
              _table_text(list(PEAK_COLUMNS), [peak_row(g) for g in composition["groups"]])]
    lines += [f"  · {where(g)}: {g['suggestion']}" for g in composition["groups"]
              if g.get("suggestion")]
    unfollowed = unfollowed_text(record)
    return lines + ([f"  · {unfollowed}"] if unfollowed else [])


def peak_html(record):
    composition = record["peak_composition"]
    advice = "".join(f"<li>{html.escape(where(g))}: {_html_text(g['suggestion'])}</li>"
                     for g in composition["groups"] if g.get("suggestion"))
    unfollowed = unfollowed_text(record)
    advice += f"<li>{html.escape(unfollowed)}</li>" if unfollowed else ""
    return (f"<p><b>{html.escape(_peak_title(record))}</b></p>"
            + html_table(PEAK_COLUMNS, [peak_row(g) for g in composition["groups"]],
                         PEAK_NUMERIC)
            + (f"<ul>{advice}</ul>" if advice else ""))


class PeakReport:
    """What %memreport peak displays for one cell."""

    def __init__(self, record):
        self.record = record

    def text(self):
        return "\n".join(peak_text(self.record))

    def __repr__(self):
        return self.text()

    def _repr_pretty_(self, printer, cycle):
        printer.text(self.text())

    def _repr_html_(self):
        return f'<div class="memtamer-report">{peak_html(self.record)}</div>'


def _shared_figure(shared):
    """' · container 2.1 GiB of 3.0 GiB' (or machine): memory shared with others."""
    if not shared:
        return ""
    whose = "machine" if shared["source"] == "machine" else "container"
    return f" · {whose} {format_size(shared['use'])} of {format_size(shared['limit'])}"


SHRINK_COLUMNS = ("name", "action", "result", "bytes", "RSS", "peak", "time", "note")
SHRINK_NUMERIC = frozenset(("bytes", "RSS", "peak", "time"))


def shrink_row(row):
    """One %shrink result as table cells: before → after bytes of the
    variable, RSS before → after, the action's own peak, time."""
    status = row.get("status")
    result = {"done": "", "dry-run": "dry run: ", "refused": "REFUSED ", "error": "FAILED "}.get(status, "")
    return [
        row.get("name", ""),
        row.get("action", ""),
        result + (row.get("detail") or ""),
        f"{format_size(row.get('bytes_before'))} → {format_size(row.get('bytes_after'))}",
        f"{format_size(row.get('rss_before'))} → {format_size(row.get('rss_after'))}",
        f"{format_size(row.get('peak_rss'))} ({format_size(row.get('peak_increment'), signed=True)})",
        f"{row['seconds']:.2f} s" if row.get("seconds") is not None else "n/a",
        row.get("reason") or "",
    ]


def gone_notice(records):
    """After a cell whose del or rebinding freed less than the name held
    (records of _core.ledger_gone()): who still holds it, and what frees it."""
    lines = []
    for g in records:
        how = f"rebinding {g['name']}" if g["rebound"] else f"del {g['name']}"
        labels = _holder_labels(g["holders"])
        caches = [h for h in g["holders"] if h["kind"] in CACHE_KINDS]
        variables = [h for h in g["holders"] if h["kind"] in NAME_KINDS]
        advice = f"; %shrink del {g['name']} frees it" if caches and len(caches) == len(labels) \
            else f"; %shrink del {g['name']} purges the caches" if caches \
            else f"; del {_join_names([h['label'] for h in variables])} too to free it" if variables \
            else ""
        lines.append(f"memtamer: {how} freed nothing: {_join_names(labels)} still "
                     f"hold{'s' if len(labels) == 1 else ''} its {format_size(g['bytes'])}{advice}")
    return "\n".join(lines)


def rerun_notice(growth):
    """After a re-run that kept more than before it ran (hooks.c's rerun_end),
    the holders that grew most first."""
    holders = [f"{g['holder']} +{format_size(g['bytes'])}"
               for g in sorted(growth["holders"], key=lambda g: -g["bytes"])]
    again = f" (as cell {growth['previous']} did)" if growth.get("previous") is not None else ""
    return (f"memtamer: cell {growth['cell']} ran the same source again{again} and kept "
            f"{format_size(growth['growth'])} more: {_join_names(holders)}")


class ShrinkReport:
    """What %shrink displays: one line (text) or row (HTML) per name."""

    def __init__(self, rows):
        self.rows = list(rows.values())

    def text(self):
        return "\n".join(_table_text(list(SHRINK_COLUMNS), [shrink_row(r) for r in self.rows]))

    def __repr__(self):
        return self.text()

    def _repr_pretty_(self, printer, cycle):
        printer.text(self.text())

    def _repr_html_(self):
        return html_table(SHRINK_COLUMNS, [shrink_row(r) for r in self.rows], SHRINK_NUMERIC,
                          css_class="memtamer-shrink")

# Variables ---------------------------------------------------------------

WHY_MIN_BYTES = 1024**2
VARIABLE_COLUMNS = ("name", "type", "size", "del frees", "holders", "created", "rebound",
                    "used", "idle")
VARIABLE_NUMERIC = frozenset(("size", "del frees", "created", "rebound", "used", "idle"))
VARIABLE_DROP_ORDER = ("rebound", "created", "used", "idle")
VARIABLE_CUTTABLE = {"name": 12, "type": 16, "holders": 10}


def _holder_labels(holders):
    return [h["label"] for h in holders]


def _join_names(names, most=3):
    if len(names) > most:
        names = names[:most] + [f"{len(names) - most} more"]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def explain(variable):
    """Why `del name` would free much less than the variable's size, in
    words; None for small variables or when del frees most of it."""
    size, freed, name = variable["bytes"], variable["exclusive"], variable["name"]
    if size < WHY_MIN_BYTES or freed is None or freed * 2 > size:
        return None
    if variable["holders"]:
        holders = _holder_labels(variable["holders"])
        return (f"del {name} would free {format_size(freed)}: "
                f"{_join_names(holders)} also hold{'s' if len(holders) == 1 else ''} it")
    # Named variables explain more than the output cache does.
    for share in sorted(variable["shares"], key=lambda s: not s["variable"]):
        shared = format_size(share["bytes"])
        if share["view"]:
            return f"{name} is a view of {share['with']} (shares {shared})"
        if share["holds"]:
            return f"{name} holds {share['with']} (shares {shared})"
    if variable["shares"]:
        others = _join_names([s["with"] for s in variable["shares"]])
        return f"del {name} would free {format_size(freed)}: it shares its buffers with {others}"
    return None


def _cell_text(cell):
    return "-" if cell is None else str(cell)


def variable_row(v):
    if v["complete"]:
        size = format_size(v["bytes"])
    elif v.get("estimate") is not None and v["estimate"] > v["bytes"]:
        size = "≈ " + format_size(v["estimate"])
    else:
        size = "≥ " + format_size(v["bytes"])
    freed = "?" if v["exclusive"] is None else format_size(v["exclusive"])
    holders = _join_names(_holder_labels(v["holders"]), most=2) if v["holders"] else "-"
    return [v["name"], v["type"], size, freed, holders, _cell_text(v["created_cell"]),
            _cell_text(v["rebound_cell"]), _cell_text(v["last_used_cell"]),
            _cell_text(v["idle_cells"])]


def _walk_note(walk):
    if walk and not walk.get("complete", True):
        return (f"the walk stopped at its time or memory budget after {walk['seconds']:.1f} s: "
                "sizes marked ≈ are estimated from the part walked, ≥ are lower bounds, "
                "'?' unknown")
    return None


def variables_text(variables, title, walk=None, width=None):
    if not variables:
        return [title, INDENT + "(no variables)"]
    lines = [title] + [INDENT + line for line in _table_text(
        list(VARIABLE_COLUMNS), [variable_row(v) for v in variables], _room(width),
        VARIABLE_DROP_ORDER, VARIABLE_CUTTABLE)]
    for v in variables:
        if v.get("why"):
            lines += _wrapped(v["why"], width, first=INDENT + "· ", rest=INDENT * 2)
    note = _walk_note(walk)
    return lines + (_wrapped(note, width) if note else [])


def variables_html(variables, title, walk=None):
    if not variables:
        return f"<p><b>{html.escape(title)}</b>: no variables.</p>"
    whys = "".join(f"<li>{_html_text(v['why'])}</li>" for v in variables if v.get("why"))
    note = _walk_note(walk)
    return (f"<p><b>{html.escape(title)}</b></p>"
            + html_table(VARIABLE_COLUMNS, [variable_row(v) for v in variables],
                         VARIABLE_NUMERIC)
            + (f"<ul>{whys}</ul>" if whys else "")
            + (f"<p><i>{html.escape(note)}</i></p>" if note else ""))
