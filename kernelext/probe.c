/* probe: /proc and cgroup readers.  No Python API in this file (see probe.h). */
#define _GNU_SOURCE
#include "memtamer/probe.h"

#include <ctype.h>
#include <stdarg.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/resource.h>
#include <sys/sysinfo.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#if defined(SYS_kcmp)
#include <linux/kcmp.h>
#endif

/* cgroup v1 writes "unlimited" as LONG_MAX rounded down to a page; anything
 * above 2^60 bytes is no limit in practice. */
#define UNLIMITED_ABOVE (1LL << 60)

/* ------------------------------------------------------------------ */
/* pure parsers                                                        */
/* ------------------------------------------------------------------ */

/* What follows "key<after>" at the start of a line, or NULL (strstr: the
 * status file is read twice a cell, and its fields are far down). */
static const char *
find_line(const char *text, const char *key, char after)
{
    size_t n = strlen(key);
    for (const char *at = strstr(text, key); at; at = strstr(at + 1, key)) {
        if ((at == text || at[-1] == '\n') && at[n] == after) {
            return at + n + 1;
        }
    }
    return NULL;
}

static int
parse_ll(const char *s, long long *out)
{
    while (*s == ' ' || *s == '\t') {
        s++;
    }
    if (!isdigit((unsigned char)*s)) {
        return -1;
    }
    /* By hand, not strtoull: several figures are read every cell. */
    long long v = 0;
    for (; isdigit((unsigned char)*s); s++) {
        int digit = *s - '0';
        v = v > (LLONG_MAX - digit) / 10 ? LLONG_MAX : v * 10 + digit; /* saturates */
    }
    *out = v;
    return 0;
}

int
mt_probe_parse_kb_field(const char *text, const char *key, long long *bytes)
{
    long long kb;
    const char *value = find_line(text, key, ':');
    if (value == NULL || parse_ll(value, &kb) < 0) {
        return -1;
    }
    *bytes = kb > LLONG_MAX / 1024 ? LLONG_MAX : kb * 1024;
    return 0;
}

int
mt_probe_parse_statm(const char *text, long page_size, long long *rss)
{
    /* "size resident ...": the second figure (read every cell: no sscanf). */
    long long size_pages, rss_pages;
    const char *space;
    if (parse_ll(text, &size_pages) < 0 || (space = strchr(text, ' ')) == NULL ||
        parse_ll(space, &rss_pages) < 0) {
        return -1;
    }
    *rss = rss_pages > LLONG_MAX / page_size ? LLONG_MAX : rss_pages * page_size;
    return 0;
}

int
mt_probe_parse_limit(const char *text, long long *limit)
{
    while (isspace((unsigned char)*text)) {
        text++;
    }
    if (strncmp(text, "max", 3) == 0) {
        *limit = MT_PROBE_UNLIMITED;
        return 0;
    }
    long long v;
    if (parse_ll(text, &v) < 0) {
        return -1;
    }
    *limit = v >= UNLIMITED_ABOVE ? MT_PROBE_UNLIMITED : v;
    return 0;
}

int
mt_probe_parse_keyed(const char *text, const char *key, long long *value)
{
    const char *v = find_line(text, key, ' ');
    return v == NULL ? -1 : parse_ll(v, value);
}

/* Copies [start, end) into dst as a C string; -1 if it does not fit. */
static int
copy_span(char *dst, size_t size, const char *start, const char *end)
{
    size_t n = (size_t)(end - start);
    if (n >= size) {
        return -1;
    }
    memcpy(dst, start, n);
    dst[n] = '\0';
    return 0;
}

static int
list_has(const char *list, const char *list_end, const char *word)
{
    size_t n = strlen(word);
    for (const char *p = list; p < list_end;) {
        const char *comma = memchr(p, ',', (size_t)(list_end - p));
        const char *stop = comma ? comma : list_end;
        if ((size_t)(stop - p) == n && strncmp(p, word, n) == 0) {
            return 1;
        }
        p = stop + 1;
    }
    return 0;
}

int
mt_probe_parse_cgroup(const char *text, char *v2_path, size_t v2_size, char *v1_path,
                      size_t v1_size)
{
    v2_path[0] = v1_path[0] = '\0';
    int found = 0;
    for (const char *line = text; line && *line;) {
        const char *eol = strchr(line, '\n');
        const char *end = eol ? eol : line + strlen(line);
        const char *c1 = memchr(line, ':', (size_t)(end - line));
        const char *c2 = c1 ? memchr(c1 + 1, ':', (size_t)(end - c1 - 1)) : NULL;
        if (c2) {
            if (c2 == c1 + 1 && c1 - line == 1 && line[0] == '0') {
                found |= copy_span(v2_path, v2_size, c2 + 1, end) == 0;
            }
            else if (list_has(c1 + 1, c2, "memory")) {
                found |= copy_span(v1_path, v1_size, c2 + 1, end) == 0;
            }
        }
        line = eol ? eol + 1 : NULL;
    }
    return found ? 0 : -1;
}

/* The n-th space-separated field of [line, end) (0-based). */
static const char *
nth_field(const char *line, const char *end, int n, const char **field_end)
{
    const char *p = line;
    for (int i = 0; p < end; i++) {
        const char *sp = memchr(p, ' ', (size_t)(end - p));
        const char *stop = sp ? sp : end;
        if (i == n) {
            *field_end = stop;
            return p;
        }
        if (!sp) {
            break;
        }
        p = sp + 1;
    }
    return NULL;
}

int
mt_probe_parse_mountinfo(const char *text, mt_probe_mounts *m)
{
    memset(m, 0, sizeof *m);
    for (const char *line = text; line && *line;) {
        const char *eol = strchr(line, '\n');
        const char *end = eol ? eol : line + strlen(line);
        /* "id parent maj:min root mountpoint options [optional...] - fstype source superopts" */
        const char *dash = strstr(line, " - ");
        if (dash && dash < end) {
            const char *root_end = NULL, *mount_end = NULL, *type_end = NULL, *opts_end = NULL;
            const char *root = nth_field(line, dash, 3, &root_end);
            const char *mount = nth_field(line, dash, 4, &mount_end);
            const char *type = nth_field(dash + 3, end, 0, &type_end);
            const char *opts = nth_field(dash + 3, end, 2, &opts_end);
            if (root && mount && type) {
                size_t tlen = (size_t)(type_end - type);
                if (tlen == 7 && strncmp(type, "cgroup2", 7) == 0 && !m->v2_mount[0]) {
                    copy_span(m->v2_mount, sizeof m->v2_mount, mount, mount_end);
                    copy_span(m->v2_root, sizeof m->v2_root, root, root_end);
                }
                else if (tlen == 6 && strncmp(type, "cgroup", 6) == 0 && opts &&
                         list_has(opts, opts_end, "memory") && !m->v1_mount[0]) {
                    copy_span(m->v1_mount, sizeof m->v1_mount, mount, mount_end);
                    copy_span(m->v1_root, sizeof m->v1_root, root, root_end);
                }
            }
        }
        line = eol ? eol + 1 : NULL;
    }
    return (m->v2_mount[0] || m->v1_mount[0]) ? 0 : -1;
}

int
mt_probe_parse_pids(const char *text, pid_t *pids, int max)
{
    int n = 0;
    const char *p = text;
    while (n < max) {
        while (*p && !isdigit((unsigned char)*p)) {
            p++;
        }
        if (!*p) {
            break;
        }
        char *end;
        long v = strtol(p, &end, 10);
        if (v > 0 && v <= INT_MAX) {
            pids[n++] = (pid_t)v;
        }
        p = end;
    }
    return n;
}

/* Numeric fields ns[0] < ns[1] < ... (counted from 1, each > 2) of a
 * /proc/<pid>/stat line, in one pass (children's are read every cell). */
static int
stat_fields(const char *text, const int *ns, int count, unsigned long long *values)
{
    /* The command name may contain ") "; the last ')' ends it. */
    const char *p = strrchr(text, ')');
    if (p == NULL) {
        return -1;
    }
    p++; /* the space before field 3 (state) */
    int field = 3;
    for (int i = 0; i < count; i++) {
        for (; field < ns[i]; field++) {
            if ((p = strchr(p + 1, ' ')) == NULL) {
                return -1;
            }
        }
        long long v;
        if (!isdigit((unsigned char)p[1]) || parse_ll(p + 1, &v) < 0) {
            return -1;
        }
        values[i] = (unsigned long long)v;
    }
    return 0;
}

static int
stat_field(const char *text, int n, unsigned long long *value)
{
    return stat_fields(text, &n, 1, value);
}

int
mt_probe_parse_starttime(const char *text, unsigned long long *ticks)
{
    return stat_field(text, 22, ticks);
}

