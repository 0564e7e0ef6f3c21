// CRC32C (Castagnoli) for the iSCSI digests: the CPU's crc32 instruction where there is one,
// a table otherwise. Raw register values: no initial or final inversion (the caller does it).
#ifndef CCRC32C_H
#define CCRC32C_H

#include <stddef.h>
#include <stdint.h>

/// Continue `crc` over `length` bytes at `bytes`, with the fastest implementation this CPU has.
uint32_t ccrc32c_update(uint32_t crc, const void *bytes, size_t length);

/// The same with the portable slicing-by-8 table (the fallback; tests compare both).
uint32_t ccrc32c_update_portable(uint32_t crc, const void *bytes, size_t length);

/// 1 when `ccrc32c_update` uses the CPU instruction (SSE4.2 crc32 on x86-64).
int ccrc32c_uses_instruction(void);

#endif
