/* Pitfalls of the networks (doc/pitfalls.md):
 *   - shapes come from the config: dit and sit on a non-square input of a
 *     non-default size make their token grid, positions and output from it;
 *   - the latent scale is applied once: the vae's encode with and without
 *     its latent cache gives the same scaled latents, and decode undoes the
 *     scale, per channel, whichever path made them. */
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
#include "diffuse/rng.h"
#include "diffuse/tensor.h"
#include "dit_net.h"
#include "plugin_harness.h"
#include "vae_net.h"

/* ------------------------------------------------------------------ */
/* dit / sit at 16 x 8 pixels, patch 2: an 8 x 4 token grid. */

enum { HEIGHT = 16, WIDTH = 8, PATCH = 2, HIDDEN = 12, GRID_H = HEIGHT / PATCH, GRID_W = WIDTH / PATCH };

/* The 2-D sin-cos table written out from the DiT paper's code: the first
 * half of a token's row embeds its column, the second half its row, each
 * as sin(p w_m) then cos(p w_m) with w_m = 10000^(-m / (D / 4)). */
static double expected_position(int token, int d)
{
	int half = HIDDEN / 2, quarter = HIDDEN / 4;
	int pos = d < half ? token % GRID_W : token / GRID_W;
	int m = d % half % quarter;
	double w = pow(10000.0, -(double)m / quarter);
	return d % half < quarter ? sin(pos * w) : cos(pos * w);
}

static void check_non_square(const df_component *component, int learn_sigma)
{
	df_error err = {{0}};
	df_ctx *ctx = NULL;
	assert_int_equal(df_ctx_create(&ctx, "cpu", 1, &err), DF_OK);
	dit_settings s = {"custom", 2, HIDDEN, 2, PATCH, 2.0, learn_sigma};
	df_backbone_shape shape = {{4, HEIGHT, WIDTH}, 4, 10, 1};
	const df_backbone_vtable *vt = component->vtable;
	void *model = NULL;
	if (vt->create(&s, ctx, &shape, &model, &err) != DF_OK || vt->init(model, 1, &err) != DF_OK)
		fail_msg("%s: %s", component->name, err.msg);
	df_params *params = vt->params(model);

	const df_tensor *pos = df_params_find(params, "pos_embed");
	assert_non_null(pos);
	assert_int_equal(pos->numel, GRID_H * GRID_W * HIDDEN);
	float table[GRID_H * GRID_W * HIDDEN];
	assert_int_equal(df_tensor_read(pos, table, &err), DF_OK);
	for (int k = 0; k < GRID_H * GRID_W; k++)
		for (int d = 0; d < HIDDEN; d++)
			if (fabs(table[k * HIDDEN + d] - expected_position(k, d)) > 1e-5)
				fail_msg("%s: pos_embed[%d][%d] = %g, the %d x %d grid wants %g", component->name, k, d,
				         (double)table[k * HIDDEN + d], GRID_H, GRID_W, expected_position(k, d));

	/* Weights away from the zero initialisation, so the output is not 0. */
	float *values = df_params_block(params, DF_PARAMS_VALUES);
	assert_non_null(values);
	df_rng_fill_normal(values, (size_t)df_params_trainable_numel(params), 3, 1, 0, 0);
	for (int64_t i = 0; i < df_params_trainable_numel(params); i++)
		values[i] *= 0.2f;

	enum { N = 2, NUMEL = N * 4 * HEIGHT * WIDTH };
	static float x[NUMEL], out[NUMEL];
	df_rng_fill_normal(x, NUMEL, 4, 1, 0, 0);
	const float t[N] = {10.0f, 500.0f};
	const int32_t y[N] = {3, 10};
	df_graph *g = df_graph_create(ctx, DF_GRAPH_NO_GRAD);
	df_backbone_input in = {sizeof in, df_tensor_from_host(g, x, DF_SHAPE(N, 4, HEIGHT, WIDTH)),
	                        df_tensor_from_host(g, t, DF_SHAPE(N)), y, NULL, 0, NULL};
	df_tensor *o = NULL;
	if (vt->forward(model, g, &in, &o, &err) != DF_OK)
		fail_msg("%s: %s", component->name, err.msg);
	assert_int_equal(o->ndim, 4);
	assert_int_equal(o->shape[0], N);
	assert_int_equal(o->shape[1], 4); /* sit's learned-sigma half is dropped */
	assert_int_equal(o->shape[2], HEIGHT);
	assert_int_equal(o->shape[3], WIDTH);
	assert_int_equal(df_tensor_read(o, out, &err), DF_OK);
	double sum = 0;
	for (int i = 0; i < NUMEL; i++) {
		assert_true(isfinite(out[i]));
		sum += fabs(out[i]);
	}
	assert_true(sum > 0);
	/* The wrong shape is refused, not read out of bounds. */
	df_graph_reset(g);
	df_backbone_input transposed = in;
	transposed.x = df_tensor_from_host(g, x, DF_SHAPE(N, 4, WIDTH, HEIGHT));
	transposed.t = df_tensor_from_host(g, t, DF_SHAPE(N));
	assert_int_equal(vt->forward(model, g, &transposed, &o, &err), DF_EINVAL);
	df_graph_destroy(g);
	vt->destroy(model);
	df_ctx_destroy(ctx);
}

static void test_dit_non_square(void **state)
{
	(void)state;
	check_non_square(&dit_component, 0);
}

static void test_sit_non_square(void **state)
{
	(void)state;
	check_non_square(&sit_component, 1);
}

