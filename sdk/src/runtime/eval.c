/* The evaluation stage (eval.h): samples from the pipeline's own sampling
 * stage, real images from the dataset's test split, both streamed through
 * metric components, with FD's floor and ceiling beside them. */
#include "config.h"
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include "diffuse/diffuse.h"
#include "diffuse/eval.h"

#define EVAL_BATCH 500
#define EVAL_STREAM_NOISE 0x6e6f6973u /* the ceiling's noise images */

typedef struct metric_slot {
	const df_component *component;
	const df_metric_vtable *vtable;
	void *settings, *self;
	const df_metric_reference_stats *stats; /* NULL: the metric cannot cache its real statistics */
	int real_cached;                        /* its real statistics came from the cache */
} metric_slot;

typedef struct evaluator {
	df_registry *reg;
	const df_pipeline *p;
	const df_stage_options *o;
	df_ctx *ctx;
	df_shape3 image;
	int64_t plane;
	metric_slot metrics[16];
	int n_metrics;
	metric_slot floor, ceiling; /* fd against the train split and against noise */
	/* the generated images and their labels */
	float *generated;
	int32_t *labels;
	int64_t n_generated;
} evaluator;

static void say(const evaluator *ev, const char *fmt, ...) DF_PRINTF(2, 3);
static void say(const evaluator *ev, const char *fmt, ...)
{
	if (!ev->o || !ev->o->message || df_dist_rank() != 0)
		return;
	char line[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(line, sizeof line, fmt, ap);
	va_end(ap);
	ev->o->message(ev->o->ctx, line);
}

/* ------------------------------------------------------------------ */
/* Metrics. */

/* The pipeline's `metric` section speaks for every metric eval opens: each
 * of its settings that the opened metric also declares (features, weights,
 * pad_to, ...) is copied over, so all figures, floor and ceiling included,
 * share one feature network. */
static int apply_metric_section(const evaluator *ev, const df_component *c, void *values, df_error *err)
{
	const df_pipeline_section *sec = df_pipeline_get(ev->p, "metric");
	if (!sec || !sec->settings || !c->settings)
		return DF_OK;
	for (const df_setting *s = sec->settings; s->name; s++) {
		const df_setting *mine = df_settings_find(c->settings, s->name);
		if (!mine || mine->type != s->type || strcmp(s->name, "plugin") == 0)
			continue;
		char buf[4096];
		const char *text = buf;
		if (s->type == DF_SETTING_STRING) {
			/* strings are stored and set as they are, without quotes */
			memcpy(&text, (const char *)sec->values + s->offset, sizeof text);
			if (!text)
				continue;
		} else {
			int len = df_settings_format(s, sec->values, buf, sizeof buf);
			if (len < 0 || (size_t)len >= sizeof buf)
				return df_error_set(err, DF_EINVAL, "metric.%s: value too long", s->name);
		}
		int rc = df_settings_set(c->settings, values, s->name, text, err);
		if (rc)
			return df_error_prefix(err, rc, "metric.%s", s->name);
	}
	return DF_OK;
}

static int metric_open(evaluator *ev, metric_slot *m, const char *name, df_error *err)
{
	const df_component_info *info = df_registry_find(ev->reg, DF_KIND_METRIC, name);
	if (!info)
		return df_error_set(err, DF_EINVAL, "no metric named \"%s\" (`diffuse plugins` lists them)", name);
	m->component = info->component;
	m->vtable = info->component->vtable;
	m->settings = calloc(1, m->component->settings_size ? m->component->settings_size : 1);
	if (!m->settings)
		return df_error_set(err, DF_ENOMEM, "out of memory");
	int rc = m->component->settings ? df_settings_defaults(m->component->settings, m->settings, err) : DF_OK;
	if (!rc)
		rc = apply_metric_section(ev, m->component, m->settings, err);
	if (!rc)
		rc = m->vtable->create(m->settings, ev->ctx, ev->image, &m->self, err);
	if (rc)
		return df_error_prefix(err, rc, "metric %s", name);
	const df_metric_reference_stats *stats =
	    m->vtable->extension ? m->vtable->extension(m->self, DF_METRIC_REFERENCE_STATS) : NULL;
	if (stats && stats->struct_size >= sizeof *stats && stats->save && stats->load && stats->count)
		m->stats = stats;
	return DF_OK;
}

static void metric_close(metric_slot *m)
{
	if (m->self)
		m->vtable->destroy(m->self);
	if (m->settings && m->component->settings)
		df_settings_release(m->component->settings, m->settings);
	free(m->settings);
	memset(m, 0, sizeof *m);
}

static int metric_feed(metric_slot *m, int real, const float *images, const int32_t *labels, int64_t n, df_error *err)
{
	if (!m->self || (real && m->real_cached))
		return DF_OK;
	int rc = m->vtable->update(m->self, real, images, labels, n, err);
	return rc ? df_error_prefix(err, rc, "metric %s", m->component->name) : DF_OK;
}

static int open_metrics(evaluator *ev, const char *list, int reference, df_error *err)
{
	char *names = strdup(list), *save = NULL;
	if (!names)
		return df_error_set(err, DF_ENOMEM, "out of memory");
	int rc = DF_OK;
	for (char *name = strtok_r(names, ",", &save); name && !rc; name = strtok_r(NULL, ",", &save)) {
		if (ev->n_metrics == (int)(sizeof ev->metrics / sizeof ev->metrics[0]))
			rc = df_error_set(err, DF_EINVAL, "too many metrics");
		else
			rc = metric_open(ev, &ev->metrics[ev->n_metrics++], name, err);
	}
	free(names);
	if (!rc && reference && (rc = metric_open(ev, &ev->floor, "fd", err)) == DF_OK)
		rc = metric_open(ev, &ev->ceiling, "fd", err);
	return rc;
}

/* ------------------------------------------------------------------ */
/* Data. */

/* The pipeline's dataset with its `split` setting replaced (when it has
 * one offering that split): a shallow copy of the pipeline's values. */
static int open_split(const df_pipeline *p, const char *split, const df_dataset_vtable **vt, void **self,
                      df_dataset_info *info, int *replaced, df_error *err)
{
	const df_pipeline_section *sec = df_pipeline_get(p, "dataset");
	if (!sec || !sec->component)
		return df_error_set(err, DF_EINVAL, "the pipeline has no dataset section");
	const df_component *c = sec->component->component;
	size_t size = c->settings_size ? c->settings_size : 1;
	void *values = malloc(size);
	if (!values)
		return df_error_set(err, DF_ENOMEM, "out of memory");
	memcpy(values, sec->values, c->settings_size);
	*replaced = 0;
	const df_setting *d = c->settings ? df_settings_find(c->settings, "split") : NULL;
	if (d && d->type == DF_SETTING_STRING && (!d->choices || df_choice_index(d->choices, split) >= 0)) {
		*(const char **)((char *)values + d->offset) = split;
		*replaced = 1;
	}
	*vt = c->vtable;
	int rc = (*vt)->open(values, self, err);
	free(values);
	if (rc)
		return df_error_prefix(err, rc, "dataset %s (split %s)", c->name, split);
	(*vt)->info(*self, info);
	return DF_OK;
}

/* Streams `n` items of a split, evenly spaced over it, to the slots. */
static int stream_split(evaluator *ev, const char *split, int64_t n, int real, metric_slot *const *slots, int n_slots,
                        int64_t *streamed, df_error *err)
{
	const df_dataset_vtable *vt;
	void *ds = NULL;
	df_dataset_info info;
	int replaced;
	int rc = open_split(ev->p, split, &vt, &ds, &info, &replaced, err);
	if (rc)
		return rc;
	if (!replaced)
		say(ev, "note: the dataset has no %s split; its configured items stand in", split);
	if (n > info.count)
		n = info.count;
	float *images = malloc((size_t)(EVAL_BATCH * ev->plane) * sizeof *images);
	int32_t *labels = malloc(EVAL_BATCH * sizeof *labels);
	int64_t *index = malloc(EVAL_BATCH * sizeof *index);
	if (!images || !labels || !index)
		rc = df_error_set(err, DF_ENOMEM, "out of memory");
	for (int64_t start = 0; start < n && !rc; start += EVAL_BATCH) {
		int64_t b = n - start < EVAL_BATCH ? n - start : EVAL_BATCH;
		for (int64_t i = 0; i < b; i++)
			index[i] = (start + i) * info.count / n;
		rc = vt->fetch(ds, index, b, images, labels, err);
		if (rc) {
			df_error_prefix(err, rc, "dataset");
			break;
		}
		const int32_t *y = info.num_classes > 0 ? labels : NULL;
		for (int s = 0; s < n_slots && !rc; s++)
			rc = metric_feed(slots[s], real, images, y, b, err);
	}
	free(images);
	free(labels);
	free(index);
	vt->close(ds);
	*streamed = n;
	return rc;
}

/* ------------------------------------------------------------------ */
/* Samples. */

/* The samples file holds latents; the pipeline's encoder (if any) decodes
 * them into images, clamped to [-1, 1] as any image file would be. */
static int read_samples(evaluator *ev, const char *path, df_error *err)
{
	df_safetensors *st = NULL;
	if (df_safetensors_open(&st, path, err) != 0)
		return DF_EIO;
	int rc = DF_OK;
	const df_safetensors_tensor *tx = df_safetensors_find(st, "x0"), *ty = df_safetensors_find(st, "y");
	float *x = NULL;
	int64_t *y = NULL;
	df_graph *g = NULL;
	void *enc = NULL;
	const df_pipeline_section *es = df_pipeline_get(ev->p, "encoder");
	const df_encoder_vtable *evt = es && es->component ? es->component->component->vtable : NULL;
	if (!tx || tx->ndim != 4) {
		rc = df_error_set(err, DF_EINVAL, "%s: no samples x0 (N, C, H, W)", path);
		goto done;
	}
	const int64_t n = tx->shape[0], latent = (int64_t)(tx->nelem / (size_t)(n > 0 ? n : 1));
	x = malloc(tx->nelem * sizeof *x);
	y = ty ? malloc(ty->nelem * sizeof *y) : NULL;
	ev->generated = malloc((size_t)(n * ev->plane) * sizeof *ev->generated);
	ev->labels = ty ? malloc((size_t)n * sizeof *ev->labels) : NULL;
	if (!x || !ev->generated || (ty && (!y || !ev->labels))) {
		rc = df_error_set(err, DF_ENOMEM, "%s: out of memory", path);
		goto done;
	}
	if (df_safetensors_read_f32(st, tx, x, tx->nelem, err) != 0 ||
	    (ty && df_safetensors_read_i64(st, ty, y, ty->nelem, err) != 0)) {
		rc = DF_EINVAL;
		goto done;
	}
	for (int64_t i = 0; ty && i < n; i++)
		ev->labels[i] = (int32_t)y[i];
	if (!evt) {
		if (latent != ev->plane) {
			rc = df_error_set(err, DF_EINVAL, "%s: samples of %" PRId64 " values, images of %" PRId64, path,
			                  latent, ev->plane);
			goto done;
		}
		memcpy(ev->generated, x, (size_t)(n * latent) * sizeof *x);
	} else {
		if ((rc = evt->create(es->values, ev->ctx, ev->image, &enc, err))) {
			df_error_prefix(err, rc, "encoder");
			goto done;
		}
		g = df_graph_create(ev->ctx, DF_GRAPH_NO_GRAD);
		for (int64_t start = 0; start < n && !rc; start += EVAL_BATCH) {
			int64_t b = n - start < EVAL_BATCH ? n - start : EVAL_BATCH;
			df_graph_reset(g);
			df_tensor *lat = df_tensor_from_host(g, x + start * latent, DF_SHAPE(b, tx->shape[1], tx->shape[2],
			                                                                      tx->shape[3]));
			df_tensor *img = NULL;
			rc = df_graph_status(g, err);
			if (!rc)
				rc = evt->decode(enc, g, lat, &img, err);
			if (!rc && img->numel != b * ev->plane)
				rc = df_error_set(err, DF_EINVAL, "encoder: decodes to %" PRId64 " values per image, the data has %" PRId64,
				                  img->numel / b, ev->plane);
			if (!rc)
				rc = df_tensor_read(img, ev->generated + start * ev->plane, err);
		}
		if (rc)
			goto done;
	}
	for (int64_t i = 0; i < n * ev->plane; i++) {
		float v = ev->generated[i];
		ev->generated[i] = v < -1 ? -1 : v > 1 ? 1 : isnan(v) ? 0 : v;
	}
	ev->n_generated = n;
done:
	if (enc)
		evt->destroy(enc);
	df_graph_destroy(g);
	free(x);
	free(y);
	df_safetensors_close(st);
	return rc;
}

static int generate(evaluator *ev, const df_eval_request *req, int64_t count, df_eval_result *res, df_error *err)
{
	snprintf(res->samples, sizeof res->samples, "%s/eval-samples.safetensors",
	         ev->o && ev->o->run_dir ? ev->o->run_dir : ".");
	df_sample_request sr = {
		.struct_size = sizeof sr,
		.checkpoint = req->weights ? NULL : req->checkpoint,
		.weights = req->weights,
		.count = count,
		.out = res->samples,
	};
	int rc = df_sample_run(ev->p, &sr, ev->o, err);
	/* Every rank sampled its share; rank 0 holds them all. */
	if (rc || df_dist_rank() != 0)
		return rc;
	df_safetensors *st = NULL;
	if (df_safetensors_open(&st, res->samples, err) == 0) {
		const char *made_by = df_safetensors_metadata(st, "made_by");
		snprintf(res->made_by, sizeof res->made_by, "%s", made_by ? made_by : "");
		df_safetensors_close(st);
	}
	return read_samples(ev, res->samples, err);
}

/* ------------------------------------------------------------------ */

static int collect(metric_slot *m, df_eval_result *res, df_error *err)
{
	df_metric_value values[DF_EVAL_MAX_VALUES];
	int n = m->vtable->result(m->self, values, DF_EVAL_MAX_VALUES, err);
	if (n < 0)
		return df_error_prefix(err, n, "metric %s", m->component->name);
	for (int i = 0; i < n && res->count < DF_EVAL_MAX_VALUES; i++) {
		df_eval_value *v = &res->values[res->count++];
		snprintf(v->metric, sizeof v->metric, "%s", m->component->name);
		snprintf(v->name, sizeof v->name, "%s", values[i].name);
		v->value = values[i].value;
	}
	return DF_OK;
}

static double single_value(metric_slot *m, df_error *err, int *rc)
{
	df_metric_value v;
	int n = m->vtable->result(m->self, &v, 1, err);
	if (n < 1) {
		*rc = n < 0 ? n : df_error_set(err, DF_EINVAL, "fd gave no value");
		return NAN;
	}
	return v.value;
}

static void append_log(const evaluator *ev, const df_eval_request *req, const df_eval_result *res)
{
	if (!ev->o || !ev->o->run_dir)
		return;
	char path[4200];
	snprintf(path, sizeof path, "%s/log.jsonl", ev->o->run_dir);
	FILE *log = fopen(path, "a");
	if (!log)
		return;
	json_t *values = json_object();
	for (int i = 0; i < res->count; i++)
		json_object_set_new(values, res->values[i].name, json_real(res->values[i].value));
	json_t *line = json_pack("{s:{s:s?, s:I, s:I, s:s, s:s, s:o}}", "eval", "checkpoint", req->checkpoint,
	                         "generated", (json_int_t)res->generated, "real", (json_int_t)res->real, "made_by",
	                         res->made_by, "samples", res->samples, "metrics", values);
	if (line && res->have_reference) {
		json_t *e = json_object_get(line, "eval");
		json_object_set_new(e, "fd_floor", json_real(res->fd_floor));
		json_object_set_new(e, "fd_ceiling", json_real(res->fd_ceiling));
	}
	if (line) {
		json_dumpf(line, log, JSON_COMPACT);
		fputc('\n', log);
		json_decref(line);
	}
	fclose(log);
}

/* The run folder's cached statistics of `n` test images, per metric
 * component: a metric that has them skips the test images. */
static void cache_path(const evaluator *ev, const metric_slot *m, int64_t n, char *buf, size_t size)
{
	snprintf(buf, size, "%s/reference-%s-test-%" PRId64 ".safetensors",
	         ev->o && ev->o->run_dir ? ev->o->run_dir : ".", m->component->name, n);
}

static void load_cached(evaluator *ev, metric_slot *const *slots, int n_slots, int64_t n)
{
	for (int s = 0; s < n_slots; s++) {
		char path[4200];
		df_error ignored;
		if (!slots[s]->stats)
			continue;
		cache_path(ev, slots[s], n, path, sizeof path);
		FILE *f = fopen(path, "rb");
		if (!f)
			continue;
		fclose(f);
		slots[s]->real_cached = slots[s]->stats->load(slots[s]->self, path, &ignored) == 0;
		if (!slots[s]->real_cached)
			say(ev, "note: %s: %s; computing them again", path, ignored.msg);
	}
}

static void save_cached(evaluator *ev, metric_slot *const *slots, int n_slots, int64_t n)
{
	for (int s = 0; s < n_slots; s++) {
		char path[4200];
		df_error err;
		if (!slots[s]->stats || slots[s]->real_cached || slots[s]->stats->count(slots[s]->self) != n)
			continue;
		cache_path(ev, slots[s], n, path, sizeof path);
		if (slots[s]->stats->save(slots[s]->self, path, &err) != 0)
			say(ev, "note: the test statistics were not cached: %s", err.msg);
		return; /* one file per component: the others hold the same */
	}
}

/* Under mpirun (dist.h) the ranks share the sampling, which is most of
 * the work; rank 0 then streams every image through the metrics, in index
 * order as one process does, so the figures equal one process's exactly,
 * and hands them to the other ranks. */
int df_eval_run(df_registry *reg, const df_pipeline *p, const df_eval_request *req, const df_stage_options *o,
                df_eval_result *res, df_error *err)
{
	memset(res, 0, sizeof *res);
	evaluator ev = {.reg = reg, .p = p, .o = o};
	const df_pipeline_settings *top = df_pipeline_top(p);
	int64_t count = req->count > 0 ? req->count : 10000;
	int reference = !req->no_reference, root = df_dist_rank() == 0;
	int rc = df_ctx_create(&ev.ctx, top->device, (int)top->threads, err);
	/* the image shape, from the dataset as the pipeline configures it */
	const df_dataset_vtable *vt;
	void *ds = NULL;
	df_dataset_info info;
	int replaced;
	if (!rc && (rc = open_split(p, "test", &vt, &ds, &info, &replaced, err)) == DF_OK) {
		vt->close(ds);
		ev.image = (df_shape3){info.channels, info.height, info.width};
		ev.plane = (int64_t)info.channels * info.height * info.width;
	}
	if (!rc && root)
		rc = open_metrics(&ev, req->metrics ? req->metrics : DF_EVAL_DEFAULT_METRICS, reference, err);
	/* A rank that failed would never reach the sampling's collectives. */
	rc = df_dist_agree(rc, err);
	if (!rc) {
		say(&ev, "eval: generating %" PRId64 " samples", count);
		rc = generate(&ev, req, count, res, err);
	}
	res->generated = ev.n_generated;
	for (int m = 0; m < ev.n_metrics && !rc; m++)
		for (int64_t start = 0; start < ev.n_generated && !rc; start += EVAL_BATCH) {
			int64_t b = ev.n_generated - start < EVAL_BATCH ? ev.n_generated - start : EVAL_BATCH;
			rc = metric_feed(&ev.metrics[m], 0, ev.generated + start * ev.plane,
			                 ev.labels ? ev.labels + start : NULL, b, err);
		}
	if (!rc && root) {
		metric_slot *slots[18] = {0};
		int n = 0;
		for (int m = 0; m < ev.n_metrics; m++)
			slots[n++] = &ev.metrics[m];
		if (reference) {
			slots[n++] = &ev.floor;
			slots[n++] = &ev.ceiling;
		}
		int64_t n_real = count < info.count ? count : info.count;
		load_cached(&ev, slots, n, n_real);
		int all_cached = n > 0;
		for (int s = 0; s < n; s++) {
			all_cached &= slots[s]->real_cached;
			res->reference_cached |= slots[s]->real_cached;
		}
		if (all_cached) {
			say(&ev, "eval: the statistics of %" PRId64 " test images come from the run folder", n_real);
			res->real = n_real;
		} else {
			say(&ev, "eval: streaming %" PRId64 " test images", n_real);
			rc = stream_split(&ev, "test", n_real, 1, slots, n, &res->real, err);
			if (!rc)
				save_cached(&ev, slots, n, n_real);
		}
	}
	if (!rc && root && reference) {
		say(&ev, "eval: floor and ceiling (training images, noise)");
		metric_slot *floor_slot = &ev.floor;
		int64_t streamed = 0;
		rc = stream_split(&ev, "train", res->real, 0, &floor_slot, 1, &streamed, err);
		float *noise = malloc((size_t)(EVAL_BATCH * ev.plane) * sizeof *noise);
		if (!noise && !rc)
			rc = df_error_set(err, DF_ENOMEM, "out of memory");
		for (int64_t start = 0; start < res->real && !rc; start += EVAL_BATCH) {
			int64_t b = res->real - start < EVAL_BATCH ? res->real - start : EVAL_BATCH;
			df_rng_fill_normal(noise, (size_t)(b * ev.plane), (uint64_t)top->seed, EVAL_STREAM_NOISE, 0,
			                   (uint64_t)(start * ev.plane));
			for (int64_t i = 0; i < b * ev.plane; i++)
				noise[i] = noise[i] < -1 ? -1 : noise[i] > 1 ? 1 : noise[i];
			rc = metric_feed(&ev.ceiling, 0, noise, NULL, b, err);
		}
		free(noise);
		if (!rc)
			res->fd_floor = single_value(&ev.floor, err, &rc);
		if (!rc)
			res->fd_ceiling = single_value(&ev.ceiling, err, &rc);
		res->have_reference = !rc;
	}
	for (int m = 0; m < ev.n_metrics && !rc; m++)
		rc = collect(&ev.metrics[m], res, err);
	if (!rc && root)
		append_log(&ev, req, res);
	/* Every rank returns rank 0's figures. */
	rc = df_dist_agree(rc, err);
	if (!rc)
		rc = df_dist_broadcast(res, sizeof *res, 0, err);
	for (int m = 0; m < ev.n_metrics; m++)
		metric_close(&ev.metrics[m]);
	metric_close(&ev.floor);
	metric_close(&ev.ceiling);
	free(ev.generated);
	free(ev.labels);
	df_ctx_destroy(ev.ctx);
	return rc;
}
