/* rules: the YAML rules file -> mt_rules_table (rules.h).  Plain C: no
 * Python API, memory from malloc, safe without the GIL. */
#define _GNU_SOURCE
#include "memtamer/rules.h"

#include "memtamer/options.h"

#include <blosc.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml.h>

#define DEFAULT_MAX_PER_CELL 4
#define MAX_COUNT 1000000 /* cells, for idle_for and cooldown */

/* ---- sizes ----------------------------------------------------------- */

static const struct {
    const char *unit;
    long long scale;
} units[] = {
    {"", 1},
    {"b", 1},
    {"k", 1024LL},
    {"kb", 1000LL},
    {"kib", 1024LL},
    {"m", 1024LL * 1024},
    {"mb", 1000LL * 1000},
    {"mib", 1024LL * 1024},
    {"g", 1024LL * 1024 * 1024},
    {"gb", 1000LL * 1000 * 1000},
    {"gib", 1024LL * 1024 * 1024},
    {"t", 1024LL * 1024 * 1024 * 1024},
    {"tb", 1000LL * 1000 * 1000 * 1000},
    {"tib", 1024LL * 1024 * 1024 * 1024},
};

/* A decimal number without sign or exponent ("12", "1.5", ".5"); returns
 * the position after it, or NULL. */
static const char *
parse_number(const char *s, double *value)
{
    const char *p = s;
    int digits = 0;
    while (isdigit((unsigned char)*p)) {
        p++, digits++;
    }
    if (*p == '.') {
        p++;
        while (isdigit((unsigned char)*p)) {
            p++, digits++;
        }
    }
    if (digits == 0) {
        return NULL;
    }
    char buf[64];
    if ((size_t)(p - s) >= sizeof buf) {
        return NULL;
    }
    memcpy(buf, s, (size_t)(p - s));
    buf[p - s] = '\0';
    *value = strtod(buf, NULL);
    return p;
}

static const char *
skip_spaces(const char *p)
{
    while (*p == ' ' || *p == '\t') {
        p++;
    }
    return p;
}

/* 0 with *bytes set; -1 when text is not a size, -2 when it is one too
 * big for any memory, -3 when it is less than a byte (but not 0). */
static int
size_of(const char *text, long long *bytes)
{
    double value;
    const char *p = parse_number(skip_spaces(text), &value);
    if (p == NULL) {
        return -1;
    }
    p = skip_spaces(p);
    char unit[4];
    size_t n = 0;
    while (isalpha((unsigned char)*p)) {
        if (n == sizeof unit - 1) {
            return -1;
        }
        unit[n++] = (char)tolower((unsigned char)*p++);
    }
    unit[n] = '\0';
    if (*skip_spaces(p) != '\0') {
        return -1;
    }
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (strcmp(unit, units[i].unit) == 0) {
            double b = value * (double)units[i].scale;
            if (!(b < 9.2e18)) {
                return -2;
            }
            if (b > 0 && b < 1) {
                return -3;
            }
            *bytes = (long long)b;
            return 0;
        }
    }
    return -1;
}

int
mt_rules_parse_size(const char *text, long long *bytes)
{
    return size_of(text, bytes) < 0 ? -1 : 0;
}

void
mt_rules_format_size(long long bytes, int sign, char *buf, size_t n)
{
    static const char *const units[] = {"TiB", "GiB", "MiB", "KiB"};
    const char *mark = bytes < 0 ? "-" : sign ? "+" : "";
    double magnitude = bytes < 0 ? -(double)bytes : (double)bytes;
    for (int i = 0; i < 4; i++) {
        double scale = (double)(1LL << (10 * (4 - i)));
        /* 0.995 of a unit already reads as one: 1,073,549,312 B is
         * "1.0 GiB", not "1024 MiB". */
        if (magnitude >= scale * 0.995) {
            double value = magnitude / scale;
            snprintf(buf, n, value < 10 ? "%s%.1f %s" : "%s%.0f %s", mark, value, units[i]);
            return;
        }
    }
    snprintf(buf, n, "%s%.0f B", mark, magnitude);
}

int
mt_rules_parse_level(const char *text, mt_rules_level *out)
{
    double value;
    const char *p = parse_number(skip_spaces(text), &value);
    if (p != NULL && *(p = skip_spaces(p)) == '%') {
        if (*skip_spaces(p + 1) != '\0' || !(value > 0 && value <= 100)) {
            return -1;
        }
        out->kind = MT_LEVEL_PERCENT;
        out->percent = value;
        out->bytes = 0;
        return 0;
    }
    if (mt_rules_parse_size(text, &out->bytes) < 0) {
        return -1;
    }
    out->kind = MT_LEVEL_BYTES;
    out->percent = 0;
    return 0;
}

void
mt_rules_level_problem(const char *text, int percent, char *buf, size_t n)
{
    const char *p = skip_spaces(text);
    double value;
    const char *after = parse_number(p, &value);
    long long bytes;
    if (*p == '-') {
        snprintf(buf, n,
                 "'%.60s' is negative: a size is a positive number with an optional unit, like "
                 "512MiB, 1.5GiB, 800MB or 2G",
                 text);
    }
    else if (size_of(text, &bytes) == -2) {
        snprintf(buf, n, "'%.60s' is more than any memory limit: write a size like 8GiB or 512MiB",
                 text);
    }
    else if (size_of(text, &bytes) == -3) {
        snprintf(buf, n,
                 "'%.60s' is less than one byte: write a whole number of bytes or a larger "
                 "unit, like 512B or 1KiB",
                 text);
    }
    else if (percent && after != NULL && *skip_spaces(after) == '%') {
        snprintf(buf, n,
                 "'%.60s' is not a share of memory: write a percentage above 0 and at most 100, "
                 "like 80%%",
                 text);
    }
    else if (percent) {
        snprintf(buf, n,
                 "'%.60s' is neither a size nor a percentage: write e.g. 8GiB, 1500MiB or 80%%",
                 text);
    }
    else {
        snprintf(buf, n,
                 "'%.60s' is not a size: write a number with an optional unit, like 512MiB, "
                 "1.5GiB, 800MB or 2G",
                 text);
    }
}

/* ---- names ----------------------------------------------------------- */

static const char *const order_names[MT_ORDER_COUNT] = {"largest", "idle", "newest"};

const char *
mt_rules_action_name(mt_action a)
{
    return a >= 0 && a < MT_DO_COUNT ? mt_actions[a].name : "?";
}

const char *
mt_rules_order_name(mt_rules_order o)
{
    return o >= 0 && o < MT_ORDER_COUNT ? order_names[o] : "?";
}

int
mt_rules_protected(const mt_rules_table *t, const char *name)
{
    for (int i = 0; i < t->protect.len; i++) {
        if (fnmatch(t->protect.items[i], name, 0) == 0) {
            return 1;
        }
    }
    return 0;
}

