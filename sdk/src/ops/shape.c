/* Ops that move elements: permute, slice, chunk, concat, patchify and
 * unpatchify. Each is one strided copy from its input into (part of) its
 * output; the backward is the same copy the other way, accumulating. */
#include "config.h"
#include <string.h>
#include "../core.h"

/* out[out_offset + idx . out_stride] = in[in_offset + idx . in_stride]. */
struct copy_desc {
	int ndim;
	int64_t shape[DF_COPY_MAX_DIMS];
	int64_t out_stride[DF_COPY_MAX_DIMS];
	int64_t in_stride[DF_COPY_MAX_DIMS];
	int64_t out_offset, in_offset;
};

static void contiguous_strides(int ndim, const int64_t *shape, int64_t *stride)
{
	int64_t s = 1;
	for (int d = ndim - 1; d >= 0; d--) {
		stride[d] = s;
		s *= shape[d];
	}
}

static void copy_backward(df_graph *g, const struct dfi_node *node)
{
	const struct copy_desc *c = node->aux;
	df_tensor *x = node->in[0];
	float *dx = dfi_grad(g, x);
	if (dx)
		g->be->strided_copy(g->be, dx + c->in_offset, node->out->grad + c->out_offset, c->ndim, c->shape,
		                    c->in_stride, c->out_stride, 1);
}

/* Runs the copy x -> out and records its backward when x needs one. */
static int copy_into(df_graph *g, df_tensor *x, df_tensor *out, const struct copy_desc *c)
{
	g->be->strided_copy(g->be, out->data + c->out_offset, x->data + c->in_offset, c->ndim, c->shape, c->out_stride,
	                    c->in_stride, 0);
	if (!dfi_wants_grad(g, 1, &x))
		return 1;
	struct dfi_node *node = dfi_record(g, copy_backward, out, 1, &x);
	struct copy_desc *kept = node ? dfi_host_alloc(g, sizeof *kept) : NULL;
	if (!kept)
		return 0;
	*kept = *c;
	node->aux = kept;
	return 1;
}

df_tensor *df_permute(df_graph *g, df_tensor *x, const int *perm)
{
	if (!dfi_check_inputs(g, "permute", 1, &x))
		return NULL;
	if (!perm)
		return dfi_fail(g, DF_EINVAL, "permute: NULL permutation");
	struct copy_desc c = {.ndim = x->ndim};
	int64_t x_stride[DF_MAX_DIMS];
	int seen[DF_MAX_DIMS] = {0};
	contiguous_strides(x->ndim, x->shape, x_stride);
	for (int d = 0; d < x->ndim; d++) {
		if (perm[d] < 0 || perm[d] >= x->ndim || seen[perm[d]]++)
			return dfi_fail(g, DF_EINVAL, "permute: not a permutation of the %d dims of %s", x->ndim,
			                DFI_SHAPE(x));
		c.shape[d] = x->shape[perm[d]];
		c.in_stride[d] = x_stride[perm[d]];
	}
	contiguous_strides(x->ndim, c.shape, c.out_stride);
	df_tensor *out = dfi_new(g, x->ndim, c.shape);
	return out && copy_into(g, x, out, &c) ? out : NULL;
}

static int check_dim(df_graph *g, const char *op, const df_tensor *x, int *dim)
{
	if (*dim < 0)
		*dim += x->ndim;
	if (*dim < 0 || *dim >= x->ndim) {
		dfi_fail(g, DF_EINVAL, "%s: dim out of range for %s", op, DFI_SHAPE(x));
		return 0;
	}
	return 1;
}

df_tensor *df_slice(df_graph *g, df_tensor *x, int dim, int64_t start, int64_t len)
{
	if (!dfi_check_inputs(g, "slice", 1, &x) || !check_dim(g, "slice", x, &dim))
		return NULL;
	if (start < 0 || len <= 0 || start + len > x->shape[dim])
		return dfi_fail(g, DF_EINVAL, "slice: [%lld, %lld) along dim %d is outside %s", (long long)start,
		                (long long)(start + len), dim, DFI_SHAPE(x));
	struct copy_desc c = {.ndim = x->ndim};
	memcpy(c.shape, x->shape, sizeof x->shape);
	c.shape[dim] = len;
	contiguous_strides(x->ndim, x->shape, c.in_stride);
	contiguous_strides(x->ndim, c.shape, c.out_stride);
	c.in_offset = start * c.in_stride[dim];
	df_tensor *out = dfi_new(g, x->ndim, c.shape);
	return out && copy_into(g, x, out, &c) ? out : NULL;
}

