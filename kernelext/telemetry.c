/* telemetry: the ZeroMQ publisher and its sampler thread (telemetry.h). */
#define _GNU_SOURCE
#include "memtamer/memtamer.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <zmq.h>

#include "memtamer/guard.h"
#include "memtamer/heap.h"
#include "memtamer/peaks.h"
#include "memtamer/postmortem.h"
#include "memtamer/process.h"
#include "memtamer/telemetry.h"

enum { STOP_FOR_GOOD = 1, STOP_FOR_FORK = 2 };
/* After a pause for a fork, a cell record waits up to this long, looking
 * this often, for its subscribers to reconnect. */
#define RETURN_SECONDS 1.0
#define RETURN_POLL_SECONDS 0.02

#define ENDPOINT_MAX 512
/* What a publisher binds: its discovery record names one of these. */
static const char *const endpoint_schemes[] = {"ipc://", "tcp://"};
#define KERNEL_ID_MAX 128
/* A CurveZMQ key in Z85 text, and with its NUL. */
#define CURVE_KEY_CHARS 40
#define CURVE_KEY_SIZE (CURVE_KEY_CHARS + 1)
/* The sampler thread's nice value. */
#define SAMPLER_NICE 19
/* Events waiting for the sampler; more are dropped (and counted in seq). */
#define EVENT_QUEUE 64
/* The last events, repeated in snapshots: a post-mortem finding is
 * published while the kernel loads, before any watcher can be there. */
#define RECENT_EVENTS 8

typedef struct {
    int running;
    long long cell;
    double started;
    long long rss_before;
    mt_peak_method method;
    char first_line[MT_FIRST_LINE_BYTES];
} running_cell;

typedef struct {
    char *kind; /* malloc'd, with the JSON of its data */
    char *data;
} queued_event;

/* From PyMem_RawMalloc: the sampler uses it without the GIL. */
struct mt_telemetry {
    pid_t pid; /* the process that owns the context; a forked child has none */
    void *context, *socket;
    int wake_fd;
    pthread_t thread;
    int names;
    char endpoint[ENDPOINT_MAX];
    char ipc_path[ENDPOINT_MAX]; /* the socket file, "" for tcp */
    char kernel[KERNEL_ID_MAX];
    /* The CurveZMQ server's keys (Z85), "" when messages go in the clear. */
    char curve_secret[CURVE_KEY_SIZE], curve_public[CURVE_KEY_SIZE];

    int sampling;        /* the sampler runs (main thread only) */
    int paused_for_fork; /* closed by mt_telemetry_fork_pause (main thread only) */

    /* lock guards what follows, up to the atomics. */
    pthread_mutex_t lock;
    int stop; /* 0, or why the sampler is to stop: STOP_FOR_GOOD or STOP_FOR_FORK */
    running_cell run;
    long long budget, trips, cells;
    mt_cell_record last; /* the last cell's record, for snapshots */
    /* Its peak composition, copied: the cell log may free its own before
     * the sampler sends it (last.peak is never read here). */
    mt_peak_composition last_peak;
    int have_last, last_pending, last_has_peak;
    queued_event events[EVENT_QUEUE];
    int event_count;
    long long events_dropped;

    _Atomic long long subscriptions, sent, seq;
    /* Subscriptions a pause for a fork closed, counted still: their
     * subscribers reconnect, and their first subscription is no new one.
     * Only the sampler touches it while it runs. */
    long long returning;
    double resumed_at;      /* when the pause ended: cell records wait a moment for them */
    _Atomic int last_errno; /* of the last failed send, 0 if none */
    _Atomic int tid;        /* the sampler's, for measuring its CPU time */
    _Atomic int busy_pace;  /* the sampler already samples at the busy pace */

    /* The sampler's alone. */
    mt_probe probe;
};

/* ------------------------------------------------------------------ */
/* libzmq errors                                                       */
/* ------------------------------------------------------------------ */

/* The one translator of libzmq's errors (zmq_errno) into Python's:
 * OSError(errno, "<what>: <libzmq's message>"). */
static PyObject *
zmq_error(const char *what, int err)
{
    MT_ASSERT_GIL();
    PyObject *args =
        Py_BuildValue("(iN)", err, PyUnicode_FromFormat("%s: %s", what, zmq_strerror(err)));
    if (args != NULL) {
        PyErr_SetObject(PyExc_OSError, args);
        Py_DECREF(args);
    }
    return NULL;
}

/* ------------------------------------------------------------------ */
/* JSON, written without the GIL                                        */
/* ------------------------------------------------------------------ */

typedef struct {
    char *data; /* malloc'd */
    size_t len, cap;
    int failed;
} json_buf;

static void
jb_append(json_buf *b, const char *s, size_t n)
{
    if (b->failed) {
        return;
    }
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 512;
        while (b->len + n + 1 > cap) {
            cap *= 2;
        }
        char *p = realloc(b->data, cap);
        if (p == NULL) {
            b->failed = 1;
            return;
        }
        b->data = p;
        b->cap = cap;
    }
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
}

/* A string literal, its length counted by the compiler. */
#define jb_literal(b, text) jb_append((b), (text), sizeof(text) - 1)

static void jb_printf(json_buf *b, const char *format, ...) __attribute__((format(printf, 2, 3)));

static void
jb_printf(json_buf *b, const char *format, ...)
{
    char text[256];
    va_list ap;
    va_start(ap, format);
    int n = vsnprintf(text, sizeof text, format, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof text) {
        b->failed = 1;
        return;
    }
    jb_append(b, text, (size_t)n);
}

static void
jb_string(json_buf *b, const char *s)
{
    size_t n = strlen(s); /* whole UTF-8: cell.c cuts by code points */
    jb_literal(b, "\"");
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            char esc[2] = {'\\', (char)c};
            jb_append(b, esc, 2);
        }
        else if (c < 0x20) {
            jb_printf(b, "\\u%04x", c);
        }
        else {
            jb_append(b, (const char *)&s[i], 1);
        }
    }
    jb_literal(b, "\"");
}

/* ,"key":value where a negative size is null (unavailable). */
static void
jb_size(json_buf *b, const char *key, long long bytes)
{
    if (bytes < 0) {
        jb_printf(b, ",\"%s\":null", key);
    }
    else {
        jb_printf(b, ",\"%s\":%lld", key, bytes);
    }
}

/* ------------------------------------------------------------------ */
/* the message schema                                                  */
/* ------------------------------------------------------------------ */

/* Every field the writers below put in a message, with its JSON type:
 * "int", "number", "string", "bool", "object", "array", or the name of an
 * object below; "?" after it: or null.  Subscribers validate what they read
 * against this (_core.telemetry_protocol(), telemetry.py); a test holds the
 * writers to it. */
