/* process: the Python face of the probe — the process view (RSS, limit,
 * headroom, which figures are available) and the probe's test entry points. */
#ifndef MEMTAMER_PROCESS_H
#define MEMTAMER_PROCESS_H

#include <Python.h>

#include "memtamer/probe.h"

/* Opens state->probe on root ("" for the real one); -1 with an exception. */
int mt_process_open_probe(PyObject *module, const char *root);

/* The figures of the memory shared with other processes, as a dict:
 * source ('cgroup2', 'cgroup1', 'machine'), path, limit, use (the working
 * set), usage, inactive_file. */
PyObject *mt_process_shared_dict(const mt_probe_shared *shared);

/* The swap this process may fill, as a dict: source ('SwapTotal',
 * 'cgroup2 memory.swap.max', 'cgroup1 memory.memsw.limit_in_bytes'), path,
 * limit, used, room. */
PyObject *mt_process_swap_dict(const mt_probe_swap *swap);

/* The _core methods process.c defines. */
extern PyMethodDef mt_process_methods[];

#endif
