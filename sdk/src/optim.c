/* AdamW, EMA, gradient clipping and learning-rate schedules over a flat
 * parameter block (see diffuse/optim.h). */
#include "config.h"

#include <errno.h>
#include <math.h>

#include "diffuse/optim.h"

df_adamw_config df_adamw_defaults(void)
{
	return (df_adamw_config){ .lr = 1e-3, .beta1 = 0.9, .beta2 = 0.999,
				  .eps = 1e-8, .weight_decay = 0.01 };
}

static int adamw_config_valid(const df_adamw_config *c)
{
	return c && isfinite(c->lr) && c->lr >= 0 && c->beta1 >= 0 && c->beta1 < 1 &&
	       c->beta2 >= 0 && c->beta2 < 1 && isfinite(c->eps) && c->eps >= 0 &&
	       isfinite(c->weight_decay) && c->weight_decay >= 0;
}

int df_adamw_step(float *params, const float *grads, float *m, float *v,
		  const uint8_t *decay_mask, size_t n, const df_adamw_config *cfg,
		  int64_t t)
{
	if (!adamw_config_valid(cfg) || t < 1)
		return -EINVAL;
	if (n == 0)
		return 0;
	if (!params || !grads || !m || !v)
		return -EINVAL;

	/* The factors PyTorch forms in Python (double) and hands to its float
	 * kernels; the element-wise operations follow its vectorised CPU
	 * kernels, fused multiply-adds included (lerp, mul + addcmul,
	 * sqrt / c + eps, addcdiv), so results match it to the last bit. */
	const double bias1 = 1.0 - pow(cfg->beta1, (double)t);
	const double bias2 = 1.0 - pow(cfg->beta2, (double)t);
	const float decay_factor = (float)(1.0 - cfg->lr * cfg->weight_decay);
	const int decays = cfg->weight_decay != 0.0;
	const float w1 = (float)(1.0 - cfg->beta1);
	const float b2 = (float)cfg->beta2;
	const float w2 = (float)(1.0 - cfg->beta2);
	const float bias2_sqrt = (float)sqrt(bias2);
	const float eps = (float)cfg->eps;
	const float neg_step = (float)(-(cfg->lr / bias1));
	const int64_t count = (int64_t)n;

#pragma omp parallel for schedule(static)
	for (int64_t i = 0; i < count; i++) {
		float p = params[i];
		float g = grads[i];
		if (decays && (!decay_mask || decay_mask[i]))
			p *= decay_factor;
		/* torch.lerp: weight < 0.5 from m, else the mirrored form from g */
		float mi = w1 < 0.5f ? fmaf(w1, g - m[i], m[i]) : fmaf(-(1.0f - w1), g - m[i], g);
		float vi = v[i] * b2;
		vi = fmaf(w2 * g, g, vi);
		float denom = sqrtf(vi) / bias2_sqrt + eps;
		params[i] = p + neg_step * mi / denom;
		m[i] = mi;
		v[i] = vi;
	}
	return 0;
}

void df_ema_update(float *ema, const float *params, size_t n, float decay)
{
	const float keep = decay, take = 1.0f - decay;
	const int64_t count = (int64_t)n;
#pragma omp parallel for schedule(static)
	for (int64_t i = 0; i < count; i++)
		ema[i] = keep * ema[i] + take * params[i];
}

float df_ema_decay_at(float decay, int64_t k, int warmup)
{
	if (!warmup || k < 0)
		return decay;
	double ramp = (1.0 + (double)k) / (10.0 + (double)k);
	return ramp < decay ? (float)ramp : decay;
}

/* Blocks of the deterministic norm: the sum of squares of each block is
 * computed sequentially in double, then the partial sums are added in
 * block order, so the result is independent of the thread count. Blocks
 * are processed in batches to keep the partial sums on the stack. */
#define NORM_BLOCK 4096
#define NORM_BATCH 256

double df_grad_norm(const float *grads, size_t n)
{
	double total = 0.0;
	const size_t nblocks = (n + NORM_BLOCK - 1) / NORM_BLOCK;

	for (size_t first = 0; first < nblocks; first += NORM_BATCH) {
		double partial[NORM_BATCH];
		const int batch = (int)(nblocks - first < NORM_BATCH ? nblocks - first : NORM_BATCH);
#pragma omp parallel for schedule(static)
		for (int b = 0; b < batch; b++) {
			size_t begin = (first + (size_t)b) * NORM_BLOCK;
			size_t end = begin + NORM_BLOCK < n ? begin + NORM_BLOCK : n;
			double sum = 0.0;
			for (size_t i = begin; i < end; i++)
				sum += (double)grads[i] * (double)grads[i];
			partial[b] = sum;
		}
		for (int b = 0; b < batch; b++)
			total += partial[b];
	}
	return sqrt(total);
}

double df_clip_grad_norm(float *grads, size_t n, double max_norm)
{
	const double norm = df_grad_norm(grads, n);
	if (!(max_norm > 0.0) || !isfinite(norm) || norm <= max_norm)
		return norm;
	const float scale = (float)(max_norm / (norm + 1e-6));
	const int64_t count = (int64_t)n;
#pragma omp parallel for schedule(static)
	for (int64_t i = 0; i < count; i++)
		grads[i] *= scale;
	return norm;
}

double df_lr_at(const df_lr_schedule *s, int64_t step)
{
	if (step < 0)
		step = 0;
	if (step < s->warmup_steps)
		return s->base_lr * (double)(step + 1) / (double)s->warmup_steps;
	if (s->decay != DF_LR_COSINE)
		return s->base_lr;
	const int64_t span = s->total_steps - s->warmup_steps;
	double q = span > 0 ? (double)(step - s->warmup_steps) / (double)span : 1.0;
	if (q > 1.0)
		q = 1.0;
	const double pi = 3.14159265358979323846;
	return s->min_lr + (s->base_lr - s->min_lr) * 0.5 * (1.0 + cos(pi * q));
}
