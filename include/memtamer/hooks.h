/* hooks: IPython's pre_run_cell and post_run_cell callbacks, in C.
 *
 * The extension registers the two methods of a CellHooks object instead
 * of Python functions: measured, the Python callbacks cost more per cell
 * than all of memtamer's C.  A cell with nothing to say and no rule in
 * force runs no Python code of memtamer's; the extension's Python is
 * called for what only it does (following a new namespace, restoring
 * compressed variables, the live line, notices, rules), and only when
 * there is something to do.
 *
 * Re-runs that keep growing are noticed here: when a cell runs the same
 * source again and its holders (the variables it bound or read, the output
 * it left in Out) end up bigger than before it ran, by more than a page or
 * two, the notice names them.  A steady re-run (it rebinds what it made)
 * grows nothing.  Sizes come from the ledger's walks (exact, not RSS's page
 * noise): the ledger keeps each variable's size from before the cell's
 * first walk of it, so a re-run's growth costs what the cell walked.
 *
 * Everything here needs the GIL. */
#ifndef MEMTAMER_HOOKS_H
#define MEMTAMER_HOOKS_H

#include <Python.h>

/* The CellHooks type of module (module.c adds it at init). */
PyObject *mt_hooks_make_type(PyObject *module);

#endif
