/* Attention through cuDNN's fused scaled-dot-product attention (flash), by
 * the backend graph API of cudnn_graph.h (plain C: the C++ frontend is not
 * needed). Its operation descriptors SDPA_FWD and SDPA_BWD take the whole
 * attention, so the graph is one node each way.
 *
 * The fused kernels read and write bf16 (fp16, fp8) only, never float32,
 * so this path serves bf16 autocast: q, k and v are packed into bf16, O
 * comes back as float32 and dQ, dK, dV are added to the float32 gradients
 * (the backend's accumulate contract). The statistics cuDNN saves are the
 * natural-log logsumexp of the scaled scores per query row, (n, heads, tq)
 * float32: what the plain path saves as lse, in the same layout.
 *
 * A shape is served only when both plans (forward and backward) build, so
 * the two directions of one shape always take the same path; every
 * function returns 0 when this path declines and cuda.cu runs the plain
 * one. Plans are built once per shape and kept for the process. */
#include "config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cuda_bf16.h>
#include <cudnn.h>

#include "cuda_private.h"

/* Unique ids of the tensors of both graphs. */
enum { UID_Q = 1, UID_K, UID_V, UID_O, UID_STATS, UID_SCALE, UID_DO, UID_DQ, UID_DK, UID_DV };

/* The head dims the fused kernels take on sm_90 for both directions. */
#define SDPA_MAX_HEAD_DIM 128
#define SDPA_PLANS 32

struct sdpa_plan {
	int64_t n, tq, tk, heads, hd;
	int usable;
	cudnnBackendDescriptor_t fwd, bwd;
	int64_t fwd_bytes, bwd_bytes; /* cuDNN's own workspace */
};

static struct sdpa_plan plans[SDPA_PLANS];
static int plan_count;
static cudnnHandle_t handle;
static int handle_state; /* 0 untried, 1 ready, -1 unavailable */

static void sdpa_report(const char *what, cudnnStatus_t st)
{
	fprintf(stderr, "diffuse cuda: fused attention: %s: %s; the plain path runs\n", what, cudnnGetErrorString(st));
}

int dfi_sdpa_requested(void)
{
	const char *mode = getenv("DIFFUSE_CUDA_ATTENTION");
	return mode && !strcmp(mode, "fused");
}

static int ready(void)
{
	if (handle_state == 0) {
		cudnnStatus_t st = cudnnCreate(&handle);
		if (st == CUDNN_STATUS_SUCCESS)
			st = cudnnSetStream(handle, dfi_cuda.stream);
		handle_state = st == CUDNN_STATUS_SUCCESS ? 1 : -1;
		if (st != CUDNN_STATUS_SUCCESS)
			sdpa_report("cudnnCreate", st);
	}
	return handle_state == 1;
}

static cudnnStatus_t set(cudnnBackendDescriptor_t d, cudnnBackendAttributeName_t name, cudnnBackendAttributeType_t type,
                         int64_t count, const void *value)
{
	return cudnnBackendSetAttribute(d, name, type, count, value);
}

static cudnnStatus_t set_desc(cudnnBackendDescriptor_t d, cudnnBackendAttributeName_t name,
                              cudnnBackendDescriptor_t value)
{
	return cudnnBackendSetAttribute(d, name, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &value);
}

/* A finalized tensor descriptor, or NULL. The descriptors of a plan live as
 * long as the process (the plans are kept), so none is destroyed. */
static cudnnBackendDescriptor_t tensor(int64_t uid, cudnnDataType_t type, const int64_t dims[4],
                                       const int64_t strides[4], bool by_value)
{
	cudnnBackendDescriptor_t d = NULL;
	if (cudnnBackendCreateDescriptor(CUDNN_BACKEND_TENSOR_DESCRIPTOR, &d) != CUDNN_STATUS_SUCCESS)
		return NULL;
	const int64_t alignment = by_value ? 4 : 16;
	cudnnStatus_t st = set(d, CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &uid);
	if (st == CUDNN_STATUS_SUCCESS)
		st = set(d, CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &type);
	if (st == CUDNN_STATUS_SUCCESS)
		st = set(d, CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1, &alignment);
	if (st == CUDNN_STATUS_SUCCESS)
		st = set(d, CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, 4, dims);
	if (st == CUDNN_STATUS_SUCCESS)
		st = set(d, CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, 4, strides);
	if (st == CUDNN_STATUS_SUCCESS && by_value)
		st = set(d, CUDNN_ATTR_TENSOR_IS_BY_VALUE, CUDNN_TYPE_BOOLEAN, 1, &by_value);
	if (st == CUDNN_STATUS_SUCCESS)
		st = cudnnBackendFinalize(d);
	if (st != CUDNN_STATUS_SUCCESS) {
		cudnnBackendDestroyDescriptor(d);
		return NULL;
	}
	return d;
}

