/* buffers: foreign buffers as address ranges (buffers.h). */
#include "memtamer/memtamer.h"

#include <stdlib.h>
#include <string.h>

#include "memtamer/buffers.h"

/* The Arrow C data and stream interfaces' structures: ABI-stable by the
 * specification, declared here as the specification says to. */
#ifndef ARROW_C_DATA_INTERFACE
#define ARROW_C_DATA_INTERFACE
struct ArrowSchema {
    const char *format;
    const char *name;
    const char *metadata;
    int64_t flags;
    int64_t n_children;
    struct ArrowSchema **children;
    struct ArrowSchema *dictionary;
    void (*release)(struct ArrowSchema *);
    void *private_data;
};

struct ArrowArray {
    int64_t length;
    int64_t null_count;
    int64_t offset;
    int64_t n_buffers;
    int64_t n_children;
    const void **buffers;
    struct ArrowArray **children;
    struct ArrowArray *dictionary;
    void (*release)(struct ArrowArray *);
    void *private_data;
};
#endif

#ifndef ARROW_C_STREAM_INTERFACE
#define ARROW_C_STREAM_INTERFACE
struct ArrowArrayStream {
    int (*get_schema)(struct ArrowArrayStream *, struct ArrowSchema *out);
    int (*get_next)(struct ArrowArrayStream *, struct ArrowArray *out);
    const char *(*get_last_error)(struct ArrowArrayStream *);
    void (*release)(struct ArrowArrayStream *);
    void *private_data;
};
#endif

/* DLPack's unversioned managed tensor (dlpack.h), what __dlpack__()
 * returns in a "dltensor" capsule when no max_version is asked for. */
typedef struct {
    void *data;
    struct {
        int32_t type, id;
    } device;
    int32_t ndim;
    struct {
        uint8_t code, bits;
        uint16_t lanes;
    } dtype;
    int64_t *shape;
    int64_t *strides; /* in elements; NULL: compact row-major */
    uint64_t byte_offset;
} dl_tensor;

typedef struct {
    dl_tensor tensor;
    void *manager_ctx;
    void (*deleter)(void *);
} dl_managed_tensor;

/* Devices whose memory is this process's RAM: the CPU and pinned host memory. */
enum { DL_CPU = 1, DL_CUDA_HOST = 3 };

/* Arrow types nest a few levels (a list of structs of lists); a schema
 * deeper than this is malformed. */
#define MAX_ARROW_DEPTH 64
/* Py_buffer's own limit on dimensions (PyBUF_MAX_NDIM) serves all the
 * strided exporters. */
#define MAX_DIMS 64

static int
add_range(mt_buffer_ranges *out, const void *start, long long bytes)
{
    if (start == NULL || bytes <= 0) {
        return 0;
    }
    if (mt_reserve((void **)&out->items, &out->cap, out->n + 1, sizeof(mt_buffer_range)) < 0) {
        return -1;
    }
    out->items[out->n].start = (uintptr_t)start;
    out->items[out->n].bytes = bytes;
    out->n++;
    return 0;
}

void
mt_buffer_ranges_free(mt_buffer_ranges *r)
{
    PyMem_RawFree(r->items);
    r->items = NULL;
    r->n = r->cap = 0;
}

static int
compare_range(const void *a, const void *b)
{
    const mt_buffer_range *x = a, *y = b;
    if (x->start != y->start) {
        return x->start < y->start ? -1 : 1;
    }
    return (x->bytes < y->bytes) - (x->bytes > y->bytes);
}

/* Sorts the ranges and merges those that overlap: the slices of one buffer
 * (a table's batches cut from one chunk) start at the same address with
 * different lengths. */
static void
merge_ranges(mt_buffer_ranges *r)
{
    if (r->n < 2) {
        return;
    }
    qsort(r->items, (size_t)r->n, sizeof(mt_buffer_range), compare_range);
    Py_ssize_t kept = 0;
    for (Py_ssize_t i = 1; i < r->n; i++) {
        mt_buffer_range *last = &r->items[kept];
        uintptr_t end = last->start + (uintptr_t)last->bytes;
        if (r->items[i].start < end) {
            uintptr_t other = r->items[i].start + (uintptr_t)r->items[i].bytes;
            if (other > end) {
                last->bytes = (long long)(other - last->start);
            }
        }
        else {
            r->items[++kept] = r->items[i];
        }
    }
    r->n = kept + 1;
}

