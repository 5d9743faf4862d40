/* diffuse: optimisers over a flat parameter block.
 *
 * All parameters of a model live in one contiguous float array; gradients,
 * AdamW moments and the EMA copy are parallel arrays of the same length at
 * the same offsets. One call therefore updates everything.
 */
#ifndef DIFFUSE_OPTIM_H
#define DIFFUSE_OPTIM_H

#include <stddef.h>
#include <stdint.h>
#include "diffuse/error.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- AdamW */

/* Scalars are double, like PyTorch's Python floats: the per-step factors
 * are formed in double and rounded to float once, as PyTorch does. */
typedef struct df_adamw_config {
	double lr;           /* learning rate of this step (see df_lr_at) */
	double beta1;        /* 0.9 in PyTorch */
	double beta2;        /* 0.999 in PyTorch */
	double eps;          /* 1e-8 in PyTorch, added after the square root */
	double weight_decay; /* decoupled; 0.01 in PyTorch, 0 for DiT */
} df_adamw_config;

/* PyTorch's defaults: lr 1e-3, betas (0.9, 0.999), eps 1e-8, wd 0.01. */
df_adamw_config df_adamw_defaults(void);

/* One AdamW step over n parameters, as torch.optim.AdamW computes it:
 *
 *   p -= lr * wd * p                       (only where decay_mask[i] != 0)
 *   m  = beta1 * m + (1 - beta1) * g
 *   v  = beta2 * v + (1 - beta2) * g^2
 *   p -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
 *
 * `t` is the 1-based step count (the number of steps taken including this
 * one). decay_mask may be NULL (decay everywhere); biases and norm gains
 * are usually given 0. m and v start as zeros. Parallel with OpenMP; each
 * element is independent, so results do not depend on the thread count.
 * Returns 0, or DF_EINVAL for t < 1, NULL arrays or a config out of range
 * (betas outside [0, 1), eps < 0, lr or wd negative or not finite). */
int df_adamw_step(float *params, const float *grads, float *m, float *v,
		  const uint8_t *decay_mask, size_t n, const df_adamw_config *cfg,
		  int64_t t);

/* ------------------------------------------------------------------ EMA */

/* ema = decay * ema + (1 - decay) * params, over n elements. */
void df_ema_update(float *ema, const float *params, size_t n, float decay);

/* The same two updates over a finalized parameter block wherever its
 * memory lives (cpu or cuda): one fused pass over the trainable part.
 * df_params_ema_update needs two blocks of the same layout (a copy of the
 * model's registration). Both return 0 or a df_status with err filled. */
typedef struct df_params df_params;
int df_params_adamw_step(df_params *p, const df_adamw_config *cfg, int64_t t, df_error *err);
int df_params_ema_update(df_params *ema, df_params *p, float decay, df_error *err);
/* DF_OK when every trainable value of `part` (DF_PARAMS_VALUES or
 * DF_PARAMS_GRADS, see tensor.h) is finite; otherwise DF_ENUMERIC with err
 * naming the first tensor holding a NaN or infinity and the element, so a
 * training loop can stop before the bad update reaches a checkpoint. */
int df_params_check_finite(df_params *p, int part, df_error *err);
/* df_clip_grad_norm over the trainable gradients of the block, wherever
 * they live: *norm gets the norm before clipping (may be non-finite). */
int df_params_clip_grad_norm(df_params *p, double max_norm, double *norm, df_error *err);

/* The decay to use at 0-based EMA step k: min(decay, (1 + k) / (10 + k))
 * when warmup is non-zero, else decay. */
float df_ema_decay_at(float decay, int64_t k, int warmup);

/* ------------------------------------------------------------- clipping */

/* The global L2 norm of grads, accumulated in double over fixed blocks in a
 * fixed order, so it does not depend on the thread count. When max_norm > 0
 * and norm > max_norm, grads are scaled by max_norm / (norm + 1e-6) as
 * torch.nn.utils.clip_grad_norm_ does. A non-finite norm is returned as is
 * and leaves grads untouched, for the caller to report. Returns the norm
 * before clipping. */
double df_clip_grad_norm(float *grads, size_t n, double max_norm);

/* The same norm without scaling. */
double df_grad_norm(const float *grads, size_t n);

/* ---------------------------------------------------- learning-rate schedule */

typedef enum df_lr_decay {
	DF_LR_CONSTANT = 0, /* base_lr after warm-up */
	DF_LR_COSINE = 1,   /* cosine from base_lr to min_lr over the remaining steps */
} df_lr_decay;

typedef struct df_lr_schedule {
	double base_lr;
	int64_t warmup_steps; /* linear warm-up: base_lr * (step + 1) / warmup_steps */
	df_lr_decay decay;
	int64_t total_steps;  /* cosine reaches min_lr at step total_steps */
	double min_lr;
} df_lr_schedule;

/* The learning rate at 0-based step `step`: during warm-up
 * base_lr * (step + 1) / warmup_steps; then base_lr (constant) or
 * min_lr + (base_lr - min_lr) * (1 + cos(pi * q)) / 2 with
 * q = (step - warmup_steps) / (total_steps - warmup_steps) clamped to
 * [0, 1] (cosine). */
double df_lr_at(const df_lr_schedule *schedule, int64_t step);

#ifdef __cplusplus
}
#endif
#endif
