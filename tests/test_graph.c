/* Contexts, parameter blocks, graphs, arenas and sticky errors. */
#include "config.h"
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>
#include "diffuse/tensor.h"

static void test_ctx(void **state)
{
	(void)state;
	df_ctx *ctx = NULL;
	df_error err;
	assert_int_equal(df_ctx_create(&ctx, "tpu", 0, &err), DF_EINVAL);
	assert_null(ctx);
	assert_non_null(strstr(err.msg, "tpu"));
	assert_int_equal(df_ctx_create(&ctx, "cuda", 0, &err), DF_ENOTSUP);
	assert_int_equal(df_ctx_create(&ctx, "cpu", 0, &err), 0);
	assert_true(df_ctx_threads(ctx) >= 1);
	assert_string_equal(df_ctx_device(ctx), "cpu");
	assert_non_null(strstr(df_ctx_describe(ctx), "threads"));
	df_ctx_destroy(ctx);
	assert_int_equal(df_ctx_create(&ctx, NULL, 3, &err), 0);
	assert_int_equal(df_ctx_threads(ctx), 3);
	df_ctx_destroy(ctx);
}

static void test_params_block(void **state)
{
	(void)state;
	df_ctx *ctx;
	df_error err;
	assert_int_equal(df_ctx_create(&ctx, "cpu", 1, &err), 0);
	df_params *p = df_params_create(ctx);
	df_tensor *pos = df_params_add(p, "pos_embed", DF_SHAPE(1, 2, 3), DF_TENSOR_FROZEN);
	df_tensor *w = df_params_add(p, "x_embedder.proj.weight", DF_SHAPE(2, 2), 0);
	df_tensor *b = df_params_add(p, "x_embedder.proj.bias", DF_SHAPE(2), 0);
	assert_non_null(pos);
	assert_null(df_params_block(p, DF_PARAMS_VALUES)); /* not finalized yet */
	assert_int_equal(df_params_finalize(p, &err), 0);
	assert_int_equal(df_params_count(p), 3);
	assert_int_equal(df_params_numel(p), 12);
	assert_int_equal(df_params_trainable_numel(p), 6);
	assert_ptr_equal(df_params_find(p, "x_embedder.proj.bias"), b);
	assert_null(df_params_find(p, "nope"));
	assert_string_equal(df_params_at(p, 0)->name, "pos_embed");
	/* trainable first, frozen last, same offsets in every part */
	assert_int_equal(df_params_offset(p, 1), 0);
	assert_int_equal(df_params_offset(p, 2), 4);
	assert_int_equal(df_params_offset(p, 0), 6);
	float *values = df_params_block(p, DF_PARAMS_VALUES), *grads = df_params_block(p, DF_PARAMS_GRADS);
	assert_ptr_equal(w->data, values);
	assert_ptr_equal(w->grad, grads);
	assert_ptr_equal(df_params_block(p, DF_PARAMS_V), values + 3 * 12);
	assert_null(pos->grad);
	assert_true(pos->flags & DF_TENSOR_FROZEN);
	/* host copies in registration order */
	float in[12], out[12];
	for (int i = 0; i < 12; i++)
		in[i] = (float)i;
	assert_int_equal(df_params_write(p, in, &err), 0);
	assert_int_equal(df_params_read(p, out, &err), 0);
	assert_memory_equal(in, out, sizeof in);
	float wv[4];
	assert_int_equal(df_tensor_read(w, wv, &err), 0);
	assert_true(wv[0] == 6.0f && wv[3] == 9.0f);
	grads[0] = 1.0f;
	df_params_zero_grad(p);
	assert_true(grads[0] == 0.0f);
	df_params_destroy(p);

	/* a duplicate name is reported at finalize */
	p = df_params_create(ctx);
	df_params_add(p, "a", DF_SHAPE(2), 0);
	assert_null(df_params_add(p, "a", DF_SHAPE(3), 0));
	assert_int_equal(df_params_finalize(p, &err), DF_EINVAL);
	assert_non_null(strstr(err.msg, "registered twice"));
	df_params_destroy(p);
	df_ctx_destroy(ctx);
}

