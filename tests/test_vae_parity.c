/* The vae encoder against diffusers.AutoencoderKL
 * (tests/reference/vae_reference.py wrote the golden files) under both
 * weight namings, the name table, latent scaling round trips, the KL
 * term's gradients and refused weight files. */
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
#include "gradcheck.h"
#include "plugin_harness.h"
#include "vae_net.h"

#define VAE_TOLERANCE 1e-4

typedef struct vae_fixture {
	df_ctx *ctx;
	const df_encoder_vtable *vt;
	vae_model *model;
} vae_fixture;

#define TINY_SETTINGS                                                                                     \
	"ch", "4", "ch_mult", "[1, 2, 2]", "num_res_blocks", "1", "z_channels", "3", "groups", "2"

static const df_shape3 tiny_image = {3, 16, 16};

/* Settings pairs (NULL-terminated) over the declared defaults. */
static int vae_open(vae_fixture *f, df_error *err, ...)
{
	const df_component *c = harness_component(DF_KIND_ENCODER, "vae");
	va_list ap;
	va_start(ap, err);
	void *settings = harness_settings_v(c, ap);
	va_end(ap);
	memset(f, 0, sizeof(*f));
	if (df_ctx_create(&f->ctx, "cpu", 0, err) != DF_OK)
		fail_msg("%s", err->msg);
	f->vt = c->vtable;
	void *self = NULL;
	int rc = f->vt->create(settings, f->ctx, tiny_image, &self, err);
	f->model = self;
	harness_settings_free(c, settings);
	if (rc != DF_OK)
		df_ctx_destroy(f->ctx);
	return rc;
}

static void vae_close(vae_fixture *f)
{
	f->vt->destroy(f->model);
	df_ctx_destroy(f->ctx);
}

static void check_against_diffusers(const char *weights_file)
{
	char path[1024];
	vae_fixture f;
	df_error err = {{0}};
	snprintf(path, sizeof(path), "%s/%s", VAE_TEST_DATA_DIR, weights_file);
	if (vae_open(&f, &err, TINY_SETTINGS, "weights", path, NULL) != DF_OK)
		fail_msg("%s", err.msg);
	df_safetensors *io = golden_open(VAE_TEST_DATA_DIR, "vae_tiny_io.safetensors");
	df_graph *g = df_graph_create(f.ctx, DF_GRAPH_NO_GRAD);
	df_tensor *mean = NULL, *logvar = NULL, *decoded = NULL;
	if (vae_posterior(f.model, g, golden_tensor(g, io, "x"), &mean, &logvar, &err) != DF_OK)
		fail_msg("%s", err.msg);
	if (vae_decode_raw(f.model, g, golden_tensor(g, io, "z"), &decoded, &err) != DF_OK)
		fail_msg("%s", err.msg);
	printf("vae (%s) against diffusers.AutoencoderKL:\n", weights_file);
	int failures = golden_check(io, "mean", mean, 0, VAE_TOLERANCE);
	failures += golden_check(io, "logvar", logvar, 0, VAE_TOLERANCE);
	failures += golden_check(io, "decoded", decoded, 0, VAE_TOLERANCE);
	assert_int_equal(failures, 0);
	/* Through the vtable (posterior mode, scale 1): the same mean. */
	df_tensor *latents = NULL;
	assert_int_equal(f.vt->encode(f.model, g, golden_tensor(g, io, "x"), &latents, &err), DF_OK);
	assert_int_equal(golden_check(io, "mean", latents, 0, VAE_TOLERANCE), 0);
	df_shape3 shape = f.vt->latent_shape(f.model);
	assert_true(shape.channels == 3 && shape.height == 4 && shape.width == 4);
	df_graph_destroy(g);
	df_safetensors_close(io);
	vae_close(&f);
}

static void test_diffusers_names(void **state)
{
	(void)state;
	check_against_diffusers("vae_tiny_diffusers.safetensors");
}

static void test_compvis_names(void **state)
{
	(void)state;
	check_against_diffusers("vae_tiny_compvis.safetensors");
}