/* q, o, dq, do: (n, heads, tq, hd) over packed rows (n, tq, heads hd);
 * k, v likewise over tk. */
static cudnnBackendDescriptor_t rows(int64_t uid, int64_t n, int64_t t, int64_t heads, int64_t hd)
{
	const int64_t dims[4] = {n, heads, t, hd}, strides[4] = {t * heads * hd, hd, heads * hd, 1};
	return tensor(uid, CUDNN_DATA_BFLOAT16, dims, strides, false);
}

/* A finalized execution plan of a one-node graph, its workspace in *bytes;
 * NULL when cuDNN has no engine for it. */
static cudnnBackendDescriptor_t plan_of(cudnnBackendDescriptor_t op, int64_t *bytes)
{
	cudnnBackendDescriptor_t graph = NULL, heur = NULL, plan = NULL;
	cudnnStatus_t st = cudnnBackendFinalize(op);
	if (st == CUDNN_STATUS_SUCCESS)
		st = cudnnBackendCreateDescriptor(CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR, &graph);
	if (st == CUDNN_STATUS_SUCCESS)
		st = set(graph, CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle);
	if (st == CUDNN_STATUS_SUCCESS)
		st = set_desc(graph, CUDNN_ATTR_OPERATIONGRAPH_OPS, op);
	if (st == CUDNN_STATUS_SUCCESS)
		st = cudnnBackendFinalize(graph);
	if (st == CUDNN_STATUS_SUCCESS)
		st = cudnnBackendCreateDescriptor(CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR, &heur);
	const cudnnBackendHeurMode_t mode = CUDNN_HEUR_MODE_A;
	if (st == CUDNN_STATUS_SUCCESS)
		st = set_desc(heur, CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, graph);
	if (st == CUDNN_STATUS_SUCCESS)
		st = set(heur, CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &mode);
	if (st == CUDNN_STATUS_SUCCESS)
		st = cudnnBackendFinalize(heur);
	int64_t count = 0;
	if (st == CUDNN_STATUS_SUCCESS)
		st = cudnnBackendGetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, 0, &count,
		                              NULL);
	if (st != CUDNN_STATUS_SUCCESS || count <= 0)
		return NULL;
	cudnnBackendDescriptor_t configs[8];
	int64_t made = 0, returned = 0;
	count = count < 8 ? count : 8;
	while (made < count && cudnnBackendCreateDescriptor(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR, &configs[made]) ==
	                               CUDNN_STATUS_SUCCESS)
		made++;
	if (made > 0)
		st = cudnnBackendGetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, made,
		                              &returned, configs);
	/* The first configuration that finalizes, in the heuristic's order. */
	for (int64_t i = 0; st == CUDNN_STATUS_SUCCESS && !plan && i < returned && i < made; i++) {
		cudnnBackendDescriptor_t p = NULL;
		if (cudnnBackendCreateDescriptor(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR, &p) != CUDNN_STATUS_SUCCESS)
			break;
		if (set(p, CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle) == CUDNN_STATUS_SUCCESS &&
		    set_desc(p, CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, configs[i]) == CUDNN_STATUS_SUCCESS &&
		    cudnnBackendFinalize(p) == CUDNN_STATUS_SUCCESS)
			plan = p;
		else
			cudnnBackendDestroyDescriptor(p);
	}
	int64_t got = 0;
	*bytes = 0;
	if (plan && cudnnBackendGetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE, CUDNN_TYPE_INT64, 1, &got,
	                                     bytes) != CUDNN_STATUS_SUCCESS) {
		cudnnBackendDestroyDescriptor(plan);
		plan = NULL;
	}
	return plan;
}

