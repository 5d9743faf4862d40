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

#include "diffuse/tensor.h"
#include "fmnist_net.h"
#include "metric_testdata.h"
#include "testutil.h"

enum { N = 10000 };

static void shipped_weights_reach_92_percent_on_the_test_set(void **state)
{
	(void)state;
	double acc = test_metric_on_test_split("class-acc", "class_acc_real", N);
	print_message("fmnist-net test accuracy: %.4f\n", acc);
	assert_true(acc >= 0.92);
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

/* The network's shapes, its parameter budget, and weights that survive a
 * save and a load bit for bit (the export tool's path). */
static void network_shapes_and_weights_round_trip(void **state)
{
	(void)state;
	df_error err;
	df_ctx *ctx;
	fmnist_net *net, *copy;
	assert_int_equal(df_ctx_create(&ctx, "cpu", 1, &err), 0);
	assert_int_equal(fmnist_net_create(&net, ctx, &err), 0);
	assert_int_equal(fmnist_net_create(&copy, ctx, &err), 0);
	assert_true(df_params_numel(net->params) <= 100000);
	assert_int_equal(fmnist_net_init(net, 5, &err), 0);
	df_graph *g = df_graph_create(ctx, DF_GRAPH_NO_GRAD);
	df_tensor *x = df_tensor_zeros(g, DF_SHAPE(3, 1, 28, 28)), *feat = NULL, *logits = NULL;
	assert_int_equal(fmnist_net_forward(net, g, x, &feat, &logits, &err), 0);
	assert_int_equal(feat->shape[0], 3);
	assert_int_equal(feat->shape[1], FMNIST_NET_FEATURES);
	assert_int_equal(logits->shape[1], FMNIST_NET_CLASSES);
	df_tensor *wrong = df_tensor_zeros(g, DF_SHAPE(3, 1, 32, 32));
	assert_int_equal(fmnist_net_forward(net, g, wrong, &feat, &logits, &err), DF_EINVAL);
	char *dir = make_temp_dir(), *path = path_join(dir, "w.safetensors");
	assert_int_equal(fmnist_net_save(net, path, &err), 0);
	assert_int_equal(fmnist_net_load(copy, path, &err), 0);
	int64_t n = df_params_numel(net->params);
	float *a = malloc((size_t)n * sizeof *a), *b = malloc((size_t)n * sizeof *b);
	assert_int_equal(df_params_read(net->params, a, &err), 0);
	assert_int_equal(df_params_read(copy->params, b, &err), 0);
	assert_memory_equal(a, b, (size_t)n * sizeof *a);
	free(a);
	free(b);
	remove_tree(dir);
	free(path);
	free(dir);
	df_graph_destroy(g);
	fmnist_net_destroy(net);
	fmnist_net_destroy(copy);
	df_ctx_destroy(ctx);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(shipped_weights_reach_92_percent_on_the_test_set),
		cmocka_unit_test(class_acc_refuses_bad_labels),
		cmocka_unit_test(network_shapes_and_weights_round_trip),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
