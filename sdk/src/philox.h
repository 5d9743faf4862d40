/* Philox4x32-10 and the (seed, stream, step, index) mapping of
 * diffuse/rng.h, as inline functions that compile both as C (rng.c, the CPU
 * backend) and as CUDA device code (backends/cuda/), so that a draw is the
 * same bits on every backend. Private to the SDK. */
#ifndef DIFFUSE_PHILOX_H
#define DIFFUSE_PHILOX_H

#include <stdint.h>

#ifdef __CUDACC__
#define DFI_PHILOX_FN static __host__ __device__ __forceinline__
#else
#define DFI_PHILOX_FN static inline
#endif

/* Multipliers and Weyl key increments of Philox4x32 (Random123). */
#define DFI_PHILOX_M0 UINT32_C(0xD2511F53)
#define DFI_PHILOX_M1 UINT32_C(0xCD9E8D57)
#define DFI_PHILOX_W0 UINT32_C(0x9E3779B9)
#define DFI_PHILOX_W1 UINT32_C(0xBB67AE85)

DFI_PHILOX_FN void dfi_philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4])
{
	uint32_t c0 = ctr[0], c1 = ctr[1], c2 = ctr[2], c3 = ctr[3];
	uint32_t k0 = key[0], k1 = key[1];

	for (int round = 0; round < 10; round++) {
		uint64_t p0 = (uint64_t)DFI_PHILOX_M0 * c0;
		uint64_t p1 = (uint64_t)DFI_PHILOX_M1 * c2;
		uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0;
		uint32_t n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
		c0 = n0;
		c1 = (uint32_t)p1;
		c2 = n2;
		c3 = (uint32_t)p0;
		k0 += DFI_PHILOX_W0;
		k1 += DFI_PHILOX_W1;
	}
	out[0] = c0;
	out[1] = c1;
	out[2] = c2;
	out[3] = c3;
}

/* The four words of `block` (draws 4 block .. 4 block + 3). */
DFI_PHILOX_FN void dfi_rng_block(uint64_t seed, uint64_t stream, uint64_t step, uint64_t block, uint32_t out[4])
{
	const uint32_t key[2] = { (uint32_t)seed, (uint32_t)(seed >> 32) };
	const uint32_t ctr[4] = { (uint32_t)block, (uint32_t)(block >> 32), (uint32_t)step, (uint32_t)stream };
	dfi_philox4x32_10(ctr, key, out);
}

/* 23 random bits centred in their interval: every value is exact in float
 * and lies in [2^-24, 1 - 2^-24]. */
DFI_PHILOX_FN float dfi_uniform_from_word(uint32_t word)
{
	return ((float)(word >> 9) + 0.5f) * 0x1p-23f;
}

DFI_PHILOX_FN float dfi_rng_uniform_at(uint64_t seed, uint64_t stream, uint64_t step, uint64_t index)
{
	uint32_t w[4];
	dfi_rng_block(seed, stream, step, index / 4, w);
	return dfi_uniform_from_word(w[index % 4]);
}

#endif