/* Both plans of a shape, or usable = 0. */
static void build(struct sdpa_plan *p)
{
	const int64_t n = p->n, tq = p->tq, tk = p->tk, h = p->heads, hd = p->hd;
	const int64_t stats_dims[4] = {n, h, tq, 1}, stats_strides[4] = {h * tq, tq, 1, 1};
	const int64_t one[4] = {1, 1, 1, 1};
	cudnnBackendDescriptor_t q = rows(UID_Q, n, tq, h, hd), k = rows(UID_K, n, tk, h, hd);
	cudnnBackendDescriptor_t v = rows(UID_V, n, tk, h, hd), o = rows(UID_O, n, tq, h, hd);
	cudnnBackendDescriptor_t stats = tensor(UID_STATS, CUDNN_DATA_FLOAT, stats_dims, stats_strides, false);
	cudnnBackendDescriptor_t scale = tensor(UID_SCALE, CUDNN_DATA_FLOAT, one, one, true);
	cudnnBackendDescriptor_t dout = rows(UID_DO, n, tq, h, hd), dq = rows(UID_DQ, n, tq, h, hd);
	cudnnBackendDescriptor_t dk = rows(UID_DK, n, tk, h, hd), dv = rows(UID_DV, n, tk, h, hd);
	p->usable = 0;
	if (!q || !k || !v || !o || !stats || !scale || !dout || !dq || !dk || !dv)
		return;
	cudnnBackendDescriptor_t fwd = NULL, bwd = NULL;
	cudnnStatus_t st = cudnnBackendCreateDescriptor(CUDNN_BACKEND_OPERATION_SDPA_FWD_DESCRIPTOR, &fwd);
	if (st == CUDNN_STATUS_SUCCESS)
		st = set_desc(fwd, CUDNN_ATTR_OPERATION_SDPA_FWD_QDESC, q);
	if (st == CUDNN_STATUS_SUCCESS)
		st = set_desc(fwd, CUDNN_ATTR_OPERATION_SDPA_FWD_KDESC, k);
	if (st == CUDNN_STATUS_SUCCESS)
		st = set_desc(fwd, CUDNN_ATTR_OPERATION_SDPA_FWD_VDESC, v);
	if (st == CUDNN_STATUS_SUCCESS)
		st = set_desc(fwd, CUDNN_ATTR_OPERATION_SDPA_FWD_ODESC, o);
	if (st == CUDNN_STATUS_SUCCESS)
		st = set_desc(fwd, CUDNN_ATTR_OPERATION_SDPA_FWD_STATSDESC, stats);
	if (st == CUDNN_STATUS_SUCCESS)
		st = set_desc(fwd, CUDNN_ATTR_OPERATION_SDPA_FWD_SCALEDESC, scale);
	if (st == CUDNN_STATUS_SUCCESS)
		st = cudnnBackendCreateDescriptor(CUDNN_BACKEND_OPERATION_SDPA_BWD_DESCRIPTOR, &bwd);
	if (st == CUDNN_STATUS_SUCCESS)
		st = set_desc(bwd, CUDNN_ATTR_OPERATION_SDPA_BWD_QDESC, q);
	if (st == CUDNN_STATUS_SUCCESS)
		st = set_desc(bwd, CUDNN_ATTR_OPERATION_SDPA_BWD_KDESC, k);
	if (st == CUDNN_STATUS_SUCCESS)
		st = set_desc(bwd, CUDNN_ATTR_OPERATION_SDPA_BWD_VDESC, v);
	if (st == CUDNN_STATUS_SUCCESS)
		st = set_desc(bwd, CUDNN_ATTR_OPERATION_SDPA_BWD_ODESC, o);
	if (st == CUDNN_STATUS_SUCCESS)
		st = set_desc(bwd, CUDNN_ATTR_OPERATION_SDPA_BWD_STATSDESC, stats);
	if (st == CUDNN_STATUS_SUCCESS)
		st = set_desc(bwd, CUDNN_ATTR_OPERATION_SDPA_BWD_SCALEDESC, scale);
	if (st == CUDNN_STATUS_SUCCESS)
		st = set_desc(bwd, CUDNN_ATTR_OPERATION_SDPA_BWD_DODDESC, dout);
	if (st == CUDNN_STATUS_SUCCESS)
		st = set_desc(bwd, CUDNN_ATTR_OPERATION_SDPA_BWD_DQDESC, dq);
	if (st == CUDNN_STATUS_SUCCESS)
		st = set_desc(bwd, CUDNN_ATTR_OPERATION_SDPA_BWD_DKDESC, dk);
	if (st == CUDNN_STATUS_SUCCESS)
		st = set_desc(bwd, CUDNN_ATTR_OPERATION_SDPA_BWD_DVDESC, dv);
	if (st != CUDNN_STATUS_SUCCESS)
		return;
	p->fwd = plan_of(fwd, &p->fwd_bytes);
	p->bwd = p->fwd ? plan_of(bwd, &p->bwd_bytes) : NULL;
	p->usable = p->fwd && p->bwd;
}

/* The plans of a shape (built on first sight), or NULL when the fused
 * path does not serve it. */
