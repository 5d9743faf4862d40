/* ReLU and windowed max / average pooling (the pooling of Inception
 * networks): forwards against naive loops, gradients against finite
 * differences, bad arguments refused with a message. */
#include "config.h"
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <string.h>

#include "diffuse/tensor.h"
#include "ctx_fixture.h"
#include "gradcheck.h"

#define N_CASES(cases) ((int)(sizeof(cases) / sizeof *(cases)))

/* ---- ReLU --------------------------------------------------------------- */

static df_tensor *build_relu(df_graph *g, df_tensor *const *in, const void *arg)
{
	(void)arg;
	return df_relu(g, in[0]);
}

static void naive_relu(const float *const *in, const struct gc_input *s, const void *arg, double *out, int64_t n)
{
	(void)s;
	(void)arg;
	for (int64_t i = 0; i < n; i++)
		out[i] = in[0][i] > 0.0f ? in[0][i] : 0.0;
}

static void test_relu(void **state)
{
	(void)state;
	/* A small step: a value within it of 0 would straddle the kink. */
	const struct gc_case cases[] = {
		{"relu", build_relu, NULL, 1, {GC_IN(3, 5, 7)}, .naive = naive_relu, .step = 1e-4, .probes = 105},
		{"relu large", build_relu, NULL, 1, {GC_IN(2, 40000)}, .naive = naive_relu, .step = 1e-4},
	};
	assert_int_equal(gc_check_table(ctx, cases, N_CASES(cases), 51), 0);
}

/* ---- pooling ------------------------------------------------------------ */

struct pool_arg {
	int max; /* 1: max pooling, 0: average */
	int kernel, stride, padding, count_pad;
};

static df_tensor *build_pool(df_graph *g, df_tensor *const *in, const void *arg)
{
	const struct pool_arg *a = arg;
	return a->max ? df_maxpool2d(g, in[0], a->kernel, a->stride, a->padding)
	              : df_avgpool2d_window(g, in[0], a->kernel, a->stride, a->padding, a->count_pad);
}

/* Straight from the definition: every window position, padding cells
 * skipped (max) or counted as zeros when count_pad. */
static void naive_pool(const float *const *in, const struct gc_input *s, const void *arg, double *out,
                       int64_t numel)
{
	const struct pool_arg *a = arg;
	const int64_t planes = s[0].shape[0] * s[0].shape[1], h = s[0].shape[2], w = s[0].shape[3];
	const int64_t ho = (h + 2 * a->padding - a->kernel) / a->stride + 1;
	const int64_t wo = (w + 2 * a->padding - a->kernel) / a->stride + 1;
	assert_int_equal(numel, planes * ho * wo);
	for (int64_t p = 0; p < planes; p++)
		for (int64_t oy = 0; oy < ho; oy++)
			for (int64_t ox = 0; ox < wo; ox++) {
				double best = -INFINITY, sum = 0.0;
				int inside = 0;
				for (int ky = 0; ky < a->kernel; ky++)
					for (int kx = 0; kx < a->kernel; kx++) {
						const int64_t y = oy * a->stride - a->padding + ky;
						const int64_t x = ox * a->stride - a->padding + kx;
						if (y < 0 || y >= h || x < 0 || x >= w)
							continue;
						const double v = in[0][(p * h + y) * w + x];
						best = v > best ? v : best;
						sum += v;
						inside++;
					}
				const int count = a->count_pad ? a->kernel * a->kernel : inside;
				out[(p * ho + oy) * wo + ox] = a->max ? best : sum / count;
			}
}

