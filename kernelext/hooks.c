/* hooks: IPython's per-cell callbacks in C (hooks.h).  All functions here
 * need the GIL. */
#include "memtamer/memtamer.h"

#include "memtamer/hooks.h"
#include "memtamer/walker.h"

/* A re-run's growth below this is page noise, not flagged (two pages). */
#define REGROWTH_MIN_PAGES 2
/* Sizing the output a re-run left: at least what the walk found by then. */
#define OUTPUT_WALK_SECONDS 0.1

/* The attributes read every cell, interned once. */
enum {
    NAME_USER_NS,
    NAME_STORE_HISTORY,
    NAME_RAW_CELL,
    NAME_EXECUTION_COUNT,
    NAME_LIVE,
    NAME_ENABLED,
    NAME_THREAD,
    NAME_HANDLE,
    NAME_STOP_ARMED,
    NAME_ERROR_BEFORE_EXEC,
    NAME_ERROR_IN_EXEC,
    NAME_INFO,
    NAME_NOTICE_THRESHOLD,
    NAME_RULES,
    NAME_WATCHED,
    NAME_TRAIT_VALUES,
    NAMES
};
static const char *const attribute_names[NAMES] = {
    "user_ns",       "store_history", "raw_cell",         "execution_count", "live",
    "enabled",       "thread",        "handle",           "stop_armed",      "error_before_exec",
    "error_in_exec", "info",          "notice_threshold", "rules",           "watched",
    "_trait_values",
};

typedef struct {
    PyObject_HEAD
    PyObject *module;
    PyObject *extension; /* memtamer._Extension: its Python does the rest */
    PyObject *shell;
    PyObject *compressed;     /* actions.compressed_names: restores while it has names */
    int advanced_before_cell; /* IPython counts the cell before pre_run_cell */
    PyObject *names[NAMES];
    /* Re-runs: the hash of a source -> the cell that ran it last (None
     * while it runs); for the running cell, whether its source ran before
     * and in which cell. */
    PyObject *last_run;
    PyObject *previous;
    int rerun;
    /* What pre_run_cell learnt of the running cell, for post_run_cell:
     * its source's key in last_run and whether the history keeps it (-1,
     * NULL: not known, read again from the result's info). */
    PyObject *running_key;
    int running_stored;
} cell_hooks;

/* The callbacks never raise an Exception (IPython would print a traceback
 * and carry on): the extension reports the first failure of each kind and
 * the cell goes on.  KeyboardInterrupt and other BaseExceptions go on up:
 * -1 then. */
static int
report_failure(cell_hooks *h, const char *where)
{
    if (!PyErr_ExceptionMatches(PyExc_Exception)) {
        return -1;
    }
    PyObject *exc = mt_pyver_take_exception();
    PyObject *said = PyObject_CallMethod(h->extension, "_warn_once", "sO", where, exc);
    Py_DECREF(exc);
    if (said == NULL) {
        return -1;
    }
    Py_DECREF(said);
    return 0;
}

/* obj.method() for what it does; -1 with an exception. */
static int
call_method(PyObject *obj, const char *method)
{
    PyObject *result = PyObject_CallMethod(obj, method, NULL);
    Py_XDECREF(result);
    return result ? 0 : -1;
}

/* getattr(obj, name) in *out (a new reference), NULL when obj has none;
 * -1 with an exception. */
static int
optional_attribute(PyObject *obj, PyObject *name, PyObject **out)
{
    *out = PyObject_GetAttr(obj, name);
    if (*out == NULL && PyErr_ExceptionMatches(PyExc_AttributeError)) {
        PyErr_Clear();
        return 0;
    }
    return *out == NULL ? -1 : 0;
}

/* getattr(obj, name) is truthy: 1, 0, or -1 with an exception. */
static int
attribute_true(PyObject *obj, PyObject *name)
{
    PyObject *value = PyObject_GetAttr(obj, name);
    int truth = value ? PyObject_IsTrue(value) : -1;
    Py_XDECREF(value);
    return truth;
}

/* The ledger follows the shell's namespace, which embed_kernel(local_ns=...)
 * replaces after extensions load. */
static int
follow_namespace(cell_hooks *h, mt_state *st)
{
    PyObject *ns = PyObject_GetAttr(h->shell, h->names[NAME_USER_NS]);
    int rc = ns == NULL                 ? -1
             : ns == st->ledger.user_ns ? 0
                                        : call_method(h->extension, "_attach_ledger");
    Py_XDECREF(ns);
    return rc;
}

