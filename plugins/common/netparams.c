/* Named parameters for the convolutional networks: registration, PyTorch's
 * default initialisation, loading by (converted) name. */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "diffuse/io.h"
#include "diffuse/rng.h"
#include "netparams.h"

int np_begin(np_builder *b, df_ctx *ctx)
{
	memset(b, 0, sizeof(*b));
	b->params = df_params_create(ctx);
	b->status = b->params ? DF_OK : DF_ENOMEM;
	return b->status;
}

df_tensor *np_add(np_builder *b, np_init_kind init, float bound, int ndim, const int64_t *shape, const char *fmt,
                  ...)
{
	char name[160];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(name, sizeof(name), fmt, ap);
	va_end(ap);
	if (b->status != DF_OK)
		return NULL;
	if (b->count == b->cap) {
		int cap = b->cap ? 2 * b->cap : 128;
		np_entry *grown = realloc(b->entries, (size_t)cap * sizeof(*grown));
		if (!grown) {
			b->status = DF_ENOMEM;
			snprintf(b->failed_name, sizeof(b->failed_name), "%s", name);
			return NULL;
		}
		b->entries = grown;
		b->cap = cap;
	}
	df_tensor *t = df_params_add(b->params, name, ndim, shape, 0);
	if (!t) {
		b->status = DF_EINVAL;
		snprintf(b->failed_name, sizeof(b->failed_name), "%s", name);
		return NULL;
	}
	b->entries[b->count++] = (np_entry){t, init, bound};
	return t;
}

void np_conv(np_builder *b, df_tensor **w, df_tensor **bias, int64_t cout, int64_t cin, int k, int kernel_dims,
             int zero, const char *prefix)
{
	float bound = (float)(1.0 / sqrt((double)cin * k * (kernel_dims == 2 ? k : 1)));
	np_init_kind init = zero ? NP_INIT_ZERO : NP_INIT_UNIFORM;
	if (kernel_dims == 2)
		*w = np_add(b, init, bound, DF_SHAPE(cout, cin, k, k), "%s.weight", prefix);
	else
		*w = np_add(b, init, bound, DF_SHAPE(cout, cin, k), "%s.weight", prefix);
	*bias = np_add(b, init, bound, DF_SHAPE(cout), "%s.bias", prefix);
}

void np_linear(np_builder *b, df_tensor **w, df_tensor **bias, int64_t out, int64_t in, int zero, const char *prefix)
{
	float bound = (float)(1.0 / sqrt((double)in));
	np_init_kind init = zero ? NP_INIT_ZERO : NP_INIT_UNIFORM;
	*w = np_add(b, init, bound, DF_SHAPE(out, in), "%s.weight", prefix);
	if (bias)
		*bias = np_add(b, init, bound, DF_SHAPE(out), "%s.bias", prefix);
}

void np_norm(np_builder *b, df_tensor **w, df_tensor **bias, int64_t channels, const char *prefix)
{
	*w = np_add(b, NP_INIT_ONE, 0, DF_SHAPE(channels), "%s.weight", prefix);
	*bias = np_add(b, NP_INIT_ZERO, 0, DF_SHAPE(channels), "%s.bias", prefix);
}

int np_finish(np_builder *b, const char *component, df_error *err)
{
	if (b->status != DF_OK) {
		int rc = b->status;
		np_release(b, 0);
		return df_error_set(err, rc, "%s: cannot register parameter %s", component,
		                    b->failed_name[0] ? b->failed_name : "(none)");
	}
	int rc = df_params_finalize(b->params, err);
	if (rc != DF_OK) {
		np_release(b, 0);
		return df_error_prefix(err, rc, "%s", component);
	}
	return DF_OK;
}

void np_release(np_builder *b, int keep_params)
{
	if (!keep_params) {
		df_params_destroy(b->params);
		b->params = NULL;
	}
	free(b->entries);
	b->entries = NULL;
	b->count = b->cap = 0;
}

