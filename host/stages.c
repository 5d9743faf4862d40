/* The commands that run stages: train, sample, and the stages of
 * `diffuse run`. Progress goes to stderr on a terminal only; news to
 * stdout. */
#include "config.h"
#include <inttypes.h>
#include <libgen.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "host.h"
#include "summary.h"

/* Options of the stage commands, taken out of argv before the shared
 * pipeline arguments are parsed. */
static struct {
	const char *checkpoint, *weights, *noise, *out;
	int64_t count, max_steps;
	int json;               /* --json: news to stderr, a summary on stdout */
	host_summary *summary;  /* while a command with --json runs */
	char error[sizeof(((df_error *)0)->msg)]; /* its failure, for the summary */
} opt;

static volatile int interrupted;
static int progress_shown;

static void on_sigint(int sig)
{
	(void)sig;
	interrupted = 1;
	signal(SIGINT, SIG_DFL); /* a second Ctrl-C ends at once */
}

static void end_progress(void)
{
	if (progress_shown) {
		fputc('\n', stderr);
		progress_shown = 0;
	}
}

static void message(void *ctx, const char *line)
{
	(void)ctx;
	end_progress();
	FILE *out = opt.json ? stderr : stdout;
	fprintf(out, "%s\n", line);
	fflush(out);
}

static void progress(void *ctx, const df_train_report *r)
{
	(void)ctx;
	if (!isatty(fileno(stderr)))
		return;
	long eta = (long)r->eta_s;
	fprintf(stderr, "\rstep %" PRId64 "/%" PRId64 "  loss %.4f  %.2f steps/s  ETA %ldm%02lds ", r->step, r->steps,
	        r->loss, r->steps_per_s, eta / 60, eta % 60);
	fflush(stderr);
	progress_shown = 1;
}

int host_is_checkpoint(const char *path)
{
	size_t n = strlen(path), k = strlen(".safetensors");
	return n > k && strcmp(path + n - k, ".safetensors") == 0;
}

static int exit_code(int status)
{
	switch (status) {
	case DF_OK: return EXIT_OK;
	case DF_EINTR: return EXIT_INTERRUPTED;
	default: return EXIT_RUNTIME;
	}
}

static int report_failure(const char *command, int status, const df_error *err)
{
	end_progress();
	fprintf(stderr, "diffuse %s: %s\n", command, err->msg);
	snprintf(opt.error, sizeof opt.error, "%s", err->msg);
	/* The other ranks wait in a collective for this one: end the job. */
	df_dist_abort(exit_code(status), err->msg);
	return exit_code(status);
}

/* Rank 0 makes the run folder and its pipeline.cfg; the others wait for
 * it and only name the folder. */
static int prepare_run_dir(const pipeline_args *a, const df_pipeline *p, char **dir, df_error *err)
{
	int rc = DF_OK;
	if (df_dist_rank() == 0)
		rc = df_run_prepare(p, a->runs_dir, dir, err);
	if (df_dist_size() == 1)
		return rc;
	/* A failure on rank 0 aborts the job before the barrier. */
	if (rc) {
		fprintf(stderr, "diffuse: %s\n", err->msg);
		df_dist_abort(EXIT_RUNTIME, err->msg);
	}
	if ((rc = df_dist_barrier(err)))
		return rc;
	if (df_dist_rank() != 0) {
		const char *name = df_pipeline_top(p)->name;
		size_t len = strlen(a->runs_dir) + strlen(name) + 2;
		if (!(*dir = malloc(len)))
			return df_error_set(err, DF_ENOMEM, "out of memory");
		snprintf(*dir, len, "%s/%s", a->runs_dir, name);
	}
	return DF_OK;
}

static df_stage_options stage_options(const char *run_dir)
{
	df_stage_options o = {
		.struct_size = sizeof o,
		.run_dir = run_dir,
		.resume = 1,
		.max_steps = opt.max_steps,
		.stop = &interrupted,
		.progress = progress,
		.message = message,
		.ctx = opt.summary,
		.output = opt.summary ? summary_on_output : NULL,
	};
	return o;
}

