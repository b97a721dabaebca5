/* policy: the rule engine (policy.h).  All functions here need the GIL. */
#include "memtamer/memtamer.h"

#include <fnmatch.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "memtamer/policy.h"

void
mt_policy_free(mt_policy *p)
{
    mt_rules_table_free(&p->table);
    free(p->last_fired);
    p->last_fired = NULL;
    for (Py_ssize_t i = 0; i < p->acted_len; i++) {
        free(p->acted[i].name);
    }
    p->acted_len = 0;
    PyMem_RawFree(p->acted);
    p->acted = NULL;
    p->acted_cap = 0;
}

static mt_policy *
policy_of(PyObject *module)
{
    return &mt_get_state(module)->policy;
}

/* ---- loading --------------------------------------------------------- */

/* The errors as a list of (line, column, message). */
static PyObject *
errors_list(const mt_rules_errors *e)
{
    PyObject *list = PyList_New(0);
    if (list == NULL) {
        return NULL;
    }
    for (int i = 0; i < e->len; i++) {
        PyObject *item =
            Py_BuildValue("(iis)", e->items[i].line, e->items[i].column, e->items[i].message);
        if (item == NULL || PyList_Append(list, item) < 0) {
            Py_XDECREF(item);
            Py_DECREF(list);
            return NULL;
        }
        Py_DECREF(item);
    }
    if (e->more) {
        PyObject *item = Py_BuildValue("(iis)", 0, 0, "and more errors: fix these first");
        if (item == NULL || PyList_Append(list, item) < 0) {
            Py_XDECREF(item);
            Py_DECREF(list);
            return NULL;
        }
        Py_DECREF(item);
    }
    return list;
}

/* The arguments of rules_check and rules_load, (text: bytes, directory:
 * str | None = None): *directory is a new reference to the directory as
 * the file system spells it (bytes), or NULL.  -1 with an exception. */
static int
text_and_directory(PyObject *const *args, Py_ssize_t nargs, const char *name, PyObject **directory)
{
    *directory = NULL;
    if (nargs < 1 || nargs > 2 || !PyBytes_Check(args[0]) ||
        (nargs == 2 && args[1] != Py_None && !PyUnicode_Check(args[1]))) {
        PyErr_Format(PyExc_TypeError, "%s(text: bytes, directory: str | None = None)", name);
        return -1;
    }
    if (nargs == 2 && args[1] != Py_None &&
        (*directory = PyUnicode_EncodeFSDefault(args[1])) == NULL) {
        return -1;
    }
    return 0;
}

/* Parses text (bytes), relative dirs starting at directory (bytes or
 * NULL), into *table; returns the list of errors (empty when it loaded;
 * *table is then filled) or NULL with an exception. */
static PyObject *
parse(PyObject *text, PyObject *directory, mt_rules_table *table, int *loaded)
{
    char *data;
    Py_ssize_t len;
    mt_rules_errors *errors = NULL;
    PyObject *result = NULL;
    const char *where = directory ? PyBytes_AS_STRING(directory) : NULL;
    *loaded = 0;
    if (PyBytes_AsStringAndSize(text, &data, &len) < 0) {
        return NULL;
    }
    if ((errors = PyMem_RawMalloc(sizeof *errors)) == NULL) {
        return PyErr_NoMemory();
    }
    /* The parser touches no Python object (rules.h); text and directory
     * are immutable and referenced by the caller. */
    PyThreadState *saved = PyEval_SaveThread();
    int rc = mt_rules_parse(data, (size_t)len, where, table, errors);
    PyEval_RestoreThread(saved);
    if (rc == -2) {
        PyErr_NoMemory();
        goto done;
    }
    *loaded = rc == 0;
    result = errors_list(errors);
    if (result == NULL && *loaded) {
        mt_rules_table_free(table);
        *loaded = 0;
    }
done:
    PyMem_RawFree(errors);
    return result;
}

/* In a kernel, the guard judges the table's budget (apply: takes it).
 * Returns 0 when it does or there is no budget or no guard; else a new
 * one-error list saying why, at budget:, in *refusal; -1 with an
 * exception. */
static int
judge_budget(PyObject *module, const mt_rules_table *t, int apply, PyObject **refusal)
{
    mt_policy *p = policy_of(module);
    char problem[MT_RULES_MESSAGE_BYTES];
    *refusal = NULL;
    int has_budget = t->budget.kind != MT_LEVEL_UNSET;
    if ((!has_budget && t->swap < 0) || p->budget_judge == NULL ||
        p->budget_judge(module, has_budget ? &t->budget : NULL, t->swap, apply, problem,
                        sizeof problem) == 0) {
        return 0;
    }
    /* At budget: when the file gives one, else at the swap: that changed it. */
    *refusal =
        Py_BuildValue("[(iiN)]", has_budget ? t->budget_line : t->swap_line,
                      has_budget ? t->budget_column : t->swap_column,
                      PyUnicode_FromFormat("%s: %s", has_budget ? "budget" : "swap", problem));
    return *refusal ? 0 : -1;
}

