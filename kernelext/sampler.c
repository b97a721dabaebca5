/* sampler: telemetry's thread, which alone uses the socket (sampler.h). */
#define _GNU_SOURCE
#include "memtamer/sampler.h"

#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <unistd.h>
#include <zmq.h>

#include "memtamer/heap.h"
#include "memtamer/memtamer.h"
#include "memtamer/worker.h"

/* After a pause for a fork, a cell record waits up to this long, looking
 * this often, for its subscribers to reconnect. */
#define RETURN_SECONDS 1.0
#define RETURN_POLL_SECONDS 0.02
/* The thread's nice value. */
#define SAMPLER_NICE 19

int
mt_sampler_init(mt_sampler *s, pid_t pid, int names, const char *kernel)
{
    memset(s, 0, sizeof *s);
    s->pid = pid;
    s->names = names;
    s->run.cell = -1;
    s->budget = -1;
    snprintf(s->kernel, sizeof s->kernel, "%s", kernel);
    pthread_mutex_init(&s->lock, NULL);
    mt_probe_open(&s->probe, "");
    s->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    return s->wake_fd < 0 ? -1 : 0;
}

void
mt_sampler_free(mt_sampler *s)
{
    if (s->wake_fd >= 0) {
        close(s->wake_fd);
    }
    for (int i = 0; i < s->event_count; i++) {
        free(s->events[i].kind);
        free(s->events[i].data);
    }
    for (int i = 0; i < MT_SAMPLER_RECENT_EVENTS; i++) {
        free(s->recent[i]);
    }
    mt_probe_close(&s->probe);
    pthread_mutex_destroy(&s->lock);
}

static void
wake(mt_sampler *s)
{
    uint64_t one = 1;
    (void)!write(s->wake_fd, &one, sizeof one);
}

static int
subscribed(mt_sampler *s)
{
    return atomic_load(&s->subscriptions) > 0;
}

/* ------------------------------------------------------------------ */
/* the main thread's side: hand over and wake                          */
/* ------------------------------------------------------------------ */

void
mt_sampler_cell_begin(mt_sampler *s, const mt_message_running *run, long long budget,
                      long long trips)
{
    pthread_mutex_lock(&s->lock);
    s->run = *run;
    s->budget = budget;
    s->trips = trips;
    pthread_mutex_unlock(&s->lock);
    if (subscribed(s) && !atomic_load(&s->busy_pace)) {
        wake(s); /* to the busy pace now */
    }
}

void
mt_sampler_cell_end(mt_sampler *s, const mt_cell_record *record, long long budget, long long trips)
{
    /* Nobody listening: the record is kept for snapshots, not sent (a
     * subscriber that comes later must not take an old cell for new). */
    int listening = subscribed(s);
    pthread_mutex_lock(&s->lock);
    s->run.running = 0;
    int woken = s->last_pending;
    if (woken) {
        s->events_dropped++; /* cells faster than the thread: the gap shows it */
    }
    s->last = *record;
    mt_cell_copy_line(s->last_first_line, sizeof s->last_first_line, record->first_line);
    s->last_has_peak = record->peak != NULL;
    if (record->peak != NULL) {
        s->last_peak = *record->peak;
    }
    s->have_last = 1;
    s->last_pending = listening;
    s->cells++;
    s->budget = budget;
    s->trips = trips;
    pthread_mutex_unlock(&s->lock);
    /* A pending record means the thread was woken already. */
    if (listening && !woken) {
        wake(s);
    }
}

int
mt_sampler_event_queue(mt_sampler *s, char *kind, char *data)
{
    pthread_mutex_lock(&s->lock);
    int queued = s->event_count < MT_SAMPLER_EVENT_QUEUE;
    if (queued) {
        s->events[s->event_count].kind = kind;
        s->events[s->event_count].data = data;
        s->event_count++;
    }
    else {
        s->events_dropped++;
    }
    pthread_mutex_unlock(&s->lock);
    if (!queued) {
        free(kind);
        free(data);
    }
    wake(s);
    return queued;
}

/* ------------------------------------------------------------------ */
/* the thread                                                          */
/* ------------------------------------------------------------------ */

