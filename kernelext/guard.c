/* guard: the memory budget, its watcher thread and the signal route to the
 * main thread (guard.h). */
#define _GNU_SOURCE
#include "memtamer/memtamer.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "memtamer/guard.h"
#include "memtamer/heap.h"
#include "memtamer/pod.h"
#include "memtamer/postmortem.h"
#include "memtamer/policy.h"
#include "memtamer/telemetry.h"
#include "memtamer/worker.h"

static const char *
shared_source(int version)
{
    return version == 2 ? "cgroup2" : version == 1 ? "cgroup1" : "machine";
}

PyObject *
mt_guard_shared_dict(const mt_probe_shared *s)
{
    PyObject *d = PyDict_New();
    if (d == NULL || mt_set(d, "source", PyUnicode_FromString(shared_source(s->version))) < 0 ||
        mt_set(d, "path", s->version ? PyUnicode_DecodeFSDefault(s->dir) : Py_NewRef(Py_None)) <
            0 ||
        mt_set(d, "limit", mt_size_or_none(s->limit)) < 0 ||
        mt_set(d, "use", mt_size_or_none(s->working_set)) < 0 ||
        mt_set(d, "usage", mt_size_or_none(s->usage)) < 0 ||
        mt_set(d, "inactive_file", mt_size_or_none(s->inactive_file)) < 0) {
        Py_XDECREF(d);
        return NULL;
    }
    return d;
}

static const char *
swap_source(int version)
{
    return version == 2   ? "cgroup2 memory.swap.max"
           : version == 1 ? "cgroup1 memory.memsw.limit_in_bytes"
                          : "SwapTotal";
}

PyObject *
mt_guard_swap_dict(const mt_probe_swap *s)
{
    PyObject *d = PyDict_New();
    if (d == NULL || mt_set(d, "source", PyUnicode_FromString(swap_source(s->version))) < 0 ||
        mt_set(d, "path", s->version ? PyUnicode_DecodeFSDefault(s->dir) : Py_NewRef(Py_None)) <
            0 ||
        mt_set(d, "limit", mt_size_or_none(s->limit)) < 0 ||
        mt_set(d, "used", mt_size_or_none(s->used)) < 0 ||
        mt_set(d, "room", mt_size_or_none(s->room)) < 0) {
        Py_XDECREF(d);
        return NULL;
    }
    return d;
}

/* Only the watcher sees pure-Python growth and the growth of the cell's
 * children, and both are bounded by how fast pages can be faulted in (about
 * 0.4 GB/s on first touch here).  Far below the ceiling the watcher may sleep
 * as long as growth at 4 GB/s would need to reach it: a wakeup costs tens of
 * microseconds of CPU in a VM, and most cells run far below the budget. */
#define GROWTH_BYTES_PER_US 4096LL
#define MAX_NAP_US 200000L
/* How often the watcher looks at the cell's children while any lives: a
 * child that writes 256 MiB and ends 200 ms later is seen within 10%.
 * Walking /proc for them costs ten times a read of statm; with none alive
 * a look is one waitid. */
#define CHILD_LOOK_US 10000L
/* After a trip the ceiling rises by budget/GRACE_DIVISOR (at least
 * GRACE_MIN, at most half the room left under the limit). */
#define GRACE_DIVISOR 16
#define GRACE_MIN (32LL * 1024 * 1024)

/* Thrashing: the kernel waits for more than THRASH_FAULTS_PER_S pages a
 * second from disk (major faults: 4 MiB/s of 4 KiB pages) for
 * THRASH_SECONDS running, measured over looks THRASH_LOOK_SECONDS apart. */
#define THRASH_FAULTS_PER_S 1000.0
#define THRASH_SECONDS 3.0
#define THRASH_LOOK_SECONDS 1.0

/* A cell starting this soon after the last one's reading of the shared
 * working set takes it plus what our counters saw since, as small requests
 * do: cells run back to back (Run All, papermill) skip /proc/meminfo, and
 * the watcher reads it afresh while the cell runs. */
#define WORKING_FRESH_SECONDS 0.1

enum { TRIP_NONE, TRIP_WRITING, TRIP_PENDING, TRIP_DELIVERED };
typedef struct {
    mt_guard_layer layer;
    long long requested; /* refused request, -1 for the watcher */
    long long use;       /* estimated (refusals) or read (watcher) */
    long long ceiling;
    long long shared_use; /* working set when the shared limit was crossed, else -1 */
    long long shared_limit, shared_reserve;
    long long child_owned; /* the killed child's private memory */
    pid_t child_pid;
    char child_comm[16];
    /* The other kernels of the pod's ledger when it refused a reservation. */
    mt_pod_holder holders[MT_POD_HOLDERS];
    int held;
    long long serial;
    double thrash_rate; /* major faults a second when thrashing stopped the cell, else 0 */
} trip_record;

typedef enum { BUDGET_DEFAULT, BUDGET_BYTES, BUDGET_PERCENT, BUDGET_OFF } budget_mode;

/* ------------------------------------------------------------------ */
/* the guard's state                                                   */
/* ------------------------------------------------------------------ */

/* One per process, in static storage (the_guard below): the allocator
 * hooks (through the refusal policy heap.c is given), the watcher thread
 * and the signal route are process-wide, and the hooks stay installed after
 * the module is freed, so nothing they read may ever be freed.  The module
 * state points at it and owns its Python objects. */
typedef struct mt_guard {
    /* What the hooks, the watcher and the signal route share.  Protected by
     * atomics: the hooks read these from any thread without the GIL, the
     * watcher without the GIL.  Written with the GIL held at cell
     * boundaries and budget changes, and by whoever trips. */
    _Atomic int armed;                /* a cell runs and the budget is on */
    _Atomic long long ceiling;        /* bytes of use above which we act */
    _Atomic long long grace;          /* added to ceiling by each trip */
    _Atomic long long sample_rss;     /* RSS when last read ... */
    _Atomic long long sample_counted; /* ... and mt_heap_counted() then */
    _Atomic long long children_owned; /* what the cell's children own, last seen */
    /* A process the guard may not kill stopped the cell: what the children
     * do after is their supervisors' to handle, and for the rest of the
     * cell only the kernel itself is held to the budget (a worker that
     * keeps growing would otherwise stop the cell again while the first
     * stop is being shown). */
    _Atomic int children_excused;
    /* The most they owned together at a look, their RSS then, and whether
     * some child's private memory was unreadable (mt_guard_children_peak). */
    _Atomic long long children_peak_owned, children_rss_at_peak;
    _Atomic int children_unreadable;
    _Atomic long long cell_serial; /* which cell is armed */
    _Atomic int swap_counted;      /* use is RSS plus VmSwap (swap is room) */
    _Atomic int thrash_stop;       /* a thrashing cell is stopped (--thrashing stop) */
    /* A thrashing cell let run is told of live, once a cell: the rate the
     * watcher saw, for the signal handler to publish (0: nothing to tell),
     * and whether this cell was told of already. */
    _Atomic long long thrash_warn_rate;
    _Atomic int thrash_warned;
    _Atomic long long cell_start_use; /* RSS when it began */

    /* The memory shared with other processes (probe.h's mt_probe_shared):
     * the refusals and the watcher hold this kernel's next bytes against the
     * room its limit leaves too.  Protected by atomics like the above;
     * shared_files is written with the GIL held while shared_limit is -1,
     * and its descriptors are only replaced in place (dup2), closed at
     * module free. */
    mt_probe_shared_files shared_files;
    _Atomic long long shared_limit; /* -1: none watched */
    _Atomic long long shared_reserve;
    _Atomic long long shared_margin;  /* room past the reserve granted by trips */
    _Atomic long long shared_working; /* working set last read ... */
    _Atomic long long shared_counted; /* ... and mt_heap_counted() then */
    double working_read_at;           /* cell begin's last reading (GIL) */
    /* The ledger of the kernels sharing that limit (pod.h): large requests
     * reserve their bytes there.  Written with the GIL held while
     * shared_limit is -1 (a hook that read it just before may see a torn
     * path: its open fails and it decides alone). */
    mt_pod pod;
    char pod_dir[MT_PROBE_PATH_MAX]; /* the shared limit's directory it is for */
    _Atomic int pod_reserved;        /* the running cell reserved there */

    /* Protected by trip_state: the thread that moves it to TRIP_WRITING
     * owns trip until it publishes TRIP_PENDING (release); readers check
     * for TRIP_PENDING (acquire) with the GIL held. */
    _Atomic int trip_state;
    trip_record trip;

    /* Only touched with the GIL held. */
    budget_mode mode;
    long long bytes;  /* BUDGET_BYTES */
    double percent;   /* BUDGET_PERCENT */
    long long budget; /* effective, -1 when off */
    mt_probe_limit limit;
    int have_limit;
    mt_probe_shared shared; /* where the shared limit binds */
    int have_shared;
    int swap_allowed;   /* swap counts as room where there is some (%memguard --no-swap) */
    mt_probe_swap swap; /* where the swap this process may fill binds */
    int have_swap;
    long long trips;
    long long rss_before;                /* of the running cell */
    pid_t pid;                           /* of the process that owns the watcher */
    char runtime_dir[MT_PROBE_PATH_MAX]; /* where the pod's ledger lives; "": none */
    /* MemoryBudgetExceeded, the user's namespace and the renderer of the
     * exception's message: the module's references (mt_guard_traverse). */
    PyObject *budget_exceeded, *user_ns, *describe;

    /* The watcher touches only what follows, and the atomics above; it is
     * active while a budgeted cell runs.  Its lock guards children. */
    mt_worker watcher;
    pthread_t main_thread; /* the one the guard's signal goes to */
    mt_probe probe;        /* the watcher's own /proc files */
    mt_probe_children_mark children;
    mt_probe_children_mark children_looking; /* the watcher's own copy of it */
    double children_looked;                  /* when the watcher last looked at them */
    /* Major faults at the last look, when, and since when they have come
     * faster than THRASH_FAULTS_PER_S (0: they have not). */
    unsigned long long faults_then;
    double faults_looked, thrash_since;
    int children_alive; /* how many it saw then */
    long poll_us;
    int psi_fd;
    _Atomic long long polls;
    mt_postmortem *postmortem; /* the module's record, updated as the kernel runs */
} mt_guard;

