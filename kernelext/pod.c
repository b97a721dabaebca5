/* pod: the ledger of reservations shared by the kernels of one container
 * (pod.h).  No Python API, no allocation. */
#define _GNU_SOURCE
#include "memtamer/pod.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

/* The file: this header, then MT_POD_SLOTS slots, all zero when new. */
#define LEDGER_MAGIC "memtamer pod ledger 1\n"

typedef struct {
    int32_t pid; /* 0: free */
    uint32_t unused;
    uint64_t start_ticks;
    int64_t reserved; /* bytes reserved this cell and not yet resident, when written */
    int64_t target;   /* the RSS at which they all are */
} slot;

typedef struct {
    char magic[32];
    slot slots[MT_POD_SLOTS];
} ledger;

/* ---- the file ---- */

/* Opens and locks the ledger; -1 when it cannot be used. */
static int
lock_ledger(const mt_pod *pod)
{
    if (pod->path[0] == '\0') {
        return -1;
    }
    int fd = open(pod->path, O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        return -1;
    }
    int rc;
    /* The guard's own signal may interrupt the wait. */
    while ((rc = flock(fd, LOCK_EX)) < 0 && errno == EINTR) {
    }
    if (rc < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* A new file reads as an empty ledger; anything else that is not one of
 * ours (another version, a truncated write) is not used. */
static int
read_ledger(int fd, ledger *l)
{
    memset(l, 0, sizeof *l);
    ssize_t got = pread(fd, l, sizeof *l, 0);
    if (got == 0) {
        memcpy(l->magic, LEDGER_MAGIC, sizeof LEDGER_MAGIC);
        return 0;
    }
    if (got != (ssize_t)sizeof *l || memcmp(l->magic, LEDGER_MAGIC, sizeof LEDGER_MAGIC) != 0) {
        return -1;
    }
    return 0;
}

static int
write_ledger(int fd, const ledger *l)
{
    return pwrite(fd, l, sizeof *l, 0) == (ssize_t)sizeof *l ? 0 : -1;
}

/* ---- entries ---- */

static int
is_ours(const mt_pod *pod, const slot *s)
{
    return s->pid == pod->pid && s->start_ticks == pod->start_ticks;
}

/* The kernel's RSS now, -1 when it is gone (or its pid now names another
 * process). */
static long long
live_rss(const mt_probe *probe, const slot *s)
{
    unsigned long long started;
    long long rss;
    if (mt_probe_pid_start_ticks(probe, (pid_t)s->pid, &started) < 0 || started != s->start_ticks ||
        mt_probe_pid_rss(probe, (pid_t)s->pid, &rss, NULL, 0) < 0) {
        return -1;
    }
    return rss;
}

/* What s reserved and has not made resident at RSS rss. */
static long long
outstanding(const slot *s, long long rss)
{
    long long left = s->target - rss;
    return left < 0 ? 0 : left > s->reserved ? s->reserved : left;
}

/* Our slot, else a free one (or a dead kernel's), claimed for us; -1 when
 * the ledger is full of live kernels. */
static int
claim_slot(const mt_pod *pod, const mt_probe *probe, ledger *l)
{
    int free_slot = -1;
    for (int i = 0; i < MT_POD_SLOTS; i++) {
        if (is_ours(pod, &l->slots[i])) {
            return i;
        }
        if (l->slots[i].pid == 0 && free_slot < 0) {
            free_slot = i;
        }
    }
    for (int i = 0; free_slot < 0 && i < MT_POD_SLOTS; i++) {
        if (live_rss(probe, &l->slots[i]) < 0) {
            free_slot = i;
        }
    }
    if (free_slot >= 0) {
        l->slots[free_slot] = (slot){.pid = (int32_t)pod->pid, .start_ticks = pod->start_ticks};
    }
    return free_slot;
}

/* Keeps the MT_POD_HOLDERS biggest (rss + reserved) in holders. */
static void
note_holder(mt_pod_holder *holders, int *held, mt_pod_holder h)
{
    int at = *held < MT_POD_HOLDERS ? (*held)++ : MT_POD_HOLDERS - 1;
    if (at == MT_POD_HOLDERS - 1 && *held == MT_POD_HOLDERS &&
        holders[at].rss + holders[at].reserved >= h.rss + h.reserved) {
        return;
    }
    holders[at] = h;
    for (; at > 0 && holders[at - 1].rss + holders[at - 1].reserved < h.rss + h.reserved; at--) {
        holders[at] = holders[at - 1];
        holders[at - 1] = h;
    }
}

/* ---- the interface ---- */

int
mt_pod_open(mt_pod *pod, const mt_probe *probe, const char *runtime_dir, const char *shared_dir)
{
    /* FNV-1a of the directory where the limit binds names its ledger. */
    unsigned long long hash = 1469598103934665603ULL;
    for (const char *c = shared_dir; *c; c++) {
        hash = (hash ^ (unsigned char)*c) * 1099511628211ULL;
    }
    pod->path[0] = '\0';
    pod->pid = mt_worker_pid();
    if (mt_probe_pid_start_ticks(probe, pod->pid, &pod->start_ticks) < 0) {
        return -1;
    }
    char path[sizeof pod->path];
    if (snprintf(path, sizeof path, "%s/memtamer-pod-%016llx.ledger", runtime_dir, hash) >=
        (int)sizeof path) {
        errno = ENAMETOOLONG;
        return -1;
    }
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        return -1;
    }
    close(fd);
    memcpy(pod->path, path, sizeof path);
    /* Registered at once, so that others name this kernel among the holders. */
    ledger l;
    fd = lock_ledger(pod);
    int rc = fd < 0 || read_ledger(fd, &l) < 0 || claim_slot(pod, probe, &l) < 0 ||
                     write_ledger(fd, &l) < 0
                 ? -1
                 : 0;
    if (fd >= 0) {
        close(fd); /* and unlocks */
    }
    if (rc < 0) {
        pod->path[0] = '\0';
        errno = EPROTO;
    }
    return rc;
}

int
mt_pod_reserve(mt_pod *pod, const mt_probe *probe, const mt_pod_room *room, long long bytes,
               long long expected, long long *working, mt_pod_holder *holders, int *held)
{
    ledger l;
    int rc = -1;
    *held = 0;
    int fd = lock_ledger(pod);
    if (fd < 0) {
        return -1;
    }
    long long used = mt_probe_shared_working_set(room->working_set);
    int mine = -1;
    long long own_rss = -1;
    if (read_ledger(fd, &l) < 0 || used < 0 || (mine = claim_slot(pod, probe, &l)) < 0 ||
        (own_rss = live_rss(probe, &l.slots[mine])) < 0) {
        goto done; /* a full ledger: the guard decides alone */
    }
    for (int i = 0; i < MT_POD_SLOTS; i++) {
        slot *s = &l.slots[i];
        if (i == mine || s->pid == 0 || s->target <= 0) {
            continue; /* nothing outstanding (a kernel idle or gone: named below if we refuse) */
        }
        long long rss = live_rss(probe, s);
        if (rss < 0) {
            memset(s, 0, sizeof *s);
            continue;
        }
        used += outstanding(s, rss);
    }
    /* Ours is what we will hold once the request's pages are resident, less
     * what we hold: at least the request, more when earlier blocks of ours
     * are not resident yet; a block freed meanwhile is no longer expected. */
    slot *ours = &l.slots[mine];
    long long target = own_rss + bytes;
    if (expected > target) {
        target = expected;
    }
    if (ours->target > 0 && own_rss + outstanding(ours, own_rss) > target) {
        target = own_rss + outstanding(ours, own_rss);
    }
    *working = used + target - own_rss;
    if (*working > room->limit_left) {
        for (int i = 0; i < MT_POD_SLOTS; i++) {
            const slot *s = &l.slots[i];
            long long rss = i != mine && s->pid != 0 ? live_rss(probe, s) : -1;
            if (rss >= 0) {
                note_holder(
                    holders, held,
                    (mt_pod_holder){(pid_t)s->pid, rss, s->target > 0 ? outstanding(s, rss) : 0});
            }
        }
        rc = write_ledger(fd, &l) < 0 ? -1 : 0; /* the dead dropped, ours kept as it was */
        goto done;
    }
    ours->target = target;
    ours->reserved = target - own_rss;
    rc = write_ledger(fd, &l) < 0 ? -1 : 1;
done:
    close(fd);
    return rc;
}

long long
mt_pod_others_outstanding(const mt_pod *pod, const mt_probe *probe)
{
    ledger l;
    long long sum = 0;
    int fd = pod->path[0] ? open(pod->path, O_RDONLY | O_CLOEXEC) : -1;
    if (fd < 0) {
        return 0;
    }
    /* No lock: a ledger is written whole by one pwrite, and a reading torn
     * all the same is off for one watcher poll. */
    if (read_ledger(fd, &l) == 0) {
        for (int i = 0; i < MT_POD_SLOTS; i++) {
            const slot *s = &l.slots[i];
            long long rss =
                s->pid != 0 && s->target > 0 && !is_ours(pod, s) ? live_rss(probe, s) : -1;
            if (rss >= 0) {
                sum += outstanding(s, rss);
            }
        }
    }
    close(fd);
    return sum;
}

/* Sets our entry to ours_after (a slot with no reservation, or none). */
static void
rewrite_ours(mt_pod *pod, const slot *ours_after)
{
    ledger l;
    /* A forked child carries our pod but is not this kernel. */
    int fd = pod->pid == mt_worker_pid() ? lock_ledger(pod) : -1;
    if (fd < 0) {
        return;
    }
    if (read_ledger(fd, &l) == 0) {
        for (int i = 0; i < MT_POD_SLOTS; i++) {
            if (is_ours(pod, &l.slots[i])) {
                l.slots[i] = *ours_after;
                write_ledger(fd, &l);
                break;
            }
        }
    }
    close(fd);
}

void
mt_pod_release(mt_pod *pod)
{
    slot idle = {.pid = (int32_t)pod->pid, .start_ticks = pod->start_ticks};
    rewrite_ours(pod, &idle);
}

void
mt_pod_close(mt_pod *pod)
{
    slot none = {0};
    rewrite_ours(pod, &none);
    pod->path[0] = '\0';
}
