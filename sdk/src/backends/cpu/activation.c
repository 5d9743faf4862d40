/* GELU (tanh approximation and exact erf) and SiLU. */
#include "config.h"
#include <omp.h>
#include "cpu.h"
#include "vmath.h"

#define GELU_K0 0.7978845608028654f /* sqrt(2 / pi) */
#define GELU_K1 0.044715f
#define INV_SQRT2 0.7071067811865476f
#define INV_SQRT_2PI 0.3989422804014327f

static void cpu_gelu_forward(const df_backend *be, float *out, const float *x, int64_t n, int tanh_approx)
{
	if (tanh_approx) {
#pragma omp parallel for simd num_threads(be->threads) if (n > DFI_CPU_PARALLEL_MIN)
		for (int64_t i = 0; i < n; i++) {
			float v = x[i];
			out[i] = 0.5f * v * (1.0f + dfi_tanhf(GELU_K0 * (v + GELU_K1 * v * v * v)));
		}
	} else {
#pragma omp parallel for simd num_threads(be->threads) if (n > DFI_CPU_PARALLEL_MIN)
		for (int64_t i = 0; i < n; i++) {
			float v = x[i];
			out[i] = 0.5f * v * (1.0f + dfi_erff(v * INV_SQRT2));
		}
	}
}

static void cpu_gelu_backward(const df_backend *be, float *dx, const float *dout, const float *x, int64_t n,
                              int tanh_approx)
{
	if (tanh_approx) {
#pragma omp parallel for simd num_threads(be->threads) if (n > DFI_CPU_PARALLEL_MIN)
		for (int64_t i = 0; i < n; i++) {
			float v = x[i], v2 = v * v;
			float th = dfi_tanhf(GELU_K0 * (v + GELU_K1 * v2 * v));
			float d = 0.5f * (1.0f + th) + 0.5f * v * (1.0f - th * th) * GELU_K0 * (1.0f + 3.0f * GELU_K1 * v2);
			dx[i] += dout[i] * d;
		}
	} else {
#pragma omp parallel for simd num_threads(be->threads) if (n > DFI_CPU_PARALLEL_MIN)
		for (int64_t i = 0; i < n; i++) {
			float v = x[i];
			float d = 0.5f * (1.0f + dfi_erff(v * INV_SQRT2)) + v * INV_SQRT_2PI * dfi_expf(-0.5f * v * v);
			dx[i] += dout[i] * d;
		}
	}
}

static void cpu_silu_forward(const df_backend *be, float *out, const float *x, int64_t n)
{
#pragma omp parallel for simd num_threads(be->threads) if (n > DFI_CPU_PARALLEL_MIN)
	for (int64_t i = 0; i < n; i++)
		out[i] = x[i] * dfi_sigmoidf(x[i]);
}

static void cpu_silu_backward(const df_backend *be, float *dx, const float *dout, const float *x, int64_t n)
{
#pragma omp parallel for simd num_threads(be->threads) if (n > DFI_CPU_PARALLEL_MIN)
	for (int64_t i = 0; i < n; i++) {
		float s = dfi_sigmoidf(x[i]);
		dx[i] += dout[i] * s * (1.0f + x[i] * (1.0f - s));
	}
}

void dfi_cpu_install_activation(df_backend *be)
{
	be->gelu_forward = cpu_gelu_forward;
	be->gelu_backward = cpu_gelu_backward;
	be->silu_forward = cpu_silu_forward;
	be->silu_backward = cpu_silu_backward;
}
