/* memtamer._core: the method table, module state and init.  The methods
 * live in the concern files; include/memtamer/memtamer.h has the map. */
#include "memtamer/memtamer.h"

#include "memtamer/guard.h"
#include "memtamer/codec.h"
#include "memtamer/frames.h"
#include "memtamer/heap.h"
#include "memtamer/peaks.h"
#include "memtamer/policy.h"
#include "memtamer/postmortem.h"
#include "memtamer/process.h"
#include "memtamer/shrink.h"
#include "memtamer/telemetry.h"
#include "memtamer/walker.h"

static PyMethodDef core_methods[] = {
    {"cell_begin", (PyCFunction)(void (*)(void))mt_cell_begin, METH_FASTCALL,
     "cell_begin(execution_count, source): start measuring a cell."},
    {"cell_end", (PyCFunction)(void (*)(void))mt_cell_end, METH_FASTCALL,
     "cell_end(execution_count, failed) -> dict | None: finish the cell, return its record."},
    {"cells", mt_cell_history, METH_NOARGS, "cells() -> list of the cell records so far."},
    {"clear_cells", mt_cell_clear, METH_NOARGS, "clear_cells(): forget the cell history."},
    {"process", mt_process_view, METH_NOARGS,
     "process() -> dict: RSS, the effective limit and its source, headroom, methods."},
    {"report", mt_process_report, METH_NOARGS, "report() -> dict with 'process' and 'cells'."},
    {"set_peak_method", mt_process_set_peak_method, METH_O,
     "set_peak_method('hwm' | 'sampled'): how cell peaks are measured."},
    {"install_hooks", mt_process_install_hooks, METH_NOARGS,
     "install_hooks(): start counting Python's allocations (a no-op when installed)."},
    {"uninstall_hooks", mt_process_uninstall_hooks, METH_NOARGS,
     "uninstall_hooks() -> bool: restore the saved allocators; False when another hook "
     "installed later still wraps ours."},
    {"in_ram", mt_process_in_ram, METH_O,
     "in_ram(path) -> bool: path's file system keeps its files in memory (tmpfs, ramfs)."},
    {"trim", mt_process_trim, METH_NOARGS,
     "trim() -> bool: give freed heap back to the OS (glibc's malloc_trim); True when some was."},
    {"_allocators", mt_process_allocators, METH_NOARGS,
     "_allocators() -> dict: the allocator functions now installed (for tests)."},
    {"_parse", (PyCFunction)(void (*)(void))mt_process_parse, METH_FASTCALL,
     "_parse(kind, text): run one of the /proc or cgroup parsers on text (for tests)."},
    {"_set_proc_root", mt_process_set_root, METH_O,
     "_set_proc_root(path): read /proc and /sys under path ('' for the real ones)."},
    {"sharing", (PyCFunction)(void (*)(void))mt_process_sharing, METH_FASTCALL,
     "sharing(path, n) -> [(rss, pid, command)]: the n biggest other processes of the cgroup at "
     "path and its descendants (None: of the machine)."},
    {"guard_enable", (PyCFunction)(void (*)(void))mt_guard_enable, METH_FASTCALL,
     "guard_enable(user_ns, describe) -> dict: start the watcher; budget the cells that follow."},
    {"guard_disable", mt_guard_disable, METH_NOARGS,
     "guard_disable(): stop the watcher and the budget."},
    {"guard_set_budget", (PyCFunction)(void (*)(void))mt_guard_set_budget, METH_FASTCALL,
     "guard_set_budget('default'|'bytes'|'percent'|'off', value) -> dict: change the budget."},
    {"guard_status", mt_guard_status, METH_NOARGS,
     "guard_status() -> dict: the budget, the limit, the watcher."},
    {"guard_exception", mt_guard_exception, METH_NOARGS,
     "guard_exception() -> MemoryBudgetExceeded | None: the running cell's refusal as an exception."},
    {"_guard_signal", (PyCFunction)(void (*)(void))mt_guard_signal_handler, METH_FASTCALL,
     "_guard_signal(signum, frame): the handler for GUARD_SIGNAL; raises MemoryBudgetExceeded."},
    {"postmortem_open", mt_postmortem_py_open, METH_O,
     "postmortem_open(path): keep this kernel's post-mortem record in path."},
    {"postmortem_close", mt_postmortem_py_close, METH_NOARGS,
     "postmortem_close(): remove this kernel's post-mortem record."},
    {"postmortem_read", mt_postmortem_py_read, METH_O,
     "postmortem_read(path) -> dict | None: a post-mortem record left by a kernel; "
     "'same_notebook' and 'memory_cause' ('oom_killer', 'limit', 'budget' or None) say "
     "whose it is and whether memory likely ended it."},
    {"_guard_before_fork", mt_guard_before_fork, METH_NOARGS,
     "_guard_before_fork(): stop memtamer's threads before os.fork() (registered at fork)."},
    {"_guard_after_fork", mt_guard_after_fork, METH_NOARGS,
     "_guard_after_fork(): start them again in the parent after os.fork()."},
    {"shrink_window_begin", mt_shrink_window_begin, METH_NOARGS,
     "shrink_window_begin(): start measuring one %shrink action (RSS, exact peak, time)."},
    {"shrink_window_end", mt_shrink_window_end, METH_NOARGS,
     "shrink_window_end() -> dict: rss_before, rss_after, peak_rss, seconds of the action."},
    {"inplace_check", (PyCFunction)(void (*)(void))mt_shrink_inplace_check, METH_FASTCALL,
     "inplace_check(ns, name) -> [(rule, message)]: why ns[name] cannot change in place."},
    {"downcast_plan", (PyCFunction)(void (*)(void))mt_shrink_plan, METH_VARARGS | METH_KEYWORDS,
     "downcast_plan(array, to='auto', rtol=1e-3, narrow=False) -> {target, reason, max_rel_error, warning}."},
    {"shrink_options", (PyCFunction)(void (*)(void))mt_shrink_options, METH_VARARGS | METH_KEYWORDS,
     "shrink_options(codec=None, level=None, rtol=None) -> {codec, level, rtol}: checked, "
     "defaults filled in."},
    {"downcast", (PyCFunction)(void (*)(void))mt_shrink_downcast, METH_VARARGS | METH_KEYWORDS,
     "downcast(ns, name, to='auto', rtol=1e-3, narrow=False, copy=False, dry_run=False) -> dict."},
    {"pack", (PyCFunction)(void (*)(void))mt_shrink_pack, METH_VARARGS | METH_KEYWORDS,
     "pack(ns, name, narrow=False, copy=False, dry_run=False) -> dict: numbers -> the array numpy "
     "would make (the smallest exact one with narrow)."},
    {"spill_write", (PyCFunction)(void (*)(void))mt_shrink_spill_write, METH_VARARGS | METH_KEYWORDS,
     "spill_write(array, path, progress=None) -> bytes written to a new file."},
    {"compress", (PyCFunction)(void (*)(void))mt_codec_compress, METH_VARARGS | METH_KEYWORDS,
     "compress(obj, name, codec='auto', level=5, progress=None, owner=None, *, threads=None, "
     "narrow=True) -> Compressed: any use restores it and rebinds name in the module owner; "
     "codec 'auto' picks what makes a sample smallest, narrow lets 8-byte numbers be narrowed "
     "first, threads defaults to every core."},
    {"restore", (PyCFunction)(void (*)(void))mt_codec_restore, METH_VARARGS | METH_KEYWORDS,
     "restore(proxy, progress=None) -> the object, equal bit for bit to the one compressed; "
     "its name is rebound in the owner module."},
    {"compressed_info", mt_codec_info, METH_O,
     "compressed_info(proxy) -> {name, what, kind, codec, level, nbytes, cbytes, restored}."},
    {"compress_estimate", (PyCFunction)(void (*)(void))mt_codec_estimate, METH_VARARGS | METH_KEYWORDS,
     "compress_estimate(obj, codec='auto', level=5, sample=16MiB, *, threads=None, narrow=True) "
     "-> (nbytes, estimated bytes, method)."},
    {"codecs", mt_frames_codecs, METH_NOARGS,
     "codecs() -> {codecs, blosc, default}: 'auto' and what blosc offers, the default codec."},
    {"deep_size", (PyCFunction)(void (*)(void))mt_walker_py_deep_size, METH_FASTCALL,
     "deep_size(obj, budget_seconds=0) -> (bytes, complete): deep size, buffers counted once."},
    {"ledger_attach", (PyCFunction)(void (*)(void))mt_ledger_py_attach, METH_FASTCALL,
     "ledger_attach(user_ns, hidden_ns, out_cache, shell, transform): follow this namespace."},
    {"ledger_rewalk", mt_ledger_py_rewalk, METH_O,
     "ledger_rewalk(names): size these variables again (they changed in place)."},
    {"ledger_detach", mt_ledger_py_detach, METH_NOARGS, "ledger_detach(): stop following it."},
    {"variables", (PyCFunction)(void (*)(void))mt_ledger_py_variables, METH_FASTCALL,
     "variables(name=None) -> list of dicts: sizes, holders, provenance (walks every root)."},
    {"ledger", mt_ledger_py_names, METH_NOARGS,
     "ledger() -> dict: per-name provenance and cached sizes, without walking."},
    {"set_walk_budget", (PyCFunction)(void (*)(void))mt_ledger_py_set_budget, METH_FASTCALL,
     "set_walk_budget(cell_seconds, report_seconds): time limits of the walks."},
    {"rules_check", mt_policy_check, METH_O,
     "rules_check(text: bytes) -> [(line, column, message)]: validate a rules file; [] when valid."},
    {"rules_load", mt_policy_load, METH_O,
     "rules_load(text: bytes) -> [(line, column, message)]: with no errors the rules replace those "
     "in force; with errors those in force stay."},
    {"rules_clear", mt_policy_clear, METH_NOARGS, "rules_clear(): no rules in force."},
    {"rules_table", mt_policy_table, METH_NOARGS,
     "rules_table() -> dict | None: the rules in force (version, budget, notice, protect, rules)."},
    {"rules_enable", mt_policy_enable, METH_O, "rules_enable(flag): let the rules fire, or not."},
    {"policy_evaluate", (PyCFunction)(void (*)(void))mt_policy_evaluate, METH_FASTCALL,
     "policy_evaluate(dry_run=False) -> [action]: what the rules do after the last cell."},
    {"policy_acted_on", (PyCFunction)(void (*)(void))mt_policy_acted_on, METH_FASTCALL,
     "policy_acted_on(rule, names): a rule's action rebound these names; adopt them."},
    {"parse_level", mt_policy_parse_size, METH_O,
     "parse_level(text) -> ('bytes', n) | ('percent', p): a size or percentage as rules write it."},
    {"parse_size", mt_policy_py_parse_size, METH_O,
     "parse_size(text) -> bytes: a size as the magics and rules write it (512MiB, 1.5G)."},
    {"peaks_settings", (PyCFunction)(void (*)(void))mt_peaks_settings, METH_VARARGS | METH_KEYWORDS,
     "peaks_settings(*, enabled=None, block=None, cell=None) -> dict: peak attribution on or off, "
     "the smallest block it follows (bytes, default 1 MiB) and the smallest cell peak it reports "
     "(bytes above the cell's start, default 64 MiB); from the next cell."},
    {"telemetry_start", (PyCFunction)(void (*)(void))mt_telemetry_start, METH_VARARGS | METH_KEYWORDS,
     "telemetry_start(endpoint, kernel, names=True) -> the bound endpoint: publish this "
     "kernel's memory on a ZeroMQ XPUB socket (restarts a running publisher)."},
    {"telemetry_stop", mt_telemetry_stop, METH_NOARGS,
     "telemetry_stop(): say bye, close the socket and its file, join the sampler."},
    {"telemetry_event", (PyCFunction)(void (*)(void))mt_telemetry_event, METH_FASTCALL,
     "telemetry_event(kind, data) -> bool: publish an event; False while telemetry is off."},
    {"telemetry_status", mt_telemetry_status, METH_NOARGS,
     "telemetry_status() -> dict | None: endpoint, kernel, names, sent, seq, subscriptions, "
     "thread_id, last_error."},
    {NULL, NULL, 0, NULL},
};

