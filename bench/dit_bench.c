/* dit-bench: times one backbone of the build tree the way the training and
 * sampling stages run it, for the side-by-side comparison with PyTorch
 * (bench/vs-pytorch). It loads the backbone plugin through the runtime's
 * registry, so what it measures is the plugin users get.
 *
 *   dit-bench train  [options]   training steps: the objective plugin's loss
 *                                (or, without --objective, the velocity loss
 *                                of the linear path written here), backward,
 *                                gradient norm and clipping, AdamW, EMA
 *   dit-bench sample [options]   Euler steps with classifier-free guidance:
 *                                one forward of the doubled batch per step
 *   dit-bench sgemm  [options]   cblas_sgemm GFLOP/s at the model's shapes
 *
 * Data are random (the dataset is not what is measured): x0, noise and t
 * are drawn from the counter-based generator, keyed by the step. The
 * result is one JSON object on standard output: the wall time of every
 * timed step (after the warm-up steps), split as the training log splits
 * it, and the sizes needed to count FLOPs. */
#include "config.h"
#include <cblas.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "diffuse/diffuse.h"
#include "diffuse/optim.h"
#include "diffuse/rng.h"
#include "diffuse/runtime.h"

/* Streams of the generator, distinct per random quantity. */
enum { STREAM_X0 = 101, STREAM_EPS, STREAM_T, STREAM_LABEL, STREAM_DROP, STREAM_NOISE };

#define MAX_SETTINGS 32

typedef struct options {
	const char *mode;
	const char *backbone;
	const char *settings[MAX_SETTINGS]; /* "key=value" for the backbone */
	int n_settings;
	const char *objective;              /* NULL: the built-in velocity loss */
	const char *objective_settings[MAX_SETTINGS];
	int n_objective_settings;
	int channels, height, width;
	int classes;
	int64_t batch;
	int threads;
	int warmup, steps;
	double lr, weight_decay, grad_clip, ema, class_dropout, cfg_scale;
	int ema_warmup;
	int64_t gemm_rows;                  /* sgemm: M = batch * tokens */
	int gemm_hidden;                    /* sgemm: D; shapes D x 3D, D x D, D x 4D, 4D x D */
	int reps;
} options;

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* CPU time of all the process's threads: under a shared machine it shows
 * how much of a step's wall time was spent waiting for a core. */
static double cpu_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void usage(FILE *to)
{
	fprintf(to,
	        "usage: dit-bench train|sample|sgemm [options]\n"
	        "  --backbone NAME        backbone component (dit)\n"
	        "  -s KEY=VALUE           a backbone setting (repeatable), e.g. -s model=DiT-S/2\n"
	        "  --objective NAME       training loss from this objective plugin (e.g. velocity)\n"
	        "  -o KEY=VALUE           an objective setting (repeatable), e.g. -o path=linear\n"
	        "  --shape C,H,W          input shape (4,32,32)\n"
	        "  --classes K            number of classes, 0 = unconditional (1000)\n"
	        "  --batch N              batch (8); sampling: images, doubled for guidance\n"
	        "  --threads T            threads (2)\n"
	        "  --warmup W --steps S   untimed and timed steps (2, 10)\n"
	        "  --lr --weight-decay --grad-clip --ema --ema-warmup 0|1 --class-dropout\n"
	        "  --cfg-scale G          guidance scale for sampling (4)\n"
	        "  --gemm-rows M --gemm-hidden D --reps R   sgemm shapes (2048, 384, 5)\n");
}

