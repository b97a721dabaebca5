/* ledger: the user's variables — where each came from (the cell that
 * created it, last rebound it, last read it), its deep size from the last
 * walk, and, on a report, who else holds its memory.
 *
 * After each cell the ledger looks at the names whose binding changed: on
 * 3.12 and later a dict watcher on the namespace (and the shell's hidden
 * one) noted them as they changed, so a cell costs work on the names it
 * touched, whatever the session's size; on 3.11 it compares the dict's
 * entries, read in place, with its copy of them (memcmp of key and value
 * pointers, about half a nanosecond per name, the shell's _i<n> history
 * included; a name rebound during the cell to a new object that took the
 * old one's address looks unchanged there), and with no watcher slot free
 * (3.12+) it matches the bindings with the previous ones name by name.  A
 * changed name is classified again and compared by object identity (the
 * ledger keeps no reference to user objects: that would keep them alive).
 * It collects the names the cell's compiled code loads (as the shell's
 * compiler hands it over: ledger_ran; the source is compiled again only
 * when the shell compiled nothing we saw), and walks only what was bound,
 * rebound or read; the rest keeps its cached size.  A report walks every
 * root: the variables and the hidden holders (IPython's output cache
 * Out[n], _, __, ___, _n, other underscore names, sys.last_value /
 * sys.last_traceback, the namespaces %run keeps).
 * Holders are reported as dicts: "label" for people, "kind" (variable,
 * view, output_cache, output_name, exception, run_namespace, unnamed) and
 * what a purge needs: "key" (a name of the user namespace), "out_index"
 * (the output cache's key), "sys_attributes" (every sys attribute that
 * keeps the last exception), "path" (the %run cache's key).
 *
 * Everything here needs the GIL. */
#ifndef MEMTAMER_LEDGER_H
#define MEMTAMER_LEDGER_H

#include <Python.h>

#include <stdint.h>

#include "memtamer/pyver.h"

typedef struct {
    PyObject *name;                   /* strong */
    uintptr_t identity;               /* of the bound object; no reference is kept */
    PyTypeObject *type;               /* with identity, tells a rebinding from address reuse */
    long long created, rebound, used; /* cell numbers; -1 unknown / never */
    long long bytes;                  /* deep size at the last walk, -1 when not walked */
    long long estimate;               /* had that walk finished (== bytes when it did) */
    long long visits;                 /* references that walk followed: its cost */
    int complete;                     /* that walk finished within its budget */
    long long seen;                   /* generation of the last namespace scan */
    long long bytes_at_begin;         /* bytes when the walk_serial cell began */
    long long walk_serial;            /* serial of the cell that last walked it */
} mt_ledger_entry;

/* A big object whose name went (del, or bound to something else) while
 * something else kept it alive: the report names it by that name, and
 * `%shrink del NAME` purges the caches that hold it. */
typedef struct {
    PyObject *name;     /* strong */
    uintptr_t identity; /* of the object; no reference is kept */
    PyTypeObject *type; /* with identity and bytes, tells it from address reuse */
    long long bytes;    /* its deep size at the name's last walk */
    long long cell;     /* the cell that deleted or rebound the name */
    int rebound;        /* 1: rebound, 0: deleted */
} mt_ledger_gone;

/* A namespace's entries as the last scan saw them, in the dict's own
 * order: each key strong, each value by identity only (no reference is
 * kept).  While table is the dict's table read in place
 * (mt_pyver_dict_entries), items mirror it entry for entry, holes of
 * deleted names included, and the next scan compares the two with memcmp;
 * else names are matched in step (see snapshot_changes). */
typedef struct {
    mt_pyver_dict_entry *items; /* mt_reserve'd */
    Py_ssize_t len, cap;
    const void *table; /* NULL: compared in step */
    uint64_t version;  /* the dict's version tag then (mt_pyver_dict_version), 0 unknown */
} mt_ledger_snapshot;

