/* Deterministic samplers: the probability-flow ODE dx/dt = -v(x, t) from
 * the top of the sampling interval down to its bottom.
 *   euler, heun:   fixed grid, 1 and 2 evaluations per step;
 *   dopri5:        adaptive Dormand-Prince 5(4) with rtol/atol;
 *   dpm-solver++:  2M multistep on data predictions (any process, via x0).
 * One plugin: all four share the grid, the final-denoise rule and the
 * settings plumbing. */
#include "config.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "diffuse/plugin.h"
#include "diffuse/process.h"
#include "diffuse/sampling.h"

enum ode_method { ODE_EULER, ODE_HEUN, ODE_DPMPP_2M, ODE_DOPRI5 };

typedef struct fixed_settings {
	int64_t steps;
	const char *spacing;
} fixed_settings;

typedef struct dopri5_settings {
	double rtol, atol;
	int64_t max_steps;
} dopri5_settings;

typedef struct ode_sampler {
	df_ctx *ctx;
	enum ode_method method;
	int steps;
	char spacing[16];
	double rtol, atol;
	int64_t max_steps;
} ode_sampler;

static const char *const spacings[] = {"auto", "uniform", "logsnr", "ddpm", "ddim", NULL};

static const df_setting fixed_settings_decl[] = {
	DF_SETTING_INT(fixed_settings, steps, "50", 1, 100000, "number of steps (grid intervals)"),
	DF_SETTING_CHOICE(fixed_settings, spacing, "auto", spacings,
	                  "time grid: uniform in t or in log-SNR, DiT's respacing (ddpm) or the ddimN stride; auto = "
	                  "ddpm on DDPM schedules, uniform otherwise"),
	DF_SETTINGS_END,
};

static const df_setting dpm_settings_decl[] = {
	DF_SETTING_INT(fixed_settings, steps, "20", 1, 100000, "number of steps (grid intervals)"),
	DF_SETTING_CHOICE(fixed_settings, spacing, "logsnr", spacings,
	                  "time grid: uniform in log-SNR (the solver's own variable), uniform in t, DiT's respacing "
	                  "(ddpm) or the ddimN stride; auto = ddpm on DDPM schedules, uniform otherwise"),
	DF_SETTINGS_END,
};

static const df_setting dopri5_settings_decl[] = {
	DF_SETTING_FLOAT(dopri5_settings, rtol, "1e-3", 1e-12, 1, "relative tolerance per step"),
	DF_SETTING_FLOAT(dopri5_settings, atol, "1e-6", 1e-12, 1, "absolute tolerance per step"),
	DF_SETTING_INT(dopri5_settings, max_steps, "10000", 1, 100000000, "give up after this many attempted steps"),
	DF_SETTINGS_END,
};

static int create_common(enum ode_method method, df_ctx *ctx, ode_sampler **out, df_error *err)
{
	ode_sampler *s = calloc(1, sizeof *s);
	if (!s)
		return df_error_set(err, DF_ENOMEM, "out of memory");
	s->ctx = ctx;
	s->method = method;
	*out = s;
	return 0;
}

static int create_fixed(enum ode_method method, const void *settings, df_ctx *ctx, void **self, df_error *err)
{
	const fixed_settings *fs = settings;
	ode_sampler *s = NULL;
	int rc = create_common(method, ctx, &s, err);
	if (rc)
		return rc;
	s->steps = (int)fs->steps;
	snprintf(s->spacing, sizeof s->spacing, "%s", fs->spacing ? fs->spacing : "auto");
	*self = s;
	return 0;
}

static int euler_create(const void *settings, df_ctx *ctx, void **self, df_error *err)
{
	return create_fixed(ODE_EULER, settings, ctx, self, err);
}

static int heun_create(const void *settings, df_ctx *ctx, void **self, df_error *err)
{
	return create_fixed(ODE_HEUN, settings, ctx, self, err);
}

static int dpmpp_create(const void *settings, df_ctx *ctx, void **self, df_error *err)
{
	return create_fixed(ODE_DPMPP_2M, settings, ctx, self, err);
}

static int dopri5_create(const void *settings, df_ctx *ctx, void **self, df_error *err)
{
	const dopri5_settings *ds = settings;
	ode_sampler *s = NULL;
	int rc = create_common(ODE_DOPRI5, ctx, &s, err);
	if (rc)
		return rc;
	s->rtol = ds->rtol;
	s->atol = ds->atol;
	s->max_steps = ds->max_steps;
	*self = s;
	return 0;
}

