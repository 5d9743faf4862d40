/* Ops: broadcast add/sub/mul, scale, add_scalar, modulate, gated residual. */
#include "config.h"
#include <string.h>
#include "../core.h"

/* NumPy broadcasting: right-align the shapes; a dim of 1 stretches. */
static int broadcast(df_graph *g, const char *op, const df_tensor *a, const df_tensor *b, struct df_bcast *bc)
{
	memset(bc, 0, sizeof *bc);
	int nd = a->ndim > b->ndim ? a->ndim : b->ndim;
	bc->ndim = nd;
	int64_t as = 1, bs = 1;
	for (int d = nd - 1; d >= 0; d--) {
		int ad = d - (nd - a->ndim), bd = d - (nd - b->ndim);
		int64_t an = ad >= 0 ? a->shape[ad] : 1, bn = bd >= 0 ? b->shape[bd] : 1;
		if (an != bn && an != 1 && bn != 1) {
			dfi_fail(g, DF_EINVAL, "%s: shapes %s and %s do not broadcast", op, DFI_SHAPE(a), DFI_SHAPE(b));
			return 0;
		}
		bc->shape[d] = an > bn ? an : bn;
		bc->a_stride[d] = an == 1 ? 0 : as;
		bc->b_stride[d] = bn == 1 ? 0 : bs;
		as *= an;
		bs *= bn;
	}
	bc->numel = dfi_numel(nd, bc->shape);
	bc->same_shape = df_tensor_same_shape(a, b);
	return 1;
}

static void binary_backward(df_graph *g, const struct dfi_node *node)
{
	const struct df_bcast *bc = node->aux;
	df_tensor *a = node->in[0], *b = node->in[1];
	g->be->binary_backward(g->be, (int)node->i[0], dfi_grad(g, a), dfi_grad(g, b), node->out->grad, a->data,
	                       b->data, bc);
}

static df_tensor *binary(df_graph *g, const char *name, int op, df_tensor *a, df_tensor *b)
{
	df_tensor *in[2] = {a, b};
	if (!dfi_check_inputs(g, name, 2, in))
		return NULL;
	struct df_bcast bc;
	if (!broadcast(g, name, a, b, &bc))
		return NULL;
	df_tensor *out = dfi_new(g, bc.ndim, bc.shape);
	if (!out)
		return NULL;
	g->be->binary_forward(g->be, op, out->data, a->data, b->data, &bc);
	if (dfi_wants_grad(g, 2, in)) {
		struct dfi_node *node = dfi_record(g, binary_backward, out, 2, in);
		struct df_bcast *kept = node ? dfi_host_alloc(g, sizeof *kept) : NULL;
		if (!kept)
			return NULL;
		*kept = bc;
		node->aux = kept;
		node->i[0] = op;
	}
	return out;
}

df_tensor *df_add(df_graph *g, df_tensor *a, df_tensor *b)
{
	return binary(g, "add", DF_BINARY_ADD, a, b);
}

df_tensor *df_sub(df_graph *g, df_tensor *a, df_tensor *b)
{
	return binary(g, "sub", DF_BINARY_SUB, a, b);
}

df_tensor *df_mul(df_graph *g, df_tensor *a, df_tensor *b)
{
	return binary(g, "mul", DF_BINARY_MUL, a, b);
}

static void affine_backward(df_graph *g, const struct dfi_node *node)
{
	df_tensor *x = node->in[0];
	float *dx = dfi_grad(g, x);
	if (dx)
		g->be->affine_backward(g->be, dx, node->out->grad, node->f[0], x->numel);
}

static df_tensor *affine(df_graph *g, const char *name, df_tensor *x, float mul, float add)
{
	if (!dfi_check_inputs(g, name, 1, &x))
		return NULL;
	df_tensor *out = dfi_new(g, x->ndim, x->shape);
	if (!out)
		return NULL;
	g->be->affine_forward(g->be, out->data, x->data, mul, add, x->numel);
	return dfi_track(g, affine_backward, out, 1, &x, 0, NULL, mul) ? out : NULL;
}

