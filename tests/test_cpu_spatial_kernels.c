/* The CPU spatial, pointwise-math and loss kernels on raw arrays: forwards
 * against naive double-precision loops on odd shapes, backwards against
 * central finite differences of a random projection of the output. The
 * convolution is built with a tiny im2col budget so every case runs
 * through many row tiles. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <cblas.h>

#include "diffuse/rng.h"
#include "backends/cpu/spatial_kernels.h"

/* The kernels read only the thread count from their backend. */
static const df_backend be_ = {.name = "cpu", .threads = 2};
static const df_backend *const be = &be_;

/* conv.c sets OpenBLAS to one thread through the backend (cpu.c); the test
 * links the kernels alone. */
void dfi_cpu_blas_single_thread(void)
{
	openblas_set_num_threads(1);
}

/* ---- helpers ---------------------------------------------------------- */

static uint64_t lcg_state = 12345;

static float rand_uniform(float lo, float hi)
{
	lcg_state = lcg_state * 6364136223846793005ull + 1442695040888963407ull;
	return lo + (hi - lo) * (float)((lcg_state >> 40) * 0x1p-24);
}

static float *rand_array(int64_t n, float lo, float hi)
{
	float *a = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
	assert_non_null(a);
	for (int64_t i = 0; i < n; i++)
		a[i] = rand_uniform(lo, hi);
	return a;
}

static float *zero_array(int64_t n)
{
	float *a = calloc((size_t)(n > 0 ? n : 1), sizeof(float));
	assert_non_null(a);
	return a;
}

static int close_enough(double got, double want, double atol, double rtol)
{
	return fabs(got - want) <= atol + rtol * fabs(want);
}

static void expect_close(const char *what, const float *got, const double *want, int64_t n,
			 double atol, double rtol)
{
	for (int64_t i = 0; i < n; i++) {
		if (!close_enough(got[i], want[i], atol, rtol))
			fail_msg("%s[%lld]: got %.8g, want %.8g (atol %g, rtol %g)", what,
				 (long long)i, got[i], want[i], atol, rtol);
	}
}

/* A kernel under test: forward writes `out` from the inputs it holds. */
struct fd_case {
	void (*forward)(void *ctx, float *out);
	void *ctx;
	int64_t out_n;
};

/* sum(r * out) in double, so the only float noise is the output's own. */
static double projected(const struct fd_case *c, const float *r, float *scratch_out)
{
	c->forward(c->ctx, scratch_out);
	double l = 0.0;
	for (int64_t i = 0; i < c->out_n; i++)
		l += (double)r[i] * scratch_out[i];
	return l;
}

/* Checks analytic[i] = d sum(r * out) / d param[i] by central differences. */
static void check_gradient(const char *what, const struct fd_case *c, float *param,
			   const float *analytic, int64_t n, const float *r, double h,
			   double atol, double rtol)
{
	float *out = zero_array(c->out_n);
	for (int64_t i = 0; i < n; i++) {
		const float saved = param[i];
		param[i] = saved + (float)h;
		const double hp = (double)param[i] - saved;
		const double lp = projected(c, r, out);
		param[i] = saved - (float)h;
		const double hm = saved - (double)param[i];
		const double lm = projected(c, r, out);
		param[i] = saved;
		const double numeric = (lp - lm) / (hp + hm);
		if (!close_enough(analytic[i], numeric, atol, rtol))
			fail_msg("d/d%s[%lld]: analytic %.8g, finite difference %.8g", what,
				 (long long)i, analytic[i], numeric);
	}
	free(out);
}

/* ---- group norm ----------------------------------------------------- */

struct gn_ctx {
	float *x, *w, *b, *mean, *rstd;
	int64_t n, c, s, groups;
	float eps;
};

static void gn_forward(void *p, float *out)
{
	struct gn_ctx *g = p;
	dfi_cpu_groupnorm_forward(be, out, g->mean, g->rstd, g->x, g->w, g->b, g->n, g->c, g->s,
			      g->groups, g->eps);
}