static void ode_destroy(void *self)
{
	free(self);
}

static int ode_check(void *self, const df_process *p, df_error *err)
{
	ode_sampler *s = self;
	df_prediction want = s->method == ODE_DPMPP_2M ? DF_PRED_X0 : DF_PRED_VELOCITY;
	if (s->method == ODE_DOPRI5) {
		double ends[2], tmin = df_process_t_min(p);
		df_process_interval(p, DF_INTERVAL_SAMPLE, &ends[1], &ends[0]);
		if (ends[1] < tmin)
			ends[1] = tmin;
		return df_sampling_check_times(p, ends, 2, want, err);
	}
	/* the grid, and the model's output at each of its evaluation times */
	double *t = malloc(sizeof(double) * (s->steps + 1));
	if (!t)
		return df_error_set(err, DF_ENOMEM, "out of memory");
	int rc = df_process_time_grid(p, s->spacing, s->steps, t, err);
	if (!rc)
		rc = df_sampling_check_times(p, t, s->method == ODE_HEUN && t[s->steps] >= df_process_t_min(p)
		                                        ? s->steps + 1 /* Heun's last corrector */
		                                        : s->steps,
		                             want, err);
	free(t);
	return rc;
}

/* ------------------------------------------------------------------ */

/* Fixed-grid methods. A step that ends below the smallest time the model
 * takes (t = 0 on a DDPM schedule) returns the denoised x0 of its start. */
static int run_fixed(const ode_sampler *o, df_sampling *s, float *x, df_error *err)
{
	const df_process *p = s->process;
	int64_t n = s->batch * s->dim;
	double tmin = df_process_t_min(p);
	double *t = malloc(sizeof(double) * (o->steps + 1));
	float *v = malloc(sizeof(float) * n), *w = malloc(sizeof(float) * n), *prev = malloc(sizeof(float) * n);
	int rc = !t || !v || !w || !prev ? df_error_set(err, DF_ENOMEM, "out of memory") : 0;
	if (!rc)
		rc = df_process_time_grid(p, o->spacing, o->steps, t, err);
	double h_prev = NAN;
	for (int k = 0; !rc && k < o->steps; k++) {
		double tc = t[k], tn = t[k + 1];
		rc = df_sampling_eval(s, x, tc, err);
		if (rc)
			break;
		if (tn < tmin) {
			rc = df_sampling_convert(s, x, tc, DF_PRED_X0, x, err);
			continue;
		}
		if (o->method == ODE_EULER) {
			rc = df_sampling_convert(s, x, tc, DF_PRED_VELOCITY, v, err);
			if (!rc)
				df_vec_axpby(n, 1.0, x, tc - tn, v);
		} else if (o->method == ODE_HEUN) {
			rc = df_sampling_convert(s, x, tc, DF_PRED_VELOCITY, v, err);
			if (rc)
				break;
			memcpy(w, x, sizeof(float) * n);
			df_vec_axpby(n, 1.0, w, tc - tn, v);
			rc = df_sampling_predict(s, w, tn, DF_PRED_VELOCITY, w, err);
			if (rc)
				break;
			for (int64_t i = 0; i < n; i++)
				x[i] = (float)(x[i] + 0.5 * (tc - tn) * ((double)v[i] + w[i]));
		} else {
			/* DPM-Solver++(2M): x_n = (sigma_n / sigma) x + (alpha_n - sigma_n alpha / sigma) D, with D
			 * the data prediction, extrapolated from the previous one in log-SNR when both steps are finite. */
			rc = df_sampling_convert(s, x, tc, DF_PRED_X0, v, err);
			if (rc)
				break;
			df_coeffs c, cn;
			df_process_coeffs(p, tc, &c);
			df_process_coeffs(p, tn, &cn);
			double h = log(cn.alpha / cn.sigma) - log(c.alpha / c.sigma);
			double r = h_prev / h;
			memcpy(w, v, sizeof(float) * n);
			if (k > 0 && isfinite(h) && isfinite(h_prev) && r > 0) {
				double a = 1.0 + 0.5 / r, b = -0.5 / r;
				df_vec_axpby(n, a, w, b, prev);
			}
			double cx = cn.sigma / c.sigma, cd = cn.alpha - cn.sigma * c.alpha / c.sigma;
			df_vec_axpby(n, cx, x, cd, w);
			float *swap = prev;
			prev = v;
			v = swap;
			h_prev = h;
		}
	}
	free(t);
	free(v);
	free(w);
	free(prev);
	return rc;
}

