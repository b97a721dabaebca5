/* memtamer: the module state shared by the concern files (internal).
 *
 * The map of memtamer._core is README.md's Layout table: one concern a file
 * (kernelext/NAME.c with include/memtamer/NAME.h), lower floors first; no
 * file includes the header of a file above it (tests/test_layering.py).
 *
 * One cell: pre_run_cell -> cell_begin (probe resets the high-water mark,
 * heap zeroes its peaks, guard arms the budget); the user's code runs
 * through heap's hooks; post_run_cell -> cell_end (probe and heap give the
 * record, the ledger attaches names and the walker their sizes).  Data go
 * one way: probes and hooks produce numbers, ledger and walker attach them
 * to cells and names, the report reads them, Python renders them. */
#ifndef MEMTAMER_MEMTAMER_H
#define MEMTAMER_MEMTAMER_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <assert.h>
#include <time.h>

#include "memtamer/cell.h"
#include "memtamer/config.h"
#include "memtamer/ledger.h"
#include "memtamer/policy.h"
#include "memtamer/postmortem.h"
#include "memtamer/probe.h"
#include "memtamer/shrink.h"
#include "memtamer/worker.h"
#include "memtamer/writeback.h"

typedef struct {
    /* From PyMem_RawMalloc: the sampler thread uses it without the GIL. */
    mt_probe *probe;
    mt_cell_log cells;
    /* The numpy handler ours replaced, put back at unload (heap.h). */
    PyObject *numpy_original;
    /* guard.c: the guard's state (one per process, in static storage: the
     * hooks and the watcher use it without the GIL; NULL after free). */
    struct mt_guard *guard;
    /* postmortem.c: this kernel's record (the guard's watcher updates it). */
    mt_postmortem postmortem;
    /* %shrink: the proxy type (codec.c), what chooses how compress pickles
     * an object (NULL: pickle.dumps) and the action being measured. */
    PyObject *compressed_type;
    PyObject *compress_pickler;
    mt_shrink_window shrink;
    mt_ledger ledger;
    /* policy.c: the rules in force and when each last fired. */
    mt_policy policy;
    /* telemetry.c: the publisher, NULL while off (PyMem_RawMalloc'd, its
     * sampler thread uses it without the GIL). */
    struct mt_telemetry *telemetry;
    /* module.c: what each owner of threads does around os.fork(), and
     * memtamer's Python threads' (before, after) callables (a list). */
    mt_worker_fork_hooks fork_hooks;
    PyObject *python_fork_hooks;
    /* writeback.c: the thread that starts spill files' writes to the disk
     * (malloc'd: the thread uses it without the GIL). */
    mt_writeback *writeback;
} mt_state;

/* Where a function needs the GIL: checked in debug builds (NDEBUG unset),
 * as numpy's alloc.c does. */
#define MT_ASSERT_GIL() assert(PyGILState_Check())

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

/* 0 when ns[name] is still obj as an action rebinds it; else -1 with a
 * ValueError saying another thread rebound it while it was being `doing`
 * (an action's commit refuses then and changes nothing).  Needs the GIL. */
static inline int
mt_still_bound(PyObject *ns, PyObject *name, PyObject *obj, const char *doing)
{
    PyObject *bound = PyDict_GetItemWithError(ns, name);
    if (bound == obj) {
        return 0;
    }
    if (!PyErr_Occurred()) {
        PyErr_Format(PyExc_ValueError,
                     "%U was rebound (by another thread) while it was being %s: left as that "
                     "thread left it",
                     name, doing);
    }
    return -1;
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

/* CPU time of the whole process (all its threads), for a cell's CPU
 * seconds beside its wall-clock ones. */
static inline double
mt_cpu_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
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