/* The table on the Stable Diffusion VAE's names (kl-f8: four levels). */
static void test_name_table(void **state)
{
	(void)state;
	static const char *const pairs[][2] = {
		{"encoder.down_blocks.0.resnets.0.norm1.weight", "encoder.down.0.block.0.norm1.weight"},
		{"encoder.down_blocks.1.resnets.0.conv_shortcut.bias", "encoder.down.1.block.0.nin_shortcut.bias"},
		{"encoder.down_blocks.2.downsamplers.0.conv.weight", "encoder.down.2.downsample.conv.weight"},
		{"encoder.mid_block.attentions.0.group_norm.weight", "encoder.mid.attn_1.norm.weight"},
		{"encoder.mid_block.attentions.0.to_out.0.bias", "encoder.mid.attn_1.proj_out.bias"},
		{"decoder.mid_block.attentions.0.query.weight", "decoder.mid.attn_1.q.weight"},
		{"decoder.mid_block.attentions.0.proj_attn.weight", "decoder.mid.attn_1.proj_out.weight"},
		{"decoder.mid_block.resnets.1.conv2.weight", "decoder.mid.block_2.conv2.weight"},
		{"decoder.up_blocks.0.resnets.2.conv1.weight", "decoder.up.3.block.2.conv1.weight"},
		{"decoder.up_blocks.0.upsamplers.0.conv.bias", "decoder.up.3.upsample.conv.bias"},
		{"decoder.up_blocks.3.resnets.0.conv_shortcut.weight", "decoder.up.0.block.0.nin_shortcut.weight"},
		{"decoder.conv_norm_out.bias", "decoder.norm_out.bias"},
		{"encoder.down.0.block.1.conv2.weight", "encoder.down.0.block.1.conv2.weight"},
		{"first_stage_model.decoder.up.1.upsample.conv.weight", "decoder.up.1.upsample.conv.weight"},
		{"quant_conv.weight", "quant_conv.weight"},
	};
	int levels = 4;
	char out[256];
	for (size_t i = 0; i < sizeof(pairs) / sizeof(pairs[0]); i++) {
		assert_int_equal(vae_map_name(&levels, pairs[i][0], out, sizeof(out)), 1);
		assert_string_equal(out, pairs[i][1]);
	}
	/* Other parts of a full checkpoint are left out; a level beyond the model is refused. */
	assert_int_equal(vae_map_name(&levels, "first_stage_model.loss.logvar", out, sizeof(out)), -1);
	assert_int_equal(vae_map_name(&levels, "model.diffusion_model.out.2.weight", out, sizeof(out)), -1);
	assert_int_equal(vae_map_name(&levels, "decoder.up_blocks.4.resnets.0.conv1.weight", out, sizeof(out)), 0);
}

/* decode(encode(x)) through the per-channel shift and scale equals the
 * unscaled decode of the posterior mean: the scale is applied once each way. */
static void test_scaling_round_trip(void **state)
{
	(void)state;
	vae_fixture f;
	df_error err = {{0}};
	if (vae_open(&f, &err, TINY_SETTINGS, "scale_factor", "0.18215", "latent_shift", "[0.5, -1, 2]",
	             "latent_scale", "[1, 2, 0.25]", NULL) != DF_OK)
		fail_msg("%s", err.msg);
	df_graph *g = df_graph_create(f.ctx, DF_GRAPH_NO_GRAD);
	float x[2 * 3 * 16 * 16];
	for (size_t i = 0; i < sizeof(x) / sizeof(x[0]); i++)
		x[i] = sinf(0.37f * (float)i);
	df_tensor *images = df_tensor_from_host(g, x, DF_SHAPE(2, 3, 16, 16));
	df_tensor *latents = NULL, *mean = NULL, *logvar = NULL, *via_scale = NULL, *direct = NULL;
	assert_int_equal(f.vt->encode(f.model, g, images, &latents, &err), DF_OK);
	assert_int_equal(f.vt->decode(f.model, g, latents, &via_scale, &err), DF_OK);
	assert_int_equal(vae_posterior(f.model, g, images, &mean, &logvar, &err), DF_OK);
	assert_int_equal(vae_decode_raw(f.model, g, mean, &direct, &err), DF_OK);
	float got[2 * 3 * 16 * 16], want[2 * 3 * 16 * 16], lat[2 * 3 * 4 * 4], mu[2 * 3 * 4 * 4];
	assert_int_equal(df_tensor_read(via_scale, got, &err), DF_OK);
	assert_int_equal(df_tensor_read(direct, want, &err), DF_OK);
	assert_int_equal(df_tensor_read(latents, lat, &err), DF_OK);
	assert_int_equal(df_tensor_read(mean, mu, &err), DF_OK);
	for (size_t i = 0; i < sizeof(got) / sizeof(got[0]); i++)
		assert_float_equal(got[i], want[i], 1e-4);
	const float shift[3] = {0.5f, -1, 2}, scale[3] = {1, 2, 0.25f};
	for (int i = 0; i < 2 * 3 * 16; i++) {
		int c = (i / 16) % 3;
		assert_float_equal(lat[i], (mu[i] - shift[c]) * 0.18215f * scale[c], 1e-5);
	}
	df_graph_destroy(g);
	vae_close(&f);
}

