"""%shrink's actions in this process, against ground truth built with numpy
itself (astype, copies taken before the action)."""

import gc
import json
import os
import shutil
import subprocess
import sys
import weakref

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp
from IPython.core.error import UsageError

from memtamer import _core
from memtamer.shrinker import run

NUMERIC = [np.dtype(t) for t in ("bool", "int8", "int16", "int32", "int64", "uint8", "uint16",
                                 "uint32", "uint64", "float16", "float32", "float64",
                                 "complex64", "complex128")]
shapes = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=7)


def arrays(dtypes=st.sampled_from(NUMERIC)):
    return dtypes.flatmap(lambda dt: hnp.arrays(dt, shapes, elements=hnp.from_dtype(dt)))


def layout(a, how):
    """The same values as a C array, an F array, or a strided view."""
    if how == "F":
        return np.asfortranarray(a)
    if how == "strided" and a.ndim:
        big = np.repeat(a, 2, axis=0)
        return big[::2]
    return a


def same_bits(a, b):
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


@settings(max_examples=150, deadline=None)
@given(arrays(), st.sampled_from(["C", "F", "strided"]), st.sampled_from(["lz4", "zstd", "blosclz", "zlib"]))
def test_compress_restore_bit_exact(a, how, codec):
    a = layout(a, how)
    proxy = _core.compress(a, "a", codec=codec, level=5)
    assert _core.compressed_info(proxy)["nbytes"] == a.nbytes
    back = _core.restore(proxy)
    assert same_bits(a, back)
    assert type(back) is np.ndarray
    if a.flags.c_contiguous:
        assert back.flags.c_contiguous
    if a.flags.f_contiguous:
        assert back.flags.f_contiguous


@settings(max_examples=150, deadline=None)
@given(arrays(st.sampled_from([d for d in NUMERIC if d.kind in "iufc"])), st.sampled_from(["C", "F"]),
       st.booleans())
def test_downcast_equals_astype(a, how, narrow):
    a = layout(a, how).copy(order="K")
    original = a.copy(order="K")
    ns = {"a": a}
    del a
    plan = _core.downcast_plan(original, rtol=1.0, narrow=narrow)
    row = _core.downcast(ns, "a", rtol=1.0, narrow=narrow)
    if row["status"] == "done":
        assert row["in_place"]
        expect = original.astype(row["dtype_after"])
        assert same_bits(expect, ns["a"])
        assert ns["a"].flags.f_contiguous == original.flags.f_contiguous
        assert ns["a"].flags.owndata and ns["a"].flags.writeable
        assert np.array_equal(ns["a"], expect, equal_nan=True)
    else:
        assert same_bits(ns["a"], original)
        assert row["status"] == "refused" and row["reason"]
    assert plan["target"] == row["dtype_after"]


@settings(max_examples=100, deadline=None)
@given(arrays(st.sampled_from([d for d in NUMERIC if d.kind in "iufc"])), st.booleans(),
       st.sampled_from(["int8", "uint16", "int32", "float16", "float32", "bool"]))
def test_downcast_copy_equals_astype(a, narrow, to):
    """The copy path converts with the same loops, from any layout."""
    original = layout(a, "strided")
    ns = {"a": original, "b": original}
    try:
        row = _core.downcast(ns, "a", to=to, rtol=1.0, narrow=narrow, copy=True)
    except ValueError:  # --to of the wrong kind for this data
        return
    if row["status"] == "done":
        assert not row["in_place"] and ns["b"] is original
        assert same_bits(original.astype(row["dtype_after"]), ns["a"])
    else:
        assert ns["a"] is original