static mt_guard the_guard;

/* Claims the trip record; a watcher trip may replace a pending refusal
 * (a cell that caught the MemoryError and kept growing). */
static int
trip_claim(mt_guard *g, int replace_pending)
{
    int state = atomic_load(&g->trip_state);
    for (;;) {
        if (state == TRIP_WRITING || (state == TRIP_PENDING && !replace_pending)) {
            return 0;
        }
        if (atomic_compare_exchange_weak(&g->trip_state, &state, TRIP_WRITING)) {
            g->trip.held = 0; /* the claimant may name the pod's kernels before publishing */
            g->trip.thrash_rate = 0;
            return 1;
        }
    }
}

/* shared_use >= 0: the shared limit was crossed, not the own budget; the
 * grace then goes to the room under the shared limit. */
static void
trip_publish(mt_guard *g, mt_guard_layer layer, long long requested, long long use, pid_t child,
             long long child_owned, const char *child_comm, long long shared_use)
{
    long long at = atomic_load(&g->ceiling);
    g->trip.layer = layer;
    g->trip.requested = requested;
    g->trip.use = use;
    g->trip.ceiling = at;
    g->trip.shared_use = shared_use;
    g->trip.shared_limit = atomic_load(&g->shared_limit);
    g->trip.shared_reserve = atomic_load(&g->shared_reserve);
    g->trip.child_pid = child;
    g->trip.child_owned = child_owned;
    snprintf(g->trip.child_comm, sizeof g->trip.child_comm, "%s", child_comm ? child_comm : "");
    g->trip.serial = atomic_load(&g->cell_serial);
    if (shared_use >= 0) {
        atomic_fetch_add(&g->shared_margin, atomic_load(&g->grace));
    }
    else {
        atomic_store(&g->ceiling, at + atomic_load(&g->grace));
    }
    atomic_store_explicit(&g->trip_state, TRIP_PENDING, memory_order_release);
}

/* This kernel's memory as the guard holds it: RSS, and what it has in
 * swap when swap is room (pages pushed there leave RSS but are still ours). */
static long long
own_use(mt_guard *g, long long rss)
{
    long long swapped = atomic_load(&g->swap_counted) ? mt_probe_vm_swap(&g->probe) : 0;
    return rss < 0 || swapped <= 0 ? rss : rss + swapped;
}

/* The kernel's own RSS as the hooks see it: the last reading plus what our
 * counters saw allocated since (never less than the reading). */
static long long
estimated_rss(mt_guard *g)
{
    long long grown = mt_heap_counted() - atomic_load(&g->sample_counted);
    return atomic_load(&g->sample_rss) + (grown > 0 ? grown : 0);
}

/* What the cell's children count against the budget now. */
static long long
children_counted(mt_guard *g)
{
    return atomic_load(&g->children_excused) ? 0 : atomic_load(&g->children_owned);
}

/* Use as the hooks see it: that and the cell's children. */
static long long
estimated_use(mt_guard *g)
{
    return estimated_rss(g) + children_counted(g);
}

/* The shared working set as last read plus what our counters saw since. */
static long long
estimated_working(mt_guard *g)
{
    long long grown = mt_heap_counted() - atomic_load(&g->shared_counted);
    return atomic_load(&g->shared_working) + (grown > 0 ? grown : 0);
}

/* Room the shared limit leaves for this kernel's next bytes: the limit
 * minus the reserve minus the working set in *working (read afresh for
 * large requests, else estimated_working); LLONG_MAX when no shared limit
 * is watched. */
static long long
shared_room(mt_guard *g, size_t request, long long *working)
{
    long long limit = atomic_load(&g->shared_limit);
    *working = -1;
    if (limit < 0) {
        return LLONG_MAX;
    }
    if (request >= MT_GUARD_FRESH_REQUEST) {
        *working = mt_probe_shared_working_set(&g->shared_files);
    }
    if (*working < 0) {
        *working = estimated_working(g);
    }
    return limit - atomic_load(&g->shared_reserve) + atomic_load(&g->shared_margin) - *working;
}

/* The room under the shared limit for a request of size, through the pod's
 * ledger for fresh requests (others' reservations count as used, and ours
 * is recorded when it fits): 1 when it fits, 0 when not (*working: the use
 * held against it; *held, holders: the pod's kernels), -1 when the ledger
 * cannot be used. */
static int
pod_fits(mt_guard *g, size_t size, long long *working, mt_pod_holder *holders, int *held)
{
    if (size < MT_GUARD_FRESH_REQUEST || atomic_load(&g->shared_limit) < 0) {
        return -1;
    }
    mt_pod_room room = {atomic_load(&g->shared_limit) - atomic_load(&g->shared_reserve) +
                            atomic_load(&g->shared_margin),
                        &g->shared_files};
    return mt_pod_reserve(&g->pod, &g->probe, &room, (long long)size,
                          estimated_rss(g) + (long long)size, working, holders, held);
}

/* The refusal policy heap.c's hooks ask about large requests (heap.h):
 * from any thread, with or without the GIL; never allocates, and takes no
 * lock but the pod ledger's (for fresh requests only).  1 when the request
 * must be refused (the trip is recorded). */
static int
refuse(void *ctx, size_t size, mt_heap_hook hook)
{
    mt_guard *g = ctx;
    mt_guard_layer layer = hook == MT_HEAP_NUMPY ? MT_GUARD_NUMPY : MT_GUARD_PYTHON;
    if (!atomic_load_explicit(&g->armed, memory_order_relaxed)) {
        return 0;
    }
    long long use = estimated_use(g);
    long long working = -1;
    mt_pod_holder holders[MT_POD_HOLDERS];
    int held = 0;
    int own_over = use + (long long)size > atomic_load(&g->ceiling);
    if (!own_over) {
        int fits = pod_fits(g, size, &working, holders, &held);
        if (fits == 1) {
            atomic_store(&g->pod_reserved, 1);
        }
        if (fits == 1 || (fits < 0 && (long long)size <= shared_room(g, size, &working))) {
            return 0;
        }
    }
    if (trip_claim(g, 0)) {
        memcpy(g->trip.holders, holders, (size_t)held * sizeof *holders);
        g->trip.held = held;
        trip_publish(g, layer, (long long)size, use, 0, 0, NULL, own_over ? -1 : working);
    }
    return 1;
}

/* A forked child is not the kernel: its hooks stop refusing (the parent's
 * watcher counts the child against the cell), and it has no watcher. */
static void
disarm_in_child(void)
{
    atomic_store(&the_guard.armed, 0);
}

