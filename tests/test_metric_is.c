/* The is metric plugin: one image repeated scores exactly 1 (every
 * prediction equals the marginal); the test split, ten balanced and well
 * separated classes, scores far above that (at most 10). */
#include "config.h"
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "metric_testdata.h"

enum { N = 2000 };

static void one_repeated_image_scores_one(void **state)
{
	(void)state;
	int32_t *labels;
	float *images = fmnist_test_images(1, &labels);
	if (!images)
		skip();
	float *same = malloc(50 * 784 * sizeof *same);
	for (int i = 0; i < 50; i++)
		memcpy(same + i * 784, images, 784 * sizeof *same);
	test_metric m;
	df_error err;
	if (test_metric_create(&m, "is", (df_shape3){1, 28, 28}, &err, "weights", fmnist_net_weights(), NULL))
		fail_msg("%s", err.msg);
	test_metric_feed(&m, 0, same, NULL, 50);
	assert_close(test_metric_value(&m, "is"), 1.0, 1e-6);
	test_metric_destroy(&m);
	free(same);
	free(images);
	free(labels);
}

static void the_test_split_scores_high(void **state)
{
	(void)state;
	double score = test_metric_on_test_split("is", "is_real", N);
	print_message("IS of %d test images: %.3f\n", N, score);
	assert_true(score > 6.0 && score <= 10.0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(one_repeated_image_scores_one),
		cmocka_unit_test(the_test_split_scores_high),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
