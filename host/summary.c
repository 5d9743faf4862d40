/* The --json summary object (summary.h), built with jansson. */
#include "config.h"
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "host.h"
#include "summary.h"

struct host_summary {
	json_t *root, *stages, *samples;
	const df_pipeline *pipeline;
};

host_summary *summary_create(const char *command, const char *pipeline_file)
{
	host_summary *s = calloc(1, sizeof *s);
	if (!s)
		return NULL;
	s->root = json_object();
	s->stages = json_array();
	s->samples = json_array();
	if (!s->root || !s->stages || !s->samples) {
		json_decref(s->root);
		json_decref(s->stages);
		json_decref(s->samples);
		free(s);
		return NULL;
	}
	json_object_set_new(s->root, "command", json_string(command));
	json_object_set_new(s->root, "pipeline", pipeline_file ? json_string(pipeline_file) : json_null());
	return s;
}

void summary_set_pipeline(host_summary *s, const df_pipeline *p)
{
	if (s)
		s->pipeline = p;
}

void summary_set_run_dir(host_summary *s, const char *run_dir)
{
	if (s)
		json_object_set_new(s->root, "run_dir", json_string(run_dir));
}

void summary_add_stage(host_summary *s, const char *stage)
{
	if (s)
		json_array_append_new(s->stages, json_string(stage));
}

void summary_set_source(host_summary *s, const char *path, int weights)
{
	if (s)
		json_object_set_new(s->root, weights ? "weights" : "checkpoint", json_string(path));
}

/* One setting's value as JSON, by its declared type. */
static json_t *setting_json(const df_setting *d, const void *values)
{
	const char *field = (const char *)values + d->offset;
	switch (d->type) {
	case DF_SETTING_INT: {
		int64_t v;
		memcpy(&v, field, sizeof v);
		return json_integer((json_int_t)v);
	}
	case DF_SETTING_FLOAT: {
		double v;
		memcpy(&v, field, sizeof v);
		return json_real(v);
	}
	case DF_SETTING_BOOL: {
		int v;
		memcpy(&v, field, sizeof v);
		return json_boolean(v);
	}
	case DF_SETTING_STRING: {
		const char *v;
		memcpy(&v, field, sizeof v);
		return json_string(v ? v : "");
	}
	case DF_SETTING_LIST: {
		df_list v;
		memcpy(&v, field, sizeof v);
		json_t *list = json_array();
		for (int i = 0; i < v.n; i++)
			json_array_append_new(list, json_real(v.v[i]));
		return list;
	}
	}
	return json_null();
}

/* {"name": component, and every setting of the sampler section}. */
static json_t *sampler_json(const df_pipeline *p, const char *name)
{
	json_t *obj = json_object();
	json_object_set_new(obj, "name", name ? json_string(name) : json_null());
	const df_pipeline_section *sec = p ? df_pipeline_get(p, "sampler") : NULL;
	for (const df_setting *d = sec ? sec->settings : NULL; d && d->name; d++)
		json_object_set_new(obj, d->name, setting_json(d, sec->values));
	return obj;
}

void summary_on_output(void *ctx, const df_stage_output *out)
{
	host_summary *s = ctx;
	if (!s || out->struct_size < sizeof *out)
		return;
	if (strcmp(out->kind, "checkpoint") == 0) {
		json_object_set_new(s->root, "checkpoint", json_string(out->path));
		json_object_set_new(s->root, "step", json_integer((json_int_t)out->step));
		return;
	}
	json_t *item = json_pack("{s:s, s:I, s:I, s:s, s:o, s:I, s:{s:f, s:[f, f]}, s:I}", "path", out->path,
	                         "count", (json_int_t)out->count, "step", (json_int_t)out->step, "weights",
	                         out->weights == DF_WEIGHTS_EMA ? "ema" : "raw", "sampler",
	                         sampler_json(s->pipeline, out->sampler), "nfe", (json_int_t)out->nfe, "guidance",
	                         "scale", out->cfg_scale, "interval", out->cfg_lo, out->cfg_hi, "seed",
	                         (json_int_t)out->seed);
	if (item)
		json_array_append_new(s->samples, item);
}

void summary_set_eval(host_summary *s, const df_eval_result *r)
{
	if (!s)
		return;
	json_t *metrics = json_object();
	for (int i = 0; i < r->count; i++)
		json_object_set_new(metrics, r->values[i].name, json_real(r->values[i].value));
	json_object_set_new(s->root, "count", json_integer((json_int_t)r->generated));
	json_object_set_new(s->root, "real", json_integer((json_int_t)r->real));
	json_object_set_new(s->root, "made_by", json_string(r->made_by));
	json_object_set_new(s->root, "metrics", metrics);
	if (r->have_reference) {
		json_object_set_new(s->root, "fd_floor", json_real(r->fd_floor));
		json_object_set_new(s->root, "fd_ceiling", json_real(r->fd_ceiling));
	}
}

void summary_finish(host_summary *s, int exit_code, const char *error)
{
	if (!s)
		return;
	const char *status = exit_code == EXIT_OK ? "done" : exit_code == EXIT_INTERRUPTED ? "interrupted" : "failed";
	json_object_set_new(s->root, "status", json_string(status));
	json_object_set_new(s->root, "exit", json_integer(exit_code));
	if (error && exit_code != EXIT_OK)
		json_object_set_new(s->root, "error", json_string(error));
	json_object_set_new(s->root, "stages", s->stages);
	json_object_set_new(s->root, "samples", s->samples);
	fflush(stderr);
	json_dumpf(s->root, stdout, JSON_COMPACT);
	fputc('\n', stdout);
	fflush(stdout);
	json_decref(s->root);
	free(s);
}
