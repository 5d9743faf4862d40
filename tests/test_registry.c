/* The plugin loader: a good plugin loads with host-sized copies of its
 * structs; each malformed plugin is refused with one line naming the file
 * and the reason, and the others still load. */
#include "config.h"
#include <sys/stat.h>
#include "testutil.h"
#include "diffuse/diffuse.h"

static df_registry *new_registry(void)
{
	df_registry *reg;
	df_error err;
	assert_int_equal(df_registry_create(&reg, &err), DF_OK);
	return reg;
}

/* Loads a fixture expecting a refusal; returns the recorded line. */
static void expect_refusal(const char *name, const char *reason)
{
	df_registry *reg = new_registry();
	char *file = fixture(name);
	df_error err;
	assert_int_equal(df_registry_load_file(reg, file, &err), DF_EINVAL);
	assert_int_equal(df_registry_count(reg), 0);
	assert_int_equal(df_registry_refusal_count(reg), 1);
	const char *line = df_registry_refusal(reg, 0);
	/* One line: "file: reason". */
	assert_int_equal(strncmp(line, file, strlen(file)), 0);
	assert_int_equal(line[strlen(file)], ':');
	assert_null(strchr(line, '\n'));
	assert_contains(line, reason);
	assert_string_equal(err.msg, line);
	free(file);
	df_registry_destroy(reg);
}

static void test_good_plugin_loads(void **state)
{
	df_registry *reg = new_registry();
	char *file = fixture("good");
	df_error err;
	assert_int_equal(df_registry_load_file(reg, file, &err), DF_OK);
	assert_int_equal(df_registry_count(reg), 2);
	assert_int_equal(df_registry_refusal_count(reg), 0);
	const df_component_info *info = df_registry_find(reg, DF_KIND_SAMPLER, "test-sampler");
	assert_non_null(info);
	assert_string_equal(info->plugin, "test");
	assert_string_equal(info->version, "1.2.3");
	assert_string_equal(info->license, "MIT");
	assert_string_equal(info->file, file);
	assert_int_equal(info->component->struct_size, sizeof(df_component));
	const df_sampler_vtable *vt = info->component->vtable;
	assert_int_equal(vt->struct_size, sizeof(df_sampler_vtable));
	assert_non_null(vt->sample);
	assert_non_null(vt->extension);
	df_error call_err;
	assert_int_equal(vt->sample(NULL, NULL, NULL, NULL, &call_err), DF_ENOTSUP);
	assert_string_equal(call_err.msg, "fixture sampler: does not sample");
	/* The kind is part of the key. */
	assert_null(df_registry_find(reg, DF_KIND_DATASET, "test-sampler"));
	assert_non_null(df_registry_find(reg, 0, "test-data"));
	/* Loading the same file again changes nothing. */
	assert_int_equal(df_registry_load_file(reg, file, &err), DF_OK);
	assert_int_equal(df_registry_count(reg), 2);
	free(file);
	df_registry_destroy(reg);
}

/* A vtable built before a slot existed: the slot reads NULL, not garbage. */
static void test_older_vtable_reads_new_slots_as_null(void **state)
{
	df_registry *reg = new_registry();
	char *file = fixture("old_vtable");
	df_error err;
	assert_int_equal(df_registry_load_file(reg, file, &err), DF_OK);
	const df_component_info *info = df_registry_find(reg, DF_KIND_SAMPLER, "old-vtable-sampler");
	assert_non_null(info);
	const df_sampler_vtable *vt = info->component->vtable;
	assert_int_equal(vt->struct_size, sizeof(df_sampler_vtable));
	assert_non_null(vt->sample);
	assert_null(vt->extension);
	free(file);
	df_registry_destroy(reg);
}

static void test_no_entry_symbol_is_refused(void **state)
{
	expect_refusal("noentry", "no df_plugin_entry symbol: not a diffuse plugin");
}

