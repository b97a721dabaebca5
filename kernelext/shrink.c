/* shrink: in-place downcast, pack, spill, and the measured window around
 * every %shrink action (shrink.h).  Everything here needs the GIL, except
 * the read-only scans and file writes that say so. */
#include "memtamer/memtamer.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "memtamer/actions.h"
#include "memtamer/checksum.h"
#include "memtamer/frames.h"
#include "memtamer/narrow.h"
#include "memtamer/npy.h"
#include "memtamer/options.h"
#include "memtamer/shrink.h"
#include "memtamer/worker.h"

/* Conversion goes through an L2-sized scratch block; progress every ~64 MiB. */
#define BLOCK_BYTES ((npy_intp)256 << 10)
#define PROGRESS_BYTES ((size_t)64 << 20)
#define WRITE_BYTES ((size_t)64 << 20)
/* A spill's file and its array are compared (and mended) in blocks this
 * big: a multiple of any page size, and small enough that a block's
 * checksum reads it from the cache the comparison brought it into.  Below
 * SHARE_MIN_BYTES a thread's start costs more than it saves. */
#define COMPARE_BYTES ((size_t)256 << 10)
#define SHARE_MIN_BYTES ((size_t)16 << 20)

/* ------------------------------------------------------------------ */
/* The measured window                                                 */
/* ------------------------------------------------------------------ */

/* A %shrink inside a cell resets the high-water mark for its own window:
 * the cell's peak so far is kept in the cell window's floor, and the cell's
 * window is re-armed when the action ends. */
PyDoc_STRVAR(mt_shrink_window_begin__doc__,
             "shrink_window_begin(): start measuring one %shrink action (RSS, exact peak, time).");
static PyObject *
mt_shrink_window_begin(PyObject *module, PyObject *Py_UNUSED(unused))
{
    mt_state *st = mt_get_state(module);
    mt_cell_window *cell = &st->cells.window;
    st->shrink.inside_cell = cell->open;
    if (cell->open) {
        long long peak;
        mt_probe_self now;
        mt_probe_peak_end(st->probe, &peak, &now);
        if (peak > cell->peak_floor) {
            cell->peak_floor = peak;
        }
    }
    st->shrink.started = mt_monotonic_seconds();
    mt_probe_self before;
    st->shrink.rss_before = mt_probe_peak_begin(st->probe, &before);
    st->shrink.open = 1;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(
    mt_shrink_window_end__doc__,
    "shrink_window_end() -> dict: rss_before, rss_after, peak_rss, seconds of the action.");
static PyObject *
mt_shrink_window_end(PyObject *module, PyObject *Py_UNUSED(unused))
{
    mt_state *st = mt_get_state(module);
    mt_cell_window *cell = &st->cells.window;
    long long peak = -1;
    mt_probe_self now;
    if (!st->shrink.open) {
        PyErr_SetString(PyExc_RuntimeError, "shrink_window_end() without shrink_window_begin()");
        return NULL;
    }
    st->shrink.open = 0;
    mt_probe_peak_end(st->probe, &peak, &now);
    double seconds = mt_monotonic_seconds() - st->shrink.started;
    if (st->shrink.inside_cell && cell->open) {
        if (peak > cell->peak_floor) {
            cell->peak_floor = peak;
        }
        mt_probe_self before;
        mt_probe_peak_begin(st->probe, &before);
    }
    return Py_BuildValue("{sNsNsNsd}", "rss_before", mt_size_or_none(st->shrink.rss_before),
                         "rss_after", mt_size_or_none(now.rss), "peak_rss", mt_size_or_none(peak),
                         "seconds", seconds);
}

/* ------------------------------------------------------------------ */
/* When an array may be changed in place                               */
/* ------------------------------------------------------------------ */

typedef struct {
    const char *rule, *message;
} refusal;

#define MAX_REFUSALS 10

/* The conditions numpy's PyArray_Resize puts on resizing in place, plus
 * those our conversion needs.  `others` counts references beyond the one
 * expected (the namespace's).  Returns how many rules failed. */
static int
inplace_refusals(PyObject *obj, Py_ssize_t others, refusal *out)
{
    int n = 0;
    if (others > 0) {
        out[n++] = (refusal){"held", "other references to it exist"};
    }
    if (mt_npy_ready() <= 0 || !PyArray_Check(obj)) {
        PyErr_Clear(); /* numpy failing to load means obj is no array */
        return n;
    }
    PyArrayObject *arr = (PyArrayObject *)obj;
    PyArrayObject_fields *fields = (PyArrayObject_fields *)obj;
    if (!PyArray_CheckExact(obj)) {
        out[n++] = (refusal){"subclass", "it is a subclass of numpy.ndarray (such as np.memmap)"};
    }
    if (PyArray_BASE(arr) != NULL) {
        out[n++] = (refusal){"view", "it is a view: another object (its .base) owns the memory"};
    }
    else if (!PyArray_CHKFLAGS(arr, NPY_ARRAY_OWNDATA)) {
        out[n++] = (refusal){"owndata", "it does not own its data"};
    }
    if (fields->weakreflist != NULL) {
        out[n++] = (refusal){"weakref", "a weak reference to it exists"};
    }
    if (!PyArray_ISWRITEABLE(arr)) {
        out[n++] = (refusal){"readonly", "it is read-only"};
    }
    if (!PyArray_ISALIGNED(arr)) {
        out[n++] = (refusal){"aligned", "its data is not aligned"};
    }
    if (!PyArray_IS_C_CONTIGUOUS(arr) && !PyArray_IS_F_CONTIGUOUS(arr)) {
        out[n++] = (refusal){"contiguous", "it is not contiguous"};
    }
    if (!PyArray_ISNOTSWAPPED(arr)) {
        out[n++] = (refusal){"byteorder", "its data is not in native byte order"};
    }
    if (PyDataType_REFCHK(PyArray_DESCR(arr))) {
        out[n++] = (refusal){"objects", "its dtype holds Python objects"};
    }
    return n;
}

static PyObject *
refusal_list(const refusal *r, int n)
{
    PyObject *list = PyList_New(n);
    for (int i = 0; list && i < n; i++) {
        PyObject *pair = Py_BuildValue("(ss)", r[i].rule, r[i].message);
        if (pair == NULL) {
            Py_CLEAR(list);
            break;
        }
        PyList_SET_ITEM(list, i, pair);
    }
    return list;
}

/* The value bound to name in ns, borrowed; KeyError naming it if absent. */
static PyObject *
lookup(PyObject *ns, PyObject *name)
{
    if (!PyDict_Check(ns) || !PyUnicode_Check(name)) {
        PyErr_SetString(PyExc_TypeError, "expected a namespace dict and a name");
        return NULL;
    }
    PyObject *obj = PyDict_GetItemWithError(ns, name);
    if (obj == NULL && !PyErr_Occurred()) {
        PyErr_Format(PyExc_KeyError, "no variable named '%U'", name);
    }
    return obj;
}

static int
numpy_needed(void)
{
    int ready = mt_npy_ready();
    if (ready == 0) {
        PyErr_SetString(PyExc_TypeError, "numpy is not imported, so this is not a numpy array");
    }
    return ready > 0 ? 0 : -1;
}

PyDoc_STRVAR(mt_shrink_inplace_check__doc__,
             "inplace_check(ns, name) -> [(rule, message)]: why ns[name] cannot be changed or "
             "freed in place ([] when it can).");
static PyObject *
mt_shrink_inplace_check(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    refusal r[MAX_REFUSALS];
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "inplace_check(ns, name)");
        return NULL;
    }
    PyObject *obj = lookup(args[0], args[1]);
    if (obj == NULL) {
        return NULL;
    }
    /* Borrowed: the namespace's reference is the only one expected. */
    Py_ssize_t others = Py_REFCNT(obj) - 1;
    return refusal_list(r, inplace_refusals(obj, others, r));
}

/* ------------------------------------------------------------------ */
/* Planning a downcast: which type, and is it exact enough             */
/* ------------------------------------------------------------------ */

typedef struct {
    int target;        /* NPY type number, or -1 when refused */
    char reason[240];  /* why refused */
    char warning[160]; /* what the asked-for narrowing changes, or "" */
    double max_rel_error;
    long long overflow;
    int have_range;
    long long smin;
    unsigned long long umax;
} plan;

/* Which elements of a 1-D contiguous array count: bit offset + i of an
 * Arrow validity bitmap (least significant bit first) says whether element
 * i does; bits NULL: all of them.  Arrow leaves any value under a null. */
typedef struct {
    const uint8_t *bits;
    int64_t offset;
} validity;

static const validity ALL_VALID = {NULL, 0};

static int
bit_set(const validity *v, npy_intp i)
{
    int64_t bit = v->offset + i;
    return v->bits[bit >> 3] >> (bit & 7) & 1;
}

/* The index of the first element from i on whose bit is `set` (n when
 * none), whole bytes at a time where the bits allow. */
static npy_intp
next_with_bit(const validity *v, npy_intp i, npy_intp n, int set)
{
    const uint8_t other = set ? 0x00 : 0xFF;
    while (i < n) {
        int64_t bit = v->offset + i;
        if ((bit & 7) == 0 && i + 8 <= n && v->bits[bit >> 3] == other) {
            i += 8;
        }
        else if (bit_set(v, i) == set) {
            return i;
        }
        else {
            i++;
        }
    }
    return n;
}

/* Runs fn over every inner loop of arr (read-only, memory order), or over
 * each run of valid elements when a bitmap says which count.  The GIL
 * stays held: a thread writing the array during the scan could otherwise
 * put in a value the plan never saw, and the conversion would lose it. */
typedef void (*scan_fn)(const char *p, npy_intp stride, npy_intp n, void *acc);

