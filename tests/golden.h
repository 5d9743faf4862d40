/* Golden files written by the PyTorch references (tests/reference/) and
 * the comparison the parity tests print, llm.c style: the worst relative
 * error of each tensor and its first mismatches. */
#ifndef DIFFUSE_TEST_GOLDEN_H
#define DIFFUSE_TEST_GOLDEN_H

#include <stddef.h>
#include "diffuse/io.h"
#include "diffuse/tensor.h"

/* dir/file_name opened, or the test fails. */
df_safetensors *golden_open(const char *dir, const char *file_name);
/* A tensor as float32 (malloc'd); its element count in *count when not NULL. */
float *golden_read(const df_safetensors *file, const char *name, size_t *count);
/* A tensor on g with the shape it has in the file. */
df_tensor *golden_tensor(df_graph *g, const df_safetensors *file, const char *name);
/* max |got - ref| / max |ref|, printed with its label; mismatches beyond
 * tol are listed (the first five). */
double golden_compare(const char *label, const float *got, const float *ref, size_t n, double tol);
/* Compares a device tensor (values, or its gradient when grad) with the
 * file's tensor `name`; returns 1 when beyond tol. */
int golden_check(const df_safetensors *file, const char *name, const df_tensor *t, int grad, double tol);

#endif
