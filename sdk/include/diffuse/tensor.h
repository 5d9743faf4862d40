/* Tensors, the autograd graph and the ops plugins compose models from.
 *
 * - A df_tensor is dense, row-major float32, up to DF_MAX_DIMS dims, and
 *   owned by the backend of its context (cpu; cuda later). Its `data` and
 *   `grad` point to backend memory: only backend code touches them. Host
 *   code moves values with df_tensor_write / df_tensor_read.
 * - Parameters live in one contiguous block per model (df_params), with
 *   gradients and AdamW moments in parallel blocks at the same offsets, and
 *   carry the official PyTorch state_dict names.
 * - Activations come from the graph's arena: df_graph_reset() recycles it,
 *   so a training or sampling step allocates nothing after the first.
 * - Ops record themselves on the graph as the forward runs; df_backward()
 *   walks the record in reverse. A graph made with DF_GRAPH_NO_GRAD records
 *   nothing (sampling).
 * - Errors are sticky: an op given a bad shape or a NULL input records the
 *   first error on the graph and returns NULL, and every later op with a
 *   NULL input returns NULL too; check df_graph_status() once at the end.
 */
#ifndef DIFFUSE_TENSOR_H
#define DIFFUSE_TENSOR_H

#include <stddef.h>
#include <stdint.h>
#include "diffuse/error.h"
#include "diffuse/plugin.h"