static int
guard_signal(void)
{
    /* A real-time signal nobody else in a kernel uses; real-time signals
     * queue, so a trip is never merged away. */
    return SIGRTMAX - 6;
}

/* How long the watcher may sleep with use bytes in use (-1: unknown) and
 * shared_left bytes left under the shared limit. */
static long
nap_us(const mt_guard *g, long long use, long long shared_left)
{
    long long headroom = use < 0 ? 0 : atomic_load(&g->ceiling) - use;
    if (shared_left < headroom) {
        headroom = shared_left;
    }
    long long us = headroom > 0 ? headroom / GROWTH_BYTES_PER_US : 0;
    if (us < g->poll_us) {
        us = g->poll_us;
    }
    long most = g->children_alive > 0 ? CHILD_LOOK_US : MAX_NAP_US;
    return us > most ? most : (long)us;
}

/* 1 when memory pressure ended the nap early. */
static int
nap(mt_guard *g, long us)
{
    if (g->psi_fd >= 0) {
        struct pollfd pfd = {g->psi_fd, POLLPRI, 0};
        int ready = poll(&pfd, 1, (int)(us / 1000));
        if (ready >= 0) {
            return ready > 0;
        }
    }
    struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
    nanosleep(&ts, NULL);
    return 0;
}

/* Tells the main thread a trip is pending.  A real signal, not only
 * PyErr_SetInterruptEx: it also breaks the main thread out of a blocking
 * wait (a join, a future's result). */
static void
signal_main_thread(mt_guard *g)
{
    if (pthread_kill(g->main_thread, guard_signal()) != 0) {
        PyErr_SetInterruptEx(guard_signal());
    }
}

/* The major fault rate when the kernel has thrashed for THRASH_SECONDS,
 * else 0; the watcher's, no GIL. */
static double
thrash_look(mt_guard *g, double now)
{
    mt_probe_self self;
    if (now - g->faults_looked < THRASH_LOOK_SECONDS || mt_probe_read_self(&g->probe, &self) < 0 ||
        !self.faults_known) {
        return 0;
    }
    unsigned long long faults = self.major_faults;
    double rate =
        g->faults_looked > 0 ? (double)(faults - g->faults_then) / (now - g->faults_looked) : 0;
    g->faults_then = faults;
    g->faults_looked = now;
    if (rate < THRASH_FAULTS_PER_S) {
        g->thrash_since = 0;
        return 0;
    }
    if (g->thrash_since == 0) {
        g->thrash_since = now - THRASH_LOOK_SECONDS;
    }
    return now - g->thrash_since >= THRASH_SECONDS ? rate : 0;
}

/* One look at the process and the memory it shares; no GIL, no Python
 * objects.  Returns the use it saw (-1 when RSS could not be read) and in
 * *shared_left the room left under the shared limit. */
static long long
watch_once(mt_guard *g, const mt_probe_children_mark *mark, int look_at_children,
           long long *shared_left)
{
    /* RSS first: an allocation between the two reads is then missed until
     * the next poll, never counted twice. */
    long long rss = own_use(g, mt_probe_rss(&g->probe));
    *shared_left = LLONG_MAX;
    if (rss < 0) {
        return -1;
    }
    long long counted = mt_heap_counted();
    atomic_store(&g->sample_rss, rss);
    atomic_store(&g->sample_counted, counted);
    long long working =
        atomic_load(&g->shared_limit) >= 0 ? mt_probe_shared_working_set(&g->shared_files) : -1;
    if (working >= 0) {
        /* What other kernels reserved is as good as used: growth that asks
         * nothing of the ledger (small blocks, pure Python) must not take it. */
        working += mt_pod_others_outstanding(&g->pod, &g->probe);
        atomic_store(&g->shared_working, working);
        atomic_store(&g->shared_counted, counted);
        *shared_left = atomic_load(&g->shared_limit) - atomic_load(&g->shared_reserve) +
                       atomic_load(&g->shared_margin) - working;
    }
    mt_probe_children_use kids = {0};
    if (look_at_children) {
        mt_probe_children_now(&g->probe, mark, &kids);
        g->children_alive = kids.count;
        atomic_store(&g->children_owned, kids.owned);
        /* Only this thread writes the peak (and cell begin, between cells). */
        if (kids.owned > atomic_load(&g->children_peak_owned)) {
            atomic_store(&g->children_rss_at_peak, kids.rss_total);
            atomic_store(&g->children_peak_owned, kids.owned);
        }
        if (kids.unreadable) {
            atomic_store(&g->children_unreadable, 1);
        }
    }
    mt_postmortem_sample(g->postmortem, rss);
    long long use = rss + children_counted(g);
    double thrash_rate = thrash_look(g, mt_monotonic_seconds());
    if (thrash_rate > 0 && atomic_load(&g->thrash_stop) && atomic_load(&g->armed) &&
        trip_claim(g, 1)) {
        g->trip.thrash_rate = thrash_rate;
        trip_publish(g, MT_GUARD_WATCHER, -1, use, 0, 0, NULL, -1);
        g->thrash_since = 0; /* a cell that catches it thrashes THRASH_SECONDS again first */
        signal_main_thread(g);
        return use;
    }
    if (thrash_rate > 0 && !atomic_exchange(&g->thrash_warned, 1)) {
        /* Only the main thread may publish (the event API takes Python
         * objects): the handler runs there, between bytecodes. */
        atomic_store(&g->thrash_warn_rate, (long long)thrash_rate);
        signal_main_thread(g);
    }
    /* Others growing is no reason to stop this cell: only its own growth. */
    int shared_over = *shared_left < 0 && use > atomic_load(&g->cell_start_use);
    int own_over = use > atomic_load(&g->ceiling);
    if (!atomic_load(&g->armed) || !(own_over || shared_over) || !trip_claim(g, 1)) {
        return use;
    }
    /* The cell's children are what crossed it when the kernel itself is
     * within its ceiling, or grew less than the biggest of them owns. */
    long long shared_use = own_over ? -1 : working;
    int children_crossed = own_over ? rss <= atomic_load(&g->ceiling)
                                    : kids.biggest_owned > rss - atomic_load(&g->cell_start_use);
    char comm[16] = "";
    long long child_rss;
    pid_t victim = 0;
    if (look_at_children && kids.biggest_pid > 0 && children_crossed &&
        mt_probe_pid_rss(&g->probe, kids.biggest_pid, &child_rss, comm, sizeof comm) == 0) {
        if (kids.biggest_is_own) {
            victim = kids.biggest_pid;
            atomic_store(&g->children_owned, kids.owned - kids.biggest_owned);
        }
        else {
            atomic_store(&g->children_excused, 1);
        }
        trip_publish(g, victim ? MT_GUARD_CHILD : MT_GUARD_WORKER, -1, use, kids.biggest_pid,
                     kids.biggest_owned, comm, shared_use);
    }
    else {
        trip_publish(g, MT_GUARD_WATCHER, -1, use, 0, 0, NULL, shared_use);
    }
    signal_main_thread(g);
    /* The child dies once the main thread has taken the trip (or a look's
     * time later): a join waiting for it is then interrupted rather than
     * reaping it, and leaves its exit status to the next join. */
    if (victim > 0) {
        struct timespec step = {0, 500000};
        for (long waited = 0; waited < CHILD_LOOK_US && atomic_load(&g->trip_state) == TRIP_PENDING;
             waited += step.tv_nsec / 1000) {
            nanosleep(&step, NULL);
        }
        kill(victim, SIGKILL);
    }
    return use;
}

/* Sleeps us, or less when memory pressure rises; a child started during
 * a long nap would come and go unseen: wake to look at it (one waitid
 * every CHILD_LOOK_US). */
static void
doze(mt_guard *g, long us)
{
    for (long left = us; left > 0; left -= CHILD_LOOK_US) {
        if (nap(g, left < CHILD_LOOK_US ? left : CHILD_LOOK_US) ||
            (left > CHILD_LOOK_US && mt_probe_has_children())) {
            break;
        }
    }
}