typedef struct {
    /* Strong references, set by attach (NULL when detached). */
    PyObject *user_ns, *hidden_ns, *out_cache, *shell, *transform;
    PyObject *barriers;       /* tuple: never entered by a walk */
    PyObject *index;          /* name -> index into entries */
    mt_ledger_entry *entries; /* mt_reserve'd */
    Py_ssize_t len, cap;
    PyObject *source; /* the running cell's source */
    PyObject *ran;    /* set: names in the code the shell compiled for it (ledger_ran), or NULL */
    long long cell, generation;
    long long serial; /* cells begun since attach */
    PyObject *walked; /* list: the names walked since the cell began, each once */
    /* list: the names adopt took since the last scan, which looks at them
     * whatever the compare says: a snapshot (3.11) still holds the objects
     * they had, whose addresses a later binding may take. */
    PyObject *adopted;
    double cell_budget, report_budget;
    double last_hook_seconds;
    mt_ledger_gone *gone; /* mt_reserve'd, oldest first */
    Py_ssize_t ngone, gone_cap;
    /* The names changed since the last scan, by a dict watcher; when it is
     * not watching, the snapshots: user_ns and hidden_ns at the last scan. */
    mt_pyver_dict_changes changes;
    mt_ledger_snapshot user_seen, hidden_seen;
} mt_ledger;

int mt_ledger_traverse(mt_ledger *l, visitproc visit, void *arg);
void mt_ledger_clear(mt_ledger *l);

/* Called by cell_begin / cell_end (cell.c); no-ops while detached. */
int mt_ledger_cell_begin(mt_ledger *l, PyObject *source);
int mt_ledger_cell_end(mt_ledger *l, long long cell);

/* Adds "variables" (and "variables_walk": complete, seconds, roots) to a
 * report dict when attached.  -1 with an exception. */
int mt_ledger_report(mt_ledger *l, PyObject *report);

/* The rule engine's view (policy.c asks through these, never the struct). */

/* A variable as the ledger knows it. */
typedef struct {
    PyObject *name;                   /* borrowed from the ledger */
    uintptr_t identity;               /* of the bound object at the last scan */
    long long bytes;                  /* deep size at the last walk, -1 when not walked */
    long long created, rebound, used; /* cell numbers; -1 unknown / never */
} mt_ledger_variable;

/* The variables known (0 while detached); the i-th of them, 0 <= i < count,
 * valid until the ledger next changes. */
Py_ssize_t mt_ledger_count(const mt_ledger *l);
mt_ledger_variable mt_ledger_variable_at(const mt_ledger *l, Py_ssize_t i);

/* The object the user namespace binds name to now (borrowed), or NULL:
 * unbound, detached, or an exception (PyErr_Occurred tells). */
PyObject *mt_ledger_bound(const mt_ledger *l, PyObject *name);

/* The output cache's entries no variable is bound to, with their deep
 * sizes (each walked within the cell walk's budget; an estimate when cut
 * short), biggest first: a list of (bytes, number).  Empty while detached.
 * NULL with an exception. */
PyObject *mt_ledger_output_entries(mt_ledger *l);

/* The bytes the ledger itself holds, as requested from the allocators:
 * its tables, its index and the changes noted (not the names, which are
 * the namespace's own keys, but the names of deleted variables it keeps).
 * -1 with an exception. */
long long mt_ledger_own_bytes(const mt_ledger *l);

/* memtamer itself rebound these names between cells (a rule's action): the
 * ledger takes their new objects and sizes them again without counting a
 * rebinding, so the next cell does not look like it made them.  Names no
 * longer bound are left for the next scan.  -1 with an exception. */
int mt_ledger_adopt(mt_ledger *l, PyObject *names);

/* The growth of the variables walked since the cell began (each one's size
 * now less its size then, where that is more) in *total; with holders (a
 * list), each of them appended as {"holder": name, "bytes": growth} too.
 * -1 with an exception. */
int mt_ledger_regrowth(mt_ledger *l, PyObject *holders, long long *total);

/* Whether cell lost the name of a big object something still holds:
 * ledger_gone(cell) lists them. */
int mt_ledger_lost_in(const mt_ledger *l, long long cell);

/* The _core methods ledger.c defines. */
extern PyMethodDef mt_ledger_methods[];

#endif
