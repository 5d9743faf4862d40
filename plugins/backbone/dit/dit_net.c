/* The DiT network: configs, parameter layout under the official names, the
 * official initialisation and the forward pass composed from SDK ops. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "diffuse/io.h"
#include "diffuse/rng.h"
#include "dit_net.h"

/* ------------------------------------------------------------------ */
/* Configs. */

typedef struct dit_size {
	const char *letter; /* "S", "B", "L", "XL" */
	int depth, hidden, heads;
} dit_size;

static const dit_size dit_sizes[] = {
	{"S", 12, 384, 6},
	{"B", 12, 768, 12},
	{"L", 24, 1024, 16},
	{"XL", 28, 1152, 16},
};

/* "DiT-XL/2" (or "SiT-XL/2") -> the size and patch; 0 when not a model name. */
static int dit_parse_model(const char *model, dit_size *size, int *patch)
{
	if (!model || (strncmp(model, "DiT-", 4) != 0 && strncmp(model, "SiT-", 4) != 0))
		return 0;
	const char *rest = model + 4;
	const char *slash = strchr(rest, '/');
	if (!slash)
		return 0;
	for (size_t i = 0; i < sizeof(dit_sizes) / sizeof(dit_sizes[0]); i++) {
		size_t len = strlen(dit_sizes[i].letter);
		if ((size_t)(slash - rest) == len && strncmp(rest, dit_sizes[i].letter, len) == 0) {
			int p = atoi(slash + 1);
			if (p != 2 && p != 4 && p != 8)
				return 0;
			*size = dit_sizes[i];
			*patch = p;
			return 1;
		}
	}
	return 0;
}

int dit_config_resolve(dit_config *cfg, const dit_settings *s, const df_backbone_shape *shape,
                       const char *component, int sit_split, df_error *err)
{
	memset(cfg, 0, sizeof(*cfg));
	dit_size size = {NULL, 0, 0, 0};
	int patch = 0;
	const char *model = s->model ? s->model : "custom";
	if (strcmp(model, "custom") != 0 && !dit_parse_model(model, &size, &patch))
		return df_error_set(err, DF_EINVAL, "%s: model: unknown model '%s' (DiT-S/2 ... DiT-XL/8, or custom)",
		                    component, model);
	cfg->depth = s->depth > 0 ? (int)s->depth : size.depth;
	cfg->hidden = s->hidden > 0 ? (int)s->hidden : size.hidden;
	cfg->heads = s->heads > 0 ? (int)s->heads : size.heads;
	cfg->patch = s->patch > 0 ? (int)s->patch : patch;
	static const char *const names[] = {"depth", "hidden", "heads", "patch"};
	const int values[] = {cfg->depth, cfg->hidden, cfg->heads, cfg->patch};
	for (int i = 0; i < 4; i++)
		if (values[i] <= 0 || values[i] > 65536)
			return df_error_set(err, DF_EINVAL, "%s: %s: must be set (1 .. 65536) with model = \"custom\"",
			                    component, names[i]);
	if (cfg->hidden % cfg->heads != 0)
		return df_error_set(err, DF_EINVAL, "%s: heads: hidden %d is not a multiple of heads %d",
		                    component, cfg->hidden, cfg->heads);
	if (cfg->hidden % 4 != 0)
		return df_error_set(err, DF_EINVAL,
		                    "%s: hidden: %d is not a multiple of 4 (the 2-D sin-cos positions need it)",
		                    component, cfg->hidden);
	if (!(s->mlp_ratio > 0) || s->mlp_ratio * cfg->hidden < 1 || s->mlp_ratio > 64)
		return df_error_set(err, DF_EINVAL, "%s: mlp_ratio: %g gives no MLP width", component, s->mlp_ratio);
	cfg->mlp_hidden = (int)(cfg->hidden * s->mlp_ratio); /* int() as timm's Mlp takes it */

	if (!shape || shape->input.channels <= 0 || shape->input.height <= 0 || shape->input.width <= 0)
		return df_error_set(err, DF_EINVAL, "%s: the input shape is empty", component);
	cfg->in_channels = shape->input.channels;
	cfg->height = shape->input.height;
	cfg->width = shape->input.width;
	if (cfg->height % cfg->patch != 0 || cfg->width % cfg->patch != 0)
		return df_error_set(err, DF_EINVAL, "%s: patch: the input %dx%d is not divisible by patch %d",
		                    component, cfg->height, cfg->width, cfg->patch);
	cfg->grid_h = cfg->height / cfg->patch;
	cfg->grid_w = cfg->width / cfg->patch;
	cfg->tokens = cfg->grid_h * cfg->grid_w;
	if (shape->num_classes < 0)
		return df_error_set(err, DF_EINVAL, "%s: num_classes %d is negative", component, shape->num_classes);
	cfg->num_classes = shape->num_classes;
	cfg->table_rows = shape->num_classes > 0 ? shape->num_classes + (shape->null_class ? 1 : 0) : 0;
	cfg->out_channels = shape->out_channels > 0 ? shape->out_channels : cfg->in_channels;
	cfg->final_channels = sit_split && s->learn_sigma ? 2 * cfg->out_channels : cfg->out_channels;
	return DF_OK;
}

