/* probe: what the kernel says about this process's memory.
 *
 * Pure parsers over /proc and cgroup text (no I/O, no Python) plus a tiny
 * I/O shell that reads them from "<root>/proc/..." so tests can point root at
 * a fake tree.  Nothing in this file or probe.c uses the Python API: it is
 * safe to call without the GIL and is unit-tested from plain C. */
#ifndef MEMTAMER_PROBE_H
#define MEMTAMER_PROBE_H

#include <stddef.h>
#include <sys/types.h>
#include <time.h>

#include "memtamer/worker.h"

#define MT_PROBE_PATH_MAX 512
#define MT_PROBE_UNLIMITED (-1LL)
#define MT_PROBE_MAX_CHILDREN 256
/* A schedstat line: three numbers of at most 20 digits. */
#define MT_PROBE_SCHEDSTAT_BYTES 72
/* Descriptors of children's stat and schedstat a probe keeps open, two a
 * child (three probes follow children: a pool of hundreds must not take
 * the process's descriptors). */
#define MT_PROBE_KEPT_CHILD_FDS 64

/* ---- pure parsers: 0 on success, -1 when the text lacks what is asked ---- */

/* A "Key:   1234 kB" field of /proc/<pid>/status or /proc/meminfo, in bytes. */
int mt_probe_parse_kb_field(const char *text, const char *key, long long *bytes);
/* Resident pages (second field) of /proc/<pid>/statm, in bytes. */
int mt_probe_parse_statm(const char *text, long page_size, long long *rss);
/* A cgroup limit file: a byte count, or "max"; absurdly large values (v1's
 * "unlimited" is 2^63 rounded to a page) give MT_PROBE_UNLIMITED. */
int mt_probe_parse_limit(const char *text, long long *limit);
/* "key value" line of a flat-keyed cgroup file such as memory.stat. */
int mt_probe_parse_keyed(const char *text, const char *key, long long *value);

/* /proc/<pid>/cgroup: the v2 path ("0::/a/b") and the v1 memory path
 * ("4:memory:/a/b"); either is set to "" when absent.  -1 if neither. */
int mt_probe_parse_cgroup(const char *text, char *v2_path, size_t v2_size, char *v1_path,
                          size_t v1_size);

/* /proc/<pid>/mountinfo: mount point and mount root of the cgroup2 file
 * system and of the cgroup v1 hierarchy carrying the memory controller. */
typedef struct {
    char v2_mount[MT_PROBE_PATH_MAX], v2_root[MT_PROBE_PATH_MAX];
    char v1_mount[MT_PROBE_PATH_MAX], v1_root[MT_PROBE_PATH_MAX];
} mt_probe_mounts;
int mt_probe_parse_mountinfo(const char *text, mt_probe_mounts *mounts);

/* Whitespace-separated pids (/proc/<pid>/task/<tid>/children); returns how
 * many were stored, at most max. */
int mt_probe_parse_pids(const char *text, pid_t *pids, int max);
/* Field 22 (starttime, clock ticks since boot) of /proc/<pid>/stat, which
 * has a parenthesised command name that may itself contain spaces. */
int mt_probe_parse_starttime(const char *text, unsigned long long *ticks);
/* Field 3 (state: R, S, D, Z for a zombie, X for dead, ...) of the same. */
int mt_probe_parse_state(const char *text, char *state);
/* The private memory of /proc/<pid>/smaps_rollup (Private_Clean +
 * Private_Dirty), in bytes. */
int mt_probe_parse_private(const char *text, long long *bytes);

/* /proc/<pid>/schedstat: the nanoseconds its main thread has run and the
 * times it was switched onto a CPU (0 and 0 where the kernel keeps no
 * schedule statistics). */
int mt_probe_parse_schedstat(const char *text, unsigned long long *ran_ns,
                             unsigned long long *arrivals);

/* Field 12 (majflt: faults that waited for a page from disk, swap among
 * it) of /proc/<pid>/stat. */
int mt_probe_parse_majflt(const char *text, unsigned long long *faults);
/* /proc/loadavg's last field: the last pid handed out in the reader's pid
 * namespace (threads count too). */
int mt_probe_parse_last_pid(const char *text, long *pid);
/* The avg10 of the "some" or "full" line of a PSI file (/proc/pressure/memory
 * or a cgroup's memory.pressure): the share of the last 10 s, in percent,
 * that some / all tasks stalled waiting for memory. */