static int parse(options *o, int argc, char **argv)
{
	*o = (options){
		.backbone = "dit", .channels = 4, .height = 32, .width = 32, .classes = 1000, .batch = 8,
		.threads = 2, .warmup = 2, .steps = 10, .lr = 1e-4, .ema = 0.9999, .class_dropout = 0.1,
		.cfg_scale = 4.0, .gemm_rows = 2048, .gemm_hidden = 384, .reps = 5,
	};
	if (argc < 2)
		return -1;
	o->mode = argv[1];
	for (int i = 2; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!v)
			return -1;
		i++;
		if (strcmp(a, "--backbone") == 0)
			o->backbone = v;
		else if (strcmp(a, "-s") == 0 && o->n_settings < MAX_SETTINGS)
			o->settings[o->n_settings++] = v;
		else if (strcmp(a, "--objective") == 0)
			o->objective = v;
		else if (strcmp(a, "-o") == 0 && o->n_objective_settings < MAX_SETTINGS)
			o->objective_settings[o->n_objective_settings++] = v;
		else if (strcmp(a, "--shape") == 0) {
			if (sscanf(v, "%d,%d,%d", &o->channels, &o->height, &o->width) != 3)
				return -1;
		} else if (strcmp(a, "--classes") == 0)
			o->classes = atoi(v);
		else if (strcmp(a, "--batch") == 0)
			o->batch = atoll(v);
		else if (strcmp(a, "--threads") == 0)
			o->threads = atoi(v);
		else if (strcmp(a, "--warmup") == 0)
			o->warmup = atoi(v);
		else if (strcmp(a, "--steps") == 0)
			o->steps = atoi(v);
		else if (strcmp(a, "--lr") == 0)
			o->lr = atof(v);
		else if (strcmp(a, "--weight-decay") == 0)
			o->weight_decay = atof(v);
		else if (strcmp(a, "--grad-clip") == 0)
			o->grad_clip = atof(v);
		else if (strcmp(a, "--ema") == 0)
			o->ema = atof(v);
		else if (strcmp(a, "--ema-warmup") == 0)
			o->ema_warmup = atoi(v);
		else if (strcmp(a, "--class-dropout") == 0)
			o->class_dropout = atof(v);
		else if (strcmp(a, "--cfg-scale") == 0)
			o->cfg_scale = atof(v);
		else if (strcmp(a, "--gemm-rows") == 0)
			o->gemm_rows = atoll(v);
		else if (strcmp(a, "--gemm-hidden") == 0)
			o->gemm_hidden = atoi(v);
		else if (strcmp(a, "--reps") == 0)
			o->reps = atoi(v);
		else
			return -1;
	}
	if (o->batch < 1 || o->steps < 1 || o->warmup < 0 || o->channels < 1 || o->height < 1 || o->width < 1 ||
	    o->classes < 0 || o->threads < 1 || o->reps < 1 || o->gemm_rows < 1 || o->gemm_hidden < 1)
		return -1;
	return 0;
}

static void print_times(const char *key, const double *t, int n, int last)
{
	printf("\"%s\": [", key);
	for (int i = 0; i < n; i++)
		printf("%s%.6f", i ? ", " : "", t[i]);
	printf("]%s", last ? "" : ", ");
}

/* ------------------------------------------------------------------ */
/* sgemm: the same row-major products the linear layers make (x W^T), in
 * the three shapes of one training step (forward, input gradient, weight
 * gradient), over the block's four weight shapes. */

