/* process: the Python face of the probe (process.h).  Needs the GIL. */
#include "memtamer/memtamer.h"

#include <string.h>
#include <unistd.h>
#if MT_HAS_STATFS_TYPE
#include <linux/magic.h>
#include <sys/vfs.h>
#endif

#include "memtamer/guard.h"
#include "memtamer/heap.h"
#include "memtamer/npy.h"
#include "memtamer/process.h"

int
mt_process_open_probe(PyObject *module, const char *root)
{
    mt_state *st = mt_get_state(module);
    if (st->probe == NULL) {
        st->probe = PyMem_RawMalloc(sizeof *st->probe);
        if (st->probe == NULL) {
            PyErr_NoMemory();
            return -1;
        }
    }
    else {
        mt_probe_close(st->probe);
    }
    if (mt_probe_open(st->probe, root) < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    return 0;
}

static int
add_unavailable(PyObject *dict, const char *figure, const char *why)
{
    PyObject *reason = PyUnicode_FromString(why);
    if (reason == NULL) {
        return -1;
    }
    int rc = PyDict_SetItemString(dict, figure, reason);
    Py_DECREF(reason);
    return rc;
}

/* Which figures this process cannot give, and why. */
static PyObject *
unavailable_figures(const mt_probe *probe, const char *heap_why, int numpy_ready)
{
    PyObject *d = PyDict_New();
    if (d == NULL) {
        return NULL;
    }
    if ((probe->method == MT_PEAK_NONE &&
         (add_unavailable(d, "rss", "no /proc/self/statm (memtamer reads Linux's /proc)") < 0 ||
          add_unavailable(d, "peak_rss", "no /proc/self/status") < 0 ||
          add_unavailable(d, "children_peak", "no /proc to find child processes") < 0)) ||
        (heap_why && add_unavailable(d, "heap_peak_increment", heap_why) < 0) ||
        (heap_why && add_unavailable(d, "numpy_peak_increment", heap_why) < 0) ||
        (!heap_why && !numpy_ready &&
         add_unavailable(d, "numpy_peak_increment", "numpy is not imported yet") < 0)) {
        Py_DECREF(d);
        return NULL;
    }
    return d;
}

/* This process's swap and major faults, and the memory pressure, into d. */
static int
set_swap_figures(mt_probe *probe, PyObject *d)
{
    mt_probe_swap swap;
    mt_probe_self now;
    int have_self = mt_probe_read_self(probe, &now) == 0;
    double some, full;
    int have_pressure = mt_probe_read_pressure(probe, &some, &full) == 0;
    return mt_set(d, "swap",
                  mt_probe_read_swap(probe, &swap) == 0 ? mt_guard_swap_dict(&swap)
                                                        : Py_NewRef(Py_None)) < 0 ||
                   mt_set(d, "vm_swap", mt_size_or_none(have_self ? now.swap : -1)) < 0 ||
                   mt_set(d, "major_faults",
                          now.faults_known ? PyLong_FromUnsignedLongLong(now.major_faults)
                                           : Py_NewRef(Py_None)) < 0 ||
                   mt_set(d, "memory_pressure",
                          have_pressure
                              ? Py_BuildValue("{sdsd}", "some_avg10", some, "full_avg10", full)
                              : Py_NewRef(Py_None)) < 0
               ? -1
               : 0;
}

PyDoc_STRVAR(mt_process_view__doc__,
             "process() -> dict: RSS, the effective limit and its source, headroom, methods.");
static PyObject *
mt_process_view(PyObject *module, PyObject *Py_UNUSED(unused))
{
    mt_state *st = mt_get_state(module);
    mt_probe_limit limit;
    const char *heap_why;
    const char *heap_method = mt_heap_method(&heap_why);
    int have_limit = mt_probe_read_limit(st->probe, &limit) == 0;
    mt_probe_shared shared;
    int have_shared = mt_probe_read_shared(st->probe, &shared) == 0;
    int numpy_ready = mt_npy_ready();
    if (numpy_ready < 0) {
        return NULL;
    }
    PyObject *d = PyDict_New();
    if (d == NULL || mt_set(d, "pid", PyLong_FromLong((long)getpid())) < 0 ||
        mt_set(d, "rss", mt_size_or_none(mt_probe_rss(st->probe))) < 0 ||
        mt_set(d, "limit", mt_size_or_none(have_limit ? limit.limit : -1)) < 0 ||
        mt_set(d, "limit_source",
               have_limit ? PyUnicode_FromString(limit.source) : Py_NewRef(Py_None)) < 0 ||
        mt_set(d, "limit_path",
               have_limit ? PyUnicode_FromString(limit.path) : Py_NewRef(Py_None)) < 0 ||
        mt_set(d, "usage", mt_size_or_none(have_limit ? limit.usage : -1)) < 0 ||
        mt_set(d, "available", mt_size_or_none(have_limit ? limit.available : -1)) < 0 ||
        mt_set(d, "shared", have_shared ? mt_guard_shared_dict(&shared) : Py_NewRef(Py_None)) < 0 ||
        set_swap_figures(st->probe, d) < 0 || mt_guard_process_figures(module, d) < 0 ||
        mt_set(d, "peak_method", PyUnicode_FromString(mt_probe_method_name(st->probe->method))) <
            0 ||
        mt_set(d, "heap_method",
               heap_method ? PyUnicode_FromString(heap_method) : Py_NewRef(Py_None)) < 0 ||
        mt_set(d, "heap_hooks_installed", PyBool_FromLong(mt_heap_installed())) < 0 ||
        mt_set(d, "unavailable", unavailable_figures(st->probe, heap_why, numpy_ready)) < 0) {
        Py_XDECREF(d);
        return NULL;
    }
    return d;
}

#define SHARING_MAX_PIDS 65536

PyDoc_STRVAR(
    mt_process_sharing__doc__,
    "sharing(path, n) -> [(rss, pid, command)]: the n biggest other processes of the cgroup at "
    "path and its descendants (None: of the machine).");
static PyObject *
mt_process_sharing(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    mt_state *st = mt_get_state(module);
    PyObject *path = NULL, *list = NULL, *item = NULL;
    pid_t *pids = NULL;
    Py_ssize_t n;
    if (nargs != 2 || (n = PyLong_AsSsize_t(args[1])) < 0) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_TypeError, "sharing(path: str | None, n: int >= 0)");
        }
        return NULL;
    }
    if (args[0] != Py_None && !PyUnicode_FSConverter(args[0], &path)) {
        return NULL;
    }
    pids = PyMem_RawMalloc(SHARING_MAX_PIDS * sizeof *pids);
    if (pids == NULL) {
        PyErr_NoMemory();
        goto error;
    }
    int count;
    const char *dir = path ? PyBytes_AS_STRING(path) : "";
    Py_BEGIN_ALLOW_THREADS count = mt_probe_sharing_pids(st->probe, dir, pids, SHARING_MAX_PIDS);
    Py_END_ALLOW_THREADS list = PyList_New(0);
    if (list == NULL) {
        goto error;
    }
    for (int i = 0; i < count; i++) {
        long long rss;
        char comm[64];
        if (pids[i] == getpid() ||
            mt_probe_pid_rss(st->probe, pids[i], &rss, comm, sizeof comm) < 0 || rss <= 0) {
            continue;
        }
        item = Py_BuildValue("(Lis)", rss, (int)pids[i], comm);
        if (item == NULL || PyList_Append(list, item) < 0) {
            goto error;
        }
        Py_CLEAR(item);
    }
    if (PyList_Sort(list) < 0 || PyList_Reverse(list) < 0) {
        goto error;
    }
    if (PyList_GET_SIZE(list) > n && PyList_SetSlice(list, n, PyList_GET_SIZE(list), NULL) < 0) {
        goto error;
    }
    goto done;
