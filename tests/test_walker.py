"""Deep sizes and exclusive bytes against truth built from the parts we
construct (sys.getsizeof of each distinct object, numpy's nbytes)."""

import array
import os
import signal
import sys
import time

import numpy as np
import pandas as pd
import pytest

import memtamer
from memtamer import _core


def getsizeof_all(*objects):
    """Sum of sys.getsizeof over distinct objects: the truth for a graph we built."""
    seen = {id(o): o for o in objects}
    return sum(sys.getsizeof(o) for o in seen.values())


def array_truth(a):
    # The header without the buffer, from a view of the same shape.
    return a.nbytes + sys.getsizeof(a[...])


def test_list_of_floats():
    values = [float(i) + 0.5 for i in range(10_000)]
    assert memtamer.deep_size(values) == getsizeof_all(values, *values)


def test_array_counts_its_buffer():
    a = np.ones((300, 7))
    assert memtamer.deep_size(a) == array_truth(a)


def test_view_counts_its_base_once():
    a = np.arange(100_000, dtype=np.float64)
    v = a[::3]
    assert memtamer.deep_size(v) == sys.getsizeof(v) + array_truth(a)
    views = [a[i:] for i in range(50)]
    assert memtamer.deep_size(views) == (sys.getsizeof(views) + sum(sys.getsizeof(x) for x in views)
                                         + array_truth(a))


def test_list_holding_an_array_twice():
    a = np.zeros(10_000)
    pair = [a, a]
    assert memtamer.deep_size(pair) == sys.getsizeof(pair) + array_truth(a)


def test_object_array_walks_its_items():
    words = [f"word-{i}" * 3 for i in range(1000)]
    a = np.array(words, dtype=object)
    assert memtamer.deep_size(a) == array_truth(a) + getsizeof_all(*words)


def test_nested_dicts():
    inner_list = [1.25, 2.5, 3.75]
    inner = {"leaf": inner_list}
    outer = {"inner": inner, "other": "x" * 1000}
    expected = getsizeof_all(outer, inner, inner_list, *inner_list, "inner", "other", "leaf",
                             outer["other"])
    assert memtamer.deep_size(outer) == expected


class Slotted:
    __slots__ = ("payload", "label")

    def __init__(self, payload, label):
        self.payload = payload
        self.label = label


class Plain:
    pass


def test_slots_object():
    s = Slotted(np.ones(1000), "label-" * 20)
    assert memtamer.deep_size(s) == sys.getsizeof(s) + array_truth(s.payload) + sys.getsizeof(s.label)


def test_instance_dict():
    p = Plain()
    p.data = [2.5] * 100  # one float object, referenced 100 times
    attrs = p.__dict__  # materialize it, as the truth needs it
    expected = getsizeof_all(p, attrs, "data", p.data, p.data[0])
    assert memtamer.deep_size(p) == expected


def test_self_referencing_containers():
    loop = [3.5]
    loop.append(loop)
    assert memtamer.deep_size(loop) == getsizeof_all(loop, loop[0])
    d = {}
    d["me"] = d
    assert memtamer.deep_size(d) == getsizeof_all(d, "me")


def test_buffers_by_their_owner():
    raw = bytearray(100_000)
    assert memtamer.deep_size(raw) == sys.getsizeof(raw)
    b = bytes(50_000)
    assert memtamer.deep_size(b) == sys.getsizeof(b)
    arr = array.array("d", range(10_000))
    assert memtamer.deep_size(arr) == sys.getsizeof(arr)
    view = memoryview(raw)
    # the view, numpy-free: its managed-buffer record (under 200 B) and the exporter
    extra = memtamer.deep_size(view) - sys.getsizeof(view) - sys.getsizeof(raw)
    assert 0 <= extra < 200
    on_bytes = np.frombuffer(b, dtype=np.uint8)
    assert memtamer.deep_size(on_bytes) == sys.getsizeof(on_bytes) + sys.getsizeof(b)