df_tensor *df_scale(df_graph *g, df_tensor *x, float s)
{
	return affine(g, "scale", x, s, 0.0f);
}

df_tensor *df_add_scalar(df_graph *g, df_tensor *x, float s)
{
	return affine(g, "add_scalar", x, 1.0f, s);
}

/* x (N, T, D) with two per-sample (N, D) tensors; shared by modulate,
 * gated_residual and layernorm_modulate. Fills n, t, d. */
int dfi_check_per_sample(df_graph *g, const char *op, const df_tensor *x, const df_tensor *u, const df_tensor *v,
                         int64_t *n, int64_t *t, int64_t *d)
{
	if (x->ndim != 3) {
		dfi_fail(g, DF_EINVAL, "%s: x %s (expected (N, T, D))", op, DFI_SHAPE(x));
		return 0;
	}
	*n = x->shape[0];
	*t = x->shape[1];
	*d = x->shape[2];
	const df_tensor *pair[2] = {u, v};
	for (int i = 0; i < 2; i++) {
		const df_tensor *p = pair[i];
		if (p->numel != *n * *d || p->shape[p->ndim - 1] != *d || (p->ndim != 2 && p->ndim != 3) ||
		    (p->ndim == 3 && p->shape[1] != 1)) {
			dfi_fail(g, DF_EINVAL, "%s: per-sample tensor %s does not match x %s (expected (%lld, %lld))", op,
			         DFI_SHAPE(p), DFI_SHAPE(x), (long long)*n, (long long)*d);
			return 0;
		}
	}
	return 1;
}

static void modulate_backward(df_graph *g, const struct dfi_node *node)
{
	df_tensor *x = node->in[0], *shift = node->in[1], *scale = node->in[2];
	g->be->modulate_backward(g->be, dfi_grad(g, x), dfi_grad(g, shift), dfi_grad(g, scale), node->out->grad,
	                         x->data, scale->data, node->i[0], node->i[1], node->i[2]);
}

df_tensor *df_modulate(df_graph *g, df_tensor *x, df_tensor *shift, df_tensor *scale)
{
	df_tensor *in[3] = {x, shift, scale};
	int64_t n, t, d;
	if (!dfi_check_inputs(g, "modulate", 3, in) || !dfi_check_per_sample(g, "modulate", x, shift, scale, &n, &t, &d))
		return NULL;
	df_tensor *out = dfi_new(g, 3, x->shape);
	if (!out)
		return NULL;
	g->be->modulate_forward(g->be, out->data, x->data, shift->data, scale->data, n, t, d);
	return dfi_track(g, modulate_backward, out, 3, in, 3, (int64_t[]){n, t, d}, 0.0f) ? out : NULL;
}

static void gated_residual_backward(df_graph *g, const struct dfi_node *node)
{
	df_tensor *r = node->in[0], *gate = node->in[1], *x = node->in[2];
	g->be->gated_residual_backward(g->be, dfi_grad(g, r), dfi_grad(g, gate), dfi_grad(g, x), node->out->grad,
	                               gate->data, x->data, node->i[0], node->i[1], node->i[2]);
}

df_tensor *df_gated_residual(df_graph *g, df_tensor *r, df_tensor *gate, df_tensor *x)
{
	df_tensor *in[3] = {r, gate, x};
	int64_t n, t, d;
	if (!dfi_check_inputs(g, "gated_residual", 3, in) ||
	    !dfi_check_per_sample(g, "gated_residual", x, gate, gate, &n, &t, &d))
		return NULL;
	if (!df_tensor_same_shape(r, x))
		return dfi_fail(g, DF_EINVAL, "gated_residual: residual %s and x %s differ", DFI_SHAPE(r), DFI_SHAPE(x));
	df_tensor *out = dfi_new(g, 3, x->shape);
	if (!out)
		return NULL;
	g->be->gated_residual_forward(g->be, out->data, r->data, gate->data, x->data, n, t, d);
	return dfi_track(g, gated_residual_backward, out, 3, in, 3, (int64_t[]){n, t, d}, 0.0f) ? out : NULL;
}
