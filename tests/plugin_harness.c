#define _GNU_SOURCE /* asprintf, nftw */
#include "config.h"
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "diffuse/runtime.h"
#include "plugin_harness.h"

const df_component *harness_component(df_kind kind, const char *name)
{
	const df_plugin *plugin = df_plugin_entry();
	assert_non_null(plugin);
	assert_int_equal(plugin->abi_major, DF_ABI_MAJOR);
	for (const df_component *const *c = plugin->components; *c; c++)
		if ((*c)->kind == kind && strcmp((*c)->name, name) == 0) {
			assert_true((*c)->struct_size >= sizeof(df_component));
			return *c;
		}
	fail_msg("the plugin has no component of kind %d named %s", (int)kind, name);
	return NULL;
}

void *harness_settings_v(const df_component *c, va_list ap)
{
	df_error err;
	if (df_settings_check(c->settings, c->settings_size, &err) != DF_OK)
		fail_msg("%s: %s", c->name, err.msg);
	void *settings = calloc(1, c->settings_size ? c->settings_size : 1);
	assert_non_null(settings);
	if (df_settings_defaults(c->settings, settings, &err) != DF_OK)
		fail_msg("%s: %s", c->name, err.msg);
	for (const char *key; (key = va_arg(ap, const char *));) {
		const char *value = va_arg(ap, const char *);
		if (df_settings_set(c->settings, settings, key, value, &err) != DF_OK)
			fail_msg("%s: %s", c->name, err.msg);
	}
	return settings;
}

void *harness_settings(const df_component *c, ...)
{
	va_list ap;
	va_start(ap, c);
	void *settings = harness_settings_v(c, ap);
	va_end(ap);
	return settings;
}

void harness_settings_free(const df_component *c, void *settings)
{
	if (settings)
		df_settings_release(c->settings, settings);
	free(settings);
}

const df_dataset_vtable *harness_dataset(const char *name)
{
	const df_dataset_vtable *vt = harness_component(DF_KIND_DATASET, name)->vtable;
	assert_true(vt->struct_size >= sizeof(df_dataset_vtable));
	return vt;
}

int harness_dataset_open(const char *name, void **ds, df_error *err, ...)
{
	const df_component *c = harness_component(DF_KIND_DATASET, name);
	va_list ap;
	va_start(ap, err);
	void *settings = harness_settings_v(c, ap);
	va_end(ap);
	memset(err->msg, 0, sizeof err->msg);
	*ds = (void *)1; /* must be cleared on failure */
	int status = harness_dataset(name)->open(settings, ds, err);
	harness_settings_free(c, settings);
	if (status != DF_OK)
		assert_null(*ds);
	return status;
}

char *harness_tmpdir(void)
{
	const char *base = getenv("TMPDIR");
	char *dir;
	assert_true(asprintf(&dir, "%s/diffuse-test-XXXXXX", base && *base ? base : ".") > 0);
	assert_non_null(mkdtemp(dir));
	return dir;
}

static int remove_entry(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
	(void)sb;
	(void)type;
	(void)ftw;
	return remove(path);
}

void harness_rmtree(char *dir)
{
	if (dir)
		nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
	free(dir);
}

char *harness_write_file(const char *dir, const char *name, const void *data, size_t len)
{
	char *path;
	assert_true(asprintf(&path, "%s/%s", dir, name) > 0);
	FILE *f = fopen(path, "wb");
	assert_non_null(f);
	assert_int_equal(fwrite(data, 1, len, f), len);
	assert_int_equal(fclose(f), 0);
	return path;
}
