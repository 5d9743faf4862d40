/* The vae's posterior sample is drawn per image: keyed through
 * DF_ENCODER_NOISE_KEY by (seed, step, sample index), as the training
 * stage keys it, image i's latent is the same alone and inside a batch
 * (so also under micro-batches, several ranks and a resume), and another
 * step draws other noise. Before the key existed the noise followed the
 * encoder's call count and the position in the batch. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include "diffuse/tensor.h"
#include "plugin_harness.h"

enum { IMAGES = 3, IMAGE = 3 * 16 * 16, LATENT = 2 * 4 * 4 };

/* The latents of images[first .. first + n) from a fresh encoder, keyed
 * by step and their indices. */
static void encode_fresh(const float *images, int first, int n, uint64_t step, float *latents)
{
	df_error err = {{0}};
	df_ctx *ctx = NULL;
	assert_int_equal(df_ctx_create(&ctx, "cpu", 1, &err), DF_OK);
	const df_component *c = harness_component(DF_KIND_ENCODER, "vae");
	void *settings = harness_settings(c, "ch", "4", "ch_mult", "[1, 2, 2]", "num_res_blocks", "1", "z_channels", "2",
	                                  "groups", "2", "posterior", "sample", NULL);
	const df_encoder_vtable *vt = c->vtable;
	void *self = NULL;
	if (vt->create(settings, ctx, (df_shape3){3, 16, 16}, &self, &err) != DF_OK)
		fail_msg("%s", err.msg);
	harness_settings_free(c, settings);
	const df_encoder_noise_key *key = vt->extension(self, DF_ENCODER_NOISE_KEY);
	assert_non_null(key);
	int64_t index[IMAGES];
	for (int i = 0; i < n; i++)
		index[i] = first + i;
	key->key(self, step, index, n);
	df_graph *g = df_graph_create(ctx, DF_GRAPH_NO_GRAD);
	df_tensor *lat = NULL;
	assert_int_equal(vt->encode(self, g, df_tensor_from_host(g, images + first * IMAGE, DF_SHAPE(n, 3, 16, 16)), &lat,
	                            &err),
	                 DF_OK);
	assert_int_equal(df_tensor_read(lat, latents, &err), DF_OK);
	df_graph_destroy(g);
	vt->destroy(self);
	df_ctx_destroy(ctx);
}

static void test_posterior_sample_is_per_image(void **state)
{
	(void)state;
	static float images[IMAGES * IMAGE], batch[IMAGES * LATENT], alone[LATENT], later[LATENT];
	for (int i = 0; i < IMAGES * IMAGE; i++)
		images[i] = 0.7f * sinf(0.03f * (float)i * (float)(1 + i % 3));
	encode_fresh(images, 0, IMAGES, 5, batch);
	encode_fresh(images, 2, 1, 5, alone);
	assert_memory_equal(alone, batch + 2 * LATENT, sizeof alone);
	encode_fresh(images, 2, 1, 6, later);
	assert_memory_not_equal(alone, later, sizeof alone);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_posterior_sample_is_per_image),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
