/* Multi-head scaled-dot-product attention.
 *
 * Memory: the forward keeps only the logsumexp of each score row (n heads
 * tq floats); the backward recomputes the scores S = scale Q K^T of one
 * block of query rows at a time and rebuilds P = exp(S - lse) from them.
 * Keeping P for backward would cost n heads tq tk floats per layer (12.6 MB
 * a layer for DiT-S at 256 tokens and batch 8, 2 GB a layer for DiT-XL at
 * 1024 tokens and batch 32); the recomputation costs one extra sgemm of
 * the six (dV, dP, dQ, dK and the two forward ones), which is cheaper than
 * the memory traffic of reading P back.
 *
 * Work: one task per (sample, head), query rows in blocks of QBLOCK so the
 * score block stays in L2; each thread runs single-threaded sgemm on its
 * task (fewer tasks than threads: they run in turn on one thread). Each task writes its own rows and its
 * own head's columns of dq, dk and dv, so there are no races and the
 * result does not depend on the thread count. */
#include "config.h"
#include <math.h>
#include <cblas.h>
#include <omp.h>
#include "cpu.h"
#include "vmath.h"

#define QBLOCK 256

static int64_t qblock(const struct df_attn_shape *s)
{
	return s->tq < QBLOCK ? s->tq : QBLOCK;
}

/* Score blocks: P and dP, each QBLOCK x tk, per thread. */
static size_t cpu_attention_workspace(const df_backend *be, const struct df_attn_shape *s)
{
	return (size_t)be->threads * 2 * (size_t)qblock(s) * (size_t)s->tk * sizeof(float);
}

/* Tasks run one per thread when there are enough of them. */
static int task_parallel(const df_backend *be, const struct df_attn_shape *s)
{
	dfi_cpu_blas_single_thread();
	return be->threads > 1 && s->n * s->heads >= be->threads;
}

/* The calling thread's two score blocks. */
static float *thread_blocks(const struct df_attn_shape *s, void *workspace, int parallel)
{
	return (float *)workspace + (size_t)(parallel ? omp_get_thread_num() : 0) * 2 * qblock(s) * s->tk;
}

/* S = scale Q K^T for query rows [r0, r0 + rows) of one (sample, head). */
static void scores(const struct df_attn_shape *s, float *S, const float *qh, const float *kh, int64_t rows)
{
	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows, (int)s->tk, (int)s->head_dim, s->scale, qh,
	            (int)s->ldq, kh, (int)s->ldk, 0.0f, S, (int)s->tk);
}

/* Row-wise work on a score block, built per instruction set (the OpenMP
 * task loops themselves are baseline code). */

/* P = softmax of each row of S in place; lse[r] = logsumexp of row r. */
DFI_CPU_CLONES static void softmax_rows(float *P, int64_t rows, int64_t tk, float *lse)
{
	for (int64_t r = 0; r < rows; r++) {
		float *p = P + r * tk, mx = -INFINITY, sum = 0.0f;
#pragma omp simd reduction(max : mx)
		for (int64_t j = 0; j < tk; j++)
			mx = p[j] > mx ? p[j] : mx;
#pragma omp simd reduction(+ : sum)
		for (int64_t j = 0; j < tk; j++) {
			p[j] = dfi_expf(p[j] - mx);
			sum += p[j];
		}
		float inv = 1.0f / sum;
#pragma omp simd
		for (int64_t j = 0; j < tk; j++)
			p[j] *= inv;
		if (lse)
			lse[r] = mx + logf(sum);
	}
}

/* P = exp(S - lse) in place: the forward's probabilities again. */
DFI_CPU_CLONES static void probabilities(float *P, int64_t rows, int64_t tk, const float *lse)
{
	for (int64_t r = 0; r < rows; r++) {
		float *p = P + r * tk, l = lse[r];
#pragma omp simd
		for (int64_t j = 0; j < tk; j++)
			p[j] = dfi_expf(p[j] - l);
	}
}

/* dS = P (dP - rowsum(dO o O)) in place of dP; dO and O rows of ldo. */
DFI_CPU_CLONES static void score_gradients(float *dP, const float *P, int64_t rows, int64_t tk, const float *dout,
                                           const float *out, int64_t ldo, int64_t hd)
{
	for (int64_t r = 0; r < rows; r++) {
		const float *go = dout + r * ldo, *o = out + r * ldo;
		float di = 0.0f;
#pragma omp simd reduction(+ : di)
		for (int64_t c = 0; c < hd; c++)
			di += go[c] * o[c];
		const float *p = P + r * tk;
		float *dp = dP + r * tk;
#pragma omp simd
		for (int64_t j = 0; j < tk; j++)
			dp[j] = p[j] * (dp[j] - di);
	}
}

