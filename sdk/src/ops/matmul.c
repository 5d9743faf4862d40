/* Ops: linear and batched matmul. */
#include "config.h"
#include "../core.h"

static void linear_backward(df_graph *g, const struct dfi_node *node)
{
	df_tensor *x = node->in[0], *w = node->in[1], *b = node->in[2];
	g->be->linear_backward(g->be, dfi_grad(g, x), dfi_grad(g, w), dfi_grad(g, b), node->out->grad, x->data,
	                       w->data, node->i[0], node->i[1], node->i[2]);
}

df_tensor *df_linear(df_graph *g, df_tensor *x, df_tensor *w, df_tensor *b)
{
	df_tensor *in[3] = {x, w, b};
	if (!dfi_check_inputs(g, "linear", b ? 3 : 2, in))
		return NULL;
	int64_t k = x->shape[x->ndim - 1];
	if (w->ndim != 2 || w->shape[1] != k)
		return dfi_fail(g, DF_EINVAL, "linear: weight %s does not take inputs %s (expected (out, %lld))",
		                DFI_SHAPE(w), DFI_SHAPE(x), (long long)k);
	int64_t o = w->shape[0], m = x->numel / k;
	if (b && (b->ndim != 1 || b->shape[0] != o))
		return dfi_fail(g, DF_EINVAL, "linear: bias %s does not match weight %s", DFI_SHAPE(b), DFI_SHAPE(w));
	int64_t shape[DF_MAX_DIMS];
	for (int d = 0; d < x->ndim; d++)
		shape[d] = x->shape[d];
	shape[x->ndim - 1] = o;
	df_tensor *out = dfi_new(g, x->ndim, shape);
	if (!out)
		return NULL;
	g->be->linear_forward(g->be, out->data, x->data, w->data, b ? b->data : NULL, m, k, o);
	return dfi_track(g, linear_backward, out, 3, in, 3, (int64_t[]){m, k, o}, 0.0f) ? out : NULL;
}

static void matmul_backward(df_graph *g, const struct dfi_node *node)
{
	df_tensor *a = node->in[0], *b = node->in[1];
	g->be->matmul_backward(g->be, dfi_grad(g, a), dfi_grad(g, b), node->out->grad, a->data, b->data, node->i[0],
	                       node->i[1], node->i[2], node->i[3], (int)node->i[4], (int)node->i[5]);
}

df_tensor *df_matmul(df_graph *g, df_tensor *a, df_tensor *b, int trans_a, int trans_b)
{
	df_tensor *in[2] = {a, b};
	if (!dfi_check_inputs(g, "matmul", 2, in))
		return NULL;
	if (a->ndim < 2 || a->ndim != b->ndim)
		return dfi_fail(g, DF_EINVAL, "matmul: %s and %s (expected the same number of dims, at least 2)",
		                DFI_SHAPE(a), DFI_SHAPE(b));
	int nd = a->ndim;
	int64_t batch = 1;
	for (int d = 0; d < nd - 2; d++) {
		if (a->shape[d] != b->shape[d])
			return dfi_fail(g, DF_EINVAL, "matmul: batch dims of %s and %s differ", DFI_SHAPE(a),
			                DFI_SHAPE(b));
		batch *= a->shape[d];
	}
	trans_a = trans_a != 0;
	trans_b = trans_b != 0;
	int64_t m = a->shape[nd - 2 + trans_a], k = a->shape[nd - 1 - trans_a];
	int64_t kb = b->shape[nd - 2 + trans_b], n = b->shape[nd - 1 - trans_b];
	if (k != kb)
		return dfi_fail(g, DF_EINVAL, "matmul: inner dims differ: %s%s times %s%s", DFI_SHAPE(a),
		                trans_a ? "^T" : "", DFI_SHAPE(b), trans_b ? "^T" : "");
	int64_t shape[DF_MAX_DIMS];
	for (int d = 0; d < nd - 2; d++)
		shape[d] = a->shape[d];
	shape[nd - 2] = m;
	shape[nd - 1] = n;
	df_tensor *out = dfi_new(g, nd, shape);
	if (!out)
		return NULL;
	g->be->matmul_forward(g->be, out->data, a->data, b->data, batch, m, n, k, trans_a, trans_b);
	int64_t args[6] = {batch, m, n, k, trans_a, trans_b};
	return dfi_track(g, matmul_backward, out, 2, in, 6, args, 0.0f) ? out : NULL;
}
