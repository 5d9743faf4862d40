/* Graphs: the activation arena, the tape and the backward walk. */
#include "config.h"
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "core.h"

static void *device_alloc(void *owner, size_t bytes)
{
	const df_backend *be = owner;
	return be->alloc(be, bytes);
}

static void device_free(void *owner, void *p)
{
	const df_backend *be = owner;
	be->free(be, p);
}

static void *host_alloc(void *owner, size_t bytes)
{
	(void)owner;
	void *p = NULL;
	return posix_memalign(&p, 64, bytes) == 0 ? p : NULL;
}

static void host_free(void *owner, void *p)
{
	(void)owner;
	free(p);
}

df_graph *df_graph_create(df_ctx *ctx, uint32_t flags)
{
	if (!ctx)
		return NULL;
	df_graph *g = calloc(1, sizeof *g);
	if (!g)
		return NULL;
	g->ctx = ctx;
	g->be = &ctx->backend;
	g->flags = flags;
	dfi_arena_init(&g->device, device_alloc, device_free, (void *)g->be, (size_t)4 << 20);
	dfi_arena_init(&g->host, host_alloc, host_free, NULL, (size_t)64 << 10);
	return g;
}

void df_graph_destroy(df_graph *g)
{
	if (!g)
		return;
	dfi_arena_release(&g->device);
	dfi_arena_release(&g->host);
	if (g->workspace)
		g->be->free(g->be, g->workspace);
	free(g);
}

void df_graph_reset(df_graph *g)
{
	if (!g)
		return;
	dfi_arena_reset(&g->device);
	dfi_arena_reset(&g->host);
	g->tail = NULL;
	g->status = DF_OK;
	g->msg[0] = '\0';
}

int df_graph_status(const df_graph *g, df_error *err)
{
	if (!g)
		return df_error_set(err, DF_EINVAL, "graph: NULL");
	if (g->status)
		return df_error_set(err, g->status, "%s", g->msg);
	return DF_OK;
}

df_ctx *df_graph_ctx(df_graph *g)
{
	return g ? g->ctx : NULL;
}

size_t df_graph_arena_bytes(const df_graph *g)
{
	return g ? dfi_arena_bytes(&g->device) + dfi_arena_bytes(&g->host) + g->workspace_bytes : 0;
}

size_t df_graph_mark(const df_graph *g)
{
	return g ? dfi_arena_mark(&g->device) : 0;
}

struct kept_storage {
	size_t offset, bytes;
	df_tensor *t;
};

static int kept_by_offset(const void *a, const void *b)
{
	const struct kept_storage *x = a, *y = b;
	return (x->offset > y->offset) - (x->offset < y->offset);
}

/* Moves a kept tensor to where the arena now hands it out: an earlier block,
 * or lower in the same block, where the ranges may overlap; then copy in
 * pieces no longer than the distance between them. */
static void move_down(const df_backend *be, char *dst, const char *src, size_t bytes)
{
	if (dst + bytes <= src || src + bytes <= dst) {
		be->copy(be, dst, src, bytes);
		return;
	}
	size_t step = (size_t)(src - dst);
	for (size_t done = 0; done < bytes; done += step)
		be->copy(be, dst + done, src + done, bytes - done < step ? bytes - done : step);
}

