/* Pitfalls of sampling code (doc/pitfalls.md), checked on every sampler
 * and every process the built plugins offer, so a sampler, a spacing or an
 * objective added later is covered without editing this file:
 *   - the evaluation times of every spacing run from noise to data without
 *     a repeated grid point, and the NFE a sampler reports is the number of
 *     model calls it made (adaptive ones included);
 *   - SDE samplers reach the end point finite, or refuse the process;
 *   - sample i does not depend on the batch it is drawn in, and samplers
 *     that add no noise do not depend on the seed;
 *   - every sampler setting changes the samples, every objective setting
 *     the process or the loss, or is refused;
 *   - every objective asks the backbone for the channels its process
 *     reads (2C only with learned variance).
 * The model is the exact denoiser of data N(mu, s^2) per value, in the
 * process's prediction type, so every run is a meaningful integration. */
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

#define DIM 16
#define MAX_BATCH 8
#define MAX_EVALS 200000
#define MAX_PROCESSES 64
#define DATA_MEAN 0.5
#define DATA_VAR 0.36

static df_ctx *ctx;
static df_registry *reg;

/* The processes: one objective instance per variant of every objective. */
typedef struct process_entry {
	const df_objective_vtable *vt;
	void *self;
	const df_process *p;
	char label[160];
} process_entry;
static process_entry processes[MAX_PROCESSES];
static int n_processes;

/* ------------------------------------------------------------------ */
/* Settings as "name=value;name=value". */

static int apply_settings(const df_component *comp, void *values, const char *settings, df_error *err)
{
	int rc = df_settings_defaults(comp->settings, values, err);
	char buf[512];
	snprintf(buf, sizeof buf, "%s", settings ? settings : "");
	for (char *save = NULL, *kv = strtok_r(buf, ";", &save); kv && !rc; kv = strtok_r(NULL, ";", &save)) {
		char *eq = strchr(kv, '=');
		assert_non_null(eq);
		*eq = '\0';
		rc = df_settings_set(comp->settings, values, kv, eq + 1, err);
	}
	return rc;
}

static void add_process(const df_component *comp, const char *settings)
{
	if (n_processes == MAX_PROCESSES)
		return;
	df_error err;
	void *values = calloc(1, comp->settings_size + 1);
	assert_non_null(values);
	process_entry *e = &processes[n_processes];
	e->vt = comp->vtable;
	int rc = apply_settings(comp, values, settings, &err);
	if (!rc)
		rc = e->vt->create(values, ctx, &e->self, &err);
	df_settings_release(comp->settings, values);
	free(values);
	if (rc)
		return; /* a combination the objective refuses is not a process */
	e->p = e->vt->process ? e->vt->process(e->self) : NULL;
	if (!e->p) {
		e->vt->destroy(e->self);
		return;
	}
	/* the same process from another setting (a loss weight) adds nothing */
	double lo, hi;
	df_process_interval(e->p, DF_INTERVAL_SAMPLE, &lo, &hi);
	for (int i = 0; i < n_processes; i++) {
		const df_process *q = processes[i].p;
		double qlo, qhi;
		df_process_interval(q, DF_INTERVAL_SAMPLE, &qlo, &qhi);
		if (!strcmp(df_process_name(q), df_process_name(e->p)) &&
		    df_process_prediction(q) == df_process_prediction(e->p) &&
		    df_process_learned_variance(q) == df_process_learned_variance(e->p) && qlo == lo && qhi == hi) {
			e->vt->destroy(e->self);
			return;
		}
	}
	snprintf(e->label, sizeof e->label, "%s{%s} (%s, %s%s)", comp->name, settings, df_process_name(e->p),
	         df_prediction_name(df_process_prediction(e->p)), df_process_learned_variance(e->p) ? ", learned" : "");
	n_processes++;
}

/* Every objective with its defaults, with each other choice of each of its
 * choice settings, and with sample_eps = 0 (the end point itself) where
 * it has that setting. */
