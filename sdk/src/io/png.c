/* PNG reading and writing through libpng. libpng reports errors by
 * longjmp; each entry point sets its jump target once, turns the message
 * into a df_error and releases everything it allocated. */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <png.h>

#include "io_private.h"

/* Where libpng's messages go for one read or write. */
struct png_context {
	const char *name;
	df_error *err;
	/* in-memory source */
	const unsigned char *data;
	size_t size, pos;
};

static void on_png_error(png_structp png, png_const_charp msg)
{
	struct png_context *ctx = png_get_error_ptr(png);
	df__fail(ctx->err, -EINVAL, ctx->name, "%s", msg);
	png_longjmp(png, 1);
}

static void on_png_warning(png_structp png, png_const_charp msg)
{
	(void)png;
	(void)msg; /* warnings (e.g. unknown chunks, iCCP quirks) are not failures */
}

static void read_from_memory(png_structp png, png_bytep out, size_t length)
{
	struct png_context *ctx = png_get_io_ptr(png);
	if (length > ctx->size - ctx->pos)
		png_error(png, "file is truncated");
	memcpy(out, ctx->data + ctx->pos, length);
	ctx->pos += length;
}

/* The libpng transforms that deliver 8-bit samples with `want` channels
 * (0: as stored). Called after png_read_info. */
static void request_layout(png_structp png, png_infop info, int want)
{
	const int color_type = png_get_color_type(png, info);
	const int is_color = (color_type & PNG_COLOR_MASK_COLOR) != 0;
	const int has_alpha = (color_type & PNG_COLOR_MASK_ALPHA) != 0 ||
			      png_get_valid(png, info, PNG_INFO_tRNS);

	png_set_expand(png); /* palette -> RGB, grey < 8 bits -> 8, tRNS -> alpha */
	png_set_strip_16(png);
	png_set_interlace_handling(png);
	if (want == 0)
		return;
	const int want_color = want >= 3, want_alpha = want == 2 || want == 4;
	if (is_color && !want_color)
		png_set_rgb_to_gray_fixed(png, 1, -1, -1);
	if (!is_color && want_color)
		png_set_gray_to_rgb(png);
	if (has_alpha && !want_alpha)
		png_set_strip_alpha(png);
	if (!has_alpha && want_alpha)
		png_set_add_alpha(png, 0xff, PNG_FILLER_AFTER);
}

/* Decodes from an initialised read struct; the caller set up the source. */
static int decode(png_structp png, png_infop info, struct png_context *ctx, int want,
		  df_image *img)
{
	/* Volatile: these change between setjmp and a possible longjmp. */
	uint8_t *volatile pixels = NULL;
	png_bytep *volatile rows = NULL;

	if (setjmp(png_jmpbuf(png))) {
		free(pixels);
		free(rows);
		return -EINVAL;
	}
	png_set_user_limits(png, DF_PNG_MAX_DIM, DF_PNG_MAX_DIM);
#ifdef FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION
	/* Let mutated inputs past the checksums to reach the decoder. */
	png_set_crc_action(png, PNG_CRC_QUIET_USE, PNG_CRC_QUIET_USE);
	png_set_option(png, PNG_IGNORE_ADLER32, PNG_OPTION_ON);
#endif
	png_read_info(png, info);
	request_layout(png, info, want);
	png_read_update_info(png, info);

	const png_uint_32 width = png_get_image_width(png, info);
	const png_uint_32 height = png_get_image_height(png, info);
	const int channels = png_get_channels(png, info);
	const size_t row_bytes = png_get_rowbytes(png, info);
	if (png_get_bit_depth(png, info) != 8 || (want != 0 && channels != want) ||
	    row_bytes != (size_t)width * (size_t)channels)
		return df__fail(ctx->err, -EINVAL, ctx->name,
				"unsupported pixel layout after conversion (%d channels of %d bits)",
				channels, png_get_bit_depth(png, info));

	pixels = malloc(row_bytes * height > 0 ? row_bytes * height : 1);
	rows = malloc(height * sizeof *rows);
	if (!pixels || !rows) {
		free(pixels);
		free(rows);
		return df__fail(ctx->err, -ENOMEM, ctx->name, "out of memory for %ux%u pixels",
				(unsigned)width, (unsigned)height);
	}
	for (png_uint_32 y = 0; y < height; y++)
		rows[y] = pixels + (size_t)y * row_bytes;
	png_read_image(png, rows);
	png_read_end(png, NULL);
	free(rows);

	img->width = (int)width;
	img->height = (int)height;
	img->channels = channels;
	img->pixels = pixels;
	return 0;
}

