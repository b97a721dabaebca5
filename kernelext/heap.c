/* heap: counting hooks on Python's allocators and numpy's buffers (heap.h). */
#define _GNU_SOURCE
#include "memtamer/heap.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "memtamer/config.h"
#include "memtamer/npy.h"
#include "memtamer/peaks.h"

#if MT_HAS_MALLOC_USABLE_SIZE || MT_HAS_MALLOC_TRIM
#include <malloc.h>
#endif
#if MT_HAS_MALLOC_USABLE_SIZE
#define BLOCK_SIZE(ptr) ((long long)malloc_usable_size(ptr))
#else
#define BLOCK_SIZE(ptr) 0LL
#endif

typedef struct {
    _Atomic long long current;
    _Atomic long long peak;
} counter;

/* Protected by atomics: the hooks update them from any thread, with or
 * without the GIL (the raw domain and numpy's handler run without it). */
static counter python_heap, numpy_heap;

static inline void
count(counter *c, long long delta)
{
    long long now = atomic_fetch_add_explicit(&c->current, delta, memory_order_relaxed) + delta;
    if (delta > 0) {
        long long peak = atomic_load_explicit(&c->peak, memory_order_relaxed);
        while (now > peak &&
               !atomic_compare_exchange_weak_explicit(&c->peak, &peak, now, memory_order_relaxed,
                                                      memory_order_relaxed)) {
        }
    }
}

static inline long long
counted_total(void)
{
    return atomic_load_explicit(&python_heap.current, memory_order_relaxed) +
           atomic_load_explicit(&numpy_heap.current, memory_order_relaxed);
}

/* Big blocks also go to peaks.c, which charges them to a code location. */
static inline void
count_new(counter *c, void *ptr, long long size)
{
    count(c, size);
    if (mt_peaks_tracks(size)) {
        mt_peaks_allocated(ptr, size, counted_total());
    }
}

static inline void
count_freeing(counter *c, void *ptr)
{
    long long size = BLOCK_SIZE(ptr);
    if (mt_peaks_tracks(size)) {
        mt_peaks_freeing(ptr, counted_total());
    }
    count(c, -size);
}

static inline void
count_moved(counter *c, void *old, long long old_size, void *ptr)
{
    long long size = BLOCK_SIZE(ptr);
    count(c, size - old_size);
    if (mt_peaks_tracks(old_size) || mt_peaks_tracks(size)) {
        mt_peaks_reallocated(old, ptr, size, counted_total());
    }
}

static void
reset(counter *c, mt_heap_reading *out)
{
    long long now = atomic_load_explicit(&c->current, memory_order_relaxed);
    atomic_store_explicit(&c->peak, now, memory_order_relaxed);
    out->current = out->peak = now;
}

static void
read_counter(counter *c, mt_heap_reading *out)
{
    out->current = atomic_load_explicit(&c->current, memory_order_relaxed);
    out->peak = atomic_load_explicit(&c->peak, memory_order_relaxed);
    if (out->peak < out->current) {
        out->peak = out->current;
    }
}

long long
mt_heap_free_bytes(void)
{
#if MT_HAS_MALLINFO2
    struct mallinfo2 info = mallinfo2();
    return (long long)info.fordblks;
#else
    return -1;
#endif
}

int
mt_heap_trim(void)
{
#if MT_HAS_MALLOC_TRIM
    return malloc_trim(0);
#else
    return 0;
#endif
}

void
mt_heap_reset_peaks(mt_heap_reading *python, mt_heap_reading *numpy)
{
    reset(&python_heap, python);
    reset(&numpy_heap, numpy);
}

void
mt_heap_read(mt_heap_reading *python, mt_heap_reading *numpy)
{
    read_counter(&python_heap, python);
    read_counter(&numpy_heap, numpy);
}

long long
mt_heap_counted(void)
{
    return counted_total();
}

/* The refusal policy (heap.h).  Protected by atomics: set with the GIL held
 * (by the guard at enable and disable), read by the hooks from any thread;
 * the context is stored before the policy that reads it is published. */
static _Atomic(mt_heap_refusal) refusal;
static void *_Atomic refusal_ctx;

void
mt_heap_set_refusal(mt_heap_refusal policy, void *ctx)
{
    if (policy == NULL) {
        atomic_store_explicit(&refusal, NULL, memory_order_release);
        return;
    }
    atomic_store_explicit(&refusal_ctx, ctx, memory_order_relaxed);
    atomic_store_explicit(&refusal, policy, memory_order_release);
}

