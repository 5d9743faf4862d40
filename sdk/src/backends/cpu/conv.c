/* CPU 2-D convolution: im2col + sgemm, tiled over output rows so the column
 * buffer stays bounded whatever the resolution (a full-image im2col of a
 * 512x512 VAE layer would take over a gigabyte).
 *
 * Threads (the backend's OpenMP pool; OpenBLAS runs single-threaded): either
 * the batch is split over them, each image on one thread, or images go one
 * by one with each GEMM split over the threads (dfi_cpu_gemm) and the
 * copies around the GEMMs on the calling thread; they cost about 1/cout of
 * the GEMM's work. */
#include "config.h"

#include <string.h>
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

/* C = op(A) op(B) + beta C, row-major: on the calling thread (split NULL,
 * inside an OpenMP region) or split over split's threads (outside one). */
static void conv_gemm(const df_backend *split, int trans_a, int trans_b, int64_t m, int64_t n, int64_t k,
                      const float *a, int64_t lda, const float *b, int64_t ldb, float beta, float *c, int64_t ldc)
{
	if (split) {
		dfi_cpu_gemm(split, trans_a, trans_b, m, n, k, 1.0f, a, lda, b, ldb, beta, c, ldc);
		return;
	}
	cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, (int)m,
	            (int)n, (int)k, 1.0f, a, (int)lda, b, (int)ldb, beta, c, (int)ldc);
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

/* For stride 1 with output rows as wide as input rows ("same" padding),
 * the tile rows [*ra, *rb) that read input rows inside the image map
 * element i of a column row to plane element *base + i + (kj - pad) for i
 * in [*first, *end): one shifted span, clipped so it stays inside those
 * input rows; the border columns [0, lo) and [hi, wo) of each row fall on
 * neighbouring rows and are handled apart. */
struct same_width_span {
	int64_t ra, rb, base, first, end;
};

static struct same_width_span same_width_span(const struct df_conv2d_shape *s, int64_t ki, int64_t r0,
                                              int64_t rows, int64_t lo, int64_t hi)
{
	struct same_width_span sp;
	int64_t ra = s->pad - ki - r0, rb = s->h + s->pad - ki - r0;
	sp.ra = ra < 0 ? 0 : ra > rows ? rows : ra;
	sp.rb = rb < sp.ra ? sp.ra : rb > rows ? rows : rb;
	sp.base = (r0 + sp.ra - s->pad + ki) * s->w - sp.ra * s->wo;
	sp.first = sp.ra * s->wo + lo;
	sp.end = sp.rb * s->wo - (s->wo - hi);
	return sp;
}

/* Columns [0, lo) and [hi, wo) of the span's rows. */
static void zero_border_columns(float *col_row, const struct df_conv2d_shape *s, const struct same_width_span *sp,
                                int64_t lo, int64_t hi)
{
	for (int64_t r = sp->ra; r < sp->rb; r++) {
		for (int64_t ow = 0; ow < lo; ow++)
			col_row[r * s->wo + ow] = 0.0f;
		for (int64_t ow = hi; ow < s->wo; ow++)
			col_row[r * s->wo + ow] = 0.0f;
	}
}

/* Row r of one im2col row block for input row ih (or zeros outside the
 * image), columns [lo, hi) from the input and the rest zero. */
