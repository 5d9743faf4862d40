/* k-NN manifolds (manifold.h). Squared distances come block by block from
 * one sgemm each: |a - b|^2 = |a|^2 + |b|^2 - 2 a.b. */
#include "config.h"
#include <cblas.h>
#include <stdlib.h>
#include <string.h>
#include "manifold.h"

/* Rows of the query side per block: the block of distances is
 * DFF_BLOCK x (other side) floats. */
#define DFF_BLOCK 256

static void row_norms(const float *x, int64_t n, int dim, float *norms)
{
	for (int64_t i = 0; i < n; i++) {
		double s = 0;
		for (int j = 0; j < dim; j++)
			s += (double)x[i * dim + j] * x[i * dim + j];
		norms[i] = (float)s;
	}
}

/* dist (b, nx) = squared distances of q rows [0, b) to every x row. */
static void block_distances(const float *q, const float *qn, int64_t b, const float *x, const float *xn, int64_t nx,
                            int dim, float *dist)
{
	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)b, (int)nx, dim, -2.0f, q, dim, x, dim, 0.0f, dist,
	            (int)nx);
	for (int64_t i = 0; i < b; i++)
		for (int64_t j = 0; j < nx; j++) {
			float d = dist[i * nx + j] + qn[i] + xn[j];
			dist[i * nx + j] = d > 0 ? d : 0;
		}
}

static int buffers(float **norms, int64_t n, float **dist, int64_t cols, df_error *err)
{
	*norms = malloc((size_t)n * sizeof **norms);
	*dist = malloc((size_t)DFF_BLOCK * (size_t)cols * sizeof **dist);
	if (*norms && *dist)
		return DF_OK;
	free(*norms);
	free(*dist);
	return df_error_set(err, DF_ENOMEM, "k-NN: out of memory for %lld points", (long long)cols);
}

int dff_knn_radii(const float *x, int64_t n, int dim, int k, float *radii, df_error *err)
{
	if (k < 1 || n <= k)
		return df_error_set(err, DF_EINVAL, "k-NN: %lld points cannot have a %d-th nearest neighbour",
		                    (long long)n, k);
	float *norms, *dist;
	int rc = buffers(&norms, n, &dist, n, err);
	if (rc)
		return rc;
	row_norms(x, n, dim, norms);
	float *best = malloc((size_t)(k + 1) * sizeof *best);
	for (int64_t start = 0; best && start < n; start += DFF_BLOCK) {
		int64_t b = n - start < DFF_BLOCK ? n - start : DFF_BLOCK;
		block_distances(x + start * dim, norms + start, b, x, norms, n, dim, dist);
		for (int64_t i = 0; i < b; i++) {
			/* The k + 1 smallest, kept sorted (the point itself is one
			 * of them at distance 0). */
			int have = 0;
			for (int64_t j = 0; j < n; j++) {
				float d = j == start + i ? 0.0f : dist[i * n + j];
				if (have == k + 1 && d >= best[k])
					continue;
				int pos = have < k + 1 ? have++ : k;
				while (pos > 0 && best[pos - 1] > d) {
					best[pos] = best[pos - 1];
					pos--;
				}
				best[pos] = d;
			}
			radii[start + i] = best[k];
		}
	}
	if (!best)
		rc = df_error_set(err, DF_ENOMEM, "k-NN: out of memory");
	free(best);
	free(norms);
	free(dist);
	return rc;
}

int dff_manifold_coverage(const float *x, const float *radii, int64_t nx, const float *q, int64_t nq, int dim,
                          double *fraction, df_error *err)
{
	if (nx < 1 || nq < 1)
		return df_error_set(err, DF_EINVAL, "k-NN: an empty set (%lld and %lld points)", (long long)nx,
		                    (long long)nq);
	float *xn, *dist, *qn = malloc((size_t)nq * sizeof *qn);
	int rc = buffers(&xn, nx, &dist, nx, err);
	if (rc) {
		free(qn);
		return rc;
	}
	if (!qn) {
		free(xn);
		free(dist);
		return df_error_set(err, DF_ENOMEM, "k-NN: out of memory");
	}
	row_norms(x, nx, dim, xn);
	row_norms(q, nq, dim, qn);
	int64_t inside = 0;
	for (int64_t start = 0; start < nq; start += DFF_BLOCK) {
		int64_t b = nq - start < DFF_BLOCK ? nq - start : DFF_BLOCK;
		block_distances(q + start * dim, qn + start, b, x, xn, nx, dim, dist);
		for (int64_t i = 0; i < b; i++)
			for (int64_t j = 0; j < nx; j++)
				if (dist[i * nx + j] <= radii[j]) {
					inside++;
					break;
				}
	}
	*fraction = (double)inside / (double)nq;
	free(qn);
	free(xn);
	free(dist);
	return DF_OK;
}
