"""Exercised under valgrind by test_leaks.py: every entry point of _core, many times."""

import tempfile
import time

import numpy as np
import zmq

from memtamer import _core

runtime = tempfile.mkdtemp()
endpoint = _core.telemetry_start(f"ipc://{runtime}/memtamer/leak.sock", "leakcheck")
subscriber = zmq.Context.instance().socket(zmq.SUB)
subscriber.connect(endpoint)
subscriber.subscribe(b"memtamer.")
while _core.telemetry_status()["subscriptions"] < 1:
    time.sleep(0.01)
_core.install_hooks()
for i in range(200):
    _core.cell_begin(i, f"cell {i}\nsecond line")
    kept = np.ones(1000)
    blob = b"x" * 100_000
    _core.telemetry_event("test", {"i": i, "name": "kept"})
    _core.cell_end(i, i % 7 == 0)
    del kept, blob
while subscriber.poll(500):
    subscriber.recv_multipart()
subscriber.close(linger=0)
# A restart (names off), a stop, and a publisher left running for module free.
_core.telemetry_start(endpoint, "leakcheck", False)
_core.telemetry_event("test", {"name": "dropped"})
_core.telemetry_stop()
_core.telemetry_start(endpoint, "leakcheck")
for _ in range(20):
    _core.report()
    _core.process()
    _core._allocators()
_core.cell_begin(None, "left open: unload from inside a cell")
assert _core.uninstall_hooks()
_core.clear_cells()
print("leakcheck done")
