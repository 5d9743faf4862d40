/* Named parameters for convolutional networks (the unet backbone and the
 * vae encoder): registration under the official state_dict names with the
 * initialisation each tensor gets, PyTorch's default initialisation drawn
 * from the counter-based RNG, and loading by name from safetensors with an
 * optional name conversion (another naming of the same network).
 *
 * Compiled into each plugin that uses it; nothing here is exported. */
#ifndef DIFFUSE_PLUGINS_NETPARAMS_H
#define DIFFUSE_PLUGINS_NETPARAMS_H

#include <stdint.h>
#include "diffuse/error.h"
#include "diffuse/tensor.h"

typedef enum np_init_kind {
	NP_INIT_ZERO,     /* zero_module(...) and norm biases */
	NP_INIT_ONE,      /* norm weights */
	NP_INIT_UNIFORM,  /* U(-bound, bound): PyTorch's default for Linear and Conv (bound 1/sqrt(fan_in)) */
	NP_INIT_NORMAL,   /* N(0, 1): PyTorch's default for Embedding */
} np_init_kind;

typedef struct np_entry {
	df_tensor *tensor;
	np_init_kind init;
	float bound;
} np_entry;

/* Parameters as a network registers them. The first failure sticks: later
 * calls return NULL and np_finish reports it. */
typedef struct np_builder {
	df_params *params;
	np_entry *entries;
	int count, cap;
	int status;
	char failed_name[160];
} np_builder;

int np_begin(np_builder *b, df_ctx *ctx);
/* Registers one tensor; the name is printf-formatted. */
df_tensor *np_add(np_builder *b, np_init_kind init, float bound, int ndim, const int64_t *shape,
                  const char *fmt, ...) DF_PRINTF(6, 7);
/* "<prefix>.weight" (cout, cin, k, k) and "<prefix>.bias" (cout) of a
 * convolution; zero: both start at zero (zero_module), else PyTorch's
 * default. kernel_dims: 2 for Conv2d, 1 for Conv1d (cout, cin, 1). */
void np_conv(np_builder *b, df_tensor **w, df_tensor **bias, int64_t cout, int64_t cin, int k, int kernel_dims,
             int zero, const char *prefix);
/* "<prefix>.weight" (out, in) and, when bias is not NULL, "<prefix>.bias". */
void np_linear(np_builder *b, df_tensor **w, df_tensor **bias, int64_t out, int64_t in, int zero,
               const char *prefix);
/* "<prefix>.weight" = 1 and "<prefix>.bias" = 0 of a GroupNorm or LayerNorm. */
void np_norm(np_builder *b, df_tensor **w, df_tensor **bias, int64_t channels, const char *prefix);
/* Finalizes the block; on failure destroys it and fills err. */
int np_finish(np_builder *b, const char *component, df_error *err);
/* Frees the builder's bookkeeping, and the block when keep_params is 0. */
void np_release(np_builder *b, int keep_params);

/* Draws every tensor's initial values; tensor i uses RNG stream
 * stream_base + i, so a tensor's values depend on the seed and its place
 * only. */
int np_initialise(df_params *params, const np_entry *entries, int count, uint64_t seed, uint64_t stream_base,
                  const char *component, df_error *err);

/* Maps a tensor name of a file to the model's name: writes it to out and
 * returns 1; returns 0 when the name is not one it knows (an error) and -1
 * for a tensor to leave out (another part of a larger checkpoint). */
typedef int (*np_name_map)(void *map_ctx, const char *file_name, char *out, size_t size);

/* Loads every parameter from a safetensors file (any float dtype). Names in
 * the file go through map first when it is not NULL. Nothing is written
 * unless every parameter is present with its shape (a trailing 1x1 kernel
 * may be absent: Linear and 1x1 convolutions hold the same values), and
 * every tensor of the file is a parameter. */
int np_load(df_params *params, const char *path, np_name_map map, void *map_ctx, const char *component,
            df_error *err);

/* Host scratch that grows as needed. */
typedef struct np_scratch {
	float *data;
	int64_t cap;
} np_scratch;
float *np_scratch_get(np_scratch *s, int64_t count);
void np_scratch_free(np_scratch *s);

/* (N, C, H, W) <-> (N, H W, C), and a 1x1 convolution weight (out, in, 1[, 1])
 * viewed as a Linear weight (out, in). NULL in, NULL out. */
df_tensor *np_to_tokens(df_graph *g, df_tensor *x);
df_tensor *np_from_tokens(df_graph *g, df_tensor *tokens, const df_tensor *like);
df_tensor *np_as_linear(df_graph *g, df_tensor *w);

/* |x| with the gradient sign(x), from a host copy of the signs. */
df_tensor *np_abs(df_graph *g, df_tensor *x, np_scratch *s, df_error *err);

/* Elementwise clamp of x to [lo, hi] with PyTorch's gradient (zero outside),
 * built from a host mask: x * inside + outside_value. x unchanged when no
 * value is outside. Returns NULL on failure (status in err). */
df_tensor *np_clamp(df_graph *g, df_tensor *x, float lo, float hi, np_scratch *s, df_error *err);

#endif
