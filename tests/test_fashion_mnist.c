/* The fashion-mnist dataset: the real Debian files when installed (tests
 * skip otherwise), and small IDX files written here, valid and corrupt. */
#define _GNU_SOURCE /* asprintf */
#include "config.h"
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "diffuse/plugin.h"
#include "plugin_harness.h"

#define DEBIAN_ROOT "/usr/share/datasets/fashion-mnist"

static const df_dataset_vtable *vtable(void)
{
	return harness_dataset("fashion-mnist");
}

#define open_with(ds, err, ...) harness_dataset_open("fashion-mnist", ds, err, __VA_ARGS__, NULL)

static int have_debian_files(void)
{
	return access(DEBIAN_ROOT "/train-images-idx3-ubyte.gz", R_OK) == 0 &&
	       access(DEBIAN_ROOT "/t10k-labels-idx1-ubyte.gz", R_OK) == 0;
}

/* ------------------------------------------------------------------ */
/* The real files. */

static void check_split(const char *split, int64_t count, const int32_t *first_labels, double first_sum)
{
	if (!have_debian_files())
		skip();
	void *ds;
	df_error err;
	assert_int_equal(open_with(&ds, &err, "root", DEBIAN_ROOT, "split", split), DF_OK);
	df_dataset_info info;
	vtable()->info(ds, &info);
	assert_int_equal(info.count, count);
	assert_int_equal(info.channels, 1);
	assert_int_equal(info.height, 28);
	assert_int_equal(info.width, 28);
	assert_int_equal(info.num_classes, 10);

	int64_t indices[10] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9};
	float *images = malloc(10 * 28 * 28 * sizeof *images);
	int32_t labels[10];
	assert_int_equal(vtable()->fetch(ds, indices, 10, images, labels, &err), DF_OK);
	for (int i = 0; i < 10; i++)
		assert_int_equal(labels[i], first_labels[i]);
	float lo = 1, hi = -1;
	for (int i = 0; i < 10 * 28 * 28; i++) {
		lo = fminf(lo, images[i]);
		hi = fmaxf(hi, images[i]);
	}
	assert_true(lo == -1.0f && hi == 1.0f);
	/* Undo the scaling of the first image: its bytes' sum, read from the file with gzip and Python. */
	double sum = 0;
	for (int i = 0; i < 28 * 28; i++)
		sum += (images[i] + 1.0) * 127.5;
	assert_float_equal(sum, first_sum, 0.05);

	/* The last item exists, one past it does not. */
	indices[0] = count - 1;
	assert_int_equal(vtable()->fetch(ds, indices, 1, images, labels, &err), DF_OK);
	indices[0] = count;
	assert_int_equal(vtable()->fetch(ds, indices, 1, images, labels, &err), DF_EINVAL);
	char expected[128];
	snprintf(expected, sizeof expected, "index %lld is outside [0, %lld)", (long long)count, (long long)count);
	assert_string_equal(err.msg, expected);
	free(images);
	vtable()->close(ds);
}

static void test_debian_train(void **state)
{
	/* 9 is an ankle boot. */
	static const int32_t labels[10] = {9, 0, 0, 3, 0, 2, 7, 2, 5, 5};
	check_split("train", 60000, labels, 76247);
}

static void test_debian_test(void **state)
{
	static const int32_t labels[10] = {9, 2, 1, 1, 6, 1, 4, 6, 5, 7};
	check_split("test", 10000, labels, 33456);
}

static void test_debian_pad_resize_limit(void **state)
{
	if (!have_debian_files())
		skip();
	void *ds;
	df_error err;
	df_dataset_info info;
	assert_int_equal(open_with(&ds, &err, "root", DEBIAN_ROOT, "split", "test", "pad_to", "32", "limit", "100"),
	                 DF_OK);
	vtable()->info(ds, &info);
	assert_int_equal(info.count, 100);
	assert_int_equal(info.height, 32);
	assert_int_equal(info.width, 32);
	vtable()->close(ds);
	assert_int_equal(open_with(&ds, &err, "root", DEBIAN_ROOT, "split", "test", "resize", "16"), DF_OK);
	vtable()->info(ds, &info);
	assert_int_equal(info.count, 10000);
	assert_int_equal(info.height, 16);
	assert_int_equal(info.width, 16);
	vtable()->close(ds);
}

