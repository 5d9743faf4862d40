/* diffuse: the command-line host. It parses arguments, prints, and maps
 * errors to exit codes; everything else is libdiffuse's runtime.
 *
 * Exit status: 0 success, 1 a failure while running, 2 a usage or
 * pipeline error (nothing was run). */
#include "config.h"
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "diffuse/diffuse.h"

#include "host.h"

typedef struct command {
	const char *name;
	const char *usage;
	const char *summary;
	int (*run)(int argc, char **argv);
} command;

static const command *find_command(const char *name);
static void print_usage(FILE *out);

/* ------------------------------------------------------------------ */
/* Loading plugins, printing what was refused. */

typedef struct lines {
	char **items;
	size_t n, cap;
} lines;

static void lines_add(void *ctx, const char *line)
{
	lines *l = ctx;
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 16;
		char **items = realloc(l->items, cap * sizeof *items);
		if (!items)
			return;
		l->items = items;
		l->cap = cap;
	}
	char *copy = strdup(line);
	if (copy)
		l->items[l->n++] = copy;
}

static void lines_print_free(lines *l, FILE *out)
{
	for (size_t i = 0; i < l->n; i++) {
		fprintf(out, "%s\n", l->items[i]);
		free(l->items[i]);
	}
	free(l->items);
	memset(l, 0, sizeof *l);
}

static size_t refusals_printed;

static void print_refusals(const df_registry *reg)
{
	for (; refusals_printed < df_registry_refusal_count(reg); refusals_printed++)
		fprintf(stderr, "%s\n", df_registry_refusal(reg, refusals_printed));
}

/* A diffuse run from its build tree (not installed) uses that tree's
 * plugins in place of the install's, so `./host/diffuse plugins` after
 * `make` shows what was just built, not an older installed copy. */
static void use_build_tree_plugins(void)
{
#if defined(DF_BUILD_DIR) && defined(DF_BUILD_PLUGIN_PATH)
	if (getenv("DIFFUSE_PLUGIN_SYSTEM_PATH"))
		return;
	char exe[PATH_MAX];
	if (!realpath("/proc/self/exe", exe))
		return;
	char *slash = strrchr(exe, '/');
	if (!slash)
		return;
	*slash = '\0';
	char build_host[PATH_MAX];
	snprintf(build_host, sizeof build_host, "%s/host/.libs", DF_BUILD_DIR);
	char real_build_host[PATH_MAX];
	if (realpath(build_host, real_build_host) && strcmp(exe, real_build_host) == 0) {
		setenv("DIFFUSE_PLUGIN_SYSTEM_PATH", DF_BUILD_PLUGIN_PATH, 1);
#ifdef DF_BUILD_DATA_DIR
		/* and the source tree's data (the metrics' feature weights) */
		setenv("DIFFUSE_DATA_DIR", DF_BUILD_DATA_DIR, 0);
#endif
	}
#endif
}

static df_registry *open_registry(void)
{
	df_registry *reg;
	df_error err;
	if (df_registry_create(&reg, &err) != DF_OK || df_registry_load_default(reg, &err) != DF_OK) {
		fprintf(stderr, "diffuse: %s\n", err.msg);
		return NULL;
	}
	return reg;
}

/* ------------------------------------------------------------------ */
/* Arguments shared by check and run. */

/* Arguments shared by check and run (pipeline_args: host.h). */

static int wants_help(int argc, char **argv)
{
	for (int i = 1; i < argc; i++)
		if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
			return 1;
	return 0;
}

static int command_help(const char *name)
{
	const command *c = find_command(name);
	printf("usage: diffuse %s %s\n\n%s\n", c->name, c->usage, c->summary);
	if (strcmp(name, "check") == 0 || strcmp(name, "run") == 0)
		printf("\n  -o, --override SECTION.KEY=VALUE   change one setting (repeatable); KEY=VALUE\n"
		       "                                     for the top level (name, seed, ...)\n");
	if (strcmp(name, "run") == 0)
		printf("  --runs-dir DIR                     where run folders go (default: runs)\n");
	return EXIT_OK;
}

