/* transform: lossless narrowing of 8-byte numbers (transform.h).
 *
 * Every stored digit is computed in modular (uint64) arithmetic, so a round
 * trip is exact whatever the values: the ranges only decide how many bytes
 * the digits need, and a decimal is accepted only after dividing it back
 * gave the very same bits. */
#include "memtamer/transform.h"

#include <float.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

/* Powers of ten, each exactly representable as a double. */
static const double POW10[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8, 1e9,
                               1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18};
#define MAX_EXPONENT ((int)(sizeof POW10 / sizeof POW10[0]) - 1)

/* Adding then subtracting 1.5 * 2^52 rounds a double below 2^51 in magnitude
 * to the nearest integer (ties to even), without a library call. */
#define ROUND_MAGIC 6755399441055744.0
#define ROUND_LIMIT 2251799813685248.0

#define SIGN_BIT ((uint64_t)1 << 63)

/* The sample that chooses the exponent: this many runs of neighbours. */
#define SAMPLE_RUNS 32
#define SAMPLE_RUN 64

/* A block keeps at most one value in this many apart; more, and it is
 * stored as it is. */
#define MAX_EXCEPTION_SHARE 16

/* The values a block of 8-byte floats samples to decide its own form:
 * enough to see a column change, a small share of a block's cost. */
#define BLOCK_SAMPLE 32

/* The values over which the plan looks for a lag: a few that repeat
 * after a period are enough to find it, and each lag tried costs as many
 * subtractions. */
#define LAG_WINDOW 16

/* What each stored digit is measured from. */
enum { FROM_BASE, FROM_NEIGHBOUR, FROM_LAG };

/* Each encoded block starts with this header. */
typedef struct {
    uint8_t width;       /* bytes per digit: 1, 2 or 4; 8: the values as they are */
    uint8_t from;        /* FROM_*: digits less base, or differences from the left neighbour,
                            or from the digit one lag back */
    uint8_t form;        /* mt_values_form: what a float64 block's digits are */
    uint8_t exponent;    /* MT_FORM_DECIMAL: this block's v == digits / 10^exponent */
    uint32_t exceptions; /* then: uint32 offsets, then uint64 bits */
    uint64_t base;       /* subtracted from every stored digit */
    uint64_t first;      /* with differences: the first digit in full */
} block_header;

#define EXCEPTION_BYTES (sizeof(uint32_t) + sizeof(uint64_t))

static uint64_t
bits_of(double v)
{
    uint64_t b;
    memcpy(&b, &v, sizeof b);
    return b;
}