/* ---- errors ---------------------------------------------------------- */

typedef struct {
    yaml_document_t *doc;
    const char *directory; /* where a relative dir: starts; NULL: the working directory */
    mt_rules_errors *errors;
    long long visits;
    int out_of_memory;
} ctx;

static void
add_error(mt_rules_errors *e, int line, int column, const char *fmt, va_list ap)
{
    if (e->len == MT_RULES_MAX_ERRORS) {
        e->more++;
        return;
    }
    mt_rules_error *err = &e->items[e->len++];
    err->line = line;
    err->column = column;
    vsnprintf(err->message, sizeof err->message, fmt, ap);
}

static void
error_at_mark(mt_rules_errors *e, yaml_mark_t mark, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    add_error(e, (int)mark.line + 1, (int)mark.column + 1, fmt, ap);
    va_end(ap);
}

static void
fail(ctx *c, const yaml_node_t *node, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    add_error(c->errors, (int)node->start_mark.line + 1, (int)node->start_mark.column + 1, fmt, ap);
    va_end(ap);
}

/* The one translator of libyaml's failures: its problem and the mark where
 * it saw it (0-based) become a 1-based error.  -2 when memory ran out. */
static int
yaml_failure(const yaml_parser_t *p, const char *text, size_t len, mt_rules_errors *e)
{
    if (p->error == YAML_MEMORY_ERROR) {
        return -2;
    }
    yaml_mark_t mark = p->problem_mark;
    if (p->error == YAML_READER_ERROR) {
        /* The reader reports a byte offset, not a mark. */
        memset(&mark, 0, sizeof mark);
        for (size_t i = 0; i < p->problem_offset && i < len; i++) {
            if (text[i] == '\n') {
                mark.line++, mark.column = 0;
            }
            else {
                mark.column++;
            }
        }
        error_at_mark(e, mark, "%s: a rules file is UTF-8 text; save it as UTF-8",
                      p->problem ? p->problem : "unreadable text");
        return -1;
    }
    const char *problem = p->problem ? p->problem : "cannot parse this";
    if (p->context != NULL) {
        error_at_mark(e, mark,
                      "YAML syntax: %s %s (line %zu): check the indentation, the ':' after "
                      "each key and the quotes around values with ':' or '#'",
                      problem, p->context, p->context_mark.line + 1);
    }
    else {
        error_at_mark(e, mark,
                      "YAML syntax: %s: check the indentation, the ':' after each key and "
                      "the quotes around values with ':' or '#'",
                      problem);
    }
    return -1;
}

/* ---- walking the document -------------------------------------------- */

static int
core_tag(const yaml_char_t *tag)
{
    static const char *const allowed[] = {YAML_NULL_TAG,  YAML_BOOL_TAG, YAML_STR_TAG, YAML_INT_TAG,
                                          YAML_FLOAT_TAG, YAML_SEQ_TAG,  YAML_MAP_TAG};
    for (size_t i = 0; i < sizeof allowed / sizeof allowed[0]; i++) {
        if (strcmp((const char *)tag, allowed[i]) == 0) {
            return 1;
        }
    }
    return 0;
}

/* Every node reached goes through here: aliases make one node reachable
 * many times, and the count of visits bounds the work whatever they do. */
static yaml_node_t *
visit(ctx *c, int index)
{
    yaml_node_t *node = yaml_document_get_node(c->doc, index);
    if (node == NULL) {
        return NULL;
    }
    if (++c->visits == MT_RULES_MAX_VISITS) {
        fail(c, node,
             "the document reaches more than %d values (anchors and aliases count "
             "each time they are used): a rules file needs far fewer; write the values out",
             MT_RULES_MAX_VISITS);
    }
    if (c->visits >= MT_RULES_MAX_VISITS) {
        return NULL;
    }
    if (node->tag != NULL && !core_tag(node->tag)) {
        fail(c, node, "tag '%s' is not allowed: a rules file holds plain values; remove the tag",
             (const char *)node->tag);
        return NULL;
    }
    return node;
}

static const char *
kind_name(const yaml_node_t *node)
{
    switch (node->type) {
    case YAML_SEQUENCE_NODE:
        return "a list";
    case YAML_MAPPING_NODE:
        return "a mapping";
    default:
        return "a value";
    }
}

/* Whether a scalar holds a NUL ("\0" in double quotes): C would read its
 * text as ending there, so "budget\0x" would be read as budget. */
static int
holds_nul(const yaml_node_t *node)
{
    return strlen((const char *)node->data.scalar.value) != node->data.scalar.length;
}

/* The scalar's text, or NULL with an error saying what was expected. */
static const char *
scalar(ctx *c, const yaml_node_t *node, const char *key, const char *expected)
{
    if (node->type != YAML_SCALAR_NODE) {
        fail(c, node, "%s: expected %s, not %s", key, expected, kind_name(node));
        return NULL;
    }
    if (holds_nul(node)) {
        fail(c, node, "%s: the value holds a NUL character (\\0): remove it", key);
        return NULL;
    }
    return (const char *)node->data.scalar.value;
}

/* A number or true/false: the scalar's text, which quotes would make text
 * ("1" is not 1), or NULL with an error. */
static const char *
unquoted(ctx *c, const yaml_node_t *node, const char *key, const char *expected)
{
    const char *s = scalar(c, node, key, expected);
    if (s != NULL && node->data.scalar.style != YAML_PLAIN_SCALAR_STYLE) {
        fail(c, node, "%s: '%.60s' is quoted, which makes it text, not %s: remove the quotes", key,
             s, expected);
        return NULL;
    }
    return s;
}

static char *
copy(ctx *c, const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d == NULL) {
        c->out_of_memory = 1;
        return NULL;
    }
    return memcpy(d, s, n);
}

static int
get_count(ctx *c, const yaml_node_t *node, const char *key, long long lo, long long hi,
          const char *example, long long *out)
{
    const char *s = unquoted(c, node, key, "a whole number");
    if (s == NULL) {
        return -1;
    }
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (end == s || *end != '\0' || errno) {
        fail(c, node, "%s: '%s' is not a whole number: write e.g. %s", key, s, example);
        return -1;
    }
    if (v < lo || v > hi) {
        fail(c, node, "%s: %lld is out of range: write a whole number from %lld to %lld, e.g. %s",
             key, v, lo, hi, example);
        return -1;
    }
    *out = v;
    return 0;
}

