/* Every sampler against the closed form. For data x0 ~ N(mu, s^2) per
 * value, the ideal denoiser is known exactly at every t:
 *     E[x0 | x_t]  = (alpha s^2 x + sigma^2 mu) / (alpha^2 s^2 + sigma^2),
 *     E[eps | x_t] = sigma (x - alpha mu) / (alpha^2 s^2 + sigma^2),
 * so a test model returns it in the process's prediction type, and each
 * sampler, loaded as a plugin and run through the sampler ABI, must turn
 * N(0, 1) noise into samples with mean mu and variance s^2. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include "diffuse/process.h"
#include "diffuse/rng.h"
#include "diffuse/runtime.h"
#include "diffuse/tensor.h"
#include "registry_fixture.h"

#define BATCH 64
#define SIDE 8
#define DIM (SIDE * SIDE)
#define DATA_MEAN 0.5
#define DATA_VAR 0.36
/* 4096 values: the sample mean has a standard error of 0.6 / 64 = 0.009,
 * the variance one of 0.36 * sqrt(2 / 4096) = 0.008; these bounds are
 * about five of those, far below what a wrong sign or schedule gives. */
#define MEAN_TOL 0.05
#define VAR_TOL 0.04


typedef struct gauss_model {
	const df_process *p;
	double var_value; /* the learned-variance channels' value */
	int64_t evals;
} gauss_model;

/* alpha, sigma and their t-derivatives written out here from the specs,
 * independently of process.c, so a wrong schedule there shows up as a
 * sampler that misses the data distribution. */
static void reference_coeffs(const df_process *p, double t, df_coeffs *c)
{
	const char *name = df_process_name(p);
	double h = M_PI / 2;
	if (!strcmp(name, "linear")) {
		*c = (df_coeffs){t, 1 - t, t, -1, 1};
	} else if (!strcmp(name, "gvp")) {
		*c = (df_coeffs){t, cos(h * t), sin(h * t), -h * sin(h * t), h * cos(h * t)};
	} else if (!strcmp(name, "vp")) {
		double beta = 0.1 + t * 19.9, a = exp(-0.25 * t * t * 19.9 - 0.5 * t * 0.1);
		double sg = sqrt(1 - a * a);
		*c = (df_coeffs){t, a, sg, -0.5 * beta * a, 0.5 * beta * a * a / sg};
	} else {
		/* DDPM, T = 1000: log abar linear between the nodes k / T */
		int cosine = strstr(name, "cosine") != NULL;
		double node[1001], cum = 1;
		node[0] = 0;
		for (int i = 0; i < 1000; i++) {
			double b = 1e-4 + (0.02 - 1e-4) * i / 999.0;
			if (cosine) {
				double f1 = cos((i / 1000.0 + 0.008) / 1.008 * h), f2 = cos(((i + 1) / 1000.0 + 0.008) / 1.008 * h);
				b = fmin(1 - f2 * f2 / (f1 * f1), 0.999);
			}
			cum *= 1 - b;
			node[i + 1] = log(cum);
		}
		int seg = (int)ceil(t * 1000) - 1;
		seg = seg < 0 ? 0 : seg > 999 ? 999 : seg;
		double slope = (node[seg + 1] - node[seg]) * 1000, l = node[seg] + (t * 1000 - seg) * (node[seg + 1] - node[seg]);
		double a = exp(0.5 * l), sg = sqrt(1 - exp(l));
		*c = (df_coeffs){t, a, sg, 0.5 * slope * a, -0.5 * slope * exp(l) / sg};
	}
}