#ifdef __cplusplus
extern "C" {
#endif

#define DF_MAX_DIMS 5

typedef struct df_backend df_backend; /* private to the SDK */

enum df_tensor_flags {
	DF_TENSOR_PARAM = 1u << 0,    /* lives in a df_params block */
	DF_TENSOR_FROZEN = 1u << 1,   /* parameter without gradient (e.g. DiT's pos_embed) */
	DF_TENSOR_NEEDS_GRAD = 1u << 2, /* a gradient flows into it */
};

struct df_tensor {
	int ndim;
	int64_t shape[DF_MAX_DIMS];
	int64_t numel;
	float *data;                /* backend memory */
	float *grad;                /* backend memory, NULL when no gradient */
	const df_backend *backend;
	uint32_t flags;
	const char *name;           /* parameters: the state_dict name; else NULL */
};

/* Shape literals: df_params_add(p, "w", DF_SHAPE(384, 1536), 0) */
#define DF_SHAPE_NARGS_(...) (int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t))
#define DF_SHAPE(...) DF_SHAPE_NARGS_(__VA_ARGS__), ((const int64_t[]){__VA_ARGS__})

/* ------------------------------------------------------------------ */
/* Context: a backend plus its settings. */

/* device: "cpu" (or "cuda" when built with it); threads <= 0: physical cores
 * (hyperthreads not counted). On cpu every kernel runs on the context's
 * OpenMP threads and OpenBLAS is set to one thread for the process, so the
 * two never oversubscribe the cores. */
int df_ctx_create(df_ctx **ctx, const char *device, int threads, df_error *err);
void df_ctx_destroy(df_ctx *ctx);
const char *df_ctx_device(const df_ctx *ctx);
int df_ctx_threads(const df_ctx *ctx);
/* One line for logs, e.g. "cpu: 2 threads (2 physical cores available), ...". */
const char *df_ctx_describe(const df_ctx *ctx);
/* The backends this build of libdiffuse has, e.g. "cpu cuda". */
const char *df_backends(void);

/* ------------------------------------------------------------------ */
/* Parameter blocks. Register every tensor, then finalize once: one
 * allocation holds values, gradients and the two AdamW moments. */

df_params *df_params_create(df_ctx *ctx);
void df_params_destroy(df_params *p);
/* flags: DF_TENSOR_FROZEN for tensors that are saved but not trained. */
df_tensor *df_params_add(df_params *p, const char *name, int ndim, const int64_t *shape, uint32_t flags);
int df_params_finalize(df_params *p, df_error *err);
size_t df_params_count(const df_params *p);
df_tensor *df_params_at(df_params *p, size_t i);
df_tensor *df_params_find(df_params *p, const char *name);
int64_t df_params_numel(const df_params *p);          /* all values, frozen included */
void df_params_zero_grad(df_params *p);
/* Copies of the whole block in registration order, host side. */
int df_params_read(const df_params *p, float *values, df_error *err);
int df_params_write(df_params *p, const float *values, df_error *err);

/* The four parts of the block, for the optimiser and checkpoints. Each has
 * df_params_numel() floats in backend memory, every tensor at the same
 * offset in each part; trainable tensors come first, so the optimiser
 * updates the first df_params_trainable_numel() floats of each part and
 * frozen tensors are never touched. NULL before finalize. */
enum df_params_part {
	DF_PARAMS_VALUES = 0,
	DF_PARAMS_GRADS = 1,
	DF_PARAMS_M = 2, /* AdamW first moment */
	DF_PARAMS_V = 3, /* AdamW second moment */
};
float *df_params_block(df_params *p, enum df_params_part part);
int64_t df_params_trainable_numel(const df_params *p);
/* Element offset of tensor i (registration order) inside each part. */
int64_t df_params_offset(const df_params *p, size_t i);

/* ------------------------------------------------------------------ */
/* Graphs. */

enum df_graph_flags {
	DF_GRAPH_NO_GRAD = 1u << 0, /* record nothing: inference */
};

df_graph *df_graph_create(df_ctx *ctx, uint32_t flags);
void df_graph_destroy(df_graph *g);
/* Forgets every activation and the tape; keeps the arena's memory. */
void df_graph_reset(df_graph *g);
/* 0, or the first error any op on g recorded (its message goes to err). */
int df_graph_status(const df_graph *g, df_error *err);
df_ctx *df_graph_ctx(df_graph *g);
/* Bytes the arena holds (for memory reports). */
size_t df_graph_arena_bytes(const df_graph *g);
/* Reusing activation memory within one no-grad forward (sampling), so memory
 * is bounded by what one stage keeps alive rather than by all activations:
 *
 *   size_t mark = df_graph_mark(g);
 *   for (each block) {
 *       x = block(g, x);
 *       df_graph_rewind(g, mark, (df_tensor *[]){x}, 1);
 *   }
 *
 * On a graph made with DF_GRAPH_NO_GRAD, df_graph_rewind() moves the storage
 * of the kept tensors that were created after the mark down to the mark (the
 * handles stay the same; their data pointers change) and hands everything
 * else created after the mark out again: every other tensor made after the
 * mark becomes invalid, as does any data pointer taken from a kept one.
 * Tensors made before the mark, parameters and kept tensors made before the
 * mark are untouched. Kept tensors must not partly overlap one another (views
 * of the same whole storage are fine). On a recording graph, or one holding an
 * error, it does nothing: the tape needs every activation. Host-side records
 * (tensor structs) are not reclaimed until df_graph_reset(). */
size_t df_graph_mark(const df_graph *g);
void df_graph_rewind(df_graph *g, size_t mark, df_tensor *const *keep, int n_keep);

/* New activations (uninitialised, zeros, or a copy of host values). */
df_tensor *df_tensor_new(df_graph *g, int ndim, const int64_t *shape);
df_tensor *df_tensor_zeros(df_graph *g, int ndim, const int64_t *shape);
df_tensor *df_tensor_from_host(df_graph *g, const float *src, int ndim, const int64_t *shape);
int df_tensor_write(df_tensor *t, const float *src, df_error *err);  /* host -> t */
int df_tensor_read(const df_tensor *t, float *dst, df_error *err);   /* t -> host */
int df_tensor_read_grad(const df_tensor *t, float *dst, df_error *err);
int df_tensor_same_shape(const df_tensor *a, const df_tensor *b);

/* Seeds d(loss)/d(loss) = 1 for a one-element loss and accumulates
 * gradients into every parameter and activation it reaches. */
int df_backward(df_graph *g, df_tensor *loss, df_error *err);

/* ------------------------------------------------------------------ */
/* Ops. Each returns a new tensor on g (or a view) and has a backward. */

/* x (..., in) @ w^T + b; w (out, in) as PyTorch stores it; b (out) or NULL. */
df_tensor *df_linear(df_graph *g, df_tensor *x, df_tensor *w, df_tensor *b);
/* Batched a @ b over matching leading dims; the last two dims are the
 * matrix, transposed first when trans_a / trans_b. */
df_tensor *df_matmul(df_graph *g, df_tensor *a, df_tensor *b, int trans_a, int trans_b);

/* Elementwise with broadcasting: shapes are right-aligned and a dim of 1
 * stretches (NumPy rules). */
df_tensor *df_add(df_graph *g, df_tensor *a, df_tensor *b);
df_tensor *df_sub(df_graph *g, df_tensor *a, df_tensor *b);
df_tensor *df_mul(df_graph *g, df_tensor *a, df_tensor *b);
df_tensor *df_scale(df_graph *g, df_tensor *x, float s);        /* s * x */
df_tensor *df_add_scalar(df_graph *g, df_tensor *x, float s);   /* x + s */
/* adaLN: x (N, T, D), shift and scale (N, D): x * (1 + scale) + shift. */
df_tensor *df_modulate(df_graph *g, df_tensor *x, df_tensor *shift, df_tensor *scale);
/* gate (N, D) times x (N, T, D), added to residual r (N, T, D): r + gate * x. */
df_tensor *df_gated_residual(df_graph *g, df_tensor *r, df_tensor *gate, df_tensor *x);

/* Normalisations over the last dim (layernorm) or channel groups. */
df_tensor *df_layernorm(df_graph *g, df_tensor *x, df_tensor *w, df_tensor *b, float eps);
/* Fused LayerNorm without affine, then modulate: the adaLN-Zero pre-norm. */
df_tensor *df_layernorm_modulate(df_graph *g, df_tensor *x, df_tensor *shift, df_tensor *scale, float eps);
/* x (N, C, ...) in `groups` groups; w, b (C) or NULL. */
df_tensor *df_groupnorm(df_graph *g, df_tensor *x, int groups, df_tensor *w, df_tensor *b, float eps);

/* Convolution and resampling on (N, C, H, W). w (Cout, Cin, kh, kw). */
df_tensor *df_conv2d(df_graph *g, df_tensor *x, df_tensor *w, df_tensor *b, int stride, int padding);
df_tensor *df_upsample_nearest2x(df_graph *g, df_tensor *x);
/* stride = kernel; output (H / kernel, W / kernel): rows and columns past
 * the last whole window are dropped, as PyTorch's AvgPool2d does. */
df_tensor *df_avgpool2d(df_graph *g, df_tensor *x, int kernel);
/* Pooling windows of kernel x kernel every `stride`, with `padding` on
 * each side: output ((H + 2 padding - kernel) / stride + 1, likewise for
 * W), as PyTorch's MaxPool2d / AvgPool2d (ceil_mode off). Max pooling never
 * picks the padding; average pooling divides by kernel^2 when count_pad,
 * else by the cells of the window inside the image (count_include_pad). */
df_tensor *df_maxpool2d(df_graph *g, df_tensor *x, int kernel, int stride, int padding);
df_tensor *df_avgpool2d_window(df_graph *g, df_tensor *x, int kernel, int stride, int padding, int count_pad);

/* Multi-head scaled-dot-product attention: q (N, Tq, D), k and v (N, Tk, D),
 * heads of D / heads contiguous features; softmax(q k^T / sqrt(hd)) v.
 * k and v may come from another sequence (cross-attention). */
df_tensor *df_attention(df_graph *g, df_tensor *q, df_tensor *k, df_tensor *v, int heads);
/* The same on a fused projection qkv (N, T, 3D) laid out [q | k | v]. */
df_tensor *df_attention_qkv(df_graph *g, df_tensor *qkv, int heads);

/* Activations and pointwise functions. */
df_tensor *df_gelu(df_graph *g, df_tensor *x, int tanh_approx);
df_tensor *df_silu(df_graph *g, df_tensor *x);
df_tensor *df_relu(df_graph *g, df_tensor *x);
df_tensor *df_exp(df_graph *g, df_tensor *x);
df_tensor *df_log(df_graph *g, df_tensor *x);
df_tensor *df_softplus(df_graph *g, df_tensor *x);
df_tensor *df_tanh(df_graph *g, df_tensor *x);
/* Softmax over the last dim. */
df_tensor *df_softmax(df_graph *g, df_tensor *x);
/* Identity forward, no gradient backward (stop-gradient / detach). */
df_tensor *df_detach(df_graph *g, df_tensor *x);
/* Keeps each element with probability 1 - p, scaled by 1/(1 - p); the mask
 * is Philox noise keyed by (seed, stream, step, element index): element i
 * is kept when df_rng_uniform(seed, stream, step, i) < 1 - p. p = 1 gives
 * zeros; for inference pass p = 0 (the op does not look at the graph's
 * flags). */
df_tensor *df_dropout(df_graph *g, df_tensor *x, float p, uint64_t seed, uint64_t stream, uint64_t step);

/* Rows ids[0..n) of table (V, D) -> (n, D); ids on the host. */
df_tensor *df_embedding(df_graph *g, df_tensor *table, const int32_t *ids, int64_t n);

/* Shapes. Reshape is a free view; permute copies. */
df_tensor *df_reshape(df_graph *g, df_tensor *x, int ndim, const int64_t *shape);
df_tensor *df_permute(df_graph *g, df_tensor *x, const int *perm);
df_tensor *df_concat(df_graph *g, df_tensor *const *xs, int n, int dim);
/* Elements [start, start + len) along dim. */
df_tensor *df_slice(df_graph *g, df_tensor *x, int dim, int64_t start, int64_t len);
/* n equal chunks along dim into out[0..n). Returns 0 or a df_status. */
int df_chunk(df_graph *g, df_tensor *x, int n, int dim, df_tensor **out);
/* (N, C, H, W) -> (N, T, C p p), each patch as (c, pr, pc), tokens row-major. */
df_tensor *df_patchify(df_graph *g, df_tensor *x, int p);
/* (N, T, p p C) with channel fastest -> (N, C, H, W), as DiT's unpatchify. */
df_tensor *df_unpatchify(df_graph *g, df_tensor *x, int p, int channels, int height, int width);

/* Reductions and losses. */
df_tensor *df_sum(df_graph *g, df_tensor *x);   /* -> (1) */
df_tensor *df_mean(df_graph *g, df_tensor *x);  /* -> (1) */
/* Mean over every dim but the first: (N, ...) -> (N). */
df_tensor *df_mean_per_sample(df_graph *g, df_tensor *x);
/* Mean squared error per sample: (N, ...) x2 -> (N). */
df_tensor *df_mse_per_sample(df_graph *g, df_tensor *a, df_tensor *b);
/* Cosine similarity over the last dim: (..., D) x2 -> (...). */
df_tensor *df_cosine_similarity(df_graph *g, df_tensor *a, df_tensor *b, float eps);
/* KL(N(m1, e^lv1) || N(m2, e^lv2)) elementwise, in nats. */
df_tensor *df_normal_kl(df_graph *g, df_tensor *mean1, df_tensor *logvar1, df_tensor *mean2, df_tensor *logvar2);
/* log-likelihood of x in [-1, 1] (256 bins) under a Gaussian discretised
 * to those bins, elementwise (guided-diffusion's definition). */
df_tensor *df_discretized_gaussian_loglik(df_graph *g, df_tensor *x, df_tensor *mean, df_tensor *log_scale);
/* Cross-entropy of logits (N, K) against host labels (N) -> (N). */
df_tensor *df_cross_entropy(df_graph *g, df_tensor *logits, const int32_t *labels);

#ifdef __cplusplus
}
#endif
#endif
