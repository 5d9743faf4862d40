/* Checkpoints: one safetensors file with the weights, the EMA set, the
 * AdamW moments and the resolved pipeline (format in runtime.h). */
#include "config.h"
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "stage_private.h"

static const char *const set_prefixes[] = {"", "ema.", "opt.m.", "opt.v."};
enum { SET_RAW, SET_EMA, SET_M, SET_V, SET_COUNT };

static char *pipeline_text(const df_pipeline *p, df_error *err)
{
	char *text = NULL;
	size_t size = 0;
	FILE *out = open_memstream(&text, &size);
	if (!out) {
		df_error_set(err, DF_ENOMEM, "checkpoint: out of memory");
		return NULL;
	}
	int rc = df_pipeline_write(p, out, err);
	fclose(out);
	if (rc) {
		free(text);
		return NULL;
	}
	return text;
}

/* One set in backend memory, numel floats laid out as the block. */
static float *set_block(dfr_model *m, int set)
{
	switch (set) {
	case SET_RAW: return df_params_block(m->params, DF_PARAMS_VALUES);
	case SET_EMA: return m->ema;
	case SET_M: return df_params_block(m->params, DF_PARAMS_M);
	default: return df_params_block(m->params, DF_PARAMS_V);
	}
}

/* The host view of one set: the block itself where the host reads backend
 * memory (cpu), else a copy into staging (numel floats) made here. */
static const float *set_values(dfr_model *m, int set, float *staging)
{
	const float *block = set_block(m, set);
	if (!block || dfr_model_host_memory(m))
		return block;
	dfr_model_to_host(m, staging, block, m->numel);
	return staging;
}

/* The objective's own weights (plugin.h, DF_OBJECTIVE_MODEL_ACCESS): its
 * values and moments, no EMA set; in host memory (the training stage
 * attaches such an objective on the cpu backend only). */
static const float *objective_set_values(dfr_model *m, int set)
{
	if (!m->objective_params || set == SET_EMA)
		return NULL;
	return df_params_block(m->objective_params, set == SET_RAW ? DF_PARAMS_VALUES : set == SET_M ? DF_PARAMS_M
	                                                                                           : DF_PARAMS_V);
}

/* Names "<set prefix><owner>name" for every tensor of p into
 * entries[*n...]. */
static int add_entries(df_params *p, const char *set_prefix, const char *owner, const float *values,
                       df_safetensors_entry *entries, char **names, size_t *n, const char *path, df_error *err)
{
	for (size_t i = 0; i < df_params_count(p); i++) {
		const df_tensor *t = df_params_at(p, i);
		size_t len = strlen(set_prefix) + strlen(owner) + strlen(t->name) + 1;
		if (!(names[*n] = malloc(len)))
			return df_error_set(err, DF_ENOMEM, "%s: out of memory", path);
		snprintf(names[*n], len, "%s%s%s", set_prefix, owner, t->name);
		entries[*n] = (df_safetensors_entry){names[*n], DF_ST_F32, t->ndim, t->shape,
		                                     values + df_params_offset(p, i)};
		(*n)++;
	}
	return DF_OK;
}

int dfr_checkpoint_save(dfr_model *m, const char *path, df_error *err)
{
	size_t count = df_params_count(m->params) + (m->objective_params ? df_params_count(m->objective_params) : 0);
	int sets = SET_COUNT;
	df_safetensors_entry *entries = calloc(count * (size_t)sets, sizeof *entries);
	char **names = calloc(count * (size_t)sets, sizeof *names);
	char *text = pipeline_text(m->pipeline, err);
	float *staging = NULL; /* host copies of the sets off the host (cuda) */
	int rc = DF_OK;
	if (!entries || !names || !text) {
		rc = text ? df_error_set(err, DF_ENOMEM, "%s: out of memory", path) : DF_ENOMEM;
		goto done;
	}
	if (!dfr_model_host_memory(m) && !(staging = malloc((size_t)sets * (size_t)m->numel * sizeof *staging))) {
		rc = df_error_set(err, DF_ENOMEM, "%s: out of memory", path);
		goto done;
	}
	size_t n = 0;
	for (int set = 0; set < sets && !rc; set++) {
		const float *values = set_values(m, set, staging ? staging + (size_t)set * (size_t)m->numel : NULL);
		const float *own = objective_set_values(m, set);
		if (values)
			rc = add_entries(m->params, set_prefixes[set], "", values, entries, names, &n, path, err);
		if (own && !rc)
			rc = add_entries(m->objective_params, set_prefixes[set], DF_OBJECTIVE_PARAMS_PREFIX, own, entries,
			                 names, &n, path, err);
	}
	if (rc)
		goto done;
	char step[32], ema_step[32];
	snprintf(step, sizeof step, "%" PRId64, m->step);
	snprintf(ema_step, sizeof ema_step, "%" PRId64, m->ema_step);
	df_safetensors_meta meta[] = {
		{"ema_step", ema_step},
		{"format", DF_CHECKPOINT_FORMAT},
		{"pipeline", text},
		{"step", step},
		{"weights", m->ema ? "raw,ema,opt" : "raw,opt"},
	};
	if (df_safetensors_write(path, entries, n, meta, sizeof meta / sizeof meta[0], err) != 0)
		rc = DF_EIO;
done:
	for (size_t i = 0; names && i < count * (size_t)sets; i++)
		free(names[i]);
	free(names);
	free(entries);
	free(text);
	free(staging);
	return rc;
}

