/* Ops: the normal KL and discretised Gaussian log-likelihood of DDPM's
 * hybrid loss, and cross-entropy against host labels. */
#include "config.h"
#include <string.h>
#include "../core.h"

/* Elementwise losses take inputs of one shape. */
static int check_same_shapes(df_graph *g, const char *op, int n, df_tensor *const *xs)
{
	if (!dfi_check_inputs(g, op, n, xs))
		return 0;
	for (int i = 1; i < n; i++) {
		if (!df_tensor_same_shape(xs[0], xs[i])) {
			dfi_fail(g, DF_EINVAL, "%s: input %d %s differs from input 0 %s", op, i, DFI_SHAPE(xs[i]),
			         DFI_SHAPE(xs[0]));
			return 0;
		}
	}
	return 1;
}

static void normal_kl_backward(df_graph *g, const struct dfi_node *node)
{
	df_tensor *const *in = node->in;
	g->be->normal_kl_backward(g->be, dfi_grad(g, in[0]), dfi_grad(g, in[1]), dfi_grad(g, in[2]),
	                          dfi_grad(g, in[3]), node->out->grad, in[0]->data, in[1]->data, in[2]->data,
	                          in[3]->data, node->out->numel);
}

df_tensor *df_normal_kl(df_graph *g, df_tensor *mean1, df_tensor *logvar1, df_tensor *mean2, df_tensor *logvar2)
{
	df_tensor *in[4] = {mean1, logvar1, mean2, logvar2};
	if (!check_same_shapes(g, "normal_kl", 4, in))
		return NULL;
	df_tensor *out = dfi_new(g, mean1->ndim, mean1->shape);
	if (!out)
		return NULL;
	g->be->normal_kl_forward(g->be, out->data, mean1->data, logvar1->data, mean2->data, logvar2->data, out->numel);
	return dfi_track(g, normal_kl_backward, out, 4, in, 0, NULL, 0.0f) ? out : NULL;
}

static void dgl_backward(df_graph *g, const struct dfi_node *node)
{
	df_tensor *const *in = node->in;
	g->be->discretized_gaussian_loglik_backward(g->be, dfi_grad(g, in[0]), dfi_grad(g, in[1]), dfi_grad(g, in[2]),
	                                            node->out->grad, in[0]->data, in[1]->data, in[2]->data,
	                                            node->out->numel);
}

df_tensor *df_discretized_gaussian_loglik(df_graph *g, df_tensor *x, df_tensor *mean, df_tensor *log_scale)
{
	df_tensor *in[3] = {x, mean, log_scale};
	if (!check_same_shapes(g, "discretized_gaussian_loglik", 3, in))
		return NULL;
	df_tensor *out = dfi_new(g, x->ndim, x->shape);
	if (!out)
		return NULL;
	g->be->discretized_gaussian_loglik_forward(g->be, out->data, x->data, mean->data, log_scale->data, out->numel);
	return dfi_track(g, dgl_backward, out, 3, in, 0, NULL, 0.0f) ? out : NULL;
}

static void cross_entropy_backward(df_graph *g, const struct dfi_node *node)
{
	df_tensor *logits = node->in[0];
	float *dlogits = dfi_grad(g, logits);
	if (dlogits)
		g->be->cross_entropy_backward(g->be, dlogits, node->out->grad, logits->data, node->saved[0]->data,
		                              node->host, node->i[0], node->i[1]);
}

df_tensor *df_cross_entropy(df_graph *g, df_tensor *logits, const int32_t *labels)
{
	if (!dfi_check_inputs(g, "cross_entropy", 1, &logits))
		return NULL;
	if (logits->ndim != 2 || logits->shape[1] < 1)
		return dfi_fail(g, DF_EINVAL, "cross_entropy: logits %s (expected (N, K), K >= 1)", DFI_SHAPE(logits));
	int64_t rows = logits->shape[0], k = logits->shape[1];
	if (rows > 0 && !labels)
		return dfi_fail(g, DF_EINVAL, "cross_entropy: labels are NULL");
	for (int64_t r = 0; r < rows; r++)
		if (labels[r] < 0 || labels[r] >= k)
			return dfi_fail(g, DF_EINVAL, "cross_entropy: label %d of row %lld is outside [0, %lld)",
			                (int)labels[r], (long long)r, (long long)k);
	df_tensor *out = dfi_new(g, 1, (int64_t[]){rows});
	if (!out)
		return NULL;
	int tracked = dfi_wants_grad(g, 1, &logits);
	df_tensor *lse = tracked ? dfi_stats(g, rows) : NULL;
	/* The caller's labels need not outlive this call: the tape keeps a copy. */
	int32_t *kept = tracked ? dfi_host_alloc(g, (size_t)(rows > 0 ? rows : 1) * sizeof(int32_t)) : NULL;
	if (tracked && (!lse || !kept))
		return NULL;
	g->be->cross_entropy_forward(g->be, out->data, lse ? lse->data : NULL, logits->data, labels, rows, k);
	if (!tracked)
		return out;
	if (rows > 0)
		memcpy(kept, labels, (size_t)rows * sizeof(int32_t));
	struct dfi_node *node = dfi_record(g, cross_entropy_backward, out, 1, &logits);
	if (!node)
		return NULL;
	node->saved[0] = lse;
	node->host = kept;
	node->i[0] = rows;
	node->i[1] = k;
	return out;
}
