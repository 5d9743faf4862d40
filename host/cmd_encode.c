/* diffuse encode and diffuse autoencode: the encoder of a pipeline on its
 * own.
 *
 *   encode      runs the dataset through the encoder once and writes
 *               RUNS_DIR/<name>/latents.safetensors: "latents" as the model
 *               sees them (scaled), "labels", and, when the encoder has a
 *               posterior (vae), its unscaled "mean" and "logvar" and each
 *               image's "image_key", by which the vae's `cache` setting
 *               finds them again during training.
 *   autoencode  trains the encoder with its own loss (the "train-loss"
 *               extension) using the pipeline's train section (batch, lr,
 *               steps, weight_decay, grad_clip, log_every), writes the
 *               weights to RUNS_DIR/<name>/encoder.safetensors, then prints
 *               the reconstruction PSNR on the dataset's test split.
 *   diffuse eval of a pipeline with an encoder and no backbone (an
 *   autoencoder's own pipeline) prints that PSNR for given weights. */
#include "config.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>
#include "diffuse/diffuse.h"
#include "host.h"

typedef int (*posterior_fn)(void *self, df_graph *g, df_tensor *images, df_tensor **mean, df_tensor **logvar,
                            df_error *err);
typedef void (*image_keys_fn)(void *self, const float *images, int64_t n, int64_t image_numel, int64_t *keys);
typedef int (*train_loss_fn)(void *self, df_graph *g, df_tensor *images, uint64_t seed, uint64_t step,
                             df_tensor **loss, df_error *err);

#define ENCODE_BATCH 64
#define ENCODE_DATA_STREAM 0x656e636f6465ull

/* The pipeline's dataset, encoder and compute context, opened. */
typedef struct encode_parts {
	df_ctx *ctx;
	const df_dataset_vtable *dataset;
	void *dataset_self;
	df_dataset_info info;
	const df_encoder_vtable *encoder;
	void *encoder_self;
	const char *encoder_name;
	df_shape3 latent;
} encode_parts;

static void parts_close(encode_parts *e)
{
	if (e->encoder_self)
		e->encoder->destroy(e->encoder_self);
	if (e->dataset_self)
		e->dataset->close(e->dataset_self);
	df_ctx_destroy(e->ctx);
	memset(e, 0, sizeof(*e));
}

static int parts_open(const df_pipeline *p, encode_parts *e, df_error *err)
{
	memset(e, 0, sizeof(*e));
	const df_pipeline_section *ds = df_pipeline_get(p, "dataset"), *en = df_pipeline_get(p, "encoder");
	if (!ds || !ds->component || !en || !en->component)
		return df_error_set(err, DF_EINVAL, "%s: needs a dataset and an encoder section", df_pipeline_file(p));
	const df_pipeline_settings *top = df_pipeline_top(p);
	int rc = df_ctx_create(&e->ctx, top->device, (int)top->threads, err);
	if (rc != DF_OK)
		return rc;
	e->dataset = ds->component->component->vtable;
	if ((rc = e->dataset->open(ds->values, &e->dataset_self, err)) != DF_OK) {
		e->dataset_self = NULL;
		parts_close(e);
		return df_error_prefix(err, rc, "dataset %s", ds->component->component->name);
	}
	e->dataset->info(e->dataset_self, &e->info);
	e->encoder = en->component->component->vtable;
	const char *name = e->encoder_name = en->component->component->name;
	df_shape3 image = {e->info.channels, e->info.height, e->info.width};
	if ((rc = e->encoder->create(en->values, e->ctx, image, &e->encoder_self, err)) != DF_OK) {
		e->encoder_self = NULL;
		parts_close(e);
		return df_error_prefix(err, rc, "encoder %s", name);
	}
	e->latent = e->encoder->latent_shape(e->encoder_self);
	return DF_OK;
}

/* Fetches items [first, first + n) (or the given indices) onto g. */
static df_tensor *fetch_batch(encode_parts *e, df_graph *g, const int64_t *indices, int64_t n, float *images,
                              int32_t *labels, df_error *err)
{
	if (e->dataset->fetch(e->dataset_self, indices, n, images, labels, err) != DF_OK)
		return NULL;
	return df_tensor_from_host(g, images, DF_SHAPE(n, e->info.channels, e->info.height, e->info.width));
}

static int64_t shape_numel(df_shape3 s)
{
	return (int64_t)s.channels * s.height * s.width;
}

