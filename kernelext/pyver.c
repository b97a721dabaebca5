/* pyver: CPython version differences, chosen by PY_VERSION_HEX (pyver.h). */
#define PY_SSIZE_T_CLEAN
#include "memtamer/pyver.h"

#if PY_VERSION_HEX < 0x030B0000
#error "memtamer needs CPython 3.11 or later"
#endif

#if !MT_PYVER_PRIVATE_FRAMES

/* This thread's state when it holds the GIL (from 3.12 the current state is
 * thread-local and cleared whenever the thread lets the GIL go).  3.12 names
 * the function that 3.13 documents as PyThreadState_GetUnchecked. */
static inline PyThreadState *
holding_gil(void)
{
#if PY_VERSION_HEX >= 0x030D0000
    return PyThreadState_GetUnchecked();
#else
    return _PyThreadState_UncheckedGet();
#endif
}

int
mt_pyver_frame_begin(mt_pyver_frame *f)
{
    PyThreadState *tstate = holding_gil();
    if (tstate == NULL) {
        return 0;
    }
    /* Making a frame object can fail (and PyThreadState_GetFrame then
     * clears the error): whatever was being raised must survive the walk. */
    f->saved_exception = PyErr_GetRaisedException();
    f->frame = PyThreadState_GetFrame(tstate);
    return 1;
}

void
mt_pyver_frame_back(mt_pyver_frame *f)
{
    PyFrameObject *back = PyFrame_GetBack((PyFrameObject *)f->frame);
    Py_DECREF(f->frame);
    f->frame = back;
}

void
mt_pyver_frame_end(mt_pyver_frame *f)
{
    Py_CLEAR(f->frame);
    PyErr_SetRaisedException(f->saved_exception); /* NULL: clears a failed walk's error */
    f->saved_exception = NULL;
}

/* The frame holds its globals and code: the references can go at once. */
PyObject *
mt_pyver_frame_globals(const mt_pyver_frame *f)
{
    PyObject *globals = PyFrame_GetGlobals((PyFrameObject *)f->frame);
    Py_DECREF(globals);
    return globals;
}

PyCodeObject *
mt_pyver_frame_code(const mt_pyver_frame *f)
{
    PyCodeObject *code = PyFrame_GetCode((PyFrameObject *)f->frame);
    Py_DECREF(code);
    return code;
}

int
mt_pyver_frame_offset(const mt_pyver_frame *f)
{
    return PyFrame_GetLasti((PyFrameObject *)f->frame);
}

#endif

long long
mt_pyver_preheader_bytes(PyTypeObject *tp)
{
#if PY_VERSION_HEX >= 0x030C0000
    unsigned long flags = Py_TPFLAGS_PREHEADER; /* managed dict and weakref pointers */
#else
    unsigned long flags = Py_TPFLAGS_MANAGED_DICT;
#endif
    return (tp->tp_flags & flags) ? 2 * (long long)sizeof(PyObject *) : 0;
}

PyObject *
mt_pyver_dict_sharing_values(PyObject *o)
{
#if PY_VERSION_HEX >= 0x030D0000 && PY_VERSION_HEX < 0x030E0000
    /* 3.13's layout (Include/internal/pycore_object.h): the managed dict
     * pointer three pointers before the object, the inline values right
     * after its header; tests/test_walker.py checks it on 3.13. */
    if (!(Py_TYPE(o)->tp_flags & Py_TPFLAGS_INLINE_VALUES)) {
        return NULL;
    }
    PyDictObject *dict = *(PyDictObject **)((char *)o - 3 * (Py_ssize_t)sizeof(PyObject *));
    void *inline_values = (char *)o + sizeof(PyObject);
    return dict != NULL && (void *)dict->ma_values == inline_values ? (PyObject *)dict : NULL;
#else
    (void)o;
    return NULL;
#endif
}

#if PY_VERSION_HEX < 0x030C0000
#define Py_BUILD_CORE 1 /* its dict layout, as pyver.h reads its frames */
#include <internal/pycore_dict.h>
#undef Py_BUILD_CORE
#endif

const mt_pyver_dict_entry *
mt_pyver_dict_entries(PyObject *dict, Py_ssize_t *n, const void **table)
{
#if PY_VERSION_HEX < 0x030C0000
    _Static_assert(sizeof(PyDictUnicodeEntry) == sizeof(mt_pyver_dict_entry) &&
                       offsetof(PyDictUnicodeEntry, me_key) == offsetof(mt_pyver_dict_entry, key) &&
                       offsetof(PyDictUnicodeEntry, me_value) ==
                           offsetof(mt_pyver_dict_entry, value),
                   "3.11's entries of str keys are a key and a value pointer");
    PyDictKeysObject *keys = ((PyDictObject *)dict)->ma_keys;
    if (((PyDictObject *)dict)->ma_values == NULL && DK_IS_UNICODE(keys)) {
        *n = keys->dk_nentries;
        *table = keys;
        return (const mt_pyver_dict_entry *)DK_UNICODE_ENTRIES(keys);
    }
#else
    (void)dict;
#endif
    *n = 0;
    *table = NULL;
    return NULL;
}

