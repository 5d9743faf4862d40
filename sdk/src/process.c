/* The noise process: schedules, paths, conversions, DDPM respacing and the
 * time grids of samplers (see diffuse/process.h for the convention). */
#include "config.h"
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "diffuse/process.h"
#include "diffuse/rng.h"
#include "diffuse/tensor.h"
#include "process_private.h"

/* SiT's VP path: beta(t) runs from VP_BETA_MIN at data to VP_BETA_MAX at noise. */
#define VP_BETA_MIN 0.1
#define VP_BETA_MAX 20.0

#ifndef M_PI
#define M_PI 3.14159265358979323846
#endif

struct df_process {
	df_process_kind kind;
	char name[32];
	df_prediction pred;
	int learned_variance;
	/* continuous */
	df_path path;
	double train_eps, sample_eps;
	/* discrete */
	int T;
	double *betas;
	double *abar;
	double *log_abar_nodes; /* T + 1 nodes at t = k / T: 0, log abar_0, ..., log abar_{T-1} */
};

const char *df_prediction_name(df_prediction pred)
{
	switch (pred) {
	case DF_PRED_EPS: return "eps";
	case DF_PRED_X0: return "x0";
	case DF_PRED_VELOCITY: return "velocity";
	case DF_PRED_SCORE: return "score";
	}
	return NULL;
}

df_prediction df_prediction_from_name(const char *name)
{
	if (!name)
		return 0;
	if (!strcmp(name, "eps") || !strcmp(name, "noise"))
		return DF_PRED_EPS;
	if (!strcmp(name, "x0"))
		return DF_PRED_X0;
	if (!strcmp(name, "velocity"))
		return DF_PRED_VELOCITY;
	if (!strcmp(name, "score"))
		return DF_PRED_SCORE;
	return 0;
}

static int valid_prediction(df_prediction pred)
{
	return df_prediction_name(pred) != NULL;
}

int df_ddpm_betas(const char *schedule, int T, double *betas, df_error *err)
{
	if (!schedule || !betas)
		return df_error_set(err, DF_EINVAL, "ddpm schedule: no schedule name or output");
	if (T < 2)
		return df_error_set(err, DF_EINVAL, "ddpm schedule: %d steps (need at least 2)", T);
	if (!strcmp(schedule, "linear")) {
		double scale = 1000.0 / T;
		double first = scale * 1e-4, last = scale * 0.02;
		/* numpy linspace: start + i * step, the last point exact */
		double step = (last - first) / (T - 1);
		for (int i = 0; i < T; i++)
			betas[i] = first + i * step;
		betas[T - 1] = last;
		return 0;
	}
	if (!strcmp(schedule, "cosine")) {
		for (int i = 0; i < T; i++) {
			double a1 = cos(((double)i / T + 0.008) / 1.008 * M_PI / 2);
			double a2 = cos(((double)(i + 1) / T + 0.008) / 1.008 * M_PI / 2);
			double b = 1.0 - (a2 * a2) / (a1 * a1);
			betas[i] = b < 0.999 ? b : 0.999;
		}
		return 0;
	}
	return df_error_set(err, DF_EINVAL, "ddpm schedule: unknown schedule '%s' (linear, cosine)", schedule);
}

int df_process_create_discrete(df_process **out, const char *name, const double *betas, int T,
                               df_prediction pred, int learned_variance, df_error *err)
{
	if (!out || !betas)
		return df_error_set(err, DF_EINVAL, "discrete process: no output or betas");
	*out = NULL;
	if (T < 2)
		return df_error_set(err, DF_EINVAL, "discrete process: %d steps (need at least 2)", T);
	if (!valid_prediction(pred))
		return df_error_set(err, DF_EINVAL, "discrete process: unknown prediction type %d", (int)pred);
	for (int i = 0; i < T; i++)
		if (!(betas[i] > 0 && betas[i] < 1))
			return df_error_set(err, DF_EINVAL, "discrete process: beta[%d] = %g is not in (0, 1)", i, betas[i]);
	df_process *p = calloc(1, sizeof *p);
	if (!p)
		return df_error_set(err, DF_ENOMEM, "discrete process: out of memory");
	p->betas = malloc(sizeof(double) * T);
	p->abar = malloc(sizeof(double) * T);
	p->log_abar_nodes = malloc(sizeof(double) * (T + 1));
	if (!p->betas || !p->abar || !p->log_abar_nodes) {
		df_process_destroy(p);
		return df_error_set(err, DF_ENOMEM, "discrete process: out of memory");
	}
	p->kind = DF_PROCESS_DISCRETE;
	snprintf(p->name, sizeof p->name, "%s", name ? name : "ddpm");
	p->pred = pred;
	p->learned_variance = learned_variance ? 1 : 0;
	p->T = T;
	double cum = 1.0;
	p->log_abar_nodes[0] = 0.0;
	for (int i = 0; i < T; i++) {
		p->betas[i] = betas[i];
		cum *= 1.0 - betas[i];
		p->abar[i] = cum;
		p->log_abar_nodes[i + 1] = log(cum);
	}
	*out = p;
	return 0;
}

