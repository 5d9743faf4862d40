/* Ops: GELU and SiLU (the backward reads the saved input). */
#include "config.h"
#include "../core.h"

static void gelu_backward(df_graph *g, const struct dfi_node *node)
{
	df_tensor *x = node->in[0];
	float *dx = dfi_grad(g, x);
	if (dx)
		g->be->gelu_backward(g->be, dx, node->out->grad, x->data, x->numel, (int)node->i[0]);
}

df_tensor *df_gelu(df_graph *g, df_tensor *x, int tanh_approx)
{
	if (!dfi_check_inputs(g, "gelu", 1, &x))
		return NULL;
	df_tensor *out = dfi_new(g, x->ndim, x->shape);
	if (!out)
		return NULL;
	tanh_approx = tanh_approx != 0;
	g->be->gelu_forward(g->be, out->data, x->data, x->numel, tanh_approx);
	return dfi_track(g, gelu_backward, out, 1, &x, 1, (int64_t[]){tanh_approx}, 0.0f) ? out : NULL;
}

static void silu_backward(df_graph *g, const struct dfi_node *node)
{
	df_tensor *x = node->in[0];
	float *dx = dfi_grad(g, x);
	if (dx)
		g->be->silu_backward(g->be, dx, node->out->grad, x->data, x->numel);
}

df_tensor *df_silu(df_graph *g, df_tensor *x)
{
	if (!dfi_check_inputs(g, "silu", 1, &x))
		return NULL;
	df_tensor *out = dfi_new(g, x->ndim, x->shape);
	if (!out)
		return NULL;
	g->be->silu_forward(g->be, out->data, x->data, x->numel);
	return dfi_track(g, silu_backward, out, 1, &x, 0, NULL, 0.0f) ? out : NULL;
}
