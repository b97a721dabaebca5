/* writeback: starting the disk's writes of spill files on a thread of
 * their own (writeback.h). */
#define _GNU_SOURCE
#include "memtamer/writeback.h"

#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

/* Ranges waiting for the thread; a range beyond them is left to the
 * kernel's flusher.  A range is asked for in steps this big, so that a pause for
 * os.fork() waits for one step at most. */
#define QUEUED_RANGES 64
#define STEP_BYTES ((off_t)16 << 20)

typedef struct {
    int fd; /* a duplicate, closed once its range is asked for */
    off_t offset, len;
} range;

struct mt_writeback {
    mt_worker worker; /* its lock guards the queue */
    range queue[QUEUED_RANGES];
    int queued;
};

/* The thread's step: one STEP_BYTES of the first range; the thread waits
 * when none is left. */
static void
writeback_step(void *owner, int fresh)
{
    (void)fresh;
    mt_writeback *wb = owner;
    mt_worker_lock(&wb->worker);
    if (wb->queued == 0) {
        wb->worker.active = 0;
        mt_worker_unlock(&wb->worker);
        return;
    }
    range first = wb->queue[0];
    mt_worker_unlock(&wb->worker);
    off_t step = first.len < STEP_BYTES ? first.len : STEP_BYTES;
    sync_file_range(first.fd, first.offset, step, SYNC_FILE_RANGE_WRITE);
    mt_worker_lock(&wb->worker);
    /* Only this thread takes ranges off the queue: the first is still ours. */
    wb->queue[0].offset += step;
    wb->queue[0].len -= step;
    if (wb->queue[0].len == 0) {
        close(wb->queue[0].fd);
        wb->queued--;
        for (int k = 0; k < wb->queued; k++) {
            wb->queue[k] = wb->queue[k + 1];
        }
    }
    mt_worker_unlock(&wb->worker);
}

static void
writeback_pause(void *owner)
{
    mt_worker_pause_for_fork(&((mt_writeback *)owner)->worker);
}

static int
writeback_resume(void *owner)
{
    /* As at a spill: a failed start leaves the ranges to the flusher. */
    (void)mt_worker_resume_after_fork(&((mt_writeback *)owner)->worker);
    return 0;
}

/* In a forked child the thread stayed in the parent, and so does the work
 * queued for it: the child closes its copies of the files. */
static void
forget_parent(mt_writeback *wb)
{
    if (wb->worker.pid == mt_worker_pid()) {
        return;
    }
    mt_worker_forget_in_child(&wb->worker);
    for (int k = 0; k < wb->queued; k++) {
        close(wb->queue[k].fd);
    }
    wb->queued = 0;
}

mt_writeback *
mt_writeback_new(mt_worker_fork_hooks *hooks)
{
    mt_writeback *wb = calloc(1, sizeof *wb);
    if (wb != NULL) {
        mt_worker_init(&wb->worker, writeback_step, wb);
        /* Spills are rare: no thread is kept between them. */
        wb->worker.ends_when_idle = 1;
        mt_worker_at_fork(hooks, writeback_pause, writeback_resume, wb);
    }
    return wb;
}

void
mt_writeback_free(mt_writeback *wb)
{
    if (wb == NULL) {
        return;
    }
    mt_worker_stop(&wb->worker);
    for (int k = 0; k < wb->queued; k++) {
        close(wb->queue[k].fd);
    }
    free(wb);
}

void
mt_writeback_start(mt_writeback *wb, int fd, off_t offset, off_t len)
{
    if (wb == NULL || len <= 0) {
        return;
    }
    forget_parent(wb);
    int copy = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (copy < 0) {
        return;
    }
    /* Queued and made active before the start: a thread that was ending
     * (nothing to do when it looked) has ended by then, and is started
     * again; one still running sees the range. */
    mt_worker_lock(&wb->worker);
    if (wb->queued < QUEUED_RANGES) {
        wb->queue[wb->queued++] = (range){copy, offset, len};
        copy = -1;
    }
    wb->worker.active = 1;
    mt_worker_unlock(&wb->worker);
    if (copy >= 0) {
        close(copy);
    }
    /* A thread that fails to start leaves the ranges to the kernel's
     * flusher; the next spill tries again. */
    (void)mt_worker_start(&wb->worker);
}
