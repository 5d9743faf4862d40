/* Spatial and pointwise-math ops through the public API: forwards against
 * naive loops on odd shapes, gradients against central differences
 * (tests/gradcheck.h), bad arguments reported on the graph, and a steady
 * arena across training steps. */
#include "config.h"
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include "diffuse/rng.h"
#include "ctx_fixture.h"
#include "gradcheck.h"

#define N_CASES(cases) ((int)(sizeof(cases) / sizeof *(cases)))

/* ---- groupnorm ------------------------------------------------------- */

struct gn_arg {
	int groups;
	int weight, bias; /* whether the affine inputs are passed */
};

static df_tensor *build_groupnorm(df_graph *g, df_tensor *const *in, const void *arg)
{
	const struct gn_arg *a = arg;
	return df_groupnorm(g, in[0], a->groups, a->weight ? in[1] : NULL, a->bias ? in[2] : NULL, 1e-5f);
}

static void naive_groupnorm(const float *const *in, const struct gc_input *s, const void *arg, double *out,
                            int64_t numel)
{
	const struct gn_arg *a = arg;
	int64_t n = s[0].shape[0], c = s[0].shape[1], sp = numel / (n * c), cg = c / a->groups;
	for (int64_t img = 0; img < n; img++) {
		for (int64_t gi = 0; gi < a->groups; gi++) {
			const int64_t base = (img * c + gi * cg) * sp, m = cg * sp;
			double mu = 0.0, var = 0.0;
			for (int64_t i = 0; i < m; i++)
				mu += in[0][base + i];
			mu /= (double)m;
			for (int64_t i = 0; i < m; i++)
				var += (in[0][base + i] - mu) * (in[0][base + i] - mu);
			var /= (double)m;
			for (int64_t i = 0; i < m; i++) {
				const int64_t ch = gi * cg + i / sp;
				double y = (in[0][base + i] - mu) / sqrt(var + 1e-5);
				if (a->weight)
					y *= in[1][ch];
				if (a->bias)
					y += in[2][ch];
				out[base + i] = y;
			}
		}
	}
}

static void test_groupnorm(void **state)
{
	(void)state;
	static const struct gn_arg two_per_group = {3, 1, 1}, one_group = {1, 1, 1};
	static const struct gn_arg per_channel = {5, 0, 0}, weight_only = {2, 1, 0};
	const struct gc_case cases[] = {
		{"groupnorm 2 channels per group", build_groupnorm, &two_per_group, 3,
		 {GC_IN_RANGE(-2.0f, 3.0f, 2, 6, 5), GC_IN_RANGE(0.5f, 1.5f, 6), GC_IN(6)}, .naive = naive_groupnorm},
		{"groupnorm one group, batch 1", build_groupnorm, &one_group, 3,
		 {GC_IN(1, 4, 3, 3), GC_IN_RANGE(0.5f, 1.5f, 4), GC_IN(4)}, .naive = naive_groupnorm},
		{"groupnorm a group per channel, no affine", build_groupnorm, &per_channel, 1,
		 {GC_IN(3, 5, 2, 3)}, .naive = naive_groupnorm},
		{"groupnorm 5-d, weight only", build_groupnorm, &weight_only, 2,
		 {GC_IN(2, 4, 1, 3, 2), GC_IN_RANGE(0.5f, 1.5f, 4)}, .naive = naive_groupnorm},
	};
	assert_int_equal(gc_check_table(ctx, cases, N_CASES(cases), 11), 0);
}

/* ---- conv2d ------------------------------------------------------------- */

struct conv_arg {
	int stride, pad, bias;
};

static df_tensor *build_conv(df_graph *g, df_tensor *const *in, const void *arg)
{
	const struct conv_arg *a = arg;
	return df_conv2d(g, in[0], in[1], a->bias ? in[2] : NULL, a->stride, a->pad);
}

