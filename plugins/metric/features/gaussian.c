/* Gaussian fits and the Fréchet distance (gaussian.h). */
#include "config.h"
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "diffuse/io.h"
#include "gaussian.h"

/* LAPACK's symmetric eigensolver (Fortran interface; the trailing lengths
 * are those of the two character arguments). */
void dsyevd_(const char *jobz, const char *uplo, const int *n, double *a, const int *lda, double *w, double *work,
             const int *lwork, int *iwork, const int *liwork, int *info, size_t jobz_len, size_t uplo_len);

int dff_moments_init(dff_moments *m, int dim, df_error *err)
{
	memset(m, 0, sizeof *m);
	m->dim = dim;
	m->shift = calloc((size_t)dim, sizeof *m->shift);
	m->sum = calloc((size_t)dim, sizeof *m->sum);
	m->outer = calloc((size_t)dim * (size_t)dim, sizeof *m->outer);
	if (dim <= 0 || !m->shift || !m->sum || !m->outer) {
		dff_moments_free(m);
		return df_error_set(err, dim <= 0 ? DF_EINVAL : DF_ENOMEM, "moments: cannot hold %d features", dim);
	}
	return DF_OK;
}

void dff_moments_free(dff_moments *m)
{
	free(m->shift);
	free(m->sum);
	free(m->outer);
	free(m->rows);
	memset(m, 0, sizeof *m);
}

int dff_moments_add(dff_moments *m, const float *x, int64_t n, df_error *err)
{
	const int d = m->dim;
	if (n <= 0)
		return DF_OK;
	if (n > m->rows_cap) {
		double *grown = realloc(m->rows, (size_t)n * (size_t)d * sizeof *grown);
		if (!grown)
			return df_error_set(err, DF_ENOMEM, "moments: out of memory");
		m->rows = grown;
		m->rows_cap = n;
	}
	if (m->count == 0) {
		for (int64_t i = 0; i < n; i++)
			for (int j = 0; j < d; j++)
				m->shift[j] += x[i * d + j];
		for (int j = 0; j < d; j++)
			m->shift[j] /= (double)n;
	}
	for (int64_t i = 0; i < n; i++)
		for (int j = 0; j < d; j++) {
			double v = (double)x[i * d + j] - m->shift[j];
			m->rows[i * d + j] = v;
			m->sum[j] += v;
		}
	cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, d, (int)n, 1.0, m->rows, d, 1.0, m->outer, d);
	m->count += n;
	return DF_OK;
}

int dff_moments_get(const dff_moments *m, double *mean, double *cov, df_error *err)
{
	const int d = m->dim;
	const double n = (double)m->count;
	if (m->count < 2)
		return df_error_set(err, DF_EINVAL, "moments: a covariance needs at least 2 samples, have %lld",
		                    (long long)m->count);
	for (int j = 0; j < d; j++)
		mean[j] = m->shift[j] + m->sum[j] / n;
	for (int i = 0; i < d; i++)
		for (int j = i; j < d; j++) {
			double c = (m->outer[i * d + j] - m->sum[i] * m->sum[j] / n) / (n - 1.0);
			cov[i * d + j] = c;
			cov[j * d + i] = c;
		}
	return DF_OK;
}

int dff_moments_save(const dff_moments *m, const char *path, const char *tag, df_error *err)
{
	const int64_t one = 1, dim = m->dim, count = m->count;
	const df_safetensors_entry entries[] = {
		{"count", DF_ST_I64, 1, &one, &count},
		{"shift", DF_ST_F64, 1, &dim, m->shift},
		{"sum", DF_ST_F64, 1, &dim, m->sum},
		{"outer", DF_ST_F64, 2, (const int64_t[]){dim, dim}, m->outer},
	};
	const df_safetensors_meta meta[] = {{"features", tag}};
	return df_safetensors_write(path, entries, 4, meta, 1, err) ? DF_EIO : DF_OK;
}

/* A float64 tensor of exactly n values, copied out of the file. */
static int read_f64(const df_safetensors *st, const char *name, size_t n, double *dst)
{
	const df_safetensors_tensor *t = df_safetensors_find(st, name);
	if (!t || t->dtype != DF_ST_F64 || t->nelem != n)
		return -1;
	memcpy(dst, t->data, n * sizeof *dst);
	return 0;
}

