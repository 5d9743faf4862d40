/* What samplers share: the model seen through host arrays, conversions to
 * the quantity a sampler integrates, per-sample noise.
 *
 * A sampler's own arithmetic is a few vector updates per network call, so
 * its state lives in host float arrays of batch * dim values; each model
 * evaluation copies x in and the output back (small next to a network
 * forward). The same code then runs against the runtime's denoiser
 * (df_sampling_begin) or against a plain host function (df_sampling_init),
 * which is how the samplers are tested against closed forms. */
#ifndef DIFFUSE_SAMPLING_H
#define DIFFUSE_SAMPLING_H

#include <stdint.h>
#include "diffuse/error.h"
#include "diffuse/plugin.h"
#include "diffuse/process.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A model on host arrays: out (batch * out_dim) = model output at x (batch
 * * dim) and framework time t, in the process's prediction type. */
typedef int (*df_host_model_fn)(void *ctx, const float *x, double t, float *out, df_error *err);

typedef struct df_sampling {
	const df_process *process;
	int64_t batch;        /* N */
	int64_t dim;          /* values per sample (C * H * W) */
	int64_t out_dim;      /* values per sample of a model output: dim, or 2 dim with learned variance */
	uint64_t seed;
	const int64_t *index; /* (N) global sample indices: noise is keyed by them */
	int64_t nfe;          /* model evaluations so far */
	float *raw;           /* (N, out_dim) the last model output */
	/* the model */
	df_host_model_fn model;
	void *model_ctx;
	/* private: the binding to a runtime denoiser */
	const df_denoiser *denoiser_;
	df_graph *graph_;
	int ndim_;
	int64_t shape_[5];
} df_sampling;

/* Binds a host model; index may be NULL (then sample i has index i). */
int df_sampling_init(df_sampling *s, const df_process *p, int64_t batch, int64_t dim, const int64_t *index,
                     uint64_t seed, df_host_model_fn model, void *model_ctx, df_error *err);
/* Binds the runtime's denoiser for a job and copies job->x into *x
 * (batch * dim floats, freed by df_sampling_free). */
int df_sampling_begin(df_sampling *s, df_ctx *ctx, const df_process *p, const df_denoiser *denoiser,
                      const df_sample_job *job, float **x, df_error *err);
/* Writes x back into job->x and the evaluation count into job->nfe. */
int df_sampling_end(df_sampling *s, df_sample_job *job, const float *x, df_error *err);
void df_sampling_free(df_sampling *s);

/* A sampler's algorithm on host arrays: x holds the initial noise and
 * receives the sample. */
typedef int (*df_sampling_run_fn)(const void *settings, df_sampling *s, float *x, df_error *err);
/* The whole df_sampler_vtable.sample: begin, run, end, free. */
int df_sampling_run_job(df_ctx *ctx, const df_process *p, const df_denoiser *denoiser, df_sample_job *job,
                        df_sampling_run_fn run, const void *settings, df_error *err);

/* One model evaluation at (x, t) into s->raw; counts it. */
int df_sampling_eval(df_sampling *s, const float *x, double t, df_error *err);
/* Converts the prediction channels of s->raw (evaluated at x, t) to `want`. */
int df_sampling_convert(df_sampling *s, const float *x, double t, df_prediction want, float *dst, df_error *err);
/* Both: dst = the model's `want` at (x, t). */
int df_sampling_predict(df_sampling *s, const float *x, double t, df_prediction want, float *dst, df_error *err);
/* The learned-variance value of element j of sample i in s->raw. */
static inline float df_sampling_variance_value(const df_sampling *s, int64_t i, int64_t j)
{
	return s->raw[i * s->out_dim + s->dim + j];
}

/* For a sampler's check(): refuses, naming the step, a grid on which the
 * model's output cannot be turned into `want` at one of the evaluation
 * times t[0..n) (e.g. a score model at sigma = 0). */
int df_sampling_check_times(const df_process *p, const double *t, int n, df_prediction want, df_error *err);

/* z (batch * dim) = standard normals keyed by (seed, index[i], step) on
 * the DF_STREAM_SAMPLER stream: the same sample gets the same noise in
 * any batch. */
void df_sampling_noise(const df_sampling *s, uint64_t step, float *z);

/* x = a * x + b * y elementwise over n values, in double. */
void df_vec_axpby(int64_t n, double a, float *x, double b, const float *y);

#ifdef __cplusplus
}
#endif
#endif
