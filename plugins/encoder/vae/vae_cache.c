/* The latent cache: posteriors that `diffuse encode` computed once, found
 * again by the content of each image, so training draws latents without
 * running the encoder and without knowing dataset indices. */
#include <stdlib.h>
#include <string.h>

#include "diffuse/io.h"
#include "vae_net.h"

typedef struct vae_cache {
	int64_t count, per;        /* items, values per latent */
	float *mean, *logvar;      /* (count, per) each */
	int64_t *slot_key;         /* open addressing: key of each slot */
	int64_t *slot_row;         /* row of each slot, -1 when empty */
	int64_t mask;              /* slots - 1 */
	np_scratch batch;          /* host staging: images, then mean and logvar of a batch */
	int64_t *keys;
	int64_t keys_cap;
} vae_cache;

void vae_image_keys(const float *images, int64_t n, int64_t image_numel, int64_t *keys)
{
	for (int64_t i = 0; i < n; i++) {
		const unsigned char *bytes = (const unsigned char *)(images + i * image_numel);
		uint64_t h = 1469598103934665603ull;
		for (int64_t b = 0; b < image_numel * (int64_t)sizeof(float); b++)
			h = (h ^ bytes[b]) * 1099511628211ull;
		keys[i] = (int64_t)h;
	}
}

static int64_t vae_cache_find(const vae_cache *c, int64_t key)
{
	for (int64_t s = key & c->mask;; s = (s + 1) & c->mask) {
		if (c->slot_row[s] < 0)
			return -1;
		if (c->slot_key[s] == key)
			return c->slot_row[s];
	}
}

void vae_cache_close(vae_model *m)
{
	vae_cache *c = m->cache;
	if (!c)
		return;
	free(c->mean);
	free(c->logvar);
	free(c->slot_key);
	free(c->slot_row);
	np_scratch_free(&c->batch);
	free(c->keys);
	free(c);
	m->cache = NULL;
}

/* The tensor `name` of the file as count x per floats. */
static float *vae_cache_read(const df_safetensors *file, const char *path, const char *name, int64_t per,
                             const vae_config *cfg, int64_t *count, df_error *err)
{
	const df_safetensors_tensor *t = df_safetensors_find(file, name);
	int f = 1 << (cfg->levels - 1);
	if (!t || t->ndim != 4 || t->shape[1] != cfg->embed_dim || t->shape[2] != cfg->height / f ||
	    t->shape[3] != cfg->width / f || (*count >= 0 && t->shape[0] != *count)) {
		df_error_set(err, DF_EINVAL, "vae: cache %s: no %s of (N, %d, %d, %d) (write it with diffuse encode)", path,
		             name, cfg->embed_dim, cfg->height / f, cfg->width / f);
		return NULL;
	}
	*count = t->shape[0];
	float *values = malloc((size_t)(*count * per) * sizeof(float));
	if (!values) {
		df_error_set(err, DF_ENOMEM, "vae: cache %s: out of memory", path);
		return NULL;
	}
	if (df_safetensors_read_f32(file, t, values, (size_t)(*count * per), err) != 0) {
		free(values);
		return NULL;
	}
	return values;
}

