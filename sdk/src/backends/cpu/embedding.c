/* Embedding lookup; the gradient scatter-add is split by feature columns,
 * each thread walking the ids in order, so repeated ids accumulate in a
 * fixed order (deterministic, no atomics). */
#include "config.h"
#include <string.h>
#include <omp.h>
#include "cpu.h"

static void cpu_embedding_forward(const df_backend *be, float *out, const float *table, const int32_t *ids,
                                  int64_t n, int64_t d)
{
#pragma omp parallel for num_threads(be->threads) if (n * d > DFI_CPU_PARALLEL_MIN)
	for (int64_t i = 0; i < n; i++)
		memcpy(out + i * d, table + (int64_t)ids[i] * d, (size_t)d * sizeof(float));
}

static void cpu_embedding_backward(const df_backend *be, float *dtable, const float *dout, const int32_t *ids,
                                   int64_t n, int64_t d)
{
#pragma omp parallel num_threads(be->threads) if (n * d > DFI_CPU_PARALLEL_MIN)
	{
		int nt = omp_get_num_threads(), id = omp_get_thread_num();
		int64_t c0 = d * id / nt, c1 = d * (id + 1) / nt;
		for (int64_t i = 0; i < n; i++) {
			float *row = dtable + (int64_t)ids[i] * d;
			const float *g = dout + i * d;
			for (int64_t c = c0; c < c1; c++)
				row[c] += g[c];
		}
	}
}

void dfi_cpu_install_embedding(df_backend *be)
{
	be->embedding_forward = cpu_embedding_forward;
	be->embedding_backward = cpu_embedding_backward;
}
