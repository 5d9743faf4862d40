/* The `fmnist-net` backbone: the classifier of fmnist_net.h as a
 * component, so `diffuse train` trains it like any model. Its forward
 * returns logits (N, 10) and ignores t and the labels. */
#include "config.h"
#include <stdlib.h>
#include <string.h>
#include "fmnist_net.h"

static int backbone_create(const void *settings, df_ctx *ctx, const df_backbone_shape *shape, void **self,
                           df_error *err)
{
	(void)settings;
	const df_shape3 *in = &shape->input;
	if (in->channels != 1 || in->height != FMNIST_NET_SIZE || in->width != FMNIST_NET_SIZE)
		return df_error_set(err, DF_EINVAL, "takes 1x28x28 images, the data is %dx%dx%d (drop pad_to and resize)",
		                    in->channels, in->height, in->width);
	if (shape->num_classes != FMNIST_NET_CLASSES)
		return df_error_set(err, DF_EINVAL, "classifies 10 classes, the dataset has %d", shape->num_classes);
	return fmnist_net_create((fmnist_net **)self, ctx, err);
}

static void backbone_destroy(void *self)
{
	fmnist_net_destroy(self);
}

static df_params *backbone_params(void *self)
{
	return ((fmnist_net *)self)->params;
}

static int backbone_init(void *self, uint64_t seed, df_error *err)
{
	return fmnist_net_init(self, seed, err);
}

static int backbone_forward(void *self, df_graph *g, const df_backbone_input *in, df_tensor **out, df_error *err)
{
	if (in->hidden_block > 0)
		return df_error_set(err, DF_ENOTSUP, "fmnist-net has no hidden blocks to return");
	return fmnist_net_forward(self, g, in->x, NULL, out, err);
}

static int backbone_load(void *self, const char *path, df_error *err)
{
	return fmnist_net_load(self, path, err);
}

/* "load-safetensors", as the dit backbone offers it. */
static void *backbone_extension(void *self, const char *name)
{
	(void)self;
	if (name && strcmp(name, "load-safetensors") == 0)
		return (void *)backbone_load;
	return NULL;
}

static const df_backbone_vtable fmnist_net_vtable = {
	sizeof(df_backbone_vtable), backbone_create, backbone_destroy, backbone_params, backbone_init,
	backbone_forward,           backbone_extension,
};

const df_component fmnist_net_component = {
	sizeof(df_component), DF_KIND_BACKBONE, "fmnist-net",
	"Fashion-MNIST classifier (3 conv + GroupNorm, 2 linear); logits (N, 10); its penultimate layer is the FD-FMNIST feature space",
	NULL, 0, &fmnist_net_vtable,
};

DF_PLUGIN_DEFINE("fmnist-net", PACKAGE_VERSION, "MIT", &fmnist_net_component)
