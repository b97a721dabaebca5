/* entropy: byte planes coded by rANS (entropy.h).
 *
 * The coder is the byte-wise rANS of Duda's asymmetric numeral systems as
 * Giesen's public-domain ryg_rans writes it: a 32-bit state kept in
 * [RANS_LOW, 256 * RANS_LOW), symbols encoded last to first so that they
 * decode first to last, frequencies scaled to sum to 2^PROB_BITS. */
#include "memtamer/entropy.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define PROB_BITS 15
#define PROB_SCALE ((uint32_t)1 << PROB_BITS)
#define RANS_LOW ((uint32_t)1 << 23)

/* How each plane is stored. */
enum { PLANE_RAW, PLANE_CONSTANT, PLANE_RANS };

/* The stream's header: width (1 byte), then n (8 bytes). */
#define HEADER_BYTES 9
/* The bytes present in a plane, one bit each. */
#define PRESENT_BYTES 32
/* A plane's record at most, besides its bytes: mode, the bytes present,
 * 256 frequencies, the stream's length. */
#define PLANE_OVERHEAD (1 + PRESENT_BYTES + 256 * 2 + 4)

typedef struct {
    uint32_t freq[256];
    uint32_t cum[256];
    int lo, hi; /* the least and greatest byte present */
} model;

size_t
mt_entropy_bound(size_t n)
{
    return HEADER_BYTES + 8 * PLANE_OVERHEAD + n;
}

/* Counts plane k's bytes into m and scales the counts to sum to
 * PROB_SCALE, every byte present keeping at least 1.  Returns how many
 * distinct bytes there are. */
static int
model_plane(const uint8_t *in, size_t items, int width, int k, model *m)
{
    size_t count[256] = {0};
    for (size_t i = 0; i < items; i++) {
        count[in[i * (size_t)width + (size_t)k]]++;
    }
    int distinct = 0, largest = 0;
    uint32_t sum = 0;
    m->lo = 256;
    m->hi = -1;
    for (int s = 0; s < 256; s++) {
        m->freq[s] = 0;
        if (count[s]) {
            uint32_t f = (uint32_t)((uint64_t)count[s] * PROB_SCALE / items);
            m->freq[s] = f ? f : 1;
            sum += m->freq[s];
            distinct++;
            m->lo = s < m->lo ? s : m->lo;
            m->hi = s;
            largest = m->freq[s] > m->freq[largest] ? s : largest;
        }
    }
    /* Rounding down left room, or the 1s for rare bytes overshot (by at
     * most one per byte, which the largest, >= PROB_SCALE / 256, absorbs
     * in a few passes). */
    while (distinct > 1 && sum != PROB_SCALE) {
        if (sum < PROB_SCALE) {
            m->freq[largest] += PROB_SCALE - sum;
            sum = PROB_SCALE;
            break;
        }
        uint32_t cut = sum - PROB_SCALE;
        cut = cut < m->freq[largest] - 1 ? cut : m->freq[largest] - 1;
        m->freq[largest] -= cut;
        sum -= cut;
        for (int s = m->lo; s <= m->hi; s++) {
            largest = m->freq[s] > m->freq[largest] ? s : largest;
        }
    }
    uint32_t c = 0;
    for (int s = 0; s < 256; s++) {
        m->cum[s] = c;
        c += m->freq[s];
    }
    return distinct;
}

static void
put_state(uint8_t *at, uint32_t x)
{
    for (int b = 0; b < 4; b++) {
        at[b] = (uint8_t)(x >> (8 * b));
    }
}

static uint32_t
get_state(const uint8_t *at)
{
    return (uint32_t)at[0] | (uint32_t)at[1] << 8 | (uint32_t)at[2] << 16 | (uint32_t)at[3] << 24;
}

/* A byte's encoding step without a division: x / freq as a multiply by
 * a rounded-up reciprocal and a shift, exact for every state (ryg_rans's
 * RansEncSymbol; a frequency of 1 takes the bias instead). */
typedef struct {
    uint32_t most; /* states from here on shed a byte first */
    uint32_t reciprocal;
    uint32_t bias;
    uint32_t complement; /* PROB_SCALE - freq */
    uint32_t shift;
} encoder_symbol;

static void
encoder_symbol_for(uint32_t freq, uint32_t cum, encoder_symbol *e)
{
    e->most = ((RANS_LOW >> PROB_BITS) << 8) * freq;
    e->complement = PROB_SCALE - freq;
    if (freq < 2) {
        e->reciprocal = UINT32_MAX;
        e->shift = 0;
        e->bias = cum + PROB_SCALE - 1;
        return;
    }
    uint32_t shift = 0;
    while (freq > (1u << shift)) {
        shift++;
    }
    e->reciprocal = (uint32_t)((((uint64_t)1 << (shift + 31)) + freq - 1) / freq);
    e->shift = shift - 1;
    e->bias = cum;
}