static void groupnorm_case(int64_t n, int64_t c, int64_t s, int64_t groups, int affine)
{
	const int64_t total = n * c * s, cg = c / groups;
	struct gn_ctx g = {
		.x = rand_array(total, -2.0f, 3.0f),
		.w = affine ? rand_array(c, 0.5f, 1.5f) : NULL,
		.b = affine ? rand_array(c, -0.5f, 0.5f) : NULL,
		.mean = zero_array(n * groups),
		.rstd = zero_array(n * groups),
		.n = n, .c = c, .s = s, .groups = groups, .eps = 1e-5f,
	};
	float *out = zero_array(total);
	double *want = malloc((size_t)total * sizeof(double));
	gn_forward(&g, out);

	for (int64_t img = 0; img < n; img++) {
		for (int64_t gi = 0; gi < groups; gi++) {
			const float *xg = g.x + (img * c + gi * cg) * s;
			double mu = 0, var = 0;
			for (int64_t i = 0; i < cg * s; i++)
				mu += xg[i];
			mu /= (double)(cg * s);
			for (int64_t i = 0; i < cg * s; i++)
				var += (xg[i] - mu) * (xg[i] - mu);
			var /= (double)(cg * s);
			for (int64_t i = 0; i < cg * s; i++) {
				const int64_t ch = gi * cg + i / s;
				double y = (xg[i] - mu) / sqrt(var + 1e-5);
				if (affine)
					y = y * g.w[ch] + g.b[ch];
				want[(img * c + gi * cg) * s + i] = y;
			}
		}
	}
	expect_close("groupnorm", out, want, total, 1e-5, 1e-5);

	float *r = rand_array(total, -1.0f, 1.0f);
	float *dx = zero_array(total), *dw = zero_array(c), *db = zero_array(c);
	dfi_cpu_groupnorm_backward(be, dx, affine ? dw : NULL, affine ? db : NULL, r, g.x, g.mean,
			       g.rstd, g.w, n, c, s, groups);
	const struct fd_case fc = { gn_forward, &g, total };
	check_gradient("x", &fc, g.x, dx, total, r, 1e-2, 2e-3, 2e-2);
	if (affine) {
		check_gradient("w", &fc, g.w, dw, c, r, 1e-2, 2e-3, 2e-2);
		check_gradient("b", &fc, g.b, db, c, r, 1e-2, 2e-3, 2e-2);
	}
	free(g.x); free(g.w); free(g.b); free(g.mean); free(g.rstd);
	free(out); free(want); free(r); free(dx); free(dw); free(db);
}

static void test_groupnorm(void **state)
{
	(void)state;
	groupnorm_case(2, 6, 5, 3, 1);  /* 2 channels per group, odd spatial */
	groupnorm_case(1, 4, 7, 1, 1);  /* one group: LayerNorm over (C, S) */
	groupnorm_case(3, 5, 3, 5, 0);  /* one channel per group, no affine */
	groupnorm_case(1, 3, 1, 3, 1);  /* a single element per group: xhat = 0 */
}

/* A small spread far from zero (values 100 +- 0.01, many blocks of the
 * vector sums): the statistics must not cancel. */
static void test_groupnorm_offset(void **state)
{
	(void)state;
	const int64_t c = 2, sp = 3001, total = c * sp;
	float *x = rand_array(total, 99.99f, 100.01f), *out = zero_array(total);
	float mean[1], rstd[1];
	double *want = malloc((size_t)total * sizeof(double));
	dfi_cpu_groupnorm_forward(be, out, mean, rstd, x, NULL, NULL, 1, c, sp, 1, 1e-5f);
	double mu = 0, var = 0;
	for (int64_t i = 0; i < total; i++)
		mu += x[i];
	mu /= (double)total;
	for (int64_t i = 0; i < total; i++)
		var += (x[i] - mu) * (x[i] - mu);
	var /= (double)total;
	for (int64_t i = 0; i < total; i++)
		want[i] = (x[i] - mu) / sqrt(var + 1e-5);
	expect_close("groupnorm far from zero", out, want, total, 2e-3, 0.0);
	free(x); free(out); free(want);
}

/* ---- conv2d ------------------------------------------------------------ */

static void conv_output_size(struct df_conv2d_shape *s)
{
	s->ho = (s->h + 2 * s->pad - s->kh) / s->stride + 1;
	s->wo = (s->w + 2 * s->pad - s->kw) / s->stride + 1;
}

struct conv_ctx {
	float *x, *w, *b, *scratch;
	struct df_conv2d_shape s;
};

static void conv_forward(void *p, float *out)
{
	struct conv_ctx *c = p;
	dfi_cpu_conv2d_forward(be, &c->s, out, c->x, c->w, c->b, c->scratch);
}

