/* Internals of the compute core shared by ctx.c, params.c, graph.c and the
 * op layer in ops/. Not installed. Internal functions start with dfi_ so
 * that libdiffuse (which exports ^df_) keeps them private. */
#ifndef DIFFUSE_CORE_H
#define DIFFUSE_CORE_H

#include <stddef.h>
#include <stdint.h>
#include "diffuse/tensor.h"
#include "backend.h"

struct df_ctx {
	df_backend backend; /* tensors point here */
	char device[16];
	int physical_cores;
	char description[160];
};

/* A tensor as the SDK allocates it: the public part first. */
struct dfi_tensor {
	df_tensor t;
	df_tensor *view_of; /* reshape / detach: shares the data of this tensor */
};

/* ema = decay ema + (1 - decay) params over n floats of be's memory: the
 * backend's fused slot, or df_ema_update on host memory (params_optim.c). */
void dfi_ema_update(const df_backend *be, float *ema, const float *params, int64_t n, float decay);

/* ------------------------------------------------------------------ */
/* Arena: chained blocks from an allocator; reset keeps the memory and, when
 * a step needed more than one block, replaces them by one block of the
 * total size, so the next step of the same shapes allocates nothing. */

struct dfi_arena_block {
	struct dfi_arena_block *next;
	char *mem;
	size_t size, used;
};

struct dfi_arena {
	struct dfi_arena_block *head, *cur;
	void *(*alloc)(void *owner, size_t bytes);
	void (*free)(void *owner, void *p);
	void *owner;
	size_t min_block;
};

void dfi_arena_init(struct dfi_arena *a, void *(*alloc)(void *, size_t), void (*free_fn)(void *, void *),
                    void *owner, size_t min_block);
void *dfi_arena_alloc(struct dfi_arena *a, size_t bytes); /* 64-byte aligned, NULL when out of memory */
void dfi_arena_reset(struct dfi_arena *a);
void dfi_arena_release(struct dfi_arena *a);
size_t dfi_arena_bytes(const struct dfi_arena *a);
/* Marks are logical offsets along the block chain: what has been handed out
 * so far. dfi_arena_rewind() hands out memory again from a mark. */
size_t dfi_arena_mark(const struct dfi_arena *a);
int dfi_arena_offset(const struct dfi_arena *a, const void *p, size_t *offset); /* 0: p is not in a */
void dfi_arena_rewind(struct dfi_arena *a, size_t mark);

/* ------------------------------------------------------------------ */
/* The tape. */

#define DFI_NODE_INPUTS 4

struct dfi_node;
typedef void (*dfi_backward_fn)(df_graph *g, const struct dfi_node *node);

struct dfi_node {
	struct dfi_node *prev;
	dfi_backward_fn backward;
	df_tensor *out;
	df_tensor *in[DFI_NODE_INPUTS];
	df_tensor *saved[2];  /* statistics kept for backward (mean/rstd, lse) */
	float f[4];           /* scalar arguments */
	int64_t i[8];         /* integer arguments */
	const void *host;     /* host data copied onto the tape (embedding ids) */
	const void *aux;      /* op-specific record kept in the tape's memory */
};

struct df_graph {
	df_ctx *ctx;
	const df_backend *be;
	uint32_t flags;
	struct dfi_arena device;  /* tensor memory (backend) */
	struct dfi_arena host;    /* tensor structs, tape nodes, host copies */
	struct dfi_node *tail;
	void *workspace;          /* scratch for kernels, grown, never shrunk */
	size_t workspace_bytes;
	int status;
	char msg[512];
};

/* ------------------------------------------------------------------ */
/* Helpers for the op layer. */

/* Records the first error on g; always returns NULL for `return fail(...)`. */
df_tensor *dfi_fail(df_graph *g, int status, const char *fmt, ...) DF_PRINTF(3, 4);
/* NULL (and a recorded error) when g is NULL, already failed, or an input is
 * NULL or from another backend. */
int dfi_check_inputs(df_graph *g, const char *op, int n, df_tensor *const *xs);
/* A new uninitialised activation on g (NULL on failure, error recorded). */
df_tensor *dfi_new(df_graph *g, int ndim, const int64_t *shape);
/* A tensor sharing x's data with another shape. */
df_tensor *dfi_view(df_graph *g, df_tensor *x, int ndim, const int64_t *shape, int keep_grad);
/* Whether ops on g record themselves and whether any input needs a grad. */
int dfi_wants_grad(const df_graph *g, int n, df_tensor *const *xs);
/* Appends a node for out (which then needs a gradient); NULL on failure. */
struct dfi_node *dfi_record(df_graph *g, dfi_backward_fn backward, df_tensor *out, int n, df_tensor *const *xs);
/* The usual tail of an op: when gradients flow, records a node for out with
 * integer arguments args[0..nargs) and the scalar f0. 0 on failure. */
int dfi_track(df_graph *g, dfi_backward_fn backward, df_tensor *out, int n, df_tensor *const *xs, int nargs,
              const int64_t *args, float f0);
/* x's gradient, allocated zeroed on first use; NULL when x needs none. */
float *dfi_grad(df_graph *g, df_tensor *x);
/* Host memory that lives until the next reset. */
void *dfi_host_alloc(df_graph *g, size_t bytes);
/* Kernel scratch of at least `bytes`, valid until the next call. */
void *dfi_workspace(df_graph *g, size_t bytes);
/* Small float buffer on g for saved statistics. */
df_tensor *dfi_stats(df_graph *g, int64_t n);

/* x (N, T, D) with per-sample u, v of N x D elements ((N, D) or (N, 1, D)). */
int dfi_check_per_sample(df_graph *g, const char *op, const df_tensor *x, const df_tensor *u, const df_tensor *v,
                         int64_t *n, int64_t *t, int64_t *d);

int64_t dfi_numel(int ndim, const int64_t *shape);
/* "(2, 3, 4)" for messages. */
const char *dfi_shape_str(const df_tensor *t, char *buf, size_t n);
#define DFI_SHAPE(t) dfi_shape_str((t), (char[96]){0}, 96)

#endif