PyDoc_STRVAR(mt_policy_read__doc__,
             "rules_read(path) -> bytes: a rules file's text, read only from a regular file, "
             "without blocking, and at most one byte more than a rules file may hold; ValueError "
             "saying why otherwise.");
static PyObject *
mt_policy_read(PyObject *Py_UNUSED(module), PyObject *path)
{
    PyObject *encoded = NULL, *result = NULL;
    char problem[MT_RULES_MESSAGE_BYTES], *text = NULL;
    size_t len = 0;
    if (!PyUnicode_FSConverter(path, &encoded)) {
        return NULL;
    }
    int rc = mt_rules_read_file(PyBytes_AS_STRING(encoded), &text, &len, problem, sizeof problem);
    if (rc == -2) {
        PyErr_NoMemory();
    }
    else if (rc < 0) {
        PyErr_SetString(PyExc_ValueError, problem);
    }
    else {
        result = PyBytes_FromStringAndSize(text, (Py_ssize_t)len);
    }
    free(text);
    Py_DECREF(encoded);
    return result;
}

PyDoc_STRVAR(mt_policy_check__doc__,
             "rules_check(text: bytes, directory=None) -> [(line, column, message)]: validate a "
             "rules file, whose relative dir: values start at directory (default: the working "
             "directory); [] when valid.  In a kernel the guard also judges its budget.  Loads "
             "nothing.");
static PyObject *
mt_policy_check(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    mt_rules_table table;
    PyObject *directory, *refusal = NULL;
    int loaded;
    if (text_and_directory(args, nargs, "rules_check", &directory) < 0) {
        return NULL;
    }
    PyObject *errors = parse(args[0], directory, &table, &loaded);
    Py_XDECREF(directory);
    if (loaded) {
        int rc = judge_budget(module, &table, 0, &refusal);
        mt_rules_table_free(&table);
        if (rc < 0 || refusal != NULL) {
            Py_DECREF(errors);
            return refusal;
        }
    }
    return errors;
}

PyDoc_STRVAR(mt_policy_load__doc__,
             "rules_load(text: bytes, directory=None) -> [(line, column, message)]: with no "
             "errors the rules, and in a kernel their budget, replace those in force; with "
             "errors (as rules_check finds them) nothing changes.");
static PyObject *
mt_policy_load(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    mt_policy *p = policy_of(module);
    mt_rules_table table;
    PyObject *directory, *refusal = NULL;
    int loaded, enabled = p->enabled;
    if (text_and_directory(args, nargs, "rules_load", &directory) < 0) {
        return NULL;
    }
    PyObject *errors = parse(args[0], directory, &table, &loaded);
    Py_XDECREF(directory);
    if (!loaded) {
        return errors;
    }
    /* Everything that can fail comes before the budget is taken, and the
     * swap after it cannot fail: the file applies whole or not at all. */
    long long *fired = malloc(sizeof *fired * (size_t)(table.len ? table.len : 1));
    if (fired == NULL) {
        mt_rules_table_free(&table);
        Py_DECREF(errors);
        return PyErr_NoMemory();
    }
    if (judge_budget(module, &table, 1, &refusal) < 0 || refusal != NULL) {
        free(fired);
        mt_rules_table_free(&table);
        Py_DECREF(errors);
        return refusal;
    }
    for (int i = 0; i < table.len; i++) {
        fired[i] = -1;
    }
    mt_policy_free(p);
    p->table = table;
    p->last_fired = fired;
    p->enabled = enabled;
    return errors;
}