/* ------------------------------------------------------------------ */
/* Small IDX files. */

typedef struct fixture {
	char *dir;
} fixture;

static int setup(void **state)
{
	fixture *f = calloc(1, sizeof *f);
	f->dir = harness_tmpdir();
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	fixture *f = *state;
	harness_rmtree(f->dir);
	free(f);
	return 0;
}

static char *path_in(const char *dir, const char *name)
{
	char *path;
	assert_true(asprintf(&path, "%s/%s", dir, name) > 0);
	return path;
}

/* Writes an IDX file with this magic and these dims, holding `len` bytes of
 * data (whatever the dims say), gzip-compressed. */
static void write_idx(const char *dir, const char *name, uint32_t magic, int ndim, const uint32_t *dims,
                      const uint8_t *data, size_t len)
{
	char *path = path_in(dir, name);
	gzFile gz = gzopen(path, "wb");
	assert_non_null(gz);
	uint8_t header[16];
	uint32_t words[4] = {magic, dims[0], ndim > 1 ? dims[1] : 0, ndim > 2 ? dims[2] : 0};
	for (int w = 0; w <= ndim; w++)
		for (int b = 0; b < 4; b++)
			header[4 * w + b] = (uint8_t)(words[w] >> (24 - 8 * b));
	assert_int_equal(gzwrite(gz, header, 4 + 4 * (unsigned)ndim), 4 + 4 * ndim);
	if (len)
		assert_int_equal(gzwrite(gz, data, (unsigned)len), (int)len);
	assert_int_equal(gzclose(gz), Z_OK);
	free(path);
}

/* Three 4x4 images: pixel (y, x) of image i is 16 i + 4 y + x, scaled by 5
 * so that image 2 reaches 235; labels 9, 0, 3. */
#define N_SMALL 3
static uint8_t small_pixel(int i, int y, int x)
{
	return (uint8_t)(5 * (16 * i + 4 * y + x));
}

static void write_small(const char *dir, int images, int labels, uint8_t label1)
{
	uint8_t pixels[N_SMALL * 16], label_bytes[N_SMALL] = {9, label1, 3};
	for (int i = 0; i < N_SMALL; i++)
		for (int y = 0; y < 4; y++)
			for (int x = 0; x < 4; x++)
				pixels[16 * i + 4 * y + x] = small_pixel(i, y, x);
	write_idx(dir, "train-images-idx3-ubyte.gz", 0x803, 3, (uint32_t[]){images, 4, 4}, pixels, 16 * images);
	write_idx(dir, "train-labels-idx1-ubyte.gz", 0x801, 1, (uint32_t[]){labels}, label_bytes, labels);
}

static float scaled(uint8_t p)
{
	return p / 127.5f - 1.0f;
}

static float *fetch_all(void *ds, int64_t count, int side, int32_t *labels)
{
	int64_t indices[N_SMALL] = {0, 1, 2};
	float *images = malloc(sizeof *images * N_SMALL * side * side);
	df_error err;
	assert_int_equal(vtable()->fetch(ds, indices, count, images, labels, &err), DF_OK);
	return images;
}

static void test_small_values(void **state)
{
	fixture *f = *state;
	write_small(f->dir, N_SMALL, N_SMALL, 0);
	void *ds;
	df_error err;
	assert_int_equal(open_with(&ds, &err, "root", f->dir), DF_OK);
	df_dataset_info info;
	vtable()->info(ds, &info);
	assert_int_equal(info.count, N_SMALL);
	assert_int_equal(info.height, 4);
	assert_int_equal(info.width, 4);
	int32_t labels[N_SMALL];
	float *images = fetch_all(ds, N_SMALL, 4, labels);
	assert_int_equal(labels[0], 9);
	assert_int_equal(labels[1], 0);
	assert_int_equal(labels[2], 3);
	for (int i = 0; i < N_SMALL; i++)
		for (int y = 0; y < 4; y++)
			for (int x = 0; x < 4; x++)
				assert_true(images[16 * i + 4 * y + x] == scaled(small_pixel(i, y, x)));
	/* Out of order, repeated, and labels not wanted. */
	int64_t indices[2] = {2, 2};
	assert_int_equal(vtable()->fetch(ds, indices, 2, images, NULL, &err), DF_OK);
	assert_true(images[16 + 5] == scaled(small_pixel(2, 1, 1)));
	indices[1] = -1;
	assert_int_equal(vtable()->fetch(ds, indices, 2, images, NULL, &err), DF_EINVAL);
	assert_string_equal(err.msg, "index -1 is outside [0, 3)");
	free(images);
	vtable()->close(ds);
}

