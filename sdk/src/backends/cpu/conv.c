/* CPU 2-D convolution: im2col + sgemm, tiled over output rows so the column
 * buffer stays bounded whatever the resolution (a full-image im2col of a
 * 512x512 VAE layer would take over a gigabyte).
 *
 * The copies around the GEMMs run on one thread on purpose: OpenBLAS keeps
 * its own (pthread) workers spinning between calls, and OpenMP loops
 * interleaved with them fight for the same cores; measured on 2 cores, a
 * threaded im2col halved the convolution's speed. The copies cost about
 * 1/cout of the GEMM's work. */
#include "config.h"

#include <omp.h>
#include <cblas.h>

#include "cpu.h"
#include "spatial_kernels.h"

static int is_pointwise(const struct df_conv2d_shape *s)
{
	return s->kh == 1 && s->kw == 1 && s->stride == 1 && s->pad == 0;
}

/* Output rows per tile: as many as fit the budget, at least one. */
static int64_t tile_rows(const struct df_conv2d_shape *s)
{
	const int64_t row_floats = s->cin * s->kh * s->kw * s->wo;
	int64_t rows = DFI_CPU_CONV2D_TILE_FLOATS / row_floats;
	if (rows < 1)
		rows = 1;
	return rows < s->ho ? rows : s->ho;
}

/* Floats of one im2col tile. */
static int64_t tile_floats(const struct df_conv2d_shape *s)
{
	return is_pointwise(s) ? 0 : s->cin * s->kh * s->kw * s->wo * tile_rows(s);
}

/* The output columns ow whose input column ow * stride - pad + kj lies in
 * [0, w): [*lo, *hi). */
static void valid_columns(const struct df_conv2d_shape *s, int64_t kj, int64_t *lo, int64_t *hi)
{
	const int64_t off = kj - s->pad;
	int64_t first = off < 0 ? (-off + s->stride - 1) / s->stride : 0;
	int64_t last = (s->w - 1 - off) >= 0 ? (s->w - 1 - off) / s->stride + 1 : 0;
	if (last > s->wo)
		last = s->wo;
	if (first > last)
		first = last;
	*lo = first;
	*hi = last;
}

/* col (K, rows * wo), K = cin * kh * kw ordered as the weights are, for
 * output rows [r0, r0 + rows) of one image xn (cin, h, w). */
static void im2col_rows(float *col, const float *xn, const struct df_conv2d_shape *s,
			int64_t r0, int64_t rows)
{
	const int64_t k_total = s->cin * s->kh * s->kw, cols = rows * s->wo;
	for (int64_t k = 0; k < k_total; k++) {
		const int64_t ch = k / (s->kh * s->kw), ki = (k / s->kw) % s->kh, kj = k % s->kw;
		const float *plane = xn + ch * s->h * s->w;
		float *dst = col + k * cols;
		int64_t lo, hi;
		valid_columns(s, kj, &lo, &hi);
		for (int64_t r = 0; r < rows; r++) {
			const int64_t ih = (r0 + r) * s->stride - s->pad + ki;
			float *drow = dst + r * s->wo;
			/* Plain loops, not memset/memcpy: rows are often a few
			 * dozen floats, where a library call costs more than the copy. */
			if (ih < 0 || ih >= s->h) {
				for (int64_t ow = 0; ow < s->wo; ow++)
					drow[ow] = 0.0f;
				continue;
			}
			const float *srow = plane + ih * s->w;
			const int64_t off = kj - s->pad;
			for (int64_t ow = 0; ow < lo; ow++)
				drow[ow] = 0.0f;
			if (s->stride == 1)
				for (int64_t ow = lo; ow < hi; ow++)
					drow[ow] = srow[ow + off];
			else
				for (int64_t ow = lo; ow < hi; ow++)
					drow[ow] = srow[ow * s->stride + off];
			for (int64_t ow = hi; ow < s->wo; ow++)
				drow[ow] = 0.0f;
		}
	}
}