void df_graph_rewind(df_graph *g, size_t mark, df_tensor *const *keep, int n_keep)
{
	if (!g || g->status || !(g->flags & DF_GRAPH_NO_GRAD) || n_keep < 0 || (n_keep > 0 && !keep))
		return;
	struct kept_storage *kept = n_keep ? dfi_host_alloc(g, (size_t)n_keep * sizeof *kept) : NULL;
	if (n_keep && !kept)
		return;
	int n = 0;
	for (int i = 0; i < n_keep; i++) {
		size_t offset;
		if (keep[i] && keep[i]->data && dfi_arena_offset(&g->device, keep[i]->data, &offset) && offset >= mark)
			kept[n++] = (struct kept_storage){offset, (size_t)keep[i]->numel * sizeof(float), keep[i]};
	}
	qsort(kept, (size_t)n, sizeof *kept, kept_by_offset);
	for (int i = 1; i < n; i++) {
		if (kept[i].offset < kept[i - 1].offset + kept[i - 1].bytes &&
		    (kept[i].offset != kept[i - 1].offset || kept[i].bytes != kept[i - 1].bytes)) {
			dfi_fail(g, DF_EINVAL, "df_graph_rewind: kept tensors %s and %s partly overlap",
			         DFI_SHAPE(kept[i - 1].t), DFI_SHAPE(kept[i].t));
			return;
		}
	}
	dfi_arena_rewind(&g->device, mark);
	/* In ascending order each kept tensor lands at or below where it was
	 * (packing a subset of the allocations), so nothing is overwritten
	 * before it has moved. */
	for (int i = 0; i < n; i++) {
		char *src = (char *)kept[i].t->data;
		if (i > 0 && kept[i].offset == kept[i - 1].offset) {
			kept[i].t->data = kept[i - 1].t->data; /* a second handle on the same storage */
			continue;
		}
		char *dst = dfi_arena_alloc(&g->device, kept[i].bytes);
		if (!dst) {
			dfi_fail(g, DF_ENOMEM, "df_graph_rewind: out of memory");
			return;
		}
		if (dst != src)
			move_down(g->be, dst, src, kept[i].bytes);
		kept[i].t->data = (float *)dst;
	}
}

/* ------------------------------------------------------------------ */
/* Op-layer helpers. */

df_tensor *dfi_fail(df_graph *g, int status, const char *fmt, ...)
{
	if (g && g->status == DF_OK) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(g->msg, sizeof g->msg, fmt, ap);
		va_end(ap);
		g->status = status;
	}
	return NULL;
}

int dfi_check_inputs(df_graph *g, const char *op, int n, df_tensor *const *xs)
{
	if (!g || g->status)
		return 0;
	for (int i = 0; i < n; i++) {
		if (!xs[i]) {
			dfi_fail(g, DF_EINVAL, "%s: input %d is NULL", op, i);
			return 0;
		}
		if (xs[i]->backend != g->be) {
			dfi_fail(g, DF_EINVAL, "%s: input %d belongs to another context", op, i);
			return 0;
		}
		if (!xs[i]->data) {
			dfi_fail(g, DF_EINVAL, "%s: input %d has no storage (parameters not finalized?)", op, i);
			return 0;
		}
	}
	return 1;
}

int64_t dfi_numel(int ndim, const int64_t *shape)
{
	int64_t n = 1;
	for (int i = 0; i < ndim; i++)
		n *= shape[i];
	return n;
}

const char *dfi_shape_str(const df_tensor *t, char *buf, size_t n)
{
	size_t used = (size_t)snprintf(buf, n, "(");
	for (int i = 0; t && i < t->ndim && used < n; i++)
		used += (size_t)snprintf(buf + used, n - used, i ? ", %lld" : "%lld", (long long)t->shape[i]);
	if (used < n)
		snprintf(buf + used, n - used, ")");
	return buf;
}

static struct dfi_tensor *tensor_struct(df_graph *g, int ndim, const int64_t *shape)
{
	if (ndim < 1 || ndim > DF_MAX_DIMS || !shape) {
		dfi_fail(g, DF_EINVAL, "tensor: %d dims (expected 1 to %d)", ndim, DF_MAX_DIMS);
		return NULL;
	}
	for (int i = 0; i < ndim; i++) {
		if (shape[i] <= 0) {
			dfi_fail(g, DF_EINVAL, "tensor: dim %d is %lld (must be positive)", i, (long long)shape[i]);
			return NULL;
		}
	}
	struct dfi_tensor *it = dfi_arena_alloc(&g->host, sizeof *it);
	if (!it) {
		dfi_fail(g, DF_ENOMEM, "tensor: out of host memory");
		return NULL;
	}
	memset(it, 0, sizeof *it);
	it->t.ndim = ndim;
	memcpy(it->t.shape, shape, (size_t)ndim * sizeof *shape);
	it->t.numel = dfi_numel(ndim, shape);
	it->t.backend = g->be;
	return it;
}

