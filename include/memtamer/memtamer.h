/* memtamer: the module state shared by the concern files (internal). */
#ifndef MEMTAMER_MEMTAMER_H
#define MEMTAMER_MEMTAMER_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <time.h>

#include "memtamer/cell.h"
#include "memtamer/config.h"
#include "memtamer/ledger.h"
#include "memtamer/probe.h"
#include "memtamer/shrink.h"

typedef struct {
    /* From PyMem_RawMalloc: the sampler thread uses it without the GIL. */
    mt_probe *probe;
    mt_cell_log cells;
    /* numpy handler that was current when the running cell began. */
    PyObject *numpy_previous;
    /* guard.c: its C side (PyMem_RawMalloc'd, the watcher uses it without
     * the GIL), MemoryBudgetExceeded, the user's namespace and the renderer
     * of the exception's message. */
    struct mt_guard *guard;
    PyObject *budget_exceeded, *guard_user_ns, *guard_describe;
    /* %shrink: the proxy type (codec.c) and the action being measured. */
    PyObject *compressed_type;
    mt_shrink_window shrink;
    mt_ledger ledger;
    /* telemetry.c: the publisher, NULL while off (PyMem_RawMalloc'd, its
     * sampler thread uses it without the GIL). */
    struct mt_telemetry *telemetry;
} mt_state;

/* Sets dict[key] = value and drops the reference to value; a NULL value
 * (a failed constructor) passes its exception on.  Returns -1/0. */
static inline int
mt_set(PyObject *dict, const char *key, PyObject *value)
{
    if (value == NULL) {
        return -1;
    }
    int rc = PyDict_SetItemString(dict, key, value);
    Py_DECREF(value);
    return rc;
}

/* A byte count, or None where the figure is unavailable (negative). */
static inline PyObject *
mt_size_or_none(long long bytes)
{
    if (bytes < 0) {
        Py_RETURN_NONE;
    }
    return PyLong_FromLongLong(bytes);
}

static inline double
mt_monotonic_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Grows a PyMem_RawMalloc'd *array (doubling from 64) to hold at least
 * `need` elements of elem bytes; -1 with MemoryError.  Free it with
 * PyMem_RawFree. */
static inline int
mt_reserve(void **array, Py_ssize_t *cap, Py_ssize_t need, size_t elem)
{
    if (need <= *cap) {
        return 0;
    }
    Py_ssize_t n = *cap ? *cap : 64;
    while (n < need) {
        n *= 2;
    }
    if ((size_t)n > PY_SSIZE_T_MAX / elem) {
        PyErr_NoMemory();
        return -1;
    }
    void *p = PyMem_RawRealloc(*array, (size_t)n * elem);
    if (p == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    *array = p;
    *cap = n;
    return 0;
}

static inline mt_state *
mt_get_state(PyObject *module)
{
    return (mt_state *)PyModule_GetState(module);
}

#endif
