"""memtamer: exact per-cell memory measurement for IPython and Jupyter kernels.

Load it in a kernel with ``%load_ext memtamer``; see ``%memreport?``.
Python API: ``memtamer.report()`` returns the figures as a dict.
"""

import sys
import types

from . import _core
from .actions import compressed_names
from .guard import _ADVANCED_BEFORE_CELL, MemoryBudgetExceeded, budget, set_budget
from .shrinker import shrink
from .sizes import format_size

__all__ = ["report", "deep_size", "shrink", "load_ipython_extension",
           "unload_ipython_extension", "MemoryBudgetExceeded", "budget", "set_budget"]

DEFAULT_NOTICE_THRESHOLD = 512 * 1024**2


def report():
    """Everything memtamer knows, as a dict: ``process`` (rss, limit, its
    source, headroom, methods), ``cells`` (one dict per measured cell; a
    ``peak_composition`` says which lines' big blocks made its peak) and,
    in a shell with memtamer loaded, ``variables`` (deep size, exclusive
    bytes, holders, provenance and a ``why`` sentence per variable) and an
    ``account`` that splits the RSS into named parts (variables, IPython's
    caches, the last traceback, other reachable objects, freed heap, the
    RSS at load) with what frees each, and ``held``: what caches keep),
    and ``children``: the kernel's descendants in tree order (pid, ppid,
    command, private, shared, rss, ports, the cell that started each, and a
    role, supervisor and memory_limit where the library that started it
    says)."""
    from . import account, children
    from .peaks import annotate
    from .render import explain

    result = _core.report()
    result["children"] = children.current()
    for variable in result.get("variables", ()):
        variable["why"] = explain(variable)
    result["account"] = account.build(result, _active.baseline_rss if _active is not None else None)
    if _active is not None:
        result["actions"] = list(_active.rules.actions)
    for cell in result["cells"]:
        annotate(cell, _active.shell if _active is not None else None)
    return result


def deep_size(obj, budget=None):
    """Bytes reachable from obj, each buffer counted once (numpy views count
    their base once, pandas objects their arrays and Python objects; Arrow,
    polars and torch data, and other exporters of the buffer protocol,
    ``__array_interface__`` or ``__dlpack__``, by the address of each buffer,
    whichever library's object reaches it).

    With a budget in seconds, a walk cut short raises TimeoutError whose
    ``at_least`` attribute holds the figure so far: never a silent undercount.
    So does a walk that reaches the walker's memory cap (more shared objects
    or deeper nesting than it keeps track of)."""
    size, complete = _core.deep_size(obj, budget)
    if not complete:
        limit = "its memory cap" if budget is None else f"its {budget} s budget or its memory cap"
        error = TimeoutError(f"deep_size: the walk stopped at {limit} "
                             f"after at least {format_size(size)}")
        error.at_least = size
        raise error
    return size


class _RecordingCompiler:
    """The shell's compiler, which also hands each code object it compiles
    to the ledger: the names a cell read come from the code that ran, and
    the cell's source is not compiled a second time.  Everything else is
    the wrapped compiler's (its flags, caches, code names)."""

    def __init__(self, compiler):
        object.__setattr__(self, "wrapped", compiler)

    def __call__(self, *args, **kwargs):
        code = self.wrapped(*args, **kwargs)
        if isinstance(code, types.CodeType):
            _core.ledger_ran(code)
        return code

    def __getattr__(self, name):
        value = getattr(self.wrapped, name)
        # IPython looks up cache, ast_parse and extra_flags every cell: a
        # method of the wrapped compiler is kept here, found without a miss.
        if isinstance(value, types.MethodType) and value.__self__ is self.wrapped:
            object.__setattr__(self, name, value)
        return value

    def __setattr__(self, name, value):
        self.__dict__.pop(name, None)
        setattr(self.wrapped, name, value)