/* ------------------------------------------------------------------ */
/* The vae's latent scale, through the network and through the cache. */

typedef struct vae_instance {
	df_ctx *ctx;
	const df_encoder_vtable *vt;
	vae_model *model;
} vae_instance;

#define VAE_SCALED "ch", "4", "ch_mult", "[1, 2, 2]", "num_res_blocks", "1", "z_channels", "3", "groups", "2", \
	"seed", "7", "scale_factor", "0.5", "latent_shift", "[0.25, -1, 0.5]", "latent_scale", "[1, 4, 0.125]"

static const df_shape3 image_shape = {3, 16, 16};
enum { IMAGES = 3, IMAGE = 3 * 16 * 16, LATENT = 3 * 4 * 4 };

static void vae_open_with(vae_instance *v, const char *cache)
{
	df_error err = {{0}};
	const df_component *c = harness_component(DF_KIND_ENCODER, "vae");
	void *settings = cache ? harness_settings(c, VAE_SCALED, "cache", cache, NULL) : harness_settings(c, VAE_SCALED, NULL);
	assert_int_equal(df_ctx_create(&v->ctx, "cpu", 1, &err), DF_OK);
	v->vt = c->vtable;
	void *self = NULL;
	if (v->vt->create(settings, v->ctx, image_shape, &self, &err) != DF_OK)
		fail_msg("%s", err.msg);
	v->model = self;
	harness_settings_free(c, settings);
}

static void vae_close_instance(vae_instance *v)
{
	v->vt->destroy(v->model);
	df_ctx_destroy(v->ctx);
}

static void read_tensor(const df_tensor *t, float *dst)
{
	df_error err = {{0}};
	assert_non_null(t);
	assert_int_equal(df_tensor_read(t, dst, &err), DF_OK);
}

static void test_latent_scale_applied_once(void **state)
{
	(void)state;
	static float images[IMAGES * IMAGE], direct[IMAGES * LATENT], mean[IMAGES * LATENT], logvar[IMAGES * LATENT],
		cached[IMAGES * LATENT], decoded[IMAGES * IMAGE], unscaled[IMAGES * IMAGE];
	for (int i = 0; i < IMAGES * IMAGE; i++)
		images[i] = 0.8f * sinf(0.05f * (float)i * (float)(1 + i % 5));
	df_error err = {{0}};

	/* Through the network; the posterior mean kept as diffuse encode keeps it. */
	vae_instance a;
	vae_open_with(&a, NULL);
	df_graph *g = df_graph_create(a.ctx, DF_GRAPH_NO_GRAD);
	df_tensor *x = df_tensor_from_host(g, images, DF_SHAPE(IMAGES, 3, 16, 16)), *lat = NULL, *mu = NULL, *lv = NULL;
	assert_int_equal(a.vt->encode(a.model, g, x, &lat, &err), DF_OK);
	read_tensor(lat, direct);
	assert_int_equal(vae_posterior(a.model, g, x, &mu, &lv, &err), DF_OK);
	read_tensor(mu, mean);
	read_tensor(lv, logvar);
	/* latents = (mean - shift) * scale_factor * latent_scale, per channel */
	const float shift[3] = {0.25f, -1, 0.5f}, scale[3] = {0.5f, 2, 0.0625f};
	for (int i = 0; i < IMAGES * LATENT; i++) {
		int c = i / 16 % 3;
		assert_float_equal(direct[i], (mean[i] - shift[c]) * scale[c], 1e-5);
	}
	df_tensor *raw = NULL;
	assert_int_equal(vae_decode_raw(a.model, g, mu, &raw, &err), DF_OK);
	read_tensor(raw, unscaled);
	int64_t keys[IMAGES];
	vae_image_keys(images, IMAGES, IMAGE, keys);
	char *dir = harness_tmpdir(), path[4096];
	snprintf(path, sizeof path, "%s/latents.safetensors", dir);
	const int64_t lshape[4] = {IMAGES, 3, 4, 4}, kshape[1] = {IMAGES};
	df_safetensors_entry entries[3] = {
		{"mean", DF_ST_F32, 4, lshape, mean},
		{"logvar", DF_ST_F32, 4, lshape, logvar},
		{"image_key", DF_ST_I64, 1, kshape, keys},
	};
	assert_int_equal(df_safetensors_write(path, entries, 3, NULL, 0, &err), 0);
	df_graph_destroy(g);
	vae_close_instance(&a);

	/* Through the cache: the same latents, and decode undoes the scale once. */
	vae_instance b;
	vae_open_with(&b, path);
	g = df_graph_create(b.ctx, DF_GRAPH_NO_GRAD);
	x = df_tensor_from_host(g, images, DF_SHAPE(IMAGES, 3, 16, 16));
	assert_int_equal(b.vt->encode(b.model, g, x, &lat, &err), DF_OK);
	read_tensor(lat, cached);
	for (int i = 0; i < IMAGES * LATENT; i++)
		assert_float_equal(cached[i], direct[i], 1e-6);
	df_tensor *img = NULL;
	assert_int_equal(b.vt->decode(b.model, g, lat, &img, &err), DF_OK);
	read_tensor(img, decoded);
	for (int i = 0; i < IMAGES * IMAGE; i++)
		assert_float_equal(decoded[i], unscaled[i], 1e-4);
	df_graph_destroy(g);
	vae_close_instance(&b);
	harness_rmtree(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_dit_non_square),
		cmocka_unit_test(test_sit_non_square),
		cmocka_unit_test(test_latent_scale_applied_once),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
