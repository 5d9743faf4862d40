/* Ops of the compute core: forward against naive loops on odd shapes, and
 * gradients against finite differences (tests/gradcheck.h). */
#include "config.h"
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include "gradcheck.h"

static df_ctx *ctx;

static int64_t numel_of(const struct gc_input *s)
{
	int64_t n = 1;
	for (int d = 0; d < s->ndim; d++)
		n *= s->shape[d];
	return n;
}

/* ---------------------------------------------------------------- */
/* linear and matmul */

static df_tensor *build_linear(df_graph *g, df_tensor *const *in, const void *arg)
{
	(void)arg;
	return df_linear(g, in[0], in[1], in[2]);
}

static df_tensor *build_linear_nobias(df_graph *g, df_tensor *const *in, const void *arg)
{
	(void)arg;
	return df_linear(g, in[0], in[1], NULL);
}

static void naive_linear(const float *const *in, const struct gc_input *s, const void *arg, double *out, int64_t n)
{
	(void)arg;
	int64_t k = s[0].shape[s[0].ndim - 1], o = s[1].shape[0], m = numel_of(&s[0]) / k;
	(void)n;
	for (int64_t r = 0; r < m; r++)
		for (int64_t c = 0; c < o; c++) {
			double acc = in[2] && s[2].ndim ? in[2][c] : 0.0;
			for (int64_t i = 0; i < k; i++)
				acc += (double)in[0][r * k + i] * in[1][c * k + i];
			out[r * o + c] = acc;
		}
}

struct mm_arg {
	int ta, tb;
};

static df_tensor *build_matmul(df_graph *g, df_tensor *const *in, const void *arg)
{
	const struct mm_arg *a = arg;
	return df_matmul(g, in[0], in[1], a->ta, a->tb);
}

static void naive_matmul(const float *const *in, const struct gc_input *s, const void *arg, double *out, int64_t n)
{
	const struct mm_arg *t = arg;
	int nd = s[0].ndim;
	int64_t ar = s[0].shape[nd - 2], ac = s[0].shape[nd - 1], br = s[1].shape[nd - 2], bc = s[1].shape[nd - 1];
	int64_t m = t->ta ? ac : ar, k = t->ta ? ar : ac, nn = t->tb ? br : bc;
	int64_t batch = n / (m * nn);
	for (int64_t b = 0; b < batch; b++)
		for (int64_t i = 0; i < m; i++)
			for (int64_t j = 0; j < nn; j++) {
				double acc = 0.0;
				for (int64_t q = 0; q < k; q++) {
					float x = t->ta ? in[0][b * ar * ac + q * ac + i] : in[0][b * ar * ac + i * ac + q];
					float y = t->tb ? in[1][b * br * bc + j * bc + q] : in[1][b * br * bc + q * bc + j];
					acc += (double)x * y;
				}
				out[b * m * nn + i * nn + j] = acc;
			}
}

static const struct mm_arg mm_nn = {0, 0}, mm_tn = {1, 0}, mm_nt = {0, 1}, mm_tt = {1, 1};

static void test_linear_matmul(void **state)
{
	(void)state;
	const struct gc_case cases[] = {
		{"linear bias (5,7)->3", build_linear, NULL, 3, {GC_IN(5, 7), GC_IN(3, 7), GC_IN(3)}, .naive = naive_linear},
		{"linear 3d batch 1", build_linear, NULL, 3, {GC_IN(1, 3, 17), GC_IN(33, 17), GC_IN(33)}, .naive = naive_linear},
		{"linear no bias", build_linear_nobias, NULL, 2, {GC_IN(2, 3, 9), GC_IN(4, 9)}, .naive = naive_linear},
		{"linear frozen weight", build_linear, NULL, 3, {GC_IN(4, 6), GC_IN_CONST(5, 6), GC_IN(5)}, .naive = naive_linear},
		{"matmul nn", build_matmul, &mm_nn, 2, {GC_IN(3, 5, 7), GC_IN(3, 7, 4)}, .naive = naive_matmul},
		{"matmul tn", build_matmul, &mm_tn, 2, {GC_IN(2, 7, 5), GC_IN(2, 7, 4)}, .naive = naive_matmul},
		{"matmul nt", build_matmul, &mm_nt, 2, {GC_IN(1, 5, 7), GC_IN(1, 4, 7)}, .naive = naive_matmul},
		{"matmul tt 4d", build_matmul, &mm_tt, 2, {GC_IN(2, 2, 7, 5), GC_IN(2, 2, 4, 7)}, .naive = naive_matmul},
		{"matmul 2d", build_matmul, &mm_nn, 2, {GC_IN(9, 3), GC_IN(3, 11)}, .naive = naive_matmul},
	};
	assert_int_equal(gc_check_table(ctx, cases, (int)(sizeof cases / sizeof *cases), 1), 0);
}

