/* The latent-diffusion UNet: configuration, parameters under the official
 * names, the official initialisation and the forward pass from SDK ops. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "unet_net.h"

/* ------------------------------------------------------------------ */
/* Configuration. */

static int unet_log2(int64_t v)
{
	int k = 0;
	while (v > 1 && v % 2 == 0) {
		v /= 2;
		k++;
	}
	return v == 1 ? k : -1;
}

/* Heads of an attention layer on `channels`, as openaimodel picks them. */
static int unet_heads(const unet_config *c, int channels)
{
	return c->num_head_channels > 0 ? channels / c->num_head_channels : c->num_heads;
}

int unet_config_resolve(unet_config *c, const unet_settings *s, const df_backbone_shape *shape, df_error *err)
{
	memset(c, 0, sizeof(*c));
	if (!shape || shape->input.channels <= 0 || shape->input.height <= 0 || shape->input.width <= 0)
		return df_error_set(err, DF_EINVAL, "unet: the input shape is empty");
	c->in_channels = shape->input.channels;
	c->height = shape->input.height;
	c->width = shape->input.width;
	c->out_channels = shape->out_channels > 0 ? shape->out_channels : c->in_channels;
	c->model_channels = (int)s->model_channels;
	c->num_res_blocks = (int)s->num_res_blocks;
	c->groups = (int)s->groups;
	c->levels = s->channel_mult.n;
	if (c->levels < 1 || c->levels > UNET_MAX_LEVELS)
		return df_error_set(err, DF_EINVAL, "unet: channel_mult: 1 to %d levels, got %d", UNET_MAX_LEVELS,
		                    c->levels);
	for (int l = 0; l < c->levels; l++) {
		double v = s->channel_mult.v[l];
		if (v != floor(v) || v < 1 || v > 64)
			return df_error_set(err, DF_EINVAL, "unet: channel_mult: %g is not a whole number in 1 .. 64", v);
		c->mult[l] = (int)v;
	}
	if (c->model_channels % c->groups != 0)
		return df_error_set(err, DF_EINVAL, "unet: model_channels %d is not a multiple of groups %d",
		                    c->model_channels, c->groups);
	int max_ds_log = c->levels - 1;
	int64_t factor = (int64_t)1 << max_ds_log;
	if (c->height % factor != 0 || c->width % factor != 0)
		return df_error_set(err, DF_EINVAL,
		                    "unet: channel_mult: the input %dx%d is not divisible by %lld (%d levels halve it)",
		                    c->height, c->width, (long long)factor, c->levels);
	for (int i = 0; i < s->attention_resolutions.n; i++) {
		double v = s->attention_resolutions.v[i];
		int k = v == floor(v) && v >= 1 ? unet_log2((int64_t)v) : -1;
		if (k < 0 || k > max_ds_log)
			return df_error_set(err, DF_EINVAL,
			                    "unet: attention_resolutions: %g is not a downsampling factor of this model (1, 2, ... %lld)",
			                    v, (long long)factor);
		c->attn_at[k] = 1;
	}
	c->num_heads = (int)s->num_heads;
	c->num_head_channels = (int)s->num_head_channels;
	for (int l = 0; l < c->levels; l++) {
		int ch = c->model_channels * c->mult[l];
		int heads = unet_heads(c, ch);
		if (c->num_head_channels > 0 && ch % c->num_head_channels != 0)
			return df_error_set(err, DF_EINVAL, "unet: num_head_channels: %d channels are not a multiple of %d",
			                    ch, c->num_head_channels);
		if (heads < 1 || ch % heads != 0)
			return df_error_set(err, DF_EINVAL, "unet: num_heads: %d channels do not split into %d heads", ch,
			                    heads);
	}
	c->scale_shift = s->use_scale_shift_norm;
	c->updown = s->resblock_updown;
	c->conv_resample = s->conv_resample;
	c->spatial = s->use_spatial_transformer;
	c->depth = (int)s->transformer_depth;
	c->context_dim = (int)s->context_dim;
	if (!c->spatial && c->context_dim > 0)
		return df_error_set(err, DF_EINVAL,
		                    "unet: context_dim: cross-attention needs use_spatial_transformer = true");
	if (shape->num_classes < 0)
		return df_error_set(err, DF_EINVAL, "unet: num_classes %d is negative", shape->num_classes);
	c->num_classes = shape->num_classes;
	c->table_rows = c->num_classes > 0 ? c->num_classes + (shape->null_class ? 1 : 0) : 0;
	c->label_context = s->class_cond && strcmp(s->class_cond, "context") == 0;
	if (c->label_context && c->num_classes > 0 && c->context_dim <= 0)
		return df_error_set(err, DF_EINVAL,
		                    "unet: class_cond: labels as a context token need use_spatial_transformer and context_dim > 0");
	c->emb_dim = 4 * c->model_channels;
	return DF_OK;
}

