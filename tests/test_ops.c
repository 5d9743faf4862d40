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
		/* large enough for the backend to split one product across threads,
		 * by rows (linear) and by columns (wide matmul, transposed b) */
		{"linear split by rows", build_linear, NULL, 3, {GC_IN(300, 90), GC_IN(100, 90), GC_IN(100)},
		 .naive = naive_linear, .probes = 24},
		{"matmul split by columns", build_matmul, &mm_nt, 2, {GC_IN(1, 40, 140), GC_IN(1, 400, 140)},
		 .naive = naive_matmul, .probes = 24},
		{"matmul split, a transposed", build_matmul, &mm_tn, 2, {GC_IN(130, 170), GC_IN(130, 100)},
		 .naive = naive_matmul, .probes = 24},
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
		{"mul bias-like", build_mul, &op_mul, 2, {GC_IN(4, 3, 7), GC_IN(3, 7)}, .naive = naive_binary},
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

/* ---------------------------------------------------------------- */
/* normalisation */

static df_tensor *build_layernorm(df_graph *g, df_tensor *const *in, const void *arg)
{
	int affine = *(const int *)arg;
	return df_layernorm(g, in[0], affine ? in[1] : NULL, affine > 1 ? in[2] : NULL, 1e-5f);
}

/* arg: 0 no affine, 1 weight only, 2 weight and bias. */
static void naive_layernorm(const float *const *in, const struct gc_input *s, const void *arg, double *out, int64_t n)
{
	int affine = *(const int *)arg;
	int64_t d = s[0].shape[s[0].ndim - 1];
	for (int64_t r = 0; r < n / d; r++) {
		double mean = 0, var = 0;
		for (int64_t i = 0; i < d; i++)
			mean += in[0][r * d + i];
		mean /= (double)d;
		for (int64_t i = 0; i < d; i++)
			var += (in[0][r * d + i] - mean) * (in[0][r * d + i] - mean);
		double rstd = 1.0 / sqrt(var / (double)d + 1e-5);
		for (int64_t i = 0; i < d; i++)
			out[r * d + i] = (in[0][r * d + i] - mean) * rstd * (affine ? in[1][i] : 1.0) + (affine > 1 ? in[2][i] : 0.0);
	}
}

static const int ln_plain = 0, ln_weight = 1, ln_affine = 2;

static df_tensor *build_ln_modulate(df_graph *g, df_tensor *const *in, const void *arg)
{
	(void)arg;
	return df_layernorm_modulate(g, in[0], in[1], in[2], 1e-6f);
}

static void naive_ln_modulate(const float *const *in, const struct gc_input *s, const void *arg, double *out,
                              int64_t n)
{
	(void)arg;
	int64_t T = s[0].shape[1], D = s[0].shape[2];
	for (int64_t r = 0; r < n / D; r++) {
		double mean = 0, var = 0;
		const float *x = in[0] + r * D, *sh = in[1] + (r / T) * D, *sc = in[2] + (r / T) * D;
		for (int64_t i = 0; i < D; i++)
			mean += x[i];
		mean /= (double)D;
		for (int64_t i = 0; i < D; i++)
			var += (x[i] - mean) * (x[i] - mean);
		double rstd = 1.0 / sqrt(var / (double)D + 1e-6);
		for (int64_t i = 0; i < D; i++)
			out[r * D + i] = (x[i] - mean) * rstd * (1.0 + sc[i]) + sh[i];
	}
}

static void test_norms(void **state)
{
	(void)state;
	const struct gc_case cases[] = {
		{"layernorm plain", build_layernorm, &ln_plain, 1, {GC_IN(3, 7)}, .naive = naive_layernorm},
		{"layernorm weight", build_layernorm, &ln_weight, 2, {GC_IN(2, 3, 5), GC_IN(5)}, .naive = naive_layernorm},
		{"layernorm affine", build_layernorm, &ln_affine, 3, {GC_IN(4, 67), GC_IN(67), GC_IN(67)},
		 .naive = naive_layernorm},
		{"layernorm_modulate", build_ln_modulate, NULL, 3, {GC_IN(2, 3, 9), GC_IN(2, 9), GC_IN(2, 9)},
		 .naive = naive_ln_modulate},
		/* enough work for the rows to be split across threads */
		{"layernorm affine, threaded rows", build_layernorm, &ln_affine, 3, {GC_IN(131, 129), GC_IN(129), GC_IN(129)},
		 .naive = naive_layernorm, .probes = 24},
		{"layernorm_modulate, threaded", build_ln_modulate, NULL, 3, {GC_IN(3, 50, 130), GC_IN(3, 130), GC_IN(3, 130)},
		 .naive = naive_ln_modulate, .probes = 24},
		{"layernorm_modulate batch 1 wide", build_ln_modulate, NULL, 3, {GC_IN(1, 5, 130), GC_IN(1, 130), GC_IN(1, 130)},
		 .naive = naive_ln_modulate},
	};
	assert_int_equal(gc_check_table(ctx, cases, (int)(sizeof cases / sizeof *cases), 4), 0);
}

