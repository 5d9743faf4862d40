/* CPU 2-D convolution: im2col + sgemm, tiled over output rows so the column
 * buffer stays bounded whatever the resolution (a full-image im2col of a
 * 512x512 VAE layer would take over a gigabyte).
 *
 * Threads: the backend's OpenMP pool, one region per call, OpenBLAS on one
 * thread inside it (see split_batch). */
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

/* C = op(A) op(B) + beta C, row-major, on the calling thread. */
static void conv_gemm(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, const float *a, int64_t lda,
                      const float *b, int64_t ldb, float beta, float *c, int64_t ldc)
{
	if (m <= 0)
		return;
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

/* The adjoint of im2col_rows for input channels [i0, i1): adds col, whose
 * first row belongs to channel i0, into dxn. col is scratch: on the "same"
 * fast path its border columns are zeroed so one shifted span adds the
 * rest. */
static void col2im_rows_add(float *dxn, float *col, const struct df_conv2d_shape *s, int64_t r0, int64_t rows,
                            int64_t i0, int64_t i1)
{
	const int64_t cols = rows * s->wo;
	const int same_width = s->stride == 1 && s->wo == s->w;
	for (int64_t ch = i0; ch < i1; ch++) {
		float *plane = dxn + ch * s->h * s->w;
		for (int64_t ki = 0; ki < s->kh; ki++) {
			for (int64_t kj = 0; kj < s->kw; kj++) {
				float *src = col + (((ch - i0) * s->kh + ki) * s->kw + kj) * cols;
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

/* Threads split the batch (each image on one thread) when every thread
 * gets an image and the split is even or the batch large; otherwise they
 * split each image by channels: output channels for the output and the
 * weight gradient (each thread making its own columns), input channels for
 * the input gradient. No two threads add to one float, and each sum runs
 * in a fixed order, so a run repeats bit for bit at a given thread count;
 * another thread count hands OpenBLAS other row blocks, which can change
 * the last bits of the weight gradient. */
static int split_batch(const df_backend *be, const struct df_conv2d_shape *s)
{
	const int64_t t = be->threads;
	return t > 1 && s->n >= t && (s->n % t == 0 || s->n >= 4 * t);
}

/* Tiny convolutions run on one thread: forking costs more. */
static int parallel_worth_it(const df_backend *be, const struct df_conv2d_shape *s)
{
	return be->threads > 1 && s->n * s->cout * s->ho * s->wo * s->cin * s->kh * s->kw > DFI_CPU_PARALLEL_MIN;
}

/* The calling thread's tile of the workspace (none for 1x1). */
static float *thread_scratch(void *workspace, const struct df_conv2d_shape *s)
{
	return workspace ? (float *)workspace + omp_get_thread_num() * tile_floats(s) : NULL;
}

/* [*lo, *hi): the calling thread's share of [0, n). */
static void thread_share(int64_t n, int64_t *lo, int64_t *hi)
{
	const int64_t t = omp_get_thread_num(), nt = omp_get_num_threads();
	*lo = n * t / nt;
	*hi = n * (t + 1) / nt;
}

size_t dfi_cpu_conv2d_workspace(const df_backend *be, const struct df_conv2d_shape *s)
{
	const int64_t threads = be->threads > 1 ? be->threads : 1;
	return (size_t)threads * (size_t)tile_floats(s) * sizeof(float);
}

/* Output channels [c0, c1) of one image: on (cout, ho, wo) = conv(xn). */
static void forward_image(const struct df_conv2d_shape *s, int64_t c0, int64_t c1, float *on, const float *xn,
                          const float *w, const float *b, float *scratch)
{
	const int64_t k_total = s->cin * s->kh * s->kw, pixels = s->ho * s->wo, rows = tile_rows(s);
	if (c1 <= c0)
		return;
	/* The bias seeds the output; the GEMM then adds with beta = 1. */
	if (b)
		for (int64_t co = c0; co < c1; co++)
			for (int64_t p = 0; p < pixels; p++)
				on[co * pixels + p] = b[co];
	const float beta = b ? 1.0f : 0.0f;
	if (is_pointwise(s)) {
		conv_gemm(0, 0, c1 - c0, pixels, s->cin, w + c0 * s->cin, s->cin, xn, pixels, beta, on + c0 * pixels,
		          pixels);
		return;
	}
	for (int64_t r0 = 0; r0 < s->ho; r0 += rows) {
		const int64_t nr = r0 + rows <= s->ho ? rows : s->ho - r0, cols = nr * s->wo;
		im2col_rows(scratch, xn, s, r0, nr);
		conv_gemm(0, 0, c1 - c0, cols, k_total, w + c0 * k_total, k_total, scratch, cols, beta,
		          on + c0 * pixels + r0 * s->wo, pixels);
	}
}

/* Input channels [i0, i1) of one image: dxn (cin, h, w) += conv^T(dn). */
static void input_grad_image(const struct df_conv2d_shape *s, int64_t i0, int64_t i1, float *dxn, const float *dn,
                             const float *w, float *scratch)
{
	const int64_t k_total = s->cin * s->kh * s->kw, pixels = s->ho * s->wo, rows = tile_rows(s);
	const int64_t window = s->kh * s->kw;
	if (i1 <= i0)
		return;
	if (is_pointwise(s)) {
		conv_gemm(1, 0, i1 - i0, pixels, s->cout, w + i0, s->cin, dn, pixels, 1.0f, dxn + i0 * pixels, pixels);
		return;
	}
	for (int64_t r0 = 0; r0 < s->ho; r0 += rows) {
		const int64_t nr = r0 + rows <= s->ho ? rows : s->ho - r0, cols = nr * s->wo;
		conv_gemm(1, 0, (i1 - i0) * window, cols, s->cout, w + i0 * window, k_total, dn + r0 * s->wo, pixels,
		          0.0f, scratch, cols);
		col2im_rows_add(dxn, scratch, s, r0, nr, i0, i1);
	}
}

/* Output channels [c0, c1) of dw += dn im2col(xn)^T and of db += row sums
 * of dn, for one image. */
static void weight_grad_image(const struct df_conv2d_shape *s, int64_t c0, int64_t c1, float *dw, float *db,
                              const float *dn, const float *xn, float *scratch)
{
	const int64_t k_total = s->cin * s->kh * s->kw, pixels = s->ho * s->wo, rows = tile_rows(s);
	if (c1 <= c0)
		return;
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
		conv_gemm(0, 1, c1 - c0, s->cin, pixels, dn + c0 * pixels, pixels, xn, pixels, 1.0f, dw + c0 * s->cin,
		          s->cin);
		return;
	}
	for (int64_t r0 = 0; r0 < s->ho; r0 += rows) {
		const int64_t nr = r0 + rows <= s->ho ? rows : s->ho - r0, cols = nr * s->wo;
		im2col_rows(scratch, xn, s, r0, nr);
		conv_gemm(0, 1, c1 - c0, k_total, cols, dn + c0 * pixels + r0 * s->wo, pixels, scratch, cols, 1.0f,
		          dw + c0 * k_total, k_total);
	}
}

void dfi_cpu_conv2d_forward(const df_backend *be, const struct df_conv2d_shape *s, float *out, const float *x,
                            const float *w, const float *b, void *workspace)
{
	const int64_t in_image = s->cin * s->h * s->w, out_image = s->cout * s->ho * s->wo;
	const int batch = split_batch(be, s);
	dfi_cpu_blas_single_thread();
#pragma omp parallel num_threads(be->threads) if (parallel_worth_it(be, s))
	{
		float *scratch = thread_scratch(workspace, s);
		if (batch) {
#pragma omp for schedule(static)
			for (int64_t img = 0; img < s->n; img++)
				forward_image(s, 0, s->cout, out + img * out_image, x + img * in_image, w, b, scratch);
		} else {
			int64_t c0, c1;
			thread_share(s->cout, &c0, &c1);
			for (int64_t img = 0; img < s->n; img++)
				forward_image(s, c0, c1, out + img * out_image, x + img * in_image, w, b, scratch);
		}
	}
}

/* The weight gradient sums over images in image order within each block of
 * output channels, which one thread owns, so no two threads add to one row
 * of dw or db. */
void dfi_cpu_conv2d_backward(const df_backend *be, const struct df_conv2d_shape *s, float *dx, float *dw,
                             float *db, const float *dout, const float *x, const float *w, void *workspace)
{
	const int64_t in_image = s->cin * s->h * s->w, out_image = s->cout * s->ho * s->wo;
	const int batch = split_batch(be, s);
	dfi_cpu_blas_single_thread();
#pragma omp parallel num_threads(be->threads) if (parallel_worth_it(be, s))
	{
		float *scratch = thread_scratch(workspace, s);
		int64_t c0, c1, i0, i1;
		thread_share(s->cout, &c0, &c1);
		thread_share(s->cin, &i0, &i1);
		if (dw || db)
			for (int64_t img = 0; img < s->n; img++)
				weight_grad_image(s, c0, c1, dw, db, dout + img * out_image, x + img * in_image, scratch);
		if (dx && batch) {
#pragma omp for schedule(static)
			for (int64_t img = 0; img < s->n; img++)
				input_grad_image(s, 0, s->cin, dx + img * in_image, dout + img * out_image, w, scratch);
		} else if (dx) {
			for (int64_t img = 0; img < s->n; img++)
				input_grad_image(s, i0, i1, dx + img * in_image, dout + img * out_image, w, scratch);
		}
	}
}
