/* telemetry: the publisher (telemetry.h): its socket and discovery-facing
 * checks, the main thread's hand-overs to the sampler (sampler.c), and its
 * Python methods.  The message format is message.c's. */
#define _GNU_SOURCE
#include "memtamer/memtamer.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <zmq.h>

#include "memtamer/message.h"
#include "memtamer/postmortem.h"
#include "memtamer/sampler.h"
#include "memtamer/telemetry.h"
#include "memtamer/worker.h"

#define ENDPOINT_MAX MT_SAMPLER_ENDPOINT_MAX
/* What a publisher binds: its discovery record names one of these. */
static const char *const endpoint_schemes[] = {"ipc://", "tcp://"};
#define KERNEL_ID_MAX MT_SAMPLER_KERNEL_MAX
/* A CurveZMQ key in Z85 text, and with its NUL. */
#define CURVE_KEY_CHARS 40
#define CURVE_KEY_SIZE (CURVE_KEY_CHARS + 1)
/* The most threads looked at when telling libzmq's from the others. */
#define THREADS_LISTED 256

/* From PyMem_RawMalloc: the sampler uses it without the GIL. */
struct mt_telemetry {
    void *context;
    /* The threads libzmq started for context (other contexts in the
     * process, ipykernel's among them, have their own). */
    pid_t zmq_threads[THREADS_LISTED];
    int zmq_thread_count;
    char ipc_path[ENDPOINT_MAX]; /* the socket file, "" for tcp */
    /* The CurveZMQ server's keys (Z85), "" when messages go in the clear. */
    char curve_secret[CURVE_KEY_SIZE], curve_public[CURVE_KEY_SIZE];
    int sampling;        /* the sampler runs (main thread only) */
    int paused_for_fork; /* closed by fork_pause (main thread only) */
    /* The sampler's state; its pid is the process that owns the context (a
     * forked child has none), its endpoint the one bound. */
    mt_sampler sampler;
};

/* ------------------------------------------------------------------ */
/* libzmq errors                                                       */
/* ------------------------------------------------------------------ */

/* The one translator of libzmq's errors (zmq_errno) into Python's:
 * OSError(errno, "<what>: <libzmq's message>"). */
static PyObject *
zmq_error(const char *what, int err)
{
    MT_ASSERT_GIL();
    PyObject *args =
        Py_BuildValue("(iN)", err, PyUnicode_FromFormat("%s: %s", what, zmq_strerror(err)));
    if (args != NULL) {
        PyErr_SetObject(PyExc_OSError, args);
        Py_DECREF(args);
    }
    return NULL;
}

PyDoc_STRVAR(mt_telemetry_protocol__doc__,
             "telemetry_protocol() -> dict: what subscribers may expect: kinds ({kind: {field: "
             "type}}, the common fields included), objects ({name: {field: type}} for types "
             "that name one), schemes (of the endpoints a publisher binds), busy_ms and idle_ms "
             "(the sampling intervals), near_percent (RSS within this percentage of the budget "
             "or the limit is near it, as post-mortems judge). Types: int, number, "
             "string, bool, object, array or an object's name; a trailing ? admits null.");
static PyObject *
mt_telemetry_protocol(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(unused))
{
    PyObject *result = mt_message_schema(), *schemes = NULL;
    if (result == NULL) {
        return NULL;
    }
    size_t nschemes = Py_ARRAY_LENGTH(endpoint_schemes);
    if ((schemes = PyTuple_New((Py_ssize_t)nschemes)) == NULL) {
        goto error;
    }
    for (size_t i = 0; i < nschemes; i++) {
        PyObject *scheme = PyUnicode_FromString(endpoint_schemes[i]);
        if (scheme == NULL) {
            goto error;
        }
        PyTuple_SET_ITEM(schemes, (Py_ssize_t)i, scheme);
    }
    if (mt_set(result, "schemes", schemes) < 0) {
        schemes = NULL;
        goto error;
    }
    schemes = NULL;
    if (mt_set(result, "busy_ms", PyLong_FromLong(MT_SAMPLER_BUSY_MS)) < 0 ||
        mt_set(result, "idle_ms", PyLong_FromLong(MT_SAMPLER_IDLE_MS)) < 0 ||
        mt_set(result, "near_percent", PyLong_FromLong(MT_POSTMORTEM_NEAR_PERCENT)) < 0) {
        goto error;
    }
    return result;
error:
    Py_XDECREF(schemes);
    Py_DECREF(result);
    return NULL;
}