int mt_probe_parse_psi(const char *text, const char *line, double *avg10);

/* Swap this process may fill.  The machine's is SwapTotal / SwapFree; a
 * cgroup may allow less: v2 memory.swap.max (swap alone) with
 * memory.swap.current, v1 memory.memsw.limit_in_bytes (memory plus swap)
 * with memsw.usage_in_bytes, whose swap part is memsw less memory. */
typedef struct {
    long long limit; /* bytes of swap allowed; 0 without swap */
    long long used;  /* bytes of it in use */
    long long room;  /* what more may go there: limit - used, never more than SwapFree */
    int version;     /* where limit binds: 2, 1 (cgroup), 0 the machine */
    char dir[MT_PROBE_PATH_MAX]; /* that cgroup's directory; "" for the machine */
} mt_probe_swap;
/* Pure: /proc/meminfo's SwapTotal and SwapFree (version 0). */
int mt_probe_parse_meminfo_swap(const char *meminfo_text, mt_probe_swap *out);
/* Pure: a cgroup's swap limit and usage texts (v2: memory.swap.max and
 * memory.swap.current; v1: memory.memsw.limit_in_bytes and
 * memory.memsw.usage_in_bytes, less memory_limit and memory_usage, the
 * cgroup's memory.limit_in_bytes and usage_in_bytes, which v2 ignores).  An
 * unlimited cgroup gives limit MT_PROBE_UNLIMITED. */
int mt_probe_parse_cgroup_swap(int version, const char *limit_text, const char *usage_text,
                               long long memory_limit, long long memory_usage, mt_probe_swap *out);

/* ---- the I/O shell ---- */

typedef enum {
    MT_PEAK_NONE = 0,    /* no /proc at all (not Linux) */
    MT_PEAK_HWM = 1,     /* VmHWM reset through /proc/self/clear_refs: exact */
    MT_PEAK_SAMPLED = 2, /* a C thread polls RSS every sample_interval_us */
} mt_peak_method;

/* "hwm", "sampled" or "unavailable", as reports and messages name it. */
const char *mt_probe_method_name(mt_peak_method method);

typedef struct {
    long long limit;     /* bytes; the smallest of cgroup limit and MemTotal */
    long long usage;     /* bytes counted against it, -1 when unknown */
    long long available; /* headroom in bytes, -1 when unknown */
    const char *source;  /* "cgroup2 memory.max", "cgroup1 memory.limit_in_bytes", "MemTotal" */
    char path[MT_PROBE_PATH_MAX + 64]; /* the file the limit came from */
} mt_probe_limit;

/* A descendant's private memory as last read from its smaps_rollup (which
 * costs some 0.1-0.5 ms for a Python process), with its RSS and page-fault
 * count then: while neither moved it has mapped no page and broken no
 * copy-on-write share, so the figure stands without reading it again.
 * (Pages the kernel stops sharing with it, by freeing its own copy, become
 * its own without a fault of its: they count from its next fault.) */
typedef struct {
    pid_t pid;
    unsigned long long start_ticks, faults;
    long long rss, owned; /* owned -1: not read yet */
    /* Its stat kept open (-1: none): a descriptor follows the process it
     * was opened on, so a pid used again fails its read rather than
     * answering for another process. */
    int stat_fd;
    int separate; /* it was found not to share our address space (vfork) */
    /* Its schedstat, kept open with stat (-1: none), and what it said just
     * before stat was last read.  settled: that stat showed one thread, not
     * running, whose private memory was the figure kept.  While schedstat
     * says the same, it has not been on a CPU since: what it maps itself is
     * as it was, and stat is not read again (schedstat costs a third). */
    int sched_fd;
    char sched[MT_PROBE_SCHEDSTAT_BYTES]; /* compared as text: nothing to parse */
    int sched_len;
    int settled;
} mt_probe_child_seen;