/* The bytes of one element of a fixed-width Arrow format, 0 for the other
 * formats. */
static int64_t
fixed_width(const char *f)
{
    switch (f[0]) {
    case 'c':
    case 'C':
        return f[1] ? 0 : 1;
    case 's':
    case 'S':
    case 'e':
        return f[1] ? 0 : 2;
    case 'i':
    case 'I':
    case 'f':
        return f[1] ? 0 : 4;
    case 'l':
    case 'L':
    case 'g':
        return f[1] ? 0 : 8;
    case 'w': /* w:bytes */
        return f[1] == ':' ? strtoll(f + 2, NULL, 10) : 0;
    case 'd': { /* d:precision,scale[,bits] */
        const char *comma = strchr(f, ',');
        const char *bits = comma ? strchr(comma + 1, ',') : NULL;
        return f[1] != ':' ? 0 : bits ? strtoll(bits + 1, NULL, 10) / 8 : 16;
    }
    case 't':
        switch (f[1]) {
        case 'd': /* date32 days, date64 milliseconds */
            return f[2] == 'D' ? 4 : 8;
        case 't': /* time32 seconds and milliseconds, time64 */
            return f[2] == 's' || f[2] == 'm' ? 4 : 8;
        case 's': /* timestamp */
        case 'D': /* duration */
            return 8;
        case 'i': /* interval: months, day-time, month-day-nano */
            return f[2] == 'M' ? 4 : f[2] == 'D' ? 8 : 16;
        }
    }
    return 0;
}

/* n elements of width bytes, -1 on overflow or a negative count. */
static long long
times(int64_t n, int64_t width)
{
    long long bytes;
    if (n < 0 || width < 0 || __builtin_mul_overflow(n, width, &bytes)) {
        return -1;
    }
    return bytes;
}

static int64_t
offset_at(const void *offsets, int64_t i, int wide)
{
    return wide ? ((const int64_t *)offsets)[i] : ((const int32_t *)offsets)[i];
}

/* The ranges of array a (of schema s) and of its children and dictionary.
 * Lengths follow the Arrow columnar format: a validity bitmap of
 * offset + length bits, fixed-width values, offsets (one more than the
 * elements), variable-size data up to the last offset, views and their
 * variadic buffers (whose lengths the last buffer lists). */
