/* Ops: sum, mean, per-sample mean and MSE, cosine similarity. */
#include "config.h"
#include "../core.h"

/* out (rows) = scale * row sums of x viewed as (rows, cols). */
static void sum_rows_backward(df_graph *g, const struct dfi_node *node)
{
	df_tensor *x = node->in[0];
	float *dx = dfi_grad(g, x);
	if (dx)
		g->be->sum_rows_backward(g->be, dx, node->out->grad, node->i[0], node->i[1], node->f[0]);
}

static df_tensor *sum_rows(df_graph *g, const char *name, df_tensor *x, int64_t rows, float scale)
{
	if (!dfi_check_inputs(g, name, 1, &x))
		return NULL;
	if (rows < 0)
		rows = x->shape[0];
	int64_t cols = x->numel / rows;
	df_tensor *out = dfi_new(g, 1, (int64_t[]){rows});
	if (!out)
		return NULL;
	if (scale < 0.0f)
		scale = 1.0f / (float)cols;
	g->be->sum_rows_forward(g->be, out->data, x->data, rows, cols, scale);
	return dfi_track(g, sum_rows_backward, out, 1, &x, 2, (int64_t[]){rows, cols}, scale) ? out : NULL;
}

df_tensor *df_sum(df_graph *g, df_tensor *x)
{
	return sum_rows(g, "sum", x, 1, 1.0f);
}

df_tensor *df_mean(df_graph *g, df_tensor *x)
{
	return sum_rows(g, "mean", x, 1, -1.0f);
}

df_tensor *df_mean_per_sample(df_graph *g, df_tensor *x)
{
	return sum_rows(g, "mean_per_sample", x, -1, -1.0f);
}

static void mse_backward(df_graph *g, const struct dfi_node *node)
{
	df_tensor *a = node->in[0], *b = node->in[1];
	g->be->mse_rows_backward(g->be, dfi_grad(g, a), dfi_grad(g, b), node->out->grad, a->data, b->data,
	                         node->i[0], node->i[1]);
}

df_tensor *df_mse_per_sample(df_graph *g, df_tensor *a, df_tensor *b)
{
	df_tensor *in[2] = {a, b};
	if (!dfi_check_inputs(g, "mse_per_sample", 2, in))
		return NULL;
	if (!df_tensor_same_shape(a, b))
		return dfi_fail(g, DF_EINVAL, "mse_per_sample: shapes %s and %s differ", DFI_SHAPE(a), DFI_SHAPE(b));
	int64_t rows = a->shape[0], cols = a->numel / rows;
	df_tensor *out = dfi_new(g, 1, (int64_t[]){rows});
	if (!out)
		return NULL;
	g->be->mse_rows_forward(g->be, out->data, a->data, b->data, rows, cols);
	return dfi_track(g, mse_backward, out, 2, in, 2, (int64_t[]){rows, cols}, 0.0f) ? out : NULL;
}

static void cosine_backward(df_graph *g, const struct dfi_node *node)
{
	df_tensor *a = node->in[0], *b = node->in[1];
	g->be->cosine_backward(g->be, dfi_grad(g, a), dfi_grad(g, b), node->out->grad, a->data, b->data, node->i[0],
	                       node->i[1], node->f[0]);
}

df_tensor *df_cosine_similarity(df_graph *g, df_tensor *a, df_tensor *b, float eps)
{
	df_tensor *in[2] = {a, b};
	if (!dfi_check_inputs(g, "cosine_similarity", 2, in))
		return NULL;
	if (!df_tensor_same_shape(a, b))
		return dfi_fail(g, DF_EINVAL, "cosine_similarity: shapes %s and %s differ", DFI_SHAPE(a), DFI_SHAPE(b));
	if (!(eps > 0.0f))
		return dfi_fail(g, DF_EINVAL, "cosine_similarity: eps %g (must be positive)", (double)eps);
	int64_t d = a->shape[a->ndim - 1], rows = a->numel / d;
	df_tensor *out = a->ndim == 1 ? dfi_new(g, 1, (int64_t[]){1}) : dfi_new(g, a->ndim - 1, a->shape);
	if (!out)
		return NULL;
	g->be->cosine_forward(g->be, out->data, a->data, b->data, rows, d, eps);
	return dfi_track(g, cosine_backward, out, 2, in, 2, (int64_t[]){rows, d}, eps) ? out : NULL;
}