static void collect_processes(void)
{
	for (size_t i = 0; i < df_registry_count(reg); i++) {
		const df_component *comp = df_registry_get(reg, i)->component;
		if (comp->kind != DF_KIND_OBJECTIVE)
			continue;
		add_process(comp, "");
		int has_eps = df_settings_find(comp->settings, "sample_eps") != NULL;
		for (const df_setting *s = comp->settings; s && s->name; s++) {
			for (int k = 0; s->choices && s->choices[k]; k++) {
				char kv[160];
				if (s->default_value && strcmp(s->choices[k], s->default_value) == 0)
					continue;
				snprintf(kv, sizeof kv, "%s=%s", s->name, s->choices[k]);
				add_process(comp, kv);
				if (has_eps) {
					snprintf(kv, sizeof kv, "%s=%s;sample_eps=0", s->name, s->choices[k]);
					add_process(comp, kv);
				}
			}
		}
		if (has_eps)
			add_process(comp, "sample_eps=0");
	}
}

static int setup(void **state)
{
	(void)state;
	df_error err;
	if (df_ctx_create(&ctx, "cpu", 1, &err) || df_registry_create(&reg, &err) ||
	    df_registry_load_path(reg, DF_TEST_PLUGIN_PATH, NULL, &err)) {
		fprintf(stderr, "setup: %s\n", err.msg);
		return -1;
	}
	collect_processes();
	fprintf(stderr, "%d processes from the objectives:\n", n_processes);
	for (int i = 0; i < n_processes; i++)
		fprintf(stderr, "  %s\n", processes[i].label);
	return n_processes >= 3 ? 0 : -1;
}

static int teardown(void **state)
{
	(void)state;
	for (int i = 0; i < n_processes; i++)
		processes[i].vt->destroy(processes[i].self);
	df_registry_destroy(reg);
	df_ctx_destroy(ctx);
	return 0;
}

/* ------------------------------------------------------------------ */
/* The model and one sampling run. */

typedef struct recorder {
	const df_process *p;
	int64_t evals;
	double *times; /* MAX_EVALS */
} recorder;

static int exact_eval(void *vctx, df_graph *g, df_tensor *x, double t, df_tensor **out, df_error *err)
{
	recorder *r = vctx;
	if (r->evals < MAX_EVALS)
		r->times[r->evals] = t;
	r->evals++;
	int64_t n = x->shape[0], dim = x->numel / n;
	int learned = df_process_learned_variance(r->p);
	int64_t out_dim = learned ? 2 * dim : dim;
	float xh[MAX_BATCH * DIM], oh[MAX_BATCH * 2 * DIM];
	assert_true(n <= MAX_BATCH && dim == DIM);
	if (df_tensor_read(x, xh, err))
		return DF_EINVAL;
	/* a network knows only the times it was trained at: where the target
	 * is infinite (a velocity at t = 0 on VP), it answers the nearest one */
	double train_lo, train_hi;
	df_process_interval(r->p, DF_INTERVAL_TRAIN, &train_lo, &train_hi);
	df_coeffs c;
	df_process_coeffs(r->p, t < train_lo ? train_lo : t > train_hi ? train_hi : t, &c);
	double cx0, ceps;
	df_coeffs_target(&c, df_process_prediction(r->p), &cx0, &ceps);
	double den = c.alpha * c.alpha * DATA_VAR + c.sigma * c.sigma;
	for (int64_t i = 0; i < n; i++)
		for (int64_t j = 0; j < dim; j++) {
			double v = xh[i * dim + j];
			double x0 = (c.alpha * DATA_VAR * v + c.sigma * c.sigma * DATA_MEAN) / den;
			double eps = c.sigma * (v - c.alpha * DATA_MEAN) / den;
			oh[i * out_dim + j] = (float)(cx0 * x0 + ceps * eps);
			if (learned)
				oh[i * out_dim + dim + j] = 0.0f;
		}
	*out = df_tensor_from_host(g, oh, 4, (const int64_t[]){n, learned ? 2 : 1, 4, 4});
	return df_graph_status(g, err);
}

