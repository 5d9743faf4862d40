/* Ops: group normalisation, 2-D convolution, nearest upsampling and
 * average pooling on (N, C, H, W) tensors. */
#include "config.h"
#include "../core.h"

/* Checks the inputs that are present (affine parameters and biases are
 * optional). */
static int check_optional_inputs(df_graph *g, const char *op, int n, df_tensor *const *xs)
{
	for (int i = 0; i < n; i++)
		if (xs[i] && !dfi_check_inputs(g, op, 1, &xs[i]))
			return 0;
	return 1;
}

/* ---- group norm ----------------------------------------------------- */

static void groupnorm_backward(df_graph *g, const struct dfi_node *node)
{
	df_tensor *x = node->in[0], *w = node->in[1], *b = node->in[2];
	g->be->groupnorm_backward(g->be, dfi_grad(g, x), dfi_grad(g, w), dfi_grad(g, b), node->out->grad, x->data,
	                          node->saved[0]->data, node->saved[1]->data, w ? w->data : NULL, node->i[0],
	                          node->i[1], node->i[2], node->i[3]);
}

/* An affine parameter of groupnorm: NULL or (c). */
static int check_channel_vector(df_graph *g, const char *what, const df_tensor *v, int64_t c)
{
	if (v && (v->ndim != 1 || v->shape[0] != c)) {
		dfi_fail(g, DF_EINVAL, "groupnorm: %s %s (expected (%lld))", what, DFI_SHAPE(v), (long long)c);
		return 0;
	}
	return 1;
}

df_tensor *df_groupnorm(df_graph *g, df_tensor *x, int groups, df_tensor *w, df_tensor *b, float eps)
{
	df_tensor *in[3] = {x, w, b};
	if (!dfi_check_inputs(g, "groupnorm", 1, in) || !check_optional_inputs(g, "groupnorm", 3, in))
		return NULL;
	if (x->ndim < 2)
		return dfi_fail(g, DF_EINVAL, "groupnorm: input %s (expected (N, C, ...))", DFI_SHAPE(x));
	int64_t n = x->shape[0], c = x->shape[1], s = x->numel / (n * c > 0 ? n * c : 1);
	if (groups < 1 || c % groups != 0)
		return dfi_fail(g, DF_EINVAL, "groupnorm: %d groups do not divide %lld channels", groups, (long long)c);
	if (!(eps > 0.0f))
		return dfi_fail(g, DF_EINVAL, "groupnorm: eps %g (must be positive)", (double)eps);
	if (!check_channel_vector(g, "weight", w, c) || !check_channel_vector(g, "bias", b, c))
		return NULL;
	df_tensor *out = dfi_new(g, x->ndim, x->shape);
	if (!out)
		return NULL;
	int tracked = dfi_wants_grad(g, 3, in);
	df_tensor *mean = tracked ? dfi_stats(g, n * groups) : NULL;
	df_tensor *rstd = tracked ? dfi_stats(g, n * groups) : NULL;
	if (tracked && (!mean || !rstd))
		return NULL;
	g->be->groupnorm_forward(g->be, out->data, mean ? mean->data : NULL, rstd ? rstd->data : NULL, x->data,
	                         w ? w->data : NULL, b ? b->data : NULL, n, c, s, groups, eps);
	if (!tracked)
		return out;
	struct dfi_node *node = dfi_record(g, groupnorm_backward, out, 3, in);
	if (!node)
		return NULL;
	node->saved[0] = mean;
	node->saved[1] = rstd;
	node->i[0] = n;
	node->i[1] = c;
	node->i[2] = s;
	node->i[3] = groups;
	return out;
}

/* ---- conv2d ------------------------------------------------------------- */

static void conv2d_backward(df_graph *g, const struct dfi_node *node)
{
	df_tensor *x = node->in[0], *w = node->in[1], *b = node->in[2];
	const struct df_conv2d_shape *s = node->aux;
	/* The forward already grew the workspace to this size. */
	size_t bytes = g->be->conv2d_workspace(g->be, s);
	void *workspace = bytes ? dfi_workspace(g, bytes) : NULL;
	if (bytes && !workspace)
		return;
	g->be->conv2d_backward(g->be, s, dfi_grad(g, x), dfi_grad(g, w), dfi_grad(g, b), node->out->grad, x->data,
	                       w->data, workspace);
}

