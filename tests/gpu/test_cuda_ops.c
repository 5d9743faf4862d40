/* The CUDA backend against the CPU backend, run by tests/gpu/run.sh.
 *
 *   test_cuda_ops ops                  every op, forward and gradients
 *   test_cuda_ops dit [steps] [batch] [cpu-file]
 *                                      DiT-S/2 training: loss on cpu, on cuda
 *                                      in float32 and in bf16 autocast (the
 *                                      cpu losses from the file dit-cpu
 *                                      wrote, when given)
 *   test_cuda_ops dit-cpu steps batch file
 *                                      only the cpu losses, into file
 *   test_cuda_ops throughput [model] [batch]
 *                                      DiT training images/s and MFU (cuda;
 *                                      DIFFUSE_CUDA_AUTOCAST=bf16 for bf16)
 *   test_cuda_ops compare A B tol [prefix]
 *                                      two safetensors files (samples or
 *                                      checkpoints of a cpu and a cuda run):
 *                                      every float tensor of A whose name
 *                                      starts with prefix, normwise error
 *                                      <= tol (needs no GPU)
 *
 * Exits 77 (skip) when no CUDA device can be used, 0 when every check
 * passes, 1 otherwise. Op outputs land in graph memory that was filled with
 * NaN just before, so an element a kernel forgets to write fails. Errors are
 * normwise: max |cuda - cpu| / max |cpu| over each output or gradient. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "diffuse/io.h"
#include "diffuse/optim.h"
#include "diffuse/rng.h"
#include "diffuse/tensor.h"
#include "dit_net.h"

#define SKIP 77
#define MAX_IN 6
#define POISON_FLOATS (8 << 20)

static double tolerance = 1e-5; /* 3e-4 when DIFFUSE_CUDA_TF32=1 */

/* ------------------------------------------------------------------ */
/* Op cases. */

enum op_id {
	OP_LINEAR, OP_LINEAR_NOBIAS, OP_MATMUL_NN, OP_MATMUL_NT, OP_MATMUL_TN, OP_MATMUL_TT, OP_ADD, OP_ADD_BCAST,
	OP_SUB_BCAST, OP_MUL_BCAST, OP_MUL, OP_SCALE, OP_ADD_SCALAR, OP_MODULATE, OP_GATED, OP_LAYERNORM,
	OP_LAYERNORM_PLAIN, OP_LN_MODULATE, OP_GROUPNORM, OP_CONV_S1, OP_CONV_S2, OP_UPSAMPLE, OP_AVGPOOL,
	OP_ATTENTION, OP_ATTENTION_CROSS, OP_ATTENTION_QKV, OP_GELU_TANH, OP_GELU_ERF, OP_SILU, OP_EXP, OP_LOG,
	OP_SOFTPLUS, OP_TANH, OP_SOFTMAX, OP_DROPOUT, OP_EMBEDDING, OP_PERMUTE, OP_SLICE_CONCAT, OP_PATCHIFY,
	OP_UNPATCHIFY, OP_SUM, OP_MEAN, OP_MEAN_PER_SAMPLE, OP_MSE, OP_COSINE, OP_NORMAL_KL, OP_DGL,
	OP_CROSS_ENTROPY,
};

struct op_input {
	int ndim;
	int64_t shape[DF_MAX_DIMS];
	float lo, hi; /* both 0: [-1, 1] */
};

struct op_case {
	const char *name;
	enum op_id op;
	int n_in;
	struct op_input in[MAX_IN];
};

#define IN(...) { DF_SHAPE_NARGS_(__VA_ARGS__), { __VA_ARGS__ }, 0, 0 }
#define IN_RANGE(lo, hi, ...) { DF_SHAPE_NARGS_(__VA_ARGS__), { __VA_ARGS__ }, lo, hi }

static const int32_t ids[12] = { 3, 0, 7, 3, 3, 9, 1, 0, 7, 2, 3, 5 };
static const int32_t labels[6] = { 2, 0, 9, 4, 4, 1 };

