/* libFuzzer target for the IDX parser of the fashion-mnist dataset and
 * the resampling that follows it. The first input byte picks the number
 * of dimensions and the padding and resizing; the rest is the file.
 *
 * fuzz/run.sh builds and runs it with the other targets; by hand, from a
 * configured build directory (for config.h):
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -I. -I$SRC/sdk/include \
 *     $SRC/fuzz/fuzz_idx.c $SRC/plugins/dataset/fashion-mnist/idx.c \
 *     $SRC/plugins/dataset/resample.c $SRC/sdk/src/error.c -lz -lm -o fuzz_idx
 *   ./fuzz_idx $SRC/fuzz/corpus/idx
 */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>

#include "../plugins/dataset/fashion-mnist/idx.h"
#include "../plugins/dataset/resample.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	uint8_t mode = data[0];
	int ndim = mode & 1 ? 1 : 3;
	idx_array array;
	df_error err;
	if (idx_parse(data + 1, size - 1, ndim, &array, &err) != DF_OK)
		return 0;
	if (ndim == 1) {
		idx_check_labels(&array, 10, &err);
		return 0;
	}
	/* Convert the first image, padded by 0..3 pixels and resized to
	 * 0..15 (0: kept) with either filter. */
	int rows = (int)array.dims[1], cols = (int)array.dims[2];
	int side = rows > cols ? rows : cols;
	int pad = mode >> 1 & 3;
	resample_plan plan;
	if (resample_init(&plan, rows, cols, pad ? side + pad : 0, mode >> 3 & 15, mode >> 3 & 15,
	                  mode & 0x80 ? RESAMPLE_NEAREST : RESAMPLE_BILINEAR, &err) != DF_OK)
		return 0;
	size_t out = (size_t)plan.out_height * plan.out_width;
	float *image = malloc(out * sizeof *image);
	if (!image)
		return 0;
	resample_apply(&plan, array.data, 1, image);
	for (size_t i = 0; i < out; i++)
		if (!(image[i] >= -1.0f && image[i] <= 1.0f))
			abort();
	free(image);
	return 0;
}
