/* Stochastic samplers after SiT's Sampler.sample_sde, in framework time:
 * from t = hi down to t = lo the reverse SDE
 *     dx = [v + w(t) s] dtau + sqrt(2 w(t)) dW,   tau = 1 - t,
 * with v the model's velocity, s its score and w one of SiT's diffusion
 * forms; then one last step of size last_step_size to data.
 *   euler-maruyama: 1 evaluation per step;  sde-heun: 2 per step.
 * One plugin: both share the grid, the diffusion forms and the last step. */
#include "config.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "diffuse/plugin.h"
#include "diffuse/process.h"
#include "diffuse/sampling.h"

#ifndef M_PI
#define M_PI 3.14159265358979323846
#endif

enum sde_method { SDE_EULER_MARUYAMA, SDE_HEUN };
enum sde_form { FORM_CONSTANT, FORM_SBDM, FORM_SIGMA, FORM_LINEAR, FORM_DECREASING, FORM_INC_DEC };
enum sde_last { LAST_MEAN, LAST_TWEEDIE, LAST_EULER, LAST_NONE };

static const char *const forms[] = {"constant", "sbdm", "sigma", "linear", "decreasing", "increasing-decreasing",
                                    NULL};
static const char *const lasts[] = {"mean", "tweedie", "euler", "none", NULL};

typedef struct sde_settings {
	int64_t steps;
	const char *diffusion_form;
	double diffusion_norm;
	const char *last_step;
	double last_step_size;
} sde_settings;

static const df_setting sde_settings_decl[] = {
	DF_SETTING_INT(sde_settings, steps, "250", 2, 100000,
	               "grid points, as SiT's num_steps: steps - 1 stochastic steps, then the last step"),
	DF_SETTING_CHOICE(sde_settings, diffusion_form, "sigma", forms,
	                  "diffusion coefficient w(t): constant, sbdm (the exact reverse SDE), sigma, linear, "
	                  "decreasing, increasing-decreasing"),
	DF_SETTING_FLOAT(sde_settings, diffusion_norm, "1.0", 0, 1000, "scale of the diffusion coefficient"),
	DF_SETTING_CHOICE(sde_settings, last_step, "mean", lasts,
	                  "last step to data: mean (drift only), tweedie (denoised x0), euler (velocity only), none"),
	DF_SETTING_FLOAT(sde_settings, last_step_size, "0.04", 0, 0.5, "size of the last step in t"),
	DF_SETTINGS_END,
};

typedef struct sde_sampler {
	df_ctx *ctx;
	enum sde_method method;
	int steps;
	enum sde_form form;
	double norm;
	enum sde_last last;
	double last_size;
} sde_sampler;

static int sde_create_method(enum sde_method method, const void *settings, df_ctx *ctx, void **self, df_error *err)
{
	const sde_settings *ss = settings;
	int form = df_choice_index(forms, ss->diffusion_form), last = df_choice_index(lasts, ss->last_step);
	if (form < 0)
		return df_error_set(err, DF_EINVAL, "diffusion_form: unknown '%s'", ss->diffusion_form);
	if (last < 0)
		return df_error_set(err, DF_EINVAL, "last_step: unknown '%s'", ss->last_step);
	sde_sampler *s = calloc(1, sizeof *s);
	if (!s)
		return df_error_set(err, DF_ENOMEM, "out of memory");
	s->ctx = ctx;
	s->method = method;
	s->steps = (int)ss->steps;
	s->form = form;
	s->norm = ss->diffusion_norm;
	s->last = last;
	/* SiT: with no last step its size is 0 */
	s->last_size = last == LAST_NONE ? 0.0 : ss->last_step_size;
	*self = s;
	return 0;
}

static int em_create(const void *settings, df_ctx *ctx, void **self, df_error *err)
{
	return sde_create_method(SDE_EULER_MARUYAMA, settings, ctx, self, err);
}

