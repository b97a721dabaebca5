/* ledger: provenance of the user's variables and who holds their memory
 * (ledger.h).  Every function here needs the GIL. */
#include "memtamer/memtamer.h"

#include <stdlib.h>
#include <string.h>

#include "memtamer/npy.h"
#include "memtamer/walker.h"

#define DEFAULT_CELL_BUDGET 0.05
#define DEFAULT_REPORT_BUDGET 10.0
/* A variable a cell only read is walked again (it may have grown in place)
 * when its last walk followed fewer references than this (about a
 * millisecond); bigger ones keep their figure until the report walks them:
 * reading a huge list costs a cell nothing. */
#define REWALK_MAX_VISITS 100000
/* Objects at least this big are followed for shares between roots. */
#define BIG_OBJECT_BYTES (64 * 1024)
#define UNNAMED_HOLDER "a reference outside the namespace"
/* Names of objects at least this big are followed by a weak reference, so
 * that after `del` the ledger knows whether a cache still holds them. */
#define GONE_MIN_BYTES (1024 * 1024)
/* Deleted names remembered while caches hold their objects (oldest go first). */
#define MAX_GONE 64
/* Module globals and class attributes walked as holders, at most. */
#define MAX_OTHER_ROOTS 4096
/* Account ranks: an object reached from several parts is charged to the
 * part of lowest rank, so each is counted once (enum order = rank). */
typedef enum { PART_VARIABLES, PART_CACHES, PART_TRACEBACK, PART_OTHER, NPARTS } account_part;
static const char *const PART_NAMES[NPARTS] = {"variables", "ipython_caches", "traceback",
                                               "other_objects"};
/* Where Python keeps the exception it last reported: every one of them
 * holds it, so a purge clears them all. */
static const char *const LAST_EXCEPTION[] = {"last_type", "last_value", "last_traceback",
                                             "last_exc"};

typedef enum { NAME_SKIP, NAME_VARIABLE, NAME_HOLDER } name_kind;

/* LAST_EXCEPTION as a tuple of str: what a purge of the last error clears. */
static PyObject *
last_error_attributes(void)
{
    return Py_BuildValue("(ssss)", LAST_EXCEPTION[0], LAST_EXCEPTION[1], LAST_EXCEPTION[2],
                         LAST_EXCEPTION[3]);
}

static double
cell_budget(const mt_ledger *l)
{
    return l->cell_budget > 0 ? l->cell_budget : DEFAULT_CELL_BUDGET;
}

static double
report_budget(const mt_ledger *l)
{
    return l->report_budget > 0 ? l->report_budget : DEFAULT_REPORT_BUDGET;
}

static void
snapshot_clear(mt_ledger_snapshot *s)
{
    for (Py_ssize_t i = 0; i < s->len; i++) {
        Py_CLEAR(s->items[i].key);
    }
    PyMem_RawFree(s->items);
    *s = (mt_ledger_snapshot){0};
}

int
mt_ledger_traverse(mt_ledger *l, visitproc visit, void *arg)
{
    Py_VISIT(l->user_ns);
    Py_VISIT(l->hidden_ns);
    Py_VISIT(l->out_cache);
    Py_VISIT(l->shell);
    Py_VISIT(l->transform);
    Py_VISIT(l->barriers);
    Py_VISIT(l->index);
    Py_VISIT(l->source);
    Py_VISIT(l->ran);
    Py_VISIT(l->walked);
    Py_VISIT(l->adopted);
    Py_VISIT(l->changes.keys);
    for (int i = 0; i < l->changes.ndicts; i++) {
        Py_VISIT(l->changes.dicts[i]);
    }
    return 0;
}

void
mt_ledger_clear(mt_ledger *l)
{
    mt_pyver_unwatch_dicts(&l->changes);
    Py_CLEAR(l->user_ns);
    Py_CLEAR(l->hidden_ns);
    Py_CLEAR(l->out_cache);
    Py_CLEAR(l->shell);
    Py_CLEAR(l->transform);
    Py_CLEAR(l->barriers);
    Py_CLEAR(l->index);
    Py_CLEAR(l->source);
    Py_CLEAR(l->ran);
    Py_CLEAR(l->walked);
    Py_CLEAR(l->adopted);
    for (Py_ssize_t i = 0; i < l->len; i++) {
        Py_CLEAR(l->entries[i].name);
    }
    PyMem_RawFree(l->entries);
    l->entries = NULL;
    l->len = l->cap = 0;
    for (Py_ssize_t i = 0; i < l->ngone; i++) {
        Py_CLEAR(l->gone[i].name);
    }
    PyMem_RawFree(l->gone);
    l->gone = NULL;
    l->ngone = l->gone_cap = 0;
    snapshot_clear(&l->user_seen);
    snapshot_clear(&l->hidden_seen);
}

/* name[from:] is one or more ASCII digits.  Names are read by code point:
 * a name may hold a lone surrogate, which has no UTF-8. */
static int
digits_from(PyObject *name, Py_ssize_t from)
{
    Py_ssize_t n = PyUnicode_GET_LENGTH(name);
    for (Py_ssize_t i = from; i < n; i++) {
        Py_UCS4 c = PyUnicode_READ_CHAR(name, i);
        if (c < '0' || c > '9') {
            return 0;
        }
    }
    return n > from;
}

static int
is_one_of(PyObject *name, const char *const *names, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (PyUnicode_CompareWithASCIIString(name, names[i]) == 0) {
            return 1;
        }
    }
    return 0;
}

/* The shell's own bookkeeping (name starts with '_'): _i, _ii, _iii, _i<n>
 * (cell sources), _ih, _oh, _dh (its histories). */
static int
is_shell_name(PyObject *name)
{
    static const char *const names[] = {"_i", "_ii", "_iii", "_ih", "_oh", "_dh"};
    return (PyUnicode_GET_LENGTH(name) > 2 && PyUnicode_READ_CHAR(name, 1) == 'i' &&
            digits_from(name, 2)) ||
           is_one_of(name, names, sizeof names / sizeof *names);
}

/* _, __, ___, _<n>: the output cache's names (name starts with '_'). */
static int
is_output_name(PyObject *name)
{
    static const char *const names[] = {"_", "__", "___"};
    return digits_from(name, 1) || is_one_of(name, names, sizeof names / sizeof *names);
}

static int
starts_with(PyObject *s, const char *prefix)
{
    Py_ssize_t n = PyUnicode_GET_LENGTH(s), i = 0;
    for (; prefix[i] != '\0'; i++) {
        if (i >= n || PyUnicode_READ_CHAR(s, i) != (Py_UCS4)(unsigned char)prefix[i]) {
            return 0;
        }
    }
    return 1;
}

/* __name__, __builtins__: what Python puts in every module's namespace. */
static int
is_dunder(PyObject *name)
{
    Py_ssize_t n = PyUnicode_GET_LENGTH(name);
    return n > 4 && starts_with(name, "__") && PyUnicode_READ_CHAR(name, n - 1) == '_' &&
           PyUnicode_READ_CHAR(name, n - 2) == '_';
}

/* 1 when the shell's hidden namespace binds name to value too, -1 on error. */
static int
hidden_too(const mt_ledger *l, PyObject *name, PyObject *value)
{
    if (l->hidden_ns == NULL) {
        return 0;
    }
    PyObject *hidden = PyDict_GetItemWithError(l->hidden_ns, name);
    if (hidden == NULL && PyErr_Occurred()) {
        return -1;
    }
    return hidden == value;
}

/* Variables are the names a user sees in %who, underscore names such as
 * _big included; the output cache's names (_, _12) and dunders are
 * holders; what the shell put there itself (In, Out, _i3, _oh, exit) and
 * code is skipped. */
static int
classify(const mt_ledger *l, PyObject *name, PyObject *value)
{
    /* flag = True is a variable as n_rows = 0 is, though walks never count the singleton. */
    if (!PyUnicode_Check(name) ||
        !(mt_walker_is_data(value) || PyBool_Check(value) || value == Py_None)) {
        return NAME_SKIP;
    }
    int underscore = PyUnicode_GET_LENGTH(name) > 0 && PyUnicode_READ_CHAR(name, 0) == '_';
    /* The shell adds one _i<n> per cell: rule them out by characters
     * alone, or the scan after every cell grows with the session. */
    if (underscore && is_shell_name(name)) {
        return NAME_SKIP;
    }
    /* The shell pushes the output cache into its hidden namespace too. */
    if (underscore && is_output_name(name)) {
        return NAME_HOLDER;
    }
    int hidden = hidden_too(l, name, value);
    if (hidden != 0) {
        return hidden < 0 ? -1 : NAME_SKIP;
    }
    return underscore && is_dunder(name) ? NAME_HOLDER : NAME_VARIABLE;
}

/* -1 when name has no entry, -2 with an exception. */
static Py_ssize_t
entry_index(const mt_ledger *l, PyObject *name)
{
    PyObject *i = PyDict_GetItemWithError(l->index, name);
    if (i == NULL) {
        return PyErr_Occurred() ? -2 : -1;
    }
    return PyLong_AsSsize_t(i);
}

static int
set_index(mt_ledger *l, PyObject *name, Py_ssize_t i)
{
    PyObject *n = PyLong_FromSsize_t(i);
    if (n == NULL) {
        return -1;
    }
    int rc = PyDict_SetItem(l->index, name, n);
    Py_DECREF(n);
    return rc;
}

static Py_ssize_t
add_entry(mt_ledger *l, PyObject *name, long long cell)
{
    if (mt_reserve((void **)&l->entries, &l->cap, l->len + 1, sizeof *l->entries) < 0) {
        return -1;
    }
    if (set_index(l, name, l->len) < 0) {
        return -1;
    }
    mt_ledger_entry *e = &l->entries[l->len];
    memset(e, 0, sizeof *e);
    e->name = Py_NewRef(name);
    e->created = e->rebound = cell;
    e->used = -1;
    e->bytes = -1;
    return l->len++;
}

static int
remove_entry(mt_ledger *l, Py_ssize_t i)
{
    PyObject *name = l->entries[i].name;
    if (PyDict_DelItem(l->index, name) < 0) {
        return -1;
    }
    Py_DECREF(name);
    l->entries[i] = l->entries[--l->len];
    return i < l->len ? set_index(l, l->entries[i].name, i) : 0;
}

static PyObject *
compile_source(PyObject *source)
{
    PyCompilerFlags flags = {PyCF_ALLOW_TOP_LEVEL_AWAIT, PY_MINOR_VERSION};
    const char *text = PyUnicode_AsUTF8(source);
    if (text == NULL) {
        return NULL;
    }
    return Py_CompileStringExFlags(text, "<memtamer cell>", Py_file_input, &flags, 0);
}

/* compile_source with every warning ignored: the cell has run and shown
 * its compile-time warnings once already.  The ignore filter goes in front
 * of warnings.filters and out again, in place: catch_warnings would mark
 * the filters changed, which resets every module's once-only warnings. */
static PyObject *
compile_quietly(PyObject *source)
{
    PyObject *warnings = NULL, *filters = NULL, *ignore = NULL, *code = NULL;
    warnings = PyImport_ImportModule("warnings");
    filters = warnings ? PyObject_GetAttrString(warnings, "filters") : NULL;
    if (filters == NULL) {
        goto done;
    }
    if (!PyList_CheckExact(filters)) { /* replaced by someone: compile as it is */
        code = compile_source(source);
        goto done;
    }
    ignore = Py_BuildValue("(sOOOi)", "ignore", Py_None, PyExc_Warning, Py_None, 0);
    if (ignore == NULL || PyList_Insert(filters, 0, ignore) < 0) {
        goto done;
    }
    code = compile_source(source);
    /* Compiling runs no Python code: the filter is still first.  Taking
     * one item out of a list only shrinks it (a compile error stays set). */
    if (PyList_GET_SIZE(filters) > 0 && PyList_GET_ITEM(filters, 0) == ignore) {
        PyList_SetSlice(filters, 0, 1, NULL);
    }
done:
    Py_XDECREF(warnings);
    Py_XDECREF(filters);
    Py_XDECREF(ignore);
    return code;
}