static const struct op_case cases[] = {
	{ "linear", OP_LINEAR, 3, { IN(37, 48), IN(70, 48), IN(70) } },
	{ "linear (no bias)", OP_LINEAR_NOBIAS, 2, { IN(5, 3, 64), IN(33, 64) } },
	{ "matmul nn", OP_MATMUL_NN, 2, { IN(3, 17, 24), IN(3, 24, 19) } },
	{ "matmul nt", OP_MATMUL_NT, 2, { IN(2, 17, 24), IN(2, 19, 24) } },
	{ "matmul tn", OP_MATMUL_TN, 2, { IN(2, 24, 17), IN(2, 24, 19) } },
	{ "matmul tt", OP_MATMUL_TT, 2, { IN(2, 24, 17), IN(2, 19, 24) } },
	{ "add", OP_ADD, 2, { IN(4, 9, 33), IN(4, 9, 33) } },
	{ "add broadcast", OP_ADD_BCAST, 2, { IN(4, 9, 33), IN(1, 9, 33) } },
	{ "sub broadcast", OP_SUB_BCAST, 2, { IN(4, 9, 33), IN(33) } },
	{ "mul broadcast", OP_MUL_BCAST, 2, { IN(4, 1, 33), IN(4, 9, 1) } },
	{ "mul", OP_MUL, 2, { IN(300), IN(300) } },
	{ "scale", OP_SCALE, 1, { IN(5, 77) } },
	{ "add scalar", OP_ADD_SCALAR, 1, { IN(5, 77) } },
	{ "modulate", OP_MODULATE, 3, { IN(3, 16, 40), IN(3, 40), IN(3, 40) } },
	{ "gated residual", OP_GATED, 3, { IN(3, 16, 40), IN(3, 40), IN(3, 16, 40) } },
	{ "layernorm", OP_LAYERNORM, 3, { IN(7, 19, 96), IN(96), IN(96) } },
	{ "layernorm (no affine)", OP_LAYERNORM_PLAIN, 1, { IN(600, 72) } },
	{ "layernorm modulate", OP_LN_MODULATE, 3, { IN(3, 300, 72), IN(3, 72), IN(3, 72) } },
	{ "groupnorm", OP_GROUPNORM, 3, { IN(3, 8, 6, 5), IN(8), IN(8) } },
	{ "conv2d 3x3 s1 p1", OP_CONV_S1, 3, { IN(2, 5, 9, 8), IN(6, 5, 3, 3), IN(6) } },
	{ "conv2d 3x3 s2 p1", OP_CONV_S2, 3, { IN(2, 4, 9, 10), IN(3, 4, 3, 3), IN(3) } },
	{ "upsample nearest 2x", OP_UPSAMPLE, 1, { IN(2, 3, 5, 7) } },
	{ "avgpool 2", OP_AVGPOOL, 1, { IN(2, 3, 6, 8) } },
	{ "attention", OP_ATTENTION, 3, { IN(2, 20, 48), IN(2, 20, 48), IN(2, 20, 48) } },
	{ "attention cross", OP_ATTENTION_CROSS, 3, { IN(3, 9, 32), IN(3, 14, 32), IN(3, 14, 32) } },
	{ "attention qkv", OP_ATTENTION_QKV, 1, { IN(2, 64, 3 * 72) } },
	{ "gelu tanh", OP_GELU_TANH, 1, { IN_RANGE(-4, 4, 999) } },
	{ "gelu erf", OP_GELU_ERF, 1, { IN_RANGE(-4, 4, 999) } },
	{ "silu", OP_SILU, 1, { IN_RANGE(-6, 6, 999) } },
	{ "exp", OP_EXP, 1, { IN_RANGE(-3, 3, 500) } },
	{ "log", OP_LOG, 1, { IN_RANGE(0.1f, 5, 500) } },
	{ "softplus", OP_SOFTPLUS, 1, { IN_RANGE(-8, 8, 500) } },
	{ "tanh", OP_TANH, 1, { IN_RANGE(-3, 3, 500) } },
	{ "softmax", OP_SOFTMAX, 1, { IN_RANGE(-5, 5, 13, 1000) } },
	{ "dropout (Philox)", OP_DROPOUT, 1, { IN(4099) } },
	{ "embedding", OP_EMBEDDING, 1, { IN(10, 24) } },
	{ "permute", OP_PERMUTE, 1, { IN(2, 3, 4, 5) } },
	{ "slice + concat", OP_SLICE_CONCAT, 2, { IN(2, 7, 6), IN(2, 3, 6) } },
	{ "patchify", OP_PATCHIFY, 1, { IN(2, 4, 8, 8) } },
	{ "unpatchify", OP_UNPATCHIFY, 1, { IN(2, 16, 16) } },
	{ "sum", OP_SUM, 1, { IN(3, 1000) } },
	{ "mean", OP_MEAN, 1, { IN(70001) } },
	{ "mean per sample", OP_MEAN_PER_SAMPLE, 1, { IN(5, 3, 33) } },
	{ "mse per sample", OP_MSE, 2, { IN(5, 99), IN(5, 99) } },
	{ "cosine similarity", OP_COSINE, 2, { IN(6, 257), IN(6, 257) } },
	{ "normal kl", OP_NORMAL_KL, 4, { IN(400), IN(400), IN(400), IN(400) } },
	{ "discretized gaussian loglik", OP_DGL, 3, { IN(600), IN(600), IN_RANGE(-4, 0, 600) } },
	{ "cross entropy", OP_CROSS_ENTROPY, 1, { IN(6, 10) } },
};