/* ------------------------------------------------------------------ */
/* Naming what differs when a checkpoint does not fit. */

/* Finds "key = value;" of `section` in resolved pipeline text; value
 * copied into buf without the trailing ';'. */
static int find_setting(const char *text, const char *section, const char *key, char *buf, size_t size)
{
	const char *line = text;
	char current[64] = "";
	while (line && *line) {
		const char *end = strchr(line, '\n');
		size_t len = end ? (size_t)(end - line) : strlen(line);
		char l[1024];
		snprintf(l, sizeof l, "%.*s", (int)(len < sizeof l ? len : sizeof l - 1), line);
		char *hash = strstr(l, "; #");
		if (hash)
			hash[1] = '\0';
		char name[64], value[512];
		if (sscanf(l, " %63[A-Za-z0-9_] = {", name) == 1 && strchr(l, '{')) {
			snprintf(current, sizeof current, "%s", name);
		} else if (strncmp(l, "};", 2) == 0) {
			current[0] = '\0';
		} else if (sscanf(l, " %63[A-Za-z0-9_] = %511[^\n]", name, value) == 2 &&
		           strcmp(current, section) == 0 && strcmp(name, key) == 0) {
			size_t vlen = strlen(value);
			while (vlen && (value[vlen - 1] == ';' || value[vlen - 1] == ' '))
				value[--vlen] = '\0';
			snprintf(buf, size, "%s", value);
			return 1;
		}
		line = end ? end + 1 : NULL;
	}
	return 0;
}

/* Lists the model-shaping settings whose values differ between the
 * checkpoint's pipeline and p into buf; 0 when none differ. */
static int differing_settings(const df_pipeline *p, const char *ckpt_text, char *buf, size_t size)
{
	static const char *const shaping[] = {"dataset", "encoder", "backbone", "objective"};
	size_t used = 0;
	int found = 0;
	buf[0] = '\0';
	for (size_t k = 0; k < sizeof shaping / sizeof shaping[0]; k++) {
		const df_pipeline_section *sec = df_pipeline_get(p, shaping[k]);
		if (!sec || !sec->component)
			continue;
		char theirs[512];
		if (find_setting(ckpt_text, sec->name, "plugin", theirs, sizeof theirs)) {
			char ours[512];
			snprintf(ours, sizeof ours, "\"%s\"", sec->component->component->name);
			if (strcmp(ours, theirs) != 0 && used < size) {
				used += (size_t)snprintf(buf + used, size - used, "%s%s.plugin (checkpoint %s, pipeline %s)",
				                         found++ ? ", " : "", sec->name, theirs, ours);
				continue;
			}
		}
		for (const df_setting *s = sec->settings; s && s->name; s++) {
			char ours[512];
			df_settings_format(s, sec->values, ours, sizeof ours);
			if (find_setting(ckpt_text, sec->name, s->name, theirs, sizeof theirs) &&
			    strcmp(ours, theirs) != 0 && used < size)
				used += (size_t)snprintf(buf + used, size - used, "%s%s.%s (checkpoint %s, pipeline %s)",
				                         found++ ? ", " : "", sec->name, s->name, theirs, ours);
		}
	}
	return found;
}

static int misfit(dfr_model *m, const char *path, const char *ckpt_text, const char *what, df_error *err)
{
	char diff[400];
	if (ckpt_text && differing_settings(m->pipeline, ckpt_text, diff, sizeof diff))
		return df_error_set(err, DF_EINVAL, "%s: made by a model of another shape: %s differs: %s", path,
		                    what, diff);
	return df_error_set(err, DF_EINVAL, "%s: %s", path, what);
}

/* Checks that every tensor of a set is present with the parameter's shape.
 * Returns 1 when the whole set is absent (allowed for optional sets). */
