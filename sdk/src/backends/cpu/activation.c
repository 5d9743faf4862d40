/* GELU (tanh approximation and exact erf) and SiLU, as span functions over
 * contiguous ranges (see dfi_cpu_parallel_spans). */
#include "config.h"
#include "cpu.h"
#include "vmath.h"

#define GELU_K0 0.7978845608028654f /* sqrt(2 / pi) */
#define GELU_K1 0.044715f
#define INV_SQRT2 0.7071067811865476f
#define INV_SQRT_2PI 0.3989422804014327f

struct pointwise {
	float *out;        /* forward output, or the gradient accumulated into */
	const float *x;
	const float *dout; /* backward only */
};

/* A forward span computes out = f(v) with v = x[i]; a backward span adds
 * dout * f'(v) into dx (kept in `out`). */
#define POINTWISE_FORWARD(name, expr)                                  \
	DFI_CPU_CLONES static void name(int64_t i0, int64_t i1, void *arg) \
	{                                                                  \
		struct pointwise *a = arg;                                     \
		float *restrict out = a->out;                                  \
		const float *restrict x = a->x;                                \
		_Pragma("omp simd") for (int64_t i = i0; i < i1; i++)          \
		{                                                              \
			float v = x[i];                                            \
			out[i] = (expr);                                           \
		}                                                              \
	}

#define POINTWISE_BACKWARD(name, expr)                                 \
	DFI_CPU_CLONES static void name(int64_t i0, int64_t i1, void *arg) \
	{                                                                  \
		struct pointwise *a = arg;                                     \
		float *restrict dx = a->out;                                   \
		const float *restrict x = a->x, *restrict dout = a->dout;      \
		_Pragma("omp simd") for (int64_t i = i0; i < i1; i++)          \
		{                                                              \
			float v = x[i];                                            \
			dx[i] += dout[i] * (expr);                                 \
		}                                                              \
	}

/* 0.5 (1 + tanh u) = sigmoid(2 u): one exp and one division, no tanh. */
DFI_INLINE float gelu_tanh_gate(float v)
{
	return dfi_sigmoidf(2.0f * GELU_K0 * (v + GELU_K1 * v * v * v));
}

DFI_INLINE float gelu_tanh_grad(float v)
{
	float s = gelu_tanh_gate(v);
	return s + v * s * (1.0f - s) * (2.0f * GELU_K0) * (1.0f + 3.0f * GELU_K1 * v * v);
}

DFI_INLINE float gelu_erf_grad(float v)
{
	return 0.5f * (1.0f + dfi_erff(v * INV_SQRT2)) + v * INV_SQRT_2PI * dfi_expf(-0.5f * v * v);
}

DFI_INLINE float silu_grad(float v)
{
	float s = dfi_sigmoidf(v);
	return s * (1.0f + v * (1.0f - s));
}

POINTWISE_FORWARD(gelu_tanh_fwd, v * gelu_tanh_gate(v))
POINTWISE_FORWARD(gelu_erf_fwd, 0.5f * v * (1.0f + dfi_erff(v * INV_SQRT2)))
POINTWISE_FORWARD(silu_fwd, v * dfi_sigmoidf(v))
POINTWISE_BACKWARD(gelu_tanh_bwd, gelu_tanh_grad(v))
POINTWISE_BACKWARD(gelu_erf_bwd, gelu_erf_grad(v))
POINTWISE_BACKWARD(silu_bwd, silu_grad(v))

static void cpu_gelu_forward(const df_backend *be, float *out, const float *x, int64_t n, int tanh_approx)
{
	struct pointwise a = {out, x, NULL};
	dfi_cpu_parallel_spans(be, n, tanh_approx ? gelu_tanh_fwd : gelu_erf_fwd, &a);
}

static void cpu_gelu_backward(const df_backend *be, float *dx, const float *dout, const float *x, int64_t n,
                              int tanh_approx)
{
	struct pointwise a = {dx, x, dout};
	dfi_cpu_parallel_spans(be, n, tanh_approx ? gelu_tanh_bwd : gelu_erf_bwd, &a);
}

static void cpu_silu_forward(const df_backend *be, float *out, const float *x, int64_t n)
{
	struct pointwise a = {out, x, NULL};
	dfi_cpu_parallel_spans(be, n, silu_fwd, &a);
}

static void cpu_silu_backward(const df_backend *be, float *dx, const float *dout, const float *x, int64_t n)
{
	struct pointwise a = {dx, x, dout};
	dfi_cpu_parallel_spans(be, n, silu_bwd, &a);
}

void dfi_cpu_install_activation(df_backend *be)
{
	be->gelu_forward = cpu_gelu_forward;
	be->gelu_backward = cpu_gelu_backward;
	be->silu_forward = cpu_silu_forward;
	be->silu_backward = cpu_silu_backward;
}
