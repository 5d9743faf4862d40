/* diffuse: counter-based random numbers (Philox4x32-10).
 *
 * Every draw is a pure function of (seed, stream, step, index): there is no
 * generator state to carry, save or advance, so a run draws the same numbers
 * whatever the thread count, the batch split or the backend.
 *
 * Mapping onto Philox4x32-10 (a CUDA backend reproduces it bit for bit):
 *
 *   key[0] = low 32 bits of seed        key[1] = high 32 bits of seed
 *   ctr[0] = low 32 bits of block       ctr[1] = high 32 bits of block
 *   ctr[2] = low 32 bits of step        ctr[3] = low 32 bits of stream
 *
 * where block = index / 4: one Philox call yields four 32-bit words, and
 * word (index % 4) of that block is the draw of `index`. Steps and streams
 * are taken modulo 2^32 (values that differ only above bit 31 alias).
 *
 * Conventions: `stream` separates independent uses under one seed (e.g.
 * training noise, timesteps, dropout, data order), `step` is the training or
 * sampling step, `index` the position within the draw (e.g. sample * D + d,
 * so noise is keyed per sample, not per batch).
 *
 * Uniform floats are ((word >> 9) + 0.5) * 2^-23: in (0, 1), never 0 or 1,
 * so log(u) and log(1 - u) are finite. Normals use Box-Muller on the pair of
 * words (2p, 2p+1) of a block, p = (index % 4) / 2; the even index of the
 * pair takes r*cos(theta), the odd one r*sin(theta), with
 * u1 = (w[2p] + 0.5) * 2^-32, u2 = (w[2p+1] + 0.5) * 2^-32,
 * r = sqrt(-2 ln u1), theta = 2 pi u2, computed in double and rounded to
 * float (so any correctly-rounding double libm gives the same floats).
 */
#ifndef DIFFUSE_RNG_H
#define DIFFUSE_RNG_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The raw Philox4x32-10 bijection (Salmon et al., SC'11): out = f_key(ctr). */
void df_philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]);

/* The four words of block `block` (draws 4*block .. 4*block+3). */
void df_rng_block(uint64_t seed, uint64_t stream, uint64_t step, uint64_t block,
		  uint32_t out[4]);

/* Single draws at `index`. */
uint32_t df_rng_u32(uint64_t seed, uint64_t stream, uint64_t step, uint64_t index);
float df_rng_uniform(uint64_t seed, uint64_t stream, uint64_t step, uint64_t index);
float df_rng_normal(uint64_t seed, uint64_t stream, uint64_t step, uint64_t index);

/* dst[i] = draw at index first_index + i, for i < n. Parallel over blocks
 * with OpenMP; the result does not depend on the number of threads. */
void df_rng_fill_uniform(float *dst, size_t n, uint64_t seed, uint64_t stream,
			 uint64_t step, uint64_t first_index);
void df_rng_fill_normal(float *dst, size_t n, uint64_t seed, uint64_t stream,
			uint64_t step, uint64_t first_index);

/* Dropout masks: mask[i] = 1 (keep) when the uniform draw at
 * first_index + i is below keep_prob, else 0. keep_prob <= 0 drops all,
 * keep_prob >= 1 keeps all. */
void df_rng_fill_bernoulli(uint8_t *mask, size_t n, float keep_prob, uint64_t seed,
			   uint64_t stream, uint64_t step, uint64_t first_index);

/* A uniformly random permutation of 0 .. n-1 (Fisher-Yates from the top,
 * j uniform in [0, i] by Lemire's multiply-and-reject on the words of
 * (seed, stream, step) at indices 0, 1, 2, ... in order of use), e.g. the
 * data order of epoch `step`. Returns 0, or -EINVAL when n > 2^32 or perm
 * is NULL with n > 0. */
int df_rng_permutation(uint32_t *perm, size_t n, uint64_t seed, uint64_t stream,
		       uint64_t step);

#ifdef __cplusplus
}
#endif
#endif