/* ------------------------------------------------------------------ */
/* start and stop                                                      */
/* ------------------------------------------------------------------ */

/* The directory of an ipc socket: ours and private (0700). */
static int
private_directory(const char *path)
{
    char dir[ENDPOINT_MAX];
    struct stat st;
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash == NULL || slash == dir) {
        PyErr_Format(PyExc_ValueError,
                     "memtamer telemetry: the ipc endpoint needs an absolute path, got %s", path);
        return -1;
    }
    *slash = '\0';
    if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
        PyErr_SetFromErrnoWithFilename(PyExc_OSError, dir);
        return -1;
    }
    if (lstat(dir, &st) < 0) {
        PyErr_SetFromErrnoWithFilename(PyExc_OSError, dir);
        return -1;
    }
    if (!S_ISDIR(st.st_mode) || st.st_uid != geteuid()) {
        PyErr_Format(PyExc_PermissionError,
                     "memtamer telemetry: %s is not a directory of this user; "
                     "set MEMTAMER_TELEMETRY_ENDPOINT to another place",
                     dir);
        return -1;
    }
    if ((st.st_mode & 0777) != 0700 && chmod(dir, 0700) < 0) {
        PyErr_SetFromErrnoWithFilename(PyExc_OSError, dir);
        return -1;
    }
    return 0;
}

/* Makes path free for our socket: libzmq's bind removes whatever is there,
 * so only a socket a dead process left (nothing accepts on it) is removed;
 * anything else is refused: -1 with FileExistsError. */
static int
claim_socket_path(const char *path)
{
    struct stat st;
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (lstat(path, &st) < 0) {
        return 0;
    }
    int stale = 0;
    if (S_ISSOCK(st.st_mode) && strlen(path) < sizeof addr.sun_path) {
        memcpy(addr.sun_path, path, strlen(path) + 1);
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        stale = fd >= 0 && connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0 &&
                errno == ECONNREFUSED;
        if (fd >= 0) {
            close(fd);
        }
    }
    if (!stale || unlink(path) < 0) {
        PyErr_Format(PyExc_FileExistsError,
                     "memtamer telemetry: %s exists%s; give MEMTAMER_TELEMETRY_ENDPOINT a new path",
                     path, S_ISSOCK(st.st_mode) ? " and a process listens on it" : "");
        return -1;
    }
    return 0;
}

static int
set_int_option(void *socket, int option, int value)
{
    return zmq_setsockopt(socket, option, &value, sizeof value);
}

/* Opens t's context and socket on endpoint and starts the sampler (t's
 * state is kept across: a pause for a fork closes and reopens only this).
 * -1 with an exception; what was opened is closed by close_transport. */
