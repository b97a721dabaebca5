/* memtamer._core: module state and init, and os.fork()'s hooks for all of
 * memtamer's threads.  Each concern file defines its methods with their
 * docstrings beside the C code, in a table of its own that init adds;
 * include/memtamer/memtamer.h has the map. */
#include "memtamer/memtamer.h"

#include "memtamer/buffers.h"
#include "memtamer/children.h"
#include "memtamer/guard.h"
#include "memtamer/codec.h"
#include "memtamer/frames.h"
#include "memtamer/heap.h"
#include "memtamer/hooks.h"
#include "memtamer/peaks.h"
#include "memtamer/policy.h"
#include "memtamer/postmortem.h"
#include "memtamer/process.h"
#include "memtamer/pyver.h"
#include "memtamer/shrink.h"
#include "memtamer/telemetry.h"
#include "memtamer/walker.h"
#include "memtamer/worker.h"

/* Every concern's _core methods, defined with their docstrings beside their C code. */
static PyMethodDef *const concern_methods[] = {
    mt_cell_methods,    mt_process_methods,  mt_guard_methods,  mt_postmortem_methods,
    mt_shrink_methods,  mt_codec_methods,    mt_frames_methods, mt_walker_methods,
    mt_ledger_methods,  mt_policy_methods,   mt_peaks_methods,  mt_telemetry_methods,
    mt_buffers_methods, mt_children_methods,
};

/* ---- fork ---- */

/* Python 3.12+ warns that a fork of a multi-threaded process may deadlock
 * (and it may: a thread holding a lock does not exist in the child).  Every
 * owner of threads registered its pause and resume (worker.h): they stop
 * before os.fork() and start again in the parent. */

/* Calls each Python hook's before (which = 0, the last added first) or
 * after (1, in order); a failure is reported, the others run all the same. */
static void
call_python_fork_hooks(mt_state *st, int which)
{
    Py_ssize_t n = st->python_fork_hooks ? PyList_GET_SIZE(st->python_fork_hooks) : 0;
    for (Py_ssize_t k = 0; k < n; k++) {
        PyObject *pair = PyList_GET_ITEM(st->python_fork_hooks, which ? k : n - 1 - k);
        PyObject *result = PyObject_CallNoArgs(PyTuple_GET_ITEM(pair, which));
        if (result == NULL) {
            PyErr_WriteUnraisable(PyTuple_GET_ITEM(pair, which));
        }
        Py_XDECREF(result);
    }
}

PyDoc_STRVAR(at_fork__doc__,
             "at_fork(before, after): a Python thread of memtamer's stops and starts with its C "
             "ones around os.fork(): before() runs first, after() once os.fork() has returned "
             "in the parent (on 3.13, which warns of threads alive then, after the warning's "
             "check).");