/* ------------------------------------------------------------------ */
/* Gradients of the posterior and loss terms, against central differences. */

static df_tensor *build_kl(df_graph *g, df_tensor *const *in, const void *arg)
{
	(void)arg;
	return vae_kl(g, in[0], in[1]);
}

static void naive_kl(const float *const *in, const struct gc_input *shapes, const void *arg, double *out, int64_t n)
{
	(void)arg;
	(void)n;
	int64_t count = 1;
	for (int d = 0; d < shapes[0].ndim; d++)
		count *= shapes[0].shape[d];
	double sum = 0;
	for (int64_t i = 0; i < count; i++)
		sum += (double)in[0][i] * in[0][i] + exp(in[1][i]) - 1 - in[1][i];
	out[0] = 0.5 * sum / (double)shapes[0].shape[0];
}

static vae_model scratch_model; /* only its host scratch is used */

static df_tensor *build_sample(df_graph *g, df_tensor *const *in, const void *arg)
{
	(void)arg;
	df_error err;
	return vae_sample(&scratch_model, g, in[0], in[1], 3, 1, &err);
}

static df_tensor *build_clamp(df_graph *g, df_tensor *const *in, const void *arg)
{
	(void)arg;
	df_error err;
	return np_clamp(g, in[0], -30.0f, 20.0f, &scratch_model.clamp_host, &err);
}

static df_tensor *build_abs(df_graph *g, df_tensor *const *in, const void *arg)
{
	(void)arg;
	df_error err;
	return np_abs(g, in[0], &scratch_model.abs_host, &err);
}

static void test_gradients(void **state)
{
	(void)state;
	const struct gc_case cases[] = {
		{"vae_kl", build_kl, NULL, 2, {GC_IN(2, 3, 2, 2), GC_IN_RANGE(-2, 1, 2, 3, 2, 2)}, 0, 0, naive_kl, 0},
		{"vae_sample", build_sample, NULL, 2, {GC_IN(2, 3, 2, 2), GC_IN_RANGE(-2, 1, 2, 3, 2, 2)}, 0, 0, NULL, 0},
		{"clamp [-30, 20]", build_clamp, NULL, 1, {GC_IN_RANGE(-45, 35, 3, 16)}, 0, 0, NULL, 0},
		{"abs (positive)", build_abs, NULL, 1, {GC_IN_RANGE(0.05f, 1, 3, 8)}, 0, 0, NULL, 0},
		{"abs (negative)", build_abs, NULL, 1, {GC_IN_RANGE(-1, -0.05f, 3, 8)}, 0, 0, NULL, 0},
	};
	df_ctx *ctx = NULL;
	df_error err;
	assert_int_equal(df_ctx_create(&ctx, "cpu", 0, &err), DF_OK);
	assert_int_equal(gc_check_table(ctx, cases, (int)(sizeof(cases) / sizeof(cases[0])), 17), 0);
	np_scratch_free(&scratch_model.host);
	np_scratch_free(&scratch_model.clamp_host);
	np_scratch_free(&scratch_model.abs_host);
	df_ctx_destroy(ctx);
}