static int
open_transport(mt_telemetry *t, const char *endpoint)
{
    int ipc = strncmp(endpoint, "ipc://", 6) == 0;
    if (ipc) {
        if (private_directory(endpoint + 6) < 0 || claim_socket_path(endpoint + 6) < 0) {
            return -1;
        }
    }
    if ((t->context = zmq_ctx_new()) == NULL) {
        zmq_error("zmq_ctx_new", zmq_errno());
        return -1;
    }
    /* The context's first socket starts its threads: those are the new ones. */
    pid_t before[THREADS_LISTED], after[THREADS_LISTED];
    int n_before = mt_worker_list_threads(before, THREADS_LISTED);
    void *socket = zmq_socket(t->context, ZMQ_XPUB);
    if ((t->sampler.socket = socket) == NULL) {
        zmq_error("zmq_socket(XPUB)", zmq_errno());
        return -1;
    }
    int n_after = mt_worker_list_threads(after, THREADS_LISTED);
    t->zmq_thread_count = 0;
    for (int i = 0; i < n_after; i++) {
        int known = 0;
        for (int j = 0; j < n_before && !known; j++) {
            known = after[i] == before[j];
        }
        if (!known) {
            t->zmq_threads[t->zmq_thread_count++] = after[i];
        }
    }
    size_t len = sizeof t->sampler.endpoint;
    if (set_int_option(socket, ZMQ_LINGER, 0) < 0 ||
        set_int_option(socket, ZMQ_SNDHWM, MT_TELEMETRY_SNDHWM) < 0 ||
        set_int_option(socket, ZMQ_XPUB_VERBOSER, 1) < 0 ||
        (t->curve_secret[0] &&
         (set_int_option(socket, ZMQ_CURVE_SERVER, 1) < 0 ||
          zmq_setsockopt(socket, ZMQ_CURVE_SECRETKEY, t->curve_secret, CURVE_KEY_CHARS) < 0))) {
        zmq_error("zmq_setsockopt", zmq_errno());
        return -1;
    }
    if (zmq_bind(socket, endpoint) < 0) {
        zmq_error(endpoint, zmq_errno());
        return -1;
    }
    if (ipc) { /* ours now: removed when we close */
        snprintf(t->ipc_path, sizeof t->ipc_path, "%s", endpoint + 6);
    }
    if (zmq_getsockopt(socket, ZMQ_LAST_ENDPOINT, t->sampler.endpoint, &len) < 0) {
        zmq_error("ZMQ_LAST_ENDPOINT", zmq_errno());
        return -1;
    }
    if (t->ipc_path[0] && chmod(t->ipc_path, 0600) < 0) {
        PyErr_SetFromErrnoWithFilename(PyExc_OSError, t->ipc_path);
        return -1;
    }
    int err = mt_sampler_start(&t->sampler);
    if (err != 0) {
        errno = err;
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    t->sampling = 1;
    return 0;
}

/* Stops the sampler (how: MT_SAMPLER_STOP_FOR_GOOD says bye, ..._FOR_FORK
 * does not) and closes the socket, the context (and their threads) and the
 * ipc file.  Never takes the GIL; touches no Python object. */
static void
close_transport(mt_telemetry *t, mt_sampler_stop how)
{
    if (t->sampling) {
        mt_sampler_join(&t->sampler, how); /* it closes the socket */
        t->sampling = 0;
    }
    else if (t->sampler.socket != NULL) {
        zmq_close(t->sampler.socket);
    }
    t->sampler.socket = NULL;
    if (t->context) {
        /* libzmq joins its threads in zmq_ctx_term; like ours, each stays in
         * the process's thread count a moment longer (a fork right after
         * would warn of them). */
        zmq_ctx_term(t->context); /* quick: every socket has ZMQ_LINGER 0 */
        t->context = NULL;
        for (int i = 0; i < t->zmq_thread_count; i++) {
            mt_worker_wait_thread_gone(t->zmq_threads[i]);
        }
        t->zmq_thread_count = 0;
    }
    if (t->ipc_path[0]) {
        unlink(t->ipc_path);
        t->ipc_path[0] = '\0';
    }
}

/* Closes whatever of t was opened and frees it (owner process only): the
 * sampler, if running, says bye first (it never takes the GIL, so the
 * caller may hold it).  Touches no Python object. */
static void
telemetry_close(mt_telemetry *t)
{
    close_transport(t, MT_SAMPLER_STOP_FOR_GOOD);
    mt_sampler_free(&t->sampler);
    PyMem_RawFree(t);
}

/* The state's publisher, or NULL when off or inherited from a parent process
 * (which a forked child must neither use nor close: it leaks its copy). */
static mt_telemetry *
own_telemetry(mt_state *st)
{
    mt_telemetry *t = st->telemetry;
    if (t != NULL && t->sampler.pid != mt_worker_pid()) {
        st->telemetry = t = NULL;
    }
    return t;
}

PyDoc_STRVAR(mt_telemetry_start__doc__,
             "telemetry_start(endpoint, kernel, names=True, curve_secret_key=None) -> the bound "
             "endpoint (a tcp port of 0 or * resolved): publish this kernel's memory on a ZeroMQ "
             "XPUB socket (stops a running publisher first). With curve_secret_key (Z85) only "
             "CurveZMQ clients that know the server's public key (telemetry_status) can "
             "subscribe; a tcp endpoint needs it, or names=False: any local user can reach it.");
static PyObject *
mt_telemetry_start(PyObject *module, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"endpoint", "kernel", "names", "curve_secret_key", NULL};
    mt_state *st = mt_get_state(module);
    const char *endpoint, *kernel, *curve_secret = NULL;
    int names = 1;
    mt_telemetry *t = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "ss|pz:telemetry_start", keywords, &endpoint,
                                     &kernel, &names, &curve_secret)) {
        return NULL;
    }
    if (curve_secret != NULL && !zmq_has("curve")) {
        PyErr_SetString(PyExc_ValueError,
                        "memtamer telemetry: this libzmq was built without CurveZMQ; "
                        "unset MEMTAMER_TELEMETRY_CURVE_SECRET_KEY");
        return NULL;
    }
    char curve_public[CURVE_KEY_SIZE] = "";
    if (curve_secret != NULL && (strlen(curve_secret) != CURVE_KEY_CHARS ||
                                 zmq_curve_public(curve_public, curve_secret) < 0)) {
        PyErr_Format(PyExc_ValueError,
                     "memtamer telemetry: the CurveZMQ secret key must be %d characters of Z85 "
                     "(the second key of zmq.curve_keypair())",
                     CURVE_KEY_CHARS);
        return NULL;
    }
    if (strlen(endpoint) >= ENDPOINT_MAX || strlen(kernel) >= KERNEL_ID_MAX) {
        PyErr_Format(PyExc_ValueError,
                     "memtamer telemetry: endpoint or kernel id too long (limits %d and %d bytes)",
                     ENDPOINT_MAX - 1, KERNEL_ID_MAX - 1);
        return NULL;
    }
    int known_scheme = 0;
    for (size_t i = 0; i < Py_ARRAY_LENGTH(endpoint_schemes); i++) {
        known_scheme |= strncmp(endpoint, endpoint_schemes[i], strlen(endpoint_schemes[i])) == 0;
    }
    if (!known_scheme) {
        PyErr_Format(PyExc_ValueError,
                     "memtamer telemetry: endpoint %s: use ipc://<path> or tcp://<host>:<port>",
                     endpoint);
        return NULL;
    }
    /* An ipc socket is this user's alone (0600 in a 0700 directory); any
     * local user can subscribe to a tcp port. */
    if (strncmp(endpoint, "tcp://", 6) == 0 && names && curve_secret == NULL) {
        PyErr_Format(PyExc_PermissionError,
                     "memtamer telemetry: any local user can subscribe to %s, and its messages "
                     "would carry variable names and code; set MEMTAMER_TELEMETRY_NAMES=0, or a "
                     "CurveZMQ key in MEMTAMER_TELEMETRY_CURVE_SECRET_KEY, or leave "
                     "MEMTAMER_TELEMETRY_ENDPOINT unset for a private ipc socket",
                     endpoint);
        return NULL;
    }
    if ((t = own_telemetry(st)) != NULL) {
        st->telemetry = NULL;
        telemetry_close(t);
    }
    t = PyMem_RawCalloc(1, sizeof *t);
    if (t == NULL) {
        return PyErr_NoMemory();
    }
    if (curve_secret != NULL) {
        memcpy(t->curve_secret, curve_secret, CURVE_KEY_SIZE);
        memcpy(t->curve_public, curve_public, CURVE_KEY_SIZE);
    }
    if (mt_sampler_init(&t->sampler, mt_worker_pid(), names, kernel) < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        goto error;
    }
    if (open_transport(t, endpoint) < 0) {
        goto error;
    }
    st->telemetry = t;
    return PyUnicode_FromString(t->sampler.endpoint);