static int gauss_eval(void *vctx, df_graph *g, df_tensor *x, double t, df_tensor **out, df_error *err)
{
	gauss_model *m = vctx;
	m->evals++;
	int64_t n = x->numel, batch = x->shape[0], dim = n / batch;
	int learned = df_process_learned_variance(m->p);
	int64_t out_dim = learned ? 2 * dim : dim;
	float *xh = malloc(sizeof(float) * n), *oh = malloc(sizeof(float) * batch * out_dim);
	assert_non_null(xh);
	assert_non_null(oh);
	assert_int_equal(df_tensor_read(x, xh, err), 0);
	df_coeffs c;
	reference_coeffs(m->p, t, &c);
	df_prediction pred = df_process_prediction(m->p);
	double den = c.alpha * c.alpha * DATA_VAR + c.sigma * c.sigma;
	/* the prediction as (x0, eps) weights; velocity is SiT's, -(alpha' x0 + sigma' eps) */
	double pc = pred == DF_PRED_X0 ? 1 : pred == DF_PRED_VELOCITY ? -c.dalpha : 0;
	double qc = pred == DF_PRED_EPS ? 1 : pred == DF_PRED_VELOCITY ? -c.dsigma : 0;
	for (int64_t b = 0; b < batch; b++)
		for (int64_t j = 0; j < dim; j++) {
			double xv = xh[b * dim + j];
			double x0 = (c.alpha * DATA_VAR * xv + c.sigma * c.sigma * DATA_MEAN) / den;
			double eps = c.sigma * (xv - c.alpha * DATA_MEAN) / den;
			double o = pred == DF_PRED_SCORE ? -(xv - c.alpha * DATA_MEAN) / den : pc * x0 + qc * eps;
			oh[b * out_dim + j] = (float)o;
			if (learned)
				oh[b * out_dim + dim + j] = (float)m->var_value;
		}
	int64_t shape[4] = {batch, learned ? 2 : 1, SIDE, SIDE};
	*out = df_tensor_from_host(g, oh, 4, shape);
	free(xh);
	free(oh);
	return df_graph_status(g, err);
}

typedef struct run_result {
	double mean, var;
	int64_t nfe, evals;
	float x[BATCH * DIM];
} run_result;

static const df_component *find_sampler(const char *name)
{
	return registry_component(DF_KIND_SAMPLER, name);
}

/* settings: "name=value" pairs separated by ';' */
static void *make_sampler(const char *name, const char *settings, df_error *err, int *rc)
{
	const df_component *comp = find_sampler(name);
	void *values = registry_settings(comp, settings);
	const df_sampler_vtable *vt = comp->vtable;
	void *self = NULL;
	*rc = vt->create(values, ctx, &self, err);
	registry_settings_free(comp, values);
	return self;
}

/* Samples rows first..first+count of the standard batch (noise keyed by index). */
static int run_sampler_rows(const char *name, const char *settings, const df_process *p, double var_value,
                            int64_t first, int64_t count, run_result *r, df_error *err)
{
	const df_component *comp = find_sampler(name);
	const df_sampler_vtable *vt = comp->vtable;
	int rc;
	void *self = make_sampler(name, settings, err, &rc);
	if (rc)
		return rc;
	rc = vt->check(self, p, err);
	if (rc) {
		vt->destroy(self);
		return rc;
	}
	int64_t index[BATCH];
	float *noise = malloc(sizeof(float) * count * DIM);
	assert_non_null(noise);
	for (int64_t i = 0; i < count; i++)
		index[i] = first + i;
	df_rng_fill_normal(noise, count * DIM, 1234, 7, 0, (uint64_t)first * DIM);
	df_graph *g = df_graph_create(ctx, DF_GRAPH_NO_GRAD);
	int64_t shape[4] = {count, 1, SIDE, SIDE};
	df_sample_job job = {sizeof job, df_tensor_from_host(g, noise, 4, shape), 99, index, 0};
	gauss_model m = {p, var_value, 0};
	df_denoiser den = {sizeof den, gauss_eval, &m};
	rc = vt->sample(self, p, &den, &job, err);
	if (!rc) {
		assert_int_equal(df_tensor_read(job.x, r->x, err), 0);
		double sum = 0, sq = 0;
		for (int64_t i = 0; i < count * DIM; i++)
			sum += r->x[i];
		r->mean = sum / (count * DIM);
		for (int64_t i = 0; i < count * DIM; i++)
			sq += (r->x[i] - r->mean) * (r->x[i] - r->mean);
		r->var = sq / (count * DIM - 1);
		r->nfe = job.nfe;
		r->evals = m.evals;
	}
	df_graph_destroy(g);
	free(noise);
	vt->destroy(self);
	return rc;
}

