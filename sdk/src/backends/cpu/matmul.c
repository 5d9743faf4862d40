/* Linear layers and batched matrix products on OpenBLAS. Transposes are
 * sgemm flags, never copies. */
#include "config.h"
#include <cblas.h>
#include <omp.h>
#include "cpu.h"

static void cpu_linear_forward(const df_backend *be, float *out, const float *x, const float *w, const float *b,
                               int64_t m, int64_t in, int64_t o)
{
	float beta = 0.0f;
	if (b) {
		/* Start from the bias and let sgemm add into it (beta 1). */
#pragma omp parallel for num_threads(be->threads) if (m * o > DFI_CPU_PARALLEL_MIN)
		for (int64_t r = 0; r < m; r++)
			for (int64_t c = 0; c < o; c++)
				out[r * o + c] = b[c];
		beta = 1.0f;
	}
	dfi_cpu_blas_threads(be->threads);
	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)m, (int)o, (int)in, 1.0f, x, (int)in, w, (int)in,
	            beta, out, (int)o);
}

static void cpu_linear_backward(const df_backend *be, float *dx, float *dw, float *db, const float *dout,
                                const float *x, const float *w, int64_t m, int64_t in, int64_t o)
{
	dfi_cpu_blas_threads(be->threads);
	if (dx) /* dx (m, in) += dout (m, o) w (o, in) */
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m, (int)in, (int)o, 1.0f, dout, (int)o, w,
		            (int)in, 1.0f, dx, (int)in);
	if (dw) /* dw (o, in) += dout^T (o, m) x (m, in) */
		cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)o, (int)in, (int)m, 1.0f, dout, (int)o, x,
		            (int)in, 1.0f, dw, (int)in);
	if (db) {
		/* Column sums: each thread owns a range of columns, rows in order,
		 * so the result does not depend on the thread count. */
#pragma omp parallel num_threads(be->threads) if (m * o > DFI_CPU_PARALLEL_MIN)
		{
			int nt = omp_get_num_threads(), id = omp_get_thread_num();
			int64_t c0 = o * id / nt, c1 = o * (id + 1) / nt;
			for (int64_t r = 0; r < m; r++) {
				const float *row = dout + r * o;
				for (int64_t c = c0; c < c1; c++)
					db[c] += row[c];
			}
		}
	}
}

/* One product c = op(a) op(b) (+ beta c) in row-major storage. */
static void gemm(const float *a, const float *b, float *c, int64_t m, int64_t n, int64_t k, int trans_a,
                 int trans_b, float beta)
{
	cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, (int)m,
	            (int)n, (int)k, 1.0f, a, trans_a ? (int)m : (int)k, b, trans_b ? (int)k : (int)n, beta, c, (int)n);
}

/* Batches of small products go one per thread with single-threaded sgemm;
 * one large product goes to OpenBLAS's threads. */
static int per_thread_batches(const df_backend *be, int64_t batch, int64_t m, int64_t n, int64_t k)
{
	return be->threads > 1 && batch >= be->threads && m * n * k < (int64_t)256 * 256 * 256;
}

static void cpu_matmul_forward(const df_backend *be, float *c, const float *a, const float *b, int64_t batch,
                               int64_t m, int64_t n, int64_t k, int trans_a, int trans_b)
{
	if (per_thread_batches(be, batch, m, n, k)) {
		dfi_cpu_blas_threads(1);
#pragma omp parallel for num_threads(be->threads) schedule(static)
		for (int64_t i = 0; i < batch; i++)
			gemm(a + i * m * k, b + i * k * n, c + i * m * n, m, n, k, trans_a, trans_b, 0.0f);
		dfi_cpu_blas_threads(be->threads);
		return;
	}
	dfi_cpu_blas_threads(be->threads);
	for (int64_t i = 0; i < batch; i++)
		gemm(a + i * m * k, b + i * k * n, c + i * m * n, m, n, k, trans_a, trans_b, 0.0f);
}

/* Gradients of c = op(a) op(b) for one batch entry:
 *   op(a) = a:   da (m, k) += dc b'^T      op(a) = a^T: da (k, m) += b' dc^T
 *   op(b) = b:   db (k, n) += a'^T dc      op(b) = b^T: db (n, k) += dc^T a'
 * where a' = op(a), b' = op(b) are expressed through the stored a and b. */
static void matmul_backward_one(float *da, float *db, const float *dc, const float *a, const float *b, int64_t m,
                                int64_t n, int64_t k, int trans_a, int trans_b)
{
	if (da) {
		if (!trans_a) /* da = dc op(b)^T: (m, n) x (n, k) */
			gemm(dc, b, da, m, k, n, 0, !trans_b, 1.0f);
		else /* da = op(b) dc^T: (k, n) x (n, m) */
			gemm(b, dc, da, k, m, n, trans_b, 1, 1.0f);
	}
	if (db) {
		if (!trans_b) /* db = op(a)^T dc: (k, m) x (m, n) */
			gemm(a, dc, db, k, n, m, !trans_a, 0, 1.0f);
		else /* db = dc^T op(a): (n, m) x (m, k) */
			gemm(dc, a, db, n, k, m, 1, trans_a, 1.0f);
	}
}

static void cpu_matmul_backward(const df_backend *be, float *da, float *db, const float *dc, const float *a,
                                const float *b, int64_t batch, int64_t m, int64_t n, int64_t k, int trans_a,
                                int trans_b)
{
	int per_thread = per_thread_batches(be, batch, m, n, k);
	dfi_cpu_blas_threads(per_thread ? 1 : be->threads);
#pragma omp parallel for num_threads(be->threads) schedule(static) if (per_thread)
	for (int64_t i = 0; i < batch; i++)
		matmul_backward_one(da ? da + i * m * k : NULL, db ? db + i * k * n : NULL, dc + i * m * n,
		                    a + i * m * k, b + i * k * n, m, n, k, trans_a, trans_b);
	dfi_cpu_blas_threads(be->threads);
}

void dfi_cpu_install_matmul(df_backend *be)
{
	be->linear_forward = cpu_linear_forward;
	be->linear_backward = cpu_linear_backward;
	be->matmul_forward = cpu_matmul_forward;
	be->matmul_backward = cpu_matmul_backward;
}
