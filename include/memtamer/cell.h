/* cell: one record per executed cell, and the history of them. */
#ifndef MEMTAMER_CELL_H
#define MEMTAMER_CELL_H

#include <Python.h>

#include <string.h>

#include "memtamer/buffers.h"
#include "memtamer/heap.h"
#include "memtamer/peaks.h"
#include "memtamer/probe.h"

/* 100 code points of UTF-8, and a NUL. */
#define MT_FIRST_LINE_BYTES 404

/* A first line copied into dst (size bytes), cut to fit and ended with a
 * NUL: by hand, as snprintf would cost each cell a microsecond. */
static inline void
mt_cell_copy_line(char *dst, size_t size, const char *src)
{
    size_t n = strnlen(src, size - 1);
    memcpy(dst, src, n);
    dst[n] = '\0';
}

/* Sizes are bytes; -1 where a figure is unavailable. */
typedef struct {
    long long cell; /* execution count, -1 when the cell was not stored in history */
    long long rss_before, rss_after, peak_rss;
    /* What the cell's children owned together at most (children_method says
     * how), and their RSS at that moment, which counts the pages a forked
     * child shares with the kernel. */
    long long children_peak, children_rss_peak;
    mt_children_method children_method;
    long long heap_peak_increment, numpy_peak_increment;
    /* Arrow's default pool (when pyarrow is imported by the cell's end):
     * what the cell left in it, and its peak above the cell's start, -1
     * when the pool cannot tell (mt_buffers_arrow_peak_increment). */
    int arrow_counted;
    long long arrow_retained, arrow_peak_increment;
    /* The kernel's bytes in swap (VmSwap) at the cell's start and end, and
     * the major faults it took (pages it waited for from swap or files);
     * -1 where /proc does not say. */
    long long swap_before, swap_after, major_faults;
    /* Wall-clock seconds, and the CPU seconds of the process meanwhile: a
     * cell far slower than its CPU time waited (on swap, disk, a sleep). */
    double seconds, cpu_seconds;
    /* When it began and ended, in boot ticks (probe.h), to find which cell
     * started a child. */
    unsigned long long began_ticks, ended_ticks;
    mt_peak_method peak_method;
    int failed;
    /* The first line of the cell's source (a NUL-terminated copy of exactly
     * its length, owned by the log): most are far shorter than the
     * MT_FIRST_LINE_BYTES a window keeps, and the log has a record a cell. */
    char *first_line;
    /* What made the peak (peaks.h): owned by the log, NULL for cells whose
     * peak stayed under the threshold. */
    mt_peak_composition *peak;
} mt_cell_record;

/* What cell_begin noted for the running cell. */
typedef struct {
    int open;
    long long cell;
    double started, started_cpu;
    long long rss_before;
    /* Highest peak of windows measured inside this cell (%shrink), -1 if none. */
    long long peak_floor;
    mt_heap_reading python, numpy;
    mt_buffers_pool arrow;
    int arrow_known;
    mt_probe_children_mark children;
    int numpy_counted; /* our numpy handler is current (mt_heap_numpy_begin) */
    /* The cell's text, for the lines of its peak (a strong reference). */
    PyObject *source;
    char first_line[MT_FIRST_LINE_BYTES];
    mt_probe_self self_before; /* swap and major faults at the start */
} mt_cell_window;

/* The keys of a record's dict (cell.c's record_keys). */
#define MT_CELL_RECORD_KEYS 22

typedef struct {
    mt_cell_record *items; /* mt_reserve'd */
    Py_ssize_t len, cap;
    mt_cell_window window;
    /* A record is made every cell: its keys interned once, and a dict of
     * them (values None) that each record copies, so making one resizes
     * and inserts nothing. */
    PyObject *keys[MT_CELL_RECORD_KEYS];
    PyObject *record_template;
} mt_cell_log;

void mt_cell_log_free(mt_cell_log *log);

/* The bytes the log holds: its records and their peak compositions, as
 * requested from the allocator. */
long long mt_cell_log_own_bytes(const mt_cell_log *log);

/* Starts measuring a cell: execution is its execution count (None when it
 * is not stored in the history), source its text.  -1 with an exception. */
int mt_cell_begin(PyObject *module, PyObject *execution, PyObject *source);

/* Finishes the cell: 1 with its record in *record (the log's, valid until
 * the log next changes), 0 when no cell was being measured (the cell that
 * loaded memtamer), -1 with an exception.  execution: as the shell counted
 * it at the end (None: the count cell_begin had). */
int mt_cell_end(PyObject *module, PyObject *execution, int failed, const mt_cell_record **record);

/* A record as the dict cell_end gives Python.  NULL with an exception. */
PyObject *mt_cell_record_dict(PyObject *module, const mt_cell_record *r);

/* What a record's figures say of the cell, stated once for its dict and
 * the notices: each known or not (then 0). */
typedef struct {
    long long retained, peak_increment, swapped;
    int retained_known, peak_known, swapped_known;
} mt_cell_changes;
mt_cell_changes mt_cell_record_changes(const mt_cell_record *r);

/* The records of the cells so far, as a list (process.c's report has them). */
PyObject *mt_cell_history(PyObject *module, PyObject *unused);

/* The _core methods cell.c defines. */
extern PyMethodDef mt_cell_methods[];

#endif
