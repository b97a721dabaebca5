"""Every entry point of _core, many times, good calls and error paths alike.

Run under valgrind by test_leaks.py (memory errors, definite leaks) and on
its own by the same file (Python-level leaks: allocated blocks that grow
with the number of calls).  ``calls`` below must name every public
callable of _core: test_leaks.py checks that, so a new entry point cannot
go unexercised."""

import copy
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import time
import types

import numpy as np
import zmq

from memtamer import _core


def expect_error(function, *args, **kwargs):
    try:
        function(*args, **kwargs)
    except Exception:  # noqa: BLE001 - the error path itself is what is exercised
        return
    raise AssertionError(f"{function.__name__}{args} did not fail")


class Odd(list):
    """A container whose methods fail: the walker's error paths."""

    def __len__(self):
        raise RuntimeError("no length")


def cells(i):
    _core.cell_begin(i, f"cell {i}\nsecond line")
    _core.cell_numpy_imported()  # numpy's handler is in place already: nothing to do
    kept = np.ones(1000)
    blob = b"x" * 100_000
    assert _core.cell_running()["cell"] == i
    _core.cell_end(i, i % 7 == 0)
    assert _core.cell_running() is None
    del kept, blob
    _core.cells()
    _core.clear_cells()  # the history grows by design; what is cleared must all go
    # at_fork's list grows by design (live.py added its pair): its refusals only
    expect_error(_core.at_fork, 1)
    expect_error(_core.at_fork, print)


def peaks(i):
    """Peak attribution: small thresholds so that every cell has a composition."""
    _core.peaks_settings(block=65536, cell=65536)
    _core.cell_begin(i, "temporary = np.ones(20000) * 2\nkept = np.ones(30000)")
    temporary = np.ones(20000) * 2
    kept = np.ones(30000)
    del temporary
    assert _core.cell_end(i, False)["peak_composition"]["groups"]
    del kept
    _core.clear_cells()
    expect_error(_core.peaks_settings, block=0)
    _core.peaks_settings(block=2**20, cell=64 * 2**20)


def process(i):
    _core.report()
    _core.process()
    _core._allocators()
    _core.trim()
    _core.heap_free()
    _core.in_ram("/dev/shm")
    _core.in_ram("/no/such/path")
    expect_error(_core.in_ram, 12)
    _core.set_peak_method("sampled")
    _core.set_peak_method("hwm")
    expect_error(_core.set_peak_method, "bogus")


def parsers(i):
    _core._parse("status", "VmRSS:\t 5 kB\nVmHWM:\t 9 kB\n")
    _core._parse("meminfo", "MemTotal: 100 kB\nMemAvailable: 50 kB\n")
    _core._parse("statm", "765 440 361 5 0 90 0\n")
    _core._parse("smaps_rollup", "Private_Clean: 4 kB\nPrivate_Dirty: 8 kB\n")
    expect_error(_core._parse, "nonsense", "")
    expect_error(_core._parse, "status")


def sharing(i):
    _core.sharing(None, 3)
    _core.sharing("/no/such/cgroup", 3)
    expect_error(_core.sharing, None)


def proc_root(i):
    _core._set_proc_root(tempfile.gettempdir())
    _core.process()
    _core._set_proc_root("")


def walker(i):
    base = np.arange(1000.0)
    obj = {"a": [1, 2.5, "three", (base, base[::2])], "b": {"nested": [b"x" * 64] * 3}}
    _core.deep_size(obj)
    _core.deep_size(obj, 0.5)
    expect_error(_core.deep_size)
    _core.deep_size(Odd([1, 2, 3]))


def buffers(i):
    """Other libraries' buffers: Arrow arrays, streams and buffers, the
    buffer protocol, exporters that fail, and Arrow's pool in a cell."""
    try:
        import pyarrow as pa
    except ImportError:
        pa = None
    _core.buffer_ranges(pickle.PickleBuffer(b"x" * 5000))
    _core.buffer_ranges([1, 2])
    expect_error(_core.buffer_ranges)
    if pa is not None:
        table = pa.table({"x": np.arange(5000.0), "s": [str(n) for n in range(5000)]})
        _core.buffer_ranges(table)
        _core.buffer_ranges(table["s"])
        _core.buffer_ranges(table.to_batches()[0])
        _core.buffer_ranges(pa.array(["a", "b"] * 100).dictionary_encode())
        _core.buffer_ranges(pa.allocate_buffer(5000))
        import pandas as pd

        strings = [str(n) for n in range(1000)]
        _core.deep_size([table, pd.DataFrame({"s": pd.array(strings, dtype="str")})])
        _core.cell_begin(i, "t = pa.concat_tables([table, table])")
        doubled = pa.concat_tables([table, table]).combine_chunks()
        _core.cell_end(i, False)
        del doubled
        _core.clear_cells()


