/* Elementwise ops with broadcasting, scale/shift, adaLN modulate and the
 * gated residual. */
#include "config.h"
#include <omp.h>
#include "cpu.h"

static inline float binary_apply(int op, float a, float b)
{
	switch (op) {
	case DF_BINARY_ADD: return a + b;
	case DF_BINARY_SUB: return a - b;
	default: return a * b;
	}
}

/* Offset of the first element of row `row` (all dims but the last) for an
 * operand read at `stride`. */
static int64_t row_offset(const struct df_bcast *bc, const int64_t *stride, int64_t row)
{
	int64_t off = 0;
	for (int d = bc->ndim - 2; d >= 0; d--) {
		off += (row % bc->shape[d]) * stride[d];
		row /= bc->shape[d];
	}
	return off;
}

static void cpu_binary_forward(const df_backend *be, int op, float *out, const float *a, const float *b,
                               const struct df_bcast *bc)
{
	if (bc->same_shape) {
		int64_t n = bc->numel;
#pragma omp parallel for num_threads(be->threads) if (n > DFI_CPU_PARALLEL_MIN)
		for (int64_t i = 0; i < n; i++)
			out[i] = binary_apply(op, a[i], b[i]);
		return;
	}
	int64_t inner = bc->shape[bc->ndim - 1], rows = bc->numel / inner;
	int64_t as = bc->a_stride[bc->ndim - 1], bs = bc->b_stride[bc->ndim - 1];
#pragma omp parallel for num_threads(be->threads) if (bc->numel > DFI_CPU_PARALLEL_MIN)
	for (int64_t r = 0; r < rows; r++) {
		const float *ar = a + row_offset(bc, bc->a_stride, r);
		const float *br = b + row_offset(bc, bc->b_stride, r);
		float *o = out + r * inner;
		if (op == DF_BINARY_ADD)
#pragma omp simd
			for (int64_t i = 0; i < inner; i++)
				o[i] = ar[i * as] + br[i * bs];
		else if (op == DF_BINARY_SUB)
#pragma omp simd
			for (int64_t i = 0; i < inner; i++)
				o[i] = ar[i * as] - br[i * bs];
		else
#pragma omp simd
			for (int64_t i = 0; i < inner; i++)
				o[i] = ar[i * as] * br[i * bs];
	}
}

/* dst[j] += sign * sum over the output elements that read dst[j] of
 * dout * other (other NULL: 1). dst is read at dst_stride (0 along its
 * broadcast dims); each thread owns whole elements of dst, and sums in a
 * fixed order, so the result does not depend on the thread count. */
static void reduce_into(const df_backend *be, float *dst, const int64_t *dst_stride, const float *dout,
                        const float *other, const int64_t *other_stride, float sign, const struct df_bcast *bc)
{
	int nd = bc->ndim;
	int64_t out_stride[DF_MAX_DIMS], kept_shape[DF_MAX_DIMS], red_shape[DF_MAX_DIMS];
	int64_t kept = 1, reduced = 1;
	int64_t step = 1;
	for (int d = nd - 1; d >= 0; d--) {
		out_stride[d] = step;
		step *= bc->shape[d];
		int is_reduced = dst_stride[d] == 0 && bc->shape[d] > 1;
		kept_shape[d] = is_reduced ? 1 : bc->shape[d];
		red_shape[d] = is_reduced ? bc->shape[d] : 1;
		kept *= kept_shape[d];
		reduced *= red_shape[d];
	}
#pragma omp parallel for num_threads(be->threads) if (bc->numel > DFI_CPU_PARALLEL_MIN)
	for (int64_t j = 0; j < kept; j++) {
		int64_t out_base = 0, dst_off = 0, other_base = 0;
		int64_t rest = j;
		for (int d = nd - 1; d >= 0; d--) {
			int64_t idx = rest % kept_shape[d];
			rest /= kept_shape[d];
			out_base += idx * out_stride[d];
			dst_off += idx * dst_stride[d];
			if (other)
				other_base += idx * other_stride[d];
		}
		double acc = 0.0;
		for (int64_t r = 0; r < reduced; r++) {
			int64_t o = out_base, ob = other_base, rr = r;
			for (int d = nd - 1; d >= 0; d--) {
				int64_t idx = rr % red_shape[d];
				rr /= red_shape[d];
				o += idx * out_stride[d];
				if (other)
					ob += idx * other_stride[d];
			}
			acc += other ? (double)dout[o] * other[ob] : dout[o];
		}
		dst[dst_off] += sign * (float)acc;
	}
}

/* Whether an operand read at `stride` covers the output one to one. */
static int full_size(const struct df_bcast *bc, const int64_t *stride)
{
	int64_t step = 1;
	for (int d = bc->ndim - 1; d >= 0; d--) {
		if (bc->shape[d] > 1 && stride[d] != step)
			return 0;
		step *= bc->shape[d];
	}
	return 1;
}

