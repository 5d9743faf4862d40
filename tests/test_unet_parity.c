/* The unet backbone against the PyTorch reference
 * (tests/reference/unet_reference.py wrote the golden files): outputs and
 * every gradient on two tiny configurations, the official zero-output
 * initialisation, refused settings and refused weight files. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "diffuse/io.h"
#include "diffuse/tensor.h"
#include "golden.h"
#include "plugin_harness.h"
#include "unet_net.h"

#define OUT_TOLERANCE 1e-5
#define GRAD_TOLERANCE 1e-4

typedef struct unet_fixture {
	df_ctx *ctx;
	unet_model *model;
} unet_fixture;

/* Settings pairs (NULL-terminated) over the declared defaults. */
static int unet_open(unet_fixture *f, const df_backbone_shape *shape, df_error *err, ...)
{
	const df_component *c = harness_component(DF_KIND_BACKBONE, "unet");
	va_list ap;
	va_start(ap, err);
	void *settings = harness_settings_v(c, ap);
	va_end(ap);
	memset(f, 0, sizeof(*f));
	if (df_ctx_create(&f->ctx, "cpu", 0, err) != DF_OK)
		fail_msg("%s", err->msg);
	const df_backbone_vtable *vt = c->vtable;
	void *self = NULL;
	int rc = vt->create(settings, f->ctx, shape, &self, err);
	f->model = self;
	harness_settings_free(c, settings);
	if (rc != DF_OK) {
		df_ctx_destroy(f->ctx);
		f->ctx = NULL;
	}
	return rc;
}

static void unet_close(unet_fixture *f)
{
	unet_model_destroy(f->model);
	df_ctx_destroy(f->ctx);
}

#define TINY_SETTINGS                                                                                       \
	"model_channels", "4", "channel_mult", "[1, 2]", "num_res_blocks", "1", "attention_resolutions", "[2]", \
		"num_head_channels", "4", "use_scale_shift_norm", "true", "resblock_updown", "true",               \
		"use_spatial_transformer", "true", "context_dim", "6", "class_cond", "context", "groups", "2"
#define ADM_SETTINGS                                                                                           \
	"model_channels", "4", "channel_mult", "[1, 2]", "num_res_blocks", "1", "attention_resolutions", "[1, 2]", \
		"num_heads", "2", "use_scale_shift_norm", "false", "resblock_updown", "false", "groups", "2"

static const df_backbone_shape tiny_shape = {{4, 8, 8}, 8, 10, 1};
static const df_backbone_shape adm_shape = {{3, 8, 8}, 3, 10, 1};

