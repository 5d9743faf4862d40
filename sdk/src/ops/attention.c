/* Ops: multi-head attention on separate q, k, v (cross-attention when k
 * and v come from another sequence) or on a fused qkv projection. The
 * forward keeps the logsumexp of every score row; see
 * backends/cpu/attention.c for why the scores are recomputed. */
#include "config.h"
#include <math.h>
#include "../core.h"

static void attention_backward(df_graph *g, const struct dfi_node *node)
{
	const struct df_attn_shape *s = node->aux;
	void *ws = dfi_workspace(g, g->be->attention_workspace(g->be, s));
	if (!ws)
		return;
	df_tensor *out = node->out, *lse = node->saved[0];
	if (node->i[0]) { /* fused qkv: [q | k | v] columns of one tensor */
		df_tensor *qkv = node->in[0];
		float *d = dfi_grad(g, qkv);
		int64_t dim = s->heads * s->head_dim;
		if (d)
			g->be->attention_backward(g->be, s, d, d + dim, d + 2 * dim, out->grad, out->data, lse->data,
			                          qkv->data, qkv->data + dim, qkv->data + 2 * dim, ws);
		return;
	}
	df_tensor *q = node->in[0], *k = node->in[1], *v = node->in[2];
	g->be->attention_backward(g->be, s, dfi_grad(g, q), dfi_grad(g, k), dfi_grad(g, v), out->grad, out->data,
	                          lse->data, q->data, k->data, v->data, ws);
}

/* Runs the forward and records it; in[] are the op's inputs (1 or 3). */
static df_tensor *attend(df_graph *g, struct df_attn_shape *s, int n_in, df_tensor *const *in, const float *q,
                         const float *k, const float *v)
{
	s->head_dim = s->head_dim > 0 ? s->head_dim : 1;
	s->scale = 1.0f / sqrtf((float)s->head_dim);
	s->ldo = s->heads * s->head_dim;
	df_tensor *out = dfi_new(g, 3, (int64_t[]){s->n, s->tq, s->ldo});
	void *ws = out ? dfi_workspace(g, g->be->attention_workspace(g->be, s)) : NULL;
	if (!ws)
		return NULL;
	int grad = dfi_wants_grad(g, n_in, in);
	df_tensor *lse = grad ? dfi_stats(g, s->n * s->heads * s->tq) : NULL;
	if (grad && !lse)
		return NULL;
	g->be->attention_forward(g->be, s, out->data, lse ? lse->data : NULL, q, k, v, ws);
	if (!grad)
		return out;
	struct dfi_node *node = dfi_record(g, attention_backward, out, n_in, in);
	struct df_attn_shape *kept = node ? dfi_host_alloc(g, sizeof *kept) : NULL;
	if (!kept)
		return NULL;
	*kept = *s;
	node->aux = kept;
	node->saved[0] = lse;
	node->i[0] = n_in == 1;
	return out;
}

static int check_heads(df_graph *g, const char *op, int64_t dim, int heads)
{
	if (heads <= 0 || dim % heads) {
		dfi_fail(g, DF_EINVAL, "%s: %lld features do not split into %d heads", op, (long long)dim, heads);
		return 0;
	}
	return 1;
}

df_tensor *df_attention(df_graph *g, df_tensor *q, df_tensor *k, df_tensor *v, int heads)
{
	df_tensor *in[3] = {q, k, v};
	if (!dfi_check_inputs(g, "attention", 3, in))
		return NULL;
	if (q->ndim != 3 || k->ndim != 3 || !df_tensor_same_shape(k, v) || k->shape[0] != q->shape[0] ||
	    k->shape[2] != q->shape[2])
		return dfi_fail(g, DF_EINVAL, "attention: q %s, k %s, v %s (expected (N, Tq, D), (N, Tk, D), (N, Tk, D))",
		                DFI_SHAPE(q), DFI_SHAPE(k), DFI_SHAPE(v));
	int64_t dim = q->shape[2];
	if (!check_heads(g, "attention", dim, heads))
		return NULL;
	struct df_attn_shape s = {
		.n = q->shape[0], .tq = q->shape[1], .tk = k->shape[1], .heads = heads, .head_dim = dim / heads,
		.ldq = dim, .ldk = dim, .ldv = dim,
	};
	return attend(g, &s, 3, in, q->data, k->data, v->data);
}

df_tensor *df_attention_qkv(df_graph *g, df_tensor *qkv, int heads)
{
	if (!dfi_check_inputs(g, "attention_qkv", 1, &qkv))
		return NULL;
	if (qkv->ndim != 3 || qkv->shape[2] % 3)
		return dfi_fail(g, DF_EINVAL, "attention_qkv: qkv %s (expected (N, T, 3 D))", DFI_SHAPE(qkv));
	int64_t dim = qkv->shape[2] / 3;
	if (!check_heads(g, "attention_qkv", dim, heads))
		return NULL;
	struct df_attn_shape s = {
		.n = qkv->shape[0], .tq = qkv->shape[1], .tk = qkv->shape[1], .heads = heads, .head_dim = dim / heads,
		.ldq = 3 * dim, .ldk = 3 * dim, .ldv = 3 * dim,
	};
	return attend(g, &s, 1, &qkv, qkv->data, qkv->data + dim, qkv->data + 2 * dim);
}
