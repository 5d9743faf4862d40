/* The process group of a data-parallel run: MPI when built with it and
 * launched by mpirun, otherwise one process whose collectives are copies. */
#include "config.h"
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <diffuse/dist.h>
#ifdef DF_HAVE_MPI
#include <mpi.h>
#endif
#ifdef DF_HAVE_NCCL
#include "dist_nccl.h"
#endif

static int dist_rank = 0, dist_size = 1;
#ifdef DF_HAVE_MPI
static int dist_joined = 0;
#endif

int df_dist_available(void)
{
#ifdef DF_HAVE_MPI
	return 1;
#else
	return 0;
#endif
}

#ifdef DF_HAVE_MPI
/* Starters set these (OpenMPI, PMIx, Hydra/PMI); a plain start does not,
 * and then the program never touches MPI (no singleton start-up cost). */
static int launched_by_mpi(void)
{
	static const char *const vars[] = {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_SIZE", "PMI_RANK"};
	for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++)
		if (getenv(vars[i]))
			return 1;
	return 0;
}

static int mpi_failed(int code, const char *what, df_error *err)
{
	char text[MPI_MAX_ERROR_STRING];
	int len = 0;
	if (MPI_Error_string(code, text, &len) != MPI_SUCCESS)
		snprintf(text, sizeof text, "error %d", code);
	return df_error_set(err, DF_EIO, "rank %d: %s: %s", dist_rank, what, text);
}
#endif

int df_dist_init(int *argc, char ***argv, df_error *err)
{
#ifdef DF_HAVE_MPI
	if (dist_joined || !launched_by_mpi())
		return DF_OK;
	int rc = MPI_Init(argc, argv);
	if (rc != MPI_SUCCESS)
		return df_error_set(err, DF_EIO, "MPI_Init failed (code %d)", rc);
	/* A failing collective ends the job (the default), so no rank waits
	 * for one that is gone. */
	MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_ARE_FATAL);
	MPI_Comm_rank(MPI_COMM_WORLD, &dist_rank);
	MPI_Comm_size(MPI_COMM_WORLD, &dist_size);
	dist_joined = 1;
#else
	(void)argc;
	(void)argv;
	(void)err;
#endif
	return DF_OK;
}

void df_dist_finalize(void)
{
#ifdef DF_HAVE_NCCL
	dfr_nccl_finalize();
#endif
#ifdef DF_HAVE_MPI
	if (dist_joined)
		MPI_Finalize();
	dist_joined = 0;
#endif
	dist_rank = 0;
	dist_size = 1;
}

int df_dist_rank(void)
{
	return dist_rank;
}

int df_dist_size(void)
{
	return dist_size;
}

#ifdef DF_HAVE_MPI
/* In place on every rank, in chunks an int count can hold. */
static int allreduce_sum(void *v, size_t n, MPI_Datatype type, size_t size, df_error *err)
{
	for (size_t done = 0; done < n;) {
		size_t part = n - done > (size_t)1 << 30 ? (size_t)1 << 30 : n - done;
		int rc = MPI_Allreduce(MPI_IN_PLACE, (char *)v + done * size, (int)part, type, MPI_SUM, MPI_COMM_WORLD);
		if (rc != MPI_SUCCESS)
			return mpi_failed(rc, "MPI_Allreduce", err);
		done += part;
	}
	return DF_OK;
}
#endif

int df_dist_allreduce_sum_f32(float *v, size_t n, df_error *err)
{
#ifdef DF_HAVE_MPI
	if (dist_joined && dist_size > 1)
		return allreduce_sum(v, n, MPI_FLOAT, sizeof *v, err);
#endif
	(void)v;
	(void)n;
	(void)err;
	return DF_OK;
}

int df_dist_allreduce_sum_f64(double *v, size_t n, df_error *err)
{
#ifdef DF_HAVE_MPI
	if (dist_joined && dist_size > 1)
		return allreduce_sum(v, n, MPI_DOUBLE, sizeof *v, err);
#endif
	(void)v;
	(void)n;
	(void)err;
	return DF_OK;
}

int df_dist_allreduce_sum_device_f32(float *device_values, size_t n, df_error *err)
{
#ifdef DF_HAVE_NCCL
	/* Under mpirun NCCL runs even for one rank, so one GPU exercises the
	 * path a multi-GPU run takes. */
	if (!dist_joined)
		return DF_OK;
	int rc = dfr_nccl_init(dist_rank, dist_size, err);
	return rc ? rc : dfr_nccl_allreduce_sum(device_values, n, err);
#else
	if (dist_size == 1)
		return DF_OK;
	(void)device_values;
	(void)n;
	return df_error_set(err, DF_ENOTSUP, "rank %d: GPU gradients across ranks need a build with MPI and CUDA (NCCL)",
	                    dist_rank);
#endif
}

int df_dist_allgather_f32(const float *mine, float *all, size_t n, df_error *err)
{
#ifdef DF_HAVE_MPI
	if (dist_joined && dist_size > 1) {
		if (n > (size_t)1 << 30)
			return df_error_set(err, DF_EINVAL, "allgather: %zu floats per rank is too many", n);
		/* A rank's own part already in place goes as MPI_IN_PLACE. */
		const void *send = mine == all + (size_t)dist_rank * n ? MPI_IN_PLACE : mine;
		int rc = MPI_Allgather(send, (int)n, MPI_FLOAT, all, (int)n, MPI_FLOAT, MPI_COMM_WORLD);
		return rc == MPI_SUCCESS ? DF_OK : mpi_failed(rc, "MPI_Allgather", err);
	}
#else
	(void)err;
#endif
	if (all != mine)
		memmove(all, mine, n * sizeof *all);
	return DF_OK;
}

