/* options: the defaults, valid values and refusal words of the options
 * that %shrink and the rules file share (codec, level, rtol, to), stated once.
 * Plain C (rules.c has no Python API); each *_problem writes, for the text
 * the user wrote, what to write instead, and callers put the option's name
 * in front ("--level: ...", "level: ..."). */
#ifndef MEMTAMER_OPTIONS_H
#define MEMTAMER_OPTIONS_H

#include <blosc.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#define MT_OPTIONS_PROBLEM_MAX 256

#define MT_DEFAULT_RTOL 1e-3    /* floats may move by at most 0.1% of their value */
#define MT_DEFAULT_CODEC "auto" /* the codec that makes a sample smallest */
#define MT_DEFAULT_LEVEL 5
#define MT_LEVEL_MIN 0
#define MT_LEVEL_MAX 9

static inline int
mt_options_rtol_ok(double rtol)
{
    return isfinite(rtol) && rtol >= 0;
}

static inline void
mt_options_rtol_problem(const char *text, char *buf, size_t n)
{
    snprintf(buf, n, "'%.40s' is not a number >= 0: write e.g. %g", text, MT_DEFAULT_RTOL);
}

static inline int
mt_options_codec_ok(const char *name)
{
    return strcmp(name, "auto") == 0 || blosc_compname_to_compcode(name) >= 0;
}

static inline void
mt_options_codec_problem(const char *text, char *buf, size_t n)
{
    snprintf(buf, n, "'%.40s' is not a codec here: use auto or one of %s (blosc %s)", text,
             blosc_list_compressors(), blosc_get_version_string());
}

static inline int
mt_options_level_ok(long long level)
{
    return level >= MT_LEVEL_MIN && level <= MT_LEVEL_MAX;
}

static inline void
mt_options_level_problem(const char *text, char *buf, size_t n)
{
    snprintf(buf, n,
             "'%.40s' is not a whole number from %d (fastest) to %d (smallest): write e.g. %d",
             text, MT_LEVEL_MIN, MT_LEVEL_MAX, MT_DEFAULT_LEVEL);
}

/* The types `%shrink downcast --to` and a rule's `to:` name; auto lets the
 * values choose. */
static const char *const mt_options_targets[] = {
    "auto", "float32", "float16", "bool", "int8", "int16", "int32", "uint8", "uint16", "uint32",
};

static inline int
mt_options_target_ok(const char *name)
{
    for (size_t i = 0; i < sizeof mt_options_targets / sizeof mt_options_targets[0]; i++) {
        if (strcmp(name, mt_options_targets[i]) == 0) {
            return 1;
        }
    }
    return 0;
}

static inline void
mt_options_target_problem(const char *text, char *buf, size_t n)
{
    int at = snprintf(buf, n, "'%.40s' is not a type to downcast to: use", text);
    size_t count = sizeof mt_options_targets / sizeof mt_options_targets[0];
    for (size_t i = 0; i < count && at > 0 && (size_t)at < n; i++) {
        at += snprintf(buf + at, n - (size_t)at, "%s %s",
                       i == 0           ? ""
                       : i + 1 == count ? " or"
                                        : ",",
                       mt_options_targets[i]);
    }
}

#endif