ns = {}


def ledger(i):
    ns.clear()
    ns.update(big=np.ones(5000), view=None, items=list(range(100)), text="t" * 1000)
    ns["view"] = ns["big"][::2]
    ns["gone"] = np.ones(2**17)  # 1 MiB: followed after its name goes
    out = {1: ns["gone"]}
    _core.ledger_attach(ns, {}, out, None, None)
    _core.cell_begin(i, "big = big\nitems\ngone")
    _core.cell_end(i, False)
    del ns["gone"]  # the output cache still holds it
    _core.cell_begin(i + 1, "del gone")
    _core.ledger_ran(compile("items.append(len(big))", "<cell>", "exec"))
    expect_error(_core.ledger_ran, "items")
    _core.cell_end(i + 1, False)
    _core.ledger_gone(i + 1)
    _core.ledger_gone()
    assert _core.ledger_gone_object("gone") is out[1]
    expect_error(_core.ledger_gone, "a cell")
    expect_error(_core.ledger_gone_object, 1)
    _core.report()
    _core.clear_cells()
    _core.variables()
    _core.variables("big")
    _core.ledger()
    _core.ledger_rewalk(["big", "missing"])
    _core.set_walk_budget(0.5, 2.0)
    expect_error(_core.set_walk_budget, -1, 2.0)
    _core.ledger_detach()


def shrink(i):
    local = {"a": np.linspace(0, 1, 4096), "xs": [1, 2, 3] * 100, "s": "no"}
    assert "spill" in _core.shrink_actions()["actions"]
    _core.shrink_window_begin()
    _core.inplace_check(local, "a")
    _core.downcast_plan(local["a"], rtol=1e-3)
    _core.shrink_options()
    _core.shrink_options(codec="zstd", level=3, rtol=1e-4)
    expect_error(_core.shrink_options, codec="nope")
    expect_error(_core.shrink_options, level=12)
    expect_error(_core.shrink_options, rtol=-1.0)
    _core.downcast(local, "a", rtol=1e-3, dry_run=True)
    _core.downcast(local, "a", to="float32", rtol=1e-3)
    expect_error(_core.downcast, local, "s")
    expect_error(_core.downcast, local, "missing")
    _core.pack(local, "xs")
    expect_error(_core.pack, local, "s")
    _core.shrink_window_end()
    with tempfile.TemporaryDirectory() as tmp:
        _core.spill_write([(0, np.ones(1000))], os.path.join(tmp, "spill"))
        expect_error(_core.spill_write, [(0, np.ones(10))], os.path.join(tmp, "no", "such", "dir"))
        expect_error(_core.spill_write, [(0, np.ones((4, 4))[:, ::2])], os.path.join(tmp, "gaps"))
        expect_error(_core.spill_write, [(8, b"ab"), (0, b"cd")], os.path.join(tmp, "unordered"))
        expect_error(_core.spill_write, np.ones(10), os.path.join(tmp, "no regions"))
        # Committed as written, after a change (copied in), and refused.
        spilled = {"a": np.arange(1000.0)}
        _core.spill_write([(0, spilled["a"])], os.path.join(tmp, "commit"))
        mapped = np.memmap(os.path.join(tmp, "commit"), dtype=float, mode="r+", shape=(1000,))
        spilled["a"][7] = -1
        expect_error(_core.spill_commit, spilled, "a", np.ones(1000), mapped)
        kept = spilled["a"]
        checkpoint = _core.spill_commit(spilled, "a", kept, mapped, bind=False)
        assert spilled["a"] is kept
        assert _core.spill_commit(spilled, "a", kept, mapped) == checkpoint
        assert spilled["a"] is mapped and mapped[7] == -1
        assert _core.spill_checksum(os.path.join(tmp, "commit")) == checkpoint
        expect_error(_core.spill_checksum, os.path.join(tmp, "missing"))
        del kept
        del mapped, spilled
        stream, buffers = b"stream", [memoryview(np.arange(8.0)).cast("B")]
        file = stream + bytes(2) + bytes(buffers[0])
        regions = [(0, stream), (8, buffers[0])]
        pickled = {"p": [1.0]}
        source = pickled["p"]
        expect_error(_core.spill_commit_pickled, pickled, "p", source, "v", [(1, stream)], file)
        expect_error(_core.spill_commit_pickled, pickled, "p", source, "v", [(-1, stream)], file)
        expect_error(_core.spill_commit_pickled, pickled, "p", source, "v", [(0, 5)], file)
        expect_error(_core.spill_commit_pickled, pickled, "p", [], "v", regions, file)
        _core.spill_commit_pickled(pickled, "p", source, "v", regions, file, bind=False)
        assert pickled["p"] is source
        _core.spill_commit_pickled(pickled, "p", source, "v", regions, file)
        assert pickled["p"] == "v"
        del source, pickled, file


