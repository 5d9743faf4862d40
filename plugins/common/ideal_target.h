/* What STF and the nearest-neighbour objective share: the ideal training
 * target E[x0 | x_t] estimated as a softmax-weighted mean of data points,
 * weights the Gaussian likelihood of x_t under each point,
 *   log w_i = -|x_t - alpha x_i|^2 / (2 sigma^2) (+ const),
 * turned into the backbone's target through the process (process.h):
 * eps_hat = (x_t - alpha x0_hat) / sigma, target = c_x0 x0_hat + c_eps eps_hat.
 * The wrapped parameterisation is DDPM's eps (linear betas, T = 1000) or
 * SiT's velocity on the linear path. */
#ifndef DF_PLUGIN_IDEAL_TARGET_H
#define DF_PLUGIN_IDEAL_TARGET_H

#include <stdint.h>
#include "diffuse/plugin.h"
#include "diffuse/process.h"

/* The parameterisations an estimator can wrap, for DF_SETTING_CHOICE. */
extern const char *const ideal_parameterisations[];

typedef struct ideal_base {
	df_process *process;
	df_prediction pred;
	int T; /* > 0: discrete DDPM time */
	df_dataset_access data; /* count == 0 until attached */
} ideal_base;

int ideal_base_create(ideal_base *b, const char *parameterisation, df_error *err);
void ideal_base_destroy(ideal_base *b);

/* Fills x0_hat (n * d) for the noisy batch xt, given per-sample alpha, sigma
 * and the clean batch x0 (the samples' own sources). */
typedef int (*ideal_estimate_fn)(void *est, const df_loss_batch *batch, const float *x0, const float *xt,
                                 const double *alpha, const double *sigma, int64_t n, int64_t d, float *x0_hat,
                                 df_error *err);

/* The regression loss onto the estimated target (plain mean squared error). */
int ideal_loss(ideal_base *b, df_graph *g, const df_loss_batch *batch, const df_model_call *model,
               ideal_estimate_fn estimate, void *est, df_tensor **loss, df_error *err);

/* The target for one sample from its estimate: eps is the true noise, used
 * where sigma vanishes (the weights are one-hot on the source there). */
void ideal_target_row(const df_coeffs *c, df_prediction pred, const float *xt, const float *x0_hat,
                      const float *eps, int64_t d, float *target);

/* Squared norms of rows. */
void ideal_row_norms(const float *x, int64_t n, int64_t d, float *norms);

/* dot (nq x nr) = q (nq x d) . r (nr x d)^T with BLAS. */
void ideal_dots(const float *q, int64_t nq, const float *r, int64_t nr, int64_t d, float *dot);

/* out = sum_i softmax(logw)_i rows[i] over m rows (log-sum-exp shifted). */
void ideal_softmax_mean(const double *logw, const float *const *rows, int64_t m, int64_t d, float *out);

#endif