/* Whether the shell keeps the cell in its history (numbered): 1, 0, or -1
 * with an exception. */
static int
stored_in_history(cell_hooks *h, PyObject *info)
{
    PyObject *store = NULL;
    if (optional_attribute(info, h->names[NAME_STORE_HISTORY], &store) < 0) {
        return -1;
    }
    int stored = store == NULL ? 1 : PyObject_IsTrue(store);
    Py_XDECREF(store);
    return stored;
}

/* shell.execution_count (a new reference): traitlets' __get__ is Python
 * code that returns what the shell's _trait_values holds, so that is read
 * when it holds an int there. */
static PyObject *
execution_count(cell_hooks *h)
{
    PyObject *values = NULL, *count = NULL;
    if (optional_attribute(h->shell, h->names[NAME_TRAIT_VALUES], &values) < 0) {
        return NULL;
    }
    if (values != NULL && PyDict_CheckExact(values)) {
        count = PyDict_GetItemWithError(values, h->names[NAME_EXECUTION_COUNT]);
        count = count != NULL && PyLong_CheckExact(count) ? Py_NewRef(count) : NULL;
    }
    Py_XDECREF(values);
    if (count == NULL && !PyErr_Occurred()) {
        count = PyObject_GetAttr(h->shell, h->names[NAME_EXECUTION_COUNT]);
    }
    return count;
}

/* The cell the shell runs now, as its history counts it (None when it is
 * not stored there: stored 0; -1 passes an exception on); a new reference,
 * NULL with an exception. */
static PyObject *
running_cell(cell_hooks *h, int stored)
{
    if (stored <= 0) {
        return stored < 0 ? NULL : Py_NewRef(Py_None);
    }
    PyObject *count = execution_count(h);
    if (count == NULL || !h->advanced_before_cell) {
        return count;
    }
    long long n = PyLong_AsLongLong(count);
    Py_DECREF(count);
    return n == -1 && PyErr_Occurred() ? NULL : PyLong_FromLongLong(n - 1);
}

/* info.raw_cell, "" when it is None or empty; a new reference. */
static PyObject *
cell_source(cell_hooks *h, PyObject *info)
{
    PyObject *source = NULL;
    if (optional_attribute(info, h->names[NAME_RAW_CELL], &source) < 0) {
        return NULL;
    }
    int some = source == NULL ? 0 : PyObject_IsTrue(source);
    if (some < 0) {
        Py_DECREF(source);
        return NULL;
    }
    if (!some) {
        Py_XSETREF(source, PyUnicode_FromStringAndSize(NULL, 0));
    }
    return source;
}

static PyObject *
source_key(PyObject *source)
{
    Py_hash_t hash = PyObject_Hash(source);
    return hash == -1 ? NULL : PyLong_FromSsize_t(hash);
}

/* Notes the running cell's source in last_run, and its key for the cell's
 * end. */
static int
rerun_begin(cell_hooks *h, PyObject *source)
{
    PyObject *previous = NULL;
    Py_XSETREF(h->running_key, source_key(source));
    if (h->running_key == NULL ||
        ((previous = PyDict_GetItemWithError(h->last_run, h->running_key)) == NULL &&
         PyErr_Occurred())) {
        return -1;
    }
    h->rerun = previous != NULL;
    Py_XSETREF(h->previous, Py_XNewRef(previous));
    return PyDict_SetItem(h->last_run, h->running_key, Py_None);
}

/* A re-run's growth, for render.rerun_notice: {cell, previous, growth,
 * retained, holders ([{holder, bytes}], unordered)}, or None when the cell
 * did not run its source before or kept no more than page noise.  Notes
 * the cell as the source's last run either way.  A new reference, NULL
 * with an exception. */
