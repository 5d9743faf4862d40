/* The runtime: what the `diffuse` program is made of, for any program that
 * wants to embed pipelines (the CLI in host/ is a thin layer over this).
 *
 * - A registry loads plugin files and keeps their components. Files it
 *   refuses (no entry symbol, another ABI, a duplicate component, a
 *   world-writable location, a malformed descriptor) are kept as one line
 *   each, "file: reason", and loading goes on.
 * - A pipeline is a libconfig file resolved against a registry: every
 *   section names its component, every setting is checked against the
 *   declaration and filled into a typed struct. Errors read
 *   "file:line: message"; overrides given on the command line read
 *   "<command line>: message".
 * - Settings can also be handled without files (df_settings_*), e.g. by a
 *   program that builds its own configuration.
 *
 * libconfig is private to the runtime: nothing here exposes it.
 */
#ifndef DIFFUSE_RUNTIME_H
#define DIFFUSE_RUNTIME_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include "diffuse/error.h"
#include "diffuse/settings.h"
#include "diffuse/plugin.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------ */
/* Settings without a file. `values` points to a struct of the size the
 * declaration belongs to; string fields in it are owned by the caller of
 * df_settings_defaults/df_settings_set and freed by df_settings_release. */

/* "int", "float", "bool", "string", "list"; "?" for an unknown type. */
const char *df_setting_type_name(df_setting_type type);
/* The declared setting called name, or NULL. */
const df_setting *df_settings_find(const df_setting *decl, const char *name);
/* Checks a declaration: names, types, offsets within settings_size,
 * defaults that parse and lie in range. The loader refuses a component
 * whose declaration fails this. */
int df_settings_check(const df_setting *decl, size_t settings_size, df_error *err);
/* Zeroes every declared field and fills every default (call it once per
 * struct, or release first). Required settings (no default)
 * stay zero/NULL. */
int df_settings_defaults(const df_setting *decl, void *values, df_error *err);
/* Parses text as the declared type of `name` (as written after -o
 * key=value), checks range and choices, and stores it. On error, err
 * reads "name: why" and values is unchanged. */
int df_settings_set(const df_setting *decl, void *values, const char *name,
                    const char *text, df_error *err);
/* Writes the value of s in values as pipeline text ("0.001", "true",
 * "\"linear\"", "[1.0, 2.0]"); returns the length as snprintf does. */
int df_settings_format(const df_setting *s, const void *values, char *buf, size_t size);
/* Frees the strings df_settings_defaults/df_settings_set stored. */
void df_settings_release(const df_setting *decl, void *values);
/* The candidate closest to name by edit distance, when close enough to be
 * a likely misspelling; NULL otherwise. candidates is NULL-terminated. */
const char *df_suggest(const char *name, const char *const *candidates);

/* ------------------------------------------------------------------ */
/* Registry of loaded components. */

typedef struct df_registry df_registry;

/* A loaded component. `component` and its vtable are host-sized copies
 * (slots the plugin did not know read NULL); they live as long as the
 * registry. */
typedef struct df_component_info {
	const df_component *component;
	const char *plugin;   /* plugin name */
	const char *version;  /* plugin version */
	const char *license;
	const char *file;     /* the shared object it came from */
} df_component_info;

int df_registry_create(df_registry **reg, df_error *err);
/* Unloads every plugin; components obtained from reg become invalid. */
void df_registry_destroy(df_registry *reg);

/* The directory the install keeps its plugins in. */
const char *df_registry_system_dir(void);
/* Loads the standard search path: the install's plugin directory (or, when
 * the environment sets DIFFUSE_PLUGIN_SYSTEM_PATH, that list instead; empty
 * = none), then every entry of DIFFUSE_PLUGIN_PATH. Missing directories are
 * skipped. Refusals are recorded, not returned: only an allocation failure
 * fails. */
int df_registry_load_default(df_registry *reg, df_error *err);
/* Loads a colon-separated list of directories and plugin files. Relative
 * entries are taken from base_dir when it is not NULL. */