static void im2col_row(float *drow, const float *plane, const struct df_conv2d_shape *s, int64_t ih, int64_t off,
                       int64_t lo, int64_t hi)
{
	/* Plain loops, not memset/memcpy: rows are often a few dozen floats,
	 * where a library call costs more than the copy. */
	if (ih < 0 || ih >= s->h || lo >= hi) {
		for (int64_t ow = 0; ow < s->wo; ow++)
			drow[ow] = 0.0f;
		return;
	}
	const float *srow = plane + ih * s->w;
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

/* col (K, rows * wo), K = cin * kh * kw ordered as the weights are, for
 * output rows [r0, r0 + rows) of one image xn (cin, h, w). */
static void im2col_rows(float *col, const float *xn, const struct df_conv2d_shape *s,
			int64_t r0, int64_t rows)
{
	const int64_t k_total = s->cin * s->kh * s->kw, cols = rows * s->wo;
	/* Stride 1 with output rows as wide as input rows ("same" padding):
	 * the rows inside the image are one shifted copy, then the few border
	 * columns are zeroed. */
	const int same_width = s->stride == 1 && s->wo == s->w;
	for (int64_t k = 0; k < k_total; k++) {
		const int64_t ch = k / (s->kh * s->kw), ki = (k / s->kw) % s->kh, kj = k % s->kw;
		const float *plane = xn + ch * s->h * s->w;
		const int64_t off = kj - s->pad;
		float *dst = col + k * cols;
		int64_t lo, hi;
		valid_columns(s, kj, &lo, &hi);
		if (!same_width || lo >= hi) {
			for (int64_t r = 0; r < rows; r++)
				im2col_row(dst + r * s->wo, plane, s, (r0 + r) * s->stride - s->pad + ki, off, lo, hi);
			continue;
		}
		const struct same_width_span sp = same_width_span(s, ki, r0, rows, lo, hi);
		memset(dst, 0, (size_t)(sp.ra * s->wo) * sizeof(float));
		memset(dst + sp.rb * s->wo, 0, (size_t)((rows - sp.rb) * s->wo) * sizeof(float));
		if (sp.end > sp.first)
			memcpy(dst + sp.first, plane + sp.base + sp.first + off, (size_t)(sp.end - sp.first) * sizeof(float));
		zero_border_columns(dst, s, &sp, lo, hi);
	}
}

/* The adjoint of im2col_rows: adds col into dxn. col is scratch: on the
 * "same" fast path its border columns are zeroed so one shifted span adds
 * the rest. */
static void col2im_rows_add(float *dxn, float *col, const struct df_conv2d_shape *s, int64_t r0, int64_t rows)
{
	const int64_t cols = rows * s->wo;
	const int same_width = s->stride == 1 && s->wo == s->w;
	for (int64_t ch = 0; ch < s->cin; ch++) {
		float *plane = dxn + ch * s->h * s->w;
		for (int64_t ki = 0; ki < s->kh; ki++) {
			for (int64_t kj = 0; kj < s->kw; kj++) {
				float *src = col + ((ch * s->kh + ki) * s->kw + kj) * cols;
				const int64_t off = kj - s->pad;
				int64_t lo, hi;
				valid_columns(s, kj, &lo, &hi);
				if (same_width && lo < hi) {
					const struct same_width_span sp = same_width_span(s, ki, r0, rows, lo, hi);
					zero_border_columns(src, s, &sp, lo, hi);
					for (int64_t i = sp.first; i < sp.end; i++)
						plane[sp.base + off + i] += src[i];
					continue;
				}
				for (int64_t r = 0; r < rows; r++) {
					const int64_t ih = (r0 + r) * s->stride - s->pad + ki;
					if (ih < 0 || ih >= s->h)
						continue;
					float *drow = plane + ih * s->w;
					const float *srow = src + r * s->wo;
					for (int64_t ow = lo; ow < hi; ow++)
						drow[ow * s->stride + off] += srow[ow];
				}
			}
		}
	}
}

/* The batch is split over the threads, one image per thread at a time with
 * its own slice of the workspace, when every thread gets at least one image
 * and the split is even or the batch large; else images go one by one, each
 * product split over the threads. Both give the same floats: each image is
 * computed the same way. */
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
static void forward_image(const df_backend *split, const struct df_conv2d_shape *s, float *on, const float *xn,
                          const float *w, const float *b, float *scratch)
{
	const int64_t k_total = s->cin * s->kh * s->kw, pixels = s->ho * s->wo, rows = tile_rows(s);
	/* The bias seeds the output; the GEMM then adds with beta = 1. */
	if (b)
		for (int64_t co = 0; co < s->cout; co++)
			for (int64_t p = 0; p < pixels; p++)
				on[co * pixels + p] = b[co];
	const float beta = b ? 1.0f : 0.0f;
	if (is_pointwise(s)) {
		conv_gemm(split, 0, 0, s->cout, pixels, s->cin, w, s->cin, xn, pixels, beta, on, pixels);
		return;
	}
	for (int64_t r0 = 0; r0 < s->ho; r0 += rows) {
		const int64_t nr = r0 + rows <= s->ho ? rows : s->ho - r0, cols = nr * s->wo;
		im2col_rows(scratch, xn, s, r0, nr);
		conv_gemm(split, 0, 0, s->cout, cols, k_total, w, k_total, scratch, cols, beta, on + r0 * s->wo, pixels);
	}
}

/* One image: dxn (cin, h, w) += conv^T(dn). */
static void input_grad_image(const df_backend *split, const struct df_conv2d_shape *s, float *dxn, const float *dn,
                             const float *w, float *scratch)
{
	const int64_t k_total = s->cin * s->kh * s->kw, pixels = s->ho * s->wo, rows = tile_rows(s);
	if (is_pointwise(s)) {
		conv_gemm(split, 1, 0, s->cin, pixels, s->cout, w, s->cin, dn, pixels, 1.0f, dxn, pixels);
		return;
	}
	for (int64_t r0 = 0; r0 < s->ho; r0 += rows) {
		const int64_t nr = r0 + rows <= s->ho ? rows : s->ho - r0, cols = nr * s->wo;
		conv_gemm(split, 1, 0, k_total, cols, s->cout, w, k_total, dn + r0 * s->wo, pixels, 0.0f, scratch, cols);
		col2im_rows_add(dxn, scratch, s, r0, nr);
	}
}

/* Rows [c0, c1) of dw += dn im2col(xn)^T and of db += row sums of dn, for
 * one image. */
static void weight_grad_image(const df_backend *split, const struct df_conv2d_shape *s, int64_t c0, int64_t c1,
                              float *dw, float *db, const float *dn, const float *xn, float *scratch)
{
	const int64_t k_total = s->cin * s->kh * s->kw, pixels = s->ho * s->wo, rows = tile_rows(s);
	const int64_t m = c1 - c0;
	if (db)
		for (int64_t co = c0; co < c1; co++) {
			float acc = 0.0f;
			for (int64_t p = 0; p < pixels; p++)
				acc += dn[co * pixels + p];
			db[co] += acc;
		}
	if (!dw)
		return;
	if (is_pointwise(s)) {
		conv_gemm(split, 0, 1, m, s->cin, pixels, dn + c0 * pixels, pixels, xn, pixels, 1.0f, dw + c0 * s->cin,
		          s->cin);
		return;
	}
	for (int64_t r0 = 0; r0 < s->ho; r0 += rows) {
		const int64_t nr = r0 + rows <= s->ho ? rows : s->ho - r0, cols = nr * s->wo;
		im2col_rows(scratch, xn, s, r0, nr);
		conv_gemm(split, 0, 1, m, k_total, cols, dn + c0 * pixels + r0 * s->wo, pixels, scratch, cols, 1.0f,
		          dw + c0 * k_total, k_total);
	}
}

void dfi_cpu_conv2d_forward(const df_backend *be, const struct df_conv2d_shape *s, float *out, const float *x,
                            const float *w, const float *b, void *workspace)
{
	const int64_t in_image = s->cin * s->h * s->w, out_image = s->cout * s->ho * s->wo;
	const int workers = batch_workers(be, s);
	dfi_cpu_blas_single_thread();
	if (workers > 1) {
#pragma omp parallel for num_threads(workers) schedule(static)
		for (int64_t img = 0; img < s->n; img++)
			forward_image(NULL, s, out + img * out_image, x + img * in_image, w, b, thread_scratch(workspace, s));
		return;
	}
	for (int64_t img = 0; img < s->n; img++)
		forward_image(be, s, out + img * out_image, x + img * in_image, w, b, workspace);
}

/* The weight gradient sums over images in image order. With the batch
 * split, each thread owns a block of output channels (rows of dw and db)
 * and makes its own columns, so no two threads add to one row; otherwise
 * each product is split over the threads (dfi_cpu_gemm). */
void dfi_cpu_conv2d_backward(const df_backend *be, const struct df_conv2d_shape *s, float *dx, float *dw,
                             float *db, const float *dout, const float *x, const float *w, void *workspace)
{
	const int64_t in_image = s->cin * s->h * s->w, out_image = s->cout * s->ho * s->wo;
	const int workers = batch_workers(be, s);
	dfi_cpu_blas_single_thread();
	if (workers > 1) {
#pragma omp parallel num_threads(workers)
		{
			const int64_t t = omp_get_thread_num(), nt = omp_get_num_threads();
			const int64_t c0 = s->cout * t / nt, c1 = s->cout * (t + 1) / nt;
			if ((dw || db) && c1 > c0)
				for (int64_t img = 0; img < s->n; img++)
					weight_grad_image(NULL, s, c0, c1, dw, db, dout + img * out_image, x + img * in_image,
					                  thread_scratch(workspace, s));
			if (dx) {
#pragma omp for schedule(static)
				for (int64_t img = 0; img < s->n; img++)
					input_grad_image(NULL, s, dx + img * in_image, dout + img * out_image, w,
					                 thread_scratch(workspace, s));
			}
		}
		return;
	}
	for (int64_t img = 0; img < s->n; img++) {
		if (dw || db)
			weight_grad_image(be, s, 0, s->cout, dw, db, dout + img * out_image, x + img * in_image, workspace);
		if (dx)
			input_grad_image(be, s, dx + img * in_image, dout + img * out_image, w, workspace);
	}
}
