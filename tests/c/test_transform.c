/* transform.c from plain C: round trips over constructed and random data.
 * Built and run by tests/test_transform_c.py; prints "N passed, N failed". */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "memtamer/transform.h"

#include "check.h"

static double
uniform(void)
{
    return (double)(next_random() >> 11) / 9007199254740992.0;
}

/* Plans, encodes in blocks of `block` values, decodes each block into a
 * fresh buffer (in reverse order when the plan has no lag: blocks stand
 * alone; in order with one) and compares bit for bit.  Returns the encoded
 * bytes, or 0 on any mismatch. */
static size_t
round_trip(const void *values, size_t n, mt_values_type t, size_t block, mt_transform_plan *plan)
{
    mt_transform_plan_for(values, n, t, plan);
    block = block ? block : (n ? n : 1);
    size_t nblocks = (n + block - 1) / block;
    char *encoded = malloc(nblocks * mt_transform_bound(block) + 1);
    void *scratch = malloc(mt_transform_scratch_size(block));
    size_t *offsets = malloc((nblocks + 1) * sizeof *offsets);
    char *back = malloc(n * 8 + 8);
    size_t at = 0;
    for (size_t b = 0; b < nblocks; b++) {
        size_t count = n - b * block < block ? n - b * block : block;
        offsets[b] = at;
        at += mt_transform_encode(plan, (const char *)values + b * block * 8, count, b * block,
                                  scratch, encoded + at);
    }
    offsets[nblocks] = at;
    int ok = 1;
    memset(back, 0xAB, n * 8);
    for (size_t k = 0; ok && k < nblocks; k++) {
        /* Without a lag, in reverse (blocks stand alone); with one, in order. */
        size_t b = plan->lag ? k : nblocks - 1 - k;
        size_t count = n - b * block < block ? n - b * block : block;
        size_t size = offsets[b + 1] - offsets[b];
        /* A truncated block is refused, not read past its end. */
        ok = mt_transform_decode(plan, encoded + offsets[b], size - 1, count, b * block,
                                 back + b * block * 8) == 0;
        ok = ok && mt_transform_decode(plan, encoded + offsets[b], size, count, b * block,
                                       back + b * block * 8) == size;
    }
    ok = ok && memcmp(values, back, n * 8) == 0;
    free(encoded);
    free(scratch);
    free(offsets);
    free(back);
    return ok ? at : 0;
}

static double
two_decimals(double x)
{
    char text[64];
    snprintf(text, sizeof text, "%.2f", x);
    return strtod(text, NULL);
}

static void
test_decimal_readings(void)
{
    size_t n = 100000;
    double *v = malloc(n * sizeof *v);
    double level = 21.5;
    for (size_t i = 0; i < n; i++) {
        level += (uniform() - 0.5) * 0.2;
        v[i] = two_decimals(level);
    }
    mt_transform_plan plan;
    size_t size = round_trip(v, n, MT_VALUES_FLOAT64, 8192, &plan);
    CHECK(plan.exponent == 2 && plan.narrowed_size < 1.1);
    /* Steps of at most 0.10: one byte a value, a header a block. */
    CHECK(size > 0 && size <= n + 13 * 24);

    /* Odd values among them are kept apart, bit for bit. */
    uint64_t nan_payload = 0x7FF8000000012345u, neg_nan = 0xFFF0000000000001u;
    double specials[] = {
        -0.0, INFINITY, -INFINITY, 5e-324, 1e300, 0.1 + 0.2, -2.2250738585072014e-308};
    for (size_t k = 0; k < sizeof specials / sizeof specials[0]; k++) {
        v[k * 997 + 3] = specials[k];
    }
    memcpy(&v[n - 1], &nan_payload, 8);
    memcpy(&v[0], &neg_nan, 8);
    memcpy(&v[8192], &nan_payload, 8); /* a block's first value */
    size = round_trip(v, n, MT_VALUES_FLOAT64, 8192, &plan);
    CHECK(size > 0 && size <= n + 13 * 24 + 10 * 12);
    free(v);
}

static void
test_noise_is_not_narrowed(void)
{
    size_t n = 50000;
    double *v = malloc(n * sizeof *v);
    for (size_t i = 0; i < n; i++) {
        v[i] = uniform() * 1000.0;
    }
    mt_transform_plan plan;
    size_t size = round_trip(v, n, MT_VALUES_FLOAT64, 4096, &plan);
    CHECK(plan.exponent == -1 && plan.narrowed_size == 8);
    CHECK(size == n * 8 + 13 * 24); /* every block as it is */
    free(v);
}

