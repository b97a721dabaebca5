/* npy: access to numpy's C API without making numpy a hard dependency.
 * Every file that uses numpy includes this header instead of numpy's. */
#ifndef MEMTAMER_NPY_H
#define MEMTAMER_NPY_H

#include <Python.h>

#define NPY_NO_DEPRECATED_API NPY_1_7_API_VERSION
/* The memory-handler API appeared in numpy 1.22; we support 1.24 and up. */
#define NPY_TARGET_VERSION NPY_1_22_API_VERSION
#define PY_ARRAY_UNIQUE_SYMBOL MT_ARRAY_API
#ifndef MT_NPY_DEFINE_API
#define NO_IMPORT_ARRAY
#endif
#include <numpy/arrayobject.h>

/* 1 when numpy's C API is ready, 0 when the user has not imported numpy
 * (memtamer never imports it for them), -1 with an exception on failure.
 * Needs the GIL. */
int mt_npy_ready(void);

#endif
