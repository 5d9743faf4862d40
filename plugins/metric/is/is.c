/* The `is` metric: the Inception score exp(E_x KL(p(y|x) || p(y))) of the
 * generated images under the feature network's classifier (one split),
 * streamed as sum_x sum_y p log p and sum_x p(y|x). Real images, when
 * streamed, give the score of the data itself as is_real. */
#include "config.h"
#include <math.h>
#include <stdlib.h>
#include "classifier.h"

typedef struct is_settings {
	const char *features;
	const char *weights;
} is_settings;

static const df_setting is_settings_decl[] = {
	DFF_SETTINGS(is_settings),
	DF_SETTINGS_END,
};

typedef struct is_metric {
	dff_classifier c;
	double neg_entropy[2]; /* generated, real: sum over images of sum_y p log p */
	double *marginal[2];   /* (classes) sum over images of p */
	int64_t count[2];
} is_metric;

static void is_destroy(void *self)
{
	is_metric *m = self;
	if (!m)
		return;
	dff_classifier_free(&m->c);
	free(m->marginal[0]);
	free(m->marginal[1]);
	free(m);
}

static int is_create(const void *settings, df_ctx *ctx, df_shape3 image, void **self, df_error *err)
{
	is_metric *m = calloc(1, sizeof *m);
	if (!m)
		return df_error_set(err, DF_ENOMEM, "out of memory");
	int rc = dff_classifier_create(&m->c, settings, ctx, image, "is", err);
	for (int s = 0; s < 2 && !rc; s++)
		if (!(m->marginal[s] = calloc((size_t)m->c.classes, sizeof *m->marginal[s])))
			rc = df_error_set(err, DF_ENOMEM, "out of memory");
	if (rc) {
		is_destroy(m);
		return rc;
	}
	*self = m;
	return DF_OK;
}

static int is_update(void *self, int real, const float *images, const int32_t *labels, int64_t n, df_error *err)
{
	(void)labels;
	is_metric *m = self;
	int rc = dff_classifier_run(&m->c, images, n, err);
	if (rc)
		return rc;
	const int k = m->c.classes, set = real ? 1 : 0;
	for (int64_t i = 0; i < n; i++)
		for (int j = 0; j < k; j++) {
			double p = m->c.probs[i * k + j];
			m->marginal[set][j] += p;
			if (p > 0)
				m->neg_entropy[set] += p * log(p);
		}
	m->count[set] += n;
	return DF_OK;
}

static int is_result(void *self, df_metric_value *values, int max, df_error *err)
{
	is_metric *m = self;
	static const char *const names[2] = {"is", "is_real"};
	if (m->count[0] == 0 && m->count[1] == 0)
		return df_error_set(err, DF_EINVAL, "is: no images were streamed");
	int count = 0;
	for (int set = 0; set < 2; set++) {
		if (m->count[set] == 0 || count >= max)
			continue;
		/* E_x KL = E_x sum p log p - sum_y pbar log pbar. */
		double n = (double)m->count[set], kl = m->neg_entropy[set] / n;
		for (int j = 0; j < m->c.classes; j++) {
			double pbar = m->marginal[set][j] / n;
			if (pbar > 0)
				kl -= pbar * log(pbar);
		}
		values[count++] = (df_metric_value){names[set], exp(kl)};
	}
	return count;
}

static const df_metric_vtable is_vtable = {
	sizeof(df_metric_vtable), is_create, is_destroy, is_update, is_result, NULL,
};

static const df_component is_component = {
	sizeof(df_component), DF_KIND_METRIC, "is",
	"Inception score of the generated images under the feature network's classifier (one split)",
	is_settings_decl, sizeof(is_settings), &is_vtable,
};

DF_PLUGIN_DEFINE("is", PACKAGE_VERSION, "MIT", &is_component)
