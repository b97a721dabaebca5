"""Writes notebooks/rules.ipynb (kept in git; rerun this after editing the cells here)."""

import os

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

RULES = '''\
version: 1
protect: [model]
rules:
  - name: downcast-new-floats
    when: {created: true}
    match: {name: "signal*", dtype: float64}
    do: downcast
    rtol: 1e-3
  - name: compress-idle-arrays
    when: {idle_for: 2}
    match: {type: ndarray, min_size: 32MiB}
    do: compress
  - name: drop-big-outputs
    match: {min_size: 32MiB}
    do: clear_output_cache
'''

CELLS = [
    new_markdown_cell(
        "# Auto-cleanup rules\n\n"
        "A rules file says, once, what memtamer should do between cells: downcast new float64 "
        "signals (within a relative error of 1e-3), compress arrays no cell has touched for two "
        "cells, drop big entries of IPython's output cache. `model` is protected: no rule "
        "touches it. Here the file goes to a temporary directory named by `$MEMTAMER_RULES`; "
        "usually it is `memtamer.yaml` next to the notebook."),
    new_code_cell(
        "import os, tempfile\n\n"
        f"RULES = '''\\\n{RULES}'''\n"
        "path = os.path.join(tempfile.mkdtemp(), 'memtamer.yaml')\n"
        "with open(path, 'w') as f:\n"
        "    f.write(RULES)\n"
        "os.environ['MEMTAMER_RULES'] = path"),
    new_code_cell("%load_ext memtamer"),
    new_code_cell("%memrules"),
    new_markdown_cell("Each action is one line under the cell that triggered it."),
    new_code_cell("import numpy as np\n"
                  "signal = np.random.default_rng(0).random(2**23) + 1  # 64 MiB of float64"),
    new_code_cell("counts = np.random.default_rng(1).poisson(3, 2**23)  # 64 MiB of int64\n"
                  "expected = int(counts.sum())"),
    new_code_cell("model = np.ones(2**23)  # protected"),
    new_code_cell("np.ones(2**23)  # a big output"),
    new_code_cell("total = 1"),
    new_markdown_cell("Everything the rules did:"),
    new_code_cell("%memreport actions"),
    new_markdown_cell("A compressed array comes back, bit for bit, when a cell reads it:"),
    new_code_cell("int(counts.sum()) == expected"),
    new_markdown_cell("What the rules would do now, changing nothing:"),
    new_code_cell("%memrules --dry-run"),
    new_markdown_cell("A bad file is reported with its line and column, and never half-applied; "
                      "the same check runs from a shell as `python -m memtamer check FILE`."),
    new_code_cell("bad = os.path.join(os.path.dirname(path), 'bad.yaml')\n"
                  "with open(bad, 'w') as f:\n"
                  "    f.write('version: 1\\nrules:\\n  - name: tidy\\n    do: dell\\n')\n"
                  "%memrules check $bad"),
]

if __name__ == "__main__":
    here = os.path.dirname(os.path.abspath(__file__))
    nb = new_notebook(cells=CELLS, metadata={"kernelspec": {
        "name": "python3", "display_name": "Python 3", "language": "python"}})
    nbformat.write(nb, os.path.join(here, "..", "notebooks", "rules.ipynb"))
