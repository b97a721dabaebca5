/* codec: the compressed proxy type over c-blosc (codec.h).
 *
 * Everything here needs the GIL except the blosc calls, which run with it
 * released on memory that no Python object can free meanwhile (we hold a
 * reference to the source, and our chunks belong to no Python object yet). */
#include "memtamer/memtamer.h"

#include <blosc.h>
#include <string.h>
#include <unistd.h>

#include "memtamer/codec.h"
#include "memtamer/npy.h"

/* Progress is reported between chunks; blosc takes at most 2 GiB a call. */
#define CHUNK_BYTES ((size_t)64 << 20)
#define MAX_THREADS 8
#define DEFAULT_CODEC "lz4"
#define DEFAULT_LEVEL 5

enum { KIND_ARRAY = 0, KIND_PICKLE = 1 };

typedef struct {
    char *data; /* PyMem_RawMalloc'd compressed bytes */
    size_t csize, nbytes;
} chunk;

typedef struct {
    size_t nbytes;
    int typesize;
    Py_ssize_t nchunks;
    chunk *chunks; /* PyMem_RawCalloc'd */
} frame;

/* What to compress: one contiguous run of bytes per frame. */
typedef struct {
    const char *ptr;
    size_t nbytes;
    int typesize;
} source;

typedef struct {
    char codec[16];
    int level;
    int nthreads;
} settings;

typedef struct {
    PyObject_HEAD
    int kind;
    PyObject *name;    /* the variable it replaced, for the repr */
    PyObject *what;    /* "ndarray float64 (1000, 3)", "DataFrame" */
    PyObject *descr;   /* arrays: dtype, shape, strides, writeable */
    PyObject *shape, *strides;
    int writeable;
    Py_ssize_t nframes; /* arrays: 1; pickles: the stream, then its buffers */
    frame *frames;
    size_t nbytes, cbytes;
    settings how;
} compressed;

/* The one translator of blosc's return codes into Python exceptions. */
static void
blosc_error(int rc, const char *doing)
{
    if (rc == 0 && strcmp(doing, "decompressing") == 0) {
        PyErr_SetString(PyExc_ValueError,
                        "memtamer: compressed data is corrupt or truncated (blosc returned 0)");
    }
    else {
        PyErr_Format(PyExc_RuntimeError, "memtamer: blosc failed while %s (code %d)", doing, rc);
    }
}

static int
thread_count(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : (n > MAX_THREADS ? MAX_THREADS : (int)n);
}

static void
frames_free(frame *frames, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; frames && i < n; i++) {
        for (Py_ssize_t j = 0; j < frames[i].nchunks; j++) {
            PyMem_RawFree(frames[i].chunks[j].data);
        }
        PyMem_RawFree(frames[i].chunks);
    }
    PyMem_RawFree(frames);
}

/* Calls progress(done, total) when given, and lets Ctrl-C abort.  -1/0. */
static int
report_progress(PyObject *progress, size_t done, size_t total)
{
    if (PyErr_CheckSignals() < 0) {
        return -1;
    }
    if (progress == NULL || progress == Py_None) {
        return 0;
    }
    PyObject *r = PyObject_CallFunction(progress, "nn", (Py_ssize_t)done, (Py_ssize_t)total);
    Py_XDECREF(r);
    return r ? 0 : -1;
}

/* Compresses the first `limit` bytes of each source (all of them when limit
 * is 0) into *out.  On failure nothing is left allocated. */
