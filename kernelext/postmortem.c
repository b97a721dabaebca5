/* postmortem: the record a kernel leaves for the next kernel of its
 * notebook (postmortem.h). */
#define _GNU_SOURCE
#include "memtamer/memtamer.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "memtamer/postmortem.h"

/* How old a reading of the OOM count a cell's start may take. */
#define OOM_LOOK_SECONDS 1.0

#define PAGE_MAGIC "MTGUARD2"
#define PAGE_TEXT 1024

/* One page, memory-mapped shared. */
struct mt_postmortem_page {
    char magic[8];
    int32_t version, pid;
    uint64_t start_ticks; /* tells a reused pid from ours */
    int64_t started_at;   /* unix seconds */
    _Atomic int64_t cell; /* running cell, -1 between cells */
    _Atomic int64_t rss, peak_rss, updated_ms;
    _Atomic int64_t limit, budget;
    _Atomic int64_t oom_kills_seen; /* at the last cell's start, -1 when unknown */
    char oom_path[MT_PROBE_PATH_MAX + 64];
    char cwd[PAGE_TEXT];
    char first_line[MT_FIRST_LINE_BYTES];
    char notebook[256]; /* JPY_SESSION_NAME, "" when unset */
};

_Static_assert(sizeof(mt_postmortem_page) <= 4096, "the record fits one page");

static long long
now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void
mt_postmortem_sample(mt_postmortem *pm, long long rss)
{
    mt_postmortem_page *r = pm->page;
    if (r == NULL || rss < 0) {
        return;
    }
    atomic_store(&r->rss, rss);
    if (rss > atomic_load(&r->peak_rss)) {
        atomic_store(&r->peak_rss, rss);
    }
    atomic_store(&r->updated_ms, now_ms());
}

void
mt_postmortem_cell_begin(mt_postmortem *pm, long long cell, const char *first_line, long long rss)
{
    MT_ASSERT_GIL();
    mt_postmortem_page *r = pm->page;
    long long kills;
    if (r == NULL) {
        return;
    }
    /* An OOM kill before this cell (of another process) is no sign that
     * this cell's death was one.  The machine's count is all of
     * /proc/vmstat (9 us to read): cells run back to back (Run All,
     * papermill) take the reading of the last second. */
    double now = mt_monotonic_seconds();
    if (pm->oom_fd >= 0 && now - pm->oom_read_at >= OOM_LOOK_SECONDS &&
        mt_probe_read_oom_kills_fd(pm->oom_fd, &kills) == 0) {
        atomic_store(&r->oom_kills_seen, kills);
        pm->oom_read_at = now;
    }
    atomic_store(&r->cell, cell);
    mt_cell_copy_line(r->first_line, sizeof r->first_line, first_line);
    mt_postmortem_sample(pm, rss);
}

void
mt_postmortem_cell_end(mt_postmortem *pm, long long rss)
{
    MT_ASSERT_GIL();
    if (pm->page == NULL) {
        return;
    }
    atomic_store(&pm->page->cell, -1);
    mt_postmortem_sample(pm, rss);
    atomic_store(&pm->page->updated_ms, now_ms());
}

void
mt_postmortem_set_limits(mt_postmortem *pm, long long limit, long long budget)
{
    MT_ASSERT_GIL();
    pm->limit = limit;
    pm->budget = budget;
    if (pm->page) {
        atomic_store(&pm->page->limit, limit);
        atomic_store(&pm->page->budget, budget);
    }
}

void
mt_postmortem_close(mt_postmortem *pm, int remove)
{
    if (pm->page == NULL) {
        return;
    }
    munmap(pm->page, sizeof *pm->page);
    pm->page = NULL;
    if (pm->oom_fd >= 0) {
        close(pm->oom_fd);
        pm->oom_fd = -1;
    }
    if (remove && pm->pid == mt_worker_pid()) {
        unlink(pm->path);
    }
}

PyDoc_STRVAR(mt_postmortem_py_open__doc__,
             "postmortem_open(path): keep this kernel's post-mortem record in path.");
