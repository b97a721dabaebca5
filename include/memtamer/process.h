/* process: the Python face of the probe — the process view (RSS, limit,
 * headroom, which figures are available) and the probe's test entry points. */
#ifndef MEMTAMER_PROCESS_H
#define MEMTAMER_PROCESS_H

#include <Python.h>

#include "memtamer/probe.h"

/* Opens state->probe on root ("" for the real one); -1 with an exception. */
int mt_process_open_probe(PyObject *module, const char *root);

/* The _core methods process.c defines. */
extern PyMethodDef mt_process_methods[];

#endif