PyDoc_STRVAR(mt_policy_clear__doc__, "rules_clear(): no rules in force.");
static PyObject *
mt_policy_clear(PyObject *module, PyObject *Py_UNUSED(unused))
{
    mt_policy *p = policy_of(module);
    int enabled = p->enabled;
    mt_policy_free(p);
    p->enabled = enabled;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(mt_policy_enable__doc__, "rules_enable(flag): let the rules fire, or not.");
static PyObject *
mt_policy_enable(PyObject *module, PyObject *flag)
{
    int on = PyObject_IsTrue(flag);
    if (on < 0) {
        return NULL;
    }
    policy_of(module)->enabled = on;
    Py_RETURN_NONE;
}

/* ---- the table as data ----------------------------------------------- */

static PyObject *
level_value(const mt_rules_level *l)
{
    switch (l->kind) {
    case MT_LEVEL_BYTES:
        return Py_BuildValue("(sL)", "bytes", l->bytes);
    case MT_LEVEL_PERCENT:
        return Py_BuildValue("(sd)", "percent", l->percent);
    case MT_LEVEL_OFF:
        return Py_BuildValue("(sO)", "off", Py_None);
    default:
        Py_RETURN_NONE;
    }
}

static PyObject *
strings_value(const mt_rules_strings *s)
{
    PyObject *list = PyList_New(s->len);
    for (int i = 0; list != NULL && i < s->len; i++) {
        PyObject *item =
            PyUnicode_DecodeUTF8(s->items[i], (Py_ssize_t)strlen(s->items[i]), "replace");
        if (item == NULL) {
            Py_CLEAR(list);
            break;
        }
        PyList_SET_ITEM(list, i, item);
    }
    return list;
}

static PyObject *
text_or_none(const char *s)
{
    if (s == NULL) {
        Py_RETURN_NONE;
    }
    return PyUnicode_DecodeUTF8(s, (Py_ssize_t)strlen(s), "replace");
}

static PyObject *
count_or_none(long long n)
{
    if (n < 0) {
        Py_RETURN_NONE;
    }
    return PyLong_FromLongLong(n);
}

/* The options the action takes, as %shrink's keyword names; only those the
 * rule gave (%shrink owns the defaults). */
static PyObject *
options_dict(const mt_rule *r)
{
    PyObject *d = PyDict_New();
    if (d == NULL || (r->codec && mt_set(d, "codec", text_or_none(r->codec)) < 0) ||
        (r->level >= 0 && mt_set(d, "level", PyLong_FromLong(r->level)) < 0) ||
        (r->rtol >= 0 && mt_set(d, "rtol", PyFloat_FromDouble(r->rtol)) < 0) ||
        (r->to && mt_set(d, "to", text_or_none(r->to)) < 0) ||
        (r->dir && mt_set(d, "dir", text_or_none(r->dir)) < 0) ||
        (r->keep_in_memory && mt_set(d, "keep_in_memory", Py_NewRef(Py_True)) < 0) ||
        (r->keep_for_reattach && mt_set(d, "keep_for_reattach", Py_NewRef(Py_True)) < 0)) {
        Py_XDECREF(d);
        return NULL;
    }
    return d;
}

static PyObject *
rule_dict(const mt_rule *r)
{
    PyObject *when = NULL, *match = NULL, *d = PyDict_New();
    if (d == NULL || (when = PyDict_New()) == NULL || (match = PyDict_New()) == NULL ||
        (r->cell_peak >= 0 && mt_set(when, "cell_peak", PyLong_FromLongLong(r->cell_peak)) < 0) ||
        (r->cell_retained >= 0 &&
         mt_set(when, "cell_retained", PyLong_FromLongLong(r->cell_retained)) < 0) ||
        (r->memory_above.kind && mt_set(when, "memory_above", level_value(&r->memory_above)) < 0) ||
        (r->until.kind && mt_set(when, "until", level_value(&r->until)) < 0) ||
        (r->idle_for >= 0 && mt_set(when, "idle_for", PyLong_FromLongLong(r->idle_for)) < 0) ||
        (r->created && mt_set(when, "created", Py_NewRef(Py_True)) < 0) ||
        (r->children_over >= 0 &&
         mt_set(when, "children_over", PyLong_FromLongLong(r->children_over)) < 0) ||
        (r->types.len && mt_set(match, "type", strings_value(&r->types)) < 0) ||
        (r->dtypes.len && mt_set(match, "dtype", strings_value(&r->dtypes)) < 0) ||
        (r->names.len && mt_set(match, "name", strings_value(&r->names)) < 0) ||
        (r->min_size > 0 && mt_set(match, "min_size", PyLong_FromLongLong(r->min_size)) < 0) ||
        mt_set(d, "name", text_or_none(r->name)) < 0 ||
        mt_set(d, "line", PyLong_FromLong(r->line)) < 0 ||
        PyDict_SetItemString(d, "when", when) < 0 || PyDict_SetItemString(d, "match", match) < 0 ||
        mt_set(d, "order", PyUnicode_FromString(mt_rules_order_name(r->order))) < 0 ||
        mt_set(d, "do", PyUnicode_FromString(mt_rules_action_name(r->action))) < 0 ||
        mt_set(d, "options", options_dict(r)) < 0 ||
        mt_set(d, "cooldown", PyLong_FromLongLong(r->cooldown)) < 0 ||
        mt_set(d, "max_per_cell", PyLong_FromLongLong(r->max_per_cell)) < 0 ||
        mt_set(d, "allow_delete", PyBool_FromLong(r->allow_delete)) < 0) {
        Py_CLEAR(d);
    }
    Py_XDECREF(when);
    Py_XDECREF(match);
    return d;
}

PyDoc_STRVAR(mt_policy_table__doc__,
             "rules_table() -> dict | None: the rules in force (version, budget, notice, protect, "
             "rules, enabled); None when no rules are loaded.");
static PyObject *
mt_policy_table(PyObject *module, PyObject *Py_UNUSED(unused))
{
    mt_policy *p = policy_of(module);
    if (p->table.version == 0) {
        Py_RETURN_NONE;
    }
    PyObject *rules = PyList_New(p->table.len), *d = NULL;
    for (int i = 0; rules != NULL && i < p->table.len; i++) {
        PyObject *r = rule_dict(&p->table.rules[i]);
        if (r == NULL) {
            goto error;
        }
        PyList_SET_ITEM(rules, i, r);
    }
    if (rules == NULL || (d = PyDict_New()) == NULL ||
        mt_set(d, "version", PyLong_FromLong(p->table.version)) < 0 ||
        mt_set(d, "budget", level_value(&p->table.budget)) < 0 ||
        mt_set(d, "notice", level_value(&p->table.notice)) < 0 ||
        mt_set(d, "swap", p->table.swap < 0 ? Py_NewRef(Py_None) : PyBool_FromLong(p->table.swap)) <
            0 ||
        mt_set(d, "thrashing",
               p->table.thrash_stop < 0
                   ? Py_NewRef(Py_None)
                   : PyUnicode_FromString(p->table.thrash_stop ? "stop" : "warn")) < 0 ||
        mt_set(d, "protect", strings_value(&p->table.protect)) < 0 ||
        mt_set(d, "enabled", PyBool_FromLong(p->enabled)) < 0 ||
        PyDict_SetItemString(d, "rules", rules) < 0) {
        goto error;
    }
    Py_DECREF(rules);
    return d;
error:
    Py_XDECREF(rules);
    Py_XDECREF(d);
    return NULL;
}

PyObject *
mt_policy_refuse_level(const char *text, int percent)
{
    char problem[MT_RULES_PROBLEM_MAX];
    mt_rules_level_problem(text, percent, problem, sizeof problem);
    PyErr_SetString(PyExc_ValueError, problem);
    return NULL;
}

PyDoc_STRVAR(mt_policy_parse_level__doc__,
             "parse_level(text) -> ('bytes', n) | ('percent', p): a size or percentage as rules "
             "files write it; ValueError otherwise.");
static PyObject *
mt_policy_parse_level(PyObject *module, PyObject *text)
{
    mt_rules_level level;
    const char *s = PyUnicode_AsUTF8(text);
    if (s == NULL) {
        return NULL;
    }
    if (mt_rules_parse_level(s, &level) < 0) {
        return mt_policy_refuse_level(s, 1);
    }
    return level_value(&level);
}

PyDoc_STRVAR(mt_policy_parse_size__doc__,
             "parse_size(text) -> bytes: a size as the magics and rules files write it (512MiB, "
             "1.5G); ValueError otherwise.");
static PyObject *
mt_policy_parse_size(PyObject *Py_UNUSED(module), PyObject *text)
{
    long long bytes;
    const char *s = PyUnicode_AsUTF8(text);
    if (s == NULL) {
        return NULL;
    }
    if (mt_rules_parse_size(s, &bytes) < 0) {
        return mt_policy_refuse_level(s, 0);
    }
    return PyLong_FromLongLong(bytes);
}

PyDoc_STRVAR(mt_policy_format_size__doc__,
             "format_size(bytes, signed=False) -> str: a size for people in binary units "
             "('1.9 GiB', '760 MiB', '0 B'); signed puts '+' before a positive one.");
static PyObject *
mt_policy_format_size(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "format_size(bytes, signed=False)");
        return NULL;
    }
    long long bytes = PyLong_AsLongLong(args[0]);
    int sign = nargs == 2 ? PyObject_IsTrue(args[1]) : 0;
    if ((bytes == -1 && PyErr_Occurred()) || sign < 0) {
        return NULL;
    }
    char text[MT_RULES_SIZE_TEXT];
    mt_rules_format_size(bytes, sign, text, sizeof text);
    return PyUnicode_FromString(text);
}