/* ------------------------------------------------------------------ */
/* Parameters, in the official state_dict order. */

/* block < 0: a top-level name; else "blocks.<block>.<name>". */
static void dit_param_set(dit_param_info *info, df_tensor **slot, uint32_t flags, int ndim,
                          const int64_t *shape, int block, const char *name)
{
	if (block < 0)
		snprintf(info->name, sizeof(info->name), "%s", name);
	else
		snprintf(info->name, sizeof(info->name), "blocks.%d.%s", block, name);
	info->ndim = ndim;
	for (int d = 0; d < ndim; d++)
		info->shape[d] = shape[d];
	info->flags = flags;
	info->slot = slot;
}

/* Records one parameter when info is given; always counts it. */
#define DIT_PARAM(SLOT, FLAGS, BLOCK, NAME, ...)                                                \
	do {                                                                                     \
		if (info)                                                                        \
			dit_param_set(&info[n], model ? (SLOT) : NULL, FLAGS, DF_SHAPE(__VA_ARGS__),  \
			              BLOCK, NAME);                                              \
		n++;                                                                             \
	} while (0)

int dit_param_layout(const dit_config *c, dit_model *model, dit_param_info *info)
{
	int n = 0;
	const int64_t D = c->hidden, C = c->in_channels, p = c->patch;
	dit_model *m = model;
	DIT_PARAM(&m->pos_embed, DF_TENSOR_FROZEN, -1, "pos_embed", 1, c->tokens, D);
	DIT_PARAM(&m->x_w, 0, -1, "x_embedder.proj.weight", D, C, p, p);
	DIT_PARAM(&m->x_b, 0, -1, "x_embedder.proj.bias", D);
	DIT_PARAM(&m->t_w0, 0, -1, "t_embedder.mlp.0.weight", D, DIT_FREQ_DIM);
	DIT_PARAM(&m->t_b0, 0, -1, "t_embedder.mlp.0.bias", D);
	DIT_PARAM(&m->t_w2, 0, -1, "t_embedder.mlp.2.weight", D, D);
	DIT_PARAM(&m->t_b2, 0, -1, "t_embedder.mlp.2.bias", D);
	if (c->table_rows > 0)
		DIT_PARAM(&m->y_table, 0, -1, "y_embedder.embedding_table.weight", c->table_rows, D);
	for (int k = 0; k < c->depth; k++) {
		dit_block *b = model ? &m->blocks[k] : NULL;
		DIT_PARAM(&b->qkv_w, 0, k, "attn.qkv.weight", 3 * D, D);
		DIT_PARAM(&b->qkv_b, 0, k, "attn.qkv.bias", 3 * D);
		DIT_PARAM(&b->proj_w, 0, k, "attn.proj.weight", D, D);
		DIT_PARAM(&b->proj_b, 0, k, "attn.proj.bias", D);
		DIT_PARAM(&b->fc1_w, 0, k, "mlp.fc1.weight", c->mlp_hidden, D);
		DIT_PARAM(&b->fc1_b, 0, k, "mlp.fc1.bias", c->mlp_hidden);
		DIT_PARAM(&b->fc2_w, 0, k, "mlp.fc2.weight", D, c->mlp_hidden);
		DIT_PARAM(&b->fc2_b, 0, k, "mlp.fc2.bias", D);
		DIT_PARAM(&b->ada_w, 0, k, "adaLN_modulation.1.weight", 6 * D, D);
		DIT_PARAM(&b->ada_b, 0, k, "adaLN_modulation.1.bias", 6 * D);
	}
	const int64_t out_features = p * p * c->final_channels;
	DIT_PARAM(&m->final_w, 0, -1, "final_layer.linear.weight", out_features, D);
	DIT_PARAM(&m->final_b, 0, -1, "final_layer.linear.bias", out_features);
	DIT_PARAM(&m->final_ada_w, 0, -1, "final_layer.adaLN_modulation.1.weight", 2 * D, D);
	DIT_PARAM(&m->final_ada_b, 0, -1, "final_layer.adaLN_modulation.1.bias", 2 * D);
	return n;
}