int
mt_probe_parse_schedstat(const char *text, unsigned long long *ran_ns, unsigned long long *arrivals)
{
    /* "run_ns wait_ns arrivals\n" */
    const char *waited = strchr(text, ' ');
    const char *runs = waited ? strchr(waited + 1, ' ') : NULL;
    long long ran, wait, count;
    if (runs == NULL || parse_ll(text, &ran) < 0 || parse_ll(waited + 1, &wait) < 0 ||
        parse_ll(runs + 1, &count) < 0) {
        return -1;
    }
    *ran_ns = (unsigned long long)ran;
    *arrivals = (unsigned long long)count;
    return 0;
}

int
mt_probe_parse_majflt(const char *text, unsigned long long *faults)
{
    return stat_field(text, 12, faults);
}

int
mt_probe_parse_last_pid(const char *text, long *pid)
{
    size_t len = strlen(text);
    while (len > 0 && isspace((unsigned char)text[len - 1])) {
        len--;
    }
    size_t start = len;
    while (start > 0 && isdigit((unsigned char)text[start - 1])) {
        start--;
    }
    if (start == len || start == 0 || text[start - 1] != ' ') {
        return -1;
    }
    long long value;
    if (parse_ll(text + start, &value) < 0 || value > LONG_MAX) {
        return -1;
    }
    *pid = (long)value;
    return 0;
}

int
mt_probe_parse_state(const char *text, char *state)
{
    const char *p = strrchr(text, ')');
    if (p == NULL || p[1] != ' ' || p[2] == '\0') {
        return -1;
    }
    *state = p[2];
    return 0;
}

/* The sum of smaps_rollup's clean and dirty fields of one kind, in bytes. */
static int
parse_clean_and_dirty(const char *text, const char *clean_field, const char *dirty_field,
                      long long *bytes)
{
    long long clean, dirty;
    if (mt_probe_parse_kb_field(text, clean_field, &clean) < 0 ||
        mt_probe_parse_kb_field(text, dirty_field, &dirty) < 0) {
        return -1;
    }
    *bytes = clean + dirty;
    return 0;
}

int
mt_probe_parse_private(const char *text, long long *bytes)
{
    return parse_clean_and_dirty(text, "Private_Clean", "Private_Dirty", bytes);
}

int
mt_probe_parse_shared_memory(const char *text, long long *bytes)
{
    return parse_clean_and_dirty(text, "Shared_Clean", "Shared_Dirty", bytes);
}

int
mt_probe_parse_ppid(const char *text, pid_t *ppid)
{
    unsigned long long v;
    if (stat_field(text, 4, &v) < 0) {
        return -1;
    }
    *ppid = (pid_t)v;
    return 0;
}

void
mt_probe_parse_cmdline(const char *text, size_t len, char *out, size_t size)
{
    size_t n = 0;
    if (size == 0) {
        return;
    }
    /* The last argument ends with a NUL too: drop it, not turn it into a space. */
    while (len > 0 && text[len - 1] == '\0') {
        len--;
    }
    for (size_t i = 0; i < len && n + 1 < size; i++) {
        out[n++] = text[i] == '\0' ? ' ' : text[i];
    }
    out[n] = '\0';
}

int
mt_probe_parse_socket_inode(const char *link, unsigned long *inode)
{
    static const char prefix[] = "socket:[";
    if (strncmp(link, prefix, sizeof prefix - 1) != 0) {
        return -1;
    }
    char *end;
    errno = 0;
    unsigned long v = strtoul(link + sizeof prefix - 1, &end, 10);
    if (end == link + sizeof prefix - 1 || *end != ']' || errno) {
        return -1;
    }
    *inode = v;
    return 0;
}

/* A /proc/net/tcp line: "sl local_address rem_address st tx:rx tr:when
 * retrnsmt uid timeout inode ...", addresses as HEXADDR:HEXPORT. */
void
mt_probe_parse_listening(const char *text, const unsigned long *inodes, int inode_count, int *ports,
                         int *count, int max)
{
    const char *line = strchr(text, '\n'); /* the first line is the header */
    while (line != NULL && *count < max) {
        line++;
        char local[80], state[8];
        unsigned long inode;
        int fields = sscanf(line, "%*s %79s %*s %7s %*s %*s %*s %*s %*s %lu", local, state, &inode);
        line = strchr(line, '\n');
        const char *colon = fields == 3 ? strrchr(local, ':') : NULL;
        if (colon == NULL || strcmp(state, "0A") != 0) {
            continue;
        }
        for (int i = 0; i < inode_count; i++) {
            if (inodes[i] == inode) {
                ports[(*count)++] = (int)strtol(colon + 1, NULL, 16);
                break;
            }
        }
    }
}

int
mt_probe_parse_psi(const char *text, const char *line, double *avg10)
{
    const char *p = find_line(text, line, ' ');
    const char *eol = p ? strchr(p, '\n') : NULL;
    p = p ? strstr(p, "avg10=") : NULL;
    if (p == NULL || (eol && p > eol)) {
        return -1;
    }
    /* By hand rather than strtod: the user's locale may want a comma. */
    p += strlen("avg10=");
    if (!isdigit((unsigned char)*p)) {
        return -1;
    }
    /* Digits as one integer, divided once: the closest double to the text. */
    long long digits = 0;
    double scale = 1;
    for (int fraction = 0; isdigit((unsigned char)*p) || (*p == '.' && !fraction); p++) {
        if (*p == '.') {
            fraction = 1;
            continue;
        }
        if (digits > LLONG_MAX / 10 - 1) {
            return -1; /* no share of time has that many digits */
        }
        digits = digits * 10 + (*p - '0');
        scale *= fraction ? 10 : 1;
    }
    double v = (double)digits / scale;
    *avg10 = v;
    return 0;
}

int
mt_probe_parse_meminfo_swap(const char *text, mt_probe_swap *out)
{
    long long total, free_;
    if (mt_probe_parse_kb_field(text, "SwapTotal", &total) < 0 ||
        mt_probe_parse_kb_field(text, "SwapFree", &free_) < 0) {
        return -1;
    }
    memset(out, 0, sizeof *out);
    out->limit = total;
    out->room = free_ < total ? free_ : total;
    out->used = total - out->room;
    return 0;
}

int
mt_probe_parse_cgroup_swap(int version, const char *limit_text, const char *usage_text,
                           long long memory_limit, long long memory_usage, mt_probe_swap *out)
{
    long long limit, usage;
    if (mt_probe_parse_limit(limit_text, &limit) < 0 || parse_ll(usage_text, &usage) < 0) {
        return -1;
    }
    memset(out, 0, sizeof *out);
    out->version = version;
    if (version == 1) {
        /* memsw counts memory and swap together: swap is what exceeds the
         * memory figures.  Where memory itself is unlimited, memsw alone
         * bounds both and all of it could go to swap. */
        usage = memory_usage >= 0 && usage > memory_usage ? usage - memory_usage : 0;
        if (limit != MT_PROBE_UNLIMITED && memory_limit != MT_PROBE_UNLIMITED) {
            limit = limit > memory_limit ? limit - memory_limit : 0;
        }
    }
    out->limit = limit;
    out->used = usage;
    out->room = limit == MT_PROBE_UNLIMITED ? MT_PROBE_UNLIMITED
                : usage < limit             ? limit - usage
                                            : 0;
    return 0;
}

/* ------------------------------------------------------------------ */
/* the I/O shell                                                       */
/* ------------------------------------------------------------------ */

static ssize_t
pread_text(int fd, char *buf, size_t size)
{
    size_t got = 0;
    while (got + 1 < size) {
        ssize_t n = pread(fd, buf + got, size - 1 - got, (off_t)got);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            return -1;
        }
        if (n == 0) {
            break;
        }
        got += (size_t)n;
    }
    buf[got] = '\0';
    return (ssize_t)got;
}

/* The files read every cell (status, statm, stat, meminfo, a cgroup's
 * memory.current and memory.stat) are each written by one show() call, and
 * a seq_file read returns all of such a file when the buffer holds it: one
 * pread, not a second one to see the end.  Truncated at size - 1 bytes, as
 * pread_text is. */
static ssize_t
pread_record(int fd, char *buf, size_t size)
{
    ssize_t n;
    do {
        n = pread(fd, buf, size - 1, 0);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
        return -1;
    }
    buf[n] = '\0';
    return n;
}

static ssize_t
read_text(const char *path, char *buf, size_t size)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return -1;
    }
    ssize_t n = pread_text(fd, buf, size);
    close(fd);
    return n;
}

