/* ema_weights CHECKPOINT OUT: the checkpoint's EMA set as plain weights
 * under the official names (what another trainer exports), for `diffuse
 * eval --weights` in tests/eval_cli.sh. Tensors without an EMA twin (the
 * fixed position table) are copied as they are; optimiser moments dropped. */
#include "config.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "diffuse/io.h"

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: ema_weights CHECKPOINT OUT\n");
		return 2;
	}
	df_error err;
	df_safetensors *st;
	if (df_safetensors_open(&st, argv[1], &err) != 0) {
		fprintf(stderr, "ema_weights: %s\n", err.msg);
		return 1;
	}
	size_t n = df_safetensors_count(st), kept = 0;
	df_safetensors_entry *entries = calloc(n + 1, sizeof *entries);
	char ema_name[512];
	for (size_t i = 0; entries && i < n; i++) {
		const df_safetensors_tensor *t = df_safetensors_tensor_at(st, i);
		if (strncmp(t->name, "ema.", 4) == 0 || strncmp(t->name, "opt.", 4) == 0)
			continue;
		snprintf(ema_name, sizeof ema_name, "ema.%s", t->name);
		const df_safetensors_tensor *ema = df_safetensors_find(st, ema_name);
		const df_safetensors_tensor *src = ema ? ema : t;
		entries[kept++] = (df_safetensors_entry){t->name, src->dtype, src->ndim, src->shape, src->data};
	}
	int rc = entries && df_safetensors_write(argv[2], entries, kept, NULL, 0, &err) == 0 ? 0 : 1;
	if (rc)
		fprintf(stderr, "ema_weights: %s\n", entries ? err.msg : "out of memory");
	free(entries);
	df_safetensors_close(st);
	return rc;
}