static void
test_integers(void)
{
    size_t n = 40000;
    int64_t *ts = malloc(n * sizeof *ts);
    uint64_t *big = malloc(n * sizeof *big);
    for (size_t i = 0; i < n; i++) {
        ts[i] = 1700000000000000000 + (int64_t)i * 1000000000; /* one a second, in ns */
        big[i] = UINT64_MAX - (next_random() % 50000);
    }
    mt_transform_plan plan;
    CHECK(round_trip(ts, n, MT_VALUES_INT64, 1000, &plan) == n + 40 * 24); /* equal steps */
    CHECK(plan.narrowed_size == 1);
    CHECK(round_trip(big, n, MT_VALUES_UINT64, 0, &plan) == 2 * n + 24);
    ts[7] = INT64_MIN;
    ts[8] = INT64_MAX;
    /* The first block cannot narrow; the others still do. */
    CHECK(round_trip(ts, n, MT_VALUES_INT64, 1000, &plan) == 8000 + 39 * 1000 + 40 * 24);
    free(ts);
    free(big);
}

static void
test_edges(void)
{
    mt_transform_plan plan;
    double one = 3.25;
    CHECK(round_trip(&one, 1, MT_VALUES_FLOAT64, 0, &plan) == 24 + 1);
    mt_transform_plan_for(NULL, 0, MT_VALUES_FLOAT64, &plan);
    CHECK(plan.exponent == -1);
    double zeros[5] = {0, 0, 0, 0, 0};
    CHECK(round_trip(zeros, 5, MT_VALUES_FLOAT64, 2, &plan) == 3 * 24 + 5);
}

/* Columns with different decimals one after the other: each block takes
 * its own exponent, so neither column is widened by the other's. */
static void
test_block_exponents(void)
{
    size_t n = 4 * 8192;
    double *v = malloc(n * sizeof *v);
    for (size_t i = 0; i < n; i++) {
        char text[64];
        int tenths = i < n / 2;
        snprintf(text, sizeof text, "%.*f", tenths ? 1 : 3,
                 (double)(next_random() % 256) / (tenths ? 10.0 : 1000.0));
        v[i] = strtod(text, NULL);
    }
    mt_transform_plan plan;
    /* One byte a digit in every block: one exponent for all would need two
     * in the first half (digits up to 25500). */
    CHECK(round_trip(v, n, MT_VALUES_FLOAT64, 8192, &plan) == n + 4 * 24);
    free(v);
}

/* float32 values held in float64 narrow to their float32 bits; what no
 * float32 holds exactly is kept apart, bit for bit. */
static void
test_float32_values(void)
{
    size_t n = 3 * 4096;
    double *v = malloc(n * sizeof *v);
    for (size_t i = 0; i < n; i++) {
        v[i] = (double)(float)((uniform() - 0.5) * 1e4);
    }
    mt_transform_plan plan;
    size_t size = round_trip(v, n, MT_VALUES_FLOAT64, 4096, &plan);
    CHECK(plan.form == MT_FORM_FLOAT32 && plan.narrowed_size <= 4);
    CHECK(size > 0 && size <= 4 * n + 3 * 24);
    uint64_t nan_payload = 0x7FF8000000012345u;
    double specials[] = {-0.0, INFINITY, -INFINITY, 5e-324, 1e300, 0.1, (double)1e-45f, 3e38};
    for (size_t k = 0; k < sizeof specials / sizeof specials[0]; k++) {
        v[k * 1499 + 5] = specials[k];
    }
    memcpy(&v[4096], &nan_payload, 8); /* a block's first value */
    size = round_trip(v, n, MT_VALUES_FLOAT64, 4096, &plan);
    CHECK(size > 0 && size <= 4 * n + 3 * 24 + 9 * 12);
    free(v);
}

/* A header naming a form or an exponent that does not exist is refused. */
static void
test_malformed_headers(void)
{
    double v[64];
    for (size_t i = 0; i < 64; i++) {
        v[i] = (double)i / 10.0;
    }
    mt_transform_plan plan;
    mt_transform_plan_for(v, 64, MT_VALUES_FLOAT64, &plan);
    char encoded[24 + 64 * 8], back[64 * 8];
    void *scratch = malloc(mt_transform_scratch_size(64));
    size_t size = mt_transform_encode(&plan, v, 64, 0, scratch, encoded);
    CHECK(size == 24 + 64 && mt_transform_decode(&plan, encoded, size, 64, 0, back) == size);
    encoded[2] = 7; /* form */
    CHECK(mt_transform_decode(&plan, encoded, size, 64, 0, back) == 0);
    encoded[2] = 0;
    encoded[3] = 19; /* exponent past 10^18 */
    CHECK(mt_transform_decode(&plan, encoded, size, 64, 0, back) == 0);
    free(scratch);
}

/* Random arrays from a mix of generators, random block lengths: every plan
 * that is used round-trips exactly. */
