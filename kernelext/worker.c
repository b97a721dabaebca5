/* worker: one background thread with start, stop, wake and join (worker.h). */
#define _GNU_SOURCE
#include "memtamer/worker.h"

#include <assert.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

void
mt_worker_init(mt_worker *w, mt_worker_step step, void *owner)
{
    pthread_mutex_init(&w->lock, NULL);
    pthread_cond_init(&w->wake, NULL);
    w->pid = mt_worker_pid();
    w->started = w->active = w->stop = w->paused_for_fork = 0;
    w->ends_when_idle = w->ended = 0;
    atomic_store(&w->tid, 0);
    w->step = step;
    w->owner = owner;
}

static void *
worker_main(void *arg)
{
    mt_worker *w = arg;
    int fresh = 1;
    atomic_store(&w->tid, (int)gettid());
    pthread_mutex_lock(&w->lock);
    while (!w->stop) {
        if (!w->active) {
            if (w->ends_when_idle) {
                w->ended = 1;
                break;
            }
            fresh = 1;
            pthread_cond_wait(&w->wake, &w->lock);
            continue;
        }
        pthread_mutex_unlock(&w->lock);
        w->step(w->owner, fresh);
        fresh = 0;
        pthread_mutex_lock(&w->lock);
    }
    pthread_mutex_unlock(&w->lock);
    return NULL;
}

int
mt_worker_start(mt_worker *w)
{
    if (w->started) {
        pthread_mutex_lock(&w->lock);
        int ended = w->ended;
        pthread_mutex_unlock(&w->lock);
        if (!ended) {
            return 0;
        }
        pthread_join(w->thread, NULL);
        w->started = 0;
    }
    atomic_store(&w->tid, 0);
    w->stop = w->ended = 0;
    w->pid = mt_worker_pid();
    int err = pthread_create(&w->thread, NULL, worker_main, w);
    if (err == 0) {
        w->started = 1;
    }
    return err;
}

void
mt_worker_wait_thread_gone(pid_t tid)
{
    /* pthread_join returns when the thread has cleared its tid, a moment
     * before the kernel drops it from the process's thread count; on a busy
     * machine the exiting thread may wait tens of milliseconds for a core.
     * The sleeps grow from 20 us to 1 ms, for 2 s at most. */
    char path[64];
    snprintf(path, sizeof path, "/proc/self/task/%d", (int)tid);
    long waited_ns = 0, step_ns = 20000;
    while (tid > 0 && waited_ns < 2000000000L && access(path, F_OK) == 0) {
        struct timespec ts = {0, step_ns};
        nanosleep(&ts, NULL);
        waited_ns += step_ns;
        step_ns = step_ns < 1000000 ? step_ns * 2 : 1000000;
    }
}

int
mt_worker_list_threads(pid_t *tids, int max)
{
    DIR *tasks = opendir("/proc/self/task");
    int found = 0;
    if (tasks == NULL) {
        return 0;
    }
    struct dirent *entry;
    while (found < max && (entry = readdir(tasks)) != NULL) {
        int tid = atoi(entry->d_name);
        if (tid > 0) {
            tids[found++] = (pid_t)tid;
        }
    }
    closedir(tasks);
    return found;
}

void
mt_worker_stop(mt_worker *w)
{
    if (!w->started || w->pid != mt_worker_pid()) {
        return;
    }
    pthread_mutex_lock(&w->lock);
    w->stop = 1;
    pthread_cond_signal(&w->wake);
    pthread_mutex_unlock(&w->lock);
    pthread_join(w->thread, NULL);
    mt_worker_wait_thread_gone(atomic_load(&w->tid));
    w->started = 0;
    w->stop = 0;
}

void
mt_worker_set_active(mt_worker *w, int active)
{
    pthread_mutex_lock(&w->lock);
    w->active = active;
    pthread_cond_signal(&w->wake);
    pthread_mutex_unlock(&w->lock);
}

void
mt_worker_lock(mt_worker *w)
{
    pthread_mutex_lock(&w->lock);
}

void
mt_worker_unlock(mt_worker *w)
{
    pthread_mutex_unlock(&w->lock);
}

void
mt_worker_pause_for_fork(mt_worker *w)
{
    /* A copied worker (w->pid another process's) is not ours to lock. */
    w->paused_for_fork = 0;
    if (w->started && w->pid == mt_worker_pid()) {
        pthread_mutex_lock(&w->lock);
        w->paused_for_fork = !w->ended;
        pthread_mutex_unlock(&w->lock);
    }
    mt_worker_stop(w);
}

int
mt_worker_resume_after_fork(mt_worker *w)
{
    int err = 0;
    if (w->paused_for_fork && w->pid == mt_worker_pid()) {
        err = mt_worker_start(w);
    }
    w->paused_for_fork = 0;
    return err;
}

void
mt_worker_forget_in_child(mt_worker *w)
{
    if (w->pid == mt_worker_pid()) {
        return;
    }
    pthread_mutex_init(&w->lock, NULL);
    pthread_cond_init(&w->wake, NULL);
    w->pid = mt_worker_pid();
    w->started = w->active = w->stop = w->paused_for_fork = w->ended = 0;
}

void
mt_worker_at_fork(mt_worker_fork_hooks *hooks, void (*pause)(void *), int (*resume)(void *),
                  void *owner)
{
    /* A fixed number of owners register, each once, at module init. */
    assert(hooks->count < MT_WORKER_FORK_HOOKS);
    if (hooks->count < MT_WORKER_FORK_HOOKS) {
        hooks->hooks[hooks->count++] = (mt_worker_fork_hook){pause, resume, owner};
    }
}

/* The process's pid, process-wide by nature (as getpid's answer is): set
 * once under pthread_once, and in a forked child by its only thread. */
static atomic_int cached_pid;
static pthread_once_t pid_once = PTHREAD_ONCE_INIT;

static void
take_pid(void)
{
    atomic_store(&cached_pid, (int)getpid());
}

static void
follow_pid(void)
{
    take_pid();
    (void)pthread_atfork(NULL, NULL, take_pid);
}

pid_t
mt_worker_pid(void)
{
    pthread_once(&pid_once, follow_pid);
    return (pid_t)atomic_load(&cached_pid);
}

int
mt_worker_cores(int most)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > most ? most : (int)n;
}

int
mt_worker_threads_for_load(int cores, double load)
{
    int busy = load > 0 ? (int)(load + 0.5) : 0;
    int threads = busy > cores ? 1 : cores - busy + 1;
    return threads < 1 ? 1 : threads > cores ? cores : threads;
}

int
mt_worker_idle_cores(int most)
{
    int cores = mt_worker_cores(most);
    double load;
    return getloadavg(&load, 1) == 1 ? mt_worker_threads_for_load(cores, load) : cores;
}

void
mt_worker_run_shares(void *(*work)(void *), char *args, size_t size, int n)
{
    pthread_t threads[MT_WORKER_MAX_SHARES];
    int started[MT_WORKER_MAX_SHARES] = {0};
    n = n < MT_WORKER_MAX_SHARES ? n : MT_WORKER_MAX_SHARES;
    for (int k = 1; k < n; k++) {
        started[k] = pthread_create(&threads[k], NULL, work, args + k * size) == 0;
    }
    work(args);
    for (int k = 1; k < n; k++) {
        if (started[k]) {
            pthread_join(threads[k], NULL);
        }
        else {
            work(args + k * size);
        }
    }
}
