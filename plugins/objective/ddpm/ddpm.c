/* The DDPM objective as DiT trains it (gaussian_diffusion.py): t uniform on
 * the T schedule indices, eps prediction, and either the plain MSE
 * ("simple") or IDDPM's hybrid loss: MSE plus the variational bound with a
 * stop-gradient on the mean, so the VB term trains only the learned-range
 * variance channels (2C outputs). Schedules: DiT's linear and cosine, and
 * LDM's scaled_linear (its configs' "linear", with linear_start/end). */
#include "config.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "diffuse/plugin.h"
#include "diffuse/process.h"
#include "diffuse/tensor.h"

static const char *const schedules[] = {"linear", "cosine", "scaled_linear", NULL};
static const char *const losses[] = {"simple", "hybrid", NULL};

/* The scaled_linear range of Stable Diffusion, the settings' defaults. */
#define SD_LINEAR_START 0.00085
#define SD_LINEAR_END 0.012

typedef struct ddpm_settings {
	const char *schedule;
	int64_t steps;
	const char *loss;
	double linear_start, linear_end;
} ddpm_settings;

static const df_setting ddpm_settings_decl[] = {
	DF_SETTING_CHOICE(ddpm_settings, schedule, "linear", schedules,
	                  "beta schedule: DiT's linear (1e-4 to 0.02, scaled by 1000 / steps), cosine "
	                  "(squaredcos_cap_v2) or LDM's scaled_linear (linear in sqrt(beta))"),
	DF_SETTING_INT(ddpm_settings, steps, "1000", 2, 100000, "diffusion steps T"),
	DF_SETTING_CHOICE(ddpm_settings, loss, "simple", losses,
	                  "simple: MSE on eps; hybrid: MSE + variational bound, learned-range variance (2C outputs)"),
	DF_SETTING_FLOAT(ddpm_settings, linear_start, "0.00085", 1e-8, 0.999,
	                 "scaled_linear: the first beta (0.00085 in Stable Diffusion, 0.0015 in most LDM configs)"),
	DF_SETTING_FLOAT(ddpm_settings, linear_end, "0.012", 1e-8, 0.999,
	                 "scaled_linear: the last beta (0.012 in Stable Diffusion, 0.0195 in most LDM configs)"),
	DF_SETTINGS_END,
};

typedef struct ddpm_objective {
	df_process *process;
	int hybrid;
	int T;
	df_ddpm_step *steps; /* every index: the posterior of the training schedule */
} ddpm_objective;

/* LDM's "linear" schedule (ddpm.py make_beta_schedule), which diffusers
 * calls scaled_linear: the square roots of the betas are evenly spaced, over
 * the T steps as given (no 1000 / T rescaling). */
static int scaled_linear_betas(const ddpm_settings *s, int T, double *betas, df_error *err)
{
	if (!(s->linear_start < s->linear_end))
		return df_error_set(err, DF_EINVAL, "linear_start: %g is not below linear_end %g", s->linear_start,
		                    s->linear_end);
	double first = sqrt(s->linear_start), last = sqrt(s->linear_end);
	double step = (last - first) / (T - 1);
	for (int i = 0; i < T; i++) {
		double root = i == T - 1 ? last : first + i * step; /* numpy linspace: the end point exact */
		betas[i] = root * root;
	}
	return 0;
}

static void ddpm_destroy(void *self)
{
	ddpm_objective *o = self;
	if (!o)
		return;
	df_process_destroy(o->process);
	free(o->steps);
	free(o);
}

static int ddpm_create(const void *settings, df_ctx *ctx, void **self, df_error *err)
{
	const ddpm_settings *s = settings;
	int hybrid = df_choice_index(losses, s->loss);
	if (hybrid < 0)
		return df_error_set(err, DF_EINVAL, "loss: unknown '%s' (simple, hybrid)", s->loss);
	ddpm_objective *o = calloc(1, sizeof *o);
	int T = (int)s->steps;
	double *betas = malloc(sizeof(double) * T);
	int *idx = malloc(sizeof(int) * T);
	if (o)
		o->steps = malloc(sizeof(df_ddpm_step) * T);
	int rc = !o || !betas || !idx || !o->steps ? df_error_set(err, DF_ENOMEM, "out of memory") : 0;
	char name[32];
	snprintf(name, sizeof name, "ddpm-%s", s->schedule);
	int scaled = !strcmp(s->schedule, "scaled_linear");
	/* a range the schedule would ignore is a mistake in the pipeline */
	if (!rc && !scaled && (s->linear_start != SD_LINEAR_START || s->linear_end != SD_LINEAR_END))
		rc = df_error_set(err, DF_EINVAL, "linear_start, linear_end: only schedule = \"scaled_linear\" uses them "
		                  "(schedule is \"%s\")", s->schedule);
	if (!rc && scaled)
		rc = scaled_linear_betas(s, T, betas, err);
	else if (!rc)
		rc = df_ddpm_betas(s->schedule, T, betas, err);
	if (!rc)
		rc = df_process_create_discrete(&o->process, name, betas, T, DF_PRED_EPS, hybrid, err);
	for (int i = 0; !rc && i < T; i++)
		idx[i] = i;
	if (!rc)
		rc = df_ddpm_steps(o->process, idx, T, o->steps, err);
	free(betas);
	free(idx);
	if (rc) {
		ddpm_destroy(o);
		return rc;
	}
	o->hybrid = hybrid;
	o->T = T;
	*self = o;
	return 0;
}