static struct sdpa_plan *plan_for(const struct df_attn_shape *s)
{
	if (s->head_dim % 8 != 0 || s->head_dim > SDPA_MAX_HEAD_DIM || s->n <= 0 || s->tq <= 0 || s->tk <= 0 ||
	    !ready())
		return NULL;
	for (int i = 0; i < plan_count; i++) {
		struct sdpa_plan *p = &plans[i];
		if (p->n == s->n && p->tq == s->tq && p->tk == s->tk && p->heads == s->heads && p->hd == s->head_dim)
			return p->usable ? p : NULL;
	}
	if (plan_count == SDPA_PLANS)
		return NULL;
	struct sdpa_plan *p = &plans[plan_count++];
	p->n = s->n;
	p->tq = s->tq;
	p->tk = s->tk;
	p->heads = s->heads;
	p->hd = s->head_dim;
	build(p);
	if (!p->usable)
		fprintf(stderr, "diffuse cuda: fused attention: cuDNN has no plan for n %lld, tq %lld, tk %lld, %lld heads "
		                "of %lld; the plain path runs\n",
		        (long long)s->n, (long long)s->tq, (long long)s->tk, (long long)s->heads, (long long)s->head_dim);
	return p->usable ? p : NULL;
}

/* ---- the workspace: packed bf16 operands, statistics, cuDNN's own ----- */

struct sdpa_buffers {
	__nv_bfloat16 *q, *k, *v, *o, *dout, *dq, *dk, *dv;
	float *stats; /* when the caller keeps none (inference) */
	void *cudnn;
};

static size_t round_up(size_t bytes)
{
	return (bytes + 255) & ~(size_t)255;
}

/* Lays the buffers out from workspace (NULL: sizes only); returns bytes. */
static size_t layout(const struct df_attn_shape *s, const struct sdpa_plan *p, char *workspace,
                     struct sdpa_buffers *b)
{
	const int64_t d = s->heads * s->head_dim;
	const size_t qb = round_up((size_t)(s->n * s->tq * d) * sizeof(__nv_bfloat16));
	const size_t kb = round_up((size_t)(s->n * s->tk * d) * sizeof(__nv_bfloat16));
	const size_t stats = round_up((size_t)(s->n * s->heads * s->tq) * sizeof(float));
	const size_t own = (size_t)(p->fwd_bytes > p->bwd_bytes ? p->fwd_bytes : p->bwd_bytes);
	size_t at = 0;
	__nv_bfloat16 **q_like[4] = {&b->q, &b->o, &b->dout, &b->dq}, **k_like[4] = {&b->k, &b->v, &b->dk, &b->dv};
	for (int i = 0; i < 4; i++, at += qb)
		*q_like[i] = workspace ? (__nv_bfloat16 *)(workspace + at) : NULL;
	for (int i = 0; i < 4; i++, at += kb)
		*k_like[i] = workspace ? (__nv_bfloat16 *)(workspace + at) : NULL;
	b->stats = workspace ? (float *)(workspace + at) : NULL;
	at += stats;
	b->cudnn = workspace && own ? workspace + at : NULL;
	return at + round_up(own);
}

size_t dfi_sdpa_workspace(const struct df_attn_shape *s)
{
	struct sdpa_plan *p = plan_for(s);
	struct sdpa_buffers b;
	/* Room to align the caller's pointer to 256 bytes as well. */
	return p ? layout(s, p, NULL, &b) + 256 : 0;
}

static char *aligned(void *workspace)
{
	return (char *)(((uintptr_t)workspace + 255) & ~(uintptr_t)255);
}

/* dst (rows, d) packed bf16 = src rows of d floats at row stride ld. */
__global__ void pack_rows(__nv_bfloat16 *dst, const float *src, int64_t rows, int64_t d, int64_t ld)
{
	for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < rows * d; i += (int64_t)gridDim.x * blockDim.x)
		dst[i] = __float2bfloat16_rn(src[(i / d) * ld + i % d]);
}

/* dst rows at stride ld (=, or += when accumulate) the packed bf16 src. */
__global__ void unpack_rows(float *dst, const __nv_bfloat16 *src, int64_t rows, int64_t d, int64_t ld, int accumulate)
{
	for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < rows * d; i += (int64_t)gridDim.x * blockDim.x) {
		float *at = dst + (i / d) * ld + i % d;
		const float x = __bfloat162float(src[i]);
		*at = accumulate ? *at + x : x;
	}
}

static void pack(__nv_bfloat16 *dst, const float *src, int64_t rows, int64_t d, int64_t ld)
{
	pack_rows<<<dfi_cuda_blocks(rows * d, 256), 256, 0, dfi_cuda.stream>>>(dst, src, rows, d, ld);
}

