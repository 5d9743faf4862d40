/* The feature extractors every metric plugin shares: one place that turns
 * images into the features FD and precision/recall compare and the class
 * probabilities class accuracy and the Inception score read.
 *
 *   fmnist-net  the shipped Fashion-MNIST classifier: 128 features (its
 *               penultimate layer) and 10 logits; takes 1-channel images of
 *               28x28, or larger squares padded with pad_to (centre-cropped)
 *   inception   FID's Inception v3 (pool3, 2048 features) from the weights
 *               file the user brings (inception.h); takes 1- or 3-channel
 *               images of any size, resized to 299x299 as pytorch-fid does
 *   pixels      the image itself, flattened (no network, no classes)
 */
#ifndef DIFFUSE_METRIC_EXTRACTOR_H
#define DIFFUSE_METRIC_EXTRACTOR_H

#include <stdint.h>
#include "diffuse/plugin.h"

typedef struct dff_extractor dff_extractor;

/* The settings every metric declares first, in this order. */
typedef struct dff_settings {
	const char *features;
	const char *weights;
} dff_settings;

extern const char *const dff_feature_names[];

#define DFF_SETTINGS(S)                                                                                     \
	DF_SETTING_CHOICE(S, features, "fmnist-net", dff_feature_names,                                    \
	                  "feature network: fmnist-net (shipped), pixels, inception (FID's; weights required)"), \
	DF_SETTING_STRING(S, weights, "",                                                                  \
	                  "weights of the feature network (safetensors); \"\": the shipped fmnist-net file; " \
	                  "inception needs FID's Inception v3 under pytorch-fid's state_dict names")

/* The shipped weights file: $DIFFUSE_DATA_DIR/fmnist-net.safetensors when
 * that variable is set, else the installed one. */
const char *dff_default_weights(char *buf, size_t size);

int dff_create(dff_extractor **fx, const dff_settings *settings, df_ctx *ctx, df_shape3 image, df_error *err);
void dff_destroy(dff_extractor *fx);
int dff_dim(const dff_extractor *fx);
/* Classes of the network's classifier head; 0 when it has none. */
int dff_classes(const dff_extractor *fx);
/* images (n, C, H, W) in [-1, 1] -> features (n, dim) and, when logits is
 * not NULL, the classifier's logits (n, classes). Either may be NULL. */
int dff_extract(dff_extractor *fx, const float *images, int64_t n, float *features, float *logits, df_error *err);

/* Softmax of each row of logits (n, k) in place. */
void dff_softmax_rows(float *logits, int64_t n, int k);

#endif
