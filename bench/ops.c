/* Op throughput on the CPU backend against raw OpenBLAS sgemm and memcpy
 * measured in the same run. One line per case:
 *   name GFLOP/s ratio_to_sgemm      (matrix products; FLOPs of the sgemms)
 *   name GB/s ratio_to_memcpy        (pointwise and normalisation ops)
 * Each figure is the best of several runs, so other load on the machine
 * shows up as little as possible. Kernels are called through the backend
 * table, as the op layer calls them. */
#include "config.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cblas.h>
#include "diffuse/tensor.h"
#include "../sdk/src/core.h"

#pragma weak df_softmax /* measured when the build has it */

/* Many short runs: on a shared machine, the best of them is the one that
 * ran undisturbed. */
#define RUNS 40

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

typedef void (*bench_fn)(void *arg);

/* The reference sgemms run on OpenBLAS's own threads, as a plain caller
 * would use them; the library keeps OpenBLAS at one thread and splits work
 * with OpenMP, so the setting is switched around each reference run. */
static int reference_threads = 1;

static double time_reps(bench_fn fn, void *arg, int reps)
{
	double t0 = now();
	for (int i = 0; i < reps; i++)
		fn(arg);
	return (now() - t0) / reps;
}

/* Best times of RUNS runs of `reps` calls each of the reference and the op,
 * alternating so both see the same load, after one warm-up call each. */
static void best_times(bench_fn ref_fn, bench_fn op_fn, void *arg, int reps, int runs, double *ref, double *op)
{
	openblas_set_num_threads(reference_threads);
	ref_fn(arg);
	openblas_set_num_threads(1);
	op_fn(arg);
	*ref = *op = 1e30;
	for (int r = 0; r < runs; r++) {
		openblas_set_num_threads(reference_threads);
		double t = time_reps(ref_fn, arg, reps);
		openblas_set_num_threads(1);
		*ref = t < *ref ? t : *ref;
		t = time_reps(op_fn, arg, reps);
		*op = t < *op ? t : *op;
	}
}

static float *buffer(size_t n)
{
	float *p = NULL;
	if (posix_memalign((void **)&p, 64, n * sizeof(float)))
		exit(1);
	for (size_t i = 0; i < n; i++)
		p[i] = (float)((i * 2654435761u) % 1000) / 1000.0f - 0.5f;
	return p;
}

/* ---------------------------------------------------------------- */

struct linear_case {
	const df_backend *be;
	int64_t m, in, o;
	float *x, *w, *b, *out, *dout, *dx, *dw, *db;
};

static void linear_op(void *arg)
{
	struct linear_case *c = arg;
	c->be->linear_forward(c->be, c->out, c->x, c->w, c->b, c->m, c->in, c->o);
	c->be->linear_backward(c->be, c->dx, c->dw, c->db, c->dout, c->x, c->w, c->m, c->in, c->o);
}

static void linear_ref(void *arg)
{
	struct linear_case *c = arg;
	int m = (int)c->m, k = (int)c->in, n = (int)c->o;
	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, k, 1.0f, c->x, k, c->w, k, 0.0f, c->out, n);
	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, k, n, 1.0f, c->dout, n, c->w, k, 1.0f, c->dx, k);
	cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, n, k, m, 1.0f, c->dout, n, c->x, k, 1.0f, c->dw, k);
}

static void bench_linear(const df_backend *be, const char *name, int64_t m, int64_t in, int64_t o)
{
	struct linear_case c = {be, m, in, o, buffer((size_t)(m * in)), buffer((size_t)(o * in)), buffer((size_t)o),
	                        buffer((size_t)(m * o)), buffer((size_t)(m * o)), buffer((size_t)(m * in)),
	                        buffer((size_t)(o * in)), buffer((size_t)o)};
	double flops = 3.0 * 2.0 * (double)m * (double)in * (double)o;
	double ref, op;
	best_times(linear_ref, linear_op, &c, 1, RUNS, &ref, &op);
	printf("%-34s %8.1f GFLOP/s %5.2f   (sgemm %.1f GFLOP/s)\n", name, flops / op * 1e-9, ref / op,
	       flops / ref * 1e-9);
	free(c.x), free(c.w), free(c.b), free(c.out), free(c.dout), free(c.dx), free(c.dw), free(c.db);
}

/* ---------------------------------------------------------------- */

