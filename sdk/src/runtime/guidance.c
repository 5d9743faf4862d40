/* Classifier-free guidance, applied once by the runtime's denoiser so every
 * sampler has it: the conditional and the unconditional halves go through
 * the backbone in one batch and are combined here. */
#include "config.h"
#include <stdlib.h>
#include <string.h>
#include "stage_private.h"

void df_guidance_combine(const df_guidance *g, double t, const float *cond, const float *uncond, float *out,
                         int64_t n, int out_c, int pred_c, int64_t plane)
{
	int active = g->scale != 1.0 && t >= g->t_lo && t <= g->t_hi;
	int guided = g->channels > 0 && g->channels < pred_c ? g->channels : pred_c;
	float scale = (float)g->scale;
	for (int64_t i = 0; i < n; i++) {
		for (int c = 0; c < out_c; c++) {
			int64_t base = (i * out_c + c) * plane;
			if (active && c < guided) {
				for (int64_t j = 0; j < plane; j++) {
					float u = uncond[base + j];
					out[base + j] = u + scale * (cond[base + j] - u);
				}
			} else if (out != cond) {
				memcpy(out + base, cond + base, (size_t)plane * sizeof *out);
			}
		}
	}
}

void dfr_guidance_from_pipeline(const df_pipeline *p, df_guidance *g)
{
	const df_pipeline_section *sec = df_pipeline_get(p, "sample");
	df_sample_settings defaults;
	const df_sample_settings *s = sec ? sec->values : NULL;
	if (!s) {
		size_t size;
		const df_setting *decl = df_runtime_section("sample", &size);
		df_error ignored;
		df_settings_defaults(decl, &defaults, &ignored);
		s = &defaults;
	}
	g->scale = s->cfg_scale;
	g->t_lo = s->cfg_interval.n > 0 ? s->cfg_interval.v[0] : 0.0;
	g->t_hi = s->cfg_interval.n > 1 ? s->cfg_interval.v[1] : 1.0;
	g->channels = strcmp(s->guidance_channels, "first3") == 0 ? 3 : 0;
	if (!sec)
		df_settings_release(df_runtime_section("sample", NULL), &defaults);
}

/* ------------------------------------------------------------------ */
/* The denoiser samplers see. */

typedef struct guided {
	dfr_model *m;
	void *self;              /* backbone instance with the chosen weights */
	df_guidance guidance;
	const int32_t *y;        /* (n) labels or NULL */
	int64_t n;
	int32_t *y2;             /* (2n) labels then null labels */
	float *t2;               /* (2n) model times */
	float *both;             /* (2n, out_c, plane) outputs of the doubled batch */
	int64_t plane;
} guided;

static int guided_eval(void *ctx, df_graph *g, df_tensor *x, double t, df_tensor **out, df_error *err)
{
	guided *d = ctx;
	dfr_model *m = d->m;
	int active = d->y && d->guidance.scale != 1.0 && t >= d->guidance.t_lo && t <= d->guidance.t_hi;
	int64_t n = d->n, rows = active ? 2 * n : n;
	float model_t = (float)df_process_model_time(m->process, t);
	for (int64_t i = 0; i < rows; i++)
		d->t2[i] = model_t;
	df_tensor *xin = x;
	if (active) {
		df_tensor *halves[2] = {x, x};
		xin = df_concat(g, halves, 2, 0);
	}
	df_tensor *tt = df_tensor_from_host(g, d->t2, 1, (const int64_t[]){rows});
	df_backbone_input in = {
		.struct_size = sizeof in,
		.x = xin,
		.t = tt,
		.y = d->y ? (active ? d->y2 : d->y) : NULL,
	};
	int rc = df_graph_status(g, err);
	if (rc)
		return rc;
	df_tensor *o = NULL;
	rc = m->backbone->forward(d->self, g, &in, &o, err);
	if (rc)
		return df_error_prefix(err, rc, "backbone");
	if (!active) {
		*out = o;
		return DF_OK;
	}
	rc = df_tensor_read(o, d->both, err);
	if (rc)
		return rc;
	int out_c = m->shape.out_channels, pred_c = m->latent.channels;
	int64_t half = n * out_c * d->plane;
	df_guidance_combine(&d->guidance, t, d->both, d->both + half, d->both, n, out_c, pred_c, d->plane);
	*out = df_tensor_from_host(g, d->both, 4, (const int64_t[]){n, out_c, m->latent.height, m->latent.width});
	return df_graph_status(g, err);
}

int dfr_sample_batch(dfr_model *m, df_weight_set which, df_graph *g, float *x, const int32_t *y,
                     const int64_t *index, int64_t n, int64_t *nfe, df_error *err)
{
	if (!m->sampler)
		return df_error_set(err, DF_EINVAL, "%s: the pipeline has no sampler section", df_pipeline_file(m->pipeline));
	guided d = {.m = m, .y = y, .n = n};
	dfr_guidance_from_pipeline(m->pipeline, &d.guidance);
	d.plane = (int64_t)m->latent.height * m->latent.width;
	int rc = dfr_model_weights(m, which, &d.self, err);
	if (rc)
		return rc;
	d.y2 = malloc((size_t)(2 * n) * sizeof *d.y2);
	d.t2 = malloc((size_t)(2 * n) * sizeof *d.t2);
	d.both = malloc((size_t)(2 * n * m->shape.out_channels * d.plane) * sizeof *d.both);
	if (!d.y2 || !d.t2 || !d.both) {
		rc = df_error_set(err, DF_ENOMEM, "sampling: out of memory");
		goto done;
	}
	for (int64_t i = 0; y && i < n; i++) {
		d.y2[i] = y[i];
		d.y2[n + i] = m->data.num_classes; /* the null class */
	}
	df_graph_reset(g);
	df_tensor *xt = df_tensor_from_host(g, x, 4, (const int64_t[]){n, m->latent.channels, m->latent.height,
	                                                                m->latent.width});
	if ((rc = df_graph_status(g, err)))
		goto done;
	df_denoiser denoiser = {sizeof denoiser, guided_eval, &d};
	df_sample_job job = {sizeof job, xt, m->seed, index, 0};
	rc = m->sampler->sample(m->sampler_self, m->process, &denoiser, &job, err);
	if (rc) {
		df_error_prefix(err, rc, "sampler %s", m->sampler_name);
		goto done;
	}
	*nfe = job.nfe;
	rc = df_tensor_read(job.x, x, err);
done:
	free(d.y2);
	free(d.t2);
	free(d.both);
	return rc;
}