static void conv_case(int64_t n, int64_t cin, int64_t h, int64_t w, int64_t cout, int64_t kh,
		      int64_t kw, int64_t stride, int64_t pad, int bias)
{
	struct conv_ctx c = { .s = { .n = n, .cin = cin, .h = h, .w = w, .cout = cout,
				     .kh = kh, .kw = kw, .stride = stride, .pad = pad } };
	conv_output_size(&c.s);
	const struct df_conv2d_shape *s = &c.s;
	const int64_t xn = n * cin * h * w, wn = cout * cin * kh * kw;
	const int64_t on = n * cout * s->ho * s->wo;
	c.x = rand_array(xn, -1.0f, 1.0f);
	c.w = rand_array(wn, -0.5f, 0.5f);
	c.b = bias ? rand_array(cout, -0.5f, 0.5f) : NULL;
	c.scratch = zero_array((int64_t)(dfi_cpu_conv2d_workspace(be, s) / sizeof(float)));
	float *out = zero_array(on);
	double *want = malloc((size_t)on * sizeof(double));
	conv_forward(&c, out);

	for (int64_t img = 0; img < n; img++)
		for (int64_t co = 0; co < cout; co++)
			for (int64_t oh = 0; oh < s->ho; oh++)
				for (int64_t ow = 0; ow < s->wo; ow++) {
					double acc = bias ? c.b[co] : 0.0;
					for (int64_t ci = 0; ci < cin; ci++)
						for (int64_t i = 0; i < kh; i++)
							for (int64_t j = 0; j < kw; j++) {
								const int64_t ih = oh * stride - pad + i;
								const int64_t iw = ow * stride - pad + j;
								if (ih < 0 || ih >= h || iw < 0 || iw >= w)
									continue;
								acc += (double)c.x[((img * cin + ci) * h + ih) * w + iw]
								       * c.w[((co * cin + ci) * kh + i) * kw + j];
							}
					want[((img * cout + co) * s->ho + oh) * s->wo + ow] = acc;
				}
	expect_close("conv2d", out, want, on, 1e-5, 1e-5);

	float *r = rand_array(on, -1.0f, 1.0f);
	float *dx = zero_array(xn), *dw = zero_array(wn), *db = zero_array(cout);
	dfi_cpu_conv2d_backward(be, s, dx, dw, bias ? db : NULL, r, c.x, c.w, c.scratch);
	const struct fd_case fc = { conv_forward, &c, on };
	check_gradient("x", &fc, c.x, dx, xn, r, 1e-2, 1e-3, 1e-2);
	check_gradient("w", &fc, c.w, dw, wn, r, 1e-2, 1e-3, 1e-2);
	if (bias)
		check_gradient("b", &fc, c.b, db, cout, r, 1e-2, 1e-3, 1e-2);
	free(c.x); free(c.w); free(c.b); free(c.scratch);
	free(out); free(want); free(r); free(dx); free(dw); free(db);
}

static void test_conv2d(void **state)
{
	(void)state;
	conv_case(1, 3, 7, 5, 4, 3, 3, 2, 1, 1);  /* stride 2 on odd sizes */
	conv_case(2, 2, 6, 9, 3, 1, 1, 1, 0, 1);  /* 1x1: the direct GEMM path */
	conv_case(1, 2, 5, 6, 2, 5, 5, 1, 2, 0);  /* 5x5 "same", no bias */
	conv_case(2, 1, 8, 7, 3, 2, 3, 3, 0, 1);  /* non-square kernel, stride 3 */
	conv_case(1, 2, 4, 4, 2, 3, 3, 1, 3, 1);  /* padding wider than the kernel reach */
	conv_case(1, 3, 6, 6, 2, 1, 1, 2, 0, 1);  /* strided 1x1: goes through im2col */
	conv_case(3, 2, 5, 4, 3, 3, 3, 1, 1, 1);  /* 3 images on 2 threads: one by one */
	conv_case(4, 2, 5, 4, 3, 3, 3, 1, 1, 0);  /* 4 images: the batch split over threads */
	conv_case(2, 1, 9, 7, 2, 3, 3, 1, 1, 1);  /* "same" rows in tiles of 3 output rows */
	conv_case(1, 1, 8, 3, 2, 5, 5, 1, 2, 1);  /* 5x5 "same" in tiles of 2 output rows */
}

/* A batch split over two threads and one thread give the same floats
 * here (the test's GEMM blocks coincide); the op tests allow rounding for
 * other splits. */
static void test_conv2d_thread_count_invariant(void **state)
{
	(void)state;
	static const df_backend one_thread = {.name = "cpu", .threads = 1};
	struct df_conv2d_shape s = { .n = 4, .cin = 3, .h = 9, .w = 7, .cout = 5, .kh = 3, .kw = 3,
				     .stride = 1, .pad = 1 };
	conv_output_size(&s);
	const int64_t xn = s.n * s.cin * s.h * s.w, wn = s.cout * s.cin * 9, on = s.n * s.cout * s.ho * s.wo;
	float *x = rand_array(xn, -1.0f, 1.0f), *w = rand_array(wn, -1.0f, 1.0f), *b = rand_array(s.cout, -1, 1);
	float *dout = rand_array(on, -1.0f, 1.0f);
	float *out[2], *dx[2], *dw[2], *db[2];
	const df_backend *backends[2] = { be, &one_thread };
	for (int i = 0; i < 2; i++) {
		float *ws = zero_array((int64_t)(dfi_cpu_conv2d_workspace(backends[i], &s) / sizeof(float)));
		out[i] = zero_array(on), dx[i] = zero_array(xn), dw[i] = zero_array(wn), db[i] = zero_array(s.cout);
		dfi_cpu_conv2d_forward(backends[i], &s, out[i], x, w, b, ws);
		dfi_cpu_conv2d_backward(backends[i], &s, dx[i], dw[i], db[i], dout, x, w, ws);
		free(ws);
	}
	assert_memory_equal(out[0], out[1], (size_t)on * sizeof(float));
	assert_memory_equal(dx[0], dx[1], (size_t)xn * sizeof(float));
	assert_memory_equal(dw[0], dw[1], (size_t)wn * sizeof(float));
	assert_memory_equal(db[0], db[1], (size_t)s.cout * sizeof(float));
	for (int i = 0; i < 2; i++) {
		free(out[i]); free(dx[i]); free(dw[i]); free(db[i]);
	}
	free(x); free(w); free(b); free(dout);
}

