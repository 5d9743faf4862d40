/* CPU kernels for the losses of DDPM's hybrid objective (guided-diffusion's
 * normal_kl and discretized_gaussian_log_likelihood, in float32 as there)
 * and for classification (cross-entropy). */
#include "config.h"

#include <math.h>

#include "cpu.h"
#include "spatial_kernels.h"

void dfi_cpu_normal_kl_forward(const df_backend *be, float *out, const float *m1, const float *lv1,
			   const float *m2, const float *lv2, int64_t n)
{
#pragma omp parallel for num_threads(be->threads) if (n > DFI_CPU_PARALLEL_MIN)
	for (int64_t i = 0; i < n; i++) {
		const float dm = m1[i] - m2[i];
		out[i] = 0.5f * (-1.0f + lv2[i] - lv1[i] + expf(lv1[i] - lv2[i])
				 + dm * dm * expf(-lv2[i]));
	}
}

void dfi_cpu_normal_kl_backward(const df_backend *be, float *dm1, float *dlv1, float *dm2, float *dlv2,
			    const float *dout, const float *m1, const float *lv1,
			    const float *m2, const float *lv2, int64_t n)
{
#pragma omp parallel for num_threads(be->threads) if (n > DFI_CPU_PARALLEL_MIN)
	for (int64_t i = 0; i < n; i++) {
		const float dm = m1[i] - m2[i];
		const float inv_var2 = expf(-lv2[i]);
		const float ratio = expf(lv1[i] - lv2[i]);
		const float g = dout[i];
		if (dm1)
			dm1[i] += g * dm * inv_var2;
		if (dm2)
			dm2[i] -= g * dm * inv_var2;
		if (dlv1)
			dlv1[i] += g * 0.5f * (ratio - 1.0f);
		if (dlv2)
			dlv2[i] += g * 0.5f * (1.0f - ratio - dm * dm * inv_var2);
	}
}

/* ---- Discretised Gaussian ------------------------------------------ */

#define DGL_SQRT_2_OVER_PI 0.7978845608028654f
#define DGL_CUBIC 0.044715f
#define DGL_HALF_BIN (1.0f / 255.0f)
#define DGL_FLOOR 1e-12f

/* The tanh approximation of the standard normal CDF and its derivative. */
static inline float approx_cdf(float z, float *dcdf)
{
	const float t = tanhf(DGL_SQRT_2_OVER_PI * (z + DGL_CUBIC * z * z * z));
	*dcdf = 0.5f * (1.0f - t * t) * DGL_SQRT_2_OVER_PI * (1.0f + 3.0f * DGL_CUBIC * z * z);
	return 0.5f * (1.0f + t);
}

/* log p of element i, and d log p / d plus_in and d log p / d min_in
 * (zero where the 1e-12 clamp is active, as torch.clamp's gradient). */
static inline float dgl_point(float x, float mean, float log_scale, float *plus_in_out,
			      float *min_in_out, float *d_plus, float *d_min)
{
	const float centered = x - mean;
	const float inv_std = expf(-log_scale);
	const float plus_in = inv_std * (centered + DGL_HALF_BIN);
	const float min_in = inv_std * (centered - DGL_HALF_BIN);
	float dcdf_plus, dcdf_min;
	const float cdf_plus = approx_cdf(plus_in, &dcdf_plus);
	const float cdf_min = approx_cdf(min_in, &dcdf_min);
	float arg, lp;

	*plus_in_out = plus_in;
	*min_in_out = min_in;
	*d_plus = 0.0f;
	*d_min = 0.0f;
	if (x < -0.999f) {
		arg = cdf_plus;
		if (arg >= DGL_FLOOR)
			*d_plus = dcdf_plus / arg;
	} else if (x > 0.999f) {
		arg = 1.0f - cdf_min;
		if (arg >= DGL_FLOOR)
			*d_min = -dcdf_min / arg;
	} else {
		arg = cdf_plus - cdf_min;
		if (arg >= DGL_FLOOR) {
			*d_plus = dcdf_plus / arg;
			*d_min = -dcdf_min / arg;
		}
	}
	lp = logf(fmaxf(arg, DGL_FLOOR));
	return lp;
}

void dfi_cpu_discretized_gaussian_loglik_forward(const df_backend *be, float *out, const float *x,
					     const float *mean, const float *log_scale,
					     int64_t n)
{
#pragma omp parallel for num_threads(be->threads) if (n > DFI_CPU_PARALLEL_MIN)
	for (int64_t i = 0; i < n; i++) {
		float plus_in, min_in, d_plus, d_min;
		out[i] = dgl_point(x[i], mean[i], log_scale[i], &plus_in, &min_in, &d_plus, &d_min);
	}
}

/* plus_in = e^-s (x - m + h), min_in = e^-s (x - m - h):
 * d/dx = e^-s, d/dm = -e^-s, d/ds = -(the argument) for each. */
void dfi_cpu_discretized_gaussian_loglik_backward(const df_backend *be, float *dx, float *dmean, float *dlog_scale,
					      const float *dout, const float *x,
					      const float *mean, const float *log_scale,
					      int64_t n)
{
#pragma omp parallel for num_threads(be->threads) if (n > DFI_CPU_PARALLEL_MIN)
	for (int64_t i = 0; i < n; i++) {
		float plus_in, min_in, d_plus, d_min;
		dgl_point(x[i], mean[i], log_scale[i], &plus_in, &min_in, &d_plus, &d_min);
		const float g = dout[i];
		const float inv_std = expf(-log_scale[i]);
		const float d_centered = g * (d_plus + d_min) * inv_std;
		if (dx)
			dx[i] += d_centered;
		if (dmean)
			dmean[i] -= d_centered;
		if (dlog_scale)
			dlog_scale[i] -= g * (d_plus * plus_in + d_min * min_in);
	}
}

/* ---- Cross-entropy ---------------------------------------------------- */

void dfi_cpu_cross_entropy_forward(const df_backend *be, float *out, float *lse, const float *logits,
			       const int32_t *labels, int64_t rows, int64_t k)
{
#pragma omp parallel for num_threads(be->threads) if (rows * k > DFI_CPU_PARALLEL_MIN)
	for (int64_t r = 0; r < rows; r++) {
		const float *lr = logits + r * k;
		float maxv = -INFINITY;
		for (int64_t j = 0; j < k; j++)
			maxv = fmaxf(maxv, lr[j]);
		float sum = 0.0f;
		for (int64_t j = 0; j < k; j++)
			sum += expf(lr[j] - maxv);
		const float row_lse = maxv + logf(sum);
		if (lse)
			lse[r] = row_lse;
		out[r] = row_lse - lr[labels[r]];
	}
}

/* d loss_r / d logit_rj = softmax_rj - [j == label_r]. */
void dfi_cpu_cross_entropy_backward(const df_backend *be, float *dlogits, const float *dout, const float *logits,
				const float *lse, const int32_t *labels, int64_t rows,
				int64_t k)
{
#pragma omp parallel for num_threads(be->threads) if (rows * k > DFI_CPU_PARALLEL_MIN)
	for (int64_t r = 0; r < rows; r++) {
		const float *lr = logits + r * k;
		float *dr = dlogits + r * k;
		const float g = dout[r];
		for (int64_t j = 0; j < k; j++)
			dr[j] += g * expf(lr[j] - lse[r]);
		dr[labels[r]] -= g;
	}
}
