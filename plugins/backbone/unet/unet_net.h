/* The UNet of latent diffusion (openaimodel.py of CompVis/latent-diffusion,
 * after guided-diffusion): ResBlocks with a timestep embedding and
 * scale-shift norm, attention at chosen downsampling factors (the classic
 * AttentionBlock or SpatialTransformer blocks with cross-attention to a
 * context sequence), skip connections, zero-initialised output layers.
 * Parameter names are the official state_dict keys (without the
 * checkpoint's "model.diffusion_model." prefix).
 *
 * Not installed: the plugin module and the tests link this code. */
#ifndef DIFFUSE_UNET_NET_H
#define DIFFUSE_UNET_NET_H

#include <stdint.h>
#include "diffuse/error.h"
#include "diffuse/plugin.h"
#include "diffuse/tensor.h"
#include "netparams.h"

typedef struct unet_settings {
	int64_t model_channels;
	df_list channel_mult;
	int64_t num_res_blocks;
	df_list attention_resolutions; /* downsampling factors 1, 2, 4, ... */
	int64_t num_heads;
	int64_t num_head_channels;     /* > 0: heads = channels / this (overrides num_heads) */
	int use_scale_shift_norm;
	int resblock_updown;
	int conv_resample;
	int use_spatial_transformer;
	int64_t transformer_depth;
	int64_t context_dim;
	const char *class_cond;        /* "embedding" (label_emb into the time embedding) or "context" (a learned token) */
	int64_t groups;                /* GroupNorm groups: 32 in every official config */
} unet_settings;

#define UNET_MAX_LEVELS 8
#define UNET_MAX_RES_BLOCKS 16

typedef struct unet_config {
	int in_channels, out_channels, height, width;
	int model_channels, levels, num_res_blocks;
	int mult[UNET_MAX_LEVELS];
	int attn_at[64];               /* attn_at[log2(ds)]: attention at downsampling factor ds */
	int num_heads, num_head_channels;
	int scale_shift, updown, conv_resample, spatial, depth, context_dim, groups;
	int num_classes, table_rows;   /* table_rows: num_classes (+1 with the null class) */
	int label_context;             /* 1: labels are a context token; 0: label_emb */
	int emb_dim;                   /* 4 * model_channels */
} unet_config;

int unet_config_resolve(unet_config *cfg, const unet_settings *s, const df_backbone_shape *shape, df_error *err);

typedef struct unet_resblock {
	int cin, cout, up, down;
	df_tensor *in_norm_w, *in_norm_b, *in_conv_w, *in_conv_b;
	df_tensor *emb_w, *emb_b;
	df_tensor *out_norm_w, *out_norm_b, *out_conv_w, *out_conv_b;
	df_tensor *skip_w, *skip_b; /* NULL: identity */
} unet_resblock;

typedef struct unet_xblock { /* one BasicTransformerBlock */
	df_tensor *q1, *k1, *v1, *o1_w, *o1_b;
	df_tensor *ff_in_w, *ff_in_b, *ff_out_w, *ff_out_b;
	df_tensor *q2, *k2, *v2, *o2_w, *o2_b;
	df_tensor *n1_w, *n1_b, *n2_w, *n2_b, *n3_w, *n3_b;
} unet_xblock;

typedef struct unet_attn { /* AttentionBlock or SpatialTransformer */
	int channels, heads;
	df_tensor *norm_w, *norm_b;
	df_tensor *in_w, *in_b;     /* qkv (3C, C, 1) or proj_in (C, C, 1, 1) */
	df_tensor *out_w, *out_b;   /* proj_out */
	unet_xblock *blocks;        /* SpatialTransformer: depth blocks */
} unet_attn;

/* One entry of input_blocks, middle_block or output_blocks. */
typedef struct unet_stage {
	int has_conv;               /* input_blocks.0: the input convolution */
	df_tensor *conv_w, *conv_b;
	int has_res;
	unet_resblock res;
	int has_attn;
	unet_attn attn;
	int resample;               /* -1 downsample, +1 upsample, 0 none (conv or resblock) */
	int resample_res;           /* resblock_updown: a ResBlock does it */
	unet_resblock resample_block;
	df_tensor *resample_w, *resample_b; /* conv of Downsample/Upsample; NULL: avg-pool / nearest only */
	int mid_res2;               /* middle_block: a second ResBlock */
	unet_resblock res2;
} unet_stage;

typedef struct unet_model {
	unet_config cfg;
	df_ctx *ctx;
	df_params *params;
	np_entry *inits;
	int init_count;
	df_tensor *t0_w, *t0_b, *t2_w, *t2_b;
	df_tensor *label_table;     /* label_emb.weight or the context token table */
	int n_input, n_output;
	unet_stage *input, middle, *output;
	df_tensor *out_norm_w, *out_norm_b, *out_conv_w, *out_conv_b;
	np_scratch host;
	int32_t *null_ids;
	int64_t null_cap;
	df_tensor **skips;          /* the input blocks' outputs during a forward */
} unet_model;

int unet_model_create(unet_model **out, const unet_config *cfg, df_ctx *ctx, df_error *err);
void unet_model_destroy(unet_model *m);
int unet_model_init(unet_model *m, uint64_t seed, df_error *err);
int unet_model_load(unet_model *m, const char *path, df_error *err);
int unet_model_forward(unet_model *m, df_graph *g, const df_backbone_input *in, df_tensor **out, df_error *err);

/* [cos(t f_m), sin(t f_m)], f_m = exp(-ln(10000) m / (dim/2)), float32 as
 * the official code; a zero column when dim is odd. */
void unet_timestep_embedding(float *dst, const float *t, int64_t n, int dim);

/* The name under which class labels enter as a context token: the key of
 * the official ClassEmbedder (LDM's cin256 config). */
#define UNET_LABEL_CONTEXT_NAME "cond_stage_model.embedding.weight"

extern const df_component unet_component;

#endif