typedef struct {
    const char *name, *type;
} field;

static const field common_fields[] = {
    {"kind", "string"}, {"kernel", "string"}, {"pid", "int"},
    {"seq", "int"},     {"time", "number"},   {NULL, NULL},
};
static const field sample_fields[] = {
    {"rss", "int?"},
    {"limit", "int?"},
    {"headroom", "int?"},
    {"budget", "int?"},
    {"heap_bytes", "int"},
    {"numpy_bytes", "int"},
    {"children_private", "int?"},
    {"children", "int"},
    {"biggest_child_pid", "int?"},
    {"biggest_child_private", "int?"},
    {"swap", "int?"},
    {"major_faults", "int?"},
    {"cells", "int"},
    {"trips", "int"},
    {"running", "running?"},
    {NULL, NULL},
};
static const field cell_fields[] = {
    {"cells", "int"},
    {"trips", "int"},
    {"record", "record"},
    {NULL, NULL},
};
static const field event_fields[] = {
    {"event", "string"},
    {"data", "object"},
    {NULL, NULL},
};
static const field snapshot_fields[] = {
    {"names", "bool"},          {"endpoint", "string"}, {"last_cell", "record?"},
    {"recent_events", "array"}, {NULL, NULL},
};
static const field no_fields[] = {{NULL, NULL}};

/* A cell running now (write_sample), and a cell's record (write_record). */
static const field running_fields[] = {
    {"cell", "int?"},     {"first_line", "string?"},  {"seconds", "number"}, {"rss_before", "int?"},
    {"peak_rss", "int?"}, {"peak_increment", "int?"}, {NULL, NULL},
};
static const field record_fields[] = {
    {"cell", "int?"},
    {"first_line", "string?"},
    {"rss_before", "int?"},
    {"rss_after", "int?"},
    {"retained", "int?"},
    {"peak_rss", "int?"},
    {"peak_increment", "int?"},
    {"peak_method", "string"},
    {"heap_peak_increment", "int?"},
    {"numpy_peak_increment", "int?"},
    {"arrow_peak_increment", "int?"},
    {"arrow_retained", "int?"},
    {"children_peak", "int?"},
    {"children_rss_peak", "int?"},
    {"children_method", "string?"},
    {"swap_after", "int?"},
    {"swapped", "int?"},
    {"major_faults", "int?"},
    {"seconds", "number"},
    {"status", "string"},
    {"peak_composition", "object?"},
    {NULL, NULL},
};

/* Each kind's fields: the common ones, then its parts. */
static const struct {
    const char *kind;
    const field *parts[2];
} message_kinds[] = {
    {"sample", {sample_fields, no_fields}}, {"cell", {cell_fields, no_fields}},
    {"event", {event_fields, no_fields}},   {"snapshot", {sample_fields, snapshot_fields}},
    {"bye", {no_fields, no_fields}},
};
static const struct {
    const char *name;
    const field *fields;
} message_objects[] = {
    {"running", running_fields},
    {"record", record_fields},
};

/* Adds {name: type} of each field in the NULL-ended list to dict. */
static int
add_fields(PyObject *dict, const field *fields)
{
    for (const field *f = fields; f->name != NULL; f++) {
        if (mt_set(dict, f->name, PyUnicode_FromString(f->type)) < 0) {
            return -1;
        }
    }
    return 0;
}

PyDoc_STRVAR(mt_telemetry_protocol__doc__,
             "telemetry_protocol() -> dict: what subscribers may expect: kinds ({kind: {field: "
             "type}}, the common fields included), objects ({name: {field: type}} for types "
             "that name one), schemes (of the endpoints a publisher binds), busy_ms and idle_ms "
             "(the sampling intervals), near_percent (RSS within this percentage of the budget "
             "or the limit is near it, as post-mortems judge). Types: int, number, "
             "string, bool, object, array or an object's name; a trailing ? admits null.");
PyObject *
mt_telemetry_protocol(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(unused))
{
    PyObject *result = PyDict_New(), *kinds = PyDict_New(), *objects = PyDict_New();
    PyObject *fields = NULL, *schemes = NULL;
    if (result == NULL || kinds == NULL || objects == NULL) {
        goto error;
    }
    size_t nschemes = sizeof endpoint_schemes / sizeof *endpoint_schemes;
    if ((schemes = PyTuple_New((Py_ssize_t)nschemes)) == NULL) {
        goto error;
    }
    for (size_t i = 0; i < nschemes; i++) {
        PyObject *scheme = PyUnicode_FromString(endpoint_schemes[i]);
        if (scheme == NULL) {
            goto error;
        }
        PyTuple_SET_ITEM(schemes, (Py_ssize_t)i, scheme);
    }
    for (size_t i = 0; i < sizeof message_kinds / sizeof *message_kinds; i++) {
        if ((fields = PyDict_New()) == NULL || add_fields(fields, common_fields) < 0 ||
            add_fields(fields, message_kinds[i].parts[0]) < 0 ||
            add_fields(fields, message_kinds[i].parts[1]) < 0 ||
            PyDict_SetItemString(kinds, message_kinds[i].kind, fields) < 0) {
            goto error;
        }
        Py_CLEAR(fields);
    }
    for (size_t i = 0; i < sizeof message_objects / sizeof *message_objects; i++) {
        if ((fields = PyDict_New()) == NULL || add_fields(fields, message_objects[i].fields) < 0 ||
            PyDict_SetItemString(objects, message_objects[i].name, fields) < 0) {
            goto error;
        }
        Py_CLEAR(fields);
    }
    if (mt_set(result, "kinds", Py_NewRef(kinds)) < 0 ||
        mt_set(result, "objects", Py_NewRef(objects)) < 0 ||
        mt_set(result, "schemes", Py_NewRef(schemes)) < 0 ||
        mt_set(result, "busy_ms", PyLong_FromLong(MT_TELEMETRY_BUSY_MS)) < 0 ||
        mt_set(result, "idle_ms", PyLong_FromLong(MT_TELEMETRY_IDLE_MS)) < 0 ||
        mt_set(result, "near_percent", PyLong_FromLong(MT_POSTMORTEM_NEAR_PERCENT)) < 0) {
        goto error;
    }
    Py_DECREF(kinds);
    Py_DECREF(objects);
    Py_DECREF(schemes);
    return result;
error:
    Py_XDECREF(fields);
    Py_XDECREF(schemes);
    Py_XDECREF(kinds);
    Py_XDECREF(objects);
    Py_XDECREF(result);
    return NULL;
}

/* ------------------------------------------------------------------ */
/* what the sampler publishes                                          */
/* ------------------------------------------------------------------ */

