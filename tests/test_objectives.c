/* The objectives, loaded as plugins: the loss of the ideal model of
 * Gaussian data is the irreducible one, a wrong model's is higher; the
 * hybrid loss matches a hand computation from the spec's formulas and its
 * VB term trains only the variance channels; draws are keyed per sample. */
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

#define DATA_MEAN 0.5
#define DATA_VAR 0.36
#define BATCH 64
#define SIDE 16
#define DIM (SIDE * SIDE)

typedef struct objective {
	const df_objective_vtable *vt;
	void *self;
	const df_process *p;
} objective;

/* settings: "name=value;..." */
static int make_objective(const char *name, const char *settings, objective *o, df_error *err)
{
	const df_component *comp = registry_component(DF_KIND_OBJECTIVE, name);
	void *values = registry_settings(comp, settings);
	o->vt = comp->vtable;
	int rc = o->vt->create(values, ctx, &o->self, err);
	registry_settings_free(comp, values);
	if (!rc)
		o->p = o->vt->process(o->self);
	return rc;
}

/* The framework time of a model time. */
static double framework_time(const df_process *p, double model_t)
{
	return df_process_T(p) ? (model_t + 1.0) / df_process_T(p) : 1.0 - model_t;
}

typedef struct test_model {
	const df_process *p;
	double sign;          /* 1: the ideal model, -1: its negation */
	df_tensor *fixed;     /* when set, the model returns this tensor */
	float seen_t[BATCH];  /* the times the model received */
} test_model;

static int model_forward(void *vctx, df_graph *g, df_tensor *x_t, df_tensor *t, int hidden_block, df_tensor **hidden,
                         df_tensor **out, df_error *err)
{
	test_model *m = vctx;
	int64_t n = x_t->shape[0], d = x_t->numel / n;
	assert_int_equal(df_tensor_read(t, m->seen_t, err), 0);
	if (m->fixed) {
		*out = m->fixed;
		return 0;
	}
	float *xh = malloc(sizeof(float) * n * d);
	assert_non_null(xh);
	assert_int_equal(df_tensor_read(x_t, xh, err), 0);
	df_prediction pred = df_process_prediction(m->p);
	for (int64_t i = 0; i < n; i++) {
		df_coeffs c;
		df_process_coeffs(m->p, framework_time(m->p, m->seen_t[i]), &c);
		double pc, qc, den = c.alpha * c.alpha * DATA_VAR + c.sigma * c.sigma;
		df_coeffs_target(&c, pred, &pc, &qc);
		for (int64_t j = 0; j < d; j++) {
			double xv = xh[i * d + j];
			double x0 = (c.alpha * DATA_VAR * xv + c.sigma * c.sigma * DATA_MEAN) / den;
			double eps = c.sigma * (xv - c.alpha * DATA_MEAN) / den;
			double o = pred == DF_PRED_SCORE ? -(xv - c.alpha * DATA_MEAN) / den : pc * x0 + qc * eps;
			xh[i * d + j] = (float)(m->sign * o);
		}
	}
	*out = df_tensor_from_host(g, xh, x_t->ndim, x_t->shape);
	free(xh);
	return df_graph_status(g, err);
}

/* Irreducible loss per value at t: Var(p x0 + q eps | x_t) for the target
 * p x0 + q eps (score: sigma s + eps, i.e. the eps residual). */
static double irreducible(const df_process *p, double t)
{
	df_coeffs c;
	df_process_coeffs(p, t, &c);
	double pc = 0, qc = 1;
	if (df_process_prediction(p) == DF_PRED_VELOCITY)
		df_coeffs_target(&c, DF_PRED_VELOCITY, &pc, &qc);
	double cov = pc * c.alpha * DATA_VAR + qc * c.sigma;
	return pc * pc * DATA_VAR + qc * qc - cov * cov / (c.alpha * c.alpha * DATA_VAR + c.sigma * c.sigma);
}

static double weight_of(const char *settings, const df_process *p, double t)
{
	df_coeffs c;
	df_process_coeffs(p, t, &c);
	double w = df_coeffs_w_sbdm(&c);
	if (strstr(settings, "loss_weight=velocity"))
		return (w / c.sigma) * (w / c.sigma);
	if (strstr(settings, "loss_weight=likelihood"))
		return w / (c.sigma * c.sigma);
	return 1.0;
}