int df_dist_gather_rows_f32(const float *mine, int64_t rows, size_t row_len, float *all, df_error *err)
{
#ifdef DF_HAVE_MPI
	if (dist_joined && dist_size > 1) {
		if (rows < 0 || rows > INT_MAX || row_len > INT_MAX)
			return df_error_set(err, DF_EINVAL, "gather: %" PRId64 " rows of %zu floats is too many", rows,
			                    row_len);
		/* Rank 0 learns every count first; rows travel as one datatype
		 * so counts and offsets stay within an int. */
		int count = (int)rows, *counts = NULL, *offsets = NULL;
		if (dist_rank == 0) {
			counts = malloc((size_t)dist_size * sizeof *counts);
			offsets = malloc((size_t)dist_size * sizeof *offsets);
			if (!counts || !offsets) {
				free(counts);
				free(offsets);
				return df_error_set(err, DF_ENOMEM, "gather: out of memory");
			}
		}
		int rc = MPI_Gather(&count, 1, MPI_INT, counts, 1, MPI_INT, 0, MPI_COMM_WORLD);
		int64_t total = 0;
		for (int r = 0; dist_rank == 0 && r < dist_size; r++) {
			offsets[r] = (int)total;
			total += counts[r];
		}
		if (rc == MPI_SUCCESS && total > INT_MAX)
			rc = MPI_ERR_COUNT;
		MPI_Datatype row;
		if (rc == MPI_SUCCESS && (rc = MPI_Type_contiguous((int)row_len, MPI_FLOAT, &row)) == MPI_SUCCESS) {
			MPI_Type_commit(&row);
			const void *send = dist_rank == 0 && mine == all ? MPI_IN_PLACE : mine;
			rc = MPI_Gatherv(send, count, row, all, counts, offsets, row, 0, MPI_COMM_WORLD);
			MPI_Type_free(&row);
		}
		free(counts);
		free(offsets);
		return rc == MPI_SUCCESS ? DF_OK : mpi_failed(rc, "MPI_Gatherv", err);
	}
#else
	(void)err;
#endif
	if (all != mine && rows > 0)
		memmove(all, mine, (size_t)rows * row_len * sizeof *all);
	return DF_OK;
}

int df_dist_allreduce_max_i64(int64_t *v, size_t n, df_error *err)
{
#ifdef DF_HAVE_MPI
	if (dist_joined && dist_size > 1) {
		if (n > INT_MAX)
			return df_error_set(err, DF_EINVAL, "allreduce: %zu values is too many", n);
		int rc = MPI_Allreduce(MPI_IN_PLACE, v, (int)n, MPI_INT64_T, MPI_MAX, MPI_COMM_WORLD);
		return rc == MPI_SUCCESS ? DF_OK : mpi_failed(rc, "MPI_Allreduce", err);
	}
#endif
	(void)v;
	(void)n;
	(void)err;
	return DF_OK;
}

void df_dist_share(int64_t total, int64_t *first, int64_t *count)
{
	if (total < 0)
		total = 0;
	int64_t base = total / dist_size, extra = total % dist_size;
	*first = dist_rank * base + (dist_rank < extra ? dist_rank : extra);
	*count = base + (dist_rank < extra ? 1 : 0);
}

int df_dist_agree(int rc, df_error *err)
{
#ifdef DF_HAVE_MPI
	if (dist_joined && dist_size > 1) {
		/* The lowest failing rank, or size when none failed. */
		int first = rc ? dist_rank : dist_size;
		int mpi = MPI_Allreduce(MPI_IN_PLACE, &first, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
		if (mpi != MPI_SUCCESS)
			return rc ? rc : mpi_failed(mpi, "MPI_Allreduce", err);
		if (!rc && first < dist_size)
			return df_error_set(err, DF_EIO, "rank %d: rank %d of %d failed", dist_rank, first, dist_size);
	}
#endif
	(void)err;
	return rc;
}

int df_dist_broadcast(void *v, size_t n, int root, df_error *err)
{
#ifdef DF_HAVE_MPI
	if (dist_joined && dist_size > 1) {
		if (n > (size_t)1 << 30)
			return df_error_set(err, DF_EINVAL, "broadcast: %zu bytes is too many", n);
		int rc = MPI_Bcast(v, (int)n, MPI_BYTE, root, MPI_COMM_WORLD);
		return rc == MPI_SUCCESS ? DF_OK : mpi_failed(rc, "MPI_Bcast", err);
	}
#else
	(void)v;
	(void)n;
	(void)err;
#endif
	(void)root;
	return DF_OK;
}

int df_dist_barrier(df_error *err)
{
#ifdef DF_HAVE_MPI
	if (dist_joined && dist_size > 1) {
		int rc = MPI_Barrier(MPI_COMM_WORLD);
		return rc == MPI_SUCCESS ? DF_OK : mpi_failed(rc, "MPI_Barrier", err);
	}
#else
	(void)err;
#endif
	return DF_OK;
}

void df_dist_abort(int status, const char *why)
{
#ifdef DF_HAVE_MPI
	if (dist_joined && dist_size > 1) {
		fprintf(stderr, "diffuse: rank %d of %d failed: %s; stopping all ranks\n", dist_rank, dist_size,
		        why ? why : "error");
		fflush(stderr);
		MPI_Abort(MPI_COMM_WORLD, status ? status : 1);
	}
#endif
	(void)status;
	(void)why;
}