int dff_moments_load(dff_moments *m, const char *path, const char *tag, df_error *err)
{
	df_safetensors *st = NULL;
	if (df_safetensors_open(&st, path, err) != 0)
		return DF_EIO;
	const char *made = df_safetensors_metadata(st, "features");
	const df_safetensors_tensor *count = df_safetensors_find(st, "count");
	const size_t d = (size_t)m->dim;
	int64_t n = 0;
	int rc = DF_OK;
	if (!made || strcmp(made, tag) != 0)
		rc = df_error_set(err, DF_EINVAL, "%s: statistics of features %s, not %s", path, made ? made : "(unknown)", tag);
	else if (!count || count->nelem != 1 || df_safetensors_read_i64(st, count, &n, 1, err) != 0 ||
	         read_f64(st, "shift", d, m->shift) || read_f64(st, "sum", d, m->sum) ||
	         read_f64(st, "outer", d * d, m->outer))
		rc = df_error_set(err, DF_EINVAL, "%s: not statistics of %d features", path, m->dim);
	else
		m->count = n;
	df_safetensors_close(st);
	return rc;
}

/* Eigenvalues (ascending) of the symmetric a (d, d), overwritten by the
 * eigenvectors as rows when vectors is set. */
static int symmetric_eigen(double *a, int d, double *w, int vectors, df_error *err)
{
	const char jobz = vectors ? 'V' : 'N', uplo = 'L';
	int lwork = -1, liwork = -1, info = 0, iwork_size = 0;
	double work_size = 0;
	dsyevd_(&jobz, &uplo, &d, a, &d, w, &work_size, &lwork, &iwork_size, &liwork, &info, 1, 1);
	if (info != 0)
		return df_error_set(err, DF_EINVAL, "dsyevd: workspace query failed (info %d)", info);
	lwork = (int)work_size;
	liwork = iwork_size;
	double *work = malloc((size_t)lwork * sizeof *work);
	int *iwork = malloc((size_t)liwork * sizeof *iwork);
	if (!work || !iwork) {
		free(work);
		free(iwork);
		return df_error_set(err, DF_ENOMEM, "dsyevd: out of memory");
	}
	dsyevd_(&jobz, &uplo, &d, a, &d, w, work, &lwork, iwork, &liwork, &info, 1, 1);
	free(work);
	free(iwork);
	if (info != 0)
		return df_error_set(err, DF_ENUMERIC, "dsyevd: the eigensolver did not converge (info %d)", info);
	return DF_OK;
}

int dff_frechet(int dim, const double *mu1, const double *cov1, const double *mu2, const double *cov2,
                double *distance, df_error *err)
{
	const int d = dim;
	const size_t dd = (size_t)d * (size_t)d;
	double *vec = malloc(dd * sizeof *vec), *root = malloc(dd * sizeof *root), *tmp = malloc(dd * sizeof *tmp);
	double *w = malloc((size_t)d * sizeof *w);
	int rc = DF_OK;
	if (!vec || !root || !tmp || !w) {
		rc = df_error_set(err, DF_ENOMEM, "fd: out of memory for %d features", d);
		goto done;
	}
	/* S1^1/2 = E^T diag(sqrt l) E with the eigenvectors as the rows of E:
	 * scale row i by l_i^1/4, then root = E'^T E'. */
	memcpy(vec, cov1, dd * sizeof *vec);
	if ((rc = symmetric_eigen(vec, d, w, 1, err)))
		goto done;
	for (int i = 0; i < d; i++) {
		double s = sqrt(sqrt(w[i] > 0 ? w[i] : 0));
		for (int j = 0; j < d; j++)
			vec[(size_t)i * d + j] *= s;
	}
	cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, d, d, d, 1.0, vec, d, vec, d, 0.0, root, d);
	/* S1^1/2 S2 S1^1/2, symmetrised against round-off. */
	cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, d, d, d, 1.0, cov2, d, root, d, 0.0, tmp, d);
	cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, d, d, d, 1.0, root, d, tmp, d, 0.0, vec, d);
	for (int i = 0; i < d; i++)
		for (int j = 0; j < i; j++)
			vec[(size_t)i * d + j] = vec[(size_t)j * d + i] =
			    0.5 * (vec[(size_t)i * d + j] + vec[(size_t)j * d + i]);
	if ((rc = symmetric_eigen(vec, d, w, 0, err)))
		goto done;
	double trace_root = 0, trace1 = 0, trace2 = 0, diff = 0;
	for (int i = 0; i < d; i++) {
		trace_root += sqrt(w[i] > 0 ? w[i] : 0);
		trace1 += cov1[(size_t)i * d + i];
		trace2 += cov2[(size_t)i * d + i];
		diff += (mu1[i] - mu2[i]) * (mu1[i] - mu2[i]);
	}
	double fd = diff + trace1 + trace2 - 2.0 * trace_root;
	/* Equal sets give a round-off residue of either sign. */
	*distance = fd > 0 ? fd : 0;
done:
	free(vec);
	free(root);
	free(tmp);
	free(w);
	return rc;
}