def test_dataframe_numeric_and_object_columns():
    n = 100_000
    numbers = np.arange(n, dtype=np.float64)
    words = [f"row {i} " * 2 for i in range(n)]
    df = pd.DataFrame({"x": numbers, "s": pd.Series(words, dtype=object)})
    buffers = numbers.nbytes + n * 8  # the float column and the object column's pointers
    truth = buffers + getsizeof_all(*words)
    size = memtamer.deep_size(df)
    # Exact buffers and strings; what is left is pandas' bookkeeping (index, blocks, caches).
    assert truth <= size <= truth + 64 * 1024


def test_budget_never_undercounts_silently():
    values = [float(i) for i in range(2_000_000)]
    with pytest.raises(TimeoutError) as raised:
        memtamer.deep_size(values, budget=1e-9)
    assert 0 < raised.value.at_least < getsizeof_all(values, *values)


class Shell:
    """Stands in for the IPython shell (the walk never enters it)."""


@pytest.fixture
def namespace():
    ns = {}
    _core.ledger_attach(ns, {}, {}, Shell(), None)
    yield ns
    _core.ledger_detach()


def by_name(variables):
    return {v["name"]: v for v in variables}


def labels(variable):
    return [h["label"] for h in variable["holders"]]


def test_exclusive_and_holders(namespace):
    x = np.ones(100_000)
    w = np.ones(30_000)
    solo = np.ones(50_000)
    namespace.update(x=x, y=x, v=x[::2], solo=solo, w=w, holder=[w], _12=solo)
    # A reference from outside the namespace is reported as one...
    assert {"label": "a reference outside the namespace", "kind": "unnamed"} in \
        by_name(_core.variables())["w"]["holders"]
    del x, w, solo  # ...so drop this frame's before checking exact holders
    got = by_name(_core.variables())
    assert set(got) == {"x", "y", "v", "solo", "w", "holder"}
    # two names for one array: each reaches it all, del of either frees nothing
    assert got["x"]["bytes"] == got["y"]["bytes"] == array_truth(namespace["x"])
    assert got["x"]["exclusive"] == got["y"]["exclusive"] == 0
    assert {"y", "v"} <= set(labels(got["x"]))
    # v = x[::2] is a view of x; y is the same array under another name
    kinds = {h["key"]: h["kind"] for h in got["x"]["holders"]}
    assert kinds["v"] == "view" and kinds["y"] == "variable"
    # a view: its header is all del frees
    assert got["v"]["bytes"] == sys.getsizeof(namespace["v"]) + array_truth(namespace["x"])
    assert got["v"]["exclusive"] == sys.getsizeof(namespace["v"])
    assert any(s["with"] in ("x", "y") and s["view"] for s in got["v"]["shares"])
    # a list holding a named array
    assert got["holder"]["bytes"] == sys.getsizeof(namespace["holder"]) + array_truth(namespace["w"])
    assert got["holder"]["exclusive"] == sys.getsizeof(namespace["holder"])
    assert got["w"]["exclusive"] == 0 and got["w"]["holders"] == [
        {"label": "holder", "kind": "variable", "key": "holder"}]
    # held by an output-cache name only
    assert got["solo"]["exclusive"] == 0 and got["solo"]["holders"] == [
        {"label": "_12", "kind": "output_name", "key": "_12"}]
    del namespace["_12"]
    assert by_name(_core.variables())["solo"]["exclusive"] == array_truth(namespace["solo"])


def test_exclusive_of_nested_and_self_referencing(namespace):
    shared = [0.5] * 10
    loop = {"shared": shared}
    loop["loop"] = loop
    namespace.update(loop=loop, alone={"k": [1.5, 2.5]}, shared=shared)
    got = by_name(_core.variables())
    assert got["loop"]["bytes"] == getsizeof_all(loop, shared, shared[0], "shared", "loop")
    assert got["loop"]["exclusive"] == got["loop"]["bytes"] - getsizeof_all(shared, shared[0])
    alone = namespace["alone"]
    assert got["alone"]["exclusive"] == got["alone"]["bytes"] == getsizeof_all(
        alone, "k", alone["k"], *alone["k"])


# ---- the walker's own memory and time, whatever the container's size ----

