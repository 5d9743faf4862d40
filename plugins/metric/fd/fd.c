/* The `fd` metric: the Fréchet distance between Gaussian fits of the
 * features of the real and the generated images (FID's formula; with the
 * default fmnist-net features it is FD-FMNIST). */
#include "config.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "diffuse/eval.h"
#include "extractor.h"
#include "gaussian.h"

typedef struct fd_settings {
	const char *features;
	const char *weights;
} fd_settings;

static const df_setting fd_settings_decl[] = {
	DFF_SETTINGS(fd_settings),
	DF_SETTINGS_END,
};

typedef struct fd_metric {
	dff_extractor *fx;
	char tag[4200]; /* the features and their weights, for cached statistics */
	dff_moments sets[2]; /* generated, real */
	float *features;
	int64_t capacity;
} fd_metric;

static void fd_destroy(void *self)
{
	fd_metric *m = self;
	if (!m)
		return;
	dff_destroy(m->fx);
	dff_moments_free(&m->sets[0]);
	dff_moments_free(&m->sets[1]);
	free(m->features);
	free(m);
}

static int fd_create(const void *settings, df_ctx *ctx, df_shape3 image, void **self, df_error *err)
{
	fd_metric *m = calloc(1, sizeof *m);
	if (!m)
		return df_error_set(err, DF_ENOMEM, "out of memory");
	const fd_settings *s = settings;
	snprintf(m->tag, sizeof m->tag, "%s %s %dx%dx%d", s->features, s->weights && *s->weights ? s->weights : "shipped",
	         image.channels, image.height, image.width);
	int rc = dff_create(&m->fx, settings, ctx, image, err);
	for (int set = 0; set < 2 && !rc; set++)
		rc = dff_moments_init(&m->sets[set], dff_dim(m->fx), err);
	if (rc) {
		fd_destroy(m);
		return rc;
	}
	*self = m;
	return DF_OK;
}

static int fd_update(void *self, int real, const float *images, const int32_t *labels, int64_t n, df_error *err)
{
	(void)labels;
	fd_metric *m = self;
	if (n > m->capacity) {
		float *grown = realloc(m->features, (size_t)n * (size_t)dff_dim(m->fx) * sizeof *grown);
		if (!grown)
			return df_error_set(err, DF_ENOMEM, "out of memory");
		m->features = grown;
		m->capacity = n;
	}
	int rc = dff_extract(m->fx, images, n, m->features, NULL, err);
	return rc ? rc : dff_moments_add(&m->sets[real ? 1 : 0], m->features, n, err);
}

static int fd_result(void *self, df_metric_value *values, int max, df_error *err)
{
	fd_metric *m = self;
	const int d = dff_dim(m->fx);
	const size_t dd = (size_t)d * (size_t)d;
	double *mean = malloc(2 * (size_t)d * sizeof *mean), *cov = malloc(2 * dd * sizeof *cov);
	int rc = mean && cov ? DF_OK : df_error_set(err, DF_ENOMEM, "out of memory");
	for (int s = 0; s < 2 && !rc; s++) {
		rc = dff_moments_get(&m->sets[s], mean + s * d, cov + s * dd, err);
		if (rc)
			df_error_prefix(err, rc, "%s images", s ? "real" : "generated");
	}
	double fd = 0;
	if (!rc)
		rc = dff_frechet(d, mean, cov, mean + d, cov + dd, &fd, err);
	free(mean);
	free(cov);
	if (rc)
		return rc;
	if (max < 1)
		return 0;
	values[0] = (df_metric_value){"fd", fd};
	return 1;
}

static int fd_save_real(void *self, const char *path, df_error *err)
{
	fd_metric *m = self;
	return dff_moments_save(&m->sets[1], path, m->tag, err);
}

static int fd_load_real(void *self, const char *path, df_error *err)
{
	fd_metric *m = self;
	dff_moments loaded;
	int rc = dff_moments_init(&loaded, m->sets[1].dim, err);
	if (!rc)
		rc = dff_moments_load(&loaded, path, m->tag, err);
	if (rc) {
		dff_moments_free(&loaded);
		return rc;
	}
	dff_moments_free(&m->sets[1]);
	m->sets[1] = loaded;
	return DF_OK;
}

static int64_t fd_real_count(void *self)
{
	return ((fd_metric *)self)->sets[1].count;
}

static const df_metric_reference_stats fd_reference = {
	sizeof(df_metric_reference_stats), fd_save_real, fd_load_real, fd_real_count,
};

static void *fd_extension(void *self, const char *name)
{
	(void)self;
	return name && strcmp(name, DF_METRIC_REFERENCE_STATS) == 0 ? (void *)&fd_reference : NULL;
}

static const df_metric_vtable fd_vtable = {
	sizeof(df_metric_vtable), fd_create, fd_destroy, fd_update, fd_result, fd_extension,
};

static const df_component fd_component = {
	sizeof(df_component), DF_KIND_METRIC, "fd",
	"Fréchet distance between Gaussian fits of real and generated features (FD-FMNIST by default, FID with inception)",
	fd_settings_decl, sizeof(fd_settings), &fd_vtable,
};

DF_PLUGIN_DEFINE("fd", PACKAGE_VERSION, "MIT", &fd_component)