static df_tensor *build(df_graph *g, enum op_id op, df_tensor *const *in)
{
	switch (op) {
	case OP_LINEAR: return df_linear(g, in[0], in[1], in[2]);
	case OP_LINEAR_NOBIAS: return df_linear(g, in[0], in[1], NULL);
	case OP_MATMUL_NN: return df_matmul(g, in[0], in[1], 0, 0);
	case OP_MATMUL_NT: return df_matmul(g, in[0], in[1], 0, 1);
	case OP_MATMUL_TN: return df_matmul(g, in[0], in[1], 1, 0);
	case OP_MATMUL_TT: return df_matmul(g, in[0], in[1], 1, 1);
	case OP_ADD: case OP_ADD_BCAST: return df_add(g, in[0], in[1]);
	case OP_SUB_BCAST: return df_sub(g, in[0], in[1]);
	case OP_MUL: case OP_MUL_BCAST: return df_mul(g, in[0], in[1]);
	case OP_SCALE: return df_scale(g, in[0], -1.75f);
	case OP_ADD_SCALAR: return df_add_scalar(g, in[0], 0.625f);
	case OP_MODULATE: return df_modulate(g, in[0], in[1], in[2]);
	case OP_GATED: return df_gated_residual(g, in[0], in[1], in[2]);
	case OP_LAYERNORM: return df_layernorm(g, in[0], in[1], in[2], 1e-5f);
	case OP_LAYERNORM_PLAIN: return df_layernorm(g, in[0], NULL, NULL, 1e-6f);
	case OP_LN_MODULATE: return df_layernorm_modulate(g, in[0], in[1], in[2], 1e-6f);
	case OP_GROUPNORM: return df_groupnorm(g, in[0], 4, in[1], in[2], 1e-5f);
	case OP_CONV_S1: return df_conv2d(g, in[0], in[1], in[2], 1, 1);
	case OP_CONV_S2: return df_conv2d(g, in[0], in[1], in[2], 2, 1);
	case OP_UPSAMPLE: return df_upsample_nearest2x(g, in[0]);
	case OP_AVGPOOL: return df_avgpool2d(g, in[0], 2);
	case OP_ATTENTION: return df_attention(g, in[0], in[1], in[2], 4);
	case OP_ATTENTION_CROSS: return df_attention(g, in[0], in[1], in[2], 2);
	case OP_ATTENTION_QKV: return df_attention_qkv(g, in[0], 3);
	case OP_GELU_TANH: return df_gelu(g, in[0], 1);
	case OP_GELU_ERF: return df_gelu(g, in[0], 0);
	case OP_SILU: return df_silu(g, in[0]);
	case OP_EXP: return df_exp(g, in[0]);
	case OP_LOG: return df_log(g, in[0]);
	case OP_SOFTPLUS: return df_softplus(g, in[0]);
	case OP_TANH: return df_tanh(g, in[0]);
	case OP_SOFTMAX: return df_softmax(g, in[0]);
	case OP_DROPOUT: return df_dropout(g, in[0], 0.3f, 1234, 5, 17);
	case OP_EMBEDDING: return df_embedding(g, in[0], ids, 12);
	case OP_PERMUTE: return df_permute(g, in[0], (const int[]){ 2, 0, 3, 1 });
	case OP_SLICE_CONCAT: {
		df_tensor *parts[2] = { df_slice(g, in[0], 1, 2, 4), in[1] };
		return df_concat(g, parts, 2, 1);
	}
	case OP_PATCHIFY: return df_patchify(g, in[0], 2);
	case OP_UNPATCHIFY: return df_unpatchify(g, in[0], 2, 4, 8, 8);
	case OP_SUM: return df_sum(g, in[0]);
	case OP_MEAN: return df_mean(g, in[0]);
	case OP_MEAN_PER_SAMPLE: return df_mean_per_sample(g, in[0]);
	case OP_MSE: return df_mse_per_sample(g, in[0], in[1]);
	case OP_COSINE: return df_cosine_similarity(g, in[0], in[1], 1e-8f);
	case OP_NORMAL_KL: return df_normal_kl(g, in[0], in[1], in[2], in[3]);
	case OP_DGL: return df_discretized_gaussian_loglik(g, in[0], in[1], in[2]);
	case OP_CROSS_ENTROPY: return df_cross_entropy(g, in[0], labels);
	}
	return NULL;
}

/* Deterministic uniform values in [lo, hi) from the SDK's Philox. */
static void fill(float *x, int64_t n, float lo, float hi, uint64_t stream)
{
	df_rng_fill_uniform(x, (size_t)n, 42, stream, 0, 0);
	for (int64_t i = 0; i < n; i++)
		x[i] = lo + (hi - lo) * x[i];
}

struct op_result {
	int64_t out_numel, in_numel[MAX_IN];
	float *out, *grad[MAX_IN];
};

static void result_free(struct op_result *r)
{
	free(r->out);
	for (int i = 0; i < MAX_IN; i++)
		free(r->grad[i]);
	memset(r, 0, sizeof *r);
}

/* Runs one case on ctx: the output, and the gradients of sum(out * w). */
static int run_case(df_ctx *ctx, const struct op_case *c, struct op_result *r, char *why, size_t why_len)
{
	df_error err = { { 0 } };
	memset(r, 0, sizeof *r);
	df_params *p = df_params_create(ctx);
	df_tensor *in[MAX_IN] = { 0 };
	char name[16];
	for (int i = 0; i < c->n_in; i++) {
		snprintf(name, sizeof name, "in%d", i);
		in[i] = df_params_add(p, name, c->in[i].ndim, c->in[i].shape, 0);
	}
	int rc = df_params_finalize(p, &err);
	for (int i = 0; i < c->n_in && rc == DF_OK; i++) {
		const float lo = c->in[i].lo || c->in[i].hi ? c->in[i].lo : -1.0f;
		const float hi = c->in[i].lo || c->in[i].hi ? c->in[i].hi : 1.0f;
		float *v = malloc((size_t)in[i]->numel * sizeof(float));
		fill(v, in[i]->numel, lo, hi, (uint64_t)(c - cases) * 16 + (uint64_t)i);
		rc = df_tensor_write(in[i], v, &err);
		free(v);
	}
	df_graph *g = df_graph_create(ctx, 0);
	/* Poison: the arena hands the same memory to the case's tensors. */
	float *nan = malloc((size_t)POISON_FLOATS * sizeof(float));
	for (int64_t i = 0; i < POISON_FLOATS; i++)
		nan[i] = NAN;
	df_tensor *poison = df_tensor_from_host(g, nan, 1, (const int64_t[]){ POISON_FLOATS });
	free(nan);
	if (!poison)
		rc = DF_ENOMEM;
	df_graph_reset(g);
	df_tensor *out = rc == DF_OK ? build(g, c->op, in) : NULL;
	if (rc == DF_OK && (rc = df_graph_status(g, &err)) == DF_OK) {
		r->out_numel = out->numel;
		r->out = malloc((size_t)out->numel * sizeof(float));
		rc = df_tensor_read(out, r->out, &err);
	}
	if (rc == DF_OK) {
		float *w = malloc((size_t)out->numel * sizeof(float));
		fill(w, out->numel, -1.0f, 1.0f, 999);
		df_tensor *wt = df_tensor_from_host(g, w, out->ndim, out->shape);
		free(w);
		df_tensor *loss = df_sum(g, df_mul(g, out, wt));
		df_params_zero_grad(p);
		rc = df_graph_status(g, &err);
		if (rc == DF_OK)
			rc = df_backward(g, loss, &err);
	}
	for (int i = 0; i < c->n_in && rc == DF_OK; i++) {
		r->in_numel[i] = in[i]->numel;
		r->grad[i] = malloc((size_t)in[i]->numel * sizeof(float));
		rc = df_tensor_read_grad(in[i], r->grad[i], &err);
	}
	if (rc != DF_OK)
		snprintf(why, why_len, "%s", err.msg);
	df_graph_destroy(g);
	df_params_destroy(p);
	return rc;
}

