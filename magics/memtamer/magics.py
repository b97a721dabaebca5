"""The magics: argument parsing and display only; the figures come from _core."""

import json

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring
from IPython.display import display

from . import render
from .sizes import format_size, parse_size

SUMMARY_CELLS = 5
SUMMARY_VARIABLES = 5
SHOWN_VARIABLES = 20
SORT_KEYS = {"peak": "peak_increment", "retained": "retained", "cell": None}


def select_cells(cells, view, n=None, sort=None):
    """The cells a view shows: the summary's heaviest by peak; the table in
    execution order (the last N), or the top N by a figure."""
    if view == "summary":
        sort = sort or "peak"
        n = n or SUMMARY_CELLS
    key = SORT_KEYS[sort or "cell"]
    if key is None:
        return cells[-n:] if n else list(cells)
    ranked = sorted(cells, key=lambda c: c.get(key) if c.get(key) is not None else float("-inf"),
                    reverse=True)
    return ranked[:n] if n else ranked


def select_variables(variables, view, n=None, everything=False):
    """The variables a view shows (they come biggest first): none in the
    cells view, the top few in the summary, the top N (or all) in vars."""
    if variables is None or view == "cells":
        return None
    if view == "summary":
        return variables[:SUMMARY_VARIABLES]
    return list(variables) if everything else variables[:n or SHOWN_VARIABLES]


@magics_class
class MemtamerMagics(Magics):
    def __init__(self, shell, extension):
        super().__init__(shell)
        self.extension = extension

    @magic_arguments()
    @argument("view", nargs="?", default="summary", choices=["summary", "cells", "vars"],
              help="summary (process, the heaviest cells and biggest variables), cells (the "
                   "per-cell table) or vars (variables: size, what del frees, holders, provenance)")
    @argument("-n", type=int, default=None, metavar="N", help="show at most N cells or variables")
    @argument("--all", action="store_true", help="vars: show every variable")
    @argument("--sort", choices=sorted(SORT_KEYS), default=None,
              help="order cells by peak increment, retained memory, or execution (cell)")
    @argument("--json", action="store_true", help="print machine-readable JSON")
    @line_magic
    def memreport(self, line):
        """Show memory per cell and variable:
        %memreport [summary|cells|vars] [-n N] [--all] [--sort peak|retained|cell] [--json]"""
        args = parse_argstring(self.memreport, line)
        if args.n is not None and args.n < 1:
            raise UsageError("-n takes a positive number of cells or variables, "
                             "e.g. %memreport cells -n 10")
        report = self.extension.report()
        cells = select_cells(report["cells"], args.view, args.n, args.sort)
        variables = select_variables(report.get("variables"), args.view, args.n, args.all)
        if args.json:
            print(json.dumps({"process": report["process"], "cells": cells,
                              "variables": variables}, indent=1))
            return
        display(render.Report(report, args.view, cells, variables))

    @magic_arguments()
    @argument("--notice", metavar="SIZE|off", default=None,
              help="print a one-line notice after cells whose peak or retained memory "
                   "exceeds SIZE (e.g. 512MiB), or 'off'")
    @line_magic
    def memtamer(self, line):
        """Settings: %memtamer [--notice SIZE|off]; without options, show them."""
        args = parse_argstring(self.memtamer, line)
        if args.notice is not None:
            if args.notice.strip().lower() == "off":
                self.extension.notice_threshold = None
            else:
                try:
                    self.extension.notice_threshold = parse_size(args.notice)
                except ValueError as exc:
                    raise UsageError(f"--notice: {exc}, or off") from None
        threshold = self.extension.notice_threshold
        print("memtamer: notice after heavy cells: "
              + (f"peak or retained over {format_size(threshold)}" if threshold else "off"))
