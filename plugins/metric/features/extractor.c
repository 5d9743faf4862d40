/* Feature extraction shared by the metric plugins (features.h). */
#include "config.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "diffuse/tensor.h"
#include "extractor.h"
#include "feature_store.h"
#include "classifier.h"
#include "fmnist_net.h"
#include "inception.h"

const char *const dff_feature_names[] = {"fmnist-net", "inception", "pixels", NULL};
enum { FEATURES_FMNIST, FEATURES_INCEPTION, FEATURES_PIXELS };

/* Images per network pass: bounds the graph's arena. */
#define DFF_CHUNK 256
/* Inception at 299x299: a few images per pass bound the arena (blocks reuse
 * memory; 8 images take about 260 MB). */
#define DFF_INCEPTION_CHUNK 8

struct dff_extractor {
	int kind;
	df_shape3 image;
	int crop; /* rows/columns cut from each side to reach 28x28 */
	fmnist_net *net;
	dff_inception *inception;
	df_graph *graph;
	float *chunk; /* DFF_CHUNK cropped images, or DFF_INCEPTION_CHUNK resized ones */
};

const char *dff_default_weights(char *buf, size_t size)
{
	const char *dir = getenv("DIFFUSE_DATA_DIR");
	snprintf(buf, size, "%s/fmnist-net.safetensors", dir && *dir ? dir : DF_PKGDATADIR);
	return buf;
}

static int create_fmnist(dff_extractor *fx, const dff_settings *s, df_ctx *ctx, df_error *err)
{
	const df_shape3 im = fx->image;
	int extra = im.height - FMNIST_NET_SIZE;
	if (im.channels != 1 || im.height != im.width || extra < 0 || extra % 2)
		return df_error_set(err, DF_EINVAL,
		                    "features fmnist-net: takes 1x28x28 images (or centred padding of them), not %dx%dx%d",
		                    im.channels, im.height, im.width);
	fx->crop = extra / 2;
	char path[4096];
	const char *weights = s->weights && *s->weights ? s->weights : dff_default_weights(path, sizeof path);
	int rc = fmnist_net_create(&fx->net, ctx, err);
	if (!rc)
		rc = fmnist_net_load(fx->net, weights, err);
	if (rc)
		return df_error_prefix(err, rc, "features fmnist-net");
	fx->graph = df_graph_create(ctx, DF_GRAPH_NO_GRAD);
	fx->chunk = malloc((size_t)DFF_CHUNK * FMNIST_NET_SIZE * FMNIST_NET_SIZE * sizeof *fx->chunk);
	if (!fx->graph || !fx->chunk)
		return df_error_set(err, DF_ENOMEM, "features fmnist-net: out of memory");
	return DF_OK;
}

/* FID's Inception v3: the weights must be brought (nothing ships them). */
static int create_inception(dff_extractor *fx, const dff_settings *s, df_ctx *ctx, df_error *err)
{
	const df_shape3 im = fx->image;
	if (im.channels != 1 && im.channels != 3)
		return df_error_set(err, DF_EINVAL, "features inception: takes 1- or 3-channel images, not %d channels",
		                    im.channels);
	if (!s->weights || !*s->weights)
		return df_error_set(err, DF_EINVAL,
		                    "features inception: set weights to the safetensors file of FID's Inception v3 "
		                    "(the pytorch-fid state_dict)");
	int rc = dff_inception_create_from_file(&fx->inception, ctx, s->weights, err);
	if (rc)
		return df_error_prefix(err, rc, "features inception");
	const size_t image = (size_t)3 * DFF_INCEPTION_SIZE * DFF_INCEPTION_SIZE;
	fx->graph = df_graph_create(ctx, DF_GRAPH_NO_GRAD);
	fx->chunk = malloc(DFF_INCEPTION_CHUNK * image * sizeof *fx->chunk);
	if (!fx->graph || !fx->chunk)
		return df_error_set(err, DF_ENOMEM, "features inception: out of memory");
	return DF_OK;
}

