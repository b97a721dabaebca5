import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from kernel import Kernel  # noqa: E402

MiB = 1024**2
GiB = 1024**3


PYTHON_VERSION_SKIP = "needs Python"


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
