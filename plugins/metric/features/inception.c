/* FID's Inception v3 (see inception.h). */
#include "config.h"
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "diffuse/io.h"
#include "grid_resize.h"
#include "inception.h"

/* BatchNorm's eps in every BasicConv2d of the network. */
#define INCEPTION_BN_EPS 0.001
#define INCEPTION_CONVS 94

/* One BasicConv2d (conv without bias, BatchNorm, ReLU) with the norm folded
 * into w and b. Kernels of 1x7 and 7x1 (1x3, 3x1) pad only along their long
 * side: pad_h != pad_w. */
struct inception_conv {
	char name[40]; /* the port's module path, e.g. "blocks.2.0.branch5x5_2" */
	int cin, cout, kh, kw, stride, pad_h, pad_w;
	df_tensor *w, *b;
};

struct dff_inception {
	struct inception_conv conv[INCEPTION_CONVS];
	int n_conv;
	df_graph *weights; /* holds w and b of every conv; never reset */
};

/* ---- the architecture: which convs each block has -------------------- */

static void add_conv(dff_inception *net, const char *block, const char *branch, int cin, int cout, int kh, int kw,
                     int stride, int pad_h, int pad_w)
{
	struct inception_conv *c = &net->conv[net->n_conv++];
	snprintf(c->name, sizeof c->name, "%s%s%s", block, branch ? "." : "", branch ? branch : "");
	c->cin = cin;
	c->cout = cout;
	c->kh = kh;
	c->kw = kw;
	c->stride = stride;
	c->pad_h = pad_h;
	c->pad_w = pad_w;
}

/* Square kernel k, stride 1, padding k / 2 ("same"). */
static void add_same(dff_inception *net, const char *block, const char *branch, int cin, int cout, int k)
{
	add_conv(net, block, branch, cin, cout, k, k, 1, k / 2, k / 2);
}

/* 1 x k then k x 1 (or the reverse) convs padded along their long side. */
static void add_row(dff_inception *net, const char *block, const char *branch, int cin, int cout, int k)
{
	add_conv(net, block, branch, cin, cout, 1, k, 1, 0, k / 2);
}

static void add_column(dff_inception *net, const char *block, const char *branch, int cin, int cout, int k)
{
	add_conv(net, block, branch, cin, cout, k, 1, 1, k / 2, 0);
}

/* InceptionA: output 64 + 64 + 96 + pool_features channels. */
static void add_a(dff_inception *net, const char *block, int cin, int pool_features)
{
	add_same(net, block, "branch1x1", cin, 64, 1);
	add_same(net, block, "branch5x5_1", cin, 48, 1);
	add_same(net, block, "branch5x5_2", 48, 64, 5);
	add_same(net, block, "branch3x3dbl_1", cin, 64, 1);
	add_same(net, block, "branch3x3dbl_2", 64, 96, 3);
	add_same(net, block, "branch3x3dbl_3", 96, 96, 3);
	add_same(net, block, "branch_pool", cin, pool_features, 1);
}

/* InceptionB (grid reduction): 384 + 96 + cin channels at half size. */
static void add_b(dff_inception *net, const char *block, int cin)
{
	add_conv(net, block, "branch3x3", cin, 384, 3, 3, 2, 0, 0);
	add_same(net, block, "branch3x3dbl_1", cin, 64, 1);
	add_same(net, block, "branch3x3dbl_2", 64, 96, 3);
	add_conv(net, block, "branch3x3dbl_3", 96, 96, 3, 3, 2, 0, 0);
}

/* InceptionC: 768 channels, factorised 7x7 convs of c7 channels. */
static void add_c(dff_inception *net, const char *block, int cin, int c7)
{
	add_same(net, block, "branch1x1", cin, 192, 1);
	add_same(net, block, "branch7x7_1", cin, c7, 1);
	add_row(net, block, "branch7x7_2", c7, c7, 7);
	add_column(net, block, "branch7x7_3", c7, 192, 7);
	add_same(net, block, "branch7x7dbl_1", cin, c7, 1);
	add_column(net, block, "branch7x7dbl_2", c7, c7, 7);
	add_row(net, block, "branch7x7dbl_3", c7, c7, 7);
	add_column(net, block, "branch7x7dbl_4", c7, c7, 7);
	add_row(net, block, "branch7x7dbl_5", c7, 192, 7);
	add_same(net, block, "branch_pool", cin, 192, 1);
}