static int
compress_sources(const source *src, Py_ssize_t n, const settings *how, size_t limit,
                 PyObject *progress, frame **out)
{
    size_t total = 0, done = 0, largest = 0;
    char *scratch = NULL;
    frame *frames = PyMem_RawCalloc((size_t)(n ? n : 1), sizeof *frames);
    if (frames == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        size_t len = limit && src[i].nbytes > limit ? limit : src[i].nbytes;
        frames[i].nbytes = len;
        frames[i].typesize = src[i].typesize;
        total += len;
        largest = len > largest ? len : largest;
    }
    scratch = PyMem_RawMalloc((largest < CHUNK_BYTES ? largest : CHUNK_BYTES) + BLOSC_MAX_OVERHEAD);
    if (scratch == NULL) {
        PyErr_NoMemory();
        goto error;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        frame *f = &frames[i];
        f->nchunks = (Py_ssize_t)((f->nbytes + CHUNK_BYTES - 1) / CHUNK_BYTES);
        if (f->nchunks && !(f->chunks = PyMem_RawCalloc((size_t)f->nchunks, sizeof(chunk)))) {
            f->nchunks = 0;
            PyErr_NoMemory();
            goto error;
        }
        for (Py_ssize_t j = 0; j < f->nchunks; j++) {
            size_t offset = (size_t)j * CHUNK_BYTES;
            size_t len = f->nbytes - offset < CHUNK_BYTES ? f->nbytes - offset : CHUNK_BYTES;
            chunk *c = &f->chunks[j];
            int rc;
            Py_BEGIN_ALLOW_THREADS
            rc = blosc_compress_ctx(how->level, BLOSC_SHUFFLE, (size_t)f->typesize, len,
                                    src[i].ptr + offset, scratch, len + BLOSC_MAX_OVERHEAD,
                                    how->codec, 0, how->nthreads);
            if (rc > 0 && (c->data = PyMem_RawMalloc((size_t)rc)) != NULL) {
                memcpy(c->data, scratch, (size_t)rc);
            }
            Py_END_ALLOW_THREADS
            if (rc <= 0) {
                blosc_error(rc, "compressing");
                goto error;
            }
            if (c->data == NULL) {
                PyErr_NoMemory();
                goto error;
            }
            c->csize = (size_t)rc;
            c->nbytes = len;
            done += len;
            if (report_progress(progress, done, total) < 0) {
                goto error;
            }
        }
    }
    PyMem_RawFree(scratch);
    *out = frames;
    return 0;
error:
    PyMem_RawFree(scratch);
    frames_free(frames, n);
    return -1;
}

static int
decompress_frame(const frame *f, char *dest, const settings *how, PyObject *progress,
                 size_t *done, size_t total)
{
    size_t offset = 0;
    for (Py_ssize_t j = 0; j < f->nchunks; j++) {
        const chunk *c = &f->chunks[j];
        int rc;
        Py_BEGIN_ALLOW_THREADS
        rc = blosc_decompress_ctx(c->data, dest + offset, c->nbytes, how->nthreads);
        Py_END_ALLOW_THREADS
        if (rc <= 0 || (size_t)rc != c->nbytes) {
            blosc_error(rc > 0 ? 0 : rc, "decompressing");
            return -1;
        }
        offset += c->nbytes;
        *done += c->nbytes;
        if (report_progress(progress, *done, total) < 0) {
            return -1;
        }
    }
    return 0;
}

/* ---- what gets compressed ---- */