static int
arrow_ranges(const struct ArrowSchema *s, const struct ArrowArray *a, mt_buffer_ranges *out,
             int depth)
{
    if (depth > MAX_ARROW_DEPTH || s->format == NULL || a->offset < 0 || a->length < 0 ||
        a->length > INT64_MAX - a->offset) {
        PyErr_SetString(PyExc_ValueError, "a malformed Arrow array");
        return -1;
    }
    const char *f = s->format;
    int64_t total = a->offset + a->length, nb = a->n_buffers;
    const void *const *b = (const void *const *)a->buffers;
#define BUFFER(i) ((i) < nb ? b[i] : NULL)
    long long bitmap = (total + 7) / 8;
    int64_t width = fixed_width(f);
    int rc = 0;
    if (f[0] == 'n' && f[1] == '\0') {
        /* null: no buffers */
    }
    else if (f[0] == 'b' && f[1] == '\0') {
        rc = add_range(out, BUFFER(0), bitmap) < 0 || add_range(out, BUFFER(1), bitmap) < 0;
    }
    else if (width > 0) {
        rc = add_range(out, BUFFER(0), bitmap) < 0 ||
             add_range(out, BUFFER(1), times(total, width)) < 0;
    }
    else if (strchr("zuZU", f[0]) && f[1] == '\0') {
        int wide = f[0] == 'Z' || f[0] == 'U';
        const void *offsets = BUFFER(1);
        long long data = offsets != NULL ? offset_at(offsets, total, wide) : 0;
        rc = add_range(out, BUFFER(0), bitmap) < 0 ||
             add_range(out, offsets, times(total + 1, wide ? 8 : 4)) < 0 ||
             add_range(out, BUFFER(2), data) < 0;
    }
    else if (f[0] == 'v' && (f[1] == 'z' || f[1] == 'u') && f[2] == '\0') {
        /* validity, views, variadic data..., their lengths (an array the
         * export made, not the array's memory) */
        rc = add_range(out, BUFFER(0), bitmap) < 0 ||
             add_range(out, BUFFER(1), times(total, 16)) < 0;
        const int64_t *lengths = nb >= 3 ? b[nb - 1] : NULL;
        for (int64_t i = 2; rc == 0 && lengths != NULL && i < nb - 1; i++) {
            rc = add_range(out, b[i], lengths[i - 2]) < 0;
        }
    }
    else if (f[0] == '+') {
        int wide = f[1] == 'L' || (f[1] == 'v' && f[2] == 'L');
        switch (f[1]) {
        case 'l': /* list */
        case 'L':
        case 'm': /* map: a list of structs */
            rc = add_range(out, BUFFER(0), bitmap) < 0 ||
                 add_range(out, BUFFER(1), times(total + 1, wide ? 8 : 4)) < 0;
            break;
        case 'v': /* list view: offsets and sizes */
            rc = add_range(out, BUFFER(0), bitmap) < 0 ||
                 add_range(out, BUFFER(1), times(total, wide ? 8 : 4)) < 0 ||
                 add_range(out, BUFFER(2), times(total, wide ? 8 : 4)) < 0;
            break;
        case 'w': /* fixed-size list */
        case 's': /* struct */
            rc = add_range(out, BUFFER(0), bitmap) < 0;
            break;
        case 'u': /* union: type ids, and offsets when dense */
            rc = add_range(out, BUFFER(0), total) < 0 ||
                 (f[2] == 'd' && add_range(out, BUFFER(1), times(total, 4)) < 0);
            break;
        }
        /* run-end encoded (+r): its children hold everything */
    }
    /* Formats a later version of the specification adds have no buffers
     * counted here; their children and dictionary still are. */
#undef BUFFER
    if (rc) {
        return -1;
    }
    for (int64_t i = 0; i < a->n_children && i < s->n_children; i++) {
        if (arrow_ranges(s->children[i], a->children[i], out, depth + 1) < 0) {
            return -1;
        }
    }
    if (s->dictionary != NULL && a->dictionary != NULL) {
        return arrow_ranges(s->dictionary, a->dictionary, out, depth + 1);
    }
    return 0;
}

static int
arrow_array_ranges(PyObject *o, mt_buffer_ranges *out)
{
    PyObject *pair = PyObject_CallMethod(o, "__arrow_c_array__", NULL);
    int rc = -1;
    if (pair == NULL) {
        return -1;
    }
    if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2) {
        PyErr_SetString(PyExc_TypeError, "__arrow_c_array__ did not return (schema, array)");
        goto done;
    }
    const struct ArrowSchema *schema =
        PyCapsule_GetPointer(PyTuple_GET_ITEM(pair, 0), "arrow_schema");
    const struct ArrowArray *array = PyCapsule_GetPointer(PyTuple_GET_ITEM(pair, 1), "arrow_array");
    if (schema == NULL || array == NULL) {
        goto done;
    }
    rc = arrow_ranges(schema, array, out, 0);
done:
    Py_DECREF(pair); /* the capsules release what they export */
    return rc;
}

static void
set_stream_error(struct ArrowArrayStream *stream, int err)
{
    const char *why = stream->get_last_error ? stream->get_last_error(stream) : NULL;
    PyErr_Format(PyExc_OSError, "an Arrow stream failed: %s", why ? why : strerror(err));
}

/* The ranges of the arrays o's __arrow_c_stream__() streams. */
static int
arrow_stream_ranges(PyObject *o, mt_buffer_ranges *out)
{
    struct ArrowSchema schema = {0};
    struct ArrowArray array = {0};
    int rc = -1, err;
    PyObject *capsule = PyObject_CallMethod(o, "__arrow_c_stream__", NULL);
    if (capsule == NULL) {
        return -1;
    }
    struct ArrowArrayStream *stream = PyCapsule_GetPointer(capsule, "arrow_array_stream");
    if (stream == NULL) {
        goto done;
    }
    if ((err = stream->get_schema(stream, &schema)) != 0) {
        set_stream_error(stream, err);
        goto done;
    }
    for (;;) {
        if ((err = stream->get_next(stream, &array)) != 0) {
            set_stream_error(stream, err);
            goto done;
        }
        if (array.release == NULL) { /* the end */
            break;
        }
        int failed = arrow_ranges(&schema, &array, out, 0) < 0;
        array.release(&array);
        if (failed) {
            goto done;
        }
    }
    rc = 0;
done:
    if (schema.release != NULL) {
        schema.release(&schema);
    }
    Py_DECREF(capsule); /* its destructor releases the stream */
    return rc;
}

