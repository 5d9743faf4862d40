/* The backend boundary (private to the SDK).
 *
 * A backend owns tensor memory and implements every kernel. The op layer
 * (sdk/src/ops/) checks shapes, records the tape and calls these slots with
 * raw pointers and sizes, as llm.c's layer functions take them; it never
 * reads or writes tensor memory itself. A new device (cuda) is a new folder
 * sdk/src/backends/<name>/ filling this struct, nothing else.
 *
 * Conventions for every kernel:
 *   - pointers are backend memory, sizes are element counts;
 *   - backward kernels ACCUMULATE (+=) into every gradient they are given,
 *     and skip a gradient passed as NULL (an input that needs none);
 *   - optional saved outputs (layernorm statistics, attention logsumexp)
 *     may be NULL in inference, and then are not written.
 */
#ifndef DIFFUSE_BACKEND_H
#define DIFFUSE_BACKEND_H

#include <stddef.h>
#include <stdint.h>
#include "diffuse/tensor.h"

/* Strided copies (permute, slice, concat, patchify, ...) take up to this
 * many dims: patchify is a 6-d permute. */
#define DF_COPY_MAX_DIMS 8

/* A broadcast elementwise op: out has shape[0..ndim) (contiguous); a and b
 * are read at their own element strides, 0 along a broadcast dim. */
struct df_bcast {
	int ndim;
	int64_t shape[DF_MAX_DIMS];
	int64_t a_stride[DF_MAX_DIMS];
	int64_t b_stride[DF_MAX_DIMS];
	int64_t numel;
	int same_shape; /* a, b and out all contiguous with out's shape */
};

enum df_binary_op { DF_BINARY_ADD, DF_BINARY_SUB, DF_BINARY_MUL };

/* Multi-head attention on (N, T, D)-shaped rows that may be strided (the
 * fused qkv layout has rows of 3D). Head h uses features [h hd, (h+1) hd). */
struct df_attn_shape {
	int64_t n, tq, tk, heads, head_dim;
	int64_t ldq, ldk, ldv, ldo; /* row strides in floats */
	float scale;                /* 1 / sqrt(head_dim) */
};

/* A 2-D convolution: input (n, cin, h, w), weights (cout, cin, kh, kw),
 * output (n, cout, ho, wo), ho = (h + 2 pad - kh) / stride + 1. */
struct df_conv2d_shape {
	int64_t n, cin, h, w;
	int64_t cout, kh, kw;
	int64_t stride, pad;
	int64_t ho, wo;
};

/* Windowed pooling over planes (n * c images of h x w): square windows of
 * `kernel` every `stride`, `pad` rows and columns of padding on each side,
 * output (ho, wo) = ((h + 2 pad - kernel) / stride + 1, likewise). Max
 * pooling never picks the padding; average pooling divides by kernel^2
 * when count_pad, else by the window's cells inside the image. */
struct df_pool2d_shape {
	int64_t planes, h, w;
	int64_t kernel, stride, pad;
	int64_t ho, wo;
	int count_pad;
};

/* The pointwise functions of unary_forward / unary_backward. */
enum df_unary_fn { DF_UNARY_EXP, DF_UNARY_LOG, DF_UNARY_SOFTPLUS, DF_UNARY_TANH };

/* The float factors of one AdamW step, formed on the host in double as
 * df_adamw_step forms them (diffuse/optim.h). */
struct df_adamw_factors {
	float decay_factor; /* 1 - lr wd */
	int decays;         /* wd != 0 */
	float w1, b2, w2;   /* 1 - beta1, beta2, 1 - beta2 */
	float bias2_sqrt;   /* sqrt(1 - beta2^t) */
	float eps;
	float neg_step;     /* -lr / (1 - beta1^t) */
};

struct df_backend {
	const char *name;
	int threads; /* worker threads for this context */

	/* ---- memory ---- */
	void *(*alloc)(const df_backend *be, size_t bytes); /* 64-byte aligned; NULL when out of memory */
	void (*free)(const df_backend *be, void *p);
	void (*to_device)(const df_backend *be, void *dst, const void *host_src, size_t bytes);
	void (*to_host)(const df_backend *be, void *host_dst, const void *src, size_t bytes);
	void (*copy)(const df_backend *be, void *dst, const void *src, size_t bytes);
	void (*zero)(const df_backend *be, void *p, size_t bytes);