/* co_names of code and the code nested in it.  With magic_args, string
 * constants that compile count too: a transformed magic cell passes its
 * code to run_line_magic / run_cell_magic as a string (%time, %%timeit). */
static int
collect_names(PyObject *code, PyObject *names, int magic_args)
{
    PyCodeObject *co = (PyCodeObject *)code;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(co->co_names); i++) {
        if (PySet_Add(names, PyTuple_GET_ITEM(co->co_names, i)) < 0) {
            return -1;
        }
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(co->co_consts); i++) {
        PyObject *c = PyTuple_GET_ITEM(co->co_consts, i), *inner = NULL;
        if (magic_args && PyUnicode_Check(c)) {
            inner = compile_quietly(c);
            if (inner == NULL) {
                if (!PyErr_ExceptionMatches(PyExc_Exception)) {
                    return -1;
                }
                PyErr_Clear(); /* a magic's options, not code */
            }
        }
        else if (PyCode_Check(c)) {
            inner = Py_NewRef(c);
        }
        int rc = inner ? collect_names(inner, names, 0) : 0;
        Py_XDECREF(inner);
        if (rc < 0) {
            return -1;
        }
    }
    return 0;
}

/* The names the running cell's code loads or stores (its co_names, nested
 * code included), in *names; NULL there when the cell does not compile even
 * after IPython's transformation (the cell then read nothing we know of). */
static int
names_in_cell(mt_ledger *l, PyObject **names)
{
    PyObject *code = NULL, *transformed = NULL;
    *names = NULL;
    if (l->source == NULL || !PyUnicode_Check(l->source)) {
        return 0;
    }
    code = compile_quietly(l->source);
    int magic = code == NULL;
    if (code == NULL && PyErr_ExceptionMatches(PyExc_SyntaxError) && l->transform != NULL) {
        /* Magics and shell escapes: compile what IPython would run. */
        PyErr_Clear();
        transformed = PyObject_CallOneArg(l->transform, l->source);
        if (transformed != NULL && PyUnicode_Check(transformed)) {
            code = compile_quietly(transformed);
        }
    }
    Py_XDECREF(transformed);
    if (code == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_Exception)) {
            return -1; /* KeyboardInterrupt, MemoryError */
        }
        PyErr_Clear();
        return 0;
    }
    *names = PySet_New(NULL);
    int rc = *names != NULL && collect_names(code, *names, magic) == 0 ? 0 : -1;
    Py_DECREF(code);
    if (rc < 0) {
        Py_CLEAR(*names);
    }
    return rc;
}

static int direct_holders(mt_ledger *l, const mt_ledger_gone *g, PyObject *holders,
                          PyObject **found);

/* g's object (borrowed), or NULL when nothing the shell keeps holds it any
 * more.  Found by identity and type among the shell's direct references,
 * and proven by its deep size: an address may have been reused by another
 * object since (a weak reference would prove it, but in-place actions
 * refuse objects that have one).  -1 with an exception. */
static int
gone_object(mt_ledger *l, const mt_ledger_gone *g, PyObject **obj)
{
    PyObject *found = NULL;
    *obj = NULL;
    if (direct_holders(l, g, NULL, &found) < 0) {
        return -1;
    }
    if (found == NULL) {
        return 0;
    }
    mt_walker_totals t = {.bytes = -1};
    Py_INCREF(found);
    int rc = mt_walker_deep_size(found, l->barriers, cell_budget(l), &t);
    Py_DECREF(found);
    if (rc < 0) {
        return -1;
    }
    if (!t.complete || t.bytes == g->bytes) {
        *obj = found;
    }
    return 0;
}

static void
drop_gone(mt_ledger *l, Py_ssize_t i)
{
    Py_CLEAR(l->gone[i].name);
    memmove(&l->gone[i], &l->gone[i + 1], (size_t)(l->ngone - i - 1) * sizeof *l->gone);
    l->ngone--;
}

/* Forgets deleted names whose objects nothing the shell keeps holds. */
static int
prune_gone(mt_ledger *l)
{
    for (Py_ssize_t i = l->ngone - 1; i >= 0; i--) {
        PyObject *obj;
        if (gone_object(l, &l->gone[i], &obj) < 0) {
            return -1;
        }
        if (obj == NULL) {
            drop_gone(l, i);
        }
    }
    return 0;
}

/* e's name went in cell (deleted, or bound to another object): when its
 * big object lives on, something else holds it, and the ledger remembers
 * it under that name. */
static int
remember_gone(mt_ledger *l, const mt_ledger_entry *e, long long cell, int rebound)
{
    mt_ledger_gone g = {e->name, e->identity, e->type, e->bytes, cell, rebound};
    PyObject *obj = NULL;
    if (e->bytes < GONE_MIN_BYTES) {
        return 0;
    }
    if (gone_object(l, &g, &obj) < 0) {
        return -1;
    }
    if (obj == NULL) {
        return 0;
    }
    for (Py_ssize_t i = 0; i < l->ngone; i++) {
        if (PyUnicode_Compare(l->gone[i].name, e->name) == 0) {
            drop_gone(l, i);
            break;
        }
    }
    if (l->ngone == MAX_GONE) {
        drop_gone(l, 0);
    }
    if (mt_reserve((void **)&l->gone, &l->gone_cap, l->ngone + 1, sizeof *l->gone) < 0) {
        return -1;
    }
    Py_INCREF(g.name);
    l->gone[l->ngone++] = g;
    return 0;
}

/* Entries compared with one memcmp (4 KiB of ours against 4 KiB of the
 * dict's): an unchanged run costs the memory reads and little else, and a
 * run that differs is looked at entry by entry. */
#define COMPARED_AT_ONCE 256

static int
note_name(PyObject *changed, PyObject *name)
{
    return name != NULL ? PyList_Append(changed, name) : 0;
}

/* s mirrors the table now is read from: the entries that differ from their
 * copy are the only changes, and each names its old key (rebound, deleted
 * or replaced) and its new one (rebound or put there).  The copy is brought
 * up to date where it differs. */
static int
compare_in_place(mt_ledger_snapshot *s, const mt_pyver_dict_entry *now, Py_ssize_t n,
                 PyObject *changed)
{
    Py_ssize_t len = Py_MAX(n, s->len);
    if (mt_reserve((void **)&s->items, &s->cap, len, sizeof *s->items) < 0) {
        return -1;
    }
    memset(&s->items[s->len], 0, (size_t)(len - s->len) * sizeof *s->items);
    s->len = len;
    for (Py_ssize_t i = 0; i < len; i++) {
        if (i % COMPARED_AT_ONCE == 0 && i + COMPARED_AT_ONCE <= n &&
            memcmp(&s->items[i], &now[i], COMPARED_AT_ONCE * sizeof *now) == 0) {
            i += COMPARED_AT_ONCE - 1;
            continue;
        }
        mt_pyver_dict_entry was = s->items[i], is = i < n ? now[i] : (mt_pyver_dict_entry){0};
        if (was.key == is.key && was.value == is.value) {
            continue;
        }
        if (note_name(changed, was.key) < 0 ||
            (is.key != was.key && note_name(changed, is.key) < 0)) {
            return -1;
        }
        Py_XINCREF(is.key);
        s->items[i] = is;
        Py_XDECREF(was.key);
    }
    s->len = n;
    return 0;
}

/* s mirrors another table, or none: the keys are matched in step.  A dict
 * keeps its insertion order, so the names that stay keep theirs and new
 * ones come last, and one pass over both finds the changes.  s is made
 * anew to mirror now. */
static int
compare_in_step(mt_ledger_snapshot *s, const mt_pyver_dict_entry *now, Py_ssize_t n,
                PyObject *changed)
{
    mt_ledger_snapshot next = {0};
    Py_ssize_t j = 0; /* s->items: [j, len) not yet met */
    if (mt_reserve((void **)&next.items, &next.cap, n, sizeof *next.items) < 0) {
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        mt_pyver_dict_entry is = now[i];
        int differs = 0;
        if (is.key != NULL) {
            while (j < s->len && s->items[j].key != is.key) {
                if (note_name(changed, s->items[j].key) < 0) {
                    goto error;
                }
                Py_CLEAR(s->items[j].key);
                j++;
            }
            if (j < s->len) { /* the reference moves from s to next */
                differs = s->items[j].value != is.value;
                s->items[j++].key = NULL;
            }
            else {
                Py_INCREF(is.key);
                differs = 1;
            }
        }
        next.items[next.len++] = is;
        if (differs && note_name(changed, is.key) < 0) {
            goto error;
        }
    }
    for (; j < s->len; j++) {
        if (note_name(changed, s->items[j].key) < 0) {
            goto error;
        }
        Py_CLEAR(s->items[j].key);
    }
    PyMem_RawFree(s->items);
    *s = next;
    return 0;
error:
    snapshot_clear(&next);
    return -1;
}

/* Brings s up to date with ns and appends to changed every name bound,
 * rebound or unbound since (an unbound one may be bound again further on,
 * and a name may come twice).  On error s is emptied: the next pass then
 * reports every name, which is slow but still exact. */
static int
snapshot_changes(mt_ledger_snapshot *s, PyObject *ns, PyObject *changed)
{
    mt_ledger_snapshot listed = {0}; /* ns's entries when they cannot be read in place */
    Py_ssize_t n;
    const void *table;
    uint64_t version = mt_pyver_dict_version(ns);
    if (version != 0 && version == s->version) {
        return 0; /* not changed since */
    }
    const mt_pyver_dict_entry *now = mt_pyver_dict_entries(ns, &n, &table);
    if (now == NULL) {
        Py_ssize_t pos = 0;
        PyObject *key, *value;
        if (mt_reserve((void **)&listed.items, &listed.cap, PyDict_GET_SIZE(ns),
                       sizeof *listed.items) < 0) {
            goto error;
        }
        while (PyDict_Next(ns, &pos, &key, &value)) {
            listed.items[listed.len++] = (mt_pyver_dict_entry){key, value};
        }
        now = listed.items;
        n = listed.len;
    }
    int same_table = table != NULL && table == s->table;
    if ((same_table ? compare_in_place(s, now, n, changed) : compare_in_step(s, now, n, changed)) <
        0) {
        goto error;
    }
    s->table = table;
    s->version = version;
    PyMem_RawFree(listed.items);
    return 0;
error:
    PyMem_RawFree(listed.items);
    snapshot_clear(s);
    return -1;
}

/* Every name the ledger must look at again: all of the namespace's, the
 * hidden namespace's and the ledger's own (a deleted one has no binding
 * left to list it). */
static int
every_name(const mt_ledger *l, PyObject *changed)
{
    PyObject *dicts[2] = {l->user_ns, l->hidden_ns}, *name, *value;
    for (int d = 0; d < 2; d++) {
        Py_ssize_t pos = 0;
        while (dicts[d] != NULL && PyDict_Next(dicts[d], &pos, &name, &value)) {
            if (PyList_Append(changed, name) < 0) {
                return -1;
            }
        }
    }
    for (Py_ssize_t i = 0; i < l->len; i++) {
        if (PyList_Append(changed, l->entries[i].name) < 0) {
            return -1;
        }
    }
    return 0;
}

/* The names bound, rebound or unbound since the last scan (a name may come
 * twice, and an unbound one may be bound again), into changed: the
 * watcher's notes, or the snapshots compared. */
