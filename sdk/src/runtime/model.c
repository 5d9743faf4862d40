/* A pipeline's components opened together: what training, sampling and
 * forward passes start from. */
#include "config.h"
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "stage_private.h"
#include "../core.h"

const char *dfr_join(char *buf, size_t size, const char *dir, const char *name)
{
	snprintf(buf, size, "%s/%s", dir && *dir ? dir : ".", name);
	return buf;
}

double dfr_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static const df_pipeline_section *component_section(const df_pipeline *p, const char *name, int required,
                                                    df_error *err)
{
	const df_pipeline_section *sec = df_pipeline_get(p, name);
	if ((!sec || !sec->component) && required) {
		df_error_set(err, DF_EINVAL, "%s: the pipeline has no %s section", df_pipeline_file(p), name);
		return NULL;
	}
	return sec && sec->component ? sec : NULL;
}

/* "kind name: message" for errors coming from a component. */
static int blame(df_error *err, int rc, const df_pipeline_section *sec)
{
	return df_error_prefix(err, rc, "%s %s", sec->name, sec->component->component->name);
}

static int create_backbone(dfr_model *m, void **self, df_error *err)
{
	const df_pipeline_section *sec = df_pipeline_get(m->pipeline, "backbone");
	int rc = m->backbone->create(sec->values, m->ctx, &m->shape, self, err);
	return rc ? blame(err, rc, sec) : DF_OK;
}

/* Settings whose meaning spans two values are checked together. */
static int check_sample_section(const df_pipeline *p, df_error *err)
{
	const df_pipeline_section *sec = df_pipeline_get(p, "sample");
	if (!sec)
		return DF_OK;
	const df_list *iv = &((const df_sample_settings *)sec->values)->cfg_interval;
	if (iv->n != 2 || iv->v[0] > iv->v[1])
		return df_error_set(err, DF_EINVAL, "%s:%d: sample.cfg_interval: needs [lo, hi] with lo <= hi (t = 0 data, t = 1 noise)",
		                    sec->source.file ? sec->source.file : df_pipeline_file(p), sec->source.line);
	return DF_OK;
}

static int open_components(dfr_model *m, const df_pipeline *p, df_error *err)
{
	if (check_sample_section(p, err))
		return DF_EINVAL;
	const df_pipeline_section *ds = component_section(p, "dataset", 1, err);
	const df_pipeline_section *bb = component_section(p, "backbone", 1, err);
	const df_pipeline_section *ob = component_section(p, "objective", 1, err);
	if (!ds || !bb || !ob)
		return DF_EINVAL;
	m->dataset = ds->component->component->vtable;
	int rc = m->dataset->open(ds->values, &m->dataset_self, err);
	if (rc)
		return blame(err, rc, ds);
	m->dataset->info(m->dataset_self, &m->data);
	df_shape3 image = {m->data.channels, m->data.height, m->data.width};
	m->latent = image;
	const df_pipeline_section *en = component_section(p, "encoder", 0, err);
	if (en) {
		m->encoder = en->component->component->vtable;
		rc = m->encoder->create(en->values, m->ctx, image, &m->encoder_self, err);
		if (rc)
			return blame(err, rc, en);
		m->latent = m->encoder->latent_shape(m->encoder_self);
	}
	m->objective = ob->component->component->vtable;
	rc = m->objective->create(ob->values, m->ctx, &m->objective_self, err);
	if (rc)
		return blame(err, rc, ob);
	m->process = m->objective->process(m->objective_self);
	m->shape.input = m->latent;
	m->shape.out_channels = m->objective->out_channels(m->objective_self, m->latent.channels);
	m->shape.num_classes = m->data.num_classes;
	/* A conditional model always keeps the null row, as the official
	 * checkpoints do, so guidance is possible whatever the dropout. */
	m->shape.null_class = m->data.num_classes > 0;
	m->backbone = bb->component->component->vtable;
	rc = create_backbone(m, &m->backbone_self, err);
	if (rc)
		return rc;
	m->params = m->backbone->params(m->backbone_self);
	m->numel = df_params_numel(m->params);
	rc = m->backbone->init(m->backbone_self, m->seed, err);
	if (rc)
		return blame(err, rc, bb);
	const df_pipeline_section *sa = component_section(p, "sampler", 0, err);
	if (sa) {
		m->sampler = sa->component->component->vtable;
		m->sampler_name = sa->component->component->name;
		rc = m->sampler->create(sa->values, m->ctx, &m->sampler_self, err);
		if (!rc)
			rc = m->sampler->check(m->sampler_self, m->process, err);
		if (rc)
			return df_error_prefix(err, rc, "sampler %s on objective %s", m->sampler_name,
			                       ob->component->component->name);
	}
	return DF_OK;
}

int dfr_model_open(dfr_model *m, const df_pipeline *p, df_error *err)
{
	memset(m, 0, sizeof *m);
	m->pipeline = p;
	const df_pipeline_settings *top = df_pipeline_top(p);
	m->seed = (uint64_t)top->seed;
	int rc = df_ctx_create(&m->ctx, top->device, (int)top->threads, err);
	if (!rc)
		rc = open_components(m, p, err);
	if (rc)
		dfr_model_close(m);
	return rc;
}

