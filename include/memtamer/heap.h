/* heap: cheap counting hooks on Python's allocators and numpy's buffers.
 *
 * No tracebacks, no tables: each hook adds the block's size to an atomic
 * counter and raises the counter's peak.  Sizes come from the C library
 * (malloc_usable_size), so blocks allocated before the hooks were installed
 * are freed with their true size and the counters stay right as deltas. */
#ifndef MEMTAMER_HEAP_H
#define MEMTAMER_HEAP_H

#include <Python.h>

typedef struct {
    long long current; /* net bytes since the hooks were installed */
    long long peak;    /* highest current since the last reset */
} mt_heap_reading;

/* Which hook asks the refusal policy. */
typedef enum {
    MT_HEAP_NUMPY = 1,  /* numpy's data allocator, for a buffer */
    MT_HEAP_PYTHON = 2, /* Python's allocator, for a block */
} mt_heap_hook;

/* Requests smaller than this are never put to the policy: the hooks stay a
 * few instructions for small objects (the guard's watcher catches growth
 * made of many small ones). */
#define MT_HEAP_LARGE_REQUEST (256 * 1024)

/* A refusal policy: 1 when a request of size bytes must be refused (the
 * allocation then fails with MemoryError), else 0.  Called from any thread,
 * with or without the GIL: it must not allocate, lock or touch Python
 * objects. */
typedef int (*mt_heap_refusal)(void *ctx, size_t size, mt_heap_hook hook);
/* Gives the hooks their policy (NULL: refuse nothing).  Needs the GIL.  ctx
 * must stay valid for good: the hooks outlive the module. */
void mt_heap_set_refusal(mt_heap_refusal policy, void *ctx);

/* Install/uninstall need the GIL.  Install twice is a no-op.  Uninstall
 * restores the saved allocators exactly; when someone installed their own
 * hook on top of ours (tracemalloc started later), ours stay in the chain
 * (they only count) and uninstall returns 1 instead of 0. */
int mt_heap_install(void);
int mt_heap_uninstall(void);
/* 1 while our hooks count Python's allocations.  Needs the GIL. */
int mt_heap_installed(void);
/* 1 while our hooks hold Python's large requests against the budget: also
 * under Python's debug hooks, where they count nothing.  Needs the GIL. */
int mt_heap_refusing(void);
/* "pymalloc-raw+arena", "malloc", or NULL with the reason in *why. */
const char *mt_heap_method(const char **why);

/* Gives freed heap back to the OS (glibc's malloc_trim(0)); returns 1 when
 * memory was released, 0 when not or where unavailable.  Touches no Python
 * object: callers may release the GIL around it. */
int mt_heap_trim(void);
/* Bytes malloc holds free (glibc's mallinfo2 fordblks: what a trim could
 * give back at most), -1 where unavailable.  Touches no Python object. */
long long mt_heap_free_bytes(void);

/* Safe from any thread, with or without the GIL. */
void mt_heap_reset_peaks(mt_heap_reading *python, mt_heap_reading *numpy);
void mt_heap_read(mt_heap_reading *python, mt_heap_reading *numpy);
/* Python's and numpy's current counts summed (the guard's estimate of
 * growth between RSS readings).  Safe from any thread. */
long long mt_heap_counted(void);

/* numpy: make our counting handler current for the running cell.  numpy
 * keeps it in a ContextVar, which IPython's cells share (then ours stays
 * current from one cell to the next, and a cell only looks) and a cell
 * run in a context of its own starts without.  The handler ours replaced
 * goes into *original (a new reference, when ours was made current here).
 * 1 when ours is current, 0 when numpy is not imported or another
 * non-default handler is active (nothing counted), -1 with an exception.
 * Needs the GIL. */
int mt_heap_numpy_begin(PyObject **original);
/* At unload: puts *original back where ours is current, and clears it.
 * -1 with an exception.  Needs the GIL. */
int mt_heap_numpy_end(PyObject **original);
/* While on, numpy's default handler (which worker threads use) counts and
 * is refused by the budget too; numpy imported later is covered at the next
 * cell.  Needs the GIL. */
void mt_heap_numpy_cover_threads(int on);
int mt_heap_numpy_threads_covered(void);
/* A dict of the allocator functions now installed, for tests that check
 * unload leaves nothing behind. */
PyObject *mt_heap_allocators(void);

#endif