int np_initialise(df_params *params, const np_entry *entries, int count, uint64_t seed, uint64_t stream_base,
                  const char *component, df_error *err)
{
	(void)params;
	int64_t largest = 1;
	for (int i = 0; i < count; i++)
		if (entries[i].tensor->numel > largest)
			largest = entries[i].tensor->numel;
	float *buf = malloc((size_t)largest * sizeof(float));
	if (!buf)
		return df_error_set(err, DF_ENOMEM, "%s: out of memory", component);
	int rc = DF_OK;
	for (int i = 0; i < count && rc == DF_OK; i++) {
		const np_entry *e = &entries[i];
		size_t n = (size_t)e->tensor->numel;
		switch (e->init) {
		case NP_INIT_ZERO:
			memset(buf, 0, n * sizeof(float));
			break;
		case NP_INIT_ONE:
			for (size_t k = 0; k < n; k++)
				buf[k] = 1.0f;
			break;
		case NP_INIT_UNIFORM:
			df_rng_fill_uniform(buf, n, seed, stream_base + (uint64_t)i, 0, 0);
			for (size_t k = 0; k < n; k++)
				buf[k] = e->bound * (2.0f * buf[k] - 1.0f);
			break;
		case NP_INIT_NORMAL:
			df_rng_fill_normal(buf, n, seed, stream_base + (uint64_t)i, 0, 0);
			break;
		}
		rc = df_tensor_write(e->tensor, buf, err);
	}
	free(buf);
	return rc == DF_OK ? DF_OK : df_error_prefix(err, rc, "%s: init", component);
}

/* ------------------------------------------------------------------ */
/* Loading. */

static void np_format_shape(char *buf, size_t size, int ndim, const int64_t *shape)
{
	size_t used = (size_t)snprintf(buf, size, "(");
	for (int d = 0; d < ndim && used < size; d++)
		used += (size_t)snprintf(buf + used, size - used, d ? ", %lld" : "%lld", (long long)shape[d]);
	if (used < size)
		snprintf(buf + used, size - used, ")");
}

/* Same shape, or the same shape up to trailing 1s (a Linear stored where
 * the model has a 1x1 convolution, or the reverse). */
static int np_shape_fits(const df_safetensors_tensor *st, const df_tensor *p)
{
	int nd = st->ndim > p->ndim ? st->ndim : p->ndim;
	for (int d = 0; d < nd; d++) {
		int64_t a = d < st->ndim ? st->shape[d] : 1, b = d < p->ndim ? p->shape[d] : 1;
		if (a != b)
			return 0;
	}
	return 1;
}

int np_load(df_params *params, const char *path, np_name_map map, void *map_ctx, const char *component,
            df_error *err)
{
	df_safetensors *file = NULL;
	int rc = df_safetensors_open(&file, path, err);
	if (rc != 0)
		return df_error_prefix(err, rc, "%s", component);
	size_t count = df_params_count(params), in_file = df_safetensors_count(file);
	const df_safetensors_tensor **source = calloc(count ? count : 1, sizeof(*source));
	float *buf = NULL;
	char name[256];
	if (!source)
		rc = df_error_set(err, DF_ENOMEM, "%s: out of memory", component);
	/* Every tensor of the file names a parameter of the model's shape. */
	for (size_t i = 0; i < in_file && rc == DF_OK; i++) {
		const df_safetensors_tensor *st = df_safetensors_tensor_at(file, i);
		if (map) {
			int mapped = map(map_ctx, st->name, name, sizeof(name));
			if (mapped < 0)
				continue;
			if (mapped == 0) {
				rc = df_error_set(err, DF_EINVAL, "%s: %s: %s is not a name this network knows", component,
				                  path, st->name);
				break;
			}
		} else {
			snprintf(name, sizeof(name), "%s", st->name);
		}
		df_tensor *p = df_params_find(params, name);
		if (!p) {
			rc = df_error_set(err, DF_EINVAL, "%s: %s: %s is not a parameter of this model (its settings differ)",
			                  component, path, st->name);
			break;
		}
		size_t at = 0;
		while (df_params_at(params, at) != p)
			at++;
		if (source[at]) {
			rc = df_error_set(err, DF_EINVAL, "%s: %s: %s and %s are the same parameter", component, path,
			                  source[at]->name, st->name);
			break;
		}
		if (!np_shape_fits(st, p)) {
			char file_shape[96], model_shape[96];
			np_format_shape(file_shape, sizeof(file_shape), st->ndim, st->shape);
			np_format_shape(model_shape, sizeof(model_shape), p->ndim, p->shape);
			rc = df_error_set(err, DF_EINVAL,
			                  "%s: %s: %s has shape %s in the file but %s in the model (the channel settings differ)",
			                  component, path, st->name, file_shape, model_shape);
			break;
		}
		source[at] = st;
	}
	for (size_t i = 0; i < count && rc == DF_OK; i++)
		if (!source[i])
			rc = df_error_set(err, DF_EINVAL, "%s: %s: %s is missing (the file's model is smaller)", component,
			                  path, df_params_at(params, i)->name);
	for (size_t i = 0; i < count && rc == DF_OK; i++) {
		df_tensor *p = df_params_at(params, i);
		float *grown = realloc(buf, source[i]->nelem * sizeof(float));
		if (!grown) {
			rc = df_error_set(err, DF_ENOMEM, "%s: out of memory", component);
			break;
		}
		buf = grown;
		rc = df_safetensors_read_f32(file, source[i], buf, source[i]->nelem, err);
		if (rc == 0)
			rc = df_tensor_write(p, buf, err);
	}
	free(buf);
	free(source);
	df_safetensors_close(file);
	return rc;
}