static void naive_conv(const float *const *in, const struct gc_input *s, const void *arg, double *out,
                       int64_t numel)
{
	const struct conv_arg *a = arg;
	const int64_t n = s[0].shape[0], cin = s[0].shape[1], h = s[0].shape[2], w = s[0].shape[3];
	const int64_t cout = s[1].shape[0], kh = s[1].shape[2], kw = s[1].shape[3];
	const int64_t ho = (h + 2 * a->pad - kh) / a->stride + 1, wo = (w + 2 * a->pad - kw) / a->stride + 1;
	assert_int_equal(numel, n * cout * ho * wo);
	for (int64_t img = 0; img < n; img++)
		for (int64_t co = 0; co < cout; co++)
			for (int64_t oh = 0; oh < ho; oh++)
				for (int64_t ow = 0; ow < wo; ow++) {
					double acc = a->bias ? in[2][co] : 0.0;
					for (int64_t ci = 0; ci < cin; ci++)
						for (int64_t i = 0; i < kh; i++)
							for (int64_t j = 0; j < kw; j++) {
								const int64_t ih = oh * a->stride - a->pad + i;
								const int64_t iw = ow * a->stride - a->pad + j;
								if (ih >= 0 && ih < h && iw >= 0 && iw < w)
									acc += (double)in[0][((img * cin + ci) * h + ih) * w + iw] *
									       in[1][((co * cin + ci) * kh + i) * kw + j];
							}
					out[((img * cout + co) * ho + oh) * wo + ow] = acc;
				}
}

static void test_conv2d(void **state)
{
	(void)state;
	static const struct conv_arg s2p1 = {2, 1, 1}, s1p0 = {1, 0, 1}, same5 = {1, 2, 0}, s3p0 = {3, 0, 1};
	static const struct conv_arg strided_1x1 = {2, 0, 1}, wide_pad = {1, 3, 1}, same3 = {1, 1, 1};
	const struct gc_case cases[] = {
		{"conv2d 3x3 stride 2 pad 1, batch 1", build_conv, &s2p1, 3,
		 {GC_IN(1, 3, 7, 5), GC_IN_RANGE(-0.5f, 0.5f, 4, 3, 3, 3), GC_IN(4)}, .naive = naive_conv},
		{"conv2d 1x1 (direct GEMM)", build_conv, &s1p0, 3,
		 {GC_IN(2, 2, 6, 9), GC_IN(3, 2, 1, 1), GC_IN(3)}, .naive = naive_conv},
		{"conv2d 5x5 same, no bias", build_conv, &same5, 2,
		 {GC_IN(1, 2, 5, 6), GC_IN_RANGE(-0.5f, 0.5f, 2, 2, 5, 5)}, .naive = naive_conv},
		{"conv2d 2x3 kernel stride 3", build_conv, &s3p0, 3,
		 {GC_IN(2, 1, 8, 7), GC_IN(3, 1, 2, 3), GC_IN(3)}, .naive = naive_conv},
		{"conv2d strided 1x1", build_conv, &strided_1x1, 3,
		 {GC_IN(1, 3, 6, 6), GC_IN(2, 3, 1, 1), GC_IN(2)}, .naive = naive_conv},
		{"conv2d padding beyond the kernel", build_conv, &wide_pad, 3,
		 {GC_IN(1, 2, 4, 4), GC_IN(2, 2, 3, 3), GC_IN(2)}, .naive = naive_conv},
		{"conv2d batch of 4 (split over threads)", build_conv, &s2p1, 3,
		 {GC_IN(4, 2, 5, 4), GC_IN_RANGE(-0.5f, 0.5f, 3, 2, 3, 3), GC_IN(3)}, .naive = naive_conv},
		/* Large enough to run on several threads: split by channels, then
		 * by images. */
		{"conv2d one image on threads", build_conv, &same3, 3,
		 {GC_IN(1, 4, 12, 12), GC_IN_RANGE(-0.5f, 0.5f, 6, 4, 3, 3), GC_IN(6)}, .naive = naive_conv},
		{"conv2d four images on threads", build_conv, &same3, 3,
		 {GC_IN(4, 3, 10, 10), GC_IN_RANGE(-0.5f, 0.5f, 4, 3, 3, 3), GC_IN(4)}, .naive = naive_conv},
	};
	assert_int_equal(gc_check_table(ctx, cases, N_CASES(cases), 21), 0);
}

/* ---- upsample and average pool ------------------------------------------ */

static df_tensor *build_upsample(df_graph *g, df_tensor *const *in, const void *arg)
{
	(void)arg;
	return df_upsample_nearest2x(g, in[0]);
}

