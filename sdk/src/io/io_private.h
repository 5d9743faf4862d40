/* Helpers shared by the file-format units of libdiffuse (not installed). */
#ifndef DIFFUSE_SRC_IO_PRIVATE_H
#define DIFFUSE_SRC_IO_PRIVATE_H

#include <stdio.h>

#include "diffuse/io.h"

/* Fills err (if not NULL) with "subject: message". Returns `status`, so a
 * failure path reads `return df__fail(err, -EINVAL, path, "...", ...);`. */
int df__fail(df_error *err, int status, const char *subject, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

/* A float pixel in `range` as a byte: clamped, scaled to [0, 255] and
 * rounded; NaN becomes 0. */
uint8_t df__pixel_to_u8(float v, df_pixel_range range);

/* A file written beside its target and renamed over it on commit. */
typedef struct df__atomic_file {
	FILE *fp;
	char *tmp_path;
	const char *path;
} df__atomic_file;

/* Creates path.tmp.XXXXXX (mode 0644) and opens it for writing. */
int df__atomic_open(df__atomic_file *af, const char *path, df_error *err);
/* Flushes, fsyncs, closes and renames over the target; on any failure the
 * temporary file is removed. */
int df__atomic_commit(df__atomic_file *af, df_error *err);
/* Closes and removes the temporary file. */
void df__atomic_abort(df__atomic_file *af);

#endif
