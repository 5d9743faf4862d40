/* CPU kernels: exp, log, softplus, tanh, row softmax and Philox dropout. */
#include "config.h"

#include <math.h>

#include "diffuse/rng.h"
#include "cpu.h"
#include "simd16.h"
#include "spatial_kernels.h"

/* Elementwise kernels; the backward takes `saved` as unary_backward's slot
 * documents (the output for exp and tanh, the input otherwise). */
static void exp_forward(const df_backend *be, float *out, const float *x, int64_t n)
{
#pragma omp parallel for num_threads(be->threads) if (n > DFI_CPU_PARALLEL_MIN)
	for (int64_t i = 0; i < n; i++)
		out[i] = expf(x[i]);
}

static void exp_backward(const df_backend *be, float *dx, const float *dout, const float *out, int64_t n)
{
#pragma omp parallel for num_threads(be->threads) if (n > DFI_CPU_PARALLEL_MIN)
	for (int64_t i = 0; i < n; i++)
		dx[i] += dout[i] * out[i];
}

static void log_forward(const df_backend *be, float *out, const float *x, int64_t n)
{
#pragma omp parallel for num_threads(be->threads) if (n > DFI_CPU_PARALLEL_MIN)
	for (int64_t i = 0; i < n; i++)
		out[i] = logf(x[i]);
}

static void log_backward(const df_backend *be, float *dx, const float *dout, const float *x, int64_t n)
{
#pragma omp parallel for num_threads(be->threads) if (n > DFI_CPU_PARALLEL_MIN)
	for (int64_t i = 0; i < n; i++)
		dx[i] += dout[i] / x[i];
}

/* log(1 + e^x) = max(x, 0) + log1p(e^-|x|): no overflow for large x, no
 * loss of the small tail for very negative x. */
static void softplus_forward(const df_backend *be, float *out, const float *x, int64_t n)
{
#pragma omp parallel for num_threads(be->threads) if (n > DFI_CPU_PARALLEL_MIN)
	for (int64_t i = 0; i < n; i++)
		out[i] = fmaxf(x[i], 0.0f) + log1pf(expf(-fabsf(x[i])));
}

/* d softplus / dx = sigmoid(x), written so e^ never overflows. */
static void softplus_backward(const df_backend *be, float *dx, const float *dout, const float *x, int64_t n)
{
#pragma omp parallel for num_threads(be->threads) if (n > DFI_CPU_PARALLEL_MIN)
	for (int64_t i = 0; i < n; i++) {
		const float e = expf(-fabsf(x[i]));
		const float sig = x[i] >= 0.0f ? 1.0f / (1.0f + e) : e / (1.0f + e);
		dx[i] += dout[i] * sig;
	}
}

static void tanh_forward(const df_backend *be, float *out, const float *x, int64_t n)
{
#pragma omp parallel for num_threads(be->threads) if (n > DFI_CPU_PARALLEL_MIN)
	for (int64_t i = 0; i < n; i++)
		out[i] = tanhf(x[i]);
}

static void tanh_backward(const df_backend *be, float *dx, const float *dout, const float *out, int64_t n)
{
#pragma omp parallel for num_threads(be->threads) if (n > DFI_CPU_PARALLEL_MIN)
	for (int64_t i = 0; i < n; i++)
		dx[i] += dout[i] * (1.0f - out[i] * out[i]);
}

void dfi_cpu_unary_forward(const df_backend *be, int fn, float *out, const float *x, int64_t n)
{
	switch (fn) {
	case DF_UNARY_EXP: exp_forward(be, out, x, n); break;
	case DF_UNARY_LOG: log_forward(be, out, x, n); break;
	case DF_UNARY_SOFTPLUS: softplus_forward(be, out, x, n); break;
	case DF_UNARY_TANH: tanh_forward(be, out, x, n); break;
	}
}

void dfi_cpu_unary_backward(const df_backend *be, int fn, float *dx, const float *dout, const float *saved,
                            int64_t n)
{
	switch (fn) {
	case DF_UNARY_EXP: exp_backward(be, dx, dout, saved, n); break;
	case DF_UNARY_LOG: log_backward(be, dx, dout, saved, n); break;
	case DF_UNARY_SOFTPLUS: softplus_backward(be, dx, dout, saved, n); break;
	case DF_UNARY_TANH: tanh_backward(be, dx, dout, saved, n); break;
	}
}

