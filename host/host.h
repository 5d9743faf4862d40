/* What the commands of the diffuse program share (host/ only). */
#ifndef DIFFUSE_HOST_H
#define DIFFUSE_HOST_H

#include <stddef.h>
#include "diffuse/runtime.h"

enum { EXIT_OK = 0, EXIT_RUNTIME = 1, EXIT_USAGE = 2 };

/* A pipeline file with its -o overrides (and, for run, the runs folder). */
typedef struct pipeline_args {
	const char *file;
	const char **overrides;
	size_t n_overrides;
	const char *runs_dir;
} pipeline_args;

/* Loads plugins and the pipeline; prints refusals then errors. Returns an
 * exit status. */
int load_pipeline(const pipeline_args *a, df_registry **reg, df_pipeline **p);

#define FORWARD_USAGE \
	"PIPELINE --weights W --inputs IN --out OUT [--grad-weights G] [--num-classes K] [--out-channels C] [-o SECTION.KEY=VALUE]..."
int cmd_forward(int argc, char **argv);

#endif