/* Common front of the readers: checks arguments and the signature, creates
 * the libpng structs, lets `attach` connect the source, decodes. */
static int read_png(struct png_context *ctx, FILE *fp, int want, df_image *img)
{
	unsigned char signature[8];
	if (!img)
		return df__fail(ctx->err, -EINVAL, ctx->name, "no image given");
	memset(img, 0, sizeof *img);
	if (want < 0 || want > 4)
		return df__fail(ctx->err, -EINVAL, ctx->name,
				"want_channels must be 0 (as stored), 1, 2, 3 or 4");
	if (fp) {
		if (fread(signature, 1, 8, fp) != 8)
			return df__fail(ctx->err, -EINVAL, ctx->name, "not a PNG file (too short)");
	} else {
		if (ctx->size < 8)
			return df__fail(ctx->err, -EINVAL, ctx->name, "not a PNG file (too short)");
		memcpy(signature, ctx->data, 8);
		ctx->pos = 8;
	}
	if (png_sig_cmp(signature, 0, 8) != 0)
		return df__fail(ctx->err, -EINVAL, ctx->name, "not a PNG file (bad signature)");

	png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, ctx, on_png_error,
						 on_png_warning);
	png_infop info = png ? png_create_info_struct(png) : NULL;
	if (!info) {
		png_destroy_read_struct(&png, NULL, NULL);
		return df__fail(ctx->err, -ENOMEM, ctx->name, "out of memory");
	}
	if (fp)
		png_init_io(png, fp);
	else
		png_set_read_fn(png, ctx, read_from_memory);
	png_set_sig_bytes(png, 8);
	int rc = decode(png, info, ctx, want, img);
	png_destroy_read_struct(&png, &info, NULL);
	return rc;
}

int df_png_read(const char *path, int want_channels, df_image *img, df_error *err)
{
	if (!path)
		return df__fail(err, -EINVAL, "png", "no path given");
	FILE *fp = fopen(path, "rb");
	if (!fp) {
		int e = errno;
		return df__fail(err, -e, path, "cannot open: %s", strerror(e));
	}
	struct png_context ctx = { .name = path, .err = err };
	int rc = read_png(&ctx, fp, want_channels, img);
	fclose(fp);
	return rc;
}

int df_png_read_memory(const void *data, size_t size, const char *name, int want_channels,
		       df_image *img, df_error *err)
{
	struct png_context ctx = { .name = name ? name : "<memory>", .err = err,
				   .data = data, .size = data ? size : 0 };
	return read_png(&ctx, NULL, want_channels, img);
}

void df_image_free(df_image *img)
{
	if (!img)
		return;
	free(img->pixels);
	img->pixels = NULL;
}

void df_image_to_float(const df_image *img, float *dst)
{
	const size_t n = (size_t)img->width * (size_t)img->height * (size_t)img->channels;
	for (size_t i = 0; i < n; i++)
		dst[i] = (float)img->pixels[i] / 255.0f;
}

/* ------------------------------------------------------------- writing */