static int
core_exec(PyObject *module)
{
    mt_state *st = mt_get_state(module);
    st->cells.window.peak_floor = -1;
    if (!(st->compressed_type = mt_codec_make_type(module)) ||
        PyModule_AddObjectRef(module, "Compressed", st->compressed_type) < 0) {
        return -1;
    }
    if (mt_process_open_probe(module, "") < 0) {
        return -1;
    }
    return mt_guard_exec(module);
}

static int
core_traverse(PyObject *module, visitproc visit, void *arg)
{
    Py_VISIT(mt_get_state(module)->numpy_previous);
    Py_VISIT(mt_get_state(module)->cells.window.source);
    Py_VISIT(mt_get_state(module)->compressed_type);
    int rc = mt_guard_traverse(module, visit, arg);
    if (rc != 0) {
        return rc;
    }
    return mt_ledger_traverse(&mt_get_state(module)->ledger, visit, arg);
}

static int
core_clear(PyObject *module)
{
    Py_CLEAR(mt_get_state(module)->numpy_previous);
    Py_CLEAR(mt_get_state(module)->cells.window.source);
    mt_guard_clear(module);
    Py_CLEAR(mt_get_state(module)->compressed_type);
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
#if PY_VERSION_HEX >= 0x030C0000
    /* The hooks and counters are process-wide. */
    {Py_mod_multiple_interpreters, Py_MOD_MULTIPLE_INTERPRETERS_NOT_SUPPORTED},
#endif
    {0, NULL},
};

static struct PyModuleDef core_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "memtamer._core",
    .m_doc = "memtamer's C core: per-cell memory measurement for IPython kernels.",
    .m_size = sizeof(mt_state),
    .m_methods = core_methods,
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