def test_downcast_narrows_integers_only_when_asked():
    ns = {"a": np.array([-5, 0, 120], dtype=np.int64), "b": np.array([0, 70000], dtype=np.uint64),
          "c": np.array([0, 1, 1, 0], dtype=np.int32), "d": np.array([0, 1, 1, 0], dtype=np.int32)}
    for name in ns:
        row = _core.downcast(ns, name)
        assert row["status"] == "refused" and "--narrow" in row["reason"], row
    assert ns["a"].dtype == np.int64 and ns["c"].dtype == np.int32
    for name in "abc":
        assert "overflow" in _core.downcast(ns, name, narrow=True)["warning"]
    assert ns["a"].dtype == np.int8 and ns["a"].tolist() == [-5, 0, 120]
    assert ns["b"].dtype == np.uint32 and ns["b"].tolist() == [0, 70000]
    # 0/1 counts stay numbers: bool only when named.
    assert ns["c"].dtype == np.int8 and ns["c"].tolist() == [0, 1, 1, 0]
    row = _core.downcast(ns, "d", to="bool")
    assert ns["d"].dtype == np.bool_ and "logical" in row["warning"]


def test_auto_downcast_keeps_what_later_code_computes():
    cnt = np.array([0, 1, 1, 0])
    ns = {"cnt": cnt.copy(), "r": np.arange(100), "f": np.linspace(0, 1, 1001).copy()}
    rows = run(None, ns, "downcast", ["cnt", "r"], {})
    assert {row["status"] for row in rows.values()} == {"refused"}
    assert (ns["cnt"] + ns["cnt"]).tolist() == [0, 2, 2, 0]
    ns["r"] += 100
    assert ns["r"].tolist() == list(range(100, 200))
    row = run(None, ns, "downcast", ["f"], {})["f"]
    assert row["status"] == "done" and ns["f"].dtype == np.float32
    # It says what precision it kept, measured against the ground truth.
    error = np.max(np.abs(ns["f"].astype(np.float64) - np.linspace(0, 1, 1001))[1:] /
                   np.linspace(0, 1, 1001)[1:])
    assert "6 significant digits" in row["reason"] and f"{error:.2g}" in row["reason"]


def test_pack_makes_what_numpy_makes_so_sums_stay_the_same():
    ns = {"xs": [200, 100, 50], "ys": [100.0] * 1000, "flags": [True, False]}
    rows = run(None, ns, "pack", ["xs", "ys", "flags"], {})
    assert all(row["status"] == "done" for row in rows.values()), rows
    assert ns["xs"].dtype == np.array([200, 100, 50]).dtype == np.int64
    assert sum(ns["xs"]) == 350
    ns["xs"][0] += 100
    assert ns["xs"][0] == 300
    assert ns["ys"].dtype == np.float64 and ns["ys"].sum() == 100000.0
    assert ns["flags"].dtype == np.bool_
    assert rows["ys"]["bytes_after"] == 8000


def test_pack_narrows_only_when_asked_and_warns():
    ns = {"xs": [200, 100, 50], "ys": [100.0] * 1000}
    rows = run(None, ns, "pack", ["xs", "ys"], {"narrow": True})
    assert ns["xs"].dtype == np.uint8 and "overflow" in rows["xs"]["reason"]
    assert ns["ys"].dtype == np.float16 and "65504" in rows["ys"]["reason"]


def test_precision_refusals_change_nothing():
    big = np.array([1.0, 1e300])
    tiny = np.array([1.0, 1e-44])  # a float32 subnormal: 2% off
    ns = {"big": big.copy(), "tiny": tiny.copy()}
    r1 = _core.downcast(ns, "big")
    r2 = _core.downcast(ns, "tiny")
    assert r1["status"] == r2["status"] == "refused"
    assert "overflow" in r1["reason"] and "relative error" in r2["reason"]
    assert same_bits(ns["big"], big) and same_bits(ns["tiny"], tiny)
    assert _core.downcast(ns, "tiny", rtol=1.0)["status"] == "done"


class Sub(np.ndarray):
    pass


