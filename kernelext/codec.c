/* codec: the compressed proxy type (codec.h); the bytes are frames.c's.
 *
 * Everything here needs the GIL; frames.c releases it around the work on
 * memory that no Python object can free meanwhile (we hold a reference to
 * the source, and the chunks belong to no Python object yet). */
#include "memtamer/memtamer.h"

#include <string.h>

#include "memtamer/codec.h"
#include "memtamer/frames.h"
#include "memtamer/npy.h"

enum { KIND_ARRAY = 0, KIND_PICKLE = 1 };

/* Until it is restored, a proxy holds the compressed frames; any use of it
 * (attribute, operator, item, iteration, call, buffer, numpy, pickling; but
 * an array's description: described_attribute, proxy_length) restores it,
 * rebinds its name in the module it came from, and from then on goes to the
 * restored object, which it keeps. */
typedef struct {
    PyObject_HEAD
    int kind;
    PyObject *name;     /* the variable it replaced */
    PyObject *owner;    /* weak reference to the module whose __dict__ binds name, or NULL */
    PyObject *restored; /* the object once restored */
    /* One restore at a time; waiters sleep on it without the GIL. */
    PyThread_type_lock lock;
    /* The thread restoring it, 0 when none.  Only touched with the GIL held. */
    unsigned long restorer;
    PyObject *what;  /* "ndarray float64 (1000, 3)", "DataFrame" */
    PyObject *descr; /* arrays: dtype, shape, strides, writeable */
    PyObject *shape, *strides;
    int writeable;
    Py_ssize_t nframes; /* arrays: 1; pickles: the stream, then its buffers */
    mt_frame *frames;
    size_t nbytes, cbytes;
    mt_settings how;
} compressed;

/* ---- what gets compressed ---- */

/* Where the bytes to compress come from, and what keeps them alive. */
typedef struct {
    int kind;
    PyArrayObject *array; /* arrays: a C/F/dense-contiguous array */
    PyObject *stream;     /* pickles: the protocol 5 stream (bytes) */
    PyObject *buffers;    /* and its out-of-band PickleBuffers (list) */
    Py_buffer *views;
    Py_ssize_t nviews;
    mt_source *sources;
    Py_ssize_t nsources;
} input;

static void
input_release(input *in)
{
    for (Py_ssize_t i = 0; i < in->nviews; i++) {
        PyBuffer_Release(&in->views[i]);
    }
    PyMem_Free(in->views);
    PyMem_Free(in->sources);
    Py_XDECREF(in->array);
    Py_XDECREF(in->stream);
    Py_XDECREF(in->buffers);
    memset(in, 0, sizeof *in);
}

/* What the transform may narrow: 8-byte numbers in this machine's byte
 * order (numpy's kind character, or a buffer's struct format). */
static int
values_of_kind(char kind)
{
    switch (kind) {
    case 'f':
    case 'd':
        return MT_VALUES_FLOAT64;
    case 'i':
    case 'M':
    case 'm':
    case 'q':
    case 'l':
        return MT_VALUES_INT64;
    case 'u':
    case 'Q':
    case 'L':
        return MT_VALUES_UINT64;
    default:
        return -1;
    }
}

static int
values_of_array(PyArrayObject *arr)
{
    PyArray_Descr *d = PyArray_DESCR(arr);
    return PyArray_ITEMSIZE(arr) == 8 && PyArray_ISNOTSWAPPED(arr) ? values_of_kind(d->kind) : -1;
}

static int
values_of_buffer(const Py_buffer *view)
{
    const char *f = view->format;
    if (view->itemsize != 8 || f == NULL) {
        return -1;
    }
    if (*f == '@' || *f == '=' || (*f == '<' && PY_LITTLE_ENDIAN) || (*f == '>' && PY_BIG_ENDIAN)) {
        f++;
    }
    return f[0] && !f[1] ? values_of_kind(f[0]) : -1;
}

/* Arrays whose data we compress as is: exact ndarrays of a dtype without
 * object references.  Dense arrays keep their strides; other layouts are
 * copied in their own axis order first. */
