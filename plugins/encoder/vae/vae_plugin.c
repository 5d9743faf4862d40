/* The `vae` encoder component: settings, the encoder vtable and the
 * extensions ("train-loss", "load-safetensors") over vae_net.c. */
#include <stdlib.h>
#include <string.h>

#include "vae_net.h"

static const char *const vae_posterior_names[] = {"mode", "sample", NULL};
static const char *const vae_rec_loss_names[] = {"l1", "l2", NULL};

static const df_setting vae_settings_decl[] = {
	DF_SETTING_INT(vae_settings, ch, "128", 1, 65536, "channels of the first level"),
	DF_SETTING_LIST(vae_settings, ch_mult, "[1, 2, 4, 4]", 1, 64,
	                "channel multiplier per level; f = 2^(levels - 1) (kl-f8: [1, 2, 4, 4], kl-f4: [1, 2, 4])"),
	DF_SETTING_INT(vae_settings, num_res_blocks, "2", 1, VAE_MAX_RES_BLOCKS, "ResnetBlocks per level (decoder: one more)"),
	DF_SETTING_LIST(vae_settings, attn_resolutions, "[]", 1, 65536,
	                "image sizes (pixels) of the levels with attention; the middle block always has it"),
	DF_SETTING_INT(vae_settings, z_channels, "4", 1, 64, "latent channels of the encoder and decoder"),
	DF_SETTING_INT(vae_settings, embed_dim, "0", 0, 64, "latent channels after quant_conv; 0: z_channels"),
	DF_SETTING_INT(vae_settings, groups, "32", 1, 4096, "GroupNorm groups (32 in the official models)"),
	DF_SETTING_STRING(vae_settings, weights, "",
	                  "safetensors with the autoencoder (CompVis or diffusers names); empty: initialised from seed"),
	DF_SETTING_STRING(vae_settings, cache, "",
	                  "latents.safetensors of diffuse encode: encode takes each image's posterior from it "
	                  "(found by content) instead of running the encoder; empty: none"),
	DF_SETTING_CHOICE(vae_settings, posterior, "mode", vae_posterior_names,
	                  "encode to the posterior mean, or draw a sample from it"),
	DF_SETTING_FLOAT(vae_settings, scale_factor, "1", 0, DF_ANY_MAX,
	                 "latents are multiplied by this (0.18215 for the Stable Diffusion VAE)"),
	DF_SETTING_LIST(vae_settings, latent_shift, "[]", DF_ANY_MIN, DF_ANY_MAX,
	                "per-channel shift subtracted before scaling (empty: none)"),
	DF_SETTING_LIST(vae_settings, latent_scale, "[]", DF_ANY_MIN, DF_ANY_MAX,
	                "per-channel scale, applied with scale_factor (empty: 1)"),
	DF_SETTING_INT(vae_settings, seed, "0", 0, DF_ANY_MAX, "initialisation (without weights) and posterior noise"),
	DF_SETTING_CHOICE(vae_settings, rec_loss, "l1", vae_rec_loss_names,
	                  "reconstruction term of the autoencoder's own training loss"),
	DF_SETTING_FLOAT(vae_settings, kl_weight, "1e-6", 0, DF_ANY_MAX, "weight of the KL term of that loss"),
	DF_SETTINGS_END,
};

static int vae_create(const void *settings, df_ctx *ctx, df_shape3 image, void **self, df_error *err)
{
	const vae_settings *s = settings;
	vae_config cfg;
	vae_model *m = NULL;
	*self = NULL;
	int rc = vae_config_resolve(&cfg, s, image, err);
	if (rc == DF_OK)
		rc = vae_model_create(&m, &cfg, ctx, err);
	if (rc == DF_OK)
		rc = s->weights && *s->weights ? vae_model_load(m, s->weights, err) : vae_model_init(m, cfg.seed, err);
	if (rc == DF_OK && s->cache && *s->cache)
		rc = vae_cache_open(m, s->cache, err);
	if (rc != DF_OK) {
		vae_model_destroy(m);
		return rc;
	}
	*self = m;
	return DF_OK;
}

