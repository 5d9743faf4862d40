/* diffuse: file formats — safetensors (checkpoints, parity dumps), PNG
 * images and image grids.
 *
 * Every function that can fail returns 0 on success or a negative errno
 * value (-EINVAL bad input or malformed file, -ENOMEM, -EIO and the like)
 * and fills the caller's df_error (which may be NULL) with one line of the
 * form "path: what is wrong". Malformed files never crash, abort or exit.
 * Writers are atomic: they write "path.tmp.XXXXXX" beside the target,
 * fsync it and rename it over the target, so a reader sees the old file or
 * the complete new one, and a failed write leaves no partial file behind.
 */
#ifndef DIFFUSE_IO_H
#define DIFFUSE_IO_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#ifndef DF_ERROR_DEFINED
#define DF_ERROR_DEFINED
/* A one-line, human-readable error message. */
typedef struct df_error {
	char msg[512];
} df_error;
#endif

/* ----------------------------------------------------------- safetensors */

/* Element types of the safetensors format (little-endian). */
typedef enum df_safetensors_dtype {
	DF_ST_BOOL,
	DF_ST_U8,
	DF_ST_I8,
	DF_ST_I16,
	DF_ST_U16,
	DF_ST_F16,
	DF_ST_BF16,
	DF_ST_I32,
	DF_ST_U32,
	DF_ST_F32,
	DF_ST_I64,
	DF_ST_U64,
	DF_ST_F64,
} df_safetensors_dtype;

#define DF_SAFETENSORS_MAX_DIMS 8
/* Headers larger than this are refused as malformed. */
#define DF_SAFETENSORS_MAX_HEADER (100u * 1024u * 1024u)

/* The format's name of a dtype ("F32", "BF16", ...), NULL if unknown. */
const char *df_safetensors_dtype_name(df_safetensors_dtype dtype);
/* Bytes per element, 0 if unknown. */
size_t df_safetensors_dtype_size(df_safetensors_dtype dtype);

/* A tensor of an open file. Valid until df_safetensors_close. */
typedef struct df_safetensors_tensor {
	const char *name;
	df_safetensors_dtype dtype;
	int ndim;                                /* 0 for a scalar */
	int64_t shape[DF_SAFETENSORS_MAX_DIMS];
	size_t nelem;                            /* product of shape (1 for a scalar) */
	size_t nbytes;                           /* nelem * dtype size */
	const void *data;                        /* raw bytes in the file; may be unaligned */
} df_safetensors_tensor;

typedef struct df_safetensors df_safetensors;

/* Opens and validates a file, memory-mapped read-only. The header is
 * checked completely: its length against the file and the cap, dtypes,
 * at most DF_SAFETENSORS_MAX_DIMS non-negative dims, size products without
 * overflow, data offsets ordered, inside the data section, of the size
 * dtype x shape requires and not overlapping, names unique, metadata a
 * map of strings. */
int df_safetensors_open(df_safetensors **out, const char *path, df_error *err);

/* The same over a buffer, which must outlive the handle (not copied).
 * `name` is used in error messages (NULL: "<memory>"). */
int df_safetensors_open_memory(df_safetensors **out, const void *data, size_t size,
			       const char *name, df_error *err);

void df_safetensors_close(df_safetensors *st);

/* Tensors in file order (ascending data offset). */
size_t df_safetensors_count(const df_safetensors *st);
const df_safetensors_tensor *df_safetensors_tensor_at(const df_safetensors *st, size_t i);
/* Lookup by name; NULL if absent. */
const df_safetensors_tensor *df_safetensors_find(const df_safetensors *st, const char *name);

/* String metadata ("__metadata__"): value of a key (NULL if absent), and
 * iteration over all pairs in key order. */
const char *df_safetensors_metadata(const df_safetensors *st, const char *key);
size_t df_safetensors_metadata_count(const df_safetensors *st);
int df_safetensors_metadata_at(const df_safetensors *st, size_t i, const char **key,
			       const char **value);

/* Copies a tensor into dst, converting: read_f32 takes every dtype (F64
 * values beyond float's range become +-inf, integers are rounded to the
 * nearest float); read_i64 takes integer and BOOL dtypes only (U64 values
 * above INT64_MAX are an error). `count` must equal t->nelem. */
int df_safetensors_read_f32(const df_safetensors *st, const df_safetensors_tensor *t,
			    float *dst, size_t count, df_error *err);
