/* peaks: the big blocks alive at a cell's peak, by code location (peaks.h). */
#define PY_SSIZE_T_CLEAN
#include "memtamer/peaks.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "memtamer/config.h"
#include "memtamer/memtamer.h"

#if MT_HAS_FRAME_WALK
/* The interpreter's own frames: the public accessors (PyThreadState_GetFrame,
 * PyFrame_GetBack) create frame objects, which allocates inside our hook. */
#include <internal/pycore_frame.h>
#endif

#define DEFAULT_BLOCK_THRESHOLD (1LL << 20)
#define DEFAULT_CELL_THRESHOLD (64LL << 20)
/* Distinct locations followed within one cell; more share the "other" row. */
#define LOCATIONS 64
#define FIRST_TABLE_SLOTS 1024

enum { NO_GIL_SLOT, OTHER_SLOT, FIRST_CODE_SLOT };

typedef struct {
    int cell_line;
    PyCodeObject *function; /* strong reference, NULL for the cell's own line */
    int function_line;
    long long live_bytes, peak_bytes;
    int live_blocks, peak_blocks;
} location;

typedef struct {
    void *ptr; /* NULL: empty slot */
    long long size;
    unsigned long long seq; /* allocation order within the cell */
    int location;
} block;

/* Everything below is shared by the hooks of every thread.  Protected by
 * `lock`, except the settings (only written with the GIL held, while no cell
 * is open) and the location's code references (taken and dropped with the
 * GIL held). */
static atomic_flag lock = ATOMIC_FLAG_INIT;
static block *table;           /* libc calloc: our hooks never see it */
static size_t slots, used;     /* slots is a power of two */
static location locations[LOCATIONS];
static int nlocations = FIRST_CODE_SLOT;
static unsigned long long next_seq, peak_seq;
static long long begin_counted, high, untracked;
static PyObject *user_ns; /* borrowed, compared only */

_Atomic long long mt_peaks_tracked_from = LLONG_MAX;

static int enabled = 1;
static long long block_threshold = DEFAULT_BLOCK_THRESHOLD;
static long long cell_threshold = DEFAULT_CELL_THRESHOLD;

static inline void
acquire(void)
{
    while (atomic_flag_test_and_set_explicit(&lock, memory_order_acquire)) {
    }
}

static inline void
release(void)
{
    atomic_flag_clear_explicit(&lock, memory_order_release);
}

/* A child forked while another thread held the lock must not spin forever. */
static void
after_fork_in_child(void)
{
    atomic_flag_clear(&lock);
}

static inline size_t
slot_of(const void *ptr)
{
    return (size_t)(((uintptr_t)ptr >> 4) * 0x9E3779B97F4A7C15ULL) & (slots - 1);
}

static block *
find_unlocked(const void *ptr)
{
    if (table == NULL) {
        return NULL;
    }
    for (size_t i = slot_of(ptr);; i = (i + 1) & (slots - 1)) {
        if (table[i].ptr == ptr) {
            return &table[i];
        }
        if (table[i].ptr == NULL) {
            return NULL;
        }
    }
}

static void
put_unlocked(block b)
{
    size_t i = slot_of(b.ptr);
    while (table[i].ptr != NULL && table[i].ptr != b.ptr) {
        i = (i + 1) & (slots - 1);
    }
    used += table[i].ptr == NULL;
    table[i] = b;
}

/* Linear probing's deletion: shift back the entries the hole would hide. */
static void
remove_unlocked(block *b)
{
    size_t hole = (size_t)(b - table);
    for (size_t i = (hole + 1) & (slots - 1); table[i].ptr != NULL; i = (i + 1) & (slots - 1)) {
        size_t home = slot_of(table[i].ptr);
        if (((i - home) & (slots - 1)) >= ((i - hole) & (slots - 1))) {
            table[hole] = table[i];
            hole = i;
        }
    }
    table[hole].ptr = NULL;
    used--;
}