/* The watcher's step (worker.h): no GIL, no Python objects. */
static void
watch_step(void *owner, int fresh)
{
    mt_guard *g = owner;
    if (fresh) {
        g->children_looked = 0; /* the cell's first look takes in its children */
        g->faults_looked = g->thrash_since = 0;
        atomic_store(&g->thrash_warned, 0);
        /* cell_begin has just read what a first look would see (the RSS,
         * the shared working set, the children): the watcher naps first,
         * as long as it would after that look, so a cell shorter than the
         * nap costs no look. */
        mt_worker_lock(&g->watcher);
        g->children_alive = g->children.count;
        mt_worker_unlock(&g->watcher);
        long long working;
        doze(g, nap_us(g, atomic_load(&g->cell_start_use), shared_room(g, 0, &working)));
        return;
    }
    mt_worker_lock(&g->watcher);
    mt_probe_children_mark_copy(&g->children_looking, &g->children);
    mt_worker_unlock(&g->watcher);
    atomic_fetch_add(&g->polls, 1);
    double now = mt_monotonic_seconds();
    int look_at_children = now - g->children_looked >= CHILD_LOOK_US / 1e6;
    if (look_at_children) {
        g->children_looked = now;
    }
    long long shared_left;
    long long use = watch_once(g, &g->children_looking, look_at_children, &shared_left);
    doze(g, nap_us(g, use, shared_left));
}

static void
watcher_set(mt_guard *g, int watching, const mt_probe_children_mark *mark)
{
    if (!g->watcher.started) {
        return;
    }
    if (mark) {
        mt_worker_lock(&g->watcher);
        mt_probe_children_mark_copy(&g->children, mark);
        mt_worker_unlock(&g->watcher);
    }
    mt_worker_set_active(&g->watcher, watching);
}

static void
watcher_stop(mt_guard *g)
{
    /* A forked child has no watcher thread (worker.h). */
    if (!g->watcher.started || g->pid != mt_worker_pid()) {
        return;
    }
    mt_worker_stop(&g->watcher);
    if (g->psi_fd >= 0) {
        close(g->psi_fd);
        g->psi_fd = -1;
    }
    mt_probe_close(&g->probe);
}

