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
    summary = run_tour.outputs_of(tour, "%memreport")[0]
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


def test_tour_variables_shrink_and_guard(tour):
    (variables,) = run_tour.outputs_of(tour, "%memreport vars")
    text = variables["data"]["text/plain"]
    assert "half is a view of kept" in text and "del kept would free 0 B" in text
    (refusal,) = run_tour.outputs_of(tour, "%shrink downcast kept")
    assert "REFUSED" in refusal["data"]["text/plain"] and "half is a view of it" in refusal["data"]["text/plain"]
    (downcast,) = run_tour.outputs_of(tour, "%shrink downcast signal")
    assert "float64 → float32 in place" in downcast["data"]["text/plain"]
    restored = run_tour.outputs_of(tour, "counts.sum()")
    assert "restored counts" in restored[0]["text"]
    (error,) = run_tour.outputs_of(tour, "huge = np.ones(2**40)  # 8 TiB")
    assert error["ename"] == "MemoryBudgetExceeded"
    assert "signal 64 MiB" in error["evalue"]  # the size after the in-place downcast
    (alive,) = run_tour.outputs_of(tour, "float(signal.sum())  # still here")
    assert float(alive["data"]["text/plain"]) > 0