static void
test_random_mixtures(void)
{
    int used = 0;
    for (int round = 0; round < 400; round++) {
        size_t n = 1 + next_random() % 3000;
        size_t block = next_random() % 4 == 0 ? 0 : 1 + next_random() % 700;
        int decimals = (int)(next_random() % 7);
        /* One odd value in this many, or none. */
        int odd_share = next_random() % 3 == 0 ? 0 : 20 + (int)(next_random() % 400);
        double scale = pow(10.0, (double)(next_random() % 9)) / 1000.0;
        double *v = malloc(n * sizeof *v);
        for (size_t i = 0; i < n; i++) {
            char text[64];
            snprintf(text, sizeof text, "%.*f", decimals, (uniform() - 0.3) * scale);
            v[i] = strtod(text, NULL);
            if (odd_share && next_random() % (uint64_t)(odd_share + 1) == 0) {
                uint64_t bits = next_random();
                memcpy(&v[i], &bits, 8); /* anything: NaNs, subnormals, huge */
            }
        }
        mt_transform_plan plan;
        size_t size = round_trip(v, n, MT_VALUES_FLOAT64, block, &plan);
        CHECK(size > 0);
        used += size > 0 && size < n * 4;
        int64_t *iv = (int64_t *)v;
        for (size_t i = 0; i < n; i++) {
            iv[i] =
                (int64_t)(next_random() % 100000) - 50000 + (round % 3 == 0 ? (int64_t)i * 77 : 0);
        }
        CHECK(round_trip(iv, n, round % 2 ? MT_VALUES_INT64 : MT_VALUES_UINT64, block, &plan) > 0);
        free(v);
    }
    CHECK(used > 100); /* most mixtures are decimals with few odd values */
    printf("random mixtures: %d of 400 at half their size or less\n", used);
}

/* A table of period values repeated, each repeat off by -1, 0 or +1 in
 * its last decimal (or, for noise, its last bit), with odd values (NaN
 * payloads, -0.0, infinities, subnormals) among them: the plan finds the
 * period, the differences over it take one byte, and every block, decoded
 * in order after those before it, gives back the same bits. */
static void
test_lag(void)
{
    const size_t period = 1237, n = 40000;
    const uint64_t odd[] = {0x7FF8000000000001u, 0xFFF4000000000abcu, 0x8000000000000000u,
                            0x7FF0000000000000u, 0xFFF0000000000000u, 0x0000000000000007u};
    double *table = malloc(period * sizeof *table), *v = malloc(n * sizeof *v);
    int64_t *iv = malloc(n * sizeof *iv);
    for (int noise = 0; noise <= 1; noise++) {
        for (size_t i = 0; i < period; i++) {
            table[i] = noise ? uniform() * 3 - 1 : two_decimals(uniform() * 20000 - 100);
        }
        for (size_t i = 0; i < n; i++) {
            int jitter = i < period ? 0 : (int)(next_random() % 3) - 1;
            v[i] = noise ? table[i % period] : two_decimals(table[i % period] + jitter / 100.0);
            if (noise) {
                uint64_t bits;
                memcpy(&bits, &v[i], 8);
                bits += (uint64_t)(int64_t)jitter;
                memcpy(&v[i], &bits, 8);
            }
            if (i % 997 == 5 && !noise) { /* noise has no exceptions: its bits are its digits */
                memcpy(&v[i], &odd[(i / 997) % 6], 8);
            }
            iv[i] = (int64_t)(table[i % period] * 1000) + jitter;
        }
        mt_transform_plan plan;
        size_t block = 512 + next_random() % 4096;
        size_t size = round_trip(v, n, MT_VALUES_FLOAT64, block, &plan);
        CHECK(plan.lag == period);
        /* One byte a value past the blocks that hold the first period (8 at
         * most in those), a header a block, an offset and 8 bytes an odd value. */
        size_t bound = (period + block) * 8 + n + (n / block + 1) * 24;
        CHECK(size > 0 && size < bound + (n / 997 + 1) * 12);
        printf("lag %s: %zu values in %zu bytes (period %zu found)\n", noise ? "noise" : "decimals",
               n, size, plan.lag);
        size = round_trip(iv, n, noise ? MT_VALUES_INT64 : MT_VALUES_UINT64, block, &plan);
        CHECK(plan.lag == period && size > 0 && size < bound);
    }
    /* Random values have no period. */
    for (size_t i = 0; i < n; i++) {
        v[i] = uniform();
    }
    mt_transform_plan plan;
    CHECK(round_trip(v, n, MT_VALUES_FLOAT64, 4096, &plan) > 0 && plan.lag == 0);
    free(table);
    free(v);
    free(iv);
}

int
main(void)
{
    test_decimal_readings();
    test_noise_is_not_narrowed();
    test_integers();
    test_edges();
    test_block_exponents();
    test_float32_values();
    test_malformed_headers();
    test_random_mixtures();
    test_lag();
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
