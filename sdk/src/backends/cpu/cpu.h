/* The CPU backend's private header: each op family lives in its own file
 * and installs its kernels into the backend table. */
#ifndef DIFFUSE_BACKEND_CPU_H
#define DIFFUSE_BACKEND_CPU_H

#include "../../backend.h"

void dfi_cpu_install_matmul(df_backend *be);
void dfi_cpu_install_elementwise(df_backend *be);
void dfi_cpu_install_norm(df_backend *be);
void dfi_cpu_install_attention(df_backend *be);
void dfi_cpu_install_activation(df_backend *be);
void dfi_cpu_install_embedding(df_backend *be);
void dfi_cpu_install_shape(df_backend *be);
void dfi_cpu_install_reduce(df_backend *be);
/* Spatial families install here (one line each). */
void dfi_cpu_install_spatial(df_backend *be); /* spatial.c: also pointwise math, losses */
void dfi_cpu_install_pool(df_backend *be);    /* pool.c: relu, windowed pooling */

/* Threads: OpenMP only. OpenBLAS is set to one thread at start-up and
 * every parallel sgemm is split by OpenMP into one single-threaded sgemm
 * per thread (dfi_cpu_gemm). Two thread pools taking turns would
 * oversubscribe the cores: each spins for a while after its work, right
 * when the other starts. */
void dfi_cpu_blas_single_thread(void);
/* Sets OpenBLAS's thread count (skipped when unchanged). Kept for kernels
 * that still hand one large product to OpenBLAS's threads; every kernel
 * that calls sgemm inside an OpenMP region first calls
 * dfi_cpu_blas_single_thread(), so a setting left behind cannot nest. */
void dfi_cpu_blas_threads(int threads);

/* Row-major C (m, n) = alpha op(A) op(B) + beta C, split over be->threads
 * along the larger of m and n (small products run on the calling thread).
 * Call it outside OpenMP regions; inside one, call cblas_sgemm directly. */
void dfi_cpu_gemm(const df_backend *be, int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                  const float *a, int64_t lda, const float *b, int64_t ldb, float beta, float *c, int64_t ldc);

/* Runs fn over [0, n) split into one contiguous range per thread (ranges
 * start at multiples of 16 elements). Loops written as such span functions
 * vectorise, where `parallel for simd` around inlined math often does not. */
typedef void (*dfi_span_fn)(int64_t i0, int64_t i1, void *arg);
void dfi_cpu_parallel_spans(const df_backend *be, int64_t n, dfi_span_fn fn, void *arg);
/* The same over rows of row_len elements each (the work that decides
 * whether to fork is rows x row_len). */
void dfi_cpu_parallel_rows(const df_backend *be, int64_t rows, int64_t row_len, dfi_span_fn fn, void *arg);

/* Pointwise kernels are also built for AVX2 + FMA and AVX-512, chosen at
 * load time (the library itself is built for baseline x86-64). */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define DFI_CPU_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define DFI_CPU_CLONES
#endif

/* Helpers called from cloned kernels must be inlined into each clone, or
 * they run as baseline code. */
#if defined(__GNUC__)
#define DFI_INLINE static inline __attribute__((always_inline))
#else
#define DFI_INLINE static inline
#endif

/* Work below this many elements runs on one thread: forking costs more. */
#define DFI_CPU_PARALLEL_MIN 16384

#endif
