/* CPU kernels: group normalisation, nearest upsampling, average pooling;
 * and the installer of every spatial, pointwise-math and loss slot. */
#include "config.h"

#include <math.h>

#include "cpu.h"
#include "spatial_kernels.h"

/* Statistics in double: a group of a VAE feature map holds up to millions
 * of values, where a float running sum loses the variance. */
void dfi_cpu_groupnorm_forward(const df_backend *be, float *out, float *mean, float *rstd, const float *x,
			   const float *w, const float *b, int64_t n, int64_t c,
			   int64_t s, int64_t groups, float eps)
{
	const int64_t group_channels = c / groups, m = group_channels * s;

#pragma omp parallel for num_threads(be->threads) if (n * c * s > DFI_CPU_PARALLEL_MIN)
	for (int64_t ng = 0; ng < n * groups; ng++) {
		const float *xg = x + ng * m;
		float *og = out + ng * m;
		double sum = 0.0, sq = 0.0;
		for (int64_t i = 0; i < m; i++)
			sum += xg[i];
		const double mu = sum / (double)m;
		for (int64_t i = 0; i < m; i++) {
			const double d = xg[i] - mu;
			sq += d * d;
		}
		const float mu_f = (float)mu;
		const float r = (float)(1.0 / sqrt(sq / (double)m + eps));
		if (mean)
			mean[ng] = mu_f;
		if (rstd)
			rstd[ng] = r;
		const int64_t c0 = (ng % groups) * group_channels;
		for (int64_t j = 0; j < group_channels; j++) {
			const float scale = r * (w ? w[c0 + j] : 1.0f);
			const float shift = (b ? b[c0 + j] : 0.0f) - mu_f * scale;
			const float *xr = xg + j * s;
			float *orow = og + j * s;
			for (int64_t i = 0; i < s; i++)
				orow[i] = xr[i] * scale + shift;
		}
	}
}

void dfi_cpu_groupnorm_backward(const df_backend *be, float *dx, float *dw, float *db, const float *dout,
			    const float *x, const float *mean, const float *rstd,
			    const float *w, int64_t n, int64_t c, int64_t s, int64_t groups)
{
	const int64_t group_channels = c / groups, m = group_channels * s;

	if (dx) {
		/* dx = rstd * (g - mean(g) - xhat * mean(g * xhat)), g = dout * w. */
#pragma omp parallel for num_threads(be->threads) if (n * c * s > DFI_CPU_PARALLEL_MIN)
		for (int64_t ng = 0; ng < n * groups; ng++) {
			const int64_t c0 = (ng % groups) * group_channels;
			const float mu = mean[ng], r = rstd[ng];
			const float *xg = x + ng * m, *dg = dout + ng * m;
			double sum_g = 0.0, sum_gx = 0.0;
			for (int64_t j = 0; j < group_channels; j++) {
				const float wj = w ? w[c0 + j] : 1.0f;
				float acc_g = 0.0f, acc_gx = 0.0f;
				for (int64_t i = 0; i < s; i++) {
					const float g = dg[j * s + i] * wj;
					acc_g += g;
					acc_gx += g * (xg[j * s + i] - mu) * r;
				}
				sum_g += acc_g;
				sum_gx += acc_gx;
			}
			const float mean_g = (float)(sum_g / (double)m);
			const float mean_gx = (float)(sum_gx / (double)m);
			float *dxg = dx + ng * m;
			for (int64_t j = 0; j < group_channels; j++) {
				const float wj = w ? w[c0 + j] : 1.0f;
				for (int64_t i = 0; i < s; i++) {
					const int64_t k = j * s + i;
					const float xhat = (xg[k] - mu) * r;
					dxg[k] += r * (dg[k] * wj - mean_g - xhat * mean_gx);
				}
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
				const float mu = mean[ng], r = rstd[ng];
				const float *xr = x + (img * c + ch) * s, *dr = dout + (img * c + ch) * s;
				float acc_w = 0.0f, acc_b = 0.0f;
				for (int64_t i = 0; i < s; i++) {
					acc_w += dr[i] * (xr[i] - mu) * r;
					acc_b += dr[i];
				}
				sum_w += acc_w;
				sum_b += acc_b;
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
