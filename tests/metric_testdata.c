/* Data of the metric tests (metric_testdata.h). */
#include "config.h"
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "diffuse/tensor.h"
#include "idx.h"
#include "metric_testdata.h"
#include "plugin_harness.h"

static int read_idx(const char *path, int ndim, uint8_t **buf, idx_array *array)
{
	size_t len = 0;
	df_error err;
	if (idx_read_gz(path, IDX_MAX_FILE_BYTES, NULL, buf, &len, &err))
		return -1;
	return idx_parse(*buf, len, ndim, array, &err) ? -1 : 0;
}

float *fmnist_test_images(int64_t n, int32_t **labels)
{
	*labels = NULL;
	if (access(FMNIST_ROOT "/t10k-images-idx3-ubyte.gz", R_OK) != 0)
		return NULL;
	uint8_t *image_buf = NULL, *label_buf = NULL;
	idx_array images, classes;
	float *out = NULL;
	if (read_idx(FMNIST_ROOT "/t10k-images-idx3-ubyte.gz", 3, &image_buf, &images) == 0 &&
	    read_idx(FMNIST_ROOT "/t10k-labels-idx1-ubyte.gz", 1, &label_buf, &classes) == 0 &&
	    n <= (int64_t)images.dims[0]) {
		out = malloc((size_t)n * 784 * sizeof *out);
		*labels = malloc((size_t)n * sizeof **labels);
		for (int64_t i = 0; out && *labels && i < n * 784; i++)
			out[i] = images.data[i] / 127.5f - 1.0f;
		for (int64_t i = 0; out && *labels && i < n; i++)
			(*labels)[i] = classes.data[i];
	}
	free(image_buf);
	free(label_buf);
	return out;
}

/* DIFFUSE_TEST_FMNIST_WEIGHTS measures another weights file or training
 * checkpoint (its EMA set) with the same tests, e.g. one that
 * pipelines/fmnist-net.cfg just trained. */
const char *fmnist_net_weights(void)
{
	const char *other = getenv("DIFFUSE_TEST_FMNIST_WEIGHTS");
	return other && *other ? other : DF_TEST_WEIGHTS;
}

int test_metric_create(test_metric *m, const char *name, df_shape3 image, df_error *err, ...)
{
	memset(m, 0, sizeof *m);
	m->image_numel = (int64_t)image.channels * image.height * image.width;
	m->component = harness_component(DF_KIND_METRIC, name);
	m->vtable = m->component->vtable;
	va_list ap;
	va_start(ap, err);
	m->settings = harness_settings_v(m->component, ap);
	va_end(ap);
	assert_int_equal(df_ctx_create(&m->ctx, "cpu", 0, err), 0);
	int rc = m->vtable->create(m->settings, m->ctx, image, &m->self, err);
	if (rc)
		test_metric_destroy(m);
	return rc;
}

void test_metric_destroy(test_metric *m)
{
	if (m->self)
		m->vtable->destroy(m->self);
	if (m->settings)
		harness_settings_free(m->component, m->settings);
	df_ctx_destroy(m->ctx);
	memset(m, 0, sizeof *m);
}

void test_metric_feed(test_metric *m, int real, const float *images, const int32_t *labels, int64_t n)
{
	df_error err = {0};
	for (int64_t start = 0; start < n; start += 100) {
		int64_t b = n - start < 100 ? n - start : 100;
		int rc = m->vtable->update(m->self, real, images + start * m->image_numel, labels ? labels + start : NULL,
		                           b, &err);
		if (rc)
			fail_msg("update: %s", err.msg);
	}
}

double test_metric_value(test_metric *m, const char *name)
{
	df_metric_value values[8];
	df_error err = {0};
	int count = m->vtable->result(m->self, values, 8, &err);
	if (count < 0)
		fail_msg("result: %s", err.msg);
	for (int i = 0; i < count; i++)
		if (strcmp(values[i].name, name) == 0)
			return values[i].value;
	fail_msg("the result has no value called %s", name);
	return NAN;
}

double test_metric_on_test_split(const char *metric, const char *name, int64_t n)
{
	int32_t *labels;
	float *images = fmnist_test_images(n, &labels);
	if (!images)
		skip();
	test_metric m;
	df_error err;
	if (test_metric_create(&m, metric, (df_shape3){1, 28, 28}, &err, "weights", fmnist_net_weights(), NULL))
		fail_msg("%s", err.msg);
	test_metric_feed(&m, 1, images, labels, n);
	double value = test_metric_value(&m, name);
	test_metric_destroy(&m);
	free(images);
	free(labels);
	return value;
}
