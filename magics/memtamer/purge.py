"""The purge of IPython's caches: the output cache and its names, the last
exception, the namespaces %run keeps, so that `del` really frees an object;
and IPython's own names, which are not the user's to delete."""

import re
import sys


class Purge:
    """Removes IPython's cached references to one object (output cache
    entries, _ __ ___ _N and their mirrors in the hidden namespace and the
    display hook, the last execution result, sys.last_* and the traceback
    printer's copy, the names bound to it in the namespaces %run keeps),
    remembering them so that undo() puts back exactly what was there (for
    --dry-run)."""

    def __init__(self, shell, ns):
        self.shell, self.ns = shell, ns
        self.output = getattr(getattr(shell, "history_manager", None), "output_hist", None)
        self.hidden = getattr(shell, "user_ns_hidden", None)
        self.displayhook = getattr(shell, "displayhook", None)
        self.saved_output = None
        self.undo_steps = []

    def _pop(self, mapping, key):
        if mapping is not None and key in mapping:
            value = mapping.pop(key)
            self.undo_steps.append(lambda: mapping.__setitem__(key, value))
            return value
        return None

    def _clear_attribute(self, owner, attribute):
        value = getattr(owner, attribute)
        self.undo_steps.append(lambda: setattr(owner, attribute, value))
        setattr(owner, attribute, None)

    def remove(self, caches, obj=None):
        """Removes the holders caches (the ledger's dicts, of CACHE_KINDS)."""
        removed = []
        for holder in caches:
            kind = holder["kind"]
            if kind == "run_namespace":
                module = getattr(self.shell, "_main_mod_cache", {}).get(holder["path"])
                namespace = getattr(module, "__dict__", {})
                for key in [k for k, v in namespace.items() if v is obj]:
                    self._pop(namespace, key)
            elif kind == "output_cache":
                if self.output is None:
                    continue
                if self.saved_output is None:
                    self.saved_output = list(self.output.items())  # undo restores it, in order
                number = holder["out_index"]
                value = self.output.pop(number, None)
                removed.append(value)
                # IPython mirrors _N in its hidden namespace, and the mirror
                # outlives the user's own `del _N`.
                if value is not None and self.hidden is not None and \
                        self.hidden.get(f"_{number}") is value:
                    self._pop(self.hidden, f"_{number}")
            elif kind == "exception":
                for attribute in holder["sys_attributes"]:
                    if getattr(sys, attribute, None) is not None:
                        self._clear_attribute(sys, attribute)
                # The traceback printer keeps the last traceback for %debug;
                # its frames hold the exception that holds obj.
                printer = getattr(self.shell, "InteractiveTB", None)
                if getattr(printer, "tb", None) is not None:
                    self._clear_attribute(printer, "tb")
            elif kind == "hidden_output_name":  # the visible name shows something else
                removed.append(self._pop(self.hidden, holder["key"]))
            else:
                removed.append(self._pop(self.ns, holder["key"]))
                self._pop(self.hidden, holder["key"])
        # The display hook and the last result keep references outside any dict.
        for value in removed:
            for attribute in ("_", "__", "___"):
                if value is not None and getattr(self.displayhook, attribute, None) is value:
                    self._clear_attribute(self.displayhook, attribute)
            last = getattr(self.shell, "last_execution_result", None)
            if value is not None and getattr(last, "result", None) is value:
                self._clear_attribute(last, "result")

    def remove_output(self, number):
        """Removes Out[number] and the output cache's names that show it."""
        value = self.output.get(number) if self.output is not None else None
        names = [key for key in (f"_{number}", "_", "__", "___")
                 if value is not None and self.ns.get(key) is value]
        del value
        self.remove([{"kind": "output_cache", "out_index": number}] +
                    [{"kind": "output_name", "key": key} for key in names])

    def undo(self):
        for step in reversed(self.undo_steps):
            step()
        if self.saved_output is not None:
            self.output.clear()
            self.output.update(self.saved_output)

    def forget(self):
        """Drops what undo() would put back: it holds the purged objects."""
        self.undo_steps.clear()
        self.saved_output = None


# IPython's own names in the user namespace: what each is, and what to do.
_OUTPUT_CACHE_ADVICE = ("%reset -f out empties the output cache; %shrink del on the variable it "
                        "shows purges these entries too")
_INPUT_HISTORY_ADVICE = "it holds only the source of your cells (%reset -f in clears it)"
_IPYTHON_NAMES = {
    "In": ("IPython's input history", _INPUT_HISTORY_ADVICE),
    "_ih": ("IPython's input history", _INPUT_HISTORY_ADVICE),
    "Out": ("IPython's output cache", _OUTPUT_CACHE_ADVICE),
    "_oh": ("IPython's output cache", _OUTPUT_CACHE_ADVICE),
    "_": ("IPython's last output (part of its output cache)", _OUTPUT_CACHE_ADVICE),
    "__": ("IPython's next-to-last output (part of its output cache)", _OUTPUT_CACHE_ADVICE),
    "___": ("IPython's third-to-last output (part of its output cache)", _OUTPUT_CACHE_ADVICE),
    "_dh": ("IPython's directory history", "it holds only directory names"),
}


def ipython_name(name):
    """(what it is, what to do) for a name IPython itself keeps, or None."""
    if name in _IPYTHON_NAMES:
        return _IPYTHON_NAMES[name]
    if re.fullmatch(r"_\d+", name):
        return (f"IPython's output cache entry Out[{name[1:]}]", _OUTPUT_CACHE_ADVICE)
    if re.fullmatch(r"_i(\d+|i{0,2})", name):
        return ("an entry of IPython's input history", _INPUT_HISTORY_ADVICE)
    return None
