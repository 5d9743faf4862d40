/* AdamW, EMA and the finiteness check over a whole parameter block
 * (df_params_adamw_step, df_params_ema_update, df_params_check_finite) on
 * the cpu backend: the same numbers as the host functions of optim.c, and
 * the first bad tensor named; and the one-line refusal of device "cuda"
 * where it cannot run. The cuda backend runs the same comparisons in
 * tests/gpu/test_cuda_ops. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "diffuse/optim.h"
#include "diffuse/tensor.h"

struct fixture {
	df_ctx *ctx;
	df_params *p;
	df_tensor *a, *frozen, *b;
};

/* Trainable a (2, 3) and b (4), frozen (5) registered between them. */
static void open_block(struct fixture *f)
{
	df_error err = { { 0 } };
	assert_int_equal(df_ctx_create(&f->ctx, "cpu", 1, &err), DF_OK);
	f->p = df_params_create(f->ctx);
	f->a = df_params_add(f->p, "a", DF_SHAPE(2, 3), 0);
	f->frozen = df_params_add(f->p, "frozen", DF_SHAPE(5), DF_TENSOR_FROZEN);
	f->b = df_params_add(f->p, "b", DF_SHAPE(4), 0);
	assert_int_equal(df_params_finalize(f->p, &err), DF_OK);
	float values[15];
	for (int i = 0; i < 15; i++)
		values[i] = 0.1f * (float)(i - 7);
	assert_int_equal(df_params_write(f->p, values, &err), DF_OK);
}

static void close_block(struct fixture *f)
{
	df_params_destroy(f->p);
	df_ctx_destroy(f->ctx);
}

/* Gradients g = w through the loss sum(a * wa) + sum(b * wb). */
static void set_grads(struct fixture *f, const float *wa, const float *wb)
{
	df_error err = { { 0 } };
	df_graph *g = df_graph_create(f->ctx, 0);
	df_tensor *ta = df_tensor_from_host(g, wa, DF_SHAPE(2, 3)), *tb = df_tensor_from_host(g, wb, DF_SHAPE(4));
	df_tensor *loss = df_add(g, df_sum(g, df_mul(g, f->a, ta)), df_sum(g, df_mul(g, f->b, tb)));
	df_params_zero_grad(f->p);
	assert_int_equal(df_backward(g, loss, &err), DF_OK);
	df_graph_destroy(g);
}

static void test_adamw_matches_host_step(void **state)
{
	(void)state;
	struct fixture f;
	open_block(&f);
	const float wa[6] = { 0.5f, -1, 2, 0.25f, -0.125f, 3 }, wb[4] = { -2, 1, 0.5f, -0.75f };
	set_grads(&f, wa, wb);
	/* The host reference on copies of the trainable part. */
	const int64_t n = df_params_trainable_numel(f.p);
	assert_int_equal(n, 10);
	float p[10], g[10], m[10] = { 0 }, v[10] = { 0 };
	memcpy(p, df_params_block(f.p, DF_PARAMS_VALUES), sizeof p);
	memcpy(g, df_params_block(f.p, DF_PARAMS_GRADS), sizeof g);
	df_adamw_config c = df_adamw_defaults();
	c.lr = 0.05;
	df_error err = { { 0 } };
	for (int t = 1; t <= 3; t++) {
		assert_int_equal(df_adamw_step(p, g, m, v, NULL, 10, &c, t), 0);
		assert_int_equal(df_params_adamw_step(f.p, &c, t, &err), DF_OK);
	}
	assert_memory_equal(df_params_block(f.p, DF_PARAMS_VALUES), p, sizeof p);
	assert_memory_equal(df_params_block(f.p, DF_PARAMS_M), m, sizeof m);
	/* The frozen tensor is never touched. */
	float frozen[5];
	assert_int_equal(df_tensor_read(f.frozen, frozen, &err), DF_OK);
	assert_float_equal(frozen[0], 0.1f * (6 - 7), 1e-7); /* registration order: a, frozen, b */
	/* A bad step count is refused with a message. */
	assert_int_equal(df_params_adamw_step(f.p, &c, 0, &err), DF_EINVAL);
	assert_non_null(strstr(err.msg, "adamw"));
	close_block(&f);
}