# The compressed proxy: restored by use (rebinding its name), by restore(),
# through pickle and copy, and refused for what pickle stores by name.
owner = types.ModuleType("leakcheck_namespace")
sys.modules[owner.__name__] = owner


def by_name():
    return 0


def codec(i):
    array = np.arange(10_000, dtype=np.int64)
    proxy = _core.compress(array, "array", codec="lz4", level=5)
    assert np.array_equal(_core.restore(proxy), array)
    owner.a = _core.compress(np.arange(1000.0), "a", owner=owner)
    assert float((owner.a + 1).sum()) == 500500.0 and type(owner.a) is np.ndarray
    proxy = _core.compress([1, "x", 2.5], "p", codec="zstd", level=3)
    assert _core.compressed_info(proxy)["kind"] == "pickle" and repr(proxy)
    assert _core.restore(proxy) == [1, "x", 2.5] and len(proxy) == 3
    proxy = _core.compress({"k": np.ones(10)}, "q", owner=owner)
    assert pickle.loads(pickle.dumps(proxy))["k"].sum() == copy.deepcopy(proxy)["k"].sum() == 10
    # Committed as compressed, after a change (compressed again), and refused.
    bound = {"a": np.arange(10_000.0), "p": [1, 2.5]}
    for name in ("a", "p"):
        proxy = _core.compress(bound[name], name)
        expect_error(_core.compress_commit, bound, name, [0], proxy)
        bound[name][1] = -1
        _core.compress_commit(bound, name, bound[name], proxy)
        assert bound[name] is proxy and _core.restore(proxy)[1] == -1
    expect_error(_core.compress, [by_name], "f")
    # A pickler of our own (as the package sets one), none (pickle.dumps),
    # one that fails, one that gives no bytes, a failing chooser, and back
    # to pickle.dumps.
    _core.compress_set_pickler(lambda obj: (lambda o, **kw: pickle.dumps(o, **kw))
                               if isinstance(obj, dict) else None)
    assert _core.restore(_core.compress({"k": np.ones(10)}, "q"))["k"].sum() == 10
    assert _core.restore(_core.compress([1, 2], "p")) == [1, 2]
    expect_error(_core.compress_set_pickler, 1)
    _core.compress_set_pickler(lambda obj: lambda o, **kw: 1 / 0)
    expect_error(_core.compress_estimate, [1, 2])
    _core.compress_set_pickler(lambda obj: lambda o, **kw: "not bytes")
    expect_error(_core.compress, [1, 2], "p")
    _core.compress_set_pickler(lambda obj: 1 / 0)
    expect_error(_core.compress, [1, 2], "p")
    _core.compress_set_pickler(None)
    _core.compress_estimate(array, codec="zstd", level=3)
    _core.codecs()
    expect_error(_core.compress, array, "array", codec="bogus")


RULES = b"""version: 1
protect: [keep_*]
rules:
  - name: squeeze
    when: {cell_retained: 1MiB}
    match: {type: ndarray, min_size: 1KiB}
    order: largest
    do: compress
    codec: zstd
  - name: workers
    when: {children_over: 1B}
    match: {name: client}
    do: restart
"""


