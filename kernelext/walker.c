/* walker: deep sizes and their attribution to roots (walker.h).
 * Every function here needs the GIL. */
#include "memtamer/memtamer.h"

#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "memtamer/npy.h"
#include "memtamer/walker.h"

/* PyGC_Head (two words) is internal since 3.8; sys.getsizeof adds it for
 * objects the collector tracks, and the tests compare against getsizeof. */
#define GC_HEADER_BYTES ((long long)(2 * sizeof(void *)))
/* How many objects between two looks at the clock and at pending signals. */
#define CHECK_EVERY 4096
/* Roots sharing one big object beyond this are not paired up in shares
 * (the pairs grow quadratically); holders and exclusive are unaffected. */
#define MAX_SHARERS 64

enum { E_ROOT = 1, E_SHARED = 2, E_BARRIER = 4 };

typedef struct {
    PyObject *key;
    long long size; /* its own size plus the refcount-1 objects charged to it */
    int32_t first_root, last_root; /* -1 until a root reaches it */
    int32_t refs;  /* references to it the walk can explain */
    int32_t flags;
} entry;

/* charge < 0: an object looked up in the table; otherwise a refcount-1
 * object charged to entry `charge`, whose size is already in that entry
 * when `revisit` is set (a second root passing through). */
typedef struct {
    PyObject *obj;
    int32_t charge;
    uint8_t revisit;
    uint8_t refs; /* references this edge stands for (0 on a revisit) */
} item;

typedef struct {
    int32_t entry, root;
} reach;

