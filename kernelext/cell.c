/* cell: per-cell records (cell.h).  All functions here need the GIL. */
#include "memtamer/memtamer.h"

#include <string.h>

#include "memtamer/guard.h"
#include "memtamer/telemetry.h"

/* Shown in reports: the first non-blank line, at most this many characters. */
#define FIRST_LINE_CHARS 100

static int
execution_count(PyObject *arg, long long *out)
{
    if (arg == Py_None) {
        *out = -1;
        return 0;
    }
    *out = PyLong_AsLongLong(arg);
    return (*out == -1 && PyErr_Occurred()) ? -1 : 0;
}

/* The first line of source.strip(), at most FIRST_LINE_CHARS code points,
 * into dst as UTF-8; found in place, without the stripped copy. */
static int
first_line(PyObject *source, char *dst)
{
    if (!PyUnicode_Check(source)) {
        PyErr_SetString(PyExc_TypeError, "cell source must be a str");
        return -1;
    }
    int kind = PyUnicode_KIND(source);
    const void *data = PyUnicode_DATA(source);
    Py_ssize_t start = 0, stop = PyUnicode_GET_LENGTH(source);
    while (start < stop && Py_UNICODE_ISSPACE(PyUnicode_READ(kind, data, start))) {
        start++;
    }
    while (stop > start && Py_UNICODE_ISSPACE(PyUnicode_READ(kind, data, stop - 1))) {
        stop--;
    }
    Py_ssize_t end = PyUnicode_FindChar(source, '\n', start, stop, 1);
    if (end == -2) {
        return -1;
    }
    end = end < 0 ? stop : end;
    end = end - start > FIRST_LINE_CHARS ? start + FIRST_LINE_CHARS : end;
    PyObject *line = PyUnicode_Substring(source, start, end);
    Py_ssize_t size;
    const char *utf8 = line ? PyUnicode_AsUTF8AndSize(line, &size) : NULL;
    if (utf8 != NULL) {
        if (size >= MT_FIRST_LINE_BYTES) { /* lone surrogates cannot reach here */
            size = MT_FIRST_LINE_BYTES - 1;
        }
        memcpy(dst, utf8, (size_t)size);
        dst[size] = '\0';
    }
    Py_XDECREF(line);
    return utf8 ? 0 : -1;
}

int
mt_cell_begin(PyObject *module, PyObject *execution, PyObject *source)
{
    mt_state *st = mt_get_state(module);
    mt_cell_window *w = &st->cells.window;
    w->open = 0;
    w->peak_floor = -1;
    if (execution_count(execution, &w->cell) < 0 || first_line(source, w->first_line) < 0) {
        return -1;
    }
    if ((w->numpy_counted = mt_heap_numpy_begin(&st->numpy_original)) < 0) {
        return -1;
    }
    if (mt_ledger_cell_begin(&st->ledger, source) < 0) {
        return -1;
    }
    mt_probe_children_begin(st->probe, &w->children);
    Py_XSETREF(w->source, Py_NewRef(source));
    w->arrow_known = mt_buffers_arrow_pool(&w->arrow) >= 0;
    mt_heap_reset_peaks(&w->python, &w->numpy);
    mt_peaks_cell_begin(st->ledger.user_ns, w->python.current + w->numpy.current);
    w->started = mt_monotonic_seconds();
    /* Last, so that nothing of ours lands in the window. */
    w->rss_before = mt_probe_peak_begin(st->probe, &w->self_before);
    w->started_cpu =
        w->self_before.cpu_seconds >= 0 ? w->self_before.cpu_seconds : mt_cpu_seconds();
    w->open = 1;
    mt_guard_cell_begin(module, w->cell, w->first_line, w->rss_before, &w->children);
    long long budget, trips;
    mt_guard_figures(module, &budget, &trips);
    mt_telemetry_cell_begin(module, w, st->probe->method, budget, trips);
    return 0;
}

PyDoc_STRVAR(mt_cell_py_begin__doc__,
             "cell_begin(execution_count, source): start measuring a cell.");