/* Mean over the batch of loss_i / (weight_i * irreducible(t_i)). */
static double loss_ratio(const char *name, const char *settings, double sign)
{
	objective o;
	df_error err;
	if (make_objective(name, settings, &o, &err)) {
		print_error("%s %s: %s\n", name, settings, err.msg);
		fail();
	}
	static float x0h[BATCH * DIM];
	df_rng_fill_normal(x0h, BATCH * DIM, 42, 5, 0, 0);
	for (int i = 0; i < BATCH * DIM; i++)
		x0h[i] = (float)(DATA_MEAN + sqrt(DATA_VAR) * x0h[i]);
	df_graph *g = df_graph_create(ctx, 0);
	int64_t shape[4] = {BATCH, 1, SIDE, SIDE}, index[BATCH];
	for (int i = 0; i < BATCH; i++)
		index[i] = 1000 + 3 * i;
	float t_out[BATCH], loss_out[BATCH];
	df_loss_batch batch = {sizeof batch, df_tensor_from_host(g, x0h, 4, shape), NULL, 7, 11, index, NULL, t_out,
	                       loss_out};
	test_model m = {o.p, sign, NULL, {0}};
	df_model_call call = {sizeof call, model_forward, &m};
	df_tensor *loss = NULL;
	assert_int_equal(o.vt->loss(o.self, g, &batch, &call, &loss, &err), 0);
	double lo, hi, ratio = 0, mean = 0;
	df_process_interval(o.p, DF_INTERVAL_TRAIN, &lo, &hi);
	for (int i = 0; i < BATCH; i++) {
		assert_true(t_out[i] >= lo && t_out[i] <= hi);
		/* the network saw the process's model time of that t */
		assert_true(fabs(m.seen_t[i] - df_process_model_time(o.p, t_out[i])) < 1e-4);
		ratio += loss_out[i] / (weight_of(settings, o.p, t_out[i]) * irreducible(o.p, t_out[i]));
		mean += loss_out[i];
	}
	float total;
	assert_int_equal(df_tensor_read(loss, &total, &err), 0);
	assert_true(fabs(total - mean / BATCH) <= 1e-5 * fabs(total) + 1e-7);
	df_graph_destroy(g);
	o.vt->destroy(o.self);
	return ratio / BATCH;
}

static void test_ideal_model_loss(void **state)
{
	(void)state;
	const char *cases[][2] = {
		{"velocity", "path=linear"}, {"velocity", "path=gvp"}, {"velocity", "path=vp"},
		{"noise", "path=linear"}, {"noise", "path=vp;loss_weight=likelihood"},
		{"score", "path=gvp"}, {"score", "path=linear;loss_weight=velocity"}, {"score", "path=vp"},
		{"ddpm", "schedule=linear"}, {"ddpm", "schedule=cosine"},
	};
	for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
		double ideal = loss_ratio(cases[k][0], cases[k][1], 1.0);
		double wrong = loss_ratio(cases[k][0], cases[k][1], -1.0);
		fprintf(stderr, "  %-8s %-34s ideal/irreducible %.4f, negated model %.2f\n", cases[k][0], cases[k][1],
		        ideal, wrong);
		/* each per-sample ratio is a mean of 256 squared Gaussians (sd 0.09); 64 of them: sd 0.011 */
		assert_true(fabs(ideal - 1.0) < 0.05);
		assert_true(wrong > 1.5);
	}
}

static void test_refusals(void **state)
{
	(void)state;
	objective o;
	df_error err;
	assert_int_equal(make_objective("velocity", "loss_weight=likelihood", &o, &err), DF_EINVAL);
	assert_non_null(strstr(err.msg, "unweighted"));
	assert_int_equal(make_objective("ddpm", "loss=hybrid", &o, &err), 0);
	assert_int_equal(o.vt->out_channels(o.self, 4), 8);
	assert_true(df_process_learned_variance(o.p));
	/* a model with C channels for the hybrid loss's 2C */
	df_graph *g = df_graph_create(ctx, 0);
	float zeros[2 * 4] = {0};
	int64_t index[2] = {0, 1};
	df_loss_batch batch = {sizeof batch, df_tensor_from_host(g, zeros, 4, (int64_t[]){2, 1, 2, 2}), NULL, 1, 0,
	                       index, NULL, NULL, NULL};
	test_model m = {o.p, 1, df_tensor_from_host(g, zeros, 4, (int64_t[]){2, 1, 2, 2}), {0}};
	df_model_call call = {sizeof call, model_forward, &m};
	df_tensor *loss;
	assert_int_equal(o.vt->loss(o.self, g, &batch, &call, &loss, &err), DF_EINVAL);
	assert_non_null(strstr(err.msg, "channels"));
	df_graph_destroy(g);
	o.vt->destroy(o.self);
}

