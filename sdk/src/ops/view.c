/* Ops that share storage: reshape and detach. */
#include "config.h"
#include "../core.h"

df_tensor *df_reshape(df_graph *g, df_tensor *x, int ndim, const int64_t *shape)
{
	if (!dfi_check_inputs(g, "reshape", 1, &x))
		return NULL;
	if (ndim < 1 || ndim > DF_MAX_DIMS || !shape)
		return dfi_fail(g, DF_EINVAL, "reshape: %d dims (expected 1 to %d)", ndim, DF_MAX_DIMS);
	/* One dim may be -1: inferred from the others. */
	int64_t resolved[DF_MAX_DIMS], known = 1;
	int infer = -1;
	for (int d = 0; d < ndim; d++) {
		resolved[d] = shape[d];
		if (shape[d] == -1 && infer < 0)
			infer = d;
		else if (shape[d] <= 0)
			return dfi_fail(g, DF_EINVAL, "reshape: dim %d is %lld", d, (long long)shape[d]);
		else
			known *= shape[d];
	}
	if (infer >= 0 && known > 0 && x->numel % known == 0)
		resolved[infer] = x->numel / known;
	if (dfi_numel(ndim, resolved) != x->numel || (infer >= 0 && x->numel % known))
		return dfi_fail(g, DF_EINVAL, "reshape: %s has %lld elements, the new shape another count", DFI_SHAPE(x),
		                (long long)x->numel);
	return dfi_view(g, x, ndim, resolved, 1);
}

df_tensor *df_detach(df_graph *g, df_tensor *x)
{
	if (!dfi_check_inputs(g, "detach", 1, &x))
		return NULL;
	return dfi_view(g, x, x->ndim, x->shape, 0);
}
