/* The one place where other namings of the KL autoencoder become the
 * CompVis names the model registers:
 *
 *   CompVis (latent-diffusion, stable-diffusion checkpoints)
 *     encoder.down.0.block.0.norm1.weight, decoder.up.3.upsample.conv.bias,
 *     encoder.mid.attn_1.q.weight, ...; inside a full checkpoint the same
 *     under "first_stage_model."
 *   diffusers (AutoencoderKL)
 *     encoder.down_blocks.0.resnets.0.norm1.weight,
 *     decoder.up_blocks.0.upsamplers.0.conv.bias (up_blocks count from the
 *     bottom: up_blocks.k is up.<levels - 1 - k>),
 *     encoder.mid_block.attentions.0.to_q.weight (older files: query, key,
 *     value, proj_attn), ...
 *
 * Linear weights (C, C) of diffusers' attention load into the (C, C, 1, 1)
 * convolutions (netparams accepts the missing 1x1). */
#include <stdio.h>
#include <string.h>

#include "vae_net.h"

/* Block paths: a diffusers prefix and its CompVis form, '#' standing for
 * an index (the same indices in the same order on both sides);
 * `reverse`: the first index counts levels from the bottom. */
typedef struct vae_block_rename {
	const char *diffusers, *compvis;
	int reverse;
} vae_block_rename;

static const vae_block_rename vae_blocks[] = {
	{"down_blocks.#.resnets.#.", "down.#.block.#.", 0},
	{"down_blocks.#.attentions.#.", "down.#.attn.#.", 0},
	{"down_blocks.#.downsamplers.0.", "down.#.downsample.", 0},
	{"up_blocks.#.resnets.#.", "up.#.block.#.", 1},
	{"up_blocks.#.attentions.#.", "up.#.attn.#.", 1},
	{"up_blocks.#.upsamplers.0.", "up.#.upsample.", 1},
	{"mid_block.resnets.0.", "mid.block_1.", 0},
	{"mid_block.resnets.1.", "mid.block_2.", 0},
	{"mid_block.attentions.0.", "mid.attn_1.", 0},
	{"conv_norm_out.", "norm_out.", 0},
};

/* Length of s's prefix matching pattern (indices into idx), or 0. */
static size_t vae_match(const char *pattern, const char *s, int idx[2])
{
	const char *start = s;
	int k = 0;
	for (; *pattern; pattern++) {
		if (*pattern != '#') {
			if (*s++ != *pattern)
				return 0;
			continue;
		}
		if (*s < '0' || *s > '9' || k == 2)
			return 0;
		long v = 0;
		while (*s >= '0' && *s <= '9' && v < 100000)
			v = 10 * v + (*s++ - '0');
		idx[k++] = (int)v;
	}
	return (size_t)(s - start);
}

static void vae_fill(char *out, size_t size, const char *pattern, const int idx[2])
{
	size_t used = 0;
	int k = 0;
	for (; *pattern && used + 1 < size; pattern++) {
		if (*pattern == '#')
			used += (size_t)snprintf(out + used, size - used, "%d", idx[k++]);
		else
			out[used++] = *pattern;
	}
	out[used < size ? used : size - 1] = '\0';
}

/* Layers inside a block. */
static const char *const vae_layers[][2] = {
	{"conv_shortcut.", "nin_shortcut."},
	{"group_norm.", "norm."},
	{"to_q.", "q."},
	{"to_k.", "k."},
	{"to_v.", "v."},
	{"to_out.0.", "proj_out."},
	{"query.", "q."},
	{"key.", "k."},
	{"value.", "v."},
	{"proj_attn.", "proj_out."},
};

/* Parts of a full checkpoint that are not the autoencoder. */
static const char *const vae_other_parts[] = {"loss.", "model.", "model_ema.", "cond_stage_model."};

int vae_map_name(void *levels_ptr, const char *name, char *out, size_t size)
{
	const int levels = *(const int *)levels_ptr;
	static const char full[] = "first_stage_model.";
	if (strncmp(name, full, sizeof(full) - 1) == 0)
		name += sizeof(full) - 1;
	for (size_t i = 0; i < sizeof(vae_other_parts) / sizeof(vae_other_parts[0]); i++)
		if (strncmp(name, vae_other_parts[i], strlen(vae_other_parts[i])) == 0)
			return -1;
	const char *coder = strncmp(name, "encoder.", 8) == 0 ? "encoder." : strncmp(name, "decoder.", 8) == 0 ? "decoder." : NULL;
	if (!coder) {
		snprintf(out, size, "%s", name); /* quant_conv, post_quant_conv */
		return 1;
	}
	const char *rest = name + 8;
	char block[96] = "";
	for (size_t i = 0; i < sizeof(vae_blocks) / sizeof(vae_blocks[0]); i++) {
		const vae_block_rename *r = &vae_blocks[i];
		int idx[2] = {0, 0};
		size_t used = vae_match(r->diffusers, rest, idx);
		if (used == 0)
			continue;
		if (r->reverse) {
			if (idx[0] >= levels)
				return 0;
			idx[0] = levels - 1 - idx[0];
		}
		vae_fill(block, sizeof(block), r->compvis, idx);
		rest += used;
		break;
	}
	char layer[96];
	snprintf(layer, sizeof(layer), "%s", rest);
	for (size_t i = 0; i < sizeof(vae_layers) / sizeof(vae_layers[0]); i++) {
		size_t len = strlen(vae_layers[i][0]);
		if (block[0] && strncmp(rest, vae_layers[i][0], len) == 0) {
			snprintf(layer, sizeof(layer), "%s%s", vae_layers[i][1], rest + len);
			break;
		}
	}
	int written = snprintf(out, size, "%s%s%s", coder, block, layer);
	return written > 0 && (size_t)written < size;
}