int df_process_create_path(df_process **out, df_path path, df_prediction pred,
                           double train_eps, double sample_eps, df_error *err)
{
	if (!out)
		return df_error_set(err, DF_EINVAL, "path process: no output");
	*out = NULL;
	if (!valid_prediction(pred))
		return df_error_set(err, DF_EINVAL, "path process: unknown prediction type %d", (int)pred);
	const char *name;
	double def_train, def_sample;
	switch (path) {
	case DF_PATH_LINEAR:
	case DF_PATH_GVP:
		name = path == DF_PATH_LINEAR ? "linear" : "gvp";
		def_train = def_sample = pred == DF_PRED_VELOCITY ? 0.0 : 1e-3;
		break;
	case DF_PATH_VP:
		name = "vp";
		def_train = 1e-5;
		def_sample = 1e-3;
		break;
	default:
		return df_error_set(err, DF_EINVAL, "path process: unknown path %d", (int)path);
	}
	if (train_eps < 0)
		train_eps = def_train;
	if (sample_eps < 0)
		sample_eps = def_sample;
	if (train_eps >= 0.5 || sample_eps >= 0.5)
		return df_error_set(err, DF_EINVAL, "path process: train_eps %g / sample_eps %g must be below 0.5",
		                    train_eps, sample_eps);
	df_process *p = calloc(1, sizeof *p);
	if (!p)
		return df_error_set(err, DF_ENOMEM, "path process: out of memory");
	p->kind = DF_PROCESS_CONTINUOUS;
	snprintf(p->name, sizeof p->name, "%s", name);
	p->pred = pred;
	p->path = path;
	p->train_eps = train_eps;
	p->sample_eps = sample_eps;
	*out = p;
	return 0;
}

void df_process_destroy(df_process *p)
{
	if (!p)
		return;
	free(p->betas);
	free(p->abar);
	free(p->log_abar_nodes);
	free(p);
}

df_process_kind df_process_get_kind(const df_process *p) { return p->kind; }
const char *df_process_name(const df_process *p) { return p->name; }
df_prediction df_process_prediction(const df_process *p) { return p->pred; }
int df_process_learned_variance(const df_process *p) { return p->learned_variance; }
df_path df_process_path(const df_process *p) { return p->kind == DF_PROCESS_CONTINUOUS ? p->path : 0; }
int df_process_T(const df_process *p) { return p->kind == DF_PROCESS_DISCRETE ? p->T : 0; }
double df_process_train_eps(const df_process *p) { return p->train_eps; }
double df_process_sample_eps(const df_process *p) { return p->sample_eps; }

int df_process_out_channels(const df_process *p, int channels)
{
	return p->learned_variance ? 2 * channels : channels;
}

const double *df_process_betas(const df_process *p)
{
	return p->kind == DF_PROCESS_DISCRETE ? p->betas : NULL;
}

const double *df_process_alphas_cumprod(const df_process *p)
{
	return p->kind == DF_PROCESS_DISCRETE ? p->abar : NULL;
}

double df_process_index_time(const df_process *p, int index)
{
	return (double)(index + 1) / p->T;
}

/* log abar piecewise linear between the nodes k / T; at a node the
 * segment to its left gives the slope (index i sees -T log(1 - beta_i)). */