df_tensor *dfi_new(df_graph *g, int ndim, const int64_t *shape)
{
	if (!g || g->status)
		return NULL;
	struct dfi_tensor *it = tensor_struct(g, ndim, shape);
	if (!it)
		return NULL;
	it->t.data = dfi_arena_alloc(&g->device, (size_t)it->t.numel * sizeof(float));
	if (!it->t.data)
		return dfi_fail(g, DF_ENOMEM, "tensor %s: out of memory", DFI_SHAPE(&it->t));
	return &it->t;
}

df_tensor *dfi_view(df_graph *g, df_tensor *x, int ndim, const int64_t *shape, int keep_grad)
{
	struct dfi_tensor *it = tensor_struct(g, ndim, shape);
	if (!it)
		return NULL;
	it->t.data = x->data;
	if (keep_grad && (x->flags & DF_TENSOR_NEEDS_GRAD) && !(g->flags & DF_GRAPH_NO_GRAD)) {
		it->view_of = x;
		it->t.grad = x->grad;
		it->t.flags = DF_TENSOR_NEEDS_GRAD;
	}
	return &it->t;
}

df_tensor *dfi_stats(df_graph *g, int64_t n)
{
	return dfi_new(g, 1, (int64_t[]){n});
}

void *dfi_host_alloc(df_graph *g, size_t bytes)
{
	void *p = dfi_arena_alloc(&g->host, bytes);
	if (!p)
		dfi_fail(g, DF_ENOMEM, "graph: out of host memory");
	return p;
}

void *dfi_workspace(df_graph *g, size_t bytes)
{
	if (bytes <= g->workspace_bytes)
		return g->workspace;
	void *p = g->be->alloc(g->be, bytes);
	if (!p) {
		dfi_fail(g, DF_ENOMEM, "graph: out of memory for a %zu-byte workspace", bytes);
		return NULL;
	}
	if (g->workspace)
		g->be->free(g->be, g->workspace);
	g->workspace = p;
	g->workspace_bytes = bytes;
	return p;
}

int dfi_wants_grad(const df_graph *g, int n, df_tensor *const *xs)
{
	if (g->flags & DF_GRAPH_NO_GRAD)
		return 0;
	for (int i = 0; i < n; i++)
		if (xs[i] && (xs[i]->flags & DF_TENSOR_NEEDS_GRAD))
			return 1;
	return 0;
}

struct dfi_node *dfi_record(df_graph *g, dfi_backward_fn backward, df_tensor *out, int n, df_tensor *const *xs)
{
	struct dfi_node *node = dfi_host_alloc(g, sizeof *node);
	if (!node)
		return NULL;
	memset(node, 0, sizeof *node);
	node->backward = backward;
	node->out = out;
	for (int i = 0; i < n && i < DFI_NODE_INPUTS; i++)
		node->in[i] = xs[i];
	node->prev = g->tail;
	g->tail = node;
	out->flags |= DF_TENSOR_NEEDS_GRAD;
	return node;
}

int dfi_track(df_graph *g, dfi_backward_fn backward, df_tensor *out, int n, df_tensor *const *xs, int nargs,
              const int64_t *args, float f0)
{
	if (!dfi_wants_grad(g, n, xs))
		return 1;
	struct dfi_node *node = dfi_record(g, backward, out, n, xs);
	if (!node)
		return 0;
	for (int i = 0; i < nargs && i < 8; i++)
		node->i[i] = args[i];
	node->f[0] = f0;
	return 1;
}

float *dfi_grad(df_graph *g, df_tensor *x)
{
	if (!x || !(x->flags & DF_TENSOR_NEEDS_GRAD))
		return NULL;
	if (x->grad)
		return x->grad;
	if (x->flags & DF_TENSOR_PARAM)
		return NULL; /* frozen */
	struct dfi_tensor *it = (struct dfi_tensor *)x;
	if (it->view_of) {
		x->grad = dfi_grad(g, it->view_of);
		return x->grad;
	}
	x->grad = dfi_arena_alloc(&g->device, (size_t)x->numel * sizeof(float));
	if (!x->grad) {
		dfi_fail(g, DF_ENOMEM, "backward: out of memory for a gradient of %s", DFI_SHAPE(x));
		return NULL;
	}
	g->be->zero(g->be, x->grad, (size_t)x->numel * sizeof(float));
	return x->grad;
}