/* ------------------------------------------------------------------ */

float *np_scratch_get(np_scratch *s, int64_t count)
{
	if (count > s->cap) {
		float *grown = realloc(s->data, (size_t)count * sizeof(float));
		if (!grown)
			return NULL;
		s->data = grown;
		s->cap = count;
	}
	return s->data;
}

void np_scratch_free(np_scratch *s)
{
	free(s->data);
	s->data = NULL;
	s->cap = 0;
}

df_tensor *np_clamp(df_graph *g, df_tensor *x, float lo, float hi, np_scratch *s, df_error *err)
{
	if (!x)
		return NULL;
	float *host = np_scratch_get(s, 2 * x->numel);
	if (!host) {
		df_error_set(err, DF_ENOMEM, "clamp: out of memory");
		return NULL;
	}
	if (df_tensor_read(x, host, err) != DF_OK)
		return NULL;
	int64_t outside = 0;
	float *inside = host + x->numel;
	for (int64_t i = 0; i < x->numel; i++) {
		float v = host[i];
		inside[i] = v < lo || v > hi ? 0.0f : 1.0f;
		host[i] = v < lo ? lo : v > hi ? hi : 0.0f;
		outside += v < lo || v > hi;
	}
	if (outside == 0)
		return x;
	df_tensor *mask = df_tensor_from_host(g, inside, x->ndim, x->shape);
	df_tensor *fill = df_tensor_from_host(g, host, x->ndim, x->shape);
	return df_add(g, df_mul(g, x, mask), fill);
}

df_tensor *np_to_tokens(df_graph *g, df_tensor *x)
{
	if (!x)
		return NULL;
	int64_t n = x->shape[0], ch = x->shape[1], t = x->shape[2] * x->shape[3];
	return df_permute(g, df_reshape(g, x, DF_SHAPE(n, ch, t)), (const int[]){0, 2, 1});
}

df_tensor *np_from_tokens(df_graph *g, df_tensor *tokens, const df_tensor *like)
{
	if (!tokens || !like)
		return NULL;
	return df_reshape(g, df_permute(g, tokens, (const int[]){0, 2, 1}), like->ndim, like->shape);
}

df_tensor *np_as_linear(df_graph *g, df_tensor *w)
{
	return df_reshape(g, w, DF_SHAPE(w->shape[0], w->shape[1]));
}

df_tensor *np_abs(df_graph *g, df_tensor *x, np_scratch *s, df_error *err)
{
	if (!x)
		return NULL;
	float *host = np_scratch_get(s, x->numel);
	if (!host) {
		df_error_set(err, DF_ENOMEM, "abs: out of memory");
		return NULL;
	}
	if (df_tensor_read(x, host, err) != DF_OK)
		return NULL;
	for (int64_t i = 0; i < x->numel; i++)
		host[i] = host[i] > 0 ? 1.0f : host[i] < 0 ? -1.0f : 0.0f;
	return df_mul(g, x, df_tensor_from_host(g, host, x->ndim, x->shape));
}
