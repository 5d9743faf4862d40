/* The pixel encoder: the model works on the images themselves, optionally
 * shifted and scaled,
 *
 *     encode: z = (x - shift) * scale      decode: x = z / scale + shift
 *
 * so the latent shape is the image shape. With the defaults (scale 1,
 * shift 0) both directions hand back their input tensor unchanged, without
 * a copy. This is the seam where a VAE encoder plugs in instead. */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "diffuse/plugin.h"
#include "diffuse/tensor.h"

typedef struct pixel_settings {
	double scale;
	double shift;
} pixel_settings;

typedef struct pixel {
	df_shape3 shape;
	float scale, shift;
} pixel;

static int pixel_create(const void *settings, df_ctx *ctx, df_shape3 image, void **self, df_error *err)
{
	const pixel_settings *s = settings;
	*self = NULL;
	if (!(isfinite((float)s->scale) && s->scale != 0 && isfinite(1 / (float)s->scale)))
		return df_error_set(err, DF_EINVAL, "scale %g cannot be inverted", s->scale);
	if (!isfinite(s->shift))
		return df_error_set(err, DF_EINVAL, "shift %g is not a finite number", s->shift);
	if (image.channels < 1 || image.height < 1 || image.width < 1)
		return df_error_set(err, DF_EINVAL, "an image shape of (%d, %d, %d) is empty", image.channels,
		                    image.height, image.width);
	pixel *enc = malloc(sizeof *enc);
	if (!enc)
		return df_error_set(err, DF_ENOMEM, "out of memory");
	enc->shape = image;
	enc->scale = (float)s->scale;
	enc->shift = (float)s->shift;
	*self = enc;
	return DF_OK;
}

static void pixel_destroy(void *self)
{
	free(self);
}

static df_shape3 pixel_latent_shape(void *self)
{
	return ((const pixel *)self)->shape;
}

/* Both directions take (N, C, H, W) of the image shape. */
static int pixel_check(const pixel *enc, const df_tensor *x, const char *what, df_error *err)
{
	if (!x)
		return df_error_set(err, DF_EINVAL, "no %s tensor", what);
	if (x->ndim != 4 || x->shape[1] != enc->shape.channels || x->shape[2] != enc->shape.height ||
	    x->shape[3] != enc->shape.width) {
		char got[96] = "";
		int used = 0;
		for (int d = 0; d < x->ndim && used < (int)sizeof got; d++)
			used += snprintf(got + used, sizeof got - used, "%s%lld", d ? ", " : "", (long long)x->shape[d]);
		return df_error_set(err, DF_EINVAL, "%s have shape (%s), expected (N, %d, %d, %d)", what, got,
		                    enc->shape.channels, enc->shape.height, enc->shape.width);
	}
	return DF_OK;
}

static int pixel_encode(void *self, df_graph *g, df_tensor *images, df_tensor **latents, df_error *err)
{
	const pixel *enc = self;
	*latents = NULL;
	int status = pixel_check(enc, images, "images", err);
	if (status != DF_OK)
		return status;
	df_tensor *z = images;
	if (enc->shift != 0)
		z = df_add_scalar(g, z, -enc->shift);
	if (enc->scale != 1)
		z = df_scale(g, z, enc->scale);
	if (!z)
		return df_graph_status(g, err);
	*latents = z;
	return DF_OK;
}

static int pixel_decode(void *self, df_graph *g, df_tensor *latents, df_tensor **images, df_error *err)
{
	const pixel *enc = self;
	*images = NULL;
	int status = pixel_check(enc, latents, "latents", err);
	if (status != DF_OK)
		return status;
	df_tensor *x = latents;
	if (enc->scale != 1)
		x = df_scale(g, x, 1 / enc->scale);
	if (enc->shift != 0)
		x = df_add_scalar(g, x, enc->shift);
	if (!x)
		return df_graph_status(g, err);
	*images = x;
	return DF_OK;
}

static const df_setting pixel_settings_decl[] = {
	DF_SETTING_FLOAT(pixel_settings, scale, "1", DF_ANY_MIN, DF_ANY_MAX,
	                 "latents are (images - shift) * scale; non-zero"),
	DF_SETTING_FLOAT(pixel_settings, shift, "0", DF_ANY_MIN, DF_ANY_MAX,
	                 "subtracted from the images before scaling"),
	DF_SETTINGS_END,
};

static const df_encoder_vtable pixel_vtable = {
	.struct_size = sizeof(df_encoder_vtable),
	.create = pixel_create,
	.destroy = pixel_destroy,
	.latent_shape = pixel_latent_shape,
	.encode = pixel_encode,
	.decode = pixel_decode,
	.params = NULL,
	.extension = NULL,
};

static const df_component pixel_component = {
	.struct_size = sizeof(df_component),
	.kind = DF_KIND_ENCODER,
	.name = "pixel",
	.summary = "the images themselves, optionally shifted and scaled: (x - shift) * scale",
	.settings = pixel_settings_decl,
	.settings_size = sizeof(pixel_settings),
	.vtable = &pixel_vtable,
};

DF_PLUGIN_DEFINE("pixel", PACKAGE_VERSION, "MIT", &pixel_component)
