/* telemetry: each kernel publishes its memory live on a ZeroMQ XPUB socket
 * of its own, for `memtamer watch` and `memtamer export`.
 *
 * Every message has two frames: a topic ("memtamer.sample", ".cell",
 * ".event", ".snapshot", ".bye") and a JSON object carrying the kernel id,
 * pid, time and a per-kernel sequence number, so a subscriber sees what it
 * missed.  One sampler thread owns the socket (sampler.c): it sends
 * samples (every MT_SAMPLER_BUSY_MS while a cell runs, MT_SAMPLER_IDLE_MS
 * otherwise), the cell records and events the main thread hands it, and
 * answers each new subscription with a snapshot; while nobody subscribes it
 * samples, formats and sends nothing but the rare events a late
 * subscriber's snapshot repeats.  It never takes the GIL and reads only C-side
 * figures.  Sends never wait: a slow or dead subscriber loses messages (its
 * sequence numbers show the gap), the kernel never blocks.  A forked child
 * never touches its parent's context or socket.
 *
 * This file is the publisher: the socket, its checks and the main thread's
 * hand-overs.  The fields of each kind are stated once, in message.c's
 * schema, which _core.telemetry_protocol() hands to the subscribers'
 * validator and to export.py.  With
 * names off no variable name, value or code goes out: cells' first lines
 * and peak lines are null, and event data keeps only numbers and a few
 * fixed words.  Any local user can reach a tcp endpoint: it is refused
 * unless names are off or a CurveZMQ server key encrypts and gates it. */
#ifndef MEMTAMER_TELEMETRY_H
#define MEMTAMER_TELEMETRY_H

#include <Python.h>

#include "memtamer/cell.h"

typedef struct mt_telemetry mt_telemetry;

/* Messages queued per subscriber before libzmq drops samples for it. */
#define MT_TELEMETRY_SNDHWM 64

/* Cell boundaries (cell.c), with the GIL held; no-ops while telemetry is
 * off.  They only copy figures under a lock, and wake the sampler when
 * somebody subscribes.  budget and trips: the guard's (-1 and 0 without
 * one); method: the probe's peak method for the running cell. */
void mt_telemetry_cell_begin(PyObject *module, const mt_cell_window *w, mt_peak_method method,
                             long long budget, long long trips);
void mt_telemetry_cell_end(PyObject *module, const mt_cell_record *record, long long budget,
                           long long trips);

/* Module init: registers the publisher's pause and resume around os.fork()
 * (module.c runs them for all of memtamer's threads): libzmq's threads and
 * the sampler stop, so that no thread of ours is alive at the fork, and
 * start again in the parent on the same endpoint (subscribers reconnect by
 * themselves).  0. */
/* Queues an event (kind, a dict serialised here) for the subscribers: 1
 * queued, 0 telemetry off or the queue full, -1 with an exception set.
 * Needs the GIL. */
int mt_telemetry_publish_event(PyObject *module, const char *kind, PyObject *data);

int mt_telemetry_exec(PyObject *module);

/* Module free: stops the publisher without calling into Python. */
void mt_telemetry_free(PyObject *module);

/* The _core methods telemetry.c defines. */
extern PyMethodDef mt_telemetry_methods[];

#endif
