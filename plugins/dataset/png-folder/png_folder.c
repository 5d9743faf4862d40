/* The png-folder dataset: a folder of PNG files, or a folder of class
 * folders of PNG files.
 *
 * Names are sorted bytewise (not by locale), so the item order and the
 * labels are the same on every machine: with class folders, the sorted
 * folder names are the classes 0..K-1 and their files follow in that
 * order; without, items are unlabelled (label -1). Every image is decoded
 * once at open, converted to `channels` (grey replicated to RGB, RGB to
 * grey by luma, alpha dropped) and kept as bytes, so a bad file fails the
 * open, not a training step; fetch scales to [-1, 1] and resizes if asked. */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "diffuse/io.h"
#include "diffuse/plugin.h"
#include "../resample.h"

typedef struct pngf_settings {
	const char *root;
	int64_t size;
	int64_t channels;
	int resize;
	const char *filter;
	int64_t limit;
} pngf_settings;

typedef struct pngf_item {
	size_t offset; /* of its pixels (HWC) in pngf.pixels */
	int height, width;
	int32_t label;
} pngf_item;

typedef struct pngf {
	uint8_t *pixels;
	size_t pixels_used, pixels_cap;
	pngf_item *items;
	int64_t count, items_cap;
	int channels, height, width; /* what fetch hands out */
	int num_classes;
	int resize;
	resample_filter filter;
} pngf;

/* A directory's visible entries, sorted bytewise. */
typedef struct name_list {
	char **names;
	size_t n;
} name_list;

static void name_list_free(name_list *list)
{
	for (size_t i = 0; i < list->n; i++)
		free(list->names[i]);
	free(list->names);
	list->names = NULL;
	list->n = 0;
}

static int compare_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static int list_dir(const char *path, name_list *list, df_error *err)
{
	list->names = NULL;
	list->n = 0;
	DIR *dir = opendir(path);
	if (!dir)
		return df_error_set(err, DF_EIO, "%s: cannot open the folder (%s)", path, strerror(errno));
	size_t cap = 0;
	int status = DF_OK;
	for (struct dirent *e; status == DF_OK && (e = readdir(dir));) {
		if (e->d_name[0] == '.')
			continue;
		if (list->n == cap) {
			cap = cap ? 2 * cap : 64;
			char **grown = realloc(list->names, cap * sizeof *grown);
			if (!grown) {
				status = df_error_set(err, DF_ENOMEM, "%s: out of memory listing the folder", path);
				break;
			}
			list->names = grown;
		}
		if (!(list->names[list->n] = strdup(e->d_name)))
			status = df_error_set(err, DF_ENOMEM, "%s: out of memory listing the folder", path);
		else
			list->n++;
	}
	closedir(dir);
	if (status != DF_OK) {
		name_list_free(list);
		return status;
	}
	if (list->n)
		qsort(list->names, list->n, sizeof *list->names, compare_names);
	return DF_OK;
}

static char *join_path(const char *dir, const char *name, df_error *err)
{
	size_t len = strlen(dir) + 1 + strlen(name) + 1;
	char *path = malloc(len);
	if (!path) {
		df_error_set(err, DF_ENOMEM, "out of memory");
		return NULL;
	}
	snprintf(path, len, "%s/%s", dir, name);
	return path;
}

static int is_png_name(const char *name)
{
	size_t len = strlen(name);
	return len > 4 && strcasecmp(name + len - 4, ".png") == 0;
}

