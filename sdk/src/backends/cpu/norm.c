/* LayerNorm (with or without affine) and the fused adaLN pre-norm
 * norm(x) (1 + scale) + shift. Rows are independent; parameter gradients
 * are reduced with threads owning column ranges, rows summed in order, so
 * results do not depend on the thread count. */
#include "config.h"
#include <math.h>
#include <string.h>
#include "cpu.h"

/* Row reductions run on explicit 16-float vectors, two accumulators each,
 * so the partial sums live in registers and the adds do not wait on each
 * other (the compiler keeps an accumulator array on the stack). In the
 * baseline clone the same code is lowered to SSE. */
/* Every use is inlined into one clone, so the vector ABI never matters. */
#pragma GCC diagnostic ignored "-Wpsabi"
typedef float v16 __attribute__((vector_size(64)));

DFI_INLINE v16 load16(const float *p)
{
	v16 v;
	memcpy(&v, p, sizeof v);
	return v;
}

DFI_INLINE float hsum16(v16 v)
{
	typedef float v8 __attribute__((vector_size(32)));
	typedef float v4 __attribute__((vector_size(16)));
	v8 h = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7) +
	       __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
	v4 q = __builtin_shufflevector(h, h, 0, 1, 2, 3) + __builtin_shufflevector(h, h, 4, 5, 6, 7);
	return (q[0] + q[2]) + (q[1] + q[3]);
}

/* Mean and 1/std of row r (two passes over a row that stays in cache),
 * kept in mean[r], rstd[r] when those are given. */
DFI_INLINE void row_stats(const float *restrict x, int64_t d, float eps, float *mean_out, float *rstd_out,
                          float *mean, float *rstd, int64_t r)
{
	v16 s0 = {0}, s1 = {0};
	int64_t i = 0;
	for (; i + 32 <= d; i += 32) {
		s0 += load16(x + i);
		s1 += load16(x + i + 16);
	}
	float tail = 0.0f;
	for (int64_t j = i; j < d; j++)
		tail += x[j];
	float mu = (hsum16(s0 + s1) + tail) / (float)d;
	v16 q0 = {0}, q1 = {0};
	for (i = 0; i + 32 <= d; i += 32) {
		v16 c0 = load16(x + i) - mu, c1 = load16(x + i + 16) - mu;
		q0 += c0 * c0;
		q1 += c1 * c1;
	}
	tail = 0.0f;
	for (int64_t j = i; j < d; j++)
		tail += (x[j] - mu) * (x[j] - mu);
	*mean_out = mu;
	*rstd_out = 1.0f / sqrtf((hsum16(q0 + q1) + tail) / (float)d + eps);
	if (mean) {
		mean[r] = mu;
		rstd[r] = *rstd_out;
	}
}

/* Arguments of the row kernels, split by rows across threads. */
struct norm_rows {
	float *out, *mean, *rstd;
	const float *x, *w, *b, *dout;
	int64_t t, d; /* rows per sample (adaLN), features */
	float eps;
};

DFI_CPU_CLONES static void layernorm_rows(int64_t r0, int64_t r1, void *arg)
{
	const struct norm_rows *a = arg;
	int64_t d = a->d;
	for (int64_t r = r0; r < r1; r++) {
		const float *restrict xr = a->x + r * d;
		float *restrict o = a->out + r * d;
		float mu, rs;
		row_stats(xr, d, a->eps, &mu, &rs, a->mean, a->rstd, r);
		const float *w = a->w, *b = a->b;
		if (w && b) {
#pragma omp simd
			for (int64_t i = 0; i < d; i++)
				o[i] = (xr[i] - mu) * rs * w[i] + b[i];
		} else {
#pragma omp simd
			for (int64_t i = 0; i < d; i++)
				o[i] = (xr[i] - mu) * rs * (w ? w[i] : 1.0f) + (b ? b[i] : 0.0f);
		}
	}
}

static void cpu_layernorm_forward(const df_backend *be, float *out, float *mean, float *rstd, const float *x,
                                  const float *w, const float *b, int64_t rows, int64_t d, float eps)
{
	struct norm_rows a = {.out = out, .mean = mean, .rstd = rstd, .x = x, .w = w, .b = b, .d = d, .eps = eps};
	dfi_cpu_parallel_rows(be, rows, d, layernorm_rows, &a);
}

/* dx += rstd (g - mean(g) - xhat mean(g xhat)) for one row, where g is the
 * gradient of the normalised row. `gain` (per feature) multiplies dout and
 * may be NULL; `plus` is added to it (1 for adaLN's 1 + scale). When dgain
 * and dbias are given, the row's dout xhat and dout are added to them. */