static int run_sgemm(const options *o)
{
	openblas_set_num_threads(o->threads);
	const int64_t d = o->gemm_hidden, rows = o->gemm_rows;
	const int64_t outs[4] = {3 * d, d, 4 * d, d};
	const int64_t ins[4] = {d, d, d, 4 * d};
	size_t most = (size_t)(rows * 4 * d);
	float *a = malloc(most * sizeof *a), *b = malloc((size_t)(16 * d * d) * sizeof *b);
	float *c = malloc(most * sizeof *c);
	if (!a || !b || !c) {
		fprintf(stderr, "dit-bench: out of memory\n");
		return 1;
	}
	df_rng_fill_normal(a, most, 0, STREAM_X0, 0, 0);
	df_rng_fill_normal(b, (size_t)(16 * d * d), 0, STREAM_EPS, 0, 0);
	double best = 0, best_cpu = 0;
	for (int r = 0; r < o->reps + 1; r++) {
		double flops = 0, t0 = now(), c0 = cpu_now();
		for (int k = 0; k < 4; k++) {
			int64_t n = outs[k], kk = ins[k];
			/* y = x W^T; dx = dy W; dW = dy^T x */
			cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows, (int)n, (int)kk, 1.0f, a,
			            (int)kk, b, (int)kk, 0.0f, c, (int)n);
			cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)rows, (int)kk, (int)n, 1.0f, a,
			            (int)n, b, (int)kk, 0.0f, c, (int)kk);
			cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)n, (int)kk, (int)rows, 1.0f, a,
			            (int)n, c, (int)kk, 0.0f, b, (int)kk);
			flops += 3.0 * 2.0 * (double)rows * (double)n * (double)kk;
		}
		double gflops = flops / (now() - t0) * 1e-9, cpu_gflops = flops / (cpu_now() - c0) * 1e-9;
		if (r > 0 && gflops > best) /* the first round warms the threads */
			best = gflops;
		if (r > 0 && cpu_gflops > best_cpu)
			best_cpu = cpu_gflops;
	}
	/* cpu_gflops: per second of CPU time, which a shared machine does not
	 * dilute the way it dilutes wall time */
	printf("{\"mode\": \"sgemm\", \"threads\": %d, \"rows\": %" PRId64 ", \"hidden\": %" PRId64
	       ", \"gflops\": %.3f, \"cpu_gflops\": %.3f}\n",
	       o->threads, rows, d, best, best_cpu);
	free(a);
	free(b);
	free(c);
	return 0;
}

/* ------------------------------------------------------------------ */
/* The backbone, created through the registry as the runtime creates it. */

/* A component's settings struct, defaults then "key=value" overrides. */
typedef struct configured {
	const df_component *component;
	void *values;
} configured;

static int configure(configured *c, df_registry *reg, df_kind kind, const char *name, const char *const *settings,
                     int n, df_error *err)
{
	const df_component_info *info = df_registry_find(reg, kind, name);
	if (!info)
		return df_error_set(err, DF_EINVAL, "no component called %s among the loaded plugins", name);
	c->component = info->component;
	c->values = calloc(1, c->component->settings_size ? c->component->settings_size : 1);
	if (!c->values)
		return df_error_set(err, DF_ENOMEM, "out of memory");
	int rc = c->component->settings ? df_settings_defaults(c->component->settings, c->values, err) : DF_OK;
	for (int i = 0; !rc && i < n; i++) {
		char key[128];
		const char *eq = strchr(settings[i], '=');
		if (!eq || (size_t)(eq - settings[i]) >= sizeof key)
			return df_error_set(err, DF_EINVAL, "%s: expected key=value", settings[i]);
		memcpy(key, settings[i], (size_t)(eq - settings[i]));
		key[eq - settings[i]] = '\0';
		rc = df_settings_set(c->component->settings, c->values, key, eq + 1, err);
		if (rc)
			df_error_prefix(err, rc, "%s", name);
	}
	return rc;
}

static void unconfigure(configured *c)
{
	if (c->component && c->component->settings && c->values)
		df_settings_release(c->component->settings, c->values);
	free(c->values);
}

typedef struct bench_model {
	df_registry *reg;
	configured backbone, objective;
	df_ctx *ctx;
	const df_backbone_vtable *vt;
	void *self;
	df_params *params;
	const df_objective_vtable *ovt;
	void *objective_self;
} bench_model;

