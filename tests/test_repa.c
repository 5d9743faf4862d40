/* REPA, loaded as plugins: the repa objective on a small SiT and the
 * representation encoders.
 *
 * - Gradient flow: the REPA term's gradient (the loss gradient with
 *   proj_coeff 1 minus the one with 0, same batch and noise) reaches the
 *   projector and the blocks up to k, and is zero for the later blocks and
 *   the final layer; the frozen encoder's weights get no gradient at all.
 * - The alignment term against central finite differences in the projector's
 *   weights (the base loss does not depend on them).
 * - dinov2 against the PyTorch reference (tests/reference/dinov2_reference.py)
 *   on random weights: patch tokens within 1e-5 relative; another image
 *   size resamples the positions.
 * - fmnist-features: the announced grid and a refusal of wrong images. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include "diffuse/io.h"
#include "diffuse/rng.h"
#include "diffuse/runtime.h"
#include "diffuse/tensor.h"

#define BATCH 3
#define SIDE 32
#define DEPTH 4
#define K 2

static df_ctx *ctx;
static df_registry *reg;

static int setup(void **state)
{
	(void)state;
	df_error err;
	if (df_ctx_create(&ctx, "cpu", 1, &err) || df_registry_create(&reg, &err) ||
	    df_registry_load_path(reg, DF_TEST_PLUGIN_PATH, NULL, &err)) {
		fprintf(stderr, "setup: %s\n", err.msg);
		return -1;
	}
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	df_registry_destroy(reg);
	df_ctx_destroy(ctx);
	return 0;
}

/* A component with its settings: defaults, then "key", "value" pairs. */
typedef struct made {
	const df_component *c;
	void *settings;
	void *self;
} made;

static void settings_of(made *m, df_kind kind, const char *name, const char *const *pairs)
{
	const df_component_info *info = df_registry_find(reg, kind, name);
	assert_non_null(info);
	m->c = info->component;
	m->settings = calloc(1, m->c->settings_size);
	assert_non_null(m->settings);
	df_error err;
	assert_int_equal(df_settings_defaults(m->c->settings, m->settings, &err), 0);
	for (int i = 0; pairs && pairs[i]; i += 2)
		if (df_settings_set(m->c->settings, m->settings, pairs[i], pairs[i + 1], &err)) {
			fprintf(stderr, "%s\n", err.msg);
			fail();
		}
}

static void made_free(made *m)
{
	df_settings_release(m->c->settings, m->settings);
	free(m->settings);
}

/* ------------------------------------------------------------------ */
/* The objective on a small SiT. */

typedef struct rig {
	made backbone, objective;
	const df_backbone_vtable *bb;
	const df_objective_vtable *ob;
	int32_t labels[BATCH];
	float images[BATCH * SIDE * SIDE];
	int64_t index[BATCH];
} rig;

static int call_model(void *vctx, df_graph *g, df_tensor *x_t, df_tensor *t, int hidden_block, df_tensor **hidden,
                      df_tensor **out, df_error *err)
{
	rig *r = vctx;
	df_backbone_input in = {sizeof in, x_t, t, r->labels, NULL, hidden_block, hidden};
	return r->bb->forward(r->backbone.self, g, &in, out, err);
}

static int call_probe(void *vctx, df_graph *g, df_tensor *x_t, df_tensor *t, int hidden_block, df_tensor **hidden,
                      df_tensor **out, df_error *err)
{
	rig *r = vctx;
	df_backbone_input in = {sizeof in, x_t, t, NULL, NULL, hidden_block, hidden};
	return r->bb->forward(r->backbone.self, g, &in, out, err);
}