int df_registry_load_path(df_registry *reg, const char *path, const char *base_dir, df_error *err);
/* Loads every *.so of a directory, in name order. A directory that does
 * not exist is not an error. */
int df_registry_load_dir(df_registry *reg, const char *dir, df_error *err);
/* Loads one plugin file. When the file is refused as a whole it returns
 * DF_EINVAL (DF_EIO when it cannot be found) with "file: reason" in err,
 * and records that line; a duplicate component is recorded but does not
 * fail the file. Loading the same file twice is a no-op. */
int df_registry_load_file(df_registry *reg, const char *file, df_error *err);

size_t df_registry_count(const df_registry *reg);
const df_component_info *df_registry_get(const df_registry *reg, size_t index);
/* The component of that kind and name; kind 0 matches any kind. */
const df_component_info *df_registry_find(const df_registry *reg, df_kind kind, const char *name);

/* Refusals so far, each "file: reason", in the order they happened. */
size_t df_registry_refusal_count(const df_registry *reg);
const char *df_registry_refusal(const df_registry *reg, size_t index);

/* The kind called name ("sampler" -> DF_KIND_SAMPLER), or 0. */
df_kind df_kind_from_name(const char *name);

/* ------------------------------------------------------------------ */
/* The pipeline's own sections (train, sample, and the top level), declared
 * with the same mechanism as a component's settings. */

typedef struct df_pipeline_settings {
	const char *name;        /* the run's folder under the runs directory */
	int64_t seed;
	const char *plugin_path; /* extra plugin directories, relative to the file */
	const char *device;      /* "cpu" or "cuda" */
	int64_t threads;         /* 0: physical cores */
} df_pipeline_settings;

typedef struct df_train_settings {
	int64_t batch;
	double lr;
	int64_t steps;
	double ema;              /* EMA decay; 0 disables the EMA set */
	double weight_decay;
	double grad_clip;        /* global norm; 0 disables clipping */
	int64_t warmup;          /* linear warm-up steps of the learning rate */
	double class_dropout;    /* label dropout for classifier-free guidance */
	int64_t log_every;
	int64_t checkpoint_every;
	/* appended by the training stage */
	const char *lr_schedule; /* "constant" or "cosine" after the warm-up */
	double min_lr;           /* where cosine ends */
	int ema_warmup;          /* decay min(ema, (1 + k) / (10 + k)) at EMA step k */
	int64_t sample_every;    /* steps between EMA sample grids; 0 = only at the end */
	/* appended for data-parallel runs */
	int64_t micro_batch;     /* images per forward/backward; 0 = the rank's shard */
	const char *reduce;      /* "mean" or "deterministic" */
} df_train_settings;

typedef struct df_sample_settings {
	int64_t count;
	const char *grid;        /* PNG grid written into the run folder */
	int64_t batch;
	const char *weights;     /* "ema" or "raw" */
	int64_t class_label;     /* -1: cycle through the classes */
	/* appended by the sampling stage: guidance (see "Stages" below) */
	double cfg_scale;              /* 1 = no guidance */
	df_list cfg_interval;          /* [lo, hi] in framework time */
	const char *guidance_channels; /* "all" or "first3" (the official DiT/SiT code) */
} df_sample_settings;

/* The declared settings of a runtime section ("" for the top level,
 * "train", "sample"), and the size of its struct; NULL if none. */
const df_setting *df_runtime_section(const char *section, size_t *settings_size);
/* NULL-terminated names of the runtime sections, top level ("") excluded. */
const char *const *df_runtime_section_names(void);

/* ------------------------------------------------------------------ */
/* Pipelines. */

typedef struct df_pipeline df_pipeline;

/* Where a value came from. */
typedef struct df_source {
	const char *file;  /* "<command line>" for an override; NULL for a default */
	int line;          /* 0 when unknown */
} df_source;

typedef struct df_pipeline_section {
	const char *name;                    /* "dataset", "train", ... */
	df_kind kind;                        /* 0 for a runtime section */
	const df_component_info *component;  /* NULL for a runtime section */
	const df_setting *settings;          /* the declaration */
	size_t settings_size;
	void *values;                        /* filled struct, owned by the pipeline */
	df_source source;                    /* where the section was written */
} df_pipeline_section;