static int64_t dit_info_numel(const dit_param_info *info)
{
	int64_t numel = 1;
	for (int d = 0; d < info->ndim; d++)
		numel *= info->shape[d];
	return numel;
}

int64_t dit_param_numel(const dit_config *cfg)
{
	int n = dit_param_layout(cfg, NULL, NULL);
	dit_param_info *info = calloc((size_t)n, sizeof(*info));
	if (!info)
		return -1;
	dit_param_layout(cfg, NULL, info);
	int64_t total = 0;
	for (int i = 0; i < n; i++)
		total += dit_info_numel(&info[i]);
	free(info);
	return total;
}

/* ------------------------------------------------------------------ */
/* Model lifetime. */

void dit_model_destroy(dit_model *m)
{
	if (!m)
		return;
	df_params_destroy(m->params);
	free(m->blocks);
	free(m->host_buf);
	free(m);
}

int dit_model_create(dit_model **out, const dit_config *cfg, const char *component, df_ctx *ctx,
                     df_error *err)
{
	*out = NULL;
	dit_model *m = calloc(1, sizeof(*m));
	if (!m)
		return df_error_set(err, DF_ENOMEM, "%s: out of memory", component);
	m->cfg = *cfg;
	m->component = component;
	m->ctx = ctx;
	m->blocks = calloc((size_t)cfg->depth, sizeof(*m->blocks));
	m->params = df_params_create(ctx);
	int n = dit_param_layout(cfg, m, NULL);
	dit_param_info *info = calloc((size_t)n, sizeof(*info));
	if (!m->blocks || !m->params || !info) {
		free(info);
		dit_model_destroy(m);
		return df_error_set(err, DF_ENOMEM, "%s: out of memory", component);
	}
	dit_param_layout(cfg, m, info);
	for (int i = 0; i < n; i++) {
		if (!df_params_add(m->params, info[i].name, info[i].ndim, info[i].shape, info[i].flags)) {
			free(info);
			dit_model_destroy(m);
			return df_error_set(err, DF_ENOMEM, "%s: cannot register parameter %s", component,
			                    info[i].name);
		}
	}
	int rc = df_params_finalize(m->params, err);
	if (rc != DF_OK) {
		free(info);
		dit_model_destroy(m);
		return df_error_prefix(err, rc, "%s", component);
	}
	/* Tensors are bound after finalize, by registration order, so nothing
	 * depends on where the block kept them while registering. */
	for (int i = 0; i < n; i++)
		*info[i].slot = df_params_at(m->params, (size_t)i);
	free(info);
	*out = m;
	return DF_OK;
}

/* ------------------------------------------------------------------ */
/* Fixed embeddings. */

/* One axis of MAE's 1-D table: sines of pos*omega_m, then cosines. */
static void dit_sincos_1d(float *dst, int dim, double pos)
{
	int half = dim / 2;
	for (int m = 0; m < half; m++) {
		double omega = 1.0 / pow(10000.0, (double)m / (double)half);
		dst[m] = (float)sin(pos * omega);
		dst[half + m] = (float)cos(pos * omega);
	}
}

void dit_pos_embed(float *dst, int grid_h, int grid_w, int dim)
{
	for (int i = 0; i < grid_h; i++)
		for (int j = 0; j < grid_w; j++) {
			float *row = dst + ((int64_t)i * grid_w + j) * dim;
			dit_sincos_1d(row, dim / 2, j);           /* column first: meshgrid(w, h) */
			dit_sincos_1d(row + dim / 2, dim / 2, i);
		}
}

