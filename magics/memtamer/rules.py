"""The rules file's glue: find it, load it, re-read it when it changes, and
run the actions the engine asks for.  The parsing is C (kernelext/rules.c),
so is the choice of what to act on (kernelext/policy.c); the actions are
%shrink's (shrinker.run), between cells, in the kernel's main thread."""

import gc
import os

from IPython.core.error import UsageError

from . import _core, children, guard, shrinker
from .purge import Purge
from .sizes import format_size

ENVIRONMENT_VARIABLE = "MEMTAMER_RULES"
FILE_NAMES = ("memtamer.yaml", ".memtamer.yaml")
# What an action does and did, in words: C's table (kernelext/actions.c).
ACTION_WORDS = _core.shrink_actions()["actions"]
PAST_TENSE = {name: action["past"] for name, action in ACTION_WORDS.items()}
INFINITIVE = {name: action["verb"] for name, action in ACTION_WORDS.items()}


def discover(cwd=None, environ=None):
    """The rules file in force for a kernel started in cwd: $MEMTAMER_RULES;
    else the first memtamer.yaml or .memtamer.yaml in cwd or a parent, up to
    the home directory or the root; else $XDG_CONFIG_HOME/memtamer/rules.yaml
    (~/.config by default).  None when there is none."""
    environ = os.environ if environ is None else environ
    if environ.get(ENVIRONMENT_VARIABLE):
        return environ[ENVIRONMENT_VARIABLE]
    home = os.path.realpath(os.path.expanduser("~"))
    directory = os.path.realpath(cwd or os.getcwd())
    while True:
        for name in FILE_NAMES:
            path = os.path.join(directory, name)
            if os.path.isfile(path):
                return path
        parent = os.path.dirname(directory)
        if directory == home or parent == directory:
            break
        directory = parent
    config = environ.get("XDG_CONFIG_HOME") or os.path.join(home, ".config")
    path = os.path.join(config, "memtamer", "rules.yaml")
    return path if os.path.isfile(path) else None


def _read(path):
    """(bytes, errors): the file's content, or the reason it cannot be read
    (C reads it: only a regular file, never blocking, at most the cap)."""
    try:
        return _core.rules_read(path), []
    except ValueError as exc:
        return None, [f"{path}: {exc}"]


def _validate(path, load):
    """The one validation of a rules file, for check and for the kernel: the
    errors as FILE:LINE:COL: message lines, [] when it is valid.  Relative
    dir: values start at the file's directory.  load: the rules (and their
    budget) replace those in force when there is no error, whole."""
    text, unreadable = _read(path)
    if unreadable:
        return unreadable
    validate = _core.rules_load if load else _core.rules_check
    return format_errors(path, validate(text, os.path.dirname(os.path.abspath(path))))


def format_errors(path, errors):
    """FILE:LINE:COL: message, as compilers write them (editors jump there)."""
    return [f"{path}:{line}:{column}: {message}" if line else f"{path}: {message}"
            for line, column, message in errors]


def check(path):
    """The errors of the rules file at path as FILE:LINE:COL: message lines;
    [] when it is valid.  Loads nothing.  In a kernel, its budget is also
    held to what the kernel already uses, as loading it would."""
    return _validate(path, load=False)


def add_check_command(subparsers):
    """`python -m memtamer check FILE...`, for CI and editors."""
    parser = subparsers.add_parser(
        "check", help="validate rules files without loading them: FILE:LINE:COL: message "
                      "for each error; exit status 0 when all are valid, 1 otherwise")
    parser.add_argument("files", nargs="+", metavar="FILE")
    parser.set_defaults(run=run_check)


def run_check(args):
    failed = False
    for path in args.files:
        errors = check(path)
        failed = failed or bool(errors)
        print("\n".join(errors) if errors else f"{path}: ok")
    return 1 if failed else 0


def describe_level(level):
    kind, value = level
    return f"{value:g}%" if kind == "percent" else "off" if kind == "off" else format_size(value)


def describe_when(when):
    """The trigger in words: 'cell_retained >= 100 MiB and idle for 3 cells'."""
    parts = []
    for key in ("cell_peak", "cell_retained"):
        if key in when:
            parts.append(f"{key} >= {format_size(when[key])}")
    if "memory_above" in when:
        parts.append(f"memory above {describe_level(when['memory_above'])}"
                     + (f" until {describe_level(when['until'])}" if "until" in when else ""))
    if "idle_for" in when:
        parts.append(f"idle for {when['idle_for']} cells")
    if when.get("created"):
        parts.append("created or rebound by the cell")
    if "children_over" in when:
        parts.append(f"child processes own more than {format_size(when['children_over'])}")
    return " and ".join(parts)


