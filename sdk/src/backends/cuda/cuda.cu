/* The CUDA backend: device, memory and the cuBLAS-backed slots (linear,
 * batched matmul, convolution through cuDNN with an im2col + GEMM fallback,
 * attention as batched GEMMs
 * around a row softmax, or cuDNN's fused attention under bf16 autocast
 * when asked for: sdpa.cu). Pointwise, normalisation and reduction kernels
 * are in kernels.cu.
 *
 * Everything runs on one stream, so kernels and copies stay ordered and the
 * host waits only in to_host. Products are float32; TF32 tensor cores are
 * used only when DIFFUSE_CUDA_TF32=1 is set in the environment. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cuda_runtime.h>
#include <cublas_v2.h>
#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cudnn.h>

#include "cuda_private.h"

struct dfi_cuda_state dfi_cuda;

static int cuda_ready;

/* A failing call in a slot has nowhere to report (slots return void): it is
 * printed to stderr, and a sticky device error shows again at the next
 * synchronising read (to_host). */
static void report(const char *what, const char *detail)
{
	fprintf(stderr, "diffuse cuda: %s: %s\n", what, detail);
}

#define CUDA_CHECK(call)                                                                                     \
	do {                                                                                                 \
		cudaError_t e_ = (call);                                                                     \
		if (e_ != cudaSuccess)                                                                       \
			report(#call, cudaGetErrorString(e_));                                               \
	} while (0)

#define CUBLAS_CHECK(call)                                                                                   \
	do {                                                                                                 \
		cublasStatus_t s_ = (call);                                                                  \
		if (s_ != CUBLAS_STATUS_SUCCESS)                                                             \
			report(#call, cublasGetStatusString(s_));                                            \
	} while (0)

void *dfi_cuda_scratch(size_t bytes)
{
	if (bytes <= dfi_cuda.scratch_bytes)
		return dfi_cuda.scratch;
	if (dfi_cuda.scratch) {
		cudaStreamSynchronize(dfi_cuda.stream);
		cudaFree(dfi_cuda.scratch);
	}
	dfi_cuda.scratch = NULL;
	dfi_cuda.scratch_bytes = 0;
	size_t grown = bytes < (1u << 20) ? (1u << 20) : bytes + bytes / 2;
	if (cudaMalloc((void **)&dfi_cuda.scratch, grown) != cudaSuccess) {
		report("scratch", "out of device memory");
		return NULL;
	}
	dfi_cuda.scratch_bytes = grown;
	return dfi_cuda.scratch;
}

/* ---- memory ------------------------------------------------------------ */

static void *cuda_alloc(const df_backend *be, size_t bytes)
{
	void *p = NULL;
	/* cudaMalloc aligns to 256 bytes, more than the 64 the contract asks. */
	if (cudaMalloc(&p, bytes ? bytes : 1) != cudaSuccess) {
		cudaGetLastError(); /* out of memory is not sticky: clear it */
		return NULL;
	}
	return p;
}

static void cuda_free(const df_backend *be, void *p)
{
	if (p)
		CUDA_CHECK(cudaFree(p));
}

static void cuda_to_device(const df_backend *be, void *dst, const void *host_src, size_t bytes)
{
	CUDA_CHECK(cudaMemcpyAsync(dst, host_src, bytes, cudaMemcpyHostToDevice, dfi_cuda.stream));
	/* The host buffer may be reused as soon as we return. */
	CUDA_CHECK(cudaStreamSynchronize(dfi_cuda.stream));
}

static void cuda_to_host(const df_backend *be, void *host_dst, const void *src, size_t bytes)
{
	CUDA_CHECK(cudaMemcpyAsync(host_dst, src, bytes, cudaMemcpyDeviceToHost, dfi_cuda.stream));
	CUDA_CHECK(cudaStreamSynchronize(dfi_cuda.stream));
}

static void cuda_copy(const df_backend *be, void *dst, const void *src, size_t bytes)
{
	CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, dfi_cuda.stream));
}

static void cuda_zero(const df_backend *be, void *p, size_t bytes)
{
	CUDA_CHECK(cudaMemsetAsync(p, 0, bytes, dfi_cuda.stream));
}

/* ---- GEMM ------------------------------------------------------------- */

/* bf16 autocast (DIFFUSE_CUDA_AUTOCAST=bf16): the products of linear,
 * matmul and conv2d read bfloat16 copies of their float32 operands and
 * accumulate in float32 into float32 outputs; weights, gradients and
 * optimiser state stay float32 (the master copy). Attention stays float32. */