/* The adjoint of im2col_rows: adds col into dxn. */
static void col2im_rows_add(float *dxn, const float *col, const struct df_conv2d_shape *s,
			    int64_t r0, int64_t rows)
{
	const int64_t cols = rows * s->wo;
	for (int64_t ch = 0; ch < s->cin; ch++) {
		float *plane = dxn + ch * s->h * s->w;
		for (int64_t ki = 0; ki < s->kh; ki++) {
			for (int64_t kj = 0; kj < s->kw; kj++) {
				const float *src = col + ((ch * s->kh + ki) * s->kw + kj) * cols;
				int64_t lo, hi;
				valid_columns(s, kj, &lo, &hi);
				for (int64_t r = 0; r < rows; r++) {
					const int64_t ih = (r0 + r) * s->stride - s->pad + ki;
					if (ih < 0 || ih >= s->h)
						continue;
					float *drow = plane + ih * s->w;
					const float *srow = src + r * s->wo;
					for (int64_t ow = lo; ow < hi; ow++)
						drow[ow * s->stride + kj - s->pad] += srow[ow];
				}
			}
		}
	}
}

/* The batch is split over the threads, one image per thread at a time with
 * a one-thread sgemm and its own slice of the workspace, when every thread
 * gets at least one image and the split is even or the batch large; else
 * images go one by one through OpenBLAS's threads. Both give the same
 * floats: each image is computed the same way. */
static int batch_workers(const df_backend *be, const struct df_conv2d_shape *s)
{
	const int64_t t = be->threads;
	if (t > 1 && s->n >= t && (s->n % t == 0 || s->n >= 4 * t))
		return (int)t;
	return 1;
}

/* The calling thread's tile of the workspace (none for 1x1). */
static float *thread_scratch(void *workspace, const struct df_conv2d_shape *s)
{
	return workspace ? (float *)workspace + omp_get_thread_num() * tile_floats(s) : NULL;
}

size_t dfi_cpu_conv2d_workspace(const df_backend *be, const struct df_conv2d_shape *s)
{
	if (is_pointwise(s))
		return 0;
	return (size_t)batch_workers(be, s) * (size_t)tile_floats(s) * sizeof(float);
}

/* One image: on (cout, ho, wo) = conv(xn). */
static void forward_image(const struct df_conv2d_shape *s, float *on, const float *xn, const float *w,
                          const float *b, float *scratch)
{
	const int64_t k_total = s->cin * s->kh * s->kw, pixels = s->ho * s->wo, rows = tile_rows(s);
	/* The bias seeds the output; the GEMM then adds with beta = 1. */
	if (b)
		for (int64_t co = 0; co < s->cout; co++)
			for (int64_t p = 0; p < pixels; p++)
				on[co * pixels + p] = b[co];
	const float beta = b ? 1.0f : 0.0f;
	if (is_pointwise(s)) {
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)s->cout, (int)pixels, (int)s->cin, 1.0f, w,
		            (int)s->cin, xn, (int)pixels, beta, on, (int)pixels);
		return;
	}
	for (int64_t r0 = 0; r0 < s->ho; r0 += rows) {
		const int64_t nr = r0 + rows <= s->ho ? rows : s->ho - r0, cols = nr * s->wo;
		im2col_rows(scratch, xn, s, r0, nr);
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)s->cout, (int)cols, (int)k_total, 1.0f, w,
		            (int)k_total, scratch, (int)cols, beta, on + r0 * s->wo, (int)pixels);
	}
}

/* One image: dxn (cin, h, w) += conv^T(dn). */
static void input_grad_image(const struct df_conv2d_shape *s, float *dxn, const float *dn, const float *w,
                             float *scratch)
{
	const int64_t k_total = s->cin * s->kh * s->kw, pixels = s->ho * s->wo, rows = tile_rows(s);
	if (is_pointwise(s)) {
		cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)s->cin, (int)pixels, (int)s->cout, 1.0f, w,
		            (int)s->cin, dn, (int)pixels, 1.0f, dxn, (int)pixels);
		return;
	}
	for (int64_t r0 = 0; r0 < s->ho; r0 += rows) {
		const int64_t nr = r0 + rows <= s->ho ? rows : s->ho - r0, cols = nr * s->wo;
		cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)k_total, (int)cols, (int)s->cout, 1.0f, w,
		            (int)k_total, dn + r0 * s->wo, (int)pixels, 0.0f, scratch, (int)cols);
		col2im_rows_add(dxn, scratch, s, r0, nr);
	}
}

