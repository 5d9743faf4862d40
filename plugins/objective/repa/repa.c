/* REPA, representation alignment (Yu et al., ICLR 2025): a base objective's
 * loss plus
 *   proj_coeff * -(1/(N T)) sum_{j,n} cos(h_phi(h_j[n]), z_j[n])
 * where h is the backbone's tokens after block k (encoder_depth), h_phi a
 * token-wise MLP (Linear-SiLU-Linear-SiLU-Linear, named as the official
 * SiT's projectors.0.{0,2,4}) and z the patch features a frozen
 * representation encoder gives for the clean image. When the encoder's
 * grid differs from the backbone's token grid, the features are resampled
 * bilinearly to it.
 *
 * The base objective (velocity, ddpm, score, noise) and the encoder are
 * components of their own, found by name in the plugin search path: the
 * base gives the process, the output channels and its loss, with the model
 * call wrapped so the same forward also returns the hidden state. The
 * projector's width depends on the backbone's, so it is made when the
 * training stage attaches the objective to the backbone
 * (DF_OBJECTIVE_MODEL_ACCESS); the encoder is loaded then too. Sampling
 * never attaches: it needs neither. The per-sample losses the training
 * log groups by noise level (loss_out) are the base's alone. */
#include "config.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "diffuse/plugin.h"
#include "diffuse/rng.h"
#include "diffuse/runtime.h"
#include "diffuse/tensor.h"
#include "grid_resize.h"

#define REPA_INIT_STREAM 0x52455041u /* the projector's initialisation draws */

static const char *const repa_bases[] = {"velocity", "ddpm", "score", "noise", NULL};

typedef struct repa_settings {
	const char *base;
	const char *base_settings;
	const char *encoder;
	const char *encoder_settings;
	double proj_coeff;
	int64_t encoder_depth;
	int64_t projector_dim;
} repa_settings;

static const df_setting repa_settings_decl[] = {
	DF_SETTING_CHOICE(repa_settings, base, "velocity", repa_bases,
	                  "the objective REPA adds to: velocity (SiT, as the paper), ddpm, score or noise"),
	DF_SETTING_STRING(repa_settings, base_settings, "",
	                  "the base objective's settings as \"key=value, ...\" (e.g. \"path=linear\")"),
	DF_SETTING_STRING(repa_settings, encoder, "fmnist-features",
	                  "representation encoder component: fmnist-features (shipped) or dinov2"),
	DF_SETTING_STRING(repa_settings, encoder_settings, "",
	                  "the encoder's settings as \"key=value, ...\" (e.g. \"weights=dinov2_vitb14.safetensors\")"),
	DF_SETTING_FLOAT(repa_settings, proj_coeff, "0.5", 0, 1000, "lambda, the weight of the alignment term"),
	DF_SETTING_INT(repa_settings, encoder_depth, "8", 1, 4096,
	               "k: align the tokens after this block (1-indexed; the paper's 8 for SiT-XL/2)"),
	DF_SETTING_INT(repa_settings, projector_dim, "2048", 1, 65536, "hidden width of the projector MLP"),
	DF_SETTINGS_END,
};

/* A component made from a "key=value, ..." string over its defaults. */
typedef struct repa_part {
	const df_component *component;
	void *settings;
	void *self;
} repa_part;

typedef struct repa_objective {
	df_ctx *ctx;
	df_registry *registry;
	repa_part base, encoder;
	const df_objective_vtable *base_vt;
	const df_encoder_vtable *encoder_vt;
	double coeff;
	int depth, width;
	/* made by attach */
	df_params *projector;
	df_tensor *w[3], *b[3];
	int tokens_h, tokens_w, hidden;
	df_shape3 image, features;
	df_graph *encoder_graph;
	float *host;
	int64_t host_cap;
	df_objective_model_hook hook;
} repa_objective;

static void part_release(repa_part *p)
{
	if (p->settings)
		df_settings_release(p->component->settings, p->settings);
	free(p->settings);
	p->settings = NULL;
}

