/* The png-folder dataset on small PNG files written here: class folders,
 * channel conversion, sizes, resizing, and one-line errors naming the file. */
#define _GNU_SOURCE /* asprintf */
#include "config.h"
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "diffuse/io.h"
#include "diffuse/plugin.h"
#include "plugin_harness.h"

static const df_dataset_vtable *vtable(void)
{
	return harness_dataset("png-folder");
}

#define open_with(ds, err, ...) harness_dataset_open("png-folder", ds, err, __VA_ARGS__, NULL)

static int setup(void **state)
{
	*state = harness_tmpdir();
	return 0;
}

static int teardown(void **state)
{
	harness_rmtree(*state);
	return 0;
}

static char *path_in(const char *dir, const char *name)
{
	char *path;
	assert_true(asprintf(&path, "%s/%s", dir, name) > 0);
	return path;
}

static char *make_dir(const char *dir, const char *name)
{
	char *path = path_in(dir, name);
	assert_int_equal(mkdir(path, 0700), 0);
	return path;
}

/* A width x height image with `channels` (HWC) whose every byte is
 * `base` plus its index, written as dir/name. */
static void write_png(const char *dir, const char *name, int width, int height, int channels, int base)
{
	uint8_t pixels[4 * 4 * 3];
	assert_true(width * height * channels <= (int)sizeof pixels);
	for (int i = 0; i < width * height * channels; i++)
		pixels[i] = (uint8_t)(base + i);
	char *path = path_in(dir, name);
	df_error err;
	assert_int_equal(df_png_write(path, pixels, width, height, channels, &err), 0);
	free(path);
}

static float scaled(int p)
{
	return (uint8_t)p / 127.5f - 1.0f;
}

static void test_class_folders(void **state)
{
	const char *root = *state;
	/* Folders and files out of order: sorted names decide. */
	char *shirt = make_dir(root, "shirt"), *boot = make_dir(root, "boot");
	write_png(shirt, "b.png", 2, 2, 1, 100);
	write_png(shirt, "a.png", 2, 2, 1, 50);
	write_png(boot, "z.PNG", 2, 2, 1, 200);
	void *ds;
	df_error err;
	assert_int_equal(open_with(&ds, &err, "root", root, "channels", "1", "size", "2"), DF_OK);
	df_dataset_info info;
	vtable()->info(ds, &info);
	assert_int_equal(info.count, 3);
	assert_int_equal(info.num_classes, 2);
	assert_int_equal(info.channels, 1);
	assert_int_equal(info.height, 2);
	assert_int_equal(info.width, 2);
	int64_t indices[3] = {0, 1, 2};
	float images[3 * 4];
	int32_t labels[3];
	assert_int_equal(vtable()->fetch(ds, indices, 3, images, labels, &err), DF_OK);
	/* boot/z.PNG (class 0), shirt/a.png, shirt/b.png (class 1). */
	const int bases[3] = {200, 50, 100}, classes[3] = {0, 1, 1};
	for (int i = 0; i < 3; i++) {
		assert_int_equal(labels[i], classes[i]);
		for (int p = 0; p < 4; p++)
			assert_true(images[4 * i + p] == scaled(bases[i] + p));
	}
	indices[0] = 3;
	assert_int_equal(vtable()->fetch(ds, indices, 1, images, labels, &err), DF_EINVAL);
	assert_string_equal(err.msg, "index 3 is outside [0, 3)");
	vtable()->close(ds);

	/* The first N in that order. */
	assert_int_equal(open_with(&ds, &err, "root", root, "channels", "1", "limit", "2"), DF_OK);
	vtable()->info(ds, &info);
	assert_int_equal(info.count, 2);
	assert_int_equal(info.num_classes, 2);
	vtable()->close(ds);
	free(shirt);
	free(boot);
}

static void test_unlabelled_rgb(void **state)
{
	const char *root = *state;
	write_png(root, "0.png", 2, 1, 3, 10);
	write_png(root, "1.png", 2, 1, 1, 90);
	void *ds;
	df_error err;
	/* Without a size, the first image's (2 wide, 1 high) is the size. */
	assert_int_equal(open_with(&ds, &err, "root", root), DF_OK);
	df_dataset_info info;
	vtable()->info(ds, &info);
	assert_int_equal(info.count, 2);
	assert_int_equal(info.num_classes, 0);
	assert_int_equal(info.channels, 3);
	assert_int_equal(info.height, 1);
	assert_int_equal(info.width, 2);
	int64_t indices[2] = {0, 1};
	float images[2 * 3 * 2];
	int32_t labels[2];
	assert_int_equal(vtable()->fetch(ds, indices, 2, images, labels, &err), DF_OK);
	assert_int_equal(labels[0], -1);
	assert_int_equal(labels[1], -1);
	/* Planar out of interleaved: channel c of pixel x is byte 3 x + c. */
	for (int c = 0; c < 3; c++)
		for (int x = 0; x < 2; x++) {
			assert_true(images[2 * c + x] == scaled(10 + 3 * x + c));
			/* The grey image is replicated to every channel. */
			assert_true(images[6 + 2 * c + x] == scaled(90 + x));
		}
	vtable()->close(ds);
}

