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
};

/* Backend constructors (internal names start with dfi_, so libdiffuse does
 * not export them): fill *be for `threads` workers. */
int dfi_backend_cpu_init(df_backend *be, int threads);

#endif
