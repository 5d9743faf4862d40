/* Op: embedding lookup with host ids (checked against the table size). */
#include "config.h"
#include <string.h>
#include "../core.h"

static void embedding_backward(df_graph *g, const struct dfi_node *node)
{
	df_tensor *table = node->in[0];
	float *dtable = dfi_grad(g, table);
	if (dtable)
		g->be->embedding_backward(g->be, dtable, node->out->grad, node->host, node->i[0], node->i[1]);
}

df_tensor *df_embedding(df_graph *g, df_tensor *table, const int32_t *ids, int64_t n)
{
	if (!dfi_check_inputs(g, "embedding", 1, &table))
		return NULL;
	if (table->ndim != 2)
		return dfi_fail(g, DF_EINVAL, "embedding: table %s (expected (V, D))", DFI_SHAPE(table));
	if (!ids || n <= 0)
		return dfi_fail(g, DF_EINVAL, "embedding: no ids");
	int64_t vocab = table->shape[0], d = table->shape[1];
	for (int64_t i = 0; i < n; i++)
		if (ids[i] < 0 || ids[i] >= vocab)
			return dfi_fail(g, DF_EINVAL, "embedding: id %d at %lld is outside [0, %lld)", ids[i],
			                (long long)i, (long long)vocab);
	df_tensor *out = dfi_new(g, 2, (int64_t[]){n, d});
	if (!out)
		return NULL;
	g->be->embedding_forward(g->be, out->data, table->data, ids, n, d);
	if (!dfi_track(g, embedding_backward, out, 1, &table, 2, (int64_t[]){n, d}, 0.0f))
		return NULL;
	if (g->tail && g->tail->out == out) {
		/* The caller's ids may change before backward: keep a copy. */
		int32_t *kept = dfi_host_alloc(g, (size_t)n * sizeof *kept);
		if (!kept)
			return NULL;
		memcpy(kept, ids, (size_t)n * sizeof *kept);
		g->tail->host = kept;
	}
	return out;
}
