/* Pipeline files: validation against declared settings with file:line
 * errors, defaults, -o overrides, @include, plugin_path, the resolved file
 * and run folders. Pipelines are written by each test into a temporary
 * folder, so the line numbers the test expects are in front of it. */
#include "config.h"
#include <sys/stat.h>
#include "testutil.h"
#include "diffuse/diffuse.h"
#include "plugins/fixture.h"

typedef struct fixture_state {
	char *dir;
	df_registry *reg;
	char *reports[32];
	int n_reports;
} fixture_state;


static int setup(void **state)
{
	fixture_state *f = calloc(1, sizeof *f);
	f->dir = make_temp_dir();
	df_error err;
	assert_int_equal(df_registry_create(&f->reg, &err), DF_OK);
	char *good = fixture("good");
	assert_int_equal(df_registry_load_file(f->reg, good, &err), DF_OK);
	free(good);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	fixture_state *f = *state;
	for (int i = 0; i < f->n_reports; i++)
		free(f->reports[i]);
	df_registry_destroy(f->reg);
	remove_tree(f->dir);
	free(f->dir);
	free(f);
	return 0;
}

static void collect(void *ctx, const char *line)
{
	fixture_state *f = ctx;
	if (f->n_reports < 32)
		f->reports[f->n_reports++] = strdup(line);
}

/* Writes text as dir/name and returns its path. */
static char *pipeline_file(fixture_state *f, const char *name, const char *text)
{
	char *path = path_join(f->dir, name);
	write_text(path, text);
	return path;
}

static int load(fixture_state *f, const char *path, const char *const *overrides, size_t n, df_pipeline **p,
                df_error *err)
{
	df_pipeline_options options = {sizeof options, overrides, n, collect, f};
	return df_pipeline_load(f->reg, path, &options, p, err);
}

/* Asserts that "path:line: message" was reported (path NULL: as is). */
static void expect_report(fixture_state *f, const char *path, int line, const char *message)
{
	char want[8192];
	if (path)
		snprintf(want, sizeof want, "%s:%d: %s", path, line, message);
	else
		snprintf(want, sizeof want, "%s", message);
	for (int i = 0; i < f->n_reports; i++)
		if (strcmp(f->reports[i], want) == 0)
			return;
	for (int i = 0; i < f->n_reports; i++)
		print_message("reported: %s\n", f->reports[i]);
	fail_msg("not reported: %s", want);
}

static const char valid_text[] =
	"name = \"demo\";\n"
	"seed = 7;\n"
	"sampler = { plugin = \"test-sampler\"; steps = 20; scale = 2; };\n"
	"dataset = { plugin = \"test-data\"; path = \"images\"; };\n"
	"train = { batch = 8; };\n";

static void test_valid_pipeline_is_filled(void **state)
{
	fixture_state *f = *state;
	char *path = pipeline_file(f, "valid.cfg", valid_text);
	df_pipeline *p;
	df_error err;
	assert_int_equal(load(f, path, NULL, 0, &p, &err), DF_OK);
	assert_int_equal(f->n_reports, 0);
	assert_string_equal(df_pipeline_top(p)->name, "demo");
	assert_int_equal(df_pipeline_top(p)->seed, 7);
	assert_string_equal(df_pipeline_top(p)->device, "cpu");

	const df_pipeline_section *sampler = df_pipeline_get(p, "sampler");
	assert_non_null(sampler);
	assert_int_equal(sampler->kind, DF_KIND_SAMPLER);
	assert_string_equal(sampler->component->component->name, "test-sampler");
	assert_int_equal(sampler->source.line, 3);
	const sampler_settings *s = sampler->values;
	assert_int_equal(s->steps, 20);
	assert_true(s->scale == 2.0); /* an int in the file, a float in the struct */
	assert_string_equal(s->method, "euler");
	assert_int_equal(s->guidance, 1);
	assert_int_equal(s->interval.n, 2);
	assert_string_equal(s->label, "hello");

	const data_settings *d = df_pipeline_get(p, "dataset")->values;
	assert_string_equal(d->path, "images");
	assert_int_equal(d->size, 28);

	const df_train_settings *train = df_pipeline_get(p, "train")->values;
	assert_int_equal(train->batch, 8);
	assert_true(train->lr == 1e-4);
	assert_true(df_pipeline_has_stage(p, "train"));
	assert_false(df_pipeline_has_stage(p, "sample"));
	assert_false(df_pipeline_has_stage(p, "sampler"));
	assert_null(df_pipeline_get(p, "sample"));
	/* Sections come in the canonical order, whatever the file's. */
	assert_string_equal(df_pipeline_section_at(p, 0)->name, "dataset");
	assert_int_equal(df_pipeline_section_count(p), 3);
	df_pipeline_destroy(p);
	free(path);
}

