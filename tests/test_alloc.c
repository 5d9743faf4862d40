/* A training step makes no heap allocation once the arenas have grown:
 * malloc and friends are interposed in this executable and counted during
 * steps 3 to 5 of a small adaLN transformer block (linear, layernorm +
 * modulate, attention, GELU, MSE, backward, parameter update). */
#include "config.h"
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include "diffuse/tensor.h"

#if defined(__SANITIZE_ADDRESS__)
#define DF_TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define DF_TEST_ASAN 1
#endif
#endif

#ifndef DF_TEST_ASAN
/* glibc's own allocator entry points, which these forward to. */
extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);
extern void __libc_free(void *);

static volatile int counting;
static volatile long allocations;

void *malloc(size_t n)
{
	if (counting)
		allocations++;
	return __libc_malloc(n);
}

void *calloc(size_t n, size_t size)
{
	if (counting)
		allocations++;
	return __libc_calloc(n, size);
}

void *realloc(void *p, size_t n)
{
	if (counting)
		allocations++;
	return __libc_realloc(p, n);
}

int posix_memalign(void **out, size_t align, size_t n)
{
	if (counting)
		allocations++;
	void *p = __libc_memalign(align, n);
	if (!p)
		return 12; /* ENOMEM */
	*out = p;
	return 0;
}

void *aligned_alloc(size_t align, size_t n)
{
	if (counting)
		allocations++;
	return __libc_memalign(align, n);
}

void free(void *p)
{
	__libc_free(p);
}
#endif

enum { N = 2, T = 16, D = 32, HEADS = 4, C = 8 };

struct block {
	df_tensor *ada_w, *ada_b, *qkv_w, *qkv_b, *proj_w, *proj_b, *fc1_w, *fc1_b, *fc2_w, *fc2_b;
};

static void add_params(df_params *p, struct block *b)
{
	b->ada_w = df_params_add(p, "adaLN_modulation.1.weight", DF_SHAPE(6 * D, C), 0);
	b->ada_b = df_params_add(p, "adaLN_modulation.1.bias", DF_SHAPE(6 * D), 0);
	b->qkv_w = df_params_add(p, "attn.qkv.weight", DF_SHAPE(3 * D, D), 0);
	b->qkv_b = df_params_add(p, "attn.qkv.bias", DF_SHAPE(3 * D), 0);
	b->proj_w = df_params_add(p, "attn.proj.weight", DF_SHAPE(D, D), 0);
	b->proj_b = df_params_add(p, "attn.proj.bias", DF_SHAPE(D), 0);
	b->fc1_w = df_params_add(p, "mlp.fc1.weight", DF_SHAPE(4 * D, D), 0);
	b->fc1_b = df_params_add(p, "mlp.fc1.bias", DF_SHAPE(4 * D), 0);
	b->fc2_w = df_params_add(p, "mlp.fc2.weight", DF_SHAPE(D, 4 * D), 0);
	b->fc2_b = df_params_add(p, "mlp.fc2.bias", DF_SHAPE(D), 0);
}

/* One DiT block, MSE against a target, backward, and plain SGD on the
 * parameter block. Returns the status of the graph. */
static int train_step(df_graph *g, df_params *p, const struct block *b, const float *x_host, const float *c_host,
                      const float *target_host, int64_t count)
{
	df_graph_reset(g);
	df_tensor *x = df_tensor_from_host(g, x_host, DF_SHAPE(N, T, D));
	df_tensor *c = df_tensor_from_host(g, c_host, DF_SHAPE(N, C));
	df_tensor *target = df_tensor_from_host(g, target_host, DF_SHAPE(N, T, D));
	df_tensor *mod[6];
	df_tensor *ada = df_linear(g, df_silu(g, c), b->ada_w, b->ada_b);
	df_chunk(g, ada, 6, 1, mod);
	df_tensor *h = df_layernorm_modulate(g, x, mod[0], mod[1], 1e-6f);
	df_tensor *att = df_attention_qkv(g, df_linear(g, h, b->qkv_w, b->qkv_b), HEADS);
	x = df_gated_residual(g, x, mod[2], df_linear(g, att, b->proj_w, b->proj_b));
	h = df_layernorm_modulate(g, x, mod[3], mod[4], 1e-6f);
	h = df_linear(g, df_gelu(g, df_linear(g, h, b->fc1_w, b->fc1_b), 1), b->fc2_w, b->fc2_b);
	x = df_gated_residual(g, x, mod[5], h);
	df_tensor *loss = df_mean(g, df_mse_per_sample(g, x, target));
	df_params_zero_grad(p);
	int rc = df_backward(g, loss, NULL);
	if (rc)
		return rc;
	/* The parameter update reads and writes the block in place. */
	float *v = df_params_block(p, DF_PARAMS_VALUES), *gr = df_params_block(p, DF_PARAMS_GRADS);
	for (int64_t i = 0; i < count; i++)
		v[i] -= 0.01f * gr[i];
	return df_graph_status(g, NULL);
}

static void test_no_allocation_after_warmup(void **state)
{
	(void)state;
#ifdef DF_TEST_ASAN
	skip();
#else
	df_ctx *ctx;
	assert_int_equal(df_ctx_create(&ctx, "cpu", 0, NULL), 0);
	df_params *p = df_params_create(ctx);
	struct block b;
	add_params(p, &b);
	assert_int_equal(df_params_finalize(p, NULL), 0);
	int64_t count = df_params_trainable_numel(p);
	float *init = malloc((size_t)df_params_numel(p) * sizeof(float));
	uint32_t s = 12345;
	for (int64_t i = 0; i < df_params_numel(p); i++) {
		s = s * 1664525u + 1013904223u;
		init[i] = ((float)(s >> 8) / 16777216.0f - 0.5f) * 0.2f;
	}
	assert_int_equal(df_params_write(p, init, NULL), 0);
	static float x[N * T * D], c[N * C], target[N * T * D];
	for (int i = 0; i < N * T * D; i++) {
		x[i] = (float)((i * 37) % 101) / 50.0f - 1.0f;
		target[i] = (float)((i * 53) % 97) / 48.0f - 1.0f;
	}
	for (int i = 0; i < N * C; i++)
		c[i] = (float)(i % 7) / 3.0f - 1.0f;
	df_graph *g = df_graph_create(ctx, 0);
	for (int step = 0; step < 2; step++)
		assert_int_equal(train_step(g, p, &b, x, c, target, count), 0);
	size_t arena = df_graph_arena_bytes(g);
	allocations = 0;
	counting = 1;
	int rc = 0;
	for (int step = 2; step < 5 && !rc; step++)
		rc = train_step(g, p, &b, x, c, target, count);
	counting = 0;
	assert_int_equal(rc, 0);
	assert_int_equal(allocations, 0);
	assert_int_equal(df_graph_arena_bytes(g), arena);
	/* The counter itself works: one allocation is seen. */
	counting = 1;
	void *probe = malloc(16);
	counting = 0;
	free(probe);
	assert_int_equal(allocations, 1);
	df_graph_destroy(g);
	df_params_destroy(p);
	free(init);
	df_ctx_destroy(ctx);
#endif
}

int main(void)
{
#ifdef DF_TEST_ASAN
	return 77; /* malloc cannot be interposed under AddressSanitizer */
#endif
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_no_allocation_after_warmup),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