static int
scan(PyArrayObject *arr, const validity *valid, scan_fn fn, void *acc)
{
    if (PyArray_SIZE(arr) == 0) {
        return 0;
    }
    if (valid->bits != NULL) {
        const char *data = PyArray_BYTES(arr);
        npy_intp n = PyArray_SIZE(arr), size = PyArray_ITEMSIZE(arr);
        for (npy_intp i = next_with_bit(valid, 0, n, 1); i < n;) {
            npy_intp end = next_with_bit(valid, i, n, 0);
            fn(data + i * size, size, end - i, acc);
            i = next_with_bit(valid, end, n, 1);
        }
        return 0;
    }
    NpyIter *it = NpyIter_New(arr, NPY_ITER_READONLY | NPY_ITER_EXTERNAL_LOOP, NPY_KEEPORDER,
                              NPY_NO_CASTING, NULL);
    if (it == NULL) {
        return -1;
    }
    NpyIter_IterNextFunc *next = NpyIter_GetIterNext(it, NULL);
    if (next == NULL) {
        NpyIter_Deallocate(it);
        return -1;
    }
    char **data = NpyIter_GetDataPtrArray(it);
    npy_intp *stride = NpyIter_GetInnerStrideArray(it);
    npy_intp *size = NpyIter_GetInnerLoopSizePtr(it);
    do {
        fn(data[0], stride[0], *size, acc);
    } while (next(it));
    NpyIter_Deallocate(it);
    return 0;
}

typedef void (*rounding_fn)(const char *p, ptrdiff_t stride, ptrdiff_t n, mt_narrow_rounding *r);

typedef struct {
    rounding_fn rounding; /* the loop for one (source, target) pair */
    int components;       /* 2 for complex numbers */
    npy_intp component_size;
    mt_narrow_rounding r;
} float_acc;

static void
float_scan(const char *p, npy_intp stride, npy_intp n, void *arg)
{
    float_acc *a = arg;
    for (int c = 0; c < a->components; c++) {
        a->rounding(p + c * a->component_size, stride, n, &a->r);
    }
}

/* float64 (or complex128: pairs of doubles with one rule for both) to
 * float32 by the vector loop where the values lie densely. */
static void
dense_double_scan(const char *p, npy_intp stride, npy_intp n, void *arg)
{
    float_acc *a = arg;
    if (stride != a->components * a->component_size || ((uintptr_t)p & 7) != 0) {
        float_scan(p, stride, n, arg);
        return;
    }
    mt_narrow_scan_f64_f32((const double *)p, (size_t)n * (size_t)a->components, &a->r);
}

typedef struct {
    int started;
    long long smin, smax;
    unsigned long long umax;
} int_acc;

#define INT_SCAN(name, ctype, field_min, field_max)                                                \
    static void name(const char *p, npy_intp stride, npy_intp n, void *arg)                        \
    {                                                                                              \
        int_acc *a = arg;                                                                          \
        if (n == 0) {                                                                              \
            return;                                                                                \
        }                                                                                          \
        ctype lo = *(const ctype *)p, hi = lo;                                                     \
        if (a->started) {                                                                          \
            lo = (ctype)a->field_min;                                                              \
            hi = (ctype)a->field_max;                                                              \
        }                                                                                          \
        for (npy_intp i = 0; i < n; i++, p += stride) {                                            \
            ctype v = *(const ctype *)p;                                                           \
            lo = v < lo ? v : lo;                                                                  \
            hi = v > hi ? v : hi;                                                                  \
        }                                                                                          \
        a->field_min = (long long)lo;                                                              \
        a->field_max = hi;                                                                         \
        a->started = 1;                                                                            \
    }

/* Unsigned scans keep their minimum in smin's bits. */
INT_SCAN(scan_i8, npy_int8, smin, smax)
INT_SCAN(scan_i16, npy_int16, smin, smax)
INT_SCAN(scan_i32, npy_int32, smin, smax)
INT_SCAN(scan_i64, npy_int64, smin, smax)
INT_SCAN(scan_u8, npy_uint8, smin, umax)
INT_SCAN(scan_u16, npy_uint16, smin, umax)
INT_SCAN(scan_u32, npy_uint32, smin, umax)
INT_SCAN(scan_u64, npy_uint64, smin, umax)

static scan_fn
int_scanner(int type)
{
    switch (type) {
    case NPY_INT8:
        return scan_i8;
    case NPY_INT16:
        return scan_i16;
    case NPY_INT32:
        return scan_i32;
    case NPY_INT64:
        return scan_i64;
    case NPY_UINT8:
        return scan_u8;
    case NPY_UINT16:
        return scan_u16;
    case NPY_UINT32:
        return scan_u32;
    case NPY_UINT64:
        return scan_u64;
    default:
        return NULL;
    }
}

/* The numpy type `to` names ("auto" gives -1); -2 with a ValueError saying
 * what to write instead. */
static int
parse_target(const char *to)
{
    if (!mt_options_target_ok(to)) {
        char problem[MT_OPTIONS_PROBLEM_MAX];
        mt_options_target_problem(to, problem, sizeof problem);
        PyErr_Format(PyExc_ValueError, "--to: %s", problem);
        return -2;
    }
    if (strcmp(to, "auto") == 0) {
        return -1;
    }
    PyArray_Descr *descr = NULL;
    PyObject *name = PyUnicode_FromString(to);
    int ok = name != NULL && PyArray_DescrConverter(name, &descr);
    Py_XDECREF(name);
    int type = ok ? descr->type_num : -2;
    Py_XDECREF(descr);
    return type;
}

static int
type_size(int type)
{
    PyArray_Descr *d = PyArray_DescrFromType(type);
    int size = d ? (int)PyDataType_ELSIZE(d) : 0;
    Py_XDECREF(d);
    return size;
}

/* numpy's name of a built-in type ("int16"), static storage. */
static const char *
type_name(int type)
{
    PyArray_Descr *d = PyArray_DescrFromType(type);
    const char *name = d ? d->typeobj->tp_name : "?";
    Py_XDECREF(d);
    return strncmp(name, "numpy.", 6) == 0 ? name + 6 : name;
}

/* What ordinary code computes differently once values are of `type`,
 * which the user asked for: a warning for the result. */
static void
narrowing_warning(int type, char *out, size_t size)
{
    if (type == NPY_BOOL) {
        PyOS_snprintf(
            out, size,
            "bool arithmetic is logical: a + a is a logical or, and a[0] = 5 stores True");
    }
    else if (type == NPY_FLOAT16) {
        PyOS_snprintf(out, size,
                      "float16 holds at most 65504 with 3 significant digits: sums may "
                      "overflow to inf or lose precision");
    }
    else if (PyTypeNum_ISINTEGER(type)) {
        PyOS_snprintf(out, size,
                      "arithmetic on %s may overflow and wrap around silently; use "
                      "a.astype(np.int64) before such sums",
                      type_name(type));
    }
}

static int
holds(int type, long long lo, unsigned long long hi_u)
{
    switch (type) {
    case NPY_BOOL:
        return lo >= 0 && hi_u <= 1;
    case NPY_INT8:
        return lo >= -128 && hi_u <= 127;
    case NPY_INT16:
        return lo >= -32768 && hi_u <= 32767;
    case NPY_INT32:
        return lo >= -2147483648LL && hi_u <= 2147483647ULL;
    case NPY_INT64:
        return hi_u <= 9223372036854775807ULL;
    case NPY_UINT8:
        return lo >= 0 && hi_u <= 255;
    case NPY_UINT16:
        return lo >= 0 && hi_u <= 65535;
    case NPY_UINT32:
        return lo >= 0 && hi_u <= 4294967295ULL;
    case NPY_UINT64:
        return lo >= 0;
    default:
        return 0;
    }
}

/* Smallest integer type of the same signedness holding lo..hi (never bool:
 * 0/1 counts are not truth values, and bool arrays add as logical or). */
static int
smallest_int(int is_signed, long long lo, unsigned long long hi)
{
    static const int signed_types[] = {NPY_INT8, NPY_INT16, NPY_INT32, NPY_INT64};
    static const int unsigned_types[] = {NPY_UINT8, NPY_UINT16, NPY_UINT32, NPY_UINT64};
    const int *types = is_signed ? signed_types : unsigned_types;
    for (int i = 0; i < 4; i++) {
        if (holds(types[i], lo, hi)) {
            return types[i];
        }
    }
    return is_signed ? NPY_INT64 : NPY_UINT64;
}

/* 1 when arr's values are float64 or complex128 lying densely and aligned
 * in one buffer, in native order: the form the fast loops take. */
static int
dense_doubles(PyArrayObject *arr)
{
    int type = PyArray_TYPE(arr);
    return (type == NPY_FLOAT64 || type == NPY_COMPLEX128) && PyArray_ISALIGNED(arr) &&
           PyArray_ISNOTSWAPPED(arr) &&
           (PyArray_IS_C_CONTIGUOUS(arr) || PyArray_IS_F_CONTIGUOUS(arr));
}