/* Fills p's settings from its defaults and "key=value, ..." pairs. */
static int part_settings(repa_part *p, const char *pairs, const char *what, df_error *err)
{
	if (!(p->settings = calloc(1, p->component->settings_size ? p->component->settings_size : 1)))
		return df_error_set(err, DF_ENOMEM, "out of memory");
	int rc = p->component->settings ? df_settings_defaults(p->component->settings, p->settings, err) : DF_OK;
	char *copy = strdup(pairs ? pairs : "");
	if (!copy)
		return df_error_set(err, DF_ENOMEM, "out of memory");
	char *save = NULL;
	for (char *item = strtok_r(copy, ",", &save); item && !rc; item = strtok_r(NULL, ",", &save)) {
		while (*item == ' ')
			item++;
		char *eq = strchr(item, '=');
		if (!*item)
			continue;
		if (!eq) {
			rc = df_error_set(err, DF_EINVAL, "%s: \"%s\" is not key=value", what, item);
			break;
		}
		*eq = '\0';
		char *key = item, *value = eq + 1, *end = eq;
		while (end > key && end[-1] == ' ')
			*--end = '\0';
		while (*value == ' ')
			value++;
		for (end = value + strlen(value); end > value && end[-1] == ' ';)
			*--end = '\0';
		if (!p->component->settings || !df_settings_find(p->component->settings, key))
			rc = df_error_set(err, DF_EINVAL, "%s: %s has no setting '%s'", what, p->component->name, key);
		else if ((rc = df_settings_set(p->component->settings, p->settings, key, value, err)))
			df_error_prefix(err, rc, "%s", what);
	}
	free(copy);
	return rc;
}

static int part_find(repa_objective *o, repa_part *p, df_kind kind, const char *name, const char *pairs,
                     const char *what, df_error *err)
{
	const df_component_info *info = df_registry_find(o->registry, kind, name);
	if (!info)
		return df_error_set(err, DF_EINVAL, "%s: no %s component '%s' in the plugin path", what,
		                    df_kind_name(kind), name);
	p->component = info->component;
	return part_settings(p, pairs, what, err);
}

static int repa_attach(void *self, const df_model_call *probe, df_shape3 image, df_shape3 input, uint64_t seed,
                       df_error *err);

static void repa_destroy(void *self)
{
	repa_objective *o = self;
	if (!o)
		return;
	if (o->base.self)
		o->base_vt->destroy(o->base.self);
	if (o->encoder.self)
		o->encoder_vt->destroy(o->encoder.self);
	part_release(&o->base);
	part_release(&o->encoder);
	df_params_destroy(o->projector);
	df_graph_destroy(o->encoder_graph);
	df_registry_destroy(o->registry);
	free(o->host);
	free(o);
}

static int repa_create(const void *settings, df_ctx *ctx, void **self, df_error *err)
{
	const repa_settings *s = settings;
	repa_objective *o = calloc(1, sizeof *o);
	if (!o)
		return df_error_set(err, DF_ENOMEM, "repa: out of memory");
	o->ctx = ctx;
	o->coeff = s->proj_coeff;
	o->depth = (int)s->encoder_depth;
	o->width = (int)s->projector_dim;
	o->hook = (df_objective_model_hook){sizeof o->hook, repa_attach};
	int rc = df_registry_create(&o->registry, err);
	if (!rc)
		rc = df_registry_load_default(o->registry, err);
	if (!rc)
		rc = part_find(o, &o->base, DF_KIND_OBJECTIVE, s->base, s->base_settings, "base_settings", err);
	if (!rc) {
		o->base_vt = o->base.component->vtable;
		rc = o->base_vt->create(o->base.settings, ctx, &o->base.self, err);
	}
	/* The encoder is looked up now so a misspelt name or setting fails
	 * `diffuse check`; it is loaded only when training attaches. */
	if (!rc)
		rc = part_find(o, &o->encoder, DF_KIND_ENCODER, s->encoder, s->encoder_settings, "encoder_settings", err);
	if (rc) {
		repa_destroy(o);
		return df_error_prefix(err, rc, "repa");
	}
	o->encoder_vt = o->encoder.component->vtable;
	*self = o;
	return DF_OK;
}