static void test_sticky_errors(void **state)
{
	(void)state;
	df_ctx *ctx;
	df_error err;
	assert_int_equal(df_ctx_create(&ctx, "cpu", 1, &err), 0);
	df_graph *g = df_graph_create(ctx, 0);
	df_tensor *a = df_tensor_zeros(g, DF_SHAPE(2, 3));
	df_tensor *b = df_tensor_zeros(g, DF_SHAPE(4, 5));
	assert_null(df_matmul(g, a, b, 0, 0)); /* 3 != 4 */
	assert_null(df_add(g, a, a));          /* later ops give NULL too */
	assert_null(df_gelu(g, NULL, 1));
	assert_int_equal(df_graph_status(g, &err), DF_EINVAL);
	assert_non_null(strstr(err.msg, "matmul"));
	df_graph_reset(g); /* reset clears the error */
	assert_int_equal(df_graph_status(g, &err), 0);
	a = df_tensor_zeros(g, DF_SHAPE(2, 3));
	assert_null(df_linear(g, a, df_tensor_zeros(g, DF_SHAPE(4, 2)), NULL));
	assert_non_null(strstr((df_graph_status(g, &err), err.msg), "linear"));
	df_graph_reset(g);
	assert_null(df_attention_qkv(g, df_tensor_zeros(g, DF_SHAPE(1, 4, 12)), 5));
	assert_int_equal(df_graph_status(g, &err), DF_EINVAL);
	df_graph_reset(g);
	int32_t bad_id = 7;
	assert_null(df_embedding(g, df_tensor_zeros(g, DF_SHAPE(3, 2)), &bad_id, 1));
	assert_int_equal(df_graph_status(g, &err), DF_EINVAL);
	df_graph_destroy(g);
	df_ctx_destroy(ctx);
}

static void test_no_grad_and_views(void **state)
{
	(void)state;
	df_ctx *ctx;
	df_error err;
	assert_int_equal(df_ctx_create(&ctx, "cpu", 1, &err), 0);
	df_params *p = df_params_create(ctx);
	df_tensor *w = df_params_add(p, "w", DF_SHAPE(8, 8), 0);
	assert_int_equal(df_params_finalize(p, &err), 0);
	float ones[64];
	for (int i = 0; i < 64; i++)
		ones[i] = 1.0f;
	df_tensor_write(w, ones, NULL);

	/* the same forward with and without gradients: no-grad keeps no
	 * layernorm statistics, so its arena use is smaller, and backward is
	 * refused */
	size_t used[2];
	for (int mode = 0; mode < 2; mode++) {
		df_graph *g = df_graph_create(ctx, mode ? DF_GRAPH_NO_GRAD : 0);
		df_tensor *x = df_tensor_from_host(g, ones, DF_SHAPE(8, 8));
		df_tensor *y = df_mean(g, df_layernorm(g, df_linear(g, x, w, NULL), NULL, NULL, 1e-5f));
		assert_non_null(y);
		used[mode] = df_graph_arena_bytes(g);
		int rc = df_backward(g, y, &err);
		if (mode) {
			assert_int_equal(rc, DF_EINVAL);
			assert_non_null(strstr(err.msg, "NO_GRAD"));
		} else {
			assert_int_equal(rc, 0);
		}
		df_graph_destroy(g);
	}
	assert_true(used[1] <= used[0]);

	/* reshape is a view: same storage, and gradients reach the base */
	df_graph *g = df_graph_create(ctx, 0);
	df_tensor *v = df_reshape(g, w, DF_SHAPE(4, 16));
	assert_ptr_equal(v->data, w->data);
	assert_null(df_reshape(g, w, DF_SHAPE(5, -1)));
	df_graph_reset(g);
	v = df_reshape(g, w, DF_SHAPE(2, -1, 4));
	assert_int_equal(v->shape[1], 8);
	df_params_zero_grad(p);
	assert_int_equal(df_backward(g, df_sum(g, v), &err), 0);
	float grad[64];
	assert_int_equal(df_tensor_read_grad(w, grad, &err), 0);
	for (int i = 0; i < 64; i++)
		assert_true(grad[i] == 1.0f);
	/* a loss that does not depend on any parameter is refused */
	df_graph_reset(g);
	assert_int_equal(df_backward(g, df_sum(g, df_tensor_zeros(g, DF_SHAPE(3))), &err), DF_EINVAL);
	df_graph_destroy(g);
	df_params_destroy(p);
	df_ctx_destroy(ctx);
}

