/* The KL autoencoder: configuration, parameters under the CompVis names,
 * encoder, posterior, decoder and the training loss, from SDK ops. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "diffuse/rng.h"
#include "vae_net.h"

/* ------------------------------------------------------------------ */
/* Configuration. */

int vae_config_resolve(vae_config *c, const vae_settings *s, df_shape3 image, df_error *err)
{
	memset(c, 0, sizeof(*c));
	if (image.channels < 1 || image.height < 1 || image.width < 1)
		return df_error_set(err, DF_EINVAL, "vae: an image shape of (%d, %d, %d) is empty", image.channels,
		                    image.height, image.width);
	c->image_channels = image.channels;
	c->height = image.height;
	c->width = image.width;
	c->ch = (int)s->ch;
	c->num_res_blocks = (int)s->num_res_blocks;
	c->z_channels = (int)s->z_channels;
	c->embed_dim = s->embed_dim > 0 ? (int)s->embed_dim : c->z_channels;
	c->groups = (int)s->groups;
	c->levels = s->ch_mult.n;
	if (c->levels < 1 || c->levels > VAE_MAX_LEVELS)
		return df_error_set(err, DF_EINVAL, "vae: ch_mult: 1 to %d levels, got %d", VAE_MAX_LEVELS, c->levels);
	for (int l = 0; l < c->levels; l++) {
		double v = s->ch_mult.v[l];
		if (v != floor(v) || v < 1 || v > 64)
			return df_error_set(err, DF_EINVAL, "vae: ch_mult: %g is not a whole number in 1 .. 64", v);
		c->mult[l] = (int)v;
	}
	if (c->ch % c->groups != 0)
		return df_error_set(err, DF_EINVAL, "vae: ch %d is not a multiple of groups %d", c->ch, c->groups);
	int f = 1 << (c->levels - 1);
	if (c->height % f != 0 || c->width % f != 0)
		return df_error_set(err, DF_EINVAL, "vae: ch_mult: the image %dx%d is not divisible by f = %d",
		                    c->height, c->width, f);
	for (int i = 0; i < s->attn_resolutions.n; i++) {
		double v = s->attn_resolutions.v[i];
		int found = 0;
		for (int l = 0; l < c->levels; l++)
			if (v == (double)(c->height >> l)) {
				c->attn_level[l] = 1;
				found = 1;
			}
		if (!found)
			return df_error_set(err, DF_EINVAL,
			                    "vae: attn_resolutions: %g is not an image size of a level (%d, %d, ... %d)", v,
			                    c->height, c->height / 2, c->height / f);
	}
	if (c->embed_dim > 64)
		return df_error_set(err, DF_EINVAL, "vae: embed_dim %d: at most 64 latent channels", c->embed_dim);
	const df_list *lists[2] = {&s->latent_shift, &s->latent_scale};
	static const char *const list_names[2] = {"latent_shift", "latent_scale"};
	for (int k = 0; k < 2; k++)
		if (lists[k]->n != 0 && lists[k]->n != c->embed_dim)
			return df_error_set(err, DF_EINVAL, "vae: %s: %d values for %d latent channels", list_names[k],
			                    lists[k]->n, c->embed_dim);
	if (!(s->scale_factor > 0) || !isfinite((float)s->scale_factor))
		return df_error_set(err, DF_EINVAL, "vae: scale_factor %g is not a positive number", s->scale_factor);
	for (int i = 0; i < c->embed_dim; i++) {
		double scale = s->scale_factor * (s->latent_scale.n ? s->latent_scale.v[i] : 1.0);
		if (!(scale > 0) || !isfinite((float)scale) || !isfinite(1 / (float)scale))
			return df_error_set(err, DF_EINVAL, "vae: latent_scale: channel %d's scale %g cannot be inverted", i,
			                    scale);
		c->scale[i] = (float)scale;
		c->shift[i] = (float)(s->latent_shift.n ? s->latent_shift.v[i] : 0.0);
	}
	c->sample = s->posterior && strcmp(s->posterior, "sample") == 0;
	c->l1 = !s->rec_loss || strcmp(s->rec_loss, "l1") == 0;
	c->kl_weight = (float)s->kl_weight;
	c->seed = (uint64_t)s->seed;
	return DF_OK;
}

/* ------------------------------------------------------------------ */
/* Parameters, in the CompVis state_dict order. */

