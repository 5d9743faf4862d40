/* CUDA kernels for the pointwise, broadcast, normalisation, reduction,
 * loss, random and optimiser slots. Every reduction sums in a fixed order
 * (per-thread strides, then a fixed tree in shared memory): results do not
 * depend on scheduling, and no atomics are used. Formulas follow the CPU
 * backend's so both agree to float rounding. */
#include "config.h"

#include <stdlib.h>
#include <string.h>
#include <cuda_runtime.h>

#include "cuda_private.h"
#include "philox.h"

#define THREADS 256
#define ROW_THREADS 256

/* ---- launching ------------------------------------------------------ */

template <class F> __global__ void map_kernel(int64_t n, F f)
{
	for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
		f(i);
}

/* f(i) for i < n on the backend's stream. */
template <class F> static void for_each(int64_t n, F f)
{
	if (n > 0)
		map_kernel<<<dfi_cuda_blocks(n, THREADS), THREADS, 0, dfi_cuda.stream>>>(n, f);
}

/* Sum of v over the block, in a fixed order; every thread gets it. */
__device__ float block_sum(float v)
{
	__shared__ float part[32];
	__shared__ float total;
	for (int o = 16; o > 0; o >>= 1)
		v += __shfl_xor_sync(0xffffffffu, v, o);
	const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
	__syncthreads(); /* part and total may still be read by a previous call */
	if (lane == 0)
		part[warp] = v;
	__syncthreads();
	if (warp == 0) {
		float w = lane < warps ? part[lane] : 0.0f;
		for (int o = 16; o > 0; o >>= 1)
			w += __shfl_xor_sync(0xffffffffu, w, o);
		if (lane == 0)
			total = w;
	}
	__syncthreads();
	return total;
}

__device__ float block_max(float v)
{
	__shared__ float part[32];
	__shared__ float total;
	for (int o = 16; o > 0; o >>= 1)
		v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
	const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
	__syncthreads();
	if (lane == 0)
		part[warp] = v;
	__syncthreads();
	if (warp == 0) {
		float w = lane < warps ? part[lane] : -INFINITY;
		for (int o = 16; o > 0; o >>= 1)
			w = fmaxf(w, __shfl_xor_sync(0xffffffffu, w, o));
		if (lane == 0)
			total = w;
	}
	__syncthreads();
	return total;
}

/* One block per row: f(row) in a block of ROW_THREADS threads. */
template <class F> __global__ void row_kernel(int64_t rows, F f)
{
	for (int64_t r = blockIdx.x; r < rows; r += gridDim.x)
		f(r);
}

template <class F> static void for_each_row(int64_t rows, F f)
{
	if (rows > 0)
		row_kernel<<<(unsigned)(rows < 65535 * 8 ? rows : 65535 * 8), ROW_THREADS, 0, dfi_cuda.stream>>>(rows,
		                                                                                                  f);
}

/* ---- fixed-order sums ------------------------------------------------ */

/* Partial column sums: block (x: 32 columns, y: a chunk of rows, z: batch)
 * of 32 x 8 threads; partial[(b chunks + chunk) cols + col]. */
__global__ void column_partials(float *partial, const float *x, int64_t rows, int64_t cols, int64_t chunk_rows)
{
	__shared__ float acc[8][33];
	const int64_t col = blockIdx.x * 32 + threadIdx.x, b = blockIdx.z, chunk = blockIdx.y;
	const int64_t r0 = chunk * chunk_rows, r1 = r0 + chunk_rows < rows ? r0 + chunk_rows : rows;
	float s = 0.0f;
	if (col < cols)
		for (int64_t r = r0 + threadIdx.y; r < r1; r += 8)
			s += x[(b * rows + r) * cols + col];
	acc[threadIdx.y][threadIdx.x] = s;
	__syncthreads();
	if (threadIdx.y == 0 && col < cols) {
		float t = 0.0f;
		for (int k = 0; k < 8; k++)
			t += acc[k][threadIdx.x];
		partial[(b * gridDim.y + chunk) * cols + col] = t;
	}
}

void dfi_cuda_column_sums(float *out, const float *x, int64_t batch, int64_t rows, int64_t cols)
{
	if (batch == 0 || cols == 0)
		return;
	/* Chunks of at least 256 rows, at most 4096 chunks (grid limits). */
	int64_t chunk_rows = rows < 256 ? (rows > 0 ? rows : 1) : 256;
	if ((rows + chunk_rows - 1) / chunk_rows > 4096)
		chunk_rows = (rows + 4095) / 4096;
	const int64_t chunks = (rows + chunk_rows - 1) / chunk_rows;
	if (chunks == 0)
		return;
	float *partial = (float *)dfi_cuda_scratch((size_t)(batch * chunks * cols) * sizeof(float));
	if (!partial)
		return;
	dim3 grid((unsigned)((cols + 31) / 32), (unsigned)chunks, (unsigned)batch), block(32, 8);
	column_partials<<<grid, block, 0, dfi_cuda.stream>>>(partial, x, rows, cols, chunk_rows);
	for_each(batch * cols, [=] __device__(int64_t i) {
		const int64_t b = i / cols, c = i % cols;
		float t = 0.0f;
		for (int64_t k = 0; k < chunks; k++)
			t += partial[(b * chunks + k) * cols + c];
		out[i] += t;
	});
}

void dfi_cuda_channel_sums(float *out, const float *x, int64_t n, int64_t c, int64_t s)
{
	for_each_row(c, [=] __device__(int64_t ch) {
		float t = 0.0f;
		for (int64_t i = 0; i < n; i++)
			for (int64_t j = threadIdx.x; j < s; j += blockDim.x)
				t += x[(i * c + ch) * s + j];
		t = block_sum(t);
		if (threadIdx.x == 0)
			out[ch] += t;
	});
}

/* ---- elementwise and broadcast --------------------------------------- */

/* Offsets of out element i in a and b. */
__device__ __forceinline__ void bcast_offsets(const struct df_bcast &bc, int64_t i, int64_t *ao, int64_t *bo)
{
	int64_t a = 0, b = 0;
	for (int d = bc.ndim - 1; d >= 0; d--) {
		const int64_t idx = i % bc.shape[d];
		i /= bc.shape[d];
		a += idx * bc.a_stride[d];
		b += idx * bc.b_stride[d];
	}
	*ao = a;
	*bo = b;
}

__device__ __forceinline__ float binary_apply(int op, float a, float b)
{
	return op == DF_BINARY_ADD ? a + b : op == DF_BINARY_SUB ? a - b : a * b;
}