static int check_set(dfr_model *m, const df_safetensors *st, const char *path, int set, const char *ckpt_text,
                     df_error *err)
{
	size_t count = df_params_count(m->params);
	for (size_t i = 0; i < count; i++) {
		const df_tensor *t = df_params_at(m->params, i);
		char name[512], what[700];
		snprintf(name, sizeof name, "%s%s", set_prefixes[set], t->name);
		const df_safetensors_tensor *f = df_safetensors_find(st, name);
		if (!f) {
			if (set != SET_RAW && i == 0)
				return 1; /* an optional set the file does not hold */
			snprintf(what, sizeof what, "%s is missing", name);
			return misfit(m, path, ckpt_text, what, err);
		}
		int same = f->ndim == t->ndim;
		for (int d = 0; same && d < t->ndim; d++)
			same = f->shape[d] == t->shape[d];
		if (!same) {
			char shape_file[128] = "", shape_model[128] = "";
			for (int d = 0; d < f->ndim; d++)
				snprintf(shape_file + strlen(shape_file), sizeof shape_file - strlen(shape_file), "%s%" PRId64,
				         d ? "x" : "", f->shape[d]);
			for (int d = 0; d < t->ndim; d++)
				snprintf(shape_model + strlen(shape_model), sizeof shape_model - strlen(shape_model),
				         "%s%" PRId64, d ? "x" : "", t->shape[d]);
			snprintf(what, sizeof what, "%s is %s in the file, %s in the model", name, shape_file, shape_model);
			return misfit(m, path, ckpt_text, what, err);
		}
	}
	return 0;
}

/* Every tensor of the file must belong to the model (a deeper model's
 * extra blocks, say). */
static int check_extra(dfr_model *m, const df_safetensors *st, const char *path, const char *ckpt_text,
                       df_error *err)
{
	for (size_t i = 0; i < df_safetensors_count(st); i++) {
		const char *name = df_safetensors_tensor_at(st, i)->name;
		const char *base = name;
		for (int set = SET_COUNT - 1; set > SET_RAW; set--)
			if (strncmp(name, set_prefixes[set], strlen(set_prefixes[set])) == 0) {
				base = name + strlen(set_prefixes[set]);
				break;
			}
		/* the objective's own weights: read by training alone */
		if (strncmp(base, DF_OBJECTIVE_PARAMS_PREFIX, strlen(DF_OBJECTIVE_PARAMS_PREFIX)) == 0)
			continue;
		if (!df_params_find(m->params, base)) {
			char what[600];
			snprintf(what, sizeof what, "%s is not a parameter of this model", name);
			return misfit(m, path, ckpt_text, what, err);
		}
	}
	return DF_OK;
}

/* Reads a set into dst, backend memory laid out as the block: directly on
 * the host (cpu), else through a host copy of the whole set. */
static int read_set(dfr_model *m, const df_safetensors *st, const char *path, int set, float *dst, df_error *err)
{
	size_t count = df_params_count(m->params);
	float *host = dst, *staging = NULL;
	if (!dfr_model_host_memory(m)) {
		if (!(staging = malloc((size_t)m->numel * sizeof *staging)))
			return df_error_set(err, DF_ENOMEM, "%s: out of memory", path);
		host = staging;
	}
	int rc = DF_OK;
	for (size_t i = 0; i < count && !rc; i++) {
		const df_tensor *t = df_params_at(m->params, i);
		char name[512];
		snprintf(name, sizeof name, "%s%s", set_prefixes[set], t->name);
		const df_safetensors_tensor *f = df_safetensors_find(st, name);
		if (df_safetensors_read_f32(st, f, host + df_params_offset(m->params, i), f->nelem, err) != 0)
			rc = df_error_prefix(err, DF_EIO, "%s", path);
	}
	if (!rc && staging)
		dfr_model_to_device(m, dst, staging, m->numel);
	free(staging);
	return rc;
}

/* The objective's weights and moments, each tensor present with its shape:
 * a run resumed without them would restart the objective from scratch. */
static int read_objective(dfr_model *m, const df_safetensors *st, const char *path, df_error *err)
{
	df_params *p = m->objective_params;
	static const int sets[] = {SET_RAW, SET_M, SET_V};
	for (size_t k = 0; k < sizeof sets / sizeof sets[0]; k++) {
		float *dst = (float *)objective_set_values(m, sets[k]);
		for (size_t i = 0; i < df_params_count(p); i++) {
			const df_tensor *t = df_params_at(p, i);
			char name[512];
			snprintf(name, sizeof name, "%s%s%s", set_prefixes[sets[k]], DF_OBJECTIVE_PARAMS_PREFIX, t->name);
			const df_safetensors_tensor *f = df_safetensors_find(st, name);
			if (!f || (int64_t)f->nelem != t->numel)
				return df_error_set(err, DF_EINVAL, "%s: %s is %s", path, name,
				                    f ? "of another shape than the objective's" : "missing");
			if (df_safetensors_read_f32(st, f, dst + df_params_offset(p, i), f->nelem, err) != 0)
				return df_error_prefix(err, DF_EIO, "%s", path);
		}
	}
	return DF_OK;
}