/* ------------------------------------------------------------------ */
/* Parameters, in the official state_dict order. */

static void unet_add_resblock(np_builder *b, const unet_config *c, unet_resblock *r, int cin, int cout, int up,
                              int down, const char *prefix)
{
	char name[128];
	r->cin = cin;
	r->cout = cout;
	r->up = up;
	r->down = down;
	snprintf(name, sizeof(name), "%s.in_layers.0", prefix);
	np_norm(b, &r->in_norm_w, &r->in_norm_b, cin, name);
	snprintf(name, sizeof(name), "%s.in_layers.2", prefix);
	np_conv(b, &r->in_conv_w, &r->in_conv_b, cout, cin, 3, 2, 0, name);
	snprintf(name, sizeof(name), "%s.emb_layers.1", prefix);
	np_linear(b, &r->emb_w, &r->emb_b, c->scale_shift ? 2 * cout : cout, c->emb_dim, 0, name);
	snprintf(name, sizeof(name), "%s.out_layers.0", prefix);
	np_norm(b, &r->out_norm_w, &r->out_norm_b, cout, name);
	snprintf(name, sizeof(name), "%s.out_layers.3", prefix);
	np_conv(b, &r->out_conv_w, &r->out_conv_b, cout, cout, 3, 2, 1, name);
	if (cin != cout) {
		snprintf(name, sizeof(name), "%s.skip_connection", prefix);
		np_conv(b, &r->skip_w, &r->skip_b, cout, cin, 1, 2, 0, name);
	}
}

/* "<prefix>.<sub>": a Linear (out, in), or a LayerNorm of `out` features when in is 0. */
static void unet_linear_at(np_builder *b, df_tensor **w, df_tensor **bias, int64_t out, int64_t in,
                           const char *prefix, const char *sub)
{
	char name[192];
	snprintf(name, sizeof(name), "%s.%s", prefix, sub);
	if (in == 0)
		np_norm(b, w, bias, out, name);
	else
		np_linear(b, w, bias, out, in, 0, name);
}

