/* The nearest-neighbour estimator of the ideal target (Niedoba et al., ICML
 * 2024): the posterior mean E[x0 | x_t] under the training set's empirical
 * distribution is a softmax over all N items; it is estimated from the k
 * items nearest to the rescaled noisy input x_t / alpha, where nearly all
 * of the posterior's mass lies, self-normalised over them:
 *   x0_hat = sum_{i in kNN} softmax_i(-|x_t - alpha x_i|^2 / (2 sigma^2)) x_i.
 * This is the paper's importance-sampling estimate in its expectation over
 * the proposal's neighbour part (draws = 0); with draws > 0 it is the
 * paper's estimate itself: items drawn from the proposal (the neighbours
 * plus a uniform part over the whole set), self-normalised. With k = N and
 * draws = 0 it is the exact ideal target. The search is exact: squared
 * distances |a|^2 + |b|^2 - 2 a.b with blocked BLAS products over the whole
 * training set, held in memory in model space; the final weights are
 * recomputed in double from the vectors. */
#include "config.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "diffuse/plugin.h"
#include "diffuse/rng.h"
#include "ideal_target.h"

#define KNN_BLOCK 4096       /* training items per distance product */
#define KNN_STREAM 0x6b6e6eu /* the proposal's draws */

typedef struct knn_settings {
	const char *parameterisation;
	int64_t neighbours;
	int64_t limit;
	int64_t draws;
} knn_settings;

static const df_setting knn_settings_decl[] = {
	DF_SETTING_CHOICE(knn_settings, parameterisation, "velocity", ideal_parameterisations,
	                  "target the backbone learns: eps (DDPM, linear betas, T = 1000) or velocity (linear path)"),
	DF_SETTING_INT(knn_settings, neighbours, "64", 1, 1 << 24, "k: nearest training items the estimate averages"),
	DF_SETTING_INT(knn_settings, limit, "0", 0, INT64_MAX,
	               "search only the first `limit` training items (0 = all; the set is held as float in memory)"),
	DF_SETTING_INT(knn_settings, draws, "0", 0, 1 << 20,
	               "items drawn from the paper's proposal (the neighbours plus a uniform part) for the "
	               "importance-sampling estimate; 0 = the neighbours themselves, softmax-weighted"),
	DF_SETTINGS_END,
};

typedef struct knn_objective {
	ideal_base base;
	int64_t k, limit, draws;
	int64_t count, dim; /* the searched set */
	float *items, *norms;
	df_objective_dataset_hook hook;
	df_objective_timer search_timer; /* the exact search, for the training log */
} knn_objective;

static void knn_destroy(void *self)
{
	knn_objective *o = self;
	if (!o)
		return;
	ideal_base_destroy(&o->base);
	free(o->items);
	free(o->norms);
	free(o);
}

static int knn_attach(void *self, const df_dataset_access *access, df_error *err)
{
	knn_objective *o = self;
	if (!access || access->struct_size < sizeof *access || access->count < 1 || access->dim < 1 || !access->fetch)
		return df_error_set(err, DF_EINVAL, "knn: the dataset access is incomplete");
	int64_t count = o->limit > 0 && o->limit < access->count ? o->limit : access->count;
	free(o->items);
	free(o->norms);
	o->items = malloc(sizeof(float) * (size_t)(count * access->dim));
	o->norms = malloc(sizeof(float) * (size_t)count);
	int64_t *index = malloc(sizeof(int64_t) * KNN_BLOCK);
	int rc = o->items && o->norms && index ? DF_OK
	                                       : df_error_set(err, DF_ENOMEM, "knn: %lld training items do not fit in "
	                                                      "memory (set limit)", (long long)count);
	for (int64_t at = 0; !rc && at < count; at += KNN_BLOCK) {
		int64_t m = count - at < KNN_BLOCK ? count - at : KNN_BLOCK;
		for (int64_t i = 0; i < m; i++)
			index[i] = at + i;
		rc = access->fetch(access->ctx, index, m, o->items + at * access->dim, err);
	}
	free(index);
	if (rc)
		return df_error_prefix(err, rc, "knn");
	ideal_row_norms(o->items, count, access->dim, o->norms);
	o->count = count;
	o->dim = access->dim;
	o->base.data = *access;
	return DF_OK;
}

static int knn_create(const void *settings, df_ctx *ctx, void **self, df_error *err)
{
	(void)ctx;
	const knn_settings *s = settings;
	knn_objective *o = calloc(1, sizeof *o);
	if (!o)
		return df_error_set(err, DF_ENOMEM, "out of memory");
	int rc = ideal_base_create(&o->base, s->parameterisation, err);
	if (rc) {
		knn_destroy(o);
		return rc;
	}
	o->k = s->neighbours;
	o->limit = s->limit;
	o->draws = s->draws;
	o->hook = (df_objective_dataset_hook){sizeof o->hook, knn_attach};
	o->search_timer = (df_objective_timer){sizeof o->search_timer, "search", 0};
	*self = o;
	return DF_OK;
}

