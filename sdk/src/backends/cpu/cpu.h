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

/* OpenBLAS runs its own threads for one large sgemm; kernels that call
 * sgemm from inside an OpenMP region (one head or one batch per thread)
 * switch it to one thread for that region, so the cores are never
 * oversubscribed. */
void dfi_cpu_blas_threads(int threads);

/* Runs fn over [0, n) split into one contiguous range per thread (ranges
 * start at multiples of 16 elements). Loops written as such span functions
 * vectorise, where `parallel for simd` around inlined math often does not. */
typedef void (*dfi_span_fn)(int64_t i0, int64_t i1, void *arg);
void dfi_cpu_parallel_spans(const df_backend *be, int64_t n, dfi_span_fn fn, void *arg);

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