static int
plan_float(PyArrayObject *arr, const validity *valid, int to, double rtol, plan *out)
{
    int src = PyArray_TYPE(arr);
    int is_complex = PyTypeNum_ISCOMPLEX(src);
    int src_double = src == NPY_FLOAT64 || src == NPY_COMPLEX128;
    int target;
    if (to == -1 || to == NPY_FLOAT32) {
        target = is_complex ? NPY_COMPLEX64 : NPY_FLOAT32;
    }
    else if (to == NPY_FLOAT16 && !is_complex) {
        target = NPY_FLOAT16;
    }
    else {
        PyErr_Format(PyExc_ValueError, "--to %s does not apply to %s data: use float32%s",
                     to == NPY_FLOAT16 ? "float16" : "an integer type",
                     is_complex ? "complex" : "float", is_complex ? "" : " or float16");
        return -1;
    }
    if (type_size(target) >= PyArray_ITEMSIZE(arr)) {
        PyOS_snprintf(out->reason, sizeof out->reason,
                      "it is already %s; nothing smaller was asked for (try --to float16)",
                      type_name(src));
        return 0;
    }
    float_acc acc = {target == NPY_FLOAT16
                         ? (src_double ? mt_narrow_rounding_f64_f16 : mt_narrow_rounding_f32_f16)
                         : mt_narrow_rounding_f64_f32,
                     is_complex ? 2 : 1,
                     src_double ? 8 : 4,
                     {0.0, 0}};
    scan_fn fn = dense_doubles(arr) && target != NPY_FLOAT16 ? dense_double_scan : float_scan;
    if (scan(arr, valid, fn, &acc) < 0) {
        return -1;
    }
    out->max_rel_error = acc.r.max_err;
    out->overflow = acc.r.overflow;
    const char *name = target == NPY_FLOAT16 ? "float16" : "float32";
    if (acc.r.overflow) {
        PyOS_snprintf(out->reason, sizeof out->reason,
                      "%lld finite value%s would overflow to inf in %s", acc.r.overflow,
                      acc.r.overflow == 1 ? "" : "s", name);
    }
    else if (acc.r.max_err > rtol) {
        PyOS_snprintf(out->reason, sizeof out->reason,
                      "the largest relative error in %s would be %.3g, over --rtol %g", name,
                      acc.r.max_err, rtol);
    }
    else {
        narrowing_warning(target, out->warning, sizeof out->warning);
        out->target = target;
    }
    return 0;
}

static int
plan_int(PyArrayObject *arr, const validity *valid, int to, int narrow, plan *out)
{
    int src = PyArray_TYPE(arr);
    int is_signed = PyTypeNum_ISSIGNED(src);
    if (to == NPY_FLOAT32 || to == NPY_FLOAT16) {
        PyErr_SetString(PyExc_ValueError,
                        "--to float32/float16 applies to float data; integers go to the "
                        "smallest integer type (--narrow) or the one you name");
        return -1;
    }
    int_acc acc = {0, 0, 0, 0};
    if (scan(arr, valid, int_scanner(src), &acc) < 0) {
        return -1;
    }
    long long lo;
    unsigned long long hi;
    if (!acc.started) { /* no element, or only nulls */
        lo = 0;
        hi = 0;
    }
    else if (is_signed) {
        lo = acc.smin;
        hi = acc.smax < 0 ? 0 : (unsigned long long)acc.smax;
    }
    else {
        /* The unsigned scans keep their minimum in smin's bits. */
        unsigned long long umin = (unsigned long long)acc.smin;
        lo = umin > (unsigned long long)LLONG_MAX ? LLONG_MAX : (long long)umin;
        hi = acc.umax;
    }
    out->have_range = acc.started;
    out->smin = is_signed ? acc.smin : lo;
    out->umax = is_signed ? (unsigned long long)acc.smax : hi;
    int target = to == -1 ? smallest_int(is_signed, lo, hi) : to;
    if (!holds(target, lo, hi)) {
        PyOS_snprintf(out->reason, sizeof out->reason,
                      "its values span %lld..%llu, which %s cannot hold", lo, hi,
                      type_name(target));
        return 0;
    }
    if (type_size(target) >= PyArray_ITEMSIZE(arr)) {
        PyOS_snprintf(out->reason, sizeof out->reason,
                      "it is already the smallest integer type holding its values (%lld..%llu)", lo,
                      hi);
        return 0;
    }
    if (to == -1 && !narrow) {
        /* Narrower integers change what later sums compute: only on request. */
        PyOS_snprintf(out->reason, sizeof out->reason,
                      "integers keep their type unless you ask: --narrow would make it %s "
                      "(values %lld..%llu), where arithmetic may overflow",
                      type_name(target), lo, hi);
        return 0;
    }
    narrowing_warning(target, out->warning, sizeof out->warning);
    out->target = target;
    return 0;
}

/* -1 with ValueError when rtol is not a tolerance. */
static int
check_rtol(double rtol)
{
    if (mt_options_rtol_ok(rtol)) {
        return 0;
    }
    char text[40], problem[MT_OPTIONS_PROBLEM_MAX];
    snprintf(text, sizeof text, "%g", rtol);
    mt_options_rtol_problem(text, problem, sizeof problem);
    PyErr_Format(PyExc_ValueError, "--rtol: %s", problem);
    return -1;
}

static int
plan_for(PyArrayObject *arr, const validity *valid, const char *to_name, double rtol, int narrow,
         plan *out)
{
    memset(out, 0, sizeof *out);
    out->target = -1;
    int to = parse_target(to_name);
    if (to == -2) {
        return -1;
    }
    if (check_rtol(rtol) < 0) {
        return -1;
    }
    int src = PyArray_TYPE(arr);
    if (!PyArray_ISNOTSWAPPED(arr)) {
        PyErr_SetString(PyExc_TypeError, "its data is not in native byte order; convert it with "
                                         "a.astype(a.dtype.newbyteorder('=')) first");
        return -1;
    }
    if (src == NPY_FLOAT64 || src == NPY_FLOAT32 || src == NPY_COMPLEX128 || src == NPY_COMPLEX64) {
        return plan_float(arr, valid, to, rtol, out);
    }
    if (src == NPY_FLOAT16) {
        PyOS_snprintf(out->reason, sizeof out->reason, "it is already float16");
        return 0;
    }
    if (int_scanner(src) != NULL) {
        return plan_int(arr, valid, to, narrow, out);
    }
    if (src == NPY_BOOL) {
        PyOS_snprintf(out->reason, sizeof out->reason, "it is already bool");
        return 0;
    }
    PyErr_Format(PyExc_TypeError,
                 "downcast handles float, complex and integer arrays; dtype %R is not one",
                 (PyObject *)PyArray_DESCR(arr));
    return -1;
}

static PyObject *
dtype_name(int type)
{
    PyArray_Descr *d = PyArray_DescrFromType(type);
    PyObject *s = d ? PyObject_Str((PyObject *)d) : NULL;
    Py_XDECREF(d);
    return s;
}

static PyObject *
plan_dict(const plan *p)
{
    PyObject *d = PyDict_New();
    if (d == NULL ||
        mt_set(d, "target", p->target >= 0 ? dtype_name(p->target) : Py_NewRef(Py_None)) < 0 ||
        mt_set(d, "reason", p->target >= 0 ? Py_NewRef(Py_None) : PyUnicode_FromString(p->reason)) <
            0 ||
        mt_set(d, "max_rel_error", PyFloat_FromDouble(p->max_rel_error)) < 0 ||
        mt_set(d, "warning",
               p->warning[0] ? PyUnicode_FromString(p->warning) : Py_NewRef(Py_None)) < 0) {
        Py_XDECREF(d);
        return NULL;
    }
    return d;
}

static int
parse_plan_args(PyObject *arr, const validity *valid, const char *to, double rtol, int narrow,
                plan *p)
{
    if (numpy_needed() < 0) {
        return -1;
    }
    if (!PyArray_Check(arr)) {
        PyErr_Format(PyExc_TypeError, "downcast takes numpy arrays and pandas objects, not %s",
                     Py_TYPE(arr)->tp_name);
        return -1;
    }
    return plan_for((PyArrayObject *)arr, valid, to, rtol, narrow, p);
}

/* The validity bitmap `bits` (a buffer) with its bit offset, checked to
 * cover the elements of arr, a 1-D contiguous array. */
static int
parse_validity(PyObject *arr, Py_buffer *bits, long long offset, validity *out)
{
    if (!PyArray_Check(arr) || PyArray_NDIM((PyArrayObject *)arr) != 1 ||
        !PyArray_IS_C_CONTIGUOUS((PyArrayObject *)arr)) {
        PyErr_SetString(PyExc_ValueError, "valid= needs a one-dimensional contiguous array");
        return -1;
    }
    npy_intp n = PyArray_SIZE((PyArrayObject *)arr);
    if (offset < 0 || offset > (long long)bits->len * 8 - n) {
        PyErr_Format(PyExc_ValueError,
                     "the validity bitmap has %zd bytes: too few for %zd elements from bit %lld",
                     bits->len, (Py_ssize_t)n, offset);
        return -1;
    }
    out->bits = bits->buf;
    out->offset = offset;
    return 0;
}

PyDoc_STRVAR(mt_shrink_plan__doc__,
             "downcast_plan(array, to='auto', rtol=1e-3, narrow=False, valid=None, "
             "valid_offset=0) -> {target, reason, max_rel_error, warning}; valid: an Arrow "
             "validity bitmap (a buffer) whose bit valid_offset + i says whether element i of the "
             "one-dimensional array counts (the values under Arrow's nulls are any).");
static PyObject *
mt_shrink_plan(PyObject *Py_UNUSED(module), PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"array", "to", "rtol", "narrow", "valid", "valid_offset", NULL};
    PyObject *arr, *valid_obj = Py_None, *result = NULL;
    const char *to = "auto";
    double rtol = MT_DEFAULT_RTOL;
    int narrow = 0;
    long long offset = 0;
    Py_buffer bits = {0};
    validity valid = ALL_VALID;
    plan p;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|sdpOL:downcast_plan", kwlist, &arr, &to,
                                     &rtol, &narrow, &valid_obj, &offset)) {
        return NULL;
    }
    if (valid_obj != Py_None && (PyObject_GetBuffer(valid_obj, &bits, PyBUF_SIMPLE) < 0 ||
                                 parse_validity(arr, &bits, offset, &valid) < 0)) {
        goto done;
    }
    if (parse_plan_args(arr, &valid, to, rtol, narrow, &p) == 0) {
        result = plan_dict(&p);
    }