int host_run_stages(const pipeline_args *a, const df_pipeline *p, int train, int sample)
{
	char *dir = NULL;
	df_error err;
	if (prepare_run_dir(a, p, &dir, &err) != DF_OK) {
		fprintf(stderr, "diffuse: %s\n", err.msg);
		snprintf(opt.error, sizeof opt.error, "%s", err.msg);
		df_dist_abort(EXIT_RUNTIME, err.msg);
		return EXIT_RUNTIME;
	}
	summary_set_run_dir(opt.summary, dir);
	if (df_dist_rank() == 0) {
		char line[4200];
		snprintf(line, sizeof line, "%s: resolved pipeline written to %s/pipeline.cfg", a->file, dir);
		message(NULL, line);
	}
	df_stage_options o = stage_options(dir);
	int status = DF_OK, ran = 0;
	if (train && df_pipeline_has_stage(p, "train")) {
		signal(SIGINT, on_sigint);
		summary_add_stage(opt.summary, "train");
		status = df_train_run(p, &o, &err);
		signal(SIGINT, SIG_DFL);
		/* Training ends with the sample section's grid (or stopped early
		 * on purpose, when the model is not done): nothing to sample. */
		sample = 0;
		ran = 1;
	}
	/* Every rank samples its share; rank 0 writes the grid. */
	if (status == DF_OK && sample && df_pipeline_has_stage(p, "sample")) {
		const df_pipeline_section *sec = df_pipeline_get(p, "sample");
		const df_sample_settings *s = sec->values;
		char out[4096];
		snprintf(out, sizeof out, "%s/%s", dir, *s->grid ? s->grid : "samples.png");
		df_sample_request req = {.struct_size = sizeof req, .out = out};
		summary_add_stage(opt.summary, "sample");
		char source[4200];
		snprintf(source, sizeof source, "%s/checkpoint.safetensors", dir);
		summary_set_source(opt.summary, source, 0);
		status = df_sample_run(p, &req, &o, &err);
		ran = 1;
	}
	free(dir);
	if (!ran && df_dist_rank() == 0) {
		char line[4200];
		snprintf(line, sizeof line, "%s: nothing to run: the pipeline has no train or sample section", a->file);
		message(NULL, line);
	}
	return status ? report_failure(train ? "train" : "run", status, &err) : EXIT_OK;
}

/* ------------------------------------------------------------------ */
/* Taking the stage options out of argv. */

static int take_value(int *argc, char **argv, int i, const char **value)
{
	const char *arg = argv[i];
	const char *eq = strchr(arg, '=');
	int used = 1;
	if (eq) {
		*value = eq + 1;
	} else if (i + 1 < *argc) {
		*value = argv[i + 1];
		used = 2;
	} else {
		fprintf(stderr, "diffuse %s: %s needs a value\n", argv[0], arg);
		return -1;
	}
	memmove(argv + i, argv + i + used, (size_t)(*argc - i - used) * sizeof *argv);
	*argc -= used;
	return 0;
}

static int is_option(const char *arg, const char *name)
{
	size_t n = strlen(name);
	return strncmp(arg, name, n) == 0 && (arg[n] == '\0' || arg[n] == '=');
}

static int parse_count(const char *command, const char *name, const char *text, int64_t *value)
{
	char *end;
	long long v = strtoll(text, &end, 10);
	if (*text == '\0' || *end != '\0' || v < 1) {
		fprintf(stderr, "diffuse %s: %s needs a positive integer (got \"%s\")\n", command, name, text);
		return -1;
	}
	*value = v;
	return 0;
}

/* Removes every known option from argv (and fills opt); -1 on a bad one. */
static int take_options(int *argc, char **argv, const char *const *names)
{
	memset(&opt, 0, sizeof opt);
	for (int i = 1; i < *argc;) {
		const char *text = NULL;
		const char *name = NULL;
		if (strcmp(argv[i], "--json") == 0) {
			opt.json = 1;
			memmove(argv + i, argv + i + 1, (size_t)(*argc - i - 1) * sizeof *argv);
			(*argc)--;
			continue;
		}
		for (int k = 0; names[k]; k++)
			if (is_option(argv[i], names[k]))
				name = names[k];
		if (!name) {
			i++;
			continue;
		}
		if (take_value(argc, argv, i, &text) != 0)
			return -1;
		if (strcmp(name, "--checkpoint") == 0)
			opt.checkpoint = text;
		else if (strcmp(name, "--weights") == 0)
			opt.weights = text;
		else if (strcmp(name, "--noise") == 0)
			opt.noise = text;
		else if (strcmp(name, "--out") == 0)
			opt.out = text;
		else if (strcmp(name, "--count") == 0 && parse_count(argv[0], name, text, &opt.count) != 0)
			return -1;
		else if (strcmp(name, "--max-steps") == 0 && parse_count(argv[0], name, text, &opt.max_steps) != 0)
			return -1;
	}
	return 0;
}

/* ------------------------------------------------------------------ */

/* With --json, a summary of what the command did is printed at its end,
 * whenever it got to run (exit 0, 1 or 3; not after a usage error). */