/* dst (the output's shape) += sign * dout * other (other NULL: 1), other
 * broadcast at other_stride: row by row, no reduction needed. */
static void accumulate_full(const df_backend *be, float *dst, const float *dout, const float *other,
                            const int64_t *other_stride, float sign, const struct df_bcast *bc)
{
	int64_t inner = bc->shape[bc->ndim - 1], rows = bc->numel / inner, os = other_stride[bc->ndim - 1];
#pragma omp parallel for num_threads(be->threads) if (bc->numel > DFI_CPU_PARALLEL_MIN)
	for (int64_t r = 0; r < rows; r++) {
		float *o = dst + r * inner;
		const float *g = dout + r * inner;
		if (!other) {
#pragma omp simd
			for (int64_t i = 0; i < inner; i++)
				o[i] += sign * g[i];
			continue;
		}
		const float *v = other + row_offset(bc, other_stride, r);
		for (int64_t i = 0; i < inner; i++)
			o[i] += sign * g[i] * v[i * os];
	}
}

/* When dst is broadcast only along leading dims (a bias over rows), the
 * reduction is column sums of dout viewed as (rows, cols); returns cols,
 * or 0 when dst has another layout. */
static int64_t trailing_columns(const struct df_bcast *bc, const int64_t *stride)
{
	int64_t cols = 1;
	int d = bc->ndim - 1;
	for (; d >= 0 && (bc->shape[d] == 1 || stride[d] == cols); d--)
		cols *= bc->shape[d];
	for (; d >= 0; d--)
		if (stride[d] != 0 && bc->shape[d] > 1)
			return 0;
	return cols;
}

/* dst[c] += sign * sum_r dout[r, c] other[r, c] (other full-size or NULL);
 * threads own column ranges and add rows in order (deterministic). */
static void column_sums(const df_backend *be, float *dst, const float *dout, const float *other, float sign,
                        int64_t rows, int64_t cols)
{
#pragma omp parallel num_threads(be->threads) if (rows * cols > DFI_CPU_PARALLEL_MIN)
	{
		int nt = omp_get_num_threads(), id = omp_get_thread_num();
		int64_t c0 = cols * id / nt, c1 = cols * (id + 1) / nt;
		for (int64_t r = 0; r < rows; r++) {
			const float *g = dout + r * cols, *v = other ? other + r * cols : NULL;
			if (v) {
#pragma omp simd
				for (int64_t c = c0; c < c1; c++)
					dst[c] += sign * g[c] * v[c];
			} else {
#pragma omp simd
				for (int64_t c = c0; c < c1; c++)
					dst[c] += sign * g[c];
			}
		}
	}
}

/* Gradient of one operand: straight accumulation, column sums, or the
 * general reduction, whichever its broadcast allows. */
static void operand_gradient(const df_backend *be, float *dst, const int64_t *dst_stride, const float *dout,
                             const float *other, const int64_t *other_stride, float sign, const struct df_bcast *bc)
{
	if (full_size(bc, dst_stride)) {
		accumulate_full(be, dst, dout, other, other_stride, sign, bc);
		return;
	}
	int64_t cols = trailing_columns(bc, dst_stride);
	if (cols && (!other || full_size(bc, other_stride))) {
		column_sums(be, dst, dout, other, sign, bc->numel / cols, cols);
		return;
	}
	reduce_into(be, dst, dst_stride, dout, other, other_stride, sign, bc);
}

static void cpu_binary_backward(const df_backend *be, int op, float *da, float *db, const float *dout,
                                const float *a, const float *b, const struct df_bcast *bc)
{
	if (bc->same_shape) {
		int64_t n = bc->numel;
#pragma omp parallel for num_threads(be->threads) if (n > DFI_CPU_PARALLEL_MIN)
		for (int64_t i = 0; i < n; i++) {
			float g = dout[i];
			if (op == DF_BINARY_MUL) {
				if (da)
					da[i] += g * b[i];
				if (db)
					db[i] += g * a[i];
			} else {
				if (da)
					da[i] += g;
				if (db)
					db[i] += op == DF_BINARY_SUB ? -g : g;
			}
		}
		return;
	}
	int mul = op == DF_BINARY_MUL;
	float sign_b = op == DF_BINARY_SUB ? -1.0f : 1.0f;
	if (da)
		operand_gradient(be, da, bc->a_stride, dout, mul ? b : NULL, bc->b_stride, 1.0f, bc);
	if (db)
		operand_gradient(be, db, bc->b_stride, dout, mul ? a : NULL, bc->a_stride, sign_b, bc);
}

static void cpu_affine_forward(const df_backend *be, float *out, const float *x, float mul, float add, int64_t n)
{
#pragma omp parallel for num_threads(be->threads) if (n > DFI_CPU_PARALLEL_MIN)
	for (int64_t i = 0; i < n; i++)
		out[i] = mul * x[i] + add;
}

