/* policy: the rule engine.  It owns the rule table in force (rules.h) and,
 * after each cell, evaluates every rule's triggers against the cell's record
 * and the kernel's memory, and its selectors against the ledger's variables
 * (ledger.h), producing the actions to run.  It runs none itself: the IPython
 * layer runs them between cells, in the main thread, through %shrink's
 * machinery, so that each action keeps %shrink's checks and its undo.
 *
 * Everything here needs the GIL. */
#ifndef MEMTAMER_POLICY_H
#define MEMTAMER_POLICY_H

#include <Python.h>

#include <stdint.h>

#include "memtamer/rules.h"

/* An object a rule acted on: that rule leaves it alone from then on (it
 * would only be refused again), other rules still see it. */
typedef struct {
    int rule;
    char *name; /* malloc'd */
    uintptr_t identity;
} mt_policy_acted;

/* The guard sits above this file (guard.h) and, while it guards the kernel,
 * lends the engine its judgement of a rules file's budget (NULL: the one in
 * force) with swap counted or not (-1: as it is): 0 when the guard takes it
 * (apply 0: would take it), -1 with problem saying why not, the guard
 * unchanged.  Sets no exception; needs the GIL. */
typedef int (*mt_policy_budget_judge)(PyObject *module, const mt_rules_level *budget, int swap,
                                      int apply, char *problem, size_t n);

typedef struct mt_policy {
    mt_rules_table table; /* empty when no rules are in force */
    int enabled;
    mt_policy_budget_judge budget_judge; /* NULL when no guard runs */
    long long *last_fired;               /* per rule: the cell it last fired after, -1 never */
    mt_policy_acted *acted;              /* mt_reserve'd */
    Py_ssize_t acted_len, acted_cap;
    /* The effective limit for percentage levels, read at most every
     * MT_POLICY_LIMIT_SECONDS (reading cgroup files costs ~100 us). */
    long long limit;
    double limit_read_at;
} mt_policy;

#define MT_POLICY_LIMIT_SECONDS 5.0

void mt_policy_free(mt_policy *p);

/* ValueError for text the size grammar refuses, in the words the rules
 * file and the magics show (rules.c owns them); percent: a percentage was
 * allowed too.  Returns NULL. */
PyObject *mt_policy_refuse_level(const char *text, int percent);

/* The _core methods policy.c defines. */
extern PyMethodDef mt_policy_methods[];

#endif
