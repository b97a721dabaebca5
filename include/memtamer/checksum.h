/* checksum: CRC-32C (Castagnoli) of spill files, at memory speed where the
 * CPU has an instruction for it.  No Python API: callable without the GIL. */
#ifndef MEMTAMER_CHECKSUM_H
#define MEMTAMER_CHECKSUM_H

#include <stddef.h>
#include <stdint.h>

/* Continues crc (0 to start) over len bytes of data, as zlib's crc32()
 * chains: crc32c(crc32c(0, a), b) is the checksum of a followed by b. */
uint32_t mt_checksum_crc32c(uint32_t crc, const void *data, size_t len);

/* The checksum of a followed by b from crc_a = mt_checksum_crc32c(0, a),
 * crc_b = mt_checksum_crc32c(0, b) and b's length: what lets shares of a
 * file be checksummed apart (by threads) and joined. */
uint32_t mt_checksum_crc32c_combine(uint32_t crc_a, uint32_t crc_b, size_t len_b);

#endif