static int proc_path(const mt_probe *p, char *buf, size_t size, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int
proc_path(const mt_probe *p, char *buf, size_t size, const char *fmt, ...)
{
    va_list ap;
    int n = snprintf(buf, size, "%s", p->root);
    if (n < 0 || (size_t)n >= size) {
        return -1;
    }
    va_start(ap, fmt);
    int m = vsnprintf(buf + n, size - (size_t)n, fmt, ap);
    va_end(ap);
    return (m < 0 || (size_t)(n + m) >= size) ? -1 : 0;
}

static int
open_proc(const mt_probe *p, const char *name, int flags)
{
    char path[MT_PROBE_PATH_MAX + 64];
    if (proc_path(p, path, sizeof path, "/proc/self/%s", name) < 0) {
        return -1;
    }
    return open(path, flags | O_CLOEXEC);
}

int
mt_probe_psi_trigger(const mt_probe *p, const char *trigger)
{
    char path[MT_PROBE_PATH_MAX + 64];
    if (proc_path(p, path, sizeof path, "/proc/pressure/memory") < 0) {
        return -1;
    }
    int fd = open(path, O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (fd >= 0 && write(fd, trigger, strlen(trigger) + 1) < 0) {
        close(fd);
        fd = -1;
    }
    return fd;
}

static void
close_fd(int *fd)
{
    if (*fd >= 0) {
        close(*fd);
    }
    *fd = -1;
}

static void
forget_child(mt_probe *p, mt_probe_child_seen *s)
{
    p->children_fds -= (s->stat_fd >= 0) + (s->sched_fd >= 0);
    close_fd(&s->stat_fd);
    close_fd(&s->sched_fd);
    *s = (mt_probe_child_seen){.stat_fd = -1, .sched_fd = -1};
}

/* Closes the descriptors the children table keeps (at close, and in a
 * forked child, whose table is its parent's). */
static void
forget_children(mt_probe *p)
{
    for (int i = 0; i < MT_PROBE_MAX_CHILDREN; i++) {
        forget_child(p, &p->children_seen[i]);
    }
}

static int
try_reset_hwm(mt_probe *p)
{
    if (p->clear_refs_fd < 0) {
        return -1;
    }
    /* "5" resets the peak RSS (VmHWM) to the current RSS; see proc(5). */
    return pwrite(p->clear_refs_fd, "5", 1, 0) == 1 ? 0 : -1;
}

/* /proc/self files opened in a parent still describe the parent after fork:
 * a child must open its own. */
static void
open_files(mt_probe *p)
{
    p->pid = mt_worker_pid();
    p->status_fd = open_proc(p, "status", O_RDONLY);
    p->statm_fd = open_proc(p, "statm", O_RDONLY);
    p->stat_fd = open_proc(p, "stat", O_RDONLY);
    char path[MT_PROBE_PATH_MAX + 64];
    p->loadavg_fd = proc_path(p, path, sizeof path, "/proc/loadavg") == 0
                        ? open(path, O_RDONLY | O_CLOEXEC)
                        : -1;
    p->walked_last_pid = -1;
    p->clear_refs_fd = open_proc(p, "clear_refs", O_WRONLY);
}

static void
close_files(mt_probe *p)
{
    close_fd(&p->status_fd);
    close_fd(&p->statm_fd);
    close_fd(&p->stat_fd);
    close_fd(&p->loadavg_fd);
    close_fd(&p->clear_refs_fd);
}

static void
follow_fork(mt_probe *p)
{
    if (p->pid == mt_worker_pid()) {
        return;
    }
    close_files(p);
    forget_children(p);
    open_files(p);
    mt_worker_forget_in_child(&p->sampler);
}

static void sample_step(void *owner, int fresh);

int
mt_probe_open(mt_probe *p, const char *root)
{
    memset(p, 0, sizeof *p);
    for (int i = 0; i < MT_PROBE_MAX_CHILDREN; i++) {
        /* Before any return: close reads them. */
        p->children_seen[i].stat_fd = p->children_seen[i].sched_fd = -1;
    }
    if (root && snprintf(p->root, sizeof p->root, "%s", root) >= (int)sizeof p->root) {
        errno = ENAMETOOLONG;
        return -1;
    }
    p->page_size = sysconf(_SC_PAGESIZE);
    p->clock_ticks = sysconf(_SC_CLK_TCK);
    p->sample_interval_us = 500;
    p->status_fd = p->statm_fd = p->stat_fd = p->clear_refs_fd = p->loadavg_fd = -1;
    mt_worker_init(&p->sampler, sample_step, p);
    open_files(p);
    if (p->status_fd < 0 || p->statm_fd < 0) {
        p->method = MT_PEAK_NONE;
    }
    else {
        p->method = try_reset_hwm(p) == 0 ? MT_PEAK_HWM : MT_PEAK_SAMPLED;
    }
    return 0;
}

static void
sample_step(void *owner, int fresh)
{
    mt_probe *p = owner;
    (void)fresh; /* every sample counts alike */
    long long rss = mt_probe_rss(p);
    struct timespec nap = {0, p->sample_interval_us * 1000L};
    mt_worker_lock(&p->sampler);
    if (rss > p->sampled_peak) {
        p->sampled_peak = rss;
    }
    mt_worker_unlock(&p->sampler);
    nanosleep(&nap, NULL);
}

const char *
mt_probe_method_name(mt_peak_method method)
{
    switch (method) {
    case MT_PEAK_HWM:
        return "hwm";
    case MT_PEAK_SAMPLED:
        return "sampled";
    default:
        return "unavailable";
    }
}

const char *
mt_probe_children_method_name(mt_children_method method)
{
    return method == MT_CHILDREN_PRIVATE ? "private" : method == MT_CHILDREN_RSS ? "rss" : NULL;
}

static void
fork_pause(void *owner)
{
    mt_probe *p = owner;
    mt_worker_pause_for_fork(&p->sampler);
}

/* A sampler that cannot start again leaves no peak method. */
static int
fork_resume(void *owner)
{
    mt_probe *p = owner;
    if (mt_worker_resume_after_fork(&p->sampler) != 0) {
        p->method = MT_PEAK_NONE;
    }
    return 0;
}

void
mt_probe_at_fork(mt_probe *p, mt_worker_fork_hooks *hooks)
{
    mt_worker_at_fork(hooks, fork_pause, fork_resume, p);
}

void
mt_probe_close(mt_probe *p)
{
    mt_worker_stop(&p->sampler);
    close_files(p);
    forget_children(p);
}

long long
mt_probe_rss(mt_probe *p)
{
    char buf[256];
    long long rss;
    follow_fork(p);
    if (p->statm_fd < 0 || pread_record(p->statm_fd, buf, sizeof buf) < 0 ||
        mt_probe_parse_statm(buf, p->page_size, &rss) < 0) {
        return -1;
    }
    return rss;
}

/* The process's major faults: getrusage sums the same per-thread counters
 * as /proc/self/stat's majflt at a fifth of its cost (and gives the CPU
 * time with them); a fake root's stat is read. */
static void
take_usage(const struct rusage *usage, mt_probe_self *now)
{
    now->major_faults = (unsigned long long)usage->ru_majflt;
    now->faults_known = 1;
    now->cpu_seconds = (double)(usage->ru_utime.tv_sec + usage->ru_stime.tv_sec) +
                       (double)(usage->ru_utime.tv_usec + usage->ru_stime.tv_usec) * 1e-6;
    now->usage_max_rss = (long long)usage->ru_maxrss * 1024;
}

static void
read_major_faults(mt_probe *p, mt_probe_self *now)
{
    char buf[1024];
    struct rusage usage;
    now->cpu_seconds = now->usage_max_rss = -1;
    if (p->root[0] == '\0' && getrusage(RUSAGE_SELF, &usage) == 0) {
        take_usage(&usage, now);
        return;
    }
    now->faults_known = p->stat_fd >= 0 && pread_record(p->stat_fd, buf, sizeof buf) >= 0 &&
                        mt_probe_parse_majflt(buf, &now->major_faults) == 0;
}

/* How long an answer to whether the machine has swap stands: swap devices
 * come and go by hand, and sysinfo walks the block devices to answer. */
#define SWAP_CHECK_NS 1000000000LL

/* Whether the machine has no swap device (none of our pages can be in
 * swap), asked at most once per SWAP_CHECK_NS; only for the real /proc. */
static int
without_swap(mt_probe *p)
{
    struct sysinfo info;
    struct timespec now;
    if (p->root[0] != '\0' || clock_gettime(CLOCK_MONOTONIC, &now) < 0) {
        return 0;
    }
    long long since = (long long)(now.tv_sec - p->swap_checked.tv_sec) * 1000000000LL +
                      (now.tv_nsec - p->swap_checked.tv_nsec);
    if (p->swap_checked.tv_sec == 0 || since >= SWAP_CHECK_NS) {
        p->swapless = sysinfo(&info) == 0 && info.totalswap == 0;
        p->swap_checked = now;
    }
    return p->swapless;
}

int
mt_probe_read_self(mt_probe *p, mt_probe_self *now)
{
    char buf[4096];
    now->rss = now->hwm = now->swap = -1;
    follow_fork(p);
    read_major_faults(p, now);
    if (p->status_fd < 0 || pread_record(p->status_fd, buf, sizeof buf) < 0 ||
        mt_probe_parse_kb_field(buf, "VmRSS", &now->rss) < 0) {
        return -1;
    }
    /* Each stays -1 where status lacks it (a parser writes only what it found). */
    mt_probe_parse_kb_field(buf, "VmHWM", &now->hwm);
    mt_probe_parse_kb_field(buf, "VmSwap", &now->swap);
    return 0;
}

int
mt_probe_set_method(mt_probe *p, mt_peak_method method)
{
    if (method == MT_PEAK_HWM && try_reset_hwm(p) < 0) {
        return -1;
    }
    if (method != MT_PEAK_SAMPLED) {
        mt_worker_stop(&p->sampler);
    }
    p->method = method;
    return 0;
}

long long
mt_probe_peak_begin(mt_probe *p, mt_probe_self *now)
{
    /* Every cell: the RSS from statm (a quarter of status's cost), and
     * VmSwap from status only where the machine has swap; VmHWM is not
     * needed at the start. */
    now->rss = mt_probe_rss(p); /* first: it reopens our files in a forked child */
    now->hwm = -1;
    p->swapless = without_swap(p);
    now->swap = p->swapless ? 0 : mt_probe_vm_swap(p);
    read_major_faults(p, now);
    long long rss = now->rss;
    if (p->method == MT_PEAK_HWM) {
        /* getrusage's mark, never below the high-water mark, is no higher
         * than the RSS: the high-water mark is the RSS already, and the
         * reset (which takes the address space's lock for writing, waiting
         * for every thread's page fault) is not needed. */
        if ((rss >= 0 && now->usage_max_rss >= 0 && now->usage_max_rss <= rss) ||
            try_reset_hwm(p) == 0) {
            return rss;
        }
        p->method = MT_PEAK_SAMPLED; /* clear_refs stopped working */
    }
    if (p->method == MT_PEAK_SAMPLED) {
        if (mt_worker_start(&p->sampler) != 0) {
            p->method = MT_PEAK_NONE;
            return rss;
        }
        mt_worker_lock(&p->sampler);
        p->sampled_peak = rss;
        mt_worker_unlock(&p->sampler);
        mt_worker_set_active(&p->sampler, 1);
    }
    return rss;
}

/* The end of an HWM window without reading status, where that is exact:
 * getrusage's ru_maxrss is the larger of the high-water mark (reset at the
 * window's start) and what threads that exited left in it, so when it is
 * no more than the RSS read before it, the high-water mark is that RSS.
 * Only where status would add nothing else (no swap when the window began;
 * the real /proc).  1 when it could, 0 when status must be read. */
static int
peak_end_without_status(mt_probe *p, long long *peak, mt_probe_self *now)
{
    struct rusage usage;
    if (p->method != MT_PEAK_HWM || !p->swapless) {
        return 0;
    }
    long long rss = mt_probe_rss(p); /* first: it reopens our files in a forked child */
    if (rss < 0 || getrusage(RUSAGE_SELF, &usage) < 0) {
        return 0;
    }
    take_usage(&usage, now);
    if (now->usage_max_rss > rss) {
        return 0;
    }
    now->rss = now->hwm = *peak = rss;
    now->swap = 0;
    return 1;
}

int
mt_probe_peak_end(mt_probe *p, long long *peak, mt_probe_self *now)
{
    *peak = -1;
    if (peak_end_without_status(p, peak, now)) {
        return 0;
    }
    if (mt_probe_read_self(p, now) < 0) {
        return -1;
    }
    if (p->method == MT_PEAK_HWM) {
        *peak = now->hwm;
    }
    else if (p->method == MT_PEAK_SAMPLED && p->sampler.started) {
        mt_worker_lock(&p->sampler);
        p->sampler.active = 0;
        *peak = p->sampled_peak > now->rss ? p->sampled_peak : now->rss;
        mt_worker_unlock(&p->sampler);
        mt_worker_stop(&p->sampler); /* no thread of ours between cells */
    }
    return 0;
}

/* ---- children ---- */

/* Socket descriptors of one process looked at for listening ports. */
#define MAX_SOCKETS 256

unsigned long long
mt_probe_boot_ticks(const mt_probe *p)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_BOOTTIME, &ts) < 0) {
        return 0;
    }
    return (unsigned long long)ts.tv_sec * (unsigned long long)p->clock_ticks +
           (unsigned long long)ts.tv_nsec / (1000000000ULL / (unsigned long long)p->clock_ticks);
}