static void discrete_coeffs(const df_process *p, double t, df_coeffs *c)
{
	int T = p->T;
	double u = t * T;
	int seg = (int)ceil(u) - 1;
	if (seg < 0)
		seg = 0;
	if (seg > T - 1)
		seg = T - 1;
	double l0 = p->log_abar_nodes[seg], l1 = p->log_abar_nodes[seg + 1];
	double slope = (l1 - l0) * T; /* d log abar / dt, negative */
	double l = l0 + (u - seg) * (l1 - l0);
	double abar = exp(l);
	c->alpha = exp(0.5 * l);
	c->sigma = sqrt(-expm1(l));
	c->dalpha = 0.5 * slope * c->alpha;
	c->dsigma = c->sigma > 0 ? -0.5 * slope * abar / c->sigma : INFINITY;
}

static void path_coeffs(const df_process *p, double t, df_coeffs *c)
{
	switch (p->path) {
	case DF_PATH_LINEAR:
		c->alpha = 1.0 - t;
		c->sigma = t;
		c->dalpha = -1.0;
		c->dsigma = 1.0;
		break;
	case DF_PATH_GVP: {
		double h = M_PI / 2;
		/* sin of the complement, not cos: alpha is exactly 0 at t = 1 (cos gives 6e-17),
		 * so conversions that divide by it are refused there instead of blowing up */
		c->alpha = sin(h * (1.0 - t));
		c->sigma = sin(h * t);
		c->dalpha = -h * c->sigma;
		c->dsigma = h * c->alpha;
		break;
	}
	case DF_PATH_VP: {
		double d = VP_BETA_MAX - VP_BETA_MIN;
		double log_alpha = -0.25 * t * t * d - 0.5 * t * VP_BETA_MIN;
		double beta = VP_BETA_MIN + t * d;
		c->alpha = exp(log_alpha);
		c->sigma = sqrt(-expm1(2 * log_alpha));
		c->dalpha = -0.5 * beta * c->alpha;
		c->dsigma = c->sigma > 0 ? 0.5 * beta * c->alpha * c->alpha / c->sigma : INFINITY;
		break;
	}
	}
}

void df_process_coeffs(const df_process *p, double t, df_coeffs *c)
{
	if (!(t >= 0))
		t = 0;
	if (t > 1)
		t = 1;
	c->t = t;
	if (p->kind == DF_PROCESS_DISCRETE)
		discrete_coeffs(p, t, c);
	else
		path_coeffs(p, t, c);
}

double df_process_model_time(const df_process *p, double t)
{
	if (p->kind == DF_PROCESS_DISCRETE)
		return t * p->T - 1.0;
	return 1.0 - t;
}

void df_process_interval(const df_process *p, df_interval which, double *lo, double *hi)
{
	if (p->kind == DF_PROCESS_DISCRETE) {
		*lo = which == DF_INTERVAL_TRAIN ? 1.0 / p->T : 0.0;
		*hi = 1.0;
		return;
	}
	double eps = which == DF_INTERVAL_TRAIN ? p->train_eps : p->sample_eps;
	if (p->path == DF_PATH_VP) {
		*lo = eps;
		*hi = 1.0;
	} else if (p->pred == DF_PRED_VELOCITY) {
		*lo = 0.0;
		*hi = 1.0;
	} else {
		*lo = eps;
		*hi = 1.0 - eps;
	}
}

double df_process_t_min(const df_process *p)
{
	return p->kind == DF_PROCESS_DISCRETE ? 1.0 / p->T : 0.0;
}

double df_coeffs_w_sbdm(const df_coeffs *c)
{
	return c->sigma * c->sigma * (-c->dalpha / c->alpha) + c->sigma * c->dsigma;
}

/* ------------------------------------------------------------------ */
/* Conversions: each prediction type is p * x0 + q * eps at t. */

static int prediction_row(const df_coeffs *c, df_prediction pred, double *p, double *q)
{
	switch (pred) {
	case DF_PRED_EPS: *p = 0; *q = 1; return 0;
	case DF_PRED_X0: *p = 1; *q = 0; return 0;
	case DF_PRED_VELOCITY: *p = -c->dalpha; *q = -c->dsigma; return 0;
	case DF_PRED_SCORE: *p = 0; *q = -1.0 / c->sigma; return 0;
	}
	return DF_EINVAL;
}

void df_coeffs_target(const df_coeffs *c, df_prediction pred, double *c_x0, double *c_eps)
{
	if (prediction_row(c, pred, c_x0, c_eps) != 0)
		*c_x0 = *c_eps = NAN;
}

