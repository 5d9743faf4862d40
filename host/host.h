/* What the commands of the diffuse program share (host/ only): main.c
 * parses and loads, stages.c trains and samples, cmd_forward.c runs one
 * backbone pass. */
#ifndef DIFFUSE_HOST_H
#define DIFFUSE_HOST_H

#include <stddef.h>
#include "diffuse/diffuse.h"

#include "diffuse/runtime.h"

/* Exit status: 3 = interrupted by Ctrl-C after saving. */
enum { EXIT_OK = 0, EXIT_RUNTIME = 1, EXIT_USAGE = 2, EXIT_INTERRUPTED = 3 };

/* A pipeline file with its -o overrides (and, for run, the runs folder). */
typedef struct pipeline_args {
	const char *file;
	const char **overrides;
	size_t n_overrides;
	const char *runs_dir;
} pipeline_args;

int parse_pipeline_args(int argc, char **argv, int with_runs_dir, pipeline_args *a);
/* A pipeline file, or a checkpoint whose metadata holds one. */
int load_pipeline(const pipeline_args *a, df_registry **reg, df_pipeline **p);
/* Parses, loads, then calls body. */
int with_pipeline(int argc, char **argv, int with_runs_dir,
                  int (*body)(const pipeline_args *a, const df_pipeline *p));

/* 1 when path names a safetensors file (a checkpoint given as PIPELINE). */
int host_is_checkpoint(const char *path);
/* Prepares the run folder and runs the training and/or sampling stages
 * the pipeline names (when train / sample are set). */
int host_run_stages(const pipeline_args *a, const df_pipeline *p, int train, int sample);

int cmd_run(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_sample(int argc, char **argv);
int cmd_forward(int argc, char **argv);
/* cmd_encode.c: the encoder of a pipeline on its own. */
int cmd_encode(int argc, char **argv);
int cmd_autoencode(int argc, char **argv);
/* diffuse eval of an autoencoder pipeline (an encoder, no backbone): the
 * test-split reconstruction PSNR of the encoder with these weights. */
int host_eval_autoencoder(const pipeline_args *a, const df_pipeline *p, const char *weights, int json);

/* The help of the commands with --json (summary.h lists the keys). */
#define JSON_HELP                                                                                       \
	"\n--json prints one summary object on stdout at the end, whenever the command ran (news\n"     \
	"goes to stderr then): command, status, exit, error, pipeline, run_dir, stages, checkpoint\n"   \
	"and step (the last written, else the one read), weights, and samples: every file written,\n"  \
	"with path, count, step, weights (ema or raw), sampler {name, settings}, nfe, guidance\n"       \
	"{scale, interval}, seed.\n"
#define EXIT_HELP                                                                                       \
	"Exit status: 0 done, 1 failure while running, 2 bad usage or pipeline (nothing ran,\n"         \
	"no summary), 3 interrupted by Ctrl-C after saving a checkpoint."

#define HOST_STAGE_COMMANDS                                                                             \
	{"train", "PIPELINE [-o SECTION.KEY=VALUE]... [--runs-dir DIR] [--max-steps N] [--json]",        \
	 "Trains into RUNS_DIR/<name>/: checkpoint.safetensors (weights, EMA, optimiser state),\n"       \
	 "log.jsonl and sample grids. Resumes from the run's checkpoint when there is one, bit for\n"     \
	 "bit. --max-steps N stops (and saves) after N steps of this call. Ctrl-C finishes the\n"         \
	 "step, saves and exits with status 3." JSON_HELP EXIT_HELP,                                    \
	 cmd_train},                                                                                      \
	{"sample", "[PIPELINE] [--checkpoint F | --weights W.safetensors] [--count N] [--noise N.safetensors] --out OUT [--json]", \
	 "Generates samples with the pipeline's sampler and the sample section's guidance. OUT is\n"     \
	 "a .png grid (one row per class), a folder (one PNG per sample) or a .safetensors file\n"      \
	 "(x0 and y). --checkpoint needs no PIPELINE: the checkpoint holds it. --weights takes\n"         \
	 "plain weights under the official names; with neither, RUNS_DIR/<name>/checkpoint.safetensors\n" \
	 "is used (--runs-dir DIR, default runs). --noise takes x (N, C, H, W) and y (N) from a\n"      \
	 "file instead of drawing them. Also -o SECTION.KEY=VALUE." JSON_HELP                             \
	 "Exit status: 0 done, 1 failure while running, 2 bad usage or pipeline (no summary).",          \
	 cmd_sample},                                                                                     \
	{"encode", "PIPELINE [-o SECTION.KEY=VALUE]... [--runs-dir DIR]",                                 \
	 "Encodes the whole dataset once into RUNS_DIR/<name>/latents.safetensors: latents as\n"         \
	 "the model sees them, labels, and the posterior's mean and logvar when the encoder has one.",    \
	 cmd_encode},                                                                                     \
	{"autoencode", "PIPELINE [-o SECTION.KEY=VALUE]... [--runs-dir DIR]",                             \
	 "Trains the pipeline's encoder (vae) with its own loss and the train section's batch, lr,\n"    \
	 "steps, warmup, weight_decay and grad_clip; writes RUNS_DIR/<name>/encoder.safetensors and\n"   \
	 "prints the reconstruction PSNR on the dataset's test split.",                                   \
	 cmd_autoencode},


#define FORWARD_USAGE \
	"PIPELINE --weights W --inputs IN --out OUT [--grad-weights G] [--num-classes K] [--out-channels C] [-o SECTION.KEY=VALUE]..."

#endif
