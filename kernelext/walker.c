/* walker: deep sizes and their attribution to roots (walker.h).
 * Every function here needs the GIL. */
#include "memtamer/memtamer.h"

#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "memtamer/buffers.h"
#include "memtamer/npy.h"
#include "memtamer/pyver.h"
#include "memtamer/walker.h"

/* PyGC_Head (two words) is internal since 3.8; sys.getsizeof adds it for
 * objects the collector tracks, and the tests compare against getsizeof. */
#define GC_HEADER_BYTES ((long long)(2 * sizeof(void *)))
/* How many objects between two looks at the clock and at pending signals. */
#define CHECK_EVERY 4096
/* Roots sharing one big object beyond this are not paired up in shares
 * (the pairs grow quadratically); holders and exclusive are unaffected. */
#define MAX_SHARERS 64
/* The walker's own memory has a fixed cap, whatever the size of what it
 * walks (about 40 MiB in all): past one of these the walk stops, as when
 * its time runs out, and its figures are estimates. */
#define MAX_ENTRIES (1 << 19)  /* shared objects: 16 MiB of entries, 4 MiB of slots */
#define MAX_REACHES (1 << 19)  /* 4 MiB */
#define MAX_FRAMES (1 << 16)   /* nesting depth (a last child replaces its parent): 5 MiB */
#define MAX_CHILDREN (1 << 20) /* references taken from tp_traverse at once: 8 MiB */
/* Buffers at least this big are counted by address, once whatever object
 * reaches them (an array and the tensor made from it); smaller ones are
 * charged to their holder, so a list of many small arrays costs no table
 * entries for their data. */
#define KEYED_BUFFER_MIN 4096
/* Types whose buffer kind (buffers.h) is remembered during a walk. */
#define KIND_CACHE 256
/* A cell's walk is mostly a few objects; the table doubles as it fills. */
#define INITIAL_SLOTS 64

/* A buffer's table key: its address with the top bit set, which no
 * object's address has (user space is the lower half of the address
 * space), so buffers and objects share the table without colliding. */
#define BUFFER_KEY(start) ((PyObject *)((start) | ((uintptr_t)1 << (sizeof(uintptr_t) * 8 - 1))))

/* E_TWIN: a buffer that roots reach through different objects. */
enum { E_ROOT = 1, E_SHARED = 2, E_BARRIER = 4, E_BUFFER = 8, E_TWIN = 16 };

typedef struct {
    PyObject *key;
    long long size;                /* its own size plus the refcount-1 objects charged to it */
    int32_t first_root, last_root; /* -1 until a root reaches it */
    union {
        int32_t refs; /* an object's: references to it the walk can explain */
        int32_t via;  /* a buffer's: the entry of the object that led to it first */
    };
    int32_t flags;
} entry;

/* How a frame lists its object's children. */
enum {
    F_LEAF,     /* none: never opened */
    F_SEQUENCE, /* list or tuple, by index */
    F_DICT,     /* PyDict_Next: the key, then its value */
    F_VALUES,   /* PyDict_Next: values only (a frame's locals) */
    F_SET,      /* set or frozenset, through its C iterator */
    F_CARRAY,   /* a contiguous object array's items, by index */
    F_ARRAY,    /* another object array's items, through numpy's iterator */
    F_CHILDREN, /* the references tp_traverse listed */
};

/* An object whose children are being visited.  It owns a reference to
 * everything it points to, so no code that runs during the walk (a
 * __sizeof__, a signal handler, a finalizer) can free what the walker is
 * about to read.  Children are read one at a time, by index or position,
 * so a container's length costs the walker no memory. */
typedef struct {
    PyObject *obj;
    PyObject *iter;         /* F_SET, F_ARRAY */
    PyObject *pending;      /* visited before the next child: a value, an array's base */
    PyObject **children;    /* F_CHILDREN */
    Py_ssize_t pos, len;    /* next index or dict position; len of children */
    Py_ssize_t held;        /* children allocated, counted in children_held */
    Py_ssize_t done;        /* dict pairs and set items taken, for the estimate */
    long long bytes_before; /* the root's bytes when the frame opened */
    int32_t charge;         /* the entry refcount-1 children are charged to */
    uint8_t kind, revisit;
    uint8_t refs; /* references each child edge stands for (0 on a revisit) */
} frame;

typedef struct {
    int32_t entry, root;
} reach;

struct mt_walker {
    entry *entries;
    Py_ssize_t nentries, entries_cap;
    int32_t *slots; /* open addressing, -1 empty, linear probing */
    size_t slot_mask;
    frame *frames;
    Py_ssize_t depth, frames_cap;
    Py_ssize_t children_held; /* in all F_CHILDREN frames */
    reach *log;               /* a root reaching a tracked object again (not first) */
    Py_ssize_t nlog, log_cap;
    mt_walker_totals *totals;
    int32_t *root_entry;
    Py_ssize_t nroots;
    Py_ssize_t *holders, *holder_start;
    mt_walker_share *shares;
    Py_ssize_t *share_start;
    PyObject *barriers;
    PyObject *sizeof_name; /* "__sizeof__", interned */
    double deadline;
    long long big;
    int numpy;
    long long ticks;
    /* Set when the walk stopped for time, a signal or its memory cap (an
     * exception is set only for a signal). */
    int stopped;
    int32_t root;       /* being walked */
    PyObject *last_key; /* the object looked up last, and its entry */
    Py_ssize_t last_idx;
    /* Buffer kinds of types met, direct-mapped by address; each type held
     * (code run by an export could free a type and reuse its address).
     * Allocated at the first type looked up: most cells' walks (a few small
     * objects) never need it, and zeroing it would cost them more than
     * their walk. */
    struct kind_slot {
        PyTypeObject *type;
        mt_buffers_kind kind;
    } * kinds;
    mt_buffer_ranges ranges; /* of the object being opened */
};

static size_t
hash_pointer(const void *p)
{
    uint64_t x = (uint64_t)(uintptr_t)p;
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return (size_t)x;
}