int parse_pipeline_args(int argc, char **argv, int with_runs_dir, pipeline_args *a)
{
	memset(a, 0, sizeof *a);
	a->runs_dir = "runs";
	a->overrides = calloc((size_t)argc, sizeof *a->overrides);
	if (!a->overrides)
		return EXIT_RUNTIME;
	for (int i = 1; i < argc; i++) {
		const char *arg = argv[i];
		if (strcmp(arg, "-o") == 0 || strcmp(arg, "--override") == 0) {
			if (++i >= argc) {
				fprintf(stderr, "diffuse %s: %s needs SECTION.KEY=VALUE\n", argv[0], arg);
				return EXIT_USAGE;
			}
			a->overrides[a->n_overrides++] = argv[i];
		} else if (strncmp(arg, "-o", 2) == 0 && arg[2]) {
			a->overrides[a->n_overrides++] = arg + 2;
		} else if (strncmp(arg, "--override=", 11) == 0) {
			a->overrides[a->n_overrides++] = arg + 11;
		} else if (with_runs_dir && strcmp(arg, "--runs-dir") == 0) {
			if (++i >= argc) {
				fprintf(stderr, "diffuse %s: --runs-dir needs a directory\n", argv[0]);
				return EXIT_USAGE;
			}
			a->runs_dir = argv[i];
		} else if (with_runs_dir && strncmp(arg, "--runs-dir=", 11) == 0) {
			a->runs_dir = arg + 11;
		} else if (arg[0] == '-' && arg[1]) {
			fprintf(stderr, "diffuse %s: unknown option %s (see diffuse %s --help)\n", argv[0], arg, argv[0]);
			return EXIT_USAGE;
		} else if (a->file) {
			fprintf(stderr, "diffuse %s: one pipeline file only (got %s and %s)\n", argv[0], a->file, arg);
			return EXIT_USAGE;
		} else {
			a->file = arg;
		}
	}
	if (!a->file) {
		fprintf(stderr, "usage: diffuse %s %s\n", argv[0], find_command(argv[0])->usage);
		return EXIT_USAGE;
	}
	return EXIT_OK;
}

/* Loads plugins and the pipeline; prints refusals then errors. */
int load_pipeline(const pipeline_args *a, df_registry **reg, df_pipeline **p)
{
	*p = NULL;
	*reg = open_registry();
	if (!*reg)
		return EXIT_RUNTIME;
	lines errors = {0};
	df_pipeline_options options = {
		.struct_size = sizeof options,
		.overrides = a->overrides,
		.n_overrides = a->n_overrides,
		.report = lines_add,
		.report_ctx = &errors,
	};
	df_error err;
	int status = host_is_checkpoint(a->file) ? df_pipeline_load_checkpoint(*reg, a->file, &options, p, &err)
	                                         : df_pipeline_load(*reg, a->file, &options, p, &err);
	print_refusals(*reg);
	if (status != DF_OK && errors.n == 0)
		fprintf(stderr, "%s\n", err.msg);
	lines_print_free(&errors, stderr);
	if (status == DF_ENOMEM)
		return EXIT_RUNTIME;
	return status == DF_OK ? EXIT_OK : EXIT_USAGE;
}

/* ------------------------------------------------------------------ */
/* Commands. */

/* Parses check/run arguments, loads the pipeline and hands it to body. */
int with_pipeline(int argc, char **argv, int with_runs_dir,
                         int (*body)(const pipeline_args *a, const df_pipeline *p))
{
	pipeline_args a;
	int code = parse_pipeline_args(argc, argv, with_runs_dir, &a);
	df_registry *reg = NULL;
	df_pipeline *p = NULL;
	if (code == EXIT_OK)
		code = load_pipeline(&a, &reg, &p);
	if (code == EXIT_OK)
		code = body(&a, p);
	df_pipeline_destroy(p);
	df_registry_destroy(reg);
	free(a.overrides);
	return code;
}

static int check_body(const pipeline_args *a, const df_pipeline *p)
{
	df_error err;
	if (df_pipeline_check_sampler(p, &err) != DF_OK) {
		fprintf(stderr, "%s\n", err.msg);
		return EXIT_USAGE;
	}
	printf("%s: ok (run \"%s\"", a->file, df_pipeline_top(p)->name);
	for (size_t i = 0; i < df_pipeline_section_count(p); i++) {
		const df_pipeline_section *sec = df_pipeline_section_at(p, i);
		if (sec->component)
			printf(", %s %s", sec->name, sec->component->component->name);
		else
			printf(", %s", sec->name);
	}
	printf(")\n");
	return EXIT_OK;
}

static int cmd_check(int argc, char **argv) { return with_pipeline(argc, argv, 0, check_body); }

static int compare_components(const void *a, const void *b)
{
	const df_component *x = (*(const df_component_info *const *)a)->component;
	const df_component *y = (*(const df_component_info *const *)b)->component;
	if (x->kind != y->kind)
		return (int)x->kind - (int)y->kind;
	return strcmp(x->name, y->name);
}