static int
get_bool(ctx *c, const yaml_node_t *node, const char *key, int *out)
{
    const char *s = unquoted(c, node, key, "true or false");
    if (s == NULL) {
        return -1;
    }
    if (strcmp(s, "true") == 0 || strcmp(s, "True") == 0) {
        *out = 1;
        return 0;
    }
    if (strcmp(s, "false") == 0 || strcmp(s, "False") == 0) {
        *out = 0;
        return 0;
    }
    fail(c, node, "%s: '%s' is not true or false: write %s: true", key, s, key);
    return -1;
}

static int
get_size(ctx *c, const yaml_node_t *node, const char *key, long long *out)
{
    const char *s = scalar(c, node, key, "a size such as 256MiB");
    if (s == NULL) {
        return -1;
    }
    if (mt_rules_parse_size(s, out) < 0) {
        char problem[MT_RULES_PROBLEM_MAX];
        mt_rules_level_problem(s, 0, problem, sizeof problem);
        fail(c, node, "%s: %s", key, problem);
        return -1;
    }
    return 0;
}

/* A size or a percentage; with allow_off, also "off". */
static int
get_level(ctx *c, const yaml_node_t *node, const char *key, int allow_off, mt_rules_level *out)
{
    const char *s = scalar(c, node, key, "a size or a percentage such as 80%");
    if (s == NULL) {
        return -1;
    }
    if (allow_off && strcmp(s, "off") == 0) {
        out->kind = MT_LEVEL_OFF;
        return 0;
    }
    if (mt_rules_parse_level(s, out) < 0) {
        char problem[MT_RULES_PROBLEM_MAX];
        mt_rules_level_problem(s, 1, problem, sizeof problem);
        fail(c, node, "%s: %s%s", key, problem, allow_off ? " (or off)" : "");
        return -1;
    }
    return 0;
}

static int
get_rtol(ctx *c, const yaml_node_t *node, double *out)
{
    const char *s = unquoted(c, node, "rtol", "a number");
    if (s == NULL) {
        return -1;
    }
    char *end;
    double v = strtod(s, &end);
    if (end == s || *end != '\0' || !mt_options_rtol_ok(v)) {
        char problem[MT_OPTIONS_PROBLEM_MAX];
        mt_options_rtol_problem(s, problem, sizeof problem);
        fail(c, node, "rtol: %s", problem);
        return -1;
    }
    *out = v;
    return 0;
}

static int
get_codec_level(ctx *c, const yaml_node_t *node, int *out)
{
    const char *s = unquoted(c, node, "level", "a whole number");
    if (s == NULL) {
        return -1;
    }
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (end == s || *end != '\0' || errno || !mt_options_level_ok(v)) {
        char problem[MT_OPTIONS_PROBLEM_MAX];
        mt_options_level_problem(s, problem, sizeof problem);
        fail(c, node, "level: %s", problem);
        return -1;
    }
    *out = (int)v;
    return 0;
}

static int
get_text(ctx *c, const yaml_node_t *node, const char *key, char **out)
{
    const char *s = scalar(c, node, key, "text");
    if (s == NULL) {
        return -1;
    }
    if (s[0] == '\0') {
        fail(c, node, "%s: is empty: write a value or remove the key", key);
        return -1;
    }
    return (*out = copy(c, s)) ? 0 : -1;
}

/* A text option that one of options.h's checks accepts (ok), else refused in
 * its words (problem). */
static int
get_option_text(ctx *c, const yaml_node_t *node, const char *key, int (*ok)(const char *),
                void (*problem)(const char *, char *, size_t), char **out)
{
    if (get_text(c, node, key, out) < 0) {
        return -1;
    }
    if (!ok(*out)) {
        char words[MT_OPTIONS_PROBLEM_MAX];
        problem(*out, words, sizeof words);
        fail(c, node, "%s: %s", key, words);
        return -1;
    }
    return 0;
}

static void
strings_free(mt_rules_strings *s)
{
    for (int i = 0; i < s->len; i++) {
        free(s->items[i]);
    }
    free(s->items);
    s->items = NULL;
    s->len = 0;
}

/* One string or a list of them. */
static int
get_strings(ctx *c, const yaml_node_t *node, const char *key, const char *example,
            mt_rules_strings *out)
{
    if (node->type == YAML_SCALAR_NODE) {
        char *s;
        if (get_text(c, node, key, &s) < 0) {
            return -1;
        }
        if ((out->items = malloc(sizeof *out->items)) == NULL) {
            free(s);
            c->out_of_memory = 1;
            return -1;
        }
        out->items[0] = s;
        out->len = 1;
        return 0;
    }
    if (node->type != YAML_SEQUENCE_NODE) {
        fail(c, node, "%s: expected a name or a list of names, like %s", key, example);
        return -1;
    }
    yaml_node_item_t *start = node->data.sequence.items.start;
    long n = node->data.sequence.items.top - start;
    if (n > MT_RULES_MAX_PATTERNS) {
        fail(c, node,
             "%s: %ld entries is too many: write at most %d (globs such as df_* cover many)", key,
             n, MT_RULES_MAX_PATTERNS);
        return -1;
    }
    if (n == 0) {
        fail(c, node, "%s: an empty list names nothing: write at least one, like %s, or remove %s",
             key, example, key);
        return -1;
    }
    if (n && (out->items = calloc((size_t)n, sizeof *out->items)) == NULL) {
        c->out_of_memory = 1;
        return -1;
    }
    for (long i = 0; i < n; i++) {
        yaml_node_t *item = visit(c, start[i]);
        if (item == NULL || get_text(c, item, key, &out->items[out->len]) < 0) {
            strings_free(out);
            return -1;
        }
        out->len++;
    }
    return 0;
}

/* ---- mappings with known keys ---------------------------------------- */

static size_t
edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 40 || lb > 40) {
        return 99;
    }
    size_t row[41];
    for (size_t j = 0; j <= lb; j++) {
        row[j] = j;
    }
    for (size_t i = 1; i <= la; i++) {
        size_t diagonal = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t above = row[j];
            size_t best =
                diagonal + (tolower((unsigned char)a[i - 1]) != tolower((unsigned char)b[j - 1]));
            if (above + 1 < best) {
                best = above + 1;
            }
            if (row[j - 1] + 1 < best) {
                best = row[j - 1] + 1;
            }
            row[j] = best;
            diagonal = above;
        }
    }
    return row[lb];
}

const char *
mt_rules_closest(const char *word, const char *const *names, int n)
{
    const char *best = NULL;
    size_t best_distance = strlen(word) <= 3 ? 1 : 2;
    for (int i = 0; i < n; i++) {
        size_t d = edit_distance(word, names[i]);
        if (d <= best_distance) {
            best = names[i];
            best_distance = d;
        }
    }
    return best;
}

static void
list_names(char *buf, size_t size, const char *const *names, int n)
{
    size_t used = 0;
    buf[0] = '\0';
    for (int i = 0; i < n && used < size; i++) {
        used += (size_t)snprintf(buf + used, size - used, "%s%s", i ? ", " : "", names[i]);
    }
}