/* What the main thread handed over since the last round. */
typedef struct {
    mt_sampler_stop stop;
    mt_message_running run;
    long long budget, trips, cells;
    mt_cell_record last;
    mt_peak_composition last_peak;
    char last_first_line[MT_FIRST_LINE_BYTES];
    int have_last, last_pending, last_has_peak;
    mt_sampler_event events[MT_SAMPLER_EVENT_QUEUE];
    int event_count;
    long long events_dropped;
} handover;

static void
take_handover(mt_sampler *s, handover *h)
{
    pthread_mutex_lock(&s->lock);
    h->stop = s->stop;
    h->run = s->run;
    h->budget = s->budget;
    h->trips = s->trips;
    h->cells = s->cells;
    h->last = s->last;
    memcpy(h->last_first_line, s->last_first_line, sizeof h->last_first_line);
    h->last.first_line = h->last_first_line;
    h->last_has_peak = s->last_has_peak;
    if (s->last_has_peak) {
        h->last_peak = s->last_peak;
    }
    h->have_last = s->have_last;
    h->last_pending = s->last_pending;
    s->last_pending = 0;
    memcpy(h->events, s->events, (size_t)s->event_count * sizeof *s->events);
    h->event_count = s->event_count;
    s->event_count = 0;
    h->events_dropped = s->events_dropped;
    s->events_dropped = 0;
    pthread_mutex_unlock(&s->lock);
}

static double
unix_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Starts a message of kind in b; returns where its "seq" part starts. */
static size_t
open_message(mt_sampler *s, mt_message_buf *b, const char *kind)
{
    return mt_message_open(b, kind, s->kernel, s->pid, atomic_fetch_add(&s->seq, 1) + 1,
                           unix_seconds());
}

/* Two frames, never waiting: XPUB drops what a full subscriber cannot take.
 * The message is formatted once, whatever the number of subscribers. */