static int
watcher_start(mt_guard *g, const char *root)
{
    if (g->watcher.started) {
        return 0;
    }
    if (mt_probe_open(&g->probe, root) < 0 || g->probe.statm_fd < 0) {
        mt_probe_close(&g->probe);
        PyErr_SetString(PyExc_OSError, "memtamer's guard needs /proc/self/statm to watch RSS");
        return -1;
    }
    /* Wake when tasks stall on memory for 50 ms within a second; where the
     * trigger cannot be set the watcher sleeps. */
    g->psi_fd = mt_probe_psi_trigger(&g->probe, "some 50000 1000000");
    g->main_thread = pthread_self();
    g->pid = mt_worker_pid();
    mt_worker_init(&g->watcher, watch_step, g);
    int err = mt_worker_start(&g->watcher);
    if (err != 0) {
        errno = err;
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    return 0;
}

/* ---- fork ---- */

/* The watcher stops before os.fork() and starts again in the parent
 * (module.c runs these for all of memtamer's threads). */
static void
fork_pause(void *owner)
{
    mt_guard *g = owner;
    if (g->pid == mt_worker_pid()) {
        mt_worker_pause_for_fork(&g->watcher);
    }
}

/* A failure leaves the hooks refusing large requests without a watcher. */
static int
fork_resume(void *owner)
{
    mt_guard *g = owner;
    int err = mt_worker_resume_after_fork(&g->watcher);
    if (err != 0) {
        errno = err;
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* the budget                                                          */
/* ------------------------------------------------------------------ */

static mt_guard *
get_guard(PyObject *module)
{
    return mt_get_state(module)->guard;
}

static long long
default_reserve(long long limit)
{
    long long share = limit / 100 * MT_GUARD_RESERVE_PERCENT;
    return share > MT_GUARD_RESERVE_MIN ? share : MT_GUARD_RESERVE_MIN;
}

/* The swap the budget and the shared limit count as room besides memory:
 * what the binding cgroup or machine allows, when the user lets it. */
static long long
swap_allowance(const mt_guard *g)
{
    return g->swap_allowed && g->have_swap && g->swap.limit > 0 ? g->swap.limit : 0;
}

/* Finds where the shared limit binds and points the hooks' files there. */
static void
resolve_shared(mt_state *st, mt_guard *g)
{
    atomic_store(&g->shared_limit, -1);
    g->have_shared = mt_probe_read_shared(st->probe, &g->shared) == 0 &&
                     mt_probe_shared_open(st->probe, &g->shared, &g->shared_files) == 0;
    if (!g->have_shared) {
        return;
    }
    atomic_store(&g->shared_reserve, default_reserve(g->shared.limit));
    if (g->runtime_dir[0] && (g->pod.path[0] == '\0' || strcmp(g->pod_dir, g->shared.dir) != 0)) {
        mt_pod_close(&g->pod);
        /* Without a ledger the guard decides alone, as for one kernel. */
        if (mt_pod_open(&g->pod, &g->probe, g->runtime_dir, g->shared.dir) == 0) {
            snprintf(g->pod_dir, sizeof g->pod_dir, "%s", g->shared.dir);
        }
    }
    atomic_store(&g->shared_working, g->shared.working_set);
    atomic_store(&g->shared_counted, mt_heap_counted());
    /* The working set stays under the memory limit while the kernel
     * swaps: the room beyond it is the swap. */
    atomic_store(&g->shared_limit, g->shared.limit + swap_allowance(g));
}

/* Recomputes the effective budget from the mode and a fresh limit. */
static void
compute_budget(mt_state *st, mt_guard *g)
{
    MT_ASSERT_GIL();
    g->have_swap = mt_probe_read_swap(st->probe, &g->swap) == 0;
    atomic_store(&g->swap_counted, swap_allowance(g) > 0);
    resolve_shared(st, g);
    g->have_limit = mt_probe_read_limit(st->probe, &g->limit) == 0;
    long long limit = g->have_limit ? g->limit.limit + swap_allowance(g) : -1;
    switch (g->mode) {
    case BUDGET_OFF:
        g->budget = -1;
        break;
    case BUDGET_BYTES:
        g->budget = g->bytes;
        break;
    case BUDGET_PERCENT:
        g->budget = limit > 0 ? (long long)((double)limit * g->percent / 100.0) : -1;
        break;
    case BUDGET_DEFAULT:
        g->budget = limit > 0 ? limit - default_reserve(limit) : -1;
        break;
    }
    long long room = limit > g->budget ? (limit - g->budget) / 2 : GRACE_MIN;
    long long slack = g->budget / GRACE_DIVISOR;
    if (slack > room) {
        slack = room;
    }
    atomic_store(&g->grace, slack > GRACE_MIN ? slack : GRACE_MIN);
    mt_postmortem_set_limits(g->postmortem, limit, g->budget);
}

void
mt_guard_cell_begin(PyObject *module, long long cell, const char *first_line, long long rss_before,
                    const mt_probe_children_mark *children)
{
    MT_ASSERT_GIL();
    mt_state *st = mt_get_state(module);
    mt_guard *g = st->guard;
    if (g == NULL) {
        return;
    }
    atomic_store(&g->armed, 0);
    /* The watcher writes these while it runs; it is paused between cells. */
    atomic_store(&g->children_peak_owned, 0);
    atomic_store(&g->children_rss_at_peak, 0);
    atomic_store(&g->children_unreadable, 0);
    if (!g->watcher.started || g->pid != mt_worker_pid()) {
        return;
    }
    atomic_fetch_add(&g->cell_serial, 1);
    g->rss_before = rss_before;
    rss_before = own_use(g, rss_before);
    atomic_store(&g->cell_start_use, rss_before);
    /* Others may hold more than the shared limit leaves already: the cell
     * is then stopped on its own growth (the message says so). */
    atomic_store(&g->shared_margin, 0);
    long long working = -1;
    if (atomic_load(&g->shared_limit) >= 0) {
        double now = mt_monotonic_seconds();
        if (now - g->working_read_at < WORKING_FRESH_SECONDS) {
            working = estimated_working(g);
        }
        else if ((working = mt_probe_shared_working_set(&g->shared_files)) >= 0) {
            g->working_read_at = now;
        }
    }
    if (working >= 0) {
        long long room = atomic_load(&g->shared_limit) - atomic_load(&g->shared_reserve) - working;
        atomic_store(&g->shared_working, working);
        atomic_store(&g->shared_counted, mt_heap_counted());
        atomic_store(&g->shared_margin, room < 0 ? atomic_load(&g->grace) - room : 0);
    }
    atomic_store(&g->trip_state, TRIP_NONE);
    atomic_store(&g->children_owned, 0);
    atomic_store(&g->children_excused, 0);
    atomic_store(&g->sample_rss, rss_before);
    atomic_store(&g->sample_counted, mt_heap_counted());
    mt_postmortem_cell_begin(g->postmortem, cell, first_line, rss_before);
    if (g->budget < 0) {
        /* No budget: the watcher only follows the cell's children. */
        atomic_store(&g->ceiling, LLONG_MAX);
        watcher_set(g, 1, children);
        return;
    }
    /* A kernel already over its budget is stopped only for its growth in
     * this cell (the message says it began over). */
    long long start = g->budget;
    if (rss_before > g->budget) {
        start = rss_before + atomic_load(&g->grace);
    }
    atomic_store(&g->ceiling, start);
    watcher_set(g, 1, children);
    atomic_store(&g->armed, 1);
}

void
mt_guard_cell_end(PyObject *module, long long rss_after)
{
    MT_ASSERT_GIL();
    mt_guard *g = get_guard(module);
    atomic_store(&g->armed, 0);
    if (g == NULL || !g->watcher.started || g->pid != mt_worker_pid()) {
        return;
    }
    watcher_set(g, 0, NULL);
    if (atomic_exchange(&g->pod_reserved, 0)) {
        mt_pod_release(&g->pod);
    }
    /* What the stopped cell freed stays in glibc's heap and would leave the
     * kernel at its budget: give it back. */
    if (atomic_load(&g->trip_state) != TRIP_NONE && mt_heap_trim()) {
        rss_after = mt_probe_rss(&g->probe);
    }
    mt_postmortem_cell_end(g->postmortem, rss_after);
}

void
mt_guard_figures(PyObject *module, long long *budget, long long *trips)
{
    MT_ASSERT_GIL();
    mt_guard *g = get_guard(module);
    *budget = g ? g->budget : -1;
    *trips = g ? g->trips : 0;
}

/* ------------------------------------------------------------------ */
/* the exception                                                       */
/* ------------------------------------------------------------------ */

static const char *
layer_name(mt_guard_layer layer)
{
    switch (layer) {
    case MT_GUARD_NUMPY:
        return "numpy";
    case MT_GUARD_PYTHON:
        return "python";
    case MT_GUARD_CHILD:
        return "child";
    case MT_GUARD_WORKER:
        return "worker";
    default:
        return "watcher";
    }
}

/* The shared memory's figures (process.c's dict) with the reserve; use,
 * when not negative, replaces the working set read when it was resolved.
 * None when there is no shared figure. */
static PyObject *
shared_figures(mt_guard *g, long long use)
{
    if (!g->have_shared) {
        Py_RETURN_NONE;
    }
    mt_probe_shared now = g->shared;
    if (use >= 0) {
        now.working_set = use;
    }
    PyObject *d = mt_guard_shared_dict(&now);
    if (d == NULL || mt_set(d, "reserve", PyLong_FromLongLong(default_reserve(now.limit))) < 0) {
        Py_XDECREF(d);
        return NULL;
    }
    return d;
}

/* [(pid, rss, reserved)] of the pod's other kernels a refusal named. */
static PyObject *
pod_holders(const trip_record *t)
{
    PyObject *list = PyList_New(t->held);
    for (int i = 0; list != NULL && i < t->held; i++) {
        const mt_pod_holder *h = &t->holders[i];
        PyObject *item = Py_BuildValue("(iLL)", (int)h->pid, h->rss, h->reserved);
        if (item == NULL) {
            Py_CLEAR(list);
            break;
        }
        PyList_SET_ITEM(list, i, item);
    }
    return list;
}

static PyObject *
trip_dict(mt_guard *g, const trip_record *t)
{
    PyObject *d = PyDict_New();
    if (d == NULL || mt_set(d, "layer", PyUnicode_FromString(layer_name(t->layer))) < 0 ||
        mt_set(d, "requested", mt_size_or_none(t->requested)) < 0 ||
        mt_set(d, "use", PyLong_FromLongLong(t->use)) < 0 ||
        mt_set(d, "ceiling", PyLong_FromLongLong(t->ceiling)) < 0 ||
        mt_set(d, "budget", PyLong_FromLongLong(g->budget)) < 0 ||
        mt_set(d, "limit", mt_size_or_none(g->have_limit ? g->limit.limit : -1)) < 0 ||
        mt_set(d, "rss_before", mt_size_or_none(g->rss_before)) < 0 ||
        mt_set(d, "swap_counted", PyBool_FromLong(atomic_load(&g->swap_counted))) < 0 ||
        mt_set(d, "child_pid",
               t->child_pid > 0 ? PyLong_FromLong((long)t->child_pid) : Py_NewRef(Py_None)) < 0 ||
        mt_set(d, "child_private",
               t->child_pid > 0 ? PyLong_FromLongLong(t->child_owned) : Py_NewRef(Py_None)) < 0 ||
        mt_set(d, "child_command",
               t->child_pid > 0 ? PyUnicode_DecodeFSDefault(t->child_comm) : Py_NewRef(Py_None)) <
            0 ||
        mt_set(d, "crossed",
               PyUnicode_FromString(t->thrash_rate > 0   ? "thrashing"
                                    : t->shared_use >= 0 ? "shared"
                                                         : "budget")) < 0 ||
        mt_set(d, "major_faults_per_second",
               t->thrash_rate > 0 ? PyFloat_FromDouble(t->thrash_rate) : Py_NewRef(Py_None)) < 0 ||
        mt_set(d, "kernels", pod_holders(t)) < 0 ||
        mt_set(d, "shared", shared_figures(g, t->shared_use >= 0 ? t->shared_use : -1)) < 0) {
        Py_XDECREF(d);
        return NULL;
    }
    return d;
}

/* MemoryBudgetExceeded(describe(trip)) with the trip's figures as
 * attributes.  describe is the IPython layer's renderer; without it, or if
 * it fails, a plain message still says the figures. */
static PyObject *
make_exception(mt_state *st, const trip_record *t)
{
    PyObject *d = NULL, *message = NULL, *exc = NULL, *key, *value;
    Py_ssize_t pos = 0;
    d = trip_dict(st->guard, t);
    if (d == NULL) {
        goto done;
    }
    if (st->guard->describe) {
        message = PyObject_CallOneArg(st->guard->describe, d);
        if (message == NULL) {
            PyErr_Clear();
        }
    }
    if (message == NULL) {
        message = PyUnicode_FromFormat("memory budget of %lld bytes exceeded: use %lld bytes (%s)",
                                       st->guard->budget, t->use, layer_name(t->layer));
        if (message == NULL) {
            goto done;
        }
    }
    exc = PyObject_CallOneArg(st->guard->budget_exceeded, message);
    if (exc == NULL) {
        goto done;
    }
    while (PyDict_Next(d, &pos, &key, &value)) {
        if (PyObject_SetAttr(exc, key, value) < 0) {
            Py_CLEAR(exc);
            goto done;
        }
    }
done:
    Py_XDECREF(d);
    Py_XDECREF(message);
    return exc;
}

/* Takes the pending trip of the running cell into *out; 0 when none. */
static int
take_trip(mt_guard *g, trip_record *out, int watcher_only)
{
    if (atomic_load_explicit(&g->trip_state, memory_order_acquire) != TRIP_PENDING) {
        return 0;
    }
    *out = g->trip;
    int is_watcher = out->layer >= MT_GUARD_WATCHER;
    if (out->serial != atomic_load(&g->cell_serial) || (watcher_only && !is_watcher)) {
        return 0;
    }
    int expected = TRIP_PENDING;
    /* The watcher may have replaced the record meanwhile: take that one. */
    if (!atomic_compare_exchange_strong(&g->trip_state, &expected, TRIP_DELIVERED)) {
        return 0;
    }
    return 1;
}

/* Whether frame (or a caller) runs code of the user's namespace: a trip
 * that reaches IPython's own code after the cell is stale. */
static int
in_user_code(PyObject *frame, PyObject *user_ns)
{
    if (user_ns == NULL) {
        return 1;
    }
    if (frame == NULL || !PyFrame_Check(frame)) {
        return 0;
    }
    PyFrameObject *f = (PyFrameObject *)Py_NewRef(frame);
    while (f) {
        PyObject *globals = PyFrame_GetGlobals(f);
        int hit = globals == user_ns;
        Py_XDECREF(globals);
        PyFrameObject *back = hit ? NULL : PyFrame_GetBack(f);
        Py_DECREF(f);
        if (hit) {
            return 1;
        }
        f = back;
    }
    return 0;
}

/* The watcher saw the running cell thrash and let it run: watchers are
 * told at once (a "thrashing" event), not when the cell ends. */
static int
publish_thrashing(PyObject *module, long long rate)
{
    PyObject *data = Py_BuildValue("{sLss}", "major_faults_per_second", rate, "action", "warn");
    int result = data == NULL ? -1 : mt_telemetry_publish_event(module, "thrashing", data);
    Py_XDECREF(data);
    return result < 0 ? -1 : 0;
}

/* Python runs signal handlers in the main thread, with the GIL. */
PyDoc_STRVAR(mt_guard_signal_handler__doc__,
             "_guard_signal(signum, frame): the handler for GUARD_SIGNAL; raises "
             "MemoryBudgetExceeded, or publishes a thrashing cell's event.");
static PyObject *
mt_guard_signal_handler(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    mt_state *st = mt_get_state(module);
    trip_record t;
    MT_ASSERT_GIL();
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "_guard_signal(signum, frame)");
        return NULL;
    }
    long long thrash_rate = st->guard ? atomic_exchange(&st->guard->thrash_warn_rate, 0) : 0;
    if (thrash_rate > 0 && publish_thrashing(module, thrash_rate) < 0) {
        /* Watchers' news never raises into the user's cell. */
        PyErr_WriteUnraisable(module);
    }
    if (st->guard == NULL || !atomic_load(&st->guard->armed) || !take_trip(st->guard, &t, 1) ||
        !in_user_code(args[1], st->guard->user_ns)) {
        Py_RETURN_NONE; /* stale: the cell is over or already unwinding */
    }
    st->guard->trips++;
    PyObject *exc = make_exception(st, &t);
    if (exc == NULL) {
        return NULL;
    }
    PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
    Py_DECREF(exc);
    return NULL;
}

PyDoc_STRVAR(mt_guard_exception__doc__,
             "guard_exception() -> MemoryBudgetExceeded | None: the running cell's refusal (which "
             "numpy or CPython raised as a plain MemoryError) as the exception to show; None when "
             "this cell has none.");
static PyObject *
mt_guard_exception(PyObject *module, PyObject *Py_UNUSED(unused))
{
    MT_ASSERT_GIL();
    mt_state *st = mt_get_state(module);
    trip_record t;
    if (st->guard == NULL || !take_trip(st->guard, &t, 0)) {
        Py_RETURN_NONE;
    }
    st->guard->trips++;
    return make_exception(st, &t);
}

/* Sets the budget to mode (with bytes or percent); apply 0 only judges it.
 * -1 when the guard refuses it, with problem saying why; the budget in
 * force is then unchanged. */
static int
take_budget(mt_state *st, mt_guard *g, budget_mode mode, long long bytes, double percent, int apply,
            char *problem, size_t n)
{
    budget_mode saved_mode = g->mode;
    long long saved_bytes = g->bytes;
    double saved_percent = g->percent;
    g->mode = mode;
    if (mode == BUDGET_BYTES) {
        g->bytes = bytes;
    }
    else if (mode == BUDGET_PERCENT) {
        g->percent = percent;
    }
    compute_budget(st, g);
    long long rss = mt_probe_rss(st->probe), budget = g->budget;
    const char *why = NULL;
    if (mode == BUDGET_BYTES && bytes == 0) {
        why = MT_RULES_ZERO_BUDGET;
    }
    else if (mode != BUDGET_OFF && budget < 0) {
        why = "the effective memory limit is unknown here; give the budget in bytes";
    }
    else if (mode != BUDGET_OFF && rss >= 0 && budget <= rss) {
        why = "it is not above what the kernel already uses: give a larger budget, or free "
              "memory first";
    }
    else if (mode != BUDGET_OFF && g->have_limit && budget > g->limit.limit + swap_allowance(g)) {
        why = "it is above the effective memory limit: give a smaller budget, or a share such "
              "as 80%";
    }
    if (why != NULL || !apply) {
        g->mode = saved_mode;
        g->bytes = saved_bytes;
        g->percent = saved_percent;
        compute_budget(st, g);
    }
    if (mode == BUDGET_BYTES && bytes == 0) {
        snprintf(problem, n, "%s", why);
    }
    else if (why != NULL) {
        char asked[MT_RULES_SIZE_TEXT], uses[MT_RULES_SIZE_TEXT], limit[MT_RULES_SIZE_TEXT];
        char swap[MT_RULES_SIZE_TEXT + 32] = "";
        mt_rules_format_size(budget, 0, asked, sizeof asked);
        mt_rules_format_size(rss, 0, uses, sizeof uses);
        if (g->have_limit) {
            mt_rules_format_size(g->limit.limit, 0, limit, sizeof limit);
        }
        if (g->have_limit && swap_allowance(g) > 0) {
            char swap_size[MT_RULES_SIZE_TEXT];
            mt_rules_format_size(swap_allowance(g), 0, swap_size, sizeof swap_size);
            snprintf(swap, sizeof swap, " + %s of swap", swap_size);
        }
        snprintf(problem, n, "cannot set the memory budget to %s: %s (the kernel uses %s, %s%s%s)",
                 asked, why, uses, g->have_limit ? "the limit is " : "the limit is unknown",
                 g->have_limit ? limit : "", swap);
    }
    return why != NULL ? -1 : 0;
}

static int
guarding(const mt_guard *g)
{
    return g->watcher.started && g->pid == mt_worker_pid();
}

/* -1 with the RuntimeError a setting of the budget raises outside a kernel
 * with memtamer loaded; 0 when the guard runs. */
static int
require_guarding(const mt_guard *g)
{
    if (guarding(g)) {
        return 0;
    }
    PyErr_SetString(PyExc_RuntimeError,
                    "the memory budget guards an IPython kernel with memtamer loaded: "
                    "run %load_ext memtamer first, then set it");
    return -1;
}

/* The engine's mt_policy_budget_judge while the guard runs: a rules file's
 * budget is held to what %memguard holds it to. */
static int
judge_rules_budget(PyObject *module, const mt_rules_level *level, int swap, int apply,
                   char *problem, size_t n)
{
    MT_ASSERT_GIL();
    mt_state *st = mt_get_state(module);
    mt_guard *g = st->guard;
    if (!guarding(g)) {
        return 0;
    }
    budget_mode mode = g->mode;
    long long bytes = g->bytes;
    double percent = g->percent;
    if (level != NULL) {
        mode = level->kind == MT_LEVEL_OFF       ? BUDGET_OFF
               : level->kind == MT_LEVEL_PERCENT ? BUDGET_PERCENT
                                                 : BUDGET_BYTES;
        bytes = level->bytes;
        percent = level->percent;
    }
    int was = g->swap_allowed;
    if (swap >= 0) {
        g->swap_allowed = swap;
    }
    int rc = take_budget(st, g, mode, bytes, percent, apply, problem, n);
    if (rc < 0 || !apply) {
        g->swap_allowed = was;
        compute_budget(st, g);
    }
    return rc;
}

/* ------------------------------------------------------------------ */
/* Python methods                                                      */
/* ------------------------------------------------------------------ */

/* What enable and the setters answer with (guard_status, below them). */
static PyObject *mt_guard_status(PyObject *module, PyObject *unused);

PyDoc_STRVAR(mt_guard_enable__doc__,
             "guard_enable(user_ns, describe, runtime_dir=None) -> dict: start the watcher for "
             "this process and budget the cells that follow; large requests reserve their bytes "
             "in a ledger in runtime_dir shared by the kernels of the container.  Call it from "
             "the main thread, after registering _guard_signal for GUARD_SIGNAL.");
static PyObject *
mt_guard_enable(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    MT_ASSERT_GIL();
    mt_state *st = mt_get_state(module);
    mt_guard *g = st->guard;
    PyObject *runtime_dir = NULL;
    if (nargs < 2 || nargs > 3 || !PyDict_Check(args[0]) || !PyCallable_Check(args[1]) ||
        (nargs == 3 && args[2] != Py_None && !PyUnicode_FSConverter(args[2], &runtime_dir))) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_TypeError, "guard_enable(user_ns: dict, describe: callable, "
                                             "runtime_dir: str | None = None)");
        }
        return NULL;
    }
    int fits =
        runtime_dir == NULL || PyBytes_GET_SIZE(runtime_dir) < (Py_ssize_t)sizeof g->runtime_dir;
    snprintf(g->runtime_dir, sizeof g->runtime_dir, "%s",
             runtime_dir && fits ? PyBytes_AS_STRING(runtime_dir) : "");
    Py_XDECREF(runtime_dir);
    if (!fits) {
        PyErr_SetString(PyExc_ValueError, "guard_enable: the runtime directory's path is too long");
        return NULL;
    }
    Py_XSETREF(g->user_ns, Py_NewRef(args[0]));
    Py_XSETREF(g->describe, Py_NewRef(args[1]));
    if (g->pid != mt_worker_pid()) {
        mt_worker_forget_in_child(&g->watcher); /* the thread stayed in the parent */
    }
    if (watcher_start(g, st->probe->root) < 0) {
        return NULL;
    }
    compute_budget(st, g);
    mt_heap_set_refusal(refuse, g);
    mt_heap_numpy_cover_threads(1);
    st->policy.budget_judge = judge_rules_budget;
    return mt_guard_status(module, NULL);
}