static int heun_create(const void *settings, df_ctx *ctx, void **self, df_error *err)
{
	return sde_create_method(SDE_HEUN, settings, ctx, self, err);
}

static void sde_destroy(void *self)
{
	free(self);
}

/* SiT's interval, mirrored: lo = last_step_size (or sample_eps), hi = 1,
 * or 1 - sample_eps on Linear/GVP for SBDM or a non-velocity model. */
static void sde_interval(const sde_sampler *o, const df_process *p, double *lo, double *hi)
{
	double eps = df_process_sample_eps(p);
	df_path path = df_process_path(p);
	*lo = o->last_size > 0 ? o->last_size : eps;
	if (*lo < df_process_t_min(p))
		*lo = df_process_t_min(p);
	*hi = 1.0;
	if ((path == DF_PATH_LINEAR || path == DF_PATH_GVP) &&
	    (o->form == FORM_SBDM || df_process_prediction(p) != DF_PRED_VELOCITY))
		*hi = 1.0 - eps;
}

static double diffusion(const sde_sampler *o, const df_process *p, double t)
{
	df_coeffs c;
	switch (o->form) {
	case FORM_CONSTANT: return o->norm;
	case FORM_SBDM: df_process_coeffs(p, t, &c); return o->norm * df_coeffs_w_sbdm(&c);
	case FORM_SIGMA: df_process_coeffs(p, t, &c); return o->norm * c.sigma;
	case FORM_LINEAR: return o->norm * t;
	case FORM_DECREASING: {
		double a = -o->norm * cos(M_PI * t) + 1.0; /* cos(pi tau) = -cos(pi t) */
		return 0.25 * a * a;
	}
	case FORM_INC_DEC: {
		double sn = sin(M_PI * t);
		return o->norm * sn * sn;
	}
	}
	return NAN;
}

static int sde_check(void *self, const df_process *p, df_error *err)
{
	sde_sampler *o = self;
	double lo, hi;
	sde_interval(o, p, &lo, &hi);
	if (!(hi > lo))
		return df_error_set(err, DF_EINVAL, "empty interval [%g, %g] on '%s': last_step_size too large",
		                    lo, hi, df_process_name(p));
	/* the first and the last evaluation: the last step at lo, or the last stochastic one (whose
	 * Heun corrector is at lo too) */
	double ends[2] = {hi, o->last == LAST_NONE && o->method == SDE_EULER_MARUYAMA
	                          ? hi - (o->steps - 2) * (hi - lo) / (o->steps - 1)
	                          : lo};
	int rc = df_sampling_check_times(p, ends, 2, DF_PRED_SCORE, err);
	if (!rc)
		rc = df_sampling_check_times(p, ends, 2, DF_PRED_VELOCITY, err);
	if (rc)
		return rc;
	double w = diffusion(o, p, hi);
	if (!isfinite(w))
		return df_error_set(err, DF_EINVAL,
		                    "diffusion_form '%s' is infinite at the noise end of '%s' (t = %g): give the objective "
		                    "a sample_eps > 0",
		                    forms[o->form], df_process_name(p), hi);
	return 0;
}

/* f = v + w(t) s at (x, t): the drift in tau, from one evaluation. f and
 * tmp must not overlap x. */
static int sde_drift(const sde_sampler *o, df_sampling *s, const float *x, double t, float *f, float *tmp,
                     df_error *err)
{
	int64_t n = s->batch * s->dim;
	int rc = df_sampling_eval(s, x, t, err);
	if (!rc)
		rc = df_sampling_convert(s, x, t, DF_PRED_VELOCITY, f, err);
	if (!rc)
		rc = df_sampling_convert(s, x, t, DF_PRED_SCORE, tmp, err);
	if (!rc)
		df_vec_axpby(n, 1.0, f, diffusion(o, s->process, t), tmp);
	return rc;
}