static int run_sampler(const char *name, const char *settings, const df_process *p, double var_value,
                       run_result *r, df_error *err)
{
	return run_sampler_rows(name, settings, p, var_value, 0, BATCH, r, err);
}

enum { P_DDPM, P_DDPM_COSINE, P_DDPM_LEARNED, P_LINEAR_V, P_LINEAR_EPS, P_GVP_SCORE, P_GVP_V, P_VP_NOISE,
       P_VP_V, P_LINEAR_SCORE_NO_EPS, P_COUNT };
static df_process *procs[P_COUNT];

static int setup(void **state)
{
	(void)state;
	df_error err;
	if (registry_open())
		return -1;
	double betas[1000];
	if (df_ddpm_betas("linear", 1000, betas, &err) ||
	    df_process_create_discrete(&procs[P_DDPM], "ddpm-linear", betas, 1000, DF_PRED_EPS, 0, &err) ||
	    df_process_create_discrete(&procs[P_DDPM_LEARNED], "ddpm-linear", betas, 1000, DF_PRED_EPS, 1, &err) ||
	    df_ddpm_betas("cosine", 1000, betas, &err) ||
	    df_process_create_discrete(&procs[P_DDPM_COSINE], "ddpm-cosine", betas, 1000, DF_PRED_EPS, 0, &err) ||
	    df_process_create_path(&procs[P_LINEAR_V], DF_PATH_LINEAR, DF_PRED_VELOCITY, -1, -1, &err) ||
	    df_process_create_path(&procs[P_LINEAR_EPS], DF_PATH_LINEAR, DF_PRED_EPS, -1, -1, &err) ||
	    df_process_create_path(&procs[P_GVP_SCORE], DF_PATH_GVP, DF_PRED_SCORE, -1, -1, &err) ||
	    df_process_create_path(&procs[P_GVP_V], DF_PATH_GVP, DF_PRED_VELOCITY, -1, -1, &err) ||
	    df_process_create_path(&procs[P_VP_NOISE], DF_PATH_VP, DF_PRED_EPS, -1, -1, &err) ||
	    df_process_create_path(&procs[P_VP_V], DF_PATH_VP, DF_PRED_VELOCITY, -1, -1, &err) ||
	    df_process_create_path(&procs[P_LINEAR_SCORE_NO_EPS], DF_PATH_LINEAR, DF_PRED_SCORE, 0, 0, &err)) {
		fprintf(stderr, "setup: %s\n", err.msg);
		return -1;
	}
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	for (int i = 0; i < P_COUNT; i++)
		df_process_destroy(procs[i]);
	registry_close();
	return 0;
}

typedef struct closed_case {
	const char *sampler;
	const char *settings;
	int proc;
	double var_value;
	int64_t nfe; /* expected evaluations; -1: adaptive */
} closed_case;

