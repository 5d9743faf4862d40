/* Philox known answers, distribution sanity and thread-count independence. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <omp.h>

#include "diffuse/rng.h"

/* Known-answer vectors of Philox4x32-10 from the Random123 distribution
 * (kat_vectors): counter, key, expected output. */
static void test_philox_known_answers(void **state)
{
	static const struct {
		uint32_t ctr[4], key[2], out[4];
	} kat[] = {
		{ { 0, 0, 0, 0 }, { 0, 0 },
		  { 0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8 } },
		{ { 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff }, { 0xffffffff, 0xffffffff },
		  { 0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd } },
		{ { 0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344 }, { 0xa4093822, 0x299f31d0 },
		  { 0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1 } },
	};
	(void)state;
	for (size_t i = 0; i < sizeof kat / sizeof kat[0]; i++) {
		uint32_t out[4];
		df_philox4x32_10(kat[i].ctr, kat[i].key, out);
		for (int k = 0; k < 4; k++)
			assert_int_equal(out[k], kat[i].out[k]);
	}
}

/* The documented mapping: key = seed, counter = (block, step, stream). */
static void test_mapping(void **state)
{
	(void)state;
	const uint64_t seed = 0x299f31d0a4093822ull;
	const uint32_t key[2] = { 0xa4093822, 0x299f31d0 };
	const uint32_t ctr[4] = { 0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344 };
	uint32_t expect[4], got[4];
	df_philox4x32_10(ctr, key, expect);
	df_rng_block(seed, 0x03707344, 0x13198a2e, 0x85a308d3243f6a88ull, got);
	assert_memory_equal(got, expect, sizeof got);
	/* word k of block b is the draw at index 4b + k */
	df_rng_block(seed, 3, 2, 0x0123456789abcdeull, got);
	for (unsigned k = 0; k < 4; k++)
		assert_int_equal(df_rng_u32(seed, 3, 2, 0x0123456789abcdeull * 4 + k), got[k]);
}

static void test_uniform_range_and_singles(void **state)
{
	(void)state;
	enum { N = 10001 };
	float *u = malloc(N * sizeof *u);
	assert_non_null(u);
	df_rng_fill_uniform(u, N, 7, 1, 2, 3);
	double sum = 0;
	for (int i = 0; i < N; i++) {
		assert_true(u[i] > 0.0f && u[i] < 1.0f);
		assert_true(u[i] == df_rng_uniform(7, 1, 2, 3 + (uint64_t)i));
		sum += u[i];
	}
	assert_true(fabs(sum / N - 0.5) < 0.01);
	free(u);
}

static void test_normal_moments(void **state)
{
	(void)state;
	enum { N = 200000 };
	float *z = malloc(N * sizeof *z);
	assert_non_null(z);
	df_rng_fill_normal(z, N, 42, 0, 0, 0);
	double mean = 0, var = 0;
	for (int i = 0; i < N; i++) {
		assert_true(isfinite(z[i]));
		mean += z[i];
	}
	mean /= N;
	for (int i = 0; i < N; i++)
		var += (z[i] - mean) * (z[i] - mean);
	var /= N - 1;
	/* standard errors: 1/sqrt(N) = 0.0022 for the mean, ~0.0032 for the variance */
	assert_true(fabs(mean) < 0.01);
	assert_true(fabs(var - 1.0) < 0.015);
	/* consecutive indices share one Box-Muller pair: z0^2 + z1^2 = r^2 = -2 ln u1 */
	for (int i = 0; i < 64; i += 2) {
		uint32_t w = df_rng_u32(42, 0, 0, (uint64_t)i);
		double r2 = -2.0 * log(((double)w + 0.5) * 0x1p-32);
		double got = (double)z[i] * z[i] + (double)z[i + 1] * z[i + 1];
		assert_true(fabs(got - r2) < 1e-5 * (1 + r2));
	}
	free(z);
}

/* An unaligned window equals the same indices of a full fill, and the
 * single-draw function agrees. */
static void test_offsets(void **state)
{
	(void)state;
	float full[40], part[29];
	df_rng_fill_normal(full, 40, 5, 9, 11, 100);
	df_rng_fill_normal(part, 29, 5, 9, 11, 103);
	assert_memory_equal(part, full + 3, sizeof part);
	for (int i = 0; i < 40; i++)
		assert_true(full[i] == df_rng_normal(5, 9, 11, 100 + (uint64_t)i));
	/* different streams and steps give different numbers */
	float other[40];
	df_rng_fill_normal(other, 40, 5, 10, 11, 100);
	assert_memory_not_equal(other, full, sizeof full);
	df_rng_fill_normal(other, 40, 5, 9, 12, 100);
	assert_memory_not_equal(other, full, sizeof full);
}