error:
    telemetry_close(t);
    return NULL;
}

PyDoc_STRVAR(mt_telemetry_stop__doc__,
             "telemetry_stop(): say bye, close the socket and its file, join the sampler.");
static PyObject *
mt_telemetry_stop(PyObject *module, PyObject *Py_UNUSED(unused))
{
    mt_state *st = mt_get_state(module);
    mt_telemetry *t = own_telemetry(st);
    if (t != NULL) {
        st->telemetry = NULL;
        Py_BEGIN_ALLOW_THREADS telemetry_close(t);
        Py_END_ALLOW_THREADS
    }
    Py_RETURN_NONE;
}

static void
fork_pause(void *module)
{
    mt_telemetry *t = own_telemetry(mt_get_state(module));
    if (t != NULL && t->sampling) {
        Py_BEGIN_ALLOW_THREADS close_transport(t, MT_SAMPLER_STOP_FOR_FORK);
        Py_END_ALLOW_THREADS t->paused_for_fork = 1;
    }
}

static int
fork_resume(void *module)
{
    mt_telemetry *t = own_telemetry(mt_get_state(module));
    if (t == NULL || !t->paused_for_fork) {
        return 0;
    }
    t->paused_for_fork = 0;
    char endpoint[ENDPOINT_MAX];
    snprintf(endpoint, sizeof endpoint, "%s", t->sampler.endpoint); /* a tcp port stays bound */
    if (open_transport(t, endpoint) < 0) {
        close_transport(t, MT_SAMPLER_STOP_FOR_GOOD);
        return -1;
    }
    return 0;
}