/* Room for one more block at most half full; 0 when there is none. */
static int
room_unlocked(void)
{
    if (table != NULL && (used + 1) * 2 <= slots) {
        return 1;
    }
    size_t old_slots = slots, new_slots = slots ? slots * 2 : FIRST_TABLE_SLOTS;
    block *old = table, *grown = calloc(new_slots, sizeof *grown);
    if (grown == NULL) {
        return 0;
    }
    table = grown;
    slots = new_slots;
    used = 0;
    for (size_t i = 0; i < old_slots; i++) {
        if (old[i].ptr != NULL) {
            put_unlocked(old[i]);
        }
    }
    free(old);
    return 1;
}

static void
snapshot_if_higher_unlocked(long long counted)
{
    if (counted <= high) {
        return;
    }
    high = counted;
    peak_seq = next_seq;
    for (int i = 0; i < nlocations; i++) {
        locations[i].peak_bytes = locations[i].live_bytes;
        locations[i].peak_blocks = locations[i].live_blocks;
    }
}

/* ------------------------------------------------------------------ */
/* Where the running code is                                           */
/* ------------------------------------------------------------------ */

typedef struct {
    int cell_line;
    PyCodeObject *function;
    int function_line;
} code_site;

#if MT_HAS_FRAME_WALK
static int
frame_line(_PyInterpreterFrame *f)
{
    return PyCode_Addr2Line(f->f_code, _PyInterpreterFrame_LASTI(f) * (int)sizeof(_Py_CODEUNIT));
}

/* The cell's frame is the outermost one running with the user's namespace
 * as both globals and locals (IPython exec's each statement that way); the
 * user's function is the innermost frame whose globals are that namespace.
 * Without a namespace: the outermost and innermost frames.  Needs the GIL;
 * reads the frames as they are, creating no frame object, allocating
 * nothing (as CPython's tracemalloc does). */
static void
current_site(code_site *site)
{
    _PyInterpreterFrame *cell = NULL, *inner = NULL;
    PyThreadState *tstate = PyThreadState_Get();
    for (_PyInterpreterFrame *f = tstate->cframe->current_frame; f != NULL; f = f->previous) {
        if (_PyFrame_IsIncomplete(f) || (user_ns != NULL && f->f_globals != user_ns)) {
            continue;
        }
        if (inner == NULL) {
            inner = f;
        }
        if (user_ns == NULL || f->f_locals == user_ns) {
            cell = f;
        }
    }
    site->cell_line = cell ? frame_line(cell) : 0;
    site->function = inner != NULL && inner != cell ? inner->f_code : NULL;
    site->function_line = site->function ? frame_line(inner) : 0;
}
#else
static void
current_site(code_site *site)
{
    site->cell_line = 0;
    site->function = NULL;
    site->function_line = 0;
}
#endif

/* The location's slot; a new one takes a reference to the function's code.
 * Needs the GIL and the lock. */
static int
location_of_unlocked(const code_site *site)
{
    for (int i = FIRST_CODE_SLOT; i < nlocations; i++) {
        location *l = &locations[i];
        if (l->cell_line == site->cell_line && l->function == site->function &&
            l->function_line == site->function_line) {
            return i;
        }
    }
    if (nlocations == LOCATIONS) {
        return OTHER_SLOT;
    }
    location *l = &locations[nlocations];
    memset(l, 0, sizeof *l);
    l->cell_line = site->cell_line;
    l->function = (PyCodeObject *)Py_XNewRef(site->function);
    l->function_line = site->function_line;
    return nlocations++;
}

/* ------------------------------------------------------------------ */
/* The hooks' side                                                     */
/* ------------------------------------------------------------------ */

static void
track_unlocked(void *ptr, long long size, int at, unsigned long long seq)
{
    if (!room_unlocked()) {
        untracked += size;
        return;
    }
    put_unlocked((block){ptr, size, seq, at});
    locations[at].live_bytes += size;
    locations[at].live_blocks++;
}

static void
forget_unlocked(block *b)
{
    locations[b->location].live_bytes -= b->size;
    locations[b->location].live_blocks--;
    remove_unlocked(b);
}

void
mt_peaks_allocated(void *ptr, long long size, long long counted)
{
    code_site site = {0, NULL, 0};
    int with_gil = PyGILState_Check();
    if (with_gil) {
        current_site(&site);
    }
    acquire();
    int at = with_gil ? location_of_unlocked(&site) : NO_GIL_SLOT;
    track_unlocked(ptr, size, at, ++next_seq);
    snapshot_if_higher_unlocked(counted);
    release();
}