/* ---------------------------------------------------------------- */
/* attention */

struct attn_arg {
	int heads;
};

static df_tensor *build_attention(df_graph *g, df_tensor *const *in, const void *arg)
{
	const struct attn_arg *a = arg;
	return df_attention(g, in[0], in[1], in[2], a->heads);
}

static df_tensor *build_attention_qkv(df_graph *g, df_tensor *const *in, const void *arg)
{
	const struct attn_arg *a = arg;
	return df_attention_qkv(g, in[0], a->heads);
}

/* softmax(q k^T / sqrt(hd)) v per head in double; q rows of ldq, etc. */
static void naive_attend(const float *q, const float *k, const float *v, int64_t ldq, int64_t ldkv, int64_t N,
                         int64_t Tq, int64_t Tk, int64_t D, int heads, double *out)
{
	int64_t hd = D / heads;
	double *p = malloc((size_t)Tk * sizeof *p);
	for (int64_t b = 0; b < N; b++)
		for (int h = 0; h < heads; h++)
			for (int64_t i = 0; i < Tq; i++) {
				double mx = -1e300, sum = 0;
				for (int64_t j = 0; j < Tk; j++) {
					double dot = 0;
					for (int64_t c = 0; c < hd; c++)
						dot += (double)q[(b * Tq + i) * ldq + h * hd + c] * k[(b * Tk + j) * ldkv + h * hd + c];
					p[j] = dot / sqrt((double)hd);
					mx = p[j] > mx ? p[j] : mx;
				}
				for (int64_t j = 0; j < Tk; j++)
					sum += (p[j] = exp(p[j] - mx));
				for (int64_t c = 0; c < hd; c++) {
					double acc = 0;
					for (int64_t j = 0; j < Tk; j++)
						acc += p[j] * v[(b * Tk + j) * ldkv + h * hd + c];
					out[(b * Tq + i) * D + h * hd + c] = acc / sum;
				}
			}
	free(p);
}

static void naive_attention(const float *const *in, const struct gc_input *s, const void *arg, double *out,
                            int64_t n)
{
	(void)n;
	const struct attn_arg *a = arg;
	int64_t D = s[0].shape[2];
	naive_attend(in[0], in[1], in[2], D, D, s[0].shape[0], s[0].shape[1], s[1].shape[1], D, a->heads, out);
}

static void naive_attention_qkv(const float *const *in, const struct gc_input *s, const void *arg, double *out,
                                int64_t n)
{
	(void)n;
	const struct attn_arg *a = arg;
	int64_t D = s[0].shape[2] / 3, T = s[0].shape[1];
	naive_attend(in[0], in[0] + D, in[0] + 2 * D, 3 * D, 3 * D, s[0].shape[0], T, T, D, a->heads, out);
}

static const struct attn_arg heads1 = {1}, heads2 = {2}, heads3 = {3};

static void test_attention(void **state)
{
	(void)state;
	const struct gc_case cases[] = {
		{"attention 1 head batch 1", build_attention, &heads1, 3, {GC_IN(1, 5, 4), GC_IN(1, 5, 4), GC_IN(1, 5, 4)},
		 .naive = naive_attention},
		{"attention 3 heads", build_attention, &heads3, 3, {GC_IN(2, 7, 9), GC_IN(2, 7, 9), GC_IN(2, 7, 9)},
		 .naive = naive_attention},
		{"cross-attention Tk != Tq", build_attention, &heads2, 3, {GC_IN(2, 3, 6), GC_IN(2, 11, 6), GC_IN(2, 11, 6)},
		 .naive = naive_attention},
		{"attention frozen kv", build_attention, &heads2, 3,
		 {GC_IN(1, 4, 6), GC_IN_CONST(1, 6, 6), GC_IN_CONST(1, 6, 6)}, .naive = naive_attention},
		{"attention more rows than a block", build_attention, &heads1, 3,
		 {GC_IN(1, 131, 3), GC_IN(1, 17, 3), GC_IN(1, 17, 3)}, .naive = naive_attention},
		{"attention_qkv", build_attention_qkv, &heads2, 1, {GC_IN(3, 5, 12)}, .naive = naive_attention_qkv},
		{"attention_qkv large scores", build_attention_qkv, &heads1, 1, {GC_IN_RANGE(-4, 4, 1, 6, 9)},
		 .naive = naive_attention_qkv},
	};
	assert_int_equal(gc_check_table(ctx, cases, (int)(sizeof cases / sizeof *cases), 5), 0);
}

