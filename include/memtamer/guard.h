/* guard: the memory budget that ends a cell with MemoryBudgetExceeded
 * instead of letting the OOM killer end the kernel.
 *
 * Three layers share one budget and one trip record:
 *   numpy   heap.c's numpy handler refuses a buffer that would cross it;
 *   python  heap.c's allocator hooks refuse a large request that would;
 *   watcher a C thread polls RSS (and the cell's child processes) and, when
 *           use crosses it, sends MT_GUARD_SIGNAL to the main thread, whose
 *           Python-level handler (_core._guard_signal) raises the exception.
 * The refusal layers make numpy or CPython raise a plain MemoryError; the
 * IPython layer turns it into MemoryBudgetExceeded with guard_exception().
 *
 * The budget caps this kernel's RSS plus the private memory its descendants
 * add during the cell (all of it for the processes the cell started; the
 * pages a forked child shares are counted once, in the kernel's RSS), and what the cell adds to the
 * memory the kernel shares with other processes (its cgroup's, or the machine's) beyond that limit
 * minus a reserve: the headroom is the smaller of the two.  It is armed only while a cell runs.
 * After a trip the ceiling rises by a grace margin for the rest of the cell, so the traceback can
 * be shown and a cell that catches MemoryError and keeps growing is stopped again. */
#ifndef MEMTAMER_GUARD_H
#define MEMTAMER_GUARD_H

#include <Python.h>
#include <stddef.h>

#include "memtamer/heap.h"
#include "memtamer/probe.h"

/* Requests of this size or more are held against a fresh reading of the
 * shared memory's working set (smaller ones against the watcher's last),
 * and reserve their bytes in the pod's ledger (pod.h) where there is one. */
#define MT_GUARD_FRESH_REQUEST (64LL * 1024 * 1024)

/* Default reserve below the effective limit, and below the shared limit:
 * the larger of these. */
#define MT_GUARD_RESERVE_MIN (256LL * 1024 * 1024)
#define MT_GUARD_RESERVE_PERCENT 5

/* Default watcher poll. */
#define MT_GUARD_POLL_US 5000

typedef enum {
    MT_GUARD_NUMPY = MT_HEAP_NUMPY,   /* numpy's data allocator refused a buffer */
    MT_GUARD_PYTHON = MT_HEAP_PYTHON, /* Python's allocator refused a large block */
    MT_GUARD_WATCHER = 3,             /* the watcher saw RSS cross the budget */
    MT_GUARD_CHILD = 4,               /* ... and killed the cell's biggest child */
    MT_GUARD_WORKER = 5, /* ... because of a child of an earlier cell: named, not killed */
} mt_guard_layer;

/* The room the budget counts on, for Python (the guard's messages, the
 * process report).  The figures of the memory shared with other processes, as a dict:
 * source ('cgroup2', 'cgroup1', 'machine'), path, limit, use (the working
 * set), usage, inactive_file. */
PyObject *mt_guard_shared_dict(const mt_probe_shared *shared);

/* The swap this process may fill, as a dict: source ('SwapTotal',
 * 'cgroup2 memory.swap.max', 'cgroup1 memory.memsw.limit_in_bytes'), path,
 * limit, used, room. */
PyObject *mt_guard_swap_dict(const mt_probe_swap *swap);

/* Cell boundaries (cell.c), with the GIL held. */
void mt_guard_cell_begin(PyObject *module, long long cell, const char *first_line,
                         long long rss_before, const mt_probe_children_mark *children);
void mt_guard_cell_end(PyObject *module, long long rss_after);
/* The effective budget (-1 when off) and the trips so far, which cell.c
 * hands to telemetry.  Needs the GIL. */
void mt_guard_figures(PyObject *module, long long *budget, long long *trips);

/* Module exec (creates MemoryBudgetExceeded), traverse, clear and free. */
int mt_guard_exec(PyObject *module);
int mt_guard_traverse(PyObject *module, visitproc visit, void *arg);
void mt_guard_clear(PyObject *module);
void mt_guard_free(PyObject *module);

/* Adds the guard's figures to the process view: budget, and the shared
 * memory's reserve.  Needs the GIL. */
int mt_guard_process_figures(PyObject *module, PyObject *process);

/* The most the running or last cell's children owned together (probe.h's
 * mt_probe_children_use) at the watcher's looks, 0 when it saw none; in
 * *rss their RSS at that look, and in *unreadable whether some child's
 * private memory could not be read (its RSS then stood in). */
long long mt_guard_children_peak(long long *rss, int *unreadable);

/* The _core methods guard.c defines. */
extern PyMethodDef mt_guard_methods[];

#endif