/* polars' frames and series.  A frame's own stream first aligns its
 * columns' chunks (a copy, kept): its columns are exported one by one
 * instead, each as the views and chunks polars holds. */
static int
polars_ranges(PyObject *o, mt_buffer_ranges *out)
{
    if (strcmp(Py_TYPE(o)->tp_name, "DataFrame") != 0) {
        return arrow_stream_ranges(o, out);
    }
    PyObject *columns = PyObject_CallMethod(o, "get_columns", NULL);
    if (columns == NULL) {
        return -1;
    }
    int rc = PyList_Check(columns) ? 0 : -1;
    if (rc < 0) {
        PyErr_SetString(PyExc_TypeError, "polars' get_columns() did not return a list");
    }
    for (Py_ssize_t i = 0; rc == 0 && i < PyList_GET_SIZE(columns); i++) {
        rc = arrow_stream_ranges(PyList_GET_ITEM(columns, i), out);
    }
    Py_DECREF(columns);
    return rc;
}

/* The bytes a strided block spans and where it starts (*start moves back
 * for negative strides); strides NULL means compact row-major. */
static long long
strided_extent(uintptr_t *start, int64_t itemsize, int ndim, const int64_t *shape,
               const int64_t *strides)
{
    long long lo = 0, hi = itemsize, elements = 1;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] <= 0) {
            return 0;
        }
        if (strides == NULL) {
            if (__builtin_mul_overflow(elements, shape[d], &elements)) {
                return -1;
            }
            continue;
        }
        long long reach;
        if (__builtin_mul_overflow(shape[d] - 1, strides[d], &reach)) {
            return -1;
        }
        if (reach > 0) {
            hi += reach;
        }
        else {
            lo += reach;
        }
    }
    if (strides == NULL) {
        return times(elements, itemsize);
    }
    *start -= (uintptr_t)(-lo);
    return hi - lo;
}

static int
protocol_ranges(PyObject *o, mt_buffer_ranges *out)
{
    Py_buffer view;
    if (PyObject_GetBuffer(o, &view, PyBUF_RECORDS_RO) < 0) {
        return -1;
    }
    int64_t shape[MAX_DIMS], strides[MAX_DIMS];
    uintptr_t start = (uintptr_t)view.buf;
    long long bytes = view.len;
    if (view.shape != NULL && view.strides != NULL && view.ndim <= MAX_DIMS) {
        for (int d = 0; d < view.ndim; d++) {
            shape[d] = view.shape[d];
            strides[d] = view.strides[d];
        }
        bytes = strided_extent(&start, view.itemsize, view.ndim, shape, strides);
    }
    int rc = add_range(out, (const void *)start, bytes);
    PyBuffer_Release(&view);
    return rc;
}

/* n integers of a tuple into out; -1 with an exception. */
static int
int64_tuple(PyObject *tuple, int64_t *out, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < n; i++) {
        out[i] = PyLong_AsLongLong(PyTuple_GET_ITEM(tuple, i));
        if (out[i] == -1 && PyErr_Occurred()) {
            return -1;
        }
    }
    return 0;
}

/* __array_interface__ with a data pointer (one given as a buffer object is
 * that object's memory, which the walk reaches on its own). */