/* Calls visit on every batch of the dataset, in order, on a no-grad graph. */
typedef int (*batch_visit)(void *ctx, encode_parts *e, df_graph *g, df_tensor *images, const float *host,
                           const int32_t *labels, int64_t first, int64_t n, df_error *err);

static int for_each_batch(encode_parts *e, batch_visit visit, void *ctx, df_error *err)
{
	const int64_t count = e->info.count, image_numel = (int64_t)e->info.channels * e->info.height * e->info.width;
	float *images = malloc((size_t)(ENCODE_BATCH * image_numel) * sizeof(float));
	int32_t labels[ENCODE_BATCH];
	int64_t indices[ENCODE_BATCH];
	df_graph *g = df_graph_create(e->ctx, DF_GRAPH_NO_GRAD);
	int rc = images && g ? DF_OK : df_error_set(err, DF_ENOMEM, "out of memory");
	for (int64_t first = 0; first < count && rc == DF_OK; first += ENCODE_BATCH) {
		int64_t n = count - first < ENCODE_BATCH ? count - first : ENCODE_BATCH;
		for (int64_t i = 0; i < n; i++)
			indices[i] = first + i;
		df_graph_reset(g);
		df_tensor *x = fetch_batch(e, g, indices, n, images, labels, err);
		rc = x ? visit(ctx, e, g, x, images, labels, first, n, err) : DF_EIO;
	}
	df_graph_destroy(g);
	free(images);
	return rc;
}

/* ------------------------------------------------------------------ */
/* encode */

typedef struct latent_cache {
	float *latents, *mean, *logvar;
	int64_t *labels, *keys;
	posterior_fn posterior;
	image_keys_fn image_keys;
} latent_cache;

static int encode_batch(void *ctx, encode_parts *e, df_graph *g, df_tensor *x, const float *host,
                        const int32_t *labels, int64_t first, int64_t n, df_error *err)
{
	latent_cache *c = ctx;
	const int64_t per = shape_numel(e->latent);
	df_tensor *z = NULL, *mean = NULL, *logvar = NULL;
	int rc = e->encoder->encode(e->encoder_self, g, x, &z, err);
	if (rc == DF_OK)
		rc = df_tensor_read(z, c->latents + first * per, err);
	if (rc == DF_OK && c->posterior && (rc = c->posterior(e->encoder_self, g, x, &mean, &logvar, err)) == DF_OK &&
	    (rc = df_tensor_read(mean, c->mean + first * per, err)) == DF_OK)
		rc = df_tensor_read(logvar, c->logvar + first * per, err);
	for (int64_t i = 0; i < n; i++)
		c->labels[first + i] = labels[i];
	if (c->image_keys)
		c->image_keys(e->encoder_self, host, n, x->numel / n, c->keys + first);
	return rc;
}

static int encode_all(encode_parts *e, latent_cache *c, df_error *err)
{
	const int64_t count = e->info.count, per = shape_numel(e->latent);
	c->posterior = e->encoder->extension ? (posterior_fn)e->encoder->extension(e->encoder_self, "posterior") : NULL;
	c->latents = malloc((size_t)(count * per) * sizeof(float));
	c->labels = malloc((size_t)count * sizeof(int64_t));
	if (c->posterior) {
		c->mean = malloc((size_t)(count * per) * sizeof(float));
		c->logvar = malloc((size_t)(count * per) * sizeof(float));
		c->image_keys = (image_keys_fn)e->encoder->extension(e->encoder_self, "image-keys");
		c->keys = c->image_keys ? malloc((size_t)count * sizeof(int64_t)) : NULL;
	}
	if (!c->latents || !c->labels || (c->posterior && (!c->mean || !c->logvar)) || (c->image_keys && !c->keys))
		return df_error_set(err, DF_ENOMEM, "encode: out of memory for %lld items", (long long)count);
	return for_each_batch(e, encode_batch, c, err);
}