typedef struct run {
	int rc;
	int stage;                /* where it stopped: 0 settings/create, 1 check, 2 sample, 3 done */
	char msg[512];
	float x[MAX_BATCH * DIM];
	int64_t nfe, evals;
} run;

static double *times_buf;

/* Samples rows first..first+n of a standard noise batch (noise keyed by
 * row) with the sampler `comp` under settings. */
static void sample_rows(const df_component *comp, const char *settings, const df_process *p, int64_t first,
                        int64_t n, uint64_t seed, run *out)
{
	df_error err = {0};
	memset(out, 0, sizeof *out);
	const df_sampler_vtable *vt = comp->vtable;
	void *values = calloc(1, comp->settings_size + 1), *self = NULL;
	assert_non_null(values);
	out->rc = apply_settings(comp, values, settings, &err);
	if (!out->rc)
		out->rc = vt->create(values, ctx, &self, &err);
	df_settings_release(comp->settings, values);
	free(values);
	if (!out->rc && (out->stage = 1) && !(out->rc = vt->check(self, p, &err))) {
		out->stage = 2;
		int64_t index[MAX_BATCH];
		float noise[MAX_BATCH * DIM];
		for (int64_t i = 0; i < n; i++)
			index[i] = first + i;
		df_rng_fill_normal(noise, (size_t)(n * DIM), 1234, 7, 0, (uint64_t)first * DIM);
		df_graph *g = df_graph_create(ctx, DF_GRAPH_NO_GRAD);
		df_sample_job job = {sizeof job, df_tensor_from_host(g, noise, 4, (const int64_t[]){n, 1, 4, 4}), seed,
		                     index, 0};
		recorder r = {p, 0, times_buf};
		df_denoiser den = {sizeof den, exact_eval, &r};
		out->rc = vt->sample(self, p, &den, &job, &err);
		if (!out->rc) {
			out->stage = 3;
			assert_int_equal(df_tensor_read(job.x, out->x, &err), 0);
		}
		out->nfe = job.nfe;
		out->evals = r.evals;
		df_graph_destroy(g);
	}
	if (self)
		vt->destroy(self);
	if (out->rc)
		snprintf(out->msg, sizeof out->msg, "%s", err.msg);
}

/* Finite and of the data's size: data N(0.5, 0.36) has no value near 100,
 * so larger ones come from dividing by a coefficient that is (nearly) 0. */
static int all_finite(const float *x, int64_t n)
{
	for (int64_t i = 0; i < n; i++)
		if (!(fabsf(x[i]) < 100.0f))
			return 0;
	return 1;
}

/* Model evaluations per step of a fixed-grid sampler: two for the Heun
 * family (predictor and corrector), one for the others. */
static int evals_per_step(const char *sampler)
{
	return strstr(sampler, "heun") ? 2 : 1;
}

static int is_sampler(size_t i, const df_component **comp)
{
	*comp = df_registry_get(reg, i)->component;
	return (*comp)->kind == DF_KIND_SAMPLER;
}

/* The declared setting's bounds, for a step count that fits them. */
static int64_t clamp_to(const df_setting *s, int64_t v)
{
	if (!s)
		return v;
	return v < (int64_t)s->min ? (int64_t)s->min : v > (int64_t)s->max ? (int64_t)s->max : v;
}

/* ------------------------------------------------------------------ */

/* Every spacing of every sampler, on every process, at step counts from 1
 * to 100: the times run from noise to data, no grid point twice, and the
 * reported NFE is the number of calls. */