static int
array_interface_ranges(PyObject *o, mt_buffer_ranges *out)
{
    int64_t shape[MAX_DIMS], strides[MAX_DIMS];
    int rc = -1;
    PyObject *ai = PyObject_GetAttrString(o, "__array_interface__");
    if (ai == NULL) {
        return -1;
    }
    PyObject *data = PyDict_Check(ai) ? PyDict_GetItemString(ai, "data") : NULL;
    PyObject *shp = PyDict_Check(ai) ? PyDict_GetItemString(ai, "shape") : NULL;
    PyObject *typestr = PyDict_Check(ai) ? PyDict_GetItemString(ai, "typestr") : NULL;
    PyObject *str = PyDict_Check(ai) ? PyDict_GetItemString(ai, "strides") : NULL;
    if (data == NULL || !PyTuple_Check(data) || PyTuple_GET_SIZE(data) < 1) {
        rc = 0;
        goto done;
    }
    if (shp == NULL || !PyTuple_Check(shp) || PyTuple_GET_SIZE(shp) > MAX_DIMS || typestr == NULL ||
        !PyUnicode_Check(typestr) || PyUnicode_GET_LENGTH(typestr) < 3 ||
        (str != NULL && str != Py_None &&
         (!PyTuple_Check(str) || PyTuple_GET_SIZE(str) != PyTuple_GET_SIZE(shp)))) {
        PyErr_SetString(PyExc_ValueError, "a malformed __array_interface__");
        goto done;
    }
    int ndim = (int)PyTuple_GET_SIZE(shp);
    const char *type = PyUnicode_AsUTF8(typestr);
    void *ptr = type ? PyLong_AsVoidPtr(PyTuple_GET_ITEM(data, 0)) : NULL;
    if (PyErr_Occurred() || int64_tuple(shp, shape, ndim) < 0 ||
        (str != NULL && str != Py_None && int64_tuple(str, strides, ndim) < 0)) {
        goto done;
    }
    uintptr_t start = (uintptr_t)ptr;
    long long bytes = strided_extent(&start, strtoll(type + 2, NULL, 10), ndim, shape,
                                     str != NULL && str != Py_None ? strides : NULL);
    rc = add_range(out, (const void *)start, bytes);
done:
    Py_DECREF(ai);
    return rc;
}

static int
dlpack_ranges(PyObject *o, mt_buffer_ranges *out)
{
    PyObject *capsule = PyObject_CallMethod(o, "__dlpack__", NULL);
    int rc = -1;
    if (capsule == NULL) {
        return -1;
    }
    const dl_managed_tensor *m = PyCapsule_GetPointer(capsule, "dltensor");
    if (m != NULL) {
        const dl_tensor *t = &m->tensor;
        rc = 0;
        if ((t->device.type == DL_CPU || t->device.type == DL_CUDA_HOST) && t->ndim >= 0 &&
            t->ndim <= MAX_DIMS) {
            uintptr_t start = (uintptr_t)t->data + (uintptr_t)t->byte_offset;
            int64_t itemsize = (int64_t)t->dtype.bits * t->dtype.lanes / 8;
            int64_t strides[MAX_DIMS];
            for (int d = 0; t->strides != NULL && d < t->ndim; d++) {
                strides[d] = t->strides[d] * itemsize;
            }
            long long bytes =
                strided_extent(&start, itemsize, t->ndim, t->shape, t->strides ? strides : NULL);
            rc = add_range(out, (const void *)start, bytes);
        }
    }
    Py_DECREF(capsule); /* not consumed: its destructor calls the deleter */
    return rc;
}

/* A CPU tensor's storage: all of it, whatever part the tensor views (the
 * storage lives as long as any view does). */
static int
torch_ranges(PyObject *o, mt_buffer_ranges *out)
{
    PyObject *storage = NULL, *ptr = NULL, *bytes = NULL;
    int rc = -1;
    PyObject *cpu = PyObject_GetAttrString(o, "is_cpu");
    int on_cpu = cpu ? PyObject_IsTrue(cpu) : -1;
    Py_XDECREF(cpu);
    if (on_cpu <= 0) {
        return on_cpu;
    }
    if ((storage = PyObject_CallMethod(o, "untyped_storage", NULL)) == NULL ||
        (ptr = PyObject_CallMethod(storage, "data_ptr", NULL)) == NULL ||
        (bytes = PyObject_CallMethod(storage, "nbytes", NULL)) == NULL) {
        goto done;
    }
    void *start = PyLong_AsVoidPtr(ptr);
    long long n = PyLong_AsLongLong(bytes);
    if (PyErr_Occurred()) {
        goto done;
    }
    rc = add_range(out, start, n);
done:
    Py_XDECREF(storage);
    Py_XDECREF(ptr);
    Py_XDECREF(bytes);
    return rc;
}