static int cmd_plugins(int argc, char **argv)
{
	if (argc > 1) {
		fprintf(stderr, "usage: diffuse plugins\n");
		return EXIT_USAGE;
	}
	df_registry *reg = open_registry();
	if (!reg)
		return EXIT_RUNTIME;
	print_refusals(reg);
	printf("backends: %s\n", df_backends());
	size_t n = df_registry_count(reg);
	const df_component_info **rows = calloc(n + 1, sizeof *rows);
	if (!rows) {
		df_registry_destroy(reg);
		return EXIT_RUNTIME;
	}
	int w_name = 4, w_version = 7, w_file = 4;
	for (size_t i = 0; i < n; i++) {
		rows[i] = df_registry_get(reg, i);
		int len = (int)strlen(rows[i]->component->name);
		w_name = len > w_name ? len : w_name;
		len = (int)strlen(rows[i]->version);
		w_version = len > w_version ? len : w_version;
		len = (int)strlen(rows[i]->file);
		w_file = len > w_file ? len : w_file;
	}
	qsort(rows, n, sizeof *rows, compare_components);
	if (n == 0) {
		printf("no plugins found (searched %s%s%s)\n", df_registry_system_dir(),
		       getenv("DIFFUSE_PLUGIN_PATH") ? " and DIFFUSE_PLUGIN_PATH=" : "",
		       getenv("DIFFUSE_PLUGIN_PATH") ? getenv("DIFFUSE_PLUGIN_PATH") : "");
	} else {
		printf("%-9s  %-*s  %-*s  %-*s  %s\n", "KIND", w_name, "NAME", w_version, "VERSION", w_file, "FILE",
		       "SUMMARY");
		for (size_t i = 0; i < n; i++) {
			const df_component *c = rows[i]->component;
			printf("%-9s  %-*s  %-*s  %-*s  %s\n", df_kind_name(c->kind), w_name, c->name, w_version,
			       rows[i]->version, w_file, rows[i]->file, c->summary);
		}
	}
	free(rows);
	df_registry_destroy(reg);
	return EXIT_OK;
}

/* One line of the settings table: the range column says what is allowed. */
static void describe_allowed(const df_setting *s, char *buf, size_t size)
{
	int has_min = s->min > DF_ANY_MIN, has_max = s->max < DF_ANY_MAX;
	if (s->type == DF_SETTING_BOOL) {
		snprintf(buf, size, "true, false");
	} else if (s->type == DF_SETTING_STRING) {
		size_t used = 0;
		buf[0] = '\0';
		for (int i = 0; s->choices && s->choices[i] && used < size; i++)
			used += (size_t)snprintf(buf + used, size - used, "%s%s", i ? " | " : "", s->choices[i]);
	} else if (has_min && has_max) {
		snprintf(buf, size, "[%.15g, %.15g]", s->min, s->max);
	} else if (has_min) {
		snprintf(buf, size, ">= %.15g", s->min);
	} else if (has_max) {
		snprintf(buf, size, "<= %.15g", s->max);
	} else {
		snprintf(buf, size, "any");
	}
	if (s->type == DF_SETTING_LIST) {
		char items[96];
		snprintf(items, sizeof items, "up to %d of %s", DF_LIST_MAX, buf);
		snprintf(buf, size, "%s", items);
	}
}

static void print_settings(const df_setting *decl)
{
	if (!decl || !decl->name) {
		printf("  (no settings)\n");
		return;
	}
	int w_name = 4, w_default = 7, w_allowed = 15;
	char allowed[256];
	for (const df_setting *s = decl; s->name; s++) {
		int len = (int)strlen(s->name);
		w_name = len > w_name ? len : w_name;
		len = s->default_value ? (int)strlen(s->default_value) + (s->type == DF_SETTING_STRING ? 2 : 0) : 10;
		w_default = len > w_default ? len : w_default;
		describe_allowed(s, allowed, sizeof allowed);
		len = (int)strlen(allowed);
		w_allowed = len > w_allowed ? len : w_allowed;
	}
	printf("  %-*s  %-6s  %-*s  %-*s  %s\n", w_name, "NAME", "TYPE", w_default, "DEFAULT", w_allowed,
	       "RANGE / CHOICES", "HELP");
	for (const df_setting *s = decl; s->name; s++) {
		char def[256];
		if (!s->default_value)
			snprintf(def, sizeof def, "(required)");
		else if (s->type == DF_SETTING_STRING)
			snprintf(def, sizeof def, "\"%s\"", s->default_value);
		else
			snprintf(def, sizeof def, "%s", s->default_value);
		describe_allowed(s, allowed, sizeof allowed);
		printf("  %-*s  %-6s  %-*s  %-*s  %s\n", w_name, s->name, df_setting_type_name(s->type), w_default, def,
		       w_allowed, allowed, s->help ? s->help : "");
	}
}