static void rig_open(rig *r, const char *coeff)
{
	memset(r, 0, sizeof *r);
	static const char *const sit[] = {"model", "custom", "depth", "4", "hidden", "32", "heads", "2",
	                                  "patch", "4", "learn_sigma", "false", NULL};
	const char *const repa[] = {"proj_coeff", coeff, "encoder_depth", "2", "projector_dim", "24",
	                            "base_settings", "path=linear", "encoder_settings", "weights=" DF_TEST_WEIGHTS, NULL};
	settings_of(&r->backbone, DF_KIND_BACKBONE, "sit", sit);
	settings_of(&r->objective, DF_KIND_OBJECTIVE, "repa", repa);
	r->bb = r->backbone.c->vtable;
	r->ob = r->objective.c->vtable;
	df_error err;
	df_backbone_shape shape = {{1, SIDE, SIDE}, 1, 10, 1};
	if (r->ob->create(r->objective.settings, ctx, &r->objective.self, &err) ||
	    r->bb->create(r->backbone.settings, ctx, &shape, &r->backbone.self, &err) ||
	    r->bb->init(r->backbone.self, 5, &err)) {
		fprintf(stderr, "%s\n", err.msg);
		fail();
	}
	/* Away from adaLN-Zero's initialisation, where the zero final layer
	 * and gates would stop every gradient of the denoising loss. */
	df_params *bp = r->bb->params(r->backbone.self);
	float *v = df_params_block(bp, DF_PARAMS_VALUES);
	for (int64_t i = 0; i < df_params_trainable_numel(bp); i++)
		v[i] += 0.05f * (float)df_rng_normal(9, 0, 0, (uint64_t)i);
	const df_objective_model_hook *hook = r->ob->extension(r->objective.self, DF_OBJECTIVE_MODEL_ACCESS);
	assert_non_null(hook);
	assert_null(r->ob->params(r->objective.self)); /* nothing before attach */
	df_model_call probe = {sizeof probe, call_probe, r};
	df_shape3 image = {1, SIDE, SIDE};
	if (hook->attach(r->objective.self, &probe, image, image, 11, &err)) {
		fprintf(stderr, "%s\n", err.msg);
		fail();
	}
	assert_non_null(r->ob->params(r->objective.self));
	/* Fashion-MNIST-like images: a bright blob on the padded grid. */
	for (int i = 0; i < BATCH; i++) {
		r->labels[i] = i % 10;
		r->index[i] = i;
		for (int y = 0; y < SIDE; y++)
			for (int x = 0; x < SIDE; x++) {
				double d = hypot(x - 12.0 - 3 * i, y - 16.0) / 7.0;
				r->images[(i * SIDE + y) * SIDE + x] =
					(float)(d < 1 ? 1 - 2 * d * d : -1) + 0.1f * (float)df_rng_uniform(3, 0, i, y * SIDE + x);
			}
	}
}

static void rig_close(rig *r)
{
	r->bb->destroy(r->backbone.self);
	r->ob->destroy(r->objective.self);
	made_free(&r->backbone);
	made_free(&r->objective);
}

/* Zeroes the gradients, builds the loss of the fixed batch at step 7 and
 * runs backward; returns the loss. */
static float rig_step(rig *r, int backward)
{
	df_params *bp = r->bb->params(r->backbone.self), *op = r->ob->params(r->objective.self);
	df_params_zero_grad(bp);
	df_params_zero_grad(op);
	df_graph *g = df_graph_create(ctx, backward ? 0 : DF_GRAPH_NO_GRAD);
	df_tensor *x = df_tensor_from_host(g, r->images, DF_SHAPE(BATCH, 1, SIDE, SIDE));
	df_loss_batch batch = {sizeof batch, x, r->labels, 1, 7, r->index, x, NULL, NULL};
	df_model_call call = {sizeof call, call_model, r};
	df_tensor *loss = NULL;
	df_error err;
	float value = NAN;
	if (r->ob->loss(r->objective.self, g, &batch, &call, &loss, &err) || df_tensor_read(loss, &value, &err) ||
	    (backward && df_backward(g, loss, &err))) {
		fprintf(stderr, "%s\n", err.msg);
		fail();
	}
	df_graph_destroy(g);
	return value;
}

/* Host copy of a block's gradients. */
static float *grads_of(df_params *p)
{
	int64_t n = df_params_numel(p);
	float *g = calloc((size_t)n, sizeof *g);
	assert_non_null(g);
	memcpy(g, df_params_block(p, DF_PARAMS_GRADS), (size_t)n * sizeof *g);
	return g;
}