int
mt_buffers_collect(PyObject *o, mt_buffers_kind kind, mt_buffer_ranges *out)
{
    MT_ASSERT_GIL();
    int rc = 0;
    out->n = 0;
    switch (kind) {
    case MT_BUFFERS_NONE:
        return 0;
    case MT_BUFFERS_ARROW_ARRAY:
        rc = arrow_array_ranges(o, out);
        break;
    case MT_BUFFERS_ARROW_STREAM:
        rc = arrow_stream_ranges(o, out);
        break;
    case MT_BUFFERS_POLARS:
        rc = polars_ranges(o, out);
        break;
    case MT_BUFFERS_TORCH:
        rc = torch_ranges(o, out);
        break;
    case MT_BUFFERS_PROTOCOL:
        rc = protocol_ranges(o, out);
        break;
    case MT_BUFFERS_ARRAY_INTERFACE:
        rc = array_interface_ranges(o, out);
        break;
    case MT_BUFFERS_DLPACK:
        rc = dlpack_ranges(o, out);
        break;
    }
    if (rc < 0) {
        /* An exporter that refuses (a sparse tensor has no storage) leaves
         * the object sized by its header; only what must stop any work
         * stops the walk. */
        out->n = 0;
        if (PyErr_ExceptionMatches(PyExc_MemoryError) || !PyErr_ExceptionMatches(PyExc_Exception)) {
            return -1;
        }
        PyErr_Clear();
        return 0;
    }
    merge_ranges(out);
    return 0;
}

static int
type_named(PyTypeObject *t, const char *name)
{
    return strcmp(t->tp_name, name) == 0;
}

/* polars' DataFrame and Series: Python classes over Rust objects. */
static int
is_polars_container(PyTypeObject *t)
{
    if (!(t->tp_flags & Py_TPFLAGS_HEAPTYPE) ||
        (!type_named(t, "DataFrame") && !type_named(t, "Series"))) {
        return 0;
    }
    PyObject *module = PyDict_GetItemString(t->tp_dict, "__module__");
    const char *name = module != NULL && PyUnicode_Check(module) ? PyUnicode_AsUTF8(module) : NULL;
    if (name == NULL) {
        PyErr_Clear();
        return 0;
    }
    return strncmp(name, "polars.", 7) == 0;
}

/* The type (or a base) defines name in C: a method or a getset descriptor,
 * which exports without running Python code that may copy. */
static int
defined_in_c(PyTypeObject *tp, const char *name)
{
    PyObject *key = PyUnicode_InternFromString(name);
    if (key == NULL) {
        PyErr_Clear();
        return 0;
    }
    PyObject *attr = _PyType_Lookup(tp, key);
    Py_DECREF(key);
    return attr != NULL &&
           (Py_IS_TYPE(attr, &PyMethodDescr_Type) || Py_IS_TYPE(attr, &PyGetSetDescr_Type));
}

/* tp's __sizeof__ is object's: it does not count a buffer of its own. */
static int
sizeof_is_objects(PyTypeObject *tp)
{
    PyObject *key = PyUnicode_InternFromString("__sizeof__");
    if (key == NULL) {
        PyErr_Clear();
        return 0;
    }
    int same = _PyType_Lookup(tp, key) == _PyType_Lookup(&PyBaseObject_Type, key);
    Py_DECREF(key);
    return same;
}

mt_buffers_kind
mt_buffers_kind_of(PyTypeObject *tp)
{
    PyObject *mro = tp->tp_mro;
    for (Py_ssize_t i = 0; mro != NULL && i < PyTuple_GET_SIZE(mro); i++) {
        PyTypeObject *t = (PyTypeObject *)PyTuple_GET_ITEM(mro, i);
        if (type_named(t, "pyarrow.lib.Array") || type_named(t, "pyarrow.lib.RecordBatch")) {
            return MT_BUFFERS_ARROW_ARRAY;
        }
        if (type_named(t, "pyarrow.lib.ChunkedArray") || type_named(t, "pyarrow.lib.Table")) {
            return MT_BUFFERS_ARROW_STREAM;
        }
        if (is_polars_container(t)) {
            return MT_BUFFERS_POLARS;
        }
        if (type_named(t, "torch._C.TensorBase")) {
            return MT_BUFFERS_TORCH;
        }
        if (type_named(t, "pyarrow.lib.Buffer")) {
            return MT_BUFFERS_PROTOCOL;
        }
    }
    /* A memoryview leads the walk to its exporter; a file's mapping is the
     * page cache's, not the process's. */
    if (tp == &PyMemoryView_Type || type_named(tp, "mmap.mmap") || !sizeof_is_objects(tp)) {
        return MT_BUFFERS_NONE;
    }
    if (tp->tp_as_buffer != NULL && tp->tp_as_buffer->bf_getbuffer != NULL) {
        return MT_BUFFERS_PROTOCOL;
    }
    if (defined_in_c(tp, "__array_interface__")) {
        return MT_BUFFERS_ARRAY_INTERFACE;
    }
    if (defined_in_c(tp, "__dlpack__")) {
        return MT_BUFFERS_DLPACK;
    }
    return MT_BUFFERS_NONE;
}