static int encode_body(const pipeline_args *a, const df_pipeline *p)
{
	df_error err = {{0}};
	encode_parts e;
	latent_cache c = {0};
	char *dir = NULL, *path = NULL;
	int rc = parts_open(p, &e, &err);
	if (rc == DF_OK)
		rc = encode_all(&e, &c, &err);
	if (rc == DF_OK)
		rc = df_run_prepare(p, a->runs_dir, &dir, &err);
	if (rc == DF_OK) {
		const int64_t shape[4] = {e.info.count, e.latent.channels, e.latent.height, e.latent.width};
		const int64_t label_shape[1] = {e.info.count};
		df_safetensors_entry entries[5] = {
			{"latents", DF_ST_F32, 4, shape, c.latents},
			{"labels", DF_ST_I64, 1, label_shape, c.labels},
			{"mean", DF_ST_F32, 4, shape, c.mean},
			{"logvar", DF_ST_F32, 4, shape, c.logvar},
			{"image_key", DF_ST_I64, 1, label_shape, c.keys},
		};
		const df_safetensors_meta meta[2] = {{"encoder", e.encoder_name}, {"pipeline", df_pipeline_file(p)}};
		size_t n = strlen(dir) + 32;
		path = malloc(n);
		if (!path)
			rc = DF_ENOMEM;
		else {
			snprintf(path, n, "%s/latents.safetensors", dir);
			rc = df_safetensors_write(path, entries, c.mean ? (c.keys ? 5 : 4) : 2, meta, 2, &err) == 0 ? DF_OK : DF_EIO;
		}
	}
	if (rc == DF_OK) {
		printf("%s: %lld latents (%d, %d, %d) from encoder %s%s\n", path, (long long)e.info.count,
		       e.latent.channels, e.latent.height, e.latent.width, e.encoder_name,
		       c.mean ? ", with the posterior's mean and logvar" : "");
		/* LDM's scale_by_std: the factor that gives the latents unit variance. */
		double sum = 0, squares = 0, count = (double)e.info.count * (double)shape_numel(e.latent);
		for (int64_t i = 0; i < e.info.count * shape_numel(e.latent); i++) {
			sum += c.latents[i];
			squares += (double)c.latents[i] * c.latents[i];
		}
		double std = sqrt(fmax(0, squares / count - (sum / count) * (sum / count)));
		printf("latents as the model sees them: mean %.4g, std %.4g (unit variance: scale_factor times %.4g)\n",
		       sum / count, std, std > 0 ? 1 / std : 0.0);
	} else
		fprintf(stderr, "diffuse encode: %s\n", err.msg[0] ? err.msg : "out of memory");
	free(c.latents);
	free(c.mean);
	free(c.logvar);
	free(c.labels);
	free(c.keys);
	free(dir);
	free(path);
	if (e.ctx)
		parts_close(&e);
	return rc == DF_OK ? EXIT_OK : rc == DF_EINVAL ? EXIT_USAGE : EXIT_RUNTIME;
}

int cmd_encode(int argc, char **argv)
{
	return with_pipeline(argc, argv, 1, encode_body);
}

/* ------------------------------------------------------------------ */
/* autoencode */

static int train_encoder(encode_parts *e, const df_pipeline *p, df_error *err)
{
	const df_pipeline_section *ts = df_pipeline_get(p, "train");
	if (!ts)
		return df_error_set(err, DF_EINVAL, "%s: autoencode needs a train section", df_pipeline_file(p));
	const df_train_settings *t = ts->values;
	train_loss_fn loss_of = e->encoder->extension ? (train_loss_fn)e->encoder->extension(e->encoder_self, "train-loss")
	                                              : NULL;
	df_params *params = e->encoder->params ? e->encoder->params(e->encoder_self) : NULL;
	if (!loss_of || !params)
		return df_error_set(err, DF_EINVAL, "encoder %s has no training loss of its own", e->encoder_name);
	const uint64_t seed = (uint64_t)df_pipeline_top(p)->seed;
	const int64_t batch = t->batch, image_numel = (int64_t)e->info.channels * e->info.height * e->info.width;
	float *images = malloc((size_t)(batch * image_numel) * sizeof(float));
	int32_t *labels = malloc((size_t)batch * sizeof(int32_t));
	int64_t *indices = malloc((size_t)batch * sizeof(int64_t));
	df_graph *g = df_graph_create(e->ctx, 0);
	int rc = images && labels && indices && g ? DF_OK : df_error_set(err, DF_ENOMEM, "autoencode: out of memory");
	df_adamw_config adam = df_adamw_defaults();
	adam.weight_decay = t->weight_decay;
	df_lr_schedule schedule = {0};
	schedule.base_lr = t->lr;
	schedule.warmup_steps = t->warmup;
	schedule.total_steps = t->steps;
	for (int64_t step = 0; step < t->steps && rc == DF_OK; step++) {
		for (int64_t i = 0; i < batch; i++)
			indices[i] = (int64_t)(df_rng_uniform(seed, ENCODE_DATA_STREAM, (uint64_t)step, (uint64_t)i) *
			                       (double)e->info.count) % e->info.count;
		df_graph_reset(g);
		df_params_zero_grad(params);
		df_tensor *x = fetch_batch(e, g, indices, batch, images, labels, err), *loss = NULL;
		if (!x) {
			rc = DF_EIO;
			break;
		}
		if ((rc = loss_of(e->encoder_self, g, x, seed, (uint64_t)step, &loss, err)) != DF_OK ||
		    (rc = df_backward(g, loss, err)) != DF_OK)
			break;
		float value = 0;
		df_tensor_read(loss, &value, err);
		if (!isfinite(value)) {
			rc = df_error_set(err, DF_ENUMERIC, "autoencode: the loss is %g at step %lld", value, (long long)step);
			break;
		}
		/* The block-level functions: the parameters may be device memory. */
		double norm = 0;
		if ((rc = df_params_clip_grad_norm(params, t->grad_clip, &norm, err)) != DF_OK)
			break;
		adam.lr = df_lr_at(&schedule, step);
		if (df_params_adamw_step(params, &adam, step + 1, err) != DF_OK) {
			rc = df_error_set(err, DF_EINVAL, "autoencode: bad optimiser settings");
			break;
		}
		if (t->log_every > 0 && ((step + 1) % t->log_every == 0 || step + 1 == t->steps))
			printf("step %lld/%lld  loss %.4f  grad-norm %.3g  lr %.3g\n", (long long)(step + 1),
			       (long long)t->steps, value, norm, adam.lr);
	}
	df_graph_destroy(g);
	free(images);
	free(labels);
	free(indices);
	return rc;
}

