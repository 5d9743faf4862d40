/* Helpers shared by the runtime's units; not exported (no df_ prefix). */
#ifndef DIFFUSE_RUNTIME_PRIVATE_H
#define DIFFUSE_RUNTIME_PRIVATE_H

#include <stddef.h>
#include <stdio.h>

#ifndef DF_PLUGIN_DIR
#error "DF_PLUGIN_DIR (the install's plugin directory) must be defined by the build"
#endif

/* Grows *array to hold need items of item_size; 0 on success. */
int dfr_grow(void **array, size_t *cap, size_t need, size_t item_size);

/* Writes path through write() into a temporary file beside it, then
 * renames it over path, so readers see the old or the new file whole. */
struct df_error;
int dfr_write_atomically(const char *path, int (*write)(const void *obj, FILE *out, struct df_error *err),
                         const void *obj, struct df_error *err);

#endif