/* The training loss: finite, and its gradient reaches both halves. */
static void test_train_loss(void **state)
{
	(void)state;
	vae_fixture f;
	df_error err = {{0}};
	if (vae_open(&f, &err, TINY_SETTINGS, "kl_weight", "0.01", NULL) != DF_OK)
		fail_msg("%s", err.msg);
	typedef int (*loss_fn)(void *, df_graph *, df_tensor *, uint64_t, uint64_t, df_tensor **, df_error *);
	loss_fn loss_of = (loss_fn)f.vt->extension(f.model, "train-loss");
	assert_non_null(loss_of);
	df_graph *g = df_graph_create(f.ctx, 0);
	float x[2 * 3 * 16 * 16];
	for (size_t i = 0; i < sizeof(x) / sizeof(x[0]); i++)
		x[i] = cosf(0.11f * (float)i);
	df_tensor *loss = NULL;
	assert_int_equal(loss_of(f.model, g, df_tensor_from_host(g, x, DF_SHAPE(2, 3, 16, 16)), 1, 0, &loss, &err), DF_OK);
	float value = 0;
	assert_int_equal(df_tensor_read(loss, &value, &err), DF_OK);
	assert_true(isfinite(value) && value > 0);
	df_params *params = f.vt->params(f.model);
	df_params_zero_grad(params);
	assert_int_equal(df_backward(g, loss, &err), DF_OK);
	const char *names[] = {"encoder.conv_in.weight", "decoder.conv_out.weight", "quant_conv.bias"};
	for (int i = 0; i < 3; i++) {
		df_tensor *p = df_params_find(params, names[i]);
		assert_non_null(p);
		float *grad = malloc((size_t)p->numel * sizeof(float));
		assert_int_equal(df_tensor_read_grad(p, grad, &err), DF_OK);
		double norm = 0;
		for (int64_t k = 0; k < p->numel; k++)
			norm += fabs(grad[k]);
		assert_true(norm > 0 && isfinite(norm));
		free(grad);
	}
	df_graph_destroy(g);
	vae_close(&f);
}

/* encode takes an image's posterior from the cache (found by content)
 * instead of running the network; an image not in it goes through the
 * network. Model A writes the cache, model B (other weights) reads it. */
static void test_latent_cache(void **state)
{
	(void)state;
	vae_fixture a, b;
	df_error err = {{0}};
	enum { N = 3, IMAGE = 3 * 16 * 16, LATENT = 3 * 4 * 4 };
	if (vae_open(&a, &err, TINY_SETTINGS, "seed", "1", NULL) != DF_OK)
		fail_msg("%s", err.msg);
	static float x[(N + 1) * IMAGE];
	for (int i = 0; i < (N + 1) * IMAGE; i++)
		x[i] = sinf(0.013f * (float)i * (float)(1 + i % 7));
	df_graph *g = df_graph_create(a.ctx, DF_GRAPH_NO_GRAD);
	df_tensor *mean = NULL, *logvar = NULL;
	assert_int_equal(vae_posterior(a.model, g, df_tensor_from_host(g, x, DF_SHAPE(N, 3, 16, 16)), &mean, &logvar, &err),
	                 DF_OK);
	static float mean_a[N * LATENT], logvar_a[N * LATENT];
	int64_t keys[N];
	assert_int_equal(df_tensor_read(mean, mean_a, &err), DF_OK);
	assert_int_equal(df_tensor_read(logvar, logvar_a, &err), DF_OK);
	vae_image_keys(x, N, IMAGE, keys);
	assert_true(keys[0] != keys[1] && keys[1] != keys[2]);
	char *dir = harness_tmpdir();
	char path[4096];
	snprintf(path, sizeof(path), "%s/latents.safetensors", dir);
	const int64_t shape[4] = {N, 3, 4, 4}, key_shape[1] = {N};
	df_safetensors_entry entries[3] = {
		{"mean", DF_ST_F32, 4, shape, mean_a},
		{"logvar", DF_ST_F32, 4, shape, logvar_a},
		{"image_key", DF_ST_I64, 1, key_shape, keys},
	};
	assert_int_equal(df_safetensors_write(path, entries, 3, NULL, 0, &err), 0);
	df_graph_destroy(g);
	vae_close(&a);

	if (vae_open(&b, &err, TINY_SETTINGS, "seed", "2", "cache", path, NULL) != DF_OK)
		fail_msg("%s", err.msg);
	g = df_graph_create(b.ctx, DF_GRAPH_NO_GRAD);
	df_tensor *latents = NULL;
	static float got[N * LATENT];
	/* The images in another order: each finds its own row. */
	static float shuffled[N * IMAGE];
	const int order[N] = {2, 0, 1};
	for (int i = 0; i < N; i++)
		memcpy(shuffled + i * IMAGE, x + order[i] * IMAGE, IMAGE * sizeof(float));
	assert_int_equal(b.vt->encode(b.model, g, df_tensor_from_host(g, shuffled, DF_SHAPE(N, 3, 16, 16)), &latents, &err),
	                 DF_OK);
	assert_int_equal(df_tensor_read(latents, got, &err), DF_OK);
	for (int i = 0; i < N; i++)
		for (int k = 0; k < LATENT; k++)
			assert_true(got[i * LATENT + k] == mean_a[order[i] * LATENT + k]);
	/* A batch with an image the cache lacks runs model B's network. */
	df_tensor *direct = NULL, *direct_logvar = NULL;
	df_tensor *fresh = df_tensor_from_host(g, x + IMAGE, DF_SHAPE(N, 3, 16, 16));
	assert_int_equal(b.vt->encode(b.model, g, fresh, &latents, &err), DF_OK);
	assert_int_equal(vae_posterior(b.model, g, fresh, &direct, &direct_logvar, &err), DF_OK);
	static float want[N * LATENT];
	assert_int_equal(df_tensor_read(latents, got, &err), DF_OK);
	assert_int_equal(df_tensor_read(direct, want, &err), DF_OK);
	assert_memory_equal(got, want, sizeof(got));
	df_graph_destroy(g);
	vae_close(&b);
	/* A cache of another latent shape is refused. */
	assert_int_equal(vae_open(&b, &err, TINY_SETTINGS, "z_channels", "4", "cache", path, NULL), DF_EINVAL);
	assert_non_null(strstr(err.msg, "cache"));
	harness_rmtree(dir);
}