static int
rehash(mt_walker *w, size_t nslots)
{
    int32_t *slots = PyMem_RawMalloc(nslots * sizeof *slots);
    if (slots == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    memset(slots, 0xff, nslots * sizeof *slots);
    for (Py_ssize_t i = 0; i < w->nentries; i++) {
        size_t s = hash_pointer(w->entries[i].key) & (nslots - 1);
        while (slots[s] >= 0) {
            s = (s + 1) & (nslots - 1);
        }
        slots[s] = (int32_t)i;
    }
    PyMem_RawFree(w->slots);
    w->slots = slots;
    w->slot_mask = nslots - 1;
    return 0;
}

/* Index of key's entry, added when missing; -1 with an exception, -2 when
 * the table is full (the walk stops). */
static Py_ssize_t
find_or_add(mt_walker *w, PyObject *key)
{
    size_t s = hash_pointer(key) & w->slot_mask;
    for (;;) {
        int32_t i = w->slots[s];
        if (i < 0) {
            break;
        }
        if (w->entries[i].key == key) {
            return i;
        }
        s = (s + 1) & w->slot_mask;
    }
    if (w->nentries >= MAX_ENTRIES) {
        w->stopped = 1;
        return -2;
    }
    if ((size_t)(w->nentries + 1) * 2 > w->slot_mask + 1) {
        if (rehash(w, (w->slot_mask + 1) * 2) < 0) {
            return -1;
        }
        s = hash_pointer(key) & w->slot_mask;
        while (w->slots[s] >= 0) {
            s = (s + 1) & w->slot_mask;
        }
    }
    if (mt_reserve((void **)&w->entries, &w->entries_cap, w->nentries + 1, sizeof(entry)) < 0) {
        return -1;
    }
    entry *e = &w->entries[w->nentries];
    e->key = key;
    e->size = 0;
    e->first_root = e->last_root = -1;
    e->refs = 0;
    e->flags = 0;
    w->slots[s] = (int32_t)w->nentries;
    return w->nentries++;
}

/* Not data, and a door to everything: never entered. */
static int
is_code_or_namespace(PyObject *o)
{
    return PyModule_Check(o) || PyType_Check(o) || PyFunction_Check(o) || PyCFunction_Check(o) ||
           PyCode_Check(o);
}

/* Lives as long as the process: never counted. */
static int
is_singleton(PyObject *o)
{
    return o == Py_None || o == Py_True || o == Py_False || o == Py_Ellipsis ||
           o == Py_NotImplemented;
}

int
mt_walker_is_data(PyObject *o)
{
    return !is_singleton(o) && !is_code_or_namespace(o);
}

/* What sys.getsizeof adds to __sizeof__: the collector's header and, for
 * classes with a managed __dict__, the pre-header pointers. */
static long long
preheader(PyTypeObject *tp)
{
    return (PyType_IS_GC(tp) ? GC_HEADER_BYTES : 0) + mt_pyver_preheader_bytes(tp);
}

long long
mt_walker_object_bytes(PyObject *o)
{
    PyObject *r = PyObject_CallMethod(o, "__sizeof__", NULL);
    long long size = r == NULL ? -1 : PyLong_AsLongLong(r);
    Py_XDECREF(r);
    return size < 0 ? -1 : size + preheader(Py_TYPE(o));
}

/* The C-level __sizeof__ to call for tp's objects (borrowed), or NULL for
 * object.__sizeof__'s arithmetic.  Looked up in the type's MRO without
 * binding it, so no Python code runs (a descriptor's __get__ could free
 * what is being walked).  Overrides written in Python are not trusted
 * either: pandas' return the deep size, which the walk would count twice. */
static PyObject *
own_sizeof(const mt_walker *w, PyTypeObject *tp)
{
    PyObject *method = _PyType_Lookup(tp, w->sizeof_name);
    PyObject *base = _PyType_Lookup(&PyBaseObject_Type, w->sizeof_name);
    if (method == NULL || !Py_IS_TYPE(method, &PyMethodDescr_Type)) {
        method = base;
    }
    return method == base && !MT_PYVER_OBJECT_SIZEOF_COUNTS_INLINE_VALUES ? NULL : method;
}

/* What object.__sizeof__ says (before 3.13), with sys.getsizeof's header. */
static long long
basic_size(PyObject *o)
{
    PyTypeObject *tp = Py_TYPE(o);
    Py_ssize_t items = tp->tp_itemsize ? Py_SIZE(o) : 0;
    return tp->tp_basicsize + (long long)(items < 0 ? -items : items) * tp->tp_itemsize +
           preheader(tp);
}

static long long
sized_by_type(const mt_walker *w, PyObject *o)
{
    PyTypeObject *tp = Py_TYPE(o);
    PyObject *method = own_sizeof(w, tp);
    long long size = -1;
    if (method != NULL) {
        PyObject *r = PyObject_CallOneArg(method, o);
        if (r != NULL) {
            size = PyLong_Check(r) ? PyLong_AsLongLong(r) : -1;
            Py_DECREF(r);
        }
        if (size < 0) { /* a broken __sizeof__: fall back to the arithmetic */
            PyErr_Clear();
        }
    }
    return size < 0 ? basic_size(o) : size + preheader(tp);
}

/* The size of a leaf that arithmetic alone gives (no call, no code run),
 * or -1. */
static long long
leaf_size(PyObject *o)
{
    PyTypeObject *tp = Py_TYPE(o);
    if (tp == &PyFloat_Type) {
        return tp->tp_basicsize;
    }
    if (tp == &PyUnicode_Type && PyUnicode_IS_COMPACT_ASCII(o)) {
        return (long long)sizeof(PyASCIIObject) + PyUnicode_GET_LENGTH(o) + 1;
    }
    if (tp == &PyBytes_Type) {
        return tp->tp_basicsize + Py_SIZE(o);
    }
    if (tp == &PyLong_Type) {
        int overflow;
        long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
        if (!overflow) {
            unsigned long long m = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
            int bits = m ? 64 - __builtin_clzll(m) : 0;
            long long digits = bits ? (bits + PyLong_SHIFT - 1) / PyLong_SHIFT : 1;
            return tp->tp_basicsize + digits * tp->tp_itemsize;
        }
    }
    return -1;
}

static mt_buffers_kind
buffers_kind(mt_walker *w, PyTypeObject *tp)
{
    if (w->kinds == NULL && (w->kinds = PyMem_RawCalloc(KIND_CACHE, sizeof *w->kinds)) == NULL) {
        return mt_buffers_kind_of(tp); /* uncached: the cache only saves time */
    }
    size_t slot = hash_pointer(tp) % KIND_CACHE;
    if (w->kinds[slot].type != tp) {
        Py_XSETREF(w->kinds[slot].type, (PyTypeObject *)Py_NewRef(tp));
        w->kinds[slot].kind = mt_buffers_kind_of(tp);
    }
    return w->kinds[slot].kind;
}

/* The bytes of an array's own data that are counted by address, 0 when
 * its data is counted with it (small) or is another object's (a view). */
static long long
keyed_array_data(const mt_walker *w, PyObject *o)
{
    if (!w->numpy || !PyArray_Check(o) ||
        !PyArray_CHKFLAGS((PyArrayObject *)o, NPY_ARRAY_OWNDATA)) {
        return 0;
    }
    long long bytes = PyArray_NBYTES((PyArrayObject *)o);
    return bytes >= KEYED_BUFFER_MIN ? bytes : 0;
}

/* sys.getsizeof(o) without its method call for the bulk types; for
 * objects whose buffers are counted by address, without them. */
static long long
object_size(mt_walker *w, PyObject *o)
{
    PyTypeObject *tp = Py_TYPE(o);
    long long size = leaf_size(o);
    if (size >= 0) {
        return size;
    }
    if (buffers_kind(w, tp) != MT_BUFFERS_NONE) {
        /* Their __sizeof__ (pyarrow's) may add the buffers: the header only. */
        return basic_size(o);
    }
    if (tp == &PyTuple_Type) {
        return tp->tp_basicsize + Py_SIZE(o) * (long long)sizeof(PyObject *) + GC_HEADER_BYTES;
    }
    if (tp == &PyList_Type) {
        return tp->tp_basicsize + ((PyListObject *)o)->allocated * (long long)sizeof(PyObject *) +
               GC_HEADER_BYTES;
    }
    return sized_by_type(w, o) - keyed_array_data(w, o);
}

/* Nonzero when the walk must stop: the budget ran out, or a signal is
 * pending (KeyboardInterrupt; its exception is then set). */
static int
time_is_up(mt_walker *w)
{
    if (PyErr_CheckSignals() < 0) {
        return 1;
    }
    return w->deadline > 0 && mt_monotonic_seconds() > w->deadline;
}

static int
log_reach(mt_walker *w, Py_ssize_t idx, int32_t root)
{
    if (w->nlog >= MAX_REACHES) {
        w->stopped = 1;
        return 0;
    }
    if (mt_reserve((void **)&w->log, &w->log_cap, w->nlog + 1, sizeof(reach)) < 0) {
        return -1;
    }
    w->log[w->nlog].entry = (int32_t)idx;
    w->log[w->nlog].root = root;
    w->nlog++;
    return 0;
}

static int
count_child(PyObject *o, void *arg)
{
    *(Py_ssize_t *)arg += o != NULL;
    return 0;
}

/* What visit would skip is not taken: a class's type comes last in its
 * instances' tp_traverse, and the last child is the one that replaces its
 * parent on the stack. */
static int
take_child(PyObject *o, void *arg)
{
    frame *f = arg;
    if (o != NULL && mt_walker_is_data(o)) {
        f->children[f->len++] = Py_NewRef(o);
    }
    return 0;
}

/* The dict instead of the values it shares with the instance (pyver.h):
 * its keys and its own size count too, and each value is reached once. */
static void
take_dict_instead_of_its_values(frame *f, PyObject *dict)
{
    Py_ssize_t kept = 0;
    for (Py_ssize_t i = 0; i < f->len; i++) {
        Py_ssize_t pos = 0;
        PyObject *key, *value;
        int shared_value = 0;
        while (!shared_value && PyDict_Next(dict, &pos, &key, &value)) {
            shared_value = value == f->children[i];
        }
        if (shared_value) {
            Py_DECREF(f->children[i]);
        }
        else {
            f->children[kept++] = f->children[i];
        }
    }
    f->len = kept;
    f->children[f->len++] = Py_NewRef(dict);
}

/* The references o's tp_traverse lists, owned by f; 0 also when there are
 * more than the cap allows (the walk then stops). */
static int
take_children(mt_walker *w, frame *f, PyObject *o)
{
    Py_ssize_t n = 0;
    traverseproc traverse = Py_TYPE(o)->tp_traverse;
    PyObject *shared = mt_pyver_dict_sharing_values(o);
    traverse(o, count_child, &n);
    n += shared != NULL;
    if (n > MAX_CHILDREN - w->children_held) {
        w->stopped = 1;
        return 0;
    }
    if (n == 0) {
        return 0;
    }
    f->children = PyMem_RawMalloc((size_t)n * sizeof(PyObject *));
    if (f->children == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    traverse(o, take_child, f); /* at most n: no Python code ran between */
    if (shared != NULL) {
        take_dict_instead_of_its_values(f, shared);
    }
    w->children_held += n;
    f->held = n;
    return 0;
}

enum { REACHED_FIRST = 1, REACHED_AGAIN = 2 };

/* Charges table entry idx to the root being walked: its size (object o's,
 * or bytes for a buffer) when no root reached it before, a share of it
 * when another root did.  REACHED_FIRST or REACHED_AGAIN; 0 when there is
 * nothing to count (a barrier, or this root's already); -1 with an
 * exception. */
static int
reach_entry(mt_walker *w, Py_ssize_t idx, PyObject *o, long long bytes)
{
    mt_walker_totals *t = &w->totals[w->root];
    entry *e = &w->entries[idx];
    if (e->flags & E_BARRIER || e->last_root == w->root) {
        return 0;
    }
    if (e->first_root < 0) {
        long long size = o != NULL ? object_size(w, o) : bytes;
        e = &w->entries[idx]; /* object_size may have run code that grew the table */
        e->first_root = e->last_root = w->root;
        e->size += size;
        t->bytes += size;
        t->objects += o != NULL;
        return REACHED_FIRST;
    }
    e->last_root = w->root;
    e->flags |= E_SHARED;
    t->bytes += e->size;
    /* Every buffer's reach is kept: twins (an array and its tensor) name
     * each other as holders whatever the buffer's size. */
    if ((e->flags & (E_ROOT | E_BUFFER) || e->size >= w->big) && log_reach(w, idx, w->root) < 0) {
        return -1;
    }
    return REACHED_AGAIN;
}

/* Counts a buffer of the object frame f opens: by address when it is big
 * enough to be worth a table entry, else with its holder. */
static int
visit_buffer(mt_walker *w, const frame *f, uintptr_t start, long long bytes)
{
    if (bytes < KEYED_BUFFER_MIN) {
        if (!f->revisit) {
            w->entries[f->charge].size += bytes;
            w->totals[w->root].bytes += bytes;
        }
        return 0;
    }
    Py_ssize_t idx = find_or_add(w, BUFFER_KEY(start));
    if (idx < 0) {
        return idx == -1 ? -1 : 0;
    }
    w->entries[idx].flags |= E_BUFFER;
    int reached = reach_entry(w, idx, NULL, bytes);
    entry *e = &w->entries[idx];
    if (reached == REACHED_FIRST) {
        e->via = f->charge;
    }
    else if (reached == REACHED_AGAIN && e->via != f->charge) {
        e->flags |= E_TWIN;
    }
    return reached < 0 ? -1 : 0;
}

/* Counts the buffers of o, an object of another library, by address. */
static int
visit_foreign_buffers(mt_walker *w, const frame *f, PyObject *o, mt_buffers_kind kind)
{
    if (mt_buffers_collect(o, kind, &w->ranges) < 0) {
        return -1;
    }
    for (Py_ssize_t i = 0; i < w->ranges.n; i++) {
        if (visit_buffer(w, f, w->ranges.items[i].start, w->ranges.items[i].bytes) < 0) {
            return -1;
        }
    }
    return 0;
}

/* Fills f (kind, iter, pending, children) for o's children; F_LEAF when o
 * has none to walk. */
static int
open_children(mt_walker *w, frame *f, PyObject *o)
{
    PyTypeObject *tp = Py_TYPE(o);
    if (tp == &PyList_Type || tp == &PyTuple_Type) {
        f->kind = F_SEQUENCE;
        return 0;
    }
    /* dict's tp_traverse skips str keys (they cannot form cycles). */
    if (PyDict_Check(o)) {
        f->kind = F_DICT;
        return 0;
    }
    if (tp == &PySet_Type || tp == &PyFrozenSet_Type) {
        f->kind = F_SET;
        f->iter = PyObject_GetIter(o);
        return f->iter == NULL ? -1 : 0;
    }
    if (w->numpy && PyArray_Check(o)) {
        PyArrayObject *a = (PyArrayObject *)o;
        long long data = keyed_array_data(w, o);
        if (data && visit_buffer(w, f, (uintptr_t)PyArray_DATA(a), data) < 0) {
            return -1;
        }
        PyObject *base = PyArray_BASE(a);
        f->pending = Py_XNewRef(base);
        f->kind = F_CHILDREN;
        /* Object arrays hold references; a view's are walked by its base. */
        if (PyArray_TYPE(a) == NPY_OBJECT &&
            (PyArray_CHKFLAGS(a, NPY_ARRAY_OWNDATA) || base == NULL || !PyArray_Check(base))) {
            if (PyArray_IS_C_CONTIGUOUS(a) || PyArray_IS_F_CONTIGUOUS(a)) {
                f->kind = F_CARRAY;
                return 0;
            }
            f->kind = F_ARRAY;
            f->iter = PyArray_IterNew(o);
            return f->iter == NULL ? -1 : 0;
        }
        return 0;
    }
    /* A traceback's frames hold their locals; a module-level frame's locals
     * are a namespace (the user's, for a cell), not data. */
    if (PyFrame_Check(o)) {
        PyCodeObject *code = PyFrame_GetCode((PyFrameObject *)o);
        int optimized = (code->co_flags & CO_OPTIMIZED) != 0;
        Py_DECREF(code);
        if (!optimized) {
            return 0;
        }
        PyObject *locals = PyFrame_GetLocals((PyFrameObject *)o);
        if (locals == NULL) {
            return -1;
        }
        /* Each local is referenced by the frame and by the snapshot we read. */
        f->refs = f->revisit ? 0 : 2;
        if (PyDict_Check(locals)) {
            f->kind = F_VALUES;
            f->iter = locals;
            return 0;
        }
        f->kind = F_SEQUENCE;
        f->iter = PyMapping_Values(locals);
        Py_DECREF(locals);
        return f->iter == NULL ? -1 : 0;
    }
    if (is_code_or_namespace(o)) {
        return 0;
    }
    mt_buffers_kind kind = buffers_kind(w, tp);
    if (kind != MT_BUFFERS_NONE && visit_foreign_buffers(w, f, o, kind) < 0) {
        return -1;
    }
    if (tp->tp_traverse == NULL) {
        return 0;
    }
    f->kind = F_CHILDREN;
    return take_children(w, f, o);
}

static void
close_frame(mt_walker *w)
{
    frame *f = &w->frames[--w->depth];
    Py_XDECREF(f->obj);
    Py_XDECREF(f->iter);
    Py_XDECREF(f->pending);
    for (Py_ssize_t i = f->pos; i < f->len; i++) {
        Py_XDECREF(f->children[i]);
    }
    w->children_held -= f->held;
    PyMem_RawFree(f->children);
}

static int
is_leaf_type(PyTypeObject *tp)
{
    return tp == &PyFloat_Type || tp == &PyUnicode_Type || tp == &PyLong_Type ||
           tp == &PyBytes_Type;
}

/* Opens a frame over o's children (steals o), charged to charge. */
static int
open_frame(mt_walker *w, PyObject *o, int32_t charge, uint8_t revisit, uint8_t refs)
{
    if (is_leaf_type(Py_TYPE(o))) { /* the bulk of big containers: no frame */
        Py_DECREF(o);
        return 0;
    }
    if (w->depth >= MAX_FRAMES) {
        w->stopped = 1;
        Py_DECREF(o);
        return 0;
    }
    if (mt_reserve((void **)&w->frames, &w->frames_cap, w->depth + 1, sizeof(frame)) < 0) {
        Py_DECREF(o);
        return -1;
    }
    frame *f = &w->frames[w->depth++];
    memset(f, 0, sizeof *f);
    f->obj = o;
    f->charge = charge;
    f->revisit = revisit;
    f->refs = refs;
    f->bytes_before = w->totals[w->root].bytes;
    if (open_children(w, f, o) < 0) {
        close_frame(w);
        return -1;
    }
    if (f->kind == F_LEAF || (f->kind == F_CHILDREN && f->len == 0 && f->pending == NULL)) {
        close_frame(w);
    }
    return 0;
}

/* The item pointers of a list, tuple or contiguous object array frame, read
 * afresh (the container may have changed while Python code ran); NULL for
 * other kinds. */
static PyObject **
frame_items(const frame *f, Py_ssize_t *n)
{
    if (f->kind == F_CARRAY) {
        *n = PyArray_SIZE((PyArrayObject *)f->obj);
        return (PyObject **)PyArray_DATA((PyArrayObject *)f->obj);
    }
    if (f->kind == F_SEQUENCE) {
        PyObject *seq = f->iter ? f->iter : f->obj;
        *n = Py_SIZE(seq);
        return PyList_Check(seq) ? ((PyListObject *)seq)->ob_item : ((PyTupleObject *)seq)->ob_item;
    }
    *n = 0;
    return NULL;
}

/* The frame's next child (a new reference) in *child, and whether the
 * container is its only holder; 1, or 0 at the end, -1 with an exception. */
static int
next_child(frame *f, PyObject **child, int *single)
{
    PyObject *c = NULL, *key, *value;
    if (f->pending != NULL) {
        *child = f->pending;
        f->pending = NULL;
        *single = Py_REFCNT(*child) == 2; /* its holder and our reference */
        return 1;
    }
    while (c == NULL) {
        switch (f->kind) {
        case F_SEQUENCE:
        case F_CARRAY: {
            Py_ssize_t n;
            PyObject **items = frame_items(f, &n);
            if (f->pos >= n) {
                return 0;
            }
            c = items[f->pos++];
            break;
        }
        case F_DICT:
        case F_VALUES:
            if (!PyDict_Next(f->iter ? f->iter : f->obj, &f->pos, &key, &value)) {
                return 0;
            }
            f->done++;
            if (f->kind == F_DICT) {
                f->pending = Py_NewRef(value);
                c = key;
            }
            else {
                c = value;
            }
            break;
        case F_SET:
            *child = PyIter_Next(f->iter);
            if (*child == NULL) {
                return PyErr_Occurred() ? -1 : 0;
            }
            f->done++;
            *single = Py_REFCNT(*child) == 2;
            return 1;
        case F_ARRAY: {
            PyArrayIterObject *it = (PyArrayIterObject *)f->iter;
            if (it->index >= it->size) {
                return 0;
            }
            c = *(PyObject **)it->dataptr;
            PyArray_ITER_NEXT(it);
            break;
        }
        case F_CHILDREN:
            if (f->pos >= f->len) {
                return 0;
            }
            *child = f->children[f->pos];
            f->children[f->pos++] = NULL;
            *single = Py_REFCNT(*child) == 2;
            return 1;
        default:
            return 0;
        }
    }
    *single = Py_REFCNT(c) == 1;
    *child = Py_NewRef(c);
    return 1;
}

/* Nonzero when next_child would say the end; only where that is cheap
 * to tell (a set's iterator cannot be asked). */
static int
no_children_left(const frame *f)
{
    Py_ssize_t pos = f->pos;
    if (f->pending != NULL) {
        return 0;
    }
    Py_ssize_t n;
    switch (f->kind) {
    case F_SEQUENCE:
    case F_CARRAY:
        frame_items(f, &n);
        return f->pos >= n;
    case F_DICT:
    case F_VALUES:
        return !PyDict_Next(f->iter ? f->iter : f->obj, &pos, NULL, NULL);
    case F_ARRAY:
        return ((PyArrayIterObject *)f->iter)->index >= ((PyArrayIterObject *)f->iter)->size;
    case F_CHILDREN:
        return f->pos >= f->len;
    default:
        return 0;
    }
}

/* Counts child (steals it), reached from a container charged to charge
 * (-1: look it up), and opens a frame over its children. */
static int
visit(mt_walker *w, PyObject *child, int single, int32_t charge, uint8_t revisit, uint8_t refs)
{
    PyTypeObject *tp = Py_TYPE(child);
    mt_walker_totals *t = &w->totals[w->root];
    t->visits++;
    if (tp != &PyFloat_Type && tp != &PyUnicode_Type && tp != &PyLong_Type && tp != &PyList_Type &&
        tp != &PyDict_Type && tp != &PyTuple_Type &&
        (is_singleton(child) || is_code_or_namespace(child))) {
        Py_DECREF(child);
        return 0;
    }
#ifdef Py_GIL_DISABLED
    single = 0;
#endif
    if (single && charge >= 0) {
        /* Its only reference is the one we came through: no table. */
        if (!revisit) {
            long long size = object_size(w, child);
            w->entries[charge].size += size;
            t->bytes += size;
            t->objects++;
        }
        return open_frame(w, child, charge, revisit, revisit ? 0 : 1);
    }
    /* [0] * n, [s] * n: the same object over and over. */
    Py_ssize_t idx = child == w->last_key ? w->last_idx : find_or_add(w, child);
    if (idx < 0) {
        Py_DECREF(child);
        return idx == -1 ? -1 : 0;
    }
    w->last_key = child;
    w->last_idx = idx;
    w->entries[idx].refs += refs;
    int reached = reach_entry(w, idx, child, 0);
    if (reached <= 0) {
        Py_DECREF(child);
        return reached;
    }
    revisit = reached == REACHED_AGAIN;
    return open_frame(w, child, (int32_t)idx, revisit, revisit ? 0 : 1);
}

/* Children taken and children in all of frame f. */
static void
progress(const frame *f, double *done, double *len)
{
    *done = (double)f->done;
    *len = 0;
    switch (f->kind) {
    case F_SEQUENCE:
    case F_CARRAY: {
        Py_ssize_t n;
        frame_items(f, &n);
        *done = (double)f->pos;
        *len = (double)n;
        break;
    }
    case F_DICT:
    case F_VALUES:
        *len = (double)PyDict_Size(f->iter ? f->iter : f->obj);
        break;
    case F_SET:
        *len = (double)PySet_GET_SIZE(f->obj);
        break;
    case F_ARRAY:
        *done = (double)((PyArrayIterObject *)f->iter)->index;
        *len = (double)((PyArrayIterObject *)f->iter)->size;
        break;
    case F_CHILDREN:
        *done = (double)f->pos;
        *len = (double)f->len;
        break;
    }
}

/* Its only reference is the one the walk came through (the container). */
static int
has_one_reference(PyObject *o)
{
#ifdef Py_GIL_DISABLED
    (void)o;
    return 0; /* reference counts are split between threads */
#else
    return Py_REFCNT(o) == 1;
#endif
}

/* The bulk of a big list or object array, counted in a tight loop that
 * runs no code (so it takes no references): items with one reference that
 * arithmetic sizes, and repeats of the object looked up last ([0] * n)
 * that this root has counted already.  Stops at the first other item. */
static void
size_leaves(mt_walker *w, frame *f)
{
    Py_ssize_t n;
    PyObject **items = frame_items(f, &n);
    mt_walker_totals *t = &w->totals[w->root];
    long long bytes = 0, count = 0;
    while (f->pos < n && f->pending == NULL) {
        PyObject *c = items[f->pos];
        if (c != NULL && c == w->last_key && w->entries[w->last_idx].last_root == w->root) {
            w->entries[w->last_idx].refs += f->refs;
        }
        else {
            long long size = c != NULL && has_one_reference(c) ? leaf_size(c) : -1;
            if (size < 0) {
                break;
            }
            bytes += size;
            count++;
        }
        t->visits++;
        f->pos++;
        if (++w->ticks % CHECK_EVERY == 0) {
            if (time_is_up(w)) {
                w->stopped = 1;
                break;
            }
            items = frame_items(f, &n); /* a signal handler may have changed it */
        }
    }
    if (!f->revisit) {
        w->entries[f->charge].size += bytes;
        t->bytes += bytes;
        t->objects += count;
    }
}

/* The root's size had the walk finished: what each open frame's children
 * weighed so far, scaled to all its children, innermost first. */
static long long
estimate(const mt_walker *w, const mt_walker_totals *t)
{
    double bytes = (double)t->bytes;
    for (Py_ssize_t d = w->depth - 1; d >= 0; d--) {
        const frame *f = &w->frames[d];
        double done, len;
        progress(f, &done, &len);
        if (done > 0 && len > done) {
            bytes += (bytes - (double)f->bytes_before) * (len - done) / done;
        }
    }
    return (long long)bytes;
}

/* Walks everything reachable from root; 0 also when the walk stopped for
 * time or its memory cap (totals stay incomplete, with an estimate), -1
 * with an exception. */
static int
walk_root(mt_walker *w, int32_t r, PyObject *root)
{
    mt_walker_totals *t = &w->totals[r];
    w->root = r;
    int rc = visit(w, Py_NewRef(root), 0, -1, 0, 0);
    while (rc == 0 && w->depth > 0 && !w->stopped) {
        if (++w->ticks % CHECK_EVERY == 0 && time_is_up(w)) {
            w->stopped = 1;
            break;
        }
        frame *f = &w->frames[w->depth - 1];
        PyObject *child;
        int single;
        if (f->kind == F_SEQUENCE || f->kind == F_CARRAY) {
            size_leaves(w, f);
            if (w->stopped) {
                break;
            }
        }
        int got = next_child(f, &child, &single);
        if (got < 0) {
            rc = -1;
        }
        else if (got == 0) {
            close_frame(w);
        }
        else {
            int32_t charge = f->charge;
            uint8_t revisit = f->revisit, refs = f->refs;
            /* The last child replaces its parent on the stack: a linked
             * list (node -> attributes -> next node) walks at depth 2. */
            if (no_children_left(f)) {
                close_frame(w);
            }
            rc = visit(w, child, single, charge, revisit, refs);
        }
    }
    t->estimate = rc == 0 && w->stopped ? estimate(w, t) : t->bytes;
    while (w->depth > 0) {
        close_frame(w);
    }
    if (rc < 0 || PyErr_Occurred()) { /* an error, or a signal */
        return -1;
    }
    t->complete = !w->stopped;
    return 0;
}

static int
compare_reach(const void *a, const void *b)
{
    const reach *x = a, *y = b;
    if (x->entry != y->entry) {
        return x->entry < y->entry ? -1 : 1;
    }
    return (x->root > y->root) - (x->root < y->root);
}

/* The roots that reached entry idx (log sorted by entry). */
static Py_ssize_t
reachers(const mt_walker *w, int32_t idx, int32_t *out, Py_ssize_t cap)
{
    Py_ssize_t n = 0;
    if (w->entries[idx].first_root < 0) {
        return 0;
    }
    out[n++] = w->entries[idx].first_root;
    Py_ssize_t lo = 0, hi = w->nlog;
    while (lo < hi) {
        Py_ssize_t mid = (lo + hi) / 2;
        if (w->log[mid].entry < idx) {
            lo = mid + 1;
        }
        else {
            hi = mid;
        }
    }
    for (Py_ssize_t i = lo; i < w->nlog && w->log[i].entry == idx; i++) {
        if (n == cap) {
            return cap + 1; /* too many to list */
        }
        out[n++] = w->log[i].root;
    }
    return n;
}

static int
reaches(const mt_walker *w, int32_t root, int32_t idx)
{
    int32_t who[MAX_SHARERS];
    Py_ssize_t n = reachers(w, idx, who, MAX_SHARERS);
    for (Py_ssize_t i = 0; i < n && i < MAX_SHARERS; i++) {
        if (who[i] == root) {
            return 1;
        }
    }
    return 0;
}

typedef struct {
    int32_t root, other;
    long long bytes;
} pair;

static int
compare_pair(const void *a, const void *b)
{
    const pair *x = a, *y = b;
    if (x->root != y->root) {
        return x->root < y->root ? -1 : 1;
    }
    return (x->other > y->other) - (x->other < y->other);
}

static int
compare_share(const void *a, const void *b)
{
    const mt_walker_share *x = a, *y = b;
    return (x->bytes < y->bytes) - (x->bytes > y->bytes);
}

static int
add_pair(pair **pairs, Py_ssize_t *n, Py_ssize_t *cap, int32_t root, int32_t other)
{
    if (mt_reserve((void **)pairs, cap, *n + 1, sizeof(pair)) < 0) {
        return -1;
    }
    (*pairs)[(*n)++] = (pair){root, other, 0};
    return 0;
}

/* Holders of each root's object, as offsets into one array: the roots that
 * reach it, and the twins that reach one of its buffers through another
 * object (an array and the tensor made from it, a frame and its Arrow
 * table: neither reaches the other's object, and each keeps the buffer
 * alive).  Roots that share a buffer through one object (two views of an
 * array) are not twins: their shares say it. */
static int
collect_holders(mt_walker *w)
{
    int32_t who[MAX_SHARERS + 1];
    pair *pairs = NULL;
    Py_ssize_t npairs = 0, pairs_cap = 0, cap = 0, n = 0;
    int rc = -1;
    for (Py_ssize_t r = 0; r < w->nroots; r++) {
        Py_ssize_t k = reachers(w, w->root_entry[r], who, MAX_SHARERS);
        for (Py_ssize_t i = 0; i < k && i < MAX_SHARERS; i++) {
            if (who[i] != r && add_pair(&pairs, &npairs, &pairs_cap, (int32_t)r, who[i]) < 0) {
                goto done;
            }
        }
    }
    for (Py_ssize_t e = 0; e < w->nentries; e++) {
        if (!(w->entries[e].flags & E_TWIN)) {
            continue;
        }
        Py_ssize_t k = reachers(w, (int32_t)e, who, MAX_SHARERS);
        for (Py_ssize_t a = 0; k <= MAX_SHARERS && a < k; a++) {
            for (Py_ssize_t b = 0; b < k; b++) {
                if (who[a] != who[b] && !reaches(w, who[a], w->root_entry[who[b]]) &&
                    !reaches(w, who[b], w->root_entry[who[a]]) &&
                    add_pair(&pairs, &npairs, &pairs_cap, who[a], who[b]) < 0) {
                    goto done;
                }
            }
        }
    }
    if (npairs) {
        qsort(pairs, (size_t)npairs, sizeof(pair), compare_pair);
    }
    w->holder_start = PyMem_RawMalloc((size_t)(w->nroots + 1) * sizeof(Py_ssize_t));
    if (w->holder_start == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    Py_ssize_t p = 0;
    for (Py_ssize_t r = 0; r < w->nroots; r++) {
        w->holder_start[r] = n;
        for (; p < npairs && pairs[p].root == r; p++) {
            if (p > 0 && pairs[p - 1].root == r && pairs[p - 1].other == pairs[p].other) {
                continue; /* reached both ways */
            }
            if (mt_reserve((void **)&w->holders, &cap, n + 1, sizeof(Py_ssize_t)) < 0) {
                goto done;
            }
            w->holders[n++] = pairs[p].other;
        }
    }
    w->holder_start[w->nroots] = n;
    rc = 0;
done:
    PyMem_RawFree(pairs);
    return rc;
}

/* Big shared objects, summed per pair of roots that both reach them. */
static int
collect_shares(mt_walker *w)
{
    pair *pairs = NULL;
    Py_ssize_t npairs = 0, pairs_cap = 0, cap = 0, n = 0;
    int32_t who[MAX_SHARERS + 1];
    int rc = -1;
    for (Py_ssize_t i = 0; i < w->nentries; i++) {
        const entry *e = &w->entries[i];
        if (!(e->flags & E_SHARED) || e->size < w->big) {
            continue;
        }
        Py_ssize_t k = reachers(w, (int32_t)i, who, MAX_SHARERS);
        if (k > MAX_SHARERS) {
            continue;
        }
        if (mt_reserve((void **)&pairs, &pairs_cap, npairs + k * k, sizeof(pair)) < 0) {
            goto done;
        }
        for (Py_ssize_t a = 0; a < k; a++) {
            for (Py_ssize_t b = 0; b < k; b++) {
                if (a != b) {
                    pairs[npairs++] = (pair){who[a], who[b], e->size};
                }
            }
        }
    }
    if (npairs) {
        qsort(pairs, (size_t)npairs, sizeof(pair), compare_pair);
    }
    w->share_start = PyMem_RawMalloc((size_t)(w->nroots + 1) * sizeof(Py_ssize_t));
    if (w->share_start == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    Py_ssize_t p = 0;
    for (Py_ssize_t r = 0; r < w->nroots; r++) {
        w->share_start[r] = n;
        while (p < npairs && pairs[p].root == r) {
            pair sum = pairs[p++];
            while (p < npairs && pairs[p].root == r && pairs[p].other == sum.other) {
                sum.bytes += pairs[p++].bytes;
            }
            if (mt_reserve((void **)&w->shares, &cap, n + 1, sizeof(mt_walker_share)) < 0) {
                goto done;
            }
            w->shares[n].other = sum.other;
            w->shares[n].bytes = sum.bytes;
            w->shares[n].reaches_other = reaches(w, (int32_t)r, w->root_entry[sum.other]);
            n++;
        }
        qsort(w->shares + w->share_start[r], (size_t)(n - w->share_start[r]),
              sizeof(mt_walker_share), compare_share);
    }
    w->share_start[w->nroots] = n;
    rc = 0;
done:
    PyMem_RawFree(pairs);
    return rc;
}

static int
finish(mt_walker *w)
{
    for (Py_ssize_t i = 0; i < w->nentries; i++) {
        const entry *e = &w->entries[i];
        if (e->first_root >= 0 && !(e->flags & E_SHARED)) {
            w->totals[e->first_root].exclusive += e->size;
        }
    }
    for (Py_ssize_t r = 0; r < w->nroots; r++) {
        const entry *e = &w->entries[w->root_entry[r]];
        w->totals[r].held_elsewhere =
            w->totals[r].complete && Py_REFCNT(e->key) > (Py_ssize_t)e->refs;
    }
    if (w->nlog) {
        qsort(w->log, (size_t)w->nlog, sizeof(reach), compare_reach);
    }
    return collect_holders(w) < 0 || collect_shares(w) < 0 ? -1 : 0;
}

mt_walker *
mt_walker_new(PyObject *barriers, double budget_seconds, long long big)
{
    mt_walker *w = PyMem_RawCalloc(1, sizeof *w);
    if (w == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    w->big = big;
    w->deadline = budget_seconds > 0 ? mt_monotonic_seconds() + budget_seconds : 0;
    w->barriers = barriers ? Py_NewRef(barriers) : PyTuple_New(0);
    w->sizeof_name = PyUnicode_InternFromString("__sizeof__");
    int numpy = mt_npy_ready();
    if (w->barriers == NULL || w->sizeof_name == NULL || numpy < 0 ||
        rehash(w, INITIAL_SLOTS) < 0) {
        mt_walker_free(w);
        return NULL;
    }
    w->numpy = numpy;
    return w;
}

void
mt_walker_free(mt_walker *w)
{
    if (w == NULL) {
        return;
    }
    Py_XDECREF(w->barriers);
    Py_XDECREF(w->sizeof_name);
    for (size_t i = 0; w->kinds != NULL && i < KIND_CACHE; i++) {
        Py_XDECREF(w->kinds[i].type);
    }
    PyMem_RawFree(w->kinds);
    mt_buffer_ranges_free(&w->ranges);
    PyMem_RawFree(w->entries);
    PyMem_RawFree(w->slots);
    PyMem_RawFree(w->frames);
    PyMem_RawFree(w->log);
    PyMem_RawFree(w->totals);
    PyMem_RawFree(w->root_entry);
    PyMem_RawFree(w->holders);
    PyMem_RawFree(w->holder_start);
    PyMem_RawFree(w->shares);
    PyMem_RawFree(w->share_start);
    PyMem_RawFree(w);
}

/* The table entry of a barrier or a root; they come before any walk, so
 * a full table here means far too many of them. */
static Py_ssize_t
known_entry(mt_walker *w, PyObject *o)
{
    Py_ssize_t idx = find_or_add(w, o);
    if (idx == -2) {
        PyErr_Format(PyExc_MemoryError, "more than %d variables and holders to walk", MAX_ENTRIES);
        return -1;
    }
    return idx;
}

int
mt_walker_run(mt_walker *w, PyObject *const *roots, const int *bindings, Py_ssize_t n)
{
    MT_ASSERT_GIL();
    if (w->totals != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "a walker runs once");
        return -1;
    }
    w->nroots = n;
    w->totals = PyMem_RawCalloc((size_t)(n ? n : 1), sizeof(mt_walker_totals));
    w->root_entry = PyMem_RawMalloc((size_t)(n ? n : 1) * sizeof(int32_t));
    if (w->totals == NULL || w->root_entry == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(w->barriers); i++) {
        Py_ssize_t idx = known_entry(w, PyTuple_GET_ITEM(w->barriers, i));
        if (idx < 0) {
            return -1;
        }
        w->entries[idx].flags |= E_BARRIER;
    }
    for (Py_ssize_t r = 0; r < n; r++) {
        Py_ssize_t idx = known_entry(w, roots[r]);
        if (idx < 0) {
            return -1;
        }
        w->entries[idx].flags |= E_ROOT;
        w->entries[idx].refs += 1 + (bindings ? bindings[r] : 0);
        w->root_entry[r] = (int32_t)idx;
    }
    int rc = 0;
    for (Py_ssize_t r = 0; r < n && rc == 0 && !w->stopped; r++) {
        rc = walk_root(w, (int32_t)r, roots[r]); /* once stopped, the rest stay incomplete */
    }
    return rc < 0 ? -1 : finish(w);
}

void
mt_walker_charge(const mt_walker *w, const int *rank, long long *charged)
{
    int32_t who[MAX_SHARERS + 1];
    for (Py_ssize_t i = 0; i < w->nentries; i++) {
        const entry *e = &w->entries[i];
        if (e->first_root < 0) {
            continue;
        }
        int32_t best = e->first_root;
        if (e->flags & E_SHARED) {
            Py_ssize_t k = reachers(w, (int32_t)i, who, MAX_SHARERS);
            for (Py_ssize_t j = 0; j < k && j < MAX_SHARERS; j++) {
                if (rank[who[j]] < rank[best]) {
                    best = who[j];
                }
            }
        }
        charged[best] += e->size;
    }
}

const mt_walker_totals *
mt_walker_totals_of(const mt_walker *w, Py_ssize_t root)
{
    return &w->totals[root];
}

Py_ssize_t
mt_walker_holders(const mt_walker *w, Py_ssize_t root, const Py_ssize_t **out)
{
    *out = w->holders + w->holder_start[root];
    return w->holder_start[root + 1] - w->holder_start[root];
}

Py_ssize_t
mt_walker_shares(const mt_walker *w, Py_ssize_t root, const mt_walker_share **out)
{
    *out = w->shares + w->share_start[root];
    return w->share_start[root + 1] - w->share_start[root];
}

int
mt_walker_deep_size(PyObject *obj, PyObject *barriers, double budget_seconds,
                    mt_walker_totals *totals)
{
    MT_ASSERT_GIL();
    /* A lone leaf (a number, an ASCII str, bytes: a cell's usual x = 1) is
     * what its walk would find, without the walker's tables. */
    long long leaf = leaf_size(obj);
    for (Py_ssize_t i = 0; leaf >= 0 && barriers && i < PyTuple_GET_SIZE(barriers); i++) {
        leaf = PyTuple_GET_ITEM(barriers, i) == obj ? -1 : leaf;
    }
    if (leaf >= 0) {
        *totals = (mt_walker_totals){.bytes = leaf,
                                     .exclusive = leaf,
                                     .objects = 1,
                                     .visits = 1,
                                     .complete = 1,
                                     .estimate = leaf};
        return 0;
    }
    mt_walker *w = mt_walker_new(barriers, budget_seconds, LLONG_MAX);
    if (w == NULL) {
        return -1;
    }
    int rc = mt_walker_run(w, &obj, NULL, 1);
    if (rc == 0) {
        *totals = w->totals[0];
    }
    mt_walker_free(w);
    return rc;
}

PyDoc_STRVAR(
    mt_walker_py_deep_size__doc__,
    "deep_size(obj, budget_seconds=0) -> (bytes, complete): deep size, buffers counted once.");
PyObject *
mt_walker_py_deep_size(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    double budget = 0;
    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "deep_size(obj, budget_seconds=0)");
        return NULL;
    }
    if (nargs == 2 && args[1] != Py_None) {
        budget = PyFloat_AsDouble(args[1]);
        if (budget == -1 && PyErr_Occurred()) {
            return NULL;
        }
    }
    mt_walker_totals t;
    if (mt_walker_deep_size(args[0], NULL, budget, &t) < 0) {
        return NULL;
    }
    return Py_BuildValue("(LO)", t.bytes, t.complete ? Py_True : Py_False);
}

/* The _core methods of this file; module.c adds them at init. */
PyMethodDef mt_walker_methods[] = {
    {"deep_size", (PyCFunction)(void (*)(void))mt_walker_py_deep_size, METH_FASTCALL,
     mt_walker_py_deep_size__doc__},
    {NULL, NULL, 0, NULL},
};
