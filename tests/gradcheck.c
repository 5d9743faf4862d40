/* The gradient-check harness (see gradcheck.h). */
#include "config.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "gradcheck.h"

/* At most this many elements per input are perturbed (evenly spread). */
#define GC_MAX_PROBES 256

static uint64_t next_random(uint64_t *s)
{
	/* splitmix64 */
	uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	return z ^ (z >> 31);
}

void gc_fill(float *x, int64_t n, float lo, float hi, uint64_t *state)
{
	for (int64_t i = 0; i < n; i++)
		x[i] = lo + (hi - lo) * (float)((next_random(state) >> 40) * (1.0 / 16777216.0));
}

int gc_compare(const char *what, const float *got, const double *want, int64_t n, double tol, double floor)
{
	double worst = 0.0;
	int64_t at = 0;
	for (int64_t i = 0; i < n; i++) {
		double den = fabs(want[i]) > floor ? fabs(want[i]) : floor;
		double err = fabs(got[i] - want[i]) / den;
		if (!(err <= worst)) { /* also catches NaN */
			worst = err;
			at = i;
		}
	}
	if (worst <= tol)
		return 0;
	fprintf(stderr, "%s: relative error %.3g at %lld (got %.7g, want %.7g; tolerance %.3g)\n", what, worst,
	        (long long)at, (double)got[at], want[at], tol);
	return -1;
}

static int fill_inputs(const struct gc_case *c, uint64_t *state, float **values, int64_t *numel);

/* sum(out * w) in double for the inputs' current values (no-grad graph). */
static int eval_loss(df_graph *g, const struct gc_case *c, df_tensor *const *in, const float *w, float *out_host,
                     int64_t out_numel, double *loss, double *abs_sum)
{
	df_graph_reset(g);
	df_tensor *out = c->build(g, in, c->arg);
	df_error err;
	if (df_graph_status(g, &err) || !out) {
		fprintf(stderr, "%s: forward failed: %s\n", c->name, out ? err.msg : "no output");
		return -1;
	}
	if (out->numel != out_numel || df_tensor_read(out, out_host, &err))
		return -1;
	double acc = 0.0, mag = 0.0;
	for (int64_t i = 0; i < out_numel; i++) {
		acc += (double)out_host[i] * w[i];
		mag += fabs((double)out_host[i] * w[i]);
	}
	*loss = acc;
	*abs_sum = mag;
	return 0;
}

int gc_check(df_ctx *ctx, const struct gc_case *c, uint64_t seed)
{
	df_error err;
	int rc = -1;
	double tol = c->tol > 0 ? c->tol : 1e-2, h = c->step > 0 ? c->step : 1e-2;
	df_params *p = df_params_create(ctx);
	df_graph *g = df_graph_create(ctx, 0);
	df_graph *ng = df_graph_create(ctx, DF_GRAPH_NO_GRAD);
	df_tensor *in[GC_MAX_INPUTS] = {0};
	float *values[GC_MAX_INPUTS] = {0}, *w = NULL, *out_host = NULL, *grad = NULL;
	double *numeric = NULL;
	float *probe_grad = NULL;
	uint64_t state = seed ^ 0x5EEDull;
	if (!p || !g || !ng)
		goto done;
	for (int i = 0; i < c->n_inputs; i++) {
		char name[16];
		snprintf(name, sizeof name, "in%d", i);
		in[i] = df_params_add(p, name, c->in[i].ndim, c->in[i].shape, c->in[i].no_grad ? DF_TENSOR_FROZEN : 0);
	}
	if (df_params_finalize(p, &err)) {
		fprintf(stderr, "%s: %s\n", c->name, err.msg);
		goto done;
	}
	if (fill_inputs(c, &state, values, NULL))
		goto done;
	for (int i = 0; i < c->n_inputs; i++)
		df_tensor_write(in[i], values[i], NULL);

	/* Analytic: d/dx sum(out * w) through df_backward. */
	df_tensor *out = c->build(g, in, c->arg);
	if (df_graph_status(g, &err) || !out) {
		fprintf(stderr, "%s: forward failed: %s\n", c->name, out ? err.msg : "no output");
		goto done;
	}
	int64_t out_numel = out->numel;
	w = malloc((size_t)out_numel * sizeof(float));
	out_host = malloc((size_t)out_numel * sizeof(float));
	if (!w || !out_host)
		goto done;
	gc_fill(w, out_numel, -1.0f, 1.0f, &state);
	df_tensor *wt = df_tensor_from_host(g, w, out->ndim, out->shape);
	df_tensor *loss = df_sum(g, df_mul(g, out, wt));
	df_params_zero_grad(p);
	if (df_backward(g, loss, &err)) {
		fprintf(stderr, "%s: backward failed: %s\n", c->name, err.msg);
		goto done;
	}

	rc = 0;
	for (int i = 0; i < c->n_inputs; i++) {
		if (c->in[i].no_grad)
			continue;
		int64_t most = c->probes > 0 ? c->probes : GC_MAX_PROBES;
		int64_t n = in[i]->numel, probes = n < most ? n : most;
		grad = malloc((size_t)n * sizeof(float));
		numeric = malloc((size_t)probes * sizeof(double));
		probe_grad = malloc((size_t)probes * sizeof(float));
		if (!grad || !numeric || !probe_grad || df_tensor_read_grad(in[i], grad, &err)) {
			rc = -1;
			break;
		}
		/* Float rounding of the outputs bounds what central differences can
		 * resolve: a few times 2^-23 sum |out w| / step; float backward
		 * kernels lose about 1e-6 of the largest gradient to cancellation.
		 * Gradients below that noise, or below 1% of the largest, are
		 * compared against that floor instead of their own size. */
		double scale = 0.0, mag = 0.0, noise = 0.0;
		for (int64_t k = 0; k < probes; k++) {
			int64_t j = probes == n ? k : k * n / probes;
			/* Five-point stencil: error O(h^4), so h can be large enough
			 * for float rounding of the outputs not to matter. */
			float saved = values[i][j];
			double f[4], taken[4];
			const double offsets[4] = {-2, -1, 1, 2};
			for (int o = 0; o < 4; o++) {
				values[i][j] = saved + (float)(offsets[o] * h);
				taken[o] = (double)values[i][j] - saved;
				df_tensor_write(in[i], values[i], NULL);
				if (eval_loss(ng, c, in, w, out_host, out_numel, &f[o], &mag))
					rc = -1;
			}
			values[i][j] = saved;
			df_tensor_write(in[i], values[i], NULL);
			/* the steps actually taken in float are within an ulp of the
			 * nominal ones; scale by the nominal/actual ratio of the inner pair */
			double inner = (f[2] - f[1]) / (taken[2] - taken[1]), outer = (f[3] - f[0]) / (taken[3] - taken[0]);
			numeric[k] = (4.0 * inner - outer) / 3.0;
			probe_grad[k] = grad[j];
			if (fabs(numeric[k]) > scale)
				scale = fabs(numeric[k]);
			if (4 * 1.2e-7 * mag / h > noise)
				noise = 4 * 1.2e-7 * mag / h;
		}
		char what[96];
		snprintf(what, sizeof what, "%s: d/d in%d", c->name, i);
		if (rc == 0 && gc_compare(what, probe_grad, numeric, probes, tol, fmax(1e-2 * scale, noise) + 1e-6))
			rc = -1;
		free(grad);
		free(numeric);
		free(probe_grad);
		grad = probe_grad = NULL;
		numeric = NULL;
		if (rc)
			break;
	}
done:
	for (int i = 0; i < GC_MAX_INPUTS; i++)
		free(values[i]);
	free(w);
	free(out_host);
	free(grad);
	free(numeric);
	free(probe_grad);
	df_graph_destroy(g);
	df_graph_destroy(ng);
	df_params_destroy(p);
	return rc;
}

