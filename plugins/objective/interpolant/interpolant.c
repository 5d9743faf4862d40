/* SiT's interpolant objectives (transport.py training_losses), in the
 * framework's time (t = 0 data): t uniform on the training interval,
 * x_t = alpha x0 + sigma eps, the network given SiT's time 1 - t, and
 *   velocity: mean (v - u)^2 with u = -(alpha' x0 + sigma' eps), SiT's velocity;
 *   noise:    weight * mean (eps_hat - eps)^2;
 *   score:    weight * mean (sigma s_hat + eps)^2;
 * weight: none 1, velocity (w/sigma)^2, likelihood w/sigma^2, w = w_SBDM.
 * One plugin, three components: they differ only in the prediction. */
#include "config.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "diffuse/plugin.h"
#include "diffuse/process.h"
#include "diffuse/tensor.h"

static const char *const paths[] = {"linear", "gvp", "vp", NULL};
static const char *const weights[] = {"none", "velocity", "likelihood", NULL};
enum weight { WEIGHT_NONE, WEIGHT_VELOCITY, WEIGHT_LIKELIHOOD };

typedef struct interp_settings {
	const char *path;
	double train_eps, sample_eps;
	const char *loss_weight;
} interp_settings;

static const df_setting interp_settings_decl[] = {
	DF_SETTING_CHOICE(interp_settings, path, "linear", paths,
	                  "interpolant: linear (alpha = 1 - t), gvp (cos/sin), vp (SiT's VP-SDE path)"),
	DF_SETTING_FLOAT(interp_settings, train_eps, "-1", -1, 0.49,
	                 "training interval margin; -1 = SiT's default (vp 1e-5; linear/gvp 0 for velocity, else 1e-3)"),
	DF_SETTING_FLOAT(interp_settings, sample_eps, "-1", -1, 0.49,
	                 "sampling interval margin; -1 = SiT's default (vp 1e-3; linear/gvp 0 for velocity, else 1e-3)"),
	DF_SETTING_CHOICE(interp_settings, loss_weight, "none", weights,
	                  "noise and score losses: none, velocity ((w/sigma)^2) or likelihood (w/sigma^2) weighting"),
	DF_SETTINGS_END,
};

typedef struct interp_objective {
	df_process *process;
	df_prediction pred;
	enum weight weight;
} interp_objective;

static void interp_destroy(void *self)
{
	interp_objective *o = self;
	if (o)
		df_process_destroy(o->process);
	free(o);
}

static int interp_create(df_prediction pred, const void *settings, void **self, df_error *err)
{
	const interp_settings *s = settings;
	int path = df_choice_index(paths, s->path), weight = df_choice_index(weights, s->loss_weight);
	if (path < 0)
		return df_error_set(err, DF_EINVAL, "path: unknown '%s' (linear, gvp, vp)", s->path);
	if (weight < 0)
		return df_error_set(err, DF_EINVAL, "loss_weight: unknown '%s' (none, velocity, likelihood)",
		                    s->loss_weight);
	if (pred == DF_PRED_VELOCITY && weight != WEIGHT_NONE)
		return df_error_set(err, DF_EINVAL, "loss_weight '%s' applies to the noise and score objectives; the "
		                    "velocity loss is unweighted", s->loss_weight);
	interp_objective *o = calloc(1, sizeof *o);
	if (!o)
		return df_error_set(err, DF_ENOMEM, "out of memory");
	static const df_path path_of[] = {DF_PATH_LINEAR, DF_PATH_GVP, DF_PATH_VP};
	int rc = df_process_create_path(&o->process, path_of[path], pred, s->train_eps, s->sample_eps, err);
	if (rc) {
		free(o);
		return rc;
	}
	o->pred = pred;
	o->weight = weight;
	*self = o;
	return 0;
}

static int velocity_create(const void *settings, df_ctx *ctx, void **self, df_error *err)
{
	return interp_create(DF_PRED_VELOCITY, settings, self, err);
}

static int score_create(const void *settings, df_ctx *ctx, void **self, df_error *err)
{
	return interp_create(DF_PRED_SCORE, settings, self, err);
}

static int noise_create(const void *settings, df_ctx *ctx, void **self, df_error *err)
{
	return interp_create(DF_PRED_EPS, settings, self, err);
}

static const df_process *interp_process(void *self)
{
	return ((interp_objective *)self)->process;
}

static int interp_out_channels(void *self, int channels)
{
	return channels;
}

static double loss_weight(enum weight w, const df_coeffs *c)
{
	double sbdm = df_coeffs_w_sbdm(c);
	switch (w) {
	case WEIGHT_NONE: return 1.0;
	case WEIGHT_VELOCITY: return (sbdm / c->sigma) * (sbdm / c->sigma);
	case WEIGHT_LIKELIHOOD: return sbdm / (c->sigma * c->sigma);
	}
	return NAN;
}

