/* Reading and comparing golden files; see golden.h. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <cmocka.h>

#include "golden.h"

df_safetensors *golden_open(const char *dir, const char *file_name)
{
	char path[2048];
	df_safetensors *file = NULL;
	df_error err = {{0}};
	snprintf(path, sizeof(path), "%s/%s", dir, file_name);
	if (df_safetensors_open(&file, path, &err) != 0)
		fail_msg("%s", err.msg);
	return file;
}

float *golden_read(const df_safetensors *file, const char *name, size_t *count)
{
	const df_safetensors_tensor *t = df_safetensors_find(file, name);
	if (!t)
		fail_msg("the golden file has no tensor %s", name);
	float *values = malloc((t->nelem ? t->nelem : 1) * sizeof(float));
	df_error err = {{0}};
	assert_non_null(values);
	if (df_safetensors_read_f32(file, t, values, t->nelem, &err) != 0)
		fail_msg("%s: %s", name, err.msg);
	if (count)
		*count = t->nelem;
	return values;
}

df_tensor *golden_tensor(df_graph *g, const df_safetensors *file, const char *name)
{
	const df_safetensors_tensor *t = df_safetensors_find(file, name);
	if (!t)
		fail_msg("the golden file has no tensor %s", name);
	float *values = golden_read(file, name, NULL);
	df_tensor *dev = df_tensor_from_host(g, values, t->ndim, t->shape);
	free(values);
	assert_non_null(dev);
	return dev;
}

double golden_compare(const char *label, const float *got, const float *ref, size_t n, double tol)
{
	double scale = 0, worst = 0;
	for (size_t i = 0; i < n; i++)
		scale = fmax(scale, fabs(ref[i]));
	if (scale == 0)
		scale = 1;
	int shown = 0;
	for (size_t i = 0; i < n; i++) {
		double rel = fabs((double)got[i] - ref[i]) / scale;
		if (!(rel <= worst))
			worst = rel; /* NaN sticks */
		if (!(rel <= tol) && shown < 5) {
			printf("  MISMATCH %s[%zu]: %.8g vs reference %.8g (relative %.3g > %.0e)\n", label, i, got[i],
			       ref[i], rel, tol);
			shown++;
		}
	}
	printf("  %-56s max relative error %.3g (tolerance %.0e) %s\n", label, worst, tol,
	       worst <= tol ? "ok" : "FAIL");
	return worst;
}

int golden_check(const df_safetensors *file, const char *name, const df_tensor *t, int grad, double tol)
{
	size_t count = 0;
	float *ref = golden_read(file, name, &count);
	assert_int_equal((int64_t)count, t->numel);
	float *got = malloc(count * sizeof(float));
	df_error err = {{0}};
	assert_non_null(got);
	int rc = grad ? df_tensor_read_grad(t, got, &err) : df_tensor_read(t, got, &err);
	if (rc != DF_OK)
		fail_msg("%s: %s", name, err.msg);
	double worst = golden_compare(name, got, ref, count, tol);
	free(ref);
	free(got);
	return !(worst <= tol);
}