static void test_thread_count_independence(void **state)
{
	(void)state;
	enum { N = 100003 };
	float *a = malloc(N * sizeof *a), *b = malloc(N * sizeof *b);
	uint8_t *ma = malloc(N), *mb = malloc(N);
	assert_true(a && b && ma && mb);
	int saved = omp_get_max_threads();

	omp_set_num_threads(1);
	df_rng_fill_normal(a, N, 123, 4, 5, 1);
	df_rng_fill_bernoulli(ma, N, 0.7f, 123, 4, 5, 1);
	omp_set_num_threads(2);
	df_rng_fill_normal(b, N, 123, 4, 5, 1);
	df_rng_fill_bernoulli(mb, N, 0.7f, 123, 4, 5, 1);
	assert_memory_equal(a, b, N * sizeof *a);
	assert_memory_equal(ma, mb, N);

	omp_set_num_threads(1);
	df_rng_fill_uniform(a, N, 1, 2, 3, 7);
	omp_set_num_threads(2);
	df_rng_fill_uniform(b, N, 1, 2, 3, 7);
	assert_memory_equal(a, b, N * sizeof *a);

	omp_set_num_threads(saved);
	free(a);
	free(b);
	free(ma);
	free(mb);
}

static void test_bernoulli(void **state)
{
	(void)state;
	enum { N = 100000 };
	uint8_t *m = malloc(N);
	assert_non_null(m);
	df_rng_fill_bernoulli(m, N, 0.9f, 3, 3, 3, 0);
	size_t kept = 0;
	for (int i = 0; i < N; i++) {
		assert_true(m[i] == 0 || m[i] == 1);
		kept += m[i];
	}
	assert_true(fabs((double)kept / N - 0.9) < 0.005);
	df_rng_fill_bernoulli(m, N, 0.0f, 3, 3, 3, 0);
	for (int i = 0; i < N; i++)
		assert_int_equal(m[i], 0);
	df_rng_fill_bernoulli(m, N, 1.0f, 3, 3, 3, 0);
	for (int i = 0; i < N; i++)
		assert_int_equal(m[i], 1);
	free(m);
}

static void test_permutation(void **state)
{
	(void)state;
	enum { N = 1000 };
	uint32_t p[N], q[N];
	uint8_t seen[N];
	assert_int_equal(df_rng_permutation(p, N, 9, 1, 0), 0);
	memset(seen, 0, sizeof seen);
	for (int i = 0; i < N; i++) {
		assert_true(p[i] < N);
		assert_int_equal(seen[p[i]], 0);
		seen[p[i]] = 1;
	}
	/* deterministic for one key, different for another epoch */
	assert_int_equal(df_rng_permutation(q, N, 9, 1, 0), 0);
	assert_memory_equal(p, q, sizeof p);
	assert_int_equal(df_rng_permutation(q, N, 9, 1, 1), 0);
	assert_memory_not_equal(p, q, sizeof p);

	/* every position of a 3-element permutation is roughly uniform */
	unsigned counts[3][3] = { { 0 } };
	for (uint64_t epoch = 0; epoch < 3000; epoch++) {
		uint32_t r[3];
		assert_int_equal(df_rng_permutation(r, 3, 1, 2, epoch), 0);
		for (int i = 0; i < 3; i++)
			counts[i][r[i]]++;
	}
	for (int i = 0; i < 3; i++)
		for (int j = 0; j < 3; j++)
			assert_true(counts[i][j] > 850 && counts[i][j] < 1150);

	assert_int_equal(df_rng_permutation(NULL, 0, 1, 1, 1), 0);
	assert_int_equal(df_rng_permutation(p, 1, 1, 1, 1), 0);
	assert_int_equal(p[0], 0);
	assert_int_equal(df_rng_permutation(NULL, 5, 1, 1, 1), -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_philox_known_answers),
		cmocka_unit_test(test_mapping),
		cmocka_unit_test(test_uniform_range_and_singles),
		cmocka_unit_test(test_normal_moments),
		cmocka_unit_test(test_offsets),
		cmocka_unit_test(test_thread_count_independence),
		cmocka_unit_test(test_bernoulli),
		cmocka_unit_test(test_permutation),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