	/* ---- matmul family (backends/cpu/matmul.c) ---- */
	/* out (m, o) = x (m, i) w^T + b; b may be NULL. */
	void (*linear_forward)(const df_backend *be, float *out, const float *x, const float *w, const float *b,
	                       int64_t m, int64_t in, int64_t o);
	void (*linear_backward)(const df_backend *be, float *dx, float *dw, float *db, const float *dout,
	                        const float *x, const float *w, int64_t m, int64_t in, int64_t o);
	/* c (batch, m, n) = op(a) op(b); op(a) is (m, k), op(b) is (k, n). */
	void (*matmul_forward)(const df_backend *be, float *c, const float *a, const float *b, int64_t batch,
	                       int64_t m, int64_t n, int64_t k, int trans_a, int trans_b);
	void (*matmul_backward)(const df_backend *be, float *da, float *db, const float *dc, const float *a,
	                        const float *b, int64_t batch, int64_t m, int64_t n, int64_t k, int trans_a,
	                        int trans_b);

	/* ---- elementwise family (backends/cpu/elementwise.c) ---- */
	void (*binary_forward)(const df_backend *be, int op, float *out, const float *a, const float *b,
	                       const struct df_bcast *bc);
	/* Reduces over the broadcast dims of a and b. */
	void (*binary_backward)(const df_backend *be, int op, float *da, float *db, const float *dout,
	                        const float *a, const float *b, const struct df_bcast *bc);
	/* out = mul x + add (scale, add_scalar); backward dx += mul dout. */
	void (*affine_forward)(const df_backend *be, float *out, const float *x, float mul, float add, int64_t n);
	void (*affine_backward)(const df_backend *be, float *dx, const float *dout, float mul, int64_t n);
	/* x (n, t, d); shift, scale (n, d). */
	void (*modulate_forward)(const df_backend *be, float *out, const float *x, const float *shift,
	                         const float *scale, int64_t n, int64_t t, int64_t d);
	void (*modulate_backward)(const df_backend *be, float *dx, float *dshift, float *dscale, const float *dout,
	                          const float *x, const float *scale, int64_t n, int64_t t, int64_t d);
	/* out = r + gate x; gate (n, d). */
	void (*gated_residual_forward)(const df_backend *be, float *out, const float *r, const float *gate,
	                               const float *x, int64_t n, int64_t t, int64_t d);
	void (*gated_residual_backward)(const df_backend *be, float *dr, float *dgate, float *dx,
	                                const float *dout, const float *gate, const float *x, int64_t n,
	                                int64_t t, int64_t d);

	/* ---- normalisation family (backends/cpu/norm.c) ---- */
	/* rows of length d; w, b may be NULL; mean, rstd (rows) may be NULL. */
	void (*layernorm_forward)(const df_backend *be, float *out, float *mean, float *rstd, const float *x,
	                          const float *w, const float *b, int64_t rows, int64_t d, float eps);
	void (*layernorm_backward)(const df_backend *be, float *dx, float *dw, float *db, const float *dout,
	                           const float *x, const float *w, const float *mean, const float *rstd,
	                           int64_t rows, int64_t d);
	/* x (n, t, d), shift and scale (n, d): norm(x) (1 + scale) + shift. */
	void (*layernorm_modulate_forward)(const df_backend *be, float *out, float *mean, float *rstd,
	                                   const float *x, const float *shift, const float *scale, int64_t n,
	                                   int64_t t, int64_t d, float eps);
	void (*layernorm_modulate_backward)(const df_backend *be, float *dx, float *dshift, float *dscale,
	                                    const float *dout, const float *x, const float *scale,
	                                    const float *mean, const float *rstd, int64_t n, int64_t t,
	                                    int64_t d);

	/* ---- attention (backends/cpu/attention.c) ---- */
	/* Bytes of workspace the kernels need for this shape. */
	size_t (*attention_workspace)(const df_backend *be, const struct df_attn_shape *s);
	/* lse (n, heads, tq) may be NULL (inference). */
	void (*attention_forward)(const df_backend *be, const struct df_attn_shape *s, float *out, float *lse,
	                          const float *q, const float *k, const float *v, void *workspace);
	void (*attention_backward)(const df_backend *be, const struct df_attn_shape *s, float *dq, float *dk,
	                           float *dv, const float *dout, const float *out, const float *lse,
	                           const float *q, const float *k, const float *v, void *workspace);

	/* ---- activations (backends/cpu/activation.c) ---- */
	void (*gelu_forward)(const df_backend *be, float *out, const float *x, int64_t n, int tanh_approx);
	void (*gelu_backward)(const df_backend *be, float *dx, const float *dout, const float *x, int64_t n,
	                      int tanh_approx);
	void (*silu_forward)(const df_backend *be, float *out, const float *x, int64_t n);
	void (*silu_backward)(const df_backend *be, float *dx, const float *dout, const float *x, int64_t n);

	/* ---- embedding (backends/cpu/embedding.c); ids are host memory ---- */
	void (*embedding_forward)(const df_backend *be, float *out, const float *table, const int32_t *ids,
	                          int64_t n, int64_t d);
	void (*embedding_backward)(const df_backend *be, float *dtable, const float *dout, const int32_t *ids,
	                           int64_t n, int64_t d);

