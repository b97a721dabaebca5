"""The cell that imports numpy: numpy's allocation handler (heap.c) is set
at cell_begin, when numpy is there to take it.  A cell that imports numpy
(directly, or through pandas and the like) would be blind and unguarded
until its end; this finder, on sys.meta_path until numpy has been imported,
has _core install the handler as soon as numpy's import completes, before
the cell's first array."""

import sys
import threading

from . import _core


class NumpyImportHook:
    """A meta path finder that wraps numpy's loader once.  warn(where, exc)
    reports a failure: an import hook must never fail the user's import."""

    def __init__(self, warn):
        self.warn = warn

    def install(self):
        if "numpy" not in sys.modules and self not in sys.meta_path:
            sys.meta_path.insert(0, self)

    def uninstall(self):
        if self in sys.meta_path:
            sys.meta_path.remove(self)

    def find_spec(self, name, path=None, target=None):
        if name != "numpy":
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _ThenInstall(spec.loader, self)
        return spec

    def imported(self):
        self.uninstall()
        # numpy's handler lives in a context variable: the cell's thread's.
        if threading.current_thread() is threading.main_thread():
            try:
                _core.cell_numpy_imported()
            except Exception as exc:  # noqa: BLE001 - the import itself succeeded
                self.warn("measuring the cell that imported numpy", exc)


class _ThenInstall:
    """numpy's own loader, then the handler; the module keeps its own
    loader afterwards."""

    def __init__(self, loader, hook):
        self.loader = loader
        self.hook = hook

    def __getattr__(self, name):
        return getattr(self.loader, name)

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        try:
            self.loader.exec_module(module)
        finally:
            module.__loader__ = self.loader
            if module.__spec__ is not None:
                module.__spec__.loader = self.loader
        self.hook.imported()
