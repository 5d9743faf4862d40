/* IDX files (the MNIST family's format) of unsigned bytes.
 *
 * The parser works on a buffer, so the files and the fuzz target share it;
 * its messages say what is wrong without the file name, which the caller
 * adds in front. */
#ifndef DF_PLUGIN_IDX_H
#define DF_PLUGIN_IDX_H

#include <stddef.h>
#include <stdint.h>
#include "diffuse/error.h"

#define IDX_MAX_DIMS 3
/* The Fashion-MNIST training images are 47 MB decompressed; anything far
 * larger is not one of these files (and would be a gzip bomb). */
#define IDX_MAX_FILE_BYTES ((size_t)1 << 30)

/* An array parsed in place: data points into the caller's buffer. */
typedef struct idx_array {
	int ndim;
	uint32_t dims[IDX_MAX_DIMS];
	const uint8_t *data;
	size_t size; /* product of dims */
} idx_array;

/* Parses buf[0..len) as an IDX file of unsigned bytes with ndim (1..3)
 * dimensions, every one non-zero, holding exactly the bytes they need. */
int idx_parse(const uint8_t *buf, size_t len, int ndim, idx_array *out, df_error *err);

/* Every label of a one-dimensional array is below num_classes. */
int idx_check_labels(const idx_array *labels, int num_classes, df_error *err);

/* Reads a whole gzip-compressed (or plain) file into a new buffer of at
 * most max_bytes; the message names the file, and ends with if_missing
 * (when not NULL) if the file does not exist. Free *buf with free(). */
int idx_read_gz(const char *path, size_t max_bytes, const char *if_missing, uint8_t **buf, size_t *len,
                df_error *err);

#endif
