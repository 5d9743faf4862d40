/* The dit and sit backbones against the PyTorch reference
 * (tests/reference/dit_reference.py wrote the golden files), the parameter
 * counts of the paper's configs, the fixed embeddings' check values and the
 * official zero-output initialisation. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>
#include "testutil.h"

#include "diffuse/io.h"
#include "diffuse/tensor.h"
#include "dit_net.h"

#define OUT_TOLERANCE 1e-5
#define GRAD_TOLERANCE 1e-4

/* A context and a model made through the component's vtable. */
typedef struct model_fixture {
	df_ctx *ctx;
	const df_backbone_vtable *vt;
	void *model;
	df_params *params;
} model_fixture;

static void fixture_open(model_fixture *f, const df_component *component, const dit_settings *s,
                         const df_backbone_shape *shape)
{
	df_error err = {{0}};
	memset(f, 0, sizeof(*f));
	if (df_ctx_create(&f->ctx, "cpu", 0, &err) != DF_OK)
		fail_msg("%s", err.msg);
	f->vt = component->vtable;
	if (f->vt->create(s, f->ctx, shape, &f->model, &err) != DF_OK)
		fail_msg("%s", err.msg);
	f->params = f->vt->params(f->model);
}

static void fixture_close(model_fixture *f)
{
	f->vt->destroy(f->model);
	df_ctx_destroy(f->ctx);
}

/* ------------------------------------------------------------------ */
/* Parameter counts (spec table, learn_sigma on, 32x32x4 input, 1000 classes). */

static int64_t count_for(const char *model, int out_channels, int sit_split, int learn_sigma)
{
	dit_settings s = {model, 0, 0, 0, 0, 4.0, learn_sigma};
	df_backbone_shape shape = {{4, 32, 32}, out_channels, 1000, 1};
	dit_config cfg;
	df_error err = {{0}};
	int rc = dit_config_resolve(&cfg, &s, &shape, sit_split ? "sit" : "dit", sit_split, &err);
	if (rc != DF_OK)
		fail_msg("%s: %s", model, err.msg);
	return dit_param_numel(&cfg);
}

static void test_param_counts(void **state)
{
	assert_int_equal(count_for("DiT-S/2", 8, 0, 0), 32963360);
	assert_int_equal(count_for("DiT-B/2", 8, 0, 0), 130512416);
	assert_int_equal(count_for("DiT-L/2", 8, 0, 0), 458102816);
	assert_int_equal(count_for("DiT-XL/2", 8, 0, 0), 675129632);
	assert_int_equal(count_for("DiT-XL/2", 4, 0, 0), 675111184);
	assert_int_equal(count_for("DiT-XL/4", 8, 0, 0), 675074432);
	assert_int_equal(count_for("DiT-XL/8", 8, 0, 0), 675683072);
	/* SiT-XL/2 with learn_sigma returns 4 channels but holds DiT-XL/2's weights. */
	assert_int_equal(count_for("SiT-XL/2", 4, 1, 1), 675129632);
	assert_int_equal(count_for("SiT-XL/2", 4, 1, 0), 675111184);
}

/* The shape-only count equals what a created model registers. */
static void test_registered_count(void **state)
{
	df_error err = {{0}};
	/* A named model's shape with a small width: S/8's depth and patch. */
	dit_settings s = {"DiT-S/8", 0, 64, 4, 0, 4.0, 0};
	df_backbone_shape shape = {{4, 16, 16}, 8, 10, 1};
	model_fixture f;
	fixture_open(&f, &dit_component, &s, &shape);
	dit_config cfg;
	assert_int_equal(dit_config_resolve(&cfg, &s, &shape, "dit", 0, &err), DF_OK);
	assert_int_equal(df_params_numel(f.params), dit_param_numel(&cfg));
	assert_non_null(df_params_find(f.params, "blocks.11.adaLN_modulation.1.bias"));
	assert_null(df_params_find(f.params, "blocks.12.attn.qkv.weight"));
	fixture_close(&f);
}

