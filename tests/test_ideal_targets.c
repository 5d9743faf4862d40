/* The ideal-target objectives (stf, knn), loaded as plugins, on a tiny data
 * set where the exact ideal target E[x0 | x_t] over all items is computed
 * here by brute force: STF with n = 1 is the plain single-sample target and
 * with the whole set as reference the exact one; KNN with k = 1 is the
 * nearest item's target and with k = N the exact one, and its importance-
 * sampling estimate from many draws converges to it. The target is read
 * back from the loss gradient (the model output is a parameter at zero:
 * d loss / d out = -2 target / (N D)), which also checks that a finite
 * gradient reaches the model. Without the training set the loss refuses. */
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

#define N 12
#define SIDE 4
#define D (SIDE * SIDE)

static float data[N * D];
static int64_t fetched; /* items handed out through the access */

static int setup(void **state)
{
	(void)state;
	if (registry_open())
		return -1;
	/* a few clusters, so neighbours matter: items near one of three centres */
	for (int i = 0; i < N; i++)
		for (int j = 0; j < D; j++)
			data[i * D + j] = 0.6f * (float)((i % 3) - 1) + 0.3f * (2 * df_rng_uniform(7, 1, 0, i * D + j) - 1);
	return 0;
}

static int fetch_items(void *vctx, const int64_t *indices, int64_t n, float *out, df_error *err)
{
	(void)vctx;
	for (int64_t i = 0; i < n; i++) {
		if (indices[i] < 0 || indices[i] >= N)
			return df_error_set(err, DF_EINVAL, "index %lld out of range", (long long)indices[i]);
		memcpy(out + i * D, data + indices[i] * D, sizeof(float) * D);
	}
	fetched += n;
	return 0;
}

static const df_dataset_access access = {sizeof access, N, D, fetch_items, NULL};

typedef struct objective {
	const df_objective_vtable *vt;
	void *self;
	const df_process *p;
} objective;

/* settings: "name=value;..." */
static void make_objective(const char *name, const char *settings, int attach, objective *o)
{
	df_error err;
	const df_component *comp = registry_component(DF_KIND_OBJECTIVE, name);
	void *values = registry_settings(comp, settings);
	o->vt = comp->vtable;
	assert_int_equal(o->vt->create(values, ctx, &o->self, &err), 0);
	registry_settings_free(comp, values);
	o->p = o->vt->process(o->self);
	assert_non_null(o->vt->extension);
	const df_objective_dataset_hook *hook = o->vt->extension(o->self, DF_OBJECTIVE_DATASET_ACCESS);
	assert_non_null(hook);
	if (attach)
		assert_int_equal(hook->attach(o->self, &access, &err), 0);
}

typedef struct capture {
	float xt[N * D];
	df_tensor *out;
} capture;

static int model_forward(void *vctx, df_graph *g, df_tensor *x_t, df_tensor *t, int hidden_block, df_tensor **hidden,
                         df_tensor **out, df_error *err)
{
	(void)g, (void)t, (void)hidden_block, (void)hidden;
	capture *c = vctx;
	*out = c->out;
	return df_tensor_read(x_t, c->xt, err);
}

/* One loss on the whole set as the batch at `step`: the targets (from the
 * gradient), the noisy inputs and the times. */
static void targets_of(objective *o, uint64_t step, float *target, float *xt, float *t)
{
	df_error err;
	df_params *params = df_params_create(ctx);
	capture cap;
	cap.out = df_params_add(params, "out", DF_SHAPE(N, 1, SIDE, SIDE), 0);
	assert_int_equal(df_params_finalize(params, &err), 0);
	float zeros[N * D] = {0};
	assert_int_equal(df_tensor_write(cap.out, zeros, &err), 0);
	df_params_zero_grad(params);
	df_graph *g = df_graph_create(ctx, 0);
	int64_t index[N];
	for (int i = 0; i < N; i++)
		index[i] = i;
	df_loss_batch batch = {sizeof batch, df_tensor_from_host(g, data, 4, (int64_t[]){N, 1, SIDE, SIDE}), NULL, 11,
	                       step, index, NULL, t, NULL};
	df_model_call call = {sizeof call, model_forward, &cap};
	df_tensor *loss;
	assert_int_equal(o->vt->loss(o->self, g, &batch, &call, &loss, &err), 0);
	assert_int_equal(df_backward(g, loss, &err), 0);
	float grad[N * D];
	assert_int_equal(df_tensor_read_grad(cap.out, grad, &err), 0);
	for (int i = 0; i < N * D; i++) {
		assert_true(isfinite(grad[i]));
		target[i] = -grad[i] * (float)(N * D) / 2.0f;
	}
	memcpy(xt, cap.xt, sizeof cap.xt);
	df_graph_destroy(g);
	df_params_destroy(params);
}

/* The target of sample i with x0 estimated as the softmax over the items
 * `use` (NULL: all), by brute force in double; only = -1 for all, else the
 * single item `only`. */
static void reference_target(const df_process *p, double t, const float *xt, int only, double *target)
{
	df_coeffs c;
	df_process_coeffs(p, t, &c);
	double logw[N], top = -INFINITY, x0[D] = {0}, total = 0;
	for (int i = 0; i < N; i++) {
		double dist = 0;
		for (int j = 0; j < D; j++)
			dist += (xt[j] - c.alpha * data[i * D + j]) * (xt[j] - c.alpha * data[i * D + j]);
		logw[i] = only >= 0 && i != only ? -INFINITY : -dist / (2 * c.sigma * c.sigma);
		top = logw[i] > top ? logw[i] : top;
	}
	for (int i = 0; i < N; i++) {
		double w = exp(logw[i] - top);
		total += w;
		for (int j = 0; j < D; j++)
			x0[j] += w * data[i * D + j];
	}
	double cx, ce;
	df_coeffs_target(&c, df_process_prediction(p), &cx, &ce);
	for (int j = 0; j < D; j++) {
		x0[j] /= total;
		target[j] = cx * x0[j] + ce * (xt[j] - c.alpha * x0[j]) / c.sigma;
	}
}

