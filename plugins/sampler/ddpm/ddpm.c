/* DDPM-family samplers, as DiT's gaussian_diffusion.py runs them.
 *   ddpm: ancestral sampling on a DDPM schedule respaced to `steps` (DiT's
 *         rule), with learned-range, fixed-small or fixed-large variance;
 *   ddim: DDIM with eta, on the respaced schedule of a DDPM process or on
 *         a time grid of any process (its posterior written with alpha and
 *         sigma, so eta = 1 is ancestral sampling on that grid).
 * One plugin: both share the respacing and the x0 clipping. */
#include "config.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "diffuse/plugin.h"
#include "diffuse/process.h"
#include "diffuse/sampling.h"

enum variance { VAR_AUTO, VAR_LEARNED, VAR_FIXED_SMALL, VAR_FIXED_LARGE };
static const char *const variances[] = {"auto", "learned", "fixed-small", "fixed-large", NULL};
static const char *const ddpm_spacings[] = {"ddpm", "ddim", NULL};
static const char *const ddim_spacings[] = {"auto", "uniform", "ddpm", "ddim", NULL};

typedef struct ddpm_settings {
	int64_t steps;
	const char *spacing;
	const char *variance;
	int clip_denoised;
} ddpm_settings;

typedef struct ddim_settings {
	int64_t steps;
	double eta;
	const char *spacing;
	int clip_denoised;
} ddim_settings;

static const df_setting ddpm_settings_decl[] = {
	DF_SETTING_INT(ddpm_settings, steps, "250", 1, 100000, "respaced steps (DiT samples with 250)"),
	DF_SETTING_CHOICE(ddpm_settings, spacing, "ddpm", ddpm_spacings,
	                  "respacing: DiT's section rule (ddpm) or the ddimN stride"),
	DF_SETTING_CHOICE(ddpm_settings, variance, "auto", variances,
	                  "reverse variance: learned (DiT's learned range), fixed-small (posterior), fixed-large "
	                  "(beta); auto = learned when the model has it, else fixed-large"),
	DF_SETTING_BOOL(ddpm_settings, clip_denoised, "false", "clamp the x0 estimate to [-1, 1] (DiT: false)"),
	DF_SETTINGS_END,
};

static const df_setting ddim_settings_decl[] = {
	DF_SETTING_INT(ddim_settings, steps, "50", 1, 100000, "number of steps"),
	DF_SETTING_FLOAT(ddim_settings, eta, "0", 0, 1, "noise scale: 0 deterministic, 1 ancestral"),
	DF_SETTING_CHOICE(ddim_settings, spacing, "auto", ddim_spacings,
	                  "time grid: auto = DiT's respacing on DDPM schedules, uniform in t otherwise"),
	DF_SETTING_BOOL(ddim_settings, clip_denoised, "false", "clamp the x0 estimate to [-1, 1]"),
	DF_SETTINGS_END,
};

typedef struct ddpm_sampler {
	df_ctx *ctx;
	int ancestral; /* 1: ddpm, 0: ddim */
	int steps;
	char spacing[16];
	enum variance variance;
	double eta;
	int clip;
} ddpm_sampler;

static int ddpm_create(const void *settings, df_ctx *ctx, void **self, df_error *err)
{
	const ddpm_settings *ds = settings;
	int var = df_choice_index(variances, ds->variance);
	if (var < 0)
		return df_error_set(err, DF_EINVAL, "variance: unknown '%s'", ds->variance);
	ddpm_sampler *s = calloc(1, sizeof *s);
	if (!s)
		return df_error_set(err, DF_ENOMEM, "out of memory");
	s->ctx = ctx;
	s->ancestral = 1;
	s->steps = (int)ds->steps;
	snprintf(s->spacing, sizeof s->spacing, "%s", ds->spacing ? ds->spacing : "ddpm");
	s->variance = var;
	s->clip = ds->clip_denoised;
	*self = s;
	return 0;
}