done:
    if (bits.obj != NULL) {
        PyBuffer_Release(&bits);
    }
    return result;
}

PyDoc_STRVAR(mt_shrink_options__doc__,
             "shrink_options(codec=None, level=None, rtol=None) -> {codec, level, rtol}: the "
             "options %shrink and the rules share, checked, with the defaults where None; "
             "ValueError says what to write instead.");
static PyObject *
mt_shrink_options(PyObject *Py_UNUSED(module), PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"codec", "level", "rtol", NULL};
    PyObject *codec = Py_None, *level = Py_None, *rtol = Py_None;
    mt_settings how;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|OOO:shrink_options", kwlist, &codec, &level,
                                     &rtol) ||
        mt_frames_parse_settings(codec, level, NULL, NULL, &how) < 0) {
        return NULL;
    }
    double tolerance = rtol == Py_None ? MT_DEFAULT_RTOL : PyFloat_AsDouble(rtol);
    if (tolerance == -1.0 && PyErr_Occurred()) {
        return NULL;
    }
    if (check_rtol(tolerance) < 0) {
        return NULL;
    }
    return Py_BuildValue("{sNsisd}", "codec",
                         codec == Py_None ? PyUnicode_FromString(MT_DEFAULT_CODEC)
                                          : Py_NewRef(codec),
                         "level", how.level, "rtol", tolerance);
}

/* {name: {shrink, rules, switch}} of the options actions take. */
static PyObject *
option_table(void)
{
    PyObject *options = PyDict_New();
    if (options == NULL) {
        return NULL;
    }
    for (int o = 0; o < MT_OPTION_COUNT; o++) {
        const mt_action_option_info *info = &mt_actions_options[o];
        if (mt_set(options, info->name,
                   Py_BuildValue("{sNsNsN}", "shrink",
                                 PyBool_FromLong(info->where & MT_ACTION_IN_SHRINK), "rules",
                                 PyBool_FromLong(info->where & MT_ACTION_IN_RULES), "switch",
                                 PyBool_FromLong(info->is_switch))) < 0) {
            Py_DECREF(options);
            return NULL;
        }
    }
    return options;
}

/* The names of the options action takes, as a tuple. */
static PyObject *
action_options(const mt_action_info *action)
{
    PyObject *names = PyList_New(0);
    PyObject *result = NULL;
    if (names == NULL) {
        return NULL;
    }
    for (int o = 0; o < MT_OPTION_COUNT; o++) {
        if (action->options & MT_OPTION_BIT(o)) {
            PyObject *name = PyUnicode_FromString(mt_actions_options[o].name);
            if (name == NULL || PyList_Append(names, name) < 0) {
                Py_XDECREF(name);
                goto done;
            }
            Py_DECREF(name);
        }
    }
    result = PyList_AsTuple(names);
done:
    Py_DECREF(names);
    return result;
}

PyDoc_STRVAR(mt_shrink_actions__doc__,
             "shrink_actions() -> {actions: {name: {shrink, rules, options, on_variables, past, "
             "help}}, options: {name: {shrink, rules, switch}}}: the actions of %shrink (shrink) "
             "and of a rule's do: (rules), in their order, with the options each takes, the word "
             "for what it did and a line of help; the one list of them (kernelext/actions.c).");
static PyObject *
mt_shrink_actions(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(unused))
{
    PyObject *actions = PyDict_New();
    PyObject *result = NULL;
    if (actions == NULL) {
        return NULL;
    }
    for (int a = 0; a < MT_DO_COUNT; a++) {
        const mt_action_info *info = &mt_actions[a];
        if (mt_set(actions, info->name,
                   Py_BuildValue("{sNsNsNsNssssss}", "shrink",
                                 PyBool_FromLong(info->where & MT_ACTION_IN_SHRINK), "rules",
                                 PyBool_FromLong(info->where & MT_ACTION_IN_RULES), "options",
                                 action_options(info), "on_variables",
                                 PyBool_FromLong(info->on_variables), "verb", info->verb, "past",
                                 info->past, "help", info->help)) < 0) {
            goto done;
        }
    }
    result = Py_BuildValue("{sOsN}", "actions", actions, "options", option_table());
done:
    Py_DECREF(actions);
    return result;
}

/* ------------------------------------------------------------------ */
/* Converting, atomically for Python code                              */
/* ------------------------------------------------------------------ */

/* One strided loop per (source, target) pair.  Our own loops, not numpy's
 * cast: numpy releases the GIL inside a cast, and a thread reading or
 * writing the array then would see it half converted.  Elements go through
 * memcpy, so unaligned data and overlapping blocks are read correctly; the
 * planner has checked that every value fits the target. */
typedef void (*convert_fn)(const char *src, npy_intp src_stride, char *dst, npy_intp dst_stride,
                           npy_intp n);

#define CONVERT_LOOP(from_t, from_tag, from_num, to_t, to_tag, to_num)                             \
    static void convert_##from_tag##_##to_tag(const char *src, npy_intp src_stride, char *dst,     \
                                              npy_intp dst_stride, npy_intp n)                     \
    {                                                                                              \
        if (src_stride == sizeof(from_t) && dst_stride == sizeof(to_t)) {                          \
            /* Dense: a form the compiler vectorizes. */                                           \
            for (npy_intp i = 0; i < n; i++) {                                                     \
                from_t x;                                                                          \
                memcpy(&x, src + i * (npy_intp)sizeof x, sizeof x);                                \
                to_t y = (to_t)x;                                                                  \
                memcpy(dst + i * (npy_intp)sizeof y, &y, sizeof y);                                \
            }                                                                                      \
            return;                                                                                \
        }                                                                                          \
        for (npy_intp i = 0; i < n; i++, src += src_stride, dst += dst_stride) {                   \
            from_t x;                                                                              \
            memcpy(&x, src, sizeof x);                                                             \
            to_t y = (to_t)x;                                                                      \
            memcpy(dst, &y, sizeof y);                                                             \
        }                                                                                          \
    }

/* X(C type, tag, NPY type number, target...) for every integer source, and
 * X(C type, tag, NPY type number) for every integer target. */
/* Two types a line (clang-format would indent each further). */
/* clang-format off */
#define INT_SOURCES(X, ...)                                                                 \
    X(npy_int8, i8, NPY_INT8, __VA_ARGS__) X(npy_int16, i16, NPY_INT16, __VA_ARGS__)         \
    X(npy_int32, i32, NPY_INT32, __VA_ARGS__) X(npy_int64, i64, NPY_INT64, __VA_ARGS__)      \
    X(npy_uint8, u8, NPY_UINT8, __VA_ARGS__) X(npy_uint16, u16, NPY_UINT16, __VA_ARGS__)     \
    X(npy_uint32, u32, NPY_UINT32, __VA_ARGS__) X(npy_uint64, u64, NPY_UINT64, __VA_ARGS__)
#define INT_TARGETS(X)                                                                      \
    X(npy_bool, b, NPY_BOOL) X(npy_int8, i8, NPY_INT8) X(npy_int16, i16, NPY_INT16)         \
    X(npy_int32, i32, NPY_INT32) X(npy_uint8, u8, NPY_UINT8) X(npy_uint16, u16, NPY_UINT16) \
    X(npy_uint32, u32, NPY_UINT32)
/* clang-format on */

#define INT_LOOPS_TO(to_t, to_tag, to_num) INT_SOURCES(CONVERT_LOOP, to_t, to_tag, to_num)
INT_TARGETS(INT_LOOPS_TO)
CONVERT_LOOP(double, f64, NPY_FLOAT64, float, f32, NPY_FLOAT32)
CONVERT_LOOP(double, f64, NPY_FLOAT64, _Float16, f16, NPY_FLOAT16)
CONVERT_LOOP(float, f32, NPY_FLOAT32, _Float16, f16, NPY_FLOAT16)

/* The loop converting `from` to `to`, and how many components each
 * element has (complex numbers convert as two floats); NULL if none. */
