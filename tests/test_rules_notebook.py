"""notebooks/rules.ipynb, executed headless by nbclient in a real kernel."""

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "scripts"))

import run_tour  # noqa: E402

NOTEBOOK = os.path.join(os.path.dirname(__file__), "..", "notebooks", "rules.ipynb")


@pytest.fixture(scope="module")
def nb():
    return run_tour.execute(NOTEBOOK)


def text_of(nb, source_start):
    """What the code cell starting with source_start printed or showed."""
    for cell in nb.cells:
        if cell.cell_type == "code" and cell.source.startswith(source_start):
            return "".join(o.get("text", "") or o.get("data", {}).get("text/plain", "")
                           for o in cell.outputs)
    raise KeyError(source_start)


def test_rules_notebook_shows_each_action_under_its_cell(nb):
    assert "memtamer: rules from " in text_of(nb, "%load_ext memtamer")
    assert text_of(nb, "import numpy as np").endswith(
        "memtamer rule downcast-new-floats: downcast signal 64 MiB -> 32 MiB\n")
    big_output = text_of(nb, "np.ones(2**23)")
    assert "memtamer rule compress-idle-arrays: compressed counts 64 MiB -> " in big_output
    assert "memtamer rule drop-big-outputs: dropped Out[" in big_output
    report = text_of(nb, "%memreport actions")
    assert "rule downcast-new-floats: downcast signal 64 MiB -> 32 MiB" in report
    assert "model" not in report  # protected
    assert text_of(nb, "int(counts.sum()) == expected").endswith("True")
    assert "bad.yaml:4:9: do: unknown value 'dell': did you mean 'del'?" in text_of(nb, "bad = ")