/* Largest |a - b| and |a| over the tensors whose names start with prefix. */
static void compare_prefix(df_params *p, const float *a, const float *b, const char *prefix, double *diff,
                           double *size)
{
	*diff = *size = 0;
	for (size_t i = 0; i < df_params_count(p); i++) {
		const df_tensor *t = df_params_at(p, i);
		if (strncmp(t->name, prefix, strlen(prefix)) != 0 || (t->flags & DF_TENSOR_FROZEN))
			continue;
		int64_t at = df_params_offset(p, i);
		for (int64_t k = 0; k < t->numel; k++) {
			*diff = fmax(*diff, fabs((double)a[at + k] - b[at + k]));
			*size = fmax(*size, fabs((double)a[at + k]));
		}
	}
}

static void test_gradient_flow(void **state)
{
	(void)state;
	rig with, without;
	rig_open(&with, "1");
	rig_open(&without, "0");
	float lw = rig_step(&with, 1), lo = rig_step(&without, 1);
	/* the alignment term is -mean cos: within [-1, 1] */
	assert_true(isfinite(lw) && fabsf(lw - lo) <= 1.0f);
	df_params *pw = with.bb->params(with.backbone.self), *po = without.bb->params(without.backbone.self);
	float *gw = grads_of(pw), *go = grads_of(po);
	double diff, size;
	/* blocks 0 .. k-1 (1-indexed 1 .. k) and the embedders before them */
	static const char *const reached[] = {"blocks.0.", "blocks.1.", "x_embedder.", "t_embedder.", "y_embedder."};
	for (size_t i = 0; i < sizeof reached / sizeof *reached; i++) {
		compare_prefix(pw, gw, go, reached[i], &diff, &size);
		if (!(diff > 1e-4 * size && diff > 0))
			fail_msg("%s: the REPA term's gradient is %g (of %g): it should reach it", reached[i], diff, size);
	}
	/* past block k: the two losses' gradients agree to rounding */
	static const char *const past[] = {"blocks.2.", "blocks.3.", "final_layer."};
	for (size_t i = 0; i < sizeof past / sizeof *past; i++) {
		compare_prefix(pw, gw, go, past[i], &diff, &size);
		if (!(size > 0) || diff > 1e-6 * size)
			fail_msg("%s: the REPA term's gradient is %g (of %g): it must be zero past block %d", past[i], diff,
			         size, K);
	}
	/* the projector: trained by the term alone */
	df_params *qw = with.ob->params(with.objective.self), *qo = without.ob->params(without.objective.self);
	float *hw = grads_of(qw), *ho = grads_of(qo);
	double wmax = 0, omax = 0;
	for (int64_t i = 0; i < df_params_numel(qw); i++) {
		wmax = fmax(wmax, fabs(hw[i]));
		omax = fmax(omax, fabs(ho[i]));
	}
	assert_true(wmax > 1e-6);
	assert_true(omax == 0.0);
	/* the frozen encoder: no gradient at all */
	df_params *enc = with.ob->extension(with.objective.self, "repa-encoder-params");
	assert_non_null(enc);
	const float *eg = df_params_block(enc, DF_PARAMS_GRADS);
	for (int64_t i = 0; eg && i < df_params_numel(enc); i++)
		if (eg[i] != 0.0f)
			fail_msg("encoder gradient %g at %lld", (double)eg[i], (long long)i);
	free(gw);
	free(go);
	free(hw);
	free(ho);
	rig_close(&with);
	rig_close(&without);
}

/* d loss / d theta for some projector weights, against central
 * differences of the loss (the alignment term: the base ignores them). */
static void test_alignment_finite_differences(void **state)
{
	(void)state;
	rig r;
	rig_open(&r, "1");
	rig_step(&r, 1);
	df_params *p = r.ob->params(r.objective.self);
	float *analytic = grads_of(p);
	float *values = df_params_block(p, DF_PARAMS_VALUES);
	int checked = 0;
	for (size_t i = 0; i < df_params_count(p); i++) {
		const df_tensor *t = df_params_at(p, i);
		int64_t at = df_params_offset(p, i);
		for (int s = 0; s < 4; s++) {
			int64_t k = at + (int64_t)((uint64_t)(s * 7919 + 13) % (uint64_t)t->numel);
			const float h = 1e-2f, keep = values[k];
			values[k] = keep + h;
			double up = rig_step(&r, 0);
			values[k] = keep - h;
			double down = rig_step(&r, 0);
			values[k] = keep;
			double fd = (up - down) / (2.0 * h), an = analytic[k];
			if (fabs(fd - an) > 2e-2 * fabs(an) + 2e-4)
				fail_msg("%s[%lld]: analytic %g, finite differences %g", t->name, (long long)(k - at), an, fd);
			checked += fabs(an) > 1e-4;
		}
	}
	assert_true(checked >= 6); /* most entries carry a gradient worth checking */
	free(analytic);
	rig_close(&r);
}