static void test_conv2d_workspace_is_bounded(void **state)
{
	(void)state;
	/* A 512x512, 128-channel 3x3 layer: the full im2col would be 1152 x
	 * 262144 floats; a tile is whole output rows within the budget, at
	 * least one, whatever the batch. */
	struct df_conv2d_shape s = { .n = 1, .cin = 128, .h = 512, .w = 512, .cout = 128,
				     .kh = 3, .kw = 3, .stride = 1, .pad = 1 };
	conv_output_size(&s);
	const int64_t row = 128 * 9 * 512;
	int64_t want = DFI_CPU_CONV2D_TILE_FLOATS / row * row;
	if (want < row)
		want = row;
	/* A tile for each of the backend's two threads. */
	assert_int_equal(dfi_cpu_conv2d_workspace(be, &s), 2 * (size_t)want * sizeof(float));
	/* 1x1 convolutions need none. */
	struct df_conv2d_shape pointwise = { .n = 2, .cin = 64, .h = 9, .w = 9, .cout = 8,
					     .kh = 1, .kw = 1, .stride = 1, .pad = 0 };
	conv_output_size(&pointwise);
	assert_int_equal(dfi_cpu_conv2d_workspace(be, &pointwise), 0);
}

/* ---- upsample and average pool --------------------------------------- */

struct resample_ctx {
	float *x;
	int64_t planes, h, w, k;
};

static void upsample_forward(void *p, float *out)
{
	struct resample_ctx *c = p;
	dfi_cpu_upsample_nearest2x_forward(be, out, c->x, c->planes, c->h, c->w);
}

static void avgpool_forward(void *p, float *out)
{
	struct resample_ctx *c = p;
	dfi_cpu_avgpool2d_forward(be, out, c->x, c->planes, c->h, c->w, c->k);
}

static void test_upsample(void **state)
{
	(void)state;
	struct resample_ctx c = { .planes = 3, .h = 3, .w = 5 };
	const int64_t xn = c.planes * c.h * c.w, on = xn * 4;
	c.x = rand_array(xn, -1.0f, 1.0f);
	float *out = zero_array(on);
	double *want = malloc((size_t)on * sizeof(double));
	upsample_forward(&c, out);
	for (int64_t p = 0; p < c.planes; p++)
		for (int64_t i = 0; i < 2 * c.h; i++)
			for (int64_t j = 0; j < 2 * c.w; j++)
				want[(p * 2 * c.h + i) * 2 * c.w + j] = c.x[(p * c.h + i / 2) * c.w + j / 2];
	expect_close("upsample", out, want, on, 0.0, 0.0);

	float *r = rand_array(on, -1.0f, 1.0f), *dx = zero_array(xn);
	dfi_cpu_upsample_nearest2x_backward(be, dx, r, c.planes, c.h, c.w);
	const struct fd_case fc = { upsample_forward, &c, on };
	check_gradient("x", &fc, c.x, dx, xn, r, 1e-2, 1e-4, 1e-3);
	free(c.x); free(out); free(want); free(r); free(dx);
}

static void avgpool_case(int64_t planes, int64_t h, int64_t w, int64_t k)
{
	struct resample_ctx c = { .planes = planes, .h = h, .w = w, .k = k };
	const int64_t xn = planes * h * w, ho = h / k, wo = w / k, on = planes * ho * wo;
	c.x = rand_array(xn, -1.0f, 1.0f);
	float *out = zero_array(on);
	double *want = malloc((size_t)on * sizeof(double));
	avgpool_forward(&c, out);
	for (int64_t p = 0; p < planes; p++)
		for (int64_t i = 0; i < ho; i++)
			for (int64_t j = 0; j < wo; j++) {
				double acc = 0;
				for (int64_t a = 0; a < k; a++)
					for (int64_t b = 0; b < k; b++)
						acc += c.x[(p * h + i * k + a) * w + j * k + b];
				want[(p * ho + i) * wo + j] = acc / (double)(k * k);
			}
	expect_close("avgpool", out, want, on, 1e-6, 1e-6);

	float *r = rand_array(on, -1.0f, 1.0f), *dx = zero_array(xn);
	dfi_cpu_avgpool2d_backward(be, dx, r, planes, h, w, k);
	const struct fd_case fc = { avgpool_forward, &c, on };
	check_gradient("x", &fc, c.x, dx, xn, r, 1e-2, 1e-4, 1e-3);
	free(c.x); free(out); free(want); free(r); free(dx);
}

static void test_avgpool(void **state)
{
	(void)state;
	avgpool_case(2, 4, 6, 2);
	avgpool_case(1, 7, 5, 2);  /* odd sizes: the last row and column are dropped */
	avgpool_case(3, 9, 9, 3);
	avgpool_case(1, 3, 4, 1);
}

/* ---- pointwise math and softmax -------------------------------------- */

enum pointwise_kind { PW_EXP, PW_LOG, PW_SOFTPLUS, PW_TANH };

struct pw_ctx {
	float *x;
	int64_t n;
	enum pointwise_kind kind;
};