typedef struct mt_probe {
    char root[MT_PROBE_PATH_MAX]; /* "" for the real /proc and /sys */
    pid_t pid;                    /* whose files are open: a forked child reopens */
    long page_size;
    long clock_ticks;
    int status_fd, statm_fd, stat_fd, clear_refs_fd, loadavg_fd;
    mt_peak_method method;
    int swapless;                 /* the machine had no swap at the peak window's start */
    struct timespec swap_checked; /* when that was last asked (CLOCK_MONOTONIC) */

    /* The sampler thread (method SAMPLED), active during a peak window.  It
     * touches only this struct and its own reads; its lock guards
     * sampled_peak. */
    mt_worker sampler;
    long long sampled_peak;
    long sample_interval_us;

    /* Descendants last read, at pid % MT_PROBE_MAX_CHILDREN; only the
     * thread that owns this probe reads its children. */
    mt_probe_child_seen children_seen[MT_PROBE_MAX_CHILDREN];
    int children_fds; /* descriptors kept there, at most MT_PROBE_KEPT_CHILD_FDS */
    /* The descendants the last walk of the process tree found, and the
     * last pid the kernel had handed out before it (-1: walk again).
     * While no pid has been handed out since, no process can have joined
     * them, and the walk (a directory and a file per thread of each) is
     * not made again; one that left fails its next read. */
    long walked_last_pid;
    int walked_count;
    pid_t walked[MT_PROBE_MAX_CHILDREN];
} mt_probe;

/* Opens the files under root ("" or NULL: the real ones) and decides the
 * peak method: HWM when clear_refs can be written, else SAMPLED.  The
 * caller may force SAMPLED with mt_probe_set_method. */
int mt_probe_open(mt_probe *p, const char *root);
void mt_probe_close(mt_probe *p);
int mt_probe_set_method(mt_probe *p, mt_peak_method method);

/* Fork: registers p's sampler with hooks (worker.h), which stop it before
 * os.fork() and, if it was running, start it again in the parent after (a
 * thread alive at fork makes Python 3.12+ warn). */
void mt_probe_at_fork(mt_probe *p, mt_worker_fork_hooks *hooks);

/* A memory-pressure (PSI) trigger on /proc/pressure/memory, such as "some
 * 50000 1000000" (stalls of 50 ms within a second): a descriptor that
 * poll() reports POLLPRI on, or -1 where it cannot be set (old kernel, no
 * permission).  The caller closes it. */
int mt_probe_psi_trigger(const mt_probe *p, const char *trigger);

/* Current RSS in bytes (statm), -1 on failure. */
long long mt_probe_rss(mt_probe *p);
/* What this process's status and stat say of it now, each read once. */
typedef struct {
    long long rss, hwm, swap;        /* VmRSS, VmHWM, VmSwap in bytes; -1 unreadable */
    unsigned long long major_faults; /* stat's majflt so far (swap-ins among them) */
    int faults_known;
    /* The process's CPU time so far, user and system, and getrusage's
     * ru_maxrss in bytes (the high-water mark, or a higher mark that exited
     * threads left), from the getrusage the faults came from; -1 where they
     * came from a (fake) stat. */
    double cpu_seconds;
    long long usage_max_rss;
} mt_probe_self;
/* Fills now; -1 when not even VmRSS could be read. */
int mt_probe_read_self(mt_probe *p, mt_probe_self *now);
/* Starts a peak window (HWM: reset VmHWM; SAMPLED: arm the thread), last
 * of all: now holds the figures just before it.  Returns the RSS at the
 * start. */
long long mt_probe_peak_begin(mt_probe *p, mt_probe_self *now);
/* Ends the window: the peak RSS since begin, and the figures now. */
int mt_probe_peak_end(mt_probe *p, long long *peak, mt_probe_self *now);

/* Children: every live descendant is counted by what it adds.  The mark
 * holds, for each descendant alive at its start, its private memory then
 * (the baseline); a descendant started since owns all of its own.  No
 * figure of theirs comes from getrusage(RUSAGE_CHILDREN): its ru_maxrss
 * credits a child that exec'd with the high-water mark of the memory it
 * had before, which is ours (vfork shares it, fork copies it). */
typedef struct {
    pid_t pid;
    unsigned long long start_ticks; /* tells a reused pid from this process */
    long long owned, rss;           /* private memory and RSS at the mark */
} mt_probe_child_base;

typedef struct {
    unsigned long long start_ticks; /* descendants started at or after it are the window's */
    int count;
    mt_probe_child_base base[MT_PROBE_MAX_CHILDREN];
} mt_probe_children_mark;
/* Notes the time and every live descendant's private memory: one syscall
 * when there is none. */