PyDoc_STRVAR(mt_guard_disable__doc__, "guard_disable(): stop the watcher and the budget.");
static PyObject *
mt_guard_disable(PyObject *module, PyObject *Py_UNUSED(unused))
{
    MT_ASSERT_GIL();
    mt_guard *g = get_guard(module);
    mt_get_state(module)->policy.budget_judge = NULL;
    atomic_store(&g->armed, 0);
    mt_heap_set_refusal(NULL, NULL);
    mt_heap_numpy_cover_threads(0);
    watcher_stop(g);
    atomic_store(&g->shared_limit, -1);
    mt_pod_close(&g->pod);
    Py_CLEAR(g->user_ns);
    Py_CLEAR(g->describe);
    Py_RETURN_NONE;
}

/* ValueError for a budget value the size grammar refuses, as the magics
 * and the rules file word it; NULL. */
static PyObject *
refuse_budget(PyObject *value, const char *suffix)
{
    PyObject *text = PyUnicode_FromFormat("%S%s", value, suffix);
    const char *utf8 = text ? PyUnicode_AsUTF8(text) : NULL;
    if (utf8 != NULL) {
        char problem[MT_RULES_PROBLEM_MAX];
        mt_rules_level_problem(utf8, 1, problem, sizeof problem);
        PyErr_SetString(PyExc_ValueError, problem);
    }
    Py_XDECREF(text);
    return NULL;
}

