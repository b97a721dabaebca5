"""Writes notebooks/tour.ipynb (kept in git; rerun this after editing the cells here)."""

import os

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

CELLS = [
    new_markdown_cell(
        "# A tour of memtamer\n\n"
        "memtamer measures every cell: its exact peak (the kernel's high-water mark is reset "
        "per cell), what it retained, the heap and numpy-buffer peaks, and the peak of child "
        "processes. Load it once:"
    ),
    new_code_cell("%load_ext memtamer"),
    new_code_cell("import numpy as np"),
    new_markdown_cell("A cell that needs 1 GiB for a moment and keeps nothing. Sampling tools "
                      "usually miss such spikes; memtamer reports the exact peak."),
    new_code_cell("tmp = np.ones(2**27)  # 1 GiB for a moment\ndel tmp"),
    new_markdown_cell("A cell that keeps 256 MiB:"),
    new_code_cell("kept = np.ones(2**25)  # 256 MiB kept"),
    new_markdown_cell("Pure Python objects show in the heap figure:"),
    new_code_cell("words = [str(i) * 10 for i in range(10**6)]"),
    new_markdown_cell("A child process copies and touches memory of its own; its peak is "
                      "reported separately:"),
    new_code_cell(
        "import multiprocessing as mp\n\n"
        "def work():\n"
        "    buf = bytearray(512 * 2**20)\n"
        "    buf[::4096] = b'x' * len(buf[::4096])\n\n"
        "child = mp.get_context('fork').Process(target=work)\n"
        "child.start(); child.join()"
    ),
    new_markdown_cell("The summary, then the table of cells:"),
    new_code_cell("%memreport"),
    new_code_cell("%memreport cells"),
    new_markdown_cell(
        "## Which variables hold the memory\n\n"
        "Displaying `kept` put it in IPython's output cache (`Out[n]`, `_`, `_n`), and `half` "
        "is a view of it: `del kept` alone would free nothing. memtamer says so:"),
    new_code_cell("kept"),
    new_code_cell("half = kept[::2]"),
    new_code_cell("%memreport vars"),
    new_markdown_cell(
        "## %shrink acts\n\n"
        "An in-place downcast is refused while others hold the array, with the reason:"),
    new_code_cell("%shrink downcast kept"),
    new_markdown_cell("`%shrink del` removes the names and IPython's cached references, "
                      "collects, and gives the freed heap back to the OS:"),
    new_code_cell("%shrink del kept half"),
    new_code_cell("signal = np.sin(np.linspace(0, 100, 2**24))  # 128 MiB of float64"),
    new_code_cell("%shrink downcast signal"),
    new_code_cell("counts = np.random.default_rng(0).poisson(3, 2**23)  # 64 MiB of int64"),
    new_code_cell("%shrink compress counts"),
    new_markdown_cell("A compressed variable is restored before any cell that reads it:"),
    new_code_cell("counts.sum()"),
    new_code_cell("ids = list(range(10**6))\n%shrink pack ids"),
    new_markdown_cell(
        "## The kernel survives a runaway cell\n\n"
        "The budget is on once memtamer is loaded: a cell that would cross it ends with "
        "`MemoryBudgetExceeded`, and every variable lives on."),
    new_code_cell("%memguard"),
    new_code_cell("huge = np.ones(2**40)  # 8 TiB", metadata={"tags": ["raises-exception"]}),
    new_code_cell("float(signal.sum())  # still here"),
    new_code_cell("%memreport"),
    new_markdown_cell("The same figures as data:"),
    new_code_cell("import memtamer\nmemtamer.report()['cells'][1]"),
]

if __name__ == "__main__":
    here = os.path.dirname(os.path.abspath(__file__))
    nb = new_notebook(cells=CELLS, metadata={"kernelspec": {
        "name": "python3", "display_name": "Python 3", "language": "python"}})
    nbformat.write(nb, os.path.join(here, "..", "notebooks", "tour.ipynb"))