/* Normwise error of got against want; infinite when got has a non-finite
 * value where want has none (an unwritten, poisoned element). */
static double normwise(const float *got, const float *want, int64_t n)
{
	double diff = 0.0, scale = 0.0;
	for (int64_t i = 0; i < n; i++) {
		if (!isfinite(got[i]) && isfinite(want[i]))
			return INFINITY;
		const double d = fabs((double)got[i] - want[i]);
		diff = d > diff ? d : diff;
		scale = fabs(want[i]) > scale ? fabs(want[i]) : scale;
	}
	return scale > 0 ? diff / scale : diff;
}

/* Gradient clipping, AdamW (3 steps), EMA and the finiteness check over a
 * parameter block:
 * out gets the values then the EMA (2 n floats), msg the check's message
 * after a NaN gradient. */
static int optimiser_case(df_ctx *ctx, float *out, int64_t n, char *msg, size_t msg_len)
{
	df_error err = { { 0 } };
	df_params *p = df_params_create(ctx), *ema = df_params_create(ctx);
	df_tensor *w = df_params_add(p, "w", DF_SHAPE(n - 101), 0), *b = df_params_add(p, "b", DF_SHAPE(101), 0);
	df_params_add(ema, "w", DF_SHAPE(n - 101), 0);
	df_params_add(ema, "b", DF_SHAPE(101), 0);
	int rc = df_params_finalize(p, &err);
	if (rc == DF_OK)
		rc = df_params_finalize(ema, &err);
	float *host = malloc((size_t)n * sizeof(float));
	fill(host, n, -1, 1, 4000);
	if (rc == DF_OK)
		rc = df_params_write(p, host, &err);
	if (rc == DF_OK)
		rc = df_params_write(ema, host, &err);
	fill(host, n, -2, 2, 4001);
	host[n - 50] = NAN; /* for the finiteness check, after the updates */
	df_adamw_config c = df_adamw_defaults();
	c.lr = 0.01;
	for (int t = 1; t <= 4 && rc == DF_OK; t++) {
		df_graph *g = df_graph_create(ctx, 0);
		const int nan_step = t == 4;
		host[n - 50] = nan_step ? NAN : 0.5f;
		df_tensor *gw = df_tensor_from_host(g, host, DF_SHAPE(n - 101));
		df_tensor *gb = df_tensor_from_host(g, host + n - 101, DF_SHAPE(101));
		df_tensor *loss = df_add(g, df_sum(g, df_mul(g, w, gw)), df_sum(g, df_mul(g, b, gb)));
		df_params_zero_grad(p);
		rc = df_backward(g, loss, &err);
		df_graph_destroy(g);
		if (rc == DF_OK && nan_step) {
			rc = df_params_check_finite(p, DF_PARAMS_GRADS, &err) == DF_ENUMERIC ? DF_OK : DF_EINVAL;
			snprintf(msg, msg_len, "%s", err.msg);
		} else if (rc == DF_OK) {
			double norm = 0;
			rc = df_params_clip_grad_norm(p, 50.0, &norm, &err); /* the norm is about 365: clipped */
			if (rc == DF_OK)
				rc = df_params_adamw_step(p, &c, t, &err);
			if (rc == DF_OK)
				rc = df_params_ema_update(ema, p, 0.9f, &err);
		}
	}
	if (rc == DF_OK)
		rc = df_params_read(p, out, &err);
	if (rc == DF_OK)
		rc = df_params_read(ema, out + n, &err);
	if (rc != DF_OK)
		fprintf(stderr, "optimiser on %s: %s\n", df_ctx_device(ctx), err.msg);
	free(host);
	df_params_destroy(p);
	df_params_destroy(ema);
	return rc;
}

static int run_optimiser(df_ctx *cpu, df_ctx *gpu)
{
	const int64_t n = 100003;
	float *want = malloc(2 * (size_t)n * sizeof(float)), *got = malloc(2 * (size_t)n * sizeof(float));
	char msg_cpu[512] = "", msg_gpu[512] = "";
	int ok = optimiser_case(cpu, want, n, msg_cpu, sizeof msg_cpu) == DF_OK &&
	         optimiser_case(gpu, got, n, msg_gpu, sizeof msg_gpu) == DF_OK;
	const double e = ok ? normwise(got, want, 2 * n) : INFINITY;
	ok = ok && e <= tolerance && !strcmp(msg_cpu, msg_gpu);
	printf("%-30s %12.3g %12s  %s\n", "clip + adamw + ema + finite", e, "-", ok ? "ok" : "FAIL");
	if (strcmp(msg_cpu, msg_gpu))
		printf("  check messages differ: cpu \"%s\", cuda \"%s\"\n", msg_cpu, msg_gpu);
	free(want);
	free(got);
	return ok;
}