/* Sum of squared reconstruction errors, images mapped to [0, 1]. */
static int psnr_batch(void *ctx, encode_parts *e, df_graph *g, df_tensor *x, const float *host,
                      const int32_t *labels, int64_t first, int64_t n, df_error *err)
{
	double *squared = ctx;
	const int64_t numel = n * e->info.channels * e->info.height * e->info.width;
	df_tensor *z = NULL, *y = NULL;
	(void)labels;
	(void)first;
	int rc = e->encoder->encode(e->encoder_self, g, x, &z, err);
	if (rc == DF_OK)
		rc = e->encoder->decode(e->encoder_self, g, z, &y, err);
	float *recon = rc == DF_OK ? malloc((size_t)numel * sizeof(float)) : NULL;
	if (rc == DF_OK && !recon)
		rc = df_error_set(err, DF_ENOMEM, "eval: out of memory");
	if (rc == DF_OK)
		rc = df_tensor_read(y, recon, err);
	for (int64_t i = 0; rc == DF_OK && i < numel; i++) {
		double d = (fmin(1.0, fmax(-1.0, recon[i])) - host[i]) / 2;
		*squared += d * d;
	}
	free(recon);
	return rc;
}

/* Reconstruction PSNR (dB, images in [0, 1]) over every item of e's dataset. */
static int reconstruction_psnr(encode_parts *e, double *psnr, df_error *err)
{
	double squared = 0;
	int rc = for_each_batch(e, psnr_batch, &squared, err);
	double mse = squared / ((double)e->info.count * e->info.channels * e->info.height * e->info.width);
	*psnr = mse > 0 ? 10 * log10(1 / mse) : INFINITY;
	return rc;
}

/* Writes every parameter of the encoder under its name. */
static int write_encoder(encode_parts *e, const char *path, df_error *err)
{
	df_params *params = e->encoder->params(e->encoder_self);
	size_t count = df_params_count(params);
	df_safetensors_entry *entries = calloc(count, sizeof(*entries));
	float *values = malloc((size_t)df_params_numel(params) * sizeof(float));
	int rc = entries && values ? df_params_read(params, values, err) : DF_ENOMEM;
	for (size_t i = 0; i < count && rc == DF_OK; i++) {
		const df_tensor *t = df_params_at(params, i);
		entries[i] = (df_safetensors_entry){t->name, DF_ST_F32, t->ndim, t->shape,
		                                     values + df_params_offset(params, i)};
	}
	const df_safetensors_meta meta[1] = {{"encoder", e->encoder_name}};
	if (rc == DF_OK && df_safetensors_write(path, entries, count, meta, 1, err) != 0)
		rc = DF_EIO;
	free(entries);
	free(values);
	return rc;
}

/* The reconstruction PSNR of the pipeline's encoder with the given weights
 * on the dataset's test split when it has one (else the training data):
 * the same pipeline reloaded with encoder.weights = weights, the posterior's
 * mode when the encoder has one, and dataset.split = test. Prints one line,
 * or with json one summary object on stdout (the line on stderr). */