/* Appends the children of every thread of pid to pids[*n..max). */
static void
collect_children(const mt_probe *p, pid_t pid, pid_t *pids, int *n, int max)
{
    char path[MT_PROBE_PATH_MAX + 64], buf[4096];
    if (proc_path(p, path, sizeof path, "/proc/%d/task", (int)pid) < 0) {
        return;
    }
    DIR *dir = opendir(path);
    if (dir == NULL) {
        return;
    }
    struct dirent *entry;
    while ((entry = readdir(dir)) != NULL && *n < max) {
        if (!isdigit((unsigned char)entry->d_name[0])) {
            continue;
        }
        char file[MT_PROBE_PATH_MAX + 128];
        if (snprintf(file, sizeof file, "%s/%s/children", path, entry->d_name) >=
                (int)sizeof file ||
            read_text(file, buf, sizeof buf) < 0) {
            continue;
        }
        *n += mt_probe_parse_pids(buf, pids + *n, max - *n);
    }
    closedir(dir);
}

/* One syscall instead of a /proc scan for the common case of no children:
 * waitid sees the children of every thread, and WNOWAIT reaps none. */
int
mt_probe_has_children(void)
{
    siginfo_t info;
    info.si_pid = 0;
    return !(waitid(P_ALL, 0, &info, WEXITED | WNOHANG | WNOWAIT) < 0 && errno == ECHILD);
}

int
mt_probe_descendants(const mt_probe *p, pid_t *pids, int max)
{
    int n = 0;
    if (!mt_probe_has_children()) {
        return 0;
    }
    /* The list grows while it is walked: breadth first. */
    collect_children(p, mt_worker_pid(), pids, &n, max);
    for (int i = 0; i < n; i++) {
        collect_children(p, pids[i], pids, &n, max);
    }
    return n;
}

/* Forgets the children table's slots of processes the last walk did not
 * find (their kept descriptors closed). */
static void
forget_left(mt_probe *p)
{
    pid_t found[MT_PROBE_MAX_CHILDREN] = {0};
    for (int i = 0; i < p->walked_count; i++) {
        found[p->walked[i] % MT_PROBE_MAX_CHILDREN] = p->walked[i];
    }
    for (int i = 0; i < MT_PROBE_MAX_CHILDREN; i++) {
        if (p->children_seen[i].pid != 0 && p->children_seen[i].pid != found[i]) {
            forget_child(p, &p->children_seen[i]);
        }
    }
}

/* mt_probe_descendants, walked again only when a pid was handed out since
 * the last walk (probe.h's walked_*); the probe's owner thread only. */
static int
known_descendants(mt_probe *p, pid_t *pids, int max)
{
    char buf[256];
    long last = -1;
    if (!mt_probe_has_children()) {
        if (p->walked_count > 0) {
            p->walked_count = 0;
            forget_left(p);
        }
        return 0;
    }
    if (p->loadavg_fd < 0 || pread_record(p->loadavg_fd, buf, sizeof buf) < 0 ||
        mt_probe_parse_last_pid(buf, &last) < 0) {
        last = -1;
    }
    if (last < 0 || last != p->walked_last_pid) {
        /* Read before the walk: a process born during it is walked next time. */
        p->walked_count = mt_probe_descendants(p, p->walked, MT_PROBE_MAX_CHILDREN);
        p->walked_last_pid = last;
        forget_left(p);
    }
    int n = p->walked_count < max ? p->walked_count : max;
    memcpy(pids, p->walked, (size_t)n * sizeof *pids);
    return n;
}

/* Whether pid runs in our address space (a vforked child before its exec),
 * whose pages smaps_rollup would show as its own.  Only the real /proc has
 * real pids to compare. */
static int
shares_our_memory(const mt_probe *p, pid_t pid)
{
#ifdef SYS_kcmp
    return p->root[0] == '\0' && syscall(SYS_kcmp, mt_worker_pid(), pid, KCMP_VM, 0, 0) == 0;
#else
    (void)p;
    (void)pid;
    return 0;
#endif
}

static int open_child_files(char *stat_path, int *sched_fd);

/* pid's /proc stat into buf; with table (the probe whose children table
 * keeps pid's slot), read through the descriptor kept there, which a new
 * process with pid's number does not answer, and the slot taken for pid
 * (its figures kept when it was pid's already).  -1 when it is gone. */