int df_process_convert_coeffs(const df_process *p, double t, df_prediction from, df_prediction to,
                              double *cx, double *cm, df_error *err)
{
	if (!valid_prediction(from) || !valid_prediction(to))
		return df_error_set(err, DF_EINVAL, "convert: unknown prediction type");
	if (from == to) {
		*cx = 0;
		*cm = 1;
		return 0;
	}
	df_coeffs c;
	df_process_coeffs(p, t, &c);
	double pf = 0, qf = 0, pt = 0, qt = 0;
	prediction_row(&c, from, &pf, &qf);
	prediction_row(&c, to, &pt, &qt);
	/* [x; out] = [[alpha, sigma], [pf, qf]] [x0; eps] */
	double det = c.alpha * qf - c.sigma * pf;
	*cx = (pt * qf - qt * pf) / det;
	*cm = (qt * c.alpha - pt * c.sigma) / det;
	if (!isfinite(*cx) || !isfinite(*cm))
		return df_error_set(err, DF_EINVAL,
		                    "convert: %s to %s is singular on '%s' at t = %g (alpha %g, sigma %g)",
		                    df_prediction_name(from), df_prediction_name(to), p->name, t, c.alpha, c.sigma);
	return 0;
}

int df_process_convert(const df_process *p, double t, df_prediction from, df_prediction to,
                       const float *x, const float *out, float *dst, int64_t n, df_error *err)
{
	double cx, cm;
	int rc = df_process_convert_coeffs(p, t, from, to, &cx, &cm, err);
	if (rc)
		return rc;
	for (int64_t i = 0; i < n; i++)
		dst[i] = (float)(cx * x[i] + cm * out[i]);
	return 0;
}

/* ------------------------------------------------------------------ */
/* DDPM respacing and posterior. */

static int cmp_int(const void *a, const void *b)
{
	int x = *(const int *)a, y = *(const int *)b;
	return (x > y) - (x < y);
}

static int parse_count(const char *s, char **end)
{
	while (isspace((unsigned char)*s))
		s++;
	if (!isdigit((unsigned char)*s)) {
		*end = (char *)s;
		return -1;
	}
	long v = strtol(s, end, 10);
	while (isspace((unsigned char)**end))
		(*end)++;
	return v > 0 && v <= 1000000 ? (int)v : -1;
}

int df_ddpm_respace(int T, const char *spec, int *indices, int max, int *n, df_error *err)
{
	if (!spec || !indices || !n)
		return df_error_set(err, DF_EINVAL, "respacing: no spec or output");
	*n = 0;
	if (T < 1)
		return df_error_set(err, DF_EINVAL, "respacing: %d steps", T);
	char *end;
	if (!strncmp(spec, "ddim", 4)) {
		int want = parse_count(spec + 4, &end);
		if (want < 1 || *end)
			return df_error_set(err, DF_EINVAL, "respacing '%s': expected ddimN with N >= 1", spec);
		for (int stride = 1; stride < T || (T == 1 && stride == 1); stride++) {
			int count = (T + stride - 1) / stride;
			if (count != want)
				continue;
			if (count > max)
				return df_error_set(err, DF_EINVAL, "respacing '%s': %d steps exceed room for %d", spec, count, max);
			for (int k = 0; k < count; k++)
				indices[k] = k * stride;
			*n = count;
			return 0;
		}
		return df_error_set(err, DF_EINVAL, "respacing '%s': no integer stride gives exactly %d of %d steps",
		                    spec, want, T);
	}
	int counts[256], sections = 0;
	const char *s = spec;
	for (;;) {
		int c = parse_count(s, &end);
		if (c < 1)
			return df_error_set(err, DF_EINVAL, "respacing '%s': expected a comma list of positive step counts",
			                    spec);
		if (sections == (int)(sizeof counts / sizeof counts[0]))
			return df_error_set(err, DF_EINVAL, "respacing '%s': too many sections", spec);
		counts[sections++] = c;
		if (*end == '\0')
			break;
		if (*end != ',')
			return df_error_set(err, DF_EINVAL, "respacing '%s': unexpected '%c'", spec, *end);
		s = end + 1;
	}
	if (sections > T)
		return df_error_set(err, DF_EINVAL, "respacing '%s': %d sections for %d steps", spec, sections, T);
	int size_per = T / sections, extra = T % sections, start = 0, total = 0;
	for (int i = 0; i < sections; i++) {
		int size = size_per + (i < extra ? 1 : 0);
		int count = counts[i];
		if (size < count)
			return df_error_set(err, DF_EINVAL, "respacing '%s': cannot take %d steps from a section of %d",
			                    spec, count, size);
		double stride = count <= 1 ? 1.0 : (double)(size - 1) / (count - 1);
		double cur = 0.0;
		for (int k = 0; k < count; k++) {
			if (total == max)
				return df_error_set(err, DF_EINVAL, "respacing '%s': more steps than room for %d", spec, max);
			/* rint rounds half to even, as Python's round does */
			indices[total++] = start + (int)rint(cur);
			cur += stride;
		}
		start += size;
	}
	qsort(indices, total, sizeof *indices, cmp_int);
	int unique = 0;
	for (int k = 0; k < total; k++)
		if (unique == 0 || indices[k] != indices[unique - 1])
			indices[unique++] = indices[k];
	*n = unique;
	return 0;
}

