/* The pixel encoder: identity by default, (x - shift) * scale otherwise,
 * decode inverting encode, and shapes checked. */
#include "config.h"
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "diffuse/tensor.h"
#include "plugin_harness.h"

typedef struct fixture {
	df_ctx *ctx;
	df_graph *g;
} fixture;

static int setup(void **state)
{
	fixture *f = calloc(1, sizeof *f);
	df_error err;
	if (df_ctx_create(&f->ctx, "cpu", 1, &err) != DF_OK) {
		print_error("%s\n", err.msg);
		return -1;
	}
	f->g = df_graph_create(f->ctx, 0);
	*state = f;
	return f->g ? 0 : -1;
}

static int teardown(void **state)
{
	fixture *f = *state;
	df_graph_destroy(f->g);
	df_ctx_destroy(f->ctx);
	free(f);
	return 0;
}

static const df_component *component(void)
{
	return harness_component(DF_KIND_ENCODER, "pixel");
}

static const df_encoder_vtable *vtable(void)
{
	const df_encoder_vtable *vt = component()->vtable;
	assert_true(vt->struct_size >= sizeof(df_encoder_vtable));
	return vt;
}

/* Creates the encoder for `image` with the settings pairs; returns the status. */
#define create_with(f, image, enc, err, ...) \
	create_settings(f, image, enc, err, harness_settings(component(), __VA_ARGS__, NULL))

static int create_settings(fixture *f, df_shape3 image, void **enc, df_error *err, void *settings)
{
	int status = vtable()->create(settings, f->ctx, image, enc, err);
	harness_settings_free(component(), settings);
	return status;
}

static const df_shape3 grey4 = {1, 2, 2};
/* One (1, 1, 2, 2) image with values over [-1, 1]. */
static const float pixels[4] = {-1.0f, 0.0f, 1.0f, 0.5f};

static df_tensor *image_tensor(fixture *f)
{
	df_tensor *t = df_tensor_from_host(f->g, pixels, DF_SHAPE(1, 1, 2, 2));
	assert_non_null(t);
	return t;
}

static void test_identity_by_default(void **state)
{
	fixture *f = *state;
	void *enc;
	df_error err;
	df_shape3 image = {3, 32, 16};
	assert_int_equal(create_with(f, image, &enc, &err, NULL), DF_OK);
	df_shape3 latent = vtable()->latent_shape(enc);
	assert_int_equal(latent.channels, 3);
	assert_int_equal(latent.height, 32);
	assert_int_equal(latent.width, 16);
	assert_null(vtable()->params);
	vtable()->destroy(enc);

	assert_int_equal(create_with(f, grey4, &enc, &err, NULL), DF_OK);
	df_tensor *x = image_tensor(f), *z, *back;
	assert_int_equal(vtable()->encode(enc, f->g, x, &z, &err), DF_OK);
	assert_ptr_equal(z, x);
	assert_int_equal(vtable()->decode(enc, f->g, z, &back, &err), DF_OK);
	assert_ptr_equal(back, x);
	vtable()->destroy(enc);
}

static void test_scale_shift(void **state)
{
	fixture *f = *state;
	void *enc;
	df_error err;
	/* [-1, 1] -> [0, 1]. */
	assert_int_equal(create_with(f, grey4, &enc, &err, "scale", "0.5", "shift", "-1"), DF_OK);
	df_tensor *x = image_tensor(f), *z, *back;
	assert_int_equal(vtable()->encode(enc, f->g, x, &z, &err), DF_OK);
	assert_int_equal(z->ndim, 4);
	assert_int_equal(z->numel, 4);
	float got[4];
	assert_int_equal(df_tensor_read(z, got, &err), DF_OK);
	const float want[4] = {0.0f, 0.5f, 1.0f, 0.75f};
	for (int i = 0; i < 4; i++)
		assert_float_equal(got[i], want[i], 1e-7);
	/* The input is untouched and decode inverts encode. */
	assert_int_equal(df_tensor_read(x, got, &err), DF_OK);
	assert_memory_equal(got, pixels, sizeof pixels);
	assert_int_equal(vtable()->decode(enc, f->g, z, &back, &err), DF_OK);
	assert_int_equal(df_tensor_read(back, got, &err), DF_OK);
	for (int i = 0; i < 4; i++)
		assert_float_equal(got[i], pixels[i], 1e-6);
	assert_int_equal(df_graph_status(f->g, &err), DF_OK);
	vtable()->destroy(enc);
}

/* d/dx sum(f(x)) of x (1, 1, 2, 2) marked as needing a gradient. */
static void check_gradient(fixture *f, void *enc, int decode, float want)
{
	df_error err;
	df_tensor *x = image_tensor(f), *y;
	x->flags |= DF_TENSOR_NEEDS_GRAD;
	int status = decode ? vtable()->decode(enc, f->g, x, &y, &err) : vtable()->encode(enc, f->g, x, &y, &err);
	assert_int_equal(status, DF_OK);
	assert_int_equal(df_backward(f->g, df_sum(f->g, y), &err), DF_OK);
	float grad[4];
	assert_int_equal(df_tensor_read_grad(x, grad, &err), DF_OK);
	for (int i = 0; i < 4; i++)
		assert_float_equal(grad[i], want, 1e-6);
	df_graph_reset(f->g);
}

static void test_gradient(void **state)
{
	fixture *f = *state;
	void *enc;
	df_error err;
	assert_int_equal(create_with(f, grey4, &enc, &err, "scale", "4", "shift", "0.25"), DF_OK);
	check_gradient(f, enc, 0, 4.0f);
	check_gradient(f, enc, 1, 0.25f);
	vtable()->destroy(enc);
}

static void test_bad_input(void **state)
{
	fixture *f = *state;
	void *enc = (void *)1;
	df_error err;
	assert_int_equal(create_with(f, grey4, &enc, &err, "scale", "0"), DF_EINVAL);
	assert_string_equal(err.msg, "scale 0 cannot be inverted");
	assert_null(enc);
	assert_int_equal(create_with(f, grey4, &enc, &err, "scale", "1e40"), DF_EINVAL);
	assert_string_equal(err.msg, "scale 1e+40 cannot be inverted");
	df_shape3 empty = {0, 2, 2};
	assert_int_equal(create_with(f, empty, &enc, &err, NULL), DF_EINVAL);
	assert_string_equal(err.msg, "an image shape of (0, 2, 2) is empty");

	assert_int_equal(create_with(f, grey4, &enc, &err, "scale", "2"), DF_OK);
	df_tensor *rgb = df_tensor_zeros(f->g, DF_SHAPE(2, 3, 2, 2)), *out = (df_tensor *)1;
	assert_int_equal(vtable()->encode(enc, f->g, rgb, &out, &err), DF_EINVAL);
	assert_string_equal(err.msg, "images have shape (2, 3, 2, 2), expected (N, 1, 2, 2)");
	assert_null(out);
	df_tensor *flat = df_tensor_zeros(f->g, DF_SHAPE(4));
	assert_int_equal(vtable()->decode(enc, f->g, flat, &out, &err), DF_EINVAL);
	assert_string_equal(err.msg, "latents have shape (4), expected (N, 1, 2, 2)");
	vtable()->destroy(enc);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_identity_by_default, setup, teardown),
		cmocka_unit_test_setup_teardown(test_scale_shift, setup, teardown),
		cmocka_unit_test_setup_teardown(test_gradient, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_input, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