static void cpu_affine_backward(const df_backend *be, float *dx, const float *dout, float mul, int64_t n)
{
#pragma omp parallel for num_threads(be->threads) if (n > DFI_CPU_PARALLEL_MIN)
	for (int64_t i = 0; i < n; i++)
		dx[i] += mul * dout[i];
}

static void cpu_modulate_forward(const df_backend *be, float *out, const float *x, const float *shift,
                                 const float *scale, int64_t n, int64_t t, int64_t d)
{
#pragma omp parallel for num_threads(be->threads) if (n * t * d > DFI_CPU_PARALLEL_MIN)
	for (int64_t row = 0; row < n * t; row++) {
		const float *sh = shift + (row / t) * d, *sc = scale + (row / t) * d;
		const float *xr = x + row * d;
		float *o = out + row * d;
#pragma omp simd
		for (int64_t i = 0; i < d; i++)
			o[i] = xr[i] * (1.0f + sc[i]) + sh[i];
	}
}

/* Per-sample (n, d) gradients summed over t: threads split the feature
 * range, so every sum runs over t in order (deterministic). `x` NULL sums
 * dout alone. */
static void sum_over_tokens(const df_backend *be, float *dst, const float *dout, const float *x, int64_t n,
                            int64_t t, int64_t d)
{
#pragma omp parallel for collapse(2) num_threads(be->threads) if (n * t * d > DFI_CPU_PARALLEL_MIN)
	for (int64_t s = 0; s < n; s++) {
		for (int64_t blk = 0; blk < (d + 63) / 64; blk++) {
			int64_t i0 = blk * 64, i1 = i0 + 64 < d ? i0 + 64 : d;
			float acc[64] = {0};
			for (int64_t tok = 0; tok < t; tok++) {
				const float *g = dout + (s * t + tok) * d;
				if (x) {
					const float *xr = x + (s * t + tok) * d;
					for (int64_t i = i0; i < i1; i++)
						acc[i - i0] += g[i] * xr[i];
				} else {
					for (int64_t i = i0; i < i1; i++)
						acc[i - i0] += g[i];
				}
			}
			for (int64_t i = i0; i < i1; i++)
				dst[s * d + i] += acc[i - i0];
		}
	}
}

/* dx += dout * (1 + v) or dout * v, v per sample (n, d). */
static void scale_per_sample(const df_backend *be, float *dx, const float *dout, const float *v, float plus,
                             int64_t n, int64_t t, int64_t d)
{
#pragma omp parallel for num_threads(be->threads) if (n * t * d > DFI_CPU_PARALLEL_MIN)
	for (int64_t row = 0; row < n * t; row++) {
		const float *vr = v + (row / t) * d;
		const float *g = dout + row * d;
		float *o = dx + row * d;
#pragma omp simd
		for (int64_t i = 0; i < d; i++)
			o[i] += g[i] * (plus + vr[i]);
	}
}

static void cpu_modulate_backward(const df_backend *be, float *dx, float *dshift, float *dscale, const float *dout,
                                  const float *x, const float *scale, int64_t n, int64_t t, int64_t d)
{
	if (dx)
		scale_per_sample(be, dx, dout, scale, 1.0f, n, t, d);
	if (dshift)
		sum_over_tokens(be, dshift, dout, NULL, n, t, d);
	if (dscale)
		sum_over_tokens(be, dscale, dout, x, n, t, d);
}

static void cpu_gated_residual_forward(const df_backend *be, float *out, const float *r, const float *gate,
                                       const float *x, int64_t n, int64_t t, int64_t d)
{
#pragma omp parallel for num_threads(be->threads) if (n * t * d > DFI_CPU_PARALLEL_MIN)
	for (int64_t row = 0; row < n * t; row++) {
		const float *gr = gate + (row / t) * d;
		const float *xr = x + row * d, *rr = r + row * d;
		float *o = out + row * d;
#pragma omp simd
		for (int64_t i = 0; i < d; i++)
			o[i] = rr[i] + gr[i] * xr[i];
	}
}

static void cpu_gated_residual_backward(const df_backend *be, float *dr, float *dgate, float *dx,
                                        const float *dout, const float *gate, const float *x, int64_t n, int64_t t,
                                        int64_t d)
{
	if (dr)
		cpu_affine_backward(be, dr, dout, 1.0f, n * t * d);
	if (dx)
		scale_per_sample(be, dx, dout, gate, 0.0f, n, t, d);
	if (dgate)
		sum_over_tokens(be, dgate, dout, x, n, t, d);
}

void dfi_cpu_install_elementwise(df_backend *be)
{
	be->binary_forward = cpu_binary_forward;
	be->binary_backward = cpu_binary_backward;
	be->affine_forward = cpu_affine_forward;
	be->affine_backward = cpu_affine_backward;
	be->modulate_forward = cpu_modulate_forward;
	be->modulate_backward = cpu_modulate_backward;
	be->gated_residual_forward = cpu_gated_residual_forward;
	be->gated_residual_backward = cpu_gated_residual_backward;
}