typedef struct {
    long long rss, limit, headroom, heap, numpy, children;
    /* How many descendants live, and the one that owns most (0 and -1: none). */
    long long children_count, biggest_child_pid, biggest_child_private;
    /* The kernel's bytes in swap and its major faults so far (a subscriber
     * sees thrashing in their rate), -1 where /proc does not say. */
    long long swap, major_faults;
    long long cell_peak; /* the running cell's peak RSS so far, -1 between cells */
} sample_figures;

static double
unix_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* {"kind":...,"kernel":...,"pid":...,"seq":...,"time":... (unclosed);
 * returns the length of its "seq":...,"time":... part, which ends it. */
static size_t
open_message(mt_telemetry *t, json_buf *b, const char *kind)
{
    jb_printf(b, "{\"kind\":\"%s\",\"kernel\":", kind);
    jb_string(b, t->kernel);
    jb_printf(b, ",\"pid\":%d", (int)t->pid);
    size_t start = b->len;
    jb_printf(b, ",\"seq\":%lld,\"time\":%.3f", atomic_fetch_add(&t->seq, 1) + 1, unix_seconds());
    return b->len - start;
}

/* Two frames, never waiting: XPUB drops what a full subscriber cannot take. */
static void
send_message(mt_telemetry *t, const char *kind, json_buf *b)
{
    char topic[64];
    int n = snprintf(topic, sizeof topic, "memtamer.%s", kind);
    jb_literal(b, "}");
    if (b->failed) {
        atomic_store(&t->last_errno, ENOMEM);
    }
    else if (zmq_send(t->socket, topic, (size_t)n, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0 ||
             zmq_send(t->socket, b->data, b->len, ZMQ_DONTWAIT) < 0) {
        atomic_store(&t->last_errno, zmq_errno());
    }
    else {
        atomic_fetch_add(&t->sent, 1);
    }
    b->len = 0;
    b->failed = 0;
}

/* Code of the user's (a cell's first line quotes variable names): null
 * when names are off. */
static void
jb_code(json_buf *b, int names, const char *code)
{
    if (names) {
        jb_string(b, code);
    }
    else {
        jb_literal(b, "null");
    }
}

/* {"cell":N,"first_line":"..." (the object stays open): N null for a cell
 * not stored in history. */
static void
write_cell_head(json_buf *b, int names, long long cell, const char *first_line)
{
    jb_literal(b, "{\"cell\":");
    if (cell < 0) {
        jb_literal(b, "null");
    }
    else {
        jb_printf(b, "%lld", cell);
    }
    jb_literal(b, ",\"first_line\":");
    jb_code(b, names, first_line);
}

/* ,"key":n where 0 (none) is null. */
static void
jb_line(json_buf *b, const char *key, int line)
{
    if (line > 0) {
        jb_printf(b, ",\"%s\":%d", key, line);
    }
    else {
        jb_printf(b, ",\"%s\":null", key);
    }
}

/* ,"peak_composition":{...} as peaks.c gives it to report(), or null. */
static void
write_composition(json_buf *b, int names, const mt_peak_composition *c)
{
    if (c == NULL) {
        jb_literal(b, ",\"peak_composition\":null");
        return;
    }
    long long attributed = 0;
    jb_printf(b, ",\"peak_composition\":{\"block_threshold\":%lld,\"at\":%lld", c->block_threshold,
              c->at);
    jb_literal(b, ",\"groups\":[");
    for (int i = 0; i < c->ngroups; i++) {
        const mt_peak_group *g = &c->groups[i];
        attributed += g->bytes;
        jb_printf(b, "%s{\"origin\":", i ? "," : "");
        jb_string(b, mt_peaks_origin_name(g->origin));
        jb_line(b, "line", g->line);
        const char *texts[] = {"text", g->text, "function", g->function, "file", g->file};
        for (int k = 0; k < 6; k += 2) {
            jb_printf(b, ",\"%s\":", texts[k]);
            jb_code(b, names && texts[k + 1][0], texts[k + 1]);
        }
        jb_line(b, "function_line", g->function_line);
        jb_printf(b, ",\"blocks\":%d,\"bytes\":%lld,\"kept\":%lld,\"temporary\":%lld}", g->blocks,
                  g->bytes, g->kept, g->bytes - g->kept);
    }
    jb_printf(b, "],\"attributed\":%lld,\"untracked\":%lld}", attributed, c->untracked);
}

static void
write_record(json_buf *b, int names, const mt_cell_record *r, const mt_peak_composition *peak)
{
    int known = r->rss_before >= 0 && r->rss_after >= 0;
    int peaked = r->rss_before >= 0 && r->peak_rss >= 0;
    write_cell_head(b, names, r->cell, r->first_line);
    jb_size(b, "rss_before", r->rss_before);
    jb_size(b, "rss_after", r->rss_after);
    if (known) {
        jb_printf(b, ",\"retained\":%lld", r->rss_after - r->rss_before);
    }
    else {
        jb_literal(b, ",\"retained\":null");
    }
    jb_size(b, "peak_rss", r->peak_rss);
    if (peaked) {
        jb_printf(b, ",\"peak_increment\":%lld", r->peak_rss - r->rss_before);
    }
    else {
        jb_literal(b, ",\"peak_increment\":null");
    }
    jb_printf(b, ",\"peak_method\":\"%s\"", mt_process_method_name(r->peak_method));
    jb_size(b, "heap_peak_increment", r->heap_peak_increment);
    jb_size(b, "numpy_peak_increment", r->numpy_peak_increment);
    if (r->arrow_counted) {
        jb_size(b, "arrow_peak_increment", r->arrow_peak_increment);
        jb_printf(b, ",\"arrow_retained\":%lld", r->arrow_retained);
    }
    else {
        jb_literal(b, ",\"arrow_peak_increment\":null,\"arrow_retained\":null");
    }
    jb_size(b, "children_peak", r->children_peak);
    jb_size(b, "children_rss_peak", r->children_rss_peak);
    jb_literal(b, ",\"children_method\":");
    if (r->children_method) {
        jb_string(b, mt_cell_children_method_name(r->children_method));
    }
    else {
        jb_literal(b, "null");
    }
    jb_size(b, "swap_after", r->swap_after);
    if (r->swap_after >= 0) {
        jb_printf(b, ",\"swapped\":%lld,\"major_faults\":%lld", r->swap_after - r->swap_before,
                  r->major_faults);
    }
    else {
        jb_literal(b, ",\"swapped\":null,\"major_faults\":null");
    }
    jb_printf(b, ",\"seconds\":%.6f,\"status\":\"%s\"", r->seconds, r->failed ? "error" : "ok");
    write_composition(b, names, peak);
    jb_literal(b, "}");
}

/* The sample's figures and the state behind them, as fields of an open
 * message. */
static void
write_sample(json_buf *b, int names, const sample_figures *f, const running_cell *run,
             long long budget, long long trips, long long cells)
{
    jb_size(b, "rss", f->rss);
    jb_size(b, "limit", f->limit);
    jb_size(b, "headroom", f->headroom);
    jb_size(b, "budget", budget);
    jb_printf(b, ",\"heap_bytes\":%lld,\"numpy_bytes\":%lld", f->heap, f->numpy);
    jb_size(b, "children_private", f->children);
    jb_printf(b, ",\"children\":%lld", f->children_count);
    jb_size(b, "biggest_child_pid", f->biggest_child_pid);
    jb_size(b, "biggest_child_private", f->biggest_child_private);
    jb_size(b, "swap", f->swap);
    jb_size(b, "major_faults", f->major_faults);
    jb_printf(b, ",\"cells\":%lld,\"trips\":%lld,\"running\":", cells, trips);
    if (!run->running) {
        jb_literal(b, "null");
        return;
    }
    write_cell_head(b, names, run->cell, run->first_line);
    jb_printf(b, ",\"seconds\":%.3f", mt_monotonic_seconds() - run->started);
    jb_size(b, "rss_before", run->rss_before);
    jb_size(b, "peak_rss", f->cell_peak);
    jb_size(b, "peak_increment",
            f->cell_peak >= 0 && run->rss_before >= 0 ? f->cell_peak - run->rss_before : -1);
    jb_literal(b, "}");
}

/* Reads the process now; *cell_peak carries the running cell's peak across
 * samples (reset by the caller when a cell begins). */
static void
take_sample(mt_telemetry *t, const running_cell *run, sample_figures *f, long long *cell_peak)
{
    long long hwm = -1;
    mt_probe_limit limit;
    mt_heap_reading python, numpy;
    mt_probe_children_use kids;
    /* Everything the descendants hold, not only what the cell added. */
    static const mt_probe_children_mark everyone;

    if (mt_probe_status(&t->probe, &f->rss, &hwm) < 0) {
        f->rss = mt_probe_rss(&t->probe);
    }
    if (mt_probe_read_limit(&t->probe, &limit) == 0) {
        f->limit = limit.limit;
        f->headroom = limit.available;
    }
    else {
        f->limit = f->headroom = -1;
    }
    mt_heap_read(&python, &numpy);
    f->heap = python.current;
    f->numpy = numpy.current;
    mt_probe_children_now(&t->probe, &everyone, &kids);
    f->children = kids.owned;
    f->children_count = kids.count;
    f->biggest_child_pid = kids.biggest_pid > 0 ? kids.biggest_pid : -1;
    f->biggest_child_private = kids.biggest_pid > 0 ? kids.biggest_owned : -1;
    unsigned long long faults;
    if (mt_probe_swap_self(&t->probe, &f->swap, &faults) == 0) {
        f->major_faults = (long long)faults;
    }
    else {
        f->swap = f->major_faults = -1;
    }
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

/* ------------------------------------------------------------------ */
/* the sampler thread: it alone uses the socket                        */
/* ------------------------------------------------------------------ */

/* What the main thread handed over since the last round. */
typedef struct {
    int stop;
    running_cell run;
    long long budget, trips, cells;
    mt_cell_record last;
    mt_peak_composition last_peak;
    int have_last, last_pending, last_has_peak;
    queued_event events[EVENT_QUEUE];
    int event_count;
    long long events_dropped;
} handover;

static void
take_handover(mt_telemetry *t, handover *h)
{
    pthread_mutex_lock(&t->lock);
    h->stop = t->stop;
    h->run = t->run;
    h->budget = t->budget;
    h->trips = t->trips;
    h->cells = t->cells;
    h->last = t->last;
    h->last_has_peak = t->last_has_peak;
    if (t->last_has_peak) {
        h->last_peak = t->last_peak;
    }
    h->have_last = t->have_last;
    h->last_pending = t->last_pending;
    t->last_pending = 0;
    memcpy(h->events, t->events, sizeof h->events);
    h->event_count = t->event_count;
    t->event_count = 0;
    h->events_dropped = t->events_dropped;
    t->events_dropped = 0;
    pthread_mutex_unlock(&t->lock);
}

/* New subscriptions (XPUB passes each one up as a message starting with 1,
 * unsubscriptions with 0); returns how many arrived. */
static int
read_subscriptions(mt_telemetry *t)
{
    int arrived = 0;
    char frame[256];
    int n;
    while ((n = zmq_recv(t->socket, frame, sizeof frame, ZMQ_DONTWAIT)) > 0) {
        if (frame[0] == 1 && t->returning > 0) {
            t->returning--; /* back after a fork: it gets a snapshot all the same */
            arrived++;
        }
        else if (frame[0] == 1) {
            atomic_fetch_add(&t->subscriptions, 1);
            arrived++;
        }
        else if (frame[0] == 0) {
            atomic_fetch_sub(&t->subscriptions, 1);
        }
    }
    return arrived;
}

static void *
sampler_main(void *arg)
{
    mt_telemetry *t = arg;
    json_buf b = {NULL, 0, 0, 0};
    handover h;
    sample_figures f;
    long long cell_peak = -1, cell_sampled = -2;
    double running_since = -1, next_sample = 0, sampled_at = -1;
    int snapshot = 0, recent_next = 0;
    char *recent[RECENT_EVENTS] = {NULL}; /* malloc'd, oldest at recent_next */
    uint64_t wakes;

    atomic_store(&t->tid, (int)gettid());
    /* Background work: woken at a cell's end, the sampler must not preempt
     * the kernel's main thread on its CPU (Linux's nice is per thread). */
    (void)!setpriority(PRIO_PROCESS, (id_t)gettid(), SAMPLER_NICE);
    for (;;) {
        take_handover(t, &h);
        double now = mt_monotonic_seconds();
        if ((h.run.running && (h.run.started != running_since || h.run.cell != cell_sampled)) ||
            (!h.run.running && running_since >= 0)) {
            /* A cell began or ended: sample at the busy pace from the last
             * sample, so that a loop of short cells costs no more. */
            running_since = h.run.running ? h.run.started : -1;
            cell_sampled = h.run.cell;
            cell_peak = -1;
            double soon = sampled_at + MT_TELEMETRY_BUSY_MS / 1000.0;
            if (soon < next_sample) {
                next_sample = soon;
            }
        }
        if (h.events_dropped) {
            atomic_fetch_add(&t->seq, h.events_dropped); /* the gap shows them */
        }
        for (int i = 0; i < h.event_count; i++) {
            size_t stamp = open_message(t, &b, "event");
            size_t start = b.len - stamp;
            jb_literal(&b, ",\"event\":");
            jb_string(&b, h.events[i].kind);
            jb_literal(&b, ",\"data\":");
            jb_append(&b, h.events[i].data, strlen(h.events[i].data));
            if (!b.failed) {
                /* {"seq":..,"time":..,"event":..,"data":..} for snapshots */
                char *entry = malloc(b.len - start + 2);
                if (entry != NULL) {
                    entry[0] = '{';
                    memcpy(entry + 1, b.data + start + 1, b.len - start - 1);
                    memcpy(entry + b.len - start, "}", 2);
                }
                free(recent[recent_next]);
                recent[recent_next] = entry;
                recent_next = (recent_next + 1) % RECENT_EVENTS;
            }
            send_message(t, "event", &b);
            free(h.events[i].kind);
            free(h.events[i].data);
        }
        if (h.last_pending && t->returning > 0 && now - t->resumed_at < RETURN_SECONDS) {
            /* Its subscribers are reconnecting after a fork: send it then. */
            pthread_mutex_lock(&t->lock);
            t->last_pending = 1;
            pthread_mutex_unlock(&t->lock);
            h.last_pending = 0;
            next_sample =
                now + RETURN_POLL_SECONDS < next_sample ? now + RETURN_POLL_SECONDS : next_sample;
        }
        if (h.last_pending) {
            open_message(t, &b, "cell");
            jb_printf(&b, ",\"cells\":%lld,\"trips\":%lld,\"record\":", h.cells, h.trips);
            write_record(&b, t->names, &h.last, h.last_has_peak ? &h.last_peak : NULL);
            send_message(t, "cell", &b);
        }
        if (h.stop) {
            break; /* what was handed over is out (and freed): say bye */
        }
        if (snapshot || now >= next_sample) {
            take_sample(t, &h.run, &f, &cell_peak);
            open_message(t, &b, "sample");
            write_sample(&b, t->names, &f, &h.run, h.budget, h.trips, h.cells);
            send_message(t, "sample", &b);
            sampled_at = now;
            next_sample =
                now + (h.run.running ? MT_TELEMETRY_BUSY_MS : MT_TELEMETRY_IDLE_MS) / 1000.0;
        }
        if (snapshot) {
            /* The state a late subscriber would otherwise wait for. */
            open_message(t, &b, "snapshot");
            jb_printf(&b, ",\"names\":%s,\"endpoint\":", t->names ? "true" : "false");
            jb_string(&b, t->endpoint);
            write_sample(&b, t->names, &f, &h.run, h.budget, h.trips, h.cells);
            jb_literal(&b, ",\"last_cell\":");
            if (h.have_last) {
                write_record(&b, t->names, &h.last, h.last_has_peak ? &h.last_peak : NULL);
            }
            else {
                jb_literal(&b, "null");
            }
            jb_literal(&b, ",\"recent_events\":[");
            const char *comma = "";
            for (int i = 0; i < RECENT_EVENTS; i++) {
                const char *entry = recent[(recent_next + i) % RECENT_EVENTS];
                if (entry != NULL) {
                    jb_printf(&b, "%s", comma);
                    jb_append(&b, entry, strlen(entry));
                    comma = ",";
                }
            }
            jb_literal(&b, "]");
            send_message(t, "snapshot", &b);
            snapshot = 0;
        }

        long wait_ms = (long)((next_sample - mt_monotonic_seconds()) * 1000.0) + 1;
        atomic_store(&t->busy_pace, wait_ms <= MT_TELEMETRY_BUSY_MS + 1);
        zmq_pollitem_t items[2] = {
            {t->socket, 0, ZMQ_POLLIN, 0},
            {NULL, t->wake_fd, ZMQ_POLLIN, 0},
        };
        if (zmq_poll(items, 2, wait_ms > 0 ? wait_ms : 0) < 0) {
            atomic_store(&t->last_errno, zmq_errno());
            continue;
        }
        if (items[1].revents & ZMQ_POLLIN) {
            (void)!read(t->wake_fd, &wakes, sizeof wakes);
        }
        if (items[0].revents & ZMQ_POLLIN) {
            snapshot = read_subscriptions(t) > 0;
        }
    }
    if (h.stop == STOP_FOR_GOOD) { /* a pause for a fork is no goodbye */
        open_message(t, &b, "bye");
        send_message(t, "bye", &b);
    }
    free(b.data);
    for (int i = 0; i < RECENT_EVENTS; i++) {
        free(recent[i]);
    }
    zmq_close(t->socket); /* ZMQ_LINGER is 0: nothing waits for a subscriber */
    t->socket = NULL;
    return NULL;
}

static void
wake_sampler(mt_telemetry *t)
{
    uint64_t one = 1;
    (void)!write(t->wake_fd, &one, sizeof one);
}

/* ------------------------------------------------------------------ */
/* start and stop                                                      */
/* ------------------------------------------------------------------ */

/* The directory of an ipc socket: ours and private (0700). */
static int
private_directory(const char *path)
{
    char dir[ENDPOINT_MAX];
    struct stat st;
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash == NULL || slash == dir) {
        PyErr_Format(PyExc_ValueError,
                     "memtamer telemetry: the ipc endpoint needs an absolute path, got %s", path);
        return -1;
    }
    *slash = '\0';
    if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
        PyErr_SetFromErrnoWithFilename(PyExc_OSError, dir);
        return -1;
    }
    if (lstat(dir, &st) < 0) {
        PyErr_SetFromErrnoWithFilename(PyExc_OSError, dir);
        return -1;
    }
    if (!S_ISDIR(st.st_mode) || st.st_uid != geteuid()) {
        PyErr_Format(PyExc_PermissionError,
                     "memtamer telemetry: %s is not a directory of this user; "
                     "set MEMTAMER_TELEMETRY_ENDPOINT to another place",
                     dir);
        return -1;
    }
    if ((st.st_mode & 0777) != 0700 && chmod(dir, 0700) < 0) {
        PyErr_SetFromErrnoWithFilename(PyExc_OSError, dir);
        return -1;
    }
    return 0;
}

/* Makes path free for our socket: libzmq's bind removes whatever is there,
 * so only a socket a dead process left (nothing accepts on it) is removed;
 * anything else is refused: -1 with FileExistsError. */
static int
claim_socket_path(const char *path)
{
    struct stat st;
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (lstat(path, &st) < 0) {
        return 0;
    }
    int stale = 0;
    if (S_ISSOCK(st.st_mode) && strlen(path) < sizeof addr.sun_path) {
        memcpy(addr.sun_path, path, strlen(path) + 1);
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        stale = fd >= 0 && connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0 &&
                errno == ECONNREFUSED;
        if (fd >= 0) {
            close(fd);
        }
    }
    if (!stale || unlink(path) < 0) {
        PyErr_Format(PyExc_FileExistsError,
                     "memtamer telemetry: %s exists%s; give MEMTAMER_TELEMETRY_ENDPOINT a new path",
                     path, S_ISSOCK(st.st_mode) ? " and a process listens on it" : "");
        return -1;
    }
    return 0;
}

static int
set_int_option(void *socket, int option, int value)
{
    return zmq_setsockopt(socket, option, &value, sizeof value);
}

/* Opens t's context and socket on endpoint and starts the sampler (t's
 * state is kept across: a pause for a fork closes and reopens only this).
 * -1 with an exception; what was opened is closed by close_transport. */
static int
open_transport(mt_telemetry *t, const char *endpoint)
{
    int ipc = strncmp(endpoint, "ipc://", 6) == 0;
    if (ipc) {
        if (private_directory(endpoint + 6) < 0 || claim_socket_path(endpoint + 6) < 0) {
            return -1;
        }
    }
    if ((t->context = zmq_ctx_new()) == NULL) {
        zmq_error("zmq_ctx_new", zmq_errno());
        return -1;
    }
    if ((t->socket = zmq_socket(t->context, ZMQ_XPUB)) == NULL) {
        zmq_error("zmq_socket(XPUB)", zmq_errno());
        return -1;
    }
    size_t len = sizeof t->endpoint;
    if (set_int_option(t->socket, ZMQ_LINGER, 0) < 0 ||
        set_int_option(t->socket, ZMQ_SNDHWM, MT_TELEMETRY_SNDHWM) < 0 ||
        set_int_option(t->socket, ZMQ_XPUB_VERBOSER, 1) < 0 ||
        (t->curve_secret[0] &&
         (set_int_option(t->socket, ZMQ_CURVE_SERVER, 1) < 0 ||
          zmq_setsockopt(t->socket, ZMQ_CURVE_SECRETKEY, t->curve_secret, CURVE_KEY_CHARS) < 0))) {
        zmq_error("zmq_setsockopt", zmq_errno());
        return -1;
    }
    if (zmq_bind(t->socket, endpoint) < 0) {
        zmq_error(endpoint, zmq_errno());
        return -1;
    }
    if (ipc) { /* ours now: removed when we close */
        snprintf(t->ipc_path, sizeof t->ipc_path, "%s", endpoint + 6);
    }
    if (zmq_getsockopt(t->socket, ZMQ_LAST_ENDPOINT, t->endpoint, &len) < 0) {
        zmq_error("ZMQ_LAST_ENDPOINT", zmq_errno());
        return -1;
    }
    if (t->ipc_path[0] && chmod(t->ipc_path, 0600) < 0) {
        PyErr_SetFromErrnoWithFilename(PyExc_OSError, t->ipc_path);
        return -1;
    }
    t->returning = atomic_load(&t->subscriptions); /* they reconnect by themselves */
    t->resumed_at = mt_monotonic_seconds();
    t->stop = 0;
    /* Signals are the main thread's business (the guard's, SIGINT): the
     * sampler starts with all of them blocked. */
    sigset_t all, previous;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &previous);
    int err = pthread_create(&t->thread, NULL, sampler_main, t);
    pthread_sigmask(SIG_SETMASK, &previous, NULL);
    if (err != 0) {
        errno = err;
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    t->sampling = 1;
    return 0;
}

/* Stops the sampler (how: STOP_FOR_GOOD says bye, STOP_FOR_FORK does not)
 * and closes the socket, the context (and their threads) and the ipc file.
 * Never takes the GIL; touches no Python object. */
static void
close_transport(mt_telemetry *t, int how)
{
    if (t->sampling) {
        pthread_mutex_lock(&t->lock);
        t->stop = how;
        pthread_mutex_unlock(&t->lock);
        wake_sampler(t);
        pthread_join(t->thread, NULL);
        mt_worker_wait_thread_gone(atomic_load(&t->tid));
        t->sampling = 0;
    }
    else if (t->socket) {
        zmq_close(t->socket);
    }
    t->socket = NULL;
    if (t->context) {
        zmq_ctx_term(t->context); /* quick: every socket has ZMQ_LINGER 0 */
        t->context = NULL;
    }
    if (t->ipc_path[0]) {
        unlink(t->ipc_path);
        t->ipc_path[0] = '\0';
    }
}

/* Closes whatever of t was opened and frees it (owner process only): the
 * sampler, if running, says bye first (it never takes the GIL, so the
 * caller may hold it).  Touches no Python object. */
static void
telemetry_close(mt_telemetry *t)
{
    close_transport(t, STOP_FOR_GOOD);
    if (t->wake_fd >= 0) {
        close(t->wake_fd);
    }
    for (int i = 0; i < t->event_count; i++) {
        free(t->events[i].kind);
        free(t->events[i].data);
    }
    mt_probe_close(&t->probe);
    pthread_mutex_destroy(&t->lock);
    PyMem_RawFree(t);
}

/* The state's publisher, or NULL when off or inherited from a parent process
 * (which a forked child must neither use nor close: it leaks its copy). */
static mt_telemetry *
own_telemetry(mt_state *st)
{
    mt_telemetry *t = st->telemetry;
    if (t != NULL && t->pid != getpid()) {
        st->telemetry = t = NULL;
    }
    return t;
}

PyDoc_STRVAR(mt_telemetry_start__doc__,
             "telemetry_start(endpoint, kernel, names=True, curve_secret_key=None) -> the bound "
             "endpoint (a tcp port of 0 or * resolved): publish this kernel's memory on a ZeroMQ "
             "XPUB socket (stops a running publisher first). With curve_secret_key (Z85) only "
             "CurveZMQ clients that know the server's public key (telemetry_status) can "
             "subscribe; a tcp endpoint needs it, or names=False: any local user can reach it.");
PyObject *
mt_telemetry_start(PyObject *module, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"endpoint", "kernel", "names", "curve_secret_key", NULL};
    mt_state *st = mt_get_state(module);
    const char *endpoint, *kernel, *curve_secret = NULL;
    int names = 1;
    mt_telemetry *t = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "ss|pz:telemetry_start", keywords, &endpoint,
                                     &kernel, &names, &curve_secret)) {
        return NULL;
    }
    if (curve_secret != NULL && !zmq_has("curve")) {
        PyErr_SetString(PyExc_ValueError,
                        "memtamer telemetry: this libzmq was built without CurveZMQ; "
                        "unset MEMTAMER_TELEMETRY_CURVE_SECRET_KEY");
        return NULL;
    }
    char curve_public[CURVE_KEY_SIZE] = "";
    if (curve_secret != NULL && (strlen(curve_secret) != CURVE_KEY_CHARS ||
                                 zmq_curve_public(curve_public, curve_secret) < 0)) {
        PyErr_Format(PyExc_ValueError,
                     "memtamer telemetry: the CurveZMQ secret key must be %d characters of Z85 "
                     "(the second key of zmq.curve_keypair())",
                     CURVE_KEY_CHARS);
        return NULL;
    }
    if (strlen(endpoint) >= ENDPOINT_MAX || strlen(kernel) >= KERNEL_ID_MAX) {
        PyErr_Format(PyExc_ValueError,
                     "memtamer telemetry: endpoint or kernel id too long (limits %d and %d bytes)",
                     ENDPOINT_MAX - 1, KERNEL_ID_MAX - 1);
        return NULL;
    }
    int known_scheme = 0;
    for (size_t i = 0; i < sizeof endpoint_schemes / sizeof *endpoint_schemes; i++) {
        known_scheme |= strncmp(endpoint, endpoint_schemes[i], strlen(endpoint_schemes[i])) == 0;
    }
    if (!known_scheme) {
        PyErr_Format(PyExc_ValueError,
                     "memtamer telemetry: endpoint %s: use ipc://<path> or tcp://<host>:<port>",
                     endpoint);
        return NULL;
    }
    /* An ipc socket is this user's alone (0600 in a 0700 directory); any
     * local user can subscribe to a tcp port. */
    if (strncmp(endpoint, "tcp://", 6) == 0 && names && curve_secret == NULL) {
        PyErr_Format(PyExc_PermissionError,
                     "memtamer telemetry: any local user can subscribe to %s, and its messages "
                     "would carry variable names and code; set MEMTAMER_TELEMETRY_NAMES=0, or a "
                     "CurveZMQ key in MEMTAMER_TELEMETRY_CURVE_SECRET_KEY, or leave "
                     "MEMTAMER_TELEMETRY_ENDPOINT unset for a private ipc socket",
                     endpoint);
        return NULL;
    }
    if ((t = own_telemetry(st)) != NULL) {
        st->telemetry = NULL;
        telemetry_close(t);
    }
    t = PyMem_RawCalloc(1, sizeof *t);
    if (t == NULL) {
        return PyErr_NoMemory();
    }
    t->pid = getpid();
    t->names = names;
    t->wake_fd = -1;
    t->run.cell = -1;
    t->budget = -1;
    snprintf(t->kernel, sizeof t->kernel, "%s", kernel);
    if (curve_secret != NULL) {
        memcpy(t->curve_secret, curve_secret, CURVE_KEY_SIZE);
        memcpy(t->curve_public, curve_public, CURVE_KEY_SIZE);
    }
    pthread_mutex_init(&t->lock, NULL);
    mt_probe_open(&t->probe, "");
    if ((t->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        goto error;
    }
    if (open_transport(t, endpoint) < 0) {
        goto error;
    }
    st->telemetry = t;
    return PyUnicode_FromString(t->endpoint);
error:
    telemetry_close(t);
    return NULL;
}