static const closed_case closed_cases[] = {
	{"euler", "steps=100", P_LINEAR_V, 0, 100},
	{"euler", "steps=100", P_GVP_SCORE, 0, 100},
	{"euler", "steps=100", P_VP_NOISE, 0, 100},
	{"euler", "steps=100", P_DDPM, 0, 100},
	{"euler", "steps=100;spacing=uniform", P_DDPM_COSINE, 0, 100},
	{"heun", "steps=50", P_LINEAR_V, 0, 100},
	{"heun", "steps=50", P_GVP_V, 0, 100},
	{"heun", "steps=50", P_VP_V, 0, 100},
	{"heun", "steps=50", P_DDPM, 0, 99}, /* the last step to t = 0 is the denoised x0 */
	{"heun", "steps=50", P_LINEAR_EPS, 0, 100},
	{"dopri5", "", P_LINEAR_V, 0, -1},
	{"dopri5", "", P_GVP_SCORE, 0, -1},
	{"dopri5", "", P_VP_NOISE, 0, -1},
	{"dopri5", "", P_DDPM, 0, -1},
	{"dpm-solver++", "steps=20", P_DDPM, 0, 20},
	{"dpm-solver++", "steps=50;spacing=ddpm", P_DDPM, 0, 50},
	{"dpm-solver++", "steps=20", P_DDPM_COSINE, 0, 20},
	{"dpm-solver++", "steps=20", P_LINEAR_V, 0, 20},
	{"dpm-solver++", "steps=20", P_VP_NOISE, 0, 20},
	{"dpm-solver++", "steps=20", P_GVP_SCORE, 0, 20},
	{"ddim", "steps=50", P_DDPM, 0, 50},
	{"ddim", "steps=50", P_LINEAR_V, 0, 50},
	{"ddim", "steps=50", P_VP_NOISE, 0, 50},
	{"ddim", "steps=250;eta=1", P_DDPM, 0, 250},
	{"ddim", "steps=250;eta=1", P_GVP_V, 0, 250},
	{"ddpm", "steps=250", P_DDPM, 0, 250},
	{"ddpm", "steps=250;variance=fixed-small", P_DDPM, 0, 250},
	{"ddpm", "steps=250", P_DDPM_LEARNED, 0.0, 250},
	{"ddpm", "steps=250", P_DDPM_LEARNED, -1.0, 250},
	{"ddpm", "steps=100;spacing=ddim", P_DDPM_COSINE, 0, 100},
	{"euler-maruyama", "steps=250", P_LINEAR_V, 0, 250},
	/* SiT's default last step adds the SDE drift w s h, which with SBDM's
	 * large w shrinks the variance by about 10% at h = 0.04: take the ODE's */
	{"euler-maruyama", "steps=250;diffusion_form=sbdm;last_step=euler", P_VP_NOISE, 0, 250},
	{"euler-maruyama", "steps=250;diffusion_form=sbdm;last_step=euler", P_GVP_SCORE, 0, 250},
	{"euler-maruyama", "steps=250;diffusion_form=constant;last_step=tweedie", P_LINEAR_EPS, 0, 250},
	{"euler-maruyama", "steps=250;diffusion_form=linear;last_step=euler", P_GVP_V, 0, 250},
	{"euler-maruyama", "steps=250;diffusion_form=decreasing", P_VP_V, 0, 250},
	{"euler-maruyama", "steps=250;diffusion_form=increasing-decreasing;last_step=none", P_LINEAR_V, 0, 249},
	{"euler-maruyama", "steps=250", P_DDPM, 0, 250},
	{"sde-heun", "steps=100", P_LINEAR_V, 0, 199},
	{"sde-heun", "steps=100;diffusion_form=sbdm;last_step=euler", P_VP_NOISE, 0, 199},
	{"sde-heun", "steps=100", P_DDPM_LEARNED, 0, 199},
};

static void test_closed_form(void **state)
{
	(void)state;
	int failures = 0;
	static run_result r;
	for (size_t i = 0; i < sizeof closed_cases / sizeof closed_cases[0]; i++) {
		const closed_case *c = &closed_cases[i];
		df_error err;
		int rc = run_sampler(c->sampler, c->settings, procs[c->proc], c->var_value, &r, &err);
		int ok = rc == 0 && fabs(r.mean - DATA_MEAN) < MEAN_TOL && fabs(r.var - DATA_VAR) < VAR_TOL &&
		         r.nfe == r.evals && (c->nfe < 0 ? r.nfe > 6 : r.nfe == c->nfe);
		fprintf(stderr, "%s %-15s %-62s %-12s mean %.4f var %.4f nfe %lld%s%s\n", ok ? "  ok" : "FAIL",
		        c->sampler, c->settings, df_process_name(procs[c->proc]), r.mean, r.var, (long long)r.nfe,
		        rc ? ": " : "", rc ? err.msg : "");
		failures += !ok;
	}
	assert_int_equal(failures, 0);
}

