/* AdamW and EMA over a whole parameter block on its own backend: the
 * backend's fused slots where it has them (device memory), else the host
 * functions of optim.c on the block itself (cpu memory). */
#include "config.h"

#include <math.h>
#include <stdlib.h>

#include "diffuse/optim.h"
#include "core.h"

static const df_backend *block_backend(df_params *p)
{
	df_tensor *first = df_params_count(p) ? df_params_at(p, 0) : NULL;
	return first ? first->backend : NULL;
}

int df_params_adamw_step(df_params *p, const df_adamw_config *cfg, int64_t t, df_error *err)
{
	float *values = p ? df_params_block(p, DF_PARAMS_VALUES) : NULL;
	const df_backend *be = p ? block_backend(p) : NULL;
	if (!values || !be)
		return df_error_set(err, DF_EINVAL, "adamw: the parameter block is empty or not finalized");
	const int64_t n = df_params_trainable_numel(p);
	float *grads = df_params_block(p, DF_PARAMS_GRADS), *m = df_params_block(p, DF_PARAMS_M);
	float *v = df_params_block(p, DF_PARAMS_V);
	if (!be->adamw_step) {
		if (df_adamw_step(values, grads, m, v, NULL, (size_t)n, cfg, t) != 0)
			return df_error_set(err, DF_EINVAL, "adamw: invalid configuration or step %lld", (long long)t);
		return DF_OK;
	}
	/* The step's factors, formed in double exactly as df_adamw_step does;
	 * an invalid configuration is refused by it on an empty block. */
	if (df_adamw_step(NULL, NULL, NULL, NULL, NULL, 0, cfg, t) != 0)
		return df_error_set(err, DF_EINVAL, "adamw: invalid configuration or step %lld", (long long)t);
	const double bias1 = 1.0 - pow(cfg->beta1, (double)t), bias2 = 1.0 - pow(cfg->beta2, (double)t);
	const struct df_adamw_factors f = {
		.decay_factor = (float)(1.0 - cfg->lr * cfg->weight_decay),
		.decays = cfg->weight_decay != 0.0,
		.w1 = (float)(1.0 - cfg->beta1),
		.b2 = (float)cfg->beta2,
		.w2 = (float)(1.0 - cfg->beta2),
		.bias2_sqrt = (float)sqrt(bias2),
		.eps = (float)cfg->eps,
		.neg_step = (float)(-(cfg->lr / bias1)),
	};
	be->adamw_step(be, values, grads, m, v, NULL, n, &f);
	return DF_OK;
}

int df_params_ema_update(df_params *ema, df_params *p, float decay, df_error *err)
{
	float *dst = ema ? df_params_block(ema, DF_PARAMS_VALUES) : NULL;
	float *src = p ? df_params_block(p, DF_PARAMS_VALUES) : NULL;
	const df_backend *be = p ? block_backend(p) : NULL;
	if (!dst || !src || !be)
		return df_error_set(err, DF_EINVAL, "ema: a parameter block is empty or not finalized");
	if (df_params_trainable_numel(ema) != df_params_trainable_numel(p) || block_backend(ema) != be)
		return df_error_set(err, DF_EINVAL, "ema: the two blocks differ in size or device");
	dfi_ema_update(be, dst, src, df_params_trainable_numel(p), decay);
	return DF_OK;
}

void dfi_ema_update(const df_backend *be, float *ema, const float *params, int64_t n, float decay)
{
	if (be->ema_update)
		be->ema_update(be, ema, params, n, decay);
	else
		df_ema_update(ema, params, (size_t)n, decay);
}

/* First non-finite element of x[0..n) on be, or -1. */
static int64_t first_nonfinite(const df_backend *be, const float *x, int64_t n)
{
	if (be->first_nonfinite)
		return be->first_nonfinite(be, x, n);
	for (int64_t i = 0; i < n; i++) /* host memory (cpu) */
		if (!isfinite(x[i]))
			return i;
	return -1;
}

int df_params_check_finite(df_params *p, int part, df_error *err)
{
	if (part != DF_PARAMS_VALUES && part != DF_PARAMS_GRADS)
		return df_error_set(err, DF_EINVAL, "check finite: part %d is neither values nor gradients", part);
	float *block = p ? df_params_block(p, (enum df_params_part)part) : NULL;
	const df_backend *be = p ? block_backend(p) : NULL;
	if (!block || !be)
		return df_error_set(err, DF_EINVAL, "check finite: the parameter block is empty or not finalized");
	const int64_t bad = first_nonfinite(be, block, df_params_trainable_numel(p));
	if (bad < 0)
		return DF_OK;
	/* The tensor holding element `bad`: the last whose offset is <= bad. */
	size_t owner = 0;
	int64_t owner_offset = -1;
	for (size_t i = 0; i < df_params_count(p); i++) {
		const int64_t at = df_params_offset(p, i);
		if (at <= bad && at > owner_offset) {
			owner = i;
			owner_offset = at;
		}
	}
	const df_tensor *t = df_params_at(p, owner);
	return df_error_set(err, DF_ENUMERIC, "non-finite %s: %s, element %lld",
	                    part == DF_PARAMS_GRADS ? "gradient" : "value", t->name ? t->name : "(unnamed)", (long long)(bad - owner_offset));
}

int df_params_clip_grad_norm(df_params *p, double max_norm, double *norm, df_error *err)
{
	float *grads = p ? df_params_block(p, DF_PARAMS_GRADS) : NULL;
	const df_backend *be = p ? block_backend(p) : NULL;
	if (!grads || !be || !norm)
		return df_error_set(err, DF_EINVAL, "clip: the parameter block is empty or not finalized");
	const int64_t n = df_params_trainable_numel(p);
	if (!be->sum_squares) {
		*norm = df_clip_grad_norm(grads, (size_t)n, max_norm);
		return DF_OK;
	}
	/* The same rule as df_clip_grad_norm, the scaling done in place. */
	*norm = sqrt(be->sum_squares(be, grads, n));
	if (max_norm > 0.0 && isfinite(*norm) && *norm > max_norm)
		be->affine_forward(be, grads, grads, (float)(max_norm / (*norm + 1e-6)), 0.0f, n);
	return DF_OK;
}