static void test_other_abi_major_is_refused(void **state)
{
	expect_refusal("abi_major", "plugin ABI 2.0, host ABI 1.0: rebuild the plugin against this diffuse");
}

static void test_newer_abi_minor_is_refused(void **state)
{
	expect_refusal("abi_minor", "plugin ABI 1.99 is newer than the host's ABI 1.0: update diffuse");
}

static void test_missing_slot_is_refused_by_name(void **state)
{
	expect_refusal("missing_slot", "sampler \"missing-slot-sampler\": the vtable has no 'sample' slot");
}

static void test_bad_default_is_refused(void **state)
{
	expect_refusal("bad_default", "sampler \"bad-default-sampler\": setting \"scale\": default: 99 is out of range");
}

static void test_not_a_shared_object_is_refused_with_hint(void **state)
{
	char *dir = make_temp_dir();
	chmod(dir, 0755);
	char *file = path_join(dir, "junk.so");
	write_text(file, "not an ELF file\n");
	df_registry *reg = new_registry();
	df_error err;
	assert_int_equal(df_registry_load_file(reg, file, &err), DF_EINVAL);
	assert_contains(err.msg, file);
	assert_contains(err.msg, "check missing dependencies with ldd");
	df_registry_destroy(reg);
	remove_tree(dir);
	free(file);
	free(dir);
}

/* The second provider of a kind+name is refused; its other component stays. */
static void test_duplicate_component_is_refused(void **state)
{
	df_registry *reg = new_registry();
	char *good = fixture("good"), *dup = fixture("duplicate");
	df_error err;
	assert_int_equal(df_registry_load_file(reg, good, &err), DF_OK);
	assert_int_equal(df_registry_load_file(reg, dup, &err), DF_OK);
	assert_int_equal(df_registry_refusal_count(reg), 1);
	const char *line = df_registry_refusal(reg, 0);
	char expected[8192];
	snprintf(expected, sizeof expected, "%s: sampler \"test-sampler\" is already provided by %s; this one is ignored",
	         dup, good);
	assert_string_equal(line, expected);
	assert_string_equal(df_registry_find(reg, DF_KIND_SAMPLER, "test-sampler")->file, good);
	assert_non_null(df_registry_find(reg, DF_KIND_DATASET, "duplicate-data"));
	assert_int_equal(df_registry_count(reg), 3);
	free(good);
	free(dup);
	df_registry_destroy(reg);
}

/* A whole directory: every bad fixture refused, every good one loaded. */
static void test_directory_loads_the_good_and_refuses_the_bad(void **state)
{
	df_registry *reg = new_registry();
	df_error err;
	assert_int_equal(df_registry_load_dir(reg, fixture_dir(), &err), DF_OK);
	assert_non_null(df_registry_find(reg, DF_KIND_SAMPLER, "test-sampler"));
	assert_non_null(df_registry_find(reg, DF_KIND_SAMPLER, "old-vtable-sampler"));
	assert_non_null(df_registry_find(reg, DF_KIND_DATASET, "duplicate-data"));
	assert_null(df_registry_find(reg, 0, "abi-major-sampler"));
	assert_null(df_registry_find(reg, 0, "abi-minor-sampler"));
	assert_null(df_registry_find(reg, 0, "missing-slot-sampler"));
	/* abi_major, abi_minor, bad_default, duplicate (one component), missing_slot, noentry */
	assert_int_equal(df_registry_refusal_count(reg), 6);
	/* A directory that does not exist is simply empty. */
	assert_int_equal(df_registry_load_dir(reg, "/nonexistent/diffuse/plugins", &err), DF_OK);
	df_registry_destroy(reg);
}

static void copy_file(const char *from, const char *to)
{
	char command[8192];
	snprintf(command, sizeof command, "cp '%s' '%s'", from, to);
	assert_int_equal(system(command), 0);
}

