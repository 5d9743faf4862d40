/* Reductions and per-sample losses. Sums accumulate in double over a fixed
 * order, so results do not depend on the thread count. */
#include "config.h"
#include <math.h>
#include <omp.h>
#include "cpu.h"

/* Sum of n floats: fixed 64 chunks summed in double, then added in order. */
static double sum_fixed(const df_backend *be, const float *x, int64_t n)
{
	enum { CHUNKS = 64 };
	double part[CHUNKS];
#pragma omp parallel for num_threads(be->threads) if (n > DFI_CPU_PARALLEL_MIN)
	for (int c = 0; c < CHUNKS; c++) {
		int64_t i0 = n * c / CHUNKS, i1 = n * (c + 1) / CHUNKS;
		double acc = 0.0;
		for (int64_t i = i0; i < i1; i++)
			acc += x[i];
		part[c] = acc;
	}
	double total = 0.0;
	for (int c = 0; c < CHUNKS; c++)
		total += part[c];
	return total;
}

static void cpu_sum_rows_forward(const df_backend *be, float *out, const float *x, int64_t rows, int64_t cols,
                                 float scale)
{
	if (rows < be->threads) {
		for (int64_t r = 0; r < rows; r++)
			out[r] = (float)(scale * sum_fixed(be, x + r * cols, cols));
		return;
	}
#pragma omp parallel for num_threads(be->threads) if (rows * cols > DFI_CPU_PARALLEL_MIN)
	for (int64_t r = 0; r < rows; r++) {
		double acc = 0.0;
		for (int64_t c = 0; c < cols; c++)
			acc += x[r * cols + c];
		out[r] = (float)(scale * acc);
	}
}

static void cpu_sum_rows_backward(const df_backend *be, float *dx, const float *dout, int64_t rows, int64_t cols,
                                  float scale)
{
#pragma omp parallel for collapse(2) num_threads(be->threads) if (rows * cols > DFI_CPU_PARALLEL_MIN)
	for (int64_t r = 0; r < rows; r++)
		for (int64_t c = 0; c < cols; c++)
			dx[r * cols + c] += scale * dout[r];
}

static void cpu_mse_rows_forward(const df_backend *be, float *out, const float *a, const float *b, int64_t rows,
                                 int64_t cols)
{
#pragma omp parallel for num_threads(be->threads) if (rows * cols > DFI_CPU_PARALLEL_MIN)
	for (int64_t r = 0; r < rows; r++) {
		double acc = 0.0;
		for (int64_t c = 0; c < cols; c++) {
			double diff = (double)a[r * cols + c] - b[r * cols + c];
			acc += diff * diff;
		}
		out[r] = (float)(acc / (double)cols);
	}
}

static void cpu_mse_rows_backward(const df_backend *be, float *da, float *db, const float *dout, const float *a,
                                  const float *b, int64_t rows, int64_t cols)
{
#pragma omp parallel for collapse(2) num_threads(be->threads) if (rows * cols > DFI_CPU_PARALLEL_MIN)
	for (int64_t r = 0; r < rows; r++) {
		for (int64_t c = 0; c < cols; c++) {
			int64_t i = r * cols + c;
			float g = 2.0f * dout[r] * (a[i] - b[i]) / (float)cols;
			if (da)
				da[i] += g;
			if (db)
				db[i] -= g;
		}
	}
}

/* Row statistics for cosine similarity: dot and the clamped norms. */
static void cosine_stats(const float *a, const float *b, int64_t d, float eps, double *dot, double *na, double *nb,
                         int *a_clamped, int *b_clamped)
{
	double ab = 0.0, aa = 0.0, bb = 0.0;
	for (int64_t i = 0; i < d; i++) {
		ab += (double)a[i] * b[i];
		aa += (double)a[i] * a[i];
		bb += (double)b[i] * b[i];
	}
	*dot = ab;
	*na = sqrt(aa);
	*nb = sqrt(bb);
	*a_clamped = *na < eps;
	*b_clamped = *nb < eps;
	if (*a_clamped)
		*na = eps;
	if (*b_clamped)
		*nb = eps;
}

static void cpu_cosine_forward(const df_backend *be, float *out, const float *a, const float *b, int64_t rows,
                               int64_t d, float eps)
{
#pragma omp parallel for num_threads(be->threads) if (rows * d > DFI_CPU_PARALLEL_MIN)
	for (int64_t r = 0; r < rows; r++) {
		double dot, na, nb;
		int ca, cb;
		cosine_stats(a + r * d, b + r * d, d, eps, &dot, &na, &nb, &ca, &cb);
		out[r] = (float)(dot / (na * nb));
	}
}

/* cos = a.b / (na nb): d cos / da = b / (na nb) - cos a / na^2 (the second
 * term vanishes where the norm was clamped to eps). */
static void cpu_cosine_backward(const df_backend *be, float *da, float *db, const float *dout, const float *a,
                                const float *b, int64_t rows, int64_t d, float eps)
{
#pragma omp parallel for num_threads(be->threads) if (rows * d > DFI_CPU_PARALLEL_MIN)
	for (int64_t r = 0; r < rows; r++) {
		const float *ar = a + r * d, *br = b + r * d;
		double dot, na, nb;
		int ca, cb;
		cosine_stats(ar, br, d, eps, &dot, &na, &nb, &ca, &cb);
		double cosv = dot / (na * nb), g = dout[r], inv = 1.0 / (na * nb);
		double ka = ca ? 0.0 : cosv / (na * na), kb = cb ? 0.0 : cosv / (nb * nb);
		for (int64_t i = 0; i < d; i++) {
			if (da)
				da[r * d + i] += (float)(g * (br[i] * inv - ka * ar[i]));
			if (db)
				db[r * d + i] += (float)(g * (ar[i] * inv - kb * br[i]));
		}
	}
}

void dfi_cpu_install_reduce(df_backend *be)
{
	be->sum_rows_forward = cpu_sum_rows_forward;
	be->sum_rows_backward = cpu_sum_rows_backward;
	be->mse_rows_forward = cpu_mse_rows_forward;
	be->mse_rows_backward = cpu_mse_rows_backward;
	be->cosine_forward = cpu_cosine_forward;
	be->cosine_backward = cpu_cosine_backward;
}