	/* ---- shapes (backends/cpu/shape.c) ---- */
	/* dst[idx . dst_stride] (+)= src[idx . src_stride] over shape[0..ndim). */
	void (*strided_copy)(const df_backend *be, float *dst, const float *src, int ndim, const int64_t *shape,
	                     const int64_t *dst_stride, const int64_t *src_stride, int accumulate);

	/* ---- reductions and losses (backends/cpu/reduce.c) ---- */
	/* out[r] = scale * sum_c x[r, c]; backward dx[r, c] += scale * dout[r]. */
	void (*sum_rows_forward)(const df_backend *be, float *out, const float *x, int64_t rows, int64_t cols,
	                         float scale);
	void (*sum_rows_backward)(const df_backend *be, float *dx, const float *dout, int64_t rows, int64_t cols,
	                          float scale);
	/* out[r] = mean_c (a - b)^2. */
	void (*mse_rows_forward)(const df_backend *be, float *out, const float *a, const float *b, int64_t rows,
	                         int64_t cols);
	void (*mse_rows_backward)(const df_backend *be, float *da, float *db, const float *dout, const float *a,
	                          const float *b, int64_t rows, int64_t cols);
	/* out[r] = a.b / (max(|a|, eps) max(|b|, eps)) over rows of d. */
	void (*cosine_forward)(const df_backend *be, float *out, const float *a, const float *b, int64_t rows,
	                       int64_t d, float eps);
	void (*cosine_backward)(const df_backend *be, float *da, float *db, const float *dout, const float *a,
	                        const float *b, int64_t rows, int64_t d, float eps);

	/* ================================================================ */
	/* Spatial and pointwise-function slots (groupnorm, conv2d, upsample,
	 * avgpool, exp, log, softplus, tanh, softmax, dropout, normal_kl,
	 * discretized_gaussian_loglik, cross_entropy) are appended BELOW this
	 * line, each family in its own block, kernels in their own files
	 * under backends/cpu/. Keep new slots at the end of the struct. */
	/* ================================================================ */

	/* ---- spatial (backends/cpu/spatial.c, conv.c) ---- */
	/* x (n, c, s), s the product of the spatial dims, in `groups` groups
	 * of c / groups channels; w, b (c) may be NULL; mean, rstd
	 * (n * groups) may be NULL (inference). */
	void (*groupnorm_forward)(const df_backend *be, float *out, float *mean, float *rstd, const float *x,
	                          const float *w, const float *b, int64_t n, int64_t c, int64_t s, int64_t groups,
	                          float eps);
	void (*groupnorm_backward)(const df_backend *be, float *dx, float *dw, float *db, const float *dout,
	                           const float *x, const float *mean, const float *rstd, const float *w, int64_t n,
	                           int64_t c, int64_t s, int64_t groups);
	/* NCHW convolution, w (cout, cin, kh, kw), b (cout) or NULL. */
	size_t (*conv2d_workspace)(const df_backend *be, const struct df_conv2d_shape *s);
	void (*conv2d_forward)(const df_backend *be, const struct df_conv2d_shape *s, float *out, const float *x,
	                       const float *w, const float *b, void *workspace);
	void (*conv2d_backward)(const df_backend *be, const struct df_conv2d_shape *s, float *dx, float *dw,
	                        float *db, const float *dout, const float *x, const float *w, void *workspace);
	/* planes = n * c images of (h, w). */
	void (*upsample_nearest2x_forward)(const df_backend *be, float *out, const float *x, int64_t planes,
	                                   int64_t h, int64_t w);
	void (*upsample_nearest2x_backward)(const df_backend *be, float *dx, const float *dout, int64_t planes,
	                                    int64_t h, int64_t w);
	/* kernel = stride = k, output (h / k, w / k). */
	void (*avgpool2d_forward)(const df_backend *be, float *out, const float *x, int64_t planes, int64_t h,
	                          int64_t w, int64_t k);
	void (*avgpool2d_backward)(const df_backend *be, float *dx, const float *dout, int64_t planes, int64_t h,
	                           int64_t w, int64_t k);