struct attn_case {
	const df_backend *be;
	struct df_attn_shape s;
	float *q, *k, *v, *out, *lse, *dout, *dq, *dk, *dv, *ref_s, *ref_ds;
	void *ws;
};

static void attn_op(void *arg)
{
	struct attn_case *c = arg;
	c->be->attention_forward(c->be, &c->s, c->out, c->lse, c->q, c->k, c->v, c->ws);
	c->be->attention_backward(c->be, &c->s, c->dq, c->dk, c->dv, c->dout, c->out, c->lse, c->q, c->k, c->v, c->ws);
}

/* The six products of attention forward and backward per (sample, head),
 * as raw sgemm calls at the same shapes and strides. */
static void attn_ref(void *arg)
{
	struct attn_case *c = arg;
	const struct df_attn_shape *s = &c->s;
	int tq = (int)s->tq, tk = (int)s->tk, hd = (int)s->head_dim, ld = (int)s->ldq;
	for (int64_t b = 0; b < s->n; b++)
		for (int64_t h = 0; h < s->heads; h++) {
			int64_t off = b * s->tq * ld + h * hd;
			const float *q = c->q + off, *k = c->k + off, *v = c->v + off, *go = c->dout + off;
			cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, tq, tk, hd, 1.0f, q, ld, k, ld, 0.0f, c->ref_s, tk);
			cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, tq, hd, tk, 1.0f, c->ref_s, tk, v, ld, 0.0f,
			            c->out + off, ld);
			cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, tk, hd, tq, 1.0f, c->ref_s, tk, go, ld, 1.0f,
			            c->dv + off, ld);
			cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, tq, tk, hd, 1.0f, go, ld, v, ld, 0.0f, c->ref_ds, tk);
			cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, tq, hd, tk, 1.0f, c->ref_ds, tk, k, ld, 1.0f,
			            c->dq + off, ld);
			cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, tk, hd, tq, 1.0f, c->ref_ds, tk, q, ld, 1.0f,
			            c->dk + off, ld);
		}
}

static void bench_attention(const df_backend *be, const char *name, int64_t n, int64_t t, int64_t heads, int64_t hd)
{
	int64_t d = heads * hd, elems = n * t * d;
	struct attn_case c = {.be = be};
	c.s = (struct df_attn_shape){.n = n, .tq = t, .tk = t, .heads = heads, .head_dim = hd, .ldq = d, .ldk = d,
	                             .ldv = d, .ldo = d, .scale = 0.125f};
	c.q = buffer((size_t)elems), c.k = buffer((size_t)elems), c.v = buffer((size_t)elems);
	c.out = buffer((size_t)elems), c.dout = buffer((size_t)elems), c.dq = buffer((size_t)elems);
	c.dk = buffer((size_t)elems), c.dv = buffer((size_t)elems), c.lse = buffer((size_t)(n * heads * t));
	c.ref_s = buffer((size_t)(t * t)), c.ref_ds = buffer((size_t)(t * t));
	c.ws = malloc(be->attention_workspace(be, &c.s));
	double flops = 6.0 * 2.0 * (double)(n * heads) * (double)t * (double)t * (double)hd;
	double ref, op;
	best_times(attn_ref, attn_op, &c, 1, RUNS, &ref, &op);
	printf("%-34s %8.1f GFLOP/s %5.2f   (sgemm %.1f GFLOP/s; matmul FLOPs only)\n", name, flops / op * 1e-9,
	       ref / op, flops / ref * 1e-9);
	free(c.q), free(c.k), free(c.v), free(c.out), free(c.dout), free(c.dq), free(c.dk), free(c.dv), free(c.lse);
	free(c.ref_s), free(c.ref_ds), free(c.ws);
}

/* ---------------------------------------------------------------- */

struct mem_case {
	const df_backend *be;
	int64_t n, t, d;
	float *x, *out, *dout, *dx, *shift, *scale, *dshift, *dscale, *mean, *rstd;
	size_t copy_bytes;
	df_graph *g;
	df_tensor *tx;
	void (*fn)(struct mem_case *c);
};

static void memcpy_ref(void *arg)
{
	struct mem_case *c = arg;
	memcpy(c->dx, c->x, c->copy_bytes);
}

static void mem_op(void *arg)
{
	struct mem_case *c = arg;
	c->fn(c);
}

static void lnmod_forward(struct mem_case *c)
{
	c->be->layernorm_modulate_forward(c->be, c->out, c->mean, c->rstd, c->x, c->shift, c->scale, c->n, c->t, c->d,
	                                  1e-6f);
}