static PyObject *
mt_cell_py_begin(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "cell_begin(execution_count, source)");
        return NULL;
    }
    if (mt_cell_begin(module, args[0], args[1]) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

PyDoc_STRVAR(mt_cell_numpy_imported__doc__,
             "cell_numpy_imported(): numpy has just been imported by the running cell: its "
             "buffers are counted, attributed and guarded from now on, as in any later cell.");
static PyObject *
mt_cell_numpy_imported(PyObject *module, PyObject *Py_UNUSED(unused))
{
    mt_state *st = mt_get_state(module);
    /* Between cells the next cell_begin looks at the handler; a cell that
     * imported numpy before has it already. */
    mt_cell_window *w = &st->cells.window;
    if (w->open && !w->numpy_counted &&
        (w->numpy_counted = mt_heap_numpy_begin(&st->numpy_original)) < 0) {
        w->numpy_counted = 0;
        return NULL;
    }
    Py_RETURN_NONE;
}

/* What the cell's children owned together at most (probe.h's private
 * memory): the guard watcher's looks while they lived, and a look now.  A
 * child that came and went between two looks, or ran with no watcher, is
 * not seen: never its rusage, which for a child that exec'd is ours. */
static void
children_figures(mt_probe *probe, const mt_probe_children_mark *mark, mt_cell_record *r)
{
    r->children_method = MT_CHILDREN_NONE;
    r->children_peak = r->children_rss_peak = -1;
    if (probe->method == MT_PEAK_NONE) {
        return;
    }
    mt_probe_children_use now;
    mt_probe_children_now(probe, mark, &now);
    long long rss_at_peak;
    int unreadable;
    long long seen = mt_guard_children_peak(&rss_at_peak, &unreadable);
    int now_is_peak = now.owned > seen;
    r->children_peak = now_is_peak ? now.owned : seen;
    r->children_rss_peak = now_is_peak ? now.rss_total : rss_at_peak;
    if (r->children_peak > 0) {
        r->children_method =
            (now_is_peak ? now.unreadable : unreadable) ? MT_CHILDREN_RSS : MT_CHILDREN_PRIVATE;
    }
}

static const char *const record_keys[MT_CELL_RECORD_KEYS] = {
    "cell",
    "first_line",
    "rss_before",
    "rss_after",
    "retained",
    "peak_rss",
    "peak_increment",
    "peak_method",
    "heap_peak_increment",
    "numpy_peak_increment",
    "arrow_peak_increment",
    "arrow_retained",
    "children_peak",
    "children_rss_peak",
    "children_method",
    "swap_after",
    "swapped",
    "major_faults",
    "seconds",
    "cpu_seconds",
    "status",
    "peak_composition",
};

static PyObject *
long_or_none(int known, long long value)
{
    return known ? PyLong_FromLongLong(value) : Py_NewRef(Py_None);
}

static int
make_record_template(mt_cell_log *log)
{
    PyObject *d = PyDict_New();
    for (int i = 0; d && i < MT_CELL_RECORD_KEYS; i++) {
        if ((log->keys[i] == NULL &&
             (log->keys[i] = PyUnicode_InternFromString(record_keys[i])) == NULL) ||
            PyDict_SetItem(d, log->keys[i], Py_None) < 0) {
            Py_CLEAR(d);
        }
    }
    log->record_template = d;
    return d ? 0 : -1;
}

mt_cell_changes
mt_cell_record_changes(const mt_cell_record *r)
{
    mt_cell_changes c = {
        .retained_known = r->rss_before >= 0 && r->rss_after >= 0,
        .peak_known = r->rss_before >= 0 && r->peak_rss >= 0,
        .swapped_known = r->swap_after >= 0,
    };
    c.retained = c.retained_known ? r->rss_after - r->rss_before : 0;
    c.peak_increment = c.peak_known ? r->peak_rss - r->rss_before : 0;
    c.swapped = c.swapped_known ? r->swap_after - r->swap_before : 0;
    return c;
}

/* The record as a dict; its values are made first, in record_keys' order. */
static PyObject *
record_dict(mt_cell_log *log, const mt_cell_record *r)
{
    PyObject *d = NULL;
    mt_cell_changes c = mt_cell_record_changes(r);
    PyObject *values[] = {
        long_or_none(r->cell >= 0, r->cell),
        PyUnicode_DecodeUTF8(r->first_line, (Py_ssize_t)strlen(r->first_line), "replace"),
        mt_size_or_none(r->rss_before),
        mt_size_or_none(r->rss_after),
        long_or_none(c.retained_known, c.retained),
        mt_size_or_none(r->peak_rss),
        long_or_none(c.peak_known, c.peak_increment),
        PyUnicode_FromString(mt_probe_method_name(r->peak_method)),
        mt_size_or_none(r->heap_peak_increment),
        mt_size_or_none(r->numpy_peak_increment),
        r->arrow_counted ? mt_size_or_none(r->arrow_peak_increment) : Py_NewRef(Py_None),
        long_or_none(r->arrow_counted, r->arrow_retained),
        mt_size_or_none(r->children_peak),
        mt_size_or_none(r->children_rss_peak),
        r->children_method ? PyUnicode_FromString(mt_probe_children_method_name(r->children_method))
                           : Py_NewRef(Py_None),
        mt_size_or_none(r->swap_after),
        long_or_none(c.swapped_known, c.swapped),
        long_or_none(r->major_faults >= 0, r->major_faults),
        PyFloat_FromDouble(r->seconds),
        PyFloat_FromDouble(r->cpu_seconds),
        PyUnicode_FromString(r->failed ? "error" : "ok"),
        r->peak ? mt_peaks_dict(r->peak) : Py_NewRef(Py_None),
    };
    Py_BUILD_ASSERT(sizeof values / sizeof *values == MT_CELL_RECORD_KEYS);
    for (int i = 0; i < MT_CELL_RECORD_KEYS; i++) {
        if (values[i] == NULL) {
            goto done;
        }
    }
    if (log->record_template == NULL && make_record_template(log) < 0) {
        goto done;
    }
    d = PyDict_Copy(log->record_template);
    for (int i = 0; d && i < MT_CELL_RECORD_KEYS; i++) {
        if (PyDict_SetItem(d, log->keys[i], values[i]) < 0) {
            Py_CLEAR(d);
        }
    }
done:
    for (int i = 0; i < MT_CELL_RECORD_KEYS; i++) {
        Py_XDECREF(values[i]);
    }
    return d;
}

static int
append(mt_cell_log *log, const mt_cell_record *r)
{
    if (mt_reserve((void **)&log->items, &log->cap, log->len + 1, sizeof *log->items) < 0) {
        return -1;
    }
    log->items[log->len++] = *r;
    return 0;
}

int
mt_cell_end(PyObject *module, PyObject *execution, int failed, const mt_cell_record **record)
{
    mt_state *st = mt_get_state(module);
    mt_cell_window *w = &st->cells.window;
    mt_cell_record r;
    mt_heap_reading python, numpy;
    mt_probe_self now;
    long long peak, rss_after, cell;

    /* The cell that loaded the extension ends without having begun. */
    *record = NULL;
    if (!w->open) {
        return 0;
    }
    w->open = 0;
    mt_probe_peak_end(st->probe, &peak, &now);
    rss_after = now.rss;
    mt_guard_cell_end(module, rss_after);
    if (w->peak_floor > peak) { /* a %shrink inside the cell measured its own window */
        peak = w->peak_floor;
    }
    /* A peak is never below the start nor the end: the high-water mark and
     * RSS are read at different moments (and pages), and a sampled peak
     * can miss both ends. */
    if (peak >= 0) {
        peak = peak > w->rss_before ? peak : w->rss_before;
        peak = peak > rss_after ? peak : rss_after;
    }
    double ended = mt_monotonic_seconds();
    double ended_cpu = now.cpu_seconds >= 0 ? now.cpu_seconds : mt_cpu_seconds();
    const mt_probe_self *before = &w->self_before;
    int swap_known = before->swap >= 0 && now.swap >= 0;
    int faults_known = before->faults_known && now.faults_known;
    mt_heap_read(&python, &numpy);
    mt_buffers_pool arrow;
    int arrow_counted = w->arrow_known && mt_buffers_arrow_pool(&arrow) == 1;
    int numpy_counted = w->numpy_counted == 1;
    if (execution_count(execution, &cell) < 0) {
        return -1;
    }
    mt_peak_composition *composition;
    int composed = mt_peaks_cell_end(w->source, python.current + numpy.current, &composition);
    Py_CLEAR(w->source);
    if (composed < 0) {
        return -1;
    }

    memset(&r, 0, sizeof r);
    r.cell = cell >= 0 ? cell : w->cell;
    size_t line_bytes = strlen(w->first_line) + 1;
    r.first_line = PyMem_RawMalloc(line_bytes);
    if (r.first_line == NULL) {
        PyMem_RawFree(composition);
        PyErr_NoMemory();
        return -1;
    }
    memcpy(r.first_line, w->first_line, line_bytes);
    r.rss_before = w->rss_before;
    r.rss_after = rss_after;
    r.peak_method = st->probe->method;
    r.peak_rss = peak;
    r.heap_peak_increment = mt_heap_installed() ? python.peak - w->python.current : -1;
    r.numpy_peak_increment = numpy_counted ? numpy.peak - w->numpy.current : -1;
    r.arrow_counted = arrow_counted;
    r.arrow_retained = arrow_counted ? arrow.allocated - w->arrow.allocated : 0;
    r.arrow_peak_increment =
        arrow_counted ? mt_buffers_arrow_peak_increment(&w->arrow, &arrow) : -1;
    children_figures(st->probe, &w->children, &r);
    r.swap_before = swap_known ? before->swap : -1;
    r.swap_after = swap_known ? now.swap : -1;
    r.major_faults = faults_known ? (long long)(now.major_faults - before->major_faults) : -1;
    r.seconds = ended - w->started;
    r.cpu_seconds = ended_cpu - w->started_cpu;
    r.began_ticks = w->children.start_ticks;
    r.ended_ticks = mt_probe_boot_ticks(st->probe);
    r.failed = failed;
    r.peak = composition;
    if (append(&st->cells, &r) < 0) {
        PyMem_RawFree(composition);
        PyMem_RawFree(r.first_line);
        return -1;
    }
    if (mt_ledger_cell_end(&st->ledger, r.cell) < 0) {
        return -1;
    }
    long long budget, trips;
    mt_guard_figures(module, &budget, &trips);
    mt_telemetry_cell_end(module, &r, budget, trips);
    *record = &st->cells.items[st->cells.len - 1];
    return 1;
}

PyObject *
mt_cell_record_dict(PyObject *module, const mt_cell_record *r)
{
    return record_dict(&mt_get_state(module)->cells, r);
}

PyDoc_STRVAR(
    mt_cell_py_end__doc__,
    "cell_end(execution_count, failed) -> dict | None: finish the cell, return its record.");
static PyObject *
mt_cell_py_end(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "cell_end(execution_count, failed)");
        return NULL;
    }
    const mt_cell_record *record;
    int failed = PyObject_IsTrue(args[1]);
    int ended = failed < 0 ? -1 : mt_cell_end(module, args[0], failed, &record);
    if (ended <= 0) {
        return ended < 0 ? NULL : Py_NewRef(Py_None);
    }
    return mt_cell_record_dict(module, record);
}