/* Where the bytes to compress come from, and what keeps them alive. */
typedef struct {
    int kind;
    PyArrayObject *array; /* arrays: a C/F/dense-contiguous array */
    PyObject *stream;     /* pickles: the protocol 5 stream (bytes) */
    PyObject *buffers;    /* and its out-of-band PickleBuffers (list) */
    Py_buffer *views;
    Py_ssize_t nviews;
    source *sources;
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

static int
typesize_of(Py_ssize_t itemsize)
{
    return itemsize >= 1 && itemsize <= BLOSC_MAX_TYPESIZE ? (int)itemsize : 1;
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
    in->sources = PyMem_Calloc(1, sizeof(source));
    if (in->sources == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    in->sources[0].ptr = PyArray_BYTES(in->array);
    in->sources[0].nbytes = (size_t)PyArray_NBYTES(in->array);
    in->sources[0].typesize = typesize_of(PyArray_ITEMSIZE(in->array));
    in->nsources = 1;
    in->kind = KIND_ARRAY;
    return 0;
}

static int
input_from_pickle(PyObject *obj, input *in)
{
    PyObject *pickle = NULL, *append = NULL, *dumps = NULL, *kw = NULL, *args = NULL;
    int rc = -1;
    in->kind = KIND_PICKLE;
    if (!(pickle = PyImport_ImportModule("pickle")) || !(in->buffers = PyList_New(0)) ||
        !(append = PyObject_GetAttrString(in->buffers, "append")) ||
        !(dumps = PyObject_GetAttrString(pickle, "dumps")) ||
        !(args = PyTuple_Pack(1, obj)) ||
        !(kw = Py_BuildValue("{siss}", "protocol", 5, "buffer_callback", "")) ||
        PyDict_SetItemString(kw, "buffer_callback", append) < 0 ||
        !(in->stream = PyObject_Call(dumps, args, kw))) {
        goto done;
    }
    Py_ssize_t nbuf = PyList_GET_SIZE(in->buffers);
    in->views = PyMem_Calloc((size_t)(nbuf ? nbuf : 1), sizeof(Py_buffer));
    in->sources = PyMem_Calloc((size_t)nbuf + 1, sizeof(source));
    if (in->views == NULL || in->sources == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    in->sources[0].ptr = PyBytes_AS_STRING(in->stream);
    in->sources[0].nbytes = (size_t)PyBytes_GET_SIZE(in->stream);
    in->sources[0].typesize = 1;
    in->nsources = 1;
    for (Py_ssize_t i = 0; i < nbuf; i++) {
        Py_buffer *view = &in->views[i];
        if (PyObject_GetBuffer(PyList_GET_ITEM(in->buffers, i), view, PyBUF_ANY_CONTIGUOUS) < 0) {
            goto done;
        }
        in->nviews++;
        in->sources[in->nsources].ptr = view->buf;
        in->sources[in->nsources].nbytes = (size_t)view->len;
        in->sources[in->nsources].typesize = typesize_of(view->itemsize);
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
input_from_object(PyObject *obj, input *in)
{
    int np = mt_npy_ready();
    if (np < 0) {
        return -1;
    }
    memset(in, 0, sizeof *in);
    if (np && PyArray_CheckExact(obj) && !PyDataType_REFCHK(PyArray_DESCR((PyArrayObject *)obj))) {
        return input_from_array((PyArrayObject *)obj, in);
    }
    return input_from_pickle(obj, in);
}

static int
parse_settings(PyObject *codec, PyObject *level, settings *how)
{
    const char *name = codec && codec != Py_None ? PyUnicode_AsUTF8(codec) : DEFAULT_CODEC;
    if (name == NULL) {
        return -1;
    }
    if (blosc_compname_to_compcode(name) < 0 || strlen(name) >= sizeof how->codec) {
        PyErr_Format(PyExc_ValueError,
                     "unknown codec '%s': use one of %s (this blosc %s)", name,
                     blosc_list_compressors(), blosc_get_version_string());
        return -1;
    }
    strcpy(how->codec, name);
    how->level = DEFAULT_LEVEL;
    if (level && level != Py_None) {
        long l = PyLong_AsLong(level);
        if (l == -1 && PyErr_Occurred()) {
            return -1;
        }
        if (l < 0 || l > 9) {
            PyErr_Format(PyExc_ValueError, "level must be 0 (no compression) to 9 (best), not %ld", l);
            return -1;
        }
        how->level = (int)l;
    }
    how->nthreads = thread_count();
    return 0;
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

static PyObject *
make_proxy(PyTypeObject *type, PyObject *obj, PyObject *name, input *in, frame *frames,
           const settings *how)
{
    compressed *self = (compressed *)type->tp_alloc(type, 0);
    if (self == NULL) {
        frames_free(frames, in->nsources);
        return NULL;
    }
    self->frames = frames;
    self->nframes = in->nsources;
    self->kind = in->kind;
    self->how = *how;
    self->name = Py_NewRef(name);
    for (Py_ssize_t i = 0; i < in->nsources; i++) {
        self->nbytes += frames[i].nbytes;
        for (Py_ssize_t j = 0; j < frames[i].nchunks; j++) {
            self->cbytes += frames[i].chunks[j].csize;
        }
    }
    if (in->kind == KIND_ARRAY) {
        PyArrayObject *a = in->array;
        self->descr = Py_NewRef((PyObject *)PyArray_DESCR(a));
        self->shape = PyObject_GetAttrString((PyObject *)a, "shape");
        self->strides = PyObject_GetAttrString((PyObject *)a, "strides");
        self->writeable = PyArray_ISWRITEABLE((PyArrayObject *)obj);
    }
    self->what = describe(obj, in->kind);
    if (self->what == NULL || (in->kind == KIND_ARRAY && (!self->shape || !self->strides))) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

/* _core.compress(obj, name, codec='lz4', level=5, progress=None) -> Compressed */
PyObject *
mt_codec_compress(PyObject *module, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"obj", "name", "codec", "level", "progress", NULL};
    PyObject *obj, *name, *codec = NULL, *level = NULL, *progress = NULL;
    settings how;
    input in;
    frame *frames = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OU|OOO:compress", kwlist, &obj, &name, &codec,
                                     &level, &progress) ||
        parse_settings(codec, level, &how) < 0) {
        return NULL;
    }
    if (input_from_object(obj, &in) < 0) {
        input_release(&in);
        return NULL;
    }
    PyObject *result = NULL;
    if (compress_sources(in.sources, in.nsources, &how, 0, progress, &frames) == 0) {
        result = make_proxy((PyTypeObject *)mt_get_state(module)->compressed_type, obj, name, &in,
                            frames, &how);
    }
    input_release(&in);
    return result;
}

/* _core.compress_estimate(obj, codec, level, sample) -> (nbytes, estimated compressed bytes)
 * from the first `sample` bytes of each frame. */
PyObject *
mt_codec_estimate(PyObject *module, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"obj", "codec", "level", "sample", NULL};
    PyObject *obj, *codec = NULL, *level = NULL;
    Py_ssize_t sample = 16 << 20;
    settings how;
    input in;
    frame *frames = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|OOn:compress_estimate", kwlist, &obj, &codec,
                                     &level, &sample) ||
        parse_settings(codec, level, &how) < 0) {
        return NULL;
    }
    if (sample < 1) {
        PyErr_SetString(PyExc_ValueError, "sample must be positive");
        return NULL;
    }
    if (input_from_object(obj, &in) < 0 ||
        compress_sources(in.sources, in.nsources, &how, (size_t)sample, NULL, &frames) < 0) {
        input_release(&in);
        return NULL;
    }
    double nbytes = 0, estimate = 0;
    for (Py_ssize_t i = 0; i < in.nsources; i++) {
        size_t csize = 0;
        for (Py_ssize_t j = 0; j < frames[i].nchunks; j++) {
            csize += frames[i].chunks[j].csize;
        }
        nbytes += (double)in.sources[i].nbytes;
        if (frames[i].nbytes) {
            estimate += (double)csize * (double)in.sources[i].nbytes / (double)frames[i].nbytes;
        }
    }
    frames_free(frames, in.nsources);
    input_release(&in);
    return Py_BuildValue("(LL)", (long long)nbytes, (long long)estimate);
}

PyObject *
mt_codec_codecs(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(unused))
{
    return Py_BuildValue("{ssss}", "codecs", blosc_list_compressors(), "blosc",
                         blosc_get_version_string());
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
    if (decompress_frame(&self->frames[0], PyArray_BYTES(arr), &self->how, progress, &done,
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
        decompress_frame(&self->frames[0], PyBytes_AS_STRING(stream), &self->how, progress, &done,
                         self->nbytes) < 0 ||
        !(buffers = PyList_New(self->nframes - 1))) {
        goto done;
    }
    for (Py_ssize_t i = 1; i < self->nframes; i++) {
        PyObject *b = PyByteArray_FromStringAndSize(NULL, (Py_ssize_t)self->frames[i].nbytes);
        if (b == NULL) {
            goto done;
        }
        PyList_SET_ITEM(buffers, i - 1, b);
        if (decompress_frame(&self->frames[i], PyByteArray_AS_STRING(b), &self->how, progress,
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

static PyObject *
compressed_restore(compressed *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"progress", NULL};
    PyObject *progress = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|O:restore", kwlist, &progress)) {
        return NULL;
    }
    if (self->kind == KIND_ARRAY) {
        int np = mt_npy_ready();
        if (np <= 0) {
            if (np == 0) {
                PyErr_SetString(PyExc_RuntimeError, "import numpy to restore a numpy array");
            }
            return NULL;
        }
        return restore_array(self, progress);
    }
    return restore_pickle(self, progress);
}

static PyObject *
compressed_repr(compressed *self)
{
    char ratio[32];
    PyOS_snprintf(ratio, sizeof ratio, "%.2f",
                  self->cbytes ? (double)self->nbytes / (double)self->cbytes : 0.0);
    return PyUnicode_FromFormat(
        "<memtamer compressed %U: %zu bytes -> %zu bytes (%s level %d, ratio %s); "
        "restore with %%shrink restore %U or memtamer.shrink('restore', '%U'); "
        "a cell that reads %U restores it first>",
        self->what, self->nbytes, self->cbytes, self->how.codec, self->how.level, ratio,
        self->name, self->name, self->name);
}

static PyObject *
compressed_sizeof(compressed *self, PyObject *Py_UNUSED(unused))
{
    size_t n = (size_t)Py_TYPE(self)->tp_basicsize + self->cbytes +
               (size_t)self->nframes * sizeof(frame);
    for (Py_ssize_t i = 0; i < self->nframes; i++) {
        n += (size_t)self->frames[i].nchunks * sizeof(chunk);
    }
    return PyLong_FromSize_t(n);
}

static PyObject *
get_nbytes(compressed *self, void *Py_UNUSED(c))
{
    return PyLong_FromSize_t(self->nbytes);
}

static PyObject *
get_cbytes(compressed *self, void *Py_UNUSED(c))
{
    return PyLong_FromSize_t(self->cbytes);
}

static PyObject *
get_codec(compressed *self, void *Py_UNUSED(c))
{
    return PyUnicode_FromString(self->how.codec);
}

static PyObject *
get_level(compressed *self, void *Py_UNUSED(c))
{
    return PyLong_FromLong(self->how.level);
}

static PyObject *
get_kind(compressed *self, void *Py_UNUSED(c))
{
    return PyUnicode_FromString(self->kind == KIND_ARRAY ? "ndarray" : "pickle");
}

static PyObject *
get_name(compressed *self, void *Py_UNUSED(c))
{
    return Py_NewRef(self->name);
}

static PyObject *
get_what(compressed *self, void *Py_UNUSED(c))
{
    return Py_NewRef(self->what);
}

static PyGetSetDef compressed_getset[] = {
    {"nbytes", (getter)get_nbytes, NULL, "bytes of the original data", NULL},
    {"cbytes", (getter)get_cbytes, NULL, "bytes of compressed data held", NULL},
    {"codec", (getter)get_codec, NULL, "blosc codec", NULL},
    {"level", (getter)get_level, NULL, "compression level 0-9", NULL},
    {"kind", (getter)get_kind, NULL, "'ndarray' (raw data) or 'pickle' (protocol 5)", NULL},
    {"name", (getter)get_name, NULL, "the variable it replaced", NULL},
    {"what", (getter)get_what, NULL, "what was compressed", NULL},
    {NULL},
};

static PyMethodDef compressed_methods[] = {
    {"restore", (PyCFunction)(void (*)(void))compressed_restore, METH_VARARGS | METH_KEYWORDS,
     "restore(progress=None) -> a new object equal, bit for bit, to the one compressed."},
    {"__sizeof__", (PyCFunction)compressed_sizeof, METH_NOARGS, NULL},
    {NULL},
};

static void
compressed_dealloc(compressed *self)
{
    PyTypeObject *type = Py_TYPE(self);
    frames_free(self->frames, self->nframes);
    Py_XDECREF(self->name);
    Py_XDECREF(self->what);
    Py_XDECREF(self->descr);
    Py_XDECREF(self->shape);
    Py_XDECREF(self->strides);
    type->tp_free((PyObject *)self);
    Py_DECREF(type);
}

static PyType_Slot compressed_slots[] = {
    {Py_tp_dealloc, compressed_dealloc},
    {Py_tp_repr, compressed_repr},
    {Py_tp_methods, compressed_methods},
    {Py_tp_getset, compressed_getset},
    {Py_tp_doc, "A variable compressed by %shrink compress; restore() gives it back."},
    {0, NULL},
};

static PyType_Spec compressed_spec = {
    .name = "memtamer._core.Compressed",
    .basicsize = sizeof(compressed),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = compressed_slots,
};

PyObject *
mt_codec_make_type(PyObject *module)
{
    return PyType_FromModuleAndSpec(module, &compressed_spec, NULL);
}
