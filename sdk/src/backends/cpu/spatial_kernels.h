/* CPU kernels for the spatial, pointwise-math and loss ops: plain functions
 * on raw float pointers and sizes, in llm.c's manner. A forward keeps what
 * its backward needs (group statistics, row log-sum-exps); a backward ADDS
 * into every gradient pointer it is given, and skips the NULL ones, so the
 * tape can accumulate gradients from several consumers.
 *
 * Private to libdiffuse: the names carry no df_ prefix, so they are not
 * exported. */
#ifndef DIFFUSE_CPU_SPATIAL_KERNELS_H
#define DIFFUSE_CPU_SPATIAL_KERNELS_H

#include <stddef.h>
#include <stdint.h>

/* ---- Group normalisation -------------------------------------------
 * x (n, c, s): s is the product of the spatial dims; `groups` divides c.
 * w, b (c) or NULL (no affine). mean and rstd receive n * groups values. */
void cpu_groupnorm_forward(float *out, float *mean, float *rstd, const float *x,
			   const float *w, const float *b, int64_t n, int64_t c,
			   int64_t s, int64_t groups, float eps);
void cpu_groupnorm_backward(float *dx, float *dw, float *db, const float *dout,
			    const float *x, const float *mean, const float *rstd,
			    const float *w, int64_t n, int64_t c, int64_t s, int64_t groups);

/* ---- 2-D convolution (NCHW, weights (cout, cin, kh, kw)) -------------
 * The im2col buffer holds a tile of output rows of one image, at most
 * CPU_CONV2D_SCRATCH_FLOATS floats unless a single output row needs more,
 * so memory stays bounded at VAE and UNet resolutions. */
#ifndef CPU_CONV2D_SCRATCH_FLOATS /* tests shrink it to force many tiles */
#define CPU_CONV2D_SCRATCH_FLOATS ((int64_t)1 << 21) /* 8 MiB */
#endif

struct cpu_conv2d_shape {
	int64_t n, cin, h, w;     /* input */
	int64_t cout, kh, kw;     /* weights */
	int64_t stride, pad;
	int64_t ho, wo;           /* output, from cpu_conv2d_shape_init */
};

/* Fills ho and wo; returns 0, or -1 when the geometry gives no output. */
int cpu_conv2d_shape_init(struct cpu_conv2d_shape *s);
/* Floats of scratch the forward and backward need (0 for 1x1 convolutions
 * with stride 1 and no padding, which multiply the input directly). */
int64_t cpu_conv2d_scratch_floats(const struct cpu_conv2d_shape *s);
void cpu_conv2d_forward(float *out, const float *x, const float *w, const float *b,
			const struct cpu_conv2d_shape *s, float *scratch);
void cpu_conv2d_backward(float *dx, float *dw, float *db, const float *dout,
			 const float *x, const float *w, const struct cpu_conv2d_shape *s,
			 float *scratch);

/* ---- Resampling on (planes, h, w), planes = n * c --------------------- */
void cpu_upsample_nearest2x_forward(float *out, const float *x, int64_t planes,
				    int64_t h, int64_t w);
void cpu_upsample_nearest2x_backward(float *dx, const float *dout, int64_t planes,
				     int64_t h, int64_t w);
/* kernel = stride, no padding; output (h / k, w / k), a remainder is
 * dropped as PyTorch's AvgPool2d does. */
void cpu_avgpool2d_forward(float *out, const float *x, int64_t planes, int64_t h,
			   int64_t w, int64_t k);
void cpu_avgpool2d_backward(float *dx, const float *dout, int64_t planes, int64_t h,
			    int64_t w, int64_t k);

/* ---- Pointwise math on n elements ------------------------------------
 * Backwards take the forward's output where it suffices (exp, tanh). */
void cpu_exp_forward(float *out, const float *x, int64_t n);
void cpu_exp_backward(float *dx, const float *dout, const float *out, int64_t n);
void cpu_log_forward(float *out, const float *x, int64_t n);
void cpu_log_backward(float *dx, const float *dout, const float *x, int64_t n);
void cpu_softplus_forward(float *out, const float *x, int64_t n);
void cpu_softplus_backward(float *dx, const float *dout, const float *x, int64_t n);
void cpu_tanh_forward(float *out, const float *x, int64_t n);
void cpu_tanh_backward(float *dx, const float *dout, const float *out, int64_t n);

/* Softmax over rows of length d. */
void cpu_softmax_forward(float *out, const float *x, int64_t rows, int64_t d);
void cpu_softmax_backward(float *dx, const float *dout, const float *out,
			  int64_t rows, int64_t d);

/* Dropout: element i is kept when the Philox uniform at (seed, stream,
 * step, i) is below 1 - p, and scaled by 1 / (1 - p); p >= 1 drops all.
 * The backward draws the same mask again instead of storing it. */
void cpu_dropout_forward(float *out, const float *x, int64_t n, float p,
			 uint64_t seed, uint64_t stream, uint64_t step);
void cpu_dropout_backward(float *dx, const float *dout, int64_t n, float p,
			  uint64_t seed, uint64_t stream, uint64_t step);

/* ---- Losses -------------------------------------------------------------
 * normal_kl: elementwise KL(N(m1, e^lv1) || N(m2, e^lv2)) in nats. */
void cpu_normal_kl_forward(float *out, const float *m1, const float *lv1,
			   const float *m2, const float *lv2, int64_t n);
void cpu_normal_kl_backward(float *dm1, float *dlv1, float *dm2, float *dlv2,
			    const float *dout, const float *m1, const float *lv1,
			    const float *m2, const float *lv2, int64_t n);
/* Discretised Gaussian log-likelihood of x in [-1, 1] on 255 bins of width
 * 2/255 under N(mean, exp(log_scale)^2), guided-diffusion's definition. */
void cpu_discretized_gaussian_loglik_forward(float *out, const float *x,
					     const float *mean, const float *log_scale,
					     int64_t n);
void cpu_discretized_gaussian_loglik_backward(float *dx, float *dmean, float *dlog_scale,
					      const float *dout, const float *x,
					      const float *mean, const float *log_scale,
					      int64_t n);
/* Cross-entropy of logits (rows, k) against labels in [0, k): out (rows);
 * lse (rows) keeps each row's log-sum-exp for the backward. */
void cpu_cross_entropy_forward(float *out, float *lse, const float *logits,
			       const int32_t *labels, int64_t rows, int64_t k);
void cpu_cross_entropy_backward(float *dlogits, const float *dout, const float *logits,
				const float *lse, const int32_t *labels, int64_t rows,
				int64_t k);

#endif