static void test_small_limit(void **state)
{
	fixture *f = *state;
	write_small(f->dir, N_SMALL, N_SMALL, 0);
	void *ds;
	df_error err;
	assert_int_equal(open_with(&ds, &err, "root", f->dir, "limit", "2"), DF_OK);
	df_dataset_info info;
	vtable()->info(ds, &info);
	assert_int_equal(info.count, 2);
	int64_t index = 2;
	float image[16];
	assert_int_equal(vtable()->fetch(ds, &index, 1, image, NULL, &err), DF_EINVAL);
	assert_string_equal(err.msg, "index 2 is outside [0, 2)");
	vtable()->close(ds);
	/* A limit beyond the split is the whole split. */
	assert_int_equal(open_with(&ds, &err, "root", f->dir, "limit", "1000"), DF_OK);
	vtable()->info(ds, &info);
	assert_int_equal(info.count, N_SMALL);
	vtable()->close(ds);
}

static void test_small_pad(void **state)
{
	fixture *f = *state;
	write_small(f->dir, N_SMALL, N_SMALL, 0);
	void *ds;
	df_error err;
	/* 4 -> 7: one column and row of padding before, two after. */
	assert_int_equal(open_with(&ds, &err, "root", f->dir, "pad_to", "7"), DF_OK);
	df_dataset_info info;
	vtable()->info(ds, &info);
	assert_int_equal(info.height, 7);
	assert_int_equal(info.width, 7);
	float *images = fetch_all(ds, N_SMALL, 7, NULL);
	for (int i = 0; i < N_SMALL; i++)
		for (int y = 0; y < 7; y++)
			for (int x = 0; x < 7; x++) {
				int inside = y >= 1 && y < 5 && x >= 1 && x < 5;
				float want = inside ? scaled(small_pixel(i, y - 1, x - 1)) : -1.0f;
				assert_true(images[49 * i + 7 * y + x] == want);
			}
	free(images);
	vtable()->close(ds);

	assert_int_equal(open_with(&ds, &err, "root", f->dir, "pad_to", "3"), DF_EINVAL);
	assert_string_equal(err.msg, "pad_to 3 is smaller than the 4x4 images");
}