static void test_every_error_has_file_and_line(void **state)
{
	fixture_state *f = *state;
	char *path = pipeline_file(f, "bad.cfg",
	                           "name = \"demo\";\n"
	                           "sampler = { plugin = \"test-sampler\"; stpes = 20; };\n"
	                           "dataset = { plugin = \"test-data\"; path = 3; };\n"
	                           "train = { lr = 20.0; batch = 0; };\n"
	                           "sample = { weights = \"emma\"; };\n"
	                           "seeed = 1;\n"
	                           "sampeler = { plugin = \"x\"; };\n"
	                           "train2 = 1;\n");
	df_pipeline *p = (df_pipeline *)1;
	df_error err;
	assert_int_equal(load(f, path, NULL, 0, &p, &err), DF_EINVAL);
	assert_null(p);
	expect_report(f, path, 2, "sampler.stpes: unknown setting of sampler \"test-sampler\"; did you mean \"steps\"?");
	expect_report(f, path, 3, "dataset.path: expected a string, got an int");
	expect_report(f, path, 4, "train.lr: 20 is out of range [0, 10]");
	expect_report(f, path, 4, "train.batch: 0 is out of range [1, 1048576]");
	expect_report(f, path, 5, "sample.weights: \"emma\" is not one of \"ema\", \"raw\"; did you mean \"ema\"?");
	expect_report(f, path, 6, "seeed: unknown setting; did you mean \"seed\"?");
	expect_report(f, path, 7, "sampeler: unknown section; did you mean \"sampler\"?");
	expect_report(f, path, 8, "train2: unknown setting; did you mean \"train\"?");
	assert_int_equal(f->n_reports, 8);
	/* err holds the first. */
	assert_string_equal(err.msg, f->reports[0]);
	free(path);
}

static void test_required_setting_and_plugin(void **state)
{
	fixture_state *f = *state;
	char *path = pipeline_file(f, "required.cfg",
	                           "dataset = { plugin = \"test-data\"; };\n"
	                           "sampler = { steps = 3; };\n"
	                           "encoder = 4;\n");
	df_pipeline *p;
	df_error err;
	assert_int_equal(load(f, path, NULL, 0, &p, &err), DF_EINVAL);
	expect_report(f, path, 1, "dataset.path: required setting missing (where the data is (required), no default)");
	expect_report(f, path, 2, "sampler: no plugin = \"NAME\"; (`diffuse plugins` lists the samplers)");
	expect_report(f, path, 3, "encoder must be a group: encoder = { ... };");
	free(path);
}

static void test_missing_or_mismatched_component(void **state)
{
	fixture_state *f = *state;
	char *path = pipeline_file(f, "missing.cfg",
	                           "sampler = { plugin = \"test-smapler\"; };\n"
	                           "objective = { plugin = \"test-sampler\"; };\n"
	                           "metric = { plugin = \"fid\"; };\n");
	df_pipeline *p;
	df_error err;
	assert_int_equal(load(f, path, NULL, 0, &p, &err), DF_EINVAL);
	expect_report(f, path, 1, "sampler.plugin: no sampler named \"test-smapler\"; did you mean \"test-sampler\"?");
	expect_report(f, path, 2, "objective.plugin: \"test-sampler\" is a sampler, not an objective");
	expect_report(f, path, 3, "metric.plugin: no metric named \"fid\" (`diffuse plugins` lists them)");
	free(path);
}