static void unet_add_attn(np_builder *b, const unet_config *c, unet_attn *a, int ch, const char *prefix)
{
	char name[160];
	a->channels = ch;
	a->heads = unet_heads(c, ch);
	snprintf(name, sizeof(name), "%s.norm", prefix);
	np_norm(b, &a->norm_w, &a->norm_b, ch, name);
	if (!c->spatial) {
		snprintf(name, sizeof(name), "%s.qkv", prefix);
		np_conv(b, &a->in_w, &a->in_b, 3 * ch, ch, 1, 1, 0, name);
		snprintf(name, sizeof(name), "%s.proj_out", prefix);
		np_conv(b, &a->out_w, &a->out_b, ch, ch, 1, 1, 1, name);
		return;
	}
	/* SpatialTransformer: inner = heads * (ch / heads) = ch. */
	int inner = ch, ctx = c->context_dim > 0 ? c->context_dim : inner, ff = 4 * inner;
	snprintf(name, sizeof(name), "%s.proj_in", prefix);
	np_conv(b, &a->in_w, &a->in_b, inner, ch, 1, 2, 0, name);
	for (int d = 0; d < c->depth; d++) {
		unet_xblock *x = &a->blocks[d];
		char p[140];
		snprintf(p, sizeof(p), "%s.transformer_blocks.%d", prefix, d);
		unet_linear_at(b, &x->q1, NULL, inner, inner, p, "attn1.to_q");
		unet_linear_at(b, &x->k1, NULL, inner, inner, p, "attn1.to_k");
		unet_linear_at(b, &x->v1, NULL, inner, inner, p, "attn1.to_v");
		unet_linear_at(b, &x->o1_w, &x->o1_b, inner, inner, p, "attn1.to_out.0");
		unet_linear_at(b, &x->ff_in_w, &x->ff_in_b, 2 * ff, inner, p, "ff.net.0.proj");
		unet_linear_at(b, &x->ff_out_w, &x->ff_out_b, inner, ff, p, "ff.net.2");
		unet_linear_at(b, &x->q2, NULL, inner, inner, p, "attn2.to_q");
		unet_linear_at(b, &x->k2, NULL, inner, ctx, p, "attn2.to_k");
		unet_linear_at(b, &x->v2, NULL, inner, ctx, p, "attn2.to_v");
		unet_linear_at(b, &x->o2_w, &x->o2_b, inner, inner, p, "attn2.to_out.0");
		unet_linear_at(b, &x->n1_w, &x->n1_b, inner, 0, p, "norm1");
		unet_linear_at(b, &x->n2_w, &x->n2_b, inner, 0, p, "norm2");
		unet_linear_at(b, &x->n3_w, &x->n3_b, inner, 0, p, "norm3");
	}
	snprintf(name, sizeof(name), "%s.proj_out", prefix);
	np_conv(b, &a->out_w, &a->out_b, ch, inner, 1, 2, 1, name);
}

/* Attention layer `index` of a block, when the block's factor has one. */
static int unet_stage_attn(np_builder *b, const unet_config *c, unet_stage *st, int ch, const char *prefix,
                           int index)
{
	char name[128];
	st->has_attn = 1;
	if (c->spatial) {
		st->attn.blocks = calloc((size_t)c->depth, sizeof(*st->attn.blocks));
		if (!st->attn.blocks) {
			b->status = DF_ENOMEM;
			return index;
		}
	}
	snprintf(name, sizeof(name), "%s.%d", prefix, index);
	unet_add_attn(b, c, &st->attn, ch, name);
	return index + 1;
}