PyDoc_STRVAR(mt_telemetry_stop__doc__,
             "telemetry_stop(): say bye, close the socket and its file, join the sampler.");
PyObject *
mt_telemetry_stop(PyObject *module, PyObject *Py_UNUSED(unused))
{
    mt_state *st = mt_get_state(module);
    mt_telemetry *t = own_telemetry(st);
    if (t != NULL) {
        st->telemetry = NULL;
        Py_BEGIN_ALLOW_THREADS telemetry_close(t);
        Py_END_ALLOW_THREADS
    }
    Py_RETURN_NONE;
}

void
mt_telemetry_fork_pause(PyObject *module)
{
    mt_telemetry *t = own_telemetry(mt_get_state(module));
    if (t != NULL && t->sampling) {
        Py_BEGIN_ALLOW_THREADS close_transport(t, STOP_FOR_FORK);
        Py_END_ALLOW_THREADS t->paused_for_fork = 1;
    }
}

int
mt_telemetry_fork_resume(PyObject *module)
{
    mt_telemetry *t = own_telemetry(mt_get_state(module));
    if (t == NULL || !t->paused_for_fork) {
        return 0;
    }
    t->paused_for_fork = 0;
    char endpoint[ENDPOINT_MAX];
    snprintf(endpoint, sizeof endpoint, "%s", t->endpoint); /* a tcp port stays the one bound */
    if (open_transport(t, endpoint) < 0) {
        close_transport(t, STOP_FOR_GOOD);
        return -1;
    }
    return 0;
}