int vae_cache_open(vae_model *m, const char *path, df_error *err)
{
	const vae_config *cfg = &m->cfg;
	int f = 1 << (cfg->levels - 1);
	df_safetensors *file = NULL;
	if (df_safetensors_open(&file, path, err) != 0)
		return df_error_prefix(err, DF_EIO, "vae: cache");
	vae_cache *c = calloc(1, sizeof(*c));
	int rc = c ? DF_OK : df_error_set(err, DF_ENOMEM, "vae: out of memory");
	m->cache = c;
	if (rc == DF_OK) {
		c->count = -1;
		c->per = (int64_t)cfg->embed_dim * (cfg->height / f) * (cfg->width / f);
		c->mean = vae_cache_read(file, path, "mean", c->per, cfg, &c->count, err);
		c->logvar = c->mean ? vae_cache_read(file, path, "logvar", c->per, cfg, &c->count, err) : NULL;
		rc = c->mean && c->logvar ? DF_OK : DF_EINVAL;
	}
	const df_safetensors_tensor *kt = rc == DF_OK ? df_safetensors_find(file, "image_key") : NULL;
	if (rc == DF_OK && (!kt || kt->ndim != 1 || kt->shape[0] != c->count))
		rc = df_error_set(err, DF_EINVAL, "vae: cache %s: no image_key (N) (write it with diffuse encode)", path);
	int64_t *keys = rc == DF_OK ? malloc((size_t)c->count * sizeof(*keys)) : NULL;
	if (rc == DF_OK && (!keys || df_safetensors_read_i64(file, kt, keys, (size_t)c->count, err) != 0))
		rc = keys ? DF_EINVAL : df_error_set(err, DF_ENOMEM, "vae: out of memory");
	if (rc == DF_OK) {
		int64_t slots = 16;
		while (slots < 2 * c->count)
			slots *= 2;
		c->mask = slots - 1;
		c->slot_key = malloc((size_t)slots * sizeof(int64_t));
		c->slot_row = malloc((size_t)slots * sizeof(int64_t));
		if (!c->slot_key || !c->slot_row)
			rc = df_error_set(err, DF_ENOMEM, "vae: out of memory");
		for (int64_t s = 0; rc == DF_OK && s < slots; s++)
			c->slot_row[s] = -1;
		for (int64_t r = 0; rc == DF_OK && r < c->count; r++) {
			if (vae_cache_find(c, keys[r]) >= 0)
				continue; /* the same image twice: the same posterior */
			int64_t s = keys[r] & c->mask;
			while (c->slot_row[s] >= 0)
				s = (s + 1) & c->mask;
			c->slot_key[s] = keys[r];
			c->slot_row[s] = r;
		}
	}
	free(keys);
	df_safetensors_close(file);
	if (rc != DF_OK)
		vae_cache_close(m);
	return rc;
}

int vae_cache_posterior(vae_model *m, df_graph *g, df_tensor *images, df_tensor **mean, df_tensor **logvar,
                        int *found, df_error *err)
{
	vae_cache *c = m->cache;
	const vae_config *cfg = &m->cfg;
	const int64_t n = images->shape[0], image_numel = images->numel / n;
	const int64_t need = n * image_numel > 2 * n * c->per ? n * image_numel : 2 * n * c->per;
	*found = 0;
	float *host = np_scratch_get(&c->batch, need);
	if (!host)
		return df_error_set(err, DF_ENOMEM, "vae: out of memory");
	if (n > c->keys_cap) {
		int64_t *grown = realloc(c->keys, (size_t)n * sizeof(int64_t));
		if (!grown)
			return df_error_set(err, DF_ENOMEM, "vae: out of memory");
		c->keys = grown;
		c->keys_cap = n;
	}
	int rc = df_tensor_read(images, host, err);
	if (rc != DF_OK)
		return rc;
	vae_image_keys(host, n, image_numel, c->keys);
	for (int64_t i = 0; i < n; i++) {
		int64_t row = vae_cache_find(c, c->keys[i]);
		if (row < 0)
			return DF_OK;
		c->keys[i] = row;
	}
	float *mean_host = host, *logvar_host = host + n * c->per;
	for (int64_t i = 0; i < n; i++) {
		memcpy(mean_host + i * c->per, c->mean + c->keys[i] * c->per, (size_t)c->per * sizeof(float));
		memcpy(logvar_host + i * c->per, c->logvar + c->keys[i] * c->per, (size_t)c->per * sizeof(float));
	}
	int f = 1 << (cfg->levels - 1);
	*mean = df_tensor_from_host(g, mean_host, DF_SHAPE(n, cfg->embed_dim, cfg->height / f, cfg->width / f));
	*logvar = df_tensor_from_host(g, logvar_host, DF_SHAPE(n, cfg->embed_dim, cfg->height / f, cfg->width / f));
	*found = 1;
	rc = df_graph_status(g, err);
	return rc;
}