void dit_timestep_freqs(float *dst, const float *t, int64_t n)
{
	const int half = DIT_FREQ_DIM / 2;
	float freqs[DIT_FREQ_DIM / 2];
	/* As the official float32 code: exp(-ln(10000) * m / half), with the
	 * exponent rounded to float and the exponential correctly rounded. */
	const float neg_log_period = (float)-log(10000.0);
	for (int m = 0; m < half; m++) {
		float e = neg_log_period * (float)m / (float)half;
		freqs[m] = (float)exp((double)e);
	}
	for (int64_t r = 0; r < n; r++)
		for (int m = 0; m < half; m++) {
			float arg = t[r] * freqs[m];
			dst[r * DIT_FREQ_DIM + m] = (float)cos((double)arg);
			dst[r * DIT_FREQ_DIM + half + m] = (float)sin((double)arg);
		}
}

/* ------------------------------------------------------------------ */
/* The official initialisation (spec order: generic pass, then overrides). */

enum dit_init_kind { DIT_INIT_ZERO, DIT_INIT_XAVIER, DIT_INIT_NORMAL_002, DIT_INIT_POS };

/* Draws of parameter i come from stream DIT_INIT_STREAM + i: independent of
 * the other users of the run seed (noise, data order, dropout). */
#define DIT_INIT_STREAM 0x44695400u

static enum dit_init_kind dit_init_kind_of(const dit_model *m, const df_tensor *t)
{
	if (t == m->pos_embed)
		return DIT_INIT_POS;
	if (t == m->y_table || t == m->t_w0 || t == m->t_w2)
		return DIT_INIT_NORMAL_002;
	if (t == m->final_w || t == m->final_ada_w || t->ndim == 1)
		return DIT_INIT_ZERO;
	for (int k = 0; k < m->cfg.depth; k++)
		if (t == m->blocks[k].ada_w)
			return DIT_INIT_ZERO;
	return DIT_INIT_XAVIER; /* linears and the patch conv on its (D, C p p) view */
}

int dit_model_init(dit_model *m, uint64_t seed, df_error *err)
{
	size_t count = df_params_count(m->params);
	size_t largest = 0;
	for (size_t i = 0; i < count; i++)
		if ((size_t)df_params_at(m->params, i)->numel > largest)
			largest = (size_t)df_params_at(m->params, i)->numel;
	float *buf = malloc(largest * sizeof(float));
	if (!buf)
		return df_error_set(err, DF_ENOMEM, "%s: out of memory", m->component);
	int rc = DF_OK;
	for (size_t i = 0; i < count && rc == DF_OK; i++) {
		df_tensor *t = df_params_at(m->params, i);
		size_t numel = (size_t)t->numel;
		uint64_t stream = DIT_INIT_STREAM + i;
		switch (dit_init_kind_of(m, t)) {
		case DIT_INIT_ZERO:
			memset(buf, 0, numel * sizeof(float));
			break;
		case DIT_INIT_POS:
			dit_pos_embed(buf, m->cfg.grid_h, m->cfg.grid_w, m->cfg.hidden);
			break;
		case DIT_INIT_NORMAL_002:
			df_rng_fill_normal(buf, numel, seed, stream, 0, 0);
			for (size_t e = 0; e < numel; e++)
				buf[e] *= 0.02f;
			break;
		case DIT_INIT_XAVIER: {
			double fan_out = (double)t->shape[0];
			double fan_in = (double)numel / fan_out;
			float bound = (float)sqrt(6.0 / (fan_in + fan_out));
			df_rng_fill_uniform(buf, numel, seed, stream, 0, 0);
			for (size_t e = 0; e < numel; e++)
				buf[e] = bound * (2.0f * buf[e] - 1.0f);
			break;
		}
		}
		rc = df_tensor_write(t, buf, err);
	}
	free(buf);
	return rc == DF_OK ? DF_OK : df_error_prefix(err, rc, "%s: init", m->component);
}

/* ------------------------------------------------------------------ */
/* Forward. */

