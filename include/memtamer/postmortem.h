/* postmortem: the page a kernel keeps up to date in a file so that the next
 * kernel of the same notebook can say how it ended when it died without
 * running its exit handlers (SIGKILL, the OOM killer, a closed terminal).
 *
 * The page is memory-mapped shared: an update costs a few stores and
 * survives the process being killed.  A record belongs to a notebook: the
 * one the kernel's environment names (JPY_SESSION_NAME, which Jupyter
 * servers set to the notebook's path), else the working directory.  Its
 * reader says whether memory is the likely cause of the death: the OOM
 * killer's count rose since the record was written, or the last RSS it
 * holds was within MT_POSTMORTEM_NEAR_PERCENT of the limit or the budget. */
#ifndef MEMTAMER_POSTMORTEM_H
#define MEMTAMER_POSTMORTEM_H

#include <Python.h>
#include <stdatomic.h>
#include <sys/types.h>

#include "memtamer/probe.h"

#define MT_POSTMORTEM_NEAR_PERCENT 10

typedef struct mt_postmortem_page mt_postmortem_page;

typedef struct {
    /* Only changed with the GIL held, while the guard's watcher is stopped
     * or before it starts (it updates the page through this pointer). */
    mt_postmortem_page *page; /* NULL when there is none */
    /* The page's OOM count file, kept open while there is a page (read at
     * every cell's start; the machine's or the cgroup's, the same file for
     * a forked child); -1 when it could not be opened. */
    int oom_fd;
    double oom_read_at; /* monotonic seconds of its last reading */
    char path[MT_PROBE_PATH_MAX + 64];
    pid_t pid; /* of the process that opened it */
    /* The limit and budget in force (-1: none), copied into the page;
     * written by the guard with the GIL held. */
    long long limit, budget;
} mt_postmortem;

/* Updates of the open page; no-ops when there is none.  sample() is the
 * watcher's, without the GIL; the others run with the GIL held. */
void mt_postmortem_cell_begin(mt_postmortem *pm, long long cell, const char *first_line,
                              long long rss);
void mt_postmortem_cell_end(mt_postmortem *pm, long long rss);
void mt_postmortem_sample(mt_postmortem *pm, long long rss);
void mt_postmortem_set_limits(mt_postmortem *pm, long long limit, long long budget);
/* Unmaps the page; remove: unlink the file too (a clean exit).  No Python
 * calls: also used at module free. */
void mt_postmortem_close(mt_postmortem *pm, int remove);

/* The _core methods postmortem.c defines. */
extern PyMethodDef mt_postmortem_methods[];

#endif