PyDoc_STRVAR(mt_cell_history__doc__, "cells() -> list of the cell records so far.");
PyObject *
mt_cell_history(PyObject *module, PyObject *Py_UNUSED(unused))
{
    mt_state *st = mt_get_state(module);
    PyObject *list = PyList_New(st->cells.len);
    if (list == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < st->cells.len; i++) {
        PyObject *d = record_dict(&st->cells, &st->cells.items[i]);
        if (d == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, i, d);
    }
    return list;
}

static void
free_records(mt_cell_log *log)
{
    for (Py_ssize_t i = 0; i < log->len; i++) {
        PyMem_RawFree(log->items[i].peak);
        PyMem_RawFree(log->items[i].first_line);
    }
    log->len = 0;
}

long long
mt_cell_log_own_bytes(const mt_cell_log *log)
{
    long long total = (long long)log->cap * (long long)sizeof *log->items;
    for (Py_ssize_t i = 0; i < log->len; i++) {
        const mt_cell_record *r = &log->items[i];
        total += (long long)strlen(r->first_line) + 1 + (r->peak ? (long long)sizeof *r->peak : 0);
    }
    return total;
}

PyDoc_STRVAR(mt_cell_clear__doc__, "clear_cells(): forget the cell history.");
static PyObject *
mt_cell_clear(PyObject *module, PyObject *Py_UNUSED(unused))
{
    mt_state *st = mt_get_state(module);
    free_records(&st->cells);
    Py_RETURN_NONE;
}