static convert_fn
converter(int from, int to, npy_intp *components)
{
    static const struct {
        int from, to;
        convert_fn fn;
    } loops[] = {
#define LOOP_ENTRY(from_t, from_tag, from_num, to_t, to_tag, to_num)                               \
    {from_num, to_num, convert_##from_tag##_##to_tag},
#define INT_ENTRIES_TO(to_t, to_tag, to_num) INT_SOURCES(LOOP_ENTRY, to_t, to_tag, to_num)
        INT_TARGETS(INT_ENTRIES_TO) LOOP_ENTRY(double, f64, NPY_FLOAT64, float, f32, NPY_FLOAT32)
            LOOP_ENTRY(double, f64, NPY_FLOAT64, _Float16, f16, NPY_FLOAT16)
                LOOP_ENTRY(float, f32, NPY_FLOAT32, _Float16, f16, NPY_FLOAT16)
#undef INT_ENTRIES_TO
#undef LOOP_ENTRY
    };
    *components = 1;
    if (from == NPY_COMPLEX128 && to == NPY_COMPLEX64) {
        *components = 2;
        return convert_f64_f32;
    }
    for (size_t i = 0; i < sizeof loops / sizeof loops[0]; i++) {
        if (loops[i].from == from && loops[i].to == to) {
            return loops[i].fn;
        }
    }
    return NULL;
}

/* Converts elements of one type to another, complex numbers per component. */
static void
convert_elements(convert_fn fn, npy_intp components, npy_intp from_size, npy_intp to_size,
                 const char *src, npy_intp src_stride, char *dst, npy_intp dst_stride, npy_intp n)
{
    for (npy_intp c = 0; c < components; c++) {
        fn(src + c * (from_size / components), src_stride, dst + c * (to_size / components),
           dst_stride, n);
    }
}

/* Converts arr's elements, in memory order, to `to` within the same buffer,
 * front to back through a small scratch block (doubles to floats through
 * narrow.c's loops): an element's new place never lies beyond its old one,
 * and each block is read whole before it is written.  Needs the GIL, and
 * keeps it: no Python code runs (no callback, no signal handler), so no
 * other thread sees the array half converted.
 * Once converting has begun it cannot fail. */
static int
convert_in_place(PyArrayObject *arr, PyArray_Descr *to, convert_fn fn, npy_intp components)
{
    MT_ASSERT_GIL();
    PyArrayObject_fields *fa = (PyArrayObject_fields *)arr;
    npy_intp old_size = PyArray_ITEMSIZE(arr), new_size = PyDataType_ELSIZE(to);
    npy_intp count = PyArray_SIZE(arr);
    npy_intp block = BLOCK_BYTES / old_size;
    size_t new_nbytes;
    if (__builtin_mul_overflow((size_t)count, (size_t)new_size, &new_nbytes)) {
        PyErr_SetString(PyExc_OverflowError, "array size overflows");
        return -1;
    }
    char *data = PyArray_BYTES(arr);
    if (fn == convert_f64_f32) {
        /* What in place requires (aligned, contiguous, native) is what the
         * fast loops take; complex numbers are pairs of doubles. */
        assert(dense_doubles(arr));
        mt_narrow_f64_to_f32_in_place(data, (size_t)count * (size_t)components);
    }
    else {
        char *scratch = PyMem_RawMalloc((size_t)(block * new_size));
        if (scratch == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        for (npy_intp start = 0; start < count; start += block) {
            npy_intp n = count - start < block ? count - start : block;
            convert_elements(fn, components, old_size, new_size, data + start * old_size, old_size,
                             scratch, new_size, n);
            memcpy(data + start * new_size, scratch, (size_t)(n * new_size));
        }
        PyMem_RawFree(scratch);
    }

    /* Give the tail back through the array's own allocator. */
    PyDataMem_Handler *handler = PyCapsule_GetPointer(PyArray_HANDLER(arr), "mem_handler");
    if (handler == NULL) {
        PyErr_Clear(); /* keeps the larger block; numpy frees it all the same */
    }
    else if (count > 0) {
        void *smaller =
            handler->allocator.realloc(handler->allocator.ctx, data, new_nbytes ? new_nbytes : 1);
        if (smaller != NULL) {
            fa->data = smaller;
        }
    }
    Py_INCREF(to);
    Py_SETREF(fa->descr, to);
    /* Fresh strides for the same memory order; size-1 axes may have had
     * arbitrary ones. */
    int nd = PyArray_NDIM(arr);
    int fortran = PyArray_IS_F_CONTIGUOUS(arr) && !PyArray_IS_C_CONTIGUOUS(arr);
    npy_intp stride = new_size;
    for (int k = 0; k < nd; k++) {
        int axis = fortran ? k : nd - 1 - k;
        fa->strides[axis] = stride;
        stride *= fa->dimensions[axis] ? fa->dimensions[axis] : 1;
    }
    PyArray_UpdateFlags(arr, NPY_ARRAY_UPDATE_ALL);
    return 0;
}

static PyObject *
result_dict(const char *status, PyArrayObject *arr, int target, const plan *p, const char *reason,
            PyObject *refusals, int in_place, Py_ssize_t bytes_after)
{
    PyObject *d = PyDict_New();
    if (d == NULL || mt_set(d, "status", PyUnicode_FromString(status)) < 0 ||
        mt_set(d, "dtype_before", PyObject_Str((PyObject *)PyArray_DESCR(arr))) < 0 ||
        mt_set(d, "dtype_after", target >= 0 ? dtype_name(target) : Py_NewRef(Py_None)) < 0 ||
        mt_set(d, "bytes_before", PyLong_FromSsize_t(PyArray_NBYTES(arr))) < 0 ||
        mt_set(d, "bytes_after", PyLong_FromSsize_t(bytes_after)) < 0 ||
        mt_set(d, "in_place", PyBool_FromLong(in_place)) < 0 ||
        mt_set(d, "reason", reason ? PyUnicode_FromString(reason) : Py_NewRef(Py_None)) < 0 ||
        mt_set(d, "refusals", Py_NewRef(refusals)) < 0 ||
        mt_set(d, "max_rel_error", PyFloat_FromDouble(p->max_rel_error)) < 0 ||
        mt_set(d, "warning",
               p->warning[0] ? PyUnicode_FromString(p->warning) : Py_NewRef(Py_None)) < 0) {
        Py_XDECREF(d);
        return NULL;
    }
    return d;
}

/* A new array like arr (same shape and memory order) with arr's values
 * converted to `to`, by the same loops as in place: the GIL stays held, so
 * no write to arr made during the copy is missed. */
static PyArrayObject *
converted_copy(PyArrayObject *arr, PyArray_Descr *to, convert_fn fn, npy_intp components)
{
    MT_ASSERT_GIL();
    NpyIter *it = NULL;
    Py_INCREF(to); /* stolen */
    PyArrayObject *out = (PyArrayObject *)PyArray_NewLikeArray(arr, NPY_KEEPORDER, to, 0);
    if (out == NULL || PyArray_SIZE(arr) == 0) {
        return out;
    }
    PyArrayObject *ops[2] = {arr, out};
    npy_uint32 op_flags[2] = {NPY_ITER_READONLY, NPY_ITER_WRITEONLY};
    it = NpyIter_MultiNew(2, ops, NPY_ITER_EXTERNAL_LOOP, NPY_KEEPORDER, NPY_NO_CASTING, op_flags,
                          NULL);
    NpyIter_IterNextFunc *next = it ? NpyIter_GetIterNext(it, NULL) : NULL;
    if (next == NULL) {
        goto error;
    }
    char **data = NpyIter_GetDataPtrArray(it);
    npy_intp *strides = NpyIter_GetInnerStrideArray(it);
    npy_intp *size = NpyIter_GetInnerLoopSizePtr(it);
    do {
        convert_elements(fn, components, PyArray_ITEMSIZE(arr), PyDataType_ELSIZE(to), data[0],
                         strides[0], data[1], strides[1], *size);
    } while (next(it));
    NpyIter_Deallocate(it);
    return out;
error:
    if (it != NULL) {
        NpyIter_Deallocate(it);
    }
    Py_XDECREF(out);
    return NULL;
}

/* From the scan of the values to the last converted byte no Python code runs (no collection, no
 * callback), so other threads see the array before or after, never half converted, and none of
 * their writes is lost: they wait for us. */
PyDoc_STRVAR(mt_shrink_downcast__doc__,
             "downcast(ns, name, to='auto', rtol=1e-3, narrow=False, copy=False, dry_run=False) ->"
             " dict: converts ns[name] in place when every rule of inplace_check holds, else "
             "copies with copy=True, else refuses; refusals and failures leave the array exactly "
             "as it was.");
static PyObject *
mt_shrink_downcast(PyObject *Py_UNUSED(module), PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"ns", "name", "to", "rtol", "narrow", "copy", "dry_run", NULL};
    PyObject *ns, *name, *refusals = NULL, *result = NULL;
    PyArrayObject *arr = NULL, *converted = NULL;
    PyArray_Descr *to_descr = NULL;
    const char *to = "auto";
    double rtol = MT_DEFAULT_RTOL;
    int narrow = 0, copy = 0, dry_run = 0, gc_was_enabled = -1;
    refusal r[MAX_REFUSALS];
    plan p;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O!U|sdppp:downcast", kwlist, &PyDict_Type, &ns,
                                     &name, &to, &rtol, &narrow, &copy, &dry_run)) {
        return NULL;
    }
    PyObject *obj = lookup(ns, name);
    if (obj == NULL) {
        return NULL;
    }
    /* Counted while obj is still borrowed: the namespace's is the only
     * reference expected. */
    int nrefused = inplace_refusals(obj, Py_REFCNT(obj) - 1, r);
    arr = (PyArrayObject *)Py_NewRef(obj);
    if (!(refusals = refusal_list(r, nrefused))) {
        goto done;
    }
    gc_was_enabled = PyGC_Disable();
    if (parse_plan_args(obj, &ALL_VALID, to, rtol, narrow, &p) < 0) {
        goto done;
    }
    Py_ssize_t after =
        p.target >= 0 ? PyArray_SIZE(arr) * type_size(p.target) : PyArray_NBYTES(arr);
    if (p.target < 0) {
        result = result_dict("refused", arr, -1, &p, p.reason, refusals, 0, after);
        goto done;
    }
    if (dry_run) {
        result = result_dict("dry-run", arr, p.target, &p, NULL, refusals, nrefused == 0, after);
        goto done;
    }
    if (nrefused && !copy) {
        result = result_dict("refused", arr, p.target, &p,
                             "it cannot be converted in place (add --copy to convert a copy)",
                             refusals, 0, after);
        goto done;
    }
    npy_intp components;
    convert_fn fn = converter(PyArray_TYPE(arr), p.target, &components);
    if (fn == NULL) {
        PyErr_Format(PyExc_SystemError, "downcast: no conversion from %s to %s",
                     type_name(PyArray_TYPE(arr)), type_name(p.target));
        goto done;
    }
    if (!(to_descr = PyArray_DescrFromType(p.target))) {
        goto done;
    }
    /* The result is built first so nothing can fail after converting. */
    if (!(result = result_dict("done", arr, p.target, &p, NULL, refusals, nrefused == 0, after))) {
        goto done;
    }
    if (nrefused) {
        if (!(converted = converted_copy(arr, to_descr, fn, components)) ||
            PyDict_SetItem(ns, name, (PyObject *)converted) < 0) {
            Py_CLEAR(result);
        }
    }
    else if (convert_in_place(arr, to_descr, fn, components) < 0) {
        Py_CLEAR(result);
    }
