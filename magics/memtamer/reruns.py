"""Re-runs that keep growing: when a cell runs the same source again and
its holders (the variables it bound or read, the output it left in Out)
end up bigger than before it ran, by more than a page or two, the notice
names them.  A steady re-run (it rebinds what it made) grows nothing.

Sizes come from the ledger's walks (exact, not RSS's page noise): the ledger
keeps each variable's size from before the cell's first walk of it, so a
re-run's growth costs what the cell walked, not the whole namespace."""

import mmap

from . import _core

REGROWTH_MIN_BYTES = 2 * mmap.PAGESIZE  # growth below this is not flagged
OUTPUT_WALK_SECONDS = 0.1  # sizing the output a re-run left (at least what it found)


class Reruns:
    def __init__(self):
        self.last_run = {}  # hash of a cell's source -> the cell that ran it last
        self.rerun = False  # the running cell ran before
        self.previous = None

    def begin(self, source):
        key = hash(source)
        self.previous = self.last_run.get(key)
        self.rerun = key in self.last_run
        self.last_run[key] = None  # set to the cell number when it ends

    def end(self, source, record, output_cache):
        """The growth of a re-run (a dict for render.rerun_notice), or None."""
        rerun, self.rerun = self.rerun, False
        cell = record.get("cell") if record else None
        self.last_run[hash(source)] = cell
        if not rerun:
            return None
        grew = []
        for name, (before, size) in _core.ledger_grown().items():
            if size - (before or 0) > 0:
                grew.append({"holder": name, "bytes": size - (before or 0)})
        shown = output_cache.get(cell) if output_cache is not None and cell is not None else None
        if shown is not None:
            grew.append({"holder": f"Out[{cell}]",
                         "bytes": _core.deep_size(shown, OUTPUT_WALK_SECONDS)[0]})
        growth = sum(g["bytes"] for g in grew)
        if growth <= REGROWTH_MIN_BYTES:
            return None
        return {"cell": cell, "previous": self.previous, "growth": growth,
                "retained": record.get("retained"),
                "holders": sorted(grew, key=lambda g: -g["bytes"])}