def describe_rule(rule):
    """One line: when -> do on what."""
    when = describe_when(rule["when"])
    match = rule["match"]
    what = [f"{key} {', '.join(value)}" for key, value in match.items() if isinstance(value, list)]
    if "min_size" in match:
        what.append(f">= {format_size(match['min_size'])}")
    text = f"{rule['name']}: after each cell" + (f" when {when}" if when else "")
    text += f" -> {rule['do']}" + "".join(f" {key}={value}" for key, value in rule["options"].items())
    if what:
        text += " on " + " ".join(what)
    if rule["do"] not in ("collect", "notice"):
        text += f", {rule['order']} first"
    if rule["do"] != "collect" and "children_over" not in rule["when"]:
        text += f", at most {rule['max_per_cell']} per cell"
    if rule["cooldown"]:
        text += f", cooldown {rule['cooldown']} cells"
    return text

class Rules:
    """The rules in force for one shell, the file they came from, and the
    log of what they did."""

    def __init__(self, shell, extension):
        self.shell, self.extension = shell, extension
        self.path = None  # the file in force
        # The file last read and the version of it seen, loaded or refused:
        # it is read again when it changes again.
        self.watched, self.mtime = None, None
        # The errors of the file last read when it was refused, for %memrules.
        self.rejected = []
        self.actions = []

    def start(self):
        _core.rules_enable(True)
        self.reload(say_none=False)

    def stop(self):
        _core.rules_clear()

    def reload(self, say_none=True):
        """Finds the rules file again and loads it; says which file is in force."""
        path = discover()
        if path is None:
            self.rejected = []
            if say_none:
                kept = "the rules loaded before stay in force" if self.path else "no rules in force"
                print(f"memtamer: no rules file (set $MEMTAMER_RULES or write memtamer.yaml); {kept}")
            return False
        return self.load(path)

    def load(self, path):
        """Loads path whole or not at all: with errors the rules in force, and
        the budget, stay."""
        try:
            self.watched, self.mtime = path, os.stat(path).st_mtime_ns
        except OSError:
            self.watched, self.mtime = path, None
        errors = self.rejected = _validate(path, load=True)
        if errors:
            kept = (f"the rules from {self.path} stay in force" if self.path
                    else "no rules in force")
            print(f"memtamer: {path} was not loaded ({kept}):\n  " + "\n  ".join(errors))
            return False
        self.path = path
        table = _core.rules_table()
        if table["notice"] is not None:
            kind, value = table["notice"]
            self.extension.notice_threshold = None if kind == "off" else value
        if table["thrashing"] is not None:
            guard.set_thrashing(table["thrashing"])
        count = len(table["rules"])
        print(f"memtamer: rules from {path} ({count} rule{'s' if count != 1 else ''})")
        return True

    def reload_if_changed(self):
        """One stat of the file last read; a new modification time reloads it."""
        if self.watched is None:
            return
        try:
            mtime = os.stat(self.watched).st_mtime_ns
        except OSError:
            return
        if mtime != self.mtime:
            self.load(self.watched)

    # ---- after each cell ---------------------------------------------------

    def after_cell(self):
        """Runs what the rules ask for now.  Ctrl-C stops it (IPython would
        print a raw traceback for a callback that raises): the action under
        way is logged as interrupted, the rest do not run, and one line says
        what was left as it was."""
        try:
            self.reload_if_changed()
            actions = _core.policy_evaluate(False)
        except KeyboardInterrupt:
            print("memtamer: Ctrl-C while the rules chose what to do after this cell: "
                  "no rule acted, every variable is as it was")
            return
        if actions:
            rules = _core.rules_table()["rules"]
            when = {rule["name"]: describe_when(rule["when"]) for rule in rules}
        for position, action in enumerate(actions):
            action["when"] = when[action["rule"]]
            try:
                rows = self._run(action)
            except KeyboardInterrupt:  # one that is not per variable (collect, ...)
                rows = [dict(cell=action["cell"], rule=action["rule"], action=action["do"],
                             name=None, status="interrupted", bytes_before=None,
                             bytes_after=None, reason="")]
            # A restarted pool or cluster may grow again: the rule keeps watching it.
            _core.policy_acted_on(action["rule"], [r["name"] for r in rows
                                                   if r["name"] in self.shell.user_ns
                                                   and action["do"] != "restart"])
            self.actions.extend(rows)
            skipped = [a["rule"] for a in actions[position + 1:]]
            print(notice(action, rows, skipped))
            if rows and rows[-1]["status"] == "interrupted":
                break

    def _run(self, action):
        base = {"cell": action["cell"], "rule": action["rule"], "action": action["do"]}
        return self.OWN_ACTIONS.get(action["do"], Rules._shrink)(self, base, action)

    def _notice(self, base, action):
        if action["children"] is not None:
            return [dict(base, name=None, status="noticed", bytes_before=action["children"],
                         bytes_after=action["children"], reason=CHILDREN + biggest_children())]
        return [dict(base, name=name, status="noticed", bytes_before=size, bytes_after=size,
                     reason="") for name, size in action["targets"]] or \
               [dict(base, name=None, status="noticed", bytes_before=action["rss"],
                     bytes_after=action["rss"], reason="kernel memory")]

    def _collect(self, base, action):
        before = _core.process()["rss"]
        gc.collect()
        _core.trim()
        return [dict(base, name=None, status="done", bytes_before=before,
                     bytes_after=_core.process()["rss"], reason="kernel memory")]

    def _clear_output_cache(self, base, action):
        return [self._drop_output(base, number, size) for number, size in action["targets"]]

    def _restart_named(self, base, action):
        return [self._restart(base, name, action["children"]) for name, _ in action["targets"]]

    def _shrink(self, base, action):
        """%shrink's action on each target, one at a time, stopping once the
        kernel is back under the rule's until level."""
        ns = self.shell.user_ns
        rows = []
        targets = [name for name, _ in action["targets"]]
        for position, name in enumerate(targets):
            if action["until"] is not None and _core.process()["rss"] < action["until"]:
                break
            # Its id, not the object: a reference would make it look held.
            original = id(ns.get(name))
            try:
                options = dict(action["options"])
                row = shrinker.run(self.shell, ns, action["do"], [name], options,
                                   rewalk=False)[name]
            except UsageError as exc:
                row = {"status": "refused", "bytes_before": None, "bytes_after": None,
                       "reason": str(exc)}
            except KeyboardInterrupt:
                # Every action leaves its variable as it was when interrupted,
                # unless the Ctrl-C came after it rebound the name.
                kept = id(ns.get(name)) == original
                left = targets[position + 1:]
                reason = (f"{name} left as it was" if kept else
                          f"{name} {PAST_TENSE[action['do']]} before the Ctrl-C took effect")
                if left:
                    reason += f"; {', '.join(left)} not acted on"
                rows.append(dict(base, name=name, status="interrupted", bytes_before=None,
                                 bytes_after=None, reason=reason))
                break
            rows.append(dict(base, name=name, status=row["status"],
                             bytes_before=row.get("bytes_before"),
                             bytes_after=row.get("bytes_after"), reason=row.get("reason") or ""))
        return rows

    def _restart(self, base, name, before):
        """name.restart(), the library's own: a dask Client's has each nanny
        restart its worker.  What has no restart() (a multiprocessing.Pool)
        is refused: memtamer kills no worker.  The bytes are what the child
        processes own before and after."""
        obj = self.shell.user_ns.get(name)
        if not callable(getattr(type(obj), "restart", None)):
            return dict(base, name=name, status="refused", bytes_before=before, bytes_after=None,
                        reason=f"{type(obj).__name__} has no restart(); memtamer kills no worker")
        try:
            obj.restart()
        except Exception as exc:  # the library's refusal, said in the notice
            return dict(base, name=name, status="refused", bytes_before=before, bytes_after=None,
                        reason=f"{name}.restart() raised {type(exc).__name__}: {exc}")
        after = sum(child["private"] or 0 for child in _core.children())
        return dict(base, name=name, status="done", bytes_before=before, bytes_after=after,
                    reason="")

    def _drop_output(self, base, number, size):
        """Out[number], and the cache names that show it, go: held by no
        variable (the engine checked), that frees it."""
        Purge(self.shell, self.shell.user_ns).remove_output(number)
        gc.collect()
        _core.trim()
        return dict(base, name=f"Out[{number}]", status="done", bytes_before=size, bytes_after=0,
                    reason="")

    # The rule actions the rules run themselves; the others (C's table says
    # which there are) are %shrink's, run by _shrink.
    OWN_ACTIONS = {"notice": _notice, "collect": _collect, "clear_output_cache": _clear_output_cache,
                   "restart": _restart_named}