static ssize_t
read_child_stat(const mt_probe *p, mt_probe *table, pid_t pid, char *buf, size_t size)
{
    char path[MT_PROBE_PATH_MAX + 64];
    mt_probe_child_seen *s = table ? &table->children_seen[pid % MT_PROBE_MAX_CHILDREN] : NULL;
    if (s && s->pid == pid && s->stat_fd >= 0) {
        ssize_t n = pread_record(s->stat_fd, buf, size);
        if (n > 0) {
            return n;
        }
        forget_child(table, s); /* the process it was opened on is gone */
    }
    int keep = s && table->children_fds + 2 <= MT_PROBE_KEPT_CHILD_FDS, sched_fd = -1;
    int fd = proc_path(p, path, sizeof path, "/proc/%d/stat", (int)pid) < 0 ? -1
             : keep ? open_child_files(path, &sched_fd)
                    : open(path, O_RDONLY | O_CLOEXEC);
    ssize_t n = fd >= 0 ? pread_record(fd, buf, size) : -1;
    if (s && n > 0 && s->pid != pid) {
        forget_child(table, s);
        s->pid = pid;
        s->owned = -1;
    }
    if (keep && n > 0) {
        s->stat_fd = fd;
        s->sched_fd = sched_fd;
        table->children_fds += 1 + (sched_fd >= 0);
    }
    else {
        close_fd(&fd);
        close_fd(&sched_fd);
    }
    return n;
}

/* Opens a child's stat (stat_path) and, into *sched_fd (-1 when it cannot),
 * its schedstat: both of one process, through its /proc directory, which
 * a new process with the same pid does not take over. */