static int help_component(const df_component_info *info)
{
	const df_component *c = info->component;
	const char *kind = df_kind_name(c->kind);
	printf("%s \"%s\": %s\n", kind, c->name, c->summary);
	printf("  plugin   %s %s (%s)\n", info->plugin, info->version, info->license);
	printf("  file     %s\n", info->file);
	printf("  use      %s = { plugin = \"%s\"; ... };\n\nSettings:\n", kind, c->name);
	print_settings(c->settings);
	return 0;
}

static int help_section(const char *name)
{
	const df_setting *decl = df_runtime_section(strcmp(name, "pipeline") == 0 ? "" : name, NULL);
	if (!decl)
		return -1;
	if (strcmp(name, "pipeline") == 0) {
		printf("pipeline file: the top level\n"
		       "  sections  dataset, encoder, backbone, objective, sampler, metric = { plugin = \"NAME\"; ... };\n"
		       "            train, sample = { ... }; (see diffuse help train / sample)\n"
		       "  include   @include \"base.cfg\" (relative to the pipeline's folder)\n\nSettings:\n");
	} else {
		printf("pipeline section \"%s\": %s = { ... };\n\nSettings:\n", name, name);
	}
	print_settings(decl);
	return 0;
}

static int cmd_help(int argc, char **argv)
{
	if (argc < 2) {
		print_usage(stdout);
		return EXIT_OK;
	}
	if (argc > 2) {
		fprintf(stderr, "usage: diffuse help NAME\n");
		return EXIT_USAGE;
	}
	const char *name = argv[1];
	if (find_command(name)) {
		command_help(name);
		/* train and sample are commands and pipeline sections: show both. */
		if (df_runtime_section(name, NULL)) {
			printf("\n");
			help_section(name);
		}
		return EXIT_OK;
	}
	df_registry *reg = open_registry();
	if (!reg)
		return EXIT_RUNTIME;
	print_refusals(reg);
	int found = 0;
	for (size_t i = 0; i < df_registry_count(reg); i++) {
		const df_component_info *info = df_registry_get(reg, i);
		if (strcmp(info->component->name, name) == 0) {
			if (found++)
				printf("\n");
			help_component(info);
		}
	}
	if (!found) {
		if (help_section(name) == 0) {
			found = 1;
		} else {
			size_t n = df_registry_count(reg);
			const char **names = calloc(n + 4, sizeof *names);
			const char *near = NULL;
			if (names) {
				for (size_t i = 0; i < n; i++)
					names[i] = df_registry_get(reg, i)->component->name;
				names[n] = "pipeline";
				names[n + 1] = "train";
				names[n + 2] = "sample";
				near = df_suggest(name, names);
			}
			if (near)
				fprintf(stderr, "diffuse help: no component or section named \"%s\"; did you mean \"%s\"?\n",
				        name, near);
			else
				fprintf(stderr, "diffuse help: no component or section named \"%s\" (see diffuse plugins)\n",
				        name);
			free(names);
		}
	}
	df_registry_destroy(reg);
	return found ? EXIT_OK : EXIT_USAGE;
}

int cmd_eval(int argc, char **argv); /* cmd_eval.c */

static const command commands[] = {
	{"run", "PIPELINE [-o SECTION.KEY=VALUE]... [--runs-dir DIR] [--json]",
	 "Checks the pipeline, creates RUNS_DIR/<name>/ with the resolved pipeline.cfg\n"
	 "(every default filled in), and runs the stages the file names." JSON_HELP EXIT_HELP,
	 cmd_run},
	{"check", "PIPELINE [-o SECTION.KEY=VALUE]...",
	 "Validates a pipeline without running it: plugins found, every setting known,\n"
	 "well typed and in range. Errors read file:line: message.",
	 cmd_check},
	HOST_STAGE_COMMANDS
	{"eval", "[PIPELINE] --checkpoint F | PIPELINE --weights W [--count N] [--metrics fd,prec-recall,class-acc] [--json] [--no-reference]",
	 "Generates N samples (default 10000) with the pipeline's sampler and guidance, streams\n"
	 "them and as many test images through the metrics, and prints a table with FD's floor\n"
	 "FD(test, train) and ceiling FD(noise, test); appends it to the run's log.jsonl.\n"
	 "--weights evaluates plain weights under the official names (another trainer's)."
	 JSON_HELP "eval adds count, real, made_by, metrics {name: value}, fd_floor and fd_ceiling; the\n"
	 "table goes to stderr.\n"
	 "Exit status: 0 done, 1 failure while running, 2 bad usage or pipeline.",
	 cmd_eval},
	{"plugins", "", "Lists every loaded component: kind, name, version, file, summary.", cmd_plugins},
	{"forward", FORWARD_USAGE,
	 "Runs the pipeline's backbone once in eval mode on x, t and y of IN and writes out;\n"
	 "with --grad-weights, also grad.<name> of sum(out * w) for every trained parameter\n"
	 "(w from G). For parity checks against another implementation.",
	 cmd_forward},
	{"help", "[NAME | COMMAND]",
	 "Prints the settings of a component (type, default, range, help), of a pipeline\n"
	 "section (train, sample, pipeline), or the usage of a command.",
	 cmd_help},
};