static void unet_register(np_builder *b, unet_model *m)
{
	const unet_config *c = &m->cfg;
	const int mc = c->model_channels;
	char name[128];
	np_linear(b, &m->t0_w, &m->t0_b, c->emb_dim, mc, 0, "time_embed.0");
	np_linear(b, &m->t2_w, &m->t2_b, c->emb_dim, c->emb_dim, 0, "time_embed.2");
	if (c->table_rows > 0 && !c->label_context)
		m->label_table = np_add(b, NP_INIT_NORMAL, 0, DF_SHAPE(c->table_rows, c->emb_dim), "label_emb.weight");

	int chans[1 + UNET_MAX_LEVELS * (UNET_MAX_RES_BLOCKS + 1)], n_chans = 0, k = 0, ch = mc, ds_log = 0;
	unet_stage *st = &m->input[k];
	st->has_conv = 1;
	np_conv(b, &st->conv_w, &st->conv_b, mc, c->in_channels, 3, 2, 0, "input_blocks.0.0");
	chans[n_chans++] = mc;
	for (int l = 0; l < c->levels; l++) {
		for (int r = 0; r < c->num_res_blocks; r++) {
			st = &m->input[++k];
			snprintf(name, sizeof(name), "input_blocks.%d.0", k);
			st->has_res = 1;
			unet_add_resblock(b, c, &st->res, ch, mc * c->mult[l], 0, 0, name);
			ch = mc * c->mult[l];
			if (c->attn_at[ds_log]) {
				snprintf(name, sizeof(name), "input_blocks.%d", k);
				unet_stage_attn(b, c, st, ch, name, 1);
			}
			chans[n_chans++] = ch;
		}
		if (l + 1 < c->levels) {
			st = &m->input[++k];
			st->resample = -1;
			snprintf(name, sizeof(name), "input_blocks.%d.0", k);
			if (c->updown) {
				st->resample_res = 1;
				unet_add_resblock(b, c, &st->resample_block, ch, ch, 0, 1, name);
			} else if (c->conv_resample) {
				snprintf(name, sizeof(name), "input_blocks.%d.0.op", k);
				np_conv(b, &st->resample_w, &st->resample_b, ch, ch, 3, 2, 0, name);
			}
			chans[n_chans++] = ch;
			ds_log++;
		}
	}
	m->n_input = k + 1;

	st = &m->middle;
	st->has_res = 1;
	unet_add_resblock(b, c, &st->res, ch, ch, 0, 0, "middle_block.0");
	unet_stage_attn(b, c, st, ch, "middle_block", 1);
	st->mid_res2 = 1;
	unet_add_resblock(b, c, &st->res2, ch, ch, 0, 0, "middle_block.2");

	k = 0;
	for (int l = c->levels - 1; l >= 0; l--) {
		for (int r = 0; r <= c->num_res_blocks; r++, k++) {
			int skip = chans[--n_chans];
			st = &m->output[k];
			st->has_res = 1;
			snprintf(name, sizeof(name), "output_blocks.%d.0", k);
			unet_add_resblock(b, c, &st->res, ch + skip, mc * c->mult[l], 0, 0, name);
			ch = mc * c->mult[l];
			int index = 1;
			if (c->attn_at[ds_log]) {
				snprintf(name, sizeof(name), "output_blocks.%d", k);
				index = unet_stage_attn(b, c, st, ch, name, index);
			}
			if (l > 0 && r == c->num_res_blocks) {
				st->resample = 1;
				if (c->updown) {
					st->resample_res = 1;
					snprintf(name, sizeof(name), "output_blocks.%d.%d", k, index);
					unet_add_resblock(b, c, &st->resample_block, ch, ch, 1, 0, name);
				} else if (c->conv_resample) {
					snprintf(name, sizeof(name), "output_blocks.%d.%d.conv", k, index);
					np_conv(b, &st->resample_w, &st->resample_b, ch, ch, 3, 2, 0, name);
				}
				ds_log--;
			}
		}
	}
	m->n_output = k;
	np_norm(b, &m->out_norm_w, &m->out_norm_b, ch, "out.0");
	np_conv(b, &m->out_conv_w, &m->out_conv_b, c->out_channels, mc, 3, 2, 1, "out.2");
	if (c->table_rows > 0 && c->label_context)
		m->label_table = np_add(b, NP_INIT_NORMAL, 0, DF_SHAPE(c->table_rows, c->context_dim),
		                        UNET_LABEL_CONTEXT_NAME);
}

/* ------------------------------------------------------------------ */
/* Lifetime. */

static void unet_free_stages(unet_stage *stages, int n)
{
	for (int i = 0; stages && i < n; i++)
		free(stages[i].attn.blocks);
}

void unet_model_destroy(unet_model *m)
{
	if (!m)
		return;
	df_params_destroy(m->params);
	int n_in = 1 + m->cfg.levels * (m->cfg.num_res_blocks + 1), n_out = m->cfg.levels * (m->cfg.num_res_blocks + 1);
	unet_free_stages(m->input, n_in);
	unet_free_stages(m->output, n_out);
	free(m->middle.attn.blocks);
	free(m->input);
	free(m->output);
	free(m->skips);
	free(m->inits);
	free(m->null_ids);
	np_scratch_free(&m->host);
	free(m);
}

