/* The CPU backend: host memory, OpenBLAS for matrix products, OpenMP for
 * the rest. */
#include "config.h"
#include <stdlib.h>
#include <string.h>
#include <omp.h>
#include <cblas.h>
#include "cpu.h"

static void *cpu_alloc(const df_backend *be, size_t bytes)
{
	(void)be;
	void *p = NULL;
	size_t rounded = (bytes + 63) & ~(size_t)63;
	if (posix_memalign(&p, 64, rounded ? rounded : 64) != 0)
		return NULL;
	return p;
}

static void cpu_free(const df_backend *be, void *p)
{
	(void)be;
	free(p);
}

static void cpu_copy(const df_backend *be, void *dst, const void *src, size_t bytes)
{
	(void)be;
	if (bytes)
		memcpy(dst, src, bytes);
}

static void cpu_zero(const df_backend *be, void *p, size_t bytes)
{
	(void)be;
	if (bytes)
		memset(p, 0, bytes);
}

void dfi_cpu_blas_threads(int threads)
{
	static int current = -1; /* the library's host side is single-threaded */
	if (threads != current) {
		openblas_set_num_threads(threads);
		current = threads;
	}
}

void dfi_cpu_blas_single_thread(void)
{
	dfi_cpu_blas_threads(1);
}

/* Below this many multiply-adds a product is not worth splitting. */
#define GEMM_SPLIT_MIN ((int64_t)1 << 21)

void dfi_cpu_gemm(const df_backend *be, int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                  const float *a, int64_t lda, const float *b, int64_t ldb, float beta, float *c, int64_t ldc)
{
	CBLAS_TRANSPOSE ta = trans_a ? CblasTrans : CblasNoTrans, tb = trans_b ? CblasTrans : CblasNoTrans;
	int parts = be->threads;
	dfi_cpu_blas_single_thread();
	if (parts <= 1 || m * n * k < GEMM_SPLIT_MIN) {
		cblas_sgemm(CblasRowMajor, ta, tb, (int)m, (int)n, (int)k, alpha, a, (int)lda, b, (int)ldb, beta, c,
		            (int)ldc);
		return;
	}
	int split_rows = m >= n;
	int64_t len = split_rows ? m : n;
#pragma omp parallel num_threads(parts)
	{
		int64_t nt = omp_get_num_threads(), id = omp_get_thread_num();
		int64_t per = ((len + nt - 1) / nt + 15) & ~(int64_t)15;
		int64_t i0 = id * per, i1 = i0 + per < len ? i0 + per : len;
		if (i0 < i1 && split_rows) {
			/* rows i0..i1 of op(A) and of C */
			const float *ab = trans_a ? a + i0 : a + i0 * lda;
			cblas_sgemm(CblasRowMajor, ta, tb, (int)(i1 - i0), (int)n, (int)k, alpha, ab, (int)lda, b, (int)ldb,
			            beta, c + i0 * ldc, (int)ldc);
		} else if (i0 < i1) {
			/* columns i0..i1 of op(B) and of C */
			const float *bb = trans_b ? b + i0 * ldb : b + i0;
			cblas_sgemm(CblasRowMajor, ta, tb, (int)m, (int)(i1 - i0), (int)k, alpha, a, (int)lda, bb, (int)ldb,
			            beta, c + i0, (int)ldc);
		}
	}
}

void dfi_cpu_parallel_rows(const df_backend *be, int64_t rows, int64_t row_len, dfi_span_fn fn, void *arg)
{
	if (rows * row_len <= DFI_CPU_PARALLEL_MIN || be->threads <= 1 || rows < 2) {
		fn(0, rows, arg);
		return;
	}
	/* spans of whole 16-item groups, so element spans stay vector-aligned */
	int64_t align = row_len == 1 ? 16 : 1;
#pragma omp parallel num_threads(be->threads)
	{
		int64_t parts = omp_get_num_threads(), id = omp_get_thread_num();
		int64_t per = ((rows + parts - 1) / parts + align - 1) / align * align;
		int64_t i0 = id * per, i1 = i0 + per < rows ? i0 + per : rows;
		if (i0 < i1)
			fn(i0, i1, arg);
	}
}

void dfi_cpu_parallel_spans(const df_backend *be, int64_t n, dfi_span_fn fn, void *arg)
{
	dfi_cpu_parallel_rows(be, n, 1, fn, arg);
}

int dfi_backend_cpu_init(df_backend *be, int threads)
{
	memset(be, 0, sizeof *be);
	be->name = "cpu";
	be->threads = threads > 0 ? threads : 1;
	be->alloc = cpu_alloc;
	be->free = cpu_free;
	be->to_device = cpu_copy;
	be->to_host = cpu_copy;
	be->copy = cpu_copy;
	be->zero = cpu_zero;
	dfi_cpu_blas_single_thread();
	dfi_cpu_install_matmul(be);
	dfi_cpu_install_elementwise(be);
	dfi_cpu_install_norm(be);
	dfi_cpu_install_attention(be);
	dfi_cpu_install_activation(be);
	dfi_cpu_install_embedding(be);
	dfi_cpu_install_shape(be);
	dfi_cpu_install_reduce(be);
	/* Spatial families install here (one line each). */
	dfi_cpu_install_spatial(be);
	dfi_cpu_install_pool(be);
	return 0;
}
