/* actions: the table of %shrink's and the rules' actions (actions.h). */
#include "memtamer/actions.h"

#include <string.h>

#define BOTH (MT_ACTION_IN_SHRINK | MT_ACTION_IN_RULES)
#define OPT(o) MT_OPTION_BIT(MT_OPTION_##o)
/* Every %shrink action can say what it would do and change nothing. */
#define SHRINK_OPTIONS OPT(DRY_RUN)

const mt_action_info mt_actions[MT_DO_COUNT] = {
    [MT_DO_NOTICE] = {"notice", MT_ACTION_IN_RULES, 0, 1, "notice", "noticed",
                      "say what matched, change nothing"},
    [MT_DO_COMPRESS] = {"compress", BOTH, SHRINK_OPTIONS | OPT(CODEC) | OPT(LEVEL) | OPT(COPY), 1,
                        "compress", "compressed",
                        "replace by a blosc-compressed proxy; any use of it restores it"},
    [MT_DO_SPILL] = {"spill", BOTH,
                     SHRINK_OPTIONS | OPT(DIR) | OPT(COPY) | OPT(KEEP_IN_MEMORY) |
                         OPT(KEEP_FOR_REATTACH),
                     1, "spill", "spilled",
                     "to a file of the notebook's spill store, mapped back (RSS released): a numpy "
                     "array → np.memmap; a DataFrame, Series, Arrow table, torch tensor, dict or "
                     "list of arrays, any picklable object → itself, its buffers mapped from the "
                     "file; --keep-in-memory: a checkpoint, the variable left in memory"},
    [MT_DO_DOWNCAST] = {"downcast", BOTH,
                        SHRINK_OPTIONS | OPT(TO) | OPT(RTOL) | OPT(NARROW) | OPT(COPY), 1,
                        "downcast", "downcast",
                        "float64→float32 (--to), ints to their smallest type with --narrow, in "
                        "place when safe"},
    [MT_DO_PACK] = {"pack", BOTH, SHRINK_OPTIONS | OPT(NARROW) | OPT(COPY), 1, "pack", "packed",
                    "list/tuple of numbers → the numpy array np.array() would make (int64, "
                    "float64, bool); the smallest exact one with --narrow"},
    [MT_DO_CLEAR_OUTPUT_CACHE] = {"clear_output_cache", MT_ACTION_IN_RULES, 0, 0, "drop", "dropped",
                                  "drop the Out[n] entries no variable holds"},
    [MT_DO_DEL] = {"del", BOTH, SHRINK_OPTIONS | OPT(ALLOW_DELETE), 1, "delete", "deleted",
                   "remove the names and IPython's cached references to them (Out, _, _N), "
                   "collect, and give freed heap back to the OS; also Out[N], _N, "
                   "sys.last_traceback, and a name you deleted whose object a cache still "
                   "holds"},
    [MT_DO_COLLECT] = {"collect", MT_ACTION_IN_RULES, 0, 0, "collect", "collected",
                       "run the garbage collector and give freed heap back to the OS"},
    [MT_DO_RESTORE] = {"restore", MT_ACTION_IN_SHRINK, SHRINK_OPTIONS, 1, "restore", "restored",
                       "undo compress"},
    [MT_DO_TRIM] = {"trim", MT_ACTION_IN_SHRINK, SHRINK_OPTIONS, 0, "trim", "trimmed",
                    "give the heap's free memory back to the OS (malloc_trim), RSS measured"},
    [MT_DO_REATTACH] =
        {"reattach", MT_ACTION_IN_SHRINK, SHRINK_OPTIONS | OPT(DISCARD), 1, "reattach",
         "reattached",
         "all | NAME...: map back what the notebook's previous kernel spilled before "
         "it died, checksums verified; --discard removes them instead"},
    [MT_DO_RESTART] = {"restart", MT_ACTION_IN_RULES, 0, 1, "restart", "restarted",
                       "NAME.restart(): new workers for the pool or cluster the rule names (a "
                       "dask Client), with when: children_over"},
};

const mt_action_option_info mt_actions_options[MT_OPTION_COUNT] = {
    [MT_OPTION_TO] = {"to", BOTH, 0},
    [MT_OPTION_RTOL] = {"rtol", BOTH, 0},
    [MT_OPTION_NARROW] = {"narrow", MT_ACTION_IN_SHRINK, 1},
    [MT_OPTION_CODEC] = {"codec", BOTH, 0},
    [MT_OPTION_LEVEL] = {"level", BOTH, 0},
    [MT_OPTION_DIR] = {"dir", BOTH, 0},
    [MT_OPTION_COPY] = {"copy", MT_ACTION_IN_SHRINK, 1},
    [MT_OPTION_DISCARD] = {"discard", MT_ACTION_IN_SHRINK, 1},
    [MT_OPTION_ALLOW_DELETE] = {"allow_delete", MT_ACTION_IN_RULES, 1},
    [MT_OPTION_DRY_RUN] = {"dry_run", MT_ACTION_IN_SHRINK, 1},
    [MT_OPTION_KEEP_IN_MEMORY] = {"keep_in_memory", BOTH, 1},
    [MT_OPTION_KEEP_FOR_REATTACH] = {"keep_for_reattach", BOTH, 1},
};

int
mt_actions_find(const char *name)
{
    for (int a = 0; a < MT_DO_COUNT; a++) {
        if (strcmp(name, mt_actions[a].name) == 0) {
            return a;
        }
    }
    return -1;
}

int
mt_actions_find_option(const char *name)
{
    for (int o = 0; o < MT_OPTION_COUNT; o++) {
        if (strcmp(name, mt_actions_options[o].name) == 0) {
            return o;
        }
    }
    return -1;
}

int
mt_actions_names(unsigned where, const char **names)
{
    int n = 0;
    for (int a = 0; a < MT_DO_COUNT; a++) {
        if (mt_actions[a].where & where) {
            names[n++] = mt_actions[a].name;
        }
    }
    return n;
}