/* One row: subtracting its maximum keeps every exponent <= 0. */
static DFI_CPU_CLONES void softmax_row(float *out, const float *x, int64_t d)
{
	const int64_t full = d & ~(int64_t)15, tail = d - full;
	const vi16 tail_lanes = vi16_first(tail);
	vf16 vmax = vf16_splat(-INFINITY);
	for (int64_t i = 0; i < full; i += 16)
		vmax = vf16_max(vmax, vf16_load(x + i));
	if (tail)
		vmax = vf16_max(vmax, vf16_load_partial(x + full, tail, -INFINITY));
	const vf16 shift = vf16_splat(vf16_hmax(vmax));

	vf16 vsum = vf16_splat(0.0f);
	for (int64_t i = 0; i < full; i += 16) {
		const vf16 e = vf16_exp(vf16_load(x + i) - shift);
		vf16_store(out + i, e);
		vsum += e;
	}
	if (tail) {
		const vf16 e = vf16_exp(vf16_load_partial(x + full, tail, 0.0f) - shift);
		vf16_store_partial(out + full, e, tail);
		vsum += vf16_select(tail_lanes, e, vf16_splat(0.0f));
	}
	const vf16 inv = vf16_splat(1.0f / vf16_sum(vsum));
	for (int64_t i = 0; i < full; i += 16)
		vf16_store(out + i, vf16_load(out + i) * inv);
	if (tail)
		vf16_store_partial(out + full, vf16_load_partial(out + full, tail, 0.0f) * inv, tail);
}

/* dx += y * (dy - <dy, y>). */
static DFI_CPU_CLONES void softmax_row_backward(float *dx, const float *dy, const float *y,
					       int64_t d)
{
	const int64_t full = d & ~(int64_t)15, tail = d - full;
	vf16 vdot = vf16_splat(0.0f);
	for (int64_t i = 0; i < full; i += 16)
		vdot += vf16_load(dy + i) * vf16_load(y + i);
	if (tail)
		vdot += vf16_load_partial(dy + full, tail, 0.0f) * vf16_load_partial(y + full, tail, 0.0f);
	const vf16 dot = vf16_splat(vf16_sum(vdot));
	for (int64_t i = 0; i < full; i += 16)
		vf16_store(dx + i, vf16_load(dx + i) + vf16_load(y + i) * (vf16_load(dy + i) - dot));
	for (int64_t i = full; i < d; i++)
		dx[i] += y[i] * (dy[i] - dot[0]);
}

void dfi_cpu_softmax_forward(const df_backend *be, float *out, const float *x, int64_t rows, int64_t d)
{
#pragma omp parallel for num_threads(be->threads) if (rows * d > DFI_CPU_PARALLEL_MIN)
	for (int64_t r = 0; r < rows; r++)
		softmax_row(out + r * d, x + r * d, d);
}

void dfi_cpu_softmax_backward(const df_backend *be, float *dx, const float *dout, const float *out,
			  int64_t rows, int64_t d)
{
#pragma omp parallel for num_threads(be->threads) if (rows * d > DFI_CPU_PARALLEL_MIN)
	for (int64_t r = 0; r < rows; r++)
		softmax_row_backward(dx + r * d, dout + r * d, out + r * d, d);
}

/* ---- Dropout ---------------------------------------------------------
 * Element i is kept when the SDK's Philox uniform at (seed, stream, step, i)
 * is below 1 - p: the mask df_rng_fill_bernoulli would draw, made here one
 * Philox block at a time so no mask is stored. */
/* dst[i] = src[i] * scale where element i is kept, else 0. */
static void apply_dropout_mask(const df_backend *be, float *dst, const float *src, int64_t n, float p,
                               int accumulate, uint64_t seed, uint64_t stream, uint64_t step)
{
	const float keep_prob = 1.0f - p;
	const float scale = p < 1.0f ? 1.0f / keep_prob : 0.0f;
	const int64_t blocks = (n + 3) / 4;
#pragma omp parallel for num_threads(be->threads) if (n > DFI_CPU_PARALLEL_MIN)
	for (int64_t blk = 0; blk < blocks; blk++) {
		uint32_t words[4];
		df_rng_block(seed, stream, step, (uint64_t)blk, words);
		for (int64_t j = 0; j < 4 && blk * 4 + j < n; j++) {
			const int64_t i = blk * 4 + j;
			/* diffuse/rng.h's uniform: 23 bits centred in their interval. */
			const float u = ((float)(words[j] >> 9) + 0.5f) * 0x1p-23f;
			const float v = u < keep_prob ? src[i] * scale : 0.0f;
			if (accumulate)
				dst[i] += v;
			else
				dst[i] = v;
		}
	}
}

void dfi_cpu_dropout_forward(const df_backend *be, float *out, const float *x, int64_t n, float p,
			 uint64_t seed, uint64_t stream, uint64_t step)
{
	apply_dropout_mask(be, out, x, n, p, 0, seed, stream, step);
}

void dfi_cpu_dropout_backward(const df_backend *be, float *dx, const float *dout, int64_t n, float p,
			  uint64_t seed, uint64_t stream, uint64_t step)
{
	apply_dropout_mask(be, dx, dout, n, p, 1, seed, stream, step);
}
