"""The magics: argument parsing and display only; the figures come from _core."""

import json
import textwrap

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class
from IPython.core.magic_arguments import argument, kwds, magic_arguments, parse_argstring
from IPython.display import display

from . import _core, children, guard, peaks, render, rules
from .options import SHRINK_ACTIONS
from .sizes import format_size

SUMMARY_CELLS = 5
SUMMARY_VARIABLES = 5
SHOWN_VARIABLES = 20
SORT_KEYS = {"peak": "peak_increment", "retained": "retained", "cell": None}
VIEWS = ("summary", "cells", "vars", "peak", "actions", "children")
RULES_COMMANDS = ("check", "reload", "off", "on")
# %shrink?'s text: a line of help per action, C's (kernelext/actions.c).
_ACTION_WIDTH = max(map(len, SHRINK_ACTIONS))
SHRINK_HELP = "Give memory back: %shrink ACTION NAME... [options]\n\n" + "\n".join(
    textwrap.fill(action["help"], 94, initial_indent=f"{name:<{_ACTION_WIDTH}}  ",
                  subsequent_indent=" " * (_ACTION_WIDTH + 2))
    for name, action in SHRINK_ACTIONS.items())


def choose(magic, what, value, choices):
    """value when it is one of choices, else a UsageError that names the
    closest (the rules checker's "did you mean") and lists them all."""
    if value is None or value in choices:
        return value
    guess = _core.closest(value, list(choices))
    hint = f"did you mean {guess}? " if guess else ""
    raise UsageError(f"%{magic}: {value!r} is not a {what}: {hint}"
                     f"use one of {', '.join(choices)}")


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
    @argument("view", nargs="?", default="summary",
              help="summary (process, the heaviest cells, biggest variables and child processes), "
                   "cells (the per-cell table), vars (variables: size, what del frees, holders, "
                   "provenance), peak (what made a cell's peak, by line), actions (what the rules "
                   "did) or children (the process tree under the kernel: memory, the cell that "
                   "started each, its role)")
    @argument("cell", nargs="?", type=int, default=None,
              help="peak: the cell (execution count); default the last one with a composition")
    @argument("-n", type=int, default=None, metavar="N", help="show at most N cells or variables")
    @argument("--all", action="store_true", help="vars: show every variable")
    @argument("--sort", default=None, metavar="peak|retained|cell",
              help="order cells by peak increment, retained memory, or execution (cell)")
    @argument("--json", action="store_true", help="print machine-readable JSON")
    @line_magic
    def memreport(self, line):
        """Show memory per cell and variable:
        %memreport [summary|cells|vars|actions|children] [-n N] [--all] [--sort peak|retained|cell]
                   [--json]
        %memreport peak [CELL] [--json]"""
        args = parse_argstring(self.memreport, line)
        choose("memreport", "view", args.view, VIEWS)
        choose("memreport", "sort order", args.sort, tuple(SORT_KEYS))
        if args.view == "peak":
            self.peak_report(args.cell, args.json)
            return
        if args.cell is not None:
            raise UsageError("a cell number goes with the peak view only, e.g. %memreport peak 12")
        if args.view == "actions":
            actions = self.extension.rules.actions[-args.n:] if args.n else self.extension.rules.actions
            if args.json:
                print(json.dumps(actions, indent=1))
            else:
                print("\n".join(rules.action_lines(actions)))
            return
        if args.n is not None and args.n < 1:
            raise UsageError("-n takes a positive number of cells or variables, "
                             "e.g. %memreport cells -n 10")
        if args.view == "children":
            found = children.current()
            found = children.biggest(found, args.n) if args.n else found
            if args.json:
                print(json.dumps(found, indent=1))
            else:
                display(render.ChildrenReport(found))
            return
        if args.view == "cells":
            # No variables in this view: spare the walk of every root.
            report = {"process": _core.process(), "cells": _core.cells()}
        else:
            report = self.extension.report()
        cells = select_cells(report["cells"], args.view, args.n, args.sort)
        variables = select_variables(report.get("variables"), args.view, args.n, args.all)
        if args.json:
            print(json.dumps({"process": report["process"], "cells": cells,
                              "variables": variables, "account": report.get("account"),
                              "children": report.get("children")}, indent=1))
            return
        display(render.Report(report, args.view, cells, variables))

    def peak_report(self, cell, as_json):
        cells = _core.cells()
        if cell is None:
            with_peak = [c for c in cells if c["peak_composition"]]
            if not with_peak:
                print("memtamer: no cell since loading rose by "
                      f"{format_size(_core.peaks_settings()['cell'])} or more above its start: "
                      "no peak to take apart yet")
                return
            record = with_peak[-1]
        else:
            found = [c for c in cells if c["cell"] == cell]
            if not found:
                raise UsageError(f"%memreport peak: no record of cell {cell}; "
                                 "%memreport cells lists the measured cells")
            record = found[-1]
            if not record["peak_composition"]:
                unfollowed = render.unfollowed_text(record)
                print(f"memtamer: cell {cell} stayed under "
                      f"{format_size(_core.peaks_settings()['cell'])} above its start in "
                      "Python's and numpy's allocators: its peak is not taken apart"
                      + (f"; {unfollowed}" if unfollowed else ""))
                return
        peaks.annotate(record, self.shell)
        if as_json:
            print(json.dumps(record, indent=1))
            return
        display(render.PeakReport(record))

    @magic_arguments()
    @argument("--notice", metavar="SIZE|off", default=None,
              help="print a one-line notice after cells whose peak or retained memory "
                   "exceeds SIZE (e.g. 512MiB), or 'off'")
    @argument("--peaks", metavar="SIZE|off", default=None,
              help="take apart the peak of cells that rise SIZE (e.g. 64MiB) or more above "
                   "their start (%%memreport peak), or 'off'; from the next cell")
    @argument("--live", metavar="on|off", default=None,
              help="a line under a cell that runs a few seconds, updated in place: RSS now, "
                   "the cell's peak so far, the room left; from the next cell")
    @line_magic
    def memtamer(self, line):
        """Settings: %memtamer [--notice SIZE|off] [--peaks SIZE|off] [--live on|off];
        without options, show them."""
        args = parse_argstring(self.memtamer, line)
        if args.live is not None:
            choose("memtamer", "--live", args.live.strip().lower(), ("on", "off"))
            self.extension.live.enabled = args.live.strip().lower() == "on"
        if args.peaks is not None:
            if args.peaks.strip().lower() == "off":
                _core.peaks_settings(enabled=False)
            else:
                try:
                    _core.peaks_settings(enabled=True, cell=_core.parse_size(args.peaks))
                except ValueError as exc:
                    raise UsageError(f"--peaks: {exc} (or off)") from None
        if args.notice is not None:
            if args.notice.strip().lower() == "off":
                self.extension.notice_threshold = None
            else:
                try:
                    threshold = _core.parse_size(args.notice)
                except ValueError as exc:
                    raise UsageError(f"--notice: {exc} (or off)") from None
                if threshold == 0:
                    raise UsageError("--notice takes a size above 0, e.g. 512MiB; to turn "
                                     "notices off write --notice off")
                self.extension.notice_threshold = threshold
        threshold = self.extension.notice_threshold
        print("memtamer: notice after heavy cells: "
              + (f"peak or retained over {format_size(threshold)}" if threshold else "off"))
        peaks_now = _core.peaks_settings()
        print("memtamer: peaks taken apart: "
              + (f"cells rising {format_size(peaks_now['cell'])} or more, blocks of "
                 f"{format_size(peaks_now['block'])} or more" if peaks_now["enabled"] else "off"))
        print("memtamer: live line under running cells: "
              + ("on" if self.extension.live.enabled else "off"))

    @magic_arguments()
    @argument("budget", nargs="?", default=None, metavar="SIZE|PERCENT|off|default",
              help="the kernel's memory budget: a size (8GiB), a share of the effective "
                   "limit (80%%), 'default' (the limit minus a reserve of the larger of "
                   "256 MiB and 5%%) or 'off'")
    @argument("--no-swap", action="store_true",
              help="keep the budget in RAM: swap, where there is some, is not counted as room "
                   "(a stop rather than a slow cell)")
    @argument("--swap", action="store_true",
              help="count swap as room besides memory where there is some (the default)")
    @argument("--thrashing", choices=("stop", "warn"),
              help="what a cell that thrashes (waits on pages from swap or disk for seconds) "
                   "gets: stop ends it with MemoryBudgetExceeded, warn (the default) lets it run")
    @line_magic
    def memguard(self, line):
        """Show or set the memory budget: %memguard [SIZE|PERCENT|off|default] [--no-swap|--swap]
        [--thrashing stop|warn].

        A cell that would take the kernel past its budget ends with
        memtamer.MemoryBudgetExceeded (a MemoryError); the kernel and its
        variables live on."""
        # Not parse_argstring: argparse takes "-1GiB" for an option and says
        # only "unrecognized arguments"; set_budget says what to write.
        words = line.split()
        thrashing = None
        if "--thrashing" in words:
            at = words.index("--thrashing")
            thrashing = words[at + 1] if at + 1 < len(words) else ""
            if thrashing not in ("stop", "warn"):
                raise UsageError("%memguard --thrashing takes stop (end a thrashing cell) or "
                                 "warn (let it run)")
            del words[at:at + 2]
        swap = [word for word in words if word in ("--swap", "--no-swap")]
        budget = [word for word in words if word not in swap]
        unknown = [word for word in budget if word.startswith("--")]
        if unknown:
            raise UsageError(f"%memguard has no option {unknown[0]}: write --no-swap (keep the "
                             "budget in RAM), --swap (count swap as room) or --thrashing "
                             "stop|warn")
        if len(swap) > 1:
            raise UsageError("%memguard takes one of --swap and --no-swap")
        if len(budget) > 1:
            raise UsageError(f"%memguard takes one budget, not {len(budget)} words: write e.g. "
                             "%memguard 8GiB, %memguard 80%, %memguard default or %memguard off")
        # Swap counted first when it is allowed, last when it is not: a
        # budget that needs the swap is judged with it, one that fits in
        # RAM without it.
        steps = []
        if swap == ["--swap"]:
            steps.append(lambda: guard.set_swap(True))
        if budget:
            steps.append(lambda: guard.set_budget(budget[0]))
        if swap == ["--no-swap"]:
            steps.append(lambda: guard.set_swap(False))
        if thrashing:
            steps.append(lambda: guard.set_thrashing(thrashing))
        status = guard.budget()
        for step in steps:
            try:
                status = step()
            except ValueError as exc:
                raise UsageError(f"%memguard: {exc}") from None
        loaded = self.extension.guard
        print("\n".join(guard.status_lines(status, loaded.ended if loaded else ())))

    @magic_arguments()
    @kwds(description=SHRINK_HELP)
    @argument("action", help=" | ".join(SHRINK_ACTIONS))
    @argument("names", nargs="*", metavar="NAME",
              help="variables in the user namespace; del also takes Out[N], _N, "
                   "sys.last_traceback and names already deleted whose objects caches still "
                   "hold; reattach: all, or names spilled by the notebook's previous kernel")
    @argument("--to", default=None,
              help="downcast: auto (default: float64→float32 within --rtol; integers keep "
                   "their type unless --narrow), float32, float16, bool, int8/16/32, "
                   "uint8/16/32")
    @argument("--rtol", type=float, default=None,
              help="downcast: refuse when a float would change by more than this relative "
                   f"error (default {_core.shrink_options()['rtol']:g})")
    @argument("--narrow", action="store_true",
              help="downcast, pack: integers to the smallest type holding their values (pack: "
                   "floats to float32/float16 when exact); later arithmetic may overflow")
    @argument("--codec", default=None, help="compress: auto (default: the codec that makes a sample "
              "smallest), lz4, zstd, blosclz, zlib, ...")
    @argument("--level", type=int, default=None,
              help="compress: {levels[0]} (fastest) to {levels[1]} (smallest), default "
                   "{level}".format(**_core.codecs()))
    @argument("--dir", default=None,
              help="spill: directory for the file, removed with the kernel (default: the "
                   "notebook's store under ~/.cache/memtamer/spill, or $MEMTAMER_SPILL_DIR, "
                   "kept for %%shrink reattach if the kernel dies)")
    @argument("--keep-in-memory", action="store_true",
              help="spill: a checkpoint: write the file to the notebook's store and leave the "
                   "variable as it is in memory, so a death loses only what changed since")
    @argument("--keep-for-reattach", action="store_true",
              help="spill: keep the file after a normal exit too, for the notebook's next "
                   "kernel to %%shrink reattach (without it, only a death leaves it)")
    @argument("--discard", action="store_true",
              help="reattach: remove what a previous kernel spilled instead (all, or the NAMEs)")
    @argument("--copy", action="store_true",
              help="work on a copy when the variable cannot be changed in place or is held "
                   "elsewhere (then it costs memory instead of saving it)")
    @argument("--dry-run", action="store_true",
              help="show the predicted saving and any refusal; change nothing")
    @line_magic
    def shrink(self, line):
        from .shrinker import KERNEL_ACTIONS, run

        args = parse_argstring(self.shrink, line)
        given = {"to": args.to, "rtol": args.rtol, "narrow": args.narrow or None,
                 "codec": args.codec, "level": args.level, "discard": args.discard or None,
                 "dir": args.dir, "copy": args.copy or None,
                 "keep_in_memory": args.keep_in_memory or None,
                 "keep_for_reattach": args.keep_for_reattach or None,
                 "dry_run": args.dry_run or None}
        if not args.names and args.action not in KERNEL_ACTIONS:
            raise UsageError(f"%shrink {args.action}: name the variables, e.g. "
                             f"%shrink {args.action} x")
        rows = run(self.shell, self.shell.user_ns, args.action, args.names, given)
        if args.action == "reattach":
            print("\n".join(f"{name}: {row['outcome']}" for name, row in rows.items()))
        else:
            display(render.ShrinkReport(rows))

    @magic_arguments()
    @argument("command", nargs="?", default=None, metavar="check|reload|off|on",
              help="check [FILE]: validate a rules file without loading it; reload: find and "
                   "load the rules file again; off / on: stop or resume the rules")
    @argument("file", nargs="?", default=None, help="check: the file (default: the one found)")
    @argument("--dry-run", action="store_true",
              help="say what each rule would do now; change nothing")
    @line_magic
    def memrules(self, line):
        """The auto-cleanup rules: %memrules [check [FILE] | reload | off | on | --dry-run]

        Without arguments, show the rules in force and the file they come from."""
        args = parse_argstring(self.memrules, line)
        choose("memrules", "command", args.command, RULES_COMMANDS)
        state = self.extension.rules
        if args.file is not None and args.command != "check":
            raise UsageError("%memrules: only check takes a FILE, e.g. %memrules check memtamer.yaml")
        if args.command == "check":
            path = args.file or rules.discover()
            if path is None:
                raise UsageError("%memrules check: no rules file found; name one: "
                                 "%memrules check FILE")
            errors = rules.check(path)
            print("\n".join(errors) if errors else f"{path}: ok")
            return
        if args.command == "reload":
            state.reload()
            return
        if args.command in ("off", "on"):
            _core.rules_enable(args.command == "on")
            print(f"memtamer: rules {args.command}")
            return
        table = _core.rules_table()
        if args.dry_run:
            actions = _core.policy_evaluate(True)
            print("\n".join(rules.dry_run_lines(actions)) if actions
                  else "memtamer: no rule would act now")
            return
        print("\n".join(rules.table_lines(table, state.path, state.rejected)))