static void test_small_resize(void **state)
{
	fixture *f = *state;
	write_small(f->dir, N_SMALL, N_SMALL, 0);
	void *ds;
	df_error err;
	/* Nearest 4 -> 8 repeats each pixel in a 2x2 block. */
	assert_int_equal(open_with(&ds, &err, "root", f->dir, "resize", "8", "filter", "nearest"), DF_OK);
	float *images = fetch_all(ds, N_SMALL, 8, NULL);
	for (int i = 0; i < N_SMALL; i++)
		for (int y = 0; y < 8; y++)
			for (int x = 0; x < 8; x++)
				assert_true(images[64 * i + 8 * y + x] == scaled(small_pixel(i, y / 2, x / 2)));
	free(images);
	vtable()->close(ds);

	/* Bilinear 4 -> 2 with half-pixel centres averages each 2x2 block. */
	assert_int_equal(open_with(&ds, &err, "root", f->dir, "resize", "2"), DF_OK);
	images = fetch_all(ds, N_SMALL, 2, NULL);
	for (int i = 0; i < N_SMALL; i++)
		for (int y = 0; y < 2; y++)
			for (int x = 0; x < 2; x++) {
				float mean = (scaled(small_pixel(i, 2 * y, 2 * x)) + scaled(small_pixel(i, 2 * y, 2 * x + 1)) +
				              scaled(small_pixel(i, 2 * y + 1, 2 * x)) +
				              scaled(small_pixel(i, 2 * y + 1, 2 * x + 1))) / 4;
				assert_float_equal(images[4 * i + 2 * y + x], mean, 1e-6);
			}
	free(images);
	vtable()->close(ds);

	/* Padding first, then resizing: 4 -> pad 8 -> 4 nearest keeps every
	 * other pixel of the padded image, whose first row is background. */
	assert_int_equal(open_with(&ds, &err, "root", f->dir, "pad_to", "8", "resize", "4", "filter", "nearest"),
	                 DF_OK);
	df_dataset_info info;
	vtable()->info(ds, &info);
	assert_int_equal(info.height, 4);
	images = fetch_all(ds, 1, 4, NULL);
	for (int x = 0; x < 4; x++)
		assert_true(images[x] == -1.0f);
	assert_true(images[4 + 1] == scaled(small_pixel(0, 0, 0)));
	assert_true(images[8 + 2] == scaled(small_pixel(0, 2, 2)));
	free(images);
	vtable()->close(ds);
}

/* Opens f->dir, expects failure with the message "DIR/file: tail". */
static void expect_error(fixture *f, const char *file, const char *tail)
{
	void *ds;
	df_error err;
	assert_int_equal(open_with(&ds, &err, "root", f->dir), DF_EINVAL);
	char *path = path_in(f->dir, file);
	char *expected;
	assert_true(asprintf(&expected, "%s: %s", path, tail) > 0);
	assert_string_equal(err.msg, expected);
	assert_null(strchr(err.msg, '\n'));
	free(expected);
	free(path);
}

/* Opening root fails because `missing` does not exist; the message says
 * which file and how to get it. */
static void expect_missing(const char *root, const char *missing)
{
	void *ds;
	df_error err;
	assert_int_equal(open_with(&ds, &err, "root", root), DF_EIO);
	char *expected;
	assert_true(asprintf(&expected,
	                     "%s: cannot open (No such file or directory); "
	                     "install the Debian package dataset-fashion-mnist",
	                     missing) > 0);
	assert_string_equal(err.msg, expected);
	free(expected);
}

static void test_missing_root(void **state)
{
	fixture *f = *state;
	char *root = path_in(f->dir, "absent");
	char *images = path_in(root, "train-images-idx3-ubyte.gz");
	expect_missing(root, images);
	free(images);
	free(root);
}

static void test_missing_labels(void **state)
{
	fixture *f = *state;
	write_small(f->dir, N_SMALL, N_SMALL, 0);
	char *labels = path_in(f->dir, "train-labels-idx1-ubyte.gz");
	assert_int_equal(unlink(labels), 0);
	expect_missing(f->dir, labels);
	free(labels);
}

static void test_unreadable(void **state)
{
	fixture *f = *state;
	write_small(f->dir, N_SMALL, N_SMALL, 0);
	char *images = path_in(f->dir, "train-images-idx3-ubyte.gz");
	assert_int_equal(unlink(images), 0);
	assert_int_equal(mkdir(images, 0700), 0);
	void *ds;
	df_error err;
	assert_int_equal(open_with(&ds, &err, "root", f->dir), DF_EIO);
	char *expected;
	assert_true(asprintf(&expected, "%s: cannot read (Is a directory)", images) > 0);
	assert_string_equal(err.msg, expected);
	free(expected);
	free(images);
}

static void test_truncated_images(void **state)
{
	fixture *f = *state;
	uint8_t pixels[40] = {0};
	write_small(f->dir, N_SMALL, N_SMALL, 0);
	/* The header says 3 images of 4x4 (64 bytes), the file has 40. */
	write_idx(f->dir, "train-images-idx3-ubyte.gz", 0x803, 3, (uint32_t[]){3, 4, 4}, pixels, sizeof pixels);
	expect_error(f, "train-images-idx3-ubyte.gz", "truncated at byte 56 (expected 64 bytes for 3x4x4)");
}