PyDoc_STRVAR(mt_policy_closest__doc__,
             "closest(word, choices) -> str | None: the choice a mistyped word most likely "
             "meant, or None when none is close.");
static PyObject *
mt_policy_closest(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *seq = NULL, *result = NULL;
    const char **names = NULL;
    if (nargs != 2 || !PyUnicode_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "closest(word, choices): word is a str");
        return NULL;
    }
    const char *word = PyUnicode_AsUTF8(args[0]);
    if (word == NULL ||
        (seq = PySequence_Fast(args[1], "closest: choices is a sequence of str")) == NULL) {
        return NULL;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    if (n > INT_MAX || (names = PyMem_Calloc((size_t)n + 1, sizeof *names)) == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *choice = PySequence_Fast_GET_ITEM(seq, i);
        if (!PyUnicode_Check(choice)) {
            PyErr_SetString(PyExc_TypeError, "closest: choices is a sequence of str");
            goto done;
        }
        if ((names[i] = PyUnicode_AsUTF8(choice)) == NULL) {
            goto done;
        }
    }
    const char *guess = mt_rules_closest(word, names, (int)n);
    result = guess ? PyUnicode_FromString(guess) : Py_NewRef(Py_None);
done:
    PyMem_Free(names);
    Py_DECREF(seq);
    return result;
}

/* ---- evaluation ------------------------------------------------------ */

typedef struct {
    Py_ssize_t entry;
    long long bytes, idle, touched;
} candidate;