static float
float_of_bits(uint32_t bits)
{
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

/* The one definition of a decimal's value: encode checks with it what
 * decode computes. */
static double
decimal_value(int64_t digits, int exponent)
{
    return (double)digits / POW10[exponent];
}

/* 1 and *digits when v == digits / 10^exponent bit for bit, else 0. */
static int
decimal_digits(double v, int exponent, int64_t *digits)
{
    double scaled = v * POW10[exponent];
    if (!(scaled > -ROUND_LIMIT && scaled < ROUND_LIMIT)) {
        return 0; /* NaN, infinities, too many digits */
    }
    int64_t d = (int64_t)((scaled + ROUND_MAGIC) - ROUND_MAGIC);
    if (bits_of(decimal_value(d, exponent)) != bits_of(v)) {
        return 0; /* -0.0, or no decimal at this exponent */
    }
    *digits = d;
    return 1;
}

static int
width_for(uint64_t range)
{
    return range <= 0xFF ? 1 : range <= 0xFFFF ? 2 : range <= 0xFFFFFFFFu ? 4 : 8;
}

/* 1 and *digits (its float32 bits) when v is a float32 value held in a
 * double, bit for bit, else 0. */
static int
float32_digits(double v, int64_t *digits)
{
    if (!(v >= -FLT_MAX && v <= FLT_MAX)) {
        return 0; /* NaN, infinities, out of float32's range (where the cast is undefined) */
    }
    float narrow = (float)v;
    uint32_t bits;
    if (bits_of((double)narrow) != bits_of(v)) {
        return 0; /* more precision than float32 holds */
    }
    memcpy(&bits, &narrow, sizeof bits);
    *digits = (int64_t)bits;
    return 1;
}

/* One value's digits in a float64 block of this form and exponent. */
static int
float_digits(double v, mt_values_form form, int exponent, int64_t *digits)
{
    switch (form) {
    case MT_FORM_FLOAT32:
        return float32_digits(v, digits);
    case MT_FORM_BITS:
        *digits = (int64_t)bits_of(v);
        return 1;
    default:
        return decimal_digits(v, exponent, digits);
    }
}

/* 1 and *d when the value at `at` (8 bytes) has a digit in this form. */
static int
own_digit(mt_values_type type, mt_values_form form, int exponent, const char *at, int64_t *d)
{
    uint64_t bits;
    memcpy(&bits, at, sizeof bits);
    if (type != MT_VALUES_FLOAT64) {
        *d = (int64_t)(type == MT_VALUES_UINT64 ? bits ^ SIGN_BIT : bits);
        return 1;
    }
    double v;
    memcpy(&v, &bits, sizeof v);
    return float_digits(v, form, exponent, d);
}

/* The digit the value at index j of a block (`before` values of the run
 * precede it) is measured from: that of the value one lag back, or of the
 * first one a whole number of lags back with a digit (an exception has
 * none), 0 when there is none in the run.  Encode reads it from the source
 * and decode from the values it restored, the same bits, so both agree
 * whatever the values. */
static int64_t
reference_digit(mt_values_type type, mt_values_form form, int exponent, const char *block, size_t j,
                size_t before, size_t lag)
{
    int64_t d;
    for (ptrdiff_t back = (ptrdiff_t)j - (ptrdiff_t)lag; back >= -(ptrdiff_t)before;
         back -= (ptrdiff_t)lag) {
        if (own_digit(type, form, exponent, block + back * 8, &d)) {
            return d;
        }
    }
    return 0;
}

/* The bits of the value whose digit is d: the inverse of digits_of. */
static uint64_t
value_bits(mt_values_type type, mt_values_form form, int exponent, uint64_t d)
{
    if (type != MT_VALUES_FLOAT64 || form == MT_FORM_BITS) {
        return type == MT_VALUES_UINT64 ? d ^ SIGN_BIT : d;
    }
    double v = form == MT_FORM_FLOAT32 ? (double)float_of_bits((uint32_t)d)
                                       : decimal_value((int64_t)d, exponent);
    return bits_of(v);
}

/* Digits of count values into digit[]; exception offsets into exc[] (room
 * for max_exc).  Returns the number of exceptions, max_exc + 1 when there
 * are more.  An exception's digit is its left neighbour's (the block's
 * first regular digit when it leads), so that it widens nothing. */
static size_t
digits_of(mt_values_type type, mt_values_form form, int exponent, const void *values, size_t count,
          int64_t *digit, uint32_t *exc, size_t max_exc)
{
    if (type != MT_VALUES_FLOAT64) {
        memcpy(digit, values, count * sizeof *digit);
        if (type == MT_VALUES_UINT64) {
            for (size_t j = 0; j < count; j++) {
                digit[j] = (int64_t)((uint64_t)digit[j] ^ SIGN_BIT); /* unsigned order */
            }
        }
        return 0;
    }
    const double *v = values;
    size_t nexc = 0, leading = 0;
    int64_t previous = 0;
    for (size_t j = 0; j < count; j++) {
        int64_t d;
        if (float_digits(v[j], form, exponent, &d)) {
            previous = d;
        }
        else {
            if (nexc == max_exc) {
                return max_exc + 1;
            }
            exc[nexc++] = (uint32_t)j;
            leading += nexc == j + 1; /* no regular digit yet */
        }
        digit[j] = previous;
    }
    for (size_t j = 0; j < leading && leading < count; j++) {
        digit[j] = digit[leading];
    }
    return nexc;
}

/* The range (hi - lo, and lo) of v[0..count) as signed numbers. */
static uint64_t
spread(const int64_t *v, size_t count, uint64_t *lowest)
{
    int64_t lo = v[0], hi = v[0];
    for (size_t j = 1; j < count; j++) {
        lo = v[j] < lo ? v[j] : lo;
        hi = v[j] > hi ? v[j] : hi;
    }
    *lowest = (uint64_t)lo;
    return (uint64_t)hi - (uint64_t)lo;
}

/* The base rounded down to the coarsest power of two that keeps every
 * digit (span above base at most) in width bytes, and the top byte of
 * wider digits no larger than the span's (a single byte may take any
 * value): the blocks of one series then
 * mostly store the same digit for the same value, as a stage that codes
 * many blocks with one model (entropy.h) needs, their top bytes as
 * constant as before. */
static uint64_t
aligned_base(uint64_t base, uint64_t span, int width)
{
    if (width >= 8) {
        return base;
    }
    int top = 8 * (width - 1);
    uint64_t most = width == 1 ? 0xFF : (((span >> top) + 1) << top) - 1;
    for (int k = 8 * width; k > 0; k--) {
        uint64_t below = base & (((uint64_t)1 << k) - 1);
        if (below <= most - span) {
            return base - below;
        }
    }
    return base;
}

/* Every this many values are counted for plane_bits: enough to tell two
 * sequences apart, a quarter of the cost. */
#define PLANE_STRIDE 4

/* The bits per value that the byte planes of v[0..count) less base, width
 * bytes each, take under an order-0 code of each plane (their empirical
 * entropy, over every PLANE_STRIDE-th value): what rANS (entropy.h), and
 * near enough zstd's Huffman code, spend on them. */
static double
plane_bits(const int64_t *v, size_t count, uint64_t base, int width)
{
    double bits = 0;
    size_t n = (count + PLANE_STRIDE - 1) / PLANE_STRIDE;
    for (int k = 0; k < width && n; k++) {
        uint32_t freq[256] = {0};
        for (size_t j = 0; j < count; j += PLANE_STRIDE) {
            freq[(uint8_t)(((uint64_t)v[j] - base) >> (8 * k))]++;
        }
        for (int s = 0; s < 256; s++) {
            bits -= freq[s] ? freq[s] * log2((double)freq[s] / (double)n) : 0;
        }
    }
    return n ? bits / (double)n : 0;
}

/* The narrowest of the frames of reference over digit[0..count): the
 * digits less their least, their differences, or (lagged given) their
 * differences from the digits one lag back; between the first two, when
 * weigh is set and both narrow, the one whose byte planes carry fewer
 * bits (a random walk's steps, a noisy series' neighbours; independent
 * draws keep their digits).  Fills stored[] with the chosen sequence;
 * *base is what it is measured from, aligned when asked. */
static void
choose_frame(const int64_t *digit, const int64_t *lagged, size_t count, int weigh, int align,
             int *width, int *from, uint64_t *base, int64_t *stored)
{
    uint64_t lowest, step_lowest = 0, lag_lowest = 0;
    uint64_t plain_span = spread(digit, count, &lowest), diff_span = UINT64_MAX,
             lag_span = UINT64_MAX;
    int plain = width_for(plain_span), diff = 8, lag = 8;
    for (size_t j = 1; j < count; j++) {
        stored[j] = (int64_t)((uint64_t)digit[j] - (uint64_t)digit[j - 1]);
    }
    if (count > 1) {
        diff_span = spread(stored + 1, count - 1, &step_lowest);
        diff = width_for(diff_span);
    }
    if (lagged != NULL) {
        lag_span = spread(lagged, count, &lag_lowest);
        lag = width_for(lag_span);
    }
    int steps = diff < plain;
    if (weigh && diff < 8 && plain < 8 && count > 1) {
        steps = plane_bits(stored + 1, count - 1, step_lowest, diff) <
                plane_bits(digit, count, lowest, plain);
    }
    *from = lag < plain && lag < diff ? FROM_LAG : steps ? FROM_NEIGHBOUR : FROM_BASE;
    switch (*from) {
    case FROM_LAG:
        *width = lag;
        *base = align ? aligned_base(lag_lowest, lag_span, lag) : lag_lowest;
        memcpy(stored, lagged, count * sizeof *stored);
        break;
    case FROM_NEIGHBOUR:
        *width = diff;
        *base = align ? aligned_base(step_lowest, diff_span, diff) : step_lowest;
        stored[0] = (int64_t)*base; /* the first digit is in the header */
        break;
    default:
        *width = plain;
        *base = align ? aligned_base(lowest, plain_span, plain) : lowest;
        memcpy(stored, digit, count * sizeof *stored);
    }
}

/* Estimated bytes of one sample run in one form: past one exception in
 * sixteen a block is stored as it is. */
static double
run_bytes(mt_values_type t, mt_values_form form, int exponent, const char *at, size_t run,
          int64_t *digit, uint32_t *exc)
{
    size_t nexc = digits_of(t, form, exponent, at, run, digit, exc, run / 4);
    int width = 8, from;
    uint64_t base;
    if (nexc * MAX_EXCEPTION_SHARE <= run) {
        choose_frame(digit, NULL, run, 0, 0, &width, &from, &base, digit + run);
    }
    return width == 8 ? 8.0 * (double)run : (double)(run * (size_t)width + nexc * EXCEPTION_BYTES);
}

/* A float64 block's candidate forms from BLOCK_SAMPLE values spread over
 * it: the smallest exponent that fits the most of them (*decimals of the
 * sample fit), and how many are float32 values (*floats). */
static void
sample_block(const double *v, size_t count, int *exponent, size_t *decimals, size_t *floats)
{
    size_t sample = count < BLOCK_SAMPLE ? count : BLOCK_SAMPLE;
    int64_t d;
    *exponent = 0;
    *decimals = 0;
    *floats = 0;
    for (size_t k = 0; k < sample; k++) {
        *floats += (size_t)float32_digits(v[k * count / sample], &d);
    }
    for (int e = 0; e <= MAX_EXPONENT && *decimals < sample; e++) {
        size_t fit = 0;
        for (size_t k = 0; k < sample; k++) {
            fit += (size_t)decimal_digits(v[k * count / sample], e, &d);
        }
        if (fit > *decimals) {
            *decimals = fit;
            *exponent = e;
        }
    }
}

/* The lag over which the digits of LAG_WINDOW values (those after the
 * longest lag tried) differ least from the digits one lag back: the
 * shortest whose differences span less than half what any shorter one's
 * do (a multiple of the period is no better than the period); 0 when those
 * are not narrower than the digits less their least or the neighbours'
 * differences, or there are too few values.  *width: the bytes those differences need. */
static size_t
find_lag(const char *values, size_t n, mt_values_type t, mt_values_form form, int exponent,
         int *width)
{
    if (n < 2 * LAG_WINDOW) {
        return 0;
    }
    size_t reach = n - LAG_WINDOW < MT_TRANSFORM_MAX_LAG ? n - LAG_WINDOW : MT_TRANSFORM_MAX_LAG;
    int64_t *digit = malloc((reach + LAG_WINDOW) * sizeof *digit);
    if (digit == NULL) {
        return 0; /* no lag: a plan that narrows less, never a wrong one */
    }
    for (size_t i = 0; i < reach + LAG_WINDOW; i++) {
        if (!own_digit(t, form, exponent, values + i * 8, &digit[i])) {
            digit[i] = 0;
        }
    }
    const int64_t *window = digit + reach;
    /* A lag is taken when its differences span less than `below`, half
     * the span of the best lag so far. */
    uint64_t below = UINT64_MAX;
    int neighbour = 8;
    size_t lag = 0;
    *width = 8;
    for (size_t p = 1; p <= reach && below > 0; p++) {
        int64_t lo = INT64_MAX, hi = INT64_MIN;
        size_t i = 0;
        for (; i < LAG_WINDOW && (uint64_t)hi - (uint64_t)lo < below; i++) {
            int64_t r =
                (int64_t)((uint64_t)window[i] - (uint64_t)window[(ptrdiff_t)i - (ptrdiff_t)p]);
            lo = r < lo ? r : lo;
            hi = r > hi ? r : hi;
        }
        if (i == LAG_WINDOW && (uint64_t)hi - (uint64_t)lo < below) {
            *width = width_for((uint64_t)hi - (uint64_t)lo);
            below = ((uint64_t)hi - (uint64_t)lo) / 2;
            lag = p;
        }
        if (p == 1) {
            neighbour = *width;
        }
    }
    uint64_t lowest;
    int plain = width_for(spread(window, LAG_WINDOW, &lowest));
    free(digit);
    return lag > 1 && *width < neighbour && *width < plain ? lag : 0;
}

void
mt_transform_plan_for(const void *values, size_t n, mt_values_type t, mt_transform_plan *plan)
{
    int64_t digit[2 * SAMPLE_RUN];
    uint32_t exc[SAMPLE_RUN];
    int wins[MAX_EXPONENT + 2] = {0}; /* runs won by each exponent, then by float32 */
    size_t runs = n / SAMPLE_RUN < SAMPLE_RUNS ? n / SAMPLE_RUN : SAMPLE_RUNS;
    size_t run = runs ? SAMPLE_RUN : n;
    runs = runs ? runs : 1;
    int floats = t == MT_VALUES_FLOAT64;
    double bytes = 0;
    for (size_t k = 0; k < runs && run; k++) {
        size_t first = runs == 1 ? 0 : k * (n - run) / (runs - 1);
        const char *at = (const char *)values + first * 8;
        /* Each block chooses its own form: so does each run. */
        double best =
            floats ? 8.0 * (double)run : run_bytes(t, MT_FORM_DECIMAL, 0, at, run, digit, exc);
        int winner = -1;
        for (int e = 0; floats && e <= MAX_EXPONENT + 1; e++) {
            mt_values_form form = e <= MAX_EXPONENT ? MT_FORM_DECIMAL : MT_FORM_FLOAT32;
            double b = run_bytes(t, form, e, at, run, digit, exc);
            if (b < best) {
                best = b;
                winner = e;
            }
        }
        if (winner >= 0) {
            wins[winner]++;
        }
        bytes += best;
    }
    plan->type = t;
    plan->aligned = 0;
    plan->form = MT_FORM_DECIMAL;
    plan->exponent = floats ? -1 : 0;
    for (int e = 0; floats && e <= MAX_EXPONENT + 1; e++) {
        int most = plan->exponent < 0 ? 0 : wins[plan->exponent];
        if (wins[e] > most) {
            plan->exponent = e;
        }
    }
    if (plan->exponent == MAX_EXPONENT + 1) {
        plan->form = MT_FORM_FLOAT32;
        plan->exponent = -1;
    }
    plan->narrowed_size = run ? bytes / (double)(runs * run) : 8;
    /* Lags are looked for in the digits the blocks would take: the plan's
     * form, else (when no form narrows without a lag) the exponent that
     * fits most of a sample, else the bits. */
    int width, exponent = plan->exponent;
    mt_values_form lag_form = plan->form;
    if (floats && exponent < 0 && plan->form == MT_FORM_DECIMAL) {
        size_t decimals, singles;
        sample_block(values, n, &exponent, &decimals, &singles);
        lag_form = decimals * 2 > BLOCK_SAMPLE ? MT_FORM_DECIMAL : MT_FORM_BITS;
    }
    plan->lag = find_lag(values, n, t, lag_form, exponent, &width);
    if (plan->lag && width < plan->narrowed_size) {
        plan->narrowed_size = width;
    }
}

size_t
mt_transform_bound(size_t count)
{
    return sizeof(block_header) + count * 8;
}

size_t
mt_transform_scratch_size(size_t count)
{
    return 3 * count * sizeof(int64_t) + (count / MAX_EXCEPTION_SHARE + 1) * sizeof(uint32_t);
}

static size_t
encode_as_is(const void *values, size_t count, void *out)
{
    block_header h = {.width = 8};
    memcpy(out, &h, sizeof h);
    memcpy((char *)out + sizeof h, values, count * 8);
    return sizeof h + count * 8;
}

/* Stores stored[j] less base in width bytes; one loop per width, so each
 * vectorises.  Blocks follow each other at any byte offset: memcpy makes
 * the unaligned stores defined. */
#define NARROW(type)                                                                               \
    do {                                                                                           \
        for (size_t j = 0; j < count; j++) {                                                       \
            type narrowed = (type)((uint64_t)stored[j] - base);                                    \
            memcpy(out + j * sizeof narrowed, &narrowed, sizeof narrowed);                         \
        }                                                                                          \
    } while (0)

static void
narrow(const int64_t *stored, size_t count, int width, uint64_t base, char *out)
{
    switch (width) {
    case 1:
        NARROW(uint8_t);
        break;
    case 2:
        NARROW(uint16_t);
        break;
    default:
        NARROW(uint32_t);
    }
}

/* Each digit less the digit it is measured from over the lag; 0 for an
 * exception (its bits are stored apart). */
static void
lag_differences(mt_values_type type, mt_values_form form, int exponent, const char *values,
                const int64_t *digit, size_t count, size_t before, size_t lag, int64_t *lagged)
{
    for (size_t j = 0; j < count; j++) {
        int64_t own;
        lagged[j] = 0;
        if (own_digit(type, form, exponent, values + j * 8, &own)) {
            int64_t reference = reference_digit(type, form, exponent, values, j, before, lag);
            lagged[j] = (int64_t)((uint64_t)digit[j] - (uint64_t)reference);
        }
    }
}

/* Encodes the block in this form; 0 when it would not narrow. */
static size_t
encode_form(const mt_transform_plan *plan, mt_values_form form, int exponent, const void *values,
            size_t count, size_t before, void *scratch, void *out)
{
    mt_values_type type = plan->type;
    int64_t *digit = scratch, *lagged = digit + count, *stored = lagged + count;
    uint32_t *exc = (uint32_t *)(stored + count);
    size_t max_exc = count / MAX_EXCEPTION_SHARE;
    size_t nexc = digits_of(type, form, exponent, values, count, digit, exc, max_exc);
    if (nexc > max_exc) {
        return 0;
    }
    block_header h = {.form = (uint8_t)form,
                      .exponent = (uint8_t)exponent,
                      .exceptions = (uint32_t)nexc,
                      .first = (uint64_t)digit[0]};
    int width, from;
    if (plan->lag) {
        lag_differences(type, form, exponent, values, digit, count, before, plan->lag, lagged);
    }
    choose_frame(digit, plan->lag ? lagged : NULL, count, 1, plan->aligned, &width, &from, &h.base,
                 stored);
    size_t size = sizeof h + count * (size_t)width + nexc * EXCEPTION_BYTES;
    if (width == 8 || size >= sizeof h + count * 8) {
        return 0;
    }
    h.width = (uint8_t)width;
    h.from = (uint8_t)from;
    char *at = out;
    memcpy(at, &h, sizeof h);
    at += sizeof h;
    narrow(stored, count, width, h.base, at);
    at += count * (size_t)width;
    memcpy(at, exc, nexc * sizeof *exc);
    at += nexc * sizeof *exc;
    for (size_t k = 0; k < nexc; k++, at += sizeof(uint64_t)) {
        memcpy(at, (const char *)values + (size_t)exc[k] * 8, sizeof(uint64_t));
    }
    return size;
}

size_t
mt_transform_encode(const mt_transform_plan *plan, const void *values, size_t count, size_t before,
                    void *scratch, void *out)
{
    size_t size = 0;
    if (count && plan->type != MT_VALUES_FLOAT64) {
        size = encode_form(plan, MT_FORM_DECIMAL, 0, values, count, before, scratch, out);
    }
    else if (count) {
        /* Each block its own form: columns of different decimals, or of
         * float32 values, one after the other, each narrow as it can.
         * Whole numbers are float32 values too, and so is -0.0, no
         * decimal: decimals come first unless float32 fits more values
         * than the exceptions a block may keep. */
        int exponent;
        size_t decimals, floats;
        sample_block(values, count, &exponent, &decimals, &floats);
        if (decimals && decimals * MAX_EXCEPTION_SHARE >= floats * (MAX_EXCEPTION_SHARE - 1)) {
            size =
                encode_form(plan, MT_FORM_DECIMAL, exponent, values, count, before, scratch, out);
        }
        if (size == 0 && floats) {
            size = encode_form(plan, MT_FORM_FLOAT32, 0, values, count, before, scratch, out);
        }
        /* Noise that repeats: its bits, less the bits one lag back. */
        if (size == 0 && plan->lag) {
            size = encode_form(plan, MT_FORM_BITS, 0, values, count, before, scratch, out);
        }
    }
    return size ? size : encode_as_is(values, count, out);
}

/* Digits back from width bytes each: differences summed up, base added. */
#define WIDEN(type)                                                                                \
    do {                                                                                           \
        uint64_t d = h->first;                                                                     \
        for (size_t j = 0; j < count; j++) {                                                       \
            type narrowed;                                                                         \
            memcpy(&narrowed, in + j * sizeof narrowed, sizeof narrowed);                          \
            uint64_t stored = (uint64_t)narrowed + h->base;                                        \
            d = h->from == FROM_NEIGHBOUR ? (j ? d + stored : d) : stored;                         \
            digit[j] = (int64_t)d;                                                                 \
        }                                                                                          \
    } while (0)

/* Widens into the output itself: digits and values are both 8 bytes, and
 * each value is computed from its own digit only. */
static void
widen(const block_header *h, const char *in, size_t count, int64_t *digit)
{
    switch (h->width) {
    case 1:
        WIDEN(uint8_t);
        break;
    case 2:
        WIDEN(uint16_t);
        break;
    default:
        WIDEN(uint32_t);
    }
}

size_t
mt_transform_block_size(const void *in, size_t size, size_t count)
{
    block_header h;
    if (size < sizeof h) {
        return 0;
    }
    memcpy(&h, in, sizeof h);
    size_t need = h.width == 8
                      ? sizeof h + count * 8
                      : sizeof h + count * h.width + (size_t)h.exceptions * EXCEPTION_BYTES;
    int valid = h.width == 8 ||
                ((h.width == 1 || h.width == 2 || h.width == 4) && h.exceptions <= count &&
                 h.form <= MT_FORM_BITS && h.exponent <= MAX_EXPONENT && h.from <= FROM_LAG);
    return valid && need <= size ? need : 0;
}

/* One stored digit of width bytes. */
static uint64_t
stored_digit(const char *at, int width, size_t j)
{
    uint8_t u8;
    uint16_t u16;
    uint32_t u32;
    switch (width) {
    case 1:
        memcpy(&u8, at + j, sizeof u8);
        return u8;
    case 2:
        memcpy(&u16, at + j * sizeof u16, sizeof u16);
        return u16;
    default:
        memcpy(&u32, at + j * sizeof u32, sizeof u32);
        return u32;
    }
}

/* A block of differences over the lag: value by value, in order, each
 * exception in place as soon as its turn comes, since the values one lag
 * on are measured from what is restored here.  0 when an exception's
 * offset is out of order. */
static int
decode_lagged(const mt_transform_plan *plan, const block_header *h, const char *at, size_t count,
              size_t before, char *values)
{
    const char *offsets = at + count * h->width;
    const char *bits = offsets + (size_t)h->exceptions * sizeof(uint32_t);
    uint32_t k = 0, next = UINT32_MAX;
    if (h->exceptions) {
        memcpy(&next, offsets, sizeof next);
    }
    for (size_t j = 0; j < count; j++) {
        uint64_t d = stored_digit(at, h->width, j) + h->base +
                     (uint64_t)reference_digit(plan->type, h->form, h->exponent, values, j, before,
                                               plan->lag);
        uint64_t v = value_bits(plan->type, h->form, h->exponent, d);
        if (j == next) {
            memcpy(&v, bits + (size_t)k * sizeof v, sizeof v);
            if (++k < h->exceptions) {
                memcpy(&next, offsets + (size_t)k * sizeof next, sizeof next);
            }
        }
        memcpy(values + j * 8, &v, sizeof v);
    }
    return k == h->exceptions;
}

size_t
mt_transform_decode(const mt_transform_plan *plan, const void *in, size_t size, size_t count,
                    size_t before, void *values)
{
    block_header h;
    size_t need = mt_transform_block_size(in, size, count);
    if (need == 0) {
        return 0;
    }
    memcpy(&h, in, sizeof h);
    const char *at = (const char *)in + sizeof h;
    if (h.width == 8) {
        memcpy(values, at, count * 8);
        return need;
    }
    if (h.from == FROM_LAG) {
        return plan->lag && decode_lagged(plan, &h, at, count, before, values) ? need : 0;
    }
    int64_t *digit = values;
    widen(&h, at, count, digit);
    for (size_t j = 0; plan->type != MT_VALUES_INT64 && j < count; j++) {
        /* In place, through memcpy: the same bytes change type. */
        uint64_t d;
        memcpy(&d, &digit[j], sizeof d);
        d = value_bits(plan->type, h.form, h.exponent, d);
        memcpy(&digit[j], &d, sizeof d);
    }
    at += count * h.width;
    const char *bits = at + (size_t)h.exceptions * sizeof(uint32_t);
    for (uint32_t k = 0; k < h.exceptions; k++) {
        uint32_t offset;
        memcpy(&offset, at + k * sizeof offset, sizeof offset);
        if (offset >= count) {
            return 0;
        }
        memcpy((char *)values + (size_t)offset * 8, bits + k * sizeof(uint64_t), sizeof(uint64_t));
    }
    return need;
}

int
mt_transform_block_width(const void *in)
{
    return ((const block_header *)in)->width;
}