/* InceptionD (grid reduction): 320 + 192 + cin channels at half size. */
static void add_d(dff_inception *net, const char *block, int cin)
{
	add_same(net, block, "branch3x3_1", cin, 192, 1);
	add_conv(net, block, "branch3x3_2", 192, 320, 3, 3, 2, 0, 0);
	add_same(net, block, "branch7x7x3_1", cin, 192, 1);
	add_row(net, block, "branch7x7x3_2", 192, 192, 7);
	add_column(net, block, "branch7x7x3_3", 192, 192, 7);
	add_conv(net, block, "branch7x7x3_4", 192, 192, 3, 3, 2, 0, 0);
}

/* InceptionE: 320 + 768 + 768 + 192 = 2048 channels. */
static void add_e(dff_inception *net, const char *block, int cin)
{
	add_same(net, block, "branch1x1", cin, 320, 1);
	add_same(net, block, "branch3x3_1", cin, 384, 1);
	add_row(net, block, "branch3x3_2a", 384, 384, 3);
	add_column(net, block, "branch3x3_2b", 384, 384, 3);
	add_same(net, block, "branch3x3dbl_1", cin, 448, 1);
	add_same(net, block, "branch3x3dbl_2", 448, 384, 3);
	add_row(net, block, "branch3x3dbl_3a", 384, 384, 3);
	add_column(net, block, "branch3x3dbl_3b", 384, 384, 3);
	add_same(net, block, "branch_pool", cin, 192, 1);
}

static void add_all(dff_inception *net)
{
	add_conv(net, "blocks.0.0", NULL, 3, 32, 3, 3, 2, 0, 0);
	add_conv(net, "blocks.0.1", NULL, 32, 32, 3, 3, 1, 0, 0);
	add_same(net, "blocks.0.2", NULL, 32, 64, 3);
	add_same(net, "blocks.1.0", NULL, 64, 80, 1);
	add_conv(net, "blocks.1.1", NULL, 80, 192, 3, 3, 1, 0, 0);
	add_a(net, "blocks.2.0", 192, 32);
	add_a(net, "blocks.2.1", 256, 64);
	add_a(net, "blocks.2.2", 288, 64);
	add_b(net, "blocks.2.3", 288);
	add_c(net, "blocks.2.4", 768, 128);
	add_c(net, "blocks.2.5", 768, 160);
	add_c(net, "blocks.2.6", 768, 160);
	add_c(net, "blocks.2.7", 768, 192);
	add_d(net, "blocks.3.0", 768);
	add_e(net, "blocks.3.1", 1280);
	add_e(net, "blocks.3.2", 2048);
}

/* ---- weights ------------------------------------------------------------ */

/* The conv's weights with its BatchNorm folded in:
 * w' = w gamma / sqrt(var + eps), b' = beta - mean gamma / sqrt(var + eps). */
static int load_conv(dff_inception *net, struct inception_conv *c, dff_inception_source source, void *arg,
                     float *w, float *stats, df_error *err)
{
	static const char *const bn_parts[4] = {"weight", "bias", "running_mean", "running_var"};
	char name[64];
	const int64_t per_out = (int64_t)c->cin * c->kh * c->kw;
	snprintf(name, sizeof name, "%s.conv.weight", c->name);
	int rc = source(arg, name, 4, (int64_t[]){c->cout, c->cin, c->kh, c->kw}, w, err);
	for (int part = 0; part < 4 && !rc; part++) {
		snprintf(name, sizeof name, "%s.bn.%s", c->name, bn_parts[part]);
		rc = source(arg, name, 1, (int64_t[]){c->cout}, stats + part * c->cout, err);
	}
	if (rc)
		return rc;
	float *bias = stats + 4 * c->cout; /* the caller gave room for it */
	for (int o = 0; o < c->cout; o++) {
		const double gamma = stats[o], beta = stats[c->cout + o], mean = stats[2 * c->cout + o],
		             var = stats[3 * c->cout + o];
		if (!(var >= 0.0))
			return df_error_set(err, DF_EINVAL, "%s.bn.running_var: %g is not a variance", c->name, var);
		const double scale = gamma / sqrt(var + INCEPTION_BN_EPS);
		for (int64_t k = 0; k < per_out; k++)
			w[o * per_out + k] = (float)(w[o * per_out + k] * scale);
		bias[o] = (float)(beta - mean * scale);
	}
	c->w = df_tensor_from_host(net->weights, w, DF_SHAPE(c->cout, c->cin, c->kh, c->kw));
	c->b = df_tensor_from_host(net->weights, bias, DF_SHAPE(c->cout));
	return df_graph_status(net->weights, err);
}

