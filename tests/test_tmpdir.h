/* Scratch directories for tests: created under $TMPDIR (or the build
 * directory), never in the source tree, and removed afterwards. Include
 * after <cmocka.h>. */
#ifndef DIFFUSE_TESTS_TMPDIR_H
#define DIFFUSE_TESTS_TMPDIR_H

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char test_dir[1024];

/* Creates the scratch directory; returns its path or NULL. */
static const char *test_tmpdir_create(void)
{
	const char *base = getenv("TMPDIR");
	snprintf(test_dir, sizeof test_dir, "%s/diffuse-test-XXXXXX", base && *base ? base : ".");
	return mkdtemp(test_dir);
}

/* A path inside the scratch directory (a static buffer per call site). */
static const char *test_path(char *buf, size_t size, const char *name)
{
	snprintf(buf, size, "%s/%s", test_dir, name);
	return buf;
}

/* Number of entries whose name contains `part` (e.g. ".tmp."). */
static int test_count_entries(const char *dir, const char *part)
{
	DIR *d = opendir(dir);
	int count = 0;
	if (!d)
		return -1;
	for (struct dirent *e; (e = readdir(d));)
		if (strstr(e->d_name, part))
			count++;
	closedir(d);
	return count;
}

/* Removes the scratch directory with the plain files and empty folders
 * the tests left in it. */
static void test_tmpdir_remove(void)
{
	DIR *d = opendir(test_dir);
	if (!d)
		return;
	for (struct dirent *e; (e = readdir(d));) {
		char path[8192];
		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		snprintf(path, sizeof path, "%s/%s", test_dir, e->d_name);
		if (unlink(path) != 0)
			rmdir(path);
	}
	closedir(d);
	rmdir(test_dir);
}

/* CMocka group setup and teardown creating and removing the directory. */
static int test_tmpdir_setup(void **state)
{
	(void)state;
	return test_tmpdir_create() ? 0 : -1;
}

static int test_tmpdir_teardown(void **state)
{
	(void)state;
	test_tmpdir_remove();
	return 0;
}

/* Fails the test with the error's message unless rc is 0. */
static void expect_ok(int rc, const df_error *err)
{
	if (rc != 0) {
		print_error("unexpected failure %d: %s\n", rc, err->msg);
		fail();
	}
}

#endif
