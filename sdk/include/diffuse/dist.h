/* Data-parallel processes: the MPI job a program runs in, or one process.
 *
 * Built without MPI (or not started by mpirun/mpiexec), every function is
 * the single-process case: rank 0 of 1, reductions copy, barriers return.
 * A program calls df_dist_init once at start and df_dist_finalize at exit;
 * the training stage then splits every global batch across the ranks. */
#ifndef DIFFUSE_DIST_H
#define DIFFUSE_DIST_H

#include <stddef.h>
#include <stdint.h>
#include "diffuse/error.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Joins the MPI job when the process was launched by an MPI starter (its
 * environment says so); otherwise stays a single process. Idempotent. */
int df_dist_init(int *argc, char ***argv, df_error *err);
void df_dist_finalize(void);
int df_dist_rank(void);
int df_dist_size(void);
/* 1 when this build can join MPI jobs. */
int df_dist_available(void);

/* Sums n floats (or doubles) over the ranks, in place, on every rank. */
int df_dist_allreduce_sum_f32(float *v, size_t n, df_error *err);
int df_dist_allreduce_sum_f64(double *v, size_t n, df_error *err);
/* The same for n floats in GPU memory (a CUDA backend's gradient block):
 * NCCL when built with MPI and CUDA, joined on the first call (which every
 * rank makes at the same step); one process: nothing to do; a build
 * without NCCL under mpirun: DF_ENOTSUP. */
int df_dist_allreduce_sum_device_f32(float *device_values, size_t n, df_error *err);
/* Every rank gives n floats; every rank receives size*n in rank order.
 * `mine` may be the rank's own part of `all` (all + rank * n). */
int df_dist_allgather_f32(const float *mine, float *all, size_t n, df_error *err);
/* Rank 0 receives every rank's `rows` rows of row_len floats, in rank
 * order, into `all` (ignored elsewhere); ranks may give different counts.
 * On rank 0, `mine` may be `all` itself (its part is then in place). */
int df_dist_gather_rows_f32(const float *mine, int64_t rows, size_t row_len, float *all, df_error *err);
/* The maximum of n values over the ranks, in place, on every rank. */
int df_dist_allreduce_max_i64(int64_t *v, size_t n, df_error *err);
/* This rank's share of `total` items split across the ranks: items
 * [*first, *first + *count), contiguous and in rank order; the first
 * total % size ranks take one more, so any total splits (a rank may get
 * none when total < size). */
void df_dist_share(int64_t total, int64_t *first, int64_t *count);
/* Every rank says whether it failed (rc) and learns whether any did: a
 * rank that failed keeps its rc and message; the others get DF_EIO
 * naming the first rank that failed. Call it before a collective that a
 * failed rank would never reach. */
int df_dist_agree(int rc, df_error *err);
/* Rank root's n bytes onto every rank. */
int df_dist_broadcast(void *v, size_t n, int root, df_error *err);
int df_dist_barrier(df_error *err);
/* Ends the whole job (all ranks) after printing `why` with this rank's
 * number; single process: returns so the caller exits as usual. */
void df_dist_abort(int status, const char *why);

#ifdef __cplusplus
}
#endif
#endif