/* Encodes plane k into the stream that ends at end; returns where it
 * begins, NULL when it would begin before begin (a stream that long is
 * no smaller than the plane as it is).  Two states take the items in
 * turn (even, odd), so that decoding runs two chains of dependent steps
 * side by side. */
static uint8_t *
rans_encode(const uint8_t *in, size_t items, int width, int k, const model *m, const uint8_t *begin,
            uint8_t *end)
{
    encoder_symbol code[256];
    for (int s = m->lo; s <= m->hi; s++) {
        encoder_symbol_for(m->freq[s], m->cum[s], &code[s]);
    }
    uint32_t x[2] = {RANS_LOW, RANS_LOW};
    uint8_t *at = end;
    for (size_t i = items; i-- > 0;) {
        const encoder_symbol *e = &code[in[i * (size_t)width + (size_t)k]];
        uint32_t state = x[i & 1];
        while (state >= e->most) {
            if (at == begin) {
                return NULL;
            }
            *--at = (uint8_t)state;
            state >>= 8;
        }
        uint32_t q = (uint32_t)(((uint64_t)state * e->reciprocal) >> 32) >> e->shift;
        x[i & 1] = state + e->bias + q * e->complement;
    }
    /* Read back first to last: the first state, then the second. */
    if (at - begin < 8) {
        return NULL;
    }
    at -= 8;
    put_state(at, x[0]);
    put_state(at + 4, x[1]);
    return at;
}

/* Writes plane k's record at out; returns its bytes. */
static size_t
encode_plane(const uint8_t *in, size_t items, int width, int k, uint8_t *scratch, uint8_t *out)
{
    model m;
    int distinct = model_plane(in, items, width, k, &m);
    if (distinct == 1) {
        out[0] = PLANE_CONSTANT;
        out[1] = (uint8_t)m.lo;
        return 2;
    }
    uint8_t *end = scratch + items;
    uint8_t *stream = rans_encode(in, items, width, k, &m, scratch, end);
    size_t length = stream ? (size_t)(end - stream) : items;
    size_t table = PRESENT_BYTES + (size_t)distinct * 2;
    if (1 + table + 4 + length >= 1 + items) {
        out[0] = PLANE_RAW;
        for (size_t i = 0; i < items; i++) {
            out[1 + i] = in[i * (size_t)width + (size_t)k];
        }
        return 1 + items;
    }
    uint8_t *at = out;
    *at++ = PLANE_RANS;
    memset(at, 0, PRESENT_BYTES);
    for (int s = m.lo; s <= m.hi; s++) {
        at[s / 8] |= (uint8_t)(m.freq[s] ? 1 << (s % 8) : 0);
    }
    at += PRESENT_BYTES;
    for (int s = m.lo; s <= m.hi; s++) {
        /* PROB_SCALE itself is never a frequency here: two bytes or more
         * are present, each with at least 1. */
        uint16_t f = (uint16_t)m.freq[s];
        if (f) {
            memcpy(at, &f, sizeof f);
            at += sizeof f;
        }
    }
    uint32_t stored = (uint32_t)length;
    memcpy(at, &stored, sizeof stored);
    at += sizeof stored;
    memcpy(at, stream, length);
    return (size_t)(at - out) + length;
}

size_t
mt_entropy_encode(const void *in, size_t n, int width, void *out)
{
    const uint8_t *bytes = in;
    uint8_t *at = out;
    size_t items = n / (size_t)width, tail = n % (size_t)width;
    uint64_t total = n;
    uint8_t *scratch = items ? malloc(items) : NULL; /* a stream, while shorter than the plane */
    if (items && scratch == NULL) {
        return 0;
    }
    *at++ = (uint8_t)width;
    memcpy(at, &total, sizeof total);
    at += sizeof total;
    for (int k = 0; items && k < width; k++) {
        at += encode_plane(bytes, items, width, k, scratch, at);
    }
    memcpy(at, bytes + items * (size_t)width, tail);
    free(scratch);
    return (size_t)(at - (uint8_t *)out) + tail;
}

/* Decodes a PLANE_RANS record's table and stream (from at, up to end) into
 * plane k of out; returns the bytes read, 0 when malformed. */
