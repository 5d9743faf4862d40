/* Stable Target Field (Xu, Tong, Jaakkola, ICLR 2023): the regression target
 * of each sample is the self-normalised likelihood-weighted mean over a
 * reference batch of n clean items that contains the sample's own source,
 *   x0_hat = sum_i softmax_i(-|x_t - alpha x_i|^2 / (2 sigma^2)) x_i,
 * turned into the eps (DDPM) or velocity target (ideal_target.h).
 * The reference batch is the training batch (the sample first, then the
 * others) topped up with items drawn uniformly from the training set,
 * keyed by (seed, step) so a resumed run draws the same. With n = 1 the
 * target is the plain single-sample one. */
#include "config.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "diffuse/plugin.h"
#include "diffuse/rng.h"
#include "ideal_target.h"

#define STF_STREAM 0x535446u /* the reference draws' random stream */

typedef struct stf_settings {
	const char *parameterisation;
	int64_t reference;
} stf_settings;

static const df_setting stf_settings_decl[] = {
	DF_SETTING_CHOICE(stf_settings, parameterisation, "eps", ideal_parameterisations,
	                  "target the backbone learns: eps (DDPM, linear betas, T = 1000) or velocity (linear path)"),
	DF_SETTING_INT(stf_settings, reference, "256", 1, 1 << 20,
	               "reference batch size n, the sample's own source included (1 = the plain target)"),
	DF_SETTINGS_END,
};

typedef struct stf_objective {
	ideal_base base;
	int64_t reference;
	df_objective_dataset_hook hook;
} stf_objective;

static void stf_destroy(void *self)
{
	stf_objective *o = self;
	if (o)
		ideal_base_destroy(&o->base);
	free(o);
}

static int stf_attach(void *self, const df_dataset_access *access, df_error *err)
{
	stf_objective *o = self;
	if (!access || access->struct_size < sizeof *access || access->count < 1 || access->dim < 1 || !access->fetch)
		return df_error_set(err, DF_EINVAL, "stf: the dataset access is incomplete");
	o->base.data = *access;
	return DF_OK;
}

static int stf_create(const void *settings, df_ctx *ctx, void **self, df_error *err)
{
	(void)ctx;
	const stf_settings *s = settings;
	stf_objective *o = calloc(1, sizeof *o);
	if (!o)
		return df_error_set(err, DF_ENOMEM, "out of memory");
	int rc = ideal_base_create(&o->base, s->parameterisation, err);
	if (rc) {
		stf_destroy(o);
		return rc;
	}
	o->reference = s->reference;
	o->hook = (df_objective_dataset_hook){sizeof o->hook, stf_attach};
	*self = o;
	return DF_OK;
}

static int stf_estimate(void *est, const df_loss_batch *batch, const float *x0, const float *xt, const double *alpha,
                        const double *sigma, int64_t n, int64_t d, float *x0_hat, df_error *err)
{
	stf_objective *o = est;
	int64_t extra = o->reference > n ? o->reference - n : 0, pool = n + extra;
	float *rows = malloc(sizeof(float) * (size_t)(pool * d + pool + n + n * pool));
	int64_t *index = malloc(sizeof(int64_t) * (size_t)(extra > 0 ? extra : 1));
	double *logw = malloc(sizeof(double) * (size_t)pool);
	const float **refs = malloc(sizeof(float *) * (size_t)pool);
	if (!rows || !index || !logw || !refs) {
		free(rows);
		free(index);
		free(logw);
		free(refs);
		return df_error_set(err, DF_ENOMEM, "stf: out of memory");
	}
	float *norms = rows + pool * d, *qnorms = norms + pool, *dots = qnorms + n;
	for (int64_t j = 0; j < n * d; j++)
		rows[j] = x0[j];
	for (int64_t j = 0; j < extra; j++)
		index[j] = (int64_t)(df_rng_u32(batch->seed, STF_STREAM, batch->step, (uint64_t)j) %
		                     (uint64_t)o->base.data.count);
	int rc = extra > 0 ? o->base.data.fetch(o->base.data.ctx, index, extra, rows + n * d, err) : DF_OK;
	if (!rc) {
		ideal_row_norms(rows, pool, d, norms);
		ideal_row_norms(xt, n, d, qnorms);
		ideal_dots(xt, n, rows, pool, d, dots);
		int64_t m = o->reference < pool ? o->reference : pool;
		for (int64_t k = 0; k < n; k++) {
			double a = alpha[k], scale = 1.0 / (2.0 * sigma[k] * sigma[k]);
			/* the source first, then the others in pool order */
			int64_t i = 0;
			for (int64_t j = -1; j < pool && i < m; j++) {
				int64_t at = j < 0 ? k : j;
				if (j == k)
					continue;
				refs[i] = rows + at * d;
				double dist = qnorms[k] + a * a * norms[at] - 2.0 * a * dots[k * pool + at];
				logw[i] = sigma[k] > 1e-12 ? -(dist > 0 ? dist : 0) * scale : (i == 0 ? 0 : -INFINITY);
				i++;
			}
			ideal_softmax_mean(logw, refs, m, d, x0_hat + k * d);
		}
	}
	free(rows);
	free(index);
	free(logw);
	free(refs);
	return rc;
}

static int stf_loss(void *self, df_graph *g, const df_loss_batch *batch, const df_model_call *model,
                    df_tensor **loss, df_error *err)
{
	stf_objective *o = self;
	int rc = ideal_loss(&o->base, g, batch, model, stf_estimate, o, loss, err);
	return rc ? df_error_prefix(err, rc, "stf") : DF_OK;
}

static const df_process *stf_process(void *self)
{
	return ((stf_objective *)self)->base.process;
}

static int stf_out_channels(void *self, int channels)
{
	(void)self;
	return channels;
}

static void *stf_extension(void *self, const char *name)
{
	stf_objective *o = self;
	return strcmp(name, DF_OBJECTIVE_DATASET_ACCESS) == 0 ? &o->hook : NULL;
}

static const df_objective_vtable stf_vtable = {
	.struct_size = sizeof(df_objective_vtable),
	.create = stf_create,
	.destroy = stf_destroy,
	.process = stf_process,
	.out_channels = stf_out_channels,
	.loss = stf_loss,
	.extension = stf_extension,
};

static const df_component stf_component = {
	sizeof(df_component), DF_KIND_OBJECTIVE, "stf",
	"Stable Target Field: the target averaged over a reference batch, likelihood-weighted (eps or velocity)",
	stf_settings_decl, sizeof(stf_settings), &stf_vtable};

DF_PLUGIN_DEFINE("stf-objective", PACKAGE_VERSION, "MIT", &stf_component)