static void cuda_binary_forward(const df_backend *be, int op, float *out, const float *a, const float *b,
                                const struct df_bcast *bcp)
{
	const struct df_bcast bc = *bcp;
	if (bc.same_shape) {
		for_each(bc.numel, [=] __device__(int64_t i) { out[i] = binary_apply(op, a[i], b[i]); });
		return;
	}
	for_each(bc.numel, [=] __device__(int64_t i) {
		int64_t ao, bo;
		bcast_offsets(bc, i, &ao, &bo);
		out[i] = binary_apply(op, a[ao], b[bo]);
	});
}

/* The dims an operand keeps and the dims it is broadcast along. */
struct bcast_dims {
	int nk, nr, kept[DF_MAX_DIMS], red[DF_MAX_DIMS];
};

/* The gradient of one operand (which = 0: a, 1: b): each thread owns one
 * element of that operand and sums over the dims it is broadcast along, in
 * index order. */
static void binary_grad(int op, int which, float *g, const float *dout, const float *a, const float *b,
                        const struct df_bcast &bc)
{
	int kept[DF_MAX_DIMS], red[DF_MAX_DIMS], nk = 0, nr = 0;
	int64_t own = 1, reduced = 1;
	for (int d = 0; d < bc.ndim; d++) {
		const int64_t st = which ? bc.b_stride[d] : bc.a_stride[d];
		if (st == 0 && bc.shape[d] > 1) {
			red[nr++] = d;
			reduced *= bc.shape[d];
		} else {
			kept[nk++] = d;
			own *= bc.shape[d];
		}
	}
	struct bcast_dims dm;
	dm.nk = nk;
	dm.nr = nr;
	memcpy(dm.kept, kept, sizeof kept);
	memcpy(dm.red, red, sizeof red);
	for_each(own, [=] __device__(int64_t i) {
		int64_t idx[DF_MAX_DIMS] = { 0 };
		int64_t rest = i;
		for (int q = dm.nk - 1; q >= 0; q--) {
			idx[dm.kept[q]] = rest % bc.shape[dm.kept[q]];
			rest /= bc.shape[dm.kept[q]];
		}
		float acc = 0.0f;
		int64_t self = 0;
		for (int64_t j = 0; j < reduced; j++) {
			int64_t r = j;
			for (int q = dm.nr - 1; q >= 0; q--) {
				idx[dm.red[q]] = r % bc.shape[dm.red[q]];
				r /= bc.shape[dm.red[q]];
			}
			int64_t o = 0, ao = 0, bo = 0;
			for (int d = 0; d < bc.ndim; d++) {
				o = o * bc.shape[d] + idx[d];
				ao += idx[d] * bc.a_stride[d];
				bo += idx[d] * bc.b_stride[d];
			}
			self = which ? bo : ao;
			const float go = dout[o];
			if (op == DF_BINARY_ADD)
				acc += go;
			else if (op == DF_BINARY_SUB)
				acc += which ? -go : go;
			else
				acc += go * (which ? a[ao] : b[bo]);
		}
		g[self] += acc;
	});
}

static void cuda_binary_backward(const df_backend *be, int op, float *da, float *db, const float *dout,
                                 const float *a, const float *b, const struct df_bcast *bcp)
{
	const struct df_bcast bc = *bcp;
	if (bc.same_shape) {
		for_each(bc.numel, [=] __device__(int64_t i) {
			const float g = dout[i];
			if (da)
				da[i] += op == DF_BINARY_MUL ? g * b[i] : g;
			if (db)
				db[i] += op == DF_BINARY_MUL ? g * a[i] : op == DF_BINARY_SUB ? -g : g;
		});
		return;
	}
	if (da)
		binary_grad(op, 0, da, dout, a, b, bc);
	if (db)
		binary_grad(op, 1, db, dout, a, b, bc);
}

static void cuda_affine_forward(const df_backend *be, float *out, const float *x, float mul, float add, int64_t n)
{
	for_each(n, [=] __device__(int64_t i) { out[i] = mul * x[i] + add; });
}

static void cuda_affine_backward(const df_backend *be, float *dx, const float *dout, float mul, int64_t n)
{
	for_each(n, [=] __device__(int64_t i) { dx[i] += mul * dout[i]; });
}

static void cuda_modulate_forward(const df_backend *be, float *out, const float *x, const float *shift,
                                  const float *scale, int64_t n, int64_t t, int64_t d)
{
	for_each(n * t * d, [=] __device__(int64_t i) {
		const int64_t nd = (i / (t * d)) * d + i % d;
		out[i] = x[i] * (1.0f + scale[nd]) + shift[nd];
	});
}

/* tmp (n, t, d) = dout x, then its sums over t: dscale. */
static void cuda_modulate_backward(const df_backend *be, float *dx, float *dshift, float *dscale, const float *dout,
                                   const float *x, const float *scale, int64_t n, int64_t t, int64_t d)
{
	if (dx)
		for_each(n * t * d, [=] __device__(int64_t i) {
			dx[i] += dout[i] * (1.0f + scale[(i / (t * d)) * d + i % d]);
		});
	if (dshift)
		dfi_cuda_column_sums(dshift, dout, n, t, d);
	if (dscale) {
		float *prod;
		if (cudaMallocAsync((void **)&prod, (size_t)(n * t * d) * sizeof(float), dfi_cuda.stream) != cudaSuccess)
			return;
		for_each(n * t * d, [=] __device__(int64_t i) { prod[i] = dout[i] * x[i]; });
		dfi_cuda_column_sums(dscale, prod, n, t, d);
		cudaFreeAsync(prod, dfi_cuda.stream);
	}
}

static void cuda_gated_residual_forward(const df_backend *be, float *out, const float *r, const float *gate,
                                        const float *x, int64_t n, int64_t t, int64_t d)
{
	for_each(n * t * d, [=] __device__(int64_t i) { out[i] = r[i] + gate[(i / (t * d)) * d + i % d] * x[i]; });
}

static void cuda_gated_residual_backward(const df_backend *be, float *dr, float *dgate, float *dx,
                                         const float *dout, const float *gate, const float *x, int64_t n, int64_t t,
                                         int64_t d)
{
	for_each(n * t * d, [=] __device__(int64_t i) {
		if (dr)
			dr[i] += dout[i];
		if (dx)
			dx[i] += dout[i] * gate[(i / (t * d)) * d + i % d];
	});
	if (dgate) {
		float *prod;
		if (cudaMallocAsync((void **)&prod, (size_t)(n * t * d) * sizeof(float), dfi_cuda.stream) != cudaSuccess)
			return;
		for_each(n * t * d, [=] __device__(int64_t i) { prod[i] = dout[i] * x[i]; });
		dfi_cuda_column_sums(dgate, prod, n, t, d);
		cudaFreeAsync(prod, dfi_cuda.stream);
	}
}