/* Sorts the pairs of a mapping into values[k] for each known key k (NULL
 * when absent).  Unknown and repeated keys are errors; returns -1 if any,
 * -2 when a node was refused (a tag, too many visits): then the values
 * are incomplete and the caller stops. */
static int
known_keys(ctx *c, const yaml_node_t *map, const char *where, const char *const *keys, int n,
           yaml_node_t **values)
{
    int rc = 0;
    memset(values, 0, sizeof *values * (size_t)n);
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top;
         p++) {
        yaml_node_t *key = visit(c, p->key);
        yaml_node_t *value = visit(c, p->value);
        if (key == NULL || value == NULL) {
            return -2;
        }
        if (key->type != YAML_SCALAR_NODE) {
            fail(c, key, "%s: a key must be a plain word, not %s", where, kind_name(key));
            rc = -1;
            continue;
        }
        const char *name = (const char *)key->data.scalar.value;
        if (holds_nul(key)) {
            fail(c, key, "the key '%.60s\\0...' %s holds a NUL character (\\0): remove it", name,
                 where);
            rc = -1;
            continue;
        }
        int k = 0;
        while (k < n && strcmp(keys[k], name) != 0) {
            k++;
        }
        if (k == n) {
            char all[256];
            const char *guess = mt_rules_closest(name, keys, n);
            list_names(all, sizeof all, keys, n);
            if (guess) {
                fail(c, key, "unknown key '%.60s' %s: did you mean '%s'? (keys: %s)", name, where,
                     guess, all);
            }
            else {
                fail(c, key, "unknown key '%.60s' %s: use one of %s", name, where, all);
            }
            rc = -1;
        }
        else if (values[k] != NULL) {
            fail(c, key, "duplicate key '%s' %s (first at line %zu): keep one", name, where,
                 values[k]->start_mark.line + 1);
            rc = -1;
        }
        else {
            values[k] = value;
        }
    }
    return rc;
}

/* One of names, with a "did you mean" when the word is close to one. */
static int
get_choice(ctx *c, const yaml_node_t *node, const char *key, const char *const *names, int n,
           int *out)
{
    const char *s = scalar(c, node, key, "a word");
    if (s == NULL) {
        return -1;
    }
    for (int i = 0; i < n; i++) {
        if (strcmp(s, names[i]) == 0) {
            *out = i;
            return 0;
        }
    }
    char all[256];
    const char *guess = mt_rules_closest(s, names, n);
    list_names(all, sizeof all, names, n);
    if (guess) {
        fail(c, node, "%s: unknown value '%.60s': did you mean '%s'? (use one of %s)", key, s,
             guess, all);
    }
    else {
        fail(c, node, "%s: unknown value '%.60s': use one of %s", key, s, all);
    }
    return -1;
}

/* ---- a rule ---------------------------------------------------------- */

enum {
    R_NAME,
    R_WHEN,
    R_MATCH,
    R_ORDER,
    R_DO,
    R_CODEC,
    R_LEVEL,
    R_RTOL,
    R_TO,
    R_DIR,
    R_COOLDOWN,
    R_MAX_PER_CELL,
    R_ALLOW_DELETE,
    R_KEEP_IN_MEMORY,
    R_KEEP_FOR_REATTACH,
    R_COUNT
};
static const char *const rule_keys[R_COUNT] = {
    "name",
    "when",
    "match",
    "order",
    "do",
    "codec",
    "level",
    "rtol",
    "to",
    "dir",
    "cooldown",
    "max_per_cell",
    "allow_delete",
    "keep_in_memory",
    "keep_for_reattach",
};
enum {
    W_CELL_PEAK,
    W_CELL_RETAINED,
    W_MEMORY_ABOVE,
    W_UNTIL,
    W_IDLE_FOR,
    W_CREATED,
    W_CHILDREN_OVER,
    W_COUNT
};
static const char *const when_keys[W_COUNT] = {
    "cell_peak", "cell_retained", "memory_above", "until", "idle_for", "created", "children_over",
};
enum { M_TYPE, M_DTYPE, M_NAME, M_MIN_SIZE, M_COUNT };
static const char *const match_keys[M_COUNT] = {"type", "dtype", "name", "min_size"};

static void
rule_free(mt_rule *r)
{
    free(r->name);
    free(r->codec);
    free(r->to);
    free(r->dir);
    strings_free(&r->types);
    strings_free(&r->dtypes);
    strings_free(&r->names);
}

static int
has_glob(const char *s)
{
    return strpbrk(s, "*?[") != NULL;
}

/* ---- the spill directory --------------------------------------------- */

/* Whether the relative path rel climbs above where it starts ("../x",
 * "a/../../x"), read as written. */
static int
climbs_out(const char *rel)
{
    int depth = 0;
    for (const char *p = rel; *p;) {
        size_t n = strcspn(p, "/");
        if (n == 2 && p[0] == '.' && p[1] == '.') {
            if (--depth < 0) {
                return 1;
            }
        }
        else if (n > 0 && !(n == 1 && p[0] == '.')) {
            depth++;
        }
        p += n;
        p += strspn(p, "/");
    }
    return 0;
}

static const char *
unreachable(int error)
{
    switch (error) {
    case ENOENT:
        return "does not exist: create it (mkdir -p) or name a directory that exists";
    case ENOTDIR:
        return "is not a directory: name a directory";
    case EACCES:
        return "cannot be reached (permission denied): name a directory of yours";
    default:
        return "cannot be resolved: name a directory of yours that exists";
    }
}

/* dir: becomes the absolute path of an existing directory that the user
 * owns and can write.  A relative one starts at c->directory and may not
 * climb out of it.  (~ is not expanded: the parser reads no environment,
 * which another thread may be changing.) */
