"""Executes notebooks/tour.ipynb headless with nbclient and prints its memreport."""

import os
import sys

import nbformat
from nbclient import NotebookClient

HERE = os.path.dirname(os.path.abspath(__file__))
TOUR = os.path.join(HERE, "..", "notebooks", "tour.ipynb")


def execute(path=TOUR, timeout=600):
    """The executed notebook (raises CellExecutionError if a cell fails)."""
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": os.path.dirname(path)}}).execute()
    return nb


def outputs_of(nb, source):
    """The outputs of the code cell whose whole source is source."""
    for cell in nb.cells:
        if cell.cell_type == "code" and cell.source.strip() == source:
            return cell.outputs
    raise KeyError(source)


def main():
    nb = execute()
    for source in ("%memreport", "%memreport cells"):
        print(f"In: {source}")
        for output in outputs_of(nb, source):
            print(output.get("data", {}).get("text/plain", output.get("text", "")))
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
