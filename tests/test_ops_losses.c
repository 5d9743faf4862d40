/* The normal KL, discretised Gaussian log-likelihood and cross-entropy ops:
 * forwards against guided-diffusion's formulas evaluated in double,
 * gradients against central differences (tests/gradcheck.h), the edge
 * bins, the 1e-12 floor and bad arguments. */
#include "config.h"
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include "ctx_fixture.h"
#include "gradcheck.h"

#define N_CASES(cases) ((int)(sizeof(cases) / sizeof *(cases)))

/* ---- normal KL --------------------------------------------------------- */

static df_tensor *build_normal_kl(df_graph *g, df_tensor *const *in, const void *arg)
{
	(void)arg;
	return df_normal_kl(g, in[0], in[1], in[2], in[3]);
}

static void naive_normal_kl(const float *const *in, const struct gc_input *s, const void *arg, double *out,
                            int64_t numel)
{
	(void)s, (void)arg;
	for (int64_t i = 0; i < numel; i++) {
		const double dm = (double)in[0][i] - in[2][i];
		out[i] = 0.5 * (-1.0 + in[3][i] - in[1][i] + exp((double)in[1][i] - in[3][i]) +
		                dm * dm * exp(-(double)in[3][i]));
	}
}

static void test_normal_kl(void **state)
{
	(void)state;
	const struct gc_case cases[] = {
		{"normal_kl", build_normal_kl, NULL, 4,
		 {GC_IN(2, 3, 5), GC_IN_RANGE(-3.0f, 1.0f, 2, 3, 5), GC_IN(2, 3, 5), GC_IN_RANGE(-3.0f, 1.0f, 2, 3, 5)},
		 .naive = naive_normal_kl},
		{"normal_kl one element", build_normal_kl, NULL, 4,
		 {GC_IN(1), GC_IN_RANGE(-1.0f, 1.0f, 1), GC_IN(1), GC_IN_RANGE(-1.0f, 1.0f, 1)}, .naive = naive_normal_kl},
	};
	assert_int_equal(gc_check_table(ctx, cases, N_CASES(cases), 61), 0);
}

/* ---- discretised Gaussian log-likelihood ------------------------------- */

static double approx_cdf(double z)
{
	return 0.5 * (1.0 + tanh(sqrt(2.0 / M_PI) * (z + 0.044715 * z * z * z)));
}

static double dgl_reference(double x, double mean, double log_scale)
{
	const double inv = exp(-log_scale);
	const double cdf_plus = approx_cdf(inv * (x - mean + 1.0 / 255.0));
	const double cdf_min = approx_cdf(inv * (x - mean - 1.0 / 255.0));
	if (x < -0.999)
		return log(fmax(cdf_plus, 1e-12));
	if (x > 0.999)
		return log(fmax(1.0 - cdf_min, 1e-12));
	return log(fmax(cdf_plus - cdf_min, 1e-12));
}

/* Inputs x, mean, log_scale, all random: the interior bins. */
static df_tensor *build_dgl(df_graph *g, df_tensor *const *in, const void *arg)
{
	(void)arg;
	return df_discretized_gaussian_loglik(g, in[0], in[1], in[2]);
}

static void naive_dgl(const float *const *in, const struct gc_input *s, const void *arg, double *out,
                      int64_t numel)
{
	(void)s, (void)arg;
	for (int64_t i = 0; i < numel; i++)
		out[i] = dgl_reference(in[0][i], in[1][i], in[2][i]);
}

/* Pixels on the 256-level grid, both edges included, held by the case;
 * the inputs are the offset of the mean from its pixel and the log-scale. */
#define GRID_N 12
#define PIXEL(level) ((float)(level) / 127.5f - 1.0f)
static const float grid_pixels[GRID_N] = {
	PIXEL(0), PIXEL(255), PIXEL(1), PIXEL(254), PIXEL(127), PIXEL(128),
	PIXEL(64), PIXEL(191), PIXEL(0), PIXEL(255), PIXEL(153), PIXEL(25),
};

static df_tensor *build_dgl_grid(df_graph *g, df_tensor *const *in, const void *arg)
{
	(void)arg;
	df_tensor *x = df_tensor_from_host(g, grid_pixels, DF_SHAPE(GRID_N));
	return df_discretized_gaussian_loglik(g, x, df_add(g, x, in[0]), in[1]);
}

static void naive_dgl_grid(const float *const *in, const struct gc_input *s, const void *arg, double *out,
                           int64_t numel)
{
	(void)s, (void)arg;
	for (int64_t i = 0; i < numel; i++) {
		const float mean = grid_pixels[i] + in[0][i]; /* as df_add rounds it */
		out[i] = dgl_reference(grid_pixels[i], mean, in[1][i]);
	}
}