static int
input_from_array(PyArrayObject *arr, input *in)
{
    int dense = PyArray_IS_C_CONTIGUOUS(arr) || PyArray_IS_F_CONTIGUOUS(arr);
    in->array = dense ? (PyArrayObject *)Py_NewRef(arr)
                      : (PyArrayObject *)PyArray_NewCopy(arr, NPY_KEEPORDER);
    if (in->array == NULL) {
        return -1;
    }
    in->sources = PyMem_Calloc(1, sizeof(mt_source));
    if (in->sources == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    in->sources[0].ptr = PyArray_BYTES(in->array);
    in->sources[0].nbytes = (size_t)PyArray_NBYTES(in->array);
    in->sources[0].typesize = mt_frames_typesize(PyArray_ITEMSIZE(in->array));
    in->sources[0].values = values_of_array(in->array);
    in->nsources = 1;
    in->kind = KIND_ARRAY;
    return 0;
}

static int
input_from_pickle(PyObject *module, PyObject *obj, input *in)
{
    PyObject *pickle = NULL, *append = NULL, *dumps = NULL, *kw = NULL, *args = NULL;
    PyObject *choose = mt_get_state(module)->compress_pickler;
    int rc = -1;
    in->kind = KIND_PICKLE;
    /* The chooser runs before the pickling, so what a thread writes meanwhile
     * is pickled; pickle.dumps itself runs no Python code for data, so no
     * thread writes into what it already read (see mt_codec_commit). */
    if (choose && !(dumps = PyObject_CallOneArg(choose, obj))) {
        return -1;
    }
    if (dumps == Py_None) {
        Py_CLEAR(dumps);
    }
    if (!(pickle = PyImport_ImportModule("pickle")) || !(in->buffers = PyList_New(0)) ||
        !(append = PyObject_GetAttrString(in->buffers, "append")) ||
        (!dumps && !(dumps = PyObject_GetAttrString(pickle, "dumps"))) ||
        !(args = PyTuple_Pack(1, obj)) ||
        !(kw = Py_BuildValue("{siss}", "protocol", 5, "buffer_callback", "")) ||
        PyDict_SetItemString(kw, "buffer_callback", append) < 0 ||
        !(in->stream = PyObject_Call(dumps, args, kw))) {
        goto done;
    }
    if (!PyBytes_Check(in->stream)) {
        PyErr_Format(PyExc_TypeError, "the pickler gave %.100s, not bytes",
                     Py_TYPE(in->stream)->tp_name);
        goto done;
    }
    /* Pickle stores what __main__ defines by name, not by value (its module
     * name is in the stream, whichever opcode refers to it): such a stream
     * would restore only while those names stay bound as they are. */
    if (memmem(PyBytes_AS_STRING(in->stream), (size_t)PyBytes_GET_SIZE(in->stream), "__main__",
               8) != NULL) {
        PyErr_SetString(PyExc_ValueError,
                        "it refers to something defined in this session (in __main__, such as a "
                        "function or a class), which pickle stores by name, not by value, so "
                        "compress could not give it back by itself; define those in a module "
                        "and import them to compress it");
        goto done;
    }
    Py_ssize_t nbuf = PyList_GET_SIZE(in->buffers);
    in->views = PyMem_Calloc((size_t)(nbuf ? nbuf : 1), sizeof(Py_buffer));
    in->sources = PyMem_Calloc((size_t)nbuf + 1, sizeof(mt_source));
    if (in->views == NULL || in->sources == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    in->sources[0].ptr = PyBytes_AS_STRING(in->stream);
    in->sources[0].nbytes = (size_t)PyBytes_GET_SIZE(in->stream);
    in->sources[0].typesize = 1;
    in->sources[0].values = -1;
    in->nsources = 1;
    for (Py_ssize_t i = 0; i < nbuf; i++) {
        Py_buffer *view = &in->views[i];
        if (PyObject_GetBuffer(PyList_GET_ITEM(in->buffers, i), view,
                               PyBUF_ANY_CONTIGUOUS | PyBUF_FORMAT) < 0) {
            goto done;
        }
        in->nviews++;
        in->sources[in->nsources].ptr = view->buf;
        in->sources[in->nsources].nbytes = (size_t)view->len;
        in->sources[in->nsources].typesize = mt_frames_typesize(view->itemsize);
        in->sources[in->nsources].values = values_of_buffer(view);
        in->nsources++;
    }
    rc = 0;
done:
    Py_XDECREF(pickle);
    Py_XDECREF(append);
    Py_XDECREF(dumps);
    Py_XDECREF(kw);
    Py_XDECREF(args);
    return rc;
}

static int
input_from_object(PyObject *module, PyObject *obj, input *in)
{
    int np = mt_npy_ready();
    if (np < 0) {
        return -1;
    }
    memset(in, 0, sizeof *in);
    if (np && PyArray_CheckExact(obj) && !PyDataType_REFCHK(PyArray_DESCR((PyArrayObject *)obj))) {
        return input_from_array((PyArrayObject *)obj, in);
    }
    return input_from_pickle(module, obj, in);
}

/* ---- the type ---- */

static PyObject *
describe(PyObject *obj, int kind)
{
    if (kind == KIND_ARRAY) {
        PyArrayObject *arr = (PyArrayObject *)obj;
        PyObject *dtype = PyObject_Str((PyObject *)PyArray_DESCR(arr));
        PyObject *shape = PyObject_GetAttrString(obj, "shape");
        PyObject *s = dtype && shape ? PyUnicode_FromFormat("ndarray %U %R", dtype, shape) : NULL;
        Py_XDECREF(dtype);
        Py_XDECREF(shape);
        return s;
    }
    return PyUnicode_FromString(Py_TYPE(obj)->tp_name);
}

/* Gives self the frames made from in (taking them over, the old ones
 * freed), what it needs to restore them as obj, and what (taken over too:
 * describe(obj), made by the caller because it may run Python code).  Runs
 * none itself.  -1/0. */
static int
proxy_describe(compressed *self, PyObject *what, PyObject *obj, input *in, mt_frame *frames,
               const mt_settings *how)
{
    mt_frames_free(self->frames, self->nframes);
    self->frames = frames;
    self->nframes = in->nsources;
    self->kind = in->kind;
    self->how = *how;
    self->nbytes = self->cbytes = 0;
    for (Py_ssize_t i = 0; i < in->nsources; i++) {
        self->nbytes += frames[i].nbytes;
        self->cbytes += mt_frames_csize(&frames[i]);
    }
    if (in->kind == KIND_ARRAY) {
        PyArrayObject *a = in->array;
        Py_XSETREF(self->descr, Py_NewRef((PyObject *)PyArray_DESCR(a)));
        Py_XSETREF(self->shape, PyObject_GetAttrString((PyObject *)a, "shape"));
        Py_XSETREF(self->strides, PyObject_GetAttrString((PyObject *)a, "strides"));
        self->writeable = PyArray_ISWRITEABLE((PyArrayObject *)obj);
    }
    Py_XSETREF(self->what, what);
    if (self->what == NULL || (in->kind == KIND_ARRAY && (!self->shape || !self->strides))) {
        return -1;
    }
    return 0;
}

static PyObject *
make_proxy(PyTypeObject *type, PyObject *obj, PyObject *name, PyObject *owner, input *in,
           mt_frame *frames, const mt_settings *how)
{
    compressed *self = (compressed *)type->tp_alloc(type, 0);
    if (self == NULL) {
        mt_frames_free(frames, in->nsources);
        return NULL;
    }
    self->name = Py_NewRef(name);
    if (proxy_describe(self, describe(obj, in->kind), obj, in, frames, how) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    if (owner != Py_None && (self->owner = PyWeakref_NewRef(owner, NULL)) == NULL) {
        Py_DECREF(self);
        return NULL;
    }
    if ((self->lock = PyThread_allocate_lock()) == NULL) {
        Py_DECREF(self);
        PyErr_NoMemory();
        return NULL;
    }
    return (PyObject *)self;
}

PyDoc_STRVAR(
    mt_codec_compress__doc__,
    "compress(obj, name, codec='auto', level=5, progress=None, owner=None, *, threads=None, "
    "narrow=True) -> Compressed: any use restores it and rebinds name in the module owner; "
    "codec 'auto' picks what makes a sample smallest, narrow lets 8-byte numbers be narrowed "
    "first, threads defaults to the cores other work leaves idle (from the load average).");
PyObject *
mt_codec_compress(PyObject *module, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"obj",   "name",    "codec",  "level", "progress",
                             "owner", "threads", "narrow", NULL};
    PyObject *obj, *name, *codec = NULL, *level = NULL, *progress = NULL, *owner = Py_None;
    PyObject *threads = NULL, *narrow = NULL;
    mt_settings how;
    input in;
    mt_frame *frames = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OU|OOOO$OO:compress", kwlist, &obj, &name,
                                     &codec, &level, &progress, &owner, &threads, &narrow) ||
        mt_frames_parse_settings(codec, level, threads, narrow, &how) < 0) {
        return NULL;
    }
    if (owner != Py_None && !PyModule_Check(owner)) {
        PyErr_Format(PyExc_TypeError, "owner must be the module whose namespace binds %U, or None",
                     name);
        return NULL;
    }
    if (input_from_object(module, obj, &in) < 0) {
        input_release(&in);
        return NULL;
    }
    PyObject *result = NULL;
    if (mt_frames_compress(in.sources, in.nsources, &how, 0, progress, 0, &frames) == 0) {
        result = make_proxy((PyTypeObject *)mt_get_state(module)->compressed_type, obj, name, owner,
                            &in, frames, &how);
    }
    input_release(&in);
    return result;
}