static const command *find_command(const char *name)
{
	for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
		if (strcmp(commands[i].name, name) == 0)
			return &commands[i];
	return NULL;
}

static void print_usage(FILE *out)
{
	fprintf(out, "usage: diffuse COMMAND [ARGS]\n\n"
	             "Trains and samples diffusion and flow models from pipeline files.\n\nCommands:\n");
	for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
		fprintf(out, "  %-8s %s\n", commands[i].name, commands[i].usage);
	fprintf(out, "\nOptions:\n  --help, -h     this text (diffuse COMMAND --help for one command)\n"
	             "  --version, -V  the version\n\n"
	             "Plugins are searched in %s, then DIFFUSE_PLUGIN_PATH,\n"
	             "then the pipeline's plugin_path. Exit status: 0 success, 1 failure while running,\n"
	             "2 usage or pipeline error, 3 interrupted (state saved).\n",
	        df_registry_system_dir());
}

static int run_command(int argc, char **argv);

int main(int argc, char **argv)
{
	use_build_tree_plugins();
	/* Under mpirun, join the job (data-parallel training); else one process. */
	df_error dist_err;
	if (df_dist_init(&argc, &argv, &dist_err) != DF_OK) {
		fprintf(stderr, "diffuse: %s\n", dist_err.msg);
		return EXIT_RUNTIME;
	}
	/* Training, sampling and evaluation are split across ranks (rank 0
	 * alone writes); every other command runs on rank 0 alone. */
	static const char *const split[] = {"train", "run", "sample", "eval"};
	int on_every_rank = 0;
	for (size_t i = 0; argc >= 2 && i < sizeof split / sizeof split[0]; i++)
		on_every_rank |= strcmp(argv[1], split[i]) == 0;
	/* Rank 0 speaks for the job on stdout (news, tables, summaries); the
	 * others would only repeat it. Their errors still reach stderr. */
	if (df_dist_rank() != 0 && !freopen("/dev/null", "w", stdout))
		fprintf(stderr, "diffuse: rank %d: cannot send stdout to /dev/null\n", df_dist_rank());
	int status = EXIT_OK;
	if (df_dist_rank() == 0 || on_every_rank)
		status = run_command(argc, argv);
	df_dist_finalize();
	return status;
}

static int run_command(int argc, char **argv)
{
	if (argc < 2) {
		print_usage(stderr);
		return EXIT_USAGE;
	}
	const char *name = argv[1];
	if (strcmp(name, "--version") == 0 || strcmp(name, "-V") == 0) {
		printf("diffuse %s (plugin ABI %d.%d)\n", df_version_string(), DF_ABI_MAJOR, DF_ABI_MINOR);
		printf("backends: %s\n", df_backends());
		return EXIT_OK;
	}
	if (strcmp(name, "--help") == 0 || strcmp(name, "-h") == 0) {
		print_usage(stdout);
		return EXIT_OK;
	}
	const command *c = find_command(name);
	if (!c) {
		const char *names[sizeof commands / sizeof commands[0] + 1] = {0};
		for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
			names[i] = commands[i].name;
		const char *near = df_suggest(name, names);
		fprintf(stderr, "diffuse: unknown command \"%s\"%s%s%s (see diffuse --help)\n", name,
		        near ? "; did you mean \"" : "", near ? near : "", near ? "\"?" : "");
		return EXIT_USAGE;
	}
	if (strcmp(c->name, "help") != 0 && wants_help(argc - 1, argv + 1))
		return command_help(c->name);
	return c->run(argc - 1, argv + 1);
}