error:
    Py_CLEAR(list);
done:
    Py_XDECREF(item);
    Py_XDECREF(path);
    PyMem_RawFree(pids);
    return list;
}

/* memtamer's own bookkeeping that grows with the session, by part. */
static PyObject *
own_bytes(mt_state *st)
{
    long long ledger = mt_ledger_own_bytes(&st->ledger);
    long long cells = mt_cell_log_own_bytes(&st->cells);
    if (ledger < 0) {
        return NULL;
    }
    return Py_BuildValue("{sLsLsL}", "ledger", ledger, "cell_log", cells, "total", ledger + cells);
}

PyDoc_STRVAR(mt_process_report__doc__,
             "report() -> dict with 'process', 'cells' and 'own_bytes' (memtamer's bookkeeping: "
             "ledger, cell_log, total).");
static PyObject *
mt_process_report(PyObject *module, PyObject *Py_UNUSED(unused))
{
    PyObject *d = PyDict_New();
    if (d == NULL || mt_set(d, "process", mt_process_view(module, NULL)) < 0 ||
        mt_set(d, "cells", mt_cell_history(module, NULL)) < 0 ||
        mt_ledger_report(&mt_get_state(module)->ledger, d) < 0 ||
        mt_set(d, "own_bytes", own_bytes(mt_get_state(module))) < 0) {
        Py_XDECREF(d);
        return NULL;
    }
    return d;
}

