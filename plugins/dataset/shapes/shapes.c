/* shapes: a synthetic dataset of filled circles, squares and triangles on
 * a dark background, one class per shape. Every item is a pure function of
 * (seed, index), so it needs no files and is the same on every machine:
 * the dataset for smoke tests and quick pipelines. */
#include "config.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "diffuse/diffuse.h"

typedef struct shapes_settings {
	int64_t size;
	int64_t count;
	int64_t channels;
	int64_t seed;
} shapes_settings;

static const df_setting shapes_settings_decl[] = {
	DF_SETTING_INT(shapes_settings, size, "32", 8, 256, "image height and width in pixels"),
	DF_SETTING_INT(shapes_settings, count, "10000", 1, 1e9, "number of images"),
	DF_SETTING_INT(shapes_settings, channels, "1", 1, 3, "colour channels (1 grey, 3 colour)"),
	DF_SETTING_INT(shapes_settings, seed, "0", 0, 1e15, "seed of the shapes' sizes, places and colours"),
	DF_SETTINGS_END,
};

enum { CIRCLE, SQUARE, TRIANGLE, NUM_SHAPES };

typedef struct shapes {
	shapes_settings s;
} shapes;

static int shapes_open(const void *settings, void **self, df_error *err)
{
	shapes *d = malloc(sizeof *d);
	if (!d)
		return df_error_set(err, DF_ENOMEM, "shapes: out of memory");
	memcpy(&d->s, settings, sizeof d->s);
	*self = d;
	return DF_OK;
}

static void shapes_close(void *self) { free(self); }

static void shapes_info(void *self, df_dataset_info *info)
{
	const shapes *d = self;
	info->count = d->s.count;
	info->channels = (int)d->s.channels;
	info->height = info->width = (int)d->s.size;
	info->num_classes = NUM_SHAPES;
}

/* splitmix64: a well-mixed 64-bit hash of the counter. */
static uint64_t mix(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ull;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

static double uniform(uint64_t *state)
{
	*state = mix(*state);
	return (double)(*state >> 11) / 9007199254740992.0;
}

static int inside(int shape, double x, double y, double cx, double cy, double r)
{
	double dx = x - cx, dy = y - cy;
	switch (shape) {
	case CIRCLE: return dx * dx + dy * dy <= r * r;
	case SQUARE: return fabs(dx) <= r && fabs(dy) <= r;
	default: /* upward triangle: apex at cy - r, base at cy + r */
		return dy <= r && dy >= -r && fabs(dx) <= (dy + r) / 2;
	}
}

static void draw(const shapes *d, int64_t index, float *image, int32_t *label)
{
	uint64_t state = mix((uint64_t)d->s.seed) ^ mix((uint64_t)index + 1);
	int shape = (int)(index % NUM_SHAPES);
	int n = (int)d->s.size, channels = (int)d->s.channels;
	double r = n * (0.15 + 0.15 * uniform(&state));
	double cx = r + (n - 2 * r) * uniform(&state);
	double cy = r + (n - 2 * r) * uniform(&state);
	float colour[3];
	for (int c = 0; c < 3; c++)
		colour[c] = (float)(0.2 + 0.8 * uniform(&state));
	for (int c = 0; c < channels; c++)
		for (int y = 0; y < n; y++)
			for (int x = 0; x < n; x++)
				image[((size_t)c * n + y) * n + x] =
					inside(shape, x + 0.5, y + 0.5, cx, cy, r) ? colour[c] * 2 - 1 : -1.0f;
	*label = shape;
}

static int shapes_fetch(void *self, const int64_t *indices, int64_t n, float *images, int32_t *labels,
                        df_error *err)
{
	const shapes *d = self;
	size_t per_image = (size_t)(d->s.channels * d->s.size * d->s.size);
	for (int64_t i = 0; i < n; i++) {
		if (indices[i] < 0 || indices[i] >= d->s.count)
			return df_error_set(err, DF_EINVAL, "shapes: index %lld outside [0, %lld)",
			                    (long long)indices[i], (long long)d->s.count);
		draw(d, indices[i], images + (size_t)i * per_image, &labels[i]);
	}
	return DF_OK;
}

static const df_dataset_vtable shapes_vtable = {
	.struct_size = sizeof(df_dataset_vtable),
	.open = shapes_open,
	.close = shapes_close,
	.info = shapes_info,
	.fetch = shapes_fetch,
};

static const df_component shapes_component = {
	.struct_size = sizeof(df_component),
	.kind = DF_KIND_DATASET,
	.name = "shapes",
	.summary = "synthetic circles, squares and triangles (3 classes), made from a seed",
	.settings = shapes_settings_decl,
	.settings_size = sizeof(shapes_settings),
	.vtable = &shapes_vtable,
};

DF_PLUGIN_DEFINE("shapes", PACKAGE_VERSION, "MIT", &shapes_component)