static int dfi_cuda_autocast_bf16;
/* DIFFUSE_CUDA_TF32=1: float32 products may use TF32 tensor cores. */
static int allow_tf32;
/* DIFFUSE_CUDA_ATTENTION=fused: attention through cuDNN's fused SDPA under
 * bf16 autocast (plain, the default: batched GEMMs around a softmax). */
static int attention_mode_fused;

int dfi_cuda_allow_tf32(void)
{
	return allow_tf32;
}

__global__ void to_bf16(__nv_bfloat16 *dst, const float *src, int64_t n)
{
	for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
		dst[i] = __float2bfloat16_rn(src[i]);
}

/* A bfloat16 copy of n floats on the stream (NULL when out of memory);
 * release with cudaFreeAsync after its last use. */
static __nv_bfloat16 *bf16_copy(const float *src, int64_t n)
{
	__nv_bfloat16 *dst = NULL;
	if (cudaMallocAsync((void **)&dst, (size_t)(n > 0 ? n : 1) * sizeof *dst, dfi_cuda.stream) != cudaSuccess)
		return NULL;
	to_bf16<<<dfi_cuda_blocks(n, 256), 256, 0, dfi_cuda.stream>>>(dst, src, n);
	return dst;
}

/* The bf16 path of gemm_ld: operands spanning span_a and span_b floats. */
static int gemm_bf16(float *c, int64_t ldc, int64_t stride_c, const float *a, int64_t lda, int64_t stride_a,
                     int64_t span_a, const float *b, int64_t ldb, int64_t stride_b, int64_t span_b, int64_t batch,
                     int64_t m, int64_t n, int64_t k, cublasOperation_t op_a, cublasOperation_t op_b, float alpha,
                     float beta)
{
	__nv_bfloat16 *a16 = bf16_copy(a, span_a), *b16 = a16 ? bf16_copy(b, span_b) : NULL;
	int ok = b16 && cublasGemmStridedBatchedEx(dfi_cuda.blas, op_b, op_a, (int)n, (int)m, (int)k, &alpha, b16,
	                                           CUDA_R_16BF, (int)ldb, stride_b, a16, CUDA_R_16BF, (int)lda,
	                                           stride_a, &beta, c, CUDA_R_32F, (int)ldc, stride_c, (int)batch,
	                                           CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_SUCCESS;
	if (a16)
		cudaFreeAsync(a16, dfi_cuda.stream);
	if (b16)
		cudaFreeAsync(b16, dfi_cuda.stream);
	return ok;
}

/* Row-major c = op(a) op(b) is column-major c^T = op(b)^T op(a)^T: swap
 * the operands and keep the transposition flags. */
static void gemm_ld(float *c, int64_t ldc, int64_t stride_c, const float *a, int64_t lda, int64_t stride_a,
                    const float *b, int64_t ldb, int64_t stride_b, int64_t batch, int64_t m, int64_t n, int64_t k,
                    int trans_a, int trans_b, float alpha, float beta)
{
	if (m == 0 || n == 0 || batch == 0)
		return;
	const cublasOperation_t op_a = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
	const cublasOperation_t op_b = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
	if (dfi_cuda_autocast_bf16) {
		/* Floats each operand spans: the last batch's rows end there. */
		const int64_t span_a = (batch - 1) * stride_a + (trans_a ? k : m) * lda;
		const int64_t span_b = (batch - 1) * stride_b + (trans_b ? n : k) * ldb;
		if (gemm_bf16(c, ldc, stride_c, a, lda, stride_a, span_a, b, ldb, stride_b, span_b, batch, m, n, k, op_a,
		              op_b, alpha, beta))
			return;
		report("bf16 GEMM", "declined; this product runs in float32");
	}
	CUBLAS_CHECK(cublasSgemmStridedBatched(dfi_cuda.blas, op_b, op_a, (int)n, (int)m, (int)k, &alpha, b,
	                                       (int)ldb, stride_b, a, (int)lda, stride_a, &beta, c, (int)ldc,
	                                       stride_c, (int)batch));
}

void dfi_cuda_gemm(float *c, const float *a, const float *b, int64_t batch, int64_t m, int64_t n, int64_t k,
                   int trans_a, int trans_b, float alpha, float beta)
{
	gemm_ld(c, n, m * n, a, trans_a ? m : k, m * k, b, trans_b ? k : n, k * n, batch, m, n, k, trans_a, trans_b,
	        alpha, beta);
}

/* ---- linear: cuBLASLt with the bias fused into the epilogue ------------ */

static cublasLtHandle_t lt_handle;

/* out (m, o) = x (m, in) w^T + b through cuBLASLt (column-major: out^T =
 * w x^T, bias per row of out^T); returns 0 when Lt declined the shape. */
static int lt_linear(float *out, const float *x, const float *w, const float *b, int64_t m, int64_t in,
                     int64_t o)
{
	cublasLtMatmulDesc_t desc = NULL;
	cublasLtMatrixLayout_t la = NULL, lb = NULL, lc = NULL;
	cublasLtMatmulPreference_t pref = NULL;
	int ok = 0;
	const cublasOperation_t op_t = CUBLAS_OP_T, op_n = CUBLAS_OP_N;
	const cublasLtEpilogue_t epi = b ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT;
	const cublasComputeType_t compute = allow_tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
	const float one = 1.0f, zero = 0.0f;
	cublasLtMatmulHeuristicResult_t heur;
	int found = 0;
	const size_t ws_bytes = 32u << 20;
	void *ws = dfi_cuda_scratch(ws_bytes);
	if (!ws)
		return 0;
	if (cublasLtMatmulDescCreate(&desc, compute, CUDA_R_32F) != CUBLAS_STATUS_SUCCESS)
		goto done;
	cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &op_t, sizeof op_t);
	cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &op_n, sizeof op_n);
	cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi);
	if (b)
		cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &b, sizeof b);
	/* A = w viewed column-major (in, o), transposed; B = x^T (in, m); C (o, m). */
	if (cublasLtMatrixLayoutCreate(&la, CUDA_R_32F, (uint64_t)in, (uint64_t)o, in) ||
	    cublasLtMatrixLayoutCreate(&lb, CUDA_R_32F, (uint64_t)in, (uint64_t)m, in) ||
	    cublasLtMatrixLayoutCreate(&lc, CUDA_R_32F, (uint64_t)o, (uint64_t)m, o) ||
	    cublasLtMatmulPreferenceCreate(&pref))
		goto done;
	cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws_bytes,
	                                     sizeof ws_bytes);
	if (cublasLtMatmulAlgoGetHeuristic(lt_handle, desc, la, lb, lc, lc, pref, 1, &heur, &found) !=
	            CUBLAS_STATUS_SUCCESS ||
	    found < 1)
		goto done;
	ok = cublasLtMatmul(lt_handle, desc, &one, w, la, x, lb, &zero, out, lc, out, lc, &heur.algo, ws, ws_bytes,
	                    dfi_cuda.stream) == CUBLAS_STATUS_SUCCESS;