static int interp_loss(void *self, df_graph *g, const df_loss_batch *batch, const df_model_call *model,
                       df_tensor **loss, df_error *err)
{
	interp_objective *o = self;
	df_tensor *x0 = batch->x0;
	if (!x0 || x0->ndim < 2 || x0->shape[0] < 1 || !batch->index)
		return df_error_set(err, DF_EINVAL, "%s loss: the batch needs x0 (N, C, ...) and sample indices",
		                    df_prediction_name(o->pred));
	int64_t n = x0->shape[0], d = x0->numel / n;
	float *x0h = malloc(sizeof(float) * n * d), *eps = malloc(sizeof(float) * n * d);
	float *xt = malloc(sizeof(float) * n * d), *target = malloc(sizeof(float) * n * d);
	float *tmodel = malloc(sizeof(float) * n), *w = malloc(sizeof(float) * n), *sig = malloc(sizeof(float) * n);
	double *u = malloc(sizeof(double) * n), *t = malloc(sizeof(double) * n);
	int rc = !x0h || !eps || !xt || !target || !tmodel || !w || !sig || !u || !t
	             ? df_error_set(err, DF_ENOMEM, "out of memory")
	             : 0;
	if (!rc)
		rc = df_tensor_read(x0, x0h, err);
	if (!rc) {
		double lo, hi;
		df_process_interval(o->process, DF_INTERVAL_TRAIN, &lo, &hi);
		df_process_train_draws(batch->seed, batch->step, batch->index, n, d, u, eps);
		for (int64_t i = 0; i < n; i++) {
			df_coeffs c;
			t[i] = lo + u[i] * (hi - lo);
			df_process_coeffs(o->process, t[i], &c);
			tmodel[i] = (float)df_process_model_time(o->process, t[i]);
			w[i] = (float)loss_weight(o->weight, &c);
			sig[i] = (float)c.sigma;
			/* the target of each loss, as a function of (x0, eps) */
			double tx, te;
			df_coeffs_target(&c, o->pred == DF_PRED_SCORE ? DF_PRED_EPS : o->pred, &tx, &te);
			if (o->pred == DF_PRED_SCORE)
				te = -1.0; /* sigma * score matches -eps */
			for (int64_t j = 0; j < d; j++) {
				int64_t k = i * d + j;
				xt[k] = (float)(c.alpha * x0h[k] + c.sigma * eps[k]);
				target[k] = (float)(tx * x0h[k] + te * eps[k]);
			}
		}
	}
	df_tensor *out = NULL, *per_sample = NULL;
	if (!rc) {
		df_tensor *xtt = df_tensor_from_host(g, xt, x0->ndim, x0->shape);
		df_tensor *tt = df_tensor_from_host(g, tmodel, 1, (int64_t[]){n});
		rc = df_graph_status(g, err);
		if (!rc)
			rc = model->forward(model->ctx, g, xtt, tt, 0, NULL, &out, err);
	}
	if (!rc && (!out || !df_tensor_same_shape(out, x0)))
		rc = df_error_set(err, DF_EINVAL, "%s loss: the model output's shape differs from the data's (%lld values "
		                  "per batch, expected %lld)", df_prediction_name(o->pred),
		                  out ? (long long)out->numel : 0LL, (long long)x0->numel);
	if (!rc) {
		df_tensor *pred = o->pred == DF_PRED_SCORE ? df_mul(g, out, df_per_sample_tensor(g, sig, n, x0->ndim)) : out;
		per_sample = df_mse_per_sample(g, pred, df_tensor_from_host(g, target, x0->ndim, x0->shape));
		if (o->weight != WEIGHT_NONE)
			per_sample = df_mul(g, per_sample, df_tensor_from_host(g, w, 1, (int64_t[]){n}));
		*loss = df_mean(g, per_sample);
		rc = df_graph_status(g, err);
	}
	if (!rc && batch->loss_out)
		rc = df_tensor_read(per_sample, batch->loss_out, err);
	if (!rc && batch->t_out)
		for (int64_t i = 0; i < n; i++)
			batch->t_out[i] = (float)t[i];
	free(x0h);
	free(eps);
	free(xt);
	free(target);
	free(tmodel);
	free(w);
	free(sig);
	free(u);
	free(t);
	return rc;
}

#define INTERP_VTABLE(CREATE)                                                                              \
	{                                                                                                  \
		.struct_size = sizeof(df_objective_vtable), .create = CREATE, .destroy = interp_destroy,   \
		.process = interp_process, .out_channels = interp_out_channels, .loss = interp_loss,      \
	}

static const df_objective_vtable velocity_vtable = INTERP_VTABLE(velocity_create);
static const df_objective_vtable score_vtable = INTERP_VTABLE(score_create);
static const df_objective_vtable noise_vtable = INTERP_VTABLE(noise_create);

static const df_component velocity_component = {
	sizeof(df_component), DF_KIND_OBJECTIVE, "velocity",
	"SiT: velocity prediction on a linear, gvp or vp interpolant (plain MSE)",
	interp_settings_decl, sizeof(interp_settings), &velocity_vtable};
static const df_component score_component = {
	sizeof(df_component), DF_KIND_OBJECTIVE, "score",
	"SiT: score prediction on a linear, gvp or vp interpolant",
	interp_settings_decl, sizeof(interp_settings), &score_vtable};
static const df_component noise_component = {
	sizeof(df_component), DF_KIND_OBJECTIVE, "noise",
	"SiT: noise prediction on a linear, gvp or vp interpolant",
	interp_settings_decl, sizeof(interp_settings), &noise_vtable};

DF_PLUGIN_DEFINE("interpolant-objectives", PACKAGE_VERSION, "MIT", &velocity_component, &score_component,
                 &noise_component)
