/* Linear layers and batched matrix products on OpenBLAS. Transposes are
 * sgemm flags, never copies. */
#include "config.h"
#include <cblas.h>
#include <omp.h>
#include "cpu.h"

/* Linear layers run in one OpenMP region per call (a barrier costs most
 * when other work shares the cores). The rows are cut into more chunks
 * than threads, 16-aligned, and handed out as threads come free, so a
 * thread the machine delays leaves its share to the others instead of
 * making them wait; each chunk is a single-threaded sgemm. */
#define CHUNKS_PER_THREAD 4

static int64_t chunk_len(int64_t len, int threads)
{
	int64_t pieces = (int64_t)threads * CHUNKS_PER_THREAD;
	return ((len + pieces - 1) / pieces + 15) & ~(int64_t)15;
}

static int64_t chunk_count(int64_t len, int64_t chunk)
{
	return (len + chunk - 1) / chunk;
}

/* Whether a product of this size is worth the threads. */
static int linear_threads(const df_backend *be, int64_t m, int64_t in, int64_t o)
{
	dfi_cpu_blas_single_thread();
	return be->threads > 1 && m * in * o >= ((int64_t)1 << 21) ? be->threads : 1;
}

static void cpu_linear_forward(const df_backend *be, float *out, const float *x, const float *w, const float *b,
                               int64_t m, int64_t in, int64_t o)
{
	int threads = linear_threads(be, m, in, o);
	int64_t rows = chunk_len(m, threads), chunks = chunk_count(m, rows);
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
	for (int64_t chunk = 0; chunk < chunks; chunk++) {
		int64_t r0 = chunk * rows, r1 = r0 + rows < m ? r0 + rows : m;
		/* Start from the bias and let sgemm add into it (beta 1). */
		for (int64_t r = r0; b && r < r1; r++)
			for (int64_t c = 0; c < o; c++)
				out[r * o + c] = b[c];
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)(r1 - r0), (int)o, (int)in, 1.0f,
		            x + r0 * in, (int)in, w, (int)in, b ? 1.0f : 0.0f, out + r0 * o, (int)o);
	}
}

/* Two kinds of chunk in one work list: rows of dx (rows of the batch), and
 * rows of dw and db (output features): dw[o0:o1] += dout[:, o0:o1]^T x, and
 * the matching column sums of dout in row order, so db does not depend on
 * the chunking. */
static void cpu_linear_backward(const df_backend *be, float *dx, float *dw, float *db, const float *dout,
                                const float *x, const float *w, int64_t m, int64_t in, int64_t o)
{
	int threads = linear_threads(be, m, in, o);
	int64_t rows = chunk_len(m, threads), features = chunk_len(o, threads);
	int64_t dx_chunks = dx ? chunk_count(m, rows) : 0, dw_chunks = dw || db ? chunk_count(o, features) : 0;
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
	for (int64_t chunk = 0; chunk < dx_chunks + dw_chunks; chunk++) {
		if (chunk < dx_chunks) { /* dx (m, in) += dout (m, o) w (o, in) */
			int64_t r0 = chunk * rows, r1 = r0 + rows < m ? r0 + rows : m;
			cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)(r1 - r0), (int)in, (int)o, 1.0f,
			            dout + r0 * o, (int)o, w, (int)in, 1.0f, dx + r0 * in, (int)in);
			continue;
		}
		int64_t o0 = (chunk - dx_chunks) * features, o1 = o0 + features < o ? o0 + features : o;
		if (dw) /* dw (o, in) += dout^T (o, m) x (m, in) */
			cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)(o1 - o0), (int)in, (int)m, 1.0f, dout + o0,
			            (int)o, x, (int)in, 1.0f, dw + o0 * in, (int)in);
		for (int64_t r = 0; db && r < m; r++) {
			const float *row = dout + r * o;
#pragma omp simd
			for (int64_t c = o0; c < o1; c++)
				db[c] += row[c];
		}
	}
}

