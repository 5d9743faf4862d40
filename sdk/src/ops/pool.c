/* Ops: ReLU and windowed max / average pooling on (N, C, H, W) tensors
 * (the pooling of Inception networks: stride below the kernel, padding). */
#include "config.h"
#include "../core.h"

/* ---- ReLU ------------------------------------------------------------- */

static void relu_backward(df_graph *g, const struct dfi_node *node)
{
	df_tensor *x = node->in[0];
	float *dx = dfi_grad(g, x);
	if (dx)
		g->be->relu_backward(g->be, dx, node->out->grad, x->data, x->numel);
}

df_tensor *df_relu(df_graph *g, df_tensor *x)
{
	if (!dfi_check_inputs(g, "relu", 1, &x))
		return NULL;
	if (!g->be->relu_forward)
		return dfi_fail(g, DF_ENOTSUP, "relu: not supported on %s", df_ctx_device(g->ctx));
	df_tensor *out = dfi_new(g, x->ndim, x->shape);
	if (!out)
		return NULL;
	g->be->relu_forward(g->be, out->data, x->data, x->numel);
	return dfi_track(g, relu_backward, out, 1, &x, 0, NULL, 0.0f) ? out : NULL;
}

/* ---- pooling windows ------------------------------------------------- */

/* The window geometry from the op's arguments, or 0 with an error on g. */
static int pool_shape(df_graph *g, const char *op, df_tensor *x, int kernel, int stride, int padding,
                      struct df_pool2d_shape *s)
{
	if (!dfi_check_inputs(g, op, 1, &x))
		return 0;
	if (x->ndim != 4) {
		dfi_fail(g, DF_EINVAL, "%s: input %s (expected (N, C, H, W))", op, DFI_SHAPE(x));
		return 0;
	}
	/* As PyTorch: padding at most half the window, so every window
	 * holds at least one cell of the image. */
	if (kernel < 1 || stride < 1 || padding < 0 || 2 * padding > kernel) {
		dfi_fail(g, DF_EINVAL, "%s: kernel %d, stride %d, padding %d (expected kernel, stride >= 1, "
		         "0 <= padding <= kernel / 2)", op, kernel, stride, padding);
		return 0;
	}
	const int64_t h = x->shape[2], w = x->shape[3];
	if (h + 2 * padding < kernel || w + 2 * padding < kernel) {
		dfi_fail(g, DF_EINVAL, "%s: a %d window does not fit input %s padded by %d", op, kernel, DFI_SHAPE(x),
		         padding);
		return 0;
	}
	*s = (struct df_pool2d_shape){
		.planes = x->shape[0] * x->shape[1], .h = h, .w = w, .kernel = kernel, .stride = stride,
		.pad = padding, .ho = (h + 2 * padding - kernel) / stride + 1, .wo = (w + 2 * padding - kernel) / stride + 1,
	};
	return 1;
}

/* When gradients flow, a tape node for out keeping s. */
static int pool_track(df_graph *g, dfi_backward_fn backward, df_tensor *out, df_tensor *x,
                      const struct df_pool2d_shape *s)
{
	if (!dfi_wants_grad(g, 1, &x))
		return 1;
	struct df_pool2d_shape *saved = dfi_host_alloc(g, sizeof *saved);
	struct dfi_node *node = saved ? dfi_record(g, backward, out, 1, &x) : NULL;
	if (!node)
		return 0;
	*saved = *s;
	node->aux = saved;
	return 1;
}

static void maxpool_backward(df_graph *g, const struct dfi_node *node)
{
	df_tensor *x = node->in[0];
	float *dx = dfi_grad(g, x);
	if (dx)
		g->be->maxpool2d_backward(g->be, node->aux, dx, node->out->grad, x->data);
}

df_tensor *df_maxpool2d(df_graph *g, df_tensor *x, int kernel, int stride, int padding)
{
	struct df_pool2d_shape s;
	if (!pool_shape(g, "maxpool2d", x, kernel, stride, padding, &s))
		return NULL;
	if (!g->be->maxpool2d_forward)
		return dfi_fail(g, DF_ENOTSUP, "maxpool2d: not supported on %s", df_ctx_device(g->ctx));
	df_tensor *out = dfi_new(g, 4, (int64_t[]){x->shape[0], x->shape[1], s.ho, s.wo});
	if (!out)
		return NULL;
	g->be->maxpool2d_forward(g->be, &s, out->data, x->data);
	return pool_track(g, maxpool_backward, out, x, &s) ? out : NULL;
}

static void avgpool_window_backward(df_graph *g, const struct dfi_node *node)
{
	float *dx = dfi_grad(g, node->in[0]);
	if (dx)
		g->be->avgpool2d_window_backward(g->be, node->aux, dx, node->out->grad);
}

df_tensor *df_avgpool2d_window(df_graph *g, df_tensor *x, int kernel, int stride, int padding, int count_pad)
{
	struct df_pool2d_shape s;
	if (!pool_shape(g, "avgpool2d_window", x, kernel, stride, padding, &s))
		return NULL;
	if (!g->be->avgpool2d_window_forward)
		return dfi_fail(g, DF_ENOTSUP, "avgpool2d_window: not supported on %s", df_ctx_device(g->ctx));
	s.count_pad = count_pad != 0;
	df_tensor *out = dfi_new(g, 4, (int64_t[]){x->shape[0], x->shape[1], s.ho, s.wo});
	if (!out)
		return NULL;
	g->be->avgpool2d_window_forward(g->be, &s, out->data, x->data);
	return pool_track(g, avgpool_window_backward, out, x, &s) ? out : NULL;
}