uint64_t
mt_pyver_dict_version(PyObject *dict)
{
#if PY_VERSION_HEX < 0x030C0000
    return ((PyDictObject *)dict)->ma_version_tag;
#else
    (void)dict;
    return 0;
#endif
}

void
mt_pyver_after_fork_returns(int (*resume)(void *), void *arg)
{
#if PY_VERSION_HEX >= 0x030D0000
    if (Py_AddPendingCall(resume, arg) == 0) {
        return;
    }
#endif
    resume(arg);
}

PyObject *
mt_pyver_take_exception(void)
{
#if PY_VERSION_HEX >= 0x030C0000
    return PyErr_GetRaisedException();
#else
    PyObject *type, *value, *traceback;
    PyErr_Fetch(&type, &value, &traceback);
    PyErr_NormalizeException(&type, &value, &traceback);
    if (traceback != NULL) {
        PyException_SetTraceback(value, traceback);
    }
    Py_XDECREF(type);
    Py_XDECREF(traceback);
    return value;
#endif
}

#if PY_VERSION_HEX >= 0x030C0000

/* The changes being fed and the slot watching for them.  A dict watcher's
 * callback receives no state of its own.  Only touched with the GIL held. */
static mt_pyver_dict_changes *fed_changes;
static int watcher_id = -1;

/* A cell that changes more names than this is looked at whole: noting each
 * would cost as much memory as a second namespace, and the reader's look at
 * every name costs no more than the cell's own work. */
#define MAX_NOTED_KEYS 16384

/* Runs inside every change of a watched dict, so it does the least: one
 * insertion of a str whose hash is cached. */
static int
note_change(PyDict_WatchEvent event, PyObject *Py_UNUSED(dict), PyObject *key,
            PyObject *Py_UNUSED(new_value))
{
    mt_pyver_dict_changes *c = fed_changes;
    if (c == NULL || c->everything) {
        return 0;
    }
    if ((event != PyDict_EVENT_ADDED && event != PyDict_EVENT_MODIFIED &&
         event != PyDict_EVENT_DELETED) ||
        !PyUnicode_CheckExact(key) || PyDict_GET_SIZE(c->keys) >= MAX_NOTED_KEYS) {
        c->everything = 1;
        PyDict_Clear(c->keys);
        return 0;
    }
    /* The change may happen while an exception is being raised. */
    PyObject *raised = PyErr_GetRaisedException();
    if (PyDict_SetItem(c->keys, key, Py_None) < 0) {
        PyErr_Clear();
        c->everything = 1;
    }
    PyErr_SetRaisedException(raised);
    return 0;
}

int
mt_pyver_watch_dicts(mt_pyver_dict_changes *changes, PyObject *const *dicts, int n)
{
    assert(PyGILState_Check());
    assert(n > 0 && n <= (int)Py_ARRAY_LENGTH(changes->dicts));
    mt_pyver_unwatch_dicts(changes);
    if (fed_changes != NULL) {
        return 0; /* another ledger's: not ours to take */
    }
    if ((changes->keys = PyDict_New()) == NULL) {
        return -1;
    }
    changes->everything = 1;
    watcher_id = PyDict_AddWatcher(note_change);
    if (watcher_id < 0) { /* every slot taken by other extensions */
        PyErr_Clear();
        Py_CLEAR(changes->keys);
        return 0;
    }
    fed_changes = changes;
    for (int i = 0; i < n; i++) {
        if (PyDict_Watch(watcher_id, dicts[i]) < 0) {
            mt_pyver_unwatch_dicts(changes);
            return -1;
        }
        changes->dicts[changes->ndicts++] = Py_NewRef(dicts[i]);
    }
    return 1;
}

void
mt_pyver_unwatch_dicts(mt_pyver_dict_changes *changes)
{
    if (fed_changes != changes) {
        Py_CLEAR(changes->keys);
        return;
    }
    PyObject *raised = PyErr_GetRaisedException();
    for (int i = 0; i < changes->ndicts; i++) {
        if (PyDict_Unwatch(watcher_id, changes->dicts[i]) < 0) {
            PyErr_Clear(); /* cannot fail for a dict watched with this id */
        }
        Py_CLEAR(changes->dicts[i]);
    }
    changes->ndicts = 0;
    if (PyDict_ClearWatcher(watcher_id) < 0) {
        PyErr_Clear();
    }
    PyErr_SetRaisedException(raised);
    watcher_id = -1;
    fed_changes = NULL;
    Py_CLEAR(changes->keys);
    changes->everything = 0;
}

#else

int
mt_pyver_watch_dicts(mt_pyver_dict_changes *changes, PyObject *const *Py_UNUSED(dicts),
                     int Py_UNUSED(n))
{
    *changes = (mt_pyver_dict_changes){0};
    return 0;
}

void
mt_pyver_unwatch_dicts(mt_pyver_dict_changes *Py_UNUSED(changes))
{
}

#endif

int
mt_pyver_check_build(void)
{
#ifdef Py_GIL_DISABLED
    PyErr_SetString(PyExc_ImportError,
                    "memtamer does not run on free-threaded CPython (built with "
                    "--disable-gil) yet: its allocator hooks and object walker rely on the "
                    "GIL.  Use the standard build of the same version (python3.13, not "
                    "python3.13t).");
    return -1;
#else
    return 0;
#endif
}