static void naive_upsample(const float *const *in, const struct gc_input *s, const void *arg, double *out,
                           int64_t numel)
{
	(void)arg, (void)numel;
	const int64_t planes = s[0].shape[0] * s[0].shape[1], h = s[0].shape[2], w = s[0].shape[3];
	for (int64_t p = 0; p < planes; p++)
		for (int64_t i = 0; i < 2 * h; i++)
			for (int64_t j = 0; j < 2 * w; j++)
				out[(p * 2 * h + i) * 2 * w + j] = in[0][(p * h + i / 2) * w + j / 2];
}

static df_tensor *build_avgpool(df_graph *g, df_tensor *const *in, const void *arg)
{
	return df_avgpool2d(g, in[0], *(const int *)arg);
}

static void naive_avgpool(const float *const *in, const struct gc_input *s, const void *arg, double *out,
                          int64_t numel)
{
	(void)numel;
	const int k = *(const int *)arg;
	const int64_t planes = s[0].shape[0] * s[0].shape[1], h = s[0].shape[2], w = s[0].shape[3];
	const int64_t ho = h / k, wo = w / k;
	for (int64_t p = 0; p < planes; p++)
		for (int64_t i = 0; i < ho; i++)
			for (int64_t j = 0; j < wo; j++) {
				double acc = 0.0;
				for (int a = 0; a < k; a++)
					for (int b = 0; b < k; b++)
						acc += in[0][(p * h + i * k + a) * w + j * k + b];
				out[(p * ho + i) * wo + j] = acc / (k * k);
			}
}

static void test_resampling(void **state)
{
	(void)state;
	static const int k1 = 1, k2 = 2, k3 = 3;
	const struct gc_case cases[] = {
		{"upsample_nearest2x", build_upsample, NULL, 1, {GC_IN(2, 3, 3, 5)}, .naive = naive_upsample},
		{"upsample_nearest2x 1x1", build_upsample, NULL, 1, {GC_IN(1, 1, 1, 1)}, .naive = naive_upsample},
		{"avgpool2d 2", build_avgpool, &k2, 1, {GC_IN(2, 3, 4, 6)}, .naive = naive_avgpool},
		{"avgpool2d 2 on odd sizes", build_avgpool, &k2, 1, {GC_IN(1, 2, 7, 5)}, .naive = naive_avgpool},
		{"avgpool2d 3", build_avgpool, &k3, 1, {GC_IN(1, 1, 9, 9)}, .naive = naive_avgpool},
		{"avgpool2d 1", build_avgpool, &k1, 1, {GC_IN(1, 2, 3, 4)}, .naive = naive_avgpool},
	};
	assert_int_equal(gc_check_table(ctx, cases, N_CASES(cases), 31), 0);
}

/* ---- pointwise math and softmax ---------------------------------------- */

typedef df_tensor *(*unary_op)(df_graph *g, df_tensor *x);
typedef double (*unary_ref)(double x);

struct unary_arg {
	unary_op op;
	unary_ref ref;
};

static df_tensor *build_unary(df_graph *g, df_tensor *const *in, const void *arg)
{
	return ((const struct unary_arg *)arg)->op(g, in[0]);
}

static void naive_unary(const float *const *in, const struct gc_input *s, const void *arg, double *out,
                        int64_t numel)
{
	(void)s;
	for (int64_t i = 0; i < numel; i++)
		out[i] = ((const struct unary_arg *)arg)->ref(in[0][i]);
}

static double softplus_ref(double x)
{
	return x > 0 ? x + log1p(exp(-x)) : log1p(exp(x));
}

static df_tensor *build_softmax(df_graph *g, df_tensor *const *in, const void *arg)
{
	(void)arg;
	return df_softmax(g, in[0]);
}

static void naive_softmax(const float *const *in, const struct gc_input *s, const void *arg, double *out,
                          int64_t numel)
{
	(void)arg;
	const int64_t d = s[0].shape[s[0].ndim - 1];
	for (int64_t r = 0; r < numel / d; r++) {
		const float *x = in[0] + r * d;
		double maxv = -INFINITY, sum = 0.0;
		for (int64_t i = 0; i < d; i++)
			maxv = fmax(maxv, x[i]);
		for (int64_t i = 0; i < d; i++)
			sum += exp(x[i] - maxv);
		for (int64_t i = 0; i < d; i++)
			out[r * d + i] = exp(x[i] - maxv) / sum;
	}
}

