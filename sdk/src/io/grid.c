/* Image grids: samples tiled into one PNG, optionally with a label left of
 * each row drawn in a built-in 5x7 bitmap font. */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "io_private.h"

#define GLYPH_W 5
#define GLYPH_H 7

/* Seven rows of five pixels per glyph; bit 4 is the leftmost pixel. */
static const struct {
	char c;
	uint8_t rows[GLYPH_H];
} font[] = {
	{ ' ', { 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00 } },
	{ '-', { 0x00, 0x00, 0x00, 0x1F, 0x00, 0x00, 0x00 } },
	{ '_', { 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x1F } },
	{ '.', { 0x00, 0x00, 0x00, 0x00, 0x00, 0x0C, 0x0C } },
	{ ':', { 0x00, 0x0C, 0x0C, 0x00, 0x0C, 0x0C, 0x00 } },
	{ '=', { 0x00, 0x00, 0x1F, 0x00, 0x1F, 0x00, 0x00 } },
	{ '?', { 0x0E, 0x11, 0x01, 0x02, 0x04, 0x00, 0x04 } },
	{ '0', { 0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E } },
	{ '1', { 0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E } },
	{ '2', { 0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F } },
	{ '3', { 0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E } },
	{ '4', { 0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02 } },
	{ '5', { 0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E } },
	{ '6', { 0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E } },
	{ '7', { 0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08 } },
	{ '8', { 0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E } },
	{ '9', { 0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C } },
	{ 'A', { 0x0E, 0x11, 0x11, 0x11, 0x1F, 0x11, 0x11 } },
	{ 'B', { 0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E } },
	{ 'C', { 0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E } },
	{ 'D', { 0x1C, 0x12, 0x11, 0x11, 0x11, 0x12, 0x1C } },
	{ 'E', { 0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F } },
	{ 'F', { 0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10 } },
	{ 'G', { 0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F } },
	{ 'H', { 0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11 } },
	{ 'I', { 0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E } },
	{ 'J', { 0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C } },
	{ 'K', { 0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11 } },
	{ 'L', { 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F } },
	{ 'M', { 0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11 } },
	{ 'N', { 0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11 } },
	{ 'O', { 0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E } },
	{ 'P', { 0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10 } },
	{ 'Q', { 0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D } },
	{ 'R', { 0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11 } },
	{ 'S', { 0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E } },
	{ 'T', { 0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04 } },
	{ 'U', { 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E } },
	{ 'V', { 0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04 } },
	{ 'W', { 0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A } },
	{ 'X', { 0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11 } },
	{ 'Y', { 0x11, 0x11, 0x11, 0x0A, 0x04, 0x04, 0x04 } },
	{ 'Z', { 0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F } },
};

/* The glyph of c: letters in either case share the capital's glyph,
 * characters without one show as '?'. */
static const uint8_t *glyph(char c)
{
	if (c >= 'a' && c <= 'z')
		c = (char)(c - 'a' + 'A');
	const uint8_t *unknown = NULL;
	for (size_t i = 0; i < sizeof font / sizeof font[0]; i++) {
		if (font[i].c == c)
			return font[i].rows;
		if (font[i].c == '?')
			unknown = font[i].rows;
	}
	return unknown;
}

struct canvas {
	uint8_t *pixels; /* HWC */
	int width, height, channels;
};

/* Draws text in white with its top-left corner at (x, y), each font pixel
 * a scale x scale square, one blank column between glyphs. */
static void draw_text(struct canvas *cv, int x, int y, int scale, const char *text)
{
	for (; *text && x < cv->width; text++, x += (GLYPH_W + 1) * scale) {
		const uint8_t *rows = glyph(*text);
		for (int gy = 0; gy < GLYPH_H * scale; gy++)
			for (int gx = 0; gx < GLYPH_W * scale; gx++) {
				if (!(rows[gy / scale] & (0x10 >> (gx / scale))))
					continue;
				int px = x + gx, py = y + gy;
				if (px < 0 || py < 0 || px >= cv->width || py >= cv->height)
					continue;
				memset(cv->pixels + ((size_t)py * (size_t)cv->width + (size_t)px) *
							    (size_t)cv->channels,
				       255, (size_t)cv->channels);
			}
	}
}