/* Without attach the loss refuses with a message; the base's process is
 * the objective's. */
static void test_unattached(void **state)
{
	(void)state;
	made o;
	static const char *const pairs[] = {"base", "ddpm", "base_settings", "loss = hybrid", NULL};
	settings_of(&o, DF_KIND_OBJECTIVE, "repa", pairs);
	const df_objective_vtable *ob = o.c->vtable;
	df_error err;
	assert_int_equal(ob->create(o.settings, ctx, &o.self, &err), 0);
	assert_int_equal(ob->out_channels(o.self, 1), 2); /* DiT's learned variance, from the base */
	df_graph *g = df_graph_create(ctx, 0);
	df_tensor *x = df_tensor_zeros(g, DF_SHAPE(1, 1, SIDE, SIDE));
	df_loss_batch batch = {sizeof batch, x, NULL, 1, 0, (int64_t[]){0}, x, NULL, NULL};
	df_model_call call = {sizeof call, call_probe, NULL};
	df_tensor *loss = NULL;
	assert_int_not_equal(ob->loss(o.self, g, &batch, &call, &loss, &err), 0);
	assert_non_null(strstr(err.msg, "not attached"));
	df_graph_destroy(g);
	ob->destroy(o.self);
	made_free(&o);
	/* a misspelt base setting fails at create */
	static const char *const bad[] = {"base_settings", "pth=linear", NULL};
	settings_of(&o, DF_KIND_OBJECTIVE, "repa", bad);
	assert_int_not_equal(ob->create(o.settings, ctx, &o.self, &err), 0);
	assert_non_null(strstr(err.msg, "pth"));
	made_free(&o);
}

/* ------------------------------------------------------------------ */
/* Encoders. */

static void read_tensor(const df_safetensors *st, const char *name, float *dst, size_t n)
{
	const df_safetensors_tensor *t = df_safetensors_find(st, name);
	assert_non_null(t);
	assert_int_equal(t->nelem, n);
	df_error err;
	assert_int_equal(df_safetensors_read_f32(st, t, dst, n, &err), 0);
}