int
mt_telemetry_exec(PyObject *module)
{
    mt_worker_at_fork(&mt_get_state(module)->fork_hooks, fork_pause, fork_resume, module);
    return 0;
}

void
mt_telemetry_free(PyObject *module)
{
    mt_state *st = mt_get_state(module);
    mt_telemetry *t = own_telemetry(st);
    st->telemetry = NULL;
    if (t != NULL) {
        telemetry_close(t);
    }
}

/* ------------------------------------------------------------------ */
/* the main thread's side: hand over                                   */
/* ------------------------------------------------------------------ */

void
mt_telemetry_cell_begin(PyObject *module, const mt_cell_window *w, mt_peak_method method,
                        long long budget, long long trips)
{
    mt_telemetry *t = own_telemetry(mt_get_state(module));
    if (t == NULL) {
        return;
    }
    mt_message_running run = {
        .running = 1,
        .cell = w->cell,
        .started = w->started,
        .rss_before = w->rss_before,
        .method = method,
    };
    memcpy(run.first_line, w->first_line, sizeof run.first_line);
    mt_sampler_cell_begin(&t->sampler, &run, budget, trips);
}

void
mt_telemetry_cell_end(PyObject *module, const mt_cell_record *record, long long budget,
                      long long trips)
{
    mt_telemetry *t = own_telemetry(mt_get_state(module));
    if (t != NULL) {
        mt_sampler_cell_end(&t->sampler, record, budget, trips);
    }
}

/* Whether an item of event data goes out while names are off: numbers,
 * booleans and nulls, and the words of the keys below (each names one of a
 * few fixed words).  Any other text may quote a name, a value or code (a
 * refusal's reason, a post-mortem report), and so may a list or an object:
 * they stay in the kernel. */
static int
is_public_item(PyObject *key, PyObject *value)
{
    static const char *const word_keys[] = {"action", "status", "layer"};
    if (value == Py_None || PyBool_Check(value) || PyLong_Check(value) || PyFloat_Check(value)) {
        return 1;
    }
    for (size_t i = 0;
         PyUnicode_Check(key) && PyUnicode_Check(value) && i < Py_ARRAY_LENGTH(word_keys); i++) {
        if (PyUnicode_CompareWithASCIIString(key, word_keys[i]) == 0) {
            return 1;
        }
    }
    return 0;
}

static char *
raw_strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *copy = malloc(n);
    if (copy != NULL) {
        memcpy(copy, s, n);
    }
    return copy;
}

/* data is serialised here, with the GIL. */
int
mt_telemetry_publish_event(PyObject *module, const char *kind, PyObject *event_data)
{
    mt_state *st = mt_get_state(module);
    mt_telemetry *t = own_telemetry(st);
    PyObject *data = NULL, *json = NULL, *text = NULL;
    MT_ASSERT_GIL();
    char *kind_copy = NULL, *data_copy = NULL;
    int result = -1;
    if (t == NULL) {
        return 0;
    }
    if ((data = PyDict_Copy(event_data)) == NULL) {
        goto done;
    }
    if (!t->sampler.names) {
        PyObject *key, *value;
        Py_ssize_t pos = 0;
        PyObject *keys = PyList_New(0);
        if (keys == NULL) {
            goto done;
        }
        while (PyDict_Next(data, &pos, &key, &value)) {
            if (!is_public_item(key, value) && PyList_Append(keys, key) < 0) {
                Py_DECREF(keys);
                goto done;
            }
        }
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(keys); i++) {
            if (PyDict_DelItem(data, PyList_GET_ITEM(keys, i)) < 0) {
                Py_DECREF(keys);
                goto done;
            }
        }
        Py_DECREF(keys);
    }
    if ((json = PyImport_ImportModule("json")) == NULL ||
        (text = PyObject_CallMethod(json, "dumps", "O", data)) == NULL) {
        goto done;
    }
    const char *utf8 = PyUnicode_AsUTF8(text);
    if (utf8 == NULL) {
        goto done;
    }
    if ((kind_copy = raw_strdup(kind)) == NULL || (data_copy = raw_strdup(utf8)) == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    result = mt_sampler_event_queue(&t->sampler, kind_copy, data_copy);
    kind_copy = data_copy = NULL; /* the sampler's now */
done:
    free(kind_copy);
    free(data_copy);
    Py_XDECREF(data);
    Py_XDECREF(json);
    Py_XDECREF(text);
    return result;
}

