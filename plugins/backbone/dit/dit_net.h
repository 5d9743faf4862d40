/* The DiT network (Peebles & Xie), shared by the `dit` and `sit`
 * components: SiT is the same network and differs only in returning the
 * first half of the channels when it learns sigma.
 *
 * Not installed: the plugin module and the tests link this code; nothing
 * here is exported from the module (only df_plugin_entry is). */
#ifndef DIFFUSE_DIT_NET_H
#define DIFFUSE_DIT_NET_H

#include <stdint.h>
#include "diffuse/error.h"
#include "diffuse/plugin.h"
#include "diffuse/tensor.h"

/* The settings both components share; `learn_sigma` is declared by sit
 * only (dit takes its output channels from the objective alone). */
typedef struct dit_settings {
	const char *model;  /* "DiT-XL/2", "SiT-S/4", ... or "custom" */
	int64_t depth;      /* 0: the model's */
	int64_t hidden;
	int64_t heads;
	int64_t patch;
	double mlp_ratio;
	int learn_sigma;    /* sit: the final layer makes 2x the channels and the first half is returned */
} dit_settings;

/* Everything the network's shapes follow from. */
typedef struct dit_config {
	int in_channels, height, width;
	int patch, hidden, depth, heads, mlp_hidden;
	int grid_h, grid_w, tokens;
	int num_classes;     /* 0: unconditional (no label embedder) */
	int table_rows;      /* num_classes, + 1 with a null class */
	int out_channels;    /* channels forward returns */
	int final_channels;  /* channels the final layer makes (2x out_channels for sit with learn_sigma) */
} dit_config;

/* Resolves settings and shape into a config; `component` ("dit", "sit")
 * prefixes errors. sit_split: drop the second half of learned channels. */
int dit_config_resolve(dit_config *cfg, const dit_settings *s, const df_backbone_shape *shape,
                       const char *component, int sit_split, df_error *err);

/* One parameter as registered: its official state_dict name and shape. */
typedef struct dit_param_info {
	char name[64];
	int ndim;
	int64_t shape[4];
	uint32_t flags;        /* DF_TENSOR_FROZEN for pos_embed */
	df_tensor **slot;      /* where the model keeps the tensor (NULL when only counting) */
} dit_param_info;

typedef struct dit_block {
	df_tensor *qkv_w, *qkv_b, *proj_w, *proj_b;
	df_tensor *fc1_w, *fc1_b, *fc2_w, *fc2_b;
	df_tensor *ada_w, *ada_b;
} dit_block;

typedef struct dit_model {
	dit_config cfg;
	const char *component;
	df_ctx *ctx;
	df_params *params;
	df_tensor *pos_embed, *x_w, *x_b;
	df_tensor *t_w0, *t_b0, *t_w2, *t_b2;
	df_tensor *y_table;
	dit_block *blocks;
	df_tensor *final_w, *final_b, *final_ada_w, *final_ada_b;
	float *host_buf;       /* timestep frequencies, grown as batches need */
	int64_t host_cap;
} dit_model;

/* The parameters in official state_dict order. Returns how many there are;
 * fills info[0..count) when info is not NULL (model may be NULL: shapes
 * only, no slots). */
int dit_param_layout(const dit_config *cfg, dit_model *model, dit_param_info *info);
/* Every value the network holds (frozen pos_embed included), from shapes
 * alone: nothing is allocated. */
int64_t dit_param_numel(const dit_config *cfg);

int dit_model_create(dit_model **out, const dit_config *cfg, const char *component, df_ctx *ctx,
                     df_error *err);
void dit_model_destroy(dit_model *m);
int dit_model_init(dit_model *m, uint64_t seed, df_error *err);
/* Loads every parameter from a safetensors file by its official name (any
 * float dtype). A missing, unexpected or misshapen tensor is refused with
 * a message naming the tensor and the setting that differs. */
int dit_model_load(dit_model *m, const char *path, df_error *err);
int dit_model_forward(dit_model *m, df_graph *g, const df_backbone_input *in, df_tensor **out,
                      df_error *err);

/* The fixed 2-D sin-cos table (grid_h * grid_w, dim): first half the
 * column, second half the row (MAE's order). dim % 4 == 0. */
void dit_pos_embed(float *dst, int grid_h, int grid_w, int dim);
/* The 256 timestep frequencies of each t: cosines first, then sines,
 * rounded as the official float32 code computes them. */
#define DIT_FREQ_DIM 256
void dit_timestep_freqs(float *dst, const float *t, int64_t n);

/* The two components. */
extern const df_component dit_component;
extern const df_component sit_component;

#endif
