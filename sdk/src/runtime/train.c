/* The training stage: shuffled epochs, class dropout, the objective's loss,
 * AdamW with clipping and a learning-rate schedule, an EMA set of its own,
 * checkpoints that resume bit for bit, a JSON-lines log and sample grids.
 *
 * Everything random is a pure function of the seed and the step (data
 * order, label dropout, the objective's noise), so a run stopped at step k
 * and resumed from its checkpoint takes exactly the steps an uninterrupted
 * run takes.
 *
 * Data parallel (dist.h): every rank runs this loop on its shard of each
 * global batch, in micro-batches, and the gradients are averaged across
 * the ranks before the identical optimiser and EMA steps; rank 0 alone
 * writes. Noise is keyed by the global sample index, so the ranks draw
 * what one process would. */
#include "config.h"
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include "stage_private.h"

typedef struct trainer {
	dfr_model m;
	const df_train_settings *ts;
	const df_stage_options *o;
	int64_t batch;  /* the global batch of a step */
	int64_t micro;  /* images of one forward/backward pass */
	int64_t passes; /* passes per rank and step */
	int rank, ranks;
	int deterministic; /* sum every pass's gradient in global order */
	int stop_all;      /* a rank was asked to stop: all stop after this step */
	int64_t image_dim;
	/* per-step host buffers, allocated once */
	float *images;   /* one micro-batch */
	int32_t *labels; /* one micro-batch */
	int64_t *index;  /* the whole global batch */
	float *t_drawn, *loss_each; /* the whole global batch (gathered for the log) */
	float *pass_grads; /* deterministic: every pass's gradient, global order */
	/* data order of two consecutive epochs (a batch may straddle them) */
	uint32_t *perm[2];
	int64_t perm_epoch[2];
	df_graph *graph;
	FILE *log;
	char checkpoint[4096];
	int64_t saved_step; /* -1: no checkpoint written or found */
	df_dataset_access access; /* for objectives that read beyond the batch */
	df_objective_timer *objective_timer; /* NULL: the objective times nothing itself */
} trainer;