struct mt_walker {
    entry *entries;
    Py_ssize_t nentries, entries_cap;
    int32_t *slots; /* open addressing, -1 empty, linear probing */
    size_t slot_mask;
    item *stack;
    Py_ssize_t depth, stack_cap;
    reach *log; /* a root reaching a tracked object again (not first) */
    Py_ssize_t nlog, log_cap;
    mt_walker_totals *totals;
    int32_t *root_entry;
    Py_ssize_t nroots;
    Py_ssize_t *holders, *holder_start;
    mt_walker_share *shares;
    Py_ssize_t *share_start;
    PyObject *types;     /* type -> its C-level __sizeof__, or None */
    PyObject *keepalive; /* temporaries whose items the stack points to */
    PyObject *barriers;
    double deadline;
    long long big;
    int numpy;
    long long ticks;
    /* Set when the walk stopped for time or a signal (an exception is set
     * only for a signal). */
    int stopped;
    /* The object being expanded, for the tp_traverse callback. */
    mt_walker_totals *cur_totals;
    int32_t cur_charge;
    uint8_t cur_revisit;
    uint8_t cur_refs;
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

/* Index of key's entry, added when missing; -1 with an exception. */
static Py_ssize_t
find_or_add(mt_walker *w, PyObject *key)
{
    if ((size_t)(w->nentries + 1) * 2 > w->slot_mask + 1) {
        if (w->nentries >= INT32_MAX / 2 || rehash(w, (w->slot_mask + 1) * 2) < 0) {
            if (!PyErr_Occurred()) {
                PyErr_NoMemory();
            }
            return -1;
        }
    }
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

static int
push(mt_walker *w, PyObject *obj, int32_t charge, uint8_t revisit, uint8_t refs)
{
    if (w->depth == w->stack_cap &&
        mt_reserve((void **)&w->stack, &w->stack_cap, w->depth + 1, sizeof(item)) < 0) {
        return -1;
    }
    item *it = &w->stack[w->depth++];
    it->obj = obj;
    it->charge = charge;
    it->revisit = revisit;
    it->refs = refs;
    return 0;
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

static long long object_size(mt_walker *w, PyObject *o);
static int time_is_up(mt_walker *w);

static int
push_child(mt_walker *w, PyObject *o)
{
    if (o == NULL) {
        return 0;
    }
    PyTypeObject *tp = Py_TYPE(o);
    if (tp != &PyFloat_Type && tp != &PyUnicode_Type && tp != &PyLong_Type &&
        tp != &PyList_Type && tp != &PyDict_Type && tp != &PyTuple_Type &&
        (is_singleton(o) || is_code_or_namespace(o))) {
        return 0;
    }
#ifndef Py_GIL_DISABLED
    /* Its only reference is the one we came through. */
    if (Py_REFCNT(o) == 1) {
        /* Leaves sized without a call (cannot fail): no stack round trip. */
        if (tp == &PyFloat_Type || (tp == &PyUnicode_Type && PyUnicode_IS_COMPACT_ASCII(o))) {
            /* A long list of leaves is one pop: keep the clock in view here. */
            if (++w->ticks % CHECK_EVERY == 0 && time_is_up(w)) {
                w->stopped = 1;
                return -1;
            }
            if (!w->cur_revisit) {
                long long size = object_size(w, o);
                w->entries[w->cur_charge].size += size;
                w->cur_totals->bytes += size;
                w->cur_totals->objects++;
            }
            return 0;
        }
        return push(w, o, w->cur_charge, w->cur_revisit, 0);
    }
#endif
    return push(w, o, -1, 0, w->cur_revisit ? 0 : w->cur_refs);
}

static int
visit_child(PyObject *o, void *arg)
{
    return push_child((mt_walker *)arg, o);
}

/* What sys.getsizeof adds to __sizeof__: the collector's header and, for
 * classes with a managed __dict__, the pre-header pointers. */
static long long
preheader(PyTypeObject *tp)
{
    long long n = PyType_IS_GC(tp) ? GC_HEADER_BYTES : 0;
#if defined(Py_TPFLAGS_PREHEADER)
    if (tp->tp_flags & Py_TPFLAGS_PREHEADER) {
        n += 2 * (long long)sizeof(PyObject *);
    }
#elif PY_VERSION_HEX >= 0x030B0000
    if (tp->tp_flags & Py_TPFLAGS_MANAGED_DICT) {
        n += 2 * (long long)sizeof(PyObject *);
    }
#endif
    return n;
}

/* The __sizeof__ to call for tp's objects (a new reference), or None for
 * object.__sizeof__'s arithmetic.  Overrides written in Python are not
 * trusted: pandas' return the deep size, which the walk would count twice. */
static PyObject *
own_sizeof(PyTypeObject *tp)
{
    PyObject *name = NULL, *method = NULL, *base = NULL, *result = NULL;
    name = PyUnicode_InternFromString("__sizeof__");
    if (name == NULL) {
        goto done;
    }
    method = PyObject_GetAttr((PyObject *)tp, name);
    base = method ? PyObject_GetAttr((PyObject *)&PyBaseObject_Type, name) : NULL;
    if (base == NULL) {
        goto done;
    }
#if PY_VERSION_HEX >= 0x030D0000
    /* From 3.13 object.__sizeof__ counts inline attribute values: call it
     * rather than redo its arithmetic. */
    result = Py_NewRef(Py_IS_TYPE(method, &PyMethodDescr_Type) ? method : base);
#else
    int call = method != base && Py_IS_TYPE(method, &PyMethodDescr_Type);
    result = Py_NewRef(call ? method : Py_None);
#endif
done:
    Py_XDECREF(name);
    Py_XDECREF(method);
    Py_XDECREF(base);
    return result;
}

static long long
sized_by_type(mt_walker *w, PyObject *o)
{
    PyTypeObject *tp = Py_TYPE(o);
    PyObject *method = PyDict_GetItemWithError(w->types, (PyObject *)tp);
    if (method == NULL) {
        if (PyErr_Occurred()) {
            return -1;
        }
        method = own_sizeof(tp);
        if (method == NULL || PyDict_SetItem(w->types, (PyObject *)tp, method) < 0) {
            Py_XDECREF(method);
            return -1;
        }
        Py_DECREF(method); /* the dict keeps it */
    }
    long long size = -1;
    if (method != Py_None) {
        PyObject *r = PyObject_CallOneArg(method, o);
        if (r != NULL) {
            size = PyLong_AsLongLong(r);
            Py_DECREF(r);
        }
        if (size < 0) { /* a broken __sizeof__: fall back to the arithmetic */
            PyErr_Clear();
        }
    }
    if (size < 0) {
        Py_ssize_t items = tp->tp_itemsize ? Py_SIZE(o) : 0;
        size = tp->tp_basicsize + (long long)(items < 0 ? -items : items) * tp->tp_itemsize;
    }
    return size + preheader(tp);
}

/* sys.getsizeof(o) without its method call for the bulk types. */
static long long
object_size(mt_walker *w, PyObject *o)
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
    if (tp == &PyTuple_Type) {
        return tp->tp_basicsize + Py_SIZE(o) * (long long)sizeof(PyObject *) + GC_HEADER_BYTES;
    }
    if (tp == &PyList_Type) {
        return tp->tp_basicsize + ((PyListObject *)o)->allocated * (long long)sizeof(PyObject *) +
               GC_HEADER_BYTES;
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
    return sized_by_type(w, o);
}

static int
expand_array(mt_walker *w, PyArrayObject *a)
{
    PyObject *base = PyArray_BASE(a);
    if (base != NULL && push_child(w, base) < 0) {
        return -1;
    }
    /* Object arrays hold references; a view's are walked by its base. */
    if (PyArray_TYPE(a) != NPY_OBJECT ||
        (!PyArray_CHKFLAGS(a, NPY_ARRAY_OWNDATA) && base != NULL && PyArray_Check(base))) {
        return 0;
    }
    if (PyArray_IS_C_CONTIGUOUS(a) || PyArray_IS_F_CONTIGUOUS(a)) {
        PyObject **items = (PyObject **)PyArray_DATA(a);
        npy_intp n = PyArray_SIZE(a);
        for (npy_intp i = 0; i < n; i++) {
            if (push_child(w, items[i]) < 0) {
                return -1;
            }
        }
        return 0;
    }
    PyArrayIterObject *it = (PyArrayIterObject *)PyArray_IterNew((PyObject *)a);
    if (it == NULL) {
        return -1;
    }
    int rc = 0;
    while (rc == 0 && it->index < it->size) {
        rc = push_child(w, *(PyObject **)it->dataptr);
        PyArray_ITER_NEXT(it);
    }
    Py_DECREF(it);
    return rc;
}

/* A traceback's frames hold their locals; a module-level frame's locals
 * are a namespace (the user's, for a cell), not data. */
static int
expand_frame(mt_walker *w, PyFrameObject *f)
{
    PyCodeObject *code = PyFrame_GetCode(f);
    int optimized = (code->co_flags & CO_OPTIMIZED) != 0;
    Py_DECREF(code);
    if (!optimized) {
        return 0;
    }
    PyObject *locals = PyFrame_GetLocals(f), *values = NULL;
    int rc = -1;
    if (locals == NULL || PyList_Append(w->keepalive, locals) < 0) {
        goto done;
    }
    /* Each local is referenced by the frame and by the snapshot we read. */
    w->cur_refs = 2;
    if (PyDict_Check(locals)) {
        Py_ssize_t pos = 0;
        PyObject *key, *value;
        while (PyDict_Next(locals, &pos, &key, &value)) {
            if (push_child(w, value) < 0) {
                goto done;
            }
        }
    }
    else {
        values = PyMapping_Values(locals);
        if (values == NULL || PyList_Append(w->keepalive, values) < 0) {
            goto done;
        }
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(values); i++) {
            if (push_child(w, PyList_GET_ITEM(values, i)) < 0) {
                goto done;
            }
        }
    }
    rc = 0;
done:
    w->cur_refs = 1;
    Py_XDECREF(locals);
    Py_XDECREF(values);
    return rc;
}

static int
expand(mt_walker *w, PyObject *o)
{
    PyTypeObject *tp = Py_TYPE(o);
    if (tp == &PyFloat_Type || tp == &PyUnicode_Type || tp == &PyLong_Type || tp == &PyBytes_Type) {
        return 0;
    }
    if (tp == &PyList_Type || tp == &PyTuple_Type) {
        PyObject **items =
            tp == &PyList_Type ? ((PyListObject *)o)->ob_item : ((PyTupleObject *)o)->ob_item;
        Py_ssize_t n = Py_SIZE(o);
        for (Py_ssize_t i = 0; i < n; i++) {
            if (push_child(w, items[i]) < 0) {
                return -1;
            }
        }
        return 0;
    }
    /* dict's tp_traverse skips str keys (they cannot form cycles). */
    if (PyDict_Check(o)) {
        Py_ssize_t pos = 0;
        PyObject *key, *value;
        while (PyDict_Next(o, &pos, &key, &value)) {
            if (push_child(w, key) < 0 || push_child(w, value) < 0) {
                return -1;
            }
        }
        return 0;
    }
    if (w->numpy && PyArray_Check(o)) {
        return expand_array(w, (PyArrayObject *)o);
    }
    if (PyFrame_Check(o)) {
        return expand_frame(w, (PyFrameObject *)o);
    }
    if (tp->tp_traverse == NULL || is_code_or_namespace(o)) {
        return 0;
    }
    return tp->tp_traverse(o, visit_child, w) ? -1 : 0;
}

static int
log_reach(mt_walker *w, Py_ssize_t idx, int32_t root)
{
    if (mt_reserve((void **)&w->log, &w->log_cap, w->nlog + 1, sizeof(reach)) < 0) {
        return -1;
    }
    w->log[w->nlog].entry = (int32_t)idx;
    w->log[w->nlog].root = root;
    w->nlog++;
    return 0;
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

/* Walks everything reachable from root; 0 also when the budget ran out
 * (totals stay incomplete), -1 with an exception. */
static int
walk_root(mt_walker *w, int32_t r, PyObject *root)
{
    mt_walker_totals *t = &w->totals[r];
    w->cur_totals = t;
    w->depth = 0;
    if (push(w, root, -1, 0, 0) < 0) {
        return -1;
    }
    while (w->depth > 0) {
        if (++w->ticks % CHECK_EVERY == 0 && time_is_up(w)) {
            w->stopped = 1;
            break;
        }
        item it = w->stack[--w->depth];
        int32_t charge = it.charge;
        uint8_t revisit = it.revisit;
        if (charge < 0) {
            Py_ssize_t idx = find_or_add(w, it.obj);
            if (idx < 0) {
                return -1;
            }
            entry *e = &w->entries[idx];
            e->refs += it.refs;
            if (e->flags & E_BARRIER || e->last_root == r) {
                continue;
            }
            if (e->first_root < 0) {
                long long size = object_size(w, it.obj);
                if (size < 0) {
                    return -1;
                }
                e = &w->entries[idx];
                e->first_root = e->last_root = r;
                e->size += size;
                t->bytes += size;
                t->objects++;
                revisit = 0;
            }
            else {
                e->last_root = r;
                e->flags |= E_SHARED;
                t->bytes += e->size;
                if (((e->flags & E_ROOT) || e->size >= w->big) && log_reach(w, idx, r) < 0) {
                    return -1;
                }
                revisit = 1;
            }
            charge = (int32_t)idx;
        }
        else if (!revisit) {
            long long size = object_size(w, it.obj);
            if (size < 0) {
                return -1;
            }
            w->entries[charge].size += size;
            t->bytes += size;
            t->objects++;
        }
        w->cur_charge = charge;
        w->cur_revisit = revisit;
        w->cur_refs = 1;
        if (expand(w, it.obj) < 0 && !w->stopped) {
            return -1;
        }
        if (w->stopped) {
            break;
        }
    }
    w->depth = 0;
    if (w->stopped) {
        return PyErr_Occurred() ? -1 : 0; /* a signal, or out of time */
    }
    t->complete = 1;
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

/* Holders of each root's object, as offsets into one array. */
static int
collect_holders(mt_walker *w)
{
    int32_t who[MAX_SHARERS + 1];
    Py_ssize_t cap = 0, n = 0;
    w->holder_start = PyMem_RawMalloc((size_t)(w->nroots + 1) * sizeof(Py_ssize_t));
    if (w->holder_start == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t r = 0; r < w->nroots; r++) {
        w->holder_start[r] = n;
        Py_ssize_t k = reachers(w, w->root_entry[r], who, MAX_SHARERS);
        if (k > MAX_SHARERS) {
            k = MAX_SHARERS;
        }
        for (Py_ssize_t i = 0; i < k; i++) {
            if (who[i] == r) {
                continue;
            }
            if (mt_reserve((void **)&w->holders, &cap, n + 1, sizeof(Py_ssize_t)) < 0) {
                return -1;
            }
            w->holders[n++] = who[i];
        }
    }
    w->holder_start[w->nroots] = n;
    return 0;
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
    w->types = PyDict_New();
    w->keepalive = PyList_New(0);
    int numpy = mt_npy_ready();
    if (w->barriers == NULL || w->types == NULL || w->keepalive == NULL || numpy < 0 ||
        rehash(w, 1024) < 0) {
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
    Py_XDECREF(w->types);
    Py_XDECREF(w->keepalive);
    PyMem_RawFree(w->entries);
    PyMem_RawFree(w->slots);
    PyMem_RawFree(w->stack);
    PyMem_RawFree(w->log);
    PyMem_RawFree(w->totals);
    PyMem_RawFree(w->root_entry);
    PyMem_RawFree(w->holders);
    PyMem_RawFree(w->holder_start);
    PyMem_RawFree(w->shares);
    PyMem_RawFree(w->share_start);
    PyMem_RawFree(w);
}

int
mt_walker_run(mt_walker *w, PyObject *const *roots, const int *bindings, Py_ssize_t n)
{
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
        Py_ssize_t idx = find_or_add(w, PyTuple_GET_ITEM(w->barriers, i));
        if (idx < 0) {
            return -1;
        }
        w->entries[idx].flags |= E_BARRIER;
    }
    for (Py_ssize_t r = 0; r < n; r++) {
        Py_ssize_t idx = find_or_add(w, roots[r]);
        if (idx < 0) {
            return -1;
        }
        w->entries[idx].flags |= E_ROOT;
        w->entries[idx].refs += 1 + (bindings ? bindings[r] : 0);
        w->root_entry[r] = (int32_t)idx;
    }
    int gc_was_enabled = PyGC_Disable();
    int rc = 0;
    for (Py_ssize_t r = 0; r < n && rc == 0 && !w->stopped; r++) {
        rc = walk_root(w, (int32_t)r, roots[r]); /* once stopped, the rest stay incomplete */
    }
    if (gc_was_enabled) {
        PyGC_Enable();
    }
    return rc < 0 ? -1 : finish(w);
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
mt_walker_deep_size(PyObject *obj, PyObject *barriers, double budget_seconds, long long *bytes,
                    long long *objects, int *complete)
{
    mt_walker *w = mt_walker_new(barriers, budget_seconds, LLONG_MAX);
    if (w == NULL) {
        return -1;
    }
    int rc = mt_walker_run(w, &obj, NULL, 1);
    if (rc == 0) {
        *bytes = w->totals[0].bytes;
        *objects = w->totals[0].objects;
        *complete = w->totals[0].complete;
    }
    mt_walker_free(w);
    return rc;
}

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
    long long bytes, objects;
    int complete;
    if (mt_walker_deep_size(args[0], NULL, budget, &bytes, &objects, &complete) < 0) {
        return NULL;
    }
    return Py_BuildValue("(LO)", bytes, complete ? Py_True : Py_False);
}