static void test_ema_update(void **state)
{
	(void)state;
	struct fixture f, e;
	open_block(&f);
	open_block(&e);
	float values[15];
	for (int i = 0; i < 15; i++)
		values[i] = 1.0f;
	df_error err = { { 0 } };
	assert_int_equal(df_params_write(e.p, values, &err), DF_OK);
	/* Blocks on two contexts are refused: they may be two devices. */
	assert_int_equal(df_params_ema_update(e.p, f.p, 0.75f, &err), DF_EINVAL);
	close_block(&e);

	df_params *ema = df_params_create(f.ctx);
	df_params_add(ema, "a", DF_SHAPE(2, 3), 0);
	df_params_add(ema, "frozen", DF_SHAPE(5), DF_TENSOR_FROZEN);
	df_params_add(ema, "b", DF_SHAPE(4), 0);
	assert_int_equal(df_params_finalize(ema, &err), DF_OK);
	assert_int_equal(df_params_write(ema, values, &err), DF_OK);
	assert_int_equal(df_params_ema_update(ema, f.p, 0.75f, &err), DF_OK);
	const float *got = df_params_block(ema, DF_PARAMS_VALUES), *src = df_params_block(f.p, DF_PARAMS_VALUES);
	for (int i = 0; i < 10; i++)
		assert_float_equal(got[i], 0.75f * 1.0f + 0.25f * src[i], 1e-7);
	df_params_destroy(ema);
	close_block(&f);
}

static void test_check_finite_names_the_tensor(void **state)
{
	(void)state;
	struct fixture f;
	open_block(&f);
	df_error err = { { 0 } };
	const float wa[6] = { 1, 1, 1, 1, 1, 1 }, wb[4] = { 1, 1, NAN, 1 };
	assert_int_equal(df_params_check_finite(f.p, DF_PARAMS_VALUES, &err), DF_OK);
	set_grads(&f, wa, wb);
	assert_int_equal(df_params_check_finite(f.p, DF_PARAMS_GRADS, &err), DF_ENUMERIC);
	assert_string_equal(err.msg, "non-finite gradient: b, element 2");
	assert_int_equal(df_params_check_finite(f.p, DF_PARAMS_M + 7, &err), DF_EINVAL);
	close_block(&f);
}

static void test_clip_grad_norm_matches_host(void **state)
{
	(void)state;
	struct fixture f;
	open_block(&f);
	const float wa[6] = { 3, 0, 0, 0, 0, 0 }, wb[4] = { 0, 4, 0, 0 };
	set_grads(&f, wa, wb);
	double norm = 0;
	df_error err = { { 0 } };
	assert_int_equal(df_params_clip_grad_norm(f.p, 1.0, &norm, &err), DF_OK);
	assert_float_equal(norm, 5.0, 1e-12);
	const float *g = df_params_block(f.p, DF_PARAMS_GRADS);
	assert_float_equal(g[0], 3.0f * (float)(1.0 / (5.0 + 1e-6)), 1e-7);
	assert_float_equal(g[7], 4.0f * (float)(1.0 / (5.0 + 1e-6)), 1e-7);
	assert_int_equal(df_params_clip_grad_norm(f.p, 1.0, NULL, &err), DF_EINVAL);
	close_block(&f);
}

/* device "cuda": a context, or DF_ENOTSUP with one line naming the device
 * (a build without the backend, a machine without a GPU or driver). */
static void test_cuda_context_or_one_line(void **state)
{
	(void)state;
	df_ctx *ctx = NULL;
	df_error err = { { 0 } };
	const int rc = df_ctx_create(&ctx, "cuda", 0, &err);
	if (rc == DF_OK) {
		assert_string_equal(df_ctx_device(ctx), "cuda");
		assert_non_null(strstr(df_backends(), "cuda"));
		df_ctx_destroy(ctx);
		return;
	}
	assert_int_equal(rc, DF_ENOTSUP);
	assert_null(ctx);
	assert_true(strncmp(err.msg, "device cuda: ", 13) == 0);
	assert_null(strchr(err.msg, '\n'));
	assert_int_equal(df_ctx_create(&ctx, "tpu", 0, &err), DF_EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_cuda_context_or_one_line),
		cmocka_unit_test(test_clip_grad_norm_matches_host),
		cmocka_unit_test(test_adamw_matches_host_step),
		cmocka_unit_test(test_ema_update),
		cmocka_unit_test(test_check_finite_names_the_tensor),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
