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
	static int current = -1; /* avoid the call when nothing changes */
	if (threads != current) {
		openblas_set_num_threads(threads);
		current = threads;
	}
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
	dfi_cpu_blas_threads(be->threads);
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
	return 0;
}