/* The peak RSS since the running cell began, as far as the probe knows
 * now: VmHWM (reset at the cell's start) or the sampler's peak. */
static long long
peak_so_far(mt_probe *p, long long hwm)
{
    if (p->method == MT_PEAK_HWM) {
        return hwm;
    }
    mt_worker_lock(&p->sampler);
    long long peak = p->sampled_peak;
    mt_worker_unlock(&p->sampler);
    return peak;
}

PyDoc_STRVAR(mt_cell_running__doc__,
             "cell_running() -> dict | None: the running cell so far (cell, seconds, rss now, "
             "peak_rss since it began, rss_before; None for a figure not known); None between "
             "cells.  Any thread may ask.");
static PyObject *
mt_cell_running(PyObject *module, PyObject *Py_UNUSED(unused))
{
    mt_state *st = mt_get_state(module);
    const mt_cell_window *w = &st->cells.window;
    mt_probe_self now;
    if (!w->open) {
        Py_RETURN_NONE;
    }
    long long rss = mt_probe_read_self(st->probe, &now) == 0 ? now.rss : mt_probe_rss(st->probe);
    long long peak = peak_so_far(st->probe, now.hwm);
    if (peak >= 0 && peak < rss) {
        peak = rss; /* read a moment apart */
    }
    return Py_BuildValue("{sLsdsNsNsN}", "cell", w->cell, "seconds",
                         mt_monotonic_seconds() - w->started, "rss", mt_size_or_none(rss),
                         "peak_rss", mt_size_or_none(peak), "rss_before",
                         mt_size_or_none(w->rss_before));
}

