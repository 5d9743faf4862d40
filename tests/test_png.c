/* PNG reading/writing (all colour types, conversions, limits, errors) and
 * image grids. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <cmocka.h>
#include <png.h>
#include <zlib.h>

#include "diffuse/io.h"
#include "test_tmpdir.h"

static void test_round_trip_all_channel_counts(void **state)
{
	(void)state;
	enum { W = 13, H = 7 };
	for (int c = 1; c <= 4; c++) {
		uint8_t pixels[W * H * 4];
		for (size_t i = 0; i < sizeof pixels; i++)
			pixels[i] = (uint8_t)(i * 37 + (size_t)c);
		char path[4096];
		snprintf(path, sizeof path, "%s/rt%d.png", test_dir, c);
		df_error err;
		expect_ok(df_png_write(path, pixels, W, H, c, &err), &err);
		df_image img;
		expect_ok(df_png_read(path, 0, &img, &err), &err);
		assert_int_equal(img.width, W);
		assert_int_equal(img.height, H);
		assert_int_equal(img.channels, c);
		assert_memory_equal(img.pixels, pixels, (size_t)W * H * (size_t)c);

		float f[W * H * 4];
		df_image_to_float(&img, f);
		assert_true(f[0] == pixels[0] / 255.0f);
		df_image_free(&img);
		assert_null(img.pixels);
	}
	assert_int_equal(test_count_entries(test_dir, ".tmp."), 0);
}

static void test_channel_conversions(void **state)
{
	(void)state;
	char path[4096];
	df_error err;
	df_image img;
	/* RGBA: one pure red, one white half-transparent pixel */
	const uint8_t rgba[8] = { 255, 0, 0, 255, 255, 255, 255, 128 };
	expect_ok(df_png_write(test_path(path, sizeof path, "rgba.png"), rgba, 2, 1, 4, &err), &err);
	expect_ok(df_png_read(path, 3, &img, &err), &err);
	assert_int_equal(img.channels, 3);
	assert_memory_equal(img.pixels, ((uint8_t[]){ 255, 0, 0, 255, 255, 255 }), 6);
	df_image_free(&img);
	expect_ok(df_png_read(path, 1, &img, &err), &err);
	assert_int_equal(img.channels, 1);
	assert_true(abs(img.pixels[0] - 54) <= 1); /* sRGB luma of red: 0.2126 */
	assert_int_equal(img.pixels[1], 255);
	df_image_free(&img);

	/* grey to RGB and RGBA */
	const uint8_t grey[3] = { 0, 100, 255 };
	expect_ok(df_png_write(test_path(path, sizeof path, "grey.png"), grey, 3, 1, 1, &err), &err);
	expect_ok(df_png_read(path, 4, &img, &err), &err);
	assert_int_equal(img.channels, 4);
	assert_memory_equal(img.pixels, ((uint8_t[]){ 0, 0, 0, 255, 100, 100, 100, 255, 255, 255, 255, 255 }), 12);
	df_image_free(&img);
	expect_ok(df_png_read(path, 2, &img, &err), &err);
	assert_memory_equal(img.pixels, ((uint8_t[]){ 0, 255, 100, 255, 255, 255 }), 6);
	df_image_free(&img);
	assert_int_equal(df_png_read(path, 5, &img, &err), -EINVAL);
}

/* Writes a PNG with libpng directly, for layouts our writer does not make. */
static void write_raw_png(const char *path, int w, int h, int depth, int color_type, int interlace,
			  const uint8_t *data, int with_trns)
{
	FILE *fp = fopen(path, "wb");
	assert_non_null(fp);
	png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
	png_infop info = png_create_info_struct(png);
	assert_false(setjmp(png_jmpbuf(png)));
	png_init_io(png, fp);
	png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, depth, color_type, interlace,
		     PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
	if (color_type == PNG_COLOR_TYPE_PALETTE) {
		png_color palette[3] = { { 255, 0, 0 }, { 0, 255, 0 }, { 0, 0, 255 } };
		png_set_PLTE(png, info, palette, 3);
		if (with_trns) {
			png_byte alpha[3] = { 255, 0, 128 };
			png_set_tRNS(png, info, alpha, 3, NULL);
		}
	}
	png_write_info(png, info);
	png_set_swap(png); /* 16-bit samples below are given little-endian */
	size_t row = png_get_rowbytes(png, info);
	png_bytep rows[64];
	for (int y = 0; y < h; y++)
		rows[y] = (png_bytep)data + (size_t)y * row;
	png_write_image(png, rows);
	png_write_end(png, NULL);
	png_destroy_write_struct(&png, &info);
	fclose(fp);
}

