/* message: telemetry's message format (telemetry.h says what goes out and
 * when).  The schema of every kind of message, stated once here, and the
 * JSON writers held to it.
 *
 * The writers run on the sampler thread without the GIL and touch no Python
 * object: they append to a buffer that is reused from message to message
 * (grown with realloc, never shrunk) and format numbers by hand, with no
 * printf per field.  Only mt_message_schema needs the GIL. */
#ifndef MEMTAMER_MESSAGE_H
#define MEMTAMER_MESSAGE_H

#include <Python.h>

#include <stddef.h>
#include <sys/types.h>

#include "memtamer/cell.h"

typedef struct {
    char *data; /* malloc'd, NUL-terminated */
    size_t len, cap;
    int failed; /* out of memory: the message is dropped */
} mt_message_buf;

/* What a cell running now shows in samples. */
typedef struct {
    int running;
    long long cell; /* -1 when not stored in history */
    double started; /* mt_monotonic_seconds() */
    long long rss_before;
    mt_peak_method method;
    char first_line[MT_FIRST_LINE_BYTES];
} mt_message_running;

/* A sample's figures: bytes, -1 where unavailable. */
typedef struct {
    long long rss, limit, headroom, heap, numpy, children;
    /* How many descendants live, and the one that owns most (0 and -1: none). */
    long long children_count, biggest_child_pid, biggest_child_private;
    /* The kernel's bytes in swap and its major faults so far (a subscriber
     * sees thrashing in their rate). */
    long long swap, major_faults;
    long long cell_peak; /* the running cell's peak RSS so far, -1 between cells */
} mt_message_sample;

/* Empties b for the next message (its memory stays). */
void mt_message_reset(mt_message_buf *b);
void mt_message_free(mt_message_buf *b);
void mt_message_append(mt_message_buf *b, const char *s, size_t n);

/* Starts a message: {"kind":...,"kernel":...,"pid":...,"seq":...,"time":...
 * (left open for the kind's fields).  Returns where its "seq" part starts
 * (the part an event repeats in snapshots). */
size_t mt_message_open(mt_message_buf *b, const char *kind, const char *kernel, pid_t pid,
                       long long seq, double time);
/* Closes the message's object. */
void mt_message_close(mt_message_buf *b);

/* The fields of each kind, after mt_message_open; names 0 writes null for
 * every text that may quote the user's code or names. */
void mt_message_sample_fields(mt_message_buf *b, int names, const mt_message_sample *f,
                              const mt_message_running *run, long long budget, long long trips,
                              long long cells);
void mt_message_cell_fields(mt_message_buf *b, int names, long long cells, long long trips,
                            const mt_cell_record *r, const mt_peak_composition *peak);
/* data: the event's JSON object, serialised already. */
void mt_message_event_fields(mt_message_buf *b, const char *event, const char *data);
/* A snapshot: the sample's fields, then these; last NULL when no cell ended
 * yet; recent: n JSON objects (NULL entries skipped). */
void mt_message_snapshot_fields(mt_message_buf *b, int names, const char *endpoint,
                                const mt_message_sample *f, const mt_message_running *run,
                                long long budget, long long trips, long long cells,
                                const mt_cell_record *last, const mt_peak_composition *last_peak,
                                char *const *recent, int n);

/* The schema, with the GIL: {"kinds": {kind: {field: type}} (the common
 * fields included), "objects": {name: {field: type}}}.  Types: int, number,
 * string, bool, object, array or an object's name; a trailing ? admits
 * null.  NULL with an exception. */
PyObject *mt_message_schema(void);

#endif