done:
	if (pref)
		cublasLtMatmulPreferenceDestroy(pref);
	if (lc)
		cublasLtMatrixLayoutDestroy(lc);
	if (lb)
		cublasLtMatrixLayoutDestroy(lb);
	if (la)
		cublasLtMatrixLayoutDestroy(la);
	if (desc)
		cublasLtMatmulDescDestroy(desc);
	return ok;
}

/* out[r, j] += b[j] for rows of o. */
__global__ void add_bias_rows(float *out, const float *b, int64_t rows, int64_t o)
{
	for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < rows * o;
	     i += (int64_t)gridDim.x * blockDim.x)
		out[i] += b[i % o];
}

static void cuda_linear_forward(const df_backend *be, float *out, const float *x, const float *w, const float *b,
                                int64_t m, int64_t in, int64_t o)
{
	if (m == 0 || o == 0)
		return;
	if (in > 0 && !dfi_cuda_autocast_bf16 && lt_linear(out, x, w, b, m, in, o))
		return;
	/* cuBLAS fallback: out = x w^T, then the bias. */
	dfi_cuda_gemm(out, x, w, 1, m, o, in, 0, 1, 1.0f, 0.0f);
	if (b)
		add_bias_rows<<<dfi_cuda_blocks(m * o, 256), 256, 0, dfi_cuda.stream>>>(out, b, m, o);
}