static PyObject *
mt_postmortem_py_open(PyObject *module, PyObject *path)
{
    mt_state *st = mt_get_state(module);
    mt_postmortem *pm = &st->postmortem;
    const char *p = PyUnicode_AsUTF8(path);
    unsigned long long ticks = 0;
    long long kills = -1;
    MT_ASSERT_GIL();
    if (p == NULL) {
        return NULL;
    }
    if (strlen(p) >= sizeof pm->path) {
        PyErr_Format(PyExc_ValueError,
                     "the post-mortem record's path is longer than %zu bytes: "
                     "set MEMTAMER_RUNTIME_DIR to a shorter directory",
                     sizeof pm->path - 1);
        return NULL;
    }
    mt_postmortem_close(pm, 1);
    /* Non-blocking: a FIFO put where the record goes must not stop the load. */
    int fd = open(p, O_RDWR | O_CREAT | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
        return PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, path);
    }
    struct stat st_file;
    if (fstat(fd, &st_file) != 0 || !S_ISREG(st_file.st_mode)) {
        close(fd);
        PyErr_Format(PyExc_OSError, "%s is not a regular file; remove it", p);
        return NULL;
    }
    void *map = MAP_FAILED;
    if (ftruncate(fd, 0) == 0 && ftruncate(fd, sizeof(mt_postmortem_page)) == 0) {
        map = mmap(NULL, sizeof(mt_postmortem_page), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    }
    int saved_errno = errno;
    close(fd);
    if (map == MAP_FAILED) {
        unlink(p);
        errno = saved_errno;
        return PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, path);
    }
    mt_postmortem_page *r = map;
    memset(r, 0, sizeof *r);
    r->version = 2;
    r->pid = (int32_t)mt_worker_pid();
    r->start_ticks = mt_probe_pid_start_ticks(st->probe, mt_worker_pid(), &ticks) == 0 ? ticks : 0;
    r->started_at = (int64_t)time(NULL);
    r->cell = -1;
    r->rss = r->peak_rss = mt_probe_rss(st->probe);
    r->updated_ms = now_ms();
    r->limit = pm->limit;
    r->budget = pm->budget;
    if (mt_probe_oom_kills(st->probe, r->oom_path, sizeof r->oom_path, &kills) < 0) {
        kills = -1;
        r->oom_path[0] = '\0';
    }
    r->oom_kills_seen = kills;
    if (getcwd(r->cwd, sizeof r->cwd) == NULL) {
        r->cwd[0] = '\0';
    }
    const char *notebook = getenv("JPY_SESSION_NAME");
    snprintf(r->notebook, sizeof r->notebook, "%s", notebook ? notebook : "");
    memcpy(r->magic, PAGE_MAGIC, sizeof r->magic); /* last: the record is whole */
    snprintf(pm->path, sizeof pm->path, "%s", p);
    pm->pid = mt_worker_pid();
    pm->oom_fd = r->oom_path[0] ? open(r->oom_path, O_RDONLY | O_CLOEXEC) : -1;
    pm->oom_read_at = mt_monotonic_seconds();
    pm->page = r;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(mt_postmortem_py_close__doc__,
             "postmortem_close(): remove this kernel's post-mortem record (a clean exit).");
static PyObject *
mt_postmortem_py_close(PyObject *module, PyObject *Py_UNUSED(unused))
{
    MT_ASSERT_GIL();
    mt_postmortem_close(&mt_get_state(module)->postmortem, 1);
    Py_RETURN_NONE;
}

/* Whether the record is this process's notebook's: the same
 * JPY_SESSION_NAME, or neither has one and the working directory is the
 * same. */
static int
same_notebook(const mt_postmortem_page *r)
{
    const char *notebook = getenv("JPY_SESSION_NAME");
    char cwd[PAGE_TEXT];
    if (notebook && notebook[0]) {
        return strcmp(r->notebook, notebook) == 0;
    }
    return r->notebook[0] == '\0' && getcwd(cwd, sizeof cwd) != NULL && strcmp(r->cwd, cwd) == 0;
}

static int
near(long long use, long long bound)
{
    return bound > 0 && use >= 0 && use >= bound / 100 * (100 - MT_POSTMORTEM_NEAR_PERCENT);
}

/* Why memory likely ended the record's kernel, NULL when nothing says so;
 * *kills receives the OOM kills since its last cell began (-1: unknown). */
static const char *
memory_cause(const mt_postmortem_page *r, long long *kills)
{
    *kills = -1;
    if (r->oom_kills_seen >= 0 && r->oom_path[0] &&
        mt_probe_read_oom_kills(r->oom_path, kills) == 0) {
        *kills -= r->oom_kills_seen;
    }
    else {
        *kills = -1;
    }
    if (*kills > 0) {
        return "oom_killer";
    }
    if (near(r->rss, r->limit)) {
        return "limit";
    }
    if (near(r->rss, r->budget)) {
        return "budget";
    }
    return NULL;
}

