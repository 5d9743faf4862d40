/* diffuse eval: a thin layer over df_eval_run (eval.h) that parses the
 * options, prints the table (or, with --json, one summary object) and maps
 * errors to exit codes: 0 done, 1 failure while running, 2 bad usage or
 * pipeline. */
#include "config.h"
#include <inttypes.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "host.h"
#include "summary.h"

int cmd_eval(int argc, char **argv); /* main.c's command table calls it */

typedef struct eval_options {
	const char *checkpoint, *weights, *metrics;
	int64_t count;
	int json, no_reference;
} eval_options;

static void to_stderr(void *ctx, const char *line)
{
	(void)ctx;
	fprintf(stderr, "%s\n", line);
}

static void to_stdout(void *ctx, const char *line)
{
	(void)ctx;
	printf("%s\n", line);
	fflush(stdout);
}

/* Takes --checkpoint, --count, --metrics, --json, --no-reference out of
 * argv; what is left goes to the pipeline parser. */
static int take_eval_options(int *argc, char **argv, eval_options *o)
{
	int out = 1;
	for (int i = 1; i < *argc; i++) {
		const char *arg = argv[i];
		const char **value = NULL;
		if (strcmp(arg, "--json") == 0) {
			o->json = 1;
			continue;
		}
		if (strcmp(arg, "--no-reference") == 0) {
			o->no_reference = 1;
			continue;
		}
		const char *count = NULL;
		if (strcmp(arg, "--checkpoint") == 0)
			value = &o->checkpoint;
		else if (strcmp(arg, "--weights") == 0)
			value = &o->weights;
		else if (strcmp(arg, "--metrics") == 0)
			value = &o->metrics;
		else if (strcmp(arg, "--count") == 0)
			value = &count;
		if (!value) {
			argv[out++] = argv[i];
			continue;
		}
		if (i + 1 >= *argc) {
			fprintf(stderr, "diffuse eval: %s needs a value\n", arg);
			return EXIT_USAGE;
		}
		*value = argv[++i];
		if (count) {
			char *end;
			long long v = strtoll(count, &end, 10);
			if (*end || v < 1) {
				fprintf(stderr, "diffuse eval: --count needs a positive integer (got \"%s\")\n", count);
				return EXIT_USAGE;
			}
			o->count = v;
		}
	}
	*argc = out;
	return EXIT_OK;
}

/* Every name of the list is a loaded metric (else a usage error). */
static int metrics_known(const df_registry *reg, const char *list)
{
	char *names = strdup(list ? list : DF_EVAL_DEFAULT_METRICS), *save = NULL;
	int known = names != NULL;
	for (char *name = names ? strtok_r(names, ",", &save) : NULL; name; name = strtok_r(NULL, ",", &save))
		if (!df_registry_find(reg, DF_KIND_METRIC, name)) {
			fprintf(stderr, "diffuse eval: no metric named \"%s\" (`diffuse plugins` lists them)\n", name);
			known = 0;
		}
	free(names);
	return known;
}

static void print_table(FILE *out, const df_eval_result *r)
{
	fprintf(out, "%-12s %-15s %12s\n", "metric", "figure", "value");
	for (int i = 0; i < r->count; i++)
		fprintf(out, "%-12s %-15s %12.4f\n", r->values[i].metric, r->values[i].name, r->values[i].value);
	if (r->have_reference) {
		fprintf(out, "%-12s %-15s %12.4f   FD(test, train): the best reachable\n", "fd", "floor", r->fd_floor);
		fprintf(out, "%-12s %-15s %12.4f   FD(noise, test)\n", "fd", "ceiling", r->fd_ceiling);
	}
	fprintf(out, "%" PRId64 " generated against %" PRId64 " test images%s; %s\n", r->generated, r->real,
	        r->reference_cached ? " (their fd statistics cached in the run folder)" : "", r->made_by);
}

int cmd_eval(int argc, char **argv)
{
	eval_options eo = {0};
	int code = take_eval_options(&argc, argv, &eo);
	pipeline_args a;
	int positional = 0;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "-o") == 0 || strcmp(argv[i], "--override") == 0)
			i++;
		else if (argv[i][0] != '-')
			positional = 1;
	}
	if (code == EXIT_OK && eo.checkpoint && !positional) {
		/* no PIPELINE: the checkpoint holds it (argv had room for the
		 * options taken out of it) */
		argv[argc++] = (char *)eo.checkpoint;
	}
	if (code == EXIT_OK)
		code = parse_pipeline_args(argc, argv, 0, &a);
	else
		memset(&a, 0, sizeof a);
	if (code == EXIT_OK && !eo.checkpoint && host_is_checkpoint(a.file))
		eo.checkpoint = a.file;
	if (code == EXIT_OK && eo.checkpoint && eo.weights) {
		fprintf(stderr, "diffuse eval: give --checkpoint or --weights, not both\n");
		code = EXIT_USAGE;
	} else if (code == EXIT_OK && !eo.checkpoint && !eo.weights) {
		fprintf(stderr, "diffuse eval: --checkpoint is required (or PIPELINE and --weights)\n");
		code = EXIT_USAGE;
	}
	df_registry *reg = NULL;
	df_pipeline *p = NULL;
	if (code == EXIT_OK)
		code = load_pipeline(&a, &reg, &p);
	if (code == EXIT_OK && !df_pipeline_get(p, "backbone") && df_pipeline_get(p, "encoder")) {
		/* an autoencoder's own pipeline: the checkpoint is the encoder's weights */
		code = host_eval_autoencoder(&a, p, eo.checkpoint, eo.json);
		df_pipeline_destroy(p);
		df_registry_destroy(reg);
		free(a.overrides);
		return code;
	}
	if (code == EXIT_OK && !metrics_known(reg, eo.metrics))
		code = EXIT_USAGE;
	if (code == EXIT_OK) {
		/* the run folder: where the checkpoint (or the weights) lie */
		const char *source = eo.weights ? eo.weights : eo.checkpoint;
		char *copy = strdup(source);
		const char *run_dir = copy ? dirname(copy) : ".";
		host_summary *summary = eo.json ? summary_create("eval", a.file) : NULL;
		summary_set_pipeline(summary, p);
		summary_set_run_dir(summary, run_dir);
		summary_add_stage(summary, "eval");
		summary_set_source(summary, source, eo.weights != NULL);
		df_stage_options o = {
			.struct_size = sizeof o,
			.run_dir = run_dir,
			.message = eo.json ? to_stderr : to_stdout,
			.ctx = summary,
			.output = summary ? summary_on_output : NULL,
		};
		df_eval_request req = {
			.struct_size = sizeof req,
			.checkpoint = eo.checkpoint,
			.weights = eo.weights,
			.count = eo.count,
			.metrics = eo.metrics,
			.no_reference = eo.no_reference,
		};
		df_eval_result r;
		df_error err;
		int status = df_eval_run(reg, p, &req, &o, &r, &err);
		if (status) {
			fprintf(stderr, "diffuse eval: %s\n", err.msg);
			code = EXIT_RUNTIME;
		} else {
			print_table(eo.json ? stderr : stdout, &r);
			summary_set_eval(summary, &r);
		}
		summary_finish(summary, code, status ? err.msg : NULL);
		free(copy);
	}
	df_pipeline_destroy(p);
	df_registry_destroy(reg);
	free(a.overrides);
	return code;
}