static void unpack(float *dst, const __nv_bfloat16 *src, int64_t rows, int64_t d, int64_t ld, int accumulate)
{
	unpack_rows<<<dfi_cuda_blocks(rows * d, 256), 256, 0, dfi_cuda.stream>>>(dst, src, rows, d, ld, accumulate);
}

/* Runs a plan on the tensors (uids[i], pointers[i]). */
static int execute(cudnnBackendDescriptor_t plan, const int64_t *uids, void **pointers, int64_t count, void *workspace,
                   const char *what)
{
	cudnnBackendDescriptor_t variants = NULL;
	cudnnStatus_t st = cudnnBackendCreateDescriptor(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR, &variants);
	if (st == CUDNN_STATUS_SUCCESS)
		st = set(variants, CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, count, uids);
	if (st == CUDNN_STATUS_SUCCESS)
		st = set(variants, CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR, count, pointers);
	if (st == CUDNN_STATUS_SUCCESS)
		st = set(variants, CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1, &workspace);
	if (st == CUDNN_STATUS_SUCCESS)
		st = cudnnBackendFinalize(variants);
	if (st == CUDNN_STATUS_SUCCESS)
		st = cudnnBackendExecute(handle, plan, variants);
	if (variants)
		cudnnBackendDestroyDescriptor(variants);
	if (st != CUDNN_STATUS_SUCCESS)
		sdpa_report(what, st);
	return st == CUDNN_STATUS_SUCCESS;
}

/* The plans of the shape, the buffers laid out in the workspace and q, k,
 * v packed into them; NULL when the fused path declines the shape. */
static struct sdpa_plan *prepare(const struct df_attn_shape *s, void *workspace, const float *q, const float *k,
                                 const float *v, struct sdpa_buffers *b)
{
	struct sdpa_plan *p = plan_for(s);
	if (!p)
		return NULL;
	layout(s, p, aligned(workspace), b);
	const int64_t d = s->heads * s->head_dim;
	pack(b->q, q, s->n * s->tq, d, s->ldq);
	pack(b->k, k, s->n * s->tk, d, s->ldk);
	pack(b->v, v, s->n * s->tk, d, s->ldv);
	return p;
}

int dfi_sdpa_forward(const struct df_attn_shape *s, float *out, float *lse, const float *q, const float *k,
                     const float *v, void *workspace)
{
	struct sdpa_buffers b;
	struct sdpa_plan *p = prepare(s, workspace, q, k, v, &b);
	if (!p)
		return 0;
	const int64_t d = s->heads * s->head_dim;
	float scale = s->scale;
	float *stats = lse ? lse : b.stats;
	const int64_t uids[6] = {UID_Q, UID_K, UID_V, UID_O, UID_STATS, UID_SCALE};
	void *pointers[6] = {b.q, b.k, b.v, b.o, stats, &scale};
	if (!execute(p->fwd, uids, pointers, 6, b.cudnn, "forward")) {
		p->usable = 0; /* noted once: the plain path from now on */
		return 0;
	}
	unpack(out, b.o, s->n * s->tq, d, s->ldo, 0);
	return 1;
}

int dfi_sdpa_backward(const struct df_attn_shape *s, float *dq, float *dk, float *dv, const float *dout,
                      const float *out, const float *lse, const float *q, const float *k, const float *v,
                      void *workspace)
{
	struct sdpa_buffers b;
	struct sdpa_plan *p = prepare(s, workspace, q, k, v, &b);
	if (!p)
		return 0;
	const int64_t d = s->heads * s->head_dim;
	pack(b.o, out, s->n * s->tq, d, s->ldo);
	pack(b.dout, dout, s->n * s->tq, d, s->ldo);
	float scale = s->scale;
	const int64_t uids[10] = {UID_Q, UID_K, UID_V, UID_O, UID_STATS, UID_SCALE, UID_DO, UID_DQ, UID_DK, UID_DV};
	void *pointers[10] = {b.q, b.k, b.v, b.o, (void *)lse, &scale, b.dout, b.dq, b.dk, b.dv};
	if (!execute(p->bwd, uids, pointers, 10, b.cudnn, "backward")) {
		p->usable = 0;
		return 0;
	}
	if (dq)
		unpack(dq, b.dq, s->n * s->tq, d, s->ldq, 1);
	if (dk)
		unpack(dk, b.dk, s->n * s->tk, d, s->ldk, 1);
	if (dv)
		unpack(dv, b.dv, s->n * s->tk, d, s->ldv, 1);
	return 1;
}
