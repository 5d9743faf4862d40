/* CPU kernels for the spatial, pointwise-math and loss ops: plain functions
 * on raw float pointers and sizes, in llm.c's manner. A forward keeps what
 * its backward needs (group statistics, row log-sum-exps); a backward ADDS
 * into every gradient pointer it is given, and skips the NULL ones, so the
 * tape can accumulate gradients from several consumers.
 *
 * Each matches its slot in struct df_backend (backend.h) and is installed
 * by dfi_cpu_install_spatial(); the kernel test calls them directly. */
#ifndef DIFFUSE_CPU_SPATIAL_KERNELS_H
#define DIFFUSE_CPU_SPATIAL_KERNELS_H

#include <stddef.h>
#include <stdint.h>
#include "../../backend.h"

/* ---- Group normalisation, resampling (spatial.c) ------------------- */
void dfi_cpu_groupnorm_forward(const df_backend *be, float *out, float *mean, float *rstd, const float *x,
                               const float *w, const float *b, int64_t n, int64_t c, int64_t s, int64_t groups,
                               float eps);
void dfi_cpu_groupnorm_backward(const df_backend *be, float *dx, float *dw, float *db, const float *dout,
                                const float *x, const float *mean, const float *rstd, const float *w, int64_t n,
                                int64_t c, int64_t s, int64_t groups);
void dfi_cpu_upsample_nearest2x_forward(const df_backend *be, float *out, const float *x, int64_t planes,
                                        int64_t h, int64_t w);
void dfi_cpu_upsample_nearest2x_backward(const df_backend *be, float *dx, const float *dout, int64_t planes,
                                         int64_t h, int64_t w);
/* A remainder of h or w beyond a multiple of k is dropped, as PyTorch's
 * AvgPool2d does. */
void dfi_cpu_avgpool2d_forward(const df_backend *be, float *out, const float *x, int64_t planes, int64_t h,
                               int64_t w, int64_t k);
void dfi_cpu_avgpool2d_backward(const df_backend *be, float *dx, const float *dout, int64_t planes, int64_t h,
                                int64_t w, int64_t k);

/* ---- 2-D convolution (conv.c) ----------------------------------------
 * The im2col buffer holds a tile of output rows of one image, at most
 * DFI_CPU_CONV2D_TILE_FLOATS floats unless a single output row needs more,
 * so memory stays bounded at VAE and UNet resolutions. */
#ifndef DFI_CPU_CONV2D_TILE_FLOATS /* the kernel test shrinks it to force many tiles */
#define DFI_CPU_CONV2D_TILE_FLOATS ((int64_t)1 << 21) /* 8 MiB */
#endif
/* Bytes of workspace: one tile, or one per thread when the batch is split
 * over threads (0 for 1x1 convolutions with stride 1 and no padding, which
 * multiply the input directly). */
size_t dfi_cpu_conv2d_workspace(const df_backend *be, const struct df_conv2d_shape *s);
void dfi_cpu_conv2d_forward(const df_backend *be, const struct df_conv2d_shape *s, float *out, const float *x,
                            const float *w, const float *b, void *workspace);
void dfi_cpu_conv2d_backward(const df_backend *be, const struct df_conv2d_shape *s, float *dx, float *dw,
                             float *db, const float *dout, const float *x, const float *w, void *workspace);

/* ---- Pointwise math (pointwise_math.c) --------------------------------
 * fn is an enum df_unary_fn; `saved` is the forward's output for exp and
 * tanh, its input for log and softplus. */
void dfi_cpu_unary_forward(const df_backend *be, int fn, float *out, const float *x, int64_t n);
void dfi_cpu_unary_backward(const df_backend *be, int fn, float *dx, const float *dout, const float *saved,
                            int64_t n);
void dfi_cpu_softmax_forward(const df_backend *be, float *out, const float *x, int64_t rows, int64_t d);
void dfi_cpu_softmax_backward(const df_backend *be, float *dx, const float *dout, const float *out, int64_t rows,
                              int64_t d);
void dfi_cpu_dropout_forward(const df_backend *be, float *out, const float *x, int64_t n, float p, uint64_t seed,
                             uint64_t stream, uint64_t step);
void dfi_cpu_dropout_backward(const df_backend *be, float *dx, const float *dout, int64_t n, float p,
                              uint64_t seed, uint64_t stream, uint64_t step);

/* ---- Losses (losses.c) --------------------------------------------------
 * normal_kl: elementwise KL(N(m1, e^lv1) || N(m2, e^lv2)) in nats. The
 * discretised Gaussian log-likelihood is guided-diffusion's, in float32 as
 * there: x in [-1, 1] on bins of width 2/255, the tanh approximation of the
 * normal CDF, open edge bins below -0.999 and above 0.999, logs clamped at
 * 1e-12. Cross-entropy keeps each row's log-sum-exp (lse may be NULL). */
void dfi_cpu_normal_kl_forward(const df_backend *be, float *out, const float *m1, const float *lv1,
                               const float *m2, const float *lv2, int64_t n);
void dfi_cpu_normal_kl_backward(const df_backend *be, float *dm1, float *dlv1, float *dm2, float *dlv2,
                                const float *dout, const float *m1, const float *lv1, const float *m2,
                                const float *lv2, int64_t n);
void dfi_cpu_discretized_gaussian_loglik_forward(const df_backend *be, float *out, const float *x,
                                                 const float *mean, const float *log_scale, int64_t n);
void dfi_cpu_discretized_gaussian_loglik_backward(const df_backend *be, float *dx, float *dmean,
                                                  float *dlog_scale, const float *dout, const float *x,
                                                  const float *mean, const float *log_scale, int64_t n);
void dfi_cpu_cross_entropy_forward(const df_backend *be, float *out, float *lse, const float *logits,
                                   const int32_t *labels, int64_t rows, int64_t k);
void dfi_cpu_cross_entropy_backward(const df_backend *be, float *dlogits, const float *dout, const float *logits,
                                    const float *lse, const int32_t *labels, int64_t rows, int64_t k);

#endif
