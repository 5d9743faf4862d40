/* CPU kernels: group normalisation, nearest upsampling, average pooling;
 * and the installer of every spatial, pointwise-math and loss slot. */
#include "config.h"

#include <math.h>

#include "cpu.h"
#include "simd16.h"
#include "spatial_kernels.h"

/* Row helpers on 16-float vectors (simd16.h). Sums run over blocks of
 * SUM_BLOCK floats in float lanes, the blocks added in double: a group of a
 * VAE feature map holds millions of values, where one float running sum
 * would lose the variance. The order is fixed, whatever the threads. */
#define SUM_BLOCK 1024

/* With dy: sum(dy) and sum(dy (x - mu)). Without: sum(x), or when square
 * is set sum((x - mu)^2) and sum(x - mu). */
static DFI_CPU_CLONES void row_sums(const float *x, const float *dy, int64_t n, float mu, int square,
                                   double *sum_out, double *cross_out)
{
	double total = 0.0, cross = 0.0;
	const vf16 vmu = vf16_splat(mu);
	for (int64_t start = 0; start < n; start += SUM_BLOCK) {
		const int64_t len = n - start < SUM_BLOCK ? n - start : SUM_BLOCK, full = len & ~(int64_t)15;
		const float *xb = x + start, *db = dy ? dy + start : NULL;
		vf16 acc = vf16_splat(0.0f), acc_cross = vf16_splat(0.0f);
		for (int64_t i = 0; i < full; i += 16) {
			const vf16 centred = vf16_load(xb + i) - vmu;
			if (db) {
				const vf16 g = vf16_load(db + i);
				acc += g;
				acc_cross += g * centred;
			} else if (square) {
				acc += centred * centred;
				acc_cross += centred;
			} else {
				acc += vf16_load(xb + i);
			}
		}
		float tail = 0.0f, tail_cross = 0.0f;
		for (int64_t i = full; i < len; i++) {
			const float centred = xb[i] - mu;
			if (db) {
				tail += db[i];
				tail_cross += db[i] * centred;
			} else if (square) {
				tail += centred * centred;
				tail_cross += centred;
			} else {
				tail += xb[i];
			}
		}
		total += (double)vf16_sum(acc) + tail;
		cross += (double)vf16_sum(acc_cross) + tail_cross;
	}
	*sum_out = total;
	if (cross_out)
		*cross_out = cross;
}

/* out = b (x - mu) + c, or out += a dy + b (x - mu) + c when dy is given.
 * Centring first keeps (x - mu) exact-ish when the spread is small next to
 * the mean, where b x + (c - b mu) would cancel. */
static DFI_CPU_CLONES void row_affine(float *out, const float *x, const float *dy, int64_t n, float a, float b,
                                     float mu, float c)
{
	const int64_t full = n & ~(int64_t)15;
	const vf16 va = vf16_splat(a), vb = vf16_splat(b), vmu = vf16_splat(mu), vc = vf16_splat(c);
	if (!dy) {
		for (int64_t i = 0; i < full; i += 16)
			vf16_store(out + i, (vf16_load(x + i) - vmu) * vb + vc);
		for (int64_t i = full; i < n; i++)
			out[i] = (x[i] - mu) * b + c;
		return;
	}
	for (int64_t i = 0; i < full; i += 16)
		vf16_store(out + i, vf16_load(out + i) + vf16_load(dy + i) * va + (vf16_load(x + i) - vmu) * vb + vc);
	for (int64_t i = full; i < n; i++)
		out[i] += dy[i] * a + (x[i] - mu) * b + c;
}

