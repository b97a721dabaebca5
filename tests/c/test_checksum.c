/* checksum.c from plain C: CRC-32C against its definition, bit by bit, for
 * every length and alignment the word loop has edges at, and chained.
 * Built twice by tests/test_plain_c.py: with the CPU's instruction where
 * there is one, and with the table other CPUs use.  Prints "N passed, N
 * failed". */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "memtamer/checksum.h"

#include "check.h"

/* RFC 3720 B.4: reflected, polynomial 0x1EDC6F41, inverted in and out. */
static uint32_t
crc32c_by_definition(const unsigned char *p, size_t len)
{
    uint32_t crc = 0xFFFFFFFFu;
    for (size_t i = 0; i < len; i++) {
        crc ^= p[i];
        for (int k = 0; k < 8; k++) {
            crc = (crc >> 1) ^ ((crc & 1u) ? 0x82F63B78u : 0u);
        }
    }
    return ~crc;
}

int
main(void)
{
    static unsigned char data[4096 + 16];
    uint64_t state = 0x9E3779B97F4A7C15u;
    for (size_t i = 0; i < sizeof data; i++) {
        state = state * 6364136223846793005u + 1442695040888963407u;
        data[i] = (unsigned char)(state >> 56);
    }
    CHECK(mt_checksum_crc32c(0, "123456789", 9) == 0xE3069283u); /* the standard's check */
    CHECK(mt_checksum_crc32c(0, data, 0) == 0);
    for (size_t offset = 0; offset < 9; offset++) {
        for (size_t len = 0; len < 80; len++) {
            CHECK(mt_checksum_crc32c(0, data + offset, len) ==
                  crc32c_by_definition(data + offset, len));
        }
    }
    uint32_t whole = crc32c_by_definition(data, 4096);
    CHECK(mt_checksum_crc32c(0, data, 4096) == whole);
    for (size_t cut = 0; cut <= 4096; cut += 509) {
        CHECK(mt_checksum_crc32c(mt_checksum_crc32c(0, data, cut), data + cut, 4096 - cut) ==
              whole);
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