void
mt_telemetry_free(PyObject *module)
{
    mt_state *st = mt_get_state(module);
    mt_telemetry *t = own_telemetry(st);
    st->telemetry = NULL;
    if (t != NULL) {
        telemetry_close(t);
    }
}

/* ------------------------------------------------------------------ */
/* the main thread's side: hand over and wake                          */
/* ------------------------------------------------------------------ */

void
mt_telemetry_cell_begin(PyObject *module, long long cell, const char *first_line,
                        long long rss_before)
{
    mt_state *st = mt_get_state(module);
    mt_telemetry *t = own_telemetry(st);
    if (t == NULL) {
        return;
    }
    long long budget, trips;
    mt_guard_figures(module, &budget, &trips);
    pthread_mutex_lock(&t->lock);
    t->run.running = 1;
    t->run.cell = cell;
    t->run.started = st->cells.window.started;
    t->run.rss_before = rss_before;
    t->run.method = st->probe->method;
    memcpy(t->run.first_line, first_line, sizeof t->run.first_line);
    t->budget = budget;
    t->trips = trips;
    pthread_mutex_unlock(&t->lock);
    if (atomic_load(&t->subscriptions) > 0 && !atomic_load(&t->busy_pace)) {
        wake_sampler(t); /* to the busy pace now */
    }
}