PyDoc_STRVAR(mt_telemetry_event__doc__,
             "telemetry_event(kind, data) -> bool: queue an event (budget trip, %shrink action, "
             "post-mortem finding) for the subscribers; False while telemetry is off.");
static PyObject *
mt_telemetry_event(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    const char *kind;
    if (nargs != 2 || !PyUnicode_Check(args[0]) || !PyDict_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "telemetry_event(kind: str, data: dict)");
        return NULL;
    }
    if ((kind = PyUnicode_AsUTF8(args[0])) == NULL) {
        return NULL;
    }
    int queued = mt_telemetry_publish_event(module, kind, args[1]);
    return queued < 0 ? NULL : PyBool_FromLong(queued);
}

PyDoc_STRVAR(mt_telemetry_status__doc__,
             "telemetry_status() -> dict | None: endpoint, kernel, names, curve_public_key (the "
             "CurveZMQ server's, None in the clear), sent (messages), seq, subscriptions, "
             "thread_id (the sampler's), last_error (the last send error).");
static PyObject *
mt_telemetry_status(PyObject *module, PyObject *Py_UNUSED(unused))
{
    mt_telemetry *t = own_telemetry(mt_get_state(module));
    if (t == NULL) {
        Py_RETURN_NONE;
    }
    int err = atomic_load(&t->sampler.last_errno);
    PyObject *d = PyDict_New();
    if (d == NULL || mt_set(d, "endpoint", PyUnicode_FromString(t->sampler.endpoint)) < 0 ||
        mt_set(d, "kernel", PyUnicode_FromString(t->sampler.kernel)) < 0 ||
        mt_set(d, "names", PyBool_FromLong(t->sampler.names)) < 0 ||
        mt_set(d, "curve_public_key",
               t->curve_public[0] ? PyUnicode_FromString(t->curve_public) : Py_NewRef(Py_None)) <
            0 ||
        mt_set(d, "sent", PyLong_FromLongLong(atomic_load(&t->sampler.sent))) < 0 ||
        mt_set(d, "seq", PyLong_FromLongLong(atomic_load(&t->sampler.seq))) < 0 ||
        mt_set(d, "subscriptions", PyLong_FromLongLong(atomic_load(&t->sampler.subscriptions))) <
            0 ||
        mt_set(d, "thread_id", PyLong_FromLong(atomic_load(&t->sampler.tid))) < 0 ||
        mt_set(d, "last_error",
               err ? PyUnicode_FromString(zmq_strerror(err)) : Py_NewRef(Py_None)) < 0) {
        Py_XDECREF(d);
        return NULL;
    }
    return d;
}

/* The _core methods of this file; module.c adds them at init. */
PyMethodDef mt_telemetry_methods[] = {
    {"telemetry_start", (PyCFunction)(void (*)(void))mt_telemetry_start,
     METH_VARARGS | METH_KEYWORDS, mt_telemetry_start__doc__},
    {"telemetry_stop", mt_telemetry_stop, METH_NOARGS, mt_telemetry_stop__doc__},
    {"telemetry_event", (PyCFunction)(void (*)(void))mt_telemetry_event, METH_FASTCALL,
     mt_telemetry_event__doc__},
    {"telemetry_status", mt_telemetry_status, METH_NOARGS, mt_telemetry_status__doc__},
    {"telemetry_protocol", mt_telemetry_protocol, METH_NOARGS, mt_telemetry_protocol__doc__},
    {NULL, NULL, 0, NULL},
};