static void test_every_spacing_monotone(void **state)
{
	(void)state;
	static const int64_t step_counts[] = {1, 2, 3, 10, 100};
	int failures = 0;
	static run r;
	for (size_t i = 0; i < df_registry_count(reg); i++) {
		const df_component *comp;
		if (!is_sampler(i, &comp))
			continue;
		const df_setting *spacing = df_settings_find(comp->settings, "spacing");
		const df_setting *steps = df_settings_find(comp->settings, "steps");
		static const char *const no_choice[] = {NULL, NULL};
		const char *const *choices = spacing && spacing->choices ? spacing->choices : no_choice;
		int repeat_max = evals_per_step(comp->name);
		for (int k = 0; k == 0 || choices[k]; k++) {
			int accepted = 0;
			for (int pi = 0; pi < n_processes; pi++)
				for (size_t si = 0; si < sizeof step_counts / sizeof step_counts[0]; si++) {
					char settings[128] = "";
					int64_t n_steps = clamp_to(steps, step_counts[si]);
					int len = 0;
					if (steps)
						len = snprintf(settings, sizeof settings, "steps=%lld;", (long long)n_steps);
					if (choices[k])
						snprintf(settings + len, sizeof settings - (size_t)len, "spacing=%s", choices[k]);
					sample_rows(comp, settings, processes[pi].p, 0, 2, 5, &r);
					if (r.rc && r.stage < 2)
						continue; /* refused up front: fine */
					accepted++;
					const char *why = NULL;
					double lo, hi;
					df_process_interval(processes[pi].p, DF_INTERVAL_SAMPLE, &lo, &hi);
					if (r.rc)
						why = r.msg;
					else if (r.nfe != r.evals)
						why = "reported NFE is not the number of model calls";
					else if (!all_finite(r.x, 2 * DIM))
						why = "non-finite or exploded samples";
					else if (r.evals > MAX_EVALS)
						why = "too many evaluations to record";
					int64_t distinct = r.evals > 0, run_length = 1;
					/* adaptive solvers revisit times after a rejected step: only the count is checked */
					for (int64_t e = 1; !why && steps && e < r.evals; e++) {
						double a = times_buf[e - 1], b = times_buf[e];
						if (b > a || b > hi || a < 0)
							why = "evaluation times go back up or leave the interval";
						else if (b == a && ++run_length > repeat_max)
							why = "a grid point repeated (a step of length zero)";
						else if (b < a)
							distinct++, run_length = 1;
					}
					if (!why && steps && distinct < n_steps - 1)
						why = "fewer distinct evaluation times than steps";
					if (why) {
						fprintf(stderr, "FAIL %s {%s} on %s: %s (NFE %lld, calls %lld, distinct %lld)\n",
						        comp->name, settings, processes[pi].label, why, (long long)r.nfe,
						        (long long)r.evals, (long long)distinct);
						failures++;
					}
				}
			if (!accepted) {
				fprintf(stderr, "FAIL %s: spacing %s is refused on every process and step count\n", comp->name,
				        choices[k] ? choices[k] : "(none)");
				failures++;
			}
			if (!choices[k])
				break;
		}
	}
	assert_int_equal(failures, 0);
}

/* Every diffusion form and last step of every SDE sampler on every
 * process: refused by check(), or finite at the end point. */
static void test_sde_end_point_finite(void **state)
{
	(void)state;
	int failures = 0, runs = 0;
	static run r;
	for (size_t i = 0; i < df_registry_count(reg); i++) {
		const df_component *comp;
		if (!is_sampler(i, &comp))
			continue;
		const df_setting *form = df_settings_find(comp->settings, "diffusion_form");
		const df_setting *last = df_settings_find(comp->settings, "last_step");
		if (!form || !form->choices)
			continue;
		for (int f = 0; form->choices[f]; f++)
			for (int l = 0; last && last->choices && last->choices[l]; l++)
				for (int pi = 0; pi < n_processes; pi++) {
					char settings[160];
					snprintf(settings, sizeof settings, "steps=50;diffusion_form=%s;last_step=%s", form->choices[f],
					         last->choices[l]);
					sample_rows(comp, settings, processes[pi].p, 0, 4, 9, &r);
					if (r.rc && r.stage < 2)
						continue;
					runs++;
					if (r.rc || !all_finite(r.x, 4 * DIM) || r.nfe != r.evals) {
						fprintf(stderr, "FAIL %s {%s} on %s: %s\n", comp->name, settings, processes[pi].label,
						        r.rc ? r.msg : r.nfe != r.evals ? "NFE is not the number of calls" : "non-finite or exploded");
						failures++;
					}
				}
	}
	fprintf(stderr, "%d SDE runs reached the end point\n", runs);
	assert_true(runs > 0);
	assert_int_equal(failures, 0);
}

