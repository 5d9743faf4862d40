/* Ops: exp, log, softplus, tanh, softmax over the last dim, and dropout. */
#include "config.h"
#include "../core.h"

/* ---- exp, log, softplus, tanh ----------------------------------------- */

/* exp and tanh differentiate through their output, log and softplus
 * through their input. */
static int unary_backward_uses_output(int fn)
{
	return fn == DF_UNARY_EXP || fn == DF_UNARY_TANH;
}

static void unary_backward(df_graph *g, const struct dfi_node *node)
{
	df_tensor *x = node->in[0];
	const int fn = (int)node->i[0];
	float *dx = dfi_grad(g, x);
	if (dx)
		g->be->unary_backward(g->be, fn, dx, node->out->grad,
		                      unary_backward_uses_output(fn) ? node->out->data : x->data, x->numel);
}

static df_tensor *unary(df_graph *g, const char *name, int fn, df_tensor *x)
{
	if (!dfi_check_inputs(g, name, 1, &x))
		return NULL;
	df_tensor *out = dfi_new(g, x->ndim, x->shape);
	if (!out)
		return NULL;
	g->be->unary_forward(g->be, fn, out->data, x->data, x->numel);
	return dfi_track(g, unary_backward, out, 1, &x, 1, (int64_t[]){fn}, 0.0f) ? out : NULL;
}

df_tensor *df_exp(df_graph *g, df_tensor *x)
{
	return unary(g, "exp", DF_UNARY_EXP, x);
}

df_tensor *df_log(df_graph *g, df_tensor *x)
{
	return unary(g, "log", DF_UNARY_LOG, x);
}

df_tensor *df_softplus(df_graph *g, df_tensor *x)
{
	return unary(g, "softplus", DF_UNARY_SOFTPLUS, x);
}

df_tensor *df_tanh(df_graph *g, df_tensor *x)
{
	return unary(g, "tanh", DF_UNARY_TANH, x);
}

/* ---- softmax ------------------------------------------------------------ */

static void softmax_backward(df_graph *g, const struct dfi_node *node)
{
	df_tensor *x = node->in[0];
	float *dx = dfi_grad(g, x);
	if (dx)
		g->be->softmax_backward(g->be, dx, node->out->grad, node->out->data, node->i[0], node->i[1]);
}

df_tensor *df_softmax(df_graph *g, df_tensor *x)
{
	if (!dfi_check_inputs(g, "softmax", 1, &x))
		return NULL;
	int64_t d = x->shape[x->ndim - 1], rows = d ? x->numel / d : 0;
	df_tensor *out = dfi_new(g, x->ndim, x->shape);
	if (!out)
		return NULL;
	g->be->softmax_forward(g->be, out->data, x->data, rows, d);
	return dfi_track(g, softmax_backward, out, 1, &x, 2, (int64_t[]){rows, d}, 0.0f) ? out : NULL;
}

/* ---- dropout ------------------------------------------------------------ */

static void dropout_backward(df_graph *g, const struct dfi_node *node)
{
	df_tensor *x = node->in[0];
	float *dx = dfi_grad(g, x);
	if (dx)
		g->be->dropout_backward(g->be, dx, node->out->grad, x->numel, node->f[0], (uint64_t)node->i[0],
		                        (uint64_t)node->i[1], (uint64_t)node->i[2]);
}

df_tensor *df_dropout(df_graph *g, df_tensor *x, float p, uint64_t seed, uint64_t stream, uint64_t step)
{
	if (!dfi_check_inputs(g, "dropout", 1, &x))
		return NULL;
	if (!(p >= 0.0f && p <= 1.0f))
		return dfi_fail(g, DF_EINVAL, "dropout: probability %g (expected 0 .. 1)", (double)p);
	df_tensor *out = dfi_new(g, x->ndim, x->shape);
	if (!out)
		return NULL;
	g->be->dropout_forward(g->be, out->data, x->data, x->numel, p, seed, stream, step);
	const int64_t args[3] = {(int64_t)seed, (int64_t)stream, (int64_t)step};
	return dfi_track(g, dropout_backward, out, 1, &x, 3, args, p) ? out : NULL;
}