void
mt_cell_log_free(mt_cell_log *log)
{
    free_records(log);
    Py_CLEAR(log->window.source);
    PyMem_RawFree(log->items);
    log->items = NULL;
    log->cap = 0;
    for (int i = 0; i < MT_CELL_RECORD_KEYS; i++) {
        Py_CLEAR(log->keys[i]);
    }
    Py_CLEAR(log->record_template);
}

/* The _core methods of this file; module.c adds them at init. */
PyMethodDef mt_cell_methods[] = {
    {"cell_begin", (PyCFunction)(void (*)(void))mt_cell_py_begin, METH_FASTCALL,
     mt_cell_py_begin__doc__},
    {"cell_end", (PyCFunction)(void (*)(void))mt_cell_py_end, METH_FASTCALL, mt_cell_py_end__doc__},
    {"cells", mt_cell_history, METH_NOARGS, mt_cell_history__doc__},
    {"cell_running", mt_cell_running, METH_NOARGS, mt_cell_running__doc__},
    {"clear_cells", mt_cell_clear, METH_NOARGS, mt_cell_clear__doc__},
    {"cell_numpy_imported", mt_cell_numpy_imported, METH_NOARGS, mt_cell_numpy_imported__doc__},
    {NULL, NULL, 0, NULL},
};