static int
resolve_spill_dir(ctx *c, const yaml_node_t *node, char **dir)
{
    char where[PATH_MAX], real[PATH_MAX], cwd[PATH_MAX];
    const char *d = *dir, *base = c->directory;
    struct stat st;
    int n;
    if (d[0] == '/') {
        n = snprintf(where, sizeof where, "%s", d);
    }
    else if (d[0] == '~') {
        fail(c, node, "dir: '~' is not expanded here: write the full path, like /home/you/spill");
        return -1;
    }
    else if (climbs_out(d)) {
        fail(c, node,
             "dir: '%.100s' climbs out of the rules file's directory with '..': name a directory "
             "inside it, or write the full path of one of yours",
             d);
        return -1;
    }
    else {
        if (base == NULL && (base = getcwd(cwd, sizeof cwd)) == NULL) {
            fail(c, node, "dir: the working directory is gone: write the full path");
            return -1;
        }
        n = snprintf(where, sizeof where, "%s/%s", base, d);
    }
    if (n < 0 || (size_t)n >= sizeof where) {
        fail(c, node, "dir: the path is longer than %d bytes: name a shorter one", PATH_MAX - 1);
        return -1;
    }
    if (realpath(where, real) == NULL || stat(real, &st) != 0) {
        fail(c, node, "dir: %.160s %s", where, unreachable(errno));
        return -1;
    }
    if (!S_ISDIR(st.st_mode)) {
        fail(c, node, "dir: %.160s %s", real, unreachable(ENOTDIR));
        return -1;
    }
    if (st.st_uid != geteuid()) {
        fail(c, node,
             "dir: %.160s belongs to another user (uid %u): spill into a directory of your own, "
             "such as one you make in it",
             real, (unsigned)st.st_uid);
        return -1;
    }
    if (access(real, W_OK | X_OK) != 0) {
        fail(c, node, "dir: %.160s is not writable by you: name a directory you can write", real);
        return -1;
    }
    char *absolute = copy(c, real);
    if (absolute == NULL) {
        return -1;
    }
    free(*dir);
    *dir = absolute;
    return 0;
}

static int
parse_when(ctx *c, const yaml_node_t *node, mt_rule *r)
{
    yaml_node_t *v[W_COUNT];
    if (node->type != YAML_MAPPING_NODE) {
        fail(c, node, "when: expected a mapping such as {memory_above: 80%%, until: 70%%}, not %s",
             kind_name(node));
        return -1;
    }
    int rc = known_keys(c, node, "in when:", when_keys, W_COUNT, v);
    if (rc == -2) {
        return -1;
    }
    if (v[W_CELL_PEAK] && get_size(c, v[W_CELL_PEAK], "cell_peak", &r->cell_peak) < 0) {
        rc = -1;
    }
    if (v[W_CELL_RETAINED] &&
        get_size(c, v[W_CELL_RETAINED], "cell_retained", &r->cell_retained) < 0) {
        rc = -1;
    }
    if (v[W_MEMORY_ABOVE] &&
        get_level(c, v[W_MEMORY_ABOVE], "memory_above", 0, &r->memory_above) < 0) {
        rc = -1;
    }
    if (v[W_UNTIL] && get_level(c, v[W_UNTIL], "until", 0, &r->until) < 0) {
        rc = -1;
    }
    if (v[W_IDLE_FOR] &&
        get_count(c, v[W_IDLE_FOR], "idle_for", 1, MAX_COUNT, "3", &r->idle_for) < 0) {
        rc = -1;
    }
    if (v[W_CREATED] && get_bool(c, v[W_CREATED], "created", &r->created) < 0) {
        rc = -1;
    }
    if (v[W_CHILDREN_OVER] &&
        get_size(c, v[W_CHILDREN_OVER], "children_over", &r->children_over) < 0) {
        rc = -1;
    }
    if (rc < 0) {
        return -1;
    }
    if (v[W_CREATED] && !r->created) {
        fail(c, v[W_CREATED],
             "created: false restricts nothing: remove it, or write created: true "
             "to act on variables this cell created or rebound");
        return -1;
    }
    if (v[W_UNTIL] && !v[W_MEMORY_ABOVE]) {
        fail(c, v[W_UNTIL],
             "until: only goes with memory_above: write e.g. "
             "{memory_above: 80%%, until: 70%%}");
        return -1;
    }
    if (v[W_UNTIL] && r->until.kind == r->memory_above.kind &&
        (r->until.kind == MT_LEVEL_PERCENT ? r->until.percent >= r->memory_above.percent
                                           : r->until.bytes >= r->memory_above.bytes)) {
        fail(c, v[W_UNTIL],
             "until: the rule can never fire: it acts until memory is below "
             "until, which must be lower than memory_above (e.g. memory_above: 80%%, until: 70%%)");
        return -1;
    }
    if (r->created && r->idle_for > 0) {
        fail(c, v[W_IDLE_FOR],
             "idle_for: the rule can never fire: a variable created in this "
             "cell has been idle for 0 cells; keep created or idle_for, not both");
        return -1;
    }
    return 0;
}

static int
parse_match(ctx *c, const yaml_node_t *node, mt_rule *r)
{
    yaml_node_t *v[M_COUNT];
    if (node->type != YAML_MAPPING_NODE) {
        fail(c, node, "match: expected a mapping such as {type: ndarray, min_size: 256MiB}, not %s",
             kind_name(node));
        return -1;
    }
    int rc = known_keys(c, node, "in match:", match_keys, M_COUNT, v);
    if (rc == -2) {
        return -1;
    }
    if (v[M_TYPE] &&
        get_strings(c, v[M_TYPE], "type", "ndarray or [ndarray, DataFrame]", &r->types) < 0) {
        rc = -1;
    }
    if (v[M_DTYPE] &&
        get_strings(c, v[M_DTYPE], "dtype", "float64 or [float64, int64]", &r->dtypes) < 0) {
        rc = -1;
    }
    if (v[M_NAME] && get_strings(c, v[M_NAME], "name", "df_* or [tmp*, scratch]", &r->names) < 0) {
        rc = -1;
    }
    if (v[M_MIN_SIZE] && get_size(c, v[M_MIN_SIZE], "min_size", &r->min_size) < 0) {
        rc = -1;
    }
    return rc;
}

/* The rule actions that take option o, as "compress" or "compress or spill". */
static void
option_owners(int o, char *buf, size_t n)
{
    size_t used = 0;
    buf[0] = '\0';
    for (int a = 0; a < MT_DO_COUNT && used < n; a++) {
        if ((mt_actions[a].where & MT_ACTION_IN_RULES) &&
            (mt_actions[a].options & MT_OPTION_BIT(o))) {
            used += (size_t)snprintf(buf + used, n - used, "%s%s", used ? " or " : "",
                                     mt_actions[a].name);
        }
    }
}

