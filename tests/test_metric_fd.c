/* The fd metric plugin: zero on one set against itself, the closed form
 * on sampled Gaussians, and FD-FMNIST growing with corruption. */
#include "config.h"
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>

#include "diffuse/eval.h"
#include "diffuse/rng.h"
#include "metric_testdata.h"
#include "testutil.h"

static double fd_of(test_metric *m, const float *real, const float *generated, int64_t n)
{
	test_metric_feed(m, 1, real, NULL, n);
	test_metric_feed(m, 0, generated, NULL, n);
	return test_metric_value(m, "fd");
}

static void fd_of_a_set_with_itself_is_zero(void **state)
{
	(void)state;
	enum { N = 300, D = 16 };
	float *x = malloc(N * D * sizeof *x);
	df_rng_fill_normal(x, N * D, 1, 2, 3, 0);
	test_metric m;
	df_error err;
	assert_int_equal(test_metric_create(&m, "fd", (df_shape3){1, 4, 4}, &err, "features", "pixels", NULL), 0);
	assert_close(fd_of(&m, x, x, N), 0.0, 1e-6);
	test_metric_destroy(&m);
	free(x);
}

/* Real N(0, I), generated N((1, -2), diag(4, 1/4)) in two pixels:
 * FD = |mu|^2 + (2 - 1)^2 + (1/2 - 1)^2 = 6.25, up to sampling error. */
static void fd_of_two_gaussians_matches_the_closed_form(void **state)
{
	(void)state;
	enum { N = 40000 };
	float *real = malloc(2 * N * sizeof *real), *gen = malloc(2 * N * sizeof *gen);
	df_rng_fill_normal(real, 2 * N, 5, 0, 0, 0);
	df_rng_fill_normal(gen, 2 * N, 5, 1, 0, 0);
	for (int i = 0; i < N; i++) {
		gen[2 * i] = 1.0f + 2.0f * gen[2 * i];
		gen[2 * i + 1] = -2.0f + 0.5f * gen[2 * i + 1];
	}
	test_metric m;
	df_error err;
	assert_int_equal(test_metric_create(&m, "fd", (df_shape3){1, 1, 2}, &err, "features", "pixels", NULL), 0);
	assert_close(fd_of(&m, real, gen, N), 6.25, 0.1);
	test_metric_destroy(&m);
	free(real);
	free(gen);
}

/* Test images against other test images with Gaussian noise of growing
 * strength: FD-FMNIST rises at every step. */
static void fd_fmnist_grows_with_noise(void **state)
{
	(void)state;
	enum { N = 500 };
	int32_t *labels;
	float *images = fmnist_test_images(2 * N, &labels);
	if (!images)
		skip();
	const float strengths[] = {0.0f, 0.1f, 0.2f, 0.4f, 0.8f};
	float *noisy = malloc(N * 784 * sizeof *noisy);
	double last = -1;
	for (size_t level = 0; level < sizeof strengths / sizeof strengths[0]; level++) {
		df_rng_fill_normal(noisy, N * 784, 9, 0, 0, 0);
		for (int i = 0; i < N * 784; i++) {
			float v = images[N * 784 + i] + strengths[level] * noisy[i];
			noisy[i] = v < -1 ? -1 : v > 1 ? 1 : v;
		}
		test_metric m;
		df_error err;
		if (test_metric_create(&m, "fd", (df_shape3){1, 28, 28}, &err, "weights", fmnist_net_weights(), NULL))
			fail_msg("%s", err.msg);
		double fd = fd_of(&m, images, noisy, N);
		test_metric_destroy(&m);
		print_message("noise %.2f: FD-FMNIST %.4f\n", (double)strengths[level], fd);
		assert_true(fd > last);
		last = fd;
	}
	free(noisy);
	free(images);
	free(labels);
}

/* The real statistics saved by one fd metric and loaded by another give
 * the same distance; statistics of other features are refused. */
static void fd_reference_statistics_round_trip(void **state)
{
	(void)state;
	enum { N = 200, D = 4 };
	float *real = malloc(N * D * sizeof *real), *gen = malloc(N * D * sizeof *gen);
	df_rng_fill_normal(real, N * D, 8, 0, 0, 0);
	df_rng_fill_normal(gen, N * D, 8, 1, 0, 0);
	char *dir = make_temp_dir(), *path = path_join(dir, "real.safetensors");
	test_metric a, b;
	df_error err;
	assert_int_equal(test_metric_create(&a, "fd", (df_shape3){1, 2, 2}, &err, "features", "pixels", NULL), 0);
	assert_int_equal(test_metric_create(&b, "fd", (df_shape3){1, 2, 2}, &err, "features", "pixels", NULL), 0);
	const df_metric_reference_stats *stats = a.vtable->extension(a.self, DF_METRIC_REFERENCE_STATS);
	assert_non_null(stats);
	double direct = fd_of(&a, real, gen, N);
	assert_int_equal(stats->save(a.self, path, &err), 0);
	assert_int_equal(stats->load(b.self, path, &err), 0);
	assert_int_equal(stats->count(b.self), N);
	test_metric_feed(&b, 0, gen, NULL, N);
	assert_close(test_metric_value(&b, "fd"), direct, 1e-12);
	test_metric_destroy(&b);
	assert_int_equal(test_metric_create(&b, "fd", (df_shape3){4, 1, 1}, &err, "features", "pixels", NULL), 0);
	assert_int_equal(stats->load(b.self, path, &err), DF_EINVAL);
	test_metric_destroy(&a);
	test_metric_destroy(&b);
	remove_tree(dir);
	free(path);
	free(dir);
	free(real);
	free(gen);
}

static void fd_refuses_what_it_cannot_measure(void **state)
{
	(void)state;
	test_metric m;
	df_error err;
	/* fmnist-net takes one channel of 28x28 (or a centred padding of it) */
	assert_int_equal(test_metric_create(&m, "fd", (df_shape3){3, 28, 28}, &err, NULL), DF_EINVAL);
	assert_int_equal(test_metric_create(&m, "fd", (df_shape3){1, 31, 31}, &err, NULL), DF_EINVAL);
	assert_int_equal(test_metric_create(&m, "fd", (df_shape3){1, 28, 28}, &err, "weights", "/nonexistent/w.safetensors",
	                                    NULL) < 0, 1);
	/* one generated image has no covariance */
	float x[4] = {0, 1, 2, 3};
	assert_int_equal(test_metric_create(&m, "fd", (df_shape3){1, 1, 2}, &err, "features", "pixels", NULL), 0);
	test_metric_feed(&m, 1, x, NULL, 2);
	test_metric_feed(&m, 0, x, NULL, 1);
	df_metric_value v[2];
	assert_int_equal(m.vtable->result(m.self, v, 2, &err), DF_EINVAL);
	test_metric_destroy(&m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(fd_of_a_set_with_itself_is_zero),
		cmocka_unit_test(fd_of_two_gaussians_matches_the_closed_form),
		cmocka_unit_test(fd_fmnist_grows_with_noise),
		cmocka_unit_test(fd_reference_statistics_round_trip),
		cmocka_unit_test(fd_refuses_what_it_cannot_measure),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
