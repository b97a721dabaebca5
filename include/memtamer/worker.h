/* worker: memtamer's threads.  One background thread that repeats a step
 * while it is active, waits on a condition variable while it is not, and
 * ends on request; and a fork-join of a few threads over shares of work
 * (frames.c's codecs, narrow.c's scan and conversion).
 *
 * No Python API (probe.c's sampler uses it, and so does guard.c's watcher):
 * a step never touches Python objects.  Fork-safe: every owner of threads
 * registers a pause and a resume (mt_worker_at_fork), which module.c runs
 * around os.fork() for all of them: the threads stop before it and start
 * again in the parent (mt_worker_pause_for_fork, mt_worker_resume_after_fork
 * for a worker); in a child, whose copy of the lock may be held by a thread
 * that does not exist there, the lock is made anew, never destroyed
 * (mt_worker_forget_in_child). */
#ifndef MEMTAMER_WORKER_H
#define MEMTAMER_WORKER_H

#include <pthread.h>
#include <stdatomic.h>
#include <sys/types.h>

/* One step of the work, called without the lock held; fresh is 1 on the
 * first step after the worker became active.  The step sleeps as long as it
 * likes before it returns. */
typedef void (*mt_worker_step)(void *owner, int fresh);

typedef struct {
    /* lock guards active and stop, and the owner's fields it says so of. */
    pthread_mutex_t lock;
    pthread_cond_t wake;
    pthread_t thread;
    pid_t pid;   /* the process whose thread it is */
    int started; /* a thread runs (only changed by its owner's thread) */
    int active, stop;
    /* ends_when_idle: the thread ends instead of waiting, and sets ended;
     * the next start joins it and starts another (a thread that is rarely
     * needed is not left alive, where os.fork() would see it). */
    int ends_when_idle, ended;
    int paused_for_fork;
    _Atomic int tid; /* the thread's id once it runs, 0 before */
    mt_worker_step step;
    void *owner;
} mt_worker;

/* Prepares w (no thread yet). */
void mt_worker_init(mt_worker *w, mt_worker_step step, void *owner);
/* Starts the thread, idle (a thread that ends when idle: after its owner
 * made it active); a no-op when it runs.  0, or the error number. */
int mt_worker_start(mt_worker *w);
/* Ends the thread and joins it; what it works on (active) stays for a
 * restart.  A no-op when none runs, and in a forked child. */
void mt_worker_stop(mt_worker *w);
/* Makes the thread repeat its step (1) or wait (0). */
void mt_worker_set_active(mt_worker *w, int active);
void mt_worker_lock(mt_worker *w);
void mt_worker_unlock(mt_worker *w);

/* Fork: stop before, start again after in the parent if it ran (0, or the
 * error number); in a child, forget the parent's thread. */
void mt_worker_pause_for_fork(mt_worker *w);
int mt_worker_resume_after_fork(mt_worker *w);
void mt_worker_forget_in_child(mt_worker *w);

/* What an owner of threads does around os.fork(), with the GIL held:
 * pause stops them (no thread of ours may be alive at the fork); resume
 * starts them again in the parent and returns 0, or -1 with a Python
 * exception set (reported, as os.fork reports a hook's). */
typedef struct {
    void (*pause)(void *owner);
    int (*resume)(void *owner);
    void *owner;
} mt_worker_fork_hook;

/* The owners of threads: the probe's sampler, the guard's watcher, the
 * telemetry publisher, the spill files' writeback; room for as many more. */
#define MT_WORKER_FORK_HOOKS 8
typedef struct {
    mt_worker_fork_hook hooks[MT_WORKER_FORK_HOOKS];
    int count;
} mt_worker_fork_hooks;

/* Adds an owner's pause and resume (in module state, at module init). */
void mt_worker_at_fork(mt_worker_fork_hooks *hooks, void (*pause)(void *), int (*resume)(void *),
                       void *owner);

/* This process's pid without a syscall (the cell's checks for a fork ask
 * it several times a cell): taken once, and again in the child of every
 * fork() (a pthread_atfork handler).  A child made by a raw clone that
 * runs our code would see its parent's. */
pid_t mt_worker_pid(void);

/* The cores online, at least 1 and at most most: how many shares of work
 * are worth a thread each. */
int mt_worker_cores(int most);

/* The threads worth starting on `cores` cores when `load` (the 1-minute
 * load average, which counts the caller's own thread) says how many are
 * busy: the idle ones and the caller's, from 1 to cores.  On a machine
 * others keep busy, a second thread mostly waits for a core and slows the
 * work down. */
int mt_worker_threads_for_load(int cores, double load);

/* mt_worker_threads_for_load for this machine's cores (at most most) and
 * load average; all of them when the load average cannot be read. */
int mt_worker_idle_cores(int most);

/* The most threads mt_worker_run_shares runs at once. */
#define MT_WORKER_MAX_SHARES 16

/* Runs work on n (<= MT_WORKER_MAX_SHARES) argument blocks of size bytes
 * each (size 0: all on the same one) and returns when all are done: the
 * calling thread takes the first, one new thread each of the others, and a
 * block whose thread cannot start runs on the calling thread too. */
void mt_worker_run_shares(void *(*work)(void *), char *args, size_t size, int n);

/* Returns once thread tid (joined already) has left /proc/self/task, or
 * after 2 s: a thread count read right after a join stays right. */
void mt_worker_wait_thread_gone(pid_t tid);

/* The threads of this process now (/proc/self/task), at most max, into
 * tids; returns how many.  Those a call started are the ones it adds: for
 * the threads a library starts and joins itself (libzmq's). */
int mt_worker_list_threads(pid_t *tids, int max);

#endif