static void pw_forward(void *p, float *out)
{
	struct pw_ctx *c = p;
	switch (c->kind) {
	case PW_EXP: dfi_cpu_unary_forward(be, DF_UNARY_EXP, out, c->x, c->n); break;
	case PW_LOG: dfi_cpu_unary_forward(be, DF_UNARY_LOG, out, c->x, c->n); break;
	case PW_SOFTPLUS: dfi_cpu_unary_forward(be, DF_UNARY_SOFTPLUS, out, c->x, c->n); break;
	case PW_TANH: dfi_cpu_unary_forward(be, DF_UNARY_TANH, out, c->x, c->n); break;
	}
}

static double pw_reference(enum pointwise_kind kind, double x)
{
	switch (kind) {
	case PW_EXP: return exp(x);
	case PW_LOG: return log(x);
	case PW_SOFTPLUS: return x > 0 ? x + log1p(exp(-x)) : log1p(exp(x));
	case PW_TANH: return tanh(x);
	}
	return NAN;
}

static void pointwise_case(enum pointwise_kind kind, float lo, float hi)
{
	struct pw_ctx c = { .n = 37, .kind = kind };
	c.x = rand_array(c.n, lo, hi);
	float *out = zero_array(c.n), *r = rand_array(c.n, -1.0f, 1.0f), *dx = zero_array(c.n);
	double *want = malloc((size_t)c.n * sizeof(double));
	pw_forward(&c, out);
	for (int64_t i = 0; i < c.n; i++)
		want[i] = pw_reference(kind, c.x[i]);
	expect_close("pointwise", out, want, c.n, 1e-6, 1e-6);
	switch (kind) {
	case PW_EXP: dfi_cpu_unary_backward(be, DF_UNARY_EXP, dx, r, out, c.n); break;
	case PW_LOG: dfi_cpu_unary_backward(be, DF_UNARY_LOG, dx, r, c.x, c.n); break;
	case PW_SOFTPLUS: dfi_cpu_unary_backward(be, DF_UNARY_SOFTPLUS, dx, r, c.x, c.n); break;
	case PW_TANH: dfi_cpu_unary_backward(be, DF_UNARY_TANH, dx, r, out, c.n); break;
	}
	const struct fd_case fc = { pw_forward, &c, c.n };
	check_gradient("x", &fc, c.x, dx, c.n, r, 1e-3, 1e-3, 1e-2);
	free(c.x); free(out); free(r); free(dx); free(want);
}

static void test_pointwise(void **state)
{
	(void)state;
	pointwise_case(PW_EXP, -3.0f, 3.0f);
	pointwise_case(PW_LOG, 0.2f, 5.0f);
	pointwise_case(PW_SOFTPLUS, -6.0f, 6.0f);
	pointwise_case(PW_TANH, -3.0f, 3.0f);
}

static void test_softplus_extremes(void **state)
{
	(void)state;
	const float x[4] = { 100.0f, -100.0f, 30.0f, 0.0f };
	float out[4], dx[4] = { 0 };
	const float ones[4] = { 1, 1, 1, 1 };
	dfi_cpu_unary_forward(be, DF_UNARY_SOFTPLUS, out, x, 4);
	assert_true(out[0] == 100.0f);                          /* no overflow */
	assert_true(out[1] > 0.0f && fabsf(out[1] - expf(-100.0f)) < 1e-45f + 1e-6f * expf(-100.0f));
	assert_true(out[2] == 30.0f);
	assert_true(fabsf(out[3] - logf(2.0f)) < 1e-7f);
	dfi_cpu_unary_backward(be, DF_UNARY_SOFTPLUS, dx, ones, x, 4);
	assert_true(dx[0] == 1.0f && dx[1] >= 0.0f && dx[1] < 1e-40f && dx[3] == 0.5f);
}

/* log(sum(exp(v))) of one row, in double. */
static double log_sum_exp_ref(const float *v, int64_t d)
{
	double maxv = -INFINITY, sum = 0;
	for (int64_t i = 0; i < d; i++)
		maxv = fmax(maxv, v[i]);
	for (int64_t i = 0; i < d; i++)
		sum += exp(v[i] - maxv);
	return maxv + log(sum);
}

struct softmax_ctx {
	float *x;
	int64_t rows, d;
};

static void softmax_forward(void *p, float *out)
{
	struct softmax_ctx *c = p;
	dfi_cpu_softmax_forward(be, out, c->x, c->rows, c->d);
}

static void softmax_case(int64_t rows, int64_t d, float offset)
{
	struct softmax_ctx c = { .rows = rows, .d = d };
	const int64_t n = rows * d;
	c.x = rand_array(n, offset - 4.0f, offset + 4.0f);
	float *out = zero_array(n), *r = rand_array(n, -1.0f, 1.0f), *dx = zero_array(n);
	double *want = malloc((size_t)n * sizeof(double));
	softmax_forward(&c, out);
	for (int64_t row = 0; row < rows; row++) {
		const double lse = log_sum_exp_ref(c.x + row * d, d);
		for (int64_t i = 0; i < d; i++)
			want[row * d + i] = exp(c.x[row * d + i] - lse);
	}
	expect_close("softmax", out, want, n, 1e-7, 1e-5);
	dfi_cpu_softmax_backward(be, dx, r, out, rows, d);
	const struct fd_case fc = { softmax_forward, &c, n };
	/* Inputs near 1000 carry 6e-5 of float spacing: a wider step there. */
	check_gradient("x", &fc, c.x, dx, n, r, offset > 100.0f ? 1e-1 : 1e-2, 1e-3, 2e-2);
	free(c.x); free(out); free(r); free(dx); free(want);
}