static int nearest(const df_process *p, double t, const float *xt)
{
	df_coeffs c;
	df_process_coeffs(p, t, &c);
	int best = 0;
	double best_dist = INFINITY;
	for (int i = 0; i < N; i++) {
		double dist = 0;
		for (int j = 0; j < D; j++)
			dist += (xt[j] / c.alpha - data[i * D + j]) * (xt[j] / c.alpha - data[i * D + j]);
		if (dist < best_dist)
			best_dist = dist, best = i;
	}
	return best;
}

enum which { SOURCE, NEAREST, ALL };

/* Checks every sample's target of a few steps against the reference; returns
 * how many samples had a target other than their own plain one (so the
 * comparison with the exact target is not vacuous). */
static int check_within(const char *name, const char *settings, enum which which, double tol)
{
	objective o;
	make_objective(name, settings, 1, &o);
	int differs = 0;
	for (uint64_t step = 0; step < 6; step++) {
		float target[N * D], xt[N * D], t[N];
		targets_of(&o, step, target, xt, t);
		for (int i = 0; i < N; i++) {
			df_coeffs c;
			df_process_coeffs(o.p, t[i], &c);
			if (c.sigma < 1e-3 || c.alpha < 1e-3)
				continue; /* edge of the interval: checked by the limit tests in process */
			double want[D], plain[D];
			int only = which == SOURCE ? i : which == NEAREST ? nearest(o.p, t[i], xt + i * D) : -1;
			reference_target(o.p, t[i], xt + i * D, only, want);
			reference_target(o.p, t[i], xt + i * D, i, plain);
			double err = 0, scale = 0, off = 0;
			for (int j = 0; j < D; j++) {
				err = fmax(err, fabs(target[i * D + j] - want[j]));
				scale = fmax(scale, fabs(want[j]));
				off = fmax(off, fabs(want[j] - plain[j]));
			}
			if (err > tol * (1 + scale))
				fprintf(stderr, "%s %s: sample %d at t = %.4f: target off by %g (scale %g)\n", name, settings,
				        i, t[i], err, scale);
			assert_true(err <= tol * (1 + scale));
			differs += off > 1e-2;
		}
	}
	o.vt->destroy(o.self);
	return differs;
}

static int check(const char *name, const char *settings, enum which which)
{
	return check_within(name, settings, which, 2e-3);
}

static void test_stf_one_reference_is_plain(void **state)
{
	(void)state;
	check("stf", "reference=1", SOURCE);
	check("stf", "reference=1;parameterisation=velocity", SOURCE);
}

static void test_stf_whole_set_is_exact(void **state)
{
	(void)state;
	/* the batch is the whole set: a reference of N items is all of it */
	fetched = 0;
	assert_true(check("stf", "reference=12", ALL) > 0);
	assert_true(check("stf", "reference=12;parameterisation=velocity", ALL) > 0);
	assert_int_equal(fetched, 0);
	/* beyond the batch the reference is topped up from the set */
	objective o;
	make_objective("stf", "reference=40", 1, &o);
	float target[N * D], xt[N * D], t[N];
	targets_of(&o, 0, target, xt, t);
	assert_int_equal(fetched, 40 - N);
	o.vt->destroy(o.self);
}

static void test_knn_nearest_and_whole_set(void **state)
{
	(void)state;
	check("knn", "neighbours=1", NEAREST);
	check("knn", "neighbours=1;parameterisation=eps", NEAREST);
	assert_true(check("knn", "neighbours=12", ALL) > 0);
	assert_true(check("knn", "neighbours=12;parameterisation=eps", ALL) > 0);
	assert_true(check("knn", "neighbours=1000", ALL) > 0); /* more than the set: all of it */
}

/* The importance-sampling estimate from the proposal's draws converges to
 * the exact target: many draws with every item a neighbour, and with few
 * neighbours (the uniform part of the proposal reaching the rest). */
static void test_knn_draws_converge(void **state)
{
	(void)state;
	assert_true(check_within("knn", "neighbours=12;draws=100000", ALL, 2e-2) > 0);
	assert_true(check_within("knn", "neighbours=3;draws=100000", ALL, 2e-2) > 0);
}

static void test_needs_the_training_set(void **state)
{
	(void)state;
	const char *names[] = {"stf", "knn"};
	for (int k = 0; k < 2; k++) {
		objective o;
		make_objective(names[k], "", 0, &o);
		df_error err;
		df_graph *g = df_graph_create(ctx, 0);
		int64_t index[N] = {0};
		df_loss_batch batch = {sizeof batch, df_tensor_from_host(g, data, 4, (int64_t[]){N, 1, SIDE, SIDE}),
		                       NULL, 1, 0, index, NULL, NULL, NULL};
		capture cap = {{0}, NULL};
		df_model_call call = {sizeof call, model_forward, &cap};
		df_tensor *loss = NULL;
		assert_int_not_equal(o.vt->loss(o.self, g, &batch, &call, &loss, &err), 0);
		assert_non_null(strstr(err.msg, "training set"));
		df_graph_destroy(g);
		o.vt->destroy(o.self);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_stf_one_reference_is_plain),
		cmocka_unit_test(test_stf_whole_set_is_exact),
		cmocka_unit_test(test_knn_nearest_and_whole_set),
		cmocka_unit_test(test_knn_draws_converge),
		cmocka_unit_test(test_needs_the_training_set),
	};
	return cmocka_run_group_tests(tests, setup, registry_teardown);
}
