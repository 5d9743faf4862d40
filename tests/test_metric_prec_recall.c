/* The prec-recall metric plugin: identical sets (1, 1), disjoint clusters
 * (0, 0), half the samples off the data (precision 1/2). */
#include "config.h"
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>

#include "diffuse/rng.h"
#include "metric_testdata.h"

enum { N = 400, D = 8 };

static void measure(const float *real, const float *gen, double *precision, double *recall)
{
	test_metric m;
	df_error err;
	assert_int_equal(test_metric_create(&m, "prec-recall", (df_shape3){2, 2, 2}, &err, "features", "pixels", NULL), 0);
	test_metric_feed(&m, 1, real, NULL, N);
	test_metric_feed(&m, 0, gen, NULL, N);
	*precision = test_metric_value(&m, "precision");
	*recall = test_metric_value(&m, "recall");
	test_metric_destroy(&m);
}

static float *cluster(float centre, uint64_t stream)
{
	float *x = malloc(N * D * sizeof *x);
	df_rng_fill_normal(x, N * D, 4, stream, 0, 0);
	for (int i = 0; i < N * D; i++)
		x[i] = centre + 0.1f * x[i];
	return x;
}

static void identical_sets_have_precision_and_recall_one(void **state)
{
	(void)state;
	float *x = cluster(0, 1);
	double p, r;
	measure(x, x, &p, &r);
	assert_close(p, 1.0, 0);
	assert_close(r, 1.0, 0);
	free(x);
}

static void disjoint_clusters_have_precision_and_recall_zero(void **state)
{
	(void)state;
	float *real = cluster(0, 1), *gen = cluster(50, 2);
	double p, r;
	measure(real, gen, &p, &r);
	assert_close(p, 0.0, 0);
	assert_close(r, 0.0, 0);
	free(real);
	free(gen);
}

/* Half the generated points copies of real ones, half far away: precision
 * 1/2, and at least the copied half of the real set is recalled. */
static void samples_off_the_data_lower_precision(void **state)
{
	(void)state;
	float *real = cluster(0, 1), *gen = cluster(50, 2);
	for (int i = 0; i < N / 2 * D; i++)
		gen[i] = real[i];
	double p, r;
	measure(real, gen, &p, &r);
	assert_close(p, 0.5, 0);
	assert_true(r >= 0.5 && r < 1);
	free(real);
	free(gen);
}

static void too_few_points_are_refused(void **state)
{
	(void)state;
	test_metric m;
	df_error err;
	float x[3 * D] = {0};
	assert_int_equal(test_metric_create(&m, "prec-recall", (df_shape3){2, 2, 2}, &err, "features", "pixels", NULL), 0);
	test_metric_feed(&m, 1, x, NULL, 3);
	test_metric_feed(&m, 0, x, NULL, 3);
	df_metric_value v[2];
	/* k = 3 needs 4 points in each set */
	assert_int_equal(m.vtable->result(m.self, v, 2, &err), DF_EINVAL);
	test_metric_destroy(&m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(identical_sets_have_precision_and_recall_one),
		cmocka_unit_test(disjoint_clusters_have_precision_and_recall_zero),
		cmocka_unit_test(samples_off_the_data_lower_precision),
		cmocka_unit_test(too_few_points_are_refused),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