typedef struct df_pipeline_options {
	size_t struct_size;                 /* sizeof(df_pipeline_options) */
	const char *const *overrides;       /* "section.key=value" or "key=value" */
	size_t n_overrides;
	/* Called once per error, with one line "file:line: message"; may be NULL. */
	void (*report)(void *ctx, const char *line);
	void *report_ctx;
} df_pipeline_options;

/* Reads path, applies overrides, loads plugin_path into reg, resolves every
 * section against reg and validates every setting. All errors are reported
 * through options->report; err holds the first. Returns DF_EINVAL for a
 * bad pipeline, DF_EIO when the file cannot be read. */
int df_pipeline_load(df_registry *reg, const char *path, const df_pipeline_options *options,
                     df_pipeline **pipeline, df_error *err);
void df_pipeline_destroy(df_pipeline *p);

const char *df_pipeline_file(const df_pipeline *p);
/* The top level: name, seed, plugin_path, ... */
const df_pipeline_settings *df_pipeline_top(const df_pipeline *p);
size_t df_pipeline_section_count(const df_pipeline *p);
const df_pipeline_section *df_pipeline_section_at(const df_pipeline *p, size_t index);
/* The section of that name, or NULL when the pipeline has none. */
const df_pipeline_section *df_pipeline_get(const df_pipeline *p, const char *name);
/* Runtime sections (train, sample) the file actually wrote: the stages to run. */
int df_pipeline_has_stage(const df_pipeline *p, const char *stage);

/* The resolved pipeline as libconfig text, every default filled in. */
int df_pipeline_write(const df_pipeline *p, FILE *out, df_error *err);
/* The same into path, atomically (a temporary file renamed over it). */
int df_pipeline_write_file(const df_pipeline *p, const char *path, df_error *err);

/* Creates runs_dir/<name>/ (and runs_dir) and writes pipeline.cfg in it.
 * *run_dir receives the folder's path (free() it). */
int df_run_prepare(const df_pipeline *p, const char *runs_dir, char **run_dir, df_error *err);

/* ------------------------------------------------------------------ */
/* Stages: training and sampling of a pipeline.
 *
 * Guidance lives in the `sample` section (cfg_scale, cfg_interval,
 * guidance_channels), not in each sampler's: the runtime's denoiser applies
 * classifier-free guidance once, before any sampler sees the model, so the
 * same three settings mean the same thing under every sampler and no
 * sampler plugin can forget or re-implement them. The training loop's grids
 * use the same settings.
 *
 * Checkpoints are one safetensors file: the parameters under their official
 * names, the EMA set as "ema.<name>", the AdamW moments as "opt.m.<name>"
 * and "opt.v.<name>", and metadata: "format" (DF_CHECKPOINT_FORMAT),
 * "pipeline" (the resolved pipeline text), "step", "ema_step" and
 * "weights" (which sets the file holds, e.g. "raw,ema,opt"). */

#define DF_CHECKPOINT_FORMAT "diffuse-checkpoint-1"

/* Which weights generate. */
typedef enum df_weight_set {
	DF_WEIGHTS_RAW = 0,
	DF_WEIGHTS_EMA = 1,
} df_weight_set;

/* Classifier-free guidance on one model evaluation. */
typedef struct df_guidance {
	double scale;         /* 1: no guidance (only the conditional half runs) */
	double t_lo, t_hi;    /* guide only for t in [t_lo, t_hi] (framework time of process.h) */
	int channels;         /* channels guided: 0 = all prediction channels; 3 = the official code's legacy */
} df_guidance;

/* Combines one batch's conditional and unconditional outputs, (n, out_c,
 * plane) each, into out: guided = uncond + scale * (cond - uncond) on the
 * first `channels` channels (all pred_c prediction channels when
 * g->channels is 0), cond elsewhere (learned-variance channels included).
 * Outside [t_lo, t_hi] out is cond. out may be cond. */
void df_guidance_combine(const df_guidance *g, double t, const float *cond, const float *uncond, float *out,
                         int64_t n, int out_c, int pred_c, int64_t plane);