/* A component whose file was refused fails with the refusal's reason. */
static void test_refused_component_says_why(void **state)
{
	fixture_state *f = *state;
	char *plugins = path_join(f->dir, "plugins");
	assert_int_equal(mkdir(plugins, 0755), 0);
	char *from = fixture("abi_major");
	char command[8192];
	snprintf(command, sizeof command, "cp '%s' '%s/abi-major-sampler.so'", from, plugins);
	assert_int_equal(system(command), 0);
	char *path = pipeline_file(f, "refused.cfg",
	                           "plugin_path = \"plugins\";\n"
	                           "sampler = { plugin = \"abi-major-sampler\"; };\n");
	df_pipeline *p;
	df_error err;
	assert_int_equal(load(f, path, NULL, 0, &p, &err), DF_EINVAL);
	assert_int_equal(f->n_reports, 1);
	assert_contains(f->reports[0], "refused.cfg:2: sampler.plugin: no sampler named \"abi-major-sampler\": ");
	assert_contains(f->reports[0], "abi-major-sampler.so: plugin ABI 2.0, host ABI 1.0");
	free(path);
	free(from);
	free(plugins);
}

static void test_plugin_path_is_relative_to_the_file(void **state)
{
	fixture_state *f = *state;
	df_registry_destroy(f->reg);
	df_error err;
	assert_int_equal(df_registry_create(&f->reg, &err), DF_OK); /* empty */
	char *sub = path_join(f->dir, "sub");
	assert_int_equal(mkdir(sub, 0755), 0);
	char *path = pipeline_file(f, "sub/p.cfg",
	                           "plugin_path = \"../extra:nothing-here\";\n"
	                           "sampler = { plugin = \"test-sampler\"; };\n");
	char *extra = path_join(f->dir, "extra");
	assert_int_equal(mkdir(extra, 0755), 0);
	char *good = fixture("good");
	char command[8192];
	snprintf(command, sizeof command, "cp '%s' '%s/'", good, extra);
	assert_int_equal(system(command), 0);
	df_pipeline *p;
	assert_int_equal(load(f, path, NULL, 0, &p, &err), DF_EINVAL);
	char want[8192];
	snprintf(want, sizeof want, "plugin_path: %s/sub/nothing-here: No such file or directory", f->dir);
	expect_report(f, path, 1, want);
	assert_int_equal(f->n_reports, 1);

	const char *fix[] = {"plugin_path=../extra"};
	assert_int_equal(load(f, path, fix, 1, &p, &err), DF_OK);
	assert_non_null(df_pipeline_get(p, "sampler"));
	/* Resolved to an absolute directory, so the written file works anywhere. */
	assert_int_equal(df_pipeline_top(p)->plugin_path[0], '/');
	assert_contains(df_pipeline_top(p)->plugin_path, "/extra");
	/* The name defaults to the file's. */
	assert_string_equal(df_pipeline_top(p)->name, "p");
	df_pipeline_destroy(p);
	free(good);
	free(extra);
	free(path);
	free(sub);
}

static void test_overrides_are_typed_and_located(void **state)
{
	fixture_state *f = *state;
	char *path = pipeline_file(f, "o.cfg", "name = \"o\";\ndataset = { plugin = \"test-data\"; path = \"a\"; };\n");
	const char *overrides[] = {
		"sampler.plugin=test-sampler", /* a section the file does not have */
		"sampler.steps=99",
		"sampler.scale=3",             /* int text, float setting */
		"sampler.interval=[0.25, 0.75]",
		"sampler.guidance=false",
		"sampler.method=heun",
		"dataset.path=b c",
		"train.lr=0.5",
		"seed=11",
		"name=renamed",
	};
	df_pipeline *p;
	df_error err;
	assert_int_equal(load(f, path, overrides, sizeof overrides / sizeof overrides[0], &p, &err), DF_OK);
	assert_int_equal(f->n_reports, 0);
	const df_pipeline_section *sampler = df_pipeline_get(p, "sampler");
	assert_non_null(sampler);
	assert_string_equal(sampler->source.file, "<command line>");
	const sampler_settings *s = sampler->values;
	assert_int_equal(s->steps, 99);
	assert_true(s->scale == 3.0);
	assert_int_equal(s->interval.n, 2);
	assert_true(s->interval.v[1] == 0.75);
	assert_int_equal(s->guidance, 0);
	assert_string_equal(s->method, "heun");
	assert_string_equal(((const data_settings *)df_pipeline_get(p, "dataset")->values)->path, "b c");
	assert_true(((const df_train_settings *)df_pipeline_get(p, "train")->values)->lr == 0.5);
	assert_int_equal(df_pipeline_top(p)->seed, 11);
	assert_string_equal(df_pipeline_top(p)->name, "renamed");
	df_pipeline_destroy(p);
	free(path);
}

