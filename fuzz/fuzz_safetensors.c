/* libFuzzer target: the safetensors reader over arbitrary bytes. Every
 * tensor it accepts must be readable in full with both conversions. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "diffuse/io.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	df_error err;
	df_safetensors *st = NULL;
	if (df_safetensors_open_memory(&st, data, size, "fuzz", &err) != 0)
		return 0;
	for (size_t i = 0; i < df_safetensors_count(st); i++) {
		const df_safetensors_tensor *t = df_safetensors_tensor_at(st, i);
		if (df_safetensors_find(st, t->name) != t)
			abort();
		float *f = malloc(t->nelem ? t->nelem * sizeof *f : 1);
		int64_t *n = malloc(t->nelem ? t->nelem * sizeof *n : 1);
		if (f && n) {
			df_safetensors_read_f32(st, t, f, t->nelem, &err);
			df_safetensors_read_i64(st, t, n, t->nelem, &err);
		}
		free(f);
		free(n);
	}
	for (size_t i = 0; i < df_safetensors_metadata_count(st); i++) {
		const char *key, *value;
		df_safetensors_metadata_at(st, i, &key, &value);
		if (df_safetensors_metadata(st, key) != value)
			abort();
	}
	df_safetensors_close(st);
	return 0;
}