static void test_discretized_gaussian(void **state)
{
	(void)state;
	const struct gc_case cases[] = {
		/* x and mean within about a standard deviation: further apart, the
		 * float32 differences of CDFs near 0 or 1 that guided-diffusion's
		 * formula takes are too coarse for finite differences. Even here
		 * they carry about 1e-6 of noise, so the tolerance is 3%. */
		{"discretized_gaussian_loglik interior", build_dgl, NULL, 3,
		 {GC_IN_RANGE(0.1f, 0.2f, 3, 7), GC_IN_RANGE(0.1f, 0.2f, 3, 7), GC_IN_RANGE(-2.5f, -1.5f, 3, 7)},
		 .tol = 3e-2, .step = 2e-3, .naive = naive_dgl},
		{"discretized_gaussian_loglik on the pixel grid", build_dgl_grid, NULL, 2,
		 {GC_IN_RANGE(-0.1f, 0.1f, GRID_N), GC_IN_RANGE(-2.5f, -1.0f, GRID_N)}, .step = 1e-3,
		 .naive = naive_dgl_grid},
	};
	assert_int_equal(gc_check_table(ctx, cases, N_CASES(cases), 71), 0);
}

/* The 256 bins tile the line, the edge bins reaching to -inf and +inf, so
 * the probabilities of all pixel values sum to one; far from the mean the
 * log-likelihood stops at log(1e-12) and passes no gradient. */
static void test_discretized_gaussian_edges(void **state)
{
	(void)state;
	df_error err;
	float x[256], mean[256], log_scale[256], lp[256];
	const float means[3] = {0.0f, -0.95f, 0.4f}, scales[3] = {-1.0f, -4.0f, 0.5f};
	df_graph *g = df_graph_create(ctx, DF_GRAPH_NO_GRAD);
	for (int t = 0; t < 3; t++) {
		df_graph_reset(g);
		for (int k = 0; k < 256; k++) {
			x[k] = (float)k / 127.5f - 1.0f;
			mean[k] = means[t];
			log_scale[k] = scales[t];
		}
		df_tensor *out = df_discretized_gaussian_loglik(g, df_tensor_from_host(g, x, DF_SHAPE(256)),
		                                                df_tensor_from_host(g, mean, DF_SHAPE(256)),
		                                                df_tensor_from_host(g, log_scale, DF_SHAPE(256)));
		assert_int_equal(df_tensor_read(out, lp, &err), 0);
		double total = 0.0;
		for (int k = 0; k < 256; k++)
			total += exp(lp[k]);
		if (fabs(total - 1.0) > 1e-4)
			fail_msg("mean %g, log-scale %g: the bins' probabilities sum to %.8f", (double)means[t],
			         (double)scales[t], total);
	}
	df_graph_destroy(g);

	df_params *p = df_params_create(ctx);
	df_tensor *m = df_params_add(p, "mean", DF_SHAPE(1), 0);
	assert_int_equal(df_params_finalize(p, &err), 0);
	const float far_mean = 0.9f, far_x = 0.0f, far_scale = -6.0f;
	assert_int_equal(df_tensor_write(m, &far_mean, &err), 0);
	g = df_graph_create(ctx, 0);
	df_tensor *out = df_discretized_gaussian_loglik(g, df_tensor_from_host(g, &far_x, DF_SHAPE(1)), m,
	                                                df_tensor_from_host(g, &far_scale, DF_SHAPE(1)));
	float value, grad;
	assert_int_equal(df_tensor_read(out, &value, &err), 0);
	assert_true(fabsf(value - logf(1e-12f)) < 1e-4f);
	df_params_zero_grad(p);
	assert_int_equal(df_backward(g, df_sum(g, out), &err), 0);
	assert_int_equal(df_tensor_read_grad(m, &grad, &err), 0);
	assert_true(grad == 0.0f);
	df_graph_destroy(g);
	df_params_destroy(p);
}

/* ---- cross-entropy ----------------------------------------------------- */

static const int32_t ce_labels[8] = {3, 0, 9, 4, 6, 1, 2, 5};

static df_tensor *build_cross_entropy(df_graph *g, df_tensor *const *in, const void *arg)
{
	(void)arg;
	return df_cross_entropy(g, in[0], ce_labels);
}

static void naive_cross_entropy(const float *const *in, const struct gc_input *s, const void *arg, double *out,
                                int64_t numel)
{
	(void)arg;
	const int64_t k = s[0].shape[1];
	for (int64_t r = 0; r < numel; r++) {
		const float *row = in[0] + r * k;
		double maxv = -INFINITY, sum = 0.0;
		for (int64_t j = 0; j < k; j++)
			maxv = fmax(maxv, row[j]);
		for (int64_t j = 0; j < k; j++)
			sum += exp(row[j] - maxv);
		out[r] = maxv + log(sum) - row[ce_labels[r]];
	}
}

static const int32_t one_class_labels[3] = {0, 0, 0};

static df_tensor *build_cross_entropy_one_class(df_graph *g, df_tensor *const *in, const void *arg)
{
	(void)arg;
	return df_cross_entropy(g, in[0], one_class_labels);
}