void
mt_telemetry_cell_end(PyObject *module, const mt_cell_record *record)
{
    mt_state *st = mt_get_state(module);
    mt_telemetry *t = own_telemetry(st);
    if (t == NULL) {
        return;
    }
    long long budget, trips;
    mt_guard_figures(module, &budget, &trips);
    /* Nobody listening: the record is kept for snapshots, not sent (a
     * subscriber that comes later must not take an old cell for new). */
    int listening = atomic_load(&t->subscriptions) > 0;
    pthread_mutex_lock(&t->lock);
    t->run.running = 0;
    int woken = t->last_pending;
    if (woken) {
        t->events_dropped++; /* cells faster than the sampler: the gap shows it */
    }
    t->last = *record;
    t->last_has_peak = record->peak != NULL;
    if (record->peak != NULL) {
        t->last_peak = *record->peak;
    }
    t->have_last = 1;
    t->last_pending = listening;
    t->cells++;
    t->budget = budget;
    t->trips = trips;
    pthread_mutex_unlock(&t->lock);
    /* A pending record means the sampler was woken already. */
    if (listening && !woken) {
        wake_sampler(t);
    }
}

/* Whether an item of event data goes out while names are off: numbers,
 * booleans and nulls, and the words of the keys below (each names one of a
 * few fixed words).  Any other text may quote a name, a value or code (a
 * refusal's reason, a post-mortem report), and so may a list or an object:
 * they stay in the kernel. */