/* Xavier-uniform weights and zero biases: the official SiT's
 * initialize_weights pass over every nn.Linear, projectors included. */
static int projector_init(repa_objective *o, uint64_t seed, df_error *err)
{
	df_params *p = o->projector;
	float *values = malloc((size_t)df_params_numel(p) * sizeof *values);
	if (!values)
		return df_error_set(err, DF_ENOMEM, "repa: out of memory");
	for (size_t i = 0; i < df_params_count(p); i++) {
		const df_tensor *t = df_params_at(p, i);
		float *v = values + df_params_offset(p, i);
		if (t->ndim == 1) {
			memset(v, 0, (size_t)t->numel * sizeof *v);
			continue;
		}
		double bound = sqrt(6.0 / (double)(t->shape[0] + t->shape[1]));
		df_rng_fill_uniform(v, (size_t)t->numel, seed, REPA_INIT_STREAM, i, 0);
		for (int64_t k = 0; k < t->numel; k++)
			v[k] = (float)((2.0 * v[k] - 1.0) * bound);
	}
	int rc = df_params_write(p, values, err);
	free(values);
	return rc;
}

/* The backbone's token grid: T tokens over an input of h x w, same aspect. */
static int token_grid(repa_objective *o, int64_t T, df_shape3 input, df_error *err)
{
	for (int gh = 1; gh <= input.height; gh++) {
		if (T % gh || (int64_t)gh * input.width != (T / gh) * input.height)
			continue;
		o->tokens_h = gh;
		o->tokens_w = (int)(T / gh);
		return DF_OK;
	}
	return df_error_set(err, DF_EINVAL, "repa: %lld hidden tokens form no grid of the input's %dx%d aspect",
	                    (long long)T, input.height, input.width);
}

/* Learns the hidden state's shape from one forward, loads the encoder and
 * makes the projector. */
static int repa_attach(void *self, const df_model_call *probe, df_shape3 image, df_shape3 input, uint64_t seed,
                       df_error *err)
{
	repa_objective *o = self;
	if (o->projector)
		return df_error_set(err, DF_EINVAL, "repa: attached twice");
	o->image = image;
	df_graph *g = df_graph_create(o->ctx, DF_GRAPH_NO_GRAD);
	if (!g)
		return df_error_set(err, DF_ENOMEM, "repa: out of memory");
	df_tensor *x = df_tensor_zeros(g, DF_SHAPE(1, input.channels, input.height, input.width));
	df_tensor *t = df_tensor_zeros(g, DF_SHAPE(1));
	df_tensor *hidden = NULL, *out = NULL;
	int rc = df_graph_status(g, err);
	if (!rc)
		rc = probe->forward(probe->ctx, g, x, t, o->depth, &hidden, &out, err);
	if (!rc && (!hidden || hidden->ndim != 3))
		rc = df_error_set(err, DF_EINVAL, "repa: the backbone gave no (N, T, D) hidden state after block %d",
		                  o->depth);
	if (!rc) {
		o->hidden = (int)hidden->shape[2];
		rc = token_grid(o, hidden->shape[1], input, err);
	}
	df_graph_destroy(g);
	if (rc)
		return rc;
	if ((rc = o->encoder_vt->create(o->encoder.settings, o->ctx, o->image, &o->encoder.self, err)))
		return df_error_prefix(err, rc, "repa: encoder %s", o->encoder.component->name);
	o->features = o->encoder_vt->latent_shape(o->encoder.self);
	if (!(o->encoder_graph = df_graph_create(o->ctx, DF_GRAPH_NO_GRAD)) || !(o->projector = df_params_create(o->ctx)))
		return df_error_set(err, DF_ENOMEM, "repa: out of memory");
	const int64_t in[3] = {o->hidden, o->width, o->width}, outw[3] = {o->width, o->width, o->features.channels};
	for (int i = 0; i < 3; i++) {
		char name[64];
		snprintf(name, sizeof name, "projectors.0.%d.weight", 2 * i);
		o->w[i] = df_params_add(o->projector, name, DF_SHAPE(outw[i], in[i]), 0);
		snprintf(name, sizeof name, "projectors.0.%d.bias", 2 * i);
		o->b[i] = df_params_add(o->projector, name, DF_SHAPE(outw[i]), 0);
	}
	if ((rc = df_params_finalize(o->projector, err)))
		return rc;
	return projector_init(o, seed, err);
}