static void
send_message(mt_sampler *s, const char *kind, mt_message_buf *b)
{
    char topic[64];
    int n = snprintf(topic, sizeof topic, "memtamer.%s", kind);
    mt_message_close(b);
    if (b->failed) {
        atomic_store(&s->last_errno, ENOMEM);
    }
    else if (zmq_send(s->socket, topic, (size_t)n, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0 ||
             zmq_send(s->socket, b->data, b->len, ZMQ_DONTWAIT) < 0) {
        atomic_store(&s->last_errno, zmq_errno());
    }
    else {
        atomic_fetch_add(&s->sent, 1);
    }
    mt_message_reset(b);
}

/* Reads the process now; *cell_peak carries the running cell's peak across
 * samples (reset by the caller when a cell begins). */
static void
take_sample(mt_sampler *s, const mt_message_running *run, mt_message_sample *f,
            long long *cell_peak)
{
    long long hwm = -1;
    mt_probe_limit limit;
    mt_heap_reading python, numpy;
    mt_probe_children_use kids;
    /* Everything the descendants hold, not only what the cell added. */
    static const mt_probe_children_mark everyone;

    mt_probe_self self;
    if (mt_probe_read_self(&s->probe, &self) == 0) {
        f->rss = self.rss;
        hwm = self.hwm;
    }
    else {
        f->rss = mt_probe_rss(&s->probe);
    }
    if (mt_probe_read_limit(&s->probe, &limit) == 0) {
        f->limit = limit.limit;
        f->headroom = limit.available;
    }
    else {
        f->limit = f->headroom = -1;
    }
    mt_heap_read(&python, &numpy);
    f->heap = python.current;
    f->numpy = numpy.current;
    mt_probe_children_now(&s->probe, &everyone, &kids);
    f->children = kids.owned;
    f->children_count = kids.count;
    f->biggest_child_pid = kids.biggest_pid > 0 ? kids.biggest_pid : -1;
    f->biggest_child_private = kids.biggest_pid > 0 ? kids.biggest_owned : -1;
    f->swap = self.swap;
    f->major_faults = self.faults_known ? (long long)self.major_faults : -1;
    f->cell_peak = -1;
    if (run->running) {
        /* VmHWM was reset when the cell began only under the hwm method. */
        long long seen = run->method == MT_PEAK_HWM && hwm > f->rss ? hwm : f->rss;
        if (seen > *cell_peak) {
            *cell_peak = seen;
        }
        f->cell_peak = *cell_peak;
    }
}

/* New subscriptions (XPUB passes each one up as a message starting with 1,
 * unsubscriptions with 0); returns how many arrived. */
static int
read_subscriptions(mt_sampler *s)
{
    int arrived = 0;
    char frame[256];
    int n;
    while ((n = zmq_recv(s->socket, frame, sizeof frame, ZMQ_DONTWAIT)) > 0) {
        if (frame[0] == 1 && s->returning > 0) {
            s->returning--; /* back after a fork: it gets a snapshot all the same */
            arrived++;
        }
        else if (frame[0] == 1) {
            atomic_fetch_add(&s->subscriptions, 1);
            arrived++;
        }
        else if (frame[0] == 0) {
            atomic_fetch_sub(&s->subscriptions, 1);
        }
    }
    return arrived;
}

/* Sends the events handed over and keeps each, from its "seq" on, for
 * snapshots: {"seq":..,"time":..,"event":..,"data":..}. */
static void
send_events(mt_sampler *s, handover *h, mt_message_buf *b)
{
    for (int i = 0; i < h->event_count; i++) {
        size_t start = open_message(s, b, "event");
        mt_message_event_fields(b, h->events[i].kind, h->events[i].data);
        if (!b->failed) {
            char *entry = malloc(b->len - start + 2);
            if (entry != NULL) {
                entry[0] = '{';
                memcpy(entry + 1, b->data + start + 1, b->len - start - 1);
                memcpy(entry + b->len - start, "}", 2);
            }
            free(s->recent[s->recent_next]);
            s->recent[s->recent_next] = entry;
            s->recent_next = (s->recent_next + 1) % MT_SAMPLER_RECENT_EVENTS;
        }
        send_message(s, "event", b);
        free(h->events[i].kind);
        free(h->events[i].data);
    }
}

static void
send_snapshot(mt_sampler *s, const handover *h, const mt_message_sample *f, mt_message_buf *b)
{
    char *recent[MT_SAMPLER_RECENT_EVENTS];
    for (int i = 0; i < MT_SAMPLER_RECENT_EVENTS; i++) {
        recent[i] = s->recent[(s->recent_next + i) % MT_SAMPLER_RECENT_EVENTS];
    }
    open_message(s, b, "snapshot");
    mt_message_snapshot_fields(b, s->names, s->endpoint, f, &h->run, h->budget, h->trips, h->cells,
                               h->have_last ? &h->last : NULL,
                               h->last_has_peak ? &h->last_peak : NULL, recent,
                               MT_SAMPLER_RECENT_EVENTS);
    send_message(s, "snapshot", b);
}

/* Whether a cell began after the hand-over h was taken. */
static int
cell_began_since(mt_sampler *s, const handover *h)
{
    pthread_mutex_lock(&s->lock);
    int began = s->run.running &&
                (!h->run.running || s->run.started != h->run.started || s->run.cell != h->run.cell);
    pthread_mutex_unlock(&s->lock);
    return began;
}

static void *
sampler_main(void *arg)
{
    mt_sampler *s = arg;
    mt_message_buf b = {NULL, 0, 0, 0};
    handover h;
    mt_message_sample f;
    long long cell_peak = -1, cell_sampled = -2;
    double running_since = -1, next_sample = 0, sampled_at = -1;
    int snapshot = 0;
    uint64_t wakes;

    atomic_store(&s->tid, (int)gettid());
    /* Background work: woken at a cell's end, the thread must not preempt
     * the kernel's main thread on its CPU (Linux's nice is per thread). */
    (void)!setpriority(PRIO_PROCESS, (id_t)gettid(), SAMPLER_NICE);
    for (;;) {
        take_handover(s, &h);
        double now = mt_monotonic_seconds();
        if ((h.run.running && (h.run.started != running_since || h.run.cell != cell_sampled)) ||
            (!h.run.running && running_since >= 0)) {
            /* A cell began or ended: sample at the busy pace from the last
             * sample, so that a loop of short cells costs no more. */
            running_since = h.run.running ? h.run.started : -1;
            cell_sampled = h.run.cell;
            cell_peak = -1;
            double soon = sampled_at + MT_SAMPLER_BUSY_MS / 1000.0;
            if (soon < next_sample) {
                next_sample = soon;
            }
        }
        if (h.events_dropped) {
            atomic_fetch_add(&s->seq, h.events_dropped); /* the gap shows them */
        }
        send_events(s, &h, &b);
        if (h.last_pending && s->returning > 0 && now - s->resumed_at < RETURN_SECONDS) {
            /* Its subscribers are reconnecting after a fork: send it then. */
            pthread_mutex_lock(&s->lock);
            s->last_pending = 1;
            pthread_mutex_unlock(&s->lock);
            h.last_pending = 0;
            next_sample =
                now + RETURN_POLL_SECONDS < next_sample ? now + RETURN_POLL_SECONDS : next_sample;
        }
        if (h.last_pending) {
            open_message(s, &b, "cell");
            mt_message_cell_fields(&b, s->names, h.cells, h.trips, &h.last,
                                   h.last_has_peak ? &h.last_peak : NULL);
            send_message(s, "cell", &b);
        }
        if (h.stop) {
            break; /* what was handed over is out (and freed): say bye */
        }
        /* Nobody subscribes: nothing to read or say until somebody does. */
        int listened = subscribed(s) || s->returning > 0;
        if (snapshot || (listened && now >= next_sample)) {
            take_sample(s, &h.run, &f, &cell_peak);
            open_message(s, &b, "sample");
            mt_message_sample_fields(&b, s->names, &f, &h.run, h.budget, h.trips, h.cells);
            send_message(s, "sample", &b);
            sampled_at = now;
            next_sample = now + (h.run.running ? MT_SAMPLER_BUSY_MS : MT_SAMPLER_IDLE_MS) / 1000.0;
        }
        if (snapshot) {
            /* The state a late subscriber would otherwise wait for. */
            send_snapshot(s, &h, &f, &b);
            snapshot = 0;
        }

        long wait_ms = (long)((next_sample - mt_monotonic_seconds()) * 1000.0) + 1;
        if (wait_ms < 0) {
            wait_ms = 0;
        }
        if (!listened) {
            wait_ms = -1; /* until a subscription, a hand-over or a stop */
        }
        int busy = listened && wait_ms <= MT_SAMPLER_BUSY_MS + 1;
        atomic_store(&s->busy_pace, busy);
        if (listened && !busy && cell_began_since(s, &h)) {
            /* It began while busy_pace still said busy, so nobody woke us. */
            continue;
        }
        zmq_pollitem_t items[2] = {
            {s->socket, 0, ZMQ_POLLIN, 0},
            {NULL, s->wake_fd, ZMQ_POLLIN, 0},
        };
        if (zmq_poll(items, 2, wait_ms) < 0) {
            atomic_store(&s->last_errno, zmq_errno());
            continue;
        }
        if (items[1].revents & ZMQ_POLLIN) {
            (void)!read(s->wake_fd, &wakes, sizeof wakes);
        }
        if (items[0].revents & ZMQ_POLLIN) {
            snapshot = read_subscriptions(s) > 0;
        }
    }
    if (h.stop == MT_SAMPLER_STOP_FOR_GOOD) { /* a pause for a fork is no goodbye */
        open_message(s, &b, "bye");
        send_message(s, "bye", &b);
    }
    mt_message_free(&b);
    zmq_close(s->socket); /* ZMQ_LINGER is 0: nothing waits for a subscriber */
    s->socket = NULL;
    return NULL;
}

int
mt_sampler_start(mt_sampler *s)
{
    s->returning = atomic_load(&s->subscriptions); /* they reconnect by themselves */
    s->resumed_at = mt_monotonic_seconds();
    s->stop = MT_SAMPLER_RUN;
    /* Signals are the main thread's business (the guard's, SIGINT): the
     * thread starts with all of them blocked. */
    sigset_t all, previous;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &previous);
    int err = pthread_create(&s->thread, NULL, sampler_main, s);
    pthread_sigmask(SIG_SETMASK, &previous, NULL);
    return err;
}

void
mt_sampler_join(mt_sampler *s, mt_sampler_stop how)
{
    pthread_mutex_lock(&s->lock);
    s->stop = how;
    pthread_mutex_unlock(&s->lock);
    wake(s);
    pthread_join(s->thread, NULL);
    mt_worker_wait_thread_gone(atomic_load(&s->tid));
}