int unet_model_create(unet_model **out, const unet_config *cfg, df_ctx *ctx, df_error *err)
{
	*out = NULL;
	unet_model *m = calloc(1, sizeof(*m));
	if (!m)
		return df_error_set(err, DF_ENOMEM, "unet: out of memory");
	m->cfg = *cfg;
	m->ctx = ctx;
	int n_in = 1 + cfg->levels * (cfg->num_res_blocks + 1), n_out = cfg->levels * (cfg->num_res_blocks + 1);
	m->input = calloc((size_t)n_in, sizeof(*m->input));
	m->output = calloc((size_t)n_out, sizeof(*m->output));
	m->skips = calloc((size_t)n_in, sizeof(*m->skips));
	np_builder b;
	if (!m->input || !m->output || !m->skips || np_begin(&b, ctx) != DF_OK) {
		unet_model_destroy(m);
		return df_error_set(err, DF_ENOMEM, "unet: out of memory");
	}
	unet_register(&b, m);
	int rc = np_finish(&b, "unet", err);
	if (rc != DF_OK) {
		unet_model_destroy(m);
		return rc;
	}
	m->params = b.params;
	m->inits = b.entries; /* kept for unet_model_init */
	m->init_count = b.count;
	*out = m;
	return DF_OK;
}

/* Draws of parameter i come from stream UNET_INIT_STREAM + i. */
#define UNET_INIT_STREAM 0x554e6574000ull

int unet_model_init(unet_model *m, uint64_t seed, df_error *err)
{
	return np_initialise(m->params, m->inits, m->init_count, seed, UNET_INIT_STREAM, "unet", err);
}

/* Official checkpoints keep the UNet under "model.diffusion_model.". */
static int unet_map_name(void *map_ctx, const char *file_name, char *out, size_t size)
{
	(void)map_ctx;
	static const char prefix[] = "model.diffusion_model.";
	if (strncmp(file_name, prefix, sizeof(prefix) - 1) == 0)
		file_name += sizeof(prefix) - 1;
	snprintf(out, size, "%s", file_name);
	return 1;
}

int unet_model_load(unet_model *m, const char *path, df_error *err)
{
	return np_load(m->params, path, unet_map_name, NULL, "unet", err);
}

/* ------------------------------------------------------------------ */
/* Forward. */

void unet_timestep_embedding(float *dst, const float *t, int64_t n, int dim)
{
	const int half = dim / 2;
	const float neg_log_period = (float)-log(10000.0);
	for (int64_t r = 0; r < n; r++) {
		float *row = dst + r * dim;
		for (int m = 0; m < half; m++) {
			float e = neg_log_period * (float)m / (float)half;
			float arg = t[r] * (float)exp((double)e);
			row[m] = (float)cos((double)arg);
			row[half + m] = (float)sin((double)arg);
		}
		if (dim % 2)
			row[dim - 1] = 0.0f;
	}
}

static const float unet_gn_eps = 1e-5f;