static const df_process *ddpm_process(void *self)
{
	return ((ddpm_objective *)self)->process;
}

static int ddpm_out_channels(void *self, int channels)
{
	return df_process_out_channels(((ddpm_objective *)self)->process, channels);
}

/* Host buffers of one loss evaluation, carved from one block. */
typedef struct ddpm_buffers {
	float *block;
	float *x0, *eps, *xt, *ehat, *mu_true, *mu_model, *lv_true; /* N * D */
	float *tmodel, *a, *b, *mask0, *mask_kl;                    /* N */
	int *index;                                                 /* N */
	double *u;                                                  /* N */
} ddpm_buffers;

static void free_buffers(ddpm_buffers *h)
{
	free(h->block);
	free(h->index);
	free(h->u);
}

static int alloc_buffers(ddpm_buffers *h, int64_t n, int64_t d)
{
	memset(h, 0, sizeof *h);
	h->block = malloc(sizeof(float) * (7 * n * d + 5 * n));
	h->index = malloc(sizeof(int) * n);
	h->u = malloc(sizeof(double) * n);
	if (!h->block || !h->index || !h->u)
		return 0;
	float **per_value[] = {&h->x0, &h->eps, &h->xt, &h->ehat, &h->mu_true, &h->mu_model, &h->lv_true};
	float **per_sample[] = {&h->tmodel, &h->a, &h->b, &h->mask0, &h->mask_kl};
	float *at = h->block;
	for (size_t i = 0; i < sizeof per_value / sizeof per_value[0]; i++, at += n * d)
		*per_value[i] = at;
	for (size_t i = 0; i < sizeof per_sample / sizeof per_sample[0]; i++, at += n)
		*per_sample[i] = at;
	return 1;
}

/* The variational-bound term per sample (bits), with the model's mean held
 * fixed: KL(q(x_{t-1} | x_t, x0) || p) for t > 0, the decoder NLL at t = 0. */
static df_tensor *vb_term(const ddpm_objective *o, df_graph *g, const ddpm_buffers *h, df_tensor *x0, df_tensor *v,
                          int64_t n, int64_t d)
{
	int ndim = x0->ndim;
	for (int64_t i = 0; i < n; i++) {
		const df_ddpm_step *st = &o->steps[h->index[i]];
		double lb = log(st->beta);
		/* learned range: log var = frac log beta + (1 - frac) log post_var, frac = (v + 1) / 2 */
		h->a[i] = (float)(0.5 * (lb - st->post_logvar));
		h->b[i] = (float)(0.5 * (lb + st->post_logvar));
		double c0 = sqrt(1.0 / st->abar), c1 = sqrt(1.0 / st->abar - 1.0);
		for (int64_t j = 0; j < d; j++) {
			int64_t k = i * d + j;
			double x0_hat = c0 * h->xt[k] - c1 * h->ehat[k];
			h->mu_model[k] = (float)(st->coef_x0 * x0_hat + st->coef_xt * h->xt[k]);
			h->mu_true[k] = (float)(st->coef_x0 * h->x0[k] + st->coef_xt * h->xt[k]);
			h->lv_true[k] = (float)st->post_logvar;
		}
	}
	df_tensor *logvar = df_add(g, df_mul(g, v, df_per_sample_tensor(g, h->a, n, ndim)),
	                           df_per_sample_tensor(g, h->b, n, ndim));
	df_tensor *mu_true = df_tensor_from_host(g, h->mu_true, ndim, x0->shape);
	df_tensor *mu_model = df_tensor_from_host(g, h->mu_model, ndim, x0->shape);
	df_tensor *lv_true = df_tensor_from_host(g, h->lv_true, ndim, x0->shape);
	df_tensor *kl = df_mean_per_sample(g, df_normal_kl(g, mu_true, lv_true, mu_model, logvar));
	df_tensor *nll = df_mean_per_sample(g, df_discretized_gaussian_loglik(g, x0, mu_model, df_scale(g, logvar, 0.5f)));
	const double ln2 = log(2.0);
	kl = df_scale(g, kl, (float)(1.0 / ln2));
	nll = df_scale(g, nll, (float)(-1.0 / ln2));
	/* both terms are finite everywhere, so masking by multiplication is safe */
	return df_add(g, df_mul(g, kl, df_tensor_from_host(g, h->mask_kl, 1, (int64_t[]){n})),
	              df_mul(g, nll, df_tensor_from_host(g, h->mask0, 1, (int64_t[]){n})));
}