static int
changed_names(mt_ledger *l, PyObject *changed)
{
    mt_pyver_dict_changes *c = &l->changes;
    if (c->ndicts == 0) {
        return snapshot_changes(&l->user_seen, l->user_ns, changed) < 0 ||
                       (l->hidden_ns != NULL &&
                        snapshot_changes(&l->hidden_seen, l->hidden_ns, changed) < 0)
                   ? -1
                   : 0;
    }
    /* Taken before the names are listed: a change made meanwhile (a
     * finalizer's) is noted for the next scan. */
    int everything = c->everything;
    PyObject *keys = everything ? NULL : PyDict_Keys(c->keys);
    c->everything = 0;
    PyDict_Clear(c->keys);
    if ((!everything && keys == NULL) ||
        (everything ? every_name(l, changed)
                    : PyList_SetSlice(changed, PY_SSIZE_T_MAX, PY_SSIZE_T_MAX, keys)) < 0) {
        c->everything = 1;
        Py_XDECREF(keys);
        return -1;
    }
    Py_XDECREF(keys);
    return 0;
}

/* What the last scan found may be half taken in: the next one looks at
 * every name, which is slow but still exact. */
static void
forget_changes(mt_ledger *l)
{
    l->changes.everything = 1;
    snapshot_clear(&l->user_seen);
    snapshot_clear(&l->hidden_seen);
}

/* Descending, so that removing them in turn moves only entries kept. */
static int
compare_index_descending(const void *a, const void *b)
{
    Py_ssize_t x = *(const Py_ssize_t *)a, y = *(const Py_ssize_t *)b;
    return (x < y) - (x > y);
}

/* Brings the ledger up to date with the namespace: new names, rebindings
 * (another object), deletions; names in reads count as used.  Names to walk
 * go to walk when given.  Only the names whose binding changed since the
 * last scan (in user_ns, or in hidden_ns, which decides what is the
 * shell's: changed_names) are classified; an unchanged one needs nothing
 * unless read. */
static int
scan(mt_ledger *l, long long cell, PyObject *reads, PyObject *walk)
{
    long long generation = ++l->generation;
    PyObject *changed = PyList_New(0), *iter = NULL, *name;
    Py_ssize_t *gone = NULL, ngone = 0, gone_cap = 0;
    int rc = -1;
    if (changed == NULL || changed_names(l, changed) < 0 ||
        PyList_SetSlice(changed, PY_SSIZE_T_MAX, PY_SSIZE_T_MAX, l->adopted) < 0 ||
        PyList_SetSlice(l->adopted, 0, PY_SSIZE_T_MAX, NULL) < 0) {
        goto done;
    }
    for (Py_ssize_t k = 0; k < PyList_GET_SIZE(changed); k++) {
        name = PyList_GET_ITEM(changed, k);
        Py_ssize_t i = entry_index(l, name);
        PyObject *value = i == -2 ? NULL : PyDict_GetItemWithError(l->user_ns, name);
        if (i == -2 || (value == NULL && PyErr_Occurred())) {
            goto done;
        }
        if (i >= 0 && l->entries[i].seen == generation) {
            continue; /* met already */
        }
        int kind = value == NULL ? NAME_SKIP : classify(l, name, value);
        if (kind < 0) {
            goto done;
        }
        if (kind != NAME_VARIABLE) {
            if (i >= 0) {
                if (mt_reserve((void **)&gone, &gone_cap, ngone + 1, sizeof *gone) < 0) {
                    goto done;
                }
                gone[ngone++] = i;
                l->entries[i].seen = generation;
            }
            continue;
        }
        int read = reads ? PySet_Contains(reads, name) : 0;
        if (read < 0) {
            goto done;
        }
        int created = i < 0, rebound = 0;
        if (created && (i = add_entry(l, name, cell)) < 0) {
            goto done;
        }
        mt_ledger_entry *e = &l->entries[i];
        if (!created && (e->identity != (uintptr_t)value || e->type != Py_TYPE(value))) {
            if (remember_gone(l, e, cell, 1) < 0) {
                goto done;
            }
            e->rebound = cell;
            rebound = 1;
        }
        e->identity = (uintptr_t)value;
        e->type = Py_TYPE(value);
        e->seen = generation;
        if (read && !created) {
            e->used = cell;
        }
        if (walk != NULL && (created || rebound || (read && e->visits < REWALK_MAX_VISITS)) &&
            PyList_Append(walk, name) < 0) {
            goto done;
        }
    }
    /* Read and bound as before: still a variable. */
    if (reads != NULL && (iter = PyObject_GetIter(reads)) == NULL) {
        goto done;
    }
    while (iter != NULL && (name = PyIter_Next(iter)) != NULL) {
        Py_ssize_t i = entry_index(l, name);
        int failed = i == -2;
        if (i >= 0 && l->entries[i].seen != generation) {
            mt_ledger_entry *e = &l->entries[i];
            e->used = cell;
            e->seen = generation;
            failed = walk != NULL && e->visits < REWALK_MAX_VISITS && PyList_Append(walk, name) < 0;
        }
        Py_DECREF(name);
        if (failed) {
            goto done;
        }
    }
    if (PyErr_Occurred()) {
        goto done;
    }
    qsort(gone, (size_t)ngone, sizeof *gone, compare_index_descending);
    for (Py_ssize_t k = 0; k < ngone; k++) {
        if (remember_gone(l, &l->entries[gone[k]], cell, 0) < 0 || remove_entry(l, gone[k]) < 0) {
            goto done;
        }
    }
    rc = 0;
done:
    if (rc < 0) {
        forget_changes(l);
    }
    Py_XDECREF(changed);
    Py_XDECREF(iter);
    PyMem_RawFree(gone);
    return rc;
}

static int
record_walk(mt_ledger *l, mt_ledger_entry *e, const mt_walker_totals *t)
{
    if (e->walk_serial != l->serial) { /* its first walk since the cell began */
        if (PyList_Append(l->walked, e->name) < 0) {
            return -1;
        }
        e->walk_serial = l->serial;
        e->bytes_at_begin = e->bytes;
    }
    e->bytes = t->bytes;
    e->estimate = t->estimate;
    e->visits = t->visits;
    e->complete = t->complete;
    return 0;
}

/* Deep sizes of the names in walk, for budget seconds from now (the walk's
 * own time, not the scan's before it, so a budget means the same on any
 * machine); names left over lose their figure (bytes -1) rather than keep a
 * stale one. */
static int
size_names(mt_ledger *l, PyObject *walk, double budget)
{
    double deadline = mt_monotonic_seconds() + budget;
    for (Py_ssize_t k = 0; k < PyList_GET_SIZE(walk); k++) {
        PyObject *name = PyList_GET_ITEM(walk, k);
        PyObject *value = PyDict_GetItemWithError(l->user_ns, name);
        Py_ssize_t i = entry_index(l, name);
        if (i == -2 || (value == NULL && PyErr_Occurred())) {
            return -1;
        }
        if (i < 0 || value == NULL) {
            continue;
        }
        mt_walker_totals t = {.bytes = -1, .estimate = -1};
        double left = deadline - mt_monotonic_seconds();
        if (left > 0) {
            Py_INCREF(value);
            int rc = mt_walker_deep_size(value, l->barriers, left, &t);
            Py_DECREF(value);
            /* The budget refused the walker's own memory: the figure waits
             * for the report, as when time runs out. */
            if (rc < 0 && PyErr_ExceptionMatches(PyExc_MemoryError)) {
                PyErr_Clear();
                t = (mt_walker_totals){.bytes = -1, .estimate = -1};
                deadline = 0;
            }
            else if (rc < 0) {
                return -1;
            }
        }
        if (record_walk(l, &l->entries[i], &t) < 0) {
            return -1;
        }
    }
    return 0;
}

int
mt_ledger_cell_begin(mt_ledger *l, PyObject *source)
{
    MT_ASSERT_GIL();
    if (l->user_ns != NULL) {
        if (PyList_SetSlice(l->walked, 0, PyList_GET_SIZE(l->walked), NULL) < 0) {
            return -1;
        }
        Py_XSETREF(l->source, Py_NewRef(source));
        Py_CLEAR(l->ran);
        l->serial++;
    }
    return 0;
}

int
mt_ledger_cell_end(mt_ledger *l, long long cell)
{
    MT_ASSERT_GIL();
    if (l->user_ns == NULL) {
        return 0;
    }
    double started = mt_monotonic_seconds();
    PyObject *reads = NULL, *walk = NULL;
    int rc = -1;
    reads = l->ran; /* what the shell compiled; else the source, compiled here */
    l->ran = NULL;
    if ((reads == NULL && names_in_cell(l, &reads) < 0) || (walk = PyList_New(0)) == NULL ||
        scan(l, cell, reads, walk) < 0 || size_names(l, walk, cell_budget(l)) < 0) {
        goto done;
    }
    l->cell = cell;
    rc = 0;
done:
    Py_CLEAR(l->source);
    Py_XDECREF(reads);
    Py_XDECREF(walk);
    l->last_hook_seconds = mt_monotonic_seconds() - started;
    return rc;
}

/* "numpy.ndarray" -> "ndarray" */
static const char *
short_name(PyTypeObject *tp)
{
    const char *dot = strrchr(tp->tp_name, '.');
    return dot ? dot + 1 : tp->tp_name;
}

/* "ndarray float64 1000×3", "DataFrame 10000000×2", "Series object 10",
 * "list[12]", or the type's name. */
static PyObject *
describe_type(PyObject *value)
{
    PyTypeObject *tp = Py_TYPE(value);
    PyObject *shape = NULL, *dtype = NULL, *module = NULL, *result = NULL;
    char dims[256] = "";
    size_t used = 0;
    if (mt_npy_ready() > 0 && PyArray_Check(value)) {
        PyArrayObject *a = (PyArrayObject *)value;
        for (int d = 0; d < PyArray_NDIM(a) && used < sizeof dims - 32; d++) {
            used += (size_t)snprintf(dims + used, sizeof dims - used, d ? "×%ld" : "%ld",
                                     (long)PyArray_DIM(a, d));
        }
        return PyUnicode_FromFormat("%s %S %s", short_name(tp), (PyObject *)PyArray_DESCR(a),
                                    PyArray_NDIM(a) ? dims : "scalar");
    }
    if (PyErr_Occurred()) {
        return NULL;
    }
    /* The C lengths: a subclass's __len__ may raise or lie. */
    Py_ssize_t length = PyList_Check(value)     ? PyList_GET_SIZE(value)
                        : PyTuple_Check(value)  ? PyTuple_GET_SIZE(value)
                        : PyDict_Check(value)   ? PyDict_Size(value)
                        : PyAnySet_Check(value) ? PySet_GET_SIZE(value)
                                                : -1;
    if (length >= 0) {
        return PyUnicode_FromFormat("%s[%zd]", tp->tp_name, length);
    }
    module = PyObject_GetAttrString((PyObject *)tp, "__module__");
    if (module == NULL) {
        PyErr_Clear();
    }
    else if (PyUnicode_Check(module) && starts_with(module, "pandas")) {
        shape = PyObject_GetAttrString(value, "shape");
        if (shape && PyTuple_Check(shape) && PyTuple_GET_SIZE(shape) == 2) {
            /* The format must be ASCII: the × goes in as UTF-8 through %s. */
            result = PyUnicode_FromFormat("%s %S%s%S", tp->tp_name, PyTuple_GET_ITEM(shape, 0), "×",
                                          PyTuple_GET_ITEM(shape, 1));
        }
        else if (shape && PyTuple_Check(shape) && PyTuple_GET_SIZE(shape) == 1 &&
                 (dtype = PyObject_GetAttrString(value, "dtype")) != NULL) {
            result =
                PyUnicode_FromFormat("%s %S %S", tp->tp_name, dtype, PyTuple_GET_ITEM(shape, 0));
        }
        PyErr_Clear(); /* an odd pandas object: its bare name will do */
    }
    if (result == NULL) {
        result = PyUnicode_FromString(short_name(tp));
    }
    Py_XDECREF(module);
    Py_XDECREF(shape);
    Py_XDECREF(dtype);
    return result;
}

