/* Representation encoders: frozen networks that map clean images to a grid
 * of patch features (N, D, h, w), the targets REPA aligns the backbone's
 * hidden tokens with. They are encoder components (plugin.h): `encode`
 * gives the feature grid and `latent_shape` its shape (D, h, w), so the
 * repa objective finds them by name like any component and `diffuse help`
 * lists their settings; they have no decoder.
 *
 *   fmnist-features  the shipped fmnist-net classifier's convolutional
 *                    feature map (64 x 7 x 7 after its third stage): trained
 *                    by the framework itself on Fashion-MNIST, no extra
 *                    training, nothing to download
 *   dinov2           a DINOv2 ViT (Oquab et al. 2023) loaded from
 *                    safetensors under the official torch hub names; its
 *                    normalised patch tokens (x_norm_patchtokens) */
#include "config.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "diffuse/io.h"
#include "diffuse/plugin.h"
#include "diffuse/tensor.h"
#include "extractor.h"
#include "fmnist_net.h"
#include "grid_resize.h"

static int no_decoder(void *self, df_graph *g, df_tensor *latents, df_tensor **images, df_error *err)
{
	(void)self;
	(void)g;
	(void)latents;
	(void)images;
	return df_error_set(err, DF_ENOTSUP, "a representation encoder has no decoder (it gives features for REPA)");
}

/* ------------------------------------------------------------------ */
/* fmnist-features */

typedef struct fmf_settings {
	const char *weights;
	int64_t stage;
} fmf_settings;

static const df_setting fmf_settings_decl[] = {
	DF_SETTING_STRING(fmf_settings, weights, "",
	                  "fmnist-net weights (safetensors or a training checkpoint); \"\": the shipped file"),
	DF_SETTING_INT(fmf_settings, stage, "3", 1, 3,
	               "feature map after this conv stage: 1 (16x28x28), 2 (32x14x14), 3 (64x7x7)"),
	DF_SETTINGS_END,
};

typedef struct fmf_encoder {
	fmnist_net *net;
	int stage, crop;
	df_shape3 features;
} fmf_encoder;

static void fmf_destroy(void *self)
{
	fmf_encoder *e = self;
	if (e)
		fmnist_net_destroy(e->net);
	free(e);
}

static int fmf_create(const void *settings, df_ctx *ctx, df_shape3 image, void **self, df_error *err)
{
	const fmf_settings *s = settings;
	int extra = image.height - FMNIST_NET_SIZE;
	if (image.channels != 1 || image.height != image.width || extra < 0 || extra % 2)
		return df_error_set(err, DF_EINVAL,
		                    "fmnist-features: takes 1x28x28 images (or centred padding of them), not %dx%dx%d",
		                    image.channels, image.height, image.width);
	fmf_encoder *e = calloc(1, sizeof *e);
	if (!e)
		return df_error_set(err, DF_ENOMEM, "fmnist-features: out of memory");
	e->stage = (int)s->stage;
	e->crop = extra / 2;
	static const int channels[] = {16, 32, 64};
	int side = FMNIST_NET_SIZE >> (e->stage - 1);
	e->features = (df_shape3){channels[e->stage - 1], side, side};
	char path[4096];
	const char *weights = s->weights && *s->weights ? s->weights : dff_default_weights(path, sizeof path);
	int rc = fmnist_net_create(&e->net, ctx, err);
	if (!rc)
		rc = fmnist_net_load(e->net, weights, err);
	if (rc) {
		fmf_destroy(e);
		return df_error_prefix(err, rc, "fmnist-features");
	}
	*self = e;
	return DF_OK;
}

static df_shape3 fmf_latent_shape(void *self)
{
	return ((fmf_encoder *)self)->features;
}

static int fmf_encode(void *self, df_graph *g, df_tensor *images, df_tensor **out, df_error *err)
{
	fmf_encoder *e = self;
	df_tensor *x = images;
	if (e->crop > 0) {
		x = df_slice(g, x, 2, e->crop, FMNIST_NET_SIZE);
		x = df_slice(g, x, 3, e->crop, FMNIST_NET_SIZE);
	}
	df_tensor *h = fmnist_net_stage(e->net, g, x, e->stage);
	int rc = df_graph_status(g, err);
	if (rc)
		return df_error_prefix(err, rc, "fmnist-features");
	*out = h;
	return DF_OK;
}

static df_params *fmf_params(void *self)
{
	return ((fmf_encoder *)self)->net->params;
}