/* Bit for bit, except for adaptive solvers: their step size follows an
 * error norm over the whole batch (one time for all samples, as in
 * torchdiffeq), so a sample moves within the tolerance with its batch. */
static int same_samples(const char *sampler, const float *a, const float *b, int64_t n)
{
	if (strcmp(sampler, "dopri5"))
		return memcmp(a, b, sizeof(float) * (size_t)n) == 0;
	for (int64_t i = 0; i < n; i++)
		if (!(fabs(a[i] - b[i]) <= 1e-2))
			return 0;
	return 1;
}

/* Sample i is the same drawn alone or inside a larger batch, for every
 * sampler with its defaults and on every process it takes. */
static void test_sample_independent_of_batch(void **state)
{
	(void)state;
	int failures = 0, compared = 0;
	static run all, part;
	for (size_t i = 0; i < df_registry_count(reg); i++) {
		const df_component *comp;
		if (!is_sampler(i, &comp))
			continue;
		for (int pi = 0; pi < n_processes; pi++) {
			sample_rows(comp, "", processes[pi].p, 0, MAX_BATCH, 3, &all);
			if (all.rc)
				continue;
			sample_rows(comp, "", processes[pi].p, 3, 2, 3, &part);
			compared++;
			if (part.rc || !same_samples(comp->name, part.x, all.x + 3 * DIM, 2 * DIM)) {
				fprintf(stderr, "FAIL %s on %s: samples 3 and 4 change with the batch\n", comp->name,
				        processes[pi].label);
				failures++;
			}
		}
	}
	assert_true(compared > 0);
	assert_int_equal(failures, 0);
}

/* Samplers that add no noise give the same samples under any seed (no
 * random numbers drawn and thrown away); the stochastic ones do depend on
 * it, which shows the comparison can fail. */
static void test_seed_only_where_noise_is_added(void **state)
{
	(void)state;
	static const struct {
		const char *sampler, *settings;
		int stochastic;
	} cases[] = {
		{"euler", "", 0}, {"heun", "", 0}, {"dopri5", "", 0}, {"dpm-solver++", "", 0}, {"ddim", "eta=0", 0},
		{"ddim", "eta=1", 1}, {"ddpm", "", 1}, {"euler-maruyama", "", 1}, {"sde-heun", "", 1},
	};
	static run a, b;
	int failures = 0;
	for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
		const df_component_info *info = df_registry_find(reg, DF_KIND_SAMPLER, cases[k].sampler);
		assert_non_null(info);
		int ran = 0;
		for (int pi = 0; pi < n_processes; pi++) {
			sample_rows(info->component, cases[k].settings, processes[pi].p, 0, 4, 11, &a);
			if (a.rc)
				continue;
			sample_rows(info->component, cases[k].settings, processes[pi].p, 0, 4, 12, &b);
			assert_int_equal(b.rc, 0);
			ran++;
			int same = memcmp(a.x, b.x, sizeof(float) * 4 * DIM) == 0;
			if (same == cases[k].stochastic) {
				fprintf(stderr, "FAIL %s {%s} on %s: %s\n", cases[k].sampler, cases[k].settings, processes[pi].label,
				        same ? "the seed does not change a stochastic sampler" : "the seed changes a sampler that adds no noise");
				failures++;
			}
		}
		assert_true(ran > 0);
	}
	assert_int_equal(failures, 0);
}

