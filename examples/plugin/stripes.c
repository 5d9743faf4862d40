/* stripes: an out-of-tree diffuse plugin, the template for third parties.
 *
 * A dataset of striped images: class k has stripes at k * 45 degrees, with
 * a period and phase drawn from (seed, index). Build it against an
 * installed diffuse with nothing but pkg-config (see Makefile), put the
 * .so in a folder on DIFFUSE_PLUGIN_PATH, and `diffuse plugins` lists it.
 *
 * A plugin is: a settings struct and its declaration (the runtime
 * validates pipeline files against it and fills the struct), a vtable of
 * the component's kind, a component descriptor, and DF_PLUGIN_DEFINE. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <diffuse/diffuse.h>

typedef struct stripes_settings {
	int64_t size;
	int64_t count;
	double min_period;
	double max_period;
	int64_t seed;
} stripes_settings;

static const df_setting stripes_settings_decl[] = {
	DF_SETTING_INT(stripes_settings, size, "32", 4, 512, "image height and width"),
	DF_SETTING_INT(stripes_settings, count, "1000", 1, 1e9, "number of images"),
	DF_SETTING_FLOAT(stripes_settings, min_period, "4", 2, 64, "shortest stripe period in pixels"),
	DF_SETTING_FLOAT(stripes_settings, max_period, "12", 2, 64, "longest stripe period in pixels"),
	DF_SETTING_INT(stripes_settings, seed, "0", 0, 1e15, "seed of periods and phases"),
	DF_SETTINGS_END,
};

enum { NUM_ORIENTATIONS = 4 };
#define STRIPES_PI 3.14159265358979323846

static int stripes_open(const void *settings, void **self, df_error *err)
{
	const stripes_settings *s = settings;
	if (s->min_period > s->max_period)
		return df_error_set(err, DF_EINVAL, "stripes: min_period %g is above max_period %g", s->min_period,
		                    s->max_period);
	stripes_settings *copy = malloc(sizeof *copy);
	if (!copy)
		return df_error_set(err, DF_ENOMEM, "stripes: out of memory");
	*copy = *s;
	*self = copy;
	return DF_OK;
}

static void stripes_close(void *self) { free(self); }

static void stripes_info(void *self, df_dataset_info *info)
{
	const stripes_settings *s = self;
	info->count = s->count;
	info->channels = 1;
	info->height = info->width = (int)s->size;
	info->num_classes = NUM_ORIENTATIONS;
}

static double hash_unit(uint64_t x)
{
	x = (x ^ (x >> 33)) * 0xff51afd7ed558ccdull;
	x = (x ^ (x >> 33)) * 0xc4ceb9fe1a85ec53ull;
	x ^= x >> 33;
	return (double)(x >> 11) / 9007199254740992.0;
}

static int stripes_fetch(void *self, const int64_t *indices, int64_t n, float *images, int32_t *labels,
                         df_error *err)
{
	const stripes_settings *s = self;
	const int size = (int)s->size;
	for (int64_t i = 0; i < n; i++) {
		int64_t index = indices[i];
		if (index < 0 || index >= s->count)
			return df_error_set(err, DF_EINVAL, "stripes: index %lld is outside [0, %lld)",
			                    (long long)index, (long long)s->count);
		uint64_t key = (uint64_t)s->seed * 0x9e3779b97f4a7c15ull + (uint64_t)index;
		int label = (int)(index % NUM_ORIENTATIONS);
		double period = s->min_period + (s->max_period - s->min_period) * hash_unit(key);
		double phase = 2 * STRIPES_PI * hash_unit(key ^ 0x5bd1e995u);
		double angle = label * STRIPES_PI / NUM_ORIENTATIONS;
		double kx = cos(angle) * 2 * STRIPES_PI / period, ky = sin(angle) * 2 * STRIPES_PI / period;
		float *image = images + i * size * size;
		for (int y = 0; y < size; y++)
			for (int x = 0; x < size; x++)
				image[y * size + x] = (float)sin(kx * x + ky * y + phase);
		labels[i] = label;
	}
	return DF_OK;
}

static const df_dataset_vtable stripes_vtable = {
	.struct_size = sizeof(df_dataset_vtable),
	.open = stripes_open,
	.close = stripes_close,
	.info = stripes_info,
	.fetch = stripes_fetch,
};

static const df_component stripes_component = {
	.struct_size = sizeof(df_component),
	.kind = DF_KIND_DATASET,
	.name = "stripes",
	.summary = "sine stripes at four orientations (4 classes), an out-of-tree example",
	.settings = stripes_settings_decl,
	.settings_size = sizeof(stripes_settings),
	.vtable = &stripes_vtable,
};

DF_PLUGIN_DEFINE("stripes", "1.0", "MIT", &stripes_component)
