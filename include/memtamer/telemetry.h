/* telemetry: each kernel publishes its memory live on a ZeroMQ XPUB socket
 * of its own, for `memtamer watch` and `memtamer export`.
 *
 * Every message has two frames: a topic ("memtamer.sample", ".cell",
 * ".event", ".snapshot", ".bye") and a JSON object carrying the kernel id,
 * pid, time and a per-kernel sequence number, so a subscriber sees what it
 * missed.  One sampler thread owns the socket: it sends samples (every
 * MT_TELEMETRY_BUSY_MS while a cell runs, MT_TELEMETRY_IDLE_MS otherwise),
 * serialises the cell records and events the main thread hands it, and
 * answers each new subscription with a snapshot.  It never takes the GIL and
 * reads only C-side figures.  Sends never wait: a slow or dead subscriber
 * loses messages (its sequence numbers show the gap), the kernel never
 * blocks.  A forked child never touches its parent's context or socket.
 *
 * The fields of each kind are stated once, in telemetry.c's schema, which
 * _core.telemetry_protocol() hands to the subscribers' validator.  With
 * names off no variable name, value or code goes out: cells' first lines
 * and peak lines are null, and event data keeps only numbers and a few
 * fixed words.  Any local user can reach a tcp endpoint: it is refused
 * unless names are off or a CurveZMQ server key encrypts and gates it. */
#ifndef MEMTAMER_TELEMETRY_H
#define MEMTAMER_TELEMETRY_H

#include <Python.h>

#include "memtamer/cell.h"

typedef struct mt_telemetry mt_telemetry;

#define MT_TELEMETRY_BUSY_MS 250
#define MT_TELEMETRY_IDLE_MS 3000
/* Messages queued per subscriber before libzmq drops samples for it. */
#define MT_TELEMETRY_SNDHWM 64

/* Cell boundaries (cell.c), with the GIL held; no-ops while telemetry is
 * off.  They only copy figures under a lock and wake the sampler. */
void mt_telemetry_cell_begin(PyObject *module, long long cell, const char *first_line,
                             long long rss_before);
void mt_telemetry_cell_end(PyObject *module, const mt_cell_record *record);

/* Around os.fork(), with the GIL held (guard.c's fork hooks): libzmq's
 * threads and the sampler stop, so that no thread of ours is alive at the
 * fork, and start again in the parent on the same endpoint (subscribers
 * reconnect by themselves).  resume: -1 with an exception. */
void mt_telemetry_fork_pause(PyObject *module);
int mt_telemetry_fork_resume(PyObject *module);

/* Module free: stops the publisher without calling into Python. */
void mt_telemetry_free(PyObject *module);

/* Methods of _core (module.c lists them). */
PyObject *mt_telemetry_start(PyObject *module, PyObject *args, PyObject *kwargs);
PyObject *mt_telemetry_stop(PyObject *module, PyObject *unused);
PyObject *mt_telemetry_event(PyObject *module, PyObject *const *args, Py_ssize_t nargs);
PyObject *mt_telemetry_status(PyObject *module, PyObject *unused);
PyObject *mt_telemetry_protocol(PyObject *module, PyObject *unused);

/* The _core methods telemetry.c defines. */
extern PyMethodDef mt_telemetry_methods[];

#endif