static void test_rgb_to_grey(void **state)
{
	const char *root = *state;
	/* Grey values stored as RGB convert to themselves. */
	uint8_t pixels[2 * 3] = {30, 30, 30, 240, 240, 240};
	char *path = path_in(root, "g.png");
	df_error err;
	assert_int_equal(df_png_write(path, pixels, 2, 1, 3, &err), 0);
	free(path);
	void *ds;
	assert_int_equal(open_with(&ds, &err, "root", root, "channels", "1"), DF_OK);
	int64_t index = 0;
	float image[2];
	assert_int_equal(vtable()->fetch(ds, &index, 1, image, NULL, &err), DF_OK);
	assert_float_equal(image[0], scaled(30), 1.5 / 127.5);
	assert_float_equal(image[1], scaled(240), 1.5 / 127.5);
	vtable()->close(ds);
}

static void test_size_mismatch(void **state)
{
	const char *root = *state;
	write_png(root, "a.png", 2, 2, 1, 0);
	write_png(root, "b.png", 3, 2, 1, 0);
	void *ds;
	df_error err;
	assert_int_equal(open_with(&ds, &err, "root", root, "channels", "1"), DF_EINVAL);
	char *path = path_in(root, "b.png"), *expected;
	assert_true(asprintf(&expected, "%s: 3x2 pixels, expected 2x2 (or set resize = true)", path) > 0);
	assert_string_equal(err.msg, expected);
	free(expected);
	free(path);

	/* Resized instead: nearest 4x4 -> 2x2 keeps the even pixels. */
	write_png(root, "b.png", 4, 4, 1, 0);
	assert_int_equal(open_with(&ds, &err, "root", root, "channels", "1", "size", "2", "resize", "true", "filter",
	                           "nearest"),
	                 DF_OK);
	int64_t indices[2] = {1, 0};
	float images[2 * 4];
	assert_int_equal(vtable()->fetch(ds, indices, 2, images, NULL, &err), DF_OK);
	const int kept[4] = {0, 2, 8, 10};
	for (int p = 0; p < 4; p++) {
		assert_true(images[p] == scaled(kept[p]));
		assert_true(images[4 + p] == scaled(p));
	}
	vtable()->close(ds);
}

/* Opening root fails with "<root>/<file>: <tail>" (file "" for root itself). */
static void expect_error(const char *root, const char *file, int status, const char *tail)
{
	void *ds;
	df_error err;
	assert_int_equal(open_with(&ds, &err, "root", root, "channels", "1"), status);
	char *expected;
	assert_true(asprintf(&expected, "%s%s%s: %s", root, *file ? "/" : "", file, tail) > 0);
	assert_string_equal(err.msg, expected);
	free(expected);
}

static void test_layout_errors(void **state)
{
	const char *root = *state;
	expect_error(root, "", DF_EINVAL, "no PNG files");
	char *missing = path_in(root, "absent");
	expect_error(missing, "", DF_EIO, "cannot open the folder (No such file or directory)");
	free(missing);

	char *a = make_dir(root, "a");
	expect_error(root, "a", DF_EINVAL, "no PNG files");
	write_png(a, "1.png", 2, 2, 1, 0);
	write_png(root, "stray.png", 2, 2, 1, 0);
	expect_error(root, "stray.png", DF_EINVAL, "a PNG file beside class folders");
	char *stray = path_in(root, "stray.png");
	assert_int_equal(remove(stray), 0);
	free(stray);

	free(harness_write_file(a, "notes.txt", "x", 1));
	expect_error(root, "a/notes.txt", DF_EINVAL, "not a .png file");
	char *notes = path_in(a, "notes.txt");
	assert_int_equal(remove(notes), 0);
	free(notes);

	free(make_dir(a, "nested"));
	expect_error(root, "a/nested", DF_EINVAL, "a folder inside a class folder");
	free(a);
}

static void test_corrupt_png(void **state)
{
	const char *root = *state;
	write_png(root, "a.png", 2, 2, 1, 0);
	/* A PNG signature followed by garbage, and a file cut short. */
	free(harness_write_file(root, "b.png", "\x89PNG\r\n\x1a\n garbage", 17));
	void *ds;
	df_error err;
	assert_int_not_equal(open_with(&ds, &err, "root", root, "channels", "1"), DF_OK);
	char *path = path_in(root, "b.png");
	assert_memory_equal(err.msg, path, strlen(path));
	assert_int_equal(err.msg[strlen(path)], ':');
	assert_null(strchr(err.msg, '\n'));
	free(path);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_class_folders, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unlabelled_rgb, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rgb_to_grey, setup, teardown),
		cmocka_unit_test_setup_teardown(test_size_mismatch, setup, teardown),
		cmocka_unit_test_setup_teardown(test_layout_errors, setup, teardown),
		cmocka_unit_test_setup_teardown(test_corrupt_png, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