static const df_encoder_vtable fmf_vtable = {
	.struct_size = sizeof(df_encoder_vtable),
	.create = fmf_create,
	.destroy = fmf_destroy,
	.latent_shape = fmf_latent_shape,
	.encode = fmf_encode,
	.decode = no_decoder,
	.params = fmf_params,
};

static const df_component fmf_component = {
	sizeof(df_component), DF_KIND_ENCODER, "fmnist-features",
	"REPA target: the shipped fmnist-net classifier's conv feature map (frozen, no decoder)",
	fmf_settings_decl, sizeof(fmf_settings), &fmf_vtable};

/* ------------------------------------------------------------------ */
/* dinov2 */

typedef struct dino_settings {
	const char *weights;
	int64_t image_size, heads;
	int normalize;
} dino_settings;

static const df_setting dino_settings_decl[] = {
	DF_SETTING_STRING(dino_settings, weights, "",
	                  "DINOv2 ViT weights (safetensors, torch hub names: cls_token, pos_embed, blocks.N...); required"),
	DF_SETTING_INT(dino_settings, image_size, "224", 0, 4096,
	               "images are resized to this square (a multiple of the patch); 0: the positional grid's size"),
	DF_SETTING_INT(dino_settings, heads, "0", 0, 1024, "attention heads; 0: width / 64, as every DINOv2 model"),
	DF_SETTING_BOOL(dino_settings, normalize, "true",
	                "map [-1, 1] images to ImageNet's mean/std normalisation, as DINOv2 was trained"),
	DF_SETTINGS_END,
};

typedef struct dino_block {
	df_tensor *norm1_w, *norm1_b, *qkv_w, *qkv_b, *proj_w, *proj_b, *ls1;
	df_tensor *norm2_w, *norm2_b, *fc1_w, *fc1_b, *fc2_w, *fc2_b, *ls2;
} dino_block;

typedef struct dino_encoder {
	df_params *params;
	df_tensor *cls, *pos, *reg, *patch_w, *patch_b, *norm_w, *norm_b;
	dino_block *blocks;
	int depth, width, heads, patch, registers, grid, size, normalize;
	df_shape3 image;
	float *host;
	int64_t host_cap;
} dino_encoder;

static void dino_destroy(void *self)
{
	dino_encoder *e = self;
	if (!e)
		return;
	df_params_destroy(e->params);
	free(e->blocks);
	free(e->host);
	free(e);
}

/* The file's tensor `name`, checked to have `numel` elements. */
static const df_safetensors_tensor *dino_find(const df_safetensors *st, const char *name, int64_t numel,
                                              const char *path, df_error *err)
{
	const df_safetensors_tensor *t = df_safetensors_find(st, name);
	if (!t)
		df_error_set(err, DF_EINVAL, "dinov2: %s: %s is missing (not DINOv2 weights under the torch hub names?)",
		             path, name);
	else if (numel >= 0 && (int64_t)t->nelem != numel)
		df_error_set(err, DF_EINVAL, "dinov2: %s: %s has %zu values, expected %lld", path, name, t->nelem,
		             (long long)numel);
	else
		return t;
	return NULL;
}

/* The model's shape from the file's tensors. */
static int dino_shape(dino_encoder *e, const df_safetensors *st, const dino_settings *s, const char *path,
                      df_error *err)
{
	const df_safetensors_tensor *pw = NULL, *pos = NULL;
	if (!dino_find(st, "cls_token", -1, path, err) || !(pw = dino_find(st, "patch_embed.proj.weight", -1, path, err)) ||
	    !(pos = dino_find(st, "pos_embed", -1, path, err)))
		return DF_EINVAL;
	if (pw->ndim != 4 || pw->shape[1] != 3 || pw->shape[2] != pw->shape[3] || pos->ndim != 3)
		return df_error_set(err, DF_EINVAL, "dinov2: %s: patch_embed.proj.weight or pos_embed is not a ViT's", path);
	e->width = (int)pw->shape[0];
	e->patch = (int)pw->shape[2];
	int64_t cells = pos->shape[1] - 1;
	e->grid = (int)lround(sqrt((double)cells));
	if ((int64_t)e->grid * e->grid != cells || pos->shape[2] != e->width)
		return df_error_set(err, DF_EINVAL, "dinov2: %s: pos_embed holds %lld positions, not 1 + a square", path,
		                    (long long)pos->shape[1]);
	if (df_safetensors_find(st, "blocks.0.mlp.w12.weight"))
		return df_error_set(err, DF_ENOTSUP, "dinov2: %s: SwiGLU blocks (ViT-g) are not supported yet", path);
	const df_safetensors_tensor *reg = df_safetensors_find(st, "register_tokens");
	e->registers = reg ? (int)(reg->nelem / (size_t)e->width) : 0;
	char name[64];
	for (e->depth = 0;; e->depth++) {
		snprintf(name, sizeof name, "blocks.%d.norm1.weight", e->depth);
		if (!df_safetensors_find(st, name))
			break;
	}
	e->heads = s->heads > 0 ? (int)s->heads : e->width / 64;
	e->size = s->image_size > 0 ? (int)s->image_size : e->grid * e->patch;
	if (e->depth < 1 || e->heads < 1 || e->width % e->heads)
		return df_error_set(err, DF_EINVAL, "dinov2: %s: %d blocks of width %d cannot take %d heads", path, e->depth,
		                    e->width, e->heads);
	if (e->size % e->patch)
		return df_error_set(err, DF_EINVAL, "dinov2: image_size %d is not a multiple of the patch %d", e->size,
		                    e->patch);
	e->normalize = s->normalize;
	return DF_OK;
}

