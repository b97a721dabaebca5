/* pod: reservations shared by the memtamer kernels of one container.
 *
 * Kernels whose memory binds at the same limit (probe.h's mt_probe_shared:
 * one cgroup, or the machine) each read its working set, see room and take
 * it: asking at the same moment, they take it twice and the OOM killer
 * ends one.  A kernel about to take a large block therefore reserves it in
 * a ledger they share, a small file in the runtime directory locked with
 * flock: under the lock it reads the working set afresh, adds what every
 * kernel reserved and has not yet made resident, and records the block as
 * its own only when all of it fits.  A reservation is outstanding until
 * the kernel's RSS has grown by it or its cell ends; a dead kernel's
 * entries are dropped (its pid is gone or was reused).
 *
 * No Python API: the guard's refusal policy calls it from allocator hooks
 * on any thread, without the GIL.  It never allocates; each call opens the
 * ledger afresh, so two threads of one kernel lock each other out too. */
#ifndef MEMTAMER_POD_H
#define MEMTAMER_POD_H

#include <sys/types.h>

#include "memtamer/probe.h"

/* Kernels a ledger has room for; more share the limit unreserved. */
#define MT_POD_SLOTS 64
/* Other kernels a refusal names. */
#define MT_POD_HOLDERS 4

typedef struct {
    pid_t pid;
    long long rss;      /* resident now */
    long long reserved; /* reserved and not yet resident */
} mt_pod_holder;

typedef struct {
    char path[MT_PROBE_PATH_MAX + 128]; /* "" when there is no ledger */
    pid_t pid;                          /* ours, and when we started: pids are reused */
    unsigned long long start_ticks;
} mt_pod;

/* Names the ledger of the limit at shared_dir ("" for the machine) in
 * runtime_dir and creates it; -1 with errno when it cannot be made (the
 * guard then decides alone, as before). */
int mt_pod_open(mt_pod *pod, const mt_probe *probe, const char *runtime_dir,
                const char *shared_dir);
/* Drops our entry and forgets the ledger. */
void mt_pod_close(mt_pod *pod);

/* The room under the shared limit: limit_left is the limit less the
 * reserve (plus any margin), working_set the files to read it from. */
typedef struct {
    long long limit_left;
    const mt_probe_shared_files *working_set;
} mt_pod_room;

/* Reserves bytes for us when they fit: 1 reserved, 0 refused (holders
 * receives the other kernels of the ledger that hold or reserved the most,
 * *held how many), -1 when the ledger cannot be used.  expected is the RSS
 * we expect once the request's pages are resident (what our allocator
 * counters say we hold, plus bytes): a loop that frees each block before it
 * asks for the next reserves one block, two blocks asked for before either
 * is written reserve both.  *working receives the working set read under
 * the lock plus everything outstanding, ours included. */
int mt_pod_reserve(mt_pod *pod, const mt_probe *probe, const mt_pod_room *room, long long bytes,
                   long long expected, long long *working, mt_pod_holder *holders, int *held);
/* What the other kernels reserved and have not made resident yet: the
 * watcher holds it as used, for growth that asks nothing of the ledger
 * (small blocks, pure Python, children).  0 without a ledger. */
long long mt_pod_others_outstanding(const mt_pod *pod, const mt_probe *probe);
/* Our reservations end (the cell is over). */
void mt_pod_release(mt_pod *pod);

#endif