/* The policy sees large requests only; growth by realloc is asked for as
 * its increase. */
static inline int
over_budget(size_t request, size_t block, mt_heap_hook hook)
{
    if (block < MT_HEAP_LARGE_REQUEST) {
        return 0;
    }
    mt_heap_refusal policy = atomic_load_explicit(&refusal, memory_order_acquire);
    return policy != NULL &&
           policy(atomic_load_explicit(&refusal_ctx, memory_order_relaxed), request, hook);
}

/* ------------------------------------------------------------------ */
/* Python's allocator domains                                          */
/* ------------------------------------------------------------------ */

/* The allocators we wrap.  Written only with the GIL held, in install,
 * before our hooks are published; never cleared, so a thread still inside a
 * hook after uninstall calls a valid allocator.  The hooks ignore their ctx
 * argument: PyMem_SetAllocator copies {ctx, functions} without a lock, so a
 * raw allocation racing with install may pair our function with the old ctx. */
static PyMemAllocatorEx saved_raw, saved_mem, saved_obj;
static PyObjectArenaAllocator saved_arena;

/* MODE_REFUSE_ONLY: Python's debug hooks (-X dev, PYTHONMALLOC=debug) wrap
 * every domain and hand out pointers offset into their blocks, so
 * malloc_usable_size cannot size them and pymalloc's large blocks pass
 * through the raw domain a second time: there the hooks count nothing and
 * only hold large requests against the budget. */
enum { MODE_NONE, MODE_PYMALLOC, MODE_MALLOC, MODE_REFUSE_ONLY };
/* Written only with the GIL held, before the hooks are published. */
static int installed_mode = MODE_NONE;

/* The size asked for, which the debug hooks keep big-endian in the first
 * sizeof(size_t) bytes of their header, two size_t before the data
 * (CPython's Objects/obmalloc.c, "debug malloc"). */
static long long
debug_requested_size(const void *ptr)
{
    const unsigned char *header = (const unsigned char *)ptr - 2 * sizeof(size_t);
    size_t n = 0;
    for (size_t i = 0; i < sizeof(size_t); i++) {
        n = (n << 8) | header[i];
    }
    return (long long)n;
}

static inline int
counting(void)
{
    return installed_mode != MODE_REFUSE_ONLY;
}

static inline long long
python_block_size(void *ptr)
{
    return counting() ? BLOCK_SIZE(ptr) : debug_requested_size(ptr);
}

static inline void *
counted_malloc(const PyMemAllocatorEx *prev, size_t size)
{
    if (over_budget(size, size, MT_HEAP_PYTHON)) {
        return NULL;
    }
    void *ptr = prev->malloc(prev->ctx, size);
    if (ptr && counting()) {
        count_new(&python_heap, ptr, BLOCK_SIZE(ptr));
    }
    return ptr;
}

static inline void *
counted_calloc(const PyMemAllocatorEx *prev, size_t nelem, size_t elsize)
{
    size_t size = elsize && nelem > SIZE_MAX / elsize ? SIZE_MAX : nelem * elsize;
    if (over_budget(size, size, MT_HEAP_PYTHON)) {
        return NULL;
    }
    void *ptr = prev->calloc(prev->ctx, nelem, elsize);
    if (ptr && counting()) {
        count_new(&python_heap, ptr, BLOCK_SIZE(ptr));
    }
    return ptr;
}

static inline void *
counted_realloc(const PyMemAllocatorEx *prev, void *old, size_t size)
{
    long long old_size = old ? python_block_size(old) : 0;
    if ((long long)size > old_size && over_budget(size - (size_t)old_size, size, MT_HEAP_PYTHON)) {
        return NULL;
    }
    void *ptr = prev->realloc(prev->ctx, old, size);
    if (ptr && counting()) {
        count_moved(&python_heap, old, old_size, ptr);
    }
    return ptr;
}

static inline void
counted_free(const PyMemAllocatorEx *prev, void *ptr)
{
    if (ptr && counting()) {
        count_freeing(&python_heap, ptr);
    }
    prev->free(prev->ctx, ptr);
}