static int model_open(bench_model *b, const options *o, df_error *err)
{
	memset(b, 0, sizeof *b);
#ifdef DF_BUILD_PLUGIN_PATH
	/* the plugins of this build tree, not an installed copy */
	if (!getenv("DIFFUSE_PLUGIN_SYSTEM_PATH"))
		setenv("DIFFUSE_PLUGIN_SYSTEM_PATH", DF_BUILD_PLUGIN_PATH, 1);
#endif
	int rc = df_registry_create(&b->reg, err);
	if (!rc)
		rc = df_registry_load_default(b->reg, err);
	if (rc)
		return rc;
	if ((rc = configure(&b->backbone, b->reg, DF_KIND_BACKBONE, o->backbone, o->settings, o->n_settings, err)))
		return rc;
	b->vt = b->backbone.component->vtable;
	if ((rc = df_ctx_create(&b->ctx, "cpu", o->threads, err)))
		return rc;
	df_backbone_shape shape = {
		.input = {o->channels, o->height, o->width},
		.out_channels = o->channels, /* a velocity: no learned variance */
		.num_classes = o->classes,
		.null_class = o->classes > 0,
	};
	if (o->objective) {
		if ((rc = configure(&b->objective, b->reg, DF_KIND_OBJECTIVE, o->objective, o->objective_settings,
		                    o->n_objective_settings, err)))
			return rc;
		b->ovt = b->objective.component->vtable;
		if ((rc = b->ovt->create(b->objective.values, b->ctx, &b->objective_self, err)))
			return df_error_prefix(err, rc, "%s", o->objective);
		shape.out_channels = b->ovt->out_channels(b->objective_self, o->channels);
	}
	if ((rc = b->vt->create(b->backbone.values, b->ctx, &shape, &b->self, err)))
		return rc;
	b->params = b->vt->params(b->self);
	/* The official initialisation, as the peer uses: zeros in the adaLN
	 * and final layers change no op's cost. */
	return b->vt->init(b->self, 0, err);
}

static void model_close(bench_model *b)
{
	if (b->vt && b->self)
		b->vt->destroy(b->self);
	if (b->ovt && b->objective_self)
		b->ovt->destroy(b->objective_self);
	df_ctx_destroy(b->ctx);
	unconfigure(&b->backbone);
	unconfigure(&b->objective);
	df_registry_destroy(b->reg);
}

static void print_header(const char *mode, const options *o, const bench_model *b)
{
	printf("{\"mode\": \"%s\", \"backbone\": \"%s\", \"threads\": %d, \"batch\": %" PRId64
	       ", \"params\": %" PRId64 ", \"trainable\": %" PRId64 ", \"ctx\": \"%s\", \"objective\": \"%s\", ",
	       mode, o->backbone, df_ctx_threads(b->ctx), o->batch, df_params_numel(b->params),
	       df_params_trainable_numel(b->params), df_ctx_describe(b->ctx),
	       o->objective ? o->objective : "built-in velocity");
}

/* ------------------------------------------------------------------ */
/* Training. */

typedef struct train_buffers {
	float *x0, *eps, *x_t, *target, *t;
	int32_t *y;
	int64_t *index;
	float *ema;
} train_buffers;

/* The batch of one step: labels dropped to the null class with
 * probability class_dropout; without an objective plugin also x_t =
 * (1 - t) x0 + t eps and the target eps - x0 (the velocity of the linear
 * path), which an objective draws itself. */
static void draw_batch(const options *o, train_buffers *tb, int64_t step, int own_loss)
{
	const int64_t dim = (int64_t)o->channels * o->height * o->width, n = o->batch;
	df_rng_fill_normal(tb->x0, (size_t)(n * dim), 0, STREAM_X0, (uint64_t)step, 0);
	if (own_loss) {
		df_rng_fill_normal(tb->eps, (size_t)(n * dim), 0, STREAM_EPS, (uint64_t)step, 0);
		df_rng_fill_uniform(tb->t, (size_t)n, 0, STREAM_T, (uint64_t)step, 0);
	}
	for (int64_t i = 0; i < n; i++) {
		float t = tb->t[i];
		tb->index[i] = step * n + i;
		for (int64_t j = i * dim; own_loss && j < (i + 1) * dim; j++) {
			tb->x_t[j] = (1.0f - t) * tb->x0[j] + t * tb->eps[j];
			tb->target[j] = tb->eps[j] - tb->x0[j];
		}
		if (o->classes > 0) {
			tb->y[i] = (int32_t)(df_rng_u32(0, STREAM_LABEL, (uint64_t)step, (uint64_t)i) % (uint32_t)o->classes);
			if (df_rng_uniform(0, STREAM_DROP, (uint64_t)step, (uint64_t)i) < o->class_dropout)
				tb->y[i] = o->classes;
		}
	}
}

