/* Small components for the stage tests, so training and sampling can be
 * tested in seconds and independently of the real networks:
 *   backbone "pixel-mlp": a per-pixel MLP with time and label embeddings
 *     (its `hidden` setting changes the shape of its weights);
 *   objective "flow-fixture": the linear path with a velocity (or eps)
 *     target, computed on the host; `nan_at_step` poisons one step's loss,
 *     `inf_grad_at_step` one step's gradient (the loss stays finite);
 *   sampler "euler-fixture": Euler on the velocity; refuses a process
 *     whose prediction is not a velocity, as a sampler that needs one
 *     would. */
#include "config.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "diffuse/diffuse.h"

/* ------------------------------------------------------------------ */
/* Backbone. */

typedef struct mlp_settings {
	int64_t hidden;
} mlp_settings;

static const df_setting mlp_decl[] = {
	DF_SETTING_INT(mlp_settings, hidden, "16", 1, 4096, "hidden width"),
	DF_SETTINGS_END,
};

typedef struct mlp {
	df_params *params;
	df_backbone_shape shape;
	int64_t hidden;
	df_tensor *offset, *w1, *b1, *tw, *emb, *w2, *b2;
} mlp;

static int mlp_create(const void *settings, df_ctx *ctx, const df_backbone_shape *shape, void **self, df_error *err)
{
	const mlp_settings *s = settings;
	mlp *m = calloc(1, sizeof *m);
	if (!m)
		return df_error_set(err, DF_ENOMEM, "pixel-mlp: out of memory");
	m->shape = *shape;
	m->hidden = s->hidden;
	m->params = df_params_create(ctx);
	int64_t c = shape->input.channels, h = s->hidden, o = shape->out_channels;
	/* A frozen tensor registered first, as DiT's pos_embed is: the block
	 * then orders tensors differently from their registration. */
	m->offset = df_params_add(m->params, "out_offset", DF_SHAPE(o), DF_TENSOR_FROZEN);
	m->w1 = df_params_add(m->params, "in.weight", DF_SHAPE(h, c), 0);
	m->b1 = df_params_add(m->params, "in.bias", DF_SHAPE(h), 0);
	m->tw = df_params_add(m->params, "t_embed.weight", DF_SHAPE(h), 0);
	if (shape->num_classes > 0)
		m->emb = df_params_add(m->params, "y_embedder.embedding_table",
		                       DF_SHAPE(shape->num_classes + (shape->null_class ? 1 : 0), h), 0);
	m->w2 = df_params_add(m->params, "out.weight", DF_SHAPE(o, h), 0);
	m->b2 = df_params_add(m->params, "out.bias", DF_SHAPE(o), 0);
	int rc = df_params_finalize(m->params, err);
	if (rc) {
		df_params_destroy(m->params);
		free(m);
		return rc;
	}
	*self = m;
	return DF_OK;
}

static void mlp_destroy(void *self)
{
	mlp *m = self;
	df_params_destroy(m->params);
	free(m);
}

static df_params *mlp_params(void *self) { return ((mlp *)self)->params; }

static int mlp_init(void *self, uint64_t seed, df_error *err)
{
	mlp *m = self;
	int64_t n = df_params_numel(m->params);
	float *v = malloc((size_t)n * sizeof *v);
	if (!v)
		return df_error_set(err, DF_ENOMEM, "pixel-mlp: out of memory");
	df_rng_fill_normal(v, (size_t)n, seed, 0x696e6974u, 0, 0);
	for (int64_t i = 0; i < n; i++)
		v[i] *= 0.3f;
	int rc = df_params_write(m->params, v, err);
	free(v);
	return rc;
}

static int mlp_forward(void *self, df_graph *g, const df_backbone_input *in, df_tensor **out, df_error *err)
{
	mlp *m = self;
	const df_tensor *x = in->x;
	int64_t n = x->shape[0], c = x->shape[1], hh = x->shape[2], ww = x->shape[3];
	df_tensor *tokens = df_reshape(g, df_permute(g, in->x, (const int[]){0, 2, 3, 1}), 3,
	                               (const int64_t[]){n, hh * ww, c});
	df_tensor *h = df_linear(g, tokens, m->w1, m->b1);
	df_tensor *t = df_reshape(g, in->t, 3, (const int64_t[]){n, 1, 1});
	h = df_add(g, h, df_mul(g, df_scale(g, t, 0.001f), m->tw));
	if (m->emb && in->y)
		h = df_add(g, h, df_reshape(g, df_embedding(g, m->emb, in->y, n), 3, (const int64_t[]){n, 1, m->hidden}));
	h = df_silu(g, h);
	df_tensor *o = df_add(g, df_linear(g, h, m->w2, m->b2), m->offset);
	o = df_reshape(g, o, 4, (const int64_t[]){n, hh, ww, m->shape.out_channels});
	*out = df_permute(g, o, (const int[]){0, 3, 1, 2});
	return df_graph_status(g, err);
}