/* ------------------------------------------------------------------ */
/* The loss. */

/* The model as the base objective sees it: the same call, also keeping
 * the tokens after block k. */
typedef struct repa_call {
	const df_model_call *inner;
	int depth;
	df_tensor *hidden;
} repa_call;

static int call_with_hidden(void *ctx, df_graph *g, df_tensor *x_t, df_tensor *t, int hidden_block, df_tensor **hidden,
                            df_tensor **out, df_error *err)
{
	repa_call *c = ctx;
	if (hidden_block > 0)
		return df_error_set(err, DF_ENOTSUP, "repa: the base objective asks for a hidden state itself");
	(void)hidden;
	return c->inner->forward(c->inner->ctx, g, x_t, t, c->depth, &c->hidden, out, err);
}

static float *host_buffer(repa_objective *o, int64_t count, df_error *err)
{
	if (count > o->host_cap) {
		float *grown = realloc(o->host, (size_t)count * sizeof *grown);
		if (!grown) {
			df_error_set(err, DF_ENOMEM, "repa: out of memory");
			return NULL;
		}
		o->host = grown;
		o->host_cap = count;
	}
	return o->host;
}

/* The encoder's features of the clean images, on the backbone's token grid,
 * as a constant (N, T, D_z) on g. */
static int target_features(repa_objective *o, df_graph *g, df_tensor *images, df_tensor **z, df_error *err)
{
	const int64_t n = images->shape[0], D = o->features.channels, fh = o->features.height, fw = o->features.width;
	const int64_t T = (int64_t)o->tokens_h * o->tokens_w, image_numel = images->numel;
	float *host = host_buffer(o, image_numel + n * D * (fh * fw + 2 * T), err);
	if (!host)
		return DF_ENOMEM;
	float *feat = host + image_numel, *grid = feat + n * D * fh * fw, *tokens = grid + n * D * T;
	df_graph_reset(o->encoder_graph);
	df_tensor *x = NULL, *f = NULL;
	int rc = df_tensor_read(images, host, err);
	if (!rc) {
		x = df_tensor_from_host(o->encoder_graph, host, images->ndim, images->shape);
		rc = df_graph_status(o->encoder_graph, err);
	}
	if (!rc && (rc = o->encoder_vt->encode(o->encoder.self, o->encoder_graph, x, &f, err)))
		df_error_prefix(err, rc, "encoder %s", o->encoder.component->name);
	if (!rc && (f->ndim != 4 || f->numel != n * D * fh * fw))
		rc = df_error_set(err, DF_EINVAL, "encoder %s: features of another shape than it announced",
		                  o->encoder.component->name);
	if (!rc)
		rc = df_tensor_read(f, feat, err);
	if (rc)
		return rc;
	grid_resize_bilinear(feat, n * D, (int)fh, (int)fw, grid, o->tokens_h, o->tokens_w);
	for (int64_t i = 0; i < n; i++)
		for (int64_t d = 0; d < D; d++)
			for (int64_t k = 0; k < T; k++)
				tokens[(i * T + k) * D + d] = grid[(i * D + d) * T + k];
	*z = df_tensor_from_host(g, tokens, DF_SHAPE(n, T, D));
	return df_graph_status(g, err);
}

