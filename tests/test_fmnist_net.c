/* The shipped fmnist-net weights classify the Fashion-MNIST test set at
 * >= 92% (measured through the class-acc metric, as evaluations use them);
 * the Inception score of the test set under it is high (most of the 10
 * classes are told apart confidently). Skips without the Debian files. */
#include "config.h"
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>

#include "metric_testdata.h"

enum { N = 10000 };

static void shipped_weights_reach_92_percent_on_the_test_set(void **state)
{
	(void)state;
	int32_t *labels;
	float *images = fmnist_test_images(N, &labels);
	if (!images)
		skip();
	test_metric m;
	df_error err;
	if (test_metric_create(&m, "class-acc", (df_shape3){1, 28, 28}, &err, "weights", fmnist_net_weights(), NULL))
		fail_msg("%s", err.msg);
	test_metric_feed(&m, 1, images, labels, N);
	double acc = test_metric_value(&m, "class_acc_real");
	print_message("fmnist-net test accuracy: %.4f\n", acc);
	assert_true(acc >= 0.92);
	test_metric_destroy(&m);
	free(images);
	free(labels);
}

/* A label the classifier cannot have is refused, and so are generated
 * images without labels. */
static void class_acc_refuses_bad_labels(void **state)
{
	(void)state;
	test_metric m;
	df_error err;
	float images[2 * 784] = {0};
	int32_t labels[2] = {3, 10};
	if (test_metric_create(&m, "class-acc", (df_shape3){1, 28, 28}, &err, "weights", fmnist_net_weights(), NULL))
		fail_msg("%s", err.msg);
	assert_int_equal(m.vtable->update(m.self, 0, images, labels, 2, &err), DF_EINVAL);
	assert_int_equal(m.vtable->update(m.self, 0, images, NULL, 2, &err), DF_EINVAL);
	test_metric_destroy(&m);
	/* pixels have no classifier head */
	assert_int_equal(test_metric_create(&m, "class-acc", (df_shape3){1, 28, 28}, &err, "features", "pixels", NULL),
	                 DF_EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(shipped_weights_reach_92_percent_on_the_test_set),
		cmocka_unit_test(class_acc_refuses_bad_labels),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
