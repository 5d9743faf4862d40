/* diffuse forward: one forward pass of a pipeline's backbone, in eval mode,
 * from safetensors inputs to a safetensors output; with --grad-weights also
 * the gradient of sum(out * w) for every trained parameter. This is how the
 * C network is checked against a PyTorch implementation. */
#include "config.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "diffuse/diffuse.h"
#include "host.h"

typedef struct forward_args {
	pipeline_args pipeline;
	const char *weights, *inputs, *out, *grad_weights;
	int num_classes, out_channels; /* -1: from the pipeline */
} forward_args;

/* The value of an option written "--name VALUE" or "--name=VALUE". */
static int option_value(int argc, char **argv, int *i, const char *name, const char **value)
{
	size_t len = strlen(name);
	if (strncmp(argv[*i], name, len) != 0)
		return 0;
	if (argv[*i][len] == '=') {
		*value = argv[*i] + len + 1;
		return 1;
	}
	if (argv[*i][len] != '\0')
		return 0;
	*value = *i + 1 < argc ? argv[++*i] : NULL;
	return 1;
}

static int parse_count(const char *option, const char *text, int *value)
{
	char *end = NULL;
	long v = text ? strtol(text, &end, 10) : -1;
	if (!text || *end || v < 0 || v > 1 << 24) {
		fprintf(stderr, "diffuse forward: %s needs a count (0 .. %d)\n", option, 1 << 24);
		return EXIT_USAGE;
	}
	*value = (int)v;
	return EXIT_OK;
}

static int parse_forward_args(int argc, char **argv, forward_args *a)
{
	memset(a, 0, sizeof *a);
	a->num_classes = a->out_channels = -1;
	a->pipeline.overrides = calloc((size_t)argc, sizeof *a->pipeline.overrides);
	if (!a->pipeline.overrides)
		return EXIT_RUNTIME;
	for (int i = 1; i < argc; i++) {
		const char *v = NULL;
		const char **paths[] = {&a->weights, &a->inputs, &a->out, &a->grad_weights};
		static const char *const path_options[] = {"--weights", "--inputs", "--out", "--grad-weights"};
		int matched = 0;
		for (int k = 0; k < 4 && !matched; k++)
			if (option_value(argc, argv, &i, path_options[k], &v)) {
				if (!v) {
					fprintf(stderr, "diffuse forward: %s needs a file\n", path_options[k]);
					return EXIT_USAGE;
				}
				*paths[k] = v;
				matched = 1;
			}
		if (matched)
			continue;
		if (option_value(argc, argv, &i, "--num-classes", &v)) {
			if (parse_count("--num-classes", v, &a->num_classes) != EXIT_OK)
				return EXIT_USAGE;
		} else if (option_value(argc, argv, &i, "--out-channels", &v)) {
			if (parse_count("--out-channels", v, &a->out_channels) != EXIT_OK)
				return EXIT_USAGE;
		} else if (option_value(argc, argv, &i, "-o", &v) || option_value(argc, argv, &i, "--override", &v)) {
			if (!v) {
				fprintf(stderr, "diffuse forward: -o needs SECTION.KEY=VALUE\n");
				return EXIT_USAGE;
			}
			a->pipeline.overrides[a->pipeline.n_overrides++] = v;
		} else if (argv[i][0] == '-' && argv[i][1]) {
			fprintf(stderr, "diffuse forward: unknown option %s (see diffuse forward --help)\n", argv[i]);
			return EXIT_USAGE;
		} else if (a->pipeline.file) {
			fprintf(stderr, "diffuse forward: one pipeline file only (got %s and %s)\n", a->pipeline.file,
			        argv[i]);
			return EXIT_USAGE;
		} else {
			a->pipeline.file = argv[i];
		}
	}
	if (!a->pipeline.file || !a->weights || !a->inputs || !a->out) {
		fprintf(stderr, "usage: diffuse forward %s\n", FORWARD_USAGE);
		return EXIT_USAGE;
	}
	return EXIT_OK;
}

/* ------------------------------------------------------------------ */
/* Host copies of the inputs. */

typedef struct forward_inputs {
	float *x, *t, *w;
	int32_t *y;          /* NULL when the file has no labels */
	int64_t x_shape[4];
	int64_t n;
} forward_inputs;