/* The checks that need the whole rule (and the protect list). */
static int
check_rule(ctx *c, yaml_node_t **v, const mt_rules_table *t, mt_rule *r)
{
    int rc = 0;
    const mt_action_info *info = &mt_actions[r->action];
    const char *action = info->name;
    for (int k = 0; k < R_COUNT; k++) {
        int o = mt_actions_find_option(rule_keys[k]);
        if (v[k] && o >= 0 && !(info->options & MT_OPTION_BIT(o))) {
            char owners[128];
            option_owners(o, owners, sizeof owners);
            fail(c, v[k], "%s: applies to do: %s, not do: %s; remove it", rule_keys[k], owners,
                 action);
            rc = -1;
        }
    }
    if (r->action == MT_DO_DEL && !r->allow_delete) {
        fail(c, v[R_DO],
             "do: del deletes variables for good: add allow_delete: true to this rule "
             "to mean it, or use compress or spill, which can be undone");
        rc = -1;
    }
    else if (r->action == MT_DO_DEL && !r->names.len && !r->types.len) {
        fail(c, v[R_MATCH] ? v[R_MATCH] : v[R_DO],
             "do: del with no name or type in match: would delete every variable after every "
             "cell: say which, e.g. match: {name: tmp_*} or match: {type: DataFrame, name: df_*}");
        rc = -1;
    }
    /* Only the notebook's store is offered to the next kernel; a dir: of the
     * user's is cleaned up with the kernel. */
    if (r->dir && (r->keep_in_memory || r->keep_for_reattach)) {
        fail(c, v[R_DIR],
             "dir: a spill there goes with the kernel, so %s: true keeps nothing for the next "
             "kernel; remove dir: to spill into the notebook's spill store",
             r->keep_in_memory ? "keep_in_memory" : "keep_for_reattach");
        rc = -1;
    }
    if (!info->on_variables) {
        const char *kind =
            r->action == MT_DO_COLLECT ? "the whole kernel" : "IPython's output cache";
        if (v[R_ORDER] || r->idle_for > 0 || r->created) {
            const yaml_node_t *at = v[R_ORDER] ? v[R_ORDER] : v[R_WHEN];
            fail(c, at, "do: %s acts on %s, not on variables: remove %s", action, kind,
                 v[R_ORDER] ? "order" : "idle_for and created from when");
            rc = -1;
        }
        int selects = r->types.len || r->dtypes.len || r->names.len;
        if (v[R_MATCH] && (r->action == MT_DO_COLLECT || selects)) {
            fail(c, v[R_MATCH], "match: do: %s acts on %s; %s", action, kind,
                 r->action == MT_DO_COLLECT ? "remove match"
                                            : "only match: {min_size: SIZE} applies to it");
            rc = -1;
        }
        if (v[R_MAX_PER_CELL] && r->action == MT_DO_COLLECT) {
            fail(c, v[R_MAX_PER_CELL], "max_per_cell: do: collect acts once; remove it");
            rc = -1;
        }
    }
    if (r->children_over >= 0 && r->action != MT_DO_NOTICE && r->action != MT_DO_RESTART) {
        fail(c, v[R_DO],
             "do: children_over is about child processes, which memtamer never kills: write "
             "do: notice, or do: restart with the pool or cluster in match: {name: ...}");
        rc = -1;
    }
    else if (r->action == MT_DO_RESTART && (r->children_over < 0 || !r->names.len)) {
        fail(c, v[R_DO],
             "do: restart restarts the workers of a pool or cluster you name once the child "
             "processes grow: write when: {children_over: SIZE} and match: {name: client}");
        rc = -1;
    }
    else if (r->action == MT_DO_RESTART && (r->idle_for > 0 || r->created)) {
        fail(c, v[R_WHEN],
             "when: do: restart follows the child processes' memory: remove "
             "idle_for and created");
        rc = -1;
    }
    else if (r->action == MT_DO_NOTICE && r->children_over >= 0 &&
             (v[R_MATCH] || v[R_ORDER] || r->idle_for > 0 || r->created)) {
        int key = v[R_MATCH] ? R_MATCH : v[R_ORDER] ? R_ORDER : R_WHEN;
        fail(c, v[key],
             "%s: a children_over notice names the child processes, not variables: "
             "remove match, order, idle_for and created from this rule",
             rule_keys[key]);
        rc = -1;
    }
    if (r->names.len) {
        int every_name_protected = 1;
        for (int i = 0; i < r->names.len; i++) {
            if (has_glob(r->names.items[i]) || !mt_rules_protected(t, r->names.items[i])) {
                every_name_protected = 0;
            }
        }
        if (every_name_protected) {
            fail(c, v[R_MATCH],
                 "match: the rule can never fire: every name it matches is in "
                 "protect; remove the name from protect or from this rule");
            rc = -1;
        }
    }
    return rc;
}

static int
parse_rule(ctx *c, const yaml_node_t *map, const mt_rules_table *t, mt_rule *r)
{
    yaml_node_t *v[R_COUNT];
    const char *names[MT_DO_COUNT]; /* the actions a rule can do */
    int n_names = mt_actions_names(MT_ACTION_IN_RULES, names);
    memset(r, 0, sizeof *r);
    r->line = (int)map->start_mark.line + 1;
    r->column = (int)map->start_mark.column + 1;
    r->cell_peak = r->cell_retained = r->idle_for = r->children_over = -1;
    r->level = -1;
    r->rtol = -1;
    r->max_per_cell = DEFAULT_MAX_PER_CELL;
    if (map->type != YAML_MAPPING_NODE) {
        fail(c, map, "rules: each rule is a mapping with name, when, match and do, not %s",
             kind_name(map));
        return -1;
    }
    int rc = known_keys(c, map, "in a rule", rule_keys, R_COUNT, v);
    if (rc == -2) {
        return -1;
    }
    if (v[R_NAME] == NULL) {
        fail(c, map,
             "this rule has no name: add name: followed by a short label such as "
             "compress-idle-arrays");
        rc = -1;
    }
    else if (get_text(c, v[R_NAME], "name", &r->name) < 0) {
        rc = -1;
    }
    if (v[R_DO] == NULL) {
        char all[256];
        list_names(all, sizeof all, names, n_names);
        fail(c, map, "this rule has no do: add do: with one of %s", all);
        rc = -1;
    }
    else {
        int a;
        if (get_choice(c, v[R_DO], "do", names, n_names, &a) < 0) {
            rc = -1;
        }
        else {
            r->action = (mt_action)mt_actions_find(names[a]);
        }
    }
    if (v[R_WHEN] && parse_when(c, v[R_WHEN], r) < 0) {
        rc = -1;
    }
    if (v[R_MATCH] && parse_match(c, v[R_MATCH], r) < 0) {
        rc = -1;
    }
    if (v[R_ORDER]) {
        int o;
        if (get_choice(c, v[R_ORDER], "order", order_names, MT_ORDER_COUNT, &o) < 0) {
            rc = -1;
        }
        else {
            r->order = (mt_rules_order)o;
        }
    }
    if (v[R_CODEC] && get_option_text(c, v[R_CODEC], "codec", mt_options_codec_ok,
                                      mt_options_codec_problem, &r->codec) < 0) {
        rc = -1;
    }
    if (v[R_LEVEL] && get_codec_level(c, v[R_LEVEL], &r->level) < 0) {
        rc = -1;
    }
    if (v[R_RTOL] && get_rtol(c, v[R_RTOL], &r->rtol) < 0) {
        rc = -1;
    }
    if (v[R_TO] && get_option_text(c, v[R_TO], "to", mt_options_target_ok,
                                   mt_options_target_problem, &r->to) < 0) {
        rc = -1;
    }
    if (v[R_DIR] && (get_text(c, v[R_DIR], "dir", &r->dir) < 0 ||
                     resolve_spill_dir(c, v[R_DIR], &r->dir) < 0)) {
        rc = -1;
    }
    if (v[R_COOLDOWN] &&
        get_count(c, v[R_COOLDOWN], "cooldown", 0, MAX_COUNT, "2", &r->cooldown) < 0) {
        rc = -1;
    }
    if (v[R_MAX_PER_CELL] &&
        get_count(c, v[R_MAX_PER_CELL], "max_per_cell", 1, 1000, "4", &r->max_per_cell) < 0) {
        rc = -1;
    }
    if (v[R_ALLOW_DELETE] && get_bool(c, v[R_ALLOW_DELETE], "allow_delete", &r->allow_delete) < 0) {
        rc = -1;
    }
    if (v[R_KEEP_IN_MEMORY] &&
        get_bool(c, v[R_KEEP_IN_MEMORY], "keep_in_memory", &r->keep_in_memory) < 0) {
        rc = -1;
    }
    if (v[R_KEEP_FOR_REATTACH] &&
        get_bool(c, v[R_KEEP_FOR_REATTACH], "keep_for_reattach", &r->keep_for_reattach) < 0) {
        rc = -1;
    }
    if (rc == 0 && check_rule(c, v, t, r) < 0) {
        rc = -1;
    }
    return rc;
}