/* The frame that decides how an object is compressed: its largest. */
static Py_ssize_t
largest_frame(const mt_frame *frames, Py_ssize_t n)
{
    Py_ssize_t largest = 0;
    for (Py_ssize_t i = 1; i < n; i++) {
        largest = frames[i].nbytes > frames[largest].nbytes ? i : largest;
    }
    return largest;
}

PyDoc_STRVAR(mt_codec_estimate__doc__,
             "compress_estimate(obj, codec='auto', level=5, sample=16MiB, *, threads=None, "
             "narrow=True) -> (nbytes, estimated compressed bytes, method): from the first "
             "`sample` bytes of each frame; method says how it would be compressed.");
PyObject *
mt_codec_estimate(PyObject *module, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"obj", "codec", "level", "sample", "threads", "narrow", NULL};
    PyObject *obj, *codec = NULL, *level = NULL, *threads = NULL, *narrow = NULL;
    Py_ssize_t sample = (Py_ssize_t)MT_FRAMES_CHUNK_BYTES;
    mt_settings how;
    input in;
    mt_frame *frames = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|OOn$OO:compress_estimate", kwlist, &obj,
                                     &codec, &level, &sample, &threads, &narrow) ||
        mt_frames_parse_settings(codec, level, threads, narrow, &how) < 0) {
        return NULL;
    }
    if (sample < 1) {
        PyErr_SetString(PyExc_ValueError, "sample must be positive");
        return NULL;
    }
    if (input_from_object(module, obj, &in) < 0 ||
        mt_frames_compress(in.sources, in.nsources, &how, (size_t)sample, NULL, 0, &frames) < 0) {
        input_release(&in);
        return NULL;
    }
    double nbytes = 0, estimate = 0;
    for (Py_ssize_t i = 0; i < in.nsources; i++) {
        nbytes += (double)in.sources[i].nbytes;
        if (frames[i].nbytes) {
            estimate += (double)mt_frames_csize(&frames[i]) * (double)in.sources[i].nbytes /
                        (double)frames[i].nbytes;
        }
    }
    PyObject *method = mt_frames_describe(&frames[largest_frame(frames, in.nsources)], &how);
    mt_frames_free(frames, in.nsources);
    input_release(&in);
    return method ? Py_BuildValue("(LLN)", (long long)nbytes, (long long)estimate, method) : NULL;
}

static PyObject *
restore_array(compressed *self, PyObject *progress)
{
    npy_intp shape[NPY_MAXDIMS], steps[NPY_MAXDIMS];
    int nd = (int)PyTuple_GET_SIZE(self->shape);
    for (int i = 0; i < nd; i++) {
        shape[i] = PyLong_AsSsize_t(PyTuple_GET_ITEM(self->shape, i));
        steps[i] = PyLong_AsSsize_t(PyTuple_GET_ITEM(self->strides, i));
    }
    if (PyErr_Occurred()) {
        return NULL;
    }
    Py_INCREF(self->descr); /* stolen */
    PyArrayObject *arr = (PyArrayObject *)PyArray_NewFromDescr(
        &PyArray_Type, (PyArray_Descr *)self->descr, nd, shape, steps, NULL, 0, NULL);
    if (arr == NULL) {
        return NULL;
    }
    size_t done = 0;
    if (mt_frames_decompress(&self->frames[0], PyArray_BYTES(arr), &self->how, progress, &done,
                             self->nbytes) < 0) {
        Py_DECREF(arr);
        return NULL;
    }
    if (!self->writeable) {
        PyArray_CLEARFLAGS(arr, NPY_ARRAY_WRITEABLE);
    }
    return (PyObject *)arr;
}

static PyObject *
restore_pickle(compressed *self, PyObject *progress)
{
    PyObject *stream = NULL, *buffers = NULL, *pickle = NULL, *result = NULL;
    size_t done = 0;
    if (!(stream = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)self->frames[0].nbytes)) ||
        mt_frames_decompress(&self->frames[0], PyBytes_AS_STRING(stream), &self->how, progress,
                             &done, self->nbytes) < 0 ||
        !(buffers = PyList_New(self->nframes - 1))) {
        goto done;
    }
    for (Py_ssize_t i = 1; i < self->nframes; i++) {
        PyObject *b = PyByteArray_FromStringAndSize(NULL, (Py_ssize_t)self->frames[i].nbytes);
        if (b == NULL) {
            goto done;
        }
        PyList_SET_ITEM(buffers, i - 1, b);
        if (mt_frames_decompress(&self->frames[i], PyByteArray_AS_STRING(b), &self->how, progress,
                                 &done, self->nbytes) < 0) {
            goto done;
        }
    }
    if ((pickle = PyImport_ImportModule("pickle")) != NULL) {
        PyObject *loads = PyObject_GetAttrString(pickle, "loads");
        PyObject *args = loads ? PyTuple_Pack(1, stream) : NULL;
        PyObject *kw = args ? Py_BuildValue("{sO}", "buffers", buffers) : NULL;
        result = kw ? PyObject_Call(loads, args, kw) : NULL;
        Py_XDECREF(loads);
        Py_XDECREF(args);
        Py_XDECREF(kw);
    }