static void inputs_free(forward_inputs *in)
{
	free(in->x);
	free(in->t);
	free(in->w);
	free(in->y);
}

/* A tensor of the file as floats; *count its elements. */
static float *read_floats(const df_safetensors *st, const char *path, const char *name, size_t *count)
{
	df_error err;
	const df_safetensors_tensor *t = df_safetensors_find(st, name);
	if (!t) {
		fprintf(stderr, "diffuse forward: %s: no tensor \"%s\"\n", path, name);
		return NULL;
	}
	float *values = malloc((t->nelem ? t->nelem : 1) * sizeof *values);
	if (!values || df_safetensors_read_f32(st, t, values, t->nelem, &err) != 0) {
		fprintf(stderr, "diffuse forward: %s\n", values ? err.msg : "out of memory");
		free(values);
		return NULL;
	}
	*count = t->nelem;
	return values;
}

static int read_inputs(const char *path, forward_inputs *in)
{
	df_safetensors *st = NULL;
	df_error err;
	size_t count = 0;
	if (df_safetensors_open(&st, path, &err) != 0) {
		fprintf(stderr, "diffuse forward: %s\n", err.msg);
		return EXIT_RUNTIME;
	}
	const df_safetensors_tensor *x = df_safetensors_find(st, "x");
	int code = EXIT_RUNTIME;
	if (x && x->ndim != 4)
		fprintf(stderr, "diffuse forward: %s: x must be (N, C, H, W)\n", path);
	else if ((in->x = read_floats(st, path, "x", &count)) && (in->t = read_floats(st, path, "t", &count))) {
		memcpy(in->x_shape, x->shape, sizeof in->x_shape);
		in->n = x->shape[0];
		const df_safetensors_tensor *y = df_safetensors_find(st, "y");
		float *y_float = NULL;
		code = EXIT_OK;
		if ((int64_t)count != in->n) {
			fprintf(stderr, "diffuse forward: %s: t has %zu values for %lld samples\n", path, count,
			        (long long)in->n);
			code = EXIT_RUNTIME;
		} else if (y && y->nelem != (size_t)in->n) {
			fprintf(stderr, "diffuse forward: %s: y has %zu values for %lld samples\n", path, y->nelem,
			        (long long)in->n);
			code = EXIT_RUNTIME;
		} else if (y && !(y_float = read_floats(st, path, "y", &count))) {
			code = EXIT_RUNTIME;
		} else if (y) {
			/* I64 and F32 labels alike: read_f32 converts integers exactly below 2^24. */
			in->y = malloc((size_t)in->n * sizeof *in->y);
			for (int64_t i = 0; in->y && i < in->n; i++)
				in->y[i] = (int32_t)y_float[i];
			if (!in->y)
				code = EXIT_RUNTIME;
		}
		free(y_float);
	}
	df_safetensors_close(st);
	return code;
}

/* ------------------------------------------------------------------ */
/* The backbone's shape from the pipeline (or the options). */

static int resolve_shape(const forward_args *a, const df_pipeline *p, df_ctx *ctx, const forward_inputs *in,
                         df_backbone_shape *shape, df_error *err)
{
	memset(shape, 0, sizeof *shape);
	shape->input.channels = (int)in->x_shape[1];
	shape->input.height = (int)in->x_shape[2];
	shape->input.width = (int)in->x_shape[3];
	shape->num_classes = a->num_classes;
	shape->out_channels = a->out_channels;
	const df_pipeline_section *data = df_pipeline_get(p, "dataset");
	if (shape->num_classes < 0 && data && data->component) {
		const df_dataset_vtable *vt = data->component->component->vtable;
		void *self = NULL;
		df_dataset_info info = {0};
		int rc = vt->open(data->values, &self, err);
		if (rc != DF_OK)
			return df_error_prefix(err, rc, "dataset (or give --num-classes)");
		vt->info(self, &info);
		vt->close(self);
		shape->num_classes = info.num_classes;
	}
	if (shape->num_classes < 0)
		shape->num_classes = 0;
	const df_pipeline_section *objective = df_pipeline_get(p, "objective");
	if (shape->out_channels < 0 && objective && objective->component) {
		const df_objective_vtable *vt = objective->component->component->vtable;
		void *self = NULL;
		int rc = vt->create(objective->values, ctx, &self, err);
		if (rc != DF_OK)
			return df_error_prefix(err, rc, "objective");
		shape->out_channels = vt->out_channels(self, shape->input.channels);
		vt->destroy(self);
	}
	if (shape->out_channels < 0)
		shape->out_channels = shape->input.channels;
	/* A null-label row exists whenever training drops labels (guidance). */
	const df_pipeline_section *train = df_pipeline_get(p, "train");
	double class_dropout = train ? ((const df_train_settings *)train->values)->class_dropout : 0.1;
	shape->null_class = shape->num_classes > 0 && class_dropout > 0;
	return DF_OK;
}