static void say(const trainer *tr, const char *fmt, ...) DF_PRINTF(2, 3);
static void say(const trainer *tr, const char *fmt, ...)
{
	if (!tr->o->message || tr->rank != 0)
		return;
	char line[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(line, sizeof line, fmt, ap);
	va_end(ap);
	tr->o->message(tr->o->ctx, line);
}

/* ------------------------------------------------------------------ */
/* Data. */

static const uint32_t *epoch_order(trainer *tr, int64_t epoch)
{
	for (int k = 0; k < 2; k++)
		if (tr->perm_epoch[k] == epoch)
			return tr->perm[k];
	int slot = (int)(epoch & 1);
	df_rng_permutation(tr->perm[slot], (size_t)tr->m.data.count, tr->m.seed, DFR_STREAM_DATA_ORDER,
	                   (uint64_t)epoch);
	tr->perm_epoch[slot] = epoch;
	return tr->perm[slot];
}

/* The dataset items of step `step`: positions step*B .. step*B+B-1 of the
 * endless sequence of shuffled epochs. */
static void batch_indices(trainer *tr, int64_t step)
{
	int64_t count = tr->m.data.count;
	for (int64_t i = 0; i < tr->batch; i++) {
		int64_t pos = step * tr->batch + i;
		tr->index[i] = epoch_order(tr, pos / count)[pos % count];
	}
}

/* Labels become the null class with probability class_dropout, keyed by
 * (seed, sample index, step). */
static void drop_labels(trainer *tr, int64_t step, const int64_t *index)
{
	if (tr->m.data.num_classes <= 0)
		return;
	for (int64_t i = 0; i < tr->micro; i++)
		if (df_rng_uniform(tr->m.seed, DFR_STREAM_LABEL_DROP, (uint64_t)step, (uint64_t)index[i]) <
		    tr->ts->class_dropout)
			tr->labels[i] = tr->m.data.num_classes;
}

/* ------------------------------------------------------------------ */
/* The model as the objective calls it. */

static int call_backbone(void *ctx, df_graph *g, df_tensor *x_t, df_tensor *t, int hidden_block, df_tensor **hidden,
                         df_tensor **out, df_error *err)
{
	trainer *tr = ctx;
	df_backbone_input in = {
		.struct_size = sizeof in,
		.x = x_t,
		.t = t,
		.y = tr->m.data.num_classes > 0 ? tr->labels : NULL,
		.hidden_block = hidden_block,
		.hidden = hidden,
	};
	int rc = tr->m.backbone->forward(tr->m.backbone_self, g, &in, out, err);
	return rc ? df_error_prefix(err, rc, "backbone") : DF_OK;
}

/* The backbone without labels, for an objective learning its shapes. */
static int probe_backbone(void *ctx, df_graph *g, df_tensor *x_t, df_tensor *t, int hidden_block, df_tensor **hidden,
                          df_tensor **out, df_error *err)
{
	dfr_model *m = ctx;
	df_backbone_input in = {sizeof in, x_t, t, NULL, NULL, hidden_block, hidden};
	int rc = m->backbone->forward(m->backbone_self, g, &in, out, err);
	return rc ? df_error_prefix(err, rc, "backbone") : DF_OK;
}

/* ------------------------------------------------------------------ */
/* Checks. */

static int numeric_failure(trainer *tr, int64_t step, const char *what, df_error *err)
{
	char last[4200];
	if (tr->saved_step >= 0)
		snprintf(last, sizeof last, "the last good checkpoint is %s (step %" PRId64 ")", tr->checkpoint,
		         tr->saved_step);
	else
		snprintf(last, sizeof last, "no checkpoint was written before it");
	return df_error_set(err, DF_ENUMERIC, "step %" PRId64 ": %s; training stopped, %s", step + 1, what, last);
}

/* Names the first parameter whose gradient is not finite (found on the
 * block's own device). */
static int bad_gradient(trainer *tr, int64_t step, double norm, df_error *err)
{
	char what[512];
	df_error found;
	if (df_params_check_finite(tr->m.params, DF_PARAMS_GRADS, &found) == DF_ENUMERIC)
		snprintf(what, sizeof what, "%s (gradient norm %g)", found.msg, norm);
	else
		snprintf(what, sizeof what, "gradient norm is %g", norm);
	return numeric_failure(tr, step, what, err);
}

/* ------------------------------------------------------------------ */
/* Log. */

typedef struct step_stats {
	double loss, grad_norm, lr;
	double t_data, t_forward, t_backward, t_reduce, t_optim;
	double t_objective; /* the objective's own timer, within t_forward */
} step_stats;

static void log_step(trainer *tr, int64_t step, const step_stats *s)
{
	/* Every rank gives its shard's draws; rank 0 logs the global batch. */
	size_t shard = (size_t)(tr->batch / tr->ranks);
	df_error ignored;
	if (df_dist_allgather_f32(tr->t_drawn + (size_t)tr->rank * shard, tr->t_drawn, shard, &ignored) ||
	    df_dist_allgather_f32(tr->loss_each + (size_t)tr->rank * shard, tr->loss_each, shard, &ignored))
		return;
	if (!tr->log)
		return;
	double sum[4] = {0}, count[4] = {0};
	for (int64_t i = 0; i < tr->batch; i++) {
		int q = (int)(tr->t_drawn[i] * 4.0);
		q = q < 0 ? 0 : q > 3 ? 3 : q;
		sum[q] += tr->loss_each[i];
		count[q] += 1;
	}
	json_t *quartiles = json_array();
	for (int q = 0; q < 4; q++)
		json_array_append_new(quartiles, count[q] > 0 ? json_real(sum[q] / count[q]) : json_null());
	double total = s->t_data + s->t_forward + s->t_backward + s->t_reduce + s->t_optim;
	json_t *line = json_pack("{s:I, s:f, s:o, s:f, s:f, s:f, s:{s:f, s:f, s:f, s:f, s:f}}", "step",
	                         (json_int_t)step, "loss", s->loss, "loss_by_t_quartile", quartiles, "grad_norm",
	                         s->grad_norm, "lr", s->lr, "images_per_s", total > 0 ? (double)tr->batch / total : 0.0,
	                         "time_s", "data", s->t_data, "forward", s->t_forward, "backward", s->t_backward,
	                         "reduce", s->t_reduce, "optimiser", s->t_optim);
	if (line && tr->objective_timer && tr->objective_timer->name)
		json_object_set_new(json_object_get(line, "time_s"), tr->objective_timer->name,
		                    json_real(s->t_objective));
	if (line) {
		json_dumpf(line, tr->log, JSON_COMPACT);
		fputc('\n', tr->log);
		fflush(tr->log);
		json_decref(line);
	}
}

/* ------------------------------------------------------------------ */
/* One step. */

/* One forward and backward pass over the micro-batch at global batch
 * position `first`; its gradient is added to the gradient block. */
static int train_pass(trainer *tr, int64_t step, int64_t first, step_stats *s, df_error *err)
{
	dfr_model *m = &tr->m;
	const int64_t *index = tr->index + first;
	double t0 = dfr_now();
	int rc = m->dataset->fetch(m->dataset_self, index, tr->micro, tr->images, tr->labels, err);
	if (rc)
		return df_error_prefix(err, rc, "dataset");
	drop_labels(tr, step, index);
	df_graph *g = tr->graph;
	df_graph_reset(g);
	df_tensor *images = df_tensor_from_host(g, tr->images, 4, (const int64_t[]){tr->micro, m->data.channels,
	                                                                           m->data.height, m->data.width});
	df_tensor *x0 = images;
	if ((rc = df_graph_status(g, err)))
		return rc;
	const df_encoder_noise_key *noise_key =
		m->encoder && m->encoder->extension ? m->encoder->extension(m->encoder_self, DF_ENCODER_NOISE_KEY) : NULL;
	if (noise_key && noise_key->struct_size >= sizeof *noise_key)
		noise_key->key(m->encoder_self, (uint64_t)step, index, tr->micro);
	if (m->encoder && (rc = m->encoder->encode(m->encoder_self, g, images, &x0, err)))
		return df_error_prefix(err, rc, "encoder");
	double t1 = dfr_now();
	df_loss_batch batch = {
		.struct_size = sizeof batch,
		.x0 = x0,
		.y = m->data.num_classes > 0 ? tr->labels : NULL,
		.seed = m->seed,
		.step = (uint64_t)step,
		.index = index,
		.images = images,
		.t_out = tr->t_drawn + first,
		.loss_out = tr->loss_each + first,
	};
	df_model_call call = {sizeof call, call_backbone, tr};
	df_tensor *loss = NULL;
	if ((rc = m->objective->loss(m->objective_self, g, &batch, &call, &loss, err)))
		return df_error_prefix(err, rc, "objective");
	float value = 0;
	if ((rc = df_graph_status(g, err)) || (rc = df_tensor_read(loss, &value, err)))
		return rc;
	s->loss += value;
	if (!isfinite(value)) {
		char what[64];
		snprintf(what, sizeof what, "the loss is %g", (double)value);
		if (tr->ranks > 1)
			snprintf(what + strlen(what), sizeof what - strlen(what), " on rank %d", tr->rank);
		return numeric_failure(tr, step, what, err);
	}
	double t2 = dfr_now();
	if ((rc = df_backward(g, loss, err)))
		return rc;
	s->t_data += t1 - t0;
	s->t_forward += t2 - t1;
	s->t_backward += dfr_now() - t2;
	return DF_OK;
}

/* The step's gradient: the mean over every pass of every rank. Mean mode
 * accumulates the rank's passes in the block and sums the ranks with one
 * allreduce; deterministic mode gathers every pass's gradient and sums
 * them in global order, the grouping one process uses too. The loss and
 * the stop requests travel in one small reduction beside it. */
static int reduce_gradients(trainer *tr, step_stats *s, df_error *err)
{
	dfr_model *m = &tr->m;
	size_t n = (size_t)df_params_trainable_numel(m->params);
	float *grads = df_params_block(m->params, DF_PARAMS_GRADS);
	int64_t total = tr->passes * tr->ranks;
	int rc;
	if (tr->deterministic) {
		/* On the host, whatever the device: the order is the point. */
		size_t mine = (size_t)tr->passes * n;
		if ((rc = df_dist_allgather_f32(tr->pass_grads + (size_t)tr->rank * mine, tr->pass_grads, mine, err)))
			return rc;
		float *sum = tr->pass_grads;
		for (int64_t k = 1; k < total; k++) {
			const float *g = tr->pass_grads + (size_t)k * n;
			for (size_t i = 0; i < n; i++)
				sum[i] += g[i];
		}
		dfr_model_to_device(m, grads, sum, (int64_t)n);
	} else if (dfr_model_host_memory(m)) {
		if ((rc = df_dist_allreduce_sum_f32(grads, n, err)))
			return rc;
	} else if ((rc = df_dist_allreduce_sum_device_f32(grads, n, err))) {
		return rc;
	}
	if (total > 1)
		dfr_model_scale(m, grads, (int64_t)n, 1.0f / (float)total);
	double small[2] = {s->loss, tr->o->stop && *tr->o->stop ? 1.0 : 0.0};
	if ((rc = df_dist_allreduce_sum_f64(small, 2, err)))
		return rc;
	s->loss = small[0] / (double)total;
	tr->stop_all = small[1] > 0;
	return DF_OK;
}

/* The gradient norm of the backbone's and the objective's blocks as one
 * vector, both clipped by one factor; the backbone's alone as before when
 * the objective has no weights. */
static int clip_gradients(dfr_model *m, double max_norm, double *norm, df_error *err)
{
	df_params *op = m->objective_params;
	if (!op)
		return df_params_clip_grad_norm(m->params, max_norm, norm, err);
	double a = 0, b = 0;
	int rc = df_params_clip_grad_norm(m->params, 0, &a, err);
	if (!rc)
		rc = df_params_clip_grad_norm(op, 0, &b, err);
	if (rc)
		return rc;
	*norm = sqrt(a * a + b * b);
	if (max_norm > 0.0 && isfinite(*norm) && *norm > max_norm) {
		const float scale = (float)(max_norm / (*norm + 1e-6));
		dfr_model_scale(m, df_params_block(m->params, DF_PARAMS_GRADS), df_params_trainable_numel(m->params), scale);
		dfr_model_scale(m, df_params_block(op, DF_PARAMS_GRADS), df_params_trainable_numel(op), scale);
	}
	return DF_OK;
}

/* The objective's gradient: accumulated over the passes in its block,
 * summed over the ranks, averaged like the backbone's (its weights live
 * in host memory: attach_model refuses other devices). */
static int reduce_objective_gradients(trainer *tr, df_error *err)
{
	df_params *p = tr->m.objective_params;
	size_t n = p ? (size_t)df_params_trainable_numel(p) : 0;
	if (n == 0)
		return DF_OK;
	float *grads = df_params_block(p, DF_PARAMS_GRADS);
	int rc = df_dist_allreduce_sum_f32(grads, n, err);
	int64_t total = tr->passes * tr->ranks;
	if (!rc && total > 1)
		dfr_model_scale(&tr->m, grads, (int64_t)n, 1.0f / (float)total);
	return rc;
}

static int train_step(trainer *tr, int64_t step, step_stats *s, df_error *err)
{
	dfr_model *m = &tr->m;
	const df_train_settings *ts = tr->ts;
	int rc;
	batch_indices(tr, step);
	s->loss = s->t_data = s->t_forward = s->t_backward = 0;
	if (tr->objective_timer)
		tr->objective_timer->seconds = 0;
	df_params_zero_grad(m->params);
	if (m->objective_params)
		df_params_zero_grad(m->objective_params);
	int64_t n = df_params_trainable_numel(m->params);
	const float *grads = df_params_block(m->params, DF_PARAMS_GRADS);
	for (int64_t j = 0; j < tr->passes; j++) {
		int64_t pass = tr->rank * tr->passes + j;
		if (tr->deterministic && j > 0)
			df_params_zero_grad(m->params);
		if ((rc = train_pass(tr, step, pass * tr->micro, s, err)))
			return rc;
		if (tr->deterministic)
			dfr_model_to_host(m, tr->pass_grads + (size_t)(pass * n), grads, n);
	}
	s->t_objective = tr->objective_timer ? tr->objective_timer->seconds : 0;
	double t3 = dfr_now();
	if ((rc = reduce_gradients(tr, s, err)) || (rc = reduce_objective_gradients(tr, err)))
		return rc;
	s->t_reduce = dfr_now() - t3;
	t3 += s->t_reduce;
	if ((rc = clip_gradients(m, ts->grad_clip, &s->grad_norm, err)))
		return rc;
	if (!isfinite(s->grad_norm))
		return bad_gradient(tr, step, s->grad_norm, err);
	df_lr_schedule schedule = {
		.base_lr = ts->lr,
		.warmup_steps = ts->warmup,
		.decay = strcmp(ts->lr_schedule, "cosine") == 0 ? DF_LR_COSINE : DF_LR_CONSTANT,
		.total_steps = ts->steps,
		.min_lr = ts->min_lr,
	};
	s->lr = df_lr_at(&schedule, step);
	df_adamw_config adam = df_adamw_defaults();
	adam.lr = s->lr;
	adam.weight_decay = ts->weight_decay;
	if ((rc = df_params_adamw_step(m->params, &adam, step + 1, err)) ||
	    (m->objective_params && (rc = df_params_adamw_step(m->objective_params, &adam, step + 1, err))))
		return df_error_prefix(err, rc, "step %" PRId64, step + 1);
	m->have_opt = 1;
	if (m->ema) {
		dfr_model_ema_update(m, df_ema_decay_at((float)ts->ema, m->ema_step, ts->ema_warmup));
		m->ema_step++;
	}
	m->step = step + 1;
	s->t_optim = dfr_now() - t3;
	return DF_OK;
}

/* ------------------------------------------------------------------ */

static int save(trainer *tr, df_error *err)
{
	/* Every rank holds the same state: rank 0 writes it. */
	int rc = tr->rank == 0 ? dfr_checkpoint_save(&tr->m, tr->checkpoint, err) : DF_OK;
	if (!rc)
		tr->saved_step = tr->m.step;
	if (!rc && tr->rank == 0)
		dfr_tell_checkpoint(tr->o, tr->checkpoint, tr->m.step);
	return rc;
}

/* A grid of EMA samples: samples-<step>.png along the way; at the end the
 * sample section's grid, so `diffuse run` need not sample it again. */
static int grid(trainer *tr, int final, df_error *err)
{
	const df_pipeline_section *sec = df_pipeline_get(tr->m.pipeline, "sample");
	const char *final_name = sec ? ((const df_sample_settings *)sec->values)->grid : "samples.png";
	if (!tr->m.sampler || (final && !*final_name) || tr->rank != 0)
		return DF_OK;
	char name[64], path[4096], summary[512];
	snprintf(name, sizeof name, "samples-%06" PRId64 ".png", tr->m.step);
	dfr_join(path, sizeof path, tr->o->run_dir, final ? final_name : name);
	int rc = dfr_write_class_grid(&tr->m, tr->m.ema ? DF_WEIGHTS_EMA : DF_WEIGHTS_RAW, path, summary, sizeof summary,
	                              tr->o, err);
	if (!rc)
		say(tr, "%s: %s", path, summary);
	return rc;
}

/* The global batch over the ranks, and each rank's shard over passes. */
static int split_batch(trainer *tr, const df_pipeline *p, df_error *err)
{
	const df_train_settings *ts = tr->ts;
	tr->rank = df_dist_rank();
	tr->ranks = df_dist_size();
	tr->deterministic = strcmp(ts->reduce, "deterministic") == 0;
	if (tr->batch % tr->ranks != 0)
		return df_error_set(err, DF_EINVAL,
		                    "%s: train.batch = %" PRId64 " does not divide across %d ranks: make it a multiple of %d",
		                    df_pipeline_file(p), tr->batch, tr->ranks, tr->ranks);
	int64_t shard = tr->batch / tr->ranks;
	tr->micro = ts->micro_batch > 0 ? ts->micro_batch : shard;
	if (shard % tr->micro != 0)
		return df_error_set(err, DF_EINVAL,
		                    "%s: train.micro_batch = %" PRId64 " does not divide a rank's %" PRId64
		                    " images (train.batch %" PRId64 " over %d ranks)",
		                    df_pipeline_file(p), tr->micro, shard, tr->batch, tr->ranks);
	tr->passes = shard / tr->micro;
	return DF_OK;
}

/* Items of the training set in model space, for objectives that read beyond
 * the batch: fetched and encoded in chunks on a graph of their own. */
static int fetch_encoded(void *ctx, const int64_t *indices, int64_t n, float *out, df_error *err)
{
	trainer *tr = ctx;
	dfr_model *m = &tr->m;
	const int64_t chunk = 256, dim = tr->access.dim;
	float *images = malloc((size_t)(chunk * tr->image_dim) * sizeof *images);
	int32_t *labels = malloc((size_t)chunk * sizeof *labels);
	df_graph *g = df_graph_create(m->ctx, 0);
	int rc = images && labels && g ? DF_OK : df_error_set(err, DF_ENOMEM, "dataset access: out of memory");
	for (int64_t at = 0; !rc && at < n; at += chunk) {
		int64_t k = n - at < chunk ? n - at : chunk;
		if ((rc = m->dataset->fetch(m->dataset_self, indices + at, k, images, labels, err)))
			break;
		if (!m->encoder) {
			memcpy(out + at * dim, images, (size_t)(k * dim) * sizeof *out);
			continue;
		}
		df_graph_reset(g);
		df_tensor *x = df_tensor_from_host(g, images, 4, (const int64_t[]){k, m->data.channels, m->data.height,
		                                                                   m->data.width});
		df_tensor *z = NULL;
		if (!(rc = df_graph_status(g, err)) && !(rc = m->encoder->encode(m->encoder_self, g, x, &z, err)))
			rc = df_tensor_read(z, out + at * dim, err);
	}
	df_graph_destroy(g);
	free(images);
	free(labels);
	return rc;
}

/* Lets an objective with weights of its own see the backbone and make
 * them (before a resume reads them back). */
static int attach_model(dfr_model *m, df_error *err)
{
	const df_objective_model_hook *hook =
		m->objective->extension ? m->objective->extension(m->objective_self, DF_OBJECTIVE_MODEL_ACCESS) : NULL;
	if (!hook || !m->objective->params)
		return DF_OK;
	if (!dfr_model_host_memory(m))
		return df_error_set(err, DF_ENOTSUP, "objective: weights of its own (REPA's projector) train on the cpu "
		                    "backend only for now");
	df_model_call probe = {sizeof probe, probe_backbone, m};
	df_shape3 image = {m->data.channels, m->data.height, m->data.width};
	int rc = hook->attach(m->objective_self, &probe, image, m->shape.input, m->seed, err);
	if (rc)
		return df_error_prefix(err, rc, "objective");
	m->objective_params = m->objective->params(m->objective_self);
	return DF_OK;
}

/* Hands the training set to an objective that asks for it. */
static int attach_dataset(trainer *tr, df_error *err)
{
	dfr_model *m = &tr->m;
	const df_objective_dataset_hook *hook =
		m->objective->extension ? m->objective->extension(m->objective_self, DF_OBJECTIVE_DATASET_ACCESS) : NULL;
	if (!hook)
		return DF_OK;
	const df_shape3 *s = m->encoder ? &m->latent : &(df_shape3){m->data.channels, m->data.height, m->data.width};
	tr->access = (df_dataset_access){sizeof tr->access, m->data.count, (int64_t)s->channels * s->height * s->width,
	                                 fetch_encoded, tr};
	int rc = hook->attach(m->objective_self, &tr->access, err);
	return rc ? df_error_prefix(err, rc, "objective") : DF_OK;
}

static int setup(trainer *tr, const df_pipeline *p, df_error *err)
{
	dfr_model *m = &tr->m;
	int rc;
	const df_pipeline_section *sec = df_pipeline_get(p, "train");
	if (!sec)
		return df_error_set(err, DF_EINVAL, "%s: the pipeline has no train section", df_pipeline_file(p));
	tr->ts = sec->values;
	tr->batch = tr->ts->batch;
	tr->saved_step = -1;
	if ((rc = split_batch(tr, p, err)))
		return rc;
	tr->perm_epoch[0] = tr->perm_epoch[1] = -1;
	if ((rc = dfr_model_open(m, p, err)) || (rc = attach_model(m, err)))
		return rc;
	if (m->data.count <= 0 || m->data.count > UINT32_MAX)
		return df_error_set(err, DF_EINVAL, "dataset: %" PRId64 " items cannot be trained on", m->data.count);
	dfr_join(tr->checkpoint, sizeof tr->checkpoint, tr->o->run_dir, "checkpoint.safetensors");
	struct stat st;
	int resumed = tr->o->resume && stat(tr->checkpoint, &st) == 0;
	if (resumed) {
		if ((rc = dfr_checkpoint_load(m, tr->checkpoint, 1, err)))
			return rc;
		tr->saved_step = m->step;
		if (tr->ts->ema <= 0 && m->ema) {
			dfr_model_free(m, m->ema);
			m->ema = NULL;
		}
		say(tr, "resuming %s at step %" PRId64 " (EMA step %" PRId64 ")", tr->checkpoint, m->step, m->ema_step);
	}
	if (tr->ts->ema > 0 && (rc = dfr_model_ensure_ema(m, err)))
		return rc;
	tr->image_dim = (int64_t)m->data.channels * m->data.height * m->data.width;
	tr->images = malloc((size_t)(tr->micro * tr->image_dim) * sizeof *tr->images);
	tr->labels = malloc((size_t)tr->micro * sizeof *tr->labels);
	tr->index = malloc((size_t)tr->batch * sizeof *tr->index);
	tr->t_drawn = calloc((size_t)tr->batch, sizeof *tr->t_drawn);
	tr->loss_each = calloc((size_t)tr->batch, sizeof *tr->loss_each);
	tr->perm[0] = malloc((size_t)m->data.count * sizeof *tr->perm[0]);
	tr->perm[1] = malloc((size_t)m->data.count * sizeof *tr->perm[1]);
	tr->graph = df_graph_create(m->ctx, 0);
	if (tr->deterministic)
		tr->pass_grads = malloc((size_t)(tr->passes * tr->ranks) *
		                        (size_t)df_params_trainable_numel(m->params) * sizeof *tr->pass_grads);
	if (!tr->images || !tr->labels || !tr->index || !tr->t_drawn || !tr->loss_each || !tr->perm[0] || !tr->perm[1] ||
	    !tr->graph || (tr->deterministic && !tr->pass_grads))
		return df_error_set(err, DF_ENOMEM, "training: out of memory");
	if ((rc = attach_dataset(tr, err)))
		return rc;
	df_objective_timer *timer =
		m->objective->extension ? m->objective->extension(m->objective_self, DF_OBJECTIVE_TIMER) : NULL;
	tr->objective_timer = timer && timer->struct_size >= sizeof *timer ? timer : NULL;
	if (tr->rank == 0) {
		char log_path[4096];
		dfr_join(log_path, sizeof log_path, tr->o->run_dir, "log.jsonl");
		tr->log = fopen(log_path, resumed ? "a" : "w");
		if (!tr->log)
			return df_error_set(err, DF_EIO, "%s: cannot write", log_path);
	}
	char ranks[96] = "";
	if (tr->ranks > 1 || tr->passes > 1)
		snprintf(ranks, sizeof ranks, " (%d rank%s x %" PRId64 " pass%s of %" PRId64 ", %s reduction)", tr->ranks,
		         tr->ranks > 1 ? "s" : "", tr->passes, tr->passes > 1 ? "es" : "", tr->micro, tr->ts->reduce);
	say(tr, "training %s: %" PRId64 " parameters, %" PRId64 " items, batch %" PRId64 "%s, %s",
	    df_pipeline_top(p)->name, df_params_trainable_numel(m->params), m->data.count, tr->batch, ranks,
	    df_ctx_describe(m->ctx));
	return DF_OK;
}

static void teardown(trainer *tr)
{
	if (tr->log)
		fclose(tr->log);
	df_graph_destroy(tr->graph);
	free(tr->images);
	free(tr->labels);
	free(tr->index);
	free(tr->t_drawn);
	free(tr->loss_each);
	free(tr->pass_grads);
	free(tr->perm[0]);
	free(tr->perm[1]);
	dfr_model_close(&tr->m);
}

int df_train_run(const df_pipeline *p, const df_stage_options *o, df_error *err)
{
	if (!o || o->struct_size < sizeof *o)
		return df_error_set(err, DF_EINVAL, "df_train_run: options->struct_size is too small");
	trainer tr;
	memset(&tr, 0, sizeof tr);
	tr.o = o;
	int rc = setup(&tr, p, err);
	if (rc) {
		teardown(&tr);
		return rc;
	}
	const df_train_settings *ts = tr.ts;
	int64_t done = 0;
	double start = dfr_now();
	step_stats s = {0};
	while (!rc && tr.m.step < ts->steps) {
		/* Ranks stop together: on a request any of them saw last step. */
		int stop = tr.ranks > 1 ? tr.stop_all : o->stop && *o->stop;
		if (stop || (o->max_steps > 0 && done >= o->max_steps))
			break;
		int64_t step = tr.m.step;
		rc = train_step(&tr, step, &s, err);
		if (rc)
			break;
		done++;
		if (tr.m.step % ts->log_every == 0 || tr.m.step == ts->steps)
			log_step(&tr, tr.m.step, &s);
		if (o->progress && tr.rank == 0) {
			double elapsed = dfr_now() - start;
			df_train_report r = {tr.m.step, ts->steps, s.loss, s.grad_norm, s.lr, 0, 0};
			r.steps_per_s = elapsed > 0 ? (double)done / elapsed : 0;
			r.eta_s = r.steps_per_s > 0 ? (double)(ts->steps - tr.m.step) / r.steps_per_s : 0;
			o->progress(o->ctx, &r);
		}
		if (ts->checkpoint_every > 0 && tr.m.step % ts->checkpoint_every == 0 && tr.m.step < ts->steps)
			rc = save(&tr, err);
		if (!rc && ts->sample_every > 0 && tr.m.step % ts->sample_every == 0 && tr.m.step < ts->steps)
			rc = grid(&tr, 0, err);
	}
	int interrupted = !rc && tr.m.step < ts->steps;
	/* Ranks that left the loop without error are in step with each other. */
	int in_step = !rc;
	if (!rc && (done > 0 || tr.saved_step < 0)) {
		rc = save(&tr, err);
		if (!rc)
			say(&tr, "%s: step %" PRId64 " of %" PRId64 "%s", tr.checkpoint, tr.m.step, ts->steps,
			    interrupted ? " (stopped early; run again to resume)" : "");
	}
	if (!rc && !interrupted)
		rc = grid(&tr, 1, err);
	/* Rank 0's last checkpoint and grid decide for all: a rank that went
	 * on to MPI_Finalize while rank 0 failed could hang its abort. */
	if (in_step)
		rc = df_dist_agree(rc, err);
	if (!rc && ((o->stop && *o->stop) || tr.stop_all) && interrupted)
		rc = df_error_set(err, DF_EINTR, "interrupted at step %" PRId64 "; %s saved, run again to resume",
		                  tr.m.step, tr.checkpoint);
	teardown(&tr);
	return rc;
}
