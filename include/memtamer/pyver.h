/* pyver: what differs between the CPython versions memtamer supports (3.11,
 * 3.12, 3.13), chosen here by PY_VERSION_HEX and nowhere else.  A new
 * version's differences go in this file pair.
 *
 * Frames: peaks.c asks, from inside an allocation hook, which code is
 * running.  3.12 and later answer through the documented frame API
 * (PyEval_GetFrame, PyFrame_GetBack/GetCode/GetGlobals/GetLasti): it may
 * create frame objects, which there only schedules a collection.  On 3.11
 * creating a GC object can run a collection (and finalizers) right inside
 * the hook, so 3.11 reads its own interpreter frames instead (its private
 * layout, the way its tracemalloc does), allocating nothing.
 *
 * Free-threaded builds (Py_GIL_DISABLED) are refused at import: the hooks,
 * the walker and the shrink actions assume the GIL.
 *
 * Lower floor: calls nothing of memtamer's. */
#ifndef MEMTAMER_PYVER_H
#define MEMTAMER_PYVER_H

#include <Python.h>

/* One frame of the running thread's Python stack, innermost first.  Holds
 * what the walk needs between steps (a reference on 3.12+, the exception
 * set when the walk began); only touched by the thread that began it. */
typedef struct {
    void *frame; /* NULL: no (more) Python frames */
    PyObject *saved_exception;
} mt_pyver_frame;

/* 3.11 reads its own interpreter frames (see above), inline: the hook's
 * cost per block is a few loads. */
#define MT_PYVER_PRIVATE_FRAMES (PY_VERSION_HEX < 0x030C0000)

/* Starts at this thread's innermost complete frame.  Returns 0 (and starts
 * nothing) when this thread does not hold the GIL, else 1; then
 * mt_pyver_frame_end must follow.  Allocates nothing through Python on
 * 3.11; on 3.12+ only frame objects, and never raises. */
#if !MT_PYVER_PRIVATE_FRAMES
int mt_pyver_frame_begin(mt_pyver_frame *f);
/* Moves to the frame that called this one (f->frame NULL past the outermost). */
void mt_pyver_frame_back(mt_pyver_frame *f);
void mt_pyver_frame_end(mt_pyver_frame *f);
/* The frame's globals and code (borrowed: the frame holds them). */
PyObject *mt_pyver_frame_globals(const mt_pyver_frame *f);
PyCodeObject *mt_pyver_frame_code(const mt_pyver_frame *f);
/* The offset in bytes of the instruction running, for PyCode_Addr2Line. */
int mt_pyver_frame_offset(const mt_pyver_frame *f);
#endif

#if MT_PYVER_PRIVATE_FRAMES
#include <pthread.h>

#include <internal/pycore_frame.h>

/* The thread state holding the GIL, when it is this thread's; else NULL.
 * PyGILState_Check looks this thread's state up by thread-specific key
 * (about 50 instructions); this reads the state holding the GIL, as the
 * interpreter's loop does, and compares the thread it is bound to
 * (PyThread_get_thread_ident is pthread_self on the builds that walk
 * frames).  A state is unpublished before it is freed and holds only its own
 * thread's ident, so a thread without the GIL never passes; a state moved to
 * another thread (rare, in embedding code) fails safe, as "no GIL". */
static inline PyThreadState *
mt_pyver_holding_gil_(void)
{
    PyThreadState *tstate = _PyThreadState_UncheckedGet();
    return tstate != NULL && tstate->thread_id == (unsigned long)pthread_self() ? tstate : NULL;
}

static inline _PyInterpreterFrame *
mt_pyver_first_complete_(_PyInterpreterFrame *frame)
{
    while (frame != NULL && _PyFrame_IsIncomplete(frame)) {
        frame = frame->previous;
    }
    return frame;
}

static inline int
mt_pyver_frame_begin(mt_pyver_frame *f)
{
    PyThreadState *tstate = mt_pyver_holding_gil_();
    if (tstate == NULL) {
        return 0;
    }
    f->saved_exception = NULL;
    f->frame = mt_pyver_first_complete_(tstate->cframe->current_frame);
    return 1;
}

static inline void
mt_pyver_frame_back(mt_pyver_frame *f)
{
    f->frame = mt_pyver_first_complete_(((_PyInterpreterFrame *)f->frame)->previous);
}

static inline void
mt_pyver_frame_end(mt_pyver_frame *f)
{
    f->frame = NULL;
}

static inline PyObject *
mt_pyver_frame_globals(const mt_pyver_frame *f)
{
    return ((_PyInterpreterFrame *)f->frame)->f_globals;
}

static inline PyCodeObject *
mt_pyver_frame_code(const mt_pyver_frame *f)
{
    return ((_PyInterpreterFrame *)f->frame)->f_code;
}

static inline int
mt_pyver_frame_offset(const mt_pyver_frame *f)
{
    return _PyInterpreterFrame_LASTI((_PyInterpreterFrame *)f->frame) * (int)sizeof(_Py_CODEUNIT);
}

#endif