static const df_backbone_vtable mlp_vtable = {
	sizeof(df_backbone_vtable), mlp_create, mlp_destroy, mlp_params, mlp_init, mlp_forward, NULL,
};

static const df_component mlp_component = {
	sizeof(df_component), DF_KIND_BACKBONE, "pixel-mlp", "test backbone: a per-pixel MLP",
	mlp_decl, sizeof(mlp_settings), &mlp_vtable,
};

/* ------------------------------------------------------------------ */
/* Objective. */

static const char *const predictions[] = {"velocity", "eps", NULL};

typedef struct flow_settings {
	const char *prediction;
	int64_t nan_at_step;
	int64_t inf_grad_at_step;
} flow_settings;

static const df_setting flow_decl[] = {
	DF_SETTING_CHOICE(flow_settings, prediction, "velocity", predictions, "what the model predicts"),
	DF_SETTING_INT(flow_settings, nan_at_step, "-1", -1, 1e12, "0-based step whose loss is NaN; -1 = none"),
	DF_SETTING_INT(flow_settings, inf_grad_at_step, "-1", -1, 1e12,
	               "0-based step whose gradient overflows while the loss stays finite; -1 = none"),
	DF_SETTINGS_END,
};

typedef struct flow {
	flow_settings s;
	df_process *process;
	float *host; /* x0, x_t, target, t: grown once to the batch */
	int64_t cap;
} flow;

static int flow_create(const void *settings, df_ctx *ctx, void **self, df_error *err)
{
	(void)ctx;
	flow *f = calloc(1, sizeof *f);
	if (!f)
		return df_error_set(err, DF_ENOMEM, "flow-fixture: out of memory");
	memcpy(&f->s, settings, sizeof f->s);
	df_prediction pred = strcmp(f->s.prediction, "eps") == 0 ? DF_PRED_EPS : DF_PRED_VELOCITY;
	int rc = df_process_create_path(&f->process, DF_PATH_LINEAR, pred, -1, -1, err);
	if (rc) {
		free(f);
		return rc;
	}
	*self = f;
	return DF_OK;
}

static void flow_destroy(void *self)
{
	flow *f = self;
	df_process_destroy(f->process);
	free(f->host);
	free(f);
}

static const df_process *flow_process(void *self) { return ((flow *)self)->process; }
static int flow_out_channels(void *self, int channels)
{
	(void)self;
	return channels;
}

static int flow_loss(void *self, df_graph *g, const df_loss_batch *b, const df_model_call *model, df_tensor **loss,
                     df_error *err)
{
	flow *f = self;
	const df_tensor *x0t = b->x0;
	int64_t n = x0t->shape[0], dim = x0t->numel / n, total = x0t->numel;
	if (3 * total + n > f->cap) {
		free(f->host);
		f->cap = 3 * total + n;
		if (!(f->host = malloc((size_t)f->cap * sizeof *f->host)))
			return df_error_set(err, DF_ENOMEM, "flow-fixture: out of memory");
	}
	float *x0 = f->host, *xt = x0 + total, *target = xt + total, *tv = target + total;
	int rc = df_tensor_read(b->x0, x0, err);
	if (rc)
		return rc;
	df_prediction pred = df_process_prediction(f->process);
	for (int64_t i = 0; i < n; i++) {
		double t = df_rng_uniform(b->seed, DF_STREAM_TRAIN_TIME, b->step, (uint64_t)b->index[i]);
		df_coeffs c;
		df_process_coeffs(f->process, t, &c);
		double cx0, ceps;
		df_coeffs_target(&c, pred, &cx0, &ceps);
		for (int64_t j = 0; j < dim; j++) {
			float eps = df_rng_normal(b->seed, DF_STREAM_TRAIN_NOISE, b->step, (uint64_t)(b->index[i] * dim + j));
			xt[i * dim + j] = (float)(c.alpha * x0[i * dim + j] + c.sigma * eps);
			target[i * dim + j] = (float)(cx0 * x0[i * dim + j] + ceps * eps);
		}
		tv[i] = (float)df_process_model_time(f->process, t);
		if (b->t_out)
			b->t_out[i] = (float)t;
	}
	df_tensor *x = df_tensor_from_host(g, xt, x0t->ndim, x0t->shape);
	df_tensor *want = df_tensor_from_host(g, target, x0t->ndim, x0t->shape);
	df_tensor *tt = df_tensor_from_host(g, tv, 1, (const int64_t[]){n});
	df_tensor *out = NULL;
	if ((rc = df_graph_status(g, err)) || (rc = model->forward(model->ctx, g, x, tt, 0, NULL, &out, err)))
		return rc;
	df_tensor *each = df_mse_per_sample(g, out, want);
	*loss = df_mean(g, each);
	if ((int64_t)b->step == f->s.nan_at_step)
		*loss = df_scale(g, *loss, NAN);
	if ((int64_t)b->step == f->s.inf_grad_at_step) {
		/* out 1e-60 underflows to 0 on the way forward (the loss is
		 * unchanged); the way back multiplies by 1e60, which overflows. */
		df_tensor *vanish = df_scale(g, df_scale(g, out, 1e-30f), 1e-30f);
		*loss = df_add(g, *loss, df_mean(g, df_scale(g, df_scale(g, vanish, 1e30f), 1e30f)));
	}
	if ((rc = df_graph_status(g, err)))
		return rc;
	return b->loss_out ? df_tensor_read(each, b->loss_out, err) : DF_OK;
}