/* DDIM (eta 0) and Euler solve the same ODE: their difference shrinks as
 * the steps grow. */
static void test_ddim_euler_agree(void **state)
{
	(void)state;
	const int procs_used[] = {P_DDPM, P_GVP_V, P_VP_NOISE};
	static run_result a, b;
	for (int k = 0; k < 3; k++) {
		double prev = INFINITY, first = 0;
		for (int steps = 10; steps <= 160; steps *= 4) {
			char settings[64];
			df_error err;
			snprintf(settings, sizeof settings, "steps=%d", steps);
			assert_int_equal(run_sampler("ddim", settings, procs[procs_used[k]], 0, &a, &err), 0);
			assert_int_equal(run_sampler("euler", settings, procs[procs_used[k]], 0, &b, &err), 0);
			double d = 0;
			for (int i = 0; i < BATCH * DIM; i++)
				d = fmax(d, fabs(a.x[i] - b.x[i]));
			fprintf(stderr, "  %s %d steps: max |ddim - euler| = %.5f\n", df_process_name(procs[procs_used[k]]),
			        steps, d);
			assert_true(d < prev);
			if (steps == 10)
				first = d;
			prev = d;
		}
		/* first order both: 16 times the steps, at least 8 times closer (about 15 seen) */
		assert_true(prev < first / 8);
	}
}

/* The probability-flow ODE of Gaussian data keeps the standardised value
 * (x - alpha mu) / sqrt(alpha^2 s^2 + sigma^2) fixed, so each sample's exact
 * end point is known: max error over the batch. */
static double ode_error(const char *sampler, const char *settings, int proc)
{
	static run_result r;
	df_error err;
	const df_process *p = procs[proc];
	assert_int_equal(run_sampler(sampler, settings, p, 0, &r, &err), 0);
	double lo, hi;
	df_process_interval(p, DF_INTERVAL_SAMPLE, &lo, &hi);
	df_coeffs ch, cl;
	df_process_coeffs(p, hi, &ch);
	df_process_coeffs(p, lo, &cl);
	static float noise[BATCH * DIM];
	double worst = 0;
	df_rng_fill_normal(noise, BATCH * DIM, 1234, 7, 0, 0);
	for (int b = 0; b < BATCH; b++) {
		for (int j = 0; j < DIM; j++) {
			double z = (noise[b * DIM + j] - ch.alpha * DATA_MEAN) / sqrt(ch.alpha * ch.alpha * DATA_VAR + ch.sigma * ch.sigma);
			double want = cl.alpha * DATA_MEAN + sqrt(cl.alpha * cl.alpha * DATA_VAR + cl.sigma * cl.sigma) * z;
			worst = fmax(worst, fabs(r.x[b * DIM + j] - want));
		}
	}
	return worst;
}