int dff_create(dff_extractor **out, const dff_settings *s, df_ctx *ctx, df_shape3 image, df_error *err)
{
	*out = NULL;
	int kind = df_choice_index(dff_feature_names, s->features);
	if (kind < 0)
		return df_error_set(err, DF_EINVAL, "features: unknown '%s' (fmnist-net, inception, pixels)", s->features);
	if (image.channels <= 0 || image.height <= 0 || image.width <= 0)
		return df_error_set(err, DF_EINVAL, "features: bad image shape %dx%dx%d", image.channels, image.height,
		                    image.width);
	dff_extractor *fx = calloc(1, sizeof *fx);
	if (!fx)
		return df_error_set(err, DF_ENOMEM, "features: out of memory");
	fx->kind = kind;
	fx->image = image;
	int rc = kind == FEATURES_FMNIST      ? create_fmnist(fx, s, ctx, err)
	         : kind == FEATURES_INCEPTION ? create_inception(fx, s, ctx, err)
	                                      : DF_OK;
	if (rc) {
		dff_destroy(fx);
		return rc;
	}
	*out = fx;
	return DF_OK;
}

void dff_destroy(dff_extractor *fx)
{
	if (!fx)
		return;
	fmnist_net_destroy(fx->net);
	dff_inception_destroy(fx->inception);
	df_graph_destroy(fx->graph);
	free(fx->chunk);
	free(fx);
}

int dff_dim(const dff_extractor *fx)
{
	if (fx->kind == FEATURES_FMNIST)
		return FMNIST_NET_FEATURES;
	if (fx->kind == FEATURES_INCEPTION)
		return DFF_INCEPTION_FEATURES;
	return fx->image.channels * fx->image.height * fx->image.width;
}

int dff_classes(const dff_extractor *fx)
{
	return fx->kind == FEATURES_FMNIST ? FMNIST_NET_CLASSES : 0;
}

static int extract_fmnist(dff_extractor *fx, const float *images, int64_t n, float *features, float *logits,
                          df_error *err)
{
	const int side = fx->image.height, size = FMNIST_NET_SIZE;
	for (int64_t start = 0; start < n; start += DFF_CHUNK) {
		int64_t b = n - start < DFF_CHUNK ? n - start : DFF_CHUNK;
		for (int64_t i = 0; i < b; i++)
			for (int r = 0; r < size; r++)
				memcpy(fx->chunk + (i * size + r) * size,
				       images + ((start + i) * side + r + fx->crop) * side + fx->crop, size * sizeof(float));
		df_graph_reset(fx->graph);
		df_tensor *x = df_tensor_from_host(fx->graph, fx->chunk, DF_SHAPE(b, 1, size, size));
		df_tensor *feat = NULL, *out = NULL;
		int rc = df_graph_status(fx->graph, err);
		if (!rc)
			rc = fmnist_net_forward(fx->net, fx->graph, x, &feat, logits ? &out : NULL, err);
		if (!rc && features)
			rc = df_tensor_read(feat, features + start * FMNIST_NET_FEATURES, err);
		if (!rc && logits)
			rc = df_tensor_read(out, logits + start * FMNIST_NET_CLASSES, err);
		if (rc)
			return rc;
	}
	return DF_OK;
}

static int extract_inception(dff_extractor *fx, const float *images, int64_t n, float *features, df_error *err)
{
	const df_shape3 im = fx->image;
	const size_t image = (size_t)im.channels * im.height * im.width;
	const size_t resized = (size_t)3 * DFF_INCEPTION_SIZE * DFF_INCEPTION_SIZE;
	for (int64_t start = 0; start < n; start += DFF_INCEPTION_CHUNK) {
		int64_t b = n - start < DFF_INCEPTION_CHUNK ? n - start : DFF_INCEPTION_CHUNK;
		for (int64_t i = 0; i < b; i++)
			dff_inception_resize(images + (size_t)(start + i) * image, im.channels, im.height, im.width,
			                     fx->chunk + (size_t)i * resized);
		df_graph_reset(fx->graph);
		df_tensor *x = df_tensor_from_host(fx->graph, fx->chunk,
		                                   DF_SHAPE(b, 3, DFF_INCEPTION_SIZE, DFF_INCEPTION_SIZE));
		df_tensor *feat = NULL;
		int rc = df_graph_status(fx->graph, err);
		if (!rc)
			rc = dff_inception_forward(fx->inception, fx->graph, x, &feat, err);
		if (!rc && features)
			rc = df_tensor_read(feat, features + start * DFF_INCEPTION_FEATURES, err);
		if (rc)
			return rc;
	}
	return DF_OK;
}