/* ---------------------------------------------------------------- */
/* elementwise */

static df_tensor *build_add(df_graph *g, df_tensor *const *in, const void *arg)
{
	(void)arg;
	return df_add(g, in[0], in[1]);
}

static df_tensor *build_sub(df_graph *g, df_tensor *const *in, const void *arg)
{
	(void)arg;
	return df_sub(g, in[0], in[1]);
}

static df_tensor *build_mul(df_graph *g, df_tensor *const *in, const void *arg)
{
	(void)arg;
	return df_mul(g, in[0], in[1]);
}

/* Broadcast reference: op 0 add, 1 sub, 2 mul. */
static void naive_binary(const float *const *in, const struct gc_input *s, const void *arg, double *out, int64_t n)
{
	int op = *(const int *)arg;
	int nd = s[0].ndim > s[1].ndim ? s[0].ndim : s[1].ndim;
	int64_t shape[DF_MAX_DIMS];
	for (int d = 0; d < nd; d++) {
		int ad = d - (nd - s[0].ndim), bd = d - (nd - s[1].ndim);
		int64_t an = ad >= 0 ? s[0].shape[ad] : 1, bn = bd >= 0 ? s[1].shape[bd] : 1;
		shape[d] = an > bn ? an : bn;
	}
	for (int64_t i = 0; i < n; i++) {
		int64_t rest = i, ai = 0, bi = 0, as = 1, bs = 1;
		for (int d = nd - 1; d >= 0; d--) {
			int64_t idx = rest % shape[d];
			rest /= shape[d];
			int ad = d - (nd - s[0].ndim), bd = d - (nd - s[1].ndim);
			int64_t an = ad >= 0 ? s[0].shape[ad] : 1, bn = bd >= 0 ? s[1].shape[bd] : 1;
			ai += (an == 1 ? 0 : idx) * as;
			bi += (bn == 1 ? 0 : idx) * bs;
			as *= an;
			bs *= bn;
		}
		double a = in[0][ai], b = in[1][bi];
		out[i] = op == 0 ? a + b : op == 1 ? a - b : a * b;
	}
}

static const int op_add = 0, op_sub = 1, op_mul = 2;

static df_tensor *build_scale(df_graph *g, df_tensor *const *in, const void *arg)
{
	(void)arg;
	return df_add_scalar(g, df_scale(g, in[0], -1.7f), 0.3f);
}

static void naive_scale(const float *const *in, const struct gc_input *s, const void *arg, double *out, int64_t n)
{
	(void)s, (void)arg;
	for (int64_t i = 0; i < n; i++)
		out[i] = -1.7f * in[0][i] + 0.3f;
}

static df_tensor *build_modulate(df_graph *g, df_tensor *const *in, const void *arg)
{
	(void)arg;
	return df_modulate(g, in[0], in[1], in[2]);
}

static void naive_modulate(const float *const *in, const struct gc_input *s, const void *arg, double *out, int64_t n)
{
	(void)arg, (void)n;
	int64_t N = s[0].shape[0], T = s[0].shape[1], D = s[0].shape[2];
	for (int64_t a = 0; a < N; a++)
		for (int64_t t = 0; t < T; t++)
			for (int64_t d = 0; d < D; d++)
				out[(a * T + t) * D + d] =
					(double)in[0][(a * T + t) * D + d] * (1.0 + in[2][a * D + d]) + in[1][a * D + d];
}

