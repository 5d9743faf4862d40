/* Gaussian fits of feature sets and the Fréchet distance between them. */
#ifndef DIFFUSE_METRIC_GAUSSIAN_H
#define DIFFUSE_METRIC_GAUSSIAN_H

#include <stdint.h>
#include "diffuse/error.h"

/* Streaming mean and covariance, accumulated in double around a shift
 * (the first batch's mean), so large feature means cost no precision. */
typedef struct dff_moments {
	int dim;
	int64_t count;
	double *shift; /* (dim) */
	double *sum;   /* (dim) of x - shift */
	double *outer; /* (dim, dim) upper triangle of sum (x - shift)(x - shift)^T */
	double *rows;  /* scratch for one batch in double */
	int64_t rows_cap;
} dff_moments;

int dff_moments_init(dff_moments *m, int dim, df_error *err);
void dff_moments_free(dff_moments *m);
int dff_moments_add(dff_moments *m, const float *x, int64_t n, df_error *err);
/* mean (dim) and the unbiased covariance (dim, dim), full; needs count >= 2. */
int dff_moments_get(const dff_moments *m, double *mean, double *cov, df_error *err);

/* The accumulated state as a safetensors file (count, shift, sum, outer in
 * double) tagged with `tag` (what made the features), and back: loading
 * refuses a file of another dimension or tag. */
int dff_moments_save(const dff_moments *m, const char *path, const char *tag, df_error *err);
int dff_moments_load(dff_moments *m, const char *path, const char *tag, df_error *err);

/* || mu1 - mu2 ||^2 + tr(S1) + tr(S2) - 2 tr((S1^1/2 S2 S1^1/2)^1/2), the
 * square roots through LAPACK's symmetric eigensolver (dsyevd); negative
 * eigenvalues of round-off are taken as 0. */
int dff_frechet(int dim, const double *mu1, const double *cov1, const double *mu2, const double *cov2,
                double *distance, df_error *err);

#endif
