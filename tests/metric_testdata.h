/* Data the metric tests share: the Fashion-MNIST test split read from the
 * Debian files (tests that need it skip without them) and the shipped
 * fmnist-net weights. */
#ifndef DF_TEST_METRIC_TESTDATA_H
#define DF_TEST_METRIC_TESTDATA_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>

/* |a - b| <= tol, printing both values when not (cmocka 1.1 has no
 * double comparison). */
#define assert_close(a, b, tol)                                                                     \
	do {                                                                                        \
		double a_ = (a), b_ = (b), tol_ = (tol);                                            \
		if (!(fabs(a_ - b_) <= tol_))                                                       \
			fail_msg("%s = %.12g, %s = %.12g: differ by more than %g", #a, a_, #b, b_, tol_); \
	} while (0)

#define FMNIST_ROOT "/usr/share/datasets/fashion-mnist"

/* The first n (<= 10000) test images (n, 1, 28, 28) in [-1, 1] and their
 * labels; NULL (and no labels) when the files are not installed. */
float *fmnist_test_images(int64_t n, int32_t **labels);

/* The shipped weights in the source tree, or $DIFFUSE_TEST_FMNIST_WEIGHTS. */
const char *fmnist_net_weights(void);



#include "diffuse/plugin.h"

/* A metric of the plugin linked into the test, created on a CPU context
 * with settings pairs (NULL-terminated) over its defaults. */
typedef struct test_metric {
	const df_component *component;
	const df_metric_vtable *vtable;
	void *settings, *self;
	df_ctx *ctx;
	int64_t image_numel;
} test_metric;

int test_metric_create(test_metric *m, const char *name, df_shape3 image, df_error *err, ...);
void test_metric_destroy(test_metric *m);
/* Streams n images as real or generated, in batches of at most 100. */
void test_metric_feed(test_metric *m, int real, const float *images, const int32_t *labels, int64_t n);
/* The value called `name` of the metric's result. */
double test_metric_value(test_metric *m, const char *name);
/* The figure `name` of metric `metric` (with the shipped fmnist-net
 * weights) over the first n test images as real ones; skips the test when
 * the Fashion-MNIST files are not installed. */
double test_metric_on_test_split(const char *metric, const char *name, int64_t n);
#endif