static int ddim_create(const void *settings, df_ctx *ctx, void **self, df_error *err)
{
	const ddim_settings *ds = settings;
	ddpm_sampler *s = calloc(1, sizeof *s);
	if (!s)
		return df_error_set(err, DF_ENOMEM, "out of memory");
	s->ctx = ctx;
	s->steps = (int)ds->steps;
	snprintf(s->spacing, sizeof s->spacing, "%s", ds->spacing ? ds->spacing : "auto");
	s->eta = ds->eta;
	s->clip = ds->clip_denoised;
	*self = s;
	return 0;
}

static void ddpm_destroy(void *self)
{
	free(self);
}

/* The variance the ancestral sampler uses on p, or an error. */
static int resolve_variance(const ddpm_sampler *o, const df_process *p, enum variance *out, df_error *err)
{
	int learned = df_process_learned_variance(p);
	if (o->variance == VAR_LEARNED && !learned)
		return df_error_set(err, DF_EINVAL,
		                    "variance 'learned' needs a model with learned variance, and this objective's model "
		                    "has none (use loss = \"hybrid\" in the ddpm objective, or variance = \"fixed-small\")");
	*out = o->variance == VAR_AUTO ? (learned ? VAR_LEARNED : VAR_FIXED_LARGE) : o->variance;
	return 0;
}

static int ddpm_check(void *self, const df_process *p, df_error *err)
{
	ddpm_sampler *o = self;
	if (o->ancestral) {
		if (df_process_get_kind(p) != DF_PROCESS_DISCRETE)
			return df_error_set(err, DF_EINVAL,
			                    "ancestral DDPM sampling needs a DDPM schedule, and the objective's process '%s' is "
			                    "continuous (use ddim with eta, euler-maruyama or an ODE sampler)",
			                    df_process_name(p));
		enum variance v;
		int rc = resolve_variance(o, p, &v, err);
		if (rc)
			return rc;
	}
	double *t = malloc(sizeof(double) * (o->steps + 1));
	if (!t)
		return df_error_set(err, DF_ENOMEM, "out of memory");
	int rc = df_process_time_grid(p, o->spacing, o->steps, t, err);
	if (!rc)
		rc = df_sampling_check_times(p, t, o->steps, DF_PRED_X0, err);
	free(t);
	return rc;
}

static void clip_unit(int64_t n, float *x)
{
	for (int64_t i = 0; i < n; i++)
		x[i] = x[i] < -1.0f ? -1.0f : x[i] > 1.0f ? 1.0f : x[i];
}

static int run_ancestral(const ddpm_sampler *o, df_sampling *s, float *x, df_error *err)
{
	const df_process *p = s->process;
	int64_t n = s->batch * s->dim;
	enum variance var;
	int rc = ddpm_check((void *)o, p, err);
	if (!rc)
		rc = resolve_variance(o, p, &var, err);
	if (rc)
		return rc;
	int K = o->steps, *idx = malloc(sizeof(int) * K);
	df_ddpm_step *st = malloc(sizeof(df_ddpm_step) * K);
	float *x0 = malloc(sizeof(float) * n), *z = malloc(sizeof(float) * n);
	if (!idx || !st || !x0 || !z)
		rc = df_error_set(err, DF_ENOMEM, "out of memory");
	char spec[32];
	snprintf(spec, sizeof spec, "%s%d", strcmp(o->spacing, "ddim") ? "" : "ddim", K);
	if (!rc)
		rc = df_ddpm_respace(df_process_T(p), spec, idx, K, &K, err);
	if (!rc)
		rc = df_ddpm_steps(p, idx, K, st, err);
	for (int k = K - 1; !rc && k >= 0; k--) {
		const df_ddpm_step *sk = &st[k];
		rc = df_sampling_predict(s, x, sk->t, DF_PRED_X0, x0, err);
		if (rc)
			break;
		if (o->clip)
			clip_unit(n, x0);
		if (k > 0)
			df_sampling_noise(s, (uint64_t)(K - 1 - k), z);
		double fixed_logvar = var == VAR_FIXED_SMALL ? sk->post_logvar : k == 0 ? st[0].post_logvar : log(sk->beta);
		for (int64_t b = 0; b < s->batch; b++)
			for (int64_t j = 0; j < s->dim; j++) {
				int64_t i = b * s->dim + j;
				double mean = sk->coef_x0 * x0[i] + sk->coef_xt * x[i];
				if (k == 0) {
					x[i] = (float)mean;
					continue;
				}
				double logvar = var == VAR_LEARNED ? df_ddpm_learned_logvar(sk, df_sampling_variance_value(s, b, j))
				                                   : fixed_logvar;
				x[i] = (float)(mean + exp(0.5 * logvar) * z[i]);
			}
	}
	free(idx);
	free(st);
	free(x0);
	free(z);
	return rc;
}