def refusal_cases():
    """(setup -> namespace, name, the rule that must fail)."""
    def view():
        a = np.arange(1000.0)
        return {"a": a, "v": a[::3]}, "a", "held"

    def second_name():
        a = np.arange(1000.0)
        return {"a": a, "b": a}, "a", "held"

    def read_only():
        a = np.arange(1000.0)
        a.flags.writeable = False
        return {"a": a}, "a", "readonly"

    def memmap(tmp_path=[None]):
        import tempfile
        f = tempfile.NamedTemporaryFile(delete=False)
        m = np.memmap(f.name, dtype=np.float64, mode="w+", shape=(100,))
        m[:] = np.arange(100)
        return {"a": m}, "a", "subclass"

    def subclass():
        return {"a": np.arange(100.0).view(Sub)}, "a", "subclass"

    def is_view():
        base = np.arange(1000.0)
        return {"a": base[10:]}, "a", "view"

    def exported():
        a = np.arange(1000.0)
        return {"a": a, "m": memoryview(a)}, "a", "held"

    def weak():
        a = np.arange(1000.0)
        return {"a": a, "w": weakref.ref(a)}, "a", "weakref"

    def strided_owner():
        a = np.arange(1000.0).reshape(10, 100)[:, ::2].copy()
        b = np.lib.stride_tricks.as_strided(np.arange(1000.0), (10,), (64,))
        return {"a": b}, "a", "view"

    return [view, second_name, read_only, memmap, subclass, is_view, exported, weak, strided_owner]


@pytest.mark.parametrize("case", refusal_cases(), ids=lambda c: c.__name__)
def test_refusal_matrix_leaves_arrays_bit_identical(case):
    ns, name, rule = case()
    before = {k: (v.copy(), v.dtype) for k, v in ns.items() if isinstance(v, np.ndarray)}
    rules = [r for r, _ in _core.inplace_check(ns, name)]
    assert rule in rules
    row = _core.downcast(ns, name)
    assert row["status"] == "refused" and not row["in_place"]
    outcome = {}
    for action in ("downcast", "compress", "spill", "pack"):
        try:
            outcome[action] = run(None, ns, action, [name], {})[name]["status"]
        except UsageError as exc:
            outcome[action] = "usage error"
            assert str(exc), action  # says what to do
        if isinstance(ns[name], _core.Compressed):  # allowed: only the rules of in place failed
            run(None, ns, "restore", [name], {})
    # Downcast would change the values: refused.  Pack takes lists, not arrays.
    # Compress and spill keep the values; where they went ahead, the bits
    # are checked below (compress restored, spill a memmap of the same).
    assert outcome["downcast"] in ("refused", "usage error"), outcome
    assert outcome["pack"] == "usage error", outcome
    assert {outcome["compress"], outcome["spill"]} <= {"refused", "usage error", "done"}, outcome
    for k, (copy, dtype) in before.items():
        assert ns[k].dtype == dtype and same_bits(np.asarray(ns[k]), copy), k


def test_object_dtype_is_a_usage_error():
    ns = {"a": np.array([1, "x", None], dtype=object)}
    with pytest.raises(UsageError):
        run(None, ns, "downcast", ["a"], {})
    assert ns["a"].tolist() == [1, "x", None]


def test_copy_converts_a_held_array_and_keeps_the_holder():
    a = np.arange(10.0)
    ns = {"a": a, "b": a}
    del a
    rows = run(None, ns, "downcast", ["a"], {"copy": True})
    assert rows["a"]["status"] == "done" and not rows["a"]["in_place"]
    assert ns["a"].dtype == np.float32 and ns["b"].dtype == np.float64


def test_holders_are_named():
    a = np.arange(10.0)
    ns = {"a": a, "b": a, "v": a[2:], "_": a}
    del a
    rows = run(None, ns, "downcast", ["a"], {})
    reason = rows["a"]["reason"]
    assert "b" in reason and "v is a view of it" in reason and "output cache _" in reason


