/* The `class-acc` metric: how often the feature network's classifier
 * assigns a class-conditional sample to the class it was generated for.
 * Real images, when streamed, give the classifier's own accuracy on them
 * (its ceiling) as class_acc_real. */
#include "config.h"
#include <stdlib.h>
#include "classifier.h"

typedef struct acc_settings {
	const char *features;
	const char *weights;
} acc_settings;

static const df_setting acc_settings_decl[] = {
	DFF_SETTINGS(acc_settings),
	DF_SETTINGS_END,
};

typedef struct acc_metric {
	dff_classifier c;
	int64_t correct[2], total[2]; /* generated, real */
} acc_metric;

static void acc_destroy(void *self)
{
	acc_metric *m = self;
	if (m)
		dff_classifier_free(&m->c);
	free(m);
}

static int acc_create(const void *settings, df_ctx *ctx, df_shape3 image, void **self, df_error *err)
{
	acc_metric *m = calloc(1, sizeof *m);
	if (!m)
		return df_error_set(err, DF_ENOMEM, "out of memory");
	int rc = dff_classifier_create(&m->c, settings, ctx, image, "class-acc", err);
	if (rc) {
		free(m);
		return rc;
	}
	*self = m;
	return DF_OK;
}

static int acc_update(void *self, int real, const float *images, const int32_t *labels, int64_t n, df_error *err)
{
	acc_metric *m = self;
	if (!labels)
		return df_error_set(err, DF_EINVAL, "class-acc: needs the labels the %s images belong to",
		                    real ? "real" : "generated");
	int rc = dff_classifier_run(&m->c, images, n, err);
	if (rc)
		return rc;
	const int k = m->c.classes, set = real ? 1 : 0;
	for (int64_t i = 0; i < n; i++) {
		const float *p = m->c.probs + i * k;
		int best = 0;
		for (int j = 1; j < k; j++)
			best = p[j] > p[best] ? j : best;
		if (labels[i] < 0 || labels[i] >= k)
			return df_error_set(err, DF_EINVAL, "class-acc: label %d of image %lld is not one of the %d classes",
			                    (int)labels[i], (long long)i, k);
		m->correct[set] += best == labels[i];
	}
	m->total[set] += n;
	return DF_OK;
}

static int acc_result(void *self, df_metric_value *values, int max, df_error *err)
{
	acc_metric *m = self;
	static const char *const names[2] = {"class_acc", "class_acc_real"};
	if (m->total[0] == 0 && m->total[1] == 0)
		return df_error_set(err, DF_EINVAL, "class-acc: no images were streamed");
	int count = 0;
	for (int set = 0; set < 2; set++)
		if (m->total[set] > 0 && count < max)
			values[count++] = (df_metric_value){names[set], (double)m->correct[set] / (double)m->total[set]};
	return count;
}

static const df_metric_vtable acc_vtable = {
	sizeof(df_metric_vtable), acc_create, acc_destroy, acc_update, acc_result, NULL,
};

static const df_component acc_component = {
	sizeof(df_component), DF_KIND_METRIC, "class-acc",
	"accuracy of the feature network's classifier on class-conditional samples against their requested labels",
	acc_settings_decl, sizeof(acc_settings), &acc_vtable,
};

DF_PLUGIN_DEFINE("class-acc", PACKAGE_VERSION, "MIT", &acc_component)
