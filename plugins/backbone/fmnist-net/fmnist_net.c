/* The fmnist-net classifier (see fmnist_net.h). */
#include "config.h"
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "diffuse/io.h"
#include "diffuse/rng.h"
#include "fmnist_net.h"

static const int conv_channels[4] = {1, 16, 32, 64};
#define FMNIST_NET_GROUP 8 /* channels per GroupNorm group */
/* Spatial size after the last pool: 28 -> 14 -> 7 -> 3. */
#define FMNIST_NET_FLAT (64 * 3 * 3)

int fmnist_net_create(fmnist_net **out, df_ctx *ctx, df_error *err)
{
	*out = NULL;
	fmnist_net *net = calloc(1, sizeof *net);
	if (!net || !(net->params = df_params_create(ctx))) {
		free(net);
		return df_error_set(err, DF_ENOMEM, "fmnist-net: out of memory");
	}
	char name[32];
	for (int i = 0; i < 3; i++) {
		snprintf(name, sizeof name, "conv%d.weight", i + 1);
		net->conv_w[i] = df_params_add(net->params, name,
		                               DF_SHAPE(conv_channels[i + 1], conv_channels[i], 3, 3), 0);
		snprintf(name, sizeof name, "conv%d.bias", i + 1);
		net->conv_b[i] = df_params_add(net->params, name, DF_SHAPE(conv_channels[i + 1]), 0);
		snprintf(name, sizeof name, "norm%d.weight", i + 1);
		net->norm_w[i] = df_params_add(net->params, name, DF_SHAPE(conv_channels[i + 1]), 0);
		snprintf(name, sizeof name, "norm%d.bias", i + 1);
		net->norm_b[i] = df_params_add(net->params, name, DF_SHAPE(conv_channels[i + 1]), 0);
	}
	net->fc1_w = df_params_add(net->params, "fc1.weight", DF_SHAPE(FMNIST_NET_FEATURES, FMNIST_NET_FLAT), 0);
	net->fc1_b = df_params_add(net->params, "fc1.bias", DF_SHAPE(FMNIST_NET_FEATURES), 0);
	net->fc2_w = df_params_add(net->params, "fc2.weight", DF_SHAPE(FMNIST_NET_CLASSES, FMNIST_NET_FEATURES), 0);
	net->fc2_b = df_params_add(net->params, "fc2.bias", DF_SHAPE(FMNIST_NET_CLASSES), 0);
	int rc = df_params_finalize(net->params, err);
	if (rc) {
		fmnist_net_destroy(net);
		return rc;
	}
	*out = net;
	return DF_OK;
}

void fmnist_net_destroy(fmnist_net *net)
{
	if (!net)
		return;
	df_params_destroy(net->params);
	free(net);
}

int fmnist_net_init(fmnist_net *net, uint64_t seed, df_error *err)
{
	size_t count = df_params_count(net->params);
	float *values = malloc((size_t)df_params_numel(net->params) * sizeof *values);
	if (!values)
		return df_error_set(err, DF_ENOMEM, "fmnist-net: out of memory");
	/* Weight and bias of a layer share the bound 1/sqrt(fan_in), fan_in
	 * being the weight's elements per output row. */
	double bound = 1.0;
	for (size_t i = 0; i < count; i++) {
		const df_tensor *t = df_params_at(net->params, i);
		if (t->ndim > 1)
			bound = 1.0 / sqrt((double)(t->numel / t->shape[0]));
		float *v = values + df_params_offset(net->params, i);
		if (strncmp(t->name, "norm", 4) == 0) {
			float fill = strstr(t->name, ".weight") ? 1.0f : 0.0f;
			for (int64_t k = 0; k < t->numel; k++)
				v[k] = fill;
			continue;
		}
		df_rng_fill_uniform(v, (size_t)t->numel, seed, 0x666d6e6574ull, i, 0);
		for (int64_t k = 0; k < t->numel; k++)
			v[k] = (float)((2.0 * v[k] - 1.0) * bound);
	}
	int rc = df_params_write(net->params, values, err);
	free(values);
	return rc;
}

df_tensor *fmnist_net_stage(fmnist_net *net, df_graph *g, df_tensor *x, int stage)
{
	df_tensor *h = x;
	for (int i = 0; i < stage; i++) {
		if (i > 0)
			h = df_avgpool2d(g, h, 2);
		h = df_conv2d(g, h, net->conv_w[i], net->conv_b[i], 1, 1);
		h = df_groupnorm(g, h, conv_channels[i + 1] / FMNIST_NET_GROUP, net->norm_w[i], net->norm_b[i], 1e-5f);
		h = df_silu(g, h);
	}
	return h;
}

