/* message: telemetry's schema and its JSON writers (message.h). */
#include "memtamer/message.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "memtamer/memtamer.h"

/* ------------------------------------------------------------------ */
/* the schema                                                          */
/* ------------------------------------------------------------------ */

/* Every field the writers below put in a message, with its JSON type:
 * "int", "number", "string", "bool", "object", "array", or the name of an
 * object below; "?" after it: or null.  Subscribers validate what they read
 * against it (telemetry.py), export.py reads its figures by these names,
 * and a test holds the writers to it. */
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

/* A cell running now (in samples), and a cell's record. */
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
    {"cpu_seconds", "number"},
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

PyObject *
mt_message_schema(void)
{
    MT_ASSERT_GIL();
    PyObject *result = PyDict_New(), *kinds = PyDict_New(), *objects = PyDict_New();
    PyObject *fields = NULL;
    if (result == NULL || kinds == NULL || objects == NULL) {
        goto error;
    }
    for (size_t i = 0; i < Py_ARRAY_LENGTH(message_kinds); i++) {
        if ((fields = PyDict_New()) == NULL || add_fields(fields, common_fields) < 0 ||
            add_fields(fields, message_kinds[i].parts[0]) < 0 ||
            add_fields(fields, message_kinds[i].parts[1]) < 0 ||
            PyDict_SetItemString(kinds, message_kinds[i].kind, fields) < 0) {
            goto error;
        }
        Py_CLEAR(fields);
    }
    for (size_t i = 0; i < Py_ARRAY_LENGTH(message_objects); i++) {
        if ((fields = PyDict_New()) == NULL || add_fields(fields, message_objects[i].fields) < 0 ||
            PyDict_SetItemString(objects, message_objects[i].name, fields) < 0) {
            goto error;
        }
        Py_CLEAR(fields);
    }
    if (mt_set(result, "kinds", kinds) < 0) {
        kinds = NULL;
        goto error;
    }
    kinds = NULL;
    if (mt_set(result, "objects", objects) < 0) {
        objects = NULL;
        goto error;
    }
    return result;
error:
    Py_XDECREF(fields);
    Py_XDECREF(kinds);
    Py_XDECREF(objects);
    Py_XDECREF(result);
    return NULL;
}

/* ------------------------------------------------------------------ */
/* JSON, written without the GIL                                       */
/* ------------------------------------------------------------------ */

void
mt_message_append(mt_message_buf *b, const char *s, size_t n)
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

void
mt_message_reset(mt_message_buf *b)
{
    b->len = 0;
    b->failed = 0;
}

void
mt_message_free(mt_message_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

/* A string literal, its length counted by the compiler. */
#define append_literal(b, text) mt_message_append((b), (text), sizeof(text) - 1)

static void
append_text(mt_message_buf *b, const char *s)
{
    mt_message_append(b, s, strlen(s));
}

/* The decimal digits of v (of any sign). */
static void
append_int(mt_message_buf *b, long long v)
{
    char digits[24];
    char *end = digits + sizeof digits, *p = end;
    /* Negated as unsigned: LLONG_MIN has no positive twin. */
    unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
    do {
        *--p = (char)('0' + u % 10);
        u /= 10;
    } while (u != 0);
    if (v < 0) {
        *--p = '-';
    }
    mt_message_append(b, p, (size_t)(end - p));
}

/* v with `decimals` digits after the point (at most 6), as %.Nf writes it
 * (rounded half away from zero); null for what JSON cannot say. */
static void
append_fixed(mt_message_buf *b, double v, int decimals)
{
    static const long long scales[] = {1, 10, 100, 1000, 10000, 100000, 1000000};
    long long scale = scales[decimals];
    double scaled = fabs(v) * (double)scale + 0.5;
    if (!isfinite(v) || scaled >= 9e18) {
        append_literal(b, "null");
        return;
    }
    long long units = (long long)scaled;
    if (v < 0 && units != 0) {
        append_literal(b, "-");
    }
    append_int(b, units / scale);
    if (decimals > 0) {
        char fraction[8];
        long long rest = units % scale;
        fraction[0] = '.';
        for (int i = decimals; i > 0; i--) {
            fraction[i] = (char)('0' + rest % 10);
            rest /= 10;
        }
        mt_message_append(b, fraction, (size_t)decimals + 1);
    }
}

static void
append_string(mt_message_buf *b, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    size_t n = strlen(s), plain = 0; /* whole UTF-8: cell.c cuts by code points */
    append_literal(b, "\"");
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c != '"' && c != '\\' && c >= 0x20) {
            continue;
        }
        mt_message_append(b, s + plain, i - plain);
        plain = i + 1;
        if (c == '"' || c == '\\') {
            char escaped[2] = {'\\', (char)c};
            mt_message_append(b, escaped, 2);
        }
        else {
            char escaped[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 0xf]};
            mt_message_append(b, escaped, 6);
        }
    }
    mt_message_append(b, s + plain, n - plain);
    append_literal(b, "\"");
}