static int
open_child_files(char *stat_path, int *sched_fd)
{
    char *name = strrchr(stat_path, '/');
    *name = '\0';
    int dir = open(stat_path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    *name = '/';
    int fd = dir >= 0 ? openat(dir, "stat", O_RDONLY | O_CLOEXEC) : -1;
    *sched_fd = fd >= 0 ? openat(dir, "schedstat", O_RDONLY | O_CLOEXEC) : -1;
    close_fd(&dir);
    return fd;
}

/* A kept schedstat's line into buf (MT_PROBE_SCHEDSTAT_BYTES); its length,
 * -1 when there is none. */
static int
read_child_sched(const mt_probe_child_seen *s, char *buf)
{
    ssize_t n = s->sched_fd >= 0 ? pread_record(s->sched_fd, buf, MT_PROBE_SCHEDSTAT_BYTES) : -1;
    return n > 0 && n < MT_PROBE_SCHEDSTAT_BYTES - 1 ? (int)n : -1;
}

/* What one descendant owns now: its start, RSS, private memory (-1 when
 * unreadable) and, unless NULL, its shared memory.  With seen (the probe's
 * table; NULL: always read), a figure whose RSS and page faults have not
 * moved since it was read is kept.  -1 when it is gone, a zombie, or not
 * yet a process of its own. */
static int
child_memory(const mt_probe *p, mt_probe *table, pid_t pid, unsigned long long *start_ticks,
             long long *rss, long long *owned, long long *shared)
{
    char path[MT_PROBE_PATH_MAX + 64], buf[4096];
    /* stat's fields: 10 minflt, 12 majflt, 20 num_threads, 22 starttime,
     * 24 rss (pages). */
    static const int fields[] = {10, 12, 20, 22, 24};
    unsigned long long values[5], ran_ns, arrivals;
    char state, sched[MT_PROBE_SCHEDSTAT_BYTES];
    mt_probe_child_seen *s = table ? &table->children_seen[pid % MT_PROBE_MAX_CHILDREN] : NULL;
    /* Read before stat: a run after it shows in what stat then says. */
    int sched_len = s && s->pid == pid ? read_child_sched(s, sched) : -1;
    if (sched_len > 0 && s->settled && shared == NULL && sched_len == s->sched_len &&
        memcmp(sched, s->sched, (size_t)sched_len) == 0) {
        *start_ticks = s->start_ticks;
        *rss = s->rss;
        *owned = s->owned;
        return 0;
    }
    if (read_child_stat(p, table, pid, buf, sizeof buf) < 0 ||
        stat_fields(buf, fields, 5, values) < 0 || mt_probe_parse_state(buf, &state) < 0) {
        return -1;
    }
    unsigned long long minor = values[0], major = values[1], threads = values[2], pages = values[4];
    *start_ticks = values[3];
    *rss = (long long)pages * p->page_size;
    if (*rss <= 0) {
        return -1;
    }
    /* A kernel that keeps no schedule statistics says 0 0 0. */
    int sched_known =
        sched_len > 0 && mt_probe_parse_schedstat(sched, &ran_ns, &arrivals) == 0 && arrivals > 0;
    if (s) {
        s->settled = 0;
        s->sched_len = sched_known ? sched_len : 0;
        memcpy(s->sched, sched, (size_t)s->sched_len);
    }
    if (s && s->start_ticks != *start_ticks) {
        /* Another process than the one its figures are of (a pid used
         * again, read without a kept descriptor), or the first look. */
        s->start_ticks = *start_ticks;
        s->separate = 0;
        s->owned = -1;
    }
    /* After its exec a vforked child never shares our memory again. */
    if (!(s && s->separate)) {
        if (shares_our_memory(p, pid)) {
            return -1;
        }
        if (s) {
            s->separate = 1;
        }
    }
    *owned = -1;
    if (shared) {
        *shared = -1;
    }
    if (s && s->owned >= 0 && s->faults == minor + major && s->rss == *rss) {
        *owned = s->owned;
        s->settled = sched_known && threads == 1 && state != 'R';
        return 0;
    }
    if (proc_path(p, path, sizeof path, "/proc/%d/smaps_rollup", (int)pid) == 0 &&
        read_text(path, buf, sizeof buf) >= 0 && mt_probe_parse_private(buf, owned) == 0 &&
        shared) {
        mt_probe_parse_shared_memory(buf, shared);
    }
    if (s && *owned >= 0) {
        s->faults = minor + major;
        s->rss = *rss;
        s->owned = *owned;
    }
    return 0;
}

void
mt_probe_children_begin(mt_probe *p, mt_probe_children_mark *mark)
{
    pid_t pids[MT_PROBE_MAX_CHILDREN];
    mark->start_ticks = mt_probe_boot_ticks(p);
    mark->count = 0;
    int n = known_descendants(p, pids, MT_PROBE_MAX_CHILDREN);
    for (int i = 0; i < n; i++) {
        mt_probe_child_base *b = &mark->base[mark->count];
        if (child_memory(p, p, pids[i], &b->start_ticks, &b->rss, &b->owned, NULL) < 0) {
            continue;
        }
        if (b->owned < 0) {
            b->owned = b->rss;
        }
        b->pid = pids[i];
        mark->count++;
    }
}

void
mt_probe_children_mark_copy(mt_probe_children_mark *dst, const mt_probe_children_mark *src)
{
    dst->start_ticks = src->start_ticks;
    dst->count = src->count;
    memcpy(dst->base, src->base, (size_t)src->count * sizeof *src->base);
}

static const mt_probe_child_base *
find_base(const mt_probe_children_mark *mark, pid_t pid, unsigned long long start_ticks)
{
    for (int i = 0; i < mark->count; i++) {
        if (mark->base[i].pid == pid && mark->base[i].start_ticks == start_ticks) {
            return &mark->base[i];
        }
    }
    return NULL;
}

void
mt_probe_children_now(mt_probe *p, const mt_probe_children_mark *mark, mt_probe_children_use *out)
{
    pid_t pids[MT_PROBE_MAX_CHILDREN];
    memset(out, 0, sizeof *out);
    int n = known_descendants(p, pids, MT_PROBE_MAX_CHILDREN);
    for (int i = 0; i < n; i++) {
        unsigned long long started;
        long long rss, owned;
        if (child_memory(p, p, pids[i], &started, &rss, &owned, NULL) < 0) {
            continue;
        }
        if (owned < 0) {
            owned = rss;
            out->unreadable++;
        }
        /* One started before the mark but missing from it (more descendants
         * than the mark holds) is not the cell's: it adds nothing. */
        const mt_probe_child_base *base = find_base(mark, pids[i], started);
        int born_in_window = started >= mark->start_ticks;
        if (base == NULL && !born_in_window) {
            continue;
        }
        long long grown = base ? owned - base->owned : owned;
        out->count++;
        out->owned += grown;
        out->rss_total += base ? rss - base->rss : rss;
        if (grown > out->biggest_owned || out->biggest_pid == 0) {
            out->biggest_owned = grown;
            out->biggest_pid = pids[i];
            out->biggest_is_own = base == NULL;
        }
    }
}

/* The inodes of pid's socket descriptors (at most max); 0 when unreadable. */
static int
socket_inodes(const mt_probe *p, pid_t pid, unsigned long *inodes, int max)
{
    char path[MT_PROBE_PATH_MAX + 64];
    int count = 0;
    if (proc_path(p, path, sizeof path, "/proc/%d/fd", (int)pid) < 0) {
        return 0;
    }
    DIR *dir = opendir(path);
    if (dir == NULL) {
        return 0;
    }
    struct dirent *entry;
    while ((entry = readdir(dir)) != NULL && count < max) {
        char link[64], fd_path[MT_PROBE_PATH_MAX + 128];
        if (!isdigit((unsigned char)entry->d_name[0]) ||
            snprintf(fd_path, sizeof fd_path, "%s/%s", path, entry->d_name) >=
                (int)sizeof fd_path) {
            continue;
        }
        ssize_t n = readlink(fd_path, link, sizeof link - 1);
        if (n <= 0) {
            continue;
        }
        link[n] = '\0';
        if (mt_probe_parse_socket_inode(link, &inodes[count]) == 0) {
            count++;
        }
    }
    closedir(dir);
    return count;
}

int
mt_probe_child_describe(const mt_probe *p, pid_t pid, mt_probe_child_info *out)
{
    char path[MT_PROBE_PATH_MAX + 64], buf[4096];
    memset(out, 0, sizeof *out);
    out->pid = pid;
    if (child_memory(p, NULL, pid, &out->start_ticks, &out->rss, &out->owned, &out->shared) < 0 ||
        proc_path(p, path, sizeof path, "/proc/%d/stat", (int)pid) < 0 ||
        read_text(path, buf, sizeof buf) < 0 || mt_probe_parse_ppid(buf, &out->ppid) < 0) {
        return -1;
    }
    ssize_t len;
    if (proc_path(p, path, sizeof path, "/proc/%d/cmdline", (int)pid) == 0 &&
        (len = read_text(path, buf, sizeof buf)) > 0) {
        mt_probe_parse_cmdline(buf, (size_t)len, out->command, sizeof out->command);
    }
    /* Its listening sockets: the inodes of its socket descriptors, found in
     * its network namespace's TCP tables.  A socket its parent holds too
     * was inherited (a forked worker keeps the kernel's own): not its. */
    unsigned long inodes[MAX_SOCKETS], parents[MAX_SOCKETS];
    int inode_count = socket_inodes(p, pid, inodes, MAX_SOCKETS);
    int parent_count = inode_count > 0 ? socket_inodes(p, out->ppid, parents, MAX_SOCKETS) : 0;
    int kept = 0;
    for (int i = 0; i < inode_count; i++) {
        int inherited = 0;
        for (int j = 0; j < parent_count && !inherited; j++) {
            inherited = parents[j] == inodes[i];
        }
        if (!inherited) {
            inodes[kept++] = inodes[i];
        }
    }
    inode_count = kept;
    if (inode_count == 0) {
        return 0;
    }
    static const char *const tables[] = {"tcp", "tcp6"};
    enum { TABLE_BYTES = 256 * 1024 };
    char *text = malloc(TABLE_BYTES);
    for (size_t t = 0; text != NULL && t < sizeof tables / sizeof *tables; t++) {
        if (proc_path(p, path, sizeof path, "/proc/%d/net/%s", (int)pid, tables[t]) == 0 &&
            read_text(path, text, TABLE_BYTES) >= 0) {
            mt_probe_parse_listening(text, inodes, inode_count, out->ports, &out->port_count,
                                     MT_PROBE_MAX_PORTS);
        }
    }
    free(text);
    return 0;
}

/* ---- limit ---- */

/* dir = mount + (cgroup path relative to the mount's root); falls back to
 * the mount itself when that directory is not visible (cgroup namespaces). */
static int
cgroup_dir(const mt_probe *p, const char *mount, const char *mount_root, const char *cgpath,
           char *dir, size_t size)
{
    size_t rlen = strlen(mount_root);
    const char *rel = cgpath;
    if (rlen > 1 && strncmp(cgpath, mount_root, rlen) == 0) {
        rel = cgpath + rlen;
    }
    if (snprintf(dir, size, "%s%s%s", p->root, mount, rel) >= (int)size) {
        return -1;
    }
    if (access(dir, F_OK) != 0 && snprintf(dir, size, "%s%s", p->root, mount) >= (int)size) {
        return -1;
    }
    size_t n = strlen(dir);
    while (n > 1 && dir[n - 1] == '/') {
        dir[--n] = '\0';
    }
    return 0;
}

/* cgroup_dir's dir, and in top the hierarchy's mount under root, where
 * walks up from dir stop; -1 when either does not fit MT_PROBE_PATH_MAX. */
static int
cgroup_place(const mt_probe *p, const char *mount, const char *mount_root, const char *cgpath,
             char *dir, char *top)
{
    return cgroup_dir(p, mount, mount_root, cgpath, dir, MT_PROBE_PATH_MAX) == 0 &&
                   snprintf(top, MT_PROBE_PATH_MAX, "%s%s", p->root, mount) < MT_PROBE_PATH_MAX
               ? 0
               : -1;
}

/* dir becomes its parent; 0 (dir unchanged) when dir is the top of its
 * hierarchy, top_len bytes long. */
static int
climb(char *dir, size_t top_len)
{
    char *slash = strrchr(dir, '/');
    if (slash == NULL || (size_t)(slash - dir) < top_len) {
        return 0;
    }
    *slash = '\0';
    return 1;
}

static int
read_value(const char *dir, const char *name, char *file, size_t fsize, long long *value,
           int as_limit)
{
    char buf[128];
    if (snprintf(file, fsize, "%s/%s", dir, name) >= (int)fsize ||
        read_text(file, buf, sizeof buf) < 0) {
        return -1;
    }
    return as_limit ? mt_probe_parse_limit(buf, value) : parse_ll(buf, value);
}

/* v2: the smallest memory.max from the leaf up to the mount. */
static void
limit_v2(char *dir, const char *top, mt_probe_limit *out)
{
    char file[MT_PROBE_PATH_MAX + 32];
    long long v;
    if (read_value(dir, "memory.current", file, sizeof file, &v, 0) == 0) {
        out->usage = v;
    }
    do {
        if (read_value(dir, "memory.max", file, sizeof file, &v, 1) == 0 &&
            v != MT_PROBE_UNLIMITED && (out->limit < 0 || v < out->limit)) {
            out->limit = v;
            out->source = "cgroup2 memory.max";
            snprintf(out->path, sizeof out->path, "%s", file);
        }
    } while (climb(dir, strlen(top)));
}

static void
limit_v1(const char *dir, mt_probe_limit *out)
{
    char file[MT_PROBE_PATH_MAX + 32], stat[8192];
    long long v;
    if (read_value(dir, "memory.usage_in_bytes", file, sizeof file, &v, 0) == 0) {
        out->usage = v;
    }
    if (read_value(dir, "memory.limit_in_bytes", file, sizeof file, &v, 1) == 0 &&
        v != MT_PROBE_UNLIMITED) {
        out->limit = v;
        out->source = "cgroup1 memory.limit_in_bytes";
        snprintf(out->path, sizeof out->path, "%s", file);
    }
    /* Ancestors' limits apply too; memory.stat sums them up for us. */
    if (snprintf(file, sizeof file, "%s/memory.stat", dir) < (int)sizeof file &&
        read_text(file, stat, sizeof stat) >= 0 &&
        mt_probe_parse_keyed(stat, "hierarchical_memory_limit", &v) == 0 && v < UNLIMITED_ABOVE &&
        (out->limit < 0 || v < out->limit)) {
        out->limit = v;
        out->source = "cgroup1 memory.limit_in_bytes";
        snprintf(out->path, sizeof out->path, "%s", file);
    }
}

/* ---- the memory shared with other processes ---- */

static const char *
usage_file(int version)
{
    return version == 2 ? "memory.current" : "memory.usage_in_bytes";
}

static const char *
limit_file(int version)
{
    return version == 2 ? "memory.max" : "memory.limit_in_bytes";
}

int
mt_probe_parse_cgroup_usage(const char *usage_text, const char *stat_text, int version,
                            mt_probe_shared *out)
{
    long long usage, inactive = 0;
    if (parse_ll(usage_text, &usage) < 0 || usage < 0) {
        return -1;
    }
    /* v1's memory.stat counts the cgroup and its children as total_*. */
    const char *key = version == 2 ? "inactive_file" : "total_inactive_file";
    if (stat_text == NULL || mt_probe_parse_keyed(stat_text, key, &inactive) < 0 || inactive < 0) {
        inactive = 0;
    }
    out->usage = usage;
    out->inactive_file = inactive < usage ? inactive : usage;
    out->working_set = usage - out->inactive_file;
    return 0;
}

int
mt_probe_parse_meminfo_usage(const char *text, mt_probe_shared *out)
{
    long long total, available, free_ = -1;
    if (mt_probe_parse_kb_field(text, "MemTotal", &total) < 0 ||
        mt_probe_parse_kb_field(text, "MemAvailable", &available) < 0) {
        return -1;
    }
    mt_probe_parse_kb_field(text, "MemFree", &free_);
    out->limit = total;
    out->usage = free_ >= 0 ? total - free_ : total - available;
    out->inactive_file = 0;
    out->working_set = available < total ? total - available : 0;
    return 0;
}

/* Reads usage and memory.stat of the cgroup at dir; -1 when unreadable. */
static int
read_cgroup_usage(const char *dir, int version, mt_probe_shared *out)
{
    char file[MT_PROBE_PATH_MAX + 32], usage[64], stat[8192];
    if (snprintf(file, sizeof file, "%s/%s", dir, usage_file(version)) >= (int)sizeof file ||
        read_text(file, usage, sizeof usage) < 0) {
        return -1;
    }
    int have_stat = snprintf(file, sizeof file, "%s/memory.stat", dir) < (int)sizeof file &&
                    read_text(file, stat, sizeof stat) >= 0;
    return mt_probe_parse_cgroup_usage(usage, have_stat ? stat : NULL, version, out);
}

/* Each limited cgroup from dir up to the mount: keeps in *best the one
 * with least room. */
static void
tightest_cgroup(const char *top, char *dir, int version, mt_probe_shared *best)
{
    do {
        char file[MT_PROBE_PATH_MAX + 32];
        long long limit;
        mt_probe_shared here;
        memset(&here, 0, sizeof here);
        if (read_value(dir, limit_file(version), file, sizeof file, &limit, 1) == 0 &&
            limit != MT_PROBE_UNLIMITED && read_cgroup_usage(dir, version, &here) == 0) {
            here.limit = limit;
            here.version = version;
            snprintf(here.dir, sizeof here.dir, "%s", dir);
            if (best->limit < 0 ||
                here.limit - here.working_set < best->limit - best->working_set) {
                *best = here;
            }
        }
    } while (climb(dir, strlen(top)));
}

/* The scratch the readers of this process's cgroups read /proc/self/cgroup
 * and mountinfo into (mountinfo can be long). */
enum { TEXT_SIZE = 65536 };

/* Where this process's cgroup of one hierarchy is: its directory ("" when
 * it has none there) and the top of the hierarchy. */
typedef struct {
    char dir[MT_PROBE_PATH_MAX], top[MT_PROBE_PATH_MAX];
} own_cgroup;

/* This process's cgroups (v2 and v1), read with text (size bytes) as
 * scratch.  -1/0. */
static int
read_own_cgroups(const mt_probe *p, char *text, size_t size, own_cgroup *v2, own_cgroup *v1)
{
    char path[MT_PROBE_PATH_MAX + 64], v2_path[MT_PROBE_PATH_MAX], v1_path[MT_PROBE_PATH_MAX];
    mt_probe_mounts m;
    if (proc_path(p, path, sizeof path, "/proc/self/cgroup") < 0 ||
        read_text(path, text, size) < 0 ||
        mt_probe_parse_cgroup(text, v2_path, sizeof v2_path, v1_path, sizeof v1_path) < 0 ||
        proc_path(p, path, sizeof path, "/proc/self/mountinfo") < 0 ||
        read_text(path, text, size) < 0 || mt_probe_parse_mountinfo(text, &m) < 0) {
        return -1;
    }
    if (!v2_path[0] || !m.v2_mount[0] ||
        cgroup_place(p, m.v2_mount, m.v2_root, v2_path, v2->dir, v2->top) < 0) {
        v2->dir[0] = '\0';
    }
    if (!v1_path[0] || !m.v1_mount[0] ||
        cgroup_place(p, m.v1_mount, m.v1_root, v1_path, v1->dir, v1->top) < 0) {
        v1->dir[0] = '\0';
    }
    return 0;
}

int
mt_probe_read_shared(mt_probe *p, mt_probe_shared *out)
{
    char *text = malloc(TEXT_SIZE);
    char path[MT_PROBE_PATH_MAX + 64];
    own_cgroup v2, v1;
    int rc = -1;
    memset(out, 0, sizeof *out);
    out->limit = -1;
    if (text == NULL) {
        return -1;
    }
    if (read_own_cgroups(p, text, TEXT_SIZE, &v2, &v1) == 0) {
        if (v2.dir[0]) {
            tightest_cgroup(v2.top, v2.dir, 2, out);
        }
        if (v1.dir[0]) {
            tightest_cgroup(v1.top, v1.dir, 1, out);
        }
    }
    mt_probe_shared machine;
    memset(&machine, 0, sizeof machine);
    if (proc_path(p, path, sizeof path, "/proc/meminfo") == 0 &&
        read_text(path, text, TEXT_SIZE) >= 0 &&
        mt_probe_parse_meminfo_usage(text, &machine) == 0) {
        if (out->limit < 0 || machine.limit - machine.working_set < out->limit - out->working_set) {
            *out = machine;
        }
        rc = 0;
    }
    else if (out->limit >= 0) {
        rc = 0;
    }
    free(text);
    return rc;
}

static int
reopen(int *fd, const char *path)
{
    int fresh = open(path, O_RDONLY | O_CLOEXEC);
    if (fresh < 0) {
        return -1;
    }
    if (*fd < 0) {
        *fd = fresh;
        return 0;
    }
    int rc = dup3(fresh, *fd, O_CLOEXEC) < 0 ? -1 : 0;
    close(fresh);
    return rc;
}

int
mt_probe_shared_open(const mt_probe *p, const mt_probe_shared *where, mt_probe_shared_files *files)
{
    char path[MT_PROBE_PATH_MAX + 64];
    int ok;
    files->version = where->version;
    if (where->version == 0) {
        ok = proc_path(p, path, sizeof path, "/proc/meminfo") == 0 &&
             reopen(&files->usage_fd, path) == 0;
        close_fd(&files->stat_fd);
        return ok ? 0 : -1;
    }
    ok = snprintf(path, sizeof path, "%s/%s", where->dir, usage_file(where->version)) <
             (int)sizeof path &&
         reopen(&files->usage_fd, path) == 0 &&
         snprintf(path, sizeof path, "%s/memory.stat", where->dir) < (int)sizeof path &&
         reopen(&files->stat_fd, path) == 0;
    return ok ? 0 : -1;
}

void
mt_probe_shared_close(mt_probe_shared_files *files)
{
    close_fd(&files->usage_fd);
    close_fd(&files->stat_fd);
}

long long
mt_probe_shared_working_set(const mt_probe_shared_files *files)
{
    char usage[4096], stat[8192];
    mt_probe_shared now;
    if (files->usage_fd < 0 || pread_record(files->usage_fd, usage, sizeof usage) < 0) {
        return -1;
    }
    if (files->version == 0) {
        return mt_probe_parse_meminfo_usage(usage, &now) == 0 ? now.working_set : -1;
    }
    int have_stat = files->stat_fd >= 0 && pread_record(files->stat_fd, stat, sizeof stat) >= 0;
    if (mt_probe_parse_cgroup_usage(usage, have_stat ? stat : NULL, files->version, &now) < 0) {
        return -1;
    }
    return now.working_set;
}

enum { PROCS_TEXT = 65536 };

/* Appends the pids of dir's cgroup.procs and of its descendants' to
 * pids[*n..max); depth bounds the recursion; text is PROCS_TEXT bytes of
 * scratch. */
static void
cgroup_tree_pids(const char *dir, int depth, char *text, pid_t *pids, int *n, int max)
{
    char path[MT_PROBE_PATH_MAX + 64];
    if (snprintf(path, sizeof path, "%s/cgroup.procs", dir) < (int)sizeof path &&
        read_text(path, text, PROCS_TEXT) >= 0) {
        *n += mt_probe_parse_pids(text, pids + *n, max - *n);
    }
    DIR *d = depth > 0 ? opendir(dir) : NULL;
    if (d == NULL) {
        return;
    }
    struct dirent *entry;
    while ((entry = readdir(d)) != NULL && *n < max) {
        if ((entry->d_type == DT_DIR || entry->d_type == DT_UNKNOWN) && entry->d_name[0] != '.' &&
            snprintf(path, sizeof path, "%s/%s", dir, entry->d_name) < (int)sizeof path) {
            cgroup_tree_pids(path, depth - 1, text, pids, n, max);
        }
    }
    closedir(d);
}

int
mt_probe_sharing_pids(const mt_probe *p, const char *dir, pid_t *pids, int max)
{
    int n = 0;
    if (dir && dir[0]) {
        char *text = malloc(PROCS_TEXT);
        if (text != NULL) {
            cgroup_tree_pids(dir, 16, text, pids, &n, max);
            free(text);
        }
        return n;
    }
    char path[MT_PROBE_PATH_MAX + 64];
    DIR *d = proc_path(p, path, sizeof path, "/proc") == 0 ? opendir(path) : NULL;
    if (d == NULL) {
        return 0;
    }
    struct dirent *entry;
    while ((entry = readdir(d)) != NULL && n < max) {
        if (isdigit((unsigned char)entry->d_name[0])) {
            pids[n++] = (pid_t)atoi(entry->d_name);
        }
    }
    closedir(d);
    return n;
}

int
mt_probe_pid_start_ticks(const mt_probe *p, pid_t pid, unsigned long long *ticks)
{
    char path[MT_PROBE_PATH_MAX + 64], buf[1024];
    if (proc_path(p, path, sizeof path, "/proc/%d/stat", (int)pid) < 0 ||
        read_text(path, buf, sizeof buf) < 0) {
        return -1;
    }
    return mt_probe_parse_starttime(buf, ticks);
}

int
mt_probe_pid_running(const mt_probe *p, pid_t pid, unsigned long long start_ticks)
{
    char path[MT_PROBE_PATH_MAX + 64], buf[1024], state;
    unsigned long long ticks;
    if (proc_path(p, path, sizeof path, "/proc/%d/stat", (int)pid) < 0 ||
        read_text(path, buf, sizeof buf) < 0 || mt_probe_parse_starttime(buf, &ticks) < 0 ||
        mt_probe_parse_state(buf, &state) < 0) {
        return 0;
    }
    return ticks == start_ticks && state != 'Z' && state != 'X' && state != 'x';
}

int
mt_probe_pid_rss(const mt_probe *p, pid_t pid, long long *rss, char *comm, size_t comm_size)
{
    char path[MT_PROBE_PATH_MAX + 64], buf[256];
    if (proc_path(p, path, sizeof path, "/proc/%d/statm", (int)pid) < 0 ||
        read_text(path, buf, sizeof buf) < 0 || mt_probe_parse_statm(buf, p->page_size, rss) < 0) {
        return -1;
    }
    if (comm == NULL) {
        return 0;
    }
    comm[0] = '\0';
    if (proc_path(p, path, sizeof path, "/proc/%d/comm", (int)pid) == 0 &&
        read_text(path, buf, sizeof buf) >= 0) {
        buf[strcspn(buf, "\n")] = '\0';
        snprintf(comm, comm_size, "%s", buf);
    }
    return 0;
}

/* The "oom_kill N" line of the cgroup's memory.events (v2) or
 * memory.oom_control (v1), else of /proc/vmstat (the whole machine). */
int
mt_probe_oom_kills(mt_probe *p, char *path, size_t path_size, long long *count)
{
    char *text = malloc(TEXT_SIZE);
    own_cgroup v2, v1;
    int rc = -1;
    if (text == NULL) {
        return -1;
    }
    path[0] = '\0';
    if (read_own_cgroups(p, text, TEXT_SIZE, &v2, &v1) == 0) {
        if (v2.dir[0]) {
            snprintf(path, path_size, "%s/memory.events", v2.dir);
        }
        else if (v1.dir[0]) {
            snprintf(path, path_size, "%s/memory.oom_control", v1.dir);
        }
    }
    if (path[0] && mt_probe_read_oom_kills(path, count) == 0) {
        rc = 0;
    }
    else if (proc_path(p, path, path_size, "/proc/vmstat") == 0 &&
             mt_probe_read_oom_kills(path, count) == 0) {
        rc = 0;
    }
    free(text);
    return rc;
}

int
mt_probe_read_oom_kills(const char *path, long long *count)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return -1;
    }
    int rc = mt_probe_read_oom_kills_fd(fd, count);
    close(fd);
    return rc;
}

