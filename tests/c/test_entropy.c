/* entropy.c from plain C: round trips, sizes against the entropy computed
 * here from the bytes' own counts, and malformed input refused.  Built and
 * run by tests/test_plain_c.py; prints "N passed, N failed". */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "memtamer/entropy.h"

#include "check.h"

/* The stream's header and a plane's record before its frequencies (as
 * entropy.c lays them out): what the sizes below are built from. */
#define HEADER 9
#define RAW_PLANE(items) (1 + (items))
#define CONSTANT_PLANE 2

/* Encodes, decodes into a fresh buffer and compares; a stream one byte short
 * and a wrong length are refused.  Returns the encoded bytes, 0 on any
 * mismatch. */
static size_t
round_trip(const uint8_t *in, size_t n, int width)
{
    uint8_t *out = malloc(mt_entropy_bound(n));
    uint8_t *back = malloc(n + 1);
    size_t size = mt_entropy_encode(in, n, width, out);
    int ok = size > 0 && size <= mt_entropy_bound(n) && mt_entropy_width(out, size) == width;
    memset(back, 0xAB, n + 1);
    ok = ok && mt_entropy_decode(out, size, back, n) == 1;
    ok = ok && memcmp(in, back, n) == 0 && back[n] == 0xAB;
    ok = ok && mt_entropy_decode(out, size - 1, back, n) == 0;
    ok = ok && mt_entropy_decode(out, size, back, n + 1) == 0;
    free(out);
    free(back);
    return ok ? size : 0;
}

/* Order-0 entropy, in bytes, of plane k of n / width items. */
static double
plane_entropy(const uint8_t *in, size_t n, int width, int k)
{
    size_t count[256] = {0}, items = n / (size_t)width;
    for (size_t i = 0; i < items; i++) {
        count[in[i * (size_t)width + (size_t)k]]++;
    }
    double bits = 0;
    for (int s = 0; s < 256; s++) {
        if (count[s]) {
            bits -= (double)count[s] * log2((double)count[s] / (double)items);
        }
    }
    return bits / 8;
}

static void
test_empty_and_short(void)
{
    uint8_t few[7] = {1, 2, 3, 4, 5, 6, 7};
    CHECK(round_trip(few, 0, 1) == HEADER);
    CHECK(mt_entropy_width(few, HEADER - 1) == 0); /* too short for a header */
    CHECK(round_trip(few, 7, 8) == HEADER + 7);    /* no item: all tail */
    /* Two items of 4 bytes, then 3 more: planes of two bytes each are
     * stored as they are (a table would cost more). */
    CHECK(round_trip(few, 7, 2) == HEADER + 2 * RAW_PLANE(3) + 1);
}

static void
test_constant_and_random_planes(void)
{
    size_t n = 4 * 50000 + 3;
    uint8_t *v = malloc(n);
    for (size_t i = 0; i < n; i++) {
        /* items of 4 bytes: random, random, constant, constant */
        v[i] = i % 4 < 2 ? (uint8_t)next_random() : (uint8_t)(i % 4 == 2 ? 0x00 : 0x7F);
    }
    size_t items = n / 4;
    CHECK(round_trip(v, n, 4) == HEADER + 2 * RAW_PLANE(items) + 2 * CONSTANT_PLANE + 3);
    free(v);
}

/* Small alphabets of known skew: the coded size is within a few tenths of
 * a percent (the table's and the coder's own costs) of the entropy. */
static void
test_skewed_bytes_reach_their_entropy(void)
{
    size_t n = 1 << 20;
    uint8_t *v = malloc(n);
    for (size_t i = 0; i < n; i++) {
        /* geometric: k with probability 2^-(k+1), capped at 40 */
        uint64_t r = next_random() | (1ull << 40);
        v[i] = (uint8_t)__builtin_ctzll(r);
    }
    double entropy = plane_entropy(v, n, 1, 0);
    size_t size = round_trip(v, n, 1);
    CHECK(size > 0 && (double)size >= entropy && (double)size <= entropy * 1.003 + 600);

    /* items of 2 bytes: a skewed low byte, a high byte of four values */
    for (size_t i = 0; i < n; i += 2) {
        uint64_t r = next_random();
        v[i] = (uint8_t)(120 + (r & 15) - ((r >> 4) & 15)); /* triangular over 31 values */
        v[i + 1] = (uint8_t)((r >> 8) & 3);
    }
    entropy = plane_entropy(v, n, 2, 0) + plane_entropy(v, n, 2, 1);
    size = round_trip(v, n, 2);
    CHECK(size > 0 && (double)size >= entropy && (double)size <= entropy * 1.003 + 1200);
    free(v);
}

/* Every byte value present, most of them once: the frequencies scaled to
 * the table give each at least 1 and still sum to the scale. */
static void
test_many_rare_bytes(void)
{
    size_t n = 300000;
    uint8_t *v = malloc(n);
    for (size_t i = 0; i < n; i++) {
        v[i] = i < 256 ? (uint8_t)i : (next_random() % 100 == 0 ? 17 : 200);
    }
    size_t size = round_trip(v, n, 1);
    /* Above the entropy: the table (2 bytes for each of 256 values) and
     * the share of the scale the 254 single bytes take from the common
     * ones (254 / 2^15: 0.011 bits on each of n values, 420 bytes). */
    CHECK(size > 0 && (double)size <= plane_entropy(v, n, 1, 0) + 512 + 450);
    /* one rare byte among a million of another */
    size_t m = 1000001;
    uint8_t *w = calloc(m, 1);
    w[m / 2] = 9;
    size = round_trip(w, m, 1);
    CHECK(size > 0 && size < 100);
    free(w);
    free(v);
}

/* Every byte of an encoded stream changed in turn, and every length: the
 * decoder refuses or gives n bytes, never reads or writes past either
 * buffer (AddressSanitizer watches). */
static void
test_malformed_streams_are_refused_safely(void)
{
    size_t n = 3000;
    uint8_t *v = malloc(n), *back = malloc(n);
    for (size_t i = 0; i < n; i++) {
        v[i] = (uint8_t)(next_random() % 5); /* both planes coded */
    }
    uint8_t *out = malloc(mt_entropy_bound(n));
    size_t size = mt_entropy_encode(v, n, 2, out);
    int safe = 1, flips = 0, refused_flips = 0, refused_cuts = 0;
    for (size_t at = 0; at < size; at++) {
        for (int bit = 0; bit < 8; bit += 3) {
            uint8_t *copy = malloc(size);
            memcpy(copy, out, size);
            copy[at] ^= (uint8_t)(1 << bit);
            int r = mt_entropy_decode(copy, size, back, n);
            safe = safe && (r == 0 || r == 1);
            flips++;
            refused_flips += r == 0;
            free(copy);
        }
    }
    for (size_t len = 0; len < size; len++) {
        uint8_t *copy = malloc(len ? len : 1);
        memcpy(copy, out, len);
        refused_cuts += mt_entropy_decode(copy, len, back, n) == 0;
        free(copy);
    }
    CHECK(safe);
    /* Every truncation is refused, and nearly every changed bit: the state
     * must end where the encoder began with every byte read, and the table
     * sum to the scale. */
    CHECK(refused_cuts == (int)size);
    CHECK(refused_flips * 100 >= flips * 95);
    free(out);
    free(v);
    free(back);
}

int
main(void)
{
    test_empty_and_short();
    test_constant_and_random_planes();
    test_skewed_bytes_reach_their_entropy();
    test_many_rare_bytes();
    test_malformed_streams_are_refused_safely();
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