/* ,"key": (the key a literal of the schema's) */
#define append_key(b, key) append_literal((b), ",\"" key "\":")

/* The value n, or null for a negative one (unavailable). */
static void
append_size(mt_message_buf *b, long long n)
{
    if (n < 0) {
        append_literal(b, "null");
    }
    else {
        append_int(b, n);
    }
}

/* Code of the user's (a cell's first line quotes variable names): null
 * when names are off. */
static void
append_code(mt_message_buf *b, int names, const char *code)
{
    if (names) {
        append_string(b, code);
    }
    else {
        append_literal(b, "null");
    }
}

/* ------------------------------------------------------------------ */
/* the writers                                                         */
/* ------------------------------------------------------------------ */

size_t
mt_message_open(mt_message_buf *b, const char *kind, const char *kernel, pid_t pid, long long seq,
                double time)
{
    append_literal(b, "{\"kind\":");
    append_string(b, kind);
    append_key(b, "kernel");
    append_string(b, kernel);
    append_key(b, "pid");
    append_int(b, (long long)pid);
    size_t start = b->len;
    append_key(b, "seq");
    append_int(b, seq);
    append_key(b, "time");
    append_fixed(b, time, 3);
    return start;
}

void
mt_message_close(mt_message_buf *b)
{
    append_literal(b, "}");
}

/* {"cell":N,"first_line":"..." (the object stays open): N null for a cell
 * not stored in history. */
static void
cell_head(mt_message_buf *b, int names, long long cell, const char *first_line)
{
    append_literal(b, "{\"cell\":");
    append_size(b, cell);
    append_key(b, "first_line");
    append_code(b, names, first_line);
}

/* A source line's number, null for 0 (none). */
static void
append_line(mt_message_buf *b, int line)
{
    append_size(b, line > 0 ? line : -1);
}

/* ,"peak_composition":{...} as peaks.c gives it to report(), or null. */
static void
composition(mt_message_buf *b, int names, const mt_peak_composition *c)
{
    append_key(b, "peak_composition");
    if (c == NULL) {
        append_literal(b, "null");
        return;
    }
    long long attributed = 0;
    append_literal(b, "{\"block_threshold\":");
    append_int(b, c->block_threshold);
    append_key(b, "at");
    append_int(b, c->at);
    append_key(b, "groups");
    append_literal(b, "[");
    for (int i = 0; i < c->ngroups; i++) {
        const mt_peak_group *g = &c->groups[i];
        attributed += g->bytes;
        if (i > 0) {
            append_literal(b, ",");
        }
        append_literal(b, "{\"origin\":");
        append_string(b, mt_peaks_origin_name(g->origin));
        append_key(b, "line");
        append_line(b, g->line);
        append_key(b, "text");
        append_code(b, names && g->text[0], g->text);
        append_key(b, "function");
        append_code(b, names && g->function[0], g->function);
        append_key(b, "file");
        append_code(b, names && g->file[0], g->file);
        append_key(b, "function_line");
        append_line(b, g->function_line);
        append_key(b, "blocks");
        append_int(b, g->blocks);
        append_key(b, "bytes");
        append_int(b, g->bytes);
        append_key(b, "kept");
        append_int(b, g->kept);
        append_key(b, "temporary");
        append_int(b, g->bytes - g->kept);
        append_literal(b, "}");
    }
    append_literal(b, "]");
    append_key(b, "attributed");
    append_int(b, attributed);
    append_key(b, "untracked");
    append_int(b, c->untracked);
    append_literal(b, "}");
}

