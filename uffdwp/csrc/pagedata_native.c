// SPDX-License-Identifier: GPL-2.0-only
/* Page data: CRC32C (Castagnoli) and the zero-page test, natively. See pagedata_native.h. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#include "uffdwp_internal.h"
#include "pagedata_native.h"

/* ----------------------------------------------------------------------------------------------
 * CRC32C (Castagnoli): SSE4.2 where the CPU has it, else slicing by table.
 */
static uint32_t crc_table[256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;
static int crc_hw;

static void crc_init(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;
		for (int k = 0; k < 8; k++)
			c = c & 1 ? (c >> 1) ^ 0x82F63B78u : c >> 1;
		crc_table[i] = c;
	}
#if defined(__x86_64__)
	__builtin_cpu_init();
	crc_hw = __builtin_cpu_supports("sse4.2");
#endif
}

#if defined(__x86_64__)
#include <nmmintrin.h>
__attribute__((target("sse4.2"))) static uint32_t crc32c_hw(uint32_t crc, const uint8_t *p,
							     uint64_t n)
{
	uint64_t c = ~crc;
	while (n && ((uintptr_t)p & 7)) {
		c = _mm_crc32_u8((uint32_t)c, *p++);
		n--;
	}
	while (n >= 8) {
		uint64_t v;
		memcpy(&v, p, 8);
		c = _mm_crc32_u64(c, v);
		p += 8;
		n -= 8;
	}
	while (n--)
		c = _mm_crc32_u8((uint32_t)c, *p++);
	return ~(uint32_t)c;
}
#endif

#if defined(__x86_64__)
/* Copy and checksum in one pass: the bytes are in a register anyway, so the CRC costs next to
 * nothing over the copy, and the output thread is left with nothing but write(2). */
__attribute__((target("sse4.2"))) static uint32_t copy_crc_hw(void *dst, const void *src,
							      uint64_t n, uint32_t crc)
{
	uint64_t c = ~crc;
	const uint8_t *p = src;
	uint8_t *d = dst;
	for (; n >= 32; n -= 32, p += 32, d += 32) {
		uint64_t v[4];
		memcpy(v, p, 32);
		c = _mm_crc32_u64(c, v[0]);
		c = _mm_crc32_u64(c, v[1]);
		c = _mm_crc32_u64(c, v[2]);
		c = _mm_crc32_u64(c, v[3]);
		memcpy(d, v, 32);
	}
	for (; n; n--) {
		*d++ = *p;
		c = _mm_crc32_u8((uint32_t)c, *p++);
	}
	return ~(uint32_t)c;
}
#endif

uint32_t uffdwp_copy_crc(void *dst, const void *src, uint64_t n, uint32_t crc)
{
	pthread_once(&crc_once, crc_init);
#if defined(__x86_64__)
	if (crc_hw)
		return copy_crc_hw(dst, src, n, crc);
#endif
	memcpy(dst, src, n);
	return uffdsnap_crc32c(crc, dst, n);
}

uint32_t uffdsnap_crc32c(uint32_t crc, const void *buf, uint64_t len)
{
	pthread_once(&crc_once, crc_init);
	const uint8_t *p = buf;
#if defined(__x86_64__)
	if (crc_hw)
		return crc32c_hw(crc, p, len);
#endif
	uint32_t c = ~crc;
	while (len--)
		c = crc_table[(c ^ *p++) & 0xff] ^ (c >> 8);
	return ~c;
}

int uffdsnap_is_zero(const void *buf, uint64_t len)
{
	const uint64_t *q = buf;
	uint64_t words = len / 8, i = 0;
	/* OR eight words at a time: the compiler vectorizes it; a non-zero page usually exits in
	 * the first 64 bytes. */
	for (; i + 8 <= words; i += 8)
		if (q[i] | q[i + 1] | q[i + 2] | q[i + 3] | q[i + 4] | q[i + 5] | q[i + 6] | q[i + 7])
			return 0;
	for (; i < words; i++)
		if (q[i])
			return 0;
	const uint8_t *b = (const uint8_t *)(q + words);
	for (uint64_t k = 0; k < len % 8; k++)
		if (b[k])
			return 0;
	return 1;
}
