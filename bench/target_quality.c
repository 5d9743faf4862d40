/* bench/target-quality: how close each training-target estimator comes to
 * the ideal target E[x0 | x_t] over the whole Fashion-MNIST training set,
 * per noise level t, on SiT's linear path with the velocity target:
 * the plain single-sample target (stf with n = 1), STF with n = 256 and
 * 4096, KNN with k = 16, 64 and 512. The estimators run through their
 * plugins' losses (the target read back from the gradient of a zero model
 * output); the exact target is a softmax over all 60000 items, its
 * distances from sgemm and those near the top recomputed in double.
 * Prints a markdown table; writes a line plot (log10 MSE against t) as PNG.
 * Usage: bench/target-quality [OUT.png]  (not a test: tens of seconds). */
#include "config.h"
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "diffuse/io.h"
#include "diffuse/process.h"
#include "diffuse/rng.h"
#include "diffuse/runtime.h"
#include "diffuse/tensor.h"
#include "plot.h"

#define SIDE 32
#define D (SIDE * SIDE)
#define PER_T 16
#define SEED 1
#define STEP 0

static const double grid_t[] = {0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95};
#define NT (int)(sizeof grid_t / sizeof grid_t[0])
#define Q (NT * PER_T)

static const struct estimator {
	const char *label, *name, *settings;
	uint8_t rgb[3];
} estimators[] = {
	{"single sample", "stf", "reference=1", {0, 0, 0}},
	{"STF n=256", "stf", "reference=256", {230, 120, 0}},
	{"STF n=4096", "stf", "reference=4096", {200, 0, 0}},
	{"KNN k=16", "knn", "neighbours=16", {120, 170, 255}},
	{"KNN k=64", "knn", "neighbours=64", {0, 90, 230}},
	{"KNN k=512", "knn", "neighbours=512", {0, 0, 120}},
	{"KNN k=512, 256 draws", "knn", "neighbours=512;draws=256", {0, 160, 0}},
};
#define NE (int)(sizeof estimators / sizeof estimators[0])

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static float *items;
static int64_t count;

static int fetch_items(void *ctx, const int64_t *indices, int64_t n, float *out, df_error *err)
{
	(void)ctx, (void)err;
	for (int64_t i = 0; i < n; i++)
		memcpy(out + i * D, items + indices[i] * D, sizeof(float) * D);
	return 0;
}

static int fail(const char *what, const df_error *err)
{
	fprintf(stderr, "target-quality: %s: %s\n", what, err->msg);
	return 1;
}