/* ---- normalisation --------------------------------------------------- */

/* Mean and rstd of v[0..d) by the block (two passes over the row). */
__device__ void row_stats(const float *v, int64_t d, float eps, float *mean, float *rstd)
{
	float s = 0.0f;
	for (int64_t j = threadIdx.x; j < d; j += blockDim.x)
		s += v[j];
	const float mu = block_sum(s) / (float)d;
	float q = 0.0f;
	for (int64_t j = threadIdx.x; j < d; j += blockDim.x) {
		const float c = v[j] - mu;
		q += c * c;
	}
	const float var = block_sum(q) / (float)d;
	*mean = mu;
	*rstd = rsqrtf(var + eps);
}

static void cuda_layernorm_forward(const df_backend *be, float *out, float *mean, float *rstd, const float *x,
                                   const float *w, const float *b, int64_t rows, int64_t d, float eps)
{
	for_each_row(rows, [=] __device__(int64_t r) {
		float mu, rs;
		row_stats(x + r * d, d, eps, &mu, &rs);
		for (int64_t j = threadIdx.x; j < d; j += blockDim.x) {
			const float h = (x[r * d + j] - mu) * rs;
			out[r * d + j] = h * (w ? w[j] : 1.0f) + (b ? b[j] : 0.0f);
		}
		if (threadIdx.x == 0 && mean)
			mean[r] = mu;
		if (threadIdx.x == 0 && rstd)
			rstd[r] = rs;
	});
}

/* dx of a normalised row given g = dout times the per-element gain:
 * rstd (g - mean(g) - xhat mean(g xhat)). */
template <class G>
__device__ void norm_row_backward(float *dx, const float *x, int64_t d, int64_t stride, float mu, float rs, G gain)
{
	float sg = 0.0f, sgx = 0.0f;
	for (int64_t j = threadIdx.x; j < d; j += blockDim.x) {
		const float g = gain(j), h = (x[j * stride] - mu) * rs;
		sg += g;
		sgx += g * h;
	}
	sg = block_sum(sg) / (float)d;
	sgx = block_sum(sgx) / (float)d;
	for (int64_t j = threadIdx.x; j < d; j += blockDim.x) {
		const float h = (x[j * stride] - mu) * rs;
		dx[j * stride] += rs * (gain(j) - sg - h * sgx);
	}
}

/* prod (rows, d) = dout xhat, for the gain gradients. */
static float *normalised_products(const float *dout, const float *x, const float *mean, const float *rstd,
                                  int64_t rows, int64_t d)
{
	float *prod;
	if (cudaMallocAsync((void **)&prod, (size_t)(rows * d) * sizeof(float), dfi_cuda.stream) != cudaSuccess)
		return NULL;
	for_each(rows * d, [=] __device__(int64_t i) {
		const int64_t r = i / d;
		prod[i] = dout[i] * (x[i] - mean[r]) * rstd[r];
	});
	return prod;
}

static void cuda_layernorm_backward(const df_backend *be, float *dx, float *dw, float *db, const float *dout,
                                    const float *x, const float *w, const float *mean, const float *rstd,
                                    int64_t rows, int64_t d)
{
	if (dx)
		for_each_row(rows, [=] __device__(int64_t r) {
			const float *go = dout + r * d;
			norm_row_backward(dx + r * d, x + r * d, d, 1, mean[r], rstd[r],
			                  [=] __device__(int64_t j) { return go[j] * (w ? w[j] : 1.0f); });
		});
	if (db)
		dfi_cuda_column_sums(db, dout, 1, rows, d);
	if (dw) {
		float *prod = normalised_products(dout, x, mean, rstd, rows, d);
		if (prod) {
			dfi_cuda_column_sums(dw, prod, 1, rows, d);
			cudaFreeAsync(prod, dfi_cuda.stream);
		}
	}
}

static void cuda_layernorm_modulate_forward(const df_backend *be, float *out, float *mean, float *rstd,
                                            const float *x, const float *shift, const float *scale, int64_t n,
                                            int64_t t, int64_t d, float eps)
{
	for_each_row(n * t, [=] __device__(int64_t r) {
		float mu, rs;
		const int64_t s = (r / t) * d;
		row_stats(x + r * d, d, eps, &mu, &rs);
		for (int64_t j = threadIdx.x; j < d; j += blockDim.x)
			out[r * d + j] = (x[r * d + j] - mu) * rs * (1.0f + scale[s + j]) + shift[s + j];
		if (threadIdx.x == 0 && mean)
			mean[r] = mu;
		if (threadIdx.x == 0 && rstd)
			rstd[r] = rs;
	});
}

static void cuda_layernorm_modulate_backward(const df_backend *be, float *dx, float *dshift, float *dscale,
                                             const float *dout, const float *x, const float *scale,
                                             const float *mean, const float *rstd, int64_t n, int64_t t, int64_t d)
{
	if (dx)
		for_each_row(n * t, [=] __device__(int64_t r) {
			const float *go = dout + r * d, *sc = scale + (r / t) * d;
			norm_row_backward(dx + r * d, x + r * d, d, 1, mean[r], rstd[r],
			                  [=] __device__(int64_t j) { return go[j] * (1.0f + sc[j]); });
		});
	if (dshift)
		dfi_cuda_column_sums(dshift, dout, n, t, d);
	if (dscale) {
		float *prod = normalised_products(dout, x, mean, rstd, n * t, d);
		if (prod) {
			dfi_cuda_column_sums(dscale, prod, n, t, d);
			cudaFreeAsync(prod, dfi_cuda.stream);
		}
	}
}

/* Group (i, g) is the contiguous run of (c / groups) s elements. */
static void cuda_groupnorm_forward(const df_backend *be, float *out, float *mean, float *rstd, const float *x,
                                   const float *w, const float *b, int64_t n, int64_t c, int64_t s, int64_t groups,
                                   float eps)
{
	const int64_t cg = c / groups, len = cg * s;
	for_each_row(n * groups, [=] __device__(int64_t r) {
		float mu, rs;
		const int64_t c0 = (r % groups) * cg;
		row_stats(x + r * len, len, eps, &mu, &rs);
		for (int64_t j = threadIdx.x; j < len; j += blockDim.x) {
			const int64_t ch = c0 + j / s;
			out[r * len + j] = (x[r * len + j] - mu) * rs * (w ? w[ch] : 1.0f) + (b ? b[ch] : 0.0f);
		}
		if (threadIdx.x == 0 && mean)
			mean[r] = mu;
		if (threadIdx.x == 0 && rstd)
			rstd[r] = rs;
	});
}