/* dw += dn im2col(xn)^T and db += row sums of dn, for one image. */
static void weight_grad_image(const struct df_conv2d_shape *s, float *dw, float *db, const float *dn,
                              const float *xn, float *scratch)
{
	const int64_t k_total = s->cin * s->kh * s->kw, pixels = s->ho * s->wo, rows = tile_rows(s);
	if (db)
		for (int64_t co = 0; co < s->cout; co++) {
			float acc = 0.0f;
			for (int64_t p = 0; p < pixels; p++)
				acc += dn[co * pixels + p];
			db[co] += acc;
		}
	if (!dw)
		return;
	if (is_pointwise(s)) {
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)s->cout, (int)s->cin, (int)pixels, 1.0f, dn,
		            (int)pixels, xn, (int)pixels, 1.0f, dw, (int)s->cin);
		return;
	}
	for (int64_t r0 = 0; r0 < s->ho; r0 += rows) {
		const int64_t nr = r0 + rows <= s->ho ? rows : s->ho - r0, cols = nr * s->wo;
		im2col_rows(scratch, xn, s, r0, nr);
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)s->cout, (int)k_total, (int)cols, 1.0f,
		            dn + r0 * s->wo, (int)pixels, scratch, (int)cols, 1.0f, dw, (int)k_total);
	}
}

void dfi_cpu_conv2d_forward(const df_backend *be, const struct df_conv2d_shape *s, float *out, const float *x,
                            const float *w, const float *b, void *workspace)
{
	const int64_t in_image = s->cin * s->h * s->w, out_image = s->cout * s->ho * s->wo;
	const int workers = batch_workers(be, s);
	if (workers > 1) {
		dfi_cpu_blas_threads(1);
#pragma omp parallel for num_threads(workers) schedule(static)
		for (int64_t img = 0; img < s->n; img++)
			forward_image(s, out + img * out_image, x + img * in_image, w, b, thread_scratch(workspace, s));
		dfi_cpu_blas_threads(be->threads);
		return;
	}
	dfi_cpu_blas_threads(be->threads);
	for (int64_t img = 0; img < s->n; img++)
		forward_image(s, out + img * out_image, x + img * in_image, w, b, workspace);
}

/* The weight gradient sums over images, so it runs image by image in a
 * fixed order (OpenBLAS's threads inside each GEMM); the input gradient is
 * per image and may split the batch. */
void dfi_cpu_conv2d_backward(const df_backend *be, const struct df_conv2d_shape *s, float *dx, float *dw,
                             float *db, const float *dout, const float *x, const float *w, void *workspace)
{
	const int64_t in_image = s->cin * s->h * s->w, out_image = s->cout * s->ho * s->wo;
	if (dw || db) {
		dfi_cpu_blas_threads(be->threads);
		for (int64_t img = 0; img < s->n; img++)
			weight_grad_image(s, dw, db, dout + img * out_image, x + img * in_image, workspace);
	}
	if (!dx)
		return;
	const int workers = batch_workers(be, s);
	if (workers > 1) {
		dfi_cpu_blas_threads(1);
#pragma omp parallel for num_threads(workers) schedule(static)
		for (int64_t img = 0; img < s->n; img++)
			input_grad_image(s, dx + img * in_image, dout + img * out_image, w, thread_scratch(workspace, s));
		dfi_cpu_blas_threads(be->threads);
		return;
	}
	dfi_cpu_blas_threads(be->threads);
	for (int64_t img = 0; img < s->n; img++)
		input_grad_image(s, dx + img * in_image, dout + img * out_image, w, workspace);
}