void dfr_model_close(dfr_model *m)
{
	if (m->sampler_self)
		m->sampler->destroy(m->sampler_self);
	if (m->eval_self)
		m->backbone->destroy(m->eval_self);
	if (m->backbone_self)
		m->backbone->destroy(m->backbone_self);
	if (m->objective_self)
		m->objective->destroy(m->objective_self);
	if (m->encoder_self)
		m->encoder->destroy(m->encoder_self);
	if (m->dataset_self)
		m->dataset->close(m->dataset_self);
	if (m->ctx)
		dfr_model_free(m, m->ema);
	df_ctx_destroy(m->ctx);
	memset(m, 0, sizeof *m);
}

/* ------------------------------------------------------------------ */
/* Parameter-sized memory on the model's device: the stages reach the
 * block, the EMA set and their host copies only through these. */

int dfr_model_host_memory(const dfr_model *m)
{
	return strcmp(df_ctx_device(m->ctx), "cpu") == 0;
}

float *dfr_model_alloc(dfr_model *m, int64_t n)
{
	const df_backend *be = &m->ctx->backend;
	return be->alloc(be, (size_t)(n > 0 ? n : 1) * sizeof(float));
}

void dfr_model_free(dfr_model *m, float *device)
{
	if (device)
		m->ctx->backend.free(&m->ctx->backend, device);
}

void dfr_model_to_host(dfr_model *m, float *host, const float *device, int64_t n)
{
	const df_backend *be = &m->ctx->backend;
	be->to_host(be, host, device, (size_t)n * sizeof *host);
}

void dfr_model_to_device(dfr_model *m, float *device, const float *host, int64_t n)
{
	const df_backend *be = &m->ctx->backend;
	be->to_device(be, device, host, (size_t)n * sizeof *host);
}

void dfr_model_scale(dfr_model *m, float *device, int64_t n, float scale)
{
	if (dfr_model_host_memory(m)) {
		for (int64_t i = 0; i < n; i++)
			device[i] *= scale;
		return;
	}
	const df_backend *be = &m->ctx->backend;
	be->affine_forward(be, device, device, scale, 0.0f, n);
}

int dfr_model_ensure_ema(dfr_model *m, df_error *err)
{
	if (m->ema)
		return DF_OK;
	m->ema = dfr_model_alloc(m, m->numel);
	if (!m->ema)
		return df_error_set(err, DF_ENOMEM, "EMA set: out of memory");
	/* The EMA set is laid out as the block (trainable tensors first), not
	 * in registration order as df_params_read copies. */
	const df_backend *be = &m->ctx->backend;
	be->copy(be, m->ema, df_params_block(m->params, DF_PARAMS_VALUES), (size_t)m->numel * sizeof *m->ema);
	return DF_OK;
}

void dfr_model_ema_update(dfr_model *m, float decay)
{
	dfi_ema_update(&m->ctx->backend, m->ema, df_params_block(m->params, DF_PARAMS_VALUES),
	               df_params_trainable_numel(m->params), decay);
}

int dfr_model_weights(dfr_model *m, df_weight_set which, void **self, df_error *err)
{
	if (which == DF_WEIGHTS_RAW || !m->ema) {
		*self = m->backbone_self;
		return DF_OK;
	}
	if (!m->eval_self) {
		int rc = create_backbone(m, &m->eval_self, err);
		/* init too: a backbone may keep state besides its parameters */
		if (!rc)
			rc = m->backbone->init(m->eval_self, m->seed, err);
		if (rc)
			return rc;
		m->eval_params = m->backbone->params(m->eval_self);
	}
	*self = m->eval_self;
	const df_backend *be = &m->ctx->backend;
	be->copy(be, df_params_block(m->eval_params, DF_PARAMS_VALUES), m->ema, (size_t)m->numel * sizeof *m->ema);
	return DF_OK;
}

int df_pipeline_check_sampler(const df_pipeline *p, df_error *err)
{
	if (check_sample_section(p, err))
		return DF_EINVAL;
	const df_pipeline_section *ob = component_section(p, "objective", 0, err);
	const df_pipeline_section *sa = component_section(p, "sampler", 0, err);
	if (!ob || !sa)
		return DF_OK;
	const df_pipeline_settings *top = df_pipeline_top(p);
	const df_objective_vtable *objective = ob->component->component->vtable;
	const df_sampler_vtable *sampler = sa->component->component->vtable;
	df_ctx *ctx = NULL;
	void *objective_self = NULL, *sampler_self = NULL;
	int rc = df_ctx_create(&ctx, top->device, (int)top->threads, err);
	if (!rc && (rc = objective->create(ob->values, ctx, &objective_self, err)))
		blame(err, rc, ob);
	if (!rc && !(rc = sampler->create(sa->values, ctx, &sampler_self, err)))
		rc = sampler->check(sampler_self, objective->process(objective_self), err);
	if (rc && objective_self)
		df_error_prefix(err, rc, "%s:%d: sampler %s on objective %s", df_pipeline_file(p), sa->source.line,
		                sa->component->component->name, ob->component->component->name);
	if (sampler_self)
		sampler->destroy(sampler_self);
	if (objective_self)
		objective->destroy(objective_self);
	df_ctx_destroy(ctx);
	return rc;
}
