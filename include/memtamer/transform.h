/* transform: lossless narrowing of 8-byte numbers before compression.
 *
 * Most real float64 data are decimals in disguise (prices, temperatures,
 * readings with a fixed number of decimals): for one exponent e, every value
 * v equals digits / 10^e exactly, as IEEE division rounds it.  Storing the
 * integer digits, less their smallest value (a frame of reference), in 1, 2
 * or 4 bytes turns 8 bytes into a few that a byte-shuffling compressor
 * squeezes much further.  Values that are no such decimal (NaN payloads,
 * -0.0, infinities, noise) are exceptions, kept apart bit for bit.  Integers
 * (int64, uint64, datetime64) take the same frame-of-reference narrowing.
 * Either may store the differences of neighbours instead (random walks,
 * regular timestamps), whichever is narrower.
 *
 * float64 values that are float32 values (a float32 array made float64)
 * narrow to those float32s' bits instead, exactly.
 *
 * Data that repeat with a period (a table's rows again, a daily cycle) may
 * store each digit's difference from the digit one period (the lag) back,
 * where that is narrower; a lag found by the plan applies to the whole run
 * of values (a chunk), so its blocks decode in order, each after the ones
 * before it.  With a lag, doubles that are no decimals and no float32s use
 * their own bits as digits (repeats up to a few units in the last place).
 *
 * Data are encoded in blocks that carry their own header (form, exponent,
 * width, base, exceptions), so without a lag any block decodes alone.  Each float64 block
 * chooses its form and exponent from a few of its own values (a table's
 * columns of tenths and of thousandths each keep their width).  A block that
 * would not narrow is stored as it is.
 *
 * Pure C, no Python: plain C tests drive it (tests/c/test_transform.c).
 * Thread-safe: the functions touch only what they are given. */
#ifndef MEMTAMER_TRANSFORM_H
#define MEMTAMER_TRANSFORM_H

#include <stddef.h>
#include <stdint.h>

typedef enum { MT_VALUES_FLOAT64, MT_VALUES_INT64, MT_VALUES_UINT64 } mt_values_type;

/* What a float64 block's digits are: decimal digits at the block's own
 * exponent, the bits of the float32 that holds the same value, or (with a
 * lag only) the double's own bits. */
typedef enum { MT_FORM_DECIMAL, MT_FORM_FLOAT32, MT_FORM_BITS } mt_values_form;

typedef struct {
    mt_values_type type;
    mt_values_form form;  /* float64: the form most of the sample took */
    int exponent;         /* float64 decimals: the exponent most of the sample took; -1: none */
    double narrowed_size; /* estimated bytes per value after narrowing, from the sample */
    size_t lag;           /* the period blocks may take differences over; 0: none */
    int aligned; /* each block rounds its base down (to a power of two its width leaves room
                    for), so that the blocks of one series store the same digit for the same
                    value: for a stage that codes many blocks with one model (entropy.h).  The
                    caller's to set; plans leave it 0. */
} mt_transform_plan;

/* Estimates from a sample of the n values what narrowing would give, each
 * run of the sample in its best form as each block would be, and names the
 * form (and exponent) most runs took; reads at most a few thousand values,
 * and looks for a lag (period) over a window of at most
 * MT_TRANSFORM_MAX_LAG values. */
void mt_transform_plan_for(const void *values, size_t n, mt_values_type t, mt_transform_plan *plan);

/* The longest period a plan looks for. */
#define MT_TRANSFORM_MAX_LAG ((size_t)1 << 17)

/* Bytes that encoding count values may take at most, and the scratch
 * memory (in bytes) mt_transform_encode needs for them. */
size_t mt_transform_bound(size_t count);
size_t mt_transform_scratch_size(size_t count);

/* Encodes count values into out (room: mt_transform_bound(count)) as one
 * block; returns the bytes written.  scratch: mt_transform_scratch_size(count)
 * bytes, 8-byte aligned.  before: how many values of the same run precede
 * values in memory (the lag may reach back into them). */
size_t mt_transform_encode(const mt_transform_plan *plan, const void *values, size_t count,
                           size_t before, void *scratch, void *out);

/* Decodes the block at in into count values (count and before as given to
 * encode; with a lag, the `before` values preceding `values` must already
 * be decoded); returns the bytes of the block read, 0 when the block is
 * malformed (its header does not fit in `size` bytes or disagrees with
 * count). */
size_t mt_transform_decode(const mt_transform_plan *plan, const void *in, size_t size, size_t count,
                           size_t before, void *values);

/* The width (1, 2, 4 or 8 bytes) of the digits of an encoded block: the
 * element size a byte-shuffling compressor should use. */
int mt_transform_block_width(const void *in);

/* The bytes of the encoded block at in (count values), from its header
 * alone; 0 when it is malformed or longer than size. */
size_t mt_transform_block_size(const void *in, size_t size, size_t count);

#endif