static void summary_begin(const char *command, const pipeline_args *a, const df_pipeline *p)
{
	/* under mpirun, rank 0 speaks for the job */
	opt.summary = opt.json && df_dist_rank() == 0 ? summary_create(command, a->file) : NULL;
	summary_set_pipeline(opt.summary, p);
	opt.error[0] = '\0';
}

static int summary_end(int code)
{
	summary_finish(opt.summary, code, opt.error[0] ? opt.error : NULL);
	opt.summary = NULL;
	return code;
}

static int run_body(const pipeline_args *a, const df_pipeline *p)
{
	summary_begin("run", a, p);
	return summary_end(host_run_stages(a, p, 1, 1));
}

int cmd_run(int argc, char **argv)
{
	static const char *const names[] = {NULL};
	if (take_options(&argc, argv, names) != 0)
		return EXIT_USAGE;
	return with_pipeline(argc, argv, 1, run_body);
}

static int train_body(const pipeline_args *a, const df_pipeline *p)
{
	if (!df_pipeline_get(p, "train")) {
		fprintf(stderr, "diffuse train: %s has no train section\n", a->file);
		return EXIT_USAGE;
	}
	summary_begin("train", a, p);
	return summary_end(host_run_stages(a, p, 1, 0));
}

int cmd_train(int argc, char **argv)
{
	static const char *const names[] = {"--max-steps", NULL};
	if (take_options(&argc, argv, names) != 0)
		return EXIT_USAGE;
	return with_pipeline(argc, argv, 1, train_body);
}

static int sample_body(const pipeline_args *a, const df_pipeline *p)
{
	const char *checkpoint = opt.checkpoint;
	if (!checkpoint && host_is_checkpoint(a->file) && !opt.weights)
		checkpoint = a->file;
	df_sample_request req = {
		.struct_size = sizeof req,
		.checkpoint = checkpoint,
		.weights = opt.weights,
		.count = opt.count,
		.noise = opt.noise,
		.out = opt.out,
	};
	/* Without --checkpoint or --weights: the run folder's checkpoint. */
	char run_dir[4096], source[4200];
	snprintf(run_dir, sizeof run_dir, "%s/%s", a->runs_dir, df_pipeline_top(p)->name);
	snprintf(source, sizeof source, "%s/checkpoint.safetensors", run_dir);
	summary_begin("sample", a, p);
	/* the run folder: the checkpoint's (eval says the same) */
	char *copy = checkpoint ? strdup(checkpoint) : NULL;
	if (!opt.weights)
		summary_set_run_dir(opt.summary, copy ? dirname(copy) : run_dir);
	free(copy);
	summary_add_stage(opt.summary, "sample");
	summary_set_source(opt.summary, opt.weights ? opt.weights : checkpoint ? checkpoint : source, opt.weights != NULL);
	df_stage_options o = stage_options(run_dir);
	df_error err;
	int status = df_sample_run(p, &req, &o, &err);
	return summary_end(status ? report_failure("sample", status, &err) : EXIT_OK);
}

/* Without PIPELINE, the checkpoint stands in for it. */
static int with_checkpoint_as_pipeline(int argc, char **argv, int (*body)(const pipeline_args *, const df_pipeline *))
{
	int positional = 0;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "-o") == 0 || strcmp(argv[i], "--override") == 0)
			i++;
		else if (argv[i][0] != '-')
			positional = 1;
	}
	if (positional || !opt.checkpoint)
		return with_pipeline(argc, argv, 1, body);
	char **args = calloc((size_t)argc + 2, sizeof *args);
	if (!args)
		return EXIT_RUNTIME;
	memcpy(args, argv, (size_t)argc * sizeof *args);
	args[argc] = (char *)opt.checkpoint;
	int code = with_pipeline(argc + 1, args, 1, body);
	free(args);
	return code;
}

int cmd_sample(int argc, char **argv)
{
	static const char *const names[] = {"--checkpoint", "--weights", "--count", "--noise", "--out", NULL};
	if (take_options(&argc, argv, names) != 0)
		return EXIT_USAGE;
	if (opt.checkpoint && opt.weights) {
		fprintf(stderr, "diffuse sample: give --checkpoint or --weights, not both\n");
		return EXIT_USAGE;
	}
	if (!opt.out) {
		fprintf(stderr, "diffuse sample: --out is required (grid.png, a folder, or OUT.safetensors)\n");
		return EXIT_USAGE;
	}
	return with_checkpoint_as_pipeline(argc, argv, sample_body);
}
