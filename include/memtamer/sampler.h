/* sampler: telemetry's thread (telemetry.h says what it publishes).
 *
 * It alone uses the publisher's socket: it sends samples, the cell records
 * and events the main thread hands over, a snapshot to each new
 * subscription, and a bye.  It counts the subscriptions as XPUB passes them
 * up; while there are none it reads no /proc file, formats and sends
 * nothing but events (kept for snapshots): it sleeps until a subscription,
 * an event or a stop wakes it.  It never
 * takes the GIL and touches no Python object; its memory comes from
 * malloc. */
#ifndef MEMTAMER_SAMPLER_H
#define MEMTAMER_SAMPLER_H

#include <pthread.h>
#include <stdatomic.h>
#include <sys/types.h>

#include "memtamer/message.h"
#include "memtamer/probe.h"

/* How often it samples: while a cell runs, and between cells. */
#define MT_SAMPLER_BUSY_MS 250
#define MT_SAMPLER_IDLE_MS 3000
/* Events waiting for the sampler; more are dropped (and counted in seq). */
#define MT_SAMPLER_EVENT_QUEUE 64
/* The last events, repeated in snapshots: a post-mortem finding is
 * published while the kernel loads, before any watcher can be there. */
#define MT_SAMPLER_RECENT_EVENTS 8
#define MT_SAMPLER_KERNEL_MAX 128
#define MT_SAMPLER_ENDPOINT_MAX 512

/* Why the thread is to stop: for good (it says bye) or for a fork (no
 * goodbye: the subscribers reconnect once it runs again). */
typedef enum {
    MT_SAMPLER_RUN = 0,
    MT_SAMPLER_STOP_FOR_GOOD,
    MT_SAMPLER_STOP_FOR_FORK
} mt_sampler_stop;

typedef struct {
    char *kind; /* malloc'd, with the JSON of its data */
    char *data;
} mt_sampler_event;

typedef struct {
    /* Set before the thread starts, read-only while it runs. */
    pid_t pid;
    int names;
    char kernel[MT_SAMPLER_KERNEL_MAX];
    char endpoint[MT_SAMPLER_ENDPOINT_MAX];
    void *socket; /* the publisher's XPUB socket, closed by the thread as it ends */
    int wake_fd;  /* eventfd */
    pthread_t thread;

    /* lock guards what follows, up to the atomics. */
    pthread_mutex_t lock;
    mt_sampler_stop stop;
    mt_message_running run;
    long long budget, trips, cells;
    mt_cell_record last; /* the last cell's record, for snapshots */
    /* Its peak composition and first line, copied: the cell log may free
     * its own before the thread sends them (last.peak and last.first_line
     * are never read here). */
    mt_peak_composition last_peak;
    char last_first_line[MT_FIRST_LINE_BYTES];
    int have_last, last_pending, last_has_peak;
    mt_sampler_event events[MT_SAMPLER_EVENT_QUEUE];
    int event_count;
    long long events_dropped;

    _Atomic long long subscriptions, sent, seq;
    /* Subscriptions a pause for a fork closed, counted still: their
     * subscribers reconnect, and their first subscription is no new one.
     * Only the thread touches it while it runs. */
    long long returning;
    double resumed_at;      /* when the pause ended: cell records wait a moment for them */
    _Atomic int last_errno; /* of the last failed send, 0 if none */
    _Atomic int tid;        /* the thread's, for measuring its CPU time */
    _Atomic int busy_pace;  /* the thread already samples at the busy pace */

    /* The thread's alone. */
    mt_probe probe;
    char *recent[MT_SAMPLER_RECENT_EVENTS]; /* malloc'd, oldest at recent_next */
    int recent_next;
} mt_sampler;

/* Prepares s (no thread yet): 0, or -1 with errno. */
int mt_sampler_init(mt_sampler *s, pid_t pid, int names, const char *kernel);
/* Frees what s holds; its thread must not run. */
void mt_sampler_free(mt_sampler *s);

/* Starts the thread on s->socket (bound by the publisher) with every signal
 * blocked (signals are the main thread's): 0, or the error number. */
int mt_sampler_start(mt_sampler *s);
/* Stops the thread (how: MT_SAMPLER_STOP_FOR_GOOD says bye first), joins it
 * and waits until it has left the process; the socket is closed. */
void mt_sampler_join(mt_sampler *s, mt_sampler_stop how);

/* The main thread's hand-overs (any thread, without the GIL): a cell began,
 * a cell ended (budget and trips as the guard has them), an event (kind and
 * its data serialised); event returns 0 when the queue was full (the event
 * is dropped and counted).  No-ops but for a copy under the lock while
 * nobody subscribes. */
void mt_sampler_cell_begin(mt_sampler *s, const mt_message_running *run, long long budget,
                           long long trips);
void mt_sampler_cell_end(mt_sampler *s, const mt_cell_record *record, long long budget,
                         long long trips);
int mt_sampler_event_queue(mt_sampler *s, char *kind, char *data);

#endif