int dff_inception_create(dff_inception **out, df_ctx *ctx, dff_inception_source source, void *arg, df_error *err)
{
	*out = NULL;
	dff_inception *net = calloc(1, sizeof *net);
	if (!net || !(net->weights = df_graph_create(ctx, DF_GRAPH_NO_GRAD))) {
		free(net);
		return df_error_set(err, DF_ENOMEM, "inception: out of memory");
	}
	add_all(net);
	/* Buffers for the largest conv: its weights, 4 BatchNorm vectors and
	 * the folded bias. */
	int64_t most = 0, most_out = 0;
	for (int i = 0; i < net->n_conv; i++) {
		const struct inception_conv *c = &net->conv[i];
		int64_t n = (int64_t)c->cout * c->cin * c->kh * c->kw;
		most = n > most ? n : most;
		most_out = c->cout > most_out ? c->cout : most_out;
	}
	float *w = malloc((size_t)most * sizeof *w), *stats = malloc((size_t)(5 * most_out) * sizeof *stats);
	int rc = w && stats ? DF_OK : df_error_set(err, DF_ENOMEM, "inception: out of memory");
	for (int i = 0; i < net->n_conv && !rc; i++)
		rc = load_conv(net, &net->conv[i], source, arg, w, stats, err);
	free(w);
	free(stats);
	if (rc) {
		dff_inception_destroy(net);
		return rc;
	}
	*out = net;
	return DF_OK;
}

void dff_inception_destroy(dff_inception *net)
{
	if (!net)
		return;
	df_graph_destroy(net->weights);
	free(net);
}

/* The module names of torchvision's Inception3 (those of the port's
 * released .pth) for the port's blocks.<i>.<j>. */
static const char *const torchvision_names[][2] = {
	{"blocks.0.0", "Conv2d_1a_3x3"}, {"blocks.0.1", "Conv2d_2a_3x3"}, {"blocks.0.2", "Conv2d_2b_3x3"},
	{"blocks.1.0", "Conv2d_3b_1x1"}, {"blocks.1.1", "Conv2d_4a_3x3"}, {"blocks.2.0", "Mixed_5b"},
	{"blocks.2.1", "Mixed_5c"},      {"blocks.2.2", "Mixed_5d"},      {"blocks.2.3", "Mixed_6a"},
	{"blocks.2.4", "Mixed_6b"},      {"blocks.2.5", "Mixed_6c"},      {"blocks.2.6", "Mixed_6d"},
	{"blocks.2.7", "Mixed_6e"},      {"blocks.3.0", "Mixed_7a"},      {"blocks.3.1", "Mixed_7b"},
	{"blocks.3.2", "Mixed_7c"},
};

static const df_safetensors_tensor *find_either_name(const df_safetensors *file, const char *name)
{
	const df_safetensors_tensor *t = df_safetensors_find(file, name);
	size_t n = sizeof torchvision_names / sizeof *torchvision_names;
	for (size_t i = 0; !t && i < n; i++) {
		size_t len = strlen(torchvision_names[i][0]);
		if (strncmp(name, torchvision_names[i][0], len) == 0 && name[len] == '.') {
			char alias[96];
			snprintf(alias, sizeof alias, "%s%s", torchvision_names[i][1], name + len);
			t = df_safetensors_find(file, alias);
		}
	}
	return t;
}

struct file_source {
	const char *path;
	df_safetensors *file;
};

static int read_from_file(void *arg, const char *name, int ndim, const int64_t *shape, float *values,
                          df_error *err)
{
	const struct file_source *fs = arg;
	const df_safetensors_tensor *t = find_either_name(fs->file, name);
	if (!t)
		return df_error_set(err, DF_EINVAL, "%s: %s is missing: not the weights of FID's Inception v3",
		                    fs->path, name);
	int same = t->ndim == ndim;
	for (int d = 0; same && d < ndim; d++)
		same = t->shape[d] == shape[d];
	if (!same)
		return df_error_set(err, DF_EINVAL, "%s: %s has %d dims and %zu elements, expected %d dims as %lld x ...",
		                    fs->path, name, t->ndim, t->nelem, ndim, (long long)shape[0]);
	int rc = df_safetensors_read_f32(fs->file, t, values, t->nelem, err);
	return rc == 0 ? DF_OK : rc == -ENOMEM ? DF_ENOMEM : DF_EIO;
}