static size_t
decode_rans(const uint8_t *at, const uint8_t *end, size_t items, int width, int k, uint8_t *out)
{
    const uint8_t *start = at, *present = at;
    if (end - at < PRESENT_BYTES) {
        return 0;
    }
    at += PRESENT_BYTES;
    uint32_t freq[256] = {0}, cum[256] = {0}, c = 0;
    uint8_t symbol[PROB_SCALE];
    for (int s = 0; s < 256; s++) {
        uint16_t f;
        if (!(present[s / 8] >> (s % 8) & 1)) {
            continue;
        }
        if (end - at < (ptrdiff_t)sizeof f) {
            return 0;
        }
        memcpy(&f, at, sizeof f);
        at += sizeof f;
        if (f == 0 || f > PROB_SCALE - c) {
            return 0;
        }
        freq[s] = f;
        cum[s] = c;
        memset(symbol + c, s, f);
        c += f;
    }
    uint32_t length;
    if (end - at < (ptrdiff_t)sizeof length) {
        return 0;
    }
    memcpy(&length, at, sizeof length);
    at += sizeof length;
    if (c != PROB_SCALE || length < 8 || (size_t)(end - at) < length) {
        return 0;
    }
    const uint8_t *stream = at + 8, *stream_end = at + length;
    uint32_t x[2] = {get_state(at), get_state(at + 4)};
    uint8_t *plane = out + k;
    size_t step = (size_t)width;
/* One item's step in state x[j]: its byte, then the state refilled from
 * the stream (0 returned when the stream runs out). */
#define DECODE_STEP(j, i)                                                                          \
    do {                                                                                           \
        uint32_t slot = x[j] & (PROB_SCALE - 1);                                                   \
        uint8_t s = symbol[slot];                                                                  \
        plane[(i)*step] = s;                                                                       \
        x[j] = freq[s] * (x[j] >> PROB_BITS) + slot - cum[s];                                      \
    } while (0)
#define REFILL(j)                                                                                  \
    do {                                                                                           \
        while (x[j] < RANS_LOW) {                                                                  \
            if (stream == stream_end) {                                                            \
                return 0;                                                                          \
            }                                                                                      \
            x[j] = x[j] << 8 | *stream++;                                                          \
        }                                                                                          \
    } while (0)
    size_t i = 0;
    for (; i + 1 < items; i += 2) {
        /* The second step reads no stream: both decode before either
         * refills, in the order the encoder wrote. */
        DECODE_STEP(0, i);
        DECODE_STEP(1, i + 1);
        REFILL(0);
        REFILL(1);
    }
    if (i < items) {
        DECODE_STEP(0, i);
        REFILL(0);
    }
#undef DECODE_STEP
#undef REFILL
    /* The encoder started from RANS_LOW and wrote every byte read here. */
    return x[0] == RANS_LOW && x[1] == RANS_LOW && stream == stream_end
               ? (size_t)(stream_end - start)
               : 0;
}

int
mt_entropy_width(const void *in, size_t size)
{
    const uint8_t *at = in;
    return size >= HEADER_BYTES && at[0] >= 1 && at[0] <= 8 ? at[0] : 0;
}

int
mt_entropy_decode(const void *in, size_t size, void *out, size_t n)
{
    const uint8_t *at = in, *end = at + size;
    uint64_t total;
    if (size < HEADER_BYTES || at[0] < 1 || at[0] > 8) {
        return 0;
    }
    int width = at[0];
    memcpy(&total, at + 1, sizeof total);
    at += HEADER_BYTES;
    if (total != n) {
        return 0;
    }
    size_t items = n / (size_t)width, tail = n % (size_t)width;
    uint8_t *bytes = out;
    for (int k = 0; items && k < width; k++) {
        if (at == end) {
            return 0;
        }
        int mode = *at++;
        size_t used = 0;
        if (mode == PLANE_CONSTANT && at < end) {
            for (size_t i = 0; i < items; i++) {
                bytes[i * (size_t)width + (size_t)k] = *at;
            }
            used = 1;
        }
        else if (mode == PLANE_RAW && (size_t)(end - at) >= items) {
            for (size_t i = 0; i < items; i++) {
                bytes[i * (size_t)width + (size_t)k] = at[i];
            }
            used = items;
        }
        else if (mode == PLANE_RANS) {
            used = decode_rans(at, end, items, width, k, bytes);
        }
        if (used == 0) {
            return 0;
        }
        at += used;
    }
    if ((size_t)(end - at) != tail) {
        return 0;
    }
    memcpy(bytes + items * (size_t)width, at, tail);
    return 1;
}