typedef struct {
    mt_state *st;
    const mt_cell_record *record; /* NULL before the first measured cell */
    long long cell, rss;
    long long children; /* what the descendants own; -1 until a rule asks */
} moment;

/* The descendants' private memory, read once per evaluation (a few /proc
 * reads each), and only when a rule looks at it. */
static long long
children_owned(moment *m)
{
    if (m->children < 0) {
        static const mt_probe_children_mark everyone; /* none is older than it */
        mt_probe_children_use kids;
        mt_probe_children_now(m->st->probe, &everyone, &kids);
        m->children = kids.owned;
    }
    return m->children;
}

static long long
level_bytes(moment *m, const mt_rules_level *l)
{
    if (l->kind == MT_LEVEL_BYTES) {
        return l->bytes;
    }
    mt_policy *p = &m->st->policy;
    double now = mt_monotonic_seconds();
    if (p->limit_read_at == 0 || now - p->limit_read_at > MT_POLICY_LIMIT_SECONDS) {
        mt_probe_limit limit;
        p->limit = mt_probe_read_limit(m->st->probe, &limit) == 0 ? limit.limit : -1;
        p->limit_read_at = now;
    }
    return p->limit > 0 ? (long long)((double)p->limit * l->percent / 100.0) : -1;
}

/* The triggers that do not look at variables. */
static int
kernel_triggers_hold(moment *m, const mt_rule *r)
{
    const mt_cell_record *c = m->record;
    if (r->cell_peak >= 0 && !(c && c->peak_rss >= 0 && c->rss_before >= 0 &&
                               c->peak_rss - c->rss_before >= r->cell_peak)) {
        return 0;
    }
    if (r->cell_retained >= 0 && !(c && c->rss_after >= 0 && c->rss_before >= 0 &&
                                   c->rss_after - c->rss_before >= r->cell_retained)) {
        return 0;
    }
    if (r->memory_above.kind) {
        long long above = level_bytes(m, &r->memory_above);
        if (above < 0 || m->rss < 0 || m->rss < above) {
            return 0;
        }
    }
    if (r->children_over >= 0 && children_owned(m) <= r->children_over) {
        return 0;
    }
    return 1;
}

static int
any_glob(const mt_rules_strings *patterns, const char *text)
{
    for (int i = 0; i < patterns->len; i++) {
        if (fnmatch(patterns->items[i], text, 0) == 0) {
            return 1;
        }
    }
    return 0;
}

/* type: matches the class's name or its dotted name (numpy.ndarray). */
static int
type_matches(const mt_rules_strings *types, PyTypeObject *type)
{
    const char *full = type->tp_name, *dot = strrchr(full, '.');
    if (any_glob(types, full) || (dot && any_glob(types, dot + 1))) {
        return 1;
    }
    PyObject *module = PyObject_GetAttrString((PyObject *)type, "__module__");
    int found = 0;
    if (module != NULL && PyUnicode_Check(module)) {
        PyObject *qualified = PyUnicode_FromFormat("%U.%s", module, dot ? dot + 1 : full);
        const char *q = qualified ? PyUnicode_AsUTF8(qualified) : NULL;
        found = q && any_glob(types, q);
        Py_XDECREF(qualified);
    }
    Py_XDECREF(module);
    PyErr_Clear(); /* a type without a readable module just does not match */
    return found;
}

/* obj.name, or NULL without an exception when obj has none (Python 3.11
 * lacks PyObject_GetOptionalAttrString).  -1 with an exception. */
static int
optional_attr(PyObject *obj, const char *name, PyObject **out)
{
    *out = PyObject_GetAttrString(obj, name);
    if (*out == NULL && PyErr_ExceptionMatches(PyExc_AttributeError)) {
        PyErr_Clear();
        return 0;
    }
    return *out == NULL ? -1 : 0;
}

/* dtype: an array's dtype, or any of a frame's column dtypes.  -1 with an
 * exception. */
static int
dtype_matches(const mt_rules_strings *dtypes, PyObject *obj)
{
    int found = 0;
    PyObject *dtype = NULL, *all = NULL, *text = NULL;
    if (optional_attr(obj, "dtype", &dtype) < 0) {
        goto error;
    }
    if (dtype != NULL) {
        if ((text = PyObject_Str(dtype)) == NULL) {
            goto error;
        }
        const char *s = PyUnicode_AsUTF8(text);
        found = s && any_glob(dtypes, s);
        goto done;
    }
    if (optional_attr(obj, "dtypes", &all) < 0) {
        goto error;
    }
    if (all != NULL) {
        /* pandas: a Series of dtypes; its unique values as text. */
        PyObject *iter = PyObject_GetIter(all);
        PyObject *item;
        if (iter == NULL) {
            goto error;
        }
        while (!found && (item = PyIter_Next(iter)) != NULL) {
            PyObject *s = PyObject_Str(item);
            const char *u = s ? PyUnicode_AsUTF8(s) : NULL;
            found = u && any_glob(dtypes, u);
            Py_XDECREF(s);
            Py_DECREF(item);
        }
        Py_DECREF(iter);
        if (PyErr_Occurred()) {
            goto error;
        }
    }
done:
    Py_XDECREF(dtype);
    Py_XDECREF(all);
    Py_XDECREF(text);
    return found;
error:
    found = -1;
    goto done;
}