static df_tensor *unet_resblock_forward(const unet_model *m, df_graph *g, const unet_resblock *r, df_tensor *x,
                                        df_tensor *silu_emb)
{
	const int groups = m->cfg.groups;
	df_tensor *h = df_silu(g, df_groupnorm(g, x, groups, r->in_norm_w, r->in_norm_b, unet_gn_eps));
	if (r->up) {
		h = df_upsample_nearest2x(g, h);
		x = df_upsample_nearest2x(g, x);
	} else if (r->down) {
		h = df_avgpool2d(g, h, 2);
		x = df_avgpool2d(g, x, 2);
	}
	h = df_conv2d(g, h, r->in_conv_w, r->in_conv_b, 1, 1);
	df_tensor *e = df_linear(g, silu_emb, r->emb_w, r->emb_b);
	if (!e || !h)
		return NULL;
	int64_t n = e->shape[0];
	if (m->cfg.scale_shift) {
		df_tensor *parts[2] = {NULL, NULL}; /* scale, shift */
		if (df_chunk(g, e, 2, 1, parts) != DF_OK)
			return NULL;
		df_tensor *scale = df_reshape(g, parts[0], DF_SHAPE(n, r->cout, 1, 1));
		df_tensor *shift = df_reshape(g, parts[1], DF_SHAPE(n, r->cout, 1, 1));
		h = df_groupnorm(g, h, groups, r->out_norm_w, r->out_norm_b, unet_gn_eps);
		h = df_add(g, df_mul(g, h, df_add_scalar(g, scale, 1.0f)), shift);
	} else {
		h = df_add(g, h, df_reshape(g, e, DF_SHAPE(n, r->cout, 1, 1)));
		h = df_groupnorm(g, h, groups, r->out_norm_w, r->out_norm_b, unet_gn_eps);
	}
	h = df_conv2d(g, df_silu(g, h), r->out_conv_w, r->out_conv_b, 1, 1);
	df_tensor *skip = r->skip_w ? df_conv2d(g, x, r->skip_w, r->skip_b, 1, 0) : x;
	return df_add(g, skip, h);
}

/* The legacy AttentionBlock: q, k, v interleaved per head in qkv. */
static df_tensor *unet_attention_block(const unet_model *m, df_graph *g, const unet_attn *a, df_tensor *x)
{
	int64_t n = x->shape[0], ch = a->channels, t = x->shape[2] * x->shape[3], hd = ch / a->heads;
	df_tensor *h = np_to_tokens(g, df_groupnorm(g, x, m->cfg.groups, a->norm_w, a->norm_b, unet_gn_eps));
	df_tensor *qkv = df_linear(g, h, np_as_linear(g, a->in_w), a->in_b);
	qkv = df_reshape(g, qkv, DF_SHAPE(n, t, a->heads, 3, hd));
	qkv = df_permute(g, qkv, (const int[]){0, 1, 3, 2, 4});
	qkv = df_reshape(g, qkv, DF_SHAPE(n, t, 3 * ch));
	h = df_attention_qkv(g, qkv, a->heads);
	h = df_linear(g, h, np_as_linear(g, a->out_w), a->out_b);
	return df_add(g, x, np_from_tokens(g, h, x));
}

static df_tensor *unet_cross_attention(df_graph *g, df_tensor *x, df_tensor *ctx, df_tensor *wq, df_tensor *wk,
                                       df_tensor *wv, df_tensor *wo, df_tensor *bo, int heads)
{
	df_tensor *q = df_linear(g, x, wq, NULL);
	df_tensor *k = df_linear(g, ctx, wk, NULL);
	df_tensor *v = df_linear(g, ctx, wv, NULL);
	return df_linear(g, df_attention(g, q, k, v, heads), wo, bo);
}

static df_tensor *unet_transformer_block(df_graph *g, const unet_xblock *b, df_tensor *x, df_tensor *ctx,
                                         int heads)
{
	const float eps = 1e-5f;
	df_tensor *h = df_layernorm(g, x, b->n1_w, b->n1_b, eps);
	x = df_add(g, x, unet_cross_attention(g, h, h, b->q1, b->k1, b->v1, b->o1_w, b->o1_b, heads));
	h = df_layernorm(g, x, b->n2_w, b->n2_b, eps);
	x = df_add(g, x, unet_cross_attention(g, h, ctx ? ctx : h, b->q2, b->k2, b->v2, b->o2_w, b->o2_b, heads));
	h = df_layernorm(g, x, b->n3_w, b->n3_b, eps);
	df_tensor *geglu[2] = {NULL, NULL}; /* value, gate */
	if (!h || df_chunk(g, df_linear(g, h, b->ff_in_w, b->ff_in_b), 2, h->ndim - 1, geglu) != DF_OK)
		return NULL;
	h = df_mul(g, geglu[0], df_gelu(g, geglu[1], 0));
	return df_add(g, x, df_linear(g, h, b->ff_out_w, b->ff_out_b));
}

