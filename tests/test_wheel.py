"""This Python's binary wheel of scripts/wheel.sh (one per CPython the
machine has), installed into a fresh venv, works without the system
libraries the extension was built against; the sdist installs too.  The wheel holds the committed tree (meson dist): it is rebuilt
when HEAD's tree differs from the one it was built from."""

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

import memtamer._core

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
DIST = ROOT / "dist"

# What the manylinux policy lets a wheel take from the system, so auditwheel
# leaves it out: glibc's libraries, the compiler's runtime and zlib.
SYSTEM_LIBRARY = re.compile(
    r"(linux-vdso|ld-linux[-\w]*|libc|libm|libpthread|libdl|librt|libresolv|libutil"
    r"|libstdc\+\+|libgcc_s|libz)\.so(\.\d+)*$")
# auditwheel names its copy of libfoo.so.1.2 libfoo-<8 hex digits>.so.1.2
MANGLED = re.compile(r"^(?P<base>[^.]+)-[0-9a-f]{8}(?P<ext>\..+)$")


def run(command, **kwargs):
    result = subprocess.run(command, capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, f"{command} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def resolved_libraries(extension):
    """{soname: resolved path} of everything the loader maps for extension."""
    libraries = {}
    for line in run(["ldd", str(extension)]).splitlines():
        name, _, where = line.strip().partition(" => ")
        assert "not found" not in where, f"{extension}: {line.strip()}"
        if where:
            libraries[name] = where.split(" (")[0]
    return libraries


# This Python's wheel: scripts/wheel.sh builds one for each CPython it finds.
WHEEL_GLOB = "memtamer-*-cp{0}{1}-cp{0}{1}-*.whl".format(*sys.version_info[:2])


@pytest.fixture(scope="module")
def dist():
    """The sdist and this Python's wheel of scripts/wheel.sh for HEAD's tree
    (it keeps a build already made for that tree)."""
    # This Python (the one the test venvs are made from) is among those built
    # for, whatever else the machine has.
    run(["bash", "scripts/wheel.sh"], cwd=ROOT, timeout=1800,
        env=dict(os.environ, PYTHON=sys.executable))
    (wheel,) = DIST.glob(WHEEL_GLOB)
    (sdist,) = DIST.glob("memtamer-*.tar.gz")
    return wheel, sdist


def test_a_wheel_for_each_python_the_machine_has(dist):
    """Every CPython scripts/pythons.sh finds gets its wheel, tagged for it."""
    found = run(["bash", "scripts/pythons.sh"], cwd=ROOT,
                env=dict(os.environ, PYTHON=sys.executable)).split("\n")
    versions = {python_says(line.split()[0], "import sys; print('%d%d' % sys.version_info[:2])")
                for line in found if line.strip()}
    assert "%d%d" % sys.version_info[:2] in versions
    tags = {re.search(r"-cp(\d+)-cp\1-", w.name)[1] for w in DIST.glob("memtamer-*.whl")}
    assert tags == versions


EXTENSION_PATH = "import memtamer._core as c; print(c.__file__)"


def python_says(python, code):
    return run([str(python), "-c", code]).strip()


def start_venv(path, *requirements):
    """Starts making a venv at path with requirements installed; returns the
    process and the venv's python."""
    python = path / "bin" / "python"
    script = (f"{sys.executable} -m venv {path} && "
              f"{python} -m pip install -q {' '.join(map(str, requirements))}")
    return subprocess.Popen(["bash", "-c", script], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True), python


def finish_venv(process, python):
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, f"making {python.parent.parent} failed:\n{output}"
    return python


@pytest.fixture(scope="module")
def sdist_venv(dist, tmp_path_factory):
    """A fresh venv with the sdist installed (built from source), made in the
    background while the other tests run."""
    process, python = start_venv(tmp_path_factory.mktemp("sdist") / "venv", dist[1])
    yield process, python
    if process.poll() is None:
        process.kill()
        process.wait()


@pytest.fixture(scope="module")
def wheel_venv(dist, sdist_venv, tmp_path_factory):
    """A fresh venv with the wheel and what a kernel needs, from PyPI."""
    python = finish_venv(*start_venv(tmp_path_factory.mktemp("wheel") / "venv",
                                     dist[0], "ipykernel", "jupyter_client", "numpy"))
    site = Path(python_says(python, "import sysconfig; print(sysconfig.get_path('platlib'))"))
    extension = Path(python_says(python, EXTENSION_PATH))
    return python, site, extension


def base_name(soname):
    """What auditwheel keeps of a soname before its hash: up to the first dot
    (libpgm-5.3.so.0 becomes libpgm-5-<hash>.3.so.0)."""
    return soname.split(".")[0]


def bundled(site):
    """{library name without .so: the wheel's copy} of memtamer.libs."""
    copies = {}
    for copy in (site / "memtamer.libs").iterdir():
        match = MANGLED.match(copy.name)
        assert match, f"{copy.name} is not named as auditwheel names its copies"
        copies[match["base"]] = copy
    return copies


def system_build_needs():
    """{soname: system path} of what a build against the system links beyond
    the C runtime (this test environment's memtamer): the ground truth of
    what the wheel must carry."""
    return {name: path for name, path in resolved_libraries(memtamer._core.__file__).items()
            if not SYSTEM_LIBRARY.match(name)}


def test_wheel_is_tagged_for_this_glibc(dist):
    tag = re.search(r"-manylinux_(\d+)_(\d+)_(\w+)\.whl$", dist[0].name)
    assert tag, f"{dist[0].name} has no manylinux tag"
    glibc = tuple(int(p) for p in os.confstr("CS_GNU_LIBC_VERSION").split()[1].split("."))
    assert (int(tag[1]), int(tag[2])) <= glibc
    assert tag[3] == os.uname().machine


def test_metadata_is_what_a_package_index_shows(dist, wheel_venv):
    with zipfile.ZipFile(dist[0]) as wheel:
        (info,) = {n.split("/")[0] for n in wheel.namelist() if ".dist-info/" in n}
        metadata = Parser().parsestr(wheel.read(f"{info}/METADATA").decode())
        license = wheel.read(f"{info}/licenses/LICENSE").decode()
    # The wheel holds HEAD's files.
    assert license == run(["git", "show", "HEAD:LICENSE"], cwd=ROOT)
    assert metadata["License-Expression"] == "MIT"
    assert metadata["Summary"] and metadata["Requires-Python"]
    assert metadata["Description-Content-Type"] == "text/markdown"
    readme = run(["git", "show", "HEAD:README.md"], cwd=ROOT)
    assert metadata.get_payload().strip() == readme.strip()
    assert {"pandas", "bench"} <= set(metadata.get_all("Provides-Extra"))
    assert any(c.startswith("Framework :: Jupyter") for c in metadata.get_all("Classifier"))
    version = re.search(r"version: '([^']+)'", (ROOT / "meson.build").read_text())[1]
    assert metadata["Version"] == version
    command = wheel_venv[0].parent / "memtamer"
    assert run([str(command), "--version"]).strip() == f"memtamer {version}"


def test_the_extension_resolves_to_the_wheels_copies(wheel_venv):
    python, site, extension = wheel_venv
    needed = system_build_needs()
    assert needed, "the system build links no library beyond the C runtime"
    assert {base_name(name) for name in needed} == set(bundled(site))
    for name, path in resolved_libraries(extension).items():
        if not SYSTEM_LIBRARY.match(name):
            assert Path(path).resolve().parent == (site / "memtamer.libs").resolve(), (name, path)


SMOKE = textwrap.dedent("""
    import ctypes, json, sys
    sys.path.insert(0, {tests!r})
    from kernel import Kernel

    loadable = []
    for soname in {hidden!r}:
        try:
            ctypes.CDLL(soname)
            loadable.append(soname)
        except OSError:
            pass
    k = Kernel(cwd={cwd!r})
    try:
        k.run("%load_ext memtamer")
        k.run("import numpy as np; counts = np.random.default_rng(0).poisson(3, 2**21)")
        k.run("expected = counts.copy()")
        compressed = k.run("%shrink compress counts")
        kind = k.query("type(counts).__name__")
        k.run("%shrink restore counts")
        report = k.run("%memreport")
        same = k.query("bool(type(counts) is np.ndarray and (counts == expected).all())")
        maps = k.query("sorted({{l.split()[-1] for l in open('/proc/self/maps') if '.so' in l}})")
        where = k.query("__import__('memtamer').__file__")
    finally:
        k.shutdown()
    print("RESULT" + json.dumps(dict(loadable=loadable, compressed=compressed["data"],
                                     kind=kind, report=report["data"], same=same,
                                     maps=maps, where=where)))
""")


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"),
                    reason="hiding the system libraries needs root and unshare(1)")
