/* shrink: in-place downcast, pack, spill, and the measured window around
 * every %shrink action.  All functions need the GIL. */
#ifndef MEMTAMER_SHRINK_H
#define MEMTAMER_SHRINK_H

#include <Python.h>

/* The window one %shrink action is measured in (module state). */
typedef struct {
    int open;
    int inside_cell; /* a cell's window was open and is resumed at the end */
    long long rss_before;
    double started;
} mt_shrink_window;

/* Methods of _core (module.c lists them). */
PyObject *mt_shrink_window_begin(PyObject *module, PyObject *unused);
PyObject *mt_shrink_window_end(PyObject *module, PyObject *unused);
PyObject *mt_shrink_inplace_check(PyObject *module, PyObject *const *args, Py_ssize_t nargs);
PyObject *mt_shrink_plan(PyObject *module, PyObject *args, PyObject *kwargs);
PyObject *mt_shrink_options(PyObject *module, PyObject *args, PyObject *kwargs);
PyObject *mt_shrink_downcast(PyObject *module, PyObject *args, PyObject *kwargs);
PyObject *mt_shrink_pack(PyObject *module, PyObject *args, PyObject *kwargs);
PyObject *mt_shrink_spill_write(PyObject *module, PyObject *args, PyObject *kwargs);
PyObject *mt_shrink_spill_commit(PyObject *module, PyObject *args, PyObject *kwargs);
PyObject *mt_shrink_spill_commit_pickled(PyObject *module, PyObject *args, PyObject *kwargs);

/* The _core methods shrink.c defines. */
extern PyMethodDef mt_shrink_methods[];

#endif