/* Whether the ledger's variable e is selected by r: cheap tests on the
 * ledger's figures first, the object itself last.  -1 with an exception. */
static int
selects(moment *m, const mt_rules_table *t, int rule, const mt_ledger_variable *e, candidate *out)
{
    const mt_rule *r = &t->rules[rule];
    long long touched = e->created;
    touched = e->rebound > touched ? e->rebound : touched;
    touched = e->used > touched ? e->used : touched;
    long long idle = m->cell >= 0 && touched >= 0 ? m->cell - touched : 0;
    if (r->min_size > 0 && e->bytes < r->min_size) {
        return 0;
    }
    if (r->idle_for >= 0 && idle < r->idle_for) {
        return 0;
    }
    if (r->created && (m->cell < 0 || !(e->created == m->cell || e->rebound == m->cell))) {
        return 0;
    }
    const char *name = PyUnicode_AsUTF8(e->name);
    if (name == NULL) {
        return -1;
    }
    if ((r->names.len && !any_glob(&r->names, name)) || mt_rules_protected(t, name)) {
        return 0;
    }
    for (Py_ssize_t k = 0; k < m->st->policy.acted_len; k++) {
        const mt_policy_acted *a = &m->st->policy.acted[k];
        if (a->rule == rule && a->identity == e->identity && strcmp(a->name, name) == 0) {
            return 0;
        }
    }
    if (r->types.len || r->dtypes.len) {
        PyObject *obj = mt_ledger_bound(&m->st->ledger, e->name);
        if (obj == NULL) {
            return PyErr_Occurred() ? -1 : 0;
        }
        Py_INCREF(obj);
        int ok = !r->types.len || type_matches(&r->types, Py_TYPE(obj));
        if (ok && r->dtypes.len) {
            ok = dtype_matches(&r->dtypes, obj);
        }
        Py_DECREF(obj);
        if (ok <= 0) {
            return ok;
        }
    }
    out->bytes = e->bytes;
    out->idle = idle;
    out->touched = touched;
    return 1;
}

static int
compare_candidates(const void *a, const void *b, void *order)
{
    const candidate *x = a, *y = b;
    long long kx, ky;
    switch (*(const mt_rules_order *)order) {
    case MT_ORDER_IDLE:
        kx = x->idle, ky = y->idle;
        break;
    case MT_ORDER_NEWEST:
        kx = x->touched, ky = y->touched;
        break;
    default:
        kx = x->bytes, ky = y->bytes;
    }
    if (kx != ky) {
        return kx > ky ? -1 : 1;
    }
    return x->bytes != y->bytes ? (x->bytes > y->bytes ? -1 : 1) : 0;
}

/* The variables r acts on, ordered and at most max_per_cell: a list of
 * (name, bytes).  NULL with an exception. */
static PyObject *
select_variables(moment *m, const mt_rules_table *t, int rule, candidate **scratch, Py_ssize_t *cap)
{
    const mt_rule *r = &t->rules[rule];
    const mt_ledger *l = &m->st->ledger;
    Py_ssize_t n = 0;
    for (Py_ssize_t i = 0; i < mt_ledger_count(l); i++) {
        candidate c;
        mt_ledger_variable e = mt_ledger_variable_at(l, i);
        int hit = selects(m, t, rule, &e, &c);
        if (hit < 0) {
            return NULL;
        }
        if (hit) {
            if (mt_reserve((void **)scratch, cap, n + 1, sizeof **scratch) < 0) {
                return NULL;
            }
            c.entry = i;
            (*scratch)[n++] = c;
        }
    }
    mt_rules_order order = r->order;
    qsort_r(*scratch, (size_t)n, sizeof **scratch, compare_candidates, &order);
    if (n > r->max_per_cell) {
        n = (Py_ssize_t)r->max_per_cell;
    }
    PyObject *list = PyList_New(n);
    for (Py_ssize_t k = 0; list != NULL && k < n; k++) {
        mt_ledger_variable e = mt_ledger_variable_at(l, (*scratch)[k].entry);
        PyObject *item = Py_BuildValue("(OL)", e.name, e.bytes);
        if (item == NULL) {
            Py_CLEAR(list);
            break;
        }
        PyList_SET_ITEM(list, k, item);
    }
    return list;
}

/* The entries of sized (mt_ledger_output_entries) r acts on: a list of (number,
 * bytes), at least min_size, at most max_per_cell.  NULL with an exception. */