static void cpu_attention_forward(const df_backend *be, const struct df_attn_shape *s, float *out, float *lse,
                                  const float *q, const float *k, const float *v, void *workspace)
{
	int64_t tasks = s->n * s->heads, qb = qblock(s), tk = s->tk, hd = s->head_dim;
	int parallel = task_parallel(be, s);
#pragma omp parallel for num_threads(be->threads) schedule(static) if (parallel)
	for (int64_t task = 0; task < tasks; task++) {
		int64_t b = task / s->heads, h = task % s->heads;
		float *P = thread_blocks(s, workspace, parallel);
		const float *kh = k + b * s->tk * s->ldk + h * hd, *vh = v + b * s->tk * s->ldv + h * hd;
		for (int64_t r0 = 0; r0 < s->tq; r0 += qb) {
			int64_t rows = s->tq - r0 < qb ? s->tq - r0 : qb;
			const float *qh = q + (b * s->tq + r0) * s->ldq + h * hd;
			scores(s, P, qh, kh, rows);
			softmax_rows(P, rows, tk, lse ? lse + (b * s->heads + h) * s->tq + r0 : NULL);
			float *oh = out + (b * s->tq + r0) * s->ldo + h * hd;
			cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)rows, (int)hd, (int)tk, 1.0f, P, (int)tk,
			            vh, (int)s->ldv, 0.0f, oh, (int)s->ldo);
		}
	}
}

static void cpu_attention_backward(const df_backend *be, const struct df_attn_shape *s, float *dq, float *dk,
                                   float *dv, const float *dout, const float *out, const float *lse, const float *q,
                                   const float *k, const float *v, void *workspace)
{
	int64_t tasks = s->n * s->heads, qb = qblock(s), tk = s->tk, hd = s->head_dim;
	int parallel = task_parallel(be, s);
#pragma omp parallel for num_threads(be->threads) schedule(static) if (parallel)
	for (int64_t task = 0; task < tasks; task++) {
		int64_t b = task / s->heads, h = task % s->heads;
		float *P = thread_blocks(s, workspace, parallel);
		float *dP = P + qb * tk;
		int64_t koff = b * s->tk * s->ldk + h * hd, voff = b * s->tk * s->ldv + h * hd;
		for (int64_t r0 = 0; r0 < s->tq; r0 += qb) {
			int64_t rows = s->tq - r0 < qb ? s->tq - r0 : qb;
			int64_t qoff = (b * s->tq + r0) * s->ldq + h * hd, ooff = (b * s->tq + r0) * s->ldo + h * hd;
			const float *row_lse = lse + (b * s->heads + h) * s->tq + r0;
			scores(s, P, q + qoff, k + koff, rows);
			probabilities(P, rows, tk, row_lse);
			if (dv) /* dV (tk, hd) += P^T dO */
				cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)tk, (int)hd, (int)rows, 1.0f, P,
				            (int)tk, dout + ooff, (int)s->ldo, 1.0f, dv + voff, (int)s->ldv);
			if (!dq && !dk)
				continue;
			/* dP = dO V^T; dS = P (dP - rowsum(dO o O)) */
			cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows, (int)tk, (int)hd, 1.0f, dout + ooff,
			            (int)s->ldo, v + voff, (int)s->ldv, 0.0f, dP, (int)tk);
			score_gradients(dP, P, rows, tk, dout + ooff, out + ooff, s->ldo, hd);
			if (dq) /* dQ (rows, hd) += scale dS K */
				cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)rows, (int)hd, (int)tk, s->scale, dP,
				            (int)tk, k + koff, (int)s->ldk, 1.0f, dq + qoff, (int)s->ldq);
			if (dk) /* dK (tk, hd) += scale dS^T Q */
				cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)tk, (int)hd, (int)rows, s->scale, dP,
				            (int)tk, q + qoff, (int)s->ldq, 1.0f, dk + koff, (int)s->ldk);
		}
	}
}

void dfi_cpu_install_attention(df_backend *be)
{
	be->attention_workspace = cpu_attention_workspace;
	be->attention_forward = cpu_attention_forward;
	be->attention_backward = cpu_attention_backward;
}