done:
    Py_XDECREF(stream);
    Py_XDECREF(buffers);
    Py_XDECREF(pickle);
    return result;
}

/* Gives the compressed data back as a new object (GIL held). */
static PyObject *
decompress(compressed *self, PyObject *progress)
{
    MT_ASSERT_GIL();
    if (self->frames == NULL) { /* the collector cleared a cycle through the restored object */
        PyErr_Format(PyExc_RuntimeError, "memtamer: the proxy of %U no longer holds any data",
                     self->name);
        return NULL;
    }
    if (self->kind == KIND_ARRAY) {
        int np = mt_npy_ready();
        if (np <= 0) {
            if (np == 0) {
                PyErr_Format(PyExc_RuntimeError, "import numpy to restore %U (a numpy array)",
                             self->name);
            }
            return NULL;
        }
        return restore_array(self, progress);
    }
    return restore_pickle(self, progress);
}

/* Rebinds the name to obj where the proxy came from, if it is still bound
 * to the proxy there.  -1/0. */
static int
rebind(compressed *self, PyObject *obj)
{
    PyObject *owner = NULL, *ns = NULL, *bound = NULL;
    int rc = -1;
    if (self->owner == NULL) {
        return 0;
    }
    if ((owner = PyObject_CallNoArgs(self->owner)) == NULL) {
        return -1;
    }
    if (owner == Py_None) {
        rc = 0;
        goto done;
    }
    /* The module's __dict__ attribute: IPython's main module may show a
     * namespace other than its own dict there. */
    if ((ns = PyObject_GetAttrString(owner, "__dict__")) == NULL) {
        goto done;
    }
    if (!PyDict_Check(ns)) {
        rc = 0;
        goto done;
    }
    bound = PyDict_GetItemWithError(ns, self->name);
    if (bound == NULL && PyErr_Occurred()) {
        goto done;
    }
    rc = bound == (PyObject *)self ? PyDict_SetItem(ns, self->name, obj) : 0;
done:
    Py_XDECREF(owner);
    Py_XDECREF(ns);
    return rc;
}

/* The object the proxy stands for, as a new reference: restored (and its
 * name rebound) on first use, by one thread; others wait for it.  A failed
 * or interrupted restore leaves the proxy as it was.  GIL held. */
static PyObject *
target(compressed *self, PyObject *progress)
{
    PyObject *obj = NULL;
    unsigned long me = PyThread_get_thread_ident();
    MT_ASSERT_GIL();
    if (self->restored != NULL) {
        return Py_NewRef(self->restored);
    }
    if (self->restorer == me) {
        PyErr_Format(PyExc_RuntimeError,
                     "memtamer: %U was used while it was being restored (by code the restore "
                     "itself ran); it is still compressed: %%shrink restore %U",
                     self->name, self->name);
        return NULL;
    }
    /* Another thread is restoring it: wait without the GIL, as threading's
     * locks do, and let Ctrl-C stop the wait. */
    PyLockStatus locked = PyThread_acquire_lock_timed(self->lock, 0, 0);
    while (locked != PY_LOCK_ACQUIRED) {
        Py_BEGIN_ALLOW_THREADS locked = PyThread_acquire_lock_timed(self->lock, -1, 1);
        Py_END_ALLOW_THREADS if (locked == PY_LOCK_INTR && PyErr_CheckSignals() < 0)
        {
            return NULL;
        }
    }
    if (self->restored == NULL) { /* not done by the thread we waited for */
        self->restorer = me;
        obj = decompress(self, progress);
        self->restorer = 0;
        if (obj != NULL) {
            self->restored = Py_NewRef(obj);
            mt_frames_free(self->frames, self->nframes);
            self->frames = NULL;
            self->nframes = 0;
            if (rebind(self, obj) < 0) {
                Py_CLEAR(obj);
            }
        }
    }
    else {
        obj = Py_NewRef(self->restored);
    }
    PyThread_release_lock(self->lock);
    return obj;
}

static int is_proxy(PyObject *o);

/* What o stands for, as a new reference: a proxy's restored object, else o. */
static PyObject *
unwrap(PyObject *o)
{
    return is_proxy(o) ? target((compressed *)o, NULL) : Py_NewRef(o);
}

static PyObject *
forward_binary(PyObject *a, PyObject *b, binaryfunc op)
{
    PyObject *x = unwrap(a), *y = x ? unwrap(b) : NULL, *result = y ? op(x, y) : NULL;
    Py_XDECREF(x);
    Py_XDECREF(y);
    return result;
}

static PyObject *
forward_ternary(PyObject *a, PyObject *b, PyObject *c, ternaryfunc op)
{
    PyObject *x = unwrap(a), *y = x ? unwrap(b) : NULL, *z = y ? unwrap(c) : NULL;
    PyObject *result = z ? op(x, y, z) : NULL;
    Py_XDECREF(x);
    Py_XDECREF(y);
    Py_XDECREF(z);
    return result;
}

/* A slot whose first argument, a, is the proxy, with the rest of its
 * parameters after fail: call on x (what a stands for), or fail when a
 * cannot be restored. */
