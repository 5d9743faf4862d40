/* The gradient allreduce between GPUs: NCCL, with MPI handing out its id.
 * Built only with both MPI and CUDA (DF_HAVE_NCCL). */
#ifndef DIFFUSE_DIST_NCCL_H
#define DIFFUSE_DIST_NCCL_H

#include <stddef.h>
#include "diffuse/error.h"

/* Makes this rank's GPU (local rank mod the machine's GPUs) the current
 * one: before the CUDA backend starts, so both use the same device. */
int dfr_nccl_select_device(int rank, df_error *err);
/* Picks this rank's GPU (local rank mod the machine's GPUs) and joins the
 * NCCL communicator of all ranks; rank 0 makes the id, MPI broadcasts it. */
int dfr_nccl_init(int rank, int size, df_error *err);
/* Sums n floats of device memory over the ranks, in place. */
int dfr_nccl_allreduce_sum(float *device_values, size_t n, df_error *err);
void dfr_nccl_finalize(void);

#endif