static void cuda_groupnorm_backward(const df_backend *be, float *dx, float *dw, float *db, const float *dout,
                                    const float *x, const float *mean, const float *rstd, const float *w, int64_t n,
                                    int64_t c, int64_t s, int64_t groups)
{
	const int64_t cg = c / groups, len = cg * s;
	if (dx)
		for_each_row(n * groups, [=] __device__(int64_t r) {
			const float *go = dout + r * len;
			const int64_t c0 = (r % groups) * cg;
			norm_row_backward(dx + r * len, x + r * len, len, 1, mean[r], rstd[r],
			                  [=] __device__(int64_t j) { return go[j] * (w ? w[c0 + j / s] : 1.0f); });
		});
	if (db)
		dfi_cuda_channel_sums(db, dout, n, c, s);
	if (dw) {
		float *prod;
		if (cudaMallocAsync((void **)&prod, (size_t)(n * c * s) * sizeof(float), dfi_cuda.stream) != cudaSuccess)
			return;
		for_each(n * c * s, [=] __device__(int64_t i) {
			const int64_t r = i / len;
			prod[i] = dout[i] * (x[i] - mean[r]) * rstd[r];
		});
		dfi_cuda_channel_sums(dw, prod, n, c, s);
		cudaFreeAsync(prod, dfi_cuda.stream);
	}
}

/* ---- softmax (also the attention score rows) -------------------------- */

/* The row's maximum and sum of exp(v - max), by the block. */
__device__ void row_max_sumexp(const float *row, int64_t d, float *max_out, float *sum_out)
{
	float mx = -INFINITY;
	for (int64_t j = threadIdx.x; j < d; j += blockDim.x)
		mx = fmaxf(mx, row[j]);
	mx = block_max(mx);
	float s = 0.0f;
	for (int64_t j = threadIdx.x; j < d; j += blockDim.x)
		s += expf(row[j] - mx);
	*max_out = mx;
	*sum_out = block_sum(s);
}

void dfi_cuda_softmax_rows_lse(float *p, float *lse, int64_t rows, int64_t d)
{
	for_each_row(rows, [=] __device__(int64_t r) {
		float *row = p + r * d, mx, s;
		row_max_sumexp(row, d, &mx, &s);
		const float inv = 1.0f / s;
		for (int64_t j = threadIdx.x; j < d; j += blockDim.x)
			row[j] = expf(row[j] - mx) * inv;
		if (threadIdx.x == 0 && lse)
			lse[r] = mx + logf(s);
	});
}

void dfi_cuda_attention_probabilities(float *p, const float *lse, int64_t rows, int64_t d)
{
	for_each(rows * d, [=] __device__(int64_t i) { p[i] = expf(p[i] - lse[i / d]); });
}

void dfi_cuda_attention_score_grads(float *dp, const float *p, const float *dout, const float *out, int64_t samples,
                                    int64_t heads, int64_t tq, int64_t tk, int64_t hd, int64_t ldo)
{
	for_each_row(samples * heads * tq, [=] __device__(int64_t r) {
		const int64_t pair = r / tq, i = r % tq, n = pair / heads, h = pair % heads;
		const float *go = dout + (n * tq + i) * ldo + h * hd, *o = out + (n * tq + i) * ldo + h * hd;
		float di = 0.0f;
		for (int64_t j = threadIdx.x; j < hd; j += blockDim.x)
			di += go[j] * o[j];
		di = block_sum(di);
		for (int64_t j = threadIdx.x; j < tk; j += blockDim.x)
			dp[r * tk + j] = p[r * tk + j] * (dp[r * tk + j] - di);
	});
}

static void cuda_softmax_forward(const df_backend *be, float *out, const float *x, int64_t rows, int64_t d)
{
	if (out != x)
		cudaMemcpyAsync(out, x, (size_t)(rows * d) * sizeof(float), cudaMemcpyDeviceToDevice, dfi_cuda.stream);
	dfi_cuda_softmax_rows_lse(out, NULL, rows, d);
}

static void cuda_softmax_backward(const df_backend *be, float *dx, const float *dout, const float *out, int64_t rows,
                                  int64_t d)
{
	for_each_row(rows, [=] __device__(int64_t r) {
		float s = 0.0f;
		for (int64_t j = threadIdx.x; j < d; j += blockDim.x)
			s += dout[r * d + j] * out[r * d + j];
		s = block_sum(s);
		for (int64_t j = threadIdx.x; j < d; j += blockDim.x)
			dx[r * d + j] += out[r * d + j] * (dout[r * d + j] - s);
	});
}

/* ---- activations and pointwise functions ------------------------------ */

#define GELU_K0 0.7978845608028654f /* sqrt(2 / pi) */
#define GELU_K1 0.044715f
#define INV_SQRT2 0.7071067811865476f
#define INV_SQRT_2PI 0.3989422804014327f

__device__ __forceinline__ float sigmoidf_(float v)
{
	return 1.0f / (1.0f + expf(-v));
}

__device__ __forceinline__ float gelu_value(float v, int tanh_approx)
{
	return tanh_approx ? v * sigmoidf_(2.0f * GELU_K0 * (v + GELU_K1 * v * v * v))
	                   : 0.5f * v * (1.0f + erff(v * INV_SQRT2));
}

__device__ __forceinline__ float gelu_grad(float v, int tanh_approx)
{
	if (tanh_approx) {
		const float s = sigmoidf_(2.0f * GELU_K0 * (v + GELU_K1 * v * v * v));
		return s + v * s * (1.0f - s) * (2.0f * GELU_K0) * (1.0f + 3.0f * GELU_K1 * v * v);
	}
	return 0.5f * (1.0f + erff(v * INV_SQRT2)) + v * INV_SQRT_2PI * expf(-0.5f * v * v);
}

static void cuda_gelu_forward(const df_backend *be, float *out, const float *x, int64_t n, int tanh_approx)
{
	for_each(n, [=] __device__(int64_t i) { out[i] = gelu_value(x[i], tanh_approx); });
}

static void cuda_gelu_backward(const df_backend *be, float *dx, const float *dout, const float *x, int64_t n,
                               int tanh_approx)
{
	for_each(n, [=] __device__(int64_t i) { dx[i] += dout[i] * gelu_grad(x[i], tanh_approx); });
}

static void cuda_silu_forward(const df_backend *be, float *out, const float *x, int64_t n)
{
	for_each(n, [=] __device__(int64_t i) { out[i] = x[i] * sigmoidf_(x[i]); });
}