static int64_t meta_int(const df_safetensors *st, const char *key)
{
	const char *v = df_safetensors_metadata(st, key);
	return v ? strtoll(v, NULL, 10) : 0;
}

int dfr_checkpoint_load(dfr_model *m, const char *path, int with_state, df_error *err)
{
	df_safetensors *st = NULL;
	if (df_safetensors_open(&st, path, err) != 0)
		return DF_EIO;
	const char *text = df_safetensors_metadata(st, "pipeline");
	int rc = DF_OK;
	const char *format = df_safetensors_metadata(st, "format");
	if (!format || strcmp(format, DF_CHECKPOINT_FORMAT) != 0) {
		rc = df_error_set(err, DF_EINVAL, "%s: not a diffuse checkpoint (format %s; use --weights for plain weights)",
		                  path, format ? format : "missing");
		goto done;
	}
	int absent[SET_COUNT] = {0};
	for (int set = 0; set < SET_COUNT && !rc; set++) {
		int r = check_set(m, st, path, set, text, err);
		if (r < 0)
			rc = r;
		absent[set] = r == 1;
	}
	if (!rc)
		rc = check_extra(m, st, path, text, err);
	if (rc)
		goto done;
	rc = read_set(m, st, path, SET_RAW, df_params_block(m->params, DF_PARAMS_VALUES), err);
	if (!rc && !absent[SET_EMA]) {
		if (!m->ema && !(m->ema = dfr_model_alloc(m, m->numel)))
			rc = df_error_set(err, DF_ENOMEM, "%s: out of memory", path);
		if (!rc)
			rc = read_set(m, st, path, SET_EMA, m->ema, err);
	}
	if (!rc && with_state && !absent[SET_M] && !absent[SET_V]) {
		rc = read_set(m, st, path, SET_M, df_params_block(m->params, DF_PARAMS_M), err);
		if (!rc)
			rc = read_set(m, st, path, SET_V, df_params_block(m->params, DF_PARAMS_V), err);
		m->have_opt = !rc;
	}
	if (!rc && with_state && m->objective_params)
		rc = read_objective(m, st, path, err);
	if (!rc && with_state) {
		m->step = meta_int(st, "step");
		m->ema_step = meta_int(st, "ema_step");
	}
done:
	df_safetensors_close(st);
	return rc;
}

int dfr_weights_load(dfr_model *m, const char *path, df_error *err)
{
	typedef int (*load_fn)(void *self, const char *path, df_error *err);
	load_fn load = m->backbone->extension
		? (load_fn)m->backbone->extension(m->backbone_self, "load-safetensors") : NULL;
	if (load)
		return load(m->backbone_self, path, err);
	df_safetensors *st = NULL;
	if (df_safetensors_open(&st, path, err) != 0)
		return DF_EIO;
	int rc = check_set(m, st, path, SET_RAW, NULL, err);
	if (!rc)
		rc = read_set(m, st, path, SET_RAW, df_params_block(m->params, DF_PARAMS_VALUES), err);
	df_safetensors_close(st);
	return rc;
}

int df_pipeline_load_checkpoint(df_registry *reg, const char *checkpoint, const df_pipeline_options *options,
                                df_pipeline **pipeline, df_error *err)
{
	*pipeline = NULL;
	df_safetensors *st = NULL;
	if (df_safetensors_open(&st, checkpoint, err) != 0)
		return DF_EIO;
	const char *text = df_safetensors_metadata(st, "pipeline");
	if (!text) {
		df_safetensors_close(st);
		return df_error_set(err, DF_EINVAL, "%s: holds no pipeline (not a diffuse checkpoint)", checkpoint);
	}
	/* libconfig reads files: the text goes through a private temporary one,
	 * named after the checkpoint so messages say where it came from. */
	const char *tmpdir = getenv("TMPDIR");
	char path[4096];
	snprintf(path, sizeof path, "%s/diffuse-checkpoint-XXXXXX.cfg", tmpdir && *tmpdir ? tmpdir : P_tmpdir);
	int fd = mkstemps(path, 4);
	int rc = DF_OK;
	if (fd < 0) {
		rc = df_error_set(err, DF_EIO, "%s: cannot make a temporary file", path);
	} else {
		size_t len = strlen(text);
		if (write(fd, text, len) != (ssize_t)len)
			rc = df_error_set(err, DF_EIO, "%s: write error", path);
		close(fd);
		if (!rc)
			rc = df_pipeline_load(reg, path, options, pipeline, err);
		unlink(path);
	}
	df_safetensors_close(st);
	if (rc)
		return df_error_prefix(err, rc, "%s (its pipeline)", checkpoint);
	return DF_OK;
}