static int
is_public_item(PyObject *key, PyObject *value)
{
    static const char *const word_keys[] = {"action", "status", "layer"};
    if (value == Py_None || PyBool_Check(value) || PyLong_Check(value) || PyFloat_Check(value)) {
        return 1;
    }
    for (size_t i = 0;
         PyUnicode_Check(key) && PyUnicode_Check(value) && i < sizeof word_keys / sizeof *word_keys;
         i++) {
        if (PyUnicode_CompareWithASCIIString(key, word_keys[i]) == 0) {
            return 1;
        }
    }
    return 0;
}

static char *
raw_strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *copy = malloc(n);
    if (copy != NULL) {
        memcpy(copy, s, n);
    }
    return copy;
}

/* data is serialised here, with the GIL. */
PyDoc_STRVAR(mt_telemetry_event__doc__,
             "telemetry_event(kind, data) -> bool: queue an event (budget trip, %shrink action, "
             "post-mortem finding) for the subscribers; False while telemetry is off.");
PyObject *
mt_telemetry_event(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    mt_state *st = mt_get_state(module);
    mt_telemetry *t = own_telemetry(st);
    PyObject *data = NULL, *json = NULL, *text = NULL, *result = NULL;
    MT_ASSERT_GIL();
    char *kind_copy = NULL, *data_copy = NULL;
    const char *kind;
    if (nargs != 2 || !PyUnicode_Check(args[0]) || !PyDict_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "telemetry_event(kind: str, data: dict)");
        return NULL;
    }
    if (t == NULL) {
        Py_RETURN_FALSE;
    }
    if ((kind = PyUnicode_AsUTF8(args[0])) == NULL || (data = PyDict_Copy(args[1])) == NULL) {
        goto done;
    }
    if (!t->names) {
        PyObject *key, *value;
        Py_ssize_t pos = 0;
        PyObject *keys = PyList_New(0);
        if (keys == NULL) {
            goto done;
        }
        while (PyDict_Next(data, &pos, &key, &value)) {
            if (!is_public_item(key, value) && PyList_Append(keys, key) < 0) {
                Py_DECREF(keys);
                goto done;
            }
        }
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(keys); i++) {
            if (PyDict_DelItem(data, PyList_GET_ITEM(keys, i)) < 0) {
                Py_DECREF(keys);
                goto done;
            }
        }
        Py_DECREF(keys);
    }
    if ((json = PyImport_ImportModule("json")) == NULL ||
        (text = PyObject_CallMethod(json, "dumps", "O", data)) == NULL) {
        goto done;
    }
    const char *utf8 = PyUnicode_AsUTF8(text);
    if (utf8 == NULL) {
        goto done;
    }
    if ((kind_copy = raw_strdup(kind)) == NULL || (data_copy = raw_strdup(utf8)) == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    pthread_mutex_lock(&t->lock);
    int queued = t->event_count < EVENT_QUEUE;
    if (queued) {
        t->events[t->event_count].kind = kind_copy;
        t->events[t->event_count].data = data_copy;
        t->event_count++;
        kind_copy = data_copy = NULL;
    }
    else {
        t->events_dropped++;
    }
    pthread_mutex_unlock(&t->lock);
    wake_sampler(t);
    result = PyBool_FromLong(queued);
done:
    free(kind_copy);
    free(data_copy);
    Py_XDECREF(data);
    Py_XDECREF(json);
    Py_XDECREF(text);
    return result;
}