done:
    if (gc_was_enabled == 1) {
        PyGC_Enable();
    }
    Py_XDECREF(converted);
    Py_XDECREF(to_descr);
    Py_XDECREF(refusals);
    Py_XDECREF(arr);
    return result;
}

/* ------------------------------------------------------------------ */
/* pack: a list or tuple of numbers -> the smallest exact numpy array   */
/* ------------------------------------------------------------------ */

enum { ITEM_BOOL, ITEM_INT, ITEM_FLOAT, ITEM_OTHER };

static int
item_kind(PyObject *x)
{
    if (PyBool_Check(x)) {
        return ITEM_BOOL;
    }
    if (PyLong_CheckExact(x)) {
        return ITEM_INT;
    }
    if (PyFloat_CheckExact(x)) {
        return ITEM_FLOAT;
    }
    return ITEM_OTHER;
}

static const char *const kind_names[] = {"bool", "int", "float", "other"};

typedef struct {
    int kind, type;
    long long lo;
    unsigned long long hi;
    int fits_f32, fits_f16;
    Py_ssize_t freed_bytes; /* items only the sequence holds */
    char reason[200];
    char warning[160]; /* what the asked-for narrowing changes, or "" */
} pack_plan;

/* The dtype numpy itself gives the values (np.array(seq)), so that later
 * code computes what it computed on the list; with narrow, the smallest
 * type holding them exactly, and a warning. */
static int
plan_pack(PyObject *seq, int narrow, pack_plan *pp)
{
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject **items = PySequence_Fast_ITEMS(seq);
    memset(pp, 0, sizeof *pp);
    pp->type = -1;
    pp->lo = LLONG_MAX;
    pp->fits_f32 = pp->fits_f16 = 1;
    if (n == 0) {
        PyOS_snprintf(pp->reason, sizeof pp->reason, "it is empty");
        return 0;
    }
    pp->kind = item_kind(items[0]);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *x = items[i];
        int kind = item_kind(x);
        if (kind == ITEM_OTHER) {
            PyOS_snprintf(pp->reason, sizeof pp->reason,
                          "item %zd is a %.60s; pack takes only ints, floats or bools", i,
                          Py_TYPE(x)->tp_name);
            return 0;
        }
        if (kind != pp->kind) {
            PyOS_snprintf(pp->reason, sizeof pp->reason,
                          "mixed content: item 0 is a %s, item %zd is a %s", kind_names[pp->kind],
                          i, kind_names[kind]);
            return 0;
        }
        if (Py_REFCNT(x) == 1) {
            pp->freed_bytes +=
                Py_TYPE(x)->tp_basicsize + Py_ABS(Py_SIZE(x)) * Py_TYPE(x)->tp_itemsize;
        }
        if (kind == ITEM_INT) {
            int overflow;
            long long v = PyLong_AsLongLongAndOverflow(x, &overflow);
            if (overflow < 0) {
                PyOS_snprintf(pp->reason, sizeof pp->reason, "item %zd is below -2**63", i);
                return 0;
            }
            if (overflow > 0) {
                unsigned long long u = PyLong_AsUnsignedLongLong(x);
                if (u == (unsigned long long)-1 && PyErr_Occurred()) {
                    PyErr_Clear();
                    PyOS_snprintf(pp->reason, sizeof pp->reason, "item %zd needs more than 64 bits",
                                  i);
                    return 0;
                }
                pp->hi = u > pp->hi ? u : pp->hi;
            }
            else {
                pp->lo = v < pp->lo ? v : pp->lo;
                if (v >= 0 && (unsigned long long)v > pp->hi) {
                    pp->hi = (unsigned long long)v;
                }
            }
        }
        else if (kind == ITEM_FLOAT) {
            double v = PyFloat_AS_DOUBLE(x);
            if (!isnan(v)) {
                pp->fits_f32 &= (double)(float)v == v;
                pp->fits_f16 &= (double)(_Float16)v == v;
            }
        }
    }
    if (pp->kind == ITEM_BOOL) {
        pp->type = NPY_BOOL;
    }
    else if (pp->kind == ITEM_FLOAT) {
        pp->type = !narrow        ? NPY_FLOAT64
                   : pp->fits_f16 ? NPY_FLOAT16
                   : pp->fits_f32 ? NPY_FLOAT32
                                  : NPY_FLOAT64;
    }
    else {
        if (pp->lo < 0 && pp->hi > (unsigned long long)LLONG_MAX) {
            PyOS_snprintf(pp->reason, sizeof pp->reason,
                          "its values span more than any 64-bit integer type holds");
            return 0;
        }
        if (pp->lo == LLONG_MAX) { /* every value above 2**63 */
            pp->lo = 0;
        }
        if (!narrow) {
            pp->type = pp->hi > (unsigned long long)LLONG_MAX ? NPY_UINT64 : NPY_INT64;
        }
        else {
            pp->type = smallest_int(pp->lo < 0, pp->lo, pp->hi);
        }
    }
    if (pp->type != NPY_FLOAT64 && pp->type != NPY_INT64) {
        narrowing_warning(pp->type, pp->warning, sizeof pp->warning);
    }
    return 0;
}

static npy_bool
is_true(PyObject *x)
{
    return x == Py_True;
}

/* The items, already checked to fit the array's type, stored in it.  One
 * loop per type, each converting an item with the function given. */
#define FILL(npy_type, c_type, convert)                                                            \
    case npy_type:                                                                                 \
        for (Py_ssize_t i = 0; i < n; i++) {                                                       \
            ((c_type *)out)[i] = (c_type)convert(items[i]);                                        \
        }                                                                                          \
        break;

static int
fill_packed(PyObject *seq, PyArrayObject *arr)
{
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject **items = PySequence_Fast_ITEMS(seq);
    char *out = PyArray_BYTES(arr);
    switch (PyArray_TYPE(arr)) {
        FILL(NPY_BOOL, npy_bool, is_true)
        FILL(NPY_FLOAT16, _Float16, PyFloat_AS_DOUBLE)
        FILL(NPY_FLOAT32, float, PyFloat_AS_DOUBLE)
        FILL(NPY_FLOAT64, double, PyFloat_AS_DOUBLE)
        FILL(NPY_UINT64, npy_uint64, PyLong_AsUnsignedLongLong)
        FILL(NPY_UINT32, npy_uint32, PyLong_AsLongLong)
        FILL(NPY_UINT16, npy_uint16, PyLong_AsLongLong)
        FILL(NPY_UINT8, npy_uint8, PyLong_AsLongLong)
        FILL(NPY_INT64, npy_int64, PyLong_AsLongLong)
        FILL(NPY_INT32, npy_int32, PyLong_AsLongLong)
        FILL(NPY_INT16, npy_int16, PyLong_AsLongLong)
        FILL(NPY_INT8, npy_int8, PyLong_AsLongLong)
    }
    return PyErr_Occurred() ? -1 : 0;
}
#undef FILL

PyDoc_STRVAR(
    mt_shrink_pack__doc__,
    "pack(ns, name, narrow=False, copy=False, dry_run=False) -> dict: numbers -> the array numpy "
    "would make (the smallest exact one with narrow); exclusive_bytes: what the sequence and the "
    "items only it holds take, which packing frees.");
static PyObject *
mt_shrink_pack(PyObject *Py_UNUSED(module), PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"ns", "name", "narrow", "copy", "dry_run", NULL};
    PyObject *ns, *name, *seq = NULL, *arr = NULL, *result = NULL, *refusals = NULL;
    int narrow = 0, copy = 0, dry_run = 0;
    pack_plan pp;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O!U|ppp:pack", kwlist, &PyDict_Type, &ns, &name,
                                     &narrow, &copy, &dry_run) ||
        numpy_needed() < 0) {
        return NULL;
    }
    PyObject *obj = lookup(ns, name);
    if (obj == NULL) {
        return NULL;
    }
    if (!PyList_CheckExact(obj) && !PyTuple_CheckExact(obj)) {
        PyErr_Format(PyExc_TypeError, "pack takes a list or tuple of numbers, not %s",
                     Py_TYPE(obj)->tp_name);
        return NULL;
    }
    int held = Py_REFCNT(obj) > 1;
    seq = Py_NewRef(obj);
    if (plan_pack(seq, narrow, &pp) < 0) {
        goto done;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    /* What the list and the items only it holds take: what packing frees. */
    Py_ssize_t before =
        Py_TYPE(seq)->tp_basicsize + n * (Py_ssize_t)sizeof(PyObject *) + pp.freed_bytes;
    Py_ssize_t after = pp.type >= 0 ? n * type_size(pp.type) : before;
    refusal r = {"held", "other references to it exist"};
    refusals = refusal_list(&r, held);
    const char *status = pp.type < 0 || (held && !copy && !dry_run) ? "refused"
                         : dry_run                                  ? "dry-run"
                                                                    : "done";
    const char *reason =
        pp.type < 0 ? pp.reason
        : (held && !copy)
            ? "other references keep the original alive (add --copy to pack a copy anyway)"
            : NULL;
    if (refusals == NULL ||
        !(result = Py_BuildValue("{sssNsnsnsOszsz}", "status", status, "dtype_after",
                                 pp.type >= 0 ? dtype_name(pp.type) : Py_NewRef(Py_None),
                                 "exclusive_bytes", before, "bytes_after", after, "refusals",
                                 refusals, "reason", strcmp(status, "dry-run") == 0 ? NULL : reason,
                                 "warning", pp.type >= 0 && pp.warning[0] ? pp.warning : NULL))) {
        goto done;
    }
    if (strcmp(status, "done") != 0) {
        goto done;
    }
    npy_intp dims[1] = {n};
    arr = PyArray_SimpleNew(1, dims, pp.type);
    if (arr == NULL || fill_packed(seq, (PyArrayObject *)arr) < 0 ||
        PyDict_SetItem(ns, name, arr) < 0) {
        Py_CLEAR(result);
    }
done:
    Py_XDECREF(seq);
    Py_XDECREF(arr);
    Py_XDECREF(refusals);
    return result;
}

