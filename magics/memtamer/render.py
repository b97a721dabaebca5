"""Rendering of memtamer's reports: aligned text for terminals, HTML with a
small inline SVG chart for notebooks.  Pure functions over report dicts."""

import html
import shutil
import textwrap

from .sizes import format_size

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
    ("time", "seconds", None),
    ("source", "first_line", None),
)
# Narrow terminals: the order in which cell columns go, and the columns cut
# with an ellipsis (down to the given width) rather than dropped.
CELL_DROP_ORDER = ("Arrow retained", "Arrow peak +", "heap peak +", "numpy peak +", "children",
                   "time", "RSS after")
# Columns shown only when some cell has the figure (Arrow's pool: once
# pyarrow is imported).
CELL_IF_ANY = ("arrow_retained",)
CELL_CUTTABLE = {"source": 16}
INDENT = "  "
ELLIPSIS = "…"


def _cell_value(record, key, signed):
    value = record.get(key)
    if key == "seconds":
        return f"{value:.3f} s" if value is not None else "n/a"
    if key == "cell":
        text = "-" if value is None else str(value)
        return text + (" !" if record.get("status") == "error" else "")
    if key == "first_line":
        return value or ""
    if key == "children_peak" and not value:
        return "-" if value == 0 else "n/a"
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
    return text if len(text) <= width else text[:width - 1].rstrip() + ELLIPSIS


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
    return [title] + [INDENT + line for line in _table_text(
        headings, cell_rows(cells), _room(width), CELL_DROP_ORDER, CELL_CUTTABLE)]


def _svg_chart(cells, width=560, height=120):
    """RSS after each cell as a line, the cell's peak as a bar behind it."""
    points = [c for c in cells if c.get("peak_rss") is not None and c.get("rss_after") is not None]
    if len(points) < 2:
        return ""
    top = max(max(c["peak_rss"], c["rss_after"]) for c in points) or 1
    step = width / len(points)
    bars, line = [], []
    for i, c in enumerate(points):
        x = i * step
        h = c["peak_rss"] / top * (height - 10)
        bars.append(
            f'<rect x="{x + step * 0.15:.1f}" y="{height - h:.1f}" width="{step * 0.7:.1f}" '
            f'height="{h:.1f}" fill="#f4a582"><title>cell {c.get("cell")}: peak '
            f'{html.escape(format_size(c["peak_rss"]))}</title></rect>'
        )
        y = height - c["rss_after"] / top * (height - 10)
        line.append(f"{x + step / 2:.1f},{y:.1f}")
    return (
        f'<svg width="{width}" height="{height}" role="img" aria-label="RSS and peak per cell">'
        + "".join(bars)
        + f'<polyline points="{" ".join(line)}" fill="none" stroke="#2166ac" stroke-width="2"/>'
        + f'<text x="4" y="12" font-size="11" fill="#555">peak RSS (bars) and RSS after '
        f'(line) · max {html.escape(format_size(top))}</text></svg>'
    )


def cells_html(cells, title):
    if not cells:
        return f"<p><b>{html.escape(title)}</b>: no cells measured yet.</p>"
    head = "".join(f"<th>{html.escape(h)}</th>" for h, _, _ in cell_columns(cells))
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in row) + "</tr>"
        for row in cell_rows(cells)
    )
    return (
        f"<p><b>{html.escape(title)}</b></p>"
        f'<table class="memtamer"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
    )


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
            + ("" if self.view == "vars" else _svg_chart(self.report["cells"])
               + cells_html(self.cells, self._title()))
            + ("" if self.variables is None else variables_html(
                self.variables, self._variables_title(), self.report.get("variables_walk")))
            + "</div>"
        )


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
    return lines


def peak_html(record):
    composition = record["peak_composition"]
    head = "".join(f"<th>{html.escape(h)}</th>" for h in PEAK_COLUMNS)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in peak_row(g)) + "</tr>"
                   for g in composition["groups"])
    advice = "".join(f"<li>{html.escape(where(g))}: {html.escape(g['suggestion'])}</li>"
                     for g in composition["groups"] if g.get("suggestion"))
    return (f"<p><b>{html.escape(_peak_title(record))}</b></p>"
            f'<table class="memtamer"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
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
        head = "".join(f"<th>{html.escape(h)}</th>" for h in SHRINK_COLUMNS)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in shrink_row(r)) + "</tr>"
            for r in self.rows
        )
        return (f'<table class="memtamer-shrink"><thead><tr>{head}</tr></thead>'
                f"<tbody>{body}</tbody></table>")

# Variables ---------------------------------------------------------------

WHY_MIN_BYTES = 1024**2
VARIABLE_COLUMNS = ("name", "type", "size", "del frees", "holders", "created", "rebound",
                    "used", "idle")
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
    head = "".join(f"<th>{html.escape(h)}</th>" for h in VARIABLE_COLUMNS)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in variable_row(v)) + "</tr>"
                   for v in variables)
    whys = "".join(f"<li>{html.escape(v['why'])}</li>" for v in variables if v.get("why"))
    note = _walk_note(walk)
    return (f"<p><b>{html.escape(title)}</b></p>"
            f'<table class="memtamer"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
            + (f"<ul>{whys}</ul>" if whys else "")
            + (f"<p><i>{html.escape(note)}</i></p>" if note else ""))