/* ------------------------------------------------------------------ */
/* The hybrid loss by hand (spec §3-§5), for one value at a time. */

static double approx_std_normal_cdf(double z)
{
	return 0.5 * (1.0 + tanh(sqrt(2.0 / M_PI) * (z + 0.044715 * z * z * z)));
}

static double hand_decoder_nll_bits(double x, double mean, double logvar)
{
	double sd = exp(0.5 * logvar);
	double up = approx_std_normal_cdf((x - mean + 1.0 / 255) / sd);
	double down = approx_std_normal_cdf((x - mean - 1.0 / 255) / sd);
	double lp = x < -0.999 ? log(fmax(up, 1e-12)) : x > 0.999 ? log(fmax(1 - down, 1e-12))
	                                                             : log(fmax(up - down, 1e-12));
	return -lp / log(2.0);
}

static double hand_kl_bits(double m1, double lv1, double m2, double lv2)
{
	return 0.5 * (-1.0 + lv2 - lv1 + exp(lv1 - lv2) + (m1 - m2) * (m1 - m2) * exp(-lv2)) / log(2.0);
}

#define HD 2 /* values per sample in the tiny case */

static double hand_hybrid(int t, const float *x0, const float *eps, const float *ehat, const float *v)
{
	double b[1000], abar[1000];
	double cum = 1;
	for (int i = 0; i < 1000; i++) {
		b[i] = 1e-4 + (0.02 - 1e-4) * i / 999.0;
		cum *= 1 - b[i];
		abar[i] = cum;
	}
	double ab = abar[t], ab_prev = t ? abar[t - 1] : 1.0;
	double post_var = b[t] * (1 - ab_prev) / (1 - ab);
	double post_var1 = b[1] * (1 - abar[0]) / (1 - abar[1]);
	double post_logvar = log(t ? post_var : post_var1);
	double c1 = b[t] * sqrt(ab_prev) / (1 - ab), c2 = (1 - ab_prev) * sqrt(1 - b[t]) / (1 - ab);
	double mse = 0, vb = 0;
	for (int j = 0; j < HD; j++) {
		double xt = sqrt(ab) * x0[j] + sqrt(1 - ab) * eps[j];
		double x0_hat = sqrt(1 / ab) * xt - sqrt(1 / ab - 1) * ehat[j];
		double mu_model = c1 * x0_hat + c2 * xt, mu_true = c1 * x0[j] + c2 * xt;
		double frac = (v[j] + 1) / 2;
		double lv_model = frac * log(b[t]) + (1 - frac) * post_logvar;
		mse += (eps[j] - ehat[j]) * (eps[j] - ehat[j]);
		vb += t == 0 ? hand_decoder_nll_bits(x0[j], mu_model, lv_model)
		             : hand_kl_bits(mu_true, post_logvar, mu_model, lv_model);
	}
	return (mse + vb) / HD;
}

