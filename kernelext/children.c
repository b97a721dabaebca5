/* children: the kernel's descendants for the report (children.h).  All
 * functions here need the GIL; the /proc reads run without it. */
#include "memtamer/memtamer.h"

#include <string.h>

#include "memtamer/children.h"

/* The cell whose run covers start_ticks (boot ticks), -1 when none does: a
 * process started between cells (by a thread of a library, such as a dask
 * nanny restarting its worker) or before memtamer was loaded.  A tick is
 * 10 ms: a child started within one of a cell's edge counts as that cell's. */
static long long
cell_that_started(const mt_cell_log *log, unsigned long long start_ticks)
{
    const mt_cell_window *w = &log->window;
    if (w->open && start_ticks >= w->children.start_ticks) {
        return w->cell;
    }
    for (Py_ssize_t i = log->len - 1; i >= 0; i--) {
        const mt_cell_record *r = &log->items[i];
        if (r->began_ticks <= start_ticks && start_ticks <= r->ended_ticks) {
            return r->cell;
        }
        if (r->ended_ticks < start_ticks) {
            break;
        }
    }
    return -1;
}

static PyObject *
ports_list(const mt_probe_child_info *info)
{
    PyObject *list = PyList_New(info->port_count);
    for (int i = 0; list != NULL && i < info->port_count; i++) {
        PyObject *port = PyLong_FromLong(info->ports[i]);
        if (port == NULL) {
            Py_CLEAR(list);
            break;
        }
        PyList_SET_ITEM(list, i, port);
    }
    return list;
}

static PyObject *
child_dict(const mt_probe_child_info *info, long long cell)
{
    PyObject *d = PyDict_New();
    if (d == NULL || mt_set(d, "pid", PyLong_FromLong((long)info->pid)) < 0 ||
        mt_set(d, "ppid", PyLong_FromLong((long)info->ppid)) < 0 ||
        mt_set(d, "command",
               PyUnicode_DecodeUTF8(info->command, (Py_ssize_t)strlen(info->command),
                                    "backslashreplace")) < 0 ||
        mt_set(d, "private", mt_size_or_none(info->owned)) < 0 ||
        mt_set(d, "shared", mt_size_or_none(info->shared)) < 0 ||
        mt_set(d, "rss", mt_size_or_none(info->rss)) < 0 ||
        mt_set(d, "ports", ports_list(info)) < 0 ||
        mt_set(d, "cell", cell >= 0 ? PyLong_FromLongLong(cell) : Py_NewRef(Py_None)) < 0) {
        Py_XDECREF(d);
        return NULL;
    }
    return d;
}

PyDoc_STRVAR(mt_children_list__doc__,
             "children() -> list of dicts, one per live descendant of the kernel, parents "
             "before their children: pid, ppid, command, private, shared and rss (bytes, None "
             "when unreadable), ports (TCP ports it listens on) and cell (the execution count "
             "of the cell that started it, None when no cell did).");
static PyObject *
mt_children_list(PyObject *module, PyObject *Py_UNUSED(unused))
{
    mt_state *st = mt_get_state(module);
    PyObject *list = NULL;
    pid_t *pids = PyMem_RawMalloc(MT_PROBE_MAX_CHILDREN * sizeof *pids);
    mt_probe_child_info *infos = PyMem_RawMalloc(MT_PROBE_MAX_CHILDREN * sizeof *infos);
    int *described = PyMem_RawCalloc(MT_PROBE_MAX_CHILDREN, sizeof *described);
    if (pids == NULL || infos == NULL || described == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    int n;
    Py_BEGIN_ALLOW_THREADS;
    n = mt_probe_descendants(st->probe, pids, MT_PROBE_MAX_CHILDREN);
    for (int i = 0; i < n; i++) {
        described[i] = mt_probe_child_describe(st->probe, pids[i], &infos[i]) == 0;
    }
    Py_END_ALLOW_THREADS;
    list = PyList_New(0);
    for (int i = 0; list != NULL && i < n; i++) {
        if (!described[i]) {
            continue; /* it ended meanwhile */
        }
        PyObject *d = child_dict(&infos[i], cell_that_started(&st->cells, infos[i].start_ticks));
        if (d == NULL || PyList_Append(list, d) < 0) {
            Py_XDECREF(d);
            Py_CLEAR(list);
            break;
        }
        Py_DECREF(d);
    }
done:
    PyMem_RawFree(pids);
    PyMem_RawFree(infos);
    PyMem_RawFree(described);
    return list;
}

/* The _core methods of this file; module.c adds them at init. */
PyMethodDef mt_children_methods[] = {
    {"children", mt_children_list, METH_NOARGS, mt_children_list__doc__},
    {NULL, NULL, 0, NULL},
};