def _did(do, row):
    """What one row of an action did, as a clause: 'compressed a 64 MiB ->
    9 MiB', 'did not spill b: <why>' (the same words under the cell and in
    %memreport actions)."""
    if row["status"] == "interrupted":
        return f"Ctrl-C during {do}" + (f" {row['name']}" if row["name"] else "") + ": " + \
            (row["reason"] or "the kernel's variables are as they were")
    if do == "notice" and row["reason"].startswith(CHILDREN):
        return (f"noticed the child processes owning {format_size(row['bytes_before'])}, the "
                f"most {row['reason'].removeprefix(CHILDREN)}")
    if do == "notice":
        if row["name"] is None:
            return f"noticed the kernel using {format_size(row['bytes_before'])}"
        return f"noticed {row['name']} ({format_size(row['bytes_before'])})"
    if do == "collect":
        return (f"collected garbage: kernel {format_size(row['bytes_before'])} -> "
                f"{format_size(row['bytes_after'])}")
    if row["status"] == "done" and do == "restart":
        return (f"restarted {row['name']} (child processes {format_size(row['bytes_before'])} -> "
                f"{format_size(row['bytes_after'])})")
    if row["status"] == "done":
        return (f"{PAST_TENSE[do]} {row['name']} {format_size(row['bytes_before'])} -> "
                f"{format_size(row['bytes_after'])}")
    verb = "did not" if row["status"] == "refused" else "could not"
    return f"{verb} {INFINITIVE[do]} {row['name']}: {row['reason']}"


