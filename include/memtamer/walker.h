/* walker: deep sizes with every buffer counted once, charged to the roots
 * (variables and hidden holders) that reach it.
 *
 * One iterative walk per root over a shared table of visited objects: a
 * stack of frames, one per container being read, each reading its children
 * one at a time by index or position, so the walker's memory grows with
 * nesting depth and distinct shared objects, never with a container's
 * length, and stops at a fixed cap (then the figures are estimates).
 * Each object is charged to the first root that reaches it; a later root
 * that reaches it marks it shared.  So after
 * walking every root:
 *   bytes(r)     = everything reachable from r,
 *   exclusive(r) = what is reachable from r and from no other root, i.e.
 *                  what `del r` would free if the roots are all the holders.
 * Objects with a reference count of 1 have a single holder (the container
 * the walk came from): they skip the table and are charged to that holder.
 *
 * Buffers are counted by their owner: an ndarray counts its data only when
 * it owns it (numpy's own __sizeof__), a view counts its header and leads to
 * its .base; bytes, bytearray, array.array count their buffers, memoryview
 * leads to its exporter.  Modules, classes, functions and code are never
 * entered (they are not data and lead to everything), nor are the barrier
 * objects the caller names (the namespace dicts, the shell).
 *
 * Everything here needs the GIL.  The walk owns a reference to every
 * object it has yet to read (Python code run meanwhile, such as a signal
 * handler, cannot free them), calls only C-level __sizeof__ methods and
 * looks them up without binding (no descriptor runs).  Its memory comes
 * from the counted raw domain: the budget sees it. */
#ifndef MEMTAMER_WALKER_H
#define MEMTAMER_WALKER_H

#include <Python.h>

typedef struct {
    long long bytes;     /* deep size */
    long long exclusive; /* reachable from this root only */
    long long objects;   /* objects counted */
    long long visits;    /* references followed: the walk's cost */
    /* 0 when the walk stopped (time, signal, its memory cap) before this
     * root's walk finished: bytes is then a lower bound, estimate the
     * bytes the walk would have found had the open containers' children
     * weighed what their first ones did, and exclusive is not known. */
    int complete;
    long long estimate;
    /* The root's object has more references than the walked graph and the
     * root bindings explain: something unnamed keeps it alive. */
    int held_elsewhere;
} mt_walker_totals;

/* A big object (at least the walker's `big` threshold) that `root` shares
 * with `other`, summed per other root. */
typedef struct {
    Py_ssize_t other;
    long long bytes;
    int reaches_other; /* root's walk reaches other's object (a view, a container) */
} mt_walker_share;

typedef struct mt_walker mt_walker;

/* 0 for what walks never enter nor count: modules, classes, functions,
 * code, None and the other singletons. */
int mt_walker_is_data(PyObject *o);

/* What sys.getsizeof says of o: its __sizeof__ and the collector's header
 * (for memtamer's own dicts and sets; user objects are walked).  -1 with an
 * exception. */
long long mt_walker_object_bytes(PyObject *o);

/* barriers: a tuple of objects never entered, or NULL.  budget_seconds <= 0
 * means no limit.  big: objects at least this size are tracked for shares.
 * NULL with an exception on failure. */
mt_walker *mt_walker_new(PyObject *barriers, double budget_seconds, long long big);
void mt_walker_free(mt_walker *w);

/* Walks roots[0..n) in that order (put hidden holders first: when the
 * budget runs out, the roots left are the ones reported incomplete).  The
 * caller holds one strong reference per root slot, and root slot r stands
 * for bindings[r] references outside the walked graph (its namespace entry,
 * the shell's mirrors of it; 0 for all when bindings is NULL): that is what
 * held_elsewhere compares reference counts against.  -1 with an exception
 * on failure (memory, KeyboardInterrupt). */
int mt_walker_run(mt_walker *w, PyObject *const *roots, const int *bindings, Py_ssize_t n);

const mt_walker_totals *mt_walker_totals_of(const mt_walker *w, Py_ssize_t root);
/* The other roots that reach root's object (so `del` of root frees nothing
 * while they hold it): *out points into the walker, valid until it is freed. */
Py_ssize_t mt_walker_holders(const mt_walker *w, Py_ssize_t root, const Py_ssize_t **out);
/* Big objects root shares with other roots, biggest first. */
Py_ssize_t mt_walker_shares(const mt_walker *w, Py_ssize_t root, const mt_walker_share **out);

/* Adds each object's bytes to charged[r] of one root r that reaches it:
 * the one of lowest rank[r] among the roots known to reach it (every
 * root for big objects and roots' objects, the first one for the rest),
 * so sums over groups of roots count each object once. */
void mt_walker_charge(const mt_walker *w, const int *rank, long long *charged);

/* Deep size of one object, not entering barriers (a tuple, or NULL), in
 * *totals (exclusive and held_elsewhere unset).  -1 with an exception on
 * failure. */
int mt_walker_deep_size(PyObject *obj, PyObject *barriers, double budget_seconds,
                        mt_walker_totals *totals);

/* deep_size(obj, budget_seconds=0) -> (bytes, complete): method of _core. */
PyObject *mt_walker_py_deep_size(PyObject *module, PyObject *const *args, Py_ssize_t nargs);

/* The _core methods walker.c defines. */
extern PyMethodDef mt_walker_methods[];

#endif