static void test_bad_settings(void **state)
{
	df_error err = {{0}};
	dit_config cfg;
	df_backbone_shape shape = {{4, 32, 32}, 8, 1000, 1};
	dit_settings custom = {"custom", 4, 0, 3, 4, 4.0, 0};
	assert_int_equal(dit_config_resolve(&cfg, &custom, &shape, "dit", 0, &err), DF_EINVAL);
	assert_non_null(strstr(err.msg, "hidden"));
	dit_settings heads = {"custom", 4, 192, 5, 4, 4.0, 0};
	assert_int_equal(dit_config_resolve(&cfg, &heads, &shape, "dit", 0, &err), DF_EINVAL);
	assert_non_null(strstr(err.msg, "heads"));
	df_backbone_shape odd = {{4, 30, 30}, 8, 1000, 1};
	dit_settings named = {"DiT-S/4", 0, 0, 0, 0, 4.0, 0};
	assert_int_equal(dit_config_resolve(&cfg, &named, &odd, "dit", 0, &err), DF_EINVAL);
	assert_non_null(strstr(err.msg, "patch"));
	dit_settings unknown = {"DiT-M/2", 0, 0, 0, 0, 4.0, 0};
	assert_int_equal(dit_config_resolve(&cfg, &unknown, &shape, "dit", 0, &err), DF_EINVAL);
	/* Overrides on a named model. */
	dit_settings deeper = {"DiT-S/2", 3, 0, 0, 4, 4.0, 0};
	assert_int_equal(dit_config_resolve(&cfg, &deeper, &shape, "dit", 0, &err), DF_OK);
	assert_int_equal(cfg.depth, 3);
	assert_int_equal(cfg.hidden, 384);
	assert_int_equal(cfg.patch, 4);
	assert_int_equal(cfg.tokens, 64);
}

/* ------------------------------------------------------------------ */
/* Fixed embeddings: spec check values. */

static void test_pos_embed(void **state)
{
	float table[4 * 8];
	dit_pos_embed(table, 2, 2, 8);
	const float expect[3][8] = {
		{0, 0, 1, 1, 0, 0, 1, 1},
		{0.841471f, 0.01f, 0.540302f, 0.99995f, 0, 0, 1, 1},
		{0, 0, 1, 1, 0.841471f, 0.01f, 0.540302f, 0.99995f},
	};
	for (int k = 0; k < 3; k++)
		for (int d = 0; d < 8; d++)
			assert_float_equal(table[k * 8 + d], expect[k][d], 2e-6);
}

/* The spec's values are the float64 embedding; the official code computes
 * t * f_m in float32, which moves values by up to ~1e-5 at t = 500. */
static void test_timestep_embedding(void **state)
{
	float t = 500.0f, emb[DIT_FREQ_DIM];
	dit_timestep_freqs(emb, &t, 1);
	const float head[4] = {-0.883849f, 0.945943f, 0.848515f, 0.698688f};
	const float mid[4] = {-0.467772f, 0.324334f, -0.529172f, 0.715426f};
	for (int i = 0; i < 4; i++) {
		assert_float_equal(emb[i], head[i], 2e-5);
		assert_float_equal(emb[128 + i], mid[i], 2e-5);
	}
	assert_float_equal(emb[255], 0.053705f, 2e-5);
	/* The official float32 rounding, bit for bit where exp is exact. */
	assert_float_equal(emb[1], 0.94594574f, 1e-7);
}

/* ------------------------------------------------------------------ */
/* Reading golden files. */

static float *read_tensor(const df_safetensors *file, const char *name, size_t *count)
{
	const df_safetensors_tensor *t = df_safetensors_find(file, name);
	if (!t)
		fail_msg("golden file has no tensor %s", name);
	float *values = malloc(t->nelem * sizeof(float));
	df_error err = {{0}};
	assert_non_null(values);
	if (df_safetensors_read_f32(file, t, values, t->nelem, &err) != 0)
		fail_msg("%s", err.msg);
	if (count)
		*count = t->nelem;
	return values;
}