void dfi_cpu_groupnorm_forward(const df_backend *be, float *out, float *mean, float *rstd, const float *x,
                               const float *w, const float *b, int64_t n, int64_t c, int64_t s, int64_t groups,
                               float eps)
{
	const int64_t group_channels = c / groups, m = group_channels * s;

#pragma omp parallel for num_threads(be->threads) if (n * c * s > DFI_CPU_PARALLEL_MIN)
	for (int64_t ng = 0; ng < n * groups; ng++) {
		const float *xg = x + ng * m;
		double sum, sq, dev;
		row_sums(xg, NULL, m, 0.0f, 0, &sum, NULL);
		const float mu0 = (float)(sum / (double)m);
		/* Two passes, the second corrected by the deviations' own sum
		 * (Chan, Golub and LeVeque): the squares are of deviations, and
		 * the float rounding of the first mean cancels. */
		row_sums(xg, NULL, m, mu0, 1, &sq, &dev);
		const double shift = dev / (double)m;
		const float mu = (float)(mu0 + shift);
		const double var = sq / (double)m - shift * shift;
		const float r = (float)(1.0 / sqrt((var > 0.0 ? var : 0.0) + eps));
		if (mean)
			mean[ng] = mu;
		if (rstd)
			rstd[ng] = r;
		const int64_t c0 = (ng % groups) * group_channels;
		for (int64_t j = 0; j < group_channels; j++) {
			const float scale = r * (w ? w[c0 + j] : 1.0f);
			row_affine(out + ng * m + j * s, xg + j * s, NULL, s, 0.0f, scale, mu, b ? b[c0 + j] : 0.0f);
		}
	}
}

void dfi_cpu_groupnorm_backward(const df_backend *be, float *dx, float *dw, float *db, const float *dout,
                                const float *x, const float *mean, const float *rstd, const float *w, int64_t n,
                                int64_t c, int64_t s, int64_t groups)
{
	const int64_t group_channels = c / groups, m = group_channels * s;

	if (dx) {
		/* dx = r (g - mean(g) - xhat mean(g xhat)) with g = dout w and
		 * xhat = (x - mu) r: per channel, a dout + b (x - mu) + c. */
#pragma omp parallel for num_threads(be->threads) if (n * c * s > DFI_CPU_PARALLEL_MIN)
		for (int64_t ng = 0; ng < n * groups; ng++) {
			const int64_t c0 = (ng % groups) * group_channels;
			const float mu = mean[ng], r = rstd[ng];
			const float *xg = x + ng * m, *dg = dout + ng * m;
			double sum_g = 0.0, sum_gx = 0.0;
			for (int64_t j = 0; j < group_channels; j++) {
				const double wj = w ? w[c0 + j] : 1.0;
				double sum_dy, sum_dyx;
				row_sums(xg + j * s, dg + j * s, s, mu, 0, &sum_dy, &sum_dyx);
				sum_g += wj * sum_dy;
				sum_gx += wj * sum_dyx * r;
			}
			const float mean_g = (float)(sum_g / (double)m);
			const float mean_gx = (float)(sum_gx / (double)m);
			for (int64_t j = 0; j < group_channels; j++) {
				const float wj = w ? w[c0 + j] : 1.0f;
				row_affine(dx + ng * m + j * s, xg + j * s, dg + j * s, s, r * wj, -r * r * mean_gx, mu,
				           -r * mean_g);
			}
		}
	}
	if (dw || db) {
		/* Per channel over the batch: one thread owns a channel, so the
		 * sums do not depend on the thread count. */
#pragma omp parallel for num_threads(be->threads) if (n * c * s > DFI_CPU_PARALLEL_MIN)
		for (int64_t ch = 0; ch < c; ch++) {
			double sum_w = 0.0, sum_b = 0.0;
			for (int64_t img = 0; img < n; img++) {
				const int64_t ng = img * groups + ch / group_channels;
				double sum_dy, sum_dyx;
				row_sums(x + (img * c + ch) * s, dout + (img * c + ch) * s, s, mean[ng], 0, &sum_dy,
				         &sum_dyx);
				sum_w += sum_dyx * rstd[ng];
				sum_b += sum_dy;
			}
			if (dw)
				dw[ch] += (float)sum_w;
			if (db)
				db[ch] += (float)sum_b;
		}
	}
}

void dfi_cpu_upsample_nearest2x_forward(const df_backend *be, float *out, const float *x, int64_t planes,
				    int64_t h, int64_t w)
{
	const int64_t w2 = 2 * w;
#pragma omp parallel for num_threads(be->threads) if (planes * h * w > DFI_CPU_PARALLEL_MIN)
	for (int64_t row = 0; row < planes * h; row++) {
		const float *src = x + row * w;
		float *top = out + row * 2 * w2, *bottom = top + w2;
		for (int64_t j = 0; j < w; j++) {
			top[2 * j] = top[2 * j + 1] = src[j];
			bottom[2 * j] = bottom[2 * j + 1] = src[j];
		}
	}
}