static int encode(png_structp png, png_infop info, struct png_context *ctx, FILE *fp,
		  const uint8_t *pixels, int width, int height, int channels)
{
	static const int color_types[5] = { 0, PNG_COLOR_TYPE_GRAY, PNG_COLOR_TYPE_GRAY_ALPHA,
					    PNG_COLOR_TYPE_RGB, PNG_COLOR_TYPE_RGB_ALPHA };
	if (setjmp(png_jmpbuf(png)))
		return -EIO;
	png_init_io(png, fp);
	png_set_IHDR(png, info, (png_uint_32)width, (png_uint_32)height, 8, color_types[channels],
		     PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
	png_write_info(png, info);
	const size_t row_bytes = (size_t)width * (size_t)channels;
	for (int y = 0; y < height; y++)
		png_write_row(png, pixels + (size_t)y * row_bytes);
	png_write_end(png, NULL);
	return 0;
}

int df_png_write(const char *path, const uint8_t *pixels, int width, int height, int channels,
		 df_error *err)
{
	if (!path)
		return df__fail(err, -EINVAL, "png", "no path given");
	if (width < 1 || height < 1 || width > DF_PNG_MAX_DIM || height > DF_PNG_MAX_DIM)
		return df__fail(err, -EINVAL, path, "image size %dx%d is outside 1x1 .. %dx%d", width,
				height, DF_PNG_MAX_DIM, DF_PNG_MAX_DIM);
	if (channels < 1 || channels > 4)
		return df__fail(err, -EINVAL, path, "%d channels: 1, 2, 3 or 4 are supported", channels);
	if (!pixels)
		return df__fail(err, -EINVAL, path, "no pixels given");

	df__atomic_file af;
	int rc = df__atomic_open(&af, path, err);
	if (rc != 0)
		return rc;
	struct png_context ctx = { .name = path, .err = err };
	png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &ctx, on_png_error,
						  on_png_warning);
	png_infop info = png ? png_create_info_struct(png) : NULL;
	if (!info) {
		png_destroy_write_struct(&png, NULL);
		df__atomic_abort(&af);
		return df__fail(err, -ENOMEM, path, "out of memory");
	}
	rc = encode(png, info, &ctx, af.fp, pixels, width, height, channels);
	png_destroy_write_struct(&png, &info);
	if (rc != 0) {
		df__atomic_abort(&af);
		return rc;
	}
	return df__atomic_commit(&af, err);
}

uint8_t df__pixel_to_u8(float v, df_pixel_range range)
{
	if (range == DF_RANGE_MINUS1_1)
		v = (v + 1.0f) * 0.5f;
	float scaled = v * 255.0f + 0.5f;
	if (!(scaled > 0.0f)) /* also NaN */
		return 0;
	if (scaled >= 255.0f)
		return 255;
	return (uint8_t)scaled;
}

int df_png_write_float_chw(const char *path, const float *chw, int width, int height,
			   int channels, df_pixel_range range, df_error *err)
{
	if (!path)
		return df__fail(err, -EINVAL, "png", "no path given");
	if (channels != 1 && channels != 3)
		return df__fail(err, -EINVAL, path, "%d channels: 1 or 3 are supported", channels);
	if (width < 1 || height < 1 || width > DF_PNG_MAX_DIM || height > DF_PNG_MAX_DIM)
		return df__fail(err, -EINVAL, path, "image size %dx%d is outside 1x1 .. %dx%d", width,
				height, DF_PNG_MAX_DIM, DF_PNG_MAX_DIM);
	if (!chw)
		return df__fail(err, -EINVAL, path, "no pixels given");
	const size_t plane = (size_t)width * (size_t)height;
	uint8_t *hwc = malloc(plane * (size_t)channels);
	if (!hwc)
		return df__fail(err, -ENOMEM, path, "out of memory");
	for (size_t i = 0; i < plane; i++)
		for (int c = 0; c < channels; c++)
			hwc[i * (size_t)channels + (size_t)c] =
				df__pixel_to_u8(chw[(size_t)c * plane + i], range);
	int rc = df_png_write(path, hwc, width, height, channels, err);
	free(hwc);
	return rc;
}
