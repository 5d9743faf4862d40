/* Shared by process.c and sampling.c; not installed. */
#ifndef DIFFUSE_PROCESS_PRIVATE_H
#define DIFFUSE_PROCESS_PRIVATE_H

#include <stdint.h>

#define DFP_PARALLEL_FILL_MIN (1 << 16)

/* dst[i * dim .. + dim) = normals at index[i] * dim + j on (seed, stream,
 * step), index NULL meaning index[i] = i. Runs of consecutive indices are
 * filled in one call, so a batch of consecutive samples costs one parallel
 * fill instead of one per sample. */
void dfp_fill_normal_per_sample(float *dst, int64_t n, int64_t dim, const int64_t *index, uint64_t seed,
                                uint64_t stream, uint64_t step);

#endif