static int ddpm_loss(void *self, df_graph *g, const df_loss_batch *batch, const df_model_call *model,
                     df_tensor **loss, df_error *err)
{
	ddpm_objective *o = self;
	df_tensor *x0 = batch->x0;
	if (!x0 || x0->ndim < 2 || x0->shape[0] < 1 || !batch->index)
		return df_error_set(err, DF_EINVAL, "ddpm loss: the batch needs x0 (N, C, ...) and sample indices");
	int64_t n = x0->shape[0], d = x0->numel / n, c = x0->shape[1];
	ddpm_buffers h;
	int rc = alloc_buffers(&h, n, d) ? 0 : df_error_set(err, DF_ENOMEM, "ddpm loss: out of memory");
	if (!rc)
		rc = df_tensor_read(x0, h.x0, err);
	if (rc) {
		free_buffers(&h);
		return rc;
	}
	df_process_train_draws(batch->seed, batch->step, batch->index, n, d, h.u, h.eps);
	for (int64_t i = 0; i < n; i++) {
		int t = (int)(h.u[i] * o->T);
		t = t < 0 ? 0 : t >= o->T ? o->T - 1 : t;
		const df_ddpm_step *st = &o->steps[t];
		h.index[i] = t;
		h.tmodel[i] = (float)t;
		h.mask0[i] = t == 0 ? 1.0f : 0.0f;
		h.mask_kl[i] = 1.0f - h.mask0[i];
		double sa = sqrt(st->abar), sb = sqrt(1.0 - st->abar);
		for (int64_t j = 0; j < d; j++)
			h.xt[i * d + j] = (float)(sa * h.x0[i * d + j] + sb * h.eps[i * d + j]);
	}
	df_tensor *xt = df_tensor_from_host(g, h.xt, x0->ndim, x0->shape);
	df_tensor *tt = df_tensor_from_host(g, h.tmodel, 1, (int64_t[]){n});
	df_tensor *eps = df_tensor_from_host(g, h.eps, x0->ndim, x0->shape);
	df_tensor *out = NULL;
	rc = df_graph_status(g, err);
	if (!rc)
		rc = model->forward(model->ctx, g, xt, tt, 0, NULL, &out, err);
	int64_t want = df_process_out_channels(o->process, (int)c);
	if (!rc && (!out || out->ndim != x0->ndim || out->shape[0] != n || out->shape[1] != want ||
	            out->numel != want * (d / c) * n))
		rc = df_error_set(err, DF_EINVAL, "ddpm loss: the model gives %lld channels, the %s loss needs %lld",
		                  out && out->ndim > 1 ? (long long)out->shape[1] : -1LL, o->hybrid ? "hybrid" : "simple",
		                  (long long)want);
	df_tensor *per_sample = NULL;
	if (!rc && !o->hybrid) {
		per_sample = df_mse_per_sample(g, out, eps);
	} else if (!rc) {
		df_tensor *eps_hat = df_slice(g, out, 1, 0, c), *v = df_slice(g, out, 1, c, c);
		df_tensor *mse = df_mse_per_sample(g, eps_hat, eps);
		rc = df_graph_status(g, err);
		if (!rc)
			rc = df_tensor_read(eps_hat, h.ehat, err); /* the frozen mean: values, no gradient */
		if (!rc)
			per_sample = df_add(g, mse, vb_term(o, g, &h, x0, v, n, d));
	}
	if (!rc) {
		*loss = df_mean(g, per_sample);
		rc = df_graph_status(g, err);
	}
	if (!rc && batch->loss_out)
		rc = df_tensor_read(per_sample, batch->loss_out, err);
	if (!rc && batch->t_out)
		for (int64_t i = 0; i < n; i++)
			batch->t_out[i] = (float)df_process_index_time(o->process, h.index[i]);
	free_buffers(&h);
	return rc;
}

static const df_objective_vtable ddpm_vtable = {
	.struct_size = sizeof(df_objective_vtable),
	.create = ddpm_create,
	.destroy = ddpm_destroy,
	.process = ddpm_process,
	.out_channels = ddpm_out_channels,
	.loss = ddpm_loss,
};

static const df_component ddpm_component = {
	sizeof(df_component), DF_KIND_OBJECTIVE, "ddpm",
	"DDPM as DiT trains it: eps prediction, simple or hybrid (learned-variance) loss",
	ddpm_settings_decl, sizeof(ddpm_settings), &ddpm_vtable};

DF_PLUGIN_DEFINE("ddpm-objective", PACKAGE_VERSION, "MIT", &ddpm_component)