static void cuda_linear_backward(const df_backend *be, float *dx, float *dw, float *db, const float *dout,
                                 const float *x, const float *w, int64_t m, int64_t in, int64_t o)
{
	if (dx) /* dx (m, in) += dout (m, o) w (o, in) */
		dfi_cuda_gemm(dx, dout, w, 1, m, in, o, 0, 0, 1.0f, 1.0f);
	if (dw) /* dw (o, in) += dout^T x */
		dfi_cuda_gemm(dw, dout, x, 1, o, in, m, 1, 0, 1.0f, 1.0f);
	if (db)
		dfi_cuda_column_sums(db, dout, 1, m, o);
}

static void cuda_matmul_forward(const df_backend *be, float *c, const float *a, const float *b, int64_t batch,
                                int64_t m, int64_t n, int64_t k, int trans_a, int trans_b)
{
	dfi_cuda_gemm(c, a, b, batch, m, n, k, trans_a, trans_b, 1.0f, 0.0f);
}

static void cuda_matmul_backward(const df_backend *be, float *da, float *db, const float *dc, const float *a,
                                 const float *b, int64_t batch, int64_t m, int64_t n, int64_t k, int trans_a,
                                 int trans_b)
{
	if (da) {
		if (!trans_a) /* da (m, k) += dc op(b)^T */
			dfi_cuda_gemm(da, dc, b, batch, m, k, n, 0, !trans_b, 1.0f, 1.0f);
		else /* da (k, m) += op(b) dc^T */
			dfi_cuda_gemm(da, b, dc, batch, k, m, n, trans_b, 1, 1.0f, 1.0f);
	}
	if (db) {
		if (!trans_b) /* db (k, n) += op(a)^T dc */
			dfi_cuda_gemm(db, a, dc, batch, k, n, m, !trans_a, 0, 1.0f, 1.0f);
		else /* db (n, k) += dc^T op(a) */
			dfi_cuda_gemm(db, dc, a, batch, n, k, m, 1, trans_a, 1.0f, 1.0f);
	}
}

/* ---- convolution: cuDNN (conv.cu), else im2col + cuBLAS per image ------ */

/* col (cin kh kw, ho wo) of image x (cin, h, w). */
__global__ void im2col(float *col, const float *x, struct df_conv2d_shape s)
{
	const int64_t P = s.ho * s.wo, total = s.cin * s.kh * s.kw * P;
	for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
	     i += (int64_t)gridDim.x * blockDim.x) {
		const int64_t p = i % P, row = i / P;
		const int64_t kx = row % s.kw, ky = (row / s.kw) % s.kh, c = row / (s.kw * s.kh);
		const int64_t oy = p / s.wo, ox = p % s.wo;
		const int64_t iy = oy * s.stride - s.pad + ky, ix = ox * s.stride - s.pad + kx;
		col[i] = (iy >= 0 && iy < s.h && ix >= 0 && ix < s.w) ? x[(c * s.h + iy) * s.w + ix] : 0.0f;
	}
}

/* The output position whose kernel tap `tap` reads input position `in`
 * along one axis, or -1 when none does. */
__device__ __forceinline__ int64_t output_at(int64_t in, int64_t tap, int64_t pad, int64_t stride, int64_t out_len)
{
	const int64_t t = in + pad - tap;
	if (t < 0 || t % stride)
		return -1;
	return t / stride < out_len ? t / stride : -1;
}

/* dx (cin, h, w) += the columns that read each input element, gathered
 * (no atomics: each thread owns one input element). */
__global__ void col2im_add(float *dx, const float *col, struct df_conv2d_shape s)
{
	const int64_t P = s.ho * s.wo, total = s.cin * s.h * s.w;
	for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
	     i += (int64_t)gridDim.x * blockDim.x) {
		const int64_t ix = i % s.w, iy = (i / s.w) % s.h, c = i / (s.w * s.h);
		float acc = 0.0f;
		for (int64_t ky = 0; ky < s.kh; ky++) {
			const int64_t oy = output_at(iy, ky, s.pad, s.stride, s.ho);
			for (int64_t kx = 0; kx < s.kw && oy >= 0; kx++) {
				const int64_t ox = output_at(ix, kx, s.pad, s.stride, s.wo);
				if (ox >= 0)
					acc += col[((c * s.kh + ky) * s.kw + kx) * P + oy * s.wo + ox];
			}
		}
		dx[i] += acc;
	}
}

/* out (n, cout, P) += b per channel. */
__global__ void add_bias_channels(float *out, const float *b, int64_t n, int64_t c, int64_t P)
{
	for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n * c * P;
	     i += (int64_t)gridDim.x * blockDim.x)
		out[i] += b[(i / P) % c];
}