/* ---- the document ---------------------------------------------------- */

enum { T_VERSION, T_BUDGET, T_NOTICE, T_SWAP, T_THRASHING, T_PROTECT, T_RULES, T_COUNT };
static const char *const top_keys[T_COUNT] = {"version",   "budget",  "notice", "swap",
                                              "thrashing", "protect", "rules"};

void
mt_rules_table_free(mt_rules_table *t)
{
    for (int i = 0; i < t->len; i++) {
        rule_free(&t->rules[i]);
    }
    free(t->rules);
    strings_free(&t->protect);
    memset(t, 0, sizeof *t);
}

static int
parse_rules(ctx *c, const yaml_node_t *list, mt_rules_table *t)
{
    if (list->type != YAML_SEQUENCE_NODE) {
        fail(c, list, "rules: expected a list of rules, each starting with '- name:', not %s",
             kind_name(list));
        return -1;
    }
    yaml_node_item_t *start = list->data.sequence.items.start;
    long n = list->data.sequence.items.top - start;
    if (n > MT_RULES_MAX_RULES) {
        fail(c, list, "rules: %ld rules is too many: write at most %d", n, MT_RULES_MAX_RULES);
        return -1;
    }
    if (n && (t->rules = calloc((size_t)n, sizeof *t->rules)) == NULL) {
        c->out_of_memory = 1;
        return -1;
    }
    int rc = 0;
    for (long i = 0; i < n; i++) {
        yaml_node_t *item = visit(c, start[i]);
        if (item == NULL) {
            return -1;
        }
        mt_rule *r = &t->rules[t->len];
        if (parse_rule(c, item, t, r) < 0) {
            rule_free(r);
            rc = -1;
            continue;
        }
        for (int j = 0; j < t->len; j++) {
            if (strcmp(t->rules[j].name, r->name) == 0) {
                fail(c, item,
                     "duplicate rule name '%.60s' (first at line %d): give each rule its "
                     "own name",
                     r->name, t->rules[j].line);
                rc = -1;
            }
        }
        t->len++;
    }
    return rc;
}

static int
parse_document(ctx *c, mt_rules_table *t)
{
    yaml_node_t *root = yaml_document_get_root_node(c->doc);
    yaml_node_t *v[T_COUNT];
    if (root == NULL) {
        yaml_mark_t start = {0, 0, 0};
        error_at_mark(c->errors, start, "the file is empty: start it with version: 1, then rules:");
        return -1;
    }
    if ((root = visit(c, 1)) == NULL) {
        return -1;
    }
    if (root->type != YAML_MAPPING_NODE) {
        fail(c, root, "the file must be a mapping with version: 1 and rules:, not %s",
             kind_name(root));
        return -1;
    }
    int rc = known_keys(c, root, "at the top", top_keys, T_COUNT, v);
    if (rc == -2) {
        return -1;
    }
    long long version = 0;
    if (v[T_VERSION] == NULL) {
        fail(c, root, "version is missing: write version: 1 as the first line");
        rc = -1;
    }
    else if (get_count(c, v[T_VERSION], "version", 1, 1, "1", &version) < 0) {
        rc = -1;
    }
    t->version = (int)version;
    if (v[T_BUDGET]) {
        t->budget_line = (int)v[T_BUDGET]->start_mark.line + 1;
        t->budget_column = (int)v[T_BUDGET]->start_mark.column + 1;
        if (get_level(c, v[T_BUDGET], "budget", 1, &t->budget) < 0) {
            rc = -1;
        }
        else if (t->budget.kind == MT_LEVEL_BYTES && t->budget.bytes == 0) {
            fail(c, v[T_BUDGET], "budget: %s", MT_RULES_ZERO_BUDGET);
            rc = -1;
        }
    }
    if (v[T_NOTICE]) {
        const char *s = scalar(c, v[T_NOTICE], "notice", "a size such as 512MiB, or off");
        if (s == NULL) {
            rc = -1;
        }
        else if (strcmp(s, "off") == 0) {
            t->notice.kind = MT_LEVEL_OFF;
        }
        else if (get_size(c, v[T_NOTICE], "notice", &t->notice.bytes) < 0) {
            rc = -1;
        }
        else {
            t->notice.kind = MT_LEVEL_BYTES;
        }
    }
    t->swap = t->thrash_stop = -1;
    if (v[T_SWAP]) {
        t->swap_line = (int)v[T_SWAP]->start_mark.line + 1;
        t->swap_column = (int)v[T_SWAP]->start_mark.column + 1;
        if (get_bool(c, v[T_SWAP], "swap", &t->swap) < 0) {
            rc = -1;
        }
    }
    if (v[T_THRASHING]) {
        const char *s = unquoted(c, v[T_THRASHING], "thrashing", "stop or warn");
        if (s == NULL) {
            rc = -1;
        }
        else if (strcmp(s, "stop") == 0 || strcmp(s, "warn") == 0) {
            t->thrash_stop = strcmp(s, "stop") == 0;
        }
        else {
            fail(c, v[T_THRASHING],
                 "thrashing: '%.60s' is neither stop (end a thrashing cell) nor warn (let it "
                 "run): write thrashing: stop",
                 s);
            rc = -1;
        }
    }
    if (v[T_PROTECT] &&
        get_strings(c, v[T_PROTECT], "protect", "[model, cfg_*]", &t->protect) < 0) {
        rc = -1;
    }
    if (v[T_RULES] && parse_rules(c, v[T_RULES], t) < 0) {
        rc = -1;
    }
    return rc;
}

