/* Fixture plugins for the loader's tests. One source, several modules:
 * tests.am builds it with FIXTURE_* defines to make a good plugin and the
 * malformed ones the host must refuse. */
#include <stddef.h>
#include "diffuse/diffuse.h"
#include "fixture.h"

/* A prefix keeps every variant's component names apart, except where a
 * variant means to collide (FIXTURE_DUPLICATE). */
#ifndef FIXTURE_PREFIX
#define FIXTURE_PREFIX "test"
#endif

static const char *const methods[] = {"euler", "heun", NULL};

static const df_setting sampler_decl[] = {
	DF_SETTING_INT(sampler_settings, steps, "50", 1, 1000, "integration steps"),
#ifdef FIXTURE_BAD_DEFAULT
	DF_SETTING_FLOAT(sampler_settings, scale, "99", 0, 20, "guidance scale"),
#else
	DF_SETTING_FLOAT(sampler_settings, scale, "1.5", 0, 20, "guidance scale"),
#endif
	DF_SETTING_CHOICE(sampler_settings, method, "euler", methods, "integrator"),
	DF_SETTING_BOOL(sampler_settings, guidance, "true", "use classifier-free guidance"),
	DF_SETTING_LIST(sampler_settings, interval, "[0, 1]", 0, 1, "guidance interval"),
	DF_SETTING_STRING(sampler_settings, label, "hello", "free text"),
	DF_SETTINGS_END,
};

static int sampler_create(const void *settings, df_ctx *ctx, void **self, df_error *err)
{
	*self = NULL;
	return DF_OK;
}
static void sampler_destroy(void *self) {}
static int sampler_check(void *self, const df_process *process, df_error *err) { return DF_OK; }
#ifndef FIXTURE_MISSING_SLOT
static int sampler_sample(void *self, const df_process *process, const df_denoiser *denoiser,
                          df_sample_job *job, df_error *err)
{
	return df_error_set(err, DF_ENOTSUP, "fixture sampler: does not sample");
}
#endif
static void *sampler_extension(void *self, const char *name) { return NULL; }

static const df_sampler_vtable sampler_vtable = {
#ifdef FIXTURE_OLD_VTABLE
	/* Built before `extension` existed: the host must read it as NULL. */
	.struct_size = offsetof(df_sampler_vtable, extension),
#else
	.struct_size = sizeof(df_sampler_vtable),
#endif
	.create = sampler_create,
	.destroy = sampler_destroy,
	.check = sampler_check,
#ifndef FIXTURE_MISSING_SLOT
	.sample = sampler_sample,
#endif
	.extension = sampler_extension,
};

static const df_component sampler_component = {
	.struct_size = sizeof(df_component),
	.kind = DF_KIND_SAMPLER,
#ifdef FIXTURE_DUPLICATE
	.name = "test-sampler",
#else
	.name = FIXTURE_PREFIX "-sampler",
#endif
	.summary = "a sampler that only declares settings",
	.settings = sampler_decl,
	.settings_size = sizeof(sampler_settings),
	.vtable = &sampler_vtable,
};

static const df_setting data_decl[] = {
	DF_SETTING_STRING(data_settings, path, NULL, "where the data is (required)"),
	DF_SETTING_INT(data_settings, size, "28", 8, 64, "image size"),
	DF_SETTINGS_END,
};

static int data_open(const void *settings, void **self, df_error *err) { return DF_OK; }
static void data_close(void *self) {}
static void data_info(void *self, df_dataset_info *info) {}
static int data_fetch(void *self, const int64_t *indices, int64_t n, float *images, int32_t *labels,
                      df_error *err)
{
	return DF_OK;
}

static const df_dataset_vtable data_vtable = {
	.struct_size = sizeof(df_dataset_vtable),
	.open = data_open,
	.close = data_close,
	.info = data_info,
	.fetch = data_fetch,
};

static const df_component data_component = {
	.struct_size = sizeof(df_component),
	.kind = DF_KIND_DATASET,
	.name = FIXTURE_PREFIX "-data",
	.summary = "a dataset with a required setting",
	.settings = data_decl,
	.settings_size = sizeof(data_settings),
	.vtable = &data_vtable,
};

DF_PLUGIN_DEFINE(FIXTURE_PREFIX, "1.2.3", "MIT", &sampler_component, &data_component)