/* Copies image CHW in [-1, 1] into the canvas at (x, y). */
static void blit(struct canvas *cv, const float *chw, int h, int w, int x, int y)
{
	const size_t plane = (size_t)h * (size_t)w;
	for (int r = 0; r < h; r++)
		for (int col = 0; col < w; col++) {
			uint8_t *dst = cv->pixels + ((size_t)(y + r) * (size_t)cv->width +
						     (size_t)(x + col)) * (size_t)cv->channels;
			for (int c = 0; c < cv->channels; c++)
				dst[c] = df__pixel_to_u8(chw[(size_t)c * plane + (size_t)r * (size_t)w +
							     (size_t)col],
							 DF_RANGE_MINUS1_1);
		}
}

int df_grid_write_png(const char *path, const float *images, size_t n, int channels,
		      int height, int width, int per_row, int padding,
		      const char *const *row_labels, df_error *err)
{
	if (!path)
		return df__fail(err, -EINVAL, "grid", "no path given");
	if (n == 0 || !images)
		return df__fail(err, -EINVAL, path, "no images given");
	if (channels != 1 && channels != 3)
		return df__fail(err, -EINVAL, path, "%d channels: 1 or 3 are supported", channels);
	if (height < 1 || width < 1 || height > DF_PNG_MAX_DIM || width > DF_PNG_MAX_DIM ||
	    padding < 0 || padding > DF_PNG_MAX_DIM || n > (size_t)DF_PNG_MAX_DIM * DF_PNG_MAX_DIM)
		return df__fail(err, -EINVAL, path, "image size %dx%d or padding %d out of range",
				width, height, padding);

	size_t cols = per_row > 0 ? (size_t)per_row : (size_t)ceil(sqrt((double)n));
	if (cols > n)
		cols = n;
	const size_t rows = (n + cols - 1) / cols;

	/* Label column: as wide as the longest label, glyphs scaled with the
	 * image height so labels stay legible on large samples. */
	int scale = height / (2 * GLYPH_H);
	scale = scale < 1 ? 1 : scale > 4 ? 4 : scale;
	size_t longest = 0;
	for (size_t r = 0; row_labels && r < rows; r++)
		if (row_labels[r] && strlen(row_labels[r]) > longest)
			longest = strlen(row_labels[r]);
	if (longest > DF_PNG_MAX_DIM)
		longest = DF_PNG_MAX_DIM;
	const size_t label_w = longest ? longest * (GLYPH_W + 1) * (size_t)scale + (size_t)padding : 0;

	const size_t grid_w = label_w + (size_t)padding + cols * (size_t)(width + padding);
	const size_t grid_h = (size_t)padding + rows * (size_t)(height + padding);
	if (grid_w > DF_PNG_MAX_DIM || grid_h > DF_PNG_MAX_DIM)
		return df__fail(err, -EINVAL, path, "grid of %zux%zu pixels exceeds %dx%d", grid_w,
				grid_h, DF_PNG_MAX_DIM, DF_PNG_MAX_DIM);

	struct canvas cv = { .width = (int)grid_w, .height = (int)grid_h, .channels = channels };
	cv.pixels = calloc(grid_w * grid_h, (size_t)channels);
	if (!cv.pixels)
		return df__fail(err, -ENOMEM, path, "out of memory");

	const size_t image_size = (size_t)channels * (size_t)height * (size_t)width;
	for (size_t i = 0; i < n; i++) {
		size_t r = i / cols, c = i % cols;
		int x = (int)(label_w + (size_t)padding + c * (size_t)(width + padding));
		int y = (int)((size_t)padding + r * (size_t)(height + padding));
		blit(&cv, images + i * image_size, height, width, x, y);
	}
	for (size_t r = 0; row_labels && r < rows; r++) {
		if (!row_labels[r] || !row_labels[r][0])
			continue;
		int y = (int)((size_t)padding + r * (size_t)(height + padding)) +
			(height - GLYPH_H * scale) / 2;
		draw_text(&cv, padding, y, scale, row_labels[r]);
	}
	int rc = df_png_write(path, cv.pixels, cv.width, cv.height, channels, err);
	free(cv.pixels);
	return rc;
}