/* Dormand-Prince 5(4) tableau. */
static const double dp_c[7] = {0, 1.0 / 5, 3.0 / 10, 4.0 / 5, 8.0 / 9, 1, 1};
static const double dp_a[7][6] = {
	{0},
	{1.0 / 5},
	{3.0 / 40, 9.0 / 40},
	{44.0 / 45, -56.0 / 15, 32.0 / 9},
	{19372.0 / 6561, -25360.0 / 2187, 64448.0 / 6561, -212.0 / 729},
	{9017.0 / 3168, -355.0 / 33, 46732.0 / 5247, 49.0 / 176, -5103.0 / 18656},
	{35.0 / 384, 0, 500.0 / 1113, 125.0 / 192, -2187.0 / 6784, 11.0 / 84},
};
/* 5th-order weights minus the embedded 4th-order ones */
static const double dp_e[7] = {35.0 / 384 - 5179.0 / 57600, 0, 500.0 / 1113 - 7571.0 / 16695,
                               125.0 / 192 - 393.0 / 640, -2187.0 / 6784 + 92097.0 / 339200,
                               11.0 / 84 - 187.0 / 2100, -1.0 / 40};

/* f = dx/dt = -velocity at (x, t). */
static int ode_rhs(df_sampling *s, const float *x, double t, float *f, df_error *err)
{
	int rc = df_sampling_predict(s, x, t, DF_PRED_VELOCITY, f, err);
	if (!rc)
		for (int64_t i = 0; i < s->batch * s->dim; i++)
			f[i] = -f[i];
	return rc;
}

/* RMS over all values of v / (atol + rtol max(|a|, |b|)). */
static double scaled_rms(int64_t n, const float *v, const float *a, const float *b, double atol, double rtol)
{
	double sum = 0;
	for (int64_t i = 0; i < n; i++) {
		double m = fabs(a[i]);
		if (b && fabs(b[i]) > m)
			m = fabs(b[i]);
		double e = v[i] / (atol + rtol * m);
		sum += e * e;
	}
	return sqrt(sum / n);
}

static int run_dopri5(const ode_sampler *o, df_sampling *s, float *x, df_error *err)
{
	const df_process *p = s->process;
	int64_t n = s->batch * s->dim;
	double lo, hi, tmin = df_process_t_min(p);
	df_process_interval(p, DF_INTERVAL_SAMPLE, &lo, &hi);
	double t_end = lo < tmin ? tmin : lo;
	float *buf = malloc(sizeof(float) * n * 9);
	if (!buf)
		return df_error_set(err, DF_ENOMEM, "out of memory");
	float *k[7], *y = buf + 7 * n, *e = buf + 8 * n;
	for (int i = 0; i < 7; i++)
		k[i] = buf + i * n;
	double t = hi, span = hi - t_end;
	int rc = ode_rhs(s, x, t, k[0], err);
	/* Initial step (Hairer, Norsett & Wanner II.4), in the direction of decreasing t. */
	double h = 0;
	if (!rc) {
		double d0 = scaled_rms(n, x, x, NULL, o->atol, o->rtol), d1 = scaled_rms(n, k[0], x, NULL, o->atol, o->rtol);
		double h0 = d0 < 1e-5 || d1 < 1e-5 ? 1e-6 : 0.01 * d0 / d1;
		if (h0 > span)
			h0 = span;
		memcpy(y, x, sizeof(float) * n);
		df_vec_axpby(n, 1.0, y, -h0, k[0]);
		rc = ode_rhs(s, y, t - h0, k[1], err);
		if (!rc) {
			for (int64_t i = 0; i < n; i++)
				e[i] = k[1][i] - k[0][i];
			double d2 = scaled_rms(n, e, x, NULL, o->atol, o->rtol) / h0;
			double dm = d1 > d2 ? d1 : d2;
			double h1 = dm <= 1e-15 ? fmax(1e-6, h0 * 1e-3) : pow(0.01 / dm, 0.2);
			h = fmin(100 * h0, h1);
		}
	}
	int64_t attempts = 0;
	while (!rc && t > t_end) {
		if (++attempts > o->max_steps) {
			rc = df_error_set(err, DF_ENUMERIC, "dopri5: not at t = %g after %lld steps (at t = %g, step %g); "
			                  "raise max_steps or the tolerances", t_end, (long long)o->max_steps, t, h);
			break;
		}
		int last = h >= t - t_end || t - h - t_end < 1e-12 * span;
		if (last)
			h = t - t_end;
		double tn = last ? t_end : t - h;
		for (int st = 1; st < 7 && !rc; st++) {
			for (int64_t i = 0; i < n; i++) {
				double acc = 0;
				for (int j = 0; j < st; j++)
					acc += dp_a[st][j] * k[j][i];
				y[i] = (float)(x[i] - h * acc);
			}
			/* stage 7 is the 5th-order solution itself (FSAL) */
			rc = ode_rhs(s, y, dp_c[st] == 1 ? tn : t - dp_c[st] * h, k[st], err);
		}
		if (rc)
			break;
		for (int64_t i = 0; i < n; i++) {
			double acc = 0;
			for (int j = 0; j < 7; j++)
				acc += dp_e[j] * k[j][i];
			e[i] = (float)(h * acc);
		}
		double enorm = scaled_rms(n, e, x, y, o->atol, o->rtol);
		if (!isfinite(enorm)) {
			rc = df_error_set(err, DF_ENUMERIC, "dopri5: non-finite values at t = %g", t);
			break;
		}
		double factor = enorm == 0 ? 10 : 0.9 * pow(enorm, -0.2);
		factor = fmin(10, fmax(0.2, factor));
		if (enorm <= 1) {
			t = tn;
			memcpy(x, y, sizeof(float) * n);
			memcpy(k[0], k[6], sizeof(float) * n);
		} else if (factor > 1) {
			factor = 1;
		}
		h *= factor;
	}
	if (!rc && lo < tmin)
		rc = df_sampling_predict(s, x, t_end, DF_PRED_X0, x, err);
	free(buf);
	return rc;
}