static void test_bad_overrides_are_reported(void **state)
{
	fixture_state *f = *state;
	char *path = pipeline_file(f, "o.cfg", "sampler = { plugin = \"test-sampler\"; steps = 5; };\n");
	const char *overrides[] = {
		"sampler.steps=abc", "sampler.scale=50", "sampler.stepz=1", "samplr.steps=1",
		"novalue",           "metric.x=1",       "train.plugin=x",  "sample.count=0",
	};
	df_pipeline *p;
	df_error err;
	assert_int_equal(load(f, path, overrides, sizeof overrides / sizeof overrides[0], &p, &err), DF_EINVAL);
	expect_report(f, NULL, 0, "<command line>: -o sampler.steps=abc: \"abc\" is not an integer");
	expect_report(f, NULL, 0, "<command line>: sampler.scale: 50 is out of range [0, 20]");
	expect_report(f, NULL, 0,
	              "<command line>: -o sampler.stepz=1: unknown setting \"stepz\" of sampler; did you mean \"steps\"?");
	expect_report(f, NULL, 0, "<command line>: -o samplr.steps=1: unknown section \"samplr\"; did you mean \"sampler\"?");
	expect_report(f, NULL, 0, "<command line>: -o novalue: expected section.key=value or key=value");
	expect_report(f, NULL, 0,
	              "<command line>: -o metric.x=1: the pipeline has no metric section: set -o metric.plugin=NAME first");
	expect_report(f, NULL, 0, "<command line>: -o train.plugin=x: section train has no plugin");
	expect_report(f, NULL, 0, "<command line>: sample.count: 0 is out of range [1, 16777216]");
	assert_int_equal(f->n_reports, 8);
	free(path);
}

static void test_include_reports_the_included_file(void **state)
{
	fixture_state *f = *state;
	char *base = pipeline_file(f, "base.cfg", "seed = 5;\ntrain = { batch = 16;\n  lr = 99.0; };\n");
	char *path = pipeline_file(f, "top.cfg",
	                           "@include \"base.cfg\"\n"
	                           "sampler = { plugin = \"test-sampler\"; };\n");
	df_pipeline *p;
	df_error err;
	assert_int_equal(load(f, path, NULL, 0, &p, &err), DF_EINVAL);
	expect_report(f, base, 3, "train.lr: 99 is out of range [0, 10]");
	assert_int_equal(f->n_reports, 1);

	const char *fix[] = {"train.lr=0.001"};
	assert_int_equal(load(f, path, fix, 1, &p, &err), DF_OK);
	assert_int_equal(df_pipeline_top(p)->seed, 5);
	const df_train_settings *train = df_pipeline_get(p, "train")->values;
	assert_int_equal(train->batch, 16);
	assert_true(train->lr == 0.001);
	df_pipeline_destroy(p);
	free(base);
	free(path);
}

