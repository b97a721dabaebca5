import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from kernel import Kernel  # noqa: E402

MiB = 1024**2
GiB = 1024**3


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