DFI_INLINE void row_backward(float *restrict dx, const float *restrict dout, const float *restrict x,
                                const float *restrict gain, float plus, float mu, float rs, int64_t d,
                                float *restrict dgain, float *restrict dbias)
{
	v16 g0 = {0}, g1 = {0}, gx0 = {0}, gx1 = {0};
	int64_t i = 0;
	for (; i + 32 <= d; i += 32) {
		v16 w0 = gain ? load16(gain + i) + plus : (v16){0} + plus;
		v16 w1 = gain ? load16(gain + i + 16) + plus : (v16){0} + plus;
		v16 a0 = load16(dout + i) * w0, a1 = load16(dout + i + 16) * w1;
		g0 += a0;
		g1 += a1;
		gx0 += a0 * ((load16(x + i) - mu) * rs);
		gx1 += a1 * ((load16(x + i + 16) - mu) * rs);
	}
	float tg = 0.0f, tgx = 0.0f;
	for (int64_t j = i; j < d; j++) {
		float gi = dout[j] * ((gain ? gain[j] : 0.0f) + plus);
		tg += gi;
		tgx += gi * (x[j] - mu) * rs;
	}
	float mean_g = (hsum16(g0 + g1) + tg) / (float)d, mean_gx = (hsum16(gx0 + gx1) + tgx) / (float)d;
	if (dgain) {
#pragma omp simd
		for (i = 0; i < d; i++) {
			float gi = dout[i] * ((gain ? gain[i] : 0.0f) + plus);
			float xhat = (x[i] - mu) * rs;
			dx[i] += rs * (gi - mean_g - xhat * mean_gx);
			dgain[i] += dout[i] * xhat;
			dbias[i] += dout[i];
		}
		return;
	}
#pragma omp simd
	for (i = 0; i < d; i++) {
		float gi = dout[i] * ((gain ? gain[i] : 0.0f) + plus);
		float xhat = (x[i] - mu) * rs;
		dx[i] += rs * (gi - mean_g - xhat * mean_gx);
	}
}

/* dgain[c] += sum_r dout[r, c] xhat[r, c] and dbias[c] += sum_r dout[r, c]
 * over rows r of `groups` groups of `rows` rows each (group k writes
 * dgain + k d): layernorm has one group, adaLN one per sample. */
static void column_sums(const df_backend *be, float *dgain, float *dbias, const float *dout, const float *x,
                        const float *mean, const float *rstd, int64_t groups, int64_t rows, int64_t d)
{
	enum { BLOCK = 64 };
	int64_t blocks = (d + BLOCK - 1) / BLOCK;
#pragma omp parallel for collapse(2) num_threads(be->threads) if (groups * rows * d > DFI_CPU_PARALLEL_MIN)
	for (int64_t gidx = 0; gidx < groups; gidx++) {
		for (int64_t blk = 0; blk < blocks; blk++) {
			int64_t i0 = blk * BLOCK, i1 = i0 + BLOCK < d ? i0 + BLOCK : d;
			float acc_g[BLOCK] = {0}, acc_b[BLOCK] = {0};
			for (int64_t r = gidx * rows; r < (gidx + 1) * rows; r++) {
				const float *gr = dout + r * d, *xr = x + r * d;
				float mu = mean[r], rs = rstd[r];
#pragma omp simd
				for (int64_t i = i0; i < i1; i++) {
					acc_g[i - i0] += gr[i] * (xr[i] - mu) * rs;
					acc_b[i - i0] += gr[i];
				}
			}
			for (int64_t i = i0; i < i1; i++) {
				if (dgain)
					dgain[gidx * d + i] += acc_g[i - i0];
				if (dbias)
					dbias[gidx * d + i] += acc_b[i - i0];
			}
		}
	}
}

/* dx for rows [r0, r1): gain is w (layernorm, NULL without affine) or the
 * per-sample scale (adaLN, t rows per sample). */
DFI_CPU_CLONES static void norm_backward_rows(int64_t r0, int64_t r1, void *arg)
{
	const struct norm_rows *a = arg;
	int64_t d = a->d;
	for (int64_t r = r0; r < r1; r++) {
		const float *gain = a->t ? a->w + (r / a->t) * d : a->w;
		float plus = a->t || !a->w ? 1.0f : 0.0f;
		row_backward(a->out + r * d, a->dout + r * d, a->x + r * d, gain, plus, a->mean[r], a->rstd[r], d, NULL,
		             NULL);
	}
}

