/* buffers: where the memory of objects from other libraries is, as address
 * ranges, so the walker counts each buffer once whatever object reaches it
 * (a numpy array and the torch tensor made from it, a polars frame and its
 * to_arrow()).
 *
 * Kinds of exporters, decided per type without running any code:
 *   - Arrow: pyarrow arrays, chunked arrays, tables and record batches, and
 *     polars frames and series, through the Arrow C data interface
 *     (__arrow_c_array__ / __arrow_c_stream__; polars 2 exports its string
 *     views as they are, a frame column by column).  Each buffer's length comes
 *     from the array's format, length and offset (the C interface carries
 *     no lengths), reading at most one offset per variable-size buffer: no
 *     element is visited.
 *   - torch tensors on the CPU: their untyped storage (pointer, bytes).
 *   - C-level exporters of the buffer protocol, __array_interface__ or
 *     __dlpack__ whose __sizeof__ does not already count the buffer.
 *     Exporters written in Python are not called: they may copy (PIL's
 *     __array_interface__ serializes the image).
 * Other libraries' objects that export Arrow (pandas' __arrow_c_stream__
 * converts the frame) are not asked: the walker reaches their Arrow data
 * through their attributes (a pandas ArrowExtensionArray's ChunkedArray).
 *
 * Everything here needs the GIL. */
#ifndef MEMTAMER_BUFFERS_H
#define MEMTAMER_BUFFERS_H

#include <Python.h>
#include <stdint.h>

typedef enum {
    MT_BUFFERS_NONE = 0, /* sized by __sizeof__ and walked as usual */
    MT_BUFFERS_ARROW_ARRAY,
    MT_BUFFERS_ARROW_STREAM,
    MT_BUFFERS_POLARS, /* a series' stream, a frame's column by column */
    MT_BUFFERS_TORCH,
    MT_BUFFERS_PROTOCOL,
    MT_BUFFERS_ARRAY_INTERFACE,
    MT_BUFFERS_DLPACK,
} mt_buffers_kind;

typedef struct {
    uintptr_t start;
    long long bytes;
} mt_buffer_range;

/* A PyMem_RawMalloc'd list of ranges; {0} is empty. */
typedef struct {
    mt_buffer_range *items;
    Py_ssize_t n, cap;
} mt_buffer_ranges;

/* How tp's objects expose their buffers.  Looks only at the type's MRO and
 * dicts (no code runs).  numpy arrays are the walker's (MT_BUFFERS_NONE). */
mt_buffers_kind mt_buffers_kind_of(PyTypeObject *tp);

/* Replaces out's ranges by o's buffers (o of kind), sorted by address, with
 * overlapping ones merged (a table's slices share their buffers).  Runs the
 * library's export code.  An object that cannot export (a sparse tensor, a
 * tensor on a GPU, a failing exporter) has no ranges; -1 with an exception
 * only for what must stop the walk (MemoryError, KeyboardInterrupt). */
int mt_buffers_collect(PyObject *o, mt_buffers_kind kind, mt_buffer_ranges *out);

void mt_buffer_ranges_free(mt_buffer_ranges *r);

/* Arrow's default memory pool: what it holds now, the most it ever held and
 * all it ever handed out (pyarrow's bytes_allocated, max_memory and
 * total_bytes_allocated). */
typedef struct {
    long long allocated, peak, handed_out;
} mt_buffers_pool;

/* 1 with the pool's figures in *out; 0 with zeros when pyarrow is not
 * imported (memtamer never imports it: a pool not yet made holds nothing);
 * -1 when pyarrow would not say (its error is cleared: the figures are
 * only missing). */
int mt_buffers_arrow_pool(mt_buffers_pool *out);

/* The pool's peak between two readings, above the first's holding, or -1
 * when the pool cannot tell.  It cannot reset its lifetime peak, so that
 * peak tells only when it rose in between; below it, the peak is known when
 * nothing was freed in between (all that was handed out is still held: the
 * holding only rose, and the second reading is its highest).  Frees under
 * the old peak hide when they came. */
long long mt_buffers_arrow_peak_increment(const mt_buffers_pool *begin, const mt_buffers_pool *end);

/* The _core methods buffers.c defines. */
extern PyMethodDef mt_buffers_methods[];

#endif