int df_ddpm_steps(const df_process *p, const int *indices, int n, df_ddpm_step *steps, df_error *err)
{
	if (p->kind != DF_PROCESS_DISCRETE)
		return df_error_set(err, DF_EINVAL, "ddpm steps: process '%s' is continuous, not a DDPM schedule",
		                    p->name);
	if (n < 1)
		return df_error_set(err, DF_EINVAL, "ddpm steps: no steps");
	double abar_last = 1.0;
	for (int k = 0; k < n; k++) {
		int i = indices[k];
		if (i < 0 || i >= p->T || (k > 0 && i <= indices[k - 1]))
			return df_error_set(err, DF_EINVAL, "ddpm steps: index %d at position %d is out of order or range",
			                    i, k);
		df_ddpm_step *s = &steps[k];
		double abar = p->abar[i];
		s->index = i;
		s->t = df_process_index_time(p, i);
		s->abar = abar;
		s->abar_prev = abar_last;
		s->beta = 1.0 - abar / abar_last;
		s->post_var = s->beta * (1.0 - abar_last) / (1.0 - abar);
		s->coef_x0 = s->beta * sqrt(abar_last) / (1.0 - abar);
		s->coef_xt = (1.0 - abar_last) * sqrt(1.0 - s->beta) / (1.0 - abar);
		abar_last = abar;
	}
	for (int k = 0; k < n; k++) {
		double v = k > 0 ? steps[k].post_var : n > 1 ? steps[1].post_var : steps[0].beta;
		steps[k].post_logvar = log(v);
	}
	return 0;
}

double df_ddpm_learned_logvar(const df_ddpm_step *s, double v)
{
	double frac = 0.5 * (v + 1.0);
	return frac * log(s->beta) + (1.0 - frac) * s->post_logvar;
}

/* ------------------------------------------------------------------ */
/* Sampler time grids. */

/* log(alpha / sigma), capped where it is infinite (alpha or sigma = 0). */
#define LOGSNR_CAP 10.0
static double half_logsnr(const df_process *p, double t)
{
	df_coeffs c;
	df_process_coeffs(p, t, &c);
	double l = log(c.alpha) - log(c.sigma);
	return l > LOGSNR_CAP ? LOGSNR_CAP : l < -LOGSNR_CAP ? -LOGSNR_CAP : l;
}

/* Uniform in log-SNR from hi down to the lowest time the model takes (and
 * a last step to t = 0 on DDPM schedules); each point solved for on its
 * own by bisection, since log-SNR falls monotonically with t. */
static int logsnr_grid(const df_process *p, int steps, double *t)
{
	double lo, hi;
	df_process_interval(p, DF_INTERVAL_SAMPLE, &lo, &hi);
	int denoise_last = lo < df_process_t_min(p);
	double bottom = denoise_last ? df_process_t_min(p) : lo;
	int points = denoise_last ? steps - 1 : steps; /* t[points] = bottom */
	double l_hi = half_logsnr(p, hi), l_lo = half_logsnr(p, bottom);
	t[0] = hi;
	for (int k = 1; k < points; k++) {
		double want = l_hi + (l_lo - l_hi) * ((double)k / points);
		double a = bottom, b = hi; /* half_logsnr(a) >= want >= half_logsnr(b) */
		for (int it = 0; it < 100 && b - a > 1e-15; it++) {
			double m = 0.5 * (a + b);
			if (half_logsnr(p, m) >= want)
				a = m;
			else
				b = m;
		}
		t[k] = 0.5 * (a + b);
	}
	if (points > 0)
		t[points] = bottom;
	t[steps] = lo;
	return 0;
}