static int dit_check_input(const dit_model *m, const df_backbone_input *in, int64_t *batch, df_error *err)
{
	const dit_config *c = &m->cfg;
	const df_tensor *x = in->x;
	if (!x || !in->t)
		return df_error_set(err, DF_EINVAL, "%s: forward needs x and t", m->component);
	if (x->ndim != 4 || x->shape[1] != c->in_channels || x->shape[2] != c->height || x->shape[3] != c->width)
		return df_error_set(err, DF_EINVAL, "%s: x must be (N, %d, %d, %d) as the model was created for",
		                    m->component, c->in_channels, c->height, c->width);
	*batch = x->shape[0];
	if (in->t->numel != *batch)
		return df_error_set(err, DF_EINVAL, "%s: t has %lld values for a batch of %lld", m->component,
		                    (long long)in->t->numel, (long long)*batch);
	if (in->context)
		return df_error_set(err, DF_EINVAL, "%s: the network has no cross-attention context", m->component);
	if (in->y && c->table_rows == 0)
		return df_error_set(err, DF_EINVAL, "%s: labels given to an unconditional model (num_classes = 0)",
		                    m->component);
	/* Without labels every sample takes the null class, when there is one. */
	if (!in->y && c->table_rows > 0 && c->table_rows == c->num_classes)
		return df_error_set(err, DF_EINVAL, "%s: labels are required (num_classes = %d, no null class)",
		                    m->component, c->num_classes);
	for (int64_t i = 0; in->y && i < *batch; i++)
		if (in->y[i] < 0 || in->y[i] >= c->table_rows)
			return df_error_set(err, DF_EINVAL, "%s: label %d of sample %lld is outside 0 .. %d",
			                    m->component, (int)in->y[i], (long long)i, c->table_rows - 1);
	if (in->hidden_block < 0 || in->hidden_block > c->depth)
		return df_error_set(err, DF_EINVAL, "%s: hidden_block %d is outside 1 .. depth %d", m->component,
		                    in->hidden_block, c->depth);
	if (in->hidden_block > 0 && !in->hidden)
		return df_error_set(err, DF_EINVAL, "%s: hidden_block %d without a place for the hidden state",
		                    m->component, in->hidden_block);
	return DF_OK;
}

static float *dit_host_buffer(dit_model *m, int64_t count)
{
	if (count > m->host_cap) {
		float *grown = realloc(m->host_buf, (size_t)count * sizeof(float));
		if (!grown)
			return NULL;
		m->host_buf = grown;
		m->host_cap = count;
	}
	return m->host_buf;
}

/* c = t_embedder(t) + y_embedder(y). */
static df_tensor *dit_condition(dit_model *m, df_graph *g, const df_backbone_input *in, int64_t n, df_error *err,
                                int *rc)
{
	float *host = dit_host_buffer(m, n * (DIT_FREQ_DIM + 1));
	int32_t *null_ids = NULL;
	if (!host) {
		*rc = df_error_set(err, DF_ENOMEM, "%s: out of memory", m->component);
		return NULL;
	}
	float *t_host = host + n * DIT_FREQ_DIM;
	*rc = df_tensor_read(in->t, t_host, err);
	if (*rc != DF_OK) {
		df_error_prefix(err, *rc, "%s: t", m->component);
		return NULL;
	}
	dit_timestep_freqs(host, t_host, n);
	df_tensor *freqs = df_tensor_from_host(g, host, DF_SHAPE(n, DIT_FREQ_DIM));
	df_tensor *h = df_linear(g, freqs, m->t_w0, m->t_b0);
	df_tensor *cond = df_linear(g, df_silu(g, h), m->t_w2, m->t_b2);
	if (m->cfg.table_rows == 0)
		return cond;
	const int32_t *ids = in->y;
	if (!ids) {
		null_ids = malloc((size_t)n * sizeof(*null_ids));
		if (!null_ids) {
			*rc = df_error_set(err, DF_ENOMEM, "%s: out of memory", m->component);
			return NULL;
		}
		for (int64_t i = 0; i < n; i++)
			null_ids[i] = m->cfg.num_classes;
		ids = null_ids;
	}
	cond = df_add(g, cond, df_embedding(g, m->y_table, ids, n)); /* the ids are copied onto the tape */
	free(null_ids);
	return cond;
}