def test_usage_errors_change_nothing():
    ns = {"a": np.arange(10.0), "xs": [1, 2]}
    for action, names, options in [("downcast", ["nope"], {}), ("downcast", ["a"], {"to": "int128"}),
                                   ("downcast", ["a"], {"codec": "zstd"}), ("fold", ["a"], {}),
                                   ("compress", ["a"], {"codec": "lzma"}), ("compress", ["a"], {"level": 12}),
                                   ("restore", ["a"], {}), ("downcast", ["xs"], {}), ("spill", ["a"], {"to": "float32"}),
                                   ("downcast", ["a", "nope"], {})]:
        with pytest.raises(UsageError):
            run(None, ns, action, names, options)
    assert ns["a"].dtype == np.float64 and ns["xs"] == [1, 2]


def test_dry_run_changes_nothing():
    ns = {"a": np.random.default_rng(0).normal(size=100000), "xs": list(range(1000)),
          "counts": np.random.default_rng(0).poisson(3, size=2**18)}
    before = ns["a"].copy()
    for action in ("downcast", "compress", "spill", "pack"):
        name = {"pack": "xs", "compress": "counts"}.get(action, "a")
        row = run(None, ns, action, [name], {"dry_run": True})[name]
        assert row["status"] == "dry-run", row
    assert same_bits(ns["a"], before) and ns["xs"] == list(range(1000))
    assert type(ns["counts"]) is np.ndarray
    assert run(None, ns, "downcast", ["a"], {"dry_run": True})["a"]["bytes_after"] == before.nbytes // 2


def test_compress_pickles_other_objects_with_buffers():
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame({"x": np.arange(200_000.0), "s": ["a", "b"] * 100_000})
    expect = df.copy()
    ns = {"df": df}
    del df
    rows = run(None, ns, "compress", ["df"], {"codec": "zstd"})
    assert rows["df"]["status"] == "done"
    assert isinstance(ns["df"], _core.Compressed)
    assert _core.compressed_info(ns["df"])["kind"] == "pickle"
    assert "restore" in repr(ns["df"])
    run(None, ns, "restore", ["df"], {})
    pd.testing.assert_frame_equal(ns["df"], expect)


def test_pack_narrow_picks_the_smallest_exact_type_and_refuses_mixed():
    ns = {"i": [1, -3, 200], "u": tuple([0, 70000]), "f": [0.5, 1.0], "d": [0.1, 2.0], "b": [True, False]}
    run(None, ns, "pack", list("iufdb"), {"narrow": True})
    assert ns["i"].dtype == np.int16 and ns["i"].tolist() == [1, -3, 200]
    assert ns["u"].dtype == np.uint32 and ns["u"].tolist() == [0, 70000]
    assert ns["f"].dtype == np.float16 and ns["f"].tolist() == [0.5, 1.0]
    assert ns["d"].dtype == np.float64 and ns["d"].tolist() == [0.1, 2.0]
    assert ns["b"].dtype == np.bool_
    ns = {"m": [1, 2.0], "s": [1, "x"]}
    rows = run(None, ns, "pack", list("ms"), {})
    assert rows["m"]["status"] == "refused" and "mixed" in rows["m"]["reason"] and ns["m"] == [1, 2.0]
    assert rows["s"]["status"] == "refused" and "str" in rows["s"]["reason"] and ns["s"] == [1, "x"]


