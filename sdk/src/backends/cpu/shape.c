/* One strided copy serves every layout op (permute, slice, concat,
 * patchify, unpatchify) forward and, accumulating, backward. */
#include "config.h"
#include <omp.h>
#include "cpu.h"

static void cpu_strided_copy(const df_backend *be, float *dst, const float *src, int ndim, const int64_t *shape,
                             const int64_t *dst_stride, const int64_t *src_stride, int accumulate)
{
	int64_t inner = shape[ndim - 1], ds = dst_stride[ndim - 1], ss = src_stride[ndim - 1];
	int64_t rows = 1;
	for (int d = 0; d < ndim - 1; d++)
		rows *= shape[d];
#pragma omp parallel for num_threads(be->threads) if (rows * inner > DFI_CPU_PARALLEL_MIN)
	for (int64_t r = 0; r < rows; r++) {
		int64_t rest = r, doff = 0, soff = 0;
		for (int d = ndim - 2; d >= 0; d--) {
			int64_t idx = rest % shape[d];
			rest /= shape[d];
			doff += idx * dst_stride[d];
			soff += idx * src_stride[d];
		}
		float *o = dst + doff;
		const float *in = src + soff;
		if (accumulate) {
			for (int64_t i = 0; i < inner; i++)
				o[i * ds] += in[i * ss];
		} else if (ds == 1 && ss == 1) {
			for (int64_t i = 0; i < inner; i++)
				o[i] = in[i];
		} else {
			for (int64_t i = 0; i < inner; i++)
				o[i * ds] = in[i * ss];
		}
	}
}

void dfi_cpu_install_shape(df_backend *be)
{
	be->strided_copy = cpu_strided_copy;
}