static df_tensor *unet_spatial_transformer(const unet_model *m, df_graph *g, const unet_attn *a, df_tensor *x,
                                           df_tensor *ctx)
{
	df_tensor *h = np_to_tokens(g, df_groupnorm(g, x, m->cfg.groups, a->norm_w, a->norm_b, 1e-6f));
	h = df_linear(g, h, np_as_linear(g, a->in_w), a->in_b);
	for (int d = 0; d < m->cfg.depth; d++)
		h = unet_transformer_block(g, &a->blocks[d], h, ctx, a->heads);
	h = df_linear(g, h, np_as_linear(g, a->out_w), a->out_b);
	return df_add(g, x, np_from_tokens(g, h, x));
}

static df_tensor *unet_stage_forward(const unet_model *m, df_graph *g, const unet_stage *st, df_tensor *h,
                                     df_tensor *silu_emb, df_tensor *ctx)
{
	if (!h)
		return NULL;
	if (st->has_conv)
		h = df_conv2d(g, h, st->conv_w, st->conv_b, 1, 1);
	if (st->has_res)
		h = unet_resblock_forward(m, g, &st->res, h, silu_emb);
	if (st->has_attn && h)
		h = m->cfg.spatial ? unet_spatial_transformer(m, g, &st->attn, h, ctx)
		                   : unet_attention_block(m, g, &st->attn, h);
	if (st->mid_res2)
		h = unet_resblock_forward(m, g, &st->res2, h, silu_emb);
	if (st->resample_res)
		return unet_resblock_forward(m, g, &st->resample_block, h, silu_emb);
	if (st->resample < 0)
		return st->resample_w ? df_conv2d(g, h, st->resample_w, st->resample_b, 2, 1) : df_avgpool2d(g, h, 2);
	if (st->resample > 0) {
		h = df_upsample_nearest2x(g, h);
		return st->resample_w ? df_conv2d(g, h, st->resample_w, st->resample_b, 1, 1) : h;
	}
	return h;
}

static int unet_check_input(const unet_model *m, const df_backbone_input *in, int64_t *batch, df_error *err)
{
	const unet_config *c = &m->cfg;
	const df_tensor *x = in->x;
	if (!x || !in->t)
		return df_error_set(err, DF_EINVAL, "unet: forward needs x and t");
	if (x->ndim != 4 || x->shape[1] != c->in_channels || x->shape[2] != c->height || x->shape[3] != c->width)
		return df_error_set(err, DF_EINVAL, "unet: x must be (N, %d, %d, %d) as the model was created for",
		                    c->in_channels, c->height, c->width);
	*batch = x->shape[0];
	if (in->t->numel != *batch)
		return df_error_set(err, DF_EINVAL, "unet: t has %lld values for a batch of %lld", (long long)in->t->numel,
		                    (long long)*batch);
	if (in->context) {
		if (c->context_dim <= 0)
			return df_error_set(err, DF_EINVAL, "unet: a context was given but context_dim is 0");
		if (in->context->ndim != 3 || in->context->shape[0] != *batch || in->context->shape[2] != c->context_dim)
			return df_error_set(err, DF_EINVAL, "unet: context must be (N = %lld, L, context_dim = %d)",
			                    (long long)*batch, c->context_dim);
	}
	if (in->y && c->table_rows == 0)
		return df_error_set(err, DF_EINVAL, "unet: labels given to an unconditional model (num_classes = 0)");
	if (!in->y && c->table_rows > 0 && c->table_rows == c->num_classes)
		return df_error_set(err, DF_EINVAL, "unet: labels are required (num_classes = %d, no null class)",
		                    c->num_classes);
	for (int64_t i = 0; in->y && i < *batch; i++)
		if (in->y[i] < 0 || in->y[i] >= c->table_rows)
			return df_error_set(err, DF_EINVAL, "unet: label %d of sample %lld is outside 0 .. %d", (int)in->y[i],
			                    (long long)i, c->table_rows - 1);
	if (in->hidden_block != 0)
		return df_error_set(err, DF_ENOTSUP, "unet: hidden states (hidden_block) are not offered by this backbone");
	return DF_OK;
}

