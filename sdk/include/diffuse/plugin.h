/* The plugin ABI of diffuse.
 *
 * A plugin is a shared object exporting one symbol, df_plugin_entry, that
 * returns a static descriptor: ABI version, name, version, license and a
 * NULL-terminated list of components. Write it with DF_PLUGIN_DEFINE, which
 * stamps the ABI version this header was compiled with.
 *
 * Compatibility rules (checked by the host when loading):
 *   - abi_major must equal the host's; abi_minor must be <= the host's.
 *   - Every descriptor and vtable starts with struct_size. Fields and slots
 *     are only ever appended; the host copies struct_size bytes into a
 *     zeroed struct of its own size, so slots a plugin never knew read as
 *     NULL. A slot marked "optional" may be NULL.
 *   - Optional interfaces beyond a vtable are reached through the
 *     `extension(self, name)` slot, so the core vtables need not change.
 */
#ifndef DIFFUSE_PLUGIN_H
#define DIFFUSE_PLUGIN_H

#include <stddef.h>
#include <stdint.h>
#include "diffuse/error.h"
#include "diffuse/settings.h"

#ifdef __cplusplus
extern "C" {
#endif

#define DF_ABI_MAJOR 1
#define DF_ABI_MINOR 0
#define DF_PLUGIN_ENTRY_SYMBOL "df_plugin_entry"

/* Defined in tensor.h and process.h; plugins that compute include those. */
typedef struct df_ctx df_ctx;         /* compute context: backend, threads */
typedef struct df_graph df_graph;     /* autograd tape + activation arena */
typedef struct df_tensor df_tensor;
typedef struct df_params df_params;   /* a model's named parameter block */
typedef struct df_process df_process; /* the noise process (process.h) */

typedef enum df_kind {
	DF_KIND_DATASET = 1,
	DF_KIND_ENCODER = 2,
	DF_KIND_BACKBONE = 3,
	DF_KIND_OBJECTIVE = 4,
	DF_KIND_SAMPLER = 5,
	DF_KIND_METRIC = 6,
} df_kind;

/* "dataset", "encoder", ...; NULL for an unknown kind. */
const char *df_kind_name(df_kind kind);

/* ------------------------------------------------------------------ */
/* Dataset: a fixed-size indexed collection of images and labels. */

typedef struct df_dataset_info {
	int64_t count;    /* number of items */
	int channels, height, width;
	int num_classes;  /* 0 when unlabelled */
} df_dataset_info;

typedef struct df_dataset_vtable {
	size_t struct_size;
	int (*open)(const void *settings, void **self, df_error *err);
	void (*close)(void *self);
	void (*info)(void *self, df_dataset_info *info);
	/* Copies items indices[0..n) into host memory: images (n, C, H, W)
	 * float32 scaled to [-1, 1], labels (n) (-1 when unlabelled). */
	int (*fetch)(void *self, const int64_t *indices, int64_t n,
	             float *images, int32_t *labels, df_error *err);
	void *(*extension)(void *self, const char *name); /* optional */
} df_dataset_vtable;

/* ------------------------------------------------------------------ */
/* Encoder: maps images to the space the model works in and back
 * (pixel: identity with scaling; vae: KL autoencoder). */

typedef struct df_shape3 {
	int channels, height, width;
} df_shape3;

typedef struct df_encoder_vtable {
	size_t struct_size;
	int (*create)(const void *settings, df_ctx *ctx, df_shape3 image,
	              void **self, df_error *err);
	void (*destroy)(void *self);
	df_shape3 (*latent_shape)(void *self);
	/* images (N, C, H, W) -> latents (N, c, h, w), scaled as the model sees them. */
	int (*encode)(void *self, df_graph *g, df_tensor *images, df_tensor **latents, df_error *err);
	int (*decode)(void *self, df_graph *g, df_tensor *latents, df_tensor **images, df_error *err);
	df_params *(*params)(void *self); /* optional: NULL for parameter-free encoders */
	void *(*extension)(void *self, const char *name); /* optional, e.g. "train-loss" */
} df_encoder_vtable;

/* Noise drawn while encoding (the vae's posterior sample). An encoder
 * that draws some answers extension(self, DF_ENCODER_NOISE_KEY) with a
 * df_encoder_noise_key; the training stage calls key before each encode
 * with the step and the global index of each of the n images, so image i
 * draws the same noise in any batch, on any number of ranks and after a
 * resume. The key holds for the next encode only. Reached by name, so
 * the ABI version is unchanged. */
#define DF_ENCODER_NOISE_KEY "noise-key"

typedef struct df_encoder_noise_key {
	size_t struct_size;
	void (*key)(void *self, uint64_t step, const int64_t *index, int64_t n);
} df_encoder_noise_key;

/* ------------------------------------------------------------------ */
/* Backbone: the network. forward(x_t, t, cond) on a graph. */

typedef struct df_backbone_shape {
	df_shape3 input;   /* what the encoder produces */
	int out_channels;  /* decided by the objective (e.g. 2C for learned variance) */
	int num_classes;   /* 0 = unconditional */
	int null_class;    /* 1: keep a row for the null label (classifier-free guidance) */
} df_backbone_shape;

typedef struct df_backbone_input {
	size_t struct_size;
	df_tensor *x;          /* (N, C, H, W) */
	df_tensor *t;          /* (N) time as the backbone takes it */
	const int32_t *y;      /* (N) host labels, num_classes = null label; NULL if unconditional */
	df_tensor *context;    /* (N, L, D) cross-attention context or NULL */
	int hidden_block;      /* >= 1: also return the tokens after this block (1-indexed) */
	df_tensor **hidden;    /* where to put them, when hidden_block >= 1 */
} df_backbone_input;

typedef struct df_backbone_vtable {
	size_t struct_size;
	int (*create)(const void *settings, df_ctx *ctx, const df_backbone_shape *shape,
	              void **self, df_error *err);
	void (*destroy)(void *self);
	/* The parameter block, named as in the official PyTorch state_dict. */
	df_params *(*params)(void *self);
	/* The official initialisation, from a seed. */
	int (*init)(void *self, uint64_t seed, df_error *err);
	int (*forward)(void *self, df_graph *g, const df_backbone_input *in,
	               df_tensor **out, df_error *err);
	void *(*extension)(void *self, const char *name); /* optional */
} df_backbone_vtable;

/* ------------------------------------------------------------------ */
/* Objective: owns the noise process and the prediction type, and builds
 * the training loss of a batch. */

/* How an objective calls the model: the runtime binds labels and context. */
typedef struct df_model_call {
	size_t struct_size;
	int (*forward)(void *ctx, df_graph *g, df_tensor *x_t, df_tensor *t,
	               int hidden_block, df_tensor **hidden, df_tensor **out, df_error *err);
	void *ctx;
} df_model_call;

typedef struct df_loss_batch {
	size_t struct_size;
	df_tensor *x0;            /* (N, C, H, W) clean data in model space */
	const int32_t *y;         /* labels after class dropout, or NULL */
	uint64_t seed;            /* run seed */
	uint64_t step;            /* training step: noise is keyed by (seed, index, step) */
	const int64_t *index;     /* (N) global sample indices of the batch */
	df_tensor *images;        /* (N, C, H, W) the clean images before encoding (REPA) */
	float *t_out;             /* optional (N) host: the noise level drawn per sample, in [0, 1] */
	float *loss_out;          /* optional (N) host: the per-sample loss */
} df_loss_batch;

typedef struct df_objective_vtable {
	size_t struct_size;
	int (*create)(const void *settings, df_ctx *ctx, void **self, df_error *err);
	void (*destroy)(void *self);
	/* The process samplers integrate through (process.h); valid while self lives. */
	const df_process *(*process)(void *self);
	/* Output channels the backbone must produce for data of `channels`. */
	int (*out_channels)(void *self, int channels);
	/* Builds the scalar training loss on g. */
	int (*loss)(void *self, df_graph *g, const df_loss_batch *batch,
	            const df_model_call *model, df_tensor **loss, df_error *err);
	df_params *(*params)(void *self); /* optional: objectives with their own weights (REPA's projector) */
	void *(*extension)(void *self, const char *name); /* optional */
} df_objective_vtable;

/* Data beyond the batch. An objective whose target needs more of
 * the training set than the batch (STF's reference batch, the nearest-
 * neighbour estimator's search) answers extension(self,
 * DF_OBJECTIVE_DATASET_ACCESS) with a df_objective_dataset_hook. The
 * training stage calls attach once after create and before the first loss;
 * `access` and what it points to stay valid until the objective is
 * destroyed. Stages that never call loss (sampling) do not attach. The
 * interface is reached by name, so the ABI version is unchanged: a host
 * that never asks leaves the objective unattached, and its loss says so. */
#define DF_OBJECTIVE_DATASET_ACCESS "dataset-access"

typedef struct df_dataset_access {
	size_t struct_size;
	int64_t count; /* items in the training set */
	int64_t dim;   /* values per item in model space (encoded C * H * W) */
	/* Writes items indices[0..n) into out (n * dim floats), in model space:
	 * through the pipeline's encoder, as the batch's x0 is. */
	int (*fetch)(void *ctx, const int64_t *indices, int64_t n, float *out, df_error *err);
	void *ctx;
} df_dataset_access;

typedef struct df_objective_dataset_hook {
	size_t struct_size;
	int (*attach)(void *self, const df_dataset_access *access, df_error *err);
} df_objective_dataset_hook;

/* Weights of the objective's own that depend on the backbone (REPA's
 * projector reads the tokens after block k, so its width is the
 * backbone's). Such an objective answers extension(self,
 * DF_OBJECTIVE_MODEL_ACCESS) with a df_objective_model_hook. The training
 * stage calls attach once, after the backbone is created and initialised
 * and before a checkpoint is resumed; `probe` runs the backbone without
 * labels on a graph of the objective's, to learn the hidden state's shape;
 * `image` is the clean images' shape (the batch's `images`), `input` the
 * backbone's input shape (the encoded x0); `seed` the run's. From then on
 * params() answers the objective's block, which the stage trains with the
 * backbone's (one gradient norm for clipping, the same AdamW settings, no
 * EMA set) and stores in the checkpoint as "objective.<name>" beside the
 * backbone ("opt.m.objective.<name>" ... for the moments). Stages that
 * never call loss never attach, and they skip those tensors when loading,
 * so sampling needs nothing the objective alone uses. Reached by name: the
 * ABI version is unchanged. */
#define DF_OBJECTIVE_MODEL_ACCESS "model-access"
#define DF_OBJECTIVE_PARAMS_PREFIX "objective."

typedef struct df_objective_model_hook {
	size_t struct_size;
	int (*attach)(void *self, const df_model_call *probe, df_shape3 image, df_shape3 input, uint64_t seed,
	              df_error *err);
} df_objective_model_hook;

/* ------------------------------------------------------------------ */
/* Sampler: integrates from noise to data through the objective's process.
 * It sees the model only through `denoise`, which the runtime implements
 * (classifier-free guidance included, once, for every sampler). */

typedef struct df_denoiser {
	size_t struct_size;
	/* Model output at time t for the whole batch x, in the process's
	 * prediction type; out has x's shape, except that a process with
	 * learned variance (df_process_learned_variance) gets its 2C output
	 * channels: the C prediction channels, then the C variance ones.
	 * t is framework time (process.h: 0 data, 1 noise); the runtime hands
	 * the network df_process_model_time(process, t). */
	int (*eval)(void *ctx, df_graph *g, df_tensor *x, double t, df_tensor **out, df_error *err);
	void *ctx;
} df_denoiser;

typedef struct df_sample_job {
	size_t struct_size;
	df_tensor *x;          /* in: initial noise; out: the sample */
	uint64_t seed;         /* noise of stochastic steps: keyed by (seed, index, step) */
	const int64_t *index;  /* (N) global sample indices */
	int64_t nfe;           /* out: number of function (model) evaluations */
} df_sample_job;

typedef struct df_sampler_vtable {
	size_t struct_size;
	int (*create)(const void *settings, df_ctx *ctx, void **self, df_error *err);
	void (*destroy)(void *self);
	/* Refuses, with a clear message, a process it cannot integrate. */
	int (*check)(void *self, const df_process *process, df_error *err);
	int (*sample)(void *self, const df_process *process, const df_denoiser *denoiser,
	              df_sample_job *job, df_error *err);
	void *(*extension)(void *self, const char *name); /* optional */
} df_sampler_vtable;

/* ------------------------------------------------------------------ */
/* Metric: streams real and generated batches, then reports figures. */

typedef struct df_metric_value {
	const char *name;  /* e.g. "fd", "precision" */
	double value;
} df_metric_value;

typedef struct df_metric_vtable {
	size_t struct_size;
	int (*create)(const void *settings, df_ctx *ctx, df_shape3 image, void **self, df_error *err);
	void (*destroy)(void *self);
	/* images (n, C, H, W) host float32 in [-1, 1]; labels may be NULL. */
	int (*update)(void *self, int real, const float *images, const int32_t *labels,
	              int64_t n, df_error *err);
	/* Fills up to max values; returns their count (>= 0) or a df_status. */
	int (*result)(void *self, df_metric_value *values, int max, df_error *err);
	void *(*extension)(void *self, const char *name); /* optional */
} df_metric_vtable;

/* ------------------------------------------------------------------ */
/* Components and the plugin descriptor. */

typedef struct df_component {
	size_t struct_size;
	df_kind kind;
	const char *name;            /* unique per kind across all loaded plugins */
	const char *summary;         /* one line */
	const df_setting *settings;  /* terminated by DF_SETTINGS_END; may be NULL */
	size_t settings_size;        /* sizeof the struct the settings fill */
	const void *vtable;          /* df_<kind>_vtable */
} df_component;

typedef struct df_plugin {
	size_t struct_size;
	uint32_t abi_major, abi_minor;
	const char *name;
	const char *version;
	const char *license;
	const df_component *const *components; /* NULL-terminated */
} df_plugin;

typedef const df_plugin *(*df_plugin_entry_fn)(void);

/* The ABI version DF_PLUGIN_DEFINE stamps. Tests of the host's refusals
 * build a plugin with -DDF_PLUGIN_TEST_ABI_MAJOR=N (or _MINOR) to claim
 * another version; nothing else should set these. */
#ifdef DF_PLUGIN_TEST_ABI_MAJOR
#define DF_PLUGIN_ABI_MAJOR_ DF_PLUGIN_TEST_ABI_MAJOR
#else
#define DF_PLUGIN_ABI_MAJOR_ DF_ABI_MAJOR
#endif
#ifdef DF_PLUGIN_TEST_ABI_MINOR
#define DF_PLUGIN_ABI_MINOR_ DF_PLUGIN_TEST_ABI_MINOR
#else
#define DF_PLUGIN_ABI_MINOR_ DF_ABI_MINOR
#endif

#if defined(__GNUC__)
#define DF_EXPORT __attribute__((visibility("default")))
#else
#define DF_EXPORT
#endif

/* Defines the entry point of a plugin; the ABI version is stamped here.
 *   DF_PLUGIN_DEFINE("my-plugin", "1.0", "MIT", &my_sampler_component);
 */
#define DF_PLUGIN_DEFINE(NAME, VERSION, LICENSE, ...)                         \
	static const df_component *const df_plugin_components_[] = {         \
		__VA_ARGS__, NULL};                                           \
	static const df_plugin df_plugin_descriptor_ = {                     \
		sizeof(df_plugin), DF_PLUGIN_ABI_MAJOR_,                      \
		DF_PLUGIN_ABI_MINOR_, NAME, VERSION,                          \
		LICENSE, df_plugin_components_};                              \
	DF_EXPORT const df_plugin *df_plugin_entry(void);                    \
	DF_EXPORT const df_plugin *df_plugin_entry(void)                     \
	{                                                                     \
		return &df_plugin_descriptor_;                                \
	}

#ifdef __cplusplus
}
#endif
#endif