void
mt_peaks_freeing(void *ptr, long long counted)
{
    acquire();
    block *b = find_unlocked(ptr);
    if (b != NULL) {
        snapshot_if_higher_unlocked(counted);
        forget_unlocked(b);
    }
    release();
}

void
mt_peaks_reallocated(void *old, void *ptr, long long size, long long counted)
{
    acquire();
    block *b = old ? find_unlocked(old) : NULL;
    if (b == NULL) {
        release();
        if (mt_peaks_tracks(size)) {
            mt_peaks_allocated(ptr, size, counted);
        }
        return;
    }
    block moved = *b;
    forget_unlocked(b);
    if (mt_peaks_tracks(size)) {
        track_unlocked(ptr, size, moved.location, moved.seq);
    }
    snapshot_if_higher_unlocked(counted);
    release();
}

/* ------------------------------------------------------------------ */
/* Cell begin and end (GIL held)                                       */
/* ------------------------------------------------------------------ */

/* Drops the locations and blocks of the last cell.  Needs the GIL (the
 * code references) and no tracking under way. */
static void
forget_cell(void)
{
    acquire();
    if (used > 0) {
        memset(table, 0, slots * sizeof *table);
        used = 0;
    }
    int n = nlocations;
    nlocations = FIRST_CODE_SLOT;
    PyCodeObject *functions[LOCATIONS];
    for (int i = 0; i < n; i++) {
        functions[i] = locations[i].function;
        memset(&locations[i], 0, sizeof locations[i]);
    }
    next_seq = peak_seq = 0;
    untracked = 0;
    release();
    /* Outside the lock: a code object's dealloc frees memory through our hooks. */
    for (int i = 0; i < n; i++) {
        Py_XDECREF(functions[i]);
    }
}

void
mt_peaks_cell_begin(PyObject *namespace, long long counted)
{
    static int fork_handler_set = 0;
    assert(PyGILState_Check());
    atomic_store_explicit(&mt_peaks_tracked_from, LLONG_MAX, memory_order_relaxed);
    forget_cell();
    if (!enabled) {
        return;
    }
    if (!fork_handler_set) {
        fork_handler_set = pthread_atfork(NULL, NULL, after_fork_in_child) == 0;
    }
    user_ns = namespace;
    begin_counted = high = counted;
    atomic_store_explicit(&mt_peaks_tracked_from, block_threshold, memory_order_relaxed);
}

/* Copies at most size-1 bytes of utf8 into dst, not splitting a character. */
static void
copy_utf8(char *dst, size_t size, const char *utf8, Py_ssize_t len)
{
    size_t n = (size_t)len < size - 1 ? (size_t)len : size - 1;
    if (n < (size_t)len) {
        while (n > 0 && ((unsigned char)utf8[n] & 0xC0) == 0x80) {
            n--;
        }
    }
    memcpy(dst, utf8, n);
    dst[n] = '\0';
}

static int
copy_str(char *dst, size_t size, PyObject *str)
{
    Py_ssize_t len;
    const char *utf8 = PyUnicode_AsUTF8AndSize(str, &len);
    if (utf8 == NULL) {
        return -1;
    }
    copy_utf8(dst, size, utf8, len);
    return 0;
}

/* The 1-based line of the cell's source, stripped. */
static int
copy_line(char *dst, size_t size, PyObject *lines, int line)
{
    dst[0] = '\0';
    if (lines == NULL || line < 1 || line > PyList_GET_SIZE(lines)) {
        return 0;
    }
    PyObject *stripped = PyObject_CallMethod(PyList_GET_ITEM(lines, line - 1), "strip", NULL);
    if (stripped == NULL) {
        return -1;
    }
    int rc = copy_str(dst, size, stripped);
    Py_DECREF(stripped);
    return rc;
}

/* The locations that held blocks at the peak, largest first, with what of
 * them is still alive.  Under the lock: a hook that had passed its
 * threshold test as tracking stopped may still be finishing. */
