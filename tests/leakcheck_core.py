"""Exercised under valgrind by test_leaks.py: every entry point of _core, many times."""

import copy
import pickle
import sys
import types

import numpy as np

from memtamer import _core

_core.install_hooks()
for i in range(200):
    _core.cell_begin(i, f"cell {i}\nsecond line")
    kept = np.ones(1000)
    blob = b"x" * 100_000
    _core.cell_end(i, i % 7 == 0)
    del kept, blob
for _ in range(20):
    _core.report()
    _core.process()
    _core._allocators()
# The compressed proxy: restored by use (rebinding its name), by restore(),
# through pickle and copy, and refused for what pickle stores by name.
owner = types.ModuleType("leakcheck_namespace")
sys.modules[owner.__name__] = owner


def by_name():
    return 0


for _ in range(30):
    owner.a = _core.compress(np.arange(1000.0), "a", owner=owner)
    assert float((owner.a + 1).sum()) == 500500.0 and type(owner.a) is np.ndarray
    proxy = _core.compress([1, "x", 2.5], "p", codec="zstd")
    assert _core.compressed_info(proxy)["kind"] == "pickle" and repr(proxy)
    assert _core.restore(proxy) == [1, "x", 2.5] and len(proxy) == 3
    proxy = _core.compress({"k": np.ones(10)}, "q", owner=owner)
    assert pickle.loads(pickle.dumps(proxy))["k"].sum() == copy.deepcopy(proxy)["k"].sum() == 10
    try:
        _core.compress([by_name], "f")
    except ValueError:
        pass
    del proxy
_core.cell_begin(None, "left open: unload from inside a cell")
assert _core.uninstall_hooks()
_core.clear_cells()
print("leakcheck done")