static PyObject *
select_output_entries(const mt_rule *r, PyObject *sized)
{
    PyObject *list = PyList_New(0);
    for (Py_ssize_t i = 0; list != NULL && i < PyList_GET_SIZE(sized); i++) {
        PyObject *bytes = PyTuple_GET_ITEM(PyList_GET_ITEM(sized, i), 0);
        PyObject *key = PyTuple_GET_ITEM(PyList_GET_ITEM(sized, i), 1);
        if (PyLong_AsLongLong(bytes) < r->min_size || PyList_GET_SIZE(list) >= r->max_per_cell) {
            break; /* biggest first: the rest are smaller */
        }
        PyObject *item = PyTuple_Pack(2, key, bytes);
        if (item == NULL || PyList_Append(list, item) < 0) {
            Py_XDECREF(item);
            Py_CLEAR(list);
            break;
        }
        Py_DECREF(item);
    }
    return list;
}

static PyObject *
action_dict(moment *m, const mt_rule *r, PyObject *targets)
{
    long long until = r->until.kind ? level_bytes(m, &r->until) : -1;
    PyObject *d = PyDict_New();
    if (d == NULL || mt_set(d, "rule", text_or_none(r->name)) < 0 ||
        mt_set(d, "do", PyUnicode_FromString(mt_rules_action_name(r->action))) < 0 ||
        PyDict_SetItemString(d, "targets", targets) < 0 ||
        mt_set(d, "options", options_dict(r)) < 0 || mt_set(d, "until", count_or_none(until)) < 0 ||
        mt_set(d, "allow_delete", PyBool_FromLong(r->allow_delete)) < 0 ||
        mt_set(d, "cell", count_or_none(m->cell)) < 0 ||
        mt_set(d, "rss", count_or_none(m->rss)) < 0 ||
        mt_set(d, "children", count_or_none(r->children_over >= 0 ? m->children : -1)) < 0) {
        Py_XDECREF(d);
        return NULL;
    }
    return d;
}

/* A notice or collect with no selector speaks about the kernel as a whole;
 * every other rule needs something to act on. */
static int
needs_targets(const mt_rule *r)
{
    if (r->action == MT_DO_COLLECT) {
        return 0;
    }
    if (r->action == MT_DO_NOTICE) {
        return r->types.len || r->dtypes.len || r->names.len || r->min_size > 0 ||
               r->idle_for >= 0 || r->created;
    }
    return 1;
}

PyDoc_STRVAR(mt_policy_evaluate__doc__,
             "policy_evaluate(dry_run=False) -> [action]: what the rules in force do after the "
             "cell just measured.  Each action: rule, do, targets (list of (name, bytes); for "
             "clear_output_cache (number, bytes)), options (as %shrink takes them), until (bytes, "
             "or None), allow_delete, cell, rss, children (what the descendants own, for a "
             "children_over rule; else None).  Unless dry_run, a rule that fires starts its "
             "cooldown, and rules that are off return nothing.");
static PyObject *
mt_policy_evaluate(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    mt_state *st = mt_get_state(module);
    mt_policy *p = &st->policy;
    candidate *scratch = NULL;
    Py_ssize_t cap = 0;
    PyObject *actions = NULL, *targets = NULL, *sized_outputs = NULL;
    MT_ASSERT_GIL();
    int dry_run = nargs > 0 ? PyObject_IsTrue(args[0]) : 0;
    if (nargs > 1 || dry_run < 0) {
        PyErr_SetString(PyExc_TypeError, "policy_evaluate(dry_run=False)");
        return NULL;
    }
    /* A dry run says what the rules would do even while they are off. */
    if ((actions = PyList_New(0)) == NULL || (!p->enabled && !dry_run) || p->table.len == 0) {
        return actions;
    }
    moment m = {.st = st, .record = NULL, .cell = -1, .rss = -1, .children = -1};
    if (st->cells.len > 0) {
        m.record = &st->cells.items[st->cells.len - 1];
        m.cell = m.record->cell;
        m.rss = m.record->rss_after;
    }
    for (int i = 0; i < p->table.len; i++) {
        const mt_rule *r = &p->table.rules[i];
        if (p->last_fired[i] >= 0 && m.cell >= 0 && m.cell - p->last_fired[i] <= r->cooldown) {
            continue;
        }
        if (!kernel_triggers_hold(&m, r)) {
            continue;
        }
        if (r->action == MT_DO_CLEAR_OUTPUT_CACHE) {
            if (sized_outputs == NULL &&
                (sized_outputs = mt_ledger_output_entries(&st->ledger)) == NULL) {
                goto error;
            }
            targets = select_output_entries(r, sized_outputs);
        }
        else if (needs_targets(r)) {
            targets = select_variables(&m, &p->table, i, &scratch, &cap);
        }
        else {
            targets = PyList_New(0);
        }
        if (targets == NULL) {
            goto error;
        }
        if (PyList_GET_SIZE(targets) > 0 || !needs_targets(r)) {
            PyObject *action = action_dict(&m, r, targets);
            if (action == NULL || PyList_Append(actions, action) < 0) {
                Py_XDECREF(action);
                goto error;
            }
            Py_DECREF(action);
            if (!dry_run) {
                p->last_fired[i] = m.cell;
            }
        }
        Py_CLEAR(targets);
    }
    PyMem_RawFree(scratch);
    Py_XDECREF(sized_outputs);
    return actions;
error:
    PyMem_RawFree(scratch);
    Py_XDECREF(sized_outputs);
    Py_XDECREF(targets);
    Py_XDECREF(actions);
    return NULL;
}