int df_safetensors_read_i64(const df_safetensors *st, const df_safetensors_tensor *t,
			    int64_t *dst, size_t count, df_error *err);

/* One tensor to write: `data` holds the product of shape elements of
 * `dtype` in native (little-endian) layout, e.g. float for DF_ST_F32 and
 * int64_t for DF_ST_I64. */
typedef struct df_safetensors_entry {
	const char *name;
	df_safetensors_dtype dtype;
	int ndim;
	const int64_t *shape;
	const void *data;
} df_safetensors_entry;

typedef struct df_safetensors_meta {
	const char *key;
	const char *value;
} df_safetensors_meta;

/* Writes a safetensors file atomically, laid out as the Python library
 * lays it out (safetensors.torch.save_file): tensors ordered by dtype
 * (U64, I64, F64, F32, U32, I32, BF16, F16, U16, I16, I8, U8, BOOL), then
 * by byte-wise name, with header keys in that same order after
 * "__metadata__" (stored when metadata_count > 0, keys in byte-wise
 * order), the header padded with spaces to a multiple of 8 bytes. For
 * tensors without metadata the bytes equal the Python library's. Names and
 * metadata must be valid UTF-8; names must be unique, non-empty and not
 * "__metadata__". */
int df_safetensors_write(const char *path, const df_safetensors_entry *entries, size_t count,
			 const df_safetensors_meta *metadata, size_t metadata_count,
			 df_error *err);

/* ------------------------------------------------------------------- PNG */

/* Images larger than this in either dimension are refused before any
 * pixel memory is allocated. */
#define DF_PNG_MAX_DIM 16384

/* An 8-bit image, rows top to bottom, pixels interleaved (HWC). */
typedef struct df_image {
	int width, height, channels; /* 1 grey, 2 grey+alpha, 3 RGB, 4 RGBA */
	uint8_t *pixels;             /* width * height * channels bytes, free with df_image_free */
} df_image;

/* Reads a PNG of any colour type and depth as 8 bits per channel: palette
 * and low-depth grey are expanded, 16-bit samples reduced to 8, a tRNS
 * chunk becomes an alpha channel. want_channels 0 keeps the file's
 * channels; 1, 2, 3 or 4 converts (RGB to grey with the sRGB luma weights,
 * grey replicated to RGB, alpha stripped or added as opaque). */
int df_png_read(const char *path, int want_channels, df_image *img, df_error *err);
int df_png_read_memory(const void *data, size_t size, const char *name, int want_channels,
		       df_image *img, df_error *err);
void df_image_free(df_image *img);

/* dst (width * height * channels floats, HWC) = pixels / 255, in [0, 1]. */
void df_image_to_float(const df_image *img, float *dst);

/* Writes 8-bit pixels (HWC, channels 1, 2, 3 or 4) as a PNG, atomically. */
int df_png_write(const char *path, const uint8_t *pixels, int width, int height, int channels,
		 df_error *err);

/* The range of float pixels given to the writers. */
typedef enum df_pixel_range {
	DF_RANGE_MINUS1_1 = 0, /* [-1, 1]: model outputs; -1 -> 0, 1 -> 255 */
	DF_RANGE_0_1 = 1,      /* [0, 1]: 0 -> 0, 1 -> 255 */
} df_pixel_range;

/* Writes a float image given planar (CHW, channels 1 or 3) as 8-bit grey or
 * RGB: values are clamped to the range, mapped to [0, 255] and rounded
 * (NaN becomes 0). */
int df_png_write_float_chw(const char *path, const float *chw, int width, int height,
			   int channels, df_pixel_range range, df_error *err);

/* ------------------------------------------------------------ image grid */

/* Tiles n images (NCHW floats in [-1, 1], channels 1 or 3) into one PNG,
 * `per_row` images per row (<= 0: ceil(sqrt(n))), separated and surrounded
 * by `padding` black pixels. When row_labels is not NULL, row_labels[r]
 * (NULL or "" for none) is drawn in white left of row r with a built-in
 * 5x7 font (digits, letters, space and - _ . : = ; other characters show
 * as '?'). The grid may be at most DF_PNG_MAX_DIM pixels in each direction. */
int df_grid_write_png(const char *path, const float *images, size_t n, int channels,
		      int height, int width, int per_row, int padding,
		      const char *const *row_labels, df_error *err);

#ifdef __cplusplus
}
#endif
#endif