/* Forward on the golden inputs, then the gradients of sum(out * w). */
static void check_parity(unet_fixture *f, const char *prefix, int with_context)
{
	char name[256];
	df_error err = {{0}};
	snprintf(name, sizeof(name), "%s/%s_weights.safetensors", UNET_TEST_DATA_DIR, prefix);
	if (unet_model_load(f->model, name, &err) != DF_OK)
		fail_msg("%s", err.msg);
	snprintf(name, sizeof(name), "%s_inputs.safetensors", prefix);
	df_safetensors *inputs = golden_open(UNET_TEST_DATA_DIR, name);
	snprintf(name, sizeof(name), "%s_out.safetensors", prefix);
	df_safetensors *golden = golden_open(UNET_TEST_DATA_DIR, name);

	df_graph *g = df_graph_create(f->ctx, 0);
	assert_non_null(g);
	df_tensor *x = golden_tensor(g, inputs, "x");
	df_tensor *t = golden_tensor(g, inputs, "t");
	df_tensor *context = with_context ? golden_tensor(g, inputs, "context") : NULL;
	if (context)
		context->flags |= DF_TENSOR_NEEDS_GRAD;
	const df_safetensors_tensor *yt = df_safetensors_find(inputs, "y");
	assert_non_null(yt);
	int64_t y64[8];
	int32_t y[8];
	assert_true(yt->nelem == (size_t)t->numel && yt->nelem <= 8);
	assert_int_equal(df_safetensors_read_i64(inputs, yt, y64, yt->nelem, &err), 0);
	for (size_t i = 0; i < yt->nelem; i++)
		y[i] = (int32_t)y64[i];

	df_tensor *out = NULL;
	df_backbone_input in = {sizeof(in), x, t, y, context, 0, NULL};
	if (unet_model_forward(f->model, g, &in, &out, &err) != DF_OK)
		fail_msg("%s", err.msg);
	printf("%s parity against the PyTorch reference:\n", prefix);
	int failures = golden_check(golden, "out", out, 0, OUT_TOLERANCE);

	df_params_zero_grad(f->model->params);
	df_tensor *loss = df_sum(g, df_mul(g, out, golden_tensor(g, golden, "w")));
	if (df_backward(g, loss, &err) != DF_OK)
		fail_msg("%s", err.msg);
	size_t count = df_params_count(f->model->params);
	for (size_t i = 0; i < count; i++) {
		df_tensor *p = df_params_at(f->model->params, i);
		snprintf(name, sizeof(name), "grad.%s", p->name);
		failures += golden_check(golden, name, p, 1, GRAD_TOLERANCE);
	}
	if (context)
		failures += golden_check(golden, "grad.context", context, 1, GRAD_TOLERANCE);
	/* Every tensor of the golden file was compared: params, out, w, context. */
	assert_int_equal(df_safetensors_count(golden), count + 2 + (context ? 1 : 0));
	assert_int_equal(failures, 0);
	df_graph_destroy(g);
	df_safetensors_close(inputs);
	df_safetensors_close(golden);
}

static void test_parity_cross_attention(void **state)
{
	(void)state;
	unet_fixture f;
	df_error err = {{0}};
	if (unet_open(&f, &tiny_shape, &err, TINY_SETTINGS, NULL) != DF_OK)
		fail_msg("%s", err.msg);
	/* SpatialTransformer blocks at ds 2 and in the middle; the label token. */
	assert_non_null(df_params_find(f.model->params, "input_blocks.3.1.transformer_blocks.0.attn2.to_k.weight"));
	assert_non_null(df_params_find(f.model->params, UNET_LABEL_CONTEXT_NAME));
	assert_null(df_params_find(f.model->params, "label_emb.weight"));
	check_parity(&f, "unet_tiny", 1);
	unet_close(&f);
}

static void test_parity_classic(void **state)
{
	(void)state;
	unet_fixture f;
	df_error err = {{0}};
	if (unet_open(&f, &adm_shape, &err, ADM_SETTINGS, NULL) != DF_OK)
		fail_msg("%s", err.msg);
	assert_non_null(df_params_find(f.model->params, "input_blocks.2.0.op.weight"));
	assert_non_null(df_params_find(f.model->params, "output_blocks.1.2.conv.weight"));
	assert_non_null(df_params_find(f.model->params, "label_emb.weight"));
	check_parity(&f, "unet_adm", 0);
	unet_close(&f);
}

/* The official init zeroes the last layer of every residual branch and the
 * output convolution: the model predicts 0 and only out.2 gets gradient. */