static void cuda_silu_backward(const df_backend *be, float *dx, const float *dout, const float *x, int64_t n)
{
	for_each(n, [=] __device__(int64_t i) {
		const float s = sigmoidf_(x[i]);
		dx[i] += dout[i] * s * (1.0f + x[i] * (1.0f - s));
	});
}

static void cuda_unary_forward(const df_backend *be, int fn, float *out, const float *x, int64_t n)
{
	for_each(n, [=] __device__(int64_t i) {
		const float v = x[i];
		out[i] = fn == DF_UNARY_EXP   ? expf(v)
		         : fn == DF_UNARY_LOG ? logf(v)
		         : fn == DF_UNARY_TANH ? tanhf(v)
		                               : fmaxf(v, 0.0f) + log1pf(expf(-fabsf(v)));
	});
}

/* saved: the output for exp and tanh, the input for log and softplus. */
static void cuda_unary_backward(const df_backend *be, int fn, float *dx, const float *dout, const float *saved,
                                int64_t n)
{
	for_each(n, [=] __device__(int64_t i) {
		const float s = saved[i];
		float d;
		if (fn == DF_UNARY_EXP)
			d = s;
		else if (fn == DF_UNARY_LOG)
			d = 1.0f / s;
		else if (fn == DF_UNARY_TANH)
			d = 1.0f - s * s;
		else
			d = sigmoidf_(s);
		dx[i] += dout[i] * d;
	});
}

/* ---- dropout: the Philox mapping of diffuse/rng.h --------------------- */

static void dropout_apply(float *dst, const float *src, int64_t n, float p, int accumulate, uint64_t seed,
                          uint64_t stream, uint64_t step)
{
	const float keep_prob = 1.0f - p, scale = p < 1.0f ? 1.0f / keep_prob : 0.0f;
	for_each((n + 3) / 4, [=] __device__(int64_t blk) {
		uint32_t w[4];
		dfi_rng_block(seed, stream, step, (uint64_t)blk, w);
		for (int j = 0; j < 4 && blk * 4 + j < n; j++) {
			const int64_t i = blk * 4 + j;
			const float v = dfi_uniform_from_word(w[j]) < keep_prob ? src[i] * scale : 0.0f;
			dst[i] = accumulate ? dst[i] + v : v;
		}
	});
}

static void cuda_dropout_forward(const df_backend *be, float *out, const float *x, int64_t n, float p, uint64_t seed,
                                 uint64_t stream, uint64_t step)
{
	dropout_apply(out, x, n, p, 0, seed, stream, step);
}

static void cuda_dropout_backward(const df_backend *be, float *dx, const float *dout, int64_t n, float p,
                                  uint64_t seed, uint64_t stream, uint64_t step)
{
	dropout_apply(dx, dout, n, p, 1, seed, stream, step);
}

/* ---- embedding: ids are host memory ---------------------------------- */

/* Host ids copied into the device scratch, offset_bytes into it. */
static int32_t *device_ids(const int32_t *ids, int64_t n, size_t offset_bytes)
{
	char *base = (char *)dfi_cuda_scratch(offset_bytes + (size_t)n * sizeof(int32_t));
	if (!base)
		return NULL;
	int32_t *d = (int32_t *)(base + offset_bytes);
	cudaMemcpyAsync(d, ids, (size_t)n * sizeof(int32_t), cudaMemcpyHostToDevice, dfi_cuda.stream);
	cudaStreamSynchronize(dfi_cuda.stream); /* ids may be reused by the caller */
	return d;
}

static void cuda_embedding_forward(const df_backend *be, float *out, const float *table, const int32_t *ids,
                                   int64_t n, int64_t d)
{
	const int32_t *dev = device_ids(ids, n, 0);
	if (dev)
		for_each(n * d, [=] __device__(int64_t i) { out[i] = table[(int64_t)dev[i / d] * d + i % d]; });
}

static int compare_pairs(const void *a, const void *b)
{
	const int64_t *x = (const int64_t *)a, *y = (const int64_t *)b;
	return x[0] != y[0] ? (x[0] < y[0] ? -1 : 1) : (x[1] < y[1] ? -1 : x[1] > y[1]);
}

/* Deterministic scatter: positions sorted by id on the host (then by
 * position), one block per distinct id summing its rows in that order. */
static void cuda_embedding_backward(const df_backend *be, float *dtable, const float *dout, const int32_t *ids,
                                    int64_t n, int64_t d)
{
	if (n == 0)
		return;
	int64_t *pairs = (int64_t *)malloc((size_t)n * 2 * sizeof(int64_t));
	int32_t *order = (int32_t *)malloc((size_t)(2 * n + 1) * sizeof(int32_t));
	if (!pairs || !order) {
		free(pairs);
		free(order);
		return;
	}
	for (int64_t i = 0; i < n; i++) {
		pairs[2 * i] = ids[i];
		pairs[2 * i + 1] = i;
	}
	qsort(pairs, (size_t)n, 2 * sizeof(int64_t), compare_pairs);
	/* order: [positions sorted (n)] [run starts (runs + 1)] */
	int64_t runs = 0;
	for (int64_t i = 0; i < n; i++) {
		order[i] = (int32_t)pairs[2 * i + 1];
		if (i == 0 || pairs[2 * i] != pairs[2 * i - 2])
			order[n + runs++] = (int32_t)i;
	}
	order[n + runs] = (int32_t)n;
	/* Reserve both lists at once: growing the scratch would drop the first. */
	const size_t second = ((size_t)n * sizeof(int32_t) + 255) & ~(size_t)255;
	const int32_t *dev_ids = NULL, *dev = NULL;
	if (dfi_cuda_scratch(second + (size_t)(n + runs + 1) * sizeof(int32_t))) {
		dev_ids = device_ids(ids, n, 0);
		dev = device_ids(order, n + runs + 1, second);
	}
	free(pairs);
	free(order);
	if (!dev)
		return;
	for_each_row(runs, [=] __device__(int64_t r) {
		const int32_t first = dev[n + r], last = dev[n + r + 1];
		const int64_t row = dev_ids[dev[first]];
		for (int64_t j = threadIdx.x; j < d; j += blockDim.x) {
			float acc = 0.0f;
			for (int32_t k = first; k < last; k++)
				acc += dout[(int64_t)dev[k] * d + j];
			dtable[row * d + j] += acc;
		}
	});
}

/* ---- strided copies ---------------------------------------------------- */

struct copy_layout {
	int ndim;
	int64_t shape[DF_COPY_MAX_DIMS], dst[DF_COPY_MAX_DIMS], src[DF_COPY_MAX_DIMS];
};

