/* NCCL for the gradient allreduce of data-parallel GPU training. MPI only
 * carries the communicator's id from rank 0 to the others, once. */
#include "config.h"
#ifdef DF_HAVE_NCCL
#include <stdlib.h>
#include <cuda_runtime.h>
#include <mpi.h>
#include <nccl.h>
#include "dist_nccl.h"

static ncclComm_t comm;
static cudaStream_t stream;
static int joined;

static int nccl_failed(ncclResult_t rc, const char *what, int rank, df_error *err)
{
	return df_error_set(err, DF_EIO, "rank %d: %s: %s", rank, what, ncclGetErrorString(rc));
}

static int cuda_failed(cudaError_t rc, const char *what, int rank, df_error *err)
{
	return df_error_set(err, DF_EIO, "rank %d: %s: %s", rank, what, cudaGetErrorString(rc));
}

/* The rank's index on its machine, as the MPI starter tells it. */
static int local_rank(int rank)
{
	static const char *const vars[] = {"OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "PMI_LOCAL_RANK"};
	for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) {
		const char *v = getenv(vars[i]);
		if (v && *v)
			return atoi(v);
	}
	return rank;
}

int dfr_nccl_select_device(int rank, df_error *err)
{
	int devices = 0;
	cudaError_t ce = cudaGetDeviceCount(&devices);
	if (ce != cudaSuccess)
		return df_error_set(err, DF_ENOTSUP, "device cuda: rank %d: %s", rank, cudaGetErrorString(ce));
	if (devices <= 0)
		return df_error_set(err, DF_ENOTSUP, "device cuda: rank %d: no CUDA device found", rank);
	if ((ce = cudaSetDevice(local_rank(rank) % devices)) != cudaSuccess)
		return cuda_failed(ce, "cudaSetDevice", rank, err);
	return DF_OK;
}

int dfr_nccl_init(int rank, int size, df_error *err)
{
	if (joined)
		return DF_OK;
	int rc = dfr_nccl_select_device(rank, err);
	if (rc)
		return rc;
	cudaError_t ce;
	ncclUniqueId id;
	ncclResult_t nr;
	if (rank == 0 && (nr = ncclGetUniqueId(&id)) != ncclSuccess)
		return nccl_failed(nr, "ncclGetUniqueId", rank, err);
	if (MPI_Bcast(&id, (int)sizeof id, MPI_BYTE, 0, MPI_COMM_WORLD) != MPI_SUCCESS)
		return df_error_set(err, DF_EIO, "rank %d: MPI_Bcast of the NCCL id failed", rank);
	if ((nr = ncclCommInitRank(&comm, size, id, rank)) != ncclSuccess)
		return nccl_failed(nr, "ncclCommInitRank", rank, err);
	if ((ce = cudaStreamCreate(&stream)) != cudaSuccess) {
		ncclCommDestroy(comm);
		return cuda_failed(ce, "cudaStreamCreate", rank, err);
	}
	joined = 1;
	return DF_OK;
}

int dfr_nccl_allreduce_sum(float *device_values, size_t n, df_error *err)
{
	if (!joined)
		return df_error_set(err, DF_EINVAL, "NCCL allreduce before dfr_nccl_init");
	int rank = 0;
	ncclCommUserRank(comm, &rank);
	/* The gradients come from the backend's own (non-blocking) stream,
	 * which ours does not wait for: finish every stream of the device. */
	cudaError_t ce = cudaDeviceSynchronize();
	if (ce != cudaSuccess)
		return cuda_failed(ce, "cudaDeviceSynchronize", rank, err);
	ncclResult_t nr = ncclAllReduce(device_values, device_values, n, ncclFloat32, ncclSum, comm, stream);
	if (nr != ncclSuccess)
		return nccl_failed(nr, "ncclAllReduce", rank, err);
	ce = cudaStreamSynchronize(stream);
	return ce == cudaSuccess ? DF_OK : cuda_failed(ce, "cudaStreamSynchronize", rank, err);
}

void dfr_nccl_finalize(void)
{
	if (!joined)
		return;
	cudaStreamDestroy(stream);
	ncclCommDestroy(comm);
	joined = 0;
}
#endif
