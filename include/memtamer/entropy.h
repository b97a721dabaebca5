/* entropy: byte planes coded by rANS, the entropy stage that c-blosc's
 * codecs have not.
 *
 * Narrowed digits (transform.h) are often close to independent draws: counts,
 * the noise of a float32 series.  An LZ codec finds nothing to match there,
 * and zstd's Huffman code spends up to a few percent above the entropy.
 * Here, the bytes of items `width` bytes wide are split into byte planes (the
 * first byte of every item, then the second, ...), and each plane is coded
 * on its own by order-0 range asymmetric numeral systems (rANS) with its own
 * frequency table, within a hundredth of a bit of each plane's entropy; a
 * plane that would not shrink is stored as it is, one of a single byte value
 * as that byte.
 *
 * Pure C, no Python: plain C tests drive it (tests/c/test_entropy.c).
 * Thread-safe: the functions touch only what they are given. */
#ifndef MEMTAMER_ENTROPY_H
#define MEMTAMER_ENTROPY_H

#include <stddef.h>

/* The most bytes encoding n bytes can take. */
size_t mt_entropy_bound(size_t n);

/* Encodes the n bytes at in, items of width (1 to 8) bytes, into out (room:
 * mt_entropy_bound(n)); returns the bytes written, 0 when out of memory. */
size_t mt_entropy_encode(const void *in, size_t n, int width, void *out);

/* The items' width a code of size bytes at in was made with; 0 when it
 * has none (malformed). */
int mt_entropy_width(const void *in, size_t size);

/* Decodes the size bytes at in into exactly n bytes at out; 1, or 0 when
 * they are malformed or do not give n bytes (nothing is read or written out
 * of bounds either way). */
int mt_entropy_decode(const void *in, size_t size, void *out, size_t n);

#endif
