#include "config.h"
#include "idx.h"

#include <errno.h>
#include <stdio.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#define IDX_TYPE_UBYTE 0x08

static uint32_t read_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

int idx_parse(const uint8_t *buf, size_t len, int ndim, idx_array *out, df_error *err)
{
	if (ndim < 1 || ndim > IDX_MAX_DIMS)
		return df_error_set(err, DF_EINVAL, "an IDX array of %d dimensions is not supported", ndim);
	if (len < 4)
		return df_error_set(err, DF_EINVAL, "truncated at byte %zu (the IDX magic number needs 4 bytes)", len);
	uint32_t magic = read_be32(buf);
	uint32_t expected = IDX_TYPE_UBYTE << 8 | (uint32_t)ndim;
	if (magic != expected)
		return df_error_set(err, DF_EINVAL,
		                    "bad magic 0x%08x (expected 0x%08x: IDX, unsigned bytes, %d dimension%s)",
		                    magic, expected, ndim, ndim == 1 ? "" : "s");

	size_t header = 4 + 4 * (size_t)ndim;
	if (len < header)
		return df_error_set(err, DF_EINVAL, "truncated at byte %zu (the IDX header needs %zu bytes)", len, header);
	size_t size = 1;
	int overflow = 0;
	char shape[64] = "";
	for (int d = 0; d < ndim; d++) {
		uint32_t dim = read_be32(buf + 4 + 4 * d);
		if (dim == 0)
			return df_error_set(err, DF_EINVAL, "dimension %d is zero", d + 1);
		if (size > (SIZE_MAX - header) / dim)
			overflow = 1;
		else
			size *= dim;
		out->dims[d] = dim;
		size_t used = strlen(shape);
		snprintf(shape + used, sizeof shape - used, "%s%u", d ? "x" : "", dim);
	}
	if (overflow)
		return df_error_set(err, DF_EINVAL, "truncated at byte %zu (%s bytes would not fit in memory)", len, shape);
	if (len < header + size)
		return df_error_set(err, DF_EINVAL, "truncated at byte %zu (expected %zu bytes for %s)", len,
		                    header + size, shape);
	if (len > header + size)
		return df_error_set(err, DF_EINVAL, "%zu unexpected bytes after the data (expected %zu bytes for %s)",
		                    len - header - size, header + size, shape);
	out->ndim = ndim;
	out->data = buf + header;
	out->size = size;
	return DF_OK;
}

int idx_check_labels(const idx_array *labels, int num_classes, df_error *err)
{
	if (labels->ndim != 1)
		return df_error_set(err, DF_EINVAL, "labels have %d dimensions, expected 1", labels->ndim);
	for (size_t i = 0; i < labels->size; i++)
		if (labels->data[i] >= num_classes)
			return df_error_set(err, DF_EINVAL, "label %u of item %zu is not a class 0..%d",
			                    labels->data[i], i, num_classes - 1);
	return DF_OK;
}

int idx_read_gz(const char *path, size_t max_bytes, const char *if_missing, uint8_t **buf, size_t *len,
                df_error *err)
{
	*buf = NULL;
	*len = 0;
	errno = 0;
	gzFile gz = gzopen(path, "rb");
	if (!gz) {
		int open_errno = errno;
		return df_error_set(err, DF_EIO, "%s: cannot open (%s)%s%s", path,
		                    open_errno ? strerror(open_errno) : "out of memory",
		                    open_errno == ENOENT && if_missing ? "; " : "",
		                    open_errno == ENOENT && if_missing ? if_missing : "");
	}

	size_t cap = 1 << 20, used = 0;
	uint8_t *data = NULL;
	int status = DF_OK;
	for (;;) {
		if (used == cap || !data) {
			if (data)
				cap *= 2;
			uint8_t *grown = realloc(data, cap);
			if (!grown) {
				status = df_error_set(err, DF_ENOMEM, "%s: out of memory reading %zu bytes", path, cap);
				break;
			}
			data = grown;
		}
		size_t want = cap - used;
		if (want > INT_MAX)
			want = INT_MAX;
		int got = gzread(gz, data + used, (unsigned)want);
		if (got < 0) {
			int zerr;
			const char *why = gzerror(gz, &zerr);
			if (zerr == Z_ERRNO)
				status = df_error_set(err, DF_EIO, "%s: cannot read (%s)", path, strerror(errno));
			else
				status = df_error_set(err, DF_EINVAL, "%s: corrupt gzip data after %zu bytes (%s)", path,
				                      used, why);
			break;
		}
		used += (size_t)got;
		if (used > max_bytes) {
			status = df_error_set(err, DF_EINVAL, "%s: larger than %zu bytes decompressed, not an IDX file of this dataset",
			                      path, max_bytes);
			break;
		}
		if (got == 0) {
			/* gzread also returns 0 on a stream cut short: ask. */
			int zerr;
			const char *why = gzerror(gz, &zerr);
			if (zerr != Z_OK)
				status = df_error_set(err, DF_EINVAL, "%s: corrupt gzip data after %zu bytes (%s)", path,
				                      used, why);
			break;
		}
	}
	gzclose(gz);
	if (status != DF_OK) {
		free(data);
		return status;
	}
	/* Give back the slack of the last doubling (up to half the buffer). */
	uint8_t *fitted = used ? realloc(data, used) : NULL;
	if (fitted)
		data = fitted;
	*buf = data;
	*len = used;
	return DF_OK;
}
