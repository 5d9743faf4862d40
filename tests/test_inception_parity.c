/* FID's Inception v3 against the PyTorch FID port (pytorch-fid): the pool3
 * features of two images match the port's, computed in float64 by
 * tests/reference/inception_reference.py, within 1e-4 relative. Neither
 * side downloads weights: both fill every state_dict tensor by the formula
 * below (documented in that script), so only the images and the features
 * are committed. The weights go through a safetensors file (under both
 * namings) and the metrics' feature extractor, as a user's would. Also:
 * the extractor refuses the network without a weights file, and a file
 * that is not Inception's is named as such. */
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
/* 94 convs, each a weight and 4 BatchNorm tensors. */
#define INCEPTION_TENSORS (94 * 5)

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

/* The tensors the network asked for, kept to be written to a file. */
struct recorded {
	int count;
	char names[INCEPTION_TENSORS][64];
	int ndim[INCEPTION_TENSORS];
	int64_t shape[INCEPTION_TENSORS][4];
	float *values[INCEPTION_TENSORS];
};

/* Fills by the formula and keeps a copy. The stem and the first mixed
 * block are filed under torchvision's names (those of the port's released
 * .pth), the rest under the port's own. */
static int record_weights(void *arg, const char *name, int ndim, const int64_t *shape, float *values,
                          df_error *err)
{
	struct recorded *r = arg;
	int rc = formula_weights(NULL, name, ndim, shape, values, err);
	if (rc)
		return rc;
	assert_true(r->count < INCEPTION_TENSORS);
	int64_t n = 1;
	for (int d = 0; d < ndim; d++)
		n *= r->shape[r->count][d] = shape[d];
	static const char *const renamed[][2] = {
		{"blocks.0.0.", "Conv2d_1a_3x3."}, {"blocks.0.1.", "Conv2d_2a_3x3."}, {"blocks.0.2.", "Conv2d_2b_3x3."},
		{"blocks.1.0.", "Conv2d_3b_1x1."}, {"blocks.1.1.", "Conv2d_4a_3x3."}, {"blocks.2.0.", "Mixed_5b."},
	};
	snprintf(r->names[r->count], sizeof r->names[0], "%s", name);
	for (size_t i = 0; i < sizeof renamed / sizeof *renamed; i++)
		if (strncmp(name, renamed[i][0], strlen(renamed[i][0])) == 0)
			snprintf(r->names[r->count], sizeof r->names[0], "%s%s", renamed[i][1], name + strlen(renamed[i][0]));
	r->ndim[r->count] = ndim;
	r->values[r->count] = malloc((size_t)n * sizeof(float));
	assert_non_null(r->values[r->count]);
	memcpy(r->values[r->count], values, (size_t)n * sizeof(float));
	r->count++;
	return DF_OK;
}

/* A scratch folder under $TMPDIR (or the working directory). */
static void make_scratch(char *dir, size_t size)
{
	const char *base = getenv("TMPDIR");
	snprintf(dir, size, "%s/diffuse-test-XXXXXX", base && *base ? base : ".");
	assert_non_null(mkdtemp(dir));
}

/* Formula weights -> a safetensors file -> the metrics' feature extractor
 * on the golden images (1 channel, 28x28, as Fashion-MNIST): the port's
 * features. */
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
	assert_int_equal(df_ctx_create(&ctx, "cpu", 0, &err), 0);
	struct recorded *rec = calloc(1, sizeof *rec);
	assert_non_null(rec);
	dff_inception *net;
	if (dff_inception_create(&net, ctx, record_weights, rec, &err))
		fail_msg("%s", err.msg);
	dff_inception_destroy(net);
	assert_int_equal(rec->count, INCEPTION_TENSORS);

	char dir[1024], path[1100];
	make_scratch(dir, sizeof dir);
	snprintf(path, sizeof path, "%s/inception.safetensors", dir);
	df_safetensors_entry *entries = calloc((size_t)rec->count, sizeof *entries);
	assert_non_null(entries);
	for (int i = 0; i < rec->count; i++)
		entries[i] = (df_safetensors_entry){rec->names[i], DF_ST_F32, rec->ndim[i], rec->shape[i], rec->values[i]};
	if (df_safetensors_write(path, entries, (size_t)rec->count, NULL, 0, &err))
		fail_msg("%s", err.msg);
	for (int i = 0; i < rec->count; i++)
		free(rec->values[i]);
	free(entries);
	free(rec);

	dff_extractor *fx;
	dff_settings settings = {.features = "inception", .weights = path};
	if (dff_create(&fx, &settings, ctx, (df_shape3){1, side, side}, &err))
		fail_msg("%s", err.msg);
	assert_int_equal(dff_dim(fx), DFF_INCEPTION_FEATURES);
	assert_int_equal(dff_classes(fx), 0);
	float *got = malloc(feature_count * sizeof *got);
	assert_non_null(got);
	if (dff_extract(fx, images, n, got, NULL, &err))
		fail_msg("%s", err.msg);
	double worst = golden_compare("inception pool3 features", got, want, feature_count, PARITY_TOLERANCE);
	assert_true(worst <= PARITY_TOLERANCE);

	unlink(path);
	rmdir(dir);
	free(got);
	dff_destroy(fx);
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
	char dir[1024], path[1100];
	make_scratch(dir, sizeof dir);
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