static void test_pointwise(void **state)
{
	(void)state;
	static const struct unary_arg exp_arg = {df_exp, exp}, log_arg = {df_log, log};
	static const struct unary_arg softplus_arg = {df_softplus, softplus_ref}, tanh_arg = {df_tanh, tanh};
	const struct gc_case cases[] = {
		{"exp", build_unary, &exp_arg, 1, {GC_IN_RANGE(-3.0f, 3.0f, 3, 7)}, .naive = naive_unary},
		{"log", build_unary, &log_arg, 1, {GC_IN_RANGE(0.2f, 5.0f, 37)}, .naive = naive_unary},
		{"softplus", build_unary, &softplus_arg, 1, {GC_IN_RANGE(-6.0f, 6.0f, 2, 3, 5)}, .naive = naive_unary},
		{"tanh", build_unary, &tanh_arg, 1, {GC_IN_RANGE(-3.0f, 3.0f, 4, 9)}, .naive = naive_unary},
		{"softmax", build_softmax, NULL, 1, {GC_IN_RANGE(-3.0f, 3.0f, 3, 7)}, .naive = naive_softmax},
		{"softmax one column", build_softmax, NULL, 1, {GC_IN(4, 1)}, .naive = naive_softmax},
		{"softmax vectors and a tail", build_softmax, NULL, 1, {GC_IN_RANGE(-4.0f, 4.0f, 2, 3, 37)},
		 .naive = naive_softmax},
		{"softmax near 1000", build_softmax, NULL, 1, {GC_IN_RANGE(996.0f, 1004.0f, 2, 20)},
		 .step = 5e-2, .naive = naive_softmax},
	};
	assert_int_equal(gc_check_table(ctx, cases, N_CASES(cases), 41), 0);
}

/* ---- dropout ------------------------------------------------------------ */

#define DROP_P 0.3f

static df_tensor *build_dropout(df_graph *g, df_tensor *const *in, const void *arg)
{
	(void)arg;
	return df_dropout(g, in[0], DROP_P, 42, 7, 3);
}

/* The mask is the SDK's uniform draw at each element's index. */
static void naive_dropout(const float *const *in, const struct gc_input *s, const void *arg, double *out,
                          int64_t numel)
{
	(void)s, (void)arg;
	for (int64_t i = 0; i < numel; i++)
		out[i] = df_rng_uniform(42, 7, 3, (uint64_t)i) < 1.0f - DROP_P ? in[0][i] / (1.0 - DROP_P) : 0.0;
}

static void test_dropout(void **state)
{
	(void)state;
	const struct gc_case cases[] = {
		{"dropout", build_dropout, NULL, 1, {GC_IN(3, 41)}, .naive = naive_dropout},
		{"dropout batch 1", build_dropout, NULL, 1, {GC_IN(1, 5)}, .naive = naive_dropout},
	};
	assert_int_equal(gc_check_table(ctx, cases, N_CASES(cases), 51), 0);
}

/* ---- errors -------------------------------------------------------------- */

/* Runs one op on fresh inputs of the given shapes and expects DF_EINVAL
 * with a message naming the op. */
typedef df_tensor *(*bad_op)(df_graph *g, df_tensor *a, df_tensor *b);

static void expect_einval(const char *op_name, bad_op op, int ndim_a, const int64_t *shape_a, int ndim_b,
                          const int64_t *shape_b)
{
	df_graph *g = df_graph_create(ctx, 0);
	assert_non_null(g);
	df_tensor *a = df_tensor_zeros(g, ndim_a, shape_a);
	df_tensor *b = ndim_b ? df_tensor_zeros(g, ndim_b, shape_b) : NULL;
	assert_null(op(g, a, b));
	df_error err;
	assert_int_equal(df_graph_status(g, &err), DF_EINVAL);
	if (!strstr(err.msg, op_name))
		fail_msg("error \"%s\" does not name %s", err.msg, op_name);
	df_graph_destroy(g);
}

static df_tensor *conv_stride1(df_graph *g, df_tensor *x, df_tensor *w)
{
	return df_conv2d(g, x, w, NULL, 1, 0);
}

static df_tensor *conv_stride0(df_graph *g, df_tensor *x, df_tensor *w)
{
	return df_conv2d(g, x, w, NULL, 0, 0);
}

static df_tensor *groupnorm_3(df_graph *g, df_tensor *x, df_tensor *w)
{
	return df_groupnorm(g, x, 3, w, NULL, 1e-5f);
}