static int
gather(mt_peak_group *all, PyCodeObject **functions)
{
    long long kept[LOCATIONS] = {0};
    int n = 0;
    acquire();
    for (size_t i = 0; i < slots; i++) {
        if (table[i].ptr != NULL && table[i].seq <= peak_seq) {
            kept[table[i].location] += table[i].size;
        }
    }
    for (int i = 0; i < nlocations; i++) {
        location *l = &locations[i];
        if (l->peak_bytes <= 0) {
            continue;
        }
        mt_peak_group *g = &all[n];
        memset(g, 0, sizeof *g);
        g->origin = i == NO_GIL_SLOT ? MT_PEAK_NO_GIL : i == OTHER_SLOT ? MT_PEAK_OTHER : MT_PEAK_CODE;
        g->line = l->cell_line;
        g->function_line = l->function_line;
        g->blocks = l->peak_blocks;
        g->bytes = l->peak_bytes;
        g->kept = kept[i] < l->peak_bytes ? kept[i] : l->peak_bytes;
        functions[n++] = l->function;
    }
    release();
    return n;
}

static int
by_bytes_at_peak(const void *a, const void *b)
{
    long long x = ((const mt_peak_group *)a)->bytes, y = ((const mt_peak_group *)b)->bytes;
    return (x < y) - (x > y);
}

/* Fills c: the largest locations with their source line and function, the
 * rest summed into one "other locations" row.  Needs the GIL; tracking
 * stopped. */
static int
compose(PyObject *source, mt_peak_composition *c)
{
    PyObject *lines = NULL;
    mt_peak_group all[LOCATIONS];
    PyCodeObject *functions[LOCATIONS];
    int rc = -1;

    int n = gather(all, functions);
    for (int i = 0; i < n; i++) {
        if (functions[i] != NULL &&
            (copy_str(all[i].function, sizeof all[i].function, functions[i]->co_qualname) < 0 ||
             copy_str(all[i].file, sizeof all[i].file, functions[i]->co_filename) < 0)) {
            goto done;
        }
    }
    qsort(all, (size_t)n, sizeof *all, by_bytes_at_peak);
    memset(c, 0, sizeof *c);
    c->block_threshold = block_threshold;
    c->at = high - begin_counted;
    c->untracked = untracked;
    if (PyUnicode_Check(source) && (lines = PyUnicode_Splitlines(source, 0)) == NULL) {
        goto done;
    }
    c->ngroups = n <= MT_PEAK_GROUPS + 1 ? n : MT_PEAK_GROUPS;
    for (int i = 0; i < c->ngroups; i++) {
        mt_peak_group *g = &c->groups[i];
        *g = all[i];
        if (g->origin == MT_PEAK_CODE && copy_line(g->text, sizeof g->text, lines, g->line) < 0) {
            goto done;
        }
    }
    if (n > c->ngroups) {
        mt_peak_group *rest = &c->groups[c->ngroups++];
        rest->origin = MT_PEAK_OTHER;
        for (int i = MT_PEAK_GROUPS; i < n; i++) {
            rest->blocks += all[i].blocks;
            rest->bytes += all[i].bytes;
            rest->kept += all[i].kept;
        }
    }
    rc = 0;
done:
    Py_XDECREF(lines);
    return rc;
}