/* ------------------------------------------------------------------ */
/* Public tensor functions. */

df_tensor *df_tensor_new(df_graph *g, int ndim, const int64_t *shape)
{
	return dfi_new(g, ndim, shape);
}

df_tensor *df_tensor_zeros(df_graph *g, int ndim, const int64_t *shape)
{
	df_tensor *t = dfi_new(g, ndim, shape);
	if (t)
		g->be->zero(g->be, t->data, (size_t)t->numel * sizeof(float));
	return t;
}

df_tensor *df_tensor_from_host(df_graph *g, const float *src, int ndim, const int64_t *shape)
{
	if (g && !g->status && !src)
		return dfi_fail(g, DF_EINVAL, "df_tensor_from_host: NULL source");
	df_tensor *t = dfi_new(g, ndim, shape);
	if (t)
		g->be->to_device(g->be, t->data, src, (size_t)t->numel * sizeof(float));
	return t;
}

int df_tensor_write(df_tensor *t, const float *src, df_error *err)
{
	if (!t || !src || !t->data)
		return df_error_set(err, DF_EINVAL, "df_tensor_write: NULL tensor, source or storage");
	t->backend->to_device(t->backend, t->data, src, (size_t)t->numel * sizeof(float));
	return DF_OK;
}

int df_tensor_read(const df_tensor *t, float *dst, df_error *err)
{
	if (!t || !dst || !t->data)
		return df_error_set(err, DF_EINVAL, "df_tensor_read: NULL tensor, destination or storage");
	t->backend->to_host(t->backend, dst, t->data, (size_t)t->numel * sizeof(float));
	return DF_OK;
}

int df_tensor_read_grad(const df_tensor *t, float *dst, df_error *err)
{
	if (!t || !dst)
		return df_error_set(err, DF_EINVAL, "df_tensor_read_grad: NULL tensor or destination");
	if (!t->grad)
		return df_error_set(err, DF_EINVAL, "df_tensor_read_grad: %s has no gradient",
		                    t->name ? t->name : "tensor");
	t->backend->to_host(t->backend, dst, t->grad, (size_t)t->numel * sizeof(float));
	return DF_OK;
}

int df_tensor_same_shape(const df_tensor *a, const df_tensor *b)
{
	if (!a || !b || a->ndim != b->ndim)
		return 0;
	for (int i = 0; i < a->ndim; i++)
		if (a->shape[i] != b->shape[i])
			return 0;
	return 1;
}

/* ------------------------------------------------------------------ */
/* Backward. */

int df_backward(df_graph *g, df_tensor *loss, df_error *err)
{
	if (!g || !loss)
		return df_error_set(err, DF_EINVAL, "df_backward: NULL graph or loss");
	if (g->status)
		return df_error_set(err, g->status, "%s", g->msg);
	if (g->flags & DF_GRAPH_NO_GRAD)
		return df_error_set(err, DF_EINVAL, "df_backward: the graph was made with DF_GRAPH_NO_GRAD");
	if (loss->numel != 1)
		return df_error_set(err, DF_EINVAL, "df_backward: loss has %lld elements (expected one; reduce it first)",
		                    (long long)loss->numel);
	if (!(loss->flags & DF_TENSOR_NEEDS_GRAD))
		return df_error_set(err, DF_EINVAL, "df_backward: the loss does not depend on any trainable parameter");
	float *seed = dfi_grad(g, loss);
	if (!seed)
		return df_graph_status(g, err);
	float one = 1.0f;
	g->be->to_device(g->be, seed, &one, sizeof one);
	for (const struct dfi_node *node = g->tail; node; node = node->prev) {
		if (!node->out->grad)
			continue; /* nothing downstream of it reached the loss */
		node->backward(g, node);
		if (g->status)
			break;
	}
	return df_graph_status(g, err);
}