/* The model as an objective calls it: labels bound here. */
typedef struct call_ctx {
	bench_model *b;
	const int32_t *y;
} call_ctx;

static int call_backbone(void *ctx, df_graph *g, df_tensor *x_t, df_tensor *t, int hidden_block, df_tensor **hidden,
                         df_tensor **out, df_error *err)
{
	call_ctx *c = ctx;
	df_backbone_input in = {
		.struct_size = sizeof in, .x = x_t, .t = t, .y = c->y, .hidden_block = hidden_block, .hidden = hidden,
	};
	return c->b->vt->forward(c->b->self, g, &in, out, err);
}

static int train_step(const options *o, bench_model *b, df_graph *g, train_buffers *tb, int64_t step,
                      double split[4], df_error *err)
{
	const int64_t n = o->batch;
	const int64_t shape[4] = {n, o->channels, o->height, o->width};
	double t0 = now();
	draw_batch(o, tb, step, !b->ovt);
	df_graph_reset(g);
	df_tensor *x0 = df_tensor_from_host(g, tb->x0, 4, shape);
	df_tensor *x_t = NULL, *target = NULL, *t = NULL;
	if (!b->ovt) {
		x_t = df_tensor_from_host(g, tb->x_t, 4, shape);
		target = df_tensor_from_host(g, tb->target, 4, shape);
		t = df_tensor_from_host(g, tb->t, 1, (const int64_t[]){n});
	}
	double t1 = now();
	call_ctx cc = {b, o->classes > 0 ? tb->y : NULL};
	df_tensor *loss = NULL;
	int rc = df_graph_status(g, err);
	if (!rc && b->ovt) {
		df_loss_batch batch = {
			.struct_size = sizeof batch, .x0 = x0, .y = cc.y, .seed = 0, .step = (uint64_t)step,
			.index = tb->index, .images = x0,
		};
		df_model_call call = {sizeof call, call_backbone, &cc};
		rc = b->ovt->loss(b->objective_self, g, &batch, &call, &loss, err);
	} else if (!rc) {
		df_tensor *out = NULL;
		rc = call_backbone(&cc, g, x_t, t, 0, NULL, &out, err);
		if (!rc)
			loss = df_mean(g, df_mse_per_sample(g, out, target));
	}
	if (rc)
		return rc;
	float value = 0;
	if ((rc = df_graph_status(g, err)) || (rc = df_tensor_read(loss, &value, err)))
		return rc;
	double t2 = now();
	df_params_zero_grad(b->params);
	if ((rc = df_backward(g, loss, err)))
		return rc;
	double t3 = now();
	int64_t count = df_params_trainable_numel(b->params);
	float *values = df_params_block(b->params, DF_PARAMS_VALUES);
	float *grads = df_params_block(b->params, DF_PARAMS_GRADS);
	df_clip_grad_norm(grads, (size_t)count, o->grad_clip);
	df_adamw_config adam = df_adamw_defaults();
	adam.lr = o->lr;
	adam.weight_decay = o->weight_decay;
	if (df_adamw_step(values, grads, df_params_block(b->params, DF_PARAMS_M),
	                  df_params_block(b->params, DF_PARAMS_V), NULL, (size_t)count, &adam, step + 1) != 0)
		return df_error_set(err, DF_EINVAL, "AdamW refused its settings");
	if (tb->ema)
		df_ema_update(tb->ema, values, (size_t)count, df_ema_decay_at((float)o->ema, step, o->ema_warmup));
	double t4 = now();
	split[0] = t1 - t0;
	split[1] = t2 - t1;
	split[2] = t3 - t2;
	split[3] = t4 - t3;
	return DF_OK;
}

