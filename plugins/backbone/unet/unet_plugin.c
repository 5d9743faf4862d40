/* The `unet` backbone component: settings and vtable over unet_net.c. */
#include <stdlib.h>
#include <string.h>

#include "unet_net.h"

static const char *const unet_class_cond_names[] = {"embedding", "context", NULL};

static const df_setting unet_settings_decl[] = {
	DF_SETTING_INT(unet_settings, model_channels, "128", 1, 65536, "channels of the first level"),
	DF_SETTING_LIST(unet_settings, channel_mult, "[1, 2, 2]", 1, 64,
	                "channel multiplier of each level; each level but the last halves the resolution"),
	DF_SETTING_INT(unet_settings, num_res_blocks, "2", 1, UNET_MAX_RES_BLOCKS, "ResBlocks per level"),
	DF_SETTING_LIST(unet_settings, attention_resolutions, "[2, 4]", 1, 128,
	                "downsampling factors (1, 2, 4, ...) with attention after each ResBlock"),
	DF_SETTING_INT(unet_settings, num_heads, "4", 1, 4096, "attention heads (when num_head_channels is -1)"),
	DF_SETTING_INT(unet_settings, num_head_channels, "-1", -1, 65536,
	               "channels per attention head; -1: use num_heads"),
	DF_SETTING_BOOL(unet_settings, use_scale_shift_norm, "true",
	                "the time embedding scales and shifts the second GroupNorm (else it is added before it)"),
	DF_SETTING_BOOL(unet_settings, resblock_updown, "false",
	                "down/up-sample with ResBlocks (avg-pool / nearest inside) instead of Downsample/Upsample"),
	DF_SETTING_BOOL(unet_settings, conv_resample, "true",
	                "Downsample/Upsample carry a 3x3 convolution (else avg-pool / nearest only)"),
	DF_SETTING_BOOL(unet_settings, use_spatial_transformer, "false",
	                "SpatialTransformer blocks (self- and cross-attention) instead of AttentionBlocks"),
	DF_SETTING_INT(unet_settings, transformer_depth, "1", 1, 64, "transformer blocks per SpatialTransformer"),
	DF_SETTING_INT(unet_settings, context_dim, "0", 0, 65536,
	               "features of the cross-attention context; 0: no context (cross-attention attends to itself)"),
	DF_SETTING_CHOICE(unet_settings, class_cond, "embedding", unet_class_cond_names,
	                  "labels enter as label_emb added to the time embedding, or as a learned context token"),
	DF_SETTING_INT(unet_settings, groups, "32", 1, 4096, "GroupNorm groups (32 in the official models)"),
	DF_SETTINGS_END,
};

static int unet_create(const void *settings, df_ctx *ctx, const df_backbone_shape *shape, void **self,
                       df_error *err)
{
	unet_config cfg;
	int rc = unet_config_resolve(&cfg, settings, shape, err);
	if (rc != DF_OK)
		return rc;
	return unet_model_create((unet_model **)self, &cfg, ctx, err);
}

static void unet_destroy(void *self)
{
	unet_model_destroy(self);
}

static df_params *unet_params(void *self)
{
	return ((unet_model *)self)->params;
}

static int unet_init(void *self, uint64_t seed, df_error *err)
{
	return unet_model_init(self, seed, err);
}

static int unet_forward(void *self, df_graph *g, const df_backbone_input *in, df_tensor **out, df_error *err)
{
	return unet_model_forward(self, g, in, out, err);
}

static int unet_load_safetensors(void *self, const char *path, df_error *err)
{
	return unet_model_load(self, path, err);
}

/* "load-safetensors": int (*)(void *self, const char *path, df_error *err),
 * the official keys with or without "model.diffusion_model.". */
static void *unet_extension(void *self, const char *name)
{
	(void)self;
	if (name && strcmp(name, "load-safetensors") == 0)
		return (void *)unet_load_safetensors;
	return NULL;
}

static const df_backbone_vtable unet_vtable = {
	sizeof(df_backbone_vtable), unet_create, unet_destroy, unet_params, unet_init, unet_forward, unet_extension,
};

const df_component unet_component = {
	sizeof(df_component), DF_KIND_BACKBONE, "unet",
	"UNet of latent diffusion: ResBlocks with scale-shift norm, attention or cross-attention transformers, skips",
	unet_settings_decl, sizeof(unet_settings), &unet_vtable,
};
