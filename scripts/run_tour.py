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


def transcript(nb):
    """Each code cell and what it showed, as text."""
    lines = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        lines.append("In: " + cell.source.replace("\n", "\n    "))
        for output in cell.outputs:
            if output.output_type == "error":
                lines.append(f"{output.ename}: {output.evalue}")
            else:
                lines.append(output.get("data", {}).get("text/plain", output.get("text", "")).rstrip())
        lines.append("")
    return "\n".join(lines)


def main():
    print(transcript(execute()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