static int run_train(const options *o, df_error *err)
{
	bench_model b;
	int rc = model_open(&b, o, err);
	const int64_t elems = o->batch * o->channels * o->height * o->width;
	train_buffers tb = {0};
	df_graph *g = NULL;
	double *times = calloc((size_t)o->steps * 6, sizeof *times);
	if (!rc) {
		tb.x0 = malloc((size_t)elems * sizeof(float));
		tb.eps = malloc((size_t)elems * sizeof(float));
		tb.x_t = malloc((size_t)elems * sizeof(float));
		tb.target = malloc((size_t)elems * sizeof(float));
		tb.t = malloc((size_t)o->batch * sizeof(float));
		tb.y = malloc((size_t)o->batch * sizeof(int32_t));
		tb.index = malloc((size_t)o->batch * sizeof(int64_t));
		if (o->ema > 0) {
			size_t count = (size_t)df_params_trainable_numel(b.params);
			tb.ema = malloc(count * sizeof(float));
			if (tb.ema)
				memcpy(tb.ema, df_params_block(b.params, DF_PARAMS_VALUES), count * sizeof(float));
		}
		g = df_graph_create(b.ctx, 0);
		if (!tb.x0 || !tb.eps || !tb.x_t || !tb.target || !tb.t || !tb.y || !tb.index || (o->ema > 0 && !tb.ema) || !g ||
		    !times)
			rc = df_error_set(err, DF_ENOMEM, "out of memory");
	}
	for (int s = 0; !rc && s < o->warmup + o->steps; s++) {
		double split[4];
		double t0 = now(), c0 = cpu_now();
		rc = train_step(o, &b, g, &tb, s, split, err);
		double dt = now() - t0, dc = cpu_now() - c0;
		if (!rc && s >= o->warmup) {
			int k = s - o->warmup;
			times[k] = dt;
			for (int j = 0; j < 4; j++)
				times[(size_t)(j + 1) * (size_t)o->steps + (size_t)k] = split[j];
			times[(size_t)5 * (size_t)o->steps + (size_t)k] = dc;
		}
	}
	if (!rc) {
		print_header("train", o, &b);
		printf("\"arena_bytes\": %zu, ", df_graph_arena_bytes(g));
		print_times("step_s", times, o->steps, 0);
		print_times("data_s", times + o->steps, o->steps, 0);
		print_times("forward_s", times + 2 * o->steps, o->steps, 0);
		print_times("backward_s", times + 3 * o->steps, o->steps, 0);
		print_times("optimiser_s", times + 4 * o->steps, o->steps, 0);
		print_times("cpu_s", times + 5 * o->steps, o->steps, 1);
		printf("}\n");
	}
	df_graph_destroy(g);
	free(times);
	free(tb.x0);
	free(tb.eps);
	free(tb.x_t);
	free(tb.target);
	free(tb.t);
	free(tb.y);
	free(tb.index);
	free(tb.ema);
	model_close(&b);
	return rc;
}

/* ------------------------------------------------------------------ */
/* Sampling: Euler from t = 1 (noise) towards t = 0 on the linear path,
 * x <- x - dt * v, with v guided from one forward of the doubled batch. */

static int sample_step(const options *o, bench_model *b, df_graph *g, float *x, float *x2, int32_t *y2,
                       float *t2, float *both, float *v, double t, double dt, df_error *err)
{
	const int64_t n = o->batch, dim = (int64_t)o->channels * o->height * o->width;
	const int64_t halves = o->classes > 0 && o->cfg_scale != 1.0 ? 2 : 1;
	for (int64_t h = 0; h < halves; h++)
		memcpy(x2 + h * n * dim, x, (size_t)(n * dim) * sizeof *x);
	for (int64_t i = 0; i < halves * n; i++)
		t2[i] = (float)t;
	df_graph_reset(g);
	df_tensor *xin =
		df_tensor_from_host(g, x2, 4, (const int64_t[]){halves * n, o->channels, o->height, o->width});
	df_tensor *tin = df_tensor_from_host(g, t2, 1, (const int64_t[]){halves * n});
	df_backbone_input in = {.struct_size = sizeof in, .x = xin, .t = tin, .y = o->classes > 0 ? y2 : NULL};
	df_tensor *out = NULL;
	int rc = df_graph_status(g, err);
	if (!rc)
		rc = b->vt->forward(b->self, g, &in, &out, err);
	if (!rc)
		rc = df_tensor_read(out, both, err);
	if (rc)
		return rc;
	if (halves == 2) {
		df_guidance gd = {.scale = o->cfg_scale, .t_lo = 0, .t_hi = 1, .channels = 0};
		df_guidance_combine(&gd, t, both, both + n * dim, v, n, o->channels, o->channels,
		                    (int64_t)o->height * o->width);
	} else {
		memcpy(v, both, (size_t)(n * dim) * sizeof *v);
	}
	for (int64_t j = 0; j < n * dim; j++)
		x[j] -= (float)dt * v[j];
	return DF_OK;
}