def rules(i):
    assert _core.rules_check(RULES) == []
    assert _core.rules_check(b"version: 1\nrules: [{name: x, do: nothing}]\n")
    assert _core.rules_load(RULES) == []
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "memtamer.yaml")
        with open(path, "wb") as f:
            f.write(RULES)
        assert _core.rules_read(path) == RULES
        expect_error(_core.rules_read, tmp)  # a directory
        spill = b"version: 1\nrules: [{name: s, do: spill, dir: here}]\n"
        assert _core.rules_check(spill, tmp)  # no such directory
        os.mkdir(os.path.join(tmp, "here"))
        assert _core.rules_load(spill, tmp) == []
    _core.rules_load(b"version: [unclosed")
    _core.rules_table()
    _core.rules_enable(True)
    _core.policy_evaluate(True)
    _core.policy_acted_on("squeeze", ["missing"])
    _core.parse_level("80%")
    _core.parse_level("256MiB")
    expect_error(_core.parse_level, "lots")
    _core.parse_size("1.5GiB")
    expect_error(_core.parse_size, "-1GiB")
    _core.format_size(1536 * 2**20, True)
    _core.format_size(-5)
    expect_error(_core.format_size, "5")
    expect_error(_core.format_size, 2**70)
    _core.closest("cels", ["summary", "cells"])
    _core.closest("zzz", ("a", "b"))
    expect_error(_core.closest, "x", [1])
    expect_error(_core.closest, "x", 5)
    _core.rules_enable(False)
    _core.rules_clear()


# A child that lives through the rounds: children() reads it, and the rules'
# children_over trigger sees it.
SLEEPER = subprocess.Popen(["sleep", "3600"])


def children(i):
    (child,) = [c for c in _core.children() if c["pid"] == SLEEPER.pid]
    assert child["command"] == "sleep 3600"


TELEMETRY_DIR = tempfile.mkdtemp()
CURVE_SECRET_KEY = zmq.curve_keypair()[1].decode()


def telemetry(i):
    """A publisher with a subscriber through cells and events, a restart
    with names off, the refusals of tcp and of a bad CurveZMQ key, one with
    a key, and a stop."""
    endpoint = _core.telemetry_start(f"ipc://{TELEMETRY_DIR}/memtamer/leak.sock", "leakcheck")
    subscriber = zmq.Context.instance().socket(zmq.SUB)
    subscriber.connect(endpoint)
    subscriber.subscribe(b"memtamer.")
    while _core.telemetry_status()["subscriptions"] < 1:
        time.sleep(0.001)
    _core.cell_begin(i, "published")
    _core.telemetry_event("test", {"i": i, "name": "kept"})
    _core.cell_end(i, False)
    _core.clear_cells()
    while subscriber.poll(5):
        subscriber.recv_multipart()
    subscriber.close(linger=0)
    _core.telemetry_start(endpoint, "leakcheck", False)
    _core.telemetry_event("test", {"name": "dropped", "i": i, "reason": "dropped"})
    expect_error(_core.telemetry_start, "nonsense://", "leakcheck")
    expect_error(_core.telemetry_start, "tcp://127.0.0.1:*", "leakcheck")
    expect_error(_core.telemetry_start, endpoint, "leakcheck", True, "short")
    _core.telemetry_start(endpoint, "leakcheck", True, CURVE_SECRET_KEY)
    _core.telemetry_status()
    _core.telemetry_protocol()
    _core.telemetry_stop()
    assert _core.telemetry_event("test", {}) is False


def guard(i):
    user_ns = {"x": np.ones(10)}
    expect_error(_core.guard_enable, user_ns, str, 5)
    runtime = tempfile.mkdtemp()
    # With a pod ledger: a large request in an armed cell reserves there.
    _core.guard_enable(user_ns, lambda trip: "described", runtime)
    _core.cell_begin(1, "reserve")
    block = np.empty(2**24)
    del block
    _core.cell_end(1, False)
    _core.guard_disable()
    shutil.rmtree(runtime)
    _core.guard_enable(user_ns, lambda trip: "described")
    _core.guard_set_budget("bytes", 2**32)
    _core.guard_set_budget("percent", 80)
    expect_error(_core.guard_set_budget, "bytes", 2**50)
    expect_error(_core.guard_set_budget, "bogus", 1)
    _core.guard_set_swap(False)
    _core.guard_set_swap(True)
    _core.guard_set_thrashing("stop")
    _core.guard_set_thrashing("warn")
    expect_error(_core.guard_set_thrashing, "bogus")
    expect_error(_core.guard_set_thrashing, 5)
    _core.guard_status()
    _core.guard_exception()
    _core._before_fork()
    _core._after_fork()
    _core.guard_disable()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, f"memtamer-{os.getpid()}.guard")
        _core.postmortem_open(path)
        _core.postmortem_read(path)
        _core.postmortem_close()
        expect_error(_core.postmortem_read, os.path.join(tmp, "absent"))