static PyObject *
rerun_end(cell_hooks *h, mt_state *st, PyObject *key, const mt_cell_record *record)
{
    PyObject *cell = NULL, *shown = NULL, *holders = NULL, *growth = NULL;
    int rerun = h->rerun;
    h->rerun = 0;
    mt_cell_changes changes = record ? mt_cell_record_changes(record) : (mt_cell_changes){0};
    cell = record && record->cell >= 0 ? PyLong_FromLongLong(record->cell) : Py_NewRef(Py_None);
    if (cell == NULL || PyDict_SetItem(h->last_run, key, cell) < 0) {
        goto done;
    }
    if (!rerun) {
        growth = Py_NewRef(Py_None);
        goto done;
    }
    long long walked, output = 0;
    if (mt_ledger_regrowth(&st->ledger, NULL, &walked) < 0) {
        goto done;
    }
    if (cell != Py_None && st->ledger.out_cache != NULL && PyDict_Check(st->ledger.out_cache)) {
        shown = Py_XNewRef(PyDict_GetItemWithError(st->ledger.out_cache, cell));
        if (shown == NULL && PyErr_Occurred()) {
            goto done;
        }
    }
    if (shown != NULL) {
        mt_walker_totals t;
        if (mt_walker_deep_size(shown, NULL, OUTPUT_WALK_SECONDS, &t) < 0) {
            goto done;
        }
        output = t.bytes;
    }
    if (walked + output <= REGROWTH_MIN_PAGES * (long long)st->probe->page_size) {
        growth = Py_NewRef(Py_None);
        goto done;
    }
    if ((holders = PyList_New(0)) == NULL ||
        mt_ledger_regrowth(&st->ledger, holders, &walked) < 0) {
        goto done;
    }
    if (shown != NULL) {
        PyObject *out = Py_BuildValue("{sNsL}", "holder", PyUnicode_FromFormat("Out[%S]", cell),
                                      "bytes", output);
        int appended = out ? PyList_Append(holders, out) : -1;
        Py_XDECREF(out);
        if (appended < 0) {
            goto done;
        }
    }
    growth = Py_BuildValue(
        "{sOsOsLsNsO}", "cell", cell, "previous", h->previous ? h->previous : Py_None, "growth",
        walked + output, "retained",
        changes.retained_known ? PyLong_FromLongLong(changes.retained) : Py_NewRef(Py_None),
        "holders", holders);
done:
    Py_XDECREF(cell);
    Py_XDECREF(shown);
    Py_XDECREF(holders);
    return growth;
}

PyDoc_STRVAR(hooks_pre_run_cell__doc__,
             "pre_run_cell(info): IPython's callback before a cell runs: memtamer starts "
             "measuring it.");
static PyObject *
hooks_pre_run_cell(PyObject *op, PyObject *info)
{
    cell_hooks *h = (cell_hooks *)op;
    mt_state *st = mt_get_state(h->module);
    PyObject *source = NULL, *cell = NULL, *live = NULL, *returned = NULL;
    if (follow_namespace(h, st) < 0 && report_failure(h, "following the shell's namespace") < 0) {
        goto done;
    }
    Py_CLEAR(h->running_key);
    if ((source = cell_source(h, info)) == NULL ||
        (h->running_stored = stored_in_history(h, info)) < 0 ||
        (cell = running_cell(h, h->running_stored)) == NULL ||
        mt_cell_begin(h->module, cell, source) < 0 || rerun_begin(h, source) < 0) {
        if (report_failure(h, "cell_begin") < 0) {
            goto done;
        }
    }
    /* Inside the cell's window: the restore's memory and peak are the cell's. */
    if (source != NULL && PyDict_Check(h->compressed) && PyDict_GET_SIZE(h->compressed) > 0) {
        PyObject *restored = PyObject_CallMethod(h->extension, "_restore_read", "O", source);
        Py_XDECREF(restored);
        if (restored == NULL && report_failure(h, "restoring compressed variables") < 0) {
            goto done;
        }
    }
    int enabled = (live = PyObject_GetAttr(h->extension, h->names[NAME_LIVE])) == NULL
                      ? -1
                      : attribute_true(live, h->names[NAME_ENABLED]);
    if (enabled < 0 || (enabled && call_method(live, "begin") < 0)) {
        if (report_failure(h, "the live line") < 0) {
            goto done;
        }
    }
    returned = Py_NewRef(Py_None);
done:
    Py_XDECREF(source);
    Py_XDECREF(cell);
    Py_XDECREF(live);
    return returned;
}

/* Whether getattr(obj, first) or getattr(obj, second) is not None: 1, 0,
 * or -1 with an exception.  The live line is running while its thread or
 * handle is set; a cell failed when an error came before or in it. */
static int
either_set(PyObject *obj, PyObject *first, PyObject *second)
{
    PyObject *value = PyObject_GetAttr(obj, first);
    int set = value == NULL ? -1 : value != Py_None;
    Py_XDECREF(value);
    if (set == 0) {
        value = PyObject_GetAttr(obj, second);
        set = value == NULL ? -1 : value != Py_None;
        Py_XDECREF(value);
    }
    return set;
}

