"""The spill store's pure parts in this process: the disk reserve, pruning
old stores, equality as each library defines it, and the object file
format round trip."""

import os
import pickle
import socket
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from memtamer import _core, spill_store

GiB = 1024**3


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("MEMTAMER_SPILL_DIR", str(tmp_path / "store"))
    monkeypatch.setenv("JPY_SESSION_NAME", "/home/u/a.ipynb")
    monkeypatch.delenv("MEMTAMER_SPILL_RESERVE", raising=False)
    return tmp_path / "store"


def test_the_reserve_is_a_tenth_of_the_disk_or_2_gib_whichever_is_smaller(store, monkeypatch):
    assert spill_store.reserve(10 * GiB) == GiB
    assert spill_store.reserve(100 * GiB) == 2 * GiB
    monkeypatch.setenv("MEMTAMER_SPILL_RESERVE", "3 GiB")
    assert spill_store.reserve(100 * GiB) == 3 * GiB


def test_a_spill_that_would_eat_into_the_reserve_is_refused_with_the_figures(store, monkeypatch):
    disk = os.statvfs(store.parent)
    free = disk.f_bavail * disk.f_frsize
    monkeypatch.setenv("MEMTAMER_SPILL_RESERVE", str(free - 1024**2))
    assert spill_store.room_refusal(str(store), 1024, chosen=True) is None  # need not exist yet
    reason = spill_store.room_refusal(str(store), 2 * 1024**2, chosen=True)
    assert reason is not None and "below the reserve" in reason and "--dir" in reason


def test_old_notebook_stores_and_dead_kernels_stores_are_pruned(store):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    old, fresh = store / "notebook-0123456789abcdef", store / "notebook-fedcba9876543210"
    orphan, own = store / f"kernel-{socket.gethostname()}-{dead}", store / spill_store.store_dir(
        create=False).rsplit("/", 1)[1]
    for d in (old, fresh, orphan, own):
        d.mkdir(parents=True)
        (d / "x.spill").write_bytes(b"x")
    then = time.time() - spill_store.PRUNE_AFTER_SECONDS - 60
    os.utime(old, (then, then))
    os.utime(own, (then, then))  # this kernel's own store is in use, however old
    assert sorted(spill_store.prune()) == sorted([str(old), str(orphan)])
    assert fresh.exists() and own.exists() and not old.exists() and not orphan.exists()


def test_equality_is_the_librarys_with_dtypes_and_index():
    df = pd.DataFrame({"a": [1.0, float("nan")]}, index=[3, 4])
    assert spill_store.equal(df, df.copy())
    assert not spill_store.equal(df, df.astype("float32"))
    assert not spill_store.equal(df, df.set_axis(pd.Index([3.0, 4.0]), axis=0))
    assert not spill_store.equal(df["a"], df["a"].rename("b"))
    assert spill_store.equal({"x": np.arange(3)}, {"x": np.arange(3)})
    assert not spill_store.equal({"x": np.arange(3)}, {"x": np.arange(3.0)})
    assert not spill_store.equal([np.zeros(2)], (np.zeros(2),))
    nan = np.array([np.nan, -0.0])
    assert spill_store.equal(nan, nan.copy())
    assert not spill_store.equal(nan, np.array([np.nan, 0.0]))  # bit for bit


def test_an_object_file_reads_back_its_buffers_mapped_and_copy_on_write(tmp_path):
    value = {"a": np.arange(10**5), "b": pd.Series(np.linspace(0, 1, 10**4)), "n": "name"}
    path = str(tmp_path / "v.spill")
    regions = spill_store.write_object(path, spill_store.layout(*spill_store.dump(value))[0])
    again, mapping = spill_store.read_object(path, regions)
    assert spill_store.equal(value, again)
    crc = _core.spill_checksum(path)
    again["a"][:] = -1  # a private page: the file keeps what was spilled
    assert _core.spill_checksum(path) == crc
    assert all(offset % spill_store.BUFFER_ALIGN == 0 for offset, _, _ in regions)