typedef struct capture {
	float *xt;
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

static void *settings_of(const df_component *comp, const char *kv, df_error *err)
{
	void *values = calloc(1, comp->settings_size);
	char buf[128];
	snprintf(buf, sizeof buf, "%s", kv);
	if (!values || df_settings_defaults(comp->settings, values, err))
		return NULL;
	for (char *save = NULL, *pair = strtok_r(buf, ";", &save); pair; pair = strtok_r(NULL, ";", &save)) {
		char *eq = strchr(pair, '=');
		if (!eq)
			continue;
		*eq = '\0';
		if (df_settings_set(comp->settings, values, pair, eq + 1, err))
			return NULL;
	}
	return values;
}

/* The estimator's targets for the queries: x0 sources, index noise keys. */
static int run_estimator(df_ctx *ctx, df_registry *reg, const struct estimator *e, const float *x0,
                         const int64_t *index, float *target, float *xt, float *t, double *seconds, df_error *err)
{
	const df_component_info *info = df_registry_find(reg, DF_KIND_OBJECTIVE, e->name);
	if (!info)
		return df_error_set(err, DF_EINVAL, "no objective %s", e->name);
	char kv[160];
	snprintf(kv, sizeof kv, "%s", e->settings);
	const df_component *comp = info->component;
	void *values = settings_of(comp, kv, err);
	if (!values)
		return DF_EINVAL;
	df_settings_set(comp->settings, values, "parameterisation", "velocity", err);
	const df_objective_vtable *vt = comp->vtable;
	void *self = NULL;
	int rc = vt->create(values, ctx, &self, err);
	df_settings_release(comp->settings, values);
	free(values);
	if (rc)
		return rc;
	const df_objective_dataset_hook *hook = vt->extension(self, DF_OBJECTIVE_DATASET_ACCESS);
	df_dataset_access access = {sizeof access, count, D, fetch_items, NULL};
	df_params *params = df_params_create(ctx);
	capture cap = {xt, df_params_add(params, "out", DF_SHAPE(Q, 1, SIDE, SIDE), 0)};
	df_graph *g = df_graph_create(ctx, 0);
	rc = hook->attach(self, &access, err);
	if (!rc)
		rc = df_params_finalize(params, err);
	if (!rc) {
		float *zeros = calloc((size_t)Q * D, sizeof *zeros);
		rc = df_tensor_write(cap.out, zeros, err);
		free(zeros);
	}
	df_tensor *loss = NULL;
	double start = now();
	if (!rc) {
		df_params_zero_grad(params);
		df_loss_batch batch = {sizeof batch, df_tensor_from_host(g, x0, 4, (int64_t[]){Q, 1, SIDE, SIDE}), NULL,
		                       SEED, STEP, index, NULL, t, NULL};
		df_model_call call = {sizeof call, model_forward, &cap};
		rc = vt->loss(self, g, &batch, &call, &loss, err);
	}
	*seconds = now() - start;
	if (!rc)
		rc = df_backward(g, loss, err);
	if (!rc)
		rc = df_tensor_read_grad(cap.out, target, err);
	for (int64_t i = 0; !rc && i < (int64_t)Q * D; i++)
		target[i] *= -(float)Q * D / 2.0f;
	df_graph_destroy(g);
	df_params_destroy(params);
	vt->destroy(self);
	return rc;
}

/* The exact ideal velocity target of each query over the whole set. */
static void exact_targets(const df_process *p, const float *xt, const float *t, float *target)
{
	enum { BLOCK = 4096 };
	float *norms = malloc(sizeof(float) * (size_t)count), *dots = malloc(sizeof(float) * BLOCK);
	float *logw = malloc(sizeof(float) * (size_t)count);
	double *acc = malloc(sizeof(double) * D);
	for (int64_t i = 0; i < count; i++)
		norms[i] = cblas_sdot(D, items + i * D, 1, items + i * D, 1);
	for (int q = 0; q < Q; q++) {
		df_coeffs c;
		df_process_coeffs(p, t[q], &c);
		const float *x = xt + (int64_t)q * D;
		double a = c.alpha, scale = 1.0 / (2 * c.sigma * c.sigma), xn = cblas_sdot(D, x, 1, x, 1), top = -INFINITY;
		for (int64_t at = 0; at < count; at += BLOCK) {
			int m = (int)(count - at < BLOCK ? count - at : BLOCK);
			cblas_sgemv(CblasRowMajor, CblasNoTrans, m, D, 1.0f, items + at * D, D, x, 1, 0.0f, dots, 1);
			for (int i = 0; i < m; i++) {
				logw[at + i] = (float)(-(xn + a * a * norms[at + i] - 2 * a * dots[i]) * scale);
				top = logw[at + i] > top ? logw[at + i] : top;
			}
		}
		/* near the top, in double from the vectors; far below it the weight is nil */
		double total = 0, best = -INFINITY;
		memset(acc, 0, sizeof(double) * D);
		for (int pass = 0; pass < 2; pass++)
			for (int64_t i = 0; i < count; i++) {
				if (logw[i] < top - 80)
					continue;
				double dist = 0;
				for (int j = 0; j < D; j++) {
					double e = x[j] - a * items[i * D + j];
					dist += e * e;
				}
				double l = -dist * scale;
				if (pass == 0) {
					best = l > best ? l : best;
					continue;
				}
				double w = exp(l - best);
				total += w;
				for (int j = 0; j < D; j++)
					acc[j] += w * items[i * D + j];
			}
		double cx, ce;
		df_coeffs_target(&c, DF_PRED_VELOCITY, &cx, &ce);
		for (int j = 0; j < D; j++) {
			double x0 = acc[j] / total;
			target[(int64_t)q * D + j] = (float)(cx * x0 + ce * (x[j] - a * x0) / c.sigma);
		}
	}
	free(norms);
	free(dots);
	free(logw);
	free(acc);
}

/* log10 MSE against t, one polyline per estimator, gridlines per decade. */
static int plot(const char *path, double mse[NE][NT], df_error *err)
{
	double logs[NE][NT], lo = INFINITY, hi = -INFINITY;
	for (int e = 0; e < NE; e++)
		for (int i = 0; i < NT; i++) {
			logs[e][i] = log10(mse[e][i] > 1e-12 ? mse[e][i] : 1e-12);
			lo = logs[e][i] < lo ? logs[e][i] : lo;
			hi = logs[e][i] > hi ? logs[e][i] : hi;
		}
	lo = floor(lo);
	hi = ceil(hi);
	bench_axes axes = {.x_lo = 0, .x_hi = 1, .x_ticks = 10, .y_lo = lo, .y_hi = hi > lo ? hi : lo + 1, .y_grid = 1};
	bench_series series[NE];
	for (int e = 0; e < NE; e++) {
		series[e] = (bench_series){.x = grid_t, .y = logs[e], .n = NT};
		memcpy(series[e].rgb, estimators[e].rgb, 3);
	}
	int rc = bench_plot(path, &axes, series, NE, err);
	if (!rc)
		printf("\nplot: %s (log10 MSE from 1e%g to 1e%g, t from 0 to 1)\n", path, lo, hi);
	return rc;
}

int main(int argc, char **argv)
{
	const char *png = argc > 1 ? argv[1] : "target-quality.png";
	df_error err;
	df_ctx *ctx;
	df_registry *reg;
	if (df_ctx_create(&ctx, "cpu", 2, &err) || df_registry_create(&reg, &err) ||
	    df_registry_load_path(reg, DF_BUILD_PLUGIN_PATH, NULL, &err))
		return fail("setup", &err);
	/* the training set, as the pipelines see it: padded to 32x32, in [-1, 1] */
	const df_component_info *info = df_registry_find(reg, DF_KIND_DATASET, "fashion-mnist");
	if (!info)
		return fail("fashion-mnist", &(df_error){.msg = "no such dataset plugin"});
	const df_dataset_vtable *dvt = info->component->vtable;
	void *settings = settings_of(info->component, "pad_to=32", &err), *ds = NULL;
	if (!settings || dvt->open(settings, &ds, &err))
		return fail("fashion-mnist", &err);
	df_dataset_info di;
	dvt->info(ds, &di);
	count = di.count;
	items = malloc(sizeof(float) * (size_t)count * D);
	int64_t *all = malloc(sizeof(int64_t) * (size_t)count);
	int32_t *labels = malloc(sizeof(int32_t) * (size_t)count);
	for (int64_t i = 0; i < count; i++)
		all[i] = i;
	if (dvt->fetch(ds, all, count, items, labels, &err))
		return fail("fashion-mnist", &err);
	/* queries: noise keys whose drawn t is on the grid, sources drawn from the set */
	int64_t index[Q];
	float *x0 = malloc(sizeof(float) * Q * D);
	for (int g = 0, q = 0; g < NT; g++)
		for (int64_t key = 0, found = 0; found < PER_T; key++) {
			double u;
			df_process_train_draws(SEED, STEP, &key, 1, 0, &u, NULL);
			if (fabs(u - grid_t[g]) > 2e-4)
				continue;
			index[q] = key;
			int64_t src = df_rng_u32(SEED, 0x71756572u, 0, (uint64_t)q) % (uint64_t)count;
			memcpy(x0 + (int64_t)q * D, items + src * D, sizeof(float) * D);
			q++, found++;
		}
	float *target = malloc(sizeof(float) * Q * D), *exact = malloc(sizeof(float) * Q * D);
	float *xt = malloc(sizeof(float) * Q * D), *xt0 = malloc(sizeof(float) * Q * D), t[Q];
	double mse[NE][NT], seconds[NE];
	df_process *p;
	if (df_process_create_path(&p, DF_PATH_LINEAR, DF_PRED_VELOCITY, 0, 0, &err))
		return fail("process", &err);
	for (int e = 0; e < NE; e++) {
		if (run_estimator(ctx, reg, &estimators[e], x0, index, target, e ? xt : xt0, t, &seconds[e], &err))
			return fail(estimators[e].label, &err);
		if (e == 0)
			exact_targets(p, xt0, t, exact);
		else if (memcmp(xt, xt0, sizeof(float) * Q * D) != 0)
			return fail(estimators[e].label, &(df_error){.msg = "a different x_t"});
		for (int g = 0; g < NT; g++) {
			double s = 0;
			for (int q = g * PER_T; q < (g + 1) * PER_T; q++)
				for (int j = 0; j < D; j++) {
					double dv = target[(int64_t)q * D + j] - exact[(int64_t)q * D + j];
					s += dv * dv;
				}
			mse[e][g] = s / (PER_T * D);
		}
	}
	printf("MSE per value against the exact ideal velocity target (%d queries per t, %lld training items)\n\n",
	       PER_T, (long long)count);
	printf("| t |");
	for (int e = 0; e < NE; e++)
		printf(" %s |", estimators[e].label);
	printf("\n|---|");
	for (int e = 0; e < NE; e++)
		printf("---|");
	printf("\n");
	for (int g = 0; g < NT; g++) {
		printf("| %.2f |", grid_t[g]);
		for (int e = 0; e < NE; e++)
			printf(" %.3g |", mse[e][g]);
		printf("\n");
	}
	printf("| s per %d-query batch |", Q);
	for (int e = 0; e < NE; e++)
		printf(" %.2f |", seconds[e]);
	printf("\n");
	int rc = plot(png, mse, &err) ? fail("plot", &err) : 0;
	df_process_destroy(p);
	dvt->close(ds);
	df_settings_release(info->component->settings, settings);
	free(settings);
	df_registry_destroy(reg);
	df_ctx_destroy(ctx);
	return rc;
}
