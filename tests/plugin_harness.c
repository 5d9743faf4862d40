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

static void check_range(const df_setting *s, double v)
{
	if (v < s->min || v > s->max)
		fail_msg("setting %s: %g is outside [%g, %g]", s->name, v, s->min, s->max);
}

static void fill_one(const df_setting *s, char *field, const char *text)
{
	char *end = NULL;
	switch (s->type) {
	case DF_SETTING_INT: {
		long long v = strtoll(text, &end, 10);
		if (*text == '\0' || *end != '\0')
			fail_msg("setting %s: \"%s\" is not an integer", s->name, text);
		check_range(s, (double)v);
		*(int64_t *)field = v;
		break;
	}
	case DF_SETTING_FLOAT: {
		double v = strtod(text, &end);
		if (*text == '\0' || *end != '\0')
			fail_msg("setting %s: \"%s\" is not a number", s->name, text);
		check_range(s, v);
		*(double *)field = v;
		break;
	}
	case DF_SETTING_BOOL:
		if (strcmp(text, "true") != 0 && strcmp(text, "false") != 0)
			fail_msg("setting %s: \"%s\" is neither true nor false", s->name, text);
		*(int *)field = strcmp(text, "true") == 0;
		break;
	case DF_SETTING_STRING:
		if (s->choices) {
			int found = 0;
			for (const char *const *c = s->choices; *c; c++)
				found |= strcmp(*c, text) == 0;
			if (!found)
				fail_msg("setting %s: \"%s\" is not one of its choices", s->name, text);
		}
		free(*(char **)field);
		*(char **)field = strdup(text);
		break;
	case DF_SETTING_LIST: {
		df_list *list = (df_list *)field;
		list->n = 0;
		const char *p = text;
		while (*p == '[' || *p == ' ')
			p++;
		while (*p && *p != ']') {
			if (list->n == DF_LIST_MAX)
				fail_msg("setting %s: more than %d items", s->name, DF_LIST_MAX);
			list->v[list->n] = strtod(p, &end);
			if (end == p)
				fail_msg("setting %s: \"%s\" is not a list of numbers", s->name, text);
			check_range(s, list->v[list->n++]);
			for (p = end; *p == ',' || *p == ' '; p++)
				;
		}
		break;
	}
	default:
		fail_msg("setting %s: unknown type %d", s->name, (int)s->type);
	}
}

void *harness_settings_v(const df_component *c, va_list ap)
{
	char *settings = calloc(1, c->settings_size ? c->settings_size : 1);
	assert_non_null(settings);
	for (const df_setting *s = c->settings; s && s->name; s++) {
		if (!s->default_value)
			continue;
		assert_true(s->offset < c->settings_size);
		fill_one(s, settings + s->offset, s->default_value);
	}
	for (const char *key; (key = va_arg(ap, const char *));) {
		const char *value = va_arg(ap, const char *);
		const df_setting *s = c->settings;
		while (s && s->name && strcmp(s->name, key) != 0)
			s++;
		if (!s || !s->name)
			fail_msg("%s has no setting %s", c->name, key);
		fill_one(s, settings + s->offset, value);
	}
	for (const df_setting *s = c->settings; s && s->name; s++)
		if (!s->default_value && s->type == DF_SETTING_STRING && !*(char **)(settings + s->offset))
			fail_msg("%s: the required setting %s was not given", c->name, s->name);
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
	if (!settings)
		return;
	for (const df_setting *s = c->settings; s && s->name; s++)
		if (s->type == DF_SETTING_STRING)
			free(*(char **)((char *)settings + s->offset));
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
	assert_true(asprintf(&dir, "%s/diffuse-test-XXXXXX", base && *base ? base : "/tmp") > 0);
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