/* The workspace serves either path: cuDNN's (first) or im2col's columns
 * (when cuDNN declines at run time). */
static size_t im2col_bytes(const struct df_conv2d_shape *s)
{
	return 2 * (size_t)(s->cin * s->kh * s->kw) * (size_t)(s->ho * s->wo) * sizeof(float);
}

static size_t cuda_conv2d_workspace(const df_backend *be, const struct df_conv2d_shape *s)
{
	int ok;
	const size_t cudnn = dfi_cudnn_conv_workspace(s, &ok), cols = im2col_bytes(s);
	return cudnn > cols ? cudnn : cols;
}

static void cuda_conv2d_forward(const df_backend *be, const struct df_conv2d_shape *s, float *out, const float *x,
                                const float *w, const float *b, void *workspace)
{
	const int64_t K = s->cin * s->kh * s->kw, P = s->ho * s->wo;
	float *col = (float *)workspace;
	int ok;
	const size_t ws = dfi_cudnn_conv_workspace(s, &ok);
	if (ok && ws <= cuda_conv2d_workspace(be, s) && dfi_cudnn_conv_forward(s, out, x, w, workspace, ws)) {
		if (b)
			add_bias_channels<<<dfi_cuda_blocks(s->n * s->cout * P, 256), 256, 0, dfi_cuda.stream>>>(
				out, b, s->n, s->cout, P);
		return;
	}
	for (int64_t i = 0; i < s->n; i++) {
		im2col<<<dfi_cuda_blocks(K * P, 256), 256, 0, dfi_cuda.stream>>>(col, x + i * s->cin * s->h * s->w, *s);
		dfi_cuda_gemm(out + i * s->cout * P, w, col, 1, s->cout, P, K, 0, 0, 1.0f, 0.0f);
	}
	if (b)
		add_bias_channels<<<dfi_cuda_blocks(s->n * s->cout * P, 256), 256, 0, dfi_cuda.stream>>>(out, b, s->n,
		                                                                                         s->cout, P);
}

static void cuda_conv2d_backward(const df_backend *be, const struct df_conv2d_shape *s, float *dx, float *dw,
                                 float *db, const float *dout, const float *x, const float *w, void *workspace)
{
	const int64_t K = s->cin * s->kh * s->kw, P = s->ho * s->wo;
	float *col = (float *)workspace, *dcol = col + K * P;
	int ok;
	const size_t ws = dfi_cudnn_conv_workspace(s, &ok);
	/* Each gradient cuDNN computes is cleared from the fallback's list. */
	if (ok && ws <= cuda_conv2d_workspace(be, s)) {
		if (dw && dfi_cudnn_conv_backward_filter(s, dw, dout, x, workspace, ws))
			dw = NULL;
		if (dx && dfi_cudnn_conv_backward_data(s, dx, dout, w, workspace, ws))
			dx = NULL;
	}
	for (int64_t i = 0; i < s->n && (dw || dx); i++) {
		const float *dout_i = dout + i * s->cout * P;
		if (dw) { /* dw (cout, K) += dout_i (cout, P) col^T */
			im2col<<<dfi_cuda_blocks(K * P, 256), 256, 0, dfi_cuda.stream>>>(col, x + i * s->cin * s->h * s->w,
			                                                                  *s);
			dfi_cuda_gemm(dw, dout_i, col, 1, s->cout, K, P, 0, 1, 1.0f, 1.0f);
		}
		if (dx) { /* dcol (K, P) = w^T dout_i, then scattered back by gathering */
			dfi_cuda_gemm(dcol, w, dout_i, 1, K, P, s->cout, 1, 0, 1.0f, 0.0f);
			col2im_add<<<dfi_cuda_blocks(s->cin * s->h * s->w, 256), 256, 0, dfi_cuda.stream>>>(
				dx + i * s->cin * s->h * s->w, dcol, *s);
		}
	}
	if (db) /* per channel over images and positions: (n, cout, P) summed over n and P */
		dfi_cuda_channel_sums(db, dout, s->n, s->cout, P);
}

/* ---- attention: S = scale Q K^T, softmax rows, O = P V ----------------- */

/* The (sample, head) pairs of one call are processed in chunks whose score
 * blocks fit a bounded workspace. */
static int64_t attention_chunk(const struct df_attn_shape *s)
{
	const int64_t per_sample = s->heads * s->tq * s->tk;
	int64_t chunk = ((int64_t)32 << 20) / (per_sample ? per_sample : 1);
	if (chunk < 1)
		chunk = 1;
	return chunk < s->n ? chunk : s->n;
}