static void test_hybrid_by_hand(void **state)
{
	(void)state;
	objective o;
	df_error err;
	assert_int_equal(make_objective("ddpm", "loss=hybrid", &o, &err), 0);
	const uint64_t seed = 3, step = 5;
	/* one sample drawn at t = 0 (decoder NLL), one at t > 0 (KL) */
	int64_t index[2] = {-1, -1};
	for (int64_t i = 0; i < 1000000 && (index[0] < 0 || index[1] < 0); i++) {
		int t = (int)(df_rng_uniform(seed, DF_STREAM_TRAIN_TIME, step, (uint64_t)i) * 1000);
		if (t == 0 && index[0] < 0)
			index[0] = i;
		if (t > 0 && index[1] < 0)
			index[1] = i;
	}
	assert_true(index[0] >= 0 && index[1] >= 0);
	const float x0h[2 * HD] = {0.25f, -0.6f, 0.9f, -1.0f};
	df_params *params = df_params_create(ctx);
	df_tensor *out = df_params_add(params, "out", DF_SHAPE(2, 2, 1, HD), 0);
	assert_int_equal(df_params_finalize(params, &err), 0);
	/* per sample: eps_hat (HD values), then v (HD values) */
	const float outh[2 * 2 * HD] = {0.3f, -0.2f, 0.5f, -0.7f, -1.1f, 0.4f, 0.2f, 0.9f};
	assert_int_equal(df_tensor_write(out, outh, &err), 0);
	df_params_zero_grad(params);
	df_graph *g = df_graph_create(ctx, 0);
	float t_out[2], loss_out[2];
	df_loss_batch batch = {sizeof batch, df_tensor_from_host(g, x0h, 4, (int64_t[]){2, 1, 1, HD}), NULL, seed, step,
	                       index, NULL, t_out, loss_out};
	test_model m = {o.p, 1, out, {0}};
	df_model_call call = {sizeof call, model_forward, &m};
	df_tensor *loss;
	assert_int_equal(o.vt->loss(o.self, g, &batch, &call, &loss, &err), 0);
	float eps[2 * HD];
	for (int i = 0; i < 2; i++)
		df_rng_fill_normal(eps + i * HD, HD, seed, DF_STREAM_TRAIN_NOISE, step, (uint64_t)index[i] * HD);
	for (int i = 0; i < 2; i++) {
		int t = (int)lrint(t_out[i] * 1000) - 1;
		assert_int_equal(t, i == 0 ? 0 : (int)(df_rng_uniform(seed, DF_STREAM_TRAIN_TIME, step, index[1]) * 1000));
		assert_true(m.seen_t[i] == (float)t); /* the integer index itself */
		double want = hand_hybrid(t, x0h + i * HD, eps + i * HD, outh + i * 2 * HD, outh + i * 2 * HD + HD);
		fprintf(stderr, "  t = %3d: loss %.7f, by hand %.7f\n", t, loss_out[i], want);
		assert_true(fabs(loss_out[i] - want) <= 1e-4 * fabs(want));
	}
	/* The VB term sees a frozen mean: the gradient of the eps channels is
	 * the MSE's alone, 2 (eps_hat - eps) / (HD N), and the v channels get one. */
	assert_int_equal(df_backward(g, loss, &err), 0);
	float grad[2 * 2 * HD];
	assert_int_equal(df_tensor_read_grad(out, grad, &err), 0);
	for (int i = 0; i < 2; i++)
		for (int j = 0; j < HD; j++) {
			double want = 2.0 * (outh[i * 2 * HD + j] - eps[i * HD + j]) / (HD * 2);
			assert_true(fabs(grad[i * 2 * HD + j] - want) <= 1e-5 + 1e-4 * fabs(want));
			assert_true(grad[i * 2 * HD + HD + j] != 0.0f);
		}
	df_graph_destroy(g);
	df_params_destroy(params);
	o.vt->destroy(o.self);
}

/* A sample's draws do not depend on which batch it is in. */
static void test_draws_per_sample(void **state)
{
	(void)state;
	objective o;
	df_error err;
	assert_int_equal(make_objective("velocity", "path=gvp", &o, &err), 0);
	float x0h[4 * DIM];
	df_rng_fill_normal(x0h, 4 * DIM, 42, 5, 0, 0);
	float loss_a[4], loss_b[2], t_a[4], t_b[2];
	int64_t index_a[4] = {10, 11, 12, 13}, index_b[2] = {12, 13};
	df_graph *g = df_graph_create(ctx, 0);
	test_model m = {o.p, 1, NULL, {0}};
	df_model_call call = {sizeof call, model_forward, &m};
	df_tensor *loss;
	df_loss_batch a = {sizeof a, df_tensor_from_host(g, x0h, 4, (int64_t[]){4, 1, SIDE, SIDE}), NULL, 1, 2, index_a,
	                   NULL, t_a, loss_a};
	assert_int_equal(o.vt->loss(o.self, g, &a, &call, &loss, &err), 0);
	df_loss_batch b = {sizeof b, df_tensor_from_host(g, x0h + 2 * DIM, 4, (int64_t[]){2, 1, SIDE, SIDE}), NULL, 1,
	                   2, index_b, NULL, t_b, loss_b};
	assert_int_equal(o.vt->loss(o.self, g, &b, &call, &loss, &err), 0);
	assert_memory_equal(t_a + 2, t_b, sizeof t_b);
	assert_memory_equal(loss_a + 2, loss_b, sizeof loss_b);
	/* another step draws anew */
	b.step = 3;
	assert_int_equal(o.vt->loss(o.self, g, &b, &call, &loss, &err), 0);
	assert_true(t_b[0] != t_a[2]);
	df_graph_destroy(g);
	o.vt->destroy(o.self);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ideal_model_loss),
		cmocka_unit_test(test_refusals),
		cmocka_unit_test(test_hybrid_by_hand),
		cmocka_unit_test(test_draws_per_sample),
	};
	return cmocka_run_group_tests(tests, registry_setup, registry_teardown);
}
