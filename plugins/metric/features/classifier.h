/* What the class-based metrics share: an extractor that must have a
 * classifier head, and a buffer of class probabilities per batch. */
#ifndef DIFFUSE_METRIC_CLASSIFIER_H
#define DIFFUSE_METRIC_CLASSIFIER_H

#include "extractor.h"

typedef struct dff_classifier {
	dff_extractor *fx;
	int classes;
	float *probs;
	int64_t capacity;
} dff_classifier;

/* Refuses feature networks without a classifier head, naming `metric`. */
int dff_classifier_create(dff_classifier *c, const dff_settings *s, df_ctx *ctx, df_shape3 image,
                          const char *metric, df_error *err);
void dff_classifier_free(dff_classifier *c);
/* c->probs (n, classes) = softmax of the logits of images. */
int dff_classifier_run(dff_classifier *c, const float *images, int64_t n, df_error *err);

#endif
