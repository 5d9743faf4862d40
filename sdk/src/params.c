/* Parameter blocks: one allocation holds values | grads | m | v, each part
 * laid out the same way, trainable tensors first and frozen ones after, so
 * the optimiser updates one contiguous prefix of every part. */
#include "config.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "core.h"

struct df_params {
	df_ctx *ctx;
	struct dfi_tensor **tensors; /* registration order */
	size_t count, cap;
	int64_t *offset;             /* element offset of each tensor in a part */
	int64_t numel, trainable;
	float *block;                /* 4 * numel floats */
	int status;
	char msg[256];
};

df_params *df_params_create(df_ctx *ctx)
{
	if (!ctx)
		return NULL;
	df_params *p = calloc(1, sizeof *p);
	if (p)
		p->ctx = ctx;
	return p;
}

void df_params_destroy(df_params *p)
{
	if (!p)
		return;
	for (size_t i = 0; i < p->count; i++) {
		free((char *)p->tensors[i]->t.name);
		free(p->tensors[i]);
	}
	free(p->tensors);
	free(p->offset);
	if (p->block)
		p->ctx->backend.free(&p->ctx->backend, p->block);
	free(p);
}

static df_tensor *params_fail(df_params *p, int status, const char *name, const char *why)
{
	if (!p->status) {
		p->status = status;
		snprintf(p->msg, sizeof p->msg, "parameter %s: %s", name ? name : "(null)", why);
	}
	return NULL;
}

df_tensor *df_params_add(df_params *p, const char *name, int ndim, const int64_t *shape, uint32_t flags)
{
	if (!p)
		return NULL;
	if (p->block)
		return params_fail(p, DF_EINVAL, name, "added after df_params_finalize");
	if (!name || !*name)
		return params_fail(p, DF_EINVAL, name, "empty name");
	if (ndim < 1 || ndim > DF_MAX_DIMS || !shape)
		return params_fail(p, DF_EINVAL, name, "bad number of dims");
	for (int i = 0; i < ndim; i++)
		if (shape[i] <= 0)
			return params_fail(p, DF_EINVAL, name, "a dim is not positive");
	if (df_params_find(p, name))
		return params_fail(p, DF_EINVAL, name, "registered twice");
	if (p->count == p->cap) {
		size_t cap = p->cap ? 2 * p->cap : 64;
		void *grown = realloc(p->tensors, cap * sizeof *p->tensors);
		if (!grown)
			return params_fail(p, DF_ENOMEM, name, "out of memory");
		p->tensors = grown;
		p->cap = cap;
	}
	struct dfi_tensor *it = calloc(1, sizeof *it);
	char *copy = strdup(name);
	if (!it || !copy) {
		free(it);
		free(copy);
		return params_fail(p, DF_ENOMEM, name, "out of memory");
	}
	it->t.ndim = ndim;
	memcpy(it->t.shape, shape, (size_t)ndim * sizeof *shape);
	it->t.numel = dfi_numel(ndim, shape);
	it->t.backend = &p->ctx->backend;
	it->t.name = copy;
	it->t.flags = DF_TENSOR_PARAM;
	if (flags & DF_TENSOR_FROZEN)
		it->t.flags |= DF_TENSOR_FROZEN;
	else
		it->t.flags |= DF_TENSOR_NEEDS_GRAD;
	p->tensors[p->count++] = it;
	return &it->t;
}

int df_params_finalize(df_params *p, df_error *err)
{
	if (!p)
		return df_error_set(err, DF_EINVAL, "df_params_finalize: NULL");
	if (p->status)
		return df_error_set(err, p->status, "%s", p->msg);
	if (p->block)
		return df_error_set(err, DF_EINVAL, "df_params_finalize: called twice");
	p->offset = calloc(p->count ? p->count : 1, sizeof *p->offset);
	if (!p->offset)
		return df_error_set(err, DF_ENOMEM, "parameters: out of memory");
	int64_t at = 0;
	for (int frozen_pass = 0; frozen_pass < 2; frozen_pass++) {
		for (size_t i = 0; i < p->count; i++) {
			int frozen = (p->tensors[i]->t.flags & DF_TENSOR_FROZEN) != 0;
			if (frozen != frozen_pass)
				continue;
			p->offset[i] = at;
			at += p->tensors[i]->t.numel;
		}
		if (!frozen_pass)
			p->trainable = at;
	}
	p->numel = at;
	const df_backend *be = &p->ctx->backend;
	size_t bytes = 4 * (size_t)(at ? at : 1) * sizeof(float);
	p->block = be->alloc(be, bytes);
	if (!p->block)
		return df_error_set(err, DF_ENOMEM, "parameters: cannot allocate %zu bytes", bytes);
	be->zero(be, p->block, bytes);
	for (size_t i = 0; i < p->count; i++) {
		df_tensor *t = &p->tensors[i]->t;
		t->data = p->block + p->offset[i];
		t->grad = (t->flags & DF_TENSOR_FROZEN) ? NULL : p->block + p->numel + p->offset[i];
	}
	return DF_OK;
}

size_t df_params_count(const df_params *p)
{
	return p ? p->count : 0;
}

df_tensor *df_params_at(df_params *p, size_t i)
{
	return p && i < p->count ? &p->tensors[i]->t : NULL;
}

df_tensor *df_params_find(df_params *p, const char *name)
{
	if (!p || !name)
		return NULL;
	for (size_t i = 0; i < p->count; i++)
		if (strcmp(p->tensors[i]->t.name, name) == 0)
			return &p->tensors[i]->t;
	return NULL;
}

int64_t df_params_numel(const df_params *p)
{
	if (!p)
		return 0;
	if (p->block)
		return p->numel;
	int64_t n = 0;
	for (size_t i = 0; i < p->count; i++)
		n += p->tensors[i]->t.numel;
	return n;
}

int64_t df_params_trainable_numel(const df_params *p)
{
	return p && p->block ? p->trainable : 0;
}

float *df_params_block(df_params *p, enum df_params_part part)
{
	if (!p || !p->block || (int)part < 0 || part > DF_PARAMS_V)
		return NULL;
	return p->block + (size_t)part * (size_t)p->numel;
}

int64_t df_params_offset(const df_params *p, size_t i)
{
	return p && p->block && i < p->count ? p->offset[i] : -1;
}

void df_params_zero_grad(df_params *p)
{
	if (!p || !p->block)
		return;
	const df_backend *be = &p->ctx->backend;
	be->zero(be, p->block + p->numel, (size_t)p->numel * sizeof(float));
}

/* Host copies in registration order (the block itself puts frozen last). */
static int params_copy(const df_params *p, float *host, const float *from_host, const char *what, df_error *err)
{
	if (!p || (!host && !from_host))
		return df_error_set(err, DF_EINVAL, "%s: NULL argument", what);
	if (!p->block)
		return df_error_set(err, DF_EINVAL, "%s: parameters not finalized", what);
	const df_backend *be = &p->ctx->backend;
	int64_t at = 0;
	for (size_t i = 0; i < p->count; i++) {
		size_t bytes = (size_t)p->tensors[i]->t.numel * sizeof(float);
		if (host)
			be->to_host(be, host + at, p->block + p->offset[i], bytes);
		else
			be->to_device(be, p->block + p->offset[i], from_host + at, bytes);
		at += p->tensors[i]->t.numel;
	}
	return DF_OK;
}

int df_params_read(const df_params *p, float *values, df_error *err)
{
	return params_copy(p, values, NULL, "df_params_read", err);
}

int df_params_write(df_params *p, const float *values, df_error *err)
{
	return params_copy(p, NULL, values, "df_params_write", err);
}