/* The fused path (sdpa.cu) serves bf16 autocast when asked for with
 * DIFFUSE_CUDA_ATTENTION=fused; these plain kernels run otherwise and for
 * every shape it declines. */
static int attention_fused(void)
{
	return dfi_cuda_autocast_bf16 && attention_mode_fused;
}

static size_t cuda_attention_workspace(const df_backend *be, const struct df_attn_shape *s)
{
	const int64_t chunk = attention_chunk(s);
	const size_t scores = (size_t)(chunk * s->heads * s->tq * s->tk);
	const size_t plain = 2 * scores * sizeof(float) + 7 * (size_t)(chunk * s->heads) * sizeof(float *) + 256;
	const size_t fused = attention_fused() ? dfi_sdpa_workspace(s) : 0;
	return plain > fused ? plain : fused;
}

/* ptrs[j h + hh] = base + j sample_stride + hh head_stride. */
__global__ void head_pointers(const float **ptrs, const float *base, int64_t samples, int64_t heads,
                              int64_t sample_stride, int64_t head_stride)
{
	for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < samples * heads;
	     i += (int64_t)gridDim.x * blockDim.x)
		ptrs[i] = base + (i / heads) * sample_stride + (i % heads) * head_stride;
}

static const float **pointers(const float **slot, const float *base, int64_t samples, int64_t heads,
                              int64_t sample_stride, int64_t head_stride)
{
	head_pointers<<<dfi_cuda_blocks(samples * heads, 128), 128, 0, dfi_cuda.stream>>>(slot, base, samples, heads,
	                                                                                  sample_stride, head_stride);
	return slot;
}

/* Batched column-major GEMM over pointer arrays (row-major roles swapped by
 * the callers). */
static void gemm_ptrs(cublasOperation_t ta, cublasOperation_t tb, int64_t m, int64_t n, int64_t k, float alpha,
                      const float **A, int64_t lda, const float **B, int64_t ldb, float beta, const float **C,
                      int64_t ldc, int64_t count)
{
	CUBLAS_CHECK(cublasSgemmBatched(dfi_cuda.blas, ta, tb, (int)m, (int)n, (int)k, &alpha, A, (int)lda, B,
	                                (int)ldb, &beta, (float *const *)C, (int)ldc, (int)count));
}

struct attn_ptrs {
	const float **q, **k, **v, **o, **s, **s2, **g; /* g: the gradient written */
};

static struct attn_ptrs attention_layout(const struct df_attn_shape *s, void *workspace, int64_t chunk,
                                         float **S, float **S2)
{
	const int64_t pairs = chunk * s->heads, scores = pairs * s->tq * s->tk;
	*S = (float *)workspace;
	*S2 = *S + scores;
	const float **base = (const float **)(*S2 + scores);
	struct attn_ptrs p = { base, base + pairs, base + 2 * pairs, base + 3 * pairs, base + 4 * pairs,
		               base + 5 * pairs, base + 6 * pairs };
	return p;
}

/* The pointer arrays of samples [n0, n0 + cn): q, k, v, o (out or dout)
 * per (sample, head), and the score blocks S and S2. */
static void chunk_pointers(struct attn_ptrs *p, const struct df_attn_shape *s, int64_t n0, int64_t cn,
                           const float *q, const float *k, const float *v, const float *o, float *S, float *S2)
{
	const int64_t hd = s->head_dim, block = s->tq * s->tk;
	pointers(p->q, q + n0 * s->tq * s->ldq, cn, s->heads, s->tq * s->ldq, hd);
	pointers(p->k, k + n0 * s->tk * s->ldk, cn, s->heads, s->tk * s->ldk, hd);
	pointers(p->v, v + n0 * s->tk * s->ldv, cn, s->heads, s->tk * s->ldv, hd);
	pointers(p->o, o + n0 * s->tq * s->ldo, cn, s->heads, s->tq * s->ldo, hd);
	pointers(p->s, S, cn, s->heads, s->heads * block, block);
	pointers(p->s2, S2, cn, s->heads, s->heads * block, block);
}