static df_safetensors *open_golden(const char *file_name)
{
	char path[1024];
	df_safetensors *file = NULL;
	df_error err = {{0}};
	snprintf(path, sizeof(path), "%s/%s", DIT_TEST_DATA_DIR, file_name);
	if (df_safetensors_open(&file, path, &err) != 0)
		fail_msg("%s", err.msg);
	return file;
}

/* max |got - ref| over max |ref|; prints the first mismatches beyond the
 * tolerance, as llm.c's test does. */
static double compare(const char *label, const float *got, const float *ref, size_t n, double tol)
{
	double scale = 0, worst = 0;
	for (size_t i = 0; i < n; i++)
		scale = fmax(scale, fabs(ref[i]));
	if (scale == 0)
		scale = 1;
	int shown = 0;
	for (size_t i = 0; i < n; i++) {
		double rel = fabs((double)got[i] - ref[i]) / scale;
		worst = fmax(worst, rel);
		if (rel > tol && shown < 5) {
			printf("  MISMATCH %s[%zu]: %.8g vs reference %.8g (relative %.3g > %.0e)\n", label, i, got[i],
			       ref[i], rel, tol);
			shown++;
		}
	}
	printf("  %-44s max relative error %.3g (tolerance %.0e) %s\n", label, worst, tol,
	       worst <= tol ? "ok" : "FAIL");
	return worst;
}

typedef struct parity_case {
	const df_component *component;
	const char *prefix;     /* "dit", "sit" */
	dit_settings settings;
	df_backbone_shape shape;
} parity_case;