static void vae_destroy(void *self)
{
	vae_model_destroy(self);
}

static df_shape3 vae_latent_shape(void *self)
{
	const vae_config *c = &((vae_model *)self)->cfg;
	int f = 1 << (c->levels - 1);
	return (df_shape3){c->embed_dim, c->height / f, c->width / f};
}

/* z_model = (z - shift) * scale per channel, or its inverse. */
static df_tensor *vae_rescale(vae_model *m, df_graph *g, df_tensor *z, int inverse)
{
	const vae_config *c = &m->cfg;
	int uniform = 1;
	for (int i = 0; i < c->embed_dim; i++)
		uniform &= c->shift[i] == 0 && c->scale[i] == c->scale[0];
	if (uniform)
		return c->scale[0] == 1.0f ? z : df_scale(g, z, inverse ? 1.0f / c->scale[0] : c->scale[0]);
	float values[128];
	for (int i = 0; i < c->embed_dim; i++) {
		values[i] = inverse ? 1.0f / c->scale[i] : c->scale[i];
		values[64 + i] = inverse ? c->shift[i] : -c->shift[i];
	}
	df_tensor *scale = df_tensor_from_host(g, values, DF_SHAPE(1, c->embed_dim, 1, 1));
	df_tensor *shift = df_tensor_from_host(g, values + 64, DF_SHAPE(1, c->embed_dim, 1, 1));
	return inverse ? df_add(g, df_mul(g, z, scale), shift) : df_mul(g, df_add(g, z, shift), scale);
}

static int vae_encode(void *self, df_graph *g, df_tensor *images, df_tensor **latents, df_error *err)
{
	vae_model *m = self;
	df_tensor *mean = NULL, *logvar = NULL;
	int cached = 0, rc = DF_OK;
	*latents = NULL;
	if (m->cache && (rc = vae_check_images(m, images, err)) == DF_OK)
		rc = vae_cache_posterior(m, g, images, &mean, &logvar, &cached, err);
	if (rc == DF_OK && !cached)
		rc = vae_posterior(m, g, images, &mean, &logvar, err);
	if (rc != DF_OK)
		return rc;
	/* keyed by sample and step when the runtime said which (DF_ENCODER_NOISE_KEY), else by call */
	int keyed = m->key_n == mean->shape[0];
	df_tensor *z = !m->cfg.sample ? mean
	               : keyed ? vae_sample_indexed(m, g, mean, logvar, m->cfg.seed, m->key_step, m->key_index, err)
	                       : vae_sample(m, g, mean, logvar, m->cfg.seed, m->encode_calls++, err);
	m->key_n = 0;
	/* The autoencoder is frozen here: no gradient flows back into it. */
	z = df_detach(g, vae_rescale(m, g, z, 0));
	if ((rc = df_graph_status(g, err)) != DF_OK || !z)
		return df_error_prefix(err, rc ? rc : DF_ENOMEM, "vae: encode");
	*latents = z;
	return DF_OK;
}

static int vae_decode(void *self, df_graph *g, df_tensor *latents, df_tensor **images, df_error *err)
{
	vae_model *m = self;
	*images = NULL;
	if (!latents)
		return df_error_set(err, DF_EINVAL, "vae: no latents");
	return vae_decode_raw(m, g, vae_rescale(m, g, latents, 1), images, err);
}

static df_params *vae_params(void *self)
{
	return ((vae_model *)self)->params;
}

static int vae_load_ext(void *self, const char *path, df_error *err)
{
	return vae_model_load(self, path, err);
}

static int vae_loss_ext(void *self, df_graph *g, df_tensor *images, uint64_t seed, uint64_t step, df_tensor **loss,
                        df_error *err)
{
	return vae_train_loss(self, g, images, seed, step, loss, err);
}

/* Posterior noise of the next encode is keyed by this step (a resumed run
 * that calls it draws what an uninterrupted one drew). */