static void test_softmax(void **state)
{
	(void)state;
	softmax_case(3, 7, 0.0f);
	softmax_case(1, 1, 0.0f);      /* a single column: always 1, zero gradient */
	softmax_case(2, 33, 1000.0f);  /* would overflow without the max shift */
	softmax_case(2, 16, -3.0f);    /* exactly one vector */
	softmax_case(5, 50, 0.0f);     /* vectors and a tail */
}

static void test_softmax_propagates_nan(void **state)
{
	(void)state;
	float x[20], out[20];
	for (int i = 0; i < 20; i++)
		x[i] = (float)i * 0.1f;
	x[17] = NAN;
	dfi_cpu_softmax_forward(be, out, x, 1, 20);
	for (int i = 0; i < 20; i++)
		assert_true(isnan(out[i]));
	x[17] = -INFINITY;  /* a masked entry: probability zero, the rest finite */
	dfi_cpu_softmax_forward(be, out, x, 1, 20);
	assert_true(out[17] == 0.0f);
	double total = 0;
	for (int i = 0; i < 20; i++)
		total += out[i];
	assert_true(fabs(total - 1.0) < 1e-6);
}

/* ---- dropout ------------------------------------------------------------ */

static void test_dropout(void **state)
{
	(void)state;
	const int64_t n = 10007;
	const float p = 0.3f;
	float *x = rand_array(n, 0.5f, 1.5f), *out = zero_array(n), *again = zero_array(n);
	float *dx = zero_array(n), *ones = zero_array(n);
	for (int64_t i = 0; i < n; i++)
		ones[i] = 1.0f;
	dfi_cpu_dropout_forward(be, out, x, n, p, 42, 7, 3);
	int64_t kept = 0;
	for (int64_t i = 0; i < n; i++) {
		if (out[i] != 0.0f) {
			kept++;
			assert_true(fabsf(out[i] - x[i] / (1.0f - p)) <= 1e-6f * fabsf(out[i]));
		}
	}
	/* Binomial(n, 0.7): the standard deviation is 46, allow 5 of them. */
	assert_true(llabs(kept - (int64_t)(0.7 * n)) < 230);

	/* The same key gives the same mask; another step, another mask. */
	dfi_cpu_dropout_forward(be, again, x, n, p, 42, 7, 3);
	assert_memory_equal(out, again, (size_t)n * sizeof(float));
	dfi_cpu_dropout_forward(be, again, x, n, p, 42, 7, 4);
	int64_t differ = 0;
	for (int64_t i = 0; i < n; i++)
		differ += (out[i] != 0.0f) != (again[i] != 0.0f);
	assert_true(differ > n / 10);

	/* The backward applies the forward's mask and scale to the gradient. */
	dfi_cpu_dropout_backward(be, dx, ones, n, p, 42, 7, 3);
	for (int64_t i = 0; i < n; i++)
		assert_true(fabsf(dx[i] * x[i] - out[i]) <= 1e-6f * fabsf(out[i]));

	/* The mask is the SDK's Bernoulli draw at the same key and positions. */
	uint8_t *mask = malloc((size_t)n);
	assert_non_null(mask);
	df_rng_fill_bernoulli(mask, (size_t)n, 1.0f - p, 42, 7, 3, 0);
	for (int64_t i = 0; i < n; i++)
		if ((out[i] != 0.0f) != (mask[i] != 0))
			fail_msg("dropout mask differs from df_rng_fill_bernoulli at %lld", (long long)i);
	free(mask);

	/* p = 0 is the identity, p = 1 drops everything. */
	dfi_cpu_dropout_forward(be, again, x, n, 0.0f, 1, 2, 3);
	assert_memory_equal(x, again, (size_t)n * sizeof(float));
	dfi_cpu_dropout_forward(be, again, x, n, 1.0f, 1, 2, 3);
	for (int64_t i = 0; i < n; i++)
		assert_true(again[i] == 0.0f);
	free(x); free(out); free(again); free(dx); free(ones);
}

/* ---- losses -------------------------------------------------------------- */

struct kl_ctx {
	float *m1, *lv1, *m2, *lv2;
	int64_t n;
};

static void kl_forward(void *p, float *out)
{
	struct kl_ctx *c = p;
	dfi_cpu_normal_kl_forward(be, out, c->m1, c->lv1, c->m2, c->lv2, c->n);
}