PyDoc_STRVAR(mt_process_set_peak_method__doc__,
             "set_peak_method('hwm' | 'sampled'): how cell peaks are measured.");
static PyObject *
mt_process_set_peak_method(PyObject *module, PyObject *name)
{
    mt_state *st = mt_get_state(module);
    const char *s = PyUnicode_Check(name) ? PyUnicode_AsUTF8(name) : NULL;
    mt_peak_method method;
    if (s && strcmp(s, "hwm") == 0) {
        method = MT_PEAK_HWM;
    }
    else if (s && strcmp(s, "sampled") == 0) {
        method = MT_PEAK_SAMPLED;
    }
    else {
        PyErr_SetString(PyExc_ValueError, "peak method must be 'hwm' or 'sampled'");
        return NULL;
    }
    if (st->probe->method == MT_PEAK_NONE || mt_probe_set_method(st->probe, method) < 0) {
        PyErr_Format(PyExc_OSError, "cannot use peak method '%s' here: %s", s,
                     method == MT_PEAK_HWM ? "/proc/self/clear_refs cannot be written"
                                           : "/proc/self/statm cannot be read");
        return NULL;
    }
    Py_RETURN_NONE;
}

PyDoc_STRVAR(mt_process_install_hooks__doc__,
             "install_hooks(): start counting Python's allocations (a no-op when installed).");
