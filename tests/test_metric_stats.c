/* The statistics under the metrics: streaming moments, the Fréchet
 * distance against closed forms, k-NN radii and manifold coverage. */
#include "config.h"
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "diffuse/rng.h"
#include "gaussian.h"
#include "manifold.h"
#include "metric_testdata.h"

#define DIM 12

/* A random symmetric positive definite matrix: A A^T + 0.1 I. */
static void random_spd(double *s, int d, uint64_t seed)
{
	double *a = malloc((size_t)d * d * sizeof *a);
	for (int i = 0; i < d * d; i++)
		a[i] = df_rng_normal(seed, 1, 0, (uint64_t)i);
	for (int i = 0; i < d; i++)
		for (int j = 0; j < d; j++) {
			double v = i == j ? 0.1 : 0.0;
			for (int k = 0; k < d; k++)
				v += a[i * d + k] * a[j * d + k];
			s[i * d + j] = v;
		}
	free(a);
}

static void fd_of_a_gaussian_with_itself_is_zero(void **state)
{
	(void)state;
	double mu[DIM], cov[DIM * DIM], fd = -1;
	for (int i = 0; i < DIM; i++)
		mu[i] = 3.0 * df_rng_normal(7, 2, 0, (uint64_t)i);
	random_spd(cov, DIM, 7);
	df_error err;
	assert_int_equal(dff_frechet(DIM, mu, cov, mu, cov, &fd, &err), 0);
	assert_true(fd >= 0 && fd < 1e-8);
}

/* Diagonal covariances: |mu1 - mu2|^2 + sum (sqrt a_i - sqrt b_i)^2. */
static void fd_of_diagonal_gaussians_matches_the_closed_form(void **state)
{
	(void)state;
	double mu1[DIM], mu2[DIM], c1[DIM * DIM] = {0}, c2[DIM * DIM] = {0}, expect = 0, fd = 0;
	for (int i = 0; i < DIM; i++) {
		mu1[i] = i * 0.5;
		mu2[i] = 1.0 - i * 0.25;
		c1[i * DIM + i] = 0.5 + i;
		c2[i * DIM + i] = 4.0 / (1 + i);
		expect += (mu1[i] - mu2[i]) * (mu1[i] - mu2[i]);
		expect += pow(sqrt(c1[i * DIM + i]) - sqrt(c2[i * DIM + i]), 2);
	}
	df_error err;
	assert_int_equal(dff_frechet(DIM, mu1, c1, mu2, c2, &fd, &err), 0);
	assert_close(fd, expect, 1e-9 * expect);
}

/* Commuting full covariances S and c S: tr(S) (1 + c - 2 sqrt c). And the
 * distance is symmetric in its arguments. */
static void fd_of_scaled_full_covariances_matches_the_closed_form(void **state)
{
	(void)state;
	double mu[DIM] = {0}, s1[DIM * DIM], s2[DIM * DIM], trace = 0, fd = 0, back = 0;
	random_spd(s1, DIM, 11);
	const double c = 2.25;
	for (int i = 0; i < DIM * DIM; i++)
		s2[i] = c * s1[i];
	for (int i = 0; i < DIM; i++)
		trace += s1[i * DIM + i];
	df_error err;
	assert_int_equal(dff_frechet(DIM, mu, s1, mu, s2, &fd, &err), 0);
	assert_close(fd, trace * (1 + c - 2 * sqrt(c)), 1e-8 * trace);
	assert_int_equal(dff_frechet(DIM, mu, s2, mu, s1, &back, &err), 0);
	assert_close(fd, back, 1e-8 * trace);
}

/* Batches streamed in any split give the two-pass mean and covariance,
 * also far from the origin. */
static void moments_stream_equals_two_pass(void **state)
{
	(void)state;
	enum { N = 500, D = 5 };
	float *x = malloc(N * D * sizeof *x);
	for (int i = 0; i < N * D; i++)
		x[i] = 1000.0f + df_rng_normal(3, 4, 0, (uint64_t)i) * (float)(1 + i % D);
	dff_moments m;
	df_error err;
	assert_int_equal(dff_moments_init(&m, D, &err), 0);
	assert_int_equal(dff_moments_add(&m, x, 7, &err), 0);
	assert_int_equal(dff_moments_add(&m, x + 7 * D, 300, &err), 0);
	assert_int_equal(dff_moments_add(&m, x + 307 * D, N - 307, &err), 0);
	double mean[D], cov[D * D], ref_mean[D] = {0};
	assert_int_equal(dff_moments_get(&m, mean, cov, &err), 0);
	for (int i = 0; i < N; i++)
		for (int j = 0; j < D; j++)
			ref_mean[j] += x[i * D + j] / (double)N;
	for (int a = 0; a < D; a++) {
		assert_close(mean[a], ref_mean[a], 1e-9 * 1000);
		for (int b = 0; b < D; b++) {
			double c = 0;
			for (int i = 0; i < N; i++)
				c += (x[i * D + a] - ref_mean[a]) * (x[i * D + b] - ref_mean[b]);
			assert_close(cov[a * D + b], c / (N - 1), 1e-9 * (1 + fabs(c / (N - 1))));
		}
	}
	dff_moments_free(&m);
	free(x);
}

static void moments_need_two_samples(void **state)
{
	(void)state;
	dff_moments m;
	df_error err;
	float one[3] = {1, 2, 3};
	double mean[3], cov[9];
	assert_int_equal(dff_moments_init(&m, 3, &err), 0);
	assert_int_equal(dff_moments_add(&m, one, 1, &err), 0);
	assert_int_equal(dff_moments_get(&m, mean, cov, &err), DF_EINVAL);
	dff_moments_free(&m);
}

/* Points 0, 1, 3, 6, 10 on a line: squared distance to the 2nd nearest
 * other point. */
static void knn_radii_on_a_line(void **state)
{
	(void)state;
	const float x[5] = {0, 1, 3, 6, 10};
	const float expect[5] = {9, 4, 9, 16, 49};
	float radii[5];
	df_error err;
	assert_int_equal(dff_knn_radii(x, 5, 1, 2, radii, &err), 0);
	for (int i = 0; i < 5; i++)
		assert_float_equal(radii[i], expect[i], 1e-4);
	assert_int_equal(dff_knn_radii(x, 2, 1, 2, radii, &err), DF_EINVAL);
}

static void coverage_counts_points_inside_any_ball(void **state)
{
	(void)state;
	const float x[2] = {0, 10}, radii[2] = {1, 4};
	const float q[4] = {0.5f, 1.5f, 11.9f, 12.1f};
	double fraction = -1;
	df_error err;
	assert_int_equal(dff_manifold_coverage(x, radii, 2, q, 4, 1, &fraction, &err), 0);
	assert_close(fraction, 0.5, 1e-12);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(fd_of_a_gaussian_with_itself_is_zero),
		cmocka_unit_test(fd_of_diagonal_gaussians_matches_the_closed_form),
		cmocka_unit_test(fd_of_scaled_full_covariances_matches_the_closed_form),
		cmocka_unit_test(moments_stream_equals_two_pass),
		cmocka_unit_test(moments_need_two_samples),
		cmocka_unit_test(knn_radii_on_a_line),
		cmocka_unit_test(coverage_counts_points_inside_any_ball),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
