/* CPU kernels: ReLU and windowed max / average pooling. Plain loops, one
 * output row per OpenMP iteration in the forwards, one plane per iteration
 * in the backwards (overlapping windows add into the same cells). */
#include "config.h"

#include <math.h>

#include "cpu.h"

static void relu_forward(const df_backend *be, float *out, const float *x, int64_t n)
{
#pragma omp parallel for num_threads(be->threads) if (n > DFI_CPU_PARALLEL_MIN)
	for (int64_t i = 0; i < n; i++)
		out[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

static void relu_backward(const df_backend *be, float *dx, const float *dout, const float *x, int64_t n)
{
#pragma omp parallel for num_threads(be->threads) if (n > DFI_CPU_PARALLEL_MIN)
	for (int64_t i = 0; i < n; i++)
		if (x[i] > 0.0f)
			dx[i] += dout[i];
}

/* The cells [*lo, *hi) of the window starting at `start` (padding
 * included) that lie inside [0, size). */
static void window_span(int64_t start, int64_t kernel, int64_t size, int64_t *lo, int64_t *hi)
{
	*lo = start < 0 ? 0 : start;
	*hi = start + kernel < size ? start + kernel : size;
}

/* Index in the plane of the first largest cell of output (oy, ox)'s window. */
static int64_t window_argmax(const struct df_pool2d_shape *s, const float *plane, int64_t oy, int64_t ox)
{
	int64_t y0, y1, x0, x1;
	window_span(oy * s->stride - s->pad, s->kernel, s->h, &y0, &y1);
	window_span(ox * s->stride - s->pad, s->kernel, s->w, &x0, &x1);
	int64_t best = y0 * s->w + x0;
	for (int64_t y = y0; y < y1; y++)
		for (int64_t x = x0; x < x1; x++)
			if (plane[y * s->w + x] > plane[best])
				best = y * s->w + x;
	return best;
}

static void maxpool_forward(const df_backend *be, const struct df_pool2d_shape *s, float *out, const float *x)
{
	const int64_t rows = s->planes * s->ho;
#pragma omp parallel for num_threads(be->threads) if (rows * s->wo * s->kernel > DFI_CPU_PARALLEL_MIN)
	for (int64_t row = 0; row < rows; row++) {
		const float *plane = x + row / s->ho * s->h * s->w;
		for (int64_t ox = 0; ox < s->wo; ox++)
			out[row * s->wo + ox] = plane[window_argmax(s, plane, row % s->ho, ox)];
	}
}

static void maxpool_backward(const df_backend *be, const struct df_pool2d_shape *s, float *dx, const float *dout,
                             const float *x)
{
	const int64_t plane_size = s->h * s->w, out_size = s->ho * s->wo;
#pragma omp parallel for num_threads(be->threads) if (s->planes * out_size > DFI_CPU_PARALLEL_MIN)
	for (int64_t p = 0; p < s->planes; p++)
		for (int64_t oy = 0; oy < s->ho; oy++)
			for (int64_t ox = 0; ox < s->wo; ox++)
				dx[p * plane_size + window_argmax(s, x + p * plane_size, oy, ox)] +=
					dout[p * out_size + oy * s->wo + ox];
}

/* What a window's sum is divided by. */
static float window_count(const struct df_pool2d_shape *s, int64_t y0, int64_t y1, int64_t x0, int64_t x1)
{
	return s->count_pad ? (float)(s->kernel * s->kernel) : (float)((y1 - y0) * (x1 - x0));
}

static void avgpool_forward(const df_backend *be, const struct df_pool2d_shape *s, float *out, const float *x)
{
	const int64_t rows = s->planes * s->ho;
#pragma omp parallel for num_threads(be->threads) if (rows * s->wo * s->kernel > DFI_CPU_PARALLEL_MIN)
	for (int64_t row = 0; row < rows; row++) {
		const float *plane = x + row / s->ho * s->h * s->w;
		int64_t y0, y1;
		window_span(row % s->ho * s->stride - s->pad, s->kernel, s->h, &y0, &y1);
		for (int64_t ox = 0; ox < s->wo; ox++) {
			int64_t x0, x1;
			window_span(ox * s->stride - s->pad, s->kernel, s->w, &x0, &x1);
			float acc = 0.0f;
			for (int64_t y = y0; y < y1; y++)
				for (int64_t c = x0; c < x1; c++)
					acc += plane[y * s->w + c];
			out[row * s->wo + ox] = acc / window_count(s, y0, y1, x0, x1);
		}
	}
}

static void avgpool_backward(const df_backend *be, const struct df_pool2d_shape *s, float *dx, const float *dout)
{
	const int64_t plane_size = s->h * s->w, out_size = s->ho * s->wo;
#pragma omp parallel for num_threads(be->threads) if (s->planes * out_size > DFI_CPU_PARALLEL_MIN)
	for (int64_t p = 0; p < s->planes; p++)
		for (int64_t oy = 0; oy < s->ho; oy++) {
			int64_t y0, y1;
			window_span(oy * s->stride - s->pad, s->kernel, s->h, &y0, &y1);
			for (int64_t ox = 0; ox < s->wo; ox++) {
				int64_t x0, x1;
				window_span(ox * s->stride - s->pad, s->kernel, s->w, &x0, &x1);
				const float g = dout[p * out_size + oy * s->wo + ox] / window_count(s, y0, y1, x0, x1);
				for (int64_t y = y0; y < y1; y++)
					for (int64_t c = x0; c < x1; c++)
						dx[p * plane_size + y * s->w + c] += g;
			}
		}
}

void dfi_cpu_install_pool(df_backend *be)
{
	be->relu_forward = relu_forward;
	be->relu_backward = relu_backward;
	be->maxpool2d_forward = maxpool_forward;
	be->maxpool2d_backward = maxpool_backward;
	be->avgpool2d_window_forward = avgpool_forward;
	be->avgpool2d_window_backward = avgpool_backward;
}