static int run_sde(const void *settings, df_sampling *s, float *x, df_error *err)
{
	const sde_sampler *o = settings;
	const df_process *p = s->process;
	int64_t n = s->batch * s->dim;
	int rc = sde_check((void *)o, p, err);
	if (rc)
		return rc;
	double lo, hi;
	sde_interval(o, p, &lo, &hi);
	double dt = (hi - lo) / (o->steps - 1);
	float *buf = malloc(sizeof(float) * n * 5);
	if (!buf)
		return df_error_set(err, DF_ENOMEM, "out of memory");
	float *f = buf, *tmp = buf + n, *z = buf + 2 * n, *xp = buf + 3 * n, *f2 = buf + 4 * n;
	for (int k = 0; !rc && k < o->steps - 1; k++) {
		double t = hi - k * dt; /* each point from its own index */
		double tn = k + 1 == o->steps - 1 ? lo : hi - (k + 1) * dt;
		double step = t - tn;
		double g = sqrt(2.0 * diffusion(o, p, t) * step);
		df_sampling_noise(s, (uint64_t)k, z);
		if (o->method == SDE_EULER_MARUYAMA) {
			rc = sde_drift(o, s, x, t, f, tmp, err);
			if (!rc)
				for (int64_t i = 0; i < n; i++)
					x[i] = (float)(x[i] + step * f[i] + g * z[i]);
		} else {
			df_vec_axpby(n, 1.0, x, g, z);
			rc = sde_drift(o, s, x, t, f, tmp, err);
			if (rc)
				break;
			memcpy(xp, x, sizeof(float) * n);
			df_vec_axpby(n, 1.0, xp, step, f);
			rc = sde_drift(o, s, xp, tn, f2, tmp, err);
			if (!rc)
				for (int64_t i = 0; i < n; i++)
					x[i] = (float)(x[i] + 0.5 * step * ((double)f[i] + f2[i]));
		}
	}
	if (!rc && o->last != LAST_NONE) {
		double h = o->last_size;
		if (o->last == LAST_MEAN) {
			rc = sde_drift(o, s, x, lo, f, tmp, err);
			if (!rc)
				df_vec_axpby(n, 1.0, x, h, f);
		} else if (o->last == LAST_TWEEDIE) {
			rc = df_sampling_predict(s, x, lo, DF_PRED_X0, x, err);
		} else {
			rc = df_sampling_predict(s, x, lo, DF_PRED_VELOCITY, f, err);
			if (!rc)
				df_vec_axpby(n, 1.0, x, h, f);
		}
	}
	free(buf);
	return rc;
}

static int sde_sample(void *self, const df_process *p, const df_denoiser *denoiser, df_sample_job *job,
                      df_error *err)
{
	sde_sampler *o = self;
	return df_sampling_run_job(o->ctx, p, denoiser, job, run_sde, o, err);
}

static const df_sampler_vtable em_vtable = {
	.struct_size = sizeof(df_sampler_vtable), .create = em_create, .destroy = sde_destroy,
	.check = sde_check, .sample = sde_sample,
};
static const df_sampler_vtable heun_vtable = {
	.struct_size = sizeof(df_sampler_vtable), .create = heun_create, .destroy = sde_destroy,
	.check = sde_check, .sample = sde_sample,
};

static const df_component em_component = {
	sizeof(df_component), DF_KIND_SAMPLER, "euler-maruyama",
	"reverse SDE, Euler-Maruyama on SiT's grid with its diffusion forms and last step",
	sde_settings_decl, sizeof(sde_settings), &em_vtable};
static const df_component heun_component = {
	sizeof(df_component), DF_KIND_SAMPLER, "sde-heun",
	"reverse SDE, SiT's stochastic Heun step (2 evaluations per step)",
	sde_settings_decl, sizeof(sde_settings), &heun_vtable};

DF_PLUGIN_DEFINE("sde-samplers", PACKAGE_VERSION, "MIT", &em_component, &heun_component)