int dff_inception_create_from_file(dff_inception **out, df_ctx *ctx, const char *path, df_error *err)
{
	*out = NULL;
	struct file_source fs = {.path = path};
	int rc = df_safetensors_open(&fs.file, path, err);
	if (rc)
		return rc == -ENOMEM ? DF_ENOMEM : rc == -EINVAL ? DF_EINVAL : DF_EIO;
	rc = dff_inception_create(out, ctx, read_from_file, &fs, err);
	df_safetensors_close(fs.file);
	return rc;
}

/* ---- forward ------------------------------------------------------------ */

struct run {
	dff_inception *net;
	df_graph *g;
	const char *block;
};

static const struct inception_conv *find_conv(const struct run *r, const char *branch)
{
	char name[40];
	snprintf(name, sizeof name, "%s%s%s", r->block, branch ? "." : "", branch ? branch : "");
	for (int i = 0; i < r->net->n_conv; i++)
		if (strcmp(r->net->conv[i].name, name) == 0)
			return &r->net->conv[i];
	return NULL;
}

/* conv + folded BatchNorm + ReLU. A 1 x k kernel is padded by k / 2 on all
 * sides and the rows that padding added are cut off (and likewise for
 * k x 1): the same values as padding the long side alone. */
static df_tensor *conv(const struct run *r, df_tensor *x, const char *branch)
{
	const struct inception_conv *c = find_conv(r, branch);
	if (!c)
		return (df_tensor *)NULL;
	const int pad = c->pad_h > c->pad_w ? c->pad_h : c->pad_w;
	df_tensor *y = df_conv2d(r->g, x, c->w, c->b, c->stride, pad);
	if (y && c->pad_h < pad)
		y = df_slice(r->g, y, 2, pad - c->pad_h, y->shape[2] - 2 * (pad - c->pad_h));
	else if (y && c->pad_w < pad)
		y = df_slice(r->g, y, 3, pad - c->pad_w, y->shape[3] - 2 * (pad - c->pad_w));
	return df_relu(r->g, y);
}

/* Runs the convs named in order, each on the previous one's output. */
static df_tensor *chain(const struct run *r, df_tensor *x, int n, const char *const *branches)
{
	for (int i = 0; i < n; i++)
		x = conv(r, x, branches[i]);
	return x;
}

#define CHAIN(r, x, ...) \
	chain((r), (x), (int)(sizeof((const char *[]){__VA_ARGS__}) / sizeof(const char *)), (const char *[]){__VA_ARGS__})

/* The branch pool of A, C and E blocks: 3x3, stride 1, padding 1, then a
 * 1x1 conv. FID's network averages without counting the padding, except
 * the last block (Mixed_7c), which takes the maximum. */
static df_tensor *pool_branch(const struct run *r, df_tensor *x, int max)
{
	df_tensor *p = max ? df_maxpool2d(r->g, x, 3, 1, 1) : df_avgpool2d_window(r->g, x, 3, 1, 1, 0);
	return conv(r, p, "branch_pool");
}

static df_tensor *concat(const struct run *r, int n, df_tensor *const *parts)
{
	for (int i = 0; i < n; i++)
		if (!parts[i])
			return (df_tensor *)NULL;
	return df_concat(r->g, parts, n, 1);
}

static df_tensor *block_a(const struct run *r, df_tensor *x)
{
	df_tensor *parts[4] = {
		conv(r, x, "branch1x1"),
		CHAIN(r, x, "branch5x5_1", "branch5x5_2"),
		CHAIN(r, x, "branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3"),
		pool_branch(r, x, 0),
	};
	return concat(r, 4, parts);
}

static df_tensor *block_b(const struct run *r, df_tensor *x)
{
	df_tensor *parts[3] = {
		conv(r, x, "branch3x3"),
		CHAIN(r, x, "branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3"),
		df_maxpool2d(r->g, x, 3, 2, 0),
	};
	return concat(r, 3, parts);
}

static df_tensor *block_c(const struct run *r, df_tensor *x)
{
	df_tensor *parts[4] = {
		conv(r, x, "branch1x1"),
		CHAIN(r, x, "branch7x7_1", "branch7x7_2", "branch7x7_3"),
		CHAIN(r, x, "branch7x7dbl_1", "branch7x7dbl_2", "branch7x7dbl_3", "branch7x7dbl_4", "branch7x7dbl_5"),
		pool_branch(r, x, 0),
	};
	return concat(r, 4, parts);
}