static int run_ops(df_ctx *cpu, df_ctx *gpu)
{
	int failed = 0;
	const int n = (int)(sizeof cases / sizeof cases[0]);
	printf("%-30s %12s %12s  %s\n", "op", "out err", "grad err", "result");
	for (int k = 0; k < n; k++) {
		struct op_result want, got;
		char why[600] = "";
		int rc = run_case(cpu, &cases[k], &want, why, sizeof why);
		if (rc == DF_OK)
			rc = run_case(gpu, &cases[k], &got, why, sizeof why);
		if (rc != DF_OK) {
			printf("%-30s %12s %12s  FAIL (%s)\n", cases[k].name, "-", "-", why);
			failed++;
			result_free(&want);
			continue;
		}
		double e_out = normwise(got.out, want.out, want.out_numel), e_grad = 0.0;
		for (int i = 0; i < cases[k].n_in; i++) {
			double e = normwise(got.grad[i], want.grad[i], want.in_numel[i]);
			e_grad = e > e_grad ? e : e_grad;
		}
		const int ok = e_out <= tolerance && e_grad <= tolerance;
		printf("%-30s %12.3g %12.3g  %s\n", cases[k].name, e_out, e_grad, ok ? "ok" : "FAIL");
		failed += !ok;
		result_free(&want);
		result_free(&got);
	}
	failed += !run_optimiser(cpu, gpu);
	printf("ops: %d of %d within %.0e\n", n + 1 - failed, n + 1, tolerance);
	return failed ? 1 : 0;
}

/* ------------------------------------------------------------------ */
/* DiT training: eps-prediction on a linear beta schedule, AdamW. */

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

struct trainer {
	dit_model *model;
	df_graph *g;
	int64_t batch, step;
	float *x0, *eps, *xt, *t;
	int32_t *y;
	df_adamw_config adamw;
};

/* The model on ctx, from the official initialisation with a nonzero start
 * for the zero-initialised layers (identical on every backend), so that
 * gradients reach every block from the first step. */
static int trainer_open(struct trainer *tr, df_ctx *ctx, const char *model, df_error *err)
{
	memset(tr, 0, sizeof *tr);
	dit_settings s = { model, 0, 0, 0, 0, 4.0, 0 };
	df_backbone_shape shape = { { 4, 32, 32 }, 4, 1000, 1 };
	dit_config cfg;
	int rc = dit_config_resolve(&cfg, &s, &shape, "dit", 0, err);
	if (rc == DF_OK)
		rc = dit_model_create(&tr->model, &cfg, "dit", ctx, err);
	if (rc == DF_OK)
		rc = dit_model_init(tr->model, 0, err);
	if (rc != DF_OK)
		return rc;
	int64_t numel = df_params_numel(tr->model->params);
	float *values = malloc((size_t)numel * sizeof(float));
	if (!values)
		return df_error_set(err, DF_ENOMEM, "trainer: out of memory");
	rc = df_params_read(tr->model->params, values, err);
	for (int64_t i = 0; i < numel && rc == DF_OK; i++)
		if (values[i] == 0.0f)
			values[i] = 0.02f * df_rng_normal(7, 3, 0, (uint64_t)i);
	if (rc == DF_OK)
		rc = df_params_write(tr->model->params, values, err);
	free(values);
	tr->adamw = df_adamw_defaults();
	tr->adamw.lr = 1e-4;
	tr->adamw.weight_decay = 0.0;
	return rc;
}

static void trainer_free_batch(struct trainer *tr)
{
	if (tr->g)
		df_graph_destroy(tr->g);
	free(tr->x0);
	free(tr->eps);
	free(tr->xt);
	free(tr->t);
	free(tr->y);
	tr->g = NULL;
	tr->x0 = tr->eps = tr->xt = tr->t = NULL;
	tr->y = NULL;
}

/* Buffers and a fresh graph for batches of `batch`, from step 0. */
static int trainer_batch(struct trainer *tr, int64_t batch, df_error *err)
{
	trainer_free_batch(tr);
	const int64_t n = batch * 4 * 32 * 32;
	tr->batch = batch;
	tr->step = 0;
	tr->x0 = malloc((size_t)n * sizeof(float));
	tr->eps = malloc((size_t)n * sizeof(float));
	tr->xt = malloc((size_t)n * sizeof(float));
	tr->t = malloc((size_t)batch * sizeof(float));
	tr->y = malloc((size_t)batch * sizeof(int32_t));
	tr->g = df_graph_create(tr->model->ctx, 0);
	if (!tr->x0 || !tr->eps || !tr->xt || !tr->t || !tr->y || !tr->g)
		return df_error_set(err, DF_ENOMEM, "trainer: out of memory");
	return DF_OK;
}

static void trainer_close(struct trainer *tr)
{
	trainer_free_batch(tr);
	if (tr->model)
		dit_model_destroy(tr->model);
}

/* One step; *loss the batch loss before the update. Data and noise are
 * Philox draws keyed by the step, the same on every backend. */