/* Posterior samples are keyed by the step: the same step draws the same
 * latents, another step other ones. */
static void test_sample_step(void **state)
{
	(void)state;
	vae_fixture f;
	df_error err = {{0}};
	if (vae_open(&f, &err, TINY_SETTINGS, "posterior", "sample", NULL) != DF_OK)
		fail_msg("%s", err.msg);
	typedef void (*set_step_fn)(void *, uint64_t);
	set_step_fn set_step = (set_step_fn)f.vt->extension(f.model, "set-step");
	assert_non_null(set_step);
	static float x[2 * 3 * 16 * 16], first[2 * 3 * 4 * 4], again[2 * 3 * 4 * 4], other[2 * 3 * 4 * 4];
	for (size_t i = 0; i < sizeof(x) / sizeof(x[0]); i++)
		x[i] = cosf(0.05f * (float)i);
	float *outs[3] = {first, again, other};
	const uint64_t steps[3] = {7, 7, 8};
	df_graph *g = df_graph_create(f.ctx, DF_GRAPH_NO_GRAD);
	for (int k = 0; k < 3; k++) {
		df_tensor *z = NULL;
		set_step(f.model, steps[k]);
		assert_int_equal(f.vt->encode(f.model, g, df_tensor_from_host(g, x, DF_SHAPE(2, 3, 16, 16)), &z, &err), DF_OK);
		assert_int_equal(df_tensor_read(z, outs[k], &err), DF_OK);
	}
	assert_memory_equal(first, again, sizeof(first));
	assert_memory_not_equal(first, other, sizeof(first));
	df_graph_destroy(g);
	vae_close(&f);
}

static void test_refused(void **state)
{
	(void)state;
	vae_fixture f;
	df_error err = {{0}};
	char path[1024];
	snprintf(path, sizeof(path), "%s/vae_tiny_diffusers.safetensors", VAE_TEST_DATA_DIR);
	assert_int_equal(vae_open(&f, &err, TINY_SETTINGS, "z_channels", "4", "weights", path, NULL), DF_EINVAL);
	printf("  refused: %s\n", err.msg);
	assert_non_null(strstr(err.msg, "shape"));
	assert_int_equal(vae_open(&f, &err, TINY_SETTINGS, "ch_mult", "[1, 2]", "weights", path, NULL), DF_EINVAL);
	printf("  refused: %s\n", err.msg);
	assert_int_equal(vae_open(&f, &err, TINY_SETTINGS, "latent_scale", "[1, 2]", NULL), DF_EINVAL);
	assert_non_null(strstr(err.msg, "latent_scale"));
	assert_int_equal(vae_open(&f, &err, TINY_SETTINGS, "attn_resolutions", "[5]", NULL), DF_EINVAL);
	assert_non_null(strstr(err.msg, "attn_resolutions"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_name_table),
		cmocka_unit_test(test_diffusers_names),
		cmocka_unit_test(test_compvis_names),
		cmocka_unit_test(test_scaling_round_trip),
		cmocka_unit_test(test_gradients),
		cmocka_unit_test(test_train_loss),
		cmocka_unit_test(test_latent_cache),
		cmocka_unit_test(test_sample_step),
		cmocka_unit_test(test_refused),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
