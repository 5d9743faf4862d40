/* Shared sampler plumbing (diffuse/sampling.h). */
#include "config.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "diffuse/sampling.h"
#include "diffuse/tensor.h"
#include "process_private.h"

int df_sampling_init(df_sampling *s, const df_process *p, int64_t batch, int64_t dim, const int64_t *index,
                     uint64_t seed, df_host_model_fn model, void *model_ctx, df_error *err)
{
	memset(s, 0, sizeof *s);
	if (!p || batch < 1 || dim < 1)
		return df_error_set(err, DF_EINVAL, "sampling: no process or an empty batch");
	s->process = p;
	s->batch = batch;
	s->dim = dim;
	s->out_dim = df_process_learned_variance(p) ? 2 * dim : dim;
	s->seed = seed;
	s->index = index;
	s->model = model;
	s->model_ctx = model_ctx;
	s->raw = malloc(sizeof(float) * batch * s->out_dim);
	if (!s->raw)
		return df_error_set(err, DF_ENOMEM, "sampling: out of memory for %lld model outputs",
		                    (long long)(batch * s->out_dim));
	return 0;
}

/* The runtime's denoiser behind a host model: x in, output out. */
static int denoiser_model(void *ctx, const float *x, double t, float *out, df_error *err)
{
	df_sampling *s = ctx;
	df_graph_reset(s->graph_);
	df_tensor *xt = df_tensor_from_host(s->graph_, x, s->ndim_, s->shape_);
	int rc = df_graph_status(s->graph_, err);
	if (rc)
		return rc;
	df_tensor *o = NULL;
	rc = s->denoiser_->eval(s->denoiser_->ctx, s->graph_, xt, t, &o, err);
	if (rc)
		return rc;
	if (!o || o->numel != s->batch * s->out_dim)
		return df_error_set(err, DF_EINVAL, "sampling: the model returned %lld values at t = %g, expected %lld",
		                    o ? (long long)o->numel : 0LL, t, (long long)(s->batch * s->out_dim));
	return df_tensor_read(o, out, err);
}

int df_sampling_begin(df_sampling *s, df_ctx *ctx, const df_process *p, const df_denoiser *denoiser,
                      const df_sample_job *job, float **x, df_error *err)
{
	memset(s, 0, sizeof *s);
	*x = NULL;
	if (!job || !job->x || job->x->ndim < 1 || job->x->shape[0] < 1 || !denoiser || !denoiser->eval)
		return df_error_set(err, DF_EINVAL, "sampling: no job, initial noise or denoiser");
	const df_tensor *x0 = job->x;
	int64_t batch = x0->shape[0];
	int rc = df_sampling_init(s, p, batch, x0->numel / batch, job->index, job->seed, denoiser_model, s, err);
	if (rc)
		return rc;
	s->denoiser_ = denoiser;
	s->ndim_ = x0->ndim;
	memcpy(s->shape_, x0->shape, sizeof(int64_t) * x0->ndim);
	s->graph_ = df_graph_create(ctx, DF_GRAPH_NO_GRAD);
	*x = malloc(sizeof(float) * x0->numel);
	if (!s->graph_ || !*x) {
		df_sampling_free(s);
		free(*x);
		*x = NULL;
		return df_error_set(err, DF_ENOMEM, "sampling: out of memory");
	}
	rc = df_tensor_read(x0, *x, err);
	if (rc) {
		df_sampling_free(s);
		free(*x);
		*x = NULL;
	}
	return rc;
}

int df_sampling_end(df_sampling *s, df_sample_job *job, const float *x, df_error *err)
{
	job->nfe = s->nfe;
	for (int64_t i = 0; i < s->batch * s->dim; i++)
		if (!isfinite(x[i]))
			return df_error_set(err, DF_ENUMERIC, "sampling: sample %lld is not finite after %lld evaluations",
			                    (long long)(s->index ? s->index[i / s->dim] : i / s->dim), (long long)s->nfe);
	return df_tensor_write(job->x, x, err);
}

void df_sampling_free(df_sampling *s)
{
	free(s->raw);
	s->raw = NULL;
	if (s->graph_)
		df_graph_destroy(s->graph_);
	s->graph_ = NULL;
}

int df_sampling_run_job(df_ctx *ctx, const df_process *p, const df_denoiser *denoiser, df_sample_job *job,
                        df_sampling_run_fn run, const void *settings, df_error *err)
{
	df_sampling s;
	float *x = NULL;
	int rc = df_sampling_begin(&s, ctx, p, denoiser, job, &x, err);
	if (rc)
		return rc;
	rc = run(settings, &s, x, err);
	job->nfe = s.nfe;
	if (!rc)
		rc = df_sampling_end(&s, job, x, err);
	df_sampling_free(&s);
	free(x);
	return rc;
}

int df_sampling_eval(df_sampling *s, const float *x, double t, df_error *err)
{
	s->nfe++;
	return s->model(s->model_ctx, x, t, s->raw, err);
}

int df_sampling_convert(df_sampling *s, const float *x, double t, df_prediction want, float *dst, df_error *err)
{
	double cx, cm;
	int rc = df_process_convert_coeffs(s->process, t, df_process_prediction(s->process), want, &cx, &cm, err);
	if (rc)
		return rc;
	for (int64_t i = 0; i < s->batch; i++) {
		const float *xi = x + i * s->dim, *mi = s->raw + i * s->out_dim;
		float *di = dst + i * s->dim;
		for (int64_t j = 0; j < s->dim; j++)
			di[j] = (float)(cx * xi[j] + cm * mi[j]);
	}
	return 0;
}

int df_sampling_predict(df_sampling *s, const float *x, double t, df_prediction want, float *dst, df_error *err)
{
	int rc = df_sampling_eval(s, x, t, err);
	return rc ? rc : df_sampling_convert(s, x, t, want, dst, err);
}

void df_sampling_noise(const df_sampling *s, uint64_t step, float *z)
{
	dfp_fill_normal_per_sample(z, s->batch, s->dim, s->index, s->seed, DF_STREAM_SAMPLER, step);
}

void df_vec_axpby(int64_t n, double a, float *x, double b, const float *y)
{
	for (int64_t i = 0; i < n; i++)
		x[i] = (float)(a * x[i] + b * y[i]);
}

int df_sampling_check_times(const df_process *p, const double *t, int n, df_prediction want, df_error *err)
{
	for (int k = 0; k < n; k++) {
		double cx, cm;
		int rc = df_process_convert_coeffs(p, t[k], df_process_prediction(p), want, &cx, &cm, err);
		if (rc)
			return df_error_prefix(err, rc, "step %d of %d", k + 1, n);
	}
	return 0;
}