def test_every_name_is_checked_before_any_changes():
    a = np.linspace(0, 1, 1000)
    ns = {"a": a.copy(), "lst": [1, 2]}
    with pytest.raises(UsageError, match="lst is a list"):
        run(None, ns, "downcast", ["a", "lst"], {})
    assert same_bits(ns["a"], a)
    # A refusal (not an error) of one name leaves the others unchanged too.
    ns = {"a": a.copy(), "b": a.copy()}
    ns["held"] = ns["b"]
    rows = run(None, ns, "downcast", ["a", "b"], {})
    assert rows["b"]["status"] == "refused" and "held" in rows["b"]["reason"]
    assert rows["a"]["status"] == "refused" and "left unchanged" in rows["a"]["reason"]
    assert same_bits(ns["a"], a) and same_bits(ns["b"], a)
    for action, names in (("pack", ["xs", "bad"]), ("spill", ["a", "empty"])):
        ns = {"xs": [1, 2, 3], "bad": [1, "x"], "a": a.copy(), "empty": np.zeros(0)}
        rows = run(None, ns, action, names, {})
        assert {row["status"] for row in rows.values()} == {"refused"}, rows
        assert ns["xs"] == [1, 2, 3] and type(ns["a"]) is np.ndarray
    # A refused name's bytes column says what happened to it: nothing.
    ns = {"alone": a.copy()}
    ns["other"] = ns["alone"]
    row = run(None, ns, "downcast", ["alone"], {})["alone"]
    assert row["status"] == "refused" and row["bytes_after"] == row["bytes_before"] == a.nbytes


def test_shared_contents_are_refused_and_named():
    pd = pytest.importorskip("pandas")
    big = 10**15
    df = pd.DataFrame({"x": np.linspace(0, 1, 10000)})
    ns = {"big": big, "xs": [big, 3], "df": df, "col": df["x"]}
    del df
    if not np.shares_memory(ns["col"].to_numpy(), ns["df"]["x"].to_numpy()):
        pytest.skip("this pandas copies columns (copy on write)")
    # An int shared with another name splits nothing: it cannot change.
    rows = run(None, ns, "pack", ["xs"], {})
    assert rows["xs"]["status"] == "done" and ns["xs"].tolist() == [big, 3] and ns["big"] == big
    row = run(None, ns, "downcast", ["df"], {})["df"]
    assert row["status"] == "refused" and "col" in row["reason"], row
    assert ns["df"]["x"].dtype == np.float64 and np.shares_memory(ns["col"].to_numpy(),
                                                                  ns["df"]["x"].to_numpy())


def test_pandas_series_downcast():
    pd = pytest.importorskip("pandas")
    values = np.linspace(0, 1, 1000)
    ns = {"s": pd.Series(values, name="v")}
    row = run(None, ns, "downcast", ["s"], {})["s"]
    assert row["status"] == "done", row
    assert ns["s"].dtype == np.float32 and ns["s"].name == "v"
    assert np.array_equal(ns["s"].to_numpy(), values.astype(np.float32))
    assert row["bytes_before"] - row["bytes_after"] == 4000


def test_del_bytes_column_agrees_with_what_it_frees():
    a = np.ones(100000)
    ns = {"a": a, "v": a[::2]}
    del a
    row = run(None, ns, "del", ["a"], {})["a"]
    assert row["predicted"] == 0
    assert row["bytes_after"] == row["bytes_before"] >= 800000
    ns = {"b": np.ones(100000)}
    row = run(None, ns, "del", ["b"], {})["b"]
    assert row["bytes_before"] - row["bytes_after"] == row["predicted"] >= 800000


def test_spill_of_a_read_only_array_stays_read_only(tmp_path):
    a = np.arange(1000.0)
    a.flags.writeable = False
    ns = {"a": a}
    del a
    assert run(None, ns, "spill", ["a"], {"dir": str(tmp_path)})["a"]["status"] == "done"
    assert isinstance(ns["a"], np.memmap) and not ns["a"].flags.writeable
    with pytest.raises(ValueError):
        ns["a"][0] = 5
    assert ns["a"].tolist() == list(map(float, range(1000)))


def test_spill_dir_expands_the_home_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    ns = {"a": np.arange(1000.0)}
    run(None, ns, "spill", ["a"], {"dir": "~/spills"})
    assert os.path.dirname(ns["a"].filename) == str(tmp_path / "spills")
    assert not (tmp_path / "~").exists()