static df_tensor *avgpool_0(df_graph *g, df_tensor *x, df_tensor *unused)
{
	(void)unused;
	return df_avgpool2d(g, x, 0);
}

static df_tensor *upsample(df_graph *g, df_tensor *x, df_tensor *unused)
{
	(void)unused;
	return df_upsample_nearest2x(g, x);
}

static df_tensor *dropout_too_likely(df_graph *g, df_tensor *x, df_tensor *unused)
{
	(void)unused;
	return df_dropout(g, x, 1.5f, 0, 0, 0);
}

static void test_bad_arguments(void **state)
{
	(void)state;
	/* channels of input and weight differ */
	expect_einval("conv2d", conv_stride1, DF_SHAPE(1, 3, 5, 5), DF_SHAPE(2, 4, 3, 3));
	/* the kernel is larger than the input */
	expect_einval("conv2d", conv_stride1, DF_SHAPE(1, 1, 2, 2), DF_SHAPE(1, 1, 3, 3));
	expect_einval("conv2d", conv_stride0, DF_SHAPE(1, 1, 4, 4), DF_SHAPE(1, 1, 3, 3));
	/* not a 4-d input */
	expect_einval("conv2d", conv_stride1, DF_SHAPE(3, 5, 5), DF_SHAPE(1, 3, 3, 3));
	/* 3 groups of 4 channels, weight of the wrong size */
	expect_einval("groupnorm", groupnorm_3, DF_SHAPE(2, 4, 3), DF_SHAPE(4));
	expect_einval("groupnorm", groupnorm_3, DF_SHAPE(2, 6, 3), DF_SHAPE(5));
	expect_einval("avgpool2d", avgpool_0, DF_SHAPE(1, 1, 4, 4), 0, NULL);
	expect_einval("upsample_nearest2x", upsample, DF_SHAPE(4, 4), 0, NULL);
	expect_einval("dropout", dropout_too_likely, DF_SHAPE(4), 0, NULL);
}

/* ---- conv2d gives the same floats on 1 and 2 threads ---------------------- */

/* Output and every gradient of sum(conv2d(x) * r), on a context of the
 * given thread count, into out (then dx, dw, db in order). */
static void conv_run(int threads, int64_t n, float *results)
{
	df_error err;
	df_ctx *c = NULL;
	assert_int_equal(df_ctx_create(&c, "cpu", threads, &err), 0);
	df_params *p = df_params_create(c);
	const int64_t xs[4] = {n, 16, 32, 32}, ws[4] = {16, 16, 3, 3}, bs[1] = {16};
	df_tensor *x = df_params_add(p, "x", 4, xs, 0), *w = df_params_add(p, "w", 4, ws, 0);
	df_tensor *b = df_params_add(p, "b", 1, bs, 0);
	assert_int_equal(df_params_finalize(p, &err), 0);
	const int64_t total = df_params_numel(p);
	float *values = malloc((size_t)total * sizeof(float));
	uint64_t rng = 9;
	gc_fill(values, total, -1.0f, 1.0f, &rng);
	assert_int_equal(df_params_write(p, values, &err), 0);
	df_graph *g = df_graph_create(c, 0);
	df_tensor *out = df_conv2d(g, x, w, b, 1, 1);
	float *r = malloc((size_t)out->numel * sizeof(float));
	gc_fill(r, out->numel, -1.0f, 1.0f, &rng);
	df_params_zero_grad(p);
	df_tensor *loss = df_sum(g, df_mul(g, out, df_tensor_from_host(g, r, out->ndim, out->shape)));
	assert_int_equal(df_backward(g, loss, &err), 0);
	assert_int_equal(df_tensor_read(out, results, &err), 0);
	results += out->numel;
	df_tensor *params[3] = {x, w, b};
	for (int i = 0; i < 3; i++) {
		assert_int_equal(df_tensor_read_grad(params[i], results, &err), 0);
		results += params[i]->numel;
	}
	free(values);
	free(r);
	df_graph_destroy(g);
	df_params_destroy(p);
	df_ctx_destroy(c);
}

/* Threads change which rows of each GEMM OpenBLAS computes together, and
 * its kernels for a block's edge rows may order a long sum differently, so
 * the gradients agree with one thread to rounding, not always bit for bit;
 * a wrong split (a missed or doubled block) is off by far more. */