static void test_pooling(void **state)
{
	(void)state;
	/* Inception's windows: 3 every 2 unpadded (stem, reductions), 3 every
	 * 1 padded by 1 (branch pools), then other shapes and odd sizes. */
	static const struct pool_arg max_3_2 = {1, 3, 2, 0, 0}, max_3_1_1 = {1, 3, 1, 1, 0}, max_2_2 = {1, 2, 2, 0, 0},
	                             max_5_3_2 = {1, 5, 3, 2, 0}, avg_3_1_1 = {0, 3, 1, 1, 0},
	                             avg_3_1_1_pad = {0, 3, 1, 1, 1}, avg_3_2_1 = {0, 3, 2, 1, 0},
	                             avg_4_3_2_pad = {0, 4, 3, 2, 1}, avg_8_1_0 = {0, 8, 1, 0, 0};
	/* Max pooling: a step far below the gap between neighbouring values
	 * so no window's maximum changes hands. */
	const struct gc_case cases[] = {
		{"maxpool 3/2", build_pool, &max_3_2, 1, {GC_IN(2, 3, 9, 8)}, .naive = naive_pool, .step = 1e-4},
		{"maxpool 3/1 pad 1", build_pool, &max_3_1_1, 1, {GC_IN(1, 2, 5, 6)}, .naive = naive_pool, .step = 1e-4},
		{"maxpool 2/2 odd", build_pool, &max_2_2, 1, {GC_IN(1, 2, 7, 5)}, .naive = naive_pool, .step = 1e-4},
		{"maxpool 5/3 pad 2", build_pool, &max_5_3_2, 1, {GC_IN(1, 1, 11, 10)}, .naive = naive_pool, .step = 1e-4},
		{"maxpool large", build_pool, &max_3_2, 1, {GC_IN(2, 16, 35, 35)}, .naive = naive_pool, .step = 1e-4},
		{"avgpool 3/1 pad 1 (padding not counted)", build_pool, &avg_3_1_1, 1, {GC_IN(2, 3, 6, 5)},
		 .naive = naive_pool},
		{"avgpool 3/1 pad 1 (padding counted)", build_pool, &avg_3_1_1_pad, 1, {GC_IN(1, 2, 5, 5)},
		 .naive = naive_pool},
		{"avgpool 3/2 pad 1", build_pool, &avg_3_2_1, 1, {GC_IN(1, 2, 7, 8)}, .naive = naive_pool},
		{"avgpool 4/3 pad 2 counted", build_pool, &avg_4_3_2_pad, 1, {GC_IN(1, 1, 10, 9)}, .naive = naive_pool},
		{"avgpool 8 global", build_pool, &avg_8_1_0, 1, {GC_IN(2, 3, 8, 8)}, .naive = naive_pool},
		{"avgpool large", build_pool, &avg_3_1_1, 1, {GC_IN(2, 16, 17, 17)}, .naive = naive_pool},
	};
	assert_int_equal(gc_check_table(ctx, cases, N_CASES(cases), 61), 0);
}

static df_tensor *pool_for(df_graph *g, int kernel, int stride, int padding, int max)
{
	df_tensor *x = df_tensor_zeros(g, DF_SHAPE(1, 2, 5, 5));
	return max ? df_maxpool2d(g, x, kernel, stride, padding)
	           : df_avgpool2d_window(g, x, kernel, stride, padding, 0);
}

static void expect_refused(int kernel, int stride, int padding, int max, const char *needle)
{
	df_error err;
	df_graph *g = df_graph_create(ctx, DF_GRAPH_NO_GRAD);
	assert_null(pool_for(g, kernel, stride, padding, max));
	assert_int_equal(df_graph_status(g, &err), DF_EINVAL);
	assert_non_null(strstr(err.msg, needle));
	df_graph_destroy(g);
}

static void test_bad_arguments(void **state)
{
	(void)state;
	expect_refused(0, 1, 0, 1, "maxpool2d");   /* no window */
	expect_refused(3, 0, 0, 0, "avgpool2d");   /* no stride */
	expect_refused(3, 1, 2, 1, "padding 2");   /* padding beyond half the window */
	expect_refused(9, 1, 1, 0, "does not fit"); /* the window exceeds the padded input */
	df_error err;
	df_graph *g = df_graph_create(ctx, DF_GRAPH_NO_GRAD);
	assert_null(df_maxpool2d(g, df_tensor_zeros(g, DF_SHAPE(2, 5, 5)), 3, 1, 1));
	assert_int_equal(df_graph_status(g, &err), DF_EINVAL);
	df_graph_destroy(g);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_relu),
		cmocka_unit_test(test_pooling),
		cmocka_unit_test(test_bad_arguments),
	};
	return run_on_one_and_three_threads(tests);
}
