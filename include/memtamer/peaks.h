/* peaks: which code made a cell's peak.
 *
 * heap.c's hooks report every block of at least the block threshold (1 MiB
 * by default) made while a cell runs.  With the GIL held, the block is
 * charged to a code location: the line of the cell's own code that was
 * running and, when the allocation happened inside a function the user
 * defined (its globals are the user's namespace), that function's line.
 * Without the GIL (numpy's worker threads, native code) it is charged to
 * "native/worker thread".  Live blocks sit in a table keyed by address
 * (the few made since the last new high wait in a short list first: one
 * freed before any new high costs no table work); whenever the counted total
 * (heap.c's Python + numpy counters) reaches a new high at a big block's
 * allocation or free, the per-location sums are copied: that is the peak's
 * composition.  At cell end, the blocks of the composition still
 * alive are "kept", the rest were temporaries.
 *
 * Lower floor: heap.c calls in, nothing here calls heap.c or the guard. */
#ifndef MEMTAMER_PEAKS_H
#define MEMTAMER_PEAKS_H

#include <Python.h>

#include <limits.h>
#include <stdatomic.h>

/* Locations kept in a cell record (the largest at the peak); the rest are
 * summed into one "other locations" row. */
#define MT_PEAK_GROUPS 8
#define MT_PEAK_TEXT_BYTES 128
#define MT_PEAK_NAME_BYTES 96
#define MT_PEAK_FILE_BYTES 160

typedef enum {
    MT_PEAK_CODE,   /* a Python code location (line and/or function below) */
    MT_PEAK_NO_GIL, /* allocated by a thread without the GIL */
    MT_PEAK_OTHER,  /* locations beyond the table's or the record's room */
} mt_peak_origin;

typedef struct {
    mt_peak_origin origin;
    int line;                          /* line of the cell's code running, 0 when none was */
    int function_line;                 /* line inside a user function, 0 when not in one */
    int blocks;                        /* blocks alive at the peak */
    long long bytes;                   /* their bytes */
    long long kept;                    /* of those, still alive at cell end */
    char text[MT_PEAK_TEXT_BYTES];     /* the cell line's source */
    char function[MT_PEAK_NAME_BYTES]; /* the user function's qualified name */
    char file[MT_PEAK_FILE_BYTES];     /* and the file (cell) it was defined in */
} mt_peak_group;

/* A cell's peak composition (3.7 KiB), only for cells whose counted
 * peak rose by at least the cell threshold. */
typedef struct {
    long long block_threshold;
    long long at;        /* counted total at the peak, above its value at cell begin */
    long long untracked; /* bytes of big blocks the live table had no room for */
    int ngroups;
    mt_peak_group groups[MT_PEAK_GROUPS + 1];
} mt_peak_composition;

/* The block threshold while a cell is open, LLONG_MAX otherwise, so that the
 * hooks' test is one relaxed load and a compare.  Protected by atomics. */
extern _Atomic long long mt_peaks_tracked_from;

static inline int
mt_peaks_tracks(long long block_size)
{
    return block_size >= atomic_load_explicit(&mt_peaks_tracked_from, memory_order_relaxed);
}

/* "code", "native/worker thread", "other locations": what report() says. */
const char *mt_peaks_origin_name(mt_peak_origin origin);

/* From the hooks, any thread, with or without the GIL; they never allocate
 * through Python.  counted: heap.c's total after the allocation / before
 * the free. */
void mt_peaks_allocated(void *ptr, long long size, long long counted);
void mt_peaks_freeing(void *ptr, long long counted);
/* A tracked block moved or changed size; it keeps its location. */
void mt_peaks_reallocated(void *old, void *ptr, long long size, long long counted);

/* Need the GIL.  begin forgets the last cell's blocks and starts tracking
 * (user_ns: the dict whose functions are the user's, or NULL); end stops
 * and, when the peak rose by at least the cell threshold, returns a
 * PyMem_RawMalloc'd composition (*out, else NULL).  source: the cell's text,
 * for the lines.  -1 with an exception. */
void mt_peaks_cell_begin(PyObject *user_ns, long long counted);
int mt_peaks_cell_end(PyObject *source, long long counted, mt_peak_composition **out);
PyObject *mt_peaks_dict(const mt_peak_composition *c);

/* _core.peaks_settings(enabled=None, block=None, cell=None) -> dict. */
PyObject *mt_peaks_settings(PyObject *module, PyObject *args, PyObject *kwargs);

/* The _core methods peaks.c defines. */
extern PyMethodDef mt_peaks_methods[];

#endif