static const df_objective_vtable flow_vtable = {
	sizeof(df_objective_vtable), flow_create, flow_destroy, flow_process, flow_out_channels, flow_loss, NULL, NULL,
};

static const df_component flow_component = {
	sizeof(df_component), DF_KIND_OBJECTIVE, "flow-fixture", "test objective: linear path on the host",
	flow_decl, sizeof(flow_settings), &flow_vtable,
};

/* ------------------------------------------------------------------ */
/* Sampler. */

typedef struct euler_settings {
	int64_t steps;
} euler_settings;

static const df_setting euler_decl[] = {
	DF_SETTING_INT(euler_settings, steps, "4", 1, 10000, "Euler steps"),
	DF_SETTINGS_END,
};

typedef struct euler {
	euler_settings s; /* first: the run function reads it as its settings */
	df_ctx *ctx;
} euler;

static int euler_create(const void *settings, df_ctx *ctx, void **self, df_error *err)
{
	euler *e = malloc(sizeof *e);
	if (!e)
		return df_error_set(err, DF_ENOMEM, "euler-fixture: out of memory");
	memcpy(&e->s, settings, sizeof e->s);
	e->ctx = ctx;
	*self = e;
	return DF_OK;
}

static void euler_destroy(void *self) { free(self); }

static int euler_check(void *self, const df_process *p, df_error *err)
{
	(void)self;
	if (df_process_prediction(p) != DF_PRED_VELOCITY)
		return df_error_set(err, DF_EINVAL, "needs a velocity, but the model predicts %s",
		                    df_prediction_name(df_process_prediction(p)));
	return DF_OK;
}

static int euler_run(const void *settings, df_sampling *s, float *x, df_error *err)
{
	const euler_settings *es = settings;
	int64_t n = s->batch * s->dim;
	float *v = malloc((size_t)n * sizeof *v);
	if (!v)
		return df_error_set(err, DF_ENOMEM, "euler-fixture: out of memory");
	int rc = DF_OK;
	for (int64_t k = 0; k < es->steps && !rc; k++) {
		double t = 1.0 - (double)k / (double)es->steps, next = 1.0 - (double)(k + 1) / (double)es->steps;
		rc = df_sampling_predict(s, x, t, DF_PRED_VELOCITY, v, err);
		if (!rc)
			df_vec_axpby(n, 1.0, x, t - next, v); /* dx/dt = -v, dt = next - t */
	}
	free(v);
	return rc;
}

static int euler_sample(void *self, const df_process *p, const df_denoiser *d, df_sample_job *job, df_error *err)
{
	euler *e = self;
	return df_sampling_run_job(e->ctx, p, d, job, euler_run, &e->s, err);
}

static const df_sampler_vtable euler_vtable = {
	sizeof(df_sampler_vtable), euler_create, euler_destroy, euler_check, euler_sample, NULL,
};

static const df_component euler_component = {
	sizeof(df_component), DF_KIND_SAMPLER, "euler-fixture", "test sampler: Euler on the velocity",
	euler_decl, sizeof(euler_settings), &euler_vtable,
};

DF_PLUGIN_DEFINE("stage-fixture", "1.0", "MIT", &mlp_component, &flow_component, &euler_component);