typedef struct {
    PyObject *objs, *labels;
    /* per root: the holder dicts it stands for when it holds another (a
     * hidden root for all the caches that keep one object: Out[3], _3, _) */
    PyObject *holders;
    PyObject *hidden; /* id -> index of the hidden roots gathered so far */
    int *bindings;    /* references outside the walked graph, per root */
    int *ranks;       /* the account part of each root */
    Py_ssize_t len, cap, ranks_cap;
} root_list;

/* A holder as data: "label" for people, "kind", and under key (unless
 * NULL) what a purge needs to find it.  Steals label and value. */
static PyObject *
holder_dict(PyObject *label, const char *kind, const char *key, PyObject *value)
{
    PyObject *d = NULL;
    if (label == NULL || (key != NULL && value == NULL)) {
        goto error;
    }
    d = PyDict_New();
    if (d == NULL || mt_set(d, "label", Py_NewRef(label)) < 0 ||
        mt_set(d, "kind", PyUnicode_FromString(kind)) < 0 ||
        (key != NULL && mt_set(d, key, Py_NewRef(value)) < 0)) {
        goto error;
    }
    goto done;
error:
    Py_CLEAR(d);
done:
    Py_XDECREF(label);
    Py_XDECREF(value);
    return d;
}

/* A name of the user namespace as a holder of kind kind. */
static PyObject *
name_holder(PyObject *name, const char *kind)
{
    return holder_dict(Py_NewRef(name), kind, "key", Py_NewRef(name));
}

/* A root for value, held by holder (stolen), of account part rank.  A
 * hidden root (rs->hidden not NULL) whose object another hidden root has
 * already is that root, with one more holder: one object, one row. */
static int
append_root(root_list *rs, PyObject *value, PyObject *holder, int bindings, int rank)
{
    PyObject *key = NULL, *list = NULL, *index = NULL;
    int rc = -1;
    if (holder == NULL) {
        return -1;
    }
    if (rs->hidden != NULL) {
        key = PyLong_FromVoidPtr(value);
        index = key ? PyDict_GetItemWithError(rs->hidden, key) : NULL;
        if (key == NULL || (index == NULL && PyErr_Occurred())) {
            goto done;
        }
        if (index != NULL) {
            Py_ssize_t r = PyLong_AsSsize_t(index);
            rs->bindings[r] += bindings;
            rc = PyList_Append(PyList_GET_ITEM(rs->holders, r), holder);
            goto done;
        }
    }
    list = PyList_New(1);
    if (list == NULL) {
        goto done;
    }
    PyList_SET_ITEM(list, 0, Py_NewRef(holder));
    if (PyList_Append(rs->objs, value) < 0 ||
        PyList_Append(rs->labels, PyDict_GetItemString(holder, "label")) < 0 ||
        PyList_Append(rs->holders, list) < 0 ||
        mt_reserve((void **)&rs->bindings, &rs->cap, rs->len + 1, sizeof *rs->bindings) < 0 ||
        mt_reserve((void **)&rs->ranks, &rs->ranks_cap, rs->len + 1, sizeof *rs->ranks) < 0) {
        goto done;
    }
    if (key != NULL) {
        PyObject *at = PyLong_FromSsize_t(rs->len);
        int failed = at == NULL || PyDict_SetItem(rs->hidden, key, at) < 0;
        Py_XDECREF(at);
        if (failed) {
            goto done;
        }
    }
    rs->bindings[rs->len] = bindings;
    rs->ranks[rs->len++] = rank;
    rc = 0;
done:
    Py_XDECREF(key);
    Py_XDECREF(list);
    Py_DECREF(holder);
    return rc;
}

/* The shell's mirrors of its output cache, outside any namespace: the
 * display hook's _, __, ___ and the last execution result (what IPython's
 * %xdel clears).  Each counts as one more binding of the root it mirrors. */
static int
count_mirrors(mt_ledger *l, root_list *rs)
{
    static const char *const hook_names[] = {"_", "__", "___"};
    PyObject *mirrors[4] = {NULL, NULL, NULL, NULL};
    /* A shell without them has no such mirrors: each failed look-up is
     * cleared before the next one. */
    PyObject *hook = PyObject_GetAttrString(l->shell, "displayhook");
    PyErr_Clear();
    for (int i = 0; hook != NULL && i < 3; i++) {
        mirrors[i] = PyObject_GetAttrString(hook, hook_names[i]);
        PyErr_Clear();
    }
    PyObject *last = PyObject_GetAttrString(l->shell, "last_execution_result");
    PyErr_Clear();
    if (last != NULL) {
        mirrors[3] = PyObject_GetAttrString(last, "result");
        PyErr_Clear();
    }
    for (int i = 0; i < 4; i++) {
        for (Py_ssize_t r = 0; mirrors[i] != NULL && r < rs->len; r++) {
            if (PyList_GET_ITEM(rs->objs, r) == mirrors[i]) {
                rs->bindings[r]++;
                break;
            }
        }
        Py_XDECREF(mirrors[i]);
    }
    Py_XDECREF(hook);
    Py_XDECREF(last);
    return 0;
}

/* "the %run namespace of script.py", with the script's path (the cache's
 * key): IPython keeps the namespace of each script %run ran (its
 * _main_mod_cache, by absolute path) so that the script's functions keep
 * their globals; every variable the script made is held there too. */
static PyObject *
run_namespace_holder(PyObject *path)
{
    Py_ssize_t n = PyUnicode_GET_LENGTH(path);
    Py_ssize_t slash = PyUnicode_FindChar(path, '/', 0, n, -1);
    if (slash == -2) {
        return NULL;
    }
    PyObject *base = PyUnicode_Substring(path, slash + 1, n);
    PyObject *label = base ? PyUnicode_FromFormat("the %%run namespace of %U", base) : NULL;
    Py_XDECREF(base);
    return holder_dict(label, "run_namespace", "path", Py_NewRef(path));
}

static int
gather_run_namespaces(mt_ledger *l, root_list *rs)
{
    PyObject *cache = PyObject_GetAttrString(l->shell, "_main_mod_cache"), *path, *module;
    Py_ssize_t pos = 0;
    if (cache == NULL) {
        PyErr_Clear(); /* not IPython's shell: no %run */
        return 0;
    }
    int rc = 0;
    while (rc == 0 && PyDict_Check(cache) && PyDict_Next(cache, &pos, &path, &module)) {
        PyObject *ns = PyModule_Check(module) ? PyModule_GetDict(module) : NULL;
        if (ns != NULL && ns != l->user_ns && PyUnicode_Check(path)) {
            rc = append_root(rs, ns, run_namespace_holder(path), 1, PART_CACHES);
        }
    }
    Py_DECREF(cache);
    return rc;
}

/* 1 when path is in the interpreter's or an installed package's tree
 * (not the user's own code), -1 with an exception. */
static int
installed(PyObject *path)
{
    static const char *const prefixes[] = {"prefix", "base_prefix", "exec_prefix",
                                           "base_exec_prefix"};
    for (size_t i = 0; i < Py_ARRAY_LENGTH(prefixes); i++) {
        PyObject *prefix = PySys_GetObject(prefixes[i]);
        if (prefix != NULL && PyUnicode_Check(prefix) && PyUnicode_GET_LENGTH(prefix) > 1) {
            Py_ssize_t at = PyUnicode_Tailmatch(path, prefix, 0, PY_SSIZE_T_MAX, -1);
            if (at != 0) {
                return at < 0 ? -1 : 1;
            }
        }
    }
    static const char *const trees[] = {"site-packages", "dist-packages"};
    for (size_t i = 0; i < Py_ARRAY_LENGTH(trees); i++) {
        PyObject *tree = PyUnicode_FromString(trees[i]);
        Py_ssize_t at = tree ? PyUnicode_Find(path, tree, 0, PY_SSIZE_T_MAX, 1) : -2;
        Py_XDECREF(tree);
        if (at != -1) {
            return at == -2 ? -1 : 1;
        }
    }
    return 0;
}

/* A module global or class attribute as a holder: "label" for people,
 * "owner" (the module's or class's name) and "attribute".  An lru_cache'd
 * function holds its cache. */
static PyObject *
attribute_holder(PyObject *owner, PyObject *attribute, PyObject *value, const char *kind)
{
    int cache = strcmp(Py_TYPE(value)->tp_name, "functools._lru_cache_wrapper") == 0;
    PyObject *label =
        PyUnicode_FromFormat(cache ? "%U.%U (its lru_cache)" : "%U.%U", owner, attribute);
    PyObject *holder = holder_dict(label, cache ? "lru_cache" : kind, "owner", Py_NewRef(owner));
    if (holder != NULL && mt_set(holder, "attribute", Py_NewRef(attribute)) < 0) {
        Py_CLEAR(holder);
    }
    return holder;
}

/* The data attributes of the heap type cls (its own dict, dunders aside)
 * as roots: read from the type's dict, so no descriptor or metaclass runs. */
static int
gather_class(root_list *rs, PyTypeObject *cls, Py_ssize_t *budget)
{
    PyObject *owner = ((PyHeapTypeObject *)cls)->ht_qualname, *name, *value;
    Py_ssize_t pos = 0;
    while (*budget > 0 && PyDict_Next(cls->tp_dict, &pos, &name, &value)) {
        if (PyUnicode_Check(name) && !is_dunder(name) && mt_walker_is_data(value)) {
            (*budget)--;
            if (append_root(rs, value, attribute_holder(owner, name, value, "class_attribute"), 1,
                            PART_OTHER) < 0) {
                return -1;
            }
        }
    }
    return 0;
}

/* Classes ns binds that module (a module's __name__) defined give their
 * attributes as roots; classes imported from elsewhere do not. */
static int
gather_classes(root_list *rs, PyObject *ns, PyObject *module, Py_ssize_t *budget)
{
    PyObject *name, *value;
    Py_ssize_t pos = 0;
    while (module != NULL && *budget > 0 && PyDict_Next(ns, &pos, &name, &value)) {
        PyTypeObject *cls = PyType_Check(value) ? (PyTypeObject *)value : NULL;
        if (cls == NULL || !PyType_HasFeature(cls, Py_TPFLAGS_HEAPTYPE) || cls->tp_dict == NULL ||
            !PyUnicode_Check(((PyHeapTypeObject *)cls)->ht_qualname)) {
            continue;
        }
        PyObject *defined_in = PyDict_GetItemString(cls->tp_dict, "__module__");
        int match = defined_in != NULL && PyUnicode_Check(defined_in) &&
                    PyUnicode_Compare(defined_in, module) == 0;
        if (match && gather_class(rs, cls, budget) < 0) {
            return -1;
        }
    }
    return 0;
}

/* What the user's own modules keep (those whose files lie outside the
 * interpreter's and installed packages' trees): module globals, their
 * functions' lru_caches, their classes' attributes; and the attributes of
 * classes the notebook defines.  At most MAX_OTHER_ROOTS of them. */