static int is_dir(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* df_png_read returns negative errno values; datasets speak df_status. */
static int status_of_errno(int e)
{
	return e == -ENOMEM ? DF_ENOMEM : e == -EINVAL ? DF_EINVAL : DF_EIO;
}

/* Decodes one file and appends it as item `label`. */
static int pngf_add(pngf *ds, const pngf_settings *s, const char *path, int32_t label, df_error *err)
{
	df_image img = {0};
	int e = df_png_read(path, ds->channels, &img, err);
	if (e != 0)
		return status_of_errno(e);
	int status = DF_OK;
	if (ds->count == 0 && !s->size) {
		/* Without a size, the first image sets it. */
		ds->height = img.height;
		ds->width = img.width;
	}
	if (!ds->resize && (img.height != ds->height || img.width != ds->width))
		status = df_error_set(err, DF_EINVAL, "%s: %dx%d pixels, expected %dx%d (or set resize = true)", path,
		                      img.width, img.height, ds->width, ds->height);
	size_t bytes = (size_t)img.height * img.width * ds->channels;
	if (status == DF_OK && ds->pixels_cap - ds->pixels_used < bytes) {
		size_t cap = ds->pixels_cap ? ds->pixels_cap : 1 << 20;
		while (cap - ds->pixels_used < bytes)
			cap *= 2;
		uint8_t *grown = realloc(ds->pixels, cap);
		if (grown) {
			ds->pixels = grown;
			ds->pixels_cap = cap;
		} else {
			status = df_error_set(err, DF_ENOMEM, "%s: out of memory holding the images", path);
		}
	}
	if (status == DF_OK && ds->count == ds->items_cap) {
		int64_t cap = ds->items_cap ? 2 * ds->items_cap : 256;
		pngf_item *grown = realloc(ds->items, (size_t)cap * sizeof *grown);
		if (grown) {
			ds->items = grown;
			ds->items_cap = cap;
		} else {
			status = df_error_set(err, DF_ENOMEM, "%s: out of memory", path);
		}
	}
	if (status == DF_OK) {
		memcpy(ds->pixels + ds->pixels_used, img.pixels, bytes);
		ds->items[ds->count++] = (pngf_item){ds->pixels_used, img.height, img.width, label};
		ds->pixels_used += bytes;
	}
	df_image_free(&img);
	return status;
}

static int pngf_full(const pngf *ds, const pngf_settings *s)
{
	return s->limit > 0 && ds->count >= s->limit;
}

/* Adds the PNG files of `dir` (all visible entries must be PNG files or,
 * when `allow_dirs`, folders, which are skipped) with `label`. */
static int pngf_add_folder(pngf *ds, const pngf_settings *s, const char *dir, const name_list *names,
                           int32_t label, int allow_dirs, df_error *err)
{
	int status = DF_OK;
	int64_t before = ds->count;
	for (size_t i = 0; status == DF_OK && i < names->n && !pngf_full(ds, s); i++) {
		char *path = join_path(dir, names->names[i], err);
		if (!path)
			return DF_ENOMEM;
		if (is_dir(path)) {
			if (!allow_dirs)
				status = df_error_set(err, DF_EINVAL, "%s: a folder inside a class folder", path);
		} else if (!is_png_name(names->names[i])) {
			status = df_error_set(err, DF_EINVAL, "%s: not a .png file", path);
		} else if (allow_dirs && label < 0 && ds->num_classes > 0) {
			status = df_error_set(err, DF_EINVAL, "%s: a PNG file beside class folders", path);
		} else {
			status = pngf_add(ds, s, path, label, err);
		}
		free(path);
	}
	if (status == DF_OK && ds->count == before && !pngf_full(ds, s) && (label >= 0 || ds->num_classes == 0))
		status = df_error_set(err, DF_EINVAL, "%s: no PNG files", dir);
	return status;
}

static void pngf_close(void *self)
{
	pngf *ds = self;
	if (!ds)
		return;
	free(ds->pixels);
	free(ds->items);
	free(ds);
}

static int pngf_open(const void *settings, void **self, df_error *err)
{
	const pngf_settings *s = settings;
	*self = NULL;
	if (!s->root || !*s->root)
		return df_error_set(err, DF_EINVAL, "root is not set: name the folder of PNG files");
	if (s->channels != 1 && s->channels != 3)
		return df_error_set(err, DF_EINVAL, "channels %lld is neither 1 (grey) nor 3 (RGB)",
		                    (long long)s->channels);
	if (s->size < 0 || s->size > DF_PNG_MAX_DIM)
		return df_error_set(err, DF_EINVAL, "size %lld is outside [0, %d]", (long long)s->size, DF_PNG_MAX_DIM);
	if (s->limit < 0)
		return df_error_set(err, DF_EINVAL, "limit %lld is negative", (long long)s->limit);
	resample_filter filter;
	int status = resample_filter_parse(s->filter, &filter, err);
	if (status != DF_OK)
		return status;

	pngf *ds = calloc(1, sizeof *ds);
	if (!ds)
		return df_error_set(err, DF_ENOMEM, "out of memory");
	ds->channels = (int)s->channels;
	ds->height = ds->width = (int)s->size;
	ds->resize = s->resize;
	ds->filter = filter;

	name_list top;
	status = list_dir(s->root, &top, err);
	/* Class folders make a labelled dataset; count them first so a PNG
	 * file beside them is refused. */
	for (size_t i = 0; status == DF_OK && i < top.n; i++) {
		char *path = join_path(s->root, top.names[i], err);
		if (!path)
			status = DF_ENOMEM;
		else if (is_dir(path))
			ds->num_classes++;
		free(path);
	}
	if (status == DF_OK)
		status = pngf_add_folder(ds, s, s->root, &top, -1, 1, err);
	for (size_t i = 0, label = 0; status == DF_OK && ds->num_classes && i < top.n; i++) {
		char *path = join_path(s->root, top.names[i], err);
		if (!path) {
			status = DF_ENOMEM;
			break;
		}
		if (is_dir(path)) {
			name_list files;
			status = list_dir(path, &files, err);
			if (status == DF_OK)
				status = pngf_add_folder(ds, s, path, &files, (int32_t)label++, 0, err);
			name_list_free(&files);
		}
		free(path);
	}
	name_list_free(&top);
	if (status != DF_OK) {
		pngf_close(ds);
		return status;
	}
	*self = ds;
	return DF_OK;
}

static void pngf_info(void *self, df_dataset_info *info)
{
	const pngf *ds = self;
	info->count = ds->count;
	info->channels = ds->channels;
	info->height = ds->height;
	info->width = ds->width;
	info->num_classes = ds->num_classes;
}

static int pngf_fetch(void *self, const int64_t *indices, int64_t n, float *images, int32_t *labels,
                      df_error *err)
{
	const pngf *ds = self;
	size_t plane = (size_t)ds->height * ds->width;
	for (int64_t i = 0; i < n; i++) {
		int64_t index = indices[i];
		if (index < 0 || index >= ds->count)
			return df_error_set(err, DF_EINVAL, "index %lld is outside [0, %lld)", (long long)index,
			                    (long long)ds->count);
		const pngf_item *item = &ds->items[index];
		if (images) {
			resample_plan plan;
			int status = resample_init(&plan, item->height, item->width, 0, ds->height, ds->width,
			                           ds->filter, err);
			if (status != DF_OK)
				return status;
			for (int c = 0; c < ds->channels; c++)
				resample_apply(&plan, ds->pixels + item->offset + c, ds->channels,
				               images + ((size_t)i * ds->channels + c) * plane);
		}
		if (labels)
			labels[i] = item->label;
	}
	return DF_OK;
}

static const df_setting pngf_settings_decl[] = {
	DF_SETTING_STRING(pngf_settings, root, NULL,
	                  "folder of PNG files, or of class folders of PNG files (sorted names are labels 0..K-1)"),
	DF_SETTING_INT(pngf_settings, size, "0", 0, DF_PNG_MAX_DIM,
	               "square side every image has (or is resized to); 0: the first image's size"),
	DF_SETTING_INT(pngf_settings, channels, "3", 1, 3, "1 (grey) or 3 (RGB); files are converted"),
	DF_SETTING_BOOL(pngf_settings, resize, "false", "resize images of another size instead of refusing them"),
	DF_SETTING_CHOICE(pngf_settings, filter, "bilinear", resample_filters,
	                  "resize filter: bilinear (half-pixel centres, as PyTorch's align_corners=False) or nearest"),
	DF_SETTING_INT(pngf_settings, limit, "0", 0, 1e12, "use only the first N items in name order (0: all)"),
	DF_SETTINGS_END,
};

static const df_dataset_vtable pngf_vtable = {
	.struct_size = sizeof(df_dataset_vtable),
	.open = pngf_open,
	.close = pngf_close,
	.info = pngf_info,
	.fetch = pngf_fetch,
	.extension = NULL,
};

static const df_component pngf_component = {
	.struct_size = sizeof(df_component),
	.kind = DF_KIND_DATASET,
	.name = "png-folder",
	.summary = "a folder of PNG images, optionally in class folders, at one fixed size",
	.settings = pngf_settings_decl,
	.settings_size = sizeof(pngf_settings),
	.vtable = &pngf_vtable,
};

DF_PLUGIN_DEFINE("png-folder", PACKAGE_VERSION, "MIT", &pngf_component)