#define FORWARD_SELF(result_type, slot, fail, call, ...)                                           \
    static result_type slot(PyObject *a, ##__VA_ARGS__)                                            \
    {                                                                                              \
        PyObject *x = unwrap(a);                                                                   \
        result_type result = x ? call : fail;                                                      \
        Py_XDECREF(x);                                                                             \
        return result;                                                                             \
    }

#define FORWARD_BINARY(slot, op)                                                                   \
    static PyObject *slot(PyObject *a, PyObject *b)                                                \
    {                                                                                              \
        return forward_binary(a, b, op);                                                           \
    }
#define FORWARD_UNARY(slot, op) FORWARD_SELF(PyObject *, slot, NULL, op(x))
#define FORWARD_TERNARY(slot, op)                                                                  \
    static PyObject *slot(PyObject *a, PyObject *b, PyObject *c)                                   \
    {                                                                                              \
        return forward_ternary(a, b, c, op);                                                       \
    }

FORWARD_BINARY(proxy_add, PyNumber_Add)
FORWARD_BINARY(proxy_subtract, PyNumber_Subtract)
FORWARD_BINARY(proxy_multiply, PyNumber_Multiply)
FORWARD_BINARY(proxy_remainder, PyNumber_Remainder)
FORWARD_BINARY(proxy_divmod, PyNumber_Divmod)
FORWARD_BINARY(proxy_lshift, PyNumber_Lshift)
FORWARD_BINARY(proxy_rshift, PyNumber_Rshift)
FORWARD_BINARY(proxy_and, PyNumber_And)
FORWARD_BINARY(proxy_xor, PyNumber_Xor)
FORWARD_BINARY(proxy_or, PyNumber_Or)
FORWARD_BINARY(proxy_floor_divide, PyNumber_FloorDivide)
FORWARD_BINARY(proxy_true_divide, PyNumber_TrueDivide)
FORWARD_BINARY(proxy_matrix_multiply, PyNumber_MatrixMultiply)
FORWARD_BINARY(proxy_inplace_add, PyNumber_InPlaceAdd)
FORWARD_BINARY(proxy_inplace_subtract, PyNumber_InPlaceSubtract)
FORWARD_BINARY(proxy_inplace_multiply, PyNumber_InPlaceMultiply)
FORWARD_BINARY(proxy_inplace_remainder, PyNumber_InPlaceRemainder)
FORWARD_BINARY(proxy_inplace_lshift, PyNumber_InPlaceLshift)
FORWARD_BINARY(proxy_inplace_rshift, PyNumber_InPlaceRshift)
FORWARD_BINARY(proxy_inplace_and, PyNumber_InPlaceAnd)
FORWARD_BINARY(proxy_inplace_xor, PyNumber_InPlaceXor)
FORWARD_BINARY(proxy_inplace_or, PyNumber_InPlaceOr)
FORWARD_BINARY(proxy_inplace_floor_divide, PyNumber_InPlaceFloorDivide)
FORWARD_BINARY(proxy_inplace_true_divide, PyNumber_InPlaceTrueDivide)
FORWARD_BINARY(proxy_inplace_matrix_multiply, PyNumber_InPlaceMatrixMultiply)
FORWARD_BINARY(proxy_getitem, PyObject_GetItem)
FORWARD_BINARY(proxy_getattr, PyObject_GetAttr)
FORWARD_UNARY(proxy_negative, PyNumber_Negative)
FORWARD_UNARY(proxy_positive, PyNumber_Positive)
FORWARD_UNARY(proxy_absolute, PyNumber_Absolute)
FORWARD_UNARY(proxy_invert, PyNumber_Invert)
FORWARD_UNARY(proxy_int, PyNumber_Long)
FORWARD_UNARY(proxy_float, PyNumber_Float)
FORWARD_UNARY(proxy_index, PyNumber_Index)
FORWARD_UNARY(proxy_iter, PyObject_GetIter)
FORWARD_UNARY(proxy_str, PyObject_Str)

FORWARD_TERNARY(proxy_power, PyNumber_Power)
FORWARD_TERNARY(proxy_inplace_power, PyNumber_InPlacePower)
FORWARD_SELF(int, proxy_bool, -1, PyObject_IsTrue(x))
FORWARD_SELF(int, proxy_contains, -1, PySequence_Contains(x, item), PyObject *item)
FORWARD_SELF(Py_hash_t, proxy_hash, -1, PyObject_Hash(x))
FORWARD_SELF(int, proxy_setitem, -1,
             value ? PyObject_SetItem(x, key, value) : PyObject_DelItem(x, key), PyObject *key,
             PyObject *value)
FORWARD_SELF(int, proxy_setattr, -1, PyObject_SetAttr(x, attr, value), PyObject *attr,
             PyObject *value)

/* A compressed array's length is its shape's first (numpy's error for a
 * 0-d one), without a restore. */
static Py_ssize_t
proxy_length(PyObject *a)
{
    compressed *self = (compressed *)a;
    if (self->kind == KIND_ARRAY && self->restored == NULL) {
        if (PyTuple_GET_SIZE(self->shape) == 0) {
            PyErr_SetString(PyExc_TypeError, "len() of unsized object");
            return -1;
        }
        return PyLong_AsSsize_t(PyTuple_GET_ITEM(self->shape, 0));
    }
    PyObject *x = unwrap(a);
    Py_ssize_t result = x ? PyObject_Size(x) : -1;
    Py_XDECREF(x);
    return result;
}

static PyObject *
proxy_richcompare(PyObject *a, PyObject *b, int op)
{
    PyObject *x = unwrap(a), *y = x ? unwrap(b) : NULL;
    PyObject *result = y ? PyObject_RichCompare(x, y, op) : NULL;
    Py_XDECREF(x);
    Py_XDECREF(y);
    return result;
}

FORWARD_SELF(PyObject *, proxy_call, NULL, PyObject_Call(x, args, kwargs), PyObject *args,
             PyObject *kwargs)

/* The restored object exports the buffer: view->obj is it, not the proxy. */
FORWARD_SELF(int, proxy_getbuffer, -1, PyObject_GetBuffer(x, view, flags), Py_buffer *view,
             int flags)

/* What the proxy answers itself: its type (so isinstance and type() tell
 * the truth without restoring), its own size (for sizing walks), and the
 * methods below, which restore it on their own terms. */
static const char *const own_attributes[] = {"__class__",     "__sizeof__", "__array__",
                                             "__reduce_ex__", "__copy__",   "__deepcopy__"};

/* What a compressed array's description answers without a restore; NULL
 * (no exception) for any other attribute, or once it is restored. */
static PyObject *
described_attribute(compressed *self, PyObject *attr)
{
    if (self->kind != KIND_ARRAY || self->restored != NULL || !PyUnicode_Check(attr)) {
        return NULL;
    }
    if (PyUnicode_CompareWithASCIIString(attr, "shape") == 0) {
        return Py_NewRef(self->shape);
    }
    if (PyUnicode_CompareWithASCIIString(attr, "dtype") == 0) {
        return Py_NewRef(self->descr);
    }
    if (PyUnicode_CompareWithASCIIString(attr, "ndim") == 0) {
        return PyLong_FromSsize_t(PyTuple_GET_SIZE(self->shape));
    }
    if (PyUnicode_CompareWithASCIIString(attr, "nbytes") == 0) {
        return PyLong_FromSize_t(self->nbytes);
    }
    if (PyUnicode_CompareWithASCIIString(attr, "size") == 0) {
        PyObject *size = PyLong_FromLong(1);
        for (Py_ssize_t i = 0; size && i < PyTuple_GET_SIZE(self->shape); i++) {
            Py_SETREF(size, PyNumber_Multiply(size, PyTuple_GET_ITEM(self->shape, i)));
        }
        return size;
    }
    return NULL;
}

static PyObject *
proxy_getattro(PyObject *a, PyObject *attr)
{
    PyObject *described = described_attribute((compressed *)a, attr);
    if (described != NULL || PyErr_Occurred()) {
        return described;
    }
    for (size_t i = 0; PyUnicode_Check(attr) && i < Py_ARRAY_LENGTH(own_attributes); i++) {
        if (PyUnicode_CompareWithASCIIString(attr, own_attributes[i]) == 0) {
            return PyObject_GenericGetAttr(a, attr);
        }
    }
    return proxy_getattr(a, attr);
}

/* Pickling a proxy pickles the restored object: operator.getitem([obj], 0)
 * gives it back (the object's own reduce would name its class, not ours). */
static PyObject *
proxy_reduce_ex(PyObject *a, PyObject *Py_UNUSED(protocol))
{
    PyObject *x = NULL, *operator= NULL, *getitem = NULL, *result = NULL;
    if ((x = unwrap(a)) && (operator= PyImport_ImportModule("operator")) &&
        (getitem = PyObject_GetAttrString(operator, "getitem"))) {
        result = Py_BuildValue("(O([O]i))", getitem, x, 0);
    }
    Py_XDECREF(x);
    Py_XDECREF(operator);
    Py_XDECREF(getitem);
    return result;
}

/* copy.copy and copy.deepcopy of a proxy copy the restored object. */
static PyObject *
copy_restored(PyObject *a, const char *function, PyObject *memo)
{
    PyObject *x = NULL, *copy = NULL, *result = NULL;
    if ((x = unwrap(a)) && (copy = PyImport_ImportModule("copy"))) {
        result = memo ? PyObject_CallMethod(copy, function, "OO", x, memo)
                      : PyObject_CallMethod(copy, function, "O", x);
    }
    Py_XDECREF(x);
    Py_XDECREF(copy);
    return result;
}

static PyObject *
proxy_copy(PyObject *a, PyObject *Py_UNUSED(unused))
{
    return copy_restored(a, "copy", NULL);
}

static PyObject *
proxy_deepcopy(PyObject *a, PyObject *memo)
{
    return copy_restored(a, "deepcopy", memo);
}

/* numpy asks for __array__(dtype=None, copy=None) on the type. */
static PyObject *
proxy_array(PyObject *a, PyObject *args, PyObject *kwargs)
{
    PyObject *x = NULL, *numpy = NULL, *asarray = NULL, *call = NULL, *result = NULL;
    Py_ssize_t n = PyTuple_GET_SIZE(args);
    if (!(x = unwrap(a)) || !(numpy = PyImport_ImportModule("numpy")) ||
        !(asarray = PyObject_GetAttrString(numpy, "asarray")) || !(call = PyTuple_New(n + 1))) {
        goto done;
    }
    PyTuple_SET_ITEM(call, 0, Py_NewRef(x));
    for (Py_ssize_t i = 0; i < n; i++) {
        PyTuple_SET_ITEM(call, i + 1, Py_NewRef(PyTuple_GET_ITEM(args, i)));
    }
    result = PyObject_Call(asarray, call, kwargs);
done:
    Py_XDECREF(x);
    Py_XDECREF(numpy);
    Py_XDECREF(asarray);
    Py_XDECREF(call);
    return result;
}

static PyObject *
proxy_repr(compressed *self)
{
    if (self->restored != NULL) {
        return PyObject_Repr(self->restored);
    }
    char ratio[32], coder[48];
    PyOS_snprintf(ratio, sizeof ratio, "%.2f",
                  self->cbytes ? (double)self->nbytes / (double)self->cbytes : 0.0);
    mt_frames_coder(&self->how, coder, sizeof coder);
    return PyUnicode_FromFormat(
        "<memtamer compressed %U: %zu bytes -> %zu bytes (%s, ratio %s); "
        "any use of it restores it; restore it now with %%shrink restore %U or "
        "memtamer.shrink('restore', '%U')>",
        self->what, self->nbytes, self->cbytes, coder, ratio, self->name, self->name);
}

static PyObject *
proxy_sizeof(compressed *self, PyObject *Py_UNUSED(unused))
{
    size_t n = (size_t)Py_TYPE(self)->tp_basicsize + (size_t)self->nframes * sizeof(mt_frame);
    for (Py_ssize_t i = 0; i < self->nframes; i++) {
        for (Py_ssize_t j = 0; j < self->frames[i].nchunks; j++) {
            n += sizeof(mt_chunk) + self->frames[i].chunks[j].csize;
        }
    }
    return PyLong_FromSize_t(n);
}

static PyMethodDef proxy_methods[] = {
    {"__array__", (PyCFunction)(void (*)(void))proxy_array, METH_VARARGS | METH_KEYWORDS,
     "Restores it and gives numpy the array of the restored object."},
    {"__sizeof__", (PyCFunction)proxy_sizeof, METH_NOARGS, NULL},
    {"__reduce_ex__", proxy_reduce_ex, METH_O, NULL},
    {"__copy__", proxy_copy, METH_NOARGS, NULL},
    {"__deepcopy__", proxy_deepcopy, METH_O, NULL},
    {NULL},
};

static int
proxy_traverse(compressed *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->restored);
    return 0;
}