int
mt_probe_read_oom_kills_fd(int fd, long long *count)
{
    char text[8192];
    if (pread_text(fd, text, sizeof text) < 0) {
        return -1;
    }
    return mt_probe_parse_keyed(text, "oom_kill", count);
}

/* ---- swap ---- */

/* A cgroup of version at dir whose swap leaves less room than *best
 * replaces it. */
static void
tighter_swap(const char *dir, int version, mt_probe_swap *best)
{
    char file[MT_PROBE_PATH_MAX + 48], limit[64], usage[64];
    long long memory_limit = MT_PROBE_UNLIMITED, memory_usage = -1;
    mt_probe_swap here;
    const char *limit_name = version == 2 ? "memory.swap.max" : "memory.memsw.limit_in_bytes";
    const char *usage_name = version == 2 ? "memory.swap.current" : "memory.memsw.usage_in_bytes";
    if (snprintf(file, sizeof file, "%s/%s", dir, limit_name) >= (int)sizeof file ||
        read_text(file, limit, sizeof limit) < 0 ||
        snprintf(file, sizeof file, "%s/%s", dir, usage_name) >= (int)sizeof file ||
        read_text(file, usage, sizeof usage) < 0) {
        return;
    }
    if (version == 1 && (read_value(dir, limit_file(1), file, sizeof file, &memory_limit, 1) < 0 ||
                         read_value(dir, usage_file(1), file, sizeof file, &memory_usage, 0) < 0)) {
        return;
    }
    if (mt_probe_parse_cgroup_swap(version, limit, usage, memory_limit, memory_usage, &here) < 0 ||
        here.room == MT_PROBE_UNLIMITED || here.room >= best->room) {
        return;
    }
    snprintf(here.dir, sizeof here.dir, "%s", dir);
    *best = here;
}