static int run_ode(const void *settings, df_sampling *s, float *x, df_error *err)
{
	const ode_sampler *o = settings;
	return o->method == ODE_DOPRI5 ? run_dopri5(o, s, x, err) : run_fixed(o, s, x, err);
}

static int ode_sample(void *self, const df_process *p, const df_denoiser *denoiser, df_sample_job *job,
                      df_error *err)
{
	ode_sampler *o = self;
	return df_sampling_run_job(o->ctx, p, denoiser, job, run_ode, o, err);
}

#define ODE_VTABLE(CREATE)                                                                         \
	{                                                                                          \
		.struct_size = sizeof(df_sampler_vtable), .create = CREATE, .destroy = ode_destroy, \
		.check = ode_check, .sample = ode_sample,                                          \
	}

static const df_sampler_vtable euler_vtable = ODE_VTABLE(euler_create);
static const df_sampler_vtable heun_vtable = ODE_VTABLE(heun_create);
static const df_sampler_vtable dpmpp_vtable = ODE_VTABLE(dpmpp_create);
static const df_sampler_vtable dopri5_vtable = ODE_VTABLE(dopri5_create);

static const df_component euler_component = {
	sizeof(df_component), DF_KIND_SAMPLER, "euler",
	"probability-flow ODE, Euler on a fixed grid (1 evaluation per step)",
	fixed_settings_decl, sizeof(fixed_settings), &euler_vtable};
static const df_component heun_component = {
	sizeof(df_component), DF_KIND_SAMPLER, "heun",
	"probability-flow ODE, Heun (2nd order) on a fixed grid (2 evaluations per step)",
	fixed_settings_decl, sizeof(fixed_settings), &heun_vtable};
static const df_component dpmpp_component = {
	sizeof(df_component), DF_KIND_SAMPLER, "dpmpp-2m",
	"DPM-Solver++(2M): multistep on data predictions, any process (1 evaluation per step)",
	dpm_settings_decl, sizeof(fixed_settings), &dpmpp_vtable};
static const df_component dopri5_component = {
	sizeof(df_component), DF_KIND_SAMPLER, "dopri5",
	"probability-flow ODE, adaptive Dormand-Prince 5(4); reports every evaluation",
	dopri5_settings_decl, sizeof(dopri5_settings), &dopri5_vtable};

DF_PLUGIN_DEFINE("ode-samplers", PACKAGE_VERSION, "MIT", &euler_component, &heun_component, &dpmpp_component,
                 &dopri5_component)