/* Values to try for a setting other than its default. */
static int alternatives(const df_setting *s, char out[][64], int max)
{
	int n = 0;
	double def = s->default_value ? atof(s->default_value) : 0;
	switch (s->type) {
	case DF_SETTING_STRING:
		for (int k = 0; s->choices && s->choices[k] && n < max; k++)
			if (!s->default_value || strcmp(s->choices[k], s->default_value))
				snprintf(out[n++], 64, "%s", s->choices[k]);
		break;
	case DF_SETTING_BOOL:
		snprintf(out[n++], 64, "%s", s->default_value && strcmp(s->default_value, "true") == 0 ? "false" : "true");
		break;
	case DF_SETTING_INT:
		if (s->min != def)
			snprintf(out[n++], 64, "%lld", (long long)s->min);
		if (def + 1 <= s->max)
			snprintf(out[n++], 64, "%lld", (long long)(def + 1));
		break;
	case DF_SETTING_FLOAT: {
		double v = def != 0 ? def * 0.5 : (s->max < 1 ? s->max : 0.5);
		if (v < s->min || v > s->max)
			v = s->min;
		snprintf(out[n++], 64, "%.17g", v);
		if (def * 2 <= s->max && def != 0)
			snprintf(out[n++], 64, "%.17g", def * 2);
		/* the ends of a bounded range: a sentinel default (-1 = "the paper's") has no neighbour */
		if (s->max < 1e6 && s->max != def && n < max)
			snprintf(out[n++], 64, "%.17g", s->max);
		break;
	}
	default:
		break;
	}
	return n;
}

/* Tries every other value of every setting of comp: each other choice
 * must have an effect (changes(comp, "name=value", arg) non-zero), a
 * number at one of the values tried. Returns the failures. */
static int settings_matter(const df_component *comp, int (*changes)(const df_component *, const char *, void *),
                           void *arg, int *tried)
{
	int failures = 0;
	for (const df_setting *s = comp->settings; s && s->name; s++) {
		char values[8][64];
		int n = alternatives(s, values, 8), any = 0;
		int numeric = s->type == DF_SETTING_INT || s->type == DF_SETTING_FLOAT;
		for (int v = 0; v < n; v++) {
			char settings[128];
			snprintf(settings, sizeof settings, "%s=%s", s->name, values[v]);
			int effect = changes(comp, settings, arg);
			(*tried)++;
			any |= effect;
			if (!effect && (!numeric || v == n - 1) && !any) {
				fprintf(stderr, "FAIL %s %s: %s changes nothing and is not refused\n", df_kind_name(comp->kind),
				        comp->name, settings);
				failures++;
			}
		}
	}
	return failures;
}

/* A sampler's settings change its samples on some process the defaults
 * run on (base: the default runs), or are refused there. */
static int sampler_changes(const df_component *comp, const char *settings, void *arg)
{
	const run *base = arg;
	static run alt;
	for (int pi = 0; pi < n_processes; pi++) {
		if (base[pi].rc)
			continue;
		sample_rows(comp, settings, processes[pi].p, 0, 4, 21, &alt);
		if (alt.rc != 0 || memcmp(alt.x, base[pi].x, sizeof(float) * 4 * DIM) != 0)
			return 1;
	}
	return 0;
}

/* Every setting of every sampler is honoured or refused: changing it from
 * its default, on some process the defaults run on, changes the samples
 * or is an error. */
static void test_every_sampler_setting_matters(void **state)
{
	(void)state;
	int failures = 0, tried = 0;
	static run base[MAX_PROCESSES];
	for (size_t i = 0; i < df_registry_count(reg); i++) {
		const df_component *comp;
		if (!is_sampler(i, &comp))
			continue;
		for (int pi = 0; pi < n_processes; pi++)
			sample_rows(comp, "", processes[pi].p, 0, 4, 21, &base[pi]);
		failures += settings_matter(comp, sampler_changes, base, &tried);
	}
	assert_true(tried > 0);
	assert_int_equal(failures, 0);
}

/* ------------------------------------------------------------------ */
/* Objectives: what a setting can change is the process (coefficients,
 * intervals, prediction, channels) and the loss of a batch. */

enum { OBJ_BATCH = 8, OBJ_ITEMS = 64 };

/* A model call that answers 0.5 x_t in every prediction channel and 0.1
 * in the variance ones, whatever the objective asks for. */