static void vae_set_step_ext(void *self, uint64_t step)
{
	((vae_model *)self)->encode_calls = step;
}

/* DF_ENCODER_NOISE_KEY: the next encode's posterior noise by (step, sample index). */
static void vae_noise_key(void *self, uint64_t step, const int64_t *index, int64_t n)
{
	vae_model *m = self;
	m->key_n = 0;
	if (!index || n <= 0)
		return;
	if (n > m->key_cap) {
		int64_t *grown = realloc(m->key_index, (size_t)n * sizeof *grown);
		if (!grown)
			return; /* unkeyed: counted by call, as without the runtime's key */
		m->key_index = grown;
		m->key_cap = n;
	}
	memcpy(m->key_index, index, (size_t)n * sizeof *index);
	m->key_n = n;
	m->key_step = step;
}

static const df_encoder_noise_key vae_noise_key_ext = {sizeof(df_encoder_noise_key), vae_noise_key};

static void vae_image_keys_ext(void *self, const float *images, int64_t n, int64_t image_numel, int64_t *keys)
{
	(void)self;
	vae_image_keys(images, n, image_numel, keys);
}

static int vae_posterior_ext(void *self, df_graph *g, df_tensor *images, df_tensor **mean, df_tensor **logvar,
                             df_error *err)
{
	return vae_posterior(self, g, images, mean, logvar, err);
}

/* "train-loss": int (*)(void *self, df_graph *g, df_tensor *images,
 *                       uint64_t seed, uint64_t step, df_tensor **loss, df_error *err)
 *     the autoencoder's own training loss (reconstruction + kl_weight KL);
 *     gradients reach its params().
 * "load-safetensors": int (*)(void *self, const char *path, df_error *err).
 * "posterior": int (*)(void *self, df_graph *g, df_tensor *images,
 *                      df_tensor **mean, df_tensor **logvar, df_error *err)
 *     the unscaled posterior (logvar clamped), for latent caches.
 * "image-keys": void (*)(void *self, const float *images, int64_t n,
 *                        int64_t image_numel, int64_t *keys)
 *     the key under which the cache finds each image (stored as image_key).
 * "set-step": void (*)(void *self, uint64_t step)
 *     keys the posterior noise of the next encode by the training step;
 *     without it encode counts its own calls (not kept across a resume).
 * DF_ENCODER_NOISE_KEY: a df_encoder_noise_key (plugin.h); keys it by
 *     step and sample index instead, for the next encode. */
static void *vae_extension(void *self, const char *name)
{
	(void)self;
	if (!name)
		return NULL;
	if (strcmp(name, "train-loss") == 0)
		return (void *)vae_loss_ext;
	if (strcmp(name, "load-safetensors") == 0)
		return (void *)vae_load_ext;
	if (strcmp(name, "posterior") == 0)
		return (void *)vae_posterior_ext;
	if (strcmp(name, "image-keys") == 0)
		return (void *)vae_image_keys_ext;
	if (strcmp(name, "set-step") == 0)
		return (void *)vae_set_step_ext;
	if (strcmp(name, DF_ENCODER_NOISE_KEY) == 0)
		return (void *)&vae_noise_key_ext;
	return NULL;
}

static const df_encoder_vtable vae_vtable = {
	.struct_size = sizeof(df_encoder_vtable),
	.create = vae_create,
	.destroy = vae_destroy,
	.latent_shape = vae_latent_shape,
	.encode = vae_encode,
	.decode = vae_decode,
	.params = vae_params,
	.extension = vae_extension,
};

const df_component vae_component = {
	.struct_size = sizeof(df_component),
	.kind = DF_KIND_ENCODER,
	.name = "vae",
	.summary = "KL autoencoder of latent diffusion (kl-f4, kl-f8, the Stable Diffusion VAE), CompVis or diffusers weights",
	.settings = vae_settings_decl,
	.settings_size = sizeof(vae_settings),
	.vtable = &vae_vtable,
};