static void test_syntax_and_io_errors(void **state)
{
	fixture_state *f = *state;
	char *path = pipeline_file(f, "syntax.cfg", "name = \"x\";\nseed = ;\n");
	df_pipeline *p;
	df_error err;
	assert_int_equal(load(f, path, NULL, 0, &p, &err), DF_EINVAL);
	char prefix[8192];
	snprintf(prefix, sizeof prefix, "%s:2: ", path);
	assert_int_equal(strncmp(err.msg, prefix, strlen(prefix)), 0);
	assert_int_equal(f->n_reports, 1);

	char *dup = pipeline_file(f, "dup.cfg", "seed = 1;\nseed = 2;\n");
	assert_int_equal(load(f, dup, NULL, 0, &p, &err), DF_EINVAL);
	assert_contains(err.msg, "change it with -o");

	char *none = path_join(f->dir, "none.cfg");
	assert_int_equal(load(f, none, NULL, 0, &p, &err), DF_EIO);
	assert_contains(err.msg, "none.cfg: cannot read: No such file or directory");
	free(none);
	free(dup);
	free(path);
}

static void format_all(const df_pipeline *p, char *out, size_t size)
{
	size_t used = 0;
	for (size_t i = 0; i < df_pipeline_section_count(p); i++) {
		const df_pipeline_section *sec = df_pipeline_section_at(p, i);
		for (const df_setting *s = sec->settings; s && s->name; s++) {
			char value[256];
			df_settings_format(s, sec->values, value, sizeof value);
			used += (size_t)snprintf(out + used, size - used, "%s.%s=%s\n", sec->name, s->name, value);
		}
	}
}

/* The resolved file loads again to the same values. */
static void test_resolved_pipeline_round_trips(void **state)
{
	fixture_state *f = *state;
	char *path = pipeline_file(f, "valid.cfg", valid_text);
	const char *overrides[] = {"sampler.interval=[0.5, 0.625]", "sampler.label=a \"quoted\" \\ text"};
	df_pipeline *p, *again;
	df_error err;
	assert_int_equal(load(f, path, overrides, 2, &p, &err), DF_OK);
	char *runs = path_join(f->dir, "runs/nested");
	char *run_dir;
	assert_int_equal(df_run_prepare(p, runs, &run_dir, &err), DF_OK);
	char *want_dir = path_join(runs, "demo");
	assert_string_equal(run_dir, want_dir);
	char *written = path_join(run_dir, "pipeline.cfg");
	assert_int_equal(load(f, written, NULL, 0, &again, &err), DF_OK);
	static char a[16384], b[16384];
	format_all(p, a, sizeof a);
	format_all(again, b, sizeof b);
	assert_string_equal(a, b);
	assert_contains(a, "sampler.label=\"a \\\"quoted\\\" \\\\ text\"");
	assert_contains(a, "train.ema=0.9999");
	assert_int_equal(df_pipeline_top(again)->seed, 7);
	/* Writing again replaces the file whole, leaving no temporary behind. */
	assert_int_equal(df_pipeline_write_file(p, written, &err), DF_OK);
	char command[8192];
	snprintf(command, sizeof command, "test $(ls '%s' | wc -l) -eq 1", run_dir);
	assert_int_equal(system(command), 0);
	df_pipeline_destroy(again);
	df_pipeline_destroy(p);
	free(written);
	free(want_dir);
	free(run_dir);
	free(runs);
	free(path);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_valid_pipeline_is_filled, setup, teardown),
		cmocka_unit_test_setup_teardown(test_every_error_has_file_and_line, setup, teardown),
		cmocka_unit_test_setup_teardown(test_required_setting_and_plugin, setup, teardown),
		cmocka_unit_test_setup_teardown(test_missing_or_mismatched_component, setup, teardown),
		cmocka_unit_test_setup_teardown(test_refused_component_says_why, setup, teardown),
		cmocka_unit_test_setup_teardown(test_plugin_path_is_relative_to_the_file, setup, teardown),
		cmocka_unit_test_setup_teardown(test_overrides_are_typed_and_located, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_overrides_are_reported, setup, teardown),
		cmocka_unit_test_setup_teardown(test_include_reports_the_included_file, setup, teardown),
		cmocka_unit_test_setup_teardown(test_syntax_and_io_errors, setup, teardown),
		cmocka_unit_test_setup_teardown(test_resolved_pipeline_round_trips, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