static int half_model(void *vctx, df_graph *g, df_tensor *x_t, df_tensor *t, int hidden_block, df_tensor **hidden,
                      df_tensor **out, df_error *err)
{
	(void)t;
	(void)hidden_block;
	(void)hidden;
	const int *out_c = vctx;
	int64_t n = x_t->shape[0], c = x_t->shape[1], plane = x_t->numel / (n * c);
	float xh[OBJ_BATCH * DIM], oh[OBJ_BATCH * 2 * DIM];
	assert_true(n <= OBJ_BATCH && c * plane == DIM && *out_c <= 2 * c);
	if (df_tensor_read(x_t, xh, err))
		return DF_EINVAL;
	for (int64_t i = 0; i < n; i++)
		for (int64_t k = 0; k < *out_c * plane; k++)
			oh[i * *out_c * plane + k] = k < c * plane ? 0.5f * xh[i * c * plane + k] : 0.1f;
	*out = df_tensor_from_host(g, oh, 4, (const int64_t[]){n, *out_c, x_t->shape[2], x_t->shape[3]});
	return df_graph_status(g, err);
}

/* The training set an objective may ask for: item i is a fixed pattern. */
static int fetch_items(void *vctx, const int64_t *indices, int64_t n, float *out, df_error *err)
{
	(void)vctx;
	(void)err;
	for (int64_t i = 0; i < n; i++)
		for (int64_t j = 0; j < DIM; j++)
			out[i * DIM + j] = (float)sin(0.7 * (double)indices[i] + 0.3 * (double)j);
	return DF_OK;
}

/* An objective that reads the backbone's hidden states (repa) cannot run on
 * this harness's bare model call; tests/test_repa checks its settings. */
enum { NEEDS_BACKBONE = -1 };

/* Everything observable of an objective under settings, as bytes;
 * returns the status of the first step that refused. */
static int objective_fingerprint(const df_component *comp, const char *settings, double *fp, size_t *len)
{
	df_error err;
	void *values = calloc(1, comp->settings_size + 1), *self = NULL;
	assert_non_null(values);
	const df_objective_vtable *vt = comp->vtable;
	int rc = apply_settings(comp, values, settings, &err);
	if (!rc)
		rc = vt->create(values, ctx, &self, &err);
	df_settings_release(comp->settings, values);
	free(values);
	if (rc)
		return rc;
	if (vt->extension && vt->extension(self, DF_OBJECTIVE_MODEL_ACCESS)) {
		vt->destroy(self);
		return NEEDS_BACKBONE;
	}
	size_t k = 0;
	const df_process *p = vt->process ? vt->process(self) : NULL;
	int out_c = vt->out_channels(self, 1);
	fp[k++] = out_c;
	if (p) {
		double lo, hi;
		fp[k++] = df_process_prediction(p);
		fp[k++] = df_process_T(p);
		for (int which = 0; which < 2; which++) {
			df_process_interval(p, which ? DF_INTERVAL_SAMPLE : DF_INTERVAL_TRAIN, &lo, &hi);
			fp[k++] = lo;
			fp[k++] = hi;
		}
		for (double t = 0.137; t < 1; t += 0.25) {
			df_coeffs c;
			df_process_coeffs(p, t, &c);
			fp[k++] = c.alpha;
			fp[k++] = c.sigma;
			fp[k++] = df_process_model_time(p, t);
		}
	}
	const df_objective_dataset_hook *hook =
		vt->extension ? vt->extension(self, DF_OBJECTIVE_DATASET_ACCESS) : NULL;
	df_dataset_access access = {sizeof access, OBJ_ITEMS, DIM, fetch_items, NULL};
	if (hook)
		rc = hook->attach(self, &access, &err);
	if (!rc) {
		float x0[OBJ_BATCH * DIM], t_out[OBJ_BATCH], loss_out[OBJ_BATCH], total = 0;
		int64_t index[OBJ_BATCH];
		int32_t y[OBJ_BATCH];
		for (int i = 0; i < OBJ_BATCH; i++)
			index[i] = 5 + 3 * i, y[i] = i % 2;
		assert_int_equal(fetch_items(NULL, index, OBJ_BATCH, x0, &err), 0);
		df_graph *g = df_graph_create(ctx, 0);
		df_loss_batch batch = {sizeof batch, df_tensor_from_host(g, x0, 4, (const int64_t[]){OBJ_BATCH, 1, 4, 4}), y,
		                       7, 11, index, NULL, t_out, loss_out};
		df_model_call call = {sizeof call, half_model, &out_c};
		df_tensor *loss = NULL;
		rc = vt->loss(self, g, &batch, &call, &loss, &err);
		if (!rc && !(rc = df_tensor_read(loss, &total, &err))) {
			fp[k++] = total;
			for (int i = 0; i < OBJ_BATCH; i++)
				fp[k++] = t_out[i], fp[k++] = loss_out[i];
		}
		df_graph_destroy(g);
	}
	vt->destroy(self);
	*len = k * sizeof *fp;
	return rc;
}

