/* actions: the vocabulary of %shrink and of a rule's do:, stated once.
 *
 * One row per action: its name, where it can be asked for (%shrink, a rules
 * file's do:, or both), the options it takes, its verb and the word for what it did, and
 * one line of help.  rules.c checks a rule against it; _core.shrink_actions()
 * gives it to Python, whose option checks, magic help, docstrings and
 * notices derive from it.  Adding an action: a row here, its
 * implementation, its tests.  Plain C, no Python API (rules.c uses it). */
#ifndef MEMTAMER_ACTIONS_H
#define MEMTAMER_ACTIONS_H

/* The table's rows.  A rule's do: holds one of those with MT_ACTION_IN_RULES. */
typedef enum {
    MT_DO_NOTICE = 0,
    MT_DO_COMPRESS,
    MT_DO_SPILL,
    MT_DO_DOWNCAST,
    MT_DO_PACK,
    MT_DO_CLEAR_OUTPUT_CACHE,
    MT_DO_DEL,
    MT_DO_COLLECT,
    MT_DO_RESTORE,
    MT_DO_TRIM,
    MT_DO_REATTACH,
    MT_DO_RESTART,
    MT_DO_COUNT
} mt_action;

/* The options actions take, as %shrink (--dry-run) and the rules file
 * (dry_run) write them. */
typedef enum {
    MT_OPTION_TO = 0,
    MT_OPTION_RTOL,
    MT_OPTION_NARROW,
    MT_OPTION_CODEC,
    MT_OPTION_LEVEL,
    MT_OPTION_DIR,
    MT_OPTION_COPY,
    MT_OPTION_DISCARD,
    MT_OPTION_ALLOW_DELETE,
    MT_OPTION_DRY_RUN,
    MT_OPTION_KEEP_IN_MEMORY,
    MT_OPTION_KEEP_FOR_REATTACH,
    MT_OPTION_COUNT
} mt_action_option;

/* Where an action or an option can be asked for. */
#define MT_ACTION_IN_SHRINK 1u /* %shrink and memtamer.shrink() */
#define MT_ACTION_IN_RULES 2u  /* a rule's do: (an option: a key of the rule) */

#define MT_OPTION_BIT(o) (1u << (o))

typedef struct {
    const char *name;
    unsigned where;
    int is_switch; /* on or off, off unless given (--copy); else it takes a value */
} mt_action_option_info;

typedef struct {
    const char *name;
    unsigned where;
    unsigned options; /* MT_OPTION_BIT per option it takes */
    int on_variables; /* acts on variables it is given or matches (not the kernel, not a cache) */
    const char *verb; /* what it does, in a sentence: "compress", "delete" */
    const char *past; /* what it did to a variable: "compressed" */
    const char *help; /* one line */
} mt_action_info;

extern const mt_action_info mt_actions[MT_DO_COUNT];
extern const mt_action_option_info mt_actions_options[MT_OPTION_COUNT];

/* The action or option called name, or -1. */
int mt_actions_find(const char *name);
int mt_actions_find_option(const char *name);

/* The names of the actions that can be asked for where, in the table's
 * order, into names (room for MT_DO_COUNT); returns how many. */
int mt_actions_names(unsigned where, const char **names);

#endif
