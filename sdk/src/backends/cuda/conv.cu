/* conv2d through cuDNN (the legacy convolution API, still in cuDNN 9):
 * fixed algorithms so the workspace is known before the call and the
 * gradients are deterministic (implicit precomputed GEMM forward, ALGO_1
 * for the data and filter gradients, neither of which uses atomics).
 * Products are float32 (FMA math) unless TF32 is allowed. Every function
 * returns 0 when cuDNN declines, and cuda.cu falls back to im2col + cuBLAS. */
#include "config.h"

#include <cudnn.h>

#include "cuda_private.h"

/* cuDNN 9 marks the legacy API deprecated; it is what fits fixed,
 * deterministic algorithms with a workspace known in advance. */
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
#pragma nv_diag_suppress 1444

static cudnnHandle_t handle;
static int handle_state; /* 0 untried, 1 ready, -1 unavailable */

static const cudnnConvolutionFwdAlgo_t fwd_algo = CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM;
static const cudnnConvolutionBwdDataAlgo_t data_algo = CUDNN_CONVOLUTION_BWD_DATA_ALGO_1;
static const cudnnConvolutionBwdFilterAlgo_t filter_algo = CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1;

struct conv_desc {
	cudnnTensorDescriptor_t x, y;
	cudnnFilterDescriptor_t w;
	cudnnConvolutionDescriptor_t conv;
};

static void conv_desc_destroy(struct conv_desc *d)
{
	if (d->x)
		cudnnDestroyTensorDescriptor(d->x);
	if (d->y)
		cudnnDestroyTensorDescriptor(d->y);
	if (d->w)
		cudnnDestroyFilterDescriptor(d->w);
	if (d->conv)
		cudnnDestroyConvolutionDescriptor(d->conv);
}

/* Descriptors of shape s; 0 when cuDNN is unavailable or declines. */
static int conv_desc_make(struct conv_desc *d, const struct df_conv2d_shape *s)
{
	*d = (struct conv_desc){ 0, 0, 0, 0 };
	if (handle_state == 0) {
		handle_state = cudnnCreate(&handle) == CUDNN_STATUS_SUCCESS &&
		                               cudnnSetStream(handle, dfi_cuda.stream) == CUDNN_STATUS_SUCCESS
		                       ? 1
		                       : -1;
	}
	if (handle_state != 1 || s->n > INT32_MAX || s->n * s->cin * s->h * s->w > INT32_MAX ||
	    s->n * s->cout * s->ho * s->wo > INT32_MAX)
		return 0;
	const cudnnMathType_t math = dfi_cuda_allow_tf32() ? CUDNN_DEFAULT_MATH : CUDNN_FMA_MATH;
	int ok = cudnnCreateTensorDescriptor(&d->x) == CUDNN_STATUS_SUCCESS &&
	         cudnnCreateTensorDescriptor(&d->y) == CUDNN_STATUS_SUCCESS &&
	         cudnnCreateFilterDescriptor(&d->w) == CUDNN_STATUS_SUCCESS &&
	         cudnnCreateConvolutionDescriptor(&d->conv) == CUDNN_STATUS_SUCCESS &&
	         cudnnSetTensor4dDescriptor(d->x, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, (int)s->n, (int)s->cin, (int)s->h,
	                                    (int)s->w) == CUDNN_STATUS_SUCCESS &&
	         cudnnSetTensor4dDescriptor(d->y, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, (int)s->n, (int)s->cout,
	                                    (int)s->ho, (int)s->wo) == CUDNN_STATUS_SUCCESS &&
	         cudnnSetFilter4dDescriptor(d->w, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW, (int)s->cout, (int)s->cin,
	                                    (int)s->kh, (int)s->kw) == CUDNN_STATUS_SUCCESS &&
	         cudnnSetConvolution2dDescriptor(d->conv, (int)s->pad, (int)s->pad, (int)s->stride, (int)s->stride, 1, 1,
	                                         CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT) == CUDNN_STATUS_SUCCESS &&
	         cudnnSetConvolutionMathType(d->conv, math) == CUDNN_STATUS_SUCCESS;
	if (!ok)
		conv_desc_destroy(d);
	return ok;
}

/* Workspace bytes of the three fixed algorithms; 0 with *ok = 0 when cuDNN
 * declines the shape. */
size_t dfi_cudnn_conv_workspace(const struct df_conv2d_shape *s, int *ok)
{
	struct conv_desc d;
	size_t fwd = 0, data = 0, filter = 0;
	*ok = conv_desc_make(&d, s);
	if (!*ok)
		return 0;
	*ok = cudnnGetConvolutionForwardWorkspaceSize(handle, d.x, d.w, d.conv, d.y, fwd_algo, &fwd) ==
	              CUDNN_STATUS_SUCCESS &&
	      cudnnGetConvolutionBackwardDataWorkspaceSize(handle, d.w, d.y, d.conv, d.x, data_algo, &data) ==
	              CUDNN_STATUS_SUCCESS &&
	      cudnnGetConvolutionBackwardFilterWorkspaceSize(handle, d.x, d.y, d.conv, d.w, filter_algo, &filter) ==
	              CUDNN_STATUS_SUCCESS;
	conv_desc_destroy(&d);
	size_t most = fwd > data ? fwd : data;
	return filter > most ? filter : most;
}

int dfi_cudnn_conv_forward(const struct df_conv2d_shape *s, float *out, const float *x, const float *w,
                           void *workspace, size_t workspace_bytes)
{
	struct conv_desc d;
	if (!conv_desc_make(&d, s))
		return 0;
	const float one = 1.0f, zero = 0.0f;
	const int ok = cudnnConvolutionForward(handle, &one, d.x, x, d.w, w, d.conv, fwd_algo, workspace,
	                                       workspace_bytes, &zero, d.y, out) == CUDNN_STATUS_SUCCESS;
	conv_desc_destroy(&d);
	return ok;
}

/* One gradient, accumulated (beta 1: the backend's gradients add up):
 * dw from dout and x when `filter`, else dx from dout and w. */
static int conv_backward(const struct df_conv2d_shape *s, int filter, float *grad, const float *dout,
                         const float *operand, void *workspace, size_t workspace_bytes)
{
	struct conv_desc d;
	if (!conv_desc_make(&d, s))
		return 0;
	const float one = 1.0f;
	const cudnnStatus_t st =
		filter ? cudnnConvolutionBackwardFilter(handle, &one, d.x, operand, d.y, dout, d.conv, filter_algo,
		                                        workspace, workspace_bytes, &one, d.w, grad)
		       : cudnnConvolutionBackwardData(handle, &one, d.w, operand, d.y, dout, d.conv, data_algo, workspace,
		                                      workspace_bytes, &one, d.x, grad);
	conv_desc_destroy(&d);
	return st == CUDNN_STATUS_SUCCESS;
}

int dfi_cudnn_conv_backward_filter(const struct df_conv2d_shape *s, float *dw, const float *dout, const float *x,
                                   void *workspace, size_t workspace_bytes)
{
	return conv_backward(s, 1, dw, dout, x, workspace, workspace_bytes);
}

int dfi_cudnn_conv_backward_data(const struct df_conv2d_shape *s, float *dx, const float *dout, const float *w,
                                 void *workspace, size_t workspace_bytes)
{
	return conv_backward(s, 0, dx, dout, w, workspace, workspace_bytes);
}
