/* k-nearest-neighbour manifolds of feature sets (Kynkäänniemi et al.,
 * "Improved precision and recall metric", 2019): a set's manifold is the
 * union of balls around its points, each with the radius of its k-th
 * nearest neighbour in the set. */
#ifndef DIFFUSE_METRIC_MANIFOLD_H
#define DIFFUSE_METRIC_MANIFOLD_H

#include <stdint.h>
#include "diffuse/error.h"

/* radii (n): squared distance of each row of x (n, dim) to its k-th
 * nearest other row. Needs n > k. */
int dff_knn_radii(const float *x, int64_t n, int dim, int k, float *radii, df_error *err);

/* The fraction of the rows of q (nq, dim) inside the manifold of
 * x (nx, dim) with squared radii (nx). */
int dff_manifold_coverage(const float *x, const float *radii, int64_t nx, const float *q, int64_t nq, int dim,
                          double *fraction, df_error *err);

#endif