/* Registers every tensor under its official name, all frozen. */
static int dino_register(dino_encoder *e, df_ctx *ctx, const df_safetensors *st, df_error *err)
{
	const int64_t D = e->width, p = e->patch, side = e->size / e->patch;
	char name[64];
	const df_safetensors_tensor *fc1 = df_safetensors_find(st, "blocks.0.mlp.fc1.weight");
	const int64_t hidden = fc1 ? (int64_t)fc1->nelem / D : 4 * D;
	const uint32_t frozen = DF_TENSOR_FROZEN;
	if (!(e->params = df_params_create(ctx)))
		return df_error_set(err, DF_ENOMEM, "dinov2: out of memory");
	df_params *P = e->params;
	e->cls = df_params_add(P, "cls_token", DF_SHAPE(1, 1, D), frozen);
	/* resampled to the image size's grid once, at load */
	e->pos = df_params_add(P, "pos_embed", DF_SHAPE(1, 1 + side * side, D), frozen);
	e->reg = e->registers ? df_params_add(P, "register_tokens", DF_SHAPE(1, e->registers, D), frozen) : NULL;
	e->patch_w = df_params_add(P, "patch_embed.proj.weight", DF_SHAPE(D, 3, p, p), frozen);
	e->patch_b = df_params_add(P, "patch_embed.proj.bias", DF_SHAPE(D), frozen);
	if (!(e->blocks = calloc((size_t)e->depth, sizeof *e->blocks)))
		return df_error_set(err, DF_ENOMEM, "dinov2: out of memory");
	for (int i = 0; i < e->depth; i++) {
		dino_block *b = &e->blocks[i];
#define DINO_PARAM(field, suffix, ...)                                                  \
	do {                                                                             \
		snprintf(name, sizeof name, "blocks.%d.%s", i, suffix);                  \
		b->field = df_params_add(P, name, DF_SHAPE(__VA_ARGS__), frozen);        \
	} while (0)
		DINO_PARAM(norm1_w, "norm1.weight", D);
		DINO_PARAM(norm1_b, "norm1.bias", D);
		DINO_PARAM(qkv_w, "attn.qkv.weight", 3 * D, D);
		DINO_PARAM(qkv_b, "attn.qkv.bias", 3 * D);
		DINO_PARAM(proj_w, "attn.proj.weight", D, D);
		DINO_PARAM(proj_b, "attn.proj.bias", D);
		DINO_PARAM(ls1, "ls1.gamma", D);
		DINO_PARAM(norm2_w, "norm2.weight", D);
		DINO_PARAM(norm2_b, "norm2.bias", D);
		DINO_PARAM(fc1_w, "mlp.fc1.weight", hidden, D);
		DINO_PARAM(fc1_b, "mlp.fc1.bias", hidden);
		DINO_PARAM(fc2_w, "mlp.fc2.weight", D, hidden);
		DINO_PARAM(fc2_b, "mlp.fc2.bias", D);
		DINO_PARAM(ls2, "ls2.gamma", D);
#undef DINO_PARAM
	}
	e->norm_w = df_params_add(P, "norm.weight", DF_SHAPE(D), frozen);
	e->norm_b = df_params_add(P, "norm.bias", DF_SHAPE(D), frozen);
	return df_params_finalize(P, err);
}

/* pos_embed (1, 1 + g*g, D) -> (1, 1 + s*s, D): the class position kept,
 * the grid resampled bilinearly (DINOv2 itself interpolates bicubically,
 * at every forward; here once, at load). */
