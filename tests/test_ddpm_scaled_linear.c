/* LDM's scaled_linear beta schedule in the ddpm objective, loaded as a
 * plugin: its betas and cumulative alphas against the closed form
 * beta_i = (sqrt(start) + i / (T - 1) (sqrt(end) - sqrt(start)))^2 and
 * against check values computed in float64 from the LDM formula; the
 * samplers take its process like any other DDPM schedule and, given the
 * exact denoiser of Gaussian data, reproduce that data's mean and variance. */
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

#define T_STEPS 1000
#define BATCH 64
#define SIDE 8
#define DIM (SIDE * SIDE)
#define DATA_MEAN 0.5
#define DATA_VAR 0.36

typedef struct component {
	const df_component *comp;
	void *self;
} component;

/* A component of `kind` created from "name=value;..." settings. */
static int make_component(df_kind kind, const char *name, const char *settings, component *c, df_error *err)
{
	c->comp = registry_component(kind, name);
	void *values = registry_settings(c->comp, settings);
	int rc = kind == DF_KIND_SAMPLER
	             ? ((const df_sampler_vtable *)c->comp->vtable)->create(values, ctx, &c->self, err)
	             : ((const df_objective_vtable *)c->comp->vtable)->create(values, ctx, &c->self, err);
	registry_settings_free(c->comp, values);
	return rc;
}

static void destroy_objective(component *c)
{
	((const df_objective_vtable *)c->comp->vtable)->destroy(c->self);
}

static const df_process *objective_process(component *c)
{
	return ((const df_objective_vtable *)c->comp->vtable)->process(c->self);
}

static void assert_rel(double got, double want, double rel)
{
	if (!(fabs(got - want) <= rel * fabs(want))) {
		print_error("got %.12g, want %.12g (relative tolerance %g)\n", got, want, rel);
		fail();
	}
}

/* Every beta of the process against the closed form, and the cumulative
 * product against a product taken here. */
static df_ddpm_step steps[T_STEPS];

static void check_closed_form(const df_process *p, double start, double end)
{
	int all[T_STEPS];
	for (int i = 0; i < T_STEPS; i++)
		all[i] = i;
	df_error err;
	assert_int_equal(df_process_T(p), T_STEPS);
	assert_int_equal(df_ddpm_steps(p, all, T_STEPS, steps, &err), 0);
	const double *abar = df_process_alphas_cumprod(p);
	double cum = 1;
	for (int i = 0; i < T_STEPS; i++) {
		double root = sqrt(start) + (double)i / (T_STEPS - 1) * (sqrt(end) - sqrt(start));
		assert_rel(steps[i].beta, root * root, 1e-12);
		cum *= 1 - root * root;
		assert_rel(abar[i], cum, 1e-12);
	}
}

static void test_schedule_values(void **state)
{
	(void)state;
	component o;
	df_error err;
	assert_int_equal(make_component(DF_KIND_OBJECTIVE, "ddpm", "schedule=scaled_linear", &o, &err), 0);
	const df_process *p = objective_process(&o);
	check_closed_form(p, 0.00085, 0.012);
	/* float64 values of the LDM formula (numpy: linspace(sqrt(s), sqrt(e), 1000) ** 2) */
	const double *abar = df_process_alphas_cumprod(p);
	assert_rel(abar[0], 0.99915, 1e-12);
	assert_rel(abar[499], 0.27766965045646763, 1e-9);
	assert_rel(abar[999], 0.004660098513077238, 1e-9);
	/* the posterior variances of the full schedule (check_closed_form filled steps) */
	assert_rel(steps[1].post_var, 0.00042635312564883403, 1e-9);
	assert_rel(steps[500].beta, 0.00481495414171188, 1e-12);
	assert_rel(steps[999].post_var, 0.01199931761537886, 1e-9);
	/* far from DiT's linear schedule, which ends at abar = 4.04e-5 */
	assert_true(abar[999] > 100 * 4.04e-5);
	assert_non_null(strstr(df_process_name(p), "scaled_linear"));
	destroy_objective(&o);

	/* the class-conditional ImageNet LDM's range */
	assert_int_equal(
	    make_component(DF_KIND_OBJECTIVE, "ddpm", "schedule=scaled_linear;linear_start=0.0015;linear_end=0.0195",
	                   &o, &err),
	    0);
	check_closed_form(objective_process(&o), 0.0015, 0.0195);
	assert_rel(df_process_alphas_cumprod(objective_process(&o))[999], 0.00014230397519201791, 1e-9);
	destroy_objective(&o);
}

