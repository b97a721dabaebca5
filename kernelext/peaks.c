/* peaks: the big blocks alive at a cell's peak, by code location (peaks.h). */
#define PY_SSIZE_T_CLEAN
#include "memtamer/peaks.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "memtamer/memtamer.h"
#include "memtamer/pyver.h"

#define DEFAULT_BLOCK_THRESHOLD (1LL << 20)
#define DEFAULT_CELL_THRESHOLD (64LL << 20)
/* Distinct locations followed within one cell; more share the "other" row. */
#define LOCATIONS 64
#define FIRST_TABLE_SLOTS 1024
/* Blocks waiting to enter the table: a few, as a free looks through them all. */
#define PENDING 8

enum { NO_GIL_SLOT, OTHER_SLOT, FIRST_CODE_SLOT };

/* Where the running code is: the cell's code and the user's function (NULL
 * when the cell's own code allocated), each with its instruction's offset in
 * bytes.  Lines are worked out at cell end, only for the locations a
 * composition shows, not in the hook. */
typedef struct {
    PyCodeObject *cell;
    int cell_offset;
    PyCodeObject *function;
    int function_offset;
} code_site;

typedef struct {
    code_site site; /* strong references to its code objects */
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
static block *table; /* libc calloc: our hooks never see it */
/* Blocks made since the last snapshot wait here, out of the table and the
 * locations' sums: a loop's big blocks are mostly freed again before the
 * counted total reaches a new high, and a block no snapshot saw leaves no
 * trace.  A snapshot (and the end of the cell) first moves them in. */
static block pending[PENDING];
static int npending;
static size_t slots, used; /* slots is a power of two */
static location locations[LOCATIONS];
static int nlocations = FIRST_CODE_SLOT;
static unsigned long long next_seq, peak_seq;
static long long begin_counted, high, untracked;
static PyObject *user_ns; /* borrowed, compared only */
/* The last block's site when it depended on the innermost frame and its
 * caller at most: the cell's code running innermost, or a user function's
 * called straight from it.  A loop allocates at the same place again and
 * again, and this spares the walk and the search.  The location holds the
 * code objects, so the same code at the same offsets is the same site.  Only
 * touched with the GIL held. */
static struct {
    PyCodeObject *code, *caller_code; /* code NULL: none; caller_code NULL: the cell's */
    int offset, caller_offset;
    int location;
} last_site;

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

/* Doubles the table (or makes the first); 0 when memory ran out. */
static int
grow_unlocked(void)
{
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

/* Room for one more block, the table at most half full; 0 when there is none. */
static inline int
room_unlocked(void)
{
    return (table != NULL && (used + 1) * 2 <= slots) || grow_unlocked();
}

/* Charges a block to its location in the table. */
static void
track_unlocked(block b)
{
    if (!room_unlocked()) {
        untracked += b.size;
        return;
    }
    put_unlocked(b);
    locations[b.location].live_bytes += b.size;
    locations[b.location].live_blocks++;
}

static void
flush_pending_unlocked(void)
{
    for (int i = 0; i < npending; i++) {
        track_unlocked(pending[i]);
    }
    npending = 0;
}

static inline void
remember_unlocked(block b)
{
    if (npending == PENDING) {
        flush_pending_unlocked();
    }
    pending[npending++] = b;
}

/* Takes the block at ptr out of the books (into *out unless NULL); 0 when
 * it is not in them.  The newest blocks are the likeliest to go. */
static inline int
take_unlocked(const void *ptr, block *out)
{
    for (int i = npending - 1; i >= 0; i--) {
        if (pending[i].ptr == ptr) {
            if (out != NULL) {
                *out = pending[i];
            }
            pending[i] = pending[--npending];
            return 1;
        }
    }
    block *b = find_unlocked(ptr);
    if (b == NULL) {
        return 0;
    }
    if (out != NULL) {
        *out = *b;
    }
    locations[b->location].live_bytes -= b->size;
    locations[b->location].live_blocks--;
    remove_unlocked(b);
    return 1;
}

static inline void
snapshot_if_higher_unlocked(long long counted)
{
    if (counted <= high) {
        return;
    }
    flush_pending_unlocked();
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

/* Fills site from this thread's frames (f, innermost first).  The user's
 * function is the innermost frame whose globals are the user's namespace;
 * the cell's frame is the innermost one of those running module-level code
 * (not CO_OPTIMIZED) called from a frame with other globals, as IPython
 * exec's each cell (a class body or an exec inside the cell is called from
 * the cell's frame).  Without a namespace: the outermost and innermost
 * frames.  Returns 1 when the site is the innermost frame's and at most its
 * caller's (last_site's cases). */
static int
walk_frames(mt_pyver_frame *f, code_site *site)
{
    PyCodeObject *inner = NULL, *candidate = NULL;
    int inner_offset = 0, candidate_offset = 0, depth = 0, inner_depth = -1, candidate_depth = -1;
    for (; f->frame != NULL; mt_pyver_frame_back(f), depth++) {
        int user = user_ns == NULL || mt_pyver_frame_globals(f) == user_ns;
        if (candidate != NULL && user_ns != NULL && !user) {
            break; /* called from outside the user's namespace: the cell */
        }
        candidate = NULL;
        if (!user) {
            continue;
        }
        PyCodeObject *code = mt_pyver_frame_code(f);
        int offset = mt_pyver_frame_offset(f);
        if (inner == NULL) {
            inner = code;
            inner_offset = offset;
            inner_depth = depth;
        }
        if (user_ns == NULL || !(code->co_flags & CO_OPTIMIZED)) {
            candidate = code;
            candidate_offset = offset;
            candidate_depth = depth;
        }
    }
    site->cell = candidate; /* the cell's frame, if any */
    site->cell_offset = candidate_offset;
    if (inner != NULL && inner_depth != candidate_depth) {
        site->function = inner;
        site->function_offset = inner_offset;
    }
    return user_ns != NULL && candidate != NULL && inner_depth == 0 && candidate_depth <= 1;
}

/* The location's slot; a new one takes references to the code objects.
 * Needs the GIL and the lock. */
static inline int
same_site(const code_site *a, const code_site *b)
{
    return a->cell == b->cell && a->cell_offset == b->cell_offset && a->function == b->function &&
           a->function_offset == b->function_offset;
}

static int
location_of_unlocked(const code_site *site)
{
    /* A loop allocates at the same place again and again: look there first. */
    static int last = FIRST_CODE_SLOT;
    if (last < nlocations && same_site(&locations[last].site, site)) {
        return last;
    }
    for (int i = FIRST_CODE_SLOT; i < nlocations; i++) {
        if (same_site(&locations[i].site, site)) {
            return last = i;
        }
    }
    if (nlocations == LOCATIONS) {
        return OTHER_SLOT;
    }
    location *l = &locations[nlocations];
    memset(l, 0, sizeof *l);
    l->site = *site;
    Py_XINCREF(site->cell);
    Py_XINCREF(site->function);
    return last = nlocations++;
}

/* Whether f (innermost) is where the last block was made: the same code at
 * the same offsets, the user's globals, and the same caller's when the last
 * site was a function called by the cell.  Moves f. */
static inline int
at_last_site(mt_pyver_frame *f)
{
    if (f->frame == NULL || mt_pyver_frame_code(f) != last_site.code ||
        mt_pyver_frame_offset(f) != last_site.offset || mt_pyver_frame_globals(f) != user_ns) {
        return 0;
    }
    if (last_site.caller_code == NULL) {
        return 1;
    }
    mt_pyver_frame_back(f);
    return f->frame != NULL && mt_pyver_frame_code(f) == last_site.caller_code &&
           mt_pyver_frame_offset(f) == last_site.caller_offset;
}

/* The location a block made now is charged to.  Outside the lock: on 3.12+
 * reading the frames may make frame objects, which allocates. */
static int
location_now(void)
{
    mt_pyver_frame f;
    if (!mt_pyver_frame_begin(&f)) {
        return NO_GIL_SLOT;
    }
    if (last_site.code != NULL && at_last_site(&f)) {
        mt_pyver_frame_end(&f);
        return last_site.location;
    }
    mt_pyver_frame_end(&f);
    mt_pyver_frame_begin(&f); /* from the innermost frame again; the GIL is still held */
    code_site site = {NULL, 0, NULL, 0};
    int near = walk_frames(&f, &site);
    mt_pyver_frame_end(&f);
    acquire();
    int at = location_of_unlocked(&site);
    release();
    last_site.code = NULL;
    if (near && at >= FIRST_CODE_SLOT) { /* the location holds the code objects */
        int in_function = site.function != NULL;
        last_site.code = in_function ? site.function : site.cell;
        last_site.offset = in_function ? site.function_offset : site.cell_offset;
        last_site.caller_code = in_function ? site.cell : NULL;
        last_site.caller_offset = site.cell_offset;
        last_site.location = at;
    }
    return at;
}

/* ------------------------------------------------------------------ */
/* The hooks' side                                                     */
/* ------------------------------------------------------------------ */

void
mt_peaks_allocated(void *ptr, long long size, long long counted)
{
    int at = location_now();
    acquire();
    remember_unlocked((block){ptr, size, ++next_seq, at});
    snapshot_if_higher_unlocked(counted);
    release();
}

void
mt_peaks_freeing(void *ptr, long long counted)
{
    acquire();
    /* A new high seen at a free still has the block in it. */
    snapshot_if_higher_unlocked(counted);
    take_unlocked(ptr, NULL);
    release();
}

void
mt_peaks_reallocated(void *old, void *ptr, long long size, long long counted)
{
    block moved;
    acquire();
    if (old == NULL || !take_unlocked(old, &moved)) {
        release();
        if (mt_peaks_tracks(size)) {
            mt_peaks_allocated(ptr, size, counted);
        }
        return;
    }
    if (mt_peaks_tracks(size)) {
        moved.ptr = ptr;
        moved.size = size;
        remember_unlocked(moved);
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
    code_site sites[LOCATIONS];
    for (int i = 0; i < n; i++) {
        sites[i] = locations[i].site;
        memset(&locations[i], 0, sizeof locations[i]);
    }
    npending = 0;
    last_site.code = NULL;
    next_seq = peak_seq = 0;
    untracked = 0;
    release();
    /* Outside the lock: a code object's dealloc frees memory through our hooks. */
    for (int i = 0; i < n; i++) {
        Py_XDECREF(sites[i].cell);
        Py_XDECREF(sites[i].function);
    }
}

void
mt_peaks_cell_begin(PyObject *namespace, long long counted)
{
    static int fork_handler_set = 0;
    MT_ASSERT_GIL();
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

/* A location's figures at the peak, and its code (borrowed: the location
 * keeps it until the next cell begins). */
typedef struct {
    mt_peak_group g;
    code_site site;
} gathered;

/* The locations that held blocks at the peak, with what of them is still
 * alive.  Under the lock: a hook that had passed its threshold test as
 * tracking stopped may still be finishing. */
static int
gather(gathered *all)
{
    long long kept[LOCATIONS] = {0};
    int n = 0;
    acquire();
    flush_pending_unlocked();
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
        gathered *a = &all[n++];
        memset(a, 0, sizeof *a);
        a->g.origin = i == NO_GIL_SLOT  ? MT_PEAK_NO_GIL
                      : i == OTHER_SLOT ? MT_PEAK_OTHER
                                        : MT_PEAK_CODE;
        a->g.blocks = l->peak_blocks;
        a->g.bytes = l->peak_bytes;
        a->g.kept = kept[i] < l->peak_bytes ? kept[i] : l->peak_bytes;
        a->site = l->site;
    }
    release();
    return n;
}

static int
line_at(PyCodeObject *code, int offset)
{
    return code ? PyCode_Addr2Line(code, offset) : 0;
}

/* Lines from instruction offsets; locations on the same lines become one.
 * Returns the number left. */
static int
by_lines(gathered *all, int n)
{
    int kept = 0;
    for (int i = 0; i < n; i++) {
        gathered *a = &all[i];
        a->g.line = line_at(a->site.cell, a->site.cell_offset);
        a->g.function_line = line_at(a->site.function, a->site.function_offset);
        int same = 0;
        while (same < kept &&
               !(all[same].g.origin == a->g.origin && all[same].g.line == a->g.line &&
                 all[same].site.function == a->site.function &&
                 all[same].g.function_line == a->g.function_line)) {
            same++;
        }
        if (same == kept) {
            all[kept++] = *a;
            continue;
        }
        all[same].g.blocks += a->g.blocks;
        all[same].g.bytes += a->g.bytes;
        all[same].g.kept += a->g.kept;
    }
    return kept;
}

/* Largest first. */
static int
by_bytes_at_peak(const void *a, const void *b)
{
    const mt_peak_group *x = &((const gathered *)a)->g, *y = &((const gathered *)b)->g;
    if (x->bytes != y->bytes) {
        return (x->bytes < y->bytes) - (x->bytes > y->bytes);
    }
    /* Ties in the order of the source, so that reruns read the same. */
    if (x->line != y->line) {
        return (x->line > y->line) - (x->line < y->line);
    }
    return (x->function_line > y->function_line) - (x->function_line < y->function_line);
}

/* Fills c: the largest locations with their source line and function, the
 * rest summed into one "other locations" row.  Needs the GIL; tracking
 * stopped. */
static int
compose(PyObject *source, mt_peak_composition *c)
{
    PyObject *lines = NULL;
    gathered all[LOCATIONS];
    int rc = -1;

    int n = by_lines(all, gather(all));
    for (int i = 0; i < n; i++) {
        PyCodeObject *function = all[i].site.function;
        if (function != NULL &&
            (copy_str(all[i].g.function, sizeof all[i].g.function, function->co_qualname) < 0 ||
             copy_str(all[i].g.file, sizeof all[i].g.file, function->co_filename) < 0)) {
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
        *g = all[i].g;
        if (g->origin == MT_PEAK_CODE && copy_line(g->text, sizeof g->text, lines, g->line) < 0) {
            goto done;
        }
    }
    if (n > c->ngroups) {
        mt_peak_group *rest = &c->groups[c->ngroups++];
        rest->origin = MT_PEAK_OTHER;
        for (int i = MT_PEAK_GROUPS; i < n; i++) {
            rest->blocks += all[i].g.blocks;
            rest->bytes += all[i].g.bytes;
            rest->kept += all[i].g.kept;
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
    MT_ASSERT_GIL();
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

const char *
mt_peaks_origin_name(mt_peak_origin origin)
{
    static const char *const origins[] = {"code", "native/worker thread", "other locations"};
    return origins[origin];
}

static PyObject *
group_dict(const mt_peak_group *g)
{
    PyObject *d = PyDict_New();
    if (d == NULL ||
        mt_set(d, "origin", PyUnicode_FromString(mt_peaks_origin_name(g->origin))) < 0 ||
        mt_set(d, "line", g->line > 0 ? PyLong_FromLong(g->line) : Py_NewRef(Py_None)) < 0 ||
        mt_set(d, "text", text_or_none(g->text)) < 0 ||
        mt_set(d, "function", text_or_none(g->function)) < 0 ||
        mt_set(d, "file", text_or_none(g->file)) < 0 ||
        mt_set(d, "function_line",
               g->function_line > 0 ? PyLong_FromLong(g->function_line) : Py_NewRef(Py_None)) < 0 ||
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
    if (d == NULL || mt_set(d, "block_threshold", PyLong_FromLongLong(c->block_threshold)) < 0 ||
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
        PyErr_Format(PyExc_ValueError, "peaks_settings: %s must be a positive number of bytes",
                     name);
        return -1;
    }
    *out = v;
    return 0;
}

PyDoc_STRVAR(
    mt_peaks_settings__doc__,
    "peaks_settings(*, enabled=None, block=None, cell=None) -> dict: peak attribution on or off, "
    "the smallest block it follows (bytes, default 1 MiB) and the smallest cell peak it reports "
    "(bytes above the cell's start, default 64 MiB); from the next cell.");
PyObject *
mt_peaks_settings(PyObject *module, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"enabled", "block", "cell", NULL};
    PyObject *on = NULL, *block_arg = NULL, *cell_arg = NULL;
    long long new_block = block_threshold, new_cell = cell_threshold;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|$OOO:peaks_settings", keywords, &on,
                                     &block_arg, &cell_arg) ||
        size_setting(block_arg, "block", &new_block) < 0 ||
        size_setting(cell_arg, "cell", &new_cell) < 0) {
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
    return Py_BuildValue("{sOsLsL}", "enabled", enabled ? Py_True : Py_False, "block",
                         block_threshold, "cell", cell_threshold);
}

/* The _core methods of this file; module.c adds them at init. */
PyMethodDef mt_peaks_methods[] = {
    {"peaks_settings", (PyCFunction)(void (*)(void))mt_peaks_settings, METH_VARARGS | METH_KEYWORDS,
     mt_peaks_settings__doc__},
    {NULL, NULL, 0, NULL},
};
