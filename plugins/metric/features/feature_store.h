/* Features of a whole set kept in memory, for the metrics that need every
 * point (precision/recall) rather than running sums. */
#ifndef DIFFUSE_METRIC_FEATURE_STORE_H
#define DIFFUSE_METRIC_FEATURE_STORE_H

#include <stdint.h>
#include "extractor.h"

typedef struct dff_store {
	int dim;
	int64_t count, capacity;
	float *rows; /* (count, dim) */
} dff_store;

/* Runs the extractor on images and appends the features. */
int dff_store_add(dff_store *s, dff_extractor *fx, const float *images, int64_t n, df_error *err);
void dff_store_free(dff_store *s);

#endif