# The reason of a children_over notice's row starts with it: what the row is about.
CHILDREN = "child processes: "


def biggest_children():
    """The descendants that own most, for a children_over notice: 'pid 4242
    (dask worker, memory_limit 1.0 GiB) 600 MiB, pid 4250 (python) 420 MiB'."""
    named = []
    for child in children.biggest(children.current()):
        what = child["role"] or child["command"].split(" ", 1)[0].rsplit("/", 1)[-1] or "?"
        if child["memory_limit"]:
            what += f", memory_limit {format_size(child['memory_limit'])}"
        named.append(f"pid {child['pid']} ({what}) {format_size(child['private'])}")
    return ", ".join(named)


def notice(action, rows, skipped=()):
    """The one line under the cell: rule, what it did, bytes before -> after;
    after a Ctrl-C, what was left as it was and the rules (skipped) that
    did not run."""
    head = f"memtamer rule {action['rule']}: "
    if rows and rows[-1]["status"] == "interrupted":
        line = head + _did(action["do"], rows[-1])
        done = notice(action, rows[:-1]).removeprefix(head) if rows[:-1] else ""
        if done:
            line += f"; before it: {done}"
        if skipped:
            line += f"; not run after this cell: {', '.join(skipped)}"
        return line
    if action["do"] == "notice":
        if action["children"] is not None:
            most = rows[0]["reason"].removeprefix(CHILDREN)
            return (head + f"{action['when']}: they own {format_size(action['children'])}, "
                    f"the most {most}; memtamer leaves them running")
        if rows and rows[0]["name"] is None:
            return (head + f"{action['when'] or 'after the cell'}: "
                    f"the kernel uses {format_size(action['rss'])}")
        return head + ", ".join(f"{r['name']} is {format_size(r['bytes_before'])}" for r in rows)
    if not rows:
        return head + (f"{PAST_TENSE[action['do']]} nothing: the kernel was already under the "
                       f"rule's until level")
    return head + "; ".join(_did(action["do"], r) for r in rows)


def table_lines(table, path, rejected=()):
    """%memrules: the errors of a file that was refused (rejected, as
    FILE:LINE:COL: message lines), the file in force and one line per rule."""
    lines = []
    if rejected:
        lines = ["memtamer: the rules file was not loaded because of these errors; fix them and "
                 "it is read again after the next cell:"] + ["  " + error for error in rejected]
    if table is None:
        return lines + ["memtamer: no rules in force" + ("" if rejected else
                        " (set $MEMTAMER_RULES or write memtamer.yaml, then %memrules reload)")]
    lines.append(f"memtamer: rules from {path}{'' if table['enabled'] else ' (off: %memrules on)'}")
    settings = [f"{key} {describe_level(table[key])}" for key in ("budget", "notice") if table[key]]
    if table["protect"]:
        settings.append("protect " + ", ".join(table["protect"]))
    lines += ["  " + s for s in settings]
    lines += ["  " + describe_rule(rule) for rule in table["rules"]]
    return lines


def dry_run_lines(actions):
    """%memrules --dry-run: what each rule would do now."""
    lines = []
    for action in actions:
        targets = ", ".join(f"{name if isinstance(name, str) else f'Out[{name}]'} "
                            f"({format_size(size)})" for name, size in action["targets"])
        children = action["children"]
        lines.append(f"{action['rule']}: would {action['do']}"
                     + (f" {targets}" if targets else "" if children is not None
                        else " (the whole kernel)")
                     + (f" (child processes own {format_size(children)})"
                        if children is not None else "")
                     + (f" until the kernel is under {format_size(action['until'])}"
                        if action["until"] is not None else ""))
    return lines


def action_lines(actions):
    """%memreport actions: one line per action the rules took."""
    if not actions:
        return ["memtamer: the rules have taken no action yet"]
    return [f"cell {a['cell']}: rule {a['rule']}: {_did(a['action'], a)}" for a in actions]