static int
gather_other_roots(mt_ledger *l, root_list *rs)
{
    PyObject *modules = PySys_GetObject("modules"), *modname, *module, *name, *value;
    Py_ssize_t pos = 0, budget = MAX_OTHER_ROOTS;
    /* The notebook's own classes: those its module (__main__) defined. */
    PyObject *main = PyDict_GetItemString(l->user_ns, "__name__");
    if (gather_classes(rs, l->user_ns, main && PyUnicode_Check(main) ? main : NULL, &budget) < 0) {
        return -1;
    }
    while (modules != NULL && PyDict_Check(modules) &&
           PyDict_Next(modules, &pos, &modname, &module)) {
        PyObject *ns = PyModule_Check(module) ? PyModule_GetDict(module) : NULL;
        PyObject *file = ns ? PyDict_GetItemString(ns, "__file__") : NULL;
        if (file == NULL || !PyUnicode_Check(file) || ns == l->user_ns ||
            !PyUnicode_Check(modname) || starts_with(modname, "memtamer")) {
            continue;
        }
        int theirs = installed(file);
        if (theirs < 0) {
            return -1;
        }
        if (theirs) {
            continue;
        }
        Py_ssize_t at = 0;
        /* Appending may collect garbage, whose finalizers could drop the
         * module (and the dict being read) from sys.modules. */
        Py_INCREF(module);
        while (budget > 0 && PyDict_Next(ns, &at, &name, &value)) {
            if (PyUnicode_Check(name) && !is_dunder(name) && mt_walker_is_data(value)) {
                budget--;
                if (append_root(rs, value, attribute_holder(modname, name, value, "module_global"),
                                1, PART_OTHER) < 0) {
                    Py_DECREF(module);
                    return -1;
                }
            }
        }
        int rc = gather_classes(rs, ns, modname, &budget);
        Py_DECREF(module);
        if (rc < 0) {
            return -1;
        }
    }
    return 0;
}

/* The shell's hidden copy of an output name (its push puts _, __, ___
 * and _<n> in the hidden namespace too) when it no longer matches the
 * visible one: `%reset -f out` resets the visible _ and leaves the hidden
 * one holding the last output.  NULL (no exception) when there is none. */
static PyObject *
stale_hidden_output(const mt_ledger *l, PyObject *name, PyObject *value)
{
    if (!PyUnicode_Check(name) || PyUnicode_GET_LENGTH(name) == 0 ||
        PyUnicode_READ_CHAR(name, 0) != '_' || !is_output_name(name) || !mt_walker_is_data(value) ||
        PyDict_GetItemWithError(l->user_ns, name) == value) {
        return NULL;
    }
    return PyErr_Occurred() ? NULL
                            : holder_dict(PyUnicode_FromFormat("IPython's hidden %U", name),
                                          "hidden_output_name", "key", Py_NewRef(name));
}

static int
gather_hidden_outputs(mt_ledger *l, root_list *rs)
{
    PyObject *name, *value;
    Py_ssize_t pos = 0;
    while (l->hidden_ns != NULL && PyDict_Next(l->hidden_ns, &pos, &name, &value)) {
        PyObject *holder = stale_hidden_output(l, name, value);
        if (holder == NULL && PyErr_Occurred()) {
            return -1;
        }
        if (holder != NULL && append_root(rs, value, holder, 1, PART_CACHES) < 0) {
            return -1;
        }
    }
    return 0;
}

/* Hidden holders first (when the budget runs out, what is left over is
 * reported incomplete: better a variable than a holder), then the
 * variables, biggest cached size first. */
static int
gather_roots(mt_ledger *l, root_list *rs, Py_ssize_t *first_variable)
{
    PyObject *variables = NULL, *last_exception = NULL, *error = NULL, *name, *value;
    Py_ssize_t pos = 0;
    int rc = -1;
    if (l->out_cache != NULL) {
        while (PyDict_Next(l->out_cache, &pos, &name, &value)) {
            if (mt_walker_is_data(value) &&
                append_root(rs, value,
                            holder_dict(PyUnicode_FromFormat("Out[%S]", name), "output_cache",
                                        "out_index", Py_NewRef(name)),
                            1, PART_CACHES) < 0) {
                goto done;
            }
        }
    }
    last_exception = last_error_attributes();
    if (last_exception == NULL) {
        goto done;
    }
    /* The last error is one root: its value, traceback and frames together. */
    error = PyList_New(0);
    if (error == NULL) {
        goto done;
    }
    for (size_t i = 0; i < Py_ARRAY_LENGTH(LAST_EXCEPTION); i++) {
        value = PySys_GetObject(LAST_EXCEPTION[i]);
        if (value != NULL && mt_walker_is_data(value) && PyList_Append(error, value) < 0) {
            goto done;
        }
    }
    Py_SETREF(error, PyList_AsTuple(error));
    if (error == NULL) {
        goto done;
    }
    for (size_t i = 0; i < Py_ARRAY_LENGTH(LAST_EXCEPTION); i++) {
        value = PySys_GetObject(LAST_EXCEPTION[i]);
        if (value != NULL && mt_walker_is_data(value) &&
            append_root(rs, error,
                        holder_dict(PyUnicode_FromFormat("sys.%s", LAST_EXCEPTION[i]), "exception",
                                    "sys_attributes", Py_NewRef(last_exception)),
                        0, PART_TRACEBACK) < 0) {
            goto done;
        }
    }
    if (gather_run_namespaces(l, rs) < 0) {
        goto done;
    }
    variables = PyList_New(0);
    if (variables == NULL) {
        goto done;
    }
    pos = 0;
    while (PyDict_Next(l->user_ns, &pos, &name, &value)) {
        int kind = classify(l, name, value);
        int hidden = kind == NAME_HOLDER ? hidden_too(l, name, value) : 0;
        if (kind < 0 || hidden < 0) {
            goto done;
        }
        /* A dunder name is the user's own binding, as a variable is. */
        if (kind == NAME_HOLDER &&
            append_root(rs, value, name_holder(name, is_dunder(name) ? "variable" : "output_name"),
                        1 + hidden, is_dunder(name) ? PART_VARIABLES : PART_CACHES) < 0) {
            goto done;
        }
        if (kind == NAME_VARIABLE) {
            Py_ssize_t i = entry_index(l, name);
            if (i == -2) {
                goto done;
            }
            PyObject *t = Py_BuildValue("(LOO)", i >= 0 ? l->entries[i].bytes : -1LL, name, value);
            if (t == NULL || PyList_Append(variables, t) < 0) {
                Py_XDECREF(t);
                goto done;
            }
            Py_DECREF(t);
        }
    }
    if (gather_hidden_outputs(l, rs) < 0) {
        goto done;
    }
    /* Names are unique, so the values are never compared. */
    if (PyList_Sort(variables) < 0 || PyList_Reverse(variables) < 0) {
        goto done;
    }
    *first_variable = rs->len;
    Py_CLEAR(rs->hidden); /* each variable is a root of its own */
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(variables); i++) {
        PyObject *t = PyList_GET_ITEM(variables, i);
        if (append_root(rs, PyTuple_GET_ITEM(t, 2), name_holder(PyTuple_GET_ITEM(t, 1), "variable"),
                        1, PART_VARIABLES) < 0) {
            goto done;
        }
    }
    rc = count_mirrors(l, rs);
done:
    Py_XDECREF(variables);
    Py_XDECREF(last_exception);
    Py_XDECREF(error);
    return rc;
}

/* value shows obj's memory: a numpy array whose .base chain reaches obj,
 * or a memoryview of obj.  -1 with an exception. */
static int
is_view_of(PyObject *value, PyObject *obj)
{
    if (PyMemoryView_Check(value)) {
        return PyMemoryView_GET_BUFFER(value)->obj == obj;
    }
    int numpy = mt_npy_ready();
    if (numpy <= 0) {
        return numpy;
    }
    while (value != NULL && PyArray_Check(value)) {
        value = PyArray_BASE((PyArrayObject *)value);
        if (value == obj) {
            return 1;
        }
    }
    return 0;
}

/* The holder dicts of the roots that hold rs's root r; a variable that is
 * a view of r's object is of kind "view". */
static PyObject *
holders_of(const root_list *rs, Py_ssize_t r, const Py_ssize_t *roots, Py_ssize_t n, int unnamed)
{
    PyObject *list = PyList_New(0), *holder = NULL;
    PyObject *value = PyList_GET_ITEM(rs->objs, r);
    for (Py_ssize_t i = 0; list != NULL && i < n; i++) {
        PyObject *stands_for = PyList_GET_ITEM(rs->holders, roots[i]);
        for (Py_ssize_t k = 0; k < PyList_GET_SIZE(stands_for); k++) {
            holder = PyDict_Copy(PyList_GET_ITEM(stands_for, k));
            if (holder == NULL) {
                goto error;
            }
            PyObject *kind = PyDict_GetItemString(holder, "kind");
            int view = PyUnicode_CompareWithASCIIString(kind, "variable") == 0
                           ? is_view_of(PyList_GET_ITEM(rs->objs, roots[i]), value)
                           : 0;
            if (view < 0 || (view && mt_set(holder, "kind", PyUnicode_FromString("view")) < 0)) {
                goto error;
            }
            if (PyList_Append(list, holder) < 0) {
                goto error;
            }
            Py_CLEAR(holder);
        }
    }
    if (list != NULL && unnamed) {
        holder = holder_dict(PyUnicode_FromString(UNNAMED_HOLDER), "unnamed", NULL, NULL);
        if (holder == NULL || PyList_Append(list, holder) < 0) {
            goto error;
        }
        Py_CLEAR(holder);
    }
    return list;
error:
    Py_XDECREF(holder);
    Py_XDECREF(list);
    return NULL;
}

/* A view is what shows another object's buffer (is_view_of): an object
 * array whose items reach another object holds it, and is no view of it. */
static PyObject *
shares_of(const mt_walker *w, Py_ssize_t r, const root_list *rs, PyObject *value, Py_ssize_t first)
{
    const mt_walker_share *s;
    Py_ssize_t n = mt_walker_shares(w, r, &s);
    PyObject *list = PyList_New(n);
    for (Py_ssize_t i = 0; list != NULL && i < n; i++) {
        int view =
            s[i].reaches_other ? is_view_of(value, PyList_GET_ITEM(rs->objs, s[i].other)) : 0;
        PyObject *d =
            view < 0 ? NULL
                     : Py_BuildValue("{sOsLsOsOsO}", "with",
                                     PyList_GET_ITEM(rs->labels, s[i].other), "bytes", s[i].bytes,
                                     "holds", s[i].reaches_other ? Py_True : Py_False, "view",
                                     view ? Py_True : Py_False, "variable",
                                     s[i].other >= first ? Py_True : Py_False);
        if (d == NULL) {
            Py_CLEAR(list);
            break;
        }
        PyList_SET_ITEM(list, i, d);
    }
    return list;
}

static PyObject *
cell_or_none(long long cell)
{
    return cell < 0 ? Py_NewRef(Py_None) : PyLong_FromLongLong(cell);
}

/* Immutable numbers and strings smaller than a tracked object: the
 * interpreter shares them (small ints, interned strings, constants), so
 * other names or references bound to the same one hold nothing of note. */
static int
is_shared_atom(PyObject *value, long long bytes)
{
    return bytes < BIG_OBJECT_BYTES &&
           (PyLong_CheckExact(value) || PyFloat_CheckExact(value) || PyComplex_CheckExact(value) ||
            PyUnicode_CheckExact(value) || PyBytes_CheckExact(value) || PyBool_Check(value) ||
            value == Py_None);
}

