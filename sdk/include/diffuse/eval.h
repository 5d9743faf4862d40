/* Evaluation of a trained pipeline: generate with its sampler and guidance,
 * stream the dataset's test split and the samples through metric
 * components, and put the figures beside a floor and a ceiling.
 *
 * The floor is FD(test split, training split) and the ceiling FD(test
 * split, Gaussian noise), both with the fd metric's default features: a
 * model's FD means something only between the two. */
#ifndef DIFFUSE_EVAL_H
#define DIFFUSE_EVAL_H

#include <stddef.h>
#include <stdint.h>
#include "diffuse/error.h"
#include "diffuse/runtime.h"

#ifdef __cplusplus
extern "C" {
#endif

#define DF_EVAL_DEFAULT_METRICS "fd,prec-recall,class-acc"
#define DF_EVAL_MAX_VALUES 32

typedef struct df_eval_request {
	size_t struct_size;      /* sizeof(df_eval_request) */
	const char *checkpoint;  /* a training checkpoint; NULL: the run folder's */
	int64_t count;           /* images generated (and real images compared); 0: 10000 */
	const char *metrics;     /* comma-separated metric components; NULL: DF_EVAL_DEFAULT_METRICS */
	int no_reference;        /* 1: skip the FD floor and ceiling */
	/* Plain weights under the official names (e.g. exported by another
	 * trainer) in place of the checkpoint; NULL: the checkpoint. */
	const char *weights;
} df_eval_request;

typedef struct df_eval_value {
	char metric[64]; /* the component, e.g. "prec-recall" */
	char name[64];   /* the figure, e.g. "recall" */
	double value;
} df_eval_value;

typedef struct df_eval_result {
	int count;
	df_eval_value values[DF_EVAL_MAX_VALUES];
	int have_reference;
	double fd_floor;      /* FD(test, train) */
	double fd_ceiling;    /* FD(test, noise) */
	int64_t generated, real;
	int reference_cached; /* the fd statistics of the test images came from the run folder */
	char made_by[512];    /* weights, sampler, NFE, guidance, seed of the samples */
	char samples[4096];   /* the samples file (x0, y) in the run folder */
} df_eval_result;

/* Evaluates p's checkpoint into res, and appends {"eval": ...} to
 * options->run_dir/log.jsonl. reg must hold the metric components. In an
 * MPI job (dist.h) every rank calls it: the ranks share the sampling
 * (df_sample_run), rank 0 runs the metrics and writes, and every rank
 * returns the same res, equal to one process's. */
/* Optional interface of a metric, reached through its extension slot
 * under this name: the statistics of its real images saved and loaded, so
 * repeated evaluations in one run folder reuse them (the fd metric has
 * it). load returns non-zero, and leaves the metric as it was, for a file
 * made with other features. */
#define DF_METRIC_REFERENCE_STATS "reference-stats"
typedef struct df_metric_reference_stats {
	size_t struct_size;
	int (*save)(void *self, const char *path, df_error *err);
	int (*load)(void *self, const char *path, df_error *err);
	/* real images the statistics hold */
	int64_t (*count)(void *self);
} df_metric_reference_stats;

int df_eval_run(df_registry *reg, const df_pipeline *p, const df_eval_request *req, const df_stage_options *options,
                df_eval_result *res, df_error *err);

#ifdef __cplusplus
}
#endif
#endif