static PyObject *
at_fork(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    mt_state *st = mt_get_state(module);
    if (nargs != 2 || !PyCallable_Check(args[0]) || !PyCallable_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "at_fork(before, after): two callables");
        return NULL;
    }
    if (st->python_fork_hooks == NULL && (st->python_fork_hooks = PyList_New(0)) == NULL) {
        return NULL;
    }
    PyObject *pair = PyTuple_Pack(2, args[0], args[1]);
    int rc = pair == NULL ? -1 : PyList_Append(st->python_fork_hooks, pair);
    Py_XDECREF(pair);
    if (rc < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

PyDoc_STRVAR(before_fork__doc__, "_before_fork(): stop memtamer's threads before os.fork() (one of "
                                 "os.register_at_fork's hooks).");
static PyObject *
before_fork(PyObject *module, PyObject *Py_UNUSED(unused))
{
    MT_ASSERT_GIL();
    mt_state *st = mt_get_state(module);
    call_python_fork_hooks(st, 0);
    mt_worker_fork_hooks *hooks = &st->fork_hooks;
    for (int i = hooks->count - 1; i >= 0; i--) {
        hooks->hooks[i].pause(hooks->hooks[i].owner);
    }
    Py_RETURN_NONE;
}

/* Starts the threads again; each failure is reported, as os.fork reports a
 * hook's, and the others start all the same. */
static int
resume_after_fork(void *module)
{
    MT_ASSERT_GIL();
    mt_state *st = mt_get_state(module);
    mt_worker_fork_hooks *hooks = &st->fork_hooks;
    for (int i = 0; i < hooks->count; i++) {
        if (hooks->hooks[i].resume(hooks->hooks[i].owner) < 0) {
            PyErr_WriteUnraisable(module);
        }
    }
    call_python_fork_hooks(st, 1);
    return 0;
}

PyDoc_STRVAR(after_fork__doc__,
             "_after_fork(): start them again in the parent, once the child exists.");
static PyObject *
after_fork(PyObject *module, PyObject *Py_UNUSED(unused))
{
    mt_pyver_after_fork_returns(resume_after_fork, module);
    Py_RETURN_NONE;
}

static PyMethodDef fork_methods[] = {
    {"_before_fork", before_fork, METH_NOARGS, before_fork__doc__},
    {"_after_fork", after_fork, METH_NOARGS, after_fork__doc__},
    {"at_fork", (PyCFunction)(void (*)(void))at_fork, METH_FASTCALL, at_fork__doc__},
    {NULL, NULL, 0, NULL},
};

/* Registers the two hooks above with os.register_at_fork, once per
 * process. */
static int
register_fork_hooks(PyObject *module)
{
    static int registered = 0; /* only touched with the GIL held (asserted below) */
    PyObject *os = NULL, *reg = NULL, *before = NULL, *after = NULL, *kwargs = NULL, *empty = NULL,
             *res = NULL;
    int rc = -1;
    MT_ASSERT_GIL();
    if (registered) {
        return 0;
    }
    if (!(os = PyImport_ImportModule("os")) ||
        !(reg = PyObject_GetAttrString(os, "register_at_fork")) ||
        !(before = PyObject_GetAttrString(module, "_before_fork")) ||
        !(after = PyObject_GetAttrString(module, "_after_fork")) ||
        !(kwargs = Py_BuildValue("{sOsO}", "before", before, "after_in_parent", after)) ||
        !(empty = PyTuple_New(0)) || !(res = PyObject_Call(reg, empty, kwargs))) {
        goto done;
    }
    registered = 1;
    rc = 0;
done:
    Py_XDECREF(os);
    Py_XDECREF(reg);
    Py_XDECREF(before);
    Py_XDECREF(after);
    Py_XDECREF(kwargs);
    Py_XDECREF(empty);
    Py_XDECREF(res);
    return rc;
}

/* ---- init ---- */

static int
core_exec(PyObject *module)
{
    if (mt_pyver_check_build() < 0) {
        return -1;
    }
    mt_state *st = mt_get_state(module);
    st->cells.window.peak_floor = -1;
    for (size_t i = 0; i < Py_ARRAY_LENGTH(concern_methods); i++) {
        if (PyModule_AddFunctions(module, concern_methods[i]) < 0) {
            return -1;
        }
    }
    if (!(st->compressed_type = mt_codec_make_type(module)) ||
        PyModule_AddObjectRef(module, "Compressed", st->compressed_type) < 0) {
        return -1;
    }
    PyObject *hooks_type = mt_hooks_make_type(module);
    int added = hooks_type ? PyModule_AddObjectRef(module, "CellHooks", hooks_type) : -1;
    Py_XDECREF(hooks_type);
    if (added < 0) {
        return -1;
    }
    if (PyModule_AddFunctions(module, fork_methods) < 0 || mt_process_open_probe(module, "") < 0) {
        return -1;
    }
    mt_probe_at_fork(st->probe, &st->fork_hooks);
    if ((st->writeback = mt_writeback_new(&st->fork_hooks)) == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    if (mt_guard_exec(module) < 0 || mt_telemetry_exec(module) < 0) {
        return -1;
    }
    return register_fork_hooks(module);
}

static int
core_traverse(PyObject *module, visitproc visit, void *arg)
{
    Py_VISIT(mt_get_state(module)->numpy_original);
    Py_VISIT(mt_get_state(module)->cells.window.source);
    Py_VISIT(mt_get_state(module)->compressed_type);
    Py_VISIT(mt_get_state(module)->compress_pickler);
    Py_VISIT(mt_get_state(module)->python_fork_hooks);
    int rc = mt_guard_traverse(module, visit, arg);
    if (rc != 0) {
        return rc;
    }
    return mt_ledger_traverse(&mt_get_state(module)->ledger, visit, arg);
}

static int
core_clear(PyObject *module)
{
    Py_CLEAR(mt_get_state(module)->numpy_original);
    Py_CLEAR(mt_get_state(module)->cells.window.source);
    mt_guard_clear(module);
    Py_CLEAR(mt_get_state(module)->compressed_type);
    Py_CLEAR(mt_get_state(module)->compress_pickler);
    Py_CLEAR(mt_get_state(module)->python_fork_hooks);
    mt_ledger_clear(&mt_get_state(module)->ledger);
    return 0;
}

static void
core_free(void *module)
{
    mt_state *st = mt_get_state((PyObject *)module);
    core_clear((PyObject *)module);
    mt_telemetry_free((PyObject *)module);
    mt_guard_free((PyObject *)module);
    mt_postmortem_close(&st->postmortem, 1);
    mt_writeback_free(st->writeback);
    st->writeback = NULL;
    if (st->probe) {
        mt_probe_close(st->probe);
        PyMem_RawFree(st->probe);
        st->probe = NULL;
    }
    mt_cell_log_free(&st->cells);
    mt_policy_free(&st->policy);
    /* The allocator hooks stay: at finalization nothing may call into
     * Python to swap allocators, and they only count. */
}

static PyModuleDef_Slot core_slots[] = {
    {Py_mod_exec, core_exec},
    MT_PYVER_MODULE_SLOTS{0, NULL},
};

static struct PyModuleDef core_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "memtamer._core",
    .m_doc = "memtamer's C core: per-cell memory measurement for IPython kernels.",
    .m_size = sizeof(mt_state),
    .m_slots = core_slots,
    .m_traverse = core_traverse,
    .m_clear = core_clear,
    .m_free = core_free,
};

PyMODINIT_FUNC PyInit__core(void);

PyMODINIT_FUNC
PyInit__core(void)
{
    return PyModuleDef_Init(&core_module);
}