/* Random host values for every input of c, the same for a given seed. */
static int fill_inputs(const struct gc_case *c, uint64_t *state, float **values, int64_t *numel)
{
	for (int i = 0; i < c->n_inputs; i++) {
		float lo = c->in[i].lo, hi = c->in[i].hi;
		if (lo == 0.0f && hi == 0.0f)
			lo = -1.0f, hi = 1.0f;
		int64_t n = 1;
		for (int d = 0; d < c->in[i].ndim; d++)
			n *= c->in[i].shape[d];
		values[i] = malloc((size_t)n * sizeof(float));
		if (!values[i])
			return -1;
		gc_fill(values[i], n, lo, hi, state);
		if (numel)
			numel[i] = n;
	}
	return 0;
}

int gc_check_forward(df_ctx *ctx, const struct gc_case *c, uint64_t seed)
{
	if (!c->naive)
		return 0;
	int rc = -1;
	uint64_t state = seed ^ 0xF0Dull;
	float *values[GC_MAX_INPUTS] = {0}, *got = NULL;
	double *want = NULL;
	df_tensor *in[GC_MAX_INPUTS] = {0};
	df_graph *g = df_graph_create(ctx, 0);
	df_error err;
	if (!g || fill_inputs(c, &state, values, NULL))
		goto done;
	for (int i = 0; i < c->n_inputs; i++)
		in[i] = df_tensor_from_host(g, values[i], c->in[i].ndim, c->in[i].shape);
	df_tensor *out = c->build(g, in, c->arg);
	if (df_graph_status(g, &err) || !out) {
		fprintf(stderr, "%s: forward failed: %s\n", c->name, out ? err.msg : "no output");
		goto done;
	}
	got = malloc((size_t)out->numel * sizeof(float));
	want = calloc((size_t)out->numel, sizeof(double));
	if (!got || !want || df_tensor_read(out, got, &err))
		goto done;
	c->naive((const float *const *)values, c->in, c->arg, want, out->numel);
	double scale = 0.0;
	for (int64_t i = 0; i < out->numel; i++)
		scale = fabs(want[i]) > scale ? fabs(want[i]) : scale;
	char what[96];
	snprintf(what, sizeof what, "%s: forward", c->name);
	rc = gc_compare(what, got, want, out->numel, 1e-4, 1e-3 * scale + 1e-6);
done:
	for (int i = 0; i < GC_MAX_INPUTS; i++)
		free(values[i]);
	free(got);
	free(want);
	df_graph_destroy(g);
	return rc;
}

int gc_check_table(df_ctx *ctx, const struct gc_case *cases, int n, uint64_t seed)
{
	int failures = 0;
	for (int i = 0; i < n; i++) {
		if (gc_check_forward(ctx, &cases[i], seed + (uint64_t)i)) {
			fprintf(stderr, "forward check FAILED: %s\n", cases[i].name);
			failures++;
		}
		if (gc_check(ctx, &cases[i], seed + (uint64_t)i)) {
			fprintf(stderr, "gradient check FAILED: %s\n", cases[i].name);
			failures++;
		}
	}
	return failures;
}