static void test_normal_kl(void **state)
{
	(void)state;
	struct kl_ctx c = { .n = 23 };
	c.m1 = rand_array(c.n, -1.0f, 1.0f);
	c.lv1 = rand_array(c.n, -3.0f, 1.0f);
	c.m2 = rand_array(c.n, -1.0f, 1.0f);
	c.lv2 = rand_array(c.n, -3.0f, 1.0f);
	float *out = zero_array(c.n), *r = rand_array(c.n, -1.0f, 1.0f);
	double *want = malloc((size_t)c.n * sizeof(double));
	kl_forward(&c, out);
	for (int64_t i = 0; i < c.n; i++) {
		const double dm = (double)c.m1[i] - c.m2[i];
		want[i] = 0.5 * (-1.0 + c.lv2[i] - c.lv1[i] + exp((double)c.lv1[i] - c.lv2[i])
				 + dm * dm * exp(-(double)c.lv2[i]));
		assert_true(out[i] >= -1e-6f);  /* a KL is never negative */
	}
	expect_close("normal_kl", out, want, c.n, 1e-6, 1e-5);

	float *g[4];
	for (int k = 0; k < 4; k++)
		g[k] = zero_array(c.n);
	dfi_cpu_normal_kl_backward(be, g[0], g[1], g[2], g[3], r, c.m1, c.lv1, c.m2, c.lv2, c.n);
	const struct fd_case fc = { kl_forward, &c, c.n };
	check_gradient("mean1", &fc, c.m1, g[0], c.n, r, 1e-3, 1e-3, 1e-2);
	check_gradient("logvar1", &fc, c.lv1, g[1], c.n, r, 1e-3, 1e-3, 1e-2);
	check_gradient("mean2", &fc, c.m2, g[2], c.n, r, 1e-3, 1e-3, 1e-2);
	check_gradient("logvar2", &fc, c.lv2, g[3], c.n, r, 1e-3, 1e-3, 1e-2);

	/* Equal distributions: zero. */
	{
		float zero_out[1];
		const float m = 0.3f, lv = -1.2f;
		dfi_cpu_normal_kl_forward(be, zero_out, &m, &lv, &m, &lv, 1);
		assert_true(fabsf(zero_out[0]) < 1e-7f);
	}
	free(c.m1); free(c.lv1); free(c.m2); free(c.lv2); free(out); free(r); free(want);
	for (int k = 0; k < 4; k++)
		free(g[k]);
}

struct dgl_ctx {
	float *x, *mean, *log_scale;
	int64_t n;
};

static void dgl_forward(void *p, float *out)
{
	struct dgl_ctx *c = p;
	dfi_cpu_discretized_gaussian_loglik_forward(be, out, c->x, c->mean, c->log_scale, c->n);
}

static double approx_cdf_ref(double z)
{
	return 0.5 * (1.0 + tanh(sqrt(2.0 / M_PI) * (z + 0.044715 * z * z * z)));
}

static double dgl_reference(double x, double mean, double log_scale)
{
	const double inv = exp(-log_scale);
	const double cdf_plus = approx_cdf_ref(inv * (x - mean + 1.0 / 255.0));
	const double cdf_min = approx_cdf_ref(inv * (x - mean - 1.0 / 255.0));
	if (x < -0.999)
		return log(fmax(cdf_plus, 1e-12));
	if (x > 0.999)
		return log(fmax(1.0 - cdf_min, 1e-12));
	return log(fmax(cdf_plus - cdf_min, 1e-12));
}

static void test_discretized_gaussian(void **state)
{
	(void)state;
	struct dgl_ctx c = { .n = 40 };
	c.x = zero_array(c.n);
	c.mean = zero_array(c.n);
	c.log_scale = rand_array(c.n, -2.5f, -1.0f);
	/* Pixel values on the 255-step grid, both edges included, with means
	 * within about a standard deviation: further out, float32 differences
	 * of CDFs near 1 lose the digits a double reference keeps (the clamp
	 * is tested on its own below). */
	for (int64_t i = 0; i < c.n; i++) {
		const int level = i == 0 ? 0 : i == 1 ? 255 : (int)(rand_uniform(0.0f, 255.99f));
		c.x[i] = (float)level / 127.5f - 1.0f;
		c.mean[i] = c.x[i] + rand_uniform(-0.1f, 0.1f);
	}
	float *out = zero_array(c.n), *r = rand_array(c.n, -1.0f, 1.0f);
	double *want = malloc((size_t)c.n * sizeof(double));
	dgl_forward(&c, out);
	for (int64_t i = 0; i < c.n; i++)
		want[i] = dgl_reference(c.x[i], c.mean[i], c.log_scale[i]);
	expect_close("discretized_gaussian_loglik", out, want, c.n, 1e-4, 1e-4);

	float *dx = zero_array(c.n), *dm = zero_array(c.n), *ds = zero_array(c.n);
	dfi_cpu_discretized_gaussian_loglik_backward(be, dx, dm, ds, r, c.x, c.mean, c.log_scale, c.n);
	const struct fd_case fc = { dgl_forward, &c, c.n };
	check_gradient("mean", &fc, c.mean, dm, c.n, r, 1e-3, 2e-3, 2e-2);
	check_gradient("log_scale", &fc, c.log_scale, ds, c.n, r, 1e-3, 2e-3, 2e-2);
	for (int64_t i = 0; i < c.n; i++)
		assert_true(fabsf(dx[i] + dm[i]) <= 1e-6f * fabsf(dm[i]) + 1e-12f);
	free(c.x); free(c.mean); free(c.log_scale); free(out); free(r); free(want);
	free(dx); free(dm); free(ds);
}

