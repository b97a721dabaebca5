"""The tour notebook, executed headless by nbclient in a real kernel."""

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "scripts"))

import run_tour  # noqa: E402

GiB = 1024**3


@pytest.fixture(scope="module")
def tour():
    return run_tour.execute()


def test_tour_runs_and_shows_html_tables(tour):
    (summary,) = run_tour.outputs_of(tour, "%memreport")
    assert "<table" in summary["data"]["text/html"]
    (table,) = run_tour.outputs_of(tour, "%memreport cells")
    html = table["data"]["text/html"]
    assert "<svg" in html and "tmp = np.ones(2**27)" in html
    assert "+1.0 GiB" in table["data"]["text/plain"]


def test_tour_record_is_exact(tour):
    (output,) = run_tour.outputs_of(tour, "import memtamer\nmemtamer.report()['cells'][1]")
    record = eval(output["data"]["text/plain"])  # a dict repr of plain values
    assert record["first_line"].startswith("tmp = np.ones(2**27)")
    assert record["peak_increment"] == pytest.approx(GiB, rel=0.02)
