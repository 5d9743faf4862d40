/* For test programs that load the build's plugins through a registry, as
 * the runtime does: one cpu context and the registry for the whole
 * program, and component settings from "name=value;..." strings.
 * Header-only; each test is one binary built with DF_TEST_PLUGIN_PATH. */
#ifndef DIFFUSE_REGISTRY_FIXTURE_H
#define DIFFUSE_REGISTRY_FIXTURE_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include "diffuse/runtime.h"

static df_ctx *ctx;
static df_registry *reg;

/* 0, or -1 after saying why on stderr. */
static inline int registry_open(void)
{
	df_error err;
	if (df_ctx_create(&ctx, "cpu", 1, &err) || df_registry_create(&reg, &err) ||
	    df_registry_load_path(reg, DF_TEST_PLUGIN_PATH, NULL, &err)) {
		fprintf(stderr, "setup: %s\n", err.msg);
		return -1;
	}
	for (size_t i = 0; i < df_registry_refusal_count(reg); i++)
		fprintf(stderr, "refused: %s\n", df_registry_refusal(reg, i));
	return 0;
}

static inline void registry_close(void)
{
	df_registry_destroy(reg);
	df_ctx_destroy(ctx);
}

static inline int registry_setup(void **state)
{
	(void)state;
	return registry_open();
}

static inline int registry_teardown(void **state)
{
	(void)state;
	registry_close();
	return 0;
}

/* The loaded component of that kind and name (the test fails without it). */
static inline const df_component *registry_component(df_kind kind, const char *name)
{
	const df_component_info *info = df_registry_find(reg, kind, name);
	if (!info) {
		print_error("component '%s' not loaded\n", name);
		fail();
	}
	return info->component;
}

/* comp's settings: its defaults, then each "name=value" of the
 * ';'-separated list (the test fails on a bad one). Release with
 * registry_settings_free. */
static inline void *registry_settings(const df_component *comp, const char *settings)
{
	df_error err;
	void *values = calloc(1, comp->settings_size);
	assert_non_null(values);
	assert_int_equal(df_settings_defaults(comp->settings, values, &err), 0);
	char buf[256];
	snprintf(buf, sizeof buf, "%s", settings ? settings : "");
	for (char *save = NULL, *kv = strtok_r(buf, ";", &save); kv; kv = strtok_r(NULL, ";", &save)) {
		char *eq = strchr(kv, '=');
		assert_non_null(eq);
		*eq = '\0';
		if (df_settings_set(comp->settings, values, kv, eq + 1, &err)) {
			print_error("%s: %s\n", comp->name, err.msg);
			fail();
		}
	}
	return values;
}

static inline void registry_settings_free(const df_component *comp, void *values)
{
	df_settings_release(comp->settings, values);
	free(values);
}

#endif