static int
proxy_clear(compressed *self)
{
    Py_CLEAR(self->restored);
    return 0;
}

static void
proxy_dealloc(compressed *self)
{
    PyTypeObject *type = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    mt_frames_free(self->frames, self->nframes);
    if (self->lock != NULL) {
        PyThread_free_lock(self->lock);
    }
    Py_XDECREF(self->name);
    Py_XDECREF(self->owner);
    Py_XDECREF(self->restored);
    Py_XDECREF(self->what);
    Py_XDECREF(self->descr);
    Py_XDECREF(self->shape);
    Py_XDECREF(self->strides);
    type->tp_free((PyObject *)self);
    Py_DECREF(type);
}

static int
is_proxy(PyObject *o)
{
    return Py_TYPE(o)->tp_dealloc == (destructor)proxy_dealloc;
}

static compressed *
proxy_arg(PyObject *o)
{
    if (!is_proxy(o)) {
        PyErr_Format(PyExc_TypeError, "expected a memtamer Compressed proxy, not %.100s",
                     Py_TYPE(o)->tp_name);
        return NULL;
    }
    return (compressed *)o;
}

PyDoc_STRVAR(
    mt_codec_restore__doc__,
    "restore(proxy, progress=None) -> the object, equal bit for bit to the one compressed; "
    "its name is rebound in the owner module.");