PyDoc_STRVAR(mt_policy_acted_on__doc__,
             "policy_acted_on(rule, names): the rule's action ran on these names between cells; "
             "the ledger adopts their new objects (memtamer rebound them, not the next cell) and "
             "sizes them again, rebound or changed in place (the firing's one call back into C), "
             "and the rule leaves those objects alone.");
static PyObject *
mt_policy_acted_on(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    mt_state *st = mt_get_state(module);
    mt_policy *p = &st->policy;
    MT_ASSERT_GIL();
    if (nargs != 2 || !PyUnicode_Check(args[0]) || !PyList_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "policy_acted_on(rule: str, names: list)");
        return NULL;
    }
    const char *rule_name = PyUnicode_AsUTF8(args[0]);
    if (rule_name == NULL || mt_ledger_adopt(&st->ledger, args[1]) < 0) {
        return NULL;
    }
    int rule = 0;
    while (rule < p->table.len && strcmp(p->table.rules[rule].name, rule_name) != 0) {
        rule++;
    }
    if (rule == p->table.len) {
        Py_RETURN_NONE; /* the rules were replaced meanwhile */
    }
    /* Objects rebound or deleted since: forget them, so the list stays as
     * long as what is still bound. */
    Py_ssize_t kept = 0;
    for (Py_ssize_t k = 0; k < p->acted_len; k++) {
        PyObject *name = PyUnicode_FromString(p->acted[k].name);
        PyObject *value = name ? mt_ledger_bound(&st->ledger, name) : NULL;
        Py_XDECREF(name);
        if (PyErr_Occurred()) {
            return NULL;
        }
        if (value != NULL && (uintptr_t)value == p->acted[k].identity) {
            p->acted[kept++] = p->acted[k];
        }
        else {
            free(p->acted[k].name);
        }
    }
    p->acted_len = kept;
    for (Py_ssize_t k = 0; k < PyList_GET_SIZE(args[1]); k++) {
        PyObject *name = PyList_GET_ITEM(args[1], k);
        PyObject *value = PyUnicode_Check(name) ? mt_ledger_bound(&st->ledger, name) : NULL;
        const char *text = PyUnicode_Check(name) ? PyUnicode_AsUTF8(name) : NULL;
        if (value == NULL || text == NULL) {
            if (PyErr_Occurred()) {
                return NULL;
            }
            continue;
        }
        char *copy = malloc(strlen(text) + 1);
        if (copy == NULL ||
            mt_reserve((void **)&p->acted, &p->acted_cap, p->acted_len + 1, sizeof *p->acted) < 0) {
            free(copy);
            return copy ? NULL : PyErr_NoMemory();
        }
        strcpy(copy, text);
        p->acted[p->acted_len++] = (mt_policy_acted){rule, copy, (uintptr_t)value};
    }
    Py_RETURN_NONE;
}

/* The _core methods of this file; module.c adds them at init. */
PyMethodDef mt_policy_methods[] = {
    {"rules_read", mt_policy_read, METH_O, mt_policy_read__doc__},
    {"rules_check", (PyCFunction)(void (*)(void))mt_policy_check, METH_FASTCALL,
     mt_policy_check__doc__},
    {"rules_load", (PyCFunction)(void (*)(void))mt_policy_load, METH_FASTCALL,
     mt_policy_load__doc__},
    {"rules_clear", mt_policy_clear, METH_NOARGS, mt_policy_clear__doc__},
    {"rules_table", mt_policy_table, METH_NOARGS, mt_policy_table__doc__},
    {"rules_enable", mt_policy_enable, METH_O, mt_policy_enable__doc__},
    {"policy_evaluate", (PyCFunction)(void (*)(void))mt_policy_evaluate, METH_FASTCALL,
     mt_policy_evaluate__doc__},
    {"policy_acted_on", (PyCFunction)(void (*)(void))mt_policy_acted_on, METH_FASTCALL,
     mt_policy_acted_on__doc__},
    {"parse_level", mt_policy_parse_level, METH_O, mt_policy_parse_level__doc__},
    {"parse_size", mt_policy_parse_size, METH_O, mt_policy_parse_size__doc__},
    {"closest", (PyCFunction)(void (*)(void))mt_policy_closest, METH_FASTCALL,
     mt_policy_closest__doc__},
    {"format_size", (PyCFunction)(void (*)(void))mt_policy_format_size, METH_FASTCALL,
     mt_policy_format_size__doc__},
    {NULL, NULL, 0, NULL},
};
