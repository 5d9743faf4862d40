/* Turning 8-bit images into the float tensors datasets hand out: centred
 * padding with the background, resizing, and scaling to [-1, 1]. Shared
 * by the dataset plugins (compiled into each). */
#ifndef DF_PLUGIN_RESAMPLE_H
#define DF_PLUGIN_RESAMPLE_H

#include <stdint.h>
#include "diffuse/error.h"

typedef enum resample_filter {
	RESAMPLE_BILINEAR, /* half-pixel centres, as PyTorch's align_corners=False, no antialiasing */
	RESAMPLE_NEAREST,  /* source pixel floor(o * in / out), as PyTorch's "nearest" */
} resample_filter;

/* The filters' setting names, in enum order, NULL-terminated. */
extern const char *const resample_filters[];

int resample_filter_parse(const char *name, resample_filter *filter, df_error *err);

typedef struct resample_plan {
	int in_height, in_width;   /* the source image */
	int pad_height, pad_width; /* after padding, centred, with -1 */
	int out_height, out_width; /* after resizing */
	resample_filter filter;
} resample_plan;

/* pad_to: 0 or a square side >= the image; out_height, out_width: the
 * output's size, 0 to keep the padded size. Padding comes first. */
int resample_init(resample_plan *r, int in_height, int in_width, int64_t pad_to, int64_t out_height,
                  int64_t out_width, resample_filter filter, df_error *err);

/* src: 8-bit pixel (y, x) at src[(y * in_width + x) * stride], so one
 * channel of an interleaved image is src + c with stride channels;
 * dst: out_height * out_width floats in [-1, 1]. */
void resample_apply(const resample_plan *r, const uint8_t *src, int stride, float *dst);

#endif
