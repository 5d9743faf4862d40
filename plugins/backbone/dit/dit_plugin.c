/* The `dit` and `sit` backbone components: one network (dit_net.c), two
 * sets of names and defaults. */
#include <stdlib.h>
#include <string.h>

#include "dit_net.h"

#define DIT_MODEL_NAMES(P)                                                                       \
	"custom", P "-S/2", P "-S/4", P "-S/8", P "-B/2", P "-B/4", P "-B/8", P "-L/2", P "-L/4", \
		P "-L/8", P "-XL/2", P "-XL/4", P "-XL/8", NULL

static const char *const dit_model_names[] = {DIT_MODEL_NAMES("DiT")};
static const char *const sit_model_names[] = {DIT_MODEL_NAMES("SiT")};

#define DIT_SHAPE_SETTINGS                                                                           \
	DF_SETTING_INT(dit_settings, depth, "0", 0, 65536, "number of blocks; 0: the model's"),     \
	DF_SETTING_INT(dit_settings, hidden, "0", 0, 65536, "hidden width D; 0: the model's"),      \
	DF_SETTING_INT(dit_settings, heads, "0", 0, 65536, "attention heads; 0: the model's"),      \
	DF_SETTING_INT(dit_settings, patch, "0", 0, 64, "patch size p; 0: the model's"),            \
	DF_SETTING_FLOAT(dit_settings, mlp_ratio, "4.0", 0.0, 64.0, "MLP width over hidden width")

static const df_setting dit_settings_decl[] = {
	DF_SETTING_CHOICE(dit_settings, model, "DiT-XL/2", dit_model_names,
	                  "named config (depth, hidden, heads, patch) or custom"),
	DIT_SHAPE_SETTINGS,
	DF_SETTINGS_END,
};

static const df_setting sit_settings_decl[] = {
	DF_SETTING_CHOICE(dit_settings, model, "SiT-XL/2", sit_model_names,
	                  "named config (depth, hidden, heads, patch) or custom"),
	DIT_SHAPE_SETTINGS,
	DF_SETTING_BOOL(dit_settings, learn_sigma, "true",
	                "final layer makes twice the channels and only the first half is used (official SiT checkpoints)"),
	DF_SETTINGS_END,
};

static int dit_create_as(const char *component, int sit_split, const void *settings, df_ctx *ctx,
                         const df_backbone_shape *shape, void **self, df_error *err)
{
	dit_config cfg;
	int rc = dit_config_resolve(&cfg, settings, shape, component, sit_split, err);
	if (rc != DF_OK)
		return rc;
	return dit_model_create((dit_model **)self, &cfg, component, ctx, err);
}

static int dit_create(const void *settings, df_ctx *ctx, const df_backbone_shape *shape, void **self,
                      df_error *err)
{
	return dit_create_as("dit", 0, settings, ctx, shape, self, err);
}

static int sit_create(const void *settings, df_ctx *ctx, const df_backbone_shape *shape, void **self,
                      df_error *err)
{
	return dit_create_as("sit", 1, settings, ctx, shape, self, err);
}

static void dit_destroy(void *self)
{
	dit_model_destroy(self);
}

static df_params *dit_params(void *self)
{
	return ((dit_model *)self)->params;
}

static int dit_init(void *self, uint64_t seed, df_error *err)
{
	return dit_model_init(self, seed, err);
}

static int dit_forward(void *self, df_graph *g, const df_backbone_input *in, df_tensor **out, df_error *err)
{
	return dit_model_forward(self, g, in, out, err);
}

static int dit_load_safetensors(void *self, const char *path, df_error *err)
{
	return dit_model_load(self, path, err);
}

/* "load-safetensors": int (*)(void *self, const char *path, df_error *err),
 * loads official weights by name and, when a tensor does not fit, names
 * the setting that differs (num_classes, learn_sigma, depth, ...). */
static void *dit_extension(void *self, const char *name)
{
	if (name && strcmp(name, "load-safetensors") == 0)
		return (void *)dit_load_safetensors;
	return NULL;
}

#define DIT_VTABLE(CREATE)                                                                     \
	{                                                                                       \
		sizeof(df_backbone_vtable), CREATE, dit_destroy, dit_params, dit_init, dit_forward, \
			dit_extension,                                                          \
	}

static const df_backbone_vtable dit_vtable = DIT_VTABLE(dit_create);
static const df_backbone_vtable sit_vtable = DIT_VTABLE(sit_create);

const df_component dit_component = {
	sizeof(df_component), DF_KIND_BACKBONE, "dit",
	"DiT: transformer with adaLN-Zero blocks on patches (Peebles & Xie), official names and init",
	dit_settings_decl, sizeof(dit_settings), &dit_vtable,
};

const df_component sit_component = {
	sizeof(df_component), DF_KIND_BACKBONE, "sit",
	"SiT: the DiT network as the SiT code names and configures it (Ma et al.)",
	sit_settings_decl, sizeof(dit_settings), &sit_vtable,
};