static void vae_sub(char *out, size_t size, const char *prefix, const char *sub)
{
	snprintf(out, size, "%s.%s", prefix, sub);
}

static void vae_add_res(np_builder *b, vae_res *r, int cin, int cout, const char *prefix)
{
	char name[160];
	r->cin = cin;
	r->cout = cout;
	vae_sub(name, sizeof(name), prefix, "norm1");
	np_norm(b, &r->n1_w, &r->n1_b, cin, name);
	vae_sub(name, sizeof(name), prefix, "conv1");
	np_conv(b, &r->c1_w, &r->c1_b, cout, cin, 3, 2, 0, name);
	vae_sub(name, sizeof(name), prefix, "norm2");
	np_norm(b, &r->n2_w, &r->n2_b, cout, name);
	vae_sub(name, sizeof(name), prefix, "conv2");
	np_conv(b, &r->c2_w, &r->c2_b, cout, cout, 3, 2, 0, name);
	if (cin != cout) {
		vae_sub(name, sizeof(name), prefix, "nin_shortcut");
		np_conv(b, &r->skip_w, &r->skip_b, cout, cin, 1, 2, 0, name);
	}
}

static void vae_add_attn(np_builder *b, vae_attn *a, int channels, const char *prefix)
{
	char name[160];
	vae_sub(name, sizeof(name), prefix, "norm");
	np_norm(b, &a->n_w, &a->n_b, channels, name);
	df_tensor **slots[4][2] = {{&a->q_w, &a->q_b}, {&a->k_w, &a->k_b}, {&a->v_w, &a->v_b}, {&a->o_w, &a->o_b}};
	static const char *const subs[4] = {"q", "k", "v", "proj_out"};
	for (int i = 0; i < 4; i++) {
		vae_sub(name, sizeof(name), prefix, subs[i]);
		np_conv(b, slots[i][0], slots[i][1], channels, channels, 1, 2, 0, name);
	}
}

static void vae_add_mid(np_builder *b, vae_coder *c, int channels, const char *coder)
{
	char name[64];
	snprintf(name, sizeof(name), "%s.mid.block_1", coder);
	vae_add_res(b, &c->mid1, channels, channels, name);
	snprintf(name, sizeof(name), "%s.mid.attn_1", coder);
	vae_add_attn(b, &c->mid_attn, channels, name);
	snprintf(name, sizeof(name), "%s.mid.block_2", coder);
	vae_add_res(b, &c->mid2, channels, channels, name);
}

/* "<coder>.<l>": its blocks, their attention layers, then the resampling
 * conv ("<coder>.<l>.<resample>.conv") unless resample is NULL. */
static void vae_add_level(np_builder *b, vae_level *lv, const char *coder, int l, int blocks, int block_in,
                          int block_out, int attn, const char *resample)
{
	char name[96];
	lv->blocks = blocks;
	lv->has_attn = attn;
	for (int j = 0; j < blocks; j++) {
		snprintf(name, sizeof(name), "%s.%d.block.%d", coder, l, j);
		vae_add_res(b, &lv->block[j], j == 0 ? block_in : block_out, block_out, name);
	}
	for (int j = 0; attn && j < blocks; j++) {
		snprintf(name, sizeof(name), "%s.%d.attn.%d", coder, l, j);
		vae_add_attn(b, &lv->attn[j], block_out, name);
	}
	if (resample) {
		snprintf(name, sizeof(name), "%s.%d.%s.conv", coder, l, resample);
		np_conv(b, &lv->resample_w, &lv->resample_b, block_out, block_out, 3, 2, 0, name);
	}
}