PyDoc_STRVAR(mt_guard_set_budget__doc__,
             "guard_set_budget(kind, value) -> guard_status(): kind 'default' (value ignored), "
             "'bytes', 'percent' (of the effective limit) or 'off'.");
static PyObject *
mt_guard_set_budget(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    MT_ASSERT_GIL();
    mt_state *st = mt_get_state(module);
    mt_guard *g = st->guard;
    const char *kind;
    budget_mode mode;
    long long bytes = 0;
    double percent = 0;
    char problem[MT_RULES_MESSAGE_BYTES];
    if (nargs != 2 || (kind = PyUnicode_AsUTF8(args[0])) == NULL) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_TypeError, "guard_set_budget(kind, value)");
        }
        return NULL;
    }
    if (require_guarding(g) < 0) {
        return NULL;
    }
    if (strcmp(kind, "default") == 0) {
        mode = BUDGET_DEFAULT;
    }
    else if (strcmp(kind, "off") == 0) {
        mode = BUDGET_OFF;
    }
    else if (strcmp(kind, "bytes") == 0) {
        int overflow = 0;
        bytes = PyLong_AsLongLongAndOverflow(args[1], &overflow);
        if (bytes == -1 && PyErr_Occurred()) {
            return NULL;
        }
        if (overflow != 0 || bytes < 0) {
            return refuse_budget(args[1], "");
        }
        mode = BUDGET_BYTES;
    }
    else if (strcmp(kind, "percent") == 0) {
        percent = PyFloat_AsDouble(args[1]);
        if (percent == -1.0 && PyErr_Occurred()) {
            return NULL;
        }
        if (!(percent > 0.0 && percent <= 100.0)) {
            return refuse_budget(args[1], "%");
        }
        mode = BUDGET_PERCENT;
    }
    else {
        PyErr_Format(PyExc_ValueError, "unknown budget kind '%s'", kind);
        return NULL;
    }
    if (take_budget(st, g, mode, bytes, percent, 1, problem, sizeof problem) < 0) {
        PyErr_SetString(PyExc_ValueError, problem);
        return NULL;
    }
    return mt_guard_status(module, NULL);
}

PyDoc_STRVAR(mt_guard_set_swap__doc__,
             "guard_set_swap(allowed) -> guard_status(): whether the budget counts swap as room "
             "besides memory, where there is swap (%memguard --no-swap keeps it in RAM).");
static PyObject *
mt_guard_set_swap(PyObject *module, PyObject *allowed)
{
    MT_ASSERT_GIL();
    mt_state *st = mt_get_state(module);
    mt_guard *g = st->guard;
    char problem[MT_RULES_MESSAGE_BYTES];
    int want = PyObject_IsTrue(allowed);
    if (want < 0) {
        return NULL;
    }
    if (require_guarding(g) < 0) {
        return NULL;
    }
    int was = g->swap_allowed;
    g->swap_allowed = want;
    /* The budget in force, judged again against the room without (or with) swap. */
    if (take_budget(st, g, g->mode, g->bytes, g->percent, 1, problem, sizeof problem) < 0) {
        g->swap_allowed = was;
        compute_budget(st, g);
        PyErr_SetString(PyExc_ValueError, problem);
        return NULL;
    }
    return mt_guard_status(module, NULL);
}

PyDoc_STRVAR(mt_guard_set_thrashing__doc__,
             "guard_set_thrashing(action) -> guard_status(): 'stop' ends a cell that thrashes "
             "(waits on pages from disk faster than the threshold for some seconds) with "
             "MemoryBudgetExceeded, crossed 'thrashing'; 'warn' only reports it.");
static PyObject *
mt_guard_set_thrashing(PyObject *module, PyObject *action)
{
    MT_ASSERT_GIL();
    mt_guard *g = get_guard(module);
    const char *s = PyUnicode_Check(action) ? PyUnicode_AsUTF8(action) : NULL;
    if (s == NULL || (strcmp(s, "stop") != 0 && strcmp(s, "warn") != 0)) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_ValueError,
                            "a thrashing cell is either stopped or warned about: write "
                            "--thrashing stop or --thrashing warn");
        }
        return NULL;
    }
    atomic_store(&g->thrash_stop, strcmp(s, "stop") == 0);
    return mt_guard_status(module, NULL);
}

static const char *
mode_name(budget_mode mode)
{
    static const char *names[] = {"default", "bytes", "percent", "off"};
    return names[mode];
}

/* The shared figures read now, for status and the process view. */
static PyObject *
shared_now(mt_state *st, mt_guard *g)
{
    long long working = -1;
    if (g->have_shared && atomic_load(&g->shared_limit) >= 0) {
        working = mt_probe_shared_working_set(&g->shared_files);
    }
    if (working < 0 && (g->have_shared = mt_probe_read_shared(st->probe, &g->shared) == 0)) {
        working = g->shared.working_set;
    }
    return shared_figures(g, working);
}

/* The swap read now, with whether the guard counts it (allowed: the
 * user's setting; counted: allowed and there is swap to fill) and this
 * kernel's own part of it. */
static PyObject *
swap_now(mt_state *st, mt_guard *g)
{
    mt_probe_swap swap;
    if (mt_probe_read_swap(st->probe, &swap) < 0) {
        return Py_NewRef(Py_None);
    }
    PyObject *d = mt_guard_swap_dict(&swap);
    if (d == NULL || mt_set(d, "allowed", PyBool_FromLong(g->swap_allowed)) < 0 ||
        mt_set(d, "counted", PyLong_FromLongLong(swap_allowance(g))) < 0 ||
        mt_set(d, "own", mt_size_or_none(mt_probe_vm_swap(st->probe))) < 0) {
        Py_XDECREF(d);
        return NULL;
    }
    return d;
}

int
mt_guard_process_figures(PyObject *module, PyObject *process)
{
    MT_ASSERT_GIL();
    mt_state *st = mt_get_state(module);
    mt_guard *g = st->guard;
    int watching = g != NULL && g->watcher.started && g->pid == mt_worker_pid();
    if (mt_set(process, "budget", mt_size_or_none(watching ? g->budget : -1)) < 0) {
        return -1;
    }
    PyObject *shared = PyDict_GetItemString(process, "shared"); /* borrowed */
    if (shared == NULL || shared == Py_None || g == NULL) {
        return 0;
    }
    PyObject *limit = PyDict_GetItemString(shared, "limit"); /* borrowed */
    long long bytes = limit && limit != Py_None ? PyLong_AsLongLong(limit) : -1;
    if (bytes == -1 && PyErr_Occurred()) {
        return -1;
    }
    return mt_set(shared, "reserve", mt_size_or_none(bytes >= 0 ? default_reserve(bytes) : -1));
}