static void test_dinov2_parity(void **state)
{
	(void)state;
	enum { N = 2, S = 28, T = 16, D = 32 };
	made e;
	static const char *const pairs[] = {"weights", DF_TEST_DATA_DIR "/dinov2_tiny_weights.safetensors",
	                                    "image_size", "28", "heads", "2", NULL};
	settings_of(&e, DF_KIND_ENCODER, "dinov2", pairs);
	const df_encoder_vtable *vt = e.c->vtable;
	df_error err;
	if (vt->create(e.settings, ctx, (df_shape3){1, S, S}, &e.self, &err)) {
		fprintf(stderr, "%s\n", err.msg);
		fail();
	}
	df_shape3 f = vt->latent_shape(e.self);
	assert_int_equal(f.channels, D);
	assert_int_equal(f.height, 4);
	assert_int_equal(f.width, 4);
	df_safetensors *st = NULL;
	assert_int_equal(df_safetensors_open(&st, DF_TEST_DATA_DIR "/dinov2_tiny_io.safetensors", &err), 0);
	static float images[N * S * S], want[N * T * D], got[N * D * T];
	read_tensor(st, "images", images, N * S * S);
	read_tensor(st, "tokens", want, N * T * D);
	df_safetensors_close(st);
	df_graph *g = df_graph_create(ctx, DF_GRAPH_NO_GRAD);
	df_tensor *x = df_tensor_from_host(g, images, DF_SHAPE(N, 1, S, S)), *out = NULL;
	assert_int_equal(vt->encode(e.self, g, x, &out, &err), 0);
	assert_int_equal(out->numel, N * D * T);
	assert_int_equal(df_tensor_read(out, got, &err), 0);
	double diff = 0, size = 0;
	for (int i = 0; i < N; i++)
		for (int t = 0; t < T; t++)
			for (int d = 0; d < D; d++) {
				double w = want[(i * T + t) * D + d], o = got[(i * D + d) * T + t];
				diff = fmax(diff, fabs(o - w));
				size = fmax(size, fabs(w));
			}
	printf("dinov2 parity: max |diff| %.3g of max |x| %.3g (relative %.3g)\n", diff, size, diff / size);
	assert_true(size > 0.1 && diff <= 1e-5 * size);
	/* no decoder */
	df_tensor *back = NULL;
	assert_int_equal(vt->decode(e.self, g, out, &back, &err), DF_ENOTSUP);
	df_graph_destroy(g);
	vt->destroy(e.self);
	made_free(&e);
	/* another image size: the positions are resampled to its grid (2x2
	 * for 14 pixels, against the file's 4x4), and the tokens stay finite */
	static const char *const small[] = {"weights", DF_TEST_DATA_DIR "/dinov2_tiny_weights.safetensors",
	                                    "image_size", "14", "heads", "2", NULL};
	settings_of(&e, DF_KIND_ENCODER, "dinov2", small);
	assert_int_equal(vt->create(e.settings, ctx, (df_shape3){1, S, S}, &e.self, &err), 0);
	f = vt->latent_shape(e.self);
	assert_int_equal(f.height, 2);
	g = df_graph_create(ctx, DF_GRAPH_NO_GRAD);
	x = df_tensor_from_host(g, images, DF_SHAPE(N, 1, S, S));
	assert_int_equal(vt->encode(e.self, g, x, &out, &err), 0);
	assert_int_equal(out->numel, N * D * 4);
	assert_int_equal(df_tensor_read(out, got, &err), 0);
	for (int i = 0; i < N * D * 4; i++)
		assert_true(isfinite(got[i]));
	df_graph_destroy(g);
	vt->destroy(e.self);
	made_free(&e);
	/* a file that is not DINOv2 says which tensor is missing */
	static const char *const wrong[] = {"weights", DF_TEST_WEIGHTS, NULL};
	settings_of(&e, DF_KIND_ENCODER, "dinov2", wrong);
	assert_int_not_equal(vt->create(e.settings, ctx, (df_shape3){1, S, S}, &e.self, &err), 0);
	if (!strstr(err.msg, "cls_token"))
		fail_msg("unexpected message: %s", err.msg);
	made_free(&e);
}

static void test_fmnist_features(void **state)
{
	(void)state;
	made e;
	static const char *const pairs[] = {"weights", DF_TEST_WEIGHTS, NULL};
	settings_of(&e, DF_KIND_ENCODER, "fmnist-features", pairs);
	const df_encoder_vtable *vt = e.c->vtable;
	df_error err;
	assert_int_not_equal(vt->create(e.settings, ctx, (df_shape3){3, 32, 32}, &e.self, &err), 0);
	assert_int_equal(vt->create(e.settings, ctx, (df_shape3){1, 32, 32}, &e.self, &err), 0);
	df_shape3 f = vt->latent_shape(e.self);
	assert_int_equal(f.channels, 64);
	assert_int_equal(f.height, 7);
	df_graph *g = df_graph_create(ctx, DF_GRAPH_NO_GRAD);
	df_tensor *x = df_tensor_zeros(g, DF_SHAPE(2, 1, 32, 32)), *out = NULL;
	assert_int_equal(vt->encode(e.self, g, x, &out, &err), 0);
	assert_int_equal(out->ndim, 4);
	assert_int_equal(out->shape[1], 64);
	assert_int_equal(out->shape[3], 7);
	df_graph_destroy(g);
	vt->destroy(e.self);
	made_free(&e);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_gradient_flow),
		cmocka_unit_test(test_alignment_finite_differences),
		cmocka_unit_test(test_unattached),
		cmocka_unit_test(test_dinov2_parity),
		cmocka_unit_test(test_fmnist_features),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