/* x + gate_msa * attn(...) + gate_mlp * mlp(...), adaLN-Zero. */
static df_tensor *dit_block_forward(const dit_model *m, df_graph *g, const dit_block *b, df_tensor *x,
                                    df_tensor *silu_c)
{
	const float eps = 1e-6f;
	df_tensor *mod[6] = {NULL}; /* shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp */
	if (df_chunk(g, df_linear(g, silu_c, b->ada_w, b->ada_b), 6, 1, mod) != DF_OK)
		return NULL;
	df_tensor *h = df_layernorm_modulate(g, x, mod[0], mod[1], eps);
	h = df_attention_qkv(g, df_linear(g, h, b->qkv_w, b->qkv_b), m->cfg.heads);
	x = df_gated_residual(g, x, mod[2], df_linear(g, h, b->proj_w, b->proj_b));
	h = df_layernorm_modulate(g, x, mod[3], mod[4], eps);
	h = df_gelu(g, df_linear(g, h, b->fc1_w, b->fc1_b), 1);
	return df_gated_residual(g, x, mod[5], df_linear(g, h, b->fc2_w, b->fc2_b));
}

int dit_model_forward(dit_model *m, df_graph *g, const df_backbone_input *in, df_tensor **out, df_error *err)
{
	const dit_config *c = &m->cfg;
	int64_t n = 0;
	*out = NULL;
	int rc = dit_check_input(m, in, &n, err);
	if (rc != DF_OK)
		return rc;
	if (in->hidden_block > 0)
		*in->hidden = NULL;

	/* Patch embedding: the stride-p convolution as patchify + linear on the
	 * weight's (D, C p p) view. */
	int64_t patch_features = (int64_t)c->in_channels * c->patch * c->patch;
	df_tensor *w_view = df_reshape(g, m->x_w, DF_SHAPE(c->hidden, patch_features));
	df_tensor *x = df_linear(g, df_patchify(g, in->x, c->patch), w_view, m->x_b);
	x = df_add(g, x, m->pos_embed);

	df_tensor *cond = dit_condition(m, g, in, n, err, &rc);
	if (rc != DF_OK)
		return rc;
	/* Every adaLN starts with SiLU(c): computed once for all blocks. */
	df_tensor *silu_c = df_silu(g, cond);

	/* Without a tape (sampling), each block's activations die with it: only
	 * x (and the hidden state asked for) live on, so the arena is reused. */
	size_t mark = df_graph_mark(g);
	for (int k = 0; k < c->depth; k++) {
		x = dit_block_forward(m, g, &m->blocks[k], x, silu_c);
		if (k + 1 == in->hidden_block)
			*in->hidden = x;
		df_graph_rewind(g, mark, (df_tensor *[]){x, in->hidden_block > 0 ? *in->hidden : NULL}, 2);
	}

	df_tensor *mod[2] = {NULL}; /* shift, scale */
	df_chunk(g, df_linear(g, silu_c, m->final_ada_w, m->final_ada_b), 2, 1, mod);
	x = df_layernorm_modulate(g, x, mod[0], mod[1], 1e-6f);
	x = df_linear(g, x, m->final_w, m->final_b);
	x = df_unpatchify(g, x, c->patch, c->final_channels, c->height, c->width);
	if (c->final_channels != c->out_channels)
		x = df_slice(g, x, 1, 0, c->out_channels); /* SiT: the learned-sigma half is dropped */

	rc = df_graph_status(g, err);
	if (rc != DF_OK)
		return df_error_prefix(err, rc, "%s: forward", m->component);
	if (!x)
		return df_error_set(err, DF_EINVAL, "%s: forward: an op gave no result", m->component);
	*out = x;
	return DF_OK;
}

/* ------------------------------------------------------------------ */
/* Loading official weights by name. */

/* The setting a dimension of a parameter follows from, for messages. */
static const char *dit_dim_setting(const char *name, int dim)
{
	if (strcmp(name, "pos_embed") == 0)
		return dim == 1 ? "the number of tokens (input size over patch)" : "hidden";
	if (strcmp(name, "x_embedder.proj.weight") == 0)
		return dim == 0 ? "hidden" : dim == 1 ? "the input channels" : "patch";
	if (strncmp(name, "y_embedder.", 11) == 0)
		return dim == 0 ? "num_classes (rows: num_classes + 1 with the null class)" : "hidden";
	if (strncmp(name, "final_layer.linear.", 19) == 0 && dim == 0)
		return "the output channels (learn_sigma doubles them) or patch (rows: patch^2 x channels)";
	if ((strstr(name, ".mlp.fc1.") && dim == 0) || (strstr(name, ".mlp.fc2.weight") && dim == 1))
		return "mlp_ratio";
	return "hidden";
}