static int trainer_step(struct trainer *tr, float *loss_out, df_error *err)
{
	const int64_t d = 4 * 32 * 32, n = tr->batch * d;
	df_rng_fill_normal(tr->x0, (size_t)n, 11, 0, (uint64_t)tr->step, 0);
	df_rng_fill_normal(tr->eps, (size_t)n, 11, 1, (uint64_t)tr->step, 0);
	for (int64_t i = 0; i < tr->batch; i++) {
		const uint32_t ti = df_rng_u32(11, 2, (uint64_t)tr->step, (uint64_t)i) % 1000;
		tr->y[i] = (int32_t)(df_rng_u32(11, 3, (uint64_t)tr->step, (uint64_t)i) % 1000);
		tr->t[i] = (float)ti;
		double ab = 1.0; /* alpha-bar of the linear schedule 1e-4 .. 0.02 */
		for (uint32_t k = 0; k <= ti; k++)
			ab *= 1.0 - (1e-4 + (0.02 - 1e-4) * k / 999.0);
		for (int64_t j = 0; j < d; j++)
			tr->xt[i * d + j] = (float)(sqrt(ab) * tr->x0[i * d + j] + sqrt(1.0 - ab) * tr->eps[i * d + j]);
	}
	df_graph *g = tr->g;
	df_graph_reset(g);
	df_tensor *x = df_tensor_from_host(g, tr->xt, DF_SHAPE(tr->batch, 4, 32, 32));
	df_tensor *t = df_tensor_from_host(g, tr->t, DF_SHAPE(tr->batch));
	df_tensor *target = df_tensor_from_host(g, tr->eps, DF_SHAPE(tr->batch, 4, 32, 32));
	df_backbone_input in = { sizeof in, x, t, tr->y, NULL, 0, NULL };
	df_tensor *out = NULL;
	int rc = df_graph_status(g, err);
	if (rc == DF_OK)
		rc = dit_model_forward(tr->model, g, &in, &out, err);
	df_tensor *loss = rc == DF_OK ? df_mean(g, df_mse_per_sample(g, out, target)) : NULL;
	if (rc == DF_OK && (rc = df_graph_status(g, err)) == DF_OK) {
		df_params_zero_grad(tr->model->params);
		rc = df_backward(g, loss, err);
	}
	if (rc == DF_OK)
		rc = df_params_adamw_step(tr->model->params, &tr->adamw, tr->step + 1, err);
	if (rc == DF_OK)
		rc = df_tensor_read(loss, loss_out, err); /* also waits for the device */
	tr->step++;
	return rc;
}

/* Losses of `steps` steps of an open trainer at `batch`; seconds per step
 * after the first. */
static int train_steps(struct trainer *tr, int64_t batch, int steps, float *losses, double *step_s, df_error *err)
{
	int rc = trainer_batch(tr, batch, err);
	double t0 = 0.0;
	for (int s = 0; s < steps && rc == DF_OK; s++) {
		if (s == 1)
			t0 = now();
		rc = trainer_step(tr, &losses[s], err);
	}
	*step_s = steps > 1 ? (now() - t0) / (steps - 1) : 0.0;
	return rc;
}

/* The same with a trainer of its own. */
static int train(df_ctx *ctx, const char *model, int64_t batch, int steps, float *losses, double *step_s)
{
	struct trainer tr;
	df_error err = { { 0 } };
	int rc = trainer_open(&tr, ctx, model, &err);
	if (rc == DF_OK)
		rc = train_steps(&tr, batch, steps, losses, step_s, &err);
	if (rc != DF_OK)
		fprintf(stderr, "%s on %s: %s\n", model, df_ctx_device(ctx), err.msg);
	trainer_close(&tr);
	return rc;
}

/* A cuda context with the products in bf16 autocast (or not). */
static df_ctx *cuda_context(int bf16)
{
	df_ctx *ctx = NULL;
	df_error err = { { 0 } };
	setenv("DIFFUSE_CUDA_AUTOCAST", bf16 ? "bf16" : "off", 1);
	if (df_ctx_create(&ctx, "cuda", 0, &err) != DF_OK)
		fprintf(stderr, "%s\n", err.msg);
	return ctx;
}

/* The CPU reference of the DiT-S/2 check, written to `path` (one loss a
 * line, then the seconds per step), so run.sh can compute it on the host's
 * cores while the GPU checks run. */
static int run_dit_cpu(df_ctx *cpu, int steps, int64_t batch, const char *path)
{
	float *loss = calloc((size_t)steps, sizeof(float));
	double step_s = 0;
	int rc = train(cpu, "DiT-S/2", batch, steps, loss, &step_s);
	FILE *f = rc == DF_OK ? fopen(path, "w") : NULL;
	if (f) {
		for (int s = 0; s < steps; s++)
			fprintf(f, "%.9g\n", loss[s]);
		fprintf(f, "%.6f\n", step_s);
		rc = fclose(f) == 0 ? DF_OK : DF_EIO;
	} else if (rc == DF_OK) {
		fprintf(stderr, "%s: cannot write\n", path);
		rc = DF_EIO;
	}
	free(loss);
	return rc == DF_OK ? 0 : 1;
}

/* The CPU losses of run_dit_cpu (or, without a file, computed here). */
static int cpu_losses(df_ctx *cpu, int steps, int64_t batch, const char *path, float *loss, double *step_s)
{
	if (!path)
		return train(cpu, "DiT-S/2", batch, steps, loss, step_s);
	FILE *f = fopen(path, "r");
	int got = 0;
	if (f) {
		while (got < steps && fscanf(f, "%f", &loss[got]) == 1)
			got++;
		if (fscanf(f, "%lf", step_s) != 1)
			got = 0;
		fclose(f);
	}
	if (got != steps)
		fprintf(stderr, "%s: no CPU reference of %d steps\n", path, steps);
	return got == steps ? DF_OK : DF_EIO;
}

