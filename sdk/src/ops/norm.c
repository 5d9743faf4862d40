/* Ops: layernorm and the fused layernorm + adaLN modulate. The forward
 * keeps the per-row mean and 1/std for the backward (2 floats a row). */
#include "config.h"
#include "../core.h"

/* mean and rstd of `rows` rows when gradients flow, else NULL (inference). */
static int norm_stats(df_graph *g, int n, df_tensor *const *in, int64_t rows, df_tensor **mean, df_tensor **rstd)
{
	*mean = *rstd = NULL;
	if (!dfi_wants_grad(g, n, in))
		return 1;
	*mean = dfi_stats(g, rows);
	*rstd = dfi_stats(g, rows);
	return *mean && *rstd;
}

static struct dfi_node *record_norm(df_graph *g, dfi_backward_fn fn, df_tensor *out, int n, df_tensor *const *in,
                                    df_tensor *mean, df_tensor *rstd)
{
	struct dfi_node *node = dfi_record(g, fn, out, n, in);
	if (node) {
		node->saved[0] = mean;
		node->saved[1] = rstd;
	}
	return node;
}

static void layernorm_backward(df_graph *g, const struct dfi_node *node)
{
	df_tensor *x = node->in[0], *w = node->in[1], *b = node->in[2];
	g->be->layernorm_backward(g->be, dfi_grad(g, x), dfi_grad(g, w), dfi_grad(g, b), node->out->grad, x->data,
	                          w ? w->data : NULL, node->saved[0]->data, node->saved[1]->data, node->i[0],
	                          node->i[1]);
}

df_tensor *df_layernorm(df_graph *g, df_tensor *x, df_tensor *w, df_tensor *b, float eps)
{
	df_tensor *in[3] = {x, w, b};
	if (!dfi_check_inputs(g, "layernorm", 1, in) || (w && !dfi_check_inputs(g, "layernorm", 1, &w)) ||
	    (b && !dfi_check_inputs(g, "layernorm", 1, &b)))
		return NULL;
	int64_t d = x->shape[x->ndim - 1], rows = x->numel / d;
	if ((w && (w->ndim != 1 || w->shape[0] != d)) || (b && (b->ndim != 1 || b->shape[0] != d)))
		return dfi_fail(g, DF_EINVAL, "layernorm: weight/bias must be (%lld) for x %s", (long long)d,
		                DFI_SHAPE(x));
	if (!(eps > 0.0f))
		return dfi_fail(g, DF_EINVAL, "layernorm: eps %g (must be positive)", (double)eps);
	df_tensor *mean, *rstd, *out = dfi_new(g, x->ndim, x->shape);
	if (!out || !norm_stats(g, 3, in, rows, &mean, &rstd))
		return NULL;
	g->be->layernorm_forward(g->be, out->data, mean ? mean->data : NULL, rstd ? rstd->data : NULL, x->data,
	                         w ? w->data : NULL, b ? b->data : NULL, rows, d, eps);
	if (mean) {
		struct dfi_node *node = record_norm(g, layernorm_backward, out, 3, in, mean, rstd);
		if (!node)
			return NULL;
		node->i[0] = rows;
		node->i[1] = d;
	}
	return out;
}

static void layernorm_modulate_backward(df_graph *g, const struct dfi_node *node)
{
	df_tensor *x = node->in[0], *shift = node->in[1], *scale = node->in[2];
	g->be->layernorm_modulate_backward(g->be, dfi_grad(g, x), dfi_grad(g, shift), dfi_grad(g, scale),
	                                   node->out->grad, x->data, scale->data, node->saved[0]->data,
	                                   node->saved[1]->data, node->i[0], node->i[1], node->i[2]);
}

df_tensor *df_layernorm_modulate(df_graph *g, df_tensor *x, df_tensor *shift, df_tensor *scale, float eps)
{
	df_tensor *in[3] = {x, shift, scale};
	int64_t n, t, d;
	if (!dfi_check_inputs(g, "layernorm_modulate", 3, in) ||
	    !dfi_check_per_sample(g, "layernorm_modulate", x, shift, scale, &n, &t, &d))
		return NULL;
	if (!(eps > 0.0f))
		return dfi_fail(g, DF_EINVAL, "layernorm_modulate: eps %g (must be positive)", (double)eps);
	df_tensor *mean, *rstd, *out = dfi_new(g, 3, x->shape);
	if (!out || !norm_stats(g, 3, in, n * t, &mean, &rstd))
		return NULL;
	g->be->layernorm_modulate_forward(g->be, out->data, mean ? mean->data : NULL, rstd ? rstd->data : NULL,
	                                  x->data, shift->data, scale->data, n, t, d, eps);
	if (mean) {
		struct dfi_node *node = record_norm(g, layernorm_modulate_backward, out, 3, in, mean, rstd);
		if (!node)
			return NULL;
		node->i[0] = n;
		node->i[1] = t;
		node->i[2] = d;
	}
	return out;
}