static void cuda_attention_forward(const df_backend *be, const struct df_attn_shape *s, float *out, float *lse,
                                   const float *q, const float *k, const float *v, void *workspace)
{
	if (attention_fused() && dfi_sdpa_forward(s, out, lse, q, k, v, workspace))
		return;
	const int64_t chunk = attention_chunk(s), hd = s->head_dim;
	float *S, *S2;
	struct attn_ptrs p = attention_layout(s, workspace, chunk, &S, &S2);
	for (int64_t n0 = 0; n0 < s->n; n0 += chunk) {
		const int64_t cn = s->n - n0 < chunk ? s->n - n0 : chunk, pairs = cn * s->heads;
		chunk_pointers(&p, s, n0, cn, q, k, v, out, S, S2);
		/* S^T (tk, tq) = K^T... column-major: S_cm = K_cm^T Q_cm */
		gemm_ptrs(CUBLAS_OP_T, CUBLAS_OP_N, s->tk, s->tq, hd, s->scale, p.k, s->ldk, p.q, s->ldq, 0.0f, p.s,
		          s->tk, pairs);
		dfi_cuda_softmax_rows_lse(S, lse ? lse + n0 * s->heads * s->tq : NULL, pairs * s->tq, s->tk);
		/* O_cm (hd, tq) = V_cm (hd, tk) P_cm (tk, tq) */
		gemm_ptrs(CUBLAS_OP_N, CUBLAS_OP_N, hd, s->tq, s->tk, 1.0f, p.v, s->ldv, p.s, s->tk, 0.0f, p.o, s->ldo,
		          pairs);
	}
}

static void cuda_attention_backward(const df_backend *be, const struct df_attn_shape *s, float *dq, float *dk,
                                    float *dv, const float *dout, const float *out, const float *lse,
                                    const float *q, const float *k, const float *v, void *workspace)
{
	if (attention_fused() && dfi_sdpa_backward(s, dq, dk, dv, dout, out, lse, q, k, v, workspace))
		return;
	const int64_t chunk = attention_chunk(s), hd = s->head_dim;
	float *S, *S2;
	struct attn_ptrs p = attention_layout(s, workspace, chunk, &S, &S2);
	for (int64_t n0 = 0; n0 < s->n; n0 += chunk) {
		const int64_t cn = s->n - n0 < chunk ? s->n - n0 : chunk, pairs = cn * s->heads;
		const int64_t qo = n0 * s->tq * s->ldq, ko = n0 * s->tk * s->ldk, vo = n0 * s->tk * s->ldv;
		const int64_t oo = n0 * s->tq * s->ldo;
		chunk_pointers(&p, s, n0, cn, q, k, v, dout, S, S2);
		/* P again from the saved logsumexp. */
		gemm_ptrs(CUBLAS_OP_T, CUBLAS_OP_N, s->tk, s->tq, hd, s->scale, p.k, s->ldk, p.q, s->ldq, 0.0f, p.s,
		          s->tk, pairs);
		dfi_cuda_attention_probabilities(S, lse + n0 * s->heads * s->tq, pairs * s->tq, s->tk);
		if (dv) { /* dV_cm (hd, tk) += dO_cm (hd, tq) P_cm^T */
			pointers(p.g, dv + vo, cn, s->heads, s->tk * s->ldv, hd);
			gemm_ptrs(CUBLAS_OP_N, CUBLAS_OP_T, hd, s->tk, s->tq, 1.0f, p.o, s->ldo, p.s, s->tk, 1.0f, p.g,
			          s->ldv, pairs);
		}
		if (!dq && !dk)
			continue;
		/* dP_cm (tk, tq) = V_cm^T dO_cm */
		gemm_ptrs(CUBLAS_OP_T, CUBLAS_OP_N, s->tk, s->tq, hd, 1.0f, p.v, s->ldv, p.o, s->ldo, 0.0f, p.s2, s->tk,
		          pairs);
		/* dS = P (dP - rowsum(dO o O)), in place of dP */
		dfi_cuda_attention_score_grads(S2, S, dout + oo, out + oo, cn, s->heads, s->tq, s->tk, hd, s->ldo);
		if (dq) { /* dQ_cm (hd, tq) += scale K_cm dS_cm */
			pointers(p.g, dq + qo, cn, s->heads, s->tq * s->ldq, hd);
			gemm_ptrs(CUBLAS_OP_N, CUBLAS_OP_N, hd, s->tq, s->tk, s->scale, p.k, s->ldk, p.s2, s->tk, 1.0f,
			          p.g, s->ldq, pairs);
		}
		if (dk) { /* dK_cm (hd, tk) += scale Q_cm dS_cm^T */
			pointers(p.g, dk + ko, cn, s->heads, s->tk * s->ldk, hd);
			gemm_ptrs(CUBLAS_OP_N, CUBLAS_OP_T, hd, s->tk, s->tq, s->scale, p.q, s->ldq, p.s2, s->tk, 1.0f,
			          p.g, s->ldk, pairs);
		}
	}
}

