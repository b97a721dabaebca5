"""Per-cell figures in a real kernel, against ground truth we construct."""

import pytest

from conftest import GiB, MiB


def test_spike_peak_is_exact(kernel):
    kernel.run("import numpy as np")
    kernel.run("a = np.ones(2**27)  # 1 GiB, touched\ndel a")
    cell = kernel.last_cell()
    assert cell["peak_method"] == "hwm"
    assert cell["peak_increment"] == pytest.approx(GiB, rel=0.02)
    assert cell["numpy_peak_increment"] == pytest.approx(GiB, rel=0.01)
    assert abs(cell["retained"]) < 32 * MiB


def test_retained_array(kernel):
    kernel.run("import numpy as np")
    kernel.run("kept = np.ones(2**25)  # 256 MiB")
    cell = kernel.last_cell()
    assert cell["retained"] == pytest.approx(256 * MiB, rel=0.03)
    assert cell["numpy_peak_increment"] == pytest.approx(256 * MiB, rel=0.01)
    kernel.run("del kept")
