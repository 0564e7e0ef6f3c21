// CRC32C, reflected polynomial 0x82F63B78 (RFC 3385). See include/CCRC32C.h.
//
// x86-64: SSE4.2 `crc32` (_mm_crc32_u64), chosen at load time with __builtin_cpu_supports, so
// the binary still runs on a CPU without it. The function carries its own target attribute;
// no compiler flag is needed for the rest of the package.
#include "CCRC32C.h"

#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <nmmintrin.h>
#define CCRC32C_X86 1
#endif

static uint32_t table[8][256];

static void build_table(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        table[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++) {
        for (int k = 1; k < 8; k++) table[k][i] = (table[k - 1][i] >> 8) ^ table[0][table[k - 1][i] & 0xFF];
    }
}

uint32_t ccrc32c_update_portable(uint32_t crc, const void *bytes, size_t length) {
    const unsigned char *p = bytes;
    uint32_t c = crc;
    while (length >= 8) {
        uint32_t lo = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
        uint32_t hi = (uint32_t)p[4] | (uint32_t)p[5] << 8 | (uint32_t)p[6] << 16 | (uint32_t)p[7] << 24;
        uint32_t x = c ^ lo;
        c = table[7][x & 0xFF] ^ table[6][(x >> 8) & 0xFF] ^ table[5][(x >> 16) & 0xFF] ^ table[4][x >> 24] ^
            table[3][hi & 0xFF] ^ table[2][(hi >> 8) & 0xFF] ^ table[1][(hi >> 16) & 0xFF] ^ table[0][hi >> 24];
        p += 8;
        length -= 8;
    }
    while (length--) c = (c >> 8) ^ table[0][(c ^ *p++) & 0xFF];
    return c;
}

#ifdef CCRC32C_X86
__attribute__((target("sse4.2")))
static uint32_t update_sse42(uint32_t crc, const void *bytes, size_t length) {
    const unsigned char *p = bytes;
    uint64_t c = crc;
    while (length >= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        c = _mm_crc32_u64(c, v);
        p += 8;
        length -= 8;
    }
    uint32_t c32 = (uint32_t)c;
    if (length >= 4) {
        uint32_t v;
        memcpy(&v, p, 4);
        c32 = _mm_crc32_u32(c32, v);
        p += 4;
        length -= 4;
    }
    while (length--) c32 = _mm_crc32_u8(c32, *p++);
    return c32;
}
#endif

static uint32_t (*implementation)(uint32_t, const void *, size_t) = ccrc32c_update_portable;
static int uses_instruction;

__attribute__((constructor))
static void ccrc32c_init(void) {
    build_table();
#ifdef CCRC32C_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("sse4.2")) {
        implementation = update_sse42;
        uses_instruction = 1;
    }
#endif
}

uint32_t ccrc32c_update(uint32_t crc, const void *bytes, size_t length) {
    return implementation(crc, bytes, length);
}

int ccrc32c_uses_instruction(void) { return uses_instruction; }