void mt_probe_children_begin(mt_probe *p, mt_probe_children_mark *mark);
/* Copies the used part of src (the watcher copies it every look). */
void mt_probe_children_mark_copy(mt_probe_children_mark *dst, const mt_probe_children_mark *src);

int mt_probe_read_limit(mt_probe *p, mt_probe_limit *out);

/* What the descendants added since mark, now.  What each owns is its
 * private memory (smaps_rollup's Private_Clean + Private_Dirty): the pages
 * a forked child still shares with us are counted once, in our RSS; a
 * vforked child that has not exec'd yet shares our whole address space and
 * owns nothing.  A descendant alive at the mark adds what it owns beyond
 * its baseline (less, when it freed some); one started since adds all it
 * owns.  Where a child's smaps_rollup cannot be read (an old kernel,
 * another user's process) its RSS stands in, and unreadable counts it.
 * Costs a few /proc reads per descendant, one syscall when there are none. */
typedef struct {
    int count, unreadable; /* live descendants */
    long long owned;       /* their growth since the mark, summed */
    long long rss_total;   /* the growth of their RSS, shared pages included */
    pid_t biggest_pid;     /* the one that grew most */
    long long biggest_owned;
    /* Whether the window's cell started it: only such a child may be
     * killed by the guard (an older one may be a worker that something else
     * supervises and restarts, or a server the user relies on). */
    int biggest_is_own;
} mt_probe_children_use;
/* Whether this process has any child process now (one syscall). */
int mt_probe_has_children(void);
void mt_probe_children_now(mt_probe *p, const mt_probe_children_mark *mark,
                           mt_probe_children_use *out);

/* How a cell's children_peak was measured. */
typedef enum {
    MT_CHILDREN_NONE = 0, /* no child, or no figure */
    MT_CHILDREN_PRIVATE,  /* the private memory they added (smaps_rollup) */
    MT_CHILDREN_RSS,      /* some child's smaps_rollup was unreadable: its RSS stood in */
} mt_children_method;

/* "private", "rss" or NULL (none), as reports and messages name it. */
const char *mt_probe_children_method_name(mt_children_method method);

/* One descendant as the children report shows it. */
#define MT_PROBE_COMMAND_BYTES 256
#define MT_PROBE_MAX_PORTS 8
typedef struct {
    pid_t pid, ppid;
    unsigned long long start_ticks;
    long long owned, shared, rss;         /* private, shared (smaps_rollup) and RSS; -1 unknown */
    char command[MT_PROBE_COMMAND_BYTES]; /* its command line, arguments joined by spaces */
    int ports[MT_PROBE_MAX_PORTS];        /* TCP ports it listens on */
    int port_count;
} mt_probe_child_info;
/* Every live descendant (breadth first, parents before their children);
 * returns how many were stored, at most max. */
int mt_probe_descendants(const mt_probe *p, pid_t *pids, int max);
/* Reads one; -1 when it is gone. */
int mt_probe_child_describe(const mt_probe *p, pid_t pid, mt_probe_child_info *out);
/* Boot ticks now, the clock of start_ticks. */
unsigned long long mt_probe_boot_ticks(const mt_probe *p);

/* Pure parsers for it: the parent pid (field 4 of stat); the shared memory
 * of smaps_rollup (Shared_Clean + Shared_Dirty); a cmdline's NUL-separated
 * arguments of length len, joined by spaces into out; the inode of an fd
 * link "socket:[N]"; and the ports of a /proc/net/tcp or tcp6 table's
 * listening sockets (state 0A) whose inode is among inodes, appended to
 * ports[*count..max). */
int mt_probe_parse_ppid(const char *text, pid_t *ppid);
int mt_probe_parse_shared_memory(const char *text, long long *bytes);
void mt_probe_parse_cmdline(const char *text, size_t len, char *out, size_t size);
int mt_probe_parse_socket_inode(const char *link, unsigned long *inode);
void mt_probe_parse_listening(const char *text, const unsigned long *inodes, int inode_count,
                              int *ports, int *count, int max);

