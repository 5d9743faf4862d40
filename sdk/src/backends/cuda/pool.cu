/* CUDA kernels: ReLU and windowed max / average pooling, one thread per
 * output cell in the forwards and per input cell in the backwards (each
 * gathers from the windows that cover it: no atomics, a fixed order). The
 * first largest cell of a window wins, as on the CPU. */
#include "config.h"

#include <cuda_runtime.h>

#include "cuda_private.h"

#define POOL_THREADS 256

template <class F> __global__ void pool_map_kernel(int64_t n, F f)
{
	for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
		f(i);
}

template <class F> static void pool_for_each(int64_t n, F f)
{
	if (n > 0)
		pool_map_kernel<<<dfi_cuda_blocks(n, POOL_THREADS), POOL_THREADS, 0, dfi_cuda.stream>>>(n, f);
}

static void cuda_relu_forward(const df_backend *be, float *out, const float *x, int64_t n)
{
	pool_for_each(n, [=] __device__(int64_t i) { out[i] = x[i] > 0.0f ? x[i] : 0.0f; });
}

static void cuda_relu_backward(const df_backend *be, float *dx, const float *dout, const float *x, int64_t n)
{
	pool_for_each(n, [=] __device__(int64_t i) {
		if (x[i] > 0.0f)
			dx[i] += dout[i];
	});
}

__device__ static void window_span(int64_t start, int64_t kernel, int64_t size, int64_t *lo, int64_t *hi)
{
	*lo = start < 0 ? 0 : start;
	*hi = start + kernel < size ? start + kernel : size;
}

__device__ static int64_t window_argmax(const df_pool2d_shape s, const float *plane, int64_t oy, int64_t ox)
{
	int64_t y0, y1, x0, x1;
	window_span(oy * s.stride - s.pad, s.kernel, s.h, &y0, &y1);
	window_span(ox * s.stride - s.pad, s.kernel, s.w, &x0, &x1);
	int64_t best = y0 * s.w + x0;
	for (int64_t y = y0; y < y1; y++)
		for (int64_t x = x0; x < x1; x++)
			if (plane[y * s.w + x] > plane[best])
				best = y * s.w + x;
	return best;
}

/* The outputs [*lo, *hi) along one axis whose windows cover input cell i. */
__device__ static void covering_outputs(const df_pool2d_shape s, int64_t i, int64_t out_size, int64_t *lo,
                                        int64_t *hi)
{
	const int64_t last = (i + s.pad) / s.stride, first_num = i + s.pad - s.kernel + 1;
	*lo = first_num <= 0 ? 0 : (first_num + s.stride - 1) / s.stride;
	*hi = last + 1 < out_size ? last + 1 : out_size;
}

static void cuda_maxpool_forward(const df_backend *be, const df_pool2d_shape *sp, float *out, const float *x)
{
	const df_pool2d_shape s = *sp;
	pool_for_each(s.planes * s.ho * s.wo, [=] __device__(int64_t i) {
		const int64_t ox = i % s.wo, oy = (i / s.wo) % s.ho, p = i / (s.ho * s.wo);
		const float *plane = x + p * s.h * s.w;
		out[i] = plane[window_argmax(s, plane, oy, ox)];
	});
}

static void cuda_maxpool_backward(const df_backend *be, const df_pool2d_shape *sp, float *dx, const float *dout,
                                  const float *x)
{
	const df_pool2d_shape s = *sp;
	pool_for_each(s.planes * s.h * s.w, [=] __device__(int64_t i) {
		const int64_t c = i % s.w, r = (i / s.w) % s.h, p = i / (s.h * s.w);
		const float *plane = x + p * s.h * s.w;
		int64_t oy0, oy1, ox0, ox1;
		covering_outputs(s, r, s.ho, &oy0, &oy1);
		covering_outputs(s, c, s.wo, &ox0, &ox1);
		float g = 0.0f;
		for (int64_t oy = oy0; oy < oy1; oy++)
			for (int64_t ox = ox0; ox < ox1; ox++)
				if (window_argmax(s, plane, oy, ox) == r * s.w + c)
					g += dout[(p * s.ho + oy) * s.wo + ox];
		dx[i] += g;
	});
}

__device__ static float window_count(const df_pool2d_shape s, int64_t oy, int64_t ox)
{
	if (s.count_pad)
		return (float)(s.kernel * s.kernel);
	int64_t y0, y1, x0, x1;
	window_span(oy * s.stride - s.pad, s.kernel, s.h, &y0, &y1);
	window_span(ox * s.stride - s.pad, s.kernel, s.w, &x0, &x1);
	return (float)((y1 - y0) * (x1 - x0));
}

static void cuda_avgpool_window_forward(const df_backend *be, const df_pool2d_shape *sp, float *out,
                                        const float *x)
{
	const df_pool2d_shape s = *sp;
	pool_for_each(s.planes * s.ho * s.wo, [=] __device__(int64_t i) {
		const int64_t ox = i % s.wo, oy = (i / s.wo) % s.ho, p = i / (s.ho * s.wo);
		const float *plane = x + p * s.h * s.w;
		int64_t y0, y1, x0, x1;
		window_span(oy * s.stride - s.pad, s.kernel, s.h, &y0, &y1);
		window_span(ox * s.stride - s.pad, s.kernel, s.w, &x0, &x1);
		float acc = 0.0f;
		for (int64_t y = y0; y < y1; y++)
			for (int64_t c = x0; c < x1; c++)
				acc += plane[y * s.w + c];
		out[i] = acc / window_count(s, oy, ox);
	});
}

static void cuda_avgpool_window_backward(const df_backend *be, const df_pool2d_shape *sp, float *dx,
                                         const float *dout)
{
	const df_pool2d_shape s = *sp;
	pool_for_each(s.planes * s.h * s.w, [=] __device__(int64_t i) {
		const int64_t c = i % s.w, r = (i / s.w) % s.h, p = i / (s.h * s.w);
		int64_t oy0, oy1, ox0, ox1;
		covering_outputs(s, r, s.ho, &oy0, &oy1);
		covering_outputs(s, c, s.wo, &ox0, &ox1);
		float g = 0.0f;
		for (int64_t oy = oy0; oy < oy1; oy++)
			for (int64_t ox = ox0; ox < ox1; ox++)
				g += dout[(p * s.ho + oy) * s.wo + ox] / window_count(s, oy, ox);
		dx[i] += g;
	});
}

void dfi_cuda_install_pool(df_backend *be)
{
	be->relu_forward = cuda_relu_forward;
	be->relu_backward = cuda_relu_backward;
	be->maxpool2d_forward = cuda_maxpool_forward;
	be->maxpool2d_backward = cuda_maxpool_backward;
	be->avgpool2d_window_forward = cuda_avgpool_window_forward;
	be->avgpool2d_window_backward = cuda_avgpool_window_backward;
}