/* One set of hooks per domain, each bound to its saved allocator. */
#define COUNTING_DOMAIN(name)                                                                      \
    static void *name##_malloc(void *ctx, size_t size)                                             \
    {                                                                                              \
        (void)ctx;                                                                                 \
        return counted_malloc(&saved_##name, size);                                                \
    }                                                                                              \
    static void *name##_calloc(void *ctx, size_t nelem, size_t elsize)                             \
    {                                                                                              \
        (void)ctx;                                                                                 \
        return counted_calloc(&saved_##name, nelem, elsize);                                       \
    }                                                                                              \
    static void *name##_realloc(void *ctx, void *ptr, size_t size)                                 \
    {                                                                                              \
        (void)ctx;                                                                                 \
        return counted_realloc(&saved_##name, ptr, size);                                          \
    }                                                                                              \
    static void name##_free(void *ctx, void *ptr)                                                  \
    {                                                                                              \
        (void)ctx;                                                                                 \
        counted_free(&saved_##name, ptr);                                                          \
    }                                                                                              \
    static PyMemAllocatorEx name##_hooks = {NULL, name##_malloc, name##_calloc, name##_realloc,    \
                                            name##_free};

COUNTING_DOMAIN(raw)
COUNTING_DOMAIN(mem)
COUNTING_DOMAIN(obj)

/* pymalloc serves small blocks from arenas it maps itself and passes large
 * ones to the raw domain: raw + arenas is everything it holds. */
static void *
arena_alloc(void *ctx, size_t size)
{
    (void)ctx;
    void *ptr = saved_arena.alloc(saved_arena.ctx, size);
    if (ptr) {
        count(&python_heap, (long long)size);
    }
    return ptr;
}

static void
arena_free(void *ctx, void *ptr, size_t size)
{
    (void)ctx;
    saved_arena.free(saved_arena.ctx, ptr, size);
    count(&python_heap, -(long long)size);
}

static PyObjectArenaAllocator arena_hooks = {NULL, arena_alloc, arena_free};

/* Why malloc_usable_size cannot be trusted on the blocks we would see, or
 * NULL; *debug_hooks says whether Python's debug hooks are the reason.
 * Debug hooks hand out pointers offset into malloc'd blocks. */
static const char *
unavailable_reason(int *debug_hooks)
{
    static char why[160];
    *debug_hooks = 0;
    if (!MT_HAS_MALLOC_USABLE_SIZE) {
        return "needs glibc's malloc_usable_size";
    }
    *debug_hooks = 1;
#ifdef Py_DEBUG
    return "a debug build of Python installs debug allocator hooks";
#endif
    const char *env = getenv("PYTHONMALLOC");
    if (env && *env && strcmp(env, "malloc") != 0 && strcmp(env, "pymalloc") != 0) {
        snprintf(why, sizeof why, "PYTHONMALLOC=%.100s is not malloc or pymalloc", env);
        return why;
    }
    PyObject *flags = PySys_GetObject("flags"); /* borrowed */
    PyObject *dev = flags ? PyObject_GetAttrString(flags, "dev_mode") : NULL;
    int dev_mode = dev ? PyObject_IsTrue(dev) : 0;
    Py_XDECREF(dev);
    PyErr_Clear();
    if (dev_mode > 0) {
        return "-X dev installs debug allocator hooks";
    }
    *debug_hooks = 0;
    return NULL;
}

const char *
mt_heap_method(const char **why)
{
    int debug_hooks;
    *why = unavailable_reason(&debug_hooks);
    if (*why) {
        return NULL;
    }
    const char *env = getenv("PYTHONMALLOC");
    return (env && strcmp(env, "malloc") == 0) ? "malloc" : "pymalloc-raw+arena";
}

int
mt_heap_install(void)
{
    int debug_hooks;
    const char *why;
    if (installed_mode != MODE_NONE) {
        return 0;
    }
    const char *method = mt_heap_method(&why);
    if (method == NULL) {
        unavailable_reason(&debug_hooks);
        if (!debug_hooks) {
            return 0;
        }
    }
    /* The mode is set before the hooks are published. */
    installed_mode = method == NULL                  ? MODE_REFUSE_ONLY
                     : strcmp(method, "malloc") == 0 ? MODE_MALLOC
                                                     : MODE_PYMALLOC;
    PyMem_GetAllocator(PYMEM_DOMAIN_RAW, &saved_raw);
    PyMem_SetAllocator(PYMEM_DOMAIN_RAW, &raw_hooks);
    if (installed_mode != MODE_PYMALLOC) {
        PyMem_GetAllocator(PYMEM_DOMAIN_MEM, &saved_mem);
        PyMem_GetAllocator(PYMEM_DOMAIN_OBJ, &saved_obj);
        PyMem_SetAllocator(PYMEM_DOMAIN_MEM, &mem_hooks);
        PyMem_SetAllocator(PYMEM_DOMAIN_OBJ, &obj_hooks);
    }
    else {
        PyObject_GetArenaAllocator(&saved_arena);
        PyObject_SetArenaAllocator(&arena_hooks);
    }
    return 0;
}

int
mt_heap_installed(void)
{
    return installed_mode == MODE_PYMALLOC || installed_mode == MODE_MALLOC;
}

int
mt_heap_refusing(void)
{
    return installed_mode != MODE_NONE;
}

static int
still_ours(PyMemAllocatorDomain domain, const PyMemAllocatorEx *hooks)
{
    PyMemAllocatorEx now;
    PyMem_GetAllocator(domain, &now);
    return now.malloc == hooks->malloc;
}

int
mt_heap_uninstall(void)
{
    if (installed_mode == MODE_NONE) {
        return 0;
    }
    PyObjectArenaAllocator arena_now;
    PyObject_GetArenaAllocator(&arena_now);
    int ours = still_ours(PYMEM_DOMAIN_RAW, &raw_hooks);
    if (installed_mode != MODE_PYMALLOC) {
        ours = ours && still_ours(PYMEM_DOMAIN_MEM, &mem_hooks) &&
               still_ours(PYMEM_DOMAIN_OBJ, &obj_hooks);
    }
    else {
        ours = ours && arena_now.alloc == arena_alloc;
    }
    if (!ours) {
        return 1; /* someone wraps us: removing ours would drop theirs */
    }
    PyMem_SetAllocator(PYMEM_DOMAIN_RAW, &saved_raw);
    if (installed_mode != MODE_PYMALLOC) {
        PyMem_SetAllocator(PYMEM_DOMAIN_MEM, &saved_mem);
        PyMem_SetAllocator(PYMEM_DOMAIN_OBJ, &saved_obj);
    }
    else {
        PyObject_SetArenaAllocator(&saved_arena);
    }
    installed_mode = MODE_NONE;
    return 0;
}

static PyObject *
pair(void *function, void *ctx)
{
    return Py_BuildValue("(KK)", (unsigned long long)(uintptr_t)function,
                         (unsigned long long)(uintptr_t)ctx);
}

PyObject *
mt_heap_allocators(void)
{
    PyMemAllocatorEx raw, mem, obj;
    PyObjectArenaAllocator arena;
    PyMem_GetAllocator(PYMEM_DOMAIN_RAW, &raw);
    PyMem_GetAllocator(PYMEM_DOMAIN_MEM, &mem);
    PyMem_GetAllocator(PYMEM_DOMAIN_OBJ, &obj);
    PyObject_GetArenaAllocator(&arena);
    return Py_BuildValue("{sNsNsNsN}", "raw", pair((void *)raw.malloc, raw.ctx), "mem",
                         pair((void *)mem.malloc, mem.ctx), "obj",
                         pair((void *)obj.malloc, obj.ctx), "arena",
                         pair((void *)arena.alloc, arena.ctx));
}

/* ------------------------------------------------------------------ */
/* numpy's data buffers                                                */
/* ------------------------------------------------------------------ */

/* numpy's default handler, which ours wraps.  Written once with the GIL
 * held before our capsule is first given to numpy; read-only after, from
 * whatever thread numpy allocates in. */
static PyDataMemAllocator wrapped;

static void *
np_malloc(void *ctx, size_t size)
{
    (void)ctx;
    if (over_budget(size, size, MT_HEAP_NUMPY)) {
        return NULL;
    }
    void *ptr = wrapped.malloc(wrapped.ctx, size);
    if (ptr) {
        count_new(&numpy_heap, ptr, BLOCK_SIZE(ptr));
    }
    return ptr;
}

static void *
np_calloc(void *ctx, size_t nelem, size_t elsize)
{
    (void)ctx;
    size_t size = elsize && nelem > SIZE_MAX / elsize ? SIZE_MAX : nelem * elsize;
    if (over_budget(size, size, MT_HEAP_NUMPY)) {
        return NULL;
    }
    void *ptr = wrapped.calloc(wrapped.ctx, nelem, elsize);
    if (ptr) {
        count_new(&numpy_heap, ptr, BLOCK_SIZE(ptr));
    }
    return ptr;
}

static void *
np_realloc(void *ctx, void *old, size_t size)
{
    (void)ctx;
    long long old_size = old ? BLOCK_SIZE(old) : 0;
    if ((long long)size > old_size && over_budget(size - (size_t)old_size, size, MT_HEAP_NUMPY)) {
        return NULL;
    }
    void *ptr = wrapped.realloc(wrapped.ctx, old, size);
    if (ptr) {
        count_moved(&numpy_heap, old, old_size, ptr);
    }
    return ptr;
}

static void
np_free(void *ctx, void *ptr, size_t size)
{
    (void)ctx;
    if (ptr) {
        count_freeing(&numpy_heap, ptr);
    }
    wrapped.free(wrapped.ctx, ptr, size);
}

static PyDataMem_Handler counting_handler = {
    "memtamer_counting", 1, {NULL, np_malloc, np_calloc, np_realloc, np_free}};

/* Our handler's capsule; only touched with the GIL held.  Arrays keep a
 * reference to it, so it lives as long as the last array it allocated. */
static PyObject *counting_capsule = NULL;

static int
make_capsule(void)
{
    PyDataMem_Handler *def = PyCapsule_GetPointer(PyDataMem_DefaultHandler, "mem_handler");
    if (def == NULL) {
        return -1;
    }
    wrapped = def->allocator;
    counting_capsule = PyCapsule_New(&counting_handler, "mem_handler", NULL);
    return counting_capsule ? 0 : -1;
}

/* Worker threads: numpy keeps the current handler in a ContextVar and a new
 * thread starts with the default one, so our per-cell handler never sees
 * them.  While the guard asks for it, the default handler's functions are
 * ours (which call the saved originals), so a worker's buffer is counted and
 * refused too.  Arrays keep the handler capsule, not the functions: a buffer
 * is always freed by the same underlying free.  Only touched with the GIL
 * held. */
static int cover_threads_wanted = 0;
static PyDataMem_Handler *covered_default = NULL;

/* 1 when the n bytes at p can be written: a pipe round trip copies them
 * onto themselves, and the kernel says EFAULT instead of us crashing. */
static int
writable(void *p, size_t n)
{
    int fds[2];
    if (pipe(fds) < 0) {
        return 0;
    }
    int ok = write(fds[1], p, n) == (ssize_t)n && read(fds[0], p, n) == (ssize_t)n;
    close(fds[0]);
    close(fds[1]);
    return ok;
}

static void
cover_threads(void)
{
    if (!cover_threads_wanted || covered_default != NULL || counting_capsule == NULL) {
        return;
    }
    PyDataMem_Handler *def = PyCapsule_GetPointer(PyDataMem_DefaultHandler, "mem_handler");
    if (def == NULL) {
        PyErr_Clear();
        return;
    }
    if (def->allocator.malloc != wrapped.malloc ||
        !writable(&def->allocator, sizeof def->allocator)) {
        return; /* somebody else changed it, or it is read-only: leave it */
    }
    covered_default = def;
    def->allocator.malloc = np_malloc;
    def->allocator.calloc = np_calloc;
    def->allocator.realloc = np_realloc;
    def->allocator.free = np_free;
}

void
mt_heap_numpy_cover_threads(int on)
{
    cover_threads_wanted = on;
    if (on) {
        cover_threads();
    }
    else if (covered_default != NULL) {
        covered_default->allocator = wrapped;
        covered_default = NULL;
    }
}

int
mt_heap_numpy_threads_covered(void)
{
    return covered_default != NULL;
}

int
mt_heap_numpy_begin(PyObject **original)
{
    int ready = mt_npy_ready();
    if (ready <= 0 || !MT_HAS_MALLOC_USABLE_SIZE) {
        return ready < 0 ? -1 : 0;
    }
    if (counting_capsule == NULL && make_capsule() < 0) {
        return -1;
    }
    cover_threads();
    PyObject *current = PyDataMem_GetHandler();
    if (current == NULL) {
        return -1;
    }
    int ours = current == counting_capsule, by_default = current == PyDataMem_DefaultHandler;
    Py_DECREF(current);
    if (ours || !by_default) {
        return ours; /* somebody else's: left alone rather than stacked on */
    }
    PyObject *replaced = PyDataMem_SetHandler(counting_capsule);
    if (replaced == NULL) {
        return -1;
    }
    Py_XSETREF(*original, replaced);
    return 1;
}

int
mt_heap_numpy_end(PyObject **original)
{
    PyObject *put_back = *original, *current = NULL;
    *original = NULL;
    if (put_back == NULL) {
        return 0;
    }
    int rc = -1;
    if ((current = PyDataMem_GetHandler()) == NULL) {
        goto done;
    }
    if (current == counting_capsule) {
        PyObject *ours = PyDataMem_SetHandler(put_back);
        if (ours == NULL) {
            goto done;
        }
        Py_DECREF(ours);
    }
    rc = 0;
done:
    Py_XDECREF(current);
    Py_DECREF(put_back);
    return rc;
}
