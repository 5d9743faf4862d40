/* Declared settings without files: checking declarations, defaults,
 * typed parsing, ranges, choices, formatting and suggestions. */
#include "config.h"
#include "testutil.h"
#include "diffuse/diffuse.h"

typedef struct demo {
	int64_t steps;
	double lr;
	int flag;
	const char *mode;
	const char *note;
	df_list betas;
	const char *path;
} demo;

static const char *const modes[] = {"linear", "cosine", NULL};

static const df_setting demo_decl[] = {
	DF_SETTING_INT(demo, steps, "100", 1, 1000, "steps"),
	DF_SETTING_FLOAT(demo, lr, "1e-3", 0, 1, "learning rate"),
	DF_SETTING_BOOL(demo, flag, "false", "a switch"),
	DF_SETTING_CHOICE(demo, mode, "linear", modes, "schedule"),
	DF_SETTING_STRING(demo, note, "say \"hi\"", "free text"),
	DF_SETTING_LIST(demo, betas, "[0.9, 0.999]", 0, 1, "Adam betas"),
	DF_SETTING_STRING(demo, path, NULL, "required"),
	DF_SETTINGS_END,
};

static void test_declaration_is_valid(void **state)
{
	df_error err;
	assert_int_equal(df_settings_check(demo_decl, sizeof(demo), &err), DF_OK);
	assert_int_equal(df_settings_check(NULL, 0, &err), DF_OK);
}

static void test_bad_declarations_are_refused(void **state)
{
	df_error err;
	const df_setting twice[] = {DF_SETTING_INT(demo, steps, "1", 0, 9, ""), DF_SETTING_INT(demo, steps, "1", 0, 9, ""),
	                            DF_SETTINGS_END};
	assert_int_equal(df_settings_check(twice, sizeof(demo), &err), DF_EINVAL);
	assert_contains(err.msg, "declared twice");

	const df_setting outside[] = {DF_SETTING_FLOAT(demo, lr, "1", 0, 9, ""), DF_SETTINGS_END};
	assert_int_equal(df_settings_check(outside, 4, &err), DF_EINVAL);
	assert_contains(err.msg, "outside the 4-byte settings struct");

	const df_setting bad_default[] = {DF_SETTING_INT(demo, steps, "5000", 1, 1000, ""), DF_SETTINGS_END};
	assert_int_equal(df_settings_check(bad_default, sizeof(demo), &err), DF_EINVAL);
	assert_contains(err.msg, "setting \"steps\": default");
	assert_contains(err.msg, "5000 is out of range [1, 1000]");

	const df_setting bad_name[] = {{"Steps", DF_SETTING_INT, 0, "1", 0, 9, NULL, ""}, DF_SETTINGS_END};
	assert_int_equal(df_settings_check(bad_name, sizeof(demo), &err), DF_EINVAL);

	const df_setting bad_choice_default[] = {DF_SETTING_CHOICE(demo, mode, "square", modes, ""), DF_SETTINGS_END};
	assert_int_equal(df_settings_check(bad_choice_default, sizeof(demo), &err), DF_EINVAL);
	assert_contains(err.msg, "\"square\" is not one of \"linear\", \"cosine\"");
}

static void test_defaults_are_filled(void **state)
{
	demo d;
	memset(&d, 0x5a, sizeof d);
	df_error err;
	assert_int_equal(df_settings_defaults(demo_decl, &d, &err), DF_OK);
	assert_int_equal(d.steps, 100);
	assert_true(d.lr == 1e-3);
	assert_int_equal(d.flag, 0);
	assert_string_equal(d.mode, "linear");
	assert_string_equal(d.note, "say \"hi\"");
	assert_int_equal(d.betas.n, 2);
	assert_true(d.betas.v[1] == 0.999);
	assert_null(d.path); /* required: no default */
	df_settings_release(demo_decl, &d);
	assert_null(d.mode);
}