def test_polars_goes_through_arrow_only_where_it_comes_back_the_same():
    pl = pytest.importorskip("polars")
    rows = 2**17
    strings = pl.DataFrame({"s": ["abc", None] * (rows // 2),
                            "x": np.arange(rows, dtype=np.float64)})
    enum = pl.Series("e", ["a", "b"] * (rows // 2), dtype=pl.Enum(["a", "b", "c"]))
    wide = pl.DataFrame({"i": pl.Series([1, -2] * (rows // 2), dtype=pl.Int128)})  # no Arrow type
    for value, inline in ((strings, False), (enum, False), (wide, True)):
        buffers = []
        stream = spill_store.dumps(value, buffer_callback=buffers.append)
        again = pickle.loads(stream, buffers=buffers)
        assert spill_store.equal(value, again), value
        # Through Arrow the data goes out of band (the strings as polars'
        # own views); a column with no Arrow type goes by polars' own pickle,
        # in the stream
        assert (len(stream) > rows * 16 if inline else len(stream) < rows), (value, len(stream))


def test_commit_binds_only_what_the_file_holds_and_only_if_still_bound():

    value = {"a": np.arange(1000.0)}
    regions, _ = spill_store.layout(*spill_store.dump(value))
    file = bytearray(regions[-1][0] + regions[-1][1].nbytes)
    for offset, part in regions:
        file[offset:offset + part.nbytes] = part
    ns = {"v": value}
    value["a"][5] = -1  # changed after it was written
    again = spill_store.layout(*spill_store.dump(value))[0]
    with pytest.raises(ValueError, match="changed"):
        _core.spill_commit_pickled(ns, "v", value, "read back", again, bytes(file))
    assert ns["v"] is value
    ns["v"] = "rebound"
    with pytest.raises(ValueError, match="rebound"):
        _core.spill_commit_pickled(ns, "v", value, "read back", regions, bytes(file))
    assert ns["v"] == "rebound"
    ns["v"] = value
    value["a"][5] = 5.0
    checksum = _core.spill_commit_pickled(ns, "v", value, "read back",
                                          spill_store.layout(*spill_store.dump(value))[0],
                                          bytes(file))
    assert ns["v"] == "read back"
    # The commit checksums the whole file, the gaps between its parts too.
    assert checksum == crc32c_text(bytes(file))


def crc32c_text(data):
    """CRC-32C computed bit by bit, as its definition (RFC 3720, B.4) says."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return f"crc32c:{crc ^ 0xFFFFFFFF:08x}"


@pytest.mark.parametrize("size", [0, 1, 7, 8, 9, 4095, 100_003])
def test_the_file_checksum_is_crc32c(tmp_path, size):

    data = (b"123456789" * (size // 9 + 1))[:size]
    path = tmp_path / "f"
    path.write_bytes(data)
    assert crc32c_text(b"123456789") == "crc32c:e3069283"  # the standard's check value
    assert _core.spill_checksum(str(path)) == crc32c_text(data)
    with pytest.raises(FileNotFoundError):
        _core.spill_checksum(str(tmp_path / "missing"))


CRC32C_POLY = 0x82F63B78  # bit-reversed: x^0 is the top bit


def times_mod_poly(a, b):
    """a * b modulo the CRC-32C polynomial, both bit-reversed."""
    product = 0
    for bit in range(31, -1, -1):
        if a >> bit & 1:
            product ^= b
        b = (b >> 1) ^ (CRC32C_POLY if b & 1 else 0)
    return product


def crc32c_text_of_array(data):
    """CRC-32C of a big uint8 array, for checking the threads' shares: a
    register after n bytes is its value at the start times x^(8n), XOR what
    the bytes alone leave in it (the definition is linear), so halves are
    joined level by level with numpy, a multiplication by a constant being
    a lookup per byte of the register."""
    byte_crc = [int(crc32c_text(bytes([b]))[7:], 16) ^ times_mod_poly(1 << 23, 0xFFFFFFFF) ^
                0xFFFFFFFF for b in range(256)]  # what byte b alone leaves in a register at 0
    levels = max(1, (len(data) - 1).bit_length())
    registers = np.zeros(1 << levels, np.uint32)
    registers[len(registers) - len(data):] = np.array(byte_crc, np.uint32)[data]  # zeros first: no-ops
    power = 1 << 23  # x^8: one byte
    while len(registers) > 1:
        tables = np.array([[times_mod_poly(power, byte << 8 * k) for byte in range(256)]
                           for k in range(4)], np.uint32)
        left, right = registers[0::2], registers[1::2]
        shifted = (tables[0][left & 255] ^ tables[1][left >> 8 & 255] ^ tables[2][left >> 16 & 255]
                   ^ tables[3][left >> 24])
        registers = shifted ^ right
        power = times_mod_poly(power, power)
    start = 0xFFFFFFFF
    shift, n = 1 << 31, len(data)
    square = 1 << 23
    while n:
        if n & 1:
            shift = times_mod_poly(square, shift)
        square, n = times_mod_poly(square, square), n >> 1
    return f"crc32c:{(times_mod_poly(shift, start) ^ int(registers[0])) ^ 0xFFFFFFFF:08x}"


@pytest.mark.parametrize("size", [1, 9, 4096, 100_003])
def test_the_big_array_reference_agrees_with_the_definition(size):
    data = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8)
    assert crc32c_text_of_array(data) == crc32c_text(data.tobytes())


def test_a_spill_in_shares_is_checksummed_and_mended_as_the_file_holds_it(tmp_path):
    """Big enough for the comparison to be split over threads (when cores
    are idle): a write after spill_write is copied into the file, and the
    checksum is the whole file's, as an independent CRC-32C gives it."""
    array = np.random.default_rng(0).integers(0, 256, 40 * 1024**2 + 12345, dtype=np.uint8)
    path = str(tmp_path / "spilled")
    _core.spill_write([(0, array)], path)
    array[[0, 17 * 1024**2, array.size - 1]] += 1  # a thread's writes after the write
    mapped = np.memmap(path, dtype=array.dtype, mode="r+", shape=array.shape)
    ns = {"a": array}
    checksum = _core.spill_commit(ns, "a", array, mapped)
    assert ns["a"] is mapped
    on_disk = np.fromfile(path, np.uint8)
    assert np.array_equal(on_disk, array)
    assert checksum == crc32c_text_of_array(on_disk) == _core.spill_checksum(path)


def test_a_default_store_in_ram_is_refused_and_a_chosen_one_is_not(store, monkeypatch):
    with open("/proc/mounts") as f:
        in_ram = [fields[1] for fields in (line.split() for line in f)
                  if fields[2] in ("tmpfs", "ramfs") and os.access(fields[1], os.W_OK)]
    if not in_ram:
        pytest.skip("no writable tmpfs or ramfs mounted here")
    monkeypatch.delenv("MEMTAMER_SPILL_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", os.path.join(in_ram[0], "cache"))
    reason = spill_store.room_refusal(spill_store.root(), 1024, chosen=False)
    assert reason is not None and "in memory" in reason and "--dir" in reason
    assert spill_store.room_refusal(spill_store.root(), 1024, chosen=True) is None
