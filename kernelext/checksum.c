/* checksum: CRC-32C of spill files (checksum.h).  zlib's CRC-32 runs at
 * well under a GiB/s, slower than the page cache takes a spill's writes;
 * CRC-32C has an instruction on x86-64 (SSE4.2) that checksums a spill as
 * fast as memory reads, so the checksum can ride along the pass that
 * compares a spill file with its array.  Other CPUs use a table. */
#include "memtamer/checksum.h"

#include <string.h>

#include "memtamer/config.h"

/* The Castagnoli polynomial, bit-reversed. */
#define CRC32C_POLY 0x82F63B78u

/* a * b modulo the polynomial, both bit-reversed (x^0 is the top bit). */
static uint32_t
multiply_mod_poly(uint32_t a, uint32_t b)
{
    uint32_t product = 0;
    for (uint32_t bit = 1u << 31; bit != 0; bit >>= 1) {
        if (a & bit) {
            product ^= b;
        }
        b = (b >> 1) ^ (CRC32C_POLY & (0u - (b & 1u)));
    }
    return product;
}

/* x^(8 len) modulo the polynomial: what a CRC register is multiplied by
 * when len bytes of zeros pass through it. */
static uint32_t
zeros_operator(size_t len)
{
    uint32_t power = 1u << 23;  /* x^8, bit-reversed */
    uint32_t result = 1u << 31; /* x^0 */
    for (; len > 0; len >>= 1) {
        if (len & 1) {
            result = multiply_mod_poly(power, result);
        }
        power = multiply_mod_poly(power, power);
    }
    return result;
}

uint32_t
mt_checksum_crc32c_combine(uint32_t crc_a, uint32_t crc_b, size_t len_b)
{
    return multiply_mod_poly(zeros_operator(len_b), crc_a) ^ crc_b;
}

static uint32_t
crc32c_table_update(uint32_t crc, const unsigned char *p, size_t len)
{
    /* Built per call: 2 KiB of work, against the megabytes each call covers. */
    uint32_t table[256];
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) {
            c = (c >> 1) ^ (CRC32C_POLY & (0u - (c & 1u)));
        }
        table[i] = c;
    }
    for (size_t i = 0; i < len; i++) {
        crc = table[(crc ^ p[i]) & 0xFF] ^ (crc >> 8);
    }
    return crc;
}

#if MT_HAS_CRC32C_INSN
/* The instruction takes 3 cycles and can start one each cycle: three
 * stripes checksummed side by side go three times as fast as one, and
 * their registers are joined as a CRC of zeros shifts them.  Below this
 * length the joining costs more than it saves. */
#define STRIPED_BYTES ((size_t)4096)

__attribute__((target("sse4.2"))) static uint32_t
crc32c_insn_update(uint32_t crc, const unsigned char *p, size_t len)
{
    if (len >= STRIPED_BYTES) {
        size_t stripe = len / 24 * 8;
        uint64_t a = crc, b = 0, c = 0;
        for (size_t at = 0; at < stripe; at += 8) {
            uint64_t wa, wb, wc;
            memcpy(&wa, p + at, sizeof wa);
            memcpy(&wb, p + stripe + at, sizeof wb);
            memcpy(&wc, p + 2 * stripe + at, sizeof wc);
            a = __builtin_ia32_crc32di(a, wa);
            b = __builtin_ia32_crc32di(b, wb);
            c = __builtin_ia32_crc32di(c, wc);
        }
        uint32_t shift = zeros_operator(stripe);
        crc = multiply_mod_poly(shift, multiply_mod_poly(shift, (uint32_t)a) ^ (uint32_t)b) ^
              (uint32_t)c;
        p += 3 * stripe;
        len -= 3 * stripe;
    }
    uint64_t c = crc;
    for (; len >= 8; p += 8, len -= 8) {
        uint64_t word;
        memcpy(&word, p, sizeof word);
        c = __builtin_ia32_crc32di(c, word);
    }
    uint32_t c32 = (uint32_t)c;
    for (; len > 0; p++, len--) {
        c32 = __builtin_ia32_crc32qi(c32, *p);
    }
    return c32;
}
#endif

uint32_t
mt_checksum_crc32c(uint32_t crc, const void *data, size_t len)
{
    const unsigned char *p = data;
    crc = ~crc;
#if MT_HAS_CRC32C_INSN
    if (__builtin_cpu_supports("sse4.2")) {
        return ~crc32c_insn_update(crc, p, len);
    }
#endif
    return ~crc32c_table_update(crc, p, len);
}