/* The labels of the batch, the null class standing in for missing ones. */
static const int32_t *unet_labels(unet_model *m, const df_backbone_input *in, int64_t n)
{
	if (in->y)
		return in->y;
	if (n > m->null_cap) {
		int32_t *grown = realloc(m->null_ids, (size_t)n * sizeof(*grown));
		if (!grown)
			return NULL;
		m->null_ids = grown;
		m->null_cap = n;
	}
	for (int64_t i = 0; i < n; i++)
		m->null_ids[i] = m->cfg.num_classes;
	return m->null_ids;
}

int unet_model_forward(unet_model *m, df_graph *g, const df_backbone_input *in, df_tensor **out, df_error *err)
{
	const unet_config *c = &m->cfg;
	int64_t n = 0;
	*out = NULL;
	int rc = unet_check_input(m, in, &n, err);
	if (rc != DF_OK)
		return rc;

	/* Timestep embedding, plus label_emb(y) on the classic path. */
	float *host = np_scratch_get(&m->host, n * (c->model_channels + 1));
	const int32_t *ids = c->table_rows > 0 ? unet_labels(m, in, n) : NULL;
	if (!host || (c->table_rows > 0 && !ids))
		return df_error_set(err, DF_ENOMEM, "unet: out of memory");
	float *t_host = host + n * c->model_channels;
	if ((rc = df_tensor_read(in->t, t_host, err)) != DF_OK)
		return df_error_prefix(err, rc, "unet: t");
	unet_timestep_embedding(host, t_host, n, c->model_channels);
	df_tensor *emb = df_tensor_from_host(g, host, DF_SHAPE(n, c->model_channels));
	emb = df_linear(g, df_silu(g, df_linear(g, emb, m->t0_w, m->t0_b)), m->t2_w, m->t2_b);
	df_tensor *ctx = in->context;
	if (ids && !c->label_context)
		emb = df_add(g, emb, df_embedding(g, m->label_table, ids, n));
	if (ids && c->label_context) {
		df_tensor *token = df_reshape(g, df_embedding(g, m->label_table, ids, n), DF_SHAPE(n, 1, c->context_dim));
		ctx = ctx ? df_concat(g, (df_tensor *const[]){ctx, token}, 2, 1) : token;
	}
	df_tensor *silu_emb = df_silu(g, emb);

	df_tensor **skips = m->skips;
	df_tensor *h = in->x;
	for (int k = 0; k < m->n_input; k++)
		skips[k] = h = unet_stage_forward(m, g, &m->input[k], h, silu_emb, ctx);
	h = unet_stage_forward(m, g, &m->middle, h, silu_emb, ctx);
	for (int k = 0; k < m->n_output && h; k++) {
		df_tensor *skip = skips[m->n_input - 1 - k];
		h = unet_stage_forward(m, g, &m->output[k], df_concat(g, (df_tensor *const[]){h, skip}, 2, 1), silu_emb,
		                       ctx);
	}
	h = df_silu(g, df_groupnorm(g, h, c->groups, m->out_norm_w, m->out_norm_b, unet_gn_eps));
	h = df_conv2d(g, h, m->out_conv_w, m->out_conv_b, 1, 1);

	rc = df_graph_status(g, err);
	if (rc != DF_OK)
		return df_error_prefix(err, rc, "unet: forward");
	if (!h)
		return df_error_set(err, DF_EINVAL, "unet: forward: an op gave no result");
	*out = h;
	return DF_OK;
}