	/* ---- pointwise functions (backends/cpu/pointwise_math.c) ---- */
	/* The backward takes the forward's input (log, softplus) or output
	 * (exp, tanh), whichever the derivative needs: `saved`. */
	void (*unary_forward)(const df_backend *be, int fn, float *out, const float *x, int64_t n);
	void (*unary_backward)(const df_backend *be, int fn, float *dx, const float *dout, const float *saved,
	                       int64_t n);
	/* Softmax over rows of d. */
	void (*softmax_forward)(const df_backend *be, float *out, const float *x, int64_t rows, int64_t d);
	void (*softmax_backward)(const df_backend *be, float *dx, const float *dout, const float *out, int64_t rows,
	                         int64_t d);
	/* Keeps element i when diffuse/rng.h's uniform at (seed, stream, step,
	 * i) is below 1 - p, scaled by 1 / (1 - p); the backward redraws the
	 * same mask. */
	void (*dropout_forward)(const df_backend *be, float *out, const float *x, int64_t n, float p, uint64_t seed,
	                        uint64_t stream, uint64_t step);
	void (*dropout_backward)(const df_backend *be, float *dx, const float *dout, int64_t n, float p,
	                         uint64_t seed, uint64_t stream, uint64_t step);

	/* ---- losses (backends/cpu/losses.c) ---- */
	void (*normal_kl_forward)(const df_backend *be, float *out, const float *m1, const float *lv1,
	                          const float *m2, const float *lv2, int64_t n);
	void (*normal_kl_backward)(const df_backend *be, float *dm1, float *dlv1, float *dm2, float *dlv2,
	                           const float *dout, const float *m1, const float *lv1, const float *m2,
	                           const float *lv2, int64_t n);
	void (*discretized_gaussian_loglik_forward)(const df_backend *be, float *out, const float *x,
	                                            const float *mean, const float *log_scale, int64_t n);
	void (*discretized_gaussian_loglik_backward)(const df_backend *be, float *dx, float *dmean,
	                                             float *dlog_scale, const float *dout, const float *x,
	                                             const float *mean, const float *log_scale, int64_t n);
	/* logits (rows, k), labels host memory in [0, k); lse (rows) may be
	 * NULL (inference). */
	void (*cross_entropy_forward)(const df_backend *be, float *out, float *lse, const float *logits,
	                              const int32_t *labels, int64_t rows, int64_t k);
	void (*cross_entropy_backward)(const df_backend *be, float *dlogits, const float *dout, const float *logits,
	                               const float *lse, const int32_t *labels, int64_t rows, int64_t k);

	/* ---- optimiser over a parameter block (optional) ---- */
	/* One fused pass of AdamW (the factors as df_adamw_step forms them;
	 * decay_mask backend memory or NULL) and of the EMA update. NULL on a
	 * backend whose memory the host functions of diffuse/optim.h can use
	 * directly (cpu). */
	void (*adamw_step)(const df_backend *be, float *params, const float *grads, float *m, float *v,
	                   const uint8_t *decay_mask, int64_t n, const struct df_adamw_factors *f);
	void (*ema_update)(const df_backend *be, float *ema, const float *params, int64_t n, float decay);
	/* Index of the first non-finite value of x[0..n), or -1; NULL on a
	 * backend whose memory the host reads directly (cpu). */
	int64_t (*first_nonfinite)(const df_backend *be, const float *x, int64_t n);
	/* sum x[i]^2 in double, in an order fixed by n alone (gradient norm);
	 * NULL as above. */
	double (*sum_squares)(const df_backend *be, const float *x, int64_t n);

	/* ---- ReLU and windowed pooling (backends/cpu/pool.c) ---- */
	void (*relu_forward)(const df_backend *be, float *out, const float *x, int64_t n);
	void (*relu_backward)(const df_backend *be, float *dx, const float *dout, const float *x, int64_t n);
	/* The backward recomputes each window's maximum from x (the first one
	 * in row-major order takes the gradient, as PyTorch's does). */
	void (*maxpool2d_forward)(const df_backend *be, const struct df_pool2d_shape *s, float *out, const float *x);
	void (*maxpool2d_backward)(const df_backend *be, const struct df_pool2d_shape *s, float *dx, const float *dout,
	                           const float *x);
	void (*avgpool2d_window_forward)(const df_backend *be, const struct df_pool2d_shape *s, float *out,
	                                 const float *x);
	void (*avgpool2d_window_backward)(const df_backend *be, const struct df_pool2d_shape *s, float *dx,
	                                  const float *dout);
};

/* Backend constructors (internal names start with dfi_, so libdiffuse does
 * not export them): fill *be for `threads` workers. */
int dfi_backend_cpu_init(df_backend *be, int threads);
#ifdef DF_HAVE_CUDA
/* The CUDA backend on the current device; on failure writes one line
 * naming the cause (no device, no driver, ...) into msg. */
#ifdef __cplusplus
extern "C"
#endif
int dfi_backend_cuda_init(df_backend *be, char *msg, size_t msg_len);
/* One line naming the device, for df_ctx_describe. */
#ifdef __cplusplus
extern "C"
#endif
void dfi_cuda_describe(char *buf, size_t n);
#endif

#endif