/* The extension's notice threshold in bytes, 0 when notices are off. */
static int
notice_threshold(cell_hooks *h, long long *out)
{
    PyObject *value = PyObject_GetAttr(h->extension, h->names[NAME_NOTICE_THRESHOLD]);
    if (value == NULL) {
        return -1;
    }
    *out = value == Py_None ? 0 : PyLong_AsLongLong(value);
    Py_DECREF(value);
    return *out == -1 && PyErr_Occurred() ? -1 : 0;
}

/* The running cell's key in last_run and whether the history keeps it, as
 * pre_run_cell noted them (taken: the next cell notes its own), else read
 * from the result's info (the cell that loaded memtamer began without us).
 * *key a new reference; -1 with an exception. */
static int
what_ran(cell_hooks *h, PyObject *result, int *stored, PyObject **key)
{
    *stored = h->running_stored;
    *key = h->running_key;
    h->running_stored = -1;
    h->running_key = NULL;
    if (*stored >= 0 && *key != NULL) {
        return 0;
    }
    Py_CLEAR(*key);
    PyObject *info = PyObject_GetAttr(result, h->names[NAME_INFO]), *source = NULL;
    int rc = info != NULL && (*stored = stored_in_history(h, info)) >= 0 &&
                     (source = cell_source(h, info)) != NULL && (*key = source_key(source)) != NULL
                 ? 0
                 : -1;
    Py_XDECREF(info);
    Py_XDECREF(source);
    return rc;
}

/* Ends the cell's record and says what is worth saying about it: the
 * extension's _cell_notices renders it, called only when there is some. */
static int
end_cell(cell_hooks *h, mt_state *st, PyObject *result)
{
    PyObject *count = NULL, *key = NULL, *growth = NULL, *dict = NULL;
    const mt_cell_record *record = NULL;
    int rc = -1, stored = -1;
    int failed = either_set(result, h->names[NAME_ERROR_BEFORE_EXEC], h->names[NAME_ERROR_IN_EXEC]);
    long long threshold;
    /* IPython gives a cell kept out of the history the count of the next
     * one: it keeps the None it began with. */
    if (failed < 0 || what_ran(h, result, &stored, &key) < 0 ||
        (count = stored ? PyObject_GetAttr(result, h->names[NAME_EXECUTION_COUNT])
                        : Py_NewRef(Py_None)) == NULL ||
        mt_cell_end(h->module, count, failed, &record) < 0 || notice_threshold(h, &threshold) < 0 ||
        (growth = rerun_end(h, st, key, record)) == NULL) {
        goto done;
    }
    int said = threshold > 0 && record != NULL;
    mt_cell_changes c = said ? mt_cell_record_changes(record) : (mt_cell_changes){0};
    int peaked =
        said && (c.peak_increment > c.retained ? c.peak_increment : c.retained) >= threshold;
    int swapping = said && c.swapped >= threshold;
    int lost = said && record->cell >= 0 && mt_ledger_lost_in(&st->ledger, record->cell);
    int grew = said && growth != Py_None;
    if (peaked || swapping || lost || grew) {
        PyObject *notices = (dict = mt_cell_record_dict(h->module, record)) == NULL
                                ? NULL
                                : PyObject_CallMethod(h->extension, "_cell_notices", "OiiiO", dict,
                                                      peaked, swapping, lost, growth);
        if (notices == NULL) {
            goto done;
        }
        Py_DECREF(notices);
    }
    rc = 0;
done:
    Py_XDECREF(count);
    Py_XDECREF(key);
    Py_XDECREF(growth);
    Py_XDECREF(dict);
    return rc;
}

/* The rules act after the cell when some are in force or their file is
 * watched (it may have changed). */
static int
run_rules(cell_hooks *h, mt_state *st)
{
    PyObject *rules = PyObject_GetAttr(h->extension, h->names[NAME_RULES]);
    int rc = rules == NULL ? -1 : 0;
    if (rules != NULL && rules != Py_None) {
        int due = st->policy.table.len > 0;
        if (!due) {
            PyObject *watched = PyObject_GetAttr(rules, h->names[NAME_WATCHED]);
            due = watched == NULL ? -1 : watched != Py_None;
            Py_XDECREF(watched);
        }
        rc = due < 0 ? -1 : due ? call_method(rules, "after_cell") : 0;
    }
    Py_XDECREF(rules);
    return rc;
}

PyDoc_STRVAR(hooks_post_run_cell__doc__,
             "post_run_cell(result): IPython's callback after a cell ran: memtamer ends its "
             "record, says what is worth saying and runs the rules.");