static void lnmod_backward(struct mem_case *c)
{
	c->be->layernorm_modulate_backward(c->be, c->dx, c->dshift, c->dscale, c->dout, c->x, c->scale, c->mean,
	                                   c->rstd, c->n, c->t, c->d);
}

static void gelu_forward(struct mem_case *c)
{
	c->be->gelu_forward(c->be, c->out, c->x, c->n * c->t * c->d, 1);
}

static void gelu_backward(struct mem_case *c)
{
	c->be->gelu_backward(c->be, c->dx, c->dout, c->x, c->n * c->t * c->d, 1);
}

static void softmax_forward(struct mem_case *c)
{
	df_graph_reset(c->g);
	df_softmax(c->g, c->tx);
}

/* bytes: the tensor traffic of one call (each full-size tensor read or
 * written once); memcpy moves the same number of bytes (half read, half
 * written). */
static void bench_memory(struct mem_case *c, const char *name, void (*fn)(struct mem_case *), int tensors)
{
	size_t elems = (size_t)(c->n * c->t * c->d), bytes = (size_t)tensors * elems * sizeof(float);
	c->fn = fn;
	c->copy_bytes = bytes / 2;
	double ref, op;
	best_times(memcpy_ref, mem_op, c, 1, 5 * RUNS, &ref, &op); /* cheap: more tries */
	printf("%-34s %8.1f GB/s    %5.2f   (memcpy %.1f GB/s)\n", name, (double)bytes / op * 1e-9, ref / op,
	       (double)bytes / ref * 1e-9);
}

int main(int argc, char **argv)
{
	df_ctx *ctx;
	df_error err;
	int threads = argc > 1 ? atoi(argv[1]) : 0; /* default: physical cores */
	if (df_ctx_create(&ctx, "cpu", threads, &err)) {
		fprintf(stderr, "bench: %s\n", err.msg);
		return 1;
	}
	const df_backend *be = &ctx->backend;
	reference_threads = be->threads;
	printf("# %s\n", df_ctx_describe(ctx));
	double load[3];
	if (getloadavg(load, 3) == 3)
		printf("# load average %.2f (other work on the machine lowers every figure)\n", load[0]);
	printf("# linear: forward + backward (dx, dW, db) vs the three sgemms; attention: forward + backward\n");
	bench_linear(be, "linear 2048x384->1536 fwd+bwd", 2048, 384, 1536);
	bench_linear(be, "linear 2048x1536->384 fwd+bwd", 2048, 1536, 384);
	bench_attention(be, "attention 8x256 6x64 fwd+bwd", 8, 256, 6, 64);

	struct mem_case c = {.be = be, .n = 8, .t = 256, .d = 384};
	size_t big = (size_t)8 * 256 * 1536;
	c.x = buffer(big), c.out = buffer(big), c.dout = buffer(big), c.dx = buffer(2 * big);
	c.shift = buffer((size_t)(8 * 384)), c.scale = buffer((size_t)(8 * 384));
	c.dshift = buffer((size_t)(8 * 384)), c.dscale = buffer((size_t)(8 * 384));
	c.mean = buffer((size_t)(8 * 256)), c.rstd = buffer((size_t)(8 * 256));
	lnmod_forward(&c); /* real statistics for the backward */
	bench_memory(&c, "layernorm_modulate 8x256x384 fwd", lnmod_forward, 2);
	bench_memory(&c, "layernorm_modulate 8x256x384 bwd", lnmod_backward, 4);
	c.d = 1536;
	bench_memory(&c, "gelu_tanh 8x256x1536 fwd", gelu_forward, 2);
	bench_memory(&c, "gelu_tanh 8x256x1536 bwd", gelu_backward, 4);
	if (df_softmax) {
		c.g = df_graph_create(ctx, DF_GRAPH_NO_GRAD);
		c.d = 256;
		c.n = 8 * 6;
		c.tx = df_tensor_from_host(c.g, c.x, DF_SHAPE(8 * 6 * 256, 256));
		bench_memory(&c, "softmax 12288x256 fwd (op)", softmax_forward, 2);
		df_graph_destroy(c.g);
	} else {
		printf("%-34s (not in this build)\n", "softmax");
	}
	free(c.x), free(c.out), free(c.dout), free(c.dx), free(c.shift), free(c.scale), free(c.dshift), free(c.dscale), free(c.mean), free(c.rstd);
	df_ctx_destroy(ctx);
	return 0;
}