static void run_parity(const parity_case *pc)
{
	char name[256];
	df_error err = {{0}};
	model_fixture f;
	fixture_open(&f, pc->component, &pc->settings, &pc->shape);
	df_params *params = f.params;

	snprintf(name, sizeof(name), "%s/%s_tiny_weights.safetensors", DIT_TEST_DATA_DIR, pc->prefix);
	if (dit_model_load(f.model, name, &err) != DF_OK)
		fail_msg("%s", err.msg);

	snprintf(name, sizeof(name), "%s_tiny_inputs.safetensors", pc->prefix);
	df_safetensors *inputs = open_golden(name);
	snprintf(name, sizeof(name), "%s_tiny_out.safetensors", pc->prefix);
	df_safetensors *golden = open_golden(name);
	const df_safetensors_tensor *xt = df_safetensors_find(inputs, "x");
	assert_non_null(xt);
	size_t n = 0, n_out = 0, n_hidden = 0;
	float *x = read_tensor(inputs, "x", NULL);
	float *t = read_tensor(inputs, "t", &n);
	const df_safetensors_tensor *yt = df_safetensors_find(inputs, "y");
	assert_non_null(yt);
	int64_t y64[16];
	int32_t y[16];
	assert_true(yt->nelem == n && n <= 16);
	assert_int_equal(df_safetensors_read_i64(inputs, yt, y64, n, &err), 0);
	for (size_t i = 0; i < n; i++)
		y[i] = (int32_t)y64[i];
	float *ref_out = read_tensor(golden, "out", &n_out);
	float *ref_hidden = read_tensor(golden, "hidden.1", &n_hidden);
	float *w = read_tensor(golden, "w", NULL);

	df_graph *g = df_graph_create(f.ctx, 0);
	assert_non_null(g);
	df_tensor *x_dev = df_tensor_from_host(g, x, xt->ndim, xt->shape);
	df_tensor *t_dev = df_tensor_from_host(g, t, DF_SHAPE((int64_t)n));
	df_tensor *hidden = NULL, *out = NULL;
	df_backbone_input in = {sizeof(in), x_dev, t_dev, y, NULL, 1, &hidden};
	if (f.vt->forward(f.model, g, &in, &out, &err) != DF_OK)
		fail_msg("%s", err.msg);
	assert_non_null(hidden);
	assert_int_equal(out->numel, (int64_t)n_out);
	assert_int_equal(hidden->numel, (int64_t)n_hidden);

	printf("%s parity against the PyTorch reference:\n", pc->prefix);
	float *got = malloc(n_out * sizeof(float));
	float *got_hidden = malloc(n_hidden * sizeof(float));
	assert_non_null(got);
	assert_non_null(got_hidden);
	assert_int_equal(df_tensor_read(out, got, &err), DF_OK);
	assert_int_equal(df_tensor_read(hidden, got_hidden, &err), DF_OK);
	int failures = 0;
	failures += compare("out", got, ref_out, n_out, OUT_TOLERANCE) > OUT_TOLERANCE;
	failures += compare("hidden.1", got_hidden, ref_hidden, n_hidden, OUT_TOLERANCE) > OUT_TOLERANCE;

	/* d/dparams of sum(out * w). */
	df_params_zero_grad(params);
	df_tensor *w_dev = df_tensor_from_host(g, w, out->ndim, out->shape);
	df_tensor *loss = df_sum(g, df_mul(g, out, w_dev));
	if (df_backward(g, loss, &err) != DF_OK)
		fail_msg("%s", err.msg);
	size_t checked = 0;
	for (size_t i = 0; i < df_params_count(params); i++) {
		df_tensor *p = df_params_at(params, i);
		snprintf(name, sizeof(name), "grad.%s", p->name);
		const df_safetensors_tensor *ref_t = df_safetensors_find(golden, name);
		if (p->flags & DF_TENSOR_FROZEN) {
			assert_null(ref_t); /* pos_embed: frozen on both sides */
			continue;
		}
		size_t count = 0;
		float *ref_grad = read_tensor(golden, name, &count);
		float *grad = malloc(count * sizeof(float));
		assert_non_null(grad);
		assert_int_equal(p->numel, (int64_t)count);
		assert_int_equal(df_tensor_read_grad(p, grad, &err), DF_OK);
		failures += compare(name, grad, ref_grad, count, GRAD_TOLERANCE) > GRAD_TOLERANCE;
		checked++;
		free(grad);
		free(ref_grad);
	}
	assert_int_equal(checked + 1, df_params_count(params));
	assert_int_equal(failures, 0);

	free(got);
	free(got_hidden);
	free(x);
	free(t);
	free(ref_out);
	free(ref_hidden);
	free(w);
	df_safetensors_close(inputs);
	df_safetensors_close(golden);
	df_graph_destroy(g);
	fixture_close(&f);
}

static const parity_case dit_case = {
	&dit_component, "dit", {"custom", 2, 12, 2, 2, 4.0, 0}, {{4, 8, 8}, 8, 10, 1},
};
static const parity_case sit_case = {
	&sit_component, "sit", {"custom", 2, 8, 2, 4, 2.0, 1}, {{4, 8, 8}, 4, 10, 1},
};

/* ------------------------------------------------------------------ */
/* The same through `diffuse forward`: the command a user runs to compare
 * the C network with PyTorch. Needs the build tree (make check). */

extern char **environ;