static int reconstruction_report(const pipeline_args *a, const df_pipeline *p, const char *weights, int json,
                                 df_error *err)
{
	const df_pipeline_section *ds = df_pipeline_get(p, "dataset"), *en = df_pipeline_get(p, "encoder");
	int has_split = ds && df_settings_find(ds->settings, "split") != NULL;
	int has_posterior = en && df_settings_find(en->settings, "posterior") != NULL;
	pipeline_args eval = *a;
	char weights_override[4200];
	snprintf(weights_override, sizeof(weights_override), "encoder.weights=%s", weights);
	const char **overrides = calloc(a->n_overrides + 3, sizeof(*overrides));
	df_registry *reg = NULL;
	df_pipeline *eval_p = NULL;
	encode_parts te = {0};
	double psnr = 0;
	int rc = overrides ? DF_OK : df_error_set(err, DF_ENOMEM, "out of memory");
	if (rc == DF_OK) {
		if (a->n_overrides)
			memcpy(overrides, a->overrides, a->n_overrides * sizeof(*overrides));
		eval.overrides = overrides;
		eval.n_overrides = a->n_overrides;
		overrides[eval.n_overrides++] = weights_override;
		if (has_split)
			overrides[eval.n_overrides++] = "dataset.split=test";
		if (has_posterior)
			overrides[eval.n_overrides++] = "encoder.posterior=mode";
		if (load_pipeline(&eval, &reg, &eval_p) != EXIT_OK)
			rc = df_error_set(err, DF_EINVAL, "cannot reload the pipeline with the weights %s", weights);
	}
	if (rc == DF_OK && (rc = parts_open(eval_p, &te, err)) == DF_OK &&
	    (rc = reconstruction_psnr(&te, &psnr, err)) == DF_OK) {
		const char *split = has_split ? "test" : "training-data";
		fprintf(json ? stderr : stdout, "%s reconstruction PSNR: %.2f dB over %lld images\n", split, psnr,
		        (long long)te.info.count);
		json_t *root = json ? json_pack("{s:s, s:s, s:s, s:I, s:{s:f}}", "command", "eval", "checkpoint", weights,
		                                "split", split, "count", (json_int_t)te.info.count, "metrics", "psnr",
		                                psnr)
		                    : NULL;
		if (root) {
			json_dumpf(root, stdout, JSON_COMPACT);
			fputc('\n', stdout);
			json_decref(root);
		}
	}
	if (te.ctx)
		parts_close(&te);
	df_pipeline_destroy(eval_p);
	df_registry_destroy(reg);
	free(overrides);
	return rc;
}

int host_eval_autoencoder(const pipeline_args *a, const df_pipeline *p, const char *weights, int json)
{
	df_error err = {{0}};
	int rc = reconstruction_report(a, p, weights, json, &err);
	if (rc != DF_OK)
		fprintf(stderr, "diffuse eval: %s\n", err.msg[0] ? err.msg : "out of memory");
	return rc == DF_OK ? EXIT_OK : rc == DF_EINVAL ? EXIT_USAGE : EXIT_RUNTIME;
}

static int autoencode_body(const pipeline_args *a, const df_pipeline *p)
{
	df_error err = {{0}};
	encode_parts e;
	char *dir = NULL, path[4096] = "";
	int rc = parts_open(p, &e, &err);
	if (rc == DF_OK)
		rc = train_encoder(&e, p, &err);
	if (rc == DF_OK)
		rc = df_run_prepare(p, a->runs_dir, &dir, &err);
	if (rc == DF_OK) {
		snprintf(path, sizeof(path), "%s/encoder.safetensors", dir);
		rc = write_encoder(&e, path, &err);
	}
	if (rc == DF_OK)
		printf("wrote %s\n", path);
	if (e.ctx)
		parts_close(&e);
	if (rc == DF_OK)
		rc = reconstruction_report(a, p, path, 0, &err);
	if (rc != DF_OK)
		fprintf(stderr, "diffuse autoencode: %s\n", err.msg[0] ? err.msg : "out of memory");
	free(dir);
	return rc == DF_OK ? EXIT_OK : rc == DF_EINVAL ? EXIT_USAGE : EXIT_RUNTIME;
}

int cmd_autoencode(int argc, char **argv)
{
	return with_pipeline(argc, argv, 1, autoencode_body);
}