calls = {
    "cell_begin": cells, "cell_end": cells, "cells": cells, "cell_running": cells, "at_fork": cells,
    "peaks_settings": peaks,
    "report": process, "process": process, "_allocators": process, "trim": process, "in_ram": process,
    "set_peak_method": process, "_parse": parsers, "_set_proc_root": proc_root,
    "sharing": sharing,
    "deep_size": walker, "buffer_ranges": buffers, "cell_numpy_imported": cells,
    "ledger_attach": ledger, "ledger_rewalk": ledger, "ledger_detach": ledger,
    "variables": ledger, "ledger": ledger, "set_walk_budget": ledger, "ledger_gone": ledger,
    "ledger_gone_object": ledger, "ledger_ran": ledger, "heap_free": process,
    "shrink_window_begin": shrink, "shrink_window_end": shrink, "inplace_check": shrink,
    "downcast_plan": shrink, "shrink_options": shrink, "downcast": shrink, "pack": shrink, "spill_write": shrink,
    "spill_commit": shrink, "spill_commit_pickled": shrink, "spill_checksum": shrink, "shrink_actions": shrink,
    "compress": codec, "compress_estimate": codec, "codecs": codec, "restore": codec,
    "compressed_info": codec, "compress_commit": codec, "compress_set_pickler": codec,
    "rules_read": rules, "rules_check": rules, "rules_load": rules, "rules_clear": rules, "rules_table": rules,
    "rules_enable": rules, "policy_evaluate": rules, "policy_acted_on": rules, "children": children,
    "parse_level": rules, "parse_size": rules, "closest": rules, "format_size": rules,
    "telemetry_start": telemetry, "telemetry_stop": telemetry, "telemetry_event": telemetry,
    "telemetry_status": telemetry, "telemetry_protocol": telemetry,
    "guard_enable": guard, "guard_disable": guard, "guard_set_budget": guard,
    "guard_set_swap": guard, "guard_set_thrashing": guard,
    "guard_status": guard, "guard_exception": guard, "postmortem_open": guard,
    "postmortem_close": guard, "postmortem_read": guard, "_before_fork": guard,
    "_after_fork": guard,
    # Called by the machinery itself, not by users: install/uninstall below,
    # the signal handler only through a real budget trip (test_guard_kernel).
    "clear_cells": cells,
    "install_hooks": None, "uninstall_hooks": None, "_guard_signal": None,
}


def groups():
    return list(dict.fromkeys(f for f in calls.values() if f is not None))


def run(rounds):
    """Runs every group 3 * rounds times; returns the growth of Python's
    allocated blocks per group: the smaller of its growth over the second
    and over the third run of rounds.  The first lets caches, interned
    names and free lists settle; a table that doubles may still grow once
    later, but a leak grows in every run."""
    growth = {}
    for group in groups():
        for i in range(rounds):
            group(i)
        windows = []
        for window in (1, 2):
            before = sys.getallocatedblocks()
            for i in range(window * rounds, (window + 1) * rounds):
                group(i)
            windows.append(sys.getallocatedblocks() - before)
        growth[group.__name__] = min(windows)
    return growth


if __name__ == "__main__":
    _core.install_hooks()
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 30
    growth = run(rounds)
    # A publisher left running, and a cell left open, for the module's teardown.
    _core.telemetry_start(f"ipc://{TELEMETRY_DIR}/memtamer/leak.sock", "leakcheck")
    _core.cell_begin(None, "left open: unload from inside a cell")
    assert _core.uninstall_hooks()
    _core.clear_cells()
    SLEEPER.kill()
    SLEEPER.wait()
    print("growth", growth)
    print("leakcheck done")