static void cpu_layernorm_backward(const df_backend *be, float *dx, float *dw, float *db, const float *dout,
                                   const float *x, const float *w, const float *mean, const float *rstd,
                                   int64_t rows, int64_t d)
{
	if (dx) {
		struct norm_rows a = {.out = dx, .mean = (float *)mean, .rstd = (float *)rstd, .x = x, .w = w,
		                      .dout = dout, .d = d};
		dfi_cpu_parallel_rows(be, rows, d, norm_backward_rows, &a);
	}
	if (dw || db)
		column_sums(be, dw, db, dout, x, mean, rstd, 1, rows, d);
}

/* adaLN: w is the per-sample shift and b the per-sample scale here. */
DFI_CPU_CLONES static void layernorm_modulate_rows(int64_t r0, int64_t r1, void *arg)
{
	const struct norm_rows *a = arg;
	int64_t d = a->d;
	for (int64_t r = r0; r < r1; r++) {
		const float *restrict xr = a->x + r * d, *restrict sh = a->w + (r / a->t) * d;
		const float *restrict sc = a->b + (r / a->t) * d;
		float *restrict o = a->out + r * d;
		float mu, rs;
		row_stats(xr, d, a->eps, &mu, &rs, a->mean, a->rstd, r);
#pragma omp simd
		for (int64_t i = 0; i < d; i++)
			o[i] = (xr[i] - mu) * rs * (1.0f + sc[i]) + sh[i];
	}
}

static void cpu_layernorm_modulate_forward(const df_backend *be, float *out, float *mean, float *rstd,
                                           const float *x, const float *shift, const float *scale, int64_t n,
                                           int64_t t, int64_t d, float eps)
{
	struct norm_rows a = {.out = out, .mean = mean, .rstd = rstd, .x = x, .w = shift, .b = scale, .t = t, .d = d,
	                      .eps = eps};
	dfi_cpu_parallel_rows(be, n * t, d, layernorm_modulate_rows, &a);
}

/* adaLN backward by whole samples: a thread owns the rows of its samples
 * and their (d) rows of dshift and dscale, so dx and both per-sample
 * gradients come from one pass, summed over tokens in order. */
struct adaln_backward {
	float *dx, *dshift, *dscale;
	const float *dout, *x, *scale, *mean, *rstd;
	int64_t t, d;
};

DFI_CPU_CLONES static void adaln_backward_samples(int64_t s0, int64_t s1, void *arg)
{
	const struct adaln_backward *a = arg;
	int64_t t = a->t, d = a->d;
	for (int64_t smp = s0; smp < s1; smp++) {
		const float *sc = a->scale + smp * d;
		for (int64_t r = smp * t; r < (smp + 1) * t; r++)
			row_backward(a->dx + r * d, a->dout + r * d, a->x + r * d, sc, 1.0f, a->mean[r], a->rstd[r], d,
			             a->dscale + smp * d, a->dshift + smp * d);
	}
}

/* Samples rather than rows are split across threads, so spans of one. */
static void parallel_samples(const df_backend *be, int64_t n, int64_t work, dfi_span_fn fn, void *arg)
{
#pragma omp parallel for schedule(static, 1) num_threads(be->threads) if (work > DFI_CPU_PARALLEL_MIN && n > 1)
	for (int64_t smp = 0; smp < n; smp++)
		fn(smp, smp + 1, arg);
}

static void cpu_layernorm_modulate_backward(const df_backend *be, float *dx, float *dshift, float *dscale,
                                            const float *dout, const float *x, const float *scale,
                                            const float *mean, const float *rstd, int64_t n, int64_t t, int64_t d)
{
	if (dx && dshift && dscale) {
		struct adaln_backward a = {dx, dshift, dscale, dout, x, scale, mean, rstd, t, d};
		parallel_samples(be, n, n * t * d, adaln_backward_samples, &a);
		return;
	}
	if (dx) {
		struct norm_rows a = {.out = dx, .mean = (float *)mean, .rstd = (float *)rstd, .x = x, .w = scale,
		                      .dout = dout, .t = t, .d = d};
		dfi_cpu_parallel_rows(be, n * t, d, norm_backward_rows, &a);
	}
	if (dshift || dscale)
		column_sums(be, dscale, dshift, dout, x, mean, rstd, n, t, d);
}

void dfi_cpu_install_norm(df_backend *be)
{
	be->layernorm_forward = cpu_layernorm_forward;
	be->layernorm_backward = cpu_layernorm_backward;
	be->layernorm_modulate_forward = cpu_layernorm_modulate_forward;
	be->layernorm_modulate_backward = cpu_layernorm_modulate_backward;
}