/* Softmax stability: huge equal scores give a uniform average, not NaN. */
static void test_attention_stable(void **state)
{
	(void)state;
	df_graph *g = df_graph_create(ctx, DF_GRAPH_NO_GRAD);
	float q[4] = {100, 100, 100, 100}, k[8] = {100, 100, 100, 100, 100, 100, 100, 100}, v[8] = {1, 2, 3, 4, 5, 6, 7, 8};
	df_tensor *out = df_attention(g, df_tensor_from_host(g, q, DF_SHAPE(1, 1, 4)),
	                              df_tensor_from_host(g, k, DF_SHAPE(1, 2, 4)),
	                              df_tensor_from_host(g, v, DF_SHAPE(1, 2, 4)), 1);
	float got[4];
	assert_non_null(out);
	assert_int_equal(df_tensor_read(out, got, NULL), 0);
	for (int i = 0; i < 4; i++)
		assert_true(fabsf(got[i] - (v[i] + v[4 + i]) / 2) < 1e-5f);
	df_graph_destroy(g);
}

/* ---------------------------------------------------------------- */
/* activations and embedding */

static df_tensor *build_gelu(df_graph *g, df_tensor *const *in, const void *arg)
{
	return df_gelu(g, in[0], *(const int *)arg);
}

static void naive_gelu(const float *const *in, const struct gc_input *s, const void *arg, double *out, int64_t n)
{
	(void)s;
	int tanh_approx = *(const int *)arg;
	for (int64_t i = 0; i < n; i++) {
		double x = in[0][i];
		out[i] = tanh_approx ? 0.5 * x * (1 + tanh(sqrt(2 / M_PI) * (x + 0.044715 * x * x * x)))
		                     : 0.5 * x * (1 + erf(x / sqrt(2.0)));
	}
}

static const int gelu_tanh = 1, gelu_exact = 0;

static df_tensor *build_silu(df_graph *g, df_tensor *const *in, const void *arg)
{
	(void)arg;
	return df_silu(g, in[0]);
}

static void naive_silu(const float *const *in, const struct gc_input *s, const void *arg, double *out, int64_t n)
{
	(void)s, (void)arg;
	for (int64_t i = 0; i < n; i++)
		out[i] = in[0][i] / (1 + exp(-(double)in[0][i]));
}

static const int32_t emb_ids[7] = {3, 0, 3, 4, 1, 3, 0};

static df_tensor *build_embedding(df_graph *g, df_tensor *const *in, const void *arg)
{
	(void)arg;
	return df_embedding(g, in[0], emb_ids, 7);
}

static void naive_embedding(const float *const *in, const struct gc_input *s, const void *arg, double *out,
                            int64_t n)
{
	(void)arg, (void)n;
	int64_t d = s[0].shape[1];
	for (int i = 0; i < 7; i++)
		for (int64_t c = 0; c < d; c++)
			out[i * d + c] = in[0][emb_ids[i] * d + c];
}

static void test_activations_embedding(void **state)
{
	(void)state;
	const struct gc_case cases[] = {
		{"gelu tanh", build_gelu, &gelu_tanh, 1, {GC_IN_RANGE(-6, 6, 5, 37)}, .naive = naive_gelu},
		{"gelu exact", build_gelu, &gelu_exact, 1, {GC_IN_RANGE(-6, 6, 3, 41)}, .naive = naive_gelu},
		{"gelu tanh small", build_gelu, &gelu_tanh, 1, {GC_IN_RANGE(-0.01f, 0.01f, 33)}, .naive = naive_gelu},
		{"gelu tanh, threaded spans", build_gelu, &gelu_tanh, 1, {GC_IN_RANGE(-6, 6, 131, 129)}, .naive = naive_gelu,
		 .probes = 48},
		{"silu", build_silu, NULL, 1, {GC_IN_RANGE(-8, 8, 4, 29)}, .naive = naive_silu},
		{"embedding repeated ids", build_embedding, NULL, 1, {GC_IN(5, 6)}, .naive = naive_embedding},
	};
	assert_int_equal(gc_check_table(ctx, cases, (int)(sizeof cases / sizeof *cases), 6), 0);
}