typedef struct fingerprint {
	double v[128];
	size_t len;
} fingerprint;

static int objective_changes(const df_component *comp, const char *settings, void *arg)
{
	const fingerprint *base = arg;
	fingerprint alt;
	int rc = objective_fingerprint(comp, settings, alt.v, &alt.len);
	return rc != 0 || alt.len != base->len || memcmp(alt.v, base->v, base->len) != 0;
}

/* Every setting of every objective is honoured or refused: another value
 * changes its process, its channels or the loss of a batch, or is an
 * error. */
static void test_every_objective_setting_matters(void **state)
{
	(void)state;
	int failures = 0, tried = 0;
	for (size_t i = 0; i < df_registry_count(reg); i++) {
		const df_component *comp = df_registry_get(reg, i)->component;
		if (comp->kind != DF_KIND_OBJECTIVE || !comp->settings || !comp->settings[0].name)
			continue; /* nothing to set (a classifier's cross-entropy) */
		fingerprint base;
		int rc = objective_fingerprint(comp, "", base.v, &base.len);
		if (rc == NEEDS_BACKBONE) {
			fprintf(stderr, "skip %s: it needs a backbone's hidden states\n", comp->name);
			continue;
		}
		if (rc) {
			fprintf(stderr, "FAIL %s: its defaults are refused on the test batch\n", comp->name);
			failures++;
			continue;
		}
		failures += settings_matter(comp, objective_changes, &base, &tried);
	}
	fprintf(stderr, "%d objective setting values tried\n", tried);
	assert_true(tried > 0);
	assert_int_equal(failures, 0);
}

/* The backbone makes the channels the objective's process reads: C, or 2C
 * with learned variance (flow objectives never ask for DiT's extra ones). */
static void test_output_channels_follow_the_objective(void **state)
{
	(void)state;
	for (int pi = 0; pi < n_processes; pi++) {
		const process_entry *e = &processes[pi];
		int want = df_process_learned_variance(e->p) ? 8 : 4;
		if (e->vt->out_channels(e->self, 4) != want) {
			print_error("%s: asks for %d channels of 4-channel data, its process reads %d\n", e->label,
			            e->vt->out_channels(e->self, 4), want);
			fail();
		}
		assert_int_equal(df_process_out_channels(e->p, 4), want);
	}
}

int main(void)
{
	times_buf = malloc(sizeof(double) * MAX_EVALS);
	if (!times_buf)
		return 1;
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_every_spacing_monotone),
		cmocka_unit_test(test_sde_end_point_finite),
		cmocka_unit_test(test_sample_independent_of_batch),
		cmocka_unit_test(test_seed_only_where_noise_is_added),
		cmocka_unit_test(test_every_sampler_setting_matters),
		cmocka_unit_test(test_every_objective_setting_matters),
		cmocka_unit_test(test_output_channels_follow_the_objective),
	};
	int rc = cmocka_run_group_tests(tests, setup, teardown);
	free(times_buf);
	return rc;
}