/* An arena that needed several blocks becomes one block of the total size
 * at reset; the same step then fits without growing. */
static void test_arena_coalesces(void **state)
{
	(void)state;
	df_ctx *ctx;
	df_error err;
	assert_int_equal(df_ctx_create(&ctx, "cpu", 1, &err), 0);
	df_graph *g = df_graph_create(ctx, DF_GRAPH_NO_GRAD);
	for (int i = 0; i < 40; i++) /* 40 x 1 MB: several blocks */
		assert_non_null(df_tensor_new(g, DF_SHAPE(256, 1024)));
	size_t grown = df_graph_arena_bytes(g);
	df_graph_reset(g);
	assert_int_equal(df_graph_arena_bytes(g), grown);
	for (int i = 0; i < 40; i++)
		assert_non_null(df_tensor_new(g, DF_SHAPE(256, 1024)));
	assert_int_equal(df_graph_arena_bytes(g), grown);
	df_graph_destroy(g);
	df_ctx_destroy(ctx);
}

/* Rewinding a no-grad graph hands the memory made after the mark out again
 * and moves the kept tensors down intact; a recording graph is untouched. */
static void test_rewind(void **state)
{
	(void)state;
	df_ctx *ctx;
	df_error err;
	assert_int_equal(df_ctx_create(&ctx, "cpu", 1, &err), 0);
	static float values[256 * 1024];
	for (int mode = 0; mode < 2; mode++) {
		df_graph *g = df_graph_create(ctx, mode ? DF_GRAPH_NO_GRAD : 0);
		for (int i = 0; i < 16; i++)
			values[i] = (float)i;
		df_tensor *before = df_tensor_from_host(g, values, DF_SHAPE(16));
		float *before_data = before->data;
		size_t mark = df_graph_mark(g);
		df_tensor *x = df_tensor_from_host(g, values, DF_SHAPE(256, 1024));
		for (int step = 0; step < 40; step++) { /* 40 x 3 MB made, 1 MB live */
			assert_non_null(df_tensor_new(g, DF_SHAPE(256, 1024)));
			x = df_add_scalar(g, x, 1.0f);
			assert_non_null(df_tensor_new(g, DF_SHAPE(256, 1024)));
			df_tensor *view = df_reshape(g, x, DF_SHAPE(1024, 256));
			float *old_data = x->data;
			df_graph_rewind(g, mark, (df_tensor *[]){x, NULL, view, before}, 4);
			assert_ptr_equal(view->data, x->data);
			if (!mode)
				assert_ptr_equal(x->data, old_data);
		}
		assert_int_equal(df_graph_status(g, &err), 0);
		assert_ptr_equal(before->data, before_data);
		static float out[256 * 1024];
		assert_int_equal(df_tensor_read(x, out, &err), 0);
		for (int i = 0; i < 256 * 1024; i += 997)
			assert_true(out[i] == values[i] + 40.0f);
		if (mode)
			assert_true(df_graph_arena_bytes(g) < ((size_t)16 << 20));
		else
			assert_true(df_graph_arena_bytes(g) > ((size_t)100 << 20));
		df_graph_destroy(g);
	}
	df_ctx_destroy(ctx);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ctx),
		cmocka_unit_test(test_params_block),
		cmocka_unit_test(test_sticky_errors),
		cmocka_unit_test(test_no_grad_and_views),
		cmocka_unit_test(test_arena_coalesces),
		cmocka_unit_test(test_rewind),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