static df_tensor *block_d(const struct run *r, df_tensor *x)
{
	df_tensor *parts[3] = {
		CHAIN(r, x, "branch3x3_1", "branch3x3_2"),
		CHAIN(r, x, "branch7x7x3_1", "branch7x7x3_2", "branch7x7x3_3", "branch7x7x3_4"),
		df_maxpool2d(r->g, x, 3, 2, 0),
	};
	return concat(r, 3, parts);
}

/* E: the 3x3 branches end in a 1x3 and a 3x1 conv side by side. */
static df_tensor *block_e(const struct run *r, df_tensor *x, int max_pool)
{
	df_tensor *mid = conv(r, x, "branch3x3_1");
	df_tensor *mid_dbl = CHAIN(r, x, "branch3x3dbl_1", "branch3x3dbl_2");
	df_tensor *parts[6] = {
		conv(r, x, "branch1x1"),
		conv(r, mid, "branch3x3_2a"),
		conv(r, mid, "branch3x3_2b"),
		conv(r, mid_dbl, "branch3x3dbl_3a"),
		conv(r, mid_dbl, "branch3x3dbl_3b"),
		pool_branch(r, x, max_pool),
	};
	return concat(r, 6, parts);
}

enum block_kind { STEM_CONV, STEM_POOL, MIXED_A, MIXED_B, MIXED_C, MIXED_D, MIXED_E, MIXED_E_MAX };

static const struct {
	const char *block;
	enum block_kind kind;
} stages[] = {
	{"blocks.0.0", STEM_CONV}, {"blocks.0.1", STEM_CONV}, {"blocks.0.2", STEM_CONV}, {NULL, STEM_POOL},
	{"blocks.1.0", STEM_CONV}, {"blocks.1.1", STEM_CONV}, {NULL, STEM_POOL},          {"blocks.2.0", MIXED_A},
	{"blocks.2.1", MIXED_A},   {"blocks.2.2", MIXED_A},   {"blocks.2.3", MIXED_B},    {"blocks.2.4", MIXED_C},
	{"blocks.2.5", MIXED_C},   {"blocks.2.6", MIXED_C},   {"blocks.2.7", MIXED_C},    {"blocks.3.0", MIXED_D},
	{"blocks.3.1", MIXED_E},   {"blocks.3.2", MIXED_E_MAX},
};

static df_tensor *stage(const struct run *r, enum block_kind kind, df_tensor *x)
{
	switch (kind) {
	case STEM_CONV: return conv(r, x, NULL);
	case STEM_POOL: return df_maxpool2d(r->g, x, 3, 2, 0);
	case MIXED_A: return block_a(r, x);
	case MIXED_B: return block_b(r, x);
	case MIXED_C: return block_c(r, x);
	case MIXED_D: return block_d(r, x);
	case MIXED_E: return block_e(r, x, 0);
	case MIXED_E_MAX: return block_e(r, x, 1);
	}
	return (df_tensor *)NULL;
}

int dff_inception_forward(dff_inception *net, df_graph *g, df_tensor *x, df_tensor **features, df_error *err)
{
	*features = NULL;
	if (!x || x->ndim != 4 || x->shape[1] != 3 || x->shape[2] < 75 || x->shape[3] != x->shape[2])
		return df_error_set(err, DF_EINVAL, "inception: input must be (N, 3, S, S), S >= 75 (299 for FID)");
	struct run r = {.net = net, .g = g};
	const size_t mark = df_graph_mark(g);
	for (size_t i = 0; i < sizeof stages / sizeof *stages && x; i++) {
		r.block = stages[i].block;
		x = stage(&r, stages[i].kind, x);
		if (x)
			df_graph_rewind(g, mark, &x, 1);
	}
	/* pool3: the mean over the final square map. */
	if (x)
		x = df_avgpool2d(g, x, (int)x->shape[2]);
	if (x)
		x = df_reshape(g, x, DF_SHAPE(x->shape[0], DFF_INCEPTION_FEATURES));
	int rc = df_graph_status(g, err);
	if (!rc && !x)
		rc = df_error_set(err, DF_EINVAL, "inception: the network failed to build");
	if (!rc)
		*features = x;
	return rc;
}

/* ---- input -------------------------------------------------------------- */

void dff_inception_resize(const float *src, int channels, int h, int w, float *dst)
{
	enum { S = DFF_INCEPTION_SIZE };
	grid_resize_bilinear(src, channels, h, w, dst, S, S);
	/* one channel is repeated to three, as the port's grayscale input */
	if (channels == 1)
		for (int c = 1; c < 3; c++)
			memcpy(dst + (size_t)c * S * S, dst, (size_t)S * S * sizeof *dst);
}