static void
record(mt_message_buf *b, int names, const mt_cell_record *r, const mt_peak_composition *peak)
{
    int known = r->rss_before >= 0 && r->rss_after >= 0;
    int peaked = r->rss_before >= 0 && r->peak_rss >= 0;
    int swap_known = r->swap_after >= 0;
    cell_head(b, names, r->cell, r->first_line);
    append_key(b, "rss_before");
    append_size(b, r->rss_before);
    append_key(b, "rss_after");
    append_size(b, r->rss_after);
    append_key(b, "retained");
    if (known) {
        append_int(b, r->rss_after - r->rss_before);
    }
    else {
        append_literal(b, "null");
    }
    append_key(b, "peak_rss");
    append_size(b, r->peak_rss);
    append_key(b, "peak_increment");
    if (peaked) {
        append_int(b, r->peak_rss - r->rss_before);
    }
    else {
        append_literal(b, "null");
    }
    append_key(b, "peak_method");
    append_string(b, mt_probe_method_name(r->peak_method));
    append_key(b, "heap_peak_increment");
    append_size(b, r->heap_peak_increment);
    append_key(b, "numpy_peak_increment");
    append_size(b, r->numpy_peak_increment);
    append_key(b, "arrow_peak_increment");
    append_size(b, r->arrow_counted ? r->arrow_peak_increment : -1);
    append_key(b, "arrow_retained");
    if (r->arrow_counted) {
        append_int(b, r->arrow_retained);
    }
    else {
        append_literal(b, "null");
    }
    append_key(b, "children_peak");
    append_size(b, r->children_peak);
    append_key(b, "children_rss_peak");
    append_size(b, r->children_rss_peak);
    append_key(b, "children_method");
    if (r->children_method) {
        append_string(b, mt_probe_children_method_name(r->children_method));
    }
    else {
        append_literal(b, "null");
    }
    append_key(b, "swap_after");
    append_size(b, r->swap_after);
    append_key(b, "swapped");
    if (swap_known) {
        append_int(b, r->swap_after - r->swap_before);
    }
    else {
        append_literal(b, "null");
    }
    append_key(b, "major_faults");
    if (swap_known) {
        append_int(b, r->major_faults);
    }
    else {
        append_literal(b, "null");
    }
    append_key(b, "seconds");
    append_fixed(b, r->seconds, 6);
    append_key(b, "cpu_seconds");
    append_fixed(b, r->cpu_seconds, 6);
    append_key(b, "status");
    append_string(b, r->failed ? "error" : "ok");
    composition(b, names, peak);
    append_literal(b, "}");
}

void
mt_message_sample_fields(mt_message_buf *b, int names, const mt_message_sample *f,
                         const mt_message_running *run, long long budget, long long trips,
                         long long cells)
{
    append_key(b, "rss");
    append_size(b, f->rss);
    append_key(b, "limit");
    append_size(b, f->limit);
    append_key(b, "headroom");
    append_size(b, f->headroom);
    append_key(b, "budget");
    append_size(b, budget);
    append_key(b, "heap_bytes");
    append_int(b, f->heap);
    append_key(b, "numpy_bytes");
    append_int(b, f->numpy);
    append_key(b, "children_private");
    append_size(b, f->children);
    append_key(b, "children");
    append_int(b, f->children_count);
    append_key(b, "biggest_child_pid");
    append_size(b, f->biggest_child_pid);
    append_key(b, "biggest_child_private");
    append_size(b, f->biggest_child_private);
    append_key(b, "swap");
    append_size(b, f->swap);
    append_key(b, "major_faults");
    append_size(b, f->major_faults);
    append_key(b, "cells");
    append_int(b, cells);
    append_key(b, "trips");
    append_int(b, trips);
    append_key(b, "running");
    if (!run->running) {
        append_literal(b, "null");
        return;
    }
    cell_head(b, names, run->cell, run->first_line);
    append_key(b, "seconds");
    append_fixed(b, mt_monotonic_seconds() - run->started, 3);
    append_key(b, "rss_before");
    append_size(b, run->rss_before);
    append_key(b, "peak_rss");
    append_size(b, f->cell_peak);
    append_key(b, "peak_increment");
    append_size(b, f->cell_peak >= 0 && run->rss_before >= 0 ? f->cell_peak - run->rss_before : -1);
    append_literal(b, "}");
}

void
mt_message_cell_fields(mt_message_buf *b, int names, long long cells, long long trips,
                       const mt_cell_record *r, const mt_peak_composition *peak)
{
    append_key(b, "cells");
    append_int(b, cells);
    append_key(b, "trips");
    append_int(b, trips);
    append_key(b, "record");
    record(b, names, r, peak);
}

void
mt_message_event_fields(mt_message_buf *b, const char *event, const char *data)
{
    append_key(b, "event");
    append_string(b, event);
    append_key(b, "data");
    append_text(b, data);
}

void
mt_message_snapshot_fields(mt_message_buf *b, int names, const char *endpoint,
                           const mt_message_sample *f, const mt_message_running *run,
                           long long budget, long long trips, long long cells,
                           const mt_cell_record *last, const mt_peak_composition *last_peak,
                           char *const *recent, int n)
{
    append_key(b, "names");
    if (names) {
        append_literal(b, "true");
    }
    else {
        append_literal(b, "false");
    }
    append_key(b, "endpoint");
    append_string(b, endpoint);
    mt_message_sample_fields(b, names, f, run, budget, trips, cells);
    append_key(b, "last_cell");
    if (last != NULL) {
        record(b, names, last, last_peak);
    }
    else {
        append_literal(b, "null");
    }
    append_key(b, "recent_events");
    append_literal(b, "[");
    const char *comma = "";
    for (int i = 0; i < n; i++) {
        if (recent[i] != NULL) {
            append_text(b, comma);
            append_text(b, recent[i]);
            comma = ",";
        }
    }
    append_literal(b, "]");
}
