/* Small helpers shared by the test programs: temporary folders, files
 * written from strings, fixture paths. Header-only, each test one binary. */
#ifndef DIFFUSE_TESTUTIL_H
#define DIFFUSE_TESTUTIL_H

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

/* A fresh folder under TMPDIR, removed by remove_tree. */
static inline char *make_temp_dir(void)
{
	const char *base = getenv("TMPDIR");
	char pattern[4096];
	snprintf(pattern, sizeof pattern, "%s/diffuse-test-XXXXXX", base && *base ? base : "/tmp");
	char *dir = mkdtemp(pattern);
	assert_non_null(dir);
	return strdup(dir);
}

static inline void remove_tree(const char *dir)
{
	char command[4200];
	snprintf(command, sizeof command, "rm -rf '%s'", dir);
	assert_int_equal(system(command), 0);
}

/* dir/name, in a static buffer of its own per call site use. */
static inline char *path_join(const char *dir, const char *name)
{
	size_t n = strlen(dir) + strlen(name) + 2;
	char *path = malloc(n);
	assert_non_null(path);
	snprintf(path, n, "%s/%s", dir, name);
	return path;
}

static inline void write_text(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	assert_int_equal(fputs(text, f) >= 0, 1);
	assert_int_equal(fclose(f), 0);
}

/* The fixture plugin directory (tests/plugins/.libs of the build). */
static inline const char *fixture_dir(void)
{
	const char *dir = getenv("DF_FIXTURE_DIR");
	if (!dir)
		fail_msg("DF_FIXTURE_DIR is not set: run the tests through make check");
	return dir;
}

/* The fixture called name ("good" -> .../good.so); free() it. */
static inline char *fixture(const char *name)
{
	char file[256];
	snprintf(file, sizeof file, "%s.so", name);
	return path_join(fixture_dir(), file);
}

#define assert_contains(haystack, needle)                                              \
	do {                                                                           \
		const char *h_ = (haystack), *n_ = (needle);                           \
		if (!h_ || !strstr(h_, n_))                                            \
			fail_msg("expected \"%s\" in \"%s\"", n_, h_ ? h_ : "(null)"); \
	} while (0)

#endif