static void test_cross_entropy(void **state)
{
	(void)state;
	const struct gc_case cases[] = {
		{"cross_entropy", build_cross_entropy, NULL, 1, {GC_IN_RANGE(-3.0f, 3.0f, 8, 10)},
		 .naive = naive_cross_entropy},
		{"cross_entropy batch 1", build_cross_entropy, NULL, 1, {GC_IN_RANGE(-3.0f, 3.0f, 1, 7)},
		 .naive = naive_cross_entropy},
		{"cross_entropy one class", build_cross_entropy_one_class, NULL, 1, {GC_IN(3, 1)}, .naive = NULL},
	};
	assert_int_equal(gc_check_table(ctx, cases, N_CASES(cases), 81), 0);

	/* Logits near 1000 stay finite and match the naive log-sum-exp. */
	const struct gc_case large = {"cross_entropy near 1000", build_cross_entropy, NULL, 1,
	                              {GC_IN_RANGE(997.0f, 1003.0f, 5, 10)}, .tol = 0, .naive = naive_cross_entropy};
	assert_int_equal(gc_check_forward(ctx, &large, 82), 0);
}

/* The gradient does not change when every logit moves by 1000 (there, a
 * float step is 6e-5, too coarse for finite differences). */
static void cross_entropy_grad(const float *logits, float *grad)
{
	df_error err;
	df_params *p = df_params_create(ctx);
	df_tensor *t = df_params_add(p, "logits", DF_SHAPE(4, 10), 0);
	assert_int_equal(df_params_finalize(p, &err), 0);
	assert_int_equal(df_tensor_write(t, logits, &err), 0);
	df_graph *g = df_graph_create(ctx, 0);
	df_params_zero_grad(p);
	assert_int_equal(df_backward(g, df_sum(g, df_cross_entropy(g, t, ce_labels)), &err), 0);
	assert_int_equal(df_tensor_read_grad(t, grad, &err), 0);
	df_graph_destroy(g);
	df_params_destroy(p);
}

static void test_cross_entropy_shift_invariant(void **state)
{
	(void)state;
	float logits[40], shifted[40], grad[40], grad_shifted[40];
	uint64_t rng = 3;
	gc_fill(logits, 40, -3.0f, 3.0f, &rng);
	for (int i = 0; i < 40; i++)
		shifted[i] = logits[i] + 1000.0f;
	cross_entropy_grad(logits, grad);
	cross_entropy_grad(shifted, grad_shifted);
	double row_sum = 0.0;
	for (int i = 0; i < 40; i++) {
		assert_true(fabsf(grad[i] - grad_shifted[i]) < 1e-3f);
		row_sum += grad[i];
	}
	assert_true(fabs(row_sum) < 1e-5); /* softmax minus one-hot sums to 0 per row */
}

/* ---- errors -------------------------------------------------------------- */

static void expect_failure(df_graph *g, df_tensor *out, const char *op_name)
{
	df_error err;
	assert_null(out);
	assert_int_equal(df_graph_status(g, &err), DF_EINVAL);
	if (!strstr(err.msg, op_name))
		fail_msg("error \"%s\" does not name %s", err.msg, op_name);
}

static void test_bad_arguments(void **state)
{
	(void)state;
	const int32_t labels[2] = {1, 4};
	df_graph *g = df_graph_create(ctx, 0);
	df_tensor *a = df_tensor_zeros(g, DF_SHAPE(2, 4));
	df_tensor *b = df_tensor_zeros(g, DF_SHAPE(2, 3));
	expect_failure(g, df_cross_entropy(g, a, labels), "cross_entropy");  /* label 4 of 4 classes */
	df_graph_reset(g);
	a = df_tensor_zeros(g, DF_SHAPE(2, 4));
	expect_failure(g, df_cross_entropy(g, a, NULL), "cross_entropy");
	df_graph_reset(g);
	a = df_tensor_zeros(g, DF_SHAPE(2, 4));
	b = df_tensor_zeros(g, DF_SHAPE(2, 3));
	expect_failure(g, df_normal_kl(g, a, a, b, a), "normal_kl");
	df_graph_reset(g);
	a = df_tensor_zeros(g, DF_SHAPE(2, 4));
	b = df_tensor_zeros(g, DF_SHAPE(4, 2));
	expect_failure(g, df_discretized_gaussian_loglik(g, a, b, a), "discretized_gaussian_loglik");
	df_graph_destroy(g);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_normal_kl),
		cmocka_unit_test(test_discretized_gaussian),
		cmocka_unit_test(test_discretized_gaussian_edges),
		cmocka_unit_test(test_cross_entropy),
		cmocka_unit_test(test_cross_entropy_shift_invariant),
		cmocka_unit_test(test_bad_arguments),
	};
	return run_on_one_and_three_threads(tests);
}
