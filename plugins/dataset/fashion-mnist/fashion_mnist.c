/* The fashion-mnist dataset: Zalando's Fashion-MNIST as Debian's
 * dataset-fashion-mnist package installs it (gzip-compressed IDX files).
 *
 * A split is read into memory once at open as bytes (47 MB for the
 * training images) and converted per fetch: optionally padded with the
 * background value -1 (centred), optionally resized, scaled to [-1, 1]. */
#include "config.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "diffuse/plugin.h"
#include "idx.h"
#include "../resample.h"

#define FMNIST_DEFAULT_ROOT "/usr/share/datasets/fashion-mnist"
#define FMNIST_PACKAGE_HINT "install the Debian package dataset-fashion-mnist"
#define FMNIST_CLASSES 10

typedef struct fmnist_settings {
	const char *root;
	const char *split;
	int64_t pad_to;
	int64_t resize;
	const char *filter;
	int64_t limit;
} fmnist_settings;

typedef struct fmnist {
	uint8_t *image_file, *label_file; /* whole decompressed files */
	idx_array images, labels;         /* views into them */
	int64_t count;
	resample_plan resample;
} fmnist;

static const char *const fmnist_splits[] = {"train", "test", NULL};

static void fmnist_close(void *self)
{
	fmnist *ds = self;
	if (!ds)
		return;
	free(ds->image_file);
	free(ds->label_file);
	free(ds);
}

/* Reads and parses one IDX file of the split; every message names it. */
static int fmnist_load(const char *root, const char *prefix, const char *what, int ndim, uint8_t **file,
                       idx_array *array, char *path, size_t path_size, df_error *err)
{
	int n = snprintf(path, path_size, "%s/%s-%s-ubyte.gz", root, prefix, what);
	if (n < 0 || (size_t)n >= path_size)
		return df_error_set(err, DF_EINVAL, "root \"%s\" is too long", root);
	size_t len;
	int status = idx_read_gz(path, IDX_MAX_FILE_BYTES, FMNIST_PACKAGE_HINT, file, &len, err);
	if (status != DF_OK)
		return status;
	status = idx_parse(*file, len, ndim, array, err);
	if (status != DF_OK)
		return df_error_prefix(err, status, "%s", path);
	return DF_OK;
}

static int fmnist_open(const void *settings, void **self, df_error *err)
{
	const fmnist_settings *s = settings;
	*self = NULL;
	const char *prefix;
	if (s->split && strcmp(s->split, "train") == 0)
		prefix = "train";
	else if (s->split && strcmp(s->split, "test") == 0)
		prefix = "t10k";
	else
		return df_error_set(err, DF_EINVAL, "split \"%s\" is neither train nor test", s->split ? s->split : "");
	resample_filter filter;
	int status = resample_filter_parse(s->filter, &filter, err);
	if (status != DF_OK)
		return status;
	if (s->limit < 0)
		return df_error_set(err, DF_EINVAL, "limit %lld is negative", (long long)s->limit);

	fmnist *ds = calloc(1, sizeof *ds);
	if (!ds)
		return df_error_set(err, DF_ENOMEM, "out of memory");
	const char *root = s->root && *s->root ? s->root : FMNIST_DEFAULT_ROOT;
	char image_path[PATH_MAX], label_path[PATH_MAX];
	status = fmnist_load(root, prefix, "images-idx3", 3, &ds->image_file, &ds->images, image_path,
	                     sizeof image_path, err);
	if (status == DF_OK)
		status = fmnist_load(root, prefix, "labels-idx1", 1, &ds->label_file, &ds->labels, label_path,
		                     sizeof label_path, err);
	if (status == DF_OK) {
		status = idx_check_labels(&ds->labels, FMNIST_CLASSES, err);
		if (status != DF_OK)
			df_error_prefix(err, status, "%s", label_path);
	}
	if (status == DF_OK && ds->labels.dims[0] != ds->images.dims[0])
		status = df_error_set(err, DF_EINVAL, "%s: %u labels for the %u images of %s", label_path,
		                      ds->labels.dims[0], ds->images.dims[0], image_path);
	if (status == DF_OK)
		status = resample_init(&ds->resample, (int)ds->images.dims[1], (int)ds->images.dims[2], s->pad_to,
		                       s->resize, s->resize, filter, err);
	if (status != DF_OK) {
		fmnist_close(ds);
		return status;
	}
	ds->count = ds->images.dims[0];
	if (s->limit > 0 && s->limit < ds->count)
		ds->count = s->limit;
	*self = ds;
	return DF_OK;
}

static void fmnist_info(void *self, df_dataset_info *info)
{
	const fmnist *ds = self;
	info->count = ds->count;
	info->channels = 1;
	info->height = ds->resample.out_height;
	info->width = ds->resample.out_width;
	info->num_classes = FMNIST_CLASSES;
}

static int fmnist_fetch(void *self, const int64_t *indices, int64_t n, float *images, int32_t *labels,
                        df_error *err)
{
	const fmnist *ds = self;
	size_t item_bytes = (size_t)ds->images.dims[1] * ds->images.dims[2];
	size_t out_size = (size_t)ds->resample.out_height * ds->resample.out_width;
	for (int64_t i = 0; i < n; i++) {
		int64_t index = indices[i];
		if (index < 0 || index >= ds->count)
			return df_error_set(err, DF_EINVAL, "index %lld is outside [0, %lld)", (long long)index,
			                    (long long)ds->count);
		if (images)
			resample_apply(&ds->resample, ds->images.data + (size_t)index * item_bytes, 1,
			                  images + (size_t)i * out_size);
		if (labels)
			labels[i] = ds->labels.data[index];
	}
	return DF_OK;
}

static const df_setting fmnist_settings_decl[] = {
	DF_SETTING_STRING(fmnist_settings, root, FMNIST_DEFAULT_ROOT,
	                  "folder of the IDX .gz files (Debian package dataset-fashion-mnist)"),
	DF_SETTING_CHOICE(fmnist_settings, split, "train", fmnist_splits, "train (60000 items) or test (10000)"),
	DF_SETTING_INT(fmnist_settings, pad_to, "0", 0, 4096,
	               "pad the 28x28 images, centred, with the background -1 to this square size (0: no padding)"),
	DF_SETTING_INT(fmnist_settings, resize, "0", 0, 4096,
	               "resize, after any padding, to this square size with `filter` (0: keep the size)"),
	DF_SETTING_CHOICE(fmnist_settings, filter, "bilinear", resample_filters,
	                  "resize filter: bilinear (half-pixel centres, as PyTorch's align_corners=False) or nearest"),
	DF_SETTING_INT(fmnist_settings, limit, "0", 0, 1e12, "use only the first N items (0: all)"),
	DF_SETTINGS_END,
};

static const df_dataset_vtable fmnist_vtable = {
	.struct_size = sizeof(df_dataset_vtable),
	.open = fmnist_open,
	.close = fmnist_close,
	.info = fmnist_info,
	.fetch = fmnist_fetch,
	.extension = NULL,
};

static const df_component fmnist_component = {
	.struct_size = sizeof(df_component),
	.kind = DF_KIND_DATASET,
	.name = "fashion-mnist",
	.summary = "Fashion-MNIST (28x28 grey, 10 classes) from the Debian package dataset-fashion-mnist",
	.settings = fmnist_settings_decl,
	.settings_size = sizeof(fmnist_settings),
	.vtable = &fmnist_vtable,
};

DF_PLUGIN_DEFINE("fashion-mnist", PACKAGE_VERSION, "MIT", &fmnist_component)