PyDoc_STRVAR(mt_guard_status__doc__, "guard_status() -> dict: the budget, the limit, the watcher.");
static PyObject *
mt_guard_status(PyObject *module, PyObject *Py_UNUSED(unused))
{
    MT_ASSERT_GIL();
    mt_state *st = mt_get_state(module);
    mt_guard *g = st->guard;
    int watching = g->watcher.started && g->pid == mt_worker_pid();
    PyObject *d = PyDict_New();
    if (d == NULL || mt_set(d, "enabled", PyBool_FromLong(watching && g->budget >= 0)) < 0 ||
        mt_set(d, "mode", PyUnicode_FromString(mode_name(g->mode))) < 0 ||
        mt_set(d, "budget", mt_size_or_none(g->budget)) < 0 ||
        mt_set(d, "percent",
               g->mode == BUDGET_PERCENT ? PyFloat_FromDouble(g->percent) : Py_NewRef(Py_None)) <
            0 ||
        mt_set(d, "limit", mt_size_or_none(g->have_limit ? g->limit.limit : -1)) < 0 ||
        mt_set(d, "limit_source",
               g->have_limit ? PyUnicode_FromString(g->limit.source) : Py_NewRef(Py_None)) < 0 ||
        mt_set(d, "default_reserve",
               mt_size_or_none(g->have_limit ? default_reserve(g->limit.limit) : -1)) < 0 ||
        mt_set(d, "grace", PyLong_FromLongLong(atomic_load(&g->grace))) < 0 ||
        mt_set(d, "rss", mt_size_or_none(mt_probe_rss(st->probe))) < 0 ||
        mt_set(d, "shared", shared_now(st, g)) < 0 || mt_set(d, "swap", swap_now(st, g)) < 0 ||
        mt_set(d, "thrashing",
               Py_BuildValue("{sssdsd}", "action", atomic_load(&g->thrash_stop) ? "stop" : "warn",
                             "major_faults_per_second", THRASH_FAULTS_PER_S, "seconds",
                             THRASH_SECONDS)) < 0 ||
        mt_set(d, "watcher", PyBool_FromLong(watching)) < 0 ||
        mt_set(d, "watcher_tid",
               watching && atomic_load(&g->watcher.tid) > 0
                   ? PyLong_FromLong(atomic_load(&g->watcher.tid))
                   : Py_NewRef(Py_None)) < 0 ||
        mt_set(d, "watcher_polls", PyLong_FromLongLong(atomic_load(&g->polls))) < 0 ||
        mt_set(d, "poll_us", PyLong_FromLong(g->poll_us)) < 0 ||
        mt_set(d, "numpy_threads", PyBool_FromLong(mt_heap_numpy_threads_covered())) < 0 ||
        mt_set(d, "python_blocks", PyBool_FromLong(mt_heap_refusing())) < 0 ||
        mt_set(d, "psi_trigger", PyBool_FromLong(watching && g->psi_fd >= 0)) < 0 ||
        mt_set(d, "signal", PyLong_FromLong(guard_signal())) < 0 ||
        mt_set(d, "large_request", PyLong_FromLong(MT_HEAP_LARGE_REQUEST)) < 0 ||
        mt_set(d, "trips", PyLong_FromLongLong(g->trips)) < 0 ||
        mt_set(d, "record",
               st->postmortem.page ? PyUnicode_FromString(st->postmortem.path)
                                   : Py_NewRef(Py_None)) < 0) {
        Py_XDECREF(d);
        return NULL;
    }
    return d;
}

/* ---- module life ---- */

int
mt_guard_exec(PyObject *module)
{
    mt_state *st = mt_get_state(module);
    mt_guard *g = &the_guard;
    static int atfork_registered = 0; /* only touched with the GIL held */
    MT_ASSERT_GIL();
    g->budget_exceeded = PyErr_NewExceptionWithDoc(
        "memtamer.MemoryBudgetExceeded",
        "A cell would have taken the kernel past its memory budget (see %memguard).\n\n"
        "Attributes: budget, use, requested (the refused allocation, or None), layer\n"
        "('numpy', 'python', 'watcher', 'child' when memtamer killed a process the cell\n"
        "started, or 'worker' when a process of an earlier cell grew: it is named, not\n"
        "killed), limit, child_pid, child_private (that process's growth), child_command.",
        PyExc_MemoryError, NULL);
    if (g->budget_exceeded == NULL ||
        PyModule_AddObjectRef(module, "MemoryBudgetExceeded", g->budget_exceeded) < 0 ||
        PyModule_AddIntConstant(module, "GUARD_SIGNAL", guard_signal()) < 0) {
        return -1;
    }
    st->guard = g;
    mt_worker_at_fork(&st->fork_hooks, fork_pause, fork_resume, g);
    g->mode = BUDGET_DEFAULT;
    g->swap_allowed = 1;
    g->budget = -1;
    g->psi_fd = -1;
    g->poll_us = MT_GUARD_POLL_US;
    g->pid = mt_worker_pid();
    g->shared_files = (mt_probe_shared_files){-1, -1, 0};
    atomic_store(&g->shared_limit, -1);
    g->postmortem = &st->postmortem;
    st->postmortem.limit = st->postmortem.budget = -1;
    if (!atfork_registered) {
        if (pthread_atfork(NULL, NULL, disarm_in_child) != 0) {
            PyErr_SetString(PyExc_OSError, "pthread_atfork failed");
            return -1;
        }
        atfork_registered = 1;
    }
    return 0;
}

/* At module free: no Python calls (the interpreter may be finalizing). */
void
mt_guard_free(PyObject *module)
{
    mt_state *st = mt_get_state(module);
    mt_guard *g = st->guard;
    if (g == NULL) {
        return;
    }
    atomic_store(&g->armed, 0);
    mt_heap_set_refusal(NULL, NULL);
    watcher_stop(g);
    atomic_store(&g->shared_limit, -1);
    mt_pod_close(&g->pod);
    mt_probe_shared_close(&g->shared_files);
    g->postmortem = NULL;
    st->guard = NULL;
}

int
mt_guard_traverse(PyObject *module, visitproc visit, void *arg)
{
    mt_guard *g = get_guard(module);
    if (g != NULL) {
        Py_VISIT(g->budget_exceeded);
        Py_VISIT(g->user_ns);
        Py_VISIT(g->describe);
    }
    return 0;
}

void
mt_guard_clear(PyObject *module)
{
    mt_guard *g = get_guard(module);
    if (g != NULL) {
        Py_CLEAR(g->budget_exceeded);
        Py_CLEAR(g->user_ns);
        Py_CLEAR(g->describe);
    }
}

long long
mt_guard_children_peak(long long *rss, int *unreadable)
{
    const mt_guard *g = &the_guard;
    *rss = atomic_load(&g->children_rss_at_peak);
    *unreadable = atomic_load(&g->children_unreadable);
    return atomic_load(&g->children_peak_owned);
}

/* The _core methods of this file; module.c adds them at init. */
PyMethodDef mt_guard_methods[] = {
    {"guard_enable", (PyCFunction)(void (*)(void))mt_guard_enable, METH_FASTCALL,
     mt_guard_enable__doc__},
    {"guard_disable", mt_guard_disable, METH_NOARGS, mt_guard_disable__doc__},
    {"guard_set_budget", (PyCFunction)(void (*)(void))mt_guard_set_budget, METH_FASTCALL,
     mt_guard_set_budget__doc__},
    {"guard_set_swap", mt_guard_set_swap, METH_O, mt_guard_set_swap__doc__},
    {"guard_set_thrashing", mt_guard_set_thrashing, METH_O, mt_guard_set_thrashing__doc__},
    {"guard_status", mt_guard_status, METH_NOARGS, mt_guard_status__doc__},
    {"guard_exception", mt_guard_exception, METH_NOARGS, mt_guard_exception__doc__},
    {"_guard_signal", (PyCFunction)(void (*)(void))mt_guard_signal_handler, METH_FASTCALL,
     mt_guard_signal_handler__doc__},
    {NULL, NULL, 0, NULL},
};