static int repa_loss(void *self, df_graph *g, const df_loss_batch *batch, const df_model_call *model,
                     df_tensor **loss, df_error *err)
{
	repa_objective *o = self;
	if (!o->projector)
		return df_error_set(err, DF_EINVAL, "repa: not attached to a backbone (the training stage attaches it)");
	if (!batch->images || batch->images->ndim != 4 || batch->images->shape[1] != o->image.channels ||
	    batch->images->shape[2] != o->image.height || batch->images->shape[3] != o->image.width)
		return df_error_set(err, DF_EINVAL, "repa: the batch's clean images are missing or not %dx%dx%d",
		                    o->image.channels, o->image.height, o->image.width);
	repa_call wrapped = {model, o->depth, NULL};
	df_model_call call = {sizeof call, call_with_hidden, &wrapped};
	df_tensor *base = NULL, *z = NULL;
	int rc = o->base_vt->loss(o->base.self, g, batch, &call, &base, err);
	if (rc)
		return df_error_prefix(err, rc, "repa: base %s", o->base.component->name);
	if (!wrapped.hidden)
		return df_error_set(err, DF_EINVAL, "repa: the base objective never called the model");
	if (wrapped.hidden->shape[1] != (int64_t)o->tokens_h * o->tokens_w || wrapped.hidden->shape[2] != o->hidden)
		return df_error_set(err, DF_EINVAL, "repa: the hidden state changed shape since attach");
	if ((rc = target_features(o, g, batch->images, &z, err)))
		return df_error_prefix(err, rc, "repa");
	df_tensor *h = wrapped.hidden;
	for (int i = 0; i < 3; i++) {
		h = df_linear(g, h, o->w[i], o->b[i]);
		if (i < 2)
			h = df_silu(g, h);
	}
	df_tensor *align = df_mean(g, df_cosine_similarity(g, h, z, 1e-8f));
	*loss = df_add(g, base, df_scale(g, align, (float)-o->coeff));
	return df_graph_status(g, err);
}

static const df_process *repa_process(void *self)
{
	repa_objective *o = self;
	return o->base_vt->process(o->base.self);
}

static int repa_out_channels(void *self, int channels)
{
	repa_objective *o = self;
	return o->base_vt->out_channels(o->base.self, channels);
}

static df_params *repa_params(void *self)
{
	return ((repa_objective *)self)->projector;
}

/* Beside the model access: the base's own extensions (a base reading the
 * dataset gets it), and the encoder's weights, so tests can see that no
 * gradient reaches them. */
#define REPA_ENCODER_PARAMS "repa-encoder-params"

static void *repa_extension(void *self, const char *name)
{
	repa_objective *o = self;
	if (strcmp(name, DF_OBJECTIVE_MODEL_ACCESS) == 0)
		return &o->hook;
	if (strcmp(name, REPA_ENCODER_PARAMS) == 0)
		return o->encoder.self && o->encoder_vt->params ? o->encoder_vt->params(o->encoder.self) : NULL;
	return o->base_vt->extension ? o->base_vt->extension(o->base.self, name) : NULL;
}

static const df_objective_vtable repa_vtable = {
	.struct_size = sizeof(df_objective_vtable),
	.create = repa_create,
	.destroy = repa_destroy,
	.process = repa_process,
	.out_channels = repa_out_channels,
	.loss = repa_loss,
	.params = repa_params,
	.extension = repa_extension,
};

static const df_component repa_component = {
	sizeof(df_component), DF_KIND_OBJECTIVE, "repa",
	"REPA: a base objective plus lambda * -cos(projector(tokens after block k), frozen encoder's patch features)",
	repa_settings_decl, sizeof(repa_settings), &repa_vtable};

DF_PLUGIN_DEFINE("repa-objective", PACKAGE_VERSION, "MIT", &repa_component)
