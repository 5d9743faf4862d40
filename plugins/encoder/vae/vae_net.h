/* The KL autoencoder of latent diffusion (AutoencoderKL of
 * CompVis/latent-diffusion, model.py): encoder, diagonal-Gaussian
 * posterior, decoder. Parameters carry the CompVis state_dict names;
 * diffusers' names are converted on load (vae_names.c, one table).
 *
 * Not installed: the plugin module and the tests link this code. */
#ifndef DIFFUSE_VAE_NET_H
#define DIFFUSE_VAE_NET_H

#include <stdint.h>
#include "diffuse/error.h"
#include "diffuse/plugin.h"
#include "diffuse/tensor.h"
#include "netparams.h"

#define VAE_MAX_LEVELS 6
#define VAE_MAX_RES_BLOCKS 8

typedef struct vae_settings {
	int64_t ch;
	df_list ch_mult;
	int64_t num_res_blocks;
	df_list attn_resolutions;   /* image sizes (pixels) with attention after each ResnetBlock */
	int64_t z_channels;
	int64_t embed_dim;          /* 0: z_channels */
	int64_t groups;
	const char *weights;        /* safetensors (CompVis or diffusers names); "" = random init */
	const char *cache;          /* latents.safetensors of `diffuse encode`; "" = none */
	const char *posterior;      /* "sample" or "mode" for encode */
	double scale_factor;
	df_list latent_shift;       /* per channel, or empty */
	df_list latent_scale;       /* per channel, or empty */
	int64_t seed;               /* init (without weights) and posterior noise */
	const char *rec_loss;       /* "l1" or "l2" */
	double kl_weight;
} vae_settings;

typedef struct vae_config {
	int image_channels, height, width;
	int ch, levels, num_res_blocks, z_channels, embed_dim, groups;
	int mult[VAE_MAX_LEVELS];
	int attn_level[VAE_MAX_LEVELS];   /* attention at level i (image size height >> i listed) */
	int sample;                       /* encode draws from the posterior (else its mean) */
	float scale[64], shift[64];       /* per latent channel: z_model = (z - shift) * scale */
	int l1;
	float kl_weight;
	uint64_t seed;
} vae_config;

int vae_config_resolve(vae_config *cfg, const vae_settings *s, df_shape3 image, df_error *err);

typedef struct vae_res {
	int cin, cout;
	df_tensor *n1_w, *n1_b, *c1_w, *c1_b, *n2_w, *n2_b, *c2_w, *c2_b, *skip_w, *skip_b;
} vae_res;

typedef struct vae_attn {
	df_tensor *n_w, *n_b, *q_w, *q_b, *k_w, *k_b, *v_w, *v_b, *o_w, *o_b;
} vae_attn;

typedef struct vae_level {
	int blocks, has_attn;
	vae_res block[VAE_MAX_RES_BLOCKS + 1];
	vae_attn attn[VAE_MAX_RES_BLOCKS + 1];
	df_tensor *resample_w, *resample_b; /* downsample / upsample conv; NULL at the end level */
} vae_level;

typedef struct vae_coder {
	df_tensor *in_w, *in_b;
	vae_level level[VAE_MAX_LEVELS];
	vae_res mid1, mid2;
	vae_attn mid_attn;
	df_tensor *norm_w, *norm_b, *out_w, *out_b;
} vae_coder;

typedef struct vae_model {
	vae_config cfg;
	df_ctx *ctx;
	df_params *params;
	np_entry *inits;
	int init_count;
	vae_coder enc, dec;
	df_tensor *quant_w, *quant_b, *post_quant_w, *post_quant_b;
	np_scratch host, clamp_host, abs_host;
	uint64_t encode_calls;            /* posterior noise of encode: one step per call */
	int64_t *key_index;               /* the next encode's sample indices (DF_ENCODER_NOISE_KEY) */
	int64_t key_n, key_cap;           /* key_n = 0: not keyed */
	uint64_t key_step;
	struct vae_cache *cache;          /* posteriors by image key, or NULL */
} vae_model;

int vae_model_create(vae_model **out, const vae_config *cfg, df_ctx *ctx, df_error *err);
void vae_model_destroy(vae_model *m);
int vae_model_init(vae_model *m, uint64_t seed, df_error *err);
/* CompVis names (with or without "first_stage_model.") or diffusers names. */
int vae_model_load(vae_model *m, const char *path, df_error *err);

/* 0 when x is (N, C, H, W) of the image shape; else a message. */
int vae_check_images(const vae_model *m, const df_tensor *x, df_error *err);
/* images (N, C, H, W) -> mean and log-variance (clamped to [-30, 20]), each
 * (N, embed_dim, h, w), unscaled. */
int vae_posterior(vae_model *m, df_graph *g, df_tensor *images, df_tensor **mean, df_tensor **logvar,
                  df_error *err);
/* mean + exp(logvar / 2) * n, n standard normal keyed by (seed, step,
 * element index). */
df_tensor *vae_sample(vae_model *m, df_graph *g, df_tensor *mean, df_tensor *logvar, uint64_t seed, uint64_t step,
                      df_error *err);
/* The same, sample i's noise keyed by (seed, step, index[i]), so it does
 * not depend on the batch; index NULL is vae_sample. */
df_tensor *vae_sample_indexed(vae_model *m, df_graph *g, df_tensor *mean, df_tensor *logvar, uint64_t seed,
                              uint64_t step, const int64_t *index, df_error *err);
/* Unscaled latents (N, embed_dim, h, w) -> images. */
int vae_decode_raw(vae_model *m, df_graph *g, df_tensor *z, df_tensor **images, df_error *err);
/* The autoencoder's training loss: sum over pixels of |x - x^| (or the
 * square) averaged over the batch, plus kl_weight times the KL divergence
 * to N(0, I) summed over latent elements and averaged over the batch. */
int vae_train_loss(vae_model *m, df_graph *g, df_tensor *images, uint64_t seed, uint64_t step, df_tensor **loss,
                   df_error *err);
/* KL(N(mean, e^logvar) || N(0, I)) summed per sample, averaged over the batch. */
df_tensor *vae_kl(df_graph *g, df_tensor *mean, df_tensor *logvar);

/* The key of each of n images (FNV-1a over their float32 bytes): the
 * latent cache finds an image's posterior by it. */
void vae_image_keys(const float *images, int64_t n, int64_t image_numel, int64_t *keys);
/* Reads a cache written by `diffuse encode` (mean, logvar, image_key). */
int vae_cache_open(vae_model *m, const char *path, df_error *err);
void vae_cache_close(vae_model *m);
/* The posterior of each image from the cache onto g; *found 0 (and
 * nothing made) when an image is not in it. */
int vae_cache_posterior(vae_model *m, df_graph *g, df_tensor *images, df_tensor **mean, df_tensor **logvar,
                        int *found, df_error *err);

/* The name converter: diffusers (and older diffusers) names to CompVis
 * names; levels: the number of resolution levels (diffusers numbers the
 * decoder's blocks from the bottom). See vae_names.c. */
int vae_map_name(void *levels, const char *file_name, char *out, size_t size);

extern const df_component vae_component;

#endif