int fmnist_net_forward(fmnist_net *net, df_graph *g, df_tensor *x, df_tensor **features, df_tensor **logits,
                       df_error *err)
{
	if (x->ndim != 4 || x->shape[1] != 1 || x->shape[2] != FMNIST_NET_SIZE || x->shape[3] != FMNIST_NET_SIZE)
		return df_error_set(err, DF_EINVAL, "fmnist-net: takes (N, 1, 28, 28) images, got %d dims of %lld channels",
		                    x->ndim, x->ndim > 1 ? (long long)x->shape[1] : 0LL);
	df_tensor *h = fmnist_net_stage(net, g, x, 3);
	h = df_reshape(g, df_avgpool2d(g, h, 2), DF_SHAPE(x->shape[0], FMNIST_NET_FLAT));
	df_tensor *feat = df_silu(g, df_linear(g, h, net->fc1_w, net->fc1_b));
	df_tensor *out = logits ? df_linear(g, feat, net->fc2_w, net->fc2_b) : NULL;
	int rc = df_graph_status(g, err);
	if (rc)
		return df_error_prefix(err, rc, "fmnist-net");
	if (features)
		*features = feat;
	if (logits)
		*logits = out;
	return DF_OK;
}

static int io_status(int rc)
{
	return rc == -ENOMEM ? DF_ENOMEM : rc == -EINVAL ? DF_EINVAL : DF_EIO;
}

int fmnist_net_load(fmnist_net *net, const char *path, df_error *err)
{
	df_safetensors *file = NULL;
	int rc = df_safetensors_open(&file, path, err);
	if (rc)
		return io_status(rc);
	/* A training checkpoint holds "ema.<name>" beside "<name>". */
	const char *prefix = df_safetensors_find(file, "ema.fc2.bias") ? "ema." : "";
	float *buf = NULL;
	rc = DF_OK;
	for (size_t i = 0; i < df_params_count(net->params) && rc == DF_OK; i++) {
		df_tensor *p = df_params_at(net->params, i);
		char name[64];
		snprintf(name, sizeof name, "%s%s", prefix, p->name);
		const df_safetensors_tensor *st = df_safetensors_find(file, name);
		if (!st) {
			rc = df_error_set(err, DF_EINVAL, "%s: %s is missing: not an fmnist-net weights file", path, name);
			break;
		}
		if ((int64_t)st->nelem != p->numel || st->ndim != p->ndim) {
			rc = df_error_set(err, DF_EINVAL, "%s: %s has %zu elements in %d dims, fmnist-net has %lld in %d",
			                  path, name, st->nelem, st->ndim, (long long)p->numel, p->ndim);
			break;
		}
		float *grown = realloc(buf, st->nelem * sizeof *buf);
		if (!grown) {
			rc = df_error_set(err, DF_ENOMEM, "%s: out of memory", path);
			break;
		}
		buf = grown;
		rc = df_safetensors_read_f32(file, st, buf, st->nelem, err);
		rc = rc ? io_status(rc) : df_tensor_write(p, buf, err);
	}
	free(buf);
	df_safetensors_close(file);
	return rc;
}

int fmnist_net_save(fmnist_net *net, const char *path, df_error *err)
{
	size_t count = df_params_count(net->params);
	float *values = malloc((size_t)df_params_numel(net->params) * sizeof *values);
	df_safetensors_entry *entries = calloc(count, sizeof *entries);
	int rc = DF_OK;
	if (!values || !entries)
		rc = df_error_set(err, DF_ENOMEM, "fmnist-net: out of memory");
	if (!rc)
		rc = df_params_read(net->params, values, err);
	for (size_t i = 0; i < count && !rc; i++) {
		const df_tensor *t = df_params_at(net->params, i);
		entries[i] = (df_safetensors_entry){t->name, DF_ST_F32, t->ndim, t->shape,
		                                    values + df_params_offset(net->params, i)};
	}
	const df_safetensors_meta meta[] = {{"format", "diffuse fmnist-net weights"}};
	if (!rc && df_safetensors_write(path, entries, count, meta, 1, err))
		rc = DF_EIO;
	free(entries);
	free(values);
	return rc;
}
