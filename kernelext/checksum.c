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
__attribute__((target("sse4.2"))) static uint32_t
crc32c_insn_update(uint32_t crc, const unsigned char *p, size_t len)
{
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