static int run_sample(const options *o, df_error *err)
{
	bench_model b;
	int rc = model_open(&b, o, err);
	const int64_t n = o->batch, dim = (int64_t)o->channels * o->height * o->width;
	float *x = malloc((size_t)(n * dim) * sizeof *x);
	float *x2 = malloc((size_t)(2 * n * dim) * sizeof *x2);
	float *both = malloc((size_t)(2 * n * dim) * sizeof *both);
	float *v = malloc((size_t)(n * dim) * sizeof *v);
	float *t2 = malloc((size_t)(2 * n) * sizeof *t2);
	int32_t *y2 = malloc((size_t)(2 * n) * sizeof *y2);
	double *times = calloc((size_t)o->steps * 2, sizeof *times);
	df_graph *g = rc ? NULL : df_graph_create(b.ctx, DF_GRAPH_NO_GRAD);
	if (!rc && (!x || !x2 || !both || !v || !t2 || !y2 || !times || !g))
		rc = df_error_set(err, DF_ENOMEM, "out of memory");
	if (!rc) {
		df_rng_fill_normal(x, (size_t)(n * dim), 0, STREAM_NOISE, 0, 0);
		for (int64_t i = 0; i < n; i++) {
			y2[i] = o->classes > 0 ? (int32_t)(i % o->classes) : 0;
			y2[n + i] = o->classes; /* the null class */
		}
	}
	const int total = o->warmup + o->steps;
	const double dt = 1.0 / total;
	for (int s = 0; !rc && s < total; s++) {
		double t0 = now(), c0 = cpu_now();
		rc = sample_step(o, &b, g, x, x2, y2, t2, both, v, 1.0 - s * dt, dt, err);
		if (s >= o->warmup) {
			times[s - o->warmup] = now() - t0;
			times[o->steps + s - o->warmup] = cpu_now() - c0;
		}
	}
	if (!rc) {
		print_header("sample", o, &b);
		printf("\"guided\": %s, \"cfg_scale\": %g, \"arena_bytes\": %zu, ",
		       o->classes > 0 && o->cfg_scale != 1.0 ? "true" : "false",
		       o->cfg_scale, df_graph_arena_bytes(g));
		print_times("step_s", times, o->steps, 0);
		print_times("cpu_s", times + o->steps, o->steps, 1);
		printf("}\n");
	}
	df_graph_destroy(g);
	free(x);
	free(x2);
	free(both);
	free(v);
	free(t2);
	free(y2);
	free(times);
	model_close(&b);
	return rc;
}

int main(int argc, char **argv)
{
	options o;
	if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
		usage(stdout);
		return 0;
	}
	if (parse(&o, argc, argv) != 0) {
		usage(stderr);
		return 2;
	}
	df_error err = {{0}};
	int rc;
	if (strcmp(o.mode, "sgemm") == 0)
		return run_sgemm(&o);
	else if (strcmp(o.mode, "train") == 0)
		rc = run_train(&o, &err);
	else if (strcmp(o.mode, "sample") == 0)
		rc = run_sample(&o, &err);
	else {
		usage(stderr);
		return 2;
	}
	if (rc) {
		fprintf(stderr, "dit-bench: %s\n", err.msg);
		return 1;
	}
	return 0;
}