static double seconds_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* A max-heap of the k best (smallest) scores seen so far. */
typedef struct heap {
	float *score;
	int64_t *index;
	int64_t size, cap;
} heap;

static void heap_offer(heap *h, float score, int64_t index)
{
	int64_t i;
	if (h->size < h->cap) {
		i = h->size++;
		while (i > 0 && h->score[(i - 1) / 2] < score) {
			h->score[i] = h->score[(i - 1) / 2];
			h->index[i] = h->index[(i - 1) / 2];
			i = (i - 1) / 2;
		}
	} else {
		if (score >= h->score[0])
			return;
		i = 0;
		for (;;) {
			int64_t c = 2 * i + 1;
			if (c >= h->size)
				break;
			if (c + 1 < h->size && h->score[c + 1] > h->score[c])
				c++;
			if (h->score[c] <= score)
				break;
			h->score[i] = h->score[c];
			h->index[i] = h->index[c];
			i = c;
		}
	}
	h->score[i] = score;
	h->index[i] = index;
}


/* The k nearest items to each x_t / alpha: ranked by alpha^2 |x_i|^2 -
 * 2 alpha x_t.x_i, the same order (alpha > 0) without dividing by alpha.
 * neighbours: n * k indices. Returns 0, or -1 when out of memory. */
static int knn_search(const float *items, const float *norms, int64_t count, const float *xt, const double *alpha, int64_t n,
               int64_t d, int64_t k, int64_t *neighbours)
{
	float *dots = malloc(sizeof(float) * (size_t)(n * KNN_BLOCK));
	float *scores = malloc(sizeof(float) * (size_t)(n * k));
	if (!dots || !scores) {
		free(dots);
		free(scores);
		return -1;
	}
	heap *h = malloc(sizeof *h * (size_t)n);
	for (int64_t q = 0; h && q < n; q++)
		h[q] = (heap){scores + q * k, neighbours + q * k, 0, k};
	for (int64_t at = 0; h && at < count; at += KNN_BLOCK) {
		int64_t m = count - at < KNN_BLOCK ? count - at : KNN_BLOCK;
		ideal_dots(xt, n, items + at * d, m, d, dots);
		for (int64_t q = 0; q < n; q++) {
			float a = (float)alpha[q];
			for (int64_t i = 0; i < m; i++)
				heap_offer(&h[q], a * a * norms[at + i] - 2.0f * a * dots[q * m + i], at + i);
		}
	}
	int rc = h ? 0 : -1;
	free(h);
	free(dots);
	free(scores);
	return rc;
}

/* log-likelihood of x_t under item x: -|x_t - alpha x|^2 / (2 sigma^2), in double. */
static double log_likelihood(const float *xt, const float *x, double alpha, double scale, int64_t d)
{
	double dist = 0;
	for (int64_t j = 0; j < d; j++) {
		double e = xt[j] - alpha * x[j];
		dist += e * e;
	}
	return -dist * scale;
}

/* The paper's estimate (knn.md sections 2-3): draws from the proposal q
 * that gives each neighbour p_i = exp(l_i - max) and every item the k-th
 * neighbour's p_min, normalised by Z = sum p_i + (N - k) p_min; duplicates
 * merged; self-normalised weights c_i / q(i) * exp(l_i). nb_logw holds the
 * neighbours' l_i; the draws are keyed by the sample's index. */
