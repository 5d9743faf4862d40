/* LayerNorm (with or without affine) and the fused adaLN pre-norm
 * norm(x) (1 + scale) + shift. Rows are independent; parameter gradients
 * are reduced with threads owning column ranges, rows summed in order, so
 * results do not depend on the thread count. */
#include "config.h"
#include <math.h>
#include <omp.h>
#include "cpu.h"

/* Mean and 1/std of row r (two passes over a row that stays in cache),
 * kept in mean[r], rstd[r] when those are given. */
static inline void row_stats(const float *x, int64_t d, float eps, float *mean_out, float *rstd_out, float *mean,
                             float *rstd, int64_t r)
{
	float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
	for (int64_t i = 0; i < d; i++)
		sum += x[i];
	float mu = sum / (float)d, var = 0.0f;
#pragma omp simd reduction(+ : var)
	for (int64_t i = 0; i < d; i++) {
		float c = x[i] - mu;
		var += c * c;
	}
	*mean_out = mu;
	*rstd_out = 1.0f / sqrtf(var / (float)d + eps);
	if (mean) {
		mean[r] = mu;
		rstd[r] = *rstd_out;
	}
}

static void cpu_layernorm_forward(const df_backend *be, float *out, float *mean, float *rstd, const float *x,
                                  const float *w, const float *b, int64_t rows, int64_t d, float eps)
{
#pragma omp parallel for num_threads(be->threads) if (rows * d > DFI_CPU_PARALLEL_MIN)
	for (int64_t r = 0; r < rows; r++) {
		const float *xr = x + r * d;
		float *o = out + r * d;
		float mu, rs;
		row_stats(xr, d, eps, &mu, &rs, mean, rstd, r);
		if (w && b) {
#pragma omp simd
			for (int64_t i = 0; i < d; i++)
				o[i] = (xr[i] - mu) * rs * w[i] + b[i];
		} else {
#pragma omp simd
			for (int64_t i = 0; i < d; i++)
				o[i] = (xr[i] - mu) * rs * (w ? w[i] : 1.0f) + (b ? b[i] : 0.0f);
		}
	}
}

/* dx += rstd (g - mean(g) - xhat mean(g xhat)) for one row, where g is the
 * gradient of the normalised row. `gain` (per feature) multiplies dout and
 * may be NULL; `plus` is added to it (1 for adaLN's 1 + scale). */
static inline void row_backward(float *dx, const float *dout, const float *x, const float *gain, float plus,
                                float mu, float rs, int64_t d)
{
	float sum_g = 0.0f, sum_gx = 0.0f;
#pragma omp simd reduction(+ : sum_g, sum_gx)
	for (int64_t i = 0; i < d; i++) {
		float gi = dout[i] * ((gain ? gain[i] : 0.0f) + plus);
		sum_g += gi;
		sum_gx += gi * (x[i] - mu) * rs;
	}
	float mean_g = sum_g / (float)d, mean_gx = sum_gx / (float)d;
#pragma omp simd
	for (int64_t i = 0; i < d; i++) {
		float gi = dout[i] * ((gain ? gain[i] : 0.0f) + plus);
		float xhat = (x[i] - mu) * rs;
		dx[i] += rs * (gi - mean_g - xhat * mean_gx);
	}
}

/* dgain[c] += sum_r dout[r, c] xhat[r, c] and dbias[c] += sum_r dout[r, c]
 * over rows r of `groups` groups of `rows` rows each (group k writes
 * dgain + k d): layernorm has one group, adaLN one per sample. */
static void column_sums(const df_backend *be, float *dgain, float *dbias, const float *dout, const float *x,
                        const float *mean, const float *rstd, int64_t groups, int64_t rows, int64_t d)
{
	enum { BLOCK = 64 };
	int64_t blocks = (d + BLOCK - 1) / BLOCK;
#pragma omp parallel for collapse(2) num_threads(be->threads) if (groups * rows * d > DFI_CPU_PARALLEL_MIN)
	for (int64_t gidx = 0; gidx < groups; gidx++) {
		for (int64_t blk = 0; blk < blocks; blk++) {
			int64_t i0 = blk * BLOCK, i1 = i0 + BLOCK < d ? i0 + BLOCK : d;
			float acc_g[BLOCK] = {0}, acc_b[BLOCK] = {0};
			for (int64_t r = gidx * rows; r < (gidx + 1) * rows; r++) {
				const float *gr = dout + r * d, *xr = x + r * d;
				float mu = mean[r], rs = rstd[r];
#pragma omp simd
				for (int64_t i = i0; i < i1; i++) {
					acc_g[i - i0] += gr[i] * (xr[i] - mu) * rs;
					acc_b[i - i0] += gr[i];
				}
			}
			for (int64_t i = i0; i < i1; i++) {
				if (dgain)
					dgain[gidx * d + i] += acc_g[i - i0];
				if (dbias)
					dbias[gidx * d + i] += acc_b[i - i0];
			}
		}
	}
}

static void cpu_layernorm_backward(const df_backend *be, float *dx, float *dw, float *db, const float *dout,
                                   const float *x, const float *w, const float *mean, const float *rstd,
                                   int64_t rows, int64_t d)
{
	if (dx) {
#pragma omp parallel for num_threads(be->threads) if (rows * d > DFI_CPU_PARALLEL_MIN)
		for (int64_t r = 0; r < rows; r++)
			row_backward(dx + r * d, dout + r * d, x + r * d, w, w ? 0.0f : 1.0f, mean[r], rstd[r], d);
	}
	if (dw || db)
		column_sums(be, dw, db, dout, x, mean, rstd, 1, rows, d);
}

static void cpu_layernorm_modulate_forward(const df_backend *be, float *out, float *mean, float *rstd,
                                           const float *x, const float *shift, const float *scale, int64_t n,
                                           int64_t t, int64_t d, float eps)
{
#pragma omp parallel for num_threads(be->threads) if (n * t * d > DFI_CPU_PARALLEL_MIN)
	for (int64_t r = 0; r < n * t; r++) {
		const float *xr = x + r * d, *sh = shift + (r / t) * d, *sc = scale + (r / t) * d;
		float *o = out + r * d;
		float mu, rs;
		row_stats(xr, d, eps, &mu, &rs, mean, rstd, r);
#pragma omp simd
		for (int64_t i = 0; i < d; i++)
			o[i] = (xr[i] - mu) * rs * (1.0f + sc[i]) + sh[i];
	}
}

static void cpu_layernorm_modulate_backward(const df_backend *be, float *dx, float *dshift, float *dscale,
                                            const float *dout, const float *x, const float *scale,
                                            const float *mean, const float *rstd, int64_t n, int64_t t, int64_t d)
{
	if (dx) {
#pragma omp parallel for num_threads(be->threads) if (n * t * d > DFI_CPU_PARALLEL_MIN)
		for (int64_t r = 0; r < n * t; r++)
			row_backward(dx + r * d, dout + r * d, x + r * d, scale + (r / t) * d, 1.0f, mean[r], rstd[r], d);
	}
	if (dshift || dscale)
		column_sums(be, dscale, dshift, dout, x, mean, rstd, n, t, d);
}

void dfi_cpu_install_norm(df_backend *be)
{
	be->layernorm_forward = cpu_layernorm_forward;
	be->layernorm_backward = cpu_layernorm_backward;
	be->layernorm_modulate_forward = cpu_layernorm_modulate_forward;
	be->layernorm_modulate_backward = cpu_layernorm_modulate_backward;
}