/* The 256 bins tile the line (the edge bins reach to -inf and +inf), so the
 * probabilities of all pixel values sum to one. */
static void test_discretized_gaussian_normalised(void **state)
{
	(void)state;
	float x[256], mean[256], log_scale[256], lp[256];
	const float means[3] = { 0.0f, -0.95f, 0.4f }, scales[3] = { -1.0f, -4.0f, 0.5f };
	for (int t = 0; t < 3; t++) {
		for (int k = 0; k < 256; k++) {
			x[k] = (float)k / 127.5f - 1.0f;
			mean[k] = means[t];
			log_scale[k] = scales[t];
		}
		dfi_cpu_discretized_gaussian_loglik_forward(be, lp, x, mean, log_scale, 256);
		double total = 0;
		for (int k = 0; k < 256; k++)
			total += exp(lp[k]);
		if (fabs(total - 1.0) > 1e-4)
			fail_msg("case %d: probabilities sum to %.8f", t, total);
	}
	/* Far outside its bin the log-likelihood is clamped at log(1e-12). */
	const float far_x = 0.0f, far_mean = 0.9f, far_scale = -6.0f;
	float far_lp, d_mean = 0.0f;
	const float one = 1.0f;
	dfi_cpu_discretized_gaussian_loglik_forward(be, &far_lp, &far_x, &far_mean, &far_scale, 1);
	assert_true(fabsf(far_lp - logf(1e-12f)) < 1e-4f);
	dfi_cpu_discretized_gaussian_loglik_backward(be, NULL, &d_mean, NULL, &one, &far_x, &far_mean,
						 &far_scale, 1);
	assert_true(d_mean == 0.0f);
}

struct ce_ctx {
	float *logits;
	int32_t *labels;
	float *lse;
	int64_t rows, k;
};

static void ce_forward(void *p, float *out)
{
	struct ce_ctx *c = p;
	dfi_cpu_cross_entropy_forward(be, out, c->lse, c->logits, c->labels, c->rows, c->k);
}

static void cross_entropy_case(int64_t rows, int64_t k, float offset)
{
	struct ce_ctx c = { .rows = rows, .k = k };
	c.logits = rand_array(rows * k, offset - 3.0f, offset + 3.0f);
	c.labels = malloc((size_t)rows * sizeof(int32_t));
	c.lse = zero_array(rows);
	for (int64_t i = 0; i < rows; i++)
		c.labels[i] = (int32_t)((i * 7 + 3) % k);
	float *out = zero_array(rows), *r = rand_array(rows, -1.0f, 1.0f);
	float *dl = zero_array(rows * k);
	double *want = malloc((size_t)rows * sizeof(double));
	ce_forward(&c, out);
	for (int64_t i = 0; i < rows; i++)
		want[i] = log_sum_exp_ref(c.logits + i * k, k) - c.logits[i * k + c.labels[i]];
	/* Near 1000 a float holds the log-sum-exp to its spacing of 6e-5. */
	expect_close("cross_entropy", out, want, rows, offset > 100.0f ? 2e-4 : 1e-5, 1e-5);
	dfi_cpu_cross_entropy_backward(be, dl, r, c.logits, c.lse, c.labels, rows, k);
	const struct fd_case fc = { ce_forward, &c, rows };
	check_gradient("logits", &fc, c.logits, dl, rows * k, r,
		       offset > 100.0f ? 1e-1 : 1e-2, 1e-3, 2e-2);
	free(c.logits); free(c.labels); free(c.lse); free(out); free(r); free(dl); free(want);
}

static void test_cross_entropy(void **state)
{
	(void)state;
	cross_entropy_case(5, 10, 0.0f);
	cross_entropy_case(1, 1, 0.0f);     /* one class: loss and gradient zero */
	cross_entropy_case(3, 7, 1000.0f);  /* large logits stay finite */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_groupnorm),
		cmocka_unit_test(test_groupnorm_offset),
		cmocka_unit_test(test_conv2d),
		cmocka_unit_test(test_conv2d_workspace_is_bounded),
		cmocka_unit_test(test_conv2d_thread_count_invariant),
		cmocka_unit_test(test_upsample),
		cmocka_unit_test(test_avgpool),
		cmocka_unit_test(test_pointwise),
		cmocka_unit_test(test_softplus_extremes),
		cmocka_unit_test(test_softmax),
		cmocka_unit_test(test_softmax_propagates_nan),
		cmocka_unit_test(test_dropout),
		cmocka_unit_test(test_normal_kl),
		cmocka_unit_test(test_discretized_gaussian),
		cmocka_unit_test(test_discretized_gaussian_normalised),
		cmocka_unit_test(test_cross_entropy),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