static PyObject *
variable_dict(mt_ledger *l, const mt_walker *w, Py_ssize_t r, const root_list *rs, Py_ssize_t first)
{
    const mt_walker_totals *t = mt_walker_totals_of(w, r);
    PyObject *name = PyList_GET_ITEM(rs->labels, r), *value = PyList_GET_ITEM(rs->objs, r);
    const Py_ssize_t *holders;
    Py_ssize_t nholders = mt_walker_holders(w, r, &holders);
    Py_ssize_t i = entry_index(l, name);
    if (i == -2) {
        return NULL;
    }
    int atom = is_shared_atom(value, t->bytes);
    int unnamed = t->held_elsewhere && !atom;
    if (atom) {
        nholders = 0;
    }
    /* The interpreter keeps a shared atom alive (a small int, an interned
     * string): del frees nothing, and no holder is named for it.  (For other
     * objects the unnamed holder is named; a purge's dry run counts on
     * exclusive ignoring its own references.) */
    long long exclusive = atom && t->held_elsewhere ? 0 : t->exclusive;
    long long created = -1, rebound = -1, used = -1;
    if (i >= 0) {
        mt_ledger_entry *e = &l->entries[i];
        if (record_walk(l, e, t) < 0) {
            return NULL;
        }
        created = e->created;
        rebound = e->rebound;
        used = e->used;
    }
    long long last = created > rebound ? created : rebound;
    last = used > last ? used : last;
    PyObject *d = PyDict_New();
    if (d == NULL || mt_set(d, "name", Py_NewRef(name)) < 0 ||
        mt_set(d, "type", describe_type(value)) < 0 ||
        mt_set(d, "bytes", PyLong_FromLongLong(t->bytes)) < 0 ||
        mt_set(d, "exclusive", t->complete ? PyLong_FromLongLong(exclusive) : Py_NewRef(Py_None)) <
            0 ||
        mt_set(d, "complete", PyBool_FromLong(t->complete)) < 0 ||
        mt_set(d, "estimate", t->complete ? Py_NewRef(Py_None) : PyLong_FromLongLong(t->estimate)) <
            0 ||
        mt_set(d, "holders", holders_of(rs, r, holders, nholders, unnamed)) < 0 ||
        mt_set(d, "shares", atom ? PyList_New(0) : shares_of(w, r, rs, value, first)) < 0 ||
        mt_set(d, "created_cell", cell_or_none(created)) < 0 ||
        mt_set(d, "rebound_cell", cell_or_none(rebound)) < 0 ||
        mt_set(d, "last_used_cell", cell_or_none(used)) < 0 ||
        mt_set(d, "idle_cells",
               last < 0 ? Py_NewRef(Py_None) : PyLong_FromLongLong(l->cell - last)) < 0) {
        Py_XDECREF(d);
        return NULL;
    }
    return d;
}

typedef struct {
    Py_ssize_t root;
    long long bytes;
} ranked;

static int
compare_ranked(const void *a, const void *b)
{
    const ranked *x = a, *y = b;
    return (x->bytes < y->bytes) - (x->bytes > y->bytes);
}

/* Appends item (stolen; NULL passes its exception on) to list.  -1/0. */
static int
append_new(PyObject *list, PyObject *item)
{
    if (item == NULL) {
        return -1;
    }
    int rc = PyList_Append(list, item);
    Py_DECREF(item);
    return rc;
}

/* The name a deleted variable had, when obj is what it was bound to
 * (borrowed), or NULL. */
static PyObject *
gone_name_of(const mt_ledger *l, PyObject *obj)
{
    for (Py_ssize_t i = l->ngone - 1; i >= 0; i--) {
        if (l->gone[i].identity == (uintptr_t)obj && l->gone[i].type == Py_TYPE(obj)) {
            return l->gone[i].name; /* live: the last scan proved it */
        }
    }
    return NULL;
}

/* One row per hidden root (the caches that keep one object, the last
 * error, a module global, a class attribute): its holders, deep size,
 * what purging it frees, the bytes the account charges it, the variables
 * that hold it too and the name it had before a del. */
static PyObject *
held_rows(const mt_ledger *l, const mt_walker *w, const root_list *rs, Py_ssize_t first,
          const long long *charged)
{
    PyObject *rows = PyList_New(0);
    for (Py_ssize_t r = 0; rows != NULL && r < first; r++) {
        const mt_walker_totals *t = mt_walker_totals_of(w, r);
        const Py_ssize_t *holders;
        Py_ssize_t n = mt_walker_holders(w, r, &holders);
        PyObject *value = PyList_GET_ITEM(rs->objs, r), *also = PyList_New(0);
        for (Py_ssize_t k = 0; also != NULL && k < n; k++) {
            if (holders[k] >= first &&
                PyList_Append(also, PyList_GET_ITEM(rs->labels, holders[k])) < 0) {
                Py_CLEAR(also);
            }
        }
        PyObject *was = gone_name_of(l, value);
        PyObject *d =
            also == NULL ? NULL
                         : Py_BuildValue(
                               "{sOsLsNsLsOsNsO}", "holders", PyList_GET_ITEM(rs->holders, r),
                               "bytes", t->bytes, "exclusive",
                               t->complete ? PyLong_FromLongLong(t->exclusive) : Py_NewRef(Py_None),
                               "charged", charged[r], "complete", t->complete ? Py_True : Py_False,
                               "variables", also, "was", was ? was : Py_None);
        /* The last error's root is a tuple of ours: its first item is the error. */
        PyObject *shown =
            rs->ranks[r] == PART_TRACEBACK && PyTuple_Check(value) && PyTuple_GET_SIZE(value) > 0
                ? PyTuple_GET_ITEM(value, 0)
                : value;
        if (d == NULL || mt_set(d, "type", describe_type(shown)) < 0 ||
            mt_set(d, "part", PyUnicode_FromString(PART_NAMES[rs->ranks[r]])) < 0 ||
            PyList_Append(rows, d) < 0) {
            Py_XDECREF(d);
            Py_CLEAR(rows);
            break;
        }
        Py_DECREF(d);
    }
    return rows;
}

/* The account's walked parts: each object's bytes once, charged to the
 * part of lowest rank that reaches it. */
static PyObject *
account_parts(const root_list *rs, const long long *charged)
{
    long long sums[NPARTS] = {0};
    for (Py_ssize_t r = 0; r < rs->len; r++) {
        sums[rs->ranks[r]] += charged[r];
    }
    PyObject *d = PyDict_New();
    for (int p = 0; d != NULL && p < NPARTS; p++) {
        if (mt_set(d, PART_NAMES[p], PyLong_FromLongLong(sums[p])) < 0) {
            Py_CLEAR(d);
        }
    }
    return d;
}

static void
free_roots(root_list *rs)
{
    PyMem_RawFree(rs->bindings);
    PyMem_RawFree(rs->ranks);
    Py_XDECREF(rs->objs);
    Py_XDECREF(rs->labels);
    Py_XDECREF(rs->holders);
    Py_XDECREF(rs->hidden);
}

/* Every root starts with its own holders list, and hidden roots merge. */
static int
new_roots(root_list *rs)
{
    rs->objs = PyList_New(0);
    rs->labels = PyList_New(0);
    rs->holders = PyList_New(0);
    rs->hidden = PyDict_New();
    return rs->objs && rs->labels && rs->holders && rs->hidden ? 0 : -1;
}

/* The other holders (module globals, lru_caches, class attributes), walked
 * after the variables and caches and apart from them, until deadline: the
 * objects of those roots are barriers here, so nothing is counted twice,
 * and a framework's big graph behind a module global cannot cut the
 * variables' walk short or change what their del frees.  Their rows go to
 * held, their bytes to *total; *complete says whether the walk finished. */