/* ---------------------------------------------------------------- */
/* layout ops */

static df_tensor *build_reshape(df_graph *g, df_tensor *const *in, const void *arg)
{
	(void)arg;
	/* through a view and back: gradients reach the base tensor */
	df_tensor *v = df_reshape(g, in[0], DF_SHAPE(4, -1));
	return df_mul(g, v, v);
}

static void naive_reshape(const float *const *in, const struct gc_input *s, const void *arg, double *out, int64_t n)
{
	(void)s, (void)arg;
	for (int64_t i = 0; i < n; i++)
		out[i] = (double)in[0][i] * in[0][i];
}

static const int perm_120[3] = {1, 2, 0}, perm_5[5] = {4, 0, 3, 1, 2};

static df_tensor *build_permute(df_graph *g, df_tensor *const *in, const void *arg)
{
	return df_permute(g, in[0], arg);
}

static void naive_permute(const float *const *in, const struct gc_input *s, const void *arg, double *out, int64_t n)
{
	const int *perm = arg;
	int nd = s[0].ndim;
	int64_t stride[DF_MAX_DIMS], oshape[DF_MAX_DIMS];
	for (int d = nd - 1, st = 1; d >= 0; d--) {
		stride[d] = st;
		st *= (int)s[0].shape[d];
	}
	for (int d = 0; d < nd; d++)
		oshape[d] = s[0].shape[perm[d]];
	for (int64_t i = 0; i < n; i++) {
		int64_t rest = i, src = 0;
		for (int d = nd - 1; d >= 0; d--) {
			src += (rest % oshape[d]) * stride[perm[d]];
			rest /= oshape[d];
		}
		out[i] = in[0][src];
	}
}

static df_tensor *build_slice(df_graph *g, df_tensor *const *in, const void *arg)
{
	(void)arg;
	return df_slice(g, in[0], 1, 2, 3);
}

static void naive_slice(const float *const *in, const struct gc_input *s, const void *arg, double *out, int64_t n)
{
	(void)arg, (void)n;
	int64_t A = s[0].shape[0], B = s[0].shape[1], C = s[0].shape[2];
	for (int64_t a = 0; a < A; a++)
		for (int64_t b = 0; b < 3; b++)
			for (int64_t c = 0; c < C; c++)
				out[(a * 3 + b) * C + c] = in[0][(a * B + b + 2) * C + c];
}

static df_tensor *build_chunk_concat(df_graph *g, df_tensor *const *in, const void *arg)
{
	(void)arg;
	df_tensor *parts[3];
	if (df_chunk(g, in[0], 3, -1, parts))
		return NULL;
	/* reorder the chunks, add a second input in the middle */
	df_tensor *xs[4] = {parts[2], in[1], parts[0], parts[1]};
	return df_concat(g, xs, 4, 2);
}

static void naive_chunk_concat(const float *const *in, const struct gc_input *s, const void *arg, double *out,
                               int64_t n)
{
	(void)arg, (void)n;
	int64_t A = s[0].shape[0], B = s[0].shape[1], C = s[0].shape[2], c3 = C / 3, E = s[1].shape[2];
	int64_t W = C + E;
	for (int64_t a = 0; a < A; a++)
		for (int64_t b = 0; b < B; b++) {
			double *o = out + (a * B + b) * W;
			const float *x = in[0] + (a * B + b) * C, *y = in[1] + (a * B + b) * E;
			int64_t k = 0;
			for (int64_t c = 0; c < c3; c++)
				o[k++] = x[2 * c3 + c];
			for (int64_t c = 0; c < E; c++)
				o[k++] = y[c];
			for (int64_t c = 0; c < 2 * c3; c++)
				o[k++] = x[c];
		}
}

static df_tensor *build_patchify(df_graph *g, df_tensor *const *in, const void *arg)
{
	return df_patchify(g, in[0], *(const int *)arg);
}