PyDoc_STRVAR(mt_telemetry_status__doc__,
             "telemetry_status() -> dict | None: endpoint, kernel, names, curve_public_key (the "
             "CurveZMQ server's, None in the clear), sent (messages), seq, subscriptions, "
             "thread_id (the sampler's), last_error (the last send error).");
PyObject *
mt_telemetry_status(PyObject *module, PyObject *Py_UNUSED(unused))
{
    mt_telemetry *t = own_telemetry(mt_get_state(module));
    if (t == NULL) {
        Py_RETURN_NONE;
    }
    int err = atomic_load(&t->last_errno);
    PyObject *d = PyDict_New();
    if (d == NULL || mt_set(d, "endpoint", PyUnicode_FromString(t->endpoint)) < 0 ||
        mt_set(d, "kernel", PyUnicode_FromString(t->kernel)) < 0 ||
        mt_set(d, "names", PyBool_FromLong(t->names)) < 0 ||
        mt_set(d, "curve_public_key",
               t->curve_public[0] ? PyUnicode_FromString(t->curve_public) : Py_NewRef(Py_None)) <
            0 ||
        mt_set(d, "sent", PyLong_FromLongLong(atomic_load(&t->sent))) < 0 ||
        mt_set(d, "seq", PyLong_FromLongLong(atomic_load(&t->seq))) < 0 ||
        mt_set(d, "subscriptions", PyLong_FromLongLong(atomic_load(&t->subscriptions))) < 0 ||
        mt_set(d, "thread_id", PyLong_FromLong(atomic_load(&t->tid))) < 0 ||
        mt_set(d, "last_error",
               err ? PyUnicode_FromString(zmq_strerror(err)) : Py_NewRef(Py_None)) < 0) {
        Py_XDECREF(d);
        return NULL;
    }
    return d;
}

/* The _core methods of this file; module.c adds them at init. */
PyMethodDef mt_telemetry_methods[] = {
    {"telemetry_start", (PyCFunction)(void (*)(void))mt_telemetry_start,
     METH_VARARGS | METH_KEYWORDS, mt_telemetry_start__doc__},
    {"telemetry_stop", mt_telemetry_stop, METH_NOARGS, mt_telemetry_stop__doc__},
    {"telemetry_event", (PyCFunction)(void (*)(void))mt_telemetry_event, METH_FASTCALL,
     mt_telemetry_event__doc__},
    {"telemetry_status", mt_telemetry_status, METH_NOARGS, mt_telemetry_status__doc__},
    {"telemetry_protocol", mt_telemetry_protocol, METH_NOARGS, mt_telemetry_protocol__doc__},
    {NULL, NULL, 0, NULL},
};