static int run_ddim(const ddpm_sampler *o, df_sampling *s, float *x, df_error *err)
{
	const df_process *p = s->process;
	int64_t n = s->batch * s->dim;
	double *t = malloc(sizeof(double) * (o->steps + 1));
	float *x0 = malloc(sizeof(float) * n), *z = malloc(sizeof(float) * n);
	int rc = !t || !x0 || !z ? df_error_set(err, DF_ENOMEM, "out of memory") : 0;
	if (!rc)
		rc = df_process_time_grid(p, o->spacing, o->steps, t, err);
	for (int k = 0; !rc && k < o->steps; k++) {
		df_coeffs c, cn;
		df_process_coeffs(p, t[k], &c);
		df_process_coeffs(p, t[k + 1], &cn);
		rc = df_sampling_predict(s, x, t[k], DF_PRED_X0, x0, err);
		if (rc)
			break;
		if (o->clip)
			clip_unit(n, x0);
		/* DDIM's sigma: eta times the posterior standard deviation of x_tn given x_t and x0 */
		double ratio = c.alpha / cn.alpha;
		double var = cn.sigma * cn.sigma / (c.sigma * c.sigma) *
		             (c.sigma * c.sigma - ratio * ratio * cn.sigma * cn.sigma);
		double sd = o->eta * sqrt(var > 0 ? var : 0);
		double keep = cn.sigma * cn.sigma - sd * sd;
		double ce = sqrt(keep > 0 ? keep : 0);
		if (sd > 0)
			df_sampling_noise(s, (uint64_t)k, z);
		for (int64_t i = 0; i < n; i++) {
			double eps = (x[i] - c.alpha * x0[i]) / c.sigma; /* re-derived, as after clipping */
			x[i] = (float)(cn.alpha * x0[i] + ce * eps + (sd > 0 ? sd * z[i] : 0.0));
		}
	}
	free(t);
	free(x0);
	free(z);
	return rc;
}

static int run_family(const void *settings, df_sampling *s, float *x, df_error *err)
{
	const ddpm_sampler *o = settings;
	return o->ancestral ? run_ancestral(o, s, x, err) : run_ddim(o, s, x, err);
}

static int ddpm_sample(void *self, const df_process *p, const df_denoiser *denoiser, df_sample_job *job,
                       df_error *err)
{
	ddpm_sampler *o = self;
	return df_sampling_run_job(o->ctx, p, denoiser, job, run_family, o, err);
}

static const df_sampler_vtable ddpm_vtable = {
	.struct_size = sizeof(df_sampler_vtable), .create = ddpm_create, .destroy = ddpm_destroy,
	.check = ddpm_check, .sample = ddpm_sample,
};
static const df_sampler_vtable ddim_vtable = {
	.struct_size = sizeof(df_sampler_vtable), .create = ddim_create, .destroy = ddpm_destroy,
	.check = ddpm_check, .sample = ddpm_sample,
};

static const df_component ddpm_component = {
	sizeof(df_component), DF_KIND_SAMPLER, "ddpm",
	"ancestral DDPM sampling on DiT's respaced schedule, learned or fixed variance",
	ddpm_settings_decl, sizeof(ddpm_settings), &ddpm_vtable};
static const df_component ddim_component = {
	sizeof(df_component), DF_KIND_SAMPLER, "ddim",
	"DDIM with eta on any process (DiT's respacing on DDPM schedules)",
	ddim_settings_decl, sizeof(ddim_settings), &ddim_vtable};

DF_PLUGIN_DEFINE("ddpm-samplers", PACKAGE_VERSION, "MIT", &ddpm_component, &ddim_component)