def test_stale_spills_of_dead_kernels_are_removed(tmp_path):
    import socket
    import subprocess

    from memtamer.spill_files import SPILL_PREFIX, remove_stale_spills

    dead = subprocess.Popen(["true"])
    dead.wait()
    host = socket.gethostname()
    stale_dir = tmp_path / f"{SPILL_PREFIX}{host}-{dead.pid}"
    stale_dir.mkdir()
    (stale_dir / "x.raw").write_bytes(b"0" * 100)
    stale_file = tmp_path / f"{SPILL_PREFIX}{host}-{dead.pid}-x-0123.raw"
    stale_file.write_bytes(b"0")
    live = tmp_path / f"{SPILL_PREFIX}{host}-{os.getpid()}"
    live.mkdir()
    other_host = tmp_path / f"{SPILL_PREFIX}elsewhere-{dead.pid}"
    other_host.mkdir()
    removed = remove_stale_spills(str(tmp_path))
    assert sorted(removed) == sorted([str(stale_dir), str(stale_file)])
    assert live.exists() and other_host.exists()


def test_a_dead_kernels_list_removes_only_its_own_spill_files(tmp_path):
    import socket
    import subprocess

    from memtamer.spill_files import SPILL_PREFIX, remove_listed

    dead = subprocess.Popen(["true"])
    dead.wait()
    host = socket.gethostname()
    own = tmp_path / f"{SPILL_PREFIX}{host}-{dead.pid}-a-0123.raw"
    own.write_bytes(b"0")
    live = tmp_path / f"{SPILL_PREFIX}{host}-{os.getpid()}-b-0123.raw"  # another kernel's
    live.write_bytes(b"0")
    precious = tmp_path / "precious.txt"  # a list may say anything: never removed
    precious.write_text("keep")
    link = tmp_path / f"{SPILL_PREFIX}{host}-{dead.pid}-c-0123.raw"  # named as its own, a link
    link.symlink_to(precious)
    listing = tmp_path / f"memtamer-{dead.pid}.spills"
    listing.write_bytes(b"".join(os.fsencode(p) + b"\n" for p in (own, live, precious, link)))
    assert remove_listed(str(tmp_path), dead.pid) == [str(own)]
    assert not own.exists() and not listing.exists()
    assert live.exists() and precious.read_text() == "keep" and link.is_symlink()
    # A FIFO where the list goes is not waited on.
    os.mkfifo(listing)
    assert remove_listed(str(tmp_path), dead.pid) == []


def test_spill_files_never_go_where_files_live_in_ram():
    # Truth from the mount table, longest mount point first: what a path
    # under each readable mount point lives on.
    mounts = []
    with open("/proc/self/mounts") as table:
        for line in table:
            _, point, fstype = line.split()[:3]
            point = point.replace("\\040", " ")
            if os.path.isdir(point) and os.access(point, os.R_OK):
                mounts.append((point, fstype))
    seen = {}
    for point, fstype in mounts:
        seen[point] = fstype  # a later mount on the same point hides the earlier
    ram, disk = {"tmpfs", "ramfs", "devtmpfs"}, {"ext2", "ext3", "ext4", "xfs", "btrfs", "zfs"}
    known = {point: fstype in ram for point, fstype in seen.items() if fstype in ram | disk}
    assert set(known.values()) == {True, False}, "needs a tmpfs and a disk mount to check both"
    for point, in_ram in known.items():
        assert _core.in_ram(point) == in_ram, (point, seen[point])
    assert _core.in_ram("/no/such/path") is False