/* ------------------------------------------------------------------ */
/* spill: an array's bytes to a new file                               */
/* ------------------------------------------------------------------ */

static int
report_progress(PyObject *progress, size_t done, size_t total)
{
    if (progress == NULL || progress == Py_None) {
        return 0;
    }
    PyObject *r = PyObject_CallFunction(progress, "nn", (Py_ssize_t)done, (Py_ssize_t)total);
    Py_XDECREF(r);
    return r ? 0 : -1;
}

/* Writes len bytes of data to fd at offset, WRITE_BYTES at a time with the
 * GIL released, asking wb to start each piece's writeback as soon as it is
 * written; progress and signals between pieces.  0, or -1 with errno set
 * or, from progress or a signal, an exception. */
static int
write_piecewise(int fd, const char *data, size_t len, size_t offset, size_t total, mt_writeback *wb,
                PyObject *progress)
{
    for (size_t done_bytes = 0; done_bytes < len;) {
        size_t want = len - done_bytes < WRITE_BYTES ? len - done_bytes : WRITE_BYTES;
        size_t wrote = 0;
        int err = 0;
        Py_BEGIN_ALLOW_THREADS while (wrote < want)
        {
            ssize_t w = pwrite(fd, data + done_bytes + wrote, want - wrote,
                               (off_t)(offset + done_bytes + wrote));
            if (w < 0) {
                if (errno == EINTR) {
                    continue;
                }
                err = errno;
                break;
            }
            wrote += (size_t)w;
        }
        Py_END_ALLOW_THREADS if (err)
        {
            errno = err;
            return -1;
        }
        mt_writeback_start(wb, fd, (off_t)(offset + done_bytes), (off_t)wrote);
        done_bytes += wrote;
        if (PyErr_CheckSignals() < 0 || report_progress(progress, offset + done_bytes, total) < 0) {
            errno = 0;
            return -1;
        }
    }
    return 0;
}

PyDoc_STRVAR(mt_shrink_spill_write__doc__,
             "spill_write(regions, path, progress=None) -> bytes in the new file: each (offset, "
             "buffer) of regions (offsets ascending, contiguous buffers: an array, or what "
             "pickle's buffers give) written at its offset, with the GIL released, and its "
             "writeback to the disk started at once; the file must not exist, and on failure it "
             "is removed again.");
static PyObject *
mt_shrink_spill_write(PyObject *module, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"regions", "path", "progress", NULL};
    PyObject *regions, *path = NULL, *progress = NULL, *seq = NULL, *result = NULL;
    Py_buffer part = {0};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO&|O:spill_write", kwlist, &regions,
                                     PyUnicode_FSConverter, &path, &progress)) {
        return NULL;
    }
    if ((seq = PySequence_Fast(regions, "regions must be a sequence of (offset, buffer)")) ==
        NULL) {
        goto done;
    }
    /* Every part checked, and the file's size known, before the file exists. */
    Py_ssize_t end = 0, n = PySequence_Fast_GET_SIZE(seq);
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_ssize_t offset;
        PyObject *buffer;
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(seq, i), "nO", &offset, &buffer) ||
            PyObject_GetBuffer(buffer, &part, PyBUF_ANY_CONTIGUOUS) < 0) {
            goto done;
        }
        int overlaps = offset < end;
        end = offset + part.len;
        PyBuffer_Release(&part);
        if (overlaps) {
            PyErr_SetString(PyExc_ValueError, "spill_write: regions overlap or are out of order");
            goto done;
        }
    }
    const char *file = PyBytes_AS_STRING(path);
    int fd = open(file, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, path);
        goto done;
    }
    mt_writeback *wb = mt_get_state(module)->writeback;
    int failed = 0;
    for (Py_ssize_t i = 0; i < n && !failed; i++) {
        Py_ssize_t offset;
        PyObject *buffer;
        failed = !PyArg_ParseTuple(PySequence_Fast_GET_ITEM(seq, i), "nO", &offset, &buffer) ||
                 PyObject_GetBuffer(buffer, &part, PyBUF_ANY_CONTIGUOUS) < 0;
        if (!failed) {
            failed = write_piecewise(fd, part.buf, (size_t)part.len, (size_t)offset, (size_t)end,
                                     wb, progress) < 0;
            PyBuffer_Release(&part);
        }
    }
    if (!failed && close(fd) < 0) {
        failed = 1;
    }
    else if (failed) {
        int saved = errno;
        close(fd);
        errno = saved;
    }
    if (failed) {
        if (!PyErr_Occurred()) {
            PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, path);
        }
        unlink(file);
        goto done;
    }
    result = PyLong_FromSsize_t(end);
done:
    Py_XDECREF(seq);
    Py_XDECREF(path);
    return result;
}

/* The text a spill's checksum is kept as (in the manifest) and compared as. */
static PyObject *
checksum_text(uint32_t crc)
{
    return PyUnicode_FromFormat("crc32c:%08x", (unsigned int)crc);
}

/* One thread's share of a spill's comparison (blocks_differ): a run of
 * whole blocks, and what it found. */
typedef struct {
    const char *live;
    char *spilled;
    size_t len;
    int fix, drop, differed;
    uint32_t crc; /* of the share's bytes alone, as left by the fix */
} compare_share;

/* Compares a share block by block; where a block differs, copies live's
 * over spilled's when fix.  The checksum of each block is taken while it is
 * still in the cache.  With drop (spilled is a shared mapping of the file),
 * each block's pages of the mapping are dropped from the process once
 * compared (their contents stay in the file and the page cache), or the
 * comparison would bring back into RSS what the spill took out.  No Python
 * API: runs on a worker thread. */
static void *
compare_share_run(void *arg)
{
    compare_share *s = arg;
    int aligned = s->drop && (uintptr_t)s->spilled % (uintptr_t)sysconf(_SC_PAGESIZE) == 0;
    s->differed = 0;
    s->crc = 0;
    for (size_t at = 0; at < s->len; at += COMPARE_BYTES) {
        size_t n = s->len - at < COMPARE_BYTES ? s->len - at : COMPARE_BYTES;
        if (memcmp(s->live + at, s->spilled + at, n) != 0) {
            s->differed = 1;
            if (!s->fix) {
                break;
            }
            memcpy(s->spilled + at, s->live + at, n);
        }
        s->crc = mt_checksum_crc32c(s->crc, s->spilled + at, n);
        if (aligned) {
            madvise(s->spilled + at, n, MADV_DONTNEED);
        }
    }
    return NULL;
}

/* Compares len bytes of live and spilled (the spill file's bytes; drop:
 * a shared mapping of it), on as many threads as there are idle cores (one per
 * SHARE_MIN_BYTES at most); where they differ, copies live's block over
 * spilled's when fix.  Returns whether any block differed.  With crc, the
 * checksum of spilled's bytes (as left by the fix) is continued from the
 * shares' checksums.  The caller holds the GIL throughout, so no Python
 * thread writes meanwhile; the threads run no Python code. */
static int
blocks_differ(const char *live, char *spilled, size_t len, int fix, int drop, uint32_t *crc)
{
    compare_share shares[MT_WORKER_MAX_SHARES];
    size_t enough = len / SHARE_MIN_BYTES;
    int n = mt_worker_idle_cores(MT_WORKER_MAX_SHARES);
    n = enough < (size_t)n ? (int)enough : n;
    n = n < 1 ? 1 : n;
    /* Whole blocks per share, so that every share but the last starts and
     * ends on a page of the mapping. */
    size_t per = (len / (size_t)n + COMPARE_BYTES - 1) / COMPARE_BYTES * COMPARE_BYTES;
    for (int k = 0; k < n; k++) {
        size_t from = per * (size_t)k < len ? per * (size_t)k : len;
        size_t to = from + per < len ? from + per : len;
        shares[k] = (compare_share){live + from, spilled + from, to - from, fix, drop, 0, 0};
    }
    mt_worker_run_shares(compare_share_run, (char *)shares, sizeof shares[0], n);
    int differed = 0;
    for (int k = 0; k < n; k++) {
        differed |= shares[k].differed;
        if (crc != NULL) {
            *crc = mt_checksum_crc32c_combine(*crc, shares[k].crc, shares[k].len);
        }
    }
    return differed;
}

/* spill_write() copies the array with the GIL released, and Python code
 * runs before the name is rebound: a thread may write into the array
 * meanwhile.  Here, holding the GIL from the comparison to the rebinding,
 * what differs is copied into the file's mapping, so the file holds what
 * the array holds when the name moves and no Python thread's write is lost.
 * A thread that writes without the GIL (a C extension's) is not held by it:
 * a write of its during the second comparison refuses the spill, but one
 * after it (or after the rebinding) goes to the old array and is lost. */
PyDoc_STRVAR(mt_shrink_spill_commit__doc__,
             "spill_commit(ns, name, array, mapped, bind=True) -> the file's checksum: binds "
             "ns[name], still "
             "array, to mapped (the memmap of its spill file) once the file holds exactly what "
             "array holds now; what threads wrote since spill_write() is copied in first, holding "
             "the GIL, and the file is checksummed in the same pass. ValueError "
             "with the reason, nothing bound, if name was rebound, array changed shape or dtype, "
             "or it keeps changing (a thread writing without the GIL). bind=False: the file is "
             "made exact the same way, and ns[name] is left as it is (a checkpoint).");
