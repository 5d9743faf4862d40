/* Calling a plugin in a unit test without the runtime: the plugin's sources
 * are linked into the test, its component is looked up through
 * df_plugin_entry, and its settings struct is filled from the declared
 * defaults plus the test's overrides, as a pipeline section would fill it. */
#ifndef DF_TEST_PLUGIN_HARNESS_H
#define DF_TEST_PLUGIN_HARNESS_H

#include <stdarg.h>
#include "diffuse/plugin.h"

/* Defined by the plugin linked into the test (DF_PLUGIN_DEFINE). */
const df_plugin *df_plugin_entry(void);

/* The component `name` of `kind` in the linked plugin; fails the test if absent. */
const df_component *harness_component(df_kind kind, const char *name);

/* A settings struct with the declared defaults, then `key`, `value`
 * string pairs (NULL-terminated) written as after `-o key=value`, through
 * the runtime's df_settings_*: a bad declaration, an unknown key or a
 * value of the wrong type, range or choice fails the test. */
void *harness_settings(const df_component *c, ...);
void *harness_settings_v(const df_component *c, va_list pairs);
void harness_settings_free(const df_component *c, void *settings);

/* The vtable of the dataset component `name`. */
const df_dataset_vtable *harness_dataset(const char *name);
/* Opens it with settings pairs as above (NULL-terminated); returns the
 * status, and on failure checks that *ds is NULL. */
int harness_dataset_open(const char *name, void **ds, df_error *err, ...);

/* A fresh directory under $TMPDIR (or the current, build, directory) and
 * its removal with everything in it, folders included. */
char *harness_tmpdir(void);
void harness_rmtree(char *dir);

/* Writes len bytes to dir/name; returns the path (free it). */
char *harness_write_file(const char *dir, const char *name, const void *data, size_t len);

#endif