static int
by_position(const void *a, const void *b)
{
    const mt_rules_error *x = a, *y = b;
    if (x->line != y->line) {
        return x->line < y->line ? -1 : 1;
    }
    return x->column < y->column ? -1 : x->column > y->column;
}

/* libyaml's scanner does work in proportion to the depth of the flow
 * collections it is in for each token, so a document nested 100,000 deep
 * costs seconds to load.  Its events are read first, and a document that
 * nests deeper than a rules file ever does is refused where it does, before
 * it costs more than MT_RULES_MAX_DEPTH times its length.  The same pass
 * finds the syntax errors the loader would.  0, -1 with an error, -2 when
 * memory ran out. */
static int
check_depth(const char *text, size_t len, mt_rules_errors *errors)
{
    yaml_parser_t parser;
    yaml_event_t event;
    int depth = 0, rc = 0;
    if (!yaml_parser_initialize(&parser)) {
        return -2;
    }
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    yaml_parser_set_encoding(&parser, YAML_UTF8_ENCODING);
    for (;;) {
        if (!yaml_parser_parse(&parser, &event)) {
            rc = yaml_failure(&parser, text, len, errors);
            break;
        }
        yaml_event_type_t type = event.type;
        if (type == YAML_SEQUENCE_START_EVENT || type == YAML_MAPPING_START_EVENT) {
            depth++;
        }
        else if (type == YAML_SEQUENCE_END_EVENT || type == YAML_MAPPING_END_EVENT) {
            depth--;
        }
        if (depth > MT_RULES_MAX_DEPTH) {
            error_at_mark(errors, event.start_mark,
                          "lists and mappings nest more than %d deep here: a rules file needs "
                          "at most 5 (the file, rules, a rule, its match, a list of names); "
                          "check the brackets",
                          MT_RULES_MAX_DEPTH);
            rc = -1;
        }
        yaml_event_delete(&event);
        if (rc < 0 || type == YAML_STREAM_END_EVENT) {
            break;
        }
    }
    yaml_parser_delete(&parser);
    return rc;
}

int
mt_rules_parse(const char *text, size_t len, const char *directory, mt_rules_table *out,
               mt_rules_errors *errors)
{
    yaml_parser_t parser;
    yaml_document_t doc, next;
    mt_rules_table t;
    ctx c = {.doc = &doc, .directory = directory, .errors = errors};
    int rc = -1, have_doc = 0;

    memset(errors, 0, sizeof *errors);
    memset(&t, 0, sizeof t);
    if (len > MT_RULES_MAX_FILE_BYTES) {
        yaml_mark_t start = {0, 0, 0};
        error_at_mark(errors, start,
                      "the file is more than %d bytes; a rules file is a few KiB: is this the "
                      "right file?",
                      MT_RULES_MAX_FILE_BYTES);
        return -1;
    }
    if ((rc = check_depth(text, len, errors)) < 0) {
        return rc;
    }
    rc = -1;
    if (!yaml_parser_initialize(&parser)) {
        return -2;
    }
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    yaml_parser_set_encoding(&parser, YAML_UTF8_ENCODING);
    if (!yaml_parser_load(&parser, &doc)) {
        rc = yaml_failure(&parser, text, len, errors);
        goto done;
    }
    have_doc = 1;
    if (yaml_document_get_root_node(&doc) != NULL) {
        if (!yaml_parser_load(&parser, &next)) {
            rc = yaml_failure(&parser, text, len, errors);
            goto done;
        }
        yaml_node_t *second = yaml_document_get_root_node(&next);
        if (second != NULL) {
            error_at_mark(errors, next.start_mark,
                          "a second document starts here: a rules file "
                          "holds one; remove the '---' and what follows, or merge them");
        }
        yaml_document_delete(&next);
        if (second != NULL) {
            goto done;
        }
    }
    rc = parse_document(&c, &t);
    if (c.out_of_memory) {
        rc = -2;
    }
done:
    if (rc == 0) {
        *out = t;
    }
    else {
        mt_rules_table_free(&t);
        if (rc == -1 && errors->len == 0) { /* every failure above says why; be sure */
            yaml_mark_t start = {0, 0, 0};
            error_at_mark(errors, start, "cannot read the rules");
        }
        /* In the order of the file, as an editor lists them. */
        qsort(errors->items, (size_t)errors->len, sizeof errors->items[0], by_position);
    }
    if (have_doc) {
        yaml_document_delete(&doc);
    }
    yaml_parser_delete(&parser);
    return rc;
}

/* ---- the file -------------------------------------------------------- */

static const char *
file_kind(mode_t mode)
{
    if (S_ISDIR(mode)) {
        return "a directory: name the rules file in it";
    }
    if (S_ISFIFO(mode)) {
        return "a named pipe (FIFO), not a file: name the rules file itself";
    }
    if (S_ISCHR(mode) || S_ISBLK(mode)) {
        return "a device, not a file: name the rules file itself";
    }
    if (S_ISSOCK(mode)) {
        return "a socket, not a file: name the rules file itself";
    }
    return "not a regular file: name the rules file itself";
}

static void
cannot_read(char *problem, size_t n, int error)
{
    char words[128];
    /* The GNU strerror_r (_GNU_SOURCE): thread-safe, returns the text. */
    snprintf(problem, n, "cannot read it: %s", strerror_r(error, words, sizeof words));
}

int
mt_rules_read_file(const char *path, char **text, size_t *len, char *problem, size_t n)
{
    struct stat st;
    char *buf = NULL;
    size_t got = 0;
    /* Non-blocking: opening a FIFO without a writer would wait forever. */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        cannot_read(problem, n, errno);
        return -1;
    }
    if (fstat(fd, &st) != 0) {
        cannot_read(problem, n, errno);
        goto error;
    }
    if (!S_ISREG(st.st_mode)) {
        snprintf(problem, n, "is %s", file_kind(st.st_mode));
        goto error;
    }
    if ((buf = malloc(MT_RULES_MAX_FILE_BYTES + 1)) == NULL) {
        close(fd);
        return -2;
    }
    while (got < MT_RULES_MAX_FILE_BYTES + 1) {
        ssize_t r = read(fd, buf + got, MT_RULES_MAX_FILE_BYTES + 1 - got);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r < 0) {
            cannot_read(problem, n, errno);
            goto error;
        }
        if (r == 0) {
            break;
        }
        got += (size_t)r;
    }
    close(fd);
    *text = buf;
    *len = got;
    return 0;
error:
    free(buf);
    close(fd);
    return -1;
}
