/* What the training, sampling and forward stages share: a pipeline's
 * components opened together, checkpoints, and the guided denoiser. */
#ifndef DIFFUSE_STAGE_PRIVATE_H
#define DIFFUSE_STAGE_PRIVATE_H

#include <stdint.h>
#include "diffuse/diffuse.h"

/* Philox streams of the runtime (process.h keeps the objectives' and
 * samplers'), so no two uses collide. */
#define DFR_STREAM_DATA_ORDER 0x6f726465u  /* the permutation of epoch e */
#define DFR_STREAM_LABEL_DROP 0x6c61626cu  /* class dropout per (sample index, step) */
#define DFR_STREAM_SAMPLE_X 0x6e6f6978u    /* initial noise per (sample index) */

/* A pipeline's components, created from its sections. */
typedef struct dfr_model {
	const df_pipeline *pipeline;
	df_ctx *ctx;
	uint64_t seed;
	/* dataset: always opened, for the data shape and the classes */
	const df_dataset_vtable *dataset;
	void *dataset_self;
	df_dataset_info data;
	/* encoder: optional; without one the model works on pixels */
	const df_encoder_vtable *encoder;
	void *encoder_self;
	df_shape3 latent;
	/* backbone and its parameters (the training weights) */
	const df_backbone_vtable *backbone;
	void *backbone_self;
	df_params *params;
	df_backbone_shape shape;
	/* a second instance for EMA sampling, made on first use, so the EMA
	 * set is never written into the training weights */
	void *eval_self;
	df_params *eval_params;
	/* objective and sampler (the sampler is optional for training) */
	const df_objective_vtable *objective;
	void *objective_self;
	df_params *objective_params; /* the objective's own weights, once attached (training) */
	const df_process *process;
	const df_sampler_vtable *sampler;
	void *sampler_self;
	const char *sampler_name;
	/* training state */
	float *ema;         /* numel floats of backend memory, NULL without an EMA set */
	int64_t numel;
	int64_t step;       /* optimiser steps taken */
	int64_t ema_step;   /* EMA updates taken */
	int have_opt;       /* the moments hold a loaded or trained state */
} dfr_model;

/* Opens every component of p; the sampler only when the pipeline has one.
 * Checks the sampler against the objective's process. Initialises the
 * weights from the pipeline's seed. */
int dfr_model_open(dfr_model *m, const df_pipeline *p, df_error *err);
void dfr_model_close(dfr_model *m);
/* Makes the EMA set (a copy of the weights) if the model has none. */
int dfr_model_ensure_ema(dfr_model *m, df_error *err);
/* One EMA update of the trainable part, on the model's device. */
void dfr_model_ema_update(dfr_model *m, float decay);

/* Parameter-sized memory on the model's device (cpu or cuda). The block,
 * the EMA set and the gradients are backend memory: the stages read and
 * write them only through these (or the df_params_* functions of
 * optim.h). Host memory means the block itself is readable on the host
 * (cpu), so no staging copy is needed. */
int dfr_model_host_memory(const dfr_model *m);
float *dfr_model_alloc(dfr_model *m, int64_t n); /* free with dfr_model_free */
void dfr_model_free(dfr_model *m, float *device);
void dfr_model_to_host(dfr_model *m, float *host, const float *device, int64_t n);
void dfr_model_to_device(dfr_model *m, float *device, const float *host, int64_t n);
/* device[0..n) *= scale. */
void dfr_model_scale(dfr_model *m, float *device, int64_t n, float scale);
/* The parameter block that generates with `which` (copies the EMA set into
 * the evaluation instance). */
int dfr_model_weights(dfr_model *m, df_weight_set which, void **self, df_error *err);

/* Checkpoints (format in runtime.h). */
int dfr_checkpoint_save(dfr_model *m, const char *path, df_error *err);
/* Loads parameters, and the EMA set and the moments when the file has them
 * (with_state: also the step counters). A tensor that does not fit names
 * the pipeline settings that differ from the checkpoint's. */
int dfr_checkpoint_load(dfr_model *m, const char *path, int with_state, df_error *err);
/* Plain weights under the official names (no training state). */
int dfr_weights_load(dfr_model *m, const char *path, df_error *err);

/* Samples n items into x (n * C * H * W, host) from initial noise x with
 * labels y (NULL: unconditional) under the sample section's guidance. */
int dfr_sample_batch(dfr_model *m, df_weight_set which, df_graph *g, float *x, const int32_t *y,
                     const int64_t *index, int64_t n, int64_t *nfe, df_error *err);
/* The guidance of the pipeline's sample section (defaults without one). */
void dfr_guidance_from_pipeline(const df_pipeline *p, df_guidance *g);
/* Decodes model-space samples (n, latent) into images (n, data shape). */
int dfr_decode(dfr_model *m, df_graph *g, const float *x, int64_t n, float *images, df_error *err);
/* A grid of EMA (or raw) samples, one row per class, into path. */
int dfr_write_class_grid(dfr_model *m, df_weight_set which, const char *path, char *summary, size_t size,
                         const df_stage_options *o, df_error *err);
/* Tells o->output (when set) that samples or a checkpoint were written. */
void dfr_tell_samples(const df_stage_options *o, const dfr_model *m, df_weight_set which, const char *path,
                      int64_t count, int64_t nfe);
void dfr_tell_checkpoint(const df_stage_options *o, const char *path, int64_t step);

/* path = dir + "/" + name, into buf. */
const char *dfr_join(char *buf, size_t size, const char *dir, const char *name);
/* Seconds on a monotonic clock. */
double dfr_now(void);

#endif