int df_process_time_grid(const df_process *p, const char *spacing, int steps, double *t, df_error *err)
{
	if (steps < 1)
		return df_error_set(err, DF_EINVAL, "time grid: %d steps (need at least 1)", steps);
	if (!spacing || !strcmp(spacing, "auto"))
		spacing = p->kind == DF_PROCESS_DISCRETE ? "ddpm" : "uniform";
	if (!strcmp(spacing, "uniform")) {
		double lo, hi;
		df_process_interval(p, DF_INTERVAL_SAMPLE, &lo, &hi);
		for (int k = 0; k < steps; k++)
			t[k] = hi - (hi - lo) * ((double)k / steps);
		t[steps] = lo;
		return 0;
	}
	if (!strcmp(spacing, "logsnr"))
		return logsnr_grid(p, steps, t);
	int ddim = !strcmp(spacing, "ddim");
	if (!ddim && strcmp(spacing, "ddpm"))
		return df_error_set(err, DF_EINVAL, "time grid: unknown spacing '%s' (auto, uniform, logsnr, ddpm, ddim)",
		                    spacing);
	if (p->kind != DF_PROCESS_DISCRETE)
		return df_error_set(err, DF_EINVAL, "time grid: spacing '%s' needs a DDPM schedule, and '%s' is continuous",
		                    spacing, p->name);
	if (steps > p->T)
		return df_error_set(err, DF_EINVAL, "time grid: %d steps exceed the schedule's %d", steps, p->T);
	int *idx = malloc(sizeof(int) * steps);
	if (!idx)
		return df_error_set(err, DF_ENOMEM, "time grid: out of memory");
	char spec[32];
	snprintf(spec, sizeof spec, "%s%d", ddim ? "ddim" : "", steps);
	int n = 0, rc = df_ddpm_respace(p->T, spec, idx, steps, &n, err);
	if (!rc && n != steps)
		rc = df_error_set(err, DF_EINVAL, "time grid: respacing '%s' kept %d steps", spec, n);
	if (!rc) {
		for (int k = 0; k < steps; k++)
			t[k] = df_process_index_time(p, idx[steps - 1 - k]);
		t[steps] = 0.0;
	}
	free(idx);
	return rc;
}

/* ------------------------------------------------------------------ */
/* Objective helpers. */

void dfp_fill_normal_per_sample(float *dst, int64_t n, int64_t dim, const int64_t *index, uint64_t seed,
                                uint64_t stream, uint64_t step)
{
	for (int64_t i = 0; i < n;) {
		int64_t first = index ? index[i] : i, run = 1;
		while (i + run < n && (index ? index[i + run] : i + run) == first + run)
			run++;
		uint64_t at = (uint64_t)first * (uint64_t)dim;
		float *out = dst + i * dim;
		/* small fills one by one: a parallel region costs more than it saves there */
		if (run * dim < DFP_PARALLEL_FILL_MIN)
			for (int64_t k = 0; k < run * dim; k++)
				out[k] = df_rng_normal(seed, stream, step, at + (uint64_t)k);
		else
			df_rng_fill_normal(out, (size_t)(run * dim), seed, stream, step, at);
		i += run;
	}
}

void df_process_train_draws(uint64_t seed, uint64_t step, const int64_t *index, int64_t n, int64_t dim,
                            double *u, float *eps)
{
	if (u)
		for (int64_t i = 0; i < n; i++)
			u[i] = df_rng_uniform(seed, DF_STREAM_TRAIN_TIME, step, (uint64_t)index[i]);
	if (eps)
		dfp_fill_normal_per_sample(eps, n, dim, index, seed, DF_STREAM_TRAIN_NOISE, step);
}

df_tensor *df_per_sample_tensor(df_graph *g, const float *v, int64_t n, int ndim)
{
	int64_t shape[DF_MAX_DIMS];
	if (ndim < 1 || ndim > DF_MAX_DIMS)
		ndim = 1;
	shape[0] = n;
	for (int d = 1; d < ndim; d++)
		shape[d] = 1;
	return df_tensor_from_host(g, v, ndim, shape);
}