static void snis_estimate(const knn_objective *o, const float *xt, double alpha, double scale, const int64_t *nb,
                          const double *nb_logw, int64_t k, const df_loss_batch *batch, int64_t sample,
                          int64_t *drawn, int64_t *counts, double *logw, const float **refs, float *x0_hat)
{
	double top = -INFINITY, pmin = INFINITY, z = 0, excess = 0;
	for (int64_t i = 0; i < k; i++)
		top = nb_logw[i] > top ? nb_logw[i] : top;
	for (int64_t i = 0; i < k; i++) {
		double p = exp(nb_logw[i] - top);
		pmin = p < pmin ? p : pmin;
		z += p;
	}
	for (int64_t i = 0; i < k; i++)
		excess += exp(nb_logw[i] - top) - pmin;
	z += (double)(o->count - k) * pmin;
	double uniform_mass = (double)o->count * pmin / z;
	uint64_t key = (uint64_t)batch->index[sample] * (uint64_t)(2 * o->draws);
	int64_t m = 0;
	for (int64_t r = 0; r < o->draws; r++) {
		double u = df_rng_uniform(batch->seed, KNN_STREAM, batch->step, key + 2 * (uint64_t)r);
		double v = df_rng_uniform(batch->seed, KNN_STREAM, batch->step, key + 2 * (uint64_t)r + 1);
		int64_t item;
		if (u < uniform_mass || excess <= 0) {
			item = (int64_t)(v * (double)o->count);
			item = item >= o->count ? o->count - 1 : item;
		} else {
			double target = v * excess, run = 0;
			int64_t i = 0;
			for (; i < k - 1; i++) {
				run += exp(nb_logw[i] - top) - pmin;
				if (run > target)
					break;
			}
			item = nb[i];
		}
		int64_t at = 0;
		while (at < m && drawn[at] != item)
			at++;
		if (at == m)
			drawn[m] = item, counts[m++] = 0;
		counts[at]++;
	}
	for (int64_t i = 0; i < m; i++) {
		double q = pmin / z;
		for (int64_t j = 0; j < k; j++)
			if (nb[j] == drawn[i]) {
				q += (exp(nb_logw[j] - top) - pmin) / z;
				break;
			}
		refs[i] = o->items + drawn[i] * o->dim;
		logw[i] = log((double)counts[i]) - log(q) + log_likelihood(xt, refs[i], alpha, scale, o->dim) - top;
	}
	ideal_softmax_mean(logw, refs, m, o->dim, x0_hat);
}

static int knn_estimate(void *est, const df_loss_batch *batch, const float *x0, const float *xt, const double *alpha,
                        const double *sigma, int64_t n, int64_t d, float *x0_hat, df_error *err)
{
	knn_objective *o = est;
	int64_t k = o->k < o->count ? o->k : o->count, m = k > o->draws ? k : o->draws;
	int64_t *nb = malloc(sizeof(int64_t) * (size_t)(n * k + 2 * m));
	double *logw = malloc(sizeof(double) * (size_t)(k + m));
	const float **refs = malloc(sizeof(float *) * (size_t)m);
	double start = seconds_now();
	int rc = nb && logw && refs && knn_search(o->items, o->norms, o->count, xt, alpha, n, d, k, nb) == 0
	             ? DF_OK
	             : df_error_set(err, DF_ENOMEM, "knn: out of memory");
	o->search_timer.seconds += seconds_now() - start;
	for (int64_t q = 0; !rc && q < n; q++) {
		const float *x = xt + q * d;
		if (sigma[q] <= 1e-12) { /* the weights are one-hot on the source */
			memcpy(x0_hat + q * d, x0 + q * d, sizeof(float) * (size_t)d);
			continue;
		}
		double scale = 1.0 / (2.0 * sigma[q] * sigma[q]);
		for (int64_t i = 0; i < k; i++) {
			refs[i] = o->items + nb[q * k + i] * d;
			logw[i] = log_likelihood(x, refs[i], alpha[q], scale, d);
		}
		if (o->draws > 0)
			snis_estimate(o, x, alpha[q], scale, nb + q * k, logw, k, batch, q, nb + n * k, nb + n * k + m,
			              logw + k, refs, x0_hat + q * d);
		else
			ideal_softmax_mean(logw, refs, k, d, x0_hat + q * d);
	}
	free(nb);
	free(logw);
	free(refs);
	return rc;
}

static int knn_loss(void *self, df_graph *g, const df_loss_batch *batch, const df_model_call *model,
                    df_tensor **loss, df_error *err)
{
	knn_objective *o = self;
	int rc = ideal_loss(&o->base, g, batch, model, knn_estimate, o, loss, err);
	return rc ? df_error_prefix(err, rc, "knn") : DF_OK;
}

static const df_process *knn_process(void *self)
{
	return ((knn_objective *)self)->base.process;
}

static int knn_out_channels(void *self, int channels)
{
	(void)self;
	return channels;
}

static void *knn_extension(void *self, const char *name)
{
	knn_objective *o = self;
	if (strcmp(name, DF_OBJECTIVE_TIMER) == 0)
		return &o->search_timer;
	return strcmp(name, DF_OBJECTIVE_DATASET_ACCESS) == 0 ? &o->hook : NULL;
}

static const df_objective_vtable knn_vtable = {
	.struct_size = sizeof(df_objective_vtable),
	.create = knn_create,
	.destroy = knn_destroy,
	.process = knn_process,
	.out_channels = knn_out_channels,
	.loss = knn_loss,
	.extension = knn_extension,
};

static const df_component knn_component = {
	sizeof(df_component), DF_KIND_OBJECTIVE, "knn",
	"nearest-neighbour estimate of the ideal target over the whole training set (eps or velocity)",
	knn_settings_decl, sizeof(knn_settings), &knn_vtable};

DF_PLUGIN_DEFINE("knn-objective", PACKAGE_VERSION, "MIT", &knn_component)
