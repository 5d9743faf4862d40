/* Compute contexts: a backend with its thread count. */
#define _GNU_SOURCE
#include "config.h"
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <omp.h>
#include "core.h"
#ifdef DF_HAVE_NCCL
#include "diffuse/dist.h"
#include "runtime/dist_nccl.h"
#endif

/* Physical cores available to this process: distinct (package, core) pairs
 * over the CPUs in our affinity mask, so hyperthreads are not counted. Falls
 * back to the logical count when sysfs does not say. */
static int physical_cores(void)
{
	cpu_set_t set;
	int logical = omp_get_num_procs();
	if (sched_getaffinity(0, sizeof set, &set) != 0)
		return logical > 0 ? logical : 1;
	enum { MAX_PAIRS = 1024 };
	static long pairs[MAX_PAIRS]; /* only touched while creating a context */
	int npairs = 0, seen_cpu = 0;
	for (int cpu = 0; cpu < CPU_SETSIZE && npairs < MAX_PAIRS; cpu++) {
		if (!CPU_ISSET(cpu, &set))
			continue;
		seen_cpu++;
		char path[128];
		long core = -1, package = -1;
		snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu%d/topology/core_id", cpu);
		FILE *f = fopen(path, "r");
		if (f) {
			if (fscanf(f, "%ld", &core) != 1)
				core = -1;
			fclose(f);
		}
		snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu%d/topology/physical_package_id", cpu);
		f = fopen(path, "r");
		if (f) {
			if (fscanf(f, "%ld", &package) != 1)
				package = -1;
			fclose(f);
		}
		if (core < 0 || package < 0)
			return seen_cpu > logical ? seen_cpu : (logical > 0 ? logical : 1);
		long key = package * 65536 + core;
		int found = 0;
		for (int i = 0; i < npairs && !found; i++)
			found = pairs[i] == key;
		if (!found)
			pairs[npairs++] = key;
	}
	return npairs > 0 ? npairs : 1;
}

/* A context on the CUDA backend, or the one-line reason there is none. */
static int create_cuda(df_ctx **out, df_error *err)
{
#ifdef DF_HAVE_CUDA
	char why[256] = "";
	df_backend be;
#ifdef DF_HAVE_NCCL
	/* Each rank of a data-parallel run takes its own GPU before the backend
	 * starts (once per process) on the current one. */
	if (df_dist_size() > 1) {
		int rc = dfr_nccl_select_device(df_dist_rank(), err);
		if (rc)
			return rc;
	}
#endif
	if (dfi_backend_cuda_init(&be, why, sizeof why) != 0)
		return df_error_set(err, DF_ENOTSUP, "device cuda: %s", why);
	df_ctx *ctx = calloc(1, sizeof *ctx);
	if (!ctx)
		return df_error_set(err, DF_ENOMEM, "df_ctx_create: out of memory");
	ctx->backend = be;
	ctx->physical_cores = physical_cores();
	snprintf(ctx->device, sizeof ctx->device, "cuda");
	dfi_cuda_describe(ctx->description, sizeof ctx->description);
	*out = ctx;
	return DF_OK;
#else
	(void)out;
	return df_error_set(err, DF_ENOTSUP, "device cuda: this build has no CUDA backend (configure --with-cuda)");
#endif
}

int df_ctx_create(df_ctx **out, const char *device, int threads, df_error *err)
{
	if (!out)
		return df_error_set(err, DF_EINVAL, "df_ctx_create: NULL output pointer");
	*out = NULL;
	if (!device)
		device = "cpu";
	if (strcmp(device, "cuda") == 0)
		return create_cuda(out, err);
	if (strcmp(device, "cpu") != 0)
		return df_error_set(err, DF_EINVAL, "device '%s': unknown (expected cpu or cuda)", device);
	df_ctx *ctx = calloc(1, sizeof *ctx);
	if (!ctx)
		return df_error_set(err, DF_ENOMEM, "df_ctx_create: out of memory");
	ctx->physical_cores = physical_cores();
	if (threads <= 0)
		threads = ctx->physical_cores;
	int rc = dfi_backend_cpu_init(&ctx->backend, threads);
	if (rc) {
		free(ctx);
		return df_error_set(err, rc, "device cpu: cannot start the backend");
	}
	snprintf(ctx->device, sizeof ctx->device, "%s", device);
	snprintf(ctx->description, sizeof ctx->description,
	         "cpu: %d threads (%d physical cores available), OpenBLAS sgemm, OpenMP", threads,
	         ctx->physical_cores);
	*out = ctx;
	return DF_OK;
}

const char *df_backends(void)
{
#ifdef DF_HAVE_CUDA
	return "cpu cuda";
#else
	return "cpu";
#endif
}

void df_ctx_destroy(df_ctx *ctx)
{
	free(ctx);
}

const char *df_ctx_device(const df_ctx *ctx)
{
	return ctx ? ctx->device : NULL;
}

int df_ctx_threads(const df_ctx *ctx)
{
	return ctx ? ctx->backend.threads : 0;
}

const char *df_ctx_describe(const df_ctx *ctx)
{
	return ctx ? ctx->description : NULL;
}