/* ------------------------------------------------------------------ */
/* Weights by name. */

typedef int (*load_safetensors_fn)(void *self, const char *path, df_error *err);

static int load_by_name(df_params *params, const char *path, df_error *err)
{
	df_safetensors *st = NULL;
	if (df_safetensors_open(&st, path, err) != 0)
		return DF_EIO;
	int rc = DF_OK;
	float *buf = NULL;
	for (size_t i = 0; i < df_params_count(params) && rc == DF_OK; i++) {
		df_tensor *p = df_params_at(params, i);
		const df_safetensors_tensor *t = df_safetensors_find(st, p->name);
		int same = t && t->ndim == p->ndim;
		for (int d = 0; same && d < p->ndim; d++)
			same = t->shape[d] == p->shape[d];
		if (!same) {
			rc = df_error_set(err, DF_EINVAL, "%s: %s is %s", path, p->name,
			                  t ? "of another shape than the model's" : "missing");
			break;
		}
		float *grown = realloc(buf, t->nelem * sizeof *buf);
		if (!grown) {
			rc = df_error_set(err, DF_ENOMEM, "%s: out of memory", path);
			break;
		}
		buf = grown;
		if (df_safetensors_read_f32(st, t, buf, t->nelem, err) != 0)
			rc = DF_EINVAL;
		else
			rc = df_tensor_write(p, buf, err);
	}
	free(buf);
	df_safetensors_close(st);
	return rc;
}

static int load_weights(const df_backbone_vtable *vt, void *self, const char *path, df_error *err)
{
	/* A backbone that knows its settings explains a misfit better. */
	load_safetensors_fn load = vt->extension ? (load_safetensors_fn)vt->extension(self, "load-safetensors") : NULL;
	return load ? load(self, path, err) : load_by_name(vt->params(self), path, err);
}

/* ------------------------------------------------------------------ */
/* The pass itself and the output file. */

typedef struct forward_outputs {
	df_safetensors_entry *entries;
	size_t count;
	float *values;       /* every output's floats, one block */
	char *names;         /* "grad.<name>" strings */
} forward_outputs;

static int run_backward(df_graph *g, df_params *params, df_tensor *out, const char *w_path,
                        forward_outputs *o, df_error *err)
{
	df_safetensors *st = NULL;
	size_t count = 0;
	if (df_safetensors_open(&st, w_path, err) != 0)
		return DF_EIO;
	float *w = read_floats(st, w_path, "w", &count);
	df_safetensors_close(st);
	if (!w)
		return df_error_set(err, DF_EINVAL, "%s: cannot read w", w_path);
	if ((int64_t)count != out->numel) {
		free(w);
		return df_error_set(err, DF_EINVAL, "%s: w has %zu values but out has %lld", w_path, count,
		                    (long long)out->numel);
	}
	df_params_zero_grad(params);
	df_tensor *loss = df_sum(g, df_mul(g, out, df_tensor_from_host(g, w, out->ndim, out->shape)));
	free(w);
	int rc = df_graph_status(g, err);
	if (rc == DF_OK)
		rc = df_backward(g, loss, err);
	float *at = o->values + out->numel;
	char *name = o->names;
	for (size_t i = 0; i < df_params_count(params) && rc == DF_OK; i++) {
		df_tensor *p = df_params_at(params, i);
		if (p->flags & DF_TENSOR_FROZEN)
			continue;
		rc = df_tensor_read_grad(p, at, err);
		snprintf(name, 256, "grad.%s", p->name);
		o->entries[o->count++] = (df_safetensors_entry){name, DF_ST_F32, p->ndim, p->shape, at};
		at += p->numel;
		name += 256;
	}
	return rc;
}