int df_chunk(df_graph *g, df_tensor *x, int n, int dim, df_tensor **out)
{
	if (!out || n <= 0) {
		dfi_fail(g, DF_EINVAL, "chunk: %d chunks into %s", n, out ? "outputs" : "NULL");
		return g ? g->status : DF_EINVAL;
	}
	for (int i = 0; i < n; i++)
		out[i] = NULL;
	if (!dfi_check_inputs(g, "chunk", 1, &x) || !check_dim(g, "chunk", x, &dim))
		return g ? g->status : DF_EINVAL;
	if (x->shape[dim] % n) {
		dfi_fail(g, DF_EINVAL, "chunk: dim %d of %s does not split into %d equal chunks", dim, DFI_SHAPE(x), n);
		return g->status;
	}
	int64_t len = x->shape[dim] / n;
	for (int i = 0; i < n; i++)
		if (!(out[i] = df_slice(g, x, dim, i * len, len)))
			return g->status;
	return DF_OK;
}

df_tensor *df_concat(df_graph *g, df_tensor *const *xs, int n, int dim)
{
	if (!g || g->status)
		return NULL;
	if (!xs || n <= 0)
		return dfi_fail(g, DF_EINVAL, "concat: no inputs");
	if (!dfi_check_inputs(g, "concat", n, xs) || !check_dim(g, "concat", xs[0], &dim))
		return NULL;
	int64_t shape[DF_MAX_DIMS], total = 0;
	memcpy(shape, xs[0]->shape, sizeof shape);
	for (int i = 0; i < n; i++) {
		int same = xs[i]->ndim == xs[0]->ndim;
		for (int d = 0; same && d < xs[0]->ndim; d++)
			same = d == dim || xs[i]->shape[d] == xs[0]->shape[d];
		if (!same)
			return dfi_fail(g, DF_EINVAL, "concat: %s does not fit %s along dim %d", DFI_SHAPE(xs[i]),
			                DFI_SHAPE(xs[0]), dim);
		total += xs[i]->shape[dim];
	}
	shape[dim] = total;
	df_tensor *out = dfi_new(g, xs[0]->ndim, shape);
	if (!out)
		return NULL;
	int64_t at = 0;
	for (int i = 0; i < n; i++) {
		struct copy_desc c = {.ndim = xs[i]->ndim};
		memcpy(c.shape, xs[i]->shape, sizeof xs[i]->shape);
		contiguous_strides(c.ndim, c.shape, c.in_stride);
		contiguous_strides(c.ndim, shape, c.out_stride);
		c.out_offset = at * c.out_stride[dim];
		at += xs[i]->shape[dim];
		if (!copy_into(g, xs[i], out, &c))
			return NULL;
	}
	return out;
}

df_tensor *df_patchify(df_graph *g, df_tensor *x, int p)
{
	if (!dfi_check_inputs(g, "patchify", 1, &x))
		return NULL;
	if (x->ndim != 4 || p <= 0 || x->shape[2] % p || x->shape[3] % p)
		return dfi_fail(g, DF_EINVAL, "patchify: %s is not (N, C, H, W) with H and W multiples of %d",
		                DFI_SHAPE(x), p);
	int64_t n = x->shape[0], ch = x->shape[1], h = x->shape[2], w = x->shape[3], hp = h / p, wp = w / p;
	/* x as (N, C, Hp, p, Wp, p) read in the order (N, Hp, Wp, C, p, p). */
	struct copy_desc c = {
		.ndim = 6,
		.shape = {n, hp, wp, ch, p, p},
		.in_stride = {ch * h * w, p * w, p, h * w, w, 1},
	};
	contiguous_strides(6, c.shape, c.out_stride);
	df_tensor *out = dfi_new(g, 3, (int64_t[]){n, hp * wp, ch * p * p});
	return out && copy_into(g, x, out, &c) ? out : NULL;
}

df_tensor *df_unpatchify(df_graph *g, df_tensor *x, int p, int channels, int height, int width)
{
	if (!dfi_check_inputs(g, "unpatchify", 1, &x))
		return NULL;
	if (p <= 0 || channels <= 0 || height <= 0 || width <= 0 || height % p || width % p)
		return dfi_fail(g, DF_EINVAL, "unpatchify: patch %d does not tile %dx%d", p, height, width);
	int64_t hp = height / p, wp = width / p, f = (int64_t)p * p * channels;
	if (x->ndim != 3 || x->shape[1] != hp * wp || x->shape[2] != f)
		return dfi_fail(g, DF_EINVAL, "unpatchify: %s (expected (N, %lld, %lld))", DFI_SHAPE(x),
		                (long long)(hp * wp), (long long)f);
	int64_t n = x->shape[0];
	/* out (N, C, Hp, p, Wp, p) from token (i, j), feature (pr p + pc) C + c. */
	struct copy_desc c = {
		.ndim = 6,
		.shape = {n, channels, hp, p, wp, p},
		.in_stride = {hp * wp * f, 1, wp * f, (int64_t)p * channels, f, channels},
	};
	contiguous_strides(6, c.shape, c.out_stride);
	df_tensor *out = dfi_new(g, 4, (int64_t[]){n, channels, height, width});
	return out && copy_into(g, x, out, &c) ? out : NULL;
}