def _hwm_reset():
    """Resets VmHWM to the current RSS; False where the kernel refuses."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _hwm_rise(action):
    """What action adds to the process's high-water mark, from /proc."""
    def field(name):
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith(name))
    if not _hwm_reset():
        pytest.skip("clear_refs is not writable here")
    before = field("VmRSS")
    result = action()
    return field("VmHWM") - before, result


def test_walking_a_huge_list_costs_no_memory_and_stops_on_time():
    big = [0] * (3 * 10**7)  # 229 MiB of pointers to one int
    rise, (size, complete) = _hwm_rise(lambda: _core.deep_size(big))
    assert complete and size == sys.getsizeof(big) + sys.getsizeof(0)
    assert rise < 8 * 1024**2  # it used to push every item: 512 MiB
    # On time: the walk cut short by a budget no machine can walk the list
    # in takes a small part of the whole walk's CPU time (CPU time, not the
    # clock: a busy machine takes the thread off its core, not its work).
    started = time.thread_time()
    _core.deep_size(big)
    whole = time.thread_time() - started
    started = time.thread_time()
    size, complete = _core.deep_size(big, 1e-6)
    assert not complete and time.thread_time() - started < whole / 4


def test_the_table_of_shared_objects_has_a_cap():
    values = [float(i) for i in range(2 * 10**6)]
    twice = [values, list(values)]  # every float has two holders: the table must dedupe them
    rise, (size, complete) = _hwm_rise(lambda: _core.deep_size(twice))
    # 2M entries used to take 64 MiB of entries and 16 MiB of slots
    assert rise < 48 * 1024**2
    assert not complete and size < getsizeof_all(twice, *twice, *values)
    with pytest.raises(TimeoutError, match="memory cap"):
        memtamer.deep_size(twice)


def test_a_walk_cut_short_estimates_the_whole(namespace):
    values = [float(i) for i in range(3 * 10**6)]
    namespace["values"] = values
    truth = getsizeof_all(values, *values)
    before = _core.set_walk_budget(0.002, 0.002)
    try:
        got = by_name(_core.variables())["values"]
    finally:
        _core.set_walk_budget(*before)
    assert not got["complete"] and got["bytes"] < truth
    assert got["estimate"] == pytest.approx(truth, rel=0.02)
    from memtamer.render import variables_text
    got["why"] = None
    text = "\n".join(variables_text([got], "variables", {"complete": False, "seconds": 0.002}))
    assert "≈ " in text and "estimated" in text
    got = by_name(_core.variables())["values"]
    assert got["complete"] and got["estimate"] is None and got["bytes"] == truth


# ---- Python code run during a walk cannot pull objects from under it ----

class Victims:
    """Containers the walk is reading, which a descriptor empties."""
    items = []
    table = {}


class ClearingSizeof:
    """A __sizeof__ descriptor whose __get__ empties what is being walked."""

    def __get__(self, obj, owner):
        Victims.items.clear()
        Victims.table.clear()
        return lambda: 64


class Evil:
    __sizeof__ = ClearingSizeof()


class Raises:
    def __sizeof__(self):
        raise ValueError("no size")


class NotAnInt:
    def __sizeof__(self):
        return "big"


class MutatesDict:
    def __sizeof__(self):
        Victims.table.clear()
        return 64


class Plain:
    pass


@pytest.mark.parametrize("cls", [Evil, Raises, NotAnInt, MutatesDict])
def test_sizeof_with_side_effects_is_never_run(cls):
    lists = [[float(i)] for i in range(20_000)]
    Victims.items[:] = [cls()] + lists + [cls()]
    Victims.table.clear()
    Victims.table.update({i: [float(i)] for i in range(20_000)}, odd=cls())
    # Only C-level __sizeof__ methods count: these are sized as a plain object.
    per_object = sys.getsizeof(Plain())
    items = Victims.items
    truth = sys.getsizeof(items) + 2 * per_object + sum(
        sys.getsizeof(x) + sys.getsizeof(x[0]) for x in lists)
    assert memtamer.deep_size(items) == truth
    table = Victims.table
    assert memtamer.deep_size(table) == sys.getsizeof(table) + per_object + getsizeof_all(
        *table.keys(), *(v for v in table.values() if isinstance(v, list)),
        *(v[0] for v in table.values() if isinstance(v, list)))
    # and nothing was emptied
    assert len(Victims.items) == 20_002 and len(Victims.table) == 20_001


