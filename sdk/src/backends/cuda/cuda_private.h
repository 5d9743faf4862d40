/* Internals of the CUDA backend shared by its .cu files. Not installed. */
#ifndef DIFFUSE_CUDA_PRIVATE_H
#define DIFFUSE_CUDA_PRIVATE_H

#include <cuda_runtime.h>
#include <cublas_v2.h>
#include "backend.h"

/* One device per process: the handles every kernel family uses. */
struct dfi_cuda_state {
	int device;
	cudaStream_t stream;
	cublasHandle_t blas;
	float *scratch;       /* reduction partials, index lists; grown, never shrunk */
	size_t scratch_bytes;
};
extern struct dfi_cuda_state dfi_cuda;

/* Device scratch of at least `bytes` (NULL when out of memory). Valid until
 * the next call; kernels on the one stream keep its uses ordered. */
void *dfi_cuda_scratch(size_t bytes);

/* Grid size for n independent elements, capped for grid-stride loops. */
static inline unsigned dfi_cuda_blocks(int64_t n, int threads)
{
	int64_t b = (n + threads - 1) / threads;
	if (b < 1)
		b = 1;
	return (unsigned)(b > 65535 * 16 ? 65535 * 16 : b);
}

/* c (batch, m, n) = alpha op(a) op(b) + beta c, row-major, with the given
 * leading dimensions and batch strides (the cuBLAS call behind every
 * product of the backend). */
void dfi_cuda_gemm(float *c, const float *a, const float *b, int64_t batch, int64_t m, int64_t n, int64_t k,
                   int trans_a, int trans_b, float alpha, float beta);

/* Sums in a fixed order (kernels.cu), accumulated into out:
 * column sums out (batch, cols) += sum over rows of x (batch, rows, cols),
 * channel sums out (c) += sum over n and s of x (n, c, s). */
void dfi_cuda_column_sums(float *out, const float *x, int64_t batch, int64_t rows, int64_t cols);
void dfi_cuda_channel_sums(float *out, const float *x, int64_t n, int64_t c, int64_t s);

/* Kernels of kernels.cu on score blocks. */
void dfi_cuda_softmax_rows_lse(float *p, float *lse, int64_t rows, int64_t d);
void dfi_cuda_attention_probabilities(float *p, const float *lse, int64_t rows, int64_t d);
void dfi_cuda_attention_score_grads(float *dp, const float *p, const float *dout, const float *out,
                                               int64_t samples, int64_t heads, int64_t tq, int64_t tk, int64_t hd,
                                               int64_t ldo);

/* Whether float32 products may use TF32 (DIFFUSE_CUDA_TF32=1). */
int dfi_cuda_allow_tf32(void);

/* conv2d through cuDNN (conv.cu); each returns 0 when cuDNN declines,
 * and the caller falls back to im2col + cuBLAS. Backward accumulates. */
size_t dfi_cudnn_conv_workspace(const struct df_conv2d_shape *s, int *ok);
int dfi_cudnn_conv_forward(const struct df_conv2d_shape *s, float *out, const float *x, const float *w,
                           void *workspace, size_t workspace_bytes);
int dfi_cudnn_conv_backward_filter(const struct df_conv2d_shape *s, float *dw, const float *dout, const float *x,
                                   void *workspace, size_t workspace_bytes);
int dfi_cudnn_conv_backward_data(const struct df_conv2d_shape *s, float *dx, const float *dout, const float *w,
                                 void *workspace, size_t workspace_bytes);

/* Attention through cuDNN's fused SDPA (sdpa.cu), for bf16 autocast when
 * DIFFUSE_CUDA_ATTENTION=fused: dfi_sdpa_requested says whether it was
 * asked for; the workspace is 0 and the calls return 0 when the fused
 * path declines a shape (the plain kernels then run). The backward
 * accumulates, as every backward slot does. */
int dfi_sdpa_requested(void);
size_t dfi_sdpa_workspace(const struct df_attn_shape *s);
int dfi_sdpa_forward(const struct df_attn_shape *s, float *out, float *lse, const float *q, const float *k,
                     const float *v, void *workspace);
int dfi_sdpa_backward(const struct df_attn_shape *s, float *dq, float *dk, float *dv, const float *dout,
                      const float *out, const float *lse, const float *q, const float *k, const float *v,
                      void *workspace);

/* Each family fills its slots. */
void dfi_cuda_install_blas(df_backend *be);
void dfi_cuda_install_kernels(df_backend *be);
void dfi_cuda_install_pool(df_backend *be); /* pool.cu: relu, windowed pooling */

#endif