SPILL_WHERE = """
import json, os, sys, tempfile
import numpy as np
from memtamer import _core
from memtamer.shrinker import run
cache = os.path.join(os.environ["HOME"], ".cache")
mounts = [line.split() for line in open("/proc/self/mountinfo")]
fstype = [m[m.index("-") + 1] for m in mounts if m[4] == cache]
ns = {"a": np.arange(1000.0)}
row = run(None, ns, "spill", ["a"], {})["a"]
print(json.dumps({"fstype": fstype[-1] if fstype else None, "status": row["status"],
                  "reason": row.get("reason"), "file": getattr(ns["a"], "filename", None),
                  "cache_in_ram": _core.in_ram(cache),
                  "left_in_tmp": os.listdir(tempfile.gettempdir())}))
"""


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"),
                    reason="mounts a tmpfs in a private mount namespace: needs root and unshare")
@pytest.mark.parametrize("ram", [True, False], ids=["tmpfs", "disk"])
def test_a_spill_store_in_ram_is_refused(tmp_path, ram):
    """~/.cache mounted as a tmpfs in a mount namespace of the test's own: a
    spill into the default store there would free nothing, so it is refused
    with the reason and the array stays; on disk the file goes to the store,
    and nothing ever goes to the temp directory."""
    tmp, home = tmp_path / "tmp", tmp_path / "home"
    tmp.mkdir()
    (home / ".cache").mkdir(parents=True)
    mount = 'mount -t tmpfs -o size=16m memtamer-test "$HOME/.cache" && ' if ram else ""
    env = {k: v for k, v in os.environ.items()
           if k not in ("MEMTAMER_SPILL_DIR", "XDG_CACHE_HOME")}
    env.update(TMPDIR=str(tmp), HOME=str(home))
    out = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                          mount + 'exec "$0" -c "$1"', sys.executable, SPILL_WHERE],
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout)
    assert (seen["fstype"] == "tmpfs") == ram and seen["cache_in_ram"] == ram, seen
    assert seen["left_in_tmp"] == [], seen
    if ram:
        assert seen["status"] == "refused" and seen["file"] is None, seen
        assert "keeps its files in memory (tmpfs): a spill there would free nothing" \
            in seen["reason"], seen
    else:
        assert seen["status"] == "done", seen
        assert seen["file"].startswith(str(home / ".cache" / "memtamer" / "spill")), seen


def test_spill_maps_a_file_and_removes_it_when_deleted():
    a = np.random.default_rng(1).normal(size=(300, 7))
    expect = np.asfortranarray(a)
    ns = {"a": np.asfortranarray(a)}
    del a
    row = run(None, ns, "spill", ["a"], {})["a"]
    assert row["status"] == "done"
    assert isinstance(ns["a"], np.memmap) and ns["a"].flags.f_contiguous
    assert same_bits(np.asarray(ns["a"]), expect)
    path = ns["a"].filename
    import os
    assert os.path.exists(path)
    del ns["a"]
    gc.collect()
    assert not os.path.exists(path)


def test_pandas_downcast_columns():
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame({"f": np.linspace(0, 1, 1000), "i": np.arange(1000, dtype=np.int64),
                       "s": ["red", "green"] * 500})
    expect = df.copy()
    ns = {"df": df}
    del df
    row = run(None, ns, "downcast", ["df"], {})["df"]
    assert row["status"] == "done", row
    out = ns["df"]
    assert out["f"].dtype == np.float32 and out["i"].dtype == np.int64  # ints: only with --narrow
    assert isinstance(out["s"].dtype, pd.CategoricalDtype)
    assert np.array_equal(out["f"].to_numpy(), expect["f"].to_numpy().astype(np.float32))
    assert out["s"].astype(str).tolist() == expect["s"].tolist()
    assert row["bytes_after"] < row["bytes_before"]


def test_swapped_byte_order_is_a_usage_error_and_changes_nothing():
    a = np.arange(10.0).astype(">f8")
    ns = {"a": a}
    del a
    assert "byteorder" in [r for r, _ in _core.inplace_check(ns, "a")]
    with pytest.raises(UsageError, match="byte order"):
        run(None, ns, "downcast", ["a"], {})
    assert ns["a"].dtype == np.dtype(">f8") and ns["a"].tolist() == list(map(float, range(10)))