static void test_palette_16bit_interlaced_low_depth(void **state)
{
	(void)state;
	char path[4096];
	df_error err;
	df_image img;

	/* palette with transparency: 3 pixels, 8-bit indices 0, 1, 2 */
	const uint8_t idx[3] = { 0, 1, 2 };
	write_raw_png(test_path(path, sizeof path, "pal.png"), 3, 1, 8, PNG_COLOR_TYPE_PALETTE,
		      PNG_INTERLACE_NONE, idx, 1);
	expect_ok(df_png_read(path, 0, &img, &err), &err);
	assert_int_equal(img.channels, 4);
	assert_memory_equal(img.pixels, ((uint8_t[]){ 255, 0, 0, 255, 0, 255, 0, 0, 0, 0, 255, 128 }), 12);
	df_image_free(&img);

	/* 16-bit RGB: samples reduced to their high byte */
	uint16_t rgb16[2 * 3] = { 0xffff, 0x0000, 0x8000, 0x1234, 0xabcd, 0x00ff };
	write_raw_png(test_path(path, sizeof path, "rgb16.png"), 2, 1, 16, PNG_COLOR_TYPE_RGB,
		      PNG_INTERLACE_NONE, (const uint8_t *)rgb16, 0);
	expect_ok(df_png_read(path, 0, &img, &err), &err);
	assert_int_equal(img.channels, 3);
	assert_memory_equal(img.pixels, ((uint8_t[]){ 0xff, 0x00, 0x80, 0x12, 0xab, 0x00 }), 6);
	df_image_free(&img);

	/* 1-bit grey, interlaced: 10x10 checkerboard */
	uint8_t bits[10 * 2];
	for (int y = 0; y < 10; y++) {
		uint16_t row = 0;
		for (int x = 0; x < 10; x++)
			if ((x + y) % 2)
				row |= (uint16_t)(0x8000 >> x);
		bits[y * 2] = (uint8_t)(row >> 8);
		bits[y * 2 + 1] = (uint8_t)row;
	}
	write_raw_png(test_path(path, sizeof path, "grey1.png"), 10, 10, 1, PNG_COLOR_TYPE_GRAY,
		      PNG_INTERLACE_ADAM7, bits, 0);
	expect_ok(df_png_read(path, 0, &img, &err), &err);
	assert_int_equal(img.channels, 1);
	for (int y = 0; y < 10; y++)
		for (int x = 0; x < 10; x++)
			assert_int_equal(img.pixels[y * 10 + x], (x + y) % 2 ? 255 : 0);
	df_image_free(&img);
}

static unsigned char *load(const char *path, size_t *size)
{
	FILE *fp = fopen(path, "rb");
	assert_non_null(fp);
	unsigned char *buf = malloc(1 << 16);
	*size = fread(buf, 1, 1 << 16, fp);
	fclose(fp);
	return buf;
}

static void test_bad_files(void **state)
{
	(void)state;
	char path[4096];
	df_error err;
	df_image img;
	const uint8_t px[4 * 4 * 3] = { 1, 2, 3 };
	expect_ok(df_png_write(test_path(path, sizeof path, "ok.png"), px, 4, 4, 3, &err), &err);
	size_t size;
	unsigned char *buf = load(path, &size);

	/* truncated: every prefix fails cleanly */
	for (size_t cut = 0; cut < size - 12; cut++) {
		int rc = df_png_read_memory(buf, cut, "cut.png", 0, &img, &err);
		assert_int_equal(rc, -EINVAL);
		assert_true(strncmp(err.msg, "cut.png: ", 9) == 0);
		assert_null(img.pixels);
	}
	/* not a PNG */
	assert_int_equal(df_png_read_memory("GIF89a....", 10, "x.gif", 0, &img, &err), -EINVAL);
	assert_string_equal(err.msg, "x.gif: not a PNG file (bad signature)");
	/* a corrupted pixel byte: CRC error */
	unsigned char *bad = malloc(size);
	memcpy(bad, buf, size);
	bad[size - 20] ^= 0x55;
	assert_int_equal(df_png_read_memory(bad, size, "crc.png", 0, &img, &err), -EINVAL);

	/* a width beyond the cap (IHDR patched, CRC recomputed) */
	memcpy(bad, buf, size);
	const uint32_t huge = DF_PNG_MAX_DIM + 1;
	const unsigned char be[4] = { huge >> 24, (huge >> 16) & 255, (huge >> 8) & 255, huge & 255 };
	memcpy(bad + 16, be, 4);
	uint32_t crc = (uint32_t)crc32(0, bad + 12, 17);
	const unsigned char crc_be[4] = { crc >> 24, (crc >> 16) & 255, (crc >> 8) & 255, crc & 255 };
	memcpy(bad + 29, crc_be, 4);
	assert_int_equal(df_png_read_memory(bad, size, "wide.png", 0, &img, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "wide.png: "));
	free(bad);
	free(buf);

	assert_int_equal(df_png_read("no/such.png", 0, &img, &err), -ENOENT);
	assert_string_equal(err.msg, "no/such.png: cannot open: No such file or directory");
	assert_int_equal(df_png_write(path, px, 0, 4, 3, &err), -EINVAL);
	assert_int_equal(df_png_write(path, px, 4, 4, 5, &err), -EINVAL);

	/* a failed rename leaves no temporary file */
	assert_int_equal(mkdir(test_path(path, sizeof path, "dir.png"), 0755), 0);
	assert_true(df_png_write(path, px, 4, 4, 3, &err) < 0);
	assert_int_equal(test_count_entries(test_dir, ".tmp."), 0);
}