static void test_set_parses_each_type(void **state)
{
	demo d;
	df_error err;
	assert_int_equal(df_settings_defaults(demo_decl, &d, &err), DF_OK);
	assert_int_equal(df_settings_set(demo_decl, &d, "steps", "250", &err), DF_OK);
	assert_int_equal(d.steps, 250);
	assert_int_equal(df_settings_set(demo_decl, &d, "lr", "1", &err), DF_OK); /* int text for a float */
	assert_true(d.lr == 1.0);
	assert_int_equal(df_settings_set(demo_decl, &d, "lr", "0.25", &err), DF_OK);
	assert_true(d.lr == 0.25);
	assert_int_equal(df_settings_set(demo_decl, &d, "flag", "yes", &err), DF_OK);
	assert_int_equal(d.flag, 1);
	assert_int_equal(df_settings_set(demo_decl, &d, "mode", "cosine", &err), DF_OK);
	assert_string_equal(d.mode, "cosine");
	assert_int_equal(df_settings_set(demo_decl, &d, "betas", "[0.5,0.25, 0]", &err), DF_OK);
	assert_int_equal(d.betas.n, 3);
	assert_true(d.betas.v[1] == 0.25);
	assert_int_equal(df_settings_set(demo_decl, &d, "betas", "[]", &err), DF_OK);
	assert_int_equal(d.betas.n, 0);
	df_settings_release(demo_decl, &d);
}

static void test_set_rejects_bad_values(void **state)
{
	demo d;
	df_error err;
	assert_int_equal(df_settings_defaults(demo_decl, &d, &err), DF_OK);

	assert_int_equal(df_settings_set(demo_decl, &d, "steps", "2.5", &err), DF_EINVAL);
	assert_string_equal(err.msg, "steps: \"2.5\" is not an integer");
	assert_int_equal(df_settings_set(demo_decl, &d, "steps", "0", &err), DF_EINVAL);
	assert_string_equal(err.msg, "steps: 0 is out of range [1, 1000]");
	assert_int_equal(d.steps, 100); /* unchanged */
	assert_int_equal(df_settings_set(demo_decl, &d, "lr", "fast", &err), DF_EINVAL);
	assert_string_equal(err.msg, "lr: \"fast\" is not a number");
	assert_int_equal(df_settings_set(demo_decl, &d, "lr", "inf", &err), DF_EINVAL);
	assert_int_equal(df_settings_set(demo_decl, &d, "flag", "maybe", &err), DF_EINVAL);
	assert_string_equal(err.msg, "flag: \"maybe\" is not true or false");
	assert_int_equal(df_settings_set(demo_decl, &d, "mode", "cosin", &err), DF_EINVAL);
	assert_string_equal(err.msg, "mode: \"cosin\" is not one of \"linear\", \"cosine\"; did you mean \"cosine\"?");
	assert_string_equal(d.mode, "linear");
	assert_int_equal(df_settings_set(demo_decl, &d, "betas", "[0.5, 2]", &err), DF_EINVAL);
	assert_string_equal(err.msg, "betas: item 2: 2 is out of range [0, 1]");
	assert_int_equal(df_settings_set(demo_decl, &d, "betas", "[0.5, x]", &err), DF_EINVAL);
	assert_int_equal(df_settings_set(demo_decl, &d, "betas", "[0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0]", &err),
	                 DF_EINVAL);
	assert_contains(err.msg, "17 items, at most 16");
	assert_int_equal(df_settings_set(demo_decl, &d, "stpes", "5", &err), DF_EINVAL);
	assert_string_equal(err.msg, "stpes: unknown setting; did you mean \"steps\"?");
	assert_int_equal(df_settings_set(demo_decl, &d, "zzzzzz", "5", &err), DF_EINVAL);
	assert_string_equal(err.msg, "zzzzzz: unknown setting");
	df_settings_release(demo_decl, &d);
}

