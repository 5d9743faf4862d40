/* The ideal-target estimators' shared part (ideal_target.h). */
#include "config.h"
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "diffuse/tensor.h"
#include "ideal_target.h"

const char *const ideal_parameterisations[] = {"eps", "velocity", NULL};

int ideal_base_create(ideal_base *b, const char *parameterisation, df_error *err)
{
	memset(b, 0, sizeof *b);
	int which = df_choice_index(ideal_parameterisations, parameterisation);
	if (which < 0)
		return df_error_set(err, DF_EINVAL, "parameterisation: unknown '%s' (eps, velocity)", parameterisation);
	if (which == 1) {
		b->pred = DF_PRED_VELOCITY;
		return df_process_create_path(&b->process, DF_PATH_LINEAR, DF_PRED_VELOCITY, 0, 0, err);
	}
	enum { T = 1000 };
	double betas[T];
	int rc = df_ddpm_betas("linear", T, betas, err);
	if (!rc)
		rc = df_process_create_discrete(&b->process, "ddpm-linear", betas, T, DF_PRED_EPS, 0, err);
	b->pred = DF_PRED_EPS;
	b->T = T;
	return rc;
}

void ideal_base_destroy(ideal_base *b)
{
	df_process_destroy(b->process);
	b->process = NULL;
}

void ideal_row_norms(const float *x, int64_t n, int64_t d, float *norms)
{
	for (int64_t i = 0; i < n; i++)
		norms[i] = cblas_sdot((int)d, x + i * d, 1, x + i * d, 1);
}

void ideal_dots(const float *q, int64_t nq, const float *r, int64_t nr, int64_t d, float *dot)
{
	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)nq, (int)nr, (int)d, 1.0f, q, (int)d, r, (int)d, 0.0f,
	            dot, (int)nr);
}

void ideal_softmax_mean(const double *logw, const float *const *rows, int64_t m, int64_t d, float *out)
{
	double top = -INFINITY, total = 0;
	for (int64_t i = 0; i < m; i++)
		top = logw[i] > top ? logw[i] : top;
	double *acc = calloc((size_t)d, sizeof *acc);
	if (!acc) {
		memcpy(out, rows[0], (size_t)d * sizeof *out); /* the source alone: the plain target */
		return;
	}
	for (int64_t i = 0; i < m; i++) {
		double w = exp(logw[i] - top);
		if (w == 0)
			continue;
		total += w;
		for (int64_t j = 0; j < d; j++)
			acc[j] += w * rows[i][j];
	}
	for (int64_t j = 0; j < d; j++)
		out[j] = (float)(acc[j] / total);
	free(acc);
}

void ideal_target_row(const df_coeffs *c, df_prediction pred, const float *xt, const float *x0_hat,
                      const float *eps, int64_t d, float *target)
{
	double cx, ce;
	df_coeffs_target(c, pred, &cx, &ce);
	for (int64_t j = 0; j < d; j++) {
		double e = c->sigma > 1e-12 ? (xt[j] - c->alpha * x0_hat[j]) / c->sigma : eps[j];
		target[j] = (float)(cx * x0_hat[j] + ce * e);
	}
}

int ideal_loss(ideal_base *b, df_graph *g, const df_loss_batch *batch, const df_model_call *model,
               ideal_estimate_fn estimate, void *est, df_tensor **loss, df_error *err)
{
	df_tensor *x0 = batch->x0;
	if (!x0 || x0->ndim < 2 || x0->shape[0] < 1 || !batch->index)
		return df_error_set(err, DF_EINVAL, "loss: the batch needs x0 (N, C, ...) and sample indices");
	if (b->data.count <= 0)
		return df_error_set(err, DF_EINVAL, "loss: the objective needs the training set; run it in a training "
		                    "stage (dataset access)");
	int64_t n = x0->shape[0], d = x0->numel / n;
	if (d != b->data.dim)
		return df_error_set(err, DF_EINVAL, "loss: the batch has %lld values per sample, the training set %lld",
		                    (long long)d, (long long)b->data.dim);
	float *block = malloc(sizeof(float) * (size_t)(5 * n * d + n));
	double *u = malloc(sizeof(double) * (size_t)(3 * n));
	df_coeffs *c = malloc(sizeof *c * (size_t)n);
	if (!block || !u || !c) {
		free(block);
		free(u);
		free(c);
		return df_error_set(err, DF_ENOMEM, "loss: out of memory");
	}
	float *x0h = block, *eps = x0h + n * d, *xt = eps + n * d, *x0_hat = xt + n * d, *target = x0_hat + n * d;
	float *tmodel = target + n * d;
	double *alpha = u + n, *sigma = alpha + n;
	int rc = df_tensor_read(x0, x0h, err);
	if (!rc) {
		double lo, hi;
		df_process_interval(b->process, DF_INTERVAL_TRAIN, &lo, &hi);
		df_process_train_draws(batch->seed, batch->step, batch->index, n, d, u, eps);
		for (int64_t i = 0; i < n; i++) {
			double t;
			if (b->T > 0) {
				int k = (int)(u[i] * b->T);
				k = k < 0 ? 0 : k >= b->T ? b->T - 1 : k;
				t = (k + 1.0) / b->T;
			} else {
				t = lo + u[i] * (hi - lo);
			}
			df_process_coeffs(b->process, t, &c[i]);
			alpha[i] = c[i].alpha;
			sigma[i] = c[i].sigma;
			tmodel[i] = (float)df_process_model_time(b->process, t);
			if (batch->t_out)
				batch->t_out[i] = (float)t;
			for (int64_t j = 0; j < d; j++)
				xt[i * d + j] = (float)(c[i].alpha * x0h[i * d + j] + c[i].sigma * eps[i * d + j]);
		}
		rc = estimate(est, batch, x0h, xt, alpha, sigma, n, d, x0_hat, err);
	}
	for (int64_t i = 0; !rc && i < n; i++)
		ideal_target_row(&c[i], b->pred, xt + i * d, x0_hat + i * d, eps + i * d, d, target + i * d);
	df_tensor *out = NULL, *per_sample = NULL;
	if (!rc) {
		df_tensor *xtt = df_tensor_from_host(g, xt, x0->ndim, x0->shape);
		df_tensor *tt = df_tensor_from_host(g, tmodel, 1, (int64_t[]){n});
		rc = df_graph_status(g, err);
		if (!rc)
			rc = model->forward(model->ctx, g, xtt, tt, 0, NULL, &out, err);
	}
	if (!rc && (!out || !df_tensor_same_shape(out, x0)))
		rc = df_error_set(err, DF_EINVAL, "loss: the model output's shape differs from the data's");
	if (!rc) {
		per_sample = df_mse_per_sample(g, out, df_tensor_from_host(g, target, x0->ndim, x0->shape));
		*loss = df_mean(g, per_sample);
		rc = df_graph_status(g, err);
	}
	if (!rc && batch->loss_out)
		rc = df_tensor_read(per_sample, batch->loss_out, err);
	free(block);
	free(u);
	free(c);
	return rc;
}