static void cuda_strided_copy(const df_backend *be, float *dst, const float *src, int ndim, const int64_t *shape,
                              const int64_t *dst_stride, const int64_t *src_stride, int accumulate)
{
	struct copy_layout L;
	int64_t total = 1;
	L.ndim = ndim;
	for (int k = 0; k < ndim; k++) {
		L.shape[k] = shape[k];
		L.dst[k] = dst_stride[k];
		L.src[k] = src_stride[k];
		total *= shape[k];
	}
	for_each(total, [=] __device__(int64_t i) {
		int64_t rest = i, so = 0, dof = 0;
		for (int k = L.ndim - 1; k >= 0; k--) {
			const int64_t idx = rest % L.shape[k];
			rest /= L.shape[k];
			so += idx * L.src[k];
			dof += idx * L.dst[k];
		}
		dst[dof] = accumulate ? dst[dof] + src[so] : src[so];
	});
}

/* ---- reductions and losses -------------------------------------------- */

static void cuda_sum_rows_forward(const df_backend *be, float *out, const float *x, int64_t rows, int64_t cols,
                                  float scale)
{
	for_each_row(rows, [=] __device__(int64_t r) {
		float s = 0.0f;
		for (int64_t j = threadIdx.x; j < cols; j += blockDim.x)
			s += x[r * cols + j];
		s = block_sum(s);
		if (threadIdx.x == 0)
			out[r] = scale * s;
	});
}

static void cuda_sum_rows_backward(const df_backend *be, float *dx, const float *dout, int64_t rows, int64_t cols,
                                   float scale)
{
	for_each(rows * cols, [=] __device__(int64_t i) { dx[i] += scale * dout[i / cols]; });
}

static void cuda_mse_rows_forward(const df_backend *be, float *out, const float *a, const float *b, int64_t rows,
                                  int64_t cols)
{
	for_each_row(rows, [=] __device__(int64_t r) {
		float s = 0.0f;
		for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) {
			const float e = a[r * cols + j] - b[r * cols + j];
			s += e * e;
		}
		s = block_sum(s);
		if (threadIdx.x == 0)
			out[r] = s / (float)cols;
	});
}

static void cuda_mse_rows_backward(const df_backend *be, float *da, float *db, const float *dout, const float *a,
                                   const float *b, int64_t rows, int64_t cols)
{
	for_each(rows * cols, [=] __device__(int64_t i) {
		const float g = 2.0f * dout[i / cols] * (a[i] - b[i]) / (float)cols;
		if (da)
			da[i] += g;
		if (db)
			db[i] -= g;
	});
}

/* Dot and clamped norms of one row, in double as the CPU backend. */
__device__ void cosine_row(const float *a, const float *b, int64_t d, float eps, double *dot, double *na, double *nb,
                           int *ca, int *cb)
{
	__shared__ double part[3][ROW_THREADS];
	double ab = 0.0, aa = 0.0, bb = 0.0;
	for (int64_t j = threadIdx.x; j < d; j += blockDim.x) {
		ab += (double)a[j] * b[j];
		aa += (double)a[j] * a[j];
		bb += (double)b[j] * b[j];
	}
	__syncthreads();
	part[0][threadIdx.x] = ab;
	part[1][threadIdx.x] = aa;
	part[2][threadIdx.x] = bb;
	__syncthreads();
	for (int w = blockDim.x / 2; w > 0; w >>= 1) {
		if ((int)threadIdx.x < w)
			for (int k = 0; k < 3; k++)
				part[k][threadIdx.x] += part[k][threadIdx.x + w];
		__syncthreads();
	}
	*dot = part[0][0];
	*na = sqrt(part[1][0]);
	*nb = sqrt(part[2][0]);
	*ca = *na < eps;
	*cb = *nb < eps;
	if (*ca)
		*na = eps;
	if (*cb)
		*nb = eps;
}

static void cuda_cosine_forward(const df_backend *be, float *out, const float *a, const float *b, int64_t rows,
                                int64_t d, float eps)
{
	for_each_row(rows, [=] __device__(int64_t r) {
		double dot, na, nb;
		int ca, cb;
		cosine_row(a + r * d, b + r * d, d, eps, &dot, &na, &nb, &ca, &cb);
		if (threadIdx.x == 0)
			out[r] = (float)(dot / (na * nb));
	});
}

static void cuda_cosine_backward(const df_backend *be, float *da, float *db, const float *dout, const float *a,
                                 const float *b, int64_t rows, int64_t d, float eps)
{
	for_each_row(rows, [=] __device__(int64_t r) {
		const float *ar = a + r * d, *br = b + r * d;
		double dot, na, nb;
		int ca, cb;
		cosine_row(ar, br, d, eps, &dot, &na, &nb, &ca, &cb);
		const double cosv = dot / (na * nb), g = dout[r], inv = 1.0 / (na * nb);
		const double ka = ca ? 0.0 : cosv / (na * na), kb = cb ? 0.0 : cosv / (nb * nb);
		for (int64_t i = threadIdx.x; i < d; i += blockDim.x) {
			if (da)
				da[r * d + i] += (float)(g * (br[i] * inv - ka * ar[i]));
			if (db)
				db[r * d + i] += (float)(g * (ar[i] * inv - kb * br[i]));
		}
	});
}

static void cuda_normal_kl_forward(const df_backend *be, float *out, const float *m1, const float *lv1,
                                   const float *m2, const float *lv2, int64_t n)
{
	for_each(n, [=] __device__(int64_t i) {
		const float dm = m1[i] - m2[i];
		out[i] = 0.5f * (-1.0f + lv2[i] - lv1[i] + expf(lv1[i] - lv2[i]) + dm * dm * expf(-lv2[i]));
	});
}

static void cuda_normal_kl_backward(const df_backend *be, float *dm1, float *dlv1, float *dm2, float *dlv2,
                                    const float *dout, const float *m1, const float *lv1, const float *m2,
                                    const float *lv2, int64_t n)
{
	for_each(n, [=] __device__(int64_t i) {
		const float dm = m1[i] - m2[i], inv_var2 = expf(-lv2[i]), ratio = expf(lv1[i] - lv2[i]), g = dout[i];
		if (dm1)
			dm1[i] += g * dm * inv_var2;
		if (dm2)
			dm2[i] -= g * dm * inv_var2;
		if (dlv1)
			dlv1[i] += g * 0.5f * (ratio - 1.0f);
		if (dlv2)
			dlv2[i] += g * 0.5f * (1.0f - ratio - dm * dm * inv_var2);
	});
}

#define DGL_HALF_BIN (1.0f / 255.0f)
#define DGL_FLOOR 1e-12f