void dfi_cuda_install_blas(df_backend *be)
{
	be->linear_forward = cuda_linear_forward;
	be->linear_backward = cuda_linear_backward;
	be->matmul_forward = cuda_matmul_forward;
	be->matmul_backward = cuda_matmul_backward;
	be->conv2d_workspace = cuda_conv2d_workspace;
	be->conv2d_forward = cuda_conv2d_forward;
	be->conv2d_backward = cuda_conv2d_backward;
	be->attention_workspace = cuda_attention_workspace;
	be->attention_forward = cuda_attention_forward;
	be->attention_backward = cuda_attention_backward;
}

/* ---- the backend ------------------------------------------------------- */

extern "C" int dfi_backend_cuda_init(df_backend *be, char *msg, size_t msg_len)
{
	int count = 0;
	cudaError_t e = cudaGetDeviceCount(&count);
	if (e != cudaSuccess) {
		snprintf(msg, msg_len, "%s", cudaGetErrorString(e));
		return -1;
	}
	if (count == 0) {
		snprintf(msg, msg_len, "no CUDA device found");
		return -1;
	}
	if (!cuda_ready) {
		if ((e = cudaGetDevice(&dfi_cuda.device)) != cudaSuccess ||
		    (e = cudaStreamCreateWithFlags(&dfi_cuda.stream, cudaStreamNonBlocking)) != cudaSuccess) {
			snprintf(msg, msg_len, "%s", cudaGetErrorString(e));
			return -1;
		}
		cublasStatus_t st = cublasCreate(&dfi_cuda.blas);
		if (st == CUBLAS_STATUS_SUCCESS)
			st = cublasSetStream(dfi_cuda.blas, dfi_cuda.stream);
		if (st == CUBLAS_STATUS_SUCCESS)
			st = cublasLtCreate(&lt_handle);
		if (st != CUBLAS_STATUS_SUCCESS) {
			snprintf(msg, msg_len, "cuBLAS: %s", cublasGetStatusString(st));
			return -1;
		}
		cuda_ready = 1;
	}
	/* Precision is read at every context creation; it applies to every
	 * cuda context of the process from then on. */
	const char *autocast = getenv("DIFFUSE_CUDA_AUTOCAST"), *tf32 = getenv("DIFFUSE_CUDA_TF32");
	dfi_cuda_autocast_bf16 = autocast && !strcmp(autocast, "bf16");
	allow_tf32 = tf32 && !strcmp(tf32, "1");
	attention_mode_fused = dfi_sdpa_requested();
	cublasSetMathMode(dfi_cuda.blas, allow_tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH);
	memset(be, 0, sizeof *be);
	be->name = "cuda";
	be->threads = 1;
	be->alloc = cuda_alloc;
	be->free = cuda_free;
	be->to_device = cuda_to_device;
	be->to_host = cuda_to_host;
	be->copy = cuda_copy;
	be->zero = cuda_zero;
	dfi_cuda_install_blas(be);
	dfi_cuda_install_kernels(be);
	dfi_cuda_install_pool(be);
	return 0;
}

/* One line for df_ctx_describe. */
extern "C" void dfi_cuda_describe(char *buf, size_t n)
{
	cudaDeviceProp prop;
	int rt = 0;
	cudaRuntimeGetVersion(&rt);
	if (cudaGetDeviceProperties(&prop, dfi_cuda.device) != cudaSuccess) {
		snprintf(buf, n, "cuda: device %d", dfi_cuda.device);
		return;
	}
	snprintf(buf, n, "cuda: %s (sm_%d%d, %d SMs, %.0f GiB), CUDA runtime %d.%d, cuBLAS(Lt), cuDNN %zu, products %s, "
	         "attention %s",
	         prop.name, prop.major, prop.minor, prop.multiProcessorCount,
	         (double)prop.totalGlobalMem / (1u << 30), rt / 1000, (rt % 1000) / 10, cudnnGetVersion(),
	         dfi_cuda_autocast_bf16 ? "bf16 autocast" : allow_tf32 ? "tf32 allowed" : "float32",
	         attention_fused() ? "fused (cuDNN)" : "plain");
}
