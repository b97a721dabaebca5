"""Who holds an object: the ledger's holders (dicts of ledger.c: label,
kind, and what a purge needs) in words people can act on."""

import contextlib

from . import _core

# Kinds of holders that are IPython's caches (or the last exception, or
# what a %run script left in IPython's cache of its namespace), which `del`
# may purge; the ledger says each holder's kind.
CACHE_KINDS = frozenset({"output_cache", "output_name", "hidden_output_name", "exception",
                         "run_namespace"})
# Kinds of holders that are the user's own names.
NAME_KINDS = frozenset({"variable", "view"})


@contextlib.contextmanager
def ledger(shell, ns):
    """The variables ledger over ns: the extension keeps it attached; the
    Python API without the extension attaches it for one look."""
    if _core.ledger()["attached"]:
        yield
        return
    history = getattr(shell, "history_manager", None)
    _core.ledger_attach(ns, getattr(shell, "user_ns_hidden", None),
                        getattr(history, "output_hist", None), shell, None)
    try:
        yield
    finally:
        _core.ledger_detach()


def variable(shell, ns, name):
    """The ledger's entry for ns[name] after a walk of every root (bytes,
    exclusive, holders, shares), or None."""
    with ledger(shell, ns):
        found = _core.variables(name)
    return found[0] if found else None


def describe_holder(holder):
    """A holder (a dict of the ledger's) in words people can act on."""
    if holder["kind"] == "view":
        return f"{holder['label']} is a view of it"
    if holder["kind"] == "output_name":
        return f"IPython's output cache {holder['label']}"
    return holder["label"]


def holders(shell, ns, name):
    """Who else keeps ns[name]'s memory alive, in words people can act on."""
    entry = variable(shell, ns, name)
    return [describe_holder(h) for h in entry["holders"]] if entry else []


def refusal_text(shell, ns, name, refusals):
    """The failed rules for people, with the holders named."""
    parts = []
    for rule, message in refusals:
        if rule == "held":
            named = holders(shell, ns, name)
            message = ("also held by " + ", ".join(named)) if named else \
                "other references to it exist (none in the user namespace)"
        parts.append(message)
    return "; ".join(parts)