static PyObject *
mt_process_install_hooks(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(unused))
{
    if (mt_heap_install() < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

PyDoc_STRVAR(mt_process_uninstall_hooks__doc__,
             "uninstall_hooks() -> bool: restore the saved allocators; False when another hook "
             "installed later still wraps ours.");
static PyObject *
mt_process_uninstall_hooks(PyObject *module, PyObject *Py_UNUSED(unused))
{
    mt_state *st = mt_get_state(module);
    /* Unloading from inside a cell: that cell's end will not reach us. */
    st->cells.window.open = 0;
    long long peak;
    mt_probe_self now;
    mt_probe_peak_end(st->probe, &peak, &now);
    if (mt_heap_numpy_end(&st->numpy_original) < 0) {
        return NULL;
    }
    int left = mt_heap_uninstall();
    if (left < 0) {
        return NULL;
    }
    return PyBool_FromLong(left == 0);
}

PyDoc_STRVAR(
    mt_process_trim__doc__,
    "trim() -> bool: give freed heap back to the OS (glibc's malloc_trim); True when some was.");
static PyObject *
mt_process_trim(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(unused))
{
    int released;
    Py_BEGIN_ALLOW_THREADS released = mt_heap_trim();
    Py_END_ALLOW_THREADS return PyBool_FromLong(released);
}

PyDoc_STRVAR(mt_process_heap_free__doc__,
             "heap_free() -> int | None: bytes malloc holds free, which a trim could give back "
             "(None where glibc's mallinfo2 is unavailable).");
static PyObject *
mt_process_heap_free(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(unused))
{
    long long bytes;
    Py_BEGIN_ALLOW_THREADS bytes = mt_heap_free_bytes();
    Py_END_ALLOW_THREADS return mt_size_or_none(bytes);
}

PyDoc_STRVAR(mt_process_allocators__doc__,
             "_allocators() -> dict: the allocator functions now installed (for tests).");
static PyObject *
mt_process_allocators(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(unused))
{
    return mt_heap_allocators();
}

PyDoc_STRVAR(mt_process_set_root__doc__,
             "_set_proc_root(path): read /proc and /sys under path ('' for the real ones).");
static PyObject *
mt_process_set_root(PyObject *module, PyObject *root)
{
    const char *s = PyUnicode_AsUTF8(root);
    if (s == NULL || mt_process_open_probe(module, s) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
kb_fields(const char *text, const char *a, const char *b)
{
    long long va = -1, vb = -1;
    mt_probe_parse_kb_field(text, a, &va);
    mt_probe_parse_kb_field(text, b, &vb);
    return Py_BuildValue("{sNsN}", a, mt_size_or_none(va), b, mt_size_or_none(vb));
}

/* The kernel's own answer for the mount the path is on: no mount table to match. */
PyDoc_STRVAR(mt_process_in_ram__doc__,
             "in_ram(path) -> bool: path's file system keeps its files in memory (tmpfs, ramfs), "
             "so that a spill there would free nothing.");
static PyObject *
mt_process_in_ram(PyObject *Py_UNUSED(module), PyObject *path)
{
    PyObject *encoded = NULL;
    if (!PyUnicode_FSConverter(path, &encoded)) {
        return NULL;
    }
    int in_ram = 0;
#if MT_HAS_STATFS_TYPE
    const char *name = PyBytes_AS_STRING(encoded);
    struct statfs fs;
    int rc;
    Py_BEGIN_ALLOW_THREADS rc = statfs(name, &fs);
    Py_END_ALLOW_THREADS
        /* Unreadable: not known to be in memory, as on other systems. */
        in_ram = rc == 0 && (fs.f_type == TMPFS_MAGIC || fs.f_type == RAMFS_MAGIC);
#endif
    Py_DECREF(encoded);
    return PyBool_FromLong(in_ram);
}

PyDoc_STRVAR(mt_process_parse__doc__,
             "_parse(kind, text[, inode]): run one of the /proc or cgroup parsers on text (for "
             "tests); 'listening' takes the inode of the socket whose ports it lists.");
static PyObject *
mt_process_parse(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    const char *kind, *text;
    Py_ssize_t text_size;
    if (nargs < 2 || nargs > 3 || !(kind = PyUnicode_AsUTF8(args[0])) ||
        !(text = PyUnicode_AsUTF8AndSize(args[1], &text_size))) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_TypeError, "_parse(kind, text[, inode])");
        }
        return NULL;
    }
    if (strcmp(kind, "listening") == 0) {
        unsigned long inode = nargs == 3 ? PyLong_AsUnsignedLong(args[2]) : 0;
        int ports[MT_PROBE_MAX_PORTS], count = 0;
        if (inode == (unsigned long)-1 && PyErr_Occurred()) {
            return NULL;
        }
        mt_probe_parse_listening(text, &inode, 1, ports, &count, MT_PROBE_MAX_PORTS);
        PyObject *list = PyList_New(count);
        for (int i = 0; list && i < count; i++) {
            PyList_SET_ITEM(list, i, PyLong_FromLong(ports[i]));
        }
        return list;
    }
    if (strcmp(kind, "cmdline") == 0) {
        char command[MT_PROBE_COMMAND_BYTES];
        mt_probe_parse_cmdline(text, (size_t)text_size, command, sizeof command);
        return PyUnicode_FromString(command);
    }
    if (strcmp(kind, "socket_inode") == 0) {
        unsigned long inode;
        if (mt_probe_parse_socket_inode(text, &inode) < 0) {
            Py_RETURN_NONE;
        }
        return PyLong_FromUnsignedLong(inode);
    }
    if (strcmp(kind, "ppid") == 0) {
        pid_t ppid;
        if (mt_probe_parse_ppid(text, &ppid) < 0) {
            Py_RETURN_NONE;
        }
        return PyLong_FromLong((long)ppid);
    }
    if (strcmp(kind, "smaps_shared") == 0) {
        long long bytes;
        if (mt_probe_parse_shared_memory(text, &bytes) < 0) {
            Py_RETURN_NONE;
        }
        return PyLong_FromLongLong(bytes);
    }
    if (strcmp(kind, "status") == 0) {
        return kb_fields(text, "VmRSS", "VmHWM");
    }
    if (strcmp(kind, "meminfo") == 0) {
        return kb_fields(text, "MemTotal", "MemAvailable");
    }
    if (strcmp(kind, "statm") == 0) {
        long long rss;
        if (mt_probe_parse_statm(text, 4096, &rss) < 0) {
            Py_RETURN_NONE;
        }
        return PyLong_FromLongLong(rss);
    }
    if (strcmp(kind, "limit") == 0) {
        long long limit;
        if (mt_probe_parse_limit(text, &limit) < 0) {
            return PyUnicode_FromString("unreadable");
        }
        return mt_size_or_none(limit);
    }
    if (strcmp(kind, "memory.stat") == 0) {
        long long v;
        if (mt_probe_parse_keyed(text, "hierarchical_memory_limit", &v) < 0) {
            Py_RETURN_NONE;
        }
        return PyLong_FromLongLong(v);
    }
    if (strcmp(kind, "cgroup") == 0) {
        char v2[MT_PROBE_PATH_MAX], v1[MT_PROBE_PATH_MAX];
        if (mt_probe_parse_cgroup(text, v2, sizeof v2, v1, sizeof v1) < 0) {
            Py_RETURN_NONE;
        }
        return Py_BuildValue("(ss)", v2, v1);
    }
    if (strcmp(kind, "mountinfo") == 0) {
        mt_probe_mounts m;
        if (mt_probe_parse_mountinfo(text, &m) < 0) {
            Py_RETURN_NONE;
        }
        return Py_BuildValue("{ssssssss}", "v2_mount", m.v2_mount, "v2_root", m.v2_root, "v1_mount",
                             m.v1_mount, "v1_root", m.v1_root);
    }
    if (strcmp(kind, "pids") == 0) {
        pid_t pids[MT_PROBE_MAX_CHILDREN];
        int n = mt_probe_parse_pids(text, pids, MT_PROBE_MAX_CHILDREN);
        PyObject *list = PyList_New(n);
        for (int i = 0; list && i < n; i++) {
            PyList_SET_ITEM(list, i, PyLong_FromLong((long)pids[i]));
        }
        return list;
    }
    if (strcmp(kind, "smaps_rollup") == 0) {
        long long bytes;
        if (mt_probe_parse_private(text, &bytes) < 0) {
            Py_RETURN_NONE;
        }
        return PyLong_FromLongLong(bytes);
    }
    if (strcmp(kind, "starttime") == 0) {
        unsigned long long ticks;
        if (mt_probe_parse_starttime(text, &ticks) < 0) {
            Py_RETURN_NONE;
        }
        return PyLong_FromUnsignedLongLong(ticks);
    }
    if (strcmp(kind, "state") == 0) {
        char state;
        if (mt_probe_parse_state(text, &state) < 0) {
            Py_RETURN_NONE;
        }
        return PyUnicode_FromStringAndSize(&state, 1);
    }
    if (strcmp(kind, "last_pid") == 0) {
        long pid;
        if (mt_probe_parse_last_pid(text, &pid) < 0) {
            Py_RETURN_NONE;
        }
        return PyLong_FromLong(pid);
    }
    if (strcmp(kind, "majflt") == 0) {
        unsigned long long faults;
        if (mt_probe_parse_majflt(text, &faults) < 0) {
            Py_RETURN_NONE;
        }
        return PyLong_FromUnsignedLongLong(faults);
    }
    if (strcmp(kind, "vmswap") == 0) {
        long long bytes = -1;
        mt_probe_parse_kb_field(text, "VmSwap", &bytes);
        return mt_size_or_none(bytes);
    }
    if (strcmp(kind, "psi") == 0) {
        double some, full;
        int have_some = mt_probe_parse_psi(text, "some", &some) == 0;
        int have_full = mt_probe_parse_psi(text, "full", &full) == 0;
        return Py_BuildValue("(NN)", have_some ? PyFloat_FromDouble(some) : Py_NewRef(Py_None),
                             have_full ? PyFloat_FromDouble(full) : Py_NewRef(Py_None));
    }
    if (strcmp(kind, "meminfo_swap") == 0) {
        mt_probe_swap swap;
        if (mt_probe_parse_meminfo_swap(text, &swap) < 0) {
            Py_RETURN_NONE;
        }
        return mt_guard_swap_dict(&swap);
    }
    PyErr_Format(PyExc_ValueError, "unknown parser '%s'", kind);
    return NULL;
}

/* The _core methods of this file; module.c adds them at init. */
PyMethodDef mt_process_methods[] = {
    {"process", mt_process_view, METH_NOARGS, mt_process_view__doc__},
    {"report", mt_process_report, METH_NOARGS, mt_process_report__doc__},
    {"set_peak_method", mt_process_set_peak_method, METH_O, mt_process_set_peak_method__doc__},
    {"install_hooks", mt_process_install_hooks, METH_NOARGS, mt_process_install_hooks__doc__},
    {"uninstall_hooks", mt_process_uninstall_hooks, METH_NOARGS, mt_process_uninstall_hooks__doc__},
    {"in_ram", mt_process_in_ram, METH_O, mt_process_in_ram__doc__},
    {"trim", mt_process_trim, METH_NOARGS, mt_process_trim__doc__},
    {"heap_free", mt_process_heap_free, METH_NOARGS, mt_process_heap_free__doc__},
    {"_allocators", mt_process_allocators, METH_NOARGS, mt_process_allocators__doc__},
    {"_parse", (PyCFunction)(void (*)(void))mt_process_parse, METH_FASTCALL,
     mt_process_parse__doc__},
    {"_set_proc_root", mt_process_set_root, METH_O, mt_process_set_root__doc__},
    {"sharing", (PyCFunction)(void (*)(void))mt_process_sharing, METH_FASTCALL,
     mt_process_sharing__doc__},
    {NULL, NULL, 0, NULL},
};