static int forward_once(const forward_args *a, const df_pipeline *p, forward_inputs *in, df_error *err)
{
	const df_pipeline_section *sec = df_pipeline_get(p, "backbone");
	if (!sec || !sec->component)
		return df_error_set(err, DF_EINVAL, "%s: the pipeline has no backbone section", a->pipeline.file);
	const df_backbone_vtable *vt = sec->component->component->vtable;
	const df_pipeline_settings *top = df_pipeline_top(p);
	df_ctx *ctx = NULL;
	void *self = NULL;
	df_graph *g = NULL;
	forward_outputs o = {0};
	df_backbone_shape shape;
	int rc = df_ctx_create(&ctx, top->device, (int)top->threads, err);
	if (rc == DF_OK)
		rc = resolve_shape(a, p, ctx, in, &shape, err);
	if (rc == DF_OK)
		rc = vt->create(sec->values, ctx, &shape, &self, err);
	if (rc == DF_OK)
		rc = load_weights(vt, self, a->weights, err);
	df_tensor *out = NULL;
	if (rc == DF_OK) {
		g = df_graph_create(ctx, a->grad_weights ? 0 : DF_GRAPH_NO_GRAD);
		df_tensor *x = g ? df_tensor_from_host(g, in->x, 4, in->x_shape) : NULL;
		df_tensor *t = g ? df_tensor_from_host(g, in->t, DF_SHAPE(in->n)) : NULL;
		df_backbone_input input = {sizeof input, x, t, in->y, NULL, 0, NULL};
		rc = !g ? df_error_set(err, DF_ENOMEM, "out of memory") : df_graph_status(g, err);
		if (rc == DF_OK)
			rc = vt->forward(self, g, &input, &out, err);
	}
	if (rc == DF_OK) {
		df_params *params = vt->params(self);
		size_t n_params = df_params_count(params);
		size_t total = (size_t)out->numel + (a->grad_weights ? (size_t)df_params_numel(params) : 0);
		o.entries = calloc(n_params + 1, sizeof *o.entries);
		o.values = malloc(total * sizeof *o.values);
		o.names = malloc(n_params * 256);
		if (!o.entries || !o.values || !o.names)
			rc = df_error_set(err, DF_ENOMEM, "out of memory");
		if (rc == DF_OK) {
			rc = df_tensor_read(out, o.values, err);
			o.entries[o.count++] = (df_safetensors_entry){"out", DF_ST_F32, out->ndim, out->shape, o.values};
		}
		if (rc == DF_OK && a->grad_weights)
			rc = run_backward(g, params, out, a->grad_weights, &o, err);
		if (rc == DF_OK && df_safetensors_write(a->out, o.entries, o.count, NULL, 0, err) != 0)
			rc = DF_EIO;
	}
	free(o.entries);
	free(o.values);
	free(o.names);
	df_graph_destroy(g);
	if (self)
		vt->destroy(self);
	df_ctx_destroy(ctx);
	return rc;
}

int cmd_forward(int argc, char **argv)
{
	forward_args a;
	forward_inputs in = {0};
	df_registry *reg = NULL;
	df_pipeline *p = NULL;
	int code = parse_forward_args(argc, argv, &a);
	if (code == EXIT_OK)
		code = read_inputs(a.inputs, &in) == EXIT_OK ? EXIT_OK : EXIT_USAGE;
	if (code == EXIT_OK)
		code = load_pipeline(&a.pipeline, &reg, &p);
	if (code == EXIT_OK) {
		df_error err;
		if (forward_once(&a, p, &in, &err) != DF_OK) {
			fprintf(stderr, "diffuse forward: %s\n", err.msg);
			code = EXIT_RUNTIME;
		} else {
			printf("%s: out%s written\n", a.out, a.grad_weights ? " and parameter gradients" : "");
		}
	}
	inputs_free(&in);
	df_pipeline_destroy(p);
	df_registry_destroy(reg);
	free(a.pipeline.overrides);
	return code;
}