# ---- names and objects that used to break the ledger ----

class BadLen(list):
    def __len__(self):
        raise ValueError("no length")


def test_a_raising_len_does_not_break_the_report(namespace):
    namespace["bad"] = BadLen([1.5, 2.5])
    got = by_name(_core.variables())["bad"]
    assert got["type"] == "BadLen[2]"
    assert got["bytes"] == getsizeof_all(namespace["bad"], 1.5, 2.5)


def test_names_with_lone_surrogates(namespace):
    name = "\udc80x"
    namespace[name] = [1.5]
    namespace["_\udc80"] = [2.5]
    got = by_name(_core.variables())
    assert got[name]["bytes"] == getsizeof_all(namespace[name], 1.5)
    assert "_\udc80" in got
    report = memtamer.report()
    assert name in {v["name"] for v in report["variables"]}


def test_underscore_names_are_variables_but_the_shells_are_not(namespace):
    namespace.update({
        "_big": np.ones(1000), "__private": [1.5], "_": [2.5], "__": [3.5], "___": [4.5],
        "_7": [5.5], "_i7": "x = 1", "_i": "", "_ii": "", "_iii": "", "_ih": ["", "x = 1"],
        "_oh": {}, "_dh": ["/tmp"], "__name__": "__main__"})
    got = by_name(_core.variables())
    assert {"_big", "__private"} <= set(got)
    assert not set(got) & {"_", "__", "___", "_7", "_i7", "_i", "_ii", "_iii", "_ih", "_oh",
                           "_dh", "__name__"}
    assert got["_big"]["bytes"] == array_truth(namespace["_big"])


def test_peak_is_never_below_the_start(tmp_path):
    proc = tmp_path / "proc/self"
    proc.mkdir(parents=True)
    page = os.sysconf("SC_PAGESIZE")
    # statm (read at the start) says 1000 pages; status (read at the end)
    # has a high-water mark below that: its pages are counted differently.
    (proc / "statm").write_text("5000 1000 100 10 0 500 0\n")
    (proc / "status").write_text(f"VmHWM:\t{(1000 * page - 72 * 1024) // 1024} kB\n"
                                 f"VmRSS:\t{(1000 * page - 72 * 1024) // 1024} kB\n")
    (proc / "clear_refs").write_text("")
    _core._set_proc_root(str(tmp_path))
    try:
        _core.cell_begin(1, "x = 1")
        record = _core.cell_end(1, False)
    finally:
        _core._set_proc_root("")
    assert record["rss_before"] == 1000 * page
    assert record["retained"] == -72 * 1024
    assert record["peak_increment"] == 0


def test_holders_through_containers_with_one_reference(namespace):
    # The inner list and tuple have one reference each: sized in place, not
    # looked up, yet the edge they hold to arr is counted.
    namespace["arr"] = np.ones(10_000)
    namespace["nest"] = {"k": [(namespace["arr"],)]}
    assert labels(by_name(_core.variables())["arr"]) == ["nest"]


class Node:
    def __init__(self, value, next_node):
        self.value, self.next = value, next_node


def test_a_long_linked_list_is_walked_to_its_end():
    head = None
    for i in range(200_000):  # far deeper than the walker keeps frames for
        head = Node(float(i), head)
    nodes, node = [], head
    while node is not None:
        nodes.append(node)
        node = node.next
    truth = sum(sys.getsizeof(n) + sys.getsizeof(n.__dict__) + sys.getsizeof(n.value) for n in nodes)
    del nodes, node
    assert memtamer.deep_size(head) == truth + sum(sys.getsizeof(k) for k in ("value", "next"))


def test_a_signal_handler_that_empties_the_list_being_walked():
    values = [float(i) for i in range(5 * 10**6)]
    whole = memtamer.deep_size(values)

    def empty(signum, frame):
        values.clear()  # frees the 40 MiB item array the walk is reading

    previous = signal.signal(signal.SIGALRM, empty)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.005)
        size, complete = _core.deep_size(values)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert values == [] and sys.getsizeof([]) <= size < whole  # emptied mid-walk, survived
