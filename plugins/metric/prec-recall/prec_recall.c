/* The `prec-recall` metric: improved precision and recall (Kynkäänniemi et
 * al., 2019). Precision: the fraction of generated images inside the k-NN
 * manifold of the real features; recall: the fraction of real images
 * inside the manifold of the generated ones. */
#include "config.h"
#include <stdlib.h>
#include "feature_store.h"
#include "manifold.h"

typedef struct pr_settings {
	const char *features;
	const char *weights;
	int64_t k;
} pr_settings;

static const df_setting pr_settings_decl[] = {
	DFF_SETTINGS(pr_settings),
	DF_SETTING_INT(pr_settings, k, "3", 1, 1000, "neighbour whose distance is a point's manifold radius"),
	DF_SETTINGS_END,
};

typedef struct pr_metric {
	dff_extractor *fx;
	int k;
	dff_store sets[2]; /* generated, real */
} pr_metric;

static void pr_destroy(void *self)
{
	pr_metric *m = self;
	if (!m)
		return;
	dff_destroy(m->fx);
	dff_store_free(&m->sets[0]);
	dff_store_free(&m->sets[1]);
	free(m);
}

static int pr_create(const void *settings, df_ctx *ctx, df_shape3 image, void **self, df_error *err)
{
	const pr_settings *s = settings;
	pr_metric *m = calloc(1, sizeof *m);
	if (!m)
		return df_error_set(err, DF_ENOMEM, "out of memory");
	m->k = (int)s->k;
	int rc = dff_create(&m->fx, settings, ctx, image, err);
	if (rc) {
		pr_destroy(m);
		return rc;
	}
	*self = m;
	return DF_OK;
}

static int pr_update(void *self, int real, const float *images, const int32_t *labels, int64_t n, df_error *err)
{
	(void)labels;
	pr_metric *m = self;
	return dff_store_add(&m->sets[real ? 1 : 0], m->fx, images, n, err);
}

/* The fraction of `query`'s points inside the manifold of `base`. */
static int coverage(const pr_metric *m, const dff_store *base, const dff_store *query, const char *what,
                    double *fraction, df_error *err)
{
	float *radii = malloc((size_t)(base->count > 0 ? base->count : 1) * sizeof *radii);
	if (!radii)
		return df_error_set(err, DF_ENOMEM, "out of memory");
	int rc = dff_knn_radii(base->rows, base->count, base->dim, m->k, radii, err);
	if (!rc)
		rc = dff_manifold_coverage(base->rows, radii, base->count, query->rows, query->count, base->dim,
		                           fraction, err);
	free(radii);
	return rc ? df_error_prefix(err, rc, "%s", what) : DF_OK;
}

static int pr_result(void *self, df_metric_value *values, int max, df_error *err)
{
	pr_metric *m = self;
	double precision = 0, recall = 0;
	int rc = coverage(m, &m->sets[1], &m->sets[0], "precision (real manifold)", &precision, err);
	if (!rc)
		rc = coverage(m, &m->sets[0], &m->sets[1], "recall (generated manifold)", &recall, err);
	if (rc)
		return rc;
	int count = 0;
	if (count < max)
		values[count++] = (df_metric_value){"precision", precision};
	if (count < max)
		values[count++] = (df_metric_value){"recall", recall};
	return count;
}

static const df_metric_vtable pr_vtable = {
	sizeof(df_metric_vtable), pr_create, pr_destroy, pr_update, pr_result, NULL,
};

static const df_component pr_component = {
	sizeof(df_component), DF_KIND_METRIC, "prec-recall",
	"improved precision and recall with k-NN feature manifolds (Kynkaanniemi et al.), k = 3",
	pr_settings_decl, sizeof(pr_settings), &pr_vtable,
};

DF_PLUGIN_DEFINE("prec-recall", PACKAGE_VERSION, "MIT", &pr_component)