int
mt_probe_read_swap(mt_probe *p, mt_probe_swap *out)
{
    char *text = malloc(TEXT_SIZE);
    char path[MT_PROBE_PATH_MAX + 64];
    own_cgroup v2, v1;
    mt_probe_swap machine;
    int rc = -1;
    if (text == NULL || proc_path(p, path, sizeof path, "/proc/meminfo") < 0 ||
        read_text(path, text, TEXT_SIZE) < 0 || mt_probe_parse_meminfo_swap(text, &machine) < 0) {
        goto done;
    }
    /* The machine's free swap is where the search starts: a cgroup's
     * allowance is no swap device and binds only when it leaves less. */
    *out = machine;
    rc = 0;
    if (machine.limit == 0 || read_own_cgroups(p, text, TEXT_SIZE, &v2, &v1) < 0) {
        goto done;
    }
    /* v2: each ancestor's swap.max applies; v1: the leaf's memsw (its
     * memsw limit is no higher than its parents'). */
    if (v2.dir[0]) {
        do {
            tighter_swap(v2.dir, 2, out);
        } while (climb(v2.dir, strlen(v2.top)));
    }
    if (v1.dir[0]) {
        tighter_swap(v1.dir, 1, out);
    }
done:
    free(text);
    return rc;
}

long long
mt_probe_vm_swap(mt_probe *p)
{
    char buf[4096];
    long long bytes;
    follow_fork(p);
    if (p->status_fd < 0 || pread_record(p->status_fd, buf, sizeof buf) < 0 ||
        mt_probe_parse_kb_field(buf, "VmSwap", &bytes) < 0) {
        return -1;
    }
    return bytes;
}

int
mt_probe_read_pressure(mt_probe *p, double *some_avg10, double *full_avg10)
{
    char *text = malloc(TEXT_SIZE);
    char path[MT_PROBE_PATH_MAX + 64];
    own_cgroup v2, v1;
    int rc = -1;
    if (text == NULL) {
        return -1;
    }
    /* The cgroup's own pressure where it has one, else the machine's. */
    int in_cgroup = read_own_cgroups(p, text, TEXT_SIZE, &v2, &v1) == 0 && v2.dir[0] &&
                    snprintf(path, sizeof path, "%s/memory.pressure", v2.dir) < (int)sizeof path &&
                    read_text(path, text, TEXT_SIZE) >= 0;
    if ((in_cgroup || (proc_path(p, path, sizeof path, "/proc/pressure/memory") == 0 &&
                       read_text(path, text, TEXT_SIZE) >= 0)) &&
        mt_probe_parse_psi(text, "some", some_avg10) == 0 &&
        mt_probe_parse_psi(text, "full", full_avg10) == 0) {
        rc = 0;
    }
    free(text);
    return rc;
}

int
mt_probe_read_limit(mt_probe *p, mt_probe_limit *out)
{
    char *text = malloc(TEXT_SIZE);
    char path[MT_PROBE_PATH_MAX + 64];
    own_cgroup v2, v1;
    long long total = -1, available = -1;

    memset(out, 0, sizeof *out);
    out->limit = out->usage = out->available = -1;
    if (text == NULL) {
        return -1;
    }

    if (read_own_cgroups(p, text, TEXT_SIZE, &v2, &v1) == 0) {
        if (v2.dir[0]) {
            limit_v2(v2.dir, v2.top, out);
        }
        if (out->limit < 0 && v1.dir[0]) {
            out->usage = -1;
            limit_v1(v1.dir, out);
        }
    }
    if (proc_path(p, path, sizeof path, "/proc/meminfo") == 0 &&
        read_text(path, text, TEXT_SIZE) >= 0) {
        mt_probe_parse_kb_field(text, "MemTotal", &total);
        mt_probe_parse_kb_field(text, "MemAvailable", &available);
    }
    if (out->limit < 0 || (total > 0 && total < out->limit)) {
        if (total < 0) {
            free(text);
            return -1;
        }
        out->limit = total;
        out->usage = total >= 0 && available >= 0 ? total - available : -1;
        out->source = "MemTotal";
        snprintf(out->path, sizeof out->path, "%s/proc/meminfo", p->root);
    }
    out->available = out->usage >= 0 ? out->limit - out->usage : -1;
    if (available >= 0 && (out->available < 0 || available < out->available)) {
        out->available = available;
    }
    free(text);
    return 0;
}