int dff_extract(dff_extractor *fx, const float *images, int64_t n, float *features, float *logits, df_error *err)
{
	if (n < 0 || (n > 0 && !images))
		return df_error_set(err, DF_EINVAL, "features: no images");
	if (logits && dff_classes(fx) == 0)
		return df_error_set(err, DF_EINVAL, "features %s: has no classifier head", dff_feature_names[fx->kind]);
	if (fx->kind == FEATURES_PIXELS) {
		if (features)
			memcpy(features, images, (size_t)n * (size_t)dff_dim(fx) * sizeof *features);
		return DF_OK;
	}
	if (fx->kind == FEATURES_INCEPTION)
		return extract_inception(fx, images, n, features, err);
	return extract_fmnist(fx, images, n, features, logits, err);
}

void dff_softmax_rows(float *logits, int64_t n, int k)
{
	for (int64_t i = 0; i < n; i++) {
		float *row = logits + i * k;
		float top = row[0];
		for (int j = 1; j < k; j++)
			top = row[j] > top ? row[j] : top;
		double sum = 0;
		for (int j = 0; j < k; j++) {
			row[j] = expf(row[j] - top);
			sum += row[j];
		}
		for (int j = 0; j < k; j++)
			row[j] = (float)(row[j] / sum);
	}
}

int dff_store_add(dff_store *s, dff_extractor *fx, const float *images, int64_t n, df_error *err)
{
	s->dim = dff_dim(fx);
	if (s->count + n > s->capacity) {
		int64_t cap = s->capacity ? s->capacity : 1024;
		while (cap < s->count + n)
			cap *= 2;
		float *grown = realloc(s->rows, (size_t)cap * (size_t)s->dim * sizeof *grown);
		if (!grown)
			return df_error_set(err, DF_ENOMEM, "features: out of memory for %lld images", (long long)cap);
		s->rows = grown;
		s->capacity = cap;
	}
	int rc = dff_extract(fx, images, n, s->rows + s->count * s->dim, NULL, err);
	if (!rc)
		s->count += n;
	return rc;
}

void dff_store_free(dff_store *s)
{
	free(s->rows);
	memset(s, 0, sizeof *s);
}

int dff_classifier_create(dff_classifier *c, const dff_settings *s, df_ctx *ctx, df_shape3 image,
                          const char *metric, df_error *err)
{
	memset(c, 0, sizeof *c);
	int rc = dff_create(&c->fx, s, ctx, image, err);
	if (rc)
		return rc;
	c->classes = dff_classes(c->fx);
	if (c->classes == 0) {
		dff_classifier_free(c);
		return df_error_set(err, DF_EINVAL, "%s: features %s have no classifier head (use fmnist-net)", metric,
		                    s->features);
	}
	return DF_OK;
}

void dff_classifier_free(dff_classifier *c)
{
	dff_destroy(c->fx);
	free(c->probs);
	memset(c, 0, sizeof *c);
}

int dff_classifier_run(dff_classifier *c, const float *images, int64_t n, df_error *err)
{
	if (n > c->capacity) {
		float *grown = realloc(c->probs, (size_t)n * (size_t)c->classes * sizeof *grown);
		if (!grown)
			return df_error_set(err, DF_ENOMEM, "out of memory");
		c->probs = grown;
		c->capacity = n;
	}
	int rc = dff_extract(c->fx, images, n, NULL, c->probs, err);
	if (!rc)
		dff_softmax_rows(c->probs, n, c->classes);
	return rc;
}