df_tensor *df_conv2d(df_graph *g, df_tensor *x, df_tensor *w, df_tensor *b, int stride, int padding)
{
	df_tensor *in[3] = {x, w, b};
	if (!dfi_check_inputs(g, "conv2d", 2, in) || !check_optional_inputs(g, "conv2d", 3, in))
		return NULL;
	if (x->ndim != 4 || w->ndim != 4 || w->shape[1] != x->shape[1])
		return dfi_fail(g, DF_EINVAL, "conv2d: input %s and weight %s (expected (N, C, H, W) and (O, C, kh, kw))",
		                DFI_SHAPE(x), DFI_SHAPE(w));
	if (b && (b->ndim != 1 || b->shape[0] != w->shape[0]))
		return dfi_fail(g, DF_EINVAL, "conv2d: bias %s does not match weight %s", DFI_SHAPE(b), DFI_SHAPE(w));
	if (stride < 1 || padding < 0)
		return dfi_fail(g, DF_EINVAL, "conv2d: stride %d and padding %d (expected stride >= 1, padding >= 0)",
		                stride, padding);
	struct df_conv2d_shape s = {
		.n = x->shape[0], .cin = x->shape[1], .h = x->shape[2], .w = x->shape[3],
		.cout = w->shape[0], .kh = w->shape[2], .kw = w->shape[3], .stride = stride, .pad = padding,
	};
	if (s.kh < 1 || s.kw < 1 || s.h + 2 * s.pad < s.kh || s.w + 2 * s.pad < s.kw)
		return dfi_fail(g, DF_EINVAL, "conv2d: a %lldx%lld kernel does not fit input %s padded by %d",
		                (long long)s.kh, (long long)s.kw, DFI_SHAPE(x), padding);
	s.ho = (s.h + 2 * s.pad - s.kh) / s.stride + 1;
	s.wo = (s.w + 2 * s.pad - s.kw) / s.stride + 1;
	df_tensor *out = dfi_new(g, 4, (int64_t[]){s.n, s.cout, s.ho, s.wo});
	if (!out)
		return NULL;
	size_t bytes = g->be->conv2d_workspace(g->be, &s);
	void *workspace = bytes ? dfi_workspace(g, bytes) : NULL;
	if (bytes && !workspace)
		return NULL;
	g->be->conv2d_forward(g->be, &s, out->data, x->data, w->data, b ? b->data : NULL, workspace);
	if (!dfi_wants_grad(g, 3, in))
		return out;
	struct df_conv2d_shape *saved = dfi_host_alloc(g, sizeof *saved);
	struct dfi_node *node = saved ? dfi_record(g, conv2d_backward, out, 3, in) : NULL;
	if (!node)
		return NULL;
	*saved = s;
	node->aux = saved;
	return out;
}

/* ---- nearest upsampling and average pooling -------------------------- */

static int check_nchw(df_graph *g, const char *op, df_tensor *x)
{
	if (!dfi_check_inputs(g, op, 1, &x))
		return 0;
	if (x->ndim != 4) {
		dfi_fail(g, DF_EINVAL, "%s: input %s (expected (N, C, H, W))", op, DFI_SHAPE(x));
		return 0;
	}
	return 1;
}

static void upsample_backward(df_graph *g, const struct dfi_node *node)
{
	df_tensor *x = node->in[0];
	float *dx = dfi_grad(g, x);
	if (dx)
		g->be->upsample_nearest2x_backward(g->be, dx, node->out->grad, x->shape[0] * x->shape[1], x->shape[2],
		                                   x->shape[3]);
}

df_tensor *df_upsample_nearest2x(df_graph *g, df_tensor *x)
{
	if (!check_nchw(g, "upsample_nearest2x", x))
		return NULL;
	df_tensor *out = dfi_new(g, 4, (int64_t[]){x->shape[0], x->shape[1], 2 * x->shape[2], 2 * x->shape[3]});
	if (!out)
		return NULL;
	g->be->upsample_nearest2x_forward(g->be, out->data, x->data, x->shape[0] * x->shape[1], x->shape[2],
	                                  x->shape[3]);
	return dfi_track(g, upsample_backward, out, 1, &x, 0, NULL, 0.0f) ? out : NULL;
}

static void avgpool_backward(df_graph *g, const struct dfi_node *node)
{
	df_tensor *x = node->in[0];
	float *dx = dfi_grad(g, x);
	if (dx)
		g->be->avgpool2d_backward(g->be, dx, node->out->grad, x->shape[0] * x->shape[1], x->shape[2],
		                          x->shape[3], node->i[0]);
}

df_tensor *df_avgpool2d(df_graph *g, df_tensor *x, int kernel)
{
	if (!check_nchw(g, "avgpool2d", x))
		return NULL;
	if (kernel < 1 || kernel > x->shape[2] || kernel > x->shape[3])
		return dfi_fail(g, DF_EINVAL, "avgpool2d: kernel %d for input %s (expected 1 .. min(H, W))", kernel,
		                DFI_SHAPE(x));
	df_tensor *out = dfi_new(g, 4, (int64_t[]){x->shape[0], x->shape[1], x->shape[2] / kernel,
	                                           x->shape[3] / kernel});
	if (!out)
		return NULL;
	g->be->avgpool2d_forward(g->be, out->data, x->data, x->shape[0] * x->shape[1], x->shape[2], x->shape[3],
	                         kernel);
	return dfi_track(g, avgpool_backward, out, 1, &x, 1, (int64_t[]){kernel}, 0.0f) ? out : NULL;
}
