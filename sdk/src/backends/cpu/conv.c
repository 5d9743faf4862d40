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

size_t dfi_cpu_conv2d_workspace(const df_backend *be, const struct df_conv2d_shape *s)
{
	(void)be;
	if (is_pointwise(s))
		return 0;
	return (size_t)(s->cin * s->kh * s->kw * s->wo * tile_rows(s)) * sizeof(float);
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

void dfi_cpu_conv2d_forward(const df_backend *be, const struct df_conv2d_shape *s, float *out, const float *x,
                            const float *w, const float *b, void *workspace)
{
	float *scratch = workspace;
	dfi_cpu_blas_threads(be->threads);
	const int64_t k_total = s->cin * s->kh * s->kw, pixels = s->ho * s->wo;
	const int64_t rows = tile_rows(s);

	for (int64_t img = 0; img < s->n; img++) {
		const float *xn = x + img * s->cin * s->h * s->w;
		float *on = out + img * s->cout * pixels;
		/* The bias seeds the output; the GEMM then adds with beta = 1. */
		if (b) {
			for (int64_t co = 0; co < s->cout; co++)
				for (int64_t p = 0; p < pixels; p++)
					on[co * pixels + p] = b[co];
		}
		const float beta = b ? 1.0f : 0.0f;
		if (is_pointwise(s)) {
			cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)s->cout,
				    (int)pixels, (int)s->cin, 1.0f, w, (int)s->cin, xn, (int)pixels,
				    beta, on, (int)pixels);
			continue;
		}
		for (int64_t r0 = 0; r0 < s->ho; r0 += rows) {
			const int64_t nr = r0 + rows <= s->ho ? rows : s->ho - r0;
			const int64_t cols = nr * s->wo;
			im2col_rows(scratch, xn, s, r0, nr);
			cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)s->cout,
				    (int)cols, (int)k_total, 1.0f, w, (int)k_total, scratch,
				    (int)cols, beta, on + r0 * s->wo, (int)pixels);
		}
	}
}

void dfi_cpu_conv2d_backward(const df_backend *be, const struct df_conv2d_shape *s, float *dx, float *dw,
                             float *db, const float *dout, const float *x, const float *w, void *workspace)
{
	float *scratch = workspace;
	dfi_cpu_blas_threads(be->threads);
	const int64_t k_total = s->cin * s->kh * s->kw, pixels = s->ho * s->wo;
	const int64_t rows = tile_rows(s);

	for (int64_t img = 0; img < s->n; img++) {
		const float *xn = x + img * s->cin * s->h * s->w;
		const float *dn = dout + img * s->cout * pixels;
		float *dxn = dx ? dx + img * s->cin * s->h * s->w : NULL;
		if (db) {
			for (int64_t co = 0; co < s->cout; co++) {
				float acc = 0.0f;
				for (int64_t p = 0; p < pixels; p++)
					acc += dn[co * pixels + p];
				db[co] += acc;
			}
		}
		if (is_pointwise(s)) {
			if (dw)
				cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)s->cout,
					    (int)s->cin, (int)pixels, 1.0f, dn, (int)pixels, xn,
					    (int)pixels, 1.0f, dw, (int)s->cin);
			if (dxn)
				cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)s->cin,
					    (int)pixels, (int)s->cout, 1.0f, w, (int)s->cin, dn,
					    (int)pixels, 1.0f, dxn, (int)pixels);
			continue;
		}
		for (int64_t r0 = 0; r0 < s->ho; r0 += rows) {
			const int64_t nr = r0 + rows <= s->ho ? rows : s->ho - r0;
			const int64_t cols = nr * s->wo;
			const float *dtile = dn + r0 * s->wo;
			if (dw) {
				im2col_rows(scratch, xn, s, r0, nr);
				cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)s->cout,
					    (int)k_total, (int)cols, 1.0f, dtile, (int)pixels, scratch,
					    (int)cols, 1.0f, dw, (int)k_total);
			}
			if (dxn) {
				cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)k_total,
					    (int)cols, (int)s->cout, 1.0f, w, (int)k_total, dtile,
					    (int)pixels, 0.0f, scratch, (int)cols);
				col2im_rows_add(dxn, scratch, s, r0, nr);
			}
		}
	}
}