static void test_zero_init(void **state)
{
	(void)state;
	unet_fixture f;
	df_error err = {{0}};
	if (unet_open(&f, &tiny_shape, &err, TINY_SETTINGS, NULL) != DF_OK)
		fail_msg("%s", err.msg);
	assert_int_equal(unet_model_init(f.model, 7, &err), DF_OK);
	df_graph *g = df_graph_create(f.ctx, 0);
	float x[2 * 4 * 8 * 8], t[2] = {5, 900}, ctx[2 * 2 * 6];
	for (size_t i = 0; i < sizeof(x) / sizeof(x[0]); i++)
		x[i] = sinf((float)i);
	for (size_t i = 0; i < sizeof(ctx) / sizeof(ctx[0]); i++)
		ctx[i] = cosf((float)i);
	int32_t y[2] = {1, 10};
	df_backbone_input in = {sizeof(in), df_tensor_from_host(g, x, DF_SHAPE(2, 4, 8, 8)),
	                        df_tensor_from_host(g, t, DF_SHAPE(2)), y,
	                        df_tensor_from_host(g, ctx, DF_SHAPE(2, 2, 6)), 0, NULL};
	df_tensor *out = NULL;
	if (unet_model_forward(f.model, g, &in, &out, &err) != DF_OK)
		fail_msg("%s", err.msg);
	float got[2 * 8 * 8 * 8];
	assert_int_equal(out->numel, 2 * 8 * 8 * 8);
	assert_int_equal(df_tensor_read(out, got, &err), DF_OK);
	for (int i = 0; i < 2 * 8 * 8 * 8; i++)
		assert_true(got[i] == 0.0f);
	df_params_zero_grad(f.model->params);
	assert_int_equal(df_backward(g, df_sum(g, df_mul(g, out, out)), &err), DF_OK);
	/* d(sum out^2) = 2 out = 0 everywhere: use sum(out * x-like) instead. */
	df_graph_reset(g);
	in.x = df_tensor_from_host(g, x, DF_SHAPE(2, 4, 8, 8));
	in.t = df_tensor_from_host(g, t, DF_SHAPE(2));
	in.context = df_tensor_from_host(g, ctx, DF_SHAPE(2, 2, 6));
	assert_int_equal(unet_model_forward(f.model, g, &in, &out, &err), DF_OK);
	df_params_zero_grad(f.model->params);
	assert_int_equal(df_backward(g, df_sum(g, out), &err), DF_OK);
	size_t with_grad = 0;
	for (size_t i = 0; i < df_params_count(f.model->params); i++) {
		df_tensor *p = df_params_at(f.model->params, i);
		float *grad = malloc((size_t)p->numel * sizeof(float));
		assert_int_equal(df_tensor_read_grad(p, grad, &err), DF_OK);
		int nonzero = 0;
		for (int64_t k = 0; k < p->numel; k++)
			nonzero |= grad[k] != 0.0f;
		free(grad);
		if (nonzero) {
			assert_true(strncmp(p->name, "out.2.", 6) == 0);
			with_grad++;
		}
	}
	assert_int_equal(with_grad, 2);
	df_graph_destroy(g);
	unet_close(&f);
}

static void expect_refused(const df_backbone_shape *shape, const char *needle, ...)
{
	const df_component *c = harness_component(DF_KIND_BACKBONE, "unet");
	va_list ap;
	va_start(ap, needle);
	void *settings = harness_settings_v(c, ap);
	va_end(ap);
	unet_config cfg;
	df_error err = {{0}};
	assert_int_equal(unet_config_resolve(&cfg, settings, shape, &err), DF_EINVAL);
	if (!strstr(err.msg, needle))
		fail_msg("expected '%s' in: %s", needle, err.msg);
	harness_settings_free(c, settings);
}

static void test_refused_settings(void **state)
{
	(void)state;
	df_backbone_shape shape = {{4, 8, 8}, 4, 0, 0};
	expect_refused(&shape, "attention_resolutions", "channel_mult", "[1, 2]", "attention_resolutions", "[4]",
	               "groups", "4", "model_channels", "8", NULL);
	expect_refused(&shape, "attention_resolutions", "attention_resolutions", "[3]", NULL);
	expect_refused(&shape, "context_dim", "context_dim", "8", NULL);
	df_backbone_shape odd = {{4, 10, 10}, 4, 0, 0};
	expect_refused(&odd, "divisible", "channel_mult", "[1, 2, 2]", NULL);
	expect_refused(&shape, "groups", "model_channels", "48", NULL);
	expect_refused(&shape, "num_head_channels", "model_channels", "64", "num_head_channels", "24", NULL);
	df_backbone_shape labelled = {{4, 8, 8}, 4, 10, 1};
	expect_refused(&labelled, "class_cond", "class_cond", "context", NULL);
}