static void dit_format_shape(char *buf, size_t size, int ndim, const int64_t *shape)
{
	size_t used = (size_t)snprintf(buf, size, "(");
	for (int d = 0; d < ndim && used < size; d++)
		used += (size_t)snprintf(buf + used, size - used, d ? ", %lld" : "%lld", (long long)shape[d]);
	if (used < size)
		snprintf(buf + used, size - used, ")");
}

static int dit_check_tensor(const dit_model *m, const char *path, const df_tensor *p,
                            const df_safetensors_tensor *st, df_error *err)
{
	char file_shape[96], model_shape[96];
	if (!st) {
		int block = -1;
		if (sscanf(p->name, "blocks.%d.", &block) == 1)
			return df_error_set(err, DF_EINVAL, "%s: %s is missing: the file has fewer blocks (depth differs; the model has %d)",
			                    path, p->name, m->cfg.depth);
		if (strncmp(p->name, "y_embedder.", 11) == 0)
			return df_error_set(err, DF_EINVAL, "%s: %s is missing: the file's model is unconditional (num_classes differs)",
			                    path, p->name);
		return df_error_set(err, DF_EINVAL, "%s: %s is missing", path, p->name);
	}
	int same = st->ndim == p->ndim;
	int first_diff = 0;
	for (int d = 0; same && d < p->ndim; d++)
		if (st->shape[d] != p->shape[d]) {
			same = 0;
			first_diff = d;
		}
	if (same)
		return DF_OK;
	dit_format_shape(file_shape, sizeof(file_shape), st->ndim, st->shape);
	dit_format_shape(model_shape, sizeof(model_shape), p->ndim, p->shape);
	return df_error_set(err, DF_EINVAL, "%s: %s has shape %s in the file but %s in the model: %s differs", path,
	                    p->name, file_shape, model_shape,
	                    st->ndim == p->ndim ? dit_dim_setting(p->name, first_diff) : "the layout");
}

int dit_model_load(dit_model *m, const char *path, df_error *err)
{
	df_safetensors *file = NULL;
	int rc = df_safetensors_open(&file, path, err);
	if (rc != 0)
		return rc;
	size_t count = df_params_count(m->params);
	float *buf = NULL;
	/* Names first, so nothing is written from a file that does not fit. */
	for (size_t i = 0; i < count && rc == DF_OK; i++) {
		const df_tensor *p = df_params_at(m->params, i);
		rc = dit_check_tensor(m, path, p, df_safetensors_find(file, p->name), err);
	}
	for (size_t i = 0; i < df_safetensors_count(file) && rc == DF_OK; i++) {
		const char *name = df_safetensors_tensor_at(file, i)->name;
		int block = -1;
		if (df_params_find(m->params, name))
			continue;
		if (sscanf(name, "blocks.%d.", &block) == 1 && block >= m->cfg.depth)
			rc = df_error_set(err, DF_EINVAL, "%s: %s is not in the model: the file has more blocks (depth differs; the model has %d)",
			                  path, name, m->cfg.depth);
		else if (strncmp(name, "y_embedder.", 11) == 0)
			rc = df_error_set(err, DF_EINVAL, "%s: %s is not in the model: the file's model is class-conditional (num_classes differs)",
			                  path, name);
		else
			rc = df_error_set(err, DF_EINVAL, "%s: %s is not a parameter of a %s model", path, name,
			                  m->component);
	}
	for (size_t i = 0; i < count && rc == DF_OK; i++) {
		df_tensor *p = df_params_at(m->params, i);
		const df_safetensors_tensor *st = df_safetensors_find(file, p->name);
		float *grown = realloc(buf, st->nelem * sizeof(float));
		if (!grown) {
			rc = df_error_set(err, DF_ENOMEM, "%s: out of memory", path);
			break;
		}
		buf = grown;
		rc = df_safetensors_read_f32(file, st, buf, st->nelem, err);
		if (rc == 0)
			rc = df_tensor_write(p, buf, err);
	}
	free(buf);
	df_safetensors_close(file);
	return rc;
}
