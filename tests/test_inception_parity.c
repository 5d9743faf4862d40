/* FID's Inception v3 against the PyTorch FID port (pytorch-fid): the pool3
 * features of two images match the port's, computed in float64 by
 * tests/reference/inception_reference.py, within 1e-4 relative. Neither
 * side downloads weights: both fill every state_dict tensor by the formula
 * below (documented in that script), so only the images and the features
 * are committed. Also: the feature extractor refuses the network without a
 * weights file, and a file that is not Inception's is named as such. */
#include "config.h"
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "diffuse/io.h"
#include "diffuse/tensor.h"
#include "extractor.h"
#include "golden.h"
#include "inception.h"
#include <unistd.h>

#define PARITY_TOLERANCE 1e-4

static uint32_t fnv1a32(const char *text)
{
	uint32_t h = 2166136261u;
	for (const unsigned char *p = (const unsigned char *)text; *p; p++)
		h = (h ^ *p) * 16777619u;
	return h;
}

static uint32_t lowbias32(uint32_t x)
{
	x ^= x >> 16;
	x *= 0x7feb352du;
	x ^= x >> 15;
	x *= 0x846ca68bu;
	return x ^ (x >> 16);
}

static int ends_with(const char *s, const char *suffix)
{
	size_t n = strlen(s), m = strlen(suffix);
	return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* The reference script's formula: u in [0, 1) from a hash of (name,
 * element index), then the same double expression per kind of tensor. */
static int formula_weights(void *arg, const char *name, int ndim, const int64_t *shape, float *values,
                           df_error *err)
{
	(void)arg;
	int64_t n = 1;
	for (int d = 0; d < ndim; d++)
		n *= shape[d];
	const uint32_t key = fnv1a32(name);
	const int conv = ends_with(name, ".conv.weight");
	const int scale_like = ends_with(name, ".bn.weight") || ends_with(name, ".bn.running_var");
	const int shift_like = ends_with(name, ".bn.bias") || ends_with(name, ".bn.running_mean");
	if (!conv && !scale_like && !shift_like)
		return df_error_set(err, DF_EINVAL, "no formula for %s", name);
	const double bound = sqrt(6.0 / (double)(n / shape[0]));
	for (int64_t i = 0; i < n; i++) {
		const double u = (double)(lowbias32((uint32_t)i ^ key) >> 8) / 16777216.0;
		values[i] = (float)(conv ? (2 * u - 1) * bound : scale_like ? 0.5 + u : 0.2 * (2 * u - 1));
	}
	return DF_OK;
}

static void features_match_the_pytorch_port(void **state)
{
	(void)state;
	df_safetensors *golden = golden_open(INCEPTION_TEST_DATA_DIR, "inception_parity.safetensors");
	size_t image_count, feature_count;
	float *images = golden_read(golden, "images", &image_count);
	float *want = golden_read(golden, "features", &feature_count);
	const int n = 2, side = 28;
	assert_int_equal(image_count, (size_t)n * side * side);
	assert_int_equal(feature_count, (size_t)n * DFF_INCEPTION_FEATURES);

	df_error err = {0};
	df_ctx *ctx;
	dff_inception *net;
	assert_int_equal(df_ctx_create(&ctx, "cpu", 0, &err), 0);
	if (dff_inception_create(&net, ctx, formula_weights, NULL, &err))
		fail_msg("%s", err.msg);
	const size_t resized = (size_t)3 * DFF_INCEPTION_SIZE * DFF_INCEPTION_SIZE;
	float *x = malloc(n * resized * sizeof *x);
	assert_non_null(x);
	for (int i = 0; i < n; i++)
		dff_inception_resize(images + (size_t)i * side * side, 1, side, side, x + i * resized);
	df_graph *g = df_graph_create(ctx, DF_GRAPH_NO_GRAD);
	df_tensor *input = df_tensor_from_host(g, x, DF_SHAPE(n, 3, DFF_INCEPTION_SIZE, DFF_INCEPTION_SIZE));
	df_tensor *features = NULL;
	if (dff_inception_forward(net, g, input, &features, &err))
		fail_msg("%s", err.msg);
	assert_int_equal(features->shape[0], n);
	assert_int_equal(features->shape[1], DFF_INCEPTION_FEATURES);
	float *got = malloc(feature_count * sizeof *got);
	assert_int_equal(df_tensor_read(features, got, &err), 0);
	double worst = golden_compare("inception pool3 features", got, want, feature_count, PARITY_TOLERANCE);
	assert_true(worst <= PARITY_TOLERANCE);

	free(got);
	free(x);
	df_graph_destroy(g);
	dff_inception_destroy(net);
	df_ctx_destroy(ctx);
	free(images);
	free(want);
	df_safetensors_close(golden);
}

static void extractor_needs_the_weights_file(void **state)
{
	(void)state;
	df_error err = {0};
	df_ctx *ctx;
	dff_extractor *fx = NULL;
	assert_int_equal(df_ctx_create(&ctx, "cpu", 1, &err), 0);
	dff_settings s = {.features = "inception", .weights = ""};
	assert_int_equal(dff_create(&fx, &s, ctx, (df_shape3){1, 28, 28}, &err), DF_EINVAL);
	assert_non_null(strstr(err.msg, "weights"));
	assert_null(fx);
	/* two channels: neither grey nor colour */
	s.weights = "unused.safetensors";
	assert_int_equal(dff_create(&fx, &s, ctx, (df_shape3){2, 28, 28}, &err), DF_EINVAL);
	assert_non_null(strstr(err.msg, "channels"));

	/* a weights file of something else: the first missing tensor named */
	const char *base = getenv("TMPDIR");
	char dir[1024], path[1100];
	snprintf(dir, sizeof dir, "%s/diffuse-test-XXXXXX", base && *base ? base : ".");
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof path, "%s/other.safetensors", dir);
	float value = 1.0f;
	const df_safetensors_entry entry = {"fc.weight", DF_ST_F32, 1, (const int64_t[]){1}, &value};
	assert_int_equal(df_safetensors_write(path, &entry, 1, NULL, 0, &err), 0);
	s.weights = path;
	assert_int_equal(dff_create(&fx, &s, ctx, (df_shape3){1, 28, 28}, &err), DF_EINVAL);
	assert_non_null(strstr(err.msg, "blocks.0.0.conv.weight is missing"));
	unlink(path);
	rmdir(dir);
	df_ctx_destroy(ctx);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(features_match_the_pytorch_port),
		cmocka_unit_test(extractor_needs_the_weights_file),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