static PyObject *
mt_shrink_spill_commit(PyObject *Py_UNUSED(module), PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"ns", "name", "array", "mapped", "bind", NULL};
    PyObject *ns, *name, *obj, *mapped_obj, *copy = NULL, *result = NULL;
    uint32_t crc = 0;
    int bind = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O!UOO|p:spill_commit", kwlist, &PyDict_Type,
                                     &ns, &name, &obj, &mapped_obj, &bind) ||
        numpy_needed() < 0) {
        return NULL;
    }
    MT_ASSERT_GIL();
    if (mt_still_bound(ns, name, obj, "spilled") < 0) {
        return NULL;
    }
    if (!PyArray_Check(obj) || !PyArray_Check(mapped_obj) ||
        !(PyArray_IS_C_CONTIGUOUS((PyArrayObject *)mapped_obj) ||
          PyArray_IS_F_CONTIGUOUS((PyArrayObject *)mapped_obj))) {
        PyErr_SetString(PyExc_TypeError, "spill_commit takes an array and its contiguous memmap");
        return NULL;
    }
    PyArrayObject *arr = (PyArrayObject *)obj, *mapped = (PyArrayObject *)mapped_obj;
    if (!PyArray_SAMESHAPE(arr, mapped) ||
        !PyArray_EquivTypes(PyArray_DESCR(arr), PyArray_DESCR(mapped))) {
        PyErr_Format(PyExc_ValueError,
                     "%U changed shape or dtype (by another thread) while it was being spilled: "
                     "left as that thread left it",
                     name);
        return NULL;
    }
    int fortran = !PyArray_IS_C_CONTIGUOUS(mapped);
    PyArrayObject *live = arr;
    if (fortran ? !PyArray_IS_F_CONTIGUOUS(arr) : !PyArray_IS_C_CONTIGUOUS(arr)) {
        copy = PyArray_NewCopy(arr, fortran ? NPY_FORTRANORDER : NPY_CORDER);
        if (copy == NULL) {
            return NULL;
        }
        live = (PyArrayObject *)copy;
    }
    size_t len = (size_t)PyArray_NBYTES(arr);
    int fix = PyArray_ISWRITEABLE(mapped);
    if (blocks_differ(PyArray_BYTES(live), PyArray_BYTES(mapped), len, fix, 1, &crc)) {
        if (!fix) {
            PyErr_Format(PyExc_ValueError,
                         "%U changed while it was being spilled, and its file is mapped read-only "
                         "(as the array was), so the change cannot be copied in: left as it was",
                         name);
            goto done;
        }
        if (blocks_differ(PyArray_BYTES(live), PyArray_BYTES(mapped), len, 0, 1, NULL)) {
            PyErr_Format(PyExc_ValueError,
                         "%U kept changing while its changes were copied into its spill file "
                         "with every Python thread held: something writes into it without the "
                         "GIL (a thread of a C extension); left as it was",
                         name);
            goto done;
        }
    }
    if ((result = checksum_text(crc)) != NULL && bind && PyDict_SetItem(ns, name, mapped_obj) < 0) {
        Py_CLEAR(result);
    }
done:
    Py_XDECREF(copy);
    return result;
}

/* The spill of any other object: Python pickles it again (running Python
 * code, and other threads with it); from here to the rebinding none runs,
 * so the file is compared with what the object holds at the rebinding. */
PyDoc_STRVAR(mt_shrink_spill_commit_pickled__doc__,
             "spill_commit_pickled(ns, name, obj, value, regions, file, bind=True) -> file's "
             "checksum: binds "
             "ns[name], still obj, to value (read back from its spill file) once every (offset, "
             "buffer) of regions (obj pickled again, offsets ascending) equals file's bytes at "
             "offset, compared holding the GIL; file is checksummed in the same pass. ValueError "
             "with the reason, nothing bound, if name was rebound or obj changed. bind=False: "
             "compared the same way, and ns[name] is left as it is (a checkpoint).");
static PyObject *
mt_shrink_spill_commit_pickled(PyObject *Py_UNUSED(module), PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"ns", "name", "obj", "value", "regions", "file", "bind", NULL};
    PyObject *ns, *name, *obj, *value, *regions, *file_obj, *seq = NULL, *result = NULL;
    Py_buffer file = {0}, part = {0};
    uint32_t crc = 0;
    Py_ssize_t checked = 0; /* file's bytes checksummed so far */
    int bind = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O!UOOOO|p:spill_commit_pickled", kwlist,
                                     &PyDict_Type, &ns, &name, &obj, &value, &regions, &file_obj,
                                     &bind) ||
        PyObject_GetBuffer(file_obj, &file, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    MT_ASSERT_GIL();
    if ((seq = PySequence_Fast(regions, "regions must be a sequence of (offset, buffer)")) ==
        NULL) {
        goto done;
    }
    if (mt_still_bound(ns, name, obj, "spilled") < 0) {
        goto done;
    }
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(seq); i++) {
        Py_ssize_t offset;
        PyObject *buffer;
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(seq, i), "nO", &offset, &buffer) ||
            PyObject_GetBuffer(buffer, &part, PyBUF_SIMPLE) < 0) {
            goto done;
        }
        int same = offset >= checked && offset <= file.len && part.len <= file.len - offset;
        if (same) {
            /* The gap before the part, then the part, compared and checksummed. */
            crc = mt_checksum_crc32c(crc, (const char *)file.buf + checked,
                                     (size_t)(offset - checked));
            same =
                !blocks_differ(part.buf, (char *)file.buf + offset, (size_t)part.len, 0, 0, &crc);
            checked = offset + part.len;
        }
        PyBuffer_Release(&part);
        if (!same) {
            PyErr_Format(PyExc_ValueError,
                         "%U changed (by another thread) while it was being spilled: left as "
                         "that thread left it",
                         name);
            goto done;
        }
    }
    crc = mt_checksum_crc32c(crc, (const char *)file.buf + checked, (size_t)(file.len - checked));
    if ((result = checksum_text(crc)) != NULL && bind && PyDict_SetItem(ns, name, value) < 0) {
        Py_CLEAR(result);
    }
done:
    Py_XDECREF(seq);
    PyBuffer_Release(&file);
    return result;
}

PyDoc_STRVAR(mt_shrink_spill_checksum__doc__,
             "spill_checksum(path) -> the checksum of the file, as spill_commit gives it; read "
             "through a mapping with the GIL released.");
static PyObject *
mt_shrink_spill_checksum(PyObject *Py_UNUSED(module), PyObject *arg)
{
    PyObject *path = NULL, *result = NULL;
    if (!PyUnicode_FSConverter(arg, &path)) {
        return NULL;
    }
    uint32_t crc = 0;
    int err = 0;
    Py_BEGIN_ALLOW_THREADS int fd = open(PyBytes_AS_STRING(path), O_RDONLY | O_CLOEXEC);
    struct stat info;
    if (fd < 0 || fstat(fd, &info) < 0) {
        err = errno;
    }
    else if (info.st_size > 0) {
        void *data = mmap(NULL, (size_t)info.st_size, PROT_READ, MAP_SHARED, fd, 0);
        if (data == MAP_FAILED) {
            err = errno;
        }
        else {
            madvise(data, (size_t)info.st_size, MADV_SEQUENTIAL);
            crc = mt_checksum_crc32c(0, data, (size_t)info.st_size);
            munmap(data, (size_t)info.st_size);
        }
    }
    if (fd >= 0) {
        close(fd);
    }
    Py_END_ALLOW_THREADS if (err)
    {
        errno = err;
        PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, path);
    }
    else
    {
        result = checksum_text(crc);
    }
    Py_DECREF(path);
    return result;
}

/* The _core methods of this file; module.c adds them at init. */
PyMethodDef mt_shrink_methods[] = {
    {"shrink_window_begin", mt_shrink_window_begin, METH_NOARGS, mt_shrink_window_begin__doc__},
    {"shrink_window_end", mt_shrink_window_end, METH_NOARGS, mt_shrink_window_end__doc__},
    {"inplace_check", (PyCFunction)(void (*)(void))mt_shrink_inplace_check, METH_FASTCALL,
     mt_shrink_inplace_check__doc__},
    {"downcast_plan", (PyCFunction)(void (*)(void))mt_shrink_plan, METH_VARARGS | METH_KEYWORDS,
     mt_shrink_plan__doc__},
    {"shrink_options", (PyCFunction)(void (*)(void))mt_shrink_options, METH_VARARGS | METH_KEYWORDS,
     mt_shrink_options__doc__},
    {"shrink_actions", mt_shrink_actions, METH_NOARGS, mt_shrink_actions__doc__},
    {"downcast", (PyCFunction)(void (*)(void))mt_shrink_downcast, METH_VARARGS | METH_KEYWORDS,
     mt_shrink_downcast__doc__},
    {"pack", (PyCFunction)(void (*)(void))mt_shrink_pack, METH_VARARGS | METH_KEYWORDS,
     mt_shrink_pack__doc__},
    {"spill_write", (PyCFunction)(void (*)(void))mt_shrink_spill_write,
     METH_VARARGS | METH_KEYWORDS, mt_shrink_spill_write__doc__},
    {"spill_commit", (PyCFunction)(void (*)(void))mt_shrink_spill_commit,
     METH_VARARGS | METH_KEYWORDS, mt_shrink_spill_commit__doc__},
    {"spill_commit_pickled", (PyCFunction)(void (*)(void))mt_shrink_spill_commit_pickled,
     METH_VARARGS | METH_KEYWORDS, mt_shrink_spill_commit_pickled__doc__},
    {"spill_checksum", mt_shrink_spill_checksum, METH_O, mt_shrink_spill_checksum__doc__},
    {NULL, NULL, 0, NULL},
};