PyObject *
mt_codec_restore(PyObject *Py_UNUSED(module), PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"proxy", "progress", NULL};
    PyObject *proxy, *progress = NULL;
    compressed *self;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|O:restore", kwlist, &proxy, &progress) ||
        !(self = proxy_arg(proxy))) {
        return NULL;
    }
    return target(self, progress);
}

/* Whether self's frames give back exactly what in holds, in the same
 * layout: 1 yes, 0 no, -1 with an exception.  Runs no Python code. */
static int
frames_match(compressed *self, const input *in)
{
    if (in->kind != self->kind || in->nsources != self->nframes) {
        return 0;
    }
    if (in->kind == KIND_ARRAY) {
        PyArrayObject *a = in->array;
        PyObject *shape = PyObject_GetAttrString((PyObject *)a, "shape");
        PyObject *strides = shape ? PyObject_GetAttrString((PyObject *)a, "strides") : NULL;
        int same = strides ? PyObject_RichCompareBool(shape, self->shape, Py_EQ) : -1;
        if (same > 0) {
            same = PyObject_RichCompareBool(strides, self->strides, Py_EQ);
        }
        Py_XDECREF(shape);
        Py_XDECREF(strides);
        if (same <= 0) {
            return same;
        }
        if (!PyArray_EquivTypes(PyArray_DESCR(a), (PyArray_Descr *)self->descr)) {
            return 0;
        }
    }
    for (Py_ssize_t i = 0; i < in->nsources; i++) {
        if (in->sources[i].nbytes != self->frames[i].nbytes) {
            return 0;
        }
        int same = mt_frames_match(&self->frames[i], in->sources[i].ptr, &self->how);
        if (same <= 0) {
            return same;
        }
    }
    return 1;
}

/* compress() reads the object with the GIL released, and Python code runs
 * before the name is rebound: a thread may write into the object meanwhile.
 * Here, holding the GIL from the comparison to the rebinding, the frames
 * are compared with what the object holds now; when a thread wrote into
 * it, it is compressed again without letting go of the GIL, so no Python
 * thread can write until the name is rebound.  A thread that writes without
 * the GIL (a C extension's) is not held by it: a write of its during the
 * second comparison refuses the compress, but one after it (or after the
 * rebinding) goes to the old object and is lost.  Pickled objects are
 * pickled again for the comparison, which may run Python code (a class's
 * __reduce__): a change a thread makes to a part already pickled again,
 * before the comparison, is not seen. */
PyDoc_STRVAR(mt_codec_commit__doc__,
             "compress_commit(ns, name, obj, proxy): binds ns[name], still obj, to proxy once "
             "the proxy gives back exactly what obj holds now (compared holding the GIL); if a "
             "thread wrote into obj since compress(), compresses it again holding the GIL. "
             "ValueError with the reason, nothing bound, if name was rebound or obj keeps "
             "changing (a thread writing without the GIL).");
PyObject *
mt_codec_commit(PyObject *module, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"ns", "name", "obj", "proxy", NULL};
    PyObject *ns, *name, *obj, *proxy, *what = NULL, *result = NULL;
    compressed *self;
    mt_frame *frames = NULL;
    input in;
    memset(&in, 0, sizeof in);
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O!UOO:compress_commit", kwlist, &PyDict_Type,
                                     &ns, &name, &obj, &proxy) ||
        !(self = proxy_arg(proxy))) {
        return NULL;
    }
    if (self->frames == NULL || self->restored != NULL) {
        PyErr_Format(PyExc_ValueError, "the proxy of %U was already restored", name);
        return NULL;
    }
    /* Pickling again and numpy's dtype str (for a second compress) may run
     * Python code, and other threads with it; from the lookup to the
     * rebinding nothing does. */
    if (input_from_object(module, obj, &in) < 0 || (what = describe(obj, in.kind)) == NULL) {
        goto done;
    }
    if (mt_still_bound(ns, name, obj, "compressed") < 0) {
        goto done;
    }
    int same = frames_match(self, &in);
    if (same == 0) {
        mt_settings how = self->how;
        how.automatic = 0; /* the codec chosen the first time */
        if (mt_frames_compress(in.sources, in.nsources, &how, 0, NULL, 1, &frames) < 0) {
            goto done;
        }
        how.automatic = self->how.automatic;
        int described = proxy_describe(self, what, obj, &in, frames, &how);
        what = NULL; /* the proxy's now, and so are */
        frames = NULL;
        same = described < 0 ? -1 : frames_match(self, &in);
        if (same == 0) {
            PyErr_Format(PyExc_ValueError,
                         "%U kept changing while it was compressed again with every Python "
                         "thread held: something writes into it without the GIL (a thread of a "
                         "C extension); left as it was",
                         name);
        }
    }
    if (same > 0 && PyDict_SetItem(ns, name, proxy) == 0) {
        result = Py_NewRef(Py_None);
    }
done:
    Py_XDECREF(what);
    input_release(&in);
    return result;
}

PyDoc_STRVAR(mt_codec_info__doc__,
             "compressed_info(proxy) -> {name, what, kind, codec, level, nbytes, cbytes, "
             "restored}; restores nothing.");
