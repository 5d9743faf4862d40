/* The sampling stage: from weights to pictures, or to tensors that can be
 * compared with another implementation fed the same noise. */
#include "config.h"
#include <errno.h>
#include <stdarg.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include "diffuse/dist.h"
#include "stage_private.h"

static void say(const df_stage_options *o, const char *fmt, ...) DF_PRINTF(2, 3);
static void say(const df_stage_options *o, const char *fmt, ...)
{
	if (!o || !o->message || df_dist_rank() != 0)
		return;
	char line[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(line, sizeof line, fmt, ap);
	va_end(ap);
	o->message(o->ctx, line);
}

static int64_t latent_dim(const dfr_model *m)
{
	return (int64_t)m->latent.channels * m->latent.height * m->latent.width;
}

static int64_t image_dim(const dfr_model *m)
{
	return (int64_t)m->data.channels * m->data.height * m->data.width;
}

/* Initial noise of sample `index`: keyed by (seed, index) alone. */
static void initial_noise(const dfr_model *m, int64_t index, float *x)
{
	df_rng_fill_normal(x, (size_t)latent_dim(m), m->seed, DFR_STREAM_SAMPLE_X, (uint64_t)index, 0);
}

int dfr_decode(dfr_model *m, df_graph *g, const float *x, int64_t n, float *images, df_error *err)
{
	if (!m->encoder) {
		memcpy(images, x, (size_t)(n * latent_dim(m)) * sizeof *images);
		return DF_OK;
	}
	df_graph_reset(g);
	df_tensor *lat = df_tensor_from_host(g, x, 4, (const int64_t[]){n, m->latent.channels, m->latent.height,
	                                                                 m->latent.width});
	df_tensor *img = NULL;
	int rc = df_graph_status(g, err);
	if (!rc)
		rc = m->encoder->decode(m->encoder_self, g, lat, &img, err);
	if (!rc)
		rc = df_tensor_read(img, images, err);
	return rc ? df_error_prefix(err, rc, "decoding") : DF_OK;
}

/* Labels of a class grid: `cols` samples per class, row by row. */
static int32_t grid_label(const dfr_model *m, const df_sample_settings *s, int64_t i, int64_t cols)
{
	if (m->data.num_classes <= 0)
		return -1;
	if (s && s->class_label >= 0)
		return (int32_t)(s->class_label % m->data.num_classes);
	return (int32_t)((i / cols) % m->data.num_classes);
}

static const df_sample_settings *sample_settings(const dfr_model *m)
{
	const df_pipeline_section *sec = df_pipeline_get(m->pipeline, "sample");
	return sec ? sec->values : NULL;
}

/* Samples items [first, first + n) in batches: x (n, latent) receives
 * their model-space samples, y (n) their labels (taken as given when
 * from_file). An item depends on its global index, not on where it is
 * stored, so the ranks can each sample a share. */
static int sample_items(dfr_model *m, df_weight_set which, float *x, int32_t *y, int64_t first, int64_t n,
                        int from_file, int64_t cols, int64_t *nfe, df_error *err)
{
	const df_sample_settings *s = sample_settings(m);
	int64_t batch = s ? s->batch : 64, dim = latent_dim(m);
	int64_t *index = malloc((size_t)batch * sizeof *index);
	df_graph *g = df_graph_create(m->ctx, DF_GRAPH_NO_GRAD);
	int rc = DF_OK;
	if (!index || !g)
		rc = df_error_set(err, DF_ENOMEM, "sampling: out of memory");
	*nfe = 0;
	for (int64_t start = first; start < first + n && !rc; start += batch) {
		int64_t b = first + n - start < batch ? first + n - start : batch;
		int64_t at = start - first; /* where the batch is stored */
		for (int64_t i = 0; i < b; i++) {
			index[i] = start + i;
			if (!from_file) {
				initial_noise(m, start + i, x + (at + i) * dim);
				y[at + i] = grid_label(m, s, start + i, cols);
			}
		}
		int64_t batch_nfe = 0;
		rc = dfr_sample_batch(m, which, g, x + at * dim, m->data.num_classes > 0 ? y + at : NULL, index, b,
		                      &batch_nfe, err);
		if (batch_nfe > *nfe)
			*nfe = batch_nfe;
	}
	df_graph_destroy(g);
	free(index);
	return rc;
}

static int64_t grid_columns(const dfr_model *m, int64_t count)
{
	if (m->data.num_classes <= 0)
		return 0;
	int64_t cols = count / m->data.num_classes;
	return cols > 0 ? cols : 1;
}

/* Writes decoded images as a grid with one row per class. */
static int write_grid(dfr_model *m, const char *path, const float *images, int64_t n, int64_t cols, df_error *err)
{
	char labels[64][8];
	const char *row_labels[64];
	int conditional = m->data.num_classes > 0 && cols > 0;
	int64_t rows = conditional ? (n + cols - 1) / cols : 0;
	const df_sample_settings *s = sample_settings(m);
	for (int64_t r = 0; r < rows && r < 64; r++) {
		snprintf(labels[r], sizeof labels[r], "%d", (int)grid_label(m, s, r * cols, cols));
		row_labels[r] = labels[r];
	}
	int channels = m->data.channels;
	if (channels != 1 && channels != 3)
		return df_error_set(err, DF_EINVAL, "%s: a grid needs 1 or 3 channels, the images have %d", path, channels);
	if (df_grid_write_png(path, images, (size_t)n, channels, m->data.height, m->data.width,
	                      conditional ? (int)cols : 0, 2, conditional && rows <= 64 ? row_labels : NULL, err) != 0)
		return DF_EIO;
	return DF_OK;
}

static int decode_all(dfr_model *m, const float *x, int64_t n, float *images, df_error *err)
{
	const df_sample_settings *s = sample_settings(m);
	int64_t batch = s ? s->batch : 64;
	df_graph *g = df_graph_create(m->ctx, DF_GRAPH_NO_GRAD);
	if (!g)
		return df_error_set(err, DF_ENOMEM, "decoding: out of memory");
	int rc = DF_OK;
	for (int64_t start = 0; start < n && !rc; start += batch) {
		int64_t b = n - start < batch ? n - start : batch;
		rc = dfr_decode(m, g, x + start * latent_dim(m), b, images + start * image_dim(m), err);
	}
	df_graph_destroy(g);
	return rc;
}

static void describe(const dfr_model *m, df_weight_set which, int64_t n, int64_t nfe, char *buf, size_t size)
{
	df_guidance gd;
	dfr_guidance_from_pipeline(m->pipeline, &gd);
	char guidance[160];
	if (gd.scale == 1.0 || m->data.num_classes <= 0)
		snprintf(guidance, sizeof guidance, "no guidance");
	else
		snprintf(guidance, sizeof guidance, "guidance %g on %s for t in [%g, %g]", gd.scale,
		         gd.channels ? "channels 0-2 (legacy)" : "all channels", gd.t_lo, gd.t_hi);
	snprintf(buf, size, "%" PRId64 " samples from %s weights (step %" PRId64 "), sampler %s, NFE %" PRId64
	         ", %s, seed %" PRIu64,
	         n, which == DF_WEIGHTS_EMA ? "EMA" : "raw", m->step, m->sampler_name ? m->sampler_name : "none", nfe,
	         guidance, m->seed);
}

int dfr_write_class_grid(dfr_model *m, df_weight_set which, const char *path, char *summary, size_t size,
                         const df_stage_options *o, df_error *err)
{
	const df_sample_settings *s = sample_settings(m);
	int64_t count = s ? s->count : 64;
	int64_t cols = grid_columns(m, count);
	if (cols > 0)
		count = cols * m->data.num_classes;
	float *x = malloc((size_t)(count * latent_dim(m)) * sizeof *x);
	float *images = malloc((size_t)(count * image_dim(m)) * sizeof *images);
	int32_t *y = malloc((size_t)count * sizeof *y);
	int64_t nfe = 0;
	int rc = x && images && y ? DF_OK : df_error_set(err, DF_ENOMEM, "grid: out of memory");
	if (!rc)
		rc = sample_items(m, which, x, y, 0, count, 0, cols, &nfe, err);
	if (!rc)
		rc = decode_all(m, x, count, images, err);
	if (!rc)
		rc = write_grid(m, path, images, count, cols, err);
	if (!rc && summary)
		describe(m, which, count, nfe, summary, size);
	if (!rc)
		dfr_tell_samples(o, m, which, path, count, nfe);
	free(x);
	free(images);
	free(y);
	return rc;
}

/* ------------------------------------------------------------------ */

static int ends_with(const char *s, const char *suffix)
{
	size_t a = strlen(s), b = strlen(suffix);
	return a >= b && strcmp(s + a - b, suffix) == 0;
}

/* x (N, latent) and y (N) from a noise file; *x and *y are allocated. */
static int read_noise(dfr_model *m, const char *path, float **x, int32_t **y, int64_t *n, df_error *err)
{
	df_safetensors *st = NULL;
	if (df_safetensors_open(&st, path, err) != 0)
		return DF_EIO;
	int rc = DF_OK;
	const df_safetensors_tensor *tx = df_safetensors_find(st, "x");
	const df_safetensors_tensor *ty = df_safetensors_find(st, "y");
	int64_t dim = latent_dim(m);
	if (!tx || tx->ndim != 4 || tx->shape[1] != m->latent.channels || tx->shape[2] != m->latent.height ||
	    tx->shape[3] != m->latent.width) {
		rc = df_error_set(err, DF_EINVAL, "%s: needs x of shape (N, %d, %d, %d)", path, m->latent.channels,
		                  m->latent.height, m->latent.width);
		goto done;
	}
	*n = tx->shape[0];
	if (ty && (int64_t)ty->nelem != *n) {
		rc = df_error_set(err, DF_EINVAL, "%s: y has %zu labels for %" PRId64 " samples", path, ty->nelem, *n);
		goto done;
	}
	if (!ty && m->data.num_classes > 0) {
		rc = df_error_set(err, DF_EINVAL, "%s: the model is class-conditional: the file needs labels y", path);
		goto done;
	}
	*x = malloc((size_t)(*n * dim) * sizeof **x);
	*y = calloc((size_t)*n + 1, sizeof **y);
	float *yf = ty ? malloc(ty->nelem * sizeof *yf) : NULL;
	if (!*x || !*y || (ty && !yf)) {
		free(yf);
		rc = df_error_set(err, DF_ENOMEM, "%s: out of memory", path);
		goto done;
	}
	if (df_safetensors_read_f32(st, tx, *x, tx->nelem, err) != 0 ||
	    (ty && df_safetensors_read_f32(st, ty, yf, ty->nelem, err) != 0))
		rc = DF_EINVAL;
	for (int64_t i = 0; ty && !rc && i < *n; i++) {
		if (yf[i] < 0 || yf[i] > m->data.num_classes || yf[i] != floorf(yf[i]))
			rc = df_error_set(err, DF_EINVAL, "%s: label %g of sample %" PRId64 " is not a class (0..%d)", path,
			                  (double)yf[i], i, m->data.num_classes);
		(*y)[i] = (int32_t)yf[i];
	}
	free(yf);
done:
	df_safetensors_close(st);
	return rc;
}

static int write_samples(dfr_model *m, const char *path, const float *x, const int32_t *y, int64_t n,
                         const char *summary, df_error *err)
{
	int64_t shape[4] = {n, m->latent.channels, m->latent.height, m->latent.width};
	int64_t *y64 = malloc((size_t)(n + 1) * sizeof *y64);
	if (!y64)
		return df_error_set(err, DF_ENOMEM, "%s: out of memory", path);
	for (int64_t i = 0; i < n; i++)
		y64[i] = y[i];
	int64_t yshape[1] = {n};
	df_safetensors_entry entries[2] = {
		{"x0", DF_ST_F32, 4, shape, x},
		{"y", DF_ST_I64, 1, yshape, y64},
	};
	df_safetensors_meta meta[] = {{"made_by", summary}};
	int rc = df_safetensors_write(path, entries, m->data.num_classes > 0 ? 2 : 1, meta, 1, err) ? DF_EIO : DF_OK;
	free(y64);
	return rc;
}

static int write_folder(dfr_model *m, const char *dir, const float *images, int64_t n, df_error *err)
{
	if (mkdir(dir, 0777) != 0 && errno != EEXIST)
		return df_error_set(err, DF_EIO, "%s: cannot create: %s", dir, strerror(errno));
	for (int64_t i = 0; i < n; i++) {
		char name[64], path[4096];
		snprintf(name, sizeof name, "%06" PRId64 ".png", i);
		if (df_png_write_float_chw(dfr_join(path, sizeof path, dir, name), images + i * image_dim(m),
		                           m->data.width, m->data.height, m->data.channels, DF_RANGE_MINUS1_1, err) != 0)
			return DF_EIO;
	}
	return DF_OK;
}

static int load_for_sampling(dfr_model *m, const df_sample_request *req, const df_stage_options *o,
                             df_weight_set *which, df_error *err)
{
	char path[4096];
	const char *ckpt = req->checkpoint;
	if (!ckpt && !req->weights)
		ckpt = dfr_join(path, sizeof path, o ? o->run_dir : ".", "checkpoint.safetensors");
	int rc = ckpt ? dfr_checkpoint_load(m, ckpt, 1, err) : dfr_weights_load(m, req->weights, err);
	if (rc)
		return rc;
	const df_sample_settings *s = sample_settings(m);
	*which = (!s || strcmp(s->weights, "ema") == 0) && m->ema ? DF_WEIGHTS_EMA : DF_WEIGHTS_RAW;
	if (*which == DF_WEIGHTS_RAW && (!s || strcmp(s->weights, "ema") == 0))
		say(o, "note: %s holds no EMA set; raw weights generate", ckpt ? ckpt : req->weights);
	return DF_OK;
}

/* What a sampling run gathers on rank 0 (dist.h): the latents, or the
 * images decoded from them. Rank 0's buffers hold every item, another
 * rank's only its share (x every item when read from a noise file);
 * x_mine points at the share. Rank 0's share comes first. */
typedef struct sampled {
	float *x, *x_mine, *images;
	int32_t *y;
	int64_t n, first, mine, nfe, cols;
} sampled;

/* This rank's share of the request: noise, samples and, when the output
 * is a picture, decoded images. */
static int sample_share(dfr_model *m, const df_sample_request *req, df_weight_set which, int decode, sampled *r,
                        df_error *err)
{
	const df_sample_settings *s = sample_settings(m);
	int64_t dim = latent_dim(m), batch = s ? s->batch : 64;
	if (req->noise) {
		int rc = read_noise(m, req->noise, &r->x, &r->y, &r->n, err);
		if (rc)
			return rc;
		r->cols = grid_columns(m, r->n);
	}
	/* The ranks share whole batches of the one-process run: the kernels
	 * may round an item differently in a batch of another size. */
	int64_t first_batch, batches;
	df_dist_share((r->n + batch - 1) / batch, &first_batch, &batches);
	int64_t end = (first_batch + batches) * batch < r->n ? (first_batch + batches) * batch : r->n;
	r->first = first_batch * batch < r->n ? first_batch * batch : r->n;
	r->mine = end - r->first;
	int64_t held = df_dist_rank() == 0 ? r->n : r->mine; /* items in this rank's buffers */
	if (!req->noise) {
		r->x = malloc((size_t)((held + 1) * dim) * sizeof *r->x);
		r->y = calloc((size_t)r->n + 1, sizeof *r->y);
		if (!r->x || !r->y)
			return df_error_set(err, DF_ENOMEM, "sampling: out of memory");
		/* Rank 0 writes every item's label, not only its share's. */
		for (int64_t i = 0; i < r->n; i++)
			r->y[i] = grid_label(m, s, i, r->cols);
	}
	r->x_mine = req->noise ? r->x + r->first * dim : r->x;
	int rc = sample_items(m, which, r->x_mine, r->y + r->first, r->first, r->mine, req->noise != NULL, r->cols,
	                      &r->nfe, err);
	if (rc || !decode)
		return rc;
	r->images = malloc((size_t)((held + 1) * image_dim(m)) * sizeof *r->images);
	if (!r->images)
		return df_error_set(err, DF_ENOMEM, "sampling: out of memory");
	return decode_all(m, r->x_mine, r->mine, r->images, err);
}

/* Under mpirun every rank samples its share of the items and rank 0
 * gathers them, in index order, and alone writes (and reports how the
 * writing went); a rank that fails before the gather makes every rank
 * fail, so none is left waiting. */
int df_sample_run(const df_pipeline *p, const df_sample_request *req, const df_stage_options *o, df_error *err)
{
	if (!req || req->struct_size < sizeof *req || (o && o->struct_size < sizeof *o))
		return df_error_set(err, DF_EINVAL, "df_sample_run: a struct_size is too small");
	dfr_model m;
	sampled r = {0};
	df_weight_set which = DF_WEIGHTS_RAW;
	const char *out = req->out && *req->out ? req->out : "samples.png";
	int tensors = ends_with(out, ".safetensors");
	int opened = 0, rc = dfr_model_open(&m, p, err);
	if (!rc) {
		opened = 1;
		const df_sample_settings *s = sample_settings(&m);
		r.n = req->count > 0 ? req->count : (s ? s->count : 64);
		r.cols = grid_columns(&m, r.n);
		rc = load_for_sampling(&m, req, o, &which, err);
	}
	if (!rc)
		rc = sample_share(&m, req, which, !tensors, &r, err);
	/* A rank that failed would never reach the gather. */
	rc = df_dist_agree(rc, err);
	if (!rc)
		rc = df_dist_allreduce_max_i64(&r.nfe, 1, err);
	if (!rc) {
		int64_t row = tensors ? latent_dim(&m) : image_dim(&m);
		float *all = tensors ? r.x : r.images, *mine = tensors ? r.x_mine : r.images;
		rc = df_dist_gather_rows_f32(mine, r.mine, (size_t)row, all, err);
	}
	if (!rc && df_dist_rank() == 0) {
		char summary[512];
		describe(&m, which, r.n, r.nfe, summary, sizeof summary);
		if (tensors)
			rc = write_samples(&m, out, r.x, r.y, r.n, summary, err);
		else if (ends_with(out, ".png"))
			rc = write_grid(&m, out, r.images, r.n, req->noise ? 0 : r.cols, err);
		else
			rc = write_folder(&m, out, r.images, r.n, err);
		if (!rc && df_dist_size() > 1)
			say(o, "%s: %s; batches shared by %d ranks", out, summary, df_dist_size());
		else if (!rc)
			say(o, "%s: %s", out, summary);
		if (!rc)
			dfr_tell_samples(o, &m, which, out, r.n, r.nfe);
	}
	/* Rank 0's writing decides for all: a rank that finished while rank 0
	 * failed would sit in MPI_Finalize, where the abort can hang. */
	rc = df_dist_agree(rc, err);
	free(r.x);
	free(r.y);
	free(r.images);
	if (opened)
		dfr_model_close(&m);
	return rc;
}