/* Bytes before an object of type tp that sys.getsizeof counts beyond the
 * collector's header: the managed __dict__ and weakref pointers. */
long long mt_pyver_preheader_bytes(PyTypeObject *tp);

/* From 3.13 object.__sizeof__ counts an instance's inline attribute values,
 * so the walker calls it rather than redo its arithmetic. */
#define MT_PYVER_OBJECT_SIZEOF_COUNTS_INLINE_VALUES (PY_VERSION_HEX >= 0x030D0000)

/* 3.13: an instance's __dict__, once read, shares the instance's inline
 * attribute values, and tp_traverse then lists those values, not the dict.
 * Returns that dict (borrowed), else NULL (no such dict, or a version whose
 * tp_traverse lists the dict itself). */
PyObject *mt_pyver_dict_sharing_values(PyObject *o);

/* One entry of a dict's table as 3.11 lays out a table of str keys: a
 * deleted entry stays in its place as {NULL, NULL} until the table is
 * rebuilt. */
typedef struct {
    PyObject *key, *value;
} mt_pyver_dict_entry;

/* The dict's entries read in place, for the ledger's copy of a namespace
 * on 3.11 (no dict watchers there), which it compares with memcmp: a
 * pointer pair per name, none of the key objects touched.  Borrowed, in
 * insertion order, *n of them, valid until the dict next changes; *table
 * is what holds them, and while a dict keeps the same table its entries
 * keep their positions (a rebuilt table compacts them).  NULL with *table
 * NULL (and no exception) when the dict's table is not laid out so (a key
 * that is not a str, a split table), and on 3.12+: iterate with
 * PyDict_Next instead. */
const mt_pyver_dict_entry *mt_pyver_dict_entries(PyObject *dict, Py_ssize_t *n, const void **table);

/* A tag that changes whenever the dict does (3.11's ma_version_tag: every
 * insertion, rebinding, deletion or clear takes the next of a process-wide
 * count), so an unchanged one means nothing to compare; 0 when this version
 * keeps none to rely on (3.12+, whose watchers say what changed). */
uint64_t mt_pyver_dict_version(PyObject *dict);

/* Runs resume(arg) once os.fork() has returned in the parent; resume
 * reports its own failures and returns 0 (as a pending call must).  3.12 warns about a fork of a
 * multi-threaded process before the after-fork hooks run, 3.13 after them: there the threads
 * memtamer stopped for the fork restart from a pending call, at the interpreter's next check, and
 * otherwise at once. */
void mt_pyver_after_fork_returns(int (*resume)(void *), void *arg);

/* The exception being raised (normalized, with its traceback), which is
 * then cleared; a new reference.  There must be one. */
PyObject *mt_pyver_take_exception(void);

/* Which names of a namespace changed, without looking at the others.
 * 3.12 and later watch the dicts (PyDict_AddWatcher): every insertion,
 * rebinding or deletion adds its key to keys; a clear, a dict filled whole
 * from another (CLONED), a key that is not an exact str (its hash could
 * run Python code), more changed names than are worth noting one by one or
 * a failure to note a key sets everything instead, and
 * the reader then looks at every name.  3.11 has no dict watchers: the
 * ledger compares snapshots of the namespace instead.
 *
 * CPython has a few watcher slots for the whole process: one is taken by
 * the first mt_pyver_watch_dicts and given back by mt_pyver_unwatch_dicts,
 * and one set of changes is fed at a time (the module allows one
 * interpreter).  The watcher runs in whichever thread changes a dict, with
 * the GIL held, as every function here needs. */
typedef struct {
    /* The keys changed since the reader last took them, as a dict's keys:
     * in the order they first changed, the namespace's own for new names
     * (strong). */
    PyObject *keys;
    int everything; /* look at every name: what changed is not known key by key */
    PyObject *dicts[2];
    int ndicts; /* dicts watched; 0 when not watching */
} mt_pyver_dict_changes;

/* Watches the n (at most 2) dicts, feeding changes (which must outlive the
 * watch, and starts with everything set).  1 when watching; 0 when this
 * version cannot or no watcher slot is free (nothing watched, no exception);
 * -1 with an exception. */
int mt_pyver_watch_dicts(mt_pyver_dict_changes *changes, PyObject *const *dicts, int n);
/* Stops watching (a no-op when changes is not watching) and clears changes;
 * gives the slot back.  Never fails. */
void mt_pyver_unwatch_dicts(mt_pyver_dict_changes *changes);

/* -1 with ImportError when this build cannot run memtamer (free-threaded),
 * saying what to use instead; 0 otherwise.  Called by the module's exec. */
int mt_pyver_check_build(void);

/* The module slots that depend on the version (none or more entries,
 * each followed by a comma). */
#if PY_VERSION_HEX >= 0x030C0000
/* The hooks and counters are process-wide. */
#define MT_PYVER_MODULE_SLOTS                                                                      \
    {Py_mod_multiple_interpreters, Py_MOD_MULTIPLE_INTERPRETERS_NOT_SUPPORTED},
#else
#define MT_PYVER_MODULE_SLOTS
#endif

#endif
