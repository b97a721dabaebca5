"""Exercised under valgrind by test_leaks.py: every entry point of _core, many times."""

import numpy as np

from memtamer import _core

_core.install_hooks()
for i in range(200):
    _core.cell_begin(i, f"cell {i}\nsecond line")
    kept = np.ones(1000)
    blob = b"x" * 100_000
    _core.cell_end(i, i % 7 == 0)
    del kept, blob
# Peak attribution: small thresholds so that every cell has a composition.
_core.peaks_settings(block=65536, cell=65536)
for i in range(200, 260):
    _core.cell_begin(i, "temporary = np.ones(20000) * 2\nkept = np.ones(30000)")
    temporary = np.ones(20000) * 2
    kept = np.ones(30000)
    del temporary
    assert _core.cell_end(i, False)["peak_composition"]["groups"]
try:
    _core.peaks_settings(block=0)
except ValueError:
    pass
_core.peaks_settings(block=2**20, cell=64 * 2**20)
for _ in range(20):
    _core.report()
    _core.process()
    _core._allocators()
_core.cell_begin(None, "left open: unload from inside a cell")
assert _core.uninstall_hooks()
_core.clear_cells()
print("leakcheck done")
