import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from kernel import Kernel  # noqa: E402

MiB = 1024**2

# How the line %load_ext memtamer ends with starts (what is on, where to look).
LOADED = "memtamer: measuring every cell; "


def besides_loaded(said):
    """What loading printed before its confirmation line, which must end it."""
    *before, last = said.splitlines(keepends=True)
    assert last.startswith(LOADED), said
    return "".join(before)
GiB = 1024**3


PYTHON_VERSION_SKIP = "needs Python"
# torch is installed under 3.11 only (its CPU wheel; elsewhere pip would take
# a CUDA build of several GB).
needs_torch = pytest.mark.skipif(sys.version_info[:2] != (3, 11),
                                 reason=f"{PYTHON_VERSION_SKIP} 3.11 (torch is tested there only)")


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "once: tests of files rather than of the interpreter; scripts/test.sh runs "
                   "them under its first Python only")


def pytest_addoption(parser):
    parser.addoption("--strict-skips", action="store_true",
                     help="fail the run when any test was skipped: the test command installs "
                          "everything the tests need, so a skip there means a broken setup")


def pytest_sessionfinish(session, exitstatus):
    if not session.config.getoption("--strict-skips"):
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    # Tests for other Python versions than the one running are the only
    # skips a complete setup has (PYTHON_VERSION_SKIP starts their reason).
    skipped = [r for r in (reporter.stats.get("skipped", []) if reporter else [])
               if PYTHON_VERSION_SKIP not in str(r.longrepr)]
    if skipped and exitstatus == 0:
        reporter.write_line(f"--strict-skips: {len(skipped)} test(s) skipped; the test command "
                            "must run them all (see the skip reasons above)", red=True)
        session.exitstatus = 1


@pytest.fixture(scope="module")
def kernel():
    """One kernel per test module, with memtamer loaded."""
    k = Kernel()
    k.run("%load_ext memtamer")
    yield k
    k.shutdown()


@pytest.fixture
def fresh_kernel():
    """A kernel of its own, without memtamer loaded."""
    k = Kernel()
    yield k
    k.shutdown()


def writer_thread(name, items=2**23, make="np.zeros({items})"):
    """A cell that binds name to make (items float64 zeros) and starts a daemon thread
    that adds 1 to one item of name at a time (looking the name up each time,
    as code using a global does) and counts its writes in name_writes, until
    name_running is False.  The sum of name is then the count of writes,
    unless writes were lost."""
    return (f"import threading, numpy as np\n"
            f"{name} = {make.format(items=items)}\n"
            f"{name}_writes = 0\n"
            f"{name}_running = True\n"
            f"def {name}_write():\n"
            f"    global {name}_writes\n"
            f"    i = 0\n"
            f"    while {name}_running:\n"
            f"        {name}[i] += 1\n"
            f"        {name}_writes += 1\n"
            f"        i = (i + 7919) % {items}\n"
            f"{name}_thread = threading.Thread(target={name}_write, daemon=True)\n"
            f"{name}_thread.start()\n")


def stop_writer(kernel, name):
    """Stops the thread of writer_thread(name); returns (its writes, the sum
    of name), read without restoring anything before a cell."""
    kernel.run(f"{name}_running = False\n{name}_thread.join()")
    return kernel.query(f"[{name}_writes, int(np.asarray(globals()[{name!r}]).sum())]")
