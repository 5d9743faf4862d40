/* Shared test harness for ops: finite-difference gradient checks and small
 * helpers for forward checks against naive loops.
 *
 * A case is a row in a table: the op under test as a build function of its
 * inputs, and each input's shape. gc_check() fills the inputs with random
 * values, takes the analytic gradient of sum(out * w) for a random w through
 * df_backward, and compares it with double-precision central differences
 * of the same sum, evaluated by re-running the op on perturbed inputs in a
 * no-grad graph. */
#ifndef DIFFUSE_TESTS_GRADCHECK_H
#define DIFFUSE_TESTS_GRADCHECK_H

#include <stdint.h>
#include <stdio.h>
#include "diffuse/tensor.h"

#define GC_MAX_INPUTS 6


struct gc_input {
	int ndim;
	int64_t shape[DF_MAX_DIMS];
	float lo, hi; /* uniform range of the values; both 0: [-1, 1] */
	int no_grad;  /* a constant input (frozen): no gradient checked */
};

/* Builds the op from its inputs; arg is the case's own data. */
typedef df_tensor *(*gc_build_fn)(df_graph *g, df_tensor *const *in, const void *arg);
/* The same op as a naive loop on host values: writes out_numel doubles. */
typedef void (*gc_naive_fn)(const float *const *in, const struct gc_input *shapes, const void *arg, double *out,
                            int64_t out_numel);

struct gc_case {
	const char *name;
	gc_build_fn build;
	const void *arg;
	int n_inputs;
	struct gc_input in[GC_MAX_INPUTS];
	double tol;  /* relative tolerance; 0: 1e-2 */
	double step; /* central-difference step; 0: 1e-2 */
	gc_naive_fn naive; /* optional: the forward reference */
	int probes;        /* elements perturbed per input (evenly spread); 0: 256 */
};

/* Input shorthand: GC_IN(2, 3, 4) is a (2, 3, 4) input in [-1, 1]. */
#define GC_IN(...) {.ndim = DF_SHAPE_NARGS_(__VA_ARGS__), .shape = {__VA_ARGS__}}
#define GC_IN_RANGE(lo_, hi_, ...) {.ndim = DF_SHAPE_NARGS_(__VA_ARGS__), .shape = {__VA_ARGS__}, .lo = (lo_), .hi = (hi_)}
#define GC_IN_CONST(...) {.ndim = DF_SHAPE_NARGS_(__VA_ARGS__), .shape = {__VA_ARGS__}, .no_grad = 1}

/* 0 when every checked gradient matches; otherwise prints the worst
 * mismatches to stderr and returns -1. */
int gc_check(df_ctx *ctx, const struct gc_case *c, uint64_t seed);
/* 0 when the op's forward matches c->naive (relative 1e-4). */
int gc_check_forward(df_ctx *ctx, const struct gc_case *c, uint64_t seed);
/* Runs every case of a table (forward when it has a naive reference, then
 * gradients); returns the number of failures. */
int gc_check_table(df_ctx *ctx, const struct gc_case *cases, int n, uint64_t seed);

/* Deterministic uniform values in [lo, hi). */
void gc_fill(float *x, int64_t n, float lo, float hi, uint64_t *state);
/* Max |got - want| / max(|want|, floor); prints and returns -1 above tol. */
int gc_compare(const char *what, const float *got, const double *want, int64_t n, double tol, double floor);

#endif