class _Extension:
    """What load_ipython_extension registered, so unload removes exactly that."""

    def __init__(self, shell):
        self.shell = shell
        self.notice_threshold = DEFAULT_NOTICE_THRESHOLD
        self.magics = None
        self.guard = None
        self.rules = None
        self.publisher = None
        self.numpy_hook = None
        self._warned = set()
        self.baseline_rss = None  # RSS when loaded: the account's baseline
        self.hooks = None  # the cell callbacks (_core.CellHooks)
        self.compiler = None
        self.live = None

    def report(self):
        return report()

    def start(self):
        from .live import LiveLine
        from .magics import MemtamerMagics
        from .numpy_import import NumpyImportHook
        from .restore import StopCell

        self.baseline_rss = _core.process().get("rss")
        self.live = LiveLine(self.shell, enabled=_configured(self.shell, "live"))
        _core.install_hooks()
        self.numpy_hook = NumpyImportHook(self._warn_once)
        self.numpy_hook.install()
        self.hooks = _core.CellHooks(self, self.shell, _ADVANCED_BEFORE_CELL, compressed_names)
        self.shell.events.register("pre_run_cell", self.hooks.pre_run_cell)
        self.shell.events.register("post_run_cell", self.hooks.post_run_cell)
        # In IPython's ast_transformers only while a cell is to be stopped:
        # any transformer there makes IPython walk every cell's AST again.
        self.stop_cell = StopCell()
        self.stop_armed = False
        self.compiler = _RecordingCompiler(self.shell.compile)
        self.shell.compile = self.compiler
        self.magics = MemtamerMagics(self.shell, self)
        self.shell.register_magics(self.magics)
        self._attach_ledger()
        from .guard import Guard, interactive
        from .telemetry import Publisher

        # Before the guard: its post-mortem findings are published too.
        self.publisher = Publisher()
        self.publisher.start()
        self.guard = Guard(self.shell)
        self.guard.start()
        from . import spill_store

        stale, pruned = self.guard.spills_removed, spill_store.prune()
        # Nothing of memtamer's goes into the output of `ipython --ext memtamer script.py`.
        speak = interactive(self.shell)
        if stale and speak:
            print(f"memtamer: removed {len(stale)} spill file(s) left by killed kernels: "
                  + ", ".join(stale))
        if pruned and speak:
            print(f"memtamer: removed {len(pruned)} spill store(s) of killed kernels of no "
                  f"notebook or of notebooks not opened for "
                  f"{spill_store.PRUNE_AFTER_SECONDS // 86400} days: " + ", ".join(pruned))
        offer = spill_store.offer_line() if speak else None
        if offer:
            print(offer)
        from .rules import Rules

        self.rules = Rules(self.shell, self)
        try:
            self.rules.start()
        except Exception as exc:  # noqa: BLE001 - the extension measures without rules
            self._warn_once("loading the rules", exc)
        unavailable = _core.process().get("unavailable", {})
        for figure in ("peak_rss", "heap_peak_increment"):
            if figure in unavailable and speak:
                print(f"memtamer: {figure} is unavailable here: {unavailable[figure]}")
        if speak and not _configured(self.shell, "quiet"):
            print(loaded_line(_core.guard_status(), _core.telemetry_status(),
                              self.rules.path is not None or bool(self.rules.rejected)))

    def _attach_ledger(self):
        history = getattr(self.shell, "history_manager", None)
        _core.ledger_attach(self.shell.user_ns, getattr(self.shell, "user_ns_hidden", None),
                            getattr(history, "output_hist", None), self.shell,
                            getattr(self.shell, "transform_cell", None))

    def stop(self):
        from .restore import restore_all, restore_notice

        # Without memtamer no cell restores a proxy first: leave none behind.
        restored = restore_all(self.shell)
        if restored:
            print(restore_notice(restored, "unloaded, so every compressed variable was restored:"))
        self._unarm_stop_cell()
        if self.shell.compile is self.compiler:  # else someone wrapped it since: leave theirs
            self.shell.compile = self.compiler.wrapped
        self.live.close()
        if self.rules is not None:
            self.rules.stop()
        if self.guard is not None:
            self.guard.stop()
        if self.publisher is not None:
            self.publisher.stop()
        _core.ledger_detach()
        self.numpy_hook.uninstall()
        self.shell.events.unregister("pre_run_cell", self.hooks.pre_run_cell)
        self.shell.events.unregister("post_run_cell", self.hooks.post_run_cell)
        registered = self.shell.magics_manager.magics
        for kind, names in self.magics.magics.items():
            for name in names:
                registered[kind].pop(name, None)
        if not _core.uninstall_hooks():
            print("memtamer: another allocator hook (such as tracemalloc) was installed after "
                  "memtamer's and still wraps it; memtamer's hook stays in that chain and only counts.")

    # IPython prints a traceback for a callback that raises and carries on:
    # ours report a failure once and never raise.
    def _warn_once(self, where, exc):
        if where not in self._warned:
            self._warned.add(where)
            print(f"memtamer: {where} failed ({type(exc).__name__}: {exc}); "
                  "figures for this cell may be missing", file=sys.stderr)

    def _restore_read(self, source):
        """Restores the compressed variables the cell reads, before it runs."""
        from .restore import auto_restore, restore_notice

        try:
            restored = auto_restore(self.shell, source)
            if restored:
                print(restore_notice(restored))
        except KeyboardInterrupt as exc:  # the cell is stopped, and still measured
            self.stop_cell.message = str(exc) or "memtamer: Ctrl-C before the cell ran"
            self.shell.ast_transformers.append(self.stop_cell)
            self.stop_armed = True
        except Exception as exc:  # noqa: BLE001 - a callback must not raise
            self._warn_once("restoring compressed variables", exc)

    def _cell_notices(self, record, peaked, swapping, lost, growth):
        """What the cell callbacks (hooks.c) found worth saying after a cell:
        its peak or what it kept, its swapping, the names it lost while
        something holds their objects, a re-run's growth (a dict, or None)."""
        from .render import gone_notice, notice, rerun_notice, swap_notice

        if peaked:
            from .peaks import annotate

            print(notice(annotate(record, self.shell), _core.process()))
        if swapping:
            print(swap_notice(record))
        gone = _core.ledger_gone(record["cell"]) if lost else []
        if gone:
            print(gone_notice(gone))
        if growth:
            print(rerun_notice(growth))

    def _unarm_stop_cell(self):
        self.stop_cell.message = None  # a cell that failed to compile never took it
        self.stop_armed = False
        if self.stop_cell in self.shell.ast_transformers:
            self.shell.ast_transformers.remove(self.stop_cell)