static void test_float_writer(void **state)
{
	(void)state;
	char path[4096];
	df_error err;
	df_image img;
	/* CHW, 2 channels of... grey only here: 6 values */
	const float v[6] = { -1.0f, 0.0f, 1.0f, 2.0f, -3.0f, NAN };
	expect_ok(df_png_write_float_chw(test_path(path, sizeof path, "f.png"), v, 3, 2, 1,
					 DF_RANGE_MINUS1_1, &err), &err);
	expect_ok(df_png_read(path, 0, &img, &err), &err);
	assert_memory_equal(img.pixels, ((uint8_t[]){ 0, 128, 255, 255, 0, 0 }), 6);
	df_image_free(&img);

	const float rgb[3 * 2] = { 0.0f, 1.0f, 0.5f, 0.25f, 1.0f, 0.0f }; /* CHW, 2 pixels */
	expect_ok(df_png_write_float_chw(path, rgb, 2, 1, 3, DF_RANGE_0_1, &err), &err);
	expect_ok(df_png_read(path, 0, &img, &err), &err);
	assert_int_equal(img.channels, 3);
	assert_memory_equal(img.pixels, ((uint8_t[]){ 0, 128, 255, 255, 64, 0 }), 6);
	df_image_free(&img);
	assert_int_equal(df_png_write_float_chw(path, rgb, 2, 1, 2, DF_RANGE_0_1, &err), -EINVAL);
}

static void test_grid(void **state)
{
	(void)state;
	enum { N = 5, C = 3, H = 8, W = 8 };
	float images[N * C * H * W];
	for (int i = 0; i < N; i++)
		for (int k = 0; k < C * H * W; k++)
			images[i * C * H * W + k] = -1.0f + 0.5f * (float)i; /* image i: grey level */
	char path[4096];
	df_error err;
	df_image img;

	expect_ok(df_grid_write_png(test_path(path, sizeof path, "grid.png"), images, N, C, H, W, 2, 1,
				    NULL, &err), &err);
	expect_ok(df_png_read(path, 0, &img, &err), &err);
	assert_int_equal(img.width, 1 + 2 * (W + 1));
	assert_int_equal(img.height, 1 + 3 * (H + 1));
	/* image 3 sits at row 1, column 1: top-left (10, 10) */
	const uint8_t want3 = (uint8_t)((0.5f * (3 * 0.5f - 1.0f) + 0.5f) * 255.0f + 0.5f);
	assert_int_equal(img.pixels[(10 * img.width + 10) * 3], want3);
	assert_int_equal(img.pixels[(17 * img.width + 17) * 3 + 2], want3);
	assert_int_equal(img.pixels[0], 0);                          /* padding */
	assert_int_equal(img.pixels[(1 * img.width + 1) * 3], 0);    /* image 0 is -1 */
	assert_int_equal(img.pixels[(19 * img.width + 10) * 3], 0);  /* empty cell */
	df_image_free(&img);

	const char *labels[] = { "step 100", NULL, "cfg=1.5" };
	expect_ok(df_grid_write_png(path, images, N, C, H, W, 2, 1, labels, &err), &err);
	expect_ok(df_png_read(path, 0, &img, &err), &err);
	const int label_w = 8 * 6 + 1;
	assert_int_equal(img.width, label_w + 1 + 2 * (W + 1));
	/* white in the label column beside rows 0 and 2, none beside row 1 */
	int white[3] = { 0, 0, 0 };
	for (int r = 0; r < 3; r++)
		for (int y = 1 + r * (H + 1); y < (r + 1) * (H + 1); y++)
			for (int x = 0; x < label_w; x++)
				white[r] += img.pixels[(y * img.width + x) * 3] == 255;
	assert_true(white[0] > 20 && white[1] == 0 && white[2] > 20);
	df_image_free(&img);

	assert_int_equal(df_grid_write_png(path, images, N, 2, H, W, 2, 1, NULL, &err), -EINVAL);
	assert_int_equal(df_grid_write_png(path, images, 0, C, H, W, 2, 1, NULL, &err), -EINVAL);
	assert_int_equal(df_grid_write_png(path, images, N, C, H, 10000, 2, 1, NULL, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "exceeds"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_round_trip_all_channel_counts),
		cmocka_unit_test(test_channel_conversions),
		cmocka_unit_test(test_palette_16bit_interlaced_low_depth),
		cmocka_unit_test(test_bad_files),
		cmocka_unit_test(test_float_writer),
		cmocka_unit_test(test_grid),
	};
	return cmocka_run_group_tests(tests, test_tmpdir_setup, test_tmpdir_teardown);
}