static void vae_register(np_builder *b, vae_model *m)
{
	const vae_config *c = &m->cfg;
	const int last = c->levels - 1;
	vae_coder *e = &m->enc, *d = &m->dec;

	np_conv(b, &e->in_w, &e->in_b, c->ch, c->image_channels, 3, 2, 0, "encoder.conv_in");
	int block_in = c->ch;
	for (int l = 0; l < c->levels; l++) {
		vae_add_level(b, &e->level[l], "encoder.down", l, c->num_res_blocks, block_in, c->ch * c->mult[l],
		              c->attn_level[l], l != last ? "downsample" : NULL);
		block_in = c->ch * c->mult[l];
	}
	vae_add_mid(b, e, block_in, "encoder");
	np_norm(b, &e->norm_w, &e->norm_b, block_in, "encoder.norm_out");
	np_conv(b, &e->out_w, &e->out_b, 2 * c->z_channels, block_in, 3, 2, 0, "encoder.conv_out");

	int top = c->ch * c->mult[last];
	np_conv(b, &d->in_w, &d->in_b, top, c->z_channels, 3, 2, 0, "decoder.conv_in");
	vae_add_mid(b, d, top, "decoder");
	/* up.<l> in index order (the state_dict's), though the decoder runs them from the last. */
	for (int l = 0; l < c->levels; l++)
		vae_add_level(b, &d->level[l], "decoder.up", l, c->num_res_blocks + 1, c->ch * c->mult[l == last ? l : l + 1],
		              c->ch * c->mult[l], c->attn_level[l], l != 0 ? "upsample" : NULL);
	np_norm(b, &d->norm_w, &d->norm_b, c->ch * c->mult[0], "decoder.norm_out");
	np_conv(b, &d->out_w, &d->out_b, c->image_channels, c->ch * c->mult[0], 3, 2, 0, "decoder.conv_out");
	np_conv(b, &m->quant_w, &m->quant_b, 2 * c->embed_dim, 2 * c->z_channels, 1, 2, 0, "quant_conv");
	np_conv(b, &m->post_quant_w, &m->post_quant_b, c->z_channels, c->embed_dim, 1, 2, 0, "post_quant_conv");
}

/* ------------------------------------------------------------------ */
/* Lifetime. */

void vae_model_destroy(vae_model *m)
{
	if (!m)
		return;
	df_params_destroy(m->params);
	vae_cache_close(m);
	free(m->key_index);
	free(m->inits);
	np_scratch_free(&m->host);
	np_scratch_free(&m->clamp_host);
	np_scratch_free(&m->abs_host);
	free(m);
}

int vae_model_create(vae_model **out, const vae_config *cfg, df_ctx *ctx, df_error *err)
{
	*out = NULL;
	vae_model *m = calloc(1, sizeof(*m));
	np_builder b;
	if (!m || np_begin(&b, ctx) != DF_OK) {
		free(m);
		return df_error_set(err, DF_ENOMEM, "vae: out of memory");
	}
	m->cfg = *cfg;
	m->ctx = ctx;
	vae_register(&b, m);
	int rc = np_finish(&b, "vae", err);
	if (rc != DF_OK) {
		vae_model_destroy(m);
		return rc;
	}
	m->params = b.params;
	m->inits = b.entries;
	m->init_count = b.count;
	*out = m;
	return DF_OK;
}

#define VAE_INIT_STREAM 0x5641450000ull
#define VAE_NOISE_STREAM 0x564145ff00ull

int vae_model_init(vae_model *m, uint64_t seed, df_error *err)
{
	return np_initialise(m->params, m->inits, m->init_count, seed, VAE_INIT_STREAM, "vae", err);
}

int vae_model_load(vae_model *m, const char *path, df_error *err)
{
	return np_load(m->params, path, vae_map_name, &m->cfg.levels, "vae", err);
}

/* ------------------------------------------------------------------ */
/* Forward. */

static const float vae_eps = 1e-6f;

static df_tensor *vae_norm_silu(const vae_model *m, df_graph *g, df_tensor *x, df_tensor *w, df_tensor *b)
{
	return df_silu(g, df_groupnorm(g, x, m->cfg.groups, w, b, vae_eps));
}

static df_tensor *vae_res_forward(const vae_model *m, df_graph *g, const vae_res *r, df_tensor *x)
{
	df_tensor *h = df_conv2d(g, vae_norm_silu(m, g, x, r->n1_w, r->n1_b), r->c1_w, r->c1_b, 1, 1);
	h = df_conv2d(g, vae_norm_silu(m, g, h, r->n2_w, r->n2_b), r->c2_w, r->c2_b, 1, 1);
	df_tensor *skip = r->skip_w ? df_conv2d(g, x, r->skip_w, r->skip_b, 1, 0) : x;
	return df_add(g, skip, h);
}