__device__ __forceinline__ float approx_cdf(float z, float *dcdf)
{
	const float t = tanhf(GELU_K0 * (z + GELU_K1 * z * z * z));
	*dcdf = 0.5f * (1.0f - t * t) * GELU_K0 * (1.0f + 3.0f * GELU_K1 * z * z);
	return 0.5f * (1.0f + t);
}

/* log p and its derivatives in plus_in and min_in (zero under the clamp). */
__device__ float dgl_point(float x, float mean, float log_scale, float *plus_in, float *min_in, float *d_plus,
                           float *d_min)
{
	const float centered = x - mean, inv_std = expf(-log_scale);
	*plus_in = inv_std * (centered + DGL_HALF_BIN);
	*min_in = inv_std * (centered - DGL_HALF_BIN);
	float dcp, dcm;
	const float cdf_plus = approx_cdf(*plus_in, &dcp), cdf_min = approx_cdf(*min_in, &dcm);
	float arg;
	*d_plus = 0.0f;
	*d_min = 0.0f;
	if (x < -0.999f) {
		arg = cdf_plus;
		if (arg >= DGL_FLOOR)
			*d_plus = dcp / arg;
	} else if (x > 0.999f) {
		arg = 1.0f - cdf_min;
		if (arg >= DGL_FLOOR)
			*d_min = -dcm / arg;
	} else {
		arg = cdf_plus - cdf_min;
		if (arg >= DGL_FLOOR) {
			*d_plus = dcp / arg;
			*d_min = -dcm / arg;
		}
	}
	return logf(fmaxf(arg, DGL_FLOOR));
}

static void cuda_dgl_forward(const df_backend *be, float *out, const float *x, const float *mean,
                             const float *log_scale, int64_t n)
{
	for_each(n, [=] __device__(int64_t i) {
		float pi, mi, dp, dm;
		out[i] = dgl_point(x[i], mean[i], log_scale[i], &pi, &mi, &dp, &dm);
	});
}

static void cuda_dgl_backward(const df_backend *be, float *dx, float *dmean, float *dlog_scale, const float *dout,
                              const float *x, const float *mean, const float *log_scale, int64_t n)
{
	for_each(n, [=] __device__(int64_t i) {
		float pi, mi, dp, dm;
		dgl_point(x[i], mean[i], log_scale[i], &pi, &mi, &dp, &dm);
		const float g = dout[i], dc = g * (dp + dm) * expf(-log_scale[i]);
		if (dx)
			dx[i] += dc;
		if (dmean)
			dmean[i] -= dc;
		if (dlog_scale)
			dlog_scale[i] -= g * (dp * pi + dm * mi);
	});
}

static void cuda_cross_entropy_forward(const df_backend *be, float *out, float *lse, const float *logits,
                                       const int32_t *labels, int64_t rows, int64_t k)
{
	const int32_t *lab = device_ids(labels, rows, 0);
	if (!lab)
		return;
	for_each_row(rows, [=] __device__(int64_t r) {
		const float *lr = logits + r * k;
		float mx, s;
		row_max_sumexp(lr, k, &mx, &s);
		if (threadIdx.x == 0) {
			const float l = mx + logf(s);
			if (lse)
				lse[r] = l;
			out[r] = l - lr[lab[r]];
		}
	});
}

static void cuda_cross_entropy_backward(const df_backend *be, float *dlogits, const float *dout, const float *logits,
                                        const float *lse, const int32_t *labels, int64_t rows, int64_t k)
{
	const int32_t *lab = device_ids(labels, rows, 0);
	if (!lab)
		return;
	for_each(rows * k, [=] __device__(int64_t i) {
		const int64_t r = i / k;
		const float g = dout[r];
		dlogits[i] += g * expf(logits[i] - lse[r]) - (lab[r] == i % k ? g : 0.0f);
	});
}

/* ---- spatial resampling ------------------------------------------------ */

static void cuda_upsample_forward(const df_backend *be, float *out, const float *x, int64_t planes, int64_t h,
                                  int64_t w)
{
	for_each(planes * 4 * h * w, [=] __device__(int64_t i) {
		const int64_t ox = i % (2 * w), oy = (i / (2 * w)) % (2 * h), p = i / (4 * h * w);
		out[i] = x[(p * h + oy / 2) * w + ox / 2];
	});
}

static void cuda_upsample_backward(const df_backend *be, float *dx, const float *dout, int64_t planes, int64_t h,
                                   int64_t w)
{
	for_each(planes * h * w, [=] __device__(int64_t i) {
		const int64_t x = i % w, y = (i / w) % h, p = i / (h * w);
		const float *o = dout + (p * 2 * h + 2 * y) * 2 * w + 2 * x;
		dx[i] += (o[0] + o[1]) + (o[2 * w] + o[2 * w + 1]);
	});
}

static void cuda_avgpool_forward(const df_backend *be, float *out, const float *x, int64_t planes, int64_t h,
                                 int64_t w, int64_t k)
{
	const int64_t ho = h / k, wo = w / k;
	for_each(planes * ho * wo, [=] __device__(int64_t i) {
		const int64_t ox = i % wo, oy = (i / wo) % ho, p = i / (ho * wo);
		float s = 0.0f;
		for (int64_t dy = 0; dy < k; dy++)
			for (int64_t dx = 0; dx < k; dx++)
				s += x[(p * h + oy * k + dy) * w + ox * k + dx];
		out[i] = s / (float)(k * k);
	});
}

static void cuda_avgpool_backward(const df_backend *be, float *dx, const float *dout, int64_t planes, int64_t h,
                                  int64_t w, int64_t k)
{
	const int64_t ho = h / k, wo = w / k;
	for_each(planes * h * w, [=] __device__(int64_t i) {
		const int64_t x = i % w, y = (i / w) % h, p = i / (h * w);
		if (y / k < ho && x / k < wo)
			dx[i] += dout[(p * ho + y / k) * wo + x / k] / (float)(k * k);
	});
}

/* ---- optimiser: one fused pass each ------------------------------------ */

static void cuda_adamw_step(const df_backend *be, float *params, const float *grads, float *m, float *v,
                            const uint8_t *decay_mask, int64_t n, const struct df_adamw_factors *fp)
{
	const struct df_adamw_factors f = *fp;
	for_each(n, [=] __device__(int64_t i) {
		float p = params[i];
		const float g = grads[i];
		if (f.decays && (!decay_mask || decay_mask[i]))
			p *= f.decay_factor;
		const float mi = f.w1 < 0.5f ? fmaf(f.w1, g - m[i], m[i]) : fmaf(-(1.0f - f.w1), g - m[i], g);
		const float vi = fmaf(f.w2 * g, g, v[i] * f.b2);
		const float denom = sqrtf(vi) / f.bias2_sqrt + f.eps;
		params[i] = p + f.neg_step * mi / denom;
		m[i] = mi;
		v[i] = vi;
	});
}