void dfi_cpu_upsample_nearest2x_backward(const df_backend *be, float *dx, const float *dout, int64_t planes,
				     int64_t h, int64_t w)
{
	const int64_t w2 = 2 * w;
#pragma omp parallel for num_threads(be->threads) if (planes * h * w > DFI_CPU_PARALLEL_MIN)
	for (int64_t row = 0; row < planes * h; row++) {
		const float *top = dout + row * 2 * w2, *bottom = top + w2;
		float *dst = dx + row * w;
		for (int64_t j = 0; j < w; j++)
			dst[j] += (top[2 * j] + top[2 * j + 1]) + (bottom[2 * j] + bottom[2 * j + 1]);
	}
}

void dfi_cpu_avgpool2d_forward(const df_backend *be, float *out, const float *x, int64_t planes, int64_t h,
			   int64_t w, int64_t k)
{
	const int64_t ho = h / k, wo = w / k;
	const float inv = 1.0f / (float)(k * k);
#pragma omp parallel for num_threads(be->threads) if (planes * h * w > DFI_CPU_PARALLEL_MIN)
	for (int64_t row = 0; row < planes * ho; row++) {
		const int64_t plane = row / ho, i = row % ho;
		const float *src = x + (plane * h + i * k) * w;
		float *dst = out + row * wo;
		for (int64_t j = 0; j < wo; j++) {
			float acc = 0.0f;
			for (int64_t a = 0; a < k; a++)
				for (int64_t bcol = 0; bcol < k; bcol++)
					acc += src[a * w + j * k + bcol];
			dst[j] = acc * inv;
		}
	}
}

void dfi_cpu_avgpool2d_backward(const df_backend *be, float *dx, const float *dout, int64_t planes, int64_t h,
			    int64_t w, int64_t k)
{
	const int64_t ho = h / k, wo = w / k;
	const float inv = 1.0f / (float)(k * k);
#pragma omp parallel for num_threads(be->threads) if (planes * h * w > DFI_CPU_PARALLEL_MIN)
	for (int64_t row = 0; row < planes * ho; row++) {
		const int64_t plane = row / ho, i = row % ho;
		float *dst = dx + (plane * h + i * k) * w;
		const float *src = dout + row * wo;
		for (int64_t j = 0; j < wo; j++) {
			const float g = src[j] * inv;
			for (int64_t a = 0; a < k; a++)
				for (int64_t bcol = 0; bcol < k; bcol++)
					dst[a * w + j * k + bcol] += g;
		}
	}
}

/* The slots of the spatial, pointwise-math and loss families. */
void dfi_cpu_install_spatial(df_backend *be)
{
	be->groupnorm_forward = dfi_cpu_groupnorm_forward;
	be->groupnorm_backward = dfi_cpu_groupnorm_backward;
	be->conv2d_workspace = dfi_cpu_conv2d_workspace;
	be->conv2d_forward = dfi_cpu_conv2d_forward;
	be->conv2d_backward = dfi_cpu_conv2d_backward;
	be->upsample_nearest2x_forward = dfi_cpu_upsample_nearest2x_forward;
	be->upsample_nearest2x_backward = dfi_cpu_upsample_nearest2x_backward;
	be->avgpool2d_forward = dfi_cpu_avgpool2d_forward;
	be->avgpool2d_backward = dfi_cpu_avgpool2d_backward;
	be->unary_forward = dfi_cpu_unary_forward;
	be->unary_backward = dfi_cpu_unary_backward;
	be->softmax_forward = dfi_cpu_softmax_forward;
	be->softmax_backward = dfi_cpu_softmax_backward;
	be->dropout_forward = dfi_cpu_dropout_forward;
	be->dropout_backward = dfi_cpu_dropout_backward;
	be->normal_kl_forward = dfi_cpu_normal_kl_forward;
	be->normal_kl_backward = dfi_cpu_normal_kl_backward;
	be->discretized_gaussian_loglik_forward = dfi_cpu_discretized_gaussian_loglik_forward;
	be->discretized_gaussian_loglik_backward = dfi_cpu_discretized_gaussian_loglik_backward;
	be->cross_entropy_forward = dfi_cpu_cross_entropy_forward;
	be->cross_entropy_backward = dfi_cpu_cross_entropy_backward;
}