/* Single-head attention over the H W positions, softmax(q k^T / sqrt(C)). */
static df_tensor *vae_attn_forward(const vae_model *m, df_graph *g, const vae_attn *a, df_tensor *x)
{
	df_tensor *h = np_to_tokens(g, df_groupnorm(g, x, m->cfg.groups, a->n_w, a->n_b, vae_eps));
	df_tensor *q = df_linear(g, h, np_as_linear(g, a->q_w), a->q_b);
	df_tensor *k = df_linear(g, h, np_as_linear(g, a->k_w), a->k_b);
	df_tensor *v = df_linear(g, h, np_as_linear(g, a->v_w), a->v_b);
	h = df_linear(g, df_attention(g, q, k, v, 1), np_as_linear(g, a->o_w), a->o_b);
	return df_add(g, x, np_from_tokens(g, h, x));
}

static df_tensor *vae_mid_forward(const vae_model *m, df_graph *g, const vae_coder *c, df_tensor *h)
{
	h = vae_res_forward(m, g, &c->mid1, h);
	h = vae_attn_forward(m, g, &c->mid_attn, h);
	return vae_res_forward(m, g, &c->mid2, h);
}

static df_tensor *vae_level_forward(const vae_model *m, df_graph *g, const vae_level *lv, df_tensor *h)
{
	for (int j = 0; j < lv->blocks; j++) {
		h = vae_res_forward(m, g, &lv->block[j], h);
		if (lv->has_attn)
			h = vae_attn_forward(m, g, &lv->attn[j], h);
	}
	return h;
}

/* Zero padding on the right and bottom by one, then a stride-2 3x3 conv. */
static df_tensor *vae_downsample(df_graph *g, df_tensor *h, df_tensor *w, df_tensor *b)
{
	if (!h)
		return NULL;
	int64_t n = h->shape[0], c = h->shape[1], H = h->shape[2], W = h->shape[3];
	df_tensor *col = df_tensor_zeros(g, DF_SHAPE(n, c, H, 1));
	h = df_concat(g, (df_tensor *const[]){h, col}, 2, 3);
	df_tensor *row = df_tensor_zeros(g, DF_SHAPE(n, c, 1, W + 1));
	h = df_concat(g, (df_tensor *const[]){h, row}, 2, 2);
	return df_conv2d(g, h, w, b, 2, 0);
}

int vae_check_images(const vae_model *m, const df_tensor *x, df_error *err)
{
	const vae_config *c = &m->cfg;
	if (!x || x->ndim != 4 || x->shape[1] != c->image_channels || x->shape[2] != c->height ||
	    x->shape[3] != c->width)
		return df_error_set(err, DF_EINVAL, "vae: images must be (N, %d, %d, %d)", c->image_channels, c->height,
		                    c->width);
	return DF_OK;
}

int vae_posterior(vae_model *m, df_graph *g, df_tensor *images, df_tensor **mean, df_tensor **logvar, df_error *err)
{
	const vae_config *c = &m->cfg;
	const vae_coder *e = &m->enc;
	*mean = *logvar = NULL;
	int rc = vae_check_images(m, images, err);
	if (rc != DF_OK)
		return rc;
	df_tensor *h = df_conv2d(g, images, e->in_w, e->in_b, 1, 1);
	for (int l = 0; l < c->levels; l++) {
		h = vae_level_forward(m, g, &e->level[l], h);
		if (e->level[l].resample_w)
			h = vae_downsample(g, h, e->level[l].resample_w, e->level[l].resample_b);
	}
	h = vae_mid_forward(m, g, e, h);
	h = df_conv2d(g, vae_norm_silu(m, g, h, e->norm_w, e->norm_b), e->out_w, e->out_b, 1, 1);
	h = df_conv2d(g, h, m->quant_w, m->quant_b, 1, 0);
	df_tensor *lv = df_slice(g, h, 1, c->embed_dim, c->embed_dim);
	*mean = df_slice(g, h, 1, 0, c->embed_dim);
	if ((rc = df_graph_status(g, err)) != DF_OK)
		return df_error_prefix(err, rc, "vae: encode");
	*logvar = np_clamp(g, lv, -30.0f, 20.0f, &m->clamp_host, err);
	if (!*logvar)
		return df_error_prefix(err, df_graph_status(g, err) ? df_graph_status(g, err) : DF_EINVAL, "vae: encode");
	return DF_OK;
}

df_tensor *vae_sample(vae_model *m, df_graph *g, df_tensor *mean, df_tensor *logvar, uint64_t seed, uint64_t step,
                      df_error *err)
{
	return vae_sample_indexed(m, g, mean, logvar, seed, step, NULL, err);
}

