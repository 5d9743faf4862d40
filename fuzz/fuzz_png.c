/* libFuzzer target: the PNG reader over arbitrary bytes, with the channel
 * conversion chosen by the last byte of the input. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "diffuse/io.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	df_error err;
	df_image img;
	int want = size > 0 ? data[size - 1] % 5 : 0;
	if (df_png_read_memory(data, size, "fuzz", want, &img, &err) != 0)
		return 0;
	if (img.width < 1 || img.height < 1 || img.channels < 1 || img.channels > 4 ||
	    (want != 0 && img.channels != want))
		abort();
	/* touch every byte so a short allocation shows up under ASan */
	size_t n = (size_t)img.width * (size_t)img.height * (size_t)img.channels;
	volatile unsigned sum = 0;
	for (size_t i = 0; i < n; i++)
		sum += img.pixels[i];
	df_image_free(&img);
	return 0;
}