/* DiT-S/2 on the CPU, on CUDA in float32 and in bf16 autocast. */
static int run_dit(df_ctx *cpu, int steps, int64_t batch, const char *cpu_path)
{
	float *loss[3];
	double step_s[3] = { 0, 0, 0 };
	const char *names[3] = { "cpu", "cuda fp32", "cuda bf16" };
	int rc = DF_OK;
	for (int k = 0; k < 3; k++)
		loss[k] = calloc((size_t)steps, sizeof(float));
	for (int k = 1; k < 3 && rc == DF_OK; k++) {
		df_ctx *ctx = cuda_context(k == 2);
		rc = ctx ? train(ctx, "DiT-S/2", batch, steps, loss[k], &step_s[k]) : DF_ENOTSUP;
		if (ctx)
			df_ctx_destroy(ctx);
	}
	if (rc == DF_OK)
		rc = cpu_losses(cpu, steps, batch, cpu_path, loss[0], &step_s[0]);
	int ok = rc == DF_OK;
	if (ok) {
		printf("%-6s %14s %14s %14s\n", "step", names[0], names[1], names[2]);
		for (int s = 0; s < steps; s++)
			if (s < 3 || s == steps - 1 || s % 5 == 4)
				printf("%-6d %14.7f %14.7f %14.7f\n", s + 1, loss[0][s], loss[1][s], loss[2][s]);
		for (int k = 1; k < 3; k++) {
			const float want = loss[0][steps - 1], got = loss[k][steps - 1];
			const double rel = fabs((double)got - want) / fabs((double)want);
			const int good = rel <= 1e-2 && isfinite(got);
			printf("DiT-S/2 batch %lld, %d steps, %s: final loss rel diff %.2e against cpu (limit 1e-2): %s\n",
			       (long long)batch, steps, names[k], rel, good ? "ok" : "FAIL");
			ok = ok && good;
		}
		printf("DiT-S/2 step time: cpu %.3f s, cuda fp32 %.4f s, cuda bf16 %.4f s\n", step_s[0], step_s[1],
		       step_s[2]);
	}
	for (int k = 0; k < 3; k++)
		free(loss[k]);
	return ok ? 0 : 1;
}

/* ------------------------------------------------------------------ */
/* Throughput on the device alone. */

/* Measured float32 (or TF32) GEMM rate through the backend, FLOP/s. */
static double gemm_rate(df_ctx *ctx)
{
	const int64_t m = 8192;
	df_graph *g = df_graph_create(ctx, DF_GRAPH_NO_GRAD);
	df_tensor *a = df_tensor_zeros(g, DF_SHAPE(m, m)), *b = df_tensor_zeros(g, DF_SHAPE(m, m));
	float probe;
	df_error err = { { 0 } };
	double best = 0.0;
	for (int rep = 0; rep < 4; rep++) {
		const double t0 = now();
		df_tensor *c = df_matmul(g, a, b, 0, 0);
		if (!c || df_tensor_read(df_reshape(g, df_slice(g, df_reshape(g, c, DF_SHAPE(m * m)), 0, 0, 1),
		                                    DF_SHAPE(1)),
		                         &probe, &err) != DF_OK)
			break;
		const double rate = 2.0 * (double)m * m * m / (now() - t0);
		best = rep > 0 && rate > best ? rate : best;
	}
	df_graph_destroy(g);
	return best;
}

/* Training FLOPs of one image: 3x the forward's matmul and attention
 * FLOPs (adaLN, embedders and the final layer included). */
static double dit_train_flops(const dit_config *c)
{
	const double D = c->hidden, T = c->tokens, H = c->mlp_hidden, P = c->patch;
	const double per_block = T * (2.0 * D * 3 * D + 2.0 * D * D + 2.0 * 2 * D * H) + 2.0 * 2 * T * T * D +
	                         2.0 * D * 6 * D;
	const double rest = T * 2.0 * (c->in_channels * P * P) * D + T * 2.0 * D * (P * P * c->final_channels) +
	                    2.0 * D * 2 * D + 2.0 * (256 * D + D * D);
	return 3.0 * (c->depth * per_block + rest);
}

static int run_throughput(df_ctx *gpu, const char *model, int64_t batch)
{
	/* MFU against the GEMM rate of the same precision. */
	const double rate = gemm_rate(gpu);
	const char *autocast = getenv("DIFFUSE_CUDA_AUTOCAST");
	const char *precision = autocast && !strcmp(autocast, "bf16") ? "bf16" : "fp32";
	int64_t tries[] = { batch, 256, 128, 96, 64, 48, 32, 16, 8 };
	struct trainer tr;
	df_error err = { { 0 } };
	if (trainer_open(&tr, gpu, model, &err) != DF_OK) {
		fprintf(stderr, "%s: %s\n", model, err.msg);
		trainer_close(&tr);
		return 1;
	}
	for (size_t k = 0; k < sizeof tries / sizeof tries[0]; k++) {
		if (tries[k] <= 0 || (k > 0 && batch > 0 && tries[k] >= batch))
			continue;
		float loss[6];
		double step_s = 0;
		if (train_steps(&tr, tries[k], 6, loss, &step_s, &err) != DF_OK) {
			printf("%s batch %lld: %s; trying a smaller batch\n", model, (long long)tries[k], err.msg);
			continue; /* most likely out of memory */
		}
		const dit_config *cfg = &tr.model->cfg;
		const double ips = (double)tries[k] / step_s, flops = dit_train_flops(cfg) * ips;
		printf("%s %s batch %lld: %.1f images/s, %.1f TFLOP/s, MFU %.1f%% of the measured GEMM rate "
		       "%.1f TFLOP/s\n",
		       model, precision, (long long)tries[k], ips, flops / 1e12, rate > 0 ? 100.0 * flops / rate : 0.0,
		       rate / 1e12);
		printf("RESULT diffuse %s-%s %lld %.2f %.2f %.2f\n", model, precision, (long long)tries[k], ips,
		       flops / 1e12, rate / 1e12);
		trainer_close(&tr);
		return 0;
	}
	trainer_close(&tr);
	printf("%s: no batch size trained on this device\n", model);
	return 1;
}