static int run_program(char *const argv[])
{
	pid_t pid;
	int status = 0;
	fflush(stdout); /* keep this test's lines before the program's */
	if (posix_spawn(&pid, argv[0], NULL, NULL, argv, environ) != 0 || waitpid(pid, &status, 0) < 0)
		return -1;
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* Runs diffuse forward on the golden inputs; returns its exit status. */
static int run_forward(const char *prefix, const char *num_classes, const char *out_channels, const char *out)
{
	const char *build = getenv("DF_TOP_BUILDDIR"), *source = getenv("DF_TOP_SRCDIR");
	char program[1024], cfg[1024], weights[1024], inputs[1024], golden[1024];
	snprintf(program, sizeof(program), "%s/host/diffuse", build);
	snprintf(cfg, sizeof(cfg), "%s/tests/reference/%s_tiny.cfg", source, prefix);
	snprintf(weights, sizeof(weights), "%s/%s_tiny_weights.safetensors", DIT_TEST_DATA_DIR, prefix);
	snprintf(inputs, sizeof(inputs), "%s/%s_tiny_inputs.safetensors", DIT_TEST_DATA_DIR, prefix);
	snprintf(golden, sizeof(golden), "%s/%s_tiny_out.safetensors", DIT_TEST_DATA_DIR, prefix);
	char *argv[] = {program, "forward", cfg, "--num-classes", (char *)num_classes, "--out-channels",
	                (char *)out_channels, "--weights", weights, "--inputs", inputs, "--grad-weights", golden,
	                "--out", (char *)out, NULL};
	return run_program(argv);
}

static void check_forward_command(const char *dir, const char *prefix, const char *out_channels)
{
	char name[256];
	char *out_path = path_join(dir, "out.safetensors");
	assert_int_equal(run_forward(prefix, "10", out_channels, out_path), 0);
	df_safetensors *got = NULL;
	df_error err = {{0}};
	if (df_safetensors_open(&got, out_path, &err) != 0)
		fail_msg("%s", err.msg);
	snprintf(name, sizeof(name), "%s_tiny_out.safetensors", prefix);
	df_safetensors *golden = open_golden(name);
	printf("diffuse forward on %s:\n", prefix);
	size_t compared = 0;
	int failures = 0;
	for (size_t i = 0; i < df_safetensors_count(golden); i++) {
		const char *tensor = df_safetensors_tensor_at(golden, i)->name;
		int is_grad = strncmp(tensor, "grad.", 5) == 0;
		if (!is_grad && strcmp(tensor, "out") != 0)
			continue;
		size_t n_ref = 0, n_got = 0;
		float *ref = read_tensor(golden, tensor, &n_ref), *values = read_tensor(got, tensor, &n_got);
		assert_int_equal(n_ref, n_got);
		double tol = is_grad ? GRAD_TOLERANCE : OUT_TOLERANCE;
		failures += compare(tensor, values, ref, n_ref, tol) > tol;
		compared++;
		free(ref);
		free(values);
	}
	assert_int_equal(compared + 2, df_safetensors_count(golden)); /* all but w and hidden.1 */
	assert_int_equal(compared, df_safetensors_count(got));
	assert_int_equal(failures, 0);
	df_safetensors_close(golden);
	df_safetensors_close(got);
	free(out_path);
}

static void test_forward_command(void **state)
{
	if (!getenv("DF_TOP_BUILDDIR") || !getenv("DF_TOP_SRCDIR"))
		skip();
	char *dir = make_temp_dir();
	check_forward_command(dir, "dit", "8");
	check_forward_command(dir, "sit", "4");
	/* A model of another shape is refused (exit 1) and writes nothing. */
	char *refused = path_join(dir, "refused.safetensors");
	assert_int_equal(run_forward("dit", "9", "8", refused), 1);
	assert_int_equal(run_forward("sit", "10", "8", refused), 1);
	assert_int_equal(access(refused, F_OK), -1);
	free(refused);
	remove_tree(dir);
	free(dir);
}

static void test_dit_parity(void **state)
{
	run_parity(&dit_case);
}

static void test_sit_parity(void **state)
{
	run_parity(&sit_case);
}

/* Loading into a model of another shape names the tensor and the setting. */
static void expect_load_error(const parity_case *pc, const char *tensor, const char *setting)
{
	char path[1024];
	df_error err = {{0}};
	model_fixture f;
	fixture_open(&f, pc->component, &pc->settings, &pc->shape);
	snprintf(path, sizeof(path), "%s/%s_tiny_weights.safetensors", DIT_TEST_DATA_DIR, pc->prefix);
	assert_int_equal(dit_model_load(f.model, path, &err), DF_EINVAL);
	printf("  refused as expected: %s\n", err.msg);
	assert_non_null(strstr(err.msg, tensor));
	assert_non_null(strstr(err.msg, setting));
	fixture_close(&f);
}

static void test_load_mismatch(void **state)
{
	parity_case pc = dit_case;
	pc.shape.num_classes = 9;
	expect_load_error(&pc, "y_embedder.embedding_table.weight", "num_classes");
	pc = dit_case;
	pc.shape.out_channels = 4; /* no learned sigma */
	expect_load_error(&pc, "final_layer.linear.weight", "learn_sigma");
	pc = sit_case;
	pc.settings.learn_sigma = 0;
	expect_load_error(&pc, "final_layer.linear.weight", "learn_sigma");
	pc = dit_case;
	pc.settings.depth = 3;
	expect_load_error(&pc, "blocks.2.", "depth");
	pc = dit_case;
	pc.settings.depth = 1;
	expect_load_error(&pc, "blocks.1.", "depth");
	pc = dit_case;
	pc.settings.mlp_ratio = 2.0;
	expect_load_error(&pc, "blocks.0.mlp.fc1.weight", "mlp_ratio");
	pc = dit_case;
	pc.settings.hidden = 16;
	expect_load_error(&pc, "pos_embed", "hidden");
}

/* ------------------------------------------------------------------ */
/* The official initialisation: the model outputs exactly zero, every
 * block is the identity, and the drawn weights are in their ranges. */

static void test_zero_at_init(void **state)
{
	df_error err = {{0}};
	dit_settings s = {"custom", 2, 32, 4, 2, 4.0, 0};
	df_backbone_shape shape = {{4, 8, 8}, 8, 10, 1};
	model_fixture f;
	fixture_open(&f, &dit_component, &s, &shape);
	const df_backbone_vtable *vt = f.vt;
	void *model = f.model;
	df_params *params = f.params;
	assert_int_equal(vt->init(model, 7, &err), DF_OK);

	/* Xavier bound of qkv: sqrt(6 / (32 + 96)). */
	df_tensor *qkv = df_params_find(params, "blocks.0.attn.qkv.weight");
	float *values = malloc((size_t)qkv->numel * sizeof(float));
	assert_non_null(values);
	assert_int_equal(df_tensor_read(qkv, values, &err), DF_OK);
	float bound = sqrtf(6.0f / 128.0f), largest = 0;
	for (int64_t i = 0; i < qkv->numel; i++)
		largest = fmaxf(largest, fabsf(values[i]));
	assert_true(largest <= bound && largest > 0.9f * bound);
	free(values);

	float x[2 * 4 * 8 * 8], t[2] = {3.0f, 700.0f};
	for (size_t i = 0; i < sizeof(x) / sizeof(x[0]); i++)
		x[i] = sinf((float)i);
	int32_t y[2] = {1, 10};
	df_graph *g = df_graph_create(f.ctx, DF_GRAPH_NO_GRAD);
	df_tensor *hidden = NULL, *out = NULL;
	df_backbone_input in = {sizeof(in), df_tensor_from_host(g, x, DF_SHAPE(2, 4, 8, 8)),
	                        df_tensor_from_host(g, t, DF_SHAPE(2)), y, NULL, 2, &hidden};
	assert_int_equal(vt->forward(model, g, &in, &out, &err), DF_OK);
	assert_int_equal(out->shape[1], 8);
	float result[2 * 8 * 8 * 8];
	assert_int_equal(df_tensor_read(out, result, &err), DF_OK);
	for (size_t i = 0; i < sizeof(result) / sizeof(result[0]); i++)
		assert_true(result[i] == 0.0f);

	/* Identity blocks: the tokens after the last block are the embedded patches. */
	df_tensor *tokens = df_add(g, df_linear(g, df_patchify(g, in.x, 2),
	                                        df_reshape(g, df_params_find(params, "x_embedder.proj.weight"),
	                                                   DF_SHAPE(32, 16)),
	                                        df_params_find(params, "x_embedder.proj.bias")),
	                           df_params_find(params, "pos_embed"));
	assert_non_null(tokens);
	float a[2 * 16 * 32], b[2 * 16 * 32];
	assert_int_equal(df_tensor_read(tokens, a, &err), DF_OK);
	assert_int_equal(df_tensor_read(hidden, b, &err), DF_OK);
	for (size_t i = 0; i < sizeof(a) / sizeof(a[0]); i++)
		assert_true(a[i] == b[i]);

	/* Gradients reach the final linear first: everything before it sits
	 * behind zero weights. */
	df_graph *train = df_graph_create(f.ctx, 0);
	df_params_zero_grad(params);
	in.x = df_tensor_from_host(train, x, DF_SHAPE(2, 4, 8, 8));
	in.t = df_tensor_from_host(train, t, DF_SHAPE(2));
	in.hidden_block = 0;
	assert_int_equal(vt->forward(model, train, &in, &out, &err), DF_OK);
	assert_int_equal(df_backward(train, df_sum(train, df_mul(train, out, df_add_scalar(train, out, 1.0f))), &err),
	                 DF_OK);
	for (size_t i = 0; i < df_params_count(params); i++) {
		df_tensor *p = df_params_at(params, i);
		if (p->flags & DF_TENSOR_FROZEN)
			continue;
		float *grad = malloc((size_t)p->numel * sizeof(float));
		assert_non_null(grad);
		assert_int_equal(df_tensor_read_grad(p, grad, &err), DF_OK);
		double norm = 0;
		for (int64_t e = 0; e < p->numel; e++)
			norm += fabs(grad[e]);
		int final_linear = strncmp(p->name, "final_layer.linear.", 19) == 0;
		if (final_linear != (norm > 0))
			fail_msg("%s: gradient norm %g at init", p->name, norm);
		free(grad);
	}
	df_graph_destroy(train);

	/* The same seed gives the same weights. */
	size_t total = (size_t)df_params_numel(params);
	float *first = malloc(total * sizeof(float)), *second = malloc(total * sizeof(float));
	assert_non_null(first);
	assert_non_null(second);
	assert_int_equal(df_params_read(params, first, &err), DF_OK);
	assert_int_equal(vt->init(model, 7, &err), DF_OK);
	assert_int_equal(df_params_read(params, second, &err), DF_OK);
	assert_memory_equal(first, second, total * sizeof(float));
	free(first);
	free(second);
	df_graph_destroy(g);
	fixture_close(&f);
}

/* Bad forward inputs are errors, never crashes. */
static void test_bad_inputs(void **state)
{
	df_error err = {{0}};
	model_fixture f;
	fixture_open(&f, &sit_component, &sit_case.settings, &sit_case.shape);
	const df_backbone_vtable *vt = f.vt;
	void *model = f.model;
	df_graph *g = df_graph_create(f.ctx, DF_GRAPH_NO_GRAD);
	float x[4 * 8 * 8] = {0}, t[1] = {0.5f};
	int32_t bad_label[1] = {11};
	df_tensor *x_dev = df_tensor_from_host(g, x, DF_SHAPE(1, 4, 8, 8));
	df_tensor *t_dev = df_tensor_from_host(g, t, DF_SHAPE(1));
	df_tensor *out = NULL, *hidden = NULL;
	df_backbone_input in = {sizeof(in), x_dev, t_dev, bad_label, NULL, 0, NULL};
	assert_int_equal(vt->forward(model, g, &in, &out, &err), DF_EINVAL);
	assert_non_null(strstr(err.msg, "label 11"));
	in.y = NULL; /* the null class */
	in.hidden_block = 3;
	in.hidden = &hidden;
	assert_int_equal(vt->forward(model, g, &in, &out, &err), DF_EINVAL);
	assert_non_null(strstr(err.msg, "hidden_block"));
	in.hidden_block = 0;
	in.x = df_tensor_from_host(g, x, DF_SHAPE(1, 4, 4, 16));
	assert_int_equal(vt->forward(model, g, &in, &out, &err), DF_EINVAL);
	in.x = x_dev;
	assert_int_equal(vt->forward(model, g, &in, &out, &err), DF_OK);
	assert_int_equal(out->shape[1], 4);
	df_graph_destroy(g);
	fixture_close(&f);
}

/* Sampling (no-grad) reuses the arena block by block: the output and the
 * hidden state are bitwise those of a recording forward, which keeps every
 * activation, at a fraction of the arena. DiT-S/2-like: 12 blocks. */
static void test_no_grad_arena(void **state)
{
	(void)state;
	df_error err = {{0}};
	dit_settings s = {"custom", 12, 192, 3, 2, 4.0, 1};
	df_backbone_shape shape = {{4, 32, 32}, 8, 1000, 1};
	model_fixture f;
	fixture_open(&f, &dit_component, &s, &shape);
	size_t total = (size_t)df_params_numel(f.params);
	float *weights = malloc(total * sizeof(float));
	assert_non_null(weights);
	for (size_t i = 0; i < total; i++) /* not the zero init: every block must count */
		weights[i] = 0.05f * sinf(0.37f * (float)i);
	assert_int_equal(df_params_write(f.params, weights, &err), DF_OK);
	free(weights);

	enum { N = 2, X = N * 4 * 32 * 32, OUT = N * 8 * 32 * 32, HIDDEN = N * 256 * 192 };
	static float x[X], result[2][OUT], hidden_values[2][HIDDEN];
	for (int i = 0; i < X; i++)
		x[i] = cosf(0.11f * (float)i);
	float t[N] = {20.0f, 800.0f};
	int32_t y[N] = {3, 999};
	size_t arena[2];
	for (int mode = 0; mode < 2; mode++) {
		df_graph *g = df_graph_create(f.ctx, mode ? DF_GRAPH_NO_GRAD : 0);
		df_tensor *hidden = NULL, *out = NULL;
		df_backbone_input in = {sizeof(in), df_tensor_from_host(g, x, DF_SHAPE(N, 4, 32, 32)),
		                        df_tensor_from_host(g, t, DF_SHAPE(N)), y, NULL, 5, &hidden};
		if (f.vt->forward(f.model, g, &in, &out, &err) != DF_OK)
			fail_msg("%s", err.msg);
		assert_int_equal(df_tensor_read(out, result[mode], &err), DF_OK);
		assert_int_equal(df_tensor_read(hidden, hidden_values[mode], &err), DF_OK);
		arena[mode] = df_graph_arena_bytes(g);
		df_graph_destroy(g);
	}
	assert_memory_equal(result[0], result[1], sizeof(result[0]));
	assert_memory_equal(hidden_values[0], hidden_values[1], sizeof(hidden_values[0]));
	printf("arena for one forward: %zu bytes recording, %zu without a tape\n", arena[0], arena[1]);
	assert_true(arena[1] * 3 < arena[0]);
	fixture_close(&f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_param_counts),
		cmocka_unit_test(test_registered_count),
		cmocka_unit_test(test_bad_settings),
		cmocka_unit_test(test_pos_embed),
		cmocka_unit_test(test_timestep_embedding),
		cmocka_unit_test(test_dit_parity),
		cmocka_unit_test(test_sit_parity),
		cmocka_unit_test(test_load_mismatch),
		cmocka_unit_test(test_forward_command),
		cmocka_unit_test(test_zero_at_init),
		cmocka_unit_test(test_bad_inputs),
		cmocka_unit_test(test_no_grad_arena),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