static df_tensor *build_gated(df_graph *g, df_tensor *const *in, const void *arg)
{
	(void)arg;
	return df_gated_residual(g, in[0], in[1], in[2]);
}

static void naive_gated(const float *const *in, const struct gc_input *s, const void *arg, double *out, int64_t n)
{
	(void)arg, (void)n;
	int64_t N = s[0].shape[0], T = s[0].shape[1], D = s[0].shape[2];
	for (int64_t a = 0; a < N; a++)
		for (int64_t t = 0; t < T; t++)
			for (int64_t d = 0; d < D; d++) {
				int64_t i = (a * T + t) * D + d;
				out[i] = in[0][i] + (double)in[1][a * D + d] * in[2][i];
			}
}

static void test_elementwise(void **state)
{
	(void)state;
	const struct gc_case cases[] = {
		{"add same", build_add, &op_add, 2, {GC_IN(3, 5), GC_IN(3, 5)}, .naive = naive_binary},
		{"add bias-like", build_add, &op_add, 2, {GC_IN(2, 3, 7), GC_IN(7)}, .naive = naive_binary},
		{"add both stretch", build_add, &op_add, 2, {GC_IN(2, 1, 5), GC_IN(3, 1)}, .naive = naive_binary},
		{"sub scalar-like", build_sub, &op_sub, 2, {GC_IN(1), GC_IN(4, 3)}, .naive = naive_binary},
		{"sub same", build_sub, &op_sub, 2, {GC_IN(6), GC_IN(6)}, .naive = naive_binary},
		{"mul same", build_mul, &op_mul, 2, {GC_IN(2, 3, 4), GC_IN(2, 3, 4)}, .naive = naive_binary},
		{"mul per-sample", build_mul, &op_mul, 2, {GC_IN(3, 5, 6), GC_IN(3, 1, 6)}, .naive = naive_binary},
		{"mul 5d mixed", build_mul, &op_mul, 2, {GC_IN(2, 1, 3, 1, 2), GC_IN(4, 1, 5, 2)}, .naive = naive_binary},
		{"scale then add_scalar", build_scale, NULL, 1, {GC_IN(3, 7)}, .naive = naive_scale},
		{"modulate", build_modulate, NULL, 3, {GC_IN(2, 5, 7), GC_IN(2, 7), GC_IN(2, 7)}, .naive = naive_modulate},
		{"modulate batch 1, (N,1,D)", build_modulate, NULL, 3, {GC_IN(1, 3, 70), GC_IN(1, 1, 70), GC_IN(1, 70)},
		 .naive = naive_modulate},
		{"gated residual", build_gated, NULL, 3, {GC_IN(3, 4, 5), GC_IN(3, 5), GC_IN(3, 4, 5)}, .naive = naive_gated},
	};
	assert_int_equal(gc_check_table(ctx, cases, (int)(sizeof cases / sizeof *cases), 2), 0);
}

/* ---------------------------------------------------------------- */
/* reductions */

static df_tensor *build_sum(df_graph *g, df_tensor *const *in, const void *arg)
{
	(void)arg;
	return df_sum(g, in[0]);
}

static df_tensor *build_mean(df_graph *g, df_tensor *const *in, const void *arg)
{
	(void)arg;
	return df_mean(g, in[0]);
}

static df_tensor *build_mean_per_sample(df_graph *g, df_tensor *const *in, const void *arg)
{
	(void)arg;
	return df_mean_per_sample(g, in[0]);
}

static df_tensor *build_mse(df_graph *g, df_tensor *const *in, const void *arg)
{
	(void)arg;
	return df_mse_per_sample(g, in[0], in[1]);
}

static df_tensor *build_cosine(df_graph *g, df_tensor *const *in, const void *arg)
{
	(void)arg;
	return df_cosine_similarity(g, in[0], in[1], 1e-8f);
}