/* The worst normwise error over the tensors two files share, against
 * tol; a tensor of a missing from b, or of another size, fails. */
static int compare_files(const char *path_a, const char *path_b, double tol, const char *prefix)
{
	df_safetensors *a = NULL, *b = NULL;
	df_error err = { { 0 } };
	if (df_safetensors_open(&a, path_a, &err) || df_safetensors_open(&b, path_b, &err)) {
		fprintf(stderr, "%s\n", err.msg);
		df_safetensors_close(a);
		return 1;
	}
	double worst = 0.0;
	const char *worst_name = "(none)";
	int rc = 0, compared = 0;
	for (size_t i = 0; i < df_safetensors_count(a) && !rc; i++) {
		const df_safetensors_tensor *ta = df_safetensors_tensor_at(a, i);
		if (strncmp(ta->name, prefix, strlen(prefix)) != 0 || ta->dtype != DF_ST_F32)
			continue;
		const df_safetensors_tensor *tb = df_safetensors_find(b, ta->name);
		if (!tb || tb->nelem != ta->nelem) {
			fprintf(stderr, "compare: %s: missing from %s or of another size\n", ta->name, path_b);
			rc = 1;
			break;
		}
		float *va = malloc(ta->nelem * sizeof *va), *vb = malloc(ta->nelem * sizeof *vb);
		if (!va || !vb || df_safetensors_read_f32(a, ta, va, ta->nelem, &err) ||
		    df_safetensors_read_f32(b, tb, vb, tb->nelem, &err)) {
			fprintf(stderr, "compare: %s: cannot read\n", ta->name);
			rc = 1;
		}
		double diff = 0.0, scale = 0.0;
		for (size_t k = 0; !rc && k < ta->nelem; k++) {
			double d = fabs((double)va[k] - (double)vb[k]);
			diff = d > diff || isnan(d) ? d : diff;
			scale = fabs((double)va[k]) > scale ? fabs((double)va[k]) : scale;
		}
		double e = scale > 0 ? diff / scale : diff;
		if (!rc && (e > worst || isnan(e))) {
			worst = e;
			worst_name = ta->name;
		}
		compared += !rc;
		free(va);
		free(vb);
	}
	if (!rc && compared == 0) {
		fprintf(stderr, "compare: no float tensor named %s* in %s\n", prefix, path_a);
		rc = 1;
	}
	if (!rc)
		printf("compare %s %s: %d tensors, worst normwise error %.3g (%s), tolerance %.3g: %s\n", path_a,
		       path_b, compared, worst, worst_name, tol, worst <= tol ? "ok" : "FAIL");
	df_safetensors_close(a);
	df_safetensors_close(b);
	return rc || !(worst <= tol);
}

int main(int argc, char **argv)
{
	const char *mode = argc > 1 ? argv[1] : "ops";
	if (!strcmp(mode, "compare") && argc > 4)
		return compare_files(argv[2], argv[3], atof(argv[4]), argc > 5 ? argv[5] : "");
	df_ctx *cpu = NULL, *gpu = NULL;
	df_error err = { { 0 } };
	/* DIFFUSE_TEST_DEVICE=cpu checks the harness itself (cpu against cpu). */
	const char *device = getenv("DIFFUSE_TEST_DEVICE") ? getenv("DIFFUSE_TEST_DEVICE") : "cuda";
	if (df_ctx_create(&gpu, device, 0, &err) != DF_OK) {
		printf("skip: %s\n", err.msg);
		return SKIP;
	}
	if (df_ctx_create(&cpu, "cpu", 0, &err) != DF_OK) {
		fprintf(stderr, "%s\n", err.msg);
		return 1;
	}
	const char *tf32 = getenv("DIFFUSE_CUDA_TF32");
	const char *autocast = getenv("DIFFUSE_CUDA_AUTOCAST");
	if (tf32 && !strcmp(tf32, "1"))
		tolerance = 3e-4;
	if (autocast && !strcmp(autocast, "bf16"))
		tolerance = 1e-2;
	printf("%s\n%s\n", df_ctx_describe(gpu), df_ctx_describe(cpu));
	int rc;
	if (!strcmp(mode, "ops"))
		rc = run_ops(cpu, gpu);
	else if (!strcmp(mode, "dit"))
		rc = run_dit(cpu, argc > 2 ? atoi(argv[2]) : 20, argc > 3 ? atoll(argv[3]) : 64, argc > 4 ? argv[4] : NULL);
	else if (!strcmp(mode, "dit-cpu") && argc > 4)
		rc = run_dit_cpu(cpu, atoi(argv[2]), atoll(argv[3]), argv[4]);
	else if (!strcmp(mode, "throughput"))
		rc = run_throughput(gpu, argc > 2 ? argv[2] : "DiT-XL/2", argc > 3 ? atoll(argv[3]) : 0);
	else {
		fprintf(stderr, "usage: test_cuda_ops [ops | dit [steps] [batch] [cpu-file] | dit-cpu steps batch file |\n"
		                "                      throughput [model] [batch] | compare a b tol [prefix]]\n");
		rc = 2;
	}
	df_ctx_destroy(cpu);
	df_ctx_destroy(gpu);
	return rc;
}
