/* The --json summary of run, train, sample and eval: one object printed on
 * stdout when the command ends (human messages then go to stderr). One
 * writer for the four commands, so the keys mean the same everywhere:
 *
 *   command    "run", "train", "sample" or "eval"
 *   status     "done", "failed" or "interrupted"; exit: the exit status
 *   error      the message, when not done
 *   pipeline   the pipeline file (or checkpoint) given
 *   run_dir    the run folder
 *   stages     the stages that ran, in order ("train", "sample", "eval")
 *   checkpoint the last checkpoint written, else the one read; step: its steps
 *   weights    plain weights read instead of a checkpoint (sample, eval)
 *   samples    every sample file written: path, count, step, weights ("ema"
 *              or "raw"), sampler {name and its settings}, nfe, guidance
 *              {scale, interval}, seed
 *   eval:      count, real, made_by, metrics {name: value}, fd_floor,
 *              fd_ceiling */
#ifndef DIFFUSE_HOST_SUMMARY_H
#define DIFFUSE_HOST_SUMMARY_H

#include "diffuse/diffuse.h"
#include "diffuse/eval.h"

typedef struct host_summary host_summary;

/* NULL when out of memory (the command then runs without a summary). */
host_summary *summary_create(const char *command, const char *pipeline_file);
/* The pipeline whose sampler settings describe the samples. */
void summary_set_pipeline(host_summary *s, const df_pipeline *p);
void summary_set_run_dir(host_summary *s, const char *run_dir);
void summary_add_stage(host_summary *s, const char *stage);
/* The checkpoint (or, with weights = 1, plain weights) that was read. */
void summary_set_source(host_summary *s, const char *path, int weights);
/* A df_stage_options.output callback; ctx is the summary. */
void summary_on_output(void *ctx, const df_stage_output *out);
void summary_set_eval(host_summary *s, const df_eval_result *r);
/* Prints the object (one line on stdout) and frees s; error may be NULL. */
void summary_finish(host_summary *s, int exit_code, const char *error);

#endif