static void test_world_writable_file_and_directory_are_refused(void **state)
{
	char *dir = make_temp_dir();
	assert_int_equal(chmod(dir, 0755), 0);
	char *good = fixture("good");
	char *copy = path_join(dir, "good.so");
	copy_file(good, copy);

	assert_int_equal(chmod(copy, 0666), 0);
	df_registry *reg = new_registry();
	df_error err;
	assert_int_equal(df_registry_load_file(reg, copy, &err), DF_EINVAL);
	assert_contains(err.msg, copy);
	assert_contains(err.msg, "the file is world-writable");
	assert_int_equal(df_registry_count(reg), 0);
	df_registry_destroy(reg);

	assert_int_equal(chmod(copy, 0644), 0);
	assert_int_equal(chmod(dir, 0777), 0);
	reg = new_registry();
	assert_int_equal(df_registry_load_dir(reg, dir, &err), DF_OK);
	assert_int_equal(df_registry_count(reg), 0);
	assert_int_equal(df_registry_refusal_count(reg), 1);
	assert_contains(df_registry_refusal(reg, 0), "is world-writable, refusing to load it");
	df_registry_destroy(reg);

	assert_int_equal(chmod(dir, 0755), 0);
	reg = new_registry();
	assert_int_equal(df_registry_load_dir(reg, dir, &err), DF_OK);
	assert_int_equal(df_registry_count(reg), 2);
	df_registry_destroy(reg);

	remove_tree(dir);
	free(copy);
	free(good);
	free(dir);
}

/* DIFFUSE_PLUGIN_PATH entries may be directories or files, relative to a base. */
static void test_search_path(void **state)
{
	df_registry *reg = new_registry();
	df_error err;
	char *good = fixture("good");
	char *old = fixture("old_vtable");
	char path[8192];
	snprintf(path, sizeof path, "/nonexistent::%s:%s", good, old);
	assert_int_equal(df_registry_load_path(reg, path, NULL, &err), DF_OK);
	assert_int_equal(df_registry_count(reg), 4);
	df_registry_destroy(reg);

	reg = new_registry();
	assert_int_equal(df_registry_load_path(reg, "good.so", fixture_dir(), &err), DF_OK);
	assert_int_equal(df_registry_count(reg), 2);
	df_registry_destroy(reg);

	/* The standard search: the system path (here replaced), then the environment. */
	setenv("DIFFUSE_PLUGIN_SYSTEM_PATH", "", 1);
	setenv("DIFFUSE_PLUGIN_PATH", good, 1);
	reg = new_registry();
	assert_int_equal(df_registry_load_default(reg, &err), DF_OK);
	assert_int_equal(df_registry_count(reg), 2);
	assert_int_equal(df_registry_refusal_count(reg), 0);
	df_registry_destroy(reg);
	setenv("DIFFUSE_PLUGIN_SYSTEM_PATH", fixture_dir(), 1);
	setenv("DIFFUSE_PLUGIN_PATH", "", 1);
	reg = new_registry();
	assert_int_equal(df_registry_load_default(reg, &err), DF_OK);
	assert_non_null(df_registry_find(reg, DF_KIND_SAMPLER, "old-vtable-sampler"));
	df_registry_destroy(reg);
	assert_non_null(df_registry_system_dir());
	free(good);
	free(old);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_good_plugin_loads),
		cmocka_unit_test(test_older_vtable_reads_new_slots_as_null),
		cmocka_unit_test(test_no_entry_symbol_is_refused),
		cmocka_unit_test(test_other_abi_major_is_refused),
		cmocka_unit_test(test_newer_abi_minor_is_refused),
		cmocka_unit_test(test_missing_slot_is_refused_by_name),
		cmocka_unit_test(test_bad_default_is_refused),
		cmocka_unit_test(test_not_a_shared_object_is_refused_with_hint),
		cmocka_unit_test(test_duplicate_component_is_refused),
		cmocka_unit_test(test_directory_loads_the_good_and_refuses_the_bad),
		cmocka_unit_test(test_world_writable_file_and_directory_are_refused),
		cmocka_unit_test(test_search_path),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