/* Each ODE sampler converges to the exact end point at its order. */
static void test_ode_order(void **state)
{
	(void)state;
	const char *names[] = {"euler", "heun", "dpm-solver++", "ddim"};
	const int order[] = {1, 2, 2, 1};
	const int ps[] = {P_VP_NOISE, P_GVP_V, P_DDPM};
	for (int k = 0; k < 4; k++)
		for (int j = 0; j < 3; j++) {
			char a[64], b[64];
			snprintf(a, sizeof a, "steps=%d", 20);
			snprintf(b, sizeof b, "steps=%d", 80);
			double ea = ode_error(names[k], a, ps[j]), eb = ode_error(names[k], b, ps[j]);
			fprintf(stderr, "  %-9s %-12s 20 steps: %.2e  80 steps: %.2e  ratio %.1f\n", names[k],
			        df_process_name(procs[ps[j]]), ea, eb, ea / eb);
			/* 4x the steps: error / 4^order on smooth paths; the DDPM schedule's log abar
			 * has kinks at its nodes and sigma ~ sqrt(t) near data, so only convergence */
			double want = ps[j] == P_DDPM ? 2.5 : 0.6 * pow(4, order[k]);
			assert_true(ea / eb > want);
		}
	for (int j = 0; j < 3; j++) {
		double e = ode_error("dopri5", "", ps[j]);
		fprintf(stderr, "  dopri5    %-12s %.2e\n", df_process_name(procs[ps[j]]), e);
		assert_true(e < 5e-3);
	}
}

/* On the Linear path DDIM's update is exactly Euler's. */
static void test_ddim_is_euler_on_linear(void **state)
{
	(void)state;
	static run_result a, b;
	df_error err;
	assert_int_equal(run_sampler("ddim", "steps=17", procs[P_LINEAR_V], 0, &a, &err), 0);
	assert_int_equal(run_sampler("euler", "steps=17", procs[P_LINEAR_V], 0, &b, &err), 0);
	for (int i = 0; i < BATCH * DIM; i++)
		assert_true(fabs(a.x[i] - b.x[i]) < 1e-5);
}

/* The same sample gets the same noise in any batch. */
static void test_batch_independent(void **state)
{
	(void)state;
	static run_result all, part;
	df_error err;
	const char *names[] = {"euler-maruyama", "ddpm", "ddim"};
	const char *settings[] = {"steps=50", "steps=50", "steps=50;eta=1"};
	for (int k = 0; k < 3; k++) {
		const df_process *p = procs[k == 0 ? P_LINEAR_V : P_DDPM];
		assert_int_equal(run_sampler(names[k], settings[k], p, 0, &all, &err), 0);
		assert_int_equal(run_sampler_rows(names[k], settings[k], p, 0, 10, 7, &part, &err), 0);
		assert_memory_equal(part.x, all.x + 10 * DIM, sizeof(float) * 7 * DIM);
	}
}

static void expect_refusal(const char *sampler, const char *settings, int proc, const char *needle)
{
	df_error err;
	static run_result r;
	int rc = run_sampler(sampler, settings, procs[proc], 0, &r, &err);
	if (rc != DF_EINVAL || !strstr(err.msg, needle)) {
		print_error("%s on %s: rc %d, message '%s', expected '%s'\n", sampler, df_process_name(procs[proc]), rc,
		            rc ? err.msg : "", needle);
		fail();
	}
}

static void test_refusals(void **state)
{
	(void)state;
	expect_refusal("ddpm", "", P_LINEAR_V, "continuous");
	expect_refusal("ddpm", "variance=learned", P_DDPM, "learned variance");
	expect_refusal("euler", "spacing=ddpm", P_VP_NOISE, "DDPM schedule");
	expect_refusal("ddim", "steps=37;spacing=ddim", P_DDPM, "stride");
	expect_refusal("euler-maruyama", "diffusion_form=sbdm", P_LINEAR_V, "sample_eps");
	/* a score model cannot give a velocity where sigma = 0 */
	expect_refusal("euler", "steps=10", P_LINEAR_SCORE_NO_EPS, "singular");
	expect_refusal("heun", "steps=10", P_LINEAR_SCORE_NO_EPS, "step 1 of 11");
	expect_refusal("dopri5", "", P_LINEAR_SCORE_NO_EPS, "singular");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_closed_form),
		cmocka_unit_test(test_ddim_euler_agree),
		cmocka_unit_test(test_ode_order),
		cmocka_unit_test(test_ddim_is_euler_on_linear),
		cmocka_unit_test(test_batch_independent),
		cmocka_unit_test(test_refusals),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