df_tensor *vae_sample_indexed(vae_model *m, df_graph *g, df_tensor *mean, df_tensor *logvar, uint64_t seed,
                              uint64_t step, const int64_t *index, df_error *err)
{
	if (!mean || !logvar)
		return NULL;
	float *noise = np_scratch_get(&m->host, mean->numel);
	if (!noise) {
		df_error_set(err, DF_ENOMEM, "vae: out of memory");
		return NULL;
	}
	int64_t samples = mean->shape[0], per = mean->numel / samples;
	if (!index)
		df_rng_fill_normal(noise, (size_t)mean->numel, seed, VAE_NOISE_STREAM, step, 0);
	for (int64_t i = 0; index && i < samples; i++)
		df_rng_fill_normal(noise + i * per, (size_t)per, seed, VAE_NOISE_STREAM, step, (uint64_t)index[i] * per);
	df_tensor *n = df_tensor_from_host(g, noise, mean->ndim, mean->shape);
	return df_add(g, mean, df_mul(g, df_exp(g, df_scale(g, logvar, 0.5f)), n));
}

int vae_decode_raw(vae_model *m, df_graph *g, df_tensor *z, df_tensor **images, df_error *err)
{
	const vae_config *c = &m->cfg;
	const vae_coder *d = &m->dec;
	*images = NULL;
	int f = 1 << (c->levels - 1);
	if (!z || z->ndim != 4 || z->shape[1] != c->embed_dim || z->shape[2] != c->height / f ||
	    z->shape[3] != c->width / f)
		return df_error_set(err, DF_EINVAL, "vae: latents must be (N, %d, %d, %d)", c->embed_dim, c->height / f,
		                    c->width / f);
	df_tensor *h = df_conv2d(g, z, m->post_quant_w, m->post_quant_b, 1, 0);
	h = df_conv2d(g, h, d->in_w, d->in_b, 1, 1);
	h = vae_mid_forward(m, g, d, h);
	for (int l = c->levels - 1; l >= 0; l--) {
		h = vae_level_forward(m, g, &d->level[l], h);
		if (d->level[l].resample_w)
			h = df_conv2d(g, df_upsample_nearest2x(g, h), d->level[l].resample_w, d->level[l].resample_b, 1, 1);
	}
	h = df_conv2d(g, vae_norm_silu(m, g, h, d->norm_w, d->norm_b), d->out_w, d->out_b, 1, 1);
	int rc = df_graph_status(g, err);
	if (rc != DF_OK)
		return df_error_prefix(err, rc, "vae: decode");
	*images = h;
	return DF_OK;
}

df_tensor *vae_kl(df_graph *g, df_tensor *mean, df_tensor *logvar)
{
	if (!mean || !logvar)
		return NULL;
	df_tensor *terms = df_sub(g, df_add(g, df_mul(g, mean, mean), df_exp(g, logvar)), df_add_scalar(g, logvar, 1.0f));
	return df_scale(g, df_sum(g, terms), 0.5f / (float)mean->shape[0]);
}

int vae_train_loss(vae_model *m, df_graph *g, df_tensor *images, uint64_t seed, uint64_t step, df_tensor **loss,
                   df_error *err)
{
	df_tensor *mean = NULL, *logvar = NULL, *recon = NULL;
	*loss = NULL;
	int rc = vae_posterior(m, g, images, &mean, &logvar, err);
	if (rc != DF_OK)
		return rc;
	df_tensor *z = vae_sample(m, g, mean, logvar, seed, step, err);
	if (!z)
		return df_graph_status(g, err) ? df_graph_status(g, err) : DF_ENOMEM;
	if ((rc = vae_decode_raw(m, g, z, &recon, err)) != DF_OK)
		return rc;
	df_tensor *diff = df_sub(g, images, recon);
	df_tensor *rec = m->cfg.l1 ? np_abs(g, diff, &m->abs_host, err) : df_mul(g, diff, diff);
	if (!rec)
		return df_graph_status(g, err) ? df_graph_status(g, err) : DF_ENOMEM;
	df_tensor *nll = df_scale(g, df_sum(g, rec), 1.0f / (float)images->shape[0]);
	*loss = df_add(g, nll, df_scale(g, vae_kl(g, mean, logvar), m->cfg.kl_weight));
	rc = df_graph_status(g, err);
	return rc == DF_OK ? DF_OK : df_error_prefix(err, rc, "vae: loss");
}