PyObject *
mt_codec_info(PyObject *Py_UNUSED(module), PyObject *proxy)
{
    compressed *self = proxy_arg(proxy);
    if (self == NULL) {
        return NULL;
    }
    PyObject *method =
        self->frames ? mt_frames_describe(&self->frames[largest_frame(self->frames, self->nframes)],
                                          &self->how)
                     : PyUnicode_FromString("restored");
    if (method == NULL) {
        return NULL;
    }
    return Py_BuildValue("{sOsOsssssisOsNsnsnsO}", "name", self->name, "what", self->what, "kind",
                         self->kind == KIND_ARRAY ? "ndarray" : "pickle", "codec", self->how.codec,
                         "level", self->how.level, "auto", self->how.automatic ? Py_True : Py_False,
                         "method", method, "nbytes", (Py_ssize_t)self->nbytes, "cbytes",
                         (Py_ssize_t)self->cbytes, "restored", self->restored ? Py_True : Py_False);
}

static PyType_Slot compressed_slots[] = {
    {Py_tp_dealloc, proxy_dealloc},
    {Py_tp_traverse, proxy_traverse},
    {Py_tp_clear, proxy_clear},
    {Py_tp_repr, proxy_repr},
    {Py_tp_str, proxy_str},
    {Py_tp_hash, proxy_hash},
    {Py_tp_call, proxy_call},
    {Py_tp_getattro, proxy_getattro},
    {Py_tp_setattro, proxy_setattr},
    {Py_tp_richcompare, proxy_richcompare},
    {Py_tp_iter, proxy_iter},
    {Py_tp_methods, proxy_methods},
    {Py_tp_doc, "A variable compressed by %shrink compress: any use (but an array's shape, "
                "dtype, ndim, size, nbytes, len and repr) restores it; "
                "_core.restore(proxy) gives it back now."},
    {Py_nb_add, proxy_add},
    {Py_nb_subtract, proxy_subtract},
    {Py_nb_multiply, proxy_multiply},
    {Py_nb_remainder, proxy_remainder},
    {Py_nb_divmod, proxy_divmod},
    {Py_nb_power, proxy_power},
    {Py_nb_negative, proxy_negative},
    {Py_nb_positive, proxy_positive},
    {Py_nb_absolute, proxy_absolute},
    {Py_nb_bool, proxy_bool},
    {Py_nb_invert, proxy_invert},
    {Py_nb_lshift, proxy_lshift},
    {Py_nb_rshift, proxy_rshift},
    {Py_nb_and, proxy_and},
    {Py_nb_xor, proxy_xor},
    {Py_nb_or, proxy_or},
    {Py_nb_int, proxy_int},
    {Py_nb_float, proxy_float},
    {Py_nb_index, proxy_index},
    {Py_nb_floor_divide, proxy_floor_divide},
    {Py_nb_true_divide, proxy_true_divide},
    {Py_nb_matrix_multiply, proxy_matrix_multiply},
    {Py_nb_inplace_add, proxy_inplace_add},
    {Py_nb_inplace_subtract, proxy_inplace_subtract},
    {Py_nb_inplace_multiply, proxy_inplace_multiply},
    {Py_nb_inplace_remainder, proxy_inplace_remainder},
    {Py_nb_inplace_power, proxy_inplace_power},
    {Py_nb_inplace_lshift, proxy_inplace_lshift},
    {Py_nb_inplace_rshift, proxy_inplace_rshift},
    {Py_nb_inplace_and, proxy_inplace_and},
    {Py_nb_inplace_xor, proxy_inplace_xor},
    {Py_nb_inplace_or, proxy_inplace_or},
    {Py_nb_inplace_floor_divide, proxy_inplace_floor_divide},
    {Py_nb_inplace_true_divide, proxy_inplace_true_divide},
    {Py_nb_inplace_matrix_multiply, proxy_inplace_matrix_multiply},
    {Py_mp_length, proxy_length},
    {Py_mp_subscript, proxy_getitem},
    {Py_mp_ass_subscript, proxy_setitem},
    {Py_sq_contains, proxy_contains},
    {Py_bf_getbuffer, proxy_getbuffer},
    {0, NULL},
};

static PyType_Spec compressed_spec = {
    .name = "memtamer._core.Compressed",
    .basicsize = sizeof(compressed),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE |
             Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = compressed_slots,
};

PyObject *
mt_codec_make_type(PyObject *module)
{
    return PyType_FromModuleAndSpec(module, &compressed_spec, NULL);
}

PyDoc_STRVAR(mt_codec_set_pickler__doc__,
             "compress_set_pickler(choose): compress and compress_estimate pickle obj with "
             "choose(obj) when it gives a function (called as pickle.dumps(obj, protocol=5, "
             "buffer_callback=...) is), with pickle.dumps when it gives None; None: always "
             "pickle.dumps.");
PyObject *
mt_codec_set_pickler(PyObject *module, PyObject *choose)
{
    if (choose != Py_None && !PyCallable_Check(choose)) {
        PyErr_SetString(PyExc_TypeError, "choose must be callable, or None");
        return NULL;
    }
    Py_XSETREF(mt_get_state(module)->compress_pickler,
               choose == Py_None ? NULL : Py_NewRef(choose));
    Py_RETURN_NONE;
}

/* The _core methods of this file; module.c adds them at init. */
PyMethodDef mt_codec_methods[] = {
    {"compress", (PyCFunction)(void (*)(void))mt_codec_compress, METH_VARARGS | METH_KEYWORDS,
     mt_codec_compress__doc__},
    {"restore", (PyCFunction)(void (*)(void))mt_codec_restore, METH_VARARGS | METH_KEYWORDS,
     mt_codec_restore__doc__},
    {"compress_commit", (PyCFunction)(void (*)(void))mt_codec_commit, METH_VARARGS | METH_KEYWORDS,
     mt_codec_commit__doc__},
    {"compressed_info", mt_codec_info, METH_O, mt_codec_info__doc__},
    {"compress_set_pickler", mt_codec_set_pickler, METH_O, mt_codec_set_pickler__doc__},
    {"compress_estimate", (PyCFunction)(void (*)(void))mt_codec_estimate,
     METH_VARARGS | METH_KEYWORDS, mt_codec_estimate__doc__},
    {NULL, NULL, 0, NULL},
};