static void test_refusals(void **state)
{
	(void)state;
	component o;
	df_error err;
	assert_int_equal(
	    make_component(DF_KIND_OBJECTIVE, "ddpm", "schedule=scaled_linear;linear_start=0.02;linear_end=0.01", &o,
	                   &err),
	    DF_EINVAL);
	assert_non_null(strstr(err.msg, "linear_start"));
	/* the range belongs to scaled_linear: with another schedule it is a mistake, not ignored */
	assert_int_equal(make_component(DF_KIND_OBJECTIVE, "ddpm", "schedule=linear;linear_end=0.0195", &o, &err),
	                 DF_EINVAL);
	assert_non_null(strstr(err.msg, "scaled_linear"));
}

/* The exact denoiser of N(DATA_MEAN, DATA_VAR) data, as eps prediction:
 * E[eps | x_t] = sigma (x - alpha mu) / (alpha^2 s^2 + sigma^2). */
static int gauss_eval(void *vctx, df_graph *g, df_tensor *x, double t, df_tensor **out, df_error *err)
{
	const df_process *p = vctx;
	float h[BATCH * DIM];
	assert_int_equal(x->numel, BATCH * DIM);
	assert_int_equal(df_tensor_read(x, h, err), 0);
	df_coeffs c;
	df_process_coeffs(p, t, &c);
	double den = c.alpha * c.alpha * DATA_VAR + c.sigma * c.sigma;
	for (int64_t i = 0; i < BATCH * DIM; i++)
		h[i] = (float)(c.sigma * (h[i] - c.alpha * DATA_MEAN) / den);
	*out = df_tensor_from_host(g, h, x->ndim, x->shape);
	return df_graph_status(g, err);
}

static void test_samplers_run_on_it(void **state)
{
	(void)state;
	component o;
	df_error err;
	assert_int_equal(make_component(DF_KIND_OBJECTIVE, "ddpm", "schedule=scaled_linear", &o, &err), 0);
	const df_process *p = objective_process(&o);
	const char *cases[][2] = {
		{"ddpm", "steps=250"}, {"ddim", "steps=100"}, {"dpm-solver++", "steps=20"}, {"euler", "steps=100"}};
	int failures = 0;
	for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
		component s;
		assert_int_equal(make_component(DF_KIND_SAMPLER, cases[k][0], cases[k][1], &s, &err), 0);
		const df_sampler_vtable *vt = s.comp->vtable;
		assert_int_equal(vt->check(s.self, p, &err), 0);
		static float x[BATCH * DIM];
		int64_t index[BATCH];
		for (int i = 0; i < BATCH; i++)
			index[i] = i;
		df_rng_fill_normal(x, BATCH * DIM, 1234, 7, 0, 0);
		df_graph *g = df_graph_create(ctx, DF_GRAPH_NO_GRAD);
		int64_t shape[4] = {BATCH, 1, SIDE, SIDE};
		df_sample_job job = {sizeof job, df_tensor_from_host(g, x, 4, shape), 99, index, 0};
		df_denoiser den = {sizeof den, gauss_eval, (void *)p};
		assert_int_equal(vt->sample(s.self, p, &den, &job, &err), 0);
		assert_int_equal(df_tensor_read(job.x, x, &err), 0);
		double sum = 0, sq = 0;
		for (int i = 0; i < BATCH * DIM; i++)
			sum += x[i];
		double mean = sum / (BATCH * DIM);
		for (int i = 0; i < BATCH * DIM; i++)
			sq += (x[i] - mean) * (x[i] - mean);
		double var = sq / (BATCH * DIM - 1);
		/* standard errors 0.009 (mean) and 0.008 (variance): five of them */
		int ok = fabs(mean - DATA_MEAN) < 0.05 && fabs(var - DATA_VAR) < 0.04;
		fprintf(stderr, "%s %-13s %-10s mean %.4f var %.4f nfe %lld\n", ok ? "  ok" : "FAIL", cases[k][0],
		        cases[k][1], mean, var, (long long)job.nfe);
		failures += !ok;
		df_graph_destroy(g);
		vt->destroy(s.self);
	}
	destroy_objective(&o);
	assert_int_equal(failures, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_schedule_values),
	    cmocka_unit_test(test_refusals),
	    cmocka_unit_test(test_samplers_run_on_it),
	};
	return cmocka_run_group_tests(tests, registry_setup, registry_teardown);
}