static void test_conv2d_thread_count_invariant(void **state)
{
	(void)state;
	/* n = 1: each image split by channels; n = 4: by images on 2 threads,
	 * by channels on 3. */
	for (int64_t n = 1; n <= 4; n += 3) {
		const size_t count = (size_t)(2 * n * 16 * 32 * 32 + 16 * 16 * 9 + 16); /* out, dx, dw, db */
		float *one = malloc(count * sizeof(float)), *many = malloc(count * sizeof(float));
		double *want = malloc(count * sizeof(double));
		double scale = 0.0;
		conv_run(1, n, one);
		for (size_t i = 0; i < count; i++) {
			want[i] = one[i];
			scale = fabs(want[i]) > scale ? fabs(want[i]) : scale;
		}
		for (int threads = 2; threads <= 3; threads++) {
			conv_run(threads, n, many);
			assert_int_equal(gc_compare("conv2d on several threads", many, want, (int64_t)count, 1e-3,
			                            1e-3 * scale),
			                 0);
		}
		free(one);
		free(many);
		free(want);
	}
}

/* ---- a small conv block trains without growing its memory --------------- */

static void test_steps_reuse_memory(void **state)
{
	(void)state;
	df_error err;
	df_params *p = df_params_create(ctx);
	df_tensor *w1 = df_params_add(p, "conv1.weight", DF_SHAPE(8, 3, 3, 3), 0);
	df_tensor *b1 = df_params_add(p, "conv1.bias", DF_SHAPE(8), 0);
	df_tensor *gw = df_params_add(p, "norm.weight", DF_SHAPE(8), 0);
	df_tensor *gb = df_params_add(p, "norm.bias", DF_SHAPE(8), 0);
	df_tensor *w2 = df_params_add(p, "conv2.weight", DF_SHAPE(3, 8, 1, 1), 0);
	assert_int_equal(df_params_finalize(p, &err), 0);
	int64_t total = df_params_numel(p);
	float *values = malloc((size_t)total * sizeof(float));
	uint64_t rng = 5;
	gc_fill(values, total, -0.3f, 0.3f, &rng);
	assert_int_equal(df_params_write(p, values, &err), 0);

	float image[2 * 3 * 12 * 12];
	gc_fill(image, 2 * 3 * 12 * 12, -1.0f, 1.0f, &rng);
	df_graph *g = df_graph_create(ctx, 0);
	size_t bytes_after_first = 0;
	for (int step = 0; step < 4; step++) {
		df_graph_reset(g);
		df_params_zero_grad(p);
		df_tensor *x = df_tensor_from_host(g, image, DF_SHAPE(2, 3, 12, 12));
		df_tensor *h = df_conv2d(g, x, w1, b1, 2, 1);
		h = df_groupnorm(g, h, 4, gw, gb, 1e-5f);
		h = df_softplus(g, h);
		h = df_upsample_nearest2x(g, df_avgpool2d(g, h, 2));
		h = df_dropout(g, df_conv2d(g, h, w2, NULL, 1, 0), 0.1f, 1, 2, (uint64_t)step);
		df_tensor *loss = df_mean(g, df_tanh(g, h));
		assert_int_equal(df_backward(g, loss, &err), 0);
		assert_int_equal(df_graph_status(g, &err), 0);
		if (step == 0)
			bytes_after_first = df_graph_arena_bytes(g);
		else
			assert_int_equal(df_graph_arena_bytes(g), bytes_after_first);
	}
	float grad[8 * 3 * 3 * 3];
	assert_int_equal(df_tensor_read_grad(w1, grad, &err), 0);
	double norm = 0.0;
	for (int i = 0; i < 8 * 3 * 3 * 3; i++)
		norm += (double)grad[i] * grad[i];
	assert_true(norm > 0.0 && isfinite(norm));
	free(values);
	df_graph_destroy(g);
	df_params_destroy(p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_groupnorm),
		cmocka_unit_test(test_conv2d),
		cmocka_unit_test(test_conv2d_thread_count_invariant),
		cmocka_unit_test(test_resampling),
		cmocka_unit_test(test_pointwise),
		cmocka_unit_test(test_dropout),
		cmocka_unit_test(test_bad_arguments),
		cmocka_unit_test(test_steps_reuse_memory),
	};
	return run_on_one_and_three_threads(tests);
}