/* What df_settings_format writes, df_settings_set reads back unchanged. */
static void test_format_round_trips(void **state)
{
	demo a, b;
	df_error err;
	assert_int_equal(df_settings_defaults(demo_decl, &a, &err), DF_OK);
	assert_int_equal(df_settings_defaults(demo_decl, &b, &err), DF_OK);
	assert_int_equal(df_settings_set(demo_decl, &a, "lr", "0.1", &err), DF_OK);
	assert_int_equal(df_settings_set(demo_decl, &a, "betas", "[1, 0.3333333333333333]", &err), DF_OK);
	char text[256];
	const df_setting *lr = df_settings_find(demo_decl, "lr");
	df_settings_format(lr, &a, text, sizeof text);
	assert_string_equal(text, "0.1");
	const df_setting *betas = df_settings_find(demo_decl, "betas");
	df_settings_format(betas, &a, text, sizeof text);
	assert_string_equal(text, "[1.0, 0.3333333333333333]");
	assert_int_equal(df_settings_set(demo_decl, &b, "betas", text, &err), DF_OK);
	assert_memory_equal(&a.betas, &b.betas, sizeof a.betas);
	const df_setting *note = df_settings_find(demo_decl, "note");
	df_settings_format(note, &a, text, sizeof text);
	assert_string_equal(text, "\"say \\\"hi\\\"\"");
	df_settings_format(df_settings_find(demo_decl, "steps"), &a, text, sizeof text);
	assert_string_equal(text, "100");
	df_settings_format(df_settings_find(demo_decl, "flag"), &a, text, sizeof text);
	assert_string_equal(text, "false");
	/* A float that happens to be whole stays a float in libconfig's eyes. */
	assert_int_equal(df_settings_set(demo_decl, &a, "lr", "1", &err), DF_OK);
	df_settings_format(lr, &a, text, sizeof text);
	assert_string_equal(text, "1.0");
	/* Truncation behaves like snprintf. */
	df_settings_format(note, &a, text, sizeof text);
	int full = (int)strlen(text);
	assert_int_equal(df_settings_format(note, &a, text, 4), full);
	assert_int_equal(strlen(text), 3);
	df_settings_release(demo_decl, &a);
	df_settings_release(demo_decl, &b);
}

static void test_suggestions(void **state)
{
	const char *const names[] = {"steps", "lr", "batch", "cfg_scale", NULL};
	assert_string_equal(df_suggest("stpes", names), "steps");
	assert_string_equal(df_suggest("step", names), "steps");
	assert_string_equal(df_suggest("lrr", names), "lr");
	assert_string_equal(df_suggest("cfg-scale", names), "cfg_scale");
	assert_string_equal(df_suggest("batch_size", names), "batch");
	assert_null(df_suggest("temperature", names));
	assert_null(df_suggest("x", names));
}

static void test_names_and_choices(void **state)
{
	assert_string_equal(df_setting_type_name(DF_SETTING_LIST), "list");
	assert_int_equal(df_choice_index(modes, "cosine"), 1);
	assert_int_equal(df_choice_index(modes, "square"), -1);
	assert_null(df_settings_find(demo_decl, "nope"));
	assert_string_equal(df_kind_name(DF_KIND_OBJECTIVE), "objective");
	assert_int_equal(df_kind_from_name("metric"), DF_KIND_METRIC);
	assert_int_equal(df_kind_from_name("train"), 0);
}

/* The runtime's own sections are declared like any component's. */
static void test_runtime_sections_are_declared(void **state)
{
	df_error err;
	for (const char *const *name = df_runtime_section_names(); *name; name++) {
		size_t size = 0;
		const df_setting *decl = df_runtime_section(*name, &size);
		assert_non_null(decl);
		assert_int_equal(df_settings_check(decl, size, &err), DF_OK);
	}
	size_t size = 0;
	const df_setting *top = df_runtime_section("", &size);
	assert_true(size > 0);
	assert_int_equal(df_settings_check(top, size, &err), DF_OK);
	df_train_settings train;
	assert_int_equal(df_settings_defaults(df_runtime_section("train", NULL), &train, &err), DF_OK);
	assert_int_equal(train.batch, 64);
	assert_true(train.ema > 0.99);
	df_settings_release(df_runtime_section("train", NULL), &train);
	assert_null(df_runtime_section("dataset", NULL));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_declaration_is_valid),
		cmocka_unit_test(test_bad_declarations_are_refused),
		cmocka_unit_test(test_defaults_are_filled),
		cmocka_unit_test(test_set_parses_each_type),
		cmocka_unit_test(test_set_rejects_bad_values),
		cmocka_unit_test(test_format_round_trips),
		cmocka_unit_test(test_suggestions),
		cmocka_unit_test(test_names_and_choices),
		cmocka_unit_test(test_runtime_sections_are_declared),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