static int dino_resample_pos(dino_encoder *e, const float *src, float *dst, df_error *err)
{
	const int g = e->grid, s = e->size / e->patch, D = e->width;
	float *planes = malloc(sizeof(float) * (size_t)D * (size_t)(g * g + s * s));
	if (!planes)
		return df_error_set(err, DF_ENOMEM, "dinov2: out of memory");
	float *out = planes + (size_t)D * g * g;
	for (int c = 0; c < D; c++)
		for (int k = 0; k < g * g; k++)
			planes[(size_t)c * g * g + k] = src[(size_t)(1 + k) * D + c];
	grid_resize_bilinear(planes, D, g, g, out, s, s);
	memcpy(dst, src, (size_t)D * sizeof *dst);
	for (int c = 0; c < D; c++)
		for (int k = 0; k < s * s; k++)
			dst[(size_t)(1 + k) * D + c] = out[(size_t)c * s * s + k];
	free(planes);
	return DF_OK;
}

static int dino_load(dino_encoder *e, const df_safetensors *st, const char *path, df_error *err)
{
	int rc = DF_OK;
	float *buf = NULL, *resampled = NULL;
	for (size_t i = 0; i < df_params_count(e->params) && !rc; i++) {
		df_tensor *t = df_params_at(e->params, i);
		int is_pos = t == e->pos;
		int64_t want = is_pos ? (int64_t)(1 + e->grid * e->grid) * e->width : t->numel;
		const df_safetensors_tensor *f = dino_find(st, t->name, want, path, err);
		if (!f) {
			rc = DF_EINVAL;
			break;
		}
		float *grown = realloc(buf, f->nelem * sizeof *buf);
		if (!grown) {
			rc = df_error_set(err, DF_ENOMEM, "dinov2: out of memory");
			break;
		}
		buf = grown;
		if (df_safetensors_read_f32(st, f, buf, f->nelem, err) != 0) {
			rc = df_error_prefix(err, DF_EIO, "dinov2: %s", path);
			break;
		}
		if (is_pos && !(resampled = malloc((size_t)t->numel * sizeof *resampled)))
			rc = df_error_set(err, DF_ENOMEM, "dinov2: out of memory");
		if (is_pos && !rc)
			rc = dino_resample_pos(e, buf, resampled, err);
		if (!rc)
			rc = df_tensor_write(t, is_pos ? resampled : buf, err);
		free(resampled);
		resampled = NULL;
	}
	free(buf);
	return rc;
}

static int dino_create(const void *settings, df_ctx *ctx, df_shape3 image, void **self, df_error *err)
{
	const dino_settings *s = settings;
	if (!s->weights || !*s->weights)
		return df_error_set(err, DF_EINVAL, "dinov2: weights: the DINOv2 safetensors file is required");
	if (image.channels != 1 && image.channels != 3)
		return df_error_set(err, DF_EINVAL, "dinov2: takes 1- or 3-channel images, not %d", image.channels);
	dino_encoder *e = calloc(1, sizeof *e);
	if (!e)
		return df_error_set(err, DF_ENOMEM, "dinov2: out of memory");
	e->image = image;
	df_safetensors *st = NULL;
	int rc = df_safetensors_open(&st, s->weights, err) ? DF_EIO : DF_OK;
	if (!rc)
		rc = dino_shape(e, st, s, s->weights, err);
	if (!rc)
		rc = dino_register(e, ctx, st, err);
	if (!rc)
		rc = dino_load(e, st, s->weights, err);
	df_safetensors_close(st);
	if (rc) {
		dino_destroy(e);
		return rc;
	}
	*self = e;
	return DF_OK;
}

static df_shape3 dino_latent_shape(void *self)
{
	dino_encoder *e = self;
	return (df_shape3){e->width, e->size / e->patch, e->size / e->patch};
}

/* images (N, C, H, W) in [-1, 1] -> the ViT's input (N, 3, S, S): grey
 * repeated to RGB, [0, 1], ImageNet statistics, resized. */