static void test_truncated_header(void **state)
{
	fixture *f = *state;
	write_small(f->dir, N_SMALL, N_SMALL, 0);
	/* A labels file that ends inside its count. */
	char *path = path_in(f->dir, "train-labels-idx1-ubyte.gz");
	gzFile gz = gzopen(path, "wb");
	assert_int_equal(gzwrite(gz, "\0\0\x08\x01\0\0", 6), 6);
	assert_int_equal(gzclose(gz), Z_OK);
	free(path);
	expect_error(f, "train-labels-idx1-ubyte.gz", "truncated at byte 6 (the IDX header needs 8 bytes)");
	/* An empty images file. */
	write_small(f->dir, N_SMALL, N_SMALL, 0);
	free(harness_write_file(f->dir, "train-images-idx3-ubyte.gz", "", 0));
	expect_error(f, "train-images-idx3-ubyte.gz", "truncated at byte 0 (the IDX magic number needs 4 bytes)");
}

static void test_trailing_bytes(void **state)
{
	fixture *f = *state;
	write_small(f->dir, N_SMALL, N_SMALL, 0);
	uint8_t labels[5] = {1, 2, 3, 4, 5};
	write_idx(f->dir, "train-labels-idx1-ubyte.gz", 0x801, 1, (uint32_t[]){3}, labels, sizeof labels);
	expect_error(f, "train-labels-idx1-ubyte.gz", "2 unexpected bytes after the data (expected 11 bytes for 3)");
}

static void test_bad_magic(void **state)
{
	fixture *f = *state;
	write_small(f->dir, N_SMALL, N_SMALL, 0);
	/* Labels where the images should be. */
	uint8_t labels[3] = {1, 2, 3};
	write_idx(f->dir, "train-images-idx3-ubyte.gz", 0x801, 1, (uint32_t[]){3}, labels, sizeof labels);
	expect_error(f, "train-images-idx3-ubyte.gz",
	             "bad magic 0x00000801 (expected 0x00000803: IDX, unsigned bytes, 3 dimensions)");
	/* Floats (type 0x0d) are not images of bytes. */
	write_small(f->dir, N_SMALL, N_SMALL, 0);
	write_idx(f->dir, "train-labels-idx1-ubyte.gz", 0xd01, 1, (uint32_t[]){3}, labels, sizeof labels);
	expect_error(f, "train-labels-idx1-ubyte.gz",
	             "bad magic 0x00000d01 (expected 0x00000801: IDX, unsigned bytes, 1 dimension)");
}

static void test_zero_dimension(void **state)
{
	fixture *f = *state;
	write_small(f->dir, N_SMALL, N_SMALL, 0);
	write_idx(f->dir, "train-images-idx3-ubyte.gz", 0x803, 3, (uint32_t[]){3, 0, 4}, NULL, 0);
	expect_error(f, "train-images-idx3-ubyte.gz", "dimension 2 is zero");
}

static void test_huge_dimensions(void **state)
{
	fixture *f = *state;
	write_small(f->dir, N_SMALL, N_SMALL, 0);
	uint8_t pixels[16] = {0};
	write_idx(f->dir, "train-images-idx3-ubyte.gz", 0x803, 3, (uint32_t[]){0xffffffffu, 0xffffffffu, 0xffffffffu},
	          pixels, sizeof pixels);
	expect_error(f, "train-images-idx3-ubyte.gz",
	             "truncated at byte 32 (4294967295x4294967295x4294967295 bytes would not fit in memory)");
}

static void test_count_mismatch(void **state)
{
	fixture *f = *state;
	write_small(f->dir, N_SMALL, 2, 0);
	char *images = path_in(f->dir, "train-images-idx3-ubyte.gz");
	char *tail;
	assert_true(asprintf(&tail, "2 labels for the 3 images of %s", images) > 0);
	expect_error(f, "train-labels-idx1-ubyte.gz", tail);
	free(tail);
	free(images);
}

static void test_bad_label(void **state)
{
	fixture *f = *state;
	write_small(f->dir, N_SMALL, N_SMALL, 10);
	expect_error(f, "train-labels-idx1-ubyte.gz", "label 10 of item 1 is not a class 0..9");
}

