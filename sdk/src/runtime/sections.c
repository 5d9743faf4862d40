/* The pipeline's own sections, declared like a component's settings so
 * that `diffuse check` validates them and `diffuse help train` prints them.
 * The stages that read them (training, sampling) live in their own units. */
#include "config.h"
#include <string.h>
#include "diffuse/runtime.h"

static const char *const devices[] = {"cpu", "cuda", NULL};
static const char *const weight_sets[] = {"ema", "raw", NULL};
static const char *const lr_schedules[] = {"constant", "cosine", NULL};
static const char *const reductions[] = {"mean", "deterministic", NULL};
static const char *const guidance_channel_sets[] = {"all", "first3", NULL};

static const df_setting top_settings[] = {
	DF_SETTING_STRING(df_pipeline_settings, name, "",
	                  "run name: the folder under the runs directory (default: the file's name)"),
	DF_SETTING_INT(df_pipeline_settings, seed, "0", 0, 9007199254740991.0,
	               "seed of every random draw (initialisation, noise, data order)"),
	DF_SETTING_STRING(df_pipeline_settings, plugin_path, "",
	                  "extra plugin directories or files, ':'-separated, relative to this file"),
	DF_SETTING_CHOICE(df_pipeline_settings, device, "cpu", devices, "compute device"),
	DF_SETTING_INT(df_pipeline_settings, threads, "0", 0, 4096, "CPU threads; 0 = one per physical core"),
	DF_SETTINGS_END,
};

static const df_setting train_settings[] = {
	DF_SETTING_INT(df_train_settings, batch, "64", 1, 1 << 20, "images per step"),
	DF_SETTING_FLOAT(df_train_settings, lr, "1e-4", 0, 10, "AdamW learning rate"),
	DF_SETTING_INT(df_train_settings, steps, "1000", 0, 1e12, "optimiser steps"),
	DF_SETTING_FLOAT(df_train_settings, ema, "0.9999", 0, 1, "EMA decay of the weights; 0 = no EMA"),
	DF_SETTING_FLOAT(df_train_settings, weight_decay, "0", 0, 10, "AdamW weight decay"),
	DF_SETTING_FLOAT(df_train_settings, grad_clip, "0", 0, DF_ANY_MAX, "clip the global gradient norm; 0 = off"),
	DF_SETTING_INT(df_train_settings, warmup, "0", 0, 1e12, "linear learning-rate warm-up steps"),
	DF_SETTING_FLOAT(df_train_settings, class_dropout, "0.1", 0, 1,
	                 "probability of dropping the label (for classifier-free guidance)"),
	DF_SETTING_INT(df_train_settings, log_every, "50", 1, 1e12, "steps between log lines"),
	DF_SETTING_INT(df_train_settings, checkpoint_every, "1000", 0, 1e12,
	               "steps between checkpoints; 0 = only at the end"),
	DF_SETTING_CHOICE(df_train_settings, lr_schedule, "constant", lr_schedules,
	                  "learning rate after the warm-up: constant, or cosine down to min_lr at the last step"),
	DF_SETTING_FLOAT(df_train_settings, min_lr, "0", 0, 10, "final learning rate of the cosine schedule"),
	DF_SETTING_BOOL(df_train_settings, ema_warmup, "false",
	                "EMA decay min(ema, (1 + k) / (10 + k)) at EMA step k, so early averages forget the init"),
	DF_SETTING_INT(df_train_settings, sample_every, "0", 0, 1e12,
	               "steps between grids of EMA samples (sample section settings); 0 = only at the end"),
	DF_SETTING_INT(df_train_settings, micro_batch, "0", 0, 1 << 20,
	               "images per forward/backward pass; the step sums the passes' gradients; 0 = a rank's whole shard"),
	DF_SETTING_CHOICE(df_train_settings, reduce, "mean", reductions,
	                  "gradient reduction across MPI ranks: mean (one allreduce) or deterministic (micro-batch "
	                  "gradients summed in global order: equal bit for bit whatever the number of ranks)"),
	DF_SETTINGS_END,
};

static const df_setting sample_settings[] = {
	DF_SETTING_INT(df_sample_settings, count, "64", 1, 1 << 24, "images to generate"),
	DF_SETTING_STRING(df_sample_settings, grid, "samples.png", "PNG grid written into the run folder; \"\" = none"),
	DF_SETTING_INT(df_sample_settings, batch, "64", 1, 1 << 20, "images per sampling batch"),
	DF_SETTING_CHOICE(df_sample_settings, weights, "ema", weight_sets, "which weights generate"),
	DF_SETTING_INT(df_sample_settings, class_label, "-1", -1, 1 << 20,
	               "class to generate; -1 = cycle through the classes"),
	DF_SETTING_FLOAT(df_sample_settings, cfg_scale, "1.0", 0, 1000,
	                 "classifier-free guidance scale, applied by the runtime for every sampler; 1 = off"),
	DF_SETTING_LIST(df_sample_settings, cfg_interval, "[0.0, 1.0]", 0, 1,
	                "guide only for t in [lo, hi] (t = 0 data, t = 1 noise), REPA's guidance interval"),
	DF_SETTING_CHOICE(df_sample_settings, guidance_channels, "all", guidance_channel_sets,
	                  "channels guided: all, or first3 as the official DiT/SiT sampling code (legacy numbers)"),
	DF_SETTINGS_END,
};

static const struct {
	const char *name;
	const df_setting *settings;
	size_t size;
} sections[] = {
	{"", top_settings, sizeof(df_pipeline_settings)},
	{"train", train_settings, sizeof(df_train_settings)},
	{"sample", sample_settings, sizeof(df_sample_settings)},
};

static const char *const section_names[] = {"train", "sample", NULL};

const df_setting *df_runtime_section(const char *section, size_t *settings_size)
{
	for (size_t i = 0; section && i < sizeof sections / sizeof sections[0]; i++) {
		if (strcmp(sections[i].name, section) == 0) {
			if (settings_size)
				*settings_size = sections[i].size;
			return sections[i].settings;
		}
	}
	return NULL;
}

const char *const *df_runtime_section_names(void) { return section_names; }