/* Weights of another configuration are refused, naming a tensor. */
static void test_refused_weights(void **state)
{
	(void)state;
	unet_fixture f;
	df_error err = {{0}};
	char path[1024];
	if (unet_open(&f, &tiny_shape, &err, TINY_SETTINGS, NULL) != DF_OK)
		fail_msg("%s", err.msg);
	snprintf(path, sizeof(path), "%s/unet_adm_weights.safetensors", UNET_TEST_DATA_DIR);
	assert_int_equal(unet_model_load(f.model, path, &err), DF_EINVAL);
	printf("  refused: %s\n", err.msg);
	assert_non_null(strstr(err.msg, "unet_adm_weights"));
	unet_close(&f);
	/* A model without the label token misses nothing it needs but the file has it. */
	if (unet_open(&f, &tiny_shape, &err, TINY_SETTINGS, "class_cond", "embedding", NULL) != DF_OK)
		fail_msg("%s", err.msg);
	snprintf(path, sizeof(path), "%s/unet_tiny_weights.safetensors", UNET_TEST_DATA_DIR);
	assert_int_equal(unet_model_load(f.model, path, &err), DF_EINVAL);
	printf("  refused: %s\n", err.msg);
	unet_close(&f);
}

/* Inputs that do not fit are refused with a message, not a crash. */
static void test_refused_inputs(void **state)
{
	(void)state;
	unet_fixture f;
	df_error err = {{0}};
	if (unet_open(&f, &tiny_shape, &err, TINY_SETTINGS, NULL) != DF_OK)
		fail_msg("%s", err.msg);
	df_graph *g = df_graph_create(f.ctx, 0);
	float x[4 * 8 * 8] = {0}, t[1] = {1}, ctx[5] = {0};
	int32_t bad_label[1] = {11};
	df_tensor *out = NULL;
	df_backbone_input in = {sizeof(in), df_tensor_from_host(g, x, DF_SHAPE(1, 4, 8, 8)),
	                        df_tensor_from_host(g, t, DF_SHAPE(1)), bad_label, NULL, 0, NULL};
	assert_int_equal(unet_model_forward(f.model, g, &in, &out, &err), DF_EINVAL);
	assert_non_null(strstr(err.msg, "label"));
	in.y = NULL;
	in.context = df_tensor_from_host(g, ctx, DF_SHAPE(1, 1, 5));
	assert_int_equal(unet_model_forward(f.model, g, &in, &out, &err), DF_EINVAL);
	assert_non_null(strstr(err.msg, "context"));
	in.context = NULL;
	in.x = df_tensor_from_host(g, x, DF_SHAPE(1, 4, 4, 16));
	assert_int_equal(unet_model_forward(f.model, g, &in, &out, &err), DF_EINVAL);
	df_graph_destroy(g);
	unet_close(&f);
}

/* Spec values of the timestep embedding (cos first, dim = model_channels). */
static void test_timestep_embedding(void **state)
{
	(void)state;
	float t = 10.0f, emb[8];
	unet_timestep_embedding(emb, &t, 1, 8);
	/* f_m = 10000^(-m/4): 1, 0.1, 0.01, 0.001 */
	const double f[4] = {1, 0.1, 0.01, 0.001};
	for (int m = 0; m < 4; m++) {
		assert_float_equal(emb[m], cos(10 * f[m]), 2e-6);
		assert_float_equal(emb[4 + m], sin(10 * f[m]), 2e-6);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_timestep_embedding),
		cmocka_unit_test(test_parity_cross_attention),
		cmocka_unit_test(test_parity_classic),
		cmocka_unit_test(test_zero_init),
		cmocka_unit_test(test_refused_settings),
		cmocka_unit_test(test_refused_weights),
		cmocka_unit_test(test_refused_inputs),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