static PyObject *
hooks_post_run_cell(PyObject *op, PyObject *result)
{
    cell_hooks *h = (cell_hooks *)op;
    mt_state *st = mt_get_state(h->module);
    PyObject *live = NULL, *returned = NULL;
    int armed = attribute_true(h->extension, h->names[NAME_STOP_ARMED]);
    if (armed < 0 || (armed && call_method(h->extension, "_unarm_stop_cell") < 0)) {
        goto done;
    }
    int running = (live = PyObject_GetAttr(h->extension, h->names[NAME_LIVE])) == NULL
                      ? -1
                      : either_set(live, h->names[NAME_THREAD], h->names[NAME_HANDLE]);
    if ((running < 0 || (running && call_method(live, "end") < 0)) &&
        report_failure(h, "the live line") < 0) {
        goto done;
    }
    if (end_cell(h, st, result) < 0 && report_failure(h, "cell_end") < 0) {
        goto done;
    }
    if (run_rules(h, st) < 0 && report_failure(h, "the rules") < 0) {
        goto done;
    }
    returned = Py_NewRef(Py_None);
done:
    Py_XDECREF(live);
    return returned;
}

static PyObject *
hooks_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"extension", "shell", "advanced_before_cell", "compressed", NULL};
    PyObject *extension, *shell, *compressed;
    int advanced;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOpO!:CellHooks", keywords, &extension, &shell,
                                     &advanced, &PyDict_Type, &compressed)) {
        return NULL;
    }
    PyObject *module = PyType_GetModule(type);
    cell_hooks *h = module ? (cell_hooks *)type->tp_alloc(type, 0) : NULL;
    if (h == NULL) {
        return NULL;
    }
    h->module = Py_NewRef(module);
    h->extension = Py_NewRef(extension);
    h->shell = Py_NewRef(shell);
    h->compressed = Py_NewRef(compressed);
    h->advanced_before_cell = advanced;
    h->running_stored = -1;
    for (int i = 0; i < NAMES; i++) {
        if ((h->names[i] = PyUnicode_InternFromString(attribute_names[i])) == NULL) {
            Py_DECREF(h);
            return NULL;
        }
    }
    if ((h->last_run = PyDict_New()) == NULL) {
        Py_DECREF(h);
        return NULL;
    }
    return (PyObject *)h;
}

static int
hooks_traverse(PyObject *op, visitproc visit, void *arg)
{
    cell_hooks *h = (cell_hooks *)op;
    Py_VISIT(Py_TYPE(op));
    Py_VISIT(h->module);
    Py_VISIT(h->extension);
    Py_VISIT(h->shell);
    Py_VISIT(h->compressed);
    Py_VISIT(h->last_run);
    Py_VISIT(h->previous);
    Py_VISIT(h->running_key);
    return 0;
}

static int
hooks_clear(PyObject *op)
{
    cell_hooks *h = (cell_hooks *)op;
    Py_CLEAR(h->module);
    Py_CLEAR(h->extension);
    Py_CLEAR(h->shell);
    Py_CLEAR(h->compressed);
    Py_CLEAR(h->last_run);
    Py_CLEAR(h->previous);
    Py_CLEAR(h->running_key);
    for (int i = 0; i < NAMES; i++) {
        Py_CLEAR(h->names[i]);
    }
    return 0;
}

static void
hooks_dealloc(PyObject *op)
{
    PyTypeObject *type = Py_TYPE(op);
    PyObject_GC_UnTrack(op);
    hooks_clear(op);
    type->tp_free(op);
    Py_DECREF(type);
}

static PyMethodDef hooks_methods[] = {
    {"pre_run_cell", hooks_pre_run_cell, METH_O, hooks_pre_run_cell__doc__},
    {"post_run_cell", hooks_post_run_cell, METH_O, hooks_post_run_cell__doc__},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot hooks_slots[] = {
    {Py_tp_new, hooks_new},
    {Py_tp_traverse, hooks_traverse},
    {Py_tp_clear, hooks_clear},
    {Py_tp_dealloc, hooks_dealloc},
    {Py_tp_methods, hooks_methods},
    {Py_tp_doc, "CellHooks(extension, shell, advanced_before_cell, compressed): the cell "
                "callbacks the extension registers with IPython (pre_run_cell, post_run_cell); "
                "they call the extension's Python only for what only it does."},
    {0, NULL},
};

static PyType_Spec hooks_spec = {
    .name = "memtamer._core.CellHooks",
    .basicsize = sizeof(cell_hooks),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = hooks_slots,
};

PyObject *
mt_hooks_make_type(PyObject *module)
{
    return PyType_FromModuleAndSpec(module, &hooks_spec, NULL);
}