typedef struct df_train_report {
	int64_t step;          /* steps done */
	int64_t steps;         /* steps the pipeline asks for */
	double loss;           /* of the last step */
	double grad_norm;
	double lr;
	double steps_per_s;    /* since this invocation started */
	double eta_s;
} df_train_report;

/* What a stage wrote, told as it happens to df_stage_options.output, so a
 * program summarising a run (diffuse --json) need not parse the messages.
 * The strings live only during the call. */
typedef struct df_stage_output {
	size_t struct_size;      /* sizeof(df_stage_output) */
	const char *kind;        /* "checkpoint" or "samples" */
	const char *path;        /* the file (or folder) written */
	int64_t step;            /* training steps of the weights */
	/* samples only */
	int64_t count;           /* samples */
	df_weight_set weights;   /* the set that generated */
	const char *sampler;     /* the sampler component's name */
	int64_t nfe;             /* model evaluations per sample (a guided pair counts once) */
	double cfg_scale;        /* 1: no guidance (also for an unconditional model) */
	double cfg_lo, cfg_hi;   /* guided for t in [cfg_lo, cfg_hi] (framework time) */
	uint64_t seed;
} df_stage_output;

typedef struct df_stage_options {
	size_t struct_size;            /* sizeof(df_stage_options) */
	const char *run_dir;           /* checkpoints, log.jsonl and grids go here */
	/* Training: continue from run_dir/checkpoint.safetensors when present. */
	int resume;
	/* Training: stop (saving a checkpoint) after this many steps of this
	 * call; 0 = run to train.steps. */
	int64_t max_steps;
	/* Set asynchronously (e.g. by a SIGINT handler): training finishes the
	 * step, saves a checkpoint and returns DF_EINTR. */
	volatile int *stop;
	/* Called after every training step; may be NULL. */
	void (*progress)(void *ctx, const df_train_report *r);
	/* One line of news (resumed, checkpoint saved, grid written); may be NULL. */
	void (*message)(void *ctx, const char *line);
	void *ctx;
	/* Called with every checkpoint and sample file written; may be NULL. */
	void (*output)(void *ctx, const df_stage_output *out);
} df_stage_options;

/* Trains the pipeline's backbone on its dataset. Returns DF_EINTR when
 * stopped through options->stop, DF_ENUMERIC on a non-finite loss or
 * gradient (the message names the step, the first bad tensor and the last
 * good checkpoint). */
int df_train_run(const df_pipeline *p, const df_stage_options *options, df_error *err);

typedef struct df_sample_request {
	size_t struct_size;      /* sizeof(df_sample_request) */
	const char *checkpoint;  /* a training checkpoint, or */
	const char *weights;     /* plain weights under the official names */
	int64_t count;           /* 0: the sample section's count */
	const char *noise;       /* optional safetensors with x (N, C, H, W) and y (N) */
	const char *out;         /* grid.png, a directory (one PNG per sample) or OUT.safetensors (x0, y) */
} df_sample_request;

/* Generates samples. With neither checkpoint nor weights, the run folder's
 * checkpoint (options->run_dir) is used. In an MPI job (dist.h) every rank
 * calls it: each samples a share of whole `sample.batch` batches, rank 0
 * gathers them and alone writes `out` and reports how writing went; the
 * samples equal one process's bit for bit. */
int df_sample_run(const df_pipeline *p, const df_sample_request *req, const df_stage_options *options,
                  df_error *err);

/* Creates the pipeline's objective and sampler (nothing else) and asks the
 * sampler whether it can integrate the objective's process, so a mismatch
 * (a velocity sampler on a model that cannot give one) is found by
 * `diffuse check`, before any data is read. DF_OK without either section. */
int df_pipeline_check_sampler(const df_pipeline *p, df_error *err);

/* Loads the pipeline stored in a checkpoint's metadata (overrides apply). */
int df_pipeline_load_checkpoint(df_registry *reg, const char *checkpoint, const df_pipeline_options *options,
                                df_pipeline **pipeline, df_error *err);


#ifdef __cplusplus
}
#endif
#endif
