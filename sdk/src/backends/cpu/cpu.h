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

/* Work below this many elements runs on one thread: forking costs more. */
#define DFI_CPU_PARALLEL_MIN 16384

#endif