int
mt_peaks_cell_end(PyObject *source, long long counted, mt_peak_composition **out)
{
    assert(PyGILState_Check());
    *out = NULL;
    if (atomic_load_explicit(&mt_peaks_tracked_from, memory_order_relaxed) == LLONG_MAX) {
        return 0;
    }
    atomic_store_explicit(&mt_peaks_tracked_from, LLONG_MAX, memory_order_relaxed);
    /* A thread without the GIL may still be inside a hook: take the lock once
     * so that it is done before we read the tables. */
    acquire();
    snapshot_if_higher_unlocked(counted);
    release();
    user_ns = NULL;
    if (high - begin_counted < cell_threshold) {
        return 0;
    }
    mt_peak_composition *c = PyMem_RawMalloc(sizeof *c);
    if (c == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    if (compose(source, c) < 0) {
        PyMem_RawFree(c);
        return -1;
    }
    *out = c;
    return 0;
}

static PyObject *
text_or_none(const char *s)
{
    if (*s == '\0') {
        Py_RETURN_NONE;
    }
    return PyUnicode_DecodeUTF8(s, (Py_ssize_t)strlen(s), "replace");
}

static PyObject *
group_dict(const mt_peak_group *g)
{
    static const char *origins[] = {"code", "native/worker thread", "other locations"};
    PyObject *d = PyDict_New();
    if (d == NULL ||
        mt_set(d, "origin", PyUnicode_FromString(origins[g->origin])) < 0 ||
        mt_set(d, "line", g->line > 0 ? PyLong_FromLong(g->line) : Py_NewRef(Py_None)) < 0 ||
        mt_set(d, "text", text_or_none(g->text)) < 0 ||
        mt_set(d, "function", text_or_none(g->function)) < 0 ||
        mt_set(d, "file", text_or_none(g->file)) < 0 ||
        mt_set(d, "function_line", g->function_line > 0 ? PyLong_FromLong(g->function_line) : Py_NewRef(Py_None)) < 0 ||
        mt_set(d, "blocks", PyLong_FromLong(g->blocks)) < 0 ||
        mt_set(d, "bytes", PyLong_FromLongLong(g->bytes)) < 0 ||
        mt_set(d, "kept", PyLong_FromLongLong(g->kept)) < 0 ||
        mt_set(d, "temporary", PyLong_FromLongLong(g->bytes - g->kept)) < 0) {
        Py_XDECREF(d);
        return NULL;
    }
    return d;
}

PyObject *
mt_peaks_dict(const mt_peak_composition *c)
{
    PyObject *d = NULL, *groups = PyList_New(c->ngroups);
    long long attributed = 0;
    if (groups == NULL) {
        return NULL;
    }
    for (int i = 0; i < c->ngroups; i++) {
        PyObject *g = group_dict(&c->groups[i]);
        if (g == NULL) {
            goto error;
        }
        PyList_SET_ITEM(groups, i, g);
        attributed += c->groups[i].bytes;
    }
    d = PyDict_New();
    if (d == NULL ||
        mt_set(d, "block_threshold", PyLong_FromLongLong(c->block_threshold)) < 0 ||
        mt_set(d, "at", PyLong_FromLongLong(c->at)) < 0 ||
        mt_set(d, "attributed", PyLong_FromLongLong(attributed)) < 0 ||
        mt_set(d, "untracked", PyLong_FromLongLong(c->untracked)) < 0 ||
        mt_set(d, "groups", Py_NewRef(groups)) < 0) {
        goto error;
    }
    Py_DECREF(groups);
    return d;
error:
    Py_XDECREF(d);
    Py_DECREF(groups);
    return NULL;
}

static int
size_setting(PyObject *value, const char *name, long long *out)
{
    if (value == NULL || value == Py_None) {
        return 0;
    }
    long long v = PyLong_AsLongLong(value);
    if (v == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (v < 1) {
        PyErr_Format(PyExc_ValueError, "peaks_settings: %s must be a positive number of bytes", name);
        return -1;
    }
    *out = v;
    return 0;
}

PyObject *
mt_peaks_settings(PyObject *module, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"enabled", "block", "cell", NULL};
    PyObject *on = NULL, *block_arg = NULL, *cell_arg = NULL;
    long long new_block = block_threshold, new_cell = cell_threshold;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|$OOO:peaks_settings", keywords, &on, &block_arg, &cell_arg) ||
        size_setting(block_arg, "block", &new_block) < 0 || size_setting(cell_arg, "cell", &new_cell) < 0) {
        return NULL;
    }
    int new_enabled = on == NULL || on == Py_None ? enabled : PyObject_IsTrue(on);
    if (new_enabled < 0) {
        return NULL;
    }
    /* Applies from the next cell: the running one keeps its threshold. */
    enabled = new_enabled;
    block_threshold = new_block;
    cell_threshold = new_cell;
    return Py_BuildValue("{sOsLsL}", "enabled", enabled ? Py_True : Py_False, "block", block_threshold,
                         "cell", cell_threshold);
}