def test_kernel_works_with_the_system_libraries_hidden(wheel_venv, tmp_path):
    python, site, _ = wheel_venv
    system = system_build_needs()
    hidden = sorted(system)
    # An empty file bound over each system copy, in a private mount namespace.
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    mounts = "".join(f"mount --bind {empty} {os.path.realpath(system[name])}\n" for name in hidden)
    smoke = tmp_path / "smoke.py"
    smoke.write_text(SMOKE.format(tests=str(TESTS), hidden=hidden, cwd=str(tmp_path)))
    out = run(["unshare", "--mount", "--propagation", "private", "bash", "-euc",
               mounts + f"exec {python} {smoke}"], timeout=300)
    result = json.loads(out.partition("RESULT")[2])
    assert result["loadable"] == [], "the system libraries were not hidden"
    assert Path(result["where"]).is_relative_to(site)
    assert result["kind"] == "Compressed"
    assert "ratio" in result["compressed"][0]["text/plain"]
    assert "cells" in result["report"][0]["text/plain"]
    assert result["same"]
    for mapped in result["maps"]:
        assert base_name(Path(mapped).name) not in set(map(base_name, hidden)), mapped
    mangled = [m for m in result["maps"] if Path(m).parent.name == "memtamer.libs"]
    assert len(mangled) == len(hidden), result["maps"]


def test_sdist_builds_and_installs(dist, sdist_venv):
    python = finish_venv(*sdist_venv)
    version = dist[1].name.removeprefix("memtamer-").removesuffix(".tar.gz")
    assert run([str(python), "-m", "memtamer", "--version"]).strip() == f"memtamer {version}"
    # Built from source on this machine: it links the system's libraries.
    extension = python_says(python, EXTENSION_PATH)
    assert all(not Path(path).parent.name.endswith(".libs")
               for path in resolved_libraries(extension).values())
