"""Auto-restore: before a cell runs, the compressed variables its code
reads are restored (the cell's code is parsed for the names it reads);
at unload, all of them."""

import ast

from . import _core
from .actions import compressed_names
from .shrinker import run
from .sizes import format_size

Compressed = _core.Compressed


class _NamesRead(ast.NodeVisitor):
    """Names code reads when it runs: function bodies run later (and a proxy
    restores itself then), so only their decorators and defaults count."""

    def __init__(self):
        self.found = set()

    def visit_Name(self, node):
        if isinstance(node.ctx, ast.Load):
            self.found.add(node.id)

    def visit_AugAssign(self, node):
        if isinstance(node.target, ast.Name):
            self.found.add(node.target.id)
        self.generic_visit(node)

    def visit_FunctionDef(self, node):
        for child in (*node.decorator_list, node.args, node.returns):
            if child is not None:
                self.visit(child)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Lambda(self, node):
        self.visit(node.args)


def names_read(shell, raw_cell):
    """Names a cell's code reads as it runs (loads, and augmented assignments)."""
    try:
        source = shell.transform_cell(raw_cell) if shell is not None else raw_cell
        tree = ast.parse(source)
    except (SyntaxError, ValueError, TypeError):
        return set()
    visitor = _NamesRead()
    visitor.visit(tree)
    return visitor.found


# Paths a cell's text does not show (globals(), eval, threads, magics) meet
# the proxy itself, which restores itself on any use.


class StopCell(ast.NodeTransformer):
    """An AST transformer that turns the next cell into `raise
    KeyboardInterrupt(message)` once a message is set: a Ctrl-C during the
    restore before a cell stops that cell cleanly, and it is still measured."""

    def __init__(self):
        self.message = None

    def visit_Module(self, node):
        if self.message is not None:
            message, self.message = self.message, None
            stop = f"raise __import__('builtins').KeyboardInterrupt({message!r})"
            node.body = ast.parse(stop).body
        return node


def auto_restore(shell, raw_cell):
    """Restores every compressed variable the cell reads; returns the rows."""
    ns = shell.user_ns
    for gone in [n for n in compressed_names if not isinstance(ns.get(n), Compressed)]:
        del compressed_names[gone]
    if not compressed_names:
        return {}
    wanted = [n for n in sorted(names_read(shell, raw_cell)) if n in compressed_names]
    if not wanted:
        return {}
    try:
        return run(shell, ns, "restore", wanted, {})
    except KeyboardInterrupt:
        still = [n for n in wanted if isinstance(ns.get(n), Compressed)]
        done = [n for n in wanted if n not in still]
        parts = [f"{', '.join(done)} restored"] if done else []
        if still:
            parts.append(f"{', '.join(still)} still compressed, intact (any use restores "
                         f"{'it' if len(still) == 1 else 'them'}, or %shrink restore "
                         f"{' '.join(still)})")
        raise KeyboardInterrupt("memtamer: Ctrl-C while restoring the compressed variables "
                                "this cell reads, so the cell did not run; "
                                + "; ".join(parts)) from None


def restore_all(shell):
    """Restores every compressed variable in the shell's namespace (at unload)."""
    ns = shell.user_ns
    names = [n for n, value in ns.items() if isinstance(value, Compressed)]
    return run(shell, ns, "restore", names, {}) if names else {}


def restore_notice(rows, lead="this cell reads compressed variables; restored"):
    parts = []
    for name, row in rows.items():
        if row["status"] == "done":
            parts.append(f"{name} ({format_size(row['bytes_before'])} → "
                         f"{format_size(row['bytes_after'])}, {row['seconds']:.2f} s)")
        else:
            parts.append(f"{name} NOT restored: {row['reason']}")
    return f"memtamer: {lead} " + ", ".join(parts)