/* DiT patch embedding order: token (i, j) row-major, features (c, pr, pc). */
static void naive_patchify(const float *const *in, const struct gc_input *s, const void *arg, double *out, int64_t n)
{
	(void)n;
	int p = *(const int *)arg;
	int64_t N = s[0].shape[0], C = s[0].shape[1], H = s[0].shape[2], W = s[0].shape[3], G = W / p;
	for (int64_t b = 0; b < N; b++)
		for (int64_t i = 0; i < H / p; i++)
			for (int64_t j = 0; j < G; j++)
				for (int64_t c = 0; c < C; c++)
					for (int pr = 0; pr < p; pr++)
						for (int pc = 0; pc < p; pc++)
							out[((b * (H / p) + i) * G + j) * C * p * p + (c * p + pr) * p + pc] =
								in[0][((b * C + c) * H + i * p + pr) * W + j * p + pc];
}

struct unpatch_arg {
	int p, c, h, w;
};

static df_tensor *build_unpatchify(df_graph *g, df_tensor *const *in, const void *arg)
{
	const struct unpatch_arg *a = arg;
	return df_unpatchify(g, in[0], a->p, a->c, a->h, a->w);
}

/* DiT unpatchify: feature f = (pr p + pc) C + c, channel fastest. */
static void naive_unpatchify(const float *const *in, const struct gc_input *s, const void *arg, double *out,
                             int64_t n)
{
	(void)n;
	const struct unpatch_arg *a = arg;
	int p = a->p;
	int64_t N = s[0].shape[0], C = a->c, H = a->h, W = a->w, G = W / p, F = (int64_t)p * p * C;
	for (int64_t b = 0; b < N; b++)
		for (int64_t c = 0; c < C; c++)
			for (int64_t y = 0; y < H; y++)
				for (int64_t x = 0; x < W; x++) {
					int64_t i = y / p, pr = y % p, j = x / p, pc = x % p;
					out[((b * C + c) * H + y) * W + x] = in[0][(b * (H / p) * G + i * G + j) * F + (pr * p + pc) * C + c];
				}
}

static const int patch2 = 2, patch3 = 3;
static const struct unpatch_arg unpatch_2 = {2, 3, 4, 6}, unpatch_3 = {3, 2, 3, 9};

static void test_layout(void **state)
{
	(void)state;
	const struct gc_case cases[] = {
		{"reshape view", build_reshape, NULL, 1, {GC_IN(2, 2, 3)}, .naive = naive_reshape},
		{"permute 3d", build_permute, perm_120, 1, {GC_IN(2, 3, 4)}, .naive = naive_permute},
		{"permute 5d", build_permute, perm_5, 1, {GC_IN(2, 1, 3, 2, 3)}, .naive = naive_permute},
		{"slice", build_slice, NULL, 1, {GC_IN(2, 6, 3)}, .naive = naive_slice},
		{"chunk + concat", build_chunk_concat, NULL, 2, {GC_IN(2, 3, 6), GC_IN(2, 3, 1)}, .naive = naive_chunk_concat},
		{"patchify p2", build_patchify, &patch2, 1, {GC_IN(2, 3, 4, 6)}, .naive = naive_patchify},
		{"patchify p3 batch 1", build_patchify, &patch3, 1, {GC_IN(1, 2, 3, 9)}, .naive = naive_patchify},
		{"unpatchify p2", build_unpatchify, &unpatch_2, 1, {GC_IN(2, 6, 12)}, .naive = naive_unpatchify},
		{"unpatchify p3", build_unpatchify, &unpatch_3, 1, {GC_IN(1, 3, 18)}, .naive = naive_unpatchify},
	};
	assert_int_equal(gc_check_table(ctx, cases, (int)(sizeof cases / sizeof *cases), 7), 0);
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
	const struct gc_case c = {"half gradient", build_half_gradient, NULL, 1, {GC_IN(3, 4)}, .tol = 0};
	assert_int_not_equal(gc_check(ctx, &c, 9), 0);
}

/* Every test runs on one thread and on three (uneven splits, and more
 * threads than tasks in the small cases). */
static int setup_threads(int threads)
{
	df_error err;
	return df_ctx_create(&ctx, "cpu", threads, &err);
}

static int setup_one(void **state)
{
	(void)state;
	return setup_threads(1);
}

static int setup_three(void **state)
{
	(void)state;
	return setup_threads(3);
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
		cmocka_unit_test(test_norms),
		cmocka_unit_test(test_attention),
		cmocka_unit_test(test_attention_stable),
		cmocka_unit_test(test_activations_embedding),
		cmocka_unit_test(test_layout),
		cmocka_unit_test(test_harness_can_fail),
	};
	int failed = cmocka_run_group_tests_name("one thread", tests, setup_one, teardown);
	failed += cmocka_run_group_tests_name("three threads", tests, setup_three, teardown);
	return failed;
}