def _configured(shell, key):
    """A switch of memtamer's in the IPython profile's config: ``quiet`` (no
    confirmation at load, e.g. with memtamer in
    ``c.InteractiveShellApp.extensions``) and ``live`` (the live line under
    running cells), as ``c.Memtamer.quiet = True``."""
    section = getattr(shell, "config", {}).get("Memtamer") or {}
    return bool(section.get(key, False))


def loaded_line(guard, telemetry, rules_said):
    """The one line %load_ext prints: what is on (the budget, telemetry's
    endpoint, the rules when no other line said so) and where to look.
    rules_said: a line about the rules file was printed already."""
    from .guard import budget_words

    parts = [f"budget {budget_words(guard)}" if guard["enabled"] else "no budget (%memguard SIZE)",
             f"telemetry on {telemetry['endpoint']}" if telemetry else "no telemetry"]
    if not rules_said:
        parts.append("no rules file")
    return ("memtamer: measuring every cell; " + ", ".join(parts)
            + ". %memreport shows the figures, %memguard the budget.")


_active = None


def load_ipython_extension(shell):
    """Called by %load_ext memtamer; loading twice is harmless."""
    global _active
    if _active is not None:
        return
    extension = _Extension(shell)
    extension.start()
    _active = extension


def unload_ipython_extension(shell):
    """Called by %unload_ext memtamer: removes every hook and magic it added."""
    global _active
    if _active is None:
        return
    _active.stop()
    _active = None
