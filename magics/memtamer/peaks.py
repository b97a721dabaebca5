"""What a cell's peak was made of, for people: which cell defined a function
that allocated, and a one-line rewrite where the line's shape is one we know
for sure makes a needless copy.  Reads the cell's source with ast; never
guesses: a line it does not recognise gets no suggestion."""

import ast

from .sizes import format_size

# Growing an array by copying it into a new one.
GROWERS = {"concatenate", "append", "vstack", "hstack", "stack", "column_stack", "r_"}
# Reductions that take dtype= themselves, so the converted copy is not needed.
DTYPE_REDUCTIONS = {"sum", "mean", "prod", "cumsum", "cumprod", "std", "var"}
# Operators whose augmented form numpy runs in place and whose result keeps
# the operands' dtype (not /, which turns integers into floats).
IN_PLACE = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.BitAnd: "&", ast.BitOr: "|",
            ast.BitXor: "^"}


def _statement_at(tree, line):
    """The innermost simple statement covering line, and the loops around it."""
    found, loops = None, []

    def visit(node, around):
        nonlocal found, loops
        for child in ast.iter_child_nodes(node):
            if not isinstance(child, ast.stmt):
                continue
            if not child.lineno <= line <= (child.end_lineno or child.lineno):
                continue
            inside = around + [child] if isinstance(child, (ast.For, ast.While)) else around
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                return
            found, loops = child, inside
            visit(child, inside)

    visit(tree, [])
    return found, loops


def _name(node):
    return node.id if isinstance(node, ast.Name) else None


def _called(node):
    """'concatenate' for np.concatenate(...) / concatenate(...), else None."""
    if not isinstance(node, ast.Call):
        return None
    func = node.func
    return func.attr if isinstance(func, ast.Attribute) else _name(func)


def _mentions(node, name):
    return any(_name(n) == name for n in ast.walk(node))


def _chained_operator(statement, temporary):
    """`b = a * 2 + 1` where the inner operation's result is a temporary."""
    if not (isinstance(statement, ast.Assign) and len(statement.targets) == 1):
        return None
    target, value = _name(statement.targets[0]), statement.value
    if target is None or not isinstance(value, ast.BinOp) or type(value.op) not in IN_PLACE:
        return None
    if not isinstance(value.left, ast.BinOp) or _mentions(value.right, target):
        return None
    first, rest = ast.unparse(value.left), ast.unparse(value.right)
    return (f"`{first}` is a temporary of {format_size(temporary)}: "
            f"`{target} = {first}; {target} {IN_PLACE[type(value.op)]}= {rest}` "
            "finishes in place (where the right side does not widen the dtype)")


def _growing_in_a_loop(statement, loops):
    """`acc = np.concatenate([acc, x])` inside a loop: every pass copies acc."""
    if not loops or not isinstance(statement, ast.Assign) or len(statement.targets) != 1:
        return None
    target = _name(statement.targets[0])
    grower = _called(statement.value)
    if target is None or grower not in GROWERS or not _mentions(statement.value, target):
        return None
    return (f"`{target}` is copied whole by {grower} on every pass of the loop: append the "
            f"pieces to a list and call {grower} once after it")


def _frame_apply(statement):
    """`df = df.apply(...)`: the new frame is built while the old one lives."""
    if not isinstance(statement, ast.Assign) or len(statement.targets) != 1:
        return None
    target, call = _name(statement.targets[0]), statement.value
    if not (target and isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)
            and call.func.attr == "apply" and _name(call.func.value) == target):
        return None
    return (f"`{target}.apply` builds a second frame while `{target}` still holds the first: "
            f"assign column by column (`{target}[col] = ...`) to hold one column extra at a time")


def _dropped_astype(statement):
    """`x.astype(T).sum()`: the converted copy exists only to be reduced."""
    for node in ast.walk(statement):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr in DTYPE_REDUCTIONS and not node.args and not node.keywords):
            continue
        inner = node.func.value
        if (isinstance(inner, ast.Call) and isinstance(inner.func, ast.Attribute)
                and inner.func.attr == "astype" and len(inner.args) == 1 and not inner.keywords):
            receiver = inner.func.value
            array, dtype = ast.unparse(receiver), ast.unparse(inner.args[0])
            if not isinstance(receiver, (ast.Name, ast.Attribute, ast.Subscript, ast.Call)):
                array = f"({array})"
            return (f"`.astype` copies `{array}` only to drop it: "
                    f"`{array}.{node.func.attr}(dtype={dtype})` converts as it goes")
    return None


def suggest(source, group):
    """A one-line rewrite for the group's cell line, or None."""
    if group.get("origin") != "code" or not group.get("line") or group.get("function"):
        return None
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return None  # magics and other IPython syntax: not recognised, so no advice
    statement, loops = _statement_at(tree, group["line"])
    if statement is None:
        return None
    temporary = group.get("temporary") or 0
    if temporary > 0:
        advice = (_growing_in_a_loop(statement, loops) or _dropped_astype(statement)
                  or _chained_operator(statement, temporary))
        if advice:
            return advice
    return _frame_apply(statement)


def annotate(record, shell=None):
    """Adds to each group of record's peak composition the cell that defined
    its function (``function_cell``) and a ``suggestion`` (or None)."""
    composition = record.get("peak_composition")
    if not composition:
        return record
    compiler = getattr(shell, "compile", None)
    cells_by_file = getattr(compiler, "_filename_map", {}) or {}
    history = getattr(getattr(shell, "history_manager", None), "input_hist_raw", None)
    source = None
    cell = record.get("cell")
    if history is not None and cell is not None and 0 <= cell < len(history):
        source = history[cell]
    for group in composition["groups"]:
        group["function_cell"] = cells_by_file.get(group.get("file"))
        group["suggestion"] = suggest(source, group) if source else None
    return record