/* One product c = op(a) op(b) (+ beta c) in row-major storage; `be` NULL
 * inside an OpenMP region (single-threaded sgemm). */
static void gemm(const df_backend *be, const float *a, const float *b, float *c, int64_t m, int64_t n, int64_t k,
                 int trans_a, int trans_b, float beta)
{
	int64_t lda = trans_a ? m : k, ldb = trans_b ? k : n;
	if (be) {
		dfi_cpu_gemm(be, trans_a, trans_b, m, n, k, 1.0f, a, lda, b, ldb, beta, c, n);
		return;
	}
	cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, (int)m,
	            (int)n, (int)k, 1.0f, a, (int)lda, b, (int)ldb, beta, c, (int)n);
}

/* Batches of small products go one per thread; otherwise each product is
 * split across the threads. */
static int per_thread_batches(const df_backend *be, int64_t batch, int64_t m, int64_t n, int64_t k)
{
	return be->threads > 1 && batch >= be->threads && m * n * k < (int64_t)256 * 256 * 256;
}

static void cpu_matmul_forward(const df_backend *be, float *c, const float *a, const float *b, int64_t batch,
                               int64_t m, int64_t n, int64_t k, int trans_a, int trans_b)
{
	int per_thread = per_thread_batches(be, batch, m, n, k);
	dfi_cpu_blas_single_thread();
#pragma omp parallel for num_threads(be->threads) schedule(static) if (per_thread)
	for (int64_t i = 0; i < batch; i++)
		gemm(per_thread ? NULL : be, a + i * m * k, b + i * k * n, c + i * m * n, m, n, k, trans_a, trans_b, 0.0f);
}

/* Gradients of c = op(a) op(b) for one batch entry:
 *   op(a) = a:   da (m, k) += dc b'^T      op(a) = a^T: da (k, m) += b' dc^T
 *   op(b) = b:   db (k, n) += a'^T dc      op(b) = b^T: db (n, k) += dc^T a'
 * where a' = op(a), b' = op(b) are expressed through the stored a and b. */
static void matmul_backward_one(const df_backend *be, float *da, float *db, const float *dc, const float *a,
                                const float *b, int64_t m, int64_t n, int64_t k, int trans_a, int trans_b)
{
	if (da) {
		if (!trans_a) /* da = dc op(b)^T: (m, n) x (n, k) */
			gemm(be, dc, b, da, m, k, n, 0, !trans_b, 1.0f);
		else /* da = op(b) dc^T: (k, n) x (n, m) */
			gemm(be, b, dc, da, k, m, n, trans_b, 1, 1.0f);
	}
	if (db) {
		if (!trans_b) /* db = op(a)^T dc: (k, m) x (m, n) */
			gemm(be, a, dc, db, k, n, m, !trans_a, 0, 1.0f);
		else /* db = dc^T op(a): (n, m) x (m, k) */
			gemm(be, dc, a, db, n, k, m, 1, trans_a, 1.0f);
	}
}

static void cpu_matmul_backward(const df_backend *be, float *da, float *db, const float *dc, const float *a,
                                const float *b, int64_t batch, int64_t m, int64_t n, int64_t k, int trans_a,
                                int trans_b)
{
	int per_thread = per_thread_batches(be, batch, m, n, k);
	dfi_cpu_blas_single_thread();
#pragma omp parallel for num_threads(be->threads) schedule(static) if (per_thread)
	for (int64_t i = 0; i < batch; i++)
		matmul_backward_one(per_thread ? NULL : be, da ? da + i * m * k : NULL, db ? db + i * k * n : NULL,
		                    dc + i * m * n, a + i * m * k, b + i * k * n, m, n, k, trans_a, trans_b);
}

void dfi_cpu_install_matmul(df_backend *be)
{
	be->linear_forward = cpu_linear_forward;
	be->linear_backward = cpu_linear_backward;
	be->matmul_forward = cpu_matmul_forward;
	be->matmul_backward = cpu_matmul_backward;
}