static void cuda_ema_update(const df_backend *be, float *ema, const float *params, int64_t n, float decay)
{
	const float take = 1.0f - decay;
	for_each(n, [=] __device__(int64_t i) { ema[i] = decay * ema[i] + take * params[i]; });
}

/* ---- non-finite search: the smallest bad index (order-free) ----------- */

#define NONFINITE_BLOCKS 1024 /* also the grid of the sum of squares */

__global__ void first_nonfinite_partial(int64_t *partial, const float *x, int64_t n)
{
	__shared__ int64_t best[THREADS];
	int64_t mine = INT64_MAX;
	for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n && mine == INT64_MAX;
	     i += (int64_t)gridDim.x * blockDim.x)
		if (!isfinite(x[i]))
			mine = i;
	best[threadIdx.x] = mine;
	__syncthreads();
	for (int w = blockDim.x / 2; w > 0; w >>= 1) {
		if ((int)threadIdx.x < w && best[threadIdx.x + w] < best[threadIdx.x])
			best[threadIdx.x] = best[threadIdx.x + w];
		__syncthreads();
	}
	if (threadIdx.x == 0)
		partial[blockIdx.x] = best[0];
}

static int64_t cuda_first_nonfinite(const df_backend *be, const float *x, int64_t n)
{
	if (n <= 0)
		return -1;
	int64_t *partial = (int64_t *)dfi_cuda_scratch(NONFINITE_BLOCKS * sizeof(int64_t));
	int64_t host[NONFINITE_BLOCKS];
	if (!partial)
		return -1;
	first_nonfinite_partial<<<NONFINITE_BLOCKS, THREADS, 0, dfi_cuda.stream>>>(partial, x, n);
	cudaMemcpyAsync(host, partial, sizeof host, cudaMemcpyDeviceToHost, dfi_cuda.stream);
	cudaStreamSynchronize(dfi_cuda.stream);
	int64_t first = INT64_MAX;
	for (int b = 0; b < NONFINITE_BLOCKS; b++)
		first = host[b] < first ? host[b] : first;
	return first == INT64_MAX ? -1 : first;
}

/* Block partial sums of squares in double over a fixed grid. */
__global__ void sum_squares_partial(double *partial, const float *x, int64_t n)
{
	__shared__ double acc[THREADS];
	double s = 0.0;
	for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
		s += (double)x[i] * (double)x[i];
	acc[threadIdx.x] = s;
	__syncthreads();
	for (int w = blockDim.x / 2; w > 0; w >>= 1) {
		if ((int)threadIdx.x < w)
			acc[threadIdx.x] += acc[threadIdx.x + w];
		__syncthreads();
	}
	if (threadIdx.x == 0)
		partial[blockIdx.x] = acc[0];
}

static double cuda_sum_squares(const df_backend *be, const float *x, int64_t n)
{
	double *partial = (double *)dfi_cuda_scratch(NONFINITE_BLOCKS * sizeof(double));
	double host[NONFINITE_BLOCKS], total = 0.0;
	if (!partial || n <= 0)
		return n <= 0 ? 0.0 : NAN;
	sum_squares_partial<<<NONFINITE_BLOCKS, THREADS, 0, dfi_cuda.stream>>>(partial, x, n);
	cudaMemcpyAsync(host, partial, sizeof host, cudaMemcpyDeviceToHost, dfi_cuda.stream);
	cudaStreamSynchronize(dfi_cuda.stream);
	for (int b = 0; b < NONFINITE_BLOCKS; b++)
		total += host[b];
	return total;
}

void dfi_cuda_install_kernels(df_backend *be)
{
	be->sum_squares = cuda_sum_squares;
	be->first_nonfinite = cuda_first_nonfinite;
	be->binary_forward = cuda_binary_forward;
	be->binary_backward = cuda_binary_backward;
	be->affine_forward = cuda_affine_forward;
	be->affine_backward = cuda_affine_backward;
	be->modulate_forward = cuda_modulate_forward;
	be->modulate_backward = cuda_modulate_backward;
	be->gated_residual_forward = cuda_gated_residual_forward;
	be->gated_residual_backward = cuda_gated_residual_backward;
	be->layernorm_forward = cuda_layernorm_forward;
	be->layernorm_backward = cuda_layernorm_backward;
	be->layernorm_modulate_forward = cuda_layernorm_modulate_forward;
	be->layernorm_modulate_backward = cuda_layernorm_modulate_backward;
	be->gelu_forward = cuda_gelu_forward;
	be->gelu_backward = cuda_gelu_backward;
	be->silu_forward = cuda_silu_forward;
	be->silu_backward = cuda_silu_backward;
	be->embedding_forward = cuda_embedding_forward;
	be->embedding_backward = cuda_embedding_backward;
	be->strided_copy = cuda_strided_copy;
	be->sum_rows_forward = cuda_sum_rows_forward;
	be->sum_rows_backward = cuda_sum_rows_backward;
	be->mse_rows_forward = cuda_mse_rows_forward;
	be->mse_rows_backward = cuda_mse_rows_backward;
	be->cosine_forward = cuda_cosine_forward;
	be->cosine_backward = cuda_cosine_backward;
	be->groupnorm_forward = cuda_groupnorm_forward;
	be->groupnorm_backward = cuda_groupnorm_backward;
	be->upsample_nearest2x_forward = cuda_upsample_forward;
	be->upsample_nearest2x_backward = cuda_upsample_backward;
	be->avgpool2d_forward = cuda_avgpool_forward;
	be->avgpool2d_backward = cuda_avgpool_backward;
	be->unary_forward = cuda_unary_forward;
	be->unary_backward = cuda_unary_backward;
	be->softmax_forward = cuda_softmax_forward;
	be->softmax_backward = cuda_softmax_backward;
	be->dropout_forward = cuda_dropout_forward;
	be->dropout_backward = cuda_dropout_backward;
	be->normal_kl_forward = cuda_normal_kl_forward;
	be->normal_kl_backward = cuda_normal_kl_backward;
	be->discretized_gaussian_loglik_forward = cuda_dgl_forward;
	be->discretized_gaussian_loglik_backward = cuda_dgl_backward;
	be->cross_entropy_forward = cuda_cross_entropy_forward;
	be->cross_entropy_backward = cuda_cross_entropy_backward;
	be->adamw_step = cuda_adamw_step;
	be->ema_update = cuda_ema_update;
}