/* Row means/sums: arg 0 sum all, 1 mean all, 2 mean per sample. */
static void naive_reduce(const float *const *in, const struct gc_input *s, const void *arg, double *out, int64_t n)
{
	int kind = *(const int *)arg;
	int64_t total = numel_of(&s[0]), cols = total / n;
	for (int64_t r = 0; r < n; r++) {
		double acc = 0.0;
		for (int64_t c = 0; c < cols; c++)
			acc += in[0][r * cols + c];
		out[r] = kind == 0 ? acc : acc / (double)cols;
	}
}

static const int red_sum = 0, red_mean = 1;

static void naive_mse(const float *const *in, const struct gc_input *s, const void *arg, double *out, int64_t n)
{
	(void)arg;
	int64_t cols = numel_of(&s[0]) / n;
	for (int64_t r = 0; r < n; r++) {
		double acc = 0.0;
		for (int64_t c = 0; c < cols; c++) {
			double d = (double)in[0][r * cols + c] - in[1][r * cols + c];
			acc += d * d;
		}
		out[r] = acc / (double)cols;
	}
}

static void naive_cosine(const float *const *in, const struct gc_input *s, const void *arg, double *out, int64_t n)
{
	(void)arg;
	int64_t d = s[0].shape[s[0].ndim - 1];
	for (int64_t r = 0; r < n; r++) {
		double ab = 0, aa = 0, bb = 0;
		for (int64_t i = 0; i < d; i++) {
			double a = in[0][r * d + i], b = in[1][r * d + i];
			ab += a * b, aa += a * a, bb += b * b;
		}
		out[r] = ab / (fmax(sqrt(aa), 1e-8) * fmax(sqrt(bb), 1e-8));
	}
}

static void test_reductions(void **state)
{
	(void)state;
	const struct gc_case cases[] = {
		{"sum", build_sum, &red_sum, 1, {GC_IN(3, 4, 5)}, .naive = naive_reduce},
		{"mean", build_mean, &red_mean, 1, {GC_IN(7, 3)}, .naive = naive_reduce},
		{"mean per sample", build_mean_per_sample, &red_mean, 1, {GC_IN(3, 2, 5)}, .naive = naive_reduce},
		{"mean per sample batch 1", build_mean_per_sample, &red_mean, 1, {GC_IN(1, 9)}, .naive = naive_reduce},
		{"mse per sample", build_mse, NULL, 2, {GC_IN(4, 3, 3), GC_IN(4, 3, 3)}, .naive = naive_mse},
		{"cosine", build_cosine, NULL, 2, {GC_IN(2, 3, 8), GC_IN(2, 3, 8)}, .naive = naive_cosine},
		{"cosine one row", build_cosine, NULL, 2, {GC_IN(5), GC_IN(5)}, .naive = naive_cosine},
	};
	assert_int_equal(gc_check_table(ctx, cases, (int)(sizeof cases / sizeof *cases), 3), 0);
}

/* The harness itself must be able to fail: x * detach(x) has the forward
 * of x^2 but half its gradient, which the check must reject. */
static df_tensor *build_half_gradient(df_graph *g, df_tensor *const *in, const void *arg)
{
	(void)arg;
	return df_mul(g, in[0], df_detach(g, in[0]));
}

static void test_harness_can_fail(void **state)
{
	(void)state;
	const struct gc_case c = {"half gradient", build_half_gradient, NULL, 1, {GC_IN(3, 4)}};
	assert_int_not_equal(gc_check(ctx, &c, 9), 0);
}

static int setup(void **state)
{
	(void)state;
	df_error err;
	return df_ctx_create(&ctx, "cpu", 0, &err);
}

static int teardown(void **state)
{
	(void)state;
	df_ctx_destroy(ctx);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_linear_matmul),
		cmocka_unit_test(test_elementwise),
		cmocka_unit_test(test_reductions),
		cmocka_unit_test(test_harness_can_fail),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