static void test_corrupt_gzip(void **state)
{
	fixture *f = *state;
	write_small(f->dir, N_SMALL, N_SMALL, 0);
	/* Compress a real-sized images file, then keep only half of it. */
	size_t len = 16 + 100 * 16;
	uint8_t *raw = calloc(1, len);
	raw[2] = 8;
	raw[3] = 3;
	raw[7] = 100;
	raw[11] = 4;
	raw[15] = 4;
	for (size_t i = 16; i < len; i++)
		raw[i] = (uint8_t)(i * 7919 >> 3);
	uLongf packed_len = compressBound(len) + 32;
	uint8_t *packed = malloc(packed_len);
	z_stream z = {0};
	assert_int_equal(deflateInit2(&z, 9, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY), Z_OK);
	z.next_in = raw;
	z.avail_in = (uInt)len;
	z.next_out = packed;
	z.avail_out = (uInt)packed_len;
	assert_int_equal(deflate(&z, Z_FINISH), Z_STREAM_END);
	packed_len = z.total_out;
	deflateEnd(&z);
	free(harness_write_file(f->dir, "train-images-idx3-ubyte.gz", packed, packed_len / 2));

	void *ds;
	df_error err;
	assert_int_equal(open_with(&ds, &err, "root", f->dir), DF_EINVAL);
	char *path = path_in(f->dir, "train-images-idx3-ubyte.gz");
	assert_memory_equal(err.msg, path, strlen(path));
	assert_non_null(strstr(err.msg, ": corrupt gzip data after "));
	assert_null(strchr(err.msg, '\n'));

	/* Flip bytes inside the compressed stream instead. */
	for (size_t i = 20; i < packed_len - 8; i += 3)
		packed[i] ^= 0x5a;
	free(harness_write_file(f->dir, "train-images-idx3-ubyte.gz", packed, packed_len));
	assert_int_not_equal(open_with(&ds, &err, "root", f->dir), DF_OK);
	assert_memory_equal(err.msg, path, strlen(path));
	assert_null(strchr(err.msg, '\n'));
	free(path);
	free(packed);
	free(raw);
}

static void test_settings_declared(void **state)
{
	/* Every declared default parses, is in range and among its choices
	 * (the harness checks), and every setting has help. */
	const df_component *c = harness_component(DF_KIND_DATASET, "fashion-mnist");
	assert_int_equal(c->kind, DF_KIND_DATASET);
	void *settings = harness_settings(c, NULL);
	harness_settings_free(c, settings);
	static const char *const names[] = {"root", "split", "pad_to", "resize", "filter", "limit"};
	for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
		const df_setting *s = c->settings;
		while (s->name && strcmp(s->name, names[i]) != 0)
			s++;
		assert_non_null(s->name);
		assert_non_null(s->help);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_settings_declared),
		cmocka_unit_test(test_debian_train),
		cmocka_unit_test(test_debian_test),
		cmocka_unit_test(test_debian_pad_resize_limit),
		cmocka_unit_test_setup_teardown(test_small_values, setup, teardown),
		cmocka_unit_test_setup_teardown(test_small_limit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_small_pad, setup, teardown),
		cmocka_unit_test_setup_teardown(test_small_resize, setup, teardown),
		cmocka_unit_test_setup_teardown(test_missing_root, setup, teardown),
		cmocka_unit_test_setup_teardown(test_missing_labels, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unreadable, setup, teardown),
		cmocka_unit_test_setup_teardown(test_truncated_images, setup, teardown),
		cmocka_unit_test_setup_teardown(test_truncated_header, setup, teardown),
		cmocka_unit_test_setup_teardown(test_trailing_bytes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_magic, setup, teardown),
		cmocka_unit_test_setup_teardown(test_zero_dimension, setup, teardown),
		cmocka_unit_test_setup_teardown(test_huge_dimensions, setup, teardown),
		cmocka_unit_test_setup_teardown(test_count_mismatch, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_label, setup, teardown),
		cmocka_unit_test_setup_teardown(test_corrupt_gzip, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