PyDoc_STRVAR(mt_postmortem_py_read__doc__,
             "postmortem_read(path) -> dict | None: a post-mortem record a kernel left; None when "
             "the file is not one.  'alive' says whether its kernel still runs, 'same_notebook' "
             "whether it was this process's notebook's, 'memory_cause' why memory likely ended it "
             "('oom_killer', 'limit', 'budget') or None, 'oom_kills' how often the OOM killer "
             "fired since its last cell began.");
static PyObject *
mt_postmortem_py_read(PyObject *module, PyObject *path)
{
    mt_state *st = mt_get_state(module);
    mt_postmortem_page r;
    long long kills;
    MT_ASSERT_GIL();
    const char *p = PyUnicode_AsUTF8(path);
    if (p == NULL) {
        return NULL;
    }
    /* Only a regular file is a record: opened without blocking (a FIFO
     * would wait for a writer forever), and one page read at most. */
    int fd = open(p, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        return PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, path);
    }
    struct stat st_file;
    ssize_t n = -1;
    if (fstat(fd, &st_file) == 0 && S_ISREG(st_file.st_mode)) {
        n = read(fd, &r, sizeof r);
    }
    close(fd);
    if (n != (ssize_t)sizeof r || memcmp(r.magic, PAGE_MAGIC, sizeof r.magic) != 0) {
        Py_RETURN_NONE;
    }
    r.cwd[sizeof r.cwd - 1] = '\0';
    r.first_line[sizeof r.first_line - 1] = '\0';
    r.oom_path[sizeof r.oom_path - 1] = '\0';
    r.notebook[sizeof r.notebook - 1] = '\0';
    /* A zombie (killed, not yet reaped by the Jupyter server) is dead. */
    int alive = (kill(r.pid, 0) == 0 || errno == EPERM) &&
                mt_probe_pid_running(st->probe, r.pid, r.start_ticks);
    const char *cause = memory_cause(&r, &kills);
    PyObject *d = PyDict_New();
    if (d == NULL || mt_set(d, "pid", PyLong_FromLong(r.pid)) < 0 ||
        mt_set(d, "alive", PyBool_FromLong(alive)) < 0 ||
        mt_set(d, "same_notebook", PyBool_FromLong(same_notebook(&r))) < 0 ||
        mt_set(d, "memory_cause", cause ? PyUnicode_FromString(cause) : Py_NewRef(Py_None)) < 0 ||
        mt_set(d, "started_at", PyLong_FromLongLong(r.started_at)) < 0 ||
        mt_set(d, "cell", r.cell >= 0 ? PyLong_FromLongLong(r.cell) : Py_NewRef(Py_None)) < 0 ||
        mt_set(d, "first_line",
               PyUnicode_DecodeUTF8(r.first_line, (Py_ssize_t)strlen(r.first_line), "replace")) <
            0 ||
        mt_set(d, "rss", mt_size_or_none(r.rss)) < 0 ||
        mt_set(d, "peak_rss", mt_size_or_none(r.peak_rss)) < 0 ||
        mt_set(d, "limit", mt_size_or_none(r.limit)) < 0 ||
        mt_set(d, "budget", mt_size_or_none(r.budget)) < 0 ||
        mt_set(d, "updated", PyFloat_FromDouble((double)r.updated_ms / 1000.0)) < 0 ||
        mt_set(d, "oom_kills", kills >= 0 ? PyLong_FromLongLong(kills) : Py_NewRef(Py_None)) < 0 ||
        mt_set(d, "oom_source", PyUnicode_DecodeFSDefault(r.oom_path)) < 0 ||
        mt_set(d, "cwd", PyUnicode_DecodeFSDefault(r.cwd)) < 0 ||
        mt_set(d, "notebook",
               r.notebook[0] ? PyUnicode_DecodeFSDefault(r.notebook) : Py_NewRef(Py_None)) < 0) {
        Py_XDECREF(d);
        return NULL;
    }
    return d;
}

/* The _core methods of this file; module.c adds them at init. */
PyMethodDef mt_postmortem_methods[] = {
    {"postmortem_open", mt_postmortem_py_open, METH_O, mt_postmortem_py_open__doc__},
    {"postmortem_close", mt_postmortem_py_close, METH_NOARGS, mt_postmortem_py_close__doc__},
    {"postmortem_read", mt_postmortem_py_read, METH_O, mt_postmortem_py_read__doc__},
    {NULL, NULL, 0, NULL},
};