static int
walk_other_roots(mt_ledger *l, const root_list *walked, double deadline, PyObject *held,
                 long long *total, int *complete)
{
    root_list rs = {0};
    PyObject *main = NULL, *barriers = NULL, *rows = NULL;
    mt_walker *w = NULL;
    long long *charged = NULL;
    int rc = -1;
    if (new_roots(&rs) < 0 || gather_other_roots(l, &rs) < 0 ||
        (main = PyList_AsTuple(walked->objs)) == NULL ||
        (barriers = PySequence_Concat(l->barriers, main)) == NULL) {
        goto done;
    }
    /* Out of time: the walker still starts (a budget <= 0 would mean none). */
    double left = deadline - mt_monotonic_seconds();
    w = mt_walker_new(barriers, left > 1e-6 ? left : 1e-6, BIG_OBJECT_BYTES);
    if (w == NULL ||
        mt_walker_run(w, ((PyListObject *)rs.objs)->ob_item, rs.bindings, rs.len) < 0) {
        goto done;
    }
    charged = PyMem_Calloc((size_t)(rs.len ? rs.len : 1), sizeof *charged);
    if (charged == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    mt_walker_charge(w, rs.ranks, charged);
    rows = held_rows(l, w, &rs, rs.len, charged);
    Py_ssize_t end = PyList_GET_SIZE(held);
    if (rows == NULL || PyList_SetSlice(held, end, end, rows) < 0) {
        goto done;
    }
    for (Py_ssize_t r = 0; r < rs.len; r++) {
        *total += charged[r];
        *complete &= mt_walker_totals_of(w, r)->complete;
    }
    rc = 0;
done:
    PyMem_Free(charged);
    mt_walker_free(w);
    Py_XDECREF(main);
    Py_XDECREF(barriers);
    Py_XDECREF(rows);
    free_roots(&rs);
    return rc;
}

/* The variables report; with report, also its "variables_walk" summary,
 * the hidden holders' rows ("held") and the account's walked parts. */
static PyObject *
variables(mt_ledger *l, PyObject *only, PyObject *report)
{
    PyObject *result = NULL;
    long long *charged = NULL;
    root_list rs = {0};
    mt_walker *w = NULL;
    ranked *order = NULL;
    Py_ssize_t first = 0;
    double started = mt_monotonic_seconds();
    if (l->user_ns == NULL) {
        return PyList_New(0);
    }
    /* prune first: the rows name what a deleted name left behind */
    if (prune_gone(l) < 0 || new_roots(&rs) < 0 || gather_roots(l, &rs, &first) < 0) {
        goto done;
    }
    PyObject *objs = rs.objs, *labels = rs.labels;
    Py_ssize_t n = rs.len;
    w = mt_walker_new(l->barriers, report_budget(l), BIG_OBJECT_BYTES);
    if (w == NULL || mt_walker_run(w, ((PyListObject *)objs)->ob_item, rs.bindings, n) < 0) {
        goto done;
    }
    order = PyMem_Malloc((size_t)(n - first + 1) * sizeof *order);
    if (order == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    Py_ssize_t count = 0;
    int complete = 1;
    for (Py_ssize_t r = 0; r < n; r++) {
        complete &= mt_walker_totals_of(w, r)->complete;
        if (r >= first) {
            int match = only == NULL
                            ? 1
                            : PyObject_RichCompareBool(PyList_GET_ITEM(labels, r), only, Py_EQ);
            if (match < 0) {
                goto done;
            }
            if (match) {
                /* A walk cut short ranks by its estimate (== bytes when complete). */
                order[count++] = (ranked){r, mt_walker_totals_of(w, r)->estimate};
            }
        }
    }
    qsort(order, (size_t)count, sizeof *order, compare_ranked);
    result = PyList_New(count);
    for (Py_ssize_t k = 0; result != NULL && k < count; k++) {
        PyObject *d = variable_dict(l, w, order[k].root, &rs, first);
        if (d == NULL) {
            Py_CLEAR(result);
            break;
        }
        PyList_SET_ITEM(result, k, d);
    }
    if (result != NULL && report != NULL) {
        charged = PyMem_Calloc((size_t)(n ? n : 1), sizeof *charged);
        if (charged == NULL) {
            PyErr_NoMemory();
            Py_CLEAR(result);
            goto done;
        }
        mt_walker_charge(w, rs.ranks, charged);
        long long others = 0;
        PyObject *held = held_rows(l, w, &rs, first, charged), *parts = NULL;
        if (held == NULL ||
            walk_other_roots(l, &rs, started + report_budget(l), held, &others, &complete) < 0 ||
            (parts = account_parts(&rs, charged)) == NULL ||
            mt_set(parts, PART_NAMES[PART_OTHER], PyLong_FromLongLong(others)) < 0 ||
            mt_set(report, "variables_walk",
                   Py_BuildValue("{sOsdsn}", "complete", complete ? Py_True : Py_False, "seconds",
                                 mt_monotonic_seconds() - started, "roots", n)) < 0 ||
            mt_set(report, "held", Py_NewRef(held)) < 0 ||
            mt_set(report, "account_parts", Py_NewRef(parts)) < 0) {
            Py_CLEAR(result);
        }
        Py_XDECREF(held);
        Py_XDECREF(parts);
    }
done:
    PyMem_Free(order);
    PyMem_Free(charged);
    mt_walker_free(w);
    free_roots(&rs);
    return result;
}

int
mt_ledger_report(mt_ledger *l, PyObject *report)
{
    if (l->user_ns == NULL) {
        return 0;
    }
    return mt_set(report, "variables", variables(l, NULL, report));
}

Py_ssize_t
mt_ledger_count(const mt_ledger *l)
{
    return l->user_ns != NULL ? l->len : 0;
}

mt_ledger_variable
mt_ledger_variable_at(const mt_ledger *l, Py_ssize_t i)
{
    const mt_ledger_entry *e = &l->entries[i];
    return (mt_ledger_variable){e->name, e->identity, e->bytes, e->created, e->rebound, e->used};
}

PyObject *
mt_ledger_bound(const mt_ledger *l, PyObject *name)
{
    return l->user_ns != NULL ? PyDict_GetItemWithError(l->user_ns, name) : NULL;
}

/* Whether obj is bound to a variable (by identity, as the last scan saw). */
static int
bound_to_variable(const mt_ledger *l, PyObject *obj)
{
    for (Py_ssize_t i = 0; i < l->len; i++) {
        if (l->entries[i].identity == (uintptr_t)obj) {
            return 1;
        }
    }
    return 0;
}

PyObject *
mt_ledger_output_entries(mt_ledger *l)
{
    PyObject *list = PyList_New(0), *key, *value;
    Py_ssize_t pos = 0;
    if (list == NULL || l->user_ns == NULL || l->out_cache == NULL) {
        return list;
    }
    while (PyDict_Next(l->out_cache, &pos, &key, &value)) {
        mt_walker_totals t;
        if (bound_to_variable(l, value) || !mt_walker_is_data(value)) {
            continue;
        }
        Py_INCREF(value);
        int rc = mt_walker_deep_size(value, l->barriers, cell_budget(l), &t);
        Py_DECREF(value);
        if (rc < 0 ||
            append_new(list, Py_BuildValue("(LO)", t.complete ? t.bytes : t.estimate, key)) < 0) {
            Py_DECREF(list);
            return NULL;
        }
    }
    if (PyList_Sort(list) < 0 || PyList_Reverse(list) < 0) {
        Py_DECREF(list);
        return NULL;
    }
    return list;
}

/* The interpreter keeps the ints up to this one (its small ints): an index
 * that small costs the ledger nothing. */
#define SHARED_SMALL_INT 256

long long
mt_ledger_own_bytes(const mt_ledger *l)
{
    long long total =
        (long long)l->cap * (long long)sizeof *l->entries +
        (long long)l->gone_cap * (long long)sizeof *l->gone +
        (long long)(l->user_seen.cap + l->hidden_seen.cap) * (long long)sizeof *l->user_seen.items;
    PyObject *owned[] = {l->index, l->changes.keys, l->ran, l->walked, l->adopted};
    for (size_t k = 0; k < Py_ARRAY_LENGTH(owned); k++) {
        long long bytes = owned[k] ? mt_walker_object_bytes(owned[k]) : 0;
        if (bytes < 0) {
            return -1;
        }
        total += bytes;
    }
    for (Py_ssize_t i = SHARED_SMALL_INT + 1; i < l->len; i++) {
        PyObject *at = PyDict_GetItemWithError(l->index, l->entries[i].name);
        long long bytes = at ? mt_walker_object_bytes(at) : -1;
        if (bytes < 0) {
            if (!PyErr_Occurred()) {
                PyErr_SetString(PyExc_SystemError, "ledger: a name without its index");
            }
            return -1;
        }
        total += bytes;
    }
    for (Py_ssize_t i = 0; i < l->ngone; i++) {
        long long bytes = mt_walker_object_bytes(l->gone[i].name);
        if (bytes < 0) {
            return -1;
        }
        total += bytes;
    }
    return total;
}

PyDoc_STRVAR(
    mt_ledger_py_attach__doc__,
    "ledger_attach(user_ns, hidden_ns, out_cache, shell, transform): follow this namespace.");
static PyObject *
mt_ledger_py_attach(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    mt_ledger *l = &mt_get_state(module)->ledger;
    if (nargs != 5 || !PyDict_Check(args[0]) || (args[1] != Py_None && !PyDict_Check(args[1])) ||
        (args[2] != Py_None && !PyDict_Check(args[2]))) {
        PyErr_SetString(
            PyExc_TypeError,
            "ledger_attach(user_ns: dict, hidden_ns: dict | None, out_cache: dict | None, "
            "shell, transform: callable | None)");
        return NULL;
    }
    mt_ledger_clear(l);
    l->user_ns = Py_NewRef(args[0]);
    l->hidden_ns = args[1] == Py_None ? NULL : Py_NewRef(args[1]);
    l->out_cache = args[2] == Py_None ? NULL : Py_NewRef(args[2]);
    l->shell = Py_NewRef(args[3]);
    l->transform = args[4] == Py_None ? NULL : Py_NewRef(args[4]);
    PyObject *barriers = PyList_New(0);
    for (int i = 0; barriers != NULL && i < 4; i++) {
        if (args[i] != Py_None && PyList_Append(barriers, args[i]) < 0) {
            Py_CLEAR(barriers);
        }
    }
    if (barriers != NULL) {
        l->barriers = PyList_AsTuple(barriers);
        Py_DECREF(barriers);
    }
    l->index = PyDict_New();
    l->walked = PyList_New(0);
    l->adopted = PyList_New(0);
    l->cell = -1;
    PyObject *watched[2] = {l->user_ns, l->hidden_ns};
    /* What is there already was made before memtamer watched: created -1. */
    if (l->barriers == NULL || l->index == NULL || l->walked == NULL || l->adopted == NULL ||
        mt_pyver_watch_dicts(&l->changes, watched, l->hidden_ns ? 2 : 1) < 0 ||
        scan(l, -1, NULL, NULL) < 0) {
        mt_ledger_clear(l);
        return NULL;
    }
    Py_RETURN_NONE;
}

int
mt_ledger_adopt(mt_ledger *l, PyObject *names)
{
    MT_ASSERT_GIL();
    if (l->user_ns == NULL) {
        return 0;
    }
    PyObject *walk = PyList_New(0);
    if (walk == NULL) {
        return -1;
    }
    for (Py_ssize_t k = 0; k < PyList_GET_SIZE(names); k++) {
        PyObject *name = PyList_GET_ITEM(names, k);
        PyObject *value = PyDict_GetItemWithError(l->user_ns, name);
        Py_ssize_t i = value ? entry_index(l, name) : (PyErr_Occurred() ? -2 : -1);
        if (i == -2) {
            goto error;
        }
        if (i < 0) {
            continue;
        }
        l->entries[i].identity = (uintptr_t)value;
        l->entries[i].type = Py_TYPE(value);
        if (PyList_Append(walk, name) < 0 || PyList_Append(l->adopted, name) < 0) {
            goto error;
        }
    }
    int rc = size_names(l, walk, cell_budget(l));
    Py_DECREF(walk);
    return rc;
error:
    Py_DECREF(walk);
    return -1;
}

PyDoc_STRVAR(mt_ledger_py_rewalk__doc__,
             "ledger_rewalk(names): size these variables again now: their objects changed in place"
             " where no cell rebinds or reads them (%shrink).");
static PyObject *
mt_ledger_py_rewalk(PyObject *module, PyObject *names)
{
    mt_ledger *l = &mt_get_state(module)->ledger;
    if (l->user_ns == NULL) {
        Py_RETURN_NONE;
    }
    PyObject *walk = PySequence_List(names);
    if (walk == NULL) {
        return NULL;
    }
    int rc = size_names(l, walk, cell_budget(l));
    Py_DECREF(walk);
    if (rc < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* Whether value is g's object by identity and type (borrowed in *found). */
static int
is_gone(const mt_ledger_gone *g, PyObject *value, PyObject **found)
{
    if ((uintptr_t)value != g->identity || Py_TYPE(value) != g->type) {
        return 0;
    }
    *found = value;
    return 1;
}

/* Appends (when holders is not NULL) the holder dict of each direct
 * reference to g's object the shell keeps: the output cache, names of the
 * user namespace (its output names, other variables), the namespaces %run
 * keeps, and the locals of the last traceback's frames.  *found: the
 * object (borrowed), or NULL when none holds it. */
static int
direct_holders(mt_ledger *l, const mt_ledger_gone *g, PyObject *holders, PyObject **found)
{
    PyObject *name, *value, *path, *module, *cache = NULL, *tb = NULL;
    Py_ssize_t pos = 0;
    int rc = -1;
    *found = NULL;
    while (l->out_cache != NULL && PyDict_Next(l->out_cache, &pos, &name, &value)) {
        if (is_gone(g, value, found) && holders != NULL &&
            append_new(holders, holder_dict(PyUnicode_FromFormat("Out[%S]", name), "output_cache",
                                            "out_index", Py_NewRef(name))) < 0) {
            goto done;
        }
    }
    pos = 0;
    while (PyDict_Next(l->user_ns, &pos, &name, &value)) {
        int kind = is_gone(g, value, found) ? classify(l, name, value) : NAME_SKIP;
        if (kind < 0 ||
            (kind != NAME_SKIP && holders != NULL &&
             append_new(holders, name_holder(name, kind == NAME_HOLDER && !is_dunder(name)
                                                       ? "output_name"
                                                       : "variable")) < 0)) {
            goto done;
        }
    }
    pos = 0;
    while (l->hidden_ns != NULL && PyDict_Next(l->hidden_ns, &pos, &name, &value)) {
        PyObject *holder = is_gone(g, value, found) ? stale_hidden_output(l, name, value) : NULL;
        if (holder == NULL && PyErr_Occurred()) {
            goto done;
        }
        if (holders == NULL) {
            Py_XDECREF(holder); /* only *found was asked for */
        }
        else if (holder != NULL && append_new(holders, holder) < 0) {
            goto done;
        }
    }
    cache = PyObject_GetAttrString(l->shell, "_main_mod_cache");
    PyErr_Clear(); /* not IPython's shell: no %run */
    pos = 0;
    while (cache != NULL && PyDict_Check(cache) && PyDict_Next(cache, &pos, &path, &module)) {
        PyObject *ns = PyModule_Check(module) ? PyModule_GetDict(module) : NULL;
        Py_ssize_t at = 0;
        while (ns != NULL && ns != l->user_ns && PyUnicode_Check(path) &&
               PyDict_Next(ns, &at, &name, &value)) {
            if (is_gone(g, value, found)) {
                if (holders != NULL && append_new(holders, run_namespace_holder(path)) < 0) {
                    goto done;
                }
                break;
            }
        }
    }
    tb = Py_XNewRef(PySys_GetObject("last_traceback"));
    for (PyObject *t = tb; t != NULL && PyTraceBack_Check(t);
         t = (PyObject *)((PyTracebackObject *)t)->tb_next) {
        PyFrameObject *frame = ((PyTracebackObject *)t)->tb_frame;
        PyCodeObject *code = PyFrame_GetCode(frame);
        int optimized = (code->co_flags & CO_OPTIMIZED) != 0;
        Py_DECREF(code);
        if (!optimized) {
            continue; /* a cell's or module's frame: its locals are a namespace, seen above */
        }
        PyObject *locals = PyFrame_GetLocals(frame);
        PyObject *values = locals ? PyMapping_Values(locals) : NULL;
        Py_XDECREF(locals);
        if (values == NULL) {
            goto done;
        }
        int held = 0; /* by identity: == would compare arrays element by element */
        for (Py_ssize_t k = 0; k < PyList_GET_SIZE(values); k++) {
            held |= is_gone(g, PyList_GET_ITEM(values, k), found);
        }
        Py_DECREF(values);
        if (held) {
            PyObject *attributes = last_error_attributes();
            if (holders != NULL &&
                append_new(holders, holder_dict(PyUnicode_FromString("the last traceback's frames"),
                                                "exception", "sys_attributes", attributes)) < 0) {
                goto done;
            }
            break;
        }
    }
    rc = 0;
done:
    Py_XDECREF(cache);
    Py_XDECREF(tb);
    return rc;
}

PyDoc_STRVAR(mt_ledger_py_gone__doc__,
             "ledger_gone(cell=None) -> list of dicts: big objects whose names went (del, or\n"
             "bound to another object) while something kept them alive: name, bytes, cell,\n"
             "rebound and holders (the shell's direct references to it; a holder of kind\n"
             "'unnamed' when none of those is).  With cell, only the names that cell lost\n"
             "(proven when it ended: the look costs nothing more).");
static PyObject *
mt_ledger_py_gone(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    mt_ledger *l = &mt_get_state(module)->ledger;
    long long cell = -1;
    if (nargs > 1 || (nargs == 1 && args[0] != Py_None && !PyLong_Check(args[0]))) {
        PyErr_SetString(PyExc_TypeError, "ledger_gone(cell: int | None = None)");
        return NULL;
    }
    if (nargs == 1 && args[0] != Py_None && (cell = PyLong_AsLongLong(args[0])) == -1 &&
        PyErr_Occurred()) {
        return NULL;
    }
    int every = nargs == 0 || args[0] == Py_None;
    PyObject *list = PyList_New(0), *holders = NULL, *obj = NULL;
    if (l->user_ns == NULL || list == NULL) {
        return list;
    }
    if (every && prune_gone(l) < 0) {
        goto error;
    }
    for (Py_ssize_t i = 0; i < l->ngone; i++) {
        const mt_ledger_gone *g = &l->gone[i];
        if (!every && g->cell != cell) {
            continue;
        }
        holders = PyList_New(0);
        if (holders == NULL || direct_holders(l, g, holders, &obj) < 0) {
            goto error;
        }
        if (PyList_GET_SIZE(holders) == 0 &&
            append_new(holders, holder_dict(PyUnicode_FromString(UNNAMED_HOLDER), "unnamed", NULL,
                                            NULL)) < 0) {
            goto error;
        }
        if (append_new(list, Py_BuildValue("{sOsLsLsOsN}", "name", g->name, "bytes", g->bytes,
                                           "cell", g->cell, "rebound",
                                           g->rebound ? Py_True : Py_False, "holders", holders)) <
            0) {
            holders = NULL;
            goto error;
        }
        holders = NULL;
    }
    return list;
error:
    Py_XDECREF(holders);
    Py_DECREF(list);
    return NULL;
}

PyDoc_STRVAR(mt_ledger_py_gone_object__doc__,
             "ledger_gone_object(name) -> the object a deleted name was bound to while\n"
             "something still keeps it alive, or None.");
static PyObject *
mt_ledger_py_gone_object(PyObject *module, PyObject *name)
{
    mt_ledger *l = &mt_get_state(module)->ledger;
    if (!PyUnicode_Check(name)) {
        PyErr_SetString(PyExc_TypeError, "ledger_gone_object(name: str)");
        return NULL;
    }
    for (Py_ssize_t i = l->ngone - 1; i >= 0; i--) {
        if (PyUnicode_Compare(l->gone[i].name, name) == 0) {
            PyObject *obj;
            if (gone_object(l, &l->gone[i], &obj) < 0) {
                return NULL;
            }
            return Py_NewRef(obj ? obj : Py_None);
        }
    }
    Py_RETURN_NONE;
}

PyDoc_STRVAR(mt_ledger_py_detach__doc__, "ledger_detach(): stop following it.");
static PyObject *
mt_ledger_py_detach(PyObject *module, PyObject *Py_UNUSED(unused))
{
    mt_ledger_clear(&mt_get_state(module)->ledger);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(
    mt_ledger_py_variables__doc__,
    "variables(name=None) -> list of dicts: sizes, holders, provenance (walks every root).");
static PyObject *
mt_ledger_py_variables(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs > 1 || (nargs == 1 && args[0] != Py_None && !PyUnicode_Check(args[0]))) {
        PyErr_SetString(PyExc_TypeError, "variables(name: str | None = None)");
        return NULL;
    }
    /* Walks every root: the variables, biggest first (only == a name: that one). */
    return variables(&mt_get_state(module)->ledger,
                     nargs == 1 && args[0] != Py_None ? args[0] : NULL, NULL);
}

PyDoc_STRVAR(mt_ledger_py_names__doc__,
             "ledger() -> dict: per-name provenance and cached sizes, without walking; how it "
             "learns what a cell changed (change_tracking) and a cell's walk budget in seconds "
             "(cell_walk_budget).");
static PyObject *
mt_ledger_py_names(PyObject *module, PyObject *Py_UNUSED(unused))
{
    mt_ledger *l = &mt_get_state(module)->ledger;
    PyObject *names = PyDict_New();
    for (Py_ssize_t i = 0; names != NULL && i < l->len; i++) {
        const mt_ledger_entry *e = &l->entries[i];
        PyObject *d = PyDict_New();
        if (d == NULL || mt_set(d, "created_cell", cell_or_none(e->created)) < 0 ||
            mt_set(d, "rebound_cell", cell_or_none(e->rebound)) < 0 ||
            mt_set(d, "last_used_cell", cell_or_none(e->used)) < 0 ||
            mt_set(d, "bytes", mt_size_or_none(e->bytes)) < 0 ||
            mt_set(d, "complete", PyBool_FromLong(e->complete)) < 0 ||
            mt_set(d, "estimate", e->complete ? Py_NewRef(Py_None) : mt_size_or_none(e->estimate)) <
                0 ||
            PyDict_SetItem(names, e->name, d) < 0) {
            Py_XDECREF(d);
            Py_CLEAR(names);
            break;
        }
        Py_DECREF(d);
    }
    if (names == NULL) {
        return NULL;
    }
    /* How it learns what a cell changed (ledger.h), None while detached. */
    const char *tracking = l->user_ns == NULL      ? NULL
                           : l->changes.ndicts > 0 ? "dict watcher"
                                                   : "namespace scan";
    return Py_BuildValue("{sNsOsLsdsNszsd}", "names", names, "attached",
                         l->user_ns ? Py_True : Py_False, "cell", l->cell, "last_hook_seconds",
                         l->last_hook_seconds, "last_error_attributes", last_error_attributes(),
                         "change_tracking", tracking, "cell_walk_budget", cell_budget(l));
}

PyDoc_STRVAR(mt_ledger_py_ran__doc__,
             "ledger_ran(code): the running cell runs this code object, compiled by the shell: "
             "the names it loads or stores count as read by the cell (no second compile).");
static PyObject *
mt_ledger_py_ran(PyObject *module, PyObject *code)
{
    mt_ledger *l = &mt_get_state(module)->ledger;
    if (!PyCode_Check(code)) {
        PyErr_Format(PyExc_TypeError, "ledger_ran(code): a code object, not %T", code);
        return NULL;
    }
    if (l->user_ns == NULL) {
        Py_RETURN_NONE;
    }
    if (l->ran == NULL && (l->ran = PySet_New(NULL)) == NULL) {
        return NULL;
    }
    if (collect_names(code, l->ran, 0) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

int
mt_ledger_regrowth(mt_ledger *l, PyObject *holders, long long *total)
{
    *total = 0;
    /* Only the names walked since the cell began: not every variable. */
    for (Py_ssize_t k = 0; l->walked != NULL && k < PyList_GET_SIZE(l->walked); k++) {
        Py_ssize_t i = entry_index(l, PyList_GET_ITEM(l->walked, k));
        if (i == -2) {
            return -1;
        }
        const mt_ledger_entry *e = i >= 0 ? &l->entries[i] : NULL;
        if (e == NULL || e->walk_serial != l->serial || l->serial == 0 || e->bytes < 0) {
            continue; /* deleted since, or bound anew */
        }
        long long grew = e->bytes - (e->bytes_at_begin > 0 ? e->bytes_at_begin : 0);
        if (grew <= 0) {
            continue;
        }
        *total += grew;
        if (holders != NULL &&
            append_new(holders, Py_BuildValue("{sOsL}", "holder", e->name, "bytes", grew)) < 0) {
            return -1;
        }
    }
    return 0;
}

int
mt_ledger_lost_in(const mt_ledger *l, long long cell)
{
    for (Py_ssize_t i = 0; l->user_ns != NULL && i < l->ngone; i++) {
        if (l->gone[i].cell == cell) {
            return 1;
        }
    }
    return 0;
}

PyDoc_STRVAR(mt_ledger_py_set_budget__doc__,
             "set_walk_budget(cell_seconds, report_seconds) -> (cell_seconds, report_seconds):\n"
             "time limits of the walks; returns the limits in force before, to restore them.");
static PyObject *
mt_ledger_py_set_budget(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    mt_ledger *l = &mt_get_state(module)->ledger;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "set_walk_budget(cell_seconds, report_seconds)");
        return NULL;
    }
    double cell = PyFloat_AsDouble(args[0]), report = PyFloat_AsDouble(args[1]);
    if (PyErr_Occurred()) {
        return NULL;
    }
    if (!(cell > 0) || !(report > 0)) {
        PyErr_SetString(PyExc_ValueError, "walk budgets are positive numbers of seconds");
        return NULL;
    }
    PyObject *before = Py_BuildValue("(dd)", cell_budget(l), report_budget(l));
    if (before != NULL) {
        l->cell_budget = cell;
        l->report_budget = report;
    }
    return before;
}

/* The _core methods of this file; module.c adds them at init. */
PyMethodDef mt_ledger_methods[] = {
    {"ledger_attach", (PyCFunction)(void (*)(void))mt_ledger_py_attach, METH_FASTCALL,
     mt_ledger_py_attach__doc__},
    {"ledger_rewalk", mt_ledger_py_rewalk, METH_O, mt_ledger_py_rewalk__doc__},
    {"ledger_detach", mt_ledger_py_detach, METH_NOARGS, mt_ledger_py_detach__doc__},
    {"variables", (PyCFunction)(void (*)(void))mt_ledger_py_variables, METH_FASTCALL,
     mt_ledger_py_variables__doc__},
    {"ledger", mt_ledger_py_names, METH_NOARGS, mt_ledger_py_names__doc__},
    {"ledger_ran", mt_ledger_py_ran, METH_O, mt_ledger_py_ran__doc__},
    {"ledger_gone", (PyCFunction)(void (*)(void))mt_ledger_py_gone, METH_FASTCALL,
     mt_ledger_py_gone__doc__},
    {"ledger_gone_object", mt_ledger_py_gone_object, METH_O, mt_ledger_py_gone_object__doc__},
    {"set_walk_budget", (PyCFunction)(void (*)(void))mt_ledger_py_set_budget, METH_FASTCALL,
     mt_ledger_py_set_budget__doc__},
    {NULL, NULL, 0, NULL},
};