static df_tensor *dino_input(dino_encoder *e, df_graph *g, df_tensor *images, df_error *err, int *rc)
{
	static const float mean[3] = {0.485f, 0.456f, 0.406f}, std[3] = {0.229f, 0.224f, 0.225f};
	const int64_t n = images->shape[0], C = e->image.channels, H = e->image.height, W = e->image.width;
	const int64_t S = e->size, need = n * (C * H * W + 3 * H * W + 3 * S * S);
	if (images->ndim != 4 || images->shape[1] != C || images->shape[2] != H || images->shape[3] != W) {
		*rc = df_error_set(err, DF_EINVAL, "dinov2: images are not of the shape it was made for");
		return NULL;
	}
	if (need > e->host_cap) {
		float *grown = realloc(e->host, (size_t)need * sizeof *grown);
		if (!grown) {
			*rc = df_error_set(err, DF_ENOMEM, "dinov2: out of memory");
			return NULL;
		}
		e->host = grown;
		e->host_cap = need;
	}
	float *raw = e->host, *rgb = raw + n * C * H * W, *out = rgb + n * 3 * H * W;
	if ((*rc = df_tensor_read(images, raw, err)))
		return NULL;
	for (int64_t i = 0; i < n; i++)
		for (int c = 0; c < 3; c++) {
			const float *src = raw + (i * C + (C == 1 ? 0 : c)) * H * W;
			float *dst = rgb + (i * 3 + c) * H * W;
			for (int64_t k = 0; k < H * W; k++) {
				float v = 0.5f * (src[k] + 1.0f);
				dst[k] = e->normalize ? (v - mean[c]) / std[c] : v;
			}
		}
	grid_resize_bilinear(rgb, n * 3, (int)H, (int)W, out, (int)S, (int)S);
	return df_tensor_from_host(g, out, DF_SHAPE(n, 3, S, S));
}

/* x (N, T, D) -> x + gamma * f, the LayerScale residual. */
static df_tensor *dino_residual(df_graph *g, df_tensor *x, df_tensor *f, df_tensor *gamma)
{
	return df_add(g, x, df_mul(g, f, gamma));
}

static int dino_encode(void *self, df_graph *g, df_tensor *images, df_tensor **out, df_error *err)
{
	dino_encoder *e = self;
	int rc = DF_OK;
	df_tensor *x = dino_input(e, g, images, err, &rc);
	if (rc)
		return rc;
	const int64_t n = images->shape[0], D = e->width, p = e->patch, side = e->size / p, T = side * side;
	df_tensor *w = df_reshape(g, e->patch_w, DF_SHAPE(D, 3 * p * p));
	df_tensor *tokens = df_linear(g, df_patchify(g, x, (int)p), w, e->patch_b);
	df_tensor *cls = df_add(g, df_tensor_zeros(g, DF_SHAPE(n, 1, D)), e->cls);
	df_tensor *h = df_add(g, df_concat(g, (df_tensor *[]){cls, tokens}, 2, 1), e->pos);
	if (e->reg) {
		df_tensor *reg = df_add(g, df_tensor_zeros(g, DF_SHAPE(n, e->registers, D)), e->reg);
		df_tensor *parts[] = {df_slice(g, h, 1, 0, 1), reg, df_slice(g, h, 1, 1, T)};
		h = df_concat(g, parts, 3, 1);
	}
	for (int i = 0; i < e->depth; i++) {
		const dino_block *b = &e->blocks[i];
		df_tensor *a = df_layernorm(g, h, b->norm1_w, b->norm1_b, 1e-6f);
		a = df_attention_qkv(g, df_linear(g, a, b->qkv_w, b->qkv_b), e->heads);
		h = dino_residual(g, h, df_linear(g, a, b->proj_w, b->proj_b), b->ls1);
		df_tensor *m = df_layernorm(g, h, b->norm2_w, b->norm2_b, 1e-6f);
		m = df_linear(g, df_gelu(g, df_linear(g, m, b->fc1_w, b->fc1_b), 0), b->fc2_w, b->fc2_b);
		h = dino_residual(g, h, m, b->ls2);
	}
	h = df_layernorm(g, h, e->norm_w, e->norm_b, 1e-6f);
	h = df_slice(g, h, 1, 1 + e->registers, T); /* x_norm_patchtokens */
	h = df_reshape(g, df_permute(g, h, (const int[]){0, 2, 1}), DF_SHAPE(n, D, side, side));
	if ((rc = df_graph_status(g, err)))
		return df_error_prefix(err, rc, "dinov2");
	*out = h;
	return DF_OK;
}

static df_params *dino_params(void *self)
{
	return ((dino_encoder *)self)->params;
}

static const df_encoder_vtable dino_vtable = {
	.struct_size = sizeof(df_encoder_vtable),
	.create = dino_create,
	.destroy = dino_destroy,
	.latent_shape = dino_latent_shape,
	.encode = dino_encode,
	.decode = no_decoder,
	.params = dino_params,
};

static const df_component dino_component = {
	sizeof(df_component), DF_KIND_ENCODER, "dinov2",
	"REPA target: a DINOv2 ViT's normalised patch tokens, from torch hub-named safetensors (frozen, no decoder)",
	dino_settings_decl, sizeof(dino_settings), &dino_vtable};

DF_PLUGIN_DEFINE("representation-encoders", PACKAGE_VERSION, "MIT", &fmf_component, &dino_component)
