/* Philox4x32-10 counter-based random numbers; see diffuse/rng.h for the
 * exact mapping of (seed, stream, step, index) onto key and counter. */
#include "config.h"

#include <errno.h>
#include <math.h>

#include "diffuse/rng.h"
#include "philox.h"

void df_philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4])
{
	dfi_philox4x32_10(ctr, key, out);
}

void df_rng_block(uint64_t seed, uint64_t stream, uint64_t step, uint64_t block,
		  uint32_t out[4])
{
	dfi_rng_block(seed, stream, step, block, out);
}

uint32_t df_rng_u32(uint64_t seed, uint64_t stream, uint64_t step, uint64_t index)
{
	uint32_t w[4];
	df_rng_block(seed, stream, step, index / 4, w);
	return w[index % 4];
}

float df_rng_uniform(uint64_t seed, uint64_t stream, uint64_t step, uint64_t index)
{
	return dfi_uniform_from_word(df_rng_u32(seed, stream, step, index));
}

/* Box-Muller on one pair of words, in double so the float result does not
 * depend on the last bits of a particular libm. */
static inline void normal_pair(uint32_t a, uint32_t b, float *z0, float *z1)
{
	const double two_pi = 6.283185307179586476925286766559;
	double u1 = ((double)a + 0.5) * 0x1p-32;
	double u2 = ((double)b + 0.5) * 0x1p-32;
	double r = sqrt(-2.0 * log(u1));
	double theta = two_pi * u2;
	*z0 = (float)(r * cos(theta));
	*z1 = (float)(r * sin(theta));
}

static void normals_of_block(const uint32_t w[4], float z[4])
{
	normal_pair(w[0], w[1], &z[0], &z[1]);
	normal_pair(w[2], w[3], &z[2], &z[3]);
}

float df_rng_normal(uint64_t seed, uint64_t stream, uint64_t step, uint64_t index)
{
	uint32_t w[4];
	float z[2];
	df_rng_block(seed, stream, step, index / 4, w);
	unsigned pair = (unsigned)(index % 4) / 2;
	normal_pair(w[2 * pair], w[2 * pair + 1], &z[0], &z[1]);
	return z[index % 2];
}

enum fill_kind { FILL_UNIFORM, FILL_NORMAL, FILL_BERNOULLI };

/* Shared driver of the fill functions: one OpenMP iteration per Philox
 * block, each writing only the elements of dst that fall in its block, so
 * the split between threads cannot change any value. */
static void fill_blocks(void *dst, size_t n, enum fill_kind kind, float keep_prob,
			uint64_t seed, uint64_t stream, uint64_t step, uint64_t first_index)
{
	if (n == 0)
		return;
	const uint64_t first_block = first_index / 4;
	const int64_t nblocks = (int64_t)((first_index + n - 1) / 4 - first_block + 1);

#pragma omp parallel for schedule(static)
	for (int64_t b = 0; b < nblocks; b++) {
		uint32_t w[4];
		float vals[4];
		uint64_t block = first_block + (uint64_t)b;
		df_rng_block(seed, stream, step, block, w);
		if (kind == FILL_NORMAL)
			normals_of_block(w, vals);
		else
			for (unsigned k = 0; k < 4; k++)
				vals[k] = dfi_uniform_from_word(w[k]);
		for (unsigned k = 0; k < 4; k++) {
			uint64_t idx = block * 4 + k;
			if (idx < first_index || idx - first_index >= n)
				continue;
			size_t i = (size_t)(idx - first_index);
			if (kind == FILL_BERNOULLI)
				((uint8_t *)dst)[i] = vals[k] < keep_prob;
			else
				((float *)dst)[i] = vals[k];
		}
	}
}

void df_rng_fill_uniform(float *dst, size_t n, uint64_t seed, uint64_t stream,
			 uint64_t step, uint64_t first_index)
{
	fill_blocks(dst, n, FILL_UNIFORM, 0.0f, seed, stream, step, first_index);
}

void df_rng_fill_normal(float *dst, size_t n, uint64_t seed, uint64_t stream,
			uint64_t step, uint64_t first_index)
{
	fill_blocks(dst, n, FILL_NORMAL, 0.0f, seed, stream, step, first_index);
}

void df_rng_fill_bernoulli(uint8_t *mask, size_t n, float keep_prob, uint64_t seed,
			   uint64_t stream, uint64_t step, uint64_t first_index)
{
	fill_blocks(mask, n, FILL_BERNOULLI, keep_prob, seed, stream, step, first_index);
}

/* Sequential reader of the words at indices 0, 1, 2, ... of one
 * (seed, stream, step), fetching a block every fourth word. */
struct word_reader {
	uint64_t seed, stream, step, next;
	uint32_t w[4];
};

static uint32_t next_word(struct word_reader *r)
{
	if (r->next % 4 == 0)
		df_rng_block(r->seed, r->stream, r->step, r->next / 4, r->w);
	return r->w[r->next++ % 4];
}

/* Uniform integer in [0, bound), bound <= 2^32, without modulo bias
 * (D. Lemire, "Fast random integer generation in an interval", 2019). */
static uint64_t bounded(struct word_reader *r, uint64_t bound)
{
	uint64_t m = (uint64_t)next_word(r) * bound;
	uint64_t low = m & UINT32_MAX;
	if (low < bound) {
		uint64_t threshold = ((UINT64_C(1) << 32) - bound) % bound;
		while (low < threshold) {
			m = (uint64_t)next_word(r) * bound;
			low = m & UINT32_MAX;
		}
	}
	return m >> 32;
}

int df_rng_permutation(uint32_t *perm, size_t n, uint64_t seed, uint64_t stream,
		       uint64_t step)
{
	if (n == 0)
		return 0;
	if (!perm || (uint64_t)n - 1 > UINT32_MAX)
		return DF_EINVAL;
	for (size_t i = 0; i < n; i++)
		perm[i] = (uint32_t)i;
	struct word_reader r = { .seed = seed, .stream = stream, .step = step, .next = 0 };
	for (size_t i = n - 1; i > 0; i--) {
		size_t j = (size_t)bounded(&r, (uint64_t)i + 1);
		uint32_t tmp = perm[i];
		perm[i] = perm[j];
		perm[j] = tmp;
	}
	return 0;
}
