/* rules: the YAML rules file (libyaml) -> a typed rule table.
 *
 * The parser is plain C (malloc, no Python API): it can be built alone,
 * under AddressSanitizer, by the tests.  A document either loads whole into
 * an mt_rules_table or is rejected with a list of errors, each at a line and
 * column and saying what to write instead.  YAML here is data only: tags
 * other than the core schema's are refused, and the nodes visited are
 * bounded, so anchors and aliases cannot blow a document up.
 *
 * The Python face (rules_check, rules_load, rules_table) is in policy.c,
 * next to the engine that owns the table in force. */
#ifndef MEMTAMER_RULES_H
#define MEMTAMER_RULES_H

#include "memtamer/actions.h"

#include <stddef.h>

/* Bounds that keep a hostile document cheap to refuse. */
#define MT_RULES_MAX_FILE_BYTES (1024 * 1024)
#define MT_RULES_MAX_VISITS 100000 /* node visits, aliases counted each time */
/* Lists and mappings inside one another: a rules file needs 5 (the file, rules,
 * a rule, its match, a list of names); libyaml's cost grows with the square
 * of the depth, so deeper documents are refused before they are loaded. */
#define MT_RULES_MAX_DEPTH 8
#define MT_RULES_MAX_RULES 1000
#define MT_RULES_MAX_PATTERNS 256 /* entries in one list of names or types */
#define MT_RULES_MAX_ERRORS 16
#define MT_RULES_MESSAGE_BYTES 320

typedef enum {
    MT_LEVEL_UNSET = 0,
    MT_LEVEL_BYTES,
    MT_LEVEL_PERCENT,
    MT_LEVEL_OFF
} mt_rules_level_kind;

/* A size ("256MiB") or a share of the effective limit ("80%"). */
typedef struct {
    mt_rules_level_kind kind;
    long long bytes;
    double percent;
} mt_rules_level;

typedef enum {
    MT_ORDER_LARGEST = 0,
    MT_ORDER_IDLE,
    MT_ORDER_NEWEST,
    MT_ORDER_COUNT
} mt_rules_order;

typedef struct {
    char **items; /* malloc'd strings */
    int len;
} mt_rules_strings;

typedef struct {
    char *name;
    int line, column; /* of the rule's mapping, 1-based */
    /* when: every condition given must hold (none given: after every cell) */
    long long cell_peak, cell_retained; /* bytes, -1 when not given */
    mt_rules_level memory_above, until;
    long long idle_for; /* cells, -1 when not given */
    int created;        /* a variable was created or rebound by this cell */
    /* The kernel's descendants own more than this (private memory, bytes;
     * -1 when not given): a notice about them, or the restart of what the
     * rule names, never a kill. */
    long long children_over;
    /* match: what the action is applied to */
    mt_rules_strings types, dtypes, names;
    long long min_size; /* bytes, 0 when not given */
    mt_rules_order order;
    /* do and its options */
    mt_action action;       /* one with MT_ACTION_IN_RULES */
    char *codec, *to, *dir; /* NULL when not given */
    int level;              /* -1 when not given */
    double rtol;            /* -1 when not given */
    long long cooldown;     /* cells between two firings */
    long long max_per_cell; /* variables acted on per firing */
    int allow_delete;
    /* spill: the variable stays in memory (the file is a checkpoint); the
     * file outlives a normal exit, offered to the notebook's next kernel */
    int keep_in_memory, keep_for_reattach;
} mt_rule;

typedef struct {
    int version;
    mt_rules_level budget, notice;  /* UNSET when not given */
    int budget_line, budget_column; /* of budget:'s value, for the kernel's refusal */
    /* swap: whether the budget counts swap as room (-1 when not given), and
     * where it is written; thrashing: 1 stop, 0 warn, -1 not given. */
    int swap, swap_line, swap_column;
    int thrash_stop;
    mt_rules_strings protect;
    mt_rule *rules;
    int len;
} mt_rules_table;

typedef struct {
    int line, column; /* 1-based; 0 when the error is about the whole file */
    char message[MT_RULES_MESSAGE_BYTES];
} mt_rules_error;

typedef struct {
    mt_rules_error items[MT_RULES_MAX_ERRORS];
    int len;
    int more; /* errors beyond MT_RULES_MAX_ERRORS */
} mt_rules_errors;

/* Parses a rules document of len bytes.  A relative spill dir: starts at
 * directory (the rules file's; NULL: the working directory) and is stored
 * absolute; every dir: must be an existing directory of the user's that
 * they can write, and a relative one must stay under directory.  Returns 0
 * and fills *out (free it with mt_rules_table_free), or -1 with *errors
 * filled and *out untouched; -2 when memory ran out.  Thread-safe, no GIL
 * needed. */
int mt_rules_parse(const char *text, size_t len, const char *directory, mt_rules_table *out,
                   mt_rules_errors *errors);
void mt_rules_table_free(mt_rules_table *t);

/* Reads the rules file at path: only a regular file, opened without
 * blocking (a FIFO or a device is refused, never waited on or read), and at
 * most MT_RULES_MAX_FILE_BYTES + 1 bytes, so the parser can say it is too
 * big without the rest being read.  Returns 0 with *text (malloc'd, free
 * it) and *len; -1 with problem saying why, in words for the user; -2 when
 * memory ran out. */
int mt_rules_read_file(const char *path, char **text, size_t *len, char *problem, size_t n);

/* The closest of names to word (a typo's likely meaning: one edit away for
 * words of up to 3 letters, two for longer ones), or NULL when none is
 * close.  The one "did you mean" of rules files and magics alike. */
const char *mt_rules_closest(const char *word, const char *const *names, int n);

/* Why a budget of 0 bytes is refused, by the rules file and the magics. */
#define MT_RULES_ZERO_BUDGET                                                                       \
    "a budget of 0 bytes would refuse every allocation: give a positive size like 8GiB or 80%, "   \
    "or off to turn the guard off"

/* Sizes as the magics write them: a number with an optional unit (B, K,
 * KB, KiB, M, MB, MiB, G, GB, GiB, T, TB, TiB; case ignored; K/M/G/T are
 * binary).  0 on success, -1 when text is not a size. */
int mt_rules_parse_size(const char *text, long long *bytes);
/* A size for people, in binary units ("1.9 GiB", "760 MiB", "12 KiB",
 * "0 B"; "+" in front of a positive one when sign): the one formatter of
 * the messages C writes and of Python's sizes.format_size. */
void mt_rules_format_size(long long bytes, int sign, char *buf, size_t n);
#define MT_RULES_SIZE_TEXT 24 /* room for any size mt_rules_format_size writes */
/* A size or a percentage above 0 and at most 100 ("80%"). */
int mt_rules_parse_level(const char *text, mt_rules_level *out);
/* Why the parsers above refused text (percent: mt_rules_parse_level's),
 * in words that say what to write instead; the one wording the rules file,
 * the magics and _core all show.  At most MT_RULES_PROBLEM_MAX bytes. */
#define MT_RULES_PROBLEM_MAX 256
void mt_rules_level_problem(const char *text, int percent, char *buf, size_t n);

/* "compress", "del", ... and "largest", ... as written in the file. */
const char *mt_rules_action_name(mt_action a);
const char *mt_rules_order_name(mt_rules_order o);

/* fnmatch-style glob of a name against the table's protect list: 1 when
 * protected. */
int mt_rules_protected(const mt_rules_table *t, const char *name);

#endif