/* ---- the memory this process shares with others ----
 *
 * The OOM killer acts on a cgroup's working set (usage minus the inactive
 * file cache, which the kernel reclaims first; the kubelet counts it so
 * too) against its limit, or on the machine's memory where no cgroup
 * limits it.  Of the cgroup and its ancestors with a limit, and the
 * machine, the one that leaves least room binds. */
typedef struct {
    long long limit; /* bytes */
    long long usage; /* memory.current / usage_in_bytes; MemTotal - MemFree on the machine */
    long long inactive_file;     /* memory.stat's (total_)inactive_file; 0 on the machine */
    long long working_set;       /* what is held against limit: usage - inactive_file,
                                  * or MemTotal - MemAvailable on the machine */
    int version;                 /* 2, 1: cgroup v2 or v1; 0: the machine (/proc/meminfo) */
    char dir[MT_PROBE_PATH_MAX]; /* the cgroup's directory; "" for the machine */
} mt_probe_shared;

/* Pure: usage and memory.stat text of a cgroup of version 1 or 2 into *out
 * (usage, inactive_file, working_set); /proc/meminfo text likewise
 * (version 0: limit MemTotal, working set MemTotal - MemAvailable). */
int mt_probe_parse_cgroup_usage(const char *usage_text, const char *stat_text, int version,
                                mt_probe_shared *out);
int mt_probe_parse_meminfo_usage(const char *meminfo_text, mt_probe_shared *out);

/* Finds where the shared limit binds and reads it; -1 when not even
 * /proc/meminfo can be read. */
int mt_probe_read_shared(mt_probe *p, mt_probe_shared *out);

/* Open files of one mt_probe_shared, for fresh readings from allocator
 * hooks: no allocation, no lock.  Reopening replaces the descriptors in
 * place (dup2), so a concurrent reading sees the old or the new file. */
typedef struct {
    int usage_fd, stat_fd; /* -1 when closed */
    int version;
} mt_probe_shared_files;
int mt_probe_shared_open(const mt_probe *p, const mt_probe_shared *where,
                         mt_probe_shared_files *files);
void mt_probe_shared_close(mt_probe_shared_files *files);
/* The working set now; -1 when it cannot be read. */
long long mt_probe_shared_working_set(const mt_probe_shared_files *files);

/* The processes sharing it: the pids of the cgroup at dir and of its
 * descendants, or of the whole machine when dir is "" (stores at most max,
 * returns how many).  Then one process's RSS and command name (comm, unless
 * NULL); -1 when it is gone. */
int mt_probe_sharing_pids(const mt_probe *p, const char *dir, pid_t *pids, int max);
int mt_probe_pid_rss(const mt_probe *p, pid_t pid, long long *rss, char *comm, size_t comm_size);
/* When process pid started (clock ticks since boot), to tell a reused pid
 * from the process it was; -1 when it is gone. */
int mt_probe_pid_start_ticks(const mt_probe *p, pid_t pid, unsigned long long *ticks);
/* Whether pid is still the process that started at start_ticks and has not
 * ended: 0 once it is gone or a zombie (dead, not yet reaped by its
 * parent), or when its pid was reused. */
int mt_probe_pid_running(const mt_probe *p, pid_t pid, unsigned long long start_ticks);

/* ---- swap ---- */

/* Where the swap this process may use binds (the machine's, or a cgroup of
 * ours or an ancestor that allows less); -1 when not even /proc/meminfo
 * can be read. */
int mt_probe_read_swap(mt_probe *p, mt_probe_swap *out);
/* This process's bytes in swap now (status's VmSwap), -1 when unreadable:
 * one read, for the guard's watcher. */
long long mt_probe_vm_swap(mt_probe *p);
/* Memory pressure (PSI avg10 of "some" and "full", percent) of this
 * process's cgroup v2, else of the machine; -1 where the kernel has no PSI. */
int mt_probe_read_pressure(mt_probe *p, double *some_avg10, double *full_avg10);

/* How many times the OOM killer fired: the cgroup's count where it is
 * exposed, else the machine's; path receives the file read (so a later
 * process can read the same counter with mt_probe_read_oom_kills). */
int mt_probe_oom_kills(mt_probe *p, char *path, size_t path_size, long long *count);
int mt_probe_read_oom_kills(const char *path, long long *count);
/* The same from that file kept open (read from its start). */
int mt_probe_read_oom_kills_fd(int fd, long long *count);

#endif