/* A method's integer result, -1 on failure (exception set). */
static long long
call_for_size(PyObject *o, const char *method)
{
    PyObject *r = PyObject_CallMethod(o, method, NULL);
    long long n = r != NULL && PyLong_Check(r) ? PyLong_AsLongLong(r) : -1;
    if (r != NULL && !PyLong_Check(r)) {
        PyErr_Format(PyExc_TypeError, "%s() did not return an int", method);
    }
    Py_XDECREF(r);
    return n;
}

int
mt_buffers_arrow_pool(mt_buffers_pool *out)
{
    MT_ASSERT_GIL();
    PyObject *pool = NULL;
    int rc = -1;
    out->allocated = out->peak = out->handed_out = 0;
    /* sys.modules itself, read twice a cell: PyImport_GetModule also asks
     * the module's spec whether it is still importing (a pool read from a
     * half-imported pyarrow fails, and is not counted either way). */
    PyObject *pyarrow = Py_XNewRef(PyDict_GetItemString(PyImport_GetModuleDict(), "pyarrow"));
    if (pyarrow == NULL || pyarrow == Py_None) {
        rc = 0;
        goto done;
    }
    pool = PyObject_CallMethod(pyarrow, "default_memory_pool", NULL);
    if (pool != NULL && (out->allocated = call_for_size(pool, "bytes_allocated")) >= 0 &&
        (out->peak = call_for_size(pool, "max_memory")) >= 0 &&
        (out->handed_out = call_for_size(pool, "total_bytes_allocated")) >= 0) {
        rc = 1;
    }
done:
    if (rc < 0) {
        PyErr_Clear();
        out->allocated = out->peak = out->handed_out = 0;
    }
    Py_XDECREF(pyarrow);
    Py_XDECREF(pool);
    return rc;
}

long long
mt_buffers_arrow_peak_increment(const mt_buffers_pool *begin, const mt_buffers_pool *end)
{
    if (end->peak > begin->peak) {
        return end->peak - begin->allocated;
    }
    long long growth = end->allocated - begin->allocated;
    return end->handed_out - begin->handed_out == growth ? growth : -1;
}

PyDoc_STRVAR(mt_buffers_py_ranges__doc__,
             "buffer_ranges(obj) -> [(address, bytes), ...]: the memory of obj's buffers as the "
             "walker counts it (Arrow, torch, buffer protocol, __array_interface__, __dlpack__), "
             "sorted, overlaps merged; [] for other objects.");
static PyObject *
mt_buffers_py_ranges(PyObject *Py_UNUSED(module), PyObject *obj)
{
    mt_buffer_ranges r = {0};
    PyObject *list = NULL;
    if (mt_buffers_collect(obj, mt_buffers_kind_of(Py_TYPE(obj)), &r) < 0) {
        goto done;
    }
    list = PyList_New(r.n);
    for (Py_ssize_t i = 0; list != NULL && i < r.n; i++) {
        PyObject *pair =
            Py_BuildValue("(KL)", (unsigned long long)r.items[i].start, r.items[i].bytes);
        if (pair == NULL) {
            Py_CLEAR(list);
            break;
        }
        PyList_SET_ITEM(list, i, pair);
    }
done:
    mt_buffer_ranges_free(&r);
    return list;
}

/* The _core methods of this file; module.c adds them at init. */
PyMethodDef mt_buffers_methods[] = {
    {"buffer_ranges", (PyCFunction)mt_buffers_py_ranges, METH_O, mt_buffers_py_ranges__doc__},
    {NULL, NULL, 0, NULL},
};
